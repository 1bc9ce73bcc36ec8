//! Scenarios `exec-fail-closed` and `exec-unprivileged` (issue 15, item 1): `killswitch exec`
//! runs a program in a network namespace whose only way out is the tunnel.
//!
//! `exec-fail-closed`: a sender (`killswitch-bound --plain`, every UDP and ICMP packet carrying
//! its marker, TCP attempts to a port of its own) runs under `killswitch exec` across the whole
//! protected window: tunnel up (its traffic arrives through the tunnel), tunnel killed (none of it
//! on the physical link; a TCP connection from another exec'd program fails at once), tunnel back
//! (the same process's traffic arrives again, without a restart). Then the machine goes
//! `disconnected` (no machine-wide rules): an exec'd program still reaches nothing outside the
//! tunnel (0 of its packets on the link, its connection refused) while root's traffic outside exec
//! reaches the target directly: the scope is the program, not the machine. (With apps-only, the
//! tunnel would still carry the program meanwhile: an addition at merge.) Last, with `up` (the
//! daemon's own tunnel), the exec'd sender's traffic arrives through it; and with apps-only on
//! (the machine unprotected, the tunnel up), through the tunnel while root's traffic goes
//! directly, and nowhere once the tunnel's server is killed.
//!
//! `exec-openvpn`: the up/killed/back cycle with `guard` over OpenVPN's tun device.
//!
//! `exec-unprivileged`: uid 65534 runs `killswitch exec`; its output, exit status (0, 3, 127 for a
//! missing program) come back; nothing of the namespace (veth, cgroup, pin) remains after exit;
//! 200 concurrent `exec`s of one user meet the limit with a clear error in bounded time.

use super::{EVENT_TIMEOUT, Outcome};
use crate::daemon::CliResult;
use crate::generator::Kind;
use crate::lab::{Lab, is_tunnel};
use crate::packet::L4;
use crate::process::Process;
use crate::topology::{self, PHYS};
use anyhow::{Context, Result};
use killswitch_types::State;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// What every UDP and ICMP packet of `killswitch-bound` carries (its start is enough).
const MARKER: &[u8] = b"killswitch-lab: a socket fixed";
/// The port of the exec'd sender's TCP attempts: nothing else in the lab sends to it.
const TCP_PORT: u16 = 9102;
/// The host side of every exec namespace's veth is `ksx<N>` (`killswitch_policy::exec`).
const EXEC_INTERFACE_PREFIX: &str = "ksx";
/// How fast the exec'd sender sends (all kinds together).
const RATE: u32 = 200;

/// `killswitch --socket S exec -- ARGS...`, as root or as uid/gid 65534 (no groups), from `/`.
fn exec_command(lab: &Lab, args: &[&str], as_nobody: bool) -> Result<Command> {
    exec_command_with(lab, &[], args, as_nobody)
}

/// [`exec_command`] with `exec`'s own options (`--freeze-on-drop`).
fn exec_command_with(
    lab: &Lab,
    options: &[&str],
    args: &[&str],
    as_nobody: bool,
) -> Result<Command> {
    let mut command = Command::new(crate::binaries::path("killswitch")?);
    command
        .arg("--socket")
        .arg(lab.home.socket())
        .arg("exec")
        .args(options)
        .arg("--")
        .args(args)
        .current_dir("/")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    use std::os::unix::process::CommandExt;
    if as_nobody {
        command.uid(65534).gid(65534);
    }
    // The lab blocks SIGINT/SIGTERM in its threads and a blocked mask survives exec: the CLI
    // must see the signals it forwards.
    // SAFETY: pthread_sigmask is async-signal-safe; only the child's mask changes.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        });
    }
    Ok(command)
}

fn exec_output(lab: &Lab, args: &[&str], as_nobody: bool) -> Result<CliResult> {
    let output = exec_command(lab, args, as_nobody)?
        .output()
        .context("running killswitch exec")?;
    Ok(CliResult {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A TCP connection from an exec'd program to the target's sink: whether it connected, and how
/// long the attempt took (a refusal comes at once; a drop would hang until the timeout).
fn exec_connect(lab: &Lab) -> Result<(bool, Duration, String)> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}",
        topology::TARGET_V4,
        crate::sinks::TCP_PORT
    );
    let start = Instant::now();
    let result = exec_output(lab, &["timeout", "5", "bash", "-c", &script], false)?;
    Ok((
        result.code == Some(0),
        start.elapsed(),
        result.stderr.trim().to_owned(),
    ))
}

