//! Starting the program of a `killswitch exec`: forked from the daemon, it joins its cgroup and
//! the exec namespace, gets a mount namespace of its own (for the resolv.conf naming the tunnel's
//! resolvers, and a /sys that shows the namespace's interfaces), becomes the caller (groups, gid,
//! uid), and only then enters the caller's working directory, so that a directory the caller may
//! not enter is refused as it would be in their shell.
//!
//! Everything the child needs is prepared before the fork (paths as C strings, the groups, open
//! file descriptors): between fork and exec only async-signal-safe system calls run. When a step
//! fails, the child writes the step's number to a pipe before failing; the daemon reads it to say
//! which step it was (std's `spawn` passes the errno on).

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Who the program runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The caller's uid (from `SO_PEERCRED`).
    pub uid: u32,
    /// The caller's gid (from `SO_PEERCRED`).
    pub gid: u32,
    /// Their supplementary groups (from the user database).
    pub groups: Vec<u32>,
    /// The caller's pid (from `SO_PEERCRED`): the program runs in the caller's mount namespace,
    /// not the daemon's (which a service manager may have narrowed: a read-only /, no /home).
    pub pid: Option<i32>,
}

/// What the child needs.
#[derive(Debug)]
pub struct Launch {
    /// `argv`, `argv[0]` being the program (looked up in the environment's `PATH`).
    pub argv: Vec<Vec<u8>>,
    /// The environment, `NAME=value` each.
    pub env: Vec<Vec<u8>>,
    /// The working directory.
    pub cwd: Vec<u8>,
    /// The caller's stdin, stdout and stderr.
    pub stdio: [OwnedFd; 3],
    /// The exec namespace.
    pub namespace: OwnedFd,
    /// The cgroup's `cgroup.procs`, open for writing.
    pub cgroup_procs: OwnedFd,
    /// The resolv.conf to bind over /etc/resolv.conf.
    pub resolv: std::path::PathBuf,
    /// Who.
    pub identity: Identity,
}

/// Why the program did not start.
#[derive(Debug)]
pub struct SpawnError {
    /// The step that failed, when it was one of ours; `None`: execve itself.
    pub step: Option<Step>,
    /// The error.
    pub error: std::io::Error,
}

/// The steps between fork and exec, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Joining the cgroup.
    Cgroup = 1,
    /// Entering the caller's mount namespace.
    CallerMounts,
    /// A session of its own (no controlling terminal of the daemon's).
    Session,
    /// Entering the exec network namespace.
    Netns,
    /// A mount namespace of its own.
    MountNamespace,
    /// Making / a slave mount (nothing of ours propagates back).
    Propagation,
    /// Binding the resolv.conf.
    ResolvConf,
    /// Supplementary groups.
    Groups,
    /// The gid.
    Gid,
    /// The uid.
    Uid,
    /// The working directory.
    Cwd,
}

impl Step {
    const ALL: [Step; 11] = [
        Step::Cgroup,
        Step::CallerMounts,
        Step::Session,
        Step::Netns,
        Step::MountNamespace,
        Step::Propagation,
        Step::ResolvConf,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::Cwd,
    ];

    fn from_byte(byte: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u8 == byte)
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Cgroup => "joining the program's cgroup",
            Step::CallerMounts => "entering the calling process's mount namespace",
            Step::Session => "starting a session",
            Step::Netns => "entering the exec network namespace",
            Step::MountNamespace => "creating a mount namespace",
            Step::Propagation => "making / a slave mount",
            Step::ResolvConf => "binding the tunnel's resolv.conf over /etc/resolv.conf",
            Step::Groups => "setting the supplementary groups",
            Step::Gid => "setting the group id",
            Step::Uid => "setting the user id",
            Step::Cwd => "entering the working directory as the calling user",
        }
    }
}

