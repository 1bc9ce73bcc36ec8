//! `killswitch guard IFACE`: completing a guard request from what the interface itself says.
//!
//! The CLI sends a [`GuardQuery`]: the interface and whatever the user gave (servers, DNS, mark,
//! uid). The IPC server completes it here, before anything reaches the state machine, which only
//! ever sees a whole [`GuardSpec`]: the core stays free of I/O, and discovery runs in the
//! privileged daemon, so a member of the admin group who is not root can still use it (a
//! WireGuard device's UAPI socket is root's alone).
//!
//! Two halves: [`look`] reads the system (the device over its UAPI socket or, for kernel
//! WireGuard, generic netlink; the fwmarks other policy rules use; systemd-resolved's servers for
//! the link), and [`plan`], pure, decides from that and the query: the spec, the mark to set on a
//! device that has none, and one sentence per thing found or done, which the CLI prints.
//! [`complete`] does both and sets the mark.
//!
//! What is given always wins; discovery fills only the gaps. What it does not do: read an
//! OpenVPN file (the CLI does, with the user's permissions, and sends its `remote`s as
//! endpoints), resolve host names (the CLI again), or ask OpenVPN's management interface.

use killswitch_tunnel::uapi::DeviceInfo;
use killswitch_types::{
    Endpoint, Endpoints, Fwmark, GuardQuery, GuardSpec, MAX_DNS_SERVERS, TransportProtocol,
};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The mark set on a WireGuard device that has none: wg-quick's (51820), which readers of `wg`
/// and `ip rule` output recognise. Skipped for the next of [`MARK_CANDIDATES`] when another
/// policy rule already selects on it (wg-quick's own rules for another interface, say): the
/// device's packets would then follow that rule.
pub const DEFAULT_FWMARK: u32 = 0xca6c;

/// The marks tried in turn for a device without one.
const MARK_CANDIDATES: [u32; 4] = [DEFAULT_FWMARK, 0xca6d, 0xca6e, 0xca6f];

/// Where systemd-resolved keeps each link's settings, by interface index.
const RESOLVED_NETIF: &str = "/run/systemd/resolve/netif";

/// What the system says about the interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Whether the interface exists in the daemon's namespace.
    pub exists: bool,
    /// The WireGuard device behind it, and how it was reached; `None`: not WireGuard.
    pub wireguard: Option<(WireguardAccess, DeviceInfo)>,
    /// The fwmarks other programs' policy rules select on.
    pub marks_in_rules: Vec<u32>,
    /// systemd-resolved's DNS servers for the link; `None`: resolved has none for it (or does
    /// not run).
    pub resolved_dns: Option<Vec<IpAddr>>,
    /// The `DNS =` addresses of the interface's wg-quick file in the daemon's WireGuard directory
    /// (`/etc/wireguard/wg0.conf`) and that file's path; `None`: no such file, or no address in it.
    pub wg_quick_dns: Option<(Vec<IpAddr>, std::path::PathBuf)>,
}

/// How the daemon talks to a WireGuard device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireguardAccess {
    /// A userspace implementation (wireguard-go, boringtun) over its UAPI socket.
    Userspace,
    /// Kernel WireGuard over generic netlink.
    Kernel,
}

/// The completed request, and what to do before it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to guard.
    pub spec: GuardSpec,
    /// A mark to set on the device first (it had none).
    pub set_mark: Option<(WireguardAccess, u32)>,
    /// One sentence per thing found or done, for the user.
    pub notes: Vec<String>,
}

