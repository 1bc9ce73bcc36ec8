//! Scenario `router-spoof` (issue 17): a LAN client sending with sources that are not its own.
//!
//! The client holds each spoofed address on its own interface and binds to it, so its packets
//! leave it with that source as any host on the LAN could send them: a public (documentation)
//! address, the router's WAN address, the tunnel's address (inside the tunnel the server would
//! take it for the router's), and another private subnet. Each sends to a port of its own at the
//! target, whose receiver in the net namespace sees every datagram that gets there, by the WAN or
//! decrypted by the server out of the tunnel. On the plain router (reverse-path filtering off)
//! they leave by the WAN while the tunnel is down and through the tunnel while it is up; with
//! router mode, none does either, while the client's genuine traffic works.

use super::router::{LAN_CLIENT_V4, PortSink, RouterLan, marked_on_wan};
use super::{EVENT_TIMEOUT, Outcome};
use crate::generator::Kind;
use crate::lab::{Lab, hold, is_tunnel};
use crate::netns::Netns;
use crate::topology;
use crate::wireguard;
use anyhow::Result;
use killswitch_types::State;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The spoofed sources, named.
const SPOOFED: [(&str, Ipv4Addr); 4] = [
    ("a public address", Ipv4Addr::new(203, 0, 113, 99)),
    ("the router's WAN address", topology::CLIENT_V4),
    ("the tunnel's address", wireguard::CLIENT_TUNNEL_V4),
    ("another private subnet", Ipv4Addr::new(192, 168, 99, 5)),
];
/// The port the genuine datagrams go to; the spoofed ones go to the ports after it.
const GENUINE_PORT: u16 = 9110;
/// Datagrams per source per round.
const PER_SOURCE: usize = 20;

fn marker(source: Ipv4Addr) -> Vec<u8> {
    format!("killswitch-lab spoof from {source}").into_bytes()
}

/// Sends [`PER_SOURCE`] datagrams from `source` (bound to it) to `dst`, from `ns`.
fn send_from(ns: &Netns, source: Ipv4Addr, dst: SocketAddr) -> Result<()> {
    let payload = marker(source);
    ns.run(move || -> std::io::Result<()> {
        let socket = UdpSocket::bind((source, 0))?;
        for _ in 0..PER_SOURCE {
            // Refusals are the point; a send error is not the test's failure.
            let _ = socket.send_to(&payload, dst);
        }
        Ok(())
    })??;
    Ok(())
}

/// One round: every spoofed source and the genuine one send. Returns, per spoofed source, the
/// datagrams seen on the WAN and those that arrived (by any way) since then; and how many
/// genuine datagrams arrived through the tunnel.
fn round(
    lab: &Lab,
    lan: &RouterLan,
    sinks: &[PortSink],
    expect_genuine: bool,
) -> Result<(Vec<(usize, usize)>, usize)> {
    let (from, since) = (lab.capture.len(), Instant::now());
    let genuine_at = SocketAddr::new(topology::TARGET_V4.into(), GENUINE_PORT);
    send_from(&lan.client, LAN_CLIENT_V4, genuine_at)?;
    for (n, (_, source)) in SPOOFED.iter().enumerate() {
        let at = SocketAddr::new(topology::TARGET_V4.into(), GENUINE_PORT + 1 + n as u16);
        send_from(&lan.client, *source, at)?;
    }
    if expect_genuine {
        // The genuine ones were sent first: once they are in, a spoofed one that got through
        // would be in too, but allow a moment for stragglers.
        sinks[0]
            .arrivals
            .wait_for(since, PER_SOURCE, EVENT_TIMEOUT, is_tunnel)?;
    }
    hold(Duration::from_millis(500));
    let mut per_source = Vec::new();
    for (n, (_, source)) in SPOOFED.iter().enumerate() {
        let on_wan = marked_on_wan(lab, from, &marker(*source))?.len();
        let arrived = sinks[n + 1].arrivals.count_since(since, |_| true);
        per_source.push((on_wan, arrived));
    }
    let genuine = sinks[0].arrivals.count_since(since, is_tunnel);
    Ok((per_source, genuine))
}

