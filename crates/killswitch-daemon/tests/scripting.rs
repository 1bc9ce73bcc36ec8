//! `killswitch` in scripts, against a real daemon and real WireGuard servers (wireguard-go) in
//! namespaces the test creates: `up --wait` returns when the tunnel is connected or says why it is
//! not, and `status` names each dead server's cause.

use anyhow::{Context, Result, ensure};
use killswitch_lab::lab::Lab;
use killswitch_lab::netns::require_root;
use killswitch_types::{FailureCause, State};
use std::time::Duration;

/// The lab's traffic rate, for a lab whose generator this test does not use.
const RATE: u32 = 500;

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
