//! What each state allows and blocks, one concrete packet at a time.

mod fixtures;

use fixtures::*;
use killswitch_policy::{
    ChainPolicy, ConnState, Hook, Packet, PacketVerdict, PolicyState, RejectWith, Ruleset,
    Transport, compile,
};

const ALL_HOOKS: [Hook; 3] = [Hook::Input, Hook::Output, Hook::Forward];

fn rules(state: &PolicyState, lockdown: bool, allow_lan: bool) -> Ruleset {
    let ruleset = compile(state, &settings(lockdown, allow_lan));
    ruleset.check().expect("compiled rules are well formed");
    ruleset
}

fn web_v4(oif: &str) -> Packet {
    Packet::output(
        oif,
        ip(HOST_V4),
        ip(INTERNET_V4),
        Transport::tcp(40000, 443),
    )
}

fn table_states() -> Vec<PolicyState> {
    vec![
        PolicyState::Blocked,
        connecting(),
        connected(false),
        connected(true),
    ]
}

#[test]
fn off_and_unlocked_disconnected_install_nothing() {
    for allow_lan in [false, true] {
        assert_eq!(rules(&PolicyState::Off, false, allow_lan).table, None);
        assert_eq!(
            rules(&PolicyState::Off, true, allow_lan).table,
            None,
            "off wins over lockdown"
        );
        assert_eq!(
            rules(&PolicyState::Disconnected, false, allow_lan).table,
            None
        );
    }
    assert!(
        rules(&PolicyState::Off, false, false)
            .verdict(&web_v4(PHYS))
            .is_accept()
    );
}

#[test]
fn locked_disconnected_is_blocked() {
    for allow_lan in [false, true] {
        assert_eq!(
            rules(&PolicyState::Disconnected, true, allow_lan),
            rules(&PolicyState::Blocked, true, allow_lan)
        );
    }
}

#[test]
fn every_table_state_has_three_drop_chains() {
    for state in table_states() {
        for allow_lan in [false, true] {
            let ruleset = rules(&state, false, allow_lan);
            for hook in ALL_HOOKS {
                let chain = ruleset
                    .base_chain(hook)
                    .unwrap_or_else(|| panic!("{state:?}: no {hook:?} chain"));
                assert_eq!(
                    chain.base.map(|b| b.policy),
                    Some(ChainPolicy::Drop),
                    "{state:?} {hook:?}"
                );
            }
        }
    }
}

#[test]
fn blocked_rejects_internet_fast_and_keeps_loopback_and_dhcp() {
    let r = rules(&PolicyState::Blocked, true, false);
    assert_eq!(
        r.verdict(&web_v4(PHYS)),
        PacketVerdict::Reject(RejectWith::TcpReset)
    );
    let udp = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(INTERNET_V4),
        Transport::udp(5000, 443),
    );
    assert_eq!(
        r.verdict(&udp),
        PacketVerdict::Reject(RejectWith::AdminProhibited)
    );
    let ping = Packet::output(PHYS, ip(HOST_V4), ip(INTERNET_V4), Transport::ICMP);
    assert_eq!(
        r.verdict(&ping),
        PacketVerdict::Reject(RejectWith::AdminProhibited)
    );
    assert!(
        r.verdict(&Packet::output(
            "lo",
            ip("127.0.0.1"),
            ip("127.0.0.1"),
            Transport::tcp(1, 2)
        ))
        .is_accept()
    );
    assert!(
        r.verdict(&Packet::input(
            "lo",
            ip("::1"),
            ip("::1"),
            Transport::udp(1, 2)
        ))
        .is_accept()
    );
    let discover = Packet::output(
        PHYS,
        ip("0.0.0.0"),
        ip("255.255.255.255"),
        Transport::udp(68, 67),
    );
    assert!(r.verdict(&discover).is_accept());
    let offer = Packet::input(
        PHYS,
        ip("192.168.1.1"),
        ip("255.255.255.255"),
        Transport::udp(67, 68),
    );
    assert!(r.verdict(&offer).is_accept());
    let solicit = Packet::output(
        PHYS,
        ip("fe80::1"),
        ip("ff02::1:2"),
        Transport::udp(546, 547),
    );
    assert!(r.verdict(&solicit).is_accept());
    // DHCP-shaped packets to a public address are not DHCP.
    let fake = Packet::output(PHYS, ip(HOST_V4), ip(INTERNET_V4), Transport::udp(68, 67));
    assert!(!r.verdict(&fake).is_accept());
}

