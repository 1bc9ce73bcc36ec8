//! Benchmark 2: the leak window under a tunnel drop. How many packets leave the physical link
//! when the VPN tunnel drops under load, with killswitch and with two application-level kill
//! switches written the way VPN clients write them:
//!
//! - killswitchd in guard mode (its rules are in the kernel before the drop);
//! - a poller that checks every 100 ms whether the tunnel's interface exists and is up, and when
//!   it is not, runs `nft` to insert a table that drops everything but loopback, DHCP and the
//!   tunnel's own packets (deleted again when the interface is back);
//! - a reactor that subscribes to rtnetlink link events and runs the same `nft` on the first
//!   event saying the interface went away or down.
//!
//! Each mechanism gets a fresh lab (client and net namespaces, a real wireguard-go tunnel with
//! wg-quick's policy routing, sinks, a capture on the client's physical link). A drop kills the
//! client's wireguard-go with SIGKILL while the generator offers [`RATE`] packets/s: its interface
//! vanishes with the route into it, and wg-quick's routing then sends everything out of the
//! physical link unless something blocks it. The lab's oracle judges every outgoing frame of the
//! window; a leak is any that is neither the tunnel's own transport nor link bring-up.

use crate::input::run_with_input;
use crate::stats::{Samples, human};
use anyhow::{Context, Result, bail, ensure};
use killswitch_lab::generator::Kind;
use killswitch_lab::lab::{EVENT_TIMEOUT, Lab, Measurement, hold};
use killswitch_lab::netns::Netns;
use killswitch_lab::topology::ENDPOINT_V4;
use killswitch_lab::wireguard::PORT;
use killswitch_types::State;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The generator's rate, packets per second in total. The issue asks for at least 10,000 offered;
/// the table reports the rate over whole windows, which include the generator's start and its
/// stop (closing its TCP attempts), hence a little headroom.
const RATE: u32 = 11_000;
/// What the generator sends: what the lab's tunnel carries (IPv4 only; IPv6 would go out of the
/// physical link even while connected, a leak of the lab's tunnel rather than of the drop).
const KINDS: [Kind; 4] = [Kind::Udp4, Kind::Tcp4, Kind::Icmp4, Kind::DnsTunnel];
/// Traffic through the intact tunnel before each drop, so that the generator is at full rate
/// when the tunnel goes. Each drop adds its own share of one poll period (see [`stagger`]).
const BEFORE_DROP: Duration = Duration::from_millis(100);
/// How long each window lasts after the kill: well past the slowest baseline's reaction (a
/// 100 ms poll plus an `nft` run), so that every leak of the drop falls inside it.
const OUTAGE: Duration = Duration::from_millis(400);
/// The poller's period, as VPN clients that watch their interface use.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often the reactor's blocking read returns to look at its stop flag. Events wake it at
/// once; this only bounds how long stopping takes.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// The application-level kill switches' nftables table.
const APP_TABLE: &str = "appkillswitch";

/// The three mechanisms measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Killswitch,
    Poller,
    Reactor,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Killswitch => "killswitch (guard mode)",
            Mechanism::Poller => "app-level: poll the interface every 100 ms, then `nft`",
            Mechanism::Reactor => "app-level: rtnetlink link event, then `nft`",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Mechanism::Killswitch => "bench-leak-ks",
            Mechanism::Poller => "bench-leak-poll",
            Mechanism::Reactor => "bench-leak-nl",
        }
    }
}

/// One drop, as measured.
#[derive(Debug)]
struct Trial {
    measurement: Measurement,
    /// From the kill to the block being committed (baselines only: killswitch blocks before).
    blocked_after: Option<Duration>,
}

/// One mechanism's drops.
#[derive(Debug)]
struct Row {
    mechanism: Mechanism,
    trials: Vec<Trial>,
}

impl Row {
    fn leaked(&self) -> Vec<u64> {
        let mut leaked: Vec<u64> = self.trials.iter().map(|t| t.measurement.leaked).collect();
        leaked.sort_unstable();
        leaked
    }

    fn total_leaked(&self) -> u64 {
        self.trials.iter().map(|t| t.measurement.leaked).sum()
    }

    /// The rate the generator achieved over all windows (it catches up in bursts when it falls
    /// behind, so this is what was offered, not what was asked for).
    fn offered_pps(&self) -> f64 {
        let offered: u64 = self.trials.iter().map(|t| t.measurement.offered).sum();
        let ms: u64 = self.trials.iter().map(|t| t.measurement.duration_ms).sum();
        if ms == 0 {
            return 0.0;
        }
        offered as f64 * 1000.0 / ms as f64
    }
}

