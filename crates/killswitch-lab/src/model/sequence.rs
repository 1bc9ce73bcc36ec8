//! One sequence against the real daemon: each step carried out for real, then the checks.
//!
//! After every step: the daemon answered the way the model says (done: exit 0; refused: non-zero,
//! nothing changed); it still answers `status`; its status settles (within a bound, waiting on
//! its event stream) on the model's [`Expectation`]; the kernel holds table `inet killswitch`
//! exactly when the protection has rules; resolv.conf names the tunnel's resolver where the
//! expectation says so and is the user's where it says that; traffic offered on the physical link
//! leaks nothing the floor forbids; and where the settled protection is a tunnel, traffic through
//! it arrives. With a router LAN (`router add lan0`), `status` lists it, the kernel holds the
//! table in every state, the LAN client's traffic never shows on the physical link in clear, and
//! while a tunnel is connected it arrives through it. After the last step the daemon must stop on SIGTERM within 2 s and
//! `killswitchd --teardown` must leave nothing behind.
//!
//! A broken invariant is a [`StepError::Broke`] (the sequence fails and is shrunk); a lab that
//! cannot carry a step out is a [`StepError::Lab`] (the run stops: shrinking would only chase it).

use super::leaks;
use super::world::{self, World};
use crate::daemon::{CliResult, Daemon, nft_table, teardown};
use killswitch_model::model::{Answer, Dns};
use killswitch_model::step::MAX_SERVERS;
use killswitch_model::{Expectation, Model, Protection, Step, Topology, UserStep, WorldStep};
use killswitch_types::ipc::Status;
use nix::sys::signal::Signal;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// How long the daemon may take to settle after a step. The slowest legitimate path: `up` with
/// three servers of which two have just stopped answering, after backing off (8 s at most), each
/// dead server costing a 5 s handshake timeout.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a SIGTERM may take to end the daemon.
const STOP_BOUND: Duration = Duration::from_secs(2);
/// How long a CLI command may take before it counts as no answer.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the daemon may take to give resolv.conf its expected content once its status says
/// so (it writes the file after applying the firewall).
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
const DNS_POLL: Duration = Duration::from_millis(20);

/// Why a sequence stopped.
#[derive(Debug)]
pub enum StepError {
    /// An invariant broke: what, after which step.
    Broke(String),
    /// The lab itself failed.
    Lab(anyhow::Error),
}

impl From<anyhow::Error> for StepError {
    fn from(e: anyhow::Error) -> Self {
        StepError::Lab(e)
    }
}

type StepResult<T = ()> = Result<T, StepError>;

fn broke<T>(what: impl Into<String>) -> StepResult<T> {
    Err(StepError::Broke(what.into()))
}

/// Time spent per kind of step, for the report.
pub type Timings = std::collections::BTreeMap<String, (u32, Duration)>;

/// The name a step is timed under: its kind, without its parameters.
fn kind(step: &Step) -> String {
    format!("{step:?}")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(2)
        .collect::<Vec<_>>()
        .join(":")
}

/// Maps a step onto a world with `servers` `up` servers: `up n` with more servers than there are
/// uses them all; a server that is not there cannot stop or start answering (`None`: skipped).
pub fn clamp(step: Step, servers: usize) -> Option<Step> {
    match step {
        Step::User(UserStep::Up { servers: n }) => Some(Step::User(UserStep::Up {
            servers: n.clamp(1, servers.clamp(1, MAX_SERVERS)),
        })),
        Step::World(WorldStep::ServerDown(n) | WorldStep::ServerUp(n)) if n >= servers => None,
        other => Some(other),
    }
}

