//! The userspace backend: boringtun's WireGuard, embedded in the daemon, configured over a private
//! UAPI channel. Used when the kernel has no WireGuard.
//!
//! The device gets one end of a socket pair as its UAPI connection (boringtun's `uapi_fd`) instead
//! of creating `/var/run/wireguard/<name>.sock`. That has three consequences the daemon relies on:
//! - no path shared with other processes or network namespaces (two daemons in two namespaces
//!   with the same interface name do not collide, and no other process can reconfigure the
//!   device);
//! - boringtun installs its SIGINT/SIGTERM handlers only for the socket variant, and it does so
//!   by blocking those signals (`sigprocmask`) in the calling thread and reading them from a
//!   `signalfd`: in the daemon's single-threaded event loop that left SIGTERM blocked for good;
//! - closing our end makes the device's threads exit.

use crate::backend::{Backend, BackendKind};
use crate::config::TunnelConfig;
use crate::uapi::{Channel, PeerStats};
use crate::{TunnelError, netdev};
use boringtun::device::{DeviceConfig, DeviceHandle};
use std::os::fd::{AsRawFd, IntoRawFd};

/// An embedded boringtun device. Dropping it ends its threads, which closes the TUN device and so
/// removes the interface.
pub struct Userspace {
    interface: String,
    index: u32,
    channel: Channel,
    // Declared last: dropped after the channel, whose closing already tells the threads to end.
    handle: DeviceHandle,
}

impl std::fmt::Debug for Userspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Userspace({}, index {})", self.interface, self.index)
    }
}

impl Userspace {
    /// Creates the TUN interface `name` and the device behind it. The caller has made sure that
    /// no interface of that name exists (an existing TUN device would be attached to, not
    /// created).
    pub fn create(name: &str) -> Result<Self, TunnelError> {
        let backend = |what: &str, e: &dyn std::fmt::Debug| {
            TunnelError::Backend(format!("boringtun: {what}: {e:?}"))
        };
        let (channel, theirs) =
            Channel::pair(name).map_err(|e| backend("creating the UAPI channel", &e))?;
        let socket_inode = inode_of(theirs.as_raw_fd());
        let fd = theirs.into_raw_fd();
        let config = DeviceConfig {
            // Two cores is what this runs on in the lab and CI; more threads buy nothing there.
            n_threads: 2,
            // A connected socket per peer follows the route at connect time; a roaming client
            // (new network, new source address) needs the unconnected one.
            use_connected_socket: false,
            use_multi_queue: false,
            uapi_fd: fd,
        };
        let handle = match DeviceHandle::new(name, config) {
            Ok(handle) => handle,
            Err(e) => {
                // boringtun takes the descriptor over once it registers it, and closes it when it
                // fails after that; before (no TUN device, say) it is still ours to close. Tell the
                // two apart by what the number refers to now, never closing someone else's file.
                close_if_still(fd, socket_inode);
                return Err(backend("creating the device", &e));
            }
        };
        let index = netdev::index(name)
            .ok_or_else(|| TunnelError::Backend(format!("{name} vanished after creation")))?;
        Ok(Userspace {
            interface: name.to_owned(),
            index,
            channel,
            handle,
        })
    }

    /// Fails unless the interface is still the one this device created (same name, same index).
    fn check_present(&self) -> Result<(), TunnelError> {
        match netdev::index(&self.interface) {
            Some(index) if index == self.index => Ok(()),
            _ => Err(TunnelError::Gone(self.interface.clone())),
        }
    }
}

/// The inode a descriptor number refers to, if it is open.
fn inode_of(fd: i32) -> Option<u64> {
    // SAFETY: fstat only writes the struct it is given; an invalid number yields EBADF.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstat(fd, &mut stat) };
    (rc == 0).then_some(stat.st_ino)
}

/// Closes `fd` if it still refers to the socket with inode `inode`.
fn close_if_still(fd: i32, inode: Option<u64>) {
    if inode.is_some() && inode_of(fd) == inode {
        // SAFETY: the descriptor is ours (boringtun never took it) and nothing else holds it.
        unsafe { libc::close(fd) };
    }
}

impl Backend for Userspace {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    fn index(&self) -> u32 {
        self.index
    }

    fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError> {
        self.check_present()?;
        self.channel
            .configure(config, fwmark)
            .map_err(TunnelError::Uapi)?;
        netdev::configure(self.index, &config.addresses, config.mtu)
    }

    fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
        self.check_present()?;
        Ok(self
            .channel
            .stats()
            .map_err(TunnelError::Uapi)?
            .into_iter()
            .next())
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        // The handle's own drop stops the device; make sure the interface is gone right away
        // rather than whenever the threads notice. Only ours: the index it was created with, and
        // only while it still has that name.
        if netdev::index(&self.interface) == Some(self.index) {
            let _ = netdev::delete(self.index);
        }
        let _ = &self.handle;
    }
}
