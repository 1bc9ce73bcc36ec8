//! The seeds' user tests, automated: each scenario builds a fresh lab, scripts one situation in
//! which weak kill switches leak, measures, and checks. A leak (any frame on the physical link that
//! is neither the tunnel nor link bring-up) fails the scenario, as does a check that did not hold.

use crate::capture::Direction;
use crate::daemon::{Daemon, DaemonHome, early_boot, nft_table, nft_table_owned, teardown};
use crate::generator::Kind;
use crate::lab::{EVENT_TIMEOUT, Lab, Measurement, dns_managed, hold};
use crate::packet::{Arp, Frame};
use crate::topology::{self, LAN_IFACE, PHYS};
use crate::{traffic, wireguard};
use anyhow::{Context, Result};
use killswitch_types::State;
use killswitch_types::ipc::FlushProtection;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

mod apps_only;
mod bypass;
mod coexist;
mod coexist_firewalls;
mod container;
mod counters;
mod exec;
mod freeze_on_drop;
mod guard_discover;
mod quickstart;
mod reload;
mod router;
mod router_shadowing;
mod router_spoof;
mod tunnel_only_user;
mod verify;

/// A scenario: a name for `--scenario`, what it guards, and its script.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name, as `--scenario` takes it.
    pub name: &'static str,
    /// What it guards against, in one sentence.
    pub guards: &'static str,
    script: fn(&mut Lab) -> Result<Outcome>,
}

/// Every scenario, in the order the report lists them.
pub const ALL: [Scenario; 39] = [
    Scenario {
        name: "connect",
        guards: "nothing leaks before the tunnel is up; traffic flows through it once it is",
        script: connect,
    },
    Scenario {
        name: "kill-vpn",
        guards: "kill -9 of the VPN process mid-traffic leaks nothing; traffic resumes after reconnect",
        script: kill_vpn,
    },
    Scenario {
        name: "yank-network",
        guards: "the physical link down for 5 s, then a new address and gateway, leak nothing",
        script: yank_network,
    },
    Scenario {
        name: "sleep-wake",
        guards: "tunnel and daemon frozen while the link flaps: after wake, packets are tunnelled or blocked",
        script: sleep_wake,
    },
    Scenario {
        name: "kill-daemon",
        guards: "kill -9 of killswitchd (and the tunnel dying meanwhile) leaks nothing; a restart takes over",
        script: kill_daemon,
    },
    Scenario {
        name: "dns",
        guards: "DNS to the LAN resolver or a public resolver never leaves; the tunnel's resolver works",
        script: dns,
    },
    Scenario {
        name: "ipv6",
        guards: "IPv6 cannot go around an IPv4-only tunnel",
        script: ipv6,
    },
    Scenario {
        name: "disconnect",
        guards: "an explicit disconnect blocks under lockdown; without lockdown, traffic flowing is the user's choice",
        script: disconnect,
    },
    Scenario {
        name: "restart",
        guards: "stopping killswitchd (SIGTERM) and starting it again opens no window",
        script: restart,
    },
    Scenario {
        name: "up-failover",
        guards: "killswitch up: firewall first, then the tunnel; a dead server is noticed and the next one takes over, leaking nothing",
        script: up_failover,
    },
    Scenario {
        name: "up-dns",
        guards: "killswitch up points applications at the tunnel's resolver, keeps it there when another program rewrites resolv.conf, and gives the user's resolv.conf back after down and after a crash",
        script: up_dns,
    },
    Scenario {
        name: "arp",
        guards: "the LAN asking ARP who-has for the tunnel's address gets no answer: connected, after another program tried to delete the arp table, and while up retries a dead server (MLLVD-CR-24-03)",
        script: arp,
    },
    Scenario {
        name: "tamper",
        guards: "flushing, deleting or adding to our table: refused by the kernel (owned tables), or reverted at once where tables cannot be owned; the routing layer holds meanwhile",
        script: tamper,
    },
    Scenario {
        name: "flush-by-other-firewall",
        guards: "another program flushing the ruleset 20 times while unprivileged sockets bound to the physical interface send: 0 leaks (and, for comparison, what leaks where tables cannot be owned)",
        script: flush_by_other_firewall,
    },
    Scenario {
        name: "lockdown-after-off",
        guards: "`lockdown on` after `lockdown on; lockdown off; off` blocks at once and after a reboot; status shows only what is enforced",
        script: lockdown_after_off,
    },
    Scenario {
        name: "stop-after-up",
        guards: "SIGTERM ends the daemon within 1 s after `up` (connected, reconnecting, after down), rules in place, resolv.conf given back",
        script: stop_after_up,
    },
    Scenario {
        name: "reload",
        guards: "SIGHUP under traffic: a bad config.toml is refused with the running rules kept and the refusal in status; a good one (a new allowed subnet) applies at once; nothing leaks during either",
        script: reload::reload_under_traffic,
    },
    Scenario {
        name: "bypass",
        guards: "killswitch exec --bypass: the program and its children go around the tunnel (connected and blocked), nothing else does; a re-created cgroup is followed; nothing remains after it",
        script: bypass::bypass,
    },
    Scenario {
        name: "tunnel-only-user",
        guards: "a tunnel-only user's packets leave only through the tunnel, bound or ping sockets included, even while the machine is disconnected or off",
        script: tunnel_only_user::tunnel_only_user,
    },
    Scenario {
        name: "exec-fail-closed",
        guards: "a program under `killswitch exec` reaches the target only through the tunnel: 0 packets on the link and errors while it is down, its traffic back without a restart; nothing but the tunnel even while the machine is disconnected, when everything else reaches the target directly",
        script: exec::exec_fail_closed,
    },
    Scenario {
        name: "exec-openvpn",
        guards: "`killswitch exec` with `guard` over OpenVPN's tun: the program's traffic through the tunnel, none on the link while OpenVPN is dead, back without a restart",
        script: exec::exec_openvpn,
    },
    Scenario {
        name: "exec-unprivileged",
        guards: "uid 65534 runs `killswitch exec`: its output and exit status come back (127 for a missing program), nothing of the namespace remains after exit, 200 at once meet the per-user limit with a clear error",
        script: exec::exec_unprivileged,
    },
    Scenario {
        name: "apps-only",
        guards: "with apps-only on and a real `up` tunnel, the machine's own sender goes directly (by choice) while a tunnel-only user's packets leave only through the tunnel, and none reach the physical link after the tunnel is killed",
        script: apps_only::apps_only,
    },
    Scenario {
        name: "second-daemon",
        guards: "a second killswitchd (same or other state directory) refuses before touching the running one's rules, DNS or tunnel",
        script: second_daemon,
    },
    Scenario {
        name: "containers",
        guards: "a Docker-style bridge works locally in every state; its containers reach the world only through the tunnel",
        script: coexist::containers,
    },
    Scenario {
        name: "tailscale-like",
        guards: "an allowed interface (CGNAT overlay) works both ways, blocked or connected; nothing else leaves",
        script: coexist::tailscale_like,
    },
    Scenario {
        name: "ssh-inbound",
        guards: "SSH from the LAN works while blocked, no other port does, and a flow started in the tunnel cannot use the exception",
        script: coexist::ssh_inbound,
    },
    coexist_firewalls::FIREWALLD,
    coexist_firewalls::UFW,
    Scenario {
        name: "quickstart-wg-quick",
        guards: "README's wg-quick quickstart as typed (`wg-quick up`, `killswitch guard IFACE`, `lockdown on`) protects, and the VPN switched off with wg-quick leaks nothing",
        script: quickstart::wg_quick,
    },
    Scenario {
        name: "quickstart-openvpn",
        guards: "README's OpenVPN quickstart as typed (`openvpn --config`, `killswitch guard tun0 --ovpn`, `lockdown on`) covers every `remote` of the file, and OpenVPN killed leaks nothing",
        script: quickstart::openvpn,
    },
    verify::VERIFY,
    Scenario {
        name: "guard-discover",
        guards: "`guard IFACE` alone finds a WireGuard device's endpoint and fwmark (setting one it lacks) and protects as the explicit form; an .ovpn's two remotes are exactly the hole",
        script: guard_discover::guard_discover,
    },
    Scenario {
        name: "counters",
        guards: "each refusal is counted under its reason (non-tunnel, dns, ipv6, inbound), and `killswitch blocked` names the last refused destination and its sender's uid",
        script: counters::counters,
    },
    Scenario {
        name: "freeze-on-drop",
        guards: "programs in freeze_on_drop are frozen within 100 ms of the up tunnel's loss and send nothing until it is back, then are thawed; kill_on_drop's die; a program started meanwhile is frozen too",
        script: freeze_on_drop::freeze_on_drop,
    },
    Scenario {
        name: "router",
        guards: "router mode: a LAN client behind the router sends nothing on the WAN in clear (the WAN yanked, the tunnel killed, daemon and tunnel frozen, TunnelVision routes, a flow across a tunnel restart and across `up`'s change of server), its DNS to any resolver goes through the tunnel, its IPv6 never leaves, and it gets errors, not silence, while the tunnel is down",
        script: router::router,
    },
    Scenario {
        name: "router-shadowing",
        guards: "port shadowing (CVE-2021-3773): a LAN client sending from the router's WireGuard port to the server gets nothing onto the WAN and none of the server's replies, while the router's tunnel restarts on that port and handshakes",
        script: router_shadowing::router_shadowing,
    },
    Scenario {
        name: "router-spoof",
        guards: "a LAN client's spoofed sources (public, the router's WAN address, the tunnel's address, another private subnet) reach neither the WAN nor the tunnel, tunnel up or down; its genuine traffic works",
        script: router_spoof::router_spoof,
    },
    Scenario {
        name: "container-shared",
        guards: "the container image's entrypoint protects two application containers sharing its network namespace: their traffic only through the tunnel, 0 of their packets on the WAN while it is dead (without the entrypoint the capture sees them), back without a restart, still blocked after SIGTERM",
        script: container::container_shared,
    },
];

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<Scenario> {
    ALL.iter().copied().find(|s| s.name == name)
}

