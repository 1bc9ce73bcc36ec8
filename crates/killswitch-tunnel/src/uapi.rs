//! The cross-platform WireGuard configuration protocol ("UAPI"): text over a Unix stream, spoken
//! by userspace implementations (boringtun, wireguard-go) and by `wg`. killswitch uses it for its
//! embedded userspace backend.
//!
//! Two transports carry the same exchange: the well-known socket
//! `/var/run/wireguard/<interface>.sock` ([`configure`], [`stats`]: one connection per request,
//! as `wg` does), and a connected stream that only its owner holds ([`Channel`]: the daemon's
//! embedded device gets one end of a socket pair, so no path is shared with other processes or
//! other network namespaces, and nothing else can reconfigure the device).

use crate::config::TunnelConfig;
use crate::key::PublicKey;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Where userspace implementations put their sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// What a device reports about its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub public_key: PublicKey,
    /// When the last handshake completed, if one has.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

/// Why the UAPI exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The socket could not be reached or the exchange broke off.
    #[error("talking to {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The device refused the configuration.
    #[error("the device refused the configuration (errno {0})")]
    Refused(i32),
    /// The answer could not be read.
    #[error("unreadable answer from the device: {0}")]
    Protocol(String),
}

/// The socket of `interface`.
pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{interface}.sock"))
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn connect(path: &Path) -> Result<UnixStream, UapiError> {
    let io = |source| UapiError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    Ok(stream)
}

/// The `set=1` request for `config`: the device's key, port and mark, and exactly one peer (any
/// other peer is removed). Built in a buffer that is wiped when dropped: it holds the keys.
fn set_request(config: &TunnelConfig, fwmark: u32) -> Zeroizing<String> {
    let mut request = Zeroizing::new(String::with_capacity(512));
    let mut line = |s: String| {
        request.push_str(&s);
        request.push('\n');
    };
    line("set=1".to_owned());
    line(format!("private_key={}", config.private_key.hex()));
    if let Some(port) = config.listen_port {
        line(format!("listen_port={port}"));
    }
    line(format!("fwmark={fwmark}"));
    line("replace_peers=true".to_owned());
    let peer = &config.peer;
    line(format!("public_key={}", peer.public_key.hex()));
    if let Some(psk) = &peer.preshared_key {
        line(format!("preshared_key={}", psk.hex()));
    }
    line(format!("endpoint={}", peer.endpoint));
    line(format!(
        "persistent_keepalive_interval={}",
        peer.persistent_keepalive.unwrap_or(0)
    ));
    line("replace_allowed_ips=true".to_owned());
    for net in &peer.allowed_ips {
        line(format!("allowed_ip={net}"));
    }
    request.push('\n');
    request
}

/// Configures the device behind `path`.
pub fn configure(path: &Path, config: &TunnelConfig, fwmark: u32) -> Result<(), UapiError> {
    let stream = connect(path)?;
    exchange_set(&stream, path, config, fwmark)
}

/// Reads the device's peers' statistics.
pub fn stats(path: &Path) -> Result<Vec<PeerStats>, UapiError> {
    let stream = connect(path)?;
    exchange_get(&stream, path)
}

/// What a device tells about itself that a guard needs: its fwmark and its peers' endpoints.
/// Keys are not kept (the private key is dropped as the answer is read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The mark the device puts on its own packets; `None` when it sets none.
    pub fwmark: Option<u32>,
    /// How many peers the device has.
    pub peers: usize,
    /// The endpoints of the peers that have one (a peer waiting to be contacted has none), in the
    /// device's order.
    pub endpoints: Vec<std::net::SocketAddr>,
}

/// Whether the socket at `path` (the control socket of the userspace WireGuard behind it) was
/// made in this process's network namespace. The sockets' directory is shared by every namespace,
/// so a socket named after an interface of ours may serve another namespace's device of the same
/// name: asking it, or setting its mark, would read or change a device that is not ours.
///
/// A Unix socket belongs to the namespace it was made in, and `/proc/self/net/unix` lists only
/// those of this one, with the path each is bound to. (The peer's credentials would not do: a
/// daemonising wireguard-go binds the socket before it forks, and the binding process is gone.)
pub fn serves_this_namespace(path: &Path) -> Result<bool, UapiError> {
    let io = |source| UapiError::Io {
        path: path.to_owned(),
        source,
    };
    let wanted = std::fs::canonicalize(path).map_err(io)?;
    let table = std::fs::read_to_string("/proc/self/net/unix").map_err(io)?;
    Ok(bound_paths(&table)
        .filter(|listed| listed.file_name() == wanted.file_name())
        .any(|listed| std::fs::canonicalize(listed).is_ok_and(|l| l == wanted)))
}

