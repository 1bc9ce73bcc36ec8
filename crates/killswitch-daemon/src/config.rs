//! `/etc/killswitch/config.toml`: what the administrator decides once.
//!
//! Every field has a default, so a missing file is a valid configuration. A file that exists but
//! cannot be read or parsed is not silently ignored: the daemon starts in `blocked` with the parse
//! error in its status, so a typo fails closed and says where it is.

use serde::Deserialize;
use std::path::Path;

/// The default path of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/killswitch/config.toml";

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Members of this group may change the kill switch, as root may. Others may only read.
    pub admin_group: String,
    /// Where `killswitch up NAME` finds `NAME.conf`.
    pub wireguard_dir: std::path::PathBuf,
    /// How long an up tunnel may go without a sign of life (received data, a handshake, an answer
    /// to a probe) before it is declared dead and the next server is tried.
    pub dead_after_seconds: f64,
    /// How `up` points applications at the tunnel's resolvers: "auto" (systemd-resolved when it
    /// runs, resolv.conf otherwise), "resolved", "resolv-conf" or "off".
    pub dns: crate::dns::DnsMode,
    /// The resolv.conf written when DNS is managed through a file.
    pub resolv_conf: std::path::PathBuf,
    /// What `allow-lan` opens: these subnets only (each inside the private, link-local or ULA
    /// ranges). Empty: all of those ranges. However many, each packet costs one set lookup.
    pub lan_subnets: Vec<ipnet::IpNet>,
    /// Interfaces whose traffic passes both ways outside the tunnel (`tailscale0`); never a
    /// physical one.
    pub allow_interfaces: Vec<killswitch_types::InterfaceName>,
    /// Subnets reachable outside the tunnel, each by one interface: `"10.99.0.0/16 on eth0"`; a
    /// range outside the private ones only with `public` after the interface.
    pub allow_subnets: Vec<killswitch_types::SubnetAllow>,
    /// Services of this machine reachable from outside the tunnel: `"tcp/22 on eth0"` admits new
    /// connections to port 22 arriving on eth0, and their replies only.
    pub allow_inbound: Vec<killswitch_types::InboundAllow>,
    /// Whether this machine's own container and VM bridges (docker0, virbr0 ...) are recognised
    /// and their local traffic allowed.
    pub detect_local_bridges: bool,
    /// Users whose processes may send only through the tunnel, in every state (even `off` and
    /// `disconnected`): user names (`debian-transmission`) or uids (`1001`), resolved by the
    /// daemon at start and on reload. One that names no user is refused (shown in `status`), the
    /// others apply.
    pub tunnel_only_users: Vec<String>,
    /// Router mode ([`crate::router`]): the LAN interfaces this machine is the gateway of; their
    /// clients' forwarded traffic leaves through the tunnel or not at all, in every state. Never
    /// `lo` or an exec veth (refused here), the tunnel or the WAN (refused in `status`).
    pub router_lan_interfaces: Vec<killswitch_types::InterfaceName>,
    /// Where `killswitch exec` namespaces get their subnets (a /30 each); IPv4, and better one
    /// that nothing the programs want to reach uses.
    pub exec_subnet: ipnet::Ipv4Net,
    /// How many `killswitch exec` programs one user may have running at once.
    pub exec_limit_per_user: usize,
    /// Protect only `killswitch exec` programs and tunnel-only users, never this machine's own
    /// traffic (no machine-wide rules, no machine-wide routing into the tunnel, resolv.conf left
    /// alone). `killswitch apps-only on` does the same from the command line; while this is
    /// true, `apps-only off` is refused.
    pub apps_only: bool,
    /// Executables whose processes (in this network namespace) are frozen while the tunnel is
    /// lost and thawed when it is back ([`crate::freeze`]): absolute paths, matched by the file
    /// the kernel runs. One that does not exist is refused (shown in `status`), the others apply.
    pub freeze_on_drop: Vec<std::path::PathBuf>,
    /// The same, killed instead of frozen.
    pub kill_on_drop: Vec<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            admin_group: "killswitch".to_owned(),
            wireguard_dir: "/etc/wireguard".into(),
            dead_after_seconds: 3.0,
            dns: crate::dns::DnsMode::Auto,
            resolv_conf: "/etc/resolv.conf".into(),
            lan_subnets: Vec::new(),
            allow_interfaces: Vec::new(),
            allow_subnets: Vec::new(),
            allow_inbound: Vec::new(),
            detect_local_bridges: true,
            tunnel_only_users: Vec::new(),
            router_lan_interfaces: Vec::new(),
            exec_subnet: crate::exec::DEFAULT_SUBNET
                .parse()
                .unwrap_or_else(|_| ipnet::Ipv4Net::default()),
            exec_limit_per_user: crate::exec::registry::DEFAULT_LIMIT_PER_USER,
            apps_only: false,
            freeze_on_drop: Vec::new(),
            kill_on_drop: Vec::new(),
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("invalid configuration in {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the line and key.
        message: String,
    },
}

