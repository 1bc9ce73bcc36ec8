//! `killswitch-bench`: measures killswitch against the alternatives, side by side, in one run,
//! inside network namespaces it creates. Prints markdown for BENCHMARKS.md.

mod stats;
mod tamper;
mod transition;

use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;

/// Benchmarks of the kill switch, reported as ratios against baselines measured in the same run.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A few iterations only, to check the harness works (CI).
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("killswitch-bench: needs root (network namespaces, nftables)");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(markdown) => {
            print!("{markdown}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("killswitch-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<String> {
    let dir = tempfile_dir()?;
    let transitions = if args.quick { 20 } else { 1000 };
    let mut out = String::new();
    out.push_str(&format!(
        "Produced by `killswitch-bench{}` (release build) on {}.\n\n",
        if args.quick { " --quick" } else { "" },
        machine()
    ));
    out.push_str("### 1. Policy transition latency\n\n");
    out.push_str(&transition::table(&transition::measure(transitions, &dir)?));
    let rounds = if args.quick { 5 } else { 200 };
    let restore = tamper::measure(rounds)?;
    out.push_str(&format!(
        "\n### Tamper to restore\n\n`nft delete table inet killswitch` against a running killswitchd (lockdown on), {} rounds: \
         the table is back after p50 {}, p99 {} (from the deleting transaction's commit to the daemon's restoring one; \
         the routing layer blocks throughout).\n",
        restore.len(),
        stats::human(restore.median()),
        stats::human(restore.percentile(99.0)),
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("killswitch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("Linux {}, {cpus} × {model}", kernel.trim())
}
