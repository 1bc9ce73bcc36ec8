//! One lab: the topology, a WireGuard tunnel, the target's sinks and resolvers, a daemon and a
//! capture on the client's physical link; and measurement windows over it.

use crate::capture::Capture;
use crate::daemon::{Daemon, DaemonHome};
use crate::generator::{Generator, Kind, KindCounts};
use crate::oracle::{Facts, Judgement, judge};
use crate::packet::Frame;
use crate::sinks::{Arrival, Servers};
use crate::topology::{self, PHYS, Topology};
use crate::traffic;
use crate::wireguard::{self, Tunnel};
use anyhow::{Context, Result};
use killswitch_types::State;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long the lab waits for an event (a state, a handshake, traffic) before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A complete lab.
#[derive(Debug)]
pub struct Lab {
    /// The capture on the client's physical interface (declared first: dropped first).
    pub capture: Capture,
    /// The daemon (None while "killed").
    pub daemon: Option<Daemon>,
    /// Its files, kept across restarts.
    pub home: DaemonHome,
    /// The target's sinks and the resolvers.
    pub servers: Servers,
    /// The WireGuard tunnel.
    pub tunnel: Tunnel,
    /// The namespaces.
    pub topo: Topology,
    /// The generator's rate.
    pub rate: u32,
    /// Since when the user allows the LAN (frames to it after this are not leaks).
    lan_allowed_since: Option<Instant>,
    /// Servers for `killswitch up`, with the configuration files written for them.
    pub up_servers: Vec<(wireguard::Server, std::path::PathBuf)>,
    /// Other VPNs' servers and the client's addresses in their tunnels (an OpenVPN scenario's):
    /// what the oracle takes for tunnel packets besides the lab's own.
    pub other_tunnels: Vec<(SocketAddr, IpAddr)>,
}

/// An open measurement window.
#[derive(Debug)]
pub struct Window {
    start: Instant,
    capture_from: usize,
    generator: Generator,
}

/// What happened in a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// Packets (and connection attempts) the generator sent.
    pub offered: u64,
    /// Of those, refused on the spot by the kill switch.
    pub refused: u64,
    /// Arrivals at the target and resolvers through the tunnel.
    pub through_tunnel: u64,
    /// Arrivals that did not come through the tunnel.
    pub direct: u64,
    /// Outgoing frames on the physical link that are neither the tunnel nor link bring-up.
    pub leaked: u64,
    /// The first leaked frames, described.
    pub leaks: Vec<String>,
    /// The longest stretch without any arrival, after the first one.
    pub longest_gap_ms: Option<u64>,
    /// Outgoing frames judged.
    pub frames_judged: u64,
    /// Per kind of traffic.
    pub per_kind: BTreeMap<Kind, KindCounts>,
    /// How long the window was open.
    pub duration_ms: u64,
    /// Outgoing frames a scenario expected outside the tunnel and told apart by their content
    /// (a bypassed program's, scenario `bypass`), not judged; 0 elsewhere.
    pub excused: u64,
}

static SENTINELS: AtomicU32 = AtomicU32::new(0);
const MAX_LEAKS_SHOWN: usize = 20;

impl Lab {
    /// Builds a lab; the client's VPN process is not started yet.
    pub fn new(tag: &str, rate: u32) -> Result<Self> {
        let topo = Topology::new(tag)?;
        let tunnel = Tunnel::server_only(&topo)?;
        let servers = Servers::start(
            &topo.net,
            &[topology::TARGET_V4.into(), topology::TARGET_V6.into()],
            wireguard::SERVER_TUNNEL_V4.into(),
            topology::ROUTER_V4.into(),
            topology::PUBLIC_DNS_V4.into(),
        )?;
        let home = DaemonHome::new()?;
        let daemon = Daemon::start(&topo.client, &home)?;
        let capture = Capture::start(&topo.client, PHYS)?;
        Ok(Lab {
            capture,
            daemon: Some(daemon),
            home,
            servers,
            tunnel,
            topo,
            rate,
            lan_allowed_since: None,
            up_servers: Vec::new(),
            other_tunnels: Vec::new(),
        })
    }

    /// The running daemon.
    pub fn daemon(&self) -> Result<&Daemon> {
        self.daemon.as_ref().context("the daemon is not running")
    }

