//! What the user last asked for: persisted, so that a restart (or a reboot) resumes it.

use killswitch_tunnel::config::{self, TunnelConfig};
use killswitch_types::ipc::{ConfigSource, ErrorKind, IpcError};
use killswitch_types::{GuardSpec, InterfaceName};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The target state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// `killswitch off`: no firewall at all.
    Off,
    /// `killswitch down`: no tunnel wanted (blocked if lockdown is on).
    #[default]
    Disconnected,
    /// `killswitch guard ...`: protect a tunnel another program runs.
    Guard(GuardSpec),
    /// `killswitch up ...`: run WireGuard, protected, failing over between servers.
    Up(UpSpec),
}

/// What `killswitch up` asked for: an interface and at least one server, each with a resolver.
/// Parsed, not validated: the only ways to make one ([`UpSpec::new`], and deserializing, which
/// goes through it) check both, so that code using it never indexes an empty list. Holds private
/// keys; persisted only in the root-only state directory, and its `Debug` shows none of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UpSpecFile", into = "UpSpecFile")]
pub struct UpSpec {
    /// The tunnel interface.
    pub interface: InterfaceName,
    /// The first server: there is always one (boxed: a spec travels inside small enums).
    first: Box<TunnelConfig>,
    /// The others, in failover order.
    rest: Vec<TunnelConfig>,
}

/// [`UpSpec`] as `settings.json` has it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpSpecFile {
    interface: InterfaceName,
    configs: Vec<TunnelConfig>,
}

impl TryFrom<UpSpecFile> for UpSpec {
    type Error = String;

    fn try_from(file: UpSpecFile) -> Result<Self, String> {
        UpSpec::new(file.interface, file.configs)
    }
}

impl From<UpSpec> for UpSpecFile {
    fn from(spec: UpSpec) -> Self {
        let mut configs = Vec::with_capacity(1 + spec.rest.len());
        configs.push(*spec.first);
        configs.extend(spec.rest);
        UpSpecFile {
            interface: spec.interface,
            configs,
        }
    }
}

impl UpSpec {
    /// A spec, if it is one the daemon can carry out: at least one server, and a resolver for
    /// each (DNS outside the tunnel is blocked, and the daemon checks a tunnel, and starts its
    /// handshake, by sending a query to that resolver through it).
    pub fn new(interface: InterfaceName, configs: Vec<TunnelConfig>) -> Result<Self, String> {
        if let Some(config) = configs.iter().find(|c| c.dns.is_empty()) {
            return Err(format!(
                "{}: no DNS = in [Interface]: killswitch up needs the tunnel's resolver (DNS outside \
                 the tunnel is blocked, and the daemon checks the tunnel by asking that resolver)",
                config.source
            ));
        }
        let mut configs = configs.into_iter();
        let first = configs
            .next()
            .ok_or_else(|| "up needs at least one configuration".to_owned())?;
        Ok(UpSpec {
            interface,
            first: Box::new(first),
            rest: configs.collect(),
        })
    }

    /// The servers, in failover order: never empty.
    pub fn servers(&self) -> impl Iterator<Item = &TunnelConfig> {
        std::iter::once(&*self.first).chain(&self.rest)
    }

    /// How many servers there are: at least one.
    pub fn server_count(&self) -> usize {
        1 + self.rest.len()
    }

    /// Server `index` (counted modulo [`UpSpec::server_count`], so any index names one).
    pub fn server(&self, index: usize) -> &TunnelConfig {
        match index % self.server_count() {
            0 => &self.first,
            n => self.rest.get(n - 1).unwrap_or(&self.first),
        }
    }

    /// The server after `index`, round the list.
    pub fn next(&self, index: usize) -> usize {
        (index + 1) % self.server_count()
    }
}

/// The most configurations one `up` may name.
pub const MAX_CONFIGS: usize = 16;

