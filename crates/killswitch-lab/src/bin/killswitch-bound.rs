//! `killswitch-bound`: an unprivileged program that sends past the routing layer.
//!
//! For a socket fixed to an interface, Linux treats a destination as on-link when the
//! policy-routing lookup fails, so the kill switch's routing layer does not hold such packets
//! back; only the firewall does. On current kernels no privilege is needed for that: this program
//! drops to an unprivileged uid first, then sends round robin through three such sockets — UDP
//! bound with `SO_BINDTODEVICE`, UDP with `IP_UNICAST_IF`, and a ping socket (ICMP echo, where
//! `net.ipv4.ping_group_range` admits the uid) bound to the interface — at a fixed rate for a
//! fixed time. It prints one summary line (`sent N refused M`; refused: the send failed at once)
//! and exits. Run it inside the lab's client namespace (`ip netns exec`).
//!
//! With `--plain` (scenario `tunnel-only-user`), two ordinary sockets join the round: unbound UDP
//! to the same target, routed as any program's, and a TCP connection attempt to `--tcp-port`.
//! Every UDP and ICMP packet carries [`PAYLOAD`], so that a capture can tell this user's packets
//! from anyone else's; the TCP port does the same for the connection attempts.

use clap::Parser;
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Sends through sockets fixed to INTERFACE, as an unprivileged user, at RATE packets/s.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The interface to send by (the lab's physical link).
    #[arg(long)]
    interface: String,
    /// Where to send (IPv4 address and UDP port).
    #[arg(long)]
    target: SocketAddrV4,
    /// Packets per second, all kinds together.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long to send, in milliseconds.
    #[arg(long)]
    duration_ms: u64,
    /// The uid (and gid) to drop to before opening any socket.
    #[arg(long, default_value_t = 65534)]
    uid: u32,
    /// Also send through an unbound UDP socket and make TCP connection attempts.
    #[arg(long)]
    plain: bool,
    /// The target port of the TCP connection attempts (with --plain).
    #[arg(long, default_value_t = 9101)]
    tcp_port: u16,
}

/// What every UDP datagram and echo request of this program carries.
const PAYLOAD: &[u8] = b"killswitch-lab: a socket fixed to the physical interface";
/// How long a TCP connection attempt may take: a rejection (a reset, ICMP "administratively
/// prohibited", an unreachable route) comes at once; a drop would hang, and must not stall the
/// round.
const TCP_ATTEMPT: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok((sent, refused)) => {
            println!("sent {sent} refused {refused}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("killswitch-bound: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(u64, u64), String> {
    setgroups(&[]).map_err(|e| format!("dropping supplementary groups: {e}"))?;
    let gid = Gid::from_raw(args.uid);
    setresgid(gid, gid, gid).map_err(|e| format!("setting gid {gid}: {e}"))?;
    let uid = Uid::from_raw(args.uid);
    setresuid(uid, uid, uid).map_err(|e| format!("setting uid {uid}: {e}"))?;

    let index = nix::net::if_::if_nametoindex(args.interface.as_str())
        .map_err(|e| format!("{}: {e}", args.interface))?;
    let bound = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
    bind_to_device(bound.as_raw_fd(), &args.interface)?;
    let unicast_if = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
    // IP_UNICAST_IF takes the index in network byte order.
    setsockopt_u32(
        unicast_if.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_UNICAST_IF,
        index.to_be(),
    )?;
    let ping = ping_socket(&args.interface)?;
    for socket in [&bound, &unicast_if] {
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("non-blocking: {e}"))?;
    }

    let plain = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
    plain
        .set_nonblocking(true)
        .map_err(|e| format!("non-blocking: {e}"))?;
    let tcp_target =
        std::net::SocketAddr::from(SocketAddrV4::new(*args.target.ip(), args.tcp_port));
    let kinds = if args.plain { 5 } else { 3 };

    let interval = Duration::from_secs(1) / args.rate.max(1);
    let end = Instant::now() + Duration::from_millis(args.duration_ms);
    let mut next = Instant::now();
    let (mut sent, mut refused) = (0u64, 0u64);
    let payload = PAYLOAD;
    let echo = echo_request(payload);
    let ping_target = SocketAddrV4::new(*args.target.ip(), 0);
    while Instant::now() < end {
        let result = match sent % kinds {
            0 => bound.send_to(payload, args.target).map(drop),
            1 => unicast_if.send_to(payload, args.target).map(drop),
            3 => plain.send_to(payload, args.target).map(drop),
            4 => match std::net::TcpStream::connect_timeout(&tcp_target, TCP_ATTEMPT) {
                // A reset, from the target (no one listens there) or from a kill switch's
                // reject, looks the same here: counted as sent; the capture tells which it was.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                other => other.map(drop),
            },
            _ => match &ping {
                Some(ping) => send_to_raw(ping.as_raw_fd(), &echo, ping_target),
                None => bound.send_to(payload, args.target).map(drop),
            },
        };
        sent += 1;
        if result.is_err() {
            refused += 1;
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((sent, refused))
}

fn bind_to_device(fd: i32, interface: &str) -> Result<(), String> {
    // SAFETY: setsockopt with the name's bytes and their length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            interface.as_ptr().cast(),
            interface.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "SO_BINDTODEVICE {interface} (as an unprivileged user): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn setsockopt_u32(fd: i32, level: i32, option: i32, value: u32) -> Result<(), String> {
    // SAFETY: setsockopt with a live u32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "setsockopt {option}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A ping socket bound to `interface`, or `None` where `ping_group_range` does not admit us.
fn ping_socket(interface: &str) -> Result<Option<OwnedFd>, String> {
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => Ok(None),
            _ => Err(format!("ping socket: {error}")),
        };
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    bind_to_device(fd.as_raw_fd(), interface)?;
    Ok(Some(fd))
}

/// An ICMP echo request with `payload` (a ping socket fills in the identifier and checksum).
fn echo_request(payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![8u8, 0, 0, 0, 0, 0, 0, 1];
    packet.extend_from_slice(payload);
    packet
}

fn send_to_raw(fd: i32, bytes: &[u8], to: SocketAddrV4) -> std::io::Result<()> {
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sendto from a live buffer to a live, correctly sized address.
    let rc = unsafe {
        libc::sendto(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
