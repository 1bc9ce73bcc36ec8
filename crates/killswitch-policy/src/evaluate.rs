//! A small evaluator: the verdict the kernel would give a packet under a ruleset.
//!
//! It implements the semantics of the subset of nftables the policy uses: every base chain of a
//! hook by priority (an accept ends only its own chain), rules in order, first terminal verdict
//! wins, a jump returns when the called chain does not decide, and the chain policy applies when
//! nothing matched. A matching rule's statements change the packet before its verdict
//! ([`Ruleset::decide`] returns the packet as it leaves; `dnat` rewrites its destination).
//! [`Ruleset::forward_path`] takes a routed packet through prerouting, a routing decision,
//! forward and postrouting, which is how router mode's DNS translation is checked. ARP messages go
//! through the `arp` table the same way ([`Ruleset::arp_verdict`]). It exists so that tests can
//! state properties over random packets ("no DNS leaves outside the tunnel"), and so that the lab
//! can classify a captured packet as "allowed by the old or the new state".

use crate::ruleset::{
    AddressType, ArpHook, ArpMatch, ArpOperation, Chain, ChainPolicy, Hook, IpFamily, L4Proto,
    Match, RejectWith, Ruleset, Statement, Verdict as RuleVerdict,
};
use killswitch_types::InterfaceName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// Whether the destination is one of this host's own addresses (`fib daddr type local`):
    /// so at the input hook, never at forward; in prerouting, what routing will find.
    pub dst_local: bool,
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
    /// Its flow's conntrack mark (0 when unmarked).
    pub ct_mark: u32,
    /// The sending socket's cgroup v2, as the ids of its ancestors from depth 1 down to the
    /// socket's own cgroup (empty: no socket, or a socket in the root cgroup).
    pub cgroups: Vec<u64>,
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

    /// A new packet arriving on `iif`, before the routing decision (prerouting).
    pub fn prerouting(iif: &str, src: IpAddr, dst: IpAddr, transport: Transport) -> Self {
        Self::new(Hook::Prerouting, Some(iif), None, src, dst, transport)
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
            dst_local: hook == Hook::Input,
            hop_limit: 64,
            transport,
            mark: 0,
            uid: None,
            conn: ConnState::New,
            ct_mark: 0,
            cgroups: Vec::new(),
        }
    }

    /// The same packet sent by a socket in the cgroup whose path of ids from depth 1 is
    /// `cgroups` (the last being the socket's own cgroup).
    pub fn with_cgroups(mut self, cgroups: Vec<u64>) -> Self {
        self.cgroups = cgroups;
        self
    }

    /// The same packet, addressed to one of this host's own addresses (or not).
    pub fn with_local_destination(mut self, local: bool) -> Self {
        self.dst_local = local;
        self
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

    /// The same packet, its flow's conntrack mark being `ct_mark`.
    pub fn with_ct_mark(mut self, ct_mark: u32) -> Self {
        self.ct_mark = ct_mark;
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
        /// For a neighbour solicitation or advertisement (135, 136), the address it is about.
        target: Option<Ipv6Addr>,
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

/// What the rules did with a packet: the verdict, and the packet as the rules left it (a rule's
/// statements may have rewritten it, e.g. its TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The packet after the statements of every rule that matched it.
    pub packet: Packet,
}

/// An ARP message for IPv4 over Ethernet at one hook of the `arp` family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket {
    /// Where the message is seen.
    pub hook: ArpHook,
    /// The interface it arrived on (input).
    pub iif: Option<InterfaceName>,
    /// The interface it leaves by (output).
    pub oif: Option<InterfaceName>,
    /// Request or reply.
    pub operation: ArpOperation,
    /// The sender's protocol address ("tell SENDER", "SENDER is at").
    pub sender: Ipv4Addr,
    /// The target's protocol address ("who has TARGET").
    pub target: Ipv4Addr,
}

impl ArpPacket {
    /// "Who has `target`? Tell `sender`.", arriving on `iif`.
    pub fn request_in(iif: &str, sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        ArpPacket {
            hook: ArpHook::Input,
            iif: InterfaceName::new(iif).ok(),
            oif: None,
            operation: ArpOperation::Request,
            sender,
            target,
        }
    }

