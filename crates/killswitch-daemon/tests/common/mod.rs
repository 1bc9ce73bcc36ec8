//! What the cgroup tests share: the machine's cgroup2 mount, and a scratch subtree of the test's
//! own that is thawed, emptied and removed whatever happens.

// Each test file compiles this module for itself and uses only part of it.
#![allow(dead_code)]

use anyhow::{Context, Result};
use killswitch_daemon::cgroup::cgroup2_mount;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// This machine's cgroup2 mount point.
pub(crate) fn mount() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    cgroup2_mount(&mountinfo).context("no cgroup2 mount on this machine")
}

/// A directory under the cgroup2 mount that the test owns (`killswitch/<name>`, never a running
/// daemon's): on drop every cgroup in it is thawed, its processes killed, and it is removed.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    /// `killswitch/<name>` below `mount` (not created: `Subtree::at` does that).
    pub(crate) fn under(mount: &std::path::Path, name: &str) -> Scratch {
        Scratch(mount.join("killswitch").join(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::write(entry.path().join("cgroup.freeze"), "0\n");
                let _ = std::fs::write(entry.path().join("cgroup.kill"), "1\n");
                let start = Instant::now();
                while std::fs::remove_dir(entry.path()).is_err()
                    && start.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}
