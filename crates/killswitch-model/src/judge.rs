//! Judges a ruleset against the model by what it does to packets, not by what it says.
//!
//! The packets are the ones a user's machine sends: a web request out of the physical link, the
//! same over IPv6, a DNS query to a resolver that is not the tunnel's, the tunnel's own packets to
//! each server (with and without the tunnel's mark), traffic through the tunnel, a LAN host. The
//! policy's evaluator says what the ruleset does with each. A rule missing from the compiler (the
//! IPv6 drop, the DNS reject, the mark condition of the hole) changes one of these verdicts, and
//! the judge names it.
//!
//! With a router LAN ([`router_never`], [`router_settled`]), the packets also include those a
//! client of that LAN sends through this machine, taken through every hook by the evaluator's
//! [`Ruleset::forward_path`] (prerouting with its DNS translation, a routing decision, forward,
//! postrouting). The routing decision is the adversary's: out of the physical link (what the main
//! table's default route, or a route a hostile DHCP server pushed, says) or into either tunnel's
//! interface; the rules alone must keep the LAN in the tunnel.

use crate::model::Protection;
use killswitch_policy::Ruleset;
use killswitch_policy::{Packet, Transport};
use killswitch_types::InterfaceName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One end of a tunnel as the judge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelEnd {
    /// The server's address and port (UDP).
    pub endpoint: SocketAddr,
    /// The mark the tunnel's socket carries.
    pub mark: u32,
    /// The tunnel's own address (inside the tunnel).
    pub address: Ipv4Addr,
    /// The resolver inside the tunnel.
    pub dns: Ipv4Addr,
}

/// The addresses of the machine under test and its world. Both levels build one: the simulation
/// from constants, the lab from its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The physical interface.
    pub physical: InterfaceName,
    /// The physical interface's IPv4 address.
    pub host: Ipv4Addr,
    /// Its IPv6 address.
    pub host_v6: Ipv6Addr,
    /// A host on the internet.
    pub internet: Ipv4Addr,
    /// The same over IPv6.
    pub internet_v6: Ipv6Addr,
    /// A LAN host (in a private range, so that allow-lan admits it).
    pub lan: Ipv4Addr,
    /// A resolver that is not the tunnel's (the ISP's).
    pub foreign_resolver: Ipv4Addr,
    /// The guarded tunnel's interface (another program runs it).
    pub guard_interface: InterfaceName,
    /// The guarded tunnel.
    pub guard: TunnelEnd,
    /// The interface `up` creates.
    pub up_interface: InterfaceName,
    /// `up`'s servers, in failover order.
    pub servers: Vec<TunnelEnd>,
    /// The interface `router add` names: a LAN this machine may be the gateway of.
    pub router_lan: InterfaceName,
    /// A client on that LAN (inside the network of the interface's address).
    pub router_client: Ipv4Addr,
}

impl Topology {
    /// The simulation's world: documentation ranges for the internet, a private LAN.
    pub fn sim() -> Self {
        let name = |n: &str| InterfaceName::new(n).unwrap_or_else(|_| unreachable_name(n));
        let server = |n: u8| TunnelEnd {
            endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 51820),
            mark: 0xca6c,
            address: Ipv4Addr::new(10, 64, 0, 2),
            dns: Ipv4Addr::new(10, 64, 0, 1),
        };
        Topology {
            physical: name("eth0"),
            host: Ipv4Addr::new(192, 168, 1, 2),
            host_v6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2),
            internet: Ipv4Addr::new(192, 0, 2, 10),
            internet_v6: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 10),
            lan: Ipv4Addr::new(192, 168, 1, 5),
            foreign_resolver: Ipv4Addr::new(198, 51, 100, 53),
            guard_interface: name("tun-guard"),
            guard: TunnelEnd {
                endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 1194),
                mark: 0x1194,
                address: Ipv4Addr::new(10, 8, 0, 2),
                dns: Ipv4Addr::new(10, 8, 0, 1),
            },
            up_interface: name("ks-up"),
            servers: (1..=3).map(server).collect(),
            router_lan: name("lan0"),
            router_client: Ipv4Addr::new(192, 168, 77, 10),
        }
    }

    /// The tunnel end of a protection's index.
    pub fn end(&self, index: usize) -> Option<&TunnelEnd> {
        if index == Protection::GUARD {
            Some(&self.guard)
        } else {
            self.servers.get(index)
        }
    }

    fn interface_of(&self, index: usize) -> &InterfaceName {
        if index == Protection::GUARD {
            &self.guard_interface
        } else {
            &self.up_interface
        }
    }

    /// Every endpoint a hole might be for: the guarded tunnel's and every server's.
    fn every_end(&self) -> impl Iterator<Item = (usize, &TunnelEnd)> {
        std::iter::once((Protection::GUARD, &self.guard)).chain(self.servers.iter().enumerate())
    }
}

