//! Scenario `guard-discover`: `killswitch guard IFACE` with nothing else given.
//!
//! Three parts, judged by the capture on the client's physical link like every scenario:
//! (a) wireguard-go with its fwmark set: `guard IFACE` alone finds the peer's endpoint and the
//! mark, and protects as the explicit form does (no leak after the tunnel is killed; an unmarked
//! packet to the server's exact address and port does not leave); (b) the same device without a
//! fwmark: guard sets one, says so, and the tunnel works (the lab's own wg-quick style rule is
//! removed first, so the kill switch's routing layer is what steers the tunnel's packets);
//! (c) an OpenVPN-style tun device and a `.ovpn` file with two `remote`s: the hole covers
//! exactly both (a third address and another port of a remote stay blocked).

use super::{EVENT_TIMEOUT, Outcome, TUNNEL_KINDS};
use crate::lab::{Lab, hold};
use crate::packet::Frame;
use crate::topology::{ENDPOINT2_V4, ENDPOINT3_V4, ENDPOINT4_V4, PHYS};
use crate::{traffic, wireguard};
use anyhow::{Context, Result};
use killswitch_types::{Endpoint, Fwmark, State};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The OpenVPN port of the file's `remote`s.
const OVPN_PORT: u16 = 1194;
/// The tun device standing in for OpenVPN's.
const TUN: &str = "tun-ovpn";

/// Which of `payloads` reached the wire between capture frames `from` and `to`.
fn on_the_wire(lab: &Lab, from: usize, to: usize, payloads: &[Vec<u8>]) -> Vec<bool> {
    let frames = lab.capture.frames();
    let seen = |payload: &[u8]| {
        frames[from..to]
            .iter()
            .any(|c| matches!(&c.frame, Frame::Ip(p) if p.payload == payload))
    };
    payloads.iter().map(|p| seen(p)).collect()
}

