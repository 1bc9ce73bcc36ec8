//! Bypass (split tunnelling, issue 15): the programs in the daemon's bypass cgroup, and their
//! children, go around the tunnel through the physical link; nothing else does.
//!
//! Two parts, one per layer, both keyed on the cgroup and nothing a program can choose:
//!
//! - **Firewall**: in `output`, after loopback, the tunnel-only users' jumps (a tunnel-only user
//!   stays confined even inside the bypass cgroup) and the guards that keep the tunnel's address
//!   off other interfaces, one rule accepts every packet whose socket belongs to the bypass
//!   cgroup (`socket cgroupv2 level L ID`, by the cgroup's id: [`Match::SocketCgroup`]), out of
//!   any interface. It sits before the DNS rules on purpose: a bypassed program's DNS goes
//!   wherever the program sends it, as if there were no VPN. The system's own resolver is not
//!   in the cgroup: a bypassed program that asks a local stub (systemd-resolved's 127.0.0.53, a
//!   loopback accept) is answered through the tunnel like everyone else. Replies come back
//!   through `input`'s "replies to allowed flows" (`ct state established,related`): the flow was
//!   created by the accepted packet, so no conntrack mark is needed, and no new inbound
//!   connection is ever opened by bypass.
//! - **Routing**: the daemon attaches a cgroup BPF program (`BPF_CGROUP_INET_SOCK_CREATE`) to the
//!   cgroup that marks each socket created in it with [`BYPASS_MARK`]; the rule
//!   `fwmark BYPASS_MARK lookup main` at [`PRIORITY_BYPASS`], ahead of every rule of the kill
//!   switch's routing layer, routes those sockets by the main table, where the physical default
//!   route is (a tunnel run by `up` or wg-quick routes by a table of its own and leaves `main`
//!   alone). The mark is set when the socket is created, so the route lookup at `connect()`
//!   already picks the physical route and source address: no masquerade, no re-route.
//!
//! A socket outside the cgroup never carries the cgroup's id, so the accept never applies to it
//! (property test `bypass_never_applies_outside_its_cgroup`); a socket outside that sets
//! [`BYPASS_MARK`] itself (which needs `CAP_NET_ADMIN`) is routed by `main` and then refused by
//! the firewall like any packet outside the tunnel.

use crate::ruleset::{IpFamily, Match, Rule, Verdict};

/// The fwmark the bypass cgroup's BPF program gives every socket created in the cgroup: "kbyp".
/// Distinct from the tunnels' marks (wg-quick's 0xca6c, OpenVPN's conventional ones).
pub const BYPASS_MARK: u32 = 0x6b62_7970;

/// The priority of the bypass routing rule: ahead of the kill switch's routing layer
/// ([`crate::routes::PRIORITY_TUNNEL_ONLY_USERS`] and after), so that a bypassed socket never
/// meets the catch-all into the tunnel.
pub const PRIORITY_BYPASS: u32 = 5298;

/// The bypass cgroup as the rules match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BypassScope {
    /// The cgroup's depth below the cgroup2 root.
    pub level: u32,
    /// The cgroup's id (the inode of its directory): it changes when the cgroup is re-created,
    /// so the daemon reads it again whenever the cgroup changes.
    pub id: u64,
}

impl BypassScope {
    /// The match for sockets in this cgroup (or below it).
    pub fn socket_match(&self) -> Match {
        Match::SocketCgroup {
            level: self.level,
            id: self.id,
        }
    }
}

/// The `output` rule that lets a bypassed socket's packets out of any interface.
pub(crate) fn bypass_accept(scope: &BypassScope) -> Rule {
    Rule {
        matches: vec![scope.socket_match()],
        statements: Vec::new(),
        verdict: Verdict::Accept,
        comment: "bypass: around the tunnel",
    }
}

/// `fwmark BYPASS_MARK lookup main` for both families.
pub(crate) fn bypass_routing_rules() -> Vec<crate::routes::RoutingRule> {
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .map(|family| crate::routes::RoutingRule {
            family,
            priority: PRIORITY_BYPASS,
            selector: crate::routes::Selector::FwMark(BYPASS_MARK),
            invert: false,
            table: crate::routes::MAIN_TABLE,
        })
        .collect()
}
