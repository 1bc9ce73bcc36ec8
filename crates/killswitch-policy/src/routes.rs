//! The second layer: policy routing that needs no nftables.
//!
//! Whenever the kill switch installs a table, it also installs policy rules and one routing table
//! of its own, for IPv4 and IPv6 (with tunnel-only users or exec namespaces, in `off` and
//! unlocked `disconnected` too, then only their rules, `unreachable` and the namespaces' subnets):
//!
//! | priority | rule | why |
//! |---|---|---|
//! | 5297 | `iif ksxN lookup 27507`, per `killswitch exec` namespace, in every state | its forwarded packets: into the tunnel or nowhere |
//! | 5297 | `iif L lookup 27507`, per router LAN interface, in every state | its clients' packets: into the tunnel or nowhere |
//! | 5299 | `uidrange N-N lookup 27507`, per tunnel-only user, in every state | their packets: into the tunnel or nowhere |
//! | 5300 | `to <inside the tunnel> lookup 27507`, only with allow-lan | the tunnel's resolvers and networks, ahead of the LAN |
//! | 5300 | `from <the tunnel's address> lookup 27507`, only with `allow_inbound` | a reply from the tunnel's address stays in the tunnel |
//! | 5301 | `to <LAN range> lookup main`, only with allow-lan | the LAN, by the normal routes |
//! | 5301 | `to <subnet> lookup main`, per `allow_subnets` entry | an allowed subnet, by the normal routes |
//! | 5301 | `ipproto P sport N lookup main`, per `allow_inbound` service | its replies leave where the connection came from |
//! | 5301 | `to <endpoint> ipproto P dport N lookup main`, per endpoint, only for several endpoints of one family and neither fwmark nor uid | the tunnel's own packets, which one inverted rule cannot list |
//! | 5302 | `not <the tunnel's own packets> lookup 27507` | everything else: our table |
//!
//! With apps-only on, none of that applies to the machine: only the scopes' rules (5299), the
//! tunnel's resolvers (5300, for the daemon's probes) and the table (see `scopes_layer`).
//!
//! The tunnel's own packets are recognised by the fwmark its socket sets, else by its socket's
//! owner, else (less precisely) by their destination, the endpoint; with no tunnel wanted, the rule
//! takes every packet. The rule is inverted (as wg-quick's is) rather than preceded by an exemption
//! that looks up `main`: when `main` has no route (the link is down), an exempted packet would fall
//! through to the next rule, ours, and the tunnel's own packets would be routed into the tunnel.
//! The exception is a guarded tunnel with several servers of one family and no fwmark or uid to
//! recognise its packets by: one rule cannot say "none of these", so each server gets an exemption;
//! with the link down its packets end in our table (a loop into the tunnel, not a leak).
//!
//! Table 27507 (`0x6b73`, "ks") holds `default dev <tunnel>` while connected (for the families the
//! tunnel carries), the networks of local bridges and allowed interfaces (`172.17.0.0/16 dev
//! docker0`) and, always, `unreachable default` behind them. So whatever the main table says
//! (a default route via the physical gateway, a route pushed by a hostile DHCP server), packets that
//! are not the tunnel's own can only go into the tunnel or nowhere. If the nftables table is flushed
//! or deleted, this layer still stops them while the daemon restores it; if the tunnel interface
//! disappears, the kernel removes its route and `unreachable` is what is left.
//!
//! Destinations inside the tunnel are often private addresses (a resolver at 10.64.0.1, the
//! tunnel's own network): with allow-lan, the LAN rules would send them to `main`, which routes
//! them out of the physical interface in clear, and the daemon's probe with them, so a tunnel
//! under `up` never stays connected. The rules at 5300 send them to our table first: the tunnel's
//! resolvers, the resolver the daemon probes while connecting, and the networks of the tunnel's
//! own addresses as its configuration gives them (`Address = 10.64.0.2/16`; [`compile_routes_with`]).
//! A network that holds the VPN server's own address is left out: the tunnel's own packets must
//! never be routed into the tunnel.
//!
//! What it does not do: filter by port, protocol or direction (nftables does), or apply to
//! forwarded traffic's input side. Loopback and local addresses are unaffected (the `local` table
//! is consulted first, at priority 0), as is link-scoped multicast such as neighbour discovery.

