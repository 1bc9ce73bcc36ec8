//! Setting up the tunnel interface over rtnetlink: addresses, MTU, up; and creating or deleting a
//! kernel WireGuard link.

use crate::TunnelError;
use ipnet::IpNet;
use killswitch_route::{RouteError, Rtnl};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// The index of interface `name`, if it exists.
pub fn index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The kind of interface `index` as rtnetlink names it (`wireguard`, `tun`, `veth`, `bridge`,
/// ...), or `None` for a device without one (a physical NIC, loopback). `Err` if it does not exist.
pub fn kind(index: u32) -> Result<Option<String>, TunnelError> {
    identity(index).map(|identity| identity.kind)
}

/// What kind of device an interface is, as far as telling a tunnel from something else goes.
/// Serializable: the daemon keeps what the guarded tunnel was across restarts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkIdentity {
    /// The rtnetlink kind (`wireguard`, `tun`, `veth`, ...), `None` for a physical device.
    pub kind: Option<String>,
    /// The link-layer type (ARPHRD_*: 1 Ethernet, 65534 none, 512 PPP, ...).
    pub link_type: u16,
}

/// The identity of interface `index`. `Err` if it does not exist.
pub fn identity(index: u32) -> Result<LinkIdentity, TunnelError> {
    let link = link(index)?;
    let kind = link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind.to_string()),
            _ => None,
        }),
        _ => None,
    });
    Ok(LinkIdentity {
        kind,
        link_type: u16::from(link.header.link_layer_type),
    })
}

/// Whether a device's interface is still there as the device made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Its name still leads to its index, and it is up.
    Up,
    /// It is there, but someone set it down.
    Down,
    /// Its name leads nowhere (deleted, or renamed away).
    Gone,
    /// Its name leads to another interface: someone else's has taken the name.
    Replaced,
}

/// Whether interface `name` is still interface `index`, and up. A device whose name now leads
/// elsewhere must not be believed to carry the tunnel: the rules let everything out by that name.
pub fn presence(name: &str, index: u32) -> Presence {
    match self::index(name) {
        Some(found) if found == index => {}
        Some(_) => return Presence::Replaced,
        None => return Presence::Gone,
    }
    match link(index) {
        Ok(link) if link.header.flags.contains(LinkFlags::Up) => Presence::Up,
        Ok(_) => Presence::Down,
        Err(_) => Presence::Gone,
    }
}

fn link(index: u32) -> Result<LinkMessage, TunnelError> {
    let mut request = LinkMessage::default();
    request.header.index = index;
    let answer = rtnl()?
        .dump(RouteNetlinkMessage::GetLink(request))
        .map_err(TunnelError::Netlink)?;
    answer
        .into_iter()
        .find_map(|message| match message {
            RouteNetlinkMessage::NewLink(link) if link.header.index == index => Some(link),
            _ => None,
        })
        .ok_or_else(|| TunnelError::Gone(format!("interface {index}")))
}

fn rtnl() -> Result<Rtnl, TunnelError> {
    Rtnl::open().map_err(TunnelError::Netlink)
}

