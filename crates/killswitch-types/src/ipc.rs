//! The daemon's IPC protocol: newline-delimited JSON over a Unix socket, versioned.
//!
//! A client sends one [`RequestEnvelope`] per line; the daemon answers each with one
//! [`ServerMessage`] line. After [`Request::Subscribe`], the daemon keeps the connection and writes a
//! [`ServerMessage::Event`] line whenever the status changes, until the client hangs up.
//!
//! ```text
//! -> {"version":1,"request":{"command":"lockdown","enabled":true}}
//! <- {"version":1,"type":"ok","status":{"state":"blocked","lockdown":true,...}}
//! -> {"version":1,"request":{"command":"off"}}
//! <- {"version":1,"type":"error","error":{"kind":"permission_denied","message":"..."}}
//! ```
//!
//! The two directions are read differently, so that a CLI and a daemon of different releases
//! still understand each other:
//!
//! - **Requests are strict**: the daemon refuses unknown fields (at every level: the envelope, the
//!   request, a guard's spec, a configuration source), commands and versions, with an error that
//!   names the problem; a mistyped field is a mistake the caller must hear about, and the other
//!   end of the socket is any local user. Decoding never panics.
//! - **Replies are lenient**: the CLI ignores fields it does not know (a newer daemon may add
//!   some, at any level), reads an unknown error kind as [`ErrorKind::Unknown`] and an unknown
//!   message type as [`ServerMessage::Unknown`]. Fields added to replies get a default, so that a
//!   newer CLI reads an older daemon too. [`Status::protocol`] says which protocol the daemon
//!   speaks, [`Status::schema`] which layout its status has, and [`Status::daemon_version`] which
//!   release it is.

use crate::{GuardQuery, GuardSpec, State, TunnelStatus};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The layout of [`Status`] this build sends: what scripts reading `killswitch --json status`
/// check. It changes only when a field is removed or renamed or changes its meaning; a new field
/// does not change it (readers ignore fields they do not know). Status objects from before the
/// field are this layout, version 1.
pub const STATUS_SCHEMA_VERSION: u32 = 1;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/killswitch/killswitch.sock";

/// The longest request line the daemon reads; longer lines are refused and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What the client wants.
    pub request: Request,
}

impl RequestEnvelope {
    /// Wraps a request in the current protocol version.
    pub fn new(request: Request) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            request,
        }
    }
}

/// What a client can ask of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Report the current status. Anyone may ask.
    Status,
    /// Report the status, then stream every change. Anyone may ask.
    Subscribe,
    /// Protect a tunnel managed by another program. Privileged.
    Guard(GuardSpec),
    /// Protect a tunnel managed by another program, discovering what the query leaves out (its
    /// servers, fwmark and DNS) from the interface. Privileged. Daemons before it refuse it as an
    /// unknown command; a spec with everything given is sent as [`Request::Guard`].
    GuardDiscover(GuardQuery),
    /// Bring up WireGuard from these configurations (failover in this order), protected. Privileged.
    Up {
        /// The interface name; by default the first configuration's file name.
        #[serde(default)]
        interface: Option<crate::InterfaceName>,
        /// The configurations.
        configs: Vec<ConfigSource>,
    },
    /// Stop protecting a tunnel; blocked if lockdown is on. Privileged.
    Down,
    /// Switch lockdown on or off. Privileged (turning it on is still a change of settings).
    Lockdown {
        /// The new value.
        enabled: bool,
    },
    /// Switch LAN access on or off. Privileged.
    AllowLan {
        /// The new value.
        enabled: bool,
    },
    /// Switch apps-only on or off: protect only `killswitch exec` programs and tunnel-only users,
    /// not the machine itself. Privileged.
    AppsOnly {
        /// The new value.
        enabled: bool,
    },
    /// Remove the kill switch entirely. Privileged.
    Off,
    /// Add or remove an exception (an allowed interface, subnet or inbound service). Privileged.
    Allow {
        /// Add (true) or remove (false).
        add: bool,
        /// What.
        entry: crate::AllowEntry,
    },
    /// Compare what the kernel holds now with what the daemon means it to hold: the nftables
    /// tables (as digests, and the first difference) and the routing layer. Anyone may ask: it
    /// changes nothing, and the daemon reads the kernel for it at most a few times a second.
    Verify,
    /// Add or remove a tunnel-only user: one whose processes may send only through the tunnel,
    /// in every state. Privileged.
    Users {
        /// Add (true) or remove (false).
        add: bool,
        /// A user name or a numeric uid, resolved by the daemon.
        user: String,
    },
    /// Add or remove a router LAN interface: this machine is that LAN's gateway, and its
    /// clients' forwarded traffic leaves through the tunnel or not at all, in every state.
    /// Privileged.
    Router {
        /// Add (true) or remove (false).
        add: bool,
        /// The LAN interface (`lan0`, `br-lan`).
        interface: crate::InterfaceName,
    },
    /// Run a program in a network namespace whose only way out is the tunnel, as the caller (any
    /// user: it only adds protection). The connection then carries the program's life
    /// ([`crate::exec`]).
    Exec(crate::exec::ExecRequest),
    /// Forward a signal to the program this connection runs (only after [`Request::Exec`]).
    ExecSignal {
        /// The signal's number (one of [`crate::exec::FORWARDED_SIGNALS`]).
        signal: i32,
    },
    /// `killswitch exec --bypass`: move the requesting process (the one that connected, as the
    /// kernel names it: never a pid from the request) into the daemon's bypass cgroup, whose
    /// sockets go around the tunnel, and answer once the rules are in force. The client then
    /// runs the program itself. Privileged: it loosens protection.
    Bypass,
}

impl Request {
    /// Whether the request changes anything (and so needs root or the admin group).
    pub fn is_privileged(&self) -> bool {
        !matches!(
            self,
            Request::Status
                | Request::Subscribe
                | Request::Verify
                | Request::Exec(_)
                | Request::ExecSignal { .. }
        )
    }

