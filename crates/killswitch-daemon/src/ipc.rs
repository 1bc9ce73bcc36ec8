//! The IPC server: newline-delimited JSON on a Unix socket.
//!
//! Each connection is a task. Reading requests (`status`, `subscribe`) is served from the latest
//! published status; changing requests are checked against the peer's credentials and then sent to
//! the state machine, which answers through a oneshot channel. A bad line gets an error reply and
//! the connection stays usable; a line over the size limit gets an error and the connection is
//! closed (its remainder cannot be framed). Nothing a client sends can panic the daemon.

use crate::authz::{self, Peer};
use killswitch_types::ipc::{
    self, ErrorKind, IpcError, MAX_REQUEST_BYTES, Request, ServerEnvelope, ServerMessage, Status,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};

/// At most this many clients at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 128;

/// A changing request on its way to the state machine, with where to send the answer.
#[derive(Debug)]
pub struct Command {
    /// The request.
    pub request: Request,
    /// Who asked (for the log).
    pub peer: Peer,
    /// Where the state machine sends its answer.
    pub reply: oneshot::Sender<Result<Status, IpcError>>,
}

/// What connection tasks share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The latest status.
    pub status: watch::Receiver<Status>,
    /// Every status change, for subscribers.
    pub events: broadcast::Sender<Status>,
    /// The state machine's inbox.
    pub commands: mpsc::Sender<Command>,
    /// The group whose members may change things.
    pub admin_group: Arc<str>,
}

/// The bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, refusing if another daemon answers there, replacing a stale socket file.
    pub async fn bind(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another killswitchd is already listening on {}",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        // Anyone may connect to read the status; changes are authorised per request by the
        // peer's credentials, not by who can open the socket.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .with_context(|| format!("setting permissions on {}", path.display()))?;
        Ok(Server {
            listener,
            path: path.to_owned(),
        })
    }

    /// Accepts connections forever, one task each.
    pub async fn serve(&self, shared: Shared) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, shared).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!("accepting a client failed: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_connection(stream: UnixStream, shared: Shared) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        },
        Err(e) => {
            tracing::warn!("a client without credentials was refused: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("reading from uid {} failed: {e}", peer.uid);
                return;
            }
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_REQUEST_BYTES {
                let error = IpcError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "request longer than {MAX_REQUEST_BYTES} bytes; closing the connection"
                    ),
                );
                let _ = send(&mut write, ServerMessage::Error { error }).await;
            }
            // Either too long, or the client hung up mid-line: nothing more can be framed.
            return;
        }
        let request = match std::str::from_utf8(&line) {
            Ok(text) => ipc::decode_request(text.trim_end_matches(['\n', '\r']))
                .map_err(|e| e.to_ipc_error()),
            Err(_) => Err(IpcError::new(
                ErrorKind::BadRequest,
                "bad request: not UTF-8",
            )),
        };
        let reply = match request {
            Err(error) => ServerMessage::Error { error },
            Ok(Request::Subscribe) => {
                subscribe(&mut write, &shared).await;
                return;
            }
            Ok(Request::Status) => ServerMessage::Ok {
                status: shared.status.borrow().clone(),
            },
            Ok(request) => match change(request, peer, &shared).await {
                Ok(status) => ServerMessage::Ok { status },
                Err(error) => ServerMessage::Error { error },
            },
        };
        if send(&mut write, reply).await.is_err() {
            return;
        }
    }
}

async fn change(request: Request, peer: Peer, shared: &Shared) -> Result<Status, IpcError> {
    let admin_gid = authz::group_gid(&shared.admin_group);
    if !authz::may_change(&peer, admin_gid) {
        tracing::warn!(uid = peer.uid, pid = ?peer.pid, "refused `{}`: not root, not in group {}", request.name(), shared.admin_group);
        return Err(IpcError::new(
            ErrorKind::PermissionDenied,
            format!(
                "permission denied: `{}` needs root or membership in group '{}' (you are uid {}); nothing was changed",
                request.name(),
                shared.admin_group,
                peer.uid
            ),
        ));
    }
    let (reply, answer) = oneshot::channel();
    let gone = || {
        IpcError::new(
            ErrorKind::Firewall,
            "the daemon is shutting down; nothing was changed",
        )
    };
    shared
        .commands
        .send(Command {
            request,
            peer,
            reply,
        })
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

async fn subscribe(write: &mut tokio::net::unix::OwnedWriteHalf, shared: &Shared) {
    // Subscribe before reading the current status, so that no change falls between the two.
    let mut events = shared.events.subscribe();
    let current = shared.status.borrow().clone();
    if send(write, ServerMessage::Ok { status: current })
        .await
        .is_err()
    {
        return;
    }
    loop {
        let status = match events.recv().await {
            Ok(status) => status,
            // A slow reader missed some changes: the latest status is what matters.
            Err(broadcast::error::RecvError::Lagged(_)) => shared.status.borrow().clone(),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if send(write, ServerMessage::Event { status }).await.is_err() {
            return;
        }
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    message: ServerMessage,
) -> std::io::Result<()> {
    let line = ipc::encode_line(&ServerEnvelope::new(message)).map_err(std::io::Error::other)?;
    write.write_all(line.as_bytes()).await
}
