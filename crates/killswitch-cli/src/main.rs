//! `killswitch`: the command-line client. Parses, asks the daemon, prints.
//!
//! It never touches the firewall itself (it links only `killswitch-types`): every change goes
//! through the daemon, which checks who is asking. The command line itself is defined in the
//! crate's library ([`killswitch_cli::args`]), which the man page and completions are made from.

mod client;
mod render;

use clap::{CommandFactory, Parser};
use client::{Client, Failure, Received};
use killswitch_cli::args::{AllowAction, AllowWhat, Cli, Command};
use killswitch_types::ipc::{ConfigSource, Request};
use killswitch_types::{AllowEntry, GuardSpec, InboundAllow, SubnetAllow};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How long `--version` waits for the daemon: it answers a status request in milliseconds, and a
/// version query must not hang a script on a wedged daemon.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        print_versions(&cli.socket, cli.json);
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        // clap cannot require a command only when --version is absent; this is its own error
        // (and exit status 2) for a missing one.
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required (see --help)",
            )
            .exit()
    };
    let request = match command {
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
        Command::Blocked { once } => return watch_blocked(&cli.socket, cli.json, once),
        Command::Allow { action } => match allow_request(action) {
            Ok(Some(request)) => request,
            Ok(None) => return list_allows(&cli.socket, cli.json),
            Err(message) => {
                eprintln!("killswitch: {message}");
                return ExitCode::from(2);
            }
        },
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

/// Prints this program's version and the daemon's (`--version`). The daemon is asked for its
/// status, which anyone may read; one that cannot be reached is no error here: the question was
/// about versions, and this program's is known.
fn print_versions(socket: &Path, json: bool) {
    let name = "killswitch";
    let version = killswitch_types::PRODUCT_VERSION;
    let daemon = Client::new(socket.to_owned())
        .with_timeout(VERSION_TIMEOUT)
        .request(Request::Status);
    if json {
        let daemon = match &daemon {
            Ok(received) => serde_json::json!({
                "version": received.status.daemon_version,
                "protocol": received.status.protocol,
                "schema": received.status.schema,
            }),
            Err(failure) => serde_json::json!({ "error": failure.to_string() }),
        };
        emit(&format!(
            "{}\n",
            serde_json::json!({ "version": version, "daemon": daemon })
        ));
        return;
    }
    let daemon = match &daemon {
        // A daemon's words are shown, not obeyed (control characters escaped).
        Ok(received) => match &received.status.daemon_version {
            Some(v) => format!("killswitchd {}", render::clean(v)),
            None => format!(
                "killswitchd: running, release unknown (older than the field that reports it; protocol {})",
                received.status.protocol
            ),
        },
        Err(failure) => format!("killswitchd: {}", render::clean(&failure.to_string())),
    };
    emit(&format!("{name} {version}\n{daemon}\n"));
}

/// The request an `allow` command makes (`None` for `list`, which reads the status), or why
/// the command line is not one.
fn allow_request(action: AllowAction) -> Result<Option<Request>, String> {
    let (add, what) = match action {
        AllowAction::List => return Ok(None),
        AllowAction::Add { what } => (true, what),
        AllowAction::Remove { what } => (false, what),
    };
    let entry = match what {
        AllowWhat::Interface { name } => AllowEntry::Interface(name),
        AllowWhat::Subnet {
            subnet,
            interface,
            public,
        } => AllowEntry::Subnet(
            format!(
                "{subnet} on {interface}{}",
                if public { " public" } else { "" }
            )
            .parse::<SubnetAllow>()?,
        ),
        AllowWhat::Inbound { service, interface } => {
            AllowEntry::Inbound(format!("{service} on {interface}").parse::<InboundAllow>()?)
        }
    };
    Ok(Some(Request::Allow { add, entry }))
}

/// `allow list`: the exceptions part of the status.
fn list_allows(socket: &Path, json: bool) -> ExitCode {
    match Client::new(socket.to_owned()).request(Request::Status) {
        Ok(received) => {
            let exceptions = &received.status.exceptions;
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string(exceptions).unwrap_or_else(|_| "{}".to_owned())
                ));
            } else {
                emit(&render::exceptions(exceptions));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("killswitch: {}", render::clean(&failure.to_string()));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// How often `blocked` asks the daemon again.
const BLOCKED_REFRESH: Duration = Duration::from_secs(1);

/// `blocked`: asks for the status (which carries the counts and the last refused packets) once,
/// or every [`BLOCKED_REFRESH`] until interrupted. On a terminal each refresh replaces the last;
/// otherwise snapshots follow each other, separated by a blank line (JSON: one object a line).
fn watch_blocked(socket: &Path, json: bool, once: bool) -> ExitCode {
    use std::io::IsTerminal;
    let client = Client::new(socket.to_owned());
    let redraw = !json && !once && std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        match client.request(Request::Status) {
            Ok(received) => {
                if json {
                    emit(&format!("{}\n", received.json));
                } else {
                    let traffic = received
                        .status
                        .tunnel
                        .as_ref()
                        .and_then(|t| interface_traffic(t.interface.as_str()));
                    let view = render::blocked_view(
                        &received.status,
                        traffic,
                        std::time::SystemTime::now(),
                    );
                    let separator = match (redraw, first) {
                        // Home, clear the screen.
                        (true, _) => "\x1b[H\x1b[2J",
                        (false, true) => "",
                        (false, false) => "\n",
                    };
                    emit(&format!("{separator}{view}"));
                }
            }
            Err(failure) => {
                eprintln!("killswitch: {}", render::clean(&failure.to_string()));
                return ExitCode::from(failure.exit_code());
            }
        }
        if once {
            return ExitCode::SUCCESS;
        }
        first = false;
        std::thread::sleep(BLOCKED_REFRESH);
    }
}

/// The interface's received and sent bytes, from sysfs (readable by anyone): `None` when the
/// interface is not here.
fn interface_traffic(interface: &str) -> Option<(u64, u64)> {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{interface}/statistics/{what}"))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((read("rx_bytes")?, read("tx_bytes")?))
}

/// Reads the configurations given as files (with this user's permissions), and passes names on
/// for the daemon to look up. Warns about files other users can read: they hold a private key.
fn read_configs(configs: &[String]) -> Result<Vec<ConfigSource>, String> {
    use std::os::unix::fs::PermissionsExt;
    configs
        .iter()
        .map(|arg| {
            let path = Path::new(arg);
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