use crate::compile::{Peer, PolicyState};
use crate::exceptions::Exceptions;
use crate::ranges;
use crate::ruleset::{IpFamily, L4Proto};
use ipnet::IpNet;
use killswitch_types::{InterfaceName, Settings, TransportProtocol};
use std::net::IpAddr;

/// The kill switch's routing table.
pub const ROUTE_TABLE: u32 = 0x6b73;
/// The main routing table.
pub const MAIN_TABLE: u32 = 254;
/// Priority of the destinations inside the tunnel, ahead of the LAN exemptions.
pub const PRIORITY_TUNNEL: u32 = 5300;
/// Priority of the LAN exemptions.
pub const PRIORITY_LAN: u32 = 5301;
/// Priority of the catch-all into [`ROUTE_TABLE`].
pub const PRIORITY_CATCH_ALL: u32 = 5302;
/// Every priority the kill switch uses. Other programs may have rules there too: the backend tells
/// its own apart by the protocol value it marks them with, and touches no other.
pub const PRIORITIES: [u32; 6] = [
    PRIORITY_EXEC,
    crate::bypass::PRIORITY_BYPASS,
    PRIORITY_TUNNEL_ONLY_USERS,
    PRIORITY_TUNNEL,
    PRIORITY_LAN,
    PRIORITY_CATCH_ALL,
];
/// Priority of the tunnel-only users' rules (`uidrange N-N lookup 27507`), ahead of every
/// exemption to `main`: a LAN range, an allowed subnet or an inbound service's port never routes
/// their packets out of the physical interface.
pub const PRIORITY_TUNNEL_ONLY_USERS: u32 = 5299;

/// Priority of the `killswitch exec` namespaces' rules (`iif ksxN lookup 27507`), ahead of every
/// other: their packets find the tunnel or `unreachable`, in every state.
pub const PRIORITY_EXEC: u32 = 5297;

/// The routing layer for one state: rules and the routes of [`ROUTE_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingLayer {
    /// `ip rule`s, by priority.
    pub rules: Vec<RoutingRule>,
    /// Routes in [`ROUTE_TABLE`].
    pub routes: Vec<TableRoute>,
}

/// One `ip rule`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutingRule {
    /// IPv4 or IPv6.
    pub family: IpFamily,
    /// Its priority.
    pub priority: u32,
    /// What it matches.
    pub selector: Selector,
    /// Whether it applies to packets the selector does *not* match (`ip rule add not ...`).
    pub invert: bool,
    /// The table it looks up.
    pub table: u32,
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every packet.
    All,
    /// Packets with this fwmark.
    FwMark(u32),
    /// Packets from sockets of this uid.
    Uid(u32),
    /// Packets to this network.
    To(IpNet),
    /// Packets to exactly this address, protocol and port.
    Endpoint {
        /// The address.
        address: IpAddr,
        /// The protocol.
        protocol: L4Proto,
        /// The destination port.
        port: u16,
    },
    /// Packets from this local port and protocol (`ipproto tcp sport 22`): the replies of an
    /// allowed inbound service.
    SourcePort {
        /// The protocol.
        protocol: L4Proto,
        /// The source port.
        port: u16,
    },
    /// Packets from this network (`from 10.64.0.2`).
    From(IpNet),
    /// Packets arriving on this interface (`iif ksx0`): an exec namespace's.
    InInterface(InterfaceName),
}

/// A route in [`ROUTE_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TableRoute {
    /// `unreachable default` (lowest preference): where everything ends that the tunnel does not take.
    Unreachable(IpFamily),
    /// `default dev <interface>`: into the tunnel.
    Tunnel(IpFamily, InterfaceName),
    /// `<address> dev <interface>`: the daemon's probe into a tunnel that is not up yet.
    Host(IpAddr, InterfaceName),
    /// `<network> dev <interface> scope link`: a local bridge's or an allowed interface's own
    /// network, reached directly rather than through the tunnel.
    Link(IpNet, InterfaceName),
}

/// The routing layer for `state`, or `None` where no table is installed either.
pub fn compile_routes(state: &PolicyState, settings: &Settings) -> Option<RoutingLayer> {
    compile_routes_with(state, settings, &[])
}

/// The routing layer for `state`, where `networks` are the networks of the tunnel's own addresses
/// as its configuration gives them (`Address = 10.64.0.2/16`: 10.64.0.0/16). Only a tunnel the
/// daemon runs itself has them; an interface's address alone (guard mode) says nothing of what lies
/// behind it. They count only while a tunnel (up or pending) is there, and only with allow-lan:
/// without it, the catch-all already sends them to our table.
pub fn compile_routes_with(
    state: &PolicyState,
    settings: &Settings,
    networks: &[IpNet],
) -> Option<RoutingLayer> {
    compile_routes_for(state, settings, &Exceptions::default(), networks)
}