/// Runs `steps` from a fresh start; `Ok` when every check held.
pub fn run(world: &mut World, steps: &[Step], timings: &mut Timings) -> StepResult {
    world.reset()?;
    let mut model = Model::new();
    let mut judged = world.lab.capture.len();
    let tunnel_addresses = tunnel_addresses(&world.topology);
    // A fresh daemon must be what the model says a fresh install is, before any step.
    let first = |world: &mut World| -> StepResult<usize> {
        check(world, &model)?;
        let floor = leaks::floor(&model, &world.topology);
        let (next, found) = leaks::judge_since(
            world.client(),
            &world.lab.capture,
            judged,
            Instant::now(),
            floor.as_ref(),
            floor.as_ref(),
            &tunnel_addresses,
        )?;
        if !found.is_empty() {
            return broke(format!("leaked on the physical link: {}", found.join("; ")));
        }
        Ok(next)
    };
    judged = first(world).map_err(|e| match e {
        StepError::Broke(what) => with_log(
            world,
            StepError::Broke(format!("before the first step: {what}")),
        ),
        lab => lab,
    })?;
    for (i, step) in steps.iter().enumerate() {
        let Some(step) = clamp(*step, world.servers()) else {
            continue;
        };
        if !model.applies(&step) {
            continue;
        }
        let started = Instant::now();
        let before = leaks::floor(&model, &world.topology);
        let answer = model.step(&step);
        let after = leaks::floor(&model, &world.topology);
        let during = leaks::weaker(before.as_ref(), after.as_ref());
        let at = |e: String| format!("after step {} ({step}): {e}", i + 1);
        let outcome = carry_out(world, &step, answer)
            .and_then(|boundary| {
                check(world, &model)?;
                let (next, found) = leaks::judge_since(
                    world.client(),
                    &world.lab.capture,
                    judged,
                    boundary,
                    during.as_ref(),
                    after.as_ref(),
                    &tunnel_addresses,
                )?;
                judged = next;
                if !found.is_empty() {
                    return broke(format!(
                        "leaked on the physical link while the model demanded {}: {}",
                        describe_floor(&model),
                        found.join("; ")
                    ));
                }
                Ok(())
            })
            .map_err(|e| match e {
                StepError::Broke(what) => StepError::Broke(at(what)),
                StepError::Lab(e) => StepError::Lab(e.context(at("the lab failed".into()))),
            });
        let entry = timings.entry(kind(&step)).or_default();
        entry.0 += 1;
        entry.1 += started.elapsed();
        if let Err(e) = outcome {
            return Err(with_log(world, e));
        }
    }
    finish(world).map_err(|e| with_log(world, e))
}

/// Adds the tail of the daemon's log to a broken invariant: it usually says why.
fn with_log(world: &World, e: StepError) -> StepError {
    match e {
        StepError::Broke(what) => {
            let log = world
                .lab
                .daemon
                .as_ref()
                .map(Daemon::log)
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            StepError::Broke(format!(
                "{what}\n  the daemon's last log lines:\n    {}",
                tail.join("\n    ")
            ))
        }
        lab => lab,
    }
}

/// After the last step: SIGTERM stops the daemon within the bound, and teardown (no daemon
/// running) leaves no rule behind.
fn finish(world: &mut World) -> StepResult {
    stop(world, "after the last step")?;
    let result = teardown(world.client(), &world.home)?;
    if result.code != Some(0) {
        return broke(format!(
            "after the last step, `killswitchd --teardown` with the daemon stopped failed ({:?}): {}",
            result.code,
            result.stderr.trim()
        ));
    }
    if let Err(left) = world.clean()? {
        return broke(format!(
            "after the last step, `killswitchd --teardown` left {left}"
        ));
    }
    Ok(())
}

