//! Wiring: configuration, the state machine, link events, the IPC server and signals, in one
//! single-threaded event loop. The state machine runs on this loop only, so no two events are ever
//! handled at once.

use crate::config::Config;
use crate::core::{Core, CoreOptions};
use crate::dns::Dns;
use crate::dns::resolv_conf::ResolvConf;
use crate::firewall::Nftables;
use crate::instance::Instance;
use crate::ipc::{Command, Server, Shared};
use crate::links::{self, LinkEvents};
use crate::sleep::SleepSignals;
use crate::store::Store;
use anyhow::Context;
use killswitch_types::ipc::Status;
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
}

/// The first retry after a failed apply, doubled up to [`RETRY_MAX`]. Only while failing: a
/// healthy daemon has no timers.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// How long a stop may spend giving DNS back: a stop must take less than a second.
const STOP_DNS_BOUND: Duration = Duration::from_millis(700);

/// When to retry a failed apply: an absolute instant, armed when applying starts failing and
/// moved only when it fires. Other events (the tunnel manager ticks every 50-500 ms while `up`)
/// must not postpone it: a deadline recreated on every pass of the loop never fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTimer {
    due: Option<Instant>,
    delay: Duration,
}

impl Default for RetryTimer {
    fn default() -> Self {
        RetryTimer {
            due: None,
            delay: RETRY_MIN,
        }
    }
}

impl RetryTimer {
    /// Follows the daemon's state after any event: arms the timer when applying fails and it is
    /// not armed yet (never moving a deadline that is set), disarms and resets it once applying
    /// works again.
    pub fn follow(&mut self, failing: bool, now: Instant) {
        match (failing, self.due) {
            (true, None) => self.due = Some(now + self.delay),
            (true, Some(_)) => {}
            (false, _) => *self = RetryTimer::default(),
        }
    }

