//! killswitchd and killswitch end to end, in namespaces these tests create: guard mode over a real
//! WireGuard tunnel, crash resistance, authorisation and hostile input.

use anyhow::{Context, Result, ensure};
use killswitch_lab::capture::{Capture, Direction};
use killswitch_lab::daemon::{Daemon, DaemonHome, nft_table};
use killswitch_lab::netns::require_root;
use killswitch_lab::packet::{Frame, L4};
use killswitch_lab::topology::{self, Topology};
use killswitch_lab::traffic;
use killswitch_lab::wireguard::{self, Tunnel};
use killswitch_types::State;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A UDP listener on the target host (in the net namespace).
fn target_listener(topo: &Topology, port: u16) -> Result<UdpSocket> {
    let socket = topo
        .net
        .run(|| UdpSocket::bind(SocketAddr::new(topology::TARGET_V4.into(), port)))??;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(socket)
}

#[test]
fn guard_mode_over_a_real_wireguard_tunnel() -> Result<()> {
    if !require_root("guard_mode_over_a_real_wireguard_tunnel") {
        return Ok(());
    }
    let topo = Topology::new("guard")?;
    let mut tunnel = Tunnel::up(&topo)?;
    let home = DaemonHome::new()?;
    let daemon = Daemon::start(&topo.client, &home)?;
    let status = daemon.guard(&tunnel)?;
    ensure!(
        status.stdout.contains("state:     connected"),
        "{}",
        status.stdout
    );

    let capture = Capture::start(&topo.client, topology::PHYS)?;
    let listener = target_listener(&topo, 9000)?;
    let log_mark = tunnel.client_log_len();
    let target = SocketAddr::new(topology::TARGET_V4.into(), 9000);
    topo.client
        .run(|| traffic::send_udp(target, b"through the tunnel", None))??;
    tunnel.wait_for_handshake(log_mark, Duration::from_secs(10))?;
    let mut buffer = [0u8; 64];
    let (n, from) = listener
        .recv_from(&mut buffer)
        .context("the target never heard from the client")?;
    ensure!(&buffer[..n] == b"through the tunnel", "unexpected payload");
    ensure!(
        from.ip() == std::net::IpAddr::V4(wireguard::CLIENT_TUNNEL_V4),
        "arrived from {from}, not through the tunnel"
    );

    // A program that sends to the VPN server's address out of the physical interface directly,
    // without the tunnel's mark, is refused (the ServerIP attack).
    let direct = topo.client.run(|| {
        traffic::send_udp_via(topology::PHYS, tunnel.endpoint(), b"server-ip attack", None)
    })?;
    ensure!(
        direct.as_ref().is_err_and(traffic::is_local_rejection),
        "unmarked packet to the server: {direct:?}"
    );

    // Sentinel: the tunnel's own traffic, then judge everything on the physical link before it.
    topo.client
        .run(|| traffic::send_udp(target, b"sentinel", None))??;
    let (n, _) = listener.recv_from(&mut buffer)?;
    ensure!(&buffer[..n] == b"sentinel", "sentinel lost");
    for captured in capture
        .frames()
        .iter()
        .filter(|c| c.direction == Direction::Outgoing)
    {
        match &captured.frame {
            Frame::Ip(ip) => ensure!(
                ip.dst == tunnel.endpoint().ip()
                    && ip.transport
                        == L4::Udp {
                            sport: ip_sport(ip.transport),
                            dport: wireguard::PORT
                        }
                    || matches!(ip.transport, L4::Icmpv6 { kind: 133..=136 }),
                "leaked onto the physical link: {ip}"
            ),
            Frame::Arp => {}
            other => anyhow::bail!("unexpected frame on the physical link: {other}"),
        }
    }
    ensure!(capture.kernel_drops()? == 0, "the capture dropped frames");
    Ok(())
}

fn ip_sport(l4: L4) -> u16 {
    match l4 {
        L4::Udp { sport, .. } | L4::Tcp { sport, .. } => sport,
        _ => 0,
    }
}

