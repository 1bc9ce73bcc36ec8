//! Watching network interfaces: is the guarded tunnel there, up, and which addresses does it carry?
//!
//! Observation is level-triggered: any rtnetlink notification about links or addresses makes the
//! daemon look at the interface afresh ([`observe`]) rather than track deltas, so a missed or
//! reordered notification cannot leave it with a stale picture.

use killswitch_types::InterfaceName;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket,
};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// What the daemon sees of the tunnel interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Whether it is administratively up.
    pub up: bool,
    /// Its addresses (link-local ones included).
    pub addresses: Vec<IpAddr>,
}

impl Observed {
    /// Whether the tunnel can carry traffic: up, with an address.
    pub fn carries_traffic(&self) -> bool {
        self.up && !self.addresses.is_empty()
    }
}

/// Looks at interface `name` now; `None` when it does not exist.
pub fn observe(name: &InterfaceName) -> Option<Observed> {
    nix::net::if_::if_nametoindex(name.as_str()).ok()?;
    let mut observed = Observed {
        up: false,
        addresses: Vec::new(),
    };
    for entry in getifaddrs()
        .ok()?
        .filter(|e| e.interface_name == name.as_str())
    {
        observed.up |= entry.flags.contains(InterfaceFlags::IFF_UP);
        let address = entry.address.as_ref();
        if let Some(v4) = address.and_then(|a| a.as_sockaddr_in()) {
            observed.addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.and_then(|a| a.as_sockaddr_in6()) {
            observed.addresses.push(IpAddr::V6(v6.ip()));
        }
    }
    observed.addresses.sort();
    observed.addresses.dedup();
    Some(observed)
}

/// rtnetlink multicast groups: links, IPv4 and IPv6 addresses.
const GROUPS: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;

/// A subscription to link and address changes in the daemon's network namespace.
#[derive(Debug)]
pub struct LinkEvents {
    fd: AsyncFd<OwnedFd>,
}

impl LinkEvents {
    /// Subscribes. Must be called inside a tokio runtime.
    pub fn subscribe() -> std::io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open for as long as it exists.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(LinkEvents { fd })
    }

    /// Waits for the next batch of notifications and discards their content (see the module doc).
    /// An overrun (ENOBUFS) is also "something changed".
    pub async fn changed(&self) -> std::io::Result<()> {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got_any = false;
            loop {
                // SAFETY: recv into a live buffer of the given length.
                let n = unsafe {
                    libc::recv(
                        guard.get_inner().as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    got_any = true;
                    continue;
                }
                let error = std::io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::ENOBUFS) => got_any = true,
                    Some(libc::EINTR) => continue,
                    _ if n == 0 => break,
                    _ => return Err(error),
                }
            }
            guard.clear_ready();
            if got_any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_observed_and_nonsense_is_absent() {
        let lo = observe(&InterfaceName::loopback()).expect("lo exists");
        // In a fresh namespace lo may be down; either way it exists.
        assert!(lo.addresses.iter().all(|a| a.is_loopback()));
        assert_eq!(
            observe(&InterfaceName::new("nosuchif0").expect("valid name")),
            None
        );
    }
}