pub(super) fn guard_discover(lab: &mut Lab) -> Result<Outcome> {
    let iface = lab.tunnel.client_interface().to_owned();
    let endpoint: Endpoint = format!("{}/udp", lab.tunnel.endpoint())
        .parse()
        .context("the lab's endpoint")?;

    // (a) fwmark set, as wg-quick leaves it: `guard IFACE` alone.
    lab.tunnel.start_client(&lab.topo)?;
    let guarded = Instant::now();
    let found = lab.daemon()?.cli(&["guard", &iface])?.ok()?;
    let took = guarded.elapsed();
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    lab.wait_for_tunnel_traffic(Instant::now(), 1)?;
    let status = lab.daemon()?.status()?;
    let tunnel = status.tunnel.context("no tunnel in the status")?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(500));
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    // The server-IP attack: an unmarked packet to the exact endpoint must not use the hole.
    let attack = b"guard-discover: unmarked to the endpoint".to_vec();
    let attack_from = lab.capture.len();
    let target = lab.tunnel.endpoint();
    let _ = lab
        .topo
        .client
        .run(|| traffic::send_udp_via(PHYS, target, &attack, None))?;
    hold(Duration::from_millis(500));
    let measurement = lab.end(window)?;
    let attack_to = lab.drain_capture(attack_from)?;
    let mut outcome = Outcome::new(measurement);
    outcome.check(
        tunnel.endpoints == [endpoint],
        format!(
            "(a) the hole is exactly the peer's endpoint {endpoint} (status: {:?})",
            tunnel.endpoints
        ),
    );
    outcome.check(
        tunnel.mark == Fwmark::new(wireguard::FWMARK),
        format!(
            "(a) the device's own fwmark is required (status: {:?})",
            tunnel.mark
        ),
    );
    outcome.check(
        found.stdout.contains(&format!(
            "endpoints from {iface}'s WireGuard peers: {endpoint}"
        )),
        format!(
            "(a) the CLI says where the endpoint came from: {}",
            found.stdout.trim()
        ),
    );
    outcome.check(
        on_the_wire(lab, attack_from, attack_to, &[attack]) == [false],
        "(a) an unmarked packet to the endpoint's exact address and port stays off the wire",
    );
    outcome.note(format!(
        "`killswitch guard {iface}` (discovery included) answered in {} ms",
        took.as_millis()
    ));

    // (b) no fwmark: guard sets one and the tunnel works through the kill switch's own routing.
    // Unguarded first, as a user starting out is: a device brought up under (a)'s guard without
    // a mark would loop its handshake into itself and remember the tunnel's address as its source.
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.topo.client.ip(&[
        "-4",
        "rule",
        "del",
        "not",
        "fwmark",
        &wireguard::FWMARK.to_string(),
        "table",
        "51820",
    ])?;
    lab.tunnel.start_client(&lab.topo)?;
    lab.topo
        .client
        .exec("wg", &["set", &iface, "fwmark", "0"])?;
    let unmarked = lab.topo.client.exec("wg", &["show", &iface, "fwmark"])?;
    let set = lab.daemon()?.cli(&["guard", &iface])?.ok()?;
    let mark_now = lab.topo.client.exec("wg", &["show", &iface, "fwmark"])?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let since = Instant::now();
    let works = lab.wait_for_tunnel_traffic(since, 1);
    outcome.check(
        unmarked.trim() == "off",
        format!(
            "(b) the device starts without a fwmark (wg says {:?})",
            unmarked.trim()
        ),
    );
    outcome.check(
        set.stdout.contains(&format!(
            "{iface} had no fwmark; set 0xca6c so that only its own packets use the hole"
        )),
        format!("(b) the CLI says the fwmark was set: {}", set.stdout.trim()),
    );
    outcome.check(
        mark_now.trim() == "0xca6c",
        format!(
            "(b) the device carries fwmark 0xca6c now (wg says {:?})",
            mark_now.trim()
        ),
    );
    outcome.check(
        works.is_ok(),
        format!("(b) the tunnel still works: {works:?}"),
    );
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;

    // (c) OpenVPN: a tun device and a file with two remotes.
    lab.topo
        .client
        .ip(&["tuntap", "add", "dev", TUN, "mode", "tun"])?;
    let dir = tempfile::tempdir().context("a directory for the .ovpn")?;
    let ovpn = dir.path().join("work.ovpn");
    std::fs::write(
        &ovpn,
        format!(
            "client\ndev tun\nproto udp\nremote {ENDPOINT2_V4} {OVPN_PORT}\nremote {ENDPOINT3_V4} {OVPN_PORT}\nnobind\n"
        ),
    )
    .context("writing the .ovpn")?;
    let ovpn_arg = ovpn.to_str().context("a UTF-8 path")?;
    let answer = lab
        .daemon()?
        .cli(&["guard", TUN, "--ovpn", ovpn_arg])?
        .ok()?;
    let status = lab.daemon()?.status()?;
    let remotes: Vec<Endpoint> = [ENDPOINT2_V4, ENDPOINT3_V4]
        .iter()
        .map(|ip| format!("{ip}:{OVPN_PORT}/udp").parse())
        .collect::<Result<_, _>>()?;
    let listed = status.tunnel.as_ref().map(|t| t.endpoints.clone());
    let probes: Vec<(SocketAddr, Vec<u8>)> = [
        (ENDPOINT2_V4, OVPN_PORT),
        (ENDPOINT3_V4, OVPN_PORT),
        (ENDPOINT4_V4, OVPN_PORT),
        (ENDPOINT2_V4, OVPN_PORT + 1),
    ]
    .iter()
    .map(|(ip, port)| {
        let to = SocketAddr::new(IpAddr::V4(*ip), *port);
        (to, format!("guard-discover: probe to {to}").into_bytes())
    })
    .collect();
    let from = lab.capture.len();
    for (to, payload) in &probes {
        // Refused sends are expected for the blocked ones; the wire decides.
        let _ = lab
            .topo
            .client
            .run(|| traffic::send_udp_via(PHYS, *to, payload, None))?;
    }
    let to = lab.drain_capture(from)?;
    let payloads: Vec<Vec<u8>> = probes.iter().map(|(_, p)| p.clone()).collect();
    let seen = on_the_wire(lab, from, to, &payloads);
    outcome.check(
        status.state == State::Connecting && listed.as_deref() == Some(remotes.as_slice()),
        format!(
            "(c) both remotes are the hole while the tun device is down ({:?}, {listed:?})",
            status.state
        ),
    );
    outcome.check(
        answer.stdout.contains("(2 remote(s))"),
        format!(
            "(c) the CLI lists the file's servers: {}",
            answer.stdout.trim()
        ),
    );
    outcome.check(
        seen == [true, true, false, false],
        format!(
            "(c) on the wire: remote 1 {}, remote 2 {}, a third address {}, another port {} (want true, true, false, false)",
            seen[0], seen[1], seen[2], seen[3]
        ),
    );
    lab.topo.client.ip(&["link", "del", TUN])?;
    Ok(outcome)
}
