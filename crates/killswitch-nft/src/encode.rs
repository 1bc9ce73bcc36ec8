//! Ruleset → the bytes of one nftables netlink batch.
//!
//! Each [`Match`] becomes the expressions `nft` itself would emit for it (a load into register 1,
//! then a comparison), so that `nft list table inet killswitch` prints the rules in familiar syntax.
//! The same goes for the `arp` table's matches and for statements (`ip ttl set`).

mod rewrite;

use crate::NftError;
use crate::counters::{CounterObject, CounterRef, Limit, Log};
use ipnet::IpNet;
use killswitch_policy::{
    ArpHook, ArpMatch, ArpRule, ArpTable, CtStates, IpFamily, Match, RejectWith,
    Rule as PolicyRule, Ruleset, Statement, TABLE_NAME, Verdict as PolicyVerdict,
};
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Expression, IcmpCode, Meta, RejectionType,
    Verdict as NftVerdict,
};
use nftnl::nftnl_sys as sys;
use nftnl::{Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};
use std::ffi::CString;
use std::ptr::NonNull;

/// One complete batch, as the contiguous bytes sent to the kernel, with a label for every message
/// so that a rejection can name the rule it was about.
#[derive(Debug)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    labels: Vec<String>,
}

/// Our table of `family`, as chains and rules name it. Every table message of a batch is a
/// [`TableMessage`] of the same name and family, which also carries the flags.
fn killswitch_table(family: ProtoFamily) -> Result<Table, NftError> {
    let name = CString::new(TABLE_NAME).map_err(|_| NftError::Comment(TABLE_NAME.to_owned()))?;
    Ok(Table::new(&name, family))
}

/// nf_tables' table flag `owner` (linux/netfilter/nf_tables.h, kernel 5.12): only the netlink
/// socket that created the table may change or delete it; other programs get `EPERM`, and their
/// `flush ruleset` skips it.
pub(crate) const NFT_TABLE_F_OWNER: u32 = 0x2;
/// nf_tables' table flag `persist` (kernel 6.9): an owned table outlives its owner's socket
/// (orphaned), and the next socket that adds it with `owner` adopts it.
pub(crate) const NFT_TABLE_F_PERSIST: u32 = 0x4;

/// A table's add or delete message with flags: nftnl's `Table` always sends flags 0.
struct TableMessage {
    name: CString,
    family: ProtoFamily,
    flags: u32,
}

impl TableMessage {
    fn new(family: ProtoFamily, flags: u32) -> Result<Self, NftError> {
        Self::named(TABLE_NAME, family, flags)
    }

    fn named(name: &str, family: ProtoFamily, flags: u32) -> Result<Self, NftError> {
        Ok(TableMessage {
            name: CString::new(name).map_err(|_| NftError::Comment(name.to_owned()))?,
            family,
            flags,
        })
    }
}

impl TableMessage {
    /// Writes the message of type `kind` into `buf`.
    ///
    /// # Safety
    ///
    /// `buf` must have room for the largest netlink message (as [`nftnl::NlMsg::write`] requires).
    unsafe fn write_kind(&self, buf: *mut std::ffi::c_void, seq: u32, kind: u16) {
        // SAFETY: the table object is allocated, filled from live values and freed here; the
        // header and payload are written into `buf` as nftnl's own `Table` does.
        unsafe {
            let table = sys::nftnl_table_alloc();
            if table.is_null() {
                // Out of memory for a few bytes: nothing sensible is left to do.
                std::process::abort();
            }
            sys::nftnl_table_set_u32(table, sys::NFTNL_TABLE_FAMILY as u16, self.family as u32);
            sys::nftnl_table_set_str(table, sys::NFTNL_TABLE_NAME as u16, self.name.as_ptr());
            sys::nftnl_table_set_u32(table, sys::NFTNL_TABLE_FLAGS as u16, self.flags);
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                kind,
                self.family as u16,
                libc::NLM_F_ACK as u16,
                seq,
            );
            sys::nftnl_table_nlmsg_build_payload(header, table);
            sys::nftnl_table_free(table);
        }
    }
}

// SAFETY: `write` fills `buf` (which the batch sized for the largest message) with one table
// message built by libnftnl from an object that lives only for the call.
unsafe impl nftnl::NlMsg for TableMessage {
    unsafe fn write(&self, buf: *mut std::ffi::c_void, seq: u32, msg_type: MsgType) {
        let kind = match msg_type {
            MsgType::Add => libc::NFT_MSG_NEWTABLE,
            MsgType::Del => libc::NFT_MSG_DELTABLE,
        };
        // SAFETY: the caller's contract, passed on.
        unsafe { self.write_kind(buf, seq, kind as u16) }
    }
}

/// The message of [`probe_batch`] that always fails, so that the batch is never committed.
pub(crate) const PROBE_SENTINEL: &str = "delete table inet killswitch_probe_absent";

/// nf_tables' NFT_MSG_DESTROYTABLE (kernel 6.3): delete a table if it exists, no error if not.
const NFT_MSG_DESTROYTABLE: u16 = 26;