    /// "`sender` is at ...", to `target`, leaving by `oif`.
    pub fn reply_out(oif: &str, sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        ArpPacket {
            hook: ArpHook::Output,
            iif: None,
            oif: InterfaceName::new(oif).ok(),
            operation: ArpOperation::Reply,
            sender,
            target,
        }
    }
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

    /// ICMPv6 of type `kind` (a neighbour discovery message about no particular address).
    pub fn icmpv6(kind: u8) -> Self {
        Transport::Icmpv6 { kind, target: None }
    }

    /// A neighbour solicitation (135) or advertisement (136) about `target`.
    pub fn neighbor(kind: u8, target: Ipv6Addr) -> Self {
        Transport::Icmpv6 {
            kind,
            target: Some(target),
        }
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
        self.decide(packet).verdict
    }

    /// The verdict for `packet`, and the packet as the rules leave it. Every base chain on the
    /// packet's hook sees it, by priority (a packet at [`Hook::Prerouting`] also meets the
    /// [`Hook::PreroutingNat`] chains, at their place among the prerouting priorities), and, as
    /// in the kernel, an accept only ends its own chain: the packet passes if every chain lets it,
    /// and the first chain that drops or rejects it decides.
    pub fn decide(&self, packet: &Packet) -> Decision {
        let mut packet = packet.clone();
        let mut chains: Vec<(&Chain, i32, ChainPolicy)> = self
            .table
            .iter()
            .flat_map(|table| &table.chains)
            .filter_map(|chain| {
                let base = chain.base?;
                let sees = base.hook == packet.hook
                    || (packet.hook == Hook::Prerouting && base.hook == Hook::PreroutingNat);
                sees.then_some((chain, base.priority, base.policy))
            })
            .collect();
        // Stable: chains of one priority keep the table's order, as the kernel keeps the order
        // in which they were registered.
        chains.sort_by_key(|(_, priority, _)| *priority);
        for (chain, _, policy) in chains {
            let verdict = match self.run_chain(chain, &mut packet, 0) {
                Some(verdict) => verdict,
                None => match policy {
                    ChainPolicy::Drop => Verdict::Drop,
                    ChainPolicy::Accept => Verdict::Accept,
                },
            };
            if verdict != Verdict::Accept {
                return Decision { verdict, packet };
            }
        }
        Decision {
            verdict: Verdict::Accept,
            packet,
        }
    }

    /// A packet arriving on its `iif` that this host routes, through every hook it meets:
    /// prerouting (filter and `dstnat`, which may rewrite its destination), the routing
    /// decision `route` makes for the packet as prerouting left it (the outgoing interface;
    /// `None`, no route, ends it as the kernel's `unreachable` would: dropped here), forward,
    /// then postrouting. The decision of the first hook that does not accept it, or the accept
    /// of the last, with the packet as it would leave.
    pub fn forward_path(
        &self,
        arriving: &Packet,
        route: impl Fn(&Packet) -> Option<InterfaceName>,
    ) -> Decision {
        let mut packet = Packet {
            hook: Hook::Prerouting,
            oif: None,
            ..arriving.clone()
        };
        let decided = self.decide(&packet);
        if decided.verdict != Verdict::Accept {
            return decided;
        }
        packet = decided.packet;
        let Some(oif) = route(&packet) else {
            return Decision {
                verdict: Verdict::Drop,
                packet,
            };
        };
        packet.oif = Some(oif);
        for hook in [Hook::Forward, Hook::Postrouting] {
            packet.hook = hook;
            let decided = self.decide(&packet);
            if decided.verdict != Verdict::Accept {
                return decided;
            }
            packet = decided.packet;
        }
        Decision {
            verdict: Verdict::Accept,
            packet,
        }
    }

    /// The verdict of the `arp` table for an ARP message: accept when there is no such table or
    /// chain, else what the chain for the message's hook decides.
    pub fn arp_verdict(&self, packet: &ArpPacket) -> Verdict {
        let Some(chain) = self.arp_chain(packet.hook) else {
            return Verdict::Accept;
        };
        let decided = chain
            .rules
            .iter()
            .find(|rule| rule.matches.iter().all(|m| arp_matches(m, packet)))
            .map(|rule| match rule.verdict {
                RuleVerdict::Accept => Verdict::Accept,
                RuleVerdict::Reject(with) => Verdict::Reject(with),
                // `Ruleset::check` refuses a jump in the arp table; the kernel would too.
                RuleVerdict::Drop | RuleVerdict::Jump(_) | RuleVerdict::Continue => Verdict::Drop,
            });
        decided.unwrap_or(match chain.policy {
            ChainPolicy::Drop => Verdict::Drop,
            ChainPolicy::Accept => Verdict::Accept,
        })
    }

