//! Reading killswitch's tables (`inet killswitch`, `arp killswitch`) back from the kernel, and
//! comparing them with what was sent.
//!
//! nftnl cannot read rules back through its safe API, so this module uses libnftnl's parser
//! directly: every NEWTABLE/NEWCHAIN/NEWRULE message, whether it is one we sent or one the kernel
//! dumped, is parsed into a libnftnl object and described the same way (chain attributes as
//! numbers, each rule as libnftnl's own expression listing). Comparing those descriptions compares
//! what the kernel executes, without a second, hand-written decoder that could share our bugs.

use crate::NftError;
use crate::encode::Batch;
use crate::netlink::{self, Message};
use killswitch_policy::TABLE_NAME;
use nftnl::nftnl_sys as sys;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_char;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = libc::NFT_MSG_NEWTABLE as u16;
const NFT_MSG_DELTABLE: u16 = libc::NFT_MSG_DELTABLE as u16;
/// nf_tables' NFT_MSG_DESTROYTABLE (kernel 6.3; not in the libc crate): what owned batches start with.
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_NEWCHAIN: u16 = libc::NFT_MSG_NEWCHAIN as u16;
const NFT_MSG_NEWRULE: u16 = libc::NFT_MSG_NEWRULE as u16;
const NFT_MSG_NEWSET: u16 = libc::NFT_MSG_NEWSET as u16;
const NFT_MSG_NEWSETELEM: u16 = libc::NFT_MSG_NEWSETELEM as u16;
/// Where `struct nfgenmsg`'s family byte sits in an nf_tables message (after the 16-byte header).
const NFGEN_FAMILY_OFFSET: usize = 16;

/// The families killswitch has a table in, in the order they are read and compared.
const FAMILIES: [Family; 2] = [Family::Inet, Family::Arp];

/// An nf_tables family killswitch has a table in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `arp`.
    Arp,
}

impl Family {
    fn number(self) -> u8 {
        match self {
            Family::Inet => libc::NFPROTO_INET as u8,
            Family::Arp => libc::NFPROTO_ARP as u8,
        }
    }

    fn of(number: u8) -> Option<Self> {
        FAMILIES.into_iter().find(|f| f.number() == number)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Arp => "arp",
        })
    }
}

/// killswitch's tables as the kernel holds them (or as a batch leaves them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Installed {
    /// Table `inet killswitch`.
    pub inet: Option<InstalledTable>,
    /// Table `arp killswitch`.
    pub arp: Option<InstalledTable>,
}

impl Installed {
    /// Whether neither table is there.
    pub fn is_empty(&self) -> bool {
        self.inet.is_none() && self.arp.is_none()
    }

    fn table_mut(&mut self, family: Family) -> &mut Option<InstalledTable> {
        match family {
            Family::Inet => &mut self.inet,
            Family::Arp => &mut self.arp,
        }
    }

    fn table(&self, family: Family) -> Option<&InstalledTable> {
        match family {
            Family::Inet => self.inet.as_ref(),
            Family::Arp => self.arp.as_ref(),
        }
    }
}

/// One of killswitch's tables as the kernel holds it (or as a batch describes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledTable {
    /// The table's family.
    pub family: Family,
    /// Table flags; anything but 0 (e.g. `dormant`, which disables every chain) is suspicious.
    pub flags: u32,
    /// The sets, in the kernel's order.
    pub sets: Vec<InstalledSet>,
    /// The chains, in the kernel's order.
    pub chains: Vec<InstalledChain>,
}

/// One chain of the installed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledChain {
    /// The chain's name.
    pub name: String,
    /// For a base chain: `type T hook H priority P policy X` as numbers.
    pub base: Option<String>,
    /// Each rule as libnftnl lists its expressions, plus its comment.
    pub rules: Vec<String>,
}

/// One set of the installed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledSet {
    /// The set's name.
    pub name: String,
    /// `flags F key type T len L`, as numbers.
    pub kind: String,
    /// Each element as its key in hex and its flags, sorted (the kernel lists its tree in its
    /// own order).
    pub elements: Vec<String>,
}

impl Installed {
    /// A stable digest of both tables as the kernel lists them (flags, sets and their elements,
    /// chains and every rule): 64-bit FNV-1a of their listing, in hex. The same rules give the
    /// same digest on every machine and release of this listing. It is for people to compare at
    /// a glance; whether two tables match is decided by [`crate::compare_installed`], in full.
    pub fn digest(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut listing = String::new();
        for table in [&self.inet, &self.arp].into_iter().flatten() {
            listing.push_str(&table.to_string());
            for set in &table.sets {
                for element in &set.elements {
                    listing.push_str(element);
                    listing.push('\n');
                }
            }
        }
        Some(format!("{:016x}", fnv1a(listing.as_bytes())))
    }
}

