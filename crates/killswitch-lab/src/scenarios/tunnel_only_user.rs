//! Scenario `tunnel-only-user` (issue 15, item 2): uid 65534 (`nobody`) is a tunnel-only user
//! while the machine as a whole is unprotected (`disconnected`, no lockdown).
//!
//! Its packets are told apart from everyone else's by what they carry: `killswitch-bound --plain`
//! sends, as uid 65534, UDP through an unbound socket, a socket bound to the physical interface
//! (`SO_BINDTODEVICE`) and one with `IP_UNICAST_IF`, ICMP echo through a ping socket, every one of
//! them carrying the sender's payload, and TCP connection attempts to a port nothing else uses.
//! The capture on the physical link counts those frames; the oracle still judges every frame of
//! the protected window (guarded tunnel up, killed, back) as it does in every scenario.
//!
//! Steps: before the user is made tunnel-only, its packets leave by the physical link (a check of
//! the capture, not a leak of the feature); after `users add nobody`, none of them does while
//! root's traffic still flows directly (the machine is `disconnected` by choice); with the guarded
//! tunnel up, its traffic arrives through the tunnel; with the tunnel killed, none of it leaves;
//! with the tunnel back, it flows again; after `off`, it is still confined.

use super::{EVENT_TIMEOUT, Outcome};
use crate::generator::Kind;
use crate::lab::{Lab, is_tunnel};
use crate::packet::L4;
use crate::topology::{self, PHYS};
use anyhow::{Context, Result};
use killswitch_types::State;
use killswitch_types::ipc::{TunnelOnlyUserStatus, UserSource};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The uid made tunnel-only: `nobody`, which the lab machine always has.
pub(super) const UID: u32 = 65534;
/// What every UDP and ICMP packet of the sender carries (its start is enough to recognise it).
const MARKER: &[u8] = b"killswitch-lab: a socket fixed";
/// The port of the sender's TCP attempts: nothing else in the lab sends to it.
const TCP_PORT: u16 = 9101;
/// How long each send lasts, and how fast (all kinds together).
const SENDING: Duration = Duration::from_millis(800);
const RATE: u32 = 250;

/// What one run of uid 65534's sender showed.
#[derive(Debug)]
pub(super) struct Run {
    /// Packets and connection attempts made.
    pub(super) sent: u64,
    /// Of those, failed at once.
    pub(super) refused: u64,
    /// The sender's frames seen leaving by the physical link (outside the tunnel).
    pub(super) on_phys: usize,
    /// The first of them, described.
    pub(super) examples: Vec<String>,
    /// Arrivals at the target's UDP sink through the tunnel while it ran.
    pub(super) through_tunnel: usize,
}

/// Runs the sender as uid 65534 inside the client namespace and counts what it put on the wire.
pub(super) fn send_as_nobody(lab: &Lab) -> Result<Run> {
    let from = lab.capture.len();
    let start = Instant::now();
    let target = SocketAddr::new(topology::TARGET_V4.into(), crate::sinks::UDP_PORT);
    let (uid, tcp_port) = (UID.to_string(), TCP_PORT.to_string());
    let sender = super::bound_sender(
        lab,
        target,
        RATE,
        SENDING,
        &["--uid", &uid, "--tcp-port", &tcp_port, "--plain"],
    )?;
    let mut sender = crate::process::Process::spawn("killswitch-bound", sender)?;
    let line = sender.wait_for_line(0, "sent ", SENDING + EVENT_TIMEOUT)?;
    let summary = sender.output();
    let summary = summary.lines().nth(line - 1).unwrap_or("");
    let number = |word: &str| -> u64 {
        summary
            .split_whitespace()
            .skip_while(|w| *w != word)
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let theirs = lab.outgoing_since(from, |p| is_theirs(&p.transport, &p.payload))?;
    Ok(Run {
        sent: number("sent"),
        refused: number("refused"),
        on_phys: theirs.len(),
        examples: theirs.into_iter().take(3).collect(),
        through_tunnel: lab.servers.udp.count_since(start, is_tunnel),
    })
}

/// Whether a frame's packet is the sender's: its payload, or its TCP port.
fn is_theirs(transport: &L4, payload: &[u8]) -> bool {
    matches!(transport, L4::Tcp { dport, .. } if *dport == TCP_PORT)
        || payload.windows(MARKER.len()).any(|w| w == MARKER)
}

pub(super) fn describe(run: &Run) -> String {
    format!(
        "{} sent, {} refused at once, {} on {PHYS}{}, {} through the tunnel",
        run.sent,
        run.refused,
        run.on_phys,
        if run.examples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", run.examples.join("; "))
        },
        run.through_tunnel
    )
}

