//! Router mode (issue 17): this machine is the gateway of one or more LANs, and their clients'
//! forwarded traffic leaves through the tunnel or not at all, in every state.
//!
//! (Rules to come: see the router-policy branch.)

/// The bit of the conntrack mark set on every flow that arrived from a router LAN interface, so
/// that the daemon can remove those flows' conntrack entries (and their NAT bindings) when the
/// tunnel or its endpoint changes, and no LAN flow sticks to a path it can no longer take. One
/// bit, set with a read-modify-write, beside [`crate::CT_MARK_INBOUND`].
pub const CT_MARK_ROUTER: u32 = 0x0400_0000;
