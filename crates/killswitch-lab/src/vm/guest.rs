//! One QEMU guest and the three ways the lab talks to it: the serial console (ttyS0, read only, for
//! the kernel's and systemd's messages and the boot timings), the agent (a shell on ttyS1 that runs
//! one command line at a time and ends each with a marker carrying its exit status), and QMP (the
//! machine itself: link carrier, suspend and wake-up, stop and continue, quit).
//!
//! Every wait is bounded and fails with what was expected and what was seen last.

use crate::netns::Netns;
use crate::process::Process;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One line read from a channel, with the host time it arrived.
#[derive(Debug, Clone)]
pub struct Line {
    /// When the reader saw the end of the line.
    pub at: Instant,
    /// The text, without the line end.
    pub text: String,
}

#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<Line>, bool)>,
    arrived: Condvar,
}

/// A unix socket that QEMU serves (a serial port's chardev), read line by line by a thread that
/// timestamps each line and copies it to a log file.
pub struct Channel {
    name: &'static str,
    writer: UnixStream,
    lines: Arc<Lines>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({}, {} lines)", self.name, self.len())
    }
}

impl Channel {
    fn connect(name: &'static str, path: &Path, log: &Path) -> Result<Self> {
        let stream = connect_when_there(path)?;
        let reader = stream.try_clone()?;
        let lines = Arc::new(Lines::default());
        let mut log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let shared = lines.clone();
        std::thread::Builder::new()
            .name(format!("vm-{name}"))
            .spawn(move || {
                let mut reader = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let _ = log.write_all(&buf);
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    if let Ok(mut lines) = shared.lines.lock() {
                        lines.0.push(Line {
                            at: Instant::now(),
                            text,
                        });
                    }
                    shared.arrived.notify_all();
                }
                if let Ok(mut lines) = shared.lines.lock() {
                    lines.1 = true;
                }
                shared.arrived.notify_all();
            })
            .context("spawning a channel reader")?;
        Ok(Channel {
            name,
            writer: stream,
            lines,
        })
    }

    /// How many lines arrived so far (a position to wait from).
    pub fn len(&self) -> usize {
        self.lines.lines.lock().map(|l| l.0.len()).unwrap_or(0)
    }

    /// Whether nothing arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the lines from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Line> {
        self.lines
            .lines
            .lock()
            .map(|l| l.0.iter().skip(from).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits for a line at index `from` or later that satisfies `pred`; returns its index.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, Line)> {
        let deadline = Instant::now() + timeout;
        let mut guard = self
            .lines
            .lines
            .lock()
            .map_err(|_| anyhow::anyhow!("{} lock poisoned", self.name))?;
        loop {
            if let Some(i) = guard.0.iter().skip(from).position(|l| pred(&l.text)) {
                return Ok((from + i, guard.0[from + i].clone()));
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                let last: Vec<&str> = guard
                    .0
                    .iter()
                    .rev()
                    .take(5)
                    .rev()
                    .map(|l| l.text.as_str())
                    .collect();
                bail!(
                    "{}: no {what} within {timeout:?}{}; last lines: {last:?}",
                    self.name,
                    if guard.1 { " (the channel closed)" } else { "" }
                );
            }
            guard = self
                .lines
                .arrived
                .wait_timeout(guard, deadline - now)
                .map_err(|_| anyhow::anyhow!("{} lock poisoned", self.name))?
                .0;
        }
    }

    fn send(&self, text: &str) -> Result<()> {
        (&self.writer)
            .write_all(text.as_bytes())
            .with_context(|| format!("writing to the {}", self.name))
    }
}

/// QEMU creates its sockets a moment after it starts; this is the one wait on a file appearing,
/// bounded, since QEMU offers nothing to wait on before its sockets exist.
fn connect_when_there(path: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {}", path.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a command run by the agent returned.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Its exit status.
    pub status: i32,
    /// What it printed (stdout and stderr).
    pub output: String,
}

