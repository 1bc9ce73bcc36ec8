//! Router mode (issue 17): which interfaces are router LANs, what the daemon sees of them, and the
//! checks that keep a wrong one out.
//!
//! A router LAN is an interface of this machine behind which clients use it as their gateway
//! (`router_lan_interfaces` in config.toml, `killswitch router add`). The rules
//! ([`killswitch_policy::router`]) let their forwarded traffic out through the tunnel or not at
//! all, and accept from the LAN only sources inside the networks of the interface's own
//! addresses. So the daemon looks at each LAN: whether it exists, its networks (an address
//! added or changed later changes the rules, through the link watcher), and it switches IPv4
//! forwarding on for it, per interface (`net.ipv4.conf.L.forwarding`, as exec does for its
//! `ksxN` veths), never globally: `net.ipv4.ip_forward` is the administrator's, and `status`
//! says when it is off.
//!
//! Refused, with the reason in `status` (config.toml's) or in the error (`router add`):
//! loopback, the exec veths (`ksx*`, the daemon's own), the tunnel interface, and an interface
//! that holds a default route of the main table: that is the WAN, and confining it as a LAN
//! would drop every packet from the internet whose source is not in its own subnet (the
//! tunnel's too). Names are validated as the kernel does before they get here
//! ([`InterfaceName`]).

use ipnet::IpNet;
use killswitch_policy::LocalLink;
use killswitch_tunnel::netdev::LinkFacts;
use killswitch_types::InterfaceName;

/// One router LAN as the daemon sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenLan {
    /// The interface.
    pub interface: InterfaceName,
    /// The networks of its addresses (`192.168.50.1/24` gives `192.168.50.0/24`), without IPv6
    /// link-local ones (the rules accept fe80::/10 from every LAN anyway).
    pub networks: Vec<IpNet>,
    /// Whether it exists.
    pub present: bool,
    /// Whether `net.ipv4.conf.IFACE.forwarding` is on.
    pub forwarding: bool,
    /// Why it is not treated as a router LAN, if it is not (it holds the default route).
    pub refused: Option<String>,
}

impl SeenLan {
    /// A LAN known by name only: absent, no networks.
    pub fn absent(interface: InterfaceName) -> Self {
        SeenLan {
            interface,
            networks: Vec::new(),
            present: false,
            forwarding: false,
            refused: None,
        }
    }

    /// What the rules get for it: the interface and its networks.
    pub fn link(&self) -> LocalLink {
        LocalLink {
            interface: self.interface.clone(),
            networks: self.networks.clone(),
        }
    }
}

/// What the daemon sees of the router LANs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterView {
    /// Each LAN looked at, in the order asked.
    pub lans: Vec<SeenLan>,
    /// `net.ipv4.ip_forward`, when it could be read.
    pub ip_forward: Option<bool>,
}

impl RouterView {
    /// The LAN of this name, as seen.
    pub fn get(&self, name: &InterfaceName) -> Option<&SeenLan> {
        self.lans.iter().find(|l| l.interface == *name)
    }
}

/// Looks at the router LANs of these names (an empty list looks at nothing).
pub type LookRouter = Box<dyn Fn(&[InterfaceName]) -> RouterView>;

/// Why `name` can never be a router LAN, whatever the machine looks like: loopback, or the
/// daemon's own exec veths. The same check for config.toml and `router add`.
pub fn check_name(name: &InterfaceName) -> Result<(), String> {
    if name.as_str() == "lo" {
        return Err("lo is the loopback interface, not a LAN".to_owned());
    }
    if name
        .as_str()
        .starts_with(killswitch_policy::exec::EXEC_INTERFACE_PREFIX)
    {
        return Err(format!(
            "{name}: interfaces named {}* are the daemon's own (killswitch exec), not a LAN",
            killswitch_policy::exec::EXEC_INTERFACE_PREFIX
        ));
    }
    Ok(())
}

/// Why `name` cannot be a router LAN while `tunnel` is the tunnel interface.
pub fn check_not_tunnel(
    name: &InterfaceName,
    tunnel: Option<&InterfaceName>,
) -> Result<(), String> {
    if tunnel == Some(name) {
        return Err(format!(
            "{name} is the tunnel interface; a router LAN is the interface its clients are on"
        ));
    }
    Ok(())
}