    /// The command's name as the CLI and the log spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Subscribe => "subscribe",
            Request::Guard(_) | Request::GuardDiscover(_) => "guard",
            Request::Up { .. } => "up",
            Request::Down => "down",
            Request::Lockdown { .. } => "lockdown",
            Request::AllowLan { .. } => "allow-lan",
            Request::AppsOnly { .. } => "apps-only",
            Request::Off => "off",
            Request::Allow { .. } => "allow",
            Request::Verify => "verify",
            Request::Users { .. } => "users",
            Request::Router { .. } => "router",
            Request::Exec(_) => "exec",
            Request::ExecSignal { .. } => "exec-signal",
            Request::Bypass => "exec --bypass",
        }
    }
}

/// A WireGuard configuration for `up`: its text as the client read it, or only a name that the
/// daemon looks up in its configuration directory (/etc/wireguard), which the client may not read.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSource {
    /// The file (or name) it came from, for messages.
    pub source: String,
    /// The file's content, if the client read it. Holds a private key: never logged.
    #[serde(default)]
    pub text: Option<String>,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.text.is_some() {
            "content sent"
        } else {
            "by name"
        };
        write!(f, "ConfigSource({}, {how})", self.source)
    }
}

/// One line from the daemon. Read leniently: unknown fields are ignored, here and in everything
/// it contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEnvelope {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The reply or event.
    #[serde(flatten)]
    pub message: ServerMessage,
}

/// A reply to a request, or an event on a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The request succeeded; here is the status after it.
    Ok {
        /// The status after the request took effect.
        status: Status,
    },
    /// The request failed and changed nothing (unless the error says otherwise).
    Error {
        /// What went wrong.
        error: IpcError,
    },
    /// The status changed (only sent on a subscription).
    Event {
        /// The new status.
        status: Status,
    },
    /// The answer to [`Request::Verify`]: the status, and what the kernel holds compared with
    /// what the daemon means it to hold.
    Verified {
        /// The status when the kernel was read.
        status: Status,
        /// The comparison.
        rules: RulesCheck,
    },
    /// `exec`: send the terminal now (stdin, stdout, stderr as `SCM_RIGHTS` with one byte,
    /// [`crate::exec::FDS_BYTE`]).
    ExecSendFds,
    /// `exec`: the program runs, in this namespace.
    ExecStarted {
        /// The namespace.
        scope: crate::exec::ExecScopeStatus,
    },
    /// `exec`: the program ended (the connection closes after this).
    ExecExited {
        /// How.
        exit: crate::exec::ExecExit,
    },
    /// A message type this build does not know, from a newer daemon. Never sent; a client skips
    /// it on a subscription and treats it as no answer to a request.
    #[serde(other)]
    Unknown,
}

impl ServerEnvelope {
    /// Wraps a message in the current protocol version.
    pub fn new(message: ServerMessage) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            message,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    /// A machine-readable category.
    pub kind: ErrorKind,
    /// A one-line explanation for people.
    pub message: String,
}

impl IpcError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IpcError {}

/// Categories of request failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line was not a valid request (bad JSON, unknown command, unknown field, bad value).
    BadRequest,
    /// The request speaks another protocol version.
    UnsupportedVersion,
    /// The request line was longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The caller is neither root nor in the admin group.
    PermissionDenied,
    /// The firewall could not be changed; the daemon is now blocking (see the status).
    Firewall,
    /// Persisting the settings failed; nothing was changed.
    Storage,
    /// The caller's user (or all unprivileged users together, or root and the admin group) holds
    /// as many connections as allowed; this one was closed. The message names the limit.
    TooManyConnections,
    /// The caller sent no complete request line in time; the connection was closed.
    TimedOut,
    /// `exec`: the program was not found (a shell's status 127).
    ProgramNotFound,
    /// `exec`: the program (or the working directory) could not be used: permission, format (a
    /// shell's status 126).
    ProgramNotExecutable,
    /// `exec`: the caller has as many live exec namespaces as allowed; the message names the
    /// limit and how many are live.
    TooManyPrograms,
    /// A kind this build does not know, from a newer daemon (the message still explains it).
    /// Never sent.
    #[serde(other)]
    Unknown,
}