/// QMP, the QEMU machine protocol: one JSON object per line.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// A line begun before a read timed out (see [`Qmp::wait_event`]).
    partial: String,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qmp")
    }
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self> {
        let stream = connect_when_there(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut qmp = Qmp {
            stream,
            reader,
            partial: String::new(),
        };
        qmp.read()?; // the greeting
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        // What a timed-out read had begun stays in `partial`: QEMU's next bytes complete it.
        if self
            .reader
            .read_line(&mut self.partial)
            .context("reading QMP")?
            == 0
        {
            bail!("QMP closed");
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }

    /// Waits for QEMU's event `name` (e.g. SUSPEND); false if it did not come within `timeout`.
    /// Only for events after the last command: [`Qmp::execute`] skips the events it reads.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(false);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.read() {
                Ok(message) if message["event"] == name => break Ok(true),
                Ok(_) => {}
                Err(e)
                    if e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                        matches!(
                            io.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        )
                    }) =>
                {
                    break Ok(false);
                }
                Err(e) => break Err(e),
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        result
    }

    /// Runs a QMP command and returns its `return` value; events on the way are skipped.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut request = serde_json::json!({ "execute": command });
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        writeln!(self.stream, "{request}").context("writing QMP")?;
        loop {
            let reply = self.read()?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                bail!("QMP {command}: {error}");
            }
        }
    }

    /// QEMU's run state: "running", "suspended", "paused", ...
    pub fn status(&mut self) -> Result<String> {
        let status = self.execute("query-status", Value::Null)?;
        Ok(status["status"].as_str().unwrap_or("unknown").to_owned())
    }
}

/// How a guest is started.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The cached image: `base.raw`, `vmlinuz`, `initrd.img`.
    pub image: PathBuf,
    /// Where the sockets and logs go.
    pub run_dir: PathBuf,
    /// Shared with the guest as /lab (9p).
    pub share: PathBuf,
    /// The tap in the lab namespace.
    pub tap: String,
    /// The guest NIC's MAC address.
    pub mac: [u8; 6],
    /// Extra kernel command-line words (e.g. which network manager to mask).
    pub append: String,
}

/// A running guest.
#[derive(Debug)]
pub struct Guest {
    process: Process,
    /// The serial console.
    pub console: Channel,
    /// The command shell on the second serial port.
    pub agent: Channel,
    /// The machine protocol.
    pub qmp: Qmp,
    /// When QEMU was spawned.
    pub spawned: Instant,
    next_id: u64,
}

/// The agent's line when it starts, once per boot.
const READY: &str = "@@KS-READY ";
/// The agent's line after each command.
const END: &str = "@@KS-END ";
/// The guest's line when it is back from sleep (a systemd sleep hook).
pub const RESUMED: &str = "@@KS-RESUMED";

