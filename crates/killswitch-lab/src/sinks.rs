//! The far end of the lab's traffic, in the net namespace: a UDP sink and a TCP acceptor on the
//! target host, and DNS resolvers (inside the tunnel, on the LAN, on "the internet").
//!
//! Each records what arrived, when, and from which source address: from the client's tunnel
//! address means "through the tunnel"; from its physical address means "directly" (a leak, unless
//! the user chose to run without protection).

use crate::netns::Netns;
use anyhow::Result;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The UDP port of the target's sink.
pub const UDP_PORT: u16 = 9000;
/// The TCP port of the target's acceptor.
pub const TCP_PORT: u16 = 9001;
const POLL: Duration = Duration::from_millis(50);

/// One arrival at a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrived.
    pub at: Instant,
    /// Who sent it.
    pub from: IpAddr,
}

/// Arrivals, shared between a server thread and the lab.
#[derive(Debug, Default, Clone)]
pub struct Arrivals(Arc<(Mutex<Vec<Arrival>>, std::sync::Condvar)>);

impl Arrivals {
    /// Records an arrival from `from` now.
    pub fn push(&self, from: IpAddr) {
        if let Ok(mut v) = self.0.0.lock() {
            v.push(Arrival {
                at: Instant::now(),
                from,
            });
        }
        self.0.1.notify_all();
    }

    /// Everything that arrived so far.
    pub fn all(&self) -> Vec<Arrival> {
        self.0.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits until at least `count` arrivals since `since` match `from`; fails after `timeout`.
    pub fn wait_for(
        &self,
        since: Instant,
        count: usize,
        timeout: Duration,
        from: impl Fn(IpAddr) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut v = self
            .0
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("arrivals lock poisoned"))?;
        loop {
            let seen = v.iter().filter(|a| a.at >= since && from(a.from)).count();
            if seen >= count {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                anyhow::bail!("only {seen} of {count} expected arrivals within {timeout:?}");
            }
            v = self
                .0
                .1
                .wait_timeout(v, deadline - now)
                .map_err(|_| anyhow::anyhow!("arrivals lock poisoned"))?
                .0;
        }
    }

    /// How many arrived since `since`, from a source matching `from`.
    pub fn count_since(&self, since: Instant, from: impl Fn(IpAddr) -> bool) -> usize {
        self.all()
            .iter()
            .filter(|a| a.at >= since && from(a.from))
            .count()
    }
}

/// A set of server threads that stop on drop.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The target's UDP sink (IPv4 and IPv6).
    pub udp: Arrivals,
    /// The target's TCP acceptor (IPv4 and IPv6).
    pub tcp: Arrivals,
    /// Queries at the resolver inside the tunnel.
    pub dns_tunnel: Arrivals,
    /// Queries at the LAN's resolver.
    pub dns_lan: Arrivals,
    /// Queries at the public resolver.
    pub dns_public: Arrivals,
}

impl Servers {
    /// Starts the target's sinks on `target_v4`/`target_v6` and resolvers on the three addresses,
    /// all in `ns`. The tunnel resolver's address need not exist yet: it binds when it can.
    pub fn start(
        ns: &Netns,
        targets: &[IpAddr],
        tunnel_dns: IpAddr,
        lan_dns: IpAddr,
        public_dns: IpAddr,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Servers {
            stop: stop.clone(),
            threads: Vec::new(),
            udp: Arrivals::default(),
            tcp: Arrivals::default(),
            dns_tunnel: Arrivals::default(),
            dns_lan: Arrivals::default(),
            dns_public: Arrivals::default(),
        };
        for target in targets {
            let (udp, tcp) = (UdpSocket::bind, TcpListener::bind);
            let udp_socket = ns.run({
                let addr = SocketAddr::new(*target, UDP_PORT);
                move || udp(addr)
            })??;
            let tcp_listener = ns.run({
                let addr = SocketAddr::new(*target, TCP_PORT);
                move || tcp(addr)
            })??;
            servers
                .threads
                .push(spawn_udp(udp_socket, servers.udp.clone(), stop.clone())?);
            servers
                .threads
                .push(spawn_tcp(tcp_listener, servers.tcp.clone(), stop.clone())?);
        }
        for (addr, arrivals) in [
            (tunnel_dns, servers.dns_tunnel.clone()),
            (lan_dns, servers.dns_lan.clone()),
            (public_dns, servers.dns_public.clone()),
        ] {
            servers.add_resolver(ns, addr, arrivals)?;
        }
        Ok(servers)
    }
}