impl Config {
    /// What allow-lan opens.
    pub fn lan(&self) -> Result<killswitch_policy::Lan, String> {
        if self.lan_subnets.is_empty() {
            Ok(killswitch_policy::Lan::default())
        } else {
            killswitch_policy::Lan::subnets(self.lan_subnets.clone())
        }
    }

    /// The explicit allows.
    pub fn allows(&self) -> killswitch_types::Allows {
        // Each once, however often the file lists it.
        killswitch_types::Allows::default().merged(&killswitch_types::Allows {
            interfaces: self.allow_interfaces.clone(),
            subnets: self.allow_subnets.clone(),
            inbound: self.allow_inbound.clone(),
        })
    }

    /// Checks the file at `path` as [`Config::load`] would: `Ok(true)` valid, `Ok(false)` no such
    /// file (the defaults), or the error as one line, `FILE: line L, column C: what`.
    pub fn check(path: &Path) -> Result<bool, String> {
        if !path.exists() {
            return Ok(false);
        }
        Config::load(path).map(|_| true).map_err(|e| match e {
            ConfigError::Parse { path, message } => format!("{path}: {message}"),
            other => other.to_string(),
        })
    }

    /// Loads the configuration from `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match read_bounded(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| located(text, &e))?;
        if config.admin_group.is_empty() {
            return Err("admin_group must not be empty".to_owned());
        }
        if !(1.0..=300.0).contains(&config.dead_after_seconds) {
            return Err(format!(
                "dead_after_seconds = {} is outside 1 to 300",
                config.dead_after_seconds
            ));
        }
        config.lan().map_err(|e| format!("lan_subnets: {e}"))?;
        crate::exec::registry::check_block(config.exec_subnet)?;
        if config.exec_limit_per_user == 0 {
            return Err(
                "exec_limit_per_user = 0 would refuse every `killswitch exec`; \
                        give at least 1"
                    .to_owned(),
            );
        }
        killswitch_policy::check_allows(&config.allows())?;
        check_on_drop(&config.freeze_on_drop, &config.kill_on_drop)?;
        for lan in &config.router_lan_interfaces {
            crate::router::check_name(lan)
                .map_err(|why| format!("router_lan_interfaces: {why}"))?;
        }
        if !config.resolv_conf.is_absolute() {
            return Err(format!(
                "resolv_conf = {:?} is not an absolute path",
                config.resolv_conf
            ));
        }
        Ok(config)
    }
}

/// `freeze_on_drop` and `kill_on_drop`: absolute paths, each named once across both lists (a
/// program cannot be both frozen and killed). Whether each exists is looked at when it is used,
/// as for tunnel-only users: a program not installed yet is refused in `status`, not a broken file.
fn check_on_drop(freeze: &[std::path::PathBuf], kill: &[std::path::PathBuf]) -> Result<(), String> {
    let all = (freeze.iter().map(|p| ("freeze_on_drop", p)))
        .chain(kill.iter().map(|p| ("kill_on_drop", p)));
    let mut seen: Vec<(&str, &std::path::PathBuf)> = Vec::new();
    for (key, path) in all {
        if !path.is_absolute() {
            return Err(format!(
                "{key}: {path:?} is not an absolute path (name the executable as /usr/bin/NAME)"
            ));
        }
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == path) {
            return Err(if *other == key {
                format!("{key}: {path:?} is listed twice")
            } else {
                format!("{path:?} is in both freeze_on_drop and kill_on_drop: choose one")
            });
        }
        seen.push((key, path));
    }
    Ok(())
}

/// A parser's error as one line: `line L, column C: what` (where the parser knows the place).
fn located(text: &str, error: &toml::de::Error) -> String {
    let what = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            // A span off a character boundary would be the parser's bug: count the whole text
            // then rather than panic on a user's file.
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // The line itself, so that the key is named even when the message does not name it
            // (a wrong type names only the value).
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            let source: String = source.chars().take(80).collect();
            format!("line {line}, column {column}: {what} (in `{source}`)")
        }
        None => what,
    }
}

