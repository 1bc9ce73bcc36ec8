//! Scenario `container-shared` (issue 17, "a container others share"): the container image's
//! entrypoint (`packaging/container/entrypoint.sh`, the very file, compiled in) protects two
//! "application containers" that share its network namespace, as compose's
//! `network_mode: "service:killswitch"` makes them.
//!
//! No container engine runs here (podman or docker would put their own networking into this
//! machine's namespace), so the lab builds what the engine would: the "container" is the client
//! namespace (its veth `phys0` is the container's `eth0`, its WAN link, where the capture sits)
//! with a mount and pid namespace of its own, in which the wg-quick directory
//! (`/etc/wireguard`, read-only) and the state directory (`/var/lib/killswitch`) are bind
//! mounts and the entrypoint is PID 1. Each application is `killswitch-bound --plain` (unbound
//! UDP, TCP attempts, and sockets bound to `phys0`, every UDP and ICMP packet marked) in a mount
//! and pid namespace of its own inside the same network namespace, sending to a port of its own
//! on the target, where a sink records where its packets came from.
//!
//! The script: the two applications without the kill switch put their packets on the WAN (the
//! capture sees a leak: the baseline); then the entrypoint runs with two wg-quick files (failover
//! order by name); both applications' traffic arrives through the tunnel; server 1 is killed and
//! server 2 stopped (no tunnel at all): none of the applications' packets reaches the WAN and
//! their connections fail at once; server 2 resumes: the same application processes' traffic
//! arrives through it; SIGTERM to the entrypoint: the daemon exits 0 within a second, its rules
//! stay, and the applications, still sending, reach nothing (fail closed: documented in
//! packaging/container/README.md).

use super::{EVENT_TIMEOUT, Outcome};
use crate::daemon::{nft_table, teardown};
use crate::generator::Kind;
use crate::lab::{Lab, hold};
use crate::netns::Netns;
use crate::packet::L4;
use crate::process::Process;
use crate::sinks::Arrivals;
use crate::topology::{self, PHYS};
use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The entrypoint as the image ships it.
const ENTRYPOINT: &str = include_str!("../../../../packaging/container/entrypoint.sh");
/// What every UDP and ICMP packet of `killswitch-bound` carries (its start is enough).
const MARKER: &[u8] = b"killswitch-lab: a socket fixed";
/// Each application's UDP port on the target (its sink) and the port of its TCP attempts.
const APPS: [(u16, u16); 2] = [(9201, 9301), (9202, 9302)];
/// Each application's rate, all its kinds together.
const RATE: u32 = 200;
/// How long the dead tunnel is watched for the applications' packets.
const DEAD_FOR: Duration = Duration::from_secs(2);
/// Prepares the "container" (PID 1 of its pid namespace, in a mount namespace of its own) and
/// execs the entrypoint: `$1` the lab's directory for it. The mounts are made in that mount
/// namespace only (`unshare` makes it private), over directories that exist on this machine:
/// /var/lib always, /etc/wireguard with wireguard-tools (without it the entrypoint is told the
/// directory instead). The socket is not under /run (a tmpfs there could hide the file
/// `ip netns exec` shows as /etc/resolv.conf, when the host's is a link into /run): the lab
/// passes KILLSWITCH_SOCKET, as the image's ENV does.
const CONTAINER_INIT: &str = r#"set -e
dir=$1
mount -t tmpfs -o mode=755 killswitch-lab-varlib /var/lib
mkdir /var/lib/killswitch
mount --bind "$dir/state" /var/lib/killswitch
if [ -d /etc/wireguard ]; then
  mount --bind "$dir/wireguard" /etc/wireguard
  mount -o remount,bind,ro /etc/wireguard
else
  export KILLSWITCH_WIREGUARD_DIR="$dir/wireguard"
fi
if [ -d /etc/killswitch ]; then
  mount -t tmpfs -o mode=755 killswitch-lab-etc /etc/killswitch
fi
exec "$dir/entrypoint.sh""#;