/// Why a guard request cannot be completed: each says what to pass instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// No server given and the interface is not WireGuard.
    #[error(
        "{interface} {what}, so its VPN servers cannot be found: pass --endpoint IP:PORT[/PROTO] (repeatable) or, for OpenVPN, --ovpn FILE"
    )]
    NotWireguard {
        /// The interface.
        interface: String,
        /// What it is instead.
        what: &'static str,
    },
    /// A WireGuard device none of whose peers has an endpoint.
    #[error(
        "none of {interface}'s {peers} WireGuard peer(s) has an endpoint (they wait to be contacted): pass --endpoint IP:PORT"
    )]
    NoEndpoint {
        /// The interface.
        interface: String,
        /// How many peers it has.
        peers: usize,
    },
    /// The servers found cannot be a hole (too many, none usable).
    #[error("{interface}'s peers: {reason}; pass --endpoint for the servers to allow")]
    BadEndpoints {
        /// The interface.
        interface: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The device could not be read or changed.
    #[error("{0}")]
    Device(String),
}

/// Decides the spec from the query and the findings. Pure: the same inputs, the same plan.
pub fn plan(query: &GuardQuery, found: &Findings) -> Result<Plan, DiscoverError> {
    let name = query.interface.as_str();
    let mut notes = Vec::new();
    let device = found.wireguard.as_ref();
    let endpoints = if query.endpoints.is_empty() {
        let Some((_, info)) = device else {
            return Err(DiscoverError::NotWireguard {
                interface: name.to_owned(),
                what: if found.exists {
                    "is not a WireGuard interface (no UAPI socket, no kernel WireGuard device)"
                } else {
                    "does not exist (yet)"
                },
            });
        };
        wireguard_endpoints(name, info, &mut notes)?
    } else {
        Endpoints::new(query.endpoints.clone()).map_err(|e| DiscoverError::BadEndpoints {
            interface: name.to_owned(),
            reason: e.to_string(),
        })?
    };
    let mut set_mark = None;
    let mark = match (query.mark, device) {
        (Some(given), Some((_, info))) => {
            if info.fwmark != Some(given.get()) {
                notes.push(format!(
                    "{name}'s fwmark is {}, not the --mark {given} given: its packets will not use the hole until `wg set {name} fwmark {given}`",
                    info.fwmark.map_or("unset".to_owned(), |m| format!("{m:#x}"))
                ));
            }
            Some(given)
        }
        (Some(given), None) => Some(given),
        (None, Some((access, info))) => match info.fwmark.and_then(Fwmark::new) {
            Some(own) => {
                notes.push(format!(
                    "fwmark {own}: {name}'s own; only its packets use the hole"
                ));
                Some(own)
            }
            None => {
                let chosen = MARK_CANDIDATES
                    .into_iter()
                    .find(|m| !found.marks_in_rules.contains(m))
                    .unwrap_or(DEFAULT_FWMARK);
                set_mark = Some((*access, chosen));
                let taken = if chosen == DEFAULT_FWMARK {
                    String::new()
                } else {
                    format!(" ({DEFAULT_FWMARK:#x} is used by another routing rule)")
                };
                notes.push(format!(
                    "{name} had no fwmark; set {chosen:#x}{taken} so that only its own packets use the hole"
                ));
                Fwmark::new(chosen)
            }
        },
        (None, None) => {
            if query.uid.is_none() {
                notes.push(format!(
                    "no fwmark for {name}: any program may reach the servers' exact address and port outside the tunnel; pass --mark N (OpenVPN: its `mark N`) or --uid N to narrow the hole"
                ));
            }
            None
        }
    };
    let usable = |servers: &[IpAddr]| -> Vec<IpAddr> {
        servers
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
            .take(MAX_DNS_SERVERS)
            .collect()
    };
    // systemd-resolved's servers for the link first: they are what the system uses now. A
    // wg-quick file's `DNS =` is what wg-quick handed to resolvconf(8) where resolved does not run.
    let dns = match (&query.dns, &found.resolved_dns, &found.wg_quick_dns) {
        (Some(given), _, _) => given.clone(),
        (None, Some(servers), _) if !usable(servers).is_empty() => {
            let servers = usable(servers);
            notes.push(format!(
                "DNS: {} (systemd-resolved's servers for {name})",
                join(&servers)
            ));
            servers
        }
        (None, _, Some((servers, file))) if !usable(servers).is_empty() => {
            let servers = usable(servers);
            notes.push(format!(
                "DNS: {} (the `DNS =` of {}, as wg-quick sets it)",
                join(&servers),
                file.display()
            ));
            servers
        }
        _ => {
            notes.push(format!(
                "no DNS server known for {name} (neither systemd-resolved nor a wg-quick file names one): DNS is blocked; pass --dns IP for the tunnel's resolver"
            ));
            Vec::new()
        }
    };
    Ok(Plan {
        spec: GuardSpec {
            interface: query.interface.clone(),
            endpoints,
            dns,
            mark,
            uid: query.uid,
        },
        set_mark,
        notes,
    })
}

