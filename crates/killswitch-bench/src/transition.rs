//! Benchmark 1: policy transition latency. The same two states (connecting, with the endpoint
//! hole; connected, with the tunnel) applied alternately by three mechanisms:
//!
//! - killswitch: one netlink batch through a kept-open socket, with the read-back check the daemon
//!   always does (the reference), and without it;
//! - `nft -f` of the same ruleset (our rendering, which nft compiles into identical expressions);
//! - the classic iptables kill-switch script (DROP policies and flush for IPv4 and IPv6, loopback
//!   and established for both, the endpoint and tunnel rules for IPv4), with iptables and
//!   ip6tables as Debian ships them (the nft backend).

use crate::stats::{Samples, human, ratio};
use anyhow::{Context, Result, ensure};
use killswitch_lab::netns::Netns;
use killswitch_policy::{Peer, PolicyState, Ruleset, Settings, Tunnel, compile};
use killswitch_types::{Fwmark, InterfaceName};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ENDPOINT: &str = "198.51.100.1";
const PORT: u16 = 51820;
const MARK: u32 = 0xca6c;
const TUNNEL: &str = "wg0";

fn states() -> Result<[Ruleset; 2]> {
    let peer = Peer {
        endpoints: killswitch_types::Endpoints::one(format!("{ENDPOINT}:{PORT}").parse()?),
        mark: Fwmark::new(MARK),
        uid: None,
    };
    let tunnel = Tunnel {
        interface: InterfaceName::new(TUNNEL)?,
        addresses: vec!["10.64.0.2".parse()?],
        dns: vec!["10.64.0.1".parse()?],
    };
    let settings = Settings::default();
    Ok([
        compile(
            &PolicyState::Connecting {
                peer: peer.clone(),
                probe: None,
                pending: None,
            },
            &settings,
        ),
        compile(&PolicyState::Connected { peer, tunnel }, &settings),
    ])
}

/// The classic script: what many "kill switch" guides and clients run.
fn iptables_script(connected: bool) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        for chain in ["INPUT", "OUTPUT", "FORWARD"] {
            commands.push(vec![tool, "-P", chain, "DROP"]);
            commands.push(vec![tool, "-F", chain]);
        }
        commands.push(vec![tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
        commands.push(vec![tool, "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
        commands.push(vec![
            tool,
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
    }
    let port = PORT.to_string();
    let mark = format!("{MARK:#x}");
    commands.push(
        vec![
            "iptables", "-A", "OUTPUT", "-d", ENDPOINT, "-p", "udp", "--dport", &port, "-m",
            "mark", "--mark", &mark, "-j", "ACCEPT",
        ]
        .into_iter()
        .collect(),
    );
    if connected {
        commands.push(vec![
            "iptables", "-A", "OUTPUT", "-o", TUNNEL, "-j", "ACCEPT",
        ]);
        commands.push(vec![
            "iptables", "-A", "INPUT", "-i", TUNNEL, "-j", "ACCEPT",
        ]);
    }
    commands
        .into_iter()
        .map(|c| c.into_iter().map(str::to_owned).collect())
        .collect()
}

fn run(command: &[String]) -> Result<()> {
    let status = Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed");
    Ok(())
}

/// One row of the result table.
#[derive(Debug)]
pub(crate) struct Row {
    /// The mechanism.
    pub(crate) name: String,
    /// Its latencies.
    pub(crate) samples: Samples,
}

/// Runs `transitions` transitions with each mechanism.
pub(crate) fn measure(transitions: usize, dir: &Path) -> Result<Vec<Row>> {
    let ns = Netns::new("bench-trans")?;
    let rulesets = states()?;
    let files: Vec<_> = rulesets
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = dir.join(format!("state{i}.nft"));
            std::fs::write(&path, r.nft_script()).map(|_| path)
        })
        .collect::<std::io::Result<_>>()?;

    let (commit, apply) = ns.run(|| -> Result<(Vec<Duration>, Vec<Duration>)> {
        let mut nft = killswitch_nft::Nftables::open()?;
        let (mut commit, mut apply) = (Vec::new(), Vec::new());
        for i in 0..transitions {
            let start = Instant::now();
            let report = nft.apply(&rulesets[i % 2])?;
            apply.push(start.elapsed());
            commit.push(report.commit);
        }
        nft.apply(&Ruleset { table: None })?;
        Ok((commit, apply))
    })??;

    let nft_f = ns.run(|| -> Result<Vec<Duration>> {
        let mut samples = Vec::new();
        for i in 0..transitions {
            let start = Instant::now();
            let status = Command::new("nft").arg("-f").arg(&files[i % 2]).status()?;
            samples.push(start.elapsed());
            ensure!(status.success(), "nft -f failed");
        }
        run(&[
            "nft".into(),
            "delete".into(),
            "table".into(),
            "inet".into(),
            "killswitch".into(),
        ])?;
        Ok(samples)
    })??;

    let scripts = [iptables_script(false), iptables_script(true)];
    let iptables = ns.run(|| -> Result<Vec<Duration>> {
        let mut samples = Vec::new();
        for i in 0..transitions {
            let start = Instant::now();
            for command in &scripts[i % 2] {
                run(command)?;
            }
            samples.push(start.elapsed());
        }
        Ok(samples)
    })??;

    let commands = scripts.map(|s| s.len());
    // The daemon's own transition (commit and read-back) is the reference: it is what a state
    // change costs. The commit alone is listed to show what the check adds.
    Ok(vec![
        Row {
            name: "killswitch apply (netlink batch + read-back check)".to_owned(),
            samples: Samples::new(apply),
        },
        Row {
            name: "killswitch netlink batch alone (commit, no check)".to_owned(),
            samples: Samples::new(commit),
        },
        Row {
            name: "`nft -f` of the same ruleset (no check)".to_owned(),
            samples: Samples::new(nft_f),
        },
        Row {
            name: format!(
                "iptables kill-switch script ({} / {} commands)",
                commands[0], commands[1]
            ),
            samples: Samples::new(iptables),
        },
    ])
}

/// The markdown table, ratios against the first row (the daemon's apply).
pub(crate) fn table(rows: &[Row]) -> String {
    let base = rows.first().map(|r| r.samples.median()).unwrap_or_default();
    let base99 = rows
        .first()
        .map(|r| r.samples.percentile(99.0))
        .unwrap_or_default();
    let mut out = String::from(
        "| mechanism | transitions | p50 | p99 | p50 vs killswitch apply | p99 vs killswitch apply |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.name,
            row.samples.len(),
            human(row.samples.median()),
            human(row.samples.percentile(99.0)),
            ratio(row.samples.median(), base),
            ratio(row.samples.percentile(99.0), base99),
        ));
    }
    out
}
