//! A real WireGuard tunnel between the lab's client and net namespaces, made of two independent
//! userspace `wireguard-go` processes (this machine has no kernel WireGuard), configured with `wg`.
//!
//! The client is set up the way wg-quick does it: its UDP socket carries fwmark [`FWMARK`], and
//! policy routing sends every unmarked packet into the tunnel, so the tunnel's own packets reach
//! the server over the physical link and nothing else does, whatever the main routing table says.

use crate::netns::{Netns, run_checked};
use crate::process::Process;
use crate::topology::{ENDPOINT_V4, Topology};
use anyhow::{Context, Result};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The fwmark the client's WireGuard socket carries (and the routing table it bypasses).
pub const FWMARK: u32 = 0xca6c;
/// The routing table that sends everything unmarked into the tunnel.
const TABLE: &str = "51820";
/// The server's UDP port.
pub const PORT: u16 = 51820;
/// The server's address inside the tunnel; also the tunnel's DNS resolver.
pub const SERVER_TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);
/// The client's address inside the tunnel.
pub const CLIENT_TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 2);

const START_TIMEOUT: Duration = Duration::from_secs(10);
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A WireGuard key pair.
#[derive(Clone)]
pub struct KeyPair {
    private: String,
    /// The public key, base64.
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair(public {}, private redacted)", self.public)
    }
}

impl KeyPair {
    /// The private key in base64, for writing a configuration file in a test.
    pub fn private_base64(&self) -> &str {
        &self.private
    }

    /// Generates a key pair with `wg genkey` / `wg pubkey`.
    pub fn generate() -> Result<Self> {
        let private = run_checked(Command::new("wg").arg("genkey"))?
            .trim()
            .to_owned();
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running wg pubkey")?;
        child
            .stdin
            .take()
            .context("wg pubkey stdin")?
            .write_all(private.as_bytes())?;
        let output = child.wait_with_output()?;
        let public = String::from_utf8(output.stdout)?.trim().to_owned();
        Ok(KeyPair { private, public })
    }
}

/// wireguard-go's control socket for `interface` (shared by every namespace).
fn socket_of(interface: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{interface}.sock"))
}

/// One `wireguard-go` process and its interface.
#[derive(Debug)]
pub struct Device {
    process: Process,
    /// The interface name (unique on the machine: the UAPI sockets of all namespaces share
    /// /var/run/wireguard).
    pub interface: String,
}

impl Device {
    /// Starts `wireguard-go` for `interface` in `ns` and waits until it accepts configuration.
    pub fn start(ns: &Netns, interface: &str) -> Result<Self> {
        let mut command = ns.command("wireguard-go");
        command.arg("-f").arg(interface).env("LOG_LEVEL", "verbose");
        let mut process = Process::spawn(&format!("wireguard-go {interface}"), command)?;
        crate::leftovers::register(&socket_of(interface));
        process.wait_for_line(0, "UAPI listener started", START_TIMEOUT)?;
        Ok(Device {
            process,
            interface: interface.to_owned(),
        })
    }

    /// The wireguard-go process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let socket = socket_of(&self.interface);
        let _ = std::fs::remove_file(&socket);
        crate::leftovers::forget(&socket);
    }
}

/// A directory for private keys, removed with it, or by the interrupt handler.
fn key_dir() -> Result<tempfile::TempDir> {
    let keys = tempfile::tempdir()?;
    crate::leftovers::register(keys.path());
    Ok(keys)
}

/// Writes a private key to a file only root can read, for `wg set ... private-key FILE`.
fn key_file(dir: &tempfile::TempDir, name: &str, key: &KeyPair) -> Result<PathBuf> {
    let path = dir.path().join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(key.private.as_bytes())?;
    Ok(path)
}

/// The lab's tunnel: a server in the net namespace, a client in the client namespace.
#[derive(Debug)]
pub struct Tunnel {
    /// The server device (net namespace).
    pub server: Device,
    /// The client device (client namespace); `None` while "the VPN process" is dead.
    pub client: Option<Device>,
    client_interface: String,
    server_key: KeyPair,
    client_key: KeyPair,
    keys: tempfile::TempDir,
    endpoint: SocketAddr,
}

impl Tunnel {
    /// Brings up the server and the client and routes the client's traffic into the tunnel. The
    /// handshake happens with the first packet (see [`Tunnel::wait_for_handshake`]).
    pub fn up(topo: &Topology) -> Result<Self> {
        let mut tunnel = Self::server_only(topo)?;
        tunnel.start_client(topo)?;
        Ok(tunnel)
    }

