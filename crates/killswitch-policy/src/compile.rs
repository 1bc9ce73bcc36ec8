//! `compile`: what each protection state allows.
//!
//! Every state but `off` (and `disconnected` without lockdown) installs three base chains with policy
//! drop. The rules, in the order they appear in each chain:
//!
//! output: loopback; packets from the tunnel's address leaving by another interface dropped; the
//! endpoint hole; neighbour advertisements for the tunnel's address by another interface dropped;
//! DHCP and the NDP messages that bring a link up; DNS to the tunnel's resolvers through the tunnel;
//! every other DNS packet rejected; the tunnel; the exceptions (local bridges, allowed interfaces,
//! subnets, and the replies of allowed inbound flows: [`crate::exceptions`]); the LAN (when
//! allowed); then a reject, so applications fail fast instead of hanging.
//!
//! input: loopback; packets for the tunnel's address arriving on another interface dropped
//! (CVE-2019-14899), and neighbour solicitations for it; replies to allowed flows; replies from the
//! endpoint; DHCP and NDP; the tunnel; the exceptions (the first packet of an allowed inbound flow
//! marks it); the LAN (when allowed); then the drop policy.
//!
//! forward: DNS as in output; out through the tunnel and replies back to private addresses;
//! within one local bridge; LAN to LAN (when allowed);
//! then the drop policy, so containers and VMs cannot route around the tunnel.
//!
//! While a tunnel is connected, table `arp killswitch` (policy accept) drops ARP requests for the
//! tunnel's IPv4 addresses arriving on another interface, and ARP messages from those addresses
//! leaving by another interface (audit finding MLLVD-CR-24-03: Linux answers ARP for any local
//! address on every interface, so the LAN could learn the tunnel's address from the physical one).
//! These guards cover the tunnel's routable addresses; its link-local ones (169.254.0.0/16,
//! fe80::/10) identify nothing and may be the LAN's own as well.
//!
//! Tunnel-only users (issue 15): right after loopback, `output` sends every packet of their uids
//! (`meta skuid`) to chain `tunnel-only`, which lets out DNS to the tunnel's resolvers and anything
//! else through a connected tunnel, and rejects the rest. In states with no table of their own
//! (`off`, unlocked `disconnected`) they still get one: an `output` chain with policy accept that
//! holds only their jump, so they reach loopback and nothing else while everyone else is as free as
//! the administrator chose.
//!
//! Router LANs (issue 17, [`crate::router`]): scopes as well, first in forward (ahead of exec's),
//! with their own prerouting, `dstnat` and `srcnat` chains, an input accept and an output
//! allowance to the LAN's own networks; in states with no machine-wide table, the scopes-only
//! table carries them.
//!
//! Apps-only (`Settings::apps_only`): in every state the machine-wide table is replaced by that
//! scopes-only table ([`scopes_table`]), which receives the tunnel while it is connected: the
//! machine's own traffic is left alone, the scopes leave through the tunnel or not at all. The
//! endpoint hole needs no rule there (nothing but the scopes is refused, and the tunnel's own
//! program is not a scope).
//!
//! Output deliberately has no "established" rule: a flow that went through the tunnel stays in the
//! conntrack table after the tunnel drops, and an "established" accept would let its next packets out
//! of the physical interface. Each output rule admits packets for what they are, not for their history.

use crate::exceptions::{CT_MARK_INBOUND, Exceptions};
use crate::ranges;
use crate::ruleset::{
    ArpChain, ArpHook, ArpMatch, ArpOperation, ArpRule, ArpTable, BaseChain, Chain, ChainPolicy,
    CtStates, Hook, IpFamily, L4Proto, LOG_BURST, LOG_RATE_PER_SECOND, Match, RejectWith, Rule,
    Ruleset, Statement, Table, Verdict,
};
use crate::set::Set;
use ipnet::IpNet;
use killswitch_types::{
    BlockReason, Endpoints, Fwmark, InterfaceName, Settings, TransportProtocol,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The firewall-relevant part of the daemon's state: one variant per protection state, carrying what
/// that state's rules need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyState {
    /// No table at all.
    Off,
    /// No tunnel wanted: no table, unless lockdown is on (then as `Blocked`).
    Disconnected,
    /// A tunnel is wanted and not up: only the endpoint hole (and, for a tunnel the daemon runs,
    /// its probe into the tunnel).
    Connecting {
        /// The VPN server and who may reach it.
        peer: Peer,
        /// A probe the daemon sends into the tunnel to start and check the handshake.
        probe: Option<Probe>,
        /// The tunnel interface as it already exists, not carrying traffic yet (`up` configures
        /// its addresses before the handshake; a guarded interface may hold them while down). No
        /// traffic may use it, but its addresses are kept off every other interface as while
        /// connected: ARP and NDP for them, packets to and from them.
        pending: Option<Tunnel>,
    },
    /// The tunnel is up: traffic may use it.
    Connected {
        /// The VPN server and who may reach it.
        peer: Peer,
        /// The tunnel interface.
        tunnel: Tunnel,
    },
    /// Everything blocked (lockdown, or an error).
    Blocked,
}

/// What a state's rules (and routing layer) are made of.
pub(crate) struct Parts<'a> {
    /// The VPN server's hole, in every state with a tunnel.
    pub(crate) peer: Option<&'a Peer>,
    /// The tunnel traffic may use (connected).
    pub(crate) tunnel: Option<&'a Tunnel>,
    /// A tunnel interface that exists but carries no traffic yet (connecting).
    pub(crate) pending: Option<&'a Tunnel>,
    /// The daemon's probe into a tunnel not up yet.
    pub(crate) probe: Option<&'a Probe>,
}

