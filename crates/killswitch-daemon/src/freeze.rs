//! Freeze on drop (issue 15): the programs frozen through cgroup v2's `cgroup.freeze` while the
//! tunnel is lost and thawed when it is back, or killed (`cgroup.kill`) for `kill_on_drop`.
//!
//! This module is the executor's side: the [`Registry`] of watched cgroups and the I/O on them.
//! *When* they are held is the state machine's decision ([`decide`], kept by [`crate::core`]),
//! which emits `Effect::Freeze` and `Effect::Thaw`; [`crate::run`] performs them through
//! [`Registry::freeze`] and [`Registry::thaw`] and reports back.
//!
//! Two ways in:
//! - config.toml's `freeze_on_drop` and `kill_on_drop` list executables. Each valid one gets a
//!   cgroup of the daemon's subtree, `drop-<n>`; the processes of this network namespace whose
//!   `/proc/PID/exe` is that file ([`exe`]) are moved into it, so that their children are born
//!   there. They are found by a scan of `/proc` when the configuration is loaded or reloaded,
//!   every [`SCAN_EVERY`] while the tunnel is up (so that at a loss they are already in place and
//!   the freeze is one write per cgroup), at once when the tunnel is lost, and every
//!   [`SCAN_WHILE_HELD`] while it stays lost, so that a program started meanwhile is frozen (or
//!   killed) within that period: moving a process into a frozen cgroup freezes it. (Linux's
//!   process-event connector would say at once when a program starts, but it reports only in the
//!   initial network namespace, and the daemon may run in another.)
//! - `killswitch exec --freeze-on-drop|--kill-on-drop`: the exec code puts the program in a
//!   cgroup of its own and calls [`Registry::watch`]; [`Registry::forget`] when that cgroup goes.
//!
//! Only processes in the daemon's network namespace are ever matched, and only the daemon's own
//! subtree is ever written: a daemon in a namespace never touches the host's processes.
//!
//! Errors (no cgroup v2, a write refused) are reported in `status` and the log; the daemon runs
//! on, protected by its firewall, which never depends on this.

pub mod decide;
pub mod exe;

use crate::cgroup::{Cgroup, CgroupError, Subtree};
use decide::Report;
use exe::FileId;
use killswitch_types::OnDrop;
use killswitch_types::ipc::WatchedProgram;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often the configured executables are looked for while the tunnel is up.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How often while the watched programs are held: a program started meanwhile is held within
/// this period.
pub const SCAN_WHILE_HELD: Duration = Duration::from_millis(200);
/// The prefix of the cgroups this module creates for config.toml's entries.
const DROP_PREFIX: &str = "drop-";

/// Where a watched cgroup comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A config.toml entry: the executable's path and identity. Its cgroup is this module's.
    Config { path: PathBuf, exe: FileId },
    /// `killswitch exec`: the exec code owns the cgroup.
    Exec,
}

#[derive(Debug, Clone)]
struct Entry {
    cgroup: Cgroup,
    on_drop: OnDrop,
    label: String,
    source: Source,
    /// Where each process moved in came from, to put it back when the entry goes.
    origins: HashMap<u32, PathBuf>,
}

#[derive(Debug)]
struct Inner {
    subtree: Result<Subtree, String>,
    entries: Vec<Entry>,
    refused: Vec<String>,
    /// Why the watched programs are held, while they are.
    held: Option<String>,
    /// The last failure to freeze, thaw, kill or move.
    error: Option<String>,
    /// `drop-*` cgroups no entry uses any more (or a previous daemon left): removed once empty.
    stale: Vec<Cgroup>,
    /// The configured entries as given, to leave them be when a reload changes nothing.
    configured: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
}

/// The watched cgroups: cheaply clonable, shared by the event loop, the periodic scan and the
/// exec code.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
    /// Wakes the periodic scan at once (the tunnel was lost: look now, and then more often).
    rescan: Arc<tokio::sync::Notify>,
    proc: Arc<Path>,
}

impl Registry {
    /// A registry over the daemon's subtree, or one that says why there is none (every watch
    /// and config entry is then refused with that reason).
    pub fn new(subtree: Result<Subtree, CgroupError>) -> Registry {
        Registry::with_proc(subtree, Path::new("/proc"))
    }