/// One check of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
}

/// What a script returns.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The protected window (leaks here fail the scenario).
    measurement: Measurement,
    /// A window in which the user chose to run unprotected (scenario `disconnect`).
    unprotected: Option<Measurement>,
    checks: Vec<Check>,
    notes: Vec<String>,
}

impl Outcome {
    fn new(measurement: Measurement) -> Self {
        let mut outcome = Outcome {
            measurement,
            ..Outcome::default()
        };
        let leaked = outcome.measurement.leaked;
        outcome.check(
            leaked == 0,
            format!("zero leaked packets on the physical link ({leaked} seen)"),
        );
        outcome
    }

    fn check(&mut self, passed: bool, what: impl Into<String>) {
        self.checks.push(Check {
            what: what.into(),
            passed,
        });
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// The verdict of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check held, nothing leaked.
    Pass,
    /// A check failed or something leaked.
    Fail,
    /// The lab itself failed (the scenario could not be run to the end).
    Error,
}

/// A scenario's result, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: &'static str,
    /// What it guards.
    pub guards: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// The protected window.
    pub measurement: Measurement,
    /// A window without protection by the user's choice, if the scenario has one.
    pub unprotected: Option<Measurement>,
    /// Every check and whether it held.
    pub checks: Vec<Check>,
    /// Observations (timings, explanations).
    pub notes: Vec<String>,
    /// Why the lab could not finish, if it could not.
    pub error: Option<String>,
    /// Wall time, including building and tearing down the lab.
    pub wall_ms: u64,
}

/// Runs `scenario` in a fresh lab at `rate` packets/s.
pub fn run(scenario: Scenario, rate: u32) -> ScenarioReport {
    let start = Instant::now();
    let result = Lab::new(scenario.name, rate).and_then(|mut lab| {
        let outcome = (scenario.script)(&mut lab);
        if outcome.is_err() {
            // Keep the daemon's log with the error: it usually says what went wrong.
            if let Some(daemon) = &lab.daemon {
                return outcome.with_context(|| format!("daemon log:\n{}", daemon.log()));
            }
        }
        outcome
    });
    let wall_ms = start.elapsed().as_millis() as u64;
    match result {
        Ok(outcome) => ScenarioReport {
            name: scenario.name,
            guards: scenario.guards,
            verdict: if outcome.checks.iter().all(|c| c.passed) {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            measurement: outcome.measurement,
            unprotected: outcome.unprotected,
            checks: outcome.checks,
            notes: outcome.notes,
            error: None,
            wall_ms,
        },
        Err(e) => ScenarioReport {
            name: scenario.name,
            guards: scenario.guards,
            verdict: Verdict::Error,
            measurement: Measurement::default(),
            unprotected: None,
            checks: Vec::new(),
            notes: Vec::new(),
            error: Some(format!("{e:#}")),
            wall_ms,
        },
    }
}

/// The traffic of an IPv4 tunnel: what should flow once connected.
const TUNNEL_KINDS: [Kind; 4] = [Kind::Udp4, Kind::Tcp4, Kind::Icmp4, Kind::DnsTunnel];
/// How much traffic "resumed" needs to see.
const RESUMED: usize = 20;

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn connect(lab: &mut Lab) -> Result<Outcome> {
    lab.guard()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let start = Instant::now();
    let window = lab.begin(&Kind::ALL)?;
    hold(Duration::from_secs(1));
    let vpn_started = Instant::now();
    let before_tunnel = lab.arrivals_since(start);
    lab.start_vpn()?;
    lab.wait_for_tunnel_traffic(vpn_started, RESUMED)?;
    let first = lab
        .servers
        .udp
        .all()
        .into_iter()
        .find(|a| a.at >= vpn_started)
        .map(|a| a.at - vpn_started);
    hold(Duration::from_secs(1));
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        before_tunnel == 0,
        format!("nothing reached the target before the tunnel was up ({before_tunnel} arrivals)"),
    );
    outcome.check(
        outcome.measurement.through_tunnel > 0,
        "traffic flows through the tunnel once it is up",
    );
    outcome.check(
        outcome.measurement.refused > 0,
        "before the tunnel, sends were refused at once (fail fast)",
    );
    if let Some(first) = first {
        outcome.note(format!(
            "first packet through the tunnel {} ms after the VPN process started",
            ms(first)
        ));
    }
    Ok(outcome)
}

fn kill_vpn(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_secs(1));
    let killed = Instant::now();
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let noticed = killed.elapsed();
    hold(Duration::from_secs(2));
    let restarted = Instant::now();
    lab.start_vpn()?;
    lab.wait_for_tunnel_traffic(restarted, RESUMED)?;
    let resumed = restarted.elapsed();
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        lab.tunnel_arrivals_since(restarted) > 0,
        "traffic resumed through the tunnel after reconnecting",
    );
    outcome.note(format!(
        "the daemon saw the tunnel vanish after {} ms; the firewall needed no change to block",
        ms(noticed)
    ));
    outcome.note(format!(
        "traffic resumed {} ms after the VPN process was restarted",
        ms(resumed)
    ));
    Ok(outcome)
}

