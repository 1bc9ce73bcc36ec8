//! Living with other software: the real firewalld (its nftables backend) and ufw (iptables-nft)
//! run inside the lab's client namespace, are started, changed and reloaded while killswitch
//! protects the client, and must neither be hindered nor open a window.
//!
//! Each scenario proves three things with checks that can fail: the other firewall really filters
//! (a port it denies is refused inbound through the tunnel, one it allows is reachable, and the
//! denied port was reachable before it started); nothing leaks while traffic flows during its
//! start, rule changes and reloads (the capture oracle); and there is no fight (table `inet
//! killswitch` is byte-identical after every step, the daemon counts no tamper event), with the
//! daemon's tables owned and, for comparison, unowned as on kernels before 6.9.
//!
//! Neither firewall is installed on the machine: `scripts/setup.sh` unpacks their Debian packages
//! into [`LAB_TOOLS`] (their maintainer scripts would enable and start them on a machine with
//! systemd). Here they run from there with every file they write in a private temporary directory,
//! firewalld on a private D-Bus bus ([`PrivateBus`]), and only ever inside the lab's namespace.

use super::{Outcome, Scenario, TUNNEL_KINDS, ms};
use crate::bus::PrivateBus;
use crate::daemon::nft_table;
use crate::lab::{EVENT_TIMEOUT, Lab, hold};
use crate::netns::{Netns, run_checked};
use crate::process::Process;
use crate::wireguard;
use anyhow::{Context, Result, bail, ensure};
use killswitch_types::State;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `firewalld` scenario.
pub(super) const FIREWALLD: Scenario = Scenario {
    name: "firewalld",
    guards: "the real firewalld (nftables backend) in the client: it filters as configured; its start, rule changes, reloads and stop leak nothing and leave our table untouched (owned and unowned)",
    script: firewalld,
};

/// The `ufw` scenario.
pub(super) const UFW: Scenario = Scenario {
    name: "ufw",
    guards: "the real ufw (iptables-nft) in the client: it filters as configured; enable, rule changes, reloads and disable leak nothing and leave our table untouched (owned and unowned)",
    script: ufw,
};

/// Where `scripts/setup.sh` unpacks the firewalls' packages (a link per package to its version).
const LAB_TOOLS: &str = "/var/cache/killswitch/lab-tools";
/// Debian's interpreter: the firewalls' libraries (python3-firewall, python3-nftables,
/// python3-dbus) are installed for it, not for whatever `python3` is first on the PATH.
const PYTHON: &str = "/usr/bin/python3";
/// A port the other firewall is never told to allow.
const DENIED_PORT: u16 = 9100;
/// A port the other firewall allows (a permanent rule, in force after a reload).
const ALLOWED_PORT: u16 = 9101;
/// A port allowed and disallowed again while running (a rule change without a reload).
const CHANGED_PORT: u16 = 9102;
/// How long an inbound connection attempt may take (a dropped SYN shows as a timeout).
const KNOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// An unpacked package's file, or an error that says how to get it.
fn lab_tool(package: &str, file: &str) -> Result<PathBuf> {
    let root = Path::new(LAB_TOOLS).join(package);
    let path = root.join(file);
    ensure!(
        path.exists() && Path::new(PYTHON).exists(),
        "{} (or {PYTHON}) is missing: run scripts/setup.sh as root, which downloads {package} \
         into {LAB_TOOLS} without installing it",
        path.display()
    );
    Ok(root)
}

/// What an inbound TCP connection from the VPN server's side of the tunnel met.
#[derive(Debug, PartialEq, Eq)]
enum Knock {
    Accepted,
    /// Refused at once, with the error (a reject by a firewall, or a reset).
    Refused(String),
    /// No answer within [`KNOCK_TIMEOUT`] (a drop).
    Dropped,
}

impl std::fmt::Display for Knock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Knock::Accepted => write!(f, "accepted"),
            Knock::Refused(why) => write!(f, "refused ({why})"),
            Knock::Dropped => write!(f, "dropped (no answer in {} ms)", ms(KNOCK_TIMEOUT)),
        }
    }
}