/// The exec'd sender's frames on the physical link since capture position `from`.
fn on_phys(lab: &Lab, from: usize) -> Result<Vec<String>> {
    lab.outgoing_since(from, |p| is_theirs(&p.transport, &p.payload))
}

fn is_theirs(transport: &L4, payload: &[u8]) -> bool {
    matches!(transport, L4::Tcp { dport, .. } if *dport == TCP_PORT)
        || payload.windows(MARKER.len()).any(|w| w == MARKER)
}

/// Starts `killswitch exec -- killswitch-bound ...` sending for `duration`.
fn start_sender(lab: &Lab, duration: Duration) -> Result<Process> {
    let bound = crate::binaries::path("killswitch-bound")?;
    let bound = bound.to_str().context("binary path is not UTF-8")?;
    let target = SocketAddr::new(topology::TARGET_V4.into(), crate::sinks::UDP_PORT).to_string();
    let (rate, ms, port) = (
        RATE.to_string(),
        duration.as_millis().to_string(),
        TCP_PORT.to_string(),
    );
    let command = exec_command(
        lab,
        &[
            bound,
            "--interface",
            killswitch_daemon::exec::netns::INSIDE_INTERFACE,
            "--target",
            &target,
            "--rate",
            &rate,
            "--duration-ms",
            &ms,
            "--plain",
            "--tcp-port",
            &port,
        ],
        false,
    )?;
    Process::spawn("killswitch exec", command)
}

fn hold(duration: Duration) {
    std::thread::sleep(duration);
}

/// Waits (bounded) until freeze on drop's status lists a program `wanted` accepts; whether one
/// came.
fn watched_program(
    lab: &Lab,
    wanted: impl Fn(&killswitch_types::ipc::WatchedProgram) -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let found = lab.daemon()?.status()?.on_drop.programs.iter().any(&wanted);
        if found || Instant::now() >= deadline {
            return Ok(found);
        }
        hold(Duration::from_millis(50));
    }
}