/// 64-bit FNV-1a: tiny, stable, and enough for a digest people compare by eye (the comparison
/// itself is done in full).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl InstalledTable {
    /// How many rules the table holds.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

impl fmt::Display for InstalledTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "table {} {TABLE_NAME} flags {:#x}",
            self.family, self.flags
        )?;
        for set in &self.sets {
            writeln!(
                f,
                "set {} {} ({} elements)",
                set.name,
                set.kind,
                set.elements.len()
            )?;
        }
        for chain in &self.chains {
            writeln!(
                f,
                "chain {} {}",
                chain.name,
                chain.base.as_deref().unwrap_or("(regular)")
            )?;
            for rule in &chain.rules {
                writeln!(f, "{rule}")?;
            }
        }
        Ok(())
    }
}

fn message_kind(message: &Message) -> Option<u16> {
    let kind = message.header().kind;
    (kind >> 8 == NFNL_SUBSYS_NFTABLES).then_some(kind & 0xff)
}

/// The family of an nf_tables object message, if it is one of ours.
fn message_family(message: &Message) -> Option<Family> {
    message
        .bytes()
        .get(NFGEN_FAMILY_OFFSET)
        .copied()
        .and_then(Family::of)
}

/// What the batch will leave in the kernel: replays its table/chain/rule/set messages, each into
/// the table of its family.
pub(crate) fn expected_from_batch(batch: &Batch) -> Result<Installed, NftError> {
    let mut installed = Installed::default();
    for message in netlink::split(batch.bytes())? {
        let Some(kind) = message_kind(&message) else {
            continue;
        };
        if !matches!(
            kind,
            NFT_MSG_NEWTABLE
                | NFT_MSG_DELTABLE
                | NFT_MSG_DESTROYTABLE
                | NFT_MSG_NEWCHAIN
                | NFT_MSG_NEWRULE
                | NFT_MSG_NEWSET
                | NFT_MSG_NEWSETELEM
        ) {
            continue;
        }
        let family = message_family(&message).ok_or_else(|| {
            NftError::Parse("a batch message for a table of another family".to_owned())
        })?;
        let table = installed.table_mut(family);
        match kind {
            NFT_MSG_NEWTABLE if table.is_none() => *table = Some(parse_table(&message, family)?),
            NFT_MSG_DELTABLE | NFT_MSG_DESTROYTABLE => *table = None,
            NFT_MSG_NEWCHAIN => {
                let chain = parse_chain(&message)?;
                if let Some(t) = table.as_mut() {
                    t.chains.push(chain);
                }
            }
            NFT_MSG_NEWRULE => add_rule(table.as_mut(), &message)?,
            NFT_MSG_NEWSET => {
                let set = parse_set(&message)?;
                if let Some(t) = table.as_mut() {
                    t.sets.push(set);
                }
            }
            NFT_MSG_NEWSETELEM => add_elements(table.as_mut(), &message)?,
            _ => {}
        }
    }
    for t in [installed.inet.as_mut(), installed.arp.as_mut()]
        .into_iter()
        .flatten()
    {
        t.sets.iter_mut().for_each(|s| s.elements.sort());
    }
    Ok(installed)
}

/// Reads both tables from the kernel.
pub(crate) fn read_installed(socket: &netlink::Socket) -> Result<Installed, NftError> {
    let mut installed = Installed::default();
    for family in FAMILIES {
        *installed.table_mut(family) = read_table(socket, family)?;
    }
    Ok(installed)
}