/// The mount namespace of process `pid` when it is not the daemon's own, open; `None` when it is
/// the same one or cannot be opened (the daemon's own is used then, as before).
fn caller_mounts(pid: i32) -> Option<OwnedFd> {
    use std::os::linux::fs::MetadataExt;
    let path = format!("/proc/{pid}/ns/mnt");
    let theirs = std::fs::metadata(&path).ok()?;
    let ours = std::fs::metadata("/proc/self/ns/mnt").ok()?;
    if (theirs.st_dev(), theirs.st_ino()) == (ours.st_dev(), ours.st_ino()) {
        return None;
    }
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!("exec: cannot open {path} ({e}); the program sees the daemon's mounts");
            return None;
        }
    };
    // Only a mount namespace owned by the daemon's own user namespace (made by root: the host's,
    // a service's, a container's). One a user made in a user namespace of their own holds
    // whatever they mounted there; the child enters it with the daemon's credentials and the
    // program keeps real uids of this user namespace, so a setuid program would trust files the
    // user placed (a sudoers, a passwd): never entered.
    if !owned_by_our_user_namespace(&file) {
        tracing::warn!(
            pid,
            "exec: the caller's mount namespace belongs to another user namespace; the program \
             sees the daemon's mounts"
        );
        return None;
    }
    Some(OwnedFd::from(file))
}

/// Whether namespace `ns` (an open /proc/PID/ns/* file) is owned by this process's user
/// namespace (`NS_GET_USERNS`, Linux 4.9).
fn owned_by_our_user_namespace(ns: &std::fs::File) -> bool {
    use std::os::fd::FromRawFd;
    use std::os::linux::fs::MetadataExt;
    /// `_IO(0xb7, 0x1)`.
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: an ioctl on a descriptor this function borrows; it returns a new descriptor or -1.
    let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if owner < 0 {
        return false;
    }
    // SAFETY: `owner` is a descriptor the kernel just opened for this process, owned here only.
    let owner = unsafe { std::fs::File::from_raw_fd(owner) };
    let (Ok(theirs), Ok(ours)) = (owner.metadata(), std::fs::metadata("/proc/self/ns/user")) else {
        return false;
    };
    (theirs.st_dev(), theirs.st_ino()) == (ours.st_dev(), ours.st_ino())
}

/// Starts the program. The child is in the cgroup and the namespace before its first
/// instruction of the program runs.
pub fn spawn(launch: Launch) -> Result<Child, SpawnError> {
    let setup = |error: std::io::Error| SpawnError { step: None, error };
    let Some(program) = launch.argv.first() else {
        return Err(setup(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no program given",
        )));
    };
    let mut command = Command::new(OsStr::from_bytes(program));
    command.args(launch.argv[1..].iter().map(|a| OsStr::from_bytes(a)));
    command.env_clear();
    for entry in &launch.env {
        // An entry without '=' is not an environment variable; execve would pass it on, but std
        // cannot: skipped (the CLI never sends one).
        if let Some(split) = entry.iter().position(|b| *b == b'=') {
            command.env(
                OsStr::from_bytes(&entry[..split]),
                OsStr::from_bytes(&entry[split + 1..]),
            );
        }
    }
    let [stdin, stdout, stderr] = launch.stdio;
    command.stdin(Stdio::from(stdin));
    command.stdout(Stdio::from(stdout));
    command.stderr(Stdio::from(stderr));

    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            setup(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a path contains a NUL byte",
            ))
        })
    };
    let cwd = cstring(&launch.cwd)?;
    let resolv = cstring(launch.resolv.as_os_str().as_bytes())?;
    // The resolv.conf is bound from an open descriptor: its path is the daemon's, which the
    // caller's mount namespace may not show.
    let resolv_file = std::fs::File::open(&launch.resolv).map_err(setup)?;
    let resolv_fd = cstring(format!("/proc/self/fd/{}", resolv_file.as_raw_fd()).as_bytes())?;
    let mounts = launch.identity.pid.and_then(caller_mounts);
    let mounts_fd = mounts.as_ref().map(|fd| fd.as_raw_fd());
    let etc_resolv = cstring(b"/etc/resolv.conf")?;
    let root = cstring(b"/")?;
    let sys = cstring(b"/sys")?;
    let sysfs = cstring(b"sysfs")?;
    let groups: Vec<libc::gid_t> = launch.identity.groups.clone();
    let (uid, gid) = (launch.identity.uid, launch.identity.gid);
    let netns = launch.namespace.as_raw_fd();
    let procs = launch.cgroup_procs.as_raw_fd();
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| setup(e.into()))?;
    let report = report_write.as_raw_fd();

    // SAFETY: the closure runs in the forked child before exec. It only makes system calls
    // (async-signal-safe) on values prepared above, allocates nothing, and touches no lock.
    unsafe {
        command.pre_exec(move || {
            let fail = |step: Step| {
                let error = std::io::Error::last_os_error();
                let byte = step as u8;
                libc::write(report, (&byte as *const u8).cast(), 1);
                Err(error)
            };
            if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                return fail(Step::Cgroup);
            }
            if libc::setsid() < 0 {
                return fail(Step::Session);
            }
            if let Some(fd) = mounts_fd
                && libc::setns(fd, libc::CLONE_NEWNS) != 0
            {
                return fail(Step::CallerMounts);
            }
            if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                return fail(Step::Netns);
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail(Step::MountNamespace);
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return fail(Step::Propagation);
            }
            if libc::mount(
                resolv_fd.as_ptr(),
                etc_resolv.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
                && libc::mount(
                    resolv.as_ptr(),
                    etc_resolv.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return fail(Step::ResolvConf);
            }
            // A /sys of this namespace, so that /sys/class/net lists its interfaces (as `ip
            // netns exec` does). Best effort: a program rarely needs it, and a failure leaves the
            // daemon's /sys, which reveals only interface names.
            if libc::umount2(sys.as_ptr(), libc::MNT_DETACH) == 0 {
                libc::mount(
                    sysfs.as_ptr(),
                    sys.as_ptr(),
                    sysfs.as_ptr(),
                    0,
                    std::ptr::null(),
                );
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return fail(Step::Groups);
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return fail(Step::Gid);
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return fail(Step::Uid);
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                return fail(Step::Cwd);
            }
            // Nothing of the daemon's reaches the program but its three descriptors: every other
            // one is closed at exec (close_range with CLOSE_RANGE_CLOEXEC, Linux 5.11; before it,
            // one by one). Marking rather than closing keeps std's own error pipe working.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // An empty signal mask (std leaves the parent's, which exec keeps) and every
            // disposition back to its default: a caught signal is reset by exec anyway, an
            // ignored one would stay ignored.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for signal in 1..32 {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::signal(signal, libc::SIG_DFL);
                }
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    drop(report_write);
    // The descriptors the child needed are closed in the daemon when `command` and `launch` go.
    drop(command);
    match spawned {
        Ok(child) => Ok(child),
        Err(error) => {
            let mut byte = [0u8; 1];
            let step = match std::fs::File::from(report_read).read(&mut byte) {
                Ok(1) => Step::from_byte(byte[0]),
                _ => None,
            };
            Err(SpawnError { step, error })
        }
    }
}