/// The constant names above are valid; a typo there is a bug of this file, caught by its tests.
fn unreachable_name(name: &str) -> InterfaceName {
    panic!("invalid interface name in the model's topology: {name}")
}

/// What a ruleset does with the user's packets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdicts {
    cleartext: bool,
    cleartext_v6: bool,
    lan: bool,
    foreign_dns: bool,
    /// The servers whose hole admits the tunnel's marked packets.
    holes: Vec<usize>,
    /// The servers whose hole admits unmarked packets too.
    unmarked_holes: Vec<usize>,
    /// The servers whose address is reachable on a port other than the tunnel's.
    other_ports: Vec<usize>,
    /// The tunnels whose own address leaves by the physical link.
    tunnel_address_outside: Vec<usize>,
}

fn verdicts(ruleset: &Ruleset, topo: &Topology) -> Verdicts {
    let out = |dst: IpAddr, transport| {
        let src = match dst {
            IpAddr::V4(_) => IpAddr::V4(topo.host),
            IpAddr::V6(_) => IpAddr::V6(topo.host_v6),
        };
        Packet::output(topo.physical.as_str(), src, dst, transport)
    };
    let accepts = |packet: &Packet| ruleset.verdict(packet).is_accept();
    let hole = |end: &TunnelEnd, marked: bool| {
        let packet = out(
            end.endpoint.ip(),
            Transport::udp(51820, end.endpoint.port()),
        );
        accepts(&if marked {
            packet.with_mark(end.mark)
        } else {
            packet
        })
    };
    Verdicts {
        cleartext: accepts(&out(topo.internet.into(), Transport::tcp(40000, 443))),
        cleartext_v6: accepts(&out(topo.internet_v6.into(), Transport::tcp(40000, 443))),
        lan: accepts(&out(topo.lan.into(), Transport::tcp(40000, 22))),
        foreign_dns: accepts(&out(
            topo.foreign_resolver.into(),
            Transport::udp(40000, 53),
        )),
        holes: topo
            .every_end()
            .filter(|(_, end)| hole(end, true))
            .map(|(i, _)| i)
            .collect(),
        unmarked_holes: topo
            .every_end()
            .filter(|(_, end)| hole(end, false))
            .map(|(i, _)| i)
            .collect(),
        other_ports: topo
            .every_end()
            .filter(|(_, end)| {
                let other = end.endpoint.port().wrapping_add(1).max(1);
                let packet = out(end.endpoint.ip(), Transport::udp(51820, other));
                accepts(&packet.with_mark(end.mark))
            })
            .map(|(i, _)| i)
            .collect(),
        tunnel_address_outside: topo
            .every_end()
            .filter(|(_, end)| {
                accepts(&Packet::output(
                    topo.physical.as_str(),
                    IpAddr::V4(end.address),
                    topo.internet.into(),
                    Transport::udp(40000, 443),
                ))
            })
            .map(|(i, _)| i)
            .collect(),
    }
}

/// What the ruleset does with traffic through tunnel `index`'s interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InTunnel {
    web: bool,
    web_v6: bool,
    own_dns: bool,
    foreign_dns: bool,
}

