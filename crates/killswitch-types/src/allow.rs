//! Explicit exceptions an administrator adds to the kill switch: interfaces, subnets and inbound
//! services that may be used outside the tunnel.
//!
//! Each is written the way `config.toml` and the CLI take it, and parsed here, so that the daemon,
//! the CLI and `status` agree on one spelling:
//!
//! - an interface: `tailscale0`;
//! - a subnet: `10.99.0.0/16 on eth0`, or `198.51.100.0/24 on eth0 public` for a range outside the
//!   private ones (the flag is the administrator saying "yes, the internet": without it such a
//!   range is refused, since "reach this public range in clear" is exactly what a hostile network
//!   would ask for);
//! - an inbound service: `tcp/22 on eth0`.
//!
//! Whether a subnet is private is the policy crate's judgement (it owns the ranges); this module
//! only parses.

use crate::{InterfaceName, TransportProtocol};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The most exceptions of each kind: enough for any real machine, small enough that the rules
/// stay short (every one is a rule or two on every packet's path).
pub const MAX_ALLOWS: usize = 64;

/// All the exceptions of one source (the configuration file, or the CLI's saved settings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Allows {
    /// Interfaces whose traffic may pass both ways (`tailscale0`).
    pub interfaces: Vec<InterfaceName>,
    /// Subnets reachable outside the tunnel, each by one interface.
    pub subnets: Vec<SubnetAllow>,
    /// Services on this machine reachable from outside, by one interface.
    pub inbound: Vec<InboundAllow>,
}

impl Allows {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.subnets.is_empty() && self.inbound.is_empty()
    }

    /// Both sources together, without duplicates, `self` first.
    pub fn merged(&self, other: &Allows) -> Allows {
        fn union<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
            let mut all: Vec<T> = Vec::new();
            for item in a.iter().chain(b) {
                if !all.contains(item) {
                    all.push(item.clone());
                }
            }
            all
        }
        Allows {
            interfaces: union(&self.interfaces, &other.interfaces),
            subnets: union(&self.subnets, &other.subnets),
            inbound: union(&self.inbound, &other.inbound),
        }
    }

    /// Checks the counts (the ranges are the policy crate's to check).
    pub fn check_counts(&self) -> Result<(), String> {
        for (what, count) in [
            ("allow_interfaces", self.interfaces.len()),
            ("allow_subnets", self.subnets.len()),
            ("allow_inbound", self.inbound.len()),
        ] {
            if count > MAX_ALLOWS {
                return Err(format!("{what}: {count} entries; at most {MAX_ALLOWS}"));
            }
        }
        let loopback = (self.interfaces.iter())
            .chain(self.subnets.iter().map(|s| &s.interface))
            .chain(self.inbound.iter().map(|i| &i.interface))
            .any(|i| i.as_str() == "lo");
        if loopback {
            return Err(
                "lo: loopback is always allowed; an exception on it would mean nothing".to_owned(),
            );
        }
        Ok(())
    }
}

/// One exception, as `killswitch allow add|remove` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum AllowEntry {
    /// An interface (`tailscale0`).
    Interface(InterfaceName),
    /// A subnet by one interface (`10.99.0.0/16 on eth0`).
    Subnet(SubnetAllow),
    /// An inbound service (`tcp/22 on eth0`).
    Inbound(InboundAllow),
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Interface(name) => write!(f, "interface {name}"),
            AllowEntry::Subnet(subnet) => write!(f, "subnet {subnet}"),
            AllowEntry::Inbound(inbound) => write!(f, "inbound {inbound}"),
        }
    }
}

impl Allows {
    /// Whether `entry` is among these.
    pub fn contains(&self, entry: &AllowEntry) -> bool {
        match entry {
            AllowEntry::Interface(name) => self.interfaces.contains(name),
            AllowEntry::Subnet(subnet) => self.subnets.contains(subnet),
            AllowEntry::Inbound(inbound) => self.inbound.contains(inbound),
        }
    }

    /// These with `entry` added (`add`) or removed.
    pub fn with(&self, entry: &AllowEntry, add: bool) -> Allows {
        fn change<T: Clone + PartialEq>(list: &mut Vec<T>, item: &T, add: bool) {
            list.retain(|x| x != item);
            if add {
                list.push(item.clone());
            }
        }
        let mut next = self.clone();
        match entry {
            AllowEntry::Interface(name) => change(&mut next.interfaces, name, add),
            AllowEntry::Subnet(subnet) => change(&mut next.subnets, subnet, add),
            AllowEntry::Inbound(inbound) => change(&mut next.inbound, inbound, add),
        }
        next
    }
}

/// `NET on IFACE [public]`: a subnet reachable outside the tunnel, by one interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubnetAllow {
    /// The subnet.
    pub subnet: IpNet,
    /// The only interface it may be reached by.
    pub interface: InterfaceName,
    /// The administrator's word that a range outside the private ones is meant.
    pub public: bool,
}

/// `PROTO/PORT on IFACE`: new connections to this local port arriving on this interface, and
/// their replies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InboundAllow {
    /// TCP or UDP.
    pub protocol: TransportProtocol,
    /// The local port.
    pub port: u16,
    /// The interface the connections arrive on.
    pub interface: InterfaceName,
}