impl Servers {
    /// Starts one more resolver at `addr` in `ns`, recording queries in `arrivals` (an `up`
    /// server's resolver: the tunnel's, for the server the client uses).
    pub fn add_resolver(&mut self, ns: &Netns, addr: IpAddr, arrivals: Arrivals) -> Result<()> {
        let stop = self.stop.clone();
        // A resolver that fails shows up as zero answers in the scenario that needs it.
        let thread = ns.spawn("dns", move || {
            serve_dns(SocketAddr::new(addr, 53), &arrivals, &stop)
        })?;
        self.threads
            .push(std::thread::spawn(move || drop(thread.join())));
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn_udp(
    socket: UdpSocket,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    socket.set_read_timeout(Some(POLL))?;
    Ok(std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buffer) {
                arrivals.push(from.ip());
            }
        }
    }))
}

fn spawn_tcp(
    listener: TcpListener,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    arrivals.push(from.ip());
                    // Read and drop whatever comes, so the client sees a clean close.
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.read(&mut [0u8; 64]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }))
}

/// A resolver that answers every A query with the target's address. It waits for its address to
/// exist (the tunnel's resolver address appears only when the tunnel is configured).
fn serve_dns(addr: SocketAddr, arrivals: &Arrivals, stop: &AtomicBool) -> Result<()> {
    let socket = loop {
        match UdpSocket::bind(addr) {
            Ok(socket) => break socket,
            Err(_) if !stop.load(Ordering::Relaxed) => std::thread::sleep(POLL),
            Err(e) => return Err(e.into()),
        }
    };
    socket.set_read_timeout(Some(POLL))?;
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buffer) {
            arrivals.push(from.ip());
            if let Some(answer) = dns_answer(&buffer[..n], crate::topology::TARGET_V4.octets()) {
                let _ = socket.send_to(&answer, from);
            }
        }
    }
    Ok(())
}

/// A DNS query for `name` (type A), with message id `id`.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

/// The answer to a one-question query: the question echoed and one A record, or `None` if the
/// query cannot be parsed.
pub fn dns_answer(query: &[u8], address: [u8; 4]) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let mut end = 12;
    loop {
        let len = usize::from(*query.get(end)?);
        end += 1 + len;
        if len == 0 {
            break;
        }
    }
    let question = query.get(12..end + 4)?;
    let mut answer = Vec::with_capacity(query.len() + 16);
    answer.extend_from_slice(&header[..2]);
    answer.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    answer.extend_from_slice(question);
    answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    answer.extend_from_slice(&address);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_round_trip() {
        let query = dns_query(0xbeef, "leak.test.example");
        let answer = dns_answer(&query, [203, 0, 113, 10]).expect("answer");
        assert_eq!(&answer[..2], &[0xbe, 0xef]);
        assert_eq!(&answer[answer.len() - 4..], &[203, 0, 113, 10]);
        assert_eq!(u16::from_be_bytes([answer[6], answer[7]]), 1, "one answer");
    }

    #[test]
    fn garbage_queries_get_no_answer() {
        assert_eq!(dns_answer(&[1, 2, 3], [0; 4]), None);
        assert_eq!(dns_answer(&[0u8; 12], [0; 4]), None);
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 7 + 5) as u8).collect();
            let _ = dns_answer(&junk, [0; 4]);
        }
    }
}