fn in_tunnel(ruleset: &Ruleset, topo: &Topology, index: usize) -> Option<InTunnel> {
    let end = topo.end(index)?;
    let interface = topo.interface_of(index).as_str();
    let out = |dst: IpAddr, transport| {
        let src = match dst {
            IpAddr::V4(_) => IpAddr::V4(end.address),
            IpAddr::V6(_) => IpAddr::V6(topo.host_v6),
        };
        ruleset
            .verdict(&Packet::output(interface, src, dst, transport))
            .is_accept()
    };
    Some(InTunnel {
        web: out(topo.internet.into(), Transport::tcp(40000, 443)),
        web_v6: out(topo.internet_v6.into(), Transport::tcp(40000, 443)),
        own_dns: out(end.dns.into(), Transport::udp(40000, 53)),
        foreign_dns: out(topo.foreign_resolver.into(), Transport::udp(40000, 53)),
    })
}

/// Checks that `ruleset` enforces exactly `expected` (with allow-lan as given). `Err` names every
/// difference.
pub fn exactly(
    ruleset: &Ruleset,
    topo: &Topology,
    expected: &Protection,
    allow_lan: bool,
) -> Result<(), String> {
    if ruleset.table.is_none() && expected.has_rules() {
        return Err("no rules are installed: everything is allowed".to_owned());
    }
    let v = verdicts(ruleset, topo);
    let mut wrong = Vec::new();
    let open = !expected.has_rules();
    expect(&mut wrong, "cleartext to the internet", v.cleartext, open);
    expect(&mut wrong, "IPv6 outside the tunnel", v.cleartext_v6, open);
    expect(
        &mut wrong,
        "DNS to a resolver outside the tunnel",
        v.foreign_dns,
        open,
    );
    expect(&mut wrong, "the LAN", v.lan, open || allow_lan);
    match expected {
        Protection::Off | Protection::Open => {}
        Protection::Blocked => {
            if !v.holes.is_empty() {
                wrong.push(format!(
                    "a hole is open while everything must be blocked: {}",
                    names(&v.holes)
                ));
            }
        }
        Protection::Hole(allowed) | Protection::Tunnel(allowed) => {
            check_hole(&v, allowed, &mut wrong);
            let tunnel = matches!(expected, Protection::Tunnel(_));
            if let Some(&active) = v.holes.first()
                && let Some(t) = in_tunnel(ruleset, topo, active)
            {
                expect(&mut wrong, "traffic through the tunnel", t.web, tunnel);
                expect(
                    &mut wrong,
                    "IPv6 through an IPv4-only tunnel",
                    t.web_v6,
                    false,
                );
                expect(
                    &mut wrong,
                    "DNS to another resolver through the tunnel",
                    t.foreign_dns,
                    false,
                );
                if tunnel {
                    expect(&mut wrong, "DNS to the tunnel's resolver", t.own_dns, true);
                }
            }
        }
    }
    verdict(wrong)
}

