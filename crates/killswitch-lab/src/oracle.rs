//! The leak oracle: what may appear on the client's physical link, and what is a leak.
//!
//! Allowed outgoing frames are the tunnel's own transport (UDP to a VPN endpoint's port), the link
//! bring-up traffic the policy allows (ARP, DHCP, neighbour discovery), and the kernel's own
//! multicast membership reports to link-scoped groups (MLD, IGMP with hop limit 1, which no router
//! forwards). Every other outgoing frame is a leak, whatever it carries: the capture, not the
//! absence of an error, decides. So is a frame of an allowed kind that names one of the client's
//! tunnel addresses (an ARP reply "10.64.0.2 is at" the physical MAC, a neighbour advertisement for
//! it, any packet from it): it tells the LAN that this machine is the tunnel's end. And so is a
//! DHCP renewal that a router would forward (unicast with a TTL above 1): DHCP is allowed to reach
//! the link, not beyond it.

use crate::capture::{Captured, Direction};
use crate::packet::{Frame, L4};
use std::net::{IpAddr, SocketAddr};

/// How an outgoing frame is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The tunnel's own packets to its server.
    Tunnel,
    /// ARP, DHCP or NDP.
    LinkBringUp,
    /// Traffic to the LAN (not DNS) while the user allows the LAN.
    Lan,
    /// Anything else: a leak, described.
    Leak(String),
}

/// What the oracle knows about the lab when a frame was sent.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The VPN servers' endpoints: where the tunnel's own packets go.
    pub endpoints: &'a [SocketAddr],
    /// The client's addresses inside its tunnels: no frame on the physical link may name them.
    pub tunnel_addresses: &'a [IpAddr],
    /// Whether the user had allowed the LAN.
    pub lan_allowed: bool,
}

/// Judges one captured frame; incoming frames are never leaks (`None`).
pub fn judge(captured: &Captured, facts: &Facts<'_>) -> Option<Judgement> {
    if captured.direction != Direction::Outgoing {
        return None;
    }
    let tunnel_address = |ip: IpAddr| facts.tunnel_addresses.contains(&ip);
    Some(match &captured.frame {
        Frame::Arp(arp) if tunnel_address(IpAddr::V4(arp.sender_ip)) => {
            Judgement::Leak(format!("{arp}: discloses the tunnel address"))
        }
        Frame::Arp(_) => Judgement::LinkBringUp,
        Frame::Ip(ip) if tunnel_address(ip.src) => {
            Judgement::Leak(format!("{ip}: from the tunnel address"))
        }
        Frame::Ip(ip)
            if ip
                .nd_target()
                .is_some_and(|t| tunnel_address(IpAddr::V6(t))) =>
        {
            Judgement::Leak(format!("{ip}: discloses the tunnel address"))
        }
        Frame::Ip(ip) => match ip.transport {
            L4::Udp { dport, .. }
                if facts
                    .endpoints
                    .iter()
                    .any(|e| e.ip() == ip.dst && e.port() == dport) =>
            {
                Judgement::Tunnel
            }
            // DHCPv4: to the limited broadcast, or unicast that no router forwards.
            L4::Udp {
                sport: 68,
                dport: 67,
            } if is_broadcast(ip.dst) || ip.hop_limit <= 1 => Judgement::LinkBringUp,
            L4::Udp {
                sport: 68,
                dport: 67,
            } => Judgement::Leak(format!(
                "{ip} ttl {}: a router would forward it",
                ip.hop_limit
            )),
            L4::Udp {
                sport: 546,
                dport: 547,
            } => Judgement::LinkBringUp,
            L4::Icmpv6 { kind: 133..=136 } if ip.hop_limit == 255 => Judgement::LinkBringUp,
            // Multicast listener reports the kernel sends: hop limit 1, to link-scoped groups, so
            // no router forwards them. The firewall blocks them; the routing layer alone cannot
            // (they use the `local` table), which matters only while the firewall is gone.
            L4::Icmpv6 {
                kind: 130..=132 | 143,
            } if ip.hop_limit == 1 && is_link_scoped_multicast(ip.dst) => Judgement::LinkBringUp,
            L4::Other(2) if ip.hop_limit == 1 && is_link_scoped_multicast(ip.dst) => {
                Judgement::LinkBringUp
            }
            L4::Udp {
                dport: 53 | 853, ..
            }
            | L4::Tcp {
                dport: 53 | 853, ..
            } => Judgement::Leak(ip.to_string()),
            _ if facts.lan_allowed && is_lan(ip.dst) => Judgement::Lan,
            _ => Judgement::Leak(ip.to_string()),
        },
        other => Judgement::Leak(other.to_string()),
    })
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// ff02::/16 and 224.0.0.0/24: multicast that never leaves the link.
fn is_link_scoped_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] == 0xff02,
    }
}

