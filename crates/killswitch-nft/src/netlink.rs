//! The netfilter netlink socket: send a batch and collect the kernel's acknowledgements, or send a
//! dump request and collect the objects.
//!
//! Messages are parsed here by reading header fields byte by byte, and copied into aligned buffers
//! before libnftnl sees them, because a `Vec<u8>` carries no alignment guarantee.

use crate::encode::Batch;
use crate::{KERNEL_TIMEOUT, NftError};
use std::io;
use std::os::fd::RawFd;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
/// Big enough for any single message the kernel sends us, dumps included (it fills up to this).
const RECV_BUFFER: usize = 256 * 1024;

/// A netlink message copied into 8-byte aligned storage.
pub(crate) struct Message {
    words: Vec<u64>,
    len: usize,
}

impl Message {
    pub(crate) fn copy_from(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` spans at least `bytes.len()` bytes, and u64 storage has no invalid bit
        // patterns, so viewing it as bytes to fill it is sound.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        dst.copy_from_slice(bytes);
        Message {
            words,
            len: bytes.len(),
        }
    }

    /// The message as an aligned `nlmsghdr` pointer, valid while `self` lives.
    pub(crate) fn as_nlmsghdr(&self) -> *const libc::nlmsghdr {
        self.words.as_ptr().cast()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of `words` were initialised from a byte slice.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    pub(crate) fn header(&self) -> Header {
        // A Message is only built from a slice that `split` validated as holding a header.
        Header::parse(self.bytes()).unwrap_or_default()
    }
}

/// The fields of an `nlmsghdr`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
}

impl Header {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
        };
        let half = |at: usize| {
            bytes
                .get(at..at + 2)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_ne_bytes)
        };
        Some(Header {
            len: word(0)?,
            kind: half(4)?,
            flags: half(6)?,
            seq: word(8)?,
        })
    }
}

/// Splits a buffer into its netlink messages.
pub(crate) fn split(buffer: &[u8]) -> Result<Vec<Message>, NftError> {
    let mut messages = Vec::new();
    let mut rest = buffer;
    while rest.len() >= NLMSG_HDRLEN {
        let header =
            Header::parse(rest).ok_or_else(|| NftError::Parse("truncated header".to_owned()))?;
        let len = header.len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(NftError::Parse(format!(
                "message length {len} outside 16..={}",
                rest.len()
            )));
        }
        messages.push(Message::copy_from(&rest[..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(messages)
}

/// The error code carried by an NLMSG_ERROR message (0 is an acknowledgement).
fn error_code(message: &Message) -> Result<i32, NftError> {
    message
        .bytes()
        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| NftError::Parse("NLMSG_ERROR without an error code".to_owned()))
}

/// A netfilter netlink socket, kept open across operations.
///
/// Keeping it open is not just thrift: closing a netfilter socket right after a commit that
/// removed objects waits for the kernel's deferred destruction (an RCU grace period, 7 to 30 ms
/// here), which would otherwise be paid on every state change.
pub(crate) struct Socket {
    inner: mnl::Socket,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Socket(fd {})", self.fd())
    }
}

impl Socket {
    pub(crate) fn open() -> Result<Self, NftError> {
        let inner = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NftError::Socket)?;
        let socket = Socket { inner };
        // libmnl opens without SOCK_CLOEXEC. A child that inherited the socket would keep it
        // alive after we close it, and with it the ownership of tables it owns: not across exec.
        // SAFETY: fcntl on a descriptor this socket owns.
        if unsafe { libc::fcntl(socket.fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(NftError::Socket(io::Error::last_os_error()));
        }
        let timeout = libc::timeval {
            tv_sec: KERNEL_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(KERNEL_TIMEOUT.subsec_micros() as i32),
        };
        socket
            .setsockopt(libc::SO_RCVTIMEO, &timeout)
            .map_err(NftError::Socket)?;
        Ok(socket)
    }

    fn fd(&self) -> RawFd {
        // SAFETY: the mnl socket is open for as long as `self` lives.
        unsafe { mnl::mnl_sys::mnl_socket_get_fd(self.inner.as_raw_socket()) }
    }

    fn setsockopt<T>(&self, option: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live `T` of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                option,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends `bytes` in one datagram: a batch split over several would not be one transaction.
    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
        // The default send buffer (about 200 KiB) caps one datagram; a large batch needs more.
        // SO_SNDBUFFORCE needs CAP_NET_ADMIN, which we have if we can change the firewall at all.
        if bytes.len() > 64 * 1024 {
            let wanted = libc::c_int::try_from(bytes.len() * 2)
                .map_err(|_| NftError::TooLarge(bytes.len()))?;
            self.setsockopt(libc::SO_SNDBUFFORCE, &wanted)
                .map_err(NftError::Send)?;
        }
        let sent = self.inner.send(bytes).map_err(|e| match e.raw_os_error() {
            Some(libc::EMSGSIZE) => NftError::TooLarge(bytes.len()),
            _ => NftError::Send(e),
        })?;
        if sent != bytes.len() {
            return Err(NftError::Send(io::Error::other(format!(
                "sent {sent} of {} bytes",
                bytes.len()
            ))));
        }
        Ok(())
    }

    /// Makes the receive buffer hold `acks` acknowledgements at once. nf_tables processes a
    /// batch within `send` and queues every acknowledgement before we read one; each is an skb
    /// of its own (some 700 bytes of buffer accounting for a 36-byte message), so the default
    /// buffer (about 200 KiB) overflows at a few hundred messages and the kernel drops the rest
    /// with ENOBUFS: the commit's outcome would be unknown (a gateway with five LANs did this).
    /// SO_RCVBUFFORCE needs CAP_NET_ADMIN, which we have if we can change the firewall at all.
    fn make_room_for_acks(&self, acks: usize) -> Result<(), NftError> {
        const PER_ACK: usize = 2048;
        const DEFAULT: usize = 128 * 1024;
        let needed = acks.saturating_mul(PER_ACK);
        if needed <= DEFAULT {
            return Ok(());
        }
        let wanted = libc::c_int::try_from(needed).map_err(|_| NftError::TooLarge(needed))?;
        self.setsockopt(libc::SO_RCVBUFFORCE, &wanted)
            .map_err(NftError::Recv)
    }

    /// Discards anything left from an earlier operation that gave up early (a timeout), so that
    /// its answers cannot be mistaken for this operation's.
    fn drain(&self, buffer: &mut [u8]) {
        while self.recv_now(buffer) > 0 {}
    }

    /// One `recv` of what is queued, without waiting: the byte count, or -1 (errno set).
    fn recv_now(&self, buffer: &mut [u8]) -> isize {
        // SAFETY: recv into a live buffer of the given length, without blocking.
        unsafe {
            libc::recv(
                self.fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
            )
        }
    }

    /// Receives what is queued already, without waiting: `None` when nothing is.
    fn recv_queued(&self, buffer: &mut [u8]) -> Result<Option<Vec<Message>>, NftError> {
        let n = self.recv_now(buffer);
        match usize::try_from(n) {
            Ok(n) => split(&buffer[..n]).map(Some),
            Err(_) => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                e => Err(NftError::Recv(e)),
            },
        }
    }

    fn recv(&self, buffer: &mut [u8]) -> Result<Vec<Message>, NftError> {
        match self.inner.recv_raw(buffer) {
            Ok(n) => split(&buffer[..n]),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN)) => {
                Err(NftError::Timeout(KERNEL_TIMEOUT))
            }
            Err(e) => Err(NftError::Recv(e)),
        }
    }
}

/// An aligned receive buffer.
fn recv_buffer() -> Vec<u64> {
    vec![0u64; RECV_BUFFER / 8]
}

fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u64, and the slice covers exactly the words' storage.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

/// Sends `batch` and waits for the kernel to acknowledge every message that asked for it.
///
/// The kernel processes the whole batch before answering and then delivers all acknowledgements
/// and errors together; if any message failed, it has already rolled the whole batch back.
pub(crate) fn commit(socket: &Socket, batch: &Batch) -> Result<(), NftError> {
    let sent = split(batch.bytes())?;
    let wanted: Vec<(u32, usize)> = sent
        .iter()
        .enumerate()
        .filter(|(_, m)| m.header().flags & NLM_F_ACK != 0)
        .map(|(index, m)| (m.header().seq, index))
        .collect();

    let mut words = recv_buffer();
    socket.drain(as_bytes_mut(&mut words));
    socket.make_room_for_acks(wanted.len())?;
    socket.send(batch.bytes())?;

    let mut answered = 0;
    let mut first_error = None;
    while answered < wanted.len() {
        let received = if first_error.is_some() {
            // The kernel stops at the first failing message and answers nothing for the rest;
            // everything it had to say was queued before `send` returned (nf_tables processes a
            // batch in the sender's call). Take what is there and stop: waiting for answers that
            // never come held the daemon's event loop for the whole receive timeout.
            match socket.recv_queued(as_bytes_mut(&mut words))? {
                Some(received) => received,
                None => break,
            }
        } else {
            socket.recv(as_bytes_mut(&mut words))?
        };
        for message in received {
            let header = message.header();
            if header.kind != NLMSG_ERROR {
                continue;
            }
            answered += 1;
            let code = error_code(&message)?;
            if code != 0 && first_error.is_none() {
                let index = wanted
                    .iter()
                    .find(|(seq, _)| *seq == header.seq)
                    .map(|(_, i)| *i);
                first_error = Some(NftError::Rejected {
                    what: index.map_or("the batch", |i| batch.label(i)).to_owned(),
                    source: io::Error::from_raw_os_error(-code),
                });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sends one request and collects the answer: every object message until NLMSG_DONE for a dump,
/// or the single object for a get. A kernel error comes back as `Err(errno)`.
pub(crate) fn request(
    socket: &Socket,
    request: &[u8],
) -> Result<Result<Vec<Message>, i32>, NftError> {
    let mut words = recv_buffer();
    socket.drain(as_bytes_mut(&mut words));
    socket.send(request)?;
    let is_dump = split(request)?
        .first()
        .is_some_and(|m| m.header().flags & (libc::NLM_F_DUMP as u16) == libc::NLM_F_DUMP as u16);
    let mut objects = Vec::new();
    loop {
        for message in socket.recv(as_bytes_mut(&mut words))? {
            match message.header().kind {
                NLMSG_DONE => return Ok(Ok(objects)),
                NLMSG_ERROR => {
                    let code = error_code(&message)?;
                    return Ok(if code == 0 { Ok(objects) } else { Err(-code) });
                }
                _ => objects.push(message),
            }
        }
        if !is_dump && !objects.is_empty() {
            return Ok(Ok(objects));
        }
    }
}
