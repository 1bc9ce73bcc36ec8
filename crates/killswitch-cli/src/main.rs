//! `killswitch`: the command-line client. Parses, asks the daemon, prints.
//!
//! It never touches the firewall itself (it links only `killswitch-types`): every change goes
//! through the daemon, which checks who is asking.

mod client;
mod render;

use clap::{Parser, Subcommand, ValueEnum};
use client::{Client, Failure, Received};
use killswitch_types::ipc::{ConfigSource, Request};
use killswitch_types::{Endpoint, Fwmark, GuardSpec, InterfaceName};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
EXIT STATUS:
    0  the request succeeded
    1  the daemon refused or failed the request (the reason is printed)
    2  the command line was invalid
    3  the daemon could not be reached, or answered something unreadable

EXAMPLES:
    killswitch status
    sudo killswitch up /etc/wireguard/se1.conf /etc/wireguard/se2.conf
    sudo killswitch guard --interface wg0 --endpoint 198.51.100.1:51820 --dns 10.64.0.1 --mark 0xca6c
    sudo killswitch lockdown on
    killswitch --json status | jq .state";

/// Control the killswitch daemon: a kernel-enforced VPN kill switch.
///
/// While a tunnel is guarded, nothing leaves this machine except through the tunnel and to the
/// VPN server itself; when the tunnel drops, traffic stops instead of leaking. The rules live in the
/// kernel (nftables), so they hold even if this command, the VPN client or the daemon dies.
///
/// Anyone may read the status. Changing anything needs root or membership in the daemon's admin
/// group (`killswitch` by default).
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, value_name = "PATH", env = "KILLSWITCH_SOCKET", default_value = killswitch_types::ipc::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print machine-readable JSON instead of text (one object; one per line for `events`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the state, the settings, the tunnel and the last error.
    Status,
    /// Protect a tunnel that another program manages (OpenVPN, wg-quick, ...).
    ///
    /// Blocks everything at once except the VPN server's exact address, port and protocol. When
    /// the interface is up with an address, traffic may also leave through it. DNS is allowed only
    /// to the given resolvers, through the tunnel. Replaces whatever was guarded before, atomically.
    Guard {
        /// The tunnel interface, e.g. wg0 or tun0.
        #[arg(long, value_name = "IFACE")]
        interface: InterfaceName,
        /// The VPN server: IP:PORT[/udp|/tcp] ([v6]:PORT for IPv6). UDP if not given.
        #[arg(long, value_name = "IP:PORT[/PROTO]")]
        endpoint: Endpoint,
        /// A DNS server inside the tunnel; repeat for more. Without it, DNS is blocked entirely.
        #[arg(long, value_name = "IP")]
        dns: Vec<IpAddr>,
        /// Only packets with this fwmark (the tunnel's own socket) may reach the server outside the
        /// tunnel. Decimal or 0x-hex. Defeats programs that try the server's address directly.
        #[arg(long, value_name = "N")]
        mark: Option<Fwmark>,
        /// Only sockets owned by this uid may reach the server outside the tunnel.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..i64::from(u32::MAX)))]
        uid: Option<u32>,
    },
    /// Bring up WireGuard, protected: firewall first, then the tunnel; fail over between servers.
    ///
    /// Each CONFIG is a wg-quick style file (a path, read by this command with your permissions)
    /// or a name that the daemon looks up in /etc/wireguard (NAME.conf). Several configurations
    /// are servers to fail over between, in that order. Only the tunnel's own packets may reach the
    /// current server outside the tunnel; when the tunnel dies (no sign of life for 3 s by default,
    /// `dead_after_seconds` in config.toml), the next server is tried while everything stays
    /// blocked. `down` removes the tunnel.
    Up {
        /// Configuration files or names.
        #[arg(value_name = "CONFIG", required = true)]
        configs: Vec<String>,
        /// The interface name (default: the first configuration's file name, as wg-quick does).
        #[arg(long, value_name = "IFACE")]
        interface: Option<InterfaceName>,
    },
    /// Stop guarding: back to disconnected (everything stays blocked if lockdown is on).
    Down,
    /// Block everything while no tunnel is connected, even after `down` and across reboots.
    ///
    /// `lockdown on` after `off` arms the kill switch again: the machine is blocked at once.
    Lockdown {
        /// on or off.
        value: OnOff,
    },
    /// Allow the local network (private, link-local and multicast ranges) outside the tunnel.
    ///
    /// The ranges are fixed (10/8, 172.16/12, 192.168/16, 169.254/16, fe80::/10, fc00::/7,
    /// multicast and broadcast), never "whatever the network says is local"; `lan_subnets` in the
    /// daemon's config.toml narrows them to the subnets it names. DNS to the LAN stays blocked.
    AllowLan {
        /// on or off.
        value: OnOff,
    },
    /// Remove the kill switch entirely: no rules at all, and lockdown off.
    ///
    /// Nothing is blocked until the next `guard`, `up` or `lockdown on`. A tunnel that `up`
    /// started is removed.
    Off,
    /// Print every state change as it happens, until interrupted.
    Events,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

impl OnOff {
    fn enabled(self) -> bool {
        self == OnOff::On
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = match cli.command {
        Command::Status => Request::Status,
        Command::Guard {
            interface,
            endpoint,
            dns,
            mark,
            uid,
        } => {
            let spec = GuardSpec {
                interface,
                endpoint,
                dns,
                mark,
                uid,
            };
            if let Err(e) = spec.validate() {
                eprintln!("killswitch: {e}");
                return ExitCode::from(2);
            }
            Request::Guard(spec)
        }
        Command::Up { configs, interface } => match read_configs(&configs) {
            Ok(configs) => Request::Up { interface, configs },
            Err(message) => {
                eprintln!("killswitch: {message}");
                return ExitCode::from(2);
            }
        },
        Command::Down => Request::Down,
        Command::Lockdown { value } => Request::Lockdown {
            enabled: value.enabled(),
        },
        Command::AllowLan { value } => Request::AllowLan {
            enabled: value.enabled(),
        },
        Command::Off => Request::Off,
        Command::Events => Request::Subscribe,
    };
    let client = Client::new(cli.socket);
    let outcome = if request == Request::Subscribe {
        client.subscribe(|received, first| print_status(&received, cli.json, Some(first)))
    } else {
        let name = request.name();
        client
            .request(request)
            .map(|received| print_status(&received, cli.json, (name != "status").then_some(true)))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(json) = failure.to_json().filter(|_| cli.json) {
                emit(&format!("{json}\n"));
            }
            // The daemon's words (and other programs' it quotes), shown, not obeyed.
            eprintln!("killswitch: {}", render::clean(&failure.to_string()));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Reads the configurations given as files (with this user's permissions), and passes names on
/// for the daemon to look up. Warns about files other users can read: they hold a private key.
fn read_configs(configs: &[String]) -> Result<Vec<ConfigSource>, String> {
    use std::os::unix::fs::PermissionsExt;
    configs
        .iter()
        .map(|arg| {
            let path = std::path::Path::new(arg);
            let is_file = arg.contains('/') || arg.ends_with(".conf") || path.is_file();
            if !is_file {
                return Ok(ConfigSource { source: arg.clone(), text: None });
            }
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {arg}: {e}"))?;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    eprintln!("killswitch: warning: {arg} is readable by other users (mode {mode:o}) and holds a private key; chmod 600 it");
                }
            }
            Ok(ConfigSource { source: arg.clone(), text: Some(text) })
        })
        .collect()
}

/// Prints a status. `event` is `None` for `status`, `Some(true)` for the first line of a stream
/// or the answer to a change, `Some(false)` for later events. JSON is the status as the daemon
/// sent it, fields this build does not know included.
fn print_status(received: &Received, json: bool, event: Option<bool>) {
    let status = &received.status;
    if json {
        emit(&format!("{}\n", received.json));
    } else if event == Some(false) {
        emit(&format!(
            "{}\n",
            render::event_line(status, std::time::SystemTime::now())
        ));
    } else {
        emit(&render::status(status));
    }
}

/// Writes `text` to standard output. A reader that went away (`killswitch events | head -1`)
/// ends the program quietly, as it ends any Unix filter, rather than with a panic; any other
/// write error is an error.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("killswitch: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Unreachable { .. } | Failure::Protocol(_) => 3,
        }
    }
}
