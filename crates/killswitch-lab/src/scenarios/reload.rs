//! Scenario `reload`: `systemctl reload` (SIGHUP) under traffic, while connected.
//!
//! A bad config.toml must be refused with the running configuration kept (the rules do not
//! change, `status` says why the file was not taken) and a good one applied in one transaction:
//! the capture sees no leak during either reload, the tunnel's traffic keeps flowing across them,
//! and the exception the good file adds works at once. The exception is a subnet on an interface
//! of its own (`nas0`, a veth to a "NAS" namespace), not on the physical link, so that the oracle
//! still judges every frame there by the same rules: whatever the reload did, nothing but the
//! tunnel may leave by the physical link.

use super::{EVENT_TIMEOUT, Outcome, TUNNEL_KINDS, coexist::udp_reaches};
use crate::daemon::{Daemon, nft_table};
use crate::lab::{Lab, hold};
use crate::netns::{Netns, veth};
use anyhow::{Context, Result};
use killswitch_types::State;
use killswitch_types::ipc::Status;
use nix::sys::signal::Signal;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The "NAS": a private subnet behind an interface of its own.
const NAS_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const NAS_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A file the daemon must refuse: the entry lacks `on IFACE`, as a hurried edit would.
const BAD_CONFIG: &str = "allow_subnets = [\"10.77.0.0/24\"]\n";
/// The same entry, right.
const GOOD_CONFIG: &str = "allow_subnets = [\"10.77.0.0/24 on nas0\"]\n";

/// Writes `config` to the daemon's config.toml, sends SIGHUP and waits until `status` shows the
/// outcome `done` looks for.
fn reload(
    lab: &mut Lab,
    config: &str,
    what: &str,
    done: impl Fn(&Status) -> bool,
) -> Result<Status> {
    std::fs::write(lab.home.config(), config).context("writing config.toml")?;
    let daemon: &mut Daemon = lab.daemon.as_mut().context("no daemon")?;
    daemon.process().signal(Signal::SIGHUP)?;
    daemon.wait_for(what, EVENT_TIMEOUT, done)
}

pub(super) fn reload_under_traffic(lab: &mut Lab) -> Result<Outcome> {
    let nas = Netns::new("reload-nas")?;
    veth(&lab.topo.client, "nas0", &nas, "nasp")?;
    lab.topo
        .client
        .ip(&["addr", "add", &format!("{NAS_CLIENT_V4}/24"), "dev", "nas0"])?;
    nas.ip(&["addr", "add", &format!("{NAS_V4}/24"), "dev", "nasp"])?;
    let to_nas = |port| SocketAddr::new(NAS_V4.into(), port);

    lab.connect()?;
    let table_before = nft_table(&lab.topo.client)?.context("connected: the table is installed")?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(500));
    let nas_before = udp_reaches(&lab.topo.client, &nas, to_nas(7201))?;

    // A bad file: refused, the running configuration kept.
    let bad_at = Instant::now();
    let refused = reload(lab, BAD_CONFIG, "the bad file refused", |s| {
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("not reloaded"))
    })?;
    let refused_in = bad_at.elapsed();
    let table_refused = nft_table(&lab.topo.client)?;
    let nas_refused = udp_reaches(&lab.topo.client, &nas, to_nas(7202))?;
    hold(Duration::from_millis(300));
    let flowed_after_bad = lab.tunnel_arrivals_since(bad_at);

    // A good file: applied at once, the refusal forgotten.
    let good_at = Instant::now();
    let applied = reload(lab, GOOD_CONFIG, "the good file applied", |s| {
        s.error.is_none() && !s.exceptions.subnets.is_empty()
    })?;
    let applied_in = good_at.elapsed();
    let nas_applied = udp_reaches(&lab.topo.client, &nas, to_nas(7203))?;
    hold(Duration::from_millis(300));
    let flowed_after_good = lab.tunnel_arrivals_since(good_at);
    let table_applied = nft_table(&lab.topo.client)?.unwrap_or_default();
    let measurement = lab.end(window)?;

    let mut outcome = Outcome::new(measurement);
    outcome.check(
        !nas_before,
        "control: before the reload, the NAS subnet is blocked like everything outside the tunnel",
    );
    outcome.check(
        refused.state == State::Connected
            && refused
                .error
                .as_deref()
                .is_some_and(|e| e.contains("10.77.0.0/24")),
        format!(
            "the bad file is refused, still connected, and status names the entry ({:?})",
            refused.error
        ),
    );
    outcome.check(
        table_refused.as_deref() == Some(table_before.as_str()),
        "after the refused reload the rules are exactly those that ran before",
    );
    outcome.check(
        !nas_refused,
        "after the refused reload the NAS subnet is still blocked",
    );
    outcome.check(
        flowed_after_bad > 0 && flowed_after_good > 0,
        format!(
            "the tunnel's traffic flowed across both reloads ({flowed_after_bad} arrivals since \
             the bad one, {flowed_after_good} since the good one)"
        ),
    );
    let refused_sends = outcome.measurement.refused;
    outcome.check(
        refused_sends == 0,
        format!(
            "no send was refused during either reload: the tunnel stayed open throughout \
             ({refused_sends} refused)"
        ),
    );
    outcome.check(
        applied.state == State::Connected && applied.exceptions.subnets == ["10.77.0.0/24 on nas0"],
        format!(
            "the good file is applied, still connected ({}; subnets {:?})",
            applied.state, applied.exceptions.subnets
        ),
    );
    outcome.check(
        nas_applied,
        "after the good reload the NAS subnet is reachable by nas0",
    );
    outcome.check(
        table_applied != table_before,
        "the good reload changed the rules",
    );
    outcome.note(format!(
        "SIGHUP to the refusal shown in status: {} ms; SIGHUP to the new rules in force: {} ms",
        refused_in.as_millis(),
        applied_in.as_millis()
    ));
    Ok(outcome)
}