/// The paths of the sockets in a `/proc/net/unix` table that are bound to one (abstract ones,
/// `@name`, and unbound ones have none).
fn bound_paths(table: &str) -> impl Iterator<Item = &Path> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter(|path| path.starts_with('/'))
        .map(Path::new)
}

/// Reads `fwmark` and the peers' endpoints from the device behind `path` (`get=1`).
pub fn device(path: &Path) -> Result<DeviceInfo, UapiError> {
    let stream = connect(path)?;
    parse_device(&exchange(&stream, path, GET, false)?)
}

/// Sets only the device's fwmark (`set=1`, `fwmark=N`): its key and peers are left as they are.
pub fn set_fwmark(path: &Path, fwmark: u32) -> Result<(), UapiError> {
    let stream = connect(path)?;
    let request = format!("set=1\nfwmark={fwmark}\n\n");
    exchange(&stream, path, request.as_bytes(), true).map(drop)
}

/// The device's fwmark and peer endpoints from a `get` answer. wireguard-go and boringtun leave
/// `fwmark` out when it is 0; the kernel's `wg` writes `fwmark=0`: both mean none.
fn parse_device(pairs: &[(String, String)]) -> Result<DeviceInfo, UapiError> {
    let mut info = DeviceInfo::default();
    for (key, value) in pairs {
        match key.as_str() {
            "fwmark" => {
                let mark = value
                    .parse::<u32>()
                    .map_err(|_| UapiError::Protocol(format!("bad fwmark: {value:?}")))?;
                info.fwmark = (mark != 0).then_some(mark);
            }
            "public_key" => info.peers += 1,
            "endpoint" if info.peers > 0 => {
                let endpoint = value
                    .parse::<std::net::SocketAddr>()
                    .map_err(|_| UapiError::Protocol(format!("bad endpoint: {value:?}")))?;
                info.endpoints.push(endpoint);
            }
            _ => {}
        }
    }
    Ok(info)
}

/// A private UAPI connection to one device: the daemon's end of a socket pair whose other end the
/// device reads requests from. Requests and answers alternate on it; each answer ends with a
/// blank line, so the stream stays usable for the next request.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    /// How the channel is named in errors.
    label: PathBuf,
}

impl Channel {
    /// A connected pair: the channel, and the end to hand to the device. `label` names the
    /// device in errors.
    pub fn pair(label: &str) -> std::io::Result<(Channel, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_read_timeout(Some(TIMEOUT))?;
        ours.set_write_timeout(Some(TIMEOUT))?;
        Ok((
            Channel {
                stream: ours,
                label: PathBuf::from(format!("the UAPI channel of {label}")),
            },
            theirs,
        ))
    }

    /// Configures the device.
    pub fn configure(&self, config: &TunnelConfig, fwmark: u32) -> Result<(), UapiError> {
        exchange_set(&self.stream, &self.label, config, fwmark)
    }

    /// Reads the device's peers' statistics.
    pub fn stats(&self) -> Result<Vec<PeerStats>, UapiError> {
        exchange_get(&self.stream, &self.label)
    }
}

fn exchange_set(
    stream: &UnixStream,
    label: &Path,
    config: &TunnelConfig,
    fwmark: u32,
) -> Result<(), UapiError> {
    let request = set_request(config, fwmark);
    exchange(stream, label, request.as_bytes(), true).map(drop)
}

fn exchange_get(stream: &UnixStream, label: &Path) -> Result<Vec<PeerStats>, UapiError> {
    parse_stats(&exchange(stream, label, GET, false)?, SystemTime::now())
}

/// The `get` request. One write, as for every request: boringtun reads `get=1` and ignores the
/// blank line, which must not be left behind to be read as a next (empty, refused) request.
const GET: &[u8] = b"get=1\n\n";

