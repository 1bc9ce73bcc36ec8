//! Watching network interfaces and the routing layer: is the guarded tunnel there, up, and which
//! addresses does it carry? Is the routing layer still what the daemon put there?
//!
//! Observation is level-triggered: any rtnetlink notification about links or addresses makes the
//! daemon look at the interface afresh ([`observe`]) rather than track deltas, so a missed or
//! reordered notification cannot leave it with a stale picture. Route and rule notifications that
//! touch the routing layer (a rule at its priorities, a route in its table) made by anyone but the
//! daemon itself make it reconcile, which compares the layer with the kernel and repairs it; the
//! daemon's own changes are recognised by the netlink port that made them
//! ([`killswitch_route::notifications_concern_us`]), so that applying the layer never wakes the
//! daemon up again. Other programs' routes and rules elsewhere are not its business.

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
    /// What kind of device it is (`None` if that could not be read).
    pub identity: Option<LinkIdentity>,
}

pub use killswitch_tunnel::netdev::LinkIdentity;

/// Kinds of interface that never are a VPN tunnel: they carry the local network (or nothing).
const NOT_TUNNELS: [&str; 17] = [
    "veth", "bridge", "bond", "team", "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "vxlan",
    "geneve", "dummy", "ifb", "vrf", "hsr", "netkit", "nlmon",
];

/// ARPHRD_ETHER and ARPHRD_IEEE80211: an Ethernet or Wi-Fi device.
const ETHERNET: [u16; 2] = [1, 801];

/// Whether an interface of identity `seen`, named like the guarded tunnel, may be trusted as that
/// tunnel; `pinned` is what the tunnel was when first seen carrying traffic. `Err` says why not.
///
/// The tunnel is recognised by name, and a name is only a name: after the tunnel dies, root (or a
/// confused script) may rename another interface to it — a veth to the LAN router, the NIC — and
/// traffic that the rules let into "the tunnel" would leave in clear. So an interface of a kind
/// that is never a tunnel (a veth, a bridge, a physical Ethernet or Wi-Fi device) is not trusted,
/// nor one of another kind than the tunnel had when first seen (a VPN client that starts again
/// makes a new interface of the same kind; its index changes, so that is not compared).
pub fn judge_identity(
    name: &InterfaceName,
    seen: &LinkIdentity,
    pinned: Option<&LinkIdentity>,
) -> Result<(), String> {
    let what = describe(seen);
    let never = match &seen.kind {
        Some(kind) => NOT_TUNNELS.contains(&kind.as_str()),
        None => ETHERNET.contains(&seen.link_type),
    };
    if never {
        return Err(format!(
            "{name} is {what}, which is never a VPN tunnel: not trusted as the guarded tunnel"
        ));
    }
    if let Some(pinned) = pinned
        && pinned != seen
    {
        return Err(format!(
            "{name} is now {what}, but the guarded tunnel was {}: not trusted (if this is the \
             tunnel, guard it again)",
            describe(pinned)
        ));
    }
    Ok(())
}

/// A device kind in words. The kernel calls both TUN and TAP devices `tun`; their link type tells
/// them apart (a TAP device is an Ethernet one).
fn describe(identity: &LinkIdentity) -> String {
    match identity.kind.as_deref() {
        Some("tun") if ETHERNET.contains(&identity.link_type) => "a TAP interface".to_owned(),
        Some("tun") => "a TUN interface".to_owned(),
        Some(kind) => format!("a {kind} interface"),
        None if ETHERNET.contains(&identity.link_type) => "a physical network device".to_owned(),
        None => format!("a device of link type {}", identity.link_type),
    }
}

impl Observed {
    /// Whether the tunnel can carry traffic: up, with an address.
    pub fn carries_traffic(&self) -> bool {
        self.up && !self.addresses.is_empty()
    }
}

/// What kind of device interface `name` is, if it exists (the kernel's answer to
/// [`crate::core::Identify`]).
pub fn identify(name: &InterfaceName) -> Option<LinkIdentity> {
    let index = killswitch_tunnel::netdev::index(name.as_str())?;
    killswitch_tunnel::netdev::identity(index).ok()
}

/// Looks at interface `name` now; `None` when it does not exist.
pub fn observe(name: &InterfaceName) -> Option<Observed> {
    let index = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
    let mut observed = Observed {
        up: false,
        addresses: Vec::new(),
        identity: killswitch_tunnel::netdev::identity(index).ok(),
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

/// The bit of rtnetlink group `group` (an `RTNLGRP_*` number) in a bind address's group mask.
const fn group_bit(group: libc::c_uint) -> u32 {
    1 << (group - 1)
}

/// rtnetlink multicast groups: links, IPv4 and IPv6 addresses, routes and rules.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32
    | group_bit(libc::RTNLGRP_IPV4_RULE)
    | group_bit(libc::RTNLGRP_IPV6_RULE);

/// A subscription to link, address, route and rule changes in the daemon's network namespace.
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

    /// Waits for the next batch of notifications that concern the daemon (see the module doc) and
    /// discards their content. An overrun (ENOBUFS) is also "something changed".
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
                    let length = usize::try_from(n).unwrap_or(0).min(buffer.len());
                    got_any |= killswitch_route::notifications_concern_us(&buffer[..length]);
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

    fn identity(kind: Option<&str>, link_type: u16) -> LinkIdentity {
        LinkIdentity {
            kind: kind.map(str::to_owned),
            link_type,
        }
    }

    #[test]
    fn only_something_that_can_be_a_tunnel_and_stays_one_is_trusted() {
        let wg0: InterfaceName = "wg0".parse().expect("name");
        let wireguard = identity(Some("wireguard"), 65534);
        let tun = identity(Some("tun"), 65534);
        assert_eq!(judge_identity(&wg0, &wireguard, None), Ok(()));
        assert_eq!(judge_identity(&wg0, &wireguard, Some(&wireguard)), Ok(()));
        assert_eq!(
            judge_identity(&wg0, &tun, None),
            Ok(()),
            "OpenVPN, wireguard-go"
        );
        let tap = identity(Some("tun"), 1);
        assert_eq!(
            judge_identity(&wg0, &tap, None),
            Ok(()),
            "OpenVPN's TAP mode"
        );
        let veth = judge_identity(&wg0, &identity(Some("veth"), 1), None);
        assert!(
            veth.as_ref()
                .is_err_and(|e| e.contains("wg0 is a veth interface")),
            "{veth:?}"
        );
        let nic = judge_identity(&wg0, &identity(None, 1), None);
        assert!(
            nic.as_ref().is_err_and(|e| e.contains("physical")),
            "{nic:?}"
        );
        let swapped = judge_identity(&wg0, &tun, Some(&wireguard));
        assert!(
            swapped
                .as_ref()
                .is_err_and(|e| e.contains("was a wireguard interface")),
            "{swapped:?}"
        );
        assert_eq!(
            judge_identity(&wg0, &identity(None, 512), None),
            Ok(()),
            "a PPP link can be a VPN"
        );
        // The kernel calls both `tun`: the message must not say "now a tun, but was a tun".
        let tap_for_tun = judge_identity(&wg0, &tap, Some(&tun));
        assert!(
            tap_for_tun
                .as_ref()
                .is_err_and(|e| e
                    .contains("now a TAP interface, but the guarded tunnel was a TUN interface")),
            "{tap_for_tun:?}"
        );
    }

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
