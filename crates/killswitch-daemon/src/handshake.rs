//! The tunnel's last WireGuard handshake, for `status` and `killswitch blocked`: filled into each
//! `status` answer by the IPC server, like the refused packets ([`crate::blocked`]), and never
//! by the core, which stays deterministic and free of I/O. Events go without it.
//!
//! Two sources. A tunnel the daemon runs itself (`up`) is not read again: its manager reads the
//! device's statistics twice a second for its health tracker, and [`tapped`] keeps the last
//! reading's handshake where the IPC server finds it (the embedded userspace device has no
//! socket anyone else could ask). A guarded tunnel, which another program runs, is read when
//! asked: over its UAPI socket (wireguard-go, boringtun) or generic netlink (the kernel's).

use crate::manager::Factory;
use killswitch_tunnel::TunnelError;
use killswitch_tunnel::backend::{Backend, BackendKind};
use killswitch_tunnel::config::TunnelConfig;
use killswitch_tunnel::uapi::PeerStats;
use killswitch_types::{Handshake, TunnelStatus};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the daemon's own device.
#[derive(Debug, Clone)]
struct Reading {
    /// The device's interface.
    interface: String,
    /// The peer's last handshake; `None` while none has completed.
    handshake: Option<SystemTime>,
}

/// What the manager last read from the device it runs. Empty while the daemon runs no device
/// or has not read it since creating or configuring it.
#[derive(Debug, Clone, Default)]
pub struct Tap(Arc<Mutex<Option<Reading>>>);

impl Tap {
    fn set(&self, value: Option<Reading>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// The last handshake read from the daemon's own device of interface `interface`: `None`
    /// when the daemon runs no device of that name or has not read it yet.
    fn read(&self, interface: &str) -> Option<Option<SystemTime>> {
        let seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.as_ref()
            .filter(|r| r.interface == interface)
            .map(|r| r.handshake)
    }
}

/// Wraps `create` so that every statistics reading of the devices it makes is kept in `tap`.
pub fn tapped(mut create: Factory, tap: Tap) -> Factory {
    Box::new(move |name: &str| {
        let device = create(name)?;
        tap.set(None);
        Ok(Box::new(Tapped {
            device,
            tap: tap.clone(),
        }) as Box<dyn Backend>)
    })
}

/// A device whose readings go to the tap as well as to the manager.
#[derive(Debug)]
struct Tapped {
    device: Box<dyn Backend>,
    tap: Tap,
}

impl Backend for Tapped {
    fn kind(&self) -> BackendKind {
        self.device.kind()
    }

    fn interface(&self) -> &str {
        self.device.interface()
    }

    fn index(&self) -> u32 {
        self.device.index()
    }

    fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError> {
        // A new configuration (another server) starts with no handshake.
        self.tap.set(None);
        self.device.configure(config, fwmark)
    }

    fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
        let stats = self.device.stats()?;
        self.tap.set(Some(Reading {
            interface: self.device.interface().to_owned(),
            handshake: stats.and_then(|s| s.last_handshake),
        }));
        Ok(stats)
    }

    fn presence(&self) -> killswitch_tunnel::netdev::Presence {
        self.device.presence()
    }
}

impl Drop for Tapped {
    fn drop(&mut self) {
        self.tap.set(None);
    }
}

/// The handshake to show for `tunnel`: `None` when the interface is down or absent, or could not
/// be read (the log says why). Blocking: call it off the runtime's threads.
pub fn look(tunnel: &TunnelStatus, tap: &Tap) -> Option<Handshake> {
    if !tunnel.up {
        return None;
    }
    let interface = tunnel.interface.as_str();
    if tunnel.managed.is_some() {
        return tap.read(interface).map(|last| wireguard(last.as_ref()));
    }
    // Only an interface of this namespace (see `killswitch_tunnel::handshake::peers`).
    killswitch_tunnel::netdev::index(interface)?;
    match killswitch_tunnel::handshake::peers(interface) {
        Ok(Some(peers)) => Some(wireguard(
            killswitch_tunnel::handshake::newest(&peers).as_ref(),
        )),
        Ok(None) => Some(Handshake {
            wireguard: false,
            last_unix: None,
        }),
        Err(e) => {
            // Asked at every `status` (a live view asks each second): not worth a warning each time.
            tracing::debug!("reading {interface}'s WireGuard handshake failed: {e}");
            None
        }
    }
}

