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
    /// The port is not a number from 1 to 65535.
    #[error("invalid endpoint {0:?}: port {1:?} is not a port (1-65535)")]
    Port(String, String),
    /// An IPv6 address with a zone (`%eth0`): only link-local addresses need one.
    #[error(
        "invalid endpoint {0:?}: a scoped (%interface) address is link-local, and cannot be a VPN server"
    )]
    Scope(String),
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
        let address: SocketAddr = addr.parse().map_err(|_| diagnose(s, addr))?;
        // `[2001:db8::1%99]` parses, but the rules match addresses, not scopes: the scope would be
        // shown and stored and mean nothing.
        if let SocketAddr::V6(v6) = address
            && v6.scope_id() != 0
        {
            return Err(EndpointParseError::Scope(s.to_owned()));
        }
        if address.port() == 0 {
            return Err(EndpointParseError::PortZero(s.to_owned()));
        }
        if let Some(kind) = unusable_kind(address.ip()) {
            return Err(EndpointParseError::Address(s.to_owned(), kind));
        }
        Ok(Endpoint { address, protocol })
    }
}

/// Why `addr` (the part of `s` before any `/protocol`) did not parse, as precisely as can be told.
fn diagnose(s: &str, addr: &str) -> EndpointParseError {
    if addr.contains('%') {
        return EndpointParseError::Scope(s.to_owned());
    }
    if let Some((host, port)) = addr.rsplit_once(':') {
        // IPv6 only in brackets: `2001:db8::1:51820` is a syntax error, not a port.
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => host.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        let port_is_number = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        if host_ok && port_is_number {
            return EndpointParseError::Port(s.to_owned(), port.to_owned());
        }
    }
    EndpointParseError::Syntax(s.to_owned())
}

/// What kind of address `ip` is, if it cannot be a VPN server's.
fn unusable_kind(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::IpAddr;
    if ip.is_unspecified() {
        return Some("an unspecified");
    }
    if ip.is_multicast() {
        return Some("a multicast");
    }
    if ip.is_loopback() {
        return Some("a loopback");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast"),
        // 0.0.0.0/8 means "this network" and is never a destination.
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("a \"this network\" (0.0.0.0/8)"),
        // 240.0.0.0/4 is reserved: Linux routes none of it.
        IpAddr::V4(v4) if v4.octets()[0] >= 240 => Some("a reserved (240.0.0.0/4)"),
        // Such a hole would match no real packet (they leave as IPv4): write the IPv4 address.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 (write it as IPv4)")
        }
        // ::a.b.c.d, deprecated since RFC 4291 and carried by nothing (NAT64's 64:ff9b::/96 is
        // another prefix, and fine).
        IpAddr::V6(v6) if v6.segments()[..6] == [0; 6] => {
            Some("an IPv4-compatible IPv6 (deprecated; write it as IPv4)")
        }
        // fe80::/10 needs a zone to be reached, which an endpoint does not carry.
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("a link-local IPv6"),
        _ => None,
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

/// The most endpoints one guarded tunnel may name: an OpenVPN file lists a handful of `remote`s,
/// a WireGuard interface a handful of peers; more is a mistake, and every one is a hole.
pub const MAX_ENDPOINTS: usize = 16;

/// The VPN servers a hole is open for: one or more (at most [`MAX_ENDPOINTS`]), none twice.
///
/// Built only by [`Endpoints::new`] or [`Endpoints::one`], so that whoever holds one never checks
/// for an empty list: a hole "for no server" cannot be asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<Endpoint>", into = "Vec<Endpoint>")]
pub struct Endpoints(Vec<Endpoint>);

/// Why a list of endpoints cannot be a hole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointsError {
    /// The list is empty.
    #[error("no endpoint: at least one VPN server is needed")]
    Empty,
    /// More than [`MAX_ENDPOINTS`].
    #[error("too many endpoints ({0}); at most {MAX_ENDPOINTS}")]
    TooMany(usize),
    /// The same endpoint twice.
    #[error("endpoint {0} is listed twice")]
    Duplicate(Endpoint),
}