#[test]
fn kill_9_of_the_daemon_leaves_the_rules_and_a_restart_adopts_them() -> Result<()> {
    if !require_root("kill_9_of_the_daemon_leaves_the_rules_and_a_restart_adopts_them") {
        return Ok(());
    }
    let topo = Topology::new("kill9")?;
    let home = DaemonHome::new()?;
    let mut daemon = Daemon::start(&topo.client, &home)?;
    daemon.cli(&["lockdown", "on"])?.ok()?;
    let before = nft_table(&topo.client)?.context("lockdown installs the table")?;

    daemon.process().kill()?;
    let after = nft_table(&topo.client)?.context("the table survives kill -9")?;
    ensure!(before == after, "the table changed when the daemon died");
    let target = SocketAddr::new(topology::TARGET_V4.into(), 443);
    let sent = topo
        .client
        .run(|| traffic::send_udp(target, b"while the daemon is dead", None))?;
    ensure!(
        sent.as_ref().is_err_and(traffic::is_local_rejection),
        "still blocked without a daemon: {sent:?}"
    );

    let daemon = Daemon::start(&topo.client, &home)?;
    let status = daemon.status()?;
    ensure!(
        status.state == State::Blocked && status.lockdown,
        "restart resumes lockdown: {status:?}"
    );
    ensure!(
        nft_table(&topo.client)?.as_deref() == Some(before.as_str()),
        "the restarted daemon installed the same rules"
    );
    Ok(())
}

#[test]
fn an_unprivileged_user_can_read_but_not_change() -> Result<()> {
    if !require_root("an_unprivileged_user_can_read_but_not_change") {
        return Ok(());
    }
    let topo = Topology::new("authz")?;
    let home = DaemonHome::new()?;
    let daemon = Daemon::start(&topo.client, &home)?;
    daemon.cli(&["lockdown", "on"])?.ok()?;
    let status = daemon.cli_as_nobody(&["--json", "status"])?.ok()?;
    ensure!(
        status.stdout.contains("\"state\":\"blocked\""),
        "{}",
        status.stdout
    );
    for change in [
        &["lockdown", "off"][..],
        &["off"],
        &["down"],
        &["allow-lan", "on"],
    ] {
        let refused = daemon.cli_as_nobody(change)?;
        ensure!(refused.code == Some(1), "{change:?} as nobody: {refused:?}");
        ensure!(
            refused.stderr.contains("permission denied") && refused.stderr.lines().count() == 1,
            "{refused:?}"
        );
    }
    let status = daemon.status()?;
    ensure!(
        status.state == State::Blocked && status.lockdown && !status.allow_lan,
        "nothing changed: {status:?}"
    );
    ensure!(
        nft_table(&topo.client)?.is_some(),
        "the table is still there"
    );
    Ok(())
}

