//! DNS while an `up` tunnel is connected: applications are pointed at the tunnel's resolvers.
//!
//! The firewall already lets DNS go only to the tunnel's resolvers; this makes applications ask
//! them, instead of a LAN resolver they can no longer reach. Through systemd-resolved when it
//! runs ([`resolved`]), otherwise by writing resolv.conf ([`resolv_conf`]), with a backup that is
//! restored by `down`, on a clean stop, and on the next start after a crash.
//!
//! While the daemon manages resolv.conf for a connected tunnel, [`watch`] notices another program
//! rewriting it (a DHCP client on a new network); the tunnel's resolvers are written again at
//! once, the newer file becomes the one to restore, and `status` counts it. While it manages no
//! file (the user's own DNS, systemd-resolved, `dns = "off"`), nothing is watched: the daemon
//! never fights the user's own configuration. While the tunnel reconnects the file is left as it
//! is and a rewrite only noted, then undone once connected again.
//!
//! DNS is not a security layer, so a failure here never changes the firewall: it is logged and
//! shown in `status`, and tried again at the next event.

pub mod resolv_conf;
pub mod resolved;
pub mod watch;

use killswitch_types::InterfaceName;
use killswitch_types::ipc::DnsStatus;
use resolv_conf::ResolvConf;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use watch::{FIGHT_REWRITES, FIGHT_WINDOW, ResolvConfWatch, RewriteBudget};

/// What the system's resolver configuration should be (see `Core::dns_want`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsWant {
    /// The tunnel's resolvers.
    Tunnel {
        /// The tunnel interface.
        interface: InterfaceName,
        /// Its resolvers.
        servers: Vec<IpAddr>,
    },
    /// Whatever it is now.
    Keep,
    /// The user's own.
    Restore,
}

/// How the daemon manages DNS (`dns` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsMode {
    /// systemd-resolved when it runs, resolv.conf otherwise.
    #[default]
    Auto,
    /// Only systemd-resolved (an error when it does not run).
    Resolved,
    /// Only resolv.conf.
    ResolvConf,
    /// Not at all: something else points applications at the tunnel's resolvers.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Via {
    Resolved { index: u32 },
    File,
}

/// What [`ResolvConf::rewritten`] says: `None` when the file is the daemon's own.
type Rewritten = Result<Option<resolv_conf::Rewrite>, resolv_conf::ResolvConfError>;

/// The DNS manager.
#[derive(Debug)]
pub struct Dns {
    mode: DnsMode,
    file: ResolvConf,
    bus: Option<zbus::Connection>,
    applied: Option<(Via, InterfaceName, Vec<IpAddr>)>,
    status: Option<DnsStatus>,
    /// Armed exactly while `applied` is a file.
    watch: ResolvConfWatch,
    rewrites: u64,
    last_rewrite: Option<(u64, String)>,
    budget: RewriteBudget,
    /// Until when the daemon does not undo rewrites (another program fought back too often).
    pause: Option<Instant>,
}

impl Dns {
    /// A manager in `mode`, writing `file` when it writes a file, and talking to
    /// systemd-resolved on `bus` (the system bus, if there is one).
    pub fn new(mode: DnsMode, file: ResolvConf, bus: Option<zbus::Connection>) -> Self {
        Dns {
            mode,
            watch: ResolvConfWatch::new(file.path()),
            file,
            bus,
            applied: None,
            status: None,
            rewrites: 0,
            last_rewrite: None,
            budget: RewriteBudget::default(),
            pause: None,
        }
    }

    /// A status line about `via`, with what the watch saw.
    fn report(&self, via: String, servers: Vec<IpAddr>, error: Option<String>) -> DnsStatus {
        DnsStatus {
            via,
            servers,
            error,
            rewrites: self.rewrites,
            last_rewrite_at: self.last_rewrite.as_ref().map(|(at, _)| *at),
            last_rewrite: self.last_rewrite.as_ref().map(|(_, what)| what.clone()),
            watch_error: self.watch.error().map(str::to_owned),
        }
    }

    /// Returns when the resolv.conf the daemon manages may have been changed by someone; never
    /// while it manages none. The next [`Dns::sync`] looks at the file. Cancel-safe (the event
    /// loop drops it at every other event).
    pub async fn resolv_conf_touched(&mut self) {
        self.watch.touched().await;
    }

    /// Puts back a resolv.conf that a daemon which did not stop cleanly left behind.
    pub fn recover(&mut self) {
        match self.file.restore() {
            Ok(true) => tracing::info!(
                "restored {} (left by a daemon that did not stop cleanly)",
                self.file.path().display()
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!("restoring DNS: {e}");
                self.status = Some(self.report(
                    self.file.path().display().to_string(),
                    Vec::new(),
                    Some(e.to_string()),
                ));
            }
        }
    }

