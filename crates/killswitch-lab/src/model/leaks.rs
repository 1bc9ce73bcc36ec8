//! Offering traffic after a step and judging the physical link's capture against the model's
//! floor: anything that left outside the tunnel while the floor demanded protection is a leak.
//!
//! The model's [`Model::floor`] says which protection may never be missing; here it becomes the
//! lab oracle's [`Facts`]: which endpoints the tunnel's own packets may go to, and whether the LAN
//! is open. Frames sent while a command was being carried out are judged against the weaker of the
//! floors before and after it (the user may lower the protection, and until the command returns
//! the old rules may still be in force); frames after it against the new floor alone.
//!
//! A router LAN's traffic is judged apart, in every state: its client's probes carry
//! [`LAN_MARK`] in their payload (the DNS query in the name it asks), and any frame on the
//! physical link that shows it left outside the tunnel (through the tunnel it is encrypted).
//!
//! [`Model::floor`]: killswitch_model::Model::floor

use crate::capture::Capture;
use crate::lab::send_sentinel;
use crate::netns::Netns;
use crate::oracle::{Facts, Judgement, judge};
use crate::packet::Frame;
use crate::sinks::{self, Arrivals};
use crate::traffic;
use anyhow::{Context, Result};
use killswitch_model::{Model, Protection, Topology};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a probe's TCP connection attempt may take. Only its first SYN matters (the capture
/// judges it), so the attempt is cut short rather than waited out under a blocking policy.
const TCP_ATTEMPT: Duration = Duration::from_millis(30);
/// How long the capture may take to show the sentinel.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long traffic through a tunnel the daemon calls connected may take to arrive. A handshake
/// after a restart is one round trip; wireguard-go retries one lost initiation after 5 s.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(12);
/// How often the liveness probe is sent again while waiting.
const LIVENESS_RESEND: Duration = Duration::from_millis(300);
const MAX_LEAKS_SHOWN: usize = 5;

static PROBES: AtomicU32 = AtomicU32::new(0);

/// What the router LAN client's probes carry: seen in clear on the physical link, it is a leak
/// whatever the state (the DNS query asks for `lanprobe.killswitch.test`, whose first label is
/// this).
pub const LAN_MARK: &[u8] = b"lanprobe";

/// What may leave the physical link while a floor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// Where the tunnel's own packets may go.
    pub endpoints: Vec<SocketAddr>,
    /// Whether the user allows the LAN.
    pub lan: bool,
}

/// The floor the model demands now (`None`: the user asked for no protection).
pub fn floor(model: &Model, topo: &Topology) -> Option<Floor> {
    let endpoints = match model.floor()? {
        Protection::Hole(allowed) | Protection::Tunnel(allowed) => {
            super::world::endpoints(topo, &allowed)
        }
        Protection::Off | Protection::Open | Protection::Blocked => Vec::new(),
    };
    Some(Floor {
        endpoints,
        lan: model.allow_lan,
    })
}

/// The weaker of two floors: what either allows.
pub fn weaker(a: Option<&Floor>, b: Option<&Floor>) -> Option<Floor> {
    let (a, b) = (a?, b?);
    let mut endpoints = a.endpoints.clone();
    endpoints.extend(b.endpoints.iter().filter(|e| !a.endpoints.contains(e)));
    Some(Floor {
        endpoints,
        lan: a.lan || b.lan,
    })
}

/// Sends what a user's machine sends, from the client namespace: cleartext UDP and TCP to the
/// internet, UDP over IPv6, DNS to a resolver outside the tunnel, and UDP to the LAN. Whether
/// the kernel refuses a send is not the question (the capture answers what left); errors from
/// the sends themselves are ignored.
pub fn offer(client: &Netns, topo: &Topology) -> Result<()> {
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let udp = SocketAddr::new(topo.internet.into(), sinks::UDP_PORT);
    let udp6 = SocketAddr::new(topo.internet_v6.into(), sinks::UDP_PORT);
    let tcp = SocketAddr::new(topo.internet.into(), sinks::TCP_PORT);
    let dns = SocketAddr::new(topo.foreign_resolver.into(), 53);
    // The discard port of a LAN host: only allow-lan may let it out.
    let lan = SocketAddr::new(topo.lan.into(), 9);
    let query = sinks::dns_query(
        u16::try_from(n % 65_536).unwrap_or(0),
        "probe.killswitch.test",
    );
    client.run(|| {
        let _ = traffic::send_udp(udp, b"killswitch-lab model probe", None);
        let _ = traffic::send_udp(udp6, b"killswitch-lab model probe v6", None);
        let _ = traffic::send_udp(dns, &query, None);
        let _ = traffic::send_udp(lan, b"killswitch-lab model probe lan", None);
        let _ = traffic::tcp_connect(tcp, TCP_ATTEMPT);
    })
}

