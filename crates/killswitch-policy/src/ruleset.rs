//! The ruleset as plain data: one `inet` table of chains, each a list of rules, each rule a list of
//! matches, the statements that change the packet, and one verdict; and, beside it, a small `arp`
//! table for what no `inet` hook sees.
//!
//! The shape mirrors what nftables executes, one match per kernel comparison, so that a backend can
//! translate it without interpreting it, and so that the evaluator here sees exactly what the kernel
//! will see. A rule whose payload match lacks the protocol match that makes it meaningful (a port
//! without `meta l4proto`, an address without `meta nfproto`) is malformed: the kernel would read
//! whatever bytes sit at that offset. [`Ruleset::check`] refuses such rules, and the backend calls it.

use crate::set::Set;
use ipnet::IpNet;
use killswitch_types::{BlockReason, InterfaceName};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The name of killswitch's tables: `inet killswitch`, and `arp killswitch` beside it.
pub const TABLE_NAME: &str = "killswitch";

/// The nfnetlink_log group the refusing rules log to ([`Statement::Log`]), and the daemon
/// listens on. Each network namespace has its own groups, and one listener per group: a
/// number no common tool uses by default (ulogd and `nft log group` examples use 0 to 2).
pub const NFLOG_GROUP: u16 = 0x6b73;

/// How many refused packets per second the kernel logs at most, after a burst of
/// [`LOG_BURST`]: enough to show what is being refused, never a flood for the daemon.
pub const LOG_RATE_PER_SECOND: u32 = 10;

/// The burst [`LOG_RATE_PER_SECOND`] allows.
pub const LOG_BURST: u32 = 20;

/// How many bytes of a refused packet the log carries: the IPv6 header (40) and the first
/// bytes of the transport header (ports). Never the payload.
pub const LOG_SNAPLEN: u32 = 48;

/// The name of the table's counter object for `reason`: `killswitch-REASON`.
///
/// The prefix is not only for whoever reads `nft list counters`: libnftnl (1.2) puts a counter
/// reference's name into a rule without its terminating NUL and reads it back with `strdup`, so a
/// name whose length is a multiple of 4 (no padding after it, `ipv6`) reads back with whatever
/// follows it, and the read-back of our own batch would disagree with the kernel's. Every name
/// here is 11 characters longer than its reason, none a multiple of 4 (a test checks).
pub fn counter_name(reason: BlockReason) -> String {
    format!("killswitch-{}", reason.name())
}

/// The reason whose counter object is named `name`.
pub fn reason_of_counter(name: &str) -> Option<BlockReason> {
    BlockReason::from_name(name.strip_prefix("killswitch-")?)
}

/// The prefix of the log lines of packets refused for `reason`: what the daemon reads the
/// reason back from.
pub fn log_prefix(reason: BlockReason) -> String {
    format!("killswitch {}", reason.name())
}

/// A complete firewall configuration: the table to install, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// `None` means "no table at all" (states `off` and unlocked `disconnected`).
    pub table: Option<Table>,
}

/// Table `inet killswitch`, and the `arp` table that is installed and removed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Named address sets the rules look up.
    pub sets: Vec<Set>,
    /// The chains, base chains first.
    pub chains: Vec<Chain>,
    /// Table `arp killswitch`, in the same transaction as this one: present while a tunnel with
    /// an IPv4 address is connected, so that no other interface answers ARP for that address.
    pub arp: Option<ArpTable>,
}

/// A chain: a base chain hooked into the stack, or a regular chain reached by a jump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The chain's name.
    pub name: String,
    /// Where it hooks in; `None` for a regular chain.
    pub base: Option<BaseChain>,
    /// The rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// How a base chain hooks into the network stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// The netfilter hook.
    pub hook: Hook,
    /// The priority among chains on the same hook (0 is `filter`).
    pub priority: i32,
    /// What happens to a packet no rule decides.
    pub policy: ChainPolicy,
}

