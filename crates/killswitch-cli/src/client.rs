//! Talking to the daemon: one request line, one reply line (or a stream of events).
//!
//! Replies are read leniently (see [`killswitch_types::ipc`]): fields this build does not know are
//! ignored when the status is parsed for display, but kept for `--json`, which prints the status
//! as the daemon sent it (with any field an older daemon left out filled in with its default).

use killswitch_types::ipc::{
    self, IpcError, Request, RequestEnvelope, RulesCheck, ServerEnvelope, ServerMessage, Status,
};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long a request may take. A change applies the firewall (milliseconds); this bound only
/// keeps a wedged daemon from hanging the shell.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The daemon answered with an error.
    Refused(IpcError),
    /// The socket could not be reached.
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The daemon's answer was not understood, or it hung up.
    Protocol(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(e) => write!(f, "{e}"),
            Failure::Unreachable { socket, error } => write!(
                f,
                "cannot reach the daemon at {}: {error} (is killswitchd running? --socket or KILLSWITCH_SOCKET choose another socket)",
                socket.display()
            ),
            Failure::Protocol(why) => write!(f, "unexpected answer from the daemon: {why}"),
        }
    }
}

impl Failure {
    /// The failure as one JSON object, for `--json`.
    pub(crate) fn to_json(&self) -> Option<String> {
        let (kind, message) = match self {
            Failure::Refused(e) => (serde_json::to_value(e.kind).ok()?, e.message.clone()),
            Failure::Unreachable { .. } => {
                (serde_json::Value::from("unreachable"), self.to_string())
            }
            Failure::Protocol(_) => (serde_json::Value::from("protocol"), self.to_string()),
        };
        Some(serde_json::json!({ "error": { "kind": kind, "message": message } }).to_string())
    }
}

/// A status from the daemon: parsed, and as sent.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// What this build understands of it.
    pub(crate) status: Status,
    /// Every field the daemon sent, including those of a newer daemon that this build does not
    /// know, and those of this build an older daemon did not send (with their defaults).
    pub(crate) json: serde_json::Value,
}

impl Received {
    fn new(status: Status, sent: Option<serde_json::Value>) -> Self {
        let parsed = serde_json::to_value(&status).unwrap_or(serde_json::Value::Null);
        let json = match sent {
            Some(mut sent) => {
                fill_missing(&mut sent, parsed);
                sent
            }
            None => parsed,
        };
        Received { status, json }
    }
}

/// Adds to `sent` every field of `parsed` it lacks, in nested objects too; what `sent` holds wins.
fn fill_missing(sent: &mut serde_json::Value, parsed: serde_json::Value) {
    if let (serde_json::Value::Object(sent), serde_json::Value::Object(parsed)) = (sent, parsed) {
        for (key, value) in parsed {
            match sent.get_mut(&key) {
                Some(inner) => fill_missing(inner, value),
                None => {
                    sent.insert(key, value);
                }
            }
        }
    }
}