/// A UDP sink on the target for one application: who sent what, and when.
struct Sink {
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Sink {
    fn start(net: &Netns, port: u16) -> Result<Self> {
        let arrivals = Arrivals::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopping) = (arrivals.clone(), stop.clone());
        let address = SocketAddr::new(topology::TARGET_V4.into(), port);
        let socket = net.run(|| UdpSocket::bind(address))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut buffer = [0u8; 2048];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buffer) {
                    recorded.push(from.ip());
                }
            }
            Ok(())
        });
        Ok(Sink {
            arrivals,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes the directory a container is given: `wireguard/` (mode 700) with `configs` as
/// `se1.conf`, `se2.conf`, ...; an empty `state/`; and `entrypoint.sh`.
fn prepare(dir: &Path, configs: &[PathBuf]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for sub in ["wireguard", "state"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::set_permissions(
        dir.join("wireguard"),
        std::fs::Permissions::from_mode(0o700),
    )?;
    for (n, path) in configs.iter().enumerate() {
        std::fs::copy(
            path,
            dir.join("wireguard").join(format!("se{}.conf", n + 1)),
        )?;
    }
    let entrypoint = dir.join("entrypoint.sh");
    std::fs::write(&entrypoint, ENTRYPOINT)?;
    std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir.to_owned())
}

/// `ip netns exec NS unshare --mount --pid --fork --kill-child --mount-proc -- PROGRAM`: a
/// program in a "container" of its own that shares `ns`'s network (killing `unshare` kills it).
fn in_own_container(ns: &Netns, program: &str) -> Command {
    let mut command = ns.command("unshare");
    command.args([
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        program,
    ]);
    command
}

/// A program started by [`in_own_container`]: `unshare`, and as its only child the program, PID
/// 1 of its pid namespace. Dropping it kills the program, and with it (PID 1) every process of
/// that pid namespace, then `unshare`: `--kill-child` alone is not enough, since the kernel clears
/// the parent-death signal it relies on when the program changes its uid (`killswitch-bound`
/// drops to 65534).
struct Contained {
    process: Process,
}

impl Contained {
    fn spawn(name: &str, command: Command) -> Result<Self> {
        Ok(Contained {
            process: Process::spawn(name, command)?,
        })
    }

    /// The program's pid (in this machine's pid namespace): `unshare`'s only child, waited for
    /// (bounded) while `unshare` has not forked yet.
    fn inner_pid(&self) -> Result<i32> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(child) = self.child() {
                return Ok(child);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "unshare (pid {}) has no child after {EVENT_TIMEOUT:?}",
                self.process.pid()
            );
            hold(Duration::from_millis(20));
        }
    }

    fn child(&self) -> Option<i32> {
        let pid = self.process.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        // Only while `unshare` is alive and unreaped is its child list this program's.
        if let Ok(None) = self.process.try_wait()
            && let Some(child) = self.child()
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL);
        }
    }
}

/// Starts application `n` (0 or 1): `killswitch-bound --plain` to its own port, for `sending`.
fn start_app(lab: &Lab, n: usize, sending: Duration) -> Result<Contained> {
    let (udp, tcp) = APPS[n];
    let bound = crate::binaries::path("killswitch-bound")?;
    let mut command = in_own_container(
        &lab.topo.client,
        bound.to_str().context("binary path is not UTF-8")?,
    );
    command.args([
        "--interface",
        PHYS,
        "--target",
        &SocketAddr::new(topology::TARGET_V4.into(), udp).to_string(),
        "--rate",
        &RATE.to_string(),
        "--duration-ms",
        &sending.as_millis().to_string(),
        "--plain",
        "--tcp-port",
        &tcp.to_string(),
    ]);
    Contained::spawn(&format!("application {}", n + 1), command)
}

/// Whether a captured packet is one of the applications': their marker, or their ports.
fn is_an_apps(transport: &L4, payload: &[u8]) -> bool {
    let port = match transport {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => Some(*dport),
        _ => None,
    };
    port.is_some_and(|p| APPS.iter().any(|(udp, tcp)| p == *udp || p == *tcp))
        || payload.windows(MARKER.len()).any(|w| w == MARKER)
}

/// The applications' outgoing frames on the WAN link from capture position `from` up to now
/// (drained with a sentinel), described.
fn apps_on_wan(lab: &Lab, from: usize) -> Result<Vec<String>> {
    lab.outgoing_since(from, |p| is_an_apps(&p.transport, &p.payload))
}

/// The "container": the entrypoint as PID 1 of its own pid and mount namespace, in the client's
/// network namespace. Dropping it kills the entrypoint, and with PID 1 the kernel kills every
/// process of that pid namespace, the daemon included.
struct Container {
    entrypoint: Contained,
    dir: PathBuf,
}

