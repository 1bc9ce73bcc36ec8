//! The handshake `status` shows for a guarded interface that is no WireGuard device (a tun device
//! of OpenVPN): "not WireGuard", read in a namespace this test creates. A real wireguard-go
//! tunnel's handshake is checked by the lab's `counters` scenario.

use anyhow::Result;
use killswitch_daemon::handshake::{Tap, look};
use killswitch_lab::netns::{Netns, require_root};
use killswitch_types::{Handshake, TunnelStatus};

fn guarded(interface: &str, up: bool) -> TunnelStatus {
    TunnelStatus {
        interface: interface.parse().expect("a valid name"),
        endpoint: "198.51.100.1:1194".parse().expect("literal"),
        endpoints: vec![],
        dns: vec![],
        mark: None,
        uid: None,
        up,
        addresses: vec![],
        managed: None,
        handshake: None,
    }
}

#[test]
fn a_tun_device_is_shown_as_not_wireguard() -> Result<()> {
    if !require_root("a_tun_device_is_shown_as_not_wireguard") {
        return Ok(());
    }
    let ns = Netns::new("handshake")?;
    // A name no WireGuard socket in /var/run/wireguard (shared by every namespace) carries.
    let name = format!("kshs{}", std::process::id() % 100_000);
    ns.ip(&["tuntap", "add", "dev", &name, "mode", "tun"])?;
    ns.ip(&["link", "set", &name, "up"])?;
    let tap = Tap::default();
    let seen = ns.run(|| look(&guarded(&name, true), &tap))?;
    assert_eq!(
        seen,
        Some(Handshake {
            wireguard: false,
            last_unix: None
        })
    );
    // An interface absent from this namespace, or a tunnel that is down: nothing to show.
    assert_eq!(ns.run(|| look(&guarded("kshsabsent0", true), &tap))?, None);
    assert_eq!(ns.run(|| look(&guarded(&name, false), &tap))?, None);
    Ok(())
}
