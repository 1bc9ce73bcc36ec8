//! The WireGuard connection manager behind `killswitch up`.
//!
//! It owns the tunnel device and walks it through its phases; the state machine ([`crate::core`])
//! owns the firewall and asks the manager, on every tick, what happened. The order the kill switch
//! needs falls out of that split: the firewall moves first (the hole to the next server, tunnel
//! traffic blocked) and only then the device is reconfigured; traffic is unblocked only after the
//! manager reports a completed handshake.
//!
//! Phases: `Waiting` (before an attempt, with exponential backoff) -> `Handshaking` (configured,
//! bounded wait) -> `Up` (watched by a [`Tracker`]). A failure at any point moves to the next
//! server and back to `Waiting`.

#![forbid(unsafe_code)]

use crate::target::UpSpec;
use killswitch_tunnel::TunnelError;
use killswitch_tunnel::backend::{Backend, BackendKind};
use killswitch_tunnel::config::TunnelConfig;
use killswitch_tunnel::health::{Health, Tracker};
use killswitch_tunnel::netdev::Presence;
use killswitch_types::{FailureCause, Fwmark, ServerFailure};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a handshake may take before the next server is tried.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a probe is repeated while a handshake is in progress.
const HANDSHAKE_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a handshake in progress is looked at.
const HANDSHAKE_POLL: Duration = Duration::from_millis(50);
/// The longest pause between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// wg-quick's default mark (and routing table): 51820.
pub const DEFAULT_FWMARK: u32 = 0xca6c;

/// Creates a device for an interface name (the real backends, or a fake in tests).
pub type Factory = Box<dyn FnMut(&str) -> Result<Box<dyn Backend>, TunnelError>>;

#[derive(Debug)]
enum Phase {
    Waiting {
        until: Instant,
    },
    Handshaking {
        started: Instant,
        deadline: Instant,
        last_probe: Instant,
        /// The device's byte counters when the attempt began (`None` if they could not be
        /// read, or if this backend does not count handshake packets): what moved by the
        /// deadline tells a server that never answered from packets that never left.
        sent_before: Option<Counters>,
    },
    Up {
        tracker: Tracker,
    },
}

/// A device's byte counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    tx: u64,
    rx: u64,
}

/// What a tick found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing that concerns the firewall.
    Nothing,
    /// The device is configured for a server and waits for the handshake: the firewall must admit
    /// the probe (see [`Manager::probe`]), which then starts the handshake.
    Attempted {
        /// Where to send the first probe, if the server has a resolver.
        probe: Option<IpAddr>,
    },
    /// Send a probe through the tunnel to this resolver (its answer is a sign of life).
    Probe(IpAddr),
    /// The handshake completed: traffic may flow.
    Connected,
    /// The tunnel is lost (or never came up); the manager moved on to another server. The
    /// firewall must block and move its hole before the next attempt.
    Lost,
}

/// The manager.
pub struct Manager {
    spec: UpSpec,
    active: usize,
    attempt: u32,
    device: Option<Box<dyn Backend>>,
    phase: Phase,
    bound: Duration,
    urgent: bool,
    /// When the next tick is due: absolute, so that other events cannot postpone it.
    due: Instant,
    last_event: Option<String>,
    /// Why the last attempt or tunnel failed, until one connects: what `status` shows as the
    /// error while the tunnel is not up.
    last_failure: Option<String>,
    /// Why each server failed last, by server index; a server's entry goes when it connects.
    failures: Vec<Option<ServerFailure>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Manager({}, server {}, {:?})",
            self.spec.interface, self.active, self.phase
        )
    }
}

impl Manager {
    /// A manager for `spec` that declares a tunnel dead after `bound` without a sign of life.
    /// The first attempt is due at once.
    pub fn new(spec: UpSpec, bound: Duration, now: Instant) -> Self {
        Manager {
            active: 0,
            attempt: 0,
            device: None,
            phase: Phase::Waiting { until: now },
            bound,
            urgent: false,
            due: now,
            last_event: None,
            last_failure: None,
            failures: vec![None; spec.servers().count()],
            spec,
        }
    }

