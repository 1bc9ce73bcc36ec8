//! `killswitch-lab`: runs the leak scenarios in a sandboxed network and prints the report.

use clap::Parser;
use killswitch_lab::generator::DEFAULT_RATE;
use killswitch_lab::report::LabReport;
use killswitch_lab::{host, model, netns, process, scenarios};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The killswitch leak lab: proves, with packets, that the kill switch leaks nothing.
///
/// Builds network namespaces (a protected client, and a "net" with the LAN router, the internet
/// and a WireGuard server), runs killswitchd in the client, and scripts the moments weak kill
/// switches leak: connecting, the VPN process dying, the network going away, sleep and wake, the
/// daemon dying, DNS, IPv6, disconnecting, the LAN asking ARP about the tunnel's address. A capture
/// on the client's physical link is the judge.
///
/// Needs root. Never changes the namespace it is started from (checked before and after); every
/// namespace it creates is removed at the end, also on Ctrl-C.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Run only this scenario (repeatable). See --list.
    #[arg(long, value_name = "NAME")]
    scenario: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Packets per second the generator offers, in total.
    #[arg(long, value_name = "PPS", default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    rate: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The model-based tester: random sequences of user commands and world events, checked
    /// against the model after every step; a failure is shrunk and printed with its seed.
    ///
    /// Without --sim (level 2), against the real killswitchd in lab namespaces with a real
    /// tunnel and a capture on the physical link (needs root). With --sim (level 1), against the
    /// daemon's core with fake backends. The same seed gives the same sequences at both levels.
    Model(ModelArgs),
    /// The VM lab: the Debian package on a real Debian guest under QEMU (systemd, kernel
    /// WireGuard): install, `up` with failover, link down/up, the tunnel deleted, suspend,
    /// stop/start, reboots with lockdown and with a guarded wg-quick tunnel, a negative control,
    /// removal, purge and an upgrade under traffic, judged by a capture outside the guest.
    ///
    /// Needs root, qemu-system-x86_64 and a guest image; `scripts/vm-lab.sh` builds (or takes
    /// from its cache) the image and the packages and runs this.
    Vm(VmArgs),
}

#[derive(Debug, clap::Args)]
struct VmArgs {
    /// The guest image directory (base.raw, vmlinuz, initrd.img, manifest).
    #[arg(long, value_name = "DIR")]
    image: std::path::PathBuf,
    /// The package under test.
    #[arg(long, value_name = "FILE")]
    deb: std::path::PathBuf,
    /// The package the upgrade starts from.
    #[arg(long, value_name = "FILE")]
    previous_deb: std::path::PathBuf,
    /// Where the previous package came from, for the report.
    #[arg(long, default_value = "unspecified")]
    previous_origin: String,
    /// Where the console log, agent log, pcap and journals go.
    #[arg(long, value_name = "DIR", default_value = "target/vm-lab/run")]
    artefacts: std::path::PathBuf,
    /// The image came from the cache (said in the report).
    #[arg(long)]
    image_cached: bool,
    /// End the chain after this scenario (the report then fails: not every scenario ran).
    #[arg(long, value_name = "NAME")]
    stop_after: Option<String>,
    /// Run only the NetworkManager guest (the report then fails: not every scenario ran).
    #[arg(long)]
    only_networkmanager: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// How many sequences to run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    sequences: u32,
    /// How many steps each sequence has (a failure is shrunk to fewer).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    /// The seed of the whole run (the same seed replays the same sequences).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Level 1: the daemon's core with fake backends instead of the real daemon.
    #[arg(long)]
    sim: bool,
    /// How many shrinking replays to try after a failure (default: 200 for the real daemon,
    /// 5000 with --sim).
    #[arg(long)]
    shrink_iterations: Option<u32>,
    /// Level 2: stop shrinking after this many seconds and report the smallest failure so far.
    #[arg(long, default_value_t = 300)]
    shrink_seconds: u64,
    /// Level 2: how many `up` servers the lab runs (1 to 3); `up n` uses at most that many.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3))]
    servers: u64,
    /// Print the report as JSON (progress lines are left out).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Model(model)) => return run_model(model),
        Some(Command::Vm(vm)) => return run_vm(vm),
        None => {}
    }
    if args.list {
        let width = scenarios::ALL
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for s in scenarios::ALL {
            println!("{:<width$} {}", s.name, s.guards);
        }
        return ExitCode::SUCCESS;
    }
    let mut selected = Vec::new();
    for name in &args.scenario {
        match scenarios::find(name) {
            Some(s) => selected.push(s),
            None => {
                let names: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
                eprintln!(
                    "killswitch-lab: no scenario {name:?}; scenarios are {}",
                    names.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if selected.is_empty() {
        selected = scenarios::ALL.to_vec();
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "killswitch-lab: needs root (it creates network namespaces and runs the daemon in them); try sudo"
        );
        return ExitCode::from(2);
    }
    let start = Instant::now();
    let before = match prepare_to_run() {
        Ok(before) => before,
        Err(code) => return code,
    };
    let mut reports = Vec::new();
    for scenario in selected {
        if !args.json {
            eprintln!("running {} ...", scenario.name);
        }
        reports.push(scenarios::run(scenario, args.rate));
    }
    let host_unchanged = host::snapshot().is_ok_and(|after| after == before);
    let report = LabReport::new(
        args.rate,
        reports,
        host_unchanged,
        start.elapsed().as_millis() as u64,
    );
    print_report(args.json, &report, || report.render(), report.passed)
}

/// `killswitch-lab model`: level 1 or 2 of the model-based tester.
fn run_model(args: ModelArgs) -> ExitCode {
    let steps = usize::try_from(args.steps).unwrap_or(usize::MAX);
    let options = killswitch_model::runner::Options {
        sequences: args.sequences,
        steps,
        seed: args.seed,
        shrink_iterations: args
            .shrink_iterations
            .unwrap_or(if args.sim { 5000 } else { 200 }),
    };
    let report = if args.sim {
        if args.servers != 3 || args.shrink_seconds != 300 {
            eprintln!(
                "killswitch-lab model: --servers and --shrink-seconds are for level 2; --sim ignores them"
            );
        }
        model::run_sim(options)
    } else {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "killswitch-lab model: needs root (it creates network namespaces and runs the daemon in them); try sudo, or --sim"
            );
            return ExitCode::from(2);
        }
        let before = match prepare_to_run() {
            Ok(before) => before,
            Err(code) => return code,
        };
        let mut report = model::run_lab(model::LabOptions {
            run: options,
            servers: usize::try_from(args.servers).unwrap_or(3),
            shrink_budget: Duration::from_secs(args.shrink_seconds),
            progress: !args.json,
        });
        if !host::snapshot().is_ok_and(|after| after == before) {
            report.passed = false;
            report.lab_error = Some(
                "the namespace the lab was started from changed (ruleset, routes, rules, links or resolv.conf)"
                    .to_owned(),
            );
        }
        report
    };
    print_report(args.json, &report, || report.render(), report.passed)
}