/// Connects from the VPN server (the net namespace) to the client's tunnel address on `port`:
/// inbound through the tunnel, which killswitch admits, so the other firewall decides.
fn knock(lab: &Lab, port: u16) -> Result<Knock> {
    let client = SocketAddr::new(wireguard::CLIENT_TUNNEL_V4.into(), port);
    let result = lab
        .topo
        .net
        .run(|| crate::traffic::tcp_connect(client, KNOCK_TIMEOUT))?;
    Ok(match result {
        Ok(_) => Knock::Accepted,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Knock::Dropped,
        Err(e) => Knock::Refused(e.to_string()),
    })
}

/// Listening sockets in the client for the three ports (kept open while the scenario runs).
fn listen(lab: &Lab) -> Result<Vec<TcpListener>> {
    [DENIED_PORT, ALLOWED_PORT, CHANGED_PORT]
        .into_iter()
        .map(|port| {
            lab.topo
                .client
                .run(|| TcpListener::bind(("0.0.0.0", port)))?
                .with_context(|| format!("listening on port {port} in the client"))
        })
        .collect()
}

/// What a run of steps by the other firewall did to table `inet killswitch`.
#[derive(Debug, Default)]
struct Steps {
    /// Each step and how long it took.
    took: Vec<(String, Duration)>,
    /// Steps after which our table was not byte-identical to before.
    changed_table: Vec<String>,
}

impl Steps {
    /// Runs `step`, timing it, and compares our table with `table` afterwards.
    fn run(
        &mut self,
        client: &Netns,
        table: &Option<String>,
        what: &str,
        step: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let start = Instant::now();
        step().with_context(|| what.to_owned())?;
        self.took.push((what.to_owned(), start.elapsed()));
        if nft_table(client)? != *table {
            self.changed_table.push(what.to_owned());
        }
        Ok(())
    }

    /// The durations of the steps whose name starts with `prefix`, as "min–max ms".
    fn range(&self, prefix: &str) -> String {
        let times: Vec<u128> = self
            .took
            .iter()
            .filter(|(what, _)| what.starts_with(prefix))
            .map(|(_, took)| ms(*took))
            .collect();
        match (times.iter().min(), times.iter().max()) {
            (Some(min), Some(max)) => format!("{} × {min}–{max} ms", times.len()),
            _ => "none".to_owned(),
        }
    }
}

/// The checks both scenarios share, after the window is closed.
struct Shared {
    before: Knock,
    denied: Knock,
    allowed: Knock,
    changed: (Knock, Knock),
    active: bool,
    owned: Steps,
    unowned: Steps,
    tamper_owned: u64,
    tamper_unowned: u64,
    flowed_after_last_step: usize,
}