/// The shell's exit status for a program that could not be started: 127 when it was not found,
/// 126 when it could not be run (permission, format, a directory).
pub fn status_for(error: &SpawnError) -> i32 {
    match (error.step, error.error.raw_os_error()) {
        (None, Some(libc::ENOENT)) => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::{caller_mounts, owned_by_our_user_namespace};
    use std::time::{Duration, Instant};

    #[test]
    fn a_mount_namespace_made_in_a_user_namespace_is_never_entered() {
        let ours = std::fs::File::open("/proc/self/ns/mnt").expect("our mount namespace");
        assert!(owned_by_our_user_namespace(&ours));
        // Our own mount namespace is not "the caller's other one": nothing to enter.
        assert!(caller_mounts(i32::try_from(std::process::id()).expect("pid")).is_none());
        // A process in a user namespace of its own with a mount namespace it owns (what any
        // user can make where unprivileged user namespaces are allowed).
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["--user", "--mount", "sleep", "20"])
            .spawn()
        else {
            // Under CI a skip would hide the check: there it is a failure.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no unshare(1)"
            );
            eprintln!("skipped: no unshare(1)");
            return;
        };
        let pid = i32::try_from(child.id()).expect("pid");
        let ours_ino = std::fs::metadata("/proc/self/ns/user").map(|m| {
            use std::os::linux::fs::MetadataExt;
            m.st_ino()
        });
        // Bounded wait until unshare has made the namespaces and exec'd sleep.
        let start = Instant::now();
        let theirs = loop {
            let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| {
                use std::os::linux::fs::MetadataExt;
                m.st_ino()
            });
            if theirs.is_ok() && theirs.as_ref().ok() != ours_ino.as_ref().ok()
                || start.elapsed() > Duration::from_secs(5)
            {
                break theirs;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let entered = caller_mounts(pid);
        let _ = child.kill();
        let _ = child.wait();
        if theirs.ok() == ours_ino.ok() {
            // User namespaces cannot be made here (a kernel or policy without them).
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "unshare --user did not make a user namespace"
            );
            eprintln!("skipped: unshare --user did not make a user namespace");
            return;
        }
        assert!(
            entered.is_none(),
            "a mount namespace owned by another user namespace must not be entered"
        );
    }
}
