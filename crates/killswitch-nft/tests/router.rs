//! Router mode (issue 17) against the real kernel, in namespaces these tests create: the new
//! expressions (destination NAT, the MSS clamp, a `nat` chain on prerouting) load, read back as
//! meant, and do what they say to real packets from a veth "LAN".
//!
//! The topology, one namespace each:
//!
//! ```text
//! client eth0 192.168.77.2 ── lan0 192.168.77.1  ROUTER  wg0 10.64.0.2 (MTU 1420) ── tun 10.64.0.1  FAR END (the "tunnel")
//!                                                       wan0 203.0.113.2          ── eth0 203.0.113.1 WAN (+198.51.100.7)
//! ```
//!
//! `wg0` is a veth standing in for the tunnel: what matters here is the router's rules, not
//! WireGuard (the lab's router scenarios run a real one).

use anyhow::{Context, Result, ensure};
use killswitch_lab::capture::Capture;
use killswitch_lab::netns::{Netns, require_root, veth};
use killswitch_lab::packet::Frame;
use killswitch_policy::{
    Exceptions, LocalLink, Peer, PolicyState, Ruleset, Settings, Tunnel, compile_for,
};
use killswitch_types::{Endpoint, Fwmark, InterfaceName};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const ROUTER_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 2);
const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);
const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const WAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A host on the internet, reached by the WAN.
const BY_THE_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// A "public" resolver the client asks directly.
const PUBLIC_RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The stand-in tunnel's MTU: the clamp's MSS is this less 40 bytes of IPv4 and TCP headers.
const TUNNEL_MTU: u32 = 1420;
const WAIT: Duration = Duration::from_secs(5);

struct RouterLab {
    client: Netns,
    router: Netns,
    far: Netns,
    wan: Netns,
}

impl RouterLab {
    /// The topology above; with `routing_layer`, the router routes its LAN as the kill switch's
    /// routing layer does (`iif lan0 lookup 27507`, the tunnel's default route there), without
    /// it by `main`, whose default route is the WAN (as after a TunnelVision-style route push,
    /// or with the routing layer gone): then only the firewall keeps the LAN off the WAN.
    fn new(tag: &str, routing_layer: bool) -> Result<Self> {
        let client = Netns::new(&format!("{tag}-c"))?;
        let router = Netns::new(&format!("{tag}-r"))?;
        let far = Netns::new(&format!("{tag}-t"))?;
        let wan = Netns::new(&format!("{tag}-w"))?;
        veth(&client, "eth0", &router, "lan0")?;
        veth(&router, "wg0", &far, "tun")?;
        veth(&router, "wan0", &wan, "eth0")?;
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        client.ip(&["route", "add", "default", "via", &ROUTER_LAN.to_string()])?;
        router.ip(&["addr", "add", &format!("{ROUTER_LAN}/24"), "dev", "lan0"])?;
        router.ip(&["addr", "add", &format!("{ROUTER_TUNNEL}/24"), "dev", "wg0"])?;
        router.ip(&["link", "set", "wg0", "mtu", &TUNNEL_MTU.to_string()])?;
        router.ip(&["addr", "add", &format!("{ROUTER_WAN}/24"), "dev", "wan0"])?;
        router.ip(&["route", "add", "default", "via", &WAN_GATEWAY.to_string()])?;
        router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        // The spoofing test must see a spoofed packet cross without the rules: no reverse path
        // filter doing the rules' work.
        for conf in ["all", "default", "lan0"] {
            router.exec(
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{conf}.rp_filter=0")],
            )?;
        }
        if routing_layer {
            router.ip(&[
                "rule", "add", "pref", "5297", "iif", "lan0", "lookup", "27507",
            ])?;
            router.ip(&["route", "add", "default", "dev", "wg0", "table", "27507"])?;
            router.ip(&[
                "route",
                "add",
                "192.168.77.0/24",
                "dev",
                "lan0",
                "table",
                "27507",
            ])?;
        }
        far.ip(&["addr", "add", &format!("{RESOLVER}/24"), "dev", "tun"])?;
        // Back to the router (the tunnel's server routes its clients' networks back into it).
        far.ip(&["route", "add", "default", "via", &ROUTER_TUNNEL.to_string()])?;
        wan.ip(&["addr", "add", &format!("{WAN_GATEWAY}/24"), "dev", "eth0"])?;
        wan.ip(&["addr", "add", &format!("{BY_THE_WAN}/32"), "dev", "lo"])?;
        wan.ip(&["route", "add", "default", "via", &ROUTER_WAN.to_string()])?;
        Ok(RouterLab {
            client,
            router,
            far,
            wan,
        })
    }

