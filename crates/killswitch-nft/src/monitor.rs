//! Watching nf_tables for changes made by anyone: the basis of tamper detection.
//!
//! Every nf_tables transaction, by any process, ends with a NEWGEN notification that carries the
//! pid and name of the process that committed it. A [`Monitor`] subscribes to those notifications;
//! the daemon verifies its table after every generation committed by someone else, so a flush, a
//! deletion, a foreign rule in our chains or a `dormant` flag is noticed at once and reverted,
//! instead of when the daemon next happens to look.

use crate::NftError;
use crate::netlink::split;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = libc::NFT_MSG_NEWGEN as u16;
/// Length of `struct nfgenmsg`, which precedes the attributes.
const NFGENMSG_LEN: usize = 4;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

/// One committed nf_tables transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The ruleset generation it created.
    pub id: u32,
    /// The *thread* that committed it (the kernel reports the task id, which equals the process id
    /// only for a process's main thread), if the kernel said.
    pub pid: Option<u32>,
    /// That process's name, if the kernel said.
    pub process: Option<String>,
}

impl Generation {
    /// "nft[1234]" or "an unknown process", for logs.
    pub fn committer(&self) -> String {
        match (&self.process, self.pid) {
            (Some(name), Some(pid)) => format!("{name}[{pid}]"),
            (None, Some(pid)) => format!("pid {pid}"),
            (Some(name), None) => name.clone(),
            (None, None) => "an unknown process".to_owned(),
        }
    }
}

/// What a read of the monitor found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The transactions committed since the last read.
    pub generations: Vec<Generation>,
    /// The kernel dropped notifications (our socket buffer overflowed): assume anything changed.
    pub overrun: bool,
}

/// A subscription to nf_tables change notifications in the current network namespace.
#[derive(Debug)]
pub struct Monitor {
    fd: OwnedFd,
}

impl Monitor {
    /// Subscribes. The socket is non-blocking: poll it for readability, then call [`Monitor::read`].
    pub fn subscribe() -> Result<Self, NftError> {
        // SAFETY: socket(2); the result is checked before it is owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Bind first: an unbound netlink socket is not in the multicast tables.
        // SAFETY: a zeroed sockaddr_nl is valid (any port, no groups); bind with its size.
        let rc = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        let group: libc::c_int = libc::NFNLGRP_NFTABLES;
        // SAFETY: setsockopt with a pointer to a live c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&group as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        Ok(Monitor { fd })
    }

    /// Reads every pending notification without blocking.
    pub fn read(&self) -> Result<Changes, NftError> {
        let mut changes = Changes::default();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: recv into a live buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(changes),
                    Some(libc::ENOBUFS) => changes.overrun = true,
                    Some(libc::EINTR) => {}
                    _ => return Err(NftError::Recv(error)),
                }
                continue;
            }
            for message in split(&buffer[..n as usize])? {
                let header = message.header();
                if header.kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    changes.generations.push(parse_generation(message.bytes()));
                }
            }
        }
    }
}

impl AsFd for Monitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Parses a NEWGEN message: header, nfgenmsg, then netlink attributes (values big-endian).
fn parse_generation(message: &[u8]) -> Generation {
    let mut generation = Generation {
        id: 0,
        pid: None,
        process: None,
    };
    let mut rest = message.get(16 + NFGENMSG_LEN..).unwrap_or(&[]);
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        let value = &rest[4..len];
        let be32 = || {
            value
                .get(..4)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        };
        match kind {
            NFTA_GEN_ID => generation.id = be32().unwrap_or(0),
            NFTA_GEN_PROC_PID => generation.pid = be32(),
            NFTA_GEN_PROC_NAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or(&[]);
                generation.process = Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    generation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    }

    #[test]
    fn parses_a_newgen_message() {
        let mut body = vec![0u8; NFGENMSG_LEN];
        body.extend(attr(NFTA_GEN_ID, &42u32.to_be_bytes()));
        body.extend(attr(NFTA_GEN_PROC_PID, &1234u32.to_be_bytes()));
        body.extend(attr(NFTA_GEN_PROC_NAME, b"nft\0"));
        let mut message = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        message.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN).to_ne_bytes());
        message.extend_from_slice(&[0u8; 10]);
        message.extend(body);
        let generation = parse_generation(&message);
        assert_eq!(
            generation,
            Generation {
                id: 42,
                pid: Some(1234),
                process: Some("nft".to_owned())
            }
        );
        assert_eq!(generation.committer(), "nft[1234]");
    }

    #[test]
    fn truncated_messages_are_not_a_panic() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 13 + 7) as u8).collect();
            let _ = parse_generation(&junk);
        }
    }
}
