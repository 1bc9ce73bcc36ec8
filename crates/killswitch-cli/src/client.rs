//! Talking to the daemon: one request line, one reply line (or a stream of events).

use killswitch_types::ipc::{
    self, IpcError, Request, RequestEnvelope, ServerEnvelope, ServerMessage, Status,
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

/// A client of one daemon socket.
#[derive(Debug)]
pub(crate) struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    fn connect(&self, request: Request) -> Result<BufReader<UnixStream>, Failure> {
        let unreachable = |error| Failure::Unreachable {
            socket: self.socket.clone(),
            error,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        let line = ipc::encode_line(&RequestEnvelope::new(request))
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        stream.write_all(line.as_bytes()).map_err(unreachable)?;
        Ok(BufReader::new(stream))
    }

    /// Sends `request` and returns the status the daemon answers with.
    pub(crate) fn request(&self, request: Request) -> Result<Status, Failure> {
        let mut reader = self.connect(request)?;
        reader
            .get_ref()
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        match read_message(&mut reader)? {
            ServerMessage::Ok { status } => Ok(status),
            ServerMessage::Error { error } => Err(Failure::Refused(error)),
            ServerMessage::Event { .. } => {
                Err(Failure::Protocol("an event instead of a reply".to_owned()))
            }
        }
    }

    /// Subscribes and calls `on_status(status, is_first)` for the current status and every change,
    /// until the daemon goes away.
    pub(crate) fn subscribe(&self, mut on_status: impl FnMut(Status, bool)) -> Result<(), Failure> {
        let mut reader = self.connect(Request::Subscribe)?;
        let mut first = true;
        loop {
            match read_message(&mut reader)? {
                ServerMessage::Ok { status } | ServerMessage::Event { status } => {
                    on_status(status, first)
                }
                ServerMessage::Error { error } => return Err(Failure::Refused(error)),
            }
            first = false;
        }
    }
}

fn read_message(reader: &mut BufReader<UnixStream>) -> Result<ServerMessage, Failure> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(Failure::Protocol(
            "the daemon closed the connection".to_owned(),
        )),
        Ok(_) => serde_json::from_str::<ServerEnvelope>(&line)
            .map(|envelope| envelope.message)
            .map_err(|e| Failure::Protocol(e.to_string())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(Failure::Protocol(format!(
                "no answer within {REPLY_TIMEOUT:?}"
            )))
        }
        Err(e) => Err(Failure::Protocol(e.to_string())),
    }
}
