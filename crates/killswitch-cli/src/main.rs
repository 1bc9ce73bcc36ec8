//! `killswitch`: the command-line client. Parses, asks the daemon, prints.
//!
//! It never touches the firewall itself (it links only `killswitch-types`): every change goes
//! through the daemon, which checks who is asking. The command line itself is defined in the
//! crate's library ([`killswitch_cli::args`]), which the man page and completions are made from.

mod bypass;
mod client;
mod events;
mod exec;
mod guard;
mod render;
mod verify;

use clap::{CommandFactory, Parser};
use client::{Client, Failure, Received, Watched};
use killswitch_cli::args::{AllowAction, AllowWhat, Cli, Command, RouterAction, UsersAction};
use killswitch_types::State;
use killswitch_types::ipc::{ConfigSource, Request};
use killswitch_types::{AllowEntry, InboundAllow, SubnetAllow};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `up --wait` waits by default: long enough for a few servers' handshake timeouts.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

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
    // `up --wait`: how long to wait for the connection after the daemon takes the request.
    let mut wait_for = None;
    // What this command found itself (a `guard`'s resolved names and OpenVPN servers), shown
    // with the daemon's notes.
    let mut found: Vec<String> = Vec::new();
    let request = match command {
        Command::Status => Request::Status,
        Command::Guard {
            iface,
            interface,
            endpoint,
            ovpn,
            dns,
            mark,
            uid,
        } => {
            let Some(interface) = iface.or(interface) else {
                eprintln!("killswitch: guard needs the tunnel interface, e.g. `guard wg0`");
                return ExitCode::from(2);
            };
            let args = guard::GuardArgs {
                interface,
                endpoints: &endpoint,
                ovpn: ovpn.as_deref(),
                dns,
                mark,
                uid,
            };
            match guard::request(args) {
                Ok((request, notes)) => {
                    found = notes;
                    request
                }
                Err(message) => {
                    eprintln!("killswitch: {message}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Up {
            configs,
            interface,
            wait,
            timeout,
        } => match read_configs(&configs) {
            Ok(configs) => {
                if wait {
                    wait_for = Some(timeout.map_or(DEFAULT_WAIT, Duration::from_secs));
                }
                Request::Up { interface, configs }
            }
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
        Command::AppsOnly { value } => Request::AppsOnly {
            enabled: value.enabled(),
        },
        Command::Off => Request::Off,
        Command::Exec {
            bypass: true,
            command,
            ..
        } => return bypass::run(&cli.socket, cli.json, &command),
        Command::Users { action } => match action {
            UsersAction::List => return list_users(&cli.socket, cli.json),
            UsersAction::Add { user } => Request::Users { add: true, user },
            UsersAction::Remove { user } => Request::Users { add: false, user },
        },
        Command::Router { action } => match action {
            RouterAction::List => return list_router_lans(&cli.socket, cli.json),
            RouterAction::Add { interface } => Request::Router {
                add: true,
                interface,
            },
            RouterAction::Remove { interface } => Request::Router {
                add: false,
                interface,
            },
        },
        Command::Exec {
            bypass: false,
            freeze_on_drop,
            kill_on_drop,
            command,
        } => {
            let on_drop = if freeze_on_drop {
                Some(killswitch_types::OnDrop::Freeze)
            } else if kill_on_drop {
                Some(killswitch_types::OnDrop::Kill)
            } else {
                None
            };
            return exec::run(&cli.socket, on_drop, command);
        }
        Command::Events => Request::Subscribe,
        Command::Verify => return verify::run(&cli.socket, cli.json),
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
    let is_up = matches!(request, Request::Up { .. });
    let is_allow_lan = matches!(request, Request::AllowLan { .. });
    let outcome = if request == Request::Subscribe {
        let mut printer = events::EventPrinter::new(cli.json);
        client.subscribe(|received, _| {
            if let Some(line) = printer.next(&received, std::time::SystemTime::now()) {
                emit(&line);
            }
        })
    } else if let Some(timeout) = wait_for {
        // The deadline counts from the command's start: the request itself is part of the wait.
        let deadline = Instant::now() + timeout;
        match client.request(request) {
            Ok(_) => return wait_connected(&client, deadline, timeout, cli.json),
            Err(failure) => Err(failure),
        }
    } else {
        client.request(request).map(|mut received| {
            if !found.is_empty() {
                found.append(&mut received.status.notes);
                received.status.notes = found;
            }
            print_status(&received, cli.json);
            if is_allow_lan && !cli.json && received.status.apps_only {
                emit(
                    "apps-only is on: this machine's own traffic is not filtered, so allow-lan changes nothing until `killswitch apps-only off`\n",
                );
            }
            // Taking the request is not connecting: say so, rather than leave a report that a
            // reader could take for "protected and online".
            if is_up && !cli.json && received.status.state == State::Connecting {
                emit(
                    "connecting... use `killswitch status` or `killswitch up --wait` to see when the tunnel is up\n",
                );
            }
        })
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure, cli.json),
    }
}

/// Reports a failed request (on standard error, and as JSON with --json) and returns its exit
/// status.
pub(crate) fn fail(failure: &Failure, json: bool) -> ExitCode {
    if let Some(line) = failure.to_json().filter(|_| json) {
        emit(&format!("{line}\n"));
    }
    // The daemon's words (and other programs' it quotes), shown, not obeyed.
    eprintln!("killswitch: {}", render::clean(&failure.to_string()));
    ExitCode::from(failure.exit_code())
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

/// `users list`: the tunnel-only users part of the status.
fn list_users(socket: &Path, json: bool) -> ExitCode {
    match Client::new(socket.to_owned()).request(Request::Status) {
        Ok(received) => {
            let users = &received.status.tunnel_only_users;
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string(users).unwrap_or_else(|_| "[]".to_owned())
                ));
            } else {
                emit(&render::tunnel_only_users(
                    users,
                    &received.status.exceptions.refused,
                ));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("killswitch: {}", render::clean(&failure.to_string()));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// `router list`: the router LANs part of the status.
fn list_router_lans(socket: &Path, json: bool) -> ExitCode {
    match Client::new(socket.to_owned()).request(Request::Status) {
        Ok(received) => {
            let status = &received.status;
            if json {
                emit(&render::router_lans_json(status));
            } else {
                emit(&render::router_lans(status));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
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

/// Prints a status: JSON is the status as the daemon sent it, fields this build does not know
/// included.
fn print_status(received: &Received, json: bool) {
    if json {
        emit(&format!("{}\n", received.json));
    } else {
        emit(&render::status(&received.status));
    }
}

/// Why `up --wait` must stop waiting without a connection, if it must: the daemon no longer
/// tries (`None` while it still does).
fn gave_up(status: &killswitch_types::ipc::Status) -> Option<String> {
    let managed = status.tunnel.as_ref().and_then(|t| t.managed.as_ref());
    match status.state {
        State::Connected | State::Connecting if managed.is_some() => None,
        // A fault the tunnel manager does not retry (a configuration file, the firewall).
        State::Blocked if managed.is_some() => Some(format!(
            "the daemon blocks and stopped trying: {}",
            status.error.as_deref().unwrap_or("no reason given")
        )),
        state => Some(format!(
            "the tunnel is no longer wanted (state {state}: `down`, `off` or `guard` replaced it)"
        )),
    }
}

/// The one line that says why a managed tunnel is not connected: each failed server's last
/// failure, else the daemon's error, else what it is doing.
fn not_connected_reason(status: &killswitch_types::ipc::Status) -> String {
    let managed = status.tunnel.as_ref().and_then(|t| t.managed.as_ref());
    if let Some(managed) = managed.filter(|m| !m.failures.is_empty()) {
        return render::server_failures(managed).join("; ");
    }
    if let Some(error) = &status.error {
        return render::clean(error).into_owned();
    }
    match managed.and_then(|m| m.last_event.as_deref()) {
        Some(event) => format!("still connecting ({})", render::clean(event)),
        None => format!("state {}", status.state),
    }
}

/// `up --wait`, after the daemon took the request: follows its changes until the tunnel is
/// connected (0), the deadline passes or the daemon stops trying (1, with the reason on one
/// line).
fn wait_connected(client: &Client, deadline: Instant, timeout: Duration, json: bool) -> ExitCode {
    let watched = client.watch_until(deadline, |received| {
        let status = &received.status;
        // Connected through a tunnel the daemon runs: a `guard` that replaced ours is connected
        // too, but not what this command asked for (`gave_up` says so).
        let managed = status.tunnel.as_ref().is_some_and(|t| t.managed.is_some());
        if status.state == State::Connected && managed {
            return Some(Ok(Box::new(received.clone())));
        }
        gave_up(status).map(|why| {
            Err((
                Box::new(received.clone()),
                format!("{why}; {}", not_connected_reason(status)),
            ))
        })
    });
    let (received, why) = match watched {
        Ok(Watched::Done(Ok(received))) => {
            print_status(&received, json);
            return ExitCode::SUCCESS;
        }
        Ok(Watched::Done(Err((received, why)))) => (Some(received), why),
        Ok(Watched::TimedOut(last)) => {
            let reason = last.as_ref().map_or_else(
                || "the daemon sent no status".to_owned(),
                |r| not_connected_reason(&r.status),
            );
            let why = format!("not connected after {} s: {reason}", timeout.as_secs());
            (last, why)
        }
        Err(failure) => {
            eprintln!(
                "killswitch: while waiting for the connection: {}",
                render::clean(&failure.to_string())
            );
            return ExitCode::from(failure.exit_code());
        }
    };
    if json && let Some(received) = &received {
        emit(&format!("{}\n", received.json));
    }
    eprintln!("killswitch: {why}");
    ExitCode::FAILURE
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
