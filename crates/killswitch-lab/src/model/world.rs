//! The world of level 2: one lab (client and net namespaces, the guarded WireGuard tunnel, up to
//! three `up` servers, the sinks and a capture), built once per run and put back into the same
//! starting state before every sequence, plus the world's steps carried out for real.
//!
//! The client namespace is also a gateway, should a sequence make it one (`router add lan0`): its
//! `lan0` is a veth to a namespace of its own holding one LAN client, on a private /24. The
//! client namespace's IPv4 forwarding stays off but for what the daemon switches on for lan0.
//!
//! Building the lab costs seconds (namespaces, `wireguard-go` processes, keys); resetting it costs
//! a daemon start. What this module does not own: what must hold after a step (the model's
//! [`killswitch_model::Model`]) and how a step's outcome is judged (see `sequence` and `leaks`).

use crate::daemon::{Daemon, DaemonHome, nft_table, teardown};
use crate::lab::{Lab, hold};
use crate::netns::Netns;
use crate::topology::{self, LAN_IFACE, PHYS};
use crate::wireguard;
use anyhow::{Context, Result};
use killswitch_model::Topology;
use killswitch_model::judge::TunnelEnd;
use killswitch_model::step::MAX_SERVERS;
use killswitch_types::InterfaceName;
use nix::sys::signal::Signal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The daemon's health bound in the lab: the smallest `dead_after_seconds` allows, so that a dead
/// server is noticed (and the sequence can go on) in about a second rather than three.
pub const DEAD_AFTER_SECONDS: f64 = 1.0;

/// The second network `NewAddress` moves the client to (and back from, on the next one).
const ROAMED_ROUTER_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 1);
const ROAMED_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 2);

/// The router LAN interface of the client namespace (`router add` names it), the gateway's
/// address on it, and the LAN client behind it.
pub const ROUTER_LAN: &str = "lan0";
const ROUTER_LAN_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const ROUTER_LAN_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);

/// How long the machine stays "asleep" in a `Suspend` step, daemon and VPN client frozen.
const ASLEEP: Duration = Duration::from_millis(500);

/// A model second of `TimePasses` in real time. The daemon's health bound is shortened to 1 s (see
/// [`DEAD_AFTER_SECONDS`]), so a tenth of a second per model second still lets a bound pass in the
/// longest steps, without spending up to 30 s of the CI budget on one step.
const MODEL_SECOND: Duration = Duration::from_millis(100);

/// The table the lab uses in the *net* namespace to make a server stop answering. It is in the
/// servers' namespace, never the client's: the daemon under test must not see it.
const BLOCK_TABLE: &str = "ksmodel";

/// The lab world of the model-based tester.
#[derive(Debug)]
pub struct World {
    /// The lab: namespaces, guarded tunnel, `up` servers, sinks, capture, and the daemon.
    pub lab: Lab,
    /// The same world as the model's judge sees it.
    pub topology: Topology,
    /// The daemon's files for the current sequence (fresh settings and state every sequence).
    pub home: DaemonHome,
    /// The `up` configuration files, in failover order (one per server).
    pub configs: Vec<PathBuf>,
    /// A configuration the daemon must refuse (a bad request).
    pub bad_config: PathBuf,
    /// What the user's resolv.conf says (what the daemon must leave or give back).
    pub user_resolv_conf: String,
    /// The LAN client behind the client namespace's router LAN interface.
    pub lan_client: Netns,
    blocked: [bool; MAX_SERVERS],
    impostor: bool,
    roamed: bool,
    rewrites: u32,
}

/// The resolv.conf a DHCP client on the lab's LAN writes.
fn initial_resolv_conf() -> String {
    format!("nameserver {}\n", topology::ROUTER_V4)
}

