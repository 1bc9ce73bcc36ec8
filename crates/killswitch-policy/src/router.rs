//! Router mode (issue 17): this machine is the gateway of one or more LANs, and their clients'
//! forwarded traffic leaves through the tunnel or not at all, in every state.
//!
//! Each router LAN interface `L` (matched by exact name, `iifname "lan0"`: unlike `exec`'s
//! `ksx*`, these are the administrator's interfaces, and a prefix could take in one that is not
//! a LAN) comes with the networks of its addresses, `N` (the clients' subnets). The rules, like
//! [`crate::exec`]'s, are scopes: present in every state, in the machine-wide table ahead of the
//! machine's own rules, and in the scopes-only table where the machine has none (off, unlocked
//! disconnected, apps-only):
//!
//! - **prerouting** (`router-prerouting`, filter, priority -150: after conntrack, -200, so the
//!   flow's mark can be set; before `dstnat`, -100, so a spoofed packet is never translated):
//!   a packet from `L` passes only with a source the LAN can really have. IPv4: inside `N`, or
//!   `0.0.0.0` for DHCP alone (UDP 68 to 67: a client asking for an address has none; nothing
//!   else legitimately comes from `0.0.0.0`). IPv6: inside `N`, link-local (`fe80::/10`: NDP,
//!   DHCPv6, router solicitations; the kernel never forwards a link-local source), or the
//!   unspecified `::` for ICMPv6 alone (duplicate address detection, RFC 4862 5.4.2, and MLD
//!   reports, RFC 3810 5.2.13, are sent before the host has an address). Everything else from
//!   `L` is dropped silently and counted as inbound: a reject would be sent to an address that
//!   did not ask. Every packet that passes marks its flow with [`CT_MARK_ROUTER`], so that the
//!   daemon can delete the LAN's conntrack entries (and NAT bindings) when the tunnel or its
//!   endpoint changes; and DNS of a family with no resolver to send it to is refused there and
//!   then (a TCP reset or ICMP at once, never a timeout), and so is any packet of a family no
//!   connected tunnel carries unless it is for this host (`fib daddr type local`, broadcast or
//!   multicast): the routing layer's `unreachable` would stop it too, but the kernel
//!   rate-limits its ICMP answers, and clients would wait for timeouts.
//! - **`dstnat`** (`router-dnat`, nat, priority -100): every DNS packet from `L` (53 and 853, UDP
//!   and TCP, to ANY address, this machine's own included) goes to the connected tunnel's first
//!   resolver of its family, same port. No forwarder process: the kernel does it, so it keeps
//!   working while the daemon is frozen, and there is no resolver of ours to attack. DNS over
//!   TLS (853) is redirected too: a client that validates its resolver's certificate (strict
//!   DoT) will fail to, and so fail closed, rather than reach its resolver outside the tunnel.
//! - **forward**, ahead of every other forward rule: from `L`, nothing to the VPN server's
//!   addresses (see "port shadowing" below); DNS only to the tunnel's resolvers through the
//!   tunnel; IPv4 into the tunnel (IPv6 only when the tunnel carries it); everything else refused
//!   (ICMP administratively prohibited, or a TCP reset), so the LAN's clients fail fast. To `L`,
//!   only the tunnel's replies. TCP segments between `L` and the tunnel get their MSS clamped to
//!   the route's MTU: a client on a 1500-byte LAN would otherwise announce an MSS the tunnel
//!   cannot carry, and black-hole its large segments wherever ICMP "fragmentation needed" is
//!   filtered.
//! - **`srcnat`** (`router-nat`): from `L` out of the tunnel, masqueraded (IPv6 too when the
//!   tunnel carries it): the VPN server accepts only the tunnel's own addresses.
//! - **input/output** on `L` (machine-wide table only; the scopes-only table accepts the
//!   machine's own traffic anyway): from `L`, accepted (DHCP, NDP, SSH to the router; DNS never
//!   arrives, it was translated or refused); to `L`, only `N`, `255.255.255.255`, multicast,
//!   `fe80::/10` and `ff00::/8`: the router's own talk with its LAN, never a way out through it.
//!
//! The routing layer ([`crate::routes`]) adds `iif L lookup 27507` beside `exec`'s, in every
//! state, and `N dev L` routes to table 27507: whatever `main` says (a default route via the WAN,
//! a route pushed by a hostile DHCP server on the WAN: TunnelVision), the LAN's packets find the
//! tunnel or `unreachable`, and replies to the LAN find the LAN.
//!
//! **Port shadowing** (CVE-2021-3773): a client behind a NAT sends from the port the gateway's
//! own VPN socket uses, to the VPN server, so that the gateway's NAT either maps the client's flow
//! onto the tunnel's 4-tuple or the tunnel's replies onto the client. Here no packet from `L` ever
//! leaves by the WAN (the forward rules accept only the tunnel as the way out, the routing layer
//! has no route out of the WAN for them), so no LAN flow can share a NAT mapping with the router's
//! own WireGuard socket, whose packets leave by the WAN unmasqueraded. On top of that, a packet
//! from `L` to any of the VPN server's addresses is refused outright, whatever the state, so that
//! not even a flow through the tunnel to the server's address (masqueraded as the tunnel's
//! address, a different tuple) is ever created. `masquerade random` would only randomise
//! mappings made on the tunnel's interface, which no attacker can align with the WAN socket's: it
//! is not needed, and port-preserving masquerade keeps what some protocols rely on.
//!
//! What this does not do: serve DNS, DHCP or router advertisements to the LAN (the
//! administrator's dnsmasq or radvd does; forwarding decides where packets go whatever they
//! announce), or enable `net.ipv4.ip_forward` (the administrator's; the daemon enables
//! forwarding per LAN interface).

