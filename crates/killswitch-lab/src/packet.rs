//! Parsing captured Ethernet frames into the few fields a leak report needs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a frame carried, as far as the leak oracle cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An IPv4 or IPv6 packet.
    Ip(IpPacket),
    /// An ARP message for IPv4 over Ethernet.
    Arp(Arp),
    /// Any other ethertype (an ARP message of another layout included, as 0x0806).
    Other(u16),
}

/// An ARP message for IPv4 over Ethernet (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 for a request ("who has TARGET? tell SENDER"), 2 for a reply ("SENDER is at MAC").
    pub operation: u16,
    /// The sender's hardware address.
    pub sender_mac: [u8; 6],
    /// The sender's protocol address: in a reply, the address being disclosed.
    pub sender_ip: Ipv4Addr,
    /// The target's protocol address: in a request, the address being asked about.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// ARP request.
    pub const REQUEST: u16 = 1;
    /// ARP reply.
    pub const REPLY: u16 = 2;
}

/// An IP packet's addresses and transport header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPacket {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub hop_limit: u8,
    /// The transport header.
    pub transport: L4,
    /// The transport payload (up to what was captured).
    pub payload: Vec<u8>,
}

/// A transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// The flag byte (SYN = 0x02, RST = 0x04, ACK = 0x10).
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMPv4.
    Icmp {
        /// Message type.
        kind: u8,
    },
    /// ICMPv6.
    Icmpv6 {
        /// Message type.
        kind: u8,
    },
    /// Another protocol, or a truncated header.
    Other(u8),
}

const ETH_HLEN: usize = 14;

/// Parses an Ethernet frame.
pub fn parse_ethernet(frame: &[u8]) -> Frame {
    let Some(ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Frame::Other(0);
    };
    let body = &frame[ETH_HLEN.min(frame.len())..];
    match ethertype {
        0x0800 => parse_ipv4(body).map_or(Frame::Other(ethertype), Frame::Ip),
        0x86dd => parse_ipv6(body).map_or(Frame::Other(ethertype), Frame::Ip),
        0x0806 => parse_arp(body).map_or(Frame::Other(ethertype), Frame::Arp),
        other => Frame::Other(other),
    }
}

/// An Ethernet/IPv4 ARP message: hardware type 1 or 6 (IEEE 802), protocol 0x0800, lengths 6
/// and 4; anything else is not decoded.
fn parse_arp(b: &[u8]) -> Option<Arp> {
    let header: &[u8; 28] = b.get(..28)?.try_into().ok()?;
    let htype = u16::from_be_bytes([header[0], header[1]]);
    let ptype = u16::from_be_bytes([header[2], header[3]]);
    if !matches!(htype, 1 | 6) || ptype != 0x0800 || header[4] != 6 || header[5] != 4 {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
    Some(Arp {
        operation: u16::from_be_bytes([header[6], header[7]]),
        sender_mac: header[8..14].try_into().ok()?,
        sender_ip: ip(14),
        target_ip: ip(24),
    })
}

fn parse_ipv4(b: &[u8]) -> Option<IpPacket> {
    let header: &[u8; 20] = b.get(..20)?.try_into().ok()?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let proto = header[9];
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    let body = b.get(ihl.max(20)..).unwrap_or(&[]);
    // A non-first fragment has no transport header.
    let (transport, payload) = if fragment_offset == 0 {
        parse_l4(proto, body, false)
    } else {
        (L4::Other(proto), Vec::new())
    };
    Some(IpPacket {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        hop_limit: header[8],
        transport,
        payload,
    })
}

fn parse_ipv6(b: &[u8]) -> Option<IpPacket> {
    let mut next = *b.get(6)?;
    let hop_limit = *b.get(7)?;
    let src: [u8; 16] = b.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = b.get(24..40)?.try_into().ok()?;
    let mut offset = 40;
    // Skip the extension headers MLD and fragments use: hop-by-hop, routing, fragment, dst opts.
    while matches!(next, 0 | 43 | 44 | 60) {
        let header = b.get(offset..offset + 2)?;
        let len = if next == 44 {
            8
        } else {
            (usize::from(header[1]) + 1) * 8
        };
        next = header[0];
        offset += len;
    }
    let (transport, payload) = parse_l4(next, b.get(offset..).unwrap_or(&[]), true);
    Some(IpPacket {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        hop_limit,
        transport,
        payload,
    })
}

fn parse_l4(proto: u8, b: &[u8], v6: bool) -> (L4, Vec<u8>) {
    let port = |at: usize| b.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match proto {
        6 => match (port(0), port(2), b.get(12), b.get(13)) {
            (Some(sport), Some(dport), Some(off), Some(flags)) => {
                let header = usize::from(off >> 4) * 4;
                (
                    L4::Tcp {
                        sport,
                        dport,
                        flags: *flags,
                    },
                    b.get(header..).unwrap_or(&[]).to_vec(),
                )
            }
            _ => (L4::Other(proto), Vec::new()),
        },
        17 => match (port(0), port(2)) {
            (Some(sport), Some(dport)) => {
                (L4::Udp { sport, dport }, b.get(8..).unwrap_or(&[]).to_vec())
            }
            _ => (L4::Other(proto), Vec::new()),
        },
        1 if !v6 => b.first().map_or((L4::Other(proto), Vec::new()), |k| {
            (L4::Icmp { kind: *k }, b.get(8..).unwrap_or(&[]).to_vec())
        }),
        58 => b.first().map_or((L4::Other(proto), Vec::new()), |k| {
            (L4::Icmpv6 { kind: *k }, b.get(8..).unwrap_or(&[]).to_vec())
        }),
        other => (L4::Other(other), Vec::new()),
    }
}

impl IpPacket {
    /// The target of a neighbour solicitation or advertisement: the address it asks about or
    /// announces.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        match self.transport {
            // The payload starts after the first 8 bytes of the ICMPv6 message, where the target is.
            L4::Icmpv6 { kind: 135 | 136 } => {
                let bytes: [u8; 16] = self.payload.get(..16)?.try_into().ok()?;
                Some(Ipv6Addr::from(bytes))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Arp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.sender_mac;
        match self.operation {
            Arp::REQUEST => write!(f, "arp who-has {} tell {}", self.target_ip, self.sender_ip),
            Arp::REPLY => write!(
                f,
                "arp reply {} is-at {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}",
                self.sender_ip
            ),
            other => write!(
                f,
                "arp operation {other} {} -> {}",
                self.sender_ip, self.target_ip
            ),
        }
    }
}

impl fmt::Display for IpPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                write!(
                    f,
                    "tcp {} -> {} flags {flags:#04x}",
                    sock(self.src, sport),
                    sock(self.dst, dport)
                )
            }
            L4::Udp { sport, dport } => write!(
                f,
                "udp {} -> {}",
                sock(self.src, sport),
                sock(self.dst, dport)
            ),
            L4::Icmp { kind } => write!(f, "icmp type {kind} {} -> {}", self.src, self.dst),
            L4::Icmpv6 { kind } => {
                write!(f, "icmpv6 type {kind} {} -> {}", self.src, self.dst)?;
                match self.nd_target() {
                    Some(target) => write!(f, " target {target}"),
                    None => Ok(()),
                }
            }
            L4::Other(p) => write!(f, "proto {p} {} -> {}", self.src, self.dst),
        }
    }
}

