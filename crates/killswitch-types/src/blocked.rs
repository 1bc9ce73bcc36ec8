//! What the kill switch is refusing: the reasons a packet is refused, the counts per reason, and
//! the last refused destinations, as the daemon reports them in [`crate::ipc::Status::blocked`].
//!
//! The reasons are the names of the firewall's counter objects (`nft list counters table inet
//! killswitch`) and the prefixes of its log lines, so that what `status` says and what the kernel
//! holds read alike.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Why a packet was refused. Each reason is one named counter in table `inet killswitch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockReason {
    /// IPv4 traffic that would have left outside the tunnel (or from the tunnel's address by
    /// another interface), or been forwarded outside it.
    NonTunnel,
    /// DNS (port 53 or 853, UDP or TCP) to anything but the tunnel's resolvers through the tunnel.
    Dns,
    /// IPv6 traffic that would have left, or been forwarded, outside the tunnel.
    Ipv6,
    /// Packets arriving for this host that nothing allows (not a reply, not through the tunnel).
    Inbound,
}

impl BlockReason {
    /// Every reason, in the order status lists them.
    pub const ALL: [BlockReason; 4] = [
        BlockReason::NonTunnel,
        BlockReason::Dns,
        BlockReason::Ipv6,
        BlockReason::Inbound,
    ];

    /// The reason's name: the counter object's name and the word in log prefixes.
    pub fn name(self) -> &'static str {
        match self {
            BlockReason::NonTunnel => "non-tunnel",
            BlockReason::Dns => "dns",
            BlockReason::Ipv6 => "ipv6",
            BlockReason::Inbound => "inbound",
        }
    }

    /// The reason named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Packets and bytes refused for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Packets refused.
    #[serde(default)]
    pub packets: u64,
    /// Their bytes (whole IP packets).
    #[serde(default)]
    pub bytes: u64,
}

/// One refused packet, as the kernel logged it (headers only: never a payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedPacket {
    /// When the daemon received the log message, in seconds since the Unix epoch.
    pub at_unix: u64,
    /// Why it was refused: a [`BlockReason`]'s name (a string, so that a reason a newer daemon
    /// adds still reads).
    pub reason: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `tcp`, `udp`, `icmp`, `ipv6-icmp`, or the protocol number.
    pub protocol: String,
    /// The destination address.
    pub destination: String,
    /// The destination port, for TCP and UDP.
    #[serde(default)]
    pub port: Option<u16>,
    /// The interface it would have left by (or arrived on, for inbound packets), when known.
    #[serde(default)]
    pub interface: Option<String>,
    /// The owner of the sending socket, for locally sent packets that have one.
    #[serde(default)]
    pub uid: Option<u32>,
}

impl fmt::Display for BlockedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destination = match (self.port, self.family.as_str()) {
            (Some(port), "ipv6") => format!("[{}]:{port}", self.destination),
            (Some(port), _) => format!("{}:{port}", self.destination),
            (None, _) => self.destination.clone(),
        };
        write!(f, "{} {} {destination}", self.reason, self.protocol)?;
        if let Some(interface) = &self.interface {
            write!(f, " via {interface}")?;
        }
        if let Some(uid) = self.uid {
            write!(f, " uid {uid}")?;
        }
        Ok(())
    }
}

/// What the firewall has refused since its table was first installed (the counts survive
/// every change of state; they start again from zero only after the table was removed, in
/// states `off` and unlocked `disconnected`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedStatus {
    /// Refused packets and bytes per reason, by the reason's name (`"dns": {"packets": 3,
    /// "bytes": 180}`); a reason absent here counted nothing (or the table is not installed).
    #[serde(default)]
    pub counts: BTreeMap<String, Count>,
    /// The most recently refused packets, oldest first (at most [`RECENT_BLOCKED`]). The kernel
    /// logs at most a few per second, so under a flood this is a sample.
    #[serde(default)]
    pub recent: Vec<BlockedPacket>,
}

/// How many refused packets [`BlockedStatus::recent`] keeps.
pub const RECENT_BLOCKED: usize = 32;

impl BlockedStatus {
    /// The count for `reason` (zero when absent).
    pub fn count(&self, reason: BlockReason) -> Count {
        self.counts.get(reason.name()).copied().unwrap_or_default()
    }

    /// Packets refused for all reasons together.
    pub fn total_packets(&self) -> u64 {
        self.counts.values().map(|c| c.packets).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_name_and_json() {
        for reason in BlockReason::ALL {
            assert_eq!(BlockReason::from_name(reason.name()), Some(reason));
            let json = serde_json::to_string(&reason).expect("serialize");
            assert_eq!(json, format!("\"{}\"", reason.name()));
        }
        assert_eq!(BlockReason::from_name("tunnel"), None);
    }

    #[test]
    fn an_empty_object_reads_as_nothing_blocked() {
        let status: BlockedStatus = serde_json::from_str("{}").expect("lenient");
        assert_eq!(status, BlockedStatus::default());
        assert_eq!(status.count(BlockReason::Dns), Count::default());
    }
}
