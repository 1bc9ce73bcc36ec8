//! Which interfaces are this machine's own container and VM bridges, and how the allowed
//! interfaces look now.
//!
//! A **local bridge** is an interface of kind `bridge` whose every port is a veth or a tap (kind
//! `veth` or `tun`), or that has no port at all, whose addresses are all private (RFC 1918,
//! link-local, ULA), and by which no default route and no route through a gateway leaves (an
//! outside tester enslaved the uplink veth to a bridge: its default route gives it away). That is docker0, Docker's `br-*` networks, podman0/cni-podman0, libvirt's
//! virbr0 and LXD's lxdbr0 as they are made. A bridge that holds anything else (a physical NIC as
//! `br0` on a server, a VLAN, a bond, a VXLAN, a WireGuard link) reaches a network beyond this
//! machine and is not local. A veth alone is not local either: it is also how a container or a
//! namespace (this project's lab among them) reaches its uplink.
//!
//! Everything the judgement uses is set by this machine's root (link kinds, ports, addresses): no
//! packet, DHCP lease or router advertisement can make the physical link look like a bridge. A
//! public address on a bridge (a routed container network) takes it out, so that nothing routes a
//! public range around the tunnel by accident; such setups use `allow_interfaces`.
//!
//! An **allowed interface** (`allow_interfaces`) is honoured unless it leads beyond this machine:
//! a physical Ethernet or Wi-Fi device, one with a default or gateway route, or one stacked on or
//! bridging such a device. Allowing one would switch the kill switch off for the very link it
//! guards, and the administrator is told so in `status` instead (`allow_subnets` and `allow_inbound` are the
//! narrow ways to open something there).

use killswitch_policy::LocalLink;
use killswitch_policy::exceptions::is_private;
use killswitch_tunnel::netdev::LinkFacts;
use killswitch_types::InterfaceName;

/// What the daemon sees of the interfaces that matter to the exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalView {
    /// The local bridges, with their networks.
    pub bridges: Vec<LocalLink>,
    /// The allowed interfaces that exist and are honoured, with their networks.
    pub interfaces: Vec<LocalLink>,
    /// Allowed interfaces that are not honoured, and why.
    pub refused: Vec<String>,
    /// The names of every interface there is now.
    pub present: Vec<String>,
}

/// Port kinds that lead only to this machine's own containers and VMs.
const LOCAL_PORT_KINDS: [&str; 2] = ["veth", "tun"];

/// ARPHRD_ETHER and ARPHRD_IEEE80211.
const PHYSICAL_LINK_TYPES: [u16; 2] = [1, 801];

/// Why `facts` leads beyond this machine, if it does: it is a physical Ethernet or Wi-Fi device,
/// a default route or a route through a gateway leaves by it, or it is stacked on (a VLAN, a
/// macvlan) or bridges (a bridge, a bond) an interface that leads out.
fn leads_out(links: &[LinkFacts], facts: &LinkFacts, depth: u8) -> Option<String> {
    if facts.identity.kind.is_none() && PHYSICAL_LINK_TYPES.contains(&facts.identity.link_type) {
        return Some(format!("{} is a physical interface", facts.name));
    }
    if facts.gateway_routes {
        return Some(format!(
            "{} carries a route through a gateway (it leads beyond this machine)",
            facts.name
        ));
    }
    // Stacks are shallow (a VLAN on a bond on a NIC); a loop in them would be the kernel's bug.
    if depth >= 4 {
        return None;
    }
    let below = links
        .iter()
        .filter(|l| Some(l.index) == facts.lower || l.master == Some(facts.index));
    for under in below {
        if let Some(why) = leads_out(links, under, depth + 1) {
            return Some(format!("{} rests on {}: {why}", facts.name, under.name));
        }
    }
    None
}