/// The section's markdown.
pub(crate) fn section(quick: bool) -> Result<String> {
    let drops = if quick { 2 } else { 20 };
    let rows = [Mechanism::Killswitch, Mechanism::Poller, Mechanism::Reactor]
        .into_iter()
        .map(|mechanism| {
            measure(mechanism, drops).with_context(|| format!("measuring {}", mechanism.name()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(render(&rows))
}

fn measure(mechanism: Mechanism, drops: usize) -> Result<Row> {
    let mut lab = Lab::new(mechanism.tag(), RATE)?;
    let trials = if mechanism == Mechanism::Killswitch {
        lab.connect()?;
        (0..drops)
            .map(|i| drop_with_killswitch(&mut lab, stagger(i, drops)))
            .collect::<Result<_>>()?
    } else {
        retire_daemon(&mut lab)?;
        lab.tunnel.start_client(&lab.topo)?;
        lab.wait_for_tunnel_traffic(Instant::now(), 1)?;
        let mut app = AppKillSwitch::start(&lab, mechanism)?;
        let trials = (0..drops)
            .map(|i| drop_with_app(&mut lab, &app, stagger(i, drops)))
            .collect::<Result<Vec<_>>>();
        // Stop it (and learn of its failure, the likelier cause) before the drops' result.
        app.stop()?;
        trials?
    };
    Ok(Row { mechanism, trials })
}

/// How much later than [`BEFORE_DROP`] drop `i` of `drops` comes: the drops spread evenly over
/// one poll period. The poller unblocks on one of its ticks and the script runs the next drop a
/// nearly fixed time later, so without this every drop would land at the same point of the poll
/// cycle (just after a tick: the worst case every time). Real drops are unrelated to the poll
/// cycle; spread evenly, they sample it fairly. Every mechanism gets the same offsets.
fn stagger(i: usize, drops: usize) -> Duration {
    POLL_INTERVAL.mul_f64((i as f64 + 0.5) / drops.max(1) as f64)
}

/// One drop with killswitchd guarding the tunnel.
fn drop_with_killswitch(lab: &mut Lab, stagger: Duration) -> Result<Trial> {
    let window = lab.begin(&KINDS)?;
    hold(BEFORE_DROP + stagger);
    let killed = Instant::now();
    lab.tunnel.kill_client()?;
    // Not needed for blocking (the rules already allow nothing else); it proves the daemon saw the
    // drop, so that the window covers a real "connecting" state.
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    hold_until(killed + OUTAGE);
    let measurement = lab.end(window)?;
    check_tunnel_carried(&measurement)?;
    let restarted = Instant::now();
    lab.start_vpn()?;
    lab.wait_for_tunnel_traffic(restarted, 1)?;
    Ok(Trial {
        measurement,
        blocked_after: None,
    })
}

/// One drop with an application-level kill switch watching the tunnel.
fn drop_with_app(lab: &mut Lab, app: &AppKillSwitch, stagger: Duration) -> Result<Trial> {
    // An event left over from the last restart would be taken for this drop's.
    app.expect_quiet()?;
    let window = lab.begin(&KINDS)?;
    hold(BEFORE_DROP + stagger);
    let killed = Instant::now();
    lab.tunnel.kill_client()?;
    let blocked = app.wait_for(Event::Blocked)?;
    ensure!(
        blocked >= killed,
        "the application kill switch blocked before the tunnel was killed"
    );
    hold_until(killed + OUTAGE);
    let measurement = lab.end(window)?;
    check_tunnel_carried(&measurement)?;
    // The generator is stopped: whatever the baseline lets out while the tunnel comes back is
    // not counted (the table counts the drop).
    let restarted = Instant::now();
    lab.tunnel.start_client(&lab.topo)?;
    app.wait_for(Event::Unblocked)?;
    lab.wait_for_tunnel_traffic(restarted, 1)?;
    Ok(Trial {
        measurement,
        blocked_after: Some(blocked.saturating_duration_since(killed)),
    })
}

/// A window in which nothing crossed the tunnel measured nothing: zero leaks would mean nothing.
fn check_tunnel_carried(m: &Measurement) -> Result<()> {
    ensure!(
        m.through_tunnel > 0,
        "no traffic crossed the tunnel before the drop (offered {}, leaked {}): the window proves nothing",
        m.offered,
        m.leaked
    );
    Ok(())
}

/// The window's remaining time, as part of the script ("the tunnel stays down for 400 ms").
fn hold_until(deadline: Instant) {
    hold(deadline.saturating_duration_since(Instant::now()));
}

/// Takes killswitchd out of a baseline's lab: `off` removes its rules, and the lab checks that
/// neither its table nor its routing rules are left before the daemon is ended.
fn retire_daemon(lab: &mut Lab) -> Result<()> {
    lab.daemon()?.cli(&["off"])?.ok()?;
    lab.daemon()?.wait_for_state(State::Off, EVENT_TIMEOUT)?;
    ensure_removed(&lab.topo.client)?;
    lab.daemon = None;
    Ok(())
}

/// Checks that neither killswitch's table nor its routing rules are left in `ns` (after `off`).
pub(crate) fn ensure_removed(ns: &Netns) -> Result<()> {
    ensure!(
        killswitch_lab::daemon::nft_table(ns)?.is_none(),
        "killswitch's table is still there after `off`"
    );
    for family in ["-4", "-6"] {
        let rules = ns.ip(&[family, "rule"])?;
        let ours = killswitch_policy::routes::PRIORITIES
            .iter()
            .any(|p| rules.lines().any(|l| l.starts_with(&format!("{p}:"))));
        ensure!(
            !ours,
            "killswitch's routing rules are still there after `off`:\n{rules}"
        );
    }
    Ok(())
}

/// What an application-level kill switch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// It has looked at the tunnel once (and subscribed, for the reactor).
    Ready,
    /// Its block is committed.
    Blocked,
    /// Its block is removed.
    Unblocked,
}

/// An application-level kill switch, running on a thread inside the client namespace.
struct AppKillSwitch {
    stop: Arc<AtomicBool>,
    events: Receiver<(Event, Instant)>,
    /// `None` once stopped.
    thread: Option<JoinHandle<Result<Result<()>>>>,
}

impl AppKillSwitch {
    /// Starts `mechanism` watching the lab's tunnel, and waits until it is watching.
    fn start(lab: &Lab, mechanism: Mechanism) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let watcher = Watcher {
            interface: lab.tunnel.client_interface().to_owned(),
            namespace: lab.topo.client.path(),
            events: tx,
            blocked: false,
        };
        let thread = {
            let stop = stop.clone();
            lab.topo
                .client
                .spawn("app-killswitch", move || match mechanism {
                    Mechanism::Poller => watcher.poll(&stop),
                    Mechanism::Reactor => watcher.react(&stop),
                    Mechanism::Killswitch => bail!("killswitch is not an application"),
                })?
        };
        let mut app = AppKillSwitch {
            stop,
            events,
            thread: Some(thread),
        };
        if let Err(e) = app.wait_for(Event::Ready) {
            // The thread's own error, if it failed, says more than "no Ready".
            app.stop()?;
            return Err(e);
        }
        Ok(app)
    }

    /// Waits for the next event, which must be `expected`, and returns when it happened.
    fn wait_for(&self, expected: Event) -> Result<Instant> {
        match self.events.recv_timeout(EVENT_TIMEOUT) {
            Ok((event, at)) if event == expected => Ok(at),
            Ok((event, _)) => {
                bail!("the application kill switch reported {event:?}, not {expected:?}")
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "the application kill switch did not report {expected:?} within {EVENT_TIMEOUT:?}"
            ),
            // The thread ended: its error says why (`stop` returns it).
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the application kill switch stopped before reporting {expected:?}")
            }
        }
    }

    /// Fails if the kill switch has reported anything not yet waited for.
    fn expect_quiet(&self) -> Result<()> {
        match self.events.try_recv() {
            Ok((event, _)) => bail!("the application kill switch reported an unexpected {event:?}"),
            Err(_) => Ok(()),
        }
    }

    /// Stops the thread and returns its error, if it failed.
    fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the application kill switch panicked"))??
            .context("the application kill switch failed")
    }
}

