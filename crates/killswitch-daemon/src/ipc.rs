//! The IPC server: newline-delimited JSON on a Unix socket.
//!
//! Each connection is a task. Reading requests (`status`, `subscribe`) is served from the latest
//! published status; `verify` asks the event loop to read the kernel, at most one reading per
//! [`crate::verify::MIN_INTERVAL`] whoever asks (the wait is the asking connection's); changing
//! requests are checked against the peer's credentials and then sent to
//! the state machine, which answers through a oneshot channel. A bad line gets an error reply and
//! the connection stays usable; a line over the size limit gets an error and the connection is
//! closed (its remainder cannot be framed). Nothing a client sends can panic the daemon.
//!
//! The socket is open to every local user, so connections are a shared resource. The accept loop
//! never waits for anything but the next connection: it classifies each one from the peer's
//! credentials ([`crate::admission`]: root and the admin group have an allowance of their own,
//! each other uid a share of another), and a connection over its limit gets one error line
//! (`too_many_connections`, naming the limit) and is closed at once. Unprivileged peers must also
//! keep moving: a request line must be complete within [`REQUEST_DEADLINE`] of connecting or of
//! the previous reply (sending it one byte at a time does not extend that), and a reply or event
//! they leave unread for [`WRITE_DEADLINE`] closes the connection. `subscribe` connections
//! (`killswitch events`) live as long as the peer reads, bounded by the per-user limit; a
//! subscriber that hangs up frees its place at once.

use crate::admission::{Admission, Limits, PeerClass, Refusal, Slot};
use crate::authz::{self, AdminGroup, Peer};
use crate::discover;
use killswitch_types::ipc::{
    self, ErrorKind, IpcError, MAX_REQUEST_BYTES, Request, ServerEnvelope, ServerMessage, Status,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How long an unprivileged peer may take to send a whole request line, from connecting or from
/// the previous reply. The CLI sends its line at once; only an idle or trickling peer waits this
/// long, and it holds one of its user's connections meanwhile.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// How long a reply or event to an unprivileged peer may wait for the peer to read it.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// How long the accept loop rests after `accept` failed (out of file descriptors, usually), so
/// that a failure that repeats at once cannot make it spin. Connections already accepted go on
/// being served meanwhile.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// How many queued connections the accept loop takes before letting the rest of the daemon run.
const ACCEPT_BATCH: usize = 64;

/// At most one log line per this period for each kind of repeated trouble (refused connections,
/// failed accepts): a local user must not be able to flood the journal.
const LOG_EVERY: Duration = Duration::from_secs(10);

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
    /// `verify` requests on their way to the event loop (which knows what the kernel should
    /// hold), each with where to send the answer.
    pub verifications: mpsc::Sender<oneshot::Sender<VerifyAnswer>>,
    /// When the kernel was last read for `verify`: readings are spaced
    /// [`crate::verify::MIN_INTERVAL`] apart, whoever asks.
    pub verify_pace: Arc<tokio::sync::Mutex<Option<Instant>>>,
    /// What the firewall refuses: filled into each `status` answer.
    pub blocked: Arc<crate::blocked::Blocked>,
    /// What the tunnel manager last read from the device the daemon runs: each `status` answer
    /// carries the tunnel's last handshake ([`crate::handshake`]).
    pub handshakes: crate::handshake::Tap,
    /// Where wg-quick files are (`wireguard_dir`): `guard IFACE` reads IFACE.conf's `DNS =`.
    pub wireguard_dir: Arc<Path>,
    /// The `killswitch exec` service ([`crate::exec`]); `None` in daemons built without it (tests).
    pub exec: Option<Arc<crate::exec::Exec>>,
    /// Freeze on drop's watched cgroups: each `status` answer reads whether they are frozen and
    /// how many processes they hold now.
    pub on_drop: crate::freeze::Registry,
}

/// The answer to `verify`: the status, and the kernel compared with the daemon's intent.
pub type VerifyAnswer = (Status, killswitch_types::ipc::RulesCheck);