fn wireguard(last: Option<&SystemTime>) -> Handshake {
    Handshake {
        wireguard: true,
        last_unix: last.and_then(|t| t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_tunnel::key::PublicKey;
    use std::time::Duration;

    /// A device whose peer completed its handshake at the time it holds.
    #[derive(Debug)]
    struct Fake(Option<SystemTime>);

    impl Backend for Fake {
        fn kind(&self) -> BackendKind {
            BackendKind::Userspace
        }
        fn interface(&self) -> &str {
            "wg0"
        }
        fn index(&self) -> u32 {
            7
        }
        fn configure(&mut self, _: &TunnelConfig, _: u32) -> Result<(), TunnelError> {
            Ok(())
        }
        fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
            Ok(Some(PeerStats {
                public_key: PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
                    .map_err(|e| TunnelError::Backend(e.to_string()))?,
                last_handshake: self.0,
                rx_bytes: 0,
                tx_bytes: 0,
            }))
        }
    }

    fn managed(up: bool) -> TunnelStatus {
        TunnelStatus {
            interface: "wg0".parse().expect("literal"),
            endpoint: "198.51.100.1:51820".parse().expect("literal"),
            endpoints: vec![],
            dns: vec![],
            mark: None,
            uid: None,
            up,
            addresses: vec![],
            managed: Some(killswitch_types::ManagedTunnel {
                backend: Some("userspace".to_owned()),
                servers: vec!["one.conf".to_owned()],
                server: 0,
                attempt: 0,
                last_event: None,
                failures: vec![],
            }),
            handshake: None,
        }
    }

    #[test]
    fn an_up_tunnel_shows_what_its_manager_last_read() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let tap = Tap::default();
        let mut factory = tapped(
            Box::new(move |_: &str| Ok(Box::new(Fake(Some(at))) as Box<dyn Backend>)),
            tap.clone(),
        );
        let device = factory("wg0").expect("created");
        assert_eq!(
            look(&managed(true), &tap),
            None,
            "not read yet: nothing to show"
        );
        let stats = device.stats().expect("read").expect("a peer");
        assert_eq!(
            stats.last_handshake,
            Some(at),
            "the manager's reading is unchanged"
        );
        assert_eq!(
            look(&managed(true), &tap),
            Some(Handshake {
                wireguard: true,
                last_unix: Some(1_800_000_000)
            })
        );
        assert_eq!(
            look(&managed(false), &tap),
            None,
            "a tunnel that is down shows none"
        );
        drop(device);
        assert_eq!(look(&managed(true), &tap), None, "the device is gone");
    }

    #[test]
    fn the_tap_answers_for_its_own_interface_only() {
        let tap = Tap::default();
        assert_eq!(tap.read("wg0"), None, "no device yet");
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let reading = |handshake| {
            Some(Reading {
                interface: "wg0".to_owned(),
                handshake,
            })
        };
        tap.set(reading(Some(at)));
        assert_eq!(tap.read("wg0"), Some(Some(at)));
        assert_eq!(tap.read("wg1"), None, "another interface's name");
        assert_eq!(
            wireguard(tap.read("wg0").flatten().as_ref()),
            Handshake {
                wireguard: true,
                last_unix: Some(1_800_000_000)
            }
        );
        tap.set(reading(None));
        assert_eq!(
            wireguard(tap.read("wg0").flatten().as_ref()).last_unix,
            None
        );
    }
}
