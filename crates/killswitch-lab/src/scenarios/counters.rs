//! Scenario `counters`: while connected, each kind of refusal is provoked on purpose (a UDP
//! packet out of the physical interface, DNS to a public resolver, IPv6 around an IPv4-only
//! tunnel, a TCP SYN arriving from the LAN), and `killswitch --json blocked --once`, run as an
//! unprivileged user, must show each reason's counter grown by at least the packets sent, and the
//! last refused destinations must name the non-root user that sent the first kind. The same
//! answer must carry the guarded wireguard-go tunnel's last handshake, a recent one.

use super::{Outcome, TUNNEL_KINDS};
use crate::lab::{EVENT_TIMEOUT, Lab, hold};
use crate::topology::{self, PHYS};
use crate::traffic;
use anyhow::{Context, Result};
use killswitch_types::ipc::Status;
use killswitch_types::{BlockReason, BlockedStatus};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The user the non-tunnel packets are sent as: `nobody`, so that the uid the log reports is
/// seen to be the sender's, not the daemon's or root's.
const SENDER_UID: u32 = 65534;
/// Packets sent for each reason (below the log's burst, so each is logged).
const SENT: usize = 5;
/// The oldest handshake a connected tunnel may show: WireGuard renews it every 2 minutes while
/// traffic flows.
const HANDSHAKE_MAX_AGE_S: u64 = 180;

/// `killswitch --json blocked --once` as `nobody`: anyone may read what is refused. The
/// status, with its `blocked` part, which a status answer always carries.
fn blocked(lab: &Lab) -> Result<(Status, BlockedStatus)> {
    let result = lab
        .daemon()?
        .cli_as_nobody(&["--json", "blocked", "--once"])?
        .ok()?;
    let status: Status = serde_json::from_str(&result.stdout)
        .with_context(|| format!("parsing `blocked --once` {:?}", result.stdout))?;
    let blocked = status
        .blocked
        .clone()
        .context("a status answer without its `blocked` part")?;
    Ok((status, blocked))
}

/// Runs `f` with the calling thread's filesystem uid set to `uid`: sockets it opens belong to
/// that user (their owner is the creating thread's fsuid), while the thread keeps its network
/// capabilities (SO_BINDTODEVICE). The change is this thread's only (setfsuid is per thread).
fn as_uid<T>(uid: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: setfsuid changes only this thread's filesystem uid; it cannot fail in a way that
    // matters here (it returns the previous value), and the old one is restored below.
    let previous = unsafe { libc::setfsuid(uid) };
    let result = f();
    // SAFETY: as above.
    unsafe { libc::setfsuid(previous as libc::uid_t) };
    result
}

fn refused(result: std::io::Result<()>) -> bool {
    result.is_err_and(|e| traffic::is_local_rejection(&e))
}

