//! Scenario `freeze-on-drop` (issue 15, item 4): programs listed in config.toml's
//! `freeze_on_drop` are frozen the moment the `up` tunnel is lost and thawed when it is back;
//! those in `kill_on_drop` die.
//!
//! The senders are copies of `killswitch-bound --plain` (a file of their own each, so that the
//! daemon matches them by device and inode, not by name): one sends to the target through the
//! tunnel, one to the LAN router (allow-lan is on, so its packets leave by the physical link in
//! every state and the capture sees each of them: they are what shows that a frozen program sends
//! nothing), and one, under `kill_on_drop`, to the LAN too. A missing path in the file is refused
//! in `status`.
//!
//! Steps: config.toml written and reloaded (SIGHUP) while the senders run: they are moved into
//! the daemon's cgroups. The servers' answers are then cut off in the `net` namespace (so the
//! outage lasts), and the tunnel's interface deleted: from that moment the lab polls the cgroup's
//! `cgroup.events` every millisecond until `frozen 1` (the figure reported; the bound is 100 ms),
//! and waits for the killed sender to exit. While frozen: 0 frames of the frozen senders on the
//! physical link; a sender started meanwhile is frozen by the daemon's scan. The servers answer
//! again: the daemon reconnects, the cgroup is thawed, and both senders send again.
//!
//! The same steps fit `killswitch exec --freeze-on-drop` (at merge): start the sender through it,
//! find its cgroup in `status` by its label ([`watched_cgroup`]), and run [`lose_and_restore`].

use super::{EVENT_TIMEOUT, Outcome, connect_up};
use crate::capture::Direction;
use crate::lab::{Lab, hold, is_tunnel};
use crate::packet::{Frame, L4};
use crate::process::Process;
use crate::topology::{self, PHYS};
use anyhow::{Context, Result, bail};
use killswitch_types::OnDrop;
use killswitch_types::State;
use killswitch_types::ipc::Status;
use nix::sys::signal::Signal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bound on the freeze, from the tunnel's loss.
const FREEZE_BOUND: Duration = Duration::from_millis(100);
/// How long the outage lasts once the senders are frozen.
const OUTAGE: Duration = Duration::from_millis(1500);
/// Packets per second of each sender.
const RATE: u32 = 200;
/// The LAN ports of the frozen sender, the one started during the outage and the killed one:
/// their frames on the physical link are told apart by these.
const LAN_PORT: u16 = 9201;
const LATE_PORT: u16 = 9202;
const KILLED_PORT: u16 = 9203;
/// Frames the capture reads a little after they were sent: those of the instant of the freeze
/// are not counted as sent while frozen.
const CAPTURE_SLACK: Duration = Duration::from_millis(20);

