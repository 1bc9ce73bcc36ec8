//! The traffic generator: from inside the client namespace, a steady stream of every kind of
//! packet a leak could be made of, at a configurable rate (default 1,500 packets/s in total, so
//! that a 10 ms window would show about 15 packets).
//!
//! Every send is counted as *offered*; a send the kernel refuses on the spot (the kill switch's
//! reject) is counted as *refused*. What arrives is counted by the sinks (see [`crate::sinks`]).

use crate::netns::Netns;
use crate::sinks::{self, Arrivals};
use crate::topology::{PUBLIC_DNS_V4, ROUTER_V4, TARGET_V4, TARGET_V6};
use crate::wireguard::SERVER_TUNNEL_V4;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default total rate.
pub const DEFAULT_RATE: u32 = 1500;

/// What a generated packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// UDP to the target (IPv4).
    Udp4,
    /// TCP connection attempts to the target (IPv4).
    Tcp4,
    /// ICMP echo requests to the target.
    Icmp4,
    /// DNS queries to the tunnel's resolver.
    DnsTunnel,
    /// DNS queries to the LAN's resolver.
    DnsLan,
    /// DNS queries to a public resolver.
    DnsPublic,
    /// UDP to the target (IPv6).
    Udp6,
    /// TCP connection attempts to the target (IPv6).
    Tcp6,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Udp4,
        Kind::Tcp4,
        Kind::Icmp4,
        Kind::DnsTunnel,
        Kind::DnsLan,
        Kind::DnsPublic,
        Kind::Udp6,
        Kind::Tcp6,
    ];

    fn destination(self) -> SocketAddr {
        match self {
            Kind::Udp4 => SocketAddr::new(TARGET_V4.into(), sinks::UDP_PORT),
            Kind::Tcp4 => SocketAddr::new(TARGET_V4.into(), sinks::TCP_PORT),
            Kind::Icmp4 => SocketAddr::new(TARGET_V4.into(), 0),
            Kind::DnsTunnel => SocketAddr::new(SERVER_TUNNEL_V4.into(), 53),
            Kind::DnsLan => SocketAddr::new(ROUTER_V4.into(), 53),
            Kind::DnsPublic => SocketAddr::new(PUBLIC_DNS_V4.into(), 53),
            Kind::Udp6 => SocketAddr::new(TARGET_V6.into(), sinks::UDP_PORT),
            Kind::Tcp6 => SocketAddr::new(TARGET_V6.into(), sinks::TCP_PORT),
        }
    }

    fn is_tcp(self) -> bool {
        matches!(self, Kind::Tcp4 | Kind::Tcp6)
    }
}

/// Per-kind counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// Send attempts.
    pub offered: u64,
    /// Attempts the kernel refused at once.
    pub refused: u64,
}

/// Counts per kind of traffic.
pub type Counts = BTreeMap<Kind, KindCounts>;

/// A running generator.
#[derive(Debug)]
pub struct Generator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Result<Counts>>>>,
    /// ICMP echo replies received (the only arrivals seen from the client's side).
    pub icmp_replies: Arrivals,
}

/// TCP attempts are a tenth of the others: each is a socket and a handshake.
const TCP_SHARE: u64 = 10;
/// How long a TCP attempt is kept open for its handshake to finish.
const TCP_LINGER: Duration = Duration::from_secs(1);

impl Generator {
    /// Starts generating `kinds` at `rate` packets per second in total, from `ns`.
    pub fn start(ns: &Netns, kinds: &[Kind], rate: u32) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let icmp_replies = Arrivals::default();
        let kinds = kinds.to_vec();
        let thread = {
            let (stop, replies) = (stop.clone(), icmp_replies.clone());
            ns.spawn("generator", move || {
                generate(&kinds, rate.max(1), &stop, &replies)
            })?
        };
        Ok(Generator {
            stop,
            thread: Some(thread),
            icmp_replies,
        })
    }

    /// Stops and returns the counts.
    pub fn stop(mut self) -> Result<BTreeMap<Kind, KindCounts>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().context("generator already stopped")?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))??
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Senders {
    udp4: UdpSocket,
    udp6: UdpSocket,
    icmp: OwnedFd,
    tcp: VecDeque<(Instant, Kind, TcpStream)>,
}

