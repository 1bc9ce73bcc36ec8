//! The routing layer's backend: makes the kernel hold a [`RoutingLayer`] (policy rules at the
//! kill switch's priorities, routes in its table) over rtnetlink.
//!
//! Unlike nftables, rules and routes cannot be changed in one transaction, so [`Routing::apply`]
//! orders its steps to fail closed: routes into the table before the rules that send traffic
//! there (an empty table would let lookups fall through to `main`), new rules before stale ones go,
//! the catch-all rule added first and removed last. It compares with what the kernel holds first
//! and changes only the difference, so calling it again (after a link change, or when someone
//! deleted a rule) is cheap and restores what is missing. Then it reads the result back: what the
//! kernel holds must be exactly the layer, or the apply fails and says what differs (as the
//! nftables backend does), so that `status` never shows a layer that is not there.
//!
//! Every rule and route it installs carries the protocol value [`PROTOCOL`] (`FRA_PROTOCOL`,
//! `rtm_protocol`), and it changes or removes only entries that carry it: other programs may use
//! the same priorities or even the same table, and their entries are left alone. Entries an older
//! version installed before the mark existed are recognised by their exact shape (see
//! [`Installed`]) and replaced.
//!
//! [`notifications_concern_us`] tells, from the raw rtnetlink notifications the daemon receives,
//! whether something changed that it must look at: a link or an address, or an entry of the
//! routing layer that another program (or the kernel) changed. Its own changes do not count.

use killswitch_policy::IpFamily;
use killswitch_policy::ranges;
use killswitch_policy::routes::{
    MAIN_TABLE, PRIORITIES, PRIORITY_CATCH_ALL, PRIORITY_LAN, PRIORITY_TUNNEL, ROUTE_TABLE,
    RoutingLayer, RoutingRule, Selector, TableRoute,
};
use netlink_packet_core::{
    NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{
    RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage, RulePortRange, RuleUidRange,
};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;

mod rtnl;
pub use rtnl::{Rtnl, is_own_port};

/// The protocol value on every rule and route the kill switch installs: 107, `0x6b`, "k" (its table
/// is `0x6b73`, "ks"). The kernel interprets only the values below 5 (`RTPROT_STATIC`);
/// /etc/iproute2/rt_protos and the kernel's `RTPROT_*` list name none at 107, and neither do the
/// routing daemons that pick their own (FRR 186-198, BIRD 12, Babel 42, Open/R 99, keepalived 18).
pub const PROTOCOL: u8 = 107;

/// The lowest preference a route can have: `unreachable` sits behind the tunnel's route.
const LAST_RESORT_METRIC: u32 = u32::MAX;
const RT_TABLE_COMPAT: u8 = 252;
/// `FRA_DPORT_MASK`: kernels with fib-rule port masks (6.18 here; not 6.1) report it, 0xffff, on
/// every rule for a single port.
const FRA_DPORT_MASK: u16 = 29;
/// The source port mask (kernel 6.18), reported as [`FRA_DPORT_MASK`] is.
const FRA_SPORT_MASK: u16 = 28;
/// How many times [`Routing::apply`] changes the difference before it gives up: a second round
/// covers a change that raced with someone else's.
const ROUNDS: usize = 2;

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
    /// After applying, the kernel does not hold the layer.
    #[error("the kernel does not hold the routing layer: {0}")]
    NotInPlace(String),
}

/// What of the routing layer is in the kernel.
///
/// An entry is the kill switch's own when it carries [`PROTOCOL`], or when it is exactly what an
/// older version installed without it: a rule of protocol `unspec` at 5302 that looks up table
/// 27507 (everything, or everything but the tunnel's own packets), or one at 5301 that sends one of
/// the LAN ranges to `main`; a route of protocol `static` in table 27507 of the three shapes the
/// layer uses (`unreachable default`, `default dev X`, `ADDRESS dev X`). Those are replaced by
/// marked ones. Anything else at the kill switch's priorities or in its table is another program's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// The kill switch's own rules, as far as they are understood.
    pub rules: Vec<RoutingRule>,
    /// The kill switch's own routes in its table.
    pub routes: Vec<InstalledRoute>,
    /// Other programs' entries at the kill switch's priorities or in its table, described: never
    /// touched.
    pub foreign: Vec<String>,
    /// The priority of each of those that is a rule (`None`: a route in the table).
    foreign_priorities: Vec<Option<u32>>,
    raw_rules: Vec<RuleMessage>,
    raw_routes: Vec<RouteMessage>,
    /// Rules carrying the mark that this version cannot read (a kernel reporting something new).
    unreadable: Vec<RuleMessage>,
    legacy_rules: Vec<(RoutingRule, RuleMessage)>,
    legacy_routes: Vec<(InstalledRoute, RouteMessage)>,
}