/// The largest configuration file read (a long `lan_subnets` list fits many times over).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a configuration file that must be a regular file of at most [`MAX_CONFIG_BYTES`]: a FIFO
/// (opened without blocking, then refused) or `/dev/zero` must neither hang nor exhaust the
/// daemon before it has installed anything. A symlink is followed: configuration management
/// often links the file into place.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_says_valid_missing_or_where_the_problem_is_on_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        assert_eq!(Config::check(&file), Ok(false));
        std::fs::write(&file, "admin_group = \"vpn\"\n").expect("write");
        assert_eq!(Config::check(&file), Ok(true));
        std::fs::write(
            &file,
            "admin_group = \"vpn\"\nallow_inbound = [\"tcp/22\"]\n",
        )
        .expect("write");
        let err = Config::check(&file).expect_err("invalid");
        assert!(
            err.starts_with(&format!("{}: line 2, column 17: ", file.display()))
                && err.contains("tcp/22 on eth0")
                && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn explicit_allows_parse_and_bad_ones_name_the_entry() {
        let config = Config::parse(
            "allow_interfaces = [\"tailscale0\"]\n\
             allow_subnets = [\"10.99.0.0/16 on eth0\", \"198.51.100.0/24 on eth0 public\"]\n\
             allow_inbound = [\"tcp/22 on eth0\"]\n\
             detect_local_bridges = false\n",
        )
        .expect("valid");
        let allows = config.allows();
        assert_eq!(allows.interfaces.len(), 1);
        assert_eq!(allows.subnets.len(), 2);
        assert_eq!(allows.inbound[0].to_string(), "tcp/22 on eth0");
        assert!(!config.detect_local_bridges);
        assert!(Config::default().detect_local_bridges, "on by default");
        for (bad, names) in [
            ("allow_subnets = [\"8.8.8.0/24 on eth0\"]", "8.8.8.0/24"),
            ("allow_inbound = [\"tcp/22\"]", "tcp/22"),
            ("allow_inbound = [\"icmp/1 on eth0\"]", "icmp"),
            ("allow_interfaces = [\"lo\"]", "lo"),
            (
                "allow_interfaces = [\"a-name-far-too-long\"]",
                "a-name-far-too-long",
            ),
        ] {
            let err = Config::parse(bad).expect_err(bad);
            assert!(err.contains(names), "{bad}: {err}");
        }
    }

    #[test]
    fn freeze_and_kill_on_drop_take_absolute_paths_each_once() {
        let config = Config::parse(
            "freeze_on_drop = [\"/usr/bin/transmission-daemon\", \"/opt/b/browser\"]\n\
             kill_on_drop = [\"/usr/bin/qbittorrent-nox\"]\n",
        )
        .expect("valid");
        assert_eq!(config.freeze_on_drop.len(), 2);
        assert_eq!(
            config.kill_on_drop,
            [std::path::PathBuf::from("/usr/bin/qbittorrent-nox")]
        );
        // A path that does not exist is not the file's error: it is refused when used.
        assert!(Config::parse("freeze_on_drop = [\"/no/such/program\"]").is_ok());
        for (bad, says) in [
            (
                "freeze_on_drop = [\"transmission-daemon\"]",
                "freeze_on_drop: \"transmission-daemon\" is not an absolute path",
            ),
            (
                "kill_on_drop = [\"bin/x\"]",
                "kill_on_drop: \"bin/x\" is not an absolute path",
            ),
            (
                "freeze_on_drop = [\"/usr/bin/a\", \"/usr/bin/a\"]",
                "freeze_on_drop: \"/usr/bin/a\" is listed twice",
            ),
            (
                "freeze_on_drop = [\"/usr/bin/a\"]\nkill_on_drop = [\"/usr/bin/a\"]",
                "\"/usr/bin/a\" is in both freeze_on_drop and kill_on_drop",
            ),
            ("freeze_on_drop = \"/usr/bin/a\"", "freeze_on_drop"),
        ] {
            let err = Config::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_fifo_or_an_endless_file_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("config.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let error = Config::load(&fifo).expect_err("a FIFO");
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let error = Config::load(Path::new("/dev/zero")).expect_err("endless");
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }

    #[test]
    fn the_shipped_file_shows_exactly_the_defaults() {
        let shipped = include_str!("../../../packaging/config.toml");
        assert_eq!(Config::parse(shipped), Ok(Config::default()));
    }

    #[test]
    fn router_lan_interfaces_are_read_and_impossible_ones_refused_by_name() {
        let config =
            Config::parse("router_lan_interfaces = [\"lan0\", \"br-lan\"]\n").expect("valid");
        assert_eq!(
            config
                .router_lan_interfaces
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>(),
            ["lan0", "br-lan"]
        );
        for (text, says) in [
            ("router_lan_interfaces = [\"lo\"]\n", "loopback"),
            ("router_lan_interfaces = [\"ksx0\"]\n", "killswitch exec"),
            (
                "router_lan_interfaces = [\"a/b\"]\n",
                "router_lan_interfaces",
            ),
            ("router_lan_interfaces = [\"\"]\n", "router_lan_interfaces"),
            (
                "router_lan_interfaces = \"lan0\"\n",
                "router_lan_interfaces",
            ),
            ("router_lans = [\"lan0\"]\n", "router_lans"),
        ] {
            let err = Config::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn exec_keys_are_checked() {
        let config = Config::parse("exec_subnet = \"10.77.0.0/24\"\nexec_limit_per_user = 4\n")
            .expect("valid");
        assert_eq!(config.exec_subnet.to_string(), "10.77.0.0/24");
        assert_eq!(config.exec_limit_per_user, 4);
        let small = Config::parse("exec_subnet = \"10.77.0.0/31\"\n").expect_err("too small");
        assert!(small.contains("/30"), "{small}");
        let v6 = Config::parse("exec_subnet = \"fd00::/64\"\n").expect_err("IPv4 only");
        assert!(v6.contains("exec_subnet"), "{v6}");
        let none = Config::parse("exec_limit_per_user = 0\n").expect_err("zero");
        assert!(none.contains("exec_limit_per_user"), "{none}");
    }

    #[test]
    fn apps_only_is_read_and_a_misspelling_or_a_string_is_refused() {
        assert_eq!(
            Config::parse("apps_only = true\n").map(|c| c.apps_only),
            Ok(true)
        );
        let err = Config::parse("apps-only = true\n").expect_err("misspelt");
        assert!(err.contains("apps-only"), "{err}");
        let err = Config::parse("apps_only = \"yes\"\n").expect_err("a string");
        assert!(err.contains("apps_only") || err.contains("line 1"), "{err}");
    }

    #[test]
    fn missing_file_is_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Config::load(&dir.path().join("none.toml")).ok(),
            Some(Config::default())
        );
    }

    #[test]
    fn parses_and_rejects_unknown_keys_with_their_line() {
        assert_eq!(
            Config::parse("admin_group = \"vpn\"\n").map(|c| c.admin_group),
            Ok("vpn".to_owned())
        );
        let err = Config::parse("admin_group = \"vpn\"\nadmin_grup = \"x\"\n").expect_err("typo");
        assert!(
            err.contains("admin_grup") && err.contains("line 2"),
            "{err}"
        );
        let err = Config::parse("admin_group = 7\n").expect_err("wrong type");
        assert!(err.contains("admin_group"), "{err}");
        assert!(Config::parse("admin_group = \"\"").is_err());
        assert!(Config::parse("dead_after_seconds = 0.1").is_err());
        assert_eq!(
            Config::parse("dead_after_seconds = 1.5").map(|c| c.dead_after_seconds),
            Ok(1.5)
        );
        assert_eq!(
            Config::parse("dns = \"resolv-conf\"").map(|c| c.dns),
            Ok(crate::dns::DnsMode::ResolvConf)
        );
        let err = Config::parse("dns = \"dnsmasq\"").expect_err("unknown mode");
        assert!(err.contains("dns") && err.contains("resolv-conf"), "{err}");
        assert!(Config::parse("resolv_conf = \"etc/resolv.conf\"").is_err());
        let lan = Config::parse("lan_subnets = [\"192.168.1.0/24\", \"fd00:1::/64\"]")
            .expect("private subnets");
        assert_eq!(lan.lan_subnets.len(), 2);
        let err = Config::parse("lan_subnets = [\"192.168.1.0/24\", \"8.8.8.0/24\"]")
            .expect_err("public");
        assert!(
            err.contains("lan_subnets") && err.contains("8.8.8.0/24"),
            "{err}"
        );
        let err = Config::parse("lan_subnets = [\"192.168.1.0/33\"]").expect_err("bad prefix");
        assert!(err.contains("lan_subnets"), "{err}");
    }
}
