//! The VM lab: the packaged kill switch on a real Debian guest with systemd, kernel WireGuard,
//! reboots, suspend, package upgrades and removal, judged by a capture outside the guest.
//!
//! ```text
//!  guest (QEMU, TCG)                          host: a lab namespace (made and removed here)
//!  eth0 52:54:00:50:00:02  <--virtio-net-->   vmtap0 (tap) 192.168.50.1/24, fd50::1/64
//!  192.168.50.2/24 (systemd-networkd)         lo: 203.0.113.10 target, 192.0.2.53 resolver,
//!                                                 198.51.100.2-3 WireGuard servers (wireguard-go)
//!                                             AF_PACKET capture on vmtap0, open before QEMU starts
//! ```
//!
//! The capture is opened before QEMU is spawned, so it covers firmware, kernel and every reboot
//! (a reboot stays inside the same QEMU process). A frame the guest sends is judged by the namespace
//! lab's oracle ([`crate::oracle`]): the tunnel's own packets and link bring-up pass, anything else
//! is a leak. The guest offers traffic from the first moments of each boot (`ks-probe`), so a
//! window in which the kill switch is not in place shows up as leaks, which the negative control
//! proves on every run.
//!
//! - [`guest`]: QEMU, the serial console, the command agent and QMP.
//! - [`scenarios`]: the scenarios, run as one chain on one guest, each with its own capture window
//!   and verdict.
//! - [`report`]: the report, as text and JSON.

pub mod guest;
pub mod report;
pub mod scenarios;

use crate::capture::{Capture, Captured, Direction};
use crate::netns::Netns;
use crate::oracle::{Facts, Judgement, judge};
use crate::packet::{Frame, L4};
use crate::topology::{
    ENDPOINT_V4, ENDPOINT2_V4, ENDPOINT3_V4, ENDPOINT4_V4, PUBLIC_DNS_V4, ROUTER_V4, ROUTER_V6,
    TARGET_V4, TARGET_V6,
};
use crate::wireguard::{KeyPair, Server};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

/// The tap QEMU attaches to, in the lab namespace.
pub const TAP: &str = "vmtap0";
/// The guest NIC's MAC address: how the capture tells the guest's frames from the host's.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x50, 0x00, 0x02];

/// What the VM lab is given.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cached guest image directory (`base.raw`, `vmlinuz`, `initrd.img`, `manifest`).
    pub image: PathBuf,
    /// The package under test.
    pub deb: PathBuf,
    /// The package the upgrade starts from.
    pub previous_deb: PathBuf,
    /// Where that package came from (said in the report).
    pub previous_origin: String,
    /// Where logs, the pcap and journals go.
    pub artefacts: PathBuf,
    /// Print progress lines on stderr.
    pub progress: bool,
    /// End the chain after this scenario (for working on the lab).
    pub stop_after: Option<String>,
    /// Run only the NetworkManager guest (for working on the lab).
    pub only_networkmanager: bool,
}

/// The host side of the lab: the namespace with the tap, the capture and the VPN servers.
#[derive(Debug)]
pub struct HostSide {
    /// The lab namespace.
    pub net: Netns,
    /// The capture on the tap, from before the guest existed.
    pub capture: Capture,
    /// The WireGuard servers (kernel WireGuard in the guest, wireguard-go here).
    pub servers: Vec<Server>,
    /// The guest's WireGuard keys.
    pub client_key: KeyPair,
    endpoints: Vec<SocketAddr>,
    tunnel_addresses: Vec<IpAddr>,
}

/// A position in the capture: the start of a window.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    /// Index of the first frame of the window.
    pub frame: usize,
    /// When the window began.
    pub at: Instant,
}

/// What the guest sent in a window, judged.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Judged {
    /// Frames the guest sent.
    pub sent: usize,
    /// The tunnel's own packets.
    pub tunnel: usize,
    /// ARP, DHCP, neighbour discovery, link-scoped multicast reports.
    pub link_bring_up: usize,
    /// Everything else.
    pub leaked: usize,
    /// The first few leaks, described, with their time from the window's start.
    pub examples: Vec<String>,
    /// Frames from a VPN server to the guest (handshake replies, tunnel data).
    pub from_servers: usize,
}

