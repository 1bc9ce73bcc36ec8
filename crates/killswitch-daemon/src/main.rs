//! `killswitchd`: parses arguments, sets up logging, runs the daemon.

use clap::Parser;
use killswitch_daemon::config::DEFAULT_PATH as DEFAULT_CONFIG;
use killswitch_daemon::run::{Options, run};
use killswitch_daemon::store::DEFAULT_STATE_DIR;
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
