//! Properties of the compiled rules over random settings, tunnels and packets, decided by the
//! evaluator. Each property is one promise the kill switch makes.

use ipnet::IpNet;
use killswitch_policy::ranges::is_lan;
use killswitch_policy::{
    ArpHook, ArpOperation, ArpPacket, ChainPolicy, ConnState, Hook, Packet, Peer, PolicyState,
    Ruleset, Settings, Transport, Tunnel, compile,
};
use killswitch_policy::{CT_MARK_INBOUND, Exceptions, LocalLink, check_allows, compile_for};
use killswitch_types::{Allows, InboundAllow, SubnetAllow};
use killswitch_types::{Endpoint, Endpoints, Fwmark, InterfaceName, TransportProtocol};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const IFACES: [&str; 5] = ["lo", "eth0", "wg0", "docker0", "ts0"];

/// Addresses that the rules mention, mixed with random ones, so that packets often hit the
/// interesting cases (the endpoint, the tunnel's resolver, the LAN) and sometimes anything at all.
fn address(v6: bool) -> BoxedStrategy<IpAddr> {
    let pool: Vec<IpAddr> = if v6 {
        [
            "2001:db8::1",
            "2001:db8::10",
            "fe80::1",
            "fd00::53",
            "ff02::1:2",
            "ff02::1:ff00:1",
            "ff02::2",
            "::1",
            "fc00:bbbb::2",
            "fe80::2",
        ]
    } else {
        [
            "198.51.100.1",
            "203.0.113.10",
            "10.64.0.1",
            "10.64.0.2",
            "192.168.1.1",
            "255.255.255.255",
            "127.0.0.1",
            "224.0.0.251",
            "0.0.0.0",
            "169.254.1.1",
        ]
    }
    .iter()
    .map(|s| s.parse().expect("pool literal"))
    .collect();
    let random = if v6 {
        any::<u128>()
            .prop_map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|n| IpAddr::V4(Ipv4Addr::from(n)))
            .boxed()
    };
    prop_oneof![proptest::sample::select(pool), random].boxed()
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        proptest::sample::select(vec![53u16, 853, 67, 68, 546, 547, 51820, 443]),
        any::<u16>()
    ]
}

fn transport(v6: bool) -> impl Strategy<Value = Transport> {
    let icmp = if v6 {
        (
            prop_oneof![
                proptest::sample::select(vec![128u8, 129, 133, 134, 135, 136]),
                any::<u8>()
            ],
            address(true),
        )
            .prop_map(|(kind, target)| match (kind, target) {
                // Solicitations and advertisements are about an address; other messages are not.
                (135 | 136, IpAddr::V6(target)) => Transport::neighbor(kind, target),
                _ => Transport::icmpv6(kind),
            })
            .boxed()
    } else {
        Just(Transport::ICMP).boxed()
    };
    prop_oneof![
        (port(), port()).prop_map(|(s, d)| Transport::tcp(s, d)),
        (port(), port()).prop_map(|(s, d)| Transport::udp(s, d)),
        icmp,
        any::<u8>().prop_map(Transport::Other),
    ]
}

fn iface() -> impl Strategy<Value = Option<InterfaceName>> {
    proptest::sample::select(IFACES.to_vec()).prop_map(|n| InterfaceName::new(n).ok())
}