    /// The same, with processes read from `proc` (tests).
    pub fn with_proc(subtree: Result<Subtree, CgroupError>, proc: &Path) -> Registry {
        Registry {
            inner: Arc::new(Mutex::new(Inner {
                subtree: subtree.map_err(|e| e.to_string()),
                entries: Vec::new(),
                refused: Vec::new(),
                held: None,
                error: None,
                stale: Vec::new(),
                configured: None,
            })),
            changed: Arc::new(tokio::sync::Notify::new()),
            rescan: Arc::new(tokio::sync::Notify::new()),
            proc: Arc::from(proc),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; the data (a list) stays usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches `cgroup` (an exec'd program's): frozen or killed, per `on_drop`, whenever the
    /// tunnel is lost; at once if it is lost now. Watching a cgroup again replaces its entry.
    pub fn watch(&self, cgroup: Cgroup, on_drop: OnDrop, label: String) {
        {
            let mut inner = self.lock();
            inner.entries.retain(|e| e.cgroup != cgroup);
            let entry = Entry {
                cgroup,
                on_drop,
                label,
                source: Source::Exec,
                origins: HashMap::new(),
            };
            if let Some(reason) = inner.held.clone() {
                let outcome = hold(&entry);
                note(&mut inner, outcome, &reason);
            }
            inner.entries.push(entry);
        }
        self.changed.notify_one();
    }

    /// Stops watching `cgroup` (its program ended, or its cgroup is being removed). A frozen one
    /// is thawed first: nothing the daemon no longer watches stays frozen.
    pub fn forget(&self, cgroup: &Cgroup) {
        {
            let mut inner = self.lock();
            let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut inner.entries)
                .into_iter()
                .partition(|e| &e.cgroup == cgroup);
            inner.entries = kept;
            for entry in gone {
                if entry.cgroup.exists() {
                    let _ = entry.cgroup.set_frozen(false);
                }
            }
        }
        self.changed.notify_one();
    }

    /// Resolves config.toml's `freeze_on_drop` and `kill_on_drop` (at start and on every reload)
    /// and makes the configured entries match: a new path gets a `drop-<n>` cgroup, a path that
    /// stays keeps its cgroup, a path that went has its processes thawed and put back where they
    /// came from. Entries that cannot be used are refused (see `status`), the others apply.
    pub fn configure(&self, freeze: &[PathBuf], kill: &[PathBuf]) {
        {
            let mut inner = self.lock();
            let first = inner.configured.is_none();
            inner.configured = Some((freeze.to_vec(), kill.to_vec()));
            let subtree = inner.subtree.clone();
            let mut refused = Vec::new();
            let mut wanted: Vec<(PathBuf, FileId, OnDrop)> = Vec::new();
            let own = FileId::of(Path::new("/proc/self/exe")).ok();
            let paths = (freeze.iter().map(|p| (p, OnDrop::Freeze)))
                .chain(kill.iter().map(|p| (p, OnDrop::Kill)));
            for (path, on_drop) in paths {
                let key = match on_drop {
                    OnDrop::Freeze => "freeze_on_drop",
                    OnDrop::Kill => "kill_on_drop",
                };
                if let Err(why) = &subtree {
                    refused.push(format!("{key} {}: {why}", path.display()));
                    continue;
                }
                match exe::resolve_executable(path) {
                    Err(why) => refused.push(format!("{key} {why}")),
                    Ok(id) if Some(id) == own => refused.push(format!(
                        "{key} {}: that is killswitchd itself",
                        path.display()
                    )),
                    Ok(id) => match wanted.iter().find(|(_, other, _)| *other == id) {
                        Some((other, _, _)) => refused.push(format!(
                            "{key} {}: the same executable as {}",
                            path.display(),
                            other.display()
                        )),
                        None => wanted.push((path.clone(), id, on_drop)),
                    },
                }
            }
            inner.refused = refused;
            let Ok(subtree) = subtree else {
                return;
            };
            // Entries that stay (same path, same action) keep their cgroup and what is in it; the
            // file may be a new one (a package upgrade), which is what is matched from now on.
            let (mut kept, gone): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut inner.entries)
                .into_iter()
                .partition(|e| match &e.source {
                    Source::Exec => true,
                    Source::Config { path, .. } => wanted
                        .iter()
                        .any(|(p, _, on_drop)| p == path && *on_drop == e.on_drop),
                });
            for entry in &mut kept {
                if let Source::Config { path, exe } = &mut entry.source
                    && let Some((_, id, _)) = wanted.iter().find(|(p, _, _)| p == path)
                {
                    *exe = *id;
                }
            }
            for entry in gone {
                release(&entry, &subtree);
                inner.stale.push(entry.cgroup);
            }
            if first {
                // What a previous daemon left: nothing of it stays frozen; processes that still
                // match are moved into this run's cgroups by the scan, and the rest is removed
                // once empty.
                for cgroup in subtree.list().unwrap_or_default() {
                    if cgroup.name().starts_with(DROP_PREFIX) {
                        let _ = cgroup.set_frozen(false);
                        inner.stale.push(cgroup);
                    }
                }
            }
            for (path, id, on_drop) in wanted {
                let exists = kept
                    .iter()
                    .any(|e| matches!(&e.source, Source::Config { path: p, .. } if *p == path));
                if exists {
                    continue;
                }
                let used: Vec<String> = kept.iter().map(|e| e.cgroup.name()).collect();
                let name = (0..)
                    .map(|n| format!("{DROP_PREFIX}{n}"))
                    .find(|name| !used.contains(name))
                    .unwrap_or_default();
                match subtree.create(&name) {
                    Ok(cgroup) => {
                        inner.stale.retain(|s| *s != cgroup);
                        kept.push(Entry {
                            cgroup,
                            on_drop,
                            label: path.display().to_string(),
                            source: Source::Config { path, exe: id },
                            origins: HashMap::new(),
                        });
                    }
                    Err(e) => inner.refused.push(format!(
                        "{} {}: cannot create its cgroup: {e}",
                        match on_drop {
                            OnDrop::Freeze => "freeze_on_drop",
                            OnDrop::Kill => "kill_on_drop",
                        },
                        path.display()
                    )),
                }
            }
            inner.entries = kept;
            if let Some(reason) = inner.held.clone() {
                // Entries added while the tunnel is lost are held at once.
                for i in 0..inner.entries.len() {
                    let outcome = hold(&inner.entries[i]);
                    note(&mut inner, outcome, &reason);
                }
            }
        }
        self.scan();
        self.changed.notify_one();
    }