impl Guest {
    /// Starts QEMU in `ns` (whose tap it attaches to), with the disk as a throw-away snapshot of
    /// the cached image: writes stay in QEMU's temporary file for this process's life, across the
    /// guest's reboots, and the cached image is never changed.
    pub fn start(ns: &Netns, spec: &GuestSpec) -> Result<Self> {
        std::fs::create_dir_all(&spec.run_dir)?;
        let path = |name: &str| spec.run_dir.join(name);
        for name in ["console.sock", "agent.sock", "qmp.sock"] {
            let _ = std::fs::remove_file(path(name));
        }
        let mac = spec
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let image = |name: &str| spec.image.join(name).display().to_string();
        let mut command = ns.command("qemu-system-x86_64");
        command.args([
            "-accel",
            "tcg,thread=multi",
            "-machine",
            "q35",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "1024",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-rtc",
            "base=utc",
            // S3 (suspend to RAM) is off by default on q35; the suspend test needs it.
            "-global",
            "ICH9-LPC.disable_s3=0",
            "-kernel",
            &image("vmlinuz"),
            "-initrd",
            &image("initrd.img"),
            "-append",
            &format!(
                "root=/dev/vda rw console=ttyS0 net.ifnames=0 mem_sleep_default=deep panic=5 {}",
                spec.append
            ),
            "-snapshot",
            "-drive",
            &format!(
                "file={},if=virtio,format=raw,cache=unsafe",
                image("base.raw")
            ),
            "-netdev",
            // No virtio-net header on the frames, so that the filter-dump pcap is plain Ethernet.
            &format!(
                "tap,id=lan,ifname={},script=no,downscript=no,vnet_hdr=off",
                spec.tap
            ),
            "-device",
            &format!("virtio-net-pci,netdev=lan,mac={mac}"),
            "-object",
            &format!(
                "filter-dump,id=dump,netdev=lan,file={}",
                path("lan.pcap").display()
            ),
            "-virtfs",
            &format!(
                "local,path={},mount_tag=lab,security_model=none,id=lab",
                spec.share.display()
            ),
            "-chardev",
            &format!(
                "socket,id=console,path={},server=on,wait=off",
                path("console.sock").display()
            ),
            "-serial",
            "chardev:console",
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                path("agent.sock").display()
            ),
            "-serial",
            "chardev:agent",
            "-qmp",
            &format!("unix:{},server=on,wait=off", path("qmp.sock").display()),
        ]);
        let spawned = Instant::now();
        let process = Process::spawn("qemu", command)?;
        let console = Channel::connect("console", &path("console.sock"), &path("console.log"))?;
        let agent = Channel::connect("agent", &path("agent.sock"), &path("agent.log"))?;
        let qmp = Qmp::connect(&path("qmp.sock"))?;
        Ok(Guest {
            process,
            console,
            agent,
            qmp,
            spawned,
            next_id: 0,
        })
    }

    /// Waits for the agent of a boot after line `from` to say it is ready; returns the boot id.
    pub fn wait_ready(&self, from: usize, timeout: Duration) -> Result<(String, Instant)> {
        let (_, line) =
            self.agent
                .wait_for(from, timeout, "agent start (a finished boot)", |l| {
                    l.starts_with(READY)
                })?;
        let boot = line
            .text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("boot="))
            .unwrap_or("")
            .to_owned();
        Ok((boot, line.at))
    }

    /// Runs one shell command line in the guest (stdin from /dev/null) and returns its status
    /// and output.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<Ran> {
        self.next_id += 1;
        let id = self.next_id;
        let from = self.agent.len();
        // The guest ends a command that outlives its time, so that the agent stays usable and
        // the host hears why (status 124) rather than nothing.
        let limit = timeout.as_secs().saturating_sub(5).max(1);
        // No colours or pagers: what comes back goes into a report.
        self.agent.send(&format!(
            "TERM=dumb DPKG_COLORS=never SYSTEMD_COLORS=0 SYSTEMD_PAGER= timeout -k 3 {limit} bash -c {} </dev/null 2>&1; echo \"{END}{id} $?\"\n",
            shell_quote(command)
        ))?;
        let marker = format!("{END}{id} ");
        // A line lost on the serial port leaves the shell a syntax error, on which it exits and
        // the agent starts again: that is an answer too, and a failure.
        let (end, line) = self
            .agent
            .wait_for(from, timeout, &format!("end of `{command}`"), |l| {
                l.contains(&marker) || l.starts_with(READY)
            })
            .with_context(|| format!("guest command `{command}`"))?;
        if line.text.starts_with(READY) {
            bail!(
                "guest command `{command}`: the agent started again before it ended (the guest rebooted, or the command line was garbled on the serial port)"
            );
        }
        let status = line
            .text
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        let mut output: Vec<String> = self.agent.since(from)[..end - from]
            .iter()
            .map(|l| l.text.clone())
            .collect();
        // The marker's line may carry output that did not end with a newline.
        if let Some(before) = line.text.split(&marker).next().filter(|b| !b.is_empty()) {
            output.push(before.to_owned());
        }
        Ok(Ran {
            status,
            output: output.join("\n"),
        })
    }

    /// Runs a command that must succeed; returns its output.
    pub fn ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        let ran = self.run(command, timeout)?;
        if ran.status == 124 {
            bail!(
                "guest command `{command}` did not end within {timeout:?}: {}",
                ran.output
            );
        }
        if ran.status != 0 {
            bail!(
                "guest command `{command}` exited {}: {}",
                ran.status,
                ran.output
            );
        }
        Ok(ran.output)
    }

    /// Sends a command line without waiting for it (a reboot, a suspend): the agent may never
    /// answer it.
    pub fn send(&mut self, command: &str) -> Result<()> {
        self.agent
            .send(&format!("{{ {command}\n}} </dev/null 2>&1 &\n"))
    }

    /// Ends QEMU: `quit` over QMP, then a kill if it does not go.
    pub fn quit(&mut self) -> Result<()> {
        let _ = self.qmp.execute("quit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.process.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process.kill()?;
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.process.kill();
    }
}
