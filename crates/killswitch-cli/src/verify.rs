//! `killswitch verify`: is this machine protected right now? One verdict line, then one line per
//! check, or one JSON object; exit status 0 only when it is protected and every check passed.
//!
//! Two kinds of check. The daemon reads the kernel's rules back and compares them with what it
//! means them to be (digests, the first difference, the routing layer): that needs CAP_NET_ADMIN,
//! so the daemon does it, and anyone may ask. Then this process sends probes, as the calling
//! user, because what matters is what *this user's* programs would see: each probe is one UDP
//! datagram bound to the physical interface (`SO_BINDTODEVICE`, allowed to any user since Linux
//! 5.7), which is exactly what a program that goes around the tunnel does, so neither the tunnel's
//! routes nor the kill switch's routing layer can catch it, only its firewall. The kernel must
//! refuse it before it leaves (the kill switch's rules answer EPERM, or an ICMP
//! "administratively prohibited" that the send reports at once). A datagram the kernel sends is a
//! leak, and the check fails.
//!
//! The probes are safe on a production machine: at most one datagram each, three in all, with a
//! TTL (hop limit) of 1 so that a leaked one dies at the first router; to documentation addresses
//! (192.0.2.1, 2001:db8::1, RFC 5737 and 3849) or to the LAN's default gateway; the discard port
//! (9) with no payload, or DNS (53) with a bare 12-byte header that asks nothing.

use crate::client::{Client, Failure};
use killswitch_types::State;
use killswitch_types::ipc::{ErrorKind, IpcError, RulesCheck, Status};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;

/// Where the IPv4 probe goes: TEST-NET-1 (RFC 5737), the discard port. Never a real host.
const PROBE_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);
/// Where the IPv6 probe goes: the documentation prefix (RFC 3849), the discard port.
const PROBE_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    9,
);
/// A DNS header that asks nothing (id 0x6b73, flags 0, every count 0): any resolver that gets it
/// answers FORMERR or nothing, and it names no host.
const DNS_HEADER: [u8; 12] = [0x6b, 0x73, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// A short name (`rules`, `ipv4-probe` ...).
    pub(crate) name: &'static str,
    /// Whether it passed; `None` when it could not be run here (then it is not counted).
    pub(crate) passed: Option<bool>,
    /// What was found, in words.
    pub(crate) detail: String,
    /// For a failed probe, the verdict line's words (`IPv6 to 2001:db8::1 left through eth0`).
    pub(crate) leak: Option<String>,
}

impl Check {
    fn new(name: &'static str, passed: bool, detail: impl Into<String>) -> Self {
        Check {
            name,
            passed: Some(passed),
            detail: detail.into(),
            leak: None,
        }
    }

    fn skipped(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            passed: None,
            detail: detail.into(),
            leak: None,
        }
    }
}

/// The verdict over all checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Protecting, and every check that ran passed.
    Protected,
    /// A probe left the machine.
    Leaking,
    /// Protecting, no probe left, but the rules are not what the daemon meant.
    AtRisk,
    /// Nothing is armed (`off`, unlocked `disconnected`).
    NotProtecting,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Protected => "protected",
            Verdict::Leaking => "leaking",
            Verdict::AtRisk => "at-risk",
            Verdict::NotProtecting => "not-protecting",
        }
    }
}

