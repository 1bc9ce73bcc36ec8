//! `killswitch exec --bypass` (issue 15 item 3): the daemon's bypass cgroup, and the I/O that
//! keeps the rules on it.
//!
//! Placement, as mullvad-exclude does it: the CLI asks the daemon to move the CLI's own process
//! into the cgroup `bypass` of the daemon's subtree ([`crate::cgroup`]), and then execs the
//! program itself, so the program keeps its environment, working directory, terminal, job
//! control and exit status. The process is the one the kernel names for the connection
//! (SO_PEERCRED), never one from the request; the daemon checks that it still runs as the
//! connecting user and in the daemon's own network namespace before it moves it.
//!
//! The rules follow the cgroup, level-triggered: whenever the cgroup may have changed (a join,
//! an inotify event on the subtree's directory or on the cgroup's `cgroup.events`, the daemon's
//! start), [`Bypass::observe`] reads what is there. A populated cgroup gets its id and depth
//! read again (removing and re-creating it changes the id), the marking BPF program attached
//! ([`crate::bpf`]; again after a re-creation or a restart, which replaces rather than adds),
//! and the core compiles the firewall rule and the routing rule for that id
//! ([`killswitch_policy::bypass`]). A cgroup whose last process exited is removed (its BPF
//! attachment goes with it) and the rules with it: after `exec --bypass` ends, nothing of it
//! remains. A cgroup that exists but was never populated (created by someone else, or not yet
//! joined) is left for whoever is about to fill it. Children forked inside stay inside: a
//! process cannot leave a cgroup without write access to the common ancestor, which is root's.
//!
//! What the core sees is a [`BypassView`]: plain data, no I/O.

use crate::authz::Peer;
use crate::cgroup::{Cgroup, Subtree};
use killswitch_policy::BypassScope;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::linux::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The bypass cgroup's name in the daemon's subtree.
pub const CGROUP_NAME: &str = "bypass";

/// The bypass cgroup as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BypassView {
    /// What the rules match.
    pub scope: BypassScope,
    /// The cgroup's directory, as the daemon reaches it.
    pub path: PathBuf,
    /// The cgroup as the kernel names it (`/killswitch/net-N/bypass`, as in /proc/PID/cgroup),
    /// whatever the mount point: what `status` shows.
    pub name: String,
    /// How many processes were in it when it was looked at.
    pub processes: u32,
}

/// The bypass cgroup and what the daemon did to it.
#[derive(Debug)]
pub struct Bypass {
    /// Where the daemon's subtree is (cgroup2 mount, subtree directory), whether or not it
    /// exists yet, or why there is none (no cgroup v2). It is created at the first join.
    location: Result<(PathBuf, PathBuf), String>,
    /// The cgroup id the BPF program was last attached to by this daemon.
    attached_to: Option<u64>,
    /// Whether the cgroup was seen populated since it was last created: only then does its
    /// emptiness mean a bypass ended.
    was_populated: bool,
}

impl Bypass {
    /// Finds where the daemon's subtree is (creating nothing). Without cgroup v2 the daemon runs
    /// as before and refuses `exec --bypass`, naming what is missing.
    pub fn find() -> Self {
        let mut bypass = Bypass::at(locate());
        // An empty bypass cgroup found at start is what a daemon that stopped before its last
        // bypassed process exited left: the first look removes it.
        bypass.was_populated = true;
        bypass
    }

    /// The bypass cgroup of the subtree at `location` (cgroup2 mount, subtree directory; tests
    /// use one of their own).
    pub fn at(location: Result<(PathBuf, PathBuf), String>) -> Self {
        Bypass {
            location,
            attached_to: None,
            was_populated: false,
        }
    }

    fn cgroup(&self) -> Option<(Subtree, Cgroup)> {
        let (mount, root) = self.location.as_ref().ok()?;
        let subtree = Subtree::existing(mount.clone(), root.clone())?;
        let cgroup = subtree.cgroup(CGROUP_NAME);
        Some((subtree, cgroup))
    }

    /// The subtree's directory, for the watch, once it exists.
    pub fn root(&self) -> Option<&Path> {
        let (_, root) = self.location.as_ref().ok()?;
        root.is_dir().then_some(root.as_path())
    }