    /// The configured entries as last given to [`Registry::configure`].
    pub fn configured(&self) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
        self.lock().configured.clone()
    }

    /// Waits until the watched set changes (a watch, a forget, a reload).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Whether the watched programs are held now.
    pub fn is_held(&self) -> bool {
        self.lock().held.is_some()
    }

    /// Freezes every watched cgroup (kills the `kill` ones), because of `reason` (`tunnel
    /// lost`). One write per cgroup: the kernel completes the freeze asynchronously, and
    /// `status` reads `cgroup.events` for whether it has.
    pub fn freeze(&self, reason: &str) -> Report {
        let mut inner = self.lock();
        inner.held = Some(reason.to_owned());
        inner.error = None;
        let (mut frozen, mut killed) = (0usize, 0usize);
        for i in 0..inner.entries.len() {
            let entry = &inner.entries[i];
            let populated = entry.cgroup.populated().unwrap_or(false);
            let outcome = hold(entry);
            let on_drop = entry.on_drop;
            if outcome.is_ok() && populated {
                match on_drop {
                    OnDrop::Freeze => frozen += 1,
                    OnDrop::Kill => killed += 1,
                }
            }
            note(&mut inner, outcome, reason);
        }
        let mut done = Vec::new();
        if frozen > 0 || killed == 0 {
            done.push(format!("frozen {}", programs(frozen)));
        }
        if killed > 0 {
            done.push(format!("killed {}", programs(killed)));
        }
        let event = format!("{} ({reason})", done.join(", "));
        // Programs not in their cgroup yet are looked for now, off the caller's thread, and then
        // every SCAN_WHILE_HELD.
        self.rescan.notify_one();
        report(&inner, Some(event))
    }

    /// Thaws every watched cgroup (the tunnel is back, or no tunnel is wanted any more).
    pub fn thaw(&self) -> Report {
        let mut inner = self.lock();
        let was_held = inner.held.take().is_some();
        inner.error = None;
        let mut thawed = 0usize;
        let mut failures = Vec::new();
        for entry in &inner.entries {
            if entry.on_drop != OnDrop::Freeze || !entry.cgroup.exists() {
                continue;
            }
            let populated = entry.cgroup.populated().unwrap_or(false);
            match entry.cgroup.set_frozen(false) {
                Ok(()) => thawed += usize::from(populated),
                Err(e) => failures.push(format!("thawing {}: {e}", entry.label)),
            }
        }
        if !failures.is_empty() {
            let error = failures.join("; ");
            tracing::error!("{error}");
            inner.error = Some(error);
        }
        // No event for a thaw that follows no freeze and thaws nothing (every daemon start).
        let event = (was_held || thawed > 0).then(|| format!("thawed {}", programs(thawed)));
        report(&inner, event)
    }

    /// The watched set as it is now, without an event.
    pub fn report(&self) -> Report {
        report(&self.lock(), None)
    }

    /// The watched programs, read from the kernel now (frozen or not, how many processes).
    pub fn programs(&self) -> Vec<WatchedProgram> {
        programs_now(&self.lock())
    }

    /// Moves the configured executables' processes of this namespace that are not in their
    /// cgroup yet into it (and kills them at once if theirs is a `kill_on_drop` entry and the
    /// tunnel is lost; a frozen cgroup freezes what joins it). Removes stale cgroups that have
    /// emptied. Returns how many processes were moved.
    pub fn scan(&self) -> usize {
        let (configured, mount, root) = {
            let inner = self.lock();
            let Ok(subtree) = &inner.subtree else {
                return 0;
            };
            let configured: Vec<(PathBuf, FileId, Cgroup)> = inner
                .entries
                .iter()
                .filter_map(|e| match &e.source {
                    Source::Config { path, exe } => Some((path.clone(), *exe, e.cgroup.clone())),
                    Source::Exec => None,
                })
                .collect();
            (
                configured,
                subtree.mount().to_owned(),
                subtree.root().to_owned(),
            )
        };
        // Each entry's file as resolved when configured, and as the path names it now: a
        // package upgrade replaces the file (a new inode), and the programs started after it
        // run the new one while those started before still run the old.
        let mut targets: Vec<(FileId, Cgroup)> = Vec::new();
        for (path, exe, cgroup) in configured {
            if let Ok(now) = exe::resolve_executable(&path)
                && now != exe
            {
                targets.push((now, cgroup.clone()));
            }
            targets.push((exe, cgroup));
        }
        let ids: Vec<FileId> = targets.iter().map(|(id, _)| *id).collect();
        let own = match exe::own_netns() {
            Ok(own) => own,
            Err(e) => {
                // Without knowing its own namespace the daemon cannot tell its processes from
                // the host's: it touches none.
                self.lock().error = Some(format!("cannot read this network namespace: {e}"));
                return 0;
            }
        };
        let found = exe::find(&self.proc, &ids, own, std::process::id());
        let mut inner = self.lock();
        inner
            .stale
            .retain(|cgroup| cgroup.remove().is_err() && cgroup.exists());
        let mut moved = 0;
        let held = inner.held.clone();
        for candidate in found {
            // The entry may have gone (a reload) since the targets were read.
            let Some(index) = targets
                .get(candidate.target)
                .and_then(|(_, cgroup)| inner.entries.iter().position(|e| e.cgroup == *cgroup))
            else {
                continue;
            };
            let within = inner.entries[index]
                .cgroup
                .path()
                .strip_prefix(&mount)
                .map(|p| Path::new("/").join(p))
                .ok();
            let current = exe::cgroup_of(&self.proc, candidate.pid);
            if current.is_some() && current == within {
                continue;
            }
            // A process in another cgroup of the daemon's (an exec'd or bypassed program's) is
            // that feature's: it stays. Only `drop-*` cgroups a previous daemon left are taken
            // over.
            let absolute = current
                .as_ref()
                .map(|c| mount.join(c.strip_prefix("/").unwrap_or(c)));
            if let Some(below) = absolute.as_ref().and_then(|a| a.strip_prefix(&root).ok())
                && !below
                    .components()
                    .next()
                    .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with(DROP_PREFIX))
            {
                continue;
            }
            // The pid must still be the process that was matched, up to the write.
            if !candidate.still_the_same(&self.proc) {
                continue;
            }
            let entry = &mut inner.entries[index];
            match entry.cgroup.add_process(candidate.pid) {
                Ok(()) => {
                    moved += 1;
                    if let Some(origin) = current {
                        entry.origins.insert(
                            candidate.pid,
                            mount.join(origin.strip_prefix("/").unwrap_or(&origin)),
                        );
                    }
                    tracing::info!(
                        pid = candidate.pid,
                        "moved a process of {} into {}",
                        entry.label,
                        entry.cgroup.name()
                    );
                    if held.is_some() && entry.on_drop == OnDrop::Kill {
                        let _ = entry.cgroup.kill();
                    }
                }
                // It exited meanwhile: nothing to do.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    let error = format!(
                        "moving process {} of {} into {}: {e}",
                        candidate.pid,
                        entry.label,
                        entry.cgroup.name()
                    );
                    tracing::warn!("{error}");
                    inner.error = Some(error);
                }
            }
        }
        moved
    }

    /// Runs the scan forever, every [`SCAN_EVERY`] ([`SCAN_WHILE_HELD`] while held), off the
    /// event loop's thread. Nothing to scan for costs one lock per period.
    pub async fn scan_forever(self) {
        loop {
            let pause = if self.is_held() {
                SCAN_WHILE_HELD
            } else {
                SCAN_EVERY
            };
            // A periodic poll, not a synchronisation: there is no event to wait for (see the
            // module's doc). A freeze wakes it at once.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.rescan.notified() => {}
            }
            if !self.has_configured_entries() {
                continue;
            }
            let registry = self.clone();
            let _ = tokio::task::spawn_blocking(move || registry.scan()).await;
        }
    }

    fn has_configured_entries(&self) -> bool {
        self.lock()
            .entries
            .iter()
            .any(|e| matches!(e.source, Source::Config { .. }))
    }

    /// The daemon stops: every frozen cgroup is thawed (its firewall stays, so a thawed program
    /// still cannot get out; a frozen one would stay frozen with nothing left to thaw it). The
    /// configured entries' cgroups that are empty are removed, and the subtree with them when
    /// nothing else is in it; processes still in one stay there, and the next daemon's scan
    /// takes them over.
    pub fn thaw_for_stop(&self) {
        let inner = self.lock();
        for entry in &inner.entries {
            if entry.cgroup.exists() {
                let _ = entry.cgroup.set_frozen(false);
            }
            if matches!(entry.source, Source::Config { .. }) {
                let _ = entry.cgroup.remove();
            }
        }
        for cgroup in &inner.stale {
            let _ = cgroup.remove();
        }
        if let Ok(subtree) = &inner.subtree {
            // Every cgroup of the subtree, watched or not (an exec'd program's whose watch a
            // failed request never registered): nothing this daemon froze outlives it frozen.
            for cgroup in subtree.list().unwrap_or_default() {
                let _ = cgroup.set_frozen(false);
            }
            // Fails while anything (an exec'd program's cgroup) is still in it, as it should.
            let _ = std::fs::remove_dir(subtree.root());
        }
    }
}