/// A table's destroy message: deletes it whoever left it (an orphaned owned table, an unowned
/// one of an older version or another program), or nothing.
struct DestroyTable<'a>(&'a TableMessage);

// SAFETY: as for `TableMessage`: one table message written into `buf`.
unsafe impl nftnl::NlMsg for DestroyTable<'_> {
    unsafe fn write(&self, buf: *mut std::ffi::c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.write_kind(buf, seq, NFT_MSG_DESTROYTABLE) }
    }
}

/// A batch that is never committed and tells whether this kernel knows the table `flags`: it adds
/// a throwaway table with them, then deletes a table that does not exist. A kernel that does not
/// know the flags refuses the first message (`EOPNOTSUPP`); one that does fails at the second
/// ([`PROBE_SENTINEL`], `ENOENT`). Either way the kernel rolls the batch back: no transaction, no
/// generation for anyone's monitor to see.
pub(crate) fn probe_batch(flags: u32) -> Result<Batch, NftError> {
    let probe = TableMessage::named("killswitch_probe", ProtoFamily::Inet, flags)?;
    let absent = TableMessage::named("killswitch_probe_absent", ProtoFamily::Inet, 0)?;
    let mut batch = nftnl::Batch::new();
    batch.add(&probe, MsgType::Add);
    batch.add(&absent, MsgType::Del);
    let labels = [
        "batch begin",
        "add table inet killswitch_probe",
        PROBE_SENTINEL,
        "batch end",
    ]
    .map(str::to_owned)
    .to_vec();
    let finalized = batch.finalize();
    Ok(Batch {
        bytes: finalized.iter().flatten().copied().collect(),
        labels,
    })
}

fn family_name(family: ProtoFamily) -> &'static str {
    match family {
        ProtoFamily::Arp => "arp",
        _ => "inet",
    }
}

impl Batch {
    /// The batch that replaces our tables with `ruleset`, the tables carrying `flags`.
    /// Counter objects start at `carried` (see [`crate::counters`]), zero for a reason absent.
    pub(crate) fn build(
        ruleset: &Ruleset,
        flags: u32,
        carried: &crate::counters::Counters,
    ) -> Result<Self, NftError> {
        let table = killswitch_table(ProtoFamily::Inet)?;
        let arp_table = killswitch_table(ProtoFamily::Arp)?;
        let inet_message = TableMessage::new(ProtoFamily::Inet, flags)?;
        let arp_message = TableMessage::new(ProtoFamily::Arp, flags)?;
        let mut batch = nftnl::Batch::new();
        let mut labels = vec!["batch begin".to_owned()];

        // The old tables go first, with their chains and rules, and everything after re-creates
        // them; the kernel applies all of it at once at commit. Both tables, always: whatever this
        // ruleset says about the arp table, an old one must not survive it.
        for message in [&inet_message, &arp_message] {
            let family = family_name(message.family);
            if flags & NFT_TABLE_F_OWNER != 0 {
                // Owned tables (kernel 6.9, which has destroy): destroy deletes the table if it
                // exists, ours or an orphan a killed daemon or the early-boot step left (an orphan
                // is anyone's to delete), or an unowned one an older version left, which adding
                // with other flags could not adopt. Another live owner's is refused (EPERM).
                batch.add(&DestroyTable(message), MsgType::Del);
                labels.push(format!("destroy table {family} {TABLE_NAME}"));
            } else {
                // Adding first makes the delete valid whether or not the table exists (kernels
                // before 6.3 have no destroy).
                batch.add(message, MsgType::Add);
                labels.push(format!("add table {family} {TABLE_NAME}"));
                batch.add(message, MsgType::Del);
                labels.push(format!("delete table {family} {TABLE_NAME}"));
            }
        }

        if let Some(policy_table) = &ruleset.table {
            batch.add(&inet_message, MsgType::Add);
            labels.push(format!("add table inet {TABLE_NAME}"));

            // Counter objects before the rules that add to them.
            let counters = policy_table
                .counters()
                .into_iter()
                .map(|reason| {
                    let start = carried.get(&reason).copied().unwrap_or_default();
                    Ok((reason, CounterObject::new(reason, start)?))
                })
                .collect::<Result<Vec<_>, NftError>>()?;
            for (reason, counter) in &counters {
                batch.add(counter, MsgType::Add);
                labels.push(format!("add counter {reason}"));
            }

            // Sets before the rules that look them up (which name them, and their batch id).
            for (index, policy_set) in policy_table.sets.iter().enumerate() {
                let messages = add_set(&mut batch, &table, policy_set, set_id(index))?;
                labels.push(format!("add set {}", policy_set.name));
                for part in 0..messages {
                    labels.push(format!(
                        "elements of set {} (part {})",
                        policy_set.name,
                        part + 1
                    ));
                }
            }

            let mut chains = Vec::with_capacity(policy_table.chains.len());
            for policy_chain in &policy_table.chains {
                let chain_name = CString::new(policy_chain.name.as_str())
                    .map_err(|_| NftError::Comment(policy_chain.name.clone()))?;
                let mut chain = Chain::new(&chain_name, &table);
                if let Some(base) = policy_chain.base {
                    chain.set_hook(hook(base.hook), base.priority);
                    // Postrouting is only ever source NAT (the exec namespaces' and the router
                    // LANs' masquerade), prerouting `nat` only destination NAT (the LANs' DNS).
                    chain.set_type(match base.hook {
                        killswitch_policy::Hook::Postrouting
                        | killswitch_policy::Hook::PreroutingNat => ChainType::Nat,
                        _ => ChainType::Filter,
                    });
                    chain.set_policy(match base.policy {
                        killswitch_policy::ChainPolicy::Accept => Policy::Accept,
                        killswitch_policy::ChainPolicy::Drop => Policy::Drop,
                    });
                }
                batch.add(&chain, MsgType::Add);
                labels.push(format!("add chain {}", policy_chain.name));
                chains.push(chain);
            }
            // Rules after all chains, so that a jump never names a chain not yet created.
            for (chain, policy_chain) in chains.iter().zip(&policy_table.chains) {
                for (index, policy_rule) in policy_chain.rules.iter().enumerate() {
                    let rule = encode_rule(chain, policy_rule, &policy_table.sets)?;
                    batch.add(&ZeroPadded(&rule), MsgType::Add);
                    labels.push(format!(
                        "rule {index} of chain {}: {policy_rule}",
                        policy_chain.name
                    ));
                }
            }
            if let Some(arp) = &policy_table.arp {
                add_arp_table(&mut batch, &mut labels, (&arp_table, &arp_message), arp)?;
            }
        }
        labels.push("batch end".to_owned());

        let finalized = batch.finalize();
        let bytes: Vec<u8> = finalized.iter().flatten().copied().collect();
        Ok(Batch { bytes, labels })
    }