/// The status report: what `killswitch status --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The IPC protocol the daemon speaks ([`PROTOCOL_VERSION`] of its build). Daemons from before
    /// this field spoke version 1.
    #[serde(default = "protocol_before_the_field")]
    pub protocol: u32,
    /// The layout of this object ([`STATUS_SCHEMA_VERSION`] of the daemon's build). Daemons from
    /// before this field sent layout 1.
    #[serde(default = "schema_before_the_field")]
    pub schema: u32,
    /// The daemon's release ([`crate::PRODUCT_VERSION`] of its build, e.g. `0.1.0`); `None` from
    /// daemons older than this field.
    #[serde(default)]
    pub daemon_version: Option<String>,
    /// The current state.
    pub state: State,
    /// Whether lockdown is on.
    pub lockdown: bool,
    /// Whether LAN access is allowed.
    pub allow_lan: bool,
    /// Whether apps-only is on: this machine's own traffic is not protected, only `killswitch
    /// exec` programs and tunnel-only users are. `false` from daemons older than this field.
    #[serde(default)]
    pub apps_only: bool,
    /// The protected tunnel, when one is wanted.
    pub tunnel: Option<TunnelStatus>,
    /// The last error, while it still explains the state.
    pub error: Option<String>,
    /// What the firewall is doing.
    pub firewall: FirewallStatus,
    /// Which resolvers the system was pointed at, while the daemon manages DNS (`up`).
    #[serde(default)]
    pub dns: Option<DnsStatus>,
    /// What may pass outside the tunnel besides the LAN: local bridges found, explicit allows.
    #[serde(default)]
    pub exceptions: ExceptionsStatus,
    /// What the request this status answers found or changed besides the state, one sentence
    /// each (`guard wg0`: where its servers came from, a fwmark it set). Empty in events and
    /// `status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What the firewall refused: counts per reason and the last refused destinations. In
    /// answers to `status` only: `None` in events (a refused packet is no change of state, and
    /// an event's counts would be stale at once) and from daemons older than this field.
    #[serde(default)]
    pub blocked: Option<crate::BlockedStatus>,
    /// The tunnel-only users in force (config.toml's, then those added with `killswitch users
    /// add`); empty from daemons older than this field.
    #[serde(default)]
    pub tunnel_only_users: Vec<TunnelOnlyUserStatus>,
    /// The router LAN interfaces in force (config.toml's, then those added with `killswitch
    /// router add`); empty from daemons older than this field.
    #[serde(default)]
    pub router_lans: Vec<RouterLanStatus>,
    /// `net.ipv4.ip_forward` as the daemon last read it, while router LANs are configured
    /// (`None` otherwise, and from daemons older than this field). The daemon switches forwarding
    /// on for each LAN interface only; the global switch stays the administrator's, and while it
    /// is off the tunnel's replies are not forwarded back to the LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forward: Option<bool>,
    /// The live `killswitch exec` namespaces; empty from daemons older than this field.
    #[serde(default)]
    pub exec: Vec<crate::exec::ExecScopeStatus>,
    /// The programs frozen or killed when the tunnel is lost (`freeze_on_drop`, `kill_on_drop`,
    /// `exec --freeze-on-drop`); empty from daemons older than this field.
    #[serde(default, skip_serializing_if = "OnDropStatus::is_empty")]
    pub on_drop: OnDropStatus,
    /// The bypass cgroup, while programs run under `killswitch exec --bypass`; `None` when none
    /// does (and from daemons older than this field).
    #[serde(default)]
    pub bypass: Option<BypassStatus>,
}

/// The programs the daemon freezes or kills when the tunnel is lost, and what it last did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDropStatus {
    /// Each watched program (a configured executable's cgroup, or an `exec`'d program's).
    #[serde(default)]
    pub programs: Vec<WatchedProgram>,
    /// Whether they are held now (frozen or killed: a tunnel is wanted and not connected).
    #[serde(default)]
    pub held: bool,
    /// What was last done to them (`frozen 2 programs (tunnel lost)`, `thawed 2 programs`).
    #[serde(default)]
    pub last_event: Option<String>,
    /// config.toml entries that are not honoured, and why (no such file, not absolute ...).
    #[serde(default)]
    pub refused: Vec<String>,
    /// Why freezing cannot work or last failed (no cgroup v2, a write refused); the daemon
    /// runs on without it.
    #[serde(default)]
    pub error: Option<String>,
}

impl OnDropStatus {
    /// Whether there is nothing to show: nothing watched, refused or wrong.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
            && self.refused.is_empty()
            && self.error.is_none()
            && self.last_event.is_none()
    }
}

/// One watched program: a cgroup the daemon freezes or kills when the tunnel is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedProgram {
    /// What it is: the configured executable's path, or the `exec`'d command.
    pub label: String,
    /// What happens to it when the tunnel is lost.
    pub on_drop: crate::OnDrop,
    /// Its cgroup (a directory of the daemon's cgroup v2 subtree).
    pub cgroup: String,
    /// Whether the kernel reports it frozen (`frozen 1` in `cgroup.events`).
    pub frozen: bool,
    /// How many processes it holds now.
    pub processes: u32,
}

/// Programs going around the tunnel (`killswitch exec --bypass`), as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BypassStatus {
    /// The cgroup as the kernel names it (below the cgroup2 root, as in /proc/PID/cgroup:
    /// `/killswitch/net-4026531840/bypass`).
    pub cgroup: String,
    /// Where the daemon reaches the cgroup's directory; only for the daemon's own use (the
    /// IPC server counts the processes there), never sent.
    #[serde(skip)]
    pub directory: Option<String>,
    /// Its id (the inode of its directory), which the firewall rule matches.
    pub id: u64,
    /// Its depth below the cgroup2 root.
    pub level: u32,
    /// How many processes are in it (read when the status was asked for).
    pub processes: u32,
}

/// A tunnel-only user in force, as `status` and `users list` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelOnlyUserStatus {
    /// The user as configured: a name (`debian-transmission`) or a number (`1001`).
    pub user: String,
    /// The uid it resolved to.
    pub uid: u32,
    /// Where the entry comes from: `config` (config.toml) or `cli` (`killswitch users add`).
    pub source: UserSource,
}

/// A router LAN interface in force, as `status` and `router list` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterLanStatus {
    /// The interface.
    pub interface: crate::InterfaceName,
    /// The networks of its addresses (its clients' subnets, `192.168.50.0/24`): the sources it
    /// accepts from the LAN. Empty while it is absent or has no address.
    #[serde(default)]
    pub networks: Vec<ipnet::IpNet>,
    /// Where the entry comes from: `config` (`router_lan_interfaces` in config.toml) or `cli`
    /// (`killswitch router add`).
    pub source: UserSource,
    /// Whether the interface exists now.
    #[serde(default)]
    pub present: bool,
    /// Whether `net.ipv4.conf.IFACE.forwarding` is on (the daemon switches it on for every
    /// present LAN interface).
    #[serde(default)]
    pub forwarding: bool,
}

/// Where a tunnel-only user (or a router LAN) entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserSource {
    /// `tunnel_only_users` in config.toml.
    Config,
    /// `killswitch users add`, kept in the settings file.
    Cli,
}

impl std::fmt::Display for UserSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UserSource::Config => "config",
            UserSource::Cli => "cli",
        })
    }
}

