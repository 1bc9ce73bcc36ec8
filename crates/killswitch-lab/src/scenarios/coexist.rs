//! Scenarios of living with other software: container bridges, an overlay network the
//! administrator allows (Tailscale-like), and SSH into a headless server while it is blocked.
//!
//! Each builds the other software's network the way it builds it (a bridge with veth ports,
//! br_netfilter and masquerade; a CGNAT-addressed interface to a peer; a listener on port 22) in
//! namespaces of its own, and judges with the same capture on the client's physical link as every
//! scenario: what the exceptions let through must stay local or go where they say, and nothing
//! else may leave.

use super::{EVENT_TIMEOUT, Outcome, TUNNEL_KINDS};
use crate::daemon::Daemon;
use crate::lab::{Lab, hold, is_tunnel};
use crate::netns::{Netns, veth};
use crate::packet::{Frame, L4};
use crate::sinks::UDP_PORT;
use crate::topology;
use crate::traffic;
use crate::wireguard;
use anyhow::{Context, Result};
use killswitch_types::State;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a datagram or connection that should arrive is waited for.
const ARRIVAL: Duration = Duration::from_millis(1500);

/// Writes `config` as the daemon's config.toml and restarts the daemon on it.
fn restart_with_config(lab: &mut Lab, config: &str) -> Result<()> {
    std::fs::write(lab.home.config(), config).context("writing config.toml")?;
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().terminate(EVENT_TIMEOUT)?;
    }
    lab.daemon = Some(Daemon::start(&lab.topo.client, &lab.home)?);
    Ok(())
}

/// Whether a datagram sent from `from` to `dst` arrives at a socket bound to `dst` in `to`.
pub(super) fn udp_reaches(from: &Netns, to: &Netns, dst: SocketAddr) -> Result<bool> {
    let socket = to
        .run(|| UdpSocket::bind(dst))?
        .with_context(|| format!("binding {dst}"))?;
    socket.set_read_timeout(Some(ARRIVAL))?;
    from.run(|| {
        for _ in 0..3 {
            let _ = traffic::send_udp(dst, b"killswitch-lab coexist", None);
        }
    })?;
    let mut buf = [0u8; 64];
    Ok(socket.recv_from(&mut buf).is_ok())
}