/// The endpoints of a WireGuard device's peers (UDP), skipping those without one.
fn wireguard_endpoints(
    name: &str,
    info: &DeviceInfo,
    notes: &mut Vec<String>,
) -> Result<Endpoints, DiscoverError> {
    let mut list: Vec<Endpoint> = Vec::new();
    let mut unusable = Vec::new();
    for address in &info.endpoints {
        match udp(*address) {
            Some(e) if !list.contains(&e) => list.push(e),
            Some(_) => {}
            None => unusable.push(address.to_string()),
        }
    }
    if list.is_empty() && unusable.is_empty() {
        return Err(DiscoverError::NoEndpoint {
            interface: name.to_owned(),
            peers: info.peers,
        });
    }
    if !unusable.is_empty() {
        notes.push(format!(
            "skipped {}: not an address a VPN server can have",
            unusable.join(", ")
        ));
    }
    let without = info.peers.saturating_sub(info.endpoints.len());
    let skipped = if without > 0 {
        format!(" ({without} peer(s) without an endpoint skipped)")
    } else {
        String::new()
    };
    let endpoints = Endpoints::new(list).map_err(|e| DiscoverError::BadEndpoints {
        interface: name.to_owned(),
        reason: e.to_string(),
    })?;
    notes.push(format!(
        "endpoints from {name}'s WireGuard peers: {endpoints}{skipped}"
    ));
    Ok(endpoints)
}

/// A WireGuard peer's endpoint (always UDP), if it can be one.
fn udp(address: SocketAddr) -> Option<Endpoint> {
    // Through the parser: the same checks as a user's --endpoint (no loopback, no port 0 ...).
    format!("{address}/{}", TransportProtocol::Udp).parse().ok()
}