fn generate(
    kinds: &[Kind],
    rate: u32,
    stop: &AtomicBool,
    replies: &Arrivals,
) -> Result<BTreeMap<Kind, KindCounts>> {
    let mut senders = Senders {
        udp4: UdpSocket::bind("0.0.0.0:0")?,
        udp6: UdpSocket::bind("[::]:0")?,
        icmp: icmp_socket()?,
        tcp: VecDeque::new(),
    };
    let mut counts: BTreeMap<Kind, KindCounts> =
        kinds.iter().map(|k| (*k, KindCounts::default())).collect();
    let schedule: Vec<Kind> = kinds.iter().copied().filter(|k| !k.is_tcp()).collect();
    let tcp_kinds: Vec<Kind> = kinds.iter().copied().filter(|k| k.is_tcp()).collect();
    let start = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let slot = sent;
            sent += 1;
            let kind = if !tcp_kinds.is_empty()
                && (slot.is_multiple_of(TCP_SHARE) || schedule.is_empty())
            {
                tcp_kinds[(slot / TCP_SHARE) as usize % tcp_kinds.len()]
            } else if schedule.is_empty() {
                continue;
            } else {
                schedule[slot as usize % schedule.len()]
            };
            let refused = send(&mut senders, kind, slot)
                .is_err_and(|e| crate::traffic::is_local_rejection(&e));
            if let Some(c) = counts.get_mut(&kind) {
                c.offered += 1;
                c.refused += u64::from(refused);
            }
        }
        drain_icmp_replies(&senders.icmp, replies);
        while senders
            .tcp
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() > TCP_LINGER)
        {
            if let Some((_, kind, stream)) = senders.tcp.pop_front() {
                count_tcp_refusal(&mut counts, kind, &stream);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (_, kind, stream) in senders.tcp.drain(..) {
        count_tcp_refusal(&mut counts, kind, &stream);
    }
    Ok(counts)
}

/// A non-blocking connect reports a rejection later, as the socket's error (the kill switch's
/// TCP reset arrives at once, but after connect() has returned).
fn count_tcp_refusal(counts: &mut BTreeMap<Kind, KindCounts>, kind: Kind, stream: &TcpStream) {
    let refused = stream
        .take_error()
        .ok()
        .flatten()
        .is_some_and(|e| crate::traffic::is_local_rejection(&e));
    if let (true, Some(c)) = (refused, counts.get_mut(&kind)) {
        c.refused += 1;
    }
}

fn send(senders: &mut Senders, kind: Kind, seq: u64) -> io::Result<()> {
    let dst = kind.destination();
    let payload = format!("killswitch-lab {seq}");
    match kind {
        Kind::Udp4 => senders.udp4.send_to(payload.as_bytes(), dst).map(|_| ()),
        Kind::Udp6 => senders.udp6.send_to(payload.as_bytes(), dst).map(|_| ()),
        Kind::DnsTunnel | Kind::DnsLan | Kind::DnsPublic => {
            let query = sinks::dns_query(seq as u16, "leak-test.example");
            senders.udp4.send_to(&query, dst).map(|_| ())
        }
        Kind::Icmp4 => send_echo(&senders.icmp, dst.ip(), seq as u16),
        Kind::Tcp4 | Kind::Tcp6 => {
            let stream = connect_nonblocking(dst)?;
            senders.tcp.push_back((Instant::now(), kind, stream));
            Ok(())
        }
    }
}

fn connect_nonblocking(dst: SocketAddr) -> io::Result<TcpStream> {
    let domain = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2); the descriptor is owned by the TcpStream built from it.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (storage, len) = sockaddr(dst);
    // SAFETY: connect with a sockaddr of the length given.
    let rc = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc == 0 {
        return Ok(stream);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(stream)
    } else {
        Err(error)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family-specific part.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// The ICMP identifier of this lab's echo requests.
const ECHO_ID: u16 = 0x4b53; // "KS"

fn icmp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2); checked, then owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_echo(socket: &OwnedFd, dst: IpAddr, seq: u16) -> io::Result<()> {
    let mut packet = [
        8u8, 0, 0, 0, 0, 0, 0, 0, b'k', b's', b'l', b'a', b'b', 0, 0, 0,
    ];
    packet[4..6].copy_from_slice(&ECHO_ID.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    let (storage, len) = sockaddr(SocketAddr::new(dst, 0));
    // SAFETY: sendto with a live buffer and sockaddr of the lengths given.
    let rc = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn drain_icmp_replies(socket: &OwnedFd, replies: &Arrivals) {
    let mut buffer = [0u8; 1500];
    loop {
        // SAFETY: recv into a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if n <= 0 {
            return;
        }
        let packet = &buffer[..n as usize];
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let is_our_reply = packet.get(ihl) == Some(&0)
            && packet.get(ihl + 4..ihl + 6) == Some(&ECHO_ID.to_be_bytes());
        if is_our_reply && packet.len() >= 16 {
            let from = IpAddr::from([packet[12], packet[13], packet[14], packet[15]]);
            replies.push(from);
        }
    }
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // Type 8, code 0, id 1, seq 1, no payload: checksum 0xf7fd.
        assert_eq!(internet_checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
