//! `killswitchd --teardown`: remove the kill switch for good (package removal, `make uninstall`).
//!
//! While a daemon runs in this network namespace, removing its rules behind its back is both
//! useless (it restores them at once, as it must against any other program) and a lie (teardown
//! would report success). So teardown asks that daemon to switch off through its socket, exactly
//! as `killswitch off` does, or refuses and says why; nothing is changed then.
//!
//! With no daemon running (stopped, or crashed), teardown does what a clean stop followed by
//! `off` would have done: it gives the user's resolver configuration back from the daemon's
//! backup, removes the interfaces a crashed daemon left behind (kernel WireGuard outlives its
//! daemon, and systemd-resolved keeps the tunnel's resolvers for as long as that link exists), and
//! removes both layers. It holds the daemon's locks meanwhile, so that no daemon starts halfway.

use crate::devices::Devices;
use crate::dns::resolv_conf::ResolvConf;
use crate::firewall::{Firewall, Nftables};
use crate::instance::{Instance, running_daemon};
use killswitch_types::ipc::{Request, RequestEnvelope, ServerEnvelope, ServerMessage};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where teardown finds the daemon and its files.
#[derive(Debug)]
pub struct Teardown {
    /// The firewall backend (which adopts orphaned owned tables to remove them).
    pub firewall: Nftables,
    /// The daemon's state directory.
    pub state_dir: PathBuf,
    /// The daemon's IPC socket.
    pub socket: PathBuf,
    /// The resolv.conf the daemon manages (the backup names the file it came from anyway).
    pub resolv_conf: PathBuf,
}

/// What teardown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A running daemon switched the kill switch off when asked.
    SwitchedOff {
        /// Its pid, when known.
        pid: Option<i32>,
    },
    /// No daemon ran; the rules and what a crashed daemon left are gone.
    Removed {
        /// Whether a resolv.conf backup was put back.
        dns_restored: bool,
        /// Interfaces a crashed daemon had created, now removed.
        interfaces: Vec<String>,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::SwitchedOff { pid } => write!(
                f,
                "the running killswitchd{} switched the kill switch off",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            Outcome::Removed {
                dns_restored,
                interfaces,
            } => {
                write!(f, "the kill switch's rules are removed (both layers)")?;
                if *dns_restored {
                    write!(f, "; the resolver configuration is restored")?;
                }
                if !interfaces.is_empty() {
                    write!(f, "; removed {}", interfaces.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

impl Teardown {
    /// Tears the kill switch down (see the module doc). On error nothing was changed, unless the
    /// message says what was.
    pub fn run(mut self) -> Result<Outcome, String> {
        if let Some(pid) = running_daemon() {
            return self.ask_daemon(pid);
        }
        // Hold the locks: a daemon starting now would apply rules while they are being removed.
        let _instance = Instance::acquire(&self.state_dir).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        let dns_restored = match ResolvConf::new(&self.resolv_conf, &self.state_dir).restore() {
            Ok(restored) => restored,
            Err(e) => {
                problems.push(format!("restoring the resolver configuration failed: {e}"));
                false
            }
        };
        let mut interfaces = Devices::new(&self.state_dir).remove_all();
        // `killswitch exec` namespaces: their veths go with the rules that confined them.
        let (veths, exec_problems) = crate::exec::teardown(&self.state_dir);
        interfaces.extend(veths);
        problems.extend(exec_problems);
        // Programs a crashed daemon froze (freeze on drop): no daemon will thaw them now.
        let thawed = crate::freeze::thaw_left_behind();
        if thawed > 0 {
            tracing::info!("thawed {thawed} cgroup(s) a crashed daemon left frozen");
        }
        let firewall = &mut self.firewall;
        if let Err(e) = firewall
            .apply(&killswitch_policy::Ruleset { table: None })
            .and_then(|_| firewall.apply_routes(None))
        {
            problems.push(format!("removing the rules failed: {e}"));
        }
        if problems.is_empty() {
            Ok(Outcome::Removed {
                dns_restored,
                interfaces,
            })
        } else {
            Err(problems.join("; "))
        }
    }

    fn ask_daemon(&self, pid: Option<i32>) -> Result<Outcome, String> {
        let who = format!(
            "killswitchd{}",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
        request_off(&self.socket).map_err(|why| {
            format!(
                "{who} runs in this network namespace, and switching it off through {} failed: \
                 {why}. Nothing was changed (a request whose sender hung up is withdrawn, not \
                 carried out later), and removing its rules behind its back would only make it \
                 restore them. Stop it first (systemctl stop killswitchd), then run --teardown again",
                self.socket.display()
            )
        })?;
        Ok(Outcome::SwitchedOff { pid })
    }
}

/// Sends `off` to the daemon at `socket`, as `killswitch off` does, and reads its answer.
fn request_off(socket: &Path) -> Result<(), String> {
    let timeout = Some(Duration::from_secs(5));
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| e.to_string())?;
    let line = killswitch_types::ipc::encode_line(&RequestEnvelope::new(Request::Off))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer: {e}"))?;
    match serde_json::from_str::<ServerEnvelope>(&answer) {
        Ok(ServerEnvelope {
            message: ServerMessage::Ok { .. },
            ..
        }) => Ok(()),
        Ok(ServerEnvelope {
            message: ServerMessage::Error { error },
            ..
        }) => Err(error.message),
        Ok(_) => Err("an unexpected answer".to_owned()),
        Err(e) => Err(format!("an unreadable answer ({e})")),
    }
}