pub(super) fn router_spoof(lab: &mut Lab) -> Result<Outcome> {
    let lan = RouterLan::build(lab)?;
    for (_, source) in SPOOFED {
        lan.client
            .ip(&["addr", "add", &format!("{source}/32"), "dev", "eth0"])?;
    }
    let mut sinks = Vec::new();
    for port in GENUINE_PORT..=GENUINE_PORT + SPOOFED.len() as u16 {
        sinks.push(PortSink::start(
            &lab.topo.net,
            SocketAddr::new(topology::TARGET_V4.into(), port),
        )?);
    }

    // Baseline: the plain router, tunnel down (the WAN), then up (the tunnel).
    let plain_linux = super::router::without_kill_switch(lab)?;
    let (by_wan, _) = round(lab, &lan, &sinks, false)?;
    lab.tunnel.start_client(&lab.topo)?;
    lab.tunnel.handshake(&lab.topo, EVENT_TIMEOUT)?;
    // A VPN router's usual NAT: masquerade into the tunnel too, so that the server takes the
    // LAN's packets for the router's (router mode does this itself; the baseline's is removed
    // before it starts).
    let tunnel_nat = format!(
        "add table ip labtunnelnat; \
         add chain ip labtunnelnat post {{ type nat hook postrouting priority 100 ; }} ; \
         add rule ip labtunnelnat post oifname \"{}\" masquerade",
        lab.tunnel.client_interface()
    );
    lab.topo.client.exec("nft", &[&tunnel_nat])?;
    let (by_tunnel, _) = round(lab, &lan, &sinks, false)?;
    lab.topo
        .client
        .exec("nft", &["delete", "table", "ip", "labtunnelnat"])?;

    // Protected.
    super::router::guard_again(lab)?;
    let (by_wan_total, by_tunnel_total): (usize, usize) = (
        by_wan.iter().map(|(w, _)| w).sum(),
        by_tunnel.iter().map(|(_, a)| a).sum(),
    );
    RouterLan::protect(
        lab,
        &format!(
            "spoofed datagrams: {by_wan_total} on the WAN with the tunnel down ({by_wan:?}), {by_tunnel_total} arrived with it up ({by_tunnel:?})"
        ),
    )?;
    lan.wait_for_tunnel(lab, Instant::now(), 1)?;
    let window = lab.begin_from(&lan.client, &[Kind::Udp4])?;
    let (protected, genuine) = round(lab, &lan, &sinks, true)?;
    // And with the tunnel down.
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let (protected_down, _) = round(lab, &lan, &sinks, false)?;
    let mut outcome = Outcome::new(lab.end(window)?);

    outcome.check(
        plain_linux,
        "baseline: a plain Linux router (no kill switch table)",
    );
    let baseline_wan: usize = by_wan.iter().map(|(w, _)| w).sum();
    let baseline_arrived: usize = by_wan.iter().chain(&by_tunnel).map(|(_, a)| a).sum();
    outcome.check(
        baseline_wan > 0 && baseline_arrived > 0,
        format!(
            "baseline (plain router, rp_filter off): spoofed datagrams on the WAN {baseline_wan}, arrived {baseline_arrived}"
        ),
    );
    for (n, (name, source)) in SPOOFED.iter().enumerate() {
        let (up_wan, up_arrived) = protected[n];
        let (down_wan, down_arrived) = protected_down[n];
        outcome.check(
            up_wan + up_arrived + down_wan + down_arrived == 0,
            format!(
                "from {name} ({source}): 0 on the WAN and 0 arrived, tunnel up ({up_wan}, {up_arrived}) and down ({down_wan}, {down_arrived}); without protection: {} on the WAN (tunnel down), {} arrived through the tunnel (up)",
                by_wan[n].0, by_tunnel[n].1
            ),
        );
    }
    outcome.check(
        genuine >= PER_SOURCE,
        format!(
            "the client's genuine datagrams arrived through the tunnel ({genuine} of {PER_SOURCE})"
        ),
    );
    Ok(outcome)
}
