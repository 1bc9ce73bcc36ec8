//! The daemon's cgroup v2 subtree (issue 15): where `killswitch exec` programs, bypassed programs
//! and programs frozen on a tunnel drop are kept.
//!
//! Why cgroups: a cgroup follows a program and every child it forks, and a process cannot leave it
//! without write access to the common ancestor's `cgroup.procs` (ours are root's). That makes it
//! the one handle the kernel gives for "this program and its children": `cgroup.events` says when
//! they have all exited, `cgroup.freeze` stops them all at once, `cgroup.kill` ends them all, and
//! nftables matches their sockets (`socket cgroupv2`) by the cgroup's id.
//!
//! Where: cgroup2 is found in /proc/self/mountinfo, wherever it is mounted (/sys/fs/cgroup on a
//! unified system, /sys/fs/cgroup/unified on a hybrid one). The daemon's subtree is
//! `<mount>/killswitch/net-<inode of its network namespace>`: one daemon runs per network namespace
//! (see [`crate::instance`]), so two daemons (a host's and a test namespace's) never sweep or freeze
//! each other's cgroups.
//!
//! Ids: a cgroup's id is the inode number of its directory; nftables' `socket cgroupv2` compares
//! it, not the path (resolving a path is `nft`'s userspace work, and on a hybrid hierarchy it
//! fails). Removing and re-creating a cgroup gives it a new id, so whoever puts an id in a rule
//! reads it again from the directory each time the rules are built.

use std::io::{self, Read};
use std::os::linux::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first directory under the cgroup2 mount that belongs to killswitch.
const TOP: &str = "killswitch";

/// Why the daemon has no cgroup subtree.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted.
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo for a cgroup2 mount); \
         this needs a kernel and init system with cgroup v2 (unified or hybrid)"
    )]
    NoCgroup2,
    /// Something about the hierarchy could not be read or changed.
    #[error("cgroup v2 at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Mounts cgroup2 under `state_dir` (at `state_dir/cgroup2`) when this mount namespace has no
/// cgroup file system (v1 or v2) mounted at all. A daemon started by `ip netns exec` (the lab, a
/// hand-run test) lives in a mount namespace of its own whose fresh /sys has no cgroup mount:
/// without this, exec, bypass and freeze on drop would all find no cgroup v2. It is the machine's
/// one cgroup2 hierarchy, mounted again; on a machine whose init mounted cgroups (every systemd
/// machine) nothing is mounted. Called once at start, before anything looks for the subtree.
pub fn mount_if_missing(state_dir: &Path) -> Result<(), String> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").map(|text| {
        text.lines().any(|line| {
            line.split_once(" - ")
                .and_then(|(_, fs)| fs.split_whitespace().next())
                .is_some_and(|fs| fs == "cgroup" || fs == "cgroup2")
        })
    });
    if mounted.unwrap_or(true) {
        return Ok(());
    }
    let point = state_dir.join("cgroup2");
    std::fs::create_dir_all(&point).map_err(|e| format!("{}: {e}", point.display()))?;
    nix::mount::mount(
        Some("cgroup2"),
        &point,
        Some("cgroup2"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting cgroup2 at {}: {e}", point.display()))
}

/// The cgroup2 mount point, from a mountinfo text (the fifth field of the first `cgroup2` line).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields before " - " are the mount's; after it, the file system type comes first.
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = mount.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(point)))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The daemon's own subtree: `<cgroup2 mount>/killswitch/net-<netns inode>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtree {
    mount: PathBuf,
    root: PathBuf,
}

impl Subtree {
    /// Finds cgroup2 and creates (or reuses) this network namespace's subtree.
    pub fn find() -> Result<Subtree, CgroupError> {
        let mountinfo_path = Path::new("/proc/self/mountinfo");
        let mountinfo =
            std::fs::read_to_string(mountinfo_path).map_err(io_error(mountinfo_path))?;
        let mount = cgroup2_mount(&mountinfo).ok_or(CgroupError::NoCgroup2)?;
        let netns_path = Path::new("/proc/self/ns/net");
        let netns = std::fs::metadata(netns_path)
            .map_err(io_error(netns_path))?
            .st_ino();
        let root = mount.join(TOP).join(format!("net-{netns}"));
        Subtree::at(mount, root)
    }

    /// A subtree at `root` below the cgroup2 mount `mount` (created if missing). Tests use a
    /// directory of their own.
    pub fn at(mount: PathBuf, root: PathBuf) -> Result<Subtree, CgroupError> {
        std::fs::create_dir_all(&root).map_err(io_error(&root))?;
        Ok(Subtree { mount, root })
    }

    /// The subtree at `root` below the cgroup2 mount `mount` if it exists already (nothing is
    /// created: a daemon that never needed its subtree leaves no directory behind).
    pub fn existing(mount: PathBuf, root: PathBuf) -> Option<Subtree> {
        root.is_dir().then_some(Subtree { mount, root })
    }

    /// The cgroup2 mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// `cgroup`'s depth below the cgroup2 root, as nftables' `socket cgroupv2 level N` counts.
    pub fn level(&self, cgroup: &Cgroup) -> Option<u32> {
        cgroup.level(&self.mount)
    }

