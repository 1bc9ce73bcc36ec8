//! Named network namespaces that remove themselves.
//!
//! A [`Netns`] is created with `ip netns add` (so that `ip netns exec` works in it, with its own
//! `/etc/netns/NAME/resolv.conf`) and deleted on drop. Names carry the creating process's pid, so a
//! later run can remove namespaces left behind by a run that was killed before its guards ran.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

const PREFIX: &str = "ks-";
const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();

/// A network namespace that exists as long as this value does.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with its loopback interface up. `tag` makes it recognisable in
    /// `ip netns list` while a test runs.
    pub fn new(tag: &str) -> Result<Self> {
        SWEEP.call_once(remove_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{tag}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, usable with `nsenter --net=` or setns(2).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` inside the namespace (via `ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `ip -n NAME ARGS...` and fails with its stderr if it fails.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `program ARGS...` inside the namespace and returns its stdout; fails with stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run_checked(self.command(program).args(args))
    }

    /// Starts a long-lived thread inside this namespace (a server, a generator). The thread keeps
    /// the namespace's file open only while it enters it.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || -> Result<T> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("entering the network namespace")?;
                drop(file);
                Ok(f())
            })
            .context("spawning a thread")
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets `f` opens live in it, and
    /// stay in it after `f` returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    // Only this thread changes namespace; the network namespace is per thread.
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .context("entering the network namespace")?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Netns {
    /// Writes `/etc/netns/NAME/resolv.conf`, which `ip netns exec` shows to processes in this
    /// namespace in place of the host's `/etc/resolv.conf` (removed on drop). Lab processes thus
    /// never read, let alone write, this machine's own resolver configuration.
    pub fn set_resolv_conf(&self, content: &str) -> Result<()> {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("resolv.conf"), content)
            .with_context(|| format!("writing {}/resolv.conf", dir.display()))
    }

    /// The file processes in this namespace see as `/etc/resolv.conf` (see
    /// [`Netns::set_resolv_conf`]).
    pub fn resolv_conf_path(&self) -> PathBuf {
        PathBuf::from("/etc/netns")
            .join(&self.name)
            .join("resolv.conf")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        crate::cgroups::remove_daemon_subtree(self);
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates a veth pair: `a_name` in `a` and `b_name` in `b`, both up.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// Runs a command, returning stdout, or an error that shows the command and its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!(
            "{shown} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Removes every namespace this process created (and its resolv.conf), for an emergency exit
/// (Ctrl-C) where the guards' destructors will not run.
pub fn remove_own() {
    let prefix = format!("{PREFIX}{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&name));
        }
    }
}

/// Removes namespaces named by a previous run of this lab whose process no longer exists.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&name));
        }
    }
}

/// Whether tests that need root may run. Without root they are skipped loudly, except under CI
/// (`CI=true`), where a missing privilege is a failure: CI runs as root and must run them.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: needs root, and CI=true: refusing to skip a kernel test in CI");
    }
    eprintln!(
        "SKIPPED {test}: needs root (network namespaces, nftables). Run as root to test the kernel side."
    );
    false
}