fn shared_checks(outcome: &mut Outcome, who: &str, denied_as: &str, s: &Shared) {
    outcome.check(
        s.before == Knock::Accepted,
        format!(
            "before {who} ran, port {DENIED_PORT} was reachable inbound through the tunnel ({}): killswitch admits it, so a refusal later is {who}'s",
            s.before
        ),
    );
    outcome.check(
        s.active,
        format!("{who} is active: its rules are in the client's ruleset"),
    );
    outcome.check(
        s.denied != Knock::Accepted,
        format!(
            "{who} filters: port {DENIED_PORT}, not allowed, {} inbound through the tunnel (its default: {denied_as})",
            s.denied
        ),
    );
    outcome.check(
        s.allowed == Knock::Accepted,
        format!(
            "{who} allows what it is told to: port {ALLOWED_PORT} (a permanent rule, after the reloads) {}",
            s.allowed
        ),
    );
    outcome.check(
        s.changed.0 == Knock::Accepted && s.changed.1 != Knock::Accepted,
        format!(
            "a rule change without a reload took effect: port {CHANGED_PORT} {} once allowed, {} once the rule was deleted",
            s.changed.0, s.changed.1
        ),
    );
    for (mode, steps, tamper) in [
        ("owned", &s.owned, s.tamper_owned),
        (
            "unowned (as before kernel 6.9)",
            &s.unowned,
            s.tamper_unowned,
        ),
    ] {
        outcome.check(
            steps.changed_table.is_empty(),
            format!(
                "{mode}: table inet killswitch byte-identical after each of {} steps of {who}{}",
                steps.took.len(),
                if steps.changed_table.is_empty() {
                    String::new()
                } else {
                    format!(" (changed after: {})", steps.changed_table.join(", "))
                }
            ),
        );
        outcome.check(
            tamper == 0,
            format!("{mode}: the daemon saw nothing to restore ({tamper} tamper events)"),
        );
    }
    outcome.check(
        s.flowed_after_last_step > 0,
        format!(
            "traffic went on through the tunnel after {who}'s last step ({} arrivals)",
            s.flowed_after_last_step
        ),
    );
    outcome.check(
        outcome.measurement.through_tunnel > 0,
        "traffic flowed through the tunnel during the whole window",
    );
    for (mode, steps) in [("owned", &s.owned), ("unowned", &s.unowned)] {
        let took: Vec<String> = steps
            .took
            .iter()
            .map(|(what, took)| format!("{what}: {} ms", ms(*took)))
            .collect();
        outcome.note(format!("{mode}: {}", took.join(", ")));
    }
    if let Some(gap) = outcome.measurement.longest_gap_ms {
        outcome.note(format!(
            "longest stretch without an arrival at the target: {gap} ms (a reload may hold new flows back; nothing leaves outside the tunnel)"
        ));
    }
}

/// Restarts the daemon with unowned tables (as on a kernel before 6.9), the tunnel still up, and
/// returns our table as the new daemon installed it.
fn go_unowned(lab: &mut Lab) -> Result<Option<String>> {
    lab.restart_daemon_unowned()?;
    lab.daemon()?
        .wait_for_state(State::Connected, EVENT_TIMEOUT)?;
    nft_table(&lab.topo.client)
}