#[test]
fn ndp_needs_hop_limit_255_and_a_link_scoped_destination() {
    let r = rules(&PolicyState::Blocked, true, false);
    let ns = |dst: &str, hop| {
        Packet::output(PHYS, ip("fe80::50"), ip(dst), Transport::icmpv6(135)).with_hop_limit(hop)
    };
    assert!(r.verdict(&ns("ff02::1:ff00:1", 255)).is_accept());
    assert!(r.verdict(&ns("fe80::1", 255)).is_accept());
    assert!(
        !r.verdict(&ns("fe80::1", 64)).is_accept(),
        "hop limit 64 is not NDP"
    );
    assert!(
        !r.verdict(&ns(INTERNET_V6, 255)).is_accept(),
        "global destination is not link bring-up"
    );
    let ra = Packet::input(PHYS, ip("fe80::1"), ip("ff02::1"), Transport::icmpv6(134))
        .with_hop_limit(255);
    assert!(r.verdict(&ra).is_accept());
    let echo = Packet::output(PHYS, ip(HOST_V6), ip(INTERNET_V6), Transport::icmpv6(128));
    assert!(!r.verdict(&echo).is_accept());
}

#[test]
fn new_inbound_flows_are_dropped_replies_accepted() {
    for state in table_states() {
        let r = rules(&state, false, false);
        let syn = Packet::input(PHYS, ip(INTERNET_V4), ip(HOST_V4), Transport::tcp(443, 22));
        assert_eq!(r.verdict(&syn), PacketVerdict::Drop, "{state:?}");
        assert!(
            r.verdict(&syn.clone().with_conn(ConnState::Established))
                .is_accept(),
            "{state:?}"
        );
    }
}

#[test]
fn connecting_opens_exactly_the_marked_endpoint() {
    let r = rules(&connecting(), false, false);
    let to_endpoint = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(ENDPOINT_IP),
        Transport::udp(40000, ENDPOINT_PORT),
    );
    assert!(r.verdict(&to_endpoint.clone().with_mark(MARK)).is_accept());
    // The ServerIP attack: another program reaching the server's address without the tunnel's mark.
    assert!(!r.verdict(&to_endpoint).is_accept());
    assert!(
        !r.verdict(&to_endpoint.clone().with_mark(MARK + 1))
            .is_accept()
    );
    let other_port = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(ENDPOINT_IP),
        Transport::udp(40000, 443),
    )
    .with_mark(MARK);
    assert!(!r.verdict(&other_port).is_accept());
    let tcp = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(ENDPOINT_IP),
        Transport::tcp(40000, ENDPOINT_PORT),
    )
    .with_mark(MARK);
    assert!(!r.verdict(&tcp).is_accept(), "the hole is udp only");
    let reply = Packet::input(
        PHYS,
        ip(ENDPOINT_IP),
        ip(HOST_V4),
        Transport::udp(ENDPOINT_PORT, 40000),
    );
    assert!(r.verdict(&reply).is_accept());
    // Not yet connected: nothing goes through the tunnel interface.
    assert!(!r.verdict(&web_v4(TUN)).is_accept());
}