    /// What it manages.
    pub fn spec(&self) -> &UpSpec {
        &self.spec
    }

    /// The server in use (or about to be).
    pub fn active(&self) -> (usize, &TunnelConfig) {
        (self.active, self.spec.server(self.active))
    }

    /// The fwmark of the active server's socket.
    pub fn fwmark(&self) -> Fwmark {
        fwmark_of(self.active().1)
    }

    /// Whether the tunnel has completed its handshake and is not (yet) declared dead.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    /// The probe the firewall must admit while the handshake is pending: the tunnel's resolver,
    /// through the tunnel. WireGuard starts a handshake only when it has a packet to send, and
    /// until the handshake everything else is blocked.
    pub fn probe(&self) -> Option<killswitch_policy::Probe> {
        let Phase::Handshaking { .. } = self.phase else {
            return None;
        };
        let resolver = *self.active().1.dns.first()?;
        Some(killswitch_policy::Probe {
            interface: self.spec.interface.clone(),
            resolver,
        })
    }

    /// The backend running the device, once there is one.
    pub fn backend(&self) -> Option<BackendKind> {
        self.device.as_ref().map(|d| d.kind())
    }

    /// Connection attempts since the tunnel was last up.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The last thing that happened, with its reason.
    pub fn last_event(&self) -> Option<&str> {
        self.last_event.as_deref()
    }

    /// Why the last attempt failed, if none has connected since.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Why each server that failed last failed, in server order (the servers that connected
    /// since, or were never tried, have no entry).
    pub fn failures(&self) -> Vec<ServerFailure> {
        self.failures.iter().flatten().cloned().collect()
    }

    /// Look at the tunnel at once (a network change, a wake from sleep) instead of at the next
    /// probe interval.
    pub fn check_now(&mut self) {
        self.urgent = true;
    }

    /// When the next tick is due.
    pub fn next_tick(&self, now: Instant) -> Instant {
        if self.urgent { now } else { self.due }
    }

    /// Advances the phases.
    pub fn tick(&mut self, now: Instant, factory: &mut Factory) -> Step {
        let step = self.advance(now, factory);
        self.due = match &self.phase {
            Phase::Waiting { until } => *until,
            Phase::Handshaking { .. } => now + HANDSHAKE_POLL,
            Phase::Up { tracker } => tracker.next_look(now),
        };
        step
    }

