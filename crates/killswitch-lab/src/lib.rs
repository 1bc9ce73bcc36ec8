//! The leak lab: a sandboxed network in which the kill switch is tested with real packets.
//!
//! Everything here happens inside network namespaces that the lab creates and removes (on drop,
//! after a panic too). Nothing touches the namespace the lab is started from.
//!
//! - [`netns`]: named network namespaces, commands and closures run inside them, and the
//!   root/CI checks shared by every test that needs the kernel.
//! - [`binaries`], [`daemon`], [`process`]: the project's binaries, run and awaited in a namespace.
//! - [`capture`]: an AF_PACKET capture on one interface, with in-order draining.
//! - [`packet`]: parsing captured frames into addresses, ports and payloads.
//! - [`topology`]: the client and net namespaces and the addresses of the lab's network.
//! - [`traffic`]: probes that name themselves in their payload.
//! - [`wireguard`]: a real WireGuard tunnel (two `wireguard-go` processes) from client to net.

pub mod binaries;
pub mod capture;
pub mod daemon;
pub mod netns;
pub mod packet;
pub mod process;
pub mod topology;
pub mod traffic;
pub mod wireguard;