/// Sends `request` in one write (a device that reads it with a buffered reader must find all of
/// it) and reads the answer. An `errno` other than 0 is the device's refusal; a `set` must answer
/// one (`errno_required`), a `get` may leave it out.
fn exchange(
    mut stream: &UnixStream,
    label: &Path,
    request: &[u8],
    errno_required: bool,
) -> Result<Vec<(String, String)>, UapiError> {
    stream.write_all(request).map_err(|source| UapiError::Io {
        path: label.to_owned(),
        source,
    })?;
    let answer = read_answer(label, stream)?;
    match answer.iter().find_map(|(k, v)| (k == "errno").then_some(v)) {
        Some(v) if v != "0" => Err(UapiError::Refused(v.parse().unwrap_or(-1))),
        None if errno_required => Err(UapiError::Protocol("no errno in the answer".to_owned())),
        _ => Ok(answer),
    }
}

/// Reads one answer: `key=value` lines up to the blank line that ends it (or the end of the
/// stream). Reads one byte at a time, so that nothing of a later answer is consumed; answers are
/// small and come twice a second at most.
fn read_answer(path: &Path, stream: &UnixStream) -> Result<Vec<(String, String)>, UapiError> {
    let mut pairs = Vec::new();
    let mut reader = BufReader::with_capacity(1, stream);
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|source| UapiError::Io {
                path: path.to_owned(),
                source,
            })?;
        // Answers hold the device's private key; the line buffer is wiped either way.
        let line = Zeroizing::new(line);
        if n == 0 {
            break;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            break;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| UapiError::Protocol(format!("line without `=`: {line:?}")))?;
        // The answer to `get` includes the private key: never keep it.
        if key == "private_key" || key == "preshared_key" {
            continue;
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Epoch seconds below this are "seconds ago": boringtun reports the time since the last
/// handshake where wireguard-go and the kernel report the time of it.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

fn parse_stats(pairs: &[(String, String)], now: SystemTime) -> Result<Vec<PeerStats>, UapiError> {
    let mut peers: Vec<PeerStats> = Vec::new();
    let mut seconds = 0;
    let number = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| UapiError::Protocol(format!("not a number: {v:?}")))
    };
    for (key, value) in pairs {
        if key == "public_key" {
            let public_key = PublicKey::from_hex(value)
                .ok_or_else(|| UapiError::Protocol("bad public key".to_owned()))?;
            seconds = 0;
            peers.push(PeerStats {
                public_key,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
            });
            continue;
        }
        let Some(peer) = peers.last_mut() else {
            continue;
        };
        match key.as_str() {
            // The seconds come first; the nanoseconds refine them. Both dialects send both.
            "last_handshake_time_sec" => {
                seconds = number(value)?;
                peer.last_handshake = handshake_time(seconds, 0, now);
            }
            "last_handshake_time_nsec" => {
                let nanos = u32::try_from(number(value)?)
                    .ok()
                    .filter(|n| *n < 1_000_000_000)
                    .ok_or_else(|| UapiError::Protocol(format!("bad nanoseconds: {value:?}")))?;
                peer.last_handshake = handshake_time(seconds, nanos, now);
            }
            "rx_bytes" => peer.rx_bytes = number(value)?,
            "tx_bytes" => peer.tx_bytes = number(value)?,
            _ => {}
        }
    }
    Ok(peers)
}