    /// Moves `peer`'s process into the bypass cgroup, with the BPF program attached first, and
    /// returns the cgroup as it is now. The error names what is wrong; on error the process is
    /// where it was (unless only the final look failed).
    pub fn join(&mut self, peer: &Peer) -> Result<BypassView, String> {
        let (mount, root) = self
            .location
            .as_ref()
            .map_err(|e| format!("bypass needs cgroup v2: {e}"))?;
        let pid = peer.pid.ok_or_else(|| {
            "the daemon cannot name the requesting process (it runs in another pid namespace); \
             run killswitch exec --bypass in the daemon's pid namespace"
                .to_owned()
        })?;
        let pid = u32::try_from(pid).map_err(|_| format!("bad process id {pid}"))?;
        check_process(pid, peer.uid)?;
        let subtree = Subtree::at(mount.clone(), root.clone()).map_err(|e| e.to_string())?;
        let subtree = &subtree;
        let level_of = |cgroup: &Cgroup| {
            subtree.level(cgroup).ok_or_else(|| {
                format!(
                    "{} is not below the cgroup2 mount {}",
                    cgroup.path().display(),
                    subtree.mount().display()
                )
            })
        };
        let cgroup = subtree.create(CGROUP_NAME).map_err(|e| e.to_string())?;
        level_of(&cgroup)?;
        let id = cgroup
            .id()
            .map_err(|e| format!("reading the id of {}: {e}", cgroup.path().display()))?;
        // Attached before the process is moved: its first socket is already marked.
        crate::bpf::attach_mark(cgroup.path(), killswitch_policy::BYPASS_MARK)
            .map_err(|e| e.to_string())?;
        self.attached_to = Some(id);
        cgroup
            .add_process(pid)
            .map_err(|e| format!("moving process {pid} into {}: {e}", cgroup.path().display()))?;
        self.was_populated = true;
        tracing::info!(pid, uid = peer.uid, cgroup = %cgroup.path().display(), id, "bypass: process joined");
        self.observe()
            .ok_or_else(|| format!("{} emptied at once", cgroup.path().display()))
    }

    /// Looks at the bypass cgroup and makes it consistent: populated, its BPF program attached
    /// (again, if its id changed) and its view returned; emptied after being populated, removed;
    /// absent or never populated, `None`.
    pub fn observe(&mut self) -> Option<BypassView> {
        let (subtree, cgroup) = self.cgroup()?;
        let mount = subtree.mount().to_owned();
        if !cgroup.exists() {
            self.was_populated = false;
            self.attached_to = None;
            return None;
        }
        let level = subtree.level(&cgroup)?;
        let populated = match cgroup.populated() {
            Ok(populated) => populated,
            Err(e) => {
                tracing::warn!("bypass: reading {}: {e}", cgroup.path().display());
                return None;
            }
        };
        if !populated {
            if self.was_populated {
                // The last bypassed process exited: nothing of the bypass may remain.
                match cgroup.remove() {
                    Ok(()) => {
                        tracing::info!(cgroup = %cgroup.path().display(), "bypass ended: cgroup removed")
                    }
                    Err(e) => tracing::warn!("bypass: removing {}: {e}", cgroup.path().display()),
                }
                self.was_populated = false;
                self.attached_to = None;
            }
            return None;
        }
        self.was_populated = true;
        let id = match cgroup.id() {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("bypass: reading the id of {}: {e}", cgroup.path().display());
                return None;
            }
        };
        if self.attached_to != Some(id) {
            // Re-created (a new id) or found at start: attach (again). Attaching replaces, so
            // a program a previous daemon attached is not doubled.
            match crate::bpf::attach_mark(cgroup.path(), killswitch_policy::BYPASS_MARK) {
                Ok(()) => {
                    tracing::info!(cgroup = %cgroup.path().display(), id, "bypass: marking program attached");
                    self.attached_to = Some(id);
                }
                Err(e) => tracing::warn!("bypass: {e}"),
            }
        }
        let processes = cgroup.pids().map_or(0, |p| p.len() as u32);
        let name = cgroup.path().strip_prefix(&mount).map_or_else(
            |_| cgroup.path().display().to_string(),
            |below| format!("/{}", below.display()),
        );
        Some(BypassView {
            scope: BypassScope { level, id },
            path: cgroup.path().to_owned(),
            name,
            processes,
        })
    }
}

/// Where the daemon's subtree is: `<cgroup2 mount>/killswitch/net-<inode of its network
/// namespace>`, as [`crate::cgroup::Subtree::find`] puts it, but without creating it. Without a
/// cgroup2 mount in the daemon's mount namespace, bypass is refused, naming what is missing.
fn locate() -> Result<(PathBuf, PathBuf), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mount = crate::cgroup::cgroup2_mount(&mountinfo)
        .ok_or_else(|| crate::cgroup::CgroupError::NoCgroup2.to_string())?;
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("reading this daemon's network namespace: {e}"))?
        .st_ino();
    let root = mount.join("killswitch").join(format!("net-{netns}"));
    Ok((mount, root))
}

