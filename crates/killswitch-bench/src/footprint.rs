//! Benchmark 6: footprint. What killswitchd costs a machine while it sits there: its resident
//! memory, how often it wakes up, and how long `killswitch status` takes.
//!
//! - Memory: `VmRSS` and `VmHWM` (the peak) from `/proc/PID/status`, in three lab namespaces:
//!   idle with lockdown on (no tunnel), guarding a `wireguard-go` tunnel (`connected`), and as the
//!   WireGuard client itself (`killswitch up`, embedded userspace WireGuard, `connected`).
//!   wireguard-go's own memory is the baseline: it is what a guarded setup runs besides the daemon.
//! - Wakeups: the growth of `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` summed over every
//!   thread in `/proc/PID/task/*/status` over a window in which nothing talks to the daemon (after
//!   a settling pause, so the reply to the last command is not counted). A thread that sleeps in
//!   `epoll_wait` without timers switches out zero times; every timer expiry or event counts once.
//! - Status round trip: `killswitch status` as a user runs it (process start included) and the
//!   same request over the socket from this process (connect, one request line, one reply line),
//!   beside the process round trips of `wg show` (wireguard-go's status over its UAPI socket),
//!   `nft list table inet killswitch` and `true` (the cost of starting any process at all), in
//!   rotating order so that a drift of the machine's speed weighs on all alike.

use crate::stats::{Samples, human};
use anyhow::{Context, Result, bail, ensure};
use killswitch_lab::binaries;
use killswitch_lab::daemon::{Daemon, DaemonHome};
use killswitch_lab::lab::Lab;
use killswitch_lab::netns::Netns;
use killswitch_lab::topology::Topology;
use killswitch_lab::wireguard::Tunnel;
use killswitch_types::State;
use killswitch_types::ipc::{Request, RequestEnvelope, ServerEnvelope, ServerMessage, encode_line};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a state change or a handshake may take before the benchmark fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the section is sized.
struct Plan {
    /// The wakeup-counting window.
    window: Duration,
    /// The pause before a window, for the daemon to finish what the last command started.
    settle: Duration,
    /// Round trips per kind.
    round_trips: usize,
}

/// The section's markdown.
pub(crate) fn section(quick: bool) -> Result<String> {
    let plan = if quick {
        Plan {
            window: Duration::from_secs(2),
            settle: Duration::from_millis(500),
            round_trips: 10,
        }
    } else {
        Plan {
            window: Duration::from_secs(10),
            settle: Duration::from_secs(1),
            round_trips: 200,
        }
    };
    let idle = measure_idle(&plan).context("idle, lockdown on")?;
    let guard = measure_guard(&plan).context("guarding a wireguard-go tunnel")?;
    let up = measure_up(&plan).context("killswitch up")?;

    let mut out = format!(
        "### 6. Footprint\n\n\
         killswitchd in lab namespaces. Memory from `/proc/PID/status`; wakeups are context switches of all its \
         threads (`/proc/PID/task/*/status`, voluntary + involuntary) over {} s in which nothing talks to it, after \
         {} ms to settle.\n\n\
         | process, situation | VmRSS | VmHWM (peak) | threads | wakeups/s (of which involuntary) |\n\
         |---|---|---|---|---|\n",
        plan.window.as_secs_f64(),
        plan.settle.as_millis()
    );
    for (what, m) in [
        (
            "killswitchd, just started (`disconnected`, no table)",
            &idle.started,
        ),
        ("killswitchd, idle, lockdown on (`blocked`)", &idle.daemon),
        (
            "killswitchd, guarding a tunnel (`connected`)",
            &guard.daemon,
        ),
        (
            "wireguard-go, the guarded tunnel's client (baseline)",
            &guard.wireguard_go,
        ),
        (
            "killswitchd, `up`: its own userspace WireGuard (`connected`)",
            &up.daemon,
        ),
    ] {
        out.push_str(&format!(
            "| {what} | {} | {} | {} | {} |\n",
            kib(m.memory.rss_kib),
            kib(m.memory.hwm_kib),
            m.wakeups
                .as_ref()
                .map_or("-".to_owned(), |w| w.threads.to_string()),
            m.wakeups.as_ref().map_or("-".to_owned(), |w| format!(
                "{:.1} ({:.1})",
                w.per_second, w.involuntary_per_second
            )),
        ));
    }
    let guarded_total = guard.daemon.memory.rss_kib + guard.wireguard_go.memory.rss_kib;
    out.push_str(&format!(
        "\nResident memory, killswitchd guarding / wireguard-go: {}. `killswitch up` (one process, tunnel included) / \
         killswitchd guarding + wireguard-go ({}): {}.\n",
        ratio_f(guard.daemon.memory.rss_kib as f64, guard.wireguard_go.memory.rss_kib as f64),
        kib(guarded_total),
        ratio_f(up.daemon.memory.rss_kib as f64, guarded_total as f64),
    ));
    for (what, m) in [
        ("idle with lockdown", &idle.daemon),
        ("guarding", &guard.daemon),
        ("`up`", &up.daemon),
    ] {
        if let Some(w) = &m.wakeups {
            out.push_str(&format!("\nWakeups by thread, {what}: {}.", w.by_thread()));
        }
    }
    out.push_str(&format!(
        "\n\nTarget: no periodic wakeups beyond the health probe. In guard mode and lockdown there is no probe; \
         with `up` the daemon reads the tunnel's counters over boringtun's UAPI socket every 500 ms, and after 1 s \
         without data from the peer every 250 ms, each time with a DNS query through the tunnel, until an answer \
         comes: an idle tunnel is kept proven alive by probes (here {:.1} queries/s reached the tunnel's \
         resolver). boringtun's two threads wake for its own timers (every 250 ms and 1 s) and to answer the \
         readings over its UAPI socket.\n\n\
         Status round trip with the daemon guarding ({} each, rotating order):\n\n\
         | round trip | p50 | p99 | this / `killswitch status` |\n\
         |---|---|---|---|\n",
        up.probes_per_second, plan.round_trips
    ));
    let reference = guard.round_trips.first().map(|(_, s)| s.median());
    for (what, samples) in &guard.round_trips {
        out.push_str(&format!(
            "| {what} | {} | {} | {} |\n",
            human(samples.median()),
            human(samples.percentile(99.0)),
            reference.map_or("-".to_owned(), |r| ratio_f(
                samples.median().as_secs_f64(),
                r.as_secs_f64()
            )),
        ));
    }
    Ok(out)
}