fn sock(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Ip(p) => write!(f, "{p}"),
            Frame::Arp(arp) => write!(f, "{arp}"),
            Frame::Other(t) => write!(f, "ethertype {t:#06x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn parses_ipv4_udp() {
        let mut ip = vec![
            0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 203, 0, 113, 10,
        ];
        ip.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 12, 0, 0, b'h', b'i', b'!', b'!']);
        let Frame::Ip(p) = parse_ethernet(&eth(0x0800, &ip)) else {
            panic!("not ip")
        };
        assert_eq!(p.to_string(), "udp 192.0.2.1:5000 -> 203.0.113.10:53");
        assert_eq!(p.payload, b"hi!!");
        assert_eq!(p.hop_limit, 64);
    }

    #[test]
    fn parses_ipv6_tcp_behind_hop_by_hop() {
        let mut ip = vec![0x60, 0, 0, 0, 0, 28, 0, 255];
        ip.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("ip").octets());
        ip.extend_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().expect("ip").octets());
        ip.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        ip.extend_from_slice(&[
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0,
        ]);
        ip[6] = 0; // next header: hop-by-hop
        let Frame::Ip(p) = parse_ethernet(&eth(0x86dd, &ip)) else {
            panic!("not ip")
        };
        assert_eq!(
            p.transport,
            L4::Tcp {
                sport: 40000,
                dport: 443,
                flags: 0x02
            }
        );
        assert_eq!(p.hop_limit, 255);
    }

    #[test]
    fn parses_an_arp_reply() {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 64, 0, 2]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 192, 168, 50, 1]);
        let Frame::Arp(a) = parse_ethernet(&eth(0x0806, &arp)) else {
            panic!("not arp")
        };
        assert_eq!(a.operation, Arp::REPLY);
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 64, 0, 2));
        assert_eq!(a.target_ip, Ipv4Addr::new(192, 168, 50, 1));
        assert_eq!(a.to_string(), "arp reply 10.64.0.2 is-at 02:00:00:00:00:01");
        // Another hardware layout is not decoded (its addresses are elsewhere).
        arp[4] = 20;
        assert_eq!(parse_ethernet(&eth(0x0806, &arp)), Frame::Other(0x0806));
    }

    #[test]
    fn reads_the_target_of_a_neighbor_advertisement() {
        let mut ip = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
        ip.extend_from_slice(&"fe80::2".parse::<Ipv6Addr>().expect("ip").octets());
        ip.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().expect("ip").octets());
        ip.extend_from_slice(&[136, 0, 0, 0, 0x60, 0, 0, 0]);
        ip.extend_from_slice(&"fc00:bbbb::2".parse::<Ipv6Addr>().expect("ip").octets());
        let Frame::Ip(p) = parse_ethernet(&eth(0x86dd, &ip)) else {
            panic!("not ip")
        };
        assert_eq!(p.nd_target(), "fc00:bbbb::2".parse().ok());
        assert_eq!(
            p.to_string(),
            "icmpv6 type 136 fe80::2 -> fe80::1 target fc00:bbbb::2"
        );
    }

    #[test]
    fn garbage_is_not_a_panic() {
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_ethernet(&junk);
            let _ = parse_ethernet(&eth(0x0800, &junk));
            let _ = parse_ethernet(&eth(0x86dd, &junk));
            let _ = parse_ethernet(&eth(0x0806, &junk));
        }
    }
}