fn yank_network(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_secs(1));
    lab.link_down()?;
    hold(Duration::from_secs(5));
    let up = Instant::now();
    lab.link_up(topology::ROUTER_V4.into())?;
    lab.wait_for_tunnel_traffic(up, RESUMED)?;
    let resumed_after_up = up.elapsed();

    // A new network: another address and gateway, as after roaming to another Wi-Fi.
    let (new_router, new_client) = (
        Ipv4Addr::new(192, 168, 60, 1),
        Ipv4Addr::new(192, 168, 60, 2),
    );
    lab.topo
        .net
        .ip(&["addr", "add", &format!("{new_router}/24"), "dev", LAN_IFACE])?;
    let moved = Instant::now();
    lab.topo.client.ip(&["-4", "addr", "flush", "dev", PHYS])?;
    lab.topo
        .client
        .ip(&["addr", "add", &format!("{new_client}/24"), "dev", PHYS])?;
    lab.topo.client.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &new_router.to_string(),
    ])?;
    lab.tunnel.reannounce_endpoint(&lab.topo)?;
    lab.wait_for_tunnel_traffic(moved, RESUMED)?;
    let resumed_after_move = moved.elapsed();
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        lab.tunnel_arrivals_since(up) > 0,
        "traffic resumed through the tunnel after the link came back",
    );
    outcome.check(
        lab.tunnel_arrivals_since(moved) > 0,
        "traffic resumed through the tunnel on the new network",
    );
    outcome.note(format!(
        "link down 5 s; tunnel traffic again {} ms after link up",
        ms(resumed_after_up)
    ));
    outcome.note(format!(
        "new address {new_client} via {new_router}; the VPN client re-set its endpoint (wireguard-go keeps a stale \
         source address otherwise); tunnel traffic again after {} ms",
        ms(resumed_after_move)
    ));
    Ok(outcome)
}

fn sleep_wake(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_secs(1));
    let freeze = [Signal::SIGSTOP, Signal::SIGCONT];
    let vpn_pid = lab
        .tunnel
        .client
        .as_mut()
        .context("no VPN process")?
        .process()
        .pid();
    let daemon_pid = lab.daemon.as_mut().context("no daemon")?.process().pid();
    let signal =
        |pid: u32, signal| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    for pid in [vpn_pid, daemon_pid] {
        signal(pid, freeze[0])?;
    }
    // "Asleep": nothing runs in user space that could react; the link flaps underneath.
    lab.link_down()?;
    hold(Duration::from_secs(1));
    lab.link_up(topology::ROUTER_V4.into())?;
    hold(Duration::from_secs(2));
    let woke = Instant::now();
    for pid in [daemon_pid, vpn_pid] {
        signal(pid, freeze[1])?;
    }
    lab.wait_for_tunnel_traffic(woke, RESUMED)?;
    let resumed = woke.elapsed();
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        lab.tunnel_arrivals_since(woke) > 0,
        "traffic resumed through the tunnel after wake",
    );
    outcome.note(format!(
        "frozen 3 s (link down 1 s of it); tunnel traffic again {} ms after wake",
        ms(resumed)
    ));
    Ok(outcome)
}

fn kill_daemon(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let table_before =
        nft_table(&lab.topo.client)?.context("connected, so the table is installed")?;
    let owned_before = nft_table_owned(&lab.topo.client)?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_secs(1));
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().kill()?;
    }
    let dead = Instant::now();
    let table_after_kill = nft_table(&lab.topo.client)?;
    let owned_after_kill = nft_table_owned(&lab.topo.client)?;
    hold(Duration::from_millis(500));
    let flowed_while_dead = lab.tunnel_arrivals_since(dead);
    // The tunnel dies too while no daemon watches: only the kernel's rules stand.
    lab.tunnel.kill_client()?;
    hold(Duration::from_secs(1));
    let restarted = Instant::now();
    let daemon = Daemon::start(&lab.topo.client, &lab.home)?;
    let adopted = daemon.status()?;
    let owned_again = nft_table_owned(&lab.topo.client)?;
    lab.daemon = Some(daemon);
    lab.start_vpn()?;
    lab.wait_for_tunnel_traffic(restarted, RESUMED)?;
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        table_after_kill.as_deref() == Some(table_before.as_str()),
        "the rules stayed in the kernel, unchanged, after kill -9",
    );
    outcome.check(
        owned_before == Some(true) && owned_after_kill == Some(false) && owned_again == Some(true),
        format!(
            "the table was the daemon's own, an orphan after kill -9, and adopted by the new daemon in the transaction that replaced it (owned: {owned_before:?}, {owned_after_kill:?}, {owned_again:?})"
        ),
    );
    outcome.check(
        flowed_while_dead > 0,
        format!("the tunnel kept working with the daemon dead ({flowed_while_dead} arrivals)"),
    );
    outcome.check(
        adopted.state == State::Connecting && adopted.firewall.installed,
        format!("the restarted daemon took over in state {}", adopted.state),
    );
    outcome.check(
        lab.tunnel_arrivals_since(restarted) > 0,
        "traffic resumed after the daemon and the tunnel were restarted",
    );
    Ok(outcome)
}

fn dns(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let start = Instant::now();
    let window = lab.begin(&[Kind::DnsTunnel, Kind::DnsLan, Kind::DnsPublic, Kind::Udp4])?;
    hold(Duration::from_secs(1));
    // allow-lan opens the LAN, but never DNS on it.
    lab.allow_lan(true)?;
    hold(Duration::from_secs(1));
    // Programs that bypass the tunnel's routes and ask resolvers over the physical link directly.
    let direct: Vec<SocketAddr> = [topology::ROUTER_V4, topology::PUBLIC_DNS_V4]
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(*ip), 53))
        .collect();
    let refused_direct = lab.topo.client.run(|| {
        (0..50u16)
            .flat_map(|i| direct.iter().map(move |d| (i, *d)))
            .filter(|(i, d)| {
                let query = crate::sinks::dns_query(*i, "bypass.example");
                traffic::send_udp_via(PHYS, *d, &query, None)
                    .is_err_and(|e| traffic::is_local_rejection(&e))
            })
            .count()
    })?;
    let mut outcome = Outcome::new(lab.end(window)?);
    let s = &lab.servers;
    let tunnel_answered = s.dns_tunnel.count_since(start, |_| true);
    let lan = s.dns_lan.count_since(start, |_| true);
    let public = s.dns_public.count_since(start, |_| true);
    outcome.check(
        tunnel_answered > 0,
        format!("the tunnel's resolver got the tunnel's queries ({tunnel_answered})"),
    );
    outcome.check(
        lan == 0,
        format!("the LAN resolver got no query, allow-lan or not ({lan})"),
    );
    outcome.check(
        public == 0,
        format!("the public resolver got no query, through the tunnel or not ({public})"),
    );
    outcome.check(refused_direct == 100, format!("queries sent out of the physical interface directly were refused ({refused_direct} of 100)"));
    Ok(outcome)
}