/// Turns an `up` request into a spec: reads configurations named only by name from
/// `wireguard_dir` (the client could not read them), parses everything, picks the interface name.
/// Warnings (a configuration readable by others) go to the log.
pub fn resolve_up(
    interface: Option<InterfaceName>,
    sources: &[ConfigSource],
    wireguard_dir: &Path,
) -> Result<UpSpec, IpcError> {
    let bad = |message: String| IpcError::new(ErrorKind::BadRequest, message);
    if sources.is_empty() {
        return Err(bad("up needs at least one configuration".to_owned()));
    }
    if sources.len() > MAX_CONFIGS {
        return Err(bad(format!("at most {MAX_CONFIGS} configurations")));
    }
    // A name goes into the log, `status` and every user's terminal: no control characters (an
    // escape sequence, or a newline that forges a log line).
    if let Some(source) = sources
        .iter()
        .find(|s| s.source.chars().any(char::is_control))
    {
        return Err(bad(format!(
            "the configuration name {:?} contains a control character",
            source.source
        )));
    }
    let mut configs = Vec::with_capacity(sources.len());
    for source in sources {
        let parsed = match &source.text {
            Some(text) => config::parse(&source.source, text),
            None => {
                let name = InterfaceName::new(source.source.as_str()).map_err(|_| {
                    bad(format!(
                        "{:?} is neither a file the client read nor a configuration name",
                        source.source
                    ))
                })?;
                let path = wireguard_dir.join(format!("{name}.conf"));
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
                let mode = std::fs::metadata(&path).map(|m| m.permissions().mode());
                if let Ok(mode) = mode
                    && mode & 0o077 != 0
                {
                    tracing::warn!(
                        "{} is readable by others (mode {:o}) and holds a private key: chmod 600 it",
                        path.display(),
                        mode & 0o777
                    );
                }
                config::parse(&path.display().to_string(), &text)
            }
        };
        configs.push(parsed.map_err(|e| bad(e.to_string()))?);
    }
    let interface = match interface {
        Some(name) => name,
        None => default_interface(&sources[0].source).map_err(bad)?,
    };
    if interface.as_str() == "lo" {
        return Err(bad("the tunnel interface cannot be lo".to_owned()));
    }
    UpSpec::new(interface, configs).map_err(bad)
}

/// wg-quick names the interface after the file: `/etc/wireguard/wg0.conf` is `wg0`. A file whose
/// name is no interface name is refused, as wg-quick refuses it, rather than given a made-up
/// name the user would not find in `ip link` or know to pass to `guard` later.
fn default_interface(source: &str) -> Result<InterfaceName, String> {
    let stem = Path::new(source)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    InterfaceName::new(stem).map_err(|e| {
        format!(
            "cannot name the tunnel after {source:?} ({e}); rename the file or choose a name \
             with --interface NAME"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.64.0.2/32\nDNS = 10.64.0.1\n\
        [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0\n";

    fn sent(source: &str, text: &str) -> ConfigSource {
        ConfigSource {
            source: source.to_owned(),
            text: Some(text.to_owned()),
        }
    }

    #[test]
    fn names_the_interface_after_the_first_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec =
            resolve_up(None, &[sent("/home/me/vpn/se-1.conf", CONF)], dir.path()).expect("valid");
        assert_eq!(spec.interface.as_str(), "se-1");
        let refused = resolve_up(
            None,
            &[sent("a-name-much-too-long-for-an-interface.conf", CONF)],
            dir.path(),
        );
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.message.contains("--interface NAME")),
            "{refused:?}"
        );
        let spec = resolve_up(
            InterfaceName::new("wgx").ok(),
            &[sent("x.conf", CONF)],
            dir.path(),
        )
        .expect("valid");
        assert_eq!(spec.interface.as_str(), "wgx");
    }

    #[test]
    fn reads_names_from_the_wireguard_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("wg7.conf"), CONF).expect("write");
        let by_name = ConfigSource {
            source: "wg7".to_owned(),
            text: None,
        };
        let spec = resolve_up(None, &[by_name], dir.path()).expect("valid");
        assert_eq!((spec.interface.as_str(), spec.server_count()), ("wg7", 1));
        let missing = ConfigSource {
            source: "wg8".to_owned(),
            text: None,
        };
        let err = resolve_up(None, &[missing], dir.path()).expect_err("missing");
        assert!(err.message.contains("wg8.conf"), "{}", err.message);
        let sneaky = ConfigSource {
            source: "../../etc/shadow".to_owned(),
            text: None,
        };
        assert!(
            resolve_up(None, &[sneaky], dir.path()).is_err(),
            "names are interface names, not paths"
        );
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = resolve_up(
            None,
            &[
                sent("a.conf", CONF),
                sent("b.conf", "[Interface]\nMTU = x\n"),
            ],
            dir.path(),
        )
        .expect_err("bad");
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.starts_with("b.conf:2: MTU:"), "{}", err.message);
        assert!(resolve_up(None, &[], dir.path()).is_err());
    }

    #[test]
    fn a_name_with_control_characters_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = resolve_up(
            None,
            &[sent("/tmp/a\u{1b}[31m\nFAKE-LINE.conf", CONF)],
            dir.path(),
        )
        .expect_err("control characters");
        assert!(err.message.contains("control character"), "{}", err.message);
        assert!(!err.message.contains('\u{1b}') && !err.message.contains('\n'));
    }

    #[test]
    fn debug_hides_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = resolve_up(None, &[sent("a.conf", CONF)], dir.path()).expect("valid");
        assert!(!format!("{:?}", Target::Up(spec)).contains("yAnz5"));
    }
}