/// Checks that `ruleset` is at least as strict as `floor` (`None`: anything goes).
pub fn at_least(
    ruleset: &Ruleset,
    topo: &Topology,
    floor: Option<&Protection>,
    allow_lan: bool,
) -> Result<(), String> {
    let Some(floor) = floor else {
        return Ok(());
    };
    if ruleset.table.is_none() {
        return Err("no rules are installed: everything is allowed".to_owned());
    }
    let v = verdicts(ruleset, topo);
    let mut wrong = Vec::new();
    let mut never = |what: &str, is: bool| {
        if is {
            wrong.push(format!("{what} is allowed"));
        }
    };
    never("cleartext to the internet", v.cleartext);
    never("IPv6 outside the tunnel", v.cleartext_v6);
    never("DNS to a resolver outside the tunnel", v.foreign_dns);
    never("the LAN (allow-lan is off)", v.lan && !allow_lan);
    let allowed: &[usize] = match floor {
        Protection::Hole(a) | Protection::Tunnel(a) => a,
        _ => &[],
    };
    let stray: Vec<usize> = v
        .holes
        .iter()
        .copied()
        .filter(|i| !allowed.contains(i))
        .collect();
    if !stray.is_empty() {
        wrong.push(format!("a hole to {} is open", names(&stray)));
    }
    if v.holes.len() > 1 {
        wrong.push(format!("more than one hole: {}", names(&v.holes)));
    }
    if !v.unmarked_holes.is_empty() {
        wrong.push(format!(
            "packets without the tunnel's mark pass the hole to {}",
            names(&v.unmarked_holes)
        ));
    }
    if !v.other_ports.is_empty() {
        wrong.push(format!(
            "the hole to {} admits another port than the tunnel's",
            names(&v.other_ports)
        ));
    }
    if !v.tunnel_address_outside.is_empty() {
        wrong.push(format!(
            "packets from the tunnel address of {} leave by the physical link",
            names(&v.tunnel_address_outside)
        ));
    }
    for index in &v.holes {
        if let Some(t) = in_tunnel(ruleset, topo, *index)
            && (t.foreign_dns || t.web_v6)
        {
            wrong.push(format!(
                "through the tunnel to {}: {}",
                name(*index),
                if t.foreign_dns {
                    "DNS to another resolver is allowed"
                } else {
                    "IPv6 is allowed though the tunnel is IPv4-only"
                }
            ));
        }
    }
    verdict(wrong)
}

/// A LAN client's packets, as they arrive on the router LAN interface.
struct LanPackets {
    web: Packet,
    udp: Packet,
    /// IPv6 from the client's link-local address (the only source of its family the rules accept
    /// from a LAN without an IPv6 network); every tunnel here is IPv4-only.
    web_v6: Packet,
    dns: Packet,
    dns_tcp: Packet,
    /// To each tunnel end's server, from its own port (port shadowing, CVE-2021-3773), by index.
    to_servers: Vec<(usize, Packet)>,
}

fn lan_packets(topo: &Topology) -> LanPackets {
    let lan = topo.router_lan.as_str();
    let client = IpAddr::V4(topo.router_client);
    let arriving = |dst: IpAddr, transport| Packet::prerouting(lan, client, dst, transport);
    LanPackets {
        web: arriving(topo.internet.into(), Transport::tcp(40000, 443)),
        udp: arriving(topo.internet.into(), Transport::udp(40000, 9)),
        web_v6: Packet::prerouting(
            lan,
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10)),
            topo.internet_v6.into(),
            Transport::tcp(40000, 443),
        ),
        dns: arriving(topo.foreign_resolver.into(), Transport::udp(40000, 53)),
        dns_tcp: arriving(topo.foreign_resolver.into(), Transport::tcp(40000, 853)),
        to_servers: topo
            .every_end()
            .map(|(index, end)| {
                let shadow = Transport::udp(end.endpoint.port(), end.endpoint.port());
                (index, arriving(end.endpoint.ip(), shadow))
            })
            .collect(),
    }
}

