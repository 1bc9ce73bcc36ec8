//! `killswitch guard`: the request from the command line, an OpenVPN file and host names.
//!
//! What the user can read is read here, with the user's permissions: an OpenVPN configuration
//! (`--ovpn`) and host names (in its `remote`s or in `--endpoint`), resolved once, now, every
//! address covered. What only root can read (a WireGuard device, systemd-resolved's link state)
//! is left to the daemon: anything not given goes out as a `guard-discover` request, which the
//! daemon completes. A request with everything given goes out as a plain `guard`, which daemons of
//! earlier releases understand too.

use killswitch_types::ipc::Request;
use killswitch_types::{
    Endpoint, Fwmark, GuardQuery, GuardSpec, InterfaceName, MAX_ENDPOINTS, TransportProtocol,
};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

/// OpenVPN's port when neither the `remote` nor the file names one.
const OPENVPN_PORT: u16 = 1194;

/// Which addresses a host name may resolve to (`udp4`, `tcp6` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// One `remote` of an OpenVPN file, with the defaults of its file (or `<connection>`) applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    /// The host, as written (an address or a name).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its protocol.
    pub protocol: TransportProtocol,
    /// The address family the protocol restricts it to, if any.
    pub family: Option<Family>,
}

/// What a guard needs from an OpenVPN file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ovpn {
    /// Every `remote`, in the file's order.
    pub remotes: Vec<Remote>,
    /// Its `mark`, if any.
    pub mark: Option<u32>,
}

/// `proto`'s value: the protocol and the family it restricts to.
fn protocol(value: &str) -> Option<(TransportProtocol, Option<Family>)> {
    Some(match value.to_ascii_lowercase().as_str() {
        "udp" => (TransportProtocol::Udp, None),
        "udp4" => (TransportProtocol::Udp, Some(Family::V4)),
        "udp6" => (TransportProtocol::Udp, Some(Family::V6)),
        "tcp" | "tcp-client" => (TransportProtocol::Tcp, None),
        "tcp4" | "tcp4-client" => (TransportProtocol::Tcp, Some(Family::V4)),
        "tcp6" | "tcp6-client" => (TransportProtocol::Tcp, Some(Family::V6)),
        _ => return None,
    })
}

/// The defaults a block (the file, or one `<connection>`) gives its `remote`s.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    port: Option<u16>,
    protocol: Option<(TransportProtocol, Option<Family>)>,
}

/// A `remote` line before the defaults are known (OpenVPN applies `proto` and `port` wherever
/// in the file they are).
struct Pending {
    host: String,
    port: Option<u16>,
    protocol: Option<(TransportProtocol, Option<Family>)>,
    /// Which `<connection>` block it is in, if any.
    block: Option<usize>,
}

