//! Who may change the kill switch: root, and members of the admin group. Everyone may read.
//!
//! The decision uses only what the kernel recorded about the peer when it connected, which the
//! peer cannot forge or change afterwards: its uid and gid (SO_PEERCRED) and its supplementary
//! groups (SO_PEERGROUPS, Linux 4.13+). Never the process's *current* state under `/proc/PID`: a
//! client can connect, hand the socket to a child, exit, and wait until its pid is reused by a
//! process of an admin-group member, whose groups `/proc` would then show. Where the kernel cannot
//! tell the groups, only the primary gid counts (fail closed).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The credentials of the process at the other end of a connection, as of its connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, when the kernel knows it (for the log only: a pid can be reused).
    pub pid: Option<i32>,
    /// Supplementary groups at connect time (empty where the kernel cannot say).
    pub groups: Arc<[u32]>,
}

impl Peer {
    /// The credentials of the peer connected on `socket`, or why they cannot be read.
    pub fn of(socket: BorrowedFd<'_>) -> std::io::Result<Self> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(&socket, PeerCredentials)?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            // 0: the peer is in a pid namespace where the daemon cannot name it.
            pid: Some(cred.pid()).filter(|pid| *pid > 0),
            groups: peer_groups(socket).unwrap_or_default().into(),
        })
    }
}

/// Whether `peer` may change the kill switch, given the admin group's gid (if the group exists).
pub fn may_change(peer: &Peer, admin_gid: Option<u32>) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Some(admin_gid) = admin_gid else {
        return false;
    };
    peer.gid == admin_gid || peer.groups.contains(&admin_gid)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user(groups: &[u32]) -> Peer {
        Peer {
            uid: 1000,
            gid: 1000,
            pid: None,
            groups: groups.into(),
        }
    }

    #[test]
    fn root_always_and_strangers_never() {
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
            groups: Arc::from([]),
        };
        assert!(may_change(&root, None));
        assert!(!may_change(&user(&[]), None));
        assert!(!may_change(&user(&[]), Some(4242)));
        assert!(may_change(
            &Peer {
                gid: 4242,
                ..user(&[])
            },
            Some(4242)
        ));
        assert!(may_change(&user(&[24, 4242]), Some(4242)));
    }

    #[test]
    fn membership_is_judged_from_the_connection_not_from_a_reused_pid() {
        // The red team's attack: a non-member connects, hands the socket to a child, exits, and
        // waits until its pid belongs to a member. Here the pid belongs to a process in the admin
        // group 4242 (what /proc/PID/status shows now), but the connection's recorded groups do
        // not hold it: the decision must follow the connection.
        let mut member = std::process::Command::new("setpriv")
            .args(["--groups=4242", "sleep", "30"])
            .spawn()
            .expect("setpriv (util-linux) as root");
        let status = std::path::Path::new("/proc")
            .join(member.id().to_string())
            .join("status");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&status).is_ok_and(|s| s.contains("Groups:\t4242")) {
            assert!(Instant::now() < deadline, "setpriv never took group 4242");
            std::thread::sleep(Duration::from_millis(5));
        }
        let stranger = Peer {
            uid: 12345,
            gid: 12345,
            pid: Some(member.id() as i32),
            groups: Arc::from([]),
        };
        let allowed = may_change(&stranger, Some(4242));
        let _ = member.kill();
        let _ = member.wait();
        assert!(!allowed, "a reused pid's groups decided");
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
        let peer = Peer::of(a.as_fd()).expect("credentials");
        let mut got = peer.groups.to_vec();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(peer.pid, Some(std::process::id() as i32));
    }
}