    /// The batch as sent.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The label of the `index`th message of the batch.
    pub(crate) fn label(&self, index: usize) -> &str {
        self.labels
            .get(index)
            .map_or("an unknown message", String::as_str)
    }

    /// How many messages the batch holds.
    pub(crate) fn messages(&self) -> usize {
        self.labels.len()
    }
}

/// A rule message written over zeroed bytes. libnftnl puts a counter reference's name without
/// its terminating NUL (the kernel does not need it), and the batch buffer is not zeroed: the
/// read-back, which parses our own batch with libnftnl's `strdup`, would read the name with
/// whatever bytes follow it. Writing the rule once to learn its length, zeroing that much and
/// writing it again leaves its padding zero, so the name ends where it should.
struct ZeroPadded<'a, 'b>(&'a Rule<'b>);

// SAFETY: `write` writes one rule message into `buf` (which the batch sized for the largest
// message), and zeroes only bytes of that message.
unsafe impl nftnl::NlMsg for ZeroPadded<'_, '_> {
    unsafe fn write(&self, buf: *mut std::ffi::c_void, seq: u32, msg_type: MsgType) {
        // SAFETY: the caller's contract: `buf` has room for the largest message, so for this
        // one; its first bytes are the nlmsghdr the first write leaves there.
        unsafe {
            self.0.write(buf, seq, msg_type);
            let len = (*buf.cast::<libc::nlmsghdr>()).nlmsg_len as usize;
            std::ptr::write_bytes(
                buf.cast::<u8>(),
                0,
                len.min(nftnl::nft_nlmsg_maxsize() as usize),
            );
            self.0.write(buf, seq, msg_type);
        }
    }
}

/// Adds table `arp killswitch` (its add message and nftnl's table its chains name), its chains and
/// their rules to the batch.
fn add_arp_table(
    batch: &mut nftnl::Batch,
    labels: &mut Vec<String>,
    table: (&Table, &TableMessage),
    arp: &ArpTable,
) -> Result<(), NftError> {
    let (table, message) = table;
    batch.add(message, MsgType::Add);
    labels.push(format!("add table arp {TABLE_NAME}"));
    let mut chains = Vec::with_capacity(arp.chains.len());
    for policy_chain in &arp.chains {
        let chain_name = CString::new(policy_chain.name.as_str())
            .map_err(|_| NftError::Comment(policy_chain.name.clone()))?;
        let mut chain = Chain::new(&chain_name, table);
        chain.set_hook(arp_hook(policy_chain.hook), policy_chain.priority);
        chain.set_type(ChainType::Filter);
        chain.set_policy(match policy_chain.policy {
            killswitch_policy::ChainPolicy::Accept => Policy::Accept,
            killswitch_policy::ChainPolicy::Drop => Policy::Drop,
        });
        batch.add(&chain, MsgType::Add);
        labels.push(format!("add chain {} of table arp", policy_chain.name));
        chains.push(chain);
    }
    for (chain, policy_chain) in chains.iter().zip(&arp.chains) {
        for (index, policy_rule) in policy_chain.rules.iter().enumerate() {
            batch.add(&encode_arp_rule(chain, policy_rule)?, MsgType::Add);
            labels.push(format!(
                "rule {index} of arp chain {}: {policy_rule}",
                policy_chain.name
            ));
        }
    }
    Ok(())
}

