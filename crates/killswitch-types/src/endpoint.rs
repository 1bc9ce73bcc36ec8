//! VPN server endpoints: the one address, port and protocol the firewall opens a hole for.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The transport protocol a tunnel uses to reach its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// UDP: WireGuard, and OpenVPN by default.
    Udp,
    /// TCP: OpenVPN over TCP, and similar.
    Tcp,
}

impl fmt::Display for TransportProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportProtocol::Udp => "udp",
            TransportProtocol::Tcp => "tcp",
        })
    }
}

/// A VPN server endpoint: exactly one IP address, one port and one protocol.
///
/// Written `IP:PORT[/udp|/tcp]` (IPv6 in brackets: `[2001:db8::1]:51820/udp`); UDP when the protocol
/// is left out. Host names are refused on purpose: resolving them would need DNS, which the kill
/// switch blocks, and a hole "for a name" could be redirected by whoever controls that DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    /// The server's address and port.
    pub address: SocketAddr,
    /// The protocol the tunnel speaks to it.
    pub protocol: TransportProtocol,
}

/// Why a string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointParseError {
    /// Not of the form IP:PORT.
    #[error(
        "invalid endpoint {0:?}: expected IP:PORT[/udp|/tcp], e.g. 203.0.113.1:51820 or [2001:db8::1]:443/tcp"
    )]
    Syntax(String),
    /// The protocol suffix is neither udp nor tcp.
    #[error("invalid endpoint protocol {0:?}: expected udp or tcp")]
    Protocol(String),
    /// Port 0 cannot be connected to.
    #[error("invalid endpoint {0:?}: port 0 is not a real port")]
    PortZero(String),
    /// The address cannot be a VPN server (unspecified, multicast, loopback).
    #[error("invalid endpoint {0:?}: {1} address cannot be a VPN server")]
    Address(String, &'static str),
}

impl FromStr for Endpoint {
    type Err = EndpointParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, protocol) = match s.rsplit_once('/') {
            Some((addr, proto)) => {
                let protocol = match proto.to_ascii_lowercase().as_str() {
                    "udp" => TransportProtocol::Udp,
                    "tcp" => TransportProtocol::Tcp,
                    _ => return Err(EndpointParseError::Protocol(proto.to_owned())),
                };
                (addr, protocol)
            }
            None => (s, TransportProtocol::Udp),
        };
        let address: SocketAddr = addr
            .parse()
            .map_err(|_| EndpointParseError::Syntax(s.to_owned()))?;
        if address.port() == 0 {
            return Err(EndpointParseError::PortZero(s.to_owned()));
        }
        let ip = address.ip();
        let mapped = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
            std::net::IpAddr::V4(_) => false,
        };
        let bad_kind = if ip.is_unspecified() {
            Some("an unspecified")
        } else if ip.is_multicast() {
            Some("a multicast")
        } else if ip.is_loopback() {
            Some("a loopback")
        } else if ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            Some("the broadcast")
        } else if mapped {
            // Such a hole would match no real packet (they leave as IPv4): write the IPv4 address.
            Some("an IPv4-mapped IPv6 (write it as IPv4)")
        } else {
            None
        };
        if let Some(kind) = bad_kind {
            return Err(EndpointParseError::Address(s.to_owned(), kind));
        }
        Ok(Endpoint { address, protocol })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.protocol)
    }
}

impl TryFrom<String> for Endpoint {
    type Error = EndpointParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> Self {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_v4_v6_and_protocols() {
        let e: Endpoint = "203.0.113.1:51820".parse().expect("valid");
        assert_eq!(e.protocol, TransportProtocol::Udp);
        assert_eq!(e.to_string(), "203.0.113.1:51820/udp");
        let e: Endpoint = "[2001:db8::1]:443/TCP".parse().expect("valid");
        assert_eq!(e.protocol, TransportProtocol::Tcp);
        assert_eq!(e.to_string(), "[2001:db8::1]:443/tcp");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("vpn.example.com:51820", "expected IP:PORT"),
            ("203.0.113.1", "expected IP:PORT"),
            ("203.0.113.1:51820/sctp", "expected udp or tcp"),
            ("203.0.113.1:0", "port 0"),
            ("0.0.0.0:51820", "unspecified"),
            ("127.0.0.1:51820", "loopback"),
            ("255.255.255.255:51820", "broadcast"),
            ("[::ffff:198.51.100.1]:51820", "IPv4-mapped"),
            ("[::ffff:127.0.0.1]:51820", "IPv4-mapped"),
            ("[ff02::1]:51820", "multicast"),
            ("2001:db8::1:51820", "expected IP:PORT"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Endpoint>().expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(ip in any::<std::net::IpAddr>(), port in 1u16.., tcp in any::<bool>()) {
            let mapped = matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            prop_assume!(!ip.is_unspecified() && !ip.is_multicast() && !ip.is_loopback() && !mapped);
            prop_assume!(ip != std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST));
            let protocol = if tcp { TransportProtocol::Tcp } else { TransportProtocol::Udp };
            let e = Endpoint { address: SocketAddr::new(ip, port), protocol };
            prop_assert_eq!(e.to_string().parse::<Endpoint>(), Ok(e));
        }
    }
}