impl PolicyState {
    /// The tunnel carrying traffic in this state: only a connected one (a pending tunnel, or one
    /// being probed, carries nothing yet).
    pub fn carrying_tunnel(&self) -> Option<&Tunnel> {
        match self {
            PolicyState::Connected { tunnel, .. } => Some(tunnel),
            _ => None,
        }
    }

    /// What this state's rules are made of; `None` when it has none at all (`off`, and
    /// `disconnected` without lockdown).
    pub(crate) fn parts(&self, settings: &Settings) -> Option<Parts<'_>> {
        let none = Parts {
            peer: None,
            tunnel: None,
            pending: None,
            probe: None,
        };
        match self {
            PolicyState::Off => None,
            PolicyState::Disconnected if !settings.lockdown => None,
            PolicyState::Disconnected | PolicyState::Blocked => Some(none),
            PolicyState::Connecting {
                peer,
                probe,
                pending,
            } => Some(Parts {
                peer: Some(peer),
                pending: pending.as_ref(),
                probe: probe.as_ref(),
                ..none
            }),
            PolicyState::Connected { peer, tunnel } => Some(Parts {
                peer: Some(peer),
                tunnel: Some(tunnel),
                ..none
            }),
        }
    }
}

/// The VPN servers, and what a packet must carry to reach them outside the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The servers' addresses, ports and protocols: one for a tunnel the daemon runs (its current
    /// server), any number the user named for a guarded one (an OpenVPN file's `remote`s).
    pub endpoints: Endpoints,
    /// Only packets with this fwmark may use the hole (the tunnel marks its own socket).
    pub mark: Option<Fwmark>,
    /// Only sockets owned by this uid may use the hole.
    pub uid: Option<u32>,
}

/// The daemon's own probe into a tunnel that is not up yet: one DNS query to the tunnel's
/// resolver, through the tunnel. WireGuard starts its handshake when it has a packet to send, and
/// everything else is blocked until the handshake: this is that packet. Into the tunnel, it is
/// never a leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The tunnel interface.
    pub interface: InterfaceName,
    /// The tunnel's resolver.
    pub resolver: IpAddr,
}

/// The tunnel interface as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Its name.
    pub interface: InterfaceName,
    /// Its addresses. IPv6 through the tunnel is allowed only when one of them is IPv6.
    pub addresses: Vec<IpAddr>,
    /// Resolvers reachable through it: the only DNS destinations allowed.
    pub dns: Vec<IpAddr>,
}

impl Tunnel {
    /// The address families the tunnel carries: those of its routable addresses. An IPv6
    /// link-local address (which a WireGuard or TUN interface gets by itself) does not make a tunnel
    /// carry IPv6: nothing beyond the link can be reached with it.
    pub fn carried_families(&self) -> Vec<IpFamily> {
        let mut families: Vec<IpFamily> = self
            .addresses
            .iter()
            .filter(|a| !is_link_local_v6(a))
            .map(|a| family_of(*a))
            .collect();
        families.sort();
        families.dedup();
        families
    }

    /// The resolvers DNS may go to: those of a family the tunnel carries. An IPv6 resolver behind
    /// an IPv4-only tunnel would be IPv6 that is not tunnelled (and unreachable anyway), so the
    /// rules admit none, and nothing should be told to use one.
    pub fn usable_dns(&self) -> Vec<IpAddr> {
        let families = self.carried_families();
        self.dns
            .iter()
            .copied()
            .filter(|s| families.contains(&family_of(*s)))
            .collect()
    }

    /// The addresses that would give the tunnel away if seen on another link, and that a probe
    /// from the LAN could aim at: all but link-local ones (169.254.0.0/16, fe80::/10). Those exist
    /// per link and mean nothing beyond it, and the LAN may well use the same one (a router's
    /// fe80::1): guarding them would cut this machine off from its LAN and protect nothing.
    fn identity_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .copied()
            .filter(|a| !is_link_local_v4(a) && !is_link_local_v6(a))
    }

    fn identity_ipv4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.identity_addresses().filter_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    fn identity_ipv6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.identity_addresses().filter_map(|a| match a {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
    }
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn is_link_local_v4(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
}

/// The priority of our base chains: `filter`. A packet must be accepted by every base chain on its
/// hook, so another table's accept cannot override our drop, whatever its priority.
pub(crate) const PRIORITY_FILTER: i32 = 0;

pub(crate) const DNS_PORTS: [u16; 2] = [53, 853];
pub(crate) const DNS_PROTOS: [L4Proto; 2] = [L4Proto::Udp, L4Proto::Tcp];
const LAN_FORWARD_CHAIN: &str = "lan-forward";

/// The networks `allow-lan` opens. By default every private, link-local and ULA range; an
/// administrator may narrow that to the subnets in use. However many there are, the rules look
/// them up in one set per family, so every packet costs the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lan {
    unicast: Vec<IpNet>,
}

impl Default for Lan {
    fn default() -> Self {
        Lan {
            unicast: ranges::LAN_UNICAST.to_vec(),
        }
    }
}

impl Lan {
    /// Only `subnets`, each of which must lie inside the private, link-local or ULA ranges:
    /// allow-lan never opens the internet. The error names the first one that does not.
    pub fn subnets(subnets: Vec<IpNet>) -> Result<Self, String> {
        if let Some(outside) = subnets.iter().find(|net| {
            !ranges::LAN_UNICAST
                .iter()
                .any(|lan| lan.contains(&net.network()) && lan.contains(&net.broadcast()))
        }) {
            return Err(format!(
                "{outside} is not inside a private, link-local or ULA range (allow-lan never opens \
                 the internet)"
            ));
        }
        Ok(Lan { unicast: subnets })
    }

    /// The allowed unicast networks.
    pub fn unicast(&self) -> &[IpNet] {
        &self.unicast
    }