/// Reads our table of `family` from the kernel, or `None` when it is absent.
fn read_table(
    socket: &netlink::Socket,
    family: Family,
) -> Result<Option<InstalledTable>, NftError> {
    let name = CString::new(TABLE_NAME).map_err(|_| NftError::Parse("table name".to_owned()))?;
    let f = family.number();

    let table_messages = match netlink::request(socket, &get_table_request(f, &name))? {
        Ok(messages) => messages,
        Err(libc::ENOENT) => return Ok(None),
        Err(errno) => return Err(dump_error(family, "table", errno)),
    };
    let mut table = match table_messages.first() {
        Some(message) => parse_table(message, family)?,
        None => return Ok(None),
    };

    // Sets, then each set's elements. As with rules below, a table that vanishes meanwhile reads
    // as fewer sets or elements, which the comparison reports.
    let set_messages = match netlink::request(socket, &set_dump_request(f, &name, None))? {
        Ok(messages) => messages,
        Err(libc::ENOENT) => Vec::new(),
        Err(errno) => return Err(dump_error(family, "sets", errno)),
    };
    for message in &set_messages {
        if message_kind(message) == Some(NFT_MSG_NEWSET) {
            let set = parse_set(message)?;
            let set_name =
                CString::new(set.name.as_str()).map_err(|_| NftError::Parse("set name".into()))?;
            table.sets.push(set);
            let element_messages =
                match netlink::request(socket, &set_dump_request(f, &name, Some(&set_name)))? {
                    Ok(messages) => messages,
                    Err(libc::ENOENT) => Vec::new(),
                    Err(errno) => return Err(dump_error(family, "set elements", errno)),
                };
            for element_message in &element_messages {
                if message_kind(element_message) == Some(NFT_MSG_NEWSETELEM) {
                    add_elements(Some(&mut table), element_message)?;
                }
            }
        }
    }
    table.sets.iter_mut().for_each(|s| s.elements.sort());

    // The dump is of every chain of the family; the kernel filters it by the request's family.
    let chain_messages = netlink::request(
        socket,
        &dump_request(f, libc::NFT_MSG_GETCHAIN as u16, None),
    )?
    .map_err(|errno| dump_error(family, "chains", errno))?;
    for message in &chain_messages {
        if message_kind(message) == Some(NFT_MSG_NEWCHAIN)
            && message_family(message) == Some(family)
            && object_table(message, ObjectKind::Chain)? == TABLE_NAME
        {
            table.chains.push(parse_chain(message)?);
        }
    }

    // The table may vanish between the requests (that is what tampering looks like); a missing
    // table here reads as "no rules", which the comparison then reports.
    let rule_messages = match netlink::request(
        socket,
        &dump_request(f, libc::NFT_MSG_GETRULE as u16, Some(&name)),
    )? {
        Ok(messages) => messages,
        Err(libc::ENOENT) => Vec::new(),
        Err(errno) => return Err(dump_error(family, "rules", errno)),
    };
    for message in &rule_messages {
        if message_kind(message) == Some(NFT_MSG_NEWRULE)
            && message_family(message) == Some(family)
            && object_table(message, ObjectKind::Rule)? == TABLE_NAME
        {
            add_rule(Some(&mut table), message)?;
        }
    }
    Ok(Some(table))
}

fn dump_error(family: Family, what: &str, errno: i32) -> NftError {
    NftError::Rejected {
        what: format!("the request to list {what} of table {family} {TABLE_NAME}"),
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// The first difference between what was meant and what is installed, in words.
pub(crate) fn compare(expected: &Installed, actual: &Installed) -> Result<(), String> {
    for family in FAMILIES {
        compare_table(family, expected.table(family), actual.table(family))?;
    }
    Ok(())
}

fn compare_table(
    family: Family,
    expected: Option<&InstalledTable>,
    actual: Option<&InstalledTable>,
) -> Result<(), String> {
    let (expected, actual) = match (expected, actual) {
        (None, None) => return Ok(()),
        (Some(_), None) => return Err(format!("table {family} {TABLE_NAME} is missing")),
        (None, Some(t)) => {
            return Err(format!(
                "table {family} {TABLE_NAME} is present ({} rules) but should not be",
                t.rule_count()
            ));
        }
        (Some(e), Some(a)) => (e, a),
    };
    let the = |what: String| format!("table {family}: {what}");
    if expected.flags != actual.flags {
        return Err(the(format!(
            "flags are {:#x}, expected {:#x}",
            actual.flags, expected.flags
        )));
    }
    let set_names = |t: &InstalledTable| t.sets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let (mut want, mut have) = (set_names(expected), set_names(actual));
    want.sort();
    have.sort();
    if want != have {
        return Err(the(format!("sets are {have:?}, expected {want:?}")));
    }
    for e in &expected.sets {
        let Some(a) = actual.sets.iter().find(|a| a.name == e.name) else {
            continue;
        };
        if e.kind != a.kind {
            return Err(the(format!(
                "set {} is {}, expected {}",
                e.name, a.kind, e.kind
            )));
        }
        if e.elements != a.elements {
            // Both lists are sorted.
            let missing = e
                .elements
                .iter()
                .find(|x| a.elements.binary_search(x).is_err());
            let extra = a
                .elements
                .iter()
                .find(|x| e.elements.binary_search(x).is_err());
            return Err(the(format!(
                "set {} has {} elements, expected {} (first missing: {}, first unexpected: {})",
                e.name,
                a.elements.len(),
                e.elements.len(),
                missing.map_or("none", String::as_str),
                extra.map_or("none", String::as_str)
            )));
        }
    }
    let names = |t: &InstalledTable| t.chains.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(expected) != names(actual) {
        return Err(the(format!(
            "chains are {:?}, expected {:?}",
            names(actual),
            names(expected)
        )));
    }
    for (e, a) in expected.chains.iter().zip(&actual.chains) {
        if e.base != a.base {
            return Err(the(format!(
                "chain {} is {:?}, expected {:?}",
                e.name, a.base, e.base
            )));
        }
        if e.rules.len() != a.rules.len() {
            return Err(the(format!(
                "chain {} has {} rules, expected {}",
                e.name,
                a.rules.len(),
                e.rules.len()
            )));
        }
        if let Some((i, (er, ar))) = e
            .rules
            .iter()
            .zip(&a.rules)
            .enumerate()
            .find(|(_, (er, ar))| er != ar)
        {
            return Err(the(format!(
                "chain {} rule {i} is\n{ar}\nexpected\n{er}",
                e.name
            )));
        }
    }
    Ok(())
}

// --- libnftnl objects -------------------------------------------------------------------------

/// An owned libnftnl object, freed on drop.
struct Owned<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*const T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the matching nftnl_*_alloc and is freed exactly once.
        unsafe { (self.free)(self.ptr) }
    }
}