/// The exceptions in force (each as `config.toml` writes it), and those refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionsStatus {
    /// This machine's own container and VM bridges, found by the daemon (`docker0`).
    #[serde(default)]
    pub local_bridges: Vec<String>,
    /// Allowed interfaces (`tailscale0`).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Allowed subnets (`10.99.0.0/16 on eth0`).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Allowed inbound services (`tcp/22 on eth0`).
    #[serde(default)]
    pub inbound: Vec<String>,
    /// Allows that are configured but not honoured, and why.
    #[serde(default)]
    pub refused: Vec<String>,
    /// Interfaces the exceptions name that do not exist now (a typo, or one not up yet): their
    /// exceptions match nothing until they do.
    #[serde(default)]
    pub absent: Vec<String>,
}

impl ExceptionsStatus {
    /// Whether nothing is allowed, found or refused.
    pub fn is_empty(&self) -> bool {
        self.local_bridges.is_empty()
            && self.interfaces.is_empty()
            && self.subnets.is_empty()
            && self.inbound.is_empty()
            && self.refused.is_empty()
            && self.absent.is_empty()
    }
}

fn protocol_before_the_field() -> u32 {
    1
}

fn schema_before_the_field() -> u32 {
    1
}

/// The daemon's management of the system's resolver configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// How: `systemd-resolved`, or the path of the resolv.conf file written.
    pub via: String,
    /// The resolvers applications are sent to (the tunnel's).
    pub servers: Vec<std::net::IpAddr>,
    /// Why the last change could not be made, if it could not. The firewall still lets DNS go
    /// only to the tunnel's resolvers; applications asking others get no answer.
    pub error: Option<String>,
    /// How many times since the daemon started another program rewrote the resolv.conf it
    /// manages and the daemon put the tunnel's resolvers back.
    #[serde(default)]
    pub rewrites: u64,
    /// When the last of those was noticed, in seconds since the Unix epoch.
    #[serde(default)]
    pub last_rewrite_at: Option<u64>,
    /// What the other program had written (the resolvers it named), and what the daemon did.
    #[serde(default)]
    pub last_rewrite: Option<String>,
    /// Why the resolv.conf the daemon manages is not watched for rewrites, if it cannot be
    /// (no inotify, its directory missing): a rewrite then goes unnoticed until the tunnel changes.
    #[serde(default)]
    pub watch_error: Option<String>,
}

/// What the kernel is enforcing, as far as the daemon knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStatus {
    /// Whether table `inet killswitch` is installed and matched what was meant when last checked.
    pub installed: bool,
    /// Whether the installed rules block everything outside the allowed holes (all states but
    /// `off` and unlocked `disconnected`). False after an error means blocking itself failed.
    pub blocking: bool,
    /// How many rule sets were applied since the daemon started.
    pub transitions: u64,
    /// How long the last apply took, including the read-back check, in microseconds.
    pub last_apply_us: Option<u64>,
    /// How many times something else changed or removed our table and the daemon restored it.
    #[serde(default)]
    pub tamper_events: u64,
    /// What the last such change was, and who made it.
    #[serde(default)]
    pub last_tamper: Option<String>,
    /// Whether the second layer (policy routing into the tunnel or nowhere) is in place.
    #[serde(default)]
    pub routing: bool,
    /// What keeps other programs from flushing or editing the rules; `None` until the daemon has
    /// talked to the kernel (and from daemons older than this field).
    #[serde(default)]
    pub flush_protection: Option<FlushProtection>,
}

/// What keeps other programs (a firewall service's `nft flush ruleset`, a script) from removing or
/// editing the kill switch's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushProtection {
    /// The kernel refuses them: the tables are owned by the daemon (nf_tables `owner` and
    /// `persist`, kernel 6.9 or later).
    Kernel,
    /// Anyone with CAP_NET_ADMIN can remove them; the daemon notices and restores them within
    /// milliseconds, and the routing layer holds meanwhile (except for sockets bound to an
    /// interface).
    RestoreOnly,
    /// A value from a newer daemon.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for FlushProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushProtection::Kernel => "kernel",
            FlushProtection::RestoreOnly => "restore-only",
            FlushProtection::Unknown => "unknown",
        })
    }
}

/// What the kernel holds compared with what the daemon means it to hold, read back when
/// [`Request::Verify`] asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesCheck {
    /// A stable digest of the nftables tables the daemon means the kernel to hold (the compiled
    /// ruleset, as the kernel would list it); `None` when it means to hold none (`off`, unlocked
    /// `disconnected`).
    #[serde(default)]
    pub intent_digest: Option<String>,
    /// The same digest of what the kernel holds now; `None` when it holds no table of ours.
    #[serde(default)]
    pub kernel_digest: Option<String>,
    /// Whether the kernel holds exactly what is meant (compared in full, not by digest).
    #[serde(default)]
    pub matches: bool,
    /// The first difference, when they differ, or why the kernel could not be read.
    #[serde(default)]
    pub difference: Option<String>,
    /// Whether the routing layer (policy rules into the tunnel or nowhere) is meant to be there.
    #[serde(default)]
    pub routing_wanted: bool,
    /// Whether every rule of the routing layer the daemon means to hold is in the kernel.
    #[serde(default)]
    pub routing_in_place: bool,
    /// What of the routing layer is missing, or was found in its way.
    #[serde(default)]
    pub routing_detail: Option<String>,
}

/// Why a request line could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not a request.
    #[error("bad request: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("unsupported protocol version {0}; this daemon speaks version {PROTOCOL_VERSION}")]
    Version(u64),
}

impl DecodeError {
    /// The IPC error to send back for this decode failure.
    pub fn to_ipc_error(&self) -> IpcError {
        let kind = match self {
            DecodeError::Malformed(_) => ErrorKind::BadRequest,
            DecodeError::Version(_) => ErrorKind::UnsupportedVersion,
        };
        IpcError::new(kind, self.to_string())
    }
}

