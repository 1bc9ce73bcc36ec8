//! What may pass outside the tunnel besides loopback and link bring-up: the LAN (with allow-lan),
//! this machine's own container and VM bridges, and what the administrator allowed explicitly.
//!
//! - **Local bridges** (docker0, br-*, podman0, virbr0, lxdbr0 ...) are found by the daemon, not
//!   configured: a bridge whose every port is a veth or a tap (or that has none) and whose
//!   addresses are all private. Traffic between this machine and them, and between the hosts on
//!   one of them, is local in every state; what their hosts send further is forwarded, and the
//!   forward chain lets it only into the tunnel. A bridge with a physical port (`br0` holding
//!   `eth0`) is a LAN, not a local bridge. The judgement uses only what this machine's root
//!   configures (link kinds, ports, addresses); nothing a network sends can make the physical
//!   link look like a bridge.
//! - **Allowed interfaces** (`allow_interfaces`): their traffic passes both ways, and the routing
//!   layer sends their networks to them rather than into the tunnel.
//! - **Allowed subnets** (`allow_subnets`): reachable by one named interface; only private ranges
//!   unless the administrator writes `public`.
//! - **Allowed inbound services** (`allow_inbound`): new connections to a local port arriving on a
//!   named interface are accepted and their conntrack entry is marked (one bit of the conntrack
//!   mark, [`CT_MARK_INBOUND`]); the output side lets out only packets of marked flows, from that
//!   port, by that interface. A flow that started in the tunnel (or anywhere else) never carries
//!   the mark, so it cannot use the exception after a drop.
//!
//! None of them opens DNS: the DNS rules come first in every chain, so a DNS query leaves by the
//! tunnel to its resolvers or not at all, whatever is allowed.

use crate::compile::Lan;
use crate::ranges;
use ipnet::IpNet;
use killswitch_types::{Allows, InboundAllow, InterfaceName, SubnetAllow};

/// The bit of the conntrack mark that says "this flow arrived through an allowed inbound
/// service". One bit, set with a read-modify-write, so other programs' use of the other bits (a
/// wg-quick tunnel keeps its fwmark there) is left alone.
pub const CT_MARK_INBOUND: u32 = 0x0800_0000;

/// An interface traffic may use outside the tunnel, with the networks of its addresses (what the
/// routing layer sends to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLink {
    /// The interface.
    pub interface: InterfaceName,
    /// The networks of its addresses (`172.17.0.1/16`: 172.17.0.0/16).
    pub networks: Vec<IpNet>,
}

impl LocalLink {
    /// A link known by name only (not seen yet, or without addresses).
    pub fn named(interface: InterfaceName) -> Self {
        LocalLink {
            interface,
            networks: Vec::new(),
        }
    }
}

/// Everything besides the tunnel that the rules let through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exceptions {
    /// What allow-lan opens (when it is on).
    pub lan: Lan,
    /// This machine's own container and VM bridges.
    pub local_bridges: Vec<LocalLink>,
    /// Interfaces the administrator allowed, as seen now.
    pub interfaces: Vec<LocalLink>,
    /// Subnets the administrator allowed.
    pub subnets: Vec<SubnetAllow>,
    /// Inbound services the administrator allowed.
    pub inbound: Vec<InboundAllow>,
    /// The uids of tunnel-only users: the opposite of an exception, a scope that fails closed on
    /// its own. Their packets leave through the tunnel or not at all, in every state, even where
    /// the machine as a whole has no rules (see [`crate::compile`]). Carried here because this is
    /// the one seam through which everything the administrator configured reaches the compiler.
    pub tunnel_only_uids: Vec<u32>,
    /// The live `killswitch exec` namespaces: scopes too, whose forwarded packets leave through
    /// the tunnel or not at all, in every state ([`crate::exec`]).
    pub exec_scopes: Vec<crate::exec::ExecScope>,
    /// The bypass cgroup, while a program runs under `killswitch exec --bypass`: its sockets
    /// may leave by any interface ([`crate::bypass`]).
    pub bypass: Option<crate::bypass::BypassScope>,
    /// Router mode (issue 17): the LAN interfaces whose clients this machine protects as their
    /// gateway, with the networks of their addresses (the clients' subnets). Scopes too: their
    /// forwarded packets leave through the tunnel or not at all, in every state
    /// ([`crate::router`]).
    pub router_lans: Vec<LocalLink>,
}

impl From<Lan> for Exceptions {
    fn from(lan: Lan) -> Self {
        Exceptions {
            lan,
            ..Exceptions::default()
        }
    }
}

impl Exceptions {
    /// The explicit allows in `allows`, `interfaces` being how the allowed interfaces look now
    /// (the rules name them either way; their networks matter only to the routing layer).
    pub fn with_allows(mut self, allows: &Allows, interfaces: Vec<LocalLink>) -> Self {
        self.interfaces = allows
            .interfaces
            .iter()
            .map(|name| {
                interfaces
                    .iter()
                    .find(|seen| &seen.interface == name)
                    .cloned()
                    .unwrap_or_else(|| LocalLink::named(name.clone()))
            })
            .collect();
        self.subnets = allows.subnets.clone();
        self.inbound = allows.inbound.clone();
        self
    }

