//! The protection states, the user's settings and the target the user asked for.

use crate::{Endpoint, Endpoints, Fwmark, InterfaceName};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// The most DNS servers a tunnel may name; more is a mistake, not a configuration.
pub const MAX_DNS_SERVERS: usize = 16;

/// What the kill switch is doing right now. Reported by `status` and in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The kill switch is switched off: no table is installed. Only an explicit `off` gets here.
    Off,
    /// No tunnel is wanted. No table, unless lockdown is on; then it blocks like `Blocked`.
    Disconnected,
    /// A tunnel is wanted but not up: everything is blocked except the hole to the VPN endpoint.
    Connecting,
    /// The tunnel is up: traffic may leave through it (and to the endpoint, and the LAN if allowed).
    Connected,
    /// Everything is blocked: lockdown while disconnected, or an error.
    Blocked,
}

impl State {
    /// All states, in the order a user meets them.
    pub const ALL: [State; 5] = [
        State::Off,
        State::Disconnected,
        State::Connecting,
        State::Connected,
        State::Blocked,
    ];
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Off => "off",
            State::Disconnected => "disconnected",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Blocked => "blocked",
        })
    }
}

/// What happens to a program's cgroup when the tunnel is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDrop {
    /// Frozen (cgroup v2 `cgroup.freeze`) while the tunnel is lost, thawed when it is back.
    Freeze,
    /// Killed (`cgroup.kill`) when the tunnel is lost.
    Kill,
}

impl fmt::Display for OnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnDrop::Freeze => "freeze",
            OnDrop::Kill => "kill",
        })
    }
}

/// The user's persistent preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Block everything while no tunnel is connected, even after an explicit `down`.
    pub lockdown: bool,
    /// Allow the fixed private ranges (RFC 1918, link-local, ULA, multicast) outside the tunnel.
    pub allow_lan: bool,
    /// Protect only the scopes (`killswitch exec` programs, tunnel-only users), never the machine
    /// itself: no machine-wide table and, for `up`, no machine-wide routing into the tunnel, in
    /// every state. Lockdown and allow-lan mean nothing while it is on. Absent (off) in files
    /// and requests from before it, and not written while off, so that an older daemon still
    /// reads a newer settings file.
    #[serde(default, skip_serializing_if = "is_false")]
    pub apps_only: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A tunnel managed by some other program (OpenVPN, wg-quick, ...) that the daemon protects.
///
/// On the wire (and in the daemon's settings file) the servers are `endpoints`, a list; the single
/// `endpoint` of releases before it is still read, and one server is still written that way, so
/// that an older daemon understands a newer client and reads back a newer settings file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GuardSpecWire", into = "GuardSpecWire")]
pub struct GuardSpec {
    /// The tunnel interface; traffic may leave through it once it is up.
    pub interface: InterfaceName,
    /// The VPN servers; the only destinations reachable outside the tunnel.
    pub endpoints: Endpoints,
    /// DNS servers reachable through the tunnel; every other DNS packet is rejected.
    pub dns: Vec<IpAddr>,
    /// When set, only packets carrying this fwmark may use the endpoint hole.
    pub mark: Option<Fwmark>,
    /// When set, only sockets owned by this uid may use the endpoint hole.
    pub uid: Option<u32>,
}

/// [`GuardSpec`] as JSON spells it: either the old `endpoint` or the new `endpoints`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardSpecWire {
    interface: InterfaceName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoints: Option<Vec<Endpoint>>,
    #[serde(default)]
    dns: Vec<IpAddr>,
    #[serde(default)]
    mark: Option<Fwmark>,
    #[serde(default)]
    uid: Option<u32>,
}

impl TryFrom<GuardSpecWire> for GuardSpec {
    type Error = String;
    fn try_from(wire: GuardSpecWire) -> Result<Self, Self::Error> {
        let endpoints = match (wire.endpoint, wire.endpoints) {
            (Some(one), None) => Endpoints::one(one),
            (None, Some(list)) => Endpoints::new(list).map_err(|e| e.to_string())?,
            (Some(_), Some(_)) => {
                return Err(
                    "both `endpoint` and `endpoints` given; send the list as `endpoints` only"
                        .to_owned(),
                );
            }
            (None, None) => return Err("missing field `endpoints`".to_owned()),
        };
        Ok(GuardSpec {
            interface: wire.interface,
            endpoints,
            dns: wire.dns,
            mark: wire.mark,
            uid: wire.uid,
        })
    }
}

