//! cgroup v2 for daemons the lab runs in a namespace.
//!
//! `ip netns exec` gives the program a mount namespace of its own (a slave of the lab's: nothing
//! mounted there reaches this machine's mount table) and mounts a fresh sysfs on /sys, in which
//! no cgroup file system is mounted. A daemon started that way would find no cgroup v2 and could
//! not freeze, confine or bypass anything. [`command`] therefore starts the program through a
//! shell that first mounts cgroup2 inside that mount namespace, at the very path this machine has
//! it (`/sys/fs/cgroup/unified` on a hybrid system, over a tmpfs, since sysfs has no such
//! directory; `/sys/fs/cgroup` on a unified one), then execs the program in its place (same
//! process). It is the one cgroup2 hierarchy of the machine, so the paths a daemon reports are
//! the paths the lab reads; the daemon only ever writes below its own `killswitch/net-<inode>`.

use crate::netns::Netns;
use std::path::PathBuf;
use std::process::Command;

/// Mounts cgroup2 at `$1` unless one is mounted, then execs the rest of the arguments.
const MOUNT_THEN_EXEC: &str = r#"m="$1"; shift
if ! grep -q ' - cgroup2 ' /proc/self/mountinfo; then
  if [ ! -d "$m" ]; then
    mount -t tmpfs -o mode=755 killswitch-lab-cgroup "${m%/*}" && mkdir -p "$m" || exit 70
  fi
  mount -t cgroup2 cgroup2 "$m" || exit 70
fi
exec "$@""#;

/// This machine's cgroup2 mount point, from the lab's own mountinfo.
pub fn host_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next()? == "cgroup2")
            .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// A command that runs `program` inside `ns` (as [`Netns::command`]) with cgroup2 mounted where
/// this machine has it; without a cgroup2 mount here, `program` runs as [`Netns::command`] runs it.
pub fn command(ns: &Netns, program: &str) -> Command {
    match host_mount().and_then(|m| m.to_str().map(str::to_owned)) {
        Some(mount) => {
            let mut command = ns.command("/bin/sh");
            command.args([
                "-c",
                MOUNT_THEN_EXEC,
                "killswitch-lab-launch",
                &mount,
                program,
            ]);
            command
        }
        None => ns.command(program),
    }
}

/// Removes the cgroup subtree a daemon in `ns` made (`<cgroup2>/killswitch/net-<inode of ns>`)
/// and the empty cgroups in it, once the namespace's processes are gone: a daemon the lab ends
/// with SIGKILL cannot. Only directories are removed (the kernel refuses a cgroup that still
/// holds a process, and that refusal is left as it is); no process is touched.
pub fn remove_daemon_subtree(ns: &Netns) {
    use std::os::linux::fs::MetadataExt;
    let (Some(mount), Ok(netns)) = (host_mount(), std::fs::metadata(ns.path())) else {
        return;
    };
    let root = mount
        .join("killswitch")
        .join(format!("net-{}", netns.st_ino()));
    remove_empty_cgroups(&root);
}

fn remove_empty_cgroups(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_cgroups(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
