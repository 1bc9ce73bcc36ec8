//! `killswitch exec [--] CMD` (issue 15 item 1): a program whose only way out is the tunnel.
//!
//! Any user may ask (it only adds protection). The daemon, which alone may create namespaces and
//! enter them, runs the program for the caller:
//!
//! 1. A number, subnet and interface name are reserved in the [`registry`] (refused over the
//!    per-user limit, `exec_limit_per_user`).
//! 2. The CLI's stdin, stdout and stderr arrive over `SCM_RIGHTS` ([`receive_fds`]).
//! 3. The namespace, its veth pair (`ksxN` here, `eth0` inside), addresses, routes and resolv.conf
//!    are made ([`netns`]), and a cgroup `exec-<uid>-<id>` in the daemon's subtree.
//! 4. The state machine puts the scope's rules in force ([`crate::core::Command::ExecScopes`]):
//!    firewall (`killswitch_policy::exec`) and routing (`iif ksxN lookup 27507`). Only then does
//!    anything run in the namespace.
//! 5. The program is forked from the daemon into the cgroup and the namespace, as the caller
//!    ([`spawn`]). The connection stays open: the CLI forwards signals through it, a dropped
//!    connection sends the program SIGHUP (as a closed terminal does), and the program's exit
//!    status comes back (128 + N for a signal, 127 when it was not found, 126 when it could not
//!    be run).
//! 6. When the cgroup is empty (the program and all its children have exited), everything of the
//!    scope is removed and its rules go.
//!
//! The registry is kept in `<state>/exec/scopes.json`. A daemon that starts re-adopts the scopes
//! whose cgroup still holds a process (their rules are in its first ruleset, so they never lapse)
//! and sweeps the rest, with any `ksx` interface and pin nobody holds ([`Exec::recover`]).

pub mod netns;
pub mod registry;
pub mod spawn;

use crate::authz::Peer;
use crate::cgroup::{Cgroup, Subtree};
use ipnet::Ipv4Net;
use killswitch_types::exec::{ExecExit, ExecRequest, ExecScopeStatus, FDS_BYTE, FORWARDED_SIGNALS};
use killswitch_types::ipc::{ErrorKind, IpcError, Request, ServerMessage, Status};
use registry::{Entry, Registry};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

/// The default block the namespaces' subnets come from (config.toml `exec_subnet`): half of
/// 198.18.0.0/15, which IANA reserves for benchmarking (RFC 2544). It is never routed on the
/// internet and no home or office network hands it out by default, so it clashes with nothing the
/// program may want to reach; its addresses never leave the machine anyway (masqueraded into the
/// tunnel). See docs/security.md for what to do on a clash.
pub const DEFAULT_SUBNET: &str = "198.18.0.0/16";

/// How long the CLI may take to send its file descriptors once asked.
const FDS_DEADLINE: Duration = Duration::from_secs(5);

/// config.toml's exec keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecConfig {
    /// Where the namespaces' /30 subnets come from.
    pub block: Ipv4Net,
    /// Live namespaces per user.
    pub limit: usize,
}

/// A change of the live scopes on its way to the state machine, with where to send its answer.
#[derive(Debug)]
pub struct ScopesChanged {
    /// The registry's generation.
    pub generation: u64,
    /// Every live scope.
    pub scopes: Vec<ExecScopeStatus>,
    /// The state machine's answer (the rules are in force when it is `Ok`).
    pub reply: oneshot::Sender<Result<Status, IpcError>>,
}

/// What every `exec` connection shares.
#[derive(Debug)]
pub struct Exec {
    config: ExecConfig,
    /// `<state>/exec`.
    dir: PathBuf,
    /// The daemon's cgroup subtree, or why there is none (then `exec` is refused with it):
    /// found (and created) on first use, so that a daemon that never runs a program leaves no
    /// directory in the cgroup hierarchy.
    subtree: std::sync::OnceLock<Result<Subtree, String>>,
    registry: Mutex<Registry>,
    changes: mpsc::Sender<ScopesChanged>,
    /// Freeze on drop: `exec --freeze-on-drop|--kill-on-drop` programs' cgroups are watched there.
    on_drop: crate::freeze::Registry,
}