#[test]
fn hostile_ipc_input_gets_errors_and_changes_nothing() -> Result<()> {
    if !require_root("hostile_ipc_input_gets_errors_and_changes_nothing") {
        return Ok(());
    }
    let topo = Topology::new("hostile")?;
    let home = DaemonHome::new()?;
    let mut daemon = Daemon::start(&topo.client, &home)?;
    daemon.cli(&["lockdown", "on"])?.ok()?;
    let before = nft_table(&topo.client)?;

    let mut stream = UnixStream::connect(home.socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let cases: [(&[u8], &str); 6] = [
        (b"hello\n", "bad_request"),
        (b"{\"version\":1,\"request\":{\"command\":\"off\",\"force\":true}}\n", "force"),
        (b"{\"version\":99,\"request\":{\"command\":\"off\"}}\n", "unsupported_version"),
        (b"{\"version\":1,\"request\":{\"command\":\"guard\",\"interface\":\"../../etc\",\"endpoint\":\"1.2.3.4:1\"}}\n", "interface name"),
        (b"\xff\xfe\n", "UTF-8"),
        (b"[1,2,3]\n", "JSON object"),
    ];
    for (line, expected) in cases {
        stream.write_all(line)?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        ensure!(
            reply.contains("\"type\":\"error\"") && reply.contains(expected),
            "{:?} -> {reply}",
            String::from_utf8_lossy(line)
        );
    }
    // An oversized line: an error, then the connection is closed.
    let huge = vec![b'x'; killswitch_types::ipc::MAX_REQUEST_BYTES + 10];
    stream.write_all(&huge)?;
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    ensure!(reply.contains("too_large"), "{reply}");

    ensure!(
        daemon.process().try_wait()?.is_none(),
        "the daemon survived:\n{}",
        daemon.log()
    );
    let status = daemon.status()?;
    ensure!(
        status.state == State::Blocked && status.lockdown,
        "{status:?}"
    );
    ensure!(
        nft_table(&topo.client)? == before,
        "the rules did not change"
    );
    Ok(())
}

#[test]
fn cli_errors_are_one_line_with_distinct_exit_codes() -> Result<()> {
    if !require_root("cli_errors_are_one_line_with_distinct_exit_codes") {
        return Ok(());
    }
    let topo = Topology::new("clierr")?;
    let home = DaemonHome::new()?;
    let daemon = Daemon::start(&topo.client, &home)?;
    let bad = daemon.cli(&[
        "guard",
        "--interface",
        "wg0",
        "--endpoint",
        "vpn.example.com:51820",
    ])?;
    ensure!(
        bad.code == Some(2) && bad.stderr.contains("expected IP:PORT"),
        "{bad:?}"
    );
    let bad = daemon.cli(&[
        "guard",
        "--interface",
        "wg0",
        "--endpoint",
        "198.51.100.1:51820",
        "--mark",
        "0",
    ])?;
    ensure!(
        bad.code == Some(2) && bad.stderr.contains("fwmark"),
        "{bad:?}"
    );
    let bad = daemon.cli(&["lockdown", "maybe"])?;
    ensure!(bad.code == Some(2), "{bad:?}");
    let json = daemon.cli_as_nobody(&["--json", "off"])?;
    ensure!(
        json.code == Some(1) && json.stdout.contains("\"kind\":\"permission_denied\""),
        "{json:?}"
    );
    // No daemon at all.
    let mut missing = std::process::Command::new(killswitch_lab::binaries::path("killswitch")?);
    let output = missing
        .args(["--socket", "/nonexistent/killswitch.sock", "status"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(3)
            && stderr.contains("is killswitchd running?")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    Ok(())
}

#[test]
fn tunnelvision_routes_do_not_leak() -> Result<()> {
    if !require_root("tunnelvision_routes_do_not_leak") {
        return Ok(());
    }
    // CVE-2024-3661: a hostile DHCP server pushes a route (option 121) that is more specific than
    // the VPN's, sending chosen destinations out of the physical interface.
    let topo = Topology::new("tunvis")?;
    let tunnel = Tunnel::up(&topo)?;
    let home = DaemonHome::new()?;
    let daemon = Daemon::start(&topo.client, &home)?;
    daemon.guard(&tunnel)?;
    daemon.wait_for_state(State::Connected, Duration::from_secs(10))?;
    topo.push_physical_route("203.0.113.0/24")?;
    let listener = target_listener(&topo, 9002)?;
    let target = SocketAddr::new(topology::TARGET_V4.into(), 9002);
    let mut tunnel = tunnel;
    let log_mark = tunnel.client_log_len();
    topo.client
        .run(|| traffic::send_udp(target, b"pushed route", None))??;
    tunnel.wait_for_handshake(log_mark, Duration::from_secs(10))?;
    // The routing layer ignores the pushed route: the packet still goes through the tunnel.
    // (Without that layer the firewall would refuse it: it leaves by the physical interface.)
    let (_, from) = listener
        .recv_from(&mut [0u8; 64])
        .context("the target never heard from the client")?;
    ensure!(
        from.ip() == std::net::IpAddr::V4(wireguard::CLIENT_TUNNEL_V4),
        "arrived from {from}: the pushed route was used"
    );
    Ok(())
}

fn write_settings(home: &DaemonHome, json: &str) -> Result<()> {
    std::fs::create_dir_all(home.state_dir())?;
    std::fs::write(home.state_dir().join("settings.json"), json)?;
    Ok(())
}

#[test]
fn simulated_boot_blocks_before_the_daemon_and_the_daemon_adopts() -> Result<()> {
    if !require_root("simulated_boot_blocks_before_the_daemon_and_the_daemon_adopts") {
        return Ok(());
    }
    let topo = Topology::new("boot")?;
    let home = DaemonHome::new()?;
    write_settings(
        &home,
        r#"{"version":1,"lockdown":true,"allow_lan":false,"target":{"mode":"disconnected"}}"#,
    )?;
    let boot = killswitch_lab::daemon::early_boot(&topo.client, &home)?.ok()?;
    ensure!(
        boot.stderr.contains("lockdown is on"),
        "the early-boot step says why it blocks: {}",
        boot.stderr
    );
    let early = nft_table(&topo.client)?.context("blocked before the daemon exists")?;
    ensure!(
        topo.client.ip(&["rule"])?.contains("lookup 27507"),
        "the routing layer is up too"
    );
    let target = SocketAddr::new(topology::TARGET_V4.into(), 443);
    let sent = topo
        .client
        .run(|| traffic::send_udp(target, b"at boot", None))?;
    ensure!(
        sent.as_ref().is_err_and(traffic::is_local_rejection),
        "traffic at boot: {sent:?}"
    );

    let daemon = Daemon::start(&topo.client, &home)?;
    let status = daemon.status()?;
    ensure!(
        status.state == State::Blocked && status.lockdown && status.error.is_none(),
        "{status:?}"
    );
    ensure!(
        nft_table(&topo.client)?.as_deref() == Some(early.as_str()),
        "the daemon adopted the early-boot table as it was"
    );
    Ok(())
}

#[test]
fn early_boot_leaves_an_unprotected_machine_alone() -> Result<()> {
    if !require_root("early_boot_leaves_an_unprotected_machine_alone") {
        return Ok(());
    }
    let topo = Topology::new("bootfree")?;
    let home = DaemonHome::new()?;
    killswitch_lab::daemon::early_boot(&topo.client, &home)?.ok()?;
    ensure!(
        nft_table(&topo.client)?.is_none(),
        "no settings: nothing to block"
    );
    write_settings(
        &home,
        r#"{"version":1,"lockdown":false,"allow_lan":false,"target":{"mode":"disconnected"}}"#,
    )?;
    killswitch_lab::daemon::early_boot(&topo.client, &home)?.ok()?;
    ensure!(
        nft_table(&topo.client)?.is_none(),
        "lockdown off, nothing guarded: nothing to block"
    );
    Ok(())
}

#[test]
fn corrupt_settings_block_with_a_clear_error_and_no_crash() -> Result<()> {
    if !require_root("corrupt_settings_block_with_a_clear_error_and_no_crash") {
        return Ok(());
    }
    let topo = Topology::new("corrupt")?;
    let home = DaemonHome::new()?;
    write_settings(&home, "{\"lockdown\": tr")?;
    let boot = killswitch_lab::daemon::early_boot(&topo.client, &home)?.ok()?;
    ensure!(
        boot.stderr.contains("cannot be used"),
        "early boot fails closed and says so: {}",
        boot.stderr
    );
    ensure!(nft_table(&topo.client)?.is_some(), "early boot blocked");

    // The early-boot step kept the bad file aside; put a bad one back for the daemon.
    write_settings(&home, "not json at all")?;
    let mut daemon = Daemon::start(&topo.client, &home)?;
    let status = daemon.status()?;
    ensure!(
        status.state == State::Blocked && status.firewall.blocking,
        "{status:?}"
    );
    ensure!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("settings.json") && e.contains("not valid")),
        "{status:?}"
    );
    ensure!(
        daemon.log().contains("not valid"),
        "the log says it:\n{}",
        daemon.log()
    );
    ensure!(
        home.state_dir().join("settings.json.corrupt").exists(),
        "the bad file is kept for inspection"
    );
    // The user takes control: the fault clears and a good file is written.
    let status = daemon.cli(&["down"])?.ok()?;
    ensure!(
        status.stdout.contains("state:     disconnected"),
        "{}",
        status.stdout
    );
    ensure!(daemon.process().try_wait()?.is_none(), "no crash");
    Ok(())
}

#[test]
fn up_with_bad_configurations_names_file_line_and_key_and_changes_nothing() -> Result<()> {
    if !require_root("up_with_bad_configurations_names_file_line_and_key_and_changes_nothing") {
        return Ok(());
    }
    let topo = Topology::new("badconf")?;
    let home = DaemonHome::new()?;
    // Names are looked up here, not in this machine's /etc/wireguard.
    let wireguard_dir = home.path().join("wireguard");
    std::fs::create_dir_all(&wireguard_dir)?;
    std::fs::write(
        home.config(),
        format!("wireguard_dir = \"{}\"\n", wireguard_dir.display()),
    )?;
    let daemon = Daemon::start(&topo.client, &home)?;
    let before = nft_table(&topo.client)?;
    let secret = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    let peer = "[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0\n";
    let cases: [(&str, String, &[&str]); 6] = [
        (
            "typo.conf",
            format!("[Interface]\nPrivateKey = {secret}\nAddres = 10.64.0.2/32\n{peer}"),
            &["typo.conf:3:", "Addres"],
        ),
        (
            "port.conf",
            format!(
                "[Interface]\nPrivateKey = {secret}\nAddress = 10.64.0.2/32\n[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 198.51.100.1\n"
            ),
            &["port.conf:6:", "Endpoint"],
        ),
        (
            "key.conf",
            format!(
                "[Interface]\nPrivateKey = {}\nAddress = 10.64.0.2/32\n{peer}",
                &secret[..40]
            ),
            &["key.conf:2:", "PrivateKey"],
        ),
        (
            "nopeer.conf",
            format!("[Interface]\nPrivateKey = {secret}\nAddress = 10.64.0.2/32\n"),
            &["nopeer.conf", "Peer"],
        ),
        (
            "nodns.conf",
            format!("[Interface]\nPrivateKey = {secret}\nAddress = 10.64.0.2/32\n{peer}"),
            &["nodns.conf", "DNS"],
        ),
        (
            "mtu.conf",
            format!(
                "[Interface]\nPrivateKey = {secret}\nAddress = 10.64.0.2/32\nMTU = lots\n{peer}"
            ),
            &["mtu.conf:4:", "MTU"],
        ),
    ];
    for (name, text, expected) in &cases {
        let path = home.path().join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let result = daemon.cli(&["up", &path.display().to_string()])?;
        ensure!(result.code == Some(1), "{name}: exit {:?}", result.code);
        for needle in *expected {
            ensure!(
                result.stderr.contains(needle),
                "{name}: {needle:?} missing from: {}",
                result.stderr
            );
        }
        ensure!(
            !result.stderr.contains(&secret[..20]) && !result.stdout.contains(&secret[..20]),
            "{name}: the private key was shown: {}",
            result.stderr
        );
    }
    // A name the daemon looks up, and a file that does not exist.
    let missing = daemon.cli(&["up", "nosuch"])?;
    ensure!(
        missing.code == Some(1)
            && missing
                .stderr
                .contains(&format!("{}/nosuch.conf", wireguard_dir.display())),
        "{}",
        missing.stderr
    );
    // Read by the client: a bad argument (exit 2), named.
    let absent = daemon.cli(&["up", "/nonexistent/wg0.conf"])?;
    ensure!(
        absent.code == Some(2) && absent.stderr.contains("/nonexistent/wg0.conf"),
        "{absent:?}"
    );
    // A good file that others can read: accepted, with a warning.
    let readable = home.path().join("readable.conf");
    std::fs::write(
        &readable,
        format!(
            "[Interface]\nPrivateKey = {secret}\nAddress = 10.64.0.2/32\nDNS = 10.64.0.1\n{peer}"
        ),
    )?;
    std::fs::set_permissions(
        &readable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    // (Unique on the machine: userspace WireGuard's sockets are shared by all namespaces.)
    let interface = format!("ksbad{}", std::process::id() % 100_000);
    let warned = daemon
        .cli(&[
            "up",
            "--interface",
            &interface,
            &readable.display().to_string(),
        ])?
        .ok()?;
    ensure!(
        warned.stderr.contains("readable by other users"),
        "{}",
        warned.stderr
    );
    daemon.cli(&["down"])?.ok()?;

    let status = daemon.status()?;
    ensure!(
        status.state == State::Disconnected && status.tunnel.is_none(),
        "{status:?}"
    );
    ensure!(
        nft_table(&topo.client)? == before,
        "the firewall is as before"
    );
    ensure!(
        !daemon.log().contains(&secret[..20]),
        "the private key reached the log"
    );
    Ok(())
}

#[test]
fn json_status_names_the_protocol_version() -> Result<()> {
    if !require_root("json_status_names_the_protocol_version") {
        return Ok(());
    }
    let topo = Topology::new("protocol")?;
    let home = DaemonHome::new()?;
    let daemon = Daemon::start(&topo.client, &home)?;
    let json = daemon.cli(&["--json", "status"])?.ok()?.stdout;
    let status: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(
        status["protocol"] == killswitch_types::ipc::PROTOCOL_VERSION,
        "{json}"
    );
    // The daemon's field order, as it sent it.
    ensure!(json.starts_with("{\"protocol\":"), "{json}");
    Ok(())
}