    fn apply(&self, ruleset: &Ruleset) -> Result<()> {
        self.router.run(|| -> Result<()> {
            killswitch_nft::apply(ruleset)?;
            killswitch_nft::verify(ruleset)?;
            Ok(())
        })?
    }
}

fn name(n: &str) -> InterfaceName {
    InterfaceName::new(n).expect("literal")
}

fn lan() -> Exceptions {
    Exceptions {
        router_lans: vec![LocalLink {
            interface: name("lan0"),
            networks: vec![format!("{ROUTER_LAN}/24").parse().expect("literal")],
        }],
        ..Exceptions::default()
    }
}

fn connected() -> PolicyState {
    PolicyState::Connected {
        peer: Peer {
            endpoints: killswitch_types::Endpoints::one(Endpoint {
                address: SocketAddr::new(Ipv4Addr::new(198, 51, 100, 1).into(), 51820),
                protocol: killswitch_types::TransportProtocol::Udp,
            }),
            mark: Fwmark::new(0xca6c),
            uid: None,
        },
        tunnel: Tunnel {
            interface: name("wg0"),
            addresses: vec![ROUTER_TUNNEL.into()],
            dns: vec![RESOLVER.into()],
        },
    }
}

/// The states and settings whose router rules must load and read back: a scopes-only table
/// (off, apps-only), the machine's own (blocked, connected with IPv6 and an exec namespace).
fn states() -> Vec<(&'static str, PolicyState, Settings, Exceptions)> {
    let mut dual = connected();
    if let PolicyState::Connected { tunnel, .. } = &mut dual {
        tunnel
            .addresses
            .push("fc00:bbbb::2".parse().expect("literal"));
        tunnel.dns.push("fc00:bbbb::1".parse().expect("literal"));
    }
    let with_exec = Exceptions {
        exec_scopes: vec![killswitch_policy::ExecScope {
            interface: name("ksx0"),
            subnet: "10.201.0.0/30".parse().expect("literal"),
        }],
        router_lans: vec![
            LocalLink {
                interface: name("lan0"),
                networks: vec![
                    "192.168.77.1/24".parse().expect("literal"),
                    "fd77::1/64".parse().expect("literal"),
                ],
            },
            LocalLink::named(name("lan1")),
        ],
        ..Exceptions::default()
    };
    let apps_only = Settings {
        apps_only: true,
        ..Settings::default()
    };
    vec![
        ("off", PolicyState::Off, Settings::default(), lan()),
        ("blocked", PolicyState::Blocked, Settings::default(), lan()),
        ("connected", connected(), Settings::default(), lan()),
        (
            "connected+v6+exec",
            dual.clone(),
            Settings::default(),
            with_exec.clone(),
        ),
        ("apps-only+v6+exec", dual, apps_only, with_exec),
    ]
}