    fn advance(&mut self, now: Instant, factory: &mut Factory) -> Step {
        let urgent = std::mem::take(&mut self.urgent);
        // The rules let everything out by the interface's name: a device whose name now leads
        // to another interface (someone renamed it away and made their own), or nowhere, or
        // that someone set down, carries no tunnel, whatever its statistics say.
        if !matches!(self.phase, Phase::Waiting { .. })
            && let Some(why) = self.device_lost()
        {
            return self.fail(FailureCause::DeviceLost, &why, now);
        }
        match &mut self.phase {
            Phase::Waiting { until } if now >= *until => match self.attempt_connect(now, factory) {
                Ok(()) => Step::Attempted {
                    probe: self.probe().map(|p| p.resolver),
                },
                Err((cause, reason)) => self.fail(cause, &reason, now),
            },
            Phase::Waiting { .. } => Step::Nothing,
            Phase::Handshaking {
                started,
                deadline,
                last_probe,
                sent_before,
            } => {
                let (started, deadline, sent_before) = (*started, *deadline, *sent_before);
                let probe_due =
                    now.saturating_duration_since(*last_probe) >= HANDSHAKE_PROBE_INTERVAL;
                if probe_due {
                    *last_probe = now;
                }
                let stats = self.stats();
                match stats {
                    Ok(Some(stats)) if stats.last_handshake.is_some() => {
                        let mut tracker = Tracker::new(self.bound, now);
                        // The handshake just seen is the baseline, not a later sign of life.
                        tracker.observe(&stats, now);
                        self.phase = Phase::Up { tracker };
                        self.attempt = 0;
                        self.last_failure = None;
                        if let Some(entry) = self.failures.get_mut(self.active) {
                            *entry = None;
                        }
                        self.event(format!(
                            "connected to {} in {} ms",
                            self.describe_active(),
                            (now - started).as_millis()
                        ));
                        Step::Connected
                    }
                    Err(e) => self.fail(
                        FailureCause::DeviceError,
                        &format!("the device failed: {e}"),
                        now,
                    ),
                    Ok(stats) if now >= deadline => {
                        let after = stats.map(|s| Counters {
                            tx: s.tx_bytes,
                            rx: s.rx_bytes,
                        });
                        let (cause, reason) = handshake_timeout(sent_before, after);
                        self.fail(cause, &reason, now)
                    }
                    // WireGuard retries its handshake by itself once started; probing again
                    // covers a first packet that was lost.
                    _ if probe_due => self
                        .probe()
                        .map_or(Step::Nothing, |p| Step::Probe(p.resolver)),
                    _ => Step::Nothing,
                }
            }
            Phase::Up { .. } => {
                let stats = self.stats();
                let Phase::Up { tracker } = &mut self.phase else {
                    return Step::Nothing;
                };
                let health = match stats {
                    Ok(Some(stats)) => tracker.observe(&stats, now),
                    _ => tracker.judge(now),
                };
                let probe = self.spec.server(self.active).dns.first().copied();
                match health {
                    Health::Dead { silent } => self.fail(
                        FailureCause::Silent,
                        &format!(
                            "no sign of life for {:.1} s (the server stopped answering, or the \
                             network to it went)",
                            silent.as_secs_f64()
                        ),
                        now,
                    ),
                    Health::Probe | Health::Alive if urgent => {
                        probe.map_or(Step::Nothing, Step::Probe)
                    }
                    Health::Probe => probe.map_or(Step::Nothing, Step::Probe),
                    Health::Alive => Step::Nothing,
                }
            }
        }
    }

    /// Removes the device (the tunnel goes away). The caller has already blocked.
    pub fn stop(&mut self) {
        self.device = None;
    }

    /// Why the device's interface no longer carries the tunnel, if it does not.
    fn device_lost(&self) -> Option<String> {
        let device = self.device.as_ref()?;
        let name = &self.spec.interface;
        match device.presence() {
            Presence::Up => None,
            Presence::Down => Some(format!("{name} was set down")),
            Presence::Gone => Some(format!("{name} was deleted")),
            Presence::Replaced => Some(format!(
                "{name} was replaced by another interface of that name"
            )),
        }
    }

    fn stats(&self) -> Result<Option<killswitch_tunnel::uapi::PeerStats>, TunnelError> {
        match &self.device {
            Some(device) => device.stats(),
            None => Ok(None),
        }
    }

    fn attempt_connect(
        &mut self,
        now: Instant,
        factory: &mut Factory,
    ) -> Result<(), (FailureCause, String)> {
        // Counted before anything can fail: an attempt that fails at once (no /dev/net/tun, an
        // address the kernel refuses) must back off like any other, not spin.
        self.attempt += 1;
        let fwmark = self.fwmark().get();
        let config = self.active().1.clone();
        // A device whose interface went (someone deleted it) is replaced; an interface that now
        // carries its name under another index is not its own (the factory decides about that).
        let fresh = match &self.device {
            None => true,
            Some(device) => matches!(device.presence(), Presence::Gone | Presence::Replaced),
        };
        if fresh {
            self.device = None;
            let device = factory(self.spec.interface.as_str()).map_err(|e| {
                (
                    FailureCause::DeviceCreation,
                    format!(
                        "creating {}: {}",
                        self.spec.interface,
                        crate::firewall::chain(&e)
                    ),
                )
            })?;
            self.device = Some(device);
        }
        let device = self
            .device
            .as_mut()
            .ok_or_else(|| (FailureCause::DeviceCreation, "no device".to_owned()))?;
        device.configure(&config, fwmark).map_err(|e| {
            (
                FailureCause::Config,
                format!("configuring: {}", crate::firewall::chain(&e)),
            )
        })?;
        // Read after configuring: a device reconfigured for the same peer keeps its counters.
        // Only the kernel's WireGuard counts handshake packets (boringtun counts data only, so
        // before a handshake its counters say nothing).
        let sent_before = (device.kind() == BackendKind::Kernel)
            .then(|| device.stats().ok().flatten())
            .flatten()
            .map(|s| Counters {
                tx: s.tx_bytes,
                rx: s.rx_bytes,
            });
        self.phase = Phase::Handshaking {
            started: now,
            deadline: now + HANDSHAKE_TIMEOUT,
            last_probe: now,
            sent_before,
        };
        self.event(format!(
            "attempt {} to {}",
            self.attempt,
            self.describe_active()
        ));
        Ok(())
    }

