//! killswitchd: the privileged daemon that owns the kill switch.
//!
//! - [`core`]: the state machine, the only place that decides when the firewall changes;
//! - [`firewall`]: the backend trait and its nftables implementation;
//! - [`links`]: what the daemon sees of the tunnel interface, and link-change notifications;
//! - [`devices`]: which interfaces the daemon created, the only ones it may remove or reuse;
//! - [`discover`]: `guard IFACE` completed from the interface (WireGuard peers and fwmark, DNS);
//! - [`manager`] and [`target`]: `killswitch up`'s WireGuard connection manager, and what the user
//!   asked for;
//! - [`ipc`], [`admission`] and [`authz`]: the Unix socket server, how many connections each peer
//!   may hold, and who may change what;
//! - [`store`] and [`config`]: persisted settings and the administrator's configuration;
//! - [`instance`]: one daemon per state directory and per network namespace;
//! - [`notify`]: telling systemd (or the lab) that protection is in place;
//! - [`logging`]: the log's style (journal priorities, plain text, or colours on a terminal);
//! - [`boot`]: `--early-boot`, blocking from the saved settings before the network comes up;
//! - [`teardown`]: `--teardown`, switching the kill switch off for good (package removal);
//! - [`bypass`] and [`bpf`]: `killswitch exec --bypass`: the bypass cgroup, its socket-marking BPF
//!   program, and the watch that keeps the rules on the cgroup's current id;
//! - [`freeze`]: freeze on drop, the programs frozen (or killed) while the tunnel is lost;
//! - [`verify`]: `killswitch verify`'s reading of the kernel, compared with the daemon's intent;
//! - [`run`]: the event loop that wires them together;
//! - [`args`]: the command line (here, not in `main.rs`, so that the man page is made from it).

pub mod admission;
pub mod apps_only;
pub mod args;
pub mod authz;
pub mod blocked;
pub mod boot;
pub mod bpf;
pub mod bypass;
pub mod cgroup;
pub mod config;
pub mod core;
pub mod devices;
pub mod discover;
pub mod dns;
pub mod exec;
pub mod firewall;
pub mod freeze;
pub mod handshake;
pub mod instance;
pub mod ipc;
pub mod links;
pub mod locals;
pub mod logging;
pub mod manager;
pub mod notify;
pub mod router;
pub mod run;
pub mod sim;
pub mod sleep;
pub mod store;
pub mod target;
pub mod teardown;
pub mod users;
pub mod verify;