/// Gives `index` exactly `addresses` (and its MTU), and brings it up. Addresses of an earlier
/// configuration go: a second server's tunnel has another address, and a stale one would be
/// chosen as the source of new connections, which the new server drops. The kernel's own IPv6
/// link-local address stays.
pub fn configure(index: u32, addresses: &[IpNet], mtu: Option<u16>) -> Result<(), TunnelError> {
    let mut rtnl = rtnl()?;
    for stale in current_addresses(&mut rtnl, index)?
        .into_iter()
        .filter(|net| !addresses.contains(net) && !is_link_local(net.addr()))
    {
        rtnl.change(
            RouteNetlinkMessage::DelAddress(address_message(index, stale)),
            0,
            &format!("remove address {stale}"),
        )
        .map_err(TunnelError::Netlink)?;
    }
    for net in addresses {
        rtnl.change(
            RouteNetlinkMessage::NewAddress(address_message(index, *net)),
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

fn address_message(index: u32, net: IpNet) -> AddressMessage {
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
    message
}

/// The addresses on interface `index`.
fn current_addresses(rtnl: &mut Rtnl, index: u32) -> Result<Vec<IpNet>, TunnelError> {
    let mut request = AddressMessage::default();
    request.header.index = index;
    let answer = rtnl
        .dump(RouteNetlinkMessage::GetAddress(request))
        .map_err(TunnelError::Netlink)?;
    Ok(answer
        .into_iter()
        .filter_map(|message| match message {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => address_net(&a),
            _ => None,
        })
        .collect())
}

/// The address an address message is about, with its prefix. Local is the interface's own address
/// (Address is the peer's on point-to-point links), so it wins when both are there.
fn address_net(a: &AddressMessage) -> Option<IpNet> {
    let local = a.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = local.or_else(|| {
        a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    IpNet::new(address, a.header.prefix_len).ok()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
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

/// One interface as the kernel describes it: what the daemon needs to tell this machine's own
/// container and VM bridges from the links to the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its identity (rtnetlink kind and link type).
    pub identity: LinkIdentity,
    /// The bridge (or bond ...) it is a port of.
    pub master: Option<u32>,
    /// The device it is stacked on (a VLAN's or macvlan's parent; a veth's peer when that is in
    /// this namespace too), when it is in this namespace.
    pub lower: Option<u32>,
    /// Whether a default route or a route through a gateway leaves by it (in any table but the
    /// kill switch's own and `local`): the mark of a link that leads beyond this machine.
    pub gateway_routes: bool,
    /// Its addresses, with their prefixes (`172.17.0.1/16`).
    pub addresses: Vec<IpNet>,
}

/// Every interface of this network namespace, with its addresses (two dumps). Whether routes
/// through a gateway leave by each is [`mark_gateway_routes`]'s to say: a dump of every route is
/// worth it only when something is to be judged by it.
pub fn all_links() -> Result<Vec<LinkFacts>, TunnelError> {
    let mut rtnl = rtnl()?;
    let links = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(TunnelError::Netlink)?;
    let mut all: Vec<LinkFacts> = links
        .into_iter()
        .filter_map(|message| match message {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        })
        .map(|link| {
            let mut facts = LinkFacts {
                index: link.header.index,
                name: String::new(),
                identity: LinkIdentity {
                    kind: None,
                    link_type: u16::from(link.header.link_layer_type),
                },
                master: None,
                lower: None,
                gateway_routes: false,
                addresses: Vec::new(),
            };
            // IFLA_LINK is an index in *another* namespace when IFLA_LINK_NETNSID comes with it
            // (a veth whose peer is in a container): it names nothing here, and an interface of
            // this namespace with the same index must not be taken for it.
            let elsewhere = link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
            for attribute in &link.attributes {
                match attribute {
                    LinkAttribute::IfName(name) => facts.name.clone_from(name),
                    LinkAttribute::Controller(master) => facts.master = Some(*master),
                    LinkAttribute::Link(lower) if *lower != 0 && !elsewhere => {
                        facts.lower = Some(*lower);
                    }
                    LinkAttribute::LinkInfo(infos) => {
                        facts.identity.kind = infos.iter().find_map(|info| match info {
                            LinkInfo::Kind(kind) => Some(kind.to_string()),
                            _ => None,
                        });
                    }
                    _ => {}
                }
            }
            facts
        })
        .collect();
    let addresses = rtnl
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(TunnelError::Netlink)?;
    for message in addresses {
        let RouteNetlinkMessage::NewAddress(a) = message else {
            continue;
        };
        let Some(net) = address_net(&a) else {
            continue;
        };
        if let Some(link) = all.iter_mut().find(|l| l.index == a.header.index) {
            link.addresses.push(net);
        }
    }
    Ok(all)
}

/// Sets [`LinkFacts::gateway_routes`] for `links` from a dump of every route (`own_table`, the
/// kill switch's routing table, not counted).
pub fn mark_gateway_routes(links: &mut [LinkFacts], own_table: u32) -> Result<(), TunnelError> {
    let mut rtnl = rtnl()?;
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let routes = rtnl
            .dump(RouteNetlinkMessage::GetRoute(request))
            .map_err(TunnelError::Netlink)?;
        for message in routes {
            let RouteNetlinkMessage::NewRoute(route) = message else {
                continue;
            };
            for index in gateway_route_devices(&route, own_table) {
                if let Some(link) = links.iter_mut().find(|l| l.index == index) {
                    link.gateway_routes = true;
                }
            }
        }
    }
    Ok(())
}

/// The devices a route leads beyond this machine by: those of a default route or of a route
/// through a gateway, in any table but `local` and the kill switch's own (`own_table`).
fn gateway_route_devices(route: &RouteMessage, own_table: u32) -> Vec<u32> {
    const LOCAL_TABLE: u32 = 255;
    let table = killswitch_route::route_table(route);
    if table == LOCAL_TABLE || table == own_table || route.header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let default = route.header.destination_prefix_length == 0;
    let mut devices = Vec::new();
    let mut gateway = false;
    let mut oif = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => gateway = true,
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::MultiPath(hops) => {
                devices.extend(hops.iter().map(|hop| hop.interface_index));
            }
            _ => {}
        }
    }
    if let Some(index) = oif.filter(|_| gateway || default) {
        devices.push(index);
    }
    devices
}
