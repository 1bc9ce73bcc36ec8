//! The lab's network: a protected `client` host and a `net` host that is its LAN router, "the
//! internet" and the VPN server, joined by one veth link, the client's "physical" interface.
//!
//! ```text
//!  client ns                                   net ns
//!  phys0 192.168.50.2/24, fd50::2/64  <---->   lan0 192.168.50.1/24, fd50::1/64
//!  default via 192.168.50.1 / fd50::1          lo: 203.0.113.10, 2001:db8::10 (target)
//!                                                  198.51.100.1-4 (VPN endpoints)
//!                                                  192.0.2.53 (a public resolver)
//! ```
//!
//! Every address outside the namespaces' private link is from a documentation range, and every
//! one of them lives inside the `net` namespace: a leak reaches a lab host, never the real world.

use crate::netns::{Netns, veth};
use anyhow::Result;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The client's physical interface.
pub const PHYS: &str = "phys0";
/// The router's side of the link.
pub const LAN_IFACE: &str = "lan0";
/// The client's LAN address.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// The router's LAN address (gateway, LAN DNS resolver).
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The client's IPv6 LAN address.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, 2);
/// The router's IPv6 LAN address.
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, 1);
/// A host on "the internet", reachable directly over the physical link (so a leak arrives).
pub const TARGET_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The same host's IPv6 address.
pub const TARGET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// The first VPN server.
pub const ENDPOINT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The second VPN server (failover, endpoint swaps).
pub const ENDPOINT2_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A third VPN server (the `up` scenarios' second server).
pub const ENDPOINT3_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// A fourth VPN server (the model-based tester's third `up` server).
pub const ENDPOINT4_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 4);
/// A public resolver's address on "the internet".
pub const PUBLIC_DNS_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// The two namespaces and the link between them.
#[derive(Debug)]
pub struct Topology {
    /// The protected host.
    pub client: Netns,
    /// The router, the internet and the VPN servers.
    pub net: Netns,
}

impl Topology {
    /// Builds the topology. `tag` names the namespaces after the test that owns them.
    pub fn new(tag: &str) -> Result<Self> {
        let client = Netns::new(&format!("{tag}-c"))?;
        let net = Netns::new(&format!("{tag}-n"))?;
        veth(&client, PHYS, &net, LAN_IFACE)?;
        client.ip(&["addr", "add", &format!("{CLIENT_V4}/24"), "dev", PHYS])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_V6}/64"),
            "dev",
            PHYS,
            "nodad",
        ])?;
        client.ip(&["route", "add", "default", "via", &ROUTER_V4.to_string()])?;
        client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_V6.to_string(),
        ])?;
        net.ip(&["addr", "add", &format!("{ROUTER_V4}/24"), "dev", LAN_IFACE])?;
        net.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_V6}/64"),
            "dev",
            LAN_IFACE,
            "nodad",
        ])?;
        for host in [
            IpAddr::V4(TARGET_V4),
            IpAddr::V4(ENDPOINT_V4),
            IpAddr::V4(ENDPOINT2_V4),
            IpAddr::V4(ENDPOINT3_V4),
            IpAddr::V4(ENDPOINT4_V4),
            IpAddr::V4(PUBLIC_DNS_V4),
        ] {
            net.ip(&["addr", "add", &format!("{host}/32"), "dev", "lo"])?;
        }
        net.ip(&["addr", "add", &format!("{TARGET_V6}/128"), "dev", "lo"])?;
        // As a DHCP client on this LAN would be told: the router resolves names.
        client.set_resolv_conf(&format!("nameserver {ROUTER_V4}\n"))?;
        Ok(Topology { client, net })
    }

    /// Adds a route in the client namespace sending `prefix` to the physical gateway: what a
    /// hostile DHCP server pushes (option 121, CVE-2024-3661) to steer traffic past the tunnel.
    pub fn push_physical_route(&self, prefix: &str) -> Result<()> {
        self.client.ip(&[
            "route",
            "add",
            prefix,
            "via",
            &ROUTER_V4.to_string(),
            "dev",
            PHYS,
        ])?;
        Ok(())
    }
}
