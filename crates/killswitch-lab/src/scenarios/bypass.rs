//! Scenario `bypass` (issue 15, item 3): `killswitch exec --bypass -- CMD` sends CMD and its
//! children around the tunnel, through the physical link, and nothing else.
//!
//! The bypassed program is a bash script: it forks a child, and both send UDP datagrams to the
//! target through bash's `/dev/udp` (a new socket each time, so every one is created in the
//! cgroup), each carrying a marker that says who sent it (`parent` or `child`). The capture
//! tells its frames apart by that marker; those frames (and only those) are excused from the
//! oracle, which judges every other frame of each window as always, while the generator's
//! traffic (everything else) runs.
//!
//! Steps, with the daemon as the WireGuard client (`up`):
//! 1. connected: the bypassed program's datagrams, the child's included, leave by the physical
//!    link from the physical address and arrive directly; everything else arrives through the
//!    tunnel; `status` shows the cgroup and its processes while it runs; CMD's exit status is the
//!    CLI's; when it ends, nothing remains: no cgroup, no firewall rule, no routing rule;
//! 2. lockdown on and `down` (blocked): the same program still goes around, everything else is
//!    refused;
//! 3. the cgroup created again by the test itself (a new id) and a process of the test moved into
//!    it: the daemon follows the new id, and that process's datagrams go around too;
//! 4. refusals: `exec --bypass` as uid 65534 (not an administrator), and from another network
//!    namespace (the lab's own), change nothing.

use super::{EVENT_TIMEOUT, Outcome};
use crate::capture::{Captured, Direction};
use crate::generator::Kind;
use crate::lab::{Lab, Measurement};
use crate::packet::{Frame, L4};
use crate::topology::{self, PHYS};
use anyhow::{Context, Result};
use killswitch_types::State;
use killswitch_types::ipc::Status;
use std::net::IpAddr;
use std::os::linux::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What every datagram of the bypassed program carries; then `parent` or `child`.
const MARKER: &[u8] = b"killswitch-lab bypass ";
/// The fwmark the daemon's BPF program gives bypassed sockets (`killswitch_policy::BYPASS_MARK`,
/// written out: the lab does not link the code it judges).
const BYPASS_MARK: &str = "0x6b627970";
/// How many datagrams each of the two processes sends.
const DATAGRAMS: u32 = 25;
/// The exit status the script ends with, which the CLI must pass back.
const EXIT_STATUS: i32 = 7;

/// The bypassed program: a child forked to send, the parent sending, then a TCP connection to
/// the target (which needs the replies to come back), then waiting for the test
/// to release it (a line through the FIFO `release`, opened first thing, read with a bound)
/// before it exits with status 7.
fn script(release: &Path) -> String {
    let target = topology::TARGET_V4;
    let port = crate::sinks::UDP_PORT;
    let tcp = crate::sinks::TCP_PORT;
    format!(
        "exec 3<> {release}\n\
         send() {{ for i in $(seq 1 {DATAGRAMS}); do printf 'killswitch-lab bypass %s' \"$1\" \
         > /dev/udp/{target}/{port} || echo \"refused $1\"; sleep 0.02; done; }}\n\
         ( send child ) &\n\
         send parent\n\
         wait\n\
         if ( exec 5<>/dev/tcp/{target}/{tcp} ); then echo 'tcp connected'; else echo 'tcp refused'; fi\n\
         echo sent\n\
         read -r -t 30 _ <&3\n\
         exit {EXIT_STATUS}\n",
        release = release.display()
    )
}

/// Whether a frame is the bypassed program's: a datagram with its marker, or its TCP
/// connection to the target's TCP sink (the windows' generator sends no TCP, so no other frame
/// is excused by that).
fn is_bypassed(captured: &Captured) -> bool {
    match &captured.frame {
        Frame::Ip(p) if p.payload.starts_with(MARKER) => true,
        Frame::Ip(p) => {
            p.src == IpAddr::V4(topology::CLIENT_V4)
                && p.dst == IpAddr::V4(topology::TARGET_V4)
                && matches!(p.transport, L4::Tcp { dport, .. } if dport == crate::sinks::TCP_PORT)
        }
        _ => false,
    }
}

