//! `killswitch exec` namespaces (issue 15): the rules that make a program's only way out the
//! tunnel, whatever the rest of the machine may do.
//!
//! Each program runs in a network namespace of its own, joined to this one by a veth pair whose
//! host side is named `ksx<N>` ([`EXEC_INTERFACE_PREFIX`]) and whose namespace side holds an
//! address of a small IPv4 subnet ([`ExecScope::subnet`]). Its packets reach this host as
//! *forwarded* packets arriving on `ksx<N>`, so the rules that confine them are on the forward
//! hook, where the program's own choices (`SO_BINDTODEVICE`, raw sockets, its own routes inside
//! the namespace) can no longer change anything:
//!
//! - forward: from `ksx*`, DNS only to the tunnel's resolvers through the tunnel, everything else
//!   (IPv4) through the tunnel, and the rest refused (rejected, so that programs fail fast:
//!   `refuse-non-tunnel`, `refuse-dns`). Into `ksx*`, only the tunnel's replies
//!   (established/related); nothing else may enter a namespace (a LAN host routing into it).
//! - input: nothing from `ksx*` reaches this host's own services.
//! - output: this host may send to `ksx*` (the ICMP errors and TCP resets the rejects above
//!   produce, and which must reach the program for it to fail fast).
//! - prerouting: without a tunnel, every packet from `ksx*` refused as it arrives (before the
//!   routing layer's `unreachable`, whose ICMP answers the kernel rate-limits).
//! - postrouting (`nat`): the namespace's subnet masqueraded out of the tunnel, whose server
//!   accepts only the tunnel's own address.
//!
//! The interface matches are by prefix (`iifname "ksx*"`), not per scope: a `ksx` interface the
//! daemon has not yet registered, or one a crash left behind, is confined as well. Without a
//! tunnel carrying traffic (connecting, blocked, disconnected, off) only the refusals remain, so
//! the program gets errors, never the physical link; when the tunnel is back, the accepts are too,
//! and the program's traffic flows again without a restart.
//!
//! These rules exist in every state where a scope is live, including those in which the machine
//! as a whole has no table ([`crate::compile`]'s scopes-only table): fail-closed must not depend
//! on the machine-wide state. The routing layer adds `iif ksx<N> lookup 27507` per scope
//! ([`crate::routes`]), so the kernel routes the namespace's packets into the tunnel or to
//! `unreachable` even if this table is gone.
//!
//! No IPv6 inside: the namespace gets no IPv6 address and no route, and any IPv6 packet from it
//! is refused here.

use crate::compile::{
    DNS_PORTS, DNS_PROTOS, PRIORITY_FILTER, Tunnel, host, on, refuse, refuse_chain,
};
use crate::ruleset::{
    BaseChain, Chain, ChainPolicy, CtStates, Hook, IpFamily, Match, Statement, Verdict,
};
use ipnet::{IpNet, Ipv4Net};
use killswitch_types::{BlockReason, InterfaceName};
use std::net::IpAddr;

/// The name every exec namespace's host-side interface starts with: `ksx0`, `ksx1`, ...
pub const EXEC_INTERFACE_PREFIX: &str = "ksx";

/// The name of the `nat` chain that masquerades the namespaces' packets out of the tunnel.
pub const EXEC_NAT_CHAIN: &str = "exec-nat";

/// nftables' `srcnat` priority: where source NAT hooks into postrouting.
const PRIORITY_SRCNAT: i32 = 100;

/// One live `exec` namespace as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecScope {
    /// The host side of its veth pair (`ksx<N>`).
    pub interface: InterfaceName,
    /// Its subnet: the host side's and the namespace side's addresses.
    pub subnet: Ipv4Net,
}

/// The forward rules of the exec namespaces, ahead of every other forward rule. With `tunnel`
/// (connected), DNS to its resolvers and IPv4 into it are accepted, and its replies come back;
/// everything else from or to `ksx*` is refused.
pub(crate) fn forward_rules(tunnel: Option<&Tunnel>) -> Vec<crate::ruleset::Rule> {
    let from_exec = || on().with(Match::InInterfacePrefix(EXEC_INTERFACE_PREFIX.to_owned()));
    let carries_v4 = tunnel.filter(|t| t.carried_families().contains(&IpFamily::V4));
    let mut rules = Vec::new();
    if let Some(tunnel) = carries_v4 {
        for server in tunnel.usable_dns().into_iter().filter(IpAddr::is_ipv4) {
            for proto in DNS_PROTOS {
                for port in DNS_PORTS {
                    rules.push(
                        from_exec()
                            .oif(&tunnel.interface)
                            .dst(host(server))
                            .proto(proto)
                            .dport(port)
                            .accept("exec: dns to the tunnel's resolver"),
                    );
                }
            }
        }
    }
    for proto in DNS_PROTOS {
        for port in DNS_PORTS {
            rules.push(
                from_exec()
                    .proto(proto)
                    .dport(port)
                    .verdict(refuse(BlockReason::Dns), "exec: dns outside the tunnel"),
            );
        }
    }
    if let Some(tunnel) = carries_v4 {
        rules.push(
            from_exec()
                .oif(&tunnel.interface)
                .family(IpFamily::V4)
                .accept("exec: through the tunnel"),
        );
    }
    rules.push(from_exec().verdict(
        refuse(BlockReason::NonTunnel),
        "exec: only through the tunnel",
    ));
    let to_exec = || on().with(Match::OutInterfacePrefix(EXEC_INTERFACE_PREFIX.to_owned()));
    if let Some(tunnel) = carries_v4 {
        rules.push(
            to_exec()
                .iif(&tunnel.interface)
                .ct(CtStates::ESTABLISHED_RELATED)
                .accept("exec: replies from the tunnel"),
        );
    }
    rules.push(to_exec().verdict(
        refuse(BlockReason::Inbound),
        "exec: nothing else into an exec namespace",
    ));
    rules
}

