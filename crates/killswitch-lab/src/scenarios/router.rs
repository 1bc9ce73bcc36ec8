//! Scenario `router` (issue 17): the daemon on a Linux gateway protects a whole LAN.
//!
//! The lab's client namespace plays the router here: its physical link (`phys0`) is the WAN, and
//! the net namespace beyond it is the ISP (gateway and resolver at 192.168.50.1), the internet
//! (the target, a "public" resolver at 192.0.2.53) and the WireGuard server. The capture on the
//! WAN judges, as in every scenario. [`RouterLan`] adds a LAN namespace behind the router's
//! `eth1` (192.168.77.0/24, fd77::/64) whose client sends the traffic under test.
//!
//! The router starts as a plain Linux router (forwarding on, the administrator's masquerade on
//! the WAN, no kill switch): the baseline, in which the capture sees the client's traffic, its DNS
//! to the ISP's and the public resolver and its IPv6 on the WAN while the tunnel is down, and a
//! TunnelVision route take the target around the tunnel while it is up. Then `killswitch guard`
//! of a real WireGuard tunnel (wireguard-go) and `killswitch router add eth1`, and from the
//! client's side, under a steady stream of every kind of traffic: DNS to any resolver answered
//! through the tunnel's; the WAN yanked; the tunnel killed (a quiet client's TCP and DNS get
//! errors within [`FAIL_FAST`], and the client flooding the router its TCP resets; the ICMP errors
//! UDP gets are measured and reported, since the kernel rate-limits them); daemon and tunnel
//! frozen; the TunnelVision route again;
//! a long-lived UDP flow across a tunnel restart, and another across a change of server (`up` with
//! server 1, then server 2: a new endpoint and tunnel address). Nothing but WireGuard may appear on
//! the WAN, and the client's traffic must come back through the tunnel after each.
//!
//! [`RouterLan`], the probes and the WAN accounting are shared with `router-shadowing` and
//! `router-spoof`.

use super::{EVENT_TIMEOUT, Outcome, RESUMED, ms};
use crate::daemon::{Daemon, nft_table, teardown};
use crate::generator::Kind;
use crate::lab::{Lab, hold, is_tunnel};
use crate::netns::{Netns, veth};
use crate::packet::{Frame, L4};
use crate::sinks::{self, Arrivals};
use crate::topology::{self, PHYS};
use crate::traffic;
use anyhow::{Context, Result};
use killswitch_types::State;
use nix::sys::signal::Signal;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The router's LAN interface, as `killswitch router add` names it.
pub(super) const LAN: &str = "eth1";
/// The LAN client's interface.
const CLIENT_IFACE: &str = "eth0";
/// The router's address on its LAN (the clients' gateway and, as DHCP would say, resolver).
pub(super) const LAN_ROUTER_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// The LAN client's address.
pub(super) const LAN_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// A second address of the LAN client's, a quiet host beside the busy one: the kernel limits
/// the ICMP errors it sends to each host (about one a second after a burst of six, as every
/// Linux router does), so a host flooding the router gets few; a quiet one must get its own.
const QUIET_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 3);
const LAN_ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const LAN_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

/// What the LAN client sends throughout: IPv4 to the target, DNS to the ISP's resolver
/// (`DnsLan`: 192.168.50.1, across the WAN) and to the public one, and IPv6.
const LAN_KINDS: [Kind; 7] = [
    Kind::Udp4,
    Kind::Tcp4,
    Kind::Icmp4,
    Kind::DnsLan,
    Kind::DnsPublic,
    Kind::Udp6,
    Kind::Tcp6,
];

/// How soon a refused client must hear so (TCP reset, ICMP unreachable): "errors, not silence".
pub(super) const FAIL_FAST: Duration = Duration::from_secs(1);
/// The name of the UDP probe, which the checks treat apart.
const UDP_TO_TARGET: &str = "UDP to the target";
/// How long a probe waits for an answer or an error before calling it silence.
const PROBE_BOUND: Duration = Duration::from_secs(3);

/// A LAN behind the router: the client's namespace, joined to the router's [`LAN`] by a veth.
#[derive(Debug)]
pub(super) struct RouterLan {
    /// The LAN client.
    pub(super) client: Netns,
}

