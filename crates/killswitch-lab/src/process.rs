//! Processes the lab starts: their output captured line by line, awaitable, and ended by PID on
//! drop (SIGKILL, then reaped), so that a failing test leaves nothing running.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Every live child's pid, so that an emergency exit (Ctrl-C) can end them.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every child the lab started and has not reaped yet (for an emergency exit).
/// Waits until they are gone (at most 2 s), so that the lab never exits before its children.
pub fn kill_all() {
    let pids: Vec<Pid> = match LIVE.lock() {
        Ok(pids) => pids.iter().map(|pid| Pid::from_raw(*pid as i32)).collect(),
        Err(_) => return,
    };
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for pid in pids {
        // Reaped here: the threads that own them are about to end with the process.
        while std::time::Instant::now() < deadline {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                _ => break,
            }
        }
    }
}

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    added: Condvar,
    /// Output streams not yet at their end: a process that has exited may still have lines in
    /// flight until both are.
    open: std::sync::atomic::AtomicUsize,
}

/// A child process with its output collected.
pub struct Process {
    name: String,
    child: Child,
    output: Arc<Lines>,
    exited: Option<ExitStatus>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Process({} pid {})", self.name, self.child.id())
    }
}

impl Process {
    /// Spawns `command`, collecting stdout and stderr (interleaved, by line).
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        let shown = format!("{command:?}");
        // The lab blocks SIGINT/SIGTERM in its own threads (a dedicated thread takes them with
        // sigwait); a blocked mask survives exec, and the children must see their signals.
        // SAFETY: pthread_sigmask is async-signal-safe; only the child's mask changes.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                nix::sys::signal::SigSet::empty()
                    .thread_set_mask()
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        let output = Arc::new(Lines::default());
        let streams: Vec<Box<dyn Read + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        output
            .open
            .store(streams.len(), std::sync::atomic::Ordering::SeqCst);
        for stream in streams {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    if let Ok(mut lines) = output.lines.lock() {
                        lines.push(line);
                    }
                    output.added.notify_all();
                }
                // Under the lock, so that a waiter cannot miss it between its check and its wait.
                let _lines = output.lines.lock();
                output
                    .open
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                output.added.notify_all();
            });
        }
        if let Ok(mut live) = LIVE.lock() {
            live.push(child.id());
        }
        Ok(Process {
            name: name.to_owned(),
            child,
            output,
            exited: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output
            .lines
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default()
    }

    /// Waits until a line containing `needle` appears (counting lines from `from`), and returns
    /// the index after it. Fails if the process exits first or the time runs out.
    pub fn wait_for_line(&mut self, from: usize, needle: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self
                    .output
                    .lines
                    .lock()
                    .map_err(|_| anyhow::anyhow!("output lock poisoned"))?;
                if let Some(i) = lines.iter().skip(from).position(|l| l.contains(needle)) {
                    return Ok(from + i + 1);
                }
                let now = Instant::now();
                if now >= deadline {
                    bail!(
                        "{}: no line with {needle:?} within {timeout:?}; output:\n{}",
                        self.name,
                        lines.join("\n")
                    );
                }
                // Wake at least every 50 ms to notice the process exiting.
                let wait = (deadline - now).min(Duration::from_millis(50));
                drop(self.output.added.wait_timeout(lines, wait));
            }
            if let Some(status) = self.try_wait()?
                && self.output.open.load(std::sync::atomic::Ordering::SeqCst) == 0
            {
                // Exited, and everything it printed is read: the line is not coming.
                let lines = self.output();
                if let Some(i) = lines.lines().skip(from).position(|l| l.contains(needle)) {
                    return Ok(from + i + 1);
                }
                bail!(
                    "{} exited ({status}) before printing {needle:?}; output:\n{lines}",
                    self.name
                );
            }
        }
    }

    /// How many lines were printed so far.
    pub fn line_count(&self) -> usize {
        self.output.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().context("waiting for a child")?;
            if self.exited.is_some() {
                self.forget();
            }
        }
        Ok(self.exited)
    }

    fn forget(&self) {
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|pid| *pid != self.child.id());
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; SIGKILL after that.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let _ = self.signal(Signal::SIGKILL);
        let status = self.child.wait().context("reaping a killed child")?;
        self.exited = Some(status);
        self.forget();
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