#[test]
fn uid_narrows_the_hole() {
    let mut p = peer(None);
    p.uid = Some(1234);
    let r = rules(
        &PolicyState::Connecting {
            peer: p,
            probe: None,
            pending: None,
        },
        false,
        false,
    );
    let to_endpoint = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(ENDPOINT_IP),
        Transport::udp(40000, ENDPOINT_PORT),
    );
    assert!(r.verdict(&to_endpoint.clone().with_uid(1234)).is_accept());
    assert!(!r.verdict(&to_endpoint.clone().with_uid(0)).is_accept());
    assert!(!r.verdict(&to_endpoint).is_accept(), "no socket, no uid");
}

#[test]
fn without_a_mark_the_hole_is_the_endpoint_only() {
    let r = rules(
        &PolicyState::Connecting {
            peer: peer(None),
            probe: None,
            pending: None,
        },
        false,
        false,
    );
    let to_endpoint = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(ENDPOINT_IP),
        Transport::udp(40000, ENDPOINT_PORT),
    );
    assert!(r.verdict(&to_endpoint).is_accept());
    let elsewhere = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip(INTERNET_V4),
        Transport::udp(40000, ENDPOINT_PORT),
    );
    assert!(!r.verdict(&elsewhere).is_accept());
}

#[test]
fn connected_routes_everything_through_the_tunnel_except_dns() {
    let r = rules(&connected(false), false, false);
    assert!(r.verdict(&web_v4(TUN)).is_accept());
    assert_eq!(
        r.verdict(&web_v4(PHYS)),
        PacketVerdict::Reject(RejectWith::TcpReset)
    );
    let dns = |oif: &str, dst: &str, t: Transport| Packet::output(oif, ip(TUNNEL_V4), ip(dst), t);
    assert!(
        r.verdict(&dns(TUN, TUNNEL_DNS, Transport::udp(5353, 53)))
            .is_accept()
    );
    assert!(
        r.verdict(&dns(TUN, TUNNEL_DNS, Transport::tcp(5353, 53)))
            .is_accept()
    );
    assert!(
        r.verdict(&dns(TUN, TUNNEL_DNS, Transport::tcp(5353, 853)))
            .is_accept()
    );
    assert!(
        !r.verdict(&dns(TUN, "1.1.1.1", Transport::udp(5353, 53)))
            .is_accept(),
        "public resolver via tunnel"
    );
    assert!(
        !r.verdict(&dns(PHYS, TUNNEL_DNS, Transport::udp(5353, 53)))
            .is_accept(),
        "tunnel resolver via phys"
    );
    assert!(
        !r.verdict(&dns(PHYS, "192.168.1.1", Transport::udp(5353, 53)))
            .is_accept(),
        "lan resolver"
    );
    let inbound = Packet::input(
        TUN,
        ip(INTERNET_V4),
        ip(TUNNEL_V4),
        Transport::tcp(1234, 22),
    );
    assert!(
        r.verdict(&inbound).is_accept(),
        "the tunnel may carry new inbound flows"
    );
}

#[test]
fn stale_tunnel_flows_cannot_leave_by_the_physical_interface() {
    // After the tunnel drops, conntrack still knows its flows; their packets rerouted to the
    // physical interface must not pass as "established".
    let r = rules(&connected(false), false, false);
    let stale = web_v4(PHYS).with_conn(ConnState::Established);
    assert!(!r.verdict(&stale).is_accept());
    let fwd = Packet::forward(
        "docker0",
        PHYS,
        ip("172.17.0.2"),
        ip(INTERNET_V4),
        Transport::tcp(1, 443),
    )
    .with_conn(ConnState::Established);
    assert!(!r.verdict(&fwd).is_accept());
}

