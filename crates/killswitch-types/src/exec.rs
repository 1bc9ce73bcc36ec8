//! `killswitch exec` on the wire: what the CLI asks for, what the daemon answers while the
//! program runs, and how `status` lists live exec namespaces.
//!
//! The exchange on one connection: the CLI sends [`crate::ipc::Request::Exec`]; the daemon asks
//! for the terminal ([`crate::ipc::ServerMessage::ExecSendFds`]), and the CLI sends its stdin,
//! stdout and stderr as `SCM_RIGHTS` with one byte ([`FDS_BYTE`]); the daemon answers
//! [`crate::ipc::ServerMessage::ExecStarted`], then, while the program runs, the CLI may send
//! [`crate::ipc::Request::ExecSignal`] lines (Ctrl-C and friends); at the end the daemon sends
//! [`crate::ipc::ServerMessage::ExecExited`] and closes. The caller's identity is never part of
//! the request: the daemon takes it from the socket (`SO_PEERCRED`).

pub use crate::OnDrop;
use serde::{Deserialize, Serialize};

/// The byte that carries the CLI's three file descriptors (`SCM_RIGHTS` needs at least one byte
/// of data to travel with).
pub const FDS_BYTE: u8 = b'F';

/// The signals the CLI forwards to the program: SIGHUP, SIGINT, SIGQUIT, SIGTERM. Any other
/// number in [`crate::ipc::Request::ExecSignal`] is refused.
pub const FORWARDED_SIGNALS: [i32; 4] = [1, 2, 3, 15];

/// Bytes that are usually text: a string when they are UTF-8, a list of numbers when not. Program
/// arguments, environment entries and paths are bytes to the kernel, and must reach the program
/// exactly as the user gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    /// Valid UTF-8.
    Text(String),
    /// Anything else.
    Raw(Vec<u8>),
}

impl Bytes {
    /// These bytes, as text when they are UTF-8.
    pub fn new(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Bytes::Text(text),
            Err(e) => Bytes::Raw(e.into_bytes()),
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Bytes::Text(text) => text.as_bytes(),
            Bytes::Raw(raw) => raw,
        }
    }

    /// For messages: the text, with anything not UTF-8 replaced.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

/// `killswitch exec [--] CMD [ARGS...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments (`argv[0]` is looked up in the caller's `PATH`).
    pub argv: Vec<Bytes>,
    /// The caller's environment, `NAME=value` each, exactly as the program gets it.
    pub env: Vec<Bytes>,
    /// The caller's working directory, entered as the caller.
    pub cwd: Bytes,
    /// What happens to the program when the tunnel is lost (besides its traffic being refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_drop: Option<OnDrop>,
}

/// A live `killswitch exec` namespace, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecScopeStatus {
    /// The daemon's number for it (`ksx<id>` is its interface).
    pub id: u32,
    /// The uid the program runs as.
    pub uid: u32,
    /// That user's name, when the user database has one.
    #[serde(default)]
    pub user: Option<String>,
    /// The program as given (`argv[0]`).
    pub program: String,
    /// The program's process id (in the daemon's pid namespace).
    pub pid: u32,
    /// The host side of the namespace's veth pair.
    pub interface: crate::InterfaceName,
    /// The namespace's subnet.
    pub subnet: ipnet::Ipv4Net,
}

/// How the program ended, as a shell reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// The exit status a shell would give: the program's exit code, or 128 + the signal that
    /// killed it.
    pub code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{Request, RequestEnvelope, decode_request, encode_line};

    #[test]
    fn an_exec_request_round_trips_with_bytes_that_are_not_utf8() {
        let request = Request::Exec(ExecRequest {
            argv: vec![Bytes::new(b"cat".to_vec()), Bytes::new(vec![0x66, 0xff])],
            env: vec![Bytes::new(b"PATH=/usr/bin".to_vec())],
            cwd: Bytes::new(b"/home/alice".to_vec()),
            on_drop: Some(OnDrop::Freeze),
        });
        let line = encode_line(&RequestEnvelope::new(request.clone())).expect("encodes");
        // Text stays text on the wire; other bytes are numbers.
        assert!(line.contains(r#""command":"exec""#), "{line}");
        assert!(
            line.contains(r#""cat""#) && line.contains("[102,255]"),
            "{line}"
        );
        assert!(line.contains(r#""on_drop":"freeze""#), "{line}");
        assert_eq!(decode_request(line.trim_end()).expect("decodes"), request);
        assert!(!request.is_privileged());
        let signal = decode_request(
            &encode_line(&RequestEnvelope::new(Request::ExecSignal { signal: 2 }))
                .expect("encodes"),
        )
        .expect("decodes");
        assert_eq!(signal, Request::ExecSignal { signal: 2 });
    }
}
