//! The nftables backend against the real kernel, in namespaces these tests create.

use anyhow::{Context, Result, ensure};
use killswitch_lab::capture::{Capture, Direction};
use killswitch_lab::netns::{Netns, require_root};
use killswitch_lab::packet::{Frame, L4};
use killswitch_lab::topology::{self, Topology};
use killswitch_lab::traffic;
use killswitch_nft::NftError;
use killswitch_policy::{
    BaseChain, Chain, ChainPolicy, Hook, Packet, Peer, PolicyState, Ruleset, Settings, Transport,
    Tunnel, compile,
};
use killswitch_types::{Endpoint, Fwmark, InterfaceName};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const MARK: u32 = 0xca6c;
const WG_PORT: u16 = 51820;

fn peer(ip: impl Into<IpAddr>, mark: Option<u32>) -> Peer {
    Peer {
        endpoint: Endpoint {
            address: SocketAddr::new(ip.into(), WG_PORT),
            protocol: killswitch_types::TransportProtocol::Udp,
        },
        mark: mark.and_then(Fwmark::new),
        uid: None,
    }
}

fn tunnel() -> Tunnel {
    Tunnel {
        interface: InterfaceName::new("wg0").expect("literal"),
        addresses: vec![
            "10.64.0.2".parse().expect("literal"),
            "fc00:bbbb::2".parse().expect("literal"),
        ],
        dns: vec!["10.64.0.1".parse().expect("literal")],
    }
}

fn all_states() -> Vec<(&'static str, PolicyState, Settings)> {
    let s = |lockdown, allow_lan| Settings {
        lockdown,
        allow_lan,
    };
    vec![
        ("off", PolicyState::Off, s(true, true)),
        ("disconnected", PolicyState::Disconnected, s(false, false)),
        (
            "disconnected+lockdown",
            PolicyState::Disconnected,
            s(true, false),
        ),
        ("blocked", PolicyState::Blocked, s(false, false)),
        ("blocked+lan", PolicyState::Blocked, s(false, true)),
        (
            "connecting",
            PolicyState::Connecting {
                peer: peer(topology::ENDPOINT_V4, Some(MARK)),
                probe: None,
            },
            s(false, false),
        ),
        (
            "connecting+probe",
            PolicyState::Connecting {
                peer: peer(topology::ENDPOINT_V4, Some(MARK)),
                probe: Some(killswitch_policy::Probe {
                    interface: InterfaceName::new("wg0").expect("literal"),
                    resolver: "10.64.0.1".parse().expect("literal"),
                }),
            },
            s(false, false),
        ),
        (
            "connected",
            PolicyState::Connected {
                peer: peer(topology::ENDPOINT_V4, Some(MARK)),
                tunnel: tunnel(),
            },
            s(false, false),
        ),
        (
            "connected+lan",
            PolicyState::Connected {
                peer: peer(topology::ENDPOINT_V4, None),
                tunnel: tunnel(),
            },
            s(true, true),
        ),
    ]
}