    /// One set per family that has networks.
    fn sets(&self) -> Vec<Set> {
        [(LAN_SET_V4, IpFamily::V4), (LAN_SET_V6, IpFamily::V6)]
            .into_iter()
            .map(|(name, family)| Set::new(name, family, self.unicast.iter().copied()))
            .filter(|set| !set.is_empty())
            .collect()
    }
}

const LAN_SET_V4: &str = "lan4";
const LAN_SET_V6: &str = "lan6";

/// Compiles the rules for `state` under `settings`, with the default LAN (every private range).
pub fn compile(state: &PolicyState, settings: &Settings) -> Ruleset {
    compile_with(state, settings, &Lan::default())
}

/// Compiles the rules for `state` under `settings`, `lan` being what allow-lan opens.
pub fn compile_with(state: &PolicyState, settings: &Settings, lan: &Lan) -> Ruleset {
    compile_for(state, settings, &Exceptions::from(lan.clone()))
}

/// Compiles the rules for `state` under `settings`, with `exceptions`: what allow-lan opens, the
/// local bridges and the administrator's explicit allows.
pub fn compile_for(state: &PolicyState, settings: &Settings, exceptions: &Exceptions) -> Ruleset {
    if settings.apps_only {
        // The machine's own traffic is the administrator's to leave alone: only the scopes get
        // rules, and they get the tunnel while it carries traffic.
        let endpoints: Vec<IpAddr> = match state {
            PolicyState::Connected { peer, .. } | PolicyState::Connecting { peer, .. } => {
                peer.endpoints.iter().map(|e| e.address.ip()).collect()
            }
            _ => Vec::new(),
        };
        return scopes_table_for(exceptions, state.carrying_tunnel(), &endpoints);
    }
    let Some(Parts {
        peer,
        tunnel,
        pending,
        probe,
    }) = state.parts(settings)
    else {
        return scopes_table(exceptions, None);
    };
    // `tunnel`: the tunnel traffic may use; `identity`: the tunnel whose addresses are kept off
    // other interfaces (the same one, or one that exists but is not up yet).
    let identity = tunnel.or(pending);
    let sets = if settings.allow_lan {
        exceptions.lan.sets()
    } else {
        Vec::new()
    };
    let allow_lan = settings.allow_lan.then_some(sets.as_slice());

    // The exec namespaces' rules go first in each chain: they decide everything that comes from
    // or goes to `ksx*`, whatever else the state allows ([`crate::exec`]).
    let exec = !exceptions.exec_scopes.is_empty();
    let with_exec = |first: Vec<Rule>, rest: Vec<Rule>| {
        if exec {
            first.into_iter().chain(rest).collect()
        } else {
            rest
        }
    };
    // The router LANs' forward rules go before even exec's: they decide everything that comes
    // from or goes to a LAN interface ([`crate::router`]).
    let lans = &exceptions.router_lans;
    let endpoints: Vec<IpAddr> = peer
        .map(|p| p.endpoints.iter().map(|e| e.address.ip()).collect())
        .unwrap_or_default();
    let mut forward = crate::router::forward_rules(lans, tunnel, &endpoints);
    forward.extend(with_exec(
        crate::exec::forward_rules(tunnel),
        forward_rules(tunnel, allow_lan, exceptions),
    ));
    let mut chains = vec![
        base_chain(
            "input",
            Hook::Input,
            with_exec(
                crate::exec::input_rules(),
                input_rules(peer, tunnel, identity, allow_lan, exceptions),
            ),
        ),
        base_chain(
            "output",
            Hook::Output,
            with_exec(
                crate::exec::output_rules(),
                output_rules(peer, tunnel, identity, probe, allow_lan, exceptions),
            ),
        ),
        base_chain("forward", Hook::Forward, forward),
    ];
    if exec {
        chains.push(crate::exec::prerouting_chain(tunnel));
        chains.push(crate::exec::nat_chain(&exceptions.exec_scopes, tunnel));
    }
    if !lans.is_empty() {
        chains.extend(crate::router::chains(lans, tunnel));
    }
    if let Some(sets) = allow_lan {
        chains.push(Chain {
            name: LAN_FORWARD_CHAIN.to_owned(),
            base: None,
            rules: lan_destinations(sets, "lan to lan"),
        });
    }
    chains.extend(BlockReason::ALL.into_iter().map(refuse_chain));
    if !exceptions.tunnel_only_uids.is_empty() {
        chains.push(tunnel_only_chain(tunnel));
    }
    Ruleset {
        table: Some(Table {
            sets,
            chains,
            arp: identity.and_then(arp_table),
        }),
    }
}

/// The regular chain every packet of a tunnel-only user jumps to, from the top of `output`.
pub(crate) const TUNNEL_ONLY_CHAIN: &str = "tunnel-only";

/// `meta skuid N jump tunnel-only`, one per tunnel-only uid. The output hook sees the sending
/// socket whatever the socket did: bound to the physical interface (`SO_BINDTODEVICE`), an ICMP
/// ping socket, raw or not, so none of those is a way around it. Packets without a socket (the
/// kernel's own: TCP resets, ICMP errors) carry no uid and are not matched.
fn tunnel_only_jumps(uids: &[u32]) -> Vec<Rule> {
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    uids.into_iter()
        .map(|uid| {
            on().with(Match::SocketUid(uid)).verdict(
                Verdict::Jump(TUNNEL_ONLY_CHAIN.to_owned()),
                "tunnel-only user",
            )
        })
        .collect()
}