impl Installed {
    /// The foreign entries that can come before `layer`'s own: a rule at a priority the layer
    /// uses (the kernel orders rules of one priority by when they were added), and any route in
    /// its table. A rule at one of the kill switch's priorities that this layer leaves unused is
    /// like a rule at any other priority below the catch-all: evaluated first, as it would be
    /// anyway. That is where the kernel puts a rule added without a priority while the kill
    /// switch's catch-all is the first rule (wg-quick started after early boot): just before it.
    /// With no layer wanted, every entry is named.
    fn foreign_in_the_way(&self, layer: Option<&RoutingLayer>) -> Vec<String> {
        self.foreign
            .iter()
            .zip(&self.foreign_priorities)
            .filter(|(_, priority)| match (layer, priority) {
                (Some(layer), Some(priority)) => {
                    layer.rules.iter().any(|r| r.priority == *priority)
                }
                _ => true,
            })
            .map(|(entry, _)| entry.clone())
            .collect()
    }
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
    /// `<network> dev <index>` (a network of more than one address).
    Net(ipnet::IpNet, u32),
    /// Anything else (removed on apply when it is the kill switch's own).
    Other,
}

/// What [`Routing::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether anything had to be changed.
    pub changed: bool,
    /// The layer had been applied and verified before, nothing about it was meant to change, and
    /// yet the kernel no longer held it: what was different (now restored). Someone removed or
    /// changed part of it.
    pub repaired: Option<String>,
    /// Other programs' entries at the kill switch's priorities or in its table (left alone).
    pub foreign: Vec<String>,
}

/// The layer with its interfaces resolved: what the kernel should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Wanted {
    rules: Vec<RoutingRule>,
    routes: Vec<InstalledRoute>,
}

/// The routing layer's connection, in the calling thread's network namespace.
#[derive(Debug)]
pub struct Routing {
    rtnl: Rtnl,
    /// What the last apply left in place and read back.
    verified: Option<Wanted>,
}

impl Routing {
    /// Opens the socket. Changing rules and routes needs CAP_NET_ADMIN.
    pub fn open() -> Result<Self, RouteError> {
        Ok(Routing {
            rtnl: Rtnl::open()?,
            verified: None,
        })
    }

    /// Makes the kernel hold `layer` (or, for `None`, none of the kill switch's rules and routes),
    /// then reads it back: [`RouteError::NotInPlace`] says what still differs.
    pub fn apply(&mut self, layer: Option<&RoutingLayer>) -> Result<Applied, RouteError> {
        let wanted = Wanted {
            rules: layer.map(|l| l.rules.clone()).unwrap_or_default(),
            routes: layer
                .map(|l| self.resolve_routes(&l.routes))
                .unwrap_or_default(),
        };
        let before = self.verified.take();
        let mut first: Option<Vec<String>> = None;
        let mut round = 0;
        loop {
            let installed = self.installed()?;
            let difference = installed.difference(&wanted);
            if difference.is_empty() {
                let repaired = first
                    .filter(|_| layer.is_some() && before.as_ref() == Some(&wanted))
                    .map(|d| summarize(&d));
                let applied = Applied {
                    changed: round > 0,
                    repaired,
                    foreign: installed.foreign_in_the_way(layer),
                };
                self.verified = Some(wanted);
                return Ok(applied);
            }
            if round == ROUNDS {
                return Err(RouteError::NotInPlace(summarize(&difference)));
            }
            first.get_or_insert(difference);
            self.change(&installed, &wanted)?;
            round += 1;
        }
    }

