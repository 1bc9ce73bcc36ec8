//! Wiring: configuration, the state machine, link events, the IPC server and signals, in one
//! single-threaded event loop. The state machine runs on this loop only, so no two events are ever
//! handled at once.

use crate::config::Config;
use crate::core::{Command, Core, CoreOptions, Effect, Input};
use crate::devices::Devices;
use crate::dns::Dns;
use crate::dns::resolv_conf::ResolvConf;
use crate::firewall::Nftables;
use crate::instance::Instance;
use crate::ipc::{self, Server, Shared};
use crate::links::{self, LinkEvents};
use crate::sleep::SleepSignals;
use crate::store::Store;
use anyhow::Context;
use killswitch_types::ipc::{IpcError, Status};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, watch};

/// Where the daemon finds and keeps things.
#[derive(Debug)]
pub struct Options {
    /// The firewall backend.
    pub firewall: Nftables,
    /// The configuration file.
    pub config: PathBuf,
    /// The IPC socket.
    pub socket: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Whether other programs' nf_tables changes are watched for and reverted (always, but in
    /// the lab's `verify` scenario, which must see a tampered table stay tampered).
    pub watch_tampering: bool,
}

/// How long a stop may spend giving DNS back: a stop must take less than a second.
const STOP_DNS_BOUND: Duration = Duration::from_millis(700);

