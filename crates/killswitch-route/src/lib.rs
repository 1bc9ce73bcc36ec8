//! The routing layer's backend: makes the kernel hold a [`RoutingLayer`] (policy rules at the
//! kill switch's priorities, routes in its table) over rtnetlink.
//!
//! Unlike nftables, rules and routes cannot be changed in one transaction, so [`Routing::apply`]
//! orders its steps to fail closed: routes into the table before the rules that send traffic
//! there (an empty table would let lookups fall through to `main`), new rules before stale ones go,
//! the catch-all rule added first and removed last. It compares with what the kernel holds first
//! and changes only the difference, so calling it again (after a link change, or when someone
//! deleted a rule) is cheap and restores what is missing.

use killswitch_policy::IpFamily;
use killswitch_policy::routes::{
    PRIORITIES, ROUTE_TABLE, RoutingLayer, RoutingRule, Selector, TableRoute,
};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{
    RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage, RulePortRange, RuleUidRange,
};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use std::io;
use std::net::IpAddr;

mod rtnl;
pub use rtnl::Rtnl;

/// The lowest preference a route can have: `unreachable` sits behind the tunnel's route.
const LAST_RESORT_METRIC: u32 = u32::MAX;
const RT_TABLE_COMPAT: u8 = 252;

/// Why the routing layer could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket")]
    Socket(#[source] io::Error),
    /// Talking to the kernel failed.
    #[error("rtnetlink i/o failed")]
    Io(#[source] io::Error),
    /// The kernel refused a change.
    #[error("the kernel refused to {what}")]
    Refused {
        /// The change.
        what: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A message from the kernel could not be parsed.
    #[error("unparseable rtnetlink message: {0}")]
    Parse(String),
}

/// What of the routing layer is in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Rules at the kill switch's priorities, as far as they are understood.
    pub rules: Vec<RoutingRule>,
    /// Routes in the kill switch's table.
    pub routes: Vec<InstalledRoute>,
    raw_rules: Vec<RuleMessage>,
    raw_routes: Vec<RouteMessage>,
}

/// A route found in the kill switch's table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstalledRoute {
    /// `unreachable default`.
    Unreachable(IpFamily),
    /// `default dev <index>`.
    Device(IpFamily, u32),
    /// `<address> dev <index>`.
    Host(IpAddr, u32),
    /// Anything else (removed on apply).
    Other,
}

/// The routing layer's connection, in the calling thread's network namespace.
#[derive(Debug)]
pub struct Routing {
    rtnl: Rtnl,
}

impl Routing {
    /// Opens the socket. Changing rules and routes needs CAP_NET_ADMIN.
    pub fn open() -> Result<Self, RouteError> {
        Ok(Routing {
            rtnl: Rtnl::open()?,
        })
    }