    /// `killswitch guard` for the lab's tunnel.
    pub fn guard(&self) -> Result<()> {
        self.daemon()?.guard(&self.tunnel).map(drop)
    }

    /// Starts (or restarts) the VPN process and waits until the daemon calls it connected.
    pub fn start_vpn(&mut self) -> Result<()> {
        self.tunnel.start_client(&self.topo)?;
        self.daemon()?
            .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
        Ok(())
    }

    /// Guards, starts the VPN, and waits until a packet has crossed the tunnel.
    pub fn connect(&mut self) -> Result<()> {
        self.guard()?;
        self.start_vpn()?;
        self.wait_for_tunnel_traffic(Instant::now(), 1)
    }

    /// Waits until `count` packets have arrived through the tunnel since `since`, nudging with a
    /// probe of its own (so it works with or without the generator running).
    pub fn wait_for_tunnel_traffic(&self, since: Instant, count: usize) -> Result<()> {
        self.wait_for_traffic_from(since, count, is_tunnel)
    }

    /// Waits until `count` packets from a source matching `from` arrived at the target's UDP sink
    /// since `since`, nudging with a probe of its own.
    pub fn wait_for_traffic_from(
        &self,
        since: Instant,
        count: usize,
        from: impl Fn(IpAddr) -> bool,
    ) -> Result<()> {
        let target = SocketAddr::new(topology::TARGET_V4.into(), crate::sinks::UDP_PORT);
        let _ = self
            .topo
            .client
            .run(|| traffic::send_udp(target, b"probe", None));
        self.servers
            .udp
            .wait_for(since, count, EVENT_TIMEOUT, from)
            .with_context(|| {
                format!(
                    "waiting for traffic through the tunnel\n{}",
                    self.diagnostics()
                )
            })
    }

    /// What the client's network looks like now, for an error message.
    pub fn diagnostics(&self) -> String {
        let mut text = String::new();
        let client = &self.topo.client;
        let commands: [(&str, &[&str]); 5] = [
            ("wg", &["show", self.tunnel.client_interface()]),
            ("ip", &["-4", "route", "show", "table", "all"]),
            ("ip", &["-4", "rule"]),
            ("ip", &["neigh"]),
            ("ip", &["-br", "addr"]),
        ];
        for (program, args) in commands {
            let output = client
                .exec(program, args)
                .unwrap_or_else(|e| format!("{e:#}"));
            text.push_str(&format!("$ {program} {}\n{output}", args.join(" ")));
        }
        // The servers' side: handshakes and bytes per peer.
        let servers = self
            .topo
            .net
            .exec("wg", &["show", "all"])
            .unwrap_or_else(|e| format!("{e:#}"));
        text.push_str(&format!("$ wg show all (servers)\n{servers}"));
        let frames = self.capture.frames();
        text.push_str("last frames on the physical link:\n");
        for c in frames.iter().rev().take(15).rev() {
            text.push_str(&format!("  {:?} {}\n", c.direction, c.frame));
        }
        text
    }

    /// Starts `count` (1 to 3) WireGuard servers for `killswitch up`, and writes a client
    /// configuration for each (mode 600) into the daemon's home.
    pub fn start_up_servers(&mut self, count: u8) -> Result<()> {
        let client = wireguard::KeyPair::generate()?;
        for n in 1..=count {
            let server = wireguard::Server::start(&self.topo, n)?;
            server.allow(&self.topo, &client.public)?;
            // The server's resolver (the client's DNS while connected to it).
            let queries = self.servers.dns_tunnel.clone();
            self.servers
                .add_resolver(&self.topo.net, server.tunnel_ip.into(), queries)?;
            let path = self.home.path().join(format!("server{n}.conf"));
            std::fs::write(&path, server.client_config(&client))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            self.up_servers.push((server, path));
        }
        Ok(())
    }

    /// The interface `killswitch up` uses in this lab (unique on the machine: userspace
    /// WireGuard's sockets are shared by all namespaces).
    pub fn up_interface(&self) -> String {
        format!(
            "ksup{}",
            self.tunnel.client_interface().trim_start_matches("ksc")
        )
    }

