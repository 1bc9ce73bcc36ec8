//! The refused packets the kernel logs to nfnetlink_log group [`NFLOG_GROUP`] (the refusing
//! rules' `log group` statement, rate-limited there): a socket bound to the group, and the
//! parsing of each log message into a [`BlockedPacket`].
//!
//! The group is configured to copy at most [`LOG_SNAPLEN`] bytes of each packet, as the rule
//! itself asks: the IP header and the start of the transport header, never a payload. The
//! sender's uid comes with every message whose packet has a local socket (nfnetlink_log adds
//! NFULA_UID on its own; no flag asks for it). Each network namespace has its own groups: the
//! socket sees the packets of the namespace it was opened in.

use killswitch_policy::{LOG_SNAPLEN, NFLOG_GROUP};
use killswitch_types::{BlockReason, BlockedPacket};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_UID: u16 = 11;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// A socket bound to nfnetlink_log group [`NFLOG_GROUP`] in the calling thread's namespace.
#[derive(Debug)]
pub struct NflogSocket {
    fd: OwnedFd,
    buffer: Vec<u8>,
}

impl NflogSocket {
    /// Opens the socket and binds the group, copying [`LOG_SNAPLEN`] bytes of each packet. Fails
    /// when another program listens on the group already (`EBUSY`), or without CAP_NET_ADMIN.
    pub fn bind() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned from here on.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl is valid; bind copies it.
        let rc = unsafe {
            let mut address: libc::sockaddr_nl = std::mem::zeroed();
            address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = NflogSocket {
            fd,
            buffer: vec![0; 64 * 1024],
        };
        socket.set_receive_timeout(Some(Duration::from_secs(5)))?;
        socket.configure(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])?;
        // struct nfulnl_msg_config_mode: __be32 copy_range; __u8 copy_mode; __u8 pad.
        let mut mode = LOG_SNAPLEN.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        socket.configure(NFULA_CFG_MODE, &mode)?;
        socket.set_receive_timeout(None)?;
        Ok(socket)
    }

    /// How long [`NflogSocket::receive`] waits (`None`: for ever, the default).
    pub fn set_receive_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.unwrap_or_default();
        let value = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        // SAFETY: setsockopt with a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&value as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends one NFULNL_MSG_CONFIG message for the group with one attribute, and waits for the
    /// kernel's acknowledgement.
    fn configure(&self, attribute: u16, value: &[u8]) -> io::Result<()> {
        let attr_len = 4 + value.len();
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + attr_len.next_multiple_of(4);
        let mut message = Vec::with_capacity(len);
        message.extend_from_slice(&(len as u32).to_ne_bytes());
        message.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
        message.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
        message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        message.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        // struct nfgenmsg: family (unspecified), version 0, the group (big endian).
        message.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        message.extend_from_slice(&NFLOG_GROUP.to_be_bytes());
        message.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        message.extend_from_slice(&attribute.to_ne_bytes());
        message.extend_from_slice(value);
        message.resize(len, 0);
        // SAFETY: send(2) of a live buffer.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = [0u8; 1024];
        // SAFETY: recv(2) into a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                answer.as_mut_ptr().cast(),
                answer.len(),
                0,
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        // An NLMSG_ERROR message: header, then the error code (0 for an acknowledgement).
        let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        let code = answer
            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        match (n >= NLMSG_HDRLEN + 4, kind, code) {
            (true, Some(k), Some(0)) if k == libc::NLMSG_ERROR as u16 => Ok(()),
            (true, Some(k), Some(code)) if k == libc::NLMSG_ERROR as u16 => {
                Err(io::Error::from_raw_os_error(-code))
            }
            _ => Err(io::Error::other(
                "nfnetlink_log answered its configuration with something else than an acknowledgement",
            )),
        }
    }

    /// Waits for the next datagram of log messages and returns the refused packets it holds
    /// (several when the kernel batched them; none for messages that are not ours to read).
    /// `ENOBUFS` (the kernel dropped messages this reader was too slow for) is an error the
    /// caller may continue after. Interfaces are named as the calling thread's namespace names
    /// them (the daemon's is the socket's).
    pub fn receive(&mut self) -> io::Result<Vec<BlockedPacket>> {
        // SAFETY: recv(2) into a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buffer.as_mut_ptr().cast(),
                self.buffer.len(),
                0,
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(parse_datagram(&self.buffer[..n], at_unix, &interface_name))
    }
}