/// Decodes one request line (without its newline).
///
/// The version is checked first, so that a client of a newer protocol gets "unsupported version"
/// rather than a confusing complaint about a command it believes exists.
pub fn decode_request(line: &str) -> Result<Request, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(DecodeError::Malformed("expected a JSON object".to_owned()));
    };
    match object.get("version").map(serde_json::Value::as_u64) {
        None => return Err(DecodeError::Malformed("missing field `version`".to_owned())),
        Some(Some(v)) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(Some(v)) => return Err(DecodeError::Version(v)),
        Some(None) => {
            return Err(DecodeError::Malformed(
                "field `version` must be a non-negative integer".to_owned(),
            ));
        }
    }
    let sent_fields: Vec<String> = object
        .get("request")
        .and_then(serde_json::Value::as_object)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    let envelope: RequestEnvelope =
        serde_json::from_value(value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    // serde ignores extra fields next to the tag of a unit variant (`{"command":"off","force":1}`),
    // deny_unknown_fields or not. Every field sent must be one the decoded request would send.
    let known = serde_json::to_value(&envelope.request)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    // A guard's spec refuses unknown fields itself, and spells its servers either way
    // (`endpoint`, `endpoints`) while writing one of them: comparing with what it writes would
    // refuse the other spelling.
    let checks_itself = matches!(
        envelope.request,
        Request::Guard(_) | Request::GuardDiscover(_)
    );
    if let Some(unknown) = sent_fields
        .iter()
        .find(|f| !checks_itself && known.get(f.as_str()).is_none())
    {
        return Err(DecodeError::Malformed(format!(
            "unknown field `{unknown}` for command `{}`",
            envelope.request.name()
        )));
    }
    if let Request::Guard(spec) = &envelope.request {
        spec.validate()
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    }
    Ok(envelope.request)
}

