//! Managing `/etc/resolv.conf` directly, for systems without systemd-resolved.
//!
//! Before the first write, what was there is saved in the state directory: a file's content and
//! mode, a symlink's target, or that there was nothing. The save is atomic and comes first, so
//! that after a crash at any moment either the file is untouched or the backup exists, and the
//! next start restores it ([`ResolvConf::restore`] is idempotent).
//!
//! The file is replaced atomically (a temporary file beside it, renamed over it), which also
//! replaces a symlink rather than writing through it. A bind-mounted file (containers; `ip netns
//! exec` with `/etc/netns/NAME/resolv.conf`; a sandbox that makes only this file
//! writable) cannot be renamed over (`EBUSY`, `EROFS`): it is rewritten in place, the only thing
//! possible.
//!
//! Someone else may rewrite the file while the tunnel is up (a DHCP client on a new network).
//! When the daemon writes again, that newer file becomes the one to restore; at restore, a file
//! that is no longer ours is left alone, since it is newer than anything in the backup. "Ours"
//! survives crashes: a file that starts with the daemon's header line, or that an interrupted
//! write (or restore) left truncated, is ours (see `is_ours`).
//!
//! While the tunnel is connected the daemon writes again as soon as it notices such a rewrite
//! ([`super::watch`] says when the file changed, [`ResolvConf::rewritten`] whether it still holds
//! what the daemon wrote): the rules above are unchanged, the newer file simply becomes the one to
//! restore at once instead of at the next failover.

use crate::store::write_atomically;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The backup's name in the state directory.
const BACKUP_NAME: &str = "resolv.conf.backup";

/// What was at the path before the daemon wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Original {
    File {
        content: String,
        mode: u32,
    },
    Symlink {
        target: PathBuf,
        /// What the link led to, in case the link cannot be replaced and the file it leads to is
        /// written through it instead.
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        mode: Option<u32>,
    },
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backup {
    /// The file being managed (a backup is restored to where it came from, even if the
    /// configuration changed in between).
    path: PathBuf,
    original: Original,
    /// What the daemon last wrote, to recognise its own file.
    written: String,
}

/// Why resolv.conf could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The backup is not one this daemon wrote.
    #[error("the backup {} is unreadable: {message}; remove it once /etc/resolv.conf is right", path.display())]
    BadBackup {
        /// The backup file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ResolvConfError {
    let path = path.to_owned();
    move |source| ResolvConfError::Io { what, path, source }
}

/// Someone else's file at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// What it is, for the log and `status` ("naming 192.168.1.1").
    pub what: String,
    /// Whether it looks like a write caught in the middle: empty (truncated, not written yet) or
    /// ending in the middle of a line.
    pub unfinished: bool,
}

/// One resolv.conf, and its backup.
#[derive(Debug, Clone)]
pub struct ResolvConf {
    path: PathBuf,
    backup: PathBuf,
}

impl ResolvConf {
    /// Manages `path`, keeping the backup in `state_dir`.
    pub fn new(path: impl Into<PathBuf>, state_dir: &Path) -> Self {
        ResolvConf {
            path: path.into(),
            backup: state_dir.join(BACKUP_NAME),
        }
    }

    /// The managed file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Points the file at `servers`, the resolvers of tunnel `interface`. Returns whether someone
    /// else had rewritten the file since the daemon last wrote it, which makes that version the
    /// one to restore.
    pub fn apply(&self, interface: &str, servers: &[IpAddr]) -> Result<bool, ResolvConfError> {
        let content = render(interface, servers);
        let current = read(&self.path)?;
        let mut adopted = false;
        let mut backup = match self.load_backup()? {
            Some(mut backup) if backup.path == self.path => {
                if !is_ours(&current, &backup) {
                    backup.original = current;
                    adopted = true;
                }
                backup
            }
            Some(other) => {
                // The configured path changed since the last run: put the old one back first.
                self.restore_backup(&other)?;
                self.fresh_backup()?
            }
            None => Backup {
                path: self.path.clone(),
                original: current,
                written: String::new(),
            },
        };
        if matches!(&backup.original, Original::File { content: c, .. } if *c == content) {
            return Ok(adopted);
        }
        backup.written = content.clone();
        self.save_backup(&backup)?;
        replace(&self.path, &content, 0o644)?;
        Ok(adopted)
    }