impl Container {
    fn start(lab: &Lab, dir: &Path) -> Result<Self> {
        let bin = crate::binaries::path("killswitchd")?;
        let bin = bin.parent().context("the binaries' directory")?;
        let mut command = in_own_container(&lab.topo.client, "/bin/sh");
        command
            .args(["-c", CONTAINER_INIT, "container-init"])
            .arg(dir)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
            )
            // The image sets KILLSWITCH_SOCKET (ENV); here it is in the lab's directory, so that
            // the lab's `killswitch` reaches it from outside the container's mount namespace.
            .env("KILLSWITCH_SOCKET", dir.join("killswitch.sock"))
            .env("KILLSWITCH_INTERFACE", lab.up_interface())
            // Never the real system bus (and systemd-resolved) of this machine.
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/killswitch-lab-has-no-system-bus",
            )
            .env("RUST_LOG", "info");
        Ok(Container {
            entrypoint: Contained::spawn("container", command)?,
            dir: dir.to_owned(),
        })
    }

    /// `killswitch --socket SOCKET ARGS...` from outside, as root.
    fn cli(&self, args: &[&str]) -> Result<Command> {
        let mut command = Command::new(crate::binaries::path("killswitch")?);
        command
            .arg("--socket")
            .arg(self.dir.join("killswitch.sock"));
        command.args(args);
        Ok(command)
    }

    /// `killswitch-entrypoint health`, run in the container (its mount and network namespace),
    /// as the image's HEALTHCHECK runs it: whether it said healthy.
    fn healthy(&self, lab: &Lab) -> Result<bool> {
        let pid = self.entrypoint.inner_pid()?.to_string();
        let bin = crate::binaries::path("killswitch")?;
        let bin = bin.parent().context("the binaries' directory")?;
        let status = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--net", "--pid", "--"])
            .arg("/bin/sh")
            .arg(self.dir.join("entrypoint.sh"))
            .arg("health")
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
            )
            .env("KILLSWITCH_SOCKET", self.dir.join("killswitch.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running the health check in {}", lab.topo.client.name()))?;
        Ok(status.success())
    }
}

/// Follows `killswitch events --json` and waits for a line with `needle` after line `from`;
/// returns the index after it. An error carries the container's output (the entrypoint's and
/// the daemon's log).
fn wait_event(
    events: &mut Process,
    container: &Container,
    from: usize,
    needle: &str,
) -> Result<usize> {
    events
        .wait_for_line(from, needle, EVENT_TIMEOUT)
        .with_context(|| {
            format!(
                "the container's output:\n{}",
                container.entrypoint.process.output()
            )
        })
}

/// A TCP connection from a third application to the lab's acceptor: whether it connected, and
/// how long the attempt took (a refusal comes at once; a drop would hang).
fn app_connects(lab: &Lab) -> Result<(bool, Duration)> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}",
        topology::TARGET_V4,
        crate::sinks::TCP_PORT
    );
    let mut command = in_own_container(&lab.topo.client, "timeout");
    command.args(["5", "bash", "-c", &script]);
    let start = Instant::now();
    let status = command.output().context("running the TCP probe")?.status;
    Ok((status.success(), start.elapsed()))
}

/// The wireguard-go process of `up` server `n` (0-based).
fn server(lab: &mut Lab, n: usize) -> Result<&mut Process> {
    Ok(lab
        .up_servers
        .get_mut(n)
        .with_context(|| format!("no up server {}", n + 1))?
        .0
        .process())
}