fn ipv6(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let start = Instant::now();
    let window = lab.begin(&[Kind::Udp6, Kind::Tcp6, Kind::Udp4])?;
    hold(Duration::from_secs(2));
    let mut outcome = Outcome::new(lab.end(window)?);
    let v6_arrivals = lab.servers.udp.count_since(start, |ip| ip.is_ipv6())
        + lab.servers.tcp.count_since(start, |ip| ip.is_ipv6());
    outcome.check(
        v6_arrivals == 0,
        format!("no IPv6 packet reached the target ({v6_arrivals})"),
    );
    let v6 = [Kind::Udp6, Kind::Tcp6]
        .iter()
        .filter_map(|k| outcome.measurement.per_kind.get(k))
        .fold((0, 0), |acc, c| (acc.0 + c.offered, acc.1 + c.refused));
    outcome.check(
        v6.0 > 0 && v6.0 == v6.1,
        format!(
            "every IPv6 attempt was refused at once ({} of {})",
            v6.1, v6.0
        ),
    );
    outcome.check(
        lab.servers.udp.count_since(start, |ip| ip.is_ipv4()) > 0,
        "IPv4 kept flowing through the tunnel meanwhile",
    );
    Ok(outcome)
}

fn disconnect(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(500));
    // The user disconnects: the VPN goes away and the kill switch is told so.
    lab.tunnel.kill_client()?;
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Blocked, EVENT_TIMEOUT)?;
    let down = Instant::now();
    hold(Duration::from_millis(1500));
    let mut outcome = Outcome::new(lab.end(window)?);
    let after_down = lab.arrivals_since(down);
    outcome.check(
        after_down == 0,
        format!("with lockdown on, nothing got out after `down` ({after_down})"),
    );

    // Lockdown off: the user chose to be unprotected while disconnected.
    lab.daemon()?.cli(&["lockdown", "off"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Disconnected, EVENT_TIMEOUT)?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(1500));
    let unprotected = lab.end(window)?;
    outcome.check(
        unprotected.direct > 0,
        format!(
            "with lockdown off, traffic flows directly ({} arrivals)",
            unprotected.direct
        ),
    );
    outcome.note(format!(
        "lockdown off + `down`: {} packets left by the physical link, by the user's choice, not counted as leaks",
        unprotected.leaked
    ));
    outcome.unprotected = Some(unprotected);
    Ok(outcome)
}

fn restart(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let table_before =
        nft_table(&lab.topo.client)?.context("connected, so the table is installed")?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_secs(1));
    let mut daemon = lab.daemon.take().context("no daemon")?;
    let stopped = Instant::now();
    let exit = daemon.process().terminate(EVENT_TIMEOUT)?;
    let down_for = Instant::now();
    let table_while_stopped = nft_table(&lab.topo.client)?;
    hold(Duration::from_millis(500));
    let flowed_while_stopped = lab.tunnel_arrivals_since(down_for);
    let starting = Instant::now();
    lab.daemon = Some(Daemon::start(&lab.topo.client, &lab.home)?);
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let restarted = starting.elapsed();
    let stopping = down_for - stopped;
    hold(Duration::from_secs(1));
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        exit.success(),
        format!("the daemon stopped cleanly on SIGTERM ({exit})"),
    );
    outcome.check(
        table_while_stopped.as_deref() == Some(table_before.as_str()),
        "the rules stayed in place, unchanged, while the daemon was stopped",
    );
    outcome.check(
        flowed_while_stopped > 0,
        format!(
            "the tunnel kept working while the daemon was stopped ({flowed_while_stopped} arrivals)"
        ),
    );
    let table_after = nft_table(&lab.topo.client)?;
    outcome.check(
        table_after.as_deref() == Some(table_before.as_str()),
        "the restarted daemon installed the same rules",
    );
    outcome.note(format!(
        "SIGTERM to exit: {} ms; start to ready and connected again: {} ms (stopped for 500 ms in between)",
        ms(stopping),
        ms(restarted)
    ));
    Ok(outcome)
}

/// What the client's physical link showed when the router asked ARP about one address.
struct ArpAsked {
    /// The question reached the client.
    arrived: bool,
    /// The client's ARP messages naming the asked-about address as sender, described.
    disclosures: Vec<String>,
    /// How long the client took to answer about its own LAN address, if it did.
    sentinel_answered: Option<Duration>,
}

/// The router asks "who has `question`?" and then the same about the client's LAN address, sent
/// in order from one CPU: once the second is answered, whatever the client would say to the first
/// has been said.
fn ask_arp(lab: &Lab, question: Ipv4Addr) -> Result<ArpAsked> {
    let from = lab.capture.len();
    let asked = Instant::now();
    lab.topo.net.run(|| {
        traffic::send_arp_requests(
            LAN_IFACE,
            topology::ROUTER_V4,
            &[question, topology::CLIENT_V4],
        )
    })??;
    let is_reply_from = |c: &crate::capture::Captured, ip| {
        c.direction == Direction::Outgoing
            && matches!(&c.frame, Frame::Arp(a) if a.operation == Arp::REPLY && a.sender_ip == ip)
    };
    let answered = lab
        .capture
        .wait_for(from, EVENT_TIMEOUT, |c| {
            is_reply_from(c, topology::CLIENT_V4)
        })
        .ok();
    let took = asked.elapsed();
    let frames = lab.capture.frames();
    let seen = match answered {
        Some(at) => &frames[from..=at],
        None => &frames[from..],
    };
    Ok(ArpAsked {
        arrived: seen.iter().any(|c| {
            c.direction == Direction::Incoming
                && matches!(&c.frame, Frame::Arp(a) if a.operation == Arp::REQUEST && a.target_ip == question)
        }),
        disclosures: seen
            .iter()
            .filter(|c| c.direction == Direction::Outgoing)
            .filter_map(|c| match &c.frame {
                Frame::Arp(a) if a.sender_ip == question => Some(a.to_string()),
                _ => None,
            })
            .collect(),
        sentinel_answered: answered.map(|_| took),
    })
}