impl From<GuardSpec> for GuardSpecWire {
    fn from(spec: GuardSpec) -> Self {
        // One server is written as the old field: a daemon of the previous release reads it.
        let (endpoint, endpoints) = match spec.endpoints.as_slice() {
            [one] => (Some(*one), None),
            _ => (None, Some(spec.endpoints.into())),
        };
        GuardSpecWire {
            interface: spec.interface,
            endpoint,
            endpoints,
            dns: spec.dns,
            mark: spec.mark,
            uid: spec.uid,
        }
    }
}

/// A guard request that leaves some of the tunnel to be discovered: what `killswitch guard IFACE`
/// sends. The daemon fills in what is missing from the interface itself (a WireGuard device's
/// peers and fwmark, systemd-resolved's DNS servers for the link) before the request reaches its
/// state machine, which only ever sees a complete [`GuardSpec`]. What is given here is used as
/// given, never second-guessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardQuery {
    /// The tunnel interface.
    pub interface: InterfaceName,
    /// The VPN servers, if the user named them (or an OpenVPN file did); empty: the WireGuard
    /// device's peers.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The DNS servers, if given (an empty list given means "none"); `None`: ask resolved.
    #[serde(default)]
    pub dns: Option<Vec<IpAddr>>,
    /// The fwmark, if given; `None`: the WireGuard device's own (set when it has none).
    #[serde(default)]
    pub mark: Option<Fwmark>,
    /// The socket owner the hole requires, if given (never discovered).
    #[serde(default)]
    pub uid: Option<u32>,
}

impl fmt::Debug for GuardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guard {} via {}", self.interface, self.endpoints)?;
        if let Some(mark) = self.mark {
            write!(f, " mark {mark}")?;
        }
        if let Some(uid) = self.uid {
            write!(f, " uid {uid}")?;
        }
        if !self.dns.is_empty() {
            write!(f, " dns {:?}", self.dns)?;
        }
        Ok(())
    }
}

/// Why a guard request cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardSpecError {
    /// Too many DNS servers.
    #[error("too many DNS servers ({0}); at most {MAX_DNS_SERVERS}")]
    TooManyDns(usize),
    /// A DNS server address that cannot be a resolver.
    #[error("DNS server {0} is not a usable unicast address")]
    BadDns(IpAddr),
    /// The tunnel is called `lo`.
    #[error("the tunnel interface cannot be the loopback interface")]
    LoopbackTunnel,
}

impl GuardSpec {
    /// Checks what serde cannot: the DNS list and the interface.
    pub fn validate(&self) -> Result<(), GuardSpecError> {
        if self.interface.as_str() == "lo" {
            return Err(GuardSpecError::LoopbackTunnel);
        }
        if self.dns.len() > MAX_DNS_SERVERS {
            return Err(GuardSpecError::TooManyDns(self.dns.len()));
        }
        if let Some(bad) = self
            .dns
            .iter()
            .find(|ip| ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip))
        {
            return Err(GuardSpecError::BadDns(*bad));
        }
        Ok(())
    }
}

fn is_broadcast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The tunnel as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// The tunnel interface.
    pub interface: InterfaceName,
    /// The (first) VPN server the hole is open for; kept for clients that know only one.
    pub endpoint: Endpoint,
    /// Every VPN server the hole is open for (empty from daemons before the field: then it is
    /// `endpoint` alone).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The DNS servers reachable through the tunnel.
    pub dns: Vec<IpAddr>,
    /// The fwmark the hole requires, if any.
    pub mark: Option<Fwmark>,
    /// The socket owner the hole requires, if any.
    pub uid: Option<u32>,
    /// Whether the interface exists and is up.
    pub up: bool,
    /// The addresses the tunnel interface carries (IPv6 is blocked unless one of them is IPv6).
    pub addresses: Vec<IpAddr>,
    /// For a tunnel the daemon runs itself (`killswitch up`): which server, how, and what happened.
    #[serde(default)]
    pub managed: Option<ManagedTunnel>,
    /// The tunnel's last WireGuard handshake, read when `status` is asked (absent from events,
    /// from older daemons, and when the interface is down or could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Handshake>,
}