    fn run_chain(&self, chain: &Chain, packet: &mut Packet, depth: usize) -> Option<Verdict> {
        for rule in &chain.rules {
            if !rule.matches.iter().all(|m| self.matches(m, packet)) {
                continue;
            }
            for statement in &rule.statements {
                match statement {
                    Statement::SetTtl(ttl) => packet.hop_limit = *ttl,
                    Statement::SetCtMarkBit(bit) => packet.ct_mark |= *bit,
                    // Counting and logging do not change the packet or its fate.
                    Statement::Count(_) | Statement::Log(_) => {}
                    // Masquerading rewrites the source and accepts (postrouting only).
                    Statement::Masquerade => return Some(Verdict::Accept),
                    // Destination NAT rewrites the destination (same port) and accepts.
                    Statement::Dnat(to) => {
                        packet.dst = *to;
                        return Some(Verdict::Accept);
                    }
                    // The MSS option is not modelled: the clamp never changes a verdict.
                    Statement::ClampMssToRoute => {}
                }
            }
            match &rule.verdict {
                RuleVerdict::Continue => {}
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
        // As for the input interface: none (input hook) compares as an empty name.
        Match::NotOutInterface(name) => p.oif.as_ref() != Some(name),
        Match::InInterfacePrefix(prefix) => p
            .iif
            .as_ref()
            .is_some_and(|n| n.as_str().starts_with(prefix.as_str())),
        Match::OutInterfacePrefix(prefix) => p
            .oif
            .as_ref()
            .is_some_and(|n| n.as_str().starts_with(prefix.as_str())),
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
        Match::Icmpv6Type(t) => matches!(p.transport, Transport::Icmpv6 { kind, .. } if kind == *t),
        Match::NdTarget(address) => {
            matches!(p.transport, Transport::Icmpv6 { target: Some(t), .. } if t == *address)
        }
        Match::HopLimit(h) => family(p.src) == IpFamily::V6 && p.hop_limit == *h,
        Match::ConnState(states) => match p.conn {
            ConnState::New => states.new,
            ConnState::Established => states.established,
            ConnState::Related => states.related,
            ConnState::Invalid => false,
        },
        Match::Mark(mark) => p.mark == *mark,
        Match::SocketUid(uid) => p.uid == Some(*uid),
        Match::CtMarkBit(bit) => p.ct_mark & bit != 0,
        // The kernel takes the socket cgroup's ancestor at `level` (level 0 being the root) and
        // compares its id; a socket less deep than `level` has no such ancestor and never matches.
        Match::SocketCgroup { level, id } => match level.checked_sub(1) {
            None => false,
            Some(index) => p.cgroups.get(index as usize) == Some(id),
        },
        // Under the rate: the only rules with a limit log and decide nothing.
        Match::Limit { .. } => true,
        // Broadcast modelled as the limited broadcast only (a subnet's broadcast address needs
        // the interface's prefix, which the packet does not carry).
        Match::DestinationType(kind) => match kind {
            AddressType::Local => p.dst_local,
            AddressType::Broadcast => p.dst == IpAddr::V4(Ipv4Addr::BROADCAST),
            AddressType::Multicast => p.dst.is_multicast(),
        },
    }
}

fn arp_matches(m: &ArpMatch, p: &ArpPacket) -> bool {
    match m {
        ArpMatch::NotInInterface(name) => p.iif.as_ref() != Some(name),
        ArpMatch::NotOutInterface(name) => p.oif.as_ref() != Some(name),
        // The evaluator models Ethernet/IPv4 ARP only, so only the operation can differ.
        ArpMatch::EthernetIpv4(operation) => operation.is_none_or(|op| op == p.operation),
        ArpMatch::SenderIp(ip) => p.sender == *ip,
        ArpMatch::TargetIp(ip) => p.target == *ip,
    }
}