    /// The deadline, if one is set.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The deadline passed and the retry ran: the next one, if still failing, waits twice as long
    /// (up to [`RETRY_MAX`]).
    pub fn fired(&mut self, failing: bool, now: Instant) {
        if failing {
            self.delay = (self.delay * 2).min(RETRY_MAX);
            self.due = Some(now + self.delay);
        } else {
            *self = RetryTimer::default();
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT. The firewall is left as it is on exit: stopping the
/// daemon never opens it (only `killswitch off` does).
pub async fn run(options: Options) -> anyhow::Result<()> {
    // First of all, the signal handlers: the service manager may stop the daemon at any moment
    // once it runs (and does, once READY=1 is sent), and a SIGTERM before them would kill it by the
    // default action, giving nothing back. A signal that comes during start-up waits in its
    // stream and ends the loop at its first pass.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // SIGHUP (a closed terminal, a habitual `kill -HUP`) stops cleanly, DNS given back, rather
    // than by the default action, which gives nothing back; reloading is not supported (yet).
    // SIGUSR1/SIGUSR2 would kill the daemon the same way: they are ignored, and say so.
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
    let (config, config_fault) = match Config::load(&options.config) {
        Ok(config) => (config, None),
        Err(e) => {
            tracing::error!(
                "{e}; blocking until the configuration is fixed and the daemon restarted"
            );
            (Config::default(), Some(e.to_string()))
        }
    };
    let core_options = CoreOptions {
        wireguard_dir: config.wireguard_dir.clone(),
        health_bound: Duration::from_secs_f64(config.dead_after_seconds),
        // The configuration was validated when loaded (a bad one is the default plus a fault).
        lan: config.lan().unwrap_or_default(),
        ..CoreOptions::new(&options.state_dir)
    };
    let mut core = Core::new(
        options.firewall,
        Store::open(&options.state_dir),
        config_fault,
        core_options,
        Instant::now(),
    );
    if let Some(error) = core.status().error {
        tracing::error!("{error}");
    }

    // The firewall goes up before anything is served: nobody's request is read before it, and a
    // restart replaces the previous daemon's table in one transaction.
    let link_events = LinkEvents::subscribe().context("subscribing to link changes")?;
    let nft_changes = NftChanges::subscribe().context("subscribing to nftables changes")?;
    observe(&mut core);
    core.reconcile();

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
    tracing::info!(state = %first.state, lockdown = first.lockdown, allow_lan = first.allow_lan, "started");

    let (status_tx, status_rx) = watch::channel(first);
    let (events, _) = broadcast::channel::<Status>(64);
    let (commands_tx, mut commands) = mpsc::channel::<Command>(32);
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
    };
    tracing::info!("listening on {}", options.socket.display());
    if let Err(e) = crate::notify::notify("READY=1") {
        tracing::warn!("telling the service manager we are ready failed: {e}");
    }

    let mut retry = RetryTimer::default();
    let mut pending_reply = None;
    let publish = |status: Status| {
        let _ = events.send(status.clone());
        status_tx.send_replace(status);
    };

    let serving = server.serve(shared);
    tokio::pin!(serving);
    loop {
        retry.follow(core.needs_retry(), Instant::now());
        let retry_at = retry.due();
        let retrying = tokio::time::sleep_until(tokio::time::Instant::from_std(
            retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        ));
        // The tunnel manager's ticks: only while `up` (every 500 ms when up, faster while quiet
        // or connecting), the daemon's only periodic wakeup.
        let tick_at = core.next_tick(Instant::now());
        let ticking = tokio::time::sleep_until(tokio::time::Instant::from_std(
            tick_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        ));
        tokio::select! {
            () = &mut serving => anyhow::bail!("the IPC server stopped"),
            Some(command) = commands.recv() => {
                if command.reply.is_closed() {
                    // Its sender gave up waiting (and told its user nothing was changed).
                    tracing::info!(uid = command.peer.uid, pid = command.peer.pid, "request `{}` withdrawn: its sender hung up before it was carried out", command.request.name());
                    continue;
                }
                tracing::info!(uid = command.peer.uid, pid = command.peer.pid, "request `{}`", command.request.name());
                let answer = core.handle(&command.request);
                // The guarded interface may have changed: look at the new one.
                if observe(&mut core) {
                    core.reconcile();
                }
                publish(core.status());
                // Answered once DNS has followed too (below), so that the reply to `down` or
                // `up` says where DNS points now.
                pending_reply = Some((command.reply, answer));
            }
            committer = nft_changes.foreign_change() => {
                match committer {
                    Ok(committer) => {
                        if core.check_installed(&committer) {
                            publish(core.status());
                        }
                    }
                    Err(e) => tracing::warn!("reading nftables changes failed: {e}"),
                }
            }
            () = ticking, if tick_at.is_some() => {
                let tick = core.tick(Instant::now());
                if let Some(resolver) = tick.probe {
                    send_probe(resolver);
                }
                if tick.changed {
                    publish(core.status());
                }
            }
            changed = link_events.changed() => {
                if let Err(e) = changed {
                    tracing::warn!("reading link changes failed: {e}");
                }
                // A new network (or the tunnel's own link changing): look at the tunnel now.
                core.check_now();
                // Level-triggered: look again, and let reconcile repair whatever is off (it changes
                // nothing when everything is as it should be).
                // What was seen can change the status by itself (an untrusted interface).
                let seen = observe(&mut core);
                if core.reconcile() || seen {
                    publish(core.status());
                }
            }
            () = retrying, if retry_at.is_some() => {
                tracing::info!("retrying the firewall");
                // What was seen can change the status by itself (an untrusted interface).
                let seen = observe(&mut core);
                if core.reconcile() || seen {
                    publish(core.status());
                }
                retry.fired(core.needs_retry(), Instant::now());
            }
            // Someone may have rewritten the resolv.conf the daemon manages: the DNS sync below
            // looks at it (never fires while the daemon manages none).
            () = dns.resolv_conf_touched() => {}
            () = sleep.woke() => {
                tracing::info!("the machine woke up: looking at the tunnel now");
                core.check_now();
                // What was seen can change the status by itself (an untrusted interface).
                let seen = observe(&mut core);
                if core.reconcile() || seen {
                    publish(core.status());
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: stopping cleanly (reloading the configuration is not supported; start the daemon again to read it)");
                break;
            }
            _ = user1.recv() => tracing::warn!("SIGUSR1 means nothing to killswitchd; ignored"),
            _ = user2.recv() => tracing::warn!("SIGUSR2 means nothing to killswitchd; ignored"),
        }
        // DNS follows the firewall (unblocked, then pointed at the tunnel; blocked, then given
        // back). It can hold the loop up only as long as a D-Bus call's timeout, and never a
        // stop: SIGTERM must end the daemon within a second in every state.
        let synced = tokio::select! {
            changed = dns.sync(core.dns_want()) => changed,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => break,
        };
        if synced {
            core.set_dns_status(dns.status());
            publish(core.status());
        }
        if let Some((reply, answer)) = pending_reply.take() {
            let _ = reply.send(answer.map(|_| core.status()));
        }
    }
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

/// Looks at the guarded interface. Returns whether what the daemon sees changed.
fn observe(core: &mut Core<Nftables>) -> bool {
    let observed = core.guarded_interface().and_then(links::observe);
    core.observe(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_events_do_not_postpone_a_retry() {
        let t0 = Instant::now();
        let mut retry = RetryTimer::default();
        retry.follow(true, t0);
        assert_eq!(retry.due(), Some(t0 + RETRY_MIN));
        // The manager's ticks every 50 ms, link events, commands: each pass of the loop follows
        // the state again, and the deadline stays where it was.
        for n in 1..100 {
            retry.follow(true, t0 + Duration::from_millis(50 * n));
        }
        assert_eq!(retry.due(), Some(t0 + RETRY_MIN));
    }

    #[test]
    fn retries_back_off_while_failing_and_reset_on_success() {
        let t0 = Instant::now();
        let mut retry = RetryTimer::default();
        retry.follow(true, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let due = retry.due().expect("armed");
            delays.push(due - now);
            now = due;
            retry.fired(true, now);
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        retry.fired(false, now);
        assert_eq!(retry.due(), None);
        retry.follow(true, now);
        assert_eq!(
            retry.due(),
            Some(now + RETRY_MIN),
            "a new failure starts over"
        );
        retry.follow(false, now);
        assert_eq!(retry, RetryTimer::default());
    }
}
