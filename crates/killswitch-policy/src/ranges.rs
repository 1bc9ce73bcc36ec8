//! The fixed address ranges the policy refers to.
//!
//! "The LAN" is deliberately a fixed list of private, link-local and multicast ranges, never "the
//! prefix of the local interface": a hostile network can hand out a public prefix, and allowing
//! whatever the interface carries would turn allow-lan into allow-internet (the "LocalNet" attack).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
        Ok(net) => net,
        Err(_) => panic!("invalid constant prefix length"),
    })
}

const fn v6(segments: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::V6(
        match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len) {
            Ok(net) => net,
            Err(_) => panic!("invalid constant prefix length"),
        },
    )
}

/// Private unicast ranges a LAN host can have as its address (valid as a source or destination).
pub const LAN_UNICAST: [IpNet; 6] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
    v4(169, 254, 0, 0, 16),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
];

/// Multicast and limited broadcast: LAN destinations only.
pub const LAN_GROUP: [IpNet; 3] = [
    v4(224, 0, 0, 0, 4),
    v4(255, 255, 255, 255, 32),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// Where a DHCPv4 client broadcasts (discover, request, rebind): the limited broadcast, which no
/// router forwards.
pub const DHCPV4_BROADCAST: IpNet = v4(255, 255, 255, 255, 32);

/// Where a DHCPv4 client may renew its lease by unicast: a server on a private range. The rule that
/// admits these forces the TTL to 1, so that only a server on the link can receive them.
pub const DHCPV4_UNICAST_SERVERS: [IpNet; 3] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
];

/// All_DHCP_Relay_Agents_and_Servers, where DHCPv6 clients send.
pub const DHCPV6_SERVERS: IpNet = v6([0xff02, 0, 0, 0, 0, 0, 1, 2], 128);

/// IPv6 link-local unicast.
pub const LINK_LOCAL_V6: IpNet = v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10);

/// All-routers multicast, where router solicitations go.
pub const ALL_ROUTERS_V6: IpNet = v6([0xff02, 0, 0, 0, 0, 0, 0, 2], 128);

/// All-nodes multicast, where unsolicited neighbour advertisements go.
pub const ALL_NODES_V6: IpNet = v6([0xff02, 0, 0, 0, 0, 0, 0, 1], 128);

/// Solicited-node multicast, where neighbour solicitations for address resolution go.
pub const SOLICITED_NODE_V6: IpNet = v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 0], 104);

/// Whether `ip` is in one of the LAN ranges (unicast or group).
pub fn is_lan(ip: IpAddr) -> bool {
    LAN_UNICAST
        .iter()
        .chain(LAN_GROUP.iter())
        .any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_membership() {
        for lan in [
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.1.1",
            "224.0.0.251",
            "255.255.255.255",
            "fe80::1",
            "fd00::1",
            "ff02::fb",
        ] {
            assert!(is_lan(lan.parse().expect("ip")), "{lan}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "203.0.113.10",
            "2001:db8::10",
            "100.64.0.1",
            "11.0.0.1",
        ] {
            assert!(!is_lan(public.parse().expect("ip")), "{public}");
        }
    }
}