fn alloc<T>(ptr: *mut T, free: unsafe extern "C" fn(*const T)) -> Owned<T> {
    if ptr.is_null() {
        // Out of memory allocating a small struct: nothing sensible is left to do.
        std::process::abort();
    }
    Owned { ptr, free }
}

#[derive(Clone, Copy)]
enum ObjectKind {
    Chain,
    Rule,
}

fn parse_table(message: &Message, family: Family) -> Result<InstalledTable, NftError> {
    // SAFETY: the message is an aligned, length-checked netlink message; the table object is ours.
    unsafe {
        let table = alloc(sys::nftnl_table_alloc(), sys::nftnl_table_free);
        if sys::nftnl_table_nlmsg_parse(message.as_nlmsghdr(), table.ptr) < 0 {
            return Err(NftError::Parse("a table message".to_owned()));
        }
        let flags = if sys::nftnl_table_is_set(table.ptr, sys::NFTNL_TABLE_FLAGS as u16) {
            sys::nftnl_table_get_u32(table.ptr, sys::NFTNL_TABLE_FLAGS as u16)
        } else {
            0
        };
        Ok(InstalledTable {
            family,
            flags,
            sets: Vec::new(),
            chains: Vec::new(),
        })
    }
}

fn object_table(message: &Message, kind: ObjectKind) -> Result<String, NftError> {
    // SAFETY: as in parse_table; the returned string is copied before the object is freed.
    unsafe {
        match kind {
            ObjectKind::Chain => {
                let chain = alloc(sys::nftnl_chain_alloc(), sys::nftnl_chain_free);
                if sys::nftnl_chain_nlmsg_parse(message.as_nlmsghdr(), chain.ptr) < 0 {
                    return Err(NftError::Parse("a chain message".to_owned()));
                }
                Ok(c_string(sys::nftnl_chain_get_str(
                    chain.ptr,
                    sys::NFTNL_CHAIN_TABLE as u16,
                )))
            }
            ObjectKind::Rule => {
                let rule = alloc(sys::nftnl_rule_alloc(), sys::nftnl_rule_free);
                if sys::nftnl_rule_nlmsg_parse(message.as_nlmsghdr(), rule.ptr) < 0 {
                    return Err(NftError::Parse("a rule message".to_owned()));
                }
                Ok(c_string(sys::nftnl_rule_get_str(
                    rule.ptr,
                    sys::NFTNL_RULE_TABLE as u16,
                )))
            }
        }
    }
}

