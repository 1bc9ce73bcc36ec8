//! The routing layer against the real kernel, in namespaces these tests create.

use anyhow::{Context, Result, ensure};
use killswitch_lab::netns::{Netns, require_root};
use killswitch_policy::routes::{
    RoutingLayer, compile_routes, compile_routes_for, compile_routes_with,
};
use killswitch_policy::{Exceptions, LocalLink};
use killswitch_policy::{Peer, PolicyState, Settings, Tunnel};
use killswitch_route::{RouteError, Routing, notifications_concern_us};
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
        endpoints: killswitch_types::Endpoints::one("198.51.100.1:51820".parse().expect("literal")),
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
            apps_only: false,
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
        Routing::open()?.apply(layer(state, allow_lan).as_ref())?;
        Ok(())
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

    ns.run(|| -> Result<()> { Ok(Routing::open()?.apply(None).map(drop)?) })??;
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
        ns.ip(&["rule"])?.contains("8.8.8.0/24"),
        "another program's rule at our priority is its own business"
    );
    ensure!(
        route_get(&ns, &["203.0.113.10"]).contains("dev wg0"),
        "repaired: {}",
        route_get(&ns, &["203.0.113.10"])
    );
    Ok(())
}

/// A peer recognised by its endpoint alone (guard without `--mark` or `--uid`).
fn unmarked(endpoint: &str) -> PolicyState {
    PolicyState::Connecting {
        peer: Peer {
            endpoints: killswitch_types::Endpoints::one(endpoint.parse().expect("literal")),
            mark: None,
            uid: None,
        },
        probe: None,
        pending: None,
    }
}