/// Runs `killswitch verify` against the daemon at `socket`.
pub(crate) fn run(socket: &Path, json: bool) -> ExitCode {
    let (status, rules) = match Client::new(socket.to_owned()).verify() {
        Ok(answer) => answer,
        Err(Failure::Refused(error))
            if error.kind == ErrorKind::BadRequest && error.message.contains("verify") =>
        {
            // A daemon from before `verify` refuses it as an unknown command.
            let older = IpcError::new(
                ErrorKind::BadRequest,
                format!(
                    "the daemon does not know `verify`: it is older than this command (restart it after upgrading): {}",
                    error.message
                ),
            );
            return crate::fail(&Failure::Refused(older), json);
        }
        Err(failure) => return crate::fail(&failure, json),
    };
    let routes = RouteTables::read();
    let checks = checks(&status, &rules, &routes, &Prober);
    let (verdict, line) = verdict(&status, &checks);
    if json {
        let items: Vec<serde_json::Value> = checks
            .iter()
            .filter(|c| c.passed.is_some())
            .map(|c| serde_json::json!({"name": c.name, "passed": c.passed, "detail": c.detail}))
            .collect();
        let skipped: Vec<serde_json::Value> = checks
            .iter()
            .filter(|c| c.passed.is_none())
            .map(|c| serde_json::json!({"name": c.name, "detail": c.detail}))
            .collect();
        crate::emit(&format!(
            "{}\n",
            serde_json::json!({
                "verdict": verdict.word(),
                "summary": line,
                "state": status.state,
                "checks": items,
                "skipped": skipped,
                "rules": rules,
            })
        ));
    } else {
        crate::emit(&render(&line, &checks));
    }
    if verdict == Verdict::Protected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The text: the verdict line, then a line per check.
fn render(line: &str, checks: &[Check]) -> String {
    let mut text = format!("{line}\n");
    for check in checks {
        let mark = match check.passed {
            Some(true) => "ok  ",
            Some(false) => "FAIL",
            None => "skip",
        };
        text.push_str(&format!(
            "  {mark}  {:<11} {}\n",
            check.name,
            crate::render::clean(&check.detail)
        ));
    }
    text
}

/// The verdict and its line.
pub(crate) fn verdict(status: &Status, checks: &[Check]) -> (Verdict, String) {
    let ran: Vec<&Check> = checks.iter().filter(|c| c.passed.is_some()).collect();
    let passed = ran.iter().filter(|c| c.passed == Some(true)).count();
    if !status.firewall.blocking {
        return (
            Verdict::NotProtecting,
            format!(
                "NOT PROTECTING: state {}{}",
                status.state,
                if status.apps_only {
                    " (apps-only: only exec programs and tunnel-only users are protected)"
                } else if status.state == State::Disconnected {
                    " (lockdown off: nothing is blocked)"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some(leak) = ran.iter().find_map(|c| c.leak.clone()) {
        return (Verdict::Leaking, format!("LEAKING: {leak}"));
    }
    if let Some(failed) = ran.iter().find(|c| c.passed == Some(false)) {
        return (
            Verdict::AtRisk,
            format!("AT RISK: {}: {}", failed.name, failed.detail),
        );
    }
    (
        Verdict::Protected,
        format!("PROTECTED: {passed} of {} checks passed", ran.len()),
    )
}

/// Sends one probe; a trait so that the verdict logic is tested without sockets.
pub(crate) trait Probe {
    /// Sends `payload` to `target` out of `device` with a TTL (hop limit) of 1: `Ok(())` if the
    /// kernel sent it, the error if it refused.
    fn send(&self, target: SocketAddr, device: &str, payload: &[u8]) -> io::Result<()>;
}

/// The real probe: a UDP socket.
struct Prober;

impl Probe for Prober {
    fn send(&self, target: SocketAddr, device: &str, payload: &[u8]) -> io::Result<()> {
        let any: SocketAddr = if target.is_ipv4() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        };
        let socket = UdpSocket::bind(any)?;
        setsockopt_bytes(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_bytes(),
        )?;
        if target.is_ipv4() {
            socket.set_ttl(1)?;
        } else {
            let hops: libc::c_int = 1;
            setsockopt_bytes(
                &socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                &hops.to_ne_bytes(),
            )?;
        }
        socket.connect(target)?;
        socket.send(payload).map(drop)
    }
}

/// `setsockopt` with a value given as bytes.
fn setsockopt_bytes(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).map_err(io::Error::other)?;
    // SAFETY: the pointer and length describe `value`, which lives across the call; the kernel
    // copies it and keeps no reference.
    let rc =
        unsafe { libc::setsockopt(socket.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a send failed because something on this machine refused the packet: the kill
/// switch's `drop` (EPERM), its `reject` (the ICMP error it sends back is reported by the send
/// itself: EHOSTUNREACH, ECONNREFUSED, EACCES), or no route at all (ENETUNREACH).
fn refused_here(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::EPERM
                | libc::EACCES
                | libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
        )
    )
}

/// The default routes of the main table outside the tunnel: where a program that goes around
/// the tunnel would send its packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RouteTables {
    /// The IPv4 default routes: interface and gateway (`None`: on-link).
    pub(crate) v4: Vec<(String, Option<Ipv4Addr>)>,
    /// The interfaces of the IPv6 default routes.
    pub(crate) v6: Vec<String>,
}

impl RouteTables {
    /// Reads /proc/net/route and /proc/net/ipv6_route (readable by anyone); what cannot be read
    /// is empty, and the probes that need it are skipped, saying why.
    fn read() -> Self {
        RouteTables {
            v4: std::fs::read_to_string("/proc/net/route")
                .map(|t| parse_v4_defaults(&t))
                .unwrap_or_default(),
            v6: std::fs::read_to_string("/proc/net/ipv6_route")
                .map(|t| parse_v6_defaults(&t))
                .unwrap_or_default(),
        }
    }
}

/// RTF_UP.
const RTF_UP: u32 = 0x1;
/// RTF_GATEWAY.
const RTF_GATEWAY: u32 = 0x2;
/// RTF_REJECT: an `unreachable` route.
const RTF_REJECT: u32 = 0x200;

/// The up IPv4 default routes in /proc/net/route's text, lowest metric first.
pub(crate) fn parse_v4_defaults(text: &str) -> Vec<(String, Option<Ipv4Addr>)> {
    let mut found: Vec<(u32, String, Option<Ipv4Addr>)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (iface, dest, gateway, flags, metric, mask) = (
                fields.first()?,
                hex(1)?,
                hex(2)?,
                hex(3)?,
                fields.get(6)?,
                hex(7)?,
            );
            let up = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            (up && dest == 0 && mask == 0).then(|| {
                // The kernel prints the address as the number its bytes make in host order.
                let gateway =
                    (flags & RTF_GATEWAY != 0).then(|| Ipv4Addr::from(gateway.to_le_bytes()));
                (
                    metric.parse().unwrap_or(u32::MAX),
                    (*iface).to_owned(),
                    gateway,
                )
            })
        })
        .collect();
    found.sort_by_key(|(metric, _, _)| *metric);
    found.into_iter().map(|(_, i, g)| (i, g)).collect()
}

/// The interfaces of the up IPv6 default routes in /proc/net/ipv6_route's text (every table:
/// `lo` and the kill switch's `unreachable` routes are left out).
pub(crate) fn parse_v6_defaults(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (dest, plen, flags, iface) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(8)?,
                fields.get(9)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let default = dest.chars().all(|c| c == '0') && *plen == "00";
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && *iface != "lo";
            (default && usable).then(|| (*iface).to_owned())
        })
        .collect();
    found.dedup();
    found
}

