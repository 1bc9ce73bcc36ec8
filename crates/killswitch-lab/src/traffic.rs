//! Probes and traffic generators, run from inside a namespace (call them from [`Netns::run`]).
//!
//! Every datagram carries a payload that names it, so that a capture can tell which probe a frame
//! belongs to, and a sentinel can mark "everything before this has been sent". ARP requests and
//! neighbour solicitations are written as whole frames (AF_PACKET, root only), as a host on the
//! LAN would send them.
//!
//! [`Netns::run`]: crate::netns::Netns::run

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Sends one UDP datagram with `payload` to `dst`, optionally with a fwmark on the socket.
///
/// Returns the send error, if any: a locally rejected packet fails here at once (EPERM), which is
/// the kill switch's "fail fast".
pub fn send_udp(dst: SocketAddr, payload: &[u8], mark: Option<u32>) -> io::Result<()> {
    let socket = udp_socket(dst, mark)?;
    socket.send_to(payload, dst).map(|_| ())
}

/// Sends one UDP datagram bound to `device` (SO_BINDTODEVICE), bypassing whatever the routing
/// policy would choose: how a program (or an attacker's script) goes around a tunnel's routes.
pub fn send_udp_via(
    device: &str,
    dst: SocketAddr,
    payload: &[u8],
    mark: Option<u32>,
) -> io::Result<()> {
    let socket = udp_socket(dst, mark)?;
    // SAFETY: setsockopt with a pointer to the device name bytes and their length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.send_to(payload, dst).map(|_| ())
}

/// A UDP socket of `dst`'s family, optionally marked.
pub fn udp_socket(dst: SocketAddr, mark: Option<u32>) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(io::Error::other)?;
    let socket = UdpSocket::bind(bind)?;
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    Ok(socket)
}

/// Sets SO_MARK (needs CAP_NET_ADMIN).
pub fn set_mark(socket: &impl AsRawFd, mark: u32) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live u32 of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            4,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Connects over TCP with a bound on how long it may take.
pub fn tcp_connect(dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&dst, timeout)
}

/// Whether an error is how a kill switch says no locally: EPERM from the output hook, a reset, or
/// an ICMP "prohibited" / "unreachable" turned into an errno.
pub fn is_local_rejection(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::EPERM
                | libc::EACCES
                | libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
        )
    )
}

/// Asks "who has TARGET? tell `sender`" on `interface` for each of `targets`, in order, with raw
/// ARP requests (broadcast, from the interface's own MAC), as any host on a LAN can. Run inside
/// the asking host's namespace.
///
/// The requests are sent from one CPU (the calling thread is pinned to it), so the receiver
/// handles them, and answers them, in the order sent: an answer to a later question proves that
/// the earlier ones were processed, which is how a test knows that a missing answer is missing
/// for good.
pub fn send_arp_requests(
    interface: &str,
    sender: Ipv4Addr,
    targets: &[Ipv4Addr],
) -> io::Result<()> {
    let link = LinkSocket::open(interface)?;
    pin_to_this_cpu()?;
    for target in targets {
        let mut frame = Vec::with_capacity(42);
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&link.mac);
        frame.extend_from_slice(&0x0806u16.to_be_bytes());
        // Ethernet, IPv4, lengths 6 and 4, request.
        frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&link.mac);
        frame.extend_from_slice(&sender.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&target.octets());
        link.send(&frame, [0xff; 6])?;
    }
    Ok(())
}

/// Sends a neighbour solicitation from `source` on `interface` for each of `targets`, in order
/// (from one CPU, as [`send_arp_requests`]), each to its target's solicited-node group, with the
/// interface's MAC as source link-layer address (so that an answer comes back to it): how an IPv6
/// host on the LAN asks who holds an address.
pub fn send_neighbor_solicitations(
    interface: &str,
    source: Ipv6Addr,
    targets: &[Ipv6Addr],
) -> io::Result<()> {
    let link = LinkSocket::open(interface)?;
    pin_to_this_cpu()?;
    for target in targets {
        link.send_neighbor_solicitation(source, *target)?;
    }
    Ok(())
}

/// Pins the calling thread to the CPU it runs on. A veth delivers a frame to the per-CPU queue
/// of the sending CPU, so frames sent from one CPU are received in the order sent; from a thread
/// that migrated between two sends they could be handled out of order.
fn pin_to_this_cpu() -> io::Result<()> {
    // SAFETY: sched_getcpu has no arguments; CPU_ZERO/CPU_SET write into a local cpu_set_t, and
    // sched_setaffinity reads it with its size (pid 0: the calling thread).
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl LinkSocket {
    /// One neighbour solicitation for `target` from `source`.
    fn send_neighbor_solicitation(&self, source: Ipv6Addr, target: Ipv6Addr) -> io::Result<()> {
        let t = target.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let dst_mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
        // ICMPv6: type 135, code 0, checksum (filled below), reserved, target, then the source
        // link-layer address option (type 1, 8 bytes).
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&t);
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&self.mac);
        let checksum = icmpv6_checksum(source, group, &icmp);
        icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

        let mut frame = Vec::with_capacity(14 + 40 + icmp.len());
        frame.extend_from_slice(&dst_mac);
        frame.extend_from_slice(&self.mac);
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        let length = u16::try_from(icmp.len()).map_err(io::Error::other)?;
        frame.extend_from_slice(&length.to_be_bytes());
        // Next header ICMPv6, hop limit 255 (RFC 4861: receivers drop anything else).
        frame.extend_from_slice(&[58, 255]);
        frame.extend_from_slice(&source.octets());
        frame.extend_from_slice(&group.octets());
        frame.extend_from_slice(&icmp);
        self.send(&frame, dst_mac)
    }
}

/// The ICMPv6 checksum: over the pseudo-header (source, destination, length, next header 58) and
/// the message, with its checksum field zero.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + message.len() + 1);
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(message);
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u32 = data
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw AF_PACKET socket for sending whole frames on one interface, and that interface's MAC.
struct LinkSocket {
    fd: OwnedFd,
    index: i32,
    mac: [u8; 6],
}

impl LinkSocket {
    fn open(interface: &str) -> io::Result<Self> {
        // Protocol 0: this socket only sends, it receives nothing.
        // SAFETY: plain socket(2); the result is checked before being wrapped.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let index = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)? as i32;
        // SAFETY: a zeroed sockaddr_ll is valid; family and interface are filled in.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index;
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: bind, then getsockname, with a sockaddr_ll of the size given; a bound packet
        // socket's name carries the device's hardware address.
        let rc = unsafe {
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                len,
            );
            if rc == 0 {
                libc::getsockname(
                    fd.as_raw_fd(),
                    (&mut addr as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            } else {
                rc
            }
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if addr.sll_halen != 6 {
            return Err(io::Error::other(format!(
                "{interface} has a {}-byte hardware address, not Ethernet's 6",
                addr.sll_halen
            )));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&addr.sll_addr[..6]);
        Ok(LinkSocket { fd, index, mac })
    }

    fn send(&self, frame: &[u8], dst_mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_ll is valid; the fields sendto needs are filled in.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.index;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst_mac);
        // SAFETY: the frame and the address outlive the call, and their lengths are passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