fn join(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The DNS servers in a systemd-resolved link file (`SERVERS=10.64.0.1 [fd00::1]:53%3#name`):
/// the addresses, without port, interface or server name. `None` when the file sets none.
pub fn resolved_servers(file: &str) -> Option<Vec<IpAddr>> {
    let line = file.lines().find_map(|l| l.strip_prefix("SERVERS="))?;
    let servers: Vec<IpAddr> = line
        .split_whitespace()
        .filter_map(|token| {
            let token = token.split('#').next().unwrap_or(token);
            let token = token.split('%').next().unwrap_or(token);
            token
                .parse::<IpAddr>()
                .ok()
                .or_else(|| token.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .collect();
    (!servers.is_empty()).then_some(servers)
}

/// The addresses of the `DNS =` lines in a wg-quick file's `[Interface]` section (search domains,
/// which the same key may list, are skipped). `None` when it names no address.
pub fn wg_quick_dns(file: &str) -> Option<Vec<IpAddr>> {
    let mut in_interface = false;
    let mut servers = Vec::new();
    for line in file.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_interface = line.eq_ignore_ascii_case("[interface]");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_interface && key.trim().eq_ignore_ascii_case("dns") {
            servers.extend(
                value
                    .split(',')
                    .filter_map(|v| v.trim().parse::<IpAddr>().ok()),
            );
        }
    }
    (!servers.is_empty()).then_some(servers)
}

/// Reads what the system says about `query`'s interface. Each look that fails counts as "nothing
/// found" except the WireGuard device's, whose failure is the answer (a socket that refuses).
pub fn look(query: &GuardQuery, wireguard_dir: &Path) -> Result<Findings, DiscoverError> {
    let name = query.interface.as_str();
    let index = killswitch_tunnel::netdev::index(name);
    let mut found = Findings {
        exists: index.is_some(),
        ..Findings::default()
    };
    // Only an interface of this namespace: the sockets' directory is shared by every namespace,
    // and a socket of that name may belong to another one's device.
    if index.is_some() && (query.endpoints.is_empty() || query.mark.is_none()) {
        let socket = killswitch_tunnel::uapi::socket_path(name);
        // A socket of that name served from another namespace is another device: never asked.
        let ours = socket.exists()
            && match killswitch_tunnel::uapi::serves_this_namespace(&socket) {
                Ok(ours) => {
                    if !ours {
                        tracing::warn!(
                            "{} serves a WireGuard device in another network namespace: not {name} of this one",
                            socket.display()
                        );
                    }
                    ours
                }
                Err(e) => {
                    return Err(DiscoverError::Device(format!(
                        "reading {name}'s WireGuard device: {}",
                        chain(&e)
                    )));
                }
            };
        found.wireguard = if ours {
            let info = killswitch_tunnel::uapi::device(&socket).map_err(|e| {
                DiscoverError::Device(format!("reading {name}'s WireGuard device: {}", chain(&e)))
            })?;
            Some((WireguardAccess::Userspace, info))
        } else {
            killswitch_tunnel::kernel::device(name)
                .map_err(|e| {
                    DiscoverError::Device(format!(
                        "reading {name}'s WireGuard device: {}",
                        chain(&e)
                    ))
                })?
                .map(|info| (WireguardAccess::Kernel, info))
        };
    }
    if query.mark.is_none()
        && found
            .wireguard
            .as_ref()
            .is_some_and(|(_, i)| i.fwmark.is_none())
    {
        match killswitch_route::Routing::open().and_then(|mut r| r.marks_in_use()) {
            Ok(marks) => found.marks_in_rules = marks,
            Err(e) => tracing::warn!("reading the policy rules' marks failed: {}", chain(&e)),
        }
    }
    // resolved serves the namespace of PID 1: its files name that namespace's interface indexes,
    // which in another namespace (a lab's, a container's) are other interfaces.
    if query.dns.is_none()
        && let Some(index) = index
        && in_the_init_namespace()
    {
        let file = Path::new(RESOLVED_NETIF).join(index.to_string());
        found.resolved_dns = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| resolved_servers(&text));
    }
    if query.dns.is_none() {
        let file = wireguard_dir.join(format!("{name}.conf"));
        found.wg_quick_dns = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| wg_quick_dns(&text))
            .map(|servers| (servers, file));
    }
    Ok(found)
}

/// Whether this process shares PID 1's network namespace (where systemd-resolved runs).
fn in_the_init_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/net"),
        std::fs::read_link("/proc/1/ns/net"),
    ) {
        (Ok(own), Ok(init)) => own == init,
        _ => false,
    }
}