/// The netfilter hooks killswitch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Packets addressed to this host.
    Input,
    /// Packets this host originates.
    Output,
    /// Packets this host routes (containers, VMs, a shared connection).
    Forward,
    /// Packets as they arrive, before routing: the router LANs' spoofing guard
    /// ([`crate::router`]), and the `exec` namespaces' refusals while no tunnel carries their
    /// traffic (their route is `unreachable` then, and the kernel's ICMP
    /// answer to that is rate-limited; a refusal here is a TCP reset or ICMP at once).
    Prerouting,
    /// Packets about to leave, routed or local: only for source NAT, in a chain of type `nat`
    /// (priority 100, `srcnat`). It never filters: the `exec` namespaces' addresses are rewritten
    /// to the tunnel's here ([`Statement::Masquerade`]).
    Postrouting,
    /// Packets as they arrive, in a chain of type `nat` (priority -100, `dstnat`): only for
    /// destination NAT, the router LANs' DNS sent to the tunnel's resolver
    /// ([`Statement::Dnat`]). It never filters. The kernel runs it for the first packet of a
    /// flow only; the flow's later packets get the same translation from conntrack.
    PreroutingNat,
}

/// A base chain's default verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPolicy {
    /// Let undecided packets through.
    Accept,
    /// Drop undecided packets.
    Drop,
}

/// One rule: if every match holds, the statements change the packet and the verdict applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, all of which must hold, in the order the kernel checks them.
    pub matches: Vec<Match>,
    /// Changes made to a matching packet, in order, before the verdict.
    pub statements: Vec<Statement>,
    /// What to do with a matching packet.
    pub verdict: Verdict,
    /// Why the rule exists; installed as the rule's comment, so `nft list` explains itself.
    pub comment: &'static str,
}

/// The address families of an `inet` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of a network.
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }
}

/// Layer-4 protocols the rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl L4Proto {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Icmpv6 => 58,
        }
    }

    fn has_ports(self) -> bool {
        matches!(self, L4Proto::Tcp | L4Proto::Udp)
    }
}

/// A set of conntrack states, as `ct state` matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtStates {
    /// The first packet of a flow.
    pub new: bool,
    /// Part of a flow already seen in both directions (or one that we started).
    pub established: bool,
    /// Related to an existing flow (ICMP errors about it, FTP data, ...).
    pub related: bool,
}

impl CtStates {
    /// `ct state established,related`.
    pub const ESTABLISHED_RELATED: CtStates = CtStates {
        new: false,
        established: true,
        related: true,
    };

    /// `ct state new`.
    pub const NEW: CtStates = CtStates {
        new: true,
        established: false,
        related: false,
    };
}

