//! Setting up the tunnel interface over rtnetlink: addresses, MTU, up; and creating or deleting a
//! kernel WireGuard link.

use crate::TunnelError;
use ipnet::IpNet;
use killswitch_route::{RouteError, Rtnl};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// The index of interface `name`, if it exists.
pub fn index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

fn rtnl() -> Result<Rtnl, TunnelError> {
    Rtnl::open().map_err(TunnelError::Netlink)
}

/// Gives `index` its addresses and MTU, and brings it up.
pub fn configure(index: u32, addresses: &[IpNet], mtu: Option<u16>) -> Result<(), TunnelError> {
    let mut rtnl = rtnl()?;
    for net in addresses {
        let mut message = AddressMessage::default();
        message.header.family = match net.addr() {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        message.header.prefix_len = net.prefix_len();
        message.header.index = index;
        message.attributes.push(AddressAttribute::Local(net.addr()));
        message
            .attributes
            .push(AddressAttribute::Address(net.addr()));
        rtnl.change(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {net}"),
        )
        .map_err(TunnelError::Netlink)?;
    }
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes
        .push(LinkAttribute::Mtu(u32::from(mtu.unwrap_or(DEFAULT_MTU))));
    rtnl.change(RouteNetlinkMessage::SetLink(link), 0, "bring the tunnel up")
        .map_err(TunnelError::Netlink)
}

/// wg-quick's default MTU for WireGuard over IPv4 and IPv6 paths: 1500 minus 80 bytes of overhead.
pub const DEFAULT_MTU: u16 = 1420;

/// Creates a kernel WireGuard interface. `Ok(false)` when this kernel has no WireGuard.
pub fn create_wireguard(name: &str) -> Result<bool, TunnelError> {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Wireguard,
        )]));
    match rtnl()?.change(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
        "create a WireGuard interface",
    ) {
        Ok(()) => Ok(true),
        Err(RouteError::Refused { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(TunnelError::Netlink(e)),
    }
}

/// Deletes interface `index`.
pub fn delete(index: u32) -> Result<(), TunnelError> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    rtnl()?
        .change(
            RouteNetlinkMessage::DelLink(link),
            0,
            "delete the tunnel interface",
        )
        .map_err(TunnelError::Netlink)
}