/// Runs the daemon until SIGTERM or SIGINT. The firewall is left as it is on exit: stopping the
/// daemon never opens it (only `killswitch off` does).
pub async fn run(options: Options) -> anyhow::Result<()> {
    // First of all, the signal handlers: the service manager may stop the daemon at any moment
    // once it runs (and does, once READY=1 is sent), and a SIGTERM before them would kill it by the
    // default action, giving nothing back. A signal that comes during start-up waits in its
    // stream and ends the loop at its first pass.
    // SIGHUP (`systemctl reload`, a habitual `kill -HUP`, a closed terminal) reloads the
    // configuration file; one that comes during start-up waits in its stream for the loop.
    // SIGUSR1/SIGUSR2 would kill the daemon by the default action: they are ignored, and say so.
    let mut stops = Stops {
        terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
    };
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut user2 =
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    // Before anything is touched: a second daemon must not touch the first one's firewall, files or
    // DNS, not even to "recover" them.
    let _instance = Instance::acquire(&options.state_dir)?;
    // Then the socket, bound but not served yet: a socket path that cannot be used stops the
    // daemon before it has changed anything. Clients that connect now wait in the backlog until
    // the firewall is up and the loop below serves them.
    let server = Server::bind(&options.socket).await?;
    let (mut config, config_fault) = match Config::load(&options.config) {
        Ok(config) => (config, None),
        Err(e) => {
            tracing::error!(
                "{e}; blocking until the configuration is fixed and reloaded (systemctl reload killswitchd) or the daemon restarted"
            );
            (Config::default(), Some(e.to_string()))
        }
    };
    let devices = Devices::new(&options.state_dir);
    // Freeze on drop: the daemon's cgroup subtree (or why there is none, which `status` shows and
    // which stops nothing else), config.toml's executables found and moved into it.
    if let Err(e) = crate::cgroup::mount_if_missing(&options.state_dir) {
        tracing::warn!("cgroup v2: {e}");
    }
    let on_drop = crate::freeze::Registry::new(crate::cgroup::Subtree::find());
    on_drop.configure(&config.freeze_on_drop, &config.kill_on_drop);
    let handshakes = crate::handshake::Tap::default();
    let defaults = CoreOptions::new(&options.state_dir);
    let core_options = CoreOptions {
        wireguard_dir: config.wireguard_dir.clone(),
        health_bound: Duration::from_secs_f64(config.dead_after_seconds),
        // The configuration was validated when loaded (a bad one is the default plus a fault).
        lan: config.lan().unwrap_or_default(),
        allows: config.allows(),
        detect_local_bridges: config.detect_local_bridges,
        tunnel_only_users: crate::users::resolve_all(&config.tunnel_only_users),
        apps_only: config.apps_only,
        router_lans: config.router_lan_interfaces.clone(),
        // The manager's readings of its device also give `status` the tunnel's handshake.
        factory: crate::handshake::tapped(defaults.factory, handshakes.clone()),
        ..defaults
    };
    let mut core = Core::new(
        options.firewall,
        Store::open(&options.state_dir),
        config_fault,
        core_options,
        Instant::now(),
    );
    // `killswitch exec`: the namespaces a previous daemon left running stay confined (their rules
    // are in the first ruleset), the rest is swept.
    let (exec_changes_tx, mut exec_changes) = mpsc::channel::<crate::exec::ScopesChanged>(64);
    let exec = Arc::new(crate::exec::Exec::new(
        &options.state_dir,
        crate::exec::ExecConfig {
            block: config.exec_subnet,
            limit: config.exec_limit_per_user,
        },
        exec_changes_tx,
        on_drop.clone(),
    ));
    let (generation, adopted) = exec.recover();
    core.adopt_exec_scopes(generation, adopted);
    if let Some(error) = core.status().error {
        tracing::error!("{error}");
    }
    let watched = on_drop.report();
    for refused in &watched.refused {
        tracing::warn!("{refused}");
    }
    if let (Some(error), false) = (&watched.error, watched.refused.is_empty()) {
        tracing::warn!("freeze on drop cannot work: {error}");
    }
    core.set_on_drop(watched);
    tokio::spawn(on_drop.clone().scan_forever());

    // The firewall goes up before anything is served: nobody's request is read before it, and a
    // restart replaces the previous daemon's table in one transaction.
    let link_events = LinkEvents::subscribe().context("subscribing to link changes")?;
    let nft_changes = NftChanges::subscribe().context("subscribing to nftables changes")?;
    let mut wake = None;
    // Programs a previous daemon bypassed may still run: their cgroup's rules are part of the
    // first apply (and an empty cgroup it left is removed).
    let mut bypass = crate::bypass::Bypass::find();
    let mut bypass_watch = watch_bypass(&bypass);
    core.set_bypass(bypass.observe());
    let started = core.on(Input::Started, Instant::now());
    // Only the looks now: the rest (DNS above all) once the bus is there.
    let started = look_at_once(&mut core, started);

    // Then the system bus (which may be slow or absent), and a resolv.conf a crashed daemon left.
    let bus = system_bus().await;
    let mut dns = Dns::new(
        config.dns,
        ResolvConf::new(&config.resolv_conf, &options.state_dir),
        bus.clone(),
    );
    dns.recover();
    core.set_dns_status(dns.status());
    let mut sleep = SleepSignals::subscribe(bus.as_ref()).await;
    let first = core.status();
    tracing::info!(state = %first.state, lockdown = first.lockdown, allow_lan = first.allow_lan, apps_only = first.apps_only, "started");

    let (status_tx, status_rx) = watch::channel(first);
    let (events, _) = broadcast::channel::<Status>(64);
    let (commands_tx, mut commands) = mpsc::channel::<ipc::Command>(32);
    let (verifications_tx, mut verifications) =
        mpsc::channel::<tokio::sync::oneshot::Sender<ipc::VerifyAnswer>>(8);
    if crate::authz::group_gid(&config.admin_group).is_none() {
        tracing::warn!(
            "the admin group '{}' does not exist: only root can change the kill switch",
            config.admin_group
        );
    }
    let shared = Shared {
        status: status_rx,
        events: events.clone(),
        commands: commands_tx,
        admin_group: Arc::from(config.admin_group.as_str()),
        verifications: verifications_tx,
        verify_pace: Arc::default(),
        blocked: crate::blocked::Blocked::start(),
        handshakes,
        wireguard_dir: Arc::from(config.wireguard_dir.as_path()),
        exec: Some(Arc::clone(&exec)),
        on_drop: on_drop.clone(),
    };
    exec.watch_adopted();
    tokio::spawn(Arc::clone(&exec).follow_tunnel(shared.status.clone()));
    tracing::info!("listening on {}", options.socket.display());
    if let Err(e) = crate::notify::notify("READY=1") {
        tracing::warn!("telling the service manager we are ready failed: {e}");
    }

    let publish = |status: Status| {
        let _ = events.send(status.clone());
        status_tx.send_replace(status);
    };
    let mut io = Io {
        dns: &mut dns,
        publish: &publish,
        wake: &mut wake,
        reply: None,
        on_drop: &on_drop,
        input_at: Instant::now(),
    };
    if perform(&mut core, started, &mut io, &mut stops).await == Flow::Stop {
        drop(io);
        on_drop.thaw_for_stop();
        return stop(&mut core, &mut dns).await;
    }

    let serving = server.serve(shared);
    tokio::pin!(serving);
    loop {
        // One timer: the tunnel manager's ticks (only while `up`) and the retry of a failed apply
        // (only while failing), whichever the core wants first. A healthy daemon guarding a
        // tunnel has none.
        let wake_at = *io.wake;
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(
            wake_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        ));
        let input = tokio::select! {
            () = &mut serving => anyhow::bail!("the IPC server stopped"),
            Some(command) = commands.recv() => {
                if command.reply.is_closed() {
                    // Its sender gave up waiting (and told its user nothing was changed).
                    tracing::info!(uid = command.peer.uid, pid = command.peer.pid, "request `{}` withdrawn: its sender hung up before it was carried out", command.request.name());
                    continue;
                }
                tracing::info!(uid = command.peer.uid, pid = command.peer.pid, "request `{}`", command.request.name());
                if command.request == killswitch_types::ipc::Request::Bypass {
                    // The connection's own process, moved here where the cgroup is looked
                    // after, so that no look at the cgroup runs between the move and the rules.
                    match bypass.join(&command.peer) {
                        Ok(view) => {
                            // The subtree exists now, if it did not at start.
                            if bypass_watch.is_none() {
                                bypass_watch = watch_bypass(&bypass);
                            }
                            if let Some(watch) = &bypass_watch {
                                watch.rewatch();
                            }
                            io.reply = Some(command.reply);
                            Some(Input::Command(Command::Bypass(view)))
                        }
                        Err(error) => {
                            tracing::warn!(uid = command.peer.uid, pid = command.peer.pid, "exec --bypass refused: {error}");
                            let _ = command.reply.send(Err(IpcError::new(
                                killswitch_types::ipc::ErrorKind::BadRequest,
                                format!("exec --bypass: {error}; nothing was changed"),
                            )));
                            continue;
                        }
                    }
                } else {
                match Command::parse(&command.request, &config.wireguard_dir, &devices) {
                    Ok(parsed) => {
                        io.reply = Some(command.reply);
                        Some(Input::Command(parsed))
                    }
                    Err(error) => {
                        // Refused before it reached the state machine: nothing changed.
                        let _ = command.reply.send(Err(error));
                        continue;
                    }
                }
                }
            }
            changed = bypass_changed(bypass_watch.as_ref()) => {
                if let Err(e) = changed {
                    tracing::warn!("bypass: reading the cgroup watch failed: {e}");
                }
                if let Some(watch) = &bypass_watch {
                    watch.rewatch();
                }
                Some(Input::Bypass(bypass.observe()))
            }
            Some(change) = exec_changes.recv() => {
                let command = Command::ExecScopes { generation: change.generation, scopes: change.scopes };
                io.reply = Some(change.reply);
                Some(Input::Command(command))
            }
            Some(reply) = verifications.recv() => {
                // Read-only: the kernel compared with what the core means it to hold. Nothing
                // reaches the state machine.
                let (rules, routes) = core.intent();
                let status = core.status();
                let check = crate::verify::check(rules, routes, status.firewall.flush_protection);
                let _ = reply.send((status, check));
                continue;
            }
            committer = nft_changes.foreign_change(), if options.watch_tampering => match committer {
                Ok(committer) => Some(Input::NftChanged { committer }),
                Err(e) => {
                    tracing::warn!("reading nftables changes failed: {e}");
                    continue;
                }
            },
            () = timer, if wake_at.is_some() => Some(Input::Timer),
            changed = link_events.changed() => {
                if let Err(e) = changed {
                    tracing::warn!("reading link changes failed: {e}");
                }
                Some(Input::LinksChanged)
            }
            // Someone may have rewritten the resolv.conf the daemon manages: DNS follows again
            // (never fires while the daemon manages none).
            () = io.dns.resolv_conf_touched() => None,
            // A program was watched or forgotten (`exec`), or the configuration changed.
            () = on_drop.changed() => Some(Input::OnDrop(on_drop.report())),
            () = sleep.woke() => {
                tracing::info!("the machine woke up: looking at the tunnel now");
                Some(Input::Woke)
            }
            _ = stops.terminate.recv() => break,
            _ = stops.interrupt.recv() => break,
            _ = hangup.recv() => {
                let _ = crate::notify::notify("RELOADING=1");
                let reloaded = reload(&options.config, &mut config, &on_drop);
                Some(Input::Reloaded(reloaded))
            }
            _ = user1.recv() => {
                tracing::warn!("SIGUSR1 means nothing to killswitchd; ignored");
                continue;
            }
            _ = user2.recv() => {
                tracing::warn!("SIGUSR2 means nothing to killswitchd; ignored");
                continue;
            }
        };
        let reloading = matches!(input, Some(Input::Reloaded(_)));
        io.input_at = Instant::now();
        let effects = match input {
            Some(input) => core.on(input, Instant::now()),
            None => vec![Effect::SyncDns(core.dns_want())],
        };
        if perform(&mut core, effects, &mut io, &mut stops).await == Flow::Stop {
            break;
        }
        if reloading {
            // The new rules are in place (or the refusal is in `status`): the reload is done.
            let _ = crate::notify::notify("READY=1");
        }
    }
    drop(io);
    on_drop.thaw_for_stop();
    stop(&mut core, &mut dns).await
}