/// How many processes are in the cgroup at `path` now (0 when it is gone).
pub fn count_processes(path: &Path) -> u32 {
    std::fs::read_to_string(path.join("cgroup.procs")).map_or(0, |text| {
        text.lines().filter(|l| !l.trim().is_empty()).count() as u32
    })
}

/// Checks that process `pid` runs as `uid` (its real or effective uid: the connection's owner,
/// not a process that took its pid since) and in the daemon's own network namespace (a process
/// of another namespace is another daemon's to move, if anyone's).
fn check_process(pid: u32, uid: u32) -> Result<(), String> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let own = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("reading this daemon's network namespace: {e}"))?;
    let theirs = std::fs::metadata(proc.join("ns/net"))
        .map_err(|e| format!("reading the network namespace of process {pid}: {e}"))?;
    if (own.st_dev(), own.st_ino()) != (theirs.st_dev(), theirs.st_ino()) {
        return Err(format!(
            "process {pid} is in another network namespace than this daemon; bypass works only \
             in the daemon's own namespace"
        ));
    }
    let status = std::fs::read_to_string(proc.join("status"))
        .map_err(|e| format!("reading the status of process {pid}: {e}"))?;
    if !process_runs_as(&status, uid) {
        return Err(format!(
            "process {pid} no longer runs as uid {uid} (it exited and its pid was reused?)"
        ));
    }
    Ok(())
}

/// Whether a `/proc/PID/status` text has `uid` as its real or effective uid.
fn process_runs_as(status: &str, uid: u32) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            ids.split_whitespace()
                .take(2)
                .any(|id| id.parse::<u32>() == Ok(uid))
        })
}

/// An inotify instance, as tokio's `AsyncFd` wants it.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Notifications that the bypass cgroup may have changed: created or removed (the subtree's
/// directory), populated or emptied (its `cgroup.events`, which the kernel marks modified on
/// each change).
#[derive(Debug)]
pub struct BypassWatch {
    fd: AsyncFd<InotifyFd>,
    root: PathBuf,
}

impl BypassWatch {
    /// Watches the subtree at `root`. Must run inside the tokio runtime.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            root,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVE,
        )?;
        // SAFETY: the inotify instance owns its descriptor, which stays open as long as the
        // AsyncFd (which owns the instance) exists.
        let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let watch = BypassWatch {
            fd,
            root: root.to_owned(),
        };
        watch.rewatch();
        Ok(watch)
    }

    /// Watches the cgroup's `cgroup.events` if the cgroup exists (again after a re-creation;
    /// watching the same file twice is one watch).
    pub fn rewatch(&self) {
        let events = self.root.join(CGROUP_NAME).join("cgroup.events");
        if events.exists()
            && let Err(e) = self
                .fd
                .get_ref()
                .0
                .add_watch(&events, AddWatchFlags::IN_MODIFY)
        {
            tracing::debug!("bypass: watching {}: {e}", events.display());
        }
    }

    /// Waits until something under the subtree changed, and reads every pending event.
    pub async fn changed(&self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(Into::into)) {
                Ok(Ok(events)) if !events.is_empty() => return Ok(()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_must_run_as_the_connecting_user() {
        let status =
            "Name:\tkillswitch\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert!(process_runs_as(status, 1000));
        assert!(!process_runs_as(status, 0));
        let setuid = "Uid:\t1000\t0\t0\t0\n";
        assert!(process_runs_as(setuid, 0) && process_runs_as(setuid, 1000));
        assert!(!process_runs_as("Name:\tx\n", 0));
        assert!(!process_runs_as("Uid:\tgarbage\n", 0));
    }

    #[test]
    fn without_cgroup_v2_joining_names_what_is_missing() {
        let mut bypass = Bypass::at(Err("no cgroup v2 hierarchy is mounted".to_owned()));
        let peer = Peer {
            uid: 0,
            gid: 0,
            pid: Some(std::process::id() as i32),
            groups: std::sync::Arc::from(Vec::new()),
        };
        let error = bypass.join(&peer).expect_err("no cgroup v2");
        assert!(error.contains("cgroup v2"), "{error}");
        assert_eq!(bypass.observe(), None);
    }
}
