//! Apps-only against the kernel: the real daemon runs `up` with a real WireGuard server in
//! namespaces this test creates (and removes, even on failure), and the routing layer it leaves
//! is read back with `ip rule` and `ip route get`. What is checked: the machine's own routing is
//! left alone (no catch-all, the main table as it was, the target reached by the physical link,
//! resolv.conf untouched, no nftables table), the tunnel still comes up and stays up (its probes
//! reach the resolver through the tunnel), a tunnel-only user is routed into the tunnel, and
//! `apps-only off` puts the machine-wide layer back.

use anyhow::{Context, Result, ensure};
use killswitch_lab::lab::{EVENT_TIMEOUT, Lab};
use killswitch_lab::netns::{Netns, require_root};
use killswitch_lab::topology;
use killswitch_types::State;
use killswitch_types::ipc::Status;
use std::time::Duration;

/// The lab's traffic rate, for a lab whose generator this test does not use.
const RATE: u32 = 500;
/// A uid that is no one's on this machine: routing rules match it all the same.
const CONFINED_UID: &str = "64999";

/// `ip route get DST` in `ns` (with `extra` selectors), or its error, as text.
fn route_get(ns: &Netns, dst: &str, extra: &[&str]) -> String {
    let mut args = vec!["route", "get", dst];
    args.extend_from_slice(extra);
    ns.ip(&args).unwrap_or_else(|e| format!("{e:#}"))
}