#[test]
fn every_state_applies_and_reads_back_as_meant() -> Result<()> {
    if !require_root("every_state_applies_and_reads_back_as_meant") {
        return Ok(());
    }
    let ns = Netns::new("readback")?;
    // Every ordered pair of states, so that each transition (table to table, table to none, none
    // to table) is exercised.
    let states = all_states();
    for (from_name, from, from_settings) in &states {
        for (to_name, to, to_settings) in &states {
            let before = compile(from, from_settings);
            let after = compile(to, to_settings);
            ns.run(|| -> Result<()> {
                killswitch_nft::apply(&before).with_context(|| format!("applying {from_name}"))?;
                let report = killswitch_nft::apply(&after)
                    .with_context(|| format!("{from_name} -> {to_name}"))?;
                ensure!(
                    report.messages >= 4,
                    "a batch has at least begin, add, delete, end"
                );
                killswitch_nft::verify(&after).with_context(|| format!("verifying {to_name}"))?;
                let installed = killswitch_nft::installed()?;
                let wants_arp = after.table.as_ref().is_some_and(|t| t.arp.is_some());
                ensure!(
                    installed.arp.is_some() == wants_arp,
                    "{to_name}: table arp killswitch {}",
                    if wants_arp { "missing" } else { "left behind" }
                );
                match (&after.table, installed.inet) {
                    (None, None) => {}
                    (Some(table), Some(installed)) => {
                        let expected: usize = table.chains.iter().map(|c| c.rules.len()).sum();
                        ensure!(
                            installed.rule_count() == expected,
                            "{to_name}: {} rules, expected {expected}",
                            installed.rule_count()
                        );
                        ensure!(
                            installed.flags == 0,
                            "{to_name}: table flags {:#x}",
                            installed.flags
                        );
                    }
                    (want, got) => anyhow::bail!(
                        "{to_name}: wanted table {}, kernel has {}",
                        want.is_some(),
                        got.is_some()
                    ),
                }
                Ok(())
            })??;
        }
    }
    Ok(())
}

#[test]
fn nft_compiles_our_rendering_into_the_same_expressions() -> Result<()> {
    if !require_root("nft_compiles_our_rendering_into_the_same_expressions") {
        return Ok(());
    }
    // An independent encoder: the nft tool compiles the policy's rendering of each state, and our
    // read-back must find exactly the expressions our own encoder would have sent.
    let ns = Netns::new("nftsyntax")?;
    let dir = tempfile::tempdir()?;
    for (name, state, settings) in all_states() {
        let ruleset = compile(&state, &settings);
        let file = dir.path().join(format!("{name}.nft"));
        std::fs::write(
            &file,
            format!(
                "table inet killswitch\ndelete table inet killswitch\n\
                 table arp killswitch\ndelete table arp killswitch\n{ruleset}"
            ),
        )?;
        ns.exec(
            "nft",
            &["-f", file.to_str().context("temporary path is not UTF-8")?],
        )
        .with_context(|| format!("nft rejected the rendering of {name}"))?;
        ns.run(|| killswitch_nft::verify(&ruleset))?
            .with_context(|| format!("{name}: nft compiled it differently"))?;
    }
    Ok(())
}

#[test]
fn nft_lists_the_table_with_drop_policies() -> Result<()> {
    if !require_root("nft_lists_the_table_with_drop_policies") {
        return Ok(());
    }
    let ns = Netns::new("nftlist")?;
    let ruleset = compile(
        &PolicyState::Connecting {
            peer: peer(topology::ENDPOINT_V4, Some(MARK)),
            probe: None,
        },
        &Settings::default(),
    );
    ns.run(|| killswitch_nft::apply(&ruleset))??;
    let listed = ns.exec("nft", &["list", "table", "inet", "killswitch"])?;
    for hook in ["input", "output", "forward"] {
        let expected = format!("type filter hook {hook} priority filter; policy drop;");
        ensure!(
            listed.contains(&expected),
            "missing `{expected}` in\n{listed}"
        );
    }
    ensure!(
        listed.contains("ip daddr 198.51.100.1 udp dport 51820 meta mark 0x0000ca6c accept comment \"endpoint hole\""),
        "endpoint hole not listed as meant:\n{listed}"
    );
    Ok(())
}

