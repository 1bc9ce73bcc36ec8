//! Benchmark 4: data-path overhead. What the kill switch's rules cost traffic that is allowed
//! through them: iperf3 throughput through a real WireGuard tunnel (two `wireguard-go`
//! processes), from the lab's client namespace to the target host in the net namespace, with
//! killswitchd guarding the tunnel and without it (`killswitch off`: no table, no routing layer).
//!
//! Every packet of a flow through the tunnel meets the rules twice on the client (the plaintext
//! packet on its way into the tunnel interface, the encrypted one on its way out of the physical
//! link) and twice again on the way back, plus the routing layer's extra policy rule; this is
//! what is measured. A third condition, a table that only tracks connections, prices what any
//! stateful firewall costs. The three rotate run by run (each round starts with the next one), so
//! that a drift of the machine's speed (other load, thermal) weighs on all alike; a ratio is the
//! median of the rounds' paired ratios. Besides bulk TCP, a UDP stream of small datagrams at an
//! unlimited rate puts the most packets per byte through the rules.

use crate::input::run_with_input;
use anyhow::{Context, Result, bail, ensure};
use killswitch_lab::daemon::{Daemon, DaemonHome};
use killswitch_lab::netns::Netns;
use killswitch_lab::process::Process;
use killswitch_lab::topology::{self, Topology};
use killswitch_lab::wireguard::{self, Tunnel};
use killswitch_types::State;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The port iperf3's server listens on at the target.
const IPERF_PORT: u16 = 5201;
/// How long the tunnel's first handshake, a state change or the iperf3 server may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A kind of traffic measured.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// One bulk TCP stream.
    TcpBulk,
    /// UDP datagrams of 64 bytes, as fast as the sender can (per-packet cost).
    UdpSmall,
}

impl Variant {
    const ALL: [Variant; 2] = [Variant::TcpBulk, Variant::UdpSmall];

    fn name(self) -> &'static str {
        match self {
            Variant::TcpBulk => "TCP, one stream",
            Variant::UdpSmall => "UDP, 64-byte datagrams, unlimited rate",
        }
    }

    fn iperf_args(self) -> &'static [&'static str] {
        match self {
            Variant::TcpBulk => &[],
            Variant::UdpSmall => &["-u", "-b", "0", "-l", "64"],
        }
    }
}

/// One iperf3 run's result, from its JSON report.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// What arrived at the receiver, Mbit/s.
    mbps: f64,
    /// TCP: segments the sender retransmitted.
    retransmits: Option<u64>,
    /// UDP: datagrams that arrived per second.
    packets_per_s: Option<f64>,
    /// UDP: the share of datagrams lost, percent.
    lost_percent: Option<f64>,
}

/// What the client's namespace enforces during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// Nothing: `killswitch off`, no table at all.
    Without,
    /// The cheapest stateful firewall there is (one `ct state` rule per hook, accept by default):
    /// what any host firewall (ufw, firewalld) costs by tracking connections, for scale.
    Conntrack,
    /// killswitchd guarding the tunnel: state `connected`.
    Killswitch,
}

impl Condition {
    const ALL: [Condition; 3] = [
        Condition::Without,
        Condition::Conntrack,
        Condition::Killswitch,
    ];

    fn name(self) -> &'static str {
        match self {
            Condition::Without => "without",
            Condition::Conntrack => "conntrack-only baseline",
            Condition::Killswitch => "with killswitch",
        }
    }
}

/// The baseline table: connection tracking on the paths the tunnel's packets take, no filtering.
const CONNTRACK_TABLE: &str = "table inet bench_conntrack {
    chain input { type filter hook input priority 0; policy accept; ct state established,related accept; }
    chain output { type filter hook output priority 0; policy accept; ct state established,related accept; }
}
";