/// The arp family numbers its hooks NF_ARP_IN 0 and NF_ARP_OUT 1. nftnl's `Hook` names only the
/// inet numbers, so these are the variants that carry the arp numbers.
fn arp_hook(hook: ArpHook) -> Hook {
    const _: () =
        assert!(Hook::PreRouting as i32 == libc::NF_ARP_IN && Hook::In as i32 == libc::NF_ARP_OUT);
    match hook {
        ArpHook::Input => Hook::PreRouting,
        ArpHook::Output => Hook::In,
    }
}

fn hook(hook: killswitch_policy::Hook) -> Hook {
    match hook {
        killswitch_policy::Hook::Input => Hook::In,
        killswitch_policy::Hook::Output => Hook::Out,
        killswitch_policy::Hook::Forward => Hook::Forward,
        killswitch_policy::Hook::Postrouting => Hook::PostRouting,
        killswitch_policy::Hook::Prerouting | killswitch_policy::Hook::PreroutingNat => {
            Hook::PreRouting
        }
    }
}

/// The batch-local id of the table's `index`th set (0 means "none" to the kernel).
fn set_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// Adds an interval set and its elements to the batch; returns how many element messages that
/// took (libnftnl splits a large set over several, each under the kernel's message size).
///
/// The elements are what nft itself sends for an interval set: each range is its first address,
/// and the address after its last flagged as an interval end; and, when the first range does not
/// start at the lowest address, a leading end element at zero, which marks everything below it as
/// outside the set.
fn add_set(
    batch: &mut nftnl::Batch,
    table: &Table,
    policy_set: &killswitch_policy::Set,
    id: u32,
) -> Result<usize, NftError> {
    let name = CString::new(policy_set.name.as_str())
        .map_err(|_| NftError::Comment(policy_set.name.clone()))?;
    let (key_type, key_len): (u32, u32) = match policy_set.family {
        IpFamily::V4 => (7, 4),
        IpFamily::V6 => (8, 16),
    };
    let mut elements: Vec<(Vec<u8>, bool)> = Vec::with_capacity(2 * policy_set.len() + 1);
    for (i, (start, end)) in policy_set.ranges().enumerate() {
        let start = octets(start);
        if i == 0 && start.iter().any(|b| *b != 0) {
            elements.push((vec![0; start.len()], true));
        }
        elements.push((start, false));
        if let Some(after) = successor(&octets(end)) {
            elements.push((after, true));
        }
    }
    let set = nftnl::set::Set::<std::net::Ipv4Addr>::new_named(&name, id, table, ProtoFamily::Inet);
    // SAFETY: the set object is alive for this block; the setters copy the integers and bytes.
    unsafe {
        let raw = set.as_ptr().as_ptr();
        sys::nftnl_set_set_u32(
            raw,
            sys::NFTNL_SET_FLAGS as u16,
            libc::NFT_SET_INTERVAL as u32,
        );
        sys::nftnl_set_set_u32(raw, sys::NFTNL_SET_KEY_TYPE as u16, key_type);
        sys::nftnl_set_set_u32(raw, sys::NFTNL_SET_KEY_LEN as u16, key_len);
        for (key, end) in &elements {
            let elem = sys::nftnl_set_elem_alloc();
            if elem.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_elem_set(
                elem,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast(),
                key.len() as u32,
            );
            if *end {
                sys::nftnl_set_elem_set_u32(
                    elem,
                    sys::NFTNL_SET_ELEM_FLAGS as u16,
                    libc::NFT_SET_ELEM_INTERVAL_END as u32,
                );
            }
            // The set takes ownership of the element.
            sys::nftnl_set_elem_add(raw, elem);
        }
    }
    batch.add(&set, MsgType::Add);
    let mut messages = 0;
    if !elements.is_empty() {
        for part in set.elems_iter() {
            batch.add(&part, MsgType::Add);
            messages += 1;
        }
    }
    Ok(messages)
}