/// Looks, plans and sets the mark the plan wants: the spec to guard and the notes for the user.
pub fn complete(query: &GuardQuery, wireguard_dir: &Path) -> Result<Plan, DiscoverError> {
    let found = look(query, wireguard_dir)?;
    let plan = plan(query, &found)?;
    let name = query.interface.as_str();
    match plan.set_mark {
        Some((WireguardAccess::Userspace, mark)) => killswitch_tunnel::uapi::set_fwmark(
            &killswitch_tunnel::uapi::socket_path(name),
            mark,
        )
        .map_err(|e| DiscoverError::Device(format!("setting {name}'s fwmark: {}", chain(&e))))?,
        Some((WireguardAccess::Kernel, mark)) => killswitch_tunnel::kernel::set_fwmark(name, mark)
            .map_err(|e| {
                DiscoverError::Device(format!("setting {name}'s fwmark: {}", chain(&e)))
            })?,
        None => {}
    }
    if let Some((_, mark)) = plan.set_mark {
        tracing::info!("{name} had no fwmark; set {mark:#x}");
    }
    Ok(plan)
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> GuardQuery {
        GuardQuery {
            interface: "wg0".parse().expect("literal"),
            endpoints: vec![],
            dns: None,
            mark: None,
            uid: None,
        }
    }

    fn wireguard(fwmark: Option<u32>, endpoints: &[&str], peers: usize) -> Findings {
        Findings {
            exists: true,
            wireguard: Some((
                WireguardAccess::Userspace,
                DeviceInfo {
                    fwmark,
                    peers,
                    endpoints: endpoints
                        .iter()
                        .map(|e| e.parse().expect("literal"))
                        .collect(),
                },
            )),
            marks_in_rules: vec![],
            resolved_dns: None,
            wg_quick_dns: None,
        }
    }

    fn ep(s: &str) -> Endpoint {
        s.parse().expect("literal")
    }

    #[test]
    fn a_marked_wireguard_device_gives_its_peers_and_mark() {
        let found = wireguard(
            Some(0xca6c),
            &["198.51.100.1:51820", "203.0.113.9:51820"],
            3,
        );
        let plan = plan(&query(), &found).expect("complete");
        assert_eq!(
            plan.spec.endpoints.as_slice(),
            [ep("198.51.100.1:51820"), ep("203.0.113.9:51820")]
        );
        assert_eq!(plan.spec.mark, Fwmark::new(0xca6c));
        assert_eq!(plan.set_mark, None);
        assert!(
            plan.notes[0].contains("1 peer(s) without an endpoint skipped"),
            "{:?}",
            plan.notes
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("DNS is blocked; pass --dns"))
        );
    }

    #[test]
    fn an_unmarked_device_gets_the_default_mark_or_the_next_free_one() {
        let mut found = wireguard(None, &["198.51.100.1:51820"], 1);
        let plan1 = plan(&query(), &found).expect("complete");
        assert_eq!(plan1.set_mark, Some((WireguardAccess::Userspace, 0xca6c)));
        assert_eq!(plan1.spec.mark, Fwmark::new(0xca6c));
        assert!(plan1.notes.iter().any(
            |n| n == "wg0 had no fwmark; set 0xca6c so that only its own packets use the hole"
        ));
        found.marks_in_rules = vec![0xca6c];
        let plan2 = plan(&query(), &found).expect("complete");
        assert_eq!(plan2.set_mark, Some((WireguardAccess::Userspace, 0xca6d)));
        assert!(
            plan2
                .notes
                .iter()
                .any(|n| n.contains("0xca6c is used by another routing rule"))
        );
    }

    #[test]
    fn given_values_win_and_nothing_is_set() {
        let found = wireguard(None, &["198.51.100.1:51820"], 1);
        let mut q = query();
        q.endpoints = vec![ep("203.0.113.5:443/tcp")];
        q.mark = Fwmark::new(7);
        q.dns = Some(vec!["10.64.0.1".parse().expect("literal")]);
        let plan = plan(&q, &found).expect("complete");
        assert_eq!(plan.spec.endpoints.as_slice(), [ep("203.0.113.5:443/tcp")]);
        assert_eq!(plan.spec.mark, Fwmark::new(7));
        assert_eq!(
            plan.set_mark, None,
            "a given mark is never set on the device"
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("not the --mark 0x7 given")),
            "{:?}",
            plan.notes
        );
        assert_eq!(plan.spec.dns, q.dns.clone().expect("given"));
    }

    #[test]
    fn dns_comes_from_resolved_when_not_given() {
        let mut found = wireguard(Some(1), &["198.51.100.1:51820"], 1);
        found.resolved_dns = Some(vec!["10.64.0.1".parse().expect("literal")]);
        let plan = plan(&query(), &found).expect("complete");
        assert_eq!(
            plan.spec.dns,
            ["10.64.0.1".parse::<IpAddr>().expect("literal")]
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("systemd-resolved's servers for wg0"))
        );
    }

    #[test]
    fn dns_comes_from_the_wg_quick_file_where_resolved_has_none() {
        let mut found = wireguard(Some(1), &["198.51.100.1:51820"], 1);
        let file = "[Interface]\nPrivateKey = x\nDNS = 10.64.0.1, corp.example, fd00::53 # both\n[Peer]\nDNS = 192.0.2.9\n";
        found.wg_quick_dns = wg_quick_dns(file).map(|s| (s, "/etc/wireguard/wg0.conf".into()));
        let from_file = plan(&query(), &found).expect("complete");
        assert_eq!(
            from_file.spec.dns,
            ["10.64.0.1", "fd00::53"].map(|a| a.parse::<IpAddr>().expect("literal"))
        );
        assert!(
            from_file
                .notes
                .iter()
                .any(|n| n.contains("/etc/wireguard/wg0.conf"))
        );
        // resolved, when it has servers for the link, is what the system uses now: it wins.
        found.resolved_dns = Some(vec!["10.9.9.9".parse().expect("literal")]);
        let from_resolved = plan(&query(), &found).expect("complete");
        assert_eq!(
            from_resolved.spec.dns,
            ["10.9.9.9".parse::<IpAddr>().expect("literal")]
        );
        assert_eq!(wg_quick_dns("[Interface]\nDNS = corp.example\n"), None);
    }

    #[test]
    fn errors_name_what_to_pass() {
        let not_wg = Findings {
            exists: true,
            ..Findings::default()
        };
        let err = plan(&query(), &not_wg).expect_err("no servers").to_string();
        assert!(
            err.contains("not a WireGuard interface") && err.contains("--ovpn FILE"),
            "{err}"
        );
        let absent = plan(&query(), &Findings::default())
            .expect_err("absent")
            .to_string();
        assert!(
            err.contains("--endpoint") && absent.contains("does not exist"),
            "{absent}"
        );
        let waiting = wireguard(None, &[], 2);
        let err = plan(&query(), &waiting)
            .expect_err("no endpoint")
            .to_string();
        assert!(
            err.contains("2 WireGuard peer(s) has an endpoint") && err.contains("--endpoint"),
            "{err}"
        );
        let loopback = wireguard(None, &["127.0.0.1:51820"], 1);
        let err = plan(&query(), &loopback).expect_err("unusable").to_string();
        assert!(err.contains("no endpoint"), "{err}");
        // A tun device with the servers given: fine, and the open hole is said.
        let mut q = query();
        q.endpoints = vec![ep("198.51.100.1:1194"), ep("203.0.113.1:1194")];
        let plan = plan(&q, &not_wg).expect("given");
        assert_eq!(plan.spec.endpoints.len(), 2);
        assert!(plan.notes.iter().any(|n| n.contains("pass --mark N")));
    }

    #[test]
    fn resolved_link_files_in_every_spelling() {
        let file = "# This is private data. Do not parse.\nLLMNR=yes\nSERVERS=10.64.0.1 10.64.0.2:53 [fd00::1]:53%3#dns.example fd00::2\nDOMAINS=~.\n";
        assert_eq!(
            resolved_servers(file),
            Some(
                ["10.64.0.1", "10.64.0.2", "fd00::1", "fd00::2"]
                    .map(|s| s.parse::<IpAddr>().expect("literal"))
                    .to_vec()
            )
        );
        assert_eq!(resolved_servers("LLMNR=yes\n"), None);
        assert_eq!(resolved_servers("SERVERS=\n"), None);
    }
}