impl Endpoints {
    /// Checks the list: not empty, not too long, no endpoint twice. The order is kept.
    pub fn new(list: Vec<Endpoint>) -> Result<Self, EndpointsError> {
        if list.is_empty() {
            return Err(EndpointsError::Empty);
        }
        if list.len() > MAX_ENDPOINTS {
            return Err(EndpointsError::TooMany(list.len()));
        }
        for (i, e) in list.iter().enumerate() {
            if list[..i].contains(e) {
                return Err(EndpointsError::Duplicate(*e));
            }
        }
        Ok(Self(list))
    }

    /// Exactly one endpoint.
    pub fn one(endpoint: Endpoint) -> Self {
        Self(vec![endpoint])
    }

    /// The first endpoint (there always is one): what an old client shows as "the" endpoint.
    pub fn first(&self) -> Endpoint {
        // Invariant: `new` refuses an empty list and `one` makes one of one.
        self.0[0]
    }

    /// The endpoints, in the order given.
    pub fn as_slice(&self) -> &[Endpoint] {
        &self.0
    }

    /// The endpoints, in the order given.
    pub fn iter(&self) -> std::slice::Iter<'_, Endpoint> {
        self.0.iter()
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; here because clippy expects it beside `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Endpoints {
    type Item = &'a Endpoint;
    type IntoIter = std::slice::Iter<'a, Endpoint>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl TryFrom<Vec<Endpoint>> for Endpoints {
    type Error = EndpointsError;
    fn try_from(list: Vec<Endpoint>) -> Result<Self, Self::Error> {
        Self::new(list)
    }
}

impl From<Endpoints> for Vec<Endpoint> {
    fn from(e: Endpoints) -> Self {
        e.0
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
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
            ("0.1.2.3:51820", "this network"),
            ("250.0.0.1:51820", "reserved"),
            ("[::198.51.100.1]:51820", "IPv4-compatible"),
            ("[fe80::1]:51820", "link-local"),
            ("[fe80::1%eth0]:51820", "scoped"),
            ("[2001:db8::1%99]:51820", "scoped"),
            (
                "203.0.113.1:99999",
                "port \"99999\" is not a port (1-65535)",
            ),
            ("[2001:db8::1]:70000/tcp", "port \"70000\""),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Endpoint>().expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn nat64_and_ordinary_servers_are_fine() {
        for ok in [
            "[64:ff9b::c633:6401]:51820",
            "169.254.10.1:51820",
            "198.51.100.1:65535",
        ] {
            assert!(ok.parse::<Endpoint>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn endpoints_are_one_to_sixteen_distinct() {
        let e = |s: &str| s.parse::<Endpoint>().expect("valid");
        assert_eq!(Endpoints::new(vec![]), Err(EndpointsError::Empty));
        let twice = vec![e("198.51.100.1:1194"), e("198.51.100.1:1194/udp")];
        assert_eq!(
            Endpoints::new(twice),
            Err(EndpointsError::Duplicate(e("198.51.100.1:1194")))
        );
        // Same address, other protocol: two holes, both fine.
        let both = Endpoints::new(vec![e("198.51.100.1:1194"), e("198.51.100.1:1194/tcp")])
            .expect("distinct");
        assert_eq!(
            both.to_string(),
            "198.51.100.1:1194/udp, 198.51.100.1:1194/tcp"
        );
        let many: Vec<Endpoint> = (1..=17)
            .map(|n| e(&format!("203.0.113.{n}:51820")))
            .collect();
        assert_eq!(
            Endpoints::new(many.clone()),
            Err(EndpointsError::TooMany(17))
        );
        assert_eq!(Endpoints::new(many[..16].to_vec()).map(|l| l.len()), Ok(16));
        let json: Result<Endpoints, _> = serde_json::from_str("[]");
        assert!(json.expect_err("empty").to_string().contains("no endpoint"));
    }

    proptest! {
        #[test]
        fn display_round_trips(ip in any::<std::net::IpAddr>(), port in 1u16.., tcp in any::<bool>()) {
            prop_assume!(unusable_kind(ip).is_none());
            let protocol = if tcp { TransportProtocol::Tcp } else { TransportProtocol::Udp };
            let e = Endpoint { address: SocketAddr::new(ip, port), protocol };
            prop_assert_eq!(e.to_string().parse::<Endpoint>(), Ok(e));
        }
    }
}