fn octets(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The next address (big-endian bytes plus one), or `None` after the last one.
fn successor(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut next = bytes.to_vec();
    for byte in next.iter_mut().rev() {
        let (value, carry) = byte.overflowing_add(1);
        *byte = value;
        if !carry {
            return Some(next);
        }
    }
    None
}

fn encode_rule<'a>(
    chain: &'a Chain<'a>,
    policy_rule: &PolicyRule,
    sets: &[killswitch_policy::Set],
) -> Result<Rule<'a>, NftError> {
    let mut rule = Rule::new(chain);
    let mut matches = policy_rule.matches.iter().peekable();
    while let Some(m) = matches.next() {
        // Source and destination port side by side are one 4-byte load and comparison, as nft
        // itself compiles `th sport A th dport B`: one comparison fewer per packet.
        if let (Match::SourcePort(sport), Some(Match::DestinationPort(dport))) = (m, matches.peek())
        {
            let mut both = sport.to_be_bytes().to_vec();
            both.extend_from_slice(&dport.to_be_bytes());
            rule.add_expr(&PayloadLoad::transport(0, 4));
            rule.add_expr(&cmp_eq(&both));
            matches.next();
            continue;
        }
        if let Match::SourceIn(name, family) | Match::DestinationIn(name, family) = m {
            let index = sets
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| NftError::Comment(format!("lookup in unknown set {name}")))?;
            let (offset, len) = match (m, family) {
                (Match::SourceIn(..), IpFamily::V4) => (12, 4),
                (_, IpFamily::V4) => (16, 4),
                (Match::SourceIn(..), IpFamily::V6) => (8, 16),
                (_, IpFamily::V6) => (24, 16),
            };
            rule.add_expr(&PayloadLoad::network(offset, len));
            rule.add_expr(&Lookup {
                set: CString::new(name.as_str()).map_err(|_| NftError::Comment(name.clone()))?,
                id: set_id(index),
            });
            continue;
        }
        encode_match(&mut rule, m);
    }
    for statement in &policy_rule.statements {
        match statement {
            Statement::SetTtl(ttl) => {
                // nft's `ip ttl set N`: the checksum is updated a 16-bit word at a time, so load
                // the word holding the TTL (TTL, protocol), replace the TTL byte, and write the
                // word back with an incremental fix-up of the header checksum at offset 10.
                rule.add_expr(&PayloadLoad::network(8, 2));
                rule.add_expr(&Bitwise::new(
                    [0x00u8, 0xff].as_slice(),
                    [*ttl, 0x00].as_slice(),
                ));
                rule.add_expr(&PayloadWrite::network_with_checksum(8, 2, 10));
            }
            Statement::SetCtMarkBit(bit) => {
                // nft's `ct mark set ct mark or BIT`: load the mark, set the bit ((mark & !bit) ^
                // bit), store it back; the other bits stay as they are.
                rule.add_expr(&Conntrack::Mark { set: false });
                rule.add_expr(&Bitwise::new(
                    (!*bit).to_ne_bytes().as_slice(),
                    bit.to_ne_bytes().as_slice(),
                ));
                rule.add_expr(&Conntrack::Mark { set: true });
            }
            Statement::Count(reason) => {
                let name = killswitch_policy::counter_name(*reason);
                let name = CString::new(name.as_str()).map_err(|_| NftError::Comment(name))?;
                rule.add_expr(&CounterRef(name));
            }
            Statement::Log(reason) => rule.add_expr(&Log::new(*reason)?),
            // Its own verdict (accept): nothing follows it.
            Statement::Masquerade => rule.add_expr(&nftnl::expr::Masquerade),
            // Its own verdict (accept) too.
            Statement::Dnat(to) => rewrite::add_dnat(&mut rule, *to),
            Statement::ClampMssToRoute => rewrite::add_mss_clamp(&mut rule),
        }
    }
    add_verdict(&mut rule, &policy_rule.verdict)?;
    if !policy_rule.comment.is_empty() {
        set_comment(&mut rule, policy_rule.comment)?;
    }
    Ok(rule)
}

fn encode_arp_rule<'a>(chain: &'a Chain<'a>, policy_rule: &ArpRule) -> Result<Rule<'a>, NftError> {
    let mut rule = Rule::new(chain);
    for m in &policy_rule.matches {
        match m {
            ArpMatch::NotInInterface(name) => {
                rule.add_expr(&Meta::IifName);
                rule.add_expr(&Cmp::new(CmpOp::Neq, ifname(name.as_str()).as_slice()));
            }
            ArpMatch::NotOutInterface(name) => {
                rule.add_expr(&Meta::OifName);
                rule.add_expr(&Cmp::new(CmpOp::Neq, ifname(name.as_str()).as_slice()));
            }
            // As nft merges adjacent header fields: hardware type and protocol type in one word,
            // then the two lengths, with the operation when there is one.
            ArpMatch::EthernetIpv4(operation) => {
                let ethernet: u16 = 1;
                let ipv4: u16 = 0x0800;
                let mut types = ethernet.to_be_bytes().to_vec();
                types.extend_from_slice(&ipv4.to_be_bytes());
                rule.add_expr(&PayloadLoad::network(0, 4));
                rule.add_expr(&cmp_eq(&types));
                let mut lengths = vec![6u8, 4];
                if let Some(operation) = operation {
                    lengths.extend_from_slice(&operation.number().to_be_bytes());
                }
                rule.add_expr(&PayloadLoad::network(4, lengths.len() as u32));
                rule.add_expr(&cmp_eq(&lengths));
            }
            // Ethernet/IPv4 layout: 8 bytes of header, sender MAC (6), sender IP at 14, target
            // MAC (6), target IP at 24.
            ArpMatch::SenderIp(ip) => {
                rule.add_expr(&PayloadLoad::network(14, 4));
                rule.add_expr(&cmp_eq(&ip.octets()));
            }
            ArpMatch::TargetIp(ip) => {
                rule.add_expr(&PayloadLoad::network(24, 4));
                rule.add_expr(&cmp_eq(&ip.octets()));
            }
        }
    }
    add_verdict(&mut rule, &policy_rule.verdict)?;
    if !policy_rule.comment.is_empty() {
        set_comment(&mut rule, policy_rule.comment)?;
    }
    Ok(rule)
}