/// MLLVD-CR-24-03: Linux answers ARP for any of its addresses on any interface, so a host on the
/// LAN that asks "who has 10.64.0.2?" would learn that this machine is the tunnel's end, and its
/// physical MAC. Connected through the lab's tunnel, the router asks exactly that on the LAN;
/// then again after another program tried to delete table `arp killswitch`.
fn arp(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    let tunnel_ip = wireguard::CLIENT_TUNNEL_V4;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(500));
    let first = ask_arp(lab, tunnel_ip)?;

    // Another program deletes table arp killswitch: the kernel refuses (the table is the
    // daemon's own), or, where tables cannot be owned, the daemon restores it.
    let arp_table = |lab: &Lab| {
        lab.topo
            .client
            .exec("nft", &["list", "table", "arp", "killswitch"])
            .ok()
    };
    let before = arp_table(lab);
    let deleting = lab
        .topo
        .client
        .command("nft")
        .args(["delete", "table", "arp", "killswitch"])
        .output()?;
    let deleted = Instant::now();
    let deletion = if deleting.status.success() {
        let restored = lab
            .daemon()?
            .wait_for("the arp table restored", EVENT_TIMEOUT, |s| {
                s.firewall.tamper_events > 0 && s.firewall.installed
            })?;
        let detail = restored.firewall.last_tamper.unwrap_or_default();
        (
            detail.contains("arp"),
            format!(
                "deleting table arp killswitch was noticed and reverted in {} ms ({detail})",
                ms(deleted.elapsed())
            ),
        )
    } else {
        (
            before.is_some() && arp_table(lab) == before,
            format!(
                "deleting table arp killswitch was refused by the kernel ({}); the table is unchanged",
                String::from_utf8_lossy(&deleting.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
        )
    };
    let second = ask_arp(lab, tunnel_ip)?;
    hold(Duration::from_millis(500));

    // `killswitch up` with its server dead: the device holds the server's address from the first
    // attempt on, while the daemon keeps retrying (`connecting`).
    lab.start_up_servers(1)?;
    let up_ip = lab.up_servers[0].0.client_ip;
    lab.up_servers[0].0.process().kill()?;
    lab.up()?;
    lab.daemon()?
        .wait_for("the first attempt of up", EVENT_TIMEOUT, |s| {
            s.state == State::Connecting
                && s.tunnel
                    .as_ref()
                    .and_then(|t| t.managed.as_ref())
                    .is_some_and(|m| m.attempt >= 1)
        })?;
    let third = ask_arp(lab, up_ip)?;

    let mut outcome = Outcome::new(lab.end(window)?);
    for (when, asked, tunnel_ip) in [
        ("connected", &first, tunnel_ip),
        (
            "after the attempt to delete the arp table",
            &second,
            tunnel_ip,
        ),
        ("while up retries a dead server", &third, up_ip),
    ] {
        outcome.check(
            asked.arrived,
            format!("{when}: the router asked who has {tunnel_ip} on the LAN, and the question reached the client"),
        );
        outcome.check(
            asked.disclosures.is_empty(),
            format!(
                "{when}: no ARP reply disclosed the tunnel address {tunnel_ip} on the physical link ({} seen{})",
                asked.disclosures.len(),
                asked
                    .disclosures
                    .first()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        );
        outcome.check(
            asked.sentinel_answered.is_some(),
            format!(
                "{when}: the same question about the client's LAN address {} was answered (so an answer would have been seen)",
                topology::CLIENT_V4
            ),
        );
    }
    outcome.check(deletion.0, deletion.1);
    outcome.check(
        outcome.measurement.through_tunnel > 0,
        "traffic flowed through the tunnel while it was up",
    );
    if let Some(took) = first.sentinel_answered {
        outcome.note(format!(
            "the client answered for {} {} ms after the questions were sent; for {tunnel_ip}, {}",
            topology::CLIENT_V4,
            ms(took),
            if first.disclosures.is_empty() {
                "not at all"
            } else {
                "too"
            }
        ));
    }
    Ok(outcome)
}

/// What other programs try on our tables: a firewall service's reload, a script, a mistake.
const ATTACKS: [(&str, &[&str]); 4] = [
    ("nft flush ruleset", &["flush", "ruleset"]),
    (
        "nft delete table inet killswitch",
        &["delete", "table", "inet", "killswitch"],
    ),
    (
        "a foreign accept rule in our output chain",
        &["insert", "rule", "inet", "killswitch", "output", "accept"],
    ),
    (
        "nft flush chain inet killswitch output",
        &["flush", "chain", "inet", "killswitch", "output"],
    ),
];

fn tamper(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    // The tunnel is down during the tampering: if the rules went, packets would go straight out
    // of the physical interface.
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let owned = lab.daemon()?.status()?.firewall.flush_protection;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(500));

    // Owned tables (this kernel): the kernel refuses each change, or skips our tables.
    let table = nft_table(&lab.topo.client)?;
    let mut refused = Vec::new();
    for (what, args) in ATTACKS {
        let ran = lab.topo.client.command("nft").args(args).output()?;
        let said = String::from_utf8_lossy(&ran.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        refused.push((
            what,
            ran.status.success(),
            said,
            nft_table(&lab.topo.client)? == table,
        ));
    }
    let after_owned = lab.daemon()?.status()?;

    // A kernel without `persist`, where the tables cannot be owned: restore-only.
    lab.restart_daemon_unowned()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let mut restored = Vec::new();
    for (n, (what, args)) in ATTACKS.iter().enumerate() {
        lab.topo.client.exec("nft", args)?;
        let done = Instant::now();
        let status =
            lab.daemon()?
                .wait_for(&format!("the restore after {what}"), EVENT_TIMEOUT, |s| {
                    s.firewall.tamper_events > n as u64
                })?;
        restored.push((
            what,
            done.elapsed(),
            status.firewall.last_tamper.unwrap_or_default(),
        ));
        hold(Duration::from_millis(300));
    }
    // Now with no daemon to restore anything: the routing layer alone, against a flushed ruleset
    // and a route that points the target at the physical gateway.
    let daemon_pid = nix::unistd::Pid::from_raw(
        lab.daemon.as_mut().context("no daemon")?.process().pid() as i32,
    );
    nix::sys::signal::kill(daemon_pid, Signal::SIGSTOP)?;
    lab.topo.client.exec("nft", &["flush", "ruleset"])?;
    lab.topo.push_physical_route("203.0.113.0/24")?;
    let frozen = Instant::now();
    hold(Duration::from_secs(1));
    let got_out = lab.arrivals_since(frozen);
    nix::sys::signal::kill(daemon_pid, Signal::SIGCONT)?;
    let status = lab
        .daemon()?
        .wait_for("the restore after the freeze", EVENT_TIMEOUT, |s| {
            s.firewall.tamper_events > ATTACKS.len() as u64
        })?;
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        owned == Some(FlushProtection::Kernel),
        format!(
            "this kernel lets the daemon own its tables (flush protection: {})",
            owned.map_or("unknown".to_owned(), |p| p.to_string())
        ),
    );
    for (what, succeeded, said, unchanged) in &refused {
        outcome.check(
            *unchanged,
            format!(
                "owned: {what}: {}; the table is byte-identical",
                if *succeeded {
                    "ran, and skipped our tables".to_owned()
                } else {
                    format!("refused ({said})")
                }
            ),
        );
    }
    outcome.check(
        after_owned.firewall.tamper_events == 0,
        format!(
            "owned: nothing to restore ({} tamper events)",
            after_owned.firewall.tamper_events
        ),
    );
    for (what, took, detail) in &restored {
        outcome.check(
            !detail.is_empty(),
            format!(
                "restore-only: {what}: detected and reverted, {} ms after nft exited ({detail})",
                ms(*took)
            ),
        );
    }
    outcome.check(
        got_out == 0,
        format!(
            "with no nftables rules and no daemon, the routing layer let nothing out ({got_out})"
        ),
    );
    outcome.check(
        status.firewall.installed && status.firewall.routing,
        "both layers are back after the daemon woke",
    );
    outcome.note(
        "restore-only is how a kernel before 6.9 (no nf_tables persist) runs; forced here with killswitchd --test-unowned-tables",
    );
    outcome
        .note("restore times include the status event reaching the lab over the daemon's socket");
    Ok(outcome)
}

fn up_dns(lab: &mut Lab) -> Result<Outcome> {
    lab.start_up_servers(1)?;
    let resolver = lab.up_servers[0].0.tunnel_ip;
    let client_ip = lab.up_servers[0].0.client_ip;
    let path = lab.topo.client.resolv_conf_path();
    let original = lab.resolv_conf();
    // Under lockdown, `down` blocks: the whole scenario is one protected window.
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    let window = lab.begin(&[Kind::Udp4])?;

    let status = lab.up_with_dns()?;
    let while_up = lab.resolv_conf();
    // An application resolving a name reads the namespace's /etc/resolv.conf (glibc, getaddrinfo).
    let asked = Instant::now();
    let lookup = lab
        .topo
        .client
        .exec("getent", &["ahostsv4", "lookup.killswitch.test"]);
    let answered_by_tunnel = lab
        .servers
        .dns_tunnel
        .count_since(asked, |a| a == IpAddr::V4(client_ip));

    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.wait_for_dns_given_back()?;
    let after_down = lab.resolv_conf();

    lab.up_with_dns()?;
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().kill()?;
    }
    let after_crash = lab.resolv_conf();
    let daemon = Daemon::start(&lab.topo.client, &lab.home)?;
    lab.daemon = Some(daemon);
    lab.daemon()?
        .wait_for("reconnected after the restart", EVENT_TIMEOUT, dns_managed)?;
    let recovered = lab.daemon()?.log().contains("did not stop cleanly");
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.wait_for_dns_given_back()?;
    let at_the_end = lab.resolv_conf();

    // Connected again; a DHCP client on a new network rewrites the file in place (the only way
    // onto this bind mount), naming the LAN's resolver, which the firewall blocks.
    lab.up_with_dns()?;
    let dhcp = format!("search corp.example\nnameserver {}\n", topology::ROUTER_V4);
    let rewritten_at = Instant::now();
    std::fs::write(&path, &dhcp)?;
    let undone = lab.daemon()?.wait_for(
        "the rewrite by another program undone",
        EVENT_TIMEOUT,
        |s| s.dns.as_ref().is_some_and(|d| d.rewrites >= 1),
    )?;
    let undone_in = rewritten_at.elapsed();
    let after_rewrite = lab.resolv_conf();
    let shown = lab.daemon()?.cli(&["status"])?.ok()?.stdout;
    let asked = Instant::now();
    let lookup_after = lab
        .topo
        .client
        .exec("getent", &["ahostsv4", "lookup.killswitch.test"]);
    let answered_after = lab
        .servers
        .dns_tunnel
        .count_since(asked, |a| a == IpAddr::V4(client_ip));
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.wait_for_dns_given_back()?;
    let after_rewrite_and_down = lab.resolv_conf();

    let mut outcome = Outcome::new(lab.end(window)?);
    let dns = status.dns.unwrap_or_default();
    outcome.check(
        dns.servers == [IpAddr::V4(resolver)]
            && while_up.contains(&format!("nameserver {resolver}\n"))
            && !while_up.contains("nameserver 192.168.50.1"),
        format!(
            "while up, resolv.conf names only the tunnel's resolver {resolver} (via {})",
            dns.via
        ),
    );
    outcome.check(
        lookup.as_ref().is_ok_and(|out| out.contains(&topology::TARGET_V4.to_string())) && answered_by_tunnel > 0,
        format!("getaddrinfo asked the tunnel's resolver and got its answer ({answered_by_tunnel} queries; {})", match &lookup {
            Ok(out) => out.lines().next().unwrap_or("no output").to_owned(),
            Err(e) => format!("{e:#}"),
        }),
    );
    outcome.check(
        after_down == original,
        "after down, the original resolv.conf is back, byte for byte",
    );
    outcome.check(
        after_crash.contains(&format!("nameserver {resolver}")),
        "kill -9 left the tunnel's resolv.conf in place (nothing could restore it yet)",
    );
    outcome.check(
        recovered,
        "the restarted daemon restored the file left behind by the crash",
    );
    outcome.check(
        at_the_end == original,
        "after the restart and down, the original resolv.conf is back",
    );
    let rewrite_line = shown
        .lines()
        .find(|l| l.starts_with("rewritten:"))
        .unwrap_or("no `rewritten:` line in status")
        .to_owned();
    outcome.check(
        after_rewrite.contains(&format!("nameserver {resolver}\n"))
            && !after_rewrite.contains(&topology::ROUTER_V4.to_string())
            && undone.dns.as_ref().is_some_and(|d| d.rewrites == 1 && d.error.is_none())
            && rewrite_line.contains("once by another program"),
        format!(
            "a DHCP client's in-place rewrite (naming the LAN resolver) was undone {} ms after it; status: {rewrite_line}",
            ms(undone_in)
        ),
    );
    outcome.check(
        lookup_after
            .as_ref()
            .is_ok_and(|out| out.contains(&topology::TARGET_V4.to_string()))
            && answered_after > 0,
        format!("after the rewrite, getaddrinfo still asked the tunnel's resolver ({answered_after} queries)"),
    );
    outcome.check(
        after_rewrite_and_down == dhcp,
        "after down, the DHCP client's newer resolv.conf is the one given back, not the older original",
    );
    outcome.note("/etc/resolv.conf is a bind mount here (ip netns exec), written in place; backup in the state directory; rewrites by others are noticed with inotify");
    Ok(outcome)
}