pub(super) fn exec_fail_closed(lab: &mut Lab) -> Result<Outcome> {
    lab.daemon()?
        .wait_for_state(State::Disconnected, EVENT_TIMEOUT)?;

    // The machine unprotected (`disconnected`, no machine-wide rules): an exec'd program reaches
    // nothing (no tunnel is connected), root's traffic outside exec reaches the target directly.
    // Check of the capture: the same sender outside exec puts its packets on the link.
    let control_from = lab.capture.len();
    let target = SocketAddr::new(topology::TARGET_V4.into(), crate::sinks::UDP_PORT);
    let port = TCP_PORT.to_string();
    let control = super::bound_sender(
        lab,
        target,
        RATE,
        Duration::from_millis(600),
        &["--plain", "--tcp-port", &port],
    )?;
    let mut control = Process::spawn("killswitch-bound", control)?;
    control.wait_for_line(0, "sent ", Duration::from_millis(600) + EVENT_TIMEOUT)?;
    let control_seen = on_phys(lab, control_from)?.len();

    let down_from = lab.capture.len();
    let root_window = lab.begin(&[Kind::Udp4])?;
    let mut down_sender = start_sender(lab, Duration::from_millis(1200))?;
    let down_result = down_sender
        .wait_for_line(0, "sent ", Duration::from_millis(1200) + EVENT_TIMEOUT)
        .map(|_| down_sender.output());
    let (down_connects, down_took, down_why) = exec_connect(lab)?;
    let down_leaks = on_phys(lab, down_from)?;
    let root = lab.end(root_window)?;
    let down_status = lab.daemon()?.status()?;

    // The tunnel (guarded) up, and one sender across the whole protected window: up, killed,
    // back.
    lab.connect()?;
    let tunnel_dns = lab
        .daemon()?
        .status()?
        .tunnel
        .map(|t| t.dns)
        .unwrap_or_default();
    let resolv = exec_output(lab, &["cat", "/etc/resolv.conf"], false)?;
    let window_from = lab.capture.len();
    let window = lab.begin(&[])?;
    let mut sender = start_sender(lab, Duration::from_secs(30))?;
    let started = Instant::now();
    hold(Duration::from_millis(1500));
    let up_arrivals = lab.servers.udp.count_since(started, is_tunnel);
    let (up_connects, _, up_why) = exec_connect(lab)?;
    // `exec --freeze-on-drop`: the program's cgroup is handed to freeze on drop.
    let mut frozen_one = Process::spawn(
        "killswitch exec --freeze-on-drop",
        exec_command_with(lab, &["--freeze-on-drop"], &["sleep", "30"], false)?,
    )?;
    let watched = |lab: &Lab, frozen: bool| {
        watched_program(lab, |p| p.label.contains("sleep") && p.frozen == frozen)
    };
    let watched_running = watched(lab, false)?;
    // `exec --kill-on-drop`: the program is killed when the tunnel is lost (its CLI then exits
    // with 137, 128 + SIGKILL, as a shell reports it).
    let mut killed_one = Process::spawn(
        "killswitch exec --kill-on-drop",
        exec_command_with(lab, &["--kill-on-drop"], &["sleep", "31"], false)?,
    )?;
    let kill_watched = watched_program(lab, |p| {
        p.label.contains("sleep") && p.on_drop == killswitch_types::OnDrop::Kill
    })?;

    let killed_from = lab.capture.len();
    lab.tunnel.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    // Arrivals are counted from here: a datagram already inside the tunnel when it was killed
    // may still arrive a moment later on a loaded machine.
    let down_seen = Instant::now();
    hold(Duration::from_millis(1000));
    let (killed_connects, killed_took, killed_why) = exec_connect(lab)?;
    let watched_frozen = watched(lab, true)?;
    let kill_ended = {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(status) = killed_one.try_wait()? {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = killed_one.kill();
                break None;
            }
            hold(Duration::from_millis(20));
        }
    };
    let killed_leaks = on_phys(lab, killed_from)?;
    // The window ends when the tunnel is asked back, not when it is back: what arrives once it is
    // up again belongs to "back".
    let back_at = Instant::now();
    lab.start_vpn()?;
    let killed_arrivals = lab
        .servers
        .udp
        .all()
        .iter()
        .filter(|a| a.at > down_seen && a.at < back_at && is_tunnel(a.from))
        .count();
    lab.wait_for_tunnel_traffic(back_at, 1)?;
    let measured = Instant::now();
    hold(Duration::from_millis(1500));
    let back_arrivals = lab.servers.udp.count_since(measured, is_tunnel);
    let watched_thawed = watched(lab, false)?;
    let _ = frozen_one.terminate(EVENT_TIMEOUT);
    let still_running = sender.try_wait()?.is_none();
    let window_leaks = on_phys(lab, window_from)?;
    let mut outcome = Outcome::new(lab.end(window)?);
    let _ = sender.terminate(EVENT_TIMEOUT);

    // The daemon's own tunnel (`up`): the exec'd program goes through it as well.
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.tunnel.kill_client()?;
    lab.start_up_servers(1)?;
    lab.up()?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let up_server = lab
        .up_servers
        .first()
        .map(|(server, _)| std::net::IpAddr::V4(server.client_ip))
        .context("an up server")?;
    let managed_from = lab.capture.len();
    let managed_start = Instant::now();
    let mut managed_sender = start_sender(lab, Duration::from_millis(1200))?;
    managed_sender.wait_for_line(0, "sent ", Duration::from_millis(1200) + EVENT_TIMEOUT)?;
    let managed_arrivals = lab
        .servers
        .udp
        .count_since(managed_start, |a| a == up_server);
    let managed_leaks = on_phys(lab, managed_from)?;
    let _ = managed_sender.try_wait();

    // Apps-only (the issue's case: the machine itself unprotected, the tunnel up): the exec'd
    // sender through the tunnel while root's traffic goes directly; the tunnel's server killed,
    // none of the sender's packets on the link.
    lab.daemon()?.cli(&["apps-only", "on"])?.ok()?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let apps_from = lab.capture.len();
    let apps_window = lab.begin(&[Kind::Udp4])?;
    let apps_start = Instant::now();
    let mut apps_sender = start_sender(lab, Duration::from_secs(20))?;
    hold(Duration::from_millis(1200));
    let apps_arrivals = lab.servers.udp.count_since(apps_start, |a| a == up_server);
    let apps_root = lab.end(apps_window)?;
    let apps_killed_from = lab.capture.len();
    lab.up_servers
        .first_mut()
        .context("an up server")?
        .0
        .process()
        .kill()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let apps_killed_at = Instant::now();
    hold(Duration::from_millis(1200));
    let apps_killed_arrivals = lab
        .servers
        .udp
        .count_since(apps_killed_at, |a| a == up_server);
    let apps_killed_leaks = on_phys(lab, apps_killed_from)?;
    let apps_leaks = on_phys(lab, apps_from)?;
    let _ = apps_sender.terminate(EVENT_TIMEOUT);
    // `exec --freeze-on-drop` across a daemon killed (-9) and started again while the tunnel is
    // lost: the new daemon re-adopts the scope and watches it again (the flag is kept with it), so
    // the program is frozen, not forgotten, and a deliberate `down` thaws it (found by the
    // stranger test: it stayed frozen for good).
    let tail_frozen = |lab: &Lab, frozen: bool| {
        watched_program(lab, |p| p.label.contains("tail") && p.frozen == frozen)
    };
    let mut tail = Process::spawn(
        "killswitch exec --freeze-on-drop tail",
        exec_command_with(
            lab,
            &["--freeze-on-drop"],
            &["tail", "-f", "/dev/null"],
            false,
        )?,
    )?;
    let tail_frozen_before = tail_frozen(lab, true)?;
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().kill()?;
    }
    lab.daemon = Some(crate::daemon::Daemon::start(&lab.topo.client, &lab.home)?);
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let tail_frozen_after = tail_frozen(lab, true)?;
    lab.daemon()?.cli(&["down"])?.ok()?;
    let tail_thawed = tail_frozen(lab, false)?;
    let tail_pid = lab
        .daemon()?
        .status()?
        .exec
        .iter()
        .find(|s| s.program == "tail")
        .map(|s| s.pid);
    if let Some(pid) = tail_pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = tail.kill();
    outcome.check(
        tail_frozen_before && tail_frozen_after && tail_thawed,
        format!(
            "`exec --freeze-on-drop` across `kill -9` of the daemon: frozen before ({tail_frozen_before}), re-adopted and still frozen after ({tail_frozen_after}), thawed by `down` ({tail_thawed})"
        ),
    );
    lab.daemon()?.cli(&["apps-only", "off"])?.ok()?;
    // The programs have ended (or been ended by a forwarded SIGTERM); their scopes go once their
    // cgroups are empty: bounded.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut status = lab.daemon()?.status()?;
    while !status.exec.is_empty() && Instant::now() < deadline {
        hold(Duration::from_millis(50));
        status = lab.daemon()?.status()?;
    }

    outcome.check(
        control_seen > 0,
        format!(
            "check of the capture: the sender outside exec puts its packets on {PHYS} ({control_seen} seen)"
        ),
    );
    outcome.check(
        !tunnel_dns.is_empty()
            && tunnel_dns
                .iter()
                .filter(|d| d.is_ipv4())
                .all(|d| resolv.stdout.contains(&format!("nameserver {d}")))
            && resolv.code == Some(0),
        format!(
            "the exec'd program's /etc/resolv.conf names the tunnel's resolvers {tunnel_dns:?}: {:?}",
            resolv.stdout.trim()
        ),
    );
    outcome.check(
        up_arrivals > 0 && up_connects,
        format!(
            "tunnel up: the exec'd sender's traffic arrives through the tunnel ({up_arrivals} datagrams), and an exec'd TCP connection succeeds ({up_why})"
        ),
    );
    outcome.check(
        killed_leaks.is_empty() && killed_arrivals == 0,
        format!(
            "tunnel killed: 0 packets of the exec'd sender on {PHYS} ({} seen{}), none through the tunnel ({killed_arrivals})",
            killed_leaks.len(),
            examples(&killed_leaks)
        ),
    );
    outcome.check(
        watched_running && watched_frozen && watched_thawed,
        format!(
            "`exec --freeze-on-drop`: the program is watched (running {watched_running}), frozen while the tunnel is lost ({watched_frozen}), thawed when it is back ({watched_thawed})"
        ),
    );
    outcome.check(
        kill_watched && kill_ended == Some(128 + 9),
        format!(
            "`exec --kill-on-drop`: the program is watched ({kill_watched}) and killed when the tunnel is lost (its CLI's exit status {kill_ended:?}, 137 expected)"
        ),
    );
    outcome.check(
        !killed_connects && killed_took < Duration::from_secs(2),
        format!(
            "tunnel killed: an exec'd TCP connection fails at once ({killed_took:?}: {killed_why})"
        ),
    );
    outcome.check(
        still_running && back_arrivals > 0,
        format!(
            "tunnel back: the same exec'd sender (still running: {still_running}) reaches the target through the tunnel again ({back_arrivals} datagrams), without a restart"
        ),
    );
    outcome.check(
        window_leaks.is_empty(),
        format!(
            "the whole window: 0 packets of the exec'd sender on {PHYS} ({} seen{})",
            window_leaks.len(),
            examples(&window_leaks)
        ),
    );
    outcome.check(
        down_result.is_ok() && down_leaks.is_empty(),
        format!(
            "machine disconnected: 0 packets of an exec'd sender on {PHYS} ({} seen{}; it ran: {:?})",
            down_leaks.len(),
            examples(&down_leaks),
            down_result.as_ref().map(|s| s.trim().to_owned())
        ),
    );
    outcome.check(
        !down_connects && down_took < Duration::from_secs(2),
        format!(
            "machine disconnected: an exec'd TCP connection fails at once ({down_took:?}: {down_why})"
        ),
    );
    outcome.check(
        root.direct > 0 && down_status.state == State::Disconnected,
        format!(
            "machine disconnected: root's traffic outside exec reaches the target directly ({} arrivals): the scope is the program",
            root.direct
        ),
    );
    outcome.check(
        managed_arrivals > 0 && managed_leaks.is_empty(),
        format!(
            "`up` (the daemon's own tunnel): the exec'd sender's traffic arrives through it ({managed_arrivals} datagrams from {up_server}), none on {PHYS} ({} seen{})",
            managed_leaks.len(),
            examples(&managed_leaks)
        ),
    );
    outcome.check(
        apps_arrivals > 0 && apps_root.direct > 0,
        format!(
            "apps-only, tunnel up: the exec'd sender's traffic arrives through the tunnel ({apps_arrivals} datagrams) while root's goes directly ({} arrivals)",
            apps_root.direct
        ),
    );
    outcome.check(
        apps_killed_leaks.is_empty() && apps_leaks.is_empty() && apps_killed_arrivals == 0,
        format!(
            "apps-only, the tunnel's server killed: 0 packets of the exec'd sender on {PHYS} ({} seen{}), none arrived ({apps_killed_arrivals})",
            apps_leaks.len(),
            examples(&apps_leaks)
        ),
    );
    outcome.check(
        status.exec.is_empty(),
        format!(
            "every exec scope is gone once its program ended ({:?})",
            status.exec
        ),
    );
    outcome.note(format!(
        "root's window while disconnected: {} packets left by {PHYS} by the machine's choice, not counted as leaks",
        root.leaked
    ));
    outcome.unprotected = Some(root);
    Ok(outcome)
}