/// A handshake time from the protocol's seconds and nanoseconds, in either dialect.
fn handshake_time(seconds: u64, nanos: u32, now: SystemTime) -> Option<SystemTime> {
    let value = Duration::new(seconds, nanos);
    match seconds {
        0 if nanos == 0 => None,
        s if s >= EPOCH_THRESHOLD => Some(SystemTime::UNIX_EPOCH + value),
        _ => now.checked_sub(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const CONFIG: &str = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.64.0.2/32\nListenPort = 51000\n\
        [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n";

    #[test]
    fn set_request_is_the_protocol() {
        let config = parse("t.conf", CONFIG).expect("valid");
        let request = set_request(&config, 0xca6c);
        let lines: Vec<&str> = request.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], "set=1");
        assert!(
            lines[1].starts_with("private_key=c809f3e5")
                && lines[1].len() == "private_key=".len() + 64
        );
        assert_eq!(
            &lines[2..5],
            ["listen_port=51000", "fwmark=51820", "replace_peers=true"]
        );
        assert!(lines.contains(&"endpoint=198.51.100.1:51820"));
        assert!(lines.contains(&"persistent_keepalive_interval=25"));
        assert!(lines.ends_with(&[
            "replace_allowed_ips=true",
            "allowed_ip=0.0.0.0/0",
            "allowed_ip=::/0"
        ]));
        assert!(request.ends_with("\n\n"), "a blank line ends the request");
    }

    #[test]
    fn stats_in_both_dialects() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let key = "c4b20103".to_owned() + &"00".repeat(28);
        let answer = vec![
            pair("listen_port", "51000"),
            pair("public_key", &key),
            pair("last_handshake_time_sec", "5"),
            pair("rx_bytes", "1000"),
            pair("tx_bytes", "2000"),
            pair("public_key", &key),
            pair("last_handshake_time_sec", "1799999990"),
            pair("public_key", &key),
            pair("last_handshake_time_sec", "0"),
            pair("errno", "0"),
        ];
        let peers = parse_stats(&answer, now).expect("parses");
        assert_eq!(peers.len(), 3);
        assert_eq!(
            peers[0].last_handshake,
            Some(now - Duration::from_secs(5)),
            "boringtun: seconds ago"
        );
        assert_eq!((peers[0].rx_bytes, peers[0].tx_bytes), (1000, 2000));
        assert_eq!(
            peers[1].last_handshake,
            Some(now - Duration::from_secs(10)),
            "wireguard-go: epoch"
        );
        assert_eq!(peers[2].last_handshake, None, "never");
    }

    #[test]
    fn a_wireguard_go_answer_with_nanoseconds_and_a_peer_never_met() {
        // As wireguard-go answers `get=1` (keys in hex, the private key already dropped).
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let key = "c4b20103".to_owned() + &"00".repeat(28);
        let answer = vec![
            pair("listen_port", "51000"),
            pair("fwmark", "51820"),
            pair("public_key", &key),
            pair("endpoint", "198.51.100.1:51820"),
            pair("last_handshake_time_sec", "1799999988"),
            pair("last_handshake_time_nsec", "250000000"),
            pair("tx_bytes", "92"),
            pair("rx_bytes", "148"),
            pair("persistent_keepalive_interval", "0"),
            pair("allowed_ip", "0.0.0.0/0"),
            pair("public_key", &key),
            pair("last_handshake_time_sec", "0"),
            pair("last_handshake_time_nsec", "0"),
            pair("protocol_version", "1"),
            pair("errno", "0"),
        ];
        let peers = parse_stats(&answer, now).expect("parses");
        assert_eq!(
            peers[0].last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_799_999_988, 250_000_000))
        );
        assert_eq!((peers[0].rx_bytes, peers[0].tx_bytes), (148, 92));
        assert_eq!(peers[1].last_handshake, None, "never met");
        let bad = vec![
            pair("public_key", &key),
            pair("last_handshake_time_sec", "soon"),
        ];
        assert!(parse_stats(&bad, now).is_err(), "a bad number is an error");
        let bad_nanos = vec![
            pair("public_key", &key),
            pair("last_handshake_time_sec", "1799999988"),
            pair("last_handshake_time_nsec", "1000000000"),
        ];
        assert!(parse_stats(&bad_nanos, now).is_err());
    }

    #[test]
    fn device_info_from_a_get_answer() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let key = "c4b20103".to_owned() + &"00".repeat(28);
        let answer = vec![
            pair("listen_port", "51000"),
            pair("fwmark", "51820"),
            pair("public_key", &key),
            pair("endpoint", "198.51.100.1:51820"),
            pair("allowed_ip", "0.0.0.0/0"),
            pair("public_key", &key),
            pair("allowed_ip", "10.0.0.0/8"),
            pair("public_key", &key),
            pair("endpoint", "[2001:db8::1]:443"),
            pair("errno", "0"),
        ];
        let info = parse_device(&answer).expect("parses");
        assert_eq!(info.fwmark, Some(0xca6c));
        assert_eq!(info.peers, 3, "the peer without an endpoint is counted");
        assert_eq!(
            info.endpoints,
            [
                "198.51.100.1:51820".parse().expect("literal"),
                "[2001:db8::1]:443".parse().expect("literal")
            ]
        );
        let unmarked = parse_device(&[pair("fwmark", "0")]).expect("parses");
        assert_eq!(unmarked.fwmark, None, "0 is no mark");
        assert_eq!(parse_device(&[]).expect("parses").fwmark, None);
        assert!(parse_device(&[pair("public_key", &key), pair("endpoint", "nowhere")]).is_err());
    }

    #[test]
    fn bound_paths_are_read_from_the_namespaces_unix_table() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12345 /var/run/wireguard/wg0.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12346 @/tmp/.X11-unix/X0\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 12347\n";
        let paths: Vec<&Path> = bound_paths(table).collect();
        assert_eq!(paths, [Path::new("/var/run/wireguard/wg0.sock")]);
    }
}