impl Exec {
    /// The exec service for a daemon keeping its state in `state_dir`.
    pub fn new(
        state_dir: &Path,
        config: ExecConfig,
        changes: mpsc::Sender<ScopesChanged>,
        on_drop: crate::freeze::Registry,
    ) -> Self {
        Exec {
            config,
            dir: state_dir.join("exec"),
            subtree: std::sync::OnceLock::new(),
            registry: Mutex::new(Registry::default()),
            changes,
            on_drop,
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join(REGISTRY_FILE)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves bookkeeping, not memory, in doubt: go on.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, registry: &Registry) {
        let result = std::fs::create_dir_all(&self.dir)
            .and_then(|()| serde_json::to_vec_pretty(registry).map_err(std::io::Error::other))
            .and_then(|bytes| {
                let temporary = self.dir.join("scopes.json.new");
                std::fs::write(&temporary, bytes)?;
                std::fs::rename(&temporary, self.file())
            });
        if let Err(e) = result {
            tracing::warn!(
                "cannot save the exec registry to {}: {e}",
                self.file().display()
            );
        }
    }

    fn subtree(&self) -> Result<&Subtree, &String> {
        self.subtree
            .get_or_init(|| find_subtree(&self.dir))
            .as_ref()
    }

    fn cgroup(&self, entry: &Entry) -> Option<Cgroup> {
        self.subtree().ok().map(|s| s.cgroup(&entry.cgroup))
    }

    /// At start, before the first ruleset: re-adopts the scopes a previous daemon left whose
    /// cgroup still holds a process, sweeps everything else of exec (interfaces, pins, cgroups,
    /// files). Returns the generation and the scopes for the state machine
    /// ([`crate::core::Core::adopt_exec_scopes`]).
    pub fn recover(&self) -> (u64, Vec<ExecScopeStatus>) {
        let _ = std::fs::create_dir_all(&self.dir);
        let previous: Registry = std::fs::read(self.file())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut kept = Registry {
            generation: previous.generation + 1,
            ..Registry::default()
        };
        // Only a registry with entries can have left cgroups (each is recorded before its cgroup
        // is made): without one, the cgroup hierarchy is not even looked at.
        let had_entries = !previous.entries.is_empty();
        for (id, entry) in previous.entries {
            let alive = entry.running
                && self
                    .cgroup(&entry)
                    .is_some_and(|c| c.populated().unwrap_or(false));
            if alive {
                tracing::info!(
                    id,
                    uid = entry.status.uid,
                    "exec: {} still runs; its namespace stays confined",
                    entry.status.program
                );
                // Thawed first: a daemon that died while the tunnel was lost leaves it frozen,
                // and the tunnel's state now is this daemon's to find out (watched again below,
                // it is frozen again at once if the tunnel is still lost).
                if let Some(cgroup) = self.cgroup(&entry) {
                    let _ = cgroup.set_frozen(false);
                }
                if let (Some(on_drop), Some(cgroup)) = (entry.on_drop, self.cgroup(&entry)) {
                    // Watched again: a restart must not unfreeze what the tunnel's loss froze,
                    // nor forget what to do at the next one.
                    self.on_drop
                        .watch(cgroup, on_drop, format!("exec {}", entry.status.program));
                }
                kept.entries.insert(id, entry);
            } else {
                self.sweep(&entry);
            }
        }
        // Leftovers nobody holds: a pin, a `ksx` interface, an `exec-` cgroup.
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for file in dir.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let id = name
                    .strip_prefix("ns-")
                    .or_else(|| {
                        name.strip_prefix("resolv-")
                            .and_then(|n| n.strip_suffix(".conf"))
                    })
                    .and_then(|n| n.parse::<u32>().ok());
                if let Some(id) = id
                    && !kept.entries.contains_key(&id)
                    && let Some(veth) = registry::interface_of(id)
                {
                    let problems = netns::remove(&netns::Files::new(&self.dir, id), &veth);
                    for problem in problems {
                        tracing::warn!("exec: sweeping {id}: {problem}");
                    }
                }
            }
        }
        if let Ok(links) = killswitch_tunnel::netdev::all_links() {
            for link in links {
                let Some(id) = link
                    .name
                    .strip_prefix(killswitch_policy::EXEC_INTERFACE_PREFIX)
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if !kept.entries.contains_key(&id)
                    && let Some(veth) = registry::interface_of(id)
                {
                    netns::remove(&netns::Files::new(&self.dir, id), &veth);
                }
            }
        }
        if had_entries
            && let Ok(subtree) = self.subtree()
            && let Ok(cgroups) = subtree.list()
        {
            let held: Vec<&String> = kept.entries.values().map(|e| &e.cgroup).collect();
            for cgroup in cgroups {
                let name = cgroup.name();
                if name.starts_with("exec-")
                    && !held.contains(&&name)
                    && !cgroup.populated().unwrap_or(true)
                {
                    let _ = cgroup.remove();
                }
            }
        }
        self.save(&kept);
        let answer = (kept.generation, kept.statuses());
        *self.lock() = kept;
        answer
    }

    /// Watches the re-adopted scopes: each is removed when its cgroup empties.
    pub fn watch_adopted(self: &Arc<Self>) {
        let entries: Vec<Entry> = self.lock().entries.values().cloned().collect();
        for entry in entries {
            let exec = Arc::clone(self);
            tokio::spawn(async move {
                exec.wait_empty(&entry).await;
                exec.retire(&entry).await;
            });
        }
    }

    /// Keeps the tunnel forwarding its replies to the namespaces, and their resolv.conf naming the
    /// tunnel's resolvers, as the status changes.
    pub async fn follow_tunnel(self: Arc<Self>, mut status: watch::Receiver<Status>) {
        let mut last: Option<(Option<String>, Vec<std::net::IpAddr>)> = None;
        loop {
            let now = {
                let status = status.borrow_and_update();
                tunnel_of(&status)
            };
            if last.as_ref() != Some(&now) || !self.lock().entries.is_empty() {
                self.follow(&now);
                last = Some(now);
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    }

    fn follow(&self, (interface, dns): &(Option<String>, Vec<std::net::IpAddr>)) {
        let ids: Vec<u32> = self.lock().entries.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        if let Some(name) = interface
            && let Ok(name) = killswitch_types::InterfaceName::new(name.as_str())
            && killswitch_tunnel::netdev::index(name.as_str()).is_some()
            && let Err(e) = netns::forward_on(&name)
        {
            tracing::warn!("exec: {e}");
        }
        for id in ids {
            let files = netns::Files::new(&self.dir, id);
            if let Err(e) = netns::write_resolv_conf(&files.resolv, dns) {
                tracing::warn!("exec: {e}");
            }
        }
    }

    /// Tells the state machine the scopes now live, and waits until their rules are in force.
    async fn publish(&self) -> Result<(), IpcError> {
        let (generation, scopes) = {
            let registry = self.lock();
            self.save(&registry);
            (registry.generation, registry.statuses())
        };
        let (reply, answer) = oneshot::channel();
        let gone = || {
            IpcError::new(
                ErrorKind::Firewall,
                "the daemon is shutting down; the program was not started",
            )
        };
        self.changes
            .send(ScopesChanged {
                generation,
                scopes,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?.map(|_| ())
    }

    /// Waits until the scope's cgroup holds no process (cgroup.events `populated 0`).
    async fn wait_empty(&self, entry: &Entry) {
        let Some(cgroup) = self.cgroup(entry) else {
            return;
        };
        // The program itself has ended; while children of it run on, `status` shows one of
        // them rather than the pid of a process that is gone.
        if let Ok(pids) = cgroup.pids()
            && !pids.contains(&entry.status.pid)
            && let Some(&pid) = pids.first()
        {
            self.lock().started(entry.status.id, pid);
            if let Err(e) = self.publish().await {
                tracing::warn!(pid, "exec: {e}");
            }
        }
        let _ = tokio::task::spawn_blocking(move || wait_unpopulated(&cgroup)).await;
    }

    /// Removes a scope: its kernel objects, its entry, its rules.
    async fn retire(&self, entry: &Entry) {
        // The rules go first (nothing runs in the namespace any more), then the objects they
        // name, so that the routing layer never names an interface that is gone.
        self.lock().remove(entry.status.id);
        if let Some(cgroup) = self.cgroup(entry) {
            self.on_drop.forget(&cgroup);
        }
        if let Err(e) = self.publish().await {
            tracing::warn!(
                "exec: removing the rules of {}: {e}",
                entry.status.interface
            );
        }
        self.sweep(entry);
        tracing::info!(
            id = entry.status.id,
            uid = entry.status.uid,
            "exec ended: {} ({})",
            entry.status.program,
            entry.status.interface
        );
    }

    fn sweep(&self, entry: &Entry) {
        let files = netns::Files::new(&self.dir, entry.status.id);
        for problem in netns::remove(&files, &entry.status.interface) {
            tracing::warn!("exec: {problem}");
        }
        if let Some(cgroup) = self.cgroup(entry)
            && let Err(e) = cgroup.remove()
        {
            tracing::warn!("exec: removing cgroup {}: {e}", cgroup.path().display());
        }
    }
}

/// Why this daemon may not start programs, from its /proc/self/status: a program it forks inherits
/// its seccomp filter and no-new-privileges, for good. Under the packaged systemd unit (which sets
/// SystemCallFilter, MemoryDenyWriteExecute, NoNewPrivileges...) a browser's JIT would die, its
/// sandbox fail, sudo refuse: rather than start programs that break in odd ways, exec refuses
/// and names the drop-in that lifts those options (docs/security.md, "`killswitch exec`").
fn inherited_sandbox(proc_status: &str) -> Option<String> {
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let seccomp = field("Seccomp:").is_some_and(|v| v != "0");
    let no_new_privs = field("NoNewPrivs:").is_some_and(|v| v != "0");
    let what = match (seccomp, no_new_privs) {
        (false, false) => return None,
        (true, false) => "a seccomp filter",
        (false, true) => "no-new-privileges",
        (true, true) => "a seccomp filter and no-new-privileges",
    };
    Some(format!(
        "`killswitch exec` is not enabled: killswitchd runs under {what} (its systemd unit's \
         sandbox), which every program it starts would inherit. An administrator enables exec \
         with the drop-in that lifts it: sudo install -D -m 644 \
         /usr/share/killswitch/exec.conf \
         /etc/systemd/system/killswitchd.service.d/exec.conf; sudo systemctl daemon-reload; \
         sudo systemctl restart killswitchd (the file is packaging/systemd/exec.conf in the \
         source; docs/security.md, \"killswitch exec\", says what it costs)"
    ))
}

/// The registry's file in `<state>/exec`.
const REGISTRY_FILE: &str = "scopes.json";

/// `killswitchd --teardown` with no daemon running: every exec namespace the registry in
/// `state_dir` names loses its veth (and its pin and resolv.conf). Without the rules teardown
/// removes, a namespace whose host side still forwarded would reach the physical link through the
/// main routing table; without its veth it reaches nothing. Its programs keep running, offline;
/// the registry is left for the next daemon, which sweeps the rest.
/// Returns the interfaces removed and the problems met.
pub fn teardown(state_dir: &Path) -> (Vec<String>, Vec<String>) {
    let dir = state_dir.join("exec");
    let registry: Registry = std::fs::read(dir.join(REGISTRY_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    for entry in registry.entries.values() {
        let files = netns::Files::new(&dir, entry.status.id);
        problems.extend(netns::remove(&files, &entry.status.interface));
        removed.push(entry.status.interface.to_string());
    }
    // The registry stays: the next daemon sweeps these scopes' cgroups once their programs end
    // (or adopts one still running, offline as it is now).
    (removed, problems)
}

/// The daemon's cgroup subtree ([`crate::cgroup::mount_if_missing`] having mounted cgroup2 at
/// start where no cgroup hierarchy was mounted at all).
fn find_subtree(dir: &Path) -> Result<Subtree, String> {
    crate::cgroup::mount_if_missing(dir)?;
    Subtree::find().map_err(|e| e.to_string())
}

fn tunnel_of(status: &Status) -> (Option<String>, Vec<std::net::IpAddr>) {
    match &status.tunnel {
        Some(tunnel) if status.state == killswitch_types::State::Connected => {
            (Some(tunnel.interface.to_string()), tunnel.dns.clone())
        }
        _ => (None, Vec::new()),
    }
}

/// Blocks until `cgroup` holds no process: `cgroup.events` changes (inotify `IN_MODIFY`) when
/// `populated` does.
fn wait_unpopulated(cgroup: &Cgroup) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let events = cgroup.path().join("cgroup.events");
    let watch = Inotify::init(InitFlags::IN_CLOEXEC).and_then(|inotify| {
        inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map(|_| inotify)
    });
    loop {
        match cgroup.populated() {
            Ok(true) => {}
            // Gone or unreadable: nothing left to wait for.
            _ => return,
        }
        match &watch {
            Ok(inotify) => {
                let _ = inotify.read_events();
            }
            // No inotify (out of watches): look again every half second.
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Serves one `exec` conversation, from the request to the program's exit. The connection
/// ends after it.
pub(crate) async fn serve(
    exec: Option<Arc<Exec>>,
    request: ExecRequest,
    peer: Peer,
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
    deadlines: crate::ipc::Deadlines,
    status: watch::Receiver<Status>,
) {
    let Some(exec) = exec else {
        let error = IpcError::new(
            ErrorKind::BadRequest,
            "this daemon does not run `exec` (it was started without its exec service)",
        );
        let _ = crate::ipc::send(write, ServerMessage::Error { error }, deadlines).await;
        return;
    };
    let message = match run(&exec, request, &peer, reader, write, deadlines, &status).await {
        Ok(exit) => ServerMessage::ExecExited { exit },
        Err(error) => ServerMessage::Error { error },
    };
    let _ = crate::ipc::send(write, message, deadlines).await;
}

fn bad(message: impl Into<String>) -> IpcError {
    IpcError::new(ErrorKind::BadRequest, message)
}

async fn run(
    exec: &Arc<Exec>,
    request: ExecRequest,
    peer: &Peer,
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
    deadlines: crate::ipc::Deadlines,
    status: &watch::Receiver<Status>,
) -> Result<ExecExit, IpcError> {
    if let Some(why) =
        inherited_sandbox(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
    {
        return Err(IpcError::new(ErrorKind::PermissionDenied, why));
    }
    let subtree = exec.subtree().map_err(|why| {
        bad(format!(
            "`exec` needs the daemon's cgroup v2 subtree, which it does not have: {why}"
        ))
    })?;
    let program = request
        .argv
        .first()
        .ok_or_else(|| bad("exec: no program given"))?
        .lossy();
    if request
        .argv
        .iter()
        .chain(&request.env)
        .any(|b| b.as_bytes().contains(&0))
        || request.cwd.as_bytes().contains(&0)
    {
        return Err(bad(
            "exec: an argument, environment entry or the directory contains a NUL byte",
        ));
    }
    if !request.cwd.as_bytes().starts_with(b"/") {
        return Err(bad(format!(
            "exec: the working directory {:?} is not an absolute path",
            request.cwd.lossy()
        )));
    }
    // Who: the socket says, never the request.
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
        .ok()
        .flatten();
    let groups = match &user {
        Some(user) => std::ffi::CString::new(user.name.as_str())
            .ok()
            .and_then(|name| {
                nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(peer.gid)).ok()
            })
            .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![peer.gid]),
        None => vec![peer.gid],
    };
    let identity = spawn::Identity {
        uid: peer.uid,
        gid: peer.gid,
        groups,
        pid: peer.pid,
    };
    // 1. A number, within the caller's limit.
    let entry = {
        let mut registry = exec.lock();
        let entry = registry
            .allocate(
                exec.config.block,
                exec.config.limit,
                peer.uid,
                user.as_ref().map(|u| u.name.clone()),
                program.clone(),
            )
            .map_err(|refused| IpcError::new(ErrorKind::TooManyPrograms, refused.to_string()))?;
        let mut entry = entry;
        entry.on_drop = request.on_drop;
        if let Some(kept) = registry.entries.get_mut(&entry.status.id) {
            kept.on_drop = request.on_drop;
        }
        exec.save(&registry);
        entry
    };
    let result = run_scope(
        exec, subtree, &entry, request, identity, reader, write, deadlines, status,
    )
    .await;
    if exec
        .cgroup(&entry)
        .is_none_or(|c| !c.populated().unwrap_or(false))
    {
        // Nothing of it runs any more (or it never did): removed before the answer, so that
        // when the CLI returns, nothing of the scope remains.
        exec.retire(&entry).await;
    } else {
        // The program or its children live on in the namespace (whatever went wrong with the
        // conversation): its rules stay, and it is removed when they are gone.
        let exec = Arc::clone(exec);
        tokio::spawn(async move {
            exec.wait_empty(&entry).await;
            exec.retire(&entry).await;
        });
    }
    result
}

#[expect(
    clippy::too_many_arguments,
    reason = "one conversation's parts, used once"
)]
async fn run_scope(
    exec: &Arc<Exec>,
    subtree: &Subtree,
    entry: &Entry,
    request: ExecRequest,
    identity: spawn::Identity,
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
    deadlines: crate::ipc::Deadlines,
    status: &watch::Receiver<Status>,
) -> Result<ExecExit, IpcError> {
    let failed = |what: String| IpcError::new(ErrorKind::BadRequest, what);
    // 2. The terminal.
    crate::ipc::send(write, ServerMessage::ExecSendFds, deadlines)
        .await
        .map_err(|e| failed(format!("exec: the client went away: {e}")))?;
    let stdio = tokio::time::timeout(FDS_DEADLINE, receive_fds(reader))
        .await
        .map_err(|_| failed(format!("exec: no file descriptors within {FDS_DEADLINE:?}")))??;
    // 3. The namespace and the cgroup.
    let (interface, dns) = tunnel_of(&status.borrow());
    let files = netns::Files::new(&exec.dir, entry.status.id);
    let veth = entry.status.interface.clone();
    let subnet = entry.status.subnet;
    let cgroup = subtree
        .create(&entry.cgroup)
        .map_err(|e| failed(format!("exec: {e}")))?;
    let prepared = {
        let files = files.clone();
        let procs = cgroup.path().join("cgroup.procs");
        tokio::task::spawn_blocking(move || -> Result<(OwnedFd, OwnedFd), String> {
            let namespace = netns::create(&files, &veth, subnet, &dns)?;
            if let Some(name) = interface
                && let Ok(name) = killswitch_types::InterfaceName::new(name)
                && killswitch_tunnel::netdev::index(name.as_str()).is_some()
            {
                netns::forward_on(&name)?;
            }
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| format!("opening {}: {e}", procs.display()))?;
            Ok((namespace, OwnedFd::from(procs)))
        })
        .await
        .map_err(|e| failed(format!("exec: setting up the namespace: {e}")))?
        .map_err(|e| failed(format!("exec: setting up the namespace: {e}")))?
    };
    // 4. Its rules, before anything runs in it.
    exec.publish().await?;
    // 5. The program.
    let on_drop = request.on_drop;
    let launch = spawn::Launch {
        argv: request.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: request.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
        cwd: request.cwd.as_bytes().to_vec(),
        stdio,
        namespace: prepared.0,
        cgroup_procs: prepared.1,
        resolv: files.resolv.clone(),
        identity,
    };
    let program = entry.status.program.clone();
    let cwd = request.cwd.lossy();
    let child = tokio::task::spawn_blocking(move || spawn::spawn(launch))
        .await
        .map_err(|e| failed(format!("exec: {e}")))?
        .map_err(|error| spawn_error(&program, &cwd, &error, &request.env))?;
    let pid = child.id();
    if let Some(on_drop) = on_drop {
        // `--freeze-on-drop` / `--kill-on-drop`: frozen or killed with its children whenever the
        // tunnel is lost ([`crate::freeze`]); forgotten when the scope is retired.
        exec.on_drop.watch(
            cgroup.clone(),
            on_drop,
            format!("exec {}", entry.status.program),
        );
    }
    exec.lock().started(entry.status.id, pid);
    // Only the status changes here (the rules are those already in force): a failure to show
    // the pid must not end the program's conversation, whose end would remove its rules.
    if let Err(e) = exec.publish().await {
        tracing::warn!(pid, "exec: {e}");
    }
    let mut started = entry.status.clone();
    started.pid = pid;
    tracing::info!(
        id = started.id,
        uid = started.uid,
        pid,
        "exec started: {} ({})",
        started.program,
        started.interface
    );
    // The CLI may be gone already: the program then gets its SIGHUP below.
    let _ = crate::ipc::send(
        write,
        ServerMessage::ExecStarted { scope: started },
        deadlines,
    )
    .await;
    // 6. Its life: signals from the CLI, SIGHUP when the CLI goes, its exit status.
    let pidfd = pidfd_open(pid);
    let mut waiting = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    });
    let mut line = Vec::new();
    let mut hung_up = false;
    let status = loop {
        line.clear();
        tokio::select! {
            waited = &mut waiting => break waited,
            read = reader.read_until(b'\n', &mut line), if !hung_up => {
                match read {
                    Ok(0) | Err(_) => {
                        tracing::info!(pid, "exec: the client hung up; SIGHUP to the program");
                        hung_up = true;
                        signal(pidfd.as_ref(), libc::SIGHUP);
                    }
                    Ok(_) => match std::str::from_utf8(&line).ok().map(|l| killswitch_types::ipc::decode_request(l.trim_end())) {
                        Some(Ok(Request::ExecSignal { signal: number })) if FORWARDED_SIGNALS.contains(&number) => {
                            tracing::info!(pid, "exec: forwarding signal {number} from the client");
                            signal(pidfd.as_ref(), number);
                        }
                        _ => {
                            let error = bad("while a program runs, only exec-signal (1, 2, 3 or 15) is understood");
                            let _ = crate::ipc::send(write, ServerMessage::Error { error }, deadlines).await;
                        }
                    },
                }
            }
        }
    };
    let status = status
        .map_err(|e| failed(format!("exec: {e}")))?
        .map_err(|e| failed(format!("exec: waiting for the program: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExecExit { code, signal: None },
        (None, Some(signal)) => ExecExit {
            code: 128 + signal,
            signal: Some(signal),
        },
        (None, None) => ExecExit {
            code: 255,
            signal: None,
        },
    })
}

/// The error for a program that did not start, naming the step or the program.
fn spawn_error(
    program: &str,
    cwd: &str,
    error: &spawn::SpawnError,
    env: &[killswitch_types::exec::Bytes],
) -> IpcError {
    let mut code = spawn::status_for(error);
    // execvp reports EACCES when a directory of PATH could not be searched (the caller's PATH may
    // name one of root's), even when the program is nowhere: a shell says "not found" then.
    if code == 126
        && error.step.is_none()
        && error.error.raw_os_error() == Some(libc::EACCES)
        && !program.contains('/')
        && !in_path(program, env)
    {
        code = 127;
    }
    let kind = if code == 127 {
        ErrorKind::ProgramNotFound
    } else {
        ErrorKind::ProgramNotExecutable
    };
    let message = match error.step {
        None if code == 127 => format!("{program}: command not found"),
        None => format!("{program}: cannot run it: {}", error.error),
        Some(spawn::Step::Cwd) => format!(
            "cannot enter the working directory {cwd} as you: {} (run `killswitch exec` from a directory you may enter)",
            error.error
        ),
        Some(step) => format!("{program}: {} failed: {}", step.describe(), error.error),
    };
    IpcError::new(kind, message)
}

/// Whether a file named `program` is in a directory of `PATH` (the caller's environment's).
fn in_path(program: &str, env: &[killswitch_types::exec::Bytes]) -> bool {
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH=").map(<[u8]>::to_vec))
        .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
    path.split(|b| *b == b':').any(|dir| {
        use std::os::unix::ffi::OsStrExt;
        let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
        Path::new(std::ffi::OsStr::from_bytes(dir))
            .join(program)
            .exists()
    })
}

/// Receives the CLI's stdin, stdout and stderr (`SCM_RIGHTS` with [`FDS_BYTE`]), close-on-exec.
async fn receive_fds(reader: &mut BufReader<OwnedReadHalf>) -> Result<[OwnedFd; 3], IpcError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    if !reader.buffer().is_empty() {
        return Err(bad(
            "exec: data came before the file descriptors were asked for",
        ));
    }
    let stream: &tokio::net::UnixStream = reader.get_ref().as_ref();
    loop {
        stream
            .readable()
            .await
            .map_err(|e| bad(format!("exec: {e}")))?;
        let received = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [std::io::IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 3]);
            let message = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)?;
            let mut fds: Vec<OwnedFd> = Vec::new();
            for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in this process for
                    // us; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            Ok((message.bytes, byte[0], fds))
        });
        match received {
            Ok((1, FDS_BYTE, fds)) => {
                return <[OwnedFd; 3]>::try_from(fds).map_err(|fds| {
                    bad(format!(
                        "exec: expected 3 file descriptors (stdin, stdout, stderr), got {}",
                        fds.len()
                    ))
                });
            }
            Ok((0, _, _)) => return Err(bad("exec: the client went away")),
            Ok(_) => {
                return Err(bad(
                    "exec: expected the file descriptors, got something else",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(bad(format!("exec: receiving the file descriptors: {e}"))),
        }
    }
}

/// A handle on process `pid` that signals it and never another process that later gets its
/// number (`pidfd_open`, Linux 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a descriptor the kernel just returned to us.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(pidfd: Option<&OwnedFd>, number: i32) {
    if let Some(fd) = pidfd {
        // SAFETY: pidfd_send_signal with a descriptor we own, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                number,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::inherited_sandbox;

    #[test]
    fn a_filtered_daemon_refuses_exec_and_names_the_drop_in() {
        let free = "Name:\tkillswitchd\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n";
        assert_eq!(inherited_sandbox(free), None);
        // An old kernel without the fields: nothing known to be inherited.
        assert_eq!(inherited_sandbox("Name:\tkillswitchd\n"), None);
        let unit = "NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        let why = inherited_sandbox(unit).expect("refused");
        assert!(
            why.contains("a seccomp filter and no-new-privileges") && why.contains("exec.conf"),
            "{why}"
        );
        assert!(
            inherited_sandbox("NoNewPrivs:\t0\nSeccomp:\t2\n")
                .expect("refused")
                .contains("runs under a seccomp filter (")
        );
        assert!(
            inherited_sandbox("NoNewPrivs:\t1\nSeccomp:\t0\n")
                .expect("refused")
                .contains("runs under no-new-privileges (")
        );
    }
}
