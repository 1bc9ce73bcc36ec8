//! `killswitchd`: parses arguments (defined in [`killswitch_daemon::args`]), sets up logging, runs
//! the daemon.

use clap::Parser;
use killswitch_daemon::args::Args;
use killswitch_daemon::boot::{self, Decision};
use killswitch_daemon::firewall::Nftables;
use killswitch_daemon::run::{Options, run};
use killswitch_daemon::store::Store;
use killswitch_daemon::teardown::Teardown;
use std::process::ExitCode;

/// The firewall backend `args` ask for.
fn firewall(args: &Args) -> Nftables {
    if args.test_unowned_tables {
        Nftables::unowned()
    } else {
        Nftables::new()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    killswitch_daemon::logging::init();
    if args.early_boot {
        return early_boot(&args);
    }
    if args.teardown {
        return teardown(&args);
    }
    if let Some(file) = &args.check_config {
        return check_config(file.as_deref(), &args.config);
    }
    // A parent may have left signals blocked (a blocked mask is inherited across exec); a daemon
    // that cannot see SIGTERM cannot stop cleanly.
    let mut stop_signals = nix::sys::signal::SigSet::empty();
    stop_signals.add(nix::sys::signal::Signal::SIGTERM);
    stop_signals.add(nix::sys::signal::Signal::SIGINT);
    if let Err(e) = stop_signals.thread_unblock() {
        tracing::warn!("cannot unblock SIGTERM/SIGINT: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        firewall: firewall(&args),
        config: args.config,
        socket: args.socket,
        state_dir: args.state_dir,
        watch_tampering: !args.test_no_tamper_watch,
    };
    let result = runtime.block_on(run(options));
    // Blocking tasks still running (the wait for an exec'd program's exit, or for its cgroup to
    // empty) must not hold up the stop: those programs run on, confined, and the next daemon
    // adopts them. Dropping the runtime would wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config [FILE]`: the daemon's judgement of a configuration file, on one line.
fn check_config(given: Option<&std::path::Path>, default: &std::path::Path) -> ExitCode {
    use killswitch_daemon::config::Config;
    let path = given.unwrap_or(default);
    // A file named on the command line that cannot be read is a mistake in the command line
    // (exit status 2), as it is for `killswitch up FILE`; a file that reads but is wrong is 1.
    if given.is_some() {
        // A directory opens like a file; it cannot be read as one.
        let readable = std::fs::File::open(path)
            .and_then(|f| f.metadata())
            .and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            });
        if let Err(e) = readable {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_owned()
            } else {
                format!("cannot read it: {e}")
            };
            eprintln!("{}: {why}", path.display());
            return ExitCode::from(2);
        }
    }
    match Config::check(path) {
        Ok(true) => {
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("{}: no such file; the defaults apply", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn early_boot(args: &Args) -> ExitCode {
    let (state_dir, config) = (&args.state_dir, &args.config);
    // A daemon that already runs owns the rules: blocking now would replace its table.
    if let Some(pid) = killswitch_daemon::instance::running_daemon() {
        tracing::info!(
            "early boot: killswitchd{} is running and owns the rules; nothing to do",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    // The LAN and the allows the administrator configured; with no usable configuration, the
    // private ranges and no allows (the daemon then starts blocked anyway and says why). Bridges
    // do not exist yet this early: the daemon finds them when it takes over.
    let loaded = killswitch_daemon::config::Config::load(config).ok();
    let apps_only = loaded.as_ref().is_some_and(|c| c.apps_only);
    let exceptions = loaded
        .and_then(|c| {
            let lan = c.lan().ok()?;
            let mut exceptions =
                killswitch_policy::Exceptions::from(lan).with_allows(&c.allows(), Vec::new());
            // Names that resolve this early (local users do; a directory service may not be up
            // yet, and its users are confined once the daemon starts).
            exceptions.tunnel_only_uids =
                killswitch_daemon::users::resolve_all(&c.tunnel_only_users)
                    .into_iter()
                    .flatten()
                    .map(|u| u.uid)
                    .collect();
            // By name: their addresses may not be there yet (the daemon looks at them).
            exceptions.router_lans = (c.router_lan_interfaces.iter().cloned())
                .map(killswitch_policy::LocalLink::named)
                .collect();
            Some(exceptions)
        })
        .unwrap_or_default();
    match boot::run(
        &Store::open(state_dir),
        &exceptions,
        apps_only,
        &mut firewall(args),
    ) {
        Ok(Decision::Block(why)) => {
            tracing::info!("early boot: blocking until killswitchd takes over, because {why}");
            ExitCode::SUCCESS
        }
        Ok(Decision::Leave(why)) => {
            tracing::info!("early boot: not blocking, because {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("early boot: blocking failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn teardown(args: &Args) -> ExitCode {
    // The resolv.conf the daemon was configured to manage (the backup names its file anyway).
    let resolv_conf = killswitch_daemon::config::Config::load(&args.config)
        .map(|c| c.resolv_conf)
        .unwrap_or_else(|_| killswitch_daemon::config::Config::default().resolv_conf);
    let teardown = Teardown {
        firewall: firewall(args),
        state_dir: args.state_dir.clone(),
        socket: args.socket.clone(),
        resolv_conf,
    };
    match teardown.run() {
        Ok(outcome) => {
            tracing::info!("teardown: {outcome}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("teardown: {e}");
            ExitCode::FAILURE
        }
    }
}