#[test]
fn ipv6_follows_the_tunnels_addresses() {
    let web_v6 = |oif: &str| {
        Packet::output(
            oif,
            ip(TUNNEL_V6),
            ip(INTERNET_V6),
            Transport::tcp(40000, 443),
        )
    };
    assert!(
        !rules(&connected(false), false, false)
            .verdict(&web_v6(TUN))
            .is_accept()
    );
    assert!(
        rules(&connected(true), false, false)
            .verdict(&web_v6(TUN))
            .is_accept()
    );
    assert!(
        !rules(&connected(true), false, false)
            .verdict(&web_v6(PHYS))
            .is_accept()
    );
    let in_v6 = Packet::input(TUN, ip(INTERNET_V6), ip(TUNNEL_V6), Transport::tcp(1, 2));
    assert!(
        !rules(&connected(false), false, false)
            .verdict(&in_v6)
            .is_accept()
    );
}

#[test]
fn a_v4_only_tunnel_admits_no_ipv6_dns() {
    // Found by the property `v4_only_tunnel_blocks_global_ipv6`: an IPv6 resolver of a tunnel
    // without an IPv6 address was admitted, IPv6 that the tunnel does not carry.
    let mut tunnel = tunnel(false);
    tunnel.dns.push(ip("2001:db8::53"));
    let state = PolicyState::Connected {
        peer: peer(Some(MARK)),
        tunnel,
    };
    let query = |dst: &str| {
        Packet::output(
            TUN,
            ip(if dst.contains(':') {
                TUNNEL_V6
            } else {
                TUNNEL_V4
            }),
            ip(dst),
            Transport::udp(40000, 53),
        )
    };
    let r = rules(&state, false, false);
    assert!(!r.verdict(&query("2001:db8::53")).is_accept());
    assert!(r.verdict(&query(TUNNEL_DNS)).is_accept());
    // And the daemon tells the system's resolver only what the rules admit.
    let PolicyState::Connected { tunnel, .. } = &state else {
        unreachable!("built above")
    };
    assert_eq!(tunnel.usable_dns(), vec![ip(TUNNEL_DNS)]);
}

#[test]
fn cve_2019_14899_inbound_to_tunnel_address_dropped() {
    let r = rules(&connected(true), false, true);
    for tunnel_ip in [TUNNEL_V4, TUNNEL_V6] {
        let src = if tunnel_ip == TUNNEL_V4 {
            "192.168.1.66"
        } else {
            "fe80::66"
        };
        let probe = Packet::input(PHYS, ip(src), ip(tunnel_ip), Transport::tcp(80, 40000));
        assert_eq!(r.verdict(&probe), PacketVerdict::Drop, "{tunnel_ip}");
        // The probe works by hitting an established flow; it must be dropped all the same.
        assert_eq!(
            r.verdict(&probe.clone().with_conn(ConnState::Established)),
            PacketVerdict::Drop
        );
        let genuine = Packet::input(
            TUN,
            ip(INTERNET_V4),
            ip(tunnel_ip),
            Transport::tcp(80, 40000),
        );
        if tunnel_ip == TUNNEL_V4 {
            assert!(
                r.verdict(&genuine.with_conn(ConnState::Established))
                    .is_accept()
            );
        }
    }
}

#[test]
fn allow_lan_opens_private_ranges_and_nothing_else() {
    for state in table_states() {
        let closed = rules(&state, false, false);
        let open = rules(&state, false, true);
        for lan in [
            "192.168.1.1",
            "10.1.2.3",
            "172.16.5.5",
            "169.254.1.1",
            "224.0.0.251",
            "255.255.255.255",
            "fe80::1",
            "fd12::1",
            "ff02::fb",
        ] {
            let p = Packet::output(
                PHYS,
                ip(if lan.contains(':') { HOST_V6 } else { HOST_V4 }),
                ip(lan),
                Transport::udp(5000, 5001),
            );
            assert!(
                !closed.verdict(&p).is_accept(),
                "{state:?} {lan} without allow-lan"
            );
            assert!(
                open.verdict(&p).is_accept(),
                "{state:?} {lan} with allow-lan"
            );
        }
        // The "LocalNet" attack: a hostile network hands out a public prefix as the LAN.
        let public_lan = Packet::output(
            PHYS,
            ip("203.0.113.50"),
            ip("203.0.113.1"),
            Transport::udp(5000, 5001),
        );
        assert!(!open.verdict(&public_lan).is_accept(), "{state:?}");
        let lan_dns = Packet::output(
            PHYS,
            ip(HOST_V4),
            ip("192.168.1.1"),
            Transport::udp(5000, 53),
        );
        assert!(
            !open.verdict(&lan_dns).is_accept(),
            "{state:?}: DNS to the LAN stays blocked"
        );
        let lan_ssh = Packet::input(
            PHYS,
            ip("192.168.1.7"),
            ip(HOST_V4),
            Transport::tcp(50000, 22),
        );
        assert!(open.verdict(&lan_ssh).is_accept() && !closed.verdict(&lan_ssh).is_accept());
    }
}