/// The kill switch's rules (priorities 5299-5302) of `family` in `ns`, one per line.
fn our_rules(ns: &Netns, family: &str) -> Result<Vec<String>> {
    Ok(ns
        .ip(&[family, "rule"])?
        .lines()
        .filter(|l| {
            ["5299:", "5300:", "5301:", "5302:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .collect())
}

/// The main table of `family`, without the routes of `interface` (the kernel adds the prefix
/// route of an address it is given by itself).
fn main_table(ns: &Netns, family: &str, interface: &str) -> Result<Vec<String>> {
    Ok(ns
        .ip(&[family, "route", "show", "table", "main"])?
        .lines()
        .filter(|l| {
            !l.contains(&format!("dev {interface} ")) && !l.ends_with(&format!("dev {interface}"))
        })
        .map(str::to_owned)
        .collect())
}

fn json_status(lab: &Lab, args: &[&str]) -> Result<Status> {
    let out = lab.daemon()?.cli(&[&["--json"][..], args].concat())?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| format!("parsing {:?}", out.stdout))
}

#[test]
fn apps_only_up_leaves_the_machines_routing_alone_and_routes_only_the_scopes() -> Result<()> {
    if !require_root("apps_only_up_leaves_the_machines_routing_alone_and_routes_only_the_scopes") {
        return Ok(());
    }
    let mut lab = Lab::new("apprt", RATE)?;
    lab.start_up_servers(1)?;
    let client = &lab.topo.client;
    let interface = lab.up_interface();
    let target = topology::TARGET_V4.to_string();
    let main_before = (
        main_table(client, "-4", &interface)?,
        main_table(client, "-6", &interface)?,
    );
    let resolv_before = lab.resolv_conf();
    let direct_before = route_get(client, &target, &[]);

    let status = json_status(&lab, &["apps-only", "on"])?;
    ensure!(status.apps_only, "status must say apps-only: {status:?}");
    lab.up()?;
    let daemon = lab.daemon()?;
    daemon
        .wait_for_state(State::Connected, EVENT_TIMEOUT)
        .with_context(|| lab.diagnostics())?;
    // Longer than the health bound (3 s): the daemon's probes reach the tunnel's resolver through
    // the tunnel although nothing else of the machine goes there, so the tunnel stays up.
    let stayed = daemon.wait_for(
        "a state other than connected",
        Duration::from_secs(5),
        |s| s.state != State::Connected,
    );
    ensure!(
        stayed.is_err(),
        "the tunnel did not stay connected under apps-only: {stayed:?}\n{}",
        lab.diagnostics()
    );
    let status = daemon.status()?;
    ensure!(
        status.apps_only && !status.firewall.installed && !status.firewall.blocking,
        "apps-only without scopes installs no table: {status:?}"
    );
    ensure!(
        client
            .exec("nft", &["list", "tables"])?
            .lines()
            .all(|l| !l.contains("killswitch")),
        "a table is installed"
    );
    ensure!(status.dns.is_none(), "DNS is not managed: {:?}", status.dns);
    ensure!(
        lab.resolv_conf() == resolv_before,
        "resolv.conf was rewritten"
    );

    // The machine: the same main table, no catch-all, the target by the physical link.
    let main_after = (
        main_table(client, "-4", &interface)?,
        main_table(client, "-6", &interface)?,
    );
    ensure!(
        main_after == main_before,
        "the main table changed: {main_before:?} -> {main_after:?}"
    );
    let rules = our_rules(client, "-4")?;
    let resolver = lab.up_servers[0].0.tunnel_ip.to_string();
    ensure!(
        rules.len() == 1
            && rules[0].starts_with(&format!("5300:\tfrom all to {resolver} lookup 27507")),
        "apps-only routes only the tunnel's resolver into our table: {rules:?}"
    );
    ensure!(
        our_rules(client, "-6")?.is_empty(),
        "no IPv6 rule (the tunnel's resolver is IPv4)"
    );
    let direct = route_get(client, &target, &[]);
    ensure!(
        direct == direct_before && direct.contains(topology::PHYS),
        "the machine's own route to the target changed: {direct_before} -> {direct}"
    );
    let to_resolver = route_get(client, &resolver, &[]);
    ensure!(
        to_resolver.contains(&format!("dev {interface}")),
        "the tunnel's resolver is not routed into the tunnel: {to_resolver}"
    );

    // A scope: a tunnel-only user's packets find the tunnel, everyone else's the physical link.
    daemon.cli(&["users", "add", CONFINED_UID])?.ok()?;
    let confined = route_get(client, &target, &["uid", CONFINED_UID]);
    ensure!(
        confined.contains(&format!("dev {interface}")),
        "the tunnel-only user is not routed into the tunnel: {confined}"
    );
    let other = route_get(client, &target, &["uid", "1000"]);
    ensure!(
        other.contains(topology::PHYS),
        "another user is routed elsewhere: {other}"
    );
    ensure!(
        daemon.status()?.firewall.installed,
        "the scope's table is installed"
    );

    // Apps-only off: the machine-wide layer is back at once, the tunnel up all along.
    let status = json_status(&lab, &["apps-only", "off"])?;
    ensure!(
        !status.apps_only && status.firewall.blocking && status.state == State::Connected,
        "{status:?}"
    );
    let rules = our_rules(client, "-4")?;
    ensure!(
        rules.iter().any(|r| r.starts_with("5302:")),
        "no catch-all after apps-only off: {rules:?}"
    );
    let tunnelled = route_get(client, &target, &[]);
    ensure!(
        tunnelled.contains(&format!("dev {interface}")),
        "the machine is not routed into the tunnel after apps-only off: {tunnelled}"
    );
    Ok(())
}

#[test]
fn apps_only_on_gives_the_machines_resolvers_back_and_off_takes_them_again() -> Result<()> {
    if !require_root("apps_only_on_gives_the_machines_resolvers_back_and_off_takes_them_again") {
        return Ok(());
    }
    let mut lab = Lab::new("appdns", RATE)?;
    lab.start_up_servers(1)?;
    let original = lab.resolv_conf();
    lab.up_with_dns().with_context(|| lab.diagnostics())?;
    ensure!(
        lab.resolv_conf() != original,
        "up did not point resolv.conf at the tunnel"
    );
    let daemon = lab.daemon()?;
    daemon.cli(&["apps-only", "on"])?.ok()?;
    let status = daemon.wait_for("DNS given back", EVENT_TIMEOUT, |s| {
        s.apps_only && s.state == State::Connected && s.dns.is_none()
    })?;
    ensure!(
        lab.resolv_conf() == original,
        "apps-only on: resolv.conf is not the machine's own again: {:?} ({status:?})",
        lab.resolv_conf()
    );
    daemon.cli(&["apps-only", "off"])?.ok()?;
    daemon
        .wait_for("DNS pointed at the tunnel again", EVENT_TIMEOUT, |s| {
            !s.apps_only && killswitch_lab::lab::dns_managed(s)
        })
        .with_context(|| lab.diagnostics())?;
    ensure!(
        lab.resolv_conf() != original,
        "apps-only off: resolv.conf does not name the tunnel's resolver"
    );
    Ok(())
}
