//! WireGuard for killswitch: what `killswitch up` brings up.
//!
//! - [`config`]: wg-quick style files, parsed strictly, errors naming file, line and key;
//! - [`key`]: keys, secrets zeroed and redacted;
//! - [`uapi`]: the userspace configuration protocol (set the device, read its peer's statistics);
//! - [`handshake`]: the last handshake of a WireGuard interface found by name;
//! - [`health`]: a pure tracker deciding when a tunnel is dead;
//! - [`backend`]: kernel ([`kernel`]) or userspace ([`userspace`], embedded boringtun) WireGuard
//!   behind one trait, chosen at run time; [`netdev`] gives the interface its addresses.

pub mod backend;
pub mod config;
pub mod handshake;
pub mod health;
pub mod kernel;
pub mod key;
pub mod netdev;
pub mod uapi;
pub mod userspace;

/// Why a tunnel could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// An rtnetlink request failed.
    #[error("setting up the interface failed")]
    Netlink(#[source] killswitch_route::RouteError),
    /// The userspace device refused or could not be reached.
    #[error("configuring the userspace device failed")]
    Uapi(#[source] uapi::UapiError),
    /// The interface went away under the device (someone deleted it).
    #[error("interface {0} disappeared")]
    Gone(String),
    /// The backend failed otherwise.
    #[error("{0}")]
    Backend(String),
}