impl World {
    /// Builds the lab with `servers` (1 to 3) `up` servers. Slow (seconds); done once per run.
    pub fn build(servers: usize) -> Result<Self> {
        let servers = servers.clamp(1, MAX_SERVERS);
        let mut lab = Lab::new("model", crate::generator::DEFAULT_RATE)?;
        // Lab::new starts a daemon for its scenarios; every sequence here starts its own.
        if let Some(mut daemon) = lab.daemon.take() {
            daemon.process().kill()?;
        }
        teardown(&lab.topo.client, &lab.home)?.ok()?;
        // The net namespace runs processes through `ip netns exec` too; give it a resolver file
        // of its own so that nothing there could read (or a bug write) the machine's.
        lab.topo
            .net
            .set_resolv_conf(&format!("nameserver {}\n", topology::PUBLIC_DNS_V4))?;
        // The router of the second network (`NewAddress`), on the same link.
        lab.topo.net.ip(&[
            "addr",
            "add",
            &format!("{ROAMED_ROUTER_V4}/24"),
            "dev",
            LAN_IFACE,
        ])?;
        // Servers are told apart by a table in their own namespace that drops what reaches them.
        lab.topo
            .net
            .exec("nft", &["add", "table", "inet", BLOCK_TABLE])?;
        lab.topo.net.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                BLOCK_TABLE,
                "input",
                "{ type filter hook input priority -10; policy accept; }",
            ],
        )?;
        let count = u8::try_from(servers).context("server count")?;
        lab.start_up_servers(count)?;
        let configs: Vec<PathBuf> = lab.up_servers.iter().map(|(_, p)| p.clone()).collect();
        let bad_config = lab.home.path().join("bad.conf");
        // A private key that is not a key: the daemon must refuse the whole request.
        std::fs::write(
            &bad_config,
            "[Interface]\nPrivateKey = not-a-key\nAddress = 10.99.0.2/32\n\n[Peer]\nPublicKey = not-a-key-either\nEndpoint = 198.51.100.9:51820\nAllowedIPs = 0.0.0.0/0\n",
        )?;
        std::fs::set_permissions(
            &bad_config,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let lan_client = Netns::new("model-lan")?;
        crate::netns::veth(&lab.topo.client, ROUTER_LAN, &lan_client, "eth0")?;
        lab.topo.client.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_LAN_GATEWAY_V4}/24"),
            "dev",
            ROUTER_LAN,
        ])?;
        lab.topo.client.ip(&["link", "set", ROUTER_LAN, "up"])?;
        lan_client.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_LAN_CLIENT_V4}/24"),
            "dev",
            "eth0",
        ])?;
        lan_client.ip(&["link", "set", "eth0", "up"])?;
        lan_client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_LAN_GATEWAY_V4.to_string(),
        ])?;
        lan_client.set_resolv_conf(&format!("nameserver {ROUTER_LAN_GATEWAY_V4}\n"))?;
        let topology = model_topology(&lab)?;
        let home = DaemonHome::new()?;
        Ok(World {
            lab,
            topology,
            home,
            configs,
            bad_config,
            user_resolv_conf: initial_resolv_conf(),
            lan_client,
            blocked: [false; MAX_SERVERS],
            impostor: false,
            roamed: false,
            rewrites: 0,
        })
    }

    /// How many `up` servers this world has.
    pub fn servers(&self) -> usize {
        self.configs.len()
    }

    /// The client namespace.
    pub fn client(&self) -> &Netns {
        &self.lab.topo.client
    }

    /// The running daemon.
    pub fn daemon(&self) -> Result<&Daemon> {
        self.lab.daemon()
    }

    /// Puts the world back into the model's starting state (every server answering, the guarded
    /// tunnel up, no impostor, the first network, the user's resolv.conf, no kill switch rules)
    /// and starts a daemon with fresh settings. Everything a previous sequence may have left is
    /// removed by force, so that a replay while shrinking sees exactly what the first run saw.
    pub fn reset(&mut self) -> Result<()> {
        if let Some(mut daemon) = self.lab.daemon.take() {
            daemon.process().kill()?;
        }
        // Whatever the previous sequence's daemon left (a crash mid-step): teardown first, as an
        // administrator would; then by hand, in case teardown itself is what broke.
        let _ = teardown(self.client(), &self.home);
        self.force_clean()?;
        if self.impostor {
            self.impostor_gone()?;
        }
        self.blocked = [false; MAX_SERVERS];
        self.apply_blocks()?;
        if self.roamed {
            self.move_to(false)?;
        }
        self.restore_link()?;
        // A fresh install has no router LAN: lan0 forwards nothing until the daemon says so.
        self.client().exec(
            "sysctl",
            &[
                "-q",
                "-w",
                &format!("net.ipv4.conf.{ROUTER_LAN}.forwarding=0"),
            ],
        )?;
        if self.lab.tunnel.client.is_none() {
            self.lab.tunnel.start_client(&self.lab.topo)?;
        }
        self.user_resolv_conf = initial_resolv_conf();
        std::fs::write(self.client().resolv_conf_path(), &self.user_resolv_conf)
            .context("writing the client's resolv.conf")?;
        self.home = DaemonHome::new()?;
        std::fs::write(
            self.home.config(),
            format!(
                "# The model-based tester's daemon: a short health bound, DNS through the file.\n\
                 dead_after_seconds = {DEAD_AFTER_SECONDS:.1}\ndns = \"resolv-conf\"\n"
            ),
        )?;
        self.lab.daemon = Some(Daemon::start(&self.lab.topo.client, &self.home)?);
        Ok(())
    }

    /// Removes the kill switch's tables, routing rules and `up` interface from the client
    /// namespace, whoever left them.
    fn force_clean(&self) -> Result<()> {
        let client = self.client();
        let tables = client.exec("nft", &["list", "tables"])?;
        for family in ["inet", "arp"] {
            if tables
                .lines()
                .any(|l| l.trim() == format!("table {family} killswitch"))
            {
                client.exec("nft", &["delete", "table", family, "killswitch"])?;
            }
        }
        for family in ["-4", "-6"] {
            for pref in killswitch_rule_prefs(client, family)? {
                client.ip(&[family, "rule", "del", "pref", &pref.to_string()])?;
            }
        }
        let up = self.topology.up_interface.as_str();
        if link_exists(client, up)? {
            client.ip(&["link", "del", up])?;
        }
        Ok(())
    }

    /// Whether the client namespace is free of the kill switch: no table, no rule at its
    /// priorities. `Err` names what is left.
    pub fn clean(&self) -> Result<std::result::Result<(), String>> {
        let mut left = Vec::new();
        if let Some(table) = nft_table(self.client())? {
            left.push(format!(
                "table inet killswitch ({} lines)",
                table.lines().count()
            ));
        }
        for family in ["-4", "-6"] {
            let prefs = killswitch_rule_prefs(self.client(), family)?;
            if !prefs.is_empty() {
                left.push(format!("ip {family} rules at priorities {prefs:?}"));
            }
        }
        Ok(if left.is_empty() {
            Ok(())
        } else {
            Err(left.join(", "))
        })
    }

    /// The guarded tunnel's VPN client dies (its interface goes with it); someone deletes the
    /// daemon's `up` device if there is one.
    pub fn tunnel_gone(&mut self) -> Result<()> {
        self.lab.tunnel.kill_client()?;
        let up = self.topology.up_interface.as_str();
        if link_exists(self.client(), up)? {
            // The daemon may remove it at the same moment; either way it is gone.
            let _ = self.client().ip(&["link", "del", up]);
        }
        Ok(())
    }

    /// The guarded tunnel's VPN client starts again.
    pub fn tunnel_back(&mut self) -> Result<()> {
        self.lab.tunnel.start_client(&self.lab.topo)
    }

    /// `up` server `n` (0-based) stops answering, or answers again. Servers beyond this world's
    /// are not there to block (the runner clamps the steps that name them).
    pub fn server_answers(&mut self, n: usize, answers: bool) -> Result<()> {
        if let Some(slot) = self.blocked.get_mut(n) {
            *slot = !answers;
        }
        self.apply_blocks()
    }

    fn apply_blocks(&self) -> Result<()> {
        let net = &self.lab.topo.net;
        net.exec("nft", &["flush", "chain", "inet", BLOCK_TABLE, "input"])?;
        for (n, (server, _)) in self.lab.up_servers.iter().enumerate() {
            if self.blocked.get(n).copied().unwrap_or(false) {
                net.exec(
                    "nft",
                    &[
                        "add",
                        "rule",
                        "inet",
                        BLOCK_TABLE,
                        "input",
                        "ip",
                        "daddr",
                        &server.endpoint.ip().to_string(),
                        "udp",
                        "dport",
                        &server.endpoint.port().to_string(),
                        "drop",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// The physical link goes down and comes back, as when a cable is pulled and plugged in.
    pub fn link_flap(&self) -> Result<()> {
        self.client().ip(&["link", "set", PHYS, "down"])?;
        self.restore_link()
    }

    /// Brings the physical link up with the addresses and routes the network gives it (a DHCP
    /// client's and router advertisements' job; the kernel drops routes and IPv6 addresses with
    /// the link).
    fn restore_link(&self) -> Result<()> {
        let client = self.client();
        client.ip(&["link", "set", PHYS, "up"])?;
        let router = if self.roamed {
            ROAMED_ROUTER_V4
        } else {
            topology::ROUTER_V4
        };
        client.ip(&["route", "replace", "default", "via", &router.to_string()])?;
        client.ip(&[
            "-6",
            "addr",
            "replace",
            &format!("{}/64", topology::CLIENT_V6),
            "dev",
            PHYS,
            "nodad",
        ])?;
        client.ip(&[
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &topology::ROUTER_V6.to_string(),
        ])?;
        Ok(())
    }

    /// The client roams to the other network (a new address and gateway), and the guarded VPN
    /// client notices, as a VPN client does.
    pub fn new_address(&mut self) -> Result<()> {
        let roam = !self.roamed;
        self.move_to(roam)
    }

    fn move_to(&mut self, roamed: bool) -> Result<()> {
        let (router, address) = if roamed {
            (ROAMED_ROUTER_V4, ROAMED_CLIENT_V4)
        } else {
            (topology::ROUTER_V4, topology::CLIENT_V4)
        };
        let client = self.client();
        client.ip(&["-4", "addr", "flush", "dev", PHYS])?;
        client.ip(&["addr", "add", &format!("{address}/24"), "dev", PHYS])?;
        client.ip(&["route", "replace", "default", "via", &router.to_string()])?;
        self.roamed = roamed;
        if self.lab.tunnel.client.is_some() {
            self.lab.tunnel.reannounce_endpoint(&self.lab.topo)?;
        }
        Ok(())
    }

    /// A DHCP client rewrites resolv.conf in place (the only way onto the namespace's bind mount),
    /// naming the LAN's resolver: from now on that is the user's resolver configuration.
    pub fn rewrite_resolv_conf(&mut self) -> Result<()> {
        self.rewrites += 1;
        self.user_resolv_conf = format!(
            "# written by a DHCP client ({})\nsearch corp.example\nnameserver {}\n",
            self.rewrites,
            topology::ROUTER_V4
        );
        std::fs::write(self.client().resolv_conf_path(), &self.user_resolv_conf)
            .context("rewriting the client's resolv.conf")
    }

    /// What applications in the client namespace read as /etc/resolv.conf.
    pub fn resolv_conf(&self) -> Result<String> {
        let path = self.client().resolv_conf_path();
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Another program flushes the whole ruleset (a firewall service starting).
    pub fn foreign_flush(&self) -> Result<()> {
        // Refused (owned tables) or done: both are allowed outcomes, the checks judge the rest.
        let _ = self.client().exec("nft", &["flush", "ruleset"]);
        Ok(())
    }

    /// Another program deletes one of the routing layer's rules (the catch-all first, the one
    /// whose absence would let packets take the main table's default route).
    pub fn delete_rule(&self) -> Result<()> {
        let prefs = killswitch_rule_prefs(self.client(), "-4")?;
        if let Some(pref) = prefs.iter().max() {
            // The daemon may repair it between the listing and this; fine either way.
            let _ = self
                .client()
                .ip(&["-4", "rule", "del", "pref", &pref.to_string()]);
        }
        Ok(())
    }

    /// A veth takes the guarded tunnel's name, up and with the tunnel's address: what a naive
    /// kill switch would take for the tunnel.
    pub fn impostor(&mut self) -> Result<()> {
        let name = self.topology.guard_interface.as_str();
        let peer = format!("{name}p");
        let client = self.client();
        client.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{}/24", wireguard::CLIENT_TUNNEL_V4),
            "dev",
            name,
        ])?;
        client.ip(&["link", "set", &peer, "up"])?;
        client.ip(&["link", "set", name, "up"])?;
        self.impostor = true;
        Ok(())
    }

    /// The impostor veth goes away.
    pub fn impostor_gone(&mut self) -> Result<()> {
        let name = self.topology.guard_interface.as_str();
        if link_exists(self.client(), name)? {
            self.client().ip(&["link", "del", name])?;
        }
        self.impostor = false;
        Ok(())
    }

    /// `seconds` model seconds pass (see [`MODEL_SECOND`]).
    pub fn time_passes(&self, seconds: u8) {
        hold(MODEL_SECOND * u32::from(seconds));
    }

    /// The machine sleeps and wakes: the daemon and the VPN client are frozen (nothing in user
    /// space runs while asleep) while the link goes down and comes back.
    pub fn suspend(&mut self) -> Result<()> {
        let mut pids = Vec::new();
        if let Some(daemon) = self.lab.daemon.as_mut() {
            pids.push(daemon.process().pid());
        }
        if let Some(device) = self.lab.tunnel.client.as_mut() {
            pids.push(device.process().pid());
        }
        let signal = |pid: u32, signal| {
            let pid = i32::try_from(pid).context("pid out of range")?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
                .with_context(|| format!("sending {signal} to {pid}"))
        };
        for pid in &pids {
            signal(*pid, Signal::SIGSTOP)?;
        }
        // Wake whatever happens next: a frozen daemon must not outlive a failed step.
        let asleep = (|| {
            self.client().ip(&["link", "set", PHYS, "down"])?;
            hold(ASLEEP);
            self.restore_link()
        })();
        for pid in pids.iter().rev() {
            signal(*pid, Signal::SIGCONT)?;
        }
        asleep
    }
}

/// The priorities of the kill switch's routing rules present in `ns` for `family` ("-4"/"-6").
/// The numbers are the daemon's documented layout (ARCHITECTURE.md, `killswitch-policy::routes`),
/// written here rather than imported: the lab does not take the judged code's word for them.
fn killswitch_rule_prefs(ns: &Netns, family: &str) -> Result<Vec<u32>> {
    const PREFS: [u32; 3] = [5300, 5301, 5302];
    let listed = ns.ip(&[family, "rule", "show"])?;
    let mut found: Vec<u32> = listed
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
        .filter(|p| PREFS.contains(p))
        .collect();
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

fn link_exists(ns: &Netns, name: &str) -> Result<bool> {
    Ok(ns.ip(&["-o", "link", "show"])?.lines().any(|l| {
        l.split(':')
            .nth(1)
            .map(str::trim)
            .and_then(|n| n.split('@').next())
            == Some(name)
    }))
}

/// The model's picture of this lab: the same addresses the judge and the checks use.
fn model_topology(lab: &Lab) -> Result<Topology> {
    let name = |n: &str| InterfaceName::new(n).with_context(|| format!("interface name {n:?}"));
    let servers = lab
        .up_servers
        .iter()
        .map(|(server, _)| TunnelEnd {
            endpoint: server.endpoint,
            // The daemon's `up` marks its socket with wg-quick's default mark, as the lab's own
            // VPN client does.
            mark: wireguard::FWMARK,
            address: server.client_ip,
            dns: server.tunnel_ip,
        })
        .collect();
    Ok(Topology {
        physical: name(PHYS)?,
        host: topology::CLIENT_V4,
        host_v6: topology::CLIENT_V6,
        internet: topology::TARGET_V4,
        internet_v6: topology::TARGET_V6,
        lan: topology::ROUTER_V4,
        foreign_resolver: topology::PUBLIC_DNS_V4,
        guard_interface: name(lab.tunnel.client_interface())?,
        guard: TunnelEnd {
            endpoint: lab.tunnel.endpoint(),
            mark: wireguard::FWMARK,
            address: wireguard::CLIENT_TUNNEL_V4,
            dns: wireguard::SERVER_TUNNEL_V4,
        },
        up_interface: name(&lab.up_interface())?,
        servers,
        router_lan: name(ROUTER_LAN)?,
        router_client: ROUTER_LAN_CLIENT_V4,
    })
}

/// Where traffic must come from to count as "through the tunnel" of the model's index `index`.
pub fn tunnel_source(topo: &Topology, index: usize) -> Option<IpAddr> {
    topo.end(index).map(|end| IpAddr::V4(end.address))
}

/// Every endpoint of a model index list (the guarded tunnel's or `up` servers').
pub fn endpoints(topo: &Topology, indices: &[usize]) -> Vec<SocketAddr> {
    indices
        .iter()
        .filter_map(|i| topo.end(*i).map(|e| e.endpoint))
        .collect()
}
