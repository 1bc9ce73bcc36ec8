//! The routing layer against the real kernel, in namespaces these tests create.

use anyhow::{Context, Result, ensure};
use killswitch_lab::netns::{Netns, require_root};
use killswitch_policy::routes::{RoutingLayer, compile_routes};
use killswitch_policy::{Peer, PolicyState, Settings, Tunnel};
use killswitch_route::Routing;
use killswitch_types::Fwmark;

/// A namespace with a "physical" link and default route, and a tunnel-like interface.
fn lab() -> Result<Netns> {
    let ns = Netns::new("route")?;
    // veth pairs inside one namespace: the machine may have no dummy driver.
    ns.ip(&[
        "link", "add", "phys0", "type", "veth", "peer", "name", "phys0p",
    ])?;
    ns.ip(&["link", "set", "phys0", "up"])?;
    ns.ip(&["link", "set", "phys0p", "up"])?;
    ns.ip(&["addr", "add", "192.168.50.2/24", "dev", "phys0"])?;
    ns.ip(&["route", "add", "default", "via", "192.168.50.1"])?;
    ns.ip(&["addr", "add", "fd50::2/64", "dev", "phys0", "nodad"])?;
    ns.ip(&["-6", "route", "add", "default", "via", "fd50::1"])?;
    ns.ip(&["link", "add", "wg0", "type", "veth", "peer", "name", "wg0p"])?;
    ns.ip(&["link", "set", "wg0", "up"])?;
    ns.ip(&["link", "set", "wg0p", "up"])?;
    ns.ip(&["addr", "add", "10.64.0.2/24", "dev", "wg0"])?;
    Ok(ns)
}

fn peer() -> Peer {
    Peer {
        endpoint: "198.51.100.1:51820".parse().expect("literal"),
        mark: Fwmark::new(0xca6c),
        uid: None,
    }
}

fn connected() -> PolicyState {
    PolicyState::Connected {
        peer: peer(),
        tunnel: Tunnel {
            interface: "wg0".parse().expect("literal"),
            addresses: vec!["10.64.0.2".parse().expect("literal")],
            dns: vec![],
        },
    }
}

fn layer(state: &PolicyState, allow_lan: bool) -> Option<RoutingLayer> {
    compile_routes(
        state,
        &Settings {
            lockdown: true,
            allow_lan,
        },
    )
}

/// Whether `ip route get` said there is no way there.
fn unreachable(answer: &str) -> bool {
    ["unreachable", "No route to host"]
        .iter()
        .any(|s| answer.contains(s))
}

/// `ip route get` as the kernel answers it (or its error).
/// Applies `state`'s routing layer inside `ns`.
fn apply_in(ns: &Netns, state: &PolicyState, allow_lan: bool) -> Result<()> {
    ns.run(|| -> Result<()> {
        Routing::open()?
            .apply(layer(state, allow_lan).as_ref())
            .map_err(Into::into)
    })?
}

fn route_get(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["route", "get"];
    all.extend_from_slice(args);
    ns.ip(&all).unwrap_or_else(|e| format!("{e:#}"))
}