impl Drop for AppKillSwitch {
    /// On an early return, the thread must not outlive the lab it watches.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The state both application-level kill switches keep, and the block they insert.
struct Watcher {
    interface: String,
    /// The client namespace's file, to check that `nft` runs there (see [`Watcher::in_lab`]).
    namespace: std::path::PathBuf,
    events: Sender<(Event, Instant)>,
    blocked: bool,
}

impl Watcher {
    /// The poller: every [`POLL_INTERVAL`], is the interface there and up?
    fn poll(mut self, stop: &AtomicBool) -> Result<()> {
        self.in_lab()?;
        let socket = ioctl_socket()?;
        self.report(Event::Ready);
        while !stop.load(Ordering::Relaxed) {
            let up = interface_up(&socket, &self.interface)?;
            self.follow(up)?;
            // The mechanism under test: a timer, which is what bounds such a client's reaction.
            std::thread::sleep(POLL_INTERVAL);
        }
        self.cleanup()
    }

    /// The reactor: rtnetlink link notifications, acted on as they arrive.
    fn react(mut self, stop: &AtomicBool) -> Result<()> {
        self.in_lab()?;
        let netlink = link_events_socket()?;
        // Subscribed first, then looked: no change can fall between the two.
        let socket = ioctl_socket()?;
        let up = interface_up(&socket, &self.interface)?;
        self.follow(up)?;
        self.report(Event::Ready);
        let mut buffer = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: recv into a live buffer of the given length.
            let n = unsafe {
                libc::recv(
                    netlink.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => continue,
                    // The socket overran and events were lost: look at the interface instead, as
                    // a careful client would.
                    Some(libc::ENOBUFS) => {
                        let up = interface_up(&socket, &self.interface)?;
                        self.follow(up)?;
                        continue;
                    }
                    _ => return Err(error).context("reading rtnetlink link events"),
                }
            }
            let received = buffer.get(..n as usize).unwrap_or_default();
            for up in link_changes(received, &self.interface) {
                self.follow(up)?;
            }
        }
        self.cleanup()
    }

