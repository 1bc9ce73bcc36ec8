//! `killswitchd`: parses arguments, sets up logging, runs the daemon.

use clap::Parser;
use killswitch_daemon::boot::{self, Decision};
use killswitch_daemon::config::DEFAULT_PATH as DEFAULT_CONFIG;
use killswitch_daemon::firewall::Nftables;
use killswitch_daemon::run::{Options, run};
use killswitch_daemon::store::DEFAULT_STATE_DIR;
use killswitch_daemon::store::Store;
use killswitch_daemon::teardown::Teardown;
use std::path::PathBuf;
use std::process::ExitCode;

/// The killswitch daemon: keeps a kernel-enforced VPN kill switch (nftables) in place.
///
/// It owns table `inet killswitch`, installs it in one atomic transaction on every change, and
/// leaves it in place when it stops or crashes: protection never depends on this process being
/// alive. Clients (`killswitch`) talk to it over a Unix socket; anyone may read the status, only
/// root and members of the admin group may change anything.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Configuration file (TOML). A missing file means the defaults.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The IPC socket to listen on.
    #[arg(long, value_name = "PATH", env = "KILLSWITCH_SOCKET", default_value = killswitch_types::ipc::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the settings and the last requested state are kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Apply the blocking rules if the saved settings call for it (lockdown on, or a tunnel was
    /// protected, or the settings cannot be read), then exit. For a unit that runs before the
    /// network comes up; the daemon takes over when it starts.
    #[arg(long, conflicts_with = "teardown")]
    early_boot: bool,
    /// Switch the kill switch off and exit. If a daemon runs, it is asked to switch off
    /// through its socket (as `killswitch off` does); if it cannot be asked, nothing is changed
    /// and the exit status is 1. With no daemon running, the resolver configuration the daemon
    /// saved is restored, interfaces a crashed daemon left are removed, and both layers of rules
    /// go. The saved settings stay as they are: a daemon started later resumes them. For package
    /// removal and `make uninstall`.
    #[arg(long)]
    teardown: bool,
    /// Never own the tables, as on a kernel without nf_tables' `persist` flag: for the tests of
    /// that fallback. Not for use: it lets other programs flush the rules.
    #[arg(long, hide = true)]
    test_unowned_tables: bool,
}

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
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
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
    let exceptions = killswitch_daemon::config::Config::load(config)
        .ok()
        .and_then(|c| {
            let lan = c.lan().ok()?;
            Some(killswitch_policy::Exceptions::from(lan).with_allows(&c.allows(), Vec::new()))
        })
        .unwrap_or_default();
    match boot::run(&Store::open(state_dir), &exceptions, &mut firewall(args)) {
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