/// What a tunnel-only user may send (loopback having been accepted before the jump): DNS only to
/// the tunnel's resolvers through the tunnel, then anything through the tunnel for the families it
/// carries (so IPv6 only when tunnelled), then a reject (a TCP reset, or ICMP "administratively
/// prohibited"), so that their programs fail at once rather than hang. With no tunnel carrying
/// traffic (`connecting`, `blocked`, `disconnected`, `off`) only the rejects remain. No endpoint
/// hole: the tunnel's own program does not run as a tunnel-only user (if it did, its handshake
/// would be rejected too: that case is not supported).
fn tunnel_only_chain(tunnel: Option<&Tunnel>) -> Chain {
    let mut rules = Vec::new();
    if let Some(tunnel) = tunnel {
        // (Without a tunnel, the final rejects take DNS with everything else.)
        rules.extend(dns_rules(Some(tunnel)));
        rules.extend(tunnel_rules(
            tunnel,
            |b| b.oif(&tunnel.interface),
            "tunnel-only user through the tunnel",
        ));
    }
    // Refused as any packet leaving outside the tunnel is: counted, a sample logged with its uid
    // (`killswitch blocked` shows which confined user tried), and rejected so that it fails fast.
    rules.push(on().verdict(refuse(BlockReason::NonTunnel), "tunnel-only user"));
    Chain {
        name: TUNNEL_ONLY_CHAIN.to_owned(),
        base: None,
        rules,
    }
}

/// Whether anything is confined on its own (a scope), whatever the machine-wide state: the
/// tunnel-only users, `killswitch exec`'s namespaces and the router LANs.
fn has_scopes(exceptions: &Exceptions) -> bool {
    !exceptions.tunnel_only_uids.is_empty()
        || !exceptions.exec_scopes.is_empty()
        || !exceptions.router_lans.is_empty()
}

/// The scopes-only table: what is installed when the machine itself gets no kill switch, that is
/// in `off` and unlocked `disconnected`, and in every state with apps-only on. One `output` chain
/// sends the tunnel-only users' packets to their own chain and accepts everyone else's, because
/// here the administrator chose to leave the machine unprotected; the exec namespaces get their
/// input, forward, prerouting and `nat` chains ([`crate::exec`], the same rules as in the
/// machine-wide table). Every policy is accept for that reason: this table is a scope, not a kill
/// switch, and takes away only what belongs to the scopes.
///
/// `tunnel` is the tunnel carrying traffic, if any (only apps-only passes one: `connected`,
/// whether `up` runs the tunnel or `guard` watches it); the scopes may use it and its resolvers.
/// Without one they may use loopback only. `None` (no table at all) when there is no scope.
pub fn scopes_table(exceptions: &Exceptions, tunnel: Option<&Tunnel>) -> Ruleset {
    scopes_table_for(exceptions, tunnel, &[])
}

/// [`scopes_table`], `endpoints` being the VPN server's addresses where the state knows them
/// (apps-only while connecting or connected): the router LANs may not reach them
/// ([`crate::router`], port shadowing).
fn scopes_table_for(
    exceptions: &Exceptions,
    tunnel: Option<&Tunnel>,
    endpoints: &[IpAddr],
) -> Ruleset {
    if !has_scopes(exceptions) {
        return Ruleset { table: None };
    }
    let uids = &exceptions.tunnel_only_uids;
    let exec = !exceptions.exec_scopes.is_empty();
    let mut rules = vec![on().oif(&InterfaceName::loopback()).accept("loopback")];
    if exec {
        rules.extend(crate::exec::output_rules());
    }
    rules.extend(tunnel_only_jumps(uids));
    let output = Chain {
        name: "output".to_owned(),
        base: Some(BaseChain {
            hook: Hook::Output,
            priority: PRIORITY_FILTER,
            policy: ChainPolicy::Accept,
        }),
        rules,
    };
    let mut chains = vec![output];
    if exec {
        chains.extend(crate::exec::scopes_only_chains(
            &exceptions.exec_scopes,
            tunnel,
        ));
    }
    let lans = &exceptions.router_lans;
    if !lans.is_empty() {
        // The router LANs' forward rules ahead of exec's, in the one forward chain (policy
        // accept: only what comes from or goes to a LAN interface is taken away).
        let router_forward = crate::router::forward_rules(lans, tunnel, endpoints);
        match chains
            .iter_mut()
            .find(|c| c.base.is_some_and(|b| b.hook == Hook::Forward))
        {
            Some(forward) => {
                let exec_rules = std::mem::take(&mut forward.rules);
                forward.rules = router_forward.into_iter().chain(exec_rules).collect();
            }
            None => chains.push(Chain {
                name: "forward".to_owned(),
                base: Some(BaseChain {
                    hook: Hook::Forward,
                    priority: PRIORITY_FILTER,
                    policy: ChainPolicy::Accept,
                }),
                rules: router_forward,
            }),
        }
        chains.extend(crate::router::chains(lans, tunnel));
    }
    if !uids.is_empty() {
        chains.push(tunnel_only_chain(tunnel));
    }
    // The refusals the scopes' chains jump to: DNS outside the tunnel (named by the users' chain
    // only while a tunnel carries traffic, by the exec rules always), everything else, and for
    // exec the inbound drop; the router LANs' need all four.
    let mut refusals = Vec::new();
    if exec {
        refusals.extend(crate::exec::refuse_chains());
    } else {
        if tunnel.is_some() || !lans.is_empty() {
            refusals.push(refuse_chain(BlockReason::Dns));
        }
        refusals.push(refuse_chain(BlockReason::NonTunnel));
    }
    if !lans.is_empty() {
        for reason in crate::router::REFUSE_REASONS {
            let chain = refuse_chain(reason);
            if !refusals.iter().any(|c: &Chain| c.name == chain.name) {
                refusals.push(chain);
            }
        }
    }
    chains.extend(refusals);
    Ruleset {
        table: Some(Table {
            sets: Vec::new(),
            chains,
            arp: None,
        }),
    }
}