impl RouterLan {
    /// Builds the LAN and makes the lab's client namespace a plain Linux router for it, as a
    /// Debian gateway is before the kill switch: forwarding on (IPv4 and IPv6), reverse-path
    /// filtering off (so that spoofed sources are the kill switch's to stop, not the kernel's),
    /// and the administrator's masquerade on the WAN.
    pub(super) fn build(lab: &Lab) -> Result<Self> {
        let router = &lab.topo.client;
        let client = Netns::new("router-lan")?;
        veth(router, LAN, &client, CLIENT_IFACE)?;
        router.ip(&["addr", "add", &format!("{LAN_ROUTER_V4}/24"), "dev", LAN])?;
        router.ip(&[
            "addr",
            "add",
            &format!("{LAN_ROUTER_V6}/64"),
            "dev",
            LAN,
            "nodad",
        ])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{LAN_CLIENT_V4}/24"),
            "dev",
            CLIENT_IFACE,
        ])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{LAN_CLIENT_V6}/64"),
            "dev",
            CLIENT_IFACE,
            "nodad",
        ])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{QUIET_V4}/24"),
            "dev",
            CLIENT_IFACE,
        ])?;
        // The busy client's traffic leaves from its first address unless bound elsewhere.
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &LAN_ROUTER_V4.to_string(),
            "src",
            &LAN_CLIENT_V4.to_string(),
        ])?;
        client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &LAN_ROUTER_V6.to_string(),
        ])?;
        client.set_resolv_conf(&format!("nameserver {LAN_ROUTER_V4}\n"))?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            &format!("net.ipv4.conf.{LAN}.rp_filter=0"),
        ] {
            router.exec("sysctl", &["-qw", setting])?;
        }
        router.exec(
            "nft",
            &[&format!(
                "add table ip labnat; \
                 add chain ip labnat post {{ type nat hook postrouting priority 100 ; }} ; \
                 add rule ip labnat post oifname \"{PHYS}\" masquerade"
            )],
        )?;
        // A router sends neighbour solicitations only from a link-local address that passed
        // duplicate address detection: until then, forwarded IPv6 waits in the neighbour queue
        // and the baseline would not see it leave.
        for ns in [router, &client] {
            settle_ipv6(ns)?;
        }
        Ok(RouterLan { client })
    }

    /// `killswitch router add eth1`. `baseline` says what the plain router let out, for the
    /// error if the daemon refuses (the baseline's figures stay visible).
    pub(super) fn protect(lab: &Lab, baseline: &str) -> Result<()> {
        lab.daemon()?
            .cli(&["router", "add", LAN])?
            .ok()
            .with_context(|| {
                format!("`killswitch router add {LAN}` after the baseline ({baseline})")
            })?;
        Ok(())
    }

    /// Waits until `count` datagrams have reached the target through the tunnel since `since`,
    /// nudging with a datagram from the LAN client every 100 ms (so that it works with and
    /// without the generator). Returns how long it took from `since`.
    pub(super) fn wait_for_tunnel(
        &self,
        lab: &Lab,
        since: Instant,
        count: usize,
    ) -> Result<Duration> {
        let target = SocketAddr::new(topology::TARGET_V4.into(), sinks::UDP_PORT);
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let _ = self
                .client
                .run(|| traffic::send_udp(target, b"killswitch-lab router probe", None));
            if lab
                .servers
                .udp
                .wait_for(since, count, Duration::from_millis(100), is_tunnel)
                .is_ok()
            {
                return Ok(since.elapsed());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the LAN client's traffic did not arrive through the tunnel within {EVENT_TIMEOUT:?}\n{}",
                    lab.diagnostics()
                );
            }
        }
    }
}

/// Waits (bounded) until no IPv6 address in `ns` is tentative.
fn settle_ipv6(ns: &Netns) -> Result<()> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let tentative = ns.ip(&["-6", "addr", "show", "tentative"])?;
        if tentative.trim().is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "IPv6 addresses still tentative after {EVENT_TIMEOUT:?}:\n{tentative}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the daemon and removes everything it installed (`killswitchd --teardown`), so that the