/// Thaws what a daemon of this network namespace that did not stop cleanly (a crash) left frozen
/// in its cgroups, and removes its `drop-*` cgroups that are empty (`killswitchd --teardown` with no
/// daemon running: no daemon will come to thaw them). Creates nothing. Returns how many it thawed.
pub fn thaw_left_behind() -> usize {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let (Some(mount), Ok(netns)) = (crate::cgroup::cgroup2_mount(&mountinfo), exe::own_netns())
    else {
        return 0;
    };
    let root = mount.join("killswitch").join(format!("net-{}", netns.ino));
    if !root.is_dir() {
        return 0;
    }
    let Ok(subtree) = Subtree::at(mount, root) else {
        return 0;
    };
    let mut thawed = 0;
    for cgroup in subtree.list().unwrap_or_default() {
        // Every cgroup: `exec --freeze-on-drop` programs (`exec-*`) too, whose daemon is gone.
        if cgroup.frozen().unwrap_or(false) && cgroup.set_frozen(false).is_ok() {
            thawed += 1;
        }
        if cgroup.name().starts_with(DROP_PREFIX) {
            let _ = cgroup.remove();
        }
    }
    // Fails while anything else (another feature's cgroup) is in it.
    let _ = std::fs::remove_dir(subtree.root());
    thawed
}