/// Reads the `remote`s, `proto`, `port`/`rport`, `mark` and `<connection>` blocks of an OpenVPN
/// configuration; everything else is ignored. Errors name the file's line.
pub(crate) fn parse_ovpn(text: &str) -> Result<Ovpn, String> {
    let mut global = Defaults {
        port: None,
        protocol: None,
    };
    let mut blocks: Vec<Defaults> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut mark = None;
    let mut inline: Option<String> = None;
    let mut block: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if let Some(tag) = &inline {
            if line.eq_ignore_ascii_case(&format!("</{tag}>")) {
                inline = None;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.eq_ignore_ascii_case("<connection>") {
            blocks.push(Defaults {
                port: None,
                protocol: None,
            });
            block = Some(blocks.len() - 1);
            continue;
        }
        if line.eq_ignore_ascii_case("</connection>") {
            block = None;
            continue;
        }
        if let Some(tag) = line.strip_prefix('<').and_then(|l| l.strip_suffix('>')) {
            // An inline file (`<ca>` ... `</ca>`): its lines are not options.
            inline = Some(tag.to_owned());
            continue;
        }
        let words: Vec<&str> = line
            .split_whitespace()
            .take_while(|w| !w.starts_with('#') && !w.starts_with(';'))
            .collect();
        let bad = |what: &str| format!("line {line_no}: {what}: {line:?}");
        let port_of = |w: &str| {
            w.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("not a port (1-65535)"))
        };
        let proto_of = |w: &str| {
            protocol(w)
                .ok_or_else(|| bad("not a protocol (udp, udp4, udp6, tcp, tcp-client, tcp4, tcp6)"))
        };
        let defaults = match block {
            Some(i) => &mut blocks[i],
            None => &mut global,
        };
        match words.as_slice() {
            ["remote", host, rest @ ..] => {
                if rest.len() > 2 {
                    return Err(bad("expected remote HOST [PORT] [PROTO]"));
                }
                pending.push(Pending {
                    host: (*host).to_owned(),
                    port: rest.first().map(|p| port_of(p)).transpose()?,
                    protocol: rest.get(1).map(|p| proto_of(p)).transpose()?,
                    block,
                });
            }
            ["remote"] => return Err(bad("remote without a host")),
            ["proto", value] => defaults.protocol = Some(proto_of(value)?),
            ["port" | "rport", value] => defaults.port = Some(port_of(value)?),
            ["mark", value] => {
                // OpenVPN reads the mark with atoi(): `mark 0x6f76` is mark 0 to it, no mark at
                // all. Taking it as 0x6f76 here would open a hole its packets never use.
                if let Some(hex) = value
                    .strip_prefix("0x")
                    .or_else(|| value.strip_prefix("0X"))
                {
                    let decimal = u32::from_str_radix(hex, 16)
                        .map_or_else(|_| "a decimal number".to_owned(), |m| m.to_string());
                    return Err(bad(&format!(
                        "OpenVPN reads a mark as a decimal number, so `mark {value}` sets no mark at all; write `mark {decimal}`"
                    )));
                }
                let value = value
                    .parse::<u32>()
                    .ok()
                    .filter(|m| *m != 0)
                    .ok_or_else(|| bad("not a mark (1-4294967295)"))?;
                mark = Some(value);
            }
            _ => {}
        }
    }
    let remotes = pending
        .into_iter()
        .map(|p| {
            let local = p.block.map(|i| blocks[i]);
            let (protocol, family) = p
                .protocol
                .or(local.and_then(|d| d.protocol))
                .or(global.protocol)
                .unwrap_or((TransportProtocol::Udp, None));
            let port = p
                .port
                .or(local.and_then(|d| d.port))
                .or(global.port)
                .unwrap_or(OPENVPN_PORT);
            Remote {
                host: p.host,
                port,
                protocol,
                family,
            }
        })
        .collect();
    Ok(Ovpn { remotes, mark })
}

/// The endpoints of `host`: itself if it is an address, else every address it resolves to now
/// (of `family`, if restricted). A name that resolves to nothing usable is an error.
fn resolve(
    host: &str,
    port: u16,
    protocol: TransportProtocol,
    family: Option<Family>,
) -> Result<Vec<Endpoint>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (bare, port)
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "cannot resolve {host}: {e} (if a kill switch blocks DNS now, give its addresses instead)"
                )
            })?
            .map(|s| s.ip())
            .collect(),
    };
    let mut endpoints = Vec::new();
    for ip in addresses {
        let wanted = match family {
            Some(Family::V4) => ip.is_ipv4(),
            Some(Family::V6) => ip.is_ipv6(),
            None => true,
        };
        if !wanted {
            continue;
        }
        let endpoint: Endpoint = format!("{}/{protocol}", std::net::SocketAddr::new(ip, port))
            .parse()
            .map_err(|e| format!("{host}: {e}"))?;
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    if endpoints.is_empty() {
        return Err(format!("{host} resolves to no usable address"));
    }
    Ok(endpoints)
}

/// An `--endpoint` value: `IP:PORT[/PROTO]` as is, or `HOST:PORT[/PROTO]` resolved. The notes
/// say what a name resolved to.
fn endpoint_arg(value: &str, notes: &mut Vec<String>) -> Result<Vec<Endpoint>, String> {
    let error = match value.parse::<Endpoint>() {
        Ok(endpoint) => return Ok(vec![endpoint]),
        Err(e) => e,
    };
    let (address, protocol) = match value.rsplit_once('/') {
        Some((a, p)) => match protocol(p) {
            Some((protocol, _)) => (a, protocol),
            None => return Err(error.to_string()),
        },
        None => (value, TransportProtocol::Udp),
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(error.to_string());
    };
    // Only a name is resolved: an address that failed to parse failed for a reason of its own.
    let is_name = !host.is_empty()
        && host.parse::<IpAddr>().is_err()
        && !host.starts_with('[')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p != 0) else {
        return Err(error.to_string());
    };
    if !is_name {
        return Err(error.to_string());
    }
    let endpoints = resolve(host, port, protocol, None)?;
    notes.push(format!("{host} resolved to {}", list(&endpoints)));
    Ok(endpoints)
}