    fn fail(&mut self, cause: FailureCause, reason: &str, now: Instant) -> Step {
        let failed = self.describe_active();
        if let Some(entry) = self.failures.get_mut(self.active) {
            *entry = Some(ServerFailure {
                server: self.active,
                cause,
                message: reason.to_owned(),
            });
        }
        self.active = self.spec.next(self.active);
        // The first retry is immediate (usually to another server); then 250 ms, doubling, capped.
        let delay = match self.attempt {
            0 | 1 => Duration::ZERO,
            n => (Duration::from_millis(250) * 2u32.saturating_pow(n - 2)).min(BACKOFF_CAP),
        };
        self.phase = Phase::Waiting { until: now + delay };
        self.last_failure = Some(format!("{failed}: {reason}"));
        self.event(format!(
            "lost {failed}: {reason}; next: {} in {} ms",
            self.describe_active(),
            delay.as_millis()
        ));
        Step::Lost
    }

    fn describe_active(&self) -> String {
        let (index, config) = self.active();
        format!(
            "server {} ({}, {})",
            index + 1,
            config.source,
            config.peer.endpoint
        )
    }

    fn event(&mut self, event: String) {
        tracing::info!(interface = %self.spec.interface, "{event}");
        self.last_event = Some(event);
    }
}

/// Why no handshake completed in time, told from what the device's byte counters did since the
/// attempt began (`before` is `None` where they cannot tell). The kernel's WireGuard counts
/// handshake packets, and only those the socket accepted (`wg_socket_send_skb_to_peer` adds to
/// `tx_bytes` only when the send returned 0), so packets that could not be sent (no route to the
/// server) leave `tx` where it was; a server that drops what it cannot accept (a
/// wrong key on either side: WireGuard never answers one) or that is down leaves `rx` where it
/// was. Without counters that count handshakes, the three look the same, and the message says so.
fn handshake_timeout(before: Option<Counters>, after: Option<Counters>) -> (FailureCause, String) {
    let within = format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
    let Some((before, after)) = before.zip(after) else {
        return (
            FailureCause::NoHandshake,
            format!(
                "{within}: wrong key or server down (or the server unreachable: this \
                 WireGuard backend cannot tell them apart)"
            ),
        );
    };
    let sent = after.tx.saturating_sub(before.tx);
    let received = after.rx.saturating_sub(before.rx);
    if sent == 0 {
        (
            FailureCause::Unreachable,
            format!("{within}: not one packet could be sent to the server (no route to it?)"),
        )
    } else if received == 0 {
        (
            FailureCause::NoHandshake,
            format!("{within}: {sent} bytes sent, nothing came back: wrong key or server down"),
        )
    } else {
        (
            FailureCause::AnsweredWithoutHandshake,
            format!(
                "{within}: the server answered ({received} bytes) but no handshake completed \
                 (a server under load answers with a cookie first)"
            ),
        )
    }
}

