//! Router mode (issue 17): the promises the rules make to a LAN behind this machine, over random
//! states, settings, exceptions, LANs and packets, decided by the evaluator.
//!
//! The acceptance property: no packet forwarded from a router LAN interface is accepted out of
//! any interface but a connected tunnel, in any state, with any settings (allow-lan, lockdown,
//! apps-only), exec namespaces, tunnel-only users and explicit allows.

use ipnet::IpNet;
use killswitch_policy::routes::{self, Selector, TableRoute};
use killswitch_policy::{
    CT_MARK_ROUTER, ConnState, Exceptions, ExecScope, Hook, IpFamily, LocalLink, Packet,
    PacketVerdict, Peer, PolicyState, Settings, Transport, Tunnel, compile_for,
};
use killswitch_types::{Allows, Endpoints, Fwmark, InterfaceName, SubnetAllow};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every interface a packet may come from or go to: the LANs, the tunnels, the WAN, a bridge,
/// an allowed interface, an exec namespace.
const IFACES: [&str; 8] = [
    "lan0", "lan1", "wg0", "tun0", "eth0", "docker0", "ts0", "ksx0",
];

fn name(n: &str) -> InterfaceName {
    InterfaceName::new(n).expect("literal")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

/// Addresses the rules name (the LANs' networks, the tunnel's resolvers and addresses, the
/// server, the DHCP and DAD sources), mixed with random ones.
fn address(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        prop_oneof![
            Just(ip("fd50::10")),
            Just(ip("fd51::10")),
            Just(ip("fe80::1")),
            Just(ip("::")),
            Just(ip("fc00:bbbb::1")),
            Just(ip("2001:db8::10")),
            Just(ip("2001:db8:51::1")),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        ]
        .boxed()
    } else {
        prop_oneof![
            Just(ip("192.168.50.10")),
            Just(ip("192.168.50.1")),
            Just(ip("192.168.51.10")),
            Just(ip("0.0.0.0")),
            Just(ip("255.255.255.255")),
            Just(ip("10.64.0.1")),
            Just(ip("10.64.0.2")),
            Just(ip("198.51.100.1")),
            Just(ip("203.0.113.10")),
            Just(ip("192.0.2.53")),
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        ]
        .boxed()
    }
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(53u16),
        Just(853),
        Just(67),
        Just(68),
        Just(51820),
        Just(443),
        any::<u16>()
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        (port(), port()).prop_map(|(s, d)| Transport::tcp(s, d)),
        (port(), port()).prop_map(|(s, d)| Transport::udp(s, d)),
        Just(Transport::ICMP),
        prop_oneof![Just(133u8), Just(135), Just(143), any::<u8>()].prop_map(Transport::icmpv6),
    ]
}

fn iface() -> impl Strategy<Value = InterfaceName> {
    proptest::sample::select(IFACES.to_vec()).prop_map(name)
}

/// A packet between two interfaces, of one family, in any conntrack state and with any mark.
fn packet() -> impl Strategy<Value = Packet> {
    any::<bool>()
        .prop_flat_map(|v6| (iface(), iface(), address(v6), address(v6), transport()))
        .prop_flat_map(|(iif, oif, src, dst, transport)| {
            (
                Just(Packet::forward(
                    iif.as_str(),
                    oif.as_str(),
                    src,
                    dst,
                    transport,
                )),
                proptest::sample::select(vec![
                    ConnState::New,
                    ConnState::Established,
                    ConnState::Related,
                    ConnState::Invalid,
                ]),
                prop_oneof![Just(0u32), Just(CT_MARK_ROUTER), any::<u32>()],
            )
        })
        .prop_map(|(p, conn, ct_mark)| p.with_conn(conn).with_ct_mark(ct_mark))
}

