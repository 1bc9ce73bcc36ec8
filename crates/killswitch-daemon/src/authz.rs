//! Who may change the kill switch: root, and members of the admin group. Everyone may read.
//!
//! The decision uses the peer's credentials from the socket (SO_PEERCRED), which the kernel fills
//! in at connect time and the peer cannot forge, plus the supplementary groups: for a connection
//! being classified, those the kernel recorded at connect time too (SO_PEERGROUPS, Linux 4.13+);
//! otherwise those the process has now (`/proc/PID/status`).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The credentials of the process at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, when the kernel knows it.
    pub pid: Option<i32>,
}

/// Whether `peer` may change the kill switch, given the admin group's gid (if the group exists).
pub fn may_change(peer: &Peer, admin_gid: Option<u32>) -> bool {
    may_change_with(peer, admin_gid, || proc_groups(peer))
}

/// [`may_change`] for the peer connected on `socket`, with the supplementary groups it had when it
/// connected. Cheaper than `/proc` (one system call, no file), which matters when every connection
/// of a local user who opens thousands is classified, and free of the race with a pid reused.
pub fn may_change_on(socket: BorrowedFd<'_>, peer: &Peer, admin_gid: Option<u32>) -> bool {
    may_change_with(peer, admin_gid, || {
        peer_groups(socket).or_else(|| proc_groups(peer))
    })
}

fn may_change_with(
    peer: &Peer,
    admin_gid: Option<u32>,
    groups: impl FnOnce() -> Option<Vec<u32>>,
) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Some(admin_gid) = admin_gid else {
        return false;
    };
    if peer.gid == admin_gid {
        return true;
    }
    groups().is_some_and(|groups| groups.contains(&admin_gid))
}

fn proc_groups(peer: &Peer) -> Option<Vec<u32>> {
    peer.pid.and_then(|pid| {
        supplementary_groups(&Path::new("/proc").join(pid.to_string()).join("status"))
    })
}

/// The supplementary groups the peer on `socket` had when it connected, or `None` if the kernel
/// cannot say (before Linux 4.13).
fn peer_groups(socket: BorrowedFd<'_>) -> Option<Vec<u32>> {
    // asm-generic/socket.h; the libc crate does not export it for every architecture.
    const SO_PEERGROUPS: libc::c_int = 59;
    // NGROUPS_MAX is 65536; most processes have a handful. Ask again with the size the kernel
    // says it needs (ERANGE) if the first buffer is too small.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes, and the kernel writes at most that many
        // and sets `len` to what it wrote (or, with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Some(groups);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
        groups.resize(count.max(groups.len() + 1), 0);
    }
    None
}

/// The gid of group `name`, if it exists.
pub fn group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The admin group's gid, looked up at most once per [`AdminGroup::REFRESH`].
///
/// Every connection is classified when it is accepted; a name lookup (NSS: /etc/group, or a
/// directory service) for each of thousands of connections would make the accept loop itself the
/// bottleneck. A group created or removed while the daemon runs is seen within the refresh period.
#[derive(Debug, Clone)]
pub struct AdminGroup {
    name: Arc<str>,
    cached: Option<(Instant, Option<u32>)>,
}

impl AdminGroup {
    /// How long a lookup is trusted.
    pub const REFRESH: Duration = Duration::from_secs(1);

    /// The group called `name`.
    pub fn new(name: Arc<str>) -> Self {
        AdminGroup { name, cached: None }
    }

    /// Its gid, if it exists.
    pub fn gid(&mut self) -> Option<u32> {
        let now = Instant::now();
        match self.cached {
            Some((at, gid)) if now.duration_since(at) < Self::REFRESH => gid,
            _ => {
                let gid = group_gid(&self.name);
                self.cached = Some((now, gid));
                gid
            }
        }
    }
}

/// The `Groups:` line of a /proc/PID/status file.
fn supplementary_groups(status: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(status).ok()?;
    parse_groups(&text)
}

fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_and_strangers_never() {
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let user = Peer {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        assert!(may_change(&root, None));
        assert!(!may_change(&user, None));
        assert!(!may_change(&user, Some(4242)));
        assert!(may_change(&Peer { gid: 4242, ..user }, Some(4242)));
    }

    #[test]
    fn supplementary_groups_from_proc_status() {
        let status =
            "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t24 27 4242 \nVmPeak:\t1 kB\n";
        assert_eq!(parse_groups(status), Some(vec![24, 27, 4242]));
        assert_eq!(parse_groups("Groups:\n"), Some(vec![]));
        assert_eq!(parse_groups("Name:\tx\n"), None);
    }

    #[test]
    fn peer_groups_are_those_of_the_process_at_the_other_end() {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut expected: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer_groups(a.as_fd()).expect("SO_PEERGROUPS (Linux 4.13+)");
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
    }

    #[test]
    fn own_process_groups_are_readable() {
        let me = std::process::id() as i32;
        assert!(
            supplementary_groups(&Path::new("/proc").join(me.to_string()).join("status")).is_some()
        );
    }
}
