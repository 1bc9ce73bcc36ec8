//! The shared vocabulary of killswitch.
//!
//! This crate owns the plain data that the daemon, the CLI, the policy engine and the lab all speak:
//! interface names, VPN endpoints, firewall marks, the user's settings, the five protection states and
//! the versioned IPC messages that travel over the daemon's Unix socket.
//!
//! It does no I/O and holds no logic beyond parsing and validating its own values, so every crate can
//! depend on it, including the unprivileged CLI, which must never link code that can touch the firewall.

#![forbid(unsafe_code)]

pub mod allow;
pub mod blocked;
/// The product's release, shared by every crate of the workspace (`version.workspace = true`):
/// what `killswitch --version` and `killswitchd --version` print, and what the daemon reports in
/// its status. One constant, so that no binary prints its crate's name or version instead.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

mod endpoint;
mod iface;
pub mod ipc;
mod mark;
mod state;

pub use allow::{AllowEntry, Allows, InboundAllow, SubnetAllow};
pub use blocked::{BlockReason, BlockedPacket, BlockedStatus, Count};
pub use endpoint::{
    Endpoint, EndpointParseError, Endpoints, EndpointsError, MAX_ENDPOINTS, TransportProtocol,
};
pub use iface::{InterfaceName, InterfaceNameError, MAX_INTERFACE_NAME_LEN};
pub use mark::{Fwmark, FwmarkParseError};
pub use state::{
    FailureCause, GuardQuery, GuardSpec, GuardSpecError, Handshake, MAX_DNS_SERVERS, ManagedTunnel,
    OnDrop, ServerFailure, Settings, State, TunnelStatus,
};
