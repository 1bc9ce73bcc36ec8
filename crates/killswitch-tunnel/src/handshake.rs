//! The last handshake of a WireGuard interface found by name (one the daemon guards, which
//! another program runs): over its UAPI socket when a userspace implementation serves one, else
//! over generic netlink from the kernel's WireGuard. A tunnel the daemon runs itself is not read
//! here: its manager already reads the statistics (see the daemon's `handshake` module).

use crate::TunnelError;
use crate::uapi::{self, PeerStats};
use std::time::SystemTime;

/// Every peer's statistics of interface `interface`, or `Ok(None)` when it is no WireGuard
/// device (a tun device of OpenVPN, say). Call it only for an interface of this network
/// namespace. The sockets' directory is shared by every namespace, so a socket of that name that
/// is served from another namespace belongs to another device: it is not asked.
pub fn peers(interface: &str) -> Result<Option<Vec<PeerStats>>, TunnelError> {
    let socket = uapi::socket_path(interface);
    if socket.exists() && uapi::serves_this_namespace(&socket).map_err(TunnelError::Uapi)? {
        return uapi::stats(&socket).map(Some).map_err(TunnelError::Uapi);
    }
    crate::kernel::peers(interface)
}

/// The newest handshake across `peers`; none while no peer has completed one.
pub fn newest(peers: &[PeerStats]) -> Option<SystemTime> {
    peers.iter().filter_map(|p| p.last_handshake).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PublicKey;
    use std::time::Duration;

    #[test]
    fn the_newest_handshake_across_peers() {
        let key = PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").expect("valid");
        let at = |s: Option<u64>| PeerStats {
            public_key: key,
            last_handshake: s.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            rx_bytes: 0,
            tx_bytes: 0,
        };
        assert_eq!(
            newest(&[at(Some(100)), at(None), at(Some(300)), at(Some(200))]),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(300))
        );
        assert_eq!(newest(&[at(None), at(None)]), None, "no handshake yet");
        assert_eq!(newest(&[]), None, "no peers");
    }
}