impl HostSide {
    /// Creates the namespace, the tap and its addresses, opens the capture, starts two servers.
    pub fn new() -> Result<Self> {
        let net = Netns::new("vm")?;
        net.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        net.ip(&["addr", "add", &format!("{ROUTER_V4}/24"), "dev", TAP])?;
        net.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_V6}/64"),
            "dev",
            TAP,
            "nodad",
        ])?;
        net.ip(&["link", "set", TAP, "up"])?;
        for host in [
            TARGET_V4,
            ENDPOINT_V4,
            ENDPOINT2_V4,
            ENDPOINT3_V4,
            ENDPOINT4_V4,
            PUBLIC_DNS_V4,
        ] {
            net.ip(&["addr", "add", &format!("{host}/32"), "dev", "lo"])?;
        }
        net.ip(&["addr", "add", &format!("{TARGET_V6}/128"), "dev", "lo"])?;
        let capture = Capture::start_for_peer(&net, TAP, GUEST_MAC)
            .context("opening the capture on the tap")?;
        let client_key = KeyPair::generate()?;
        let mut servers = Vec::new();
        for n in 1..=2 {
            let server = Server::start_in(&net, n)?;
            server.allow_in(&net, &client_key.public)?;
            servers.push(server);
        }
        let endpoints = servers.iter().map(|s| s.endpoint).collect();
        let tunnel_addresses = servers.iter().map(|s| IpAddr::V4(s.client_ip)).collect();
        Ok(HostSide {
            net,
            capture,
            servers,
            client_key,
            endpoints,
            tunnel_addresses,
        })
    }

    /// The start of a window, now.
    pub fn mark(&self) -> Mark {
        Mark {
            frame: self.capture.len(),
            at: Instant::now(),
        }
    }

    /// Judges every frame from `from` to now.
    pub fn judge_since(&self, from: Mark) -> Judged {
        let facts = Facts {
            endpoints: &self.endpoints,
            tunnel_addresses: &self.tunnel_addresses,
            lan_allowed: false,
        };
        let mut judged = Judged::default();
        for captured in self.capture.frames().iter().skip(from.frame) {
            if captured.direction == Direction::Incoming {
                if self.sent_by_a_server(captured) {
                    judged.from_servers += 1;
                }
                continue;
            }
            judged.sent += 1;
            match judge(captured, &facts) {
                Some(Judgement::Tunnel) => judged.tunnel += 1,
                Some(Judgement::LinkBringUp | Judgement::Lan) => judged.link_bring_up += 1,
                Some(Judgement::Leak(what)) => {
                    judged.leaked += 1;
                    if judged.examples.len() < 5 {
                        let offset = captured.at.saturating_duration_since(from.at);
                        judged
                            .examples
                            .push(format!("+{:.2}s {what}", offset.as_secs_f64()));
                    }
                }
                None => {}
            }
        }
        judged
    }

    fn sent_by_a_server(&self, captured: &Captured) -> bool {
        matches!(&captured.frame, Frame::Ip(ip) if matches!(ip.transport, L4::Udp { sport, .. }
            if self.endpoints.iter().any(|e| e.ip() == ip.src && e.port() == sport)))
    }

    /// Waits until a VPN server's packet reaches the guest after `from`: the tunnel's handshake
    /// was answered.
    pub fn wait_for_server_reply(
        &self,
        from: Mark,
        timeout: std::time::Duration,
    ) -> Result<Instant> {
        let i = self.capture.wait_for(from.frame, timeout, |c| {
            c.direction == Direction::Incoming && self.sent_by_a_server(c)
        })?;
        Ok(self
            .capture
            .frames()
            .get(i)
            .map_or_else(Instant::now, |c| c.at))
    }

    /// Waits for a probe of the guest to reach the target directly (unprotected) after `from`.
    pub fn wait_for_direct_probe(&self, from: Mark, timeout: std::time::Duration) -> Result<()> {
        self.capture.wait_for(from.frame, timeout, |c| {
            c.direction == Direction::Outgoing
                && matches!(&c.frame, Frame::Ip(ip) if ip.dst == IpAddr::V4(TARGET_V4))
        })?;
        Ok(())
    }
}

