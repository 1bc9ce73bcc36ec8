//! Benchmark 3: scale. From 10 to 10,000 allowed LAN subnets: how long the rules take to apply,
//! and what they cost each packet, against the iptables equivalent (a rule per subnet).
//!
//! Everything runs in one namespace with a veth (its peer down) that routes 10.0.0.0/8: packets
//! sent there pass the output hook and are then dropped by the device, so the sender's time per
//! packet is the stack's cost plus the rules'. The destination is in the last subnet listed, the
//! worst case for a list of rules. Per-packet cost is the median time per packet with the rules
//! minus the same without any rules, measured in alternation in the same run.

use crate::input::run_with_input;
use crate::stats::{Samples, human};
use anyhow::{Context, Result, ensure};
use ipnet::IpNet;
use killswitch_lab::netns::Netns;
use killswitch_policy::{Lan, PolicyState, Ruleset, Settings, compile_with};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// The section's markdown.
pub(crate) fn section(quick: bool) -> Result<String> {
    let counts: &[usize] = if quick {
        &[10, 1000]
    } else {
        &[10, 100, 1000, 10_000]
    };
    let (rounds, window) = if quick {
        (1, Duration::from_millis(50))
    } else {
        (5, Duration::from_millis(300))
    };
    let ns = Netns::new("bench-scale")?;
    // A veth whose peer stays down: the device drops what it is handed, after the output hook.
    // A permanent neighbour entry for the gateway spares every packet an ARP wait.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])?;
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "v0"])?;
    ns.ip(&["link", "set", "v0", "up"])?;
    ns.ip(&[
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "v0",
        "nud",
        "permanent",
    ])?;
    ns.ip(&["route", "add", "10.0.0.0/8", "via", "192.0.2.2"])?;

    let mut rows = Vec::new();
    for &n in counts {
        let subnets = subnets(n)?;
        let target = match subnets.last() {
            Some(IpNet::V4(last)) => {
                SocketAddr::from((Ipv4Addr::from(u32::from(last.network()) + 1), 9))
            }
            _ => anyhow::bail!("no subnets"),
        };
        let ruleset = compile_with(
            &PolicyState::Blocked,
            &Settings {
                lockdown: true,
                allow_lan: true,
                apps_only: false,
            },
            &Lan::subnets(subnets.clone()).map_err(anyhow::Error::msg)?,
        );
        let script = iptables_script(&subnets);

        let (mut ours_apply, mut theirs_apply) = (Vec::new(), Vec::new());
        let (mut bare, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        // The three configurations in alternation, so that drift on a noisy machine hits all
        // of them alike.
        for _ in 0..rounds {
            ours_apply.push(ns.run(|| apply_timed(&ruleset))??);
            ours.push(ns.run(|| per_packet(target, window))??);
            ns.run(|| apply_timed(&Ruleset { table: None }))??;

            theirs_apply.push(ns.run(|| -> Result<Duration> {
                let start = Instant::now();
                iptables_restore(&script)?;
                Ok(start.elapsed())
            })??);
            theirs.push(ns.run(|| per_packet(target, window))??);
            // Not an empty iptables-restore: with the nf_tables backend that leaves its tables
            // and hooked chains behind, and the "no rules" baseline would pay for them.
            ns.exec("nft", &["flush", "ruleset"])?;

            bare.push(ns.run(|| per_packet(target, window))??);
        }
        let median = |v: Vec<Duration>| Samples::new(v).median();
        rows.push(Row {
            n,
            ours_apply: median(ours_apply),
            theirs_apply: median(theirs_apply),
            bare: median(bare),
            ours: median(ours),
            theirs: median(theirs),
        });
    }
    Ok(render(&rows, window, rounds))
}

struct Row {
    n: usize,
    ours_apply: Duration,
    theirs_apply: Duration,
    bare: Duration,
    ours: Duration,
    theirs: Duration,
}

