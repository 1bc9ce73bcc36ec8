//! README's quickstarts, run as a user types them: the lab proves that the three commands a newcomer
//! copies protect the machine, with the same capture oracle as every scenario.
//!
//! `quickstart-wg-quick` is the wg-quick path: the real `wg-quick up` (its userspace fallback,
//! wireguard-go, since this machine has no kernel WireGuard) on a configuration file in the
//! daemon's WireGuard directory, then `killswitch guard IFACE` with nothing else on the command line,
//! then `killswitch lockdown on`. The user then switches the VPN off and on with wg-quick, as they
//! would, and nothing may leak meanwhile.
//!
//! `quickstart-openvpn` is the OpenVPN path: the real `openvpn --config client.ovpn` (two `remote`
//! lines, a `mark`), `killswitch guard tun0 --ovpn client.ovpn --dns IP`, `lockdown on`; then the
//! OpenVPN process killed and started again.

use super::{Outcome, RESUMED};
use crate::daemon::Daemon;
use crate::generator::Kind;
use crate::lab::{EVENT_TIMEOUT, Lab, hold};
use crate::netns::Netns;
use crate::openvpn::{self, OpenVpn};
use crate::sinks::dns_query;
use crate::topology;
use crate::traffic;
use anyhow::{Context, Result};
use killswitch_types::State;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The traffic of the quickstart's tunnel (DNS is checked on its own: the generator's DNS goes to
/// the lab tunnel's resolver, which this tunnel does not use).
const KINDS: [Kind; 3] = [Kind::Udp4, Kind::Tcp4, Kind::Icmp4];

/// A tunnel that `wg-quick` manages in the client namespace, taken down (by wg-quick, as its user
/// would) when dropped, so that its wireguard-go goes with its interface.
struct WgQuick<'a> {
    ns: &'a Netns,
    /// The configuration file (its name, without `.conf`, is the interface's).
    config: PathBuf,
    /// A directory with the `resolvconf` stand-in, first on wg-quick's PATH.
    shim: tempfile::TempDir,
    up: bool,
}

impl<'a> WgQuick<'a> {
    fn new(ns: &'a Netns, config: PathBuf) -> Result<Self> {
        // wg-quick hands `DNS =` to resolvconf(8), which this machine lacks; the stand-in does what
        // resolvconf does, for the lab namespace's own resolv.conf only (an explicit path: never the
        // file of the namespace the lab runs in).
        let shim = tempfile::tempdir()?;
        crate::leftovers::register(shim.path());
        let resolv_conf = ns.resolv_conf_path();
        let script = shim.path().join("resolvconf");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# killswitch-lab: resolvconf's -a and -d for one namespace's file\n\
                 case \"$1\" in\n  -a) grep '^nameserver' > '{0}.new' && mv '{0}.new' '{0}' ;;\n  *) : ;;\nesac\n",
                resolv_conf.display()
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(WgQuick {
            ns,
            config,
            shim,
            up: false,
        })
    }

    /// Runs `wg-quick ACTION CONFIG` in the namespace; its output goes to a file (wireguard-go,
    /// which it starts, outlives it and must not hold a pipe of ours open).
    fn run(&mut self, action: &str) -> Result<()> {
        let log = self.shim.path().join(format!("wg-quick-{action}.log"));
        let out = std::fs::File::create(&log)?;
        let path = format!(
            "{}:{}",
            self.shim.path().display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let status = self
            .ns
            .command("wg-quick")
            .arg(action)
            .arg(&self.config)
            .env("PATH", path)
            .env("WG_QUICK_USERSPACE_IMPLEMENTATION", "wireguard-go")
            // Without LOG_LEVEL, the daemonised wireguard-go writes nowhere.
            .env_remove("LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("running wg-quick")?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow::ensure!(
            status.success(),
            "wg-quick {action} failed ({status}):\n{text}"
        );
        self.up = action == "up";
        Ok(())
    }
}

impl Drop for WgQuick<'_> {
    fn drop(&mut self) {
        if self.up {
            let _ = self.run("down");
        }
        crate::leftovers::forget(self.shim.path());
    }
}