/// Stops the daemon with SIGTERM; it must exit, successfully, within [`STOP_BOUND`].
fn stop(world: &mut World, when: &str) -> StepResult {
    let Some(mut daemon) = world.lab.daemon.take() else {
        return broke(format!("{when}: no daemon is running"));
    };
    let asked = Instant::now();
    let status = daemon.process().terminate(STOP_BOUND)?;
    let took = asked.elapsed();
    if status.signal() == Some(Signal::SIGKILL as i32) {
        let log = daemon.log();
        world.lab.daemon = None;
        return broke(format!(
            "{when}: the daemon ignored SIGTERM for {} ms and was killed; its log:\n{}",
            took.as_millis(),
            last_lines(&log, 10)
        ));
    }
    if !status.success() {
        return broke(format!(
            "{when}: the daemon exited with {status} on SIGTERM; its log:\n{}",
            last_lines(&daemon.log(), 10)
        ));
    }
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts the daemon again; failing to start is a broken invariant (a restart must work).
fn start(world: &mut World, when: &str) -> StepResult {
    match Daemon::start(&world.lab.topo.client, &world.home) {
        Ok(daemon) => {
            world.lab.daemon = Some(daemon);
            Ok(())
        }
        Err(e) => broke(format!("{when}: the daemon did not start again: {e:#}")),
    }
}

/// Carries `step` out; returns the moment from which the new floor applies in full (when the
/// command that changed it had returned).
fn carry_out(world: &mut World, step: &Step, answer: Answer) -> StepResult<Instant> {
    match step {
        Step::User(user) => user_step(world, user, answer)?,
        Step::World(w) => world_step(world, w)?,
    }
    Ok(Instant::now())
}

fn user_step(world: &mut World, step: &UserStep, answer: Answer) -> StepResult {
    let topo = world.topology.clone();
    let on = |b: bool| if b { "on" } else { "off" };
    let result = match step {
        UserStep::Guard => {
            let endpoint = topo.guard.endpoint.to_string();
            let dns = topo.guard.dns.to_string();
            let mark = format!("{:#x}", topo.guard.mark);
            cli(
                world,
                &[
                    "guard",
                    "--interface",
                    topo.guard_interface.as_str(),
                    "--endpoint",
                    &endpoint,
                    "--dns",
                    &dns,
                    "--mark",
                    &mark,
                ],
            )?
        }
        UserStep::Up { servers } => {
            let mut args = vec![
                "up".to_owned(),
                "--interface".to_owned(),
                topo.up_interface.as_str().to_owned(),
            ];
            args.extend(
                world
                    .configs
                    .iter()
                    .take(*servers)
                    .map(|p| p.display().to_string()),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(world, &args)?
        }
        UserStep::Down => cli(world, &["down"])?,
        UserStep::Lockdown(b) => cli(world, &["lockdown", on(*b)])?,
        UserStep::AllowLan(b) => cli(world, &["allow-lan", on(*b)])?,
        UserStep::AppsOnly(b) => cli(world, &["apps-only", on(*b)])?,
        UserStep::Off => cli(world, &["off"])?,
        UserStep::Teardown => teardown(world.client(), &world.home)?,
        UserStep::Restart => {
            stop(world, "SIGTERM")?;
            return start(world, "after SIGTERM");
        }
        UserStep::Crash => {
            if let Some(mut daemon) = world.lab.daemon.take() {
                daemon.process().kill()?;
            }
            return start(world, "after kill -9");
        }
        UserStep::SecondDaemon => {
            return match Daemon::start(&world.lab.topo.client, &world.home) {
                Ok(mut second) => {
                    let _ = second.process().kill();
                    broke("a second killswitchd started while the first ran")
                }
                Err(_) => Ok(()),
            };
        }
        UserStep::BadRequest => return bad_request(world),
        UserStep::Router(add) => {
            let lan = topo.router_lan.as_str();
            cli(world, &["router", if *add { "add" } else { "remove" }, lan])?
        }
    };
    match (answer, result.code) {
        (Answer::Refused, Some(0)) => broke(format!(
            "`{step}` must be refused, but it exited 0: {}",
            result.stdout.trim()
        )),
        (Answer::Done | Answer::None, code) if code != Some(0) => broke(format!(
            "`{step}` must succeed, but it exited {code:?}: {}",
            result.stderr.trim()
        )),
        _ => Ok(()),
    }
}

/// A malformed line on the socket must get an error reply, and a request with a configuration
/// that does not parse must be refused by the CLI with a non-zero exit; neither changes anything
/// (which the settle check after the step verifies).
fn bad_request(world: &mut World) -> StepResult {
    use killswitch_types::ipc::{ServerEnvelope, ServerMessage};
    use std::io::{BufRead, BufReader, Write};
    let socket = world.home.socket();
    let reply = (|| -> anyhow::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket)?;
        stream.set_read_timeout(Some(CLI_TIMEOUT))?;
        stream.write_all(b"{\"version\": 1, \"request\": {\"type\": \"explode\"}}\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    })();
    let reply = match reply {
        Ok(line) => line,
        Err(e) => return broke(format!("a malformed request got no answer: {e:#}")),
    };
    match serde_json::from_str::<ServerEnvelope>(&reply) {
        Ok(ServerEnvelope {
            message: ServerMessage::Error { .. },
            ..
        }) => {}
        _ => {
            return broke(format!(
                "a malformed request was not answered with an error: {:?}",
                reply.trim()
            ));
        }
    }
    let bad = world.bad_config.display().to_string();
    let up = world.topology.up_interface.as_str().to_owned();
    let result = cli(world, &["up", "--interface", &up, &bad])?;
    if result.code == Some(0) {
        return broke(format!(
            "`up` with a configuration whose keys are not keys exited 0: {}",
            result.stdout.trim()
        ));
    }
    Ok(())
}

fn cli(world: &World, args: &[&str]) -> StepResult<CliResult> {
    let daemon = match world.daemon() {
        Ok(d) => d,
        Err(_) => return broke("no daemon is running"),
    };
    match daemon.cli_timed(args, CLI_TIMEOUT) {
        Ok((result, _)) => Ok(result),
        Err(e) => broke(format!("{e:#}")),
    }
}

fn world_step(world: &mut World, step: &WorldStep) -> StepResult {
    match step {
        WorldStep::TunnelGone => world.tunnel_gone()?,
        WorldStep::TunnelBack => world.tunnel_back()?,
        WorldStep::ServerDown(n) => world.server_answers(*n, false)?,
        WorldStep::ServerUp(n) => world.server_answers(*n, true)?,
        WorldStep::LinkFlap => world.link_flap()?,
        WorldStep::NewAddress => world.new_address()?,
        WorldStep::ResolvConfRewritten => world.rewrite_resolv_conf()?,
        WorldStep::ForeignFlush => world.foreign_flush()?,
        WorldStep::RuleDeleted => world.delete_rule()?,
        WorldStep::Impostor => world.impostor()?,
        WorldStep::ImpostorGone => world.impostor_gone()?,
        WorldStep::TimePasses(s) => world.time_passes(*s),
        WorldStep::Suspend => world.suspend()?,
    }
    Ok(())
}

/// The checks after a step (except the capture's, which the caller does).
fn check(world: &World, model: &Model) -> StepResult {
    let expected = model.expect();
    let topo = &world.topology;
    let daemon = match world.daemon() {
        Ok(d) => d,
        Err(_) => return broke("no daemon is running"),
    };
    // The daemon answers at all.
    if let Err(e) = daemon.cli_timed(&["--json", "status"], CLI_TIMEOUT) {
        return broke(format!("the daemon does not answer `status`: {e:#}"));
    }
    let status = match daemon.wait_for("the model's expectation", SETTLE_TIMEOUT, |s| {
        mismatch(s, &expected, topo).is_none()
    }) {
        Ok(status) => status,
        Err(_) => {
            let now = daemon.status();
            let why = match &now {
                Ok(s) => mismatch(s, &expected, topo).unwrap_or_else(|| "it does now".into()),
                Err(e) => format!("no status: {e:#}"),
            };
            return broke(format!(
                "the daemon did not settle within {} s on {}: {why}",
                SETTLE_TIMEOUT.as_secs(),
                describe_expectation(&expected)
            ));
        }
    };
    let table = nft_table(world.client())?.is_some();
    if table != expected.has_table() {
        return broke(format!(
            "status says {}, but the kernel {} table inet killswitch",
            status.state,
            if table { "holds" } else { "has no" }
        ));
    }
    check_resolv_conf(world, &expected, &status)?;
    if let Protection::Tunnel(alive) = &expected.protection {
        // Through any tunnel the model allows, not only the one the settled status named: a
        // status can be stale by up to the health bound (a deleted device looks connected until
        // the daemon notices no sign of life), and the daemon may fail over meanwhile.
        let sources: Vec<IpAddr> = alive
            .iter()
            .filter_map(|i| world::tunnel_source(topo, *i))
            .collect();
        if let Err(e) = leaks::wait_for_tunnel_traffic(
            world.client(),
            topo,
            &world.lab.servers.udp,
            &sources,
            b"killswitch-lab model liveness",
        ) {
            return broke(format!("connected, but traffic does not flow: {e:#}"));
        }
    }
    if expected.router && !expected.carriers.is_empty() {
        // The LAN's traffic goes through the tunnel too (masqueraded as its address), apps-only
        // or not.
        let sources: Vec<IpAddr> = (expected.carriers.iter())
            .filter_map(|i| world::tunnel_source(topo, *i))
            .collect();
        if let Err(e) = leaks::wait_for_tunnel_traffic(
            &world.lan_client,
            topo,
            &world.lab.servers.udp,
            &sources,
            b"killswitch-lab model lanprobe liveness",
        ) {
            return broke(format!(
                "connected, but the router LAN's traffic does not flow through the tunnel: {e:#}"
            ));
        }
    }
    leaks::offer(world.client(), topo)?;
    if expected.router {
        leaks::offer_from_lan(&world.lan_client, topo)?;
    }
    Ok(())
}

/// The model index of the tunnel the status reports (the guarded one, or an `up` server).
fn active(status: &Status, topo: &Topology) -> Option<usize> {
    let tunnel = status.tunnel.as_ref()?;
    if tunnel.managed.is_none() {
        return (tunnel.endpoint.address == topo.guard.endpoint).then_some(Protection::GUARD);
    }
    topo.servers
        .iter()
        .position(|s| s.endpoint == tunnel.endpoint.address)
}

/// What in `status` differs from `expected`, or `None`.
fn mismatch(status: &Status, expected: &Expectation, topo: &Topology) -> Option<String> {
    let mut wrong = Vec::new();
    if status.state != expected.state {
        wrong.push(format!("state {} (not {})", status.state, expected.state));
    }
    if status.lockdown != expected.lockdown {
        wrong.push(format!("lockdown {}", on(status.lockdown)));
    }
    if status.allow_lan != expected.allow_lan {
        wrong.push(format!("allow-lan {}", on(status.allow_lan)));
    }
    if status.apps_only != expected.apps_only {
        wrong.push(format!("apps-only {}", on(status.apps_only)));
    }
    let lans: Vec<&str> = (status.router_lans.iter())
        .map(|l| l.interface.as_str())
        .collect();
    let want_lans: &[&str] = if expected.router {
        &[topo.router_lan.as_str()]
    } else {
        &[]
    };
    if lans != want_lans {
        wrong.push(format!("router LANs {lans:?} (not {want_lans:?})"));
    } else if let Some(lan) = status.router_lans.first()
        && !(lan.present && lan.forwarding)
    {
        wrong.push(format!(
            "router LAN {} present {} forwarding {} (not both)",
            lan.interface, lan.present, lan.forwarding
        ));
    }
    if status.firewall.installed != expected.has_table() {
        wrong.push(format!(
            "firewall {}",
            if status.firewall.installed {
                "installed"
            } else {
                "not installed"
            }
        ));
    }
    let index = active(status, topo);
    match &expected.protection {
        Protection::Tunnel(allowed) | Protection::Hole(allowed) => {
            if !index.is_some_and(|i| allowed.contains(&i)) {
                wrong.push(format!(
                    "tunnel {} (not one of {})",
                    index.map_or_else(|| "none".to_owned(), name),
                    allowed
                        .iter()
                        .map(|i| name(*i))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Protection::Off | Protection::Open | Protection::Blocked => {}
    }
    match expected.dns {
        Dns::Tunnel => {
            let want: Vec<IpAddr> = index
                .and_then(|i| topo.end(i))
                .map(|e| vec![IpAddr::V4(e.dns)])
                .unwrap_or_default();
            match &status.dns {
                Some(d) if d.error.is_none() && d.servers == want => {}
                other => wrong.push(format!("DNS {other:?} (not the tunnel's {want:?})")),
            }
        }
        Dns::User if status.dns.is_some() => {
            wrong.push(format!("DNS still managed: {:?}", status.dns));
        }
        Dns::User | Dns::Either => {}
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

/// resolv.conf names exactly the tunnel's resolver where DNS goes to the tunnel, and is the
/// user's own where it must be. The daemon writes the file after the firewall, so this waits a
/// little (a bounded poll of a file; there is no event to wait on from outside the namespace's
/// mount).
fn check_resolv_conf(world: &World, expected: &Expectation, status: &Status) -> StepResult {
    let want = match expected.dns {
        Dns::Either => return Ok(()),
        Dns::Tunnel => {
            let Some(end) = active(status, &world.topology).and_then(|i| world.topology.end(i))
            else {
                return broke("DNS must point at the tunnel, but no tunnel is reported");
            };
            Some(end.dns)
        }
        Dns::User => None,
    };
    let deadline = Instant::now() + DNS_TIMEOUT;
    loop {
        let text = world.resolv_conf()?;
        let ok = match want {
            Some(resolver) => {
                let servers: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("nameserver"))
                    .map(str::trim)
                    .collect();
                servers == [resolver.to_string().as_str()]
            }
            None => text == world.user_resolv_conf,
        };
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return broke(match want {
                Some(resolver) => format!(
                    "resolv.conf must name only the tunnel's resolver {resolver}, but reads {text:?}"
                ),
                None => format!(
                    "resolv.conf must be the user's {:?}, but reads {text:?}",
                    world.user_resolv_conf
                ),
            });
        }
        std::thread::sleep(DNS_POLL);
    }
}

fn tunnel_addresses(topo: &Topology) -> Vec<IpAddr> {
    std::iter::once(IpAddr::V4(topo.guard.address))
        .chain(topo.servers.iter().map(|s| IpAddr::V4(s.address)))
        .collect()
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn name(index: usize) -> String {
    if index == Protection::GUARD {
        "the guarded tunnel".to_owned()
    } else {
        format!("server {}", index + 1)
    }
}

fn describe_expectation(e: &Expectation) -> String {
    format!(
        "state {}, lockdown {}, allow-lan {}, apps-only {}, protection {:?}, DNS {:?}",
        e.state,
        on(e.lockdown),
        on(e.allow_lan),
        on(e.apps_only),
        e.protection,
        e.dns
    )
}

fn describe_floor(model: &Model) -> String {
    let names = |indices: &[usize]| {
        indices
            .iter()
            .map(|i| name(*i))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match model.floor() {
        None | Some(Protection::Off | Protection::Open) => "nothing".to_owned(),
        Some(Protection::Blocked) => "everything blocked".to_owned(),
        Some(Protection::Hole(i) | Protection::Tunnel(i)) => {
            format!(
                "nothing outside the tunnel but the tunnel's packets to {}",
                names(&i)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::leaks::Floor;
    use super::*;

    #[test]
    fn clamping_keeps_up_within_the_servers_there_are() {
        let up3 = Step::User(UserStep::Up { servers: 3 });
        assert_eq!(clamp(up3, 2), Some(Step::User(UserStep::Up { servers: 2 })));
        assert_eq!(clamp(up3, 3), Some(up3));
        assert_eq!(clamp(Step::World(WorldStep::ServerDown(2)), 2), None);
        assert_eq!(
            clamp(Step::World(WorldStep::ServerUp(1)), 2),
            Some(Step::World(WorldStep::ServerUp(1)))
        );
    }

    #[test]
    fn steps_are_timed_by_kind() {
        assert_eq!(kind(&Step::User(UserStep::Up { servers: 2 })), "User:Up");
        assert_eq!(
            kind(&Step::World(WorldStep::TimePasses(3))),
            "World:TimePasses"
        );
        assert_eq!(kind(&Step::User(UserStep::Down)), "User:Down");
    }

    #[test]
    fn the_weaker_floor_allows_what_either_allows() {
        let a = Floor {
            endpoints: vec!["198.51.100.1:51820".parse().expect("addr")],
            lan: false,
        };
        let b = Floor {
            endpoints: vec!["198.51.100.2:51821".parse().expect("addr")],
            lan: true,
        };
        let w = leaks::weaker(Some(&a), Some(&b)).expect("both demand protection");
        assert_eq!(w.endpoints.len(), 2);
        assert!(w.lan);
        assert_eq!(leaks::weaker(None, Some(&b)), None);
    }
}
