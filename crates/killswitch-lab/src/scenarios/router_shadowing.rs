//! Scenario `router-shadowing` (issue 17): port shadowing, CVE-2021-3773.
//!
//! A LAN client behind a NAT router sends from the router's WireGuard listen port to the VPN
//! server's endpoint. On a plain router its datagrams are masqueraded onto the WAN; if its NAT
//! binding exists when the router's own tunnel (re)starts on that port, the router's packets get
//! another source port and the server's handshake replies are delivered to the attacker. Here
//! the attacker sends throughout, to the endpoint's WireGuard port and to other ports, while the
//! router's tunnel is killed and restarted on the same listen port. With router mode, nothing the
//! attacker sends may reach the WAN, the attacker may receive nothing from the server, and the
//! router's tunnel must handshake again and carry the LAN's traffic.
//!
//! The oracle excuses a datagram to the endpoint's port as the tunnel's own; the attacker's are
//! told apart by their content ([`MARKER`]).

use super::router::{RouterLan, marked_on_wan};
use super::{EVENT_TIMEOUT, Outcome, RESUMED, ms};
use crate::generator::Kind;
use crate::lab::{Lab, hold};
use crate::netns::Netns;
use anyhow::{Context, Result};
use killswitch_types::State;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What every attacker datagram carries.
const MARKER: &[u8] = b"killswitch-lab port shadowing";

/// The router's WireGuard listen port, as `wg` shows it.
fn listen_port(lab: &Lab) -> Result<u16> {
    let interface = lab.tunnel.client_interface().to_owned();
    let shown = lab
        .topo
        .client
        .exec("wg", &["show", &interface, "listen-port"])?;
    shown
        .trim()
        .parse()
        .with_context(|| format!("`wg show {interface} listen-port` said {shown:?}"))
}

/// The attacker's thread: in the namespace, its socket's result, (sent, received).
type AttackerThread = std::thread::JoinHandle<Result<io::Result<(u64, u64)>>>;

/// The attacker: one socket bound to the router's listen port in the LAN client, sending
/// [`MARKER`] to each destination every 5 ms and counting what comes back from the server.
struct Attacker {
    stop: Arc<AtomicBool>,
    thread: Option<AttackerThread>,
}