/// What one bypassed run showed.
#[derive(Debug, Default)]
struct Run {
    /// The parent's and the child's frames on the physical link, from its address.
    parent: usize,
    child: usize,
    /// Of the program's frames on the physical link, those not from its address.
    wrong_source: Vec<String>,
    /// Its datagrams that arrived at the target without the tunnel.
    arrived_directly: usize,
    /// The window around it, judged by the oracle, its frames excused.
    window: Measurement,
    /// The status while it ran.
    during: Option<Status>,
    /// `status`' text while it ran.
    during_text: String,
    /// The CLI's exit code.
    code: Option<i32>,
    /// What it printed.
    output: String,
}

/// Counts the bypassed program's frames in the capture from `from`, and its direct arrivals.
fn count_frames(lab: &Lab, from: usize, since: Instant, run: &mut Run) -> Result<()> {
    let until = lab.drain_capture(from)?;
    let frames = lab.capture.frames();
    for captured in frames[from..until]
        .iter()
        .filter(|c| c.direction == Direction::Outgoing)
    {
        let Frame::Ip(p) = &captured.frame else {
            continue;
        };
        let Some(who) = p.payload.strip_prefix(MARKER) else {
            continue;
        };
        if p.src != IpAddr::V4(topology::CLIENT_V4) {
            run.wrong_source.push(format!("{} -> {}", p.src, p.dst));
        } else if who.starts_with(b"child") {
            run.child += 1;
        } else if who.starts_with(b"parent") {
            run.parent += 1;
        }
    }
    let direct = |a: IpAddr| a == IpAddr::V4(topology::CLIENT_V4);
    run.arrived_directly =
        lab.servers.udp.count_since(since, direct) + lab.servers.tcp.count_since(since, direct);
    Ok(())
}

/// A FIFO the bypassed program reads its release from.
fn release_fifo(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", path.display()))?;
    Ok(path)
}

/// Writes the release line into the FIFO at `path` once a reader has it open, waiting for that at
/// most until `deadline` (a program that never started must not hang the lab).
fn release_program(path: &Path, deadline: Instant) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(mut fifo) => return fifo.write_all(b"go\n").context("writing the release"),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("no reader on {}", path.display()));
            }
        }
    }
}

/// Runs the script under `killswitch exec --bypass` in the client namespace, while the generator
/// sends `kinds`; looks at the status while it runs, then releases it.
fn bypassed_run(lab: &Lab, kinds: &[Kind], dir: &Path, name: &str) -> Result<Run> {
    let release = release_fifo(dir, name)?;
    let script = script(&release);
    let window = lab.begin(kinds)?;
    let since = Instant::now();
    let from = lab.capture.len();
    let daemon = lab.daemon()?;
    let mut run = Run::default();
    std::thread::scope(|scope| -> Result<()> {
        let cli = scope.spawn(|| {
            daemon.cli_in(
                &lab.topo.client,
                &["exec", "--bypass", "--", "bash", "-c", &script],
                false,
            )
        });
        let during = daemon.wait_for("a bypass", EVENT_TIMEOUT, |s| s.bypass.is_some());
        let text = daemon
            .cli(&["status"])
            .map(|r| r.stdout)
            .unwrap_or_default();
        // Released whatever the wait said, so that the program never outlives the scenario.
        let released = release_program(&release, Instant::now() + EVENT_TIMEOUT);
        let result = cli
            .join()
            .map_err(|_| anyhow::anyhow!("the CLI thread panicked"))??;
        released.context("releasing the bypassed program")?;
        run.during = Some(during?);
        run.during_text = text;
        run.code = result.code;
        run.output = format!("{}{}", result.stdout, result.stderr);
        Ok(())
    })?;
    daemon.wait_for("the bypass ended", EVENT_TIMEOUT, |s| s.bypass.is_none())?;
    count_frames(lab, from, since, &mut run)?;
    run.window = lab.end_excusing(window, &is_bypassed)?;
    Ok(run)
}