    /// Makes the kernel hold `layer` (or, for `None`, none of the kill switch's rules and routes).
    pub fn apply(&mut self, layer: Option<&RoutingLayer>) -> Result<(), RouteError> {
        let installed = self.installed()?;
        let Some(layer) = layer else {
            // Exemptions first, the catch-all last, then the table: never an exemption without
            // the catch-all behind it.
            let mut rules: Vec<&RuleMessage> = installed.raw_rules.iter().collect();
            rules.sort_by_key(|r| rule_priority(r));
            for rule in rules {
                self.delete_rule(rule)?;
            }
            for route in &installed.raw_routes {
                self.delete_route(route)?;
            }
            return Ok(());
        };

        // 1. Routes: the table must hold its last resort before any rule sends traffic there.
        let wanted_routes = self.resolve_routes(&layer.routes);
        for route in &wanted_routes {
            if !installed.routes.contains(route) {
                self.add_route(route)?;
            }
        }
        // 2. Rules: add what is missing, catch-all first.
        let mut missing: Vec<&RoutingRule> = layer
            .rules
            .iter()
            .filter(|r| !installed.rules.contains(r))
            .collect();
        missing.sort_by_key(|r| std::cmp::Reverse(r.priority));
        for rule in missing {
            self.add_rule(rule)?;
        }
        // 3. Remove what is stale: exemptions before the catch-all.
        let mut stale: Vec<(usize, &RoutingRule)> = installed
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| !layer.rules.contains(r))
            .collect();
        stale.sort_by_key(|(_, r)| r.priority);
        for (index, _) in stale {
            self.delete_rule(&installed.raw_rules[index])?;
        }
        // Rules at our priorities that we could not even read are not ours to keep.
        for raw in installed.raw_rules.iter().skip(installed.rules.len()) {
            self.delete_rule(raw)?;
        }
        for (route, raw) in installed.routes.iter().zip(&installed.raw_routes) {
            if !wanted_routes.contains(route) {
                self.delete_route(raw)?;
            }
        }
        Ok(())
    }

    /// Reads the kill switch's rules and routes from the kernel.
    pub fn installed(&mut self) -> Result<Installed, RouteError> {
        let mut installed = Installed::default();
        let mut unreadable = Vec::new();
        for message in self
            .rtnl
            .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))?
        {
            if let RouteNetlinkMessage::NewRule(rule) = message
                && PRIORITIES.contains(&rule_priority(&rule))
            {
                match parse_rule(&rule) {
                    Some(parsed) => {
                        installed.rules.push(parsed);
                        installed.raw_rules.push(rule);
                    }
                    None => unreadable.push(rule),
                }
            }
        }
        // Unreadable rules go last, after the ones `rules` describes, index for index.
        installed.raw_rules.extend(unreadable);
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            for message in self.rtnl.dump(RouteNetlinkMessage::GetRoute(request))? {
                if let RouteNetlinkMessage::NewRoute(route) = message
                    && route_table(&route) == ROUTE_TABLE
                {
                    installed.routes.push(parse_route(&route));
                    installed.raw_routes.push(route);
                }
            }
        }
        Ok(installed)
    }

    fn resolve_routes(&self, routes: &[TableRoute]) -> Vec<InstalledRoute> {
        routes
            .iter()
            .filter_map(|route| match route {
                TableRoute::Unreachable(family) => Some(InstalledRoute::Unreachable(*family)),
                // A tunnel that does not exist (yet) has no route; unreachable stands in.
                TableRoute::Tunnel(family, name) => {
                    let index = nix_if_index(name.as_str())?;
                    Some(InstalledRoute::Device(*family, index))
                }
                TableRoute::Host(address, name) => {
                    Some(InstalledRoute::Host(*address, nix_if_index(name.as_str())?))
                }
            })
            .collect()
    }

    fn add_route(&mut self, route: &InstalledRoute) -> Result<(), RouteError> {
        let (family, kind, oif, metric, host) = match route {
            InstalledRoute::Unreachable(family) => (
                *family,
                RouteType::Unreachable,
                None,
                LAST_RESORT_METRIC,
                None,
            ),
            InstalledRoute::Device(family, index) => {
                (*family, RouteType::Unicast, Some(*index), 0, None)
            }
            InstalledRoute::Host(address, index) => {
                let family = if address.is_ipv4() {
                    IpFamily::V4
                } else {
                    IpFamily::V6
                };
                (family, RouteType::Unicast, Some(*index), 0, Some(*address))
            }
            InstalledRoute::Other => return Ok(()),
        };
        let mut message = RouteMessage::default();
        message.header = RouteHeader {
            address_family: address_family(family),
            table: RT_TABLE_COMPAT,
            protocol: RouteProtocol::Static,
            // Universe scope, also for the device route: when someone adds a route through a
            // gateway without naming the device, the kernel finds the gateway by a lookup that
            // skips routes of universe scope. Scope `link` here would make our table answer that
            // lookup, and a new default route would be bound to the tunnel.
            scope: RouteScope::Universe,
            kind,
            ..RouteHeader::default()
        };
        if let Some(address) = host {
            message.header.destination_prefix_length = if address.is_ipv4() { 32 } else { 128 };
            message
                .attributes
                .push(RouteAttribute::Destination(address.into()));
        }
        message.attributes.push(RouteAttribute::Table(ROUTE_TABLE));
        message.attributes.push(RouteAttribute::Priority(metric));
        if let Some(index) = oif {
            message.attributes.push(RouteAttribute::Oif(index));
        }
        self.rtnl.change(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add {route:?}"),
        )
    }

    fn delete_route(&mut self, route: &RouteMessage) -> Result<(), RouteError> {
        self.rtnl.change(
            RouteNetlinkMessage::DelRoute(route.clone()),
            0,
            "delete a route of the kill switch's table",
        )
    }

    fn add_rule(&mut self, rule: &RoutingRule) -> Result<(), RouteError> {
        self.rtnl.change(
            RouteNetlinkMessage::NewRule(rule_message(rule)),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add {rule:?}"),
        )
    }

    fn delete_rule(&mut self, rule: &RuleMessage) -> Result<(), RouteError> {
        self.rtnl.change(
            RouteNetlinkMessage::DelRule(rule.clone()),
            0,
            "delete a rule of the kill switch",
        )
    }
}

fn nix_if_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

fn address_family(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

fn ip_family(family: AddressFamily) -> Option<IpFamily> {
    match family {
        AddressFamily::Inet => Some(IpFamily::V4),
        AddressFamily::Inet6 => Some(IpFamily::V6),
        _ => None,
    }
}

fn rule_priority(rule: &RuleMessage) -> u32 {
    rule.attributes
        .iter()
        .find_map(|a| {
            if let RuleAttribute::Priority(p) = a {
                Some(*p)
            } else {
                None
            }
        })
        .unwrap_or(0)
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| {
            if let RouteAttribute::Table(t) = a {
                Some(*t)
            } else {
                None
            }
        })
        .unwrap_or(u32::from(route.header.table))
}