/// "1 program", "2 programs".
fn programs(n: usize) -> String {
    if n == 1 {
        "1 program".to_owned()
    } else {
        format!("{n} programs")
    }
}

/// Freezes (or kills) one entry's cgroup.
fn hold(entry: &Entry) -> Result<(), String> {
    let done = match entry.on_drop {
        OnDrop::Freeze => entry.cgroup.set_frozen(true),
        OnDrop::Kill => entry.cgroup.kill(),
    };
    done.map_err(|e| {
        format!(
            "{} {}: {e}",
            match entry.on_drop {
                OnDrop::Freeze => "freezing",
                OnDrop::Kill => "killing",
            },
            entry.label
        )
    })
}

fn note(inner: &mut Inner, outcome: Result<(), String>, reason: &str) {
    if let Err(error) = outcome {
        tracing::error!("{error} ({reason})");
        inner.error = Some(error);
    }
}

/// A configured entry goes: its cgroup thawed and its processes put back where they came from
/// (those whose origin is gone stay, thawed, and the cgroup is removed once they have exited).
fn release(entry: &Entry, subtree: &Subtree) {
    let _ = entry.cgroup.set_frozen(false);
    for pid in entry.cgroup.pids().unwrap_or_default() {
        let origin = entry
            .origins
            .get(&pid)
            .filter(|o| o.starts_with(subtree.mount()) && o.is_dir());
        if let Some(origin) = origin {
            let _ = std::fs::write(origin.join("cgroup.procs"), format!("{pid}\n"));
        }
    }
    let _ = entry.cgroup.remove();
}