/// Copies `killswitch-bound` to `path`: a file of its own, which is what the daemon matches.
fn copy_sender(path: &Path) -> Result<()> {
    std::fs::copy(crate::binaries::path("killswitch-bound")?, path)
        .with_context(|| format!("copying killswitch-bound to {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(())
}

/// Starts the sender at `program` in the client namespace, sending to `target` for a minute.
fn start_sender(lab: &Lab, program: &Path, target: SocketAddr, tcp_port: u16) -> Result<Process> {
    let mut command = lab
        .topo
        .client
        .command(program.to_str().context("path is not UTF-8")?);
    command.args([
        "--interface",
        PHYS,
        "--target",
        &target.to_string(),
        "--rate",
        &RATE.to_string(),
        "--duration-ms",
        "60000",
        "--plain",
        "--tcp-port",
        &tcp_port.to_string(),
    ]);
    let sender = Process::spawn("killswitch-bound (copy)", command)?;
    // `ip netns exec` becomes the program by exec: until then /proc/PID/exe is `ip`, which no
    // scan would match.
    let wanted = std::fs::metadata(program)?;
    let start = Instant::now();
    loop {
        use std::os::linux::fs::MetadataExt;
        if let Ok(exe) = std::fs::metadata(format!("/proc/{}/exe", sender.pid()))
            && (exe.st_dev(), exe.st_ino()) == (wanted.st_dev(), wanted.st_ino())
        {
            return Ok(sender);
        }
        if start.elapsed() > EVENT_TIMEOUT {
            bail!("{} never started", program.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The cgroup directory of the watched program labelled `label`, as `status` shows it.
fn watched_cgroup(status: &Status, label: &str) -> Option<PathBuf> {
    status
        .on_drop
        .programs
        .iter()
        .find(|p| p.label == label)
        .map(|p| PathBuf::from(&p.cgroup))
}

/// Whether the kernel reports the cgroup at `cgroup` frozen.
fn frozen(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.events"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "frozen 1")
}

/// Polls the cgroup every millisecond until it is frozen (`true`) or thawed, up to `limit`;
/// returns when it was seen so.
fn wait_frozen(cgroup: &Path, want: bool, limit: Duration) -> Result<Instant> {
    let start = Instant::now();
    loop {
        if frozen(cgroup) == want {
            return Ok(Instant::now());
        }
        if start.elapsed() > limit {
            bail!(
                "{} not {} within {limit:?}",
                cgroup.display(),
                if want { "frozen" } else { "thawed" }
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pids in the cgroup at `cgroup`.
fn pids(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Outgoing frames on the physical link to the LAN router's UDP `port`, captured within
/// `from..to`.
fn lan_frames(lab: &Lab, port: u16, from: Instant, to: Instant) -> usize {
    lab.capture
        .frames()
        .iter()
        .filter(|c| c.direction == Direction::Outgoing && c.at >= from && c.at <= to)
        .filter(|c| {
            matches!(&c.frame, Frame::Ip(p)
                if p.dst == IpAddr::V4(topology::ROUTER_V4)
                    && matches!(p.transport, L4::Udp { dport, .. } if dport == port))
        })
        .count()
}

/// What one loss and recovery showed.
struct Outage {
    /// From the interface's deletion to `frozen 1`.
    froze_in: Duration,
    /// When the lab saw it frozen.
    frozen_at: Instant,
    /// When the servers answered again (nothing can thaw before).
    restored_at: Instant,
    /// When the lab saw it thawed.
    thawed_at: Instant,
    /// The status while frozen.
    held: Status,
    /// The status once connected again.
    back: Status,
}

/// Cuts the `up` servers off (in the `net` namespace, so that the outage lasts), deletes the
/// tunnel's interface, and times the freeze of `cgroup` from that moment; `meanwhile` runs while
/// the tunnel stays lost (given the moment of the loss); then lets the servers answer again and
/// waits for the thaw.
fn lose_and_restore(
    lab: &mut Lab,
    cgroup: &Path,
    meanwhile: &mut dyn FnMut(&mut Lab, Instant) -> Result<()>,
) -> Result<Outage> {
    let net = &lab.topo.net;
    net.exec("nft", &["add", "table", "inet", "ks_outage"])?;
    net.exec(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "ks_outage",
            "pre",
            "{ type filter hook prerouting priority -300 ; }",
        ],
    )?;
    net.exec(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "ks_outage",
            "pre",
            "ip",
            "daddr",
            "198.51.100.0/24",
            "drop",
        ],
    )?;
    let interface = lab.up_interface();
    let lost = Instant::now();
    lab.topo.client.ip(&["link", "del", &interface])?;
    let frozen_at = wait_frozen(cgroup, true, Duration::from_secs(2))?;
    let froze_in = frozen_at - lost;
    let held = lab
        .daemon()?
        .wait_for("the programs held", EVENT_TIMEOUT, |s| {
            s.state != State::Connected
                && s.on_drop.held
                && s.on_drop
                    .last_event
                    .as_deref()
                    .is_some_and(|e| e.starts_with("frozen"))
        })?;
    meanwhile(lab, lost)?;
    let restored_at = Instant::now();
    lab.topo
        .net
        .exec("nft", &["delete", "table", "inet", "ks_outage"])?;
    let back = lab
        .daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let thawed_at = wait_frozen(cgroup, false, EVENT_TIMEOUT)?;
    Ok(Outage {
        froze_in,
        frozen_at,
        restored_at,
        thawed_at,
        held,
        back,
    })
}

pub(super) fn freeze_on_drop(lab: &mut Lab) -> Result<Outcome> {
    let frozen_program = lab.home.path().join("ks-freeze-sender");
    let killed_program = lab.home.path().join("ks-kill-sender");
    copy_sender(&frozen_program)?;
    copy_sender(&killed_program)?;
    let missing = "/nonexistent/ks-freeze-missing";
    lab.allow_lan(true)?;
    connect_up(lab)?;

    let target = SocketAddr::new(topology::TARGET_V4.into(), crate::sinks::UDP_PORT);
    let lan = |port| SocketAddr::new(topology::ROUTER_V4.into(), port);
    let through_tunnel = start_sender(lab, &frozen_program, target, 9211)?;
    let to_lan = start_sender(lab, &frozen_program, lan(LAN_PORT), 9212)?;
    let mut killed = start_sender(lab, &killed_program, lan(KILLED_PORT), 9213)?;

    // config.toml names them (and a program that is not installed); a reload takes it.
    std::fs::write(
        lab.home.config(),
        format!(
            "freeze_on_drop = [{:?}, {missing:?}]\nkill_on_drop = [{:?}]\n",
            frozen_program.display().to_string(),
            killed_program.display().to_string()
        ),
    )?;
    let (freeze_label, kill_label) = (
        frozen_program.display().to_string(),
        killed_program.display().to_string(),
    );
    let daemon = lab.daemon.as_mut().context("no daemon")?;
    daemon.process().signal(Signal::SIGHUP)?;
    let watched = daemon.wait_for("the senders watched", EVENT_TIMEOUT, |s| {
        s.on_drop.programs.len() == 2
    })?;
    // The scan moved them in when the file was loaded; `status` counts them now.
    let status = lab.daemon()?.status()?;
    let cgroup = watched_cgroup(&status, &freeze_label).context("the frozen sender's cgroup")?;
    let kill_cgroup = watched_cgroup(&status, &kill_label).context("the killed sender's cgroup")?;
    let moved = pids(&cgroup);
    let moved_killed = pids(&kill_cgroup);

    // `killswitch events`, as a user would watch it.
    let mut events = {
        let mut command = std::process::Command::new(crate::binaries::path("killswitch")?);
        command.arg("--socket").arg(lab.home.socket()).arg("events");
        Process::spawn("killswitch events", command)?
    };
    events.wait_for_line(0, "connected", EVENT_TIMEOUT)?;
    let window = lab.begin(&[])?;
    let sending_since = Instant::now();
    hold(Duration::from_millis(700));
    let before_loss = Instant::now();
    // The sender started during the outage, how long the daemon took to catch it, and when.
    let mut late: Option<(Process, Duration, Instant)> = None;
    let mut killed_in = None;
    let mut status_text = String::new();
    let outage = {
        let status_text = &mut status_text;
        let killed = &mut killed;
        let late = &mut late;
        let killed_in = &mut killed_in;
        let late_program = &frozen_program;
        lose_and_restore(lab, &cgroup, &mut |lab, lost_at| {
            // The killed sender: dead.
            let start = Instant::now();
            while killed.try_wait()?.is_none() {
                if start.elapsed() > Duration::from_secs(2) {
                    bail!("the kill_on_drop sender still runs 2 s after the loss");
                }
                hold(Duration::from_millis(1));
            }
            *killed_in = Some(lost_at.elapsed());
            *status_text = lab.daemon()?.cli(&["status"])?.ok()?.stdout;
            // A program started while the tunnel is lost: frozen by the daemon's scan.
            let sender = start_sender(lab, late_program, lan(LATE_PORT), 9214)?;
            let started = Instant::now();
            while !pids(&cgroup).contains(&sender.pid()) {
                if started.elapsed() > Duration::from_secs(2) {
                    bail!("a sender started while frozen was not moved into its cgroup in 2 s");
                }
                hold(Duration::from_millis(2));
            }
            *late = Some((sender, started.elapsed(), Instant::now()));
            hold(OUTAGE);
            Ok(())
        })?
    };
    hold(Duration::from_millis(700));
    let measurement = lab.end(window)?;
    let end = Instant::now();
    let log = lab.daemon()?.log();
    let mut outcome = Outcome::new(measurement);

    outcome.check(
        watched
            .on_drop
            .refused
            .iter()
            .any(|r| r.contains(missing) && r.contains("no such file")),
        format!(
            "a path that does not exist is refused in status ({:?})",
            watched.on_drop.refused
        ),
    );
    outcome.check(
        moved.contains(&through_tunnel.pid())
            && moved.contains(&to_lan.pid())
            && moved_killed == [killed.pid()],
        format!(
            "the reload moved the running senders into their cgroups ({moved:?}, {moved_killed:?})"
        ),
    );
    outcome.check(
        outage.froze_in <= FREEZE_BOUND,
        format!(
            "frozen (cgroup.events frozen 1) {} ms after the tunnel's interface was deleted (bound {} ms)",
            outage.froze_in.as_secs_f64() * 1000.0,
            FREEZE_BOUND.as_millis()
        ),
    );
    let before = lan_frames(lab, LAN_PORT, sending_since, before_loss);
    let during = lan_frames(
        lab,
        LAN_PORT,
        outage.frozen_at + CAPTURE_SLACK,
        outage.restored_at,
    );
    let resumed = lan_frames(lab, LAN_PORT, outage.thawed_at, end);
    outcome.check(
        before > 0 && during == 0 && resumed > 0,
        format!(
            "the frozen sender's frames on {PHYS}: {before} before the loss, {during} while frozen ({} ms), {resumed} after the thaw",
            (outage.restored_at - outage.frozen_at).as_millis()
        ),
    );
    let tunnel_before = lab
        .servers
        .udp
        .all()
        .iter()
        .filter(|a| a.at >= sending_since && a.at <= before_loss && is_tunnel(a.from))
        .count();
    let tunnel_after = lab.servers.udp.count_since(outage.thawed_at, is_tunnel);
    outcome.check(
        tunnel_before > 0 && tunnel_after > 0,
        format!(
            "the sender through the tunnel: {tunnel_before} arrivals before the loss, {tunnel_after} after the thaw"
        ),
    );
    match &late {
        Some((sender, caught, joined_at)) => {
            let late_frames = lan_frames(
                lab,
                LATE_PORT,
                *joined_at + CAPTURE_SLACK,
                outage.restored_at,
            );
            outcome.check(
                late_frames == 0 && *caught <= scan_bound(),
                format!(
                    "a sender started while the tunnel was lost was frozen {} ms after it started, then sent 0 frames until the tunnel came back ({late_frames})",
                    caught.as_millis()
                ),
            );
            outcome.check(
                lan_frames(lab, LATE_PORT, outage.thawed_at, end) > 0,
                format!("it was thawed too (pid {})", sender.pid()),
            );
        }
        None => outcome.check(false, "a sender started while the tunnel was lost"),
    }
    match killed_in {
        Some(took) => {
            outcome.check(
                lan_frames(lab, KILLED_PORT, outage.frozen_at + CAPTURE_SLACK, end) == 0,
                format!(
                    "the kill_on_drop sender died {} ms after the loss and sent nothing after",
                    took.as_millis()
                ),
            );
        }
        None => outcome.check(false, "the kill_on_drop sender died"),
    }
    let event = outage.held.on_drop.last_event.clone().unwrap_or_default();
    outcome.check(
        event == "frozen 1 program, killed 1 program (tunnel lost)",
        format!("status and events say what was done ({event:?})"),
    );
    let program = outage
        .held
        .on_drop
        .programs
        .iter()
        .find(|p| p.label == freeze_label);
    outcome.check(
        program.is_some_and(|p| p.on_drop == OnDrop::Freeze && p.processes >= 2),
        format!("status lists the frozen program with its processes ({program:?})"),
    );
    let shown: Vec<&str> = status_text
        .lines()
        .filter(|l| l.starts_with("on-drop:") || l.contains("ks-freeze-missing"))
        .collect();
    outcome.check(
        status_text.contains(&format!("on-drop:   freeze {freeze_label}: frozen, "))
            && status_text.contains(&format!(
                "on-drop:   kill {kill_label}: 0 processes, killed when the tunnel is lost"
            ))
            && status_text.contains("refused:   freeze_on_drop /nonexistent/ks-freeze-missing"),
        format!("`killswitch status` shows them while the tunnel is lost: {shown:?}"),
    );
    let thawed_event = events.wait_for_line(0, "on-drop=\"thawed 1 program\"", EVENT_TIMEOUT);
    let lines = events.output();
    outcome.check(
        thawed_event.is_ok()
            && lines.contains("on-drop=\"frozen 1 program, killed 1 program (tunnel lost)\""),
        format!(
            "`killswitch events` says frozen, then thawed: {:?}",
            lines
                .lines()
                .filter_map(|l| l.split_once(" on-drop=").map(|(_, rest)| rest))
                .map(|rest| rest.split(" error=").next().unwrap_or(rest))
                .collect::<std::collections::BTreeSet<_>>()
        ),
    );
    drop(events);
    let thawed = outage.back.on_drop.last_event.clone().unwrap_or_default();
    let now = lab.daemon()?.status()?;
    outcome.check(
        !now.on_drop.held && now.on_drop.last_event.as_deref() == Some("thawed 1 program"),
        format!(
            "thawed when connected again ({thawed:?}, then {:?}, {}, held {})",
            now.on_drop.last_event, now.state, now.on_drop.held
        ),
    );
    outcome.note(format!(
        "frozen {:.1} ms after the interface was deleted; the kill_on_drop sender died {} ms after; \
         connected and thawed {} ms after the servers answered again; firewall's last change took {} us",
        outage.froze_in.as_secs_f64() * 1000.0,
        killed_in.map_or(0, |d| d.as_millis()),
        (outage.thawed_at - outage.restored_at).as_millis(),
        outage.held.firewall.last_apply_us.unwrap_or(0)
    ));
    // The senders end, then the daemon (SIGTERM): it removes the cgroups it made.
    drop((through_tunnel, to_lan, killed, late));
    let subtree = cgroup.parent().context("the cgroup's subtree")?.to_owned();
    let mut daemon = lab.daemon.take().context("no daemon")?;
    daemon.process().terminate(EVENT_TIMEOUT)?;
    outcome.check(
        !subtree.exists(),
        format!(
            "after the daemon stopped, nothing of its cgroups remains ({})",
            subtree.display()
        ),
    );
    // The daemon's own account: the firewall's change for the loss, then the freeze after it.
    let lines: Vec<&str> = log.lines().collect();
    if let Some(at) = lines
        .iter()
        .position(|l| l.contains("after the input that showed it"))
    {
        if let Some(apply) = lines[..at]
            .iter()
            .rev()
            .find(|l| l.contains("firewall applied"))
        {
            outcome.note(format!("daemon: {}", apply.trim()));
        }
        outcome.note(format!("daemon: {}", lines[at].trim()));
    }
    if let Some(thawed) = lines.iter().find(|l| l.contains("thawed")) {
        outcome.note(format!("daemon: {}", thawed.trim()));
    }
    Ok(outcome)
}

/// How soon the daemon's scan must catch a program started while the tunnel is lost: its period
/// while held (200 ms) and some slack for a loaded machine.
fn scan_bound() -> Duration {
    Duration::from_millis(200 + 300)
}