/// The different refusals, each once (the uid's numbers aside).
fn distinct(refusals: &[(Option<i32>, String)]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for (code, message) in refusals {
        let line = format!("{code:?}: {}", message.trim());
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    seen
}

fn examples(frames: &[String]) -> String {
    if frames.is_empty() {
        String::new()
    } else {
        format!(
            ", e.g. {}",
            frames
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// What is left of exec scopes: `ksx` interfaces in the daemon's namespace, `exec-` cgroups, pins.
fn leftovers(lab: &Lab) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let links = lab.topo.client.ip(&["-br", "link"])?;
    found.extend(
        links
            .lines()
            .filter(|l| l.starts_with(EXEC_INTERFACE_PREFIX))
            .map(|l| format!("interface {}", l.split_whitespace().next().unwrap_or(""))),
    );
    let dir = lab.home.state_dir().join("exec");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        found.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ns-") || n.starts_with("resolv-"))
                .map(|n| format!("file {n}")),
        );
    }
    // The daemon's cgroup subtree, through its own cgroup2 mount (under the state directory)
    // or the machine's.
    let inode = {
        use std::os::linux::fs::MetadataExt;
        std::fs::metadata(lab.topo.client.path())?.st_ino()
    };
    for mount in [
        dir.join("cgroup2"),
        "/sys/fs/cgroup/unified".into(),
        "/sys/fs/cgroup".into(),
    ] {
        let subtree = mount.join("killswitch").join(format!("net-{inode}"));
        if let Ok(entries) = std::fs::read_dir(&subtree) {
            found.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("exec-"))
                    .map(|n| format!("cgroup {n}")),
            );
        }
    }
    Ok(found)
}

