//! The kernel objects of one `killswitch exec` namespace: the network namespace (pinned by a bind
//! mount under the daemon's state directory), the veth pair joining it to the daemon's namespace,
//! their addresses and routes, the per-interface forwarding switch, and the resolv.conf the
//! program sees. And their removal.
//!
//! Only dedicated threads ever enter the new namespace (`unshare`/`setns` of a thread, never of
//! the runtime's threads), and they end when their work is done: everything else of the daemon
//! stays in its own namespace.
//!
//! Forwarding is switched on per interface (`net/ipv4/conf/ksxN/forwarding`) and on the tunnel
//! (for its replies), never globally: IPv4 decides whether to forward a packet by the forwarding
//! switch of the interface it arrived on, so nothing else of the machine starts being routed.

use ipnet::{IpNet, Ipv4Net};
use killswitch_route::Rtnl;
use killswitch_types::InterfaceName;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The namespace side of the veth pair, as the program sees it.
pub const INSIDE_INTERFACE: &str = "eth0";

/// Where one scope's files live under the daemon's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The bind mount that keeps the namespace alive (`exec/ns-<id>`).
    pub pin: PathBuf,
    /// The resolv.conf bind-mounted over the program's /etc/resolv.conf (`exec/resolv-<id>.conf`).
    pub resolv: PathBuf,
}

impl Files {
    /// Scope `id`'s files under `dir` (`<state>/exec`).
    pub fn new(dir: &Path, id: u32) -> Self {
        Files {
            pin: dir.join(format!("ns-{id}")),
            resolv: dir.join(format!("resolv-{id}.conf")),
        }
    }
}

/// Creates the namespace, pins it at `files.pin`, joins it to this one by `veth` (`ksxN`) with
/// `subnet`'s first address here and its second inside (with the default route through the
/// first), and switches forwarding on for `veth`. Returns the namespace (an open handle).
pub fn create(
    files: &Files,
    veth: &InterfaceName,
    subnet: Ipv4Net,
    resolvers: &[IpAddr],
) -> Result<OwnedFd, String> {
    write_resolv_conf(&files.resolv, resolvers)?;
    let namespace = new_pinned_namespace(&files.pin)?;
    let host = super::registry::host_address(subnet);
    let inside = super::registry::namespace_address(subnet);
    create_veth(veth, &namespace)?;
    let veth_index =
        index(veth.as_str()).ok_or_else(|| format!("{veth} vanished after creation"))?;
    let mut rtnl = Rtnl::open().map_err(|e| format!("rtnetlink: {e}"))?;
    // No IPv6 on our side either: nothing to answer the namespace's router solicitations.
    write_ipv6_sysctl(&format!("net/ipv6/conf/{veth}/disable_ipv6"))?;
    add_address(
        &mut rtnl,
        veth_index,
        IpNet::V4(Ipv4Net::new(host, subnet.prefix_len()).map_err(|e| e.to_string())?),
    )?;
    set_up(&mut rtnl, veth_index, &veth.to_string())?;
    write_sysctl(&format!("net/ipv4/conf/{veth}/forwarding"), "1")?;
    let prefix = subnet.prefix_len();
    in_namespace(&namespace, move || {
        // Inside: no IPv6 at all (no address, no route: applications fall back to IPv4, and the
        // firewall refuses any IPv6 packet from here anyway).
        write_ipv6_sysctl("net/ipv6/conf/all/disable_ipv6")?;
        write_ipv6_sysctl("net/ipv6/conf/default/disable_ipv6")?;
        let mut rtnl = Rtnl::open().map_err(|e| format!("rtnetlink in the namespace: {e}"))?;
        let lo = index("lo").ok_or("the namespace has no loopback")?;
        set_up(&mut rtnl, lo, "lo")?;
        let eth = index(INSIDE_INTERFACE).ok_or("the namespace's veth is missing")?;
        add_address(
            &mut rtnl,
            eth,
            IpNet::V4(Ipv4Net::new(inside, prefix).map_err(|e| e.to_string())?),
        )?;
        set_up(&mut rtnl, eth, INSIDE_INTERFACE)?;
        add_default_route(&mut rtnl, eth, host)
    })?;
    Ok(namespace)
}

/// Removes what [`create`] made; each step whatever the others did (a half-made scope, or one a
/// crash left). Deleting our side of the pair deletes the other; unmounting the pin lets the
/// namespace go once no process is in it.
pub fn remove(files: &Files, veth: &InterfaceName) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(index) = index(veth.as_str()) {
        let mut link = LinkMessage::default();
        link.header.index = index;
        if let Err(e) = Rtnl::open().and_then(|mut rtnl| {
            rtnl.change(
                RouteNetlinkMessage::DelLink(link),
                0,
                "delete the exec veth",
            )
        }) {
            problems.push(format!("deleting {veth}: {e}"));
        }
    }
    if files.pin.exists() {
        if let Err(e) = nix::mount::umount2(&files.pin, nix::mount::MntFlags::MNT_DETACH)
            && e != nix::errno::Errno::EINVAL
        {
            problems.push(format!("unmounting {}: {e}", files.pin.display()));
        }
        if let Err(e) = std::fs::remove_file(&files.pin) {
            problems.push(format!("removing {}: {e}", files.pin.display()));
        }
    }
    let _ = std::fs::remove_file(&files.resolv);
    problems
}