/// Reads the configuration file again: what the running daemon can take from it, or why it
/// cannot be used. Keys that shaped the daemon's set-up (the admin group, DNS management) keep
/// their running values until a restart, and the log says so when they changed.
fn reload(
    path: &std::path::Path,
    running: &mut Config,
    on_drop: &crate::freeze::Registry,
) -> Result<Box<crate::core::Reconfigured>, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    // Looked up again, as users are: a program installed since counts now. The registry tells
    // the loop, which tells the state machine.
    on_drop.configure(&new.freeze_on_drop, &new.kill_on_drop);
    for refused in on_drop.report().refused {
        tracing::warn!("{refused}");
    }
    let waiting: Vec<&str> = [
        ("admin_group", new.admin_group != running.admin_group),
        ("dns", new.dns != running.dns),
        ("resolv_conf", new.resolv_conf != running.resolv_conf),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if !waiting.is_empty() {
        tracing::warn!(
            "{} changed in {}: that takes effect when the daemon restarts",
            waiting.join(", "),
            path.display()
        );
    }
    let reconfigured = crate::core::Reconfigured {
        lan: new.lan()?,
        allows: new.allows(),
        detect_local_bridges: new.detect_local_bridges,
        health_bound: Duration::from_secs_f64(new.dead_after_seconds),
        wireguard_dir: new.wireguard_dir.clone(),
        // Looked up again: a user created since the last load counts now.
        tunnel_only_users: crate::users::resolve_all(&new.tunnel_only_users),
        apps_only: new.apps_only,
        router_lans: new.router_lan_interfaces.clone(),
    };
    running.wireguard_dir = new.wireguard_dir;
    running.dead_after_seconds = new.dead_after_seconds;
    running.lan_subnets = new.lan_subnets;
    running.allow_interfaces = new.allow_interfaces;
    running.allow_subnets = new.allow_subnets;
    running.allow_inbound = new.allow_inbound;
    running.detect_local_bridges = new.detect_local_bridges;
    running.tunnel_only_users = new.tunnel_only_users;
    running.apps_only = new.apps_only;
    running.router_lan_interfaces = new.router_lan_interfaces;
    running.freeze_on_drop = new.freeze_on_drop;
    running.kill_on_drop = new.kill_on_drop;
    Ok(Box::new(reconfigured))
}