fn list(endpoints: &[Endpoint]) -> String {
    endpoints
        .iter()
        .map(Endpoint::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `killswitch guard` was given.
#[derive(Debug)]
pub(crate) struct GuardArgs<'a> {
    /// The interface.
    pub interface: InterfaceName,
    /// `--endpoint` values.
    pub endpoints: &'a [String],
    /// `--ovpn`.
    pub ovpn: Option<&'a Path>,
    /// `--dns`.
    pub dns: Vec<IpAddr>,
    /// `--mark`.
    pub mark: Option<Fwmark>,
    /// `--uid`.
    pub uid: Option<u32>,
}

/// The request for `args`, and what this command found on its way (resolved names, an OpenVPN
/// file's servers). The error is one line for the user.
pub(crate) fn request(args: GuardArgs<'_>) -> Result<(Request, Vec<String>), String> {
    let mut notes = Vec::new();
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut add = |list: Vec<Endpoint>| {
        for e in list {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
    };
    for value in args.endpoints {
        add(endpoint_arg(value, &mut notes)?);
    }
    let mut mark = args.mark;
    if let Some(path) = args.ovpn {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let ovpn = parse_ovpn(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if mark.is_none() {
            mark = ovpn.mark.and_then(Fwmark::new);
        }
        if args.endpoints.is_empty() {
            if ovpn.remotes.is_empty() {
                return Err(format!(
                    "{} has no `remote` line: pass --endpoint HOST:PORT[/PROTO]",
                    path.display()
                ));
            }
            let count = ovpn.remotes.len();
            let mut found = Vec::new();
            for remote in ovpn.remotes {
                found.extend(resolve(
                    &remote.host,
                    remote.port,
                    remote.protocol,
                    remote.family,
                )?);
            }
            notes.push(format!(
                "servers from {} ({count} remote(s)): {}",
                path.display(),
                list(&found)
            ));
            add(found);
        }
    }
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(format!(
            "{} endpoints in all; at most {MAX_ENDPOINTS} (each one is a hole)",
            endpoints.len()
        ));
    }
    let complete =
        !endpoints.is_empty() && !args.dns.is_empty() && (mark.is_some() || args.uid.is_some());
    if complete {
        let spec = GuardSpec {
            interface: args.interface,
            endpoints: killswitch_types::Endpoints::new(endpoints).map_err(|e| e.to_string())?,
            dns: args.dns,
            mark,
            uid: args.uid,
        };
        spec.validate().map_err(|e| e.to_string())?;
        return Ok((Request::Guard(spec), notes));
    }
    Ok((
        Request::GuardDiscover(GuardQuery {
            interface: args.interface,
            endpoints,
            dns: (!args.dns.is_empty()).then_some(args.dns),
            mark,
            uid: args.uid,
        }),
        notes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_remote_with_its_files_defaults() {
        let text = "client\ndev tun\n# a comment\nremote 198.51.100.1\nremote 203.0.113.7 443 tcp-client ; trailing\nremote vpn.example.net 1195 udp6\nproto tcp\nport 8443\nmark 51820\n<ca>\n-----BEGIN CERTIFICATE-----\nremote 192.0.2.99 1\n</ca>\n";
        let ovpn = parse_ovpn(text).expect("valid");
        let remote = |host: &str, port, protocol, family| Remote {
            host: host.to_owned(),
            port,
            protocol,
            family,
        };
        assert_eq!(
            ovpn.remotes,
            [
                // `proto` and `port` apply wherever in the file they are.
                remote("198.51.100.1", 8443, TransportProtocol::Tcp, None),
                remote("203.0.113.7", 443, TransportProtocol::Tcp, None),
                remote(
                    "vpn.example.net",
                    1195,
                    TransportProtocol::Udp,
                    Some(Family::V6)
                ),
            ]
        );
        assert_eq!(ovpn.mark, Some(51820));
    }

    #[test]
    fn connection_blocks_have_their_own_defaults() {
        let text = "proto udp\n<connection>\nremote 198.51.100.1\nproto tcp\nport 443\n</connection>\n<connection>\nremote 198.51.100.2\n</connection>\n";
        let ovpn = parse_ovpn(text).expect("valid");
        let got: Vec<(u16, TransportProtocol)> =
            ovpn.remotes.iter().map(|r| (r.port, r.protocol)).collect();
        assert_eq!(
            got,
            [
                (443, TransportProtocol::Tcp),
                (1194, TransportProtocol::Udp)
            ]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, expected) in [
            ("remote 198.51.100.1 70000\n", "line 1: not a port"),
            (
                "\nremote 198.51.100.1 1194 sctp\n",
                "line 2: not a protocol",
            ),
            ("proto quic\n", "not a protocol"),
            ("mark 0\n", "not a mark"),
            ("mark 0x6f76\n", "sets no mark at all; write `mark 28534`"),
            ("remote\n", "remote without a host"),
        ] {
            let err = parse_ovpn(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn addresses_need_no_resolver_and_families_filter() {
        let v4 = resolve("198.51.100.1", 1194, TransportProtocol::Udp, None).expect("an address");
        assert_eq!(
            v4,
            ["198.51.100.1:1194/udp"
                .parse::<Endpoint>()
                .expect("literal")]
        );
        let v6 = resolve("[2001:db8::1]", 443, TransportProtocol::Tcp, None).expect("an address");
        assert_eq!(v6[0].to_string(), "[2001:db8::1]:443/tcp");
        let err = resolve(
            "198.51.100.1",
            1194,
            TransportProtocol::Udp,
            Some(Family::V6),
        )
        .expect_err("wrong family");
        assert!(err.contains("no usable address"), "{err}");
        let err = resolve("127.0.0.1", 1194, TransportProtocol::Udp, None).expect_err("loopback");
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn endpoint_args_parse_or_resolve() {
        let mut notes = Vec::new();
        let e = endpoint_arg("198.51.100.1:51820", &mut notes).expect("an address");
        assert_eq!(e[0].to_string(), "198.51.100.1:51820/udp");
        // "localhost" resolves without any network, to loopback: refused as a VPN server.
        let err = endpoint_arg("localhost:1194/tcp", &mut notes).expect_err("loopback");
        assert!(err.contains("loopback"), "{err}");
        // Not a name: the endpoint parser's own error.
        let err = endpoint_arg("198.51.100.1:0", &mut notes).expect_err("port 0");
        assert!(err.contains("port 0"), "{err}");
        let err = endpoint_arg("203.0.113.1", &mut notes).expect_err("no port");
        assert!(err.contains("expected IP:PORT"), "{err}");
        assert!(notes.is_empty());
    }

    fn args<'a>(endpoints: &'a [String], dns: Vec<IpAddr>, mark: Option<u32>) -> GuardArgs<'a> {
        GuardArgs {
            interface: "wg0".parse().expect("literal"),
            endpoints,
            ovpn: None,
            dns,
            mark: mark.and_then(Fwmark::new),
            uid: None,
        }
    }

    #[test]
    fn everything_given_is_a_plain_guard_anything_missing_is_discovered() {
        let endpoints = ["198.51.100.1:51820".to_owned()];
        let dns = vec!["10.64.0.1".parse().expect("literal")];
        let (sent, _) = request_of(args(&endpoints, dns.clone(), Some(0xca6c)));
        assert!(matches!(sent, Request::Guard(_)), "{sent:?}");
        let (request, _) = request_of(args(&endpoints, dns, None));
        assert!(
            matches!(&request, Request::GuardDiscover(q) if q.endpoints.len() == 1 && q.mark.is_none()),
            "{request:?}"
        );
        let (request, _) = request_of(args(&[], vec![], None));
        assert!(
            matches!(&request, Request::GuardDiscover(q) if q.endpoints.is_empty() && q.dns.is_none()),
            "{request:?}"
        );
    }

    fn request_of(args: GuardArgs<'_>) -> (Request, Vec<String>) {
        request(args).expect("valid")
    }

    #[test]
    fn an_ovpn_file_gives_servers_and_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("work.ovpn");
        std::fs::write(
            &path,
            "remote 198.51.100.1 1194\nremote 203.0.113.1 1194\nmark 51820\n",
        )
        .expect("written");
        let mut a = args(&[], vec![], None);
        a.ovpn = Some(&path);
        let (sent, notes) = request_of(a);
        let Request::GuardDiscover(query) = sent else {
            panic!("no DNS given: discovered");
        };
        assert_eq!(query.endpoints.len(), 2);
        assert_eq!(query.mark, Fwmark::new(51820));
        assert!(
            notes[0].contains("(2 remote(s)): 198.51.100.1:1194/udp, 203.0.113.1:1194/udp"),
            "{notes:?}"
        );
        std::fs::write(&path, "client\n").expect("written");
        let mut a = args(&[], vec![], None);
        a.ovpn = Some(&path);
        let err = request(a).expect_err("no remote");
        assert!(err.contains("no `remote` line: pass --endpoint"), "{err}");
    }
}