/// Splits `WHAT on IFACE [REST...]`.
fn split_on(text: &str, example: &str) -> Result<(String, InterfaceName, Vec<String>), String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [what, "on", iface, rest @ ..] => {
            let interface = InterfaceName::new(*iface).map_err(|e| format!("{text:?}: {e}"))?;
            Ok((
                (*what).to_owned(),
                interface,
                rest.iter().map(|s| (*s).to_owned()).collect(),
            ))
        }
        _ => Err(format!("{text:?} is not of the form {example:?}")),
    }
}

impl FromStr for SubnetAllow {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (net, interface, rest) = split_on(text, "10.99.0.0/16 on eth0 [public]")?;
        let subnet: IpNet = net.parse().map_err(|_| {
            let why = match net.split_once('/') {
                Some((address, prefix)) if address.parse::<std::net::IpAddr>().is_ok() => {
                    let max = if address.contains(':') { 128 } else { 32 };
                    format!("the prefix {prefix:?} is not a number from 0 to {max}")
                }
                Some(_) => "the address is not an IPv4 or IPv6 address".to_owned(),
                None => "it has no /PREFIX".to_owned(),
            };
            format!("{text:?}: {net:?} is not a subnet (ADDRESS/PREFIX): {why}")
        })?;
        if subnet.trunc() != subnet {
            return Err(format!(
                "{text:?}: {subnet} has host bits set; the subnet is {}",
                subnet.trunc()
            ));
        }
        let public = match rest.as_slice() {
            [] => false,
            [flag] if flag == "public" => true,
            _ => {
                return Err(format!(
                    "{text:?}: only the word `public` may follow the interface"
                ));
            }
        };
        Ok(SubnetAllow {
            subnet,
            interface,
            public,
        })
    }
}

impl fmt::Display for SubnetAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.subnet, self.interface)?;
        if self.public {
            f.write_str(" public")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for SubnetAllow {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<SubnetAllow> for String {
    fn from(allow: SubnetAllow) -> String {
        allow.to_string()
    }
}

impl FromStr for InboundAllow {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (service, interface, rest) = split_on(text, "tcp/22 on eth0")?;
        if !rest.is_empty() {
            return Err(format!(
                "{text:?}: nothing may follow the interface (\"tcp/22 on eth0\")"
            ));
        }
        let (protocol, port) = service
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: {service:?} is not PROTOCOL/PORT (tcp/22)"))?;
        let protocol = match protocol {
            "tcp" => TransportProtocol::Tcp,
            "udp" => TransportProtocol::Udp,
            other => return Err(format!("{text:?}: protocol {other:?} is not tcp or udp")),
        };
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            format!("{text:?}: port {port:?} is not a port number from 1 to 65535")
        })?;
        Ok(InboundAllow {
            protocol,
            port,
            interface,
        })
    }
}

impl fmt::Display for InboundAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} on {}", self.protocol, self.port, self.interface)
    }
}

impl TryFrom<String> for InboundAllow {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<InboundAllow> for String {
    fn from(allow: InboundAllow) -> String {
        allow.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_print_the_same_way() {
        let allow: SubnetAllow = "10.99.0.0/16 on eth0".parse().expect("valid");
        assert_eq!(allow.to_string(), "10.99.0.0/16 on eth0");
        assert!(!allow.public);
        let public: SubnetAllow = "198.51.100.0/24 on eth0 public".parse().expect("valid");
        assert!(public.public);
        assert_eq!(public.to_string(), "198.51.100.0/24 on eth0 public");
        for bad in [
            "10.99.0.0/16",
            "10.99.0.1/16 on eth0",
            "10.99.0.0/16 on eth0 yes",
            "10.99.0.0/33 on eth0",
            "on eth0",
            "10.99.0.0/16 on this-name-is-far-too-long",
        ] {
            let err = bad.parse::<SubnetAllow>().expect_err(bad);
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn inbound_services_parse_and_print_the_same_way() {
        let allow: InboundAllow = "tcp/22 on eth0".parse().expect("valid");
        assert_eq!(allow.port, 22);
        assert_eq!(allow.to_string(), "tcp/22 on eth0");
        assert_eq!(
            "udp/51820 on wlan0"
                .parse::<InboundAllow>()
                .expect("valid")
                .protocol,
            TransportProtocol::Udp
        );
        for bad in [
            "tcp/0 on eth0",
            "tcp/65536 on eth0",
            "sctp/22 on eth0",
            "22 on eth0",
            "tcp/22",
            "tcp/22 on eth0 public",
        ] {
            assert!(bad.parse::<InboundAllow>().is_err(), "{bad}");
        }
    }

    #[test]
    fn merging_keeps_order_and_drops_duplicates() {
        let a = Allows {
            interfaces: vec![InterfaceName::new("tailscale0").expect("valid")],
            inbound: vec!["tcp/22 on eth0".parse().expect("valid")],
            ..Allows::default()
        };
        let b = Allows {
            interfaces: vec![
                InterfaceName::new("zt0").expect("valid"),
                InterfaceName::new("tailscale0").expect("valid"),
            ],
            ..Allows::default()
        };
        let merged = a.merged(&b);
        assert_eq!(merged.interfaces.len(), 2);
        assert_eq!(merged.interfaces[1].as_str(), "zt0");
        assert_eq!(merged.inbound.len(), 1);
    }
}