    /// `killswitch up` with the servers' configurations, in order.
    pub fn up(&self) -> Result<()> {
        let interface = self.up_interface();
        let mut args = vec!["up".to_owned(), "--interface".to_owned(), interface];
        args.extend(
            self.up_servers
                .iter()
                .map(|(_, path)| path.display().to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.daemon()?.cli(&args)?.ok()?;
        Ok(())
    }

    /// Replaces the daemon with one whose tables are unowned, as on a kernel without nf_tables'
    /// `persist`: the daemon stops (its tables stay, orphaned), another program deletes them (an
    /// orphan is anyone's; the routing layer holds meanwhile), and the new daemon installs its own,
    /// unowned. Returns once the new daemon is ready.
    pub fn restart_daemon_unowned(&mut self) -> Result<()> {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.process().terminate(EVENT_TIMEOUT)?;
        }
        for family in ["inet", "arp"] {
            let tables = self.topo.client.exec("nft", &["list", "tables"])?;
            if tables
                .lines()
                .any(|l| l.trim() == format!("table {family} killswitch"))
            {
                self.topo
                    .client
                    .exec("nft", &["delete", "table", family, "killswitch"])?;
            }
        }
        self.daemon = Some(Daemon::start_unowned(&self.topo.client, &self.home)?);
        Ok(())
    }

    /// `killswitch up` (see [`Lab::up`]), then waits until the daemon is connected and has pointed
    /// DNS at the tunnel.
    pub fn up_with_dns(&self) -> Result<killswitch_types::ipc::Status> {
        self.up()?;
        self.daemon()?
            .wait_for("DNS pointed at the tunnel", EVENT_TIMEOUT, dns_managed)
    }

    /// Waits until the daemon, blocked (after `down` under lockdown), has given DNS back.
    pub fn wait_for_dns_given_back(&self) -> Result<killswitch_types::ipc::Status> {
        self.daemon()?
            .wait_for("DNS given back", EVENT_TIMEOUT, |s| {
                s.state == State::Blocked && s.dns.is_none()
            })
    }

    /// The client's resolv.conf as applications there read it (an error's text if unreadable).
    pub fn resolv_conf(&self) -> String {
        let path = self.topo.client.resolv_conf_path();
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()))
    }

    /// `killswitch allow-lan on|off`, remembered for the oracle.
    pub fn allow_lan(&mut self, allow: bool) -> Result<()> {
        let since = Instant::now();
        self.daemon()?
            .cli(&["allow-lan", if allow { "on" } else { "off" }])?
            .ok()?;
        self.lan_allowed_since = allow.then_some(since);
        Ok(())
    }

    /// Takes the client's physical link down.
    pub fn link_down(&self) -> Result<()> {
        self.topo
            .client
            .ip(&["link", "set", PHYS, "down"])
            .map(drop)
    }

    /// Brings the client's physical link back, with the default route the kernel dropped with it
    /// (as the DHCP client would).
    pub fn link_up(&self, gateway: IpAddr) -> Result<()> {
        self.topo.client.ip(&["link", "set", PHYS, "up"])?;
        self.topo
            .client
            .ip(&["route", "replace", "default", "via", &gateway.to_string()])?;
        Ok(())
    }

    /// Opens a measurement window with the generator sending `kinds`.
    pub fn begin(&self, kinds: &[Kind]) -> Result<Window> {
        Ok(Window {
            start: Instant::now(),
            capture_from: self.capture.len(),
            generator: Generator::start(&self.topo.client, kinds, self.rate)?,
        })
    }

    /// Opens a measurement window with the generator sending `kinds` from `ns`: a host behind
    /// the client (a LAN client of the router in scenario `router`), judged on the same link.
    pub fn begin_from(&self, ns: &crate::netns::Netns, kinds: &[Kind]) -> Result<Window> {
        Ok(Window {
            start: Instant::now(),
            capture_from: self.capture.len(),
            generator: Generator::start(ns, kinds, self.rate)?,
        })
    }

    /// Closes a window: stops the generator, drains the capture up to a sentinel, and judges.
    pub fn end(&self, window: Window) -> Result<Measurement> {
        self.end_excusing(window, &|_| false)
    }

    /// [`Lab::end`], where the frames `excused` picks are counted apart instead of judged: what
    /// a scenario sends outside the tunnel on purpose and recognises by its content. Every other
    /// frame is judged by the oracle as always.
    pub fn end_excusing(
        &self,
        window: Window,
        excused: &dyn Fn(&crate::capture::Captured) -> bool,
    ) -> Result<Measurement> {
        let icmp = window.generator.icmp_replies.clone();
        let per_kind = window.generator.stop()?;
        let end = Instant::now();

        let sentinel_at = self.drain_capture(window.capture_from)?;
        let endpoints = self.endpoints();
        let tunnel_addresses = self.tunnel_addresses();
        let frames = self.capture.frames();
        let mut m = Measurement {
            per_kind,
            duration_ms: (end - window.start).as_millis() as u64,
            ..Measurement::default()
        };
        for captured in &frames[window.capture_from..sentinel_at] {
            if captured.direction == crate::capture::Direction::Outgoing && excused(captured) {
                m.excused += 1;
                continue;
            }
            let lan_allowed = self
                .lan_allowed_since
                .is_some_and(|since| captured.at >= since);
            let facts = Facts {
                endpoints: &endpoints,
                tunnel_addresses: &tunnel_addresses,
                lan_allowed,
            };
            if let Some(judgement) = judge(captured, &facts) {
                m.frames_judged += 1;
                if let Judgement::Leak(what) = judgement {
                    m.leaked += 1;
                    if m.leaks.len() < MAX_LEAKS_SHOWN {
                        m.leaks.push(what);
                    }
                }
            }
        }
        m.offered = m.per_kind.values().map(|c| c.offered).sum();
        m.refused = m.per_kind.values().map(|c| c.refused).sum();

        let s = &self.servers;
        let mut arrivals: Vec<Arrival> = [&s.udp, &s.tcp, &s.dns_tunnel, &s.dns_lan, &s.dns_public]
            .iter()
            .flat_map(|a| a.all())
            .filter(|a| a.at >= window.start && a.at <= end)
            .collect();
        m.through_tunnel = arrivals.iter().filter(|a| is_tunnel(a.from)).count() as u64;
        m.direct = arrivals.len() as u64 - m.through_tunnel;
        // Echo replies come back to the client; which way they went the capture already judged.
        let replies: Vec<Arrival> = icmp
            .all()
            .into_iter()
            .filter(|a| a.at >= window.start && a.at <= end)
            .collect();
        if m.leaked == 0 && m.direct == 0 {
            m.through_tunnel += replies.len() as u64;
        } else {
            m.direct += replies.len() as u64;
        }
        arrivals.extend(replies);
        arrivals.sort_by_key(|a| a.at);
        m.longest_gap_ms = arrivals.first().map(|first| {
            let mut longest = end - arrivals.last().map_or(first.at, |a| a.at);
            for pair in arrivals.windows(2) {
                longest = longest.max(pair[1].at - pair[0].at);
            }
            longest.as_millis() as u64
        });
        Ok(m)
    }

    /// Drains the capture: sends a sentinel and waits until the capture holds it (from frame
    /// `from` on). Returns its index: every frame sent before it is in the capture before it. A
    /// capture that dropped frames is an error (no verdict is possible).
    pub fn drain_capture(&self, from: usize) -> Result<usize> {
        // A DHCP-shaped frame is allowed in every state, so it always reaches the wire: once the
        // capture has it, it has everything sent before it.
        let id = SENTINELS.fetch_add(1, Ordering::Relaxed);
        let payload = format!("killswitch-lab sentinel {}-{id}", std::process::id()).into_bytes();
        self.topo.client.run(|| send_sentinel(&payload))??;
        let sentinel_at = self
            .capture
            .wait_for(
                from,
                Duration::from_secs(5),
                |c| matches!(&c.frame, Frame::Ip(p) if p.payload == payload),
            )
            .context("draining the capture")?;
        let drops = self.capture.kernel_drops()?;
        anyhow::ensure!(
            drops == 0,
            "the capture dropped {drops} frames: no verdict possible"
        );
        Ok(sentinel_at)
    }

    /// The frames on the physical link from capture position `from` up to now (drained with a
    /// sentinel first) that the oracle calls leaks (LAN not allowed), each with its description.
    pub fn leaks_since(&self, from: usize) -> Result<Vec<(Frame, String)>> {
        let until = self.drain_capture(from)?;
        let endpoints = self.endpoints();
        let tunnel_addresses = self.tunnel_addresses();
        let facts = Facts {
            endpoints: &endpoints,
            tunnel_addresses: &tunnel_addresses,
            lan_allowed: false,
        };
        Ok(self.capture.frames()[from..until]
            .iter()
            .filter_map(|c| match judge(c, &facts) {
                Some(Judgement::Leak(what)) => Some((c.frame.clone(), what)),
                _ => None,
            })
            .collect())
    }

    /// The outgoing IP packets on the physical link from capture position `from` up to now
    /// (drained with a sentinel first) that `pick` selects, described: a scenario's own probes,
    /// told apart by their ports or payload where the oracle would excuse them.
    pub fn outgoing_since(
        &self,
        from: usize,
        pick: impl Fn(&crate::packet::IpPacket) -> bool,
    ) -> Result<Vec<String>> {
        let until = self.drain_capture(from)?;
        Ok(self.capture.frames()[from..until]
            .iter()
            .filter(|c| c.direction == crate::capture::Direction::Outgoing)
            .filter_map(|c| match &c.frame {
                Frame::Ip(ip) if pick(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect())
    }

    /// Where the tunnels' own packets go: the guarded tunnel's server and each `up` server.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let mut endpoints = vec![self.tunnel.endpoint()];
        endpoints.extend(self.up_servers.iter().map(|(server, _)| server.endpoint));
        endpoints.extend(self.other_tunnels.iter().map(|(endpoint, _)| *endpoint));
        endpoints
    }

    /// The client's addresses inside the lab's tunnels: its own and each `up` server's.
    pub fn tunnel_addresses(&self) -> Vec<IpAddr> {
        let mut addresses = vec![IpAddr::V4(wireguard::CLIENT_TUNNEL_V4)];
        addresses.extend(
            self.up_servers
                .iter()
                .map(|(server, _)| IpAddr::V4(server.client_ip)),
        );
        addresses.extend(self.other_tunnels.iter().map(|(_, address)| *address));
        addresses
    }

    /// How many packets arrived through the tunnel (at any sink) since `since`.
    pub fn tunnel_arrivals_since(&self, since: Instant) -> usize {
        let s = &self.servers;
        [&s.udp, &s.tcp, &s.dns_tunnel]
            .iter()
            .map(|a| a.count_since(since, is_tunnel))
            .sum()
    }

    /// How many packets arrived at the target or resolvers at all since `since`.
    pub fn arrivals_since(&self, since: Instant) -> usize {
        let s = &self.servers;
        [&s.udp, &s.tcp, &s.dns_tunnel, &s.dns_lan, &s.dns_public]
            .iter()
            .map(|a| a.count_since(since, |_| true))
            .sum()
    }
}

/// Whether the daemon is connected and has pointed DNS at the tunnel without an error.
pub fn dns_managed(status: &killswitch_types::ipc::Status) -> bool {
    status.state == State::Connected && status.dns.as_ref().is_some_and(|d| d.error.is_none())
}

/// Whether an arrival came through a tunnel: from a client address of the lab's tunnel (10.64.0.2)
/// or of an `up` server (10.65.0.2, 10.66.0.2, 10.67.0.2).
pub fn is_tunnel(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if matches!(v4.octets(), [10, 64..=67, 0, 2]))
}

/// Sends a DHCP-shaped broadcast carrying `payload` out of the physical interface (run it inside
/// the client namespace). The policy allows DHCP in every state, so once the capture holds this
/// frame it holds everything sent before it.
pub fn send_sentinel(payload: &[u8]) -> Result<()> {
    let socket =
        std::net::UdpSocket::bind("0.0.0.0:68").context("binding the sentinel to port 68")?;
    socket.set_broadcast(true)?;
    // SAFETY: setsockopt with the device name's bytes and length.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            PHYS.as_ptr().cast(),
            PHYS.len() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "binding the sentinel to {PHYS}: {}",
        std::io::Error::last_os_error()
    );
    socket
        .send_to(payload, "255.255.255.255:67")
        .context("sending the sentinel")?;
    Ok(())
}

/// Waits `duration` as part of a scenario's script ("the link stays down for 5 s"), not to
/// synchronise with anything.
pub fn hold(duration: Duration) {
    std::thread::sleep(duration);
}