/// The mark a configuration's socket gets: its own `FwMark`, else wg-quick's default.
pub fn fwmark_of(config: &TunnelConfig) -> Fwmark {
    const DEFAULT: Fwmark = match Fwmark::new(DEFAULT_FWMARK) {
        Some(mark) => mark,
        None => panic!("the default fwmark is not zero"),
    };
    config.fwmark.unwrap_or(DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_tunnel::key::PublicKey;
    use killswitch_tunnel::uapi::PeerStats;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    const CONF: &str = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.64.0.2/32\nDNS = 10.64.0.1\n\
        [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0\n";

    /// What the fake device reports, shared with the test.
    #[derive(Debug, Default)]
    struct Script {
        /// Kernel WireGuard counts handshake packets; userspace (the default here) does not.
        kernel: bool,
        handshake: Option<SystemTime>,
        rx: u64,
        tx: u64,
        configured: Vec<(String, u32, Option<u16>)>,
    }

    #[derive(Debug)]
    struct Fake(Arc<Mutex<Script>>);

    impl Backend for Fake {
        fn kind(&self) -> BackendKind {
            match self.0.lock() {
                Ok(s) if s.kernel => BackendKind::Kernel,
                _ => BackendKind::Userspace,
            }
        }
        fn interface(&self) -> &str {
            "fake0"
        }
        fn index(&self) -> u32 {
            0
        }
        fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError> {
            let mut s = self
                .0
                .lock()
                .map_err(|_| TunnelError::Backend("poisoned".into()))?;
            s.configured.push((
                config.peer.endpoint.to_string(),
                fwmark,
                config.peer.persistent_keepalive,
            ));
            Ok(())
        }
        fn presence(&self) -> Presence {
            Presence::Up
        }
        fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
            let s = self
                .0
                .lock()
                .map_err(|_| TunnelError::Backend("poisoned".into()))?;
            Ok(Some(PeerStats {
                public_key: PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
                    .map_err(|e| TunnelError::Backend(e.to_string()))?,
                last_handshake: s.handshake,
                rx_bytes: s.rx,
                tx_bytes: s.tx,
            }))
        }
    }

    fn spec() -> UpSpec {
        let second = CONF.replace("198.51.100.1:51820", "198.51.100.2:51821");
        UpSpec::new(
            "nosuchtun0".parse().expect("name"),
            vec![
                killswitch_tunnel::config::parse("one.conf", CONF).expect("valid"),
                killswitch_tunnel::config::parse("two.conf", &second).expect("valid"),
            ],
        )
        .expect("a valid spec")
    }

    fn setup() -> (Manager, Factory, Arc<Mutex<Script>>, Instant) {
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        let factory: Factory =
            Box::new(move |_| Ok(Box::new(Fake(shared.clone())) as Box<dyn Backend>));
        let now = Instant::now();
        (
            Manager::new(spec(), Duration::from_secs(3), now),
            factory,
            script,
            now,
        )
    }

    #[test]
    fn probes_into_the_tunnel_until_the_handshake_completes() {
        let (mut m, mut f, script, t0) = setup();
        let resolver: IpAddr = "10.64.0.1".parse().expect("ip");
        assert_eq!(
            m.tick(t0, &mut f),
            Step::Attempted {
                probe: Some(resolver)
            }
        );
        assert!(!m.is_up());
        assert_eq!(
            m.probe().map(|p| p.resolver),
            Some(resolver),
            "the firewall must admit the probe"
        );
        let configured = script.lock().expect("lock").configured.clone();
        assert_eq!(
            configured,
            vec![("198.51.100.1:51820".to_owned(), DEFAULT_FWMARK, None)]
        );
        assert_eq!(
            m.tick(t0 + Duration::from_millis(50), &mut f),
            Step::Nothing,
            "no handshake yet"
        );
        assert_eq!(
            m.tick(t0 + Duration::from_millis(1000), &mut f),
            Step::Probe(resolver),
            "probe again after a second"
        );
        script.lock().expect("lock").handshake = Some(SystemTime::now());
        assert_eq!(
            m.tick(t0 + Duration::from_millis(100), &mut f),
            Step::Connected
        );
        assert!(m.is_up());
        assert_eq!(
            m.probe(),
            None,
            "up: the probe rule goes; the tunnel itself is open"
        );
        assert!(
            m.last_event()
                .is_some_and(|e| e.starts_with("connected to server 1 (one.conf"))
        );
    }

    #[test]
    fn silence_means_probes_then_failover_to_the_next_server() {
        let (mut m, mut f, script, t0) = setup();
        m.tick(t0, &mut f);
        script.lock().expect("lock").handshake = Some(SystemTime::now());
        m.tick(t0, &mut f);
        let s = Duration::from_secs;
        let probe = Step::Probe("10.64.0.1".parse().expect("ip"));
        assert_eq!(
            m.tick(t0 + Duration::from_millis(500), &mut f),
            Step::Nothing,
            "alive"
        );
        assert_eq!(
            m.tick(t0 + s(1), &mut f),
            probe,
            "a third of the bound silent: probe"
        );
        assert_eq!(m.tick(t0 + s(2), &mut f), probe);
        assert_eq!(
            m.tick(t0 + s(3), &mut f),
            Step::Lost,
            "3 s without a sign of life"
        );
        assert_eq!(m.active().0, 1, "moved to server 2");
        assert!(!m.is_up());
        assert!(m.last_event().is_some_and(
            |e| e.contains("no sign of life for 3.0 s") && e.contains("server 2 (two.conf")
        ));
        assert_eq!(
            m.next_tick(t0 + s(3)),
            t0 + s(3),
            "the first retry is immediate"
        );
        m.tick(t0 + s(3), &mut f);
        let configured = script.lock().expect("lock").configured.clone();
        assert_eq!(
            configured.last().map(|c| c.0.as_str()),
            Some("198.51.100.2:51821")
        );
    }

    #[test]
    fn received_traffic_keeps_it_alive() {
        let (mut m, mut f, script, t0) = setup();
        m.tick(t0, &mut f);
        script.lock().expect("lock").handshake = Some(SystemTime::now());
        m.tick(t0, &mut f);
        // Read as often as the manager asks to; bytes arrive between readings.
        let mut now = t0;
        for i in 1..20 {
            script.lock().expect("lock").rx = i * 100;
            now = m.next_tick(now);
            assert_eq!(m.tick(now, &mut f), Step::Nothing, "reading {i}");
        }
        assert!(
            now >= t0 + Duration::from_secs(9),
            "the readings spanned {:?}",
            now - t0
        );
    }

    #[test]
    fn no_handshake_in_time_moves_on_with_backoff() {
        let (mut m, mut f, _script, t0) = setup();
        m.tick(t0, &mut f);
        assert_eq!(m.tick(t0 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        assert!(
            m.last_event()
                .is_some_and(|e| e.contains("no handshake within 5 s"))
        );
        let t1 = t0 + HANDSHAKE_TIMEOUT;
        m.tick(t1, &mut f); // attempt 2, immediately
        assert_eq!(m.tick(t1 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        let t2 = t1 + HANDSHAKE_TIMEOUT;
        assert_eq!(
            m.next_tick(t2),
            t2 + Duration::from_millis(250),
            "then backoff starts"
        );
        assert_eq!(m.active().0, 0, "round robin back to server 1");
    }

    #[test]
    fn a_handshake_that_never_leaves_is_unreachable_and_one_unanswered_is_no_handshake() {
        let (mut m, mut f, script, t0) = setup();
        script.lock().expect("lock").kernel = true;
        m.tick(t0, &mut f);
        // Nothing sent by the deadline: the socket refused every packet.
        assert_eq!(m.tick(t0 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        let failures = m.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].server, 0);
        assert_eq!(failures[0].cause, FailureCause::Unreachable);
        assert!(failures[0].message.contains("not one packet could be sent"));
        // Server 2: packets go out, nothing comes back.
        let t1 = t0 + HANDSHAKE_TIMEOUT;
        m.tick(t1, &mut f);
        script.lock().expect("lock").tx += 444;
        assert_eq!(m.tick(t1 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        let failures = m.failures();
        assert_eq!(
            failures
                .iter()
                .map(|f| (f.server, f.cause))
                .collect::<Vec<_>>(),
            vec![
                (0, FailureCause::Unreachable),
                (1, FailureCause::NoHandshake)
            ],
            "one cause per server, in server order"
        );
        assert!(
            failures[1]
                .message
                .contains("444 bytes sent, nothing came back: wrong key or server down"),
            "{}",
            failures[1].message
        );
        assert!(
            m.last_failure()
                .is_some_and(|f| f.contains("wrong key or server down"))
        );
    }

    #[test]
    fn an_answer_without_a_handshake_is_told_apart() {
        let (mut m, mut f, script, t0) = setup();
        script.lock().expect("lock").kernel = true;
        m.tick(t0, &mut f);
        {
            let mut s = script.lock().expect("lock");
            s.tx += 148;
            s.rx += 92;
        }
        assert_eq!(m.tick(t0 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        assert_eq!(
            m.failures().first().map(|f| f.cause),
            Some(FailureCause::AnsweredWithoutHandshake)
        );
    }

    #[test]
    fn where_the_counters_cannot_tell_the_message_says_so() {
        // Userspace WireGuard: its counters stay at zero until a handshake, whatever was sent.
        let (mut m, mut f, _script, t0) = setup();
        m.tick(t0, &mut f);
        assert_eq!(m.tick(t0 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        let failure = m.failures().into_iter().next().expect("a failure");
        assert_eq!(
            failure.cause,
            FailureCause::NoHandshake,
            "never `unreachable` by guess"
        );
        assert!(
            failure
                .message
                .contains("wrong key or server down (or the server unreachable"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_server_that_connects_loses_its_failure_and_a_silent_tunnel_says_so() {
        let (mut m, mut f, script, t0) = setup();
        m.tick(t0, &mut f);
        assert_eq!(m.tick(t0 + HANDSHAKE_TIMEOUT, &mut f), Step::Lost);
        let t1 = t0 + HANDSHAKE_TIMEOUT;
        m.tick(t1, &mut f); // server 2
        script.lock().expect("lock").handshake = Some(SystemTime::now());
        assert_eq!(m.tick(t1, &mut f), Step::Connected);
        assert_eq!(
            m.failures().iter().map(|f| f.server).collect::<Vec<_>>(),
            vec![0],
            "server 2 connected: only server 1's failure is left"
        );
        // Server 2 goes silent.
        let mut now = t1;
        let step = loop {
            now = m.next_tick(now);
            let step = m.tick(now, &mut f);
            if step == Step::Lost || now > t1 + Duration::from_secs(10) {
                break step;
            }
        };
        assert_eq!(step, Step::Lost);
        let silent = m.failures().into_iter().find(|f| f.server == 1);
        assert_eq!(silent.map(|f| f.cause), Some(FailureCause::Silent));
    }

    #[test]
    fn a_device_that_cannot_be_created_is_a_failed_attempt() {
        let mut f: Factory = Box::new(|_| Err(TunnelError::Backend("no tun".into())));
        let t0 = Instant::now();
        let mut m = Manager::new(spec(), Duration::from_secs(3), t0);
        assert_eq!(m.tick(t0, &mut f), Step::Lost);
        assert!(m.last_event().is_some_and(|e| e.contains("no tun")));
        assert!(m.last_failure().is_some_and(|e| e.contains("no tun")));
        assert_eq!(
            m.failures().first().map(|f| f.cause),
            Some(FailureCause::DeviceCreation)
        );
        // Failing at once, again and again, still backs off.
        let mut now = t0;
        for _ in 0..10 {
            now = m.next_tick(now);
            assert_eq!(m.tick(now, &mut f), Step::Lost);
        }
        assert!(
            now >= t0 + Duration::from_secs(20),
            "ten immediate failures took {:?}",
            now - t0
        );
    }
}