/// A random packet at one of `hooks`, with a transport header drawn from `transport`.
fn packet_with<T: Strategy<Value = Transport> + 'static>(
    hooks: Vec<Hook>,
    transport: impl Fn(bool) -> T + Clone + 'static,
) -> impl Strategy<Value = Packet> {
    any::<bool>().prop_flat_map(move |v6| {
        (
            proptest::sample::select(hooks.clone()),
            iface(),
            iface(),
            address(v6),
            address(v6),
            prop_oneof![Just(255u8), Just(64u8), any::<u8>()],
            transport(v6),
            prop_oneof![Just(0u32), Just(0xca6cu32), any::<u32>()],
            proptest::option::of(prop_oneof![Just(0u32), Just(1000u32), any::<u32>()]),
            proptest::sample::select(vec![
                ConnState::New,
                ConnState::Established,
                ConnState::Related,
                ConnState::Invalid,
            ]),
            prop_oneof![Just(0u32), Just(CT_MARK_INBOUND), any::<u32>()],
        )
            .prop_map(
                |(hook, iif, oif, src, dst, hop_limit, transport, mark, uid, conn, ct_mark)| {
                    Packet {
                        hook,
                        iif: if hook == Hook::Output { None } else { iif },
                        oif: if hook == Hook::Input { None } else { oif },
                        src,
                        dst,
                        dst_local: hook == Hook::Input,
                        hop_limit,
                        transport,
                        mark,
                        uid: if hook == Hook::Output { uid } else { None },
                        conn,
                        ct_mark,
                        cgroups: Vec::new(),
                    }
                },
            )
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    packet_with(vec![Hook::Input, Hook::Output, Hook::Forward], transport)
}

fn outbound_packet() -> impl Strategy<Value = Packet> {
    packet_with(vec![Hook::Output, Hook::Forward], transport)
}

fn inbound_packet() -> impl Strategy<Value = Packet> {
    packet_with(vec![Hook::Input], transport)
}

fn dns_transport(_v6: bool) -> impl Strategy<Value = Transport> {
    (
        port(),
        proptest::sample::select(vec![53u16, 853]),
        any::<bool>(),
    )
        .prop_map(|(sport, dport, tcp)| {
            if tcp {
                Transport::tcp(sport, dport)
            } else {
                Transport::udp(sport, dport)
            }
        })
}

fn dns_packet() -> impl Strategy<Value = Packet> {
    packet_with(vec![Hook::Output, Hook::Forward], dns_transport)
}

fn endpoint() -> impl Strategy<Value = Option<Endpoint>> {
    (any::<bool>().prop_flat_map(address), port(), any::<bool>()).prop_map(|(ip, port, tcp)| {
        let protocol = if tcp {
            TransportProtocol::Tcp
        } else {
            TransportProtocol::Udp
        };
        format!("{}/{protocol}", SocketAddr::new(ip, port))
            .parse()
            .ok()
    })
}

/// A peer with one to four servers (an OpenVPN file's `remote`s), usable ones only.
fn peer() -> impl Strategy<Value = Peer> {
    (
        proptest::collection::vec(endpoint(), 1..=4),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_filter_map("no usable endpoint", |(endpoints, mark, uid)| {
            let mut list: Vec<Endpoint> = Vec::new();
            for e in endpoints.into_iter().flatten() {
                if !list.contains(&e) {
                    list.push(e);
                }
            }
            Some(Peer {
                endpoints: Endpoints::new(list).ok()?,
                mark: mark.and_then(Fwmark::new),
                uid,
            })
        })
}

fn probe() -> impl Strategy<Value = killswitch_policy::Probe> {
    (
        proptest::sample::select(vec!["wg0", "tun0"]),
        any::<bool>().prop_flat_map(address),
    )
        .prop_map(|(name, resolver)| killswitch_policy::Probe {
            interface: InterfaceName::new(name).expect("literal"),
            resolver,
        })
}

fn tunnel() -> impl Strategy<Value = Tunnel> {
    (
        proptest::sample::select(vec!["wg0", "tun0", "eth0"]),
        proptest::collection::vec(any::<bool>().prop_flat_map(address), 0..3),
        proptest::collection::vec(any::<bool>().prop_flat_map(address), 0..3),
    )
        .prop_map(|(name, addresses, dns)| Tunnel {
            interface: InterfaceName::new(name).expect("literal"),
            addresses,
            dns,
        })
}

/// Every state that installs a table.
fn table_state() -> impl Strategy<Value = PolicyState> {
    prop_oneof![
        Just(PolicyState::Blocked),
        (
            peer(),
            proptest::option::of(probe()),
            proptest::option::of(tunnel())
        )
            .prop_map(|(peer, probe, pending)| PolicyState::Connecting {
                peer,
                probe,
                pending
            }),
        (peer(), tunnel()).prop_map(|(peer, tunnel)| PolicyState::Connected { peer, tunnel }),
    ]
}

/// Settings with apps-only on or off: for the promises that hold either way (the scopes').
fn settings_any() -> impl Strategy<Value = Settings> {
    (settings(), any::<bool>()).prop_map(|(settings, apps_only)| Settings {
        apps_only,
        ..settings
    })
}

fn settings() -> impl Strategy<Value = Settings> {
    (any::<bool>(), any::<bool>()).prop_map(|(lockdown, allow_lan)| Settings {
        lockdown,
        allow_lan,
        apps_only: false,
    })
}

/// An ARP message at either hook, about addresses the rules mention (often) or any (sometimes).
fn arp_packet() -> impl Strategy<Value = ArpPacket> {
    let v4 = || {
        address(false).prop_map(|a| match a {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        })
    };
    (any::<bool>(), iface(), any::<bool>(), v4(), v4()).prop_map(
        |(input, interface, request, sender, target)| ArpPacket {
            hook: if input {
                ArpHook::Input
            } else {
                ArpHook::Output
            },
            iif: if input { interface.clone() } else { None },
            oif: if input { None } else { interface },
            operation: if request {
                ArpOperation::Request
            } else {
                ArpOperation::Reply
            },
            sender,
            target,
        },
    )
}

/// The limited broadcast and link-scoped IPv6 (link-local unicast, ff02::/16): nothing a router
/// forwards.
fn is_link_scoped(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.segments()[0] == 0xff02,
    }
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn peer_of(state: &PolicyState) -> Option<&Peer> {
    match state {
        PolicyState::Connecting { peer, .. } | PolicyState::Connected { peer, .. } => Some(peer),
        _ => None,
    }
}

fn tunnel_of(state: &PolicyState) -> Option<&Tunnel> {
    match state {
        PolicyState::Connected { tunnel, .. } => Some(tunnel),
        _ => None,
    }
}

/// The tunnel whose addresses must stay off other interfaces: the connected one, or one that
/// exists but is not up yet.
fn identity_of(state: &PolicyState) -> Option<&Tunnel> {
    match state {
        PolicyState::Connected { tunnel, .. } => Some(tunnel),
        PolicyState::Connecting { pending, .. } => pending.as_ref(),
        _ => None,
    }
}

/// The tunnel's addresses that would give it away on another link: all but link-local ones,
/// which exist per link and may well be the LAN's own too.
fn guarded_addresses(state: &PolicyState) -> Vec<IpAddr> {
    identity_of(state)
        .map(|t| {
            t.addresses
                .iter()
                .copied()
                .filter(|a| !is_link_local(*a))
                .collect()
        })
        .unwrap_or_default()
}

fn is_link_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// `state` with the tunnel's link-local addresses taken away.
fn without_link_local(state: &PolicyState) -> PolicyState {
    let strip = |t: &Tunnel| Tunnel {
        addresses: t
            .addresses
            .iter()
            .copied()
            .filter(|a| !is_link_local(*a))
            .collect(),
        ..t.clone()
    };
    match state {
        PolicyState::Connected { peer, tunnel } => PolicyState::Connected {
            peer: peer.clone(),
            tunnel: strip(tunnel),
        },
        PolicyState::Connecting {
            peer,
            probe,
            pending,
        } => PolicyState::Connecting {
            peer: peer.clone(),
            probe: probe.clone(),
            pending: pending.as_ref().map(strip),
        },
        other => other.clone(),
    }
}

/// The tunnel interface, whether up (connected) or being probed (connecting).
fn tunnel_iface(state: &PolicyState) -> Option<&InterfaceName> {
    match state {
        PolicyState::Connected { tunnel, .. } => Some(&tunnel.interface),
        PolicyState::Connecting {
            probe: Some(probe), ..
        } => Some(&probe.interface),
        _ => None,
    }
}

/// The resolvers reachable through the tunnel.
fn tunnel_dns(state: &PolicyState) -> Vec<IpAddr> {
    match state {
        PolicyState::Connected { tunnel, .. } => tunnel.dns.clone(),
        PolicyState::Connecting {
            probe: Some(probe), ..
        } => vec![probe.resolver],
        _ => Vec::new(),
    }
}

/// The daemon's probe: DNS to the probe resolver through the probe interface.
fn is_probe(state: &PolicyState, p: &Packet) -> bool {
    matches!(state, PolicyState::Connecting { probe: Some(probe), .. }
        if p.oif.as_ref() == Some(&probe.interface) && p.dst == probe.resolver)
}

fn to_endpoint(state: &PolicyState, p: &Packet) -> bool {
    peer_of(state).is_some_and(|peer| peer.endpoints.iter().any(|e| e.address.ip() == p.dst))
}

fn leaves_outside_tunnel(state: &PolicyState, p: &Packet) -> bool {
    p.hook != Hook::Input
        && p.oif
            .as_ref()
            .is_some_and(|oif| oif.as_str() != "lo" && Some(oif) != tunnel_iface(state))
}

fn dns_dport(p: &Packet) -> bool {
    matches!(
        p.transport,
        Transport::Tcp {
            dport: 53 | 853,
            ..
        } | Transport::Udp {
            dport: 53 | 853,
            ..
        }
    )
}

fn endpoint_exact(state: &PolicyState, p: &Packet) -> bool {
    peer_of(state).is_some_and(|peer| peer.endpoints.iter().any(|e| exactly_to(e, p)))
}

/// Whether `p` goes to exactly `e`'s address, port and protocol.
fn exactly_to(e: &Endpoint, p: &Packet) -> bool {
    let (proto_ok, dport) = match (e.protocol, p.transport) {
        (TransportProtocol::Udp, Transport::Udp { dport, .. })
        | (TransportProtocol::Tcp, Transport::Tcp { dport, .. }) => (true, dport),
        _ => (false, 0),
    };
    proto_ok && dport == e.address.port() && p.dst == e.address.ip()
}

/// Whether `p` carries what the peer requires of the tunnel's own packets.
fn carries_peer_identity(peer: &Peer, p: &Packet) -> bool {
    peer.mark.is_none_or(|m| p.mark == m.get()) && peer.uid.is_none_or(|u| p.uid == Some(u))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// Invariant: what we compile, the kernel reads as we mean it; and every state with a table
    /// drops by default on every hook.
    #[test]
    fn rules_are_well_formed_and_default_drop(state in table_state(), settings in settings()) {
        let ruleset = compile(&state, &settings);
        prop_assert!(ruleset.check().is_ok(), "{:?}", ruleset.check());
        for hook in [Hook::Input, Hook::Output, Hook::Forward] {
            let policy = ruleset.base_chain(hook).and_then(|c| c.base).map(|b| b.policy);
            prop_assert_eq!(policy, Some(ChainPolicy::Drop));
        }
    }

    /// Every endpoint of a connecting tunnel gets its hole, with the same mark and uid
    /// restriction; nothing else leaves a non-tunnel interface for an address outside the LAN
    /// (another port or protocol of a server, another address, a packet without the mark or uid).
    #[test]
    fn connecting_opens_exactly_each_endpoint_for_the_tunnels_own_packets(
        peer in peer(),
        settings in settings(),
        pick in any::<proptest::sample::Index>(),
        p in outbound_packet(),
    ) {
        let state = PolicyState::Connecting { peer: peer.clone(), probe: None, pending: None };
        let ruleset = compile(&state, &settings);
        // The tunnel's own packet to each server, by the physical interface: accepted.
        let e = peer.endpoints.as_slice()[pick.index(peer.endpoints.len())];
        let transport = match e.protocol {
            TransportProtocol::Udp => Transport::udp(40000, e.address.port()),
            TransportProtocol::Tcp => Transport::tcp(40000, e.address.port()),
        };
        let src = if e.address.is_ipv4() { "192.168.1.50" } else { "2001:db8:1::50" };
        let mut own = Packet::output("eth0", src.parse().expect("literal"), e.address.ip(), transport);
        own.mark = peer.mark.map_or(0, |m| m.get());
        own.uid = peer.uid;
        prop_assert!(ruleset.verdict(&own).is_accept(), "{peer:?}: {own:?} refused");
        // Any other packet out of a non-tunnel interface to a non-LAN address: accepted only if it
        // is the tunnel's own, to exactly one of the servers.
        prop_assume!(p.hook == Hook::Output && leaves_outside_tunnel(&state, &p) && !is_lan(p.dst));
        if ruleset.verdict(&p).is_accept() {
            prop_assert!(
                endpoint_exact(&state, &p) && carries_peer_identity(&peer, &p),
                "{peer:?} accepted {p:?}"
            );
        }
    }

    /// (1) Nothing reaches a non-LAN, non-endpoint address by any interface but the tunnel.
    #[test]
    fn nothing_leaves_outside_the_tunnel(state in table_state(), settings in settings(), p in outbound_packet()) {
        prop_assume!(leaves_outside_tunnel(&state, &p) && !is_lan(p.dst) && !to_endpoint(&state, &p));
        let verdict = compile(&state, &settings).verdict(&p);
        prop_assert!(!verdict.is_accept(), "{state:?} accepted {p:?}");
    }

    /// (2) No DNS query leaves except to a tunnel resolver through the tunnel (or is the tunnel's
    /// own traffic to an endpoint that happens to listen on a DNS port).
    #[test]
    fn dns_only_to_the_tunnel_resolver(state in table_state(), settings in settings(), p in dns_packet()) {
        prop_assume!(p.hook != Hook::Input && dns_dport(&p));
        prop_assume!(p.oif.as_ref().is_some_and(|o| o.as_str() != "lo"));
        let verdict = compile(&state, &settings).verdict(&p);
        if verdict.is_accept() {
            let via_tunnel_resolver = p.oif.as_ref().is_some_and(|o| Some(o) == tunnel_iface(&state)) && tunnel_dns(&state).contains(&p.dst);
            prop_assert!(via_tunnel_resolver || (p.hook == Hook::Output && endpoint_exact(&state, &p)), "{state:?} accepted {p:?}");
        }
    }

    /// (3) A tunnel without an IPv6 address lets no IPv6 packet out to a global address.
    #[test]
    fn v4_only_tunnel_blocks_global_ipv6(state in table_state(), settings in settings(), p in outbound_packet()) {
        // A link-local IPv6 address (every WireGuard interface has one) does not carry IPv6.
        prop_assume!(tunnel_of(&state).is_none_or(|t| t.addresses.iter().all(|a| a.is_ipv4() || is_link_local_v6(a))));
        prop_assume!(p.dst.is_ipv6() && !is_lan(p.dst) && !to_endpoint(&state, &p) && !p.dst.is_loopback() && !is_probe(&state, &p));
        prop_assume!(p.hook != Hook::Input && p.oif.as_ref().is_some_and(|o| o.as_str() != "lo"));
        let verdict = compile(&state, &settings).verdict(&p);
        prop_assert!(!verdict.is_accept(), "{state:?} accepted {p:?}");
    }

    /// (4) allow-lan changes nothing for a packet whose far end is not a private address.
    #[test]
    fn allow_lan_never_admits_a_public_address(state in table_state(), lockdown in any::<bool>(), p in packet()) {
        let public_far_end = match p.hook {
            Hook::Output => !is_lan(p.dst),
            Hook::Input => !is_lan(p.src),
            Hook::Forward => !is_lan(p.src) || !is_lan(p.dst),
            Hook::Postrouting | Hook::Prerouting | Hook::PreroutingNat => false,
        };
        prop_assume!(public_far_end);
        let closed = compile(&state, &Settings { lockdown, allow_lan: false, apps_only: false }).verdict(&p);
        let open = compile(&state, &Settings { lockdown, allow_lan: true, apps_only: false }).verdict(&p);
        prop_assert_eq!(closed, open, "{:?}", p);
    }

    /// New inbound flows from outside come only through the tunnel, from the LAN when allowed, or
    /// are the link bring-up and endpoint replies the policy lists.
    #[test]
    fn no_new_inbound_from_the_internet(state in table_state(), settings in settings(), p in inbound_packet()) {
        prop_assume!(p.hook == Hook::Input && p.conn == ConnState::New && !is_lan(p.src));
        prop_assume!(p.iif.as_ref().is_some_and(|i| i.as_str() != "lo" && Some(i) != tunnel_iface(&state)));
        prop_assume!(peer_of(&state).is_none_or(|peer| peer.endpoints.iter().all(|e| e.address.ip() != p.src)));
        let verdict = compile(&state, &settings).verdict(&p);
        let link_bring_up = matches!(p.transport, Transport::Udp { sport: 67, dport: 68 } | Transport::Icmpv6 { .. });
        prop_assert!(!verdict.is_accept() || link_bring_up, "{state:?} accepted {p:?}");
    }

    /// Without allow-lan, nothing this machine sends by a physical interface (but the tunnel's own
    /// packets to its server) can be carried past the first router: it goes to the limited
    /// broadcast or a link-scoped IPv6 address, or leaves with a TTL no router forwards.
    #[test]
    fn link_bring_up_never_crosses_a_router(state in table_state(), lockdown in any::<bool>(), p in outbound_packet()) {
        prop_assume!(p.hook == Hook::Output && leaves_outside_tunnel(&state, &p) && !to_endpoint(&state, &p));
        let decision = compile(&state, &Settings { lockdown, allow_lan: false, apps_only: false }).decide(&p);
        if decision.verdict.is_accept() {
            prop_assert!(
                is_link_scoped(p.dst) || (p.dst.is_ipv4() && decision.packet.hop_limit <= 1),
                "{state:?} accepted {p:?} and left it {:?}", decision.packet
            );
        }
    }

    /// While a tunnel is connected, no ARP question about one of its addresses is answered by
    /// another interface, and no ARP message leaving by another interface names one; all other
    /// ARP is untouched, whatever the state.
    #[test]
    fn arp_never_discloses_a_tunnel_address(state in table_state(), settings in settings(), p in arp_packet()) {
        let tunnel_v4 = guarded_addresses(&state);
        let tunnel_name = identity_of(&state).map(|t| &t.interface);
        let names_tunnel_address = match p.hook {
            ArpHook::Input => p.operation == ArpOperation::Request
                && p.iif.as_ref() != tunnel_name
                && tunnel_v4.contains(&IpAddr::V4(p.target)),
            ArpHook::Output => p.oif.as_ref() != tunnel_name && tunnel_v4.contains(&IpAddr::V4(p.sender)),
        };
        let verdict = compile(&state, &settings).arp_verdict(&p);
        prop_assert_eq!(verdict.is_accept(), !names_tunnel_address, "{:?} {:?}", state, p);
    }

    /// While a tunnel is connected, neighbour discovery for one of its IPv6 addresses is neither
    /// answered (solicitation in) nor advertised (advertisement out) by another interface.
    #[test]
    fn neighbor_discovery_never_discloses_a_tunnel_address(state in table_state(), settings in settings(), p in packet()) {
        let Some(tunnel) = identity_of(&state) else { return Ok(()) };
        let Transport::Icmpv6 { kind, target: Some(target) } = p.transport else { return Ok(()) };
        prop_assume!(guarded_addresses(&state).contains(&IpAddr::V6(target)));
        let solicited_elsewhere = p.hook == Hook::Input && kind == 135 && p.iif.as_ref() != Some(&tunnel.interface);
        let advertised_elsewhere = p.hook == Hook::Output && kind == 136 && p.oif.as_ref() != Some(&tunnel.interface);
        prop_assume!(solicited_elsewhere || advertised_elsewhere);
        prop_assume!(p.iif.as_ref().is_none_or(|i| i.as_str() != "lo") && p.oif.as_ref().is_none_or(|o| o.as_str() != "lo"));
        let verdict = compile(&state, &settings).verdict(&p);
        prop_assert!(!verdict.is_accept(), "{state:?} accepted {p:?}");
    }

    /// A link-local address on the tunnel (169.254.0.0/16, fe80::/10) tells nobody anything and
    /// may be the LAN's own too (a router's fe80::1): it is not guarded, and changes no decision
    /// about any packet (where it does not decide which families the tunnel carries).
    #[test]
    fn a_link_local_tunnel_address_changes_no_decision(state in table_state(), settings in settings(), p in packet(), a in arp_packet()) {
        let stripped = without_link_local(&state);
        prop_assume!(identity_of(&state).map(Tunnel::carried_families) == identity_of(&stripped).map(Tunnel::carried_families));
        let (with, without) = (compile(&state, &settings), compile(&stripped, &settings));
        prop_assert_eq!(with.verdict(&p), without.verdict(&p), "{:?} {:?}", state, p);
        prop_assert_eq!(with.arp_verdict(&a), without.arp_verdict(&a), "{:?} {:?}", state, a);
    }

    /// `off` and unlocked `disconnected` install nothing and so decide nothing.
    #[test]
    fn no_table_accepts_everything(lockdown in any::<bool>(), allow_lan in any::<bool>(), p in packet()) {
        let off: Ruleset = compile(&PolicyState::Off, &Settings { lockdown, allow_lan, apps_only: false });
        prop_assert!(off.table.is_none() && off.verdict(&p).is_accept());
    }
}

#[test]
fn lan_ranges_are_what_the_issue_lists() {
    let expected = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fe80::/10",
        "fc00::/7",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "ff00::/8",
    ];
    let actual: Vec<IpNet> = killswitch_policy::ranges::LAN_UNICAST
        .iter()
        .chain(killswitch_policy::ranges::LAN_GROUP.iter())
        .copied()
        .collect();
    let expected: Vec<IpNet> = expected
        .iter()
        .map(|s| s.parse().expect("literal"))
        .collect();
    assert_eq!(actual, expected);
}

/// Random subnets inside 10.0.0.0/8 and fd00::/8 (inside the LAN ranges, as `Lan` requires).
fn lan_subnets() -> impl Strategy<Value = Vec<IpNet>> {
    let v4 = (any::<u32>(), 8u8..=32).prop_map(|(n, len)| {
        let addr = Ipv4Addr::from((n & 0x00ff_ffff) | 0x0a00_0000);
        IpNet::V4(ipnet::Ipv4Net::new(addr, len).expect("length").trunc())
    });
    let v6 = (any::<u128>(), 8u8..=128).prop_map(|(n, len)| {
        let addr = Ipv6Addr::from((n >> 8) | (0xfd_u128 << 120));
        IpNet::V6(ipnet::Ipv6Net::new(addr, len).expect("length").trunc())
    });
    proptest::collection::vec(prop_oneof![v4, v6], 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Invariant: with a narrowed LAN, a new packet leaves by the physical interface to a unicast
    /// address exactly when a listed subnet holds it; the set lookup agrees with a plain scan.
    #[test]
    fn a_narrowed_lan_opens_exactly_its_subnets(
        subnets in lan_subnets(),
        dst in prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from((n & 0x00ff_ffff) | 0x0a00_0000))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from((n >> 8) | (0xfd_u128 << 120)))),
        ],
    ) {
        let lan = killswitch_policy::Lan::subnets(subnets.clone()).expect("private");
        let ruleset = killswitch_policy::compile_with(
            &PolicyState::Blocked,
            &Settings { lockdown: true, allow_lan: true, apps_only: false },
            &lan,
        );
        prop_assert!(ruleset.check().is_ok());
        let src: IpAddr = if dst.is_ipv4() { "192.168.1.2".parse().expect("literal") } else { "fd00::2".parse().expect("literal") };
        let verdict = ruleset.verdict(&Packet::output("eth0", src, dst, Transport::udp(40000, 9)));
        let listed = subnets.iter().any(|net| net.contains(&dst));
        prop_assert_eq!(verdict.is_accept(), listed, "dst {} subnets {:?}", dst, subnets);
    }
}