#[test]
fn router_rules_load_and_read_back_as_meant() -> Result<()> {
    if !require_root("router_rules_load_and_read_back_as_meant") {
        return Ok(());
    }
    let ns = Netns::new("rt-readback")?;
    // nft makes unowned tables, and may not touch the owned one our apply leaves: its own
    // namespace.
    let nft_ns = Netns::new("rt-nftsyntax")?;
    let dir = tempfile::tempdir()?;
    for (label, state, settings, exceptions) in states() {
        let ruleset = compile_for(&state, &settings, &exceptions);
        ns.run(|| -> Result<()> {
            killswitch_nft::apply(&ruleset).with_context(|| format!("applying {label}"))?;
            killswitch_nft::verify(&ruleset).with_context(|| format!("verifying {label}"))?;
            Ok(())
        })??;
        // An independent encoder: nft compiles our rendering, and the read-back must find the
        // expressions our encoder sends (dnat, the clamp, the prerouting nat chain among them).
        let file = dir.path().join(format!("{label}.nft"));
        std::fs::write(&file, ruleset.nft_script())?;
        nft_ns
            .exec("nft", &["-f", file.to_str().context("path not UTF-8")?])
            .with_context(|| format!("nft rejected the rendering of {label}"))?;
        nft_ns
            .run(|| {
                killswitch_nft::Nftables::open_with(killswitch_nft::Ownership::Shared)?
                    .verify_rules(&ruleset)
            })?
            .with_context(|| format!("{label}: nft compiled it differently"))?;
    }
    Ok(())
}

/// A gateway with many LANs (and many rules: each LAN brings its spoof guard, DNS translation,
/// forward, clamp and NAT rules, and the kernel acknowledges every message of the batch): the
/// ruleset loads and reads back. The kernel queues all acknowledgements before the commit's
/// `send` returns; with the socket's default receive buffer (about 200 KiB) a batch of a few
/// hundred messages overflowed it (ENOBUFS, "No buffer space available"), and the daemon fell
/// back to blocking everything from the fifth LAN on.
#[test]
fn a_gateway_with_many_lans_loads_its_rules() -> Result<()> {
    if !require_root("a_gateway_with_many_lans_loads_its_rules") {
        return Ok(());
    }
    let ns = Netns::new("rt-many")?;
    let lans: Vec<LocalLink> = (0..32u8)
        .map(|n| LocalLink {
            interface: name(&format!("lan{n}")),
            networks: vec![
                format!("10.{n}.0.1/24").parse().expect("literal"),
                format!("fd{n:02x}::1/64").parse().expect("literal"),
            ],
        })
        .collect();
    let exceptions = Exceptions {
        router_lans: lans,
        ..Exceptions::default()
    };
    let ruleset = compile_for(&connected(), &Settings::default(), &exceptions);
    let rules: usize = ruleset
        .table
        .as_ref()
        .map_or(0, |t| t.chains.iter().map(|c| c.rules.len()).sum());
    ns.run(|| -> Result<()> {
        killswitch_nft::apply(&ruleset)
            .with_context(|| format!("applying 32 LANs' rules ({rules} rules)"))?;
        killswitch_nft::verify(&ruleset).context("verifying 32 LANs' rules")?;
        Ok(())
    })??;
    Ok(())
}

/// One UDP query from `from` (bound in the client) to `to`, the far end's socket answering it:
/// what the far end saw as the source, and who the client saw answer.
fn query(
    lab: &RouterLab,
    far: &UdpSocket,
    from: Ipv4Addr,
    to: SocketAddr,
    payload: &[u8],
) -> Result<(SocketAddr, SocketAddr)> {
    let client = lab
        .client
        .run(|| UdpSocket::bind(SocketAddr::new(from.into(), 0)))??;
    client.set_read_timeout(Some(WAIT))?;
    client.send_to(payload, to)?;
    let mut buffer = [0u8; 512];
    let (n, seen_from) = far
        .recv_from(&mut buffer)
        .with_context(|| format!("the query to {to} did not reach the resolver"))?;
    ensure!(&buffer[..n] == payload, "another datagram arrived first");
    far.send_to(b"answer", seen_from)?;
    let (_, answered_by) = client
        .recv_from(&mut buffer)
        .context("the answer did not come back")?;
    Ok((seen_from, answered_by))
}