#[test]
fn forwarding_only_into_the_tunnel_or_lan_to_lan() {
    let container = |oif: &str, dst: &str| {
        Packet::forward(
            "docker0",
            oif,
            ip("172.17.0.2"),
            ip(dst),
            Transport::tcp(1, 443),
        )
    };
    let r = rules(&connected(false), false, false);
    assert!(r.verdict(&container(TUN, INTERNET_V4)).is_accept());
    assert_eq!(
        r.verdict(&container(PHYS, INTERNET_V4)),
        PacketVerdict::Drop
    );
    assert_eq!(
        r.verdict(&container(PHYS, "192.168.1.9")),
        PacketVerdict::Drop
    );
    let container_dns = Packet::forward(
        "docker0",
        TUN,
        ip("172.17.0.2"),
        ip("9.9.9.9"),
        Transport::udp(1, 53),
    );
    assert!(!r.verdict(&container_dns).is_accept());
    let reply = Packet::forward(
        TUN,
        "docker0",
        ip(INTERNET_V4),
        ip("172.17.0.2"),
        Transport::tcp(443, 1),
    );
    assert!(!r.verdict(&reply).is_accept());
    assert!(
        r.verdict(&reply.with_conn(ConnState::Established))
            .is_accept()
    );
    let lan = rules(&connected(false), false, true);
    assert!(lan.verdict(&container(PHYS, "192.168.1.9")).is_accept());
    assert_eq!(
        lan.verdict(&container(PHYS, INTERNET_V4)),
        PacketVerdict::Drop
    );
}

#[test]
fn link_local_ipv6_does_not_make_a_tunnel_dual_stack() {
    // A WireGuard interface gets an fe80:: address by itself; IPv6 must stay blocked regardless.
    let mut t = tunnel(false);
    t.addresses.push(ip("fe80::648e:2e1f:595b:dd93"));
    let r = rules(
        &PolicyState::Connected {
            peer: peer(Some(MARK)),
            tunnel: t,
        },
        false,
        false,
    );
    let web_v6 = Packet::output(
        TUN,
        ip("fe80::648e:2e1f:595b:dd93"),
        ip(INTERNET_V6),
        Transport::tcp(40000, 443),
    );
    assert!(!r.verdict(&web_v6).is_accept());
}

#[test]
fn the_probe_reaches_only_the_tunnel_resolver_through_the_tunnel() {
    let r = rules(&connecting_with_probe(), false, false);
    let probe = |oif: &str, dst: &str, t: Transport| Packet::output(oif, ip(TUNNEL_V4), ip(dst), t);
    assert!(
        r.verdict(&probe(TUN, TUNNEL_DNS, Transport::udp(40000, 53)))
            .is_accept()
    );
    assert!(
        !r.verdict(&probe(TUN, TUNNEL_DNS, Transport::udp(40000, 443)))
            .is_accept(),
        "DNS only"
    );
    assert!(
        !r.verdict(&probe(TUN, INTERNET_V4, Transport::udp(40000, 53)))
            .is_accept(),
        "to the resolver only"
    );
    assert!(
        !r.verdict(&probe(PHYS, TUNNEL_DNS, Transport::udp(40000, 53)))
            .is_accept(),
        "through the tunnel only"
    );
    assert!(
        !r.verdict(&web_v4(TUN)).is_accept(),
        "nothing else into the tunnel before the handshake"
    );
}