/// A client of one daemon socket.
#[derive(Debug)]
pub(crate) struct Client {
    socket: PathBuf,
    /// How long a reply may take.
    timeout: Duration,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Client {
            socket,
            timeout: REPLY_TIMEOUT,
        }
    }

    /// The same client, waiting at most `timeout` for each reply.
    pub(crate) fn with_timeout(self, timeout: Duration) -> Self {
        Client { timeout, ..self }
    }

    fn connect(&self, request: Request) -> Result<BufReader<UnixStream>, Failure> {
        let unreachable = |error| Failure::Unreachable {
            socket: self.socket.clone(),
            error,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        let line = ipc::encode_line(&RequestEnvelope::new(request))
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        if let Err(error) = stream.write_all(line.as_bytes()) {
            // The daemon may have refused the connection before reading anything (too many
            // connections) and said why before closing it: that reason beats "broken pipe".
            let mut reader = BufReader::new(stream);
            if reader
                .get_ref()
                .set_read_timeout(Some(self.timeout))
                .is_ok()
                && let Ok((ServerMessage::Error { error }, _)) = read_message(&mut reader)
            {
                return Err(Failure::Refused(error));
            }
            return Err(unreachable(error));
        }
        Ok(BufReader::new(stream))
    }

    /// Sends `request` and returns the status the daemon answers with.
    pub(crate) fn request(&self, request: Request) -> Result<Received, Failure> {
        let mut reader = self.connect(request)?;
        reader
            .get_ref()
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        loop {
            let (message, sent) = read_message(&mut reader)?;
            match message {
                ServerMessage::Ok { status } => return Ok(Received::new(status, sent)),
                ServerMessage::Error { error } => return Err(Failure::Refused(error)),
                ServerMessage::Event { .. } | ServerMessage::Verified { .. } => {
                    return Err(Failure::Protocol(
                        "an event or a verification instead of a reply".to_owned(),
                    ));
                }
                // A message type of a newer daemon: not the reply; the reply follows.
                ServerMessage::Unknown
                | ServerMessage::ExecSendFds
                | ServerMessage::ExecStarted { .. }
                | ServerMessage::ExecExited { .. } => {}
            }
        }
    }

    /// Asks the daemon to compare the kernel's rules with its intent (`verify`): the status and
    /// the comparison. A daemon too old to know the request says so in its refusal.
    pub(crate) fn verify(&self) -> Result<(Status, RulesCheck), Failure> {
        let mut reader = self.connect(Request::Verify)?;
        reader
            .get_ref()
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        loop {
            let (message, _) = read_message(&mut reader)?;
            match message {
                ServerMessage::Verified { status, rules } => return Ok((status, rules)),
                ServerMessage::Error { error } => return Err(Failure::Refused(error)),
                ServerMessage::Ok { .. } | ServerMessage::Event { .. } => {
                    return Err(Failure::Protocol(
                        "a status instead of a verification".to_owned(),
                    ));
                }
                ServerMessage::Unknown
                | ServerMessage::ExecSendFds
                | ServerMessage::ExecStarted { .. }
                | ServerMessage::ExecExited { .. } => {}
            }
        }
    }

    /// Subscribes and calls `on_status(status, is_first)` for the current status and every change,
    /// until the daemon goes away.
    pub(crate) fn subscribe(
        &self,
        mut on_status: impl FnMut(Received, bool),
    ) -> Result<(), Failure> {
        let mut reader = self.connect(Request::Subscribe)?;
        let mut first = true;
        loop {
            let (message, sent) = match read_message(&mut reader) {
                Ok(read) => read,
                // The end `events` is documented to have: the daemon stopped (or restarts). Said
                // as such, with the exit status of an unreachable daemon, not as a garbled answer.
                Err(Failure::Protocol(why)) if !first && why == CLOSED => {
                    return Err(Failure::Unreachable {
                        socket: self.socket.clone(),
                        error: std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the daemon stopped and closed the connection",
                        ),
                    });
                }
                Err(failure) => return Err(failure),
            };
            match message {
                ServerMessage::Ok { status } | ServerMessage::Event { status } => {
                    on_status(Received::new(status, sent), first);
                    first = false;
                }
                // Never sent on a subscription.
                ServerMessage::Verified { .. } => {}
                ServerMessage::Error { error } => return Err(Failure::Refused(error)),
                // A message type of a newer daemon: nothing this client can show.
                ServerMessage::Unknown
                | ServerMessage::ExecSendFds
                | ServerMessage::ExecStarted { .. }
                | ServerMessage::ExecExited { .. } => {}
            }
        }
    }
}

/// How a bounded subscription ([`Client::watch_until`]) ended.
#[derive(Debug)]
pub(crate) enum Watched<T> {
    /// The callback said it was done, with this.
    Done(T),
    /// The deadline passed first; the last status seen, if any.
    TimedOut(Option<Box<Received>>),
}

impl Client {
    /// Subscribes and calls `on_status` for the current status and every change until it
    /// returns `Some` or `deadline` passes. The subscription is the daemon's own stream of
    /// changes: nothing is polled.
    pub(crate) fn watch_until<T>(
        &self,
        deadline: std::time::Instant,
        mut on_status: impl FnMut(&Received) -> Option<T>,
    ) -> Result<Watched<T>, Failure> {
        let mut reader = self.connect(Request::Subscribe)?;
        let mut last = None;
        loop {
            let Some(left) = deadline
                .checked_duration_since(std::time::Instant::now())
                .filter(|left| !left.is_zero())
            else {
                return Ok(Watched::TimedOut(last));
            };
            reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| Failure::Protocol(e.to_string()))?;
            let (message, sent) = match read_message(&mut reader) {
                Ok(read) => read,
                // The read timed out because the deadline came: not the daemon's failure.
                Err(_) if std::time::Instant::now() >= deadline => {
                    return Ok(Watched::TimedOut(last));
                }
                Err(failure) => return Err(failure),
            };
            match message {
                ServerMessage::Ok { status } | ServerMessage::Event { status } => {
                    let received = Received::new(status, sent);
                    if let Some(done) = on_status(&received) {
                        return Ok(Watched::Done(done));
                    }
                    last = Some(Box::new(received));
                }
                ServerMessage::Error { error } => return Err(Failure::Refused(error)),
                // Not an answer to a subscription: skipped, like a message of a newer daemon.
                ServerMessage::Verified { .. }
                | ServerMessage::Unknown
                | ServerMessage::ExecSendFds
                | ServerMessage::ExecStarted { .. }
                | ServerMessage::ExecExited { .. } => {}
            }
        }
    }
}

