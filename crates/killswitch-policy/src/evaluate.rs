//! A small evaluator: the verdict the kernel would give a packet under a ruleset.
//!
//! It implements the semantics of the subset of nftables the policy uses: base chain per hook, rules
//! in order, first terminal verdict wins, a jump returns when the called chain does not decide, and
//! the chain policy applies when nothing matched. It exists so that tests can state properties over
//! random packets ("no DNS leaves outside the tunnel"), and so that the lab can classify a captured
//! packet as "allowed by the old or the new state".

use crate::ruleset::{
    Chain, ChainPolicy, Hook, IpFamily, L4Proto, Match, RejectWith, Ruleset, Verdict as RuleVerdict,
};
use killswitch_types::InterfaceName;
use std::net::IpAddr;

/// A packet at one netfilter hook, described by the fields the rules can look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Where the packet is seen.
    pub hook: Hook,
    /// The interface it arrived on (input, forward).
    pub iif: Option<InterfaceName>,
    /// The interface it leaves by (output, forward).
    pub oif: Option<InterfaceName>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// The transport header.
    pub transport: Transport,
    /// The packet mark (0 when unmarked).
    pub mark: u32,
    /// The sending socket's owner, for locally generated packets that have a socket.
    pub uid: Option<u32>,
    /// Its conntrack state.
    pub conn: ConnState,
}

impl Packet {
    /// A new locally generated packet leaving by `oif`.
    pub fn output(oif: &str, src: IpAddr, dst: IpAddr, transport: Transport) -> Self {
        Self::new(Hook::Output, None, Some(oif), src, dst, transport)
    }

    /// A new packet arriving on `iif` for this host.
    pub fn input(iif: &str, src: IpAddr, dst: IpAddr, transport: Transport) -> Self {
        Self::new(Hook::Input, Some(iif), None, src, dst, transport)
    }

    /// A new packet routed from `iif` to `oif`.
    pub fn forward(iif: &str, oif: &str, src: IpAddr, dst: IpAddr, transport: Transport) -> Self {
        Self::new(Hook::Forward, Some(iif), Some(oif), src, dst, transport)
    }

    fn new(
        hook: Hook,
        iif: Option<&str>,
        oif: Option<&str>,
        src: IpAddr,
        dst: IpAddr,
        transport: Transport,
    ) -> Self {
        // Interface names in tests are literals; an invalid one is a bug in the test, and the
        // evaluator treats it as "no interface" rather than panicking.
        let name = |n: Option<&str>| n.and_then(|n| InterfaceName::new(n).ok());
        Packet {
            hook,
            iif: name(iif),
            oif: name(oif),
            src,
            dst,
            hop_limit: 64,
            transport,
            mark: 0,
            uid: None,
            conn: ConnState::New,
        }
    }

    /// The same packet with a fwmark.
    pub fn with_mark(mut self, mark: u32) -> Self {
        self.mark = mark;
        self
    }

    /// The same packet sent by a socket owned by `uid`.
    pub fn with_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// The same packet in conntrack state `conn`.
    pub fn with_conn(mut self, conn: ConnState) -> Self {
        self.conn = conn;
        self
    }

    /// The same packet with TTL / hop limit `hop_limit`.
    pub fn with_hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }
}

/// The transport header, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP with ports.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// UDP with ports.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMPv6 with its type.
    Icmpv6 {
        /// The message type.
        kind: u8,
    },
    /// Anything else, by protocol number (ICMP is 1).
    Other(u8),
}

/// The conntrack state of the packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// The first packet of a flow.
    New,
    /// Part of a flow seen before.
    Established,
    /// Related to a known flow (e.g. an ICMP error about it).
    Related,
    /// Conntrack could not classify it.
    Invalid,
}

/// The outcome of evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet passes.
    Accept,
    /// The packet is silently discarded.
    Drop,
    /// The packet is discarded and the sender told so.
    Reject(RejectWith),
}

impl Transport {
    /// TCP from `sport` to `dport`.
    pub fn tcp(sport: u16, dport: u16) -> Self {
        Transport::Tcp { sport, dport }
    }