use crate::compile::{DNS_PORTS, DNS_PROTOS, Tunnel, host, on, refuse};
use crate::exceptions::LocalLink;
use crate::ruleset::{
    AddressType, BaseChain, Chain, ChainPolicy, CtStates, Hook, IpFamily, L4Proto, Match, Rule,
    Statement, Verdict,
};
use ipnet::IpNet;
use killswitch_types::{BlockReason, InterfaceName};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The bit of the conntrack mark set on every flow that arrived from a router LAN interface, so
/// that the daemon can remove those flows' conntrack entries (and their NAT bindings) when the
/// tunnel or its endpoint changes, and no LAN flow sticks to a path it can no longer take. One
/// bit, set with a read-modify-write, beside [`crate::CT_MARK_INBOUND`].
pub const CT_MARK_ROUTER: u32 = 0x0400_0000;

/// The filter chain on prerouting that drops the LANs' spoofed packets and marks their flows.
pub const ROUTER_PREROUTING_CHAIN: &str = "router-prerouting";
/// The regular chain every packet from a LAN with a source it may have goes through.
pub const ROUTER_ACCEPTED_CHAIN: &str = "router-accepted";
/// The `nat` chain on prerouting that sends the LANs' DNS to the tunnel's resolver.
pub const ROUTER_DNAT_CHAIN: &str = "router-dnat";
/// The `nat` chain on postrouting that masquerades the LANs out of the tunnel.
pub const ROUTER_NAT_CHAIN: &str = "router-nat";

/// `router-prerouting`'s priority: nftables' `mangle` (-150), between conntrack (-200), which
/// must have found the flow whose mark is set, and `dstnat` (-100), which must never translate
/// a spoofed packet.
pub const PRIORITY_ROUTER_PREROUTING: i32 = -150;
/// nftables' `dstnat` priority.
pub const PRIORITY_DSTNAT: i32 = -100;
/// nftables' `srcnat` priority.
const PRIORITY_SRCNAT: i32 = 100;

/// Where the LANs' DNS goes: the tunnel's first usable resolver of each family, if a tunnel
/// carries traffic and has one. A family without a target gets its DNS refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DnsTargets {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl DnsTargets {
    /// The resolvers of `tunnel` (connected) that the LANs' DNS is translated to.
    /// [`Tunnel::usable_dns`] keeps only resolvers of families the tunnel carries.
    pub(crate) fn of(tunnel: Option<&Tunnel>) -> Self {
        let usable = tunnel.map(Tunnel::usable_dns).unwrap_or_default();
        DnsTargets {
            v4: usable.iter().find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            }),
            v6: usable.iter().find_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            }),
        }
    }

    fn for_family(self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => self.v4.map(IpAddr::V4),
            IpFamily::V6 => self.v6.map(IpAddr::V6),
        }
    }
}

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