/// Resident memory, KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

/// Wakeups over a window.
#[derive(Debug, Clone)]
struct Wakeups {
    /// All threads together, per second (voluntary and involuntary switches).
    per_second: f64,
    /// Of those, involuntary: preempted while running, which other load on the machine inflates.
    involuntary_per_second: f64,
    /// How many threads the process has (at the window's end).
    threads: usize,
    /// Each thread (the main one first, then by thread id): its name and wakeups per second.
    by_thread: Vec<(String, f64)>,
}

impl Wakeups {
    /// "main 2.0/s, `worker` 10.1/s, `worker` 9.9/s, 3 others 0/s" (threads with no wakeups are
    /// counted, not listed).
    fn by_thread(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut quiet = 0;
        for (i, (name, rate)) in self.by_thread.iter().enumerate() {
            if i > 0 && *rate == 0.0 {
                quiet += 1;
                continue;
            }
            let main = if i == 0 { "main thread " } else { "" };
            parts.push(format!("{main}`{name}` {rate:.1}/s"));
        }
        if quiet > 0 {
            parts.push(format!("{quiet} other thread(s) 0/s"));
        }
        parts.join(", ")
    }
}

/// One process's footprint.
#[derive(Debug, Clone)]
struct Footprint {
    memory: Memory,
    wakeups: Option<Wakeups>,
}

struct Idle {
    started: Footprint,
    daemon: Footprint,
}

