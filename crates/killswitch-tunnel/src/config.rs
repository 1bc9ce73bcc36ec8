//! wg-quick style configuration files: what `killswitch up` takes.
//!
//! The format is wg-quick's: an `[Interface]` section and a `[Peer]` section of `Key = Value` lines,
//! `#` comments, keys case-insensitive, list keys (Address, DNS, AllowedIPs) comma-separated or
//! repeated. killswitch takes the keys that describe the tunnel, refuses the ones that would run
//! commands or manage routes behind its back (PreUp, PostUp, Table, ...), and refuses anything it
//! does not know, naming file, line and key. Values of secret keys never appear in an error.

use crate::key::{KeyError, PublicKey, SecretKey};
use ipnet::IpNet;
use killswitch_types::{Endpoint, Fwmark, TransportProtocol};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One tunnel: this machine's interface and its one peer, the VPN server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Where it came from (a file name), for messages.
    pub source: String,
    /// `[Interface] PrivateKey`.
    pub private_key: SecretKey,
    /// `[Interface] Address`: the tunnel's own addresses.
    pub addresses: Vec<IpNet>,
    /// `[Interface] DNS`: resolvers inside the tunnel.
    pub dns: Vec<IpAddr>,
    /// `[Interface] MTU`.
    pub mtu: Option<u16>,
    /// `[Interface] ListenPort`.
    pub listen_port: Option<u16>,
    /// `[Interface] FwMark`: the mark of the tunnel's own socket (killswitch picks one if absent).
    pub fwmark: Option<Fwmark>,
    /// The `[Peer]`.
    pub peer: PeerConfig,
}

/// The VPN server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// `PublicKey`.
    pub public_key: PublicKey,
    /// `PresharedKey`.
    pub preshared_key: Option<SecretKey>,
    /// `Endpoint`: an IP address and port.
    pub endpoint: SocketAddr,
    /// `AllowedIPs`.
    pub allowed_ips: Vec<IpNet>,
    /// `PersistentKeepalive`, in seconds.
    pub persistent_keepalive: Option<u16>,
}

impl TunnelConfig {
    /// The endpoint as the firewall's hole sees it.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.peer.endpoint,
            protocol: TransportProtocol::Udp,
        }
    }
}

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The line, from 1, when the problem is on one.
    pub line: Option<usize>,
    /// The key, when the problem is with one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Interface,
    Peer,
}

/// Keys wg-quick runs or acts on, which killswitch will not do behind the user's back.
const WG_QUICK_ONLY: [&str; 6] = [
    "preup",
    "postup",
    "predown",
    "postdown",
    "table",
    "saveconfig",
];