#[test]
fn a_lans_dns_to_any_address_is_answered_by_the_tunnels_resolver() -> Result<()> {
    if !require_root("a_lans_dns_to_any_address_is_answered_by_the_tunnels_resolver") {
        return Ok(());
    }
    let lab = RouterLab::new("rt-dns", true)?;
    let resolver = lab
        .far
        .run(|| UdpSocket::bind(SocketAddr::new(RESOLVER.into(), 53)))??;
    resolver.set_read_timeout(Some(WAIT))?;
    let wan = Capture::start(&lab.router, "wan0")?;
    lab.apply(&compile_for(&connected(), &Settings::default(), &lan()))?;
    for asked in [PUBLIC_RESOLVER, ROUTER_LAN, BY_THE_WAN] {
        let (seen_from, answered_by) = query(
            &lab,
            &resolver,
            CLIENT,
            SocketAddr::new(asked.into(), 53),
            format!("query to {asked}").as_bytes(),
        )?;
        ensure!(
            seen_from.ip() == IpAddr::from(ROUTER_TUNNEL),
            "the query reached the resolver from {seen_from}, not masqueraded as the tunnel"
        );
        ensure!(
            answered_by == SocketAddr::new(asked.into(), 53),
            "the client saw the answer come from {answered_by}, not from {asked}:53"
        );
    }
    ensure!(
        !wan.frames().iter().any(|c| matches!(&c.frame, Frame::Ip(p)
            if p.src == IpAddr::from(CLIENT) || p.dst == IpAddr::from(PUBLIC_RESOLVER))),
        "the client's DNS appeared on the WAN"
    );
    // Each of those flows carries the router bit in its conntrack mark (what the daemon's flush
    // selects), and its translation: asked of 192.0.2.53, answered by the tunnel's resolver.
    let flows = lab.router.exec("cat", &["/proc/net/nf_conntrack"])?;
    let translated = flows.lines().find(|line| {
        line.contains(&format!("src={CLIENT} dst={PUBLIC_RESOLVER} "))
            && line.contains(&format!("src={RESOLVER} dst={ROUTER_TUNNEL} "))
    });
    let translated = translated.with_context(|| format!("no translated DNS flow in\n{flows}"))?;
    let mark = killswitch_policy::CT_MARK_ROUTER;
    let marked = translated
        .split_whitespace()
        .find_map(|field| field.strip_prefix("mark="))
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m & mark != 0);
    ensure!(marked, "the LAN's flow lacks the router mark: {translated}");
    ensure!(wan.kernel_drops()? == 0, "the capture dropped frames");
    Ok(())
}

/// The MSS the far end's accepted socket uses for a connection from the client: what the
/// client's SYN announced (as it arrived), less TCP options such as timestamps.
fn far_end_mss(lab: &RouterLab, port: u16) -> Result<u32> {
    let listener = lab
        .far
        .run(|| TcpListener::bind(SocketAddr::new(RESOLVER.into(), port)))??;
    let client = lab
        .client
        .run(|| TcpStream::connect_timeout(&SocketAddr::new(RESOLVER.into(), port), WAIT))??;
    let (accepted, _) = listener.accept()?;
    let mss = nix::sys::socket::getsockopt(&accepted, nix::sys::socket::sockopt::TcpMaxSeg)?;
    drop(client);
    Ok(mss)
}

#[test]
fn tcp_from_the_lan_is_clamped_to_the_tunnels_mtu() -> Result<()> {
    if !require_root("tcp_from_the_lan_is_clamped_to_the_tunnels_mtu") {
        return Ok(());
    }
    let lab = RouterLab::new("rt-mss", true)?;
    let clamp = TUNNEL_MTU - 40;
    // Without the rules, the client announces its own link's MSS (1460), and the far end, on a
    // 1500-byte link itself, would send segments the tunnel cannot carry.
    let open = far_end_mss(&lab, 8443)?;
    ensure!(
        open > clamp,
        "without the clamp the far end uses {open}: the test sees nothing"
    );
    lab.apply(&compile_for(&connected(), &Settings::default(), &lan()))?;
    let clamped = far_end_mss(&lab, 8444)?;
    eprintln!(
        "far end's MSS: {open} without the rules, {clamped} with them (tunnel MTU {TUNNEL_MTU})"
    );
    ensure!(
        clamped <= clamp,
        "the far end uses an MSS of {clamped}, more than the tunnel's {clamp}"
    );
    Ok(())
}