fn set_comment(rule: &mut Rule<'_>, comment: &str) -> Result<(), NftError> {
    let text = CString::new(comment).map_err(|_| NftError::Comment(comment.to_owned()))?;
    rule.set_comment(&text)
        .map_err(|_| NftError::Comment(comment.to_owned()))
}

fn add_verdict(rule: &mut Rule<'_>, verdict: &PolicyVerdict) -> Result<(), NftError> {
    match verdict {
        PolicyVerdict::Accept => rule.add_expr(&NftVerdict::Accept),
        PolicyVerdict::Drop => rule.add_expr(&NftVerdict::Drop),
        PolicyVerdict::Reject(RejectWith::TcpReset) => {
            rule.add_expr(&NftVerdict::Reject(RejectionType::TcpRst))
        }
        PolicyVerdict::Reject(RejectWith::AdminProhibited) => rule.add_expr(&NftVerdict::Reject(
            RejectionType::Icmp(IcmpCode::AdminProhibited),
        )),
        PolicyVerdict::Jump(target) => {
            let chain =
                CString::new(target.as_str()).map_err(|_| NftError::Comment(target.clone()))?;
            rule.add_expr(&NftVerdict::Jump { chain })
        }
        // A rule without a verdict: evaluation goes on with the next one.
        PolicyVerdict::Continue => {}
    }
    Ok(())
}

const NFPROTO_IPV4: u8 = libc::NFPROTO_IPV4 as u8;
const NFPROTO_IPV6: u8 = libc::NFPROTO_IPV6 as u8;
/// Interface names are compared over the kernel's full IFNAMSIZ buffer, NUL padded, as nft does.
const IFNAMSIZ: usize = 16;

fn encode_match(rule: &mut Rule<'_>, m: &Match) {
    match m {
        // Encoded by `encode_rule`, which knows the table's sets.
        Match::SourceIn(..) | Match::DestinationIn(..) => {}
        Match::Family(family) => {
            rule.add_expr(&Meta::NfProto);
            rule.add_expr(&cmp_eq(&[match family {
                IpFamily::V4 => NFPROTO_IPV4,
                IpFamily::V6 => NFPROTO_IPV6,
            }]));
        }
        Match::InInterface(name) => {
            rule.add_expr(&Meta::IifName);
            rule.add_expr(&Cmp::new(CmpOp::Eq, ifname(name.as_str()).as_slice()));
        }
        Match::NotInInterface(name) => {
            rule.add_expr(&Meta::IifName);
            rule.add_expr(&Cmp::new(CmpOp::Neq, ifname(name.as_str()).as_slice()));
        }
        // As nft compiles `iifname "ksx*"`: only the prefix's bytes compared, without the NUL.
        Match::InInterfacePrefix(prefix) => {
            rule.add_expr(&Meta::IifName);
            rule.add_expr(&cmp_eq(prefix.as_bytes()));
        }
        Match::OutInterfacePrefix(prefix) => {
            rule.add_expr(&Meta::OifName);
            rule.add_expr(&cmp_eq(prefix.as_bytes()));
        }
        Match::OutInterface(name) => {
            rule.add_expr(&Meta::OifName);
            rule.add_expr(&Cmp::new(CmpOp::Eq, ifname(name.as_str()).as_slice()));
        }
        Match::NotOutInterface(name) => {
            rule.add_expr(&Meta::OifName);
            rule.add_expr(&Cmp::new(CmpOp::Neq, ifname(name.as_str()).as_slice()));
        }
        Match::Source(net) => encode_prefix(rule, net, Direction::Source),
        Match::Destination(net) => encode_prefix(rule, net, Direction::Destination),
        Match::Protocol(proto) => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&cmp_eq(&[proto.number()]));
        }
        Match::SourcePort(port) => {
            rule.add_expr(&PayloadLoad::transport(0, 2));
            rule.add_expr(&cmp_eq(&port.to_be_bytes()));
        }
        Match::DestinationPort(port) => {
            rule.add_expr(&PayloadLoad::transport(2, 2));
            rule.add_expr(&cmp_eq(&port.to_be_bytes()));
        }
        Match::Icmpv6Type(kind) => {
            rule.add_expr(&PayloadLoad::transport(0, 1));
            rule.add_expr(&cmp_eq(&[*kind]));
        }
        Match::NdTarget(target) => {
            rule.add_expr(&PayloadLoad::transport(8, 16));
            rule.add_expr(&cmp_eq(&target.octets()));
        }
        Match::HopLimit(hops) => {
            rule.add_expr(&PayloadLoad::network(7, 1));
            rule.add_expr(&cmp_eq(&[*hops]));
        }
        Match::ConnState(states) => {
            // nft's encoding of `ct state a,b`: mask the state bits, match if any is set.
            rule.add_expr(&Conntrack::State);
            let mask = ct_mask(*states).to_ne_bytes();
            rule.add_expr(&Bitwise::new(mask.as_slice(), [0u8; 4].as_slice()));
            rule.add_expr(&Cmp::new(CmpOp::Neq, [0u8; 4].as_slice()));
        }
        Match::Mark(mark) => {
            rule.add_expr(&Meta::Mark { set: false });
            rule.add_expr(&cmp_eq(&mark.to_ne_bytes()));
        }
        Match::SocketUid(uid) => {
            rule.add_expr(&Meta::SkUid);
            rule.add_expr(&cmp_eq(&uid.to_ne_bytes()));
        }
        Match::CtMarkBit(bit) => {
            rule.add_expr(&Conntrack::Mark { set: false });
            rule.add_expr(&Bitwise::new(
                bit.to_ne_bytes().as_slice(),
                [0u8; 4].as_slice(),
            ));
            rule.add_expr(&Cmp::new(CmpOp::Neq, [0u8; 4].as_slice()));
        }
        Match::SocketCgroup { level, id } => {
            // nft's `socket cgroupv2 level L ID`: the socket's ancestor cgroup at depth L, its
            // 8-byte id loaded into register 1, compared in host byte order (as nft does).
            rule.add_expr(&SocketCgroupLoad { level: *level });
            rule.add_expr(&cmp_eq(&id.to_ne_bytes()));
        }
        Match::DestinationType(kind) => rewrite::add_destination_type(rule, *kind),
        Match::Limit { per_second, burst } => rule.add_expr(&Limit {
            per_second: *per_second,
            burst: *burst,
        }),
    }
}