    /// Blocks when the tunnel is down and unblocks when it is back.
    fn follow(&mut self, tunnel_up: bool) -> Result<()> {
        if !tunnel_up && !self.blocked {
            nft(&block_ruleset())?;
            self.blocked = true;
            self.report(Event::Blocked);
        } else if tunnel_up && self.blocked {
            nft(&format!("delete table inet {APP_TABLE}\n"))?;
            self.blocked = false;
            self.report(Event::Unblocked);
        }
        Ok(())
    }

    fn report(&self, event: Event) {
        // The receiver is gone only when the benchmark has given up on this baseline.
        let _ = self.events.send((event, Instant::now()));
    }

    fn cleanup(&mut self) -> Result<()> {
        if self.blocked {
            nft(&format!("delete table inet {APP_TABLE}\n"))?;
            self.blocked = false;
        }
        Ok(())
    }

    /// `nft` runs as a child of this thread, in the network namespace the thread is in (as an
    /// application's would, without the cost of `ip netns exec`). This makes sure that is the
    /// lab's client namespace and never this machine's own.
    fn in_lab(&self) -> Result<()> {
        let here = std::fs::metadata("/proc/thread-self/ns/net")
            .context("reading this thread's network namespace")?;
        let lab = std::fs::metadata(&self.namespace)
            .with_context(|| format!("reading {}", self.namespace.display()))?;
        ensure!(
            here.dev() == lab.dev() && here.ino() == lab.ino(),
            "the application kill switch is not in the lab's client namespace"
        );
        Ok(())
    }
}

/// What both baselines insert: everything out is dropped but loopback, the tunnel's own packets
/// to its server (without which the VPN could never reconnect) and DHCP (without which the
/// machine would lose its address; the lab's capture sentinel is DHCP-shaped too).
fn block_ruleset() -> String {
    format!(
        "table inet {APP_TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy drop;\n\
         \t\toifname \"lo\" accept\n\
         \t\tip daddr {ENDPOINT_V4} udp dport {PORT} accept\n\
         \t\tudp sport 68 udp dport 67 accept\n\
         \t\tudp sport 546 udp dport 547 accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Runs `nft -f -` with `script`, in the calling thread's network namespace.
fn nft(script: &str) -> Result<()> {
    run_with_input(Command::new("nft").args(["-f", "-"]), script)
}

/// A datagram socket for interface ioctls, in the calling thread's network namespace.
fn ioctl_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2); checked, then owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    ensure!(
        fd >= 0,
        "opening an ioctl socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct ifreq` as SIOCGIFFLAGS uses it: the name, then the flags (the union's first member).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    /// The rest of the union (`struct ifmap` is its largest member, 24 bytes).
    _rest: [u8; 22],
}

/// Whether `interface` exists and is administratively up (SIOCGIFFLAGS), in the namespace
/// `socket` was opened in.
fn interface_up(socket: &OwnedFd, interface: &str) -> Result<bool> {
    let mut request = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _rest: [0; 22],
    };
    let name = interface.as_bytes();
    ensure!(
        name.len() < libc::IFNAMSIZ,
        "interface name {interface:?} too long"
    );
    request.name[..name.len()].copy_from_slice(name);
    // SAFETY: SIOCGIFFLAGS reads the name from, and writes the flags into, a struct ifreq.
    let rc = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut request as *mut IfReqFlags,
        )
    };
    if rc < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENODEV) {
            return Ok(false);
        }
        return Err(error).with_context(|| format!("reading {interface}'s flags"));
    }
    Ok(request.flags & libc::IFF_UP as libc::c_short != 0)
}