/// One condition on a packet. Each is one comparison in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`.
    Family(IpFamily),
    /// `iifname NAME`.
    InInterface(InterfaceName),
    /// `iifname != NAME`.
    NotInInterface(InterfaceName),
    /// `oifname NAME`.
    OutInterface(InterfaceName),
    /// `oifname != NAME`.
    NotOutInterface(InterfaceName),
    /// `iifname "PREFIX*"`: the input interface's name starts with `PREFIX` (a family of
    /// interfaces the daemon creates, such as the `exec` namespaces' `ksx0`, `ksx1`, ...).
    InInterfacePrefix(String),
    /// `oifname "PREFIX*"`.
    OutInterfacePrefix(String),
    /// `ip[6] saddr NET` (needs a preceding [`Match::Family`] of the same family).
    Source(IpNet),
    /// `ip[6] daddr NET` (needs a preceding [`Match::Family`] of the same family).
    Destination(IpNet),
    /// `ip[6] saddr @SET`: the source is in the named set of the table (needs a preceding
    /// [`Match::Family`] of the set's family).
    SourceIn(String, IpFamily),
    /// `ip[6] daddr @SET`: the destination is in the named set of the table.
    DestinationIn(String, IpFamily),
    /// `meta l4proto PROTO`.
    Protocol(L4Proto),
    /// `th sport PORT` (needs a preceding TCP or UDP [`Match::Protocol`]).
    SourcePort(u16),
    /// `th dport PORT` (needs a preceding TCP or UDP [`Match::Protocol`]).
    DestinationPort(u16),
    /// `icmpv6 type TYPE` (needs a preceding ICMPv6 [`Match::Protocol`]).
    Icmpv6Type(u8),
    /// The target address of a neighbour solicitation or advertisement: the 16 bytes at offset 8
    /// of the ICMPv6 message, `@th,64,128` (needs a preceding [`Match::Icmpv6Type`] of 135 or
    /// 136, where those bytes are the target; in any other message they are something else).
    NdTarget(Ipv6Addr),
    /// `ip6 hoplimit N` (needs a preceding IPv6 [`Match::Family`]).
    HopLimit(u8),
    /// `ct state ...`: the packet's conntrack state is one of these.
    ConnState(CtStates),
    /// `meta mark N`.
    Mark(u32),
    /// `meta skuid N`: the sending socket's owner.
    SocketUid(u32),
    /// `ct mark and BIT != 0`: the flow's conntrack mark has this bit set.
    CtMarkBit(u32),
    /// `socket cgroupv2 level L ID`: the packet's socket belongs to the cgroup v2 whose id (the
    /// inode of its directory) is `id`, or to a cgroup below it; `level` is that cgroup's depth
    /// below the cgroup2 root (the kernel compares the socket cgroup's ancestor at that depth).
    /// By id, not by path: a path is `nft`'s userspace work, and fails on a hybrid hierarchy.
    SocketCgroup {
        /// The depth below the cgroup2 root (1 for a cgroup directly under it).
        level: u32,
        /// The cgroup's id.
        id: u64,
    },
    /// `fib daddr type TYPE`: what the routing table says the destination address is to this
    /// host (needs no preceding match: the kernel looks up the packet's own family). In
    /// prerouting, before the routing decision, it tells a packet for this host (or a
    /// broadcast or multicast group) from one that will be forwarded.
    DestinationType(AddressType),
    /// `limit rate N/second burst B packets`: holds for at most `per_second` packets a second
    /// after a burst of `burst` (shared by every packet this rule sees). The evaluator takes it
    /// to hold: it only ever guards a [`Verdict::Continue`] rule that logs.
    Limit {
        /// Packets per second.
        per_second: u32,
        /// Packets allowed above the rate at once.
        burst: u32,
    },
}

/// What a destination address is to this host, as `fib daddr type` says (the routing table's
/// route type for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// One of this host's own addresses (`RTN_LOCAL`).
    Local,
    /// A broadcast address: the limited broadcast, or a subnet's (`RTN_BROADCAST`).
    Broadcast,
    /// A multicast group (`RTN_MULTICAST`).
    Multicast,
}

impl AddressType {
    /// The kernel's route type number (`RTN_*`).
    pub fn number(self) -> u32 {
        match self {
            AddressType::Local => 2,
            AddressType::Broadcast => 3,
            AddressType::Multicast => 5,
        }
    }
}