/// Checks what a router LAN's clients get in every state, settled or not: a packet forwarded from
/// the LAN is accepted out of no interface but a tunnel's, whatever the routing decision; DNS
/// only to a tunnel's resolver; IPv6 (the tunnels are IPv4-only) never. `Err` names every packet
/// that got further than it may.
pub fn router_never(ruleset: &Ruleset, topo: &Topology) -> Result<(), String> {
    if ruleset.table.is_none() {
        return Err(format!(
            "a router LAN, and no rules are installed: {}'s clients are forwarded anywhere",
            topo.router_lan
        ));
    }
    let tunnels = [&topo.guard_interface, &topo.up_interface];
    let resolvers: Vec<IpAddr> = topo.every_end().map(|(_, e)| IpAddr::V4(e.dns)).collect();
    let routes = [&topo.physical, &topo.guard_interface, &topo.up_interface];
    let p = lan_packets(topo);
    let mut wrong = Vec::new();
    for route in routes {
        let forwarded = |packet: &Packet| {
            let decided = ruleset.forward_path(packet, |_| Some(route.clone()));
            decided.verdict.is_accept().then_some(decided.packet)
        };
        let out_of = |left: &Packet| left.oif.as_ref().map_or("?", |o| o.as_str()).to_owned();
        // Routed into a tunnel, these may pass (they leave by it); only the way out of the
        // physical link is judged for them, which also keeps the judge cheap.
        let servers = p.to_servers.iter().map(|(_, packet)| ("UDP", packet));
        let outside = [("web", &p.web), ("UDP", &p.udp)]
            .into_iter()
            .chain(servers);
        for (what, packet) in outside.filter(|_| !tunnels.contains(&route)) {
            if let Some(left) = forwarded(packet)
                && !tunnels.iter().any(|t| left.oif.as_ref() == Some(*t))
            {
                wrong.push(format!(
                    "the LAN's {what} to {} leaves by {}",
                    packet.dst,
                    out_of(&left)
                ));
            }
        }
        if let Some(left) = forwarded(&p.web_v6) {
            wrong.push(format!(
                "the LAN's IPv6 leaves by {} though no tunnel carries IPv6",
                out_of(&left)
            ));
        }
        for (what, packet) in [("DNS", &p.dns), ("DNS over TLS", &p.dns_tcp)] {
            if let Some(left) = forwarded(packet)
                && (!tunnels.iter().any(|t| left.oif.as_ref() == Some(*t))
                    || !resolvers.contains(&left.dst))
            {
                wrong.push(format!(
                    "the LAN's {what} to {} leaves by {} to {}, not to a tunnel's resolver \
                     through the tunnel",
                    packet.dst,
                    out_of(&left),
                    left.dst
                ));
            }
        }
    }
    wrong.dedup();
    verdict(wrong)
}

/// Checks what a router LAN's clients get once the daemon has settled: while one of the tunnels
/// `carriers` (by index; empty when none is connected) carries traffic, the LAN's web traffic
/// goes through it, and its DNS to any resolver is answered by that tunnel's resolver through
/// it, and it cannot reach the connected server itself (port shadowing, CVE-2021-3773: the
/// judge does not know which of the carriers is the peer, so at least one of them must be
/// refused); while none does, the LAN's DNS is refused at once (a reset or ICMP, not a timeout).
/// [`router_never`] judges the rest.
pub fn router_settled(
    ruleset: &Ruleset,
    topo: &Topology,
    carriers: &[usize],
) -> Result<(), String> {
    let p = lan_packets(topo);
    let mut wrong = Vec::new();
    match carriers.first() {
        Some(&index) => {
            let interface = topo.interface_of(index).clone();
            let resolvers: Vec<IpAddr> = carriers
                .iter()
                .filter_map(|i| topo.end(*i))
                .map(|e| IpAddr::V4(e.dns))
                .collect();
            let through =
                |packet: &Packet| ruleset.forward_path(packet, |_| Some(interface.clone()));
            let web = through(&p.web);
            if !web.verdict.is_accept() {
                wrong.push(format!(
                    "the LAN's web traffic does not go through the connected tunnel {interface}: {:?}",
                    web.verdict
                ));
            }
            let shadowing = (p.to_servers.iter())
                .filter(|(i, _)| carriers.contains(i))
                .all(|(_, packet)| through(packet).verdict.is_accept());
            if shadowing {
                wrong.push(format!(
                    "the LAN reaches the connected VPN server through {interface} (port shadowing)"
                ));
            }
            for (what, packet) in [("DNS", &p.dns), ("DNS over TLS", &p.dns_tcp)] {
                let dns = through(packet);
                if !dns.verdict.is_accept() || !resolvers.contains(&dns.packet.dst) {
                    wrong.push(format!(
                        "the LAN's {what} to {} is not answered by the tunnel's resolver through \
                         {interface}: {:?} to {}",
                        packet.dst, dns.verdict, dns.packet.dst
                    ));
                }
            }
        }
        None => {
            // No tunnel: whatever the routing decision, the DNS is refused, not dropped.
            for route in [&topo.physical, &topo.guard_interface, &topo.up_interface] {
                let dns = ruleset.forward_path(&p.dns, |_| Some(route.clone()));
                if !matches!(dns.verdict, killswitch_policy::PacketVerdict::Reject(_)) {
                    wrong.push(format!(
                        "no tunnel is connected, yet the LAN's DNS routed to {route} is not \
                         refused at once: {:?}",
                        dns.verdict
                    ));
                }
            }
        }
    }
    wrong.dedup();
    verdict(wrong)
}