/// What the tunnel's WireGuard device says about its handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// Whether the interface is a WireGuard device (false: a tun device of OpenVPN or another
    /// program, which has no handshakes to show).
    pub wireguard: bool,
    /// When the newest handshake with any of its peers completed, in seconds since the Unix
    /// epoch; none while no handshake has completed.
    #[serde(default)]
    pub last_unix: Option<u64>,
}

/// A tunnel the daemon brought up itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedTunnel {
    /// Which WireGuard runs it: `kernel` or `userspace`.
    pub backend: Option<String>,
    /// The configurations, in failover order (their file names).
    pub servers: Vec<String>,
    /// Which of them is in use, from 0.
    pub server: usize,
    /// Connection attempts since the tunnel was last up.
    pub attempt: u32,
    /// The last thing that happened to the tunnel, with its reason.
    pub last_event: Option<String>,
    /// Why each server that failed last failed (at most one entry per server, in server order);
    /// a server's entry goes when it connects. Absent in the replies of older daemons.
    #[serde(default)]
    pub failures: Vec<ServerFailure>,
}

/// Why one server's last attempt (or its tunnel) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFailure {
    /// Which server, from 0 (an index into [`ManagedTunnel::servers`]).
    pub server: usize,
    /// What kind of failure, for scripts.
    pub cause: FailureCause,
    /// The failure in words, for people: what was seen, and what it may mean.
    pub message: String,
}

/// The kind of a server's failure. WireGuard answers nothing to a handshake it cannot accept, so
/// a wrong key looks exactly like a server that is down: both are [`FailureCause::NoHandshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// Handshake packets went out and nothing came back in time: a wrong key (either side's),
    /// a server that is down, or a network that drops them on the way.
    NoHandshake,
    /// Something came back but no handshake completed in time (a server under load answers
    /// with a cookie first).
    AnsweredWithoutHandshake,
    /// Not one packet could be sent to the server (no route to it, or the network refused).
    /// Told only where the backend counts handshake packets (kernel WireGuard); elsewhere an
    /// unreachable server is [`FailureCause::NoHandshake`].
    Unreachable,
    /// The tunnel was up, then nothing came back through it for the health bound.
    Silent,
    /// The interface was set down, deleted or replaced by someone else.
    DeviceLost,
    /// The interface could not be created (no /dev/net/tun, no WireGuard, no permission).
    DeviceCreation,
    /// The device refused the configuration (an address or route the kernel refuses ...).
    Config,
    /// The device stopped answering (its statistics could not be read).
    DeviceError,
    /// A cause this build does not know (a newer daemon's).
    #[serde(other)]
    Unknown,
}

impl FailureCause {
    /// The cause as it appears in JSON (`no_handshake` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::NoHandshake => "no_handshake",
            FailureCause::AnsweredWithoutHandshake => "answered_without_handshake",
            FailureCause::Unreachable => "unreachable",
            FailureCause::Silent => "silent",
            FailureCause::DeviceLost => "device_lost",
            FailureCause::DeviceCreation => "device_creation",
            FailureCause::Config => "config",
            FailureCause::DeviceError => "device_error",
            FailureCause::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GuardSpec {
        GuardSpec {
            interface: InterfaceName::new("wg0").expect("valid"),
            endpoints: Endpoints::one("203.0.113.1:51820".parse().expect("valid")),
            dns: vec!["10.64.0.1".parse().expect("valid")],
            mark: Some(Fwmark::new(0xca6c).expect("non-zero")),
            uid: None,
        }
    }