/// The reason a LAN holding a default route is refused.
fn wan_refusal(name: &str) -> String {
    format!(
        "{name} holds the default route: it is the WAN, not a LAN (confining it would cut this \
         machine off the internet)"
    )
}

/// Judges `links` (the namespace's interfaces) for the LANs `wanted`: `wan` are the indexes of
/// the interfaces that hold a default route of the main table, `forwarding` reads an interface's
/// forwarding switch. Pure but for `forwarding`, so that every case is a unit test.
pub fn judge(
    links: &[LinkFacts],
    wanted: &[InterfaceName],
    wan: &[u32],
    forwarding: &dyn Fn(&str) -> bool,
    ip_forward: Option<bool>,
) -> RouterView {
    let lans = wanted
        .iter()
        .map(
            |name| match links.iter().find(|l| l.name == name.as_str()) {
                None => SeenLan::absent(name.clone()),
                Some(facts) => {
                    let mut networks: Vec<IpNet> = facts
                        .addresses
                        .iter()
                        .map(IpNet::trunc)
                        .filter(|n| !is_ipv6_link_local(n))
                        .collect();
                    networks.sort();
                    networks.dedup();
                    SeenLan {
                        interface: name.clone(),
                        networks,
                        present: true,
                        forwarding: forwarding(name.as_str()),
                        refused: wan
                            .contains(&facts.index)
                            .then(|| wan_refusal(name.as_str())),
                    }
                }
            },
        )
        .collect();
    RouterView { lans, ip_forward }
}

fn is_ipv6_link_local(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(v6) if v6.addr().segments()[0] & 0xffc0 == 0xfe80)
}

/// The indexes of the interfaces that hold a default route (IPv4 or IPv6) of the main table.
pub fn wan_indexes() -> Result<Vec<u32>, String> {
    use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    const MAIN_TABLE: u32 = 254;
    let mut rtnl = killswitch_route::Rtnl::open().map_err(|e| e.to_string())?;
    let mut indexes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let routes = rtnl
            .dump(RouteNetlinkMessage::GetRoute(request))
            .map_err(|e| e.to_string())?;
        for message in routes {
            let RouteNetlinkMessage::NewRoute(route) = message else {
                continue;
            };
            let table = killswitch_route::route_table(&route);
            if table != MAIN_TABLE
                || route.header.kind != RouteType::Unicast
                || route.header.destination_prefix_length != 0
            {
                continue;
            }
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Oif(index) => indexes.push(*index),
                    RouteAttribute::MultiPath(hops) => {
                        indexes.extend(hops.iter().map(|hop| hop.interface_index));
                    }
                    _ => {}
                }
            }
        }
    }
    indexes.sort_unstable();
    indexes.dedup();
    Ok(indexes)
}

/// Refuses `name` if it holds a default route of the main table now (`router add`): the WAN.
/// An interface that does not exist yet passes; when it appears holding one, the look refuses it.
pub fn check_not_wan(name: &InterfaceName) -> Result<(), String> {
    let Some(index) = killswitch_tunnel::netdev::index(name.as_str()) else {
        return Ok(());
    };
    let wan = wan_indexes().map_err(|e| format!("cannot check whether {name} is the WAN: {e}"))?;
    if wan.contains(&index) {
        return Err(wan_refusal(name.as_str()));
    }
    Ok(())
}

/// Reads a `0`/`1` sysctl under /proc/sys.
fn read_switch(key: &str) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/proc/sys/{key}")).ok()?;
    Some(text.trim() != "0")
}

/// Whether IPv4 forwarding is on for `interface`.
pub fn forwarding(interface: &str) -> bool {
    read_switch(&format!("net/ipv4/conf/{interface}/forwarding")).unwrap_or(false)
}

/// Switches IPv4 forwarding on for `interface` (only it: IPv4 decides by the switch of the
/// interface a packet arrived on).
pub fn forward_on(interface: &InterfaceName) -> Result<(), String> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    std::fs::write(&path, "1").map_err(|e| format!("writing {path}: {e}"))
}

/// Switches IPv4 forwarding off again for `interface` (one the daemon switched on, which is no
/// router LAN any more).
pub fn forward_off(interface: &InterfaceName) -> Result<(), String> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    std::fs::write(&path, "0").map_err(|e| format!("writing {path}: {e}"))
}