/// router is plain Linux for the baseline. Returns whether no kill switch table is left.
pub(super) fn without_kill_switch(lab: &mut Lab) -> Result<bool> {
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().terminate(EVENT_TIMEOUT)?;
    }
    teardown(&lab.topo.client, &lab.home)?.ok()?;
    Ok(nft_table(&lab.topo.client)?.is_none())
}

/// Starts the daemon again after [`without_kill_switch`], and `killswitch guard`s the lab's
/// (running) tunnel: connected.
pub(super) fn guard_again(lab: &mut Lab) -> Result<()> {
    lab.daemon = Some(Daemon::start(&lab.topo.client, &lab.home)?);
    lab.guard()?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    Ok(())
}

/// How a probe from the LAN client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// An answer (a DNS reply, an accepted connection), after this long.
    Answered(Duration),
    /// An error (a reset, an ICMP unreachable or prohibited) after this long, with its errno.
    Refused(Duration, i32),
    /// Nothing within [`PROBE_BOUND`].
    Silence,
}

impl Answer {
    fn from_error(error: &io::Error, after: Duration) -> Self {
        if traffic::is_local_rejection(error) {
            Answer::Refused(after, error.raw_os_error().unwrap_or(0))
        } else {
            Answer::Silence
        }
    }

    /// Whether this is an error that came within [`FAIL_FAST`].
    pub(super) fn failed_fast(self) -> bool {
        matches!(self, Answer::Refused(after, _) if after <= FAIL_FAST)
    }

