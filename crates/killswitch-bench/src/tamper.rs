//! Tamper, in both of the daemon's modes.
//!
//! Owned tables (kernel 6.9 and later): another program's `nft delete table inet killswitch` is
//! refused by the kernel; the harness counts the refusals and checks that the table never changed.
//!
//! Restore-only (older kernels; forced here with `--test-unowned-tables`): how long the table is
//! missing after someone deletes it, with the daemon running. Measured between two nf_tables change
//! notifications read by the harness as they arrive: the deleting `nft` transaction's and the
//! daemon's restoring one. (The `nft` process's own exit is no good as a start: closing its socket
//! waits an RCU grace period, by which time the daemon has long restored the table.)

use crate::stats::Samples;
use anyhow::{Context, Result, bail};
use killswitch_lab::daemon::{Daemon, DaemonHome};
use killswitch_lab::netns::Netns;
use killswitch_nft::monitor::Monitor;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// A daemon with lockdown on in a namespace of its own, its tables owned or not.
fn locked_down(tag: &str, unowned: bool) -> Result<(Netns, DaemonHome, Daemon)> {
    let ns = Netns::new(tag)?;
    // The daemon's /etc/resolv.conf (it never writes it here, but it must not even see the host's).
    ns.set_resolv_conf("nameserver 192.0.2.53\n")?;
    let home = DaemonHome::new()?;
    let daemon = if unowned {
        Daemon::start_unowned(&ns, &home)?
    } else {
        Daemon::start(&ns, &home)?
    };
    daemon.cli(&["lockdown", "on"])?.ok()?;
    Ok((ns, home, daemon))
}

/// With owned tables: tries `rounds` deletions; returns how many the kernel refused. Fails if the
/// table ever changed or the daemon had to restore anything.
pub(crate) fn refusals(rounds: usize) -> Result<usize> {
    let (ns, _home, daemon) = locked_down("bench-owned", false)?;
    let before = killswitch_lab::daemon::nft_table(&ns)?;
    let mut refused = 0;
    for _ in 0..rounds {
        let deleting = ns.run(|| {
            Command::new("nft")
                .args(["delete", "table", "inet", "killswitch"])
                .output()
        })??;
        refused += usize::from(!deleting.status.success());
        if killswitch_lab::daemon::nft_table(&ns)? != before {
            bail!("the owned table changed");
        }
    }
    let status = daemon.status()?;
    if status.firewall.tamper_events != 0 {
        bail!("the daemon restored an owned table: {status:?}");
    }
    Ok(refused)
}

/// With unowned tables (restore-only): deletes the daemon's table `rounds` times and times each
/// restore.
pub(crate) fn measure(rounds: usize) -> Result<Samples> {
    let (ns, _home, mut daemon) = locked_down("bench-tamper", true)?;
    let daemon_pid = daemon.process().pid();
    let monitor = ns.run(Monitor::subscribe)??;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        monitor.read()?; // forget earlier generations
        let mut nft = ns.run(|| {
            Command::new("nft")
                .args(["delete", "table", "inet", "killswitch"])
                .spawn()
        })??;
        let nft_pid = nft.id();
        let deleted = wait_for_commit_by(&monitor, |pid| pid != daemon_pid, Duration::from_secs(5))
            .context("the deletion was not seen")?;
        let restored = if deleted.1 {
            deleted.0 // both in one read: below what this harness can resolve
        } else {
            wait_for_commit_by(&monitor, |pid| pid == daemon_pid, Duration::from_secs(5))?.0
        };
        samples.push(restored - deleted.0);
        if !nft.wait()?.success() {
            bail!("nft {nft_pid} failed to delete the table");
        }
    }
    Ok(Samples::new(samples))
}

/// Waits until a transaction whose committer satisfies `by` is reported; returns when it was read,
/// and whether the daemon's (`by` false) was in the same read.
fn wait_for_commit_by(
    monitor: &Monitor,
    by: impl Fn(u32) -> bool,
    timeout: Duration,
) -> Result<(Instant, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let changes = monitor.read()?;
        let now = Instant::now();
        if let Some(i) = changes
            .generations
            .iter()
            .position(|g| g.pid.is_some_and(&by))
        {
            let also_other = changes.generations[i + 1..]
                .iter()
                .any(|g| g.pid.is_some_and(|p| !by(p)));
            return Ok((now, also_other));
        }
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            bail!("no such transaction within {timeout:?}");
        }
        let mut pollfd = libc::pollfd {
            fd: monitor.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live descriptor, with a bounded timeout.
        let rc = unsafe { libc::poll(&mut pollfd, 1, left.as_millis().min(1000) as libc::c_int) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("polling the nftables monitor");
        }
    }
}