/// The daemon's default health bound (`dead_after_seconds`), which the lab does not change.
const DEAD_AFTER: Duration = Duration::from_secs(3);

/// What `killswitch up` took to connect: how long, and with which backend.
#[derive(Debug, Clone)]
pub struct UpConnected {
    /// From `killswitch up` to the state `connected`.
    pub took: Duration,
    /// The WireGuard backend the daemon chose.
    pub backend: String,
}

/// Starts two `up` servers and connects to the first, until traffic flows through it.
pub fn connect_up(lab: &mut Lab) -> Result<UpConnected> {
    lab.start_up_servers(2)?;
    let first = lab.up_servers[0].0.client_ip;
    let asked = Instant::now();
    lab.up()?;
    let status = lab
        .daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let took = asked.elapsed();
    let backend = status
        .tunnel
        .and_then(|t| t.managed)
        .and_then(|m| m.backend)
        .unwrap_or_default();
    lab.wait_for_traffic_from(Instant::now(), 1, move |a| a == IpAddr::V4(first))?;
    Ok(UpConnected { took, backend })
}

/// One failover, timed: the active server killed, the daemon noticing, the next one connected.
#[derive(Debug, Clone)]
pub struct Failover {
    /// When the server was killed.
    pub killed: Instant,
    /// From the kill to the daemon leaving `connected`.
    pub detected: Duration,
    /// From the kill to `connected` on the second server.
    pub failed_over: Duration,
    /// The status when the daemon noticed.
    pub lost: killswitch_types::ipc::Status,
    /// The status once connected again.
    pub back: killswitch_types::ipc::Status,
}

/// Kills the first `up` server (connected by [`connect_up`]) and times the failover.
pub fn kill_first_server(lab: &mut Lab) -> Result<Failover> {
    let killed = Instant::now();
    lab.up_servers
        .first_mut()
        .context("no up server")?
        .0
        .process()
        .kill()?;
    let daemon = lab.daemon()?;
    let lost = daemon.wait_for("the dead server noticed", EVENT_TIMEOUT, |s| {
        s.state != State::Connected
    })?;
    let detected = killed.elapsed();
    let back = daemon.wait_for("the second server connected", EVENT_TIMEOUT, |s| {
        s.state == State::Connected
            && s.tunnel
                .as_ref()
                .and_then(|t| t.managed.as_ref())
                .is_some_and(|m| m.server == 1)
    })?;
    Ok(Failover {
        killed,
        detected,
        failed_over: killed.elapsed(),
        lost,
        back,
    })
}

