//! `killswitch` in scripts, against a real daemon and real WireGuard servers (wireguard-go) in
//! namespaces the test creates: `up --wait` returns when the tunnel is connected or says why it is
//! not, and `status` names each dead server's cause.

use anyhow::{Context, Result, bail, ensure};
use killswitch_lab::daemon::{Daemon, DaemonHome};
use killswitch_lab::lab::Lab;
use killswitch_lab::netns::require_root;
use killswitch_lab::topology::Topology;
use killswitch_types::{FailureCause, State};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The lab's traffic rate, for a lab whose generator this test does not use.
const RATE: u32 = 500;

/// `killswitch events` running as a child, its lines read by a thread; killed (by its own pid)
/// when dropped.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Events {
    fn start(home: &DaemonHome, json: bool) -> Result<Self> {
        let mut command = Command::new(killswitch_lab::binaries::path("killswitch")?);
        command.arg("--socket").arg(home.socket());
        if json {
            command.arg("--json");
        }
        let mut child = command
            .arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting killswitch events")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Events { child, lines })
    }

    /// The next line, waiting at most 5 s for it.
    fn next(&self, what: &str) -> Result<String> {
        match self.lines.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => Ok(line),
            Err(_) => bail!("no events line for {what} within 5 s"),
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A date-time as `events` prints it: `2026-12-02T18:40:01Z`.
fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    text.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn events_lines_carry_time_and_type_and_a_repeated_change_prints_nothing() -> Result<()> {
    if !require_root("events_lines_carry_time_and_type_and_a_repeated_change_prints_nothing") {
        return Ok(());
    }
    let topo = Topology::new("events")?;
    let home = DaemonHome::new()?;
    let daemon = Daemon::start(&topo.client, &home)?;
    let json = Events::start(&home, true)?;
    let text = Events::start(&home, false)?;

    let first: serde_json::Value = serde_json::from_str(&json.next("the current status")?)?;
    ensure!(
        first["type"] == "status"
            && first["state"] == "disconnected"
            && first["time"].as_str().is_some_and(is_rfc3339_utc),
        "{first}"
    );
    let line = text.next("the current status")?;
    ensure!(
        is_rfc3339_utc(&line[..20.min(line.len())])
            && line[20..].starts_with(" disconnected lockdown=off"),
        "{line:?}"
    );

    daemon.cli(&["lockdown", "on"])?.ok()?;
    let blocked: serde_json::Value = serde_json::from_str(&json.next("lockdown on")?)?;
    ensure!(
        blocked["type"] == "change"
            && blocked["state"] == "blocked"
            && blocked["changed"].as_array().is_some_and(
                |c| c.iter().any(|f| f == "state") && c.iter().any(|f| f == "lockdown")
            ),
        "{blocked}"
    );
    let line = text.next("lockdown on")?;
    ensure!(line[20..].starts_with(" blocked lockdown=on"), "{line:?}");

    // Asked again: nothing a line shows changes, so neither stream prints one; the next line
    // of each is the next real change.
    daemon.cli(&["lockdown", "on"])?.ok()?;
    daemon.cli(&["allow-lan", "on"])?.ok()?;
    let lan: serde_json::Value = serde_json::from_str(&json.next("allow-lan on")?)?;
    ensure!(
        lan["allow_lan"] == true
            && lan["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|f| f == "allow_lan")),
        "the repeated `lockdown on` printed a line: {lan}"
    );
    let line = text.next("allow-lan on")?;
    ensure!(
        line[20..].starts_with(" blocked lockdown=on allow-lan=on"),
        "the repeated `lockdown on` printed a line: {line:?}"
    );
    Ok(())
}

/// `up --wait` with the lab's servers, bounded by `limit`; its result and how long it took.
fn up(
    lab: &Lab,
    extra: &[&str],
    limit: Duration,
) -> Result<(killswitch_lab::daemon::CliResult, Duration)> {
    let interface = lab.up_interface();
    let configs: Vec<String> = lab
        .up_servers
        .iter()
        .map(|(_, path)| path.display().to_string())
        .collect();
    let mut args = vec!["up", "--interface", interface.as_str()];
    args.extend(extra);
    args.extend(configs.iter().map(String::as_str));
    lab.daemon()?.cli_timed(&args, limit)
}

#[test]
fn up_wait_returns_when_connected_and_says_which_server_failed_and_why() -> Result<()> {
    if !require_root("up_wait_returns_when_connected_and_says_which_server_failed_and_why") {
        return Ok(());
    }
    let mut lab = Lab::new("upwait", RATE)?;
    lab.start_up_servers(2)?;
    // Server 1 is down before anything starts: its handshakes go unanswered.
    lab.up_servers[0].0.process().kill()?;

    let (waited, took) = up(
        &lab,
        &["--wait", "--timeout", "20"],
        Duration::from_secs(30),
    )?;
    ensure!(
        waited.code == Some(0) && waited.stdout.contains("state:     connected"),
        "up --wait returns once connected (to server 2): {waited:?}"
    );
    ensure!(
        took >= Duration::from_secs(5),
        "it waited out server 1's handshake timeout first ({took:?})"
    );
    eprintln!("up --wait, server 1 dead: connected to server 2 and returned after {took:?}");
    let status = lab.daemon()?.status()?;
    let managed = status
        .tunnel
        .as_ref()
        .and_then(|t| t.managed.clone())
        .context("a managed tunnel")?;
    ensure!(
        status.state == State::Connected && managed.server == 1,
        "{status:?}"
    );
    let causes: Vec<_> = managed
        .failures
        .iter()
        .map(|f| (f.server, f.cause))
        .collect();
    ensure!(
        causes == [(0, FailureCause::NoHandshake)]
            && managed.failures[0]
                .message
                .contains("wrong key or server down"),
        "server 1's cause, and server 2's none: {:?}",
        managed.failures
    );
    let text = lab.daemon()?.cli(&["status"])?.ok()?.stdout;
    ensure!(
        text.contains("failed:    server 1 (") && text.contains("[no_handshake]"),
        "{text}"
    );

    // Both servers down: `up` without --wait says it is only connecting ...
    lab.daemon()?.cli(&["down"])?.ok()?;
    lab.up_servers[1].0.process().kill()?;
    let (started, _) = up(&lab, &[], Duration::from_secs(10))?;
    ensure!(
        started.code == Some(0)
            && started
                .stdout
                .contains("connecting... use `killswitch status`"),
        "{started:?}"
    );
    // ... and --wait gives up at its timeout, with one line naming each failed server's cause.
    let (gave_up, took) = up(&lab, &["--wait", "--timeout", "7"], Duration::from_secs(20))?;
    ensure!(gave_up.code == Some(1), "{gave_up:?}");
    eprintln!(
        "up --wait --timeout 7, both dead: gave up after {took:?}: {}",
        gave_up.stderr.trim()
    );
    let line = gave_up.stderr.trim_end();
    ensure!(
        line.lines().count() == 1
            && line.starts_with("killswitch: not connected after 7 s: server 1 (")
            && line.contains("[no_handshake]"),
        "one line with the causes: {line:?}"
    );
    ensure!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(10),
        "it gave up at its timeout ({took:?})"
    );
    Ok(())
}