    #[test]
    fn apps_only_is_written_only_when_on_and_read_when_absent() {
        let off = Settings::default();
        let json = serde_json::to_string(&off).expect("serializable");
        assert_eq!(json, r#"{"lockdown":false,"allow_lan":false}"#);
        let on = Settings {
            apps_only: true,
            ..Settings::default()
        };
        let json = serde_json::to_string(&on).expect("serializable");
        assert_eq!(
            json,
            r#"{"lockdown":false,"allow_lan":false,"apps_only":true}"#
        );
        assert_eq!(serde_json::from_str::<Settings>(&json).expect("reads"), on);
        let older: Settings =
            serde_json::from_str(r#"{"lockdown":true,"allow_lan":false}"#).expect("older file");
        assert!(!older.apps_only);
    }

    #[test]
    fn guard_spec_validation() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.dns = vec!["0.0.0.0".parse().expect("valid")];
        assert!(matches!(s.validate(), Err(GuardSpecError::BadDns(_))));
        let mut s = spec();
        s.interface = InterfaceName::loopback();
        assert_eq!(s.validate(), Err(GuardSpecError::LoopbackTunnel));
        let mut s = spec();
        s.dns = vec!["10.0.0.1".parse().expect("valid"); MAX_DNS_SERVERS + 1];
        assert!(matches!(s.validate(), Err(GuardSpecError::TooManyDns(_))));
    }

    #[test]
    fn old_single_endpoint_still_decodes_and_one_is_written_the_old_way() {
        let old = r#"{"interface":"wg0","endpoint":"203.0.113.1:51820","dns":["10.64.0.1"],"mark":51820,"uid":null}"#;
        let decoded: GuardSpec = serde_json::from_str(old).expect("the previous release's form");
        assert_eq!(decoded.endpoints.as_slice(), spec().endpoints.as_slice());
        let written = serde_json::to_value(spec()).expect("serializable");
        assert_eq!(written["endpoint"], "203.0.113.1:51820/udp");
        assert!(written.get("endpoints").is_none());
    }

    #[test]
    fn several_endpoints_round_trip_and_bad_lists_are_refused_by_name() {
        let mut s = spec();
        s.endpoints = Endpoints::new(vec![
            "203.0.113.1:1194".parse().expect("valid"),
            "198.51.100.2:443/tcp".parse().expect("valid"),
        ])
        .expect("distinct");
        let json = serde_json::to_string(&s).expect("serializable");
        assert!(json.contains(r#""endpoints":["203.0.113.1:1194/udp","198.51.100.2:443/tcp"]"#));
        assert_eq!(
            serde_json::from_str::<GuardSpec>(&json).expect("round trip"),
            s
        );
        let cases = [
            (r#"{"interface":"wg0"}"#, "missing field `endpoints`"),
            (
                r#"{"interface":"wg0","endpoint":"203.0.113.1:1","endpoints":["203.0.113.2:1"]}"#,
                "both `endpoint` and `endpoints`",
            ),
            (r#"{"interface":"wg0","endpoints":[]}"#, "no endpoint"),
            (
                r#"{"interface":"wg0","endpoints":["203.0.113.2:1","203.0.113.2:1/udp"]}"#,
                "listed twice",
            ),
            (
                r#"{"interface":"wg0","endpoint":"203.0.113.1:1","extra":1}"#,
                "unknown field `extra`",
            ),
        ];
        for (json, expected) in cases {
            let err = serde_json::from_str::<GuardSpec>(json)
                .expect_err(json)
                .to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn debug_is_one_readable_line() {
        assert_eq!(
            format!("{:?}", spec()),
            "guard wg0 via 203.0.113.1:51820/udp mark 0xca6c dns [10.64.0.1]"
        );
    }

    #[test]
    fn failure_causes_read_leniently_and_older_daemons_send_none() {
        // As a daemon before the field sent it.
        let older: ManagedTunnel = serde_json::from_str(
            r#"{"backend":"userspace","servers":["a"],"server":0,"attempt":2,"last_event":null}"#,
        )
        .expect("an older daemon's managed tunnel");
        assert!(older.failures.is_empty());
        let newer: ManagedTunnel = serde_json::from_str(
            r#"{"backend":null,"servers":["a","b"],"server":1,"attempt":1,"last_event":null,
                "failures":[{"server":0,"cause":"no_handshake","message":"m"},
                            {"server":1,"cause":"quantum_noise","message":"n","hint":"x"}]}"#,
        )
        .expect("a newer daemon's causes");
        assert_eq!(
            newer.failures.iter().map(|f| f.cause).collect::<Vec<_>>(),
            vec![FailureCause::NoHandshake, FailureCause::Unknown]
        );
        // What a daemon sends is what `as_str` says.
        for cause in [
            FailureCause::NoHandshake,
            FailureCause::AnsweredWithoutHandshake,
            FailureCause::Unreachable,
            FailureCause::Silent,
            FailureCause::DeviceLost,
            FailureCause::DeviceCreation,
            FailureCause::Config,
            FailureCause::DeviceError,
        ] {
            assert_eq!(
                serde_json::to_value(cause).expect("serialisable"),
                serde_json::Value::from(cause.as_str())
            );
        }
    }
}