/// Judges `links` (the whole namespace's interfaces); `allowed` are the allowed interfaces' names,
/// `detect_bridges` whether local bridges are recognised at all.
pub fn judge(links: &[LinkFacts], allowed: &[InterfaceName], detect_bridges: bool) -> LocalView {
    let mut view = LocalView {
        present: links.iter().map(|l| l.name.clone()).collect(),
        ..LocalView::default()
    };
    let link_of = |facts: &LinkFacts| {
        InterfaceName::new(&facts.name)
            .ok()
            .map(|interface| LocalLink {
                interface,
                networks: facts.addresses.clone(),
            })
    };
    if detect_bridges {
        for bridge in links
            .iter()
            .filter(|l| l.identity.kind.as_deref() == Some("bridge"))
        {
            let ports_local = links
                .iter()
                .filter(|port| port.master == Some(bridge.index))
                .all(|port| {
                    port.identity
                        .kind
                        .as_deref()
                        .is_some_and(|kind| LOCAL_PORT_KINDS.contains(&kind))
                });
            let private = bridge.addresses.iter().all(is_private);
            // A name that is also allowed explicitly counts once, as allowed.
            let named = allowed.iter().any(|a| a.as_str() == bridge.name);
            if ports_local && private && !named && leads_out(links, bridge, 0).is_none() {
                view.bridges.extend(link_of(bridge));
            }
        }
    }
    for name in allowed {
        match links.iter().find(|l| l.name == name.as_str()) {
            Some(facts) => match leads_out(links, facts, 0) {
                Some(why) => view.refused.push(format!(
                    "allow_interfaces: {why}: allowing it would switch the kill switch off for it \
                     (use allow_subnets or allow_inbound)"
                )),
                None => view.interfaces.extend(link_of(facts)),
            },
            // Not there (yet): the rules name it all the same; it has no networks to route.
            None => view.interfaces.push(LocalLink::named(name.clone())),
        }
    }
    view
}

/// The view of this network namespace now; on a netlink failure, none (no bridge counts as local
/// and no allowed interface is honoured), which fails closed.
pub fn look(allowed: &[InterfaceName], detect_bridges: bool) -> LocalView {
    use killswitch_tunnel::netdev;
    let links = netdev::all_links().and_then(|mut links| {
        // Routes matter only when there is something to judge by them: most machines have no
        // bridge and allow no interface, and a router's tables can be large.
        let judged = links.iter().any(|l| {
            (detect_bridges && l.identity.kind.as_deref() == Some("bridge"))
                || allowed.iter().any(|a| a.as_str() == l.name)
        });
        if judged {
            netdev::mark_gateway_routes(&mut links, killswitch_policy::routes::ROUTE_TABLE)?;
        }
        Ok(links)
    });
    match links {
        Ok(links) => judge(&links, allowed, detect_bridges),
        Err(e) => {
            // Nothing can be judged: no bridge is local and no allowed interface is honoured.
            tracing::warn!("cannot list interfaces for the local bridges: {e}");
            LocalView {
                refused: allowed
                    .iter()
                    .map(|n| format!("{n} cannot be checked ({e}); not allowed until it can"))
                    .collect(),
                ..LocalView::default()
            }
        }
    }
}