/// The LAN interfaces, each once, in name order (the rules must not depend on the order in which
/// the administrator added them).
fn interfaces(lans: &[LocalLink]) -> Vec<&LocalLink> {
    let mut lans: Vec<&LocalLink> = lans.iter().collect();
    lans.sort_by(|a, b| a.interface.cmp(&b.interface));
    lans.dedup_by(|a, b| a.interface == b.interface);
    lans
}

/// A LAN's networks as the rules name them: each once, in canonical form.
fn networks(lan: &LocalLink) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = lan.networks.iter().map(IpNet::trunc).collect();
    nets.sort();
    nets.dedup();
    nets
}

/// The prerouting filter chain: per LAN, the sources it may have jump to
/// [`ROUTER_ACCEPTED_CHAIN`] (which always accepts), and whatever else arrives on it is dropped.
pub(crate) fn prerouting_chain(lans: &[LocalLink]) -> Chain {
    let mut rules = Vec::new();
    let accepted = || Verdict::Jump(ROUTER_ACCEPTED_CHAIN.to_owned());
    for lan in interfaces(lans) {
        let from = || on().iif(&lan.interface);
        for net in networks(lan) {
            rules.push(from().src(net).verdict(accepted(), "router: from the lan"));
        }
        // DHCP DISCOVER/REQUEST from a client that has no address yet (RFC 2131 4.1).
        rules.push(
            from()
                .src(host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
                .proto(L4Proto::Udp)
                .sport(68)
                .dport(67)
                .verdict(accepted(), "router: dhcp from a client without an address"),
        );
        rules.push(
            from()
                .src(crate::ranges::LINK_LOCAL_V6)
                .verdict(accepted(), "router: ipv6 link-local"),
        );
        // Duplicate address detection and MLD reports, before the host has an address.
        rules.push(
            from()
                .src(host(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
                .proto(L4Proto::Icmpv6)
                .verdict(accepted(), "router: icmpv6 from a host without an address"),
        );
        rules.push(
            from()
                .set(Statement::Count(BlockReason::Inbound))
                .verdict(Verdict::Drop, "router: spoofed source"),
        );
    }
    Chain {
        name: ROUTER_PREROUTING_CHAIN.to_owned(),
        base: Some(BaseChain {
            hook: Hook::Prerouting,
            priority: PRIORITY_ROUTER_PREROUTING,
            policy: ChainPolicy::Accept,
        }),
        rules,
    }
}

/// The regular chain a LAN's packet with a genuine source goes through: its flow marked, its DNS
/// refused when there is no resolver to translate it to, a packet to be forwarded refused when
/// no tunnel carries its family, then accepted (by this chain only: the other base chains still
/// decide).
pub(crate) fn accepted_chain(tunnel: Option<&Tunnel>) -> Chain {
    let targets = DnsTargets::of(tunnel);
    let mut rules = vec![
        on().set(Statement::SetCtMarkBit(CT_MARK_ROUTER))
            .verdict(Verdict::Continue, "router: mark the lan's flow"),
    ];
    for family in FAMILIES {
        if targets.for_family(family).is_some() {
            continue;
        }
        for proto in DNS_PROTOS {
            for port in DNS_PORTS {
                rules.push(on().family(family).proto(proto).dport(port).verdict(
                    refuse(BlockReason::Dns),
                    "router: no resolver to send dns to",
                ));
            }
        }
    }
    // Without a tunnel carrying a family, its packets that would be forwarded are refused here,
    // at once: their route is `unreachable` (the routing layer), which stops them too, but the
    // kernel rate-limits its ICMP answer to that, and the LAN's clients would wait for timeouts
    // instead of failing fast. What is for this host (DHCP, NDP, SSH) passes: `fib daddr type`
    // tells it apart before the routing decision.
    let carried = tunnel.map(Tunnel::carried_families).unwrap_or_default();
    for family in FAMILIES {
        if carried.contains(&family) {
            continue;
        }
        // (IPv6 has no broadcast.)
        let kinds: &[AddressType] = match family {
            IpFamily::V4 => &[
                AddressType::Local,
                AddressType::Broadcast,
                AddressType::Multicast,
            ],
            IpFamily::V6 => &[AddressType::Local, AddressType::Multicast],
        };
        for kind in kinds.iter().copied() {
            rules.push(
                on().family(family)
                    .with(Match::DestinationType(kind))
                    .accept("router: to this host"),
            );
        }
        let reason = match family {
            IpFamily::V4 => BlockReason::NonTunnel,
            IpFamily::V6 => BlockReason::Ipv6,
        };
        rules.push(
            on().family(family)
                .verdict(refuse(reason), "router: no tunnel to forward by"),
        );
    }
    rules.push(on().accept("router: a genuine lan source"));
    Chain {
        name: ROUTER_ACCEPTED_CHAIN.to_owned(),
        base: None,
        rules,
    }
}

/// The `dstnat` chain: every DNS packet from a LAN to the tunnel's resolver of its family (empty
/// without one: the DNS was refused in prerouting).
pub(crate) fn dnat_chain(lans: &[LocalLink], tunnel: Option<&Tunnel>) -> Chain {
    let targets = DnsTargets::of(tunnel);
    let mut rules = Vec::new();
    for lan in interfaces(lans) {
        for family in FAMILIES {
            let Some(target) = targets.for_family(family) else {
                continue;
            };
            for proto in DNS_PROTOS {
                for port in DNS_PORTS {
                    rules.push(
                        on().iif(&lan.interface)
                            .family(family)
                            .proto(proto)
                            .dport(port)
                            .set(Statement::Dnat(target))
                            .verdict(Verdict::Continue, "router: dns to the tunnel's resolver"),
                    );
                }
            }
        }
    }
    Chain {
        name: ROUTER_DNAT_CHAIN.to_owned(),
        base: Some(BaseChain {
            hook: Hook::PreroutingNat,
            priority: PRIORITY_DSTNAT,
            policy: ChainPolicy::Accept,
        }),
        rules,
    }
}

/// The forward rules of the LANs, ahead of every other forward rule (exec's included). With
/// `tunnel` (connected) the LANs' traffic goes into it; `endpoints` are the VPN server's
/// addresses, which nothing from a LAN may reach (port shadowing, see the module docs).
pub(crate) fn forward_rules(
    lans: &[LocalLink],
    tunnel: Option<&Tunnel>,
    endpoints: &[IpAddr],
) -> Vec<Rule> {
    let mut endpoints = endpoints.to_vec();
    endpoints.sort();
    endpoints.dedup();
    let families = tunnel.map(Tunnel::carried_families).unwrap_or_default();
    let carrying = tunnel.filter(|_| !families.is_empty());
    let mut rules = Vec::new();
    for lan in interfaces(lans) {
        let lan = &lan.interface;
        if let Some(tunnel) = carrying {
            // First: an accept below ends the chain, and the clamp must have been applied.
            for (from, to) in [(lan, &tunnel.interface), (&tunnel.interface, lan)] {
                rules.push(
                    on().iif(from)
                        .oif(to)
                        .proto(L4Proto::Tcp)
                        .set(Statement::ClampMssToRoute)
                        .verdict(Verdict::Continue, "router: mss to the tunnel's mtu"),
                );
            }
        }
        let from = || on().iif(lan);
        for endpoint in &endpoints {
            rules.push(from().dst(host(*endpoint)).verdict(
                refuse(BlockReason::NonTunnel),
                "router: never to the vpn server",
            ));
        }
        if let Some(tunnel) = carrying {
            for server in tunnel.usable_dns() {
                for proto in DNS_PROTOS {
                    for port in DNS_PORTS {
                        rules.push(
                            from()
                                .oif(&tunnel.interface)
                                .dst(host(server))
                                .proto(proto)
                                .dport(port)
                                .accept("router: dns to the tunnel's resolver"),
                        );
                    }
                }
            }
        }
        for proto in DNS_PROTOS {
            for port in DNS_PORTS {
                rules.push(
                    from()
                        .proto(proto)
                        .dport(port)
                        .verdict(refuse(BlockReason::Dns), "router: dns outside the tunnel"),
                );
            }
        }
        if let Some(tunnel) = carrying {
            for family in &families {
                rules.push(
                    from()
                        .oif(&tunnel.interface)
                        .family(*family)
                        .accept("router: through the tunnel"),
                );
            }
        }
        rules.push(from().family(IpFamily::V6).verdict(
            refuse(BlockReason::Ipv6),
            "router: ipv6 only through a tunnel carrying it",
        ));
        rules.push(from().verdict(
            refuse(BlockReason::NonTunnel),
            "router: only through the tunnel",
        ));
        let to = || on().oif(lan);
        if let Some(tunnel) = carrying {
            rules.push(
                to().iif(&tunnel.interface)
                    .ct(CtStates::ESTABLISHED_RELATED)
                    .accept("router: replies from the tunnel"),
            );
        }
        rules.push(to().verdict(
            refuse(BlockReason::Inbound),
            "router: nothing else into the lan",
        ));
    }
    rules
}

/// The `srcnat` chain: the LANs masqueraded out of the tunnel, for the families it carries
/// (empty otherwise: the chain's presence does not depend on the tunnel).
pub(crate) fn nat_chain(lans: &[LocalLink], tunnel: Option<&Tunnel>) -> Chain {
    let mut rules = Vec::new();
    if let Some(tunnel) = tunnel {
        let families = tunnel.carried_families();
        for lan in interfaces(lans) {
            for family in &families {
                rules.push(
                    on().iif(&lan.interface)
                        .oif(&tunnel.interface)
                        .family(*family)
                        .set(Statement::Masquerade)
                        .verdict(Verdict::Continue, "router: out of the tunnel as the tunnel"),
                );
            }
        }
    }
    Chain {
        name: ROUTER_NAT_CHAIN.to_owned(),
        base: Some(BaseChain {
            hook: Hook::Postrouting,
            priority: PRIORITY_SRCNAT,
            policy: ChainPolicy::Accept,
        }),
        rules,
    }
}

/// The input rules (machine-wide table): the LAN's own talk with this host. Spoofed sources were
/// dropped in prerouting and DNS translated or refused there, so what arrives is the LAN's.
pub(crate) fn input_rules(lans: &[LocalLink]) -> Vec<Rule> {
    interfaces(lans)
        .into_iter()
        .map(|lan| {
            on().iif(&lan.interface)
                .accept("router: the lan's talk with this host")
        })
        .collect()
}

/// The output rules (machine-wide table): to a LAN, only its own networks, the limited
/// broadcast and link-scoped or multicast groups. Never a public address: the LAN is not a way
/// out for this host.
pub(crate) fn output_rules(lans: &[LocalLink]) -> Vec<Rule> {
    // 224.0.0.0/4, 255.255.255.255 and ff00::/8, and IPv6 link-local.
    let groups: Vec<IpNet> = crate::ranges::LAN_GROUP
        .iter()
        .copied()
        .chain([crate::ranges::LINK_LOCAL_V6])
        .collect();
    let mut rules = Vec::new();
    for lan in interfaces(lans) {
        for net in networks(lan).into_iter().chain(groups.iter().copied()) {
            rules.push(
                on().oif(&lan.interface)
                    .dst(net)
                    .accept("router: this host to its lan"),
            );
        }
    }
    rules
}

/// The reasons the router rules refuse for: the refuse chains they jump to.
pub(crate) const REFUSE_REASONS: [BlockReason; 4] = BlockReason::ALL;

/// The chains besides the forward rules, in the order both tables list them.
pub(crate) fn chains(lans: &[LocalLink], tunnel: Option<&Tunnel>) -> Vec<Chain> {
    vec![
        prerouting_chain(lans),
        accepted_chain(tunnel),
        dnat_chain(lans, tunnel),
        nat_chain(lans, tunnel),
    ]
}

/// The LAN interfaces' names, each once (for the routing layer).
pub(crate) fn interface_names(lans: &[LocalLink]) -> Vec<&InterfaceName> {
    interfaces(lans).into_iter().map(|l| &l.interface).collect()
}

/// The networks routed to each LAN in table 27507: not link-local ones (every link has its own
/// fe80::/64; the main table routes them), each once.
pub(crate) fn routed_networks(lans: &[LocalLink]) -> Vec<(IpNet, &InterfaceName)> {
    let mut routes: Vec<(IpNet, &InterfaceName)> = Vec::new();
    for lan in interfaces(lans) {
        for net in networks(lan) {
            let link_local = crate::ranges::LINK_LOCAL_V6.contains(&net.network())
                || crate::ranges::LAN_UNICAST[3].contains(&net.network());
            if link_local || routes.iter().any(|(n, _)| *n == net) {
                continue;
            }
            routes.push((net, &lan.interface));
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> InterfaceName {
        InterfaceName::new(n).expect("literal")
    }

    fn tunnel(addresses: &[&str], dns: &[&str]) -> Tunnel {
        Tunnel {
            interface: name("wg0"),
            addresses: addresses
                .iter()
                .map(|a| a.parse().expect("literal"))
                .collect(),
            dns: dns.iter().map(|a| a.parse().expect("literal")).collect(),
        }
    }

    #[test]
    fn dns_goes_to_the_first_usable_resolver_of_each_family() {
        let v4_only = tunnel(&["10.64.0.2"], &["fc00::1", "10.64.0.9", "10.64.0.1"]);
        let targets = DnsTargets::of(Some(&v4_only));
        assert_eq!(targets.v4, Some(Ipv4Addr::new(10, 64, 0, 9)));
        assert_eq!(
            targets.v6, None,
            "a v6 resolver behind a v4-only tunnel is no target"
        );
        let dual = tunnel(&["10.64.0.2", "fc00::2"], &["fc00::1", "10.64.0.1"]);
        let targets = DnsTargets::of(Some(&dual));
        assert_eq!(targets.v6, Some("fc00::1".parse().expect("literal")));
        assert_eq!(DnsTargets::of(None), DnsTargets::default());
    }

    #[test]
    fn a_lan_known_by_name_only_passes_only_dhcp_and_link_local() {
        let chain = prerouting_chain(&[LocalLink::named(name("lan0"))]);
        let comments: Vec<&str> = chain.rules.iter().map(|r| r.comment).collect();
        assert_eq!(
            comments,
            [
                "router: dhcp from a client without an address",
                "router: ipv6 link-local",
                "router: icmpv6 from a host without an address",
                "router: spoofed source",
            ]
        );
        assert_eq!(chain.rules.last().map(|r| &r.verdict), Some(&Verdict::Drop));
    }

    #[test]
    fn lans_are_named_once_in_order_and_link_local_networks_are_not_routed() {
        let lan = |n: &str, nets: &[&str]| LocalLink {
            interface: name(n),
            networks: nets.iter().map(|a| a.parse().expect("literal")).collect(),
        };
        let lans = [
            lan("lan1", &["192.168.51.1/24"]),
            lan("lan0", &["192.168.50.1/24", "fe80::1/64", "169.254.1.1/16"]),
            lan("lan1", &["192.168.51.1/24"]),
        ];
        let names: Vec<&str> = interface_names(&lans).iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["lan0", "lan1"]);
        let routed: Vec<String> = routed_networks(&lans)
            .iter()
            .map(|(net, dev)| format!("{net} dev {dev}"))
            .collect();
        assert_eq!(
            routed,
            ["192.168.50.0/24 dev lan0", "192.168.51.0/24 dev lan1"]
        );
    }

    #[test]
    fn without_a_tunnel_nothing_is_translated_or_masqueraded() {
        let lans = [LocalLink::named(name("lan0"))];
        assert!(dnat_chain(&lans, None).rules.is_empty());
        assert!(nat_chain(&lans, None).rules.is_empty());
        let forward = forward_rules(&lans, None, &[]);
        assert!(forward.iter().all(|r| r.verdict != Verdict::Accept));
        // A tunnel with only a link-local address carries nothing either.
        let idle = tunnel(&["fe80::2"], &["10.64.0.1"]);
        let forward = forward_rules(&lans, Some(&idle), &[]);
        assert!(forward.iter().all(|r| r.verdict != Verdict::Accept));
    }
}