/// Waits (bounded) until nothing of an exec scope remains; returns what is left at the end.
fn wait_gone(lab: &Lab, limit: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = leftovers(lab)?;
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        hold(Duration::from_millis(50));
    }
}

/// The per-user limit the scenario configures: below the 32 connections a user may hold, so that
/// it is the exec limit that 200 concurrent `exec`s meet.
const LIMIT: usize = 8;

/// Writes config.toml with the exec limit and (re)starts the daemon on it.
fn restart_daemon(lab: &mut Lab) -> Result<()> {
    std::fs::write(
        lab.home.config(),
        format!("exec_limit_per_user = {LIMIT}\n"),
    )
    .context("writing config.toml")?;
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().terminate(EVENT_TIMEOUT)?;
    }
    lab.daemon = Some(crate::daemon::Daemon::start(&lab.topo.client, &lab.home)?);
    Ok(())
}

pub(super) fn exec_unprivileged(lab: &mut Lab) -> Result<Outcome> {
    restart_daemon(lab)?;
    lab.daemon()?
        .wait_for_state(State::Disconnected, EVENT_TIMEOUT)?;
    let window = lab.begin(&[])?;
    let id = exec_output(
        lab,
        &["sh", "-c", "id -u; id -g; pwd; echo to-stderr >&2"],
        true,
    )?;
    let descriptors = exec_output(lab, &["ls", "/proc/self/fd"], true)?;
    let failing = exec_output(lab, &["sh", "-c", "exit 3"], true)?;
    let missing = exec_output(lab, &["no-such-program-killswitch-lab"], true)?;
    let signalled = exec_output(lab, &["sh", "-c", "kill -TERM $$"], true)?;
    let left = wait_gone(lab, EVENT_TIMEOUT)?;

    // The CLI killed (its connection drops): the program gets SIGHUP, as from a closed terminal,
    // and its scope goes.
    let mut orphaned = Process::spawn(
        "killswitch exec",
        exec_command(lab, &["sleep", "60"], true)?,
    )?;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while lab.daemon()?.status()?.exec.iter().all(|s| s.pid == 0) && Instant::now() < deadline {
        hold(Duration::from_millis(50));
    }
    let _ = orphaned.kill();
    let hung_up = wait_gone(lab, EVENT_TIMEOUT)?;

    // A daemon restart while a program runs: the scope is re-adopted, its rules stay, and it is
    // swept once the program ends.
    let mut long = Process::spawn(
        "killswitch exec",
        exec_command(lab, &["sleep", "60"], true)?,
    )?;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut before: Vec<killswitch_types::exec::ExecScopeStatus> = Vec::new();
    // Once the program runs (a scope being set up has no pid yet).
    while before.first().is_none_or(|s| s.pid == 0) && Instant::now() < deadline {
        before = lab.daemon()?.status()?.exec;
        hold(Duration::from_millis(50));
    }
    restart_daemon(lab)?;
    let adopted = lab.daemon()?.status()?.exec;
    let table = lab
        .topo
        .client
        .exec("nft", &["list", "table", "inet", "killswitch"])
        .unwrap_or_default();
    let rules = lab.topo.client.ip(&["rule"]).unwrap_or_default();
    let confined = table.contains("iifname \"ksx*\"")
        && before
            .first()
            .is_some_and(|s| rules.contains(&format!("iif {}", s.interface)));
    if let Some(scope) = adopted.first() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(scope.pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let swept = wait_gone(lab, EVENT_TIMEOUT)?;
    let after_restart = lab.daemon()?.status()?.exec;
    let _ = long.kill();

    // The limit: the daemon allows exec_limit_per_user (8 here) per user, and each `exec` holds
    // one of the user's connections meanwhile (32 at most): 200 at once must meet one limit or
    // the other, with a message naming it, and none may hang.
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut command = exec_command(lab, &["sleep", "20"], true)?;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        held.push(command.spawn().context("starting killswitch exec")?);
    }
    // Every refused one ends by itself; the admitted ones sleep.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refusals = Vec::new();
    let mut running = Vec::new();
    for mut child in held {
        let mut ended = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                ended = Some(status);
                break;
            }
            if start.elapsed() > Duration::from_secs(8) {
                break;
            }
            hold(Duration::from_millis(20));
        }
        match ended {
            Some(status) => {
                let output = child.wait_with_output()?;
                refusals.push((
                    status.code(),
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                ));
            }
            None => running.push(child),
        }
    }
    let took = start.elapsed();
    let live = lab.daemon()?.status()?.exec.len();
    for child in &mut running {
        // SIGTERM to the CLI is forwarded to its program, which ends; the CLI exits with it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let mut forwarded = Vec::new();
    for mut child in running {
        forwarded.push(child.wait()?.code());
    }
    let after = wait_gone(lab, Duration::from_secs(20))?;
    let log: Vec<String> = lab
        .daemon()?
        .log()
        .lines()
        .filter(|l| l.contains("exec"))
        .rev()
        .take(12)
        .map(str::to_owned)
        .collect();
    let outcome_window = lab.end(window)?;
    let mut outcome = Outcome::new(outcome_window);

    outcome.check(
        id.code == Some(0)
            && id.stdout.lines().collect::<Vec<_>>() == ["65534", "65534", "/"]
            && id.stderr.contains("to-stderr"),
        format!(
            "uid 65534's program runs as uid/gid 65534 in its working directory, its output comes back ({:?}, {:?}, {:?})",
            id.code, id.stdout, id.stderr
        ),
    );
    outcome.check(
        descriptors.stdout.split_whitespace().collect::<Vec<_>>() == ["0", "1", "2", "3"],
        format!(
            "the program holds only its stdin, stdout and stderr (and `ls` its directory): {:?}",
            descriptors.stdout.trim()
        ),
    );
    outcome.check(
        failing.code == Some(3),
        format!("a program's exit status comes back (3: {:?})", failing.code),
    );
    outcome.check(
        missing.code == Some(127) && missing.stderr.contains("not found"),
        format!(
            "a missing program: status 127 and a clear message ({:?}: {:?})",
            missing.code,
            missing.stderr.trim()
        ),
    );
    outcome.check(
        signalled.code == Some(128 + 15),
        format!(
            "a program killed by SIGTERM: status 143, as a shell says ({:?})",
            signalled.code
        ),
    );
    outcome.check(
        left.is_empty(),
        format!("nothing of the namespaces remains after they exit ({left:?})"),
    );
    outcome.check(
        hung_up.is_empty(),
        format!("the CLI killed: its program got SIGHUP and its namespace is gone ({hung_up:?})"),
    );
    outcome.check(
        !before.is_empty() && adopted == before && confined,
        format!(
            "a daemon restart re-adopts a running program's scope with its rules in force (before {before:?}, after {adopted:?}, ksx rules in nft and ip rule: {confined})"
        ),
    );
    outcome.check(
        swept.is_empty() && after_restart.is_empty(),
        format!(
            "the re-adopted scope is swept once its program ends ({swept:?}, {after_restart:?})"
        ),
    );
    let limit_messages = refusals
        .iter()
        .filter(|(code, message)| {
            *code == Some(1)
                && (message.contains(&format!("the limit is {LIMIT} per user"))
                    || message.contains("connections"))
        })
        .count();
    outcome.check(
        !refusals.is_empty()
            && limit_messages == refusals.len()
            && refusals
                .iter()
                .any(|(_, m)| m.contains(&format!("the limit is {LIMIT} per user")))
            && took < Duration::from_secs(20),
        format!(
            "200 concurrent exec of one user: {} admitted ({live} live scopes), {} refused, each with a message naming the limit, within {took:?} (messages: {:?})",
            200 - refusals.len(),
            refusals.len(),
            distinct(&refusals)
        ),
    );
    outcome.check(
        live <= LIMIT,
        format!("at most {LIMIT} live scopes for the user ({live})"),
    );
    outcome.check(
        forwarded.iter().all(|c| *c == Some(128 + 15)),
        format!(
            "SIGTERM to the CLI is forwarded: each admitted program ended by it ({} of {}: {forwarded:?}; daemon: {log:#?})",
            forwarded.iter().filter(|c| **c == Some(128 + 15)).count(),
            forwarded.len()
        ),
    );
    outcome.check(
        after.is_empty(),
        format!("nothing remains after they all ended ({after:?})"),
    );

    // `killswitchd --teardown` after the daemon died (SIGKILL) with a program running: the rules
    // go, and so must the program's veth, or its namespace would reach the physical link through
    // the main routing table (forwarding stays on for the veth).
    let mut orphan = Process::spawn(
        "killswitch exec",
        exec_command(lab, &["sleep", "60"], true)?,
    )?;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut running: Vec<killswitch_types::exec::ExecScopeStatus> = Vec::new();
    while running.first().is_none_or(|s| s.pid == 0) && Instant::now() < deadline {
        running = lab.daemon()?.status()?.exec;
        hold(Duration::from_millis(50));
    }
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().kill()?;
    }
    let torn = crate::daemon::teardown(&lab.topo.client, &lab.home)?;
    let torn_text = format!("{} {}", torn.stdout.trim(), torn.stderr.trim());
    let torn_ok = torn.ok().is_ok();
    let interfaces_left: Vec<String> = leftovers(lab)?
        .into_iter()
        .filter(|l| l.starts_with("interface"))
        .collect();
    if let Some(scope) = running.first() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(scope.pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = orphan.kill();
    lab.daemon = Some(crate::daemon::Daemon::start(&lab.topo.client, &lab.home)?);
    let swept = wait_gone(lab, EVENT_TIMEOUT)?;
    outcome.check(
        !running.is_empty() && torn_ok && interfaces_left.is_empty(),
        format!(
            "killswitchd --teardown after the daemon was killed removes the running program's veth with the rules ({torn_text:?}; left: {interfaces_left:?}; scope was {running:?})"
        ),
    );
    outcome.check(
        swept.is_empty(),
        format!("the next daemon sweeps what teardown left of it ({swept:?})"),
    );
    Ok(outcome)
}

