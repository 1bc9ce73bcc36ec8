//! A packet capture on one interface: an AF_PACKET socket, read by a thread, no external tool.
//!
//! Plain (non-ring) AF_PACKET delivery hands every frame to the socket as the device transmits or
//! receives it, so nothing waits for a ring block to retire. To judge "nothing else was sent" the
//! lab sends a sentinel after the traffic under test and waits for it to appear ([`Capture::wait_for`]):
//! frames on one interface reach the socket in order, so every earlier frame is in by then. Kernel
//! drops (a socket buffer overrun) are counted; a capture that dropped frames cannot prove anything.

use crate::netns::Netns;
use crate::packet::{Frame, parse_ethernet};
use anyhow::{Context, Result, bail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which way a captured frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the captured host.
    Outgoing,
    /// Received by it.
    Incoming,
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Captured {
    /// When the capture thread read it.
    pub at: Instant,
    /// Which way it went.
    pub direction: Direction,
    /// What it carried.
    pub frame: Frame,
}

#[derive(Default)]
struct Shared {
    frames: Mutex<Vec<Captured>>,
    arrived: Condvar,
}

/// A running capture; stops on drop.
pub struct Capture {
    fd: Arc<OwnedFd>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    interface: String,
    drops_total: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capture({})", self.interface)
    }
}

/// Poll interval of the reader thread for the stop flag; frames are read as they come regardless.
const STOP_POLL: Duration = Duration::from_millis(50);

impl Capture {
    /// Starts capturing every frame on `interface` in `ns`, the captured host's own interface:
    /// what it transmits is outgoing.
    pub fn start(ns: &Netns, interface: &str) -> Result<Self> {
        Self::start_with(ns, interface, None)
    }

    /// Starts capturing on `interface` in `ns`, the far side of another machine's link (a virtual
    /// machine's tap): the captured host is the one with MAC address `sender`, and its frames
    /// arrive here as *received*, so the direction comes from the source address instead.
    pub fn start_for_peer(ns: &Netns, interface: &str, sender: [u8; 6]) -> Result<Self> {
        Self::start_with(ns, interface, Some(sender))
    }

    fn start_with(ns: &Netns, interface: &str, sender: Option<[u8; 6]>) -> Result<Self> {
        let iface = interface.to_owned();
        let fd = ns.run(move || open_packet_socket(&iface))??;
        let fd = Arc::new(fd);
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (fd, shared, stop) = (fd.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("capture-{interface}"))
                .spawn(move || read_frames(&fd, &shared, &stop, sender))
                .context("spawning the capture thread")?
        };
        Ok(Capture {
            fd,
            shared,
            stop,
            reader: Some(reader),
            interface: interface.to_owned(),
            drops_total: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A copy of every frame captured so far.
    pub fn frames(&self) -> Vec<Captured> {
        self.shared
            .frames
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// How many frames were captured so far.
    pub fn len(&self) -> usize {
        self.shared.frames.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Whether nothing was captured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a frame at index `from` or later satisfies `pred`, and returns its index.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Captured) -> bool,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut frames = self
            .shared
            .frames
            .lock()
            .map_err(|_| anyhow::anyhow!("capture lock poisoned"))?;
        loop {
            if let Some(i) = frames.iter().skip(from).position(&pred) {
                return Ok(from + i);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no matching frame on {} within {timeout:?} ({} frames captured)",
                    self.interface,
                    frames.len()
                );
            }
            frames = self
                .shared
                .arrived
                .wait_timeout(frames, deadline - now)
                .map_err(|_| anyhow::anyhow!("capture lock poisoned"))?
                .0;
        }
    }

    /// Frames the kernel dropped because the capture could not keep up. Must be 0 for a verdict.
    pub fn kernel_drops(&self) -> Result<u32> {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: PACKET_STATISTICS writes a tpacket_stats into the buffer of the given length.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("reading capture statistics");
        }
        // The kernel resets the counters on every read; keep our own running total.
        self.drops_total
            .fetch_add(stats.tp_drops as usize, Ordering::Relaxed);
        Ok(self.drops_total.load(Ordering::Relaxed) as u32)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn open_packet_socket(interface: &str) -> Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked before being wrapped.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error())
            .context("opening an AF_PACKET socket (needs root)");
    }
    // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let index = nix::net::if_::if_nametoindex(interface)
        .with_context(|| format!("no interface {interface}"))?;
    // A large buffer so that a burst of thousands of frames per second is not dropped.
    let rcvbuf: libc::c_int = 32 * 1024 * 1024;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: STOP_POLL.as_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with pointers to live values of the sizes given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const libc::c_int).cast(),
            4,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    // SAFETY: a zeroed sockaddr_ll is valid; we fill family, protocol and interface.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    // SAFETY: bind with a sockaddr_ll of the right size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("binding the capture to {interface}"));
    }
    Ok(fd)
}

fn read_frames(fd: &OwnedFd, shared: &Shared, stop: &AtomicBool, sender: Option<[u8; 6]>) {
    let mut buffer = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: a zeroed sockaddr_ll is valid for recvfrom to fill.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the buffer and address outlive the call and their lengths are passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            continue; // timeout (to look at the stop flag) or EINTR
        }
        let frame = &buffer[..n as usize];
        let outgoing = match sender {
            Some(mac) => frame.get(6..12) == Some(&mac[..]),
            None => from.sll_pkttype == libc::PACKET_OUTGOING,
        };
        let direction = if outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        let captured = Captured {
            at: Instant::now(),
            direction,
            frame: parse_ethernet(frame),
        };
        if let Ok(mut frames) = shared.frames.lock() {
            frames.push(captured);
        }
        shared.arrived.notify_all();
    }
}