/// The name of the prerouting chain that refuses the namespaces' packets while no tunnel
/// carries them.
pub const EXEC_PREROUTING_CHAIN: &str = "exec-prerouting";

/// The prerouting chain: without a tunnel carrying IPv4, every packet from `ksx*` is refused as
/// it arrives. Its route would be `unreachable` (the routing layer), which also stops it, but
/// the kernel's ICMP answer to that is rate-limited (one a second per address): a program would
/// wait for its connection to time out instead of failing at once. With the tunnel, the chain is
/// empty and the forward rules decide.
pub(crate) fn prerouting_chain(tunnel: Option<&Tunnel>) -> Chain {
    let carries_v4 = tunnel.is_some_and(|t| t.carried_families().contains(&IpFamily::V4));
    let from_exec = || on().with(Match::InInterfacePrefix(EXEC_INTERFACE_PREFIX.to_owned()));
    let mut rules = Vec::new();
    if !carries_v4 {
        for proto in DNS_PROTOS {
            for port in DNS_PORTS {
                rules.push(
                    from_exec()
                        .proto(proto)
                        .dport(port)
                        .verdict(refuse(BlockReason::Dns), "exec: dns with no tunnel"),
                );
            }
        }
        rules.push(from_exec().verdict(
            refuse(BlockReason::NonTunnel),
            "exec: no tunnel to leave by",
        ));
    }
    Chain {
        name: EXEC_PREROUTING_CHAIN.to_owned(),
        base: Some(BaseChain {
            hook: Hook::Prerouting,
            priority: PRIORITY_FILTER,
            policy: ChainPolicy::Accept,
        }),
        rules,
    }
}

/// The input rule: nothing from an exec namespace reaches this host's own services (rejected, so
/// that a program trying fails at once).
pub(crate) fn input_rules() -> Vec<crate::ruleset::Rule> {
    vec![
        on().with(Match::InInterfacePrefix(EXEC_INTERFACE_PREFIX.to_owned()))
            .verdict(
                refuse(BlockReason::NonTunnel),
                "exec: not to this host's services",
            ),
    ]
}

/// The output rule: this host's packets to an exec namespace (the errors and resets the rejects
/// produce) pass. What they answer is refused on the input side.
pub(crate) fn output_rules() -> Vec<crate::ruleset::Rule> {
    vec![
        on().with(Match::OutInterfacePrefix(EXEC_INTERFACE_PREFIX.to_owned()))
            .accept("exec: this host's errors to an exec namespace"),
    ]
}

/// The `nat` chain: each scope's subnet masqueraded out of the tunnel (connected), nothing
/// otherwise (the chain stays, empty, so that the table's shape does not depend on the tunnel).
pub(crate) fn nat_chain(scopes: &[ExecScope], tunnel: Option<&Tunnel>) -> Chain {
    let mut subnets: Vec<Ipv4Net> = scopes.iter().map(|s| s.subnet.trunc()).collect();
    subnets.sort();
    subnets.dedup();
    let rules = match tunnel {
        Some(tunnel) if tunnel.carried_families().contains(&IpFamily::V4) => subnets
            .into_iter()
            .map(|subnet| {
                on().src(IpNet::V4(subnet))
                    .oif(&tunnel.interface)
                    .set(Statement::Masquerade)
                    .verdict(Verdict::Continue, "exec: out of the tunnel as the tunnel")
            })
            .collect(),
        _ => Vec::new(),
    };
    Chain {
        name: EXEC_NAT_CHAIN.to_owned(),
        base: Some(BaseChain {
            hook: Hook::Postrouting,
            priority: PRIORITY_SRCNAT,
            policy: ChainPolicy::Accept,
        }),
        rules,
    }
}

/// The chains of the scopes-only table (a state with no machine-wide table) for the exec
/// namespaces: input, forward (policy accept: only what belongs to `ksx*` is taken away) and
/// the `nat` chain. The caller adds the output chain and the refuse chains.
pub(crate) fn scopes_only_chains(scopes: &[ExecScope], tunnel: Option<&Tunnel>) -> Vec<Chain> {
    let base = |name: &str, hook: Hook, rules| Chain {
        name: name.to_owned(),
        base: Some(BaseChain {
            hook,
            priority: PRIORITY_FILTER,
            policy: ChainPolicy::Accept,
        }),
        rules,
    };
    vec![
        base("input", Hook::Input, input_rules()),
        base("forward", Hook::Forward, forward_rules(tunnel)),
        prerouting_chain(tunnel),
        nat_chain(scopes, tunnel),
    ]
}

/// The refuse chains the exec rules jump to.
pub(crate) fn refuse_chains() -> Vec<Chain> {
    [
        BlockReason::Dns,
        BlockReason::NonTunnel,
        BlockReason::Inbound,
    ]
    .into_iter()
    .map(refuse_chain)
    .collect()
}