fn render(rows: &[Row], window: Duration, rounds: usize) -> String {
    let mut out = format!(
        "### 3. Scale: allowed LAN subnets\n\n\
         `lan_subnets` with N disjoint /24s (every other /24 of 10.0.0.0/9), allow-lan on, state \
         blocked; the iptables equivalent is the classic DROP-policy script with one ACCEPT rule \
         per subnet, loaded with one `iptables-restore` ({}). Apply: median of the runs; killswitch's includes \
         its read-back check and leaves out closing the netlink socket (the daemon keeps it open), \
         `iptables-restore`'s includes starting the process and its socket's close, as any program that \
         applies rules by running a tool pays; the cost per added subnet below compares the loading alone. \
         Per packet: median over {rounds} rounds of sending UDP datagrams for {} ms to an address \
         in the last subnet, minus the same with no rules at all.\n\n\
         | subnets | killswitch apply | iptables-restore apply | apply vs killswitch | killswitch per packet | iptables per packet | per packet vs killswitch |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
        iptables_version(),
        window.as_millis()
    );
    for row in rows {
        let per = |with: Duration| (with.as_secs_f64() - row.bare.as_secs_f64()).max(0.0);
        let (ours, theirs) = (per(row.ours), per(row.theirs));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.n,
            human(row.ours_apply),
            human(row.theirs_apply),
            crate::stats::ratio(row.theirs_apply, row.ours_apply),
            nanos(ours),
            nanos(theirs),
            if ours > 0.0 {
                format!("{:.1}×", theirs / ours)
            } else {
                "—".to_owned()
            },
        ));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && last.n > first.n
    {
        let added = (last.n - first.n) as f64;
        let slope = |a: Duration, b: Duration| (b.as_secs_f64() - a.as_secs_f64()) / added;
        let (ours_slope, theirs_slope) = (
            slope(first.ours_apply, last.ours_apply),
            slope(first.theirs_apply, last.theirs_apply),
        );
        let growth = |a: Duration, b: Duration| {
            let (a, b) = (
                a.as_secs_f64() - first.bare.as_secs_f64(),
                b.as_secs_f64() - last.bare.as_secs_f64(),
            );
            if a > 0.0 {
                format!("{:.1}×", b / a)
            } else {
                "—".to_owned()
            }
        };
        out.push_str(&format!(
            "\nApply, per added subnet from {} to {}: killswitch {:.2} µs, iptables-restore {:.2} µs ({}). \
             With no rules a datagram took {:.0} ns to send here. From {} to {} subnets killswitch's per-packet \
             cost grows {} (one set lookup, deeper; every row also pays for the connection tracking that both \
             rulesets' `ct state` rules switch on), the iptables equivalent's {} (it walks its list).\n",
            first.n,
            last.n,
            ours_slope * 1e6,
            theirs_slope * 1e6,
            if ours_slope > 0.0 {
                format!("{:.1}×", theirs_slope / ours_slope)
            } else {
                "—".to_owned()
            },
            last.bare.as_secs_f64() * 1e9,
            first.n,
            last.n,
            growth(first.ours, last.ours),
            growth(first.theirs, last.theirs),
        ));
    }
    out
}

fn nanos(seconds: f64) -> String {
    format!("{:.0} ns", seconds * 1e9)
}

/// `n` disjoint /24s in 10.0.0.0/9 (every other one, so that none merge into a larger range).
fn subnets(n: usize) -> Result<Vec<IpNet>> {
    ensure!(n <= 16_384, "at most 16,384 subnets fit this scheme");
    (0..n)
        .map(|i| {
            let i = u32::try_from(i)?;
            let network = Ipv4Addr::new(10, (i / 128) as u8, ((i % 128) * 2) as u8, 0);
            Ok(IpNet::V4(ipnet::Ipv4Net::new(network, 24)?))
        })
        .collect()
}

/// How long applying `ruleset` takes (commit and read-back), on a socket opened beforehand and
/// closed afterwards: closing one right after a commit waits for the kernel's deferred cleanup,
/// which the daemon, keeping its socket open, never pays.
fn apply_timed(ruleset: &Ruleset) -> Result<Duration> {
    let mut nft = killswitch_nft::Nftables::open()?;
    let start = Instant::now();
    nft.apply(ruleset)?;
    Ok(start.elapsed())
}

/// The time one datagram to `target` takes to send, averaged over sending for `window`, in the
/// calling thread's namespace. A window, not a count: a long rule list makes each packet slower,
/// and the benchmark must still end.
fn per_packet(target: SocketAddr, window: Duration) -> Result<Duration> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(target)?;
    let payload = [0u8; 64];
    let start = Instant::now();
    let mut sent: u32 = 0;
    loop {
        for _ in 0..64 {
            // A refused send means the rules rejected the packet: the number would be meaningless.
            socket
                .send(&payload)
                .with_context(|| format!("sending to {target}: the rules should allow it"))?;
        }
        sent += 64;
        let elapsed = start.elapsed();
        if elapsed >= window {
            return Ok(elapsed / sent);
        }
    }
}

/// The classic kill-switch policy with one ACCEPT per LAN subnet.
fn iptables_script(subnets: &[IpNet]) -> String {
    let mut script = String::from(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n-A OUTPUT -o lo -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A OUTPUT -d 198.51.100.1/32 -p udp --dport 51820 -j ACCEPT\n\
         -A OUTPUT -o wg0 -j ACCEPT\n",
    );
    for net in subnets {
        script.push_str(&format!("-A OUTPUT -d {net} -j ACCEPT\n"));
    }
    script.push_str("-A OUTPUT -j REJECT\nCOMMIT\n");
    script
}

/// Loads `script` with one `iptables-restore`, in the calling thread's namespace.
fn iptables_restore(script: &str) -> Result<()> {
    run_with_input(&mut Command::new("iptables-restore"), script)
}

fn iptables_version() -> String {
    Command::new("iptables")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "iptables".to_owned())
}