struct Guard {
    daemon: Footprint,
    wireguard_go: Footprint,
    round_trips: Vec<(&'static str, Samples)>,
}

struct Up {
    daemon: Footprint,
    /// DNS probes through the idle tunnel, per second.
    probes_per_second: f64,
}

/// A daemon in a bare namespace: just started, then with lockdown on.
fn measure_idle(plan: &Plan) -> Result<Idle> {
    let ns = Netns::new("bench-fp-idle")?;
    // The daemon's /etc/resolv.conf (it never writes it here, but it must not see the host's).
    ns.set_resolv_conf("nameserver 192.0.2.53\n")?;
    let home = DaemonHome::new()?;
    let mut daemon = Daemon::start(&ns, &home)?;
    let pid = daemon.process().pid();
    let started = Footprint {
        memory: memory(pid)?,
        wakeups: None,
    };
    daemon.cli(&["lockdown", "on"])?.ok()?;
    daemon.wait_for_state(State::Blocked, EVENT_TIMEOUT)?;
    let (wakeups, _) = count_wakeups(&[pid], plan)?;
    Ok(Idle {
        started,
        daemon: Footprint {
            memory: memory(pid)?,
            wakeups: wakeups.into_iter().next(),
        },
    })
}

/// A daemon guarding a wireguard-go tunnel; wireguard-go beside it; then status round trips.
fn measure_guard(plan: &Plan) -> Result<Guard> {
    let topo = Topology::new("bench-fp-guard")?;
    let mut tunnel = Tunnel::up(&topo)?;
    tunnel.handshake(&topo, EVENT_TIMEOUT)?;
    let wg_pid = tunnel
        .client
        .as_mut()
        .context("the tunnel's client is not running")?
        .process()
        .pid();
    let home = DaemonHome::new()?;
    let mut daemon = Daemon::start(&topo.client, &home)?;
    let pid = daemon.process().pid();
    daemon.guard(&tunnel)?;
    daemon.wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let mut wakeups = count_wakeups(&[pid, wg_pid], plan)?.0.into_iter();
    let daemon_footprint = Footprint {
        memory: memory(pid)?,
        wakeups: wakeups.next(),
    };
    let wireguard_go = Footprint {
        memory: memory(wg_pid)?,
        wakeups: wakeups.next(),
    };
    let round_trips = round_trips(&topo.client, &home, tunnel.client_interface(), plan)?;
    Ok(Guard {
        daemon: daemon_footprint,
        wireguard_go,
        round_trips,
    })
}

/// A daemon that is the WireGuard client itself (`killswitch up`), connected.
fn measure_up(plan: &Plan) -> Result<Up> {
    let mut lab = Lab::new("bench-fp-up", 100)?;
    lab.start_up_servers(1)?;
    lab.up()?;
    let status = lab
        .daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let backend = status
        .tunnel
        .and_then(|t| t.managed)
        .and_then(|m| m.backend)
        .unwrap_or_default();
    ensure!(
        backend == "userspace",
        "expected the embedded userspace WireGuard here, the daemon uses {backend:?}"
    );
    let daemon = lab.daemon.as_mut().context("the daemon is not running")?;
    let pid = daemon.process().pid();
    let (wakeups, start) = count_wakeups(&[pid], plan)?;
    let seconds = start.elapsed().as_secs_f64();
    // The daemon's liveness probes: DNS queries to the tunnel's resolver (nothing else asks it).
    let probes = lab.servers.dns_tunnel.count_since(start, |_| true);
    Ok(Up {
        daemon: Footprint {
            memory: memory(pid)?,
            wakeups: wakeups.into_iter().next(),
        },
        probes_per_second: probes as f64 / seconds,
    })
}

/// `VmRSS` and `VmHWM` of `pid`.
fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Memory {
        rss_kib: status_kib(&status, "VmRSS:").context("no VmRSS")?,
        hwm_kib: status_kib(&status, "VmHWM:").context("no VmHWM")?,
    })
}

/// A `/proc/*/status` field in kB ("VmRSS: 1234 kB", after a tab).
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A `/proc/*/status` counter ("voluntary_ctxt_switches: 12", after a tab).
fn status_count(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .parse()
        .ok()
}

/// A thread's name and context switches so far.
#[derive(Debug, Clone)]
struct ThreadSwitches {
    name: String,
    voluntary: u64,
    involuntary: u64,
}

/// Every thread of `pid`, by thread id.
fn thread_switches(pid: u32) -> Result<BTreeMap<u32, ThreadSwitches>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may exit between the listing and the read: it is simply not counted.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map_or_else(|| "?".to_owned(), |n| n.trim().to_owned());
        threads.insert(
            tid,
            ThreadSwitches {
                name,
                voluntary: status_count(&status, "voluntary_ctxt_switches:").unwrap_or(0),
                involuntary: status_count(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0),
            },
        );
    }
    ensure!(
        !threads.is_empty(),
        "process {pid} has no threads (exited?)"
    );
    Ok(threads)
}