fn check_hole(v: &Verdicts, allowed: &[usize], wrong: &mut Vec<String>) {
    match v.holes.as_slice() {
        [one] if allowed.contains(one) => {}
        [] => wrong.push(format!(
            "no hole is open, but one to {} must be",
            alternatives(allowed)
        )),
        holes => wrong.push(format!(
            "the holes open are to {}, but exactly one to {} must be",
            names(holes),
            alternatives(allowed)
        )),
    }
    if !v.unmarked_holes.is_empty() {
        wrong.push(format!(
            "packets without the tunnel's mark pass the hole to {}",
            names(&v.unmarked_holes)
        ));
    }
}

/// Notes in `wrong` that `what` is allowed or blocked where it must be the other.
fn expect(wrong: &mut Vec<String>, what: &str, is: bool, should: bool) {
    if is != should {
        wrong.push(format!(
            "{what} is {} but must be {}",
            word(is),
            word(should)
        ));
    }
}

fn verdict(wrong: Vec<String>) -> Result<(), String> {
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

fn word(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "blocked" }
}

fn name(index: usize) -> String {
    if index == Protection::GUARD {
        "the guarded tunnel's server".to_owned()
    } else {
        format!("server {}", index + 1)
    }
}

fn names(indices: &[usize]) -> String {
    indices
        .iter()
        .map(|i| name(*i))
        .collect::<Vec<_>>()
        .join(", ")
}

fn alternatives(indices: &[usize]) -> String {
    indices
        .iter()
        .map(|i| name(*i))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_policy::{Peer, PolicyState, Tunnel, compile};
    use killswitch_types::{Endpoint, Fwmark, Settings, TransportProtocol};

    fn peer(end: &TunnelEnd) -> Peer {
        Peer {
            endpoints: killswitch_types::Endpoints::one(Endpoint {
                address: end.endpoint,
                protocol: TransportProtocol::Udp,
            }),
            mark: Fwmark::new(end.mark),
            uid: None,
        }
    }

    fn connected(topo: &Topology, index: usize) -> PolicyState {
        let end = topo.end(index).expect("end");
        PolicyState::Connected {
            peer: peer(end),
            tunnel: Tunnel {
                interface: topo.interface_of(index).clone(),
                addresses: vec![end.address.into()],
                dns: vec![end.dns.into()],
            },
        }
    }

    #[test]
    fn the_compiled_policy_passes_and_the_wrong_one_fails() {
        let topo = Topology::sim();
        let settings = Settings::default();
        let ruleset = compile(&connected(&topo, 1), &settings);
        exactly(&ruleset, &topo, &Protection::Tunnel(vec![1]), false).expect("connected");
        at_least(
            &ruleset,
            &topo,
            Some(&Protection::Tunnel(vec![0, 1])),
            false,
        )
        .expect("floor");
        let wrong = exactly(&ruleset, &topo, &Protection::Tunnel(vec![0]), false);
        assert!(wrong.is_err(), "server 2's hole is not server 1's");
        let blocked = compile(&PolicyState::Blocked, &settings);
        exactly(&blocked, &topo, &Protection::Blocked, false).expect("blocked");
        let open = Ruleset { table: None };
        exactly(&open, &topo, &Protection::Open, false).expect("no rules");
        let leak = at_least(&open, &topo, Some(&Protection::Blocked), false);
        assert!(
            leak.is_err_and(|e| e.contains("everything is allowed")),
            "no rules while blocked must be a leak"
        );
    }
}