fn interface_name(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes, NUL-terminated, into `name`.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success `name` holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The refused packets in one datagram of nfnetlink_log messages; anything malformed, foreign
/// (another prefix) or truncated is skipped, never trusted. `name_of` names an interface index.
pub fn parse_datagram(
    datagram: &[u8],
    at_unix: u64,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> Vec<BlockedPacket> {
    let mut packets = Vec::new();
    let mut offset = 0;
    while let Some(len) = u32_at(datagram, offset) {
        let len = len as usize;
        let Some(message) = datagram
            .get(offset..offset + len)
            .filter(|_| len >= NLMSG_HDRLEN)
        else {
            break;
        };
        if u16_at(message, 4) == Some((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
            && let Some(packet) = parse_message(message, at_unix, name_of)
        {
            packets.push(packet);
        }
        offset += len.next_multiple_of(4);
    }
    packets
}

fn parse_message(
    message: &[u8],
    at_unix: u64,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> Option<BlockedPacket> {
    let (mut prefix, mut payload, mut uid, mut indev, mut outdev) = (None, None, None, None, None);
    let mut offset = NLMSG_HDRLEN + NFGENMSG_LEN;
    while let (Some(len), Some(kind)) = (u16_at(message, offset), u16_at(message, offset + 2)) {
        let len = usize::from(len);
        let value = message.get(offset + 4..offset + len.max(4))?;
        match kind & NLA_TYPE_MASK {
            NFULA_PREFIX => prefix = Some(value),
            NFULA_PAYLOAD => payload = Some(value),
            NFULA_UID => uid = be32(value),
            NFULA_IFINDEX_INDEV => indev = be32(value),
            NFULA_IFINDEX_OUTDEV => outdev = be32(value),
            _ => {}
        }
        if len < 4 {
            break;
        }
        offset += len.next_multiple_of(4);
    }
    let prefix = std::str::from_utf8(prefix?).ok()?.trim_end_matches('\0');
    let reason = BlockReason::from_name(prefix.strip_prefix("killswitch ")?)?;
    let (family, protocol, destination, port) = parse_headers(payload?)?;
    let interface = if reason == BlockReason::Inbound {
        indev
    } else {
        outdev.or(indev)
    };
    Some(BlockedPacket {
        at_unix,
        reason: reason.name().to_owned(),
        family: family.to_owned(),
        protocol,
        destination,
        port,
        interface: interface.and_then(name_of),
        uid,
    })
}

/// Family, protocol, destination address and (TCP, UDP) port from the first bytes of an IP
/// packet.
fn parse_headers(packet: &[u8]) -> Option<(&'static str, String, String, Option<u16>)> {
    let (family, protocol, destination, transport) = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet.first()? & 0x0f) * 4;
            let destination: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                "ipv4",
                *packet.get(9)?,
                Ipv4Addr::from(destination).to_string(),
                packet.get(header_len..),
            )
        }
        6 => {
            let destination: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                "ipv6",
                *packet.get(6)?,
                Ipv6Addr::from(destination).to_string(),
                packet.get(40..),
            )
        }
        _ => return None,
    };
    let port = match protocol {
        6 | 17 => transport
            .and_then(|t| t.get(2..4))
            .map(|p| u16::from_be_bytes([p[0], p[1]])),
        _ => None,
    };
    let protocol = match protocol {
        0 => "hop-by-hop".to_owned(),
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "ipv6-icmp".to_owned(),
        other => other.to_string(),
    };
    Some((family, protocol, destination, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn message(attributes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attributes.concat();
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + body.len();
        let mut m = (len as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0]);
        m.extend_from_slice(&NFLOG_GROUP.to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    fn udp_v4(destination: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2];
        p.extend_from_slice(&destination);
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p
    }

    #[test]
    fn a_logged_udp_packet_reads_as_its_reason_destination_interface_and_uid() {
        let datagram = message(&[
            attribute(NFULA_PREFIX, b"killswitch dns\0"),
            attribute(NFULA_IFINDEX_OUTDEV, &7u32.to_be_bytes()),
            attribute(NFULA_UID, &65534u32.to_be_bytes()),
            attribute(NFULA_PAYLOAD, &udp_v4([192, 0, 2, 53], 53)),
        ]);
        let packets = parse_datagram(&datagram, 5, &|i| (i == 7).then(|| "eth0".to_owned()));
        assert_eq!(
            packets,
            vec![BlockedPacket {
                at_unix: 5,
                reason: "dns".to_owned(),
                family: "ipv4".to_owned(),
                protocol: "udp".to_owned(),
                destination: "192.0.2.53".to_owned(),
                port: Some(53),
                interface: Some("eth0".to_owned()),
                uid: Some(65534),
            }]
        );
    }

    #[test]
    fn an_ipv6_packet_without_socket_has_no_uid() {
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 6, 64];
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets());
        v6.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        let datagram = message(&[
            attribute(NFULA_PREFIX, b"killswitch ipv6\0"),
            attribute(NFULA_PAYLOAD, &v6),
        ]);
        let packets = parse_datagram(&datagram, 0, &|_| None);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].destination, "2001:db8::1");
        assert_eq!(packets[0].port, Some(443));
        assert_eq!(packets[0].protocol, "tcp");
        assert_eq!(packets[0].uid, None);
    }

    #[test]
    fn foreign_truncated_and_garbage_messages_are_skipped() {
        let foreign = message(&[
            attribute(NFULA_PREFIX, b"someone else\0"),
            attribute(NFULA_PAYLOAD, &udp_v4([192, 0, 2, 1], 9)),
        ]);
        assert!(parse_datagram(&foreign, 0, &|_| None).is_empty());
        let mut truncated = message(&[
            attribute(NFULA_PREFIX, b"killswitch dns\0"),
            attribute(NFULA_PAYLOAD, &udp_v4([192, 0, 2, 1], 9)),
        ]);
        truncated.truncate(truncated.len() - 10);
        assert!(parse_datagram(&truncated, 0, &|_| None).is_empty());
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = parse_datagram(&garbage, 0, &|_| None);
        }
        // A zero-length attribute must not loop forever.
        let mut zero = message(&[]);
        zero.extend_from_slice(&[0, 0, 0, 0]);
        let len = zero.len() as u32;
        zero[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(parse_datagram(&zero, 0, &|_| None).is_empty());
    }
}
