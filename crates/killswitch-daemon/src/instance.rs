//! One daemon at a time: per state directory, and per network namespace.
//!
//! A second `killswitchd` must refuse before it touches anything: before it applies a firewall,
//! restores a resolv.conf "left by a daemon that did not stop cleanly" (which is the running
//! daemon's live file), or renames a settings file. Two locks, taken first thing:
//! - an exclusive `flock` on `killswitchd.lock` in the state directory, which guards the files
//!   there (settings, the resolv.conf backup, the record of interfaces);
//! - a listening abstract Unix socket, `@killswitchd`: abstract names are scoped to the network
//!   namespace, so this guards the kernel state a daemon owns (table `inet killswitch`, the
//!   routing layer), even for a second daemon started with another state directory. Its
//!   credentials (SO_PEERCRED) also name the running daemon's pid for `--teardown` and
//!   `--early-boot`, which must know whether a daemon owns the rules before touching them.
//!
//! Both are released by the kernel when the process ends, however it ends: a crash never leaves a
//! stale lock behind.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The abstract socket's name (without the leading NUL).
const NETNS_NAME: &[u8] = b"killswitchd";
/// The lock file in the state directory.
const LOCK_FILE: &str = "killswitchd.lock";

/// Why this daemon may not run.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another daemon uses the same state directory.
    #[error(
        "another killswitchd{} is running with state directory {}; this one exits without changing anything",
        pid_text(*pid),
        dir.display()
    )]
    StateDirLocked {
        /// The state directory.
        dir: PathBuf,
        /// The other daemon's pid, if it wrote one.
        pid: Option<i32>,
    },
    /// Another daemon runs in this network namespace.
    #[error(
        "another killswitchd{} already runs in this network namespace and owns its rules; this one exits without changing anything",
        pid_text(*pid)
    )]
    NamespaceTaken {
        /// The other daemon's pid, if the kernel knows it.
        pid: Option<i32>,
    },
    /// The state directory could be changed by someone else than the daemon's user: it holds
    /// keys, the resolv.conf backup (whose content the daemon writes back) and the settings.
    #[error(
        "the state directory {} {why}; only the daemon's own user may write to it (chown it to root and chmod it 700); nothing in it is trusted, and the kill switch blocks until it is fixed and the daemon restarted",
        dir.display()
    )]
    UntrustedStateDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The locks could not be taken for another reason.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn pid_text(pid: Option<i32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// The locks of the running daemon; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Instance {
    _file: std::fs::File,
    _netns: UnixListener,
}

impl Instance {
    /// Takes both locks, or says who holds them. Creates the state directory (mode 700) if needed.
    pub fn acquire(state_dir: &Path) -> Result<Self, InstanceError> {
        let io = |what: String| move |source| InstanceError::Io { what, source };
        // The namespace first: it needs no file system, and it is what protects the kernel's state.
        let netns = bind_netns_patiently().map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => InstanceError::NamespaceTaken { pid: running() },
            _ => InstanceError::Io {
                what: "taking the network namespace's lock (@killswitchd)".to_owned(),
                source,
            },
        })?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io(format!("creating {}", state_dir.display())))?;
        // A directory others can write is not refused here: the daemon starts, blocking, and
        // trusts nothing in it (see `Store::open`). Refusing to start would install nothing.
        let path = state_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::WouldBlock {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(InstanceError::StateDirLocked {
                    dir: state_dir.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(io(format!("locking {}", path.display()))(error));
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(io(format!("writing {}", path.display())))?;
        Ok(Instance {
            _file: file,
            _netns: netns,
        })
    }
}

/// Fails unless `dir` is a real directory owned by this process's user and writable by nobody
/// else: anything the daemon reads back from it (a forged resolv.conf backup names the file to
/// write) must be what the daemon itself wrote.
pub fn check_state_dir(dir: &Path) -> Result<(), InstanceError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| InstanceError::UntrustedStateDir {
        dir: dir.to_owned(),
        why,
    };
    let metadata = std::fs::symlink_metadata(dir).map_err(|source| InstanceError::Io {
        what: format!("looking at {}", dir.display()),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(untrusted(
            "is not a directory (a symbolic link?)".to_owned(),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(untrusted(format!(
            "is owned by uid {}, not by uid {me}",
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(untrusted(format!(
            "is writable by others (mode {:o})",
            metadata.mode() & 0o777
        )));
    }
    Ok(())
}

/// How long a name in use is tried again: a daemon killed a moment ago (`kill -9`, then a start
/// at once, or a service manager's restart) holds it until the kernel has finished ending it,
/// which takes a few milliseconds, more for a process with many threads on a loaded machine.
/// A daemon that really runs is refused after this, as before; only that refusal waits.
const NAME_IN_USE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

fn bind_netns_patiently() -> std::io::Result<UnixListener> {
    let start = std::time::Instant::now();
    loop {
        match bind_netns() {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && start.elapsed() < NAME_IN_USE_PATIENCE =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

fn bind_netns() -> std::io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let address = SocketAddr::from_abstract_name(NETNS_NAME)?;
    let listener = UnixListener::bind_addr(&address)?;
    // Never accepted: connecting only proves that a daemon is here and tells its pid.
    Ok(listener)
}

/// The pid of the daemon running in this network namespace, if one runs: `Some(None)` when one
/// runs but its pid cannot be told, `None` when none runs.
pub fn running_daemon() -> Option<Option<i32>> {
    use std::os::linux::net::SocketAddrExt;
    let address = SocketAddr::from_abstract_name(NETNS_NAME).ok()?;
    let stream = UnixStream::connect_addr(&address).ok()?;
    Some(peer_pid(&stream))
}

fn running() -> Option<i32> {
    running_daemon().flatten()
}

fn peer_pid(stream: &UnixStream) -> Option<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}

#[cfg(test)]
mod tests {
    // The locks are process- and namespace-wide; they are tested end to end, with real daemons in
    // namespaces of their own (tests/regression.rs: `a_second_daemon_refuses_before_touching_anything`).
    #[test]
    fn messages_name_the_other_daemon() {
        let error = super::InstanceError::StateDirLocked {
            dir: "/var/lib/killswitch".into(),
            pid: Some(42),
        };
        assert_eq!(
            error.to_string(),
            "another killswitchd (pid 42) is running with state directory /var/lib/killswitch; \
             this one exits without changing anything"
        );
        let error = super::InstanceError::NamespaceTaken { pid: None };
        assert!(
            error
                .to_string()
                .starts_with("another killswitchd already runs")
        );
    }

    #[test]
    fn a_state_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m));
        mode(0o700).expect("chmod");
        assert!(super::check_state_dir(dir.path()).is_ok());
        mode(0o777).expect("chmod");
        let error = super::check_state_dir(dir.path()).expect_err("world-writable");
        assert!(
            error.to_string().contains("writable by others (mode 777)"),
            "{error}"
        );
        mode(0o700).expect("chmod");
        nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(65534)), None)
            .expect("chown (as root)");
        let error = super::check_state_dir(dir.path()).expect_err("foreign owner");
        assert!(error.to_string().contains("owned by uid 65534"), "{error}");
        let link = dir.path().with_extension("link");
        std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
        let error = super::check_state_dir(&link).expect_err("a link");
        assert!(error.to_string().contains("not a directory"), "{error}");
        let _ = std::fs::remove_file(&link);
    }
}