/// `killswitch-lab vm`: the VM lab.
fn run_vm(args: VmArgs) -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "killswitch-lab vm: needs root (it creates a network namespace with a tap for the guest); try sudo"
        );
        return ExitCode::from(2);
    }
    for (what, path) in [
        ("--image", args.image.join("base.raw")),
        ("--deb", args.deb.clone()),
        ("--previous-deb", args.previous_deb.clone()),
    ] {
        if !path.is_file() {
            eprintln!("killswitch-lab vm: {what}: no file {}", path.display());
            return ExitCode::from(2);
        }
    }
    // A Debian package is an ar archive: refuse anything else before a guest is booted for it.
    for (what, path) in [("--deb", &args.deb), ("--previous-deb", &args.previous_deb)] {
        let mut magic = [0u8; 8];
        let is_ar = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && &magic == b"!<arch>\n";
        if !is_ar {
            eprintln!(
                "killswitch-lab vm: {what}: {} is not a Debian package (no ar archive)",
                path.display()
            );
            return ExitCode::from(2);
        }
    }
    if let Some(name) = &args.stop_after {
        let names: Vec<&str> = killswitch_lab::vm::scenarios::CHAIN
            .iter()
            .map(|s| s.name)
            .collect();
        if !names.contains(&name.as_str()) {
            eprintln!(
                "killswitch-lab vm: --stop-after: no scenario {name:?} in the first guest's chain; it is {}",
                names.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let before = match prepare_to_run() {
        Ok(before) => before,
        Err(code) => return code,
    };
    let options = killswitch_lab::vm::Options {
        image: args.image,
        deb: args.deb,
        previous_deb: args.previous_deb,
        previous_origin: args.previous_origin,
        artefacts: args.artefacts,
        progress: !args.json,
        stop_after: args.stop_after,
        only_networkmanager: args.only_networkmanager,
    };
    let mut report = killswitch_lab::vm::run(&options, args.image_cached);
    report.host_unchanged = host::snapshot().is_ok_and(|after| after == before);
    report.passed &= report.host_unchanged;
    print_report(args.json, &report, || report.render(), report.passed)
}

/// Before a lab that needs root runs: the interrupt handler, and the snapshot of this namespace's
/// network state that the run is compared with afterwards.
fn prepare_to_run() -> Result<String, ExitCode> {
    if let Err(e) = handle_interrupts() {
        eprintln!("killswitch-lab: cannot install the Ctrl-C handler: {e}");
        return Err(ExitCode::FAILURE);
    }
    host::snapshot().map_err(|e| {
        eprintln!("killswitch-lab: cannot snapshot this namespace's network state: {e:#}");
        ExitCode::FAILURE
    })
}

/// Ctrl-C or SIGTERM: end every process the lab started and remove its namespaces, then exit.
/// The signals are blocked in every thread and taken by one thread with sigwait, so no cleanup
/// code runs in a signal handler.
fn handle_interrupts() -> nix::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    std::thread::spawn(move || {
        if let Ok(signal) = set.wait() {
            eprintln!("killswitch-lab: {signal}; cleaning up");
            // The processes first (and waited for), then the files they used, then the
            // namespaces.
            process::kill_all();
            killswitch_lab::leftovers::remove_all();
            netns::remove_own();
            // 128 + the signal's number, as a shell reports a command it ended.
            std::process::exit(128 + signal as i32);
        }
    });
    Ok(())
}

/// Prints a report as JSON or as text; the exit status says whether it passed.
fn print_report(
    json: bool,
    report: &impl serde::Serialize,
    text: impl FnOnce() -> String,
    passed: bool,
) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("killswitch-lab: cannot encode the report: {e}"),
        }
    } else {
        print!("{}", text());
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