/// Parses the text of a configuration file called `source`.
pub fn parse(source: &str, text: &str) -> Result<TunnelConfig, ConfigError> {
    let error = |line: Option<usize>, key: Option<&str>, message: String| ConfigError {
        file: source.to_owned(),
        line,
        key: key.map(str::to_owned),
        message,
    };
    let mut section = Section::None;
    let mut peers = 0;
    let mut private_key = None;
    let (mut addresses, mut dns, mut allowed_ips) = (Vec::new(), Vec::new(), Vec::new());
    let (mut mtu, mut listen_port, mut fwmark) = (None, None, None);
    let (mut public_key, mut preshared_key, mut endpoint, mut keepalive) = (None, None, None, None);
    let mut seen: Vec<(Section, String)> = Vec::new();

    for (index, raw) in text.lines().enumerate() {
        let number = Some(index + 1);
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match name.trim().to_ascii_lowercase().as_str() {
                "interface"
                    if !seen.iter().any(|(s, _)| *s == Section::Interface)
                        && section != Section::Interface =>
                {
                    Section::Interface
                }
                "interface" => {
                    return Err(error(
                        number,
                        None,
                        "a second [Interface] section".to_owned(),
                    ));
                }
                "peer" => {
                    peers += 1;
                    if peers > 1 {
                        return Err(error(
                            number,
                            None,
                            "a second [Peer]: killswitch takes one server per file (give several files to fail over between them)".to_owned(),
                        ));
                    }
                    Section::Peer
                }
                other => return Err(error(number, None, format!("unknown section [{other}]"))),
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(error(number, None, "expected `Key = Value`".to_owned()));
        };
        let (key, value) = (key.trim(), value.trim());
        let lower = key.to_ascii_lowercase();
        let fail = |message: String| error(number, Some(key), message);
        if section == Section::None {
            return Err(fail(
                "outside any section: put it under [Interface] or [Peer]".to_owned(),
            ));
        }
        if WG_QUICK_ONLY.contains(&lower.as_str()) {
            return Err(fail("is a wg-quick option that killswitch does not honour (it runs no hooks and manages routes itself); remove it".to_owned()));
        }
        let list_key = matches!(lower.as_str(), "address" | "dns" | "allowedips");
        if !list_key && seen.contains(&(section, lower.clone())) {
            return Err(fail("given twice".to_owned()));
        }
        seen.push((section, lower.clone()));
        let secret = |r: Result<SecretKey, KeyError>| r.map_err(|e| fail(e.to_string()));
        match (section, lower.as_str()) {
            (Section::Interface, "privatekey") => {
                private_key = Some(secret(SecretKey::parse(value))?)
            }
            (Section::Interface, "address") => {
                for item in items(value) {
                    addresses.push(parse_address(item).map_err(&fail)?);
                }
            }
            (Section::Interface, "dns") => {
                for item in items(value) {
                    dns.push(item.parse::<IpAddr>().map_err(|_| {
                        fail(format!(
                            "{item:?} is not an IP address (search domains are not supported)"
                        ))
                    })?);
                }
            }
            (Section::Interface, "mtu") => {
                let value: u16 = value
                    .parse()
                    .map_err(|_| fail(format!("{value:?} is not a number")))?;
                if !(1280..=9200).contains(&value) {
                    return Err(fail(format!("{value} is outside 1280..=9200")));
                }
                mtu = Some(value);
            }
            (Section::Interface, "listenport") => {
                listen_port = Some(
                    value
                        .parse()
                        .map_err(|_| fail(format!("{value:?} is not a port number")))?,
                );
            }
            (Section::Interface, "fwmark") => {
                fwmark = if value.eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(value.parse::<Fwmark>().map_err(|e| fail(e.to_string()))?)
                };
            }
            (Section::Peer, "publickey") => {
                public_key = Some(PublicKey::parse(value).map_err(|e| fail(e.to_string()))?)
            }
            (Section::Peer, "presharedkey") => {
                preshared_key = Some(secret(SecretKey::parse(value))?)
            }
            (Section::Peer, "endpoint") => {
                if value.parse::<SocketAddr>().is_err() {
                    return Err(fail(format!(
                        "{value:?} is not IP:PORT (host names are not resolved: DNS is blocked outside the tunnel, and a name could be redirected)"
                    )));
                }
                // The same rules as `guard --endpoint`: no port 0, no address that cannot be a
                // server (loopback, broadcast, ...), whose hole would be meaningless or worse.
                let checked = value.parse::<Endpoint>().map_err(|e| fail(e.to_string()))?;
                endpoint = Some(checked.address);
            }
            (Section::Peer, "allowedips") => {
                for item in items(value) {
                    allowed_ips.push(parse_net(item).map_err(&fail)?);
                }
            }
            (Section::Peer, "persistentkeepalive") => {
                keepalive = if value.eq_ignore_ascii_case("off") {
                    None
                } else {
                    match value.parse::<u16>() {
                        Ok(0) => None,
                        Ok(seconds) => Some(seconds),
                        Err(_) => {
                            return Err(fail(format!(
                                "{value:?} is not a number of seconds or `off`"
                            )));
                        }
                    }
                };
            }
            _ => {
                let place = if section == Section::Interface {
                    "[Interface]"
                } else {
                    "[Peer]"
                };
                return Err(fail(format!("unknown key in {place}")));
            }
        }
    }

    let missing = |what: &str| error(None, Some(what), "missing".to_owned());
    let peer = PeerConfig {
        public_key: public_key
            .ok_or_else(|| missing(if peers == 0 { "[Peer]" } else { "PublicKey" }))?,
        preshared_key,
        endpoint: endpoint.ok_or_else(|| missing("Endpoint"))?,
        allowed_ips,
        persistent_keepalive: keepalive,
    };
    if peer.allowed_ips.is_empty() {
        return Err(missing("AllowedIPs"));
    }
    if addresses.is_empty() {
        return Err(missing("Address"));
    }
    Ok(TunnelConfig {
        source: source.to_owned(),
        private_key: private_key.ok_or_else(|| missing("PrivateKey"))?,
        addresses,
        dns,
        mtu,
        listen_port,
        fwmark,
        peer,
    })
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_net(item: &str) -> Result<IpNet, String> {
    item.parse::<IpNet>()
        .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{item:?} is not an address or network (e.g. 10.64.0.2/32)"))
}