    /// Brings up the server and the client's routing policy, but not the client's VPN process
    /// (start it with [`Tunnel::start_client`]).
    pub fn server_only(topo: &Topology) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let unique = (std::process::id() as usize * 8 + n) % 100_000;
        let server_interface = format!("kss{unique}");
        let client_interface = format!("ksc{unique}");
        let server_key = KeyPair::generate()?;
        let client_key = KeyPair::generate()?;
        let keys = key_dir()?;
        let endpoint = SocketAddr::new(ENDPOINT_V4.into(), PORT);

        let server = Device::start(&topo.net, &server_interface)?;
        let server_key_file = key_file(&keys, "server", &server_key)?;
        topo.net.exec(
            "wg",
            &[
                "set",
                &server_interface,
                "private-key",
                path_str(&server_key_file)?,
                "listen-port",
                &PORT.to_string(),
                "peer",
                &client_key.public,
                "allowed-ips",
                &format!("{CLIENT_TUNNEL_V4}/32"),
            ],
        )?;
        topo.net.ip(&[
            "addr",
            "add",
            &format!("{SERVER_TUNNEL_V4}/24"),
            "dev",
            &server_interface,
        ])?;
        topo.net.ip(&["link", "set", &server_interface, "up"])?;

        let tunnel = Tunnel {
            server,
            client: None,
            client_interface,
            server_key,
            client_key,
            keys,
            endpoint,
        };
        // wg-quick's policy routing: unmarked packets use the tunnel's table; the main table's
        // routes apply only when more specific than a default route (suppress_prefixlength 0).
        topo.client.ip(&[
            "-4",
            "rule",
            "add",
            "not",
            "fwmark",
            &FWMARK.to_string(),
            "table",
            TABLE,
        ])?;
        topo.client.ip(&[
            "-4",
            "rule",
            "add",
            "table",
            "main",
            "suppress_prefixlength",
            "0",
        ])?;
        Ok(tunnel)
    }

    /// The client interface's name.
    pub fn client_interface(&self) -> &str {
        &self.client_interface
    }

    /// The server's endpoint.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// (Re)starts the client's wireguard-go, configures it and its route. Used at first and to
    /// reconnect after the VPN process was killed.
    pub fn start_client(&mut self, topo: &Topology) -> Result<()> {
        self.start_client_on(topo, None)
    }

    /// [`Tunnel::start_client`] with the client's UDP socket on `listen_port` (a random one if
    /// `None`), set before the peer, so that even its first handshake comes from that port.
    pub fn start_client_on(&mut self, topo: &Topology, listen_port: Option<u16>) -> Result<()> {
        self.client = None;
        let device = Device::start(&topo.client, &self.client_interface)?;
        let key_file = key_file(&self.keys, "client", &self.client_key)?;
        let (key_path, mark, endpoint) = (
            path_str(&key_file)?,
            FWMARK.to_string(),
            self.endpoint.to_string(),
        );
        let port = listen_port.map(|p| p.to_string());
        let mut args = vec!["set", &self.client_interface, "private-key", key_path];
        if let Some(port) = &port {
            args.extend(["listen-port", port]);
        }
        args.extend([
            "fwmark",
            &mark,
            "peer",
            &self.server_key.public,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "0.0.0.0/0",
        ]);
        topo.client.exec("wg", &args)?;
        topo.client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_TUNNEL_V4}/24"),
            "dev",
            &self.client_interface,
        ])?;
        topo.client
            .ip(&["link", "set", &self.client_interface, "up"])?;
        topo.client.ip(&[
            "-4",
            "route",
            "add",
            "default",
            "dev",
            &self.client_interface,
            "table",
            TABLE,
        ])?;
        self.client = Some(device);
        Ok(())
    }

    /// Sets the client's peer endpoint again, as a VPN client does when it notices a new network.
    /// This also drops wireguard-go's cached source address, which (in Debian's 0.0.20220316) it
    /// otherwise keeps using after the interface's address changed, so that it never sends again.
    pub fn reannounce_endpoint(&self, topo: &Topology) -> Result<()> {
        topo.client.exec(
            "wg",
            &[
                "set",
                &self.client_interface,
                "peer",
                &self.server_key.public,
                "endpoint",
                &self.endpoint.to_string(),
            ],
        )?;
        Ok(())
    }

    /// Kills the client's wireguard-go with SIGKILL: the VPN process dies, its interface vanishes.
    pub fn kill_client(&mut self) -> Result<()> {
        if let Some(mut device) = self.client.take() {
            device.process().kill()?;
        }
        Ok(())
    }

    /// Waits until the client has completed a handshake with the server (it logs one when the
    /// first packet makes it initiate).
    pub fn wait_for_handshake(&mut self, from_line: usize, timeout: Duration) -> Result<()> {
        let device = self.client.as_mut().context("the client is not running")?;
        device
            .process()
            .wait_for_line(from_line, "Received handshake response", timeout)?;
        Ok(())
    }

    /// Makes the client handshake now and waits for it: WireGuard initiates only when it has a
    /// packet to send, so one datagram goes to the target's discard port through the tunnel.
    pub fn handshake(&mut self, topo: &Topology, timeout: Duration) -> Result<()> {
        let log_mark = self.client_log_len();
        let target = SocketAddr::new(crate::topology::TARGET_V4.into(), 9);
        topo.client
            .run(|| crate::traffic::send_udp(target, b"handshake", None))?
            .context("sending the first packet into the tunnel")?;
        self.wait_for_handshake(log_mark, timeout)
    }

    /// How many lines the client has logged (to wait for a handshake after this point).
    pub fn client_log_len(&self) -> usize {
        self.client.as_ref().map_or(0, |d| d.process.line_count())
    }
}