    /// What is at the path now, when it is not exactly what the daemon writes for `servers` of
    /// `interface`; `None` when it is. The daemon's own writes come back here through the watch,
    /// and are recognised by their content: a header line is not enough, another program may
    /// copy the file.
    pub fn rewritten(
        &self,
        interface: &str,
        servers: &[IpAddr],
    ) -> Result<Option<Rewrite>, ResolvConfError> {
        let current = read(&self.path)?;
        let ours = render(interface, servers);
        Ok(match &current {
            Original::File { content, .. } if *content == ours => None,
            other => Some(Rewrite {
                what: describe(other),
                unfinished: looks_unfinished(other),
            }),
        })
    }

    /// Puts back what was there before the daemon wrote the file, if it did. Returns whether a
    /// backup was restored.
    pub fn restore(&self) -> Result<bool, ResolvConfError> {
        match self.load_backup()? {
            Some(backup) => self.restore_backup(&backup).map(|()| true),
            None => Ok(false),
        }
    }

    fn fresh_backup(&self) -> Result<Backup, ResolvConfError> {
        Ok(Backup {
            path: self.path.clone(),
            original: read(&self.path)?,
            written: String::new(),
        })
    }

    fn restore_backup(&self, backup: &Backup) -> Result<(), ResolvConfError> {
        let current = read(&backup.path)?;
        if !is_ours(&current, backup) {
            tracing::info!(
                "{} was rewritten by someone else since; leaving that version",
                backup.path.display()
            );
        } else {
            match &backup.original {
                Original::File { content, mode } => replace(&backup.path, content, *mode)?,
                Original::Symlink {
                    target,
                    content,
                    mode,
                } => {
                    let still_linked =
                        matches!(&current, Original::Symlink { target: t, .. } if t == target);
                    match content {
                        // The daemon wrote through the link (it could not replace it): put back
                        // what the link led to.
                        Some(content) if still_linked => rewrite(&backup.path, content, *mode)?,
                        _ => relink(&backup.path, target)?,
                    }
                }
                Original::Missing => match std::fs::remove_file(&backup.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("removing", &backup.path)(e));
                    }
                    _ => {}
                },
            }
        }
        std::fs::remove_file(&self.backup).map_err(io("removing", &self.backup))
    }

    fn load_backup(&self) -> Result<Option<Backup>, ResolvConfError> {
        // The backup names the file it restores and what to write there: only one the daemon's
        // own user wrote is trusted (the state directory is checked too, at start).
        if let Ok(metadata) = std::fs::symlink_metadata(&self.backup) {
            let me = nix::unistd::geteuid().as_raw();
            let owner = std::os::unix::fs::MetadataExt::uid(&metadata);
            if !metadata.is_file() || owner != me {
                return Err(ResolvConfError::BadBackup {
                    path: self.backup.clone(),
                    message: format!(
                        "not a regular file owned by uid {me} (owner {owner}); it is not trusted"
                    ),
                });
            }
        }
        match std::fs::read(&self.backup) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ResolvConfError::BadBackup {
                        path: self.backup.clone(),
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &self.backup)(e)),
        }
    }

    fn save_backup(&self, backup: &Backup) -> Result<(), ResolvConfError> {
        let dir = self.backup.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let mut json = serde_json::to_vec_pretty(backup).map_err(|e| ResolvConfError::Io {
            what: "encoding",
            path: self.backup.clone(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        write_atomically(&self.backup, &json, 0o600).map_err(io("writing", &self.backup))
    }
}

/// The file the daemon writes.
fn render(interface: &str, servers: &[IpAddr]) -> String {
    let mut text = format!(
        "{HEADER} while the VPN tunnel {interface} is up: queries go only to the\n\
         # tunnel's resolvers. The previous file is put back by `killswitch down`.\n"
    );
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

/// What a file is, in a few words: the resolvers it names (what a user recognises: the LAN's,
/// the ISP's), or that it is gone or a link.
fn describe(file: &Original) -> String {
    let names = |content: &str| {
        let servers: Vec<&str> = content
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("nameserver"))
                    .then(|| words.next())
                    .flatten()
            })
            .collect();
        if servers.is_empty() {
            "naming no resolver".to_owned()
        } else {
            format!("naming {}", servers.join(", "))
        }
    };
    match file {
        Original::File { content, .. } => names(content),
        Original::Symlink {
            target,
            content: Some(content),
            ..
        } => format!("a link to {}, {}", target.display(), names(content)),
        Original::Symlink {
            target,
            content: None,
            ..
        } => format!("a link to {}, which does not exist", target.display()),
        Original::Missing => "removed".to_owned(),
    }
}

/// See [`Rewrite::unfinished`]. A link or a missing file is never half written.
fn looks_unfinished(file: &Original) -> bool {
    match file {
        Original::File { content, .. } => !content.ends_with('\n'),
        _ => false,
    }
}