    /// Changes what differs between `installed` and `wanted`, in an order that fails closed.
    fn change(&mut self, installed: &Installed, wanted: &Wanted) -> Result<(), RouteError> {
        // 1. Routes: the table must hold its last resort before any rule sends traffic there. A
        //    route that takes the place of one of ours or an older version's (same destination
        //    and metric: a tunnel that came back with a new interface index) replaces it in one
        //    step, so the table never lacks it.
        let mut replaced = vec![false; installed.routes.len()];
        let mut replaced_legacy = vec![false; installed.legacy_routes.len()];
        for route in &wanted.routes {
            if installed.routes.contains(route) {
                continue;
            }
            let slot = route_slot(route);
            let ours = installed
                .routes
                .iter()
                .enumerate()
                .find(|(i, r)| !replaced[*i] && !wanted.routes.contains(r) && route_slot(r) == slot)
                .map(|(i, _)| i);
            let legacy = installed
                .legacy_routes
                .iter()
                .enumerate()
                .find(|(i, (r, _))| !replaced_legacy[*i] && route_slot(r) == slot)
                .map(|(i, _)| i);
            if let Some(i) = ours {
                replaced[i] = true;
            } else if let Some(i) = legacy {
                replaced_legacy[i] = true;
            }
            self.add_route(route, ours.is_some() || legacy.is_some())?;
        }
        // 2. Rules: add what is missing, the catch-all first and the LAN's exemptions last.
        let mut missing: Vec<&RoutingRule> = wanted
            .rules
            .iter()
            .filter(|r| !installed.rules.contains(r))
            .collect();
        missing.sort_by_key(|r| rank(r.priority));
        let mut collided = false;
        for rule in missing {
            collided |= !self.add_rule(rule)?;
        }
        // 3. Remove what is stale: the LAN's exemptions first, the catch-all last.
        let mut stale: Vec<(u32, &RuleMessage)> = installed
            .rules
            .iter()
            .zip(&installed.raw_rules)
            .filter(|(r, _)| !wanted.rules.contains(r))
            .map(|(r, raw)| (r.priority, raw))
            .chain(
                installed
                    .legacy_rules
                    .iter()
                    .map(|(r, raw)| (r.priority, raw)),
            )
            .collect();
        // A rule of ours that cannot be read back goes, unless the kernel just said that a rule
        // we added exists already: then the unreadable one may be that very rule (the kernel
        // compares what a rule matches, we could not), and removing it would remove the layer.
        // Reading back reports it either way.
        if !collided {
            stale.extend(installed.unreadable.iter().map(|r| (rule_priority(r), r)));
        }
        stale.sort_by_key(|(priority, _)| std::cmp::Reverse(rank(*priority)));
        for (_, raw) in stale {
            self.delete_rule(raw)?;
        }
        // 4. Stale routes last.
        for (i, (route, raw)) in installed
            .routes
            .iter()
            .zip(&installed.raw_routes)
            .enumerate()
        {
            if !replaced[i] && !wanted.routes.contains(route) {
                self.delete_route(raw)?;
            }
        }
        for (i, (_, raw)) in installed.legacy_routes.iter().enumerate() {
            if !replaced_legacy[i] {
                self.delete_route(raw)?;
            }
        }
        Ok(())
    }

