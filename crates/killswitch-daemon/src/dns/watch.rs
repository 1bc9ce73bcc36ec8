//! Noticing that another program rewrote the resolv.conf the daemon manages.
//!
//! A DHCP client on a new network, NetworkManager or `resolvconf -u` may rewrite the file while the
//! tunnel is up; applications then ask a LAN resolver that the firewall does not let them reach,
//! and every lookup fails. This module watches the file with inotify and says when it may have
//! changed. It never reads the file: [`super::Dns`] does, tells its own writes apart by their
//! content ([`super::resolv_conf::ResolvConf::rewritten`]), and puts the tunnel's resolvers back.
//!
//! Two watches, because the file changes in two ways. In place: the inode at the path is written
//! (the only way onto a bind mount such as `ip netns exec`'s, and what `cat new > resolv.conf`
//! does); the file's own watch sees that. Or by a rename or a new file onto the path (what most
//! programs, and this daemon, do): another inode is there, which the file's watch cannot see, so
//! the directory is watched for that name arriving or going, and the file's watch then moves to
//! the new inode.
//!
//! A file written in place is looked at once the writer has closed it, not at its first write:
//! in the middle of someone else's write the file is a truncated prefix, which would be mistaken
//! for the file to restore later. A writer that keeps the file open is looked at after it has been
//! quiet for [`SETTLE`].
//!
//! The pure part ([`classify`], [`Pending`], [`RewriteBudget`]) decides what events mean and
//! whether to fight; [`ResolvConfWatch`] does the I/O. Nothing polls: a wakeup comes from the
//! kernel's events, from the end of a settling period, or from the end of a pause in a fight.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long a file written in place but not closed must stay quiet before it is looked at.
pub const SETTLE: Duration = Duration::from_millis(500);

/// At most this many rewrites are undone within [`FIGHT_WINDOW`]: another program that rewrites
/// the file whenever it changes (a second VPN client's DNS guard) would otherwise fight the
/// daemon in a loop as fast as both can write.
pub const FIGHT_REWRITES: usize = 5;

/// See [`FIGHT_REWRITES`].
pub const FIGHT_WINDOW: Duration = Duration::from_secs(10);

/// What one inotify event says about the managed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Nothing: another file in the directory, an event nobody asked for, or a watch the daemon
    /// dropped itself.
    Unrelated,
    /// Written to, and still open: look once the writer has closed it.
    Writing,
    /// Closed after writing: look now.
    Written,
    /// Its mode, owner or link count changed: look, without ending a write in progress.
    Attributes,
    /// Another file (or none) is at the path now, or a watch went away: watch again, then look
    /// (once written, when the file was only just created).
    Replaced {
        /// Whether the file was created at the path (and is probably being written).
        created: bool,
    },
    /// The kernel dropped events: anything may have happened.
    Overflow,
}

/// Which watch is which: the raw watch descriptors, and the file's name in its directory.
#[derive(Debug, Clone, Copy)]
pub struct Watches<'a> {
    /// The directory's watch.
    pub dir: Option<i32>,
    /// The file's watch (on the inode at the path when it was last armed).
    pub file: Option<i32>,
    /// The file's name in the directory.
    pub name: &'a OsStr,
}

/// A watch disappeared (its inode was deleted or moved, or its file system unmounted).
const GONE: u32 = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT;

/// What the event `mask` on watch `wd`, about `name` in a watched directory, means.
pub fn classify(watches: &Watches<'_>, wd: i32, mask: u32, name: Option<&OsStr>) -> Touch {
    if mask & libc::IN_Q_OVERFLOW != 0 {
        return Touch::Overflow;
    }
    if Some(wd) == watches.file {
        return if mask & GONE != 0 {
            Touch::Replaced { created: false }
        } else if mask & libc::IN_CLOSE_WRITE != 0 {
            Touch::Written
        } else if mask & libc::IN_MODIFY != 0 {
            Touch::Writing
        } else if mask & libc::IN_ATTRIB != 0 {
            Touch::Attributes
        } else {
            Touch::Unrelated
        };
    }
    if Some(wd) == watches.dir {
        if mask & GONE != 0 {
            // The directory itself went (or moved): watch whatever is at the path now.
            return Touch::Replaced { created: false };
        }
        if name != Some(watches.name) {
            return Touch::Unrelated;
        }
        if mask & libc::IN_CREATE != 0 {
            return Touch::Replaced { created: true };
        }
        if mask & (libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
            return Touch::Replaced { created: false };
        }
    }
    Touch::Unrelated
}

