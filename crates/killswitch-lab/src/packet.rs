//! Parsing captured Ethernet frames into the few fields a leak report needs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a frame carried, as far as the leak oracle cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An IPv4 or IPv6 packet.
    Ip(IpPacket),
    /// ARP, which the kill switch does not touch.
    Arp,
    /// Any other ethertype.
    Other(u16),
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
        0x0806 => Frame::Arp,
        other => Frame::Other(other),
    }
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
            L4::Icmpv6 { kind } => write!(f, "icmpv6 type {kind} {} -> {}", self.src, self.dst),
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
            Frame::Arp => f.write_str("arp"),
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
    fn garbage_is_not_a_panic() {
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_ethernet(&junk);
            let _ = parse_ethernet(&eth(0x0800, &junk));
            let _ = parse_ethernet(&eth(0x86dd, &junk));
        }
    }
}