/// The first line of every file the daemon writes. It recognises its own file by it even when
/// the backup's record is stale (a crash after the backup was saved but before the write).
const HEADER: &str = "# Written by killswitchd";

/// Whether what is at the path now may be replaced by the backup: the daemon's own file, what a
/// write interrupted by a crash left of it (an in-place rewrite truncates first), what an
/// interrupted restore left of the original, or nothing. Anything else is someone else's newer
/// file.
fn is_ours(current: &Original, backup: &Backup) -> bool {
    let content = match current {
        Original::File { content, .. } => content,
        Original::Symlink {
            content: Some(content),
            ..
        } => content,
        Original::Symlink { content: None, .. } => return false,
        Original::Missing => return true,
    };
    let original = match &backup.original {
        Original::File { content, .. } => Some(content),
        Original::Symlink { content, .. } => content.as_ref(),
        Original::Missing => None,
    };
    content.starts_with(HEADER)
        || backup.written.starts_with(content.as_str())
        || original.is_some_and(|o| o.starts_with(content.as_str()))
}

fn read(path: &Path) -> Result<Original, ResolvConfError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Original::Missing),
        Err(e) => return Err(io("reading", path)(e)),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(io("reading", path))?;
        // A dangling link has no content; that is fine.
        return Ok(Original::Symlink {
            target,
            content: std::fs::read_to_string(path).ok(),
            mode: std::fs::metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777),
        });
    }
    let content = std::fs::read_to_string(path).map_err(io("reading", path))?;
    Ok(Original::File {
        content,
        mode: meta.permissions().mode() & 0o7777,
    })
}

/// Replaces the file at `path` atomically. A mount point (`EBUSY`), or a file writable in a
/// read-only directory (`EROFS`: a sandbox that opens only the file), is rewritten in place.
fn replace(path: &Path, content: &str, mode: u32) -> Result<(), ResolvConfError> {
    // A file that is a mount point of its own cannot be renamed over (EBUSY), and the attempt
    // would first create a temporary file beside it, in a directory that may not be ours: under
    // `ip netns exec`, /etc/resolv.conf is a bind mount and /etc is the host's.
    if is_mount_point(path) {
        return rewrite(path, content, Some(mode));
    }
    match write_atomically(path, content.as_bytes(), mode) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EROFS)) => {
            rewrite(path, content, Some(mode))
        }
        other => other.map_err(io("writing", path)),
    }
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mount_point(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|info| mount_points(&info).any(|point| point == path))
}

/// The mount points listed in a mountinfo text (the fifth field, with the kernel's octal escapes
/// for space, tab, newline and backslash undone).
fn mount_points(info: &str) -> impl Iterator<Item = PathBuf> + '_ {
    info.lines().filter_map(|line| {
        let field = line.split(' ').nth(4)?;
        let mut out = Vec::with_capacity(field.len());
        let bytes = field.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let escaped = bytes.get(i + 1..i + 4).and_then(|digits| {
                let text = std::str::from_utf8(digits).ok()?;
                u8::from_str_radix(text, 8).ok()
            });
            match (bytes[i], escaped) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    i += 4;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        Some(PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out),
        ))
    })
}

/// Rewrites the file at `path` (or the one a link there leads to) in place.
fn rewrite(path: &Path, content: &str, mode: Option<u32>) -> Result<(), ResolvConfError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io("rewriting", path))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("rewriting", path))?;
    if let Some(mode) = mode {
        // Best effort: a bind-mounted file may not let its mode change.
        let _ = file.set_permissions(PermissionsExt::from_mode(mode));
    }
    Ok(())
}