/// A change a rule makes to a packet it matches, before its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// `ip ttl set N`: rewrites the IPv4 TTL (and fixes the header checksum). With 1, the packet
    /// reaches a host on the link, and any router drops it instead of forwarding it (needs a
    /// preceding IPv4 [`Match::Family`]).
    SetTtl(u8),
    /// `ct mark set ct mark or BIT`: marks the packet's flow, leaving the mark's other bits as they
    /// are (other programs may use them).
    SetCtMarkBit(u32),
    /// `counter name "REASON"`: adds the packet to the table's named counter for `reason`.
    Count(BlockReason),
    /// `log prefix "killswitch REASON" group NFLOG_GROUP snaplen LOG_SNAPLEN`: sends the
    /// packet's headers to the daemon over nfnetlink_log ([`NFLOG_GROUP`]).
    Log(BlockReason),
    /// `masquerade`: rewrites the source address to the outgoing interface's (only in a
    /// [`Hook::Postrouting`] chain). Its verdict is its own (accept): the rule carries
    /// [`Verdict::Continue`].
    Masquerade,
    /// `dnat ip[6] to ADDR`: rewrites the destination address to `ADDR`, same port (only in a
    /// [`Hook::PreroutingNat`] chain; needs a preceding [`Match::Family`] of the address's
    /// family). Its verdict is its own (accept): the rule carries [`Verdict::Continue`].
    Dnat(IpAddr),
    /// `tcp option maxseg size set rt mtu`: lowers the MSS option of a TCP segment to what the
    /// route the packet takes can carry (its MTU less the IP and TCP headers), so that hosts
    /// behind a tunnel with a smaller MTU never send segments the tunnel must drop (path MTU
    /// discovery's ICMP is often filtered). Only SYN and SYN/ACK carry the option; on any other
    /// segment it changes nothing. Needs a preceding TCP [`Match::Protocol`]; only on the
    /// forward hook (the kernel accepts `rt mtu` on forward, output and postrouting).
    ClampMssToRoute,
}

/// What a rule does with a packet it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through this chain.
    Accept,
    /// Discard it silently.
    Drop,
    /// Discard it and tell the sender, so applications fail fast instead of hanging.
    Reject(RejectWith),
    /// Continue in the named regular chain; come back if nothing there decides.
    Jump(String),
    /// No verdict: the statements apply and evaluation goes on with the next rule.
    Continue,
}

/// How a rejection is signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectWith {
    /// A TCP reset (only for TCP packets).
    TcpReset,
    /// ICMP(v6) "administratively prohibited".
    AdminProhibited,
}

/// A rule the kernel would misread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedRule {
    /// The chain holding the rule.
    pub chain: String,
    /// The rule's position in the chain, from 0.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

/// Table `arp killswitch`: the part of the tunnel-address guard that table `inet` cannot be,
/// because ARP is not IP and no `inet` hook ever sees it. Its chains accept by default: this table
/// only takes away, and only messages that name a tunnel address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpTable {
    /// The base chains.
    pub chains: Vec<ArpChain>,
}

/// A base chain of the `arp` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpChain {
    /// The chain's name.
    pub name: String,
    /// Where it hooks in.
    pub hook: ArpHook,
    /// The priority among chains on the same hook (0 is `filter`).
    pub priority: i32,
    /// What happens to a message no rule decides.
    pub policy: ChainPolicy,
    /// The rules, evaluated in order.
    pub rules: Vec<ArpRule>,
}

/// The hooks of the `arp` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpHook {
    /// ARP messages this host receives.
    Input,
    /// ARP messages this host sends.
    Output,
}

/// One rule of the `arp` table: if every match holds, the verdict applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpRule {
    /// Conditions, all of which must hold, in the order the kernel checks them.
    pub matches: Vec<ArpMatch>,
    /// What to do with a matching message: [`Verdict::Accept`] or [`Verdict::Drop`] (the `arp`
    /// family has no reject, and the table no regular chains).
    pub verdict: Verdict,
    /// Why the rule exists; installed as the rule's comment.
    pub comment: &'static str,
}

/// One condition on an ARP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArpMatch {
    /// `iifname != NAME`.
    NotInInterface(InterfaceName),
    /// `oifname != NAME`.
    NotOutInterface(InterfaceName),
    /// `arp htype 1 arp ptype ip arp hlen 6 arp plen 4`, and `arp operation OP` when given: an
    /// ARP message for IPv4 over Ethernet (Wi-Fi included), the layout in which the address
    /// matches below read the addresses. nft itself adds no such check to `arp saddr ip`, which
    /// on another link type would read other bytes.
    EthernetIpv4(Option<ArpOperation>),
    /// `arp saddr ip ADDR`: the sender's protocol address (needs a preceding
    /// [`ArpMatch::EthernetIpv4`]).
    SenderIp(Ipv4Addr),
    /// `arp daddr ip ADDR`: the target's protocol address (needs a preceding
    /// [`ArpMatch::EthernetIpv4`]).
    TargetIp(Ipv4Addr),
}

