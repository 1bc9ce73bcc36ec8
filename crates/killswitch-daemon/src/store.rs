//! The persisted settings: lockdown, allow-lan and the last requested target, in the state
//! directory, written atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! Loading never fails the daemon. A missing file is a first start (defaults). A file that cannot
//! be read or parsed is kept aside for inspection and reported: the daemon then starts blocked,
//! never off, because the one thing it knows is that it does not know what the user wanted.

use crate::target::Target;
use killswitch_types::Settings;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/killswitch";
const FILE_NAME: &str = "settings.json";
const FORMAT_VERSION: u32 = 1;
/// The largest settings file read: an `up` target with its 16 configurations is a few KiB.
const MAX_SETTINGS_BYTES: u64 = 1 << 20;

/// What is persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// The file format version.
    #[serde(default = "format_version")]
    pub version: u32,
    /// The user's settings.
    #[serde(flatten)]
    pub settings: Settings,
    /// The last requested target state.
    pub target: Target,
    /// What the guarded tunnel was when first seen carrying traffic: kept so that a restarted
    /// daemon still refuses an interface of another kind renamed to the tunnel's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_identity: Option<killswitch_tunnel::netdev::LinkIdentity>,
    /// The exceptions added with `killswitch allow add` (config.toml's are not repeated here).
    #[serde(default, skip_serializing_if = "killswitch_types::Allows::is_empty")]
    pub allows: killswitch_types::Allows,
    /// The tunnel-only users added with `killswitch users add`, with the uids they resolved to
    /// (config.toml's are not repeated here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnel_only_users: Vec<crate::users::TunnelOnlyUser>,
    /// The router LAN interfaces added with `killswitch router add` (config.toml's are not
    /// repeated here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub router_lans: Vec<killswitch_types::InterfaceName>,
}

fn format_version() -> u32 {
    FORMAT_VERSION
}

impl Persisted {
    /// The current format holding `settings` and `target`.
    pub fn new(settings: Settings, target: Target) -> Self {
        Persisted {
            version: FORMAT_VERSION,
            settings,
            target,
            guard_identity: None,
            allows: killswitch_types::Allows::default(),
            tunnel_only_users: Vec::new(),
            router_lans: Vec::new(),
        }
    }

    /// The same, with the router LAN interfaces the CLI added.
    pub fn with_router_lans(mut self, lans: Vec<killswitch_types::InterfaceName>) -> Self {
        self.router_lans = lans;
        self
    }

    /// The same, with the tunnel-only users the CLI added.
    pub fn with_tunnel_only_users(mut self, users: Vec<crate::users::TunnelOnlyUser>) -> Self {
        self.tunnel_only_users = users;
        self
    }

    /// The same, with the exceptions the CLI added.
    pub fn with_allows(mut self, allows: killswitch_types::Allows) -> Self {
        self.allows = allows;
        self
    }

    /// The same, remembering what the guarded tunnel was (see [`Persisted::guard_identity`]).
    pub fn with_guard_identity(
        mut self,
        identity: Option<killswitch_tunnel::netdev::LinkIdentity>,
    ) -> Self {
        self.guard_identity = identity;
        self
    }
}

impl Persisted {
    /// What to assume when the file cannot be used: lockdown on, nothing to guard. The machine
    /// stays blocked until the user decides, and `status` says lockdown is on, which is the truth.
    pub fn unknown() -> Self {
        Persisted::new(
            Settings {
                lockdown: true,
                allow_lan: false,
                apps_only: false,
            },
            Target::Disconnected,
        )
    }

    /// The same wish with contradictions resolved: `off` wins over lockdown (files written before
    /// `off` switched lockdown off could hold both), so lockdown is off.
    pub fn normalized(mut self) -> Self {
        if self.target == Target::Off {
            self.settings.lockdown = false;
        }
        self
    }
}

impl Default for Persisted {
    /// A first start: no lockdown, no LAN, nothing to guard.
    fn default() -> Self {
        Persisted::new(Settings::default(), Target::default())
    }
}

/// The outcome of loading.
// Built once per start (and per early boot) and taken apart at once: boxing the settings would
// cost every match a dereference for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Loaded {
    /// No file yet: a first start.
    Fresh,
    /// The persisted state.
    Found(Persisted),
    /// The file exists but is unusable; the message says why (and where the file was moved).
    Unusable(String),
    /// The file was written by a newer daemon in a format this one cannot read; the message says
    /// so. Unusable too, but not this daemon's to replace: a downgrade must not cost the settings
    /// the newer daemon wrote (only the user's next change replaces the file).
    Newer(String),
}