fn parse_chain(message: &Message) -> Result<InstalledChain, NftError> {
    // SAFETY: as in parse_table; attributes are read only when set, strings copied out.
    unsafe {
        let chain = alloc(sys::nftnl_chain_alloc(), sys::nftnl_chain_free);
        if sys::nftnl_chain_nlmsg_parse(message.as_nlmsghdr(), chain.ptr) < 0 {
            return Err(NftError::Parse("a chain message".to_owned()));
        }
        let c = chain.ptr;
        let is_set = |attr: u32| sys::nftnl_chain_is_set(c, attr as u16);
        let name = c_string(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_NAME as u16));
        let base = is_set(sys::NFTNL_CHAIN_HOOKNUM).then(|| {
            let policy = if is_set(sys::NFTNL_CHAIN_POLICY) {
                sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_POLICY as u16).to_string()
            } else {
                "unset".to_owned()
            };
            let chain_type = if is_set(sys::NFTNL_CHAIN_TYPE) {
                c_string(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_TYPE as u16))
            } else {
                "unset".to_owned()
            };
            format!(
                "type {chain_type} hook {} priority {} policy {policy}",
                sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16),
                sys::nftnl_chain_get_s32(c, sys::NFTNL_CHAIN_PRIO as u16),
            )
        });
        Ok(InstalledChain {
            name,
            base,
            rules: Vec::new(),
        })
    }
}

fn parse_set(message: &Message) -> Result<InstalledSet, NftError> {
    // SAFETY: as in parse_table; attributes are read only when set, strings copied out.
    unsafe {
        let set = alloc(sys::nftnl_set_alloc(), sys::nftnl_set_free);
        if sys::nftnl_set_nlmsg_parse(message.as_nlmsghdr(), set.ptr) < 0 {
            return Err(NftError::Parse("a set message".to_owned()));
        }
        let u32_of = |attr: u32| {
            if sys::nftnl_set_is_set(set.ptr, attr as u16) {
                sys::nftnl_set_get_u32(set.ptr, attr as u16)
            } else {
                0
            }
        };
        Ok(InstalledSet {
            name: c_string(sys::nftnl_set_get_str(set.ptr, sys::NFTNL_SET_NAME as u16)),
            kind: format!(
                "flags {:#x} key type {} len {}",
                u32_of(sys::NFTNL_SET_FLAGS),
                u32_of(sys::NFTNL_SET_KEY_TYPE),
                u32_of(sys::NFTNL_SET_KEY_LEN)
            ),
            elements: Vec::new(),
        })
    }
}

/// NFTA_SET_ELEM_LIST_ELEMENTS, the nest holding a message's elements.
const SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// NFTA_LIST_ELEM, nested: what each element's attribute type is when the kernel writes it.
const LIST_ELEM_NESTED: u16 = 0x8000 | 1;