fn describe(run: &Run) -> String {
    format!(
        "parent {} and child {} datagrams on {PHYS} from {}, {} arrived directly{}; others: {} through the tunnel, {} direct, {} leaked",
        run.parent,
        run.child,
        topology::CLIENT_V4,
        run.arrived_directly,
        if run.wrong_source.is_empty() {
            String::new()
        } else {
            format!(", from another address: {:?}", run.wrong_source)
        },
        run.window.through_tunnel,
        run.window
            .direct
            .saturating_sub(run.arrived_directly as u64),
        run.window.leaked
    )
}

/// Whether anything of a bypass is left: the cgroup's directory, a firewall rule on a socket
/// cgroup, a routing rule for the bypass mark. Empty when nothing is.
fn leftovers(lab: &Lab, cgroup: &Path) -> Result<Vec<String>> {
    let mut left = Vec::new();
    if cgroup.exists() {
        left.push(format!("the cgroup {}", cgroup.display()));
    }
    let ruleset = lab.topo.client.exec("nft", &["list", "ruleset"])?;
    if ruleset.contains("cgroupv2") {
        left.push("a socket cgroupv2 rule".to_owned());
    }
    for family in ["-4", "-6"] {
        let rules = lab.topo.client.exec("ip", &[family, "rule", "show"])?;
        if rules.contains(BYPASS_MARK) {
            left.push(format!("an ip {family} rule for fwmark {BYPASS_MARK}"));
        }
    }
    Ok(left)
}

fn check_run(outcome: &mut Outcome, phase: &str, run: &Run) {
    outcome.check(
        run.parent > 0 && run.child > 0 && run.wrong_source.is_empty(),
        format!(
            "{phase}: the bypassed program and its child go around the tunnel ({})",
            describe(run)
        ),
    );
    outcome.check(
        run.arrived_directly > 0,
        format!(
            "{phase}: the bypassed datagrams reach the target directly ({})",
            describe(run)
        ),
    );
    outcome.check(
        run.window.leaked == 0,
        format!(
            "{phase}: nothing else leaves outside the tunnel ({} leaked: {:?})",
            run.window.leaked, run.window.leaks
        ),
    );
    outcome.check(
        run.code == Some(EXIT_STATUS)
            && run.output.contains("sent")
            && run.output.contains("tcp connected")
            && !run.output.contains("refused"),
        format!(
            "{phase}: the program ran, its TCP connection was answered, and its exit status came back ({:?}, {:?})",
            run.code,
            run.output.trim()
        ),
    );
}