fn tunnel() -> impl Strategy<Value = Tunnel> {
    let addresses = prop_oneof![
        Just(vec![ip("10.64.0.2")]),
        Just(vec![ip("10.64.0.2"), ip("fc00:bbbb::2")]),
        Just(vec![ip("fc00:bbbb::2")]),
        Just(vec![ip("fe80::2")]),
        Just(Vec::new()),
    ];
    let dns = prop_oneof![
        Just(vec![ip("10.64.0.1")]),
        Just(vec![ip("fc00:bbbb::1"), ip("10.64.0.1")]),
        Just(vec![ip("fc00:bbbb::1")]),
        Just(Vec::new()),
    ];
    (
        proptest::sample::select(vec!["wg0", "tun0"]),
        addresses,
        dns,
    )
        .prop_map(|(n, addresses, dns)| Tunnel {
            interface: name(n),
            addresses,
            dns,
        })
}

fn peer() -> impl Strategy<Value = Peer> {
    (
        prop_oneof![Just("198.51.100.1:51820"), Just("[2001:db8:51::1]:51820")],
        proptest::option::of(Just(0xca6c_u32)),
    )
        .prop_map(|(endpoint, mark)| Peer {
            endpoints: Endpoints::one(endpoint.parse().expect("literal")),
            mark: mark.and_then(Fwmark::new),
            uid: None,
        })
}

/// Every state, with or without a table of the machine's own.
fn any_state() -> impl Strategy<Value = PolicyState> {
    prop_oneof![
        Just(PolicyState::Off),
        Just(PolicyState::Disconnected),
        Just(PolicyState::Blocked),
        (peer(), proptest::option::of(tunnel())).prop_map(|(peer, pending)| {
            PolicyState::Connecting {
                peer,
                probe: None,
                pending,
            }
        }),
        (peer(), tunnel()).prop_map(|(peer, tunnel)| PolicyState::Connected { peer, tunnel }),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(lockdown, allow_lan, apps_only)| {
        Settings {
            lockdown,
            allow_lan,
            apps_only,
        }
    })
}

/// The LANs (lan0 always, lan1 sometimes; lan1 sometimes known by name only) and everything
/// else the administrator may have configured: an exec namespace, tunnel-only users, a local
/// bridge, allowed interfaces and subnets (the LAN's own interface and the WAN among them).
fn exceptions() -> impl Strategy<Value = Exceptions> {
    let allowed_iface = proptest::option::of(proptest::sample::select(vec!["ts0", "eth0", "lan0"]));
    let subnet = proptest::option::of(prop_oneof![
        Just("192.168.50.0/24 on lan0"),
        Just("203.0.113.0/24 on eth0 public"),
        Just("10.99.0.0/16 on eth0"),
    ]);
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        allowed_iface,
        subnet,
    )
        .prop_map(
            |(lan1, lan1_named_only, exec, users, bridge, allowed, subnet)| {
                let mut router_lans = vec![LocalLink {
                    interface: name("lan0"),
                    networks: vec![
                        "192.168.50.1/24".parse().expect("literal"),
                        "fd50::1/64".parse().expect("literal"),
                        "fe80::1/64".parse().expect("literal"),
                    ],
                }];
                if lan1 {
                    router_lans.push(if lan1_named_only {
                        LocalLink::named(name("lan1"))
                    } else {
                        LocalLink {
                            interface: name("lan1"),
                            networks: vec!["192.168.51.1/24".parse().expect("literal")],
                        }
                    });
                }
                let allows = Allows {
                    interfaces: allowed.map(name).into_iter().collect(),
                    subnets: subnet
                        .map(|s| s.parse::<SubnetAllow>().expect("literal"))
                        .into_iter()
                        .collect(),
                    inbound: Vec::new(),
                };
                Exceptions {
                    router_lans,
                    exec_scopes: if exec {
                        vec![ExecScope {
                            interface: name("ksx0"),
                            subnet: "10.201.0.0/30".parse().expect("literal"),
                        }]
                    } else {
                        Vec::new()
                    },
                    tunnel_only_uids: if users { vec![1001] } else { Vec::new() },
                    local_bridges: if bridge {
                        vec![LocalLink {
                            interface: name("docker0"),
                            networks: vec!["172.17.0.1/16".parse().expect("literal")],
                        }]
                    } else {
                        Vec::new()
                    },
                    ..Exceptions::default()
                }
                .with_allows(&allows, Vec::new())
            },
        )
}