#[test]
fn a_narrowed_lan_opens_exactly_its_subnets_in_one_lookup_each() {
    let nets = |list: &[&str]| -> Vec<ipnet::IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    };
    let lan = killswitch_policy::Lan::subnets(nets(&["192.168.50.0/24", "fd50::/64"]))
        .expect("private subnets");
    let ruleset = killswitch_policy::compile_with(&connected(false), &settings(false, true), &lan);
    ruleset.check().expect("well formed");
    let out = |dst: &str| {
        ruleset.verdict(&Packet::output(
            PHYS,
            ip(HOST_V4),
            ip(dst),
            Transport::udp(40000, 9),
        ))
    };
    assert!(out("192.168.50.7").is_accept());
    assert!(!out("192.168.51.7").is_accept(), "another private subnet");
    assert!(!out("10.0.0.1").is_accept());
    assert!(
        out("224.0.0.251").is_accept(),
        "the LAN's multicast groups stay"
    );
    // Ten thousand subnets are still two lookups (v4 and v6) per packet, not ten thousand rules.
    let many: Vec<ipnet::IpNet> = (0..10_000u32)
        .map(|i| {
            format!("10.{}.{}.0/24", i / 128, (i % 128) * 2)
                .parse()
                .expect("net")
        })
        .collect();
    let big = killswitch_policy::compile_with(
        &connected(false),
        &settings(false, true),
        &killswitch_policy::Lan::subnets(many).expect("private"),
    );
    let one = killswitch_policy::compile_with(
        &connected(false),
        &settings(false, true),
        &killswitch_policy::Lan::subnets(nets(&["10.0.0.0/24"])).expect("private"),
    );
    let rule_count = |r: &Ruleset| r.base_chain(Hook::Output).map(|c| c.rules.len());
    assert_eq!(
        rule_count(&big),
        rule_count(&one),
        "as many rules for 10,000 subnets as for one"
    );
    assert_eq!(big.set("lan4").map(|s| s.len()), Some(10_000));
    assert!(
        big.verdict(&Packet::output(
            PHYS,
            ip(HOST_V4),
            ip("10.78.24.9"),
            Transport::udp(1, 9)
        ))
        .is_accept()
    );
    assert!(
        !big.verdict(&Packet::output(
            PHYS,
            ip(HOST_V4),
            ip("10.78.25.9"),
            Transport::udp(1, 9)
        ))
        .is_accept(),
        "the odd /24s are not in the set"
    );
}

#[test]
fn a_lan_outside_the_private_ranges_is_refused() {
    for public in ["8.8.8.0/24", "10.0.0.0/7", "2001:db8::/32", "0.0.0.0/0"] {
        let error = killswitch_policy::Lan::subnets(vec![public.parse().expect("net")])
            .expect_err("not private");
        assert!(error.contains(public), "{error}");
    }
}

#[test]
fn a_lookup_in_a_missing_set_is_malformed() {
    let mut ruleset = rules(&PolicyState::Blocked, true, true);
    if let Some(table) = ruleset.table.as_mut() {
        table.sets.retain(|s| s.name != "lan6");
    }
    let error = ruleset.check().expect_err("dangling lookup");
    assert!(error.to_string().contains("lan6"), "{error}");
}

fn v4(s: &str) -> std::net::Ipv4Addr {
    s.parse().expect("test address literal")
}

fn v6(s: &str) -> std::net::Ipv6Addr {
    s.parse().expect("test address literal")
}