fn report(inner: &Inner, event: Option<String>) -> Report {
    Report {
        programs: programs_now(inner),
        refused: inner.refused.clone(),
        error: inner
            .subtree
            .as_ref()
            .err()
            .cloned()
            .or(inner.error.clone()),
        event,
    }
}

fn programs_now(inner: &Inner) -> Vec<WatchedProgram> {
    inner
        .entries
        .iter()
        .map(|e| WatchedProgram {
            label: e.label.clone(),
            on_drop: e.on_drop,
            cgroup: e.cgroup.path().display().to_string(),
            frozen: e.cgroup.frozen().unwrap_or(false),
            processes: count_processes(e.cgroup.path()),
        })
        .collect()
}

/// The processes in the cgroup at `path` and in those below it.
fn count_processes(path: &Path) -> u32 {
    let here = std::fs::read_to_string(path.join("cgroup.procs"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    let below: u32 = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| count_processes(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    u32::try_from(here)
        .unwrap_or(u32::MAX)
        .saturating_add(below)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_cgroup_v2_every_entry_is_refused_with_the_reason() {
        let registry = Registry::new(Err(CgroupError::NoCgroup2));
        registry.configure(&[PathBuf::from("/bin/sh")], &[PathBuf::from("/bin/true")]);
        let report = registry.report();
        assert!(report.programs.is_empty());
        assert_eq!(report.refused.len(), 2, "{:?}", report.refused);
        assert!(report.refused[0].starts_with("freeze_on_drop /bin/sh: no cgroup v2"));
        assert!(report.refused[1].starts_with("kill_on_drop /bin/true: no cgroup v2"));
        assert!(report.error.is_some_and(|e| e.contains("cgroup v2")));
        // Freezing nothing works and says so.
        assert_eq!(
            registry.freeze("tunnel lost").event.as_deref(),
            Some("frozen 0 programs (tunnel lost)")
        );
        assert_eq!(registry.scan(), 0);
    }

    #[test]
    fn counts_read_as_words() {
        assert_eq!(programs(1), "1 program");
        assert_eq!(programs(0), "0 programs");
        assert_eq!(programs(3), "3 programs");
    }
}