    /// What `status` shows.
    pub fn status(&self) -> Option<DnsStatus> {
        self.status.clone()
    }

    /// Makes the system's resolver configuration what `want` says. Returns whether the status
    /// changed.
    pub async fn sync(&mut self, want: DnsWant) -> bool {
        let before = self.status.clone();
        match want {
            DnsWant::Keep => {}
            DnsWant::Restore => self.restore().await,
            DnsWant::Tunnel { interface, servers } => {
                // Taken only here: a rewrite while the tunnel reconnects (`Keep`) is undone once
                // it is connected again.
                let touched = self.watch.take_touched();
                let current = self.applied.as_ref().map(|(_, i, s)| (i, s));
                // A pause in a fight is not a failure to retry at every event.
                let failed =
                    self.pause.is_none() && self.status.as_ref().is_some_and(|s| s.error.is_some());
                // resolved forgets a link that goes: a tunnel re-created under the same name
                // is a new link that needs its resolvers again.
                let relinked = matches!(&self.applied, Some((Via::Resolved { index }, name, _))
                    if killswitch_tunnel::netdev::index(name.as_str()) != Some(*index));
                if current != Some((&interface, &servers)) || failed || relinked {
                    self.apply(interface, servers).await;
                } else if touched && matches!(self.applied, Some((Via::File, ..))) {
                    self.put_back(interface, servers);
                }
            }
        }
        // The watch may have broken in the background (its directory gone, a read error).
        if let Some(status) = &mut self.status
            && status.watch_error.as_deref() != self.watch.error()
        {
            status.watch_error = self.watch.error().map(str::to_owned);
        }
        self.status != before
    }

    /// The watch saw the file change: if someone else rewrote it, the tunnel's resolvers go back.
    fn put_back(&mut self, interface: InterfaceName, servers: Vec<IpAddr>) {
        let path = self.file.path().display().to_string();
        let Some(seen) = self.read_between_writes(&interface, &servers) else {
            // Someone is writing it: the watch says when they are done.
            return;
        };
        let what = match seen {
            // The daemon's own write (or a change that left the content as it was).
            Ok(None) => return,
            Ok(Some(rewrite)) => rewrite.what,
            Err(e) => {
                self.fail(path, servers, e.to_string());
                return;
            }
        };
        let now = Instant::now();
        if let Err(until) = self.budget.spend(now) {
            if self.pause.is_none() {
                let error = format!(
                    "{path} was rewritten by another program {FIGHT_REWRITES} times within {} s \
                     and put back each time; not fighting it for {} s (the file is now {what}; \
                     lookups fail meanwhile, the firewall blocks other resolvers)",
                    FIGHT_WINDOW.as_secs(),
                    until.saturating_duration_since(now).as_secs().max(1),
                );
                tracing::error!("DNS: {error}");
                self.status = Some(self.report(path, servers, Some(error)));
            }
            self.pause = Some(until);
            self.watch.look_again_at(until);
            return;
        }
        self.pause = None;
        match self.file.apply(interface.as_str(), &servers) {
            Ok(adopted) => {
                let restored = if adopted {
                    "; that version is the one `down` restores"
                } else {
                    ""
                };
                tracing::warn!(
                    "DNS: {path} was rewritten by another program ({what}); the tunnel's \
                     resolvers {servers:?} are put back{restored}"
                );
                self.rewrites += 1;
                let at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.last_rewrite =
                    Some((at, format!("{what}; the tunnel's resolvers were put back")));
                self.status = Some(self.report(path, servers, None));
            }
            Err(e) => self.fail(path, servers, e.to_string()),
        }
    }

    /// Reads the file when no one is writing it: between two looks at the watch's queue that
    /// show no change, so that half of someone's in-place write is never taken for their file
    /// (and made the one to restore). `None` while a write is in progress, or the file keeps
    /// changing.
    ///
    /// The kernel queues an event only after the change is visible, so a write that has just
    /// begun can show as an empty file with no event yet (the daemon looking because of its own
    /// write, just as someone else starts theirs). A file that looks half written is therefore
    /// given [`watch::SETTLE`] since the last event to be finished.
    fn read_between_writes(
        &mut self,
        interface: &InterfaceName,
        servers: &[IpAddr],
    ) -> Option<Rewritten> {
        for _ in 0..3 {
            if self.watch.drain() == watch::Next::Settle {
                return None;
            }
            let seen = self.file.rewritten(interface.as_str(), servers);
            match self.watch.drain() {
                watch::Next::Wait => {
                    let unfinished = matches!(&seen, Ok(Some(r)) if r.unfinished);
                    let settled = self.watch.last_change().map(|at| at + watch::SETTLE);
                    return match settled {
                        Some(at) if unfinished && at > Instant::now() => {
                            self.watch.look_again_at(at);
                            None
                        }
                        _ => Some(seen),
                    };
                }
                watch::Next::Settle => return None,
                // Changed while being read: read again.
                watch::Next::Look => {}
            }
        }
        // Still changing: once the watch has seen it quiet.
        self.watch.look_again_at(Instant::now() + watch::SETTLE);
        None
    }

