//! The leak oracle: what may appear on the client's physical link, and what is a leak.
//!
//! Allowed outgoing frames are the tunnel's own transport (UDP to a VPN endpoint's port), the link
//! bring-up traffic the policy allows (ARP, DHCP, neighbour discovery), and the kernel's own
//! multicast membership reports to link-scoped groups (MLD, IGMP with hop limit 1, which no router
//! forwards). Every other outgoing frame is a leak, whatever it carries: the capture, not the
//! absence of an error, decides.

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

/// Judges one captured frame; incoming frames are never leaks (`None`). `lan_allowed` says whether
/// the user had allowed the LAN when the frame was sent.
pub fn judge(
    captured: &Captured,
    endpoints: &[SocketAddr],
    lan_allowed: bool,
) -> Option<Judgement> {
    if captured.direction != Direction::Outgoing {
        return None;
    }
    Some(match &captured.frame {
        Frame::Arp => Judgement::LinkBringUp,
        Frame::Ip(ip) => match ip.transport {
            L4::Udp { dport, .. }
                if endpoints
                    .iter()
                    .any(|e| e.ip() == ip.dst && e.port() == dport) =>
            {
                Judgement::Tunnel
            }
            L4::Udp {
                sport: 68,
                dport: 67,
            }
            | L4::Udp {
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
            _ if lan_allowed && is_lan(ip.dst) => Judgement::Lan,
            _ => Judgement::Leak(ip.to_string()),
        },
        other => Judgement::Leak(other.to_string()),
    })
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
    use crate::packet::IpPacket;
    use std::time::Instant;

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
