//! The table's named counters (one per [`BlockReason`]) and the statements that feed them: the
//! counter objects a batch creates, the `counter name`, `log` and `limit` expressions the
//! refusing rules carry, and reading the counts back (one NFT_MSG_GETOBJ dump).
//!
//! Every change of state replaces the whole table in one transaction, and with it its counter
//! objects, which would start again from zero. So that the counts mean "since the kill switch
//! first blocked" and not "since the last change of state", [`crate::Nftables::apply`] reads
//! them just before it builds the batch and creates the new objects with those values: the kernel
//! then holds the running totals itself, and `nft list counters` and `killswitch status` agree.
//! Packets refused between that read and the commit (microseconds) are not carried over.

use crate::NftError;
use crate::netlink::{self, Message};
use killswitch_policy::{
    LOG_SNAPLEN, NFLOG_GROUP, TABLE_NAME, counter_name, log_prefix, reason_of_counter,
};
use killswitch_types::{BlockReason, Count};
use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::{MsgType, Rule};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::raw::c_char;
use std::ptr::NonNull;

/// nf_tables' object type of a counter (`NFT_OBJECT_COUNTER`).
const NFT_OBJECT_COUNTER: u32 = 1;
/// nf_tables' limit type that counts packets, not bytes (`NFT_LIMIT_PKTS`).
const NFT_LIMIT_PKTS: u32 = 0;
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// The counts per reason, as the kernel holds them.
pub type Counters = BTreeMap<BlockReason, Count>;

/// The add message of counter object `reason` in table `inet killswitch`, starting at `start`.
pub(crate) struct CounterObject {
    table: CString,
    name: CString,
    start: Count,
}

impl CounterObject {
    pub(crate) fn new(reason: BlockReason, start: Count) -> Result<Self, NftError> {
        let cstring = |s: &str| CString::new(s).map_err(|_| NftError::Comment(s.to_owned()));
        Ok(CounterObject {
            table: cstring(TABLE_NAME)?,
            name: cstring(&counter_name(reason))?,
            start,
        })
    }
}

// SAFETY: `write` fills `buf` (which the batch sized for the largest message) with one object
// message built by libnftnl from an object that lives only for the call.
unsafe impl nftnl::NlMsg for CounterObject {
    unsafe fn write(&self, buf: *mut std::ffi::c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: the object is allocated (checked), filled from live values, its payload written
        // into `buf` after a header nftnl builds there, and freed.
        unsafe {
            let obj = sys::nftnl_obj_alloc();
            if obj.is_null() {
                std::process::abort();
            }
            sys::nftnl_obj_set_str(obj, sys::NFTNL_OBJ_TABLE as u16, self.table.as_ptr());
            sys::nftnl_obj_set_str(obj, sys::NFTNL_OBJ_NAME as u16, self.name.as_ptr());
            sys::nftnl_obj_set_u32(obj, sys::NFTNL_OBJ_TYPE as u16, NFT_OBJECT_COUNTER);
            sys::nftnl_obj_set_u64(obj, sys::NFTNL_OBJ_CTR_PKTS as u16, self.start.packets);
            sys::nftnl_obj_set_u64(obj, sys::NFTNL_OBJ_CTR_BYTES as u16, self.start.bytes);
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                libc::NFT_MSG_NEWOBJ as u16,
                libc::NFPROTO_INET as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16,
                seq,
            );
            sys::nftnl_obj_nlmsg_build_payload(header, obj);
            sys::nftnl_obj_free(obj);
        }
    }
}

fn alloc_expr(name: &std::ffi::CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: nftnl_expr_alloc takes a NUL-terminated name and returns a fresh expression or NULL.
    let expr = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
    match NonNull::new(expr) {
        Some(expr) => expr,
        // Out of memory for a few dozen bytes: nothing sensible is left to do.
        None => std::process::abort(),
    }
}

/// `counter name "REASON"`: an object reference to the table's counter for the reason.
pub(crate) struct CounterRef(pub(crate) CString);

impl Expression for CounterRef {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc_expr(c"objref");
        // SAFETY: the expression is fresh; the setters copy the integer and the string.
        unsafe {
            sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                sys::NFTNL_EXPR_OBJREF_IMM_TYPE as u16,
                NFT_OBJECT_COUNTER,
            );
            sys::nftnl_expr_set_str(
                expr.as_ptr(),
                sys::NFTNL_EXPR_OBJREF_IMM_NAME as u16,
                self.0.as_ptr(),
            );
        }
        expr
    }
}

/// `log prefix "killswitch REASON" group NFLOG_GROUP snaplen LOG_SNAPLEN`: the packet's first
/// bytes (its headers, never a payload) to nfnetlink_log.
pub(crate) struct Log(pub(crate) CString);

impl Log {
    pub(crate) fn new(reason: BlockReason) -> Result<Self, NftError> {
        let prefix = log_prefix(reason);
        Ok(Log(
            CString::new(prefix.as_str()).map_err(|_| NftError::Comment(prefix))?
        ))
    }
}