pub(super) fn bypass(lab: &mut Lab) -> Result<Outcome> {
    let dir = tempfile::tempdir()?;
    super::connect_up(lab)?;

    // 1. Connected.
    // The generator sends no TCP here (the bypassed program's connection is told apart by its
    // port) and no ICMP (the lab counts echo replies as direct as soon as anything is).
    let connected = bypassed_run(lab, &[Kind::Udp4], dir.path(), "connected")?;
    let during = connected
        .during
        .clone()
        .context("no status during the bypass")?;
    let bypass = during.bypass.clone().context("no bypass in status")?;
    // The status names the cgroup below the cgroup2 root; here it is below the lab's mount.
    let cgroup = crate::cgroups::host_mount()
        .context("no cgroup2 mount for the lab")?
        .join(bypass.cgroup.trim_start_matches('/'));
    let after_connected = leftovers(lab, &cgroup)?;
    let mut outcome = Outcome::new(connected.window.clone());
    check_run(&mut outcome, "connected", &connected);
    outcome.check(
        connected.window.through_tunnel > 0
            && connected.window.direct == connected.arrived_directly as u64,
        format!(
            "connected: everything else arrives through the tunnel only ({})",
            describe(&connected)
        ),
    );
    outcome.check(
        during.state == State::Connected && bypass.processes >= 1 && bypass.level >= 1,
        format!(
            "status shows the bypass while it runs ({bypass:?}, {})",
            during.state
        ),
    );
    outcome.check(
        connected.during_text.contains("around the tunnel")
            && connected.during_text.contains(&bypass.id.to_string()),
        format!(
            "`status` names the bypass ({:?})",
            connected
                .during_text
                .lines()
                .find(|l| l.starts_with("bypass"))
        ),
    );
    outcome.check(
        after_connected.is_empty(),
        format!("after the program ended, nothing of the bypass remains ({after_connected:?})"),
    );

    // 2. Blocked: lockdown on, the tunnel down.
    lab.daemon()?.cli(&["lockdown", "on"])?.ok()?;
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Blocked, EVENT_TIMEOUT)?;
    let blocked = bypassed_run(lab, &[Kind::Udp4, Kind::Icmp4], dir.path(), "blocked")?;
    check_run(&mut outcome, "blocked", &blocked);
    outcome.check(
        blocked.window.through_tunnel == 0
            && blocked.window.direct == blocked.arrived_directly as u64
            && blocked.window.refused > 0,
        format!(
            "blocked: everything else is refused ({})",
            describe(&blocked)
        ),
    );
    // The control: the same program without `--bypass` is refused (each send fails, nothing of
    // it on the link), so the frames counted above are the bypass's doing.
    let control = plain_run(lab, dir.path())?;
    outcome.check(
        control.parent == 0
            && control.child == 0
            && control.output.contains("refused child")
            && control.output.contains("tcp refused"),
        format!(
            "control: the same program without --bypass is refused ({}; {:?})",
            describe(&control),
            control.output.lines().next()
        ),
    );
    let new_id = blocked
        .during
        .as_ref()
        .and_then(|s| s.bypass.as_ref())
        .map(|b| b.id);
    outcome.check(
        new_id.is_some_and(|id| id != bypass.id),
        format!(
            "a new bypass has a new cgroup (id {} then {new_id:?}), and the rules followed it",
            bypass.id
        ),
    );

    // 3. The cgroup created again by someone else, a process moved into it.
    let recreated = recreated_cgroup(lab, &cgroup, dir.path())?;
    outcome.check(
        recreated.followed,
        format!(
            "the cgroup re-created by another program (id {}): the daemon follows its new id, and finds it again after a restart ({:?})",
            recreated.id, recreated.seen
        ),
    );
    outcome.check(
        recreated.run.parent > 0 && recreated.run.child > 0 && recreated.run.window.leaked == 0,
        format!(
            "re-created: its processes go around the tunnel, nothing else does ({})",
            describe(&recreated.run)
        ),
    );
    let after_all = leftovers(lab, &cgroup)?;
    outcome.check(
        after_all.is_empty(),
        format!("at the end, nothing of the bypass remains ({after_all:?})"),
    );

    // 4. Refusals change nothing.
    let nobody =
        lab.daemon()?
            .cli_in(&lab.topo.client, &["exec", "--bypass", "--", "true"], true)?;
    outcome.check(
        nobody.code == Some(1) && nobody.stderr.contains("permission denied"),
        format!(
            "uid 65534 may not bypass ({:?}: {})",
            nobody.code,
            nobody.stderr.trim()
        ),
    );
    // From the lab's own namespace: the daemon refuses before moving anything (a check, never a
    // change of this machine: the process is the lab's own CLI, and it is not moved).
    let elsewhere = lab.daemon()?.cli(&["exec", "--bypass", "--", "true"])?;
    outcome.check(
        elsewhere.code == Some(1) && elsewhere.stderr.contains("another network namespace"),
        format!(
            "a process of another network namespace is not moved ({:?}: {})",
            elsewhere.code,
            elsewhere.stderr.trim()
        ),
    );
    let status = lab.daemon()?.status()?;
    outcome.check(
        status.bypass.is_none() && leftovers(lab, &cgroup)?.is_empty(),
        format!("the refusals changed nothing ({:?})", status.bypass),
    );
    outcome.note(format!(
        "connected: {}; blocked: {}",
        describe(&connected),
        describe(&blocked)
    ));
    Ok(outcome)
}