/// Stops: tells the service manager, gives the user's resolvers back (bounded), logs what stays.
async fn stop(core: &mut Core<Nftables>, dns: &mut Dns) -> anyhow::Result<()> {
    let _ = crate::notify::notify("STOPPING=1");
    // The tunnel goes with the daemon (the firewall stays): give the user's resolvers back, but
    // not at the price of a stop that hangs on a bus that does not answer.
    if tokio::time::timeout(STOP_DNS_BOUND, dns.restore())
        .await
        .is_err()
    {
        tracing::warn!(
            "giving the resolvers back took longer than {} ms; stopping anyway",
            STOP_DNS_BOUND.as_millis()
        );
    }
    let status = core.status();
    tracing::info!(
        state = %status.state,
        "stopping; the firewall stays as it is ({})",
        if status.firewall.installed { "rules installed" } else { "no rules" }
    );
    Ok(())
}

/// Sends one DNS query (the root's NS records) to the tunnel's resolver: any answer is a sign of
/// life in the device's statistics. Fire and forget; the answer is not read.
fn send_probe(resolver: std::net::IpAddr) {
    let bind = if resolver.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let query = [
        0x6b, 0x73, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
    ];
    let sent =
        std::net::UdpSocket::bind(bind).and_then(|socket| socket.send_to(&query, (resolver, 53)));
    if let Err(e) = sent {
        tracing::debug!("probe to {resolver} failed: {e}");
    }
}