/// firewalld, run from the unpacked package on a private bus, with its configuration, log and
/// temporary files in a private directory. Killed on drop (its table goes with the namespace).
struct Firewalld {
    process: Process,
    bus: PrivateBus,
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Firewalld {
    /// Starts firewalld in `ns` and waits until it has applied its configuration.
    fn start(ns: &Netns) -> Result<Self> {
        let root = lab_tool("firewalld", "usr/sbin/firewalld")?;
        let dir = tempfile::Builder::new()
            .prefix("killswitch-lab-firewalld-")
            .tempdir()?;
        let config = dir.path().join("etc");
        std::fs::create_dir(&config)?;
        for file in ["firewalld.conf", "lockdown-whitelist.xml"] {
            std::fs::copy(root.join("etc/firewalld").join(file), config.join(file))?;
        }
        let bus = PrivateBus::start()?;
        // firewalld's temporary files go to a fixed /run/firewalld, which no option moves: the
        // launcher points it (and the pid file, unused with --nopid) at the private directory
        // before firewalld's modules read it, then runs the unmodified firewalld.
        let launcher = "import runpy, sys\n\
             import firewall.config as c\n\
             c.FIREWALLD_TEMPDIR = sys.argv[1] + '/run'\n\
             c.FIREWALLD_PIDFILE = sys.argv[1] + '/firewalld.pid'\n\
             sys.argv = sys.argv[2:]\n\
             runpy.run_path(sys.argv[0], run_name='__main__')\n";
        let private = dir.path().to_str().context("temporary path is not UTF-8")?;
        let mut command = ns.command(PYTHON);
        command
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .args(["-c", launcher, private])
            .arg(root.join("usr/sbin/firewalld"))
            .args(["--nofork", "--nopid", "--log-target=console", "--debug=1"])
            .arg("--default-config")
            .arg(root.join("usr/lib/firewalld"))
            .arg("--system-config")
            .arg(&config)
            .arg("--log-file")
            .arg(dir.path().join("firewalld.log"));
        let mut process = Process::spawn("firewalld", command)?;
        // It logs start() once it owns its bus name; a D-Bus call then waits until the start is
        // done (its main loop runs only after), so `--state` answers for the finished start.
        process.wait_for_line(0, "start()", EVENT_TIMEOUT)?;
        let firewalld = Firewalld {
            process,
            bus,
            dir,
            root,
        };
        let state = firewalld.cmd(ns, &["--state"])?;
        ensure!(
            state.trim() == "running",
            "firewalld says {state:?}:\n{}",
            firewalld.process.output()
        );
        Ok(firewalld)
    }

    /// Runs `firewall-cmd ARGS...` in `ns` on firewalld's bus.
    fn cmd(&self, ns: &Netns, args: &[&str]) -> Result<String> {
        let mut command = ns.command(PYTHON);
        command
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
            .arg(self.root.join("usr/bin/firewall-cmd"))
            .args(args);
        run_checked(&mut command)
            .with_context(|| format!("firewalld's log:\n{}", tail(&self.process.output(), 20)))
    }

    /// Stops firewalld as its service would (SIGTERM; `CleanupOnExit=yes` removes its table).
    fn stop(&mut self) -> Result<()> {
        let status = self.process.terminate(EVENT_TIMEOUT)?;
        ensure!(
            status.success(),
            "firewalld exited with {status}:\n{}",
            tail(&self.process.output(), 20)
        );
        Ok(())
    }
}

impl std::fmt::Debug for Firewalld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Firewalld({:?}, {})",
            self.process,
            self.dir.path().display()
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `ns` has a table named `name` (as `nft list tables` prints it).
fn has_table(ns: &Netns, name: &str) -> Result<bool> {
    Ok(run_checked(ns.command("nft").args(["list", "tables"]))?
        .lines()
        .any(|l| l.trim() == name))
}

fn firewalld(lab: &mut Lab) -> Result<Outcome> {
    lab_tool("firewalld", "usr/sbin/firewalld")?;
    lab.connect()?;
    let _listeners = listen(lab)?;
    let before = knock(lab, DENIED_PORT)?;
    let client = &lab.topo.client;
    let table = nft_table(client)?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(300));

    let mut owned = Steps::default();
    let mut started = None;
    owned.run(client, &table, "start", || {
        started = Some(Firewalld::start(client)?);
        Ok(())
    })?;
    let mut fw = started.context("firewalld did not start")?;
    let active = has_table(client, "table inet firewalld")?;
    owned.run(client, &table, "--permanent --add-port", || {
        fw.cmd(
            client,
            &["--permanent", &format!("--add-port={ALLOWED_PORT}/tcp")],
        )
        .map(drop)
    })?;
    for n in 1..=4 {
        owned.run(client, &table, &format!("--reload {n}"), || {
            fw.cmd(client, &["--reload"]).map(drop)
        })?;
    }
    owned.run(client, &table, "--add-port", || {
        fw.cmd(client, &[&format!("--add-port={CHANGED_PORT}/tcp")])
            .map(drop)
    })?;
    let changed_open = knock(lab, CHANGED_PORT)?;
    owned.run(client, &table, "--remove-port", || {
        fw.cmd(client, &[&format!("--remove-port={CHANGED_PORT}/tcp")])
            .map(drop)
    })?;
    let changed_closed = knock(lab, CHANGED_PORT)?;
    let (denied, allowed) = (knock(lab, DENIED_PORT)?, knock(lab, ALLOWED_PORT)?);
    owned.run(client, &table, "--complete-reload", || {
        fw.cmd(client, &["--complete-reload"]).map(drop)
    })?;
    let tamper_owned = lab.daemon()?.status()?.firewall.tamper_events;