/// The view of this network namespace now. On a netlink failure every LAN counts as absent (no
/// networks: the rules then accept no source from it, which fails closed) and the failure is
/// logged.
pub fn look(wanted: &[InterfaceName]) -> RouterView {
    if wanted.is_empty() {
        return RouterView::default();
    }
    let ip_forward = read_switch("net/ipv4/ip_forward");
    let seen = killswitch_tunnel::netdev::all_links()
        .map_err(|e| e.to_string())
        .and_then(|links| Ok((links, wan_indexes()?)));
    match seen {
        Ok((links, wan)) => judge(&links, wanted, &wan, &forwarding, ip_forward),
        Err(e) => {
            tracing::warn!("cannot look at the router LANs: {e}");
            RouterView {
                lans: wanted.iter().cloned().map(SeenLan::absent).collect(),
                ip_forward,
            }
        }
    }
}

/// A look that sees no interface at all: for the simulation and tests, which must not depend on
/// the machine they run on.
pub fn nothing() -> LookRouter {
    Box::new(|wanted| RouterView {
        lans: wanted.iter().cloned().map(SeenLan::absent).collect(),
        ip_forward: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_tunnel::netdev::LinkIdentity;

    fn link(index: u32, name: &str, addrs: &[&str]) -> LinkFacts {
        LinkFacts {
            index,
            name: name.to_owned(),
            identity: LinkIdentity {
                kind: None,
                link_type: 1,
            },
            master: None,
            lower: None,
            gateway_routes: false,
            addresses: addrs.iter().map(|a| a.parse().expect("literal")).collect(),
        }
    }

    fn name(n: &str) -> InterfaceName {
        InterfaceName::new(n).expect("literal")
    }

    #[test]
    fn lans_get_the_networks_of_their_addresses_and_the_wan_is_refused() {
        let links = [
            link(1, "eth0", &["203.0.113.7/24"]),
            link(
                2,
                "lan0",
                &[
                    "192.168.50.1/24",
                    "192.168.50.2/24",
                    "fd00:50::1/64",
                    "fe80::1/64",
                ],
            ),
            link(3, "lan1", &[]),
        ];
        let on = |n: &str| n == "lan0";
        let view = judge(
            &links,
            &[name("lan0"), name("lan1"), name("lan9"), name("eth0")],
            &[1],
            &on,
            Some(false),
        );
        assert_eq!(view.ip_forward, Some(false));
        let lan0 = view.get(&name("lan0")).expect("judged");
        assert_eq!(
            lan0.networks,
            ["192.168.50.0/24", "fd00:50::/64"]
                .map(|n| n.parse::<IpNet>().expect("literal"))
                .to_vec(),
            "truncated, each once, no link-local"
        );
        assert!(lan0.present && lan0.forwarding && lan0.refused.is_none());
        let lan1 = view.get(&name("lan1")).expect("judged");
        assert!(lan1.present && lan1.networks.is_empty() && !lan1.forwarding);
        assert_eq!(
            view.get(&name("lan9")).expect("judged"),
            &SeenLan::absent(name("lan9"))
        );
        let wan = view.get(&name("eth0")).expect("judged");
        assert!(
            wan.refused.as_deref().is_some_and(|r| r.contains("WAN")),
            "{wan:?}"
        );
        assert_eq!(lan0.link().interface, name("lan0"));
    }

    #[test]
    fn loopback_exec_veths_and_the_tunnel_are_never_lans() {
        assert!(check_name(&name("lo")).is_err());
        let exec = check_name(&name("ksx3")).expect_err("the daemon's own");
        assert!(exec.contains("killswitch exec"), "{exec}");
        assert!(check_name(&name("lan0")).is_ok());
        assert!(check_name(&name("br-lan")).is_ok());
        assert!(check_not_tunnel(&name("wg0"), Some(&name("wg0"))).is_err());
        assert!(check_not_tunnel(&name("lan0"), Some(&name("wg0"))).is_ok());
        assert!(check_not_tunnel(&name("lan0"), None).is_ok());
    }

    #[test]
    fn the_simulated_look_sees_every_lan_absent() {
        let view = nothing()(&[name("lan0")]);
        assert_eq!(view.lans, vec![SeenLan::absent(name("lan0"))]);
        assert!(nothing()(&[]).lans.is_empty());
    }
}