/// The output side of the exceptions: to local bridges and allowed interfaces, to allowed subnets
/// by their interface, and the replies of allowed inbound flows (their conntrack entry carries
/// [`CT_MARK_INBOUND`], set when their first packet arrived on that interface).
fn exceptions_out(exceptions: &Exceptions) -> Vec<Rule> {
    let mut rules = Vec::new();
    for link in &exceptions.local_bridges {
        rules.push(on().oif(&link.interface).accept("local bridge"));
    }
    for link in &exceptions.interfaces {
        rules.push(on().oif(&link.interface).accept("allowed interface"));
    }
    for allow in &exceptions.subnets {
        rules.push(
            on().oif(&allow.interface)
                .dst(allow.subnet)
                .accept("allowed subnet"),
        );
    }
    for allow in &exceptions.inbound {
        rules.push(
            on().oif(&allow.interface)
                .proto(l4(allow.protocol))
                .sport(allow.port)
                .with(Match::CtMarkBit(CT_MARK_INBOUND))
                .accept("replies of allowed inbound"),
        );
    }
    rules
}

/// The input side: from local bridges and allowed interfaces, from allowed subnets by their
/// interface, and the first packet of an allowed inbound flow (which marks the flow; its later
/// packets are replies to an allowed flow).
fn exceptions_in(exceptions: &Exceptions) -> Vec<Rule> {
    let mut rules = Vec::new();
    for link in &exceptions.local_bridges {
        rules.push(on().iif(&link.interface).accept("local bridge"));
    }
    for link in &exceptions.interfaces {
        rules.push(on().iif(&link.interface).accept("allowed interface"));
    }
    for allow in &exceptions.subnets {
        rules.push(
            on().iif(&allow.interface)
                .src(allow.subnet)
                .accept("allowed subnet"),
        );
    }
    for allow in &exceptions.inbound {
        rules.push(
            on().iif(&allow.interface)
                .proto(l4(allow.protocol))
                .dport(allow.port)
                .ct(CtStates::NEW)
                .set(Statement::SetCtMarkBit(CT_MARK_INBOUND))
                .accept("allowed inbound"),
        );
    }
    rules
}

/// Table `arp killswitch` for a connected tunnel, or none when the tunnel has no IPv4 address.
///
/// Linux answers an ARP request for any of its addresses on any interface (the "weak host"
/// model; `arp_ignore` 0), so without this a host on the LAN that asks "who has 10.64.0.2?" learns
/// that this machine holds the tunnel's address, and its physical MAC (MLLVD-CR-24-03). No `inet`
/// hook sees ARP. Input: requests for a tunnel address arriving on another interface are dropped
/// before the kernel can answer them. Output: any ARP message sent by another interface that names
/// a tunnel address as its sender (a reply, or a request for a neighbour made on behalf of a packet
/// from the tunnel's address) is dropped. The tunnel interface itself is exempt: a TAP tunnel
/// carries ARP for its own address. Everything else is accepted: ARP is how the LAN works.
fn arp_table(tunnel: &Tunnel) -> Option<ArpTable> {
    let addresses: Vec<Ipv4Addr> = tunnel.identity_ipv4().collect();
    if addresses.is_empty() {
        return None;
    }
    let rule = |matches: Vec<ArpMatch>| ArpRule {
        matches,
        verdict: Verdict::Drop,
        comment: "tunnel address only via the tunnel",
    };
    let input = addresses
        .iter()
        .map(|a| {
            rule(vec![
                ArpMatch::NotInInterface(tunnel.interface.clone()),
                ArpMatch::EthernetIpv4(Some(ArpOperation::Request)),
                ArpMatch::TargetIp(*a),
            ])
        })
        .collect();
    let output = addresses
        .iter()
        .map(|a| {
            rule(vec![
                ArpMatch::NotOutInterface(tunnel.interface.clone()),
                ArpMatch::EthernetIpv4(None),
                ArpMatch::SenderIp(*a),
            ])
        })
        .collect();
    let chain = |name: &str, hook, rules| ArpChain {
        name: name.to_owned(),
        hook,
        priority: PRIORITY_FILTER,
        policy: ChainPolicy::Accept,
        rules,
    };
    Some(ArpTable {
        chains: vec![
            chain("input", ArpHook::Input, input),
            chain("output", ArpHook::Output, output),
        ],
    })
}

fn base_chain(name: &str, hook: Hook, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_owned(),
        base: Some(BaseChain {
            hook,
            priority: PRIORITY_FILTER,
            policy: ChainPolicy::Drop,
        }),
        rules,
    }
}

fn output_rules(
    peer: Option<&Peer>,
    tunnel: Option<&Tunnel>,
    identity: Option<&Tunnel>,
    probe: Option<&Probe>,
    allow_lan: Option<&[Set]>,
    exceptions: &Exceptions,
) -> Vec<Rule> {
    let mut rules = vec![on().oif(&InterfaceName::loopback()).accept("loopback")];
    // Ahead of every hole and exception: a tunnel-only user's packets leave by the tunnel or not
    // at all, so none of them may reach the endpoint hole, DHCP or an allowed interface.
    rules.extend(tunnel_only_jumps(&exceptions.tunnel_only_uids));
    if let Some(tunnel) = identity {
        // Nothing from the tunnel's address leaves by another interface: such a packet would tell
        // the local network the address, and so that this machine is on the VPN.
        for address in tunnel.identity_addresses() {
            rules.push(
                on().not_oif(&tunnel.interface)
                    .src(host(address))
                    .set(Statement::Count(BlockReason::NonTunnel))
                    .verdict(Verdict::Drop, "tunnel address only via the tunnel"),
            );
        }
    }
    if let Some(peer) = peer {
        rules.extend(endpoint_holes(peer));
    }
    if let Some(probe) = probe {
        rules.push(
            on().oif(&probe.interface)
                .dst(host(probe.resolver))
                .proto(L4Proto::Udp)
                .dport(53)
                .accept("probe into the tunnel"),
        );
    }
    if let Some(tunnel) = identity {
        // Ahead of the NDP accepts: no neighbour advertisement for a tunnel address leaves by
        // another interface (the IPv6 side of MLLVD-CR-24-03, which a proxy NDP entry would open).
        rules.extend(neighbor_guard(tunnel, ND_NEIGHBOR_ADVERT, |b| {
            b.not_oif(&tunnel.interface)
        }));
    }
    // Bypassed programs: after the tunnel-only users (who stay confined) and the guards of the
    // tunnel's address, before DNS (a bypassed program's DNS goes where it sends it).
    rules.extend(exceptions.bypass.as_ref().map(crate::bypass::bypass_accept));
    rules.extend(link_bring_up_out());
    rules.extend(dns_rules(tunnel));
    if let Some(tunnel) = tunnel {
        rules.extend(tunnel_rules(
            tunnel,
            |b| b.oif(&tunnel.interface),
            "out through the tunnel",
        ));
    }
    rules.extend(crate::router::output_rules(&exceptions.router_lans));
    rules.extend(exceptions_out(exceptions));
    if let Some(sets) = allow_lan {
        rules.extend(lan_destinations(sets, "lan"));
    }
    rules.push(
        on().family(IpFamily::V6)
            .verdict(refuse(BlockReason::Ipv6), "ipv6 outside the tunnel"),
    );
    rules.push(on().verdict(refuse(BlockReason::NonTunnel), "outside the tunnel"));
    rules
}

