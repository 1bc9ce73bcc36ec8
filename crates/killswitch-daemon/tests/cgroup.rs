//! The daemon's cgroup subtree against the real cgroup v2 hierarchy: a process moved in is seen,
//! frozen within 100 ms, thawed, killed with its children, and the cgroup removed. The test uses a
//! subtree of its own (`killswitch/test-<pid>`), never a daemon's, and removes it even on failure.

mod common;

use anyhow::{Context, Result};
use killswitch_daemon::cgroup::Subtree;
use killswitch_lab::netns::require_root;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn freeze_thaw_kill_and_remove_a_real_cgroup() -> Result<()> {
    if !require_root("freeze_thaw_kill_and_remove_a_real_cgroup") {
        return Ok(());
    }
    let mount = common::mount()?;
    let scratch = common::Scratch::under(&mount, &format!("test-{}", std::process::id()));
    let subtree = Subtree::at(mount.clone(), scratch.0.clone())?;
    let cgroup = subtree.create("app")?;
    assert!(cgroup.exists());
    assert_eq!(subtree.level(&cgroup), Some(3));
    let first_id = cgroup.id()?;
    assert!(!cgroup.populated()?);

    // A shell that forks a child: both must end up in the cgroup, the child by inheritance.
    let mut shell = Command::new("sh")
        .args(["-c", "sleep 30 & wait"])
        .spawn()
        .context("cannot start sh")?;
    cgroup.add_process(shell.id())?;
    let start = Instant::now();
    // The shell may have forked `sleep` before the move; it is moved again until both are in.
    while cgroup.pids()?.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        for pid in child_pids(shell.id()) {
            let _ = cgroup.add_process(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(cgroup.pids()?.len(), 2, "the shell and its sleep");
    assert!(cgroup.populated()?);

    cgroup.set_frozen(true)?;
    let took = cgroup.wait_frozen(true, Duration::from_millis(100))?;
    eprintln!("frozen in {took:?}");
    cgroup.set_frozen(false)?;
    cgroup.wait_frozen(false, Duration::from_secs(1))?;

    cgroup.kill()?;
    let status = shell.wait()?;
    assert!(!status.success(), "killed, not exited: {status}");
    let start = Instant::now();
    while cgroup.populated()? && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!cgroup.populated()?, "the sleep died with the shell");
    cgroup.remove()?;
    assert!(!cgroup.exists());
    cgroup.remove()?; // removing what is gone is fine

    // Re-created: a new id, which is why rules read it again.
    let again = subtree.create("app")?;
    assert_ne!(again.id()?, first_id);
    assert_eq!(subtree.list()?, vec![again.clone()]);
    again.remove()?;
    Ok(())
}

fn child_pids(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