/// A NETLINK_ROUTE socket subscribed to link notifications, in the calling thread's namespace.
fn link_events_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2); checked, then owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    ensure!(
        fd >= 0,
        "opening an rtnetlink socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; family and groups are set below.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    address.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: bind with a sockaddr_nl of its own size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "subscribing to link events: {}",
        std::io::Error::last_os_error()
    );
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: STOP_CHECK.as_micros() as libc::suseconds_t,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval of its own size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "setting the rtnetlink read timeout: {}",
        std::io::Error::last_os_error()
    );
    Ok(socket)
}

/// Netlink's message header, and `struct ifinfomsg` after it.
const NLMSG_HEADER: usize = 16;
const IFINFOMSG: usize = 16;

/// From a datagram of rtnetlink messages, `interface`'s state in each link message about it:
/// up (exists and administratively up) or not (down, or deleted). Malformed input ends the walk.
fn link_changes(mut messages: &[u8], interface: &str) -> Vec<bool> {
    let mut changes = Vec::new();
    while let Some(len) = u32_at(messages, 0) {
        let len = len as usize;
        let (Some(kind), Some(message)) = (u16_at(messages, 4), messages.get(..len)) else {
            break;
        };
        if len < NLMSG_HEADER {
            break;
        }
        let body = &message[NLMSG_HEADER..];
        if kind == libc::RTM_NEWLINK || kind == libc::RTM_DELLINK {
            let flags = u32_at(body, 8);
            let name = body.get(IFINFOMSG..).and_then(link_name);
            if let (Some(flags), Some(name)) = (flags, name)
                && name == interface.as_bytes()
            {
                changes.push(kind == libc::RTM_NEWLINK && flags & libc::IFF_UP as u32 != 0);
            }
        }
        // Messages are aligned to 4 bytes.
        messages = messages.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    changes
}

/// IFLA_IFNAME among a link message's attributes, without its terminating NUL.
fn link_name(mut attributes: &[u8]) -> Option<&[u8]> {
    while let (Some(len), Some(kind)) = (u16_at(attributes, 0), u16_at(attributes, 2)) {
        let len = usize::from(len);
        if len < 4 {
            return None;
        }
        let value = attributes.get(4..len)?;
        if kind == libc::IFLA_IFNAME {
            return value.split(|b| *b == 0).next();
        }
        attributes = attributes
            .get(len.next_multiple_of(4)..)
            .unwrap_or_default();
    }
    None
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The nearest-rank median of sorted counts.
fn median(sorted: &[u64]) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[sorted.len().div_ceil(2) - 1]
}

fn render(rows: &[Row]) -> String {
    let killswitch_total = rows
        .iter()
        .find(|r| r.mechanism == Mechanism::Killswitch)
        .map_or(0, Row::total_leaked);
    let mut out = String::from(
        "### 2. Leak window under a tunnel drop\n\n\
         | mechanism | drops | offered pps | leaked per drop: median | max | total leaked | blocked after (median) | vs killswitch |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        let leaked = row.leaked();
        let total = row.total_leaked();
        let blocked: Vec<Duration> = row.trials.iter().filter_map(|t| t.blocked_after).collect();
        let blocked = if blocked.is_empty() {
            "before the drop".to_owned()
        } else {
            human(Samples::new(blocked).median())
        };
        let versus = if row.mechanism == Mechanism::Killswitch {
            "—".to_owned()
        } else if killswitch_total == 0 {
            format!("∞ (baseline leaked {total}, killswitch 0)")
        } else {
            format!(
                "{:.1}× (baseline leaked {total}, killswitch {killswitch_total})",
                total as f64 / killswitch_total as f64
            )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.mechanism.name(),
            row.trials.len(),
            thousands(row.offered_pps().round() as u64),
            median(&leaked),
            leaked.last().copied().unwrap_or(0),
            total,
            blocked,
            versus,
        ));
    }
    out.push_str(&format!(
        "\nA drop: the client's wireguard-go is killed with SIGKILL (its interface and the route into it vanish, \
         as when a VPN client crashes) while the generator offers UDP, TCP SYNs, ICMP echo and DNS to the tunnel's \
         resolver; each window runs from {}–{} ms before the kill (the drops spread evenly over the poller's \
         period) to {} ms after it, and the tunnel is restarted \
         between windows with the generator stopped. \
         A leak: any frame leaving the client's physical link that is neither the tunnel's own UDP to its server \
         nor link bring-up (ARP, DHCP, ND), as the lab's oracle judges an AF_PACKET capture drained up to a \
         sentinel. \
         The baselines insert an `nft` table that drops everything but loopback, DHCP and the tunnel's endpoint, and \
         delete it when the interface is up again; the lab's wg-quick routing sends traffic out of the physical \
         link once the tunnel's route is gone, until that table is in.\n\n\
         Run: `sudo bash scripts/bench.sh --only leak` (or `killswitch-bench --only leak`; `--quick`: 2 drops \
         per mechanism).\n",
        BEFORE_DROP.as_millis(),
        (BEFORE_DROP + POLL_INTERVAL).as_millis(),
        OUTAGE.as_millis(),
    ));
    let ours: Vec<&String> = rows
        .iter()
        .filter(|r| r.mechanism == Mechanism::Killswitch)
        .flat_map(|r| r.trials.iter().flat_map(|t| &t.measurement.leaks))
        .take(5)
        .collect();
    if !ours.is_empty() {
        out.push_str("\nkillswitch's leaked frames (first few):\n\n");
        for leak in ours {
            out.push_str(&format!("- `{leak}`\n"));
        }
    }
    out
}