fn cmp_eq(data: &[u8]) -> Cmp<&[u8]> {
    Cmp::new(CmpOp::Eq, data)
}

fn ifname(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ, 0);
    bytes
}

fn ct_mask(states: CtStates) -> u32 {
    let mut mask = 0;
    if states.new {
        mask |= nftnl::expr::States::NEW.bits();
    }
    if states.established {
        mask |= nftnl::expr::States::ESTABLISHED.bits();
    }
    if states.related {
        mask |= nftnl::expr::States::RELATED.bits();
    }
    mask
}

#[derive(Clone, Copy)]
enum Direction {
    Source,
    Destination,
}

/// An address prefix, encoded as nft does: for a byte-aligned prefix, load only the prefix's bytes
/// and compare them; otherwise load the whole address, mask it and compare.
fn encode_prefix(rule: &mut Rule<'_>, net: &IpNet, direction: Direction) {
    let (offset, address) = match (net, direction) {
        (IpNet::V4(n), Direction::Source) => (12, n.network().octets().to_vec()),
        (IpNet::V4(n), Direction::Destination) => (16, n.network().octets().to_vec()),
        (IpNet::V6(n), Direction::Source) => (8, n.network().octets().to_vec()),
        (IpNet::V6(n), Direction::Destination) => (24, n.network().octets().to_vec()),
    };
    let prefix = usize::from(net.prefix_len());
    if prefix == 0 {
        // Matches every address of the family, which the preceding nfproto match already says.
        return;
    }
    if prefix % 8 == 0 {
        let len = prefix / 8;
        rule.add_expr(&PayloadLoad::network(offset, len as u32));
        rule.add_expr(&cmp_eq(&address[..len]));
    } else {
        let mask = match net {
            IpNet::V4(n) => n.netmask().octets().to_vec(),
            IpNet::V6(n) => n.netmask().octets().to_vec(),
        };
        let zeros = vec![0u8; address.len()];
        rule.add_expr(&PayloadLoad::network(offset, address.len() as u32));
        rule.add_expr(&Bitwise::new(mask.as_slice(), zeros.as_slice()));
        rule.add_expr(&cmp_eq(&address));
    }
}

/// `payload load LEN bytes @ BASE header + OFFSET => reg 1`, with offsets in bytes.
///
/// `socket cgroupv2 level L`: loads the id of the packet's socket's cgroup v2 ancestor at depth L
/// (8 bytes) into register 1. nftnl (the crate) has no socket expression; libnftnl 1.2 knows its
/// three attributes (key, destination register, level), so its parser reads it back like the
/// kernel's.
struct SocketCgroupLoad {
    level: u32,
}

/// libnftnl's `NFTNL_EXPR_SOCKET_*` attributes (`NFTNL_EXPR_BASE` is 1), named here because the
/// bindings of the nftnl-sys version in use may predate `LEVEL`.
const NFTNL_EXPR_SOCKET_KEY: u16 = 1;
const NFTNL_EXPR_SOCKET_DREG: u16 = 2;
const NFTNL_EXPR_SOCKET_LEVEL: u16 = 3;
/// `enum nft_socket_keys`' `NFT_SOCKET_CGROUPV2` (linux/netfilter/nf_tables.h, Linux 5.13).
const NFT_SOCKET_CGROUPV2: u32 = 3;
/// `NFT_REG_1`, where every other load here puts its value.
const NFT_REG_1: u32 = 1;