/// ARP operations (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// "Who has TARGET? Tell SENDER." (1)
    Request,
    /// "SENDER is at this hardware address." (2)
    Reply,
}

impl ArpOperation {
    /// The operation's number on the wire.
    pub fn number(self) -> u16 {
        match self {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
        }
    }
}

impl fmt::Display for MalformedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chain {} rule {}: {}",
            self.chain, self.index, self.reason
        )
    }
}

impl std::error::Error for MalformedRule {}

impl Table {
    /// The named counters the rules add to, each once, in [`BlockReason::ALL`]'s order: the
    /// counter objects the table holds (`counter non-tunnel { }`).
    pub fn counters(&self) -> Vec<BlockReason> {
        BlockReason::ALL
            .into_iter()
            .filter(|reason| {
                self.chains.iter().any(|chain| {
                    chain
                        .rules
                        .iter()
                        .any(|rule| rule.statements.contains(&Statement::Count(*reason)))
                })
            })
            .collect()
    }
}

impl Ruleset {
    /// The base chain for `hook`, if the table has one.
    pub fn base_chain(&self, hook: Hook) -> Option<&Chain> {
        self.table
            .as_ref()?
            .chains
            .iter()
            .find(|c| c.base.is_some_and(|b| b.hook == hook))
    }

    /// A chain by name.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.table.as_ref()?.chains.iter().find(|c| c.name == name)
    }

    /// A set by name.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.table.as_ref()?.sets.iter().find(|s| s.name == name)
    }

    /// Checks that every payload match is preceded by the protocol match that gives it meaning,
    /// that reject-with-reset only applies to TCP, and that every jump has a target.
    pub fn check(&self) -> Result<(), MalformedRule> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        for chain in &table.chains {
            for (index, rule) in chain.rules.iter().enumerate() {
                let fail = |reason: String| MalformedRule {
                    chain: chain.name.clone(),
                    index,
                    reason,
                };
                rule.check_prerequisites().map_err(fail)?;
                for m in &rule.matches {
                    if let Match::SourceIn(name, family) | Match::DestinationIn(name, family) = m {
                        let set = table.sets.iter().find(|s| &s.name == name);
                        if set.is_none_or(|s| s.family != *family) {
                            return Err(fail(format!(
                                "lookup in set {name:?}, which is not a set of that family here"
                            )));
                        }
                    }
                }
                if let Verdict::Jump(target) = &rule.verdict {
                    let target_chain = table.chains.iter().find(|c| &c.name == target);
                    if target_chain.is_none_or(|c| c.base.is_some()) {
                        return Err(fail(format!(
                            "jump to {target:?}, which is not a regular chain here"
                        )));
                    }
                }
            }
        }
        if let Some(arp) = &table.arp {
            for chain in &arp.chains {
                for (index, rule) in chain.rules.iter().enumerate() {
                    rule.check().map_err(|reason| MalformedRule {
                        chain: format!("arp {}", chain.name),
                        index,
                        reason,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The ruleset as an `nft -f` script that replaces both tables in one transaction, as the
    /// backend's batch does: each table added (so that deleting it is valid) and deleted, then
    /// whatever this ruleset holds.
    pub fn nft_script(&self) -> String {
        format!(
            "table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n\
             table arp {TABLE_NAME}\ndelete table arp {TABLE_NAME}\n{self}"
        )
    }

    /// The `arp` table's base chain for `hook`, if there is one.
    pub fn arp_chain(&self, hook: ArpHook) -> Option<&ArpChain> {
        self.table
            .as_ref()?
            .arp
            .as_ref()?
            .chains
            .iter()
            .find(|c| c.hook == hook)
    }
}

impl ArpRule {
    fn check(&self) -> Result<(), String> {
        let mut layout = false;
        for m in &self.matches {
            match m {
                ArpMatch::EthernetIpv4(_) => layout = true,
                ArpMatch::SenderIp(_) | ArpMatch::TargetIp(_) if !layout => {
                    return Err(
                        "arp address match without the ethernet/ipv4 header match first".to_owned(),
                    );
                }
                _ => {}
            }
        }
        match self.verdict {
            Verdict::Accept | Verdict::Drop => Ok(()),
            ref other => Err(format!("{other} in the arp table (only accept and drop)")),
        }
    }
}

impl Rule {
    fn check_prerequisites(&self) -> Result<(), String> {
        let mut family = None;
        let mut proto = None;
        let mut icmpv6_type = None;
        for m in &self.matches {
            match m {
                Match::Family(f) => family = Some(*f),
                Match::Protocol(p) => proto = Some(*p),
                Match::Source(net) | Match::Destination(net)
                    if family != Some(IpFamily::of(net)) =>
                {
                    return Err(format!(
                        "address match {net} without `meta nfproto` of its family first"
                    ));
                }
                Match::SourceIn(name, set_family) | Match::DestinationIn(name, set_family)
                    if family != Some(*set_family) =>
                {
                    return Err(format!(
                        "lookup in @{name} without `meta nfproto` of its family first"
                    ));
                }
                Match::SourcePort(_) | Match::DestinationPort(_)
                    if !proto.is_some_and(L4Proto::has_ports) =>
                {
                    return Err("port match without `meta l4proto tcp|udp` first".to_owned());
                }
                Match::Icmpv6Type(_) if proto != Some(L4Proto::Icmpv6) => {
                    return Err("icmpv6 type match without `meta l4proto icmpv6` first".to_owned());
                }
                Match::HopLimit(_) if family != Some(IpFamily::V6) => {
                    return Err("hop limit match without `meta nfproto ipv6` first".to_owned());
                }
                Match::Icmpv6Type(t) => icmpv6_type = Some(*t),
                Match::NdTarget(_) if !matches!(icmpv6_type, Some(135 | 136)) => {
                    return Err(
                        "neighbour discovery target match without `icmpv6 type` 135 or 136 first"
                            .to_owned(),
                    );
                }
                _ => {}
            }
        }
        for statement in &self.statements {
            match statement {
                Statement::SetTtl(_) if family != Some(IpFamily::V4) => {
                    return Err("ttl rewrite without `meta nfproto ipv4` first".to_owned());
                }
                Statement::Dnat(to) if family != Some(family_of_addr(*to)) => {
                    return Err(format!(
                        "dnat to {to} without `meta nfproto` of its family first"
                    ));
                }
                Statement::ClampMssToRoute if proto != Some(L4Proto::Tcp) => {
                    return Err("mss clamp without `meta l4proto tcp` first".to_owned());
                }
                Statement::SetTtl(_)
                | Statement::Dnat(_)
                | Statement::ClampMssToRoute
                | Statement::SetCtMarkBit(_)
                | Statement::Count(_)
                | Statement::Log(_)
                | Statement::Masquerade => {}
            }
        }
        if self.verdict == Verdict::Reject(RejectWith::TcpReset) && proto != Some(L4Proto::Tcp) {
            return Err("reject with tcp reset on a rule that does not match tcp".to_owned());
        }
        Ok(())
    }
}

// Display renders the ruleset in nft's own syntax, so that snapshots, logs and `nft list` read alike.

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            None => writeln!(f, "# no table inet {TABLE_NAME}"),
            Some(table) => {
                writeln!(f, "table inet {TABLE_NAME} {{")?;
                let counters = table.counters();
                for reason in &counters {
                    writeln!(f, "\tcounter {} {{\n\t}}", counter_name(*reason))?;
                }
                if !counters.is_empty() {
                    writeln!(f)?;
                }
                for (i, set) in table.sets.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{set}")?;
                }
                for (i, chain) in table.chains.iter().enumerate() {
                    if i > 0 || !table.sets.is_empty() {
                        writeln!(f)?;
                    }
                    write!(f, "{chain}")?;
                }
                writeln!(f, "}}")?;
                if let Some(arp) = &table.arp {
                    write!(f, "{arp}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for ArpTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table arp {TABLE_NAME} {{")?;
        for (i, chain) in self.chains.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "\tchain {} {{", chain.name)?;
            let hook = match chain.hook {
                ArpHook::Input => "input",
                ArpHook::Output => "output",
            };
            writeln!(
                f,
                "\t\ttype filter hook {hook} priority {}; policy {};",
                chain.priority,
                policy_name(chain.policy)
            )?;
            for rule in &chain.rules {
                writeln!(f, "\t\t{rule}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for ArpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{}", self.verdict)?;
        if !self.comment.is_empty() {
            write!(f, " comment \"{}\"", self.comment)?;
        }
        Ok(())
    }
}

impl fmt::Display for ArpMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArpMatch::NotInInterface(name) => write!(f, "iifname != \"{name}\""),
            ArpMatch::NotOutInterface(name) => write!(f, "oifname != \"{name}\""),
            ArpMatch::EthernetIpv4(operation) => {
                write!(f, "arp htype 1 arp ptype ip arp hlen 6 arp plen 4")?;
                match operation {
                    Some(ArpOperation::Request) => write!(f, " arp operation request"),
                    Some(ArpOperation::Reply) => write!(f, " arp operation reply"),
                    None => Ok(()),
                }
            }
            ArpMatch::SenderIp(ip) => write!(f, "arp saddr ip {ip}"),
            ArpMatch::TargetIp(ip) => write!(f, "arp daddr ip {ip}"),
        }
    }
}