fn rule_message(rule: &RoutingRule) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header = RuleHeader {
        family: address_family(rule.family),
        table: u8::try_from(rule.table).unwrap_or(0),
        action: RuleAction::ToTable,
        flags: if rule.invert {
            RuleFlags::Invert
        } else {
            RuleFlags::empty()
        },
        ..RuleHeader::default()
    };
    let a = &mut message.attributes;
    a.push(RuleAttribute::Priority(rule.priority));
    a.push(RuleAttribute::Table(rule.table));
    match &rule.selector {
        Selector::All => {}
        Selector::FwMark(mark) => {
            a.push(RuleAttribute::FwMark(*mark));
            a.push(RuleAttribute::FwMask(u32::MAX));
        }
        Selector::Uid(uid) => a.push(RuleAttribute::UidRange(RuleUidRange {
            start: *uid,
            end: *uid,
        })),
        Selector::To(net) => {
            message.header.dst_len = net.prefix_len();
            a.push(RuleAttribute::Destination(net.network()));
        }
        Selector::Endpoint {
            address,
            protocol,
            port,
        } => {
            message.header.dst_len = if address.is_ipv4() { 32 } else { 128 };
            a.push(RuleAttribute::Destination(*address));
            a.push(RuleAttribute::IpProtocol(IpProtocol::from(
                protocol.number(),
            )));
            a.push(RuleAttribute::DestinationPortRange(RulePortRange {
                start: *port,
                end: *port,
            }));
        }
    }
    message
}

/// Reads a rule back into the policy's terms; `None` when it is not a shape we install.
fn parse_rule(rule: &RuleMessage) -> Option<RoutingRule> {
    let family = ip_family(rule.header.family)?;
    let invert = rule.header.flags.contains(RuleFlags::Invert);
    if rule.header.action != RuleAction::ToTable
        || !(rule.header.flags - RuleFlags::Invert).is_empty()
    {
        return None;
    }
    let (mut priority, mut table) = (None, u32::from(rule.header.table));
    let (mut mark, mut mask, mut uid, mut dst, mut proto, mut port) =
        (None, None, None, None, None, None);
    for attribute in &rule.attributes {
        match attribute {
            RuleAttribute::Priority(p) => priority = Some(*p),
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            RuleAttribute::UidRange(r) if r.start == r.end => uid = Some(r.start),
            RuleAttribute::Destination(ip) => dst = Some(*ip),
            RuleAttribute::IpProtocol(p) => proto = Some(u8::from(*p)),
            RuleAttribute::DestinationPortRange(r) if r.start == r.end => port = Some(r.start),
            // Attributes the kernel reports on every rule.
            RuleAttribute::Protocol(_)
            | RuleAttribute::SuppressPrefixLen(_)
            | RuleAttribute::SuppressIfGroup(_) => {}
            _ => return None,
        }
    }
    let selector = match (mark, uid, dst, proto, port) {
        (None, None, None, None, None) => Selector::All,
        (Some(m), None, None, None, None) if mask == Some(u32::MAX) => Selector::FwMark(m),
        (None, Some(u), None, None, None) => Selector::Uid(u),
        (None, None, Some(ip), None, None) => {
            Selector::To(ipnet::IpNet::new(ip, rule.header.dst_len).ok()?)
        }
        (None, None, Some(address), Some(p), Some(port)) => Selector::Endpoint {
            address,
            protocol: match p {
                6 => killswitch_policy::L4Proto::Tcp,
                17 => killswitch_policy::L4Proto::Udp,
                _ => return None,
            },
            port,
        },
        _ => return None,
    };
    Some(RoutingRule {
        family,
        priority: priority?,
        selector,
        invert,
        table,
    })
}

fn parse_route(route: &RouteMessage) -> InstalledRoute {
    let Some(family) = ip_family(route.header.address_family) else {
        return InstalledRoute::Other;
    };
    let oif = route.attributes.iter().find_map(|a| {
        if let RouteAttribute::Oif(i) = a {
            Some(*i)
        } else {
            None
        }
    });
    let host = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    });
    let full = if family == IpFamily::V4 { 32 } else { 128 };
    if route.header.destination_prefix_length == full && route.header.kind == RouteType::Unicast {
        return match (host, oif) {
            (Some(address), Some(index)) => InstalledRoute::Host(address, index),
            _ => InstalledRoute::Other,
        };
    }
    if route.header.destination_prefix_length != 0 {
        return InstalledRoute::Other;
    }
    let has_destination = route.attributes.iter().any(|a| {
        matches!(
            a,
            RouteAttribute::Destination(RouteAddress::Inet(_) | RouteAddress::Inet6(_))
        )
    });
    match route.header.kind {
        RouteType::Unreachable if !has_destination => InstalledRoute::Unreachable(family),
        RouteType::Unicast => route
            .attributes
            .iter()
            .find_map(|a| {
                if let RouteAttribute::Oif(i) = a {
                    Some(InstalledRoute::Device(family, *i))
                } else {
                    None
                }
            })
            .unwrap_or(InstalledRoute::Other),
        _ => InstalledRoute::Other,
    }
}