fn input_rules(
    peer: Option<&Peer>,
    tunnel: Option<&Tunnel>,
    identity: Option<&Tunnel>,
    allow_lan: Option<&[Set]>,
    exceptions: &Exceptions,
) -> Vec<Rule> {
    let mut rules = vec![on().iif(&InterfaceName::loopback()).accept("loopback")];
    if let Some(tunnel) = identity {
        // CVE-2019-14899: an attacker on the local network sends packets addressed to the tunnel's
        // private IP into the physical interface to probe for (and inject into) tunnelled flows.
        // This must come before the "established" accept, which such probes would otherwise hit.
        for address in tunnel.identity_addresses() {
            rules.push(
                on().not_iif(&tunnel.interface)
                    .dst(host(address))
                    .set(Statement::Count(BlockReason::Inbound))
                    .verdict(Verdict::Drop, "tunnel address only via the tunnel"),
            );
        }
        // Neighbour solicitations for a tunnel address go to a multicast group, not to the
        // address, so the rule above does not see them. Linux itself answers them only on the
        // interface holding the address, but a proxy NDP entry (or an anycast address) would
        // answer on the LAN.
        rules.extend(neighbor_guard(tunnel, ND_NEIGHBOR_SOLICIT, |b| {
            b.not_iif(&tunnel.interface)
        }));
    }
    rules.push(
        on().ct(CtStates::ESTABLISHED_RELATED)
            .accept("replies to allowed flows"),
    );
    if let Some(peer) = peer {
        rules.extend(peer.endpoints.iter().map(|e| {
            on().src(host(e.address.ip()))
                .proto(l4(e.protocol))
                .sport(e.address.port())
                .accept("endpoint replies")
        }));
    }
    rules.extend(link_bring_up_in());
    if let Some(tunnel) = tunnel {
        rules.extend(tunnel_rules(
            tunnel,
            |b| b.iif(&tunnel.interface),
            "in through the tunnel",
        ));
    }
    rules.extend(crate::router::input_rules(&exceptions.router_lans));
    rules.extend(exceptions_in(exceptions));
    if let Some(sets) = allow_lan {
        rules.extend(sets.iter().map(|set| {
            on().family(set.family)
                .with(Match::SourceIn(set.name.clone(), set.family))
                .accept("lan")
        }));
    }
    // What the chain's policy would drop anyway, counted and sampled on its way.
    rules.push(on().verdict(refuse(BlockReason::Inbound), "nothing allows it"));
    rules
}

fn forward_rules(
    tunnel: Option<&Tunnel>,
    allow_lan: Option<&[Set]>,
    exceptions: &Exceptions,
) -> Vec<Rule> {
    let mut rules = dns_rules(tunnel);
    if let Some(tunnel) = tunnel {
        rules.extend(tunnel_rules(
            tunnel,
            |b| b.oif(&tunnel.interface),
            "forward into the tunnel",
        ));
        // Replies come back to whoever started the flow: a container, a VM or a LAN host behind
        // this one, all on private ranges. Limiting the destination to those ranges keeps this rule
        // from ever carrying a packet to a public address out of a non-tunnel interface.
        rules.extend(ranges::LAN_UNICAST.iter().map(|net| {
            on().iif(&tunnel.interface)
                .ct(CtStates::ESTABLISHED_RELATED)
                .dst(*net)
                .accept("forwarded replies from the tunnel")
        }));
    }
    // Between the hosts of one local bridge (containers of one network, with br_netfilter, whose
    // bridged packets pass this hook with the bridge as both interfaces). Not between bridges:
    // Docker keeps its networks apart, and that is its decision to loosen, not ours.
    rules.extend(exceptions.local_bridges.iter().map(|link| {
        on().iif(&link.interface)
            .oif(&link.interface)
            .accept("within a local bridge")
    }));
    if let Some(sets) = allow_lan {
        rules.extend(sets.iter().map(|set| {
            on().family(set.family)
                .with(Match::SourceIn(set.name.clone(), set.family))
                .verdict(Verdict::Jump(LAN_FORWARD_CHAIN.to_owned()), "lan to lan")
        }));
    }
    // What the chain's policy would drop anyway, counted (not logged: forwarded packets have
    // no local sender to name).
    rules.push(
        on().family(IpFamily::V6)
            .set(Statement::Count(BlockReason::Ipv6))
            .verdict(Verdict::Drop, "forwarded ipv6 outside the tunnel"),
    );
    rules.push(
        on().set(Statement::Count(BlockReason::NonTunnel))
            .verdict(Verdict::Drop, "forwarded outside the tunnel"),
    );
    rules
}