/// Exceptions as the daemon would accept them: maybe the `docker0` bridge, maybe the allowed
/// interface `ts0`, subnets (private, or public with the flag) and inbound services by `eth0` or
/// `docker0`.
fn exceptions() -> impl Strategy<Value = Exceptions> {
    let name = |n: &str| InterfaceName::new(n).expect("literal");
    let subnet = (
        proptest::sample::select(vec!["eth0", "docker0"]),
        prop_oneof![
            Just("10.99.0.0/16"),
            Just("192.168.1.0/24"),
            Just("fd00::/64"),
            Just("203.0.113.0/24 public"),
            Just("2001:db8::/48 public"),
        ],
    )
        .prop_map(|(iface, net)| {
            let (net, flag) = net.split_once(' ').unwrap_or((net, ""));
            format!("{net} on {iface} {flag}")
                .trim()
                .parse::<SubnetAllow>()
                .expect("literal")
        });
    let inbound = (
        any::<bool>(),
        prop_oneof![
            Just(22u16),
            Just(53u16),
            Just(51820u16),
            any::<u16>().prop_map(|p| p.max(1))
        ],
        proptest::sample::select(vec!["eth0", "docker0", "wg0"]),
    )
        .prop_map(|(tcp, port, iface)| {
            format!("{}/{port} on {iface}", if tcp { "tcp" } else { "udp" })
                .parse::<InboundAllow>()
                .expect("literal")
        });
    (
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(subnet, 0..3),
        proptest::collection::vec(inbound, 0..3),
    )
        .prop_map(move |(bridge, ts, subnets, inbound)| {
            let allows = Allows {
                interfaces: if ts { vec![name("ts0")] } else { Vec::new() },
                subnets,
                inbound,
            };
            assert!(check_allows(&allows).is_ok(), "{allows:?}");
            Exceptions {
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
        })
}

fn is_local_or_allowed(exceptions: &Exceptions, iface: &InterfaceName) -> bool {
    exceptions
        .local_bridges
        .iter()
        .chain(&exceptions.interfaces)
        .any(|l| &l.interface == iface)
}

fn ports(p: &Packet) -> Option<(bool, u16, u16)> {
    match p.transport {
        Transport::Tcp { sport, dport } => Some((true, sport, dport)),
        Transport::Udp { sport, dport } => Some((false, sport, dport)),
        _ => None,
    }
}

fn is_tcp(protocol: TransportProtocol) -> bool {
    protocol == TransportProtocol::Tcp
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_global_rejects: 200_000, ..ProptestConfig::default() })]

    /// No exception opens DNS: a DNS query leaves through the tunnel to its resolver or not at
    /// all, whatever bridges, interfaces, subnets and services are allowed.
    #[test]
    fn an_allow_never_opens_dns_outside_the_tunnel(state in table_state(), settings in settings(), exceptions in exceptions(), p in dns_packet()) {
        prop_assume!(p.oif.as_ref().is_some_and(|o| o.as_str() != "lo"));
        let verdict = compile_for(&state, &settings, &exceptions).verdict(&p);
        if verdict.is_accept() {
            let via_tunnel_resolver = p.oif.as_ref().is_some_and(|o| Some(o) == tunnel_iface(&state)) && tunnel_dns(&state).contains(&p.dst);
            prop_assert!(via_tunnel_resolver || (p.hook == Hook::Output && endpoint_exact(&state, &p)), "{state:?} {exceptions:?} accepted {p:?}");
        }
    }

    /// What leaves by a non-tunnel interface to an address outside the LAN is the tunnel's own,
    /// or exactly what an exception names: a local bridge or allowed interface, an allowed subnet
    /// by its interface, or a reply of a flow an allowed inbound service marked. Forwarded
    /// packets only within one local bridge.
    #[test]
    fn nothing_leaves_outside_the_tunnel_but_what_is_allowed(state in table_state(), settings in settings(), exceptions in exceptions(), p in outbound_packet()) {
        prop_assume!(leaves_outside_tunnel(&state, &p) && !is_lan(p.dst) && !to_endpoint(&state, &p));
        let verdict = compile_for(&state, &settings, &exceptions).verdict(&p);
        if verdict.is_accept() {
            let oif = p.oif.clone().expect("leaves by an interface");
            let allowed = match p.hook {
                Hook::Forward => exceptions.local_bridges.iter().any(|l| l.interface == oif && p.iif.as_ref() == Some(&oif)),
                _ => is_local_or_allowed(&exceptions, &oif)
                    || exceptions.subnets.iter().any(|s| s.interface == oif && s.subnet.contains(&p.dst) && s.public)
                    || exceptions.inbound.iter().any(|i| i.interface == oif
                        && p.ct_mark & CT_MARK_INBOUND != 0
                        && ports(&p).is_some_and(|(tcp, sport, _)| tcp == is_tcp(i.protocol) && sport == i.port)),
            };
            prop_assert!(allowed, "{state:?} {exceptions:?} accepted {p:?}");
        }
    }

    /// An allowed inbound service changes nothing for a flow it did not mark (one that started in
    /// the tunnel, or anywhere else): only the replies of flows that arrived by its interface use
    /// it. On the way in, it admits only the first packet of a flow to its port on its interface,
    /// and marks that flow.
    #[test]
    fn inbound_exceptions_admit_replies_only(state in table_state(), settings in settings(), exceptions in exceptions(), p in packet()) {
        let without = Exceptions { inbound: Vec::new(), ..exceptions.clone() };
        let with = compile_for(&state, &settings, &exceptions).decide(&p);
        let before = compile_for(&state, &settings, &without).verdict(&p);
        if p.hook != Hook::Input && p.ct_mark & CT_MARK_INBOUND == 0 {
            prop_assert_eq!(with.verdict, before, "{:?}", p);
        }
        if p.hook == Hook::Input && with.verdict.is_accept() && !before.is_accept() {
            prop_assert_eq!(p.conn, ConnState::New);
            let (tcp, _, dport) = ports(&p).expect("a port");
            prop_assert!(exceptions.inbound.iter().any(|i| Some(&i.interface) == p.iif.as_ref() && i.port == dport && tcp == is_tcp(i.protocol)), "{:?}", p);
            prop_assert!(with.packet.ct_mark & CT_MARK_INBOUND != 0, "the flow is not marked: {:?}", p);
        }
    }

    /// A subnet outside the private ranges is refused unless marked public, whatever its size.
    #[test]
    fn allow_subnets_never_admit_a_public_range_without_the_flag(a in any::<u32>(), prefix in 0u8..=32, v6 in any::<bool>(), b in any::<u128>(), prefix6 in 0u8..=128) {
        let net: IpNet = if v6 {
            ipnet::Ipv6Net::new(Ipv6Addr::from(b), prefix6).expect("valid").trunc().into()
        } else {
            ipnet::Ipv4Net::new(Ipv4Addr::from(a), prefix).expect("valid").trunc().into()
        };
        let allows = Allows {
            subnets: vec![format!("{net} on eth0").parse().expect("valid")],
            ..Allows::default()
        };
        if check_allows(&allows).is_ok() {
            prop_assert!(is_lan(net.network()) && is_lan(net.broadcast()), "{net} admitted without the flag");
        }
    }
}