/// Sends what a router LAN's client sends through this machine: UDP and TCP to the internet, and
/// DNS to a resolver outside the tunnel, each carrying [`LAN_MARK`] where the capture can see it.
pub fn offer_from_lan(lan_client: &Netns, topo: &Topology) -> Result<()> {
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let udp = SocketAddr::new(topo.internet.into(), sinks::UDP_PORT);
    let tcp = SocketAddr::new(topo.internet.into(), sinks::TCP_PORT);
    let dns = SocketAddr::new(topo.foreign_resolver.into(), 53);
    let query = sinks::dns_query(
        u16::try_from(n % 65_536).unwrap_or(0),
        "lanprobe.killswitch.test",
    );
    lan_client.run(|| {
        let _ = traffic::send_udp(udp, b"killswitch-lab model lanprobe", None);
        let _ = traffic::send_udp(dns, &query, None);
        let _ = traffic::tcp_connect(tcp, TCP_ATTEMPT);
    })
}

/// Drains the capture up to a sentinel sent now, and judges every outgoing frame from index
/// `from`: before `boundary` against `during`, from it on against `after`. Returns the index to
/// judge from next time, or the leaks found.
pub fn judge_since(
    client: &Netns,
    capture: &Capture,
    from: usize,
    boundary: Instant,
    during: Option<&Floor>,
    after: Option<&Floor>,
    tunnel_addresses: &[IpAddr],
) -> Result<(usize, Vec<String>)> {
    let id = PROBES.fetch_add(1, Ordering::Relaxed);
    let payload = format!("killswitch-lab model sentinel {}-{id}", std::process::id()).into_bytes();
    client.run(|| send_sentinel(&payload))??;
    let sentinel = capture
        .wait_for(
            from,
            DRAIN_TIMEOUT,
            |c| matches!(&c.frame, Frame::Ip(p) if p.payload == payload),
        )
        .context("draining the capture")?;
    let drops = capture.kernel_drops()?;
    anyhow::ensure!(
        drops == 0,
        "the capture dropped {drops} frames: no verdict possible"
    );
    let frames = capture.frames();
    let mut leaks = Vec::new();
    let mut count = 0usize;
    for captured in frames.get(from..sentinel).unwrap_or_default() {
        // The router LAN's probes, in every state. (Its TCP SYN has no payload: the UDP and
        // the DNS query stand for it.)
        if let Frame::Ip(p) = &captured.frame
            && p.payload.windows(LAN_MARK.len()).any(|w| w == LAN_MARK)
        {
            count += 1;
            if leaks.len() < MAX_LEAKS_SHOWN {
                leaks.push(format!(
                    "the router LAN's {} -> {} left by the physical link",
                    p.src, p.dst
                ));
            }
            continue;
        }
        let floor = if captured.at < boundary {
            during
        } else {
            after
        };
        let Some(floor) = floor else { continue };
        let facts = Facts {
            endpoints: &floor.endpoints,
            tunnel_addresses,
            lan_allowed: floor.lan,
        };
        if let Some(Judgement::Leak(what)) = judge(captured, &facts) {
            count += 1;
            if leaks.len() < MAX_LEAKS_SHOWN {
                let when = if captured.at < boundary {
                    "while the step ran"
                } else {
                    "after it"
                };
                leaks.push(format!("{what} ({when})"));
            }
        }
    }
    if count > leaks.len() {
        leaks.push(format!("and {} more", count - leaks.len()));
    }
    // The sentinel itself is judged next time too: harmless, it is DHCP-shaped.
    Ok((sentinel + 1, leaks))
}

/// Sends UDP (with `payload`) from `client` to the internet until one datagram arrives from one
/// of `sources` (a tunnel's client address), or fails after [`LIVENESS_TIMEOUT`].
pub fn wait_for_tunnel_traffic(
    client: &Netns,
    topo: &Topology,
    arrivals: &Arrivals,
    sources: &[IpAddr],
    payload: &[u8],
) -> Result<Duration> {
    let start = Instant::now();
    let target = SocketAddr::new(topo.internet.into(), sinks::UDP_PORT);
    loop {
        let _ = client.run(|| traffic::send_udp(target, payload, None));
        let left = LIVENESS_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            anyhow::bail!(
                "nothing arrived through the tunnel (from {sources:?}) within {LIVENESS_TIMEOUT:?}"
            );
        }
        if arrivals
            .wait_for(start, 1, LIVENESS_RESEND.min(left), |a| {
                sources.contains(&a)
            })
            .is_ok()
        {
            return Ok(start.elapsed());
        }
    }
}
