//! DNS while an `up` tunnel is connected: applications are pointed at the tunnel's resolvers.
//!
//! The firewall already lets DNS go only to the tunnel's resolvers; this makes applications ask
//! them, instead of a LAN resolver they can no longer reach. Through systemd-resolved when it
//! runs ([`resolved`]), otherwise by writing resolv.conf ([`resolv_conf`]), with a backup that is
//! restored by `down`, on a clean stop, and on the next start after a crash.
//!
//! DNS is not a security layer, so a failure here never changes the firewall: it is logged and
//! shown in `status`, and tried again at the next event.

pub mod resolv_conf;
pub mod resolved;

use killswitch_types::InterfaceName;
use killswitch_types::ipc::DnsStatus;
use resolv_conf::ResolvConf;
use serde::Deserialize;
use std::net::IpAddr;

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

/// The DNS manager.
#[derive(Debug)]
pub struct Dns {
    mode: DnsMode,
    file: ResolvConf,
    bus: Option<zbus::Connection>,
    applied: Option<(Via, InterfaceName, Vec<IpAddr>)>,
    status: Option<DnsStatus>,
}

impl Dns {
    /// A manager in `mode`, writing `file` when it writes a file, and talking to
    /// systemd-resolved on `bus` (the system bus, if there is one).
    pub fn new(mode: DnsMode, file: ResolvConf, bus: Option<zbus::Connection>) -> Self {
        Dns {
            mode,
            file,
            bus,
            applied: None,
            status: None,
        }
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
                self.status = Some(DnsStatus {
                    via: self.file.path().display().to_string(),
                    servers: Vec::new(),
                    error: Some(e.to_string()),
                });
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
                let current = self.applied.as_ref().map(|(_, i, s)| (i, s));
                let failed = self.status.as_ref().is_some_and(|s| s.error.is_some());
                // resolved forgets a link that goes: a tunnel re-created under the same name
                // is a new link that needs its resolvers again.
                let relinked = matches!(&self.applied, Some((Via::Resolved { index }, name, _))
                    if killswitch_tunnel::netdev::index(name.as_str()) != Some(*index));
                if current != Some((&interface, &servers)) || failed || relinked {
                    self.apply(interface, servers).await;
                }
            }
        }
        self.status != before
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
                // A resolv.conf written earlier (resolved was not running then) goes first.
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
            None => (
                self.file.path().display().to_string(),
                self.file
                    .apply(interface.as_str(), &servers)
                    .map(|()| Via::File)
                    .map_err(|e| e.to_string()),
            ),
        };
        match result {
            Ok(via) => {
                tracing::info!(
                    "DNS: queries now go to {servers:?}, the resolvers of {interface} ({label})"
                );
                self.applied = Some((via, interface, servers.clone()));
                self.status = Some(DnsStatus {
                    via: label,
                    servers,
                    error: None,
                });
            }
            Err(error) => {
                if self.status.as_ref().and_then(|s| s.error.as_ref()) != Some(&error) {
                    tracing::error!("DNS: {error}");
                }
                self.status = Some(DnsStatus {
                    via: label,
                    servers,
                    error: Some(error),
                });
            }
        }
    }

    /// Gives the user's resolver configuration back.
    pub async fn restore(&mut self) {
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
                self.status = Some(DnsStatus {
                    via: self.file.path().display().to_string(),
                    servers: Vec::new(),
                    error: Some(error),
                });
            }
        }
    }
}