impl Expression for SocketCgroupLoad {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        // SAFETY: as for PayloadLoad: a fresh expression (NULL checked), integers copied in,
        // ownership passed to the rule that adds it.
        unsafe {
            let expr = sys::nftnl_expr_alloc(c"socket".as_ptr());
            let Some(expr) = NonNull::new(expr) else {
                std::process::abort();
            };
            sys::nftnl_expr_set_u32(expr.as_ptr(), NFTNL_EXPR_SOCKET_KEY, NFT_SOCKET_CGROUPV2);
            sys::nftnl_expr_set_u32(expr.as_ptr(), NFTNL_EXPR_SOCKET_DREG, NFT_REG_1);
            sys::nftnl_expr_set_u32(expr.as_ptr(), NFTNL_EXPR_SOCKET_LEVEL, self.level);
            expr
        }
    }
}

/// nftnl's own payload type names its raw offsets in bits but passes them through as bytes; this
/// one says what it means.
struct PayloadLoad {
    base: u32,
    offset: u32,
    len: u32,
}

impl PayloadLoad {
    fn network(offset: u32, len: u32) -> Self {
        Self {
            base: libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
            offset,
            len,
        }
    }

    fn transport(offset: u32, len: u32) -> Self {
        Self {
            base: libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
            offset,
            len,
        }
    }
}

impl Expression for PayloadLoad {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        // SAFETY: nftnl_expr_alloc returns a fresh expression or NULL (checked); the setters only
        // copy the integers into it. Ownership passes to the rule that adds it.
        unsafe {
            let expr = sys::nftnl_expr_alloc(c"payload".as_ptr());
            let Some(expr) = NonNull::new(expr) else {
                // Out of memory for a few dozen bytes: nothing sensible is left to do.
                std::process::abort();
            };
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_PAYLOAD_BASE as u16,
                self.base,
            );
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_PAYLOAD_OFFSET as u16,
                self.offset,
            );
            sys::nftnl_expr_set_u32(expr.as_ptr(), sys::NFTNL_EXPR_PAYLOAD_LEN as u16, self.len);
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_PAYLOAD_DREG as u16,
                libc::NFT_REG_1 as u32,
            );
            expr
        }
    }
}

/// `payload write reg 1 => LEN bytes @ network header + OFFSET`, fixing the IPv4 header checksum
/// at `checksum_offset` incrementally (`csum_type inet`), as nft emits for `ip ttl set`.
struct PayloadWrite {
    offset: u32,
    len: u32,
    checksum_offset: u32,
}

impl PayloadWrite {
    fn network_with_checksum(offset: u32, len: u32, checksum_offset: u32) -> Self {
        Self {
            offset,
            len,
            checksum_offset,
        }
    }
}

impl Expression for PayloadWrite {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        // SAFETY: as for PayloadLoad: a fresh expression (checked), integers copied into it.
        unsafe {
            let expr = sys::nftnl_expr_alloc(c"payload".as_ptr());
            let Some(expr) = NonNull::new(expr) else {
                std::process::abort();
            };
            let set = |attr: u32, value: u32| {
                sys::nftnl_expr_set_u32(expr.as_ptr(), attr as u16, value);
            };
            set(sys::NFTNL_EXPR_PAYLOAD_SREG, libc::NFT_REG_1 as u32);
            set(
                sys::NFTNL_EXPR_PAYLOAD_BASE,
                libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
            );
            set(sys::NFTNL_EXPR_PAYLOAD_OFFSET, self.offset);
            set(sys::NFTNL_EXPR_PAYLOAD_LEN, self.len);
            set(
                sys::NFTNL_EXPR_PAYLOAD_CSUM_TYPE,
                libc::NFT_PAYLOAD_CSUM_INET as u32,
            );
            set(sys::NFTNL_EXPR_PAYLOAD_CSUM_OFFSET, self.checksum_offset);
            // The kernel reports the flags (none) even when unset; saying them makes what we
            // send read back identically.
            set(sys::NFTNL_EXPR_PAYLOAD_FLAGS, 0);
            expr
        }
    }
}

/// `lookup reg 1 set NAME`: whether register 1 (an address just loaded) is in the set, found by
/// name, or in the same batch by its id.
struct Lookup {
    set: CString,
    id: u32,
}

impl Expression for Lookup {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        // SAFETY: as for PayloadLoad; the name is copied into the expression.
        unsafe {
            let expr = sys::nftnl_expr_alloc(c"lookup".as_ptr());
            let Some(expr) = NonNull::new(expr) else {
                std::process::abort();
            };
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_LOOKUP_SREG as u16,
                libc::NFT_REG_1 as u32,
            );
            sys::nftnl_expr_set_str(
                expr.as_ptr(),
                sys::NFTNL_EXPR_LOOKUP_SET as u16,
                self.set.as_ptr(),
            );
            sys::nftnl_expr_set_u32(expr.as_ptr(), sys::NFTNL_EXPR_LOOKUP_SET_ID as u16, self.id);
            // The kernel reports the flags (none: not inverted) even when unset; saying them
            // makes what we send read back identically.
            sys::nftnl_expr_set_u32(expr.as_ptr(), sys::NFTNL_EXPR_LOOKUP_FLAGS as u16, 0);
            expr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_carries_and_ends() {
        assert_eq!(successor(&[10, 0, 0, 255]), Some(vec![10, 0, 1, 0]));
        assert_eq!(successor(&[255, 255, 255, 255]), None);
    }
}
