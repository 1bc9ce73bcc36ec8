//! Probes and traffic generators, run from inside a namespace (call them from [`Netns::run`]).
//!
//! Every datagram carries a payload that names it, so that a capture can tell which probe a frame
//! belongs to, and a sentinel can mark "everything before this has been sent".
//!
//! [`Netns::run`]: crate::netns::Netns::run

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
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
