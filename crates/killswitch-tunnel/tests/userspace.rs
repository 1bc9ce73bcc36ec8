//! The embedded userspace backend (boringtun) against an independent WireGuard (wireguard-go), in
//! namespaces this test creates.

use anyhow::{Context, Result, ensure};
use killswitch_lab::netns::require_root;
use killswitch_lab::topology::{self, Topology};
use killswitch_lab::traffic;
use killswitch_lab::wireguard::{KeyPair, Server};
use killswitch_tunnel::backend::{self, BackendKind};
use killswitch_tunnel::{config, netdev};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[test]
fn boringtun_handshakes_with_wireguard_go_and_carries_traffic() -> Result<()> {
    if !require_root("boringtun_handshakes_with_wireguard_go_and_carries_traffic") {
        return Ok(());
    }
    let topo = Topology::new("userspace")?;
    let server = Server::start(&topo, 0)?;
    let client = KeyPair::generate()?;
    server.allow(&topo, &client.public)?;
    let config = config::parse("test.conf", &server.client_config(&client))?;
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
        device.configure(&config, 0xca6c)?;
        let index = netdev::index(&name).context("the interface exists")?;
        netdev::configure(index, &config.addresses, None)?;
        // Route the target into the tunnel (the daemon's routing layer does this in real use).
        let status = std::process::Command::new("ip")
            .args([
                "route",
                "add",
                &format!("{}/32", topology::TARGET_V4),
                "dev",
                &name,
            ])
            .status()?;
        ensure!(status.success(), "route");
        traffic::send_udp(target, b"through boringtun", None)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = device.stats()?.context("one peer")?;
            // A completed handshake (boringtun counts only data in rx/tx).
            if stats.last_handshake.is_some() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no handshake within 10 s: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(device);
        ensure!(
            netdev::index(&name).is_none(),
            "dropping the backend removes the interface"
        );
        Ok(())
    })??;
    let mut buffer = [0u8; 64];
    let (n, from) = listener
        .recv_from(&mut buffer)
        .context("the target heard nothing")?;
    ensure!(
        &buffer[..n] == b"through boringtun" && from.ip() == std::net::IpAddr::V4(server.client_ip),
        "from {from}"
    );
    Ok(())
}