fn up_failover(lab: &mut Lab) -> Result<Outcome> {
    let asked = Instant::now();
    let UpConnected {
        took: connected_in,
        backend,
    } = connect_up(lab)?;
    let (first, second) = match lab.up_servers.as_slice() {
        [(a, _), (b, _)] => (a.client_ip, b.client_ip),
        _ => anyhow::bail!("two servers expected"),
    };
    let from = |ip: Ipv4Addr| move |a: IpAddr| a == IpAddr::V4(ip);

    let window = lab.begin(&[Kind::Udp4, Kind::Tcp4, Kind::Icmp4])?;
    hold(Duration::from_secs(1));
    let Failover {
        killed,
        detected,
        failed_over,
        lost,
        back,
    } = kill_first_server(lab)?;
    lab.wait_for_traffic_from(killed, RESUMED, from(second))?;
    hold(Duration::from_millis(500));
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        lab.servers.udp.count_since(asked, from(first)) > 0,
        "traffic went through the first server",
    );
    outcome.check(
        lab.servers.udp.count_since(killed, from(second)) > 0,
        "after the failover, through the second",
    );
    outcome.check(
        outcome.measurement.direct == 0,
        format!(
            "nothing arrived outside a tunnel ({})",
            outcome.measurement.direct
        ),
    );
    outcome.check(
        lost.state == State::Connecting,
        format!(
            "while failing over the daemon blocked (state {})",
            lost.state
        ),
    );
    // The bound counts from the last good sign, which is at or before the kill; the slack covers
    // packets still in flight and the event's trip to the lab on a loaded machine.
    outcome.check(
        detected <= DEAD_AFTER + Duration::from_secs(1),
        format!(
            "the dead server was noticed within the {} s bound ({} ms after the kill)",
            DEAD_AFTER.as_secs(),
            ms(detected)
        ),
    );
    // `status` keeps why server 1 went (its own entry), now that server 2 is connected.
    let failures = back
        .tunnel
        .as_ref()
        .and_then(|t| t.managed.as_ref())
        .map(|m| m.failures.clone())
        .unwrap_or_default();
    outcome.check(
        failures
            .iter()
            .map(|f| (f.server, f.cause))
            .eq([(0, killswitch_types::FailureCause::Silent)]),
        format!("status names server 1's failure: silent ({failures:?})"),
    );
    let event = back
        .tunnel
        .and_then(|t| t.managed)
        .and_then(|m| m.last_event)
        .unwrap_or_default();
    outcome.note(format!(
        "{backend} WireGuard; connected {} ms after `up`",
        ms(connected_in)
    ));
    outcome.note(format!(
        "server 1 killed: declared dead after {} ms, connected to server 2 after {} ms ({event})",
        ms(detected),
        ms(failed_over)
    ));
    Ok(outcome)
}

/// What leaves by the physical link in every state that is not `off`: nothing but the tunnel.
const PROBE_KINDS: [Kind; 5] = [
    Kind::Udp4,
    Kind::Tcp4,
    Kind::Icmp4,
    Kind::DnsLan,
    Kind::Udp6,
];

fn lockdown_after_off(lab: &mut Lab) -> Result<Outcome> {
    // The red team's sequence. The window opens after the last command: before it the user had
    // switched the kill switch off, and traffic then is the user's choice.
    for args in [&["lockdown", "on"][..], &["lockdown", "off"], &["off"]] {
        lab.daemon()?.cli(args)?.ok()?;
    }
    let off = lab.daemon()?.status()?;
    let armed = lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    let at = Instant::now();
    let status = lab.daemon()?.status()?;
    let table_now = nft_table(&lab.topo.client)?.is_some();
    let window = lab.begin(&PROBE_KINDS)?;
    hold(Duration::from_secs(1));
    let measurement = lab.end(window)?;

    // A reboot: the daemon stops and the kernel forgets every rule (teardown stands in for that,
    // with no daemon running); the state directory stays. The early-boot step runs first.
    let mut daemon = lab.daemon.take().context("no daemon")?;
    daemon.process().terminate(EVENT_TIMEOUT)?;
    teardown(&lab.topo.client, &lab.home)?.ok()?;
    let forgotten = nft_table(&lab.topo.client)?.is_none();
    let boot = early_boot(&lab.topo.client, &lab.home)?.ok()?;
    let rebooted = Instant::now();
    let window = lab.begin(&PROBE_KINDS)?;
    hold(Duration::from_secs(1));
    let after_boot = lab.end(window)?;
    lab.daemon = Some(Daemon::start(&lab.topo.client, &lab.home)?);
    let resumed = lab.daemon()?.status()?;

    let mut outcome = Outcome::new(measurement);
    outcome.check(
        off.state == State::Off && !off.lockdown,
        format!(
            "after `off`, status shows nothing that is not enforced (state {}, lockdown {})",
            off.state,
            if off.lockdown { "on" } else { "off" }
        ),
    );
    outcome.check(
        status.state == State::Blocked && status.lockdown && status.firewall.blocking && table_now,
        format!(
            "`lockdown on` blocks at once: state {}, table {}",
            status.state,
            if table_now { "installed" } else { "missing" }
        ),
    );
    outcome.check(
        armed.stdout.contains("state:     blocked"),
        "the command's own output says blocked",
    );
    let arrived = lab.arrivals_since(at);
    outcome.check(
        arrived == 0 && outcome.measurement.refused > 0,
        format!(
            "nothing got out while blocked ({arrived} arrivals, {} sends refused)",
            outcome.measurement.refused
        ),
    );
    outcome.check(forgotten, "the simulated reboot left no rules");
    outcome.check(
        boot.stderr.contains("lockdown is on"),
        "the early-boot step blocks because lockdown is on",
    );
    outcome.check(
        after_boot.leaked == 0 && lab.arrivals_since(rebooted) == 0,
        format!(
            "after the reboot, nothing got out before the daemon started ({} leaked)",
            after_boot.leaked
        ),
    );
    outcome.check(
        resumed.state == State::Blocked && resumed.lockdown,
        format!("the daemon resumes blocked (state {})", resumed.state),
    );
    Ok(outcome)
}

fn stop_after_up(lab: &mut Lab) -> Result<Outcome> {
    lab.start_up_servers(1)?;
    let original = lab.resolv_conf();
    // Under lockdown `down` blocks: the whole scenario is one protected window.
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    let window = lab.begin(&[Kind::Udp4, Kind::DnsLan])?;
    lab.up_with_dns()?;

    // (what the daemon was doing, its state, the stop's duration and exit, resolv.conf restored,
    // the rules unchanged by the stop)
    let mut stops = Vec::new();
    let mut stop = |lab: &mut Lab, doing: &str| -> Result<()> {
        let status = lab.daemon()?.status()?;
        let table = nft_table(&lab.topo.client)?;
        let mut daemon = lab.daemon.take().context("no daemon")?;
        let asked = Instant::now();
        let exit = daemon.process().terminate(Duration::from_secs(5))?;
        let took = asked.elapsed();
        let restored = lab.resolv_conf() == original;
        let kept = nft_table(&lab.topo.client)? == table && table.is_some();
        stops.push((doing.to_owned(), status.state, took, exit, restored, kept));
        lab.daemon = Some(Daemon::start(&lab.topo.client, &lab.home)?);
        Ok(())
    };
    stop(lab, "connected")?;
    lab.daemon()?
        .wait_for("reconnected after the restart", EVENT_TIMEOUT, dns_managed)?;
    // The server dies: the daemon keeps trying (handshakes, backoff).
    lab.up_servers
        .first_mut()
        .context("no up server")?
        .0
        .process()
        .kill()?;
    lab.daemon()?
        .wait_for("the dead server noticed", EVENT_TIMEOUT, |s| {
            s.state == State::Connecting
        })?;
    stop(lab, "reconnecting to a dead server")?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    lab.daemon()?.cli(&["down"])?.ok()?;
    stop(lab, "after down")?;
    let mut outcome = Outcome::new(lab.end(window)?);
    for (doing, state, took, exit, restored, kept) in stops {
        outcome.check(
            exit.success() && took < Duration::from_secs(1),
            format!(
                "{doing} ({state}): SIGTERM ended the daemon in {} ms ({exit})",
                ms(took)
            ),
        );
        outcome.check(
            restored,
            format!("{doing}: resolv.conf is the user's again"),
        );
        outcome.check(
            kept,
            format!("{doing}: the rules stayed in place, unchanged"),
        );
    }
    Ok(outcome)
}