#[test]
fn verify_detects_changes_made_by_others() -> Result<()> {
    if !require_root("verify_detects_changes_made_by_others") {
        return Ok(());
    }
    let ns = Netns::new("tamper")?;
    let ruleset = compile(&PolicyState::Blocked, &Settings::default());
    let tampering: [(&str, &[&str]); 5] = [
        (
            "a foreign accept rule",
            &["insert", "rule", "inet", "killswitch", "output", "accept"],
        ),
        (
            "the table deleted",
            &["delete", "table", "inet", "killswitch"],
        ),
        ("the ruleset flushed", &["flush", "ruleset"]),
        (
            "the output chain flushed",
            &["flush", "chain", "inet", "killswitch", "output"],
        ),
        (
            "the table made dormant",
            &[
                "add",
                "table",
                "inet",
                "killswitch",
                "{",
                "flags",
                "dormant",
                ";",
                "}",
            ],
        ),
    ];
    for (what, nft_args) in tampering {
        ns.run(|| killswitch_nft::apply(&ruleset))??;
        ns.run(|| killswitch_nft::verify(&ruleset))?
            .context("fresh table verifies")?;
        ns.exec("nft", nft_args)?;
        let result = ns.run(|| killswitch_nft::verify(&ruleset))?;
        ensure!(
            matches!(result, Err(NftError::Mismatch(_))),
            "{what}: verify said {result:?}"
        );
    }
    Ok(())
}

#[test]
fn the_monitor_names_who_changed_nftables() -> Result<()> {
    if !require_root("the_monitor_names_who_changed_nftables") {
        return Ok(());
    }
    let ns = Netns::new("monitor")?;
    let monitor = ns.run(killswitch_nft::monitor::Monitor::subscribe)??;
    let ruleset = compile(&PolicyState::Blocked, &Settings::default());
    let committer =
        ns.run(|| killswitch_nft::apply(&ruleset).map(|_| nix::unistd::gettid().as_raw() as u32))??;
    ns.exec("nft", &["flush", "ruleset"])?;
    // Both transactions have completed (the calls returned), and the kernel queues their
    // notifications before it answers the committing process: they are there to read.
    let changes = monitor.read()?;
    let committers: Vec<Option<String>> = changes
        .generations
        .iter()
        .map(|g| g.process.clone())
        .collect();
    ensure!(
        changes.generations.len() == 2,
        "two transactions, two generations: {changes:?}"
    );
    ensure!(
        changes.generations[0].pid == Some(committer),
        "ours first, by the committing thread: {changes:?}"
    );
    ensure!(
        committers[1].as_deref() == Some("nft"),
        "then nft's: {committers:?}"
    );
    ensure!(monitor.read()?.generations.is_empty(), "nothing more");
    Ok(())
}

#[test]
fn a_rejected_batch_changes_nothing() -> Result<()> {
    if !require_root("a_rejected_batch_changes_nothing") {
        return Ok(());
    }
    let ns = Netns::new("rejected")?;
    let connected = || {
        compile(
            &PolicyState::Connected {
                peer: peer(topology::ENDPOINT_V4, Some(MARK)),
                tunnel: tunnel(),
            },
            &Settings::default(),
        )
    };
    let connecting = || {
        compile(
            &PolicyState::Connecting {
                peer: peer(topology::ENDPOINT_V4, None),
                probe: None,
            },
            &Settings::default(),
        )
    };
    // Well formed for us, refused by the kernel: chain names are limited to 256 bytes. Once in
    // the inet part of a batch that would remove the arp table, once in the arp part (the last
    // thing in its batch) of a batch that would add it: either way both tables stay as they were.
    let long_name = "x".repeat(300);
    let mut bad_inet = connecting();
    if let Some(table) = bad_inet.table.as_mut() {
        table.chains.push(Chain {
            name: long_name.clone(),
            base: None,
            rules: Vec::new(),
        });
    }
    let mut bad_arp = connected();
    if let Some(arp) = bad_arp.table.as_mut().and_then(|t| t.arp.as_mut()) {
        arp.chains[1].name = long_name;
    }
    let cases = [
        (connected(), bad_inet, "add chain xxx"),
        (
            compile(&PolicyState::Blocked, &Settings::default()),
            bad_arp,
            "add chain xxx",
        ),
    ];
    for (good, bad, named) in cases {
        ns.run(|| killswitch_nft::apply(&good))??;
        let result = ns.run(|| killswitch_nft::apply(&bad))?;
        match result {
            Err(NftError::Rejected { what, .. }) => ensure!(
                what.contains(named),
                "the error names the chain: {what}"
            ),
            other => anyhow::bail!("expected a rejection, got {other:?}"),
        }
        ns.run(|| killswitch_nft::verify(&good))?
            .context("the old tables are still in force, untouched")?;
    }
    Ok(())
}