    /// The networks the routing layer sends to a local or allowed interface: not link-local ones
    /// (each link has its own fe80::/64, and a route for it in our table would only compete with
    /// the main table's), and each network once.
    pub(crate) fn routed_links(&self) -> Vec<(IpNet, &InterfaceName)> {
        let mut routes: Vec<(IpNet, &InterfaceName)> = Vec::new();
        for link in self.local_bridges.iter().chain(&self.interfaces) {
            for net in &link.networks {
                let net = net.trunc();
                if is_link_local(&net) || routes.iter().any(|(n, _)| *n == net) {
                    continue;
                }
                routes.push((net, &link.interface));
            }
        }
        routes
    }
}

/// Whether `net` lies inside the private, link-local or ULA ranges.
pub fn is_private(net: &IpNet) -> bool {
    ranges::LAN_UNICAST
        .iter()
        .any(|lan| lan.contains(&net.network()) && lan.contains(&net.broadcast()))
}

fn is_link_local(net: &IpNet) -> bool {
    [ranges::LINK_LOCAL_V6, ranges::LAN_UNICAST[3]]
        .iter()
        .any(|ll| ll.contains(&net.network()))
}

/// The widest public range an exception may name: a service's or a provider's range, not a
/// continent's. Wider is the kill switch switched off by another name.
pub const WIDEST_PUBLIC_V4: u8 = 8;
/// The same for IPv6 (a /16 is far more than any one organisation holds).
pub const WIDEST_PUBLIC_V6: u8 = 16;

/// Checks explicit allows against what the policy permits: counts, and no public subnet without
/// the administrator's `public`. The error names the entry.
pub fn check_allows(allows: &Allows) -> Result<(), String> {
    allows.check_counts()?;
    if let Some(public) = allows
        .subnets
        .iter()
        .find(|s| !s.public && !is_private(&s.subnet))
    {
        return Err(format!(
            "{} is outside the private ranges; mark it public if the internet is really meant \
             (`public` after the interface in config.toml, --public on the command line)",
            public.subnet
        ));
    }
    if let Some(wide) = allows.subnets.iter().find(|s| {
        let widest = if s.subnet.addr().is_ipv4() {
            WIDEST_PUBLIC_V4
        } else {
            WIDEST_PUBLIC_V6
        };
        s.subnet.prefix_len() < widest && !is_private(&s.subnet)
    }) {
        return Err(format!(
            "{} would let a large part of the internet out of {} in clear: a public exception \
             may be at most a /{WIDEST_PUBLIC_V4} (IPv4) or a /{WIDEST_PUBLIC_V6} (IPv6); anything wider is \
             switching the kill switch off",
            wide.subnet, wide.interface
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(subnets: &[&str]) -> Allows {
        Allows {
            subnets: subnets
                .iter()
                .map(|s| s.parse().expect("literal"))
                .collect(),
            ..Allows::default()
        }
    }

    #[test]
    fn public_subnets_need_the_flag() {
        assert!(check_allows(&allows(&["10.99.0.0/16 on eth0", "fd00:1::/64 on eth0"])).is_ok());
        let err = check_allows(&allows(&["198.51.100.0/24 on eth0"])).expect_err("public");
        assert!(
            err.contains("198.51.100.0/24") && err.contains("public"),
            "{err}"
        );
        assert!(check_allows(&allows(&["198.51.100.0/24 on eth0 public"])).is_ok());
        // A range that only starts private is not private.
        assert!(check_allows(&allows(&["10.0.0.0/7 on eth0"])).is_err());
        assert!(check_allows(&allows(&["0.0.0.0/0 on eth0 public"])).is_err());
        assert!(check_allows(&allows(&["0.0.0.0/1 on eth0 public"])).is_err());
        assert!(check_allows(&allows(&["2000::/3 on eth0 public"])).is_err());
        assert!(check_allows(&allows(&["203.0.0.0/8 on eth0 public"])).is_ok());
        assert!(
            check_allows(&allows(&["10.0.0.0/8 on eth0"])).is_ok(),
            "private, any size"
        );
    }

    #[test]
    fn routed_networks_skip_link_local_and_duplicates() {
        let name = |n: &str| InterfaceName::new(n).expect("literal");
        let exceptions = Exceptions {
            local_bridges: vec![LocalLink {
                interface: name("docker0"),
                networks: vec![
                    "172.17.0.1/16".parse().expect("literal"),
                    "fe80::1/64".parse().expect("literal"),
                ],
            }],
            interfaces: vec![LocalLink {
                interface: name("tailscale0"),
                networks: vec!["172.17.0.0/16".parse().expect("literal")],
            }],
            ..Exceptions::default()
        };
        let routed = exceptions.routed_links();
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].0.to_string(), "172.17.0.0/16");
        assert_eq!(routed[0].1.as_str(), "docker0");
    }
}