/// Every state, including those without a table of their own.
fn any_state() -> impl Strategy<Value = PolicyState> {
    prop_oneof![
        Just(PolicyState::Off),
        Just(PolicyState::Disconnected),
        table_state(),
    ]
}

/// Tunnel-only uids (1 to 3 of them; 0 is root, 65534 nobody), and one of them to send from.
fn tunnel_only_uids() -> impl Strategy<Value = (Vec<u32>, usize)> {
    proptest::collection::vec(
        prop_oneof![Just(0u32), Just(1000u32), Just(65534u32), any::<u32>()],
        1..4,
    )
    .prop_flat_map(|uids| {
        let n = uids.len();
        (Just(uids), 0..n)
    })
}

/// The tunnel traffic may use: only a connected one (a pending or probed tunnel carries nothing).
fn carrying_tunnel(state: &PolicyState) -> Option<&Tunnel> {
    match state {
        PolicyState::Connected { tunnel, .. } => Some(tunnel),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// Issue 15, tunnel-only users: whatever the state (`off` and `disconnected` included), the
    /// settings and the exceptions, a packet from a tunnel-only uid is accepted out of no
    /// interface but loopback and a connected tunnel; there only for a family the tunnel carries,
    /// and DNS only to the tunnel's resolvers.
    #[test]
    fn a_tunnel_only_user_never_leaves_outside_the_tunnel(
        state in any_state(),
        settings in settings_any(),
        exceptions in exceptions(),
        (uids, sender) in tunnel_only_uids(),
        p in outbound_packet(),
    ) {
        prop_assume!(p.hook == Hook::Output);
        let p = Packet { uid: Some(uids[sender]), ..p };
        let exceptions = Exceptions { tunnel_only_uids: uids.clone(), ..exceptions };
        let ruleset = compile_for(&state, &settings, &exceptions);
        prop_assert!(ruleset.check().is_ok(), "{:?}", ruleset.check());
        if !ruleset.verdict(&p).is_accept() {
            return Ok(());
        }
        let oif = p.oif.as_ref().map(|o| o.as_str());
        if oif == Some("lo") {
            return Ok(());
        }
        let tunnel = carrying_tunnel(&state);
        prop_assert!(
            tunnel.is_some_and(|t| Some(t.interface.as_str()) == oif),
            "{state:?} let uid {} out of {oif:?}: {p:?}", uids[sender]
        );
        let tunnel = tunnel.expect("checked above");
        let family_carried = tunnel.addresses.iter().any(|a| a.is_ipv6() == p.dst.is_ipv6() && !is_link_local_v6(a));
        prop_assert!(family_carried, "{state:?} let {p:?} into a tunnel that does not carry its family");
        if dns_dport(&p) {
            prop_assert!(tunnel.usable_dns().contains(&p.dst), "{state:?} let DNS {p:?} out");
        }
    }

    /// Tunnel-only users change nothing for anyone else: a packet from another uid (or from no
    /// socket) gets the verdict it gets without them.
    #[test]
    fn tunnel_only_users_leave_other_users_alone(
        state in any_state(),
        settings in settings_any(),
        (uids, _) in tunnel_only_uids(),
        p in packet(),
    ) {
        prop_assume!(p.uid.is_none_or(|u| !uids.contains(&u)));
        let with = Exceptions { tunnel_only_uids: uids, ..Exceptions::default() };
        prop_assert_eq!(
            compile_for(&state, &settings, &with).verdict(&p),
            compile_for(&state, &settings, &Exceptions::default()).verdict(&p),
            "{:?} {:?}", state, p
        );
    }

    /// The routing layer sends a tunnel-only uid's packets, of both families and in every state, to
    /// the kill switch's table ahead of every rule that looks up `main`; that table has a route into
    /// no interface but the connected tunnel, local bridges and allowed interfaces (which the
    /// firewall then refuses them), and `unreachable` behind.
    #[test]
    fn tunnel_only_users_are_routed_into_the_tunnel_or_nowhere(
        state in any_state(),
        settings in settings_any(),
        exceptions in exceptions(),
        (uids, sender) in tunnel_only_uids(),
    ) {
        use killswitch_policy::routes::{self, Selector, TableRoute};
        let uid = uids[sender];
        let exceptions = Exceptions { tunnel_only_uids: uids, ..exceptions };
        let layer = routes::compile_routes_for(&state, &settings, &exceptions, &[]).expect("a layer with tunnel-only users");
        for family in [killswitch_policy::IpFamily::V4, killswitch_policy::IpFamily::V6] {
            let ours = layer.rules.iter().find(|r| r.family == family && !r.invert && r.selector == Selector::Uid(uid));
            let ours = ours.expect("a rule for the uid");
            prop_assert_eq!(ours.table, routes::ROUTE_TABLE);
            prop_assert!(layer.rules.iter().filter(|r| r.family == family && r.table == routes::MAIN_TABLE).all(|r| r.priority > ours.priority));
            prop_assert!(layer.routes.contains(&TableRoute::Unreachable(family)));
        }
        for route in &layer.routes {
            if let TableRoute::Tunnel(_, iface) = route {
                prop_assert_eq!(Some(iface), carrying_tunnel(&state).map(|t| &t.interface));
            }
        }
    }
}

/// A bypass cgroup (at depth 1 to 4, with an id from a small pool so that other packets' paths
/// often share ids with it at other depths) and the path of cgroup ids of a packet's socket:
/// random, often holding the bypass id at some depth, sometimes inside the bypass cgroup.
fn bypass_and_path() -> impl Strategy<Value = (killswitch_policy::BypassScope, Vec<u64>)> {
    let id = || prop_oneof![1u64..6, any::<u64>()];
    (
        1u32..5,
        id(),
        proptest::collection::vec(id(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(level, id, mut path, inside)| {
            if inside {
                // Inside: the bypass cgroup's id at its depth, with whatever ancestors and
                // children around it.
                while path.len() < level as usize {
                    path.push(7);
                }
                path[level as usize - 1] = id;
            }
            (killswitch_policy::BypassScope { level, id }, path)
        })
}

fn in_bypass(scope: &killswitch_policy::BypassScope, path: &[u64]) -> bool {
    path.get(scope.level as usize - 1) == Some(&scope.id)
}

/// The tunnel-only uids among `uids` that `p` is not sent by, or whether it is sent by none.
fn from_no_scope(p: &Packet, uids: &[u32]) -> bool {
    p.uid.is_none_or(|u| !uids.contains(&u))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// Issue 15, bypass: whatever the state, the settings and the exceptions, a packet whose
    /// socket is not in the bypass cgroup (not at the cgroup's depth with the cgroup's id: the
    /// same id at another depth, a parent, a sibling, no socket) gets exactly the verdict it gets
    /// with no bypass at all, in every hook.
    #[test]
    fn bypass_never_applies_outside_its_cgroup(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (scope, path) in bypass_and_path(),
        uids in proptest::collection::vec(prop_oneof![Just(1000u32), any::<u32>()], 0..2),
        p in packet(),
    ) {
        prop_assume!(!in_bypass(&scope, &path));
        let p = p.with_cgroups(path);
        let without = Exceptions { tunnel_only_uids: uids, ..exceptions };
        let with = Exceptions { bypass: Some(scope), ..without.clone() };
        let ruleset = compile_for(&state, &settings, &with);
        prop_assert!(ruleset.check().is_ok(), "{:?}", ruleset.check());
        prop_assert_eq!(
            ruleset.verdict(&p),
            compile_for(&state, &settings, &without).verdict(&p),
            "{:?} {:?} {:?}", state, scope, p
        );
    }

    /// And inside it: an outgoing packet of a bypassed socket leaves by any interface, in every
    /// state, unless its sender is a tunnel-only user (who stays confined) or it carries the
    /// tunnel's own address out of another interface (which would give the tunnel away).
    #[test]
    fn a_bypassed_socket_leaves_by_any_interface(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (scope, path) in bypass_and_path(),
        p in outbound_packet(),
    ) {
        prop_assume!(p.hook == Hook::Output && in_bypass(&scope, &path));
        prop_assume!(!guarded_addresses(&state).contains(&p.src));
        // Nor a neighbour advertisement naming it (the guard ahead of the bypass accept).
        prop_assume!(!matches!(p.transport, Transport::Icmpv6 { target: Some(t), .. } if guarded_addresses(&state).contains(&IpAddr::V6(t))));
        let p = Packet { uid: None, ..p }.with_cgroups(path);
        let with = Exceptions { bypass: Some(scope), ..exceptions };
        prop_assert!(compile_for(&state, &settings, &with).verdict(&p).is_accept(), "{:?} {:?}", state, p);
        // A tunnel-only user's packet is judged as without bypass.
        let confined = Packet { uid: Some(4242), ..p };
        let users = Exceptions { tunnel_only_uids: vec![4242], ..with.clone() };
        let plain = Exceptions { bypass: None, ..users.clone() };
        prop_assert_eq!(
            compile_for(&state, &settings, &users).verdict(&confined),
            compile_for(&state, &settings, &plain).verdict(&confined)
        );
    }

    /// The routing layer: with a program bypassed, every state's layer has
    /// `fwmark BYPASS_MARK lookup main` for both families, ahead of every rule of its own; with
    /// none, no rule names the mark.
    #[test]
    fn bypassed_sockets_are_routed_by_main_ahead_of_the_layer(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (scope, _) in bypass_and_path(),
    ) {
        use killswitch_policy::routes::{self, Selector};
        use killswitch_policy::bypass::{BYPASS_MARK, PRIORITY_BYPASS};
        let with = Exceptions { bypass: Some(scope), ..exceptions.clone() };
        let layer = routes::compile_routes_for(&state, &settings, &with, &[]).expect("a layer while bypassed");
        for family in [killswitch_policy::IpFamily::V4, killswitch_policy::IpFamily::V6] {
            let bypass = layer.rules.iter().find(|r| r.family == family && r.selector == Selector::FwMark(BYPASS_MARK) && !r.invert);
            let bypass = bypass.expect("a bypass rule");
            prop_assert_eq!((bypass.priority, bypass.table), (PRIORITY_BYPASS, routes::MAIN_TABLE));
            prop_assert!(layer.rules.iter().filter(|r| r.family == family && r != &bypass).all(|r| r.priority > bypass.priority));
        }
        if let Some(layer) = routes::compile_routes_for(&state, &settings, &exceptions, &[]) {
            prop_assert!(!layer.rules.iter().any(|r| r.selector == Selector::FwMark(BYPASS_MARK)));
        }
    }

    /// Apps-only: whatever the state (a connecting or connected tunnel, blocked, off), lockdown,
    /// allow-lan and the exceptions, the machine's own packets (any hook, any interface, any uid
    /// that is not a tunnel-only user's, or no socket at all) are accepted: there is no
    /// machine-wide kill switch, as the administrator asked. That includes the tunnel's own
    /// packets to its servers: the endpoint hole is as open as before.
    #[test]
    fn apps_only_leaves_the_machines_own_traffic_alone(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (uids, _) in tunnel_only_uids(),
        with_users in any::<bool>(),
        p in packet(),
    ) {
        let settings = Settings { apps_only: true, ..settings };
        let uids = if with_users { uids } else { Vec::new() };
        prop_assume!(from_no_scope(&p, &uids));
        let exceptions = Exceptions { tunnel_only_uids: uids, ..exceptions };
        let ruleset = compile_for(&state, &settings, &exceptions);
        prop_assert!(ruleset.check().is_ok(), "{:?}", ruleset.check());
        prop_assert!(ruleset.verdict(&p).is_accept(), "{state:?} refused the machine's own {p:?}");
        if let Some(table) = &ruleset.table {
            prop_assert!(table.chains.iter().filter_map(|c| c.base).all(|b| b.policy == ChainPolicy::Accept));
        }
    }

    /// Apps-only, the endpoint hole: the tunnel's own packets to each of its servers (marked as
    /// the tunnel marks them, from the uid the hole names) pass the firewall in every state with
    /// a tunnel, and the routing layer never sends them into the tunnel: no rule of ours takes
    /// them (only the scopes' uids, and the tunnel's resolvers, which never hold a server).
    #[test]
    fn apps_only_keeps_the_endpoint_hole_and_never_routes_the_tunnel_into_itself(
        state in table_state(),
        settings in settings(),
        exceptions in exceptions(),
        (uids, _) in tunnel_only_uids(),
        server in any::<prop::sample::Index>(),
        oif in proptest::sample::select(vec!["eth0", "wlan0"]),
    ) {
        use killswitch_policy::routes::{self, Selector};
        let settings = Settings { apps_only: true, ..settings };
        let peer = match &state {
            PolicyState::Connecting { peer, .. } | PolicyState::Connected { peer, .. } => peer.clone(),
            _ => return Ok(()),
        };
        prop_assume!(peer.uid.is_none_or(|u| !uids.contains(&u)));
        let endpoint = *server.get(peer.endpoints.as_slice());
        let transport = match endpoint.protocol {
            TransportProtocol::Udp => Transport::udp(40000, endpoint.address.port()),
            TransportProtocol::Tcp => Transport::tcp(40000, endpoint.address.port()),
        };
        let src: IpAddr = if endpoint.address.is_ipv4() { "192.168.1.50".parse().expect("literal") } else { "2001:db8:1::50".parse().expect("literal") };
        let mut p = Packet::output(oif, src, endpoint.address.ip(), transport);
        p.mark = peer.mark.map_or(0, |m| m.get());
        p.uid = peer.uid;
        let exceptions = Exceptions { tunnel_only_uids: uids.clone(), ..exceptions };
        prop_assert!(compile_for(&state, &settings, &exceptions).verdict(&p).is_accept(), "{state:?}: {p:?}");
        if let Some(layer) = routes::compile_routes_for(&state, &settings, &exceptions, &[]) {
            for rule in &layer.rules {
                prop_assert_eq!(rule.table, routes::ROUTE_TABLE, "apps-only looks nothing up in main: {:?}", rule);
                prop_assert!(!rule.invert, "no catch-all: {:?}", rule);
                match &rule.selector {
                    Selector::Uid(uid) => prop_assert!(uids.contains(uid)),
                    Selector::To(net) => prop_assert!(
                        peer.endpoints.iter().all(|e| !net.contains(&e.address.ip())),
                        "{net} holds a server"
                    ),
                    other => prop_assert!(false, "apps-only routes {:?} into the tunnel", other),
                }
            }
        }
    }
}

/// One to three exec namespaces (`ksx0`..`ksx7`, subnets in 10.201.0.0/16), and the interface a
/// packet comes from: one of theirs, or a `ksx` interface no scope names (a leftover of a crash).
fn exec_scopes() -> impl Strategy<Value = (Vec<killswitch_policy::ExecScope>, InterfaceName)> {
    (proptest::collection::btree_set(0u8..8, 1..4), 0u8..10).prop_map(|(ns, from)| {
        let scopes: Vec<killswitch_policy::ExecScope> = ns
            .iter()
            .map(|n| killswitch_policy::ExecScope {
                interface: InterfaceName::new(format!("ksx{n}")).expect("literal"),
                subnet: format!("10.201.{n}.0/30").parse().expect("literal"),
            })
            .collect();
        let from = InterfaceName::new(format!("ksx{from}")).expect("literal");
        (scopes, from)
    })
}

/// A packet forwarded from an exec namespace (arriving on `ksx*`) to any interface.
fn exec_packet() -> impl Strategy<Value = Packet> {
    packet_with(vec![Hook::Forward], transport)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// Issue 15, `killswitch exec`: whatever the state (`off` and `disconnected` included), the
    /// settings and the exceptions, a packet from an exec namespace (any `ksx*` interface, a
    /// registered one or not) is forwarded out of no interface but a connected tunnel, only as
    /// IPv4, and DNS only to the tunnel's resolvers; it never reaches this host's own services.
    #[test]
    fn an_exec_namespace_never_leaves_outside_the_tunnel(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (scopes, from) in exec_scopes(),
        p in exec_packet(),
        to_host in any::<bool>(),
    ) {
        let exceptions = Exceptions { exec_scopes: scopes, ..exceptions };
        let rules = compile_for(&state, &settings, &exceptions);
        prop_assert!(rules.check().is_ok(), "{:?}", rules.check());
        let mut p = Packet { iif: Some(from), ..p };
        if to_host {
            p = Packet { hook: Hook::Input, oif: None, ..p };
        }
        let verdict = rules.verdict(&p);
        if verdict.is_accept() {
            prop_assert!(!to_host, "{state:?} let an exec namespace reach this host: {p:?}");
            let tunnel = carrying_tunnel(&state).expect("accepted only with a connected tunnel");
            prop_assert_eq!(p.oif.as_ref(), Some(&tunnel.interface), "{:?} accepted {:?}", state, p);
            prop_assert!(p.src.is_ipv4() && p.dst.is_ipv4(), "{:?}", p);
            if dns_dport(&p) {
                prop_assert!(tunnel.dns.contains(&p.dst), "{:?}", p);
            }
        }
    }

    /// Nothing enters an exec namespace but the replies of its flows through the connected
    /// tunnel, whatever the state.
    #[test]
    fn nothing_enters_an_exec_namespace_but_the_tunnels_replies(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (scopes, to) in exec_scopes(),
        p in exec_packet(),
    ) {
        let exceptions = Exceptions { exec_scopes: scopes, ..exceptions };
        prop_assume!(p.iif.as_ref().is_some_and(|i| !i.as_str().starts_with("ksx")));
        let p = Packet { oif: Some(to), ..p };
        if compile_for(&state, &settings, &exceptions).verdict(&p).is_accept() {
            let tunnel = carrying_tunnel(&state).expect("accepted only with a connected tunnel");
            prop_assert_eq!(p.iif.as_ref(), Some(&tunnel.interface));
            prop_assert!(matches!(p.conn, ConnState::Established | ConnState::Related), "{:?}", p);
        }
    }

    /// The routing layer sends each exec namespace's packets, in every state, to the kill
    /// switch's table ahead of every other rule, and that table routes its subnet back to it.
    #[test]
    fn exec_namespaces_are_routed_into_the_tunnel_or_nowhere(
        state in any_state(),
        settings in settings(),
        exceptions in exceptions(),
        (scopes, _) in exec_scopes(),
    ) {
        use killswitch_policy::routes::{self, Selector, TableRoute};
        let exceptions = Exceptions { exec_scopes: scopes.clone(), ..exceptions };
        let layer = routes::compile_routes_for(&state, &settings, &exceptions, &[]).expect("a layer with exec namespaces");
        for scope in &scopes {
            for family in [killswitch_policy::IpFamily::V4, killswitch_policy::IpFamily::V6] {
                let ours = layer.rules.iter().find(|r| r.family == family && !r.invert && r.selector == Selector::InInterface(scope.interface.clone()));
                let ours = ours.expect("a rule for the namespace");
                prop_assert_eq!(ours.table, routes::ROUTE_TABLE);
                prop_assert!(layer.rules.iter().filter(|r| r.family == family && !matches!(r.selector, Selector::InInterface(_))).all(|r| r.priority > ours.priority));
                prop_assert!(layer.routes.contains(&TableRoute::Unreachable(family)));
            }
            prop_assert!(layer.routes.contains(&TableRoute::Link(IpNet::V4(scope.subnet), scope.interface.clone())));
        }
    }
}

/// Without exec namespaces, nothing of them is compiled: every earlier state's rules (and their
/// snapshots) stay as they were.
#[test]
fn no_exec_namespace_no_exec_rules() {
    let rules = compile(&PolicyState::Off, &Settings::default());
    assert!(rules.table.is_none());
    let scope = killswitch_policy::ExecScope {
        interface: InterfaceName::new("ksx0").expect("literal"),
        subnet: "10.201.0.0/30".parse().expect("literal"),
    };
    let exceptions = Exceptions {
        exec_scopes: vec![scope],
        ..Exceptions::default()
    };
    let off = compile_for(&PolicyState::Off, &Settings::default(), &exceptions);
    let text = off.to_string();
    assert!(
        text.contains("type nat hook postrouting priority 100"),
        "{text}"
    );
    assert!(
        text.contains("iifname \"ksx*\" jump refuse-non-tunnel"),
        "{text}"
    );
    // The scopes-only table takes nothing from anyone else.
    for chain in &off.table.as_ref().expect("a table").chains {
        if let Some(base) = chain.base {
            assert_eq!(base.policy, ChainPolicy::Accept, "{}", chain.name);
        }
    }
    let other = Packet::forward(
        "eth1",
        "eth0",
        "192.0.2.1".parse().expect("literal"),
        "198.51.100.1".parse().expect("literal"),
        Transport::tcp(1000, 443),
    );
    assert!(off.verdict(&other).is_accept());
}
