//! Scenario `apps-only` (issue 15): `killswitch apps-only on`, then `up` with a real WireGuard
//! server. The daemon runs the tunnel, but only the scopes are protected: here uid 65534
//! (`nobody`), a tunnel-only user. The machine itself is deliberately unprotected.
//!
//! Two kinds of sender, told apart on the wire: root's generator (the machine's own traffic) and
//! `killswitch-bound --plain` as uid 65534 (UDP unbound, bound to the physical interface with
//! `SO_BINDTODEVICE` and `IP_UNICAST_IF`, ICMP through a ping socket, TCP to a port of its own;
//! see `tunnel_only_user`).
//!
//! Steps: before `users add`, uid 65534's packets leave by the physical link (a check that the
//! capture sees them). With apps-only on and `up` connected: root reaches the target directly
//! (the machine is not in the tunnel, as asked), uid 65534 only through the tunnel; resolv.conf is
//! untouched and no machine-wide table is installed. Then the server is killed: the daemon goes
//! `connecting`, uid 65534's packets never appear on the physical link (the capture oracle judges
//! every frame of that window, with the tunnel's own packets to its server the only exception),
//! and root still goes directly.

use super::tunnel_only_user::{UID, describe, send_as_nobody};
use super::{EVENT_TIMEOUT, Outcome};
use crate::generator::Kind;
use crate::lab::{Lab, hold, is_tunnel};
use crate::topology::PHYS;
use anyhow::Result;
use killswitch_types::State;
use std::time::{Duration, Instant};

/// How long root's generator runs in each of its windows.
const ROOT_SENDING: Duration = Duration::from_millis(800);

pub(super) fn apps_only(lab: &mut Lab) -> Result<Outcome> {
    // Ping sockets for every user, as many distributions allow.
    lab.topo
        .client
        .exec("sysctl", &["-qw", "net.ipv4.ping_group_range=0 2147483647"])?;
    lab.daemon()?
        .wait_for_state(State::Disconnected, EVENT_TIMEOUT)?;
    let resolv_before = lab.resolv_conf();

    // Before: the capture sees uid 65534's packets on the physical link.
    let before = send_as_nobody(lab)?;

    lab.daemon()?.cli(&["apps-only", "on"])?.ok()?;
    lab.daemon()?.cli(&["users", "add", "nobody"])?.ok()?;
    lab.start_up_servers(1)?;
    lab.up()?;
    let connected = lab
        .daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let text = lab.daemon()?.cli(&["status"])?.ok()?.stdout;
    // Inside the lab's namespace (its probes must never leave from this machine's own).
    let verify = lab.daemon()?.cli_in(&lab.topo.client, &["verify"], false)?;

    // The machine's own traffic while the tunnel is up: directly, by choice.
    let since = Instant::now();
    let window = lab.begin(&[Kind::Udp4, Kind::Tcp4])?;
    hold(ROOT_SENDING);
    let root_up = lab.end(window)?;
    // At the target through the tunnel: none of root's (the daemon's own probes do reach the
    // tunnel's resolver through it, which is how it knows the tunnel is alive).
    let root_tunnelled = lab.servers.udp.count_since(since, is_tunnel)
        + lab.servers.tcp.count_since(since, is_tunnel);

    // The protected window: only the scope sends; the tunnel is killed in the middle of it.
    let window = lab.begin(&[])?;
    let up = send_as_nobody(lab)?;
    lab.up_servers
        .first_mut()
        .ok_or_else(|| anyhow::anyhow!("no up server"))?
        .0
        .process()
        .kill()?;
    let lost = lab
        .daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let killed = send_as_nobody(lab)?;
    let mut outcome = Outcome::new(lab.end(window)?);

    // The machine's own traffic with the tunnel dead: still directly.
    let window = lab.begin(&[Kind::Udp4, Kind::Tcp4])?;
    hold(ROOT_SENDING);
    let root_killed = lab.end(window)?;

    outcome.check(
        before.on_phys > 0,
        format!(
            "check of the capture: before `users add`, uid {UID}'s packets leave by {PHYS} ({})",
            describe(&before)
        ),
    );
    outcome.check(
        connected.apps_only && !connected.firewall.blocking && connected.dns.is_none(),
        format!(
            "up under apps-only: connected, apps-only in status, the machine not blocked (blocking {}), DNS not managed ({:?})",
            connected.firewall.blocking, connected.dns
        ),
    );
    outcome.check(
        lab.resolv_conf() == resolv_before,
        "resolv.conf is the machine's own (apps-only leaves it alone)",
    );
    outcome.check(
        text.contains("this machine's own traffic is NOT protected"),
        format!(
            "`status` says plainly that the machine is not protected ({:?})",
            text.lines()
                .find(|l| l.starts_with("apps only"))
                .unwrap_or("")
        ),
    );
    outcome.check(
        verify.code == Some(1) && verify.stdout.starts_with("NOT PROTECTING"),
        format!(
            "`verify` does not call the machine protected (exit {:?}: {:?})",
            verify.code,
            verify.stdout.lines().next().unwrap_or("")
        ),
    );
    outcome.check(
        root_up.direct > 0 && root_tunnelled == 0,
        format!(
            "tunnel up: the machine's own sender reaches the target directly ({} direct, {root_tunnelled} through the tunnel)",
            root_up.direct
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
        lost.state == State::Connecting && lost.apps_only,
        format!(
            "the killed server is noticed (state {}, apps-only {})",
            lost.state, lost.apps_only
        ),
    );
    outcome.check(
        killed.on_phys == 0 && killed.through_tunnel == 0 && killed.sent > 0,
        format!(
            "tunnel killed: 0 packets of uid {UID} on {PHYS} ({})",
            describe(&killed)
        ),
    );
    outcome.check(
        root_killed.direct > 0,
        format!(
            "tunnel killed: the machine's own sender still reaches the target directly ({} direct)",
            root_killed.direct
        ),
    );
    outcome.note(format!(
        "the machine's own windows: {} and {} packets left by {PHYS} directly by the administrator's choice (apps-only), not counted as leaks",
        root_up.leaked, root_killed.leaked
    ));
    outcome.unprotected = Some(root_up);
    Ok(outcome)
}