/// Counts the wakeups of each of `pids` over the plan's window (after its settling pause), and
/// says when the window began.
fn count_wakeups(pids: &[u32], plan: &Plan) -> Result<(Vec<Wakeups>, Instant)> {
    // The last command's after-effects (the daemon's own nf_tables and rtnetlink notifications,
    // the closed subscription) have no completion event to await, so the window opens after a
    // bounded pause; anything later is counted, which errs towards more wakeups, not fewer.
    std::thread::sleep(plan.settle);
    let before = pids
        .iter()
        .map(|pid| thread_switches(*pid))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    std::thread::sleep(plan.window);
    let after = pids
        .iter()
        .map(|pid| thread_switches(*pid))
        .collect::<Result<Vec<_>>>()?;
    let seconds = start.elapsed().as_secs_f64();
    let wakeups = before
        .iter()
        .zip(&after)
        .zip(pids)
        .map(|((before, after), pid)| {
            let mut by_thread = Vec::with_capacity(after.len());
            let (mut voluntary, mut involuntary) = (0, 0);
            for (tid, now) in after {
                // A thread born during the window counts from zero.
                let (v0, i0) = before
                    .get(tid)
                    .map_or((0, 0), |t| (t.voluntary, t.involuntary));
                let v = now.voluntary.saturating_sub(v0);
                let i = now.involuntary.saturating_sub(i0);
                voluntary += v;
                involuntary += i;
                let thread = (now.name.clone(), (v + i) as f64 / seconds);
                // The main thread's id is the process id.
                if tid == pid {
                    by_thread.insert(0, thread);
                } else {
                    by_thread.push(thread);
                }
            }
            Wakeups {
                per_second: (voluntary + involuntary) as f64 / seconds,
                involuntary_per_second: involuntary as f64 / seconds,
                threads: after.len(),
                by_thread,
            }
        })
        .collect();
    Ok((wakeups, start))
}

/// One kind of round trip: a name, and what to run.
type RoundTrip<'a> = (&'static str, Box<dyn FnMut() -> Result<()> + 'a>);

/// Times `plan.round_trips` of each kind, rotating which goes first, all from one thread inside
/// `ns`, so that every kind starts alike (no `ip netns exec`, no setns per sample).
fn round_trips(
    ns: &Netns,
    home: &DaemonHome,
    interface: &str,
    plan: &Plan,
) -> Result<Vec<(&'static str, Samples)>> {
    let cli = binaries::path("killswitch")?;
    let socket = home.socket();
    let request = encode_line(&RequestEnvelope::new(Request::Status))?;
    ns.run(|| time_round_trips(&cli, &socket, &request, interface, plan))?
}

/// [`round_trips`], in the calling thread's namespace.
fn time_round_trips(
    cli: &Path,
    socket: &Path,
    request: &str,
    interface: &str,
    plan: &Plan,
) -> Result<Vec<(&'static str, Samples)>> {
    let mut kinds: Vec<RoundTrip> = vec![
        (
            "`killswitch status` (process)",
            Box::new(|| run_quietly(Command::new(cli).arg("--socket").arg(socket).arg("status"))),
        ),
        (
            "status over the socket (connect, request, reply)",
            Box::new(|| socket_status(socket, request)),
        ),
        (
            "`wg show IFACE` (process; wireguard-go's status)",
            Box::new(|| run_quietly(Command::new("wg").args(["show", interface]))),
        ),
        (
            "`nft list table inet killswitch` (process)",
            Box::new(|| {
                run_quietly(Command::new("nft").args(["list", "table", "inet", "killswitch"]))
            }),
        ),
        (
            "`true` (process start alone)",
            Box::new(|| run_quietly(&mut Command::new("true"))),
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(plan.round_trips); kinds.len()];
    for round in 0..plan.round_trips {
        for k in 0..kinds.len() {
            let i = (round + k) % kinds.len();
            let start = Instant::now();
            (kinds[i].1)().with_context(|| kinds[i].0)?;
            samples[i].push(start.elapsed());
        }
    }
    Ok(kinds
        .into_iter()
        .zip(samples)
        .map(|((name, _), s)| (name, Samples::new(s)))
        .collect())
}

/// Runs `command` to completion, its output discarded; fails unless it succeeds.
fn run_quietly(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// One status request over the daemon's socket, as the CLI makes it; checks the reply.
fn socket_status(socket: &Path, request: &str) -> Result<()> {
    let mut stream = UnixStream::connect(socket).context("connecting to the daemon")?;
    stream.set_read_timeout(Some(EVENT_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the reply")?;
    let envelope: ServerEnvelope =
        serde_json::from_str(&reply).with_context(|| format!("parsing the reply {reply:?}"))?;
    ensure!(
        matches!(envelope.message, ServerMessage::Ok { .. }),
        "the daemon answered {reply:?}"
    );
    Ok(())
}

/// KiB as "12.3 MiB".
fn kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `a / b` as "1.23×".
fn ratio_f(a: f64, b: f64) -> String {
    if b == 0.0 {
        return "-".to_owned();
    }
    format!("{:.2}×", a / b)
}
