//! The userspace backend: boringtun's WireGuard, embedded in the daemon, configured over its UAPI
//! socket. Used when the kernel has no WireGuard.

use crate::backend::{Backend, BackendKind};
use crate::config::TunnelConfig;
use crate::uapi::{self, PeerStats};
use crate::{TunnelError, netdev};
use boringtun::device::{DeviceConfig, DeviceHandle};

/// An embedded boringtun device. Dropping it ends its threads, which closes the TUN device and so
/// removes the interface.
pub struct Userspace {
    interface: String,
    handle: DeviceHandle,
}

impl std::fmt::Debug for Userspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Userspace({})", self.interface)
    }
}

impl Userspace {
    /// Creates the TUN interface `name` and the device behind it.
    pub fn create(name: &str) -> Result<Self, TunnelError> {
        let config = DeviceConfig {
            // Two cores is what this runs on in the lab and CI; more threads buy nothing there.
            n_threads: 2,
            // A connected socket per peer follows the route at connect time; a roaming client
            // (new network, new source address) needs the unconnected one.
            use_connected_socket: false,
            use_multi_queue: false,
            uapi_fd: -1,
        };
        let handle = DeviceHandle::new(name, config)
            .map_err(|e| TunnelError::Backend(format!("boringtun: {e:?}")))?;
        Ok(Userspace {
            interface: name.to_owned(),
            handle,
        })
    }
}

impl Backend for Userspace {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError> {
        uapi::configure(&uapi::socket_path(&self.interface), config, fwmark)
            .map_err(TunnelError::Uapi)?;
        let index = netdev::index(&self.interface)
            .ok_or_else(|| TunnelError::Gone(self.interface.clone()))?;
        netdev::configure(index, &config.addresses, config.mtu)
    }

    fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
        Ok(uapi::stats(&uapi::socket_path(&self.interface))
            .map_err(TunnelError::Uapi)?
            .into_iter()
            .next())
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        // The handle's own drop stops the device; make sure the interface is gone right away
        // rather than whenever the threads notice.
        if let Some(index) = netdev::index(&self.interface) {
            let _ = netdev::delete(index);
        }
        let _ = &self.handle;
    }
}