    // For comparison, tables another program could change (a kernel before 6.9).
    let table = go_unowned(lab)?;
    let client = &lab.topo.client;
    let mut unowned = Steps::default();
    for n in 1..=2 {
        unowned.run(client, &table, &format!("--reload {n}"), || {
            fw.cmd(client, &["--reload"]).map(drop)
        })?;
    }
    unowned.run(client, &table, "stop", || fw.stop())?;
    let last_step = Instant::now();
    let stopped_cleanly = !has_table(client, "table inet firewalld")?;
    lab.wait_for_tunnel_traffic(last_step, super::RESUMED)?;
    let flowed_after_last_step = lab.tunnel_arrivals_since(last_step);
    let status = lab.daemon()?.status()?;

    let mut outcome = Outcome::new(lab.end(window)?);
    let shared = Shared {
        before,
        denied,
        allowed,
        changed: (changed_open, changed_closed),
        active,
        owned,
        unowned,
        tamper_owned,
        tamper_unowned: status.firewall.tamper_events,
        flowed_after_last_step,
    };
    shared_checks(
        &mut outcome,
        "firewalld",
        "zone public rejects with admin-prohibited",
        &shared,
    );
    outcome.check(
        stopped_cleanly && status.state == State::Connected && status.firewall.installed,
        format!(
            "after firewalld stopped, its table is gone and ours stands (state {})",
            status.state
        ),
    );
    outcome.note(format!(
        "{}: start {}, --reload {}; it replaces only its own table inet firewalld (and, during a reload, table inet firewalld_policy_drop); it never flushes the ruleset",
        version(&shared_root("firewalld")),
        shared.owned.range("start"),
        shared.owned.range("--reload")
    ));
    outcome.note(
        "the blocked column counts firewalld's refusals too: during a reload its table inet firewalld_policy_drop drops new outgoing flows (the sender gets EPERM), as killswitch's reject does",
    );
    Ok(outcome)
}

/// The version an unpacked package's link points at (`firewalld_1.3.3-1~deb12u2`).
fn version(root: &Path) -> String {
    std::fs::read_link(root)
        .map(|p| p.display().to_string().replace('_', " "))
        .unwrap_or_else(|_| root.display().to_string())
}

fn shared_root(package: &str) -> PathBuf {
    Path::new(LAB_TOOLS).join(package)
}

/// ufw, run from a private copy of the unpacked package (`--rootdir` and `--datadir`), set up as
/// its maintainer script would set up /etc/ufw, applying its sysctl file from there.
struct Ufw {
    dir: tempfile::TempDir,
}

impl Ufw {
    fn new() -> Result<Self> {
        let root = lab_tool("ufw", "usr/sbin/ufw")?;
        // Not under /tmp: ufw warns when a directory above its files is world-writable, as
        // /etc's never are.
        let dir = tempfile::Builder::new()
            .prefix("killswitch-lab-ufw-")
            .tempdir_in("/run")?;
        run_checked(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(root.join("."))
                .arg(dir.path()),
        )?;
        let share = dir.path().join("usr/share/ufw");
        let etc = dir.path().join("etc/ufw");
        for file in [
            "before.rules",
            "before6.rules",
            "after.rules",
            "after6.rules",
            "user.rules",
            "user6.rules",
        ] {
            std::fs::copy(share.join("iptables").join(file), etc.join(file))?;
        }
        for file in ["ufw.conf", "before.init", "after.init"] {
            std::fs::copy(share.join(file), etc.join(file))?;
        }
        let defaults = dir.path().join("etc/default/ufw");
        let text = std::fs::read_to_string(&defaults)?;
        ensure!(
            text.contains("IPT_SYSCTL=/etc/ufw/sysctl.conf"),
            "unexpected {}",
            defaults.display()
        );
        std::fs::write(
            &defaults,
            text.replace(
                "IPT_SYSCTL=/etc/ufw/sysctl.conf",
                &format!("IPT_SYSCTL={}", etc.join("sysctl.conf").display()),
            ),
        )?;
        Ok(Ufw { dir })
    }

