//! Freeze on drop's executable matcher and registry against the real kernel, in a namespace of
//! the test's own: only processes of the configured executable (by device and inode, not name)
//! in the registry's network namespace are moved into its cgroup; the same program outside the
//! namespace, and a copy of it inside, are left alone. Then freeze, thaw, a program started
//! while frozen, kill, and an exec'd program's cgroup watched while the tunnel is lost.
//!
//! Every process touched is one this test started, from copies of `sleep` in a directory of its
//! own; the cgroups are a subtree of the test's own (`killswitch/test-freeze-<pid>`), removed
//! (processes killed) even on failure.

mod common;

use anyhow::{Context, Result, bail};
use killswitch_daemon::cgroup::Subtree;
use killswitch_daemon::freeze::Registry;
use killswitch_lab::netns::{Netns, require_root};
use killswitch_types::OnDrop;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Kills the test's processes and removes its cgroups, whatever happened.
struct Cleanup {
    children: Vec<Child>,
    // Dropped after the children are: their cgroups are empty by then.
    _cgroups: common::Scratch,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `program 60` (in `ns`, or here) and waits until the process runs it (`ip netns exec`
/// execs it in place of itself).
fn start(cleanup: &mut Cleanup, program: &Path, ns: Option<&Netns>) -> Result<u32> {
    let path = program.to_str().context("path is not UTF-8")?;
    let mut command = match ns {
        Some(ns) => ns.command(path),
        None => Command::new(path),
    };
    let child = command.arg("60").spawn().context("starting a sleeper")?;
    let pid = child.id();
    cleanup.children.push(child);
    let wanted = std::fs::metadata(program)?;
    let start = Instant::now();
    loop {
        use std::os::linux::fs::MetadataExt;
        if let Ok(exe) = std::fs::metadata(format!("/proc/{pid}/exe"))
            && exe.st_ino() == wanted.st_ino()
            && exe.st_dev() == wanted.st_dev()
        {
            return Ok(pid);
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("process {pid} never ran {}", program.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap_or_default()
}

fn copy_of_sleep(dir: &Path, name: &str) -> Result<PathBuf> {
    let sleep = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("no sleep binary")?;
    let copy = dir.join(name);
    std::fs::copy(sleep, &copy)?;
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(copy)
}

#[test]
fn only_the_executables_processes_in_the_daemons_namespace_are_frozen_or_killed() -> Result<()> {
    if !require_root("only_the_executables_processes_in_the_daemons_namespace_are_frozen_or_killed")
    {
        return Ok(());
    }
    let mount = common::mount()?;
    let root = mount
        .join("killswitch")
        .join(format!("test-freeze-{}", std::process::id()));
    let mut cleanup = Cleanup {
        _cgroups: common::Scratch(root.clone()),
        children: Vec::new(),
    };
    let ns = Netns::new("freeze")?;
    let dir = tempfile::tempdir()?;
    let program = copy_of_sleep(dir.path(), "ks-freeze-sleeper")?;
    // The same bytes, another file: not the configured executable.
    let other = copy_of_sleep(dir.path(), "ks-freeze-other")?;

    let inside = start(&mut cleanup, &program, Some(&ns))?;
    let outside = start(&mut cleanup, &program, None)?;
    let copy_inside = start(&mut cleanup, &other, Some(&ns))?;
    let (outside_cgroup, copy_cgroup) = (cgroup_of(outside), cgroup_of(copy_inside));

    let registry = Registry::new(Subtree::at(mount.clone(), root.clone()));
    // As the daemon does, from inside its namespace.
    let freeze = vec![program.clone()];
    ns.run(|| registry.configure(&freeze, &[]))?;
    let report = registry.report();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.programs.len(), 1);
    let drop_cgroup = root.join("drop-0");
    let drop_pids = std::fs::read_to_string(drop_cgroup.join("cgroup.procs"))?;
    assert_eq!(
        drop_pids.split_whitespace().collect::<Vec<_>>(),
        [inside.to_string()],
        "only the process inside the namespace was moved"
    );
    assert_eq!(cgroup_of(outside), outside_cgroup, "outside: not moved");
    assert_eq!(
        cgroup_of(copy_inside),
        copy_cgroup,
        "another file: not moved"
    );
    assert_eq!(registry.programs()[0].processes, 1);

    // The tunnel is lost: frozen within 100 ms.
    let lost = Instant::now();
    let event = registry.freeze("tunnel lost").event;
    assert_eq!(event.as_deref(), Some("frozen 1 program (tunnel lost)"));
    let cgroup = Subtree::at(mount.clone(), root.clone())?.cgroup("drop-0");
    cgroup.wait_frozen(true, Duration::from_millis(100))?;
    eprintln!("frozen {:?} after the freeze was asked", lost.elapsed());
    assert!(registry.programs()[0].frozen);
    // A program started while the tunnel is lost: frozen by the next scan.
    let late = start(&mut cleanup, &program, Some(&ns))?;
    assert_eq!(ns.run(|| registry.scan())?, 1);
    assert!(cgroup.pids()?.contains(&late));
    cgroup.wait_frozen(true, Duration::from_millis(100))?;
    assert_eq!(registry.programs()[0].processes, 2);
    // What a periodic scan with nothing to move costs (every process of the machine looked at).
    let scan_started = Instant::now();
    assert_eq!(ns.run(|| registry.scan())?, 0);
    eprintln!(
        "a scan of {} processes took {:?}",
        std::fs::read_dir("/proc")?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .count(),
        scan_started.elapsed()
    );
    assert_eq!(cgroup_of(outside), outside_cgroup);

    // Back: thawed.
    assert_eq!(registry.thaw().event.as_deref(), Some("thawed 1 program"));
    cgroup.wait_frozen(false, Duration::from_millis(100))?;

    // Reconfigured to kill instead: the freeze entry goes (its processes go back where they
    // came from), the kill entry takes the executable.
    let kill = vec![program.clone()];
    ns.run(|| registry.configure(&[], &kill))?;
    let report = registry.report();
    assert_eq!(report.programs.len(), 1);
    assert_eq!(report.programs[0].on_drop, OnDrop::Kill);
    assert_eq!(report.programs[0].processes, 2);
    let event = registry.freeze("tunnel lost").event;
    assert_eq!(event.as_deref(), Some("killed 1 program (tunnel lost)"));
    for pid in [inside, late] {
        let child = cleanup
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .context("our child")?;
        let status = child.wait()?;
        assert!(!status.success(), "killed: {status}");
    }
    // The others never were.
    for pid in [outside, copy_inside] {
        let child = cleanup
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .context("our child")?;
        assert!(child.try_wait()?.is_none(), "process {pid} still runs");
    }
    registry.thaw();

    // `exec --freeze-on-drop`: a cgroup of the exec code's, watched while the tunnel is lost,
    // is frozen at once; forgotten, it is thawed.
    let subtree = Subtree::at(mount, root)?;
    let exec = subtree.create("exec-test")?;
    let execd = start(&mut cleanup, &program, Some(&ns))?;
    exec.add_process(execd)?;
    registry.freeze("tunnel lost");
    registry.watch(exec.clone(), OnDrop::Freeze, "sleep 60".to_owned());
    exec.wait_frozen(true, Duration::from_millis(100))?;
    let programs = registry.programs();
    assert!(
        programs
            .iter()
            .any(|p| p.label == "sleep 60" && p.frozen && p.processes == 1),
        "{programs:?}"
    );
    registry.forget(&exec);
    exec.wait_frozen(false, Duration::from_millis(100))?;
    assert!(!registry.programs().iter().any(|p| p.label == "sleep 60"));

    // A package upgrade replaces the file (a new inode) under the configured path: programs
    // started before it (the old file) and after it (the new one) are both matched.
    let freeze = vec![program.clone()];
    ns.run(|| registry.configure(&freeze, &[]))?;
    let before_upgrade = start(&mut cleanup, &program, Some(&ns))?;
    let upgraded = copy_of_sleep(dir.path(), "ks-freeze-upgrade")?;
    std::fs::rename(&upgraded, &program)?;
    let after_upgrade = start(&mut cleanup, &program, Some(&ns))?;
    assert_eq!(ns.run(|| registry.scan())?, 2);
    let drop_cgroup = subtree.cgroup("drop-0");
    let moved = drop_cgroup.pids()?;
    assert!(
        moved.contains(&before_upgrade) && moved.contains(&after_upgrade),
        "{moved:?}"
    );
    // The exec'd program runs the same executable in this namespace, but its cgroup is the
    // exec code's: it stays there.
    assert_eq!(exec.pids()?, [execd]);
    // A reload after the upgrade keeps the entry, its cgroup and what is in it.
    ns.run(|| registry.configure(&freeze, &[]))?;
    assert_eq!(drop_cgroup.pids()?.len(), 2);
    Ok(())
}

#[test]
fn teardown_thaws_what_a_crashed_daemon_left_frozen() -> Result<()> {
    if !require_root("teardown_thaws_what_a_crashed_daemon_left_frozen") {
        return Ok(());
    }
    use std::os::linux::fs::MetadataExt;
    let mount = common::mount()?;
    let ns = Netns::new("freeze-left")?;
    // The subtree a daemon in that namespace would have had.
    let root = mount
        .join("killswitch")
        .join(format!("net-{}", std::fs::metadata(ns.path())?.st_ino()));
    let mut cleanup = Cleanup {
        _cgroups: common::Scratch(root.clone()),
        children: Vec::new(),
    };
    let dir = tempfile::tempdir()?;
    let program = copy_of_sleep(dir.path(), "ks-freeze-left")?;
    let subtree = Subtree::at(mount, root.clone())?;
    let left = subtree.create("drop-0")?;
    let sleeper = start(&mut cleanup, &program, Some(&ns))?;
    left.add_process(sleeper)?;
    left.set_frozen(true)?;
    left.wait_frozen(true, Duration::from_millis(100))?;

    // (Never called from the test's own namespace: that is this machine's, whose subtree is
    // not the test's to touch.) From the namespace whose subtree it is: thawed; the cgroup stays
    // while the process is in it.
    assert_eq!(ns.run(killswitch_daemon::freeze::thaw_left_behind)?, 1);
    left.wait_frozen(false, Duration::from_millis(100))?;
    assert!(left.exists());
    // Once it is empty, the next teardown removes it and the subtree.
    left.kill()?;
    for child in &mut cleanup.children {
        child.wait()?;
    }
    let start = Instant::now();
    while left.populated()? && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ns.run(killswitch_daemon::freeze::thaw_left_behind)?, 0);
    assert!(!root.exists());
    Ok(())
}