/// The LAN as the issue defines it. Written here on purpose rather than taken from
/// `killswitch-policy`: the oracle must not share a mistake with the code it judges.
fn is_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 10
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 169 && b == 254)
                || (224..240).contains(&a)
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xffc0) == 0xfe80 || (first & 0xfe00) == 0xfc00 || (first & 0xff00) == 0xff00
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Arp, IpPacket};
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn judge(
        captured: &Captured,
        endpoints: &[SocketAddr],
        lan_allowed: bool,
    ) -> Option<Judgement> {
        super::judge(
            captured,
            &Facts {
                endpoints,
                tunnel_addresses: &[TUNNEL_V4.into()],
                lan_allowed,
            },
        )
    }

    const TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 2);

    fn arp(operation: u16, sender: Ipv4Addr, target: Ipv4Addr) -> Captured {
        Captured {
            at: Instant::now(),
            direction: Direction::Outgoing,
            frame: Frame::Arp(Arp {
                operation,
                sender_mac: [2, 0, 0, 0, 0, 2],
                sender_ip: sender,
                target_ip: target,
            }),
        }
    }

    #[test]
    fn naming_the_tunnel_address_on_the_physical_link_is_a_leak() {
        let router = Ipv4Addr::new(192, 168, 50, 1);
        let client = Ipv4Addr::new(192, 168, 50, 2);
        assert!(matches!(
            judge(&arp(Arp::REPLY, TUNNEL_V4, router), &[], false),
            Some(Judgement::Leak(what)) if what.contains("10.64.0.2 is-at")
        ));
        assert!(matches!(
            judge(&arp(Arp::REQUEST, TUNNEL_V4, router), &[], true),
            Some(Judgement::Leak(_))
        ));
        assert_eq!(
            judge(&arp(Arp::REPLY, client, router), &[], false),
            Some(Judgement::LinkBringUp)
        );
        assert_eq!(
            judge(&arp(Arp::REQUEST, client, TUNNEL_V4), &[], false),
            Some(Judgement::LinkBringUp),
            "asking about it is not disclosing it"
        );
        let from_tunnel = out(
            "10.64.0.2",
            "192.168.50.1",
            L4::Udp {
                sport: 5000,
                dport: 5001,
            },
            64,
        );
        assert!(matches!(
            judge(&from_tunnel, &[], true),
            Some(Judgement::Leak(_))
        ));
        let incoming = Captured {
            direction: Direction::Incoming,
            ..arp(Arp::REPLY, TUNNEL_V4, router)
        };
        assert_eq!(judge(&incoming, &[], false), None);
    }

    #[test]
    fn a_dhcp_renewal_a_router_would_forward_is_a_leak() {
        let renew = |ttl| {
            out(
                "192.168.50.2",
                "10.77.0.2",
                L4::Udp {
                    sport: 68,
                    dport: 67,
                },
                ttl,
            )
        };
        assert_eq!(judge(&renew(1), &[], false), Some(Judgement::LinkBringUp));
        assert!(matches!(
            judge(&renew(64), &[], true),
            Some(Judgement::Leak(what)) if what.contains("ttl 64")
        ));
    }

    fn out(src: &str, dst: &str, transport: L4, hop_limit: u8) -> Captured {
        Captured {
            at: Instant::now(),
            direction: Direction::Outgoing,
            frame: Frame::Ip(IpPacket {
                src: src.parse().expect("ip"),
                dst: dst.parse().expect("ip"),
                hop_limit,
                transport,
                payload: Vec::new(),
            }),
        }
    }

    #[test]
    fn tunnel_and_link_bring_up_pass_everything_else_leaks() {
        let endpoints = ["198.51.100.1:51820".parse().expect("addr")];
        let wg = out(
            "192.168.50.2",
            "198.51.100.1",
            L4::Udp {
                sport: 40000,
                dport: 51820,
            },
            64,
        );
        assert_eq!(judge(&wg, &endpoints, false), Some(Judgement::Tunnel));
        let wrong_port = out(
            "192.168.50.2",
            "198.51.100.1",
            L4::Udp {
                sport: 40000,
                dport: 51821,
            },
            64,
        );
        assert!(matches!(
            judge(&wrong_port, &endpoints, false),
            Some(Judgement::Leak(_))
        ));
        let dhcp = out(
            "0.0.0.0",
            "255.255.255.255",
            L4::Udp {
                sport: 68,
                dport: 67,
            },
            64,
        );
        assert_eq!(
            judge(&dhcp, &endpoints, false),
            Some(Judgement::LinkBringUp)
        );
        let ns = out("fe80::2", "ff02::1:ff00:1", L4::Icmpv6 { kind: 135 }, 255);
        assert_eq!(judge(&ns, &endpoints, false), Some(Judgement::LinkBringUp));
        let fake_ns = out("fd50::2", "2001:db8::10", L4::Icmpv6 { kind: 135 }, 64);
        assert!(matches!(
            judge(&fake_ns, &endpoints, false),
            Some(Judgement::Leak(_))
        ));
        let web = out(
            "192.168.50.2",
            "203.0.113.10",
            L4::Tcp {
                sport: 1,
                dport: 443,
                flags: 2,
            },
            64,
        );
        assert_eq!(
            judge(&web, &endpoints, true),
            Some(Judgement::Leak(
                "tcp 192.168.50.2:1 -> 203.0.113.10:443 flags 0x02".into()
            ))
        );
        let mld = out("fe80::2", "ff02::16", L4::Icmpv6 { kind: 143 }, 1);
        assert_eq!(judge(&mld, &endpoints, false), Some(Judgement::LinkBringUp));
        let routed_mld = out("fe80::2", "ff05::16", L4::Icmpv6 { kind: 143 }, 1);
        assert!(
            matches!(
                judge(&routed_mld, &endpoints, false),
                Some(Judgement::Leak(_))
            ),
            "site scope is not the link"
        );
        let ssdp = out(
            "192.168.50.2",
            "239.255.255.250",
            L4::Udp {
                sport: 5000,
                dport: 1900,
            },
            4,
        );
        assert!(matches!(
            judge(&ssdp, &endpoints, false),
            Some(Judgement::Leak(_))
        ));
        assert_eq!(judge(&ssdp, &endpoints, true), Some(Judgement::Lan));
        let lan_dns = out(
            "192.168.50.2",
            "192.168.50.1",
            L4::Udp {
                sport: 5000,
                dport: 53,
            },
            64,
        );
        assert!(
            matches!(judge(&lan_dns, &endpoints, true), Some(Judgement::Leak(_))),
            "DNS to the LAN is a leak even with allow-lan"
        );
        let public = out(
            "192.168.50.2",
            "172.32.0.1",
            L4::Udp {
                sport: 5000,
                dport: 5,
            },
            64,
        );
        assert!(matches!(
            judge(&public, &endpoints, true),
            Some(Judgement::Leak(_))
        ));
        let incoming = Captured {
            direction: Direction::Incoming,
            ..web
        };
        assert_eq!(judge(&incoming, &endpoints, false), None);
    }
}
