//! `killswitch-bench`: measures killswitch against the alternatives, side by side, in one run,
//! inside network namespaces it creates. Prints markdown for BENCHMARKS.md.

mod datapath;
mod failover;
mod footprint;
mod input;
mod leak;
mod scale;
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
    /// Run only these sections (by name, repeatable): transition, leak, scale, datapath,
    /// failover, footprint, tamper.
    #[arg(long, value_name = "SECTION")]
    only: Vec<String>,
}

/// One section of the report: a name for `--only`, and what produces its markdown.
struct Section {
    name: &'static str,
    run: fn(quick: bool, dir: &std::path::Path) -> Result<String>,
}

/// The sections, in the order BENCHMARKS.md lists them (the numbering).
const SECTIONS: [Section; 7] = [
    Section {
        name: "transition",
        run: transition_section,
    },
    Section {
        name: "leak",
        run: |quick, _| leak::section(quick),
    },
    Section {
        name: "scale",
        run: |quick, _| scale::section(quick),
    },
    Section {
        name: "datapath",
        run: |quick, _| datapath::section(quick),
    },
    Section {
        name: "failover",
        run: |quick, _| failover::section(quick),
    },
    Section {
        name: "footprint",
        run: |quick, _| footprint::section(quick),
    },
    Section {
        name: "tamper",
        run: tamper_section,
    },
];

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
    if let Some(unknown) = args
        .only
        .iter()
        .find(|name| !SECTIONS.iter().any(|s| s.name == name.as_str()))
    {
        anyhow::bail!(
            "no section {unknown:?}; the sections are {}",
            SECTIONS.map(|s| s.name).join(", ")
        );
    }
    // A private directory (mode 700, an unpredictable name: this runs as root), removed when it
    // goes out of scope, whichever way the run ends.
    let dir = tempfile::Builder::new()
        .prefix("killswitch-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut out = String::new();
    out.push_str(&format!(
        "Produced by `killswitch-bench{}` ({} build) on {}.\n",
        if args.quick { " --quick" } else { "" },
        if cfg!(debug_assertions) {
            "debug: not for comparison"
        } else {
            "release"
        },
        machine()
    ));
    for section in SECTIONS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.name))
    {
        eprintln!("killswitch-bench: {} ...", section.name);
        let markdown = (section.run)(args.quick, dir.path())
            .with_context(|| format!("benchmark {}", section.name))?;
        out.push('\n');
        out.push_str(&markdown);
    }
    Ok(out)
}

fn transition_section(quick: bool, dir: &std::path::Path) -> Result<String> {
    let transitions = if quick { 20 } else { 1000 };
    Ok(format!(
        "### 1. Policy transition latency\n\n{}",
        transition::table(&transition::measure(transitions, dir)?)
    ))
}

fn tamper_section(quick: bool, _dir: &std::path::Path) -> Result<String> {
    let rounds = if quick { 5 } else { 200 };
    let refused = tamper::refusals(rounds)?;
    let restore = tamper::measure(rounds)?;
    Ok(format!(
        "### Tamper\n\n`nft delete table inet killswitch` against a running killswitchd (lockdown on), {rounds} rounds in each mode.\n\n\
         - Owned tables (this kernel: nf_tables `owner` + `persist`): refused by the kernel {refused} of {rounds} times; the table never changed \
         and nothing had to be restored, so no packet could pass.\n\
         - Restore-only (kernels before 6.9; forced with `--test-unowned-tables`): the table is back after p50 {}, p99 {} (from the harness \
         reading the deleting transaction's change notification to reading the daemon's restoring one; the routing layer blocks throughout, \
         except for sockets bound to an interface).\n",
        stats::human(restore.median()),
        stats::human(restore.percentile(99.0)),
    ))
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
