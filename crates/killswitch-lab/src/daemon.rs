//! Running `killswitchd` inside a lab namespace, and `killswitch` against it.

use crate::binaries;
use crate::netns::{Netns, run_checked};
use crate::process::Process;
use crate::wireguard::{self, Tunnel};
use anyhow::{Context, Result, bail};
use killswitch_types::ipc::Status;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// How long the daemon may take to apply its firewall and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A daemon's files (configuration, state directory, socket), kept across restarts.
#[derive(Debug)]
pub struct DaemonHome {
    dir: tempfile::TempDir,
}

impl Drop for DaemonHome {
    fn drop(&mut self) {
        crate::leftovers::forget(self.dir.path());
    }
}

impl DaemonHome {
    /// A fresh home. The directory is world-readable so that an unprivileged client can reach
    /// the socket (the daemon decides what it may do).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("killswitch-lab-")
            .tempdir()
            .context("creating a temporary directory")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        crate::leftovers::register(dir.path());
        Ok(DaemonHome { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The IPC socket.
    pub fn socket(&self) -> PathBuf {
        self.path().join("killswitch.sock")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The configuration file (absent unless a test writes it).
    pub fn config(&self) -> PathBuf {
        self.path().join("config.toml")
    }
}

/// How to start a daemon, beyond its files: see [`Daemon::start_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch<'a> {
    /// A private bus's address as the daemon's system bus (see [`crate::bus`]); none otherwise.
    pub bus: Option<&'a str>,
    /// The daemon's open-file limit (soft and hard).
    pub open_file_limit: Option<u64>,
    /// `--test-unowned-tables`: never own the tables (the fallback for kernels before 6.9).
    pub unowned_tables: bool,
    /// `--test-no-tamper-watch`: leave other programs' changes to the rules in place (scenario
    /// `verify`, which must see a tampered table stay tampered).
    pub no_tamper_watch: bool,
}

/// A running `killswitchd`.
#[derive(Debug)]
pub struct Daemon {
    process: Process,
    socket: PathBuf,
}

/// What a `killswitch` invocation printed and how it ended.
#[derive(Debug)]
pub struct CliResult {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliResult {
    fn from(output: Output) -> Self {
        CliResult {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Fails with the output unless the command succeeded.
    pub fn ok(self) -> Result<Self> {
        if self.code != Some(0) {
            bail!(
                "killswitch failed ({:?}): {}{}",
                self.code,
                self.stderr,
                self.stdout
            );
        }
        Ok(self)
    }
}

impl Daemon {
    /// Starts the daemon in `ns` with `home`'s files, and waits until it reports ready (its
    /// firewall applied, its socket listening) over the sd_notify protocol.
    pub fn start(ns: &Netns, home: &DaemonHome) -> Result<Self> {
        Self::start_on_bus(ns, home, None)
    }

    /// [`Daemon::start`], with `bus` (a private bus's address, see [`crate::bus`]) as the
    /// daemon's system bus. Without one the daemon gets none: on a developer's machine it must
    /// never reach the real systemd-resolved (and give it a link index from a lab namespace).
    pub fn start_on_bus(ns: &Netns, home: &DaemonHome, bus: Option<&str>) -> Result<Self> {
        Self::start_with(
            ns,
            home,
            &Launch {
                bus,
                ..Launch::default()
            },
        )
    }

    /// [`Daemon::start`], with the daemon's open-file limit (soft and hard) set to `limit`, so
    /// that a test can make it run out of descriptors.
    pub fn start_with_open_file_limit(ns: &Netns, home: &DaemonHome, limit: u64) -> Result<Self> {
        Self::start_with(
            ns,
            home,
            &Launch {
                open_file_limit: Some(limit),
                ..Launch::default()
            },
        )
    }

    /// [`Daemon::start`], as a kernel without nf_tables' `persist` would run it: its tables
    /// unowned, so that other programs can flush them and the daemon restores them.
    pub fn start_unowned(ns: &Netns, home: &DaemonHome) -> Result<Self> {
        Self::start_with(
            ns,
            home,
            &Launch {
                unowned_tables: true,
                ..Launch::default()
            },
        )
    }

    /// [`Daemon::start`] with the variations `launch` asks for.
    pub fn start_with(ns: &Netns, home: &DaemonHome, launch: &Launch<'_>) -> Result<Self> {
        let Launch {
            bus,
            open_file_limit,
            unowned_tables,
            no_tamper_watch,
        } = *launch;
        // `ip netns exec` shows the daemon this file as /etc/resolv.conf; without it the daemon
        // would see, and on `up` rewrite, this machine's own.
        let resolv_conf = ns.resolv_conf_path();
        anyhow::ensure!(
            resolv_conf.is_file(),
            "refusing to start killswitchd in {}: without {} it would manage this machine's /etc/resolv.conf",
            ns.name(),
            resolv_conf.display()
        );
        let notify_path = home.path().join(format!("notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).context("binding the readiness socket")?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        // With cgroup v2 mounted in its mount namespace, as on a real system.
        let mut command = crate::cgroups::command(
            ns,
            binaries::path("killswitchd")?
                .to_str()
                .context("binary path is not UTF-8")?,
        );
        command
            .arg("--config")
            .arg(home.config())
            .arg("--socket")
            .arg(home.socket())
            .arg("--state-dir")
            .arg(home.state_dir())
            .args(unowned_tables.then_some("--test-unowned-tables"))
            .args(no_tamper_watch.then_some("--test-no-tamper-watch"))
            .env("NOTIFY_SOCKET", &notify_path)
            // The daemon's log filter; KILLSWITCH_LAB_DAEMON_LOG overrides it when debugging.
            .env(
                "RUST_LOG",
                std::env::var("KILLSWITCH_LAB_DAEMON_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            // As systemd runs it: stderr a pipe, and no NO_COLOR to hide escape codes (the daemon
            // must leave them out by itself when stderr is not a terminal).
            .env_remove("NO_COLOR")
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                bus.unwrap_or("unix:path=/nonexistent/killswitch-lab-has-no-system-bus"),
            );
        if let Some(limit) = open_file_limit {
            // SAFETY: setrlimit is async-signal-safe; only the child (`ip netns exec`, which
            // execs the daemon in the same process) gets the limit.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        let mut process = Process::spawn("killswitchd", command)?;
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        let mut buffer = [0u8; 256];
        loop {
            match notify.recv(&mut buffer) {
                Ok(n) if buffer[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("reading the readiness socket"),
            }
            if let Some(status) = process.try_wait()? {
                bail!(
                    "killswitchd exited ({status}) before it was ready:\n{}",
                    process.output()
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "killswitchd not ready within {READY_TIMEOUT:?}:\n{}",
                    process.output()
                );
            }
        }
        let _ = std::fs::remove_file(&notify_path);
        Ok(Daemon {
            process,
            socket: home.socket(),
        })
    }

    /// Runs `killswitch --socket SOCKET ARGS...` as root.
    pub fn cli(&self, args: &[&str]) -> Result<CliResult> {
        self.cli_command(args)
            .map(|mut c| c.output().map(CliResult::from))?
            .context("running killswitch")
    }

    /// Runs `killswitch --socket SOCKET ARGS...` as root and returns its result with how long it
    /// took, from spawning the CLI to its exit. A CLI still running after `limit` is killed and
    /// reported as an error (the CLI's own reply timeout is 30 s; a test wants to know sooner).
    pub fn cli_timed(&self, args: &[&str], limit: Duration) -> Result<(CliResult, Duration)> {
        let mut command = self.cli_command(args)?;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let start = std::time::Instant::now();
        let child = command.spawn().context("running killswitch")?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let output = child.wait_with_output();
            let _ = done.send(start.elapsed());
            output
        });
        let took = finished.recv_timeout(limit);
        if took.is_err() {
            // Not reaped yet (the waiter reaps it), so the pid is still this child's.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let output = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the waiting thread panicked"))?
            .context("waiting for killswitch")?;
        match took {
            Ok(took) => Ok((CliResult::from(output), took)),
            Err(_) => bail!(
                "`killswitch {}` got no answer within {limit:?} (killed); it printed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }

    /// `killswitch guard` for `tunnel` (its interface, endpoint, resolver and fwmark): the CLI's
    /// output once the daemon has accepted it.
    pub fn guard(&self, tunnel: &Tunnel) -> Result<CliResult> {
        let mark = format!("{:#x}", wireguard::FWMARK);
        let endpoint = tunnel.endpoint().to_string();
        let dns = wireguard::SERVER_TUNNEL_V4.to_string();
        let args = [
            "guard",
            "--interface",
            tunnel.client_interface(),
            "--endpoint",
            &endpoint,
            "--dns",
            &dns,
            "--mark",
            &mark,
        ];
        self.cli(&args)?.ok()
    }

    /// Runs `killswitch` as an unprivileged user (uid/gid 65534, no supplementary groups).
    pub fn cli_as_nobody(&self, args: &[&str]) -> Result<CliResult> {
        let mut command = self.cli_command(args)?;
        // Dropping from root to another uid, std also clears the supplementary groups.
        command.uid(65534).gid(65534);
        command
            .output()
            .map(CliResult::from)
            .context("running killswitch as nobody")
    }

    /// Runs `killswitch --socket SOCKET ARGS...` inside `ns` (as root, or as uid/gid 65534 with
    /// no supplementary groups): for `verify`, whose probes must be sent from the lab's client
    /// namespace, never from this machine's own.
    pub fn cli_in(&self, ns: &Netns, args: &[&str], as_nobody: bool) -> Result<CliResult> {
        let mut command = Command::new(binaries::path("killswitch")?);
        command.arg("--socket").arg(&self.socket).args(args);
        if as_nobody {
            // Dropping from root to another uid, std also clears the supplementary groups.
            command.uid(65534).gid(65534);
        }
        // A child forked from a thread inside the namespace is born in it.
        ns.run(|| command.output())?
            .map(CliResult::from)
            .context("running killswitch in the namespace")
    }

    fn cli_command(&self, args: &[&str]) -> Result<Command> {
        // `verify` sends probes out of the interface of the default route: from here, that would
        // be this machine's own. It runs only inside a lab namespace (`cli_in`).
        anyhow::ensure!(
            !args.contains(&"verify"),
            "`killswitch verify` must run inside the lab's namespace: use Daemon::cli_in"
        );
        let mut command = Command::new(binaries::path("killswitch")?);
        command.arg("--socket").arg(&self.socket).args(args);
        Ok(command)
    }

    /// The daemon's status, via `killswitch --json status`.
    pub fn status(&self) -> Result<Status> {
        let result = self.cli(&["--json", "status"])?.ok()?;
        serde_json::from_str(&result.stdout)
            .with_context(|| format!("parsing status {:?}", result.stdout))
    }

    /// Waits (on the daemon's event stream, not by polling) until its state is `state`.
    pub fn wait_for_state(
        &self,
        state: killswitch_types::State,
        timeout: Duration,
    ) -> Result<Status> {
        self.wait_for(&format!("state {state}"), timeout, |s| s.state == state)
    }

    /// Waits (on the daemon's event stream) until a status satisfies `pred`, described as `what`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Result<Status> {
        use killswitch_types::ipc::{Request, RequestEnvelope, ServerEnvelope, ServerMessage};
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .context("connecting to the daemon")?;
        let line = killswitch_types::ipc::encode_line(&RequestEnvelope::new(Request::Subscribe))?;
        stream.write_all(line.as_bytes())?;
        let deadline = std::time::Instant::now() + timeout;
        let mut reader = BufReader::new(stream);
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                bail!("the daemon did not reach {what} within {timeout:?} (last status: {last:?})");
            }
            reader.get_ref().set_read_timeout(Some(left))?;
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line.is_empty() {
                bail!("the daemon did not reach {what} within {timeout:?} (last status: {last:?})");
            }
            let envelope: ServerEnvelope =
                serde_json::from_str(&line).with_context(|| format!("parsing {line:?}"))?;
            if let ServerMessage::Ok { status } | ServerMessage::Event { status } = envelope.message
            {
                if pred(&status) {
                    return Ok(status);
                }
                last = Some(status);
            }
        }
    }

    /// The daemon's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.process.output()
    }
}

/// Runs `killswitchd --early-boot` with `home`'s state directory in `ns`, to completion.
pub fn early_boot(ns: &Netns, home: &DaemonHome) -> Result<CliResult> {
    let mut command = ns.command(
        binaries::path("killswitchd")?
            .to_str()
            .context("binary path is not UTF-8")?,
    );
    command
        .arg("--early-boot")
        .arg("--state-dir")
        .arg(home.state_dir())
        .env_remove("NO_COLOR");
    command
        .output()
        .map(CliResult::from)
        .context("running killswitchd --early-boot")
}

/// Runs `killswitchd --teardown` with `home`'s files (state directory, socket, configuration) in
/// `ns`, to completion.
pub fn teardown(ns: &Netns, home: &DaemonHome) -> Result<CliResult> {
    let mut command = ns.command(
        binaries::path("killswitchd")?
            .to_str()
            .context("binary path is not UTF-8")?,
    );
    command
        .arg("--teardown")
        .arg("--state-dir")
        .arg(home.state_dir())
        .arg("--socket")
        .arg(home.socket())
        .arg("--config")
        .arg(home.config())
        .env("NO_COLOR", "1");
    command
        .output()
        .map(CliResult::from)
        .context("running killswitchd --teardown")
}

/// Lists table `inet killswitch` in `ns` as nft prints it, or `None` if it does not exist.
///
/// What says who owns the table is left out: the `flags` line (`owner` while a daemon holds it,
/// not after it died; nft 1.0.6 cannot name `persist`) and the `# progname` comment nft adds to
/// an owned table's first line. That is not what the rules are; `killswitch_nft::installed` reads
/// the flags as numbers. So are the counters' values (listed statelessly): what the table refused
/// so far, not what it is.
pub fn nft_table(ns: &Netns) -> Result<Option<String>> {
    let tables = run_checked(ns.command("nft").args(["list", "tables"]))?;
    if !tables.lines().any(|l| l.trim() == "table inet killswitch") {
        return Ok(None);
    }
    // Stateless (`-s`): the counters' values change with every refused packet (a neighbour
    // discovery message the table refuses, say), which is no change of the table.
    let listed =
        run_checked(
            ns.command("nft")
                .args(["-s", "list", "table", "inet", "killswitch"]),
        )?;
    Ok(Some(
        listed
            .lines()
            .filter(|line| !line.trim_start().starts_with("flags"))
            .map(|line| match line.split_once(" # progname ") {
                Some((table, _)) if line.starts_with("table ") => format!("{table}\n"),
                _ => format!("{line}\n"),
            })
            .collect(),
    ))
}

/// Whether table `inet killswitch` in `ns` is owned by a live netlink socket (nf_tables' `owner`
/// flag, which the kernel clears when the owner's socket closes and a `persist` table stays, an
/// orphan), as nft lists it; `None` without a table.
pub fn nft_table_owned(ns: &Netns) -> Result<Option<bool>> {
    let tables = run_checked(ns.command("nft").args(["list", "tables"]))?;
    if !tables.lines().any(|l| l.trim() == "table inet killswitch") {
        return Ok(None);
    }
    let listed = run_checked(
        ns.command("nft")
            .args(["list", "table", "inet", "killswitch"]),
    )?;
    Ok(Some(listed.lines().take(3).any(|line| {
        line.trim_start()
            .strip_prefix("flags")
            .is_some_and(|flags| flags.split([' ', ',']).any(|f| f == "owner"))
    })))
}

/// How many connections wait in the listen queue of Unix socket `socket` in `ns` (connected, not
/// yet accepted), as `ss` reports it.
pub fn listen_queue(ns: &Netns, socket: &Path) -> Result<usize> {
    let path = socket.to_str().context("socket path is not UTF-8")?;
    let listing = run_checked(ns.command("ss").args(["-xlnH", "src", path]))?;
    // `u_str LISTEN <queued> <backlog> <path> <inode> * 0`
    listing
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(4) == Some(&path))
                .then(|| fields.get(2).and_then(|q| q.parse().ok()))
                .flatten()
        })
        .with_context(|| format!("no listening socket {path} in `ss` output: {listing:?}"))
}