/// The script run as root in the client namespace without `exec --bypass`.
fn plain_run(lab: &Lab, dir: &Path) -> Result<Run> {
    let release = release_fifo(dir, "control")?;
    let script = script(&release);
    let window = lab.begin(&[])?;
    let since = Instant::now();
    let from = lab.capture.len();
    let mut command = lab.topo.client.command("bash");
    command.args(["-c", &script]);
    let mut process = crate::process::Process::spawn("plain bash", command)?;
    process.wait_for_line(0, "sent", Duration::from_secs(10))?;
    release_program(&release, Instant::now() + EVENT_TIMEOUT)?;
    let mut run = Run {
        output: process.output(),
        ..Run::default()
    };
    count_frames(lab, from, since, &mut run)?;
    run.window = lab.end(window)?;
    Ok(run)
}

/// Step 3's findings.
struct Recreated {
    id: u64,
    followed: bool,
    seen: Option<u64>,
    run: Run,
}

/// Creates the bypass cgroup again itself, moves a bash of its own into it (waiting on a FIFO,
/// so that it opens no socket before the move), waits until the daemon shows the new id, then
/// lets it send.
fn recreated_cgroup(lab: &mut Lab, cgroup: &Path, dir: &Path) -> Result<Recreated> {
    std::fs::create_dir(cgroup).with_context(|| format!("mkdir {}", cgroup.display()))?;
    let id = std::fs::metadata(cgroup)?.st_ino();
    let start = release_fifo(dir, "recreated-start")?;
    let release = release_fifo(dir, "recreated-release")?;
    let body = format!(
        "exec 4<> {}\nread -r -t 30 _ <&4\n{}",
        start.display(),
        script(&release)
    );
    let window = lab.begin(&[Kind::Udp4])?;
    let since = Instant::now();
    let from = lab.capture.len();
    let mut command = lab.topo.client.command("bash");
    command.args(["-c", &body]);
    let mut process = crate::process::Process::spawn("bypassed bash", command)?;
    std::fs::write(cgroup.join("cgroup.procs"), format!("{}\n", process.pid()))
        .with_context(|| format!("moving the test's bash into {}", cgroup.display()))?;
    let seen = lab
        .daemon()?
        .wait_for("the re-created cgroup", EVENT_TIMEOUT, |s| {
            s.bypass.as_ref().is_some_and(|b| b.id == id)
        });
    // A daemon restart meanwhile: the new daemon finds the cgroup, its id and its processes,
    // and attaches the marking program again (replacing, not doubling, the one in place).
    let mut old = lab.daemon.take().context("no daemon")?;
    old.process().terminate(EVENT_TIMEOUT)?;
    lab.daemon = Some(crate::daemon::Daemon::start(&lab.topo.client, &lab.home)?);
    let after_restart =
        lab.daemon()?
            .wait_for("the bypass found after a restart", EVENT_TIMEOUT, |s| {
                s.bypass.as_ref().is_some_and(|b| b.id == id)
            });
    let daemon = lab.daemon()?;
    release_program(&start, Instant::now() + EVENT_TIMEOUT)?;
    process.wait_for_line(0, "sent", Duration::from_secs(10))?;
    release_program(&release, Instant::now() + EVENT_TIMEOUT)?;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let status = loop {
        if let Some(status) = process.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    daemon.wait_for("the re-created bypass ended", EVENT_TIMEOUT, |s| {
        s.bypass.is_none()
    })?;
    let mut run = Run {
        code: status.and_then(|s| s.code()),
        ..Run::default()
    };
    count_frames(lab, from, since, &mut run)?;
    run.window = lab.end_excusing(window, &is_bypassed)?;
    let seen_id = seen
        .as_ref()
        .ok()
        .and_then(|s| s.bypass.as_ref())
        .map(|b| b.id);
    Ok(Recreated {
        id,
        followed: seen.is_ok() && after_restart.is_ok(),
        seen: seen_id,
        run,
    })
}