/// Every check, in the order shown.
pub(crate) fn checks(
    status: &Status,
    rules: &RulesCheck,
    routes: &RouteTables,
    probe: &dyn Probe,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let tunnel = status.tunnel.as_ref().map(|t| t.interface.as_str());
    checks.push(Check::new(
        "state",
        status.firewall.blocking,
        match tunnel {
            Some(t) => format!("{}, tunnel {t}", status.state),
            None => format!("{}", status.state),
        },
    ));
    checks.push(rules_check(rules));
    checks.push(if rules.routing_wanted {
        Check::new(
            "routing",
            rules.routing_in_place,
            match (&rules.routing_detail, rules.routing_in_place) {
                (Some(detail), _) => detail.clone(),
                // Under apps-only the routing layer takes only the scopes (exec namespaces,
                // tunnel-only users) into the tunnel: the machine is not routed there.
                (None, true) if status.apps_only => {
                    "the policy rules that take the scopes (exec, tunnel-only users) into the \
                     tunnel or nowhere are in place; the machine itself is not routed into it \
                     (apps-only)"
                        .to_owned()
                }
                (None, true) => {
                    "the policy rules into the tunnel or nowhere are in place".to_owned()
                }
                (None, false) => "the policy rules are not in place".to_owned(),
            },
        )
    } else {
        Check::skipped("routing", "no routing layer is meant in this state")
    });
    if !status.firewall.blocking {
        for name in ["ipv4-probe", "dns-probe", "ipv6-probe"] {
            checks.push(Check::skipped(
                name,
                "not sent: nothing is meant to be blocked in this state",
            ));
        }
        return checks;
    }
    let outside = |iface: &str| Some(iface) != tunnel;
    let v4 = routes.v4.iter().find(|(iface, _)| outside(iface));
    match v4 {
        Some((iface, _)) => checks.push(probe_check(
            probe,
            "ipv4-probe",
            "IPv4",
            PROBE_V4,
            iface,
            &[],
        )),
        None => checks.push(Check::skipped(
            "ipv4-probe",
            "no IPv4 default route outside the tunnel to send it through",
        )),
    }
    match v4 {
        Some((iface, Some(gateway))) => checks.push(probe_check(
            probe,
            "dns-probe",
            "DNS",
            SocketAddr::new(IpAddr::V4(*gateway), 53),
            iface,
            &DNS_HEADER,
        )),
        _ => checks.push(Check::skipped(
            "dns-probe",
            "no IPv4 default gateway outside the tunnel to ask",
        )),
    }
    match routes.v6.iter().find(|iface| outside(iface)) {
        Some(iface) => checks.push(probe_check(
            probe,
            "ipv6-probe",
            "IPv6",
            PROBE_V6,
            iface,
            &[],
        )),
        None => checks.push(Check::skipped(
            "ipv6-probe",
            "no IPv6 default route outside the tunnel to send it through",
        )),
    }
    checks
}

