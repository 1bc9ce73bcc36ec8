//! The policy engine: what each protection state allows, as plain data.
//!
//! [`compile`] turns a [`PolicyState`] and the user's [`Settings`] into a [`Ruleset`]: one nftables
//! table of chains and rules, described as enums of matches and verdicts (and, while a tunnel is
//! connected, a small `arp` table beside it). Nothing here talks to the
//! kernel, reads a clock or a file: the same inputs always give the same rules. That is what lets
//! the rules be unit-tested, snapshot-tested and property-tested without root, and what lets a
//! backend (nftables today) be a thin translation of this data.
//!
//! [`Ruleset::verdict`] evaluates a [`Packet`] against a ruleset the way the kernel would (and
//! [`Ruleset::arp_verdict`] an [`ArpPacket`]). Tests use
//! it to state properties such as "no DNS query leaves outside the tunnel" over random packets.
//!
//! [`routes::compile_routes`] describes the second, independent layer: policy routing that sends
//! everything but the tunnel's own packets into the tunnel or nowhere, even without nftables.
//!
//! What this crate does not own: when to change state (the daemon's state machine), how rules reach
//! the kernel (`killswitch-nft`), and the tunnel itself.

#![forbid(unsafe_code)]

pub mod bypass;
mod compile;
mod evaluate;
pub mod exceptions;
pub mod exec;
pub mod ranges;
pub mod router;
pub mod routes;
mod ruleset;
mod set;

pub use bypass::{BYPASS_MARK, BypassScope};
pub use compile::{
    Lan, Peer, PolicyState, Probe, Tunnel, compile, compile_for, compile_with, scopes_table,
};
pub use evaluate::{ArpPacket, ConnState, Decision, Packet, Transport, Verdict as PacketVerdict};
pub use exceptions::{CT_MARK_INBOUND, Exceptions, LocalLink, check_allows};
pub use exec::{EXEC_INTERFACE_PREFIX, ExecScope};
pub use killswitch_types::Settings;
pub use router::CT_MARK_ROUTER;
pub use ruleset::{
    AddressType, ArpChain, ArpHook, ArpMatch, ArpOperation, ArpRule, ArpTable, BaseChain, Chain,
    ChainPolicy, CtStates, Hook, IpFamily, L4Proto, LOG_BURST, LOG_RATE_PER_SECOND, LOG_SNAPLEN,
    MalformedRule, Match, NFLOG_GROUP, RejectWith, Rule, Ruleset, Statement, TABLE_NAME, Table,
    Verdict, counter_name, log_prefix, reason_of_counter,
};
pub use set::Set;