    /// Records a failure to manage the file, logged once.
    fn fail(&mut self, via: String, servers: Vec<IpAddr>, error: String) {
        if self.status.as_ref().and_then(|s| s.error.as_ref()) != Some(&error) {
            tracing::error!("DNS: {error}");
        }
        self.status = Some(self.report(via, servers, Some(error)));
    }

    async fn apply(&mut self, interface: InterfaceName, servers: Vec<IpAddr>) {
        if self.mode == DnsMode::Off {
            return;
        }
        let bus = match (&self.bus, self.mode) {
            (Some(bus), DnsMode::Auto | DnsMode::Resolved) if resolved::running(bus).await => {
                Some(bus.clone())
            }
            _ => None,
        };
        let (label, result) = match bus {
            Some(bus) => {
                // A resolv.conf written earlier (resolved was not running then) goes first,
                // and with it the watch: what happens to the file is not the daemon's business
                // any more.
                self.watch.disarm();
                if let Err(e) = self.file.restore() {
                    tracing::warn!("restoring DNS: {e}");
                }
                let result = match killswitch_tunnel::netdev::index(interface.as_str()) {
                    Some(index) => resolved::set_link(&bus, index, &servers)
                        .await
                        .map(|()| Via::Resolved { index })
                        .map_err(|e| {
                            format!("systemd-resolved refused the tunnel's resolvers: {e}")
                        }),
                    None => Err(format!("{interface} does not exist")),
                };
                ("systemd-resolved".to_owned(), result)
            }
            None if self.mode == DnsMode::Resolved => (
                "systemd-resolved".to_owned(),
                Err(
                    "systemd-resolved is not running (dns = \"resolved\" in config.toml)"
                        .to_owned(),
                ),
            ),
            None => {
                // Watching first, so that no rewrite between the write and the watch goes
                // unnoticed; the daemon's own write then comes back once, and is recognised.
                let watch_error = self.watch.error().map(str::to_owned);
                if let Err(e) = self.watch.arm() {
                    let e = e.to_string();
                    if watch_error.as_ref() != Some(&e) {
                        tracing::warn!(
                            "DNS: cannot watch for other programs rewriting the file ({e}); \
                             such a rewrite goes unnoticed until the tunnel changes"
                        );
                    }
                }
                let result = match self.file.apply(interface.as_str(), &servers) {
                    Ok(adopted) => {
                        if adopted {
                            tracing::info!(
                                "{} was rewritten by someone else; that version is the one to \
                                 restore",
                                self.file.path().display()
                            );
                        }
                        Ok(Via::File)
                    }
                    Err(e) => {
                        self.watch.disarm();
                        Err(e.to_string())
                    }
                };
                (self.file.path().display().to_string(), result)
            }
        };
        match result {
            Ok(via) => {
                tracing::info!(
                    "DNS: queries now go to {servers:?}, the resolvers of {interface} ({label})"
                );
                self.applied = Some((via, interface, servers.clone()));
                self.pause = None;
                self.status = Some(self.report(label, servers, None));
            }
            Err(error) => self.fail(label, servers, error),
        }
    }