impl Expression for Log {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc_expr(c"log");
        // SAFETY: as for CounterRef. Only the attributes the kernel reports back for a group log
        // are set (prefix, group, and the snap length, which it reports because it is set), so
        // that what is sent reads back identically.
        unsafe {
            let raw = expr.as_ptr();
            sys::nftnl_expr_set_str(raw, sys::NFTNL_EXPR_LOG_PREFIX as u16, self.0.as_ptr());
            sys::nftnl_expr_set_u16(raw, sys::NFTNL_EXPR_LOG_GROUP as u16, NFLOG_GROUP);
            sys::nftnl_expr_set_u32(raw, sys::NFTNL_EXPR_LOG_SNAPLEN as u16, LOG_SNAPLEN);
        }
        expr
    }
}

/// `limit rate N/second burst B packets`.
pub(crate) struct Limit {
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
}

impl Expression for Limit {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc_expr(c"limit");
        // SAFETY: as for CounterRef. All five attributes, as the kernel reports all five.
        unsafe {
            let raw = expr.as_ptr();
            sys::nftnl_expr_set_u64(
                raw,
                sys::NFTNL_EXPR_LIMIT_RATE as u16,
                u64::from(self.per_second),
            );
            sys::nftnl_expr_set_u64(raw, sys::NFTNL_EXPR_LIMIT_UNIT as u16, 1);
            sys::nftnl_expr_set_u32(raw, sys::NFTNL_EXPR_LIMIT_BURST as u16, self.burst);
            sys::nftnl_expr_set_u32(raw, sys::NFTNL_EXPR_LIMIT_TYPE as u16, NFT_LIMIT_PKTS);
            sys::nftnl_expr_set_u32(raw, sys::NFTNL_EXPR_LIMIT_FLAGS as u16, 0);
        }
        expr
    }
}

/// Reads the counter objects of table `inet killswitch`: empty when the table is not there.
pub(crate) fn read(socket: &netlink::Socket) -> Result<Counters, NftError> {
    let table = CString::new(TABLE_NAME).map_err(|_| NftError::Parse("table name".into()))?;
    let request = dump_request(&table);
    let messages = match netlink::request(socket, &request)? {
        Ok(messages) => messages,
        Err(libc::ENOENT) => return Ok(Counters::new()),
        Err(errno) => {
            return Err(NftError::Rejected {
                what: format!("the request to list the counters of table inet {TABLE_NAME}"),
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
    };
    let mut counters = Counters::new();
    for message in &messages {
        if let Some((reason, count)) = parse_counter(message)? {
            counters.insert(reason, count);
        }
    }
    Ok(counters)
}

/// One NEWOBJ message of the dump as (reason, count), or `None` for an object that is not one
/// of our counters (another table's, another type, a name we do not know).
fn parse_counter(message: &Message) -> Result<Option<(BlockReason, Count)>, NftError> {
    if message.header().kind != (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWOBJ as u16 {
        return Ok(None);
    }
    // SAFETY: the object is allocated (checked) and freed here; libnftnl parses the message
    // within its length, and the strings it returns live as long as the object, copied before
    // it is freed.
    unsafe {
        let obj = sys::nftnl_obj_alloc();
        if obj.is_null() {
            std::process::abort();
        }
        let parsed = sys::nftnl_obj_nlmsg_parse(message.as_nlmsghdr(), obj);
        let result = if parsed < 0 {
            Err(NftError::Parse("a counter object".to_owned()))
        } else {
            let string = |attr: u32| {
                let ptr: *const c_char = sys::nftnl_obj_get_str(obj, attr as u16);
                (!ptr.is_null())
                    .then(|| std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned())
            };
            let ours = string(sys::NFTNL_OBJ_TABLE).as_deref() == Some(TABLE_NAME)
                && sys::nftnl_obj_get_u32(obj, sys::NFTNL_OBJ_TYPE as u16) == NFT_OBJECT_COUNTER;
            let reason = string(sys::NFTNL_OBJ_NAME)
                .as_deref()
                .and_then(reason_of_counter);
            Ok(reason.filter(|_| ours).map(|reason| {
                let count = Count {
                    packets: sys::nftnl_obj_get_u64(obj, sys::NFTNL_OBJ_CTR_PKTS as u16),
                    bytes: sys::nftnl_obj_get_u64(obj, sys::NFTNL_OBJ_CTR_BYTES as u16),
                };
                (reason, count)
            }))
        };
        sys::nftnl_obj_free(obj);
        result
    }
}

/// A dump of the counter objects of `table` in family `inet` (the kernel filters by table and
/// type when the request names them).
fn dump_request(table: &std::ffi::CStr) -> Vec<u8> {
    let mut words = vec![0u64; 512];
    // SAFETY: the buffer (4 KiB) is larger than a header plus a table name; the header builder
    // writes within it, and the object lives until its payload is copied into the message.
    unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(
            words.as_mut_ptr().cast::<c_char>(),
            libc::NFT_MSG_GETOBJ as u16,
            libc::NFPROTO_INET as u16,
            libc::NLM_F_DUMP as u16,
            1,
        );
        let obj = sys::nftnl_obj_alloc();
        if obj.is_null() {
            std::process::abort();
        }
        sys::nftnl_obj_set_str(obj, sys::NFTNL_OBJ_TABLE as u16, table.as_ptr());
        sys::nftnl_obj_set_u32(obj, sys::NFTNL_OBJ_TYPE as u16, NFT_OBJECT_COUNTER);
        sys::nftnl_obj_nlmsg_build_payload(nlh, obj);
        sys::nftnl_obj_free(obj);
        let len = (*nlh).nlmsg_len as usize;
        std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len).to_vec()
    }
}