fn rules_check(rules: &RulesCheck) -> Check {
    let digest = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".to_owned());
    if rules.matches {
        Check::new(
            "rules",
            true,
            format!(
                "the kernel holds the daemon's rules (digest {})",
                digest(&rules.kernel_digest)
            ),
        )
    } else {
        let what = if rules.kernel_digest.is_none() && rules.intent_digest.is_some() {
            "the kill switch's tables are missing from the kernel".to_owned()
        } else {
            "the kernel's rules differ from the daemon's".to_owned()
        };
        Check::new(
            "rules",
            false,
            format!(
                "{what}: {} (meant {}, found {})",
                rules.difference.as_deref().unwrap_or("no detail"),
                digest(&rules.intent_digest),
                digest(&rules.kernel_digest)
            ),
        )
    }
}

/// Sends one probe and judges it: refused on this machine passes, sent fails.
fn probe_check(
    probe: &dyn Probe,
    name: &'static str,
    family: &str,
    target: SocketAddr,
    iface: &str,
    payload: &[u8],
) -> Check {
    let what = format!("{family} to {target} out of {iface} (TTL 1)");
    match probe.send(target, iface, payload) {
        Err(error) if refused_here(&error) => {
            Check::new(name, true, format!("{what}: refused here ({error})"))
        }
        Err(error) => Check::skipped(name, format!("{what}: could not be sent ({error})")),
        Ok(()) => Check {
            leak: Some(format!("{family} to {} left through {iface}", target.ip())),
            ..Check::new(
                name,
                false,
                format!("{what}: the kernel sent it (it died at the first hop)"),
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_types::ipc::{FirewallStatus, PROTOCOL_VERSION, STATUS_SCHEMA_VERSION};
    use std::cell::RefCell;

    /// A probe that answers from a table: which targets the "kernel" lets out.
    struct Scripted {
        leaks: Vec<IpAddr>,
        sent: RefCell<Vec<(SocketAddr, String, usize)>>,
    }

    impl Probe for Scripted {
        fn send(&self, target: SocketAddr, device: &str, payload: &[u8]) -> io::Result<()> {
            self.sent
                .borrow_mut()
                .push((target, device.to_owned(), payload.len()));
            if self.leaks.contains(&target.ip()) {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            }
        }
    }

    fn status(state: State, blocking: bool) -> Status {
        Status {
            protocol: PROTOCOL_VERSION,
            schema: STATUS_SCHEMA_VERSION,
            daemon_version: None,
            state,
            lockdown: false,
            allow_lan: false,
            apps_only: false,
            tunnel: None,
            error: None,
            firewall: FirewallStatus {
                installed: blocking,
                blocking,
                transitions: 1,
                last_apply_us: None,
                tamper_events: 0,
                last_tamper: None,
                routing: blocking,
                flush_protection: None,
            },
            dns: None,
            exceptions: Default::default(),
            notes: Vec::new(),
            blocked: None,
            tunnel_only_users: Vec::new(),
            router_lans: Vec::new(),
            ip_forward: None,
            exec: Vec::new(),
            bypass: None,
            on_drop: Default::default(),
        }
    }

    fn matching() -> RulesCheck {
        RulesCheck {
            intent_digest: Some("00aa".to_owned()),
            kernel_digest: Some("00aa".to_owned()),
            matches: true,
            difference: None,
            routing_wanted: true,
            routing_in_place: true,
            routing_detail: None,
        }
    }

    fn lan() -> RouteTables {
        RouteTables {
            v4: vec![("eth0".to_owned(), Some(Ipv4Addr::new(192, 168, 1, 1)))],
            v6: vec!["eth0".to_owned()],
        }
    }

    #[test]
    fn everything_refused_is_protected() {
        let probe = Scripted {
            leaks: vec![],
            sent: RefCell::default(),
        };
        let s = status(State::Connected, true);
        let checks = checks(&s, &matching(), &lan(), &probe);
        let (verdict, line) = verdict(&s, &checks);
        assert_eq!(verdict, Verdict::Protected, "{checks:?}");
        assert_eq!(line, "PROTECTED: 6 of 6 checks passed");
        // Three datagrams, all out of the physical interface, the DNS one a bare header.
        let sent = probe.sent.borrow();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(_, device, _)| device == "eth0"));
        assert!(sent.contains(&(
            "192.168.1.1:53".parse().expect("addr"),
            "eth0".to_owned(),
            12
        )));
    }

    #[test]
    fn a_probe_that_leaves_is_a_leak_named_in_the_verdict() {
        let probe = Scripted {
            leaks: vec!["2001:db8::1".parse().expect("addr")],
            sent: RefCell::default(),
        };
        let s = status(State::Connected, true);
        let checks = checks(&s, &matching(), &lan(), &probe);
        let (verdict, line) = verdict(&s, &checks);
        assert_eq!(verdict, Verdict::Leaking);
        assert_eq!(line, "LEAKING: IPv6 to 2001:db8::1 left through eth0");
    }

    #[test]
    fn rules_that_differ_put_the_machine_at_risk() {
        let probe = Scripted {
            leaks: vec![],
            sent: RefCell::default(),
        };
        let rules = RulesCheck {
            kernel_digest: None,
            matches: false,
            difference: Some("table inet killswitch is missing".to_owned()),
            ..matching()
        };
        let s = status(State::Connected, true);
        let checks = checks(&s, &rules, &lan(), &probe);
        let (verdict, line) = verdict(&s, &checks);
        assert_eq!(verdict, Verdict::AtRisk);
        assert!(line.contains("tables are missing"), "{line}");
    }

    #[test]
    fn nothing_armed_says_so_and_sends_nothing() {
        let probe = Scripted {
            leaks: vec![],
            sent: RefCell::default(),
        };
        let s = status(State::Disconnected, false);
        let rules = RulesCheck {
            routing_wanted: false,
            intent_digest: None,
            kernel_digest: None,
            ..matching()
        };
        let checks = checks(&s, &rules, &lan(), &probe);
        let (verdict, line) = verdict(&s, &checks);
        assert_eq!(verdict, Verdict::NotProtecting);
        assert!(
            line.starts_with("NOT PROTECTING: state disconnected"),
            "{line}"
        );
        assert!(probe.sent.borrow().is_empty());
    }

    #[test]
    fn the_tunnel_is_never_probed_as_the_way_out() {
        let probe = Scripted {
            leaks: vec![],
            sent: RefCell::default(),
        };
        let mut s = status(State::Connected, true);
        s.tunnel = Some(killswitch_types::TunnelStatus {
            interface: killswitch_types::InterfaceName::new("wg0").expect("valid"),
            endpoint: "198.51.100.1:51820".parse().expect("valid"),
            endpoints: vec![],
            dns: vec![],
            mark: None,
            uid: None,
            up: true,
            addresses: vec![],
            managed: None,
            handshake: None,
        });
        let routes = RouteTables {
            v4: vec![("wg0".to_owned(), None)],
            v6: vec!["wg0".to_owned()],
        };
        let checks = checks(&s, &matching(), &routes, &probe);
        assert!(probe.sent.borrow().is_empty());
        assert_eq!(checks.iter().filter(|c| c.passed.is_none()).count(), 3);
    }

    #[test]
    fn default_routes_are_read_from_proc() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                  eth0\t00000000\t0132A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0032A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_v4_defaults(v4),
            vec![
                ("eth0".to_owned(), Some(Ipv4Addr::new(192, 168, 50, 1))),
                ("eth1".to_owned(), Some(Ipv4Addr::new(192, 168, 1, 1))),
            ]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd500000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n\
                  fd500000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(parse_v6_defaults(v6), vec!["eth0".to_owned()]);
        assert!(parse_v4_defaults("garbage\nnot a route\n").is_empty());
    }
}