fn policy_name(policy: ChainPolicy) -> &'static str {
    match policy {
        ChainPolicy::Accept => "accept",
        ChainPolicy::Drop => "drop",
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tchain {} {{", self.name)?;
        if let Some(base) = &self.base {
            let (kind, hook) = match base.hook {
                Hook::Input => ("filter", "input"),
                Hook::Output => ("filter", "output"),
                Hook::Forward => ("filter", "forward"),
                Hook::Prerouting => ("filter", "prerouting"),
                Hook::Postrouting => ("nat", "postrouting"),
                Hook::PreroutingNat => ("nat", "prerouting"),
            };
            writeln!(
                f,
                "\t\ttype {kind} hook {hook} priority {}; policy {};",
                base.priority,
                policy_name(base.policy)
            )?;
        }
        for rule in &self.rules {
            writeln!(f, "\t\t{rule}")?;
        }
        writeln!(f, "\t}}")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        let mut words: Vec<String> = self.statements.iter().map(ToString::to_string).collect();
        if self.verdict != Verdict::Continue {
            words.push(self.verdict.to_string());
        }
        write!(f, "{}", words.join(" "))?;
        if !self.comment.is_empty() {
            write!(f, " comment \"{}\"", self.comment)?;
        }
        Ok(())
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = |net: &IpNet| match net {
            IpNet::V4(_) => "ip",
            IpNet::V6(_) => "ip6",
        };
        match self {
            Match::Family(IpFamily::V4) => write!(f, "meta nfproto ipv4"),
            Match::Family(IpFamily::V6) => write!(f, "meta nfproto ipv6"),
            Match::InInterface(name) => write!(f, "iifname \"{name}\""),
            Match::NotInInterface(name) => write!(f, "iifname != \"{name}\""),
            Match::OutInterface(name) => write!(f, "oifname \"{name}\""),
            Match::NotOutInterface(name) => write!(f, "oifname != \"{name}\""),
            Match::InInterfacePrefix(prefix) => write!(f, "iifname \"{prefix}*\""),
            Match::OutInterfacePrefix(prefix) => write!(f, "oifname \"{prefix}*\""),
            Match::Source(net) => write!(f, "{} saddr {}", ip(net), display_net(net)),
            Match::Destination(net) => write!(f, "{} daddr {}", ip(net), display_net(net)),
            Match::SourceIn(name, family) => write!(f, "{} saddr @{name}", ip_of(*family)),
            Match::DestinationIn(name, family) => write!(f, "{} daddr @{name}", ip_of(*family)),
            Match::Protocol(p) => write!(
                f,
                "meta l4proto {}",
                match p {
                    L4Proto::Tcp => "tcp",
                    L4Proto::Udp => "udp",
                    L4Proto::Icmpv6 => "ipv6-icmp",
                }
            ),
            Match::SourcePort(p) => write!(f, "th sport {p}"),
            Match::DestinationPort(p) => write!(f, "th dport {p}"),
            Match::Icmpv6Type(t) => write!(f, "icmpv6 type {}", icmpv6_type_name(*t)),
            // nft 1.0.6 has no name for the target (`icmpv6 taddr` came later): a raw payload
            // match, which nft compiles to the same load and comparison.
            Match::NdTarget(target) => write!(f, "@th,64,128 {:#034x}", u128::from(*target)),
            Match::HopLimit(h) => write!(f, "ip6 hoplimit {h}"),
            Match::ConnState(s) => {
                let names: Vec<&str> = [
                    (s.new, "new"),
                    (s.established, "established"),
                    (s.related, "related"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                write!(f, "ct state {}", names.join(","))
            }
            Match::Mark(m) => write!(f, "meta mark {m:#010x}"),
            Match::SocketUid(u) => write!(f, "meta skuid {u}"),
            Match::CtMarkBit(bit) => write!(f, "ct mark and {bit:#010x} != 0"),
            Match::SocketCgroup { level, id } => write!(f, "socket cgroupv2 level {level} {id}"),
            Match::Limit { per_second, burst } => {
                write!(f, "limit rate {per_second}/second burst {burst} packets")
            }
            Match::DestinationType(kind) => write!(
                f,
                "fib daddr type {}",
                match kind {
                    AddressType::Local => "local",
                    AddressType::Broadcast => "broadcast",
                    AddressType::Multicast => "multicast",
                }
            ),
        }
    }
}

fn family_of_addr(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

fn ip_of(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

fn display_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn icmpv6_type_name(t: u8) -> String {
    match t {
        133 => "nd-router-solicit".to_owned(),
        134 => "nd-router-advert".to_owned(),
        135 => "nd-neighbor-solicit".to_owned(),
        136 => "nd-neighbor-advert".to_owned(),
        other => other.to_string(),
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::SetTtl(ttl) => write!(f, "ip ttl set {ttl}"),
            Statement::SetCtMarkBit(bit) => write!(f, "ct mark set ct mark or {bit:#010x}"),
            Statement::Count(reason) => write!(f, "counter name \"{}\"", counter_name(*reason)),
            Statement::Log(reason) => write!(
                f,
                "log prefix \"{}\" group {NFLOG_GROUP} snaplen {LOG_SNAPLEN}",
                log_prefix(*reason)
            ),
            Statement::Masquerade => write!(f, "masquerade"),
            Statement::Dnat(IpAddr::V4(to)) => write!(f, "dnat ip to {to}"),
            Statement::Dnat(IpAddr::V6(to)) => write!(f, "dnat ip6 to {to}"),
            Statement::ClampMssToRoute => write!(f, "tcp option maxseg size set rt mtu"),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject(RejectWith::TcpReset) => f.write_str("reject with tcp reset"),
            Verdict::Reject(RejectWith::AdminProhibited) => {
                f.write_str("reject with icmpx admin-prohibited")
            }
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Continue => f.write_str("continue"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_read_back_whole_and_name_their_reason() {
        for reason in BlockReason::ALL {
            let name = counter_name(reason);
            // See `counter_name`: a multiple of 4 would read back with trailing bytes.
            assert_ne!(name.len() % 4, 0, "{name}");
            assert_eq!(reason_of_counter(&name), Some(reason));
        }
        assert_eq!(reason_of_counter("dns"), None);
    }
}