/// Sends one datagram from `from` to the far end's `port`, then a marker from the client's own
/// address; returns the payloads the far end received up to the marker (the same path is
/// first in, first out: a datagram sent before the marker and forwarded arrives before it).
fn up_to_marker(lab: &RouterLab, from: Ipv4Addr, port: u16) -> Result<Vec<Vec<u8>>> {
    let far = lab
        .far
        .run(|| UdpSocket::bind(SocketAddr::new(RESOLVER.into(), port)))??;
    far.set_read_timeout(Some(WAIT))?;
    let to = SocketAddr::new(RESOLVER.into(), port);
    lab.client.run(|| -> Result<()> {
        UdpSocket::bind(SocketAddr::new(from.into(), 0))?.send_to(b"probe", to)?;
        UdpSocket::bind(SocketAddr::new(CLIENT.into(), 0))?.send_to(b"marker", to)?;
        Ok(())
    })??;
    let mut received = Vec::new();
    let mut buffer = [0u8; 64];
    loop {
        let (n, _) = far
            .recv_from(&mut buffer)
            .context("the marker did not arrive")?;
        if &buffer[..n] == b"marker" {
            return Ok(received);
        }
        received.push(buffer[..n].to_vec());
    }
}

#[test]
fn spoofed_lan_sources_are_dropped() -> Result<()> {
    if !require_root("spoofed_lan_sources_are_dropped") {
        return Ok(());
    }
    let lab = RouterLab::new("rt-spoof", false)?;
    // A client that gives itself an address outside the LAN's network.
    let spoofed = Ipv4Addr::new(10, 10, 10, 10);
    lab.client
        .ip(&["addr", "add", &format!("{spoofed}/32"), "dev", "eth0"])?;
    ensure!(
        up_to_marker(&lab, spoofed, 9001)? == vec![b"probe".to_vec()],
        "without the rules the spoofed datagram must cross (the test would see nothing)"
    );
    // (With a tunnel carrying traffic: without one the genuine marker is refused too.)
    let apps_only = Settings {
        apps_only: true,
        ..Settings::default()
    };
    for (port, label, settings) in [
        (9002, "connected", Settings::default()),
        (9003, "connected+apps-only", apps_only),
    ] {
        lab.apply(&compile_for(&connected(), &settings, &lan()))?;
        ensure!(
            up_to_marker(&lab, spoofed, port)?.is_empty(),
            "{label}: a spoofed source crossed the router"
        );
    }
    Ok(())
}

#[test]
fn the_lan_never_reaches_the_wan_and_fails_fast() -> Result<()> {
    if !require_root("the_lan_never_reaches_the_wan_and_fails_fast") {
        return Ok(());
    }
    // No routing layer: `main` sends the client's packets to the WAN; only the rules stop them.
    let lab = RouterLab::new("rt-wan", false)?;
    let server = lab
        .wan
        .run(|| TcpListener::bind(SocketAddr::new(BY_THE_WAN.into(), 80)))??;
    let to = SocketAddr::new(BY_THE_WAN.into(), 80);
    // Without the rules the client reaches the host by the WAN: the test can see a leak.
    let mut open = lab.client.run(|| TcpStream::connect_timeout(&to, WAIT))??;
    let (mut accepted, _) = server.accept()?;
    open.write_all(b"x")?;
    let mut byte = [0u8; 1];
    accepted.read_exact(&mut byte)?;
    drop((open, accepted));
    let wan = Capture::start(&lab.router, "wan0")?;
    for (label, state, settings) in [
        ("off", PolicyState::Off, Settings::default()),
        ("blocked", PolicyState::Blocked, Settings::default()),
        ("connected", connected(), Settings::default()),
        (
            "connected+apps-only+allow-lan",
            connected(),
            Settings {
                apps_only: true,
                allow_lan: true,
                lockdown: false,
            },
        ),
    ] {
        lab.apply(&compile_for(&state, &settings, &lan()))?;
        let started = Instant::now();
        let refused = lab.client.run(|| TcpStream::connect_timeout(&to, WAIT))?;
        match refused {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => anyhow::bail!("{label}: connecting by the WAN gave {other:?}, not a reset"),
        }
        ensure!(
            started.elapsed() < Duration::from_secs(2),
            "{label}: the refusal took {:?}",
            started.elapsed()
        );
    }
    ensure!(
        !wan.frames().iter().any(|c| matches!(&c.frame, Frame::Ip(p)
            if p.src == IpAddr::from(CLIENT) || p.dst == IpAddr::from(BY_THE_WAN))),
        "the client's packets appeared on the WAN"
    );
    ensure!(wan.kernel_drops()? == 0, "the capture dropped frames");
    Ok(())
}