#[test]
fn verify_detects_changes_to_the_arp_table() -> Result<()> {
    if !require_root("verify_detects_changes_to_the_arp_table") {
        return Ok(());
    }
    let ns = Netns::new("arptamper")?;
    let connected = compile(
        &PolicyState::Connected {
            peer: peer(topology::ENDPOINT_V4, Some(MARK)),
            tunnel: tunnel(),
        },
        &Settings::default(),
    );
    let blocked = compile(&PolicyState::Blocked, &Settings::default());
    let tampering: [(&str, &Ruleset, &[&str]); 4] = [
        (
            "the arp table deleted",
            &connected,
            &["delete", "table", "arp", "killswitch"],
        ),
        (
            "its input chain flushed",
            &connected,
            &["flush", "chain", "arp", "killswitch", "input"],
        ),
        (
            "a foreign accept ahead of its drops",
            &connected,
            &["insert", "rule", "arp", "killswitch", "output", "accept"],
        ),
        (
            "an arp table where none should be",
            &blocked,
            &["add", "table", "arp", "killswitch"],
        ),
    ];
    for (what, ruleset, nft_args) in tampering {
        ns.run(|| killswitch_nft::apply(ruleset))??;
        ns.run(|| killswitch_nft::verify(ruleset))?
            .context("fresh tables verify")?;
        ns.exec("nft", nft_args)?;
        let result = ns.run(|| killswitch_nft::verify(ruleset))?;
        ensure!(
            matches!(&result, Err(NftError::Mismatch(why)) if why.contains("arp")),
            "{what}: verify said {result:?}"
        );
    }
    let listed = ns.run(|| {
        killswitch_nft::apply(&connected)?;
        killswitch_nft::installed()
    })??;
    ensure!(
        listed.arp.as_ref().is_some_and(|t| t.rule_count() == 2),
        "one drop per direction for the tunnel's one IPv4 address: {listed:?}"
    );
    Ok(())
}

#[test]
fn malformed_rules_never_reach_the_kernel() -> Result<()> {
    if !require_root("malformed_rules_never_reach_the_kernel") {
        return Ok(());
    }
    let ns = Netns::new("malformed")?;
    let bad = Ruleset {
        table: Some(killswitch_policy::Table {
            arp: None,
            sets: Vec::new(),
            chains: vec![Chain {
                name: "output".to_owned(),
                base: Some(BaseChain {
                    hook: Hook::Output,
                    priority: 0,
                    policy: ChainPolicy::Drop,
                }),
                rules: vec![killswitch_policy::Rule {
                    matches: vec![killswitch_policy::Match::DestinationPort(53)],
                    statements: Vec::new(),
                    verdict: killswitch_policy::Verdict::Accept,
                    comment: "port without protocol",
                }],
            }],
        }),
    };
    let result = ns.run(|| killswitch_nft::apply(&bad))?;
    ensure!(matches!(result, Err(NftError::Malformed(_))), "{result:?}");
    ensure!(
        ns.run(killswitch_nft::installed)??.is_empty(),
        "nothing was installed"
    );
    Ok(())
}

/// One probe: a UDP datagram from the client, what the evaluator says of it, and what happened.
struct Probe {
    name: &'static str,
    dst: SocketAddr,
    mark: Option<u32>,
}

fn token(name: &str) -> Vec<u8> {
    format!("probe:{name}").into_bytes()
}