/// nf_tables change notifications, filtered to the transactions other processes commit.
struct NftChanges {
    fd: tokio::io::unix::AsyncFd<killswitch_nft::monitor::Monitor>,
}

impl NftChanges {
    fn subscribe() -> anyhow::Result<Self> {
        let monitor = killswitch_nft::monitor::Monitor::subscribe()?;
        // SAFETY: the monitor owns its descriptor, which stays open as long as the AsyncFd exists.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(monitor, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(NftChanges { fd })
    }

    /// Waits until some other process commits an nf_tables transaction (or notifications were
    /// lost, which may hide one), and says who. The kernel names the committing thread; the
    /// daemon commits only from this one (the event loop's), so that is the id to tell apart.
    async fn foreign_change(&self) -> anyhow::Result<String> {
        let own = nix::unistd::gettid().as_raw() as u32;
        loop {
            let mut guard = self.fd.readable().await?;
            let changes = guard.get_inner().read()?;
            guard.clear_ready();
            if changes.overrun {
                return Ok("someone (notifications were lost)".to_owned());
            }
            let foreign: Vec<String> = changes
                .generations
                .iter()
                .filter(|g| g.pid != Some(own))
                .map(|g| g.committer())
                .collect();
            if !foreign.is_empty() {
                return Ok(foreign.join(", "));
            }
        }
    }
}

/// The watch on the daemon's cgroup subtree, once it exists (a warning if it cannot be set).
fn watch_bypass(bypass: &crate::bypass::Bypass) -> Option<crate::bypass::BypassWatch> {
    let root = bypass.root()?;
    crate::bypass::BypassWatch::new(root)
        .map_err(|e| tracing::warn!("bypass: watching {}: {e}", root.display()))
        .ok()
}