#[test]
fn a_lan_client_cannot_reach_the_vpn_server_port_shadowing() -> Result<()> {
    if !require_root("a_lan_client_cannot_reach_the_vpn_server_port_shadowing") {
        return Ok(());
    }
    // CVE-2021-3773: a LAN client sending from the router's WireGuard port to the VPN server.
    // Here the server is the host by the WAN, and the LAN is routed into the tunnel.
    let lab = RouterLab::new("rt-shadow", true)?;
    lab.wan.ip(&[
        "route",
        "add",
        "10.64.0.0/24",
        "via",
        &ROUTER_WAN.to_string(),
    ])?;
    let server = SocketAddr::new(BY_THE_WAN.into(), 51820);
    let mut state = connected();
    if let PolicyState::Connected { peer, .. } = &mut state {
        peer.endpoints = killswitch_types::Endpoints::one(Endpoint {
            address: server,
            protocol: killswitch_types::TransportProtocol::Udp,
        });
    }
    lab.apply(&compile_for(&state, &Settings::default(), &lan()))?;
    let wan = Capture::start(&lab.router, "wan0")?;
    let tunnel = Capture::start(&lab.router, "wg0")?;
    let client = lab
        .client
        .run(|| UdpSocket::bind(SocketAddr::new(CLIENT.into(), 51820)))??;
    client.set_read_timeout(Some(WAIT))?;
    client.connect(server)?;
    client.send(b"shadow")?;
    // Refused with ICMP: the socket reports it on its next receive.
    let mut buffer = [0u8; 16];
    match client.recv(&mut buffer) {
        Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {}
        other => anyhow::bail!("the datagram to the VPN server was not refused: {other:?}"),
    }
    for (link, capture) in [("WAN", &wan), ("tunnel", &tunnel)] {
        ensure!(
            !capture
                .frames()
                .iter()
                .any(|c| matches!(&c.frame, Frame::Ip(p)
                if p.dst == IpAddr::from(BY_THE_WAN))),
            "the datagram to the VPN server appeared on the {link}"
        );
    }
    Ok(())
}