/// Encodes one line (with its newline) for the socket.
pub fn encode_line<T: Serialize>(message: &T) -> Result<String, serde_json::Error> {
    let mut line = serde_json::to_string(message)?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, InterfaceName};
    use proptest::prelude::*;

    fn guard() -> Request {
        Request::Guard(GuardSpec {
            interface: InterfaceName::new("tun0").expect("valid"),
            endpoints: crate::Endpoints::one(
                "198.51.100.7:1194/tcp".parse::<Endpoint>().expect("valid"),
            ),
            dns: vec![],
            mark: None,
            uid: Some(0),
        })
    }

    #[test]
    fn guard_decodes_in_both_spellings_and_refuses_strays() {
        let old = r#"{"version":1,"request":{"command":"guard","interface":"tun0","endpoint":"198.51.100.7:1194/tcp","dns":[],"mark":null,"uid":0}}"#;
        assert_eq!(decode_request(old).expect("old clients' form"), guard());
        let new = r#"{"version":1,"request":{"command":"guard","interface":"tun0","endpoints":["198.51.100.7:1194/tcp"],"uid":0}}"#;
        assert_eq!(decode_request(new).expect("the list form"), guard());
        let stray = r#"{"version":1,"request":{"command":"guard","interface":"tun0","endpoints":["198.51.100.7:1194/tcp"],"color":1}}"#;
        let err = decode_request(stray)
            .expect_err("unknown field")
            .to_string();
        assert!(err.contains("unknown field `color`"), "{err}");
        let discover = r#"{"version":1,"request":{"command":"guard-discover","interface":"wg0"}}"#;
        assert!(matches!(
            decode_request(discover),
            Ok(Request::GuardDiscover(q)) if q.endpoints.is_empty() && q.dns.is_none()
        ));
        let stray = r#"{"version":1,"request":{"command":"guard-discover","interface":"wg0","endpoint":"198.51.100.7:1"}}"#;
        assert!(decode_request(stray).is_err());
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Status,
            Request::Subscribe,
            guard(),
            Request::GuardDiscover(crate::GuardQuery {
                interface: InterfaceName::new("wg0").expect("valid"),
                endpoints: vec![],
                dns: None,
                mark: None,
                uid: None,
            }),
            Request::Down,
            Request::Lockdown { enabled: true },
            Request::AllowLan { enabled: false },
            Request::AppsOnly { enabled: true },
            Request::Off,
            Request::Verify,
            Request::Users {
                add: true,
                user: "debian-transmission".to_owned(),
            },
            Request::Router {
                add: true,
                interface: InterfaceName::new("lan0").expect("valid"),
            },
            Request::Bypass,
            Request::Up {
                interface: None,
                configs: vec![
                    ConfigSource {
                        source: "wg0".to_owned(),
                        text: None,
                    },
                    ConfigSource {
                        source: "./b.conf".to_owned(),
                        text: Some("[Interface]".to_owned()),
                    },
                ],
            },
        ];
        for request in requests {
            let line = encode_line(&RequestEnvelope::new(request.clone())).expect("encodes");
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(decode_request(line.trim_end()), Ok(request));
        }
    }

    #[test]
    fn a_dns_status_without_the_rewrite_fields_still_decodes() {
        // What a daemon from before the resolv.conf watch sends.
        let old = r#"{"via":"/etc/resolv.conf","servers":["10.64.0.1"],"error":null}"#;
        let status: DnsStatus = serde_json::from_str(old).expect("decodes");
        assert_eq!(status.rewrites, 0);
        assert_eq!(status.last_rewrite, None);
        assert_eq!(status.watch_error, None);
    }

    #[test]
    fn a_verified_reply_without_the_routing_fields_still_decodes() {
        // What a daemon that knows only the table comparison would send, with a field it added.
        let line = r#"{"version":1,"type":"verified","status":{"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}},"rules":{"intent_digest":null,"kernel_digest":null,"matches":true,"extra":1}}"#;
        let envelope: ServerEnvelope = serde_json::from_str(line).expect("lenient");
        let ServerMessage::Verified { rules, .. } = envelope.message else {
            panic!("not verified: {envelope:?}");
        };
        assert!(rules.matches && !rules.routing_wanted && rules.routing_detail.is_none());
        let line = encode_line(&RequestEnvelope::new(Request::Verify)).expect("encodes");
        assert_eq!(
            line,
            "{\"version\":1,\"request\":{\"command\":\"verify\"}}\n"
        );
    }

    #[test]
    fn wire_format_is_stable() {
        let line = encode_line(&RequestEnvelope::new(Request::Lockdown { enabled: true }))
            .expect("encodes");
        assert_eq!(
            line,
            "{\"version\":1,\"request\":{\"command\":\"lockdown\",\"enabled\":true}}\n"
        );
        let line = encode_line(&RequestEnvelope::new(Request::AllowLan { enabled: false }))
            .expect("encodes");
        assert!(line.contains("\"command\":\"allow-lan\""), "{line}");
        let line = encode_line(&RequestEnvelope::new(Request::AppsOnly { enabled: true }))
            .expect("encodes");
        assert_eq!(
            line,
            "{\"version\":1,\"request\":{\"command\":\"apps-only\",\"enabled\":true}}\n"
        );
        let line = encode_line(&RequestEnvelope::new(Request::Users {
            add: true,
            user: "debian-transmission".to_owned(),
        }))
        .expect("encodes");
        assert_eq!(
            line,
            "{\"version\":1,\"request\":{\"command\":\"users\",\"add\":true,\"user\":\"debian-transmission\"}}\n"
        );
    }

    #[test]
    fn bad_requests_get_errors_that_name_the_problem() {
        let cases = [
            ("", "EOF"),
            ("not json", "expected"),
            ("[]", "expected a JSON object"),
            (
                r#"{"request":{"command":"status"}}"#,
                "missing field `version`",
            ),
            (
                r#"{"version":"1","request":{"command":"status"}}"#,
                "non-negative integer",
            ),
            (
                r#"{"version":2,"request":{"command":"status"}}"#,
                "unsupported protocol version 2",
            ),
            (
                r#"{"version":1,"request":{"command":"explode"}}"#,
                "explode",
            ),
            (
                r#"{"version":1,"request":{"command":"status"},"extra":1}"#,
                "extra",
            ),
            (
                r#"{"version":1,"request":{"command":"lockdown"}}"#,
                "enabled",
            ),
            (
                r#"{"version":1,"request":{"command":"lockdown","enabled":"yes"}}"#,
                "invalid type",
            ),
            (
                r#"{"version":1,"request":{"command":"guard","interface":"wg0","endpoint":"bad"}}"#,
                "invalid endpoint",
            ),
            (
                r#"{"version":1,"request":{"command":"guard","interface":"wg0","endpoint":"203.0.113.1:1","dns":["224.0.0.1"]}}"#,
                "not a usable unicast",
            ),
            (
                r#"{"version":1,"request":{"command":"guard","interface":"wg0","endpoint":"203.0.113.1:1","mark":0}}"#,
                "invalid fwmark",
            ),
        ];
        for (line, expected) in cases {
            let err = decode_request(line).expect_err(line).to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    /// A reply of a future daemon, with a field this build does not know at every level.
    const NEWER_REPLY: &str = r#"{"version":1,"type":"ok","trace":"x","status":{"protocol":2,"state":"connected","lockdown":false,"allow_lan":true,"since":"2031-01-01","tunnel":{"interface":"wg0","endpoint":"198.51.100.1:51820/udp","dns":[],"mark":null,"uid":null,"up":true,"addresses":[],"mtu":1420,"managed":{"backend":"userspace","servers":["a","b"],"server":1,"attempt":2,"last_event":null,"rtt_ms":9}},"error":null,"firewall":{"installed":true,"blocking":true,"transitions":1,"last_apply_us":null,"tamper_events":0,"last_tamper":null,"routing":true,"engine":"nft"},"dns":{"via":"/etc/resolv.conf","servers":[],"error":null,"dnssec":false}}}"#;

    #[test]
    fn replies_with_unknown_fields_at_every_level_are_read() {
        let envelope: ServerEnvelope = serde_json::from_str(NEWER_REPLY).expect("lenient");
        let ServerMessage::Ok { status } = envelope.message else {
            panic!("not ok: {envelope:?}");
        };
        assert_eq!(status.protocol, 2);
        assert!(status.allow_lan);
        let tunnel = status.tunnel.expect("tunnel");
        assert_eq!(tunnel.managed.map(|m| m.server), Some(1));
        assert_eq!(
            status.dns.map(|d| d.via),
            Some("/etc/resolv.conf".to_owned())
        );
        assert!(status.firewall.routing);

        let error: ServerEnvelope = serde_json::from_str(
            r#"{"version":1,"type":"error","error":{"kind":"rate_limited","message":"later","retry_ms":5}}"#,
        )
        .expect("lenient");
        assert_eq!(
            error.message,
            ServerMessage::Error {
                error: IpcError::new(ErrorKind::Unknown, "later")
            }
        );
        let other: ServerEnvelope =
            serde_json::from_str(r#"{"version":1,"type":"notice","text":"x"}"#).expect("lenient");
        assert_eq!(other.message, ServerMessage::Unknown);
    }

    #[test]
    fn status_says_which_protocol_and_older_daemons_spoke_version_1() {
        let older = r#"{"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}"#;
        let status: Status = serde_json::from_str(older).expect("an older daemon's status");
        assert_eq!(status.protocol, 1);
        let json = serde_json::to_value(&status).expect("encodes");
        assert_eq!(json["protocol"], PROTOCOL_VERSION);
    }

    #[test]
    fn a_status_without_schema_or_daemon_version_is_layout_1_of_an_unknown_release() {
        // What a daemon from before the two fields sends.
        let older = r#"{"protocol":1,"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}"#;
        let status: Status = serde_json::from_str(older).expect("an older daemon's status");
        assert_eq!(status.schema, 1);
        assert_eq!(status.daemon_version, None);
        // And a newer one's, with a layout and a release this build does not know.
        let newer = older.replace(
            r#""protocol":1,"#,
            r#""protocol":1,"schema":2,"daemon_version":"9.0.0","#,
        );
        let status: Status = serde_json::from_str(&newer).expect("a newer daemon's status");
        assert_eq!(status.schema, 2);
        assert_eq!(status.daemon_version.as_deref(), Some("9.0.0"));
    }

    #[test]
    fn the_handshake_field_is_additive_and_read_leniently() {
        // An older daemon's tunnel (and every event's): no handshake, and none is written back.
        let older = r#"{"interface":"wg0","endpoint":"198.51.100.1:51820/udp","dns":[],"mark":null,"uid":null,"up":true,"addresses":[]}"#;
        let tunnel: crate::TunnelStatus = serde_json::from_str(older).expect("older tunnel");
        assert_eq!(tunnel.handshake, None);
        let json = serde_json::to_value(&tunnel).expect("encodes");
        assert!(json.get("handshake").is_none(), "{json}");
        // A status answer's, with a field this build does not know.
        let newer = older.replace(
            r#""up":true,"#,
            r#""up":true,"handshake":{"wireguard":true,"last_unix":1800000000,"peers":2},"#,
        );
        let tunnel: crate::TunnelStatus = serde_json::from_str(&newer).expect("newer tunnel");
        assert_eq!(
            tunnel.handshake,
            Some(crate::Handshake {
                wireguard: true,
                last_unix: Some(1_800_000_000)
            })
        );
        let json = serde_json::to_value(&tunnel).expect("encodes");
        assert_eq!(json["handshake"]["last_unix"], 1_800_000_000);
        // Not WireGuard: no time, and the flag says why.
        let tun = older.replace(
            r#""up":true,"#,
            r#""up":true,"handshake":{"wireguard":false},"#,
        );
        let tunnel: crate::TunnelStatus = serde_json::from_str(&tun).expect("tun");
        assert_eq!(
            tunnel.handshake.map(|h| (h.wireguard, h.last_unix)),
            Some((false, None))
        );
    }

    #[test]
    fn the_blocked_field_is_additive_and_read_leniently() {
        // An older daemon's status has no `blocked`: nothing counted.
        let older = r#"{"protocol":1,"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}"#;
        let status: Status = serde_json::from_str(older).expect("an older daemon's status");
        assert_eq!(status.blocked, None);
        assert_eq!(status.schema, STATUS_SCHEMA_VERSION);
        // A newer one's, with a reason and a field this build does not know.
        let newer = older.replace(
            r#""protocol":1,"#,
            r#""protocol":1,"blocked":{"counts":{"dns":{"packets":3,"bytes":180},"quic":{"packets":1,"bytes":9}},"recent":[{"at_unix":5,"reason":"quic","family":"ipv4","protocol":"udp","destination":"192.0.2.1","port":443,"interface":"eth0","uid":1000,"pid":7}],"sampled":true},"#,
        );
        let status: Status = serde_json::from_str(&newer).expect("a newer daemon's status");
        let blocked = status.blocked.clone().expect("carried");
        assert_eq!(blocked.count(crate::BlockReason::Dns).packets, 3);
        assert_eq!(blocked.total_packets(), 4);
        assert_eq!(blocked.recent[0].uid, Some(1000));
        // And what this build sends: the counts by reason name.
        let json = serde_json::to_value(&status).expect("encodes");
        assert_eq!(json["blocked"]["counts"]["dns"]["bytes"], 180);
    }

    #[test]
    fn tunnel_only_users_in_status_are_additive() {
        // A daemon from before the field sends none: no users.
        let older = r#"{"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}"#;
        let status: Status = serde_json::from_str(older).expect("an older daemon's status");
        assert!(status.tunnel_only_users.is_empty());
        let newer = older.replace(
            r#""error":null,"#,
            r#""error":null,"tunnel_only_users":[{"user":"debian-transmission","uid":117,"source":"config"},{"user":"1001","uid":1001,"source":"cli"}],"#,
        );
        let status: Status = serde_json::from_str(&newer).expect("a newer daemon's status");
        assert_eq!(
            status.tunnel_only_users,
            vec![
                TunnelOnlyUserStatus {
                    user: "debian-transmission".to_owned(),
                    uid: 117,
                    source: UserSource::Config
                },
                TunnelOnlyUserStatus {
                    user: "1001".to_owned(),
                    uid: 1001,
                    source: UserSource::Cli
                },
            ]
        );
        // The request, as the CLI sends it.
        let line = r#"{"version":1,"request":{"command":"users","add":false,"user":"nobody"}}"#;
        assert_eq!(
            decode_request(line).expect("a users request"),
            Request::Users {
                add: false,
                user: "nobody".to_owned()
            }
        );
    }

    #[test]
    fn router_requests_and_status_are_pinned_and_additive() {
        // The request as the CLI sends it, and as interfaces.md pins it.
        let line = encode_line(&RequestEnvelope::new(Request::Router {
            add: true,
            interface: InterfaceName::new("lan0").expect("valid"),
        }))
        .expect("encodes");
        assert_eq!(
            line,
            "{\"version\":1,\"request\":{\"command\":\"router\",\"add\":true,\"interface\":\"lan0\"}}\n"
        );
        let request = decode_request(line.trim_end()).expect("decodes");
        assert!(request.is_privileged());
        assert_eq!(request.name(), "router");
        // A bad interface name or a stray field is refused when decoded, before the daemon.
        for bad in [
            r#"{"version":1,"request":{"command":"router","add":true,"interface":"a/b"}}"#,
            r#"{"version":1,"request":{"command":"router","add":true,"interface":""}}"#,
            r#"{"version":1,"request":{"command":"router","add":true}}"#,
            r#"{"version":1,"request":{"command":"router","add":true,"interface":"lan0","x":1}}"#,
        ] {
            assert!(decode_request(bad).is_err(), "{bad}");
        }
        // A daemon from before the fields sends none: no LANs, ip_forward unknown.
        let older = r#"{"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}"#;
        let status: Status = serde_json::from_str(older).expect("an older daemon's status");
        assert!(status.router_lans.is_empty());
        assert_eq!(status.ip_forward, None);
        let newer = older.replace(
            r#""error":null,"#,
            r#""error":null,"ip_forward":false,"router_lans":[{"interface":"lan0","networks":["192.168.50.0/24"],"source":"config","present":true,"forwarding":true}],"#,
        );
        let status: Status = serde_json::from_str(&newer).expect("a newer daemon's status");
        assert_eq!(status.ip_forward, Some(false));
        assert_eq!(
            status.router_lans,
            vec![RouterLanStatus {
                interface: InterfaceName::new("lan0").expect("valid"),
                networks: vec!["192.168.50.0/24".parse().expect("literal")],
                source: UserSource::Config,
                present: true,
                forwarding: true,
            }]
        );
        // And what this build sends: the shape interfaces.md pins.
        let json = serde_json::to_value(&status).expect("encodes");
        assert_eq!(
            json["router_lans"][0],
            serde_json::json!({"interface":"lan0","networks":["192.168.50.0/24"],"source":"config","present":true,"forwarding":true})
        );
    }

    #[test]
    fn the_bypass_request_carries_no_pid_and_its_status_is_additive() {
        // Pinned: the daemon takes the process from the connection, so nothing else is sent.
        let line = encode_line(&RequestEnvelope::new(Request::Bypass)).expect("encodes");
        assert_eq!(
            line,
            "{\"version\":1,\"request\":{\"command\":\"bypass\"}}\n"
        );
        // A pid in the request is an unknown field, refused.
        assert!(decode_request(r#"{"version":1,"request":{"command":"bypass","pid":1}}"#).is_err());
        let old = r#"{"state":"off","lockdown":false,"allow_lan":false,"tunnel":null,"error":null,"firewall":{"installed":false,"blocking":false,"transitions":0,"last_apply_us":null}}"#;
        let status: Status = serde_json::from_str(old).expect("decodes");
        assert_eq!(status.bypass, None);
    }

    #[test]
    fn requests_with_unknown_fields_are_refused_at_every_level() {
        let cases = [
            // The envelope.
            (
                r#"{"version":1,"request":{"command":"down"},"priority":1}"#,
                "priority",
            ),
            // A request without fields, and one with.
            (
                r#"{"version":1,"request":{"command":"down","now":true}}"#,
                "now",
            ),
            (
                r#"{"version":1,"request":{"command":"verify","probe":"8.8.8.8"}}"#,
                "probe",
            ),
            (
                r#"{"version":1,"request":{"command":"allow-lan","enabled":true,"ranges":[]}}"#,
                "ranges",
            ),
            // A guard's spec.
            (
                r#"{"version":1,"request":{"command":"guard","interface":"wg0","endpoint":"203.0.113.1:1","killswitch":false}}"#,
                "killswitch",
            ),
            // A configuration source inside `up`.
            (
                r#"{"version":1,"request":{"command":"up","configs":[{"source":"wg0","path":"/etc/shadow"}]}}"#,
                "path",
            ),
        ];
        for (line, field) in cases {
            let err = decode_request(line).expect_err(line).to_string();
            assert!(err.contains(field), "{line}: {err}");
        }
    }

    #[test]
    fn config_text_stays_out_of_debug() {
        let request = Request::Up {
            interface: None,
            configs: vec![ConfigSource {
                source: "wg0.conf".to_owned(),
                text: Some("PrivateKey = s3cr3t".to_owned()),
            }],
        };
        let debug = format!("{request:?}");
        assert!(
            debug.contains("wg0.conf") && !debug.contains("s3cr3t"),
            "{debug}"
        );
    }

    #[test]
    fn version_error_kind() {
        let err = decode_request(r#"{"version":7,"request":{"command":"whatever-v7-has"}}"#)
            .expect_err("v7");
        assert_eq!(err.to_ipc_error().kind, ErrorKind::UnsupportedVersion);
    }

    #[test]
    fn privilege_classification() {
        assert!(!Request::Status.is_privileged());
        assert!(!Request::Subscribe.is_privileged());
        assert!(!Request::Verify.is_privileged());
        for r in [
            guard(),
            Request::Down,
            Request::Lockdown { enabled: true },
            Request::AllowLan { enabled: true },
            Request::AppsOnly { enabled: false },
            Request::Off,
        ] {
            assert!(r.is_privileged(), "{}", r.name());
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_input_never_panics(line in ".{0,300}") {
            let _ = decode_request(&line);
        }

        #[test]
        fn decoding_json_shaped_noise_never_panics(
            version in prop_oneof![Just("1".to_owned()), any::<i64>().prop_map(|v| v.to_string())],
            command in "[a-z-]{0,12}",
            field in "[a-z_]{0,10}",
            value in prop_oneof![Just("true".to_owned()), Just("null".to_owned()), "\"[ -~]{0,20}\"", any::<i32>().prop_map(|v| v.to_string())],
        ) {
            let line = format!(r#"{{"version":{version},"request":{{"command":"{command}","{field}":{value}}}}}"#);
            let _ = decode_request(&line);
        }
    }
}