fn path_str(path: &std::path::Path) -> Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

/// A WireGuard server in the net namespace, for clients other than the lab's own (the daemon's
/// `killswitch up`): its own interface, tunnel subnet and port.
#[derive(Debug)]
pub struct Server {
    device: Device,
    key: KeyPair,
    /// Where clients reach it.
    pub endpoint: SocketAddr,
    /// Its address inside the tunnel (also the tunnel's DNS resolver).
    pub tunnel_ip: Ipv4Addr,
    /// The address it gives its client.
    pub client_ip: Ipv4Addr,
}

impl Server {
    /// Starts server `n` (1 to 3; the lab's own tunnel is server 0): endpoint 198.51.100.(1+n)
    /// port 51820+n, tunnel 10.(64+n).0.0/24, client address 10.(64+n).0.2.
    pub fn start(topo: &Topology, n: u8) -> Result<Self> {
        Self::start_in(&topo.net, n)
    }

    /// Starts server `n` as [`Server::start`] does, in `net` (any namespace that holds the
    /// endpoint addresses, such as the VM lab's host side).
    pub fn start_in(net: &Netns, n: u8) -> Result<Self> {
        let unique =
            (std::process::id() as usize * 8 + COUNTER.fetch_add(1, Ordering::Relaxed)) % 100_000;
        let interface = format!("kssrv{unique}");
        let ip = match n {
            1 => crate::topology::ENDPOINT2_V4,
            2 => crate::topology::ENDPOINT3_V4,
            3 => crate::topology::ENDPOINT4_V4,
            _ => anyhow::bail!("servers are numbered 1 to 3"),
        };
        let endpoint = SocketAddr::new(ip.into(), PORT + u16::from(n));
        let tunnel_ip = Ipv4Addr::new(10, 64 + n, 0, 1);
        let client_ip = Ipv4Addr::new(10, 64 + n, 0, 2);
        let key = KeyPair::generate()?;
        let device = Device::start(net, &interface)?;
        let keys = key_dir()?;
        let key_path = key_file(&keys, "server", &key)?;
        net.exec(
            "wg",
            &[
                "set",
                &interface,
                "private-key",
                path_str(&key_path)?,
                "listen-port",
                &endpoint.port().to_string(),
            ],
        )?;
        net.ip(&["addr", "add", &format!("{tunnel_ip}/24"), "dev", &interface])?;
        net.ip(&["link", "set", &interface, "up"])?;
        Ok(Server {
            device,
            key,
            endpoint,
            tunnel_ip,
            client_ip,
        })
    }

    /// Lets the client with `public_key` in, at the server's client address.
    pub fn allow(&self, topo: &Topology, public_key: &str) -> Result<()> {
        self.allow_in(&topo.net, public_key)
    }

    /// Lets the client with `public_key` in, the server running in `net`.
    pub fn allow_in(&self, net: &Netns, public_key: &str) -> Result<()> {
        net.exec(
            "wg",
            &[
                "set",
                &self.device.interface,
                "peer",
                public_key,
                "allowed-ips",
                &format!("{}/32", self.client_ip),
            ],
        )?;
        Ok(())
    }

    /// The server's public key.
    pub fn public_key(&self) -> &str {
        &self.key.public
    }

    /// A wg-quick configuration for a client of this server with `client` keys.
    pub fn client_config(&self, client: &KeyPair) -> String {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {}/32\nDNS = {}\n\n[Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
            client.private_base64(),
            self.client_ip,
            self.tunnel_ip,
            self.key.public,
            self.endpoint
        )
    }

    /// The server's wireguard-go process (to kill it: "the server dies").
    pub fn process(&mut self) -> &mut Process {
        self.device.process()
    }
}