    /// UDP from `sport` to `dport`.
    pub fn udp(sport: u16, dport: u16) -> Self {
        Transport::Udp { sport, dport }
    }

    /// ICMP (v4) echo and friends.
    pub const ICMP: Transport = Transport::Other(1);
}

impl Verdict {
    /// Whether the packet passes.
    pub fn is_accept(self) -> bool {
        self == Verdict::Accept
    }
}

/// How deep jumps may nest; the policy uses one level. The kernel's own limit is 16.
const MAX_JUMP_DEPTH: usize = 16;

impl Ruleset {
    /// The verdict for `packet`: accept when there is no table, else what our base chain for the
    /// packet's hook decides.
    pub fn verdict(&self, packet: &Packet) -> Verdict {
        let Some(chain) = self.base_chain(packet.hook) else {
            return Verdict::Accept;
        };
        match self.run_chain(chain, packet, 0) {
            Some(verdict) => verdict,
            None => match chain.base.map(|b| b.policy) {
                Some(ChainPolicy::Drop) => Verdict::Drop,
                _ => Verdict::Accept,
            },
        }
    }

    fn run_chain(&self, chain: &Chain, packet: &Packet, depth: usize) -> Option<Verdict> {
        for rule in &chain.rules {
            if !rule.matches.iter().all(|m| self.matches(m, packet)) {
                continue;
            }
            match &rule.verdict {
                RuleVerdict::Accept => return Some(Verdict::Accept),
                RuleVerdict::Drop => return Some(Verdict::Drop),
                RuleVerdict::Reject(with) => return Some(Verdict::Reject(*with)),
                RuleVerdict::Jump(target) => {
                    // A jump to a missing chain, or too deep, is refused by the kernel at load time;
                    // `Ruleset::check` refuses it here. Treat it as not deciding.
                    let called = self.chain(target).filter(|_| depth < MAX_JUMP_DEPTH)?;
                    if let Some(verdict) = self.run_chain(called, packet, depth + 1) {
                        return Some(verdict);
                    }
                }
            }
        }
        None
    }
}

fn family(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

impl Ruleset {
    fn matches(&self, m: &Match, p: &Packet) -> bool {
        match m {
            // A lookup in a set the table lacks matches nothing (`Ruleset::check` refuses it).
            Match::SourceIn(name, _) => self.set(name).is_some_and(|s| s.contains(p.src)),
            Match::DestinationIn(name, _) => self.set(name).is_some_and(|s| s.contains(p.dst)),
            other => matches(other, p),
        }
    }
}

fn matches(m: &Match, p: &Packet) -> bool {
    match m {
        Match::SourceIn(..) | Match::DestinationIn(..) => false,
        Match::Family(f) => family(p.src) == *f,
        Match::InInterface(name) => p.iif.as_ref() == Some(name),
        // With no input interface (output hook) the kernel compares against an empty name.
        Match::NotInInterface(name) => p.iif.as_ref() != Some(name),
        Match::OutInterface(name) => p.oif.as_ref() == Some(name),
        Match::Source(net) => net.contains(&p.src),
        Match::Destination(net) => net.contains(&p.dst),
        Match::Protocol(proto) => matches!(
            (proto, p.transport),
            (L4Proto::Tcp, Transport::Tcp { .. })
                | (L4Proto::Udp, Transport::Udp { .. })
                | (L4Proto::Icmpv6, Transport::Icmpv6 { .. })
        ),
        Match::SourcePort(port) => match p.transport {
            Transport::Tcp { sport, .. } | Transport::Udp { sport, .. } => sport == *port,
            _ => false,
        },
        Match::DestinationPort(port) => match p.transport {
            Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => dport == *port,
            _ => false,
        },
        Match::Icmpv6Type(t) => matches!(p.transport, Transport::Icmpv6 { kind } if kind == *t),
        Match::HopLimit(h) => family(p.src) == IpFamily::V6 && p.hop_limit == *h,
        Match::ConnState(states) => match p.conn {
            ConnState::Established => states.established,
            ConnState::Related => states.related,
            ConnState::New | ConnState::Invalid => false,
        },
        Match::Mark(mark) => p.mark == *mark,
        Match::SocketUid(uid) => p.uid == Some(*uid),
    }
}