#[test]
fn arp_for_the_tunnel_address_is_not_answered_on_the_lan() {
    // MLLVD-CR-24-03: Linux answers ARP for any local address on any interface, so the LAN could
    // ask "who has 10.64.0.2?" and learn that this machine holds the tunnel's address.
    use killswitch_policy::ArpPacket;
    let router = v4("192.168.1.1");
    for allow_lan in [false, true] {
        let r = rules(&connected(true), false, allow_lan);
        let ask = |iif: &str, target: &str| {
            r.arp_verdict(&ArpPacket::request_in(iif, router, v4(target)))
        };
        assert_eq!(
            ask(PHYS, TUNNEL_V4),
            PacketVerdict::Drop,
            "the question is never processed"
        );
        assert!(
            ask(PHYS, HOST_V4).is_accept(),
            "the LAN address is answered as ever"
        );
        assert!(
            ask(TUN, TUNNEL_V4).is_accept(),
            "a TAP tunnel carries ARP for its own address"
        );
        let tell =
            |oif: &str, sender: &str| r.arp_verdict(&ArpPacket::reply_out(oif, v4(sender), router));
        assert_eq!(
            tell(PHYS, TUNNEL_V4),
            PacketVerdict::Drop,
            "no answer names the tunnel address"
        );
        assert!(tell(PHYS, HOST_V4).is_accept());
        assert!(tell(TUN, TUNNEL_V4).is_accept());
        let mut request_from_tunnel_address = ArpPacket::reply_out(PHYS, v4(TUNNEL_V4), router);
        request_from_tunnel_address.operation = killswitch_policy::ArpOperation::Request;
        assert_eq!(
            r.arp_verdict(&request_from_tunnel_address),
            PacketVerdict::Drop,
            "nor a request made on behalf of a packet from the tunnel address"
        );
    }
    // Without a connected tunnel there is no address to guard, and no arp table: ARP is untouched.
    for state in [PolicyState::Blocked, connecting(), connecting_with_probe()] {
        let r = rules(&state, true, false);
        assert!(
            r.table.as_ref().is_some_and(|t| t.arp.is_none()),
            "{state:?}"
        );
        assert!(
            r.arp_verdict(&ArpPacket::request_in(PHYS, router, v4(TUNNEL_V4)))
                .is_accept()
        );
    }
    // A tunnel with IPv6 addresses only has nothing for ARP to disclose.
    let v6_only = PolicyState::Connected {
        peer: peer(Some(MARK)),
        tunnel: killswitch_policy::Tunnel {
            interface: killswitch_types::InterfaceName::new(TUN).expect("literal"),
            addresses: vec![ip(TUNNEL_V6)],
            dns: Vec::new(),
        },
    };
    assert!(
        rules(&v6_only, false, false)
            .table
            .is_some_and(|t| t.arp.is_none())
    );
}

#[test]
fn neighbor_discovery_for_the_tunnel_address_is_not_answered_on_the_lan() {
    let r = rules(&connected(true), false, true);
    let solicit = |iif: &str, target: &str| {
        r.verdict(
            &Packet::input(
                iif,
                ip("fe80::1"),
                ip("ff02::1:ff00:2"),
                Transport::neighbor(135, v6(target)),
            )
            .with_hop_limit(255),
        )
    };
    assert_eq!(solicit(PHYS, TUNNEL_V6), PacketVerdict::Drop);
    assert!(
        solicit(PHYS, HOST_V6).is_accept(),
        "other addresses are resolved as ever"
    );
    assert!(solicit(TUN, TUNNEL_V6).is_accept());
    let advertise = |oif: &str, target: &str| {
        r.verdict(
            &Packet::output(
                oif,
                ip("fe80::50"),
                ip("fe80::1"),
                Transport::neighbor(136, v6(target)),
            )
            .with_hop_limit(255),
        )
    };
    assert_eq!(advertise(PHYS, TUNNEL_V6), PacketVerdict::Drop);
    assert!(advertise(PHYS, HOST_V6).is_accept());
    // A v4-only tunnel has no IPv6 address to guard: NDP is as before.
    let v4 = rules(&connected(false), false, false);
    assert!(
        v4.verdict(
            &Packet::input(
                PHYS,
                ip("fe80::1"),
                ip("ff02::1:ff00:2"),
                Transport::neighbor(135, v6(TUNNEL_V6))
            )
            .with_hop_limit(255)
        )
        .is_accept()
    );
}

