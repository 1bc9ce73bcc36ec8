//! Finding a configured executable's processes, by the kernel's view of the executable, only in
//! this network namespace (`freeze_on_drop`, `kill_on_drop`).
//!
//! A process matches an entry when `/proc/PID/exe` (the file the kernel mapped when the process
//! called execve, whatever its name or `argv[0]` says) is the same file, by device and inode, as
//! the configured path (a symlink in the configuration is followed once, when it is resolved).
//! Renaming a binary, a `comm` of another name, a copy of it elsewhere: none of these change what
//! matches. A script matches by its interpreter (`/proc/PID/exe` of a Python program is Python),
//! which is why the configuration names executables, not programs.
//!
//! Only processes in the namespace of the calling thread are candidates (`/proc/PID/ns/net`
//! compared with `/proc/thread-self/ns/net`, device and inode): the daemon runs in the namespace
//! it protects, and a daemon in a lab or container namespace must never touch the host's
//! processes, which share its `/proc`.
//!
//! A process is told apart from a later one that reuses its pid by its start time
//! (`/proc/PID/stat`, field 22): [`Candidate::still_the_same`] reads it again just before the
//! caller acts, so a pid that was recycled between the scan and the move is not touched.

use std::os::linux::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file as the kernel identifies it: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device.
    pub dev: u64,
    /// The inode.
    pub ino: u64,
}

impl FileId {
    /// The file at `path` (symlinks followed; `/proc/PID/exe` and `/proc/PID/ns/net` are such
    /// links, and what they lead to is what is compared).
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let metadata = std::fs::metadata(path)?;
        Ok(FileId {
            dev: metadata.st_dev(),
            ino: metadata.st_ino(),
        })
    }
}

/// The network namespace of the calling thread (all of the daemon's threads share the daemon's).
pub fn own_netns() -> std::io::Result<FileId> {
    FileId::of(Path::new("/proc/thread-self/ns/net"))
}

/// What a configured executable path resolves to, or why it cannot be used (the reason is shown
/// to the administrator as it is).
pub fn resolve_executable(path: &Path) -> Result<FileId, String> {
    if !path.is_absolute() {
        return Err(format!("{}: not an absolute path", path.display()));
    }
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{}: no such file", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    if !metadata.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    Ok(FileId {
        dev: metadata.st_dev(),
        ino: metadata.st_ino(),
    })
}

/// A process found to match: its pid, its start time (to tell it from a later process with the
/// same pid), and which target it matched (an index into the targets given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The process id.
    pub pid: u32,
    /// Its start time, in clock ticks since boot.
    pub started: u64,
    /// The index of the matching target.
    pub target: usize,
}

impl Candidate {
    /// Whether the pid still belongs to the process that was matched (it has not exited and been
    /// replaced by another that reuses the pid).
    pub fn still_the_same(&self, proc: &Path) -> bool {
        start_time(proc, self.pid) == Some(self.started)
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if it exists.
pub fn start_time(proc: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The second field, the command in parentheses, may hold
/// spaces and parentheses of its own, so the fields are counted from the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After ")": field 3 (state) onwards; field 22 is the 20th of those.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The processes under `proc` (normally `/proc`) in network namespace `netns` whose executable is
/// one of `targets`, skipping `skip` (the daemon's own pid). Processes that vanish or cannot be
/// read meanwhile (kernel threads have no executable) are passed over.
pub fn find(proc: &Path, targets: &[FileId], netns: FileId, skip: u32) -> Vec<Candidate> {
    let mut found = Vec::new();
    if targets.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir(proc) else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == skip {
            continue;
        }
        let dir: PathBuf = entry.path();
        // The start time first: the namespace and executable read after it belong to this
        // process, or the start time read again later no longer matches.
        let Some(started) = start_time(proc, pid) else {
            continue;
        };
        if FileId::of(&dir.join("ns/net")).ok() != Some(netns) {
            continue;
        }
        let Ok(exe) = FileId::of(&dir.join("exe")) else {
            continue;
        };
        if let Some(target) = targets.iter().position(|t| *t == exe) {
            found.push(Candidate {
                pid,
                started,
                target,
            });
        }
    }
    found.sort_by_key(|c| c.pid);
    found
}

/// The cgroup v2 path of process `pid`, relative to the cgroup2 mount (`/user.slice/...`), from
/// the `0::` line of `/proc/PID/cgroup`.
pub fn cgroup_of(proc: &Path, pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup")).ok()?;
    parse_cgroup_v2(&text)
}

/// The `0::PATH` line of a `/proc/PID/cgroup` text.
pub fn parse_cgroup_v2(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| PathBuf::from(path.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_counted_after_the_last_parenthesis() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615\n";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("4242 (short) S 1"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn the_cgroup_v2_line_is_found_on_a_hybrid_system() {
        let text = "12:pids:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n\
                    0::/killswitch/net-4026532000/drop-0\n";
        assert_eq!(
            parse_cgroup_v2(text),
            Some(PathBuf::from("/killswitch/net-4026532000/drop-0"))
        );
        assert_eq!(parse_cgroup_v2("1:name=systemd:/\n"), None);
    }

    #[test]
    fn executables_are_resolved_or_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("program");
        std::fs::write(&file, b"#!/bin/true\n").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        let id = resolve_executable(&file).expect("a file");
        assert_eq!(resolve_executable(&link), Ok(id), "a symlink is followed");
        let missing = resolve_executable(&dir.path().join("none")).expect_err("missing");
        assert!(missing.ends_with("none: no such file"), "{missing}");
        let relative = resolve_executable(Path::new("bin/true")).expect_err("relative");
        assert!(relative.contains("not an absolute path"), "{relative}");
        let directory = resolve_executable(dir.path()).expect_err("a directory");
        assert!(directory.contains("not a regular file"), "{directory}");
    }

    #[test]
    fn this_process_is_found_by_its_executable_and_namespace_and_skipped_when_told() {
        let proc = Path::new("/proc");
        let exe = FileId::of(Path::new("/proc/self/exe")).expect("own executable");
        let netns = own_netns().expect("own namespace");
        let me = std::process::id();
        let found = find(proc, &[exe], netns, 0);
        assert!(
            found.iter().any(|c| c.pid == me && c.target == 0),
            "{found:?}"
        );
        assert!(found.iter().all(|c| c.still_the_same(proc)));
        assert!(!find(proc, &[exe], netns, me).iter().any(|c| c.pid == me));
        // Another namespace's identity matches nothing here.
        let other = FileId {
            dev: netns.dev,
            ino: netns.ino.wrapping_add(1),
        };
        assert!(!find(proc, &[exe], other, 0).iter().any(|c| c.pid == me));
        assert!(find(proc, &[], netns, 0).is_empty());
    }
}