/// 12345 as "12,345".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An rtnetlink link message for `name` with `flags`, as the kernel lays it out.
    fn link_message(kind: u16, flags: u32, name: &str) -> Vec<u8> {
        let mut attribute = Vec::new();
        let value_len = name.len() + 1;
        attribute.extend_from_slice(&((4 + value_len) as u16).to_ne_bytes());
        attribute.extend_from_slice(&libc::IFLA_IFNAME.to_ne_bytes());
        attribute.extend_from_slice(name.as_bytes());
        attribute.push(0);
        attribute.resize(attribute.len().next_multiple_of(4), 0);
        let mut body = vec![0u8; IFINFOMSG];
        body[8..12].copy_from_slice(&flags.to_ne_bytes());
        body.extend_from_slice(&attribute);
        let len = NLMSG_HEADER + body.len();
        let mut message = Vec::new();
        message.extend_from_slice(&(len as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend_from_slice(&body);
        message
    }

    #[test]
    fn link_changes_follow_the_named_interface() {
        let up = libc::IFF_UP as u32;
        let mut datagram = link_message(libc::RTM_NEWLINK, up, "ksc1");
        datagram.extend(link_message(libc::RTM_NEWLINK, up, "other0"));
        datagram.extend(link_message(libc::RTM_NEWLINK, 0, "ksc1"));
        datagram.extend(link_message(libc::RTM_DELLINK, up, "ksc1"));
        assert_eq!(link_changes(&datagram, "ksc1"), vec![true, false, false]);
    }

    #[test]
    fn malformed_link_messages_end_the_walk() {
        let mut datagram = link_message(libc::RTM_NEWLINK, 0, "ksc1");
        datagram.truncate(datagram.len() - 3);
        assert!(link_changes(&datagram, "ksc1").is_empty());
        assert!(link_changes(&[0xff; 7], "ksc1").is_empty());
        let mut zero_length = link_message(libc::RTM_NEWLINK, 0, "ksc1");
        zero_length[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(link_changes(&zero_length, "ksc1").is_empty());
    }

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(&[]), 0);
        assert_eq!(median(&[0, 0, 5]), 0);
        assert_eq!(median(&[1, 2, 3, 4]), 2);
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