    /// Gives the user's resolver configuration back.
    pub async fn restore(&mut self) {
        // From here on the file is the user's: their changes are theirs, and so is the restore.
        self.watch.disarm();
        self.pause = None;
        let result = match self.applied.take() {
            Some((Via::Resolved { index }, interface, _)) => match &self.bus {
                // The link may be gone already, and with it what resolved knew of it.
                Some(bus)
                    if killswitch_tunnel::netdev::index(interface.as_str()) == Some(index) =>
                {
                    resolved::revert_link(bus, index)
                        .await
                        .map_err(|e| format!("systemd-resolved: {e}"))
                }
                _ => Ok(()),
            },
            _ => self.file.restore().map(drop).map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => {
                if self.status.take().is_some_and(|s| s.error.is_none()) {
                    tracing::info!("DNS: the system's own resolvers are back");
                }
            }
            Err(error) => {
                tracing::error!("DNS: restoring failed: {error}");
                self.status = Some(self.report(
                    self.file.path().display().to_string(),
                    Vec::new(),
                    Some(error),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The DNS manager with a resolv.conf in a temporary directory and real inotify (no root, no
    //! namespace: the file is not the system's).

    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    const LAN: &str = "search lan\nnameserver 192.168.50.53\n";

    struct Setup {
        _dir: tempfile::TempDir,
        path: PathBuf,
        dns: Dns,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).expect("mkdir");
        let path = etc.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.168.50.1\n").expect("write");
        let file = ResolvConf::new(&path, &dir.path().join("state"));
        Setup {
            dns: Dns::new(DnsMode::ResolvConf, file, None),
            path,
            _dir: dir,
        }
    }

    fn tunnel() -> DnsWant {
        DnsWant::Tunnel {
            interface: "wg0".parse().expect("name"),
            servers: vec!["10.64.0.1".parse().expect("ip")],
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("read")
    }

    /// Waits for the watch, as the event loop does; false if it stayed quiet for a second.
    async fn touched(dns: &mut Dns) -> bool {
        tokio::time::timeout(Duration::from_secs(1), dns.resolv_conf_touched())
            .await
            .is_ok()
    }

    fn rename_onto(path: &Path, content: &str) {
        let tmp = path.with_extension("dhcp-new");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    fn rewrites(dns: &Dns) -> u64 {
        dns.status().map_or(0, |s| s.rewrites)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rewrite_while_connected_is_undone_and_counted_and_restored_later() {
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        assert!(dns.sync(tunnel()).await);
        assert!(read(&path).contains("nameserver 10.64.0.1\n"));
        // The daemon's own first write comes back through the watch: recognised, nothing changes.
        if touched(&mut dns).await {
            assert!(!dns.sync(tunnel()).await);
        }

        // A DHCP client replaces the file by rename.
        rename_onto(&path, LAN);
        assert!(touched(&mut dns).await, "the rename was noticed");
        assert!(dns.sync(tunnel()).await, "status changed");
        assert!(
            read(&path).contains("nameserver 10.64.0.1\n"),
            "{}",
            read(&path)
        );
        let status = dns.status().expect("status");
        assert_eq!(status.rewrites, 1);
        assert!(status.last_rewrite_at.is_some());
        assert_eq!(
            status.last_rewrite.as_deref(),
            Some("naming 192.168.50.53; the tunnel's resolvers were put back")
        );
        assert_eq!(status.error, None);
        assert_eq!(status.watch_error, None);

        // The put-back is the daemon's own write: seen, recognised, not undone again.
        assert!(touched(&mut dns).await, "its own write comes back");
        assert!(!dns.sync(tunnel()).await, "and changes nothing");
        assert_eq!(rewrites(&dns), 1);

        // In place this time.
        std::fs::write(&path, "nameserver 192.168.50.54\n").expect("write");
        assert!(touched(&mut dns).await);
        assert!(dns.sync(tunnel()).await);
        assert_eq!(rewrites(&dns), 2);
        assert!(read(&path).contains("nameserver 10.64.0.1\n"));

        // `down`: the newest file someone else wrote is the one restored.
        assert!(dns.sync(DnsWant::Restore).await);
        assert_eq!(read(&path), "nameserver 192.168.50.54\n");
        assert_eq!(dns.status(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn half_of_someones_write_is_not_taken_for_their_file() {
        use std::io::Write;
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        assert!(dns.sync(tunnel()).await);
        // The daemon's own write comes back: the next sync will look at the file.
        assert!(touched(&mut dns).await);
        // Meanwhile someone starts writing in place, and is not done when the daemon looks.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        file.write_all(b"search lan\nnameserver 192.")
            .expect("write");
        assert!(!dns.sync(tunnel()).await, "nothing done mid-write");
        assert_eq!(rewrites(&dns), 0);
        file.write_all(b"168.50.53\n").expect("write");
        drop(file);
        assert!(touched(&mut dns).await, "the close");
        assert!(dns.sync(tunnel()).await);
        assert_eq!(
            dns.status().and_then(|s| s.last_rewrite).as_deref(),
            Some("naming 192.168.50.53; the tunnel's resolvers were put back")
        );
        assert!(dns.sync(DnsWant::Restore).await);
        assert_eq!(read(&path), LAN, "the whole file is the one restored");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_emptied_file_is_given_time_to_be_written() {
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        assert!(dns.sync(tunnel()).await);
        // Truncated, with nothing written yet (as seen in the middle of `cat x > resolv.conf`).
        std::fs::write(&path, "").expect("truncate");
        let emptied = Instant::now();
        let mut looks = 0;
        while rewrites(&dns) == 0 {
            assert!(touched(&mut dns).await, "looked at again");
            dns.sync(tunnel()).await;
            looks += 1;
        }
        assert!(
            emptied.elapsed() >= watch::SETTLE,
            "{:?}",
            emptied.elapsed()
        );
        assert!(looks >= 2, "{looks}");
        assert!(read(&path).contains("nameserver 10.64.0.1\n"));
        // Nobody's file: the one from before `up` is restored.
        assert!(dns.sync(DnsWant::Restore).await);
        assert_eq!(read(&path), "nameserver 192.168.50.1\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_watch_that_cannot_be_set_up_is_shown_and_changes_nothing_else() {
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        let nowhere = path.with_file_name("nonexistent");
        dns.watch = ResolvConfWatch::new(&path).in_dir(&nowhere);
        assert!(dns.sync(tunnel()).await);
        let status = dns.status().expect("status");
        assert_eq!(status.error, None, "the resolvers are set all the same");
        assert!(
            status
                .watch_error
                .as_deref()
                .is_some_and(|e| e.contains("nonexistent")),
            "{status:?}"
        );
        assert!(read(&path).contains("nameserver 10.64.0.1\n"));
        // Unnoticed, as the status says.
        std::fs::write(&path, LAN).expect("write");
        assert!(!touched(&mut dns).await);
        assert!(dns.sync(DnsWant::Restore).await);
        assert_eq!(dns.status(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_file_the_daemon_does_not_manage_is_left_to_its_owner() {
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        assert!(dns.sync(tunnel()).await);
        assert!(dns.sync(DnsWant::Restore).await);
        // The user's own file: nobody watches, nobody rewrites.
        std::fs::write(&path, LAN).expect("write");
        assert!(!touched(&mut dns).await, "not watched after restore");
        assert!(!dns.sync(DnsWant::Restore).await);
        assert_eq!(read(&path), LAN);

        // dns = "off": nothing written, nothing watched.
        let Setup {
            _dir: _other, path, ..
        } = setup();
        let mut off = Dns::new(
            DnsMode::Off,
            ResolvConf::new(&path, &path.with_file_name("state")),
            None,
        );
        off.sync(tunnel()).await;
        std::fs::write(&path, LAN).expect("write");
        assert!(!touched(&mut off).await);
        assert_eq!(read(&path), LAN);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rewrite_while_reconnecting_is_undone_once_connected() {
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        assert!(dns.sync(tunnel()).await);
        // The tunnel died (a Wi-Fi hand-off); the DHCP client on the new network writes.
        rename_onto(&path, LAN);
        assert!(touched(&mut dns).await);
        assert!(!dns.sync(DnsWant::Keep).await);
        assert_eq!(read(&path), LAN, "left alone while reconnecting");
        // Connected again, to the same server: the resolvers go back.
        assert!(dns.sync(tunnel()).await);
        assert!(read(&path).contains("nameserver 10.64.0.1\n"));
        assert_eq!(rewrites(&dns), 1);
        assert!(dns.sync(DnsWant::Restore).await);
        assert_eq!(read(&path), LAN);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_program_that_fights_back_is_not_fought_forever() {
        let Setup {
            _dir,
            path,
            mut dns,
        } = setup();
        assert!(dns.sync(tunnel()).await);
        for n in 1..=FIGHT_REWRITES as u64 {
            std::fs::write(&path, format!("nameserver 192.168.50.{n}\n")).expect("write");
            // Until the rewrite is seen and undone (the daemon's own write comes back too).
            while rewrites(&dns) < n {
                assert!(touched(&mut dns).await, "rewrite {n} noticed");
                dns.sync(tunnel()).await;
            }
        }
        std::fs::write(&path, LAN).expect("write");
        while dns.status().is_some_and(|s| s.error.is_none()) {
            assert!(touched(&mut dns).await, "the last rewrite noticed");
            dns.sync(tunnel()).await;
        }
        let status = dns.status().expect("status");
        assert_eq!(status.rewrites, FIGHT_REWRITES as u64);
        let error = status.error.unwrap_or_default();
        assert!(error.contains("not fighting it"), "{error}");
        assert_eq!(read(&path), LAN, "left as the other program wrote it");
        // A pause is not a failure to retry at every event; the watch looks again at its end.
        assert!(!dns.sync(tunnel()).await);
        assert_eq!(read(&path), LAN);
        assert!(dns.pause.is_some_and(|until| until > Instant::now()));
    }
}