/// Where the state machine keeps what the user asked for: the settings file in the daemon, memory
/// in the model-based tester's simulation.
pub trait SettingsStore {
    /// Loads what was persisted.
    fn load(&self) -> Loaded;
    /// Persists `persisted` (all or nothing).
    fn save(&self, persisted: &Persisted) -> std::io::Result<()>;
    /// Moves an unusable file aside; returns where it went.
    fn quarantine(&self) -> Option<PathBuf>;
    /// Where it is kept, for messages.
    fn path(&self) -> PathBuf;
}

impl SettingsStore for Store {
    fn load(&self) -> Loaded {
        Store::load(self)
    }

    fn save(&self, persisted: &Persisted) -> std::io::Result<()> {
        Store::save(self, persisted)
    }

    fn quarantine(&self) -> Option<PathBuf> {
        Store::quarantine(self)
    }

    fn path(&self) -> PathBuf {
        Store::path(self)
    }
}

/// The settings file in a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Why the directory cannot be trusted, if it cannot: then nothing is read from it or written
    /// to it, and loading says why (the daemon blocks).
    untrusted: Option<String>,
}

impl Store {
    /// A store in `dir` (created on first save), trusted without a check: for tests and tools.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store {
            dir: dir.into(),
            untrusted: None,
        }
    }

    /// The daemon's store in `dir`: trusted only if the directory is the daemon's user's alone
    /// (see `instance::check_state_dir`), or does not exist yet. Anyone who can write it could
    /// forge the settings (or the resolv.conf backup beside them); then loading says so, and the
    /// daemon and the early-boot step block instead of believing it.
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let untrusted = match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            _ => crate::instance::check_state_dir(&dir)
                .err()
                .map(|e| e.to_string()),
        };
        Store { dir, untrusted }
    }

    /// Why the directory is not trusted, if it is not.
    pub fn untrusted(&self) -> Option<&str> {
        self.untrusted.as_deref()
    }

    /// The settings file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Loads the persisted state.
    pub fn load(&self) -> Loaded {
        if let Some(why) = &self.untrusted {
            return Loaded::Unusable(why.clone());
        }
        let path = self.path();
        let bytes = match read_private(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Fresh,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Loaded::Unusable(format!(
                    "{} is a symbolic link; the daemon does not follow links in its state directory",
                    path.display()
                ));
            }
            Err(e) => return Loaded::Unusable(format!("cannot read {}: {e}", path.display())),
        };
        /// Only the version, read first: a newer format may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "format_version")]
            version: u32,
        }
        if let Ok(Version { version }) = serde_json::from_slice::<Version>(&bytes)
            && version > FORMAT_VERSION
        {
            return Loaded::Newer(format!(
                "{} was written by a newer killswitchd (format version {version}; this one reads \
                 version {FORMAT_VERSION}) and is left as it is",
                path.display()
            ));
        }
        match serde_json::from_slice::<Persisted>(&bytes) {
            Ok(p) if p.version == FORMAT_VERSION => {
                // What serde cannot check: a file edited by hand (or written by a bug) must not
                // guard `lo` or bring up a tunnel with impossible settings.
                let checked = match &p.target {
                    // Deserializing made it a valid spec (see `UpSpec::new`).
                    Target::Up(_) => Ok(()),
                    Target::Guard(spec) => spec.validate().map_err(|e| e.to_string()),
                    Target::Off | Target::Disconnected => Ok(()),
                };
                match checked {
                    Ok(()) => Loaded::Found(p),
                    Err(why) => Loaded::Unusable(format!("{}: {why}", path.display())),
                }
            }
            Ok(p) => Loaded::Unusable(format!(
                "{} has format version {}, this daemon reads version {FORMAT_VERSION}",
                path.display(),
                p.version
            )),
            // The file stays where it is: whoever loads it next (a restart, the early-boot step
            // after a reboot) must find it unusable too, until something replaces it (the daemon
            // does, with lockdown on: see [`Store::quarantine`]).
            Err(e) => Loaded::Unusable(format!("{} is not valid: {e}", path.display())),
        }
    }

    /// Keeps a copy of an unusable settings file as `settings.json.corrupt` for inspection, so
    /// that the daemon can replace the file itself with what it assumes instead. Returns the
    /// copy's path, or `None` when there is nothing to copy (not a regular file, or unreadable).
    pub fn quarantine(&self) -> Option<PathBuf> {
        if self.untrusted.is_some() {
            return None;
        }
        let bytes = read_private(&self.path()).ok()?;
        let aside = self.path().with_extension("json.corrupt");
        match write_atomically(&aside, &bytes, 0o600) {
            Ok(()) => Some(aside),
            Err(e) => {
                tracing::warn!("cannot keep a copy as {}: {e}", aside.display());
                None
            }
        }
    }

    /// Writes `persisted` atomically: after a crash at any moment, the file holds either the old
    /// or the new content, never a mixture or nothing.
    pub fn save(&self, persisted: &Persisted) -> std::io::Result<()> {
        if let Some(why) = &self.untrusted {
            return Err(std::io::Error::other(why.clone()));
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut json = serde_json::to_vec_pretty(persisted).map_err(std::io::Error::other)?;
        json.push(b'\n');
        write_atomically(&self.path(), &json, 0o600)
    }
}