fn evaluator_packet(probe: &Probe) -> Packet {
    let src = if probe.dst.is_ipv4() {
        IpAddr::V4(topology::CLIENT_V4)
    } else {
        IpAddr::V6(topology::CLIENT_V6)
    };
    Packet::output(
        topology::PHYS,
        src,
        probe.dst.ip(),
        Transport::udp(40000, probe.dst.port()),
    )
    .with_mark(probe.mark.unwrap_or(0))
}

#[test]
fn real_packets_agree_with_the_evaluator() -> Result<()> {
    if !require_root("real_packets_agree_with_the_evaluator") {
        return Ok(());
    }
    let topo = Topology::new("agree")?;
    let sock = |ip: IpAddr, port| SocketAddr::new(ip, port);
    let probes = [
        Probe {
            name: "endpoint-marked",
            dst: sock(topology::ENDPOINT_V4.into(), WG_PORT),
            mark: Some(MARK),
        },
        Probe {
            name: "endpoint-unmarked",
            dst: sock(topology::ENDPOINT_V4.into(), WG_PORT),
            mark: None,
        },
        Probe {
            name: "endpoint-other-port",
            dst: sock(topology::ENDPOINT_V4.into(), 443),
            mark: Some(MARK),
        },
        Probe {
            name: "internet",
            dst: sock(topology::TARGET_V4.into(), 443),
            mark: None,
        },
        Probe {
            name: "internet-v6",
            dst: sock(topology::TARGET_V6.into(), 443),
            mark: None,
        },
        Probe {
            name: "public-dns",
            dst: sock(topology::PUBLIC_DNS_V4.into(), 53),
            mark: None,
        },
        Probe {
            name: "lan",
            dst: sock(topology::ROUTER_V4.into(), 5000),
            mark: None,
        },
        Probe {
            name: "lan-v6",
            dst: sock(topology::ROUTER_V6.into(), 5000),
            mark: None,
        },
        Probe {
            name: "lan-dns",
            dst: sock(topology::ROUTER_V4.into(), 53),
            mark: None,
        },
    ];
    let sentinel = Probe {
        name: "sentinel",
        dst: sock(topology::ENDPOINT_V4.into(), WG_PORT),
        mark: Some(MARK),
    };

    for allow_lan in [false, true] {
        let ruleset = compile(
            &PolicyState::Connecting {
                peer: peer(topology::ENDPOINT_V4, Some(MARK)),
                probe: None,
            },
            &Settings {
                lockdown: false,
                allow_lan,
            },
        );
        topo.client.run(|| killswitch_nft::apply(&ruleset))??;
        let capture = Capture::start(&topo.client, topology::PHYS)?;
        let sent: Vec<std::io::Result<()>> = topo.client.run(|| {
            probes
                .iter()
                .map(|p| traffic::send_udp(p.dst, &token(p.name), p.mark))
                .collect()
        })?;
        topo.client
            .run(|| traffic::send_udp(sentinel.dst, &token(sentinel.name), sentinel.mark))??;
        // Everything sent before the sentinel is in the capture once the sentinel is.
        let sentinel_token = token(sentinel.name);
        capture.wait_for(
            0,
            Duration::from_secs(5),
            |c| matches!(&c.frame, Frame::Ip(p) if p.payload == sentinel_token),
        )?;
        ensure!(capture.kernel_drops()? == 0, "the capture dropped frames");
        let frames = capture.frames();
        for (probe, send_result) in probes.iter().zip(sent) {
            let expected = ruleset.verdict(&evaluator_packet(probe)).is_accept();
            let want = token(probe.name);
            let on_the_wire = frames.iter().any(|c| {
                c.direction == Direction::Outgoing && matches!(&c.frame, Frame::Ip(p) if p.payload == want && matches!(p.transport, L4::Udp { .. }))
            });
            ensure!(
                on_the_wire == expected,
                "allow_lan={allow_lan} {}: evaluator says {}, the wire says {}",
                probe.name,
                if expected { "accept" } else { "block" },
                if on_the_wire { "sent" } else { "not sent" },
            );
            // Blocked packets fail fast, at the send call, instead of vanishing.
            match send_result {
                Ok(()) => ensure!(expected, "{}: blocked but the send succeeded", probe.name),
                Err(e) => ensure!(
                    !expected && traffic::is_local_rejection(&e),
                    "{}: send failed with {e}",
                    probe.name
                ),
            }
        }
    }
    Ok(())
}