#[test]
fn without_a_tunnel_the_lan_fails_fast_and_still_reaches_the_router() -> Result<()> {
    if !require_root("without_a_tunnel_the_lan_fails_fast_and_still_reaches_the_router") {
        return Ok(());
    }
    let lab = RouterLab::new("rt-fast", true)?;
    // The routing layer without a tunnel: `unreachable`, whose ICMP answers the kernel
    // rate-limits (one a second), so a second connection in a row would hang without the rules.
    lab.router.ip(&[
        "route",
        "replace",
        "unreachable",
        "default",
        "table",
        "27507",
    ])?;
    let ssh = lab
        .router
        .run(|| TcpListener::bind(SocketAddr::new(ROUTER_LAN.into(), 22)))??;
    for (label, state, settings) in [
        ("off", PolicyState::Off, Settings::default()),
        ("blocked", PolicyState::Blocked, Settings::default()),
    ] {
        lab.apply(&compile_for(&state, &settings, &lan()))?;
        let to = SocketAddr::new(RESOLVER.into(), 443);
        let started = Instant::now();
        for attempt in 0..5 {
            match lab.client.run(|| TcpStream::connect_timeout(&to, WAIT))? {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                other => anyhow::bail!("{label}: attempt {attempt} gave {other:?}, not a reset"),
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1),
            "{label}: five refusals took {:?}",
            started.elapsed()
        );
        // This host's own services stay reachable from its LAN.
        let to_router = SocketAddr::new(ROUTER_LAN.into(), 22);
        let _client = lab
            .client
            .run(|| TcpStream::connect_timeout(&to_router, WAIT))?
            .with_context(|| format!("{label}: the LAN could not reach the router"))?;
        ssh.accept()?;
    }
    Ok(())
}

#[test]
fn forwarded_ipv6_never_leaves_by_the_wan_behind_a_v4_only_tunnel() -> Result<()> {
    if !require_root("forwarded_ipv6_never_leaves_by_the_wan_behind_a_v4_only_tunnel") {
        return Ok(());
    }
    let lab = RouterLab::new("rt-v6", true)?;
    // IPv6 everywhere but in the tunnel: the LAN fd77::/64, the WAN 2001:db8:ff::/64 with a
    // host 2001:db8::80 behind it, the router's default IPv6 route by the WAN.
    lab.router
        .exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
    lab.client
        .ip(&["addr", "add", "fd77::2/64", "dev", "eth0", "nodad"])?;
    lab.client
        .ip(&["-6", "route", "add", "default", "via", "fd77::1"])?;
    lab.router
        .ip(&["addr", "add", "fd77::1/64", "dev", "lan0", "nodad"])?;
    lab.router
        .ip(&["addr", "add", "2001:db8:ff::2/64", "dev", "wan0", "nodad"])?;
    lab.router
        .ip(&["-6", "route", "add", "default", "via", "2001:db8:ff::1"])?;
    lab.wan
        .ip(&["addr", "add", "2001:db8:ff::1/64", "dev", "eth0", "nodad"])?;
    lab.wan
        .ip(&["addr", "add", "2001:db8::80/128", "dev", "lo"])?;
    lab.wan
        .ip(&["-6", "route", "add", "fd77::/64", "via", "2001:db8:ff::2"])?;
    let server = lab
        .wan
        .run(|| TcpListener::bind("[2001:db8::80]:80".parse::<SocketAddr>().expect("literal")))??;
    let to: SocketAddr = "[2001:db8::80]:80".parse()?;
    // Without the rules (and the routing layer's IPv6 rule, which only the real layer adds),
    // the client's IPv6 reaches the host by the WAN: the test can see the leak.
    let open = lab.client.run(|| TcpStream::connect_timeout(&to, WAIT))??;
    server.accept()?;
    drop(open);
    let wan = Capture::start(&lab.router, "wan0")?;
    let mut exceptions = lan();
    exceptions.router_lans[0]
        .networks
        .push("fd77::1/64".parse().expect("literal"));
    for (label, settings) in [
        ("connected", Settings::default()),
        (
            "connected+apps-only",
            Settings {
                apps_only: true,
                ..Settings::default()
            },
        ),
    ] {
        lab.apply(&compile_for(&connected(), &settings, &exceptions))?;
        let started = Instant::now();
        match lab.client.run(|| TcpStream::connect_timeout(&to, WAIT))? {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => anyhow::bail!("{label}: IPv6 by the WAN gave {other:?}, not a reset"),
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1),
            "{label}: the refusal took {:?}",
            started.elapsed()
        );
    }
    ensure!(
        !wan.frames().iter().any(|c| matches!(&c.frame, Frame::Ip(p)
            if p.dst == "2001:db8::80".parse::<IpAddr>().expect("literal"))),
        "the client's IPv6 appeared on the WAN"
    );
    Ok(())
}
