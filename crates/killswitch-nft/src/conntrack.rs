//! Conntrack entries by their mark, over ctnetlink (`NFNL_SUBSYS_CTNETLINK`): removing the flows
//! of router LANs when the path they took is no longer theirs.
//!
//! Why: a LAN client's flow is NATed (masqueraded) on the interface it first left by, and its
//! conntrack entry keeps that binding, and that route decision's effect, for as long as packets
//! keep it alive. When the tunnel changes (another server, other addresses, gone), an old entry
//! would keep a flow pinned to an address or path it can no longer take. The rules mark every
//! flow from a router LAN (`ct mark |= CT_MARK_ROUTER`), and [`delete_marked`] removes exactly
//! those entries in one request, so that each flow's next packet is judged (and NATed) afresh by
//! the rules in force.
//!
//! The request is `IPCTNL_MSG_CT_DELETE` without a tuple, which the kernel reads as a flush, with
//! `CTA_MARK`/`CTA_MARK_MASK` as its filter; family `AF_UNSPEC` in the `nfgenmsg` makes the
//! filter match IPv4 and IPv6 entries alike (a non-zero family would restrict it to that family).
//! Entries of other programs (other marks, unmarked) stay.

use crate::NftError;
use crate::netlink::{self, Message};

/// `NFNL_SUBSYS_CTNETLINK` (linux/netfilter/nfnetlink.h).
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: how a dump answers, one entry a message.
const IPCTNL_MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET` (linux/netfilter/nfnetlink_conntrack.h).
const IPCTNL_MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `CTA_MARK`: the entry's mark, big-endian u32.
const CTA_MARK: u16 = 8;
/// `CTA_MARK_MASK`: with `CTA_MARK` in a flush or a dump, the bits the filter compares.
const CTA_MARK_MASK: u16 = 21;
/// `NLA_TYPE_MASK`: an attribute's type without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// Deletes every conntrack entry of this network namespace (IPv4 and IPv6) whose mark has any
/// bit of `mark` set, and with it the NAT binding it holds. Entries without those bits stay.
/// Needs CAP_NET_ADMIN in the calling thread's network namespace.
pub fn delete_marked(mark: u32) -> Result<(), NftError> {
    let socket = netlink::Socket::open()?;
    // mark & mask == value: with value = mask = `mark`, "has every bit of `mark`"; one bit is
    // what the daemon uses (CT_MARK_ROUTER), for which that is "has the bit".
    let request = ct_request(
        IPCTNL_MSG_CT_DELETE,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        mark,
    );
    match netlink::request(&socket, &request)? {
        Ok(_) => Ok(()),
        // Nothing to delete is not a failure.
        Err(libc::ENOENT) => Ok(()),
        Err(errno) => Err(NftError::Rejected {
            what: format!("the request to delete the conntrack entries marked {mark:#x}"),
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}

/// The marks of every conntrack entry of this network namespace (IPv4 and IPv6), one per entry
/// (0 for an unmarked one): for tests and diagnostics.
pub fn marks() -> Result<Vec<u32>, NftError> {
    let socket = netlink::Socket::open()?;
    let request = ct_request(
        IPCTNL_MSG_CT_GET,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        0,
    );
    let messages = match netlink::request(&socket, &request)? {
        Ok(messages) => messages,
        Err(errno) => {
            return Err(NftError::Rejected {
                what: "the request to list the conntrack entries".to_owned(),
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
    };
    let entry = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
    let mut marks = Vec::new();
    for message in &messages {
        if message.header().kind != entry {
            continue;
        }
        marks.push(mark_of(message));
    }
    Ok(marks)
}

/// One ctnetlink request: the header, an `nfgenmsg` for `AF_UNSPEC`, and (for a non-zero `mark`)
/// the mark filter.
fn ct_request(kind: u16, flags: u16, mark: u32) -> Vec<u8> {
    let mut attributes = Vec::new();
    if mark != 0 {
        for (kind, value) in [(CTA_MARK, mark), (CTA_MARK_MASK, mark)] {
            attributes.extend_from_slice(&8u16.to_ne_bytes());
            attributes.extend_from_slice(&kind.to_ne_bytes());
            attributes.extend_from_slice(&value.to_be_bytes());
        }
    }
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attributes.len();
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(&(len as u32).to_ne_bytes());
    message.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    // nfgenmsg: family, version (NFNETLINK_V0), resource id (big-endian, unused here).
    message.push(libc::AF_UNSPEC as u8);
    message.push(libc::NFNETLINK_V0 as u8);
    message.extend_from_slice(&0u16.to_be_bytes());
    message.extend_from_slice(&attributes);
    message
}

/// The `CTA_MARK` of one entry message (0 when it has none).
fn mark_of(message: &Message) -> u32 {
    let bytes = message.bytes();
    let mut rest = bytes.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or_default();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            break;
        }
        if kind == CTA_MARK
            && let Some(value) = rest.get(4..8)
        {
            return u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delete_request_is_a_filtered_flush_of_both_families() {
        let request = ct_request(
            IPCTNL_MSG_CT_DELETE,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            0x0400_0000,
        );
        assert_eq!(request.len(), 16 + 4 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(request[0..4].try_into().expect("4 bytes")) as usize,
            request.len()
        );
        // Type: subsystem 1 (ctnetlink), message 2 (delete).
        assert_eq!(u16::from_ne_bytes([request[4], request[5]]), 0x0102);
        // AF_UNSPEC: both families; no tuple, so a flush.
        assert_eq!(request[16], 0);
        // CTA_MARK then CTA_MARK_MASK, both the bit, big-endian.
        assert_eq!(u16::from_ne_bytes([request[22], request[23]]), CTA_MARK);
        assert_eq!(request[24..28], [0x04, 0, 0, 0]);
        assert_eq!(
            u16::from_ne_bytes([request[30], request[31]]),
            CTA_MARK_MASK
        );
        assert_eq!(request[32..36], [0x04, 0, 0, 0]);
        // Never an unfiltered flush: a dump (mark 0) carries no filter, a delete always does.
        let dump = ct_request(IPCTNL_MSG_CT_GET, libc::NLM_F_DUMP as u16, 0);
        assert_eq!(dump.len(), 20);
    }

    #[test]
    fn a_mark_is_read_from_an_entry_and_garbage_reads_as_none() {
        let mut entry = ct_request(0, 0, 0);
        // A nested attribute first (a tuple, flagged NLA_F_NESTED), then the mark.
        entry.extend_from_slice(&8u16.to_ne_bytes());
        entry.extend_from_slice(&(1u16 | 0x8000).to_ne_bytes());
        entry.extend_from_slice(&[0; 4]);
        entry.extend_from_slice(&8u16.to_ne_bytes());
        entry.extend_from_slice(&CTA_MARK.to_ne_bytes());
        entry.extend_from_slice(&0x0400_0001u32.to_be_bytes());
        assert_eq!(mark_of(&Message::copy_from(&entry)), 0x0400_0001);
        let mut broken = ct_request(0, 0, 0);
        broken.extend_from_slice(&[200, 0, 8, 0, 1, 2]);
        assert_eq!(mark_of(&Message::copy_from(&broken)), 0);
    }
}