pub(super) fn counters(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    let before = blocked(lab)?;

    let target = SocketAddr::new(topology::TARGET_V4.into(), 9);
    let non_tunnel = lab.topo.client.run(|| {
        as_uid(SENDER_UID, || {
            (0..SENT)
                .filter(|_| refused(traffic::send_udp_via(PHYS, target, b"counted", None)))
                .count()
        })
    })?;
    let resolver = SocketAddr::new(topology::PUBLIC_DNS_V4.into(), 53);
    let dns = lab.topo.client.run(|| {
        (0..SENT as u16)
            .filter(|i| {
                let query = crate::sinks::dns_query(*i, "counted.example");
                refused(traffic::send_udp_via(PHYS, resolver, &query, None))
            })
            .count()
    })?;
    // Bound to the physical interface, as a program going around the tunnel's routes: one that
    // follows the routes is refused by the routing layer (no IPv6 route in the kill switch's
    // table) before any firewall hook sees its packet, and no counter can count it. Those are
    // sent too, and noted.
    let v6_target = SocketAddr::new(topology::TARGET_V6.into(), 9);
    let ipv6 = lab.topo.client.run(|| {
        (0..SENT)
            .filter(|_| refused(traffic::send_udp_via(PHYS, v6_target, b"counted", None)))
            .count()
    })?;
    let counted_before_routed = blocked(lab)?.1.count(BlockReason::Ipv6).packets;
    let routed_v6 = lab.topo.client.run(|| {
        (0..SENT)
            .filter(|_| refused(traffic::send_udp(v6_target, b"routed", None)))
            .count()
    })?;
    let counted_routed = blocked(lab)?
        .1
        .count(BlockReason::Ipv6)
        .packets
        .saturating_sub(counted_before_routed);
    // SYNs from the LAN to ports nothing allows: each connect sends one SYN within its 300 ms
    // (the first retransmission would come after 1 s), which the client drops silently.
    let answered = lab.topo.net.run(|| {
        (0..SENT as u16)
            .filter(|i| {
                let to = SocketAddr::new(topology::CLIENT_V4.into(), 8080 + i);
                traffic::tcp_connect(to, Duration::from_millis(300)).is_ok()
            })
            .count()
    })?;

    // The counts are read when asked; the log reaches the daemon a moment after the packet:
    // ask again until the sender's packet is listed, for a bounded time.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let listed = |blocked: &BlockedStatus| {
        blocked.recent.iter().any(|p| {
            p.reason == BlockReason::NonTunnel.name()
                && p.destination == topology::TARGET_V4.to_string()
                && p.port == Some(9)
                && p.uid == Some(SENDER_UID)
        })
    };
    let (mut status, mut after) = blocked(lab)?;
    while !listed(&after) && Instant::now() < deadline {
        hold(Duration::from_millis(100));
        (status, after) = blocked(lab)?;
    }
    let before = before.1;
    let mut outcome = Outcome::new(lab.end(window)?);

    for (what, count) in [
        (
            "UDP out of the physical interface (as uid 65534)",
            non_tunnel,
        ),
        ("DNS to a public resolver", dns),
        ("IPv6 around the IPv4-only tunnel", ipv6),
    ] {
        outcome.check(
            count == SENT,
            format!("{what}: every send refused at once ({count} of {SENT})"),
        );
    }
    outcome.check(
        routed_v6 == SENT,
        format!("IPv6 by the routes: every send refused at once ({routed_v6} of {SENT})"),
    );
    outcome.note(format!(
        "IPv6 sent by the routes is refused by the routing layer before the firewall: {counted_routed} of {SENT} counted"
    ));
    outcome.check(
        answered == 0,
        format!("no connection from the LAN was answered ({answered} of {SENT})"),
    );
    for reason in BlockReason::ALL {
        let grew = after
            .count(reason)
            .packets
            .saturating_sub(before.count(reason).packets);
        outcome.check(
            grew >= SENT as u64,
            format!("counter {reason} grew by at least {SENT} ({grew})"),
        );
    }
    outcome.check(
        listed(&after),
        format!(
            "`killswitch --json blocked --once` (run as nobody) lists {target} refused as non-tunnel, sent by uid {SENDER_UID}"
        ),
    );
    // The counts change under the daemon's read-back of its table: that is no tampering.
    // The tunnel is wireguard-go's, which the daemon guards: `status` reads its handshake over
    // the UAPI socket. Connected means one completed within WireGuard's renewal (2 min) and
    // some slack.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let handshake = status.tunnel.as_ref().and_then(|t| t.handshake);
    let age = handshake
        .and_then(|h| h.last_unix)
        .map(|at| now.saturating_sub(at));
    outcome.check(
        handshake.is_some_and(|h| h.wireguard) && age.is_some_and(|a| a <= HANDSHAKE_MAX_AGE_S),
        format!(
            "`blocked --once` shows the guarded WireGuard tunnel's handshake within {HANDSHAKE_MAX_AGE_S} s ({handshake:?}, {age:?} s ago)"
        ),
    );
    // And the live view's text, as a person reads it: the age on the tunnel line (after rx/tx,
    // which are read from sysfs and absent where, as here, sysfs is not the namespace's own).
    let view = lab
        .daemon()?
        .cli_as_nobody(&["blocked", "--once"])?
        .ok()?
        .stdout;
    let tunnel_line = view
        .lines()
        .find(|l| l.starts_with("tunnel:"))
        .unwrap_or_default()
        .to_owned();
    outcome.check(
        tunnel_line.contains(", handshake ") && tunnel_line.contains(" s ago"),
        format!("`blocked --once` shows the handshake's age on the tunnel line: {tunnel_line:?}"),
    );
    let tamper = status.firewall.tamper_events;
    outcome.check(
        tamper == 0,
        format!("growing counters were never taken for tampering ({tamper} tamper events)"),
    );
    if let Some(us) = status.firewall.last_apply_us {
        outcome.note(format!(
            "last change of the rules (counters read and carried, batch, read-back): {us} us"
        ));
    }
    let recent: Vec<String> = after
        .recent
        .iter()
        .rev()
        .take(4)
        .map(ToString::to_string)
        .collect();
    outcome.note(format!(
        "counts after: {}; newest refused: {}",
        BlockReason::ALL
            .iter()
            .map(|r| format!("{r} {}", after.count(*r).packets))
            .collect::<Vec<_>>()
            .join(", "),
        recent.join("; ")
    ));
    Ok(outcome)
}