/// [`compile_routes_with`], with `exceptions`:
///
/// - the networks of local bridges and allowed interfaces are routes of our table, to those
///   interfaces (a more specific route than the tunnel's default, and one the kernel removes by
///   itself when the interface goes, leaving `unreachable`);
/// - allowed subnets are looked up in `main` (at the LAN's priority), as allow-lan's ranges are;
/// - an allowed inbound service's replies (`ipproto tcp sport 22`) too, so that they leave by the
///   interface the connection came from; packets from the tunnel's own addresses stay in our table
///   ahead of that (a reply from the tunnel's address belongs in the tunnel).
///
/// The firewall decides which interface each may really use; this layer only routes.
pub fn compile_routes_for(
    state: &PolicyState,
    settings: &Settings,
    exceptions: &Exceptions,
    networks: &[IpNet],
) -> Option<RoutingLayer> {
    let families = [IpFamily::V4, IpFamily::V6];
    if settings.apps_only {
        return scopes_layer(state, exceptions);
    }
    let Some(crate::compile::Parts {
        peer,
        tunnel,
        pending,
        probe,
    }) = state.parts(settings)
    else {
        // `off` and unlocked `disconnected`: the scopes alone, as with apps-only (no tunnel is
        // known in these states, so their table holds only `unreachable`).
        return scopes_layer(state, exceptions);
    };
    let mut rules = exec_rules(exceptions);
    rules.extend(bypass_rules(exceptions));
    rules.extend(tunnel_only_rules(&exceptions.tunnel_only_uids));
    if settings.allow_lan || !exceptions.subnets.is_empty() {
        // Ahead of the LAN: whatever belongs to the tunnel goes to our table, where it finds the
        // tunnel (connected), the probe's route (connecting) or `unreachable`.
        let resolvers = tunnel
            .or(pending)
            .map(|t| t.dns.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(probe.map(|p| p.resolver))
            .map(IpNet::from);
        // A network of one address that the tunnel holds is local: the `local` table, ahead of
        // every rule, has it already.
        let own = tunnel.or(pending).map(|t| t.addresses.as_slice());
        let networks = networks.iter().filter(|n| {
            own.is_some_and(|own| {
                !(n.prefix_len() == n.max_prefix_len() && own.contains(&n.addr()))
            })
        });
        let inside = inside_the_tunnel(resolvers.chain(networks.copied()), peer);
        rules.extend(
            inside
                .into_iter()
                .map(|net| to(net, PRIORITY_TUNNEL, ROUTE_TABLE)),
        );
        if settings.allow_lan {
            rules.extend(
                ranges::LAN_UNICAST
                    .iter()
                    .chain(ranges::LAN_GROUP.iter())
                    .map(|net| to(*net, PRIORITY_LAN, MAIN_TABLE)),
            );
        }
    }
    let mut subnets: Vec<IpNet> = exceptions.subnets.iter().map(|s| s.subnet).collect();
    subnets.sort();
    subnets.dedup();
    rules.extend(
        subnets
            .into_iter()
            .map(|net| to(net, PRIORITY_LAN, MAIN_TABLE)),
    );
    if !exceptions.inbound.is_empty() {
        if let Some(identity) = tunnel.or(pending) {
            let mut own: Vec<IpAddr> = identity.addresses.clone();
            own.sort();
            own.dedup();
            rules.extend(own.into_iter().map(|address| {
                let net = IpNet::from(address);
                lookup(
                    IpFamily::of(&net),
                    PRIORITY_TUNNEL,
                    Selector::From(net),
                    ROUTE_TABLE,
                )
            }));
        }
        let mut services: Vec<(L4Proto, u16)> = exceptions
            .inbound
            .iter()
            .map(|i| (l4(i.protocol), i.port))
            .collect();
        services.sort_by_key(|(p, port)| (*p as u8, *port));
        services.dedup();
        for family in families {
            rules.extend(services.iter().map(|(protocol, port)| {
                let selector = Selector::SourcePort {
                    protocol: *protocol,
                    port: *port,
                };
                lookup(family, PRIORITY_LAN, selector, MAIN_TABLE)
            }));
        }
    }
    if let Some(peer) = peer {
        for family in families {
            rules.extend(endpoint_exits(peer, family));
        }
    }
    rules.extend(families.map(|family| {
        let own = peer.and_then(|p| tunnel_packets(p, family));
        RoutingRule {
            family,
            priority: PRIORITY_CATCH_ALL,
            invert: own.is_some(),
            selector: own.unwrap_or(Selector::All),
            table: ROUTE_TABLE,
        }
    }));
    let mut routes: Vec<TableRoute> = families.into_iter().map(TableRoute::Unreachable).collect();
    if let Some(probe) = probe {
        routes.push(TableRoute::Host(probe.resolver, probe.interface.clone()));
    }
    routes.extend(
        exceptions
            .routed_links()
            .into_iter()
            .map(|(net, interface)| TableRoute::Link(net, interface.clone())),
    );
    let extra = exec_routes(exceptions, &routes);
    routes.extend(extra);
    if let Some(tunnel) = tunnel {
        routes.extend(
            tunnel
                .carried_families()
                .into_iter()
                .map(|f| TableRoute::Tunnel(f, tunnel.interface.clone())),
        );
    }
    Some(RoutingLayer { rules, routes })
}

/// `uidrange N-N lookup 27507` for each tunnel-only uid and both families, at
/// [`PRIORITY_TUNNEL_ONLY_USERS`]: their packets find the tunnel's default route (connected) or
/// `unreachable`, whatever `main` says and even while the nftables table is gone for a moment.
/// The tunnel's own packets are not exempted here: the tunnel's program must not run as a
/// tunnel-only user.
fn tunnel_only_rules(uids: &[u32]) -> Vec<RoutingRule> {
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .flat_map(|family| {
            uids.iter().map(move |uid| {
                lookup(
                    family,
                    PRIORITY_TUNNEL_ONLY_USERS,
                    Selector::Uid(*uid),
                    ROUTE_TABLE,
                )
            })
        })
        .collect()
}

/// `iif ksxN lookup 27507` for each exec namespace and both families, at [`PRIORITY_EXEC`]: its
/// forwarded packets find the tunnel's default route (connected) or `unreachable`, whatever
/// `main` says. (IPv6 too, though the namespace has none: a rule costs nothing and leaves no gap.)
///
/// The router LANs get the same rule (`iif lan0 lookup 27507`), beside exec's: their clients'
/// packets find the tunnel or `unreachable`, never `main`'s default route via the WAN or a route a
/// hostile DHCP server pushed there (TunnelVision).
fn exec_rules(exceptions: &Exceptions) -> Vec<RoutingRule> {
    let mut interfaces: Vec<&InterfaceName> = exceptions
        .exec_scopes
        .iter()
        .map(|s| &s.interface)
        .chain(crate::router::interface_names(&exceptions.router_lans))
        .collect();
    interfaces.sort();
    interfaces.dedup();
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .flat_map(|family| {
            interfaces.iter().map(move |name| {
                lookup(
                    family,
                    PRIORITY_EXEC,
                    Selector::InInterface((*name).clone()),
                    ROUTE_TABLE,
                )
            })
        })
        .collect()
}

/// Each exec namespace's subnet, routed to its veth in our table: the tunnel's replies (their
/// destination restored by the masquerade's conntrack entry) look up our table too, and must find
/// the namespace rather than the tunnel's default route.
///
/// Likewise each router LAN's networks to the LAN (`192.168.50.0/24 dev lan0`): replies from the
/// tunnel to the LAN's clients, and this host's own packets to its LAN, look up our table too.
/// A network another route of the table already has (`taken`: a local bridge's, an allowed
/// interface's) is not added twice: the kernel refuses a second route to the same prefix.
fn exec_routes(exceptions: &Exceptions, taken: &[TableRoute]) -> Vec<TableRoute> {
    let mut routes: Vec<TableRoute> = exceptions
        .exec_scopes
        .iter()
        .map(|s| TableRoute::Link(IpNet::V4(s.subnet.trunc()), s.interface.clone()))
        .collect();
    for (net, interface) in crate::router::routed_networks(&exceptions.router_lans) {
        let present = taken
            .iter()
            .chain(&routes)
            .any(|r| matches!(r, TableRoute::Link(n, _) if *n == net));
        if !present {
            routes.push(TableRoute::Link(net, interface.clone()));
        }
    }
    routes
}

/// The layer of the scopes alone: with apps-only on, in every state, and in `off` and unlocked
/// `disconnected` (where the machine has no layer). Nothing routes the machine into the tunnel. Only
/// the scopes lead to [`ROUTE_TABLE`] (the tunnel-only users' `uidrange` rules at
/// [`PRIORITY_TUNNEL_ONLY_USERS`]; `killswitch exec`'s namespaces add their `iif` rules beside
/// them), where they find the tunnel's default route while it is connected and `unreachable`
/// behind it. The one other rule: the tunnel's resolvers (and the resolver the daemon probes
/// while connecting) are looked up in our table at [`PRIORITY_TUNNEL`]. They lie inside the
/// tunnel, and the daemon's own probes and health checks of an `up` tunnel go there unbound:
/// through `main` they would leave by the physical link in clear, reach nothing, and the tunnel
/// would be declared dead. The machine's own DNS does not go there (its resolv.conf is left
/// alone in apps-only). A layer even without scopes while a tunnel is wanted (its resolvers need
/// the route); `None` when there is neither.
fn scopes_layer(state: &PolicyState, exceptions: &Exceptions) -> Option<RoutingLayer> {
    let (peer, tunnel, identity, probe) = match state {
        PolicyState::Connected { peer, tunnel } => (Some(peer), Some(tunnel), Some(tunnel), None),
        PolicyState::Connecting {
            peer,
            probe,
            pending,
        } => (Some(peer), None, pending.as_ref(), probe.as_ref()),
        PolicyState::Off | PolicyState::Disconnected | PolicyState::Blocked => {
            (None, None, None, None)
        }
    };
    // A bypassed program's rule too: wg-quick's own rules would otherwise take its packets
    // into the tunnel, and apps-only routes the machine by `main` anyway.
    let mut rules = exec_rules(exceptions);
    rules.extend(bypass_rules(exceptions));
    rules.extend(tunnel_only_rules(&exceptions.tunnel_only_uids));
    let resolvers = identity
        .map(|t| t.usable_dns())
        .unwrap_or_default()
        .into_iter()
        .chain(probe.map(|p| p.resolver))
        .map(IpNet::from);
    rules.extend(
        inside_the_tunnel(resolvers, peer)
            .into_iter()
            .map(|net| to(net, PRIORITY_TUNNEL, ROUTE_TABLE)),
    );
    if rules.is_empty() {
        return None;
    }
    let mut routes: Vec<TableRoute> = [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .map(TableRoute::Unreachable)
        .collect();
    let extra = exec_routes(exceptions, &routes);
    routes.extend(extra);
    if let Some(probe) = probe {
        routes.push(TableRoute::Host(probe.resolver, probe.interface.clone()));
    }
    if let Some(tunnel) = tunnel {
        routes.extend(
            tunnel
                .carried_families()
                .into_iter()
                .map(|f| TableRoute::Tunnel(f, tunnel.interface.clone())),
        );
    }
    Some(RoutingLayer { rules, routes })
}

/// The bypass rules ([`crate::bypass`]) while a program is bypassed.
fn bypass_rules(exceptions: &Exceptions) -> Vec<RoutingRule> {
    if exceptions.bypass.is_some() {
        crate::bypass::bypass_routing_rules()
    } else {
        Vec::new()
    }
}

/// `ip rule add priority PRIORITY SELECTOR lookup TABLE`, for one family.
fn lookup(family: IpFamily, priority: u32, selector: Selector, table: u32) -> RoutingRule {
    RoutingRule {
        family,
        priority,
        selector,
        invert: false,
        table,
    }
}

/// `ip rule add priority PRIORITY to NET lookup TABLE`.
fn to(net: IpNet, priority: u32, table: u32) -> RoutingRule {
    lookup(IpFamily::of(&net), priority, Selector::To(net), table)
}

/// The destinations routed into the tunnel ahead of the LAN: each network once, in its canonical
/// form (`10.64.0.0/16`, which is how the kernel reports it back), none inside another, and none
/// that holds the VPN server's address (the tunnel's own packets to it would be routed into the
/// tunnel: a loop). A network of a single address that is the tunnel's own is local anyway.
fn inside_the_tunnel(nets: impl Iterator<Item = IpNet>, peer: Option<&Peer>) -> Vec<IpNet> {
    let endpoints: Vec<IpAddr> = peer
        .map(|p| p.endpoints.iter().map(|e| e.address.ip()).collect())
        .unwrap_or_default();
    let mut nets: Vec<IpNet> = nets
        .map(|n| n.trunc())
        .filter(|n| !endpoints.iter().any(|e| n.contains(e)))
        .collect();
    nets.sort();
    nets.dedup();
    let all = nets.clone();
    nets.retain(|n| !all.iter().any(|o| o != n && o.contains(n)));
    nets
}

/// How the tunnel's own packets of `family` are recognised: the fwmark its socket sets, else its
/// socket's owner, else (less precisely) their destination, the endpoint. `None` when the tunnel
/// sends none of that family (an endpoint of the other family), or when several endpoints of it
/// must be recognised: one inverted rule cannot say "none of these", so [`endpoint_exits`] sends
/// each of them to the main table ahead of the catch-all instead.
fn tunnel_packets(peer: &Peer, family: IpFamily) -> Option<Selector> {
    if let Some(mark) = peer.mark {
        return Some(Selector::FwMark(mark.get()));
    }
    if let Some(uid) = peer.uid {
        return Some(Selector::Uid(uid));
    }
    match endpoint_selectors(peer, family).as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The routing exits for a tunnel recognised only by its servers' addresses, when it has several
/// of one family: each endpoint looked up in the main table, ahead of the catch-all. With one, a
/// mark or a uid, the catch-all's inversion does it ([`tunnel_packets`]) and this is empty.
fn endpoint_exits(peer: &Peer, family: IpFamily) -> Vec<RoutingRule> {
    if peer.mark.is_some() || peer.uid.is_some() {
        return Vec::new();
    }
    let selectors = endpoint_selectors(peer, family);
    if selectors.len() < 2 {
        return Vec::new();
    }
    selectors
        .into_iter()
        .map(|selector| lookup(family, PRIORITY_LAN, selector, MAIN_TABLE))
        .collect()
}

/// Each endpoint of `family` as a routing selector.
fn endpoint_selectors(peer: &Peer, family: IpFamily) -> Vec<Selector> {
    peer.endpoints
        .iter()
        .filter(|e| IpFamily::of(&IpNet::from(e.address.ip())) == family)
        .map(|e| Selector::Endpoint {
            address: e.address.ip(),
            protocol: l4(e.protocol),
            port: e.address.port(),
        })
        .collect()
}

fn l4(protocol: TransportProtocol) -> L4Proto {
    match protocol {
        TransportProtocol::Udp => L4Proto::Udp,
        TransportProtocol::Tcp => L4Proto::Tcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Tunnel;
    use killswitch_types::Fwmark;

    fn peer(mark: Option<u32>, uid: Option<u32>) -> Peer {
        Peer {
            endpoints: killswitch_types::Endpoints::one(
                "198.51.100.1:51820".parse().expect("literal"),
            ),
            mark: mark.and_then(Fwmark::new),
            uid,
        }
    }

    #[test]
    fn several_unmarked_endpoints_each_leave_by_main_and_the_catch_all_takes_the_rest() {
        let mut p = peer(None, None);
        p.endpoints = killswitch_types::Endpoints::new(vec![
            "198.51.100.1:1194".parse().expect("literal"),
            "203.0.113.1:443/tcp".parse().expect("literal"),
        ])
        .expect("distinct");
        let state = PolicyState::Connecting {
            peer: p.clone(),
            probe: None,
            pending: None,
        };
        let layer = compile_routes(&state, &settings(false, false)).expect("a layer");
        let exits: Vec<&Selector> = layer
            .rules
            .iter()
            .filter(|r| r.priority == PRIORITY_LAN && r.table == MAIN_TABLE)
            .map(|r| &r.selector)
            .collect();
        assert_eq!(exits.len(), 2, "{layer:?}");
        assert!(exits.iter().all(|s| matches!(s, Selector::Endpoint { .. })));
        let catch_all: Vec<&RoutingRule> = layer
            .rules
            .iter()
            .filter(|r| r.priority == PRIORITY_CATCH_ALL)
            .collect();
        // IPv4 has two servers: no inversion can list them; IPv6 has none: everything.
        assert!(
            catch_all
                .iter()
                .all(|r| !r.invert && r.selector == Selector::All),
            "{catch_all:?}"
        );
        // With a mark, the mark alone recognises them again: no exits.
        p.mark = Fwmark::new(0xca6c);
        let marked = PolicyState::Connecting {
            peer: p,
            probe: None,
            pending: None,
        };
        let layer = compile_routes(&marked, &settings(false, false)).expect("a layer");
        assert!(!layer.rules.iter().any(|r| r.priority == PRIORITY_LAN));
    }

    fn settings(lockdown: bool, allow_lan: bool) -> Settings {
        Settings {
            lockdown,
            allow_lan,
            apps_only: false,
        }
    }

    #[test]
    fn no_layer_without_a_table() {
        assert_eq!(
            compile_routes(&PolicyState::Off, &settings(true, true)),
            None
        );
        assert_eq!(
            compile_routes(&PolicyState::Disconnected, &settings(false, true)),
            None
        );
        assert!(compile_routes(&PolicyState::Disconnected, &settings(true, false)).is_some());
    }

    #[test]
    fn blocked_sends_everything_to_unreachable() {
        let layer = compile_routes(&PolicyState::Blocked, &settings(false, false)).expect("layer");
        assert!(
            layer
                .rules
                .iter()
                .all(|r| r.priority == PRIORITY_CATCH_ALL && r.table == ROUTE_TABLE && !r.invert)
        );
        assert_eq!(layer.rules.len(), 2);
        assert_eq!(
            layer.routes,
            vec![
                TableRoute::Unreachable(IpFamily::V4),
                TableRoute::Unreachable(IpFamily::V6)
            ]
        );
    }

    #[test]
    fn everything_but_the_tunnels_own_packets_goes_to_our_table() {
        let rules = |p: Peer| {
            compile_routes(
                &PolicyState::Connecting {
                    peer: p,
                    probe: None,
                    pending: None,
                },
                &settings(false, false),
            )
            .expect("layer")
            .rules
        };
        for rule in rules(peer(Some(0xca6c), Some(7))) {
            assert_eq!(
                (rule.invert, rule.selector, rule.table),
                (true, Selector::FwMark(0xca6c), ROUTE_TABLE)
            );
        }
        assert!(
            rules(peer(None, Some(7)))
                .iter()
                .all(|r| r.invert && r.selector == Selector::Uid(7))
        );
        let by_endpoint = rules(peer(None, None));
        let endpoint = Selector::Endpoint {
            address: "198.51.100.1".parse().expect("literal"),
            protocol: L4Proto::Udp,
            port: 51820,
        };
        assert_eq!(
            (
                by_endpoint[0].family,
                by_endpoint[0].invert,
                &by_endpoint[0].selector
            ),
            (IpFamily::V4, true, &endpoint)
        );
        assert_eq!(
            (
                by_endpoint[1].family,
                by_endpoint[1].invert,
                &by_endpoint[1].selector
            ),
            (IpFamily::V6, false, &Selector::All),
            "no IPv6 tunnel packets"
        );
    }

    #[test]
    fn connected_routes_the_tunnels_families_into_it() {
        let tunnel = Tunnel {
            interface: "wg0".parse().expect("literal"),
            addresses: vec!["10.64.0.2".parse().expect("literal")],
            dns: vec![],
        };
        let layer = compile_routes(
            &PolicyState::Connected {
                peer: peer(Some(1), None),
                tunnel,
            },
            &settings(false, false),
        )
        .expect("layer");
        assert!(layer.routes.contains(&TableRoute::Tunnel(
            IpFamily::V4,
            "wg0".parse().expect("literal")
        )));
        assert!(
            !layer
                .routes
                .iter()
                .any(|r| matches!(r, TableRoute::Tunnel(IpFamily::V6, _))),
            "v4-only tunnel: v6 unreachable"
        );
    }

    #[test]
    fn allow_lan_exempts_exactly_the_lan_ranges() {
        let layer = compile_routes(&PolicyState::Blocked, &settings(false, true)).expect("layer");
        let lan: Vec<&IpNet> = layer
            .rules
            .iter()
            .filter_map(|r| match &r.selector {
                Selector::To(n) if r.priority == PRIORITY_LAN => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(
            lan.len(),
            ranges::LAN_UNICAST.len() + ranges::LAN_GROUP.len()
        );
        assert!(lan.iter().all(|n| ranges::is_lan(n.network())));
    }

    fn tunnel() -> Tunnel {
        Tunnel {
            interface: "wg0".parse().expect("literal"),
            addresses: vec!["10.64.0.2".parse().expect("literal")],
            dns: vec!["10.64.0.1".parse().expect("literal")],
        }
    }

    fn inside(layer: &RoutingLayer) -> Vec<IpNet> {
        layer
            .rules
            .iter()
            .filter(|r| r.priority == PRIORITY_TUNNEL)
            .map(|r| {
                assert_eq!((r.invert, r.table), (false, ROUTE_TABLE));
                match &r.selector {
                    Selector::To(net) => *net,
                    other => panic!("unexpected selector {other:?}"),
                }
            })
            .collect()
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("literal")
    }

    #[test]
    fn allow_lan_routes_the_tunnels_resolvers_and_networks_ahead_of_the_lan() {
        let connected = PolicyState::Connected {
            peer: peer(Some(1), None),
            tunnel: tunnel(),
        };
        let lan = settings(false, true);
        // Guard mode: the resolvers only (an interface's address says nothing of its network).
        let layer = compile_routes(&connected, &lan).expect("layer");
        assert_eq!(inside(&layer), vec![net("10.64.0.1/32")]);
        const { assert!(PRIORITY_TUNNEL < PRIORITY_LAN) };
        // `up`: the configuration's network too, in canonical form, the resolver inside it once.
        let networks = [net("10.64.0.2/16"), net("10.64.0.2/32"), net("fd64::2/64")];
        let layer = compile_routes_with(&connected, &lan, &networks).expect("layer");
        assert_eq!(inside(&layer), vec![net("10.64.0.0/16"), net("fd64::/64")]);
        assert!(
            layer
                .rules
                .iter()
                .any(|r| r.family == IpFamily::V6 && r.priority == PRIORITY_TUNNEL)
        );
        // Without allow-lan the catch-all takes them already.
        let layer =
            compile_routes_with(&connected, &settings(false, false), &networks).expect("layer");
        assert!(inside(&layer).is_empty());
        // No tunnel, nothing inside it.
        let layer = compile_routes_with(&PolicyState::Blocked, &lan, &networks).expect("layer");
        assert!(inside(&layer).is_empty());
    }

    #[test]
    fn the_probe_goes_into_the_tunnel_with_allow_lan() {
        let connecting = PolicyState::Connecting {
            peer: peer(Some(1), None),
            probe: Some(crate::compile::Probe {
                interface: "wg0".parse().expect("literal"),
                resolver: "10.64.0.1".parse().expect("literal"),
            }),
            pending: Some(tunnel()),
        };
        let layer =
            compile_routes_with(&connecting, &settings(false, true), &[net("10.64.0.2/16")])
                .expect("layer");
        assert_eq!(inside(&layer), vec![net("10.64.0.0/16")]);
        assert!(layer.routes.contains(&TableRoute::Host(
            "10.64.0.1".parse().expect("literal"),
            "wg0".parse().expect("literal")
        )));
    }

    #[test]
    fn a_network_holding_the_vpn_server_is_never_routed_into_the_tunnel() {
        let connected = PolicyState::Connected {
            peer: peer(Some(1), None),
            tunnel: tunnel(),
        };
        // The server (198.51.100.1) inside the tunnel's network: its packets would loop.
        let layer = compile_routes_with(
            &connected,
            &settings(false, true),
            &[net("198.51.100.0/24"), net("10.64.0.0/16")],
        )
        .expect("layer");
        assert_eq!(inside(&layer), vec![net("10.64.0.0/16")]);
    }

    /// The firewall agrees with the routing layer: with allow-lan, DNS to the tunnel's resolver
    /// goes through the tunnel and nowhere else, even though the resolver's address is private.
    #[test]
    fn the_firewall_refuses_the_tunnels_resolver_by_the_lan() {
        use crate::{Packet, PacketVerdict, Transport};
        let connected = PolicyState::Connected {
            peer: peer(Some(1), None),
            tunnel: tunnel(),
        };
        let ruleset = crate::compile(&connected, &settings(false, true));
        let query = |oif: &str, src: &str| {
            ruleset.verdict(&Packet::output(
                oif,
                src.parse().expect("literal"),
                "10.64.0.1".parse().expect("literal"),
                Transport::Udp {
                    sport: 40000,
                    dport: 53,
                },
            ))
        };
        assert_eq!(query("wg0", "10.64.0.2"), PacketVerdict::Accept);
        assert!(
            matches!(query("phys0", "192.168.50.2"), PacketVerdict::Reject(_)),
            "{:?}",
            query("phys0", "192.168.50.2")
        );
    }
}