/// Runs the whole VM lab: host side, guest, the chain; always returns a report.
pub fn run(options: &Options, image_cached: bool) -> report::VmReport {
    let start = Instant::now();
    let mut report = report::VmReport {
        guest: report::GuestInfo {
            image: std::fs::read_to_string(options.image.join("manifest"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            qemu: qemu_version(),
            accel: "tcg",
            image_cached,
        },
        previous_deb: options.previous_origin.clone(),
        scenarios: Vec::new(),
        timings: Vec::new(),
        artefacts: options.artefacts.display().to_string(),
        host_unchanged: true,
        passed: false,
        error: None,
        wall_ms: 0,
    };
    if let Err(e) = run_chain_on_a_guest(options, &mut report) {
        report.error = Some(format!("{e:#}"));
    }
    report.passed = report.error.is_none()
        && report.scenarios.len() == scenarios::CHAIN.len() + scenarios::NM_CHAIN.len()
        && report
            .scenarios
            .iter()
            .all(|s| s.verdict == crate::scenarios::Verdict::Pass);
    report.wall_ms = start.elapsed().as_millis() as u64;
    report
}

fn run_chain_on_a_guest(options: &Options, report: &mut report::VmReport) -> Result<()> {
    let share = options.artefacts.join("share");
    if share.exists() {
        std::fs::remove_dir_all(&share)?;
    }
    std::fs::create_dir_all(&share)?;
    std::fs::copy(&options.deb, share.join("killswitch.deb"))
        .with_context(|| format!("copying {}", options.deb.display()))?;
    std::fs::copy(&options.previous_deb, share.join("previous.deb"))
        .with_context(|| format!("copying {}", options.previous_deb.display()))?;
    let host = HostSide::new()?;
    for (i, server) in host.servers.iter().enumerate() {
        // Throw-away keys, but private keys all the same: readable by root only.
        let path = share.join(format!("s{}.conf", i + 1));
        std::fs::write(&path, server.client_config(&host.client_key))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    let spec = guest::GuestSpec {
        image: options.image.clone(),
        run_dir: options.artefacts.clone(),
        share: share.clone(),
        tap: TAP.to_owned(),
        mac: GUEST_MAC,
        append: "systemd.mask=NetworkManager.service".to_owned(),
    };
    if options.only_networkmanager {
        return networkmanager_guest(options, host, spec, share, report);
    }
    let guest = guest::Guest::start(&host.net, &spec)?;
    let mut ctx = scenarios::Ctx::new(host, guest, share.clone(), "guest A (networkd)")?;
    report.scenarios = scenarios::run_chain(
        &mut ctx,
        scenarios::CHAIN,
        options.progress,
        options.stop_after.as_deref(),
    );
    report.timings.append(&mut ctx.timings);
    let _ = ctx.guest.quit();
    if report
        .scenarios
        .last()
        .is_some_and(|s| Some(s.name) == options.stop_after.as_deref())
    {
        return Ok(());
    }

    let scenarios::Ctx { host, .. } = ctx;
    networkmanager_guest(options, host, spec, share, report)
}

/// The second guest: NetworkManager with DHCP from the lab's own server.
fn networkmanager_guest(
    options: &Options,
    host: HostSide,
    spec: guest::GuestSpec,
    share: PathBuf,
    report: &mut report::VmReport,
) -> Result<()> {
    let leases = tempfile::tempdir()?;
    crate::leftovers::register(leases.path());
    let mut dhcp = host.net.command("dnsmasq");
    dhcp.args([
        "--no-daemon".to_owned(),
        "--port=0".to_owned(),
        "--bind-interfaces".to_owned(),
        format!("--interface={TAP}"),
        "--dhcp-range=192.168.50.10,192.168.50.20,2m".to_owned(),
        format!("--dhcp-option=3,{ROUTER_V4}"),
        format!("--dhcp-option=6,{ROUTER_V4}"),
        format!(
            "--dhcp-leasefile={}",
            leases.path().join("leases").display()
        ),
        "--pid-file".to_owned(),
    ]);
    let _dhcp = crate::process::Process::spawn("dnsmasq", dhcp)?;
    let spec = guest::GuestSpec {
        run_dir: options.artefacts.join("nm"),
        // NetworkManager is disabled in the image (guest A must not run it): wanted here.
        append: "systemd.mask=systemd-networkd.service systemd.mask=systemd-networkd.socket systemd.wants=NetworkManager.service"
            .to_owned(),
        ..spec
    };
    let guest = guest::Guest::start(&host.net, &spec)?;
    let mut ctx = scenarios::Ctx::new(host, guest, share, "guest B (NetworkManager)")?;
    let mut nm = scenarios::run_chain(&mut ctx, scenarios::NM_CHAIN, options.progress, None);
    report.scenarios.append(&mut nm);
    report.timings.append(&mut ctx.timings);
    let _ = ctx.guest.quit();
    Ok(())
}

fn qemu_version() -> String {
    std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.replace("QEMU emulator version ", ""))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
