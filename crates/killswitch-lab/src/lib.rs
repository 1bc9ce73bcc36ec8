//! The leak lab: a sandboxed network in which the kill switch is tested with real packets.
//!
//! Everything here happens inside network namespaces that the lab creates and removes (on drop,
//! after a panic too). Nothing touches the namespace the lab is started from.
//!
//! - [`lab`]: one complete lab (topology, tunnel, sinks, daemon, capture) and measurement windows.
//! - [`netns`]: named network namespaces, commands and closures run inside them, and the
//!   root/CI checks shared by every test that needs the kernel.
//! - [`binaries`], [`daemon`], [`process`]: the project's binaries, run and awaited in a namespace.
//! - [`cgroups`]: cgroup v2 mounted for daemons run in a namespace.
//! - [`capture`]: an AF_PACKET capture on one interface, with in-order draining.
//! - [`oracle`]: which frames on the physical link are the tunnel, link bring-up, or a leak.
//! - [`packet`]: parsing captured frames into addresses, ports and payloads.
//! - [`topology`]: the client and net namespaces and the addresses of the lab's network.
//! - [`report`] and [`host`]: the report, and the proof that the starting namespace is untouched.
//! - [`model`]: level 2 of the model-based tester: random sequences of user and world steps
//!   against the real daemon, checked against `killswitch-model` after every step.
//! - [`scenarios`]: the leak scenarios, each a script over a fresh lab, and their checks.
//! - [`sinks`]: the target host's UDP/TCP sinks and the DNS resolvers, recording arrivals.
//! - [`generator`]: a paced stream of UDP, TCP, ICMP, DNS and IPv6 traffic from the client.
//! - [`traffic`]: probes that name themselves in their payload.
//! - [`vm`]: the VM lab: the packaged kill switch on a real Debian guest (systemd, kernel WireGuard,
//!   reboots, suspend, upgrade, removal), judged by a capture outside the guest.
//! - [`wireguard`]: a real WireGuard tunnel (two `wireguard-go` processes) from client to net.

pub mod binaries;
pub mod bus;
pub mod capture;
pub mod cgroups;
pub mod daemon;
pub mod generator;
pub mod host;
pub mod lab;
pub mod leftovers;
pub mod model;
pub mod netns;
pub mod openvpn;
pub mod oracle;
pub mod packet;
pub mod process;
pub mod report;
pub mod scenarios;
pub mod sinks;
pub mod topology;
pub mod traffic;
pub mod vm;
pub mod wireguard;