fn second_daemon(lab: &mut Lab) -> Result<Outcome> {
    lab.start_up_servers(1)?;
    lab.up_with_dns()?;
    let dns_before = lab.resolv_conf();
    let table_before = nft_table(&lab.topo.client)?;
    let window = lab.begin(&[Kind::Udp4, Kind::Tcp4, Kind::DnsLan])?;
    hold(Duration::from_millis(500));
    let started = Instant::now();
    let same = Daemon::start(&lab.topo.client, &lab.home)
        .err()
        .map(|e| format!("{e:#}"));
    let other_home = DaemonHome::new()?;
    let other = Daemon::start(&lab.topo.client, &other_home)
        .err()
        .map(|e| format!("{e:#}"));
    let refused_in = started.elapsed();
    hold(Duration::from_millis(500));
    let mut outcome = Outcome::new(lab.end(window)?);
    let status = lab.daemon()?.status()?;
    outcome.check(
        same.as_deref().is_some_and(|e| {
            e.contains("another killswitchd") && e.contains("without changing anything")
        }),
        "a second daemon with the same state directory refused and said why",
    );
    outcome.check(
        other
            .as_deref()
            .is_some_and(|e| e.contains("already runs in this network namespace")),
        "a second daemon with another state directory refused and said why",
    );
    outcome.check(
        status.state == State::Connected && status.firewall.tamper_events == 0,
        format!(
            "the running daemon saw no change (state {}, {} tamper events)",
            status.state, status.firewall.tamper_events
        ),
    );
    outcome.check(
        lab.resolv_conf() == dns_before,
        "the running tunnel's resolv.conf is untouched",
    );
    outcome.check(
        nft_table(&lab.topo.client)? == table_before,
        "the running daemon's table is untouched",
    );
    outcome.check(
        outcome.measurement.through_tunnel > 0 && outcome.measurement.direct == 0,
        "traffic kept flowing through the tunnel",
    );
    outcome.note(format!("both refusals took {} ms in all", ms(refused_in)));
    Ok(outcome)
}

/// How many times the other firewall flushes the ruleset.
const FLUSHES: usize = 20;

/// What one flood under flushes showed.
struct Flood {
    measurement: Measurement,
    /// Flushes whose `nft flush ruleset` exited 0.
    flushes_ran: usize,
    /// Flushes after which table `inet killswitch` was byte-identical.
    unchanged: usize,
    /// What the bound sender sent, and how much of it was refused at once.
    bound: (u64, u64),
    /// How long the bound sender ran.
    sending: Duration,
}

/// Unbound traffic from the generator and an unprivileged sender bound to the physical interface
/// (1,000 packets/s), while another program flushes the whole ruleset [`FLUSHES`] times, as a
/// firewall service does on every start or reload.
/// `killswitch-bound` in the client namespace: datagrams to `target` at `rate` a second for
/// `sending`, bound to the physical interface (so that only the firewall can stop them), with
/// `extra` arguments.
fn bound_sender(
    lab: &Lab,
    target: SocketAddr,
    rate: u32,
    sending: Duration,
    extra: &[&str],
) -> Result<std::process::Command> {
    let mut sender = lab.topo.client.command(
        crate::binaries::path("killswitch-bound")?
            .to_str()
            .context("binary path is not UTF-8")?,
    );
    sender.args([
        "--interface",
        PHYS,
        "--target",
        &target.to_string(),
        "--rate",
        &rate.to_string(),
        "--duration-ms",
        &sending.as_millis().to_string(),
    ]);
    sender.args(extra);
    Ok(sender)
}

fn flood_and_flush(lab: &Lab) -> Result<Flood> {
    let table = nft_table(&lab.topo.client)?;
    let window = lab.begin(&PROBE_KINDS)?;
    let target = SocketAddr::new(topology::TARGET_V4.into(), crate::sinks::UDP_PORT);
    let sending = Duration::from_millis(100 * FLUSHES as u64 + 600);
    let sender = bound_sender(lab, target, 1200, sending, &[])?;
    let mut sender = crate::process::Process::spawn("killswitch-bound", sender)?;
    hold(Duration::from_millis(300));
    let (mut flushes_ran, mut unchanged) = (0, 0);
    for _ in 0..FLUSHES {
        let flushed = lab
            .topo
            .client
            .command("nft")
            .args(["flush", "ruleset"])
            .status()?;
        flushes_ran += usize::from(flushed.success());
        unchanged += usize::from(nft_table(&lab.topo.client)? == table);
        hold(Duration::from_millis(100));
    }
    let line = sender.wait_for_line(0, "sent ", sending + EVENT_TIMEOUT)?;
    let summary = sender.output();
    let summary = summary.lines().nth(line - 1).unwrap_or("");
    let number = |word: &str| -> u64 {
        summary
            .split_whitespace()
            .skip_while(|w| *w != word)
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let bound = (number("sent"), number("refused"));
    Ok(Flood {
        measurement: lab.end(window)?,
        flushes_ran,
        unchanged,
        bound,
        // The sender's own window (it stops sending at its end): the time around the process
        // would add its start-up and exit to the window, which on a loaded machine took the
        // measured rate below what was sent.
        sending,
    })
}

fn flush_by_other_firewall(lab: &mut Lab) -> Result<Outcome> {
    lab.connect()?;
    // The tunnel is down: only the rules stand between applications and the physical link.
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    // Ping sockets for every user, as many distributions allow.
    lab.topo
        .client
        .exec("sysctl", &["-qw", "net.ipv4.ping_group_range=0 2147483647"])?;
    let protection = lab.daemon()?.status()?.firewall.flush_protection;
    let owned = flood_and_flush(lab)?;
    let after = lab.daemon()?.status()?;

    // For comparison, where the tables cannot be owned (a kernel before 6.9): restore-only.
    lab.restart_daemon_unowned()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let restore_only = flood_and_flush(lab)?;

    let mut outcome = Outcome::new(owned.measurement);
    let (sent, refused) = owned.bound;
    outcome.check(
        protection == Some(FlushProtection::Kernel),
        format!(
            "the daemon owns its tables (flush protection: {})",
            protection.map_or("unknown".to_owned(), |p| p.to_string())
        ),
    );
    outcome.check(
        owned.flushes_ran == FLUSHES && owned.unchanged == FLUSHES,
        format!(
            "{} of {FLUSHES} `nft flush ruleset` ran; after {} of them our table was byte-identical",
            owned.flushes_ran, owned.unchanged
        ),
    );
    let rate = sent as f64 / owned.sending.as_secs_f64().max(0.001);
    outcome.check(
        sent > 0 && refused == sent && rate >= 1000.0,
        format!(
            "the unprivileged bound sender (SO_BINDTODEVICE, IP_UNICAST_IF, ping socket) sent {sent} at {rate:.0}/s; all refused at once ({refused})"
        ),
    );
    outcome.check(
        after.firewall.tamper_events == 0,
        format!(
            "nothing to restore ({} tamper events)",
            after.firewall.tamper_events
        ),
    );
    let leaked = restore_only.measurement.leaked;
    outcome.check(
        leaked > 0,
        format!(
            "for comparison, restore-only (tables another program can flush): {leaked} packets left by the physical link across {FLUSHES} flushes, the bound sockets' (the capture sees what owning the tables prevents)"
        ),
    );
    outcome.note(format!(
        "restore-only: {} of {} bound packets refused; the routing layer does not hold bound sockets back, only the firewall does",
        restore_only.bound.1, restore_only.bound.0
    ));
    if let Some(first) = restore_only.measurement.leaks.first() {
        outcome.note(format!("restore-only, first leaked frame: {first}"));
    }
    outcome.unprotected = Some(restore_only.measurement);
    Ok(outcome)
}