    fn answered(self) -> bool {
        matches!(self, Answer::Answered(_))
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Answered(after) => write!(f, "answered in {:.1} ms", millis(*after)),
            Answer::Refused(after, errno) => write!(
                f,
                "refused in {:.1} ms ({})",
                millis(*after),
                io::Error::from_raw_os_error(*errno)
            ),
            Answer::Silence => write!(f, "silence for {} ms", PROBE_BOUND.as_millis()),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A DNS query from `ns` to `resolver`:53 on a connected socket, so that an ICMP error comes
/// back as the receive's error.
pub(super) fn dns_probe(ns: &Netns, source: Ipv4Addr, resolver: IpAddr) -> Result<Answer> {
    ns.run(move || -> io::Result<Answer> {
        let socket = UdpSocket::bind((source, 0))?;
        socket.connect(SocketAddr::new(resolver, 53))?;
        socket.set_read_timeout(Some(PROBE_BOUND))?;
        let start = Instant::now();
        if let Err(e) = socket.send(&sinks::dns_query(0x7a7a, "router-lab.example")) {
            return Ok(Answer::from_error(&e, start.elapsed()));
        }
        let mut buffer = [0u8; 512];
        Ok(match socket.recv(&mut buffer) {
            Ok(_) => Answer::Answered(start.elapsed()),
            Err(e) => Answer::from_error(&e, start.elapsed()),
        })
    })?
    .context("a DNS probe")
}

/// A datagram from `ns` to `dst` on a connected socket; the target's sink never answers, so
/// the outcome is an ICMP error or silence.
fn udp_probe(ns: &Netns, source: Ipv4Addr, dst: SocketAddr) -> Result<Answer> {
    ns.run(move || -> io::Result<Answer> {
        let socket = UdpSocket::bind((source, 0))?;
        socket.connect(dst)?;
        socket.set_read_timeout(Some(PROBE_BOUND))?;
        let start = Instant::now();
        if let Err(e) = socket.send(b"killswitch-lab router udp probe") {
            return Ok(Answer::from_error(&e, start.elapsed()));
        }
        let mut buffer = [0u8; 64];
        Ok(match socket.recv(&mut buffer) {
            Ok(_) => Answer::Answered(start.elapsed()),
            Err(e) => Answer::from_error(&e, start.elapsed()),
        })
    })?
    .context("a UDP probe")
}

/// A TCP connection from `source` in `ns` to `dst`.
fn tcp_probe(ns: &Netns, source: Ipv4Addr, dst: SocketAddrV4) -> Result<Answer> {
    ns.run(move || {
        let start = Instant::now();
        match tcp_connect_from(source, dst, PROBE_BOUND) {
            Ok(()) => Answer::Answered(start.elapsed()),
            Err(e) => Answer::from_error(&e, start.elapsed()),
        }
    })
}

/// A blocking TCP connect from `source` to `dst`, bounded by `timeout` (on Linux SO_SNDTIMEO
/// bounds connect; it then fails with EINPROGRESS, which counts as silence).
fn tcp_connect_from(source: Ipv4Addr, dst: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
    use std::os::fd::AsRawFd;
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    let timeout =
        nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    Ok(())
}

/// The client's packets the oracle calls leaks on the WAN, by what they were.
#[derive(Debug, Clone, Default)]
pub(super) struct WanLeaks {
    /// DNS to the ISP's resolver (192.168.50.1).
    pub(super) dns_isp: usize,
    /// DNS to the public resolver (192.0.2.53).
    pub(super) dns_public: usize,
    /// Any IPv6.
    pub(super) ipv6: usize,
    /// Everything else.
    pub(super) other: usize,
    /// The first few, described.
    pub(super) first: Vec<String>,
}

impl WanLeaks {
    pub(super) fn total(&self) -> usize {
        self.dns_isp + self.dns_public + self.ipv6 + self.other
    }
}

/// The leaks on the WAN since capture position `from`, drained up to a sentinel first.
pub(super) fn wan_leaks(lab: &Lab, from: usize) -> Result<WanLeaks> {
    let mut leaks = WanLeaks::default();
    for (frame, what) in lab.leaks_since(from)? {
        let dns_to = |ip: &crate::packet::IpPacket, resolver: Ipv4Addr| {
            ip.dst == IpAddr::V4(resolver)
                && matches!(
                    ip.transport,
                    L4::Udp { dport: 53, .. } | L4::Tcp { dport: 53, .. }
                )
        };
        match &frame {
            Frame::Ip(ip) if dns_to(ip, topology::ROUTER_V4) => leaks.dns_isp += 1,
            Frame::Ip(ip) if dns_to(ip, topology::PUBLIC_DNS_V4) => leaks.dns_public += 1,
            Frame::Ip(ip) if ip.dst.is_ipv6() => leaks.ipv6 += 1,
            _ => leaks.other += 1,
        }
        if leaks.first.len() < 5 {
            leaks.first.push(what);
        }
    }
    Ok(leaks)
}

/// Outgoing frames on the WAN since `from` whose payload carries `marker` (drained first):
/// a scenario's own probes, told apart by content where the oracle would excuse them (a
/// datagram to the WireGuard endpoint's port looks like the tunnel to it).
pub(super) fn marked_on_wan(lab: &Lab, from: usize, marker: &[u8]) -> Result<Vec<String>> {
    lab.outgoing_since(from, |ip| {
        ip.payload.windows(marker.len()).any(|w| w == marker)
    })
}

/// A UDP receiver in the net namespace on an address and port of its own: the arrivals of one
/// probe's datagrams only, with their sources. Stops on drop.
pub(super) struct PortSink {
    /// What arrived.
    pub(super) arrivals: Arrivals,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PortSink {
    /// Listens on `at` in `ns`.
    pub(super) fn start(ns: &Netns, at: SocketAddr) -> Result<Self> {
        let socket = ns
            .run(|| UdpSocket::bind(at))?
            .with_context(|| format!("binding {at}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (arrivals, stop) = (Arrivals::default(), Arc::new(AtomicBool::new(false)));
        let thread = std::thread::spawn({
            let (arrivals, stop) = (arrivals.clone(), stop.clone());
            move || {
                let mut buffer = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buffer) {
                        arrivals.push(from.ip());
                    }
                }
            }
        });
        Ok(PortSink {
            arrivals,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PortSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One long-lived UDP flow from the LAN client: one socket (one source port) sending `marker`
/// to `dst` every 10 ms until stopped, so that its conntrack entry and NAT binding outlive
/// whatever happens meanwhile.
struct Flow {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<io::Result<()>>>>,
}

const FLOW_MARKER: &[u8] = b"killswitch-lab long-lived flow";

impl Flow {
    fn start(ns: &Netns, dst: SocketAddr) -> Result<Self> {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let thread = ns.spawn("flow", {
            let (stop, sent) = (stop.clone(), sent.clone());
            move || -> io::Result<()> {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                while !stop.load(Ordering::Relaxed) {
                    // Errors (an ICMP error reported on the next send) are part of the test.
                    let _ = socket.send_to(FLOW_MARKER, dst);
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            }
        })?;
        Ok(Flow {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// Stops the flow; returns how many datagrams it sent.
    fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the flow panicked"))???;
        }
        Ok(self.sent.load(Ordering::Relaxed))
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The destinations a TunnelVision-style route takes past the tunnel: the target and the public
/// resolver, each a /32 in the router's main table via the WAN gateway (more specific than any
/// default route, so wg-quick's `suppress_prefixlength 0` lets it win).
const TUNNELVISION: [Ipv4Addr; 2] = [topology::TARGET_V4, topology::PUBLIC_DNS_V4];

fn push_tunnelvision(lab: &Lab, add: bool) -> Result<()> {
    for host in TUNNELVISION {
        lab.topo.client.ip(&[
            "route",
            if add { "add" } else { "del" },
            &format!("{host}/32"),
            "via",
            &topology::ROUTER_V4.to_string(),
            "dev",
            PHYS,
        ])?;
    }
    Ok(())
}

fn signal_both(lab: &mut Lab, signal: Signal) -> Result<()> {
    let vpn = lab
        .tunnel
        .client
        .as_mut()
        .context("no VPN process")?
        .process()
        .pid();
    let daemon = lab.daemon.as_mut().context("no daemon")?.process().pid();
    for pid in [vpn, daemon] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
    }
    Ok(())
}

/// What the plain router (no kill switch) let out.
struct Baseline {
    measurement: crate::lab::Measurement,
    leaks: WanLeaks,
    tunnelvision_direct: usize,
}

/// The plain router: the tunnel down, then up with a TunnelVision route pushed.
fn baseline(lab: &mut Lab, lan: &RouterLan) -> Result<Baseline> {
    let from = lab.capture.len();
    let window = lab.begin_from(&lan.client, &LAN_KINDS)?;
    hold(Duration::from_secs(1));
    let measurement = lab.end(window)?;
    let leaks = wan_leaks(lab, from)?;

    lab.tunnel.start_client(&lab.topo)?;
    lab.tunnel.handshake(&lab.topo, EVENT_TIMEOUT)?;
    push_tunnelvision(lab, true)?;
    let since = Instant::now();
    let target = SocketAddr::new(topology::TARGET_V4.into(), sinks::UDP_PORT);
    lan.client.run(|| {
        for _ in 0..5 {
            let _ = traffic::send_udp(target, b"killswitch-lab tunnelvision", None);
        }
    })?;
    // The route takes them around the tunnel: they arrive directly (bounded wait; a failure
    // shows as 0 below).
    let _ = lab
        .servers
        .udp
        .wait_for(since, 5, EVENT_TIMEOUT, |ip| !is_tunnel(ip));
    let tunnelvision_direct = lab.servers.udp.count_since(since, |ip| !is_tunnel(ip));
    push_tunnelvision(lab, false)?;
    Ok(Baseline {
        measurement,
        leaks,
        tunnelvision_direct,
    })
}

pub(super) fn router(lab: &mut Lab) -> Result<Outcome> {
    let lan = RouterLan::build(lab)?;
    let plain_linux = without_kill_switch(lab)?;
    let plain = baseline(lab, &lan)?;
    let b = &plain.leaks;
    let baseline_leaks = format!(
        "the WAN capture sees the client's traffic ({} IPv4, {} DNS to the ISP, {} DNS to the public resolver, {} IPv6)",
        b.other, b.dns_isp, b.dns_public, b.ipv6
    );
    let baseline_tv = format!(
        "a TunnelVision route takes the client's traffic around it ({} arrived directly)",
        plain.tunnelvision_direct
    );

    // Protection: guard the running tunnel, then the LAN.
    guard_again(lab)?;
    let added = Instant::now();
    RouterLan::protect(lab, &format!("{baseline_leaks}; {baseline_tv}"))?;
    let first_through = lan.wait_for_tunnel(lab, added, 1)?;
    let listed = lab.daemon()?.cli(&["router", "list"])?.ok()?.stdout;

    let from = lab.capture.len();
    let window = lab.begin_from(&lan.client, &LAN_KINDS)?;
    let window_start = Instant::now();
    let resolvers = [
        ("the ISP's resolver", IpAddr::V4(topology::ROUTER_V4)),
        ("the public resolver", IpAddr::V4(topology::PUBLIC_DNS_V4)),
        ("the router", IpAddr::V4(LAN_ROUTER_V4)),
    ];
    let dns_since = Instant::now();
    let mut dns_up = Vec::new();
    for (name, resolver) in resolvers {
        dns_up.push((name, dns_probe(&lan.client, LAN_CLIENT_V4, resolver)?));
    }
    let dns_through_tunnel = lab.servers.dns_tunnel.count_since(dns_since, is_tunnel);

    // 1. The WAN yanked: down 3 s, then back with its default route.
    lab.link_down()?;
    hold(Duration::from_secs(3));
    let wan_back = Instant::now();
    lab.link_up(topology::ROUTER_V4.into())?;
    lab.tunnel.reannounce_endpoint(&lab.topo)?;
    let after_yank = lan.wait_for_tunnel(lab, wan_back, RESUMED)?;

    // 2. The tunnel killed: the client must hear so at once.
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let target_tcp = SocketAddrV4::new(topology::TARGET_V4, sinks::TCP_PORT);
    let target_udp = SocketAddr::new(topology::TARGET_V4.into(), sinks::UDP_PORT);
    let mut down = Vec::new();
    for source in [QUIET_V4, LAN_CLIENT_V4] {
        let mut probes = vec![
            (
                "TCP to the target",
                tcp_probe(&lan.client, source, target_tcp)?,
            ),
            (UDP_TO_TARGET, udp_probe(&lan.client, source, target_udp)?),
        ];
        for (name, resolver) in resolvers {
            probes.push((name, dns_probe(&lan.client, source, resolver)?));
        }
        down.push(probes);
    }
    let (down_quiet, down_busy) = (&down[0], &down[1]);
    hold(Duration::from_secs(1));
    let restarted = Instant::now();
    lab.start_vpn()?;
    let after_kill = lan.wait_for_tunnel(lab, restarted, RESUMED)?;

    // 3. Daemon and tunnel frozen (a suspended router, a stuck process), 2 s.
    signal_both(lab, Signal::SIGSTOP)?;
    hold(Duration::from_secs(2));
    let woke = Instant::now();
    signal_both(lab, Signal::SIGCONT)?;
    let after_freeze = lan.wait_for_tunnel(lab, woke, RESUMED)?;

    // 4. TunnelVision: routes past the tunnel pushed into the router's main table.
    push_tunnelvision(lab, true)?;
    let pushed = Instant::now();
    hold(Duration::from_secs(1));
    let tv_direct = lab.servers.udp.count_since(pushed, |ip| !is_tunnel(ip))
        + lab.servers.dns_public.count_since(pushed, |_| true);
    let tv_tunnelled = lab.servers.udp.count_since(pushed, is_tunnel);
    let tv_dns = dns_probe(
        &lan.client,
        LAN_CLIENT_V4,
        IpAddr::V4(topology::PUBLIC_DNS_V4),
    )?;
    push_tunnelvision(lab, false)?;

    // 5. A long-lived flow across a tunnel restart: it must neither stick to the WAN nor die.
    let flow_at = SocketAddr::new(topology::TARGET_V4.into(), 9105);
    let flow_sink = PortSink::start(&lab.topo.net, flow_at)?;
    let flow = Flow::start(&lan.client, flow_at)?;
    let flow_started = Instant::now();
    flow_sink
        .arrivals
        .wait_for(flow_started, 5, EVENT_TIMEOUT, is_tunnel)
        .context("the long-lived flow through the tunnel")?;
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    hold(Duration::from_millis(500));
    let flow_restarted = Instant::now();
    lab.start_vpn()?;
    let flow_resumed = flow_sink
        .arrivals
        .wait_for(flow_restarted, 5, EVENT_TIMEOUT, is_tunnel)
        .map(|()| flow_restarted.elapsed());
    let flow_sent = flow.stop()?;
    let flow_direct = flow_sink
        .arrivals
        .count_since(flow_started, |ip| !is_tunnel(ip));

    // 6. The daemon as the WireGuard client (`up`), then another server: a new endpoint and a
    // new tunnel address under a flow that was masqueraded to the old one.
    let switch = switch_servers(lab, &lan)?;

    let mut outcome = Outcome::new(lab.end(window)?);
    let leaks = wan_leaks(lab, from)?;
    let flow_on_wan = marked_on_wan(lab, from, FLOW_MARKER)?;

    // The baseline first: without protection, each check below sees its leak.
    outcome.check(
        plain_linux,
        "baseline: a plain Linux router (daemon stopped, `killswitchd --teardown`: no kill switch table)",
    );
    outcome.check(
        b.other > 0 && b.dns_isp > 0 && b.dns_public > 0 && b.ipv6 > 0,
        format!("baseline, tunnel down: {baseline_leaks}"),
    );
    outcome.check(
        plain.tunnelvision_direct > 0,
        format!("baseline, tunnel up: {baseline_tv}"),
    );
    outcome.unprotected = Some(plain.measurement.clone());

    outcome.check(
        listed.contains(LAN),
        format!("`killswitch router list` shows {LAN}"),
    );
    outcome.check(
        leaks.total() == 0,
        format!(
            "protected: 0 client packets on the WAN in clear ({} IPv4, {} DNS to the ISP, {} DNS to the public resolver, {} IPv6)",
            leaks.other, leaks.dns_isp, leaks.dns_public, leaks.ipv6
        ),
    );
    outcome.check(
        outcome.measurement.direct == 0,
        format!(
            "nothing arrived except through the tunnel ({} through it, {} directly)",
            outcome.measurement.through_tunnel, outcome.measurement.direct
        ),
    );
    let isp_or_public = lab.servers.dns_lan.count_since(window_start, |_| true)
        + lab.servers.dns_public.count_since(window_start, |_| true);
    outcome.check(
        isp_or_public == 0,
        format!("no query reached the ISP's or the public resolver ({isp_or_public})"),
    );
    outcome.check(
        dns_up.iter().all(|(_, a)| a.answered()) && dns_through_tunnel >= dns_up.len(),
        format!(
            "tunnel up: DNS to any resolver answered through the tunnel's ({}; {dns_through_tunnel} queries at the tunnel's resolver)",
            describe(&dns_up)
        ),
    );
    // UDP to the target is refused with an ICMP error, which the kernel's global ICMP budget
    // (1,000 a second, here spent on the flooding host) may swallow: reported, not required.
    outcome.check(
        down_quiet
            .iter()
            .filter(|(name, _)| *name != UDP_TO_TARGET)
            .all(|(_, a)| a.failed_fast()),
        format!(
            "tunnel down: a quiet LAN host's TCP and DNS get errors within {} ms, not silence ({})",
            FAIL_FAST.as_millis(),
            describe(down_quiet)
        ),
    );
    // TCP resets are not rate-limited as ICMP errors are: even a host flooding the router must
    // get them.
    outcome.check(
        down_busy[0].1.failed_fast(),
        format!(
            "tunnel down: the host flooding the router (1,500 packets/s) gets a TCP reset within {} ms ({}; its other probes, whose ICMP errors the kernel rate-limits: {})",
            FAIL_FAST.as_millis(),
            down_busy[0].1,
            describe(&down_busy[1..])
        ),
    );
    let tcp6 = outcome
        .measurement
        .per_kind
        .get(&Kind::Tcp6)
        .copied()
        .unwrap_or_default();
    outcome.check(
        tcp6.offered > 0 && tcp6.refused == tcp6.offered,
        format!(
            "forwarded IPv6 (the tunnel carries none) refused: {} of {} TCP attempts",
            tcp6.refused, tcp6.offered
        ),
    );
    outcome.check(
        tv_direct == 0,
        format!(
            "TunnelVision routes on the router: nothing went around the tunnel ({tv_tunnelled} through it, {tv_direct} directly; DNS to the public resolver {tv_dns})"
        ),
    );
    outcome.check(
        flow_resumed.is_ok() && flow_direct == 0 && flow_on_wan.is_empty(),
        format!(
            "a long-lived UDP flow across a tunnel restart: back through the tunnel {}, {} of its {flow_sent} datagrams on the WAN, {flow_direct} arrived directly",
            flow_resumed
                .as_ref()
                .map_or_else(|e| format!("never ({e})"), |d| format!("after {} ms", ms(*d))),
            flow_on_wan.len()
        ),
    );
    outcome.check(
        switch.first.is_ok() && switch.second.is_ok() && switch.direct == 0 && switch.dns.answered(),
        format!(
            "`up` server 1, then `up` server 2 (new endpoint, new tunnel address) under a long-lived flow: through server 1 {}, through server 2 {}, {} arrived otherwise; DNS {}",
            describe_wait(&switch.first),
            describe_wait(&switch.second),
            switch.direct,
            switch.dns
        ),
    );
    outcome.note(format!(
        "`router add`: first client packet through the tunnel after {} ms",
        ms(first_through)
    ));
    outcome.note(format!(
        "client traffic back through the tunnel: {} ms after the WAN came back (down 3 s), {} ms after the VPN process restarted, {} ms after the thaw (frozen 2 s)",
        ms(after_yank),
        ms(after_kill),
        ms(after_freeze)
    ));
    if let Some(first) = leaks.first.first() {
        outcome.note(format!("first leak: {first}"));
    }
    if let Some(first) = b.first.first() {
        outcome.note(format!("baseline, first leak: {first}"));
    }
    Ok(outcome)
}

fn describe_wait(waited: &Result<Duration>) -> String {
    match waited {
        Ok(after) => format!("after {} ms", ms(*after)),
        Err(e) => format!("never ({e:#})"),
    }
}

/// What switching to `up` and then to another server showed.
struct ServerSwitch {
    /// When the flow arrived from server 1's client address, after `up`.
    first: Result<Duration>,
    /// When it arrived from server 2's, after the switch.
    second: Result<Duration>,
    /// The flow's datagrams that arrived from any other address.
    direct: usize,
    /// A DNS query to the ISP's resolver after the switch.
    dns: Answer,
}

/// The guarded VPN process goes; `up` with server 1 (the daemon's own tunnel), a long-lived flow
/// from the LAN, then `up` with server 2 while it flows.
fn switch_servers(lab: &mut Lab, lan: &RouterLan) -> Result<ServerSwitch> {
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    lab.start_up_servers(2)?;
    let interface = lab.up_interface();
    let up = |lab: &Lab, n: usize| -> Result<()> {
        let path = lab.up_servers[n].1.display().to_string();
        lab.daemon()?
            .cli(&["up", "--interface", &interface, &path])?
            .ok()?;
        Ok(())
    };
    let (client1, client2) = (
        IpAddr::V4(lab.up_servers[0].0.client_ip),
        IpAddr::V4(lab.up_servers[1].0.client_ip),
    );
    up(lab, 0)?;
    let at = SocketAddr::new(topology::TARGET_V4.into(), 9106);
    let sink = PortSink::start(&lab.topo.net, at)?;
    let flow = Flow::start(&lan.client, at)?;
    let started = Instant::now();
    let first = sink
        .arrivals
        .wait_for(started, 5, EVENT_TIMEOUT, |ip| ip == client1)
        .map(|()| started.elapsed());
    let switched = Instant::now();
    up(lab, 1)?;
    let second = sink
        .arrivals
        .wait_for(switched, 5, EVENT_TIMEOUT, |ip| ip == client2)
        .map(|()| switched.elapsed());
    flow.stop()?;
    let direct = sink
        .arrivals
        .count_since(started, |ip| ip != client1 && ip != client2);
    let dns = dns_probe(&lan.client, LAN_CLIENT_V4, IpAddr::V4(topology::ROUTER_V4))?;
    Ok(ServerSwitch {
        first,
        second,
        direct,
        dns,
    })
}

fn describe(answers: &[(&str, Answer)]) -> String {
    answers
        .iter()
        .map(|(name, answer)| format!("{name}: {answer}"))
        .collect::<Vec<_>>()
        .join("; ")
}