/// The bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct Server {
    /// Non-blocking; accepted from directly (not through tokio's `UnixListener`), so that a
    /// connection refused at once never costs a registration with the runtime's reactor.
    listener: AsyncFd<std::os::unix::net::UnixListener>,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, refusing if another daemon answers there, replacing a stale socket file.
    pub async fn bind(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            // Only a socket a daemon left behind is replaced: never a file or link someone (or a
            // typo in --socket) put there.
            if !metadata.file_type().is_socket() {
                anyhow::bail!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                );
            }
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another killswitchd is already listening on {}",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        raise_open_file_limit();
        let listener = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        listener
            .set_nonblocking(true)
            .context("making the socket non-blocking")?;
        // SAFETY: the listener moves into the AsyncFd and stays open for as long as it exists.
        let listener =
            unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
                .context("registering the socket")?;
        // Anyone may connect to read the status; changes are authorised per request by the
        // peer's credentials, not by who can open the socket.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .with_context(|| format!("setting permissions on {}", path.display()))?;
        Ok(Server {
            listener,
            path: path.to_owned(),
        })
    }

    /// Accepts connections forever, one task each, within the limits of [`crate::admission`].
    pub async fn serve(&self, shared: Shared) {
        let mut gate = Gate {
            admission: Admission::new(Limits::default()),
            admin_group: AdminGroup::new(shared.admin_group.clone()),
            refused: Throttle::default(),
            refusal: None,
            shared,
        };
        let mut failed = Throttle::default();
        loop {
            let mut ready = match self.listener.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    if let Some(times) = failed.note() {
                        tracing::warn!("waiting for clients failed ({times} times): {e}");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            // Take what is queued in batches, and let the rest of the daemon run between them.
            for _ in 0..ACCEPT_BATCH {
                match ready.get_inner().accept() {
                    Ok((stream, _)) => gate.admit(stream),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Out of descriptors (EMFILE, ENFILE) or memory: the connection stays queued
                    // and the socket readable, so accepting again at once would spin.
                    Err(e) => {
                        if let Some(times) = failed.note() {
                            tracing::warn!(
                                "accepting a client failed ({times} times since the last report): {e}; pausing {ACCEPT_PAUSE:?}"
                            );
                        }
                        drop(ready);
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                        break;
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Where a freshly accepted connection is classified, and admitted or refused.
#[derive(Debug)]
struct Gate {
    admission: Admission,
    admin_group: AdminGroup,
    refused: Throttle,
    /// The last refusal and its encoded line.
    refusal: Option<(Refusal, String)>,
    shared: Shared,
}

impl Gate {
    fn admit(&mut self, stream: std::os::unix::net::UnixStream) {
        let peer = match Peer::of(std::os::fd::AsFd::as_fd(&stream)) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!("a client without credentials was refused: {e}");
                return;
            }
        };
        let privileged = authz::may_change(&peer, self.admin_group.gid());
        let class = if privileged {
            PeerClass::Privileged
        } else {
            PeerClass::Unprivileged
        };
        match self.admission.admit(peer.uid, class) {
            Ok(slot) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| UnixStream::from_std(stream));
                match stream {
                    Ok(stream) => {
                        tokio::spawn(serve_connection(stream, peer, slot, self.shared.clone()));
                    }
                    Err(e) => tracing::warn!(uid = peer.uid, "cannot serve a client: {e}"),
                }
            }
            Err(refusal) => {
                if let Some(times) = self.refused.note() {
                    tracing::warn!(
                        uid = peer.uid,
                        pid = peer.pid,
                        "refused {times} connection(s) since the last report: {refusal}"
                    );
                }
                // Refusals come in floods from one user: encode the line once per flood.
                if self
                    .refusal
                    .as_ref()
                    .is_none_or(|(last, _)| *last != refusal)
                {
                    self.refusal = refusal_line(&refusal).map(|line| (refusal, line));
                }
                if let Some((_, line)) = &self.refusal {
                    // The accept loop must not wait on this peer: a fresh connection's buffer is
                    // empty, so one non-blocking send takes the whole (short) line, and if it
                    // ever did not, the peer would only miss the explanation. Dropping the
                    // stream closes the connection.
                    let _ = nix::sys::socket::send(
                        std::os::fd::AsRawFd::as_raw_fd(&stream),
                        line.as_bytes(),
                        nix::sys::socket::MsgFlags::MSG_DONTWAIT
                            | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    );
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Raises the soft limit on open files to the hard limit, as systemd advises services that need
/// many: the connection limits fit in the usual 1,024, and the rest is margin. (glibc does this
/// with prlimit64, which the unit's system-call filter allows.)
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("raised the open-file limit from {soft} to {hard}"),
            Err(e) => tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// Counts a repeated event and says when to log it: the first time, then at most once per
/// [`LOG_EVERY`], with how many happened since the last line.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    pending: u64,
}

impl Throttle {
    fn note(&mut self) -> Option<u64> {
        self.pending += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// The line an over-limit peer gets.
fn refusal_line(refusal: &Refusal) -> Option<String> {
    let error = IpcError::new(ErrorKind::TooManyConnections, refusal.to_string());
    ipc::encode_line(&ServerEnvelope::new(ServerMessage::Error { error })).ok()
}

/// The deadlines a connection's peer must keep: none for root and the admin group, whose
/// connections come out of an allowance nobody else can use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    request: Option<Duration>,
    write: Option<Duration>,
}

impl Deadlines {
    fn for_class(class: PeerClass) -> Self {
        match class {
            PeerClass::Privileged => Deadlines {
                request: None,
                write: None,
            },
            PeerClass::Unprivileged => Deadlines {
                request: Some(REQUEST_DEADLINE),
                write: Some(WRITE_DEADLINE),
            },
        }
    }
}

/// Serves one connection; `slot` keeps its place in the connection limits until it ends.
async fn serve_connection(stream: UnixStream, peer: Peer, slot: Slot, shared: Shared) {
    let deadlines = Deadlines::for_class(slot.class());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        let mut bounded = (&mut reader).take(limit);
        let reading = bounded.read_until(b'\n', &mut line);
        let read = match deadlines.request {
            None => reading.await,
            Some(deadline) => match tokio::time::timeout(deadline, reading).await {
                Ok(read) => read,
                Err(_) => {
                    tracing::debug!(
                        uid = peer.uid,
                        pid = peer.pid,
                        "closing a connection that sent no request line within {deadline:?}"
                    );
                    let error = IpcError::new(
                        ErrorKind::TimedOut,
                        format!(
                            "no complete request line within {deadline:?}; closing the connection"
                        ),
                    );
                    let _ = send(&mut write, ServerMessage::Error { error }, deadlines).await;
                    return;
                }
            },
        };
        match read {
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
                let _ = send(&mut write, ServerMessage::Error { error }, deadlines).await;
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
                subscribe(&mut reader, &mut write, &shared, deadlines).await;
                return;
            }
            Ok(Request::Status) => {
                let mut status = shared.status.borrow().clone();
                // The processes in the bypass cgroup now, not when it last changed.
                if let Some(bypass) = status.bypass.as_mut()
                    && let Some(directory) = &bypass.directory
                {
                    bypass.processes =
                        crate::bypass::count_processes(std::path::Path::new(directory));
                }
                // A netlink dump: quick, but a blocking call, so off the runtime's threads.
                let blocked = Arc::clone(&shared.blocked);
                if let Ok(snapshot) = tokio::task::spawn_blocking(move || blocked.snapshot()).await
                {
                    status.blocked = Some(snapshot);
                }
                // A UAPI or netlink exchange with the tunnel's device: blocking too.
                if let Some(tunnel) = status.tunnel.clone() {
                    let tap = shared.handshakes.clone();
                    if let Ok(handshake) =
                        tokio::task::spawn_blocking(move || crate::handshake::look(&tunnel, &tap))
                            .await
                        && let Some(t) = status.tunnel.as_mut()
                    {
                        t.handshake = handshake;
                    }
                }
                if !status.on_drop.programs.is_empty() {
                    let registry = shared.on_drop.clone();
                    if let Ok(programs) =
                        tokio::task::spawn_blocking(move || registry.programs()).await
                    {
                        status.on_drop.programs = programs;
                    }
                }
                ServerMessage::Ok { status }
            }
            Ok(Request::Exec(request)) => {
                // The connection now carries the program's life, and ends with it.
                crate::exec::serve(
                    shared.exec.clone(),
                    request,
                    peer.clone(),
                    &mut reader,
                    &mut write,
                    deadlines,
                    shared.status.clone(),
                )
                .await;
                return;
            }
            Ok(Request::ExecSignal { .. }) => ServerMessage::Error {
                error: IpcError::new(
                    ErrorKind::BadRequest,
                    "exec-signal: no program runs on this connection",
                ),
            },
            Ok(Request::Verify) => match verify(&shared).await {
                Ok((status, rules)) => ServerMessage::Verified { status, rules },
                Err(error) => ServerMessage::Error { error },
            },
            Ok(request) => match change(request, peer.clone(), &shared, &reader).await {
                Ok(status) => ServerMessage::Ok { status },
                Err(error) => ServerMessage::Error { error },
            },
        };
        if send(&mut write, reply, deadlines).await.is_err() {
            return;
        }
    }
}

/// Whether the client at the other end has hung up (and sent nothing more). A client that gave
/// up waiting (the daemon was stopped, or busy) and told its user that nothing was changed must
/// be right: its request is withdrawn, not carried out whenever the daemon gets to it.
fn client_gone(reader: &BufReader<OwnedReadHalf>) -> bool {
    reader.buffer().is_empty() && peek(reader) == 0
}

/// Peeks at one byte without blocking or consuming it: 1 when data waits, 0 at the end of the
/// stream (a hang-up), negative when there is nothing yet.
fn peek(reader: &BufReader<OwnedReadHalf>) -> isize {
    let stream: &tokio::net::UnixStream = reader.get_ref().as_ref();
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a live byte, without blocking; nothing is consumed.
    unsafe {
        libc::recv(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    }
}

/// Resolves when the client hangs up while its request waits for the state machine. More data
/// from it (a pipelined request) ends the watch: it is still there.
async fn hang_up(reader: &BufReader<OwnedReadHalf>) {
    let stream: &tokio::net::UnixStream = reader.get_ref().as_ref();
    if !reader.buffer().is_empty() {
        // Data waits: not a hang-up; stop watching (the answer comes anyway).
        return std::future::pending::<()>().await;
    }
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        // Through `try_io`, so that a readiness that was not (EAGAIN) is cleared rather than
        // woken for again at once.
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || match peek(reader) {
            n if n < 0 => Err(std::io::Error::last_os_error()),
            n => Ok(n),
        });
        match peeked {
            Ok(0) => return,
            // Data waits: not a hang-up; stop watching (the answer comes anyway).
            Ok(_) => std::future::pending::<()>().await,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Reset, or any other end: it is gone.
            Err(_) => return,
        }
    }
}

/// Asks the event loop to read the kernel and compare it with what the daemon means it to hold.
/// Anyone may ask, so the readings are paced: each waits its turn, at least
/// [`crate::verify::MIN_INTERVAL`] after the previous one (the wait is this connection's, never
/// the event loop's).
async fn verify(shared: &Shared) -> Result<VerifyAnswer, IpcError> {
    let gone = || {
        IpcError::new(
            ErrorKind::Firewall,
            "the daemon is shutting down; nothing was read",
        )
    };
    let mut last = shared.verify_pace.lock().await;
    if let Some(at) = *last {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            at + crate::verify::MIN_INTERVAL,
        ))
        .await;
    }
    let (reply, answer) = oneshot::channel();
    shared.verifications.send(reply).await.map_err(|_| gone())?;
    let answer = answer.await.map_err(|_| gone());
    *last = Some(Instant::now());
    answer
}

async fn change(
    request: Request,
    peer: Peer,
    shared: &Shared,
    reader: &BufReader<OwnedReadHalf>,
) -> Result<Status, IpcError> {
    let admin_gid = authz::group_gid(&shared.admin_group);
    if !authz::may_change(&peer, admin_gid) {
        tracing::warn!(
            uid = peer.uid,
            pid = peer.pid,
            "refused `{}`: not root, not in group {}",
            request.name(),
            shared.admin_group
        );
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
    let withdrawn = |name: &str| {
        IpcError::new(
            ErrorKind::TimedOut,
            format!("the client hung up before `{name}` was carried out; nothing was changed"),
        )
    };
    let name = request.name();
    if client_gone(reader) {
        tracing::info!(
            uid = peer.uid,
            pid = peer.pid,
            "request `{name}` withdrawn: its sender hung up before it was read"
        );
        return Err(withdrawn(name));
    }
    // `guard IFACE`: completed here, in the IPC task (it reads and may set the WireGuard
    // device), so that the state machine only ever sees a whole spec and never waits on I/O.
    let (request, notes) = match request {
        Request::GuardDiscover(query) => {
            let dir = Arc::clone(&shared.wireguard_dir);
            let completed = tokio::task::spawn_blocking(move || discover::complete(&query, &dir))
                .await
                .map_err(|e| {
                    IpcError::new(ErrorKind::BadRequest, format!("discovery failed: {e}"))
                })?;
            match completed {
                Ok(plan) => {
                    for note in &plan.notes {
                        tracing::info!(uid = peer.uid, "guard: {note}");
                    }
                    (Request::Guard(plan.spec), plan.notes)
                }
                Err(e) => {
                    return Err(IpcError::new(
                        ErrorKind::BadRequest,
                        format!("{e}; nothing was changed"),
                    ));
                }
            }
        }
        other => (other, Vec::new()),
    };
    if let Request::Guard(spec) = &request {
        spec.validate()
            .map_err(|e| IpcError::new(ErrorKind::BadRequest, e.to_string()))?;
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
    // Dropping `answer` when the client hangs up tells the state machine to skip the request.
    let answer = tokio::select! {
        answer = answer => answer.map_err(|_| gone())?,
        () = hang_up(reader) => Err(withdrawn(name)),
    };
    answer.map(|mut status| {
        status.notes = notes;
        status
    })
}

async fn subscribe(
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
    shared: &Shared,
    deadlines: Deadlines,
) {
    // Subscribe before reading the current status, so that no change falls between the two.
    let mut events = shared.events.subscribe();
    let current = shared.status.borrow().clone();
    if send(write, ServerMessage::Ok { status: current }, deadlines)
        .await
        .is_err()
    {
        return;
    }
    let mut ignored = [0u8; 512];
    loop {
        let status = tokio::select! {
            received = events.recv() => match received {
                Ok(status) => status,
                // A slow reader missed some changes: the latest status is what matters.
                Err(broadcast::error::RecvError::Lagged(_)) => shared.status.borrow().clone(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // A subscriber has nothing more to say; reading notices when it hangs up, so that its
            // place is free at once rather than at the next change of state, hours later perhaps.
            read = reader.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        if send(write, ServerMessage::Event { status }, deadlines)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Writes one line, within the peer's write deadline if it has one.
pub(crate) async fn send(
    write: &mut OwnedWriteHalf,
    message: ServerMessage,
    deadlines: Deadlines,
) -> std::io::Result<()> {
    let line = ipc::encode_line(&ServerEnvelope::new(message)).map_err(std::io::Error::other)?;
    let writing = write.write_all(line.as_bytes());
    match deadlines.write {
        None => writing.await,
        Some(deadline) => tokio::time::timeout(deadline, writing)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the peer read nothing for {deadline:?}"),
                ))
            }),
    }
}
