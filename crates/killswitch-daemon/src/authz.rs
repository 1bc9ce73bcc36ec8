//! Who may change the kill switch: root, and members of the admin group. Everyone may read.
//!
//! The decision uses the peer's credentials from the socket (SO_PEERCRED), which the kernel fills
//! in at connect time and the peer cannot forge, plus the supplementary groups of that process.

use std::path::Path;

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
    if peer.uid == 0 {
        return true;
    }
    let Some(admin_gid) = admin_gid else {
        return false;
    };
    if peer.gid == admin_gid {
        return true;
    }
    peer.pid
        .and_then(|pid| {
            supplementary_groups(&Path::new("/proc").join(pid.to_string()).join("status"))
        })
        .is_some_and(|groups| groups.contains(&admin_gid))
}

/// The gid of group `name`, if it exists.
pub fn group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
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
    fn own_process_groups_are_readable() {
        let me = std::process::id() as i32;
        assert!(
            supplementary_groups(&Path::new("/proc").join(me.to_string()).join("status")).is_some()
        );
    }
}