pub(super) fn container_shared(lab: &mut Lab) -> Result<Outcome> {
    // This scenario's daemon is the container's: the lab's goes, and its rules with it, so that
    // the baseline runs with no kill switch at all.
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().terminate(EVENT_TIMEOUT)?;
    }
    teardown(&lab.topo.client, &lab.home)?.ok()?;
    let no_table_before = nft_table(&lab.topo.client)?.is_none();

    lab.start_up_servers(2)?;
    // Failover order is the files' names' order: se1 first.
    let configs: Vec<PathBuf> = lab.up_servers.iter().map(|(_, p)| p.clone()).collect();
    let dir = prepare(&lab.home.path().join("container"), &configs)?;
    let empty = prepare(&lab.home.path().join("container-without-files"), &[])?;
    let (first, second) = match lab.up_servers.as_slice() {
        [(a, _), (b, _)] => (IpAddr::V4(a.client_ip), IpAddr::V4(b.client_ip)),
        _ => anyhow::bail!("two servers expected"),
    };
    let direct = IpAddr::V4(topology::CLIENT_V4);
    let sinks = [
        Sink::start(&lab.topo.net, APPS[0].0)?,
        Sink::start(&lab.topo.net, APPS[1].0)?,
    ];

    // Baseline: the same applications without the kill switch put their packets on the WAN.
    let baseline_from = lab.capture.len();
    let baseline_start = Instant::now();
    for n in 0..2 {
        start_app(lab, n, Duration::from_millis(600))?
            .process
            .wait_for_line(0, "sent ", EVENT_TIMEOUT)?;
    }
    let baseline_on_wan = apps_on_wan(lab, baseline_from)?.len();
    let baseline_direct: Vec<usize> = sinks
        .iter()
        .map(|s| s.arrivals.count_since(baseline_start, |a| a == direct))
        .collect();

    // A container started without a wg-quick file blocks; it does not run open.
    let without_from = lab.capture.len();
    let mut without = Container::start(lab, &empty)?;
    without
        .entrypoint
        .process
        .wait_for_line(0, "not connecting", EVENT_TIMEOUT)?;
    start_app(lab, 0, Duration::from_millis(600))?
        .process
        .wait_for_line(0, "sent ", EVENT_TIMEOUT)?;
    let without_on_wan = apps_on_wan(lab, without_from)?.len();
    let without_status = without.cli(&["status", "--json"])?.output()?;
    let without_blocked =
        String::from_utf8_lossy(&without_status.stdout).contains(r#""state":"blocked""#);
    let without_healthy = without.healthy(lab)?;
    let without_pid = without.entrypoint.inner_pid()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(without_pid), Signal::SIGTERM)?;
    without.entrypoint.process.wait_for_line(
        0,
        "killswitchd exited with status 0",
        EVENT_TIMEOUT,
    )?;
    drop(without);

    // The container starts; the entrypoint brings the tunnel up with se1, se2.
    let started = Instant::now();
    let mut container = Container::start(lab, &dir)?;
    let up_line = container
        .entrypoint
        .process
        .wait_for_line(0, "killswitch up", EVENT_TIMEOUT)?;
    let mut events = Process::spawn("killswitch events", container.cli(&["events", "--json"])?)?;
    let mut line = wait_event(&mut events, &container, 0, r#""state":"connected""#)?;
    let connected_in = started.elapsed();
    let status = container.cli(&["status", "--json"])?.output()?;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let lockdown = status.contains(r#""lockdown":true"#);

    // Both applications, long-lived: the same processes across the whole protected window.
    let window = lab.begin(&[Kind::Udp4])?;
    let since = Instant::now();
    let mut apps = vec![
        start_app(lab, 0, Duration::from_secs(120))?,
        start_app(lab, 1, Duration::from_secs(120))?,
    ];
    let via_first: Vec<bool> = sinks
        .iter()
        .map(|s| {
            s.arrivals
                .wait_for(since, 20, EVENT_TIMEOUT, |a| a == first)
                .is_ok()
        })
        .collect();
    let healthy_connected = container.healthy(lab)?;
    let (connects_connected, _) = app_connects(lab)?;
    // An application resolves a name: the file it reads is the container's /etc/resolv.conf.
    let asked = Instant::now();
    let lookup = in_own_container(&lab.topo.client, "getent")
        .args(["ahostsv4", "lookup.killswitch.test"])
        .output()?;
    let resolved =
        String::from_utf8_lossy(&lookup.stdout).contains(&topology::TARGET_V4.to_string());
    let by_tunnel = lab.servers.dns_tunnel.count_since(asked, |a| a == first);

    // The tunnel dies: server 1 killed, server 2 stopped (answering nothing).
    let dead_from = lab.capture.len();
    let killed = Instant::now();
    server(lab, 0)?.kill()?;
    server(lab, 1)?.signal(Signal::SIGSTOP)?;
    line = wait_event(&mut events, &container, line, r#""state":"connecting""#)?;
    let detected_in = killed.elapsed();
    let detected_at = Instant::now();
    hold(DEAD_FOR);
    let (connects_dead, refused_in) = app_connects(lab)?;
    let healthy_dead = container.healthy(lab)?;
    let resumed_at = Instant::now();
    server(lab, 1)?.signal(Signal::SIGCONT)?;
    let dead_on_wan = apps_on_wan(lab, dead_from)?;
    // From the moment the daemon called the tunnel lost until server 2 resumed.
    let arrived_dead: usize = sinks
        .iter()
        .map(|s| {
            s.arrivals.count_since(detected_at, |_| true)
                - s.arrivals.count_since(resumed_at, |_| true)
        })
        .sum();

    // Server 2 is back: the same processes' traffic arrives through it.
    wait_event(&mut events, &container, line, r#""state":"connected""#)?;
    let back_in = resumed_at.elapsed();
    let via_second: Vec<bool> = sinks
        .iter()
        .map(|s| {
            s.arrivals
                .wait_for(resumed_at, 20, EVENT_TIMEOUT, |a| a == second)
                .is_ok()
        })
        .collect();
    let apps_alive = apps
        .iter_mut()
        .map(|a| a.process.try_wait().map(|s| s.is_none()))
        .collect::<Result<Vec<bool>>>()?;

    // `docker stop`: SIGTERM to the entrypoint (PID 1), which forwards it to the daemon.
    let table_before_stop = nft_table(&lab.topo.client)?;
    let entrypoint_pid = container.entrypoint.inner_pid()?;
    let stop_from = lab.capture.len();
    let asked = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(entrypoint_pid), Signal::SIGTERM)?;
    let exit = container
        .entrypoint
        .process
        .wait_for_line(up_line, "killswitchd exited with status", EVENT_TIMEOUT)
        .map(|_| ());
    let stop_status = {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(status) = container.entrypoint.process.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            hold(Duration::from_millis(10));
        }
    };
    let stopped_in = asked.elapsed();
    let table_after_stop = nft_table(&lab.topo.client)?;
    let stopped_at = Instant::now();
    hold(Duration::from_secs(1));
    let after_stop_on_wan = apps_on_wan(lab, stop_from)?;
    let arrived_after_stop: usize = sinks
        .iter()
        .map(|s| s.arrivals.count_since(stopped_at, |_| true))
        .sum();
    drop(apps);
    let mut outcome = Outcome::new(lab.end(window)?);
    let direct_after: usize = sinks
        .iter()
        .map(|s| s.arrivals.count_since(started, |a| a == direct))
        .sum();

    outcome.check(
        no_table_before && baseline_on_wan > 0 && baseline_direct.iter().all(|n| *n > 0),
        format!(
            "baseline, no kill switch: the capture sees the applications on the WAN ({baseline_on_wan} frames; {baseline_direct:?} arrived directly)"
        ),
    );
    outcome.check(
        without_on_wan == 0 && without_blocked && !without_healthy,
        format!(
            "no wg-quick file mounted: the container blocks (state blocked: {without_blocked}), unhealthy, 0 application packets on the WAN ({without_on_wan})"
        ),
    );
    outcome.check(
        lockdown,
        "the entrypoint switched lockdown on before `up` (fail closed)",
    );
    outcome.check(
        via_first.iter().all(|v| *v),
        format!("both applications' traffic arrived through the tunnel to se1 ({via_first:?})"),
    );
    outcome.check(
        direct_after == 0,
        format!("none of it arrived outside the tunnel ({direct_after})"),
    );
    outcome.check(
        healthy_connected && connects_connected,
        format!(
            "connected: the health check passes ({healthy_connected}), an application's TCP connection succeeds ({connects_connected})"
        ),
    );
    outcome.check(
        resolved && by_tunnel > 0,
        format!(
            "an application's name lookup was answered by the tunnel's resolver ({by_tunnel} queries there)"
        ),
    );
    outcome.check(
        dead_on_wan.is_empty() && arrived_dead == 0,
        format!(
            "tunnel dead: 0 application packets on the WAN ({} seen: {:?}), none arrived",
            dead_on_wan.len(),
            dead_on_wan.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        !connects_dead && refused_in < Duration::from_secs(1) && !healthy_dead,
        format!(
            "tunnel dead: an application's connection fails at once ({} ms), the health check fails ({})",
            refused_in.as_millis(),
            !healthy_dead
        ),
    );
    outcome.check(
        via_second.iter().all(|v| *v) && apps_alive.iter().all(|a| *a),
        format!(
            "server 2 back: the same application processes' traffic arrives through it ({via_second:?}, alive {apps_alive:?})"
        ),
    );
    let clean = stop_status.is_some_and(|s| s.success());
    outcome.check(
        exit.is_ok() && clean && stopped_in < Duration::from_secs(2),
        format!(
            "SIGTERM to the entrypoint: the daemon and the entrypoint exit 0 in {} ms ({stop_status:?})",
            stopped_in.as_millis()
        ),
    );
    outcome.check(
        table_before_stop.is_some() && table_after_stop.is_some() && after_stop_on_wan.is_empty() && arrived_after_stop == 0,
        format!(
            "after the stop the rules stay and the applications reach nothing ({} on the WAN, {arrived_after_stop} arrived)",
            after_stop_on_wan.len()
        ),
    );
    outcome.note(format!(
        "connected {} ms after the container started; the dead tunnel noticed after {} ms; back {} ms after server 2 resumed",
        connected_in.as_millis(),
        detected_in.as_millis(),
        back_in.as_millis()
    ));
    Ok(outcome)
}