impl Attacker {
    fn start(ns: &Netns, port: u16, destinations: Vec<SocketAddr>, server: IpAddr) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = ns.spawn("shadowing attacker", {
            let stop = stop.clone();
            move || -> io::Result<(u64, u64)> {
                let socket = UdpSocket::bind(("0.0.0.0", port))?;
                socket.set_nonblocking(true)?;
                let (mut sent, mut received) = (0u64, 0u64);
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    for destination in &destinations {
                        // Refusals (ICMP errors) are reported on later calls: part of the test.
                        let _ = socket.send_to(MARKER, destination);
                        sent += 1;
                    }
                    while let Ok((_, from)) = socket.recv_from(&mut buffer) {
                        received += u64::from(from.ip() == server);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok((sent, received))
            }
        })?;
        Ok(Attacker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops; returns (datagrams sent, datagrams received from the server).
    fn stop(mut self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().context("attacker already stopped")?;
        Ok(thread
            .join()
            .map_err(|_| anyhow::anyhow!("the attacker panicked"))???)
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the router's VPN process on listen port `port`.
fn start_tunnel_on(lab: &mut Lab, port: u16) -> Result<()> {
    lab.tunnel.start_client_on(&lab.topo, Some(port))
}

/// Kills the router's VPN process and starts it again on listen port `port`, waiting until the
/// daemon saw it go and come back. Returns when it is connected again.
fn restart_tunnel_on(lab: &mut Lab, port: u16) -> Result<()> {
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    hold(Duration::from_millis(500));
    start_tunnel_on(lab, port)?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    Ok(())
}

/// Waits until the router's (new) VPN process has completed a handshake, nudging it with a
/// datagram from the router into the tunnel.
fn handshake_since_start(lab: &mut Lab) -> Result<()> {
    let target = SocketAddr::new(crate::topology::TARGET_V4.into(), 9);
    let _ = lab
        .topo
        .client
        .run(|| crate::traffic::send_udp(target, b"handshake", None));
    lab.tunnel.wait_for_handshake(0, EVENT_TIMEOUT)
}

pub(super) fn router_shadowing(lab: &mut Lab) -> Result<Outcome> {
    let lan = RouterLan::build(lab)?;
    let plain_linux = super::router::without_kill_switch(lab)?;
    lab.tunnel.start_client(&lab.topo)?;
    lab.tunnel.handshake(&lab.topo, EVENT_TIMEOUT)?;
    let port = listen_port(lab)?;
    let endpoint = lab.tunnel.endpoint();
    let destinations: Vec<SocketAddr> = [endpoint.port(), endpoint.port() + 1, 443]
        .into_iter()
        .map(|p| SocketAddr::new(endpoint.ip(), p))
        .collect();

    // Baseline: the plain router, its tunnel restarting on its port while the attacker sends.
    // With the tunnel down the attacker's datagrams are masqueraded onto the WAN.
    let from = lab.capture.len();
    lab.tunnel.kill_client()?;
    let attacker = Attacker::start(&lan.client, port, destinations.clone(), endpoint.ip())?;
    hold(Duration::from_secs(1));
    start_tunnel_on(lab, port)?;
    // The LAN's datagrams (or the probe) make it initiate; any response in the new process's
    // log counts.
    let baseline_handshake = handshake_since_start(lab);
    hold(Duration::from_millis(500));
    let (baseline_sent, baseline_received) = attacker.stop()?;
    let baseline_on_wan = marked_on_wan(lab, from, MARKER)?;
    if baseline_handshake.is_err() {
        // The attack won on the plain router: start clean for the protected part.
        lab.tunnel.kill_client()?;
        start_tunnel_on(lab, port)?;
        handshake_since_start(lab)?;
    }

    // Protected: guard, router mode, the LAN's traffic through the tunnel.
    super::router::guard_again(lab)?;
    RouterLan::protect(
        lab,
        &format!(
            "{} of the attacker's {baseline_sent} datagrams on the WAN, {baseline_received} received from the server",
            baseline_on_wan.len()
        ),
    )?;
    lan.wait_for_tunnel(lab, Instant::now(), 1)?;

    let from = lab.capture.len();
    let window = lab.begin_from(&lan.client, &[Kind::Udp4, Kind::Tcp4])?;
    let attacker = Attacker::start(&lan.client, port, destinations.clone(), endpoint.ip())?;
    hold(Duration::from_secs(1));
    // The moment the attack is for: the router's tunnel starts (again) on the attacked port.
    let restarted = Instant::now();
    restart_tunnel_on(lab, port)?;
    let handshake = handshake_since_start(lab);
    let handshaken = restarted.elapsed();
    let resumed = lan.wait_for_tunnel(lab, restarted, RESUMED)?;
    hold(Duration::from_secs(1));
    let (sent, received) = attacker.stop()?;
    let mut outcome = Outcome::new(lab.end(window)?);
    let on_wan = marked_on_wan(lab, from, MARKER)?;
    let port_after = listen_port(lab)?;

    outcome.check(
        plain_linux,
        "baseline: a plain Linux router (no kill switch table)",
    );
    outcome.check(
        !baseline_on_wan.is_empty(),
        format!(
            "baseline (plain router): {} of the attacker's {baseline_sent} datagrams on the WAN (the capture sees the attack)",
            baseline_on_wan.len()
        ),
    );
    outcome.check(
        on_wan.is_empty(),
        format!(
            "protected: 0 of the attacker's {sent} datagrams (from port {port} to {}) on the WAN ({} seen)",
            destinations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            on_wan.len()
        ),
    );
    outcome.check(
        received == 0,
        format!("the attacker received nothing from the server ({received} datagrams)"),
    );
    outcome.check(
        port_after == port && handshake.is_ok(),
        format!(
            "the router's tunnel, restarted on its port {port} under attack, handshook: {}",
            match &handshake {
                Ok(()) => format!("{} ms after the kill", ms(handshaken)),
                Err(e) => format!("no ({e:#})"),
            }
        ),
    );
    outcome.check(
        outcome.measurement.through_tunnel > 0 && outcome.measurement.direct == 0,
        format!(
            "the LAN's traffic went through the tunnel ({} arrivals, {} directly), back {} ms after the restart",
            outcome.measurement.through_tunnel,
            outcome.measurement.direct,
            ms(resumed)
        ),
    );
    outcome.note(format!(
        "baseline: the attacker received {baseline_received} datagrams from the server; the router's tunnel {} on the attacked port",
        if baseline_handshake.is_ok() { "handshook" } else { "failed to handshake" }
    ));
    if let Some(first) = on_wan.first() {
        outcome.note(format!("first attacker datagram on the WAN: {first}"));
    }
    Ok(outcome)
}
