//! Address sets: many prefixes, looked up in one step.
//!
//! A rule per prefix costs every packet one comparison per prefix; an nftables interval set costs
//! one lookup (a tree walk) whatever its size. A [`Set`] keeps its addresses as disjoint, ascending,
//! non-adjacent inclusive ranges: the form the kernel's interval sets need (overlapping or touching
//! intervals are refused there), and one in which equal sets compare equal however they were
//! written.

use crate::ruleset::IpFamily;
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A named set of addresses of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// The set's name in the table (rules refer to it as `@name`).
    pub name: String,
    /// The family of its addresses.
    pub family: IpFamily,
    /// Inclusive ranges as numbers (an IPv4 address in the low 32 bits): disjoint, ascending, with
    /// a gap of at least one address between neighbours.
    ranges: Vec<(u128, u128)>,
}

impl Set {
    /// The set of the `family` addresses in `nets` (others are ignored), normalised.
    pub fn new(name: &str, family: IpFamily, nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut ranges: Vec<(u128, u128)> = nets
            .into_iter()
            .filter(|net| IpFamily::of(net) == family)
            .map(|net| (number(net.network()), number(net.broadcast())))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                // Overlapping or touching: one interval.
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Set {
            name: name.to_owned(),
            family,
            ranges: merged,
        }
    }

    /// The ranges, first and last address of each.
    pub fn ranges(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.ranges
            .iter()
            .map(|&(start, end)| (address(self.family, start), address(self.family, end)))
    }

    /// How many disjoint ranges the set holds.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if family_of(ip) != self.family {
            return false;
        }
        let n = number(ip);
        // The last range starting at or below n is the only candidate.
        let after = self.ranges.partition_point(|&(start, _)| start <= n);
        after > 0 && self.ranges[after - 1].1 >= n
    }
}

fn family_of(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn address(family: IpFamily, n: u128) -> IpAddr {
    match family {
        // Ranges of a V4 set are built from IPv4 addresses, so they fit in 32 bits.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// A range in nft's syntax: a single address, a prefix when it is exactly one, else `a-b`.
fn range_text(family: IpFamily, start: u128, end: u128) -> String {
    let bits = match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    };
    let size = end - start;
    // A prefix: the size is 2^k - 1 and the start is aligned to 2^k.
    if size.checked_add(1).is_some_and(|n| n.is_power_of_two()) && start & size == 0 {
        let host_bits = (size + 1).trailing_zeros();
        let len = bits - host_bits;
        if len == bits {
            return address(family, start).to_string();
        }
        return format!("{}/{len}", address(family, start));
    }
    if size == u128::MAX {
        // ::/0 (the only range whose size overflows above).
        return "::/0".to_owned();
    }
    format!("{}-{}", address(family, start), address(family, end))
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tset {} {{", self.name)?;
        let kind = match self.family {
            IpFamily::V4 => "ipv4_addr",
            IpFamily::V6 => "ipv6_addr",
        };
        writeln!(f, "\t\ttype {kind}")?;
        writeln!(f, "\t\tflags interval")?;
        if !self.ranges.is_empty() {
            let elements: Vec<String> = self
                .ranges
                .iter()
                .map(|&(start, end)| range_text(self.family, start, end))
                .collect();
            writeln!(f, "\t\telements = {{ {} }}", elements.join(", "))?;
        }
        writeln!(f, "\t}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn overlapping_and_touching_prefixes_merge() {
        let set = Set::new(
            "lan4",
            IpFamily::V4,
            nets(&[
                "10.0.1.0/24",
                "10.0.0.0/24",
                "10.0.0.128/25",
                "192.168.1.1/32",
                "fd00::/8",
            ]),
        );
        let text = set.to_string();
        assert!(
            text.contains("elements = { 10.0.0.0/23, 192.168.1.1 }"),
            "{text}"
        );
        assert_eq!(set.len(), 2, "the IPv6 prefix is not in an IPv4 set");
    }

    #[test]
    fn ranges_that_are_not_prefixes_print_as_ranges() {
        let set = Set::new(
            "lan4",
            IpFamily::V4,
            nets(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]),
        );
        assert!(
            set.to_string()
                .contains("elements = { 10.0.0.0-10.0.2.255 }")
        );
        let everything = Set::new("all", IpFamily::V6, nets(&["::/0"]));
        assert!(everything.to_string().contains("elements = { ::/0 }"));
    }

    #[test]
    fn membership_at_the_edges() {
        let set = Set::new(
            "lan",
            IpFamily::V4,
            nets(&["10.0.0.0/24", "10.0.2.0/24", "255.255.255.255/32"]),
        );
        for (ip, inside) in [
            ("9.255.255.255", false),
            ("10.0.0.0", true),
            ("10.0.0.255", true),
            ("10.0.1.0", false),
            ("10.0.2.128", true),
            ("10.0.3.0", false),
            ("255.255.255.255", true),
            ("::1", false),
        ] {
            assert_eq!(set.contains(ip.parse().expect("ip")), inside, "{ip}");
        }
    }
}
