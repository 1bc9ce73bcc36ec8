//! The embedded userspace backend (boringtun) against an independent WireGuard (wireguard-go), in
//! namespaces this test creates.

use anyhow::{Context, Result, ensure};
use killswitch_lab::netns::require_root;
use killswitch_lab::topology::{self, Topology};
use killswitch_lab::traffic;
use killswitch_lab::wireguard::{KeyPair, Server};
use killswitch_tunnel::backend::{self, Backend, BackendKind};
use killswitch_tunnel::config::TunnelConfig;
use killswitch_tunnel::{config, netdev};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Configures `device` for `config` (as the daemon does: device, then addresses) and sends one
/// datagram to `target` through it; returns once the handshake completed.
fn connect_and_send(
    device: &mut dyn Backend,
    config: &TunnelConfig,
    target: SocketAddr,
    payload: &[u8],
) -> Result<()> {
    device.configure(config, 0xca6c)?;
    // Route the target into the tunnel (the daemon's routing layer does this in real use), after
    // the address: the route's source address is chosen when it is added.
    let status = std::process::Command::new("ip")
        .args([
            "route",
            "replace",
            &format!("{}/32", topology::TARGET_V4),
            "dev",
            device.interface(),
        ])
        .status()?;
    ensure!(status.success(), "route");
    traffic::send_udp(target, payload, None)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = device.stats()?.context("one peer")?;
        // A completed handshake (boringtun counts only data in rx/tx).
        if stats.last_handshake.is_some() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no handshake within 10 s: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next datagram at `listener`, which must be `payload` from `from`.
fn expect_datagram(listener: &UdpSocket, payload: &[u8], from: IpAddr) -> Result<()> {
    let mut buffer = [0u8; 64];
    let (n, source) = listener.recv_from(&mut buffer).with_context(|| {
        format!(
            "the target heard nothing ({})",
            String::from_utf8_lossy(payload)
        )
    })?;
    ensure!(
        &buffer[..n] == payload && source.ip() == from,
        "got {:?} from {source}",
        &buffer[..n]
    );
    Ok(())
}

#[test]
fn boringtun_handshakes_with_wireguard_go_and_moves_to_another_server() -> Result<()> {
    if !require_root("boringtun_handshakes_with_wireguard_go_and_moves_to_another_server") {
        return Ok(());
    }
    let topo = Topology::new("userspace")?;
    let client = KeyPair::generate()?;
    let mut servers = Vec::new();
    let mut configs = Vec::new();
    for n in [1, 2] {
        let server = Server::start(&topo, n)?;
        server.allow(&topo, &client.public)?;
        configs.push(config::parse("test.conf", &server.client_config(&client))?);
        servers.push(server);
    }
    let name = format!("ksut{}", std::process::id() % 100_000);

    let target = SocketAddr::new(topology::TARGET_V4.into(), 9100);
    let listener = topo.net.run(|| UdpSocket::bind(target))??;
    listener.set_read_timeout(Some(Duration::from_secs(5)))?;

    topo.client.run(|| -> Result<()> {
        let mut device = backend::create(&name)?;
        ensure!(
            device.kind() == BackendKind::Userspace,
            "this machine has no kernel WireGuard"
        );
        connect_and_send(device.as_mut(), &configs[0], target, b"to server 1")?;
        expect_datagram(&listener, b"to server 1", servers[0].client_ip.into())?;
        // Failover: the same device, the other server (new peer, new address).
        connect_and_send(device.as_mut(), &configs[1], target, b"to server 2")?;
        expect_datagram(&listener, b"to server 2", servers[1].client_ip.into())?;

        drop(device);
        ensure!(
            netdev::index(&name).is_none(),
            "dropping the backend removes the interface"
        );
        Ok(())
    })??;
    Ok(())
}