/// Why a read found nothing: the daemon hung up.
const CLOSED: &str = "the daemon closed the connection";

/// Reads one line: the message as this build understands it, and the status in it as sent.
fn read_message(
    reader: &mut BufReader<UnixStream>,
) -> Result<(ServerMessage, Option<serde_json::Value>), Failure> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(Failure::Protocol(CLOSED.to_owned())),
        Ok(_) => parse_message(&line).map_err(|e| Failure::Protocol(e.to_string())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(Failure::Protocol(format!(
                "no answer within {:?}",
                reader
                    .get_ref()
                    .read_timeout()
                    .ok()
                    .flatten()
                    .unwrap_or(REPLY_TIMEOUT)
            )))
        }
        Err(e) => Err(Failure::Protocol(e.to_string())),
    }
}

fn parse_message(
    line: &str,
) -> Result<(ServerMessage, Option<serde_json::Value>), serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_str(line)?;
    let sent = value
        .as_object_mut()
        .and_then(|envelope| envelope.get("status").cloned());
    let envelope: ServerEnvelope = serde_json::from_value(value)?;
    Ok((envelope.message, sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_types::ipc::ErrorKind;

    /// A reply of a future daemon: new fields at every level, and new values where this build
    /// has a fallback for them.
    const FROM_A_NEWER_DAEMON: &str = r#"{"version":1,"type":"ok","sent_at":"2031-01-01","status":{"protocol":3,"state":"connected","lockdown":true,"allow_lan":false,"colour":"green","tunnel":{"interface":"wg0","endpoint":"198.51.100.1:51820/udp","dns":["10.64.0.1"],"mark":51820,"uid":null,"up":true,"addresses":["10.64.0.2"],"mtu":1420,"managed":{"backend":"kernel","servers":["se1"],"server":0,"attempt":0,"last_event":null,"rtt_ms":12}},"error":null,"firewall":{"installed":true,"blocking":true,"transitions":2,"last_apply_us":900,"tamper_events":0,"last_tamper":null,"routing":true,"engine":"nft"},"dns":{"via":"systemd-resolved","servers":["10.64.0.1"],"error":null,"dnssec":true}}}"#;

    #[test]
    fn a_reply_with_unknown_fields_at_every_level_is_understood() {
        let (message, sent) = parse_message(FROM_A_NEWER_DAEMON).expect("lenient");
        let ServerMessage::Ok { status } = message else {
            panic!("not ok: {message:?}");
        };
        assert_eq!(status.protocol, 3);
        let tunnel = status.tunnel.as_ref().expect("tunnel");
        assert_eq!(tunnel.interface.as_str(), "wg0");
        assert_eq!(
            tunnel.managed.as_ref().map(|m| m.servers.clone()),
            Some(vec!["se1".to_owned()])
        );
        assert_eq!(
            status.dns.as_ref().map(|d| d.via.as_str()),
            Some("systemd-resolved")
        );
        assert!(status.firewall.routing);
        // `--json` keeps what this build does not know.
        let received = Received::new(status, sent);
        assert_eq!(received.json["colour"], "green");
        assert_eq!(received.json["tunnel"]["managed"]["rtt_ms"], 12);
        assert_eq!(received.json["dns"]["dnssec"], true);
    }

    #[test]
    fn unknown_error_kinds_and_message_types_are_read() {
        let (message, _) = parse_message(
            r#"{"version":1,"type":"error","error":{"kind":"quota_exceeded","message":"try later","hint":"x"}}"#,
        )
        .expect("lenient");
        assert_eq!(
            message,
            ServerMessage::Error {
                error: IpcError::new(ErrorKind::Unknown, "try later")
            }
        );
        let (message, _) =
            parse_message(r#"{"version":1,"type":"heartbeat","every_ms":1000}"#).expect("lenient");
        assert_eq!(message, ServerMessage::Unknown);
    }

    #[test]
    fn a_status_from_an_older_daemon_gets_its_protocol_filled_in() {
        // As a daemon before the `protocol` field sent it (and without `dns`, older still).
        let line = r#"{"version":1,"type":"ok","status":{"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}}"#;
        let (message, sent) = parse_message(line).expect("older daemon");
        let ServerMessage::Ok { status } = message else {
            panic!("not ok: {message:?}");
        };
        assert_eq!(status.protocol, 1);
        let received = Received::new(status, sent);
        assert_eq!(received.json["protocol"], 1);
        assert_eq!(received.json["firewall"]["routing"], false);
    }
}
