//! `killswitchd`: parses arguments, sets up logging, runs the daemon.

use clap::Parser;
use killswitch_daemon::boot::{self, Decision};
use killswitch_daemon::config::DEFAULT_PATH as DEFAULT_CONFIG;
use killswitch_daemon::firewall::Nftables;
use killswitch_daemon::run::{Options, run};
use killswitch_daemon::store::DEFAULT_STATE_DIR;
use killswitch_daemon::store::Store;
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
    /// Remove every rule of the kill switch (both layers) and exit, leaving the saved settings as
    /// they are. For package removal, when no daemon may be running to do `killswitch off`.
    #[arg(long)]
    teardown: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    killswitch_daemon::logging::init();
    if args.early_boot {
        return early_boot(&args.state_dir, &args.config);
    }
    if args.teardown {
        return teardown(&args.state_dir);
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

fn early_boot(state_dir: &std::path::Path, config: &std::path::Path) -> ExitCode {
    // The LAN the administrator configured; with no usable configuration, the private ranges
    // (the daemon then starts blocked anyway and says why).
    let lan = killswitch_daemon::config::Config::load(config)
        .ok()
        .and_then(|c| c.lan().ok())
        .unwrap_or_default();
    match boot::run(&Store::new(state_dir), &lan, &mut Nftables::new()) {
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

fn teardown(state_dir: &std::path::Path) -> ExitCode {
    use killswitch_daemon::firewall::Firewall;
    // A resolv.conf the daemon wrote goes back first (the backup names the file).
    let resolv_conf =
        killswitch_daemon::dns::resolv_conf::ResolvConf::new("/etc/resolv.conf", state_dir);
    match resolv_conf.restore() {
        Ok(true) => tracing::info!("teardown: the resolver configuration is restored"),
        Ok(false) => {}
        Err(e) => tracing::error!("teardown: restoring the resolver configuration failed: {e}"),
    }
    let mut firewall = Nftables::new();
    let result = firewall
        .apply(&killswitch_policy::Ruleset { table: None })
        .and_then(|_| firewall.apply_routes(None));
    match result {
        Ok(()) => {
            tracing::info!("teardown: the kill switch's rules are removed (both layers)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("teardown failed: {e}");
            ExitCode::FAILURE
        }
    }
}
