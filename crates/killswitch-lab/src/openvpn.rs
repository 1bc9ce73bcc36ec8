//! A real OpenVPN tunnel between the lab's client and net namespaces, for README's OpenVPN
//! quickstart: the server in the net namespace, the client started from a `.ovpn` file as a user
//! starts it, with `redirect-gateway def1` (everything into the tunnel, a host route to the server
//! by the physical link) and a `mark` on its socket.
//!
//! The peers share a static key (point-to-point mode): it keeps a PKI out of the lab, and what the
//! kill switch sees (a tun device, UDP to the `remote`, a marked socket) is the same as with TLS.

use crate::netns::{Netns, run_checked};
use crate::process::Process;
use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The mark the client's socket carries (README's quickstart uses the same, 0x6f76). OpenVPN
/// reads `mark` as a decimal number only: `mark 0x6f76` would silently be no mark at all.
pub const MARK: u32 = 0x6f76;
/// The server's address inside the tunnel, also the tunnel's resolver.
pub const SERVER_TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
/// The client's address inside the tunnel (the lab counts arrivals from 10.64-67.0.2 as
/// through a tunnel).
pub const CLIENT_TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 2);

const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The line OpenVPN logs once its tunnel and routes are set up.
const READY: &str = "Initialization Sequence Completed";

/// The key, the client's `.ovpn` and the server, in a directory removed with it.
#[derive(Debug)]
pub struct OpenVpn {
    dir: tempfile::TempDir,
    server: Process,
    client: Option<Process>,
    /// The `remote` lines of the client's file, in order: the live server, then one that is not
    /// there (a second server of the provider's).
    pub remotes: Vec<SocketAddr>,
}

impl OpenVpn {
    /// Starts the server in `net` at `remotes[0]` and writes the client's `.ovpn`, naming every
    /// one of `remotes`. The client is started with [`OpenVpn::start_client`].
    pub fn start(net: &Netns, remotes: &[SocketAddr]) -> Result<Self> {
        let first = *remotes
            .first()
            .context("an OpenVPN client needs a remote")?;
        let dir = tempfile::tempdir()?;
        crate::leftovers::register(dir.path());
        let key = dir.path().join("static.key");
        run_checked(
            Command::new("openvpn")
                .args(["--genkey", "secret"])
                .arg(&key),
        )?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let mut server = net.command("openvpn");
        server
            .args(["--dev", "tun", "--proto", "udp", "--local"])
            .arg(first.ip().to_string())
            .args(["--lport", &first.port().to_string()])
            .args(["--ifconfig", &SERVER_TUNNEL_V4.to_string()])
            .arg(CLIENT_TUNNEL_V4.to_string())
            .arg("--secret")
            .arg(&key)
            .args([
                "0",
                "--cipher",
                "AES-256-CBC",
                "--auth",
                "SHA256",
                "--verb",
                "3",
            ]);
        let mut server = Process::spawn("openvpn server", server)?;
        // A point-to-point server completes its initialisation with its peer's first packet; it
        // is ready once its socket is bound.
        server.wait_for_line(0, "link local (bound)", START_TIMEOUT)?;

        let mut ovpn = String::from("dev tun\nproto udp\nnobind\n");
        for remote in remotes {
            ovpn.push_str(&format!("remote {} {}\n", remote.ip(), remote.port()));
        }
        ovpn.push_str(&format!(
            "ifconfig {CLIENT_TUNNEL_V4} {SERVER_TUNNEL_V4}\nredirect-gateway def1\n\
             secret {} 1\ncipher AES-256-CBC\nauth SHA256\nmark {MARK}\nverb 3\n",
            key.display()
        ));
        std::fs::write(dir.path().join("client.ovpn"), ovpn)?;
        Ok(OpenVpn {
            dir,
            server,
            client: None,
            remotes: remotes.to_vec(),
        })
    }

    /// The client's `.ovpn` file.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.ovpn")
    }

    /// Starts (or restarts) `openvpn --config client.ovpn` in `client` and waits until its
    /// tunnel and routes are up.
    pub fn start_client(&mut self, client: &Netns) -> Result<()> {
        self.client = None;
        let mut command = client.command("openvpn");
        command.arg("--config").arg(self.client_config());
        let mut process = Process::spawn("openvpn client", command)?;
        process
            .wait_for_line(0, READY, START_TIMEOUT)
            .with_context(|| format!("the OpenVPN client:\n{}", process.output()))?;
        self.client = Some(process);
        Ok(())
    }

    /// Kills the client with SIGKILL: the VPN process dies, its tun device with it (its routes
    /// to the server stay, as after any crash).
    pub fn kill_client(&mut self) -> Result<()> {
        if let Some(mut process) = self.client.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Both ends' logs, for a failing scenario.
    pub fn logs(&self) -> String {
        format!(
            "OpenVPN server:\n{}\nOpenVPN client:\n{}",
            self.server.output(),
            self.client
                .as_ref()
                .map_or("(not running)".into(), Process::output)
        )
    }

    /// The directory holding the key and the `.ovpn`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OpenVpn {
    fn drop(&mut self) {
        if let Some(mut client) = self.client.take() {
            let _ = client.kill();
        }
        let _ = self.server.kill();
        crate::leftovers::forget(self.dir.path());
    }
}