/// Puts a symlink back at `path`, atomically.
fn relink(path: &Path, target: &Path) -> Result<(), ResolvConfError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(".resolv.conf.killswitch-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io("linking", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("linking", path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_from_mountinfo() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:5 /etc/netns/lab/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n\
                    91 22 0:5 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let points: Vec<PathBuf> = mount_points(info).collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/"),
                PathBuf::from("/etc/resolv.conf"),
                PathBuf::from("/mnt/with space"),
            ]
        );
    }

    struct Setup {
        _dir: tempfile::TempDir,
        etc: PathBuf,
        state: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&etc).expect("mkdir");
        Setup {
            etc,
            state,
            _dir: dir,
        }
    }

    fn servers() -> Vec<IpAddr> {
        vec![
            "10.64.0.1".parse().expect("ip"),
            "fd64::1".parse().expect("ip"),
        ]
    }

    #[test]
    fn a_file_is_replaced_and_restored_with_its_mode() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\nsearch lan\n").expect("write");
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o640)).expect("chmod");
        let rc = ResolvConf::new(&path, &s.state);
        rc.apply("wg0", &servers()).expect("apply");
        let written = std::fs::read_to_string(&path).expect("read");
        assert!(
            written.contains("nameserver 10.64.0.1\nnameserver fd64::1\n"),
            "{written}"
        );
        assert!(!written.contains("192.168.50.1"));
        // Applying again (another server) keeps the first backup.
        rc.apply("wg0", &servers()[..1]).expect("apply");
        assert!(rc.restore().expect("restore"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 192.168.50.1\nsearch lan\n"
        );
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(!rc.restore().expect("restore"), "nothing left to restore");
    }

    #[test]
    fn a_symlink_is_replaced_not_followed_and_relinked() {
        let s = setup();
        let target = s.etc.join("stub-resolv.conf");
        std::fs::write(&target, "nameserver 127.0.0.53\n").expect("write");
        let path = s.etc.join("resolv.conf");
        std::os::unix::fs::symlink("stub-resolv.conf", &path).expect("symlink");
        let rc = ResolvConf::new(&path, &s.state);
        rc.apply("wg0", &servers()).expect("apply");
        assert!(
            !std::fs::symlink_metadata(&path)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&target).expect("read"),
            "nameserver 127.0.0.53\n",
            "the link's target is untouched"
        );
        rc.restore().expect("restore");
        assert_eq!(
            std::fs::read_link(&path).expect("readlink"),
            PathBuf::from("stub-resolv.conf")
        );
    }

    #[test]
    fn a_link_written_through_gets_its_content_back_and_stays_a_link() {
        // Where the link cannot be replaced (a sandbox that leaves /etc read-only), the
        // daemon writes through it; restoring must then write the content back, not relink.
        let s = setup();
        let target = s.etc.join("resolvconf-output");
        std::fs::write(&target, "nameserver 10.64.0.1\n").expect("write");
        let path = s.etc.join("resolv.conf");
        std::os::unix::fs::symlink("resolvconf-output", &path).expect("symlink");
        let rc = ResolvConf::new(&path, &s.state);
        rc.save_backup(&Backup {
            path: path.clone(),
            original: Original::Symlink {
                target: "resolvconf-output".into(),
                content: Some("nameserver 192.168.50.1\n".to_owned()),
                mode: Some(0o644),
            },
            written: "nameserver 10.64.0.1\n".to_owned(),
        })
        .expect("backup");
        assert!(rc.restore().expect("restore"));
        assert_eq!(
            std::fs::read_link(&path).expect("still a link"),
            PathBuf::from("resolvconf-output")
        );
        assert_eq!(
            std::fs::read_to_string(&target).expect("read"),
            "nameserver 192.168.50.1\n"
        );
    }

    #[test]
    fn a_missing_file_is_missing_again() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        let rc = ResolvConf::new(&path, &s.state);
        rc.apply("wg0", &servers()).expect("apply");
        assert!(path.exists());
        rc.restore().expect("restore");
        assert!(!path.exists());
    }

    #[test]
    fn a_crash_after_the_write_is_repaired_by_the_next_daemon() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        ResolvConf::new(&path, &s.state)
            .apply("wg0", &servers())
            .expect("apply");
        // A new daemon (a new value) finds the backup.
        assert!(ResolvConf::new(&path, &s.state).restore().expect("restore"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 192.168.50.1\n"
        );
    }

    #[test]
    fn a_crash_between_backup_and_write_still_restores() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        let rc = ResolvConf::new(&path, &s.state);
        rc.apply("wg0", &servers()).expect("apply");
        // A failover to a server with other resolvers: the backup records the new content, then
        // the daemon dies before writing it.
        let mut backup = rc.load_backup().expect("load").expect("a backup");
        backup.written = render("wg0", &servers()[..1]);
        rc.save_backup(&backup).expect("save");
        assert!(rc.restore().expect("restore"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 192.168.50.1\n",
            "the daemon's own older file was recognised"
        );
    }

    #[test]
    fn what_an_interrupted_rewrite_left_is_restored() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\nsearch lan\n").expect("write");
        let rc = ResolvConf::new(&path, &s.state);
        for left in ["", "# Written by", "nameserver 192.168.50.1\n"] {
            rc.apply("wg0", &servers()).expect("apply");
            // In place, a rewrite truncates first: a crash can leave any prefix.
            std::fs::write(&path, left).expect("write");
            assert!(rc.restore().expect("restore"));
            assert_eq!(
                std::fs::read_to_string(&path).expect("read"),
                "nameserver 192.168.50.1\nsearch lan\n",
                "after {left:?}"
            );
        }
    }

    #[test]
    fn someone_elses_newer_file_wins() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        let rc = ResolvConf::new(&path, &s.state);
        rc.apply("wg0", &servers()).expect("apply");
        // A DHCP client on a new network rewrites the file.
        std::fs::write(&path, "nameserver 172.16.0.1\n").expect("write");
        rc.restore().expect("restore");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 172.16.0.1\n",
            "left alone"
        );
        // And when the daemon writes again first, that newer file is what comes back.
        rc.apply("wg0", &servers()).expect("apply");
        std::fs::write(&path, "nameserver 172.16.0.2\n").expect("write");
        rc.apply("wg0", &servers()).expect("apply again");
        rc.restore().expect("restore");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 172.16.0.2\n"
        );
    }

    #[test]
    fn a_rewrite_is_told_from_the_daemons_own_file() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        let rc = ResolvConf::new(&path, &s.state);
        assert!(
            !rc.apply("wg0", &servers()).expect("apply"),
            "nothing adopted"
        );
        assert_eq!(rc.rewritten("wg0", &servers()).expect("read"), None);
        // Another server's resolvers, or another tunnel: not what it wrote for these.
        assert!(
            rc.rewritten("wg0", &servers()[..1])
                .expect("read")
                .is_some()
        );
        assert!(rc.rewritten("wg1", &servers()).expect("read").is_some());
        let what = |rc: &ResolvConf| {
            rc.rewritten("wg0", &servers())
                .expect("read")
                .map(|r| (r.what, r.unfinished))
        };
        // A copy of the daemon's file with a line changed is someone else's.
        let copied = render("wg0", &servers()).replace("10.64.0.1", "192.168.50.9");
        std::fs::write(&path, copied).expect("write");
        assert_eq!(
            what(&rc),
            Some(("naming 192.168.50.9, fd64::1".to_owned(), false))
        );
        // Caught in the middle of someone's write.
        std::fs::write(&path, "").expect("write");
        assert_eq!(what(&rc), Some(("naming no resolver".to_owned(), true)));
        std::fs::write(&path, "search lan\nnameserver 172.").expect("write");
        assert_eq!(what(&rc), Some(("naming 172.".to_owned(), true)));
        // A DHCP client's file: named by its resolvers; writing again adopts it for the restore.
        std::fs::write(
            &path,
            "search lan\nnameserver 172.16.0.1\nnameserver 172.16.0.2\n",
        )
        .expect("write");
        assert_eq!(
            what(&rc),
            Some(("naming 172.16.0.1, 172.16.0.2".to_owned(), false))
        );
        assert!(rc.apply("wg0", &servers()).expect("apply"), "adopted");
        assert_eq!(rc.rewritten("wg0", &servers()).expect("read"), None);
        rc.restore().expect("restore");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "search lan\nnameserver 172.16.0.1\nnameserver 172.16.0.2\n"
        );
    }

    #[test]
    fn files_are_described_by_what_they_name() {
        assert_eq!(describe(&Original::Missing), "removed");
        let file = |content: &str| Original::File {
            content: content.to_owned(),
            mode: 0o644,
        };
        assert_eq!(describe(&file("")), "naming no resolver");
        assert_eq!(
            describe(&file(
                "# nameserver 10.0.0.1\nnameserver\n  nameserver   10.0.0.2  \n"
            )),
            "naming 10.0.0.2"
        );
        assert_eq!(
            describe(&Original::Symlink {
                target: "/run/resolvconf/resolv.conf".into(),
                content: Some("nameserver 10.0.0.3\n".to_owned()),
                mode: Some(0o644),
            }),
            "a link to /run/resolvconf/resolv.conf, naming 10.0.0.3"
        );
        assert_eq!(
            describe(&Original::Symlink {
                target: "stub".into(),
                content: None,
                mode: None,
            }),
            "a link to stub, which does not exist"
        );
    }

    #[test]
    fn a_bad_backup_is_an_error_naming_it_and_nothing_is_written() {
        let s = setup();
        let path = s.etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        std::fs::create_dir_all(&s.state).expect("mkdir");
        std::fs::write(s.state.join(BACKUP_NAME), "{not json").expect("write");
        let rc = ResolvConf::new(&path, &s.state);
        let error = rc.apply("wg0", &servers()).expect_err("bad backup");
        assert!(error.to_string().contains(BACKUP_NAME), "{error}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 192.168.50.1\n"
        );
    }
}