#[test]
fn nothing_from_the_tunnel_address_leaves_by_another_interface() {
    let r = rules(&connected(true), false, true);
    for (tunnel_ip, lan) in [(TUNNEL_V4, "192.168.1.1"), (TUNNEL_V6, "fd00::1")] {
        let to_lan =
            |oif: &str| Packet::output(oif, ip(tunnel_ip), ip(lan), Transport::udp(40000, 9));
        assert_eq!(
            r.verdict(&to_lan(PHYS)),
            PacketVerdict::Drop,
            "{tunnel_ip}, even with allow-lan"
        );
        assert!(
            r.verdict(&to_lan(TUN)).is_accept(),
            "{tunnel_ip} through the tunnel"
        );
    }
    let lan_from_lan = Packet::output(
        PHYS,
        ip(HOST_V4),
        ip("192.168.1.1"),
        Transport::udp(40000, 9),
    );
    assert!(r.verdict(&lan_from_lan).is_accept());
}

#[test]
fn a_dhcp_renewal_can_reach_only_a_server_on_the_link() {
    for state in table_states() {
        for allow_lan in [false, true] {
            let r = rules(&state, false, allow_lan);
            let renew =
                |dst: &str| Packet::output(PHYS, ip(HOST_V4), ip(dst), Transport::udp(68, 67));
            for server in ["192.168.1.1", "10.20.30.40", "172.16.0.1"] {
                let decision = r.decide(&renew(server));
                assert!(decision.verdict.is_accept(), "{state:?} {server}");
                assert_eq!(
                    decision.packet.hop_limit, 1,
                    "{state:?} {server}: a router must drop it rather than forward it"
                );
            }
            let broadcast = r.decide(&renew("255.255.255.255"));
            assert!(broadcast.verdict.is_accept());
            assert_eq!(
                broadcast.packet.hop_limit, 64,
                "no router forwards a limited broadcast"
            );
            assert!(!r.verdict(&renew(INTERNET_V4)).is_accept(), "{state:?}");
        }
    }
}

#[test]
fn rules_the_kernel_would_misread_are_refused() {
    use killswitch_policy::{ArpMatch, ArpRule, Match, Rule, Statement, Verdict};
    let with_rule = |rule: Rule| {
        let mut r = rules(&PolicyState::Blocked, true, false);
        if let Some(table) = r.table.as_mut() {
            table.chains[0].rules.insert(0, rule);
        }
        r.check()
    };
    let target_without_type = Rule {
        matches: vec![
            Match::Family(killswitch_policy::IpFamily::V6),
            Match::Protocol(killswitch_policy::L4Proto::Icmpv6),
            Match::NdTarget(v6(TUNNEL_V6)),
        ],
        statements: Vec::new(),
        verdict: Verdict::Drop,
        comment: "",
    };
    assert!(with_rule(target_without_type).is_err_and(|e| e.reason.contains("target")));
    let ttl_without_family = Rule {
        matches: Vec::new(),
        statements: vec![Statement::SetTtl(1)],
        verdict: Verdict::Accept,
        comment: "",
    };
    assert!(with_rule(ttl_without_family).is_err_and(|e| e.reason.contains("ttl")));
    let mut r = rules(&connected(false), false, false);
    if let Some(arp) = r.table.as_mut().and_then(|t| t.arp.as_mut()) {
        arp.chains[0].rules.push(ArpRule {
            matches: vec![ArpMatch::TargetIp(v4(TUNNEL_V4))],
            verdict: Verdict::Drop,
            comment: "",
        });
    }
    assert!(
        r.check()
            .is_err_and(|e| e.chain == "arp input" && e.reason.contains("ethernet"))
    );
}
