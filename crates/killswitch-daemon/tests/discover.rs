//! `guard IFACE` asks only this namespace's WireGuard: userspace WireGuard's control sockets share
//! one directory (/var/run/wireguard) across every network namespace, so a device of the same
//! name in another namespace has a socket that looks like ours. Found by a stranger's test: the
//! daemon read that other device's peers as servers and set its fwmark.

use anyhow::Result;
use killswitch_daemon::discover;
use killswitch_daemon::handshake::{Tap, look};
use killswitch_lab::netns::{Netns, require_root};
use killswitch_lab::wireguard::Device;
use killswitch_types::{GuardQuery, Handshake, TunnelStatus};

#[test]
fn another_namespaces_wireguard_of_the_same_name_is_never_asked_or_changed() -> Result<()> {
    if !require_root("another_namespaces_wireguard_of_the_same_name_is_never_asked_or_changed") {
        return Ok(());
    }
    let ours = Netns::new("disc-ours")?;
    let theirs = Netns::new("disc-theirs")?;
    let name = format!("ksdi{}", std::process::id() % 100_000);
    // Their namespace: a real wireguard-go device, no fwmark, one peer with an endpoint.
    let _device = Device::start(&theirs, &name)?;
    let peer = killswitch_lab::wireguard::KeyPair::generate()?;
    theirs.exec(
        "wg",
        &[
            "set",
            &name,
            "peer",
            &peer.public,
            "endpoint",
            "198.51.100.9:51820",
        ],
    )?;
    // Ours: a plain tun device of the same name (an OpenVPN, say).
    ours.ip(&["tuntap", "add", "dev", &name, "mode", "tun"])?;
    ours.ip(&["link", "set", &name, "up"])?;

    let query = GuardQuery {
        interface: name.parse()?,
        endpoints: vec![],
        dns: None,
        mark: None,
        uid: None,
    };
    let dir = std::path::PathBuf::from("/nonexistent");
    let outcome = ours.run(|| discover::complete(&query, &dir))?;
    let message = match outcome {
        Ok(plan) => panic!("their device was taken for ours: {:?}", plan.spec),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains("--endpoint"),
        "the refusal says what to pass instead: {message}"
    );
    let their_mark = theirs.exec("wg", &["show", &name, "fwmark"])?;
    assert_eq!(
        their_mark.trim(),
        "off",
        "their device's fwmark was changed"
    );

    // `status`'s handshake: ours is no WireGuard device, whatever their socket says.
    let status = TunnelStatus {
        interface: name.parse()?,
        endpoint: "198.51.100.1:1194".parse()?,
        endpoints: vec![],
        dns: vec![],
        mark: None,
        uid: None,
        up: true,
        addresses: vec![],
        managed: None,
        handshake: None,
    };
    let seen = ours.run(|| look(&status, &Tap::default()))?;
    assert_eq!(
        seen,
        Some(Handshake {
            wireguard: false,
            last_unix: None
        })
    );
    Ok(())
}