/// A TCP echo server in a namespace, on one address; stops (and closes everything) when dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Connections it accepted and still serves.
    accepted: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Echo {
    fn start(ns: &Netns, at: SocketAddr) -> Result<Self> {
        let listener = ns
            .run(|| TcpListener::bind(at))?
            .with_context(|| format!("listening on {at}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, kept) = (stop.clone(), accepted.clone());
        let thread = std::thread::Builder::new()
            .name(format!("echo {at}"))
            .spawn(move || {
                let mut streams: Vec<TcpStream> = Vec::new();
                let mut buf = [0u8; 256];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((stream, _)) = listener.accept() {
                        let _ = stream.set_nonblocking(true);
                        if let (Ok(copy), Ok(mut list)) = (stream.try_clone(), kept.lock()) {
                            list.push(copy);
                        }
                        streams.push(stream);
                    }
                    for stream in &mut streams {
                        if let Ok(n) = stream.read(&mut buf)
                            && n > 0
                        {
                            let _ = stream.write_all(&buf[..n]);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .context("spawning the echo server")?;
        Ok(Echo {
            stop,
            thread: Some(thread),
            accepted,
        })
    }

    /// Writes to every connection it accepted from `peer` (as a server does, unasked).
    fn push(&self, peer: IpAddr, data: &[u8]) {
        if let Ok(mut list) = self.accepted.lock() {
            for stream in list
                .iter_mut()
                .filter(|s| s.peer_addr().is_ok_and(|a| a.ip() == peer))
            {
                let _ = stream.write_all(data);
            }
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from `from` to `dst` and checks that what is sent comes back.
fn tcp_echoes(from: &Netns, dst: SocketAddr) -> Result<Option<TcpStream>> {
    let stream = from.run(|| TcpStream::connect_timeout(&dst, ARRIVAL))?;
    let Ok(mut stream) = stream else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(ARRIVAL))?;
    Ok(echo_round(&mut stream).then_some(stream))
}

fn echo_round(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 5];
    stream.write_all(b"hello").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"hello"
}

/// The client's outgoing frames on the physical link since `from` that the oracle calls leaks,
/// except those `allowed` says an exception admits; drained up to a sentinel first.
fn leaks_except(lab: &Lab, from: usize, allowed: impl Fn(&Frame) -> bool) -> Result<Vec<String>> {
    Ok(lab
        .leaks_since(from)?
        .into_iter()
        .filter(|(frame, _)| !allowed(frame))
        .map(|(_, what)| what)
        .collect())
}

/// A container network as Docker makes it, in the client: bridge `docker0` 172.17.0.1/16 with
/// br_netfilter on, masquerade for what leaves by another interface, forwarding on; two container
/// namespaces on it.
struct Containers {
    one: Netns,
    two: Netns,
}

const BRIDGE_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const ONE_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const TWO_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);

impl Containers {
    fn build(client: &Netns) -> Result<Self> {
        client.ip(&["link", "add", "docker0", "type", "bridge"])?;
        client.ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"])?;
        client.ip(&["link", "set", "docker0", "up"])?;
        client.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        client.exec("sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=1"])?;
        client.exec(
            "nft",
            &["add table ip labnat; \
               add chain ip labnat post { type nat hook postrouting priority 100 ; } ; \
               add rule ip labnat post ip saddr 172.17.0.0/16 oifname != \"docker0\" masquerade"],
        )?;
        let mut made = Vec::new();
        for (tag, address, port) in [("c1", ONE_V4, "veth-c1"), ("c2", TWO_V4, "veth-c2")] {
            let ns = Netns::new(&format!("coexist-{tag}"))?;
            veth(client, port, &ns, "eth0")?;
            client.ip(&["link", "set", port, "master", "docker0"])?;
            ns.ip(&["addr", "add", &format!("{address}/16"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["route", "add", "default", "via", &BRIDGE_V4.to_string()])?;
            made.push(ns);
        }
        let two = made.pop().context("two containers")?;
        let one = made.pop().context("two containers")?;
        Ok(Containers { one, two })
    }
}

/// What the container checks found in one state.
struct LocalChecks {
    host_to_container: bool,
    container_to_host: bool,
    container_to_container: bool,
}

fn local_checks(client: &Netns, c: &Containers, port: u16) -> Result<LocalChecks> {
    Ok(LocalChecks {
        host_to_container: udp_reaches(client, &c.one, SocketAddr::new(ONE_V4.into(), port))?,
        container_to_host: udp_reaches(&c.one, client, SocketAddr::new(BRIDGE_V4.into(), port))?,
        container_to_container: udp_reaches(&c.one, &c.two, SocketAddr::new(TWO_V4.into(), port))?,
    })
}

fn check_local(outcome: &mut Outcome, state: &str, local: &LocalChecks) {
    outcome.check(
        local.host_to_container,
        format!("{state}: the host reaches a container"),
    );
    outcome.check(
        local.container_to_host,
        format!("{state}: a container reaches the host"),
    );
    outcome.check(
        local.container_to_container,
        format!("{state}: containers on the bridge reach each other (br_netfilter on)"),
    );
}

/// Sends a datagram from the container to the target and to a public resolver; returns the
/// arrivals at the target since then that came through the tunnel, and those that did not
/// (target and resolver together).
fn container_egress(lab: &Lab, c: &Containers, expect_tunnel: bool) -> Result<(usize, usize)> {
    let since = Instant::now();
    let target = SocketAddr::new(topology::TARGET_V4.into(), UDP_PORT);
    let resolver = SocketAddr::new(topology::PUBLIC_DNS_V4.into(), 53);
    c.one.run(|| {
        for _ in 0..3 {
            let _ = traffic::send_udp(target, b"killswitch-lab container", None);
            let _ = traffic::send_udp(resolver, b"killswitch-lab container dns", None);
        }
    })?;
    if expect_tunnel {
        lab.servers
            .udp
            .wait_for(since, 1, EVENT_TIMEOUT, is_tunnel)
            .context("the container's datagram through the tunnel")?;
    } else {
        hold(ARRIVAL);
    }
    let arrivals = lab.servers.udp.all();
    let tunnelled = arrivals
        .iter()
        .filter(|a| a.at >= since && is_tunnel(a.from))
        .count();
    let direct = arrivals
        .iter()
        .filter(|a| a.at >= since && !is_tunnel(a.from))
        .count()
        + lab
            .servers
            .dns_public
            .all()
            .iter()
            .filter(|a| a.at >= since)
            .count();
    Ok((tunnelled, direct))
}

pub(super) fn containers(lab: &mut Lab) -> Result<Outcome> {
    let c = Containers::build(&lab.topo.client)?;
    // Unprotected first: the container's traffic does leave by the physical link (the path a
    // leak would take exists, so its absence later means something).
    let (_, direct_unprotected) = container_egress(lab, &c, false)?;
    // The daemon as the WireGuard client (`up`), as most users of containers would run it.
    lab.start_up_servers(1)?;
    lab.up()?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let from = lab.capture.len();
    let window = lab.begin(&TUNNEL_KINDS)?;
    let connected = local_checks(&lab.topo.client, &c, 7001)?;
    let (tunnelled, direct_connected) = container_egress(lab, &c, true)?;
    let dns_in_tunnel = {
        let since = Instant::now();
        let resolver = SocketAddr::new(lab.up_servers[0].0.tunnel_ip.into(), 53);
        c.one
            .run(|| traffic::send_udp(resolver, b"killswitch-lab container dns", None))??;
        lab.servers
            .dns_tunnel
            .wait_for(since, 1, EVENT_TIMEOUT, |_| true)
            .is_ok()
    };
    let status = lab.daemon()?.status()?;

    // The server dies: `up` keeps trying it, connecting.
    lab.up_servers[0].0.process().kill()?;
    lab.daemon()?
        .wait_for("the dead server noticed", EVENT_TIMEOUT, |s| {
            s.state == State::Connecting
        })?;
    let connecting = local_checks(&lab.topo.client, &c, 7002)?;
    let (_, direct_connecting) = container_egress(lab, &c, false)?;

    // Lockdown first: `down` alone would leave the machine unprotected in between.
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Blocked, EVENT_TIMEOUT)?;
    let locked = local_checks(&lab.topo.client, &c, 7003)?;
    let (_, direct_locked) = container_egress(lab, &c, false)?;

    let mut outcome = Outcome::new(lab.end(window)?);
    let leaks = leaks_except(lab, from, |_| false)?;
    outcome.check(
        leaks.is_empty(),
        format!(
            "nothing of the containers or the host left by the physical link ({} frames{})",
            leaks.len(),
            leaks
                .first()
                .map(|l| format!(", first: {l}"))
                .unwrap_or_default()
        ),
    );
    outcome.check(
        direct_unprotected > 0,
        format!(
            "control: unprotected, the container's datagrams reach the target directly \
             ({direct_unprotected})"
        ),
    );
    outcome.check(
        status.exceptions.local_bridges == ["docker0"],
        format!(
            "status lists docker0 as a local bridge ({:?})",
            status.exceptions.local_bridges
        ),
    );
    check_local(&mut outcome, "connected", &connected);
    outcome.check(
        tunnelled > 0 && direct_connected == 0,
        format!(
            "connected: the container's traffic reaches the target through the tunnel only \
             ({tunnelled} tunnelled, {direct_connected} direct)"
        ),
    );
    outcome.check(
        dns_in_tunnel,
        "connected: the container's DNS to the tunnel's resolver is answered through the tunnel",
    );
    check_local(&mut outcome, "connecting", &connecting);
    outcome.check(
        direct_connecting == 0,
        format!("connecting: nothing of the container arrives anywhere ({direct_connecting})"),
    );
    check_local(&mut outcome, "lockdown", &locked);
    outcome.check(
        direct_locked == 0,
        format!("lockdown: nothing of the container arrives anywhere ({direct_locked})"),
    );
    Ok(outcome)
}

/// The "tailnet": an interface `ts0` with a CGNAT address, to a peer namespace.
const TS_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(100, 80, 0, 2);
const TS_PEER_V4: Ipv4Addr = Ipv4Addr::new(100, 80, 0, 1);

pub(super) fn tailscale_like(lab: &mut Lab) -> Result<Outcome> {
    let peer = Netns::new("coexist-ts")?;
    veth(&lab.topo.client, "ts0", &peer, "tsp")?;
    lab.topo
        .client
        .ip(&["addr", "add", &format!("{TS_CLIENT_V4}/10"), "dev", "ts0"])?;
    peer.ip(&["addr", "add", &format!("{TS_PEER_V4}/10"), "dev", "tsp"])?;
    let out = |port| SocketAddr::new(TS_PEER_V4.into(), port);
    let inbound = |port| SocketAddr::new(TS_CLIENT_V4.into(), port);

    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Blocked, EVENT_TIMEOUT)?;
    let before = udp_reaches(&lab.topo.client, &peer, out(7101))?;

    // Allowed with the CLI (ssh-inbound uses config.toml): not by just anyone.
    let nobody = lab
        .daemon()?
        .cli_as_nobody(&["allow", "add", "interface", "ts0"])?;
    lab.daemon()?
        .cli(&["allow", "add", "interface", "ts0"])?
        .ok()?;
    let listed = lab.daemon()?.cli(&["allow", "list"])?.ok()?.stdout;
    let from = lab.capture.len();
    let window = lab.begin(&TUNNEL_KINDS)?;
    let blocked_out = udp_reaches(&lab.topo.client, &peer, out(7102))?;
    let blocked_in = udp_reaches(&peer, &lab.topo.client, inbound(7103))?;
    lab.connect()?;
    let connected_out = udp_reaches(&lab.topo.client, &peer, out(7104))?;
    let connected_in = udp_reaches(&peer, &lab.topo.client, inbound(7105))?;
    let status = lab.daemon()?.status()?;
    hold(Duration::from_millis(500));
    let measurement = lab.end(window)?;
    let through_tunnel = measurement.through_tunnel;
    let mut outcome = Outcome::new(measurement);
    let leaks = leaks_except(lab, from, |_| false)?;
    outcome.check(
        leaks.is_empty(),
        format!(
            "nothing but the tunnel left by the physical link ({})",
            leaks.len()
        ),
    );
    outcome.check(
        !before,
        "control: before ts0 was allowed, lockdown kept the peer out of reach",
    );
    outcome.check(blocked_out && blocked_in, "blocked: ts0 works both ways");
    outcome.check(
        connected_out && connected_in,
        "connected: ts0 works both ways",
    );
    outcome.check(
        through_tunnel > 0,
        format!("the host's other traffic went through the tunnel ({through_tunnel})"),
    );
    outcome.check(
        status.exceptions.interfaces == ["ts0"] && listed.contains("interface  ts0"),
        format!(
            "status and `allow list` show ts0 as allowed ({:?}; {listed:?})",
            status.exceptions.interfaces
        ),
    );
    outcome.check(
        nobody.code == Some(1),
        format!(
            "an unprivileged user cannot add an exception (exit {:?}: {})",
            nobody.code,
            nobody.stderr.trim()
        ),
    );
    Ok(outcome)
}

pub(super) fn ssh_inbound(lab: &mut Lab) -> Result<Outcome> {
    restart_with_config(lab, "allow_inbound = [\"tcp/22 on phys0\"]\n")?;
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Blocked, EVENT_TIMEOUT)?;
    let ssh = Echo::start(&lab.topo.client, "0.0.0.0:22".parse()?)?;
    let other = Echo::start(&lab.topo.client, "0.0.0.0:2222".parse()?)?;
    let lan_ssh = SocketAddr::new(topology::CLIENT_V4.into(), 22);
    let from = lab.capture.len();
    let window = lab.begin(&TUNNEL_KINDS)?;

    let mut lan_flow = tcp_echoes(&lab.topo.net, lan_ssh)?;
    let blocked_ssh = lan_flow.is_some();
    let blocked_other = tcp_echoes(
        &lab.topo.net,
        SocketAddr::new(topology::CLIENT_V4.into(), 2222),
    )?
    .is_some();

    // A flow that starts in the tunnel (the VPN server's side connects to the client's tunnel
    // address, port 22), then the tunnel drops and the server keeps writing.
    lab.connect()?;
    let tunnel_ssh = SocketAddr::new(wireguard::CLIENT_TUNNEL_V4.into(), 22);
    let tunnel_flow = tcp_echoes(&lab.topo.net, tunnel_ssh)?;
    let through_tunnel = tunnel_flow.is_some();
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let dropped = Instant::now();
    while dropped.elapsed() < Duration::from_secs(1) {
        ssh.push(wireguard::SERVER_TUNNEL_V4.into(), b"after the drop");
        hold(Duration::from_millis(50));
    }
    let after_drop = lan_flow.as_mut().is_some_and(echo_round);
    drop(tunnel_flow);
    drop(other);

    let mut measurement = lab.end(window)?;
    // The LAN flow's replies are the exception's to let out: judge everything else.
    let router: IpAddr = topology::ROUTER_V4.into();
    let leaks = leaks_except(lab, from, |frame| {
        matches!(frame, Frame::Ip(ip) if ip.dst == router
            && matches!(ip.transport, L4::Tcp { sport: 22, .. }))
    })?;
    let sport_22_to_tunnel = leaks
        .iter()
        .filter(|l| l.contains(&wireguard::SERVER_TUNNEL_V4.to_string()))
        .count();
    measurement.leaked = leaks.len() as u64;
    measurement.leaks = leaks.iter().take(20).cloned().collect();
    let mut outcome = Outcome::new(measurement);
    outcome.check(
        blocked_ssh,
        "blocked: a connection from the LAN to port 22 works",
    );
    outcome.check(
        !blocked_other,
        "blocked: a connection from the LAN to another port (2222) is refused",
    );
    outcome.check(
        through_tunnel,
        "connected: port 22 is reachable through the tunnel",
    );
    outcome.check(
        sport_22_to_tunnel == 0,
        "after the drop, the flow that started in the tunnel sends nothing by the physical link",
    );
    outcome.check(
        after_drop,
        "after the drop, the LAN's connection to port 22 still works",
    );
    drop(ssh);
    Ok(outcome)
}