/// Reads the settings file without following a symlink (`O_NOFOLLOW`: a link would make the
/// daemon read, and below change the mode of, whatever it points at), and makes it private if it
/// is not: files from before `up` existed were written 644, and may hold keys now. The mode is
/// changed through the open file, and only when it is wrong; where it cannot be (the early-boot
/// unit sees the state directory read-only) that is left to the daemon, without a warning at
/// every boot.
fn read_private(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // O_NONBLOCK: a FIFO at the path must not hang the daemon (or the early-boot step) before it
    // has installed anything; it is refused below like any other file that is not a regular one.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&metadata) != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by the daemon's uid {me}",
            std::os::unix::fs::MetadataExt::uid(&metadata)
        )));
    }
    if metadata.len() > MAX_SETTINGS_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {MAX_SETTINGS_BYTES} a settings file can be",
            metadata.len()
        )));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        match file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                tracing::debug!("{} is not private, and read-only here: {e}", path.display());
            }
            Err(e) => tracing::warn!("cannot make {} private: {e}", path.display()),
        }
    }
    let mut bytes = Vec::new();
    // Bounded, whatever the file grows to while it is read.
    (&mut file)
        .take(MAX_SETTINGS_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SETTINGS_BYTES {
        return Err(std::io::Error::other("the file grew past its limit"));
    }
    Ok(bytes)
}