    /// The fwmarks that other programs' policy rules select on (`ip rule ... fwmark N`), in both
    /// families; the kill switch's own rules are left out. Used to pick a mark for a tunnel that
    /// has none without taking one that already routes something (wg-quick's 51820, say).
    pub fn marks_in_use(&mut self) -> Result<Vec<u32>, RouteError> {
        let mut marks = Vec::new();
        for message in self
            .rtnl
            .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))?
        {
            let RouteNetlinkMessage::NewRule(rule) = message else {
                continue;
            };
            if PRIORITIES.contains(&rule_priority(&rule)) && rule_protocol(&rule) == PROTOCOL {
                continue;
            }
            marks.extend(rule.attributes.iter().filter_map(|a| match a {
                RuleAttribute::FwMark(m) if *m != 0 => Some(*m),
                _ => None,
            }));
        }
        marks.sort_unstable();
        marks.dedup();
        Ok(marks)
    }

    /// Reads the kill switch's rules and routes from the kernel.
    pub fn installed(&mut self) -> Result<Installed, RouteError> {
        let mut installed = Installed::default();
        for message in self
            .rtnl
            .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))?
        {
            let RouteNetlinkMessage::NewRule(rule) = message else {
                continue;
            };
            if !PRIORITIES.contains(&rule_priority(&rule)) {
                continue;
            }
            let protocol = rule_protocol(&rule);
            match (protocol, parse_rule(&rule)) {
                (PROTOCOL, Some(parsed)) => {
                    installed.rules.push(parsed);
                    installed.raw_rules.push(rule);
                }
                (PROTOCOL, None) => installed.unreadable.push(rule),
                (0, Some(parsed)) if is_legacy_rule(&parsed) => {
                    installed.legacy_rules.push((parsed, rule));
                }
                (_, parsed) => {
                    installed
                        .foreign_priorities
                        .push(Some(rule_priority(&rule)));
                    installed.foreign.push(match parsed {
                        Some(parsed) => {
                            format!("rule {} (protocol {protocol})", describe_rule(&parsed))
                        }
                        None => format!(
                            "a rule at priority {} (protocol {protocol})",
                            rule_priority(&rule)
                        ),
                    })
                }
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            for message in self.rtnl.dump(RouteNetlinkMessage::GetRoute(request))? {
                let RouteNetlinkMessage::NewRoute(route) = message else {
                    continue;
                };
                if route_table(&route) != ROUTE_TABLE {
                    continue;
                }
                let parsed = parse_route(&route);
                let protocol = u8::from(route.header.protocol);
                if protocol == PROTOCOL {
                    installed.routes.push(parsed);
                    installed.raw_routes.push(route);
                } else if route.header.protocol == RouteProtocol::Static
                    && parsed != InstalledRoute::Other
                {
                    installed.legacy_routes.push((parsed, route));
                } else {
                    installed.foreign_priorities.push(None);
                    installed.foreign.push(format!(
                        "a route in table {ROUTE_TABLE} ({}, protocol {protocol})",
                        match ip_family(route.header.address_family) {
                            Some(IpFamily::V6) => "IPv6",
                            _ => "IPv4",
                        }
                    ));
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
                // An interface that is gone has no route: the kernel removed it with the device.
                TableRoute::Link(net, name) => {
                    let index = nix_if_index(name.as_str())?;
                    Some(if net.prefix_len() == net.max_prefix_len() {
                        InstalledRoute::Host(net.addr(), index)
                    } else {
                        InstalledRoute::Net(net.trunc(), index)
                    })
                }
            })
            .collect()
    }

    /// Adds `route`; `replace`: in the place of the route with the same destination and metric.
    fn add_route(&mut self, route: &InstalledRoute, replace: bool) -> Result<(), RouteError> {
        let (family, kind, oif, metric, destination) = match route {
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
            InstalledRoute::Host(address, index) => (
                family_of(*address),
                RouteType::Unicast,
                Some(*index),
                0,
                Some(ipnet::IpNet::from(*address)),
            ),
            InstalledRoute::Net(net, index) => (
                family_of(net.addr()),
                RouteType::Unicast,
                Some(*index),
                0,
                Some(*net),
            ),
            InstalledRoute::Other => return Ok(()),
        };
        let mut message = RouteMessage::default();
        message.header = RouteHeader {
            address_family: address_family(family),
            table: RT_TABLE_COMPAT,
            protocol: RouteProtocol::from(PROTOCOL),
            // Universe scope, also for the device route: when someone adds a route through a
            // gateway without naming the device, the kernel finds the gateway by a lookup that
            // skips routes of universe scope. Scope `link` here would make our table answer that
            // lookup, and a new default route would be bound to the tunnel.
            scope: RouteScope::Universe,
            kind,
            ..RouteHeader::default()
        };
        if let Some(net) = destination {
            message.header.destination_prefix_length = net.prefix_len();
            message
                .attributes
                .push(RouteAttribute::Destination(net.network().into()));
        }
        message.attributes.push(RouteAttribute::Table(ROUTE_TABLE));
        message.attributes.push(RouteAttribute::Priority(metric));
        if let Some(index) = oif {
            message.attributes.push(RouteAttribute::Oif(index));
        }
        let flags = if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        self.rtnl.change(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | flags,
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

    /// Adds `rule`. Returns `false` when the kernel says it exists already (it compares what a
    /// rule matches and its protocol, not everything: not whether it is inverted).
    fn add_rule(&mut self, rule: &RoutingRule) -> Result<bool, RouteError> {
        let what = format!("add rule {}", describe_rule(rule));
        match self.rtnl.request(
            RouteNetlinkMessage::NewRule(rule_message(rule)),
            NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )? {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(source) => Err(RouteError::Refused { what, source }),
        }
    }

    fn delete_rule(&mut self, rule: &RuleMessage) -> Result<(), RouteError> {
        self.rtnl.change(
            RouteNetlinkMessage::DelRule(rule.clone()),
            0,
            "delete a rule of the kill switch",
        )
    }
}

impl Installed {
    /// What differs from `wanted`, described; empty when the kernel holds exactly the layer.
    fn difference(&self, wanted: &Wanted) -> Vec<String> {
        let mut out = Vec::new();
        let mut rules: Vec<Option<&RoutingRule>> = self.rules.iter().map(Some).collect();
        for rule in &wanted.rules {
            match rules.iter_mut().find(|r| **r == Some(rule)) {
                Some(found) => *found = None,
                None => out.push(format!("rule {} is missing", describe_rule(rule))),
            }
        }
        out.extend(
            rules
                .into_iter()
                .flatten()
                .map(|r| format!("rule {} is not wanted", describe_rule(r))),
        );
        out.extend(self.unreadable.iter().map(|r| {
            format!(
                "a rule of the kill switch at priority {} cannot be read back",
                rule_priority(r)
            )
        }));
        out.extend(
            self.legacy_rules
                .iter()
                .map(|(r, _)| format!("rule {} is an older version's", describe_rule(r))),
        );
        let mut routes: Vec<Option<&InstalledRoute>> = self.routes.iter().map(Some).collect();
        for route in &wanted.routes {
            match routes.iter_mut().find(|r| **r == Some(route)) {
                Some(found) => *found = None,
                None => out.push(format!("route {} is missing", describe_route(route))),
            }
        }
        out.extend(
            routes
                .into_iter()
                .flatten()
                .map(|r| format!("route {} is not wanted", describe_route(r))),
        );
        out.extend(
            self.legacy_routes
                .iter()
                .map(|(r, _)| format!("route {} is an older version's", describe_route(r))),
        );
        out
    }
}

/// The first few differences, and how many more: `status` shows this on one line.
fn summarize(difference: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = difference
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if difference.len() > SHOWN {
        let _ = write!(text, "; and {} more", difference.len() - SHOWN);
    }
    text
}

/// Whether a rule of protocol `unspec` is exactly what a version before the protocol mark
/// installed (see [`Installed`]).
fn is_legacy_rule(rule: &RoutingRule) -> bool {
    match rule.priority {
        PRIORITY_CATCH_ALL => {
            rule.table == ROUTE_TABLE
                && rule.invert == !matches!(rule.selector, Selector::All)
                && !matches!(rule.selector, Selector::To(_))
        }
        PRIORITY_LAN => {
            rule.table == MAIN_TABLE
                && !rule.invert
                && matches!(&rule.selector, Selector::To(net)
                    if ranges::LAN_UNICAST.contains(net) || ranges::LAN_GROUP.contains(net))
        }
        _ => false,
    }
}

/// Where a route sits in the table: the kernel keeps one route per destination and metric (and
/// type of route, for IPv6 per destination and metric), so a new route there replaces the old one.
fn route_slot(route: &InstalledRoute) -> Option<(IpFamily, Option<ipnet::IpNet>, bool)> {
    match route {
        InstalledRoute::Unreachable(family) => Some((*family, None, true)),
        InstalledRoute::Device(family, _) => Some((*family, None, false)),
        InstalledRoute::Host(address, _) => Some((
            family_of(*address),
            Some(ipnet::IpNet::from(*address)),
            false,
        )),
        InstalledRoute::Net(net, _) => Some((family_of(net.addr()), Some(*net), false)),
        InstalledRoute::Other => None,
    }
}

/// The order rules are added in (and removed in reverse): the catch-all, then the destinations
/// inside the tunnel, then the LAN's exemptions. An exemption never stands without what it
/// exempts from, and what belongs to the tunnel is never exempted to the LAN meanwhile.
fn rank(priority: u32) -> u8 {
    match priority {
        PRIORITY_CATCH_ALL => 0,
        PRIORITY_TUNNEL => 1,
        PRIORITY_LAN => 2,
        _ => 3,
    }
}

/// A rule as `ip rule` would show it, with its family.
fn describe_rule(rule: &RoutingRule) -> String {
    let mut text = format!("{}: ", rule.priority);
    if rule.invert {
        text.push_str("not ");
    }
    match &rule.selector {
        Selector::All => text.push_str("from all"),
        Selector::FwMark(mark) => {
            let _ = write!(text, "fwmark {mark:#x}");
        }
        Selector::Uid(uid) => {
            let _ = write!(text, "uidrange {uid}-{uid}");
        }
        Selector::To(net) => {
            let _ = write!(text, "to {net}");
        }
        Selector::Endpoint {
            address,
            protocol,
            port,
        } => {
            let _ = write!(
                text,
                "to {address} ipproto {} dport {port}",
                protocol.number()
            );
        }
        Selector::SourcePort { protocol, port } => {
            let _ = write!(text, "ipproto {} sport {port}", protocol.number());
        }
        Selector::From(net) => {
            let _ = write!(text, "from {net}");
        }
        Selector::InInterface(name) => {
            let _ = write!(text, "iif {name}");
        }
    }
    let _ = write!(
        text,
        " lookup {} ({})",
        rule.table,
        match rule.family {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    );
    text
}

fn describe_route(route: &InstalledRoute) -> String {
    let family = |f: &IpFamily| match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    };
    match route {
        InstalledRoute::Unreachable(f) => format!("unreachable default ({})", family(f)),
        InstalledRoute::Device(f, index) => {
            format!("default dev #{index} ({})", family(f))
        }
        InstalledRoute::Host(address, index) => format!("{address} dev #{index}"),
        InstalledRoute::Net(net, index) => format!("{net} dev #{index}"),
        InstalledRoute::Other => "of another shape".to_owned(),
    }
}

/// Whether a datagram of rtnetlink notifications (as read from a socket subscribed to link,
/// address, route and rule groups) concerns the daemon: a link or an address changed, or an entry
/// of the routing layer (a rule at the kill switch's priorities, a route in its table) was changed
/// by someone other than this process's own rtnetlink clients ([`is_own_port`]), the kernel
/// included (a route goes when its interface does). Every other route or rule is another program's
/// business. A message that cannot be read counts: better one look too many.
///
/// Ignoring its own changes is what keeps the daemon from waking itself up: applying the layer
/// sends notifications, and reacting to them would apply it again.
pub fn notifications_concern_us(datagram: &[u8]) -> bool {
    let mut offset = 0;
    let mut concerns = false;
    while offset < datagram.len() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
        else {
            return true;
        };
        let length = message.header.length as usize;
        if length == 0 {
            return true;
        }
        offset += length.next_multiple_of(4);
        let foreign = !is_own_port(message.header.port_number);
        let NetlinkPayload::InnerMessage(inner) = message.payload else {
            continue;
        };
        concerns |= match inner {
            RouteNetlinkMessage::NewLink(_)
            | RouteNetlinkMessage::DelLink(_)
            | RouteNetlinkMessage::NewAddress(_)
            | RouteNetlinkMessage::DelAddress(_) => true,
            RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route) => {
                foreign && route_table(&route) == ROUTE_TABLE
            }
            RouteNetlinkMessage::NewRule(rule) | RouteNetlinkMessage::DelRule(rule) => {
                foreign && PRIORITIES.contains(&rule_priority(&rule))
            }
            _ => false,
        };
    }
    concerns
}

