//! Benchmark 5: dead-tunnel detection and failover with `killswitch up`, next to what the
//! alternatives document.
//!
//! Each run is a fresh lab (the `up-failover` scenario's steps): two wireguard-go servers, traffic
//! through the first, which is then killed with SIGKILL. Measured from the kill: the daemon
//! leaving `connected` (it has declared the tunnel dead and blocked), and `connected` again on the
//! second server. The alternatives are not run: their detection is a configured timeout, so their
//! documented defaults are what a user gets.

use crate::stats::{Samples, human};
use anyhow::{Context, Result};
use killswitch_lab::generator::Kind;
use killswitch_lab::lab::{Lab, hold};
use killswitch_lab::scenarios::{connect_up, kill_first_server};
use killswitch_tunnel::health::ALIVE_INTERVAL;
use std::net::IpAddr;
use std::time::Duration;

/// Packets through the second server that show the traffic has resumed.
const RESUMED: usize = 20;

/// The daemon's default bound (`dead_after_seconds`).
const BOUND: Duration = Duration::from_secs(3);

/// The section's markdown.
pub(crate) fn section(quick: bool) -> Result<String> {
    let runs = if quick { 1 } else { 10 };
    let (mut detected, mut failed_over, mut reconnect, mut connect) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut leaked, mut backend) = (0, String::new());
    for i in 0..runs {
        let mut lab = Lab::new("bench-failover", 1500)?;
        let up = connect_up(&mut lab)?;
        let window = lab.begin(&[Kind::Udp4, Kind::Tcp4])?;
        // Traffic through the first server for a moment, as in real use, before it dies. The
        // daemon reads the tunnel every 500 ms from its connection on, and this script's steps
        // take a nearly fixed time: without a stagger every kill would land at the same point of
        // that period. Spread evenly over it, the kills sample it as real failures would.
        hold(Duration::from_secs(1) + ALIVE_INTERVAL.mul_f64((i as f64 + 0.5) / runs as f64));
        let run = kill_first_server(&mut lab)?;
        // The window goes on past the hole's move: until traffic arrives through the second
        // server, and half a second beyond, as in the lab's scenario.
        let second = lab
            .up_servers
            .get(1)
            .context("two servers expected")?
            .0
            .client_ip;
        lab.wait_for_traffic_from(run.killed, RESUMED, move |a: IpAddr| {
            a == IpAddr::V4(second)
        })?;
        hold(Duration::from_millis(500));
        leaked += lab.end(window)?.leaked;
        detected.push(run.detected);
        failed_over.push(run.failed_over);
        reconnect.push(run.failed_over.saturating_sub(run.detected));
        connect.push(up.took);
        backend = up.backend;
    }
    let (detected, failed_over) = (Samples::new(detected), Samples::new(failed_over));
    let (reconnect, connect) = (Samples::new(reconnect), Samples::new(connect));
    let ratio = |seconds: f64| match detected.median().as_secs_f64() {
        0.0 => "—".to_owned(),
        ours => format!("{:.0}×", seconds / ours),
    };
    Ok(format!(
        "### 5. Dead-tunnel detection and failover\n\n\
         `killswitch up` with two wireguard-go servers, {backend} WireGuard, default bound of {} s; \
         the first server is killed (SIGKILL) under traffic, at a point that moves evenly across the daemon's \
         {} ms reading period from run to run. {runs} runs, each a fresh lab; \
         {leaked} packets leaked in all of them together.\n\n\
         | from the kill to | median | min | max |\n|---|---:|---:|---:|\n\
         | the tunnel declared dead (blocked, `connecting`) | {} | {} | {} |\n\
         | `connected` on the second server | {} | {} | {} |\n\
         | (of which: from declared dead to connected) | {} | {} | {} |\n\n\
         First connection after `killswitch up`: median {}.\n\n\
         Next to what the alternatives document (their detection is a configured timeout, so the \
         default is what a user gets):\n\n\
         | mechanism | notices a dead tunnel after | vs killswitch | then |\n|---|---:|---:|---|\n\
         | killswitch up (measured above) | {} | 1× | next server, hole moved in one transaction |\n\
         | OpenVPN `keepalive 10 60` (the common setting) | 60 s (`ping-restart`) | {} | reconnects; traffic leaks meanwhile unless a firewall blocks it |\n\
         | WireGuard alone (wg-quick, `PersistentKeepalive = 25`) | never: it only retries its handshake every 5 s (REKEY_TIMEOUT) and gives up after 90 s | — | no failover |\n\
         | app-level kill switches in the seed articles | \"200 ms to several seconds\" after the client notices | — | block, if the client is still alive |\n",
        BOUND.as_secs(),
        ALIVE_INTERVAL.as_millis(),
        human(detected.median()),
        human(detected.percentile(0.0)),
        human(detected.percentile(100.0)),
        human(failed_over.median()),
        human(failed_over.percentile(0.0)),
        human(failed_over.percentile(100.0)),
        human(reconnect.median()),
        human(reconnect.percentile(0.0)),
        human(reconnect.percentile(100.0)),
        human(connect.median()),
        human(detected.median()),
        ratio(60.0),
    ))
}