/// `exec-openvpn`: the same promise with `guard` over OpenVPN's tun device (the real `openvpn`):
/// an exec'd sender's traffic arrives through the tunnel, none of it is on the physical link
/// while OpenVPN is dead, and the same process's traffic resumes once it is back.
pub(super) fn exec_openvpn(lab: &mut Lab) -> Result<Outcome> {
    use crate::openvpn::{self, OpenVpn};
    use std::net::IpAddr;
    let live = SocketAddr::new(topology::ENDPOINT4_V4.into(), 1194);
    let client_ip = IpAddr::V4(openvpn::CLIENT_TUNNEL_V4);
    let mut vpn = OpenVpn::start(&lab.topo.net, &[live])?;
    lab.other_tunnels.push((live, client_ip));
    let resolver = IpAddr::V4(openvpn::SERVER_TUNNEL_V4);
    vpn.start_client(&lab.topo.client)?;
    let ovpn = vpn.client_config().display().to_string();
    lab.daemon()?
        .cli(&[
            "guard",
            "tun0",
            "--ovpn",
            &ovpn,
            "--dns",
            &resolver.to_string(),
        ])?
        .ok()?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let from_tunnel = move |a: IpAddr| a == client_ip;

    let window_from = lab.capture.len();
    let window = lab.begin(&[])?;
    let mut sender = start_sender(lab, Duration::from_secs(30))?;
    let started = Instant::now();
    hold(Duration::from_millis(1500));
    let up_arrivals = lab.servers.udp.count_since(started, from_tunnel);

    let killed_from = lab.capture.len();
    vpn.kill_client()?;
    lab.daemon()?
        .wait_for_state(State::Connecting, EVENT_TIMEOUT)?;
    let killed_at = Instant::now();
    hold(Duration::from_millis(1500));
    let killed_arrivals = lab.servers.udp.count_since(killed_at, |_| true);
    let killed_leaks = on_phys(lab, killed_from)?;
    vpn.start_client(&lab.topo.client)?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    let back_at = Instant::now();
    let resumed = lab
        .servers
        .udp
        .wait_for(back_at, 20, EVENT_TIMEOUT, from_tunnel)
        .is_ok();
    let still_running = sender.try_wait()?.is_none();
    let window_leaks = on_phys(lab, window_from)?;
    let mut outcome = Outcome::new(lab.end(window)?);
    let _ = sender.terminate(EVENT_TIMEOUT);
    drop(vpn);

    outcome.check(
        up_arrivals > 0,
        format!("OpenVPN up: the exec'd sender's traffic arrives through tun0 ({up_arrivals} datagrams from {client_ip})"),
    );
    outcome.check(
        killed_leaks.is_empty() && killed_arrivals == 0,
        format!(
            "OpenVPN dead: 0 packets of the exec'd sender on {PHYS} ({} seen{}), none arrived ({killed_arrivals})",
            killed_leaks.len(),
            examples(&killed_leaks)
        ),
    );
    outcome.check(
        still_running && resumed,
        format!(
            "OpenVPN back: the same exec'd sender (still running: {still_running}) reaches the target through tun0 again ({resumed})"
        ),
    );
    outcome.check(
        window_leaks.is_empty(),
        format!(
            "the whole window: 0 packets of the exec'd sender on {PHYS} ({} seen{})",
            window_leaks.len(),
            examples(&window_leaks)
        ),
    );
    Ok(outcome)
}