fn family_of(address: IpAddr) -> IpFamily {
    if address.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

fn rule_protocol(rule: &RuleMessage) -> u8 {
    rule.attributes
        .iter()
        .find_map(|a| {
            if let RuleAttribute::Protocol(p) = a {
                Some(u8::from(*p))
            } else {
                None
            }
        })
        .unwrap_or(0)
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

/// The routing table a route is in: its `RTA_TABLE` attribute, which holds tables above 255,
/// else the header's 8-bit field.
pub fn route_table(route: &RouteMessage) -> u32 {
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
    a.push(RuleAttribute::Protocol(RouteProtocol::from(PROTOCOL)));
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
        Selector::SourcePort { protocol, port } => {
            a.push(RuleAttribute::IpProtocol(IpProtocol::from(
                protocol.number(),
            )));
            a.push(RuleAttribute::SourcePortRange(RulePortRange {
                start: *port,
                end: *port,
            }));
        }
        Selector::From(net) => {
            message.header.src_len = net.prefix_len();
            a.push(RuleAttribute::Source(net.network()));
        }
        // By name: the kernel keeps the rule while the interface does not exist (yet, or any
        // more), and it applies again as soon as one of that name appears.
        Selector::InInterface(name) => a.push(RuleAttribute::Iifname(name.as_str().to_owned())),
    }
    message
}

/// Reads a rule back into the policy's terms; `None` when it is not a shape we install.
fn parse_rule(rule: &RuleMessage) -> Option<RoutingRule> {
    let family = ip_family(rule.header.family)?;
    let invert = rule.header.flags.contains(RuleFlags::Invert);
    // An `iif` rule whose interface does not exist (an exec namespace's, before its veth is
    // made or after it is gone) carries the kernel's "detached" flag: still our rule.
    if rule.header.action != RuleAction::ToTable
        || !(rule.header.flags - RuleFlags::Invert - RuleFlags::IifDetached).is_empty()
    {
        return None;
    }
    let (mut priority, mut table) = (None, u32::from(rule.header.table));
    let (mut mark, mut mask, mut uid, mut dst, mut proto, mut port) =
        (None, None, None, None, None, None);
    let (mut src, mut sport, mut iif) = (None, None, None);
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
            RuleAttribute::SourcePortRange(r) if r.start == r.end => sport = Some(r.start),
            RuleAttribute::Source(ip) => src = Some(*ip),
            RuleAttribute::Iifname(name) => iif = Some(name.clone()),
            // Attributes the kernel reports on every rule (the protocol is judged by the caller).
            RuleAttribute::Protocol(_)
            | RuleAttribute::SuppressPrefixLen(_)
            | RuleAttribute::SuppressIfGroup(_) => {}
            // Kernels with port masks (6.18 here) also report the mask: all ones for a single
            // port, which is what we install. Any other mask matches other ports: not our rule.
            RuleAttribute::Other(nla)
                if nla.kind() == FRA_DPORT_MASK || nla.kind() == FRA_SPORT_MASK =>
            {
                let mut value = [0u8; 2];
                if nla.value_len() != 2 {
                    return None;
                }
                nla.emit_value(&mut value);
                if value != [0xff, 0xff] {
                    return None;
                }
            }
            _ => return None,
        }
    }
    let l4 = |p: u8| match p {
        6 => Some(killswitch_policy::L4Proto::Tcp),
        17 => Some(killswitch_policy::L4Proto::Udp),
        _ => None,
    };
    if let Some(name) = iif {
        if mark.is_some()
            || uid.is_some()
            || dst.is_some()
            || proto.is_some()
            || sport.is_some()
            || src.is_some()
        {
            return None;
        }
        return Some(RoutingRule {
            family,
            priority: priority?,
            selector: Selector::InInterface(killswitch_types::InterfaceName::new(name).ok()?),
            invert,
            table,
        });
    }
    if let Some(ip) = src {
        if mark.is_some() || uid.is_some() || dst.is_some() || proto.is_some() || sport.is_some() {
            return None;
        }
        return Some(RoutingRule {
            family,
            priority: priority?,
            selector: Selector::From(ipnet::IpNet::new(ip, rule.header.src_len).ok()?),
            invert,
            table,
        });
    }
    if let Some(sport) = sport {
        if mark.is_some() || uid.is_some() || dst.is_some() || port.is_some() {
            return None;
        }
        return Some(RoutingRule {
            family,
            priority: priority?,
            selector: Selector::SourcePort {
                protocol: l4(proto?)?,
                port: sport,
            },
            invert,
            table,
        });
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
            protocol: l4(p)?,
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
        return match (host, oif) {
            (Some(address), Some(index)) if route.header.kind == RouteType::Unicast => {
                ipnet::IpNet::new(address, route.header.destination_prefix_length)
                    .map_or(InstalledRoute::Other, |net| InstalledRoute::Net(net, index))
            }
            _ => InstalledRoute::Other,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_policy::L4Proto;
    use netlink_packet_core::{DefaultNla, NetlinkHeader};

    fn endpoint_rule() -> RoutingRule {
        RoutingRule {
            family: IpFamily::V4,
            priority: PRIORITY_CATCH_ALL,
            selector: Selector::Endpoint {
                address: "198.51.100.1".parse().expect("literal"),
                protocol: L4Proto::Udp,
                port: 51820,
            },
            invert: true,
            table: ROUTE_TABLE,
        }
    }

    #[test]
    fn a_single_port_reads_back_with_the_kernels_port_mask() {
        let rule = endpoint_rule();
        let mut message = rule_message(&rule);
        message
            .attributes
            .push(RuleAttribute::Other(DefaultNla::new(
                FRA_DPORT_MASK,
                vec![0xff, 0xff],
            )));
        assert_eq!(parse_rule(&message), Some(rule.clone()));
        assert_eq!(rule_protocol(&message), PROTOCOL);
        let mut other_ports = rule_message(&rule);
        other_ports
            .attributes
            .push(RuleAttribute::Other(DefaultNla::new(
                FRA_DPORT_MASK,
                vec![0x00, 0xff],
            )));
        assert_eq!(parse_rule(&other_ports), None, "a masked port is not ours");
    }

    #[test]
    fn only_an_older_versions_exact_shapes_count_as_its_own() {
        let all = RoutingRule {
            family: IpFamily::V4,
            priority: PRIORITY_CATCH_ALL,
            selector: Selector::All,
            invert: false,
            table: ROUTE_TABLE,
        };
        assert!(is_legacy_rule(&all));
        assert!(is_legacy_rule(&endpoint_rule()));
        assert!(!is_legacy_rule(&RoutingRule {
            table: 100,
            ..all.clone()
        }));
        assert!(!is_legacy_rule(&RoutingRule {
            selector: Selector::To("203.0.113.0/24".parse().expect("literal")),
            ..all.clone()
        }));
        let lan = RoutingRule {
            priority: PRIORITY_LAN,
            selector: Selector::To("10.0.0.0/8".parse().expect("literal")),
            table: MAIN_TABLE,
            ..all.clone()
        };
        assert!(is_legacy_rule(&lan));
        assert!(!is_legacy_rule(&RoutingRule {
            table: 100,
            ..lan.clone()
        }));
        assert!(!is_legacy_rule(&RoutingRule {
            selector: Selector::To("10.64.0.0/16".parse().expect("literal")),
            ..lan.clone()
        }));
        assert!(!is_legacy_rule(&RoutingRule {
            priority: PRIORITY_TUNNEL,
            ..all
        }));
    }

    fn notification(port: u32, payload: RouteNetlinkMessage) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.port_number = port;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(payload));
        packet.finalize();
        let mut buffer = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buffer);
        buffer
    }

    #[test]
    fn the_processs_own_changes_are_not_news() {
        let own = Rtnl::open().expect("an rtnetlink socket needs no privilege");
        let ours = RouteNetlinkMessage::DelRule(rule_message(&endpoint_rule()));
        assert!(!notifications_concern_us(&notification(
            own.port(),
            ours.clone()
        )));
        assert!(notifications_concern_us(&notification(
            own.port().wrapping_add(1),
            ours.clone()
        )));
        assert!(
            notifications_concern_us(&notification(0, ours.clone())),
            "the kernel's"
        );
        let mut elsewhere = rule_message(&endpoint_rule());
        elsewhere.attributes = vec![RuleAttribute::Priority(100), RuleAttribute::Table(100)];
        assert!(!notifications_concern_us(&notification(
            0,
            RouteNetlinkMessage::NewRule(elsewhere)
        )));
        // Two messages in one datagram: one of them is news.
        let mut both = notification(own.port(), ours.clone());
        both.extend(notification(0, ours));
        assert!(notifications_concern_us(&both));
        assert!(notifications_concern_us(b"garbage"), "unreadable counts");
        drop(own);
    }

    #[test]
    fn a_long_difference_is_summarized() {
        let difference: Vec<String> = (1..=5).map(|n| format!("d{n}")).collect();
        assert_eq!(summarize(&difference), "d1; d2; d3; and 2 more");
        assert_eq!(summarize(&difference[..2]), "d1; d2");
    }
}