/// A look that sees no interface at all (allowed ones by name only): for the simulation and
/// tests, which must not depend on the machine they run on.
pub fn nothing() -> crate::core::LookLocals {
    Box::new(|allowed, _| judge(&[], allowed, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_tunnel::netdev::LinkIdentity;

    fn link(
        index: u32,
        name: &str,
        kind: Option<&str>,
        master: Option<u32>,
        addrs: &[&str],
    ) -> LinkFacts {
        LinkFacts {
            index,
            name: name.to_owned(),
            identity: LinkIdentity {
                kind: kind.map(str::to_owned),
                link_type: 1,
            },
            master,
            lower: None,
            gateway_routes: false,
            addresses: addrs.iter().map(|a| a.parse().expect("literal")).collect(),
        }
    }

    fn name(n: &str) -> InterfaceName {
        InterfaceName::new(n).expect("literal")
    }

    fn names(links: &[LocalLink]) -> Vec<&str> {
        links.iter().map(|l| l.interface.as_str()).collect()
    }

    #[test]
    fn container_and_vm_bridges_are_local_and_bridged_nics_are_not() {
        let links = [
            link(1, "eth0", None, None, &["192.168.1.10/24"]),
            link(2, "docker0", Some("bridge"), None, &["172.17.0.1/16"]),
            link(3, "vethab", Some("veth"), Some(2), &[]),
            link(4, "virbr0", Some("bridge"), None, &["192.168.122.1/24"]),
            link(5, "vnet0", Some("tun"), Some(4), &[]),
            link(6, "br-empty", Some("bridge"), None, &[]),
            link(7, "br0", Some("bridge"), None, &["192.168.2.1/24"]),
            link(8, "eth1", None, Some(7), &[]),
            link(9, "br-vlan", Some("bridge"), None, &["10.1.0.1/24"]),
            link(10, "eth0.5", Some("vlan"), Some(9), &[]),
            link(11, "br-public", Some("bridge"), None, &["203.0.113.1/24"]),
            link(12, "veth-up", Some("veth"), None, &["10.9.0.2/24"]),
        ];
        let mut links = links.to_vec();
        // A bridge that carries the uplink through a veth: its default route gives it away.
        let mut uplink = link(13, "br-up", Some("bridge"), None, &["192.168.50.2/24"]);
        uplink.gateway_routes = true;
        links.push(uplink);
        links.push(link(14, "veth-up2", Some("veth"), Some(13), &[]));
        let view = judge(&links, &[], true);
        assert_eq!(names(&view.bridges), ["docker0", "virbr0", "br-empty"]);
        assert_eq!(view.bridges[0].networks[0].to_string(), "172.17.0.1/16");
        assert!(judge(&links, &[], false).bridges.is_empty());
        assert!(view.present.iter().any(|n| n == "eth0"));
    }

    #[test]
    fn allowed_interfaces_are_honoured_unless_physical() {
        let mut tailscale = link(3, "tailscale0", Some("tun"), None, &["100.101.102.103/32"]);
        tailscale.identity.link_type = 65534;
        let links = [
            link(1, "eth0", None, None, &["192.168.1.10/24"]),
            tailscale,
            link(2, "docker0", Some("bridge"), None, &["172.17.0.1/16"]),
        ];
        let view = judge(
            &links,
            &[
                name("tailscale0"),
                name("eth0"),
                name("zt0"),
                name("docker0"),
            ],
            true,
        );
        assert_eq!(names(&view.interfaces), ["tailscale0", "zt0", "docker0"]);
        assert_eq!(view.interfaces[0].networks.len(), 1);
        assert!(view.interfaces[1].networks.is_empty());
        assert!(view.bridges.is_empty(), "docker0 counts once, as allowed");
        assert_eq!(view.refused.len(), 1);
        assert!(
            view.refused[0].contains("eth0 is a physical interface"),
            "{}",
            view.refused[0]
        );
    }

    #[test]
    fn uplinks_of_every_shape_are_refused() {
        let mut veth_uplink = link(2, "eth0", Some("veth"), None, &["10.0.3.5/24"]);
        veth_uplink.gateway_routes = true;
        let mut macvlan = link(4, "mv0", Some("macvlan"), None, &[]);
        macvlan.lower = Some(1);
        let mut overlay_exit = link(6, "tailscale0", Some("tun"), None, &["100.64.0.2/32"]);
        overlay_exit.gateway_routes = true;
        let links = [
            link(1, "enp1s0", None, Some(3), &[]),
            veth_uplink,
            link(3, "br0", Some("bridge"), None, &["192.168.1.10/24"]),
            macvlan,
            link(5, "zt0", Some("tun"), None, &["10.147.17.5/24"]),
            overlay_exit,
        ];
        let all = ["eth0", "br0", "mv0", "zt0", "tailscale0"].map(name);
        let view = judge(&links, &all, true);
        assert_eq!(names(&view.interfaces), ["zt0"]);
        assert_eq!(view.refused.len(), 4, "{:?}", view.refused);
        assert!(view.refused[1].contains("br0 rests on enp1s0: enp1s0 is a physical interface"));
        assert!(view.refused[0].contains("eth0 carries a route through a gateway"));
    }
}