/// `wg-quick up wg0; sudo killswitch guard wg0; sudo killswitch lockdown on`, then the VPN off and
/// on again with wg-quick.
pub(super) fn wg_quick(lab: &mut Lab) -> Result<Outcome> {
    lab.start_up_servers(1)?;
    let (server_endpoint, resolver, client_ip) = {
        let server = &lab.up_servers[0].0;
        (server.endpoint, server.tunnel_ip, server.client_ip)
    };
    // The configuration where wg-quick users keep it: the daemon's WireGuard directory
    // (`wireguard_dir`, /etc/wireguard on a real machine), named after the interface.
    let interface = lab.up_interface().replacen("ksup", "ksq", 1);
    let wireguard_dir = lab.home.path().join("wireguard");
    std::fs::create_dir_all(&wireguard_dir)?;
    std::fs::set_permissions(&wireguard_dir, std::fs::Permissions::from_mode(0o700))?;
    let config = wireguard_dir.join(format!("{interface}.conf"));
    std::fs::copy(&lab.up_servers[0].1, &config)?;
    restart_with_wireguard_dir(lab, &wireguard_dir)?;
    // wg-quick brings its own policy routing (the same rules the lab made for its tunnel, which
    // the kernel refuses to hold twice).
    let rules: [&[&str]; 2] = [
        &["not", "fwmark", "51820", "table", "51820"],
        &["table", "main", "suppress_prefixlength", "0"],
    ];
    for rule in rules {
        let mut args = vec!["-4", "rule", "del"];
        args.extend(rule);
        lab.topo.client.ip(&args)?;
    }

    let mut wg = WgQuick::new(&lab.topo.client, config)?;
    wg.run("up")?;
    let guard = lab.daemon()?.cli(&["guard", &interface])?.ok()?;
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    let status = lab
        .daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    // Measured from here: before `guard`, the machine was the user's to leak.
    let window = lab.begin(&KINDS)?;
    let started = Instant::now();
    let from_tunnel = |a: IpAddr| a == IpAddr::V4(client_ip);
    lab.servers
        .udp
        .wait_for(started, RESUMED, EVENT_TIMEOUT, from_tunnel)
        .context("traffic through the wg-quick tunnel")?;
    let dns_through = resolves_through(lab, resolver.into(), IpAddr::V4(client_ip))?;

    // The VPN off, as its user switches it off: everything must stop, nothing may leak.
    let (while_down, resumed) = down_and_back(lab, IpAddr::V4(client_ip), |up| {
        wg.run(if up { "up" } else { "down" })
    })?;
    let mut outcome = Outcome::new(lab.end(window)?);

    let tunnel = status.tunnel.as_ref();
    outcome.check(
        tunnel.is_some_and(|t| {
            t.interface.as_str() == interface
                && names_endpoint(t, server_endpoint)
                && t.dns == [IpAddr::V4(resolver)]
                && t.mark.is_some()
        }),
        format!(
            "`guard {interface}` alone found the endpoint {server_endpoint}, wg-quick's fwmark and DNS {resolver} ({})",
            guard.stdout.trim().replace('\n', "; ")
        ),
    );
    drop(wg);
    check_cycle(
        &mut outcome,
        IpAddr::V4(resolver),
        (dns_through, while_down, resumed),
        ("wg-quick had the VPN down", "`wg-quick up` again"),
    );
    Ok(outcome)
}

/// Whether the status's tunnel covers `endpoint` (as `IP:PORT/udp`).
fn names_endpoint(tunnel: &killswitch_types::TunnelStatus, endpoint: SocketAddr) -> bool {
    serde_json::to_string(tunnel).is_ok_and(|json| json.contains(&format!("\"{endpoint}/udp\"")))
}