    /// The subtree's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup `name` directly under the subtree, created if missing. `name` is one path
    /// component the daemon chose (`exec-1000-3`, `bypass`, ...), never a user's text.
    pub fn create(&self, name: &str) -> Result<Cgroup, CgroupError> {
        let cgroup = self.cgroup(name);
        match std::fs::create_dir(&cgroup.path) {
            Ok(()) => Ok(cgroup),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(cgroup),
            Err(e) => Err(io_error(&cgroup.path)(e)),
        }
    }

    /// The cgroup `name` under the subtree, whether or not it exists.
    pub fn cgroup(&self, name: &str) -> Cgroup {
        Cgroup {
            path: self.root.join(name),
        }
    }

    /// The cgroups directly under the subtree (for sweeping what a crashed daemon left).
    pub fn list(&self) -> Result<Vec<Cgroup>, CgroupError> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_error(&self.root))? {
            let entry = entry.map_err(io_error(&self.root))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                found.push(Cgroup { path: entry.path() });
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }
}

/// One cgroup of the daemon's subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its name (the last path component).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Whether its directory exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// The id nftables' `socket cgroupv2` and the kernel's cgroup helpers compare: the inode
    /// number of its directory. It changes when the cgroup is removed and created again.
    pub fn id(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.st_ino())
    }

    /// Its depth below the cgroup2 root (nftables' `socket cgroupv2 level N`): the number of
    /// path components below the mount point. `mount` is the cgroup2 mount point.
    pub fn level(&self, mount: &Path) -> Option<u32> {
        let below = self.path.strip_prefix(mount).ok()?;
        u32::try_from(below.components().count()).ok()
    }

    /// Moves process `pid` (all its threads) into this cgroup. Its children forked afterwards
    /// are born here.
    pub fn add_process(&self, pid: u32) -> io::Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), format!("{pid}\n"))
    }

    /// The processes in it (not in cgroups below it).
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let text = std::fs::read_to_string(self.path.join("cgroup.procs"))?;
        Ok(text
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect())
    }

    /// `cgroup.events`, as key-value pairs (`populated 1`, `frozen 0`).
    fn events(&self) -> io::Result<Vec<(String, String)>> {
        let mut text = String::new();
        std::fs::File::open(self.path.join("cgroup.events"))?.read_to_string(&mut text)?;
        Ok(parse_events(&text))
    }

    fn event(&self, key: &str) -> io::Result<bool> {
        Ok(self
            .events()?
            .iter()
            .any(|(k, v)| k == key && v.as_str() == "1"))
    }

    /// Whether any process is in it or below it.
    pub fn populated(&self) -> io::Result<bool> {
        self.event("populated")
    }

    /// Whether the kernel has finished freezing it (every process stopped).
    pub fn frozen(&self) -> io::Result<bool> {
        self.event("frozen")
    }

    /// Asks the kernel to freeze (`true`) or thaw (`false`) it and what is below it. Freezing is
    /// asynchronous: [`Cgroup::frozen`] says when it is done; [`Cgroup::wait_frozen`] waits.
    pub fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        std::fs::write(
            self.path.join("cgroup.freeze"),
            if frozen { "1\n" } else { "0\n" },
        )
    }

    /// Waits (polling every millisecond, at most `limit`) until the kernel reports the cgroup
    /// frozen (`true`) or thawed (`false`); returns how long it took, or an error after `limit`.
    pub fn wait_frozen(&self, frozen: bool, limit: Duration) -> io::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.frozen()? == frozen {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cgroup {} not {} after {limit:?}",
                        self.path.display(),
                        if frozen { "frozen" } else { "thawed" }
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills every process in it and below it: `cgroup.kill` (Linux 5.14 and later), else
    /// SIGKILL to each process listed in it.
    pub fn kill(&self) -> io::Result<()> {
        match std::fs::write(self.path.join("cgroup.kill"), "1\n") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                for pid in self.pids()? {
                    let Ok(pid) = i32::try_from(pid) else {
                        continue;
                    };
                    // A process that exited meanwhile is what we wanted anyway.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes it; the kernel refuses (EBUSY) while a process is in it. A cgroup that no longer
    /// exists counts as removed.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `cgroup.events`' lines, `key value`.
pub fn parse_events(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_a_hybrid_and_a_unified_system() {
        let hybrid = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:6 - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 24 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let none = "22 1 0:21 / /proc rw - proc proc rw\n27 25 0:24 / /c rw - cgroup cgroup rw\n";
        assert_eq!(cgroup2_mount(none), None);
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
    }

    #[test]
    fn mount_points_with_escaped_characters() {
        let text = "26 25 0:23 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/mnt/my cgroup")));
        assert_eq!(unescape_octal("a\\04"), "a\\04");
        assert_eq!(unescape_octal("\\134x"), "\\x");
    }

    #[test]
    fn events_parse() {
        let events = parse_events("populated 1\nfrozen 0\n\n");
        assert_eq!(
            events,
            vec![
                ("populated".to_owned(), "1".to_owned()),
                ("frozen".to_owned(), "0".to_owned())
            ]
        );
    }

    #[test]
    fn level_counts_components_below_the_mount() {
        let cgroup = Cgroup {
            path: PathBuf::from("/sys/fs/cgroup/unified/killswitch/net-1/bypass"),
        };
        assert_eq!(cgroup.level(Path::new("/sys/fs/cgroup/unified")), Some(3));
        assert_eq!(cgroup.level(Path::new("/elsewhere")), None);
        assert_eq!(cgroup.name(), "bypass");
    }
}
