//! What the firewall refuses, for `status` and `killswitch blocked`: the counts per reason, read
//! from the table's counter objects when a client asks, and the last refused packets, which a
//! thread of their own reads from nfnetlink_log and keeps in a small ring.
//!
//! None of this goes through the core: a refused packet is no change of state, and the core
//! stays deterministic and free of I/O. The kernel already limits the log to a few packets a
//! second ([`killswitch_policy::LOG_RATE_PER_SECOND`]), so the reader never floods anything; the
//! ring keeps the last [`RECENT_BLOCKED`], oldest dropped first.

use killswitch_nft::nflog::NflogSocket;
use killswitch_types::blocked::RECENT_BLOCKED;
use killswitch_types::{BlockedPacket, BlockedStatus};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// The refused packets seen so far (the last [`RECENT_BLOCKED`]).
#[derive(Debug, Default)]
pub struct Blocked {
    recent: Mutex<VecDeque<BlockedPacket>>,
}

impl Blocked {
    /// Starts the log reader in the daemon's network namespace. Without it (another program
    /// listens on the group, or the kernel has no nfnetlink_log) the counts still work and the
    /// list of refused packets stays empty; the log says why.
    pub fn start() -> Arc<Self> {
        let blocked = Arc::new(Blocked::default());
        match NflogSocket::bind() {
            Ok(socket) => {
                let ring = Arc::clone(&blocked);
                let spawned = std::thread::Builder::new()
                    .name("nflog".to_owned())
                    .spawn(move || ring.read(socket));
                if let Err(e) = spawned {
                    tracing::warn!("cannot start the reader of refused packets: {e}");
                }
            }
            Err(e) => tracing::warn!(
                "cannot listen to nfnetlink_log group {}: {e}; status will show counts but no refused destinations",
                killswitch_policy::NFLOG_GROUP
            ),
        }
        blocked
    }

    fn read(&self, mut socket: NflogSocket) {
        loop {
            match socket.receive() {
                Ok(packets) => self.record(packets),
                // The kernel dropped messages this reader was too slow for: a sample is all
                // the ring ever promised.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("reading refused packets stopped: {e}");
                    return;
                }
            }
        }
    }

    /// Adds refused packets to the ring, dropping the oldest beyond [`RECENT_BLOCKED`].
    pub fn record(&self, packets: Vec<BlockedPacket>) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        for packet in packets {
            if recent.len() == RECENT_BLOCKED {
                recent.pop_front();
            }
            recent.push_back(packet);
        }
    }

    /// The counts (one dump of the table's counters; none when the table is absent or cannot be
    /// read, which the log says) and the recent refused packets, oldest first.
    pub fn snapshot(&self) -> BlockedStatus {
        let counts = match killswitch_nft::counters() {
            Ok(counters) => counters
                .into_iter()
                .map(|(reason, count)| (reason.name().to_owned(), count))
                .collect(),
            Err(e) => {
                tracing::warn!("reading the firewall's counters failed: {e}");
                Default::default()
            }
        };
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        BlockedStatus { counts, recent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(port: u16) -> BlockedPacket {
        BlockedPacket {
            at_unix: 0,
            reason: "non-tunnel".to_owned(),
            family: "ipv4".to_owned(),
            protocol: "udp".to_owned(),
            destination: "192.0.2.1".to_owned(),
            port: Some(port),
            interface: None,
            uid: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_in_order() {
        let blocked = Blocked::default();
        blocked.record((0..40).map(packet).collect());
        let recent = blocked.recent.lock().expect("not poisoned");
        assert_eq!(recent.len(), RECENT_BLOCKED);
        let ports: Vec<u16> = recent.iter().filter_map(|p| p.port).collect();
        let newest: Vec<u16> = (40 - RECENT_BLOCKED as u16..40).collect();
        assert_eq!(ports, newest);
    }
}