/// Writes `path` atomically (temporary file beside it, fsync, rename, fsync of the directory):
/// after a crash at any moment, it holds either the old or the new content, never a mixture or
/// nothing. A symlink at `path` is replaced, not followed.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.killswitch-tmp"));
    let written = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // The umask may have narrowed the mode; say it exactly.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_types::GuardSpec;

    fn guard() -> Target {
        Target::Guard(GuardSpec {
            interface: "wg0".parse().expect("literal"),
            endpoints: killswitch_types::Endpoints::one(
                "198.51.100.1:51820".parse().expect("literal"),
            ),
            dns: vec!["10.64.0.1".parse().expect("literal")],
            mark: None,
            uid: None,
        })
    }

    #[test]
    fn only_root_can_read_the_file() {
        // An `up` target holds private keys.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store.save(&Persisted::default()).expect("save");
        let mode = std::fs::metadata(store.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_up_target_without_servers_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        // What a hand edit (or another version) could leave: `up` with no servers.
        std::fs::write(
            store.path(),
            r#"{"version":1,"settings":{"lockdown":false,"allow_lan":false},"target":{"mode":"up","interface":"wg0","configs":[]}}"#,
        )
        .expect("write");
        assert!(
            matches!(store.load(), Loaded::Unusable(why) if why.contains("at least one")),
            "a daemon must not start with nothing to connect to"
        );
    }

    #[test]
    fn first_start_is_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Store::new(dir.path().join("nested")).load(),
            Loaded::Fresh
        ));
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("state"));
        let persisted = Persisted::new(
            Settings {
                lockdown: true,
                allow_lan: false,
                apps_only: false,
            },
            guard(),
        )
        .with_router_lans(vec![
            killswitch_types::InterfaceName::new("lan0").expect("valid"),
        ]);
        store.save(&persisted).expect("save");
        assert!(matches!(store.load(), Loaded::Found(p) if p == persisted));
        // A file without router LANs (every older one) loads with none.
        let plain = Persisted::new(Settings::default(), guard());
        store.save(&plain).expect("save");
        let text = std::fs::read_to_string(store.path()).expect("read");
        assert!(!text.contains("router_lans"), "{text}");
        assert!(matches!(store.load(), Loaded::Found(p) if p.router_lans.is_empty()));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("settings.json")]);
    }

    #[test]
    fn a_corrupt_file_stays_unusable_until_replaced_and_a_copy_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        std::fs::write(store.path(), b"{\"lockdown\": tru").expect("write");
        for _ in 0..2 {
            assert!(
                matches!(store.load(), Loaded::Unusable(m) if m.contains("not valid")),
                "every load (a restart, the early-boot step) finds it unusable"
            );
        }
        let kept = store.quarantine().expect("a copy");
        assert_eq!(
            std::fs::read(kept).expect("read"),
            b"{\"lockdown\": tru",
            "the bad file is kept for inspection, byte for byte"
        );
    }

    #[test]
    fn a_fifo_or_a_huge_file_is_refused_without_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        nix::unistd::mkfifo(&store.path(), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        assert!(matches!(store.load(), Loaded::Unusable(m) if m.contains("not a regular file")));
        std::fs::remove_file(store.path()).expect("rm");
        let file = std::fs::File::create(store.path()).expect("create");
        file.set_len(MAX_SETTINGS_BYTES + 1).expect("grow");
        assert!(matches!(store.load(), Loaded::Unusable(m) if m.contains("more than")));
    }

    #[test]
    fn unknown_fields_and_versions_are_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        std::fs::write(store.path(), br#"{"version":1,"lockdown":true,"allow_lan":false,"target":{"mode":"off"},"lockdwn":1}"#).expect("write");
        assert!(matches!(store.load(), Loaded::Unusable(m) if m.contains("lockdwn")));
        std::fs::write(
            store.path(),
            br#"{"version":0,"lockdown":true,"allow_lan":false,"target":{"mode":"off"}}"#,
        )
        .expect("write");
        assert!(matches!(store.load(), Loaded::Unusable(m) if m.contains("version 0")));
        // A newer daemon's file, with a field this one does not know: not this daemon's to judge.
        std::fs::write(
            store.path(),
            br#"{"version":9,"lockdown":false,"allow_lan":false,"target":{"mode":"off"},"new":1}"#,
        )
        .expect("write");
        assert!(
            matches!(store.load(), Loaded::Newer(m) if m.contains("newer killswitchd (format version 9")),
            "{:?}",
            store.load()
        );
    }

    #[test]
    fn the_previous_releases_single_endpoint_loads_and_several_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        std::fs::write(
            store.path(),
            br#"{"version":1,"lockdown":true,"allow_lan":false,"target":{"mode":"guard","interface":"wg0","endpoint":"198.51.100.1:51820","dns":[],"mark":51820,"uid":null}}"#,
        )
        .expect("write");
        let loaded = store.load();
        let Loaded::Found(persisted) = loaded else {
            panic!("the previous release's file must load: {loaded:?}");
        };
        let Target::Guard(spec) = &persisted.target else {
            panic!("a guard: {persisted:?}");
        };
        assert_eq!(
            spec.endpoints.as_slice(),
            ["198.51.100.1:51820".parse().expect("literal")]
        );
        let mut two = spec.clone();
        two.endpoints = killswitch_types::Endpoints::new(vec![
            "198.51.100.1:1194".parse().expect("literal"),
            "203.0.113.1:1194/tcp".parse().expect("literal"),
        ])
        .expect("distinct");
        let persisted = Persisted::new(persisted.settings, Target::Guard(two));
        store.save(&persisted).expect("save");
        assert!(matches!(store.load(), Loaded::Found(p) if p == persisted));
    }

    #[test]
    fn a_hand_edited_guard_of_loopback_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        std::fs::write(
            store.path(),
            br#"{"version":1,"lockdown":false,"allow_lan":false,"target":{"mode":"guard","interface":"lo","endpoint":"198.51.100.1:51820","dns":[]}}"#,
        )
        .expect("write");
        let loaded = store.load();
        assert!(
            matches!(&loaded, Loaded::Unusable(m) if m.contains("loopback")),
            "{loaded:?}"
        );
    }

    #[test]
    fn load_does_not_follow_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(
            &elsewhere,
            br#"{"version":1,"lockdown":false,"allow_lan":false,"target":{"mode":"off"}}"#,
        )
        .expect("write");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, state.join("settings.json")).expect("symlink");
        let store = Store::new(&state);
        assert!(
            matches!(store.load(), Loaded::Unusable(m) if m.contains("symbolic link")),
            "a link is not followed: the daemon blocks and says why"
        );
        let mode = std::fs::metadata(&elsewhere)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "the link's target kept its mode");
    }

    #[test]
    fn a_public_file_is_made_private_when_loaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store.save(&Persisted::default()).expect("save");
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert!(matches!(store.load(), Loaded::Found(_)));
        let mode = std::fs::metadata(store.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unreadable_file_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        // A directory where the file should be: reading it fails with an I/O error.
        std::fs::create_dir(store.path()).expect("mkdir");
        assert!(matches!(store.load(), Loaded::Unusable(m) if m.contains("cannot read")));
    }
}
