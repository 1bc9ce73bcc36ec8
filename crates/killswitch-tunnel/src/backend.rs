//! The backend trait, and the one point where kernel or userspace WireGuard is chosen.

use crate::TunnelError;
use crate::config::TunnelConfig;
use crate::kernel::Kernel;
use crate::uapi::PeerStats;
use crate::userspace::Userspace;
use serde::{Deserialize, Serialize};

/// Which WireGuard implementation runs a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The kernel's WireGuard (generic netlink).
    Kernel,
    /// boringtun, embedded in the daemon.
    Userspace,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Kernel => "kernel",
            BackendKind::Userspace => "userspace",
        })
    }
}

/// A WireGuard device: configured with one peer, asked for that peer's statistics, removed on drop.
pub trait Backend: std::fmt::Debug + Send {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;
    /// The interface's name.
    fn interface(&self) -> &str;
    /// The interface's index, as it was when the device created it. A device acts only on this
    /// index: an interface that someone else later creates under the same name is not its own.
    fn index(&self) -> u32;
    /// Sets the key, port and fwmark, makes `config`'s peer the only one, and gives the interface
    /// exactly `config`'s addresses and MTU (bringing it up). Every server has its own tunnel
    /// addresses, so reconfiguring for another server must not leave the old ones behind.
    fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError>;
    /// The peer's statistics, if it has one.
    fn stats(&self) -> Result<Option<PeerStats>, TunnelError>;
    /// Whether its interface is still its own and up (the kernel's answer by default).
    fn presence(&self) -> crate::netdev::Presence {
        crate::netdev::presence(self.interface(), self.index())
    }
}

/// Creates interface `name`: kernel WireGuard if this kernel has it, else boringtun. The caller
/// decides what may happen to an existing interface of that name (see the daemon's `devices`):
/// creating fails rather than reuse or remove it.
pub fn create(name: &str) -> Result<Box<dyn Backend>, TunnelError> {
    if let Some(kernel) = Kernel::create(name)? {
        return Ok(Box::new(kernel));
    }
    Ok(Box::new(Userspace::create(name)?))
}