/// The only ways out of the physical interface while blocked: to exactly each endpoint's address,
/// port and protocol (one rule each, so that a server's port never opens for another server's
/// address), and, when the tunnel says how to recognise its own socket, only for that socket's
/// packets. Anything else to the same servers falls through to the final reject.
fn endpoint_holes(peer: &Peer) -> impl Iterator<Item = Rule> + '_ {
    peer.endpoints.iter().map(|e| endpoint_hole(peer, e))
}

fn endpoint_hole(peer: &Peer, e: &killswitch_types::Endpoint) -> Rule {
    let mut b = on()
        .dst(host(e.address.ip()))
        .proto(l4(e.protocol))
        .dport(e.address.port());
    if let Some(mark) = peer.mark {
        b = b.with(Match::Mark(mark.get()));
    }
    if let Some(uid) = peer.uid {
        b = b.with(Match::SocketUid(uid));
    }
    b.accept("endpoint hole")
}

/// DNS only to the tunnel's resolvers and only through the tunnel; every other DNS packet rejected,
/// whatever the destination (LAN included, even with allow-lan: a LAN resolver answers for the
/// local network's ISP, and queries to it reveal what the user looks up).
fn dns_rules(tunnel: Option<&Tunnel>) -> Vec<Rule> {
    let mut rules = Vec::new();
    if let Some(tunnel) = tunnel {
        for server in tunnel.usable_dns() {
            for proto in DNS_PROTOS {
                for port in DNS_PORTS {
                    rules.push(
                        on().oif(&tunnel.interface)
                            .dst(host(server))
                            .proto(proto)
                            .dport(port)
                            .accept("dns to the tunnel's resolver"),
                    );
                }
            }
        }
    }
    for proto in DNS_PROTOS {
        for port in DNS_PORTS {
            rules.push(
                on().proto(proto)
                    .dport(port)
                    .verdict(refuse(BlockReason::Dns), "dns outside the tunnel"),
            );
        }
    }
    rules
}

/// The name of the regular chain that refuses packets for `reason` ([`refuse_chain`]).
fn refuse_chain_name(reason: BlockReason) -> String {
    format!("refuse-{reason}")
}

/// The verdict that refuses a packet for `reason`: a jump to its [`refuse_chain`], which always
/// decides, so the jump is as final as the reject or drop it stands for.
pub(crate) fn refuse(reason: BlockReason) -> Verdict {
    Verdict::Jump(refuse_chain_name(reason))
}

/// The regular chain every packet refused for `reason` goes through: a rule that logs a few of
/// them a second to the daemon (headers only), then the reject (a TCP reset for TCP, ICMP
/// "administratively prohibited" otherwise, so that applications fail fast), or for inbound
/// packets the silent drop the input chain's policy would give, each counted in the reason's
/// named counter. One chain per reason keeps the rules that pick the packets as cheap as a plain
/// reject, and puts the log's rate limit where it cannot let a packet through: a limit that is
/// exceeded only skips the logging rule, which has no verdict.
pub(crate) fn refuse_chain(reason: BlockReason) -> Chain {
    let mut rules = vec![
        on().with(Match::Limit {
            per_second: LOG_RATE_PER_SECOND,
            burst: LOG_BURST,
        })
        .set(Statement::Log(reason))
        .verdict(Verdict::Continue, "a sample for the daemon"),
    ];
    let count = Statement::Count(reason);
    if reason == BlockReason::Inbound {
        rules.push(on().set(count).verdict(Verdict::Drop, "refused"));
    } else {
        rules.push(
            on().proto(L4Proto::Tcp)
                .set(count)
                .verdict(Verdict::Reject(RejectWith::TcpReset), "fail fast"),
        );
        rules.push(
            on().set(count)
                .verdict(Verdict::Reject(RejectWith::AdminProhibited), "fail fast"),
        );
    }
    Chain {
        name: refuse_chain_name(reason),
        base: None,
        rules,
    }
}

/// Everything through the tunnel, for the address families the tunnel carries. A tunnel without an
/// IPv6 address gets no IPv6 rule, so IPv6 cannot slip out of a v4-only tunnel's interface either.
fn tunnel_rules(
    tunnel: &Tunnel,
    direction: impl Fn(RuleBuilder) -> RuleBuilder,
    comment: &'static str,
) -> Vec<Rule> {
    let families = tunnel.carried_families();
    match families.as_slice() {
        [] => Vec::new(),
        [only] => vec![direction(on().family(*only)).accept(comment)],
        _ => vec![direction(on()).accept(comment)],
    }
}

/// The LAN's hosts (looked up in its sets) and its multicast and broadcast groups.
fn lan_destinations(sets: &[Set], comment: &'static str) -> Vec<Rule> {
    let hosts = sets.iter().map(|set| {
        on().family(set.family)
            .with(Match::DestinationIn(set.name.clone(), set.family))
            .accept(comment)
    });
    let groups = ranges::LAN_GROUP
        .iter()
        .map(|net| on().dst(*net).accept(comment));
    hosts.chain(groups).collect()
}

/// Drops neighbour discovery messages of type `kind` (solicitation or advertisement) whose target
/// is one of the tunnel's IPv6 addresses, where `direction` says (not via the tunnel).
fn neighbor_guard(
    tunnel: &Tunnel,
    kind: u8,
    direction: impl Fn(RuleBuilder) -> RuleBuilder,
) -> Vec<Rule> {
    tunnel
        .identity_ipv6()
        .map(|address| {
            direction(on())
                .family(IpFamily::V6)
                .proto(L4Proto::Icmpv6)
                .with(Match::Icmpv6Type(kind))
                .with(Match::NdTarget(address))
                .verdict(Verdict::Drop, "tunnel address only via the tunnel")
        })
        .collect()
}