#[test]
fn an_endpoint_rule_survives_being_applied_again() -> Result<()> {
    if !require_root("an_endpoint_rule_survives_being_applied_again") {
        return Ok(());
    }
    let ns = lab()?;
    for (family, endpoint, shown) in [
        (
            "-4",
            "198.51.100.1:51820",
            "not from all to 198.51.100.1 ipproto udp dport 51820 lookup 27507",
        ),
        (
            "-6",
            "[2001:db8::1]:51820",
            "not from all to 2001:db8::1 ipproto udp dport 51820 lookup 27507",
        ),
    ] {
        for allow_lan in [false, true, false] {
            let wanted = layer(&unmarked(endpoint), allow_lan).context("a layer")?;
            for _ in 0..3 {
                ns.run(|| -> Result<()> {
                    let mut routing = Routing::open()?;
                    routing.apply(Some(&wanted))?;
                    let installed = routing.installed()?;
                    ensure!(
                        installed.rules.len() == wanted.rules.len()
                            && wanted.rules.iter().all(|r| installed.rules.contains(r)),
                        "read back: {:?}",
                        installed.rules
                    );
                    Ok(())
                })??;
                let rules = ns.ip(&[family, "rule"])?;
                ensure!(
                    rules.contains(shown),
                    "{endpoint}, allow-lan {allow_lan}: the catch-all is gone:\n{rules}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn only_the_kill_switchs_own_rules_and_routes_are_touched() -> Result<()> {
    if !require_root("only_the_kill_switchs_own_rules_and_routes_are_touched") {
        return Ok(());
    }
    let ns = lab()?;
    // Another program's, at our priorities and in our table (iproute2 marks nothing: `unspec`
    // rules, `boot` routes).
    let foreign: [&[&str]; 5] = [
        &[
            "rule",
            "add",
            "pref",
            "5302",
            "to",
            "203.0.113.0/24",
            "lookup",
            "100",
        ],
        &[
            "rule",
            "add",
            "pref",
            "5301",
            "to",
            "10.0.0.0/8",
            "lookup",
            "100",
        ],
        &[
            "rule",
            "add",
            "pref",
            "5300",
            "to",
            "10.64.0.0/16",
            "lookup",
            "main",
        ],
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "192.168.50.1",
            "table",
            "27507",
        ],
        &[
            "-6",
            "route",
            "add",
            "2001:db8::/64",
            "via",
            "fd50::1",
            "table",
            "27507",
        ],
    ];
    for args in foreign {
        ns.ip(args)?;
    }
    let snapshot = |ns: &Netns| -> Result<String> {
        Ok(format!(
            "{}{}{}",
            ns.ip(&["rule"])?,
            ns.ip(&["route", "show", "table", "27507"])?,
            ns.ip(&["-6", "route", "show", "table", "27507"])?
        ))
    };
    let present = |ns: &Netns, when: &str| -> Result<()> {
        let all = snapshot(ns)?;
        for needle in [
            "5302:\tfrom all to 203.0.113.0/24 lookup 100",
            "5301:\tfrom all to 10.0.0.0/8 lookup 100",
            "5300:\tfrom all to 10.64.0.0/16 lookup main",
            "203.0.113.0/24 via 192.168.50.1",
            "2001:db8::/64 via fd50::1",
        ] {
            ensure!(
                all.contains(needle),
                "{when}: `{needle}` was removed:\n{all}"
            );
        }
        Ok(())
    };
    for (state, allow_lan) in [
        (PolicyState::Blocked, false),
        (connected(), true),
        (unmarked("198.51.100.1:51820"), true),
        (PolicyState::Blocked, false),
    ] {
        let applied = ns.run(|| -> Result<killswitch_route::Applied> {
            Ok(Routing::open()?.apply(layer(&state, allow_lan).as_ref())?)
        })??;
        present(&ns, &format!("{state:?}"))?;
        // The two foreign routes are always in the layer's way; of the foreign rules (at 5300,
        // 5301 and 5302) only those at priorities the layer uses: one at a priority it leaves
        // unused comes first as a rule at any lower priority would.
        let used: Vec<u32> = layer(&state, allow_lan)
            .map(|l| l.rules.iter().map(|r| r.priority).collect())
            .unwrap_or_default();
        let expected = 2 + [5300, 5301, 5302]
            .iter()
            .filter(|p| used.contains(p))
            .count();
        ensure!(
            allow_lan || expected == 3,
            "without allow-lan only the catch-all's priority is used: {used:?}"
        );
        ensure!(
            applied.foreign.len() == expected,
            "the foreign entries in the layer's way are reported ({expected}): {:?}",
            applied.foreign
        );
    }
    ns.run(|| -> Result<()> { Ok(Routing::open()?.apply(None).map(drop)?) })??;
    present(&ns, "off")?;
    let all = snapshot(&ns)?;
    ensure!(
        !all.contains("lookup 27507") && !all.contains("unreachable") && !all.contains("proto 107"),
        "ours are gone after off:\n{all}"
    );

    // Another program's route where ours must be: applying says the layer is not in place.
    ns.ip(&[
        "route",
        "add",
        "unreachable",
        "default",
        "table",
        "27507",
        "metric",
        "4294967295",
    ])?;
    let blocked = layer(&PolicyState::Blocked, false);
    let refused = ns.run(|| Routing::open().and_then(|mut r| r.apply(blocked.as_ref())))?;
    match refused {
        Err(RouteError::NotInPlace(what)) => ensure!(
            what.contains("route unreachable default (IPv4) is missing"),
            "{what}"
        ),
        other => anyhow::bail!("a layer that is not there was reported as applied: {other:?}"),
    }
    Ok(())
}

#[test]
fn an_older_versions_rules_and_routes_are_replaced() -> Result<()> {
    if !require_root("an_older_versions_rules_and_routes_are_replaced") {
        return Ok(());
    }
    let ns = lab()?;
    // What a version before the protocol mark left: `unspec` rules, `static` routes.
    let old: [&[&str]; 6] = [
        &[
            "rule", "add", "pref", "5302", "not", "fwmark", "0xca6c", "lookup", "27507",
        ],
        &[
            "-6", "rule", "add", "pref", "5302", "not", "fwmark", "0xca6c", "lookup", "27507",
        ],
        &[
            "rule",
            "add",
            "pref",
            "5301",
            "to",
            "192.168.0.0/16",
            "lookup",
            "main",
        ],
        &[
            "route",
            "add",
            "unreachable",
            "default",
            "table",
            "27507",
            "metric",
            "4294967295",
            "proto",
            "static",
        ],
        &[
            "-6",
            "route",
            "add",
            "unreachable",
            "default",
            "table",
            "27507",
            "metric",
            "4294967295",
            "proto",
            "static",
        ],
        &[
            "route", "add", "default", "dev", "wg0", "table", "27507", "proto", "static",
        ],
    ];
    for args in old {
        ns.ip(args)?;
    }
    let wanted = layer(&connected(), true).context("a layer")?;
    let applied = ns.run(|| -> Result<killswitch_route::Applied> {
        let mut routing = Routing::open()?;
        let applied = routing.apply(Some(&wanted))?;
        let installed = routing.installed()?;
        ensure!(installed.rules.len() == wanted.rules.len(), "{installed:?}");
        Ok(applied)
    })??;
    ensure!(applied.foreign.is_empty(), "{:?}", applied.foreign);
    let rules = format!(
        "{}{}",
        ns.ip(&["-d", "rule"])?,
        ns.ip(&["-d", "-6", "rule"])?
    );
    for line in rules.lines().filter(|l| l.starts_with("530")) {
        ensure!(
            line.contains("proto 107"),
            "an older version's rule is left: {line}"
        );
    }
    ensure!(
        rules
            .lines()
            .filter(|l| l.contains("192.168.0.0/16"))
            .count()
            == 1,
        "replaced, not doubled:\n{rules}"
    );
    for family in ["-4", "-6"] {
        let routes = ns.ip(&[family, "route", "show", "table", "27507"])?;
        ensure!(
            routes.lines().all(|l| l.contains("proto 107")),
            "an older version's route is left:\n{routes}"
        );
        ensure!(routes.contains("unreachable default"), "{routes}");
    }
    ensure!(
        route_get(&ns, &["203.0.113.10"]).contains("dev wg0"),
        "{}",
        route_get(&ns, &["203.0.113.10"])
    );
    Ok(())
}

#[test]
fn with_allow_lan_what_belongs_to_the_tunnel_is_routed_into_it() -> Result<()> {
    if !require_root("with_allow_lan_what_belongs_to_the_tunnel_is_routed_into_it") {
        return Ok(());
    }
    let ns = lab()?;
    let networks = ["10.64.0.2/16".parse().expect("literal")];
    let settings = Settings {
        lockdown: true,
        allow_lan: true,
        apps_only: false,
    };
    let tunnel = Tunnel {
        interface: "wg0".parse().expect("literal"),
        addresses: vec!["10.64.0.2".parse().expect("literal")],
        dns: vec!["10.64.0.1".parse().expect("literal")],
    };
    // Connecting: the daemon's probe to the resolver goes into the tunnel, not to the LAN.
    let connecting = PolicyState::Connecting {
        peer: peer(),
        probe: Some(killswitch_policy::Probe {
            interface: "wg0".parse().expect("literal"),
            resolver: "10.64.0.1".parse().expect("literal"),
        }),
        pending: Some(tunnel.clone()),
    };
    let apply = |state: &PolicyState| -> Result<()> {
        let layer = compile_routes_with(state, &settings, &networks);
        ns.run(|| -> Result<()> { Ok(Routing::open()?.apply(layer.as_ref()).map(drop)?) })?
    };
    apply(&connecting)?;
    ensure!(
        route_get(&ns, &["10.64.0.1"]).contains("dev wg0"),
        "connecting: the probe leaves by the LAN: {}",
        route_get(&ns, &["10.64.0.1"])
    );
    ensure!(
        unreachable(&route_get(&ns, &["10.64.9.9"])),
        "connecting: inside the tunnel's network, nowhere yet: {}",
        route_get(&ns, &["10.64.9.9"])
    );
    // Connected, with a route a hostile DHCP server pushed for part of the tunnel's network.
    ns.ip(&["route", "add", "10.64.9.0/24", "via", "192.168.50.1"])?;
    apply(&PolicyState::Connected {
        peer: peer(),
        tunnel,
    })?;
    for inside in ["10.64.0.1", "10.64.9.9"] {
        ensure!(
            route_get(&ns, &[inside]).contains("dev wg0"),
            "connected: {inside} leaves by the LAN: {}",
            route_get(&ns, &[inside])
        );
    }
    ensure!(
        route_get(&ns, &["192.168.50.1"]).contains("dev phys0"),
        "the LAN is still the LAN"
    );
    ensure!(
        route_get(&ns, &["10.1.2.3"]).contains("via 192.168.50.1"),
        "other private addresses are the LAN's: {}",
        route_get(&ns, &["10.1.2.3"])
    );
    Ok(())
}

/// A socket subscribed to what the daemon subscribes to, in `ns`.
fn subscribe(ns: &Netns) -> Result<netlink_sys::Socket> {
    ns.run(|| -> Result<netlink_sys::Socket> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        socket.bind(&netlink_sys::SocketAddr::new(0, 0))?;
        for group in [
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_ROUTE,
            libc::RTNLGRP_IPV4_RULE,
            libc::RTNLGRP_IPV6_RULE,
        ] {
            socket.add_membership(group)?;
        }
        socket.set_non_blocking(true)?;
        Ok(socket)
    })?
}

/// Every datagram waiting on `socket`: whether any concerns the daemon, and how many there were.
fn drain(socket: &netlink_sys::Socket) -> (bool, usize) {
    let (mut concerns, mut count) = (false, 0);
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = socket.recv(&mut &mut buffer[..], 0) {
        count += 1;
        concerns |= notifications_concern_us(&buffer[..n]);
    }
    (concerns, count)
}

#[test]
fn the_daemons_own_changes_are_not_news_and_others_are() -> Result<()> {
    if !require_root("the_daemons_own_changes_are_not_news_and_others_are") {
        return Ok(());
    }
    let ns = lab()?;
    let socket = subscribe(&ns)?;
    // Our own client, kept open as the daemon keeps its own.
    let mut routing = ns.run(Routing::open)??;
    let state = PolicyState::Blocked;
    let wanted = layer(&state, true);
    ns.run(|| routing.apply(wanted.as_ref()))??;
    // Acknowledged changes have been notified: the notifications are queued by now.
    let (concerns, count) = drain(&socket);
    ensure!(count > 0, "the subscription saw nothing");
    ensure!(!concerns, "the daemon's own changes woke it up");

    // Someone else: a rule, a route of our table. Each is news; a route elsewhere is not.
    ns.ip(&["route", "add", "198.51.100.0/24", "via", "192.168.50.1"])?;
    ensure!(drain(&socket) == (false, 1), "a route of the main table");
    ns.ip(&["rule", "del", "pref", "5302"])?;
    ensure!(drain(&socket).0, "a rule of ours deleted by someone else");
    let repaired = ns.run(|| routing.apply(wanted.as_ref()))??;
    ensure!(
        repaired
            .repaired
            .as_deref()
            .is_some_and(|r| r.contains("5302: from all lookup 27507 (IPv4) is missing")),
        "{repaired:?}"
    );
    ensure!(!drain(&socket).0, "repairing is our own change");
    ns.ip(&["route", "flush", "table", "27507"])?;
    ensure!(drain(&socket).0, "our table flushed by someone else");
    let repaired = ns.run(|| routing.apply(wanted.as_ref()))??;
    ensure!(repaired.repaired.is_some(), "{repaired:?}");
    // Applying a different layer is a change, not a repair.
    let changed = ns.run(|| routing.apply(layer(&connected(), true).as_ref()))??;
    ensure!(changed.changed && changed.repaired.is_none(), "{changed:?}");
    drop(routing);
    Ok(())
}

#[test]
fn exceptions_are_routed_by_their_interface_and_the_rest_into_the_tunnel() -> Result<()> {
    if !require_root("exceptions_are_routed_by_their_interface_and_the_rest_into_the_tunnel") {
        return Ok(());
    }
    let ns = lab()?;
    ns.ip(&["link", "add", "docker0", "type", "bridge"])?;
    ns.ip(&["link", "set", "docker0", "up"])?;
    ns.ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"])?;
    let exceptions = Exceptions {
        local_bridges: vec![LocalLink {
            interface: "docker0".parse().expect("literal"),
            networks: vec!["172.17.0.1/16".parse().expect("literal")],
        }],
        subnets: vec!["10.99.0.0/16 on phys0".parse().expect("literal")],
        inbound: vec!["tcp/22 on phys0".parse().expect("literal")],
        ..Exceptions::default()
    };
    let settings = Settings {
        lockdown: true,
        allow_lan: false,
        apps_only: false,
    };
    for state in [PolicyState::Blocked, connected()] {
        let layer = compile_routes_for(&state, &settings, &exceptions, &[]);
        let applied = ns.run(|| -> Result<(bool, bool)> {
            let mut routing = Routing::open()?;
            let first = routing.apply(layer.as_ref())?;
            // Applying it again finds everything in place: the new shapes read back as sent.
            let second = routing.apply(layer.as_ref())?;
            Ok((first.changed, second.changed))
        })??;
        ensure!(applied == (true, false), "{state:?}: changed {applied:?}");
        let expect = |args: &[&str], want: &str| -> Result<()> {
            let answer = route_get(&ns, args);
            ensure!(
                if want == "unreachable" {
                    unreachable(&answer)
                } else {
                    answer.contains(want)
                },
                "{state:?}: {args:?} should be {want}: {answer}"
            );
            Ok(())
        };
        expect(&["172.17.0.2"], "dev docker0")?;
        expect(&["10.99.1.1"], "dev phys0")?;
        expect(
            &["203.0.113.5", "ipproto", "tcp", "sport", "22"],
            "dev phys0",
        )?;
        // A reply from the tunnel's address stays in the tunnel (blocked knows no tunnel
        // address: there the firewall alone decides).
        if !matches!(state, PolicyState::Blocked) {
            expect(
                &[
                    "203.0.113.5",
                    "from",
                    "10.64.0.2",
                    "ipproto",
                    "tcp",
                    "sport",
                    "22",
                ],
                "dev wg0",
            )?;
        }
        let other = if matches!(state, PolicyState::Blocked) {
            "unreachable"
        } else {
            "dev wg0"
        };
        expect(&["203.0.113.5", "ipproto", "tcp", "sport", "23"], other)?;
        expect(&["10.98.1.1"], other)?;
    }
    // The bridge goes: the kernel removes its route, and its network is unreachable, not routed
    // by the main table's default.
    ns.ip(&["link", "del", "docker0"])?;
    ensure!(
        !route_get(&ns, &["172.17.0.2"]).contains("phys0"),
        "a removed bridge's network leaks to the LAN: {}",
        route_get(&ns, &["172.17.0.2"])
    );
    Ok(())
}

#[test]
fn tunnel_only_users_are_routed_into_the_tunnel_or_nowhere_in_every_state() -> Result<()> {
    if !require_root("tunnel_only_users_are_routed_into_the_tunnel_or_nowhere_in_every_state") {
        return Ok(());
    }
    let ns = lab()?;
    let users = Exceptions {
        tunnel_only_uids: vec![65534],
        ..Exceptions::default()
    };
    let apply = |state: &PolicyState, allow_lan: bool, exceptions: &Exceptions| {
        let settings = Settings {
            lockdown: false,
            allow_lan,
            apps_only: false,
        };
        let layer = compile_routes_for(state, &settings, exceptions, &[]);
        ns.run(|| -> Result<()> {
            Routing::open()?.apply(layer.as_ref())?;
            Ok(())
        })?
    };
    // Disconnected, no lockdown: no layer for the machine, one for the user.
    apply(&PolicyState::Disconnected, false, &users)?;
    for target in ["203.0.113.10", "2001:db8::10", "192.168.50.1"] {
        let theirs = route_get(&ns, &[target, "uid", "65534"]);
        ensure!(
            unreachable(&theirs),
            "disconnected, uid 65534 to {target}: {theirs}"
        );
    }
    let others = route_get(&ns, &["203.0.113.10", "uid", "1000"]);
    ensure!(
        others.contains("dev phys0"),
        "disconnected, another user goes its way: {others}"
    );
    // Connected with allow-lan: the LAN exemption to `main` is not theirs.
    apply(&connected(), true, &users)?;
    for target in ["203.0.113.10", "192.168.50.1"] {
        let theirs = route_get(&ns, &[target, "uid", "65534"]);
        ensure!(
            theirs.contains("dev wg0"),
            "connected, uid 65534 to {target}: {theirs}"
        );
    }
    let lan = route_get(&ns, &["192.168.50.1", "uid", "1000"]);
    ensure!(
        lan.contains("dev phys0"),
        "connected, another user's LAN: {lan}"
    );
    // No users left, disconnected: nothing of ours remains.
    apply(&PolicyState::Disconnected, false, &Exceptions::default())?;
    let rules = ns.ip(&["rule", "show"])?;
    ensure!(!rules.contains("5299"), "rules left behind: {rules}");
    let freed = route_get(&ns, &["203.0.113.10", "uid", "65534"]);
    ensure!(freed.contains("dev phys0"), "released: {freed}");
    Ok(())
}

/// Issue 15, bypass: while a program is bypassed, a packet with the bypass mark is routed by the
/// main table (the physical link) ahead of the catch-all into the tunnel, in `connected` and in
/// `blocked`; an unmarked one still goes into the tunnel or nowhere; and the rule goes with the
/// bypass.
#[test]
fn bypassed_sockets_are_routed_by_the_main_table_in_every_state() -> Result<()> {
    if !require_root("bypassed_sockets_are_routed_by_the_main_table_in_every_state") {
        return Ok(());
    }
    let ns = lab()?;
    let bypass = Exceptions {
        bypass: Some(killswitch_policy::BypassScope { level: 3, id: 77 }),
        ..Exceptions::default()
    };
    let mark = format!("{:#x}", killswitch_policy::BYPASS_MARK);
    let apply = |state: &PolicyState, exceptions: &Exceptions| {
        let layer = compile_routes_for(state, &Settings::default(), exceptions, &[]);
        ns.run(|| -> Result<()> {
            Routing::open()?.apply(layer.as_ref())?;
            Ok(())
        })?
    };
    for (name, state) in [
        ("connected", connected()),
        ("blocked", PolicyState::Blocked),
    ] {
        apply(&state, &bypass)?;
        let marked = route_get(&ns, &["203.0.113.10", "mark", &mark]);
        ensure!(
            marked.contains("dev phys0"),
            "{name}: a bypassed packet is not routed by the physical link: {marked}"
        );
        let other = route_get(&ns, &["203.0.113.10"]);
        ensure!(
            !other.contains("phys0"),
            "{name}: an unmarked packet leaves by the physical link: {other}"
        );
        let rules = ns.ip(&["rule", "show"])?;
        ensure!(
            rules.contains(&format!("5298:\tfrom all fwmark {mark} lookup main")),
            "{name}: the bypass rule is not as meant: {rules}"
        );
        // And the read-back understands it as the rule that was meant.
        let installed = ns.run(|| Routing::open()?.installed())??;
        let wanted =
            compile_routes_for(&state, &Settings::default(), &bypass, &[]).context("a layer")?;
        for rule in wanted.rules.iter().filter(|r| r.priority == 5298) {
            ensure!(
                installed.rules.contains(rule),
                "{name}: {rule:?} not read back ({:?})",
                installed.rules
            );
        }
    }
    apply(&PolicyState::Blocked, &Exceptions::default())?;
    let rules = ns.ip(&["rule", "show"])?;
    ensure!(!rules.contains("5298"), "the bypass rule stayed: {rules}");
    let marked = route_get(&ns, &["203.0.113.10", "mark", &mark]);
    ensure!(
        !marked.contains("phys0"),
        "after the bypass, a marked packet still leaves by the physical link: {marked}"
    );
    Ok(())
}

#[test]
fn exec_namespaces_are_routed_into_the_tunnel_or_nowhere_in_every_state() -> Result<()> {
    if !require_root("exec_namespaces_are_routed_into_the_tunnel_or_nowhere_in_every_state") {
        return Ok(());
    }
    let ns = lab()?;
    let scopes = Exceptions {
        exec_scopes: vec![killswitch_policy::ExecScope {
            interface: killswitch_types::InterfaceName::new("ksx0").expect("literal"),
            subnet: "198.18.0.0/30".parse().expect("literal"),
        }],
        ..Exceptions::default()
    };
    let apply = |state: &PolicyState, exceptions: &Exceptions| {
        let layer = compile_routes_for(state, &Settings::default(), exceptions, &[]);
        ns.run(|| -> Result<()> {
            Routing::open()?.apply(layer.as_ref())?;
            Ok(())
        })?
    };
    // Before its veth exists: the `iif` rule is installed (detached) and reads back as ours.
    apply(&PolicyState::Disconnected, &scopes)?;
    apply(&PolicyState::Disconnected, &scopes)?;
    ns.ip(&[
        "link", "add", "ksx0", "type", "veth", "peer", "name", "ksx0p",
    ])?;
    ns.ip(&["link", "set", "ksx0", "up"])?;
    ns.ip(&["link", "set", "ksx0p", "up"])?;
    ns.ip(&["addr", "add", "198.18.0.1/30", "dev", "ksx0"])?;
    ns.exec("sysctl", &["-qw", "net.ipv4.conf.ksx0.forwarding=1"])?;
    let from_exec = |target: &str| route_get(&ns, &[target, "from", "198.18.0.2", "iif", "ksx0"]);
    // Disconnected (no machine-wide layer): the namespace reaches nothing; the machine's own
    // traffic goes its way.
    apply(&PolicyState::Disconnected, &scopes)?;
    for target in ["203.0.113.10", "192.168.50.1"] {
        let theirs = from_exec(target);
        ensure!(
            unreachable(&theirs),
            "disconnected, exec to {target}: {theirs}"
        );
    }
    let own = route_get(&ns, &["203.0.113.10"]);
    ensure!(
        own.contains("dev phys0"),
        "disconnected, the machine: {own}"
    );
    // Connected: into the tunnel, LAN included; replies find the namespace.
    apply(&connected(), &scopes)?;
    for target in ["203.0.113.10", "192.168.50.1"] {
        let theirs = from_exec(target);
        ensure!(
            theirs.contains("dev wg0"),
            "connected, exec to {target}: {theirs}"
        );
    }
    // The daemon switches forwarding on for the tunnel (for these replies), as here.
    ns.exec("sysctl", &["-qw", "net.ipv4.conf.wg0.forwarding=1"])?;
    let reply = route_get(&ns, &["198.18.0.2", "from", "203.0.113.10", "iif", "wg0"]);
    ensure!(
        reply.contains("dev ksx0"),
        "a reply from the tunnel: {reply}"
    );
    // The scope gone: nothing of it remains.
    apply(&PolicyState::Disconnected, &Exceptions::default())?;
    let rules = ns.ip(&["rule", "show"])?;
    ensure!(!rules.contains("5297"), "rules left behind: {rules}");
    Ok(())
}