    /// Runs `ufw ARGS...` in `ns`.
    fn cmd(&self, ns: &Netns, args: &[&str]) -> Result<String> {
        let dir = self.dir.path();
        let mut command = ns.command(PYTHON);
        command
            .env("PYTHONPATH", dir.join("usr/lib/python3/dist-packages"))
            .arg(dir.join("usr/sbin/ufw"))
            .arg(format!("--rootdir={}", dir.display()))
            .arg(format!("--datadir={}", dir.display()))
            .args(args);
        let output = run_checked(&mut command)?;
        if output.contains("ERROR") {
            bail!("ufw {}: {output}", args.join(" "));
        }
        Ok(output)
    }
}

fn ufw(lab: &mut Lab) -> Result<Outcome> {
    let ufw = Ufw::new()?;
    lab.connect()?;
    let _listeners = listen(lab)?;
    let before = knock(lab, DENIED_PORT)?;
    let client = &lab.topo.client;
    let table = nft_table(client)?;
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(300));

    let mut owned = Steps::default();
    owned.run(client, &table, "allow (disabled)", || {
        ufw.cmd(client, &["allow", &format!("{ALLOWED_PORT}/tcp")])
            .map(drop)
    })?;
    owned.run(client, &table, "enable", || {
        ufw.cmd(client, &["--force", "enable"]).map(drop)
    })?;
    let active = run_checked(client.command("iptables").args(["-S", "ufw-user-input"]))
        .is_ok_and(|rules| rules.contains(&format!("--dport {ALLOWED_PORT}")));
    for n in 1..=2 {
        owned.run(client, &table, &format!("reload {n}"), || {
            ufw.cmd(client, &["reload"]).map(drop)
        })?;
    }
    owned.run(client, &table, "allow", || {
        ufw.cmd(client, &["allow", &format!("{CHANGED_PORT}/tcp")])
            .map(drop)
    })?;
    let changed_open = knock(lab, CHANGED_PORT)?;
    owned.run(client, &table, "delete allow", || {
        ufw.cmd(client, &["delete", "allow", &format!("{CHANGED_PORT}/tcp")])
            .map(drop)
    })?;
    let changed_closed = knock(lab, CHANGED_PORT)?;
    let (denied, allowed) = (knock(lab, DENIED_PORT)?, knock(lab, ALLOWED_PORT)?);
    let tamper_owned = lab.daemon()?.status()?.firewall.tamper_events;

    // For comparison, tables another program could change (a kernel before 6.9).
    let table = go_unowned(lab)?;
    let client = &lab.topo.client;
    let mut unowned = Steps::default();
    unowned.run(client, &table, "reload 3", || {
        ufw.cmd(client, &["reload"]).map(drop)
    })?;
    unowned.run(client, &table, "disable", || {
        ufw.cmd(client, &["disable"]).map(drop)
    })?;
    let last_step = Instant::now();
    lab.wait_for_tunnel_traffic(last_step, super::RESUMED)?;
    let flowed_after_last_step = lab.tunnel_arrivals_since(last_step);
    let status = lab.daemon()?.status()?;

    let mut outcome = Outcome::new(lab.end(window)?);
    let shared = Shared {
        before,
        denied,
        allowed,
        changed: (changed_open, changed_closed),
        active,
        owned,
        unowned,
        tamper_owned,
        tamper_unowned: status.firewall.tamper_events,
        flowed_after_last_step,
    };
    shared_checks(&mut outcome, "ufw", "deny incoming, a silent drop", &shared);
    outcome.check(
        status.state == State::Connected && status.firewall.installed,
        format!("after ufw disable, ours stands (state {})", status.state),
    );
    outcome.note(format!(
        "{}: enable {}, reload {}; it uses only iptables-nft's tables ip filter and ip6 filter, and its ufw-* chains",
        version(&shared_root("ufw")),
        shared.owned.range("enable"),
        shared.owned.range("reload")
    ));
    outcome.note(
        "lost packets here are probably ufw's (not counted per kind): a reload rebuilds its chains, and replies arriving meanwhile (echo replies, TCP handshakes) are dropped by its input policy",
    );
    Ok(outcome)
}