/// The message with every element attribute typed NFTA_LIST_ELEM. libnftnl's builder numbers the
/// elements 1, 2, 3... (the kernel ignores these types), while its parser accepts only
/// NFTA_LIST_ELEM: without this, our own element messages could not be parsed back.
fn with_list_elem_types(message: &Message) -> Message {
    let mut bytes = message.bytes().to_vec();
    // nlmsghdr (16 bytes) and nfgenmsg (4), then the attributes, each 4-byte aligned.
    let attribute = |bytes: &[u8], at: usize| -> Option<(usize, u16)> {
        let header = bytes.get(at..at + 4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        (len >= 4 && at + len <= bytes.len()).then_some((len, kind))
    };
    let mut at = 20;
    while let Some((len, kind)) = attribute(&bytes, at) {
        if kind == SET_ELEM_LIST_ELEMENTS {
            let end = at + len;
            let mut inner = at + 4;
            while inner < end {
                let Some((inner_len, _)) = attribute(&bytes, inner) else {
                    break;
                };
                bytes[inner + 2..inner + 4].copy_from_slice(&LIST_ELEM_NESTED.to_ne_bytes());
                inner += inner_len.next_multiple_of(4);
            }
        }
        at += len.next_multiple_of(4);
    }
    Message::copy_from(&bytes)
}

/// Adds the elements a NEWSETELEM message carries to their set.
fn add_elements(table: Option<&mut InstalledTable>, message: &Message) -> Result<(), NftError> {
    let message = &with_list_elem_types(message);
    // SAFETY: as in parse_table. The iterator and the elements it yields belong to the set object,
    // which outlives them; keys are copied out with their reported lengths.
    let (set_name, elements) = unsafe {
        let set = alloc(sys::nftnl_set_alloc(), sys::nftnl_set_free);
        if sys::nftnl_set_elems_nlmsg_parse(message.as_nlmsghdr(), set.ptr) < 0 {
            return Err(NftError::Parse("a set element message".to_owned()));
        }
        let set_name = c_string(sys::nftnl_set_get_str(set.ptr, sys::NFTNL_SET_NAME as u16));
        let iter = sys::nftnl_set_elems_iter_create(set.ptr);
        if iter.is_null() {
            std::process::abort();
        }
        let mut elements = Vec::new();
        let mut elem = sys::nftnl_set_elems_iter_next(iter);
        while !elem.is_null() {
            let mut len: u32 = 0;
            let key = sys::nftnl_set_elem_get(elem, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
            let key_hex: String = if key.is_null() {
                String::new()
            } else {
                std::slice::from_raw_parts(key.cast::<u8>(), len as usize)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            };
            let flags = if sys::nftnl_set_elem_is_set(elem, sys::NFTNL_SET_ELEM_FLAGS as u16) {
                sys::nftnl_set_elem_get_u32(elem, sys::NFTNL_SET_ELEM_FLAGS as u16)
            } else {
                0
            };
            elements.push(format!("{key_hex} flags {flags}"));
            elem = sys::nftnl_set_elems_iter_next(iter);
        }
        sys::nftnl_set_elems_iter_destroy(iter);
        (set_name, elements)
    };
    let Some(table) = table else {
        return Err(NftError::Parse(format!(
            "elements of set {set_name} outside the table"
        )));
    };
    match table.sets.iter_mut().find(|s| s.name == set_name) {
        Some(set) => set.elements.extend(elements),
        None => {
            return Err(NftError::Parse(format!(
                "elements of unknown set {set_name}"
            )));
        }
    }
    Ok(())
}

fn add_rule(table: Option<&mut InstalledTable>, message: &Message) -> Result<(), NftError> {
    let (chain_name, text) = describe_rule(message)?;
    let Some(table) = table else {
        return Err(NftError::Parse(format!(
            "a rule for chain {chain_name} outside the table"
        )));
    };
    match table.chains.iter_mut().find(|c| c.name == chain_name) {
        Some(chain) => chain.rules.push(text),
        None => {
            return Err(NftError::Parse(format!(
                "a rule for unknown chain {chain_name}"
            )));
        }
    }
    Ok(())
}

/// The chain a rule belongs to, and libnftnl's listing of its expressions and comment, without the
/// first line (family, table, chain, handle, position), which differs between a rule we send and
/// the same rule read back.
fn describe_rule(message: &Message) -> Result<(String, String), NftError> {
    // SAFETY: as in parse_table; snprintf writes at most `buffer.len()` bytes, NUL terminated.
    unsafe {
        let rule = alloc(sys::nftnl_rule_alloc(), sys::nftnl_rule_free);
        if sys::nftnl_rule_nlmsg_parse(message.as_nlmsghdr(), rule.ptr) < 0 {
            return Err(NftError::Parse("a rule message".to_owned()));
        }
        let chain = c_string(sys::nftnl_rule_get_str(
            rule.ptr,
            sys::NFTNL_RULE_CHAIN as u16,
        ));
        let mut buffer = vec![0u8; 16 * 1024];
        let written = sys::nftnl_rule_snprintf(
            buffer.as_mut_ptr().cast::<c_char>(),
            buffer.len(),
            rule.ptr,
            sys::NFTNL_OUTPUT_DEFAULT,
            0,
        );
        if written < 0 || written as usize >= buffer.len() {
            return Err(NftError::Parse(format!(
                "a rule of chain {chain} too long to list"
            )));
        }
        let text = c_string(buffer.as_ptr().cast());
        let body = text
            .split_once('\n')
            .map_or("", |(_, rest)| rest)
            .trim_end()
            .to_owned();
        let body = with_socket_levels(body, &socket_levels(rule.ptr));
        Ok((chain, body))
    }
}

/// The `level` attribute of each `socket` expression of `rule`, in order (`None` where unset).
/// libnftnl 1.2 parses it but its listing leaves it out, and a kernel holding another level
/// matches another cgroup: the bypass rule must be compared with it.
///
/// # Safety
/// `rule` must be a valid, parsed libnftnl rule.
unsafe fn socket_levels(rule: *const sys::nftnl_rule) -> Vec<Option<u32>> {
    /// libnftnl's `NFTNL_EXPR_SOCKET_LEVEL` (`NFTNL_EXPR_BASE` + 2).
    const NFTNL_EXPR_SOCKET_LEVEL: u16 = 3;
    let mut levels = Vec::new();
    // SAFETY: the iterator walks the rule's own list of expressions, which outlive it; each
    // expression's name is a NUL-terminated string libnftnl owns.
    unsafe {
        let iter = sys::nftnl_expr_iter_create(rule);
        if iter.is_null() {
            return levels;
        }
        loop {
            let expr = sys::nftnl_expr_iter_next(iter);
            if expr.is_null() {
                break;
            }
            let name = c_string(sys::nftnl_expr_get_str(expr, sys::NFTNL_EXPR_NAME as u16));
            if name == "socket" {
                levels.push(
                    sys::nftnl_expr_is_set(expr, NFTNL_EXPR_SOCKET_LEVEL)
                        .then(|| sys::nftnl_expr_get_u32(expr, NFTNL_EXPR_SOCKET_LEVEL)),
                );
            }
        }
        sys::nftnl_expr_iter_destroy(iter);
    }
    levels
}

/// Puts each socket expression's level into its line of `body` (`[ socket load cgroupv2 => reg
/// 1 level 3 ]`), in order.
fn with_socket_levels(body: String, levels: &[Option<u32>]) -> String {
    if levels.is_empty() {
        return body;
    }
    let mut levels = levels.iter();
    body.lines()
        .map(|line| {
            if line.trim_start().starts_with("[ socket ") {
                let level = match levels.next() {
                    Some(Some(level)) => format!("level {level}"),
                    _ => "level none".to_owned(),
                };
                match line.strip_suffix(" ]") {
                    Some(head) => format!("{head} {level} ]"),
                    None => format!("{line} {level}"),
                }
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Copies a C string; a NULL pointer (attribute unset) becomes the empty string.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string.
unsafe fn c_string(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

// --- requests ---------------------------------------------------------------------------------

fn build_request(
    family: u8,
    kind: u16,
    flags: u16,
    fill: impl FnOnce(*mut libc::nlmsghdr),
) -> Vec<u8> {
    let mut words = vec![0u64; 512];
    // SAFETY: the buffer (4 KiB) is larger than a header plus a table name; the header builder
    // writes within it and returns a pointer into it.
    unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(
            words.as_mut_ptr().cast::<c_char>(),
            kind,
            u16::from(family),
            flags,
            1,
        );
        fill(nlh);
        let len = (*nlh).nlmsg_len as usize;
        std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len).to_vec()
    }
}

fn get_table_request(family: u8, name: &CStr) -> Vec<u8> {
    build_request(family, libc::NFT_MSG_GETTABLE as u16, 0, |nlh| {
        // SAFETY: the table object lives until after the payload is copied into the message.
        unsafe {
            let table = alloc(sys::nftnl_table_alloc(), sys::nftnl_table_free);
            sys::nftnl_table_set_str(table.ptr, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
            sys::nftnl_table_nlmsg_build_payload(nlh, table.ptr);
        }
    })
}

/// A dump of the table's sets (no set named), or of one set's elements.
fn set_dump_request(family: u8, table: &CStr, set_name: Option<&CStr>) -> Vec<u8> {
    let kind = match set_name {
        None => libc::NFT_MSG_GETSET,
        Some(_) => libc::NFT_MSG_GETSETELEM,
    };
    build_request(family, kind as u16, libc::NLM_F_DUMP as u16, |nlh| {
        // SAFETY: as in get_table_request; the set object lives until its payload is copied.
        unsafe {
            let set = alloc(sys::nftnl_set_alloc(), sys::nftnl_set_free);
            sys::nftnl_set_set_str(set.ptr, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            match set_name {
                None => sys::nftnl_set_nlmsg_build_payload(nlh, set.ptr),
                Some(name) => {
                    sys::nftnl_set_set_str(set.ptr, sys::NFTNL_SET_NAME as u16, name.as_ptr());
                    sys::nftnl_set_elems_nlmsg_build_payload(nlh, set.ptr);
                }
            }
        }
    })
}

fn dump_request(family: u8, kind: u16, table: Option<&CStr>) -> Vec<u8> {
    build_request(family, kind, libc::NLM_F_DUMP as u16, |nlh| {
        if let Some(name) = table {
            // SAFETY: as above. Only rule dumps pass a table; the kernel filters them by it.
            unsafe {
                let rule = alloc(sys::nftnl_rule_alloc(), sys::nftnl_rule_free);
                sys::nftnl_rule_set_str(rule.ptr, sys::NFTNL_RULE_TABLE as u16, name.as_ptr());
                sys::nftnl_rule_nlmsg_build_payload(nlh, rule.ptr);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_stable_and_sees_one_rule_changed() {
        let table = |rule: &str| Installed {
            inet: Some(InstalledTable {
                family: Family::Inet,
                flags: 0,
                sets: Vec::new(),
                chains: vec![InstalledChain {
                    name: "output".to_owned(),
                    base: Some("type filter hook 3 priority 0 policy 0".to_owned()),
                    rules: vec![rule.to_owned()],
                }],
            }),
            arp: None,
        };
        assert_eq!(Installed::default().digest(), None);
        let digest = table("[ reject type 2 code 3 ]").digest().expect("a table");
        // Pinned: the digest must not change between releases for the same rules.
        assert_eq!(
            digest,
            table("[ reject type 2 code 3 ]").digest().expect("a table")
        );
        assert_eq!(digest.len(), 16);
        assert_ne!(Some(digest), table("[ immediate reg 0 accept ]").digest());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
    use killswitch_policy::{PolicyState, Settings, compile};

    #[test]
    fn a_batch_with_sets_describes_its_elements() {
        let ruleset = compile(
            &PolicyState::Blocked,
            &Settings {
                lockdown: true,
                allow_lan: true,
                apps_only: false,
            },
        );
        let batch = Batch::build(&ruleset, 0, &Default::default()).expect("batch");
        let installed = expected_from_batch(&batch).expect("parses");
        assert!(installed.arp.is_none(), "no tunnel, no arp table");
        let table = installed.inet.expect("a table");
        let lan4 = table.sets.iter().find(|s| s.name == "lan4").expect("lan4");
        assert_eq!(lan4.kind, "flags 0x4 key type 7 len 4");
        // 10/8, 169.254/16, 172.16/12, 192.168/16: a leading end at 0, then start and end each.
        assert_eq!(lan4.elements.len(), 9, "{:?}", lan4.elements);
        assert!(lan4.elements.contains(&"0a000000 flags 0".to_owned()));
        assert!(lan4.elements.contains(&"0b000000 flags 1".to_owned()));
    }

    /// The bypass rule's `socket cgroupv2 level L ID` is encoded as nft encodes it (a socket
    /// load of key 3, cgroupv2, at the level, into register 1; an 8-byte comparison in host
    /// order) and libnftnl's parser, which the read-back uses on both sides, lists all of it: a
    /// kernel holding another level or id would differ.
    #[test]
    fn the_bypass_rule_reads_back_with_its_level_and_id() {
        let id: u64 = 0x0000_1234_5678_9abc;
        let exceptions = killswitch_policy::Exceptions {
            bypass: Some(killswitch_policy::BypassScope { level: 3, id }),
            ..Default::default()
        };
        let settings = Settings {
            lockdown: true,
            allow_lan: false,
            ..Settings::default()
        };
        let describe = |exceptions: &killswitch_policy::Exceptions| {
            let ruleset =
                killswitch_policy::compile_for(&PolicyState::Blocked, &settings, exceptions);
            let batch = Batch::build(&ruleset, 0, &Default::default()).expect("batch");
            let installed = expected_from_batch(&batch).expect("parses");
            let table = installed.inet.expect("a table");
            let output = table
                .chains
                .into_iter()
                .find(|c| c.name == "output")
                .expect("output");
            output
                .rules
                .into_iter()
                .filter(|r| r.contains("socket"))
                .collect::<Vec<_>>()
        };
        let rules = describe(&exceptions);
        assert_eq!(rules.len(), 1, "{rules:?}");
        let rule = &rules[0];
        assert!(
            rule.contains("[ socket load cgroupv2 => reg 1 level 3 ]"),
            "{rule}"
        );
        let bytes = id.to_ne_bytes();
        let words: Vec<String> = bytes
            .chunks(4)
            .map(|w| format!("0x{:08x}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        assert!(
            rule.contains(&format!("[ cmp eq reg 1 {} {} ]", words[0], words[1])),
            "{rule}"
        );
        assert!(rule.contains("accept"), "{rule}");
        // Another level or id is another description.
        let other = killswitch_policy::Exceptions {
            bypass: Some(killswitch_policy::BypassScope {
                level: 2,
                id: id + 1,
            }),
            ..Default::default()
        };
        assert_ne!(describe(&other), rules);
        assert!(describe(&killswitch_policy::Exceptions::default()).is_empty());
    }
}