/// Writes (in place: the program's bind mount follows the same file) a resolv.conf naming
/// `resolvers` (the tunnel's IPv4 ones). None known: no `nameserver` line, so look-ups fail at
/// once rather than reaching a resolver outside the tunnel (which the firewall refuses anyway).
pub fn write_resolv_conf(path: &Path, resolvers: &[IpAddr]) -> Result<(), String> {
    use std::io::Write;
    let mut text = String::from(
        "# Written by killswitchd for a `killswitch exec` namespace: the tunnel's resolvers.\n",
    );
    let v4: Vec<&IpAddr> = resolvers.iter().filter(|r| r.is_ipv4()).collect();
    if v4.is_empty() {
        text.push_str("# No tunnel is connected: no resolver.\n");
    }
    for resolver in v4 {
        text.push_str(&format!("nameserver {resolver}\n"));
    }
    if std::fs::read(path).is_ok_and(|now| now == text.as_bytes()) {
        return Ok(());
    }
    // Written over what is there, then cut to length: a program reading meanwhile sees the old
    // text or the new, or a mix for an instant, never an empty file.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.set_len(text.len() as u64))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    // Readable by the program's user: the file itself is not secret.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Switches IPv4 forwarding on for `interface` (the tunnel, for the replies to the namespaces).
pub fn forward_on(interface: &InterfaceName) -> Result<(), String> {
    write_sysctl(&format!("net/ipv4/conf/{interface}/forwarding"), "1")
}

/// Whether the namespace pinned at `pin` is the one `/proc/<pid>/ns/net` is.
pub fn same_namespace(pin: &Path, pid: u32) -> bool {
    use std::os::linux::fs::MetadataExt;
    match (
        std::fs::metadata(pin),
        std::fs::metadata(format!("/proc/{pid}/ns/net")),
    ) {
        (Ok(a), Ok(b)) => a.st_ino() == b.st_ino() && a.st_dev() == b.st_dev(),
        _ => false,
    }
}

/// Opens the namespace pinned at `pin`.
pub fn open_pin(pin: &Path) -> Result<OwnedFd, String> {
    std::fs::File::open(pin)
        .map(OwnedFd::from)
        .map_err(|e| format!("opening {}: {e}", pin.display()))
}

/// A new network namespace, bind-mounted at `pin` (an empty file created for it), as `ip netns
/// add` does, and opened. A thread of its own enters it and ends; the pin keeps it.
fn new_pinned_namespace(pin: &Path) -> Result<OwnedFd, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(pin)
        .map_err(|e| format!("creating {}: {e}", pin.display()))?;
    let target = pin.to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("creating a network namespace: {e}"))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("pinning the namespace at {}: {e}", target.display()))
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_owned())??;
    open_pin(pin)
}

/// Runs `work` on a new thread inside `namespace`; the thread ends with it.
fn in_namespace<T: Send + 'static>(
    namespace: &OwnedFd,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let fd = namespace
        .try_clone()
        .map_err(|e| format!("duplicating the namespace handle: {e}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering the exec namespace: {e}"))?;
        work()
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_owned())?
}

/// `ip link add VETH type veth peer name eth0 netns NAMESPACE`.
fn create_veth(veth: &InterfaceName, namespace: &OwnedFd) -> Result<(), String> {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(INSIDE_INTERFACE.to_owned()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(namespace.as_raw_fd()));
    let mut link = LinkMessage::default();
    link.attributes
        .push(LinkAttribute::IfName(veth.to_string()));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    Rtnl::open()
        .and_then(|mut rtnl| {
            rtnl.change(
                RouteNetlinkMessage::NewLink(link),
                NLM_F_CREATE | NLM_F_EXCL,
                "create the exec veth pair",
            )
        })
        .map_err(|e| format!("creating {veth}: {e}"))
}

fn add_address(rtnl: &mut Rtnl, index: u32, net: IpNet) -> Result<(), String> {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
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
    .map_err(|e| e.to_string())
}

fn set_up(rtnl: &mut Rtnl, index: u32, name: &str) -> Result<(), String> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    rtnl.change(
        RouteNetlinkMessage::SetLink(link),
        0,
        &format!("bring {name} up"),
    )
    .map_err(|e| e.to_string())
}

fn add_default_route(rtnl: &mut Rtnl, index: u32, gateway: Ipv4Addr) -> Result<(), String> {
    let mut message = RouteMessage::default();
    message.header = RouteHeader {
        address_family: AddressFamily::Inet,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    message
        .attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    message.attributes.push(RouteAttribute::Oif(index));
    rtnl.change(
        RouteNetlinkMessage::NewRoute(message),
        NLM_F_CREATE | NLM_F_EXCL,
        "add the namespace's default route",
    )
    .map_err(|e| e.to_string())
}

/// Switches IPv6 off (`<key>` = 1); a kernel without IPv6 has no such key, and nothing to switch.
fn write_ipv6_sysctl(key: &str) -> Result<(), String> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    write_sysctl(key, "1")
}

/// Writes `/proc/sys/<key>` in the calling thread's network namespace.
fn write_sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| format!("writing {path}: {e}"))
}

fn index(name: &str) -> Option<u32> {
    killswitch_tunnel::netdev::index(name)
}