pub(super) fn tunnel_only_user(lab: &mut Lab) -> Result<Outcome> {
    // Ping sockets for every user, as many distributions allow.
    lab.topo
        .client
        .exec("sysctl", &["-qw", "net.ipv4.ping_group_range=0 2147483647"])?;
    lab.daemon()?
        .wait_for_state(State::Disconnected, EVENT_TIMEOUT)?;

    // Before: the sender's packets leave by the physical link, and the capture sees them.
    let before = send_as_nobody(lab)?;

    // `users add nobody`, the machine still `disconnected`, root sending meanwhile.
    lab.daemon()?.cli(&["users", "add", "nobody"])?.ok()?;
    let status = lab.daemon()?.status()?;
    let listed = lab.daemon()?.cli(&["--json", "users", "list"])?.ok()?;
    let listed: Vec<TunnelOnlyUserStatus> = serde_json::from_str(&listed.stdout)
        .with_context(|| format!("parsing `users list --json`: {:?}", listed.stdout))?;
    let listed_text = lab.daemon()?.cli(&["users", "list"])?.ok()?.stdout;
    let window = lab.begin(&[Kind::Udp4, Kind::Tcp4])?;
    let disconnected = send_as_nobody(lab)?;
    let root = lab.end(window)?;

    // The guarded tunnel up: this is the protected window the oracle judges.
    lab.connect()?;
    let window = lab.begin(&[])?;
    let up = send_as_nobody(lab)?;
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let killed = send_as_nobody(lab)?;
    lab.start_vpn()?;
    lab.wait_for_tunnel_traffic(Instant::now(), 1)?;
    let back = send_as_nobody(lab)?;
    let mut outcome = Outcome::new(lab.end(window)?);

    // `off`: the machine's kill switch goes, the tunnel-only user stays confined (the tunnel
    // process still runs, but the daemon no longer protects it, so it is no way out for them).
    lab.daemon()?.cli(&["off"])?.ok()?;
    let off_status = lab.daemon()?.status()?;
    let off = send_as_nobody(lab)?;

    outcome.check(
        before.on_phys > 0,
        format!(
            "check of the capture: before `users add`, uid {UID}'s packets leave by {PHYS} ({})",
            describe(&before)
        ),
    );
    let expected = TunnelOnlyUserStatus {
        user: "nobody".to_owned(),
        uid: UID,
        source: UserSource::Cli,
    };
    outcome.check(
        status.tunnel_only_users == [expected.clone()] && listed == [expected],
        format!(
            "status and `users list --json` show the tunnel-only user ({:?})",
            status.tunnel_only_users
        ),
    );
    outcome.check(
        listed_text.starts_with("nobody")
            && listed_text.contains("uid 65534")
            && listed_text.contains("cli"),
        format!(
            "`users list` names it, its uid and its source ({:?})",
            listed_text.trim()
        ),
    );
    outcome.check(
        status.state == State::Disconnected && !status.firewall.blocking,
        format!(
            "the machine stays disconnected and unblocked ({}, blocking {})",
            status.state, status.firewall.blocking
        ),
    );
    outcome.check(
        disconnected.on_phys == 0 && disconnected.sent > 0,
        format!(
            "disconnected: 0 packets of uid {UID} on {PHYS}, bound socket and ping socket included ({})",
            describe(&disconnected)
        ),
    );
    outcome.check(
        root.direct > 0,
        format!(
            "disconnected: root's traffic still reaches the target directly ({} arrivals)",
            root.direct
        ),
    );
    outcome.check(
        up.on_phys == 0 && up.through_tunnel > 0,
        format!(
            "tunnel up: uid {UID}'s traffic arrives through the tunnel only ({})",
            describe(&up)
        ),
    );
    outcome.check(
        killed.on_phys == 0 && killed.through_tunnel == 0,
        format!(
            "tunnel killed: 0 packets of uid {UID} on {PHYS} ({})",
            describe(&killed)
        ),
    );
    outcome.check(
        back.on_phys == 0 && back.through_tunnel > 0,
        format!(
            "tunnel back: uid {UID}'s traffic flows through it again ({})",
            describe(&back)
        ),
    );
    outcome.check(
        off_status.state == State::Off && off_status.tunnel_only_users.iter().any(|u| u.uid == UID),
        format!(
            "`off` keeps the tunnel-only user ({}, {:?})",
            off_status.state, off_status.tunnel_only_users
        ),
    );
    outcome.check(
        off.on_phys == 0 && off.through_tunnel == 0,
        format!(
            "off: still 0 packets of uid {UID} on {PHYS}, and none through a tunnel the daemon no longer protects ({})",
            describe(&off)
        ),
    );
    outcome.note(format!(
        "root's window while disconnected: {} packets left by {PHYS} by the machine's choice, not counted as leaks",
        root.leaked
    ));
    outcome.unprotected = Some(root);
    Ok(outcome)
}