/// DHCP and the neighbour-discovery messages a link needs to come up, none of which can be carried
/// past the first router:
///
/// - DHCPv4 to the limited broadcast, which routers do not forward;
/// - DHCPv4 unicast (a renewal, RFC 2131 4.4.5) to a private address, with the TTL forced to 1: a
///   server on the link receives it, a router drops it. A renewal to a server behind a relay agent
///   therefore fails, and the client rebinds by broadcast at T2, which the relay forwards;
/// - DHCPv6 to All_DHCP_Relay_Agents_and_Servers (ff02::1:2), link-scoped multicast;
/// - NDP with hop limit 255 (which receivers require, RFC 4861) to link-scoped destinations only.
fn link_bring_up_out() -> Vec<Rule> {
    let dhcpv4 = |dst: IpNet| on().dst(dst).proto(L4Proto::Udp).sport(68).dport(67);
    let mut rules = vec![dhcpv4(ranges::DHCPV4_BROADCAST).accept("dhcpv4")];
    rules.extend(ranges::DHCPV4_UNICAST_SERVERS.iter().map(|net| {
        dhcpv4(*net)
            .set(Statement::SetTtl(1))
            .accept("dhcpv4 renewal, on the link only")
    }));
    rules.push(
        on().dst(ranges::DHCPV6_SERVERS)
            .proto(L4Proto::Udp)
            .sport(546)
            .dport(547)
            .accept("dhcpv6"),
    );
    let ndp = [
        (ND_ROUTER_SOLICIT, ranges::ALL_ROUTERS_V6),
        (ND_NEIGHBOR_SOLICIT, ranges::SOLICITED_NODE_V6),
        (ND_NEIGHBOR_SOLICIT, ranges::LINK_LOCAL_V6),
        (ND_NEIGHBOR_ADVERT, ranges::ALL_NODES_V6),
        (ND_NEIGHBOR_ADVERT, ranges::LINK_LOCAL_V6),
    ];
    rules.extend(ndp.into_iter().map(|(ty, dst)| {
        on().dst(dst)
            .with(Match::HopLimit(255))
            .proto(L4Proto::Icmpv6)
            .with(Match::Icmpv6Type(ty))
            .accept("ndp")
    }));
    rules
}

fn link_bring_up_in() -> Vec<Rule> {
    let mut rules = vec![
        on().family(IpFamily::V4)
            .proto(L4Proto::Udp)
            .sport(67)
            .dport(68)
            .accept("dhcpv4"),
        on().src(ranges::LINK_LOCAL_V6)
            .proto(L4Proto::Udp)
            .sport(547)
            .dport(546)
            .accept("dhcpv6"),
    ];
    rules.extend(
        [ND_ROUTER_ADVERT, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT].map(|ty| {
            on().family(IpFamily::V6)
                .with(Match::HopLimit(255))
                .proto(L4Proto::Icmpv6)
                .with(Match::Icmpv6Type(ty))
                .accept("ndp")
        }),
    );
    rules
}

const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

fn l4(protocol: TransportProtocol) -> L4Proto {
    match protocol {
        TransportProtocol::Udp => L4Proto::Udp,
        TransportProtocol::Tcp => L4Proto::Tcp,
    }
}

fn family_of(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

pub(crate) fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Builds a rule's matches in kernel order, adding the `meta nfproto` / `meta l4proto` match that a
/// payload match needs when the caller has not already given it.
#[derive(Debug, Default)]
pub(crate) struct RuleBuilder {
    matches: Vec<Match>,
    statements: Vec<Statement>,
}

pub(crate) fn on() -> RuleBuilder {
    RuleBuilder::default()
}

impl RuleBuilder {
    pub(crate) fn with(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }

    pub(crate) fn family(self, family: IpFamily) -> Self {
        if self.matches.contains(&Match::Family(family)) {
            self
        } else {
            self.with(Match::Family(family))
        }
    }

    pub(crate) fn iif(self, name: &InterfaceName) -> Self {
        self.with(Match::InInterface(name.clone()))
    }

    pub(crate) fn not_iif(self, name: &InterfaceName) -> Self {
        self.with(Match::NotInInterface(name.clone()))
    }

    pub(crate) fn oif(self, name: &InterfaceName) -> Self {
        self.with(Match::OutInterface(name.clone()))
    }

    pub(crate) fn not_oif(self, name: &InterfaceName) -> Self {
        self.with(Match::NotOutInterface(name.clone()))
    }

    pub(crate) fn set(mut self, statement: Statement) -> Self {
        self.statements.push(statement);
        self
    }

    pub(crate) fn src(self, net: IpNet) -> Self {
        self.family(IpFamily::of(&net)).with(Match::Source(net))
    }

    pub(crate) fn dst(self, net: IpNet) -> Self {
        self.family(IpFamily::of(&net))
            .with(Match::Destination(net))
    }

    pub(crate) fn proto(self, proto: L4Proto) -> Self {
        self.with(Match::Protocol(proto))
    }

    pub(crate) fn sport(self, port: u16) -> Self {
        self.with(Match::SourcePort(port))
    }

    pub(crate) fn dport(self, port: u16) -> Self {
        self.with(Match::DestinationPort(port))
    }

    pub(crate) fn ct(self, states: CtStates) -> Self {
        self.with(Match::ConnState(states))
    }

    pub(crate) fn accept(self, comment: &'static str) -> Rule {
        self.verdict(Verdict::Accept, comment)
    }

    pub(crate) fn verdict(self, verdict: Verdict, comment: &'static str) -> Rule {
        Rule {
            matches: self.matches,
            statements: self.statements,
            verdict,
            comment,
        }
    }
}