/// `openvpn --config client.ovpn` (with `mark`), `killswitch guard tun0 --ovpn client.ovpn --dns
/// IP`, `lockdown on`; then the OpenVPN process killed and started again.
pub(super) fn openvpn(lab: &mut Lab) -> Result<Outcome> {
    let live = SocketAddr::new(topology::ENDPOINT4_V4.into(), 1194);
    let second = SocketAddr::new(topology::ENDPOINT3_V4.into(), 1194);
    let client_ip = IpAddr::V4(openvpn::CLIENT_TUNNEL_V4);
    let mut vpn = OpenVpn::start(&lab.topo.net, &[live, second])?;
    for remote in [live, second] {
        lab.other_tunnels.push((remote, client_ip));
    }
    let queries = lab.servers.dns_tunnel.clone();
    let resolver = IpAddr::V4(openvpn::SERVER_TUNNEL_V4);
    lab.servers.add_resolver(&lab.topo.net, resolver, queries)?;

    vpn.start_client(&lab.topo.client)?;
    let ovpn = vpn.client_config().display().to_string();
    let guard = lab
        .daemon()?
        .cli(&[
            "guard",
            "tun0",
            "--ovpn",
            &ovpn,
            "--dns",
            &resolver.to_string(),
        ])?
        .ok()?;
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    let status = lab
        .daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;

    let window = lab.begin(&KINDS)?;
    let started = Instant::now();
    let from_tunnel = |a: IpAddr| a == client_ip;
    lab.servers
        .udp
        .wait_for(started, RESUMED, EVENT_TIMEOUT, from_tunnel)
        .with_context(|| {
            format!(
                "traffic through the OpenVPN tunnel:\n{}\n{}",
                vpn.logs(),
                lab.diagnostics()
            )
        })?;
    let dns_through = resolves_through(lab, resolver, client_ip)?;

    let (while_down, resumed) = down_and_back(lab, client_ip, |up| {
        if up {
            vpn.start_client(&lab.topo.client)
        } else {
            vpn.kill_client()
        }
    })?;
    let mut outcome = Outcome::new(lab.end(window)?);

    outcome.check(
        status.tunnel.as_ref().is_some_and(|t| {
            names_endpoint(t, live)
                && names_endpoint(t, second)
                && t.mark.is_some_and(|m| m.get() == openvpn::MARK)
        }),
        format!(
            "`guard tun0 --ovpn` covered both `remote` lines ({live}, {second}) and the file's mark {:#x} ({})",
            openvpn::MARK,
            guard.stdout.trim().replace('\n', "; ")
        ),
    );
    drop(vpn);
    check_cycle(
        &mut outcome,
        resolver,
        (dns_through, while_down, resumed),
        ("OpenVPN was dead", "OpenVPN restarted"),
    );
    Ok(outcome)
}

/// The VPN taken down as its user does (`switch(false)`), then brought back (`switch(true)`): how many packets reached the target
/// while it was down (for 2 s after the daemon saw it go), and whether traffic from the tunnel's
/// `client_ip` resumed once it was back.
fn down_and_back(
    lab: &Lab,
    client_ip: IpAddr,
    mut switch: impl FnMut(bool) -> Result<()>,
) -> Result<(usize, bool)> {
    switch(false)?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let down_at = Instant::now();
    hold(Duration::from_secs(2));
    let while_down = lab.servers.udp.count_since(down_at, |_| true);
    let restarted = Instant::now();
    switch(true)?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let resumed = lab
        .servers
        .udp
        .wait_for(restarted, RESUMED, EVENT_TIMEOUT, |a| a == client_ip)
        .is_ok();
    Ok((while_down, resumed))
}

/// The checks both quickstarts share: DNS went through the tunnel; nothing arrived while the VPN
/// was down (`(while, after)` say how the user took it down and brought it back); traffic resumed.
fn check_cycle(
    outcome: &mut Outcome,
    resolver: IpAddr,
    (dns_through, while_down, resumed): (bool, usize, bool),
    (while_, after): (&str, &str),
) {
    outcome.check(
        dns_through,
        format!("DNS to the tunnel's resolver {resolver} went through the tunnel"),
    );
    outcome.check(
        while_down == 0,
        format!("nothing reached the target while {while_} ({while_down} arrivals)"),
    );
    outcome.check(
        resumed,
        format!("traffic resumed through the tunnel after {after}"),
    );
}

/// Sends one DNS query to `resolver` and says whether it arrived from `client_ip` (through the
/// tunnel) within 3 s.
fn resolves_through(lab: &Lab, resolver: IpAddr, client_ip: IpAddr) -> Result<bool> {
    let asked = Instant::now();
    let sent = lab.topo.client.run(|| {
        traffic::send_udp(
            SocketAddr::new(resolver, 53),
            &dns_query(7, "quickstart.killswitch.test"),
            None,
        )
    })?;
    Ok(sent.is_ok()
        && lab
            .servers
            .dns_tunnel
            .wait_for(asked, 1, Duration::from_secs(3), |a| a == client_ip)
            .is_ok())
}

/// Restarts the daemon with `wireguard_dir` pointing at `dir`.
fn restart_with_wireguard_dir(lab: &mut Lab, dir: &Path) -> Result<()> {
    std::fs::write(
        lab.home.config(),
        format!("wireguard_dir = \"{}\"\n", dir.display()),
    )
    .context("writing config.toml")?;
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().terminate(EVENT_TIMEOUT)?;
    }
    lab.daemon = Some(Daemon::start(&lab.topo.client, &lab.home)?);
    Ok(())
}