/// An `Address` item: a network, whose address is one an interface can have.
fn parse_address(item: &str) -> Result<IpNet, String> {
    let net = parse_net(item)?;
    // The tunnel's own address: the kernel gives an unspecified one to no interface (and the
    // rules would then guard 0.0.0.0, which DHCP and ARP probes use), a loopback one never leaves
    // the machine, and a multicast or broadcast one is nobody's.
    let address = net.addr();
    let unusable = match address {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback() || v6.is_multicast(),
    };
    if unusable {
        return Err(format!(
            "{item:?} cannot be the tunnel's address (unspecified, loopback, multicast or broadcast)"
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# Server 1
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.64.0.2/32, fc00:bbbb::2/128
DNS = 10.64.0.1
MTU = 1420
FwMark = 0xca6c

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = /UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak= # inline comment
Endpoint = 198.51.100.1:51820
AllowedIPs = 0.0.0.0/0
AllowedIPs = ::/0
PersistentKeepalive = 25
";

    #[test]
    fn parses_a_full_file() {
        let config = parse("wg0.conf", GOOD).expect("valid");
        assert_eq!(config.addresses.len(), 2);
        assert_eq!(config.dns, vec!["10.64.0.1".parse::<IpAddr>().expect("ip")]);
        assert_eq!(
            (config.mtu, config.fwmark),
            (Some(1420), Fwmark::new(0xca6c))
        );
        assert_eq!(config.peer.allowed_ips.len(), 2, "repeated keys accumulate");
        assert_eq!(config.peer.persistent_keepalive, Some(25));
        assert!(config.peer.preshared_key.is_some());
        assert_eq!(config.endpoint().to_string(), "198.51.100.1:51820/udp");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("yAnz5") && !debug.contains("/UwcSPg"),
            "secrets in Debug: {debug}"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: [(&str, &str); 19] = [
            (
                "[Interface]\nAddress = 0.0.0.0/0\n",
                "wg0.conf:2: Address: \"0.0.0.0/0\" cannot be the tunnel's address",
            ),
            (
                "[Interface]\nAddress = 127.0.0.2/8\n",
                "wg0.conf:2: Address: \"127.0.0.2/8\" cannot be the tunnel's address",
            ),
            (
                "Address = 10.0.0.1/32\n",
                "wg0.conf:1: Address: outside any section",
            ),
            (
                "[Interface]\nPrivatKey = x\n",
                "wg0.conf:2: PrivatKey: unknown key in [Interface]",
            ),
            (
                "[Interface]\nPrivateKey = not-a-key\n",
                "wg0.conf:2: PrivateKey: not a WireGuard key",
            ),
            (
                "[Interface]\nAddress = 10.0.0.300/32\n",
                "wg0.conf:2: Address: \"10.0.0.300/32\" is not an address",
            ),
            (
                "[Interface]\nDNS = example.com\n",
                "wg0.conf:2: DNS: \"example.com\" is not an IP address",
            ),
            (
                "[Interface]\nMTU = 100\n",
                "wg0.conf:2: MTU: 100 is outside",
            ),
            (
                "[Interface]\nPostUp = iptables -F\n",
                "wg0.conf:2: PostUp: is a wg-quick option",
            ),
            (
                "[Interface]\nFwMark = 0\n",
                "wg0.conf:2: FwMark: invalid fwmark",
            ),
            (
                "[Peer]\nEndpoint = 127.0.0.1:51820\n",
                "wg0.conf:2: Endpoint: invalid endpoint \"127.0.0.1:51820\": a loopback address",
            ),
            (
                "[Peer]\nEndpoint = 255.255.255.255:51820\n",
                "wg0.conf:2: Endpoint: invalid endpoint \"255.255.255.255:51820\": the broadcast",
            ),
            (
                "[Peer]\nEndpoint = 198.51.100.1:0\n",
                "wg0.conf:2: Endpoint: invalid endpoint \"198.51.100.1:0\": port 0",
            ),
            (
                "[Peer]\nEndpoint = vpn.example.com:51820\n",
                "wg0.conf:2: Endpoint: \"vpn.example.com:51820\" is not IP:PORT",
            ),
            ("[Peer]\n[Peer]\n", "wg0.conf:2: a second [Peer]"),
            ("[Wireguard]\n", "wg0.conf:1: unknown section [wireguard]"),
            (
                "[Interface]\nListenPort = 1\nListenPort = 2\n",
                "wg0.conf:3: ListenPort: given twice",
            ),
            (
                "[Interface]\nthis is not a key value\n",
                "wg0.conf:2: expected `Key = Value`",
            ),
            (
                "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.0.0.2\n",
                "wg0.conf: [Peer]: missing",
            ),
        ];
        for (text, expected) in cases {
            let err = parse("wg0.conf", text).expect_err(text).to_string();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let text = "[Interface]\nPrivateKey = s3cr3t-but-broken\n";
        assert!(
            !parse("wg0.conf", text)
                .expect_err("bad key")
                .to_string()
                .contains("s3cr3t")
        );
        let text = "[Peer]\nPresharedKey = s3cr3t-but-broken\n";
        assert!(
            !parse("wg0.conf", text)
                .expect_err("bad key")
                .to_string()
                .contains("s3cr3t")
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let without = |key: &str| {
            GOOD.lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for (key, expected) in [
            ("PrivateKey", "PrivateKey: missing"),
            ("Endpoint", "Endpoint: missing"),
            ("AllowedIPs", "AllowedIPs: missing"),
            ("Address", "Address: missing"),
            ("PublicKey", "PublicKey: missing"),
        ] {
            let err = parse("wg0.conf", &without(key)).expect_err(key).to_string();
            assert!(err.ends_with(expected), "{key}: {err}");
        }
    }

    #[test]
    fn round_trips_through_json_for_the_state_file() {
        let config = parse("wg0.conf", GOOD).expect("valid");
        let json = serde_json::to_string(&config).expect("serializes");
        assert_eq!(
            serde_json::from_str::<TunnelConfig>(&json).ok(),
            Some(config)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "(\\[?[A-Za-z]{0,12}\\]?( ?= ?[ -~]{0,30})?\n){0,12}") {
            let _ = parse("fuzz.conf", &text);
        }
    }
}