/// What the events read so far add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    look: bool,
    writing: bool,
    rewatch: bool,
}

/// What to do after a batch of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing happened to the file: keep waiting.
    Wait,
    /// It is being written: look once it is closed, or after [`SETTLE`] of quiet.
    Settle,
    /// Look now.
    Look,
}

impl Pending {
    /// Adds one event, in the order the kernel reported them.
    pub fn add(&mut self, touch: Touch) {
        match touch {
            Touch::Unrelated => {}
            Touch::Writing => {
                self.look = true;
                self.writing = true;
            }
            Touch::Written => {
                self.look = true;
                self.writing = false;
            }
            Touch::Attributes => self.look = true,
            Touch::Replaced { created } => {
                self.look = true;
                self.rewatch = true;
                self.writing = created;
            }
            Touch::Overflow => {
                self.look = true;
                self.rewatch = true;
                self.writing = false;
            }
        }
    }

    /// Whether the file's watch must move (another inode may be at the path).
    pub fn rewatch(&self) -> bool {
        self.rewatch
    }

    /// What to do now.
    pub fn next(&self) -> Next {
        match (self.look, self.writing) {
            (false, _) => Next::Wait,
            (true, true) => Next::Settle,
            (true, false) => Next::Look,
        }
    }
}

/// How many rewrites the daemon undoes before it stops fighting for a while (see
/// [`FIGHT_REWRITES`]).
#[derive(Debug, Clone, Default)]
pub struct RewriteBudget {
    recent: VecDeque<Instant>,
}

impl RewriteBudget {
    /// Spends one rewrite at `now`, or says until when none is left.
    pub fn spend(&mut self, now: Instant) -> Result<(), Instant> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FIGHT_WINDOW)
        {
            self.recent.pop_front();
        }
        match self.recent.front() {
            Some(oldest) if self.recent.len() >= FIGHT_REWRITES => Err(*oldest + FIGHT_WINDOW),
            _ => {
                self.recent.push_back(now);
                Ok(())
            }
        }
    }
}

/// Why the file cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct WatchError {
    /// What was being done.
    what: &'static str,
    /// The file or directory.
    path: PathBuf,
    /// The error.
    #[source]
    source: std::io::Error,
}