/// The section's markdown.
pub(crate) fn section(quick: bool) -> Result<String> {
    // Six rounds: every condition runs first, second and third equally often.
    let (rounds, seconds) = if quick { (1, 1) } else { (6, 4) };
    let mut bench = Bench::new()?;
    let mut out = format!(
        "### 4. Data-path overhead\n\n\
         iperf3 from the client namespace to the target through a WireGuard tunnel (`wireguard-go` on both ends, \
         userspace), with killswitchd guarding the tunnel (`connected`: table `inet killswitch` and the routing layer), \
         without it (`killswitch off`), and, for scale, with a table that only tracks connections (one \
         `ct state established,related accept` per hook, policy accept). {rounds} round(s) of {seconds} s runs per kind \
         of traffic, the three conditions in a rotating order; medians, and the median of the rounds' paired ratios \
         (range in brackets).\n\n\
         | traffic | without | conntrack only | with killswitch | killswitch / without | conntrack only / without | killswitch / conntrack only | TCP retransmits (without / with) |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    bench.set(Condition::Killswitch)?;
    for variant in Variant::ALL {
        let mut runs: [Vec<Run>; 3] = Default::default();
        for round in 0..rounds {
            // Each round starts with the next condition (a Latin square over three rounds), so
            // that a drift of the machine's speed weighs on every condition alike.
            for k in 0..Condition::ALL.len() {
                let i = (round + k) % Condition::ALL.len();
                let condition = Condition::ALL[i];
                bench.set(condition)?;
                let run = bench
                    .iperf(variant, seconds)
                    .with_context(|| format!("{} ({})", variant.name(), condition.name()))?;
                runs[i].push(run);
            }
        }
        out.push_str(&row(variant, &runs[0], &runs[1], &runs[2]));
    }
    bench.set(Condition::Without)?;
    out.push_str(&format!(
        "\nTarget: killswitch / without ≥ 0.99. The kill switch is a stateful firewall: its `ct state` rules make the \
         kernel track every connection in the namespace, which the conntrack-only column prices on its own; \
         killswitch / conntrack only is what its own rules and routing layer add on top. Both ends of the tunnel and \
         iperf3 share this machine's {} CPU(s), so wireguard-go's encryption sets the pace and whatever the kernel \
         spends per packet is taken from it. The ranges in brackets show how much one round varies here: \
         a difference smaller than they are is not established by this run. The UDP rows offer far more than \
         the tunnel carries (most datagrams are lost before encryption): they show how the tunnel copes with \
         overload under each condition, the most packets per byte the rules see.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    Ok(out)
}

/// The lab for this benchmark: a tunnel, a daemon that guards it or not, an iperf3 server.
struct Bench {
    /// The iperf3 server (declared first: ended before the namespaces go).
    _server: Process,
    daemon: Daemon,
    _home: DaemonHome,
    tunnel: Tunnel,
    topo: Topology,
    /// What the client's namespace enforces now (`None`: not set yet).
    condition: Option<Condition>,
}

impl Bench {
    fn new() -> Result<Self> {
        let topo = Topology::new("bench-dp")?;
        let mut tunnel = Tunnel::up(&topo)?;
        // Handshake before anything is timed: wireguard-go initiates on the first packet.
        tunnel.handshake(&topo, EVENT_TIMEOUT)?;
        let home = DaemonHome::new()?;
        let daemon = Daemon::start(&topo.client, &home)?;
        let mut server = Process::spawn(
            "iperf3 server",
            iperf_command(
                &topo.net,
                &[
                    "-s",
                    // Its stdout is a pipe: without this, "Server listening" stays in a buffer.
                    "--forceflush",
                    "-B",
                    &topology::TARGET_V4.to_string(),
                    "-p",
                    &IPERF_PORT.to_string(),
                ],
            ),
        )?;
        server.wait_for_line(0, "Server listening", EVENT_TIMEOUT)?;
        Ok(Bench {
            _server: server,
            daemon,
            _home: home,
            tunnel,
            topo,
            condition: None,
        })
    }

    /// Puts the client's namespace in `condition`, and checks that exactly the tables meant are
    /// there.
    fn set(&mut self, condition: Condition) -> Result<()> {
        if self.condition == Some(condition) {
            return Ok(());
        }
        let client = &self.topo.client;
        if self.condition == Some(Condition::Conntrack) {
            client.exec("nft", &["delete", "table", "inet", "bench_conntrack"])?;
        }
        match condition {
            Condition::Killswitch => {
                self.daemon.guard(&self.tunnel)?;
                self.daemon
                    .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
            }
            Condition::Without | Condition::Conntrack => {
                self.daemon.cli(&["off"])?.ok()?;
                self.daemon.wait_for_state(State::Off, EVENT_TIMEOUT)?;
                crate::leak::ensure_removed(client)?;
                if condition == Condition::Conntrack {
                    nft_script(client, CONNTRACK_TABLE)?;
                }
            }
        }
        let tables = client.exec("nft", &["list", "tables"])?;
        let tables: Vec<&str> = tables.lines().map(str::trim).collect();
        let expected: &[&str] = match condition {
            Condition::Without => &[],
            Condition::Conntrack => &["table inet bench_conntrack"],
            // Connected: the tunnel's address is kept off the LAN by the arp table too.
            Condition::Killswitch => &["table inet killswitch", "table arp killswitch"],
        };
        ensure!(
            tables == expected,
            "{}: the client's namespace has tables {tables:?}",
            condition.name()
        );
        self.condition = Some(condition);
        Ok(())
    }

    /// One iperf3 client run of `seconds`, bounded in time.
    fn iperf(&self, variant: Variant, seconds: u64) -> Result<Run> {
        let mut args = vec![
            "-c".to_owned(),
            topology::TARGET_V4.to_string(),
            "-p".to_owned(),
            IPERF_PORT.to_string(),
            "-t".to_owned(),
            seconds.to_string(),
            "--json".to_owned(),
            "--connect-timeout".to_owned(),
            "3000".to_owned(),
        ];
        args.extend(variant.iperf_args().iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_bounded(
            iperf_command(&self.topo.client, &args),
            Duration::from_secs(seconds) + EVENT_TIMEOUT,
        )?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "iperf3 printed no JSON ({}): {text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        if let Some(error) = report.get("error").and_then(Value::as_str) {
            bail!("iperf3: {error}");
        }
        // The flow must have crossed the tunnel: the target is reachable directly too, and a
        // measurement of the physical link would say nothing about the tunnel's rules.
        let local = report
            .pointer("/start/connected/0/local_host")
            .and_then(Value::as_str);
        ensure!(
            local == Some(wireguard::CLIENT_TUNNEL_V4.to_string().as_str()),
            "iperf3's flow left from {local:?}, not the tunnel's address"
        );
        parse_report(variant, &report)
    }
}

/// iperf3 in `ns`, its output in JSON.
fn iperf_command(ns: &Netns, args: &[&str]) -> Command {
    let mut command = ns.command("iperf3");
    command.args(args);
    command
}

/// Runs `command` to completion, killing it if it takes longer than `timeout`.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<Output> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    // The child's exit is awaited on a thread so that the wait can be bounded here.
    let waiter = std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(timeout) {
        Ok(output) => {
            let _ = waiter.join();
            output.context("waiting for iperf3")
        }
        Err(_) => {
            // `ip netns exec` execs the program, so the pid is iperf3's own.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = waiter.join();
            bail!("iperf3 did not finish within {timeout:?}")
        }
    }
}

/// Reads a run's result out of iperf3's JSON report.
fn parse_report(variant: Variant, report: &Value) -> Result<Run> {
    let end = report.get("end").context("iperf3's report has no `end`")?;
    let number = |section: &str, field: &str| -> Result<f64> {
        end.get(section)
            .and_then(|s| s.get(field))
            .and_then(Value::as_f64)
            .with_context(|| format!("iperf3's report has no end.{section}.{field}"))
    };
    match variant {
        Variant::TcpBulk => Ok(Run {
            mbps: number("sum_received", "bits_per_second")? / 1e6,
            retransmits: end
                .get("sum_sent")
                .and_then(|s| s.get("retransmits"))
                .and_then(Value::as_u64),
            packets_per_s: None,
            lost_percent: None,
        }),
        Variant::UdpSmall => {
            // For UDP, end.sum is the receiver's account (as the server reported it back).
            let packets = number("sum", "packets")?;
            let lost = number("sum", "lost_packets")?;
            let seconds = number("sum", "seconds")?;
            ensure!(seconds > 0.0, "iperf3 reports a run of no time");
            let received = packets - lost;
            Ok(Run {
                mbps: received * 64.0 * 8.0 / seconds / 1e6,
                retransmits: None,
                packets_per_s: Some(received / seconds),
                lost_percent: Some(number("sum", "lost_percent")?),
            })
        }
    }
}

/// The median of `values` (0 if there are none).
fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median of `numbers` taken out of `runs`, if any run has one.
fn median_of(runs: &[Run], number: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(number).collect();
    (!values.is_empty()).then(|| median(&values))
}

/// The median and range of the rounds' ratios `runs` / `without`, as "0.995 [0.97–1.01]".
fn paired_ratio(runs: &[Run], without: &[Run]) -> String {
    let ratios: Vec<f64> = runs
        .iter()
        .zip(without)
        .filter(|(_, base)| base.mbps > 0.0)
        .map(|(run, base)| run.mbps / base.mbps)
        .collect();
    if ratios.is_empty() {
        return "-".to_owned();
    }
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if ratios.len() > 1 {
        format!("{:.3} [{low:.3}–{high:.3}]", median(&ratios))
    } else {
        format!("{:.3}", median(&ratios))
    }
}

/// A condition's median rate, and for UDP its packets per second and loss.
fn rate(runs: &[Run]) -> String {
    let mbps = median_of(runs, |r| Some(r.mbps)).unwrap_or(0.0);
    match (
        median_of(runs, |r| r.packets_per_s),
        median_of(runs, |r| r.lost_percent),
    ) {
        (Some(pps), Some(lost)) => format!(
            "{mbps:.1} Mbit/s ({:.0} k packets/s, {lost:.0} % lost)",
            pps / 1e3
        ),
        _ => format!("{mbps:.0} Mbit/s"),
    }
}

/// One table row.
fn row(variant: Variant, without: &[Run], conntrack: &[Run], with: &[Run]) -> String {
    let retransmits = |runs: &[Run]| {
        median_of(runs, |r| r.retransmits.map(|n| n as f64))
            .map_or_else(|| "-".to_owned(), |n| format!("{n:.0}"))
    };
    let retransmit_cell = match variant {
        Variant::TcpBulk => format!("{} / {}", retransmits(without), retransmits(with)),
        Variant::UdpSmall => "-".to_owned(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {retransmit_cell} |\n",
        variant.name(),
        rate(without),
        rate(conntrack),
        rate(with),
        paired_ratio(with, without),
        paired_ratio(conntrack, without),
        paired_ratio(with, conntrack),
    )
}

/// Feeds `script` to `nft -f -` in `ns`.
fn nft_script(ns: &Netns, script: &str) -> Result<()> {
    run_with_input(ns.command("nft").args(["-f", "-"]), script)
}