/// Resolves when the bypass cgroup may have changed; never without a watch.
async fn bypass_changed(watch: Option<&crate::bypass::BypassWatch>) -> std::io::Result<()> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// The system bus, for systemd-resolved and logind, if there is one. A bus that does not answer
/// in time is treated as absent: the kill switch must not wait on it.
async fn system_bus() -> Option<zbus::Connection> {
    match tokio::time::timeout(Duration::from_secs(2), zbus::Connection::system()).await {
        Ok(Ok(bus)) => Some(bus),
        Ok(Err(e)) => {
            tracing::info!("no system bus ({e}): DNS through resolv.conf, no resume signals");
            None
        }
        Err(_) => {
            tracing::warn!("the system bus did not answer within 2 s; going on without it");
            None
        }
    }
}

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// The signals that stop the daemon.
struct Stops {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Stops {
    async fn any(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// What carrying out the core's effects needs: DNS management, the status channels, the timer and
/// the reply to the command being carried out.
struct Io<'a, P: Fn(Status)> {
    dns: &'a mut Dns,
    publish: &'a P,
    wake: &'a mut Option<Instant>,
    reply: Option<tokio::sync::oneshot::Sender<Result<Status, IpcError>>>,
    /// Freeze on drop's watched cgroups.
    on_drop: &'a crate::freeze::Registry,
    /// When the input being carried out reached the loop (the freeze's delay is logged from it).
    input_at: Instant,
}

/// Carries out the core's effects in order. An effect that asks for an answer gets it at once,
/// and the effects of that answer come before the rest.
async fn perform<P: Fn(Status)>(
    core: &mut Core<Nftables>,
    effects: Vec<Effect>,
    io: &mut Io<'_, P>,
    stops: &mut Stops,
) -> Flow {
    let mut queue: VecDeque<Effect> = effects.into();
    while let Some(effect) = queue.pop_front() {
        let more = match effect {
            Effect::Look(name) => core.on(Input::Looked(links::observe(&name)), Instant::now()),
            Effect::Probe(resolver) => {
                send_probe(resolver);
                continue;
            }
            Effect::Publish(status) => {
                (io.publish)(status);
                continue;
            }
            Effect::WakeAt(at) => {
                *io.wake = at;
                continue;
            }
            Effect::Reply(answer) => {
                if let Some(reply) = io.reply.take() {
                    let _ = reply.send(answer);
                }
                continue;
            }
            Effect::Freeze { reason } => {
                let start = Instant::now();
                let report = io.on_drop.freeze(&reason);
                let took = start.elapsed();
                tracing::info!(
                    "{} in {} us, {} us after the input that showed it",
                    report.event.as_deref().unwrap_or("frozen"),
                    took.as_micros(),
                    io.input_at.elapsed().as_micros()
                );
                core.on(Input::OnDrop(report), Instant::now())
            }
            Effect::Thaw => {
                let report = io.on_drop.thaw();
                tracing::info!("{}", report.event.as_deref().unwrap_or("thawed"));
                core.on(Input::OnDrop(report), Instant::now())
            }
            Effect::Forward(lans) => {
                let results = lans
                    .into_iter()
                    .map(|lan| {
                        let result = crate::router::forward_on(&lan);
                        (lan, result)
                    })
                    .collect();
                core.on(Input::Forwarded(results), Instant::now())
            }
            Effect::Unforward(lans) => {
                for lan in lans {
                    match crate::router::forward_off(&lan) {
                        Ok(()) => tracing::info!("{lan} is no router LAN any more: forwarding off"),
                        // Gone with its interface: nothing is forwarded from it anyway.
                        Err(e) => tracing::debug!("{lan}: {e}"),
                    }
                }
                continue;
            }
            Effect::DeleteRouterFlows => {
                // After the new ruleset is in (the core asks only then): the flows' next packets
                // meet the new rules. A failure leaves the old entries to time out, which the
                // rules make harmless (the forward chain judges every packet); logged.
                let start = Instant::now();
                match killswitch_nft::conntrack::delete_marked(killswitch_policy::CT_MARK_ROUTER) {
                    Ok(()) => tracing::info!(
                        "router LANs: their conntrack entries deleted in {} us",
                        start.elapsed().as_micros()
                    ),
                    Err(e) => {
                        tracing::warn!("router LANs: deleting their conntrack entries failed: {e}")
                    }
                }
                continue;
            }
            Effect::SyncDns(want) => {
                // It can hold the loop up only as long as a D-Bus call's timeout, and never a
                // stop: SIGTERM must end the daemon within a second in every state.
                let changed = tokio::select! {
                    changed = io.dns.sync(want) => changed,
                    () = stops.any() => return Flow::Stop,
                };
                let status = io.dns.status();
                core.on(Input::DnsSynced { changed, status }, Instant::now())
            }
        };
        for effect in more.into_iter().rev() {
            queue.push_front(effect);
        }
    }
    Flow::Go
}

/// Answers the core's looks at once and returns its other effects: at start, before DNS can
/// be managed.
fn look_at_once(core: &mut Core<Nftables>, effects: Vec<Effect>) -> Vec<Effect> {
    let mut queue: VecDeque<Effect> = effects.into();
    let mut rest = Vec::new();
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Look(name) => {
                let more = core.on(Input::Looked(links::observe(&name)), Instant::now());
                for effect in more.into_iter().rev() {
                    queue.push_front(effect);
                }
            }
            other => rest.push(other),
        }
    }
    rest
}