fn watch_error(what: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> WatchError {
    let path = path.to_owned();
    move |errno| WatchError {
        what,
        path,
        source: errno.into(),
    }
}

/// An inotify instance, as tokio's `AsyncFd` wants it.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

#[derive(Debug)]
struct Armed {
    fd: AsyncFd<InotifyFd>,
    dir: Option<WatchDescriptor>,
    file: Option<WatchDescriptor>,
}

/// The watch on one resolv.conf: armed while the daemon manages the file, idle otherwise.
#[derive(Debug)]
pub struct ResolvConfWatch {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    armed: Option<Armed>,
    pending: Pending,
    /// When a file written but not closed has been quiet long enough.
    settle_at: Option<Instant>,
    /// When to look again although nothing happened (the end of a pause in a fight).
    look_at: Option<Instant>,
    /// When the last event about the file was read.
    last_change: Option<Instant>,
    touched: bool,
    error: Option<String>,
}

const FILE_EVENTS: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

const DIR_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

impl ResolvConfWatch {
    /// A watch on `path`, not armed yet.
    pub fn new(path: &Path) -> Self {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        ResolvConfWatch {
            path: path.to_owned(),
            dir,
            name: path.file_name().unwrap_or_default().to_owned(),
            armed: None,
            pending: Pending::default(),
            settle_at: None,
            look_at: None,
            last_change: None,
            touched: false,
            error: None,
        }
    }

    /// The same watch, looking for the file's name in `dir` instead of its own directory: a
    /// watch that cannot be set up while the file itself can be written.
    #[cfg(test)]
    pub(crate) fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = dir.to_owned();
        self
    }

    /// Starts watching (again): the directory, and the file at the path now if there is one.
    /// Cheap when already armed. Must run inside the tokio runtime.
    pub fn arm(&mut self) -> Result<(), WatchError> {
        let result = self.arm_inner();
        self.error = result.as_ref().err().map(ToString::to_string);
        result
    }

    fn arm_inner(&mut self) -> Result<(), WatchError> {
        if self.armed.is_none() {
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(watch_error("starting inotify for", &self.path))?;
            // SAFETY: the inotify instance owns its descriptor, which stays open as long as the
            // AsyncFd (which owns the instance) exists.
            let fd =
                unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
                    .map_err(|e| WatchError {
                        what: "registering inotify for",
                        path: self.path.clone(),
                        source: e.into_parts().1,
                    })?;
            self.armed = Some(Armed {
                fd,
                dir: None,
                file: None,
            });
        }
        self.rewatch()
    }

    /// Watches the directory and whatever inode is at the path now. Watching an inode that is
    /// watched already gives its existing descriptor, so only a new inode changes anything; the
    /// old inode's watch is dropped then.
    fn rewatch(&mut self) -> Result<(), WatchError> {
        let Some(armed) = &mut self.armed else {
            return Ok(());
        };
        let inotify = &armed.fd.get_ref().0;
        armed.dir = Some(
            inotify
                .add_watch(&self.dir, DIR_EVENTS)
                .map_err(watch_error("watching", &self.dir))?,
        );
        let file = match inotify.add_watch(&self.path, FILE_EVENTS) {
            Ok(wd) => Some(wd),
            // Nothing at the path (yet): the directory's watch sees it arrive.
            Err(nix::errno::Errno::ENOENT) => None,
            Err(e) => return Err(watch_error("watching", &self.path)(e)),
        };
        if let Some(old) = armed.file.filter(|old| Some(*old) != file) {
            // Fails when the kernel dropped it already (the inode is gone): nothing to do then.
            let _ = inotify.rm_watch(old);
        }
        armed.file = file;
        Ok(())
    }

    /// Stops watching, and forgets what was seen.
    pub fn disarm(&mut self) {
        self.armed = None;
        self.pending = Pending::default();
        self.settle_at = None;
        self.look_at = None;
        self.last_change = None;
        self.touched = false;
        self.error = None;
    }

    /// When the last event about the file was read, if one was since the watch was armed.
    pub fn last_change(&self) -> Option<Instant> {
        self.last_change
    }

    /// Why the file is not (or no longer) watched, if it is not.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Makes [`ResolvConfWatch::touched`] return at `at` even if nothing happens.
    pub fn look_again_at(&mut self, at: Instant) {
        self.look_at = Some(at);
    }

    /// Whether the file may have changed since the last call.
    pub fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    /// Returns when the file may have changed (and [`ResolvConfWatch::take_touched`] says so);
    /// never while the watch is idle. Cancel-safe: everything read is kept in `self` before any
    /// await.
    pub async fn touched(&mut self) {
        loop {
            let deadline = match (self.settle_at, self.look_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            ));
            let read = match &self.armed {
                None if deadline.is_none() => std::future::pending().await,
                None => {
                    sleep.await;
                    None
                }
                Some(armed) => tokio::select! {
                    ready = armed.fd.readable() => Some(ready.and_then(|mut guard| {
                        match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(Into::into)) {
                            Ok(events) => events,
                            // Readiness is cleared; wait for the next.
                            Err(_would_block) => Ok(Vec::new()),
                        }
                    })),
                    () = sleep, if deadline.is_some() => None,
                },
            };
            match read {
                None => {
                    let now = Instant::now();
                    self.settle_at = None;
                    if self.look_at.is_some_and(|at| at <= now) {
                        self.look_at = None;
                    }
                    return self.look();
                }
                Some(Ok(events)) => {
                    self.add(&events);
                    if self.next() == Next::Look {
                        return self.look();
                    }
                }
                Some(Err(e)) => {
                    self.broken(&e);
                    // Whatever the lost events were, look once.
                    self.touched = true;
                    return;
                }
            }
        }
    }

    /// Reads the events queued now, without waiting, and says what happened since the last look:
    /// nothing ([`Next::Wait`]); a write in progress ([`Next::Settle`]: [`ResolvConfWatch::touched`]
    /// returns once it is done); or a change that is complete ([`Next::Look`], which counts as
    /// looked at). A read of the file between two drains that both say `Wait` saw a file no one
    /// was writing: the daemon does not mistake half of someone's write for their file.
    pub fn drain(&mut self) -> Next {
        loop {
            let Some(armed) = &self.armed else {
                return Next::Wait;
            };
            match armed.fd.get_ref().0.read_events() {
                Ok(events) => self.add(&events),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    self.broken(&e.into());
                    return Next::Wait;
                }
            }
        }
        let next = self.next();
        if next == Next::Look {
            self.look();
            self.touched = false;
        }
        next
    }

    fn broken(&mut self, e: &std::io::Error) {
        let error = format!("reading inotify events for {}: {e}", self.path.display());
        tracing::warn!("DNS: {error}; no longer watching it");
        self.disarm();
        self.error = Some(error);
    }

    /// What the events so far add up to; a write in progress starts (or restarts) its settling
    /// period.
    fn next(&mut self) -> Next {
        let next = self.pending.next();
        if next == Next::Settle {
            self.settle_at = Some(Instant::now() + SETTLE);
        }
        next
    }

    /// Takes in a batch of events.
    fn add(&mut self, events: &[InotifyEvent]) {
        let Some(armed) = &self.armed else {
            return;
        };
        let watches = Watches {
            dir: armed.dir.map(WatchDescriptor::as_raw),
            file: armed.file.map(WatchDescriptor::as_raw),
            name: &self.name,
        };
        for event in events {
            let touch = classify(
                &watches,
                event.wd.as_raw(),
                event.mask.bits(),
                event.name.as_deref(),
            );
            if touch != Touch::Unrelated {
                self.last_change = Some(Instant::now());
            }
            self.pending.add(touch);
        }
        if self.pending.rewatch() {
            if let Err(e) = self.rewatch() {
                // The directory went away, say: what is left of the watch goes on; the next
                // apply arms it again.
                tracing::warn!("DNS: {e}");
                self.error = Some(e.to_string());
            }
            self.pending.rewatch = false;
        }
    }

    fn look(&mut self) {
        self.pending = Pending::default();
        self.settle_at = None;
        self.touched = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const NAME: &str = "resolv.conf";

    fn watches() -> Watches<'static> {
        Watches {
            dir: Some(1),
            file: Some(2),
            name: OsStr::new(NAME),
        }
    }

    fn file(mask: u32) -> Touch {
        classify(&watches(), 2, mask, None)
    }

    fn dir(mask: u32, name: &str) -> Touch {
        classify(&watches(), 1, mask, Some(OsStr::new(name)))
    }

    #[test]
    fn events_on_the_file_say_how_it_changed() {
        assert_eq!(file(libc::IN_MODIFY), Touch::Writing);
        assert_eq!(file(libc::IN_CLOSE_WRITE), Touch::Written);
        assert_eq!(file(libc::IN_ATTRIB), Touch::Attributes);
        assert_eq!(
            file(libc::IN_DELETE_SELF),
            Touch::Replaced { created: false }
        );
        assert_eq!(file(libc::IN_MOVE_SELF), Touch::Replaced { created: false });
        // The kernel drops a watch whose inode is gone: watch what is there now.
        assert_eq!(file(libc::IN_IGNORED), Touch::Replaced { created: false });
        assert_eq!(
            classify(&watches(), -1, libc::IN_Q_OVERFLOW, None),
            Touch::Overflow
        );
    }

    #[test]
    fn only_the_files_name_matters_in_the_directory() {
        assert_eq!(
            dir(libc::IN_MOVED_TO, NAME),
            Touch::Replaced { created: false }
        );
        assert_eq!(
            dir(libc::IN_CREATE, NAME),
            Touch::Replaced { created: true }
        );
        assert_eq!(
            dir(libc::IN_DELETE, NAME),
            Touch::Replaced { created: false }
        );
        assert_eq!(
            dir(libc::IN_MOVED_FROM, NAME),
            Touch::Replaced { created: false }
        );
        // The daemon's own temporary file, and anything else in /etc.
        assert_eq!(
            dir(libc::IN_CREATE, ".resolv.conf.killswitch-tmp"),
            Touch::Unrelated
        );
        assert_eq!(dir(libc::IN_MOVED_TO, "hosts"), Touch::Unrelated);
        assert_eq!(
            classify(&watches(), 1, libc::IN_DELETE_SELF, None),
            Touch::Replaced { created: false }
        );
    }

    #[test]
    fn a_watch_the_daemon_dropped_is_unrelated() {
        // After moving the file's watch to a new inode, the old one's IN_IGNORED arrives.
        assert_eq!(
            classify(&watches(), 7, libc::IN_IGNORED, None),
            Touch::Unrelated
        );
        assert_eq!(
            classify(&watches(), 7, libc::IN_MODIFY, None),
            Touch::Unrelated
        );
    }

    fn next(touches: &[Touch]) -> (Next, bool) {
        let mut pending = Pending::default();
        for touch in touches {
            pending.add(*touch);
        }
        (pending.next(), pending.rewatch())
    }

    #[test]
    fn a_file_being_written_is_looked_at_once_closed() {
        use Touch::*;
        assert_eq!(next(&[]), (Next::Wait, false));
        assert_eq!(next(&[Unrelated]), (Next::Wait, false));
        // `cat new > resolv.conf`: truncated, written, closed; maybe in two batches.
        assert_eq!(next(&[Writing]), (Next::Settle, false));
        assert_eq!(next(&[Writing, Writing, Written]), (Next::Look, false));
        // A chmod in the middle of a write does not end it.
        assert_eq!(next(&[Writing, Attributes]), (Next::Settle, false));
        assert_eq!(next(&[Attributes]), (Next::Look, false));
        // A second write after the first was closed.
        assert_eq!(next(&[Written, Writing]), (Next::Settle, false));
    }

    #[test]
    fn another_inode_at_the_path_moves_the_watch() {
        use Touch::*;
        // A rename onto the path: complete at once.
        assert_eq!(next(&[Replaced { created: false }]), (Next::Look, true));
        // A new file: probably still being written; its close ends the wait.
        assert_eq!(next(&[Replaced { created: true }]), (Next::Settle, true));
        assert_eq!(
            next(&[Replaced { created: true }, Written]),
            (Next::Look, true)
        );
        // A rename over a file being written in place: the rename is what counts.
        assert_eq!(
            next(&[Writing, Replaced { created: false }]),
            (Next::Look, true)
        );
        assert_eq!(next(&[Writing, Overflow]), (Next::Look, true));
    }

    #[test]
    fn a_fight_is_bounded() {
        let start = Instant::now();
        let mut budget = RewriteBudget::default();
        for n in 0..FIGHT_REWRITES {
            assert!(
                budget
                    .spend(start + Duration::from_millis(n as u64))
                    .is_ok()
            );
        }
        let refused = budget.spend(start + Duration::from_secs(1));
        assert_eq!(refused, Err(start + FIGHT_WINDOW));
        // Once the window has passed, one more.
        assert!(budget.spend(start + FIGHT_WINDOW).is_ok());
        // Rewrites spread out (a DHCP renewal every minute) never run out.
        let mut budget = RewriteBudget::default();
        for n in 0..100 {
            assert!(budget.spend(start + Duration::from_secs(60 * n)).is_ok());
        }
    }

    // The I/O part against real inotify, in a temporary directory (no root needed).

    async fn wait(watch: &mut ResolvConfWatch) -> bool {
        tokio::time::timeout(Duration::from_secs(5), watch.touched())
            .await
            .is_ok()
            && watch.take_touched()
    }

    /// Whether the watch stays quiet for a while (for "nothing happened"; a short bound).
    async fn quiet(watch: &mut ResolvConfWatch) -> bool {
        tokio::time::timeout(SETTLE * 2, watch.touched())
            .await
            .is_err()
    }

    fn rename_onto(path: &Path, content: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn in_place_and_renamed_rewrites_are_both_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(NAME);
        std::fs::write(&path, "nameserver 10.64.0.1\n").expect("write");
        let mut watch = ResolvConfWatch::new(&path);
        watch.arm().expect("arm");
        assert!(quiet(&mut watch).await, "nothing happened yet");

        // In place, as a DHCP client onto a bind mount would.
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        assert!(wait(&mut watch).await, "an in-place rewrite");

        // Renamed over: another inode, which the watch must follow.
        rename_onto(&path, "nameserver 192.168.50.2\n");
        assert!(wait(&mut watch).await, "a rename onto the path");
        std::fs::write(&path, "nameserver 192.168.50.3\n").expect("write");
        assert!(
            wait(&mut watch).await,
            "an in-place rewrite of the new inode"
        );

        // Removed, then created anew.
        std::fs::remove_file(&path).expect("remove");
        assert!(wait(&mut watch).await, "a removal");
        std::fs::write(&path, "nameserver 192.168.50.4\n").expect("write");
        assert!(wait(&mut watch).await, "a new file");
        std::fs::write(&path, "nameserver 192.168.50.5\n").expect("write");
        assert!(wait(&mut watch).await, "the new file rewritten in place");

        // Other files in the directory are nobody's business.
        std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost\n").expect("write");
        assert!(quiet(&mut watch).await, "another file");

        watch.disarm();
        std::fs::write(&path, "nameserver 192.168.50.6\n").expect("write");
        assert!(quiet(&mut watch).await, "disarmed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_still_open_is_looked_at_once_closed_or_quiet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(NAME);
        std::fs::write(&path, "nameserver 10.64.0.1\n").expect("write");
        let mut watch = ResolvConfWatch::new(&path);
        watch.arm().expect("arm");

        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        file.write_all(b"nameserver 192.").expect("write");
        let started = Instant::now();
        // Not yet: the writer has not closed it.
        assert!(
            tokio::time::timeout(SETTLE / 2, watch.touched())
                .await
                .is_err(),
            "looked at in the middle of a write"
        );
        file.write_all(b"168.50.1\n").expect("write");
        drop(file);
        assert!(wait(&mut watch).await, "closed");
        assert!(started.elapsed() < Duration::from_secs(5));

        // A writer that keeps the file open: after SETTLE of quiet.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"search lan\n").expect("write");
        let written = Instant::now();
        assert!(wait(&mut watch).await, "quiet long enough");
        assert!(written.elapsed() >= SETTLE, "{:?}", written.elapsed());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nonexistent").join(NAME);
        let mut watch = ResolvConfWatch::new(&path);
        let error = watch.arm().expect_err("no directory");
        assert!(error.to_string().contains("nonexistent"), "{error}");
        assert!(watch.error().is_some_and(|e| e.contains("nonexistent")));
        // Not fatal: the watch just never wakes.
        assert!(quiet(&mut watch).await);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pause_ends_with_a_look() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(NAME);
        std::fs::write(&path, "nameserver 10.64.0.1\n").expect("write");
        let mut watch = ResolvConfWatch::new(&path);
        watch.arm().expect("arm");
        watch.look_again_at(Instant::now() + Duration::from_millis(100));
        assert!(wait(&mut watch).await);
        assert!(quiet(&mut watch).await, "once");
    }
}