#[test]
fn tcp_to_a_blocked_destination_fails_fast() -> Result<()> {
    if !require_root("tcp_to_a_blocked_destination_fails_fast") {
        return Ok(());
    }
    let topo = Topology::new("tcpfast")?;
    topo.client
        .run(|| killswitch_nft::apply(&compile(&PolicyState::Blocked, &Settings::default())))??;
    let target = SocketAddr::new(topology::TARGET_V4.into(), 443);
    // The bound is a safety net for the test, not the measurement: without the reject rule the
    // connect would hang until it ran out.
    let result = topo
        .client
        .run(|| traffic::tcp_connect(target, Duration::from_secs(10)))?;
    match result {
        Ok(_) => anyhow::bail!("connected to {target} through a blocked state"),
        Err(e) => ensure!(
            traffic::is_local_rejection(&e),
            "connect failed with {e} (expected a local rejection)"
        ),
    }
    Ok(())
}

#[test]
fn switching_states_under_traffic_never_opens_a_gap() -> Result<()> {
    if !require_root("switching_states_under_traffic_never_opens_a_gap") {
        return Ok(());
    }
    let topo = Topology::new("switch")?;
    // Old and new state each allow something the other does not: an endpoint swap (the hole moves
    // from one server to another) combined with allow-lan flipping.
    let a = compile(
        &PolicyState::Connecting {
            peer: peer(topology::ENDPOINT_V4, None),
            probe: None,
        },
        &Settings {
            lockdown: false,
            allow_lan: false,
        },
    );
    let b = compile(
        &PolicyState::Connecting {
            peer: peer(topology::ENDPOINT2_V4, None),
            probe: None,
        },
        &Settings {
            lockdown: false,
            allow_lan: true,
        },
    );
    let destinations: Vec<SocketAddr> = vec![
        SocketAddr::new(topology::ENDPOINT_V4.into(), WG_PORT),
        SocketAddr::new(topology::ENDPOINT2_V4.into(), WG_PORT),
        SocketAddr::new(topology::ROUTER_V4.into(), 5000),
        SocketAddr::new(topology::ROUTER_V4.into(), 53),
        SocketAddr::new(topology::TARGET_V4.into(), 443),
        SocketAddr::new(topology::TARGET_V6.into(), 443),
        SocketAddr::new(topology::PUBLIC_DNS_V4.into(), 53),
    ];
    topo.client.run(|| killswitch_nft::apply(&a))??;
    let capture = Capture::start(&topo.client, topology::PHYS)?;
    let stop = AtomicBool::new(false);
    let transitions = 200;
    let (sent, applied) = std::thread::scope(|scope| -> Result<(usize, usize)> {
        let generator = scope.spawn(|| {
            topo.client.run(|| {
                let sockets: Vec<_> = destinations
                    .iter()
                    .filter_map(|d| traffic::udp_socket(*d, None).ok())
                    .collect();
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for (socket, dst) in sockets.iter().zip(&destinations) {
                        let _ = socket.send_to(b"traffic", dst);
                        sent += 1;
                    }
                }
                sent
            })
        });
        let applied = topo.client.run(|| -> Result<usize> {
            let mut nft = killswitch_nft::Nftables::open()?;
            for i in 0..transitions {
                nft.apply(if i % 2 == 0 { &b } else { &a })?;
            }
            Ok(transitions)
        });
        stop.store(true, Ordering::Relaxed);
        let sent = generator
            .join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))??;
        Ok((sent, applied??))
    })?;
    // Drain: a sentinel allowed by the final state (a, after an even number of transitions).
    topo.client
        .run(|| traffic::send_udp(destinations[0], b"sentinel", None))??;
    capture.wait_for(
        0,
        Duration::from_secs(5),
        |c| matches!(&c.frame, Frame::Ip(p) if p.payload == b"sentinel"),
    )?;
    ensure!(capture.kernel_drops()? == 0, "the capture dropped frames");

    let mut per_destination = vec![0usize; destinations.len()];
    for captured in capture
        .frames()
        .iter()
        .filter(|c| c.direction == Direction::Outgoing)
    {
        let Frame::Ip(ip) = &captured.frame else {
            continue;
        };
        let transport = match ip.transport {
            L4::Udp { sport, dport } => Transport::udp(sport, dport),
            L4::Tcp { sport, dport, .. } => Transport::tcp(sport, dport),
            L4::Icmpv6 { kind } => Transport::icmpv6(kind),
            L4::Icmp { .. } => Transport::ICMP,
            L4::Other(p) => Transport::Other(p),
        };
        let packet =
            Packet::output(topology::PHYS, ip.src, ip.dst, transport).with_hop_limit(ip.hop_limit);
        ensure!(
            a.verdict(&packet).is_accept() || b.verdict(&packet).is_accept(),
            "{ip} left the host although neither the old nor the new state allows it"
        );
        if let Some(i) = destinations
            .iter()
            .position(|d| d.ip() == ip.dst && Some(d.port()) == udp_dport(ip.transport))
        {
            per_destination[i] += 1;
        }
    }
    // The test means something only if both states' holes carried traffic during the switching.
    ensure!(
        per_destination[0] > 0 && per_destination[1] > 0 && per_destination[2] > 0,
        "{per_destination:?} of {sent} sent over {applied} transitions"
    );
    eprintln!(
        "{applied} transitions, {sent} datagrams offered, per destination on the wire: {per_destination:?}"
    );
    Ok(())
}