#[test]
fn every_state_routes_only_into_the_tunnel_or_nowhere() -> Result<()> {
    if !require_root("every_state_routes_only_into_the_tunnel_or_nowhere") {
        return Ok(());
    }
    let ns = lab()?;
    ns.run(|| -> Result<()> {
        let mut routing = Routing::open()?;
        routing.apply(
            layer(
                &PolicyState::Connecting {
                    peer: peer(),
                    probe: None,
                    pending: None,
                },
                false,
            )
            .as_ref(),
        )?;
        Ok(())
    })??;
    ensure!(
        unreachable(&route_get(&ns, &["203.0.113.10"])),
        "connecting: {}",
        route_get(&ns, &["203.0.113.10"])
    );
    ensure!(unreachable(&route_get(&ns, &["2001:db8::10"])), "v6 too");
    // The daemon's probe into a tunnel that is not up yet: that one address, into the tunnel.
    let probe = PolicyState::Connecting {
        peer: peer(),
        probe: Some(killswitch_policy::Probe {
            interface: "wg0".parse().expect("literal"),
            resolver: "10.64.0.1".parse().expect("literal"),
        }),
        pending: None,
    };
    apply_in(&ns, &probe, false)?;
    ensure!(
        route_get(&ns, &["10.64.0.1"]).contains("dev wg0"),
        "probe route: {}",
        route_get(&ns, &["10.64.0.1"])
    );
    ensure!(
        unreachable(&route_get(&ns, &["10.64.0.5"])),
        "only the resolver"
    );
    apply_in(
        &ns,
        &PolicyState::Connecting {
            peer: peer(),
            probe: None,
            pending: None,
        },
        false,
    )?;
    ensure!(
        unreachable(&route_get(&ns, &["10.64.0.1"])),
        "the probe route goes with the probe"
    );
    let marked = route_get(&ns, &["198.51.100.1", "mark", "0xca6c"]);
    ensure!(
        marked.contains("via 192.168.50.1 dev phys0"),
        "the tunnel's own packets use the physical link: {marked}"
    );
    ensure!(
        unreachable(&route_get(&ns, &["192.168.50.1"])),
        "no LAN without allow-lan"
    );

    apply_in(&ns, &connected(), true)?;
    ensure!(
        route_get(&ns, &["203.0.113.10"]).contains("dev wg0"),
        "connected: {}",
        route_get(&ns, &["203.0.113.10"])
    );
    ensure!(
        unreachable(&route_get(&ns, &["2001:db8::10"])),
        "a v4-only tunnel leaves v6 unreachable"
    );
    ensure!(
        route_get(&ns, &["192.168.50.1"]).contains("dev phys0"),
        "allow-lan: the LAN by its own route"
    );

    // A route a hostile DHCP server pushes (TunnelVision) changes nothing.
    ns.ip(&["route", "add", "203.0.113.0/24", "via", "192.168.50.1"])?;
    ensure!(
        route_get(&ns, &["203.0.113.10"]).contains("dev wg0"),
        "pushed route used: {}",
        route_get(&ns, &["203.0.113.10"])
    );

    // A DHCP client (or a person) replacing the default route without naming the device: the
    // gateway must still be found on the physical link, not through our table (without allow-lan,
    // which would exempt the gateway's private address anyway).
    apply_in(&ns, &connected(), false)?;
    ns.ip(&["route", "del", "default"])?;
    ns.ip(&["route", "add", "default", "via", "192.168.50.1"])?;
    let default = ns.ip(&["route", "show", "default"])?;
    ensure!(
        default.contains("dev phys0"),
        "the gateway was resolved through the kill switch's table: {default}"
    );

    // With the link down, `main` has no route for the tunnel's own packets: they must fail, not
    // fall through into the tunnel itself (a routing loop).
    ns.ip(&["link", "set", "phys0", "down"])?;
    let looped = route_get(&ns, &["198.51.100.1", "mark", "0xca6c"]);
    ensure!(
        !looped.contains("dev wg0"),
        "the tunnel's own packets were routed into the tunnel: {looped}"
    );
    ns.ip(&["link", "set", "phys0", "up"])?;
    ns.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "192.168.50.1",
        "dev",
        "phys0",
    ])?;

    // The tunnel vanishing leaves `unreachable`, without anyone changing anything.
    ns.ip(&["link", "del", "wg0"])?;
    ensure!(
        unreachable(&route_get(&ns, &["203.0.113.10"])),
        "tunnel gone: {}",
        route_get(&ns, &["203.0.113.10"])
    );

    ns.run(|| -> Result<()> { Routing::open()?.apply(None).map_err(Into::into) })??;
    ensure!(
        route_get(&ns, &["203.0.113.10"]).contains("via 192.168.50.1"),
        "off: normal routing again"
    );
    let rules = ns.ip(&["rule"])?;
    ensure!(
        !rules.contains("5301") && !rules.contains("5302"),
        "no rule of ours is left:\n{rules}"
    );
    Ok(())
}

#[test]
fn apply_is_idempotent_and_repairs_what_others_removed() -> Result<()> {
    if !require_root("apply_is_idempotent_and_repairs_what_others_removed") {
        return Ok(());
    }
    let ns = lab()?;
    let wanted = layer(&connected(), true);
    ns.run(|| -> Result<()> {
        let mut routing = Routing::open()?;
        routing.apply(wanted.as_ref())?;
        let first = routing.installed()?;
        routing.apply(wanted.as_ref())?;
        ensure!(
            routing.installed()? == first,
            "a second apply changed something"
        );
        let expected = wanted.as_ref().context("a layer")?;
        ensure!(
            first.rules.len() == expected.rules.len(),
            "{} rules installed, {} wanted",
            first.rules.len(),
            expected.rules.len()
        );
        Ok(())
    })??;
    ns.ip(&["rule", "del", "priority", "5302"])?;
    ns.ip(&["route", "del", "unreachable", "default", "table", "27507"])?;
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "5301",
        "to",
        "8.8.8.0/24",
        "lookup",
        "main",
    ])?;
    ns.run(|| -> Result<()> {
        let mut routing = Routing::open()?;
        routing.apply(wanted.as_ref())?;
        let repaired = routing.installed()?;
        let expected = wanted.as_ref().context("a layer")?;
        ensure!(
            repaired.rules.len() == expected.rules.len()
                && expected.rules.iter().all(|r| repaired.rules.contains(r)),
            "{repaired:?}"
        );
        Ok(())
    })??;
    ensure!(
        !ns.ip(&["rule"])?.contains("8.8.8.0/24"),
        "a foreign rule at our priority was removed"
    );
    ensure!(
        route_get(&ns, &["203.0.113.10"]).contains("dev wg0"),
        "repaired: {}",
        route_get(&ns, &["203.0.113.10"])
    );
    Ok(())
}