fn is_lan(iface: &InterfaceName) -> bool {
    iface.as_str().starts_with("lan")
}

fn family(ip: IpAddr) -> IpFamily {
    if ip.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

fn is_dns(p: &Packet) -> bool {
    matches!(p.transport, Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } if dport == 53 || dport == 853)
}

/// The source addresses lan0/lan1 may have, as the module documents them.
fn genuine_source(exceptions: &Exceptions, p: &Packet) -> bool {
    let Some(lan) = exceptions
        .router_lans
        .iter()
        .find(|l| Some(&l.interface) == p.iif.as_ref())
    else {
        return true;
    };
    let in_networks = lan.networks.iter().any(|n| n.trunc().contains(&p.src));
    let link_local = IpNet::V6("fe80::/10".parse().expect("literal")).contains(&p.src);
    let dhcp = p.src == ip("0.0.0.0") && p.transport == Transport::udp(68, 67);
    let unspecified_icmpv6 = p.src == ip("::") && matches!(p.transport, Transport::Icmpv6 { .. });
    in_networks || link_local || dhcp || unspecified_icmpv6
}

/// The routing the kernel would do for a LAN's packet with the kill switch's layer in place
/// (`iif L lookup 27507`): the tunnel's default route for a family it carries, the LAN's own
/// networks, `unreachable` for the rest.
fn routed_by_our_table(
    state: &PolicyState,
    exceptions: &Exceptions,
) -> impl Fn(&Packet) -> Option<InterfaceName> {
    let tunnel = state.carrying_tunnel().cloned();
    let lans = exceptions.router_lans.clone();
    move |p: &Packet| {
        if let Some(lan) = lans
            .iter()
            .find(|l| l.networks.iter().any(|n| n.trunc().contains(&p.dst)))
        {
            return Some(lan.interface.clone());
        }
        let tunnel = tunnel.as_ref()?;
        tunnel
            .carried_families()
            .contains(&family(p.dst))
            .then(|| tunnel.interface.clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// Acceptance (issue 17): whatever the state, the settings and the exceptions, a packet
    /// forwarded from a router LAN interface is accepted out of no interface but the connected
    /// tunnel; IPv6 only when the tunnel carries it; DNS only to the tunnel's resolvers; never
    /// to the VPN server.
    #[test]
    fn nothing_from_a_router_lan_leaves_outside_the_tunnel(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        p in packet(),
        from_lan1 in any::<bool>(),
    ) {
        let from = if from_lan1 && exceptions.router_lans.len() > 1 { "lan1" } else { "lan0" };
        let p = Packet { iif: Some(name(from)), ..p };
        let rules = compile_for(&state, &settings, &exceptions);
        prop_assert!(rules.check().is_ok(), "{:?}", rules.check());
        if rules.verdict(&p).is_accept() {
            let tunnel = state.carrying_tunnel().expect("accepted only with a connected tunnel");
            prop_assert_eq!(p.oif.as_ref(), Some(&tunnel.interface), "{:?} accepted {:?}", state, p);
            prop_assert!(tunnel.carried_families().contains(&family(p.dst)), "{:?} through {:?}", p, tunnel);
            if is_dns(&p) {
                prop_assert!(tunnel.usable_dns().contains(&p.dst), "{:?}", p);
            }
            if let PolicyState::Connected { peer, .. } = &state {
                prop_assert!(peer.endpoints.iter().all(|e| e.address.ip() != p.dst), "{:?}", p);
            }
        }
    }

    /// The same through every hook (prerouting with its DNAT, the routing decision, forward,
    /// postrouting), with a routing decision that may be anything at all (a hostile DHCP server's
    /// routes on the WAN, TunnelVision, or the routing layer gone): still only the tunnel.
    #[test]
    fn whatever_the_routes_say_a_lan_leaves_only_by_the_tunnel(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        p in packet(),
        routed_to in iface(),
    ) {
        let p = Packet { iif: Some(name("lan0")), ..p };
        let rules = compile_for(&state, &settings, &exceptions);
        let decided = rules.forward_path(&p, |_| Some(routed_to.clone()));
        if decided.verdict.is_accept() {
            let tunnel = state.carrying_tunnel().expect("accepted only with a connected tunnel");
            prop_assert_eq!(decided.packet.oif.as_ref(), Some(&tunnel.interface), "{:?}", decided);
        }
    }

    /// DNS from a LAN, to any address (this host's own included), is sent to the connected
    /// tunnel's first resolver of its family and leaves through the tunnel; without one it is
    /// refused at once (a reset or ICMP), never dropped silently and never sent elsewhere.
    #[test]
    fn a_lans_dns_goes_to_the_tunnels_resolver_or_fails_fast(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        v6 in any::<bool>(),
        tcp in any::<bool>(),
        dport in prop_oneof![Just(53u16), Just(853)],
        sport in port(),
        dst_host in any::<bool>(),
    ) {
        let (src, dst) = if v6 {
            (ip("fd50::10"), if dst_host { ip("fd50::1") } else { ip("2001:db8::53") })
        } else {
            (ip("192.168.50.10"), if dst_host { ip("192.168.50.1") } else { ip("192.0.2.53") })
        };
        let transport = if tcp { Transport::tcp(sport, dport) } else { Transport::udp(sport, dport) };
        let p = Packet::prerouting("lan0", src, dst, transport);
        let rules = compile_for(&state, &settings, &exceptions);
        let decided = rules.forward_path(&p, routed_by_our_table(&state, &exceptions));
        let target = state.carrying_tunnel().and_then(|t| {
            t.usable_dns().into_iter().find(|r| r.is_ipv6() == v6)
        });
        match target {
            Some(resolver) => {
                prop_assert_eq!(decided.verdict, PacketVerdict::Accept, "{:?}", decided);
                prop_assert_eq!(decided.packet.dst, resolver);
                let tunnel = state.carrying_tunnel().expect("a target only with a tunnel");
                prop_assert_eq!(decided.packet.oif.as_ref(), Some(&tunnel.interface));
            }
            None => prop_assert!(
                matches!(decided.verdict, PacketVerdict::Reject(_)),
                "{:?} in {:?}", decided, state
            ),
        }
    }

    /// A packet from a LAN with a source the LAN cannot have is dropped as it arrives, in every
    /// state, before any translation; one with a genuine source is marked for the daemon's
    /// conntrack flush.
    #[test]
    fn spoofed_lan_sources_are_dropped_and_genuine_ones_marked(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        p in packet(),
        from_lan1 in any::<bool>(),
    ) {
        let from = if from_lan1 && exceptions.router_lans.len() > 1 { "lan1" } else { "lan0" };
        let p = Packet { hook: Hook::Prerouting, iif: Some(name(from)), oif: None, ct_mark: 0, ..p };
        let decided = compile_for(&state, &settings, &exceptions).decide(&p);
        if genuine_source(&exceptions, &p) {
            prop_assert_ne!(decided.verdict, PacketVerdict::Drop, "{:?}", p);
            prop_assert!(decided.packet.ct_mark & CT_MARK_ROUTER != 0, "{:?}", decided);
        } else {
            prop_assert_eq!(decided.verdict, PacketVerdict::Drop, "{:?}", p);
            prop_assert_eq!(decided.packet.dst, p.dst, "translated before the spoof check");
        }
    }

    /// The LAN's own talk with this host (anything but DNS, addressed to this host) passes the
    /// LAN's prerouting rules in every state, and this host's input in every table of its own;
    /// while no tunnel carries a family, a packet of it to be forwarded is refused as it
    /// arrives, with an answer (never silence).
    #[test]
    fn the_lan_talks_to_this_host_and_fails_fast_without_a_tunnel(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        p in packet(),
        local in any::<bool>(),
    ) {
        let p = Packet { hook: Hook::Prerouting, iif: Some(name("lan0")), oif: None, ..p }
            .with_local_destination(local);
        prop_assume!(genuine_source(&exceptions, &p) && !is_dns(&p));
        let rules = compile_for(&state, &settings, &exceptions);
        let verdict = rules.verdict(&p);
        let carried = state.carrying_tunnel().is_some_and(|t| t.carried_families().contains(&family(p.dst)));
        let group = p.dst.is_multicast() || p.dst == ip("255.255.255.255");
        if local || group || carried {
            prop_assert_eq!(verdict, PacketVerdict::Accept, "{:?} in {:?}", p, state);
        } else {
            prop_assert!(matches!(verdict, PacketVerdict::Reject(_)), "{:?}: {:?}", p, verdict);
        }
        // (Except to the tunnel's own addresses, which arrive by the tunnel only: CVE-2019-14899.)
        let tunnel_address = match &state {
            PolicyState::Connected { tunnel, .. } => tunnel.addresses.contains(&p.dst),
            PolicyState::Connecting { pending: Some(t), .. } => t.addresses.contains(&p.dst),
            _ => false,
        };
        if local && !tunnel_address {
            let input = Packet { hook: Hook::Input, ..p };
            prop_assert!(rules.verdict(&input).is_accept(), "{:?} in {:?}", input, state);
        }
    }

    /// Nothing is forwarded into a LAN but the connected tunnel's replies.
    #[test]
    fn nothing_enters_a_lan_but_the_tunnels_replies(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        p in packet(),
    ) {
        prop_assume!(p.iif.as_ref().is_some_and(|i| !is_lan(i)));
        let p = Packet { oif: Some(name("lan0")), ..p };
        if compile_for(&state, &settings, &exceptions).verdict(&p).is_accept() {
            let tunnel = state.carrying_tunnel().expect("accepted only with a connected tunnel");
            prop_assert_eq!(p.iif.as_ref(), Some(&tunnel.interface));
            prop_assert!(matches!(p.conn, ConnState::Established | ConnState::Related), "{:?}", p);
        }
    }

    /// The routing layer, in every state: `iif L lookup 27507` for each LAN and family, ahead of
    /// every rule but exec's and the LANs' own, and each LAN's networks (not link-local) routed
    /// to it in table 27507 beside `unreachable`.
    #[test]
    fn router_lans_are_routed_into_the_tunnel_or_nowhere(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
    ) {
        let layer = routes::compile_routes_for(&state, &settings, &exceptions, &[])
            .expect("a layer with router lans");
        for lan in &exceptions.router_lans {
            for family in [IpFamily::V4, IpFamily::V6] {
                let ours = layer.rules.iter().find(|r| {
                    r.family == family && !r.invert && r.selector == Selector::InInterface(lan.interface.clone())
                });
                let ours = ours.expect("a rule for the lan");
                prop_assert_eq!(ours.table, routes::ROUTE_TABLE);
                prop_assert_eq!(ours.priority, routes::PRIORITY_EXEC);
                prop_assert!(layer.routes.contains(&TableRoute::Unreachable(family)));
            }
            for net in &lan.networks {
                let net = net.trunc();
                if net.addr().is_ipv6() && net.addr().to_string().starts_with("fe80") {
                    prop_assert!(!layer.routes.iter().any(|r| matches!(r, TableRoute::Link(n, _) if *n == net)));
                } else {
                    prop_assert!(layer.routes.contains(&TableRoute::Link(net, lan.interface.clone())), "{:?}", layer.routes);
                }
            }
        }
    }
}

/// The forward path of one TCP connection from the LAN while connected: the SYN is clamped to
/// the route's MTU on its way into the tunnel (the rule applies) and masqueraded.
#[test]
fn a_lan_connection_is_clamped_and_masqueraded_into_the_tunnel() {
    let tunnel = Tunnel {
        interface: name("wg0"),
        addresses: vec![ip("10.64.0.2")],
        dns: vec![ip("10.64.0.1")],
    };
    let state = PolicyState::Connected {
        peer: Peer {
            endpoints: Endpoints::one("198.51.100.1:51820".parse().expect("literal")),
            mark: Fwmark::new(0xca6c),
            uid: None,
        },
        tunnel,
    };
    let exceptions = Exceptions {
        router_lans: vec![LocalLink {
            interface: name("lan0"),
            networks: vec!["192.168.50.1/24".parse().expect("literal")],
        }],
        ..Exceptions::default()
    };
    let rules = compile_for(&state, &Settings::default(), &exceptions);
    let syn = Packet::prerouting(
        "lan0",
        ip("192.168.50.10"),
        ip("203.0.113.10"),
        Transport::tcp(40000, 443),
    );
    let decided = rules.forward_path(&syn, |_| Some(name("wg0")));
    assert_eq!(decided.verdict, PacketVerdict::Accept, "{decided:?}");
    let forward = rules.base_chain(Hook::Forward).expect("a forward chain");
    let clamp = forward
        .rules
        .iter()
        .position(|r| {
            r.statements
                .contains(&killswitch_policy::Statement::ClampMssToRoute)
        })
        .expect("a clamp rule");
    let first_accept = forward
        .rules
        .iter()
        .position(|r| r.verdict == killswitch_policy::Verdict::Accept)
        .expect("an accept");
    assert!(
        clamp < first_accept,
        "the clamp must come before any accept"
    );
    // Out of the WAN instead: refused with a reset, whatever routed it there.
    let wan = rules.forward_path(&syn, |_| Some(name("eth0")));
    assert_eq!(
        wan.verdict,
        PacketVerdict::Reject(killswitch_policy::RejectWith::TcpReset)
    );
}

/// Port shadowing (CVE-2021-3773): a LAN client sending from the router's WireGuard port to the
/// VPN server is refused whichever way it is routed, in every state that knows the server.
#[test]
fn a_lan_client_cannot_shadow_the_tunnels_port() {
    let peer = Peer {
        endpoints: Endpoints::one("198.51.100.1:51820".parse().expect("literal")),
        mark: Fwmark::new(0xca6c),
        uid: None,
    };
    let tunnel = Tunnel {
        interface: name("wg0"),
        addresses: vec![ip("10.64.0.2")],
        dns: vec![ip("10.64.0.1")],
    };
    let exceptions = Exceptions {
        router_lans: vec![LocalLink {
            interface: name("lan0"),
            networks: vec!["192.168.50.1/24".parse().expect("literal")],
        }],
        ..Exceptions::default()
    };
    let shadow = Packet::prerouting(
        "lan0",
        ip("192.168.50.10"),
        ip("198.51.100.1"),
        Transport::udp(51820, 51820),
    );
    for state in [
        PolicyState::Connected {
            peer: peer.clone(),
            tunnel: tunnel.clone(),
        },
        PolicyState::Connecting {
            peer: peer.clone(),
            probe: None,
            pending: Some(tunnel.clone()),
        },
    ] {
        let rules = compile_for(&state, &Settings::default(), &exceptions);
        for out in ["wg0", "eth0"] {
            let decided = rules.forward_path(&shadow, |_| Some(name(out)));
            assert!(
                matches!(decided.verdict, PacketVerdict::Reject(_)),
                "{state:?} via {out}: {decided:?}"
            );
        }
    }
}

/// Without router LANs, nothing of them is compiled (every earlier snapshot stays as it was).
#[test]
fn no_router_lan_no_router_rules() {
    let state = PolicyState::Connected {
        peer: Peer {
            endpoints: Endpoints::one("198.51.100.1:51820".parse().expect("literal")),
            mark: None,
            uid: None,
        },
        tunnel: Tunnel {
            interface: name("wg0"),
            addresses: vec![ip("10.64.0.2")],
            dns: vec![ip("10.64.0.1")],
        },
    };
    let text = compile_for(&state, &Settings::default(), &Exceptions::default()).to_string();
    assert!(!text.contains("router:"), "{text}");
    assert!(!text.contains("chain router-"), "{text}");
    assert!(
        compile_for(
            &PolicyState::Off,
            &Settings::default(),
            &Exceptions::default()
        )
        .table
        .is_none()
    );
}