fn udp_dport(l4: L4) -> Option<u16> {
    match l4 {
        L4::Udp { dport, .. } => Some(dport),
        _ => None,
    }
}

#[test]
fn ten_thousand_lan_subnets_apply_as_one_set_and_changes_to_it_are_seen() -> Result<()> {
    if !require_root("ten_thousand_lan_subnets_apply_as_one_set_and_changes_to_it_are_seen") {
        return Ok(());
    }
    let ns = Netns::new("bigset")?;
    // Every other /24 of 10.0.0.0/9: 10,000 ranges that cannot merge, i.e. 20,001 elements, far
    // more than one netlink message holds.
    let subnets = (0..10_000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 128, (i % 128) * 2).parse())
        .collect::<Result<Vec<ipnet::IpNet>, _>>()?;
    let lan = killswitch_policy::Lan::subnets(subnets).map_err(anyhow::Error::msg)?;
    let settings = Settings {
        lockdown: true,
        allow_lan: true,
    };
    let ruleset = killswitch_policy::compile_with(&PolicyState::Blocked, &settings, &lan);
    let report = ns.run(|| killswitch_nft::apply(&ruleset))??;
    ensure!(
        report.messages > 20,
        "the elements were split: {} messages",
        report.messages
    );
    let listed = ns.exec("nft", &["list", "set", "inet", "killswitch", "lan4"])?;
    ensure!(
        listed.contains("10.78.24.0/24") && !listed.contains("10.78.25.0/24"),
        "nft lists the set's elements"
    );
    ns.exec(
        "nft",
        &[
            "delete",
            "element",
            "inet",
            "killswitch",
            "lan4",
            "{",
            "10.78.24.0/24",
            "}",
        ],
    )?;
    let result = ns.run(|| killswitch_nft::verify(&ruleset))?;
    ensure!(
        matches!(&result, Err(NftError::Mismatch(why)) if why.contains("set lan4")),
        "a deleted element is a difference: {result:?}"
    );
    Ok(())
}
