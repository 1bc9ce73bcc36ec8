//! The daemon's state machine: the only place that decides *when* the firewall changes.
//!
//! It is deterministic: [`Core::on`] takes an [`Input`] (a parsed command, a link change, another
//! program's nf_tables change, a timer, a wake from sleep, or the answer to one of its own
//! effects) with the time it happened, and returns [`Effect`]s (look at an interface, send a
//! probe, publish the status, make DNS follow, reply, wake me at T, freeze or thaw the programs
//! watched by [`crate::freeze`]). Its backends (the firewall and routing layer, the settings
//! store, the tunnel devices of `up`, and a look-up of what kind of device an interface is) are
//! traits, whose results decide what comes next; the daemon
//! ([`crate::run`]) passes the real ones and performs the effects, the model-based tester
//! ([`crate::sim`]) simulated ones. It reads no clock and does no I/O of its own.
//!
//! The state is derived, never stored on its own: from what the user asked for (the [`Target`]),
//! the settings, what the daemon observes of the tunnel interface (or what `up`'s connection
//! manager reports), and whether something is broken (a fault). [`Core::reconcile`] compiles the
//! rules for that state and applies them when they differ from what the kernel holds, as one
//! transaction. Deriving the state means there is no transition table to get wrong: every input
//! leads to the same function, and the firewall always ends up matching the inputs or the daemon
//! says why not. The whole decision:
//!
//! | target     | lockdown | the tunnel                          | fault | state        | rules                                 |
//! |------------|----------|-------------------------------------|-------|--------------|---------------------------------------|
//! | off        | (off)    | any                                 | any   | off          | none                                  |
//! | (not off)  | any      | any                                 | yes   | blocked      | blocking                              |
//! | down       | off      | -                                   | no    | disconnected | none                                  |
//! | down       | on       | -                                   | no    | blocked      | blocking                              |
//! | guard      | any      | absent, down, or not trusted        | no    | connecting   | the endpoint hole only                |
//! | guard      | any      | up with an address, trusted         | no    | connected    | the tunnel + the hole                 |
//! | up         | any      | waiting, or handshaking with server n | no  | connecting   | server n's hole (+ the probe into it) |
//! | up         | any      | handshake done, alive               | no    | connected    | the tunnel + server n's hole          |
//!
//! With apps-only on (`crate::apps_only`), the state is derived the same way (lockdown cannot be
//! on with it, and where config.toml holds both, apps-only wins), but the rules of every row are
//! the scopes' alone: the machine's own traffic gets none, and the scopes get the tunnel while it
//! is connected. A fault still blocks everything.
//!
//! `off` switches lockdown off; `lockdown on` after `off` leaves `off` (to `down`). A fault is a
//! broken configuration file or an unusable settings file. `up` moves to the next server (the
//! hole first, then the device) when a handshake does not come within 5 s, when the tunnel is
//! silent for the health bound, or at once when its device is deleted, set down or replaced.
//! When an apply fails, the daemon applies the blocking rules instead and reports `blocked` with
//! the error, and whether blocking itself worked; a transient failure (a broken socket) is tried
//! once more first, and a failed apply is retried with backoff from 1 s to 60 s.

#![forbid(unsafe_code)]

use crate::devices::{Devices, owned_factory};
use crate::dns::DnsWant;
use crate::firewall::{FailureKind, Firewall};
use crate::links::Observed;
use crate::manager::{Factory, Manager, Step, fwmark_of};
use crate::store::{Loaded, Persisted, SettingsStore};
use crate::target::{Target, UpSpec, resolve_up};
use killswitch_policy::routes::compile_routes_for;
use killswitch_policy::{Exceptions, Peer, PolicyState, Ruleset, Tunnel, compile_for};
use killswitch_types::ipc::{
    DnsStatus, ErrorKind, ExceptionsStatus, FirewallStatus, IpcError, Request, Status,
};
use killswitch_types::{
    Endpoints, GuardSpec, InterfaceName, ManagedTunnel, Settings, State, TunnelStatus,
};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the state machine needs besides the firewall: where `up` finds configurations by name, how
/// long a tunnel may be silent, and how tunnel devices are made.
pub struct CoreOptions {
    /// Where configuration names (`killswitch up wg0`) are looked up.
    pub wireguard_dir: PathBuf,
    /// How long an up tunnel may go without a sign of life before it is declared dead.
    pub health_bound: Duration,
    /// Makes tunnel devices.
    pub factory: Factory,
    /// Which interfaces the daemon created: `up` refuses a name that someone else's has.
    pub devices: Devices,
    /// What allow-lan opens.
    pub lan: killswitch_policy::Lan,
    /// The administrator's explicit allows (`allow_interfaces`, `allow_subnets`, `allow_inbound`).
    pub allows: killswitch_types::Allows,
    /// Whether this machine's own container and VM bridges are recognised and let through.
    pub detect_local_bridges: bool,
    /// Looks at the interfaces the exceptions name or find: the kernel's answer in the daemon, a
    /// simulated one in the model-based tester.
    pub look_locals: LookLocals,
    /// What kind of device an interface is, if it exists: `guard` refuses one that is never a
    /// tunnel. The kernel's answer in the daemon, a simulated one in the model-based tester.
    pub identify: Identify,
    /// config.toml's tunnel-only users, resolved by the daemon (or why each was refused).
    pub tunnel_only_users: Vec<Result<crate::users::TunnelOnlyUser, String>>,
    /// config.toml's `apps_only` ([`crate::apps_only`]).
    pub apps_only: bool,
    /// config.toml's router LAN interfaces ([`crate::router`]).
    pub router_lans: Vec<InterfaceName>,
    /// Looks at the router LANs: the kernel's answer in the daemon, a simulated one in the
    /// model-based tester.
    pub look_router: crate::router::LookRouter,
}

/// What a reloaded configuration changes in a running daemon: the rules' exceptions at once, and
/// what the next `up` uses. (Keys that shape the daemon's set-up, such as the admin group and how
/// DNS is managed, wait for a restart; the executor says so.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// What allow-lan opens.
    pub lan: killswitch_policy::Lan,
    /// The explicit allows.
    pub allows: killswitch_types::Allows,
    /// Whether local bridges are recognised.
    pub detect_local_bridges: bool,
    /// How long an `up` tunnel may be silent (from the next `up` or server change on).
    pub health_bound: Duration,
    /// Where `up NAME` looks.
    pub wireguard_dir: PathBuf,
    /// config.toml's tunnel-only users, resolved again (or why each was refused).
    pub tunnel_only_users: Vec<Result<crate::users::TunnelOnlyUser, String>>,
    /// config.toml's `apps_only`.
    pub apps_only: bool,
    /// config.toml's router LAN interfaces.
    pub router_lans: Vec<InterfaceName>,
}

/// Finds the local bridges and looks at the allowed interfaces (their names given), bridges
/// recognised only when the flag says so.
pub type LookLocals = Box<dyn Fn(&[InterfaceName], bool) -> crate::locals::LocalView>;

/// Looks up what kind of device the interface of a name is (`None`: there is none).
pub type Identify = Box<dyn Fn(&InterfaceName) -> Option<crate::links::LinkIdentity>>;

impl std::fmt::Debug for CoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CoreOptions({}, {:?})",
            self.wireguard_dir.display(),
            self.health_bound
        )
    }
}

impl CoreOptions {
    /// The defaults, with the real WireGuard backends, recording the interfaces they create in
    /// `state_dir`.
    pub fn new(state_dir: &std::path::Path) -> Self {
        let devices = Devices::new(state_dir);
        CoreOptions {
            wireguard_dir: PathBuf::from("/etc/wireguard"),
            health_bound: Duration::from_secs(3),
            factory: owned_factory(
                devices.clone(),
                Box::new(killswitch_tunnel::backend::create),
            ),
            devices,
            lan: killswitch_policy::Lan::default(),
            allows: killswitch_types::Allows::default(),
            tunnel_only_users: Vec::new(),
            apps_only: false,
            detect_local_bridges: true,
            look_locals: Box::new(crate::locals::look),
            identify: Box::new(crate::links::identify),
            router_lans: Vec::new(),
            look_router: Box::new(crate::router::look),
        }
    }
}

/// What a tick of the tunnel manager asks of the caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The status changed: publish it.
    pub changed: bool,
    /// Send a probe through the tunnel to this resolver.
    pub probe: Option<IpAddr>,
}

/// A request, parsed: what the state machine is asked to do. Parsing does what needs the outside
/// world (reading `up`'s files by name, checking that no one else's interface has the name), so
/// that carrying it out does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status` (or `events`): only the answer.
    Status,
    /// `guard`.
    Guard(GuardSpec),
    /// `up`, its files read and parsed.
    Up(UpSpec),
    /// `down`.
    Down,
    /// `off`.
    Off,
    /// `lockdown on|off`.
    Lockdown(bool),
    /// `allow-lan on|off`.
    AllowLan(bool),
    /// `apps-only on|off`.
    AppsOnly(bool),
    /// `allow add|remove`.
    Allow {
        /// Add (true) or remove.
        add: bool,
        /// What.
        entry: killswitch_types::AllowEntry,
    },
    /// `exec --bypass`: the executor moved the requesting process into the bypass cgroup, which
    /// is now this; the rules must follow before the answer lets the program start.
    Bypass(crate::bypass::BypassView),
    /// `users add|remove`.
    Users {
        /// Add (true) or remove.
        add: bool,
        /// The user as given.
        user: String,
        /// The uid it resolved to; `None` for a name that no longer exists, which can still be
        /// removed by the name it was added with.
        uid: Option<u32>,
    },
    /// `router add|remove`.
    Router {
        /// Add (true) or remove.
        add: bool,
        /// The LAN interface.
        interface: InterfaceName,
    },
    /// The live `killswitch exec` namespaces changed (never from a request line: the IPC task
    /// that runs a program sends it, [`crate::exec`]). Only a later `generation` than the last
    /// one counts, so that two programs starting at once cannot undo each other's lists.
    ExecScopes {
        /// The registry's generation when the list was taken.
        generation: u64,
        /// Every live namespace.
        scopes: Vec<killswitch_types::exec::ExecScopeStatus>,
    },
}

impl Command {
    /// Parses `request`: reads configurations named only by name from `wireguard_dir`, and
    /// refuses an `up` whose interface name someone else's interface has (before anything
    /// changes; one that appears later fails the attempt instead).
    pub fn parse(
        request: &Request,
        wireguard_dir: &std::path::Path,
        devices: &Devices,
    ) -> Result<Command, IpcError> {
        Ok(match request {
            // `verify` is answered by the executor (it reads the kernel); here, as anywhere it
            // might reach the state machine, it is a question that changes nothing.
            Request::Status | Request::Subscribe | Request::Verify => Command::Status,
            Request::Guard(spec) => Command::Guard(spec.clone()),
            // The IPC server completes these into `guard` (discovery is I/O, not the core's):
            // one reaching here was not completed, and is refused rather than guessed at.
            Request::GuardDiscover(query) => {
                return Err(IpcError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "guard {}: nothing was discovered for it; name its endpoint with --endpoint",
                        query.interface
                    ),
                ));
            }
            Request::Up { interface, configs } => {
                let spec = resolve_up(interface.clone(), configs, wireguard_dir)?;
                devices
                    .check(spec.interface.as_str())
                    .map_err(|message| IpcError::new(ErrorKind::BadRequest, message))?;
                Command::Up(spec)
            }
            // The executor moves the process (I/O, and only it knows the connection's process)
            // and hands the core a `Command::Bypass`: one reaching here was not carried out.
            Request::Bypass => {
                return Err(IpcError::new(
                    ErrorKind::BadRequest,
                    "exec --bypass: the requesting process was not moved; nothing was changed",
                ));
            }
            Request::Down => Command::Down,
            Request::Off => Command::Off,
            Request::Lockdown { enabled } => Command::Lockdown(*enabled),
            Request::AllowLan { enabled } => Command::AllowLan(*enabled),
            Request::AppsOnly { enabled } => Command::AppsOnly(*enabled),
            Request::Allow { add, entry } => Command::Allow {
                add: *add,
                entry: entry.clone(),
            },
            // Names are looked up here, where the daemon does I/O, not in the state machine.
            Request::Users { add, user } => match crate::users::resolve(user) {
                Ok(found) => Command::Users {
                    add: *add,
                    user: found.user,
                    uid: Some(found.uid),
                },
                Err(_) if !*add => Command::Users {
                    add: false,
                    user: user.trim().to_owned(),
                    uid: None,
                },
                Err(why) => {
                    return Err(IpcError::new(
                        ErrorKind::BadRequest,
                        format!("{why}; nothing was changed"),
                    ));
                }
            },
            // Whether the interface holds the default route is looked at here, where the daemon
            // does I/O; what the core can judge (the tunnel's name, config.toml's) it judges.
            Request::Router { add, interface } => {
                if *add {
                    crate::router::check_name(interface)
                        .and_then(|()| crate::router::check_not_wan(interface))
                        .map_err(|why| {
                            IpcError::new(
                                ErrorKind::BadRequest,
                                format!("router add {interface}: {why}; nothing was changed"),
                            )
                        })?;
                }
                Command::Router {
                    add: *add,
                    interface: interface.clone(),
                }
            }
            // The IPC task carries these out itself; one reaching here is refused.
            Request::Exec(_) | Request::ExecSignal { .. } => {
                return Err(IpcError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "`{}` is served by the IPC server, not the state machine",
                        request.name()
                    ),
                ));
            }
        })
    }
}

/// The state machine and the firewall it drives.
pub struct Core<F> {
    firewall: F,
    store: Box<dyn SettingsStore>,
    settings: Settings,
    target: Target,
    /// A broken configuration file: blocks until the daemon restarts or reloads a good one.
    config_fault: Option<String>,
    /// Why the last reload was refused (the running configuration stayed), until one succeeds.
    reload_error: Option<String>,
    /// An unusable settings file: blocks until the user sets something (which rewrites it).
    settings_fault: Option<String>,
    observed: Option<Observed>,
    /// The last observation as it came, trusted or not: judged again when the user vouches for
    /// the interface by guarding it again.
    seen: Option<Observed>,
    /// What the guarded interface was when first seen carrying traffic: an interface of that
    /// name that is something else later is not trusted as the tunnel. Kept across restarts.
    pinned: Option<crate::links::LinkIdentity>,
    /// Why an interface of the guarded name is not trusted as the tunnel, while it is not.
    link_fault: Option<String>,
    /// The ruleset the kernel holds, as of the last successful, verified apply.
    applied: Option<Ruleset>,
    /// The routing layer the last reconcile meant the kernel to hold (`None`: none).
    routing_intent: Option<killswitch_policy::routes::RoutingLayer>,
    state: State,
    apply_error: Option<String>,
    /// Why the routing layer could not be put in place, if it could not.
    routing_error: Option<String>,
    firewall_status: FirewallStatus,
    /// The tunnel the daemon runs itself (`up`).
    manager: Option<Manager>,
    /// The local bridges and allowed interfaces as last looked at.
    locals: crate::locals::LocalView,
    /// The exceptions added with `killswitch allow add` (persisted; config.toml's are in
    /// `options.allows`).
    allows: killswitch_types::Allows,
    /// The tunnel-only users added with `killswitch users add` (persisted; config.toml's are in
    /// `options.tunnel_only_users`).
    users: Vec<crate::users::TunnelOnlyUser>,
    /// The router LAN interfaces added with `killswitch router add` (persisted; config.toml's
    /// are in `options.router_lans`).
    router_lans: Vec<InterfaceName>,
    /// The router LANs as last looked at (with the link watcher's changes).
    router: crate::router::RouterView,
    /// Router LANs whose forwarding switch could not be set, and why, until the next look.
    forwarding_failed: Vec<(InterfaceName, String)>,
    /// The LANs whose forwarding switch this daemon turned on (it was off): switched off again
    /// when they stop being router LANs, so that `router remove` leaves no forwarding behind that
    /// the administrator never enabled.
    forwarded: Vec<InterfaceName>,
    /// What carried the router LANs' flows at the last reconcile: the connected tunnel and its
    /// peer (`None`: no tunnel connected, or no router LAN). When it changes, their conntrack
    /// entries are stale ([`Effect::DeleteRouterFlows`]). `None` before the first reconcile.
    router_carrier: Option<Option<(Tunnel, Peer)>>,
    /// The router LANs' flows must be deleted at the end of this input.
    router_flows_stale: bool,
    /// The bypass cgroup while programs run in it (`killswitch exec --bypass`), as the executor
    /// last looked at it. Not persisted: a restarted daemon looks again.
    bypass: Option<crate::bypass::BypassView>,
    options: CoreOptions,
    dns_status: Option<DnsStatus>,
    /// The latest time an input brought: the core reads no clock. A tunnel that a command asks
    /// for is due at once, which is "now" as far as the core knows.
    now: Instant,
    /// When to retry a failed apply.
    retry: RetryTimer,
    /// What to do once [`Input::Looked`] answers an [`Effect::Look`].
    then: Option<Then>,
    /// The answer to the command being carried out, sent once DNS has followed (so that the reply
    /// to `down` or `up` says where DNS points now).
    answer: Option<Result<(), IpcError>>,
    /// The status subscribers were last given.
    published: Option<Status>,
    /// The live `killswitch exec` namespaces (not persisted here: the exec registry keeps them).
    exec_scopes: Vec<killswitch_types::exec::ExecScopeStatus>,
    /// The generation of `exec_scopes` ([`Command::ExecScopes`]).
    exec_generation: u64,
    /// Freeze on drop: the watched programs as the executor last reported them, and whether
    /// they are held.
    on_drop: crate::freeze::decide::OnDropState,
}

/// What the core was doing when it asked to look at the guarded interface.
#[derive(Debug)]
enum Then {
    /// Reconcile (level-triggered: it repairs whatever is off); a retry of a failed apply moves
    /// the retry timer after it.
    Reconcile {
        /// Whether this was the retry timer.
        retry: bool,
    },
    /// A command was carried out with this answer; reconcile again if what was seen changed.
    Answer(Result<(), IpcError>),
}

/// What happens to the daemon: the state machine's inputs. [`Core::on`] takes each with the time it
/// happened.
#[derive(Debug)]
pub enum Input {
    /// The daemon started: look at the tunnel, and put the rules in place.
    Started,
    /// A client's request, parsed.
    Command(Command),
    /// A link, address, route or rule changed: look at the tunnel at once, and repair.
    LinksChanged,
    /// The machine woke from sleep: the same.
    Woke,
    /// Another program committed an nf_tables transaction.
    NftChanged {
        /// Who, as the kernel names the committing process.
        committer: String,
    },
    /// The time [`Effect::WakeAt`] asked for came.
    Timer,
    /// The answer to [`Effect::Look`]: the guarded interface as it is now.
    Looked(Option<Observed>),
    /// The configuration file was read again (SIGHUP, `systemctl reload`): what it now says, or
    /// why it cannot be used (then the running configuration stays).
    Reloaded(Result<Box<Reconfigured>, String>),
    /// The bypass cgroup may have changed (created, re-created with a new id, populated,
    /// emptied and removed): what the executor sees now.
    Bypass(Option<crate::bypass::BypassView>),
    /// The watched programs of freeze on drop ([`crate::freeze`]) as the executor sees them:
    /// after one was watched or forgotten, after a reload, and as the answer to
    /// [`Effect::Freeze`] and [`Effect::Thaw`].
    OnDrop(crate::freeze::decide::Report),
    /// The answer to [`Effect::Forward`]: each interface, and whether its forwarding switch
    /// could be set (or why not).
    Forwarded(Vec<(InterfaceName, Result<(), String>)>),
    /// The answer to [`Effect::SyncDns`].
    DnsSynced {
        /// Whether DNS management changed anything (then `status` is its new status).
        changed: bool,
        /// DNS management's status, for `status`.
        status: Option<DnsStatus>,
    },
}

/// What the state machine asks of the daemon, in order. The firewall, the routing layer, the
/// settings file and the tunnel devices are its backends (their results decide what comes next,
/// so it calls them itself, through traits the simulation replaces); everything else comes out
/// here. Effects that name an answer must be answered at once, before the effects after them.
#[derive(Debug)]
pub enum Effect {
    /// Look at this interface; answer with [`Input::Looked`].
    Look(InterfaceName),
    /// Send one DNS query through the tunnel to this resolver (a probe: its answer is a sign of
    /// life in the device's statistics).
    Probe(IpAddr),
    /// Give this status to subscribers.
    Publish(Status),
    /// Make the system's resolvers follow this; answer with [`Input::DnsSynced`].
    SyncDns(DnsWant),
    /// Answer the command being carried out.
    Reply(Result<Status, IpcError>),
    /// Send [`Input::Timer`] at this instant (`None`: no timer is needed). Replaces any earlier
    /// wake-up.
    WakeAt(Option<Instant>),
    /// The tunnel is lost (a tunnel is wanted and the state is not `connected`): freeze every
    /// watched program's cgroup, kill the `kill_on_drop` ones; answer with [`Input::OnDrop`].
    /// It is the last effect of its input, right after the firewall has moved; the status,
    /// timer and DNS follow the answer.
    Freeze {
        /// Why, for the event: `tunnel lost`, `tunnel not connected`, `blocked`.
        reason: String,
    },
    /// The tunnel is back (or no tunnel is wanted any more): thaw them; answer with
    /// [`Input::OnDrop`].
    Thaw,
    /// Switch IPv4 forwarding on for these router LAN interfaces (their rules are in force);
    /// answer with [`Input::Forwarded`].
    Forward(Vec<InterfaceName>),
    /// Switch IPv4 forwarding off again for these interfaces: the daemon switched it on while
    /// they were router LANs, and they are not any more. No answer.
    Unforward(Vec<InterfaceName>),
    /// The path the router LANs' flows took changed (another tunnel, server, addresses, or no
    /// tunnel connected any more) and the new rules are in force: delete every conntrack entry
    /// marked [`killswitch_policy::CT_MARK_ROUTER`], so that each flow's next packet is judged
    /// and NATed afresh. No answer.
    DeleteRouterFlows,
}

/// The first retry after a failed apply, doubled up to [`RETRY_MAX`]. Only while failing: a
/// healthy daemon has no timers.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// When to retry a failed apply: an absolute instant, armed when applying starts failing and
/// moved only when it fires. Other events (the tunnel manager ticks every 50-500 ms while `up`)
/// must not postpone it: a deadline recreated on every pass of the loop never fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTimer {
    due: Option<Instant>,
    delay: Duration,
}

impl Default for RetryTimer {
    fn default() -> Self {
        RetryTimer {
            due: None,
            delay: RETRY_MIN,
        }
    }
}

impl RetryTimer {
    /// Follows the daemon's state after any event: arms the timer when applying fails and it is
    /// not armed yet (never moving a deadline that is set), disarms and resets it once applying
    /// works again.
    pub fn follow(&mut self, failing: bool, now: Instant) {
        match (failing, self.due) {
            (true, None) => self.due = Some(now + self.delay),
            (true, Some(_)) => {}
            (false, _) => *self = RetryTimer::default(),
        }
    }

    /// The deadline, if one is set.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The deadline passed and the retry ran: the next one, if still failing, waits twice as long
    /// (up to a minute).
    pub fn fired(&mut self, failing: bool, now: Instant) {
        if failing {
            self.delay = (self.delay * 2).min(RETRY_MAX);
            self.due = Some(now + self.delay);
        } else {
            *self = RetryTimer::default();
        }
    }
}

impl<F> std::fmt::Debug for Core<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Core({}, {:?})", self.state, self.manager)
    }
}

impl<F: Firewall> Core<F> {
    /// Loads the persisted settings and prepares the state machine. Applies nothing yet: the
    /// caller first observes the tunnel, then calls [`Core::reconcile`].
    pub fn new(
        firewall: F,
        store: impl SettingsStore + 'static,
        config_fault: Option<String>,
        options: CoreOptions,
        now: Instant,
    ) -> Self {
        let (persisted, settings_fault) = match store.load() {
            Loaded::Fresh => (Persisted::default(), None),
            Loaded::Found(p) => (p.normalized(), None),
            // Nobody knows what the user wanted: block, and say so in the settings `status`
            // shows (lockdown on), not only in an error. That assumption is written down at once
            // (the bad file kept aside), so that a restart or a reboot blocks too; if it cannot
            // be, the bad file stays and blocks them anyway.
            // A newer daemon's file: block as for an unusable one, but leave it be.
            Loaded::Newer(why) => (
                Persisted::unknown(),
                Some(format!("{why}; lockdown is on until you decide")),
            ),
            Loaded::Unusable(why) => {
                let kept = store.quarantine();
                let assumed = Persisted::unknown();
                let why = match store.save(&assumed) {
                    Ok(()) => format!(
                        "{why}{}; lockdown is on until you decide",
                        kept.map(|k| format!(" (kept as {})", k.display()))
                            .unwrap_or_default()
                    ),
                    Err(e) => {
                        tracing::warn!("cannot write the assumed settings: {e}");
                        why
                    }
                };
                (assumed, Some(why))
            }
        };
        // What the guarded tunnel was, as the previous daemon saw it; only for a tunnel to guard.
        let pinned = persisted
            .guard_identity
            .filter(|_| matches!(persisted.target, Target::Guard(_)));
        Core {
            firewall,
            store: Box::new(store),
            settings: persisted.settings,
            target: persisted.target,
            config_fault,
            reload_error: None,
            settings_fault,
            observed: None,
            seen: None,
            pinned,
            link_fault: None,
            applied: None,
            routing_intent: None,
            state: State::Blocked,
            apply_error: None,
            routing_error: None,
            firewall_status: FirewallStatus {
                installed: false,
                blocking: false,
                transitions: 0,
                last_apply_us: None,
                tamper_events: 0,
                last_tamper: None,
                routing: false,
                flush_protection: None,
            },
            manager: None,
            locals: crate::locals::LocalView::default(),
            allows: persisted.allows.clone(),
            users: persisted.tunnel_only_users.clone(),
            router_lans: persisted.router_lans.clone(),
            router: crate::router::RouterView::default(),
            forwarding_failed: Vec::new(),
            forwarded: Vec::new(),
            router_carrier: None,
            router_flows_stale: false,
            bypass: None,
            options,
            dns_status: None,
            now,
            retry: RetryTimer::default(),
            then: None,
            answer: None,
            published: None,
            exec_scopes: Vec::new(),
            exec_generation: 0,
            on_drop: crate::freeze::decide::OnDropState::default(),
        }
        .with_manager(now)
        .with_locals()
    }

    /// The same, the local bridges and allowed interfaces looked at.
    fn with_locals(mut self) -> Self {
        self.refresh_locals();
        self
    }

    fn with_manager(mut self, now: Instant) -> Self {
        self.sync_manager(now);
        self
    }

    /// Makes the tunnel manager match the target: a new one for a new `up`, none otherwise. Called
    /// after the firewall has moved, so that an old tunnel is removed only once it is blocked.
    fn sync_manager(&mut self, now: Instant) {
        let wanted = match &self.target {
            Target::Up(spec) => Some(spec),
            _ => None,
        };
        if wanted.is_some() && wanted == self.manager.as_ref().map(Manager::spec) {
            return;
        }
        if let Some(mut old) = self.manager.take() {
            old.stop();
        }
        if let Some(spec) = wanted {
            self.manager = Some(Manager::new(spec.clone(), self.options.health_bound, now));
        }
    }

    /// Takes one input, at `now`; returns what the daemon must do, in order.
    pub fn on(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        self.now = self.now.max(now);
        let mut effects = Vec::new();
        match input {
            Input::Started => {
                self.refresh_locals();
                self.look_then(Then::Reconcile { retry: false }, &mut effects);
            }
            Input::Command(command) => {
                let answer = self.handle(&command).map(|_| ());
                // The guarded interface may have changed: look at the new one.
                self.look_then(Then::Answer(answer), &mut effects);
            }
            Input::LinksChanged | Input::Woke => {
                self.refresh_locals();
                // A new network (or the tunnel's own link changing): look at the tunnel now, and
                // let reconcile repair whatever is off (it changes nothing when all is well).
                self.check_now();
                self.look_then(Then::Reconcile { retry: false }, &mut effects);
            }
            Input::Bypass(view) => {
                // Level-triggered: the rules follow the cgroup's current id. A change of the
                // process count alone changes no rule, only what `status` shows.
                let scope_changed =
                    self.bypass.as_ref().map(|b| b.scope) != view.as_ref().map(|b| b.scope);
                match (&self.bypass, &view) {
                    (None, Some(v)) => tracing::info!(id = v.scope.id, "bypass started"),
                    (Some(_), None) => tracing::info!("bypass ended"),
                    (Some(old), Some(new)) if old.scope != new.scope => {
                        tracing::info!(
                            old = old.scope.id,
                            new = new.scope.id,
                            "bypass cgroup re-created"
                        )
                    }
                    _ => {}
                }
                self.bypass = view;
                if scope_changed {
                    self.reconcile();
                }
                self.finish(&mut effects);
            }
            Input::NftChanged { committer } => {
                self.check_installed(&committer);
                self.finish(&mut effects);
            }
            Input::Timer => {
                if self.next_tick(self.now).is_some_and(|due| due <= self.now) {
                    let tick = self.tick(self.now);
                    effects.extend(tick.probe.map(Effect::Probe));
                }
                if self.retry.due().is_some_and(|due| due <= self.now) {
                    tracing::info!("retrying the firewall");
                    self.look_then(Then::Reconcile { retry: true }, &mut effects);
                } else {
                    self.finish(&mut effects);
                }
            }
            Input::Looked(observed) => {
                // What was seen can change the status by itself (an untrusted interface).
                let changed = self.observe(observed);
                match self.then.take() {
                    Some(Then::Reconcile { retry }) => {
                        self.reconcile();
                        if retry {
                            self.retry.fired(self.needs_retry(), self.now);
                        }
                    }
                    Some(Then::Answer(answer)) => {
                        if changed {
                            self.reconcile();
                        }
                        self.answer = Some(answer);
                    }
                    None => {}
                }
                self.finish(&mut effects);
            }
            Input::Reloaded(result) => {
                match result {
                    Ok(new) => {
                        let Reconfigured {
                            lan,
                            allows,
                            detect_local_bridges,
                            health_bound,
                            wireguard_dir,
                            tunnel_only_users,
                            apps_only,
                            router_lans,
                        } = *new;
                        self.options.router_lans = router_lans;
                        self.options.tunnel_only_users = tunnel_only_users;
                        self.options.apps_only = apps_only;
                        self.options.lan = lan;
                        self.options.allows = allows;
                        self.options.detect_local_bridges = detect_local_bridges;
                        self.options.health_bound = health_bound;
                        self.options.wireguard_dir = wireguard_dir;
                        self.config_fault = None;
                        self.reload_error = None;
                        tracing::info!("configuration reloaded");
                    }
                    Err(why) => {
                        tracing::error!("{why}; the running configuration stays");
                        self.reload_error = Some(format!(
                            "{why}; not reloaded, the running configuration stays"
                        ));
                    }
                }
                self.refresh_locals();
                // One transaction from the old rules to the new: no window.
                self.look_then(Then::Reconcile { retry: false }, &mut effects);
            }
            Input::OnDrop(report) => {
                self.on_drop.record(report);
                self.finish(&mut effects);
            }
            Input::Forwarded(results) => {
                for (interface, result) in results {
                    match result {
                        Ok(()) => {
                            if let Some(lan) = self
                                .router
                                .lans
                                .iter_mut()
                                .find(|l| l.interface == interface)
                            {
                                lan.forwarding = true;
                            }
                            tracing::info!("router LAN {interface}: forwarding on");
                            if !self.forwarded.contains(&interface) {
                                self.forwarded.push(interface);
                            }
                        }
                        Err(why) => {
                            tracing::warn!("router LAN {interface}: {why}");
                            self.forwarding_failed.push((interface, why));
                        }
                    }
                }
                self.finish(&mut effects);
            }
            Input::DnsSynced { changed, status } => {
                if changed {
                    self.dns_status = status;
                }
                self.publish(&mut effects);
                if let Some(answer) = self.answer.take() {
                    effects.push(Effect::Reply(answer.map(|()| self.status())));
                }
            }
        }
        effects
    }

    /// Looks at the guarded interface (through the daemon) and then does `then`; with none to
    /// guard, does it at once.
    fn look_then(&mut self, then: Then, effects: &mut Vec<Effect>) {
        match self.guarded_interface().cloned() {
            Some(name) => {
                self.then = Some(then);
                effects.push(Effect::Look(name));
            }
            None => {
                self.then = Some(then);
                effects.extend(self.on(Input::Looked(None), self.now));
            }
        }
    }

    /// The end of every input: the status to subscribers if it changed, DNS after the firewall
    /// (unblocked, then pointed at the tunnel; blocked, then given back), and the next wake-up.
    fn finish(&mut self, effects: &mut Vec<Effect>) {
        // First: the firewall has moved, and nothing after this (the status, DNS over D-Bus)
        // may delay the freeze. The rest comes with its answer, so that the status published
        // says what was done.
        let tunnel_wanted = matches!(self.target, Target::Up(_) | Target::Guard(_));
        match self.on_drop.decide(self.state, tunnel_wanted) {
            Some(crate::freeze::decide::Action::Freeze { reason }) => {
                effects.push(Effect::Freeze { reason });
                return;
            }
            Some(crate::freeze::decide::Action::Thaw) => {
                effects.push(Effect::Thaw);
                return;
            }
            None => {}
        }
        // The new rules are in force: now the router LANs' stale flows can go (their next
        // packets meet the new rules), and forwarding can be switched on for LANs whose rules
        // are there.
        if std::mem::take(&mut self.router_flows_stale) {
            effects.push(Effect::DeleteRouterFlows);
        }
        let in_force: Vec<InterfaceName> = (self.router_lans_in_force().into_iter())
            .map(|(seen, _)| seen.interface)
            .collect();
        let (kept, unforward): (Vec<_>, Vec<_>) = std::mem::take(&mut self.forwarded)
            .into_iter()
            .partition(|lan| in_force.contains(lan));
        self.forwarded = kept;
        if !unforward.is_empty() {
            effects.push(Effect::Unforward(unforward));
        }
        let forward = self.lans_to_forward();
        if !forward.is_empty() {
            effects.push(Effect::Forward(forward));
            return;
        }
        self.publish(effects);
        self.retry.follow(self.needs_retry(), self.now);
        let wake = [self.retry.due(), self.next_tick(self.now)]
            .into_iter()
            .flatten()
            .min();
        effects.push(Effect::WakeAt(wake));
        effects.push(Effect::SyncDns(self.dns_want()));
    }

    fn publish(&mut self, effects: &mut Vec<Effect>) {
        let status = self.status();
        if self.published.as_ref() != Some(&status) {
            self.published = Some(status.clone());
            effects.push(Effect::Publish(status));
        }
    }

    /// When the tunnel manager wants its next tick, if there is one.
    pub fn next_tick(&self, now: Instant) -> Option<Instant> {
        self.manager.as_ref().map(|m| m.next_tick(now))
    }

    /// Something happened that may have broken the tunnel (a network change, a wake from
    /// sleep): look at it at once.
    pub fn check_now(&mut self) {
        if let Some(manager) = self.manager.as_mut() {
            manager.check_now();
        }
    }

    /// Advances the tunnel manager. When it connects or loses the tunnel, the firewall follows:
    /// a loss blocks and moves the hole to the next server before that server is tried.
    pub fn tick(&mut self, now: Instant) -> Tick {
        self.now = self.now.max(now);
        let before = self.status();
        let Some(manager) = self.manager.as_mut() else {
            return Tick::default();
        };
        let step = manager.tick(now, &mut self.options.factory);
        let mut tick = Tick::default();
        match step {
            Step::Connected | Step::Lost => {
                self.reconcile();
            }
            Step::Attempted { probe } => {
                // Admit the probe first, then send it.
                self.reconcile();
                tick.probe = probe;
            }
            Step::Probe(ip) => tick.probe = Some(ip),
            Step::Nothing => {}
        }
        tick.changed = self.status() != before;
        tick
    }

    /// The record of the interfaces the daemon created, which parsing `up` consults.
    pub fn devices(&self) -> &Devices {
        &self.options.devices
    }

    /// The interface the daemon should watch, if it guards one.
    pub fn guarded_interface(&self) -> Option<&InterfaceName> {
        match &self.target {
            Target::Guard(spec) => Some(&spec.interface),
            _ => None,
        }
    }

    /// Records what the tunnel interface looks like now. Returns whether that changed anything.
    /// An interface of the guarded name that is not the tunnel (see
    /// [`crate::links::judge_identity`]) counts as no tunnel, and `status` says why.
    pub fn observe(&mut self, observed: Option<Observed>) -> bool {
        self.seen.clone_from(&observed);
        let (observed, fault) = self.trust(observed);
        if fault.is_some() && fault != self.link_fault {
            tracing::warn!("{}", fault.as_deref().unwrap_or_default());
        }
        let changed = self.observed != observed || self.link_fault != fault;
        self.observed = observed;
        self.link_fault = fault;
        changed
    }

    fn trust(&mut self, observed: Option<Observed>) -> (Option<Observed>, Option<String>) {
        let (Some(observed), Some(name)) = (observed, self.guarded_interface()) else {
            return (None, None);
        };
        let Some(identity) = observed.identity.clone() else {
            return (
                None,
                Some(format!(
                    "cannot tell what kind of device {name} is: not trusted as the tunnel"
                )),
            );
        };
        match crate::links::judge_identity(name, &identity, self.pinned.as_ref()) {
            Ok(()) => {
                if observed.carries_traffic() && self.pinned.is_none() {
                    self.pinned = Some(identity);
                    self.save_pin();
                }
                (Some(observed), None)
            }
            Err(why) => (None, Some(why)),
        }
    }

    /// Writes down what the guarded tunnel is, so that a restart remembers it. A failure costs
    /// only that memory (the pin holds for this run), so it is logged, not reported as a fault;
    /// an unusable settings file is never overwritten by it.
    fn save_pin(&self) {
        if self.settings_fault.is_some() {
            return;
        }
        let persisted = Persisted::new(self.settings, self.target.clone())
            .with_guard_identity(self.pinned.clone())
            .with_allows(self.allows.clone())
            .with_tunnel_only_users(self.users.clone())
            .with_router_lans(self.router_lans.clone());
        if let Err(e) = self.store.save(&persisted) {
            tracing::warn!(
                "cannot remember what kind of device the tunnel is in {}: {e}",
                self.store.path().display()
            );
        }
    }

    /// Whether the last apply failed, so that the caller retries later.
    pub fn needs_retry(&self) -> bool {
        self.apply_error.is_some() || self.routing_error.is_some()
    }

    /// The current state, as `status` reports it.
    pub fn status(&self) -> Status {
        let tunnel = match &self.target {
            Target::Up(spec) => Some(self.managed_status(spec)),
            Target::Guard(spec) => Some(TunnelStatus {
                interface: spec.interface.clone(),
                endpoint: spec.endpoints.first(),
                endpoints: spec.endpoints.as_slice().to_vec(),
                dns: spec.dns.clone(),
                mark: spec.mark,
                uid: spec.uid,
                up: self
                    .observed
                    .as_ref()
                    .is_some_and(Observed::carries_traffic),
                addresses: self
                    .observed
                    .as_ref()
                    .map(|o| o.addresses.clone())
                    .unwrap_or_default(),
                managed: None,
                handshake: None,
            }),
            _ => None,
        };
        // While `up` is not connected, why its last attempt failed (a device that cannot be
        // created, no handshake): otherwise `status` would say "connecting, error: none" forever.
        let up_failure = self
            .manager
            .as_ref()
            .filter(|_| self.state != State::Connected)
            .and_then(Manager::last_failure);
        let error = [
            self.apply_error.as_deref(),
            self.config_fault.as_deref(),
            self.settings_fault.as_deref(),
            self.link_fault.as_deref(),
            up_failure,
            self.routing_error.as_deref(),
            self.reload_error.as_deref(),
        ]
        .into_iter()
        .flatten()
        .next()
        .map(str::to_owned);
        Status {
            protocol: killswitch_types::ipc::PROTOCOL_VERSION,
            schema: killswitch_types::ipc::STATUS_SCHEMA_VERSION,
            daemon_version: Some(killswitch_types::PRODUCT_VERSION.to_owned()),
            state: self.state,
            lockdown: self.settings.lockdown,
            allow_lan: self.settings.allow_lan,
            apps_only: self.apps_only(),
            tunnel,
            error,
            firewall: self.firewall_status.clone(),
            dns: self.dns_status.clone(),
            exceptions: self.exceptions_status(),
            notes: Vec::new(),
            // Filled by the IPC server when it answers `status` (`blocked.rs`): the counts change
            // with every refused packet, which is no change of state to publish.
            blocked: None,
            tunnel_only_users: self.tunnel_only_users(),
            router_lans: self.router_lans_status(),
            ip_forward: self
                .router
                .ip_forward
                .filter(|_| !self.router_lans_status().is_empty()),
            exec: self.exec_scopes.clone(),
            bypass: self
                .bypass
                .as_ref()
                .map(|b| killswitch_types::ipc::BypassStatus {
                    cgroup: b.name.clone(),
                    directory: Some(b.path.display().to_string()),
                    id: b.scope.id,
                    level: b.scope.level,
                    processes: b.processes,
                }),
            on_drop: self.on_drop.status(),
        }
    }

    /// The exec namespaces a previous daemon left running, re-adopted before the first
    /// reconcile: their rules stay in force across the restart.
    pub fn adopt_exec_scopes(
        &mut self,
        generation: u64,
        scopes: Vec<killswitch_types::exec::ExecScopeStatus>,
    ) {
        self.exec_generation = generation;
        self.exec_scopes = scopes;
    }

    /// The CLI's exceptions with `entry` added or removed, or why not (nothing changes then):
    /// config.toml's entries are the file's to remove, and the result must pass the same checks
    /// as the file (no public subnet without `public`, the counts).
    fn changed_allows(
        &self,
        add: bool,
        entry: &killswitch_types::AllowEntry,
    ) -> Result<killswitch_types::Allows, IpcError> {
        let refuse = |why: String| {
            Err(IpcError::new(
                ErrorKind::BadRequest,
                format!("{why}; nothing was changed"),
            ))
        };
        if !add && self.options.allows.contains(entry) {
            return refuse(format!(
                "{entry} is allowed in config.toml; remove it there and reload the daemon (systemctl reload killswitchd)"
            ));
        }
        if add && self.all_allows().contains(entry) {
            // Already allowed (here or in config.toml): nothing to change, and no copy kept that
            // would outlive the file's entry.
            return Ok(self.allows.clone());
        }
        if !add && !self.allows.contains(entry) {
            // The same subnet with the other `public` flag is what was probably meant.
            let hint = match entry {
                killswitch_types::AllowEntry::Subnet(s) => self
                    .all_allows()
                    .subnets
                    .iter()
                    .find(|o| o.subnet == s.subnet && o.interface == s.interface)
                    .map(|o| format!(" (`{o}` is: name it as it is allowed)")),
                _ => None,
            };
            return refuse(format!(
                "{entry} is not allowed{}",
                hint.unwrap_or_default()
            ));
        }
        let next = self.allows.with(entry, add);
        if let Err(why) = killswitch_policy::check_allows(&self.options.allows.merged(&next)) {
            return refuse(why);
        }
        Ok(next)
    }

    /// The administrator's exceptions: config.toml's, then those added with the CLI.
    fn all_allows(&self) -> killswitch_types::Allows {
        self.options.allows.merged(&self.allows)
    }

    /// The exceptions in force, as `status` shows them.
    fn exceptions_status(&self) -> ExceptionsStatus {
        let names = |links: &[killswitch_policy::LocalLink]| {
            links.iter().map(|l| l.interface.to_string()).collect()
        };
        let allows = &self.all_allows();
        ExceptionsStatus {
            local_bridges: names(&self.locals.bridges),
            interfaces: names(&self.locals.interfaces),
            subnets: allows.subnets.iter().map(ToString::to_string).collect(),
            inbound: allows.inbound.iter().map(ToString::to_string).collect(),
            refused: (self.locals.refused.iter().cloned())
                .chain(
                    self.options
                        .tunnel_only_users
                        .iter()
                        .filter_map(|u| u.clone().err()),
                )
                .chain(self.router_refusals())
                .chain(
                    self.forwarding_failed
                        .iter()
                        .map(|(lan, why)| format!("router LAN {lan}: forwarding: {why}")),
                )
                .collect(),
            absent: {
                let named = (allows.interfaces.iter())
                    .chain(allows.subnets.iter().map(|s| &s.interface))
                    .chain(allows.inbound.iter().map(|i| &i.interface));
                let mut absent: Vec<String> = named
                    .map(ToString::to_string)
                    .filter(|n| !self.locals.present.contains(n))
                    .collect();
                absent.sort();
                absent.dedup();
                absent
            },
        }
    }

    /// Looks at the local bridges and the allowed interfaces again. Only when they may have changed
    /// (at start, on a link, address or route change, on a wake-up, when the allows change): the
    /// rules are compiled from what was seen, so a tunnel's loss, which must block at once, never
    /// waits for netlink dumps.
    fn refresh_locals(&mut self) {
        self.refresh_router();
        let allows = self.all_allows();
        let view =
            (self.options.look_locals)(&allows.interfaces, self.options.detect_local_bridges);
        if view == self.locals {
            return;
        }
        tracing::info!(
            bridges = ?view.bridges.iter().map(|l| l.interface.as_str()).collect::<Vec<_>>(),
            allowed = ?view.interfaces.iter().map(|l| l.interface.as_str()).collect::<Vec<_>>(),
            "local bridges and allowed interfaces"
        );
        for refused in view
            .refused
            .iter()
            .filter(|r| !self.locals.refused.contains(r))
        {
            tracing::warn!("{refused}");
        }
        self.locals = view;
    }

    /// The bypass cgroup as found before [`Input::Started`] (a previous daemon's bypassed
    /// programs still running): the first apply includes its rules.
    pub fn set_bypass(&mut self, view: Option<crate::bypass::BypassView>) {
        self.bypass = view;
    }

    /// Everything besides the tunnel the rules let through, as last looked at.
    fn exceptions(&self) -> Exceptions {
        let allows = &self.all_allows();
        Exceptions {
            lan: self.options.lan.clone(),
            local_bridges: self.locals.bridges.clone(),
            interfaces: self.locals.interfaces.clone(),
            subnets: allows.subnets.clone(),
            inbound: allows.inbound.clone(),
            tunnel_only_uids: self.tunnel_only_users().iter().map(|u| u.uid).collect(),
            exec_scopes: self
                .exec_scopes
                .iter()
                .map(|s| killswitch_policy::ExecScope {
                    interface: s.interface.clone(),
                    subnet: s.subnet,
                })
                .collect(),
            bypass: self.bypass.as_ref().map(|b| b.scope),
            router_lans: self
                .router_lans_in_force()
                .into_iter()
                .map(|(lan, _)| lan.link())
                .collect(),
        }
    }

    /// The router LANs wanted: config.toml's, then the CLI's, each once.
    fn router_lans_wanted(&self) -> Vec<(InterfaceName, killswitch_types::ipc::UserSource)> {
        use killswitch_types::ipc::UserSource;
        let mut wanted: Vec<(InterfaceName, UserSource)> = Vec::new();
        let config = (self.options.router_lans.iter()).map(|l| (l, UserSource::Config));
        let cli = self.router_lans.iter().map(|l| (l, UserSource::Cli));
        for (lan, source) in config.chain(cli) {
            if !wanted.iter().any(|(w, _)| w == lan) {
                wanted.push((lan.clone(), source));
            }
        }
        wanted
    }

    /// Looks at the router LANs again (when the links may have changed, or the list did).
    fn refresh_router(&mut self) {
        let names: Vec<InterfaceName> = (self.router_lans_wanted().into_iter())
            .map(|(lan, _)| lan)
            .collect();
        let view = (self.options.look_router)(&names);
        self.forwarding_failed.clear();
        if view != self.router {
            tracing::info!(
                lans = ?view
                    .lans
                    .iter()
                    .map(|l| format!("{} {:?}", l.interface, l.networks))
                    .collect::<Vec<_>>(),
                "router LANs"
            );
            for refused in view.lans.iter().filter_map(|l| l.refused.as_ref()) {
                tracing::warn!("router LAN refused: {refused}");
            }
        }
        self.router = view;
    }

    /// The tunnel interface the target names, if any: never a router LAN.
    fn tunnel_interface(&self) -> Option<&InterfaceName> {
        match &self.target {
            Target::Guard(spec) => Some(&spec.interface),
            Target::Up(spec) => Some(&spec.interface),
            _ => None,
        }
    }

    /// Why a wanted router LAN is not one now (it holds the default route, it is the tunnel).
    fn router_refusal(&self, lan: &InterfaceName) -> Option<String> {
        if let Err(why) = crate::router::check_not_tunnel(lan, self.tunnel_interface()) {
            return Some(why);
        }
        self.router.get(lan).and_then(|seen| seen.refused.clone())
    }

    /// The router LANs in force (wanted and not refused), as last looked at, with their source.
    fn router_lans_in_force(
        &self,
    ) -> Vec<(crate::router::SeenLan, killswitch_types::ipc::UserSource)> {
        self.router_lans_wanted()
            .into_iter()
            .filter(|(lan, _)| self.router_refusal(lan).is_none())
            .map(|(lan, source)| {
                let seen = self
                    .router
                    .get(&lan)
                    .cloned()
                    .unwrap_or_else(|| crate::router::SeenLan::absent(lan));
                (seen, source)
            })
            .collect()
    }

    /// The wanted router LANs that are refused, and why, for `status`.
    fn router_refusals(&self) -> Vec<String> {
        self.router_lans_wanted()
            .into_iter()
            .filter_map(|(lan, source)| {
                self.router_refusal(&lan)
                    .map(|why| format!("router LAN {lan} ({source}): {why}; not confined as a LAN"))
            })
            .collect()
    }

    /// The router LANs in force, as `status` shows them.
    fn router_lans_status(&self) -> Vec<killswitch_types::ipc::RouterLanStatus> {
        self.router_lans_in_force()
            .into_iter()
            .map(|(seen, source)| killswitch_types::ipc::RouterLanStatus {
                interface: seen.interface,
                networks: seen.networks,
                source,
                present: seen.present,
                forwarding: seen.forwarding,
            })
            .collect()
    }

    /// The router LANs whose forwarding switch should go on now: present, in force, off, not
    /// failed since the last look, and only once the rules that confine them are in force (the
    /// last apply worked). Never while a fault blocks everything: nothing is to be forwarded then.
    fn lans_to_forward(&self) -> Vec<InterfaceName> {
        if self.apply_error.is_some() || self.applied.is_none() {
            return Vec::new();
        }
        self.router_lans_in_force()
            .into_iter()
            .filter(|(seen, _)| seen.present && !seen.forwarding)
            .map(|(seen, _)| seen.interface)
            .filter(|lan| !self.forwarding_failed.iter().any(|(f, _)| f == lan))
            .collect()
    }

    /// The CLI's router LANs after `router add|remove IFACE`, or why not. Adding one already in
    /// force changes nothing; removing config.toml's is refused (the file is the administrator's).
    fn changed_router_lans(
        &self,
        add: bool,
        interface: &InterfaceName,
    ) -> Result<Vec<InterfaceName>, IpcError> {
        let refuse = |why: String| {
            Err(IpcError::new(
                ErrorKind::BadRequest,
                format!(
                    "router {} {interface}: {why}; nothing was changed",
                    if add { "add" } else { "remove" }
                ),
            ))
        };
        let in_config = self.options.router_lans.contains(interface);
        let mut lans = self.router_lans.clone();
        if add {
            if let Err(why) = crate::router::check_name(interface)
                .and_then(|()| crate::router::check_not_tunnel(interface, self.tunnel_interface()))
            {
                return refuse(why);
            }
            if !in_config && !lans.contains(interface) {
                lans.push(interface.clone());
            }
            return Ok(lans);
        }
        if !lans.contains(interface) {
            return refuse(if in_config {
                "it is a router LAN because config.toml lists it (router_lan_interfaces): \
                 remove it there and reload (systemctl reload killswitchd)"
                    .to_owned()
            } else {
                "it is not a router LAN".to_owned()
            });
        }
        lans.retain(|l| l != interface);
        Ok(lans)
    }

    /// Follows what carries the router LANs' flows (the connected tunnel and its peer) after an
    /// apply: when it changed, their conntrack entries are stale and go at the end of this input.
    /// A daemon's first reconcile knows nothing of what carried them before it: entries left
    /// while no tunnel is connected are stale, those of a connected tunnel are kept.
    fn follow_router_carrier(&mut self, enforced: &PolicyState, exceptions: &Exceptions) {
        let carrier = match enforced {
            PolicyState::Connected { peer, tunnel } if !exceptions.router_lans.is_empty() => {
                Some((tunnel.clone(), peer.clone()))
            }
            _ => None,
        };
        let stale = match &self.router_carrier {
            Some(previous) => *previous != carrier,
            None => carrier.is_none() && !exceptions.router_lans.is_empty(),
        };
        if stale {
            tracing::info!(
                "what carries the router LANs' flows changed: deleting their conntrack entries"
            );
            self.router_flows_stale = true;
        }
        self.router_carrier = Some(carrier);
    }

    /// The tunnel-only users in force: config.toml's that resolved, then the CLI's, each uid once.
    fn tunnel_only_users(&self) -> Vec<killswitch_types::ipc::TunnelOnlyUserStatus> {
        use killswitch_types::ipc::{TunnelOnlyUserStatus, UserSource};
        let config = (self.options.tunnel_only_users.iter())
            .flatten()
            .map(|u| (u, UserSource::Config));
        let cli = self.users.iter().map(|u| (u, UserSource::Cli));
        let mut seen = Vec::new();
        config
            .chain(cli)
            .filter(|(u, _)| {
                let new = !seen.contains(&u.uid);
                seen.push(u.uid);
                new
            })
            .map(|(u, source)| TunnelOnlyUserStatus {
                user: u.user.clone(),
                uid: u.uid,
                source,
            })
            .collect()
    }

    /// The CLI's tunnel-only users after `users add|remove USER` (the uid it resolved to, if it
    /// did), or why not. Adding one already in force changes nothing; removing one that
    /// config.toml lists is refused (the file is the administrator's, edit it there).
    fn changed_users(
        &self,
        add: bool,
        user: &str,
        uid: Option<u32>,
    ) -> Result<Vec<crate::users::TunnelOnlyUser>, IpcError> {
        let refuse = |message: String| Err(IpcError::new(ErrorKind::BadRequest, message));
        let is = |u: &crate::users::TunnelOnlyUser| u.user == user || Some(u.uid) == uid;
        let in_config = self.options.tunnel_only_users.iter().flatten().any(is);
        let mut users = self.users.clone();
        if add {
            let Some(uid) = uid else {
                return refuse(format!(
                    "tunnel-only user {user:?}: no such user; nothing was changed"
                ));
            };
            if !in_config && !users.iter().any(is) {
                users.push(crate::users::TunnelOnlyUser {
                    user: user.to_owned(),
                    uid,
                });
            }
            return Ok(users);
        }
        if !users.iter().any(is) {
            return refuse(if in_config {
                format!(
                    "{user} is a tunnel-only user because config.toml lists it (tunnel_only_users): \
                     remove it there and reload; nothing was changed"
                )
            } else {
                format!("{user} is not a tunnel-only user; nothing was changed")
            });
        }
        users.retain(|u| !is(u));
        Ok(users)
    }

    /// What the system's resolver configuration should be: the active server's resolvers while
    /// an `up` tunnel is connected; unchanged while it reconnects (its resolvers are as
    /// unreachable as any other until it is back, and flapping the file helps nobody); the
    /// user's own otherwise.
    pub fn dns_want(&self) -> DnsWant {
        if self.apps_only() {
            // The machine is not in the tunnel: its resolvers are its own (an exec namespace
            // gets the tunnel's in a resolv.conf of its own).
            return DnsWant::Restore;
        }
        match (&self.target, &self.manager) {
            (Target::Up(spec), Some(manager)) if manager.is_up() => {
                let config = manager.active().1;
                // Only resolvers the rules let through: an IPv6 resolver of an IPv4-only tunnel
                // in resolv.conf would cost every lookup a timeout.
                let servers = killswitch_policy::Tunnel {
                    interface: spec.interface.clone(),
                    addresses: config.addresses.iter().map(|n| n.addr()).collect(),
                    dns: config.dns.clone(),
                }
                .usable_dns();
                if servers.is_empty() {
                    DnsWant::Restore
                } else {
                    DnsWant::Tunnel {
                        interface: spec.interface.clone(),
                        servers,
                    }
                }
            }
            (Target::Up(_), _) => DnsWant::Keep,
            _ => DnsWant::Restore,
        }
    }

    /// Records the watched programs of freeze on drop before the first input (at start), without
    /// deciding anything yet: [`Input::Started`] decides with them.
    pub fn set_on_drop(&mut self, report: crate::freeze::decide::Report) {
        self.on_drop.record(report);
    }

    /// Records what DNS management did, for `status`.
    pub fn set_dns_status(&mut self, status: Option<DnsStatus>) {
        self.dns_status = status;
    }

    fn managed_status(&self, spec: &UpSpec) -> TunnelStatus {
        let manager = self.manager.as_ref().filter(|m| m.spec() == spec);
        let (index, config) = manager.map_or((0, spec.server(0)), |m| m.active());
        TunnelStatus {
            interface: spec.interface.clone(),
            endpoint: config.endpoint(),
            endpoints: vec![config.endpoint()],
            dns: config.dns.clone(),
            mark: Some(fwmark_of(config)),
            uid: None,
            up: manager.is_some_and(Manager::is_up),
            addresses: config.addresses.iter().map(|n| n.addr()).collect(),
            managed: Some(ManagedTunnel {
                backend: manager.and_then(Manager::backend).map(|b| b.to_string()),
                servers: spec.servers().map(|c| c.source.clone()).collect(),
                server: index,
                attempt: manager.map_or(0, Manager::attempt),
                last_event: manager.and_then(Manager::last_event).map(str::to_owned),
                failures: manager.map(Manager::failures).unwrap_or_default(),
            }),
            handshake: None,
        }
    }

    /// Carries out a privileged request: persists the new settings/target, then reconciles.
    ///
    /// If persisting fails, nothing changes. If applying fails, the request has still taken
    /// effect as the target (a restart will retry it), and the error says the daemon is blocking.
    pub fn handle(&mut self, command: &Command) -> Result<Status, IpcError> {
        let mut settings = self.settings;
        let mut target = self.target.clone();
        let mut allows = self.allows.clone();
        let mut users = self.users.clone();
        let mut router_lans = self.router_lans.clone();
        match command {
            Command::Status => return Ok(self.status()),
            Command::ExecScopes { generation, scopes } => {
                // Nothing to persist: only the rules follow.
                if *generation > self.exec_generation {
                    self.exec_generation = *generation;
                    self.exec_scopes = scopes.clone();
                    self.reconcile();
                }
                return match &self.apply_error {
                    None => Ok(self.status()),
                    Some(error) => Err(IpcError::new(
                        ErrorKind::Firewall,
                        format!("the firewall could not be changed ({error})"),
                    )),
                };
            }
            Command::Bypass(view) => {
                // Nothing to persist: the cgroup is the state, and a restart looks at it again.
                self.bypass = Some(view.clone());
                self.reconcile();
                return match &self.apply_error {
                    None => Ok(self.status()),
                    Some(error) => Err(IpcError::new(
                        ErrorKind::Firewall,
                        format!(
                            "the bypass rules could not be put in place ({error}); the program was not started"
                        ),
                    )),
                };
            }
            Command::Guard(spec) => {
                // (uid_t)-1 is "no uid" to the kernel, which refuses it in a routing rule: the
                // routing layer would be missing while the firewall held.
                if spec.uid == Some(u32::MAX) {
                    return Err(IpcError::new(
                        ErrorKind::BadRequest,
                        "uid 4294967295 is (uid_t)-1, which no process runs as; nothing was changed"
                            .to_owned(),
                    ));
                }
                // Guarding an interface that is never a tunnel (the NIC, a veth) would let
                // everything out through it while `status` says "connected": refuse.
                if let Some(identity) = (self.options.identify)(&spec.interface) {
                    crate::links::judge_identity(&spec.interface, &identity, None).map_err(
                        |why| {
                            IpcError::new(
                                ErrorKind::BadRequest,
                                format!(
                                    "cannot guard {}: {why}; nothing was changed",
                                    spec.interface
                                ),
                            )
                        },
                    )?;
                }
                target = Target::Guard(spec.clone());
            }
            Command::Up(spec) => target = Target::Up(spec.clone()),
            Command::Down => target = Target::Disconnected,
            Command::Off => {
                // Everything goes, lockdown included: `status` must never show a protection that
                // is not enforced, and `off` wins over lockdown.
                target = Target::Off;
                settings.lockdown = false;
            }
            Command::Lockdown(enabled) => {
                crate::apps_only::check_lockdown(*enabled, &settings, self.options.apps_only)?;
                settings.lockdown = *enabled;
                // Lockdown blocks whenever no tunnel is connected. After `off` that means leaving
                // `off`: otherwise `off` would keep winning and lockdown would arm nothing.
                if *enabled && target == Target::Off {
                    target = Target::Disconnected;
                }
            }
            Command::AllowLan(enabled) => settings.allow_lan = *enabled,
            Command::AppsOnly(enabled) => {
                crate::apps_only::check_switch(*enabled, &settings, self.options.apps_only)?;
                settings.apps_only = *enabled;
            }
            Command::Allow { add, entry } => allows = self.changed_allows(*add, entry)?,
            Command::Users { add, user, uid } => users = self.changed_users(*add, user, *uid)?,
            Command::Router { add, interface } => {
                router_lans = self.changed_router_lans(*add, interface)?;
            }
        }
        // The same tunnel to guard: what it was stays known, unless the user guards it again,
        // vouching for whatever now has its name (as the refusal told them to).
        let vouched = matches!(command, Command::Guard(_));
        let pinned = self
            .pinned
            .clone()
            .filter(|_| self.target == target && !vouched);
        let persisted = Persisted::new(settings, target.clone())
            .with_guard_identity(pinned)
            .with_allows(allows.clone())
            .with_tunnel_only_users(users.clone())
            .with_router_lans(router_lans.clone());
        self.store.save(&persisted).map_err(|e| {
            IpcError::new(
                ErrorKind::Storage,
                format!(
                    "cannot save settings to {}: {e}; nothing was changed",
                    self.store.path().display()
                ),
            )
        })?;
        let target_changed = self.target != target;
        if target_changed {
            // A new tunnel to guard: what we saw of the old one says nothing about it.
            self.observed = None;
            self.seen = None;
            self.pinned = None;
            self.link_fault = None;
        } else if vouched {
            self.pinned = None;
            let seen = self.seen.take();
            self.observe(seen);
        }
        self.settings = settings;
        self.target = target;
        self.users = users;
        if self.router_lans != router_lans {
            self.router_lans = router_lans;
            self.refresh_router();
        }
        let allows_changed = self.allows != allows;
        self.allows = allows;
        if allows_changed {
            self.refresh_locals();
        }
        self.settings_fault = None;
        // The firewall moves first; an old tunnel is removed only once it is blocked.
        self.reconcile();
        if target_changed {
            self.sync_manager(self.now);
        }
        match &self.apply_error {
            None => Ok(self.status()),
            Some(error) => Err(IpcError::new(
                ErrorKind::Firewall,
                format!(
                    "the firewall could not be changed ({error}); {}",
                    if error.contains("blocking failed too") {
                        "the kill switch is in the state shown"
                    } else {
                        "everything is blocked"
                    }
                ),
            )),
        }
    }

    /// Whether apps-only is in force (config.toml's or the CLI's): `status` says so.
    fn apps_only(&self) -> bool {
        crate::apps_only::in_force(&self.settings, self.options.apps_only)
    }

    /// The settings the policy compiles: apps-only as in force, except while a fault blocks
    /// everything ([`crate::apps_only::policy_settings`]).
    fn policy_settings(&self) -> Settings {
        let faulty = self.config_fault.is_some() || self.settings_fault.is_some();
        crate::apps_only::policy_settings(self.settings, self.options.apps_only, faulty)
    }

    /// The state the inputs call for, and the policy state to compile.
    fn desired(&self) -> (State, PolicyState) {
        if self.target == Target::Off {
            // An explicit `off` is the user's escape hatch, and wins over every fault.
            return (State::Off, PolicyState::Off);
        }
        if self.config_fault.is_some() || self.settings_fault.is_some() {
            return (State::Blocked, PolicyState::Blocked);
        }
        match &self.target {
            Target::Off => (State::Off, PolicyState::Off),
            Target::Disconnected if self.policy_settings().lockdown => {
                (State::Blocked, PolicyState::Disconnected)
            }
            Target::Disconnected => (State::Disconnected, PolicyState::Disconnected),
            Target::Up(spec) => {
                let manager = self.manager.as_ref().filter(|m| m.spec() == spec);
                let (_, config) = manager.map_or((0, spec.server(0)), |m| m.active());
                // The current server only: failover moves the hole, it never widens it.
                let peer = Peer {
                    endpoints: Endpoints::one(config.endpoint()),
                    mark: Some(fwmark_of(config)),
                    uid: None,
                };
                if manager.is_some_and(Manager::is_up) {
                    let tunnel = Tunnel {
                        interface: spec.interface.clone(),
                        addresses: config.addresses.iter().map(|n| n.addr()).collect(),
                        dns: config.dns.clone(),
                    };
                    (State::Connected, PolicyState::Connected { peer, tunnel })
                } else {
                    let probe = manager.and_then(Manager::probe);
                    // The device gets the server's addresses before its handshake, and keeps them
                    // while it retries: keep them off the LAN meanwhile too.
                    let pending = Tunnel {
                        interface: spec.interface.clone(),
                        addresses: config.addresses.iter().map(|n| n.addr()).collect(),
                        dns: config.dns.clone(),
                    };
                    (
                        State::Connecting,
                        PolicyState::Connecting {
                            peer,
                            probe,
                            pending: Some(pending),
                        },
                    )
                }
            }
            Target::Guard(spec) => {
                let peer = peer(spec);
                match self.observed.as_ref().filter(|o| o.carries_traffic()) {
                    Some(observed) => (
                        State::Connected,
                        PolicyState::Connected {
                            peer,
                            tunnel: Tunnel {
                                interface: spec.interface.clone(),
                                addresses: observed.addresses.clone(),
                                dns: spec.dns.clone(),
                            },
                        },
                    ),
                    None => {
                        // An interface that exists with addresses but does not carry traffic
                        // (down, say): its addresses stay off the LAN all the same.
                        let pending = self
                            .observed
                            .as_ref()
                            .filter(|o| !o.addresses.is_empty())
                            .map(|o| Tunnel {
                                interface: spec.interface.clone(),
                                addresses: o.addresses.clone(),
                                dns: spec.dns.clone(),
                            });
                        (
                            State::Connecting,
                            PolicyState::Connecting {
                                peer,
                                probe: None,
                                pending,
                            },
                        )
                    }
                }
            }
        }
    }

    /// Makes the kernel hold the rules for the current inputs: the nftables table (applied only
    /// when it differs from what is installed), then the routing layer (compared with the kernel
    /// every time, so that this also repairs it). Returns whether the status changed.
    pub fn reconcile(&mut self) -> bool {
        let before = self.status();
        let (state, policy) = self.desired();
        let exceptions = self.exceptions();
        let settings = self.policy_settings();
        let ruleset = compile_for(&policy, &settings, &exceptions);
        let enforced = if self.apply_error.is_none() && self.applied.as_ref() == Some(&ruleset) {
            self.state = state;
            policy
        } else {
            // A transient failure (a socket that broke) gets one more try, on a fresh socket,
            // before everything is blocked for it.
            let applied = match self.firewall.apply(&ruleset) {
                Err(error) if error.kind == FailureKind::Transient => {
                    tracing::warn!("applying the firewall failed ({error}); trying again");
                    self.firewall.apply(&ruleset)
                }
                other => other,
            };
            match applied {
                Ok(took) => {
                    self.record_applied(ruleset, took);
                    self.apply_error = None;
                    self.state = state;
                    tracing::info!(%state, "firewall applied in {} us", took.as_micros());
                    policy
                }
                Err(error) => {
                    self.fall_back_to_blocking(state, error.message, &exceptions);
                    PolicyState::Blocked
                }
            }
        };
        self.follow_router_carrier(&enforced, &exceptions);
        // The second layer follows the first: loosened after it, so a loosening is never ahead of
        // the firewall; tightened after it too, which the firewall already covers.
        let layer = compile_routes_for(&enforced, &settings, &exceptions, &self.tunnel_networks());
        self.routing_intent.clone_from(&layer);
        match self.firewall.apply_routes(layer.as_ref()) {
            Ok(repaired) => {
                if let Some(what) = repaired {
                    tracing::warn!(
                        "the routing layer was changed by someone else: {what}; restored"
                    );
                    self.firewall_status.tamper_events += 1;
                    self.firewall_status.last_tamper = Some(format!("routing layer: {what}"));
                }
                self.routing_error = None;
                self.firewall_status.routing = layer.is_some();
            }
            Err(error) => {
                tracing::error!("the routing layer could not be applied: {error}");
                self.routing_error = Some(format!("routing layer: {error}"));
                self.firewall_status.routing = false;
            }
        }
        self.status() != before
    }

    /// The networks of an `up` tunnel's own addresses as its configuration gives them
    /// (`Address = 10.64.0.2/16`): inside the tunnel, routed into it ahead of the LAN.
    fn tunnel_networks(&self) -> Vec<ipnet::IpNet> {
        let Target::Up(spec) = &self.target else {
            return Vec::new();
        };
        let manager = self.manager.as_ref().filter(|m| m.spec() == spec);
        let (_, config) = manager.map_or((0, spec.server(0)), |m| m.active());
        config.addresses.clone()
    }

    fn fall_back_to_blocking(&mut self, wanted: State, error: String, exceptions: &Exceptions) {
        tracing::error!(%wanted, "applying the firewall failed: {error}");
        let before = self.state;
        self.state = State::Blocked;
        let blocking = compile_for(&PolicyState::Blocked, &self.policy_settings(), exceptions);
        match self.firewall.apply(&blocking) {
            Ok(took) => {
                self.record_applied(blocking, took);
                self.apply_error = Some(error);
                tracing::warn!("fell back to blocking everything");
            }
            Err(block_error) => {
                // A rejected batch changes nothing: the rules in force before may still be, and
                // then `status` must say so rather than "not installed".
                let previous = self
                    .applied
                    .take()
                    .filter(|p| p.table.is_some() && self.firewall.verify(p).is_ok());
                let still = if previous.is_some() {
                    // What the kernel enforces is what `status` says.
                    self.state = before;
                    "; the previous rules are still in force"
                } else {
                    self.firewall_status.installed = false;
                    self.firewall_status.blocking = false;
                    ""
                };
                self.applied = previous;
                self.apply_error = Some(format!(
                    "{error}; blocking failed too: {block_error}{still}"
                ));
                tracing::error!("blocking failed too: {block_error}{still}");
            }
        }
    }

    /// Checks that the kernel still holds what we applied, after `committer` changed nf_tables.
    /// If our table was changed or removed, restores it at once and counts the event. Returns
    /// whether the status changed.
    pub fn check_installed(&mut self, committer: &str) -> bool {
        let Some(applied) = self.applied.as_ref() else {
            return false;
        };
        // Only a table we installed is ours to defend; with none (off, unlocked disconnected), a
        // table of that name made by someone else is not our business.
        if applied.table.is_none() {
            return false;
        }
        let difference = match self.firewall.verify(applied) {
            Ok(()) => return false,
            // Reading the table failed, which says nothing about it: look again by applying
            // (which reads it back), without counting a tampering.
            Err(error) if error.kind == FailureKind::Transient => {
                tracing::warn!("reading the table back failed ({error}); applying it again");
                self.applied = None;
                self.reconcile();
                return true;
            }
            Err(error) => error.message,
        };
        tracing::warn!(
            "table inet killswitch was changed by {committer}: {difference}; restoring it"
        );
        self.firewall_status.tamper_events += 1;
        self.firewall_status.last_tamper = Some(format!("{difference} (by {committer})"));
        // Forget what we believed installed, so that reconcile applies even an unchanged ruleset.
        self.applied = None;
        self.reconcile();
        true
    }

    /// What the daemon means the kernel to hold, for `killswitch verify` to compare with it: the
    /// ruleset of the last verified apply (`None` while no apply has been verified, e.g. after
    /// one failed), and the routing layer (`None`: none is meant).
    pub fn intent(
        &self,
    ) -> (
        Option<&Ruleset>,
        Option<&killswitch_policy::routes::RoutingLayer>,
    ) {
        (self.applied.as_ref(), self.routing_intent.as_ref())
    }

    fn record_applied(&mut self, ruleset: Ruleset, took: std::time::Duration) {
        self.firewall_status.flush_protection = self.firewall.flush_protection();
        let installed = ruleset.table.is_some();
        self.firewall_status.installed = installed;
        // A table with an output chain that accepts by default holds only the tunnel-only users'
        // rules (`off`, unlocked `disconnected`): installed, but not blocking the machine.
        self.firewall_status.blocking = ruleset
            .base_chain(killswitch_policy::Hook::Output)
            .and_then(|c| c.base)
            .is_some_and(|b| b.policy == killswitch_policy::ChainPolicy::Drop);
        self.firewall_status.transitions += 1;
        self.firewall_status.last_apply_us =
            Some(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        self.applied = Some(ruleset);
    }
}

fn peer(spec: &GuardSpec) -> Peer {
    Peer {
        endpoints: spec.endpoints.clone(),
        mark: spec.mark,
        uid: spec.uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use killswitch_policy::{Packet, Transport};
    use killswitch_types::AllowEntry;

    /// The defaults, seeing none of this machine's interfaces.
    fn test_options(dir: &std::path::Path) -> CoreOptions {
        CoreOptions {
            look_locals: crate::locals::nothing(),
            look_router: crate::router::nothing(),
            ..CoreOptions::new(dir)
        }
    }
    use crate::firewall::FirewallError;
    use crate::store::Store;
    use killswitch_policy::compile;
    use killswitch_policy::routes::compile_routes;
    use std::time::Duration;

    /// A firewall that records what it was asked to install and can be told to fail.
    #[derive(Debug, Default)]
    struct Recorder {
        applied: Vec<Ruleset>,
        fail_unless_blocking: bool,
        fail_always: bool,
        /// How many applies still fail as if the socket broke.
        transient: u32,
        tampered: bool,
        routes: Option<killswitch_policy::routes::RoutingLayer>,
    }

    impl Firewall for &mut Recorder {
        fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, FirewallError> {
            let blocking = *ruleset == compile(&PolicyState::Blocked, &Settings::default())
                || *ruleset
                    == compile(
                        &PolicyState::Blocked,
                        &Settings {
                            lockdown: false,
                            allow_lan: true,
                            apps_only: false,
                        },
                    );
            if self.transient > 0 {
                self.transient -= 1;
                return Err(FirewallError::new(
                    FailureKind::Transient,
                    "sending the batch to the kernel failed",
                ));
            }
            if self.fail_always || (self.fail_unless_blocking && !blocking) {
                return Err(FirewallError::new(
                    FailureKind::Rejected,
                    "injected failure",
                ));
            }
            self.applied.push(ruleset.clone());
            Ok(Duration::from_micros(100))
        }

        fn verify(&mut self, _: &Ruleset) -> Result<(), FirewallError> {
            if std::mem::take(&mut self.tampered) {
                Err(FirewallError::new(
                    FailureKind::Mismatch,
                    "table inet killswitch is missing",
                ))
            } else {
                Ok(())
            }
        }

        fn apply_routes(
            &mut self,
            layer: Option<&killswitch_policy::routes::RoutingLayer>,
        ) -> Result<Option<String>, FirewallError> {
            self.routes = layer.cloned();
            Ok(None)
        }
    }

    impl<F: Firewall> Core<F> {
        /// Parses and carries out `request`, as the daemon does.
        fn handle_request(&mut self, request: &Request) -> Result<Status, IpcError> {
            let command =
                Command::parse(request, &self.options.wireguard_dir, &self.options.devices)?;
            self.handle(&command)
        }
    }

    fn spec() -> GuardSpec {
        GuardSpec {
            interface: "wg0".parse().expect("literal"),
            endpoints: killswitch_types::Endpoints::one(
                "198.51.100.1:51820".parse().expect("literal"),
            ),
            dns: vec!["10.64.0.1".parse().expect("literal")],
            mark: None,
            uid: None,
        }
    }

    fn up() -> Option<Observed> {
        Some(Observed {
            up: true,
            addresses: vec!["10.64.0.2".parse().expect("literal")],
            identity: Some(crate::links::LinkIdentity {
                kind: Some("wireguard".to_owned()),
                link_type: 65534,
            }),
        })
    }

    #[test]
    fn a_renamed_interface_is_not_trusted_as_the_tunnel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = guarding_a_live_tunnel(&mut fw, dir.path());
        // The tunnel dies; a veth to the LAN router is renamed to its name and brought up.
        core.observe(None);
        let veth = up().map(|o| Observed {
            identity: Some(crate::links::LinkIdentity {
                kind: Some("veth".to_owned()),
                link_type: 1,
            }),
            ..o
        });
        core.observe(veth);
        core.reconcile();
        let status = core.status();
        assert_eq!(
            status.state,
            State::Connecting,
            "not connected through a veth"
        );
        assert!(
            status
                .error
                .is_some_and(|e| e.contains("wg0 is a veth interface")),
            "status says why"
        );
        // The VPN client starts again: a new interface of the tunnel's kind.
        core.observe(up());
        core.reconcile();
        let status = core.status();
        assert_eq!((status.state, status.error), (State::Connected, None));
    }

    #[test]
    fn a_restart_remembers_what_kind_of_device_the_tunnel_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tun = |o: Observed| Observed {
            identity: Some(crate::links::LinkIdentity {
                kind: Some("tun".to_owned()),
                link_type: 65534,
            }),
            ..o
        };
        {
            let mut fw = Recorder::default();
            let mut core = core(&mut fw, dir.path());
            core.handle_request(&Request::Guard(spec())).expect("ok");
            core.observe(up());
            core.reconcile();
            assert_eq!(core.status().state, State::Connected);
        }
        // The daemon restarts after the WireGuard tunnel died; a TUN device now has its name.
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        core.observe(up().map(tun));
        core.reconcile();
        let status = core.status();
        assert_eq!(
            status.state,
            State::Connecting,
            "not trusted after a restart"
        );
        assert!(
            status.error.as_deref().is_some_and(|e| e.contains(
                "wg0 is now a TUN interface, but the guarded tunnel was a wireguard interface"
            )),
            "{:?}",
            status.error
        );
        // Unrelated changes keep the memory; guarding again (the user says this is the tunnel)
        // forgets it.
        core.handle_request(&Request::AllowLan { enabled: true })
            .expect("ok");
        let mut fw2 = Recorder::default();
        let mut again = self::core(&mut fw2, dir.path());
        again.observe(up().map(tun));
        again.reconcile();
        assert_eq!(again.status().state, State::Connecting);
        assert_eq!(
            again
                .handle_request(&Request::Guard(spec()))
                .map(|s| (s.state, s.error)),
            Ok((State::Connected, None)),
            "guarding it again trusts it, as the error says"
        );
        drop(again);
        let mut fw3 = Recorder::default();
        let mut third = self::core(&mut fw3, dir.path());
        third.observe(up().map(tun));
        third.reconcile();
        assert_eq!(third.status().state, State::Connected, "and remembers that");
    }

    #[test]
    fn a_newer_daemons_settings_block_and_are_left_as_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("settings.json");
        let newer =
            r#"{"version":2,"lockdown":false,"allow_lan":true,"target":{"mode":"off"},"new":1}"#;
        std::fs::write(&file, newer).expect("write");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        let status = core.status();
        assert_eq!((status.state, status.lockdown), (State::Blocked, true));
        assert!(
            status
                .error
                .is_some_and(|e| e.contains("newer killswitchd")),
            "status says why"
        );
        assert_eq!(std::fs::read_to_string(&file).ok().as_deref(), Some(newer));
        assert!(!dir.path().join("settings.json.corrupt").exists());
        // The user's decision replaces it.
        assert_eq!(
            core.handle_request(&Request::Off).map(|s| s.state),
            Ok(State::Off)
        );
        assert!(matches!(core.store.load(), Loaded::Found(_)));
    }

    #[test]
    fn status_says_why_up_is_not_connecting() {
        const CONF: &str = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
            Address = 10.64.0.2/32\nDNS = 10.64.0.1\n[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
            Endpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let options = CoreOptions {
            factory: Box::new(|_| {
                Err(killswitch_tunnel::TunnelError::Backend(
                    "no /dev/net/tun".into(),
                ))
            }),
            ..test_options(dir.path())
        };
        let mut core = core_with(&mut fw, dir.path(), options);
        let configs = vec![killswitch_types::ipc::ConfigSource {
            source: "/etc/wireguard/wg0.conf".to_owned(),
            text: Some(CONF.to_owned()),
        }];
        core.handle_request(&Request::Up {
            interface: None,
            configs,
        })
        .expect("ok");
        core.tick(Instant::now());
        let status = core.status();
        assert_eq!(status.state, State::Connecting);
        assert!(
            status
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no /dev/net/tun")),
            "{:?}",
            status.error
        );
        // And the server's own entry says what kind of failure it was, for scripts.
        let failures = status
            .tunnel
            .and_then(|t| t.managed)
            .map(|m| m.failures)
            .unwrap_or_default();
        assert_eq!(
            failures
                .iter()
                .map(|f| (f.server, f.cause))
                .collect::<Vec<_>>(),
            vec![(0, killswitch_types::FailureCause::DeviceCreation)],
            "{failures:?}"
        );
    }

    /// A core as `Core::new` leaves it: nothing applied yet.
    /// A core guarding a tunnel that is up: connected.
    fn guarding_a_live_tunnel<'a>(
        fw: &'a mut Recorder,
        dir: &std::path::Path,
    ) -> Core<&'a mut Recorder> {
        let mut core = core(fw, dir);
        core.handle_request(&Request::Guard(spec())).expect("ok");
        core.observe(up());
        core.reconcile();
        assert_eq!(core.status().state, State::Connected);
        core
    }

    fn unreconciled<'a>(fw: &'a mut Recorder, dir: &std::path::Path) -> Core<&'a mut Recorder> {
        Core::new(fw, Store::new(dir), None, test_options(dir), Instant::now())
    }

    /// A core with `options`, its rules applied.
    fn core_with<'a>(
        fw: &'a mut Recorder,
        dir: &std::path::Path,
        options: CoreOptions,
    ) -> Core<&'a mut Recorder> {
        let mut core = Core::new(fw, Store::new(dir), None, options, Instant::now());
        core.reconcile();
        core
    }

    /// A core started on a configuration file it could not use, its rules applied.
    fn with_a_bad_config<'a>(
        fw: &'a mut Recorder,
        dir: &std::path::Path,
    ) -> Core<&'a mut Recorder> {
        let mut core = Core::new(
            fw,
            Store::new(dir),
            Some("bad config".to_owned()),
            test_options(dir),
            Instant::now(),
        );
        core.reconcile();
        core
    }

    fn core<'a>(fw: &'a mut Recorder, dir: &std::path::Path) -> Core<&'a mut Recorder> {
        let mut core = unreconciled(fw, dir);
        core.reconcile();
        core
    }

    #[test]
    fn allows_added_by_the_cli_apply_persist_and_refuse_what_they_must() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let options = CoreOptions {
            allows: killswitch_types::Allows {
                inbound: vec!["tcp/22 on eth0".parse().expect("literal")],
                ..Default::default()
            },
            ..test_options(dir.path())
        };
        let mut core = core_with(&mut fw, dir.path(), options);
        let allow = |add, entry: &str| {
            let (kind, value) = entry.split_once(' ').expect("literal");
            let entry = match kind {
                "interface" => AllowEntry::Interface(value.parse().expect("literal")),
                "subnet" => AllowEntry::Subnet(value.parse().expect("literal")),
                _ => AllowEntry::Inbound(value.parse().expect("literal")),
            };
            Request::Allow { add, entry }
        };
        core.handle_request(&Request::Lockdown { enabled: true })
            .expect("lockdown");
        let status = core
            .handle_request(&allow(true, "interface tailscale0"))
            .expect("added");
        assert_eq!(status.exceptions.interfaces, ["tailscale0"]);
        assert_eq!(
            status.exceptions.inbound,
            ["tcp/22 on eth0"],
            "config's too"
        );
        let installed = core.applied.clone().expect("blocked has rules");
        let out = Packet::output(
            "tailscale0",
            "100.64.0.2".parse().expect("literal"),
            "100.64.0.1".parse().expect("literal"),
            Transport::udp(4000, 4000),
        );
        assert!(
            installed.verdict(&out).is_accept(),
            "the rules follow at once"
        );
        // Refusals change nothing and say why.
        for (request, says) in [
            (allow(true, "subnet 198.51.100.0/24 on eth0"), "public"),
            (allow(false, "inbound tcp/22 on eth0"), "config.toml"),
            (allow(false, "interface zt0"), "not allowed"),
        ] {
            let err = core.handle_request(&request).expect_err("refused");
            assert!(
                err.message.contains(says) && err.message.contains("nothing was changed"),
                "{}",
                err.message
            );
        }
        assert_eq!(core.status().exceptions.subnets, Vec::<String>::new());
        // Adding what config.toml allows changes nothing, and keeps no copy that would outlive
        // the file's entry.
        let status = core
            .handle_request(&allow(true, "inbound tcp/22 on eth0"))
            .expect("already allowed");
        assert_eq!(status.exceptions.inbound, ["tcp/22 on eth0"]);
        assert!(core.allows.inbound.is_empty());
        drop(core);
        // A restart keeps what the CLI added.
        let mut fw2 = Recorder::default();
        let mut again = self::core(&mut fw2, dir.path());
        assert_eq!(again.status().exceptions.interfaces, ["tailscale0"]);
        let status = again
            .handle_request(&allow(false, "interface tailscale0"))
            .expect("removed");
        assert!(status.exceptions.interfaces.is_empty());
    }

    #[test]
    fn exec_scopes_are_confined_in_every_state_and_an_older_list_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        let scope = killswitch_types::exec::ExecScopeStatus {
            id: 0,
            uid: 1000,
            user: None,
            program: "curl".to_owned(),
            pid: 42,
            interface: "ksx0".parse().expect("literal"),
            subnet: "198.18.0.0/30".parse().expect("literal"),
        };
        let forwarded = Packet::forward(
            "ksx0",
            "eth0",
            "198.18.0.2".parse().expect("literal"),
            "198.51.100.1".parse().expect("literal"),
            Transport::udp(4000, 4000),
        );
        let other = Packet::forward(
            "eth1",
            "eth0",
            "192.0.2.7".parse().expect("literal"),
            "198.51.100.1".parse().expect("literal"),
            Transport::udp(4000, 4000),
        );
        for request in [Request::Off, Request::Down] {
            core.handle_request(&request).expect("state");
            let status = core
                .handle(&Command::ExecScopes {
                    generation: 1,
                    scopes: vec![scope.clone()],
                })
                .expect("in force");
            assert_eq!(status.exec, std::slice::from_ref(&scope));
            let installed = core.applied.clone().expect("a table for the namespace");
            assert!(!installed.verdict(&forwarded).is_accept(), "{request:?}");
            assert!(
                installed.verdict(&other).is_accept(),
                "the machine stays free"
            );
            // A list taken before (a slower task's) does not undo a newer one.
            let status = core
                .handle(&Command::ExecScopes {
                    generation: 0,
                    scopes: Vec::new(),
                })
                .expect("ignored");
            assert_eq!(status.exec.len(), 1);
            let status = core
                .handle(&Command::ExecScopes {
                    generation: 2,
                    scopes: Vec::new(),
                })
                .expect("removed");
            assert!(status.exec.is_empty());
            assert!(core.applied.as_ref().is_none_or(|r| r.table.is_none()));
            core.exec_generation = 0;
        }
    }

    #[test]
    fn tunnel_only_users_are_confined_in_every_state_persisted_and_refused_clearly() {
        use killswitch_types::ipc::UserSource;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let options = CoreOptions {
            tunnel_only_users: crate::users::resolve_all(&[
                "1001".to_owned(),
                "no-such-user-ks15".to_owned(),
            ]),
            ..test_options(dir.path())
        };
        let mut core = core_with(&mut fw, dir.path(), options);
        let users = |add, user: &str| Request::Users {
            add,
            user: user.to_owned(),
        };
        // Disconnected, no lockdown: the machine is free, config.toml's user is not, and the
        // entry that names nobody is refused in status while the other applies.
        let status = core.handle_request(&Request::Down).expect("down");
        assert_eq!(status.state, State::Disconnected);
        assert_eq!(status.tunnel_only_users.len(), 1);
        assert_eq!(status.tunnel_only_users[0].uid, 1001);
        assert_eq!(status.tunnel_only_users[0].source, UserSource::Config);
        assert!(
            status
                .exceptions
                .refused
                .iter()
                .any(|r| r.contains("no-such-user-ks15")),
            "{:?}",
            status.exceptions.refused
        );
        assert!(status.firewall.installed && !status.firewall.blocking);
        let out = |uid| Packet {
            uid: Some(uid),
            ..Packet::output(
                "eth0",
                "192.0.2.2".parse().expect("literal"),
                "198.51.100.1".parse().expect("literal"),
                Transport::udp(4000, 4000),
            )
        };
        let installed = core.applied.clone().expect("a table for the users");
        assert!(!installed.verdict(&out(1001)).is_accept());
        assert!(installed.verdict(&out(1000)).is_accept(), "others are free");
        // Added with the CLI: at once, and across a restart.
        let status = core.handle_request(&users(true, "nobody")).expect("added");
        let nobody = crate::users::resolve("nobody").expect("nobody").uid;
        assert!(
            status
                .tunnel_only_users
                .iter()
                .any(|u| u.uid == nobody && u.source == UserSource::Cli)
        );
        let installed = core.applied.clone().expect("a table");
        assert!(!installed.verdict(&out(nobody)).is_accept());
        // `off` keeps them confined.
        let status = core.handle_request(&Request::Off).expect("off");
        assert_eq!(status.state, State::Off);
        let installed = core.applied.clone().expect("still a table for the users");
        assert!(!installed.verdict(&out(nobody)).is_accept());
        assert!(installed.verdict(&out(1000)).is_accept());
        // Refusals change nothing and say why.
        for (request, says) in [
            (users(true, "no-such-user-ks15"), "no such user"),
            (users(true, "root"), "root cannot"),
            (users(false, "1001"), "config.toml"),
            (users(false, "daemon"), "not a tunnel-only user"),
        ] {
            let err = core.handle_request(&request).expect_err("refused");
            assert!(
                err.message.contains(says) && err.message.contains("nothing was changed"),
                "{}",
                err.message
            );
        }
        assert_eq!(core.status().tunnel_only_users.len(), 2);
        drop(core);
        let mut fw2 = Recorder::default();
        let mut again = self::core(&mut fw2, dir.path());
        assert!(
            again
                .status()
                .tunnel_only_users
                .iter()
                .any(|u| u.uid == nobody)
        );
        let status = again
            .handle_request(&users(false, "nobody"))
            .expect("removed");
        assert!(
            status.tunnel_only_users.is_empty(),
            "this core has no config.toml users"
        );
        assert!(
            again.applied.as_ref().is_none_or(|r| r.table.is_none()),
            "off without users: no table"
        );
    }

    #[test]
    fn a_reload_confines_and_releases_config_tunnel_only_users_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = self::core(&mut fw, dir.path());
        core.handle_request(&Request::Down).expect("down");
        assert!(core.applied.as_ref().is_none_or(|r| r.table.is_none()));
        let reconfigured = |users: &[&str]| Reconfigured {
            lan: killswitch_policy::Lan::default(),
            allows: killswitch_types::Allows::default(),
            detect_local_bridges: true,
            health_bound: Duration::from_secs(3),
            wireguard_dir: "/etc/wireguard".into(),
            tunnel_only_users: crate::users::resolve_all(
                &users.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>(),
            ),

            apps_only: false,

            router_lans: Vec::new(),
        };
        let now = Instant::now();
        core.on(
            Input::Reloaded(Ok(Box::new(reconfigured(&["1001", "ghost-ks15"])))),
            now,
        );
        let status = core.status();
        assert_eq!(status.tunnel_only_users.len(), 1);
        assert!(
            status
                .exceptions
                .refused
                .iter()
                .any(|r| r.contains("ghost-ks15"))
        );
        let out = Packet {
            uid: Some(1001),
            ..Packet::output(
                "eth0",
                "192.0.2.2".parse().expect("literal"),
                "198.51.100.1".parse().expect("literal"),
                Transport::tcp(40000, 443),
            )
        };
        let installed = core.applied.clone().expect("the users' table");
        assert!(!installed.verdict(&out).is_accept());
        core.on(Input::Reloaded(Ok(Box::new(reconfigured(&[])))), now);
        assert!(core.status().tunnel_only_users.is_empty());
        assert!(
            core.applied.as_ref().is_none_or(|r| r.table.is_none()),
            "released"
        );
    }

    /// `exec --bypass`: the rules follow the bypass cgroup's id (joined, re-created with a new
    /// id, ended), in `blocked`; the request itself cannot reach the core without the executor.
    #[test]
    fn the_rules_follow_the_bypass_cgroup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = self::core(&mut fw, dir.path());
        core.handle_request(&Request::Lockdown { enabled: true })
            .expect("lockdown");
        let view = |id| crate::bypass::BypassView {
            scope: killswitch_policy::BypassScope { level: 3, id },
            path: "/sys/fs/cgroup/killswitch/net-1/bypass".into(),
            name: "/killswitch/net-1/bypass".to_owned(),
            processes: 1,
        };
        let bypassed = |id| {
            Packet::output(
                "eth0",
                "192.0.2.2".parse().expect("literal"),
                "198.51.100.9".parse().expect("literal"),
                Transport::udp(40000, 9),
            )
            .with_cgroups(vec![5, 6, id])
        };
        let accepted = |core: &Core<&mut Recorder>, id| {
            core.applied
                .as_ref()
                .is_some_and(|r| r.verdict(&bypassed(id)).is_accept())
        };
        let routed = |core: &Core<&mut Recorder>| {
            core.routing_intent.as_ref().is_some_and(|l| {
                l.rules.iter().any(|r| {
                    r.selector
                        == killswitch_policy::routes::Selector::FwMark(
                            killswitch_policy::BYPASS_MARK,
                        )
                })
            })
        };
        assert!(!accepted(&core, 40) && !routed(&core));
        assert!(
            Command::parse(
                &Request::Bypass,
                std::path::Path::new("/etc/wireguard"),
                &core.options.devices
            )
            .is_err(),
            "only the executor makes a bypass command"
        );
        let status = core.handle(&Command::Bypass(view(40))).expect("joined");
        assert_eq!(status.state, State::Blocked);
        assert_eq!(status.bypass.as_ref().map(|b| b.id), Some(40));
        assert!(accepted(&core, 40) && routed(&core));
        let now = Instant::now();
        // Re-created: the new id only.
        core.on(Input::Bypass(Some(view(41))), now);
        assert!(accepted(&core, 41) && !accepted(&core, 40));
        // Ended: nothing of it.
        core.on(Input::Bypass(None), now);
        assert!(!accepted(&core, 41) && !routed(&core));
        assert_eq!(core.status().bypass, None);
        assert_eq!(core.status().state, State::Blocked);
    }

    #[test]
    fn fresh_start_is_disconnected_without_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let core = core(&mut fw, dir.path());
        let status = core.status();
        assert_eq!(status.state, State::Disconnected);
        assert!(!status.firewall.installed && status.error.is_none());
        drop(core);
        assert_eq!(fw.applied, vec![Ruleset { table: None }]);
    }

    #[test]
    fn guard_connects_when_the_tunnel_comes_up_and_falls_back_when_it_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        assert_eq!(
            core.handle_request(&Request::Guard(spec()))
                .map(|s| s.state),
            Ok(State::Connecting)
        );
        core.observe(up());
        assert!(core.reconcile());
        assert_eq!(core.status().state, State::Connected);
        assert!(core.status().tunnel.is_some_and(|t| t.up));
        core.observe(None);
        core.reconcile();
        assert_eq!(core.status().state, State::Connecting);
        let transitions = core.status().firewall.transitions;
        assert!(!core.reconcile(), "nothing changed, nothing applied");
        assert_eq!(core.status().firewall.transitions, transitions);
    }

    #[test]
    fn lockdown_blocks_while_disconnected_and_off_removes_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        let status = core
            .handle_request(&Request::Lockdown { enabled: true })
            .expect("ok");
        assert_eq!(
            (status.state, status.lockdown, status.firewall.blocking),
            (State::Blocked, true, true)
        );
        assert_eq!(
            core.handle_request(&Request::Down).map(|s| s.state),
            Ok(State::Blocked)
        );
        let status = core.handle_request(&Request::Off).expect("ok");
        assert_eq!(
            (status.state, status.firewall.installed),
            (State::Off, false)
        );
    }

    #[test]
    fn settings_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        {
            let mut core = core(&mut fw, dir.path());
            core.handle_request(&Request::AllowLan { enabled: true })
                .expect("ok");
            core.handle_request(&Request::Guard(spec())).expect("ok");
        }
        let mut fw = Recorder::default();
        let core = core(&mut fw, dir.path());
        let status = core.status();
        assert!(status.allow_lan);
        assert_eq!(status.state, State::Connecting);
        assert_eq!(
            status.tunnel.map(|t| t.interface.to_string()),
            Some("wg0".to_owned())
        );
    }

    #[test]
    fn a_failed_apply_falls_back_to_blocking_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder {
            fail_unless_blocking: true,
            ..Recorder::default()
        };
        let mut core = unreconciled(&mut fw, dir.path());
        let error = core
            .handle_request(&Request::Guard(spec()))
            .expect_err("apply fails");
        assert_eq!(error.kind, ErrorKind::Firewall);
        assert!(
            error.message.contains("everything is blocked"),
            "{}",
            error.message
        );
        let status = core.status();
        assert_eq!(status.state, State::Blocked);
        assert!(status.firewall.blocking && status.error.is_some_and(|e| e.contains("injected")));
        assert!(core.needs_retry());
    }

    #[test]
    fn when_blocking_fails_too_status_says_blocking_is_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder {
            fail_always: true,
            ..Recorder::default()
        };
        let mut core = unreconciled(&mut fw, dir.path());
        let error = core
            .handle_request(&Request::Lockdown { enabled: true })
            .expect_err("apply fails");
        assert!(
            error.message.contains("blocking failed too"),
            "{}",
            error.message
        );
        let status = core.status();
        assert_eq!(status.state, State::Blocked);
        assert!(!status.firewall.blocking);
    }

    #[test]
    fn when_every_apply_is_refused_status_shows_the_rules_still_in_force() {
        // The second red team: another program squatting an owned `arp killswitch` made every
        // batch fail; status said "NOT installed" while the previous (owned) table stood.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = guarding_a_live_tunnel(&mut fw, dir.path());
        core.firewall.fail_always = true;
        let error = core
            .handle_request(&Request::AllowLan { enabled: true })
            .expect_err("refused");
        assert!(
            error.message.contains("still in force"),
            "{}",
            error.message
        );
        let status = core.status();
        assert_eq!(
            (status.state, status.firewall.installed),
            (State::Connected, true),
            "what the kernel holds: {status:?}"
        );
    }

    #[test]
    fn a_corrupt_settings_file_blocks_until_the_user_decides() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("settings.json"), b"garbage").expect("write");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        let status = core.status();
        assert_eq!(status.state, State::Blocked);
        assert!(status.firewall.blocking && status.error.is_some_and(|e| e.contains("not valid")));
        assert!(
            status.lockdown,
            "status shows why it blocks: lockdown is assumed on"
        );
        // A command clears the fault, but the assumed lockdown stays until the user says
        // otherwise: `allow-lan` or `down` alone must not unblock (nor write a file that would
        // unblock at the next boot).
        let status = core.handle_request(&Request::Down).expect("ok");
        assert_eq!((status.state, status.error), (State::Blocked, None));
        assert!(matches!(
            crate::boot::decide(&Store::new(dir.path()).load()).0,
            crate::boot::Decision::Block(_)
        ));
        let status = core
            .handle_request(&Request::Lockdown { enabled: false })
            .expect("ok");
        assert_eq!(status.state, State::Disconnected);
    }

    #[test]
    fn a_transient_failure_is_tried_again_at_once_and_blocks_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        core.firewall.transient = 1;
        let status = core
            .handle_request(&Request::Guard(spec()))
            .expect("applied on the second try");
        assert_eq!((status.state, status.error), (State::Connecting, None));
        // Two in a row: blocked, and the error says why.
        core.firewall.transient = 2;
        let refused = core.handle_request(&Request::Down);
        assert!(refused.is_err_and(|e| e.message.contains("sending the batch")));
        assert_eq!(core.status().state, State::Blocked);
    }

    #[test]
    fn guard_refuses_the_uid_that_is_no_uid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        let before = core.status();
        let error = core
            .handle_request(&Request::Guard(GuardSpec {
                uid: Some(u32::MAX),
                ..spec()
            }))
            .expect_err("(uid_t)-1 is refused");
        assert!(error.message.contains("4294967295"), "{}", error.message);
        assert_eq!(core.status(), before, "nothing changed");
    }

    #[test]
    fn lockdown_on_after_off_blocks() {
        // The red team's sequence: it printed `state: off`, `lockdown: on`, and installed nothing.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        for request in [
            Request::Lockdown { enabled: true },
            Request::Lockdown { enabled: false },
            Request::Off,
        ] {
            core.handle_request(&request).expect("ok");
        }
        let status = core
            .handle_request(&Request::Lockdown { enabled: true })
            .expect("ok");
        assert_eq!(
            (status.state, status.lockdown, status.firewall.blocking),
            (State::Blocked, true, true)
        );
        // And after a reboot: the early-boot step blocks from the saved settings.
        assert!(matches!(
            crate::boot::decide(&Store::new(dir.path()).load()).0,
            crate::boot::Decision::Block(_)
        ));
    }

    #[test]
    fn off_switches_lockdown_off_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        core.handle_request(&Request::Lockdown { enabled: true })
            .expect("ok");
        let status = core.handle_request(&Request::Off).expect("ok");
        assert_eq!((status.state, status.lockdown), (State::Off, false));
    }

    #[test]
    fn an_old_file_with_off_and_lockdown_loads_as_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("settings.json"),
            br#"{"version":1,"lockdown":true,"allow_lan":false,"target":{"mode":"off"}}"#,
        )
        .expect("write");
        let mut fw = Recorder::default();
        let core = core(&mut fw, dir.path());
        let status = core.status();
        assert_eq!((status.state, status.lockdown), (State::Off, false));
    }

    /// The audit of the defects issue's first item, as a table: every command in every state. After
    /// each, what `status` says must be what the (recorded) kernel holds, lockdown must be
    /// enforced whenever status shows it, and what a restart or a reboot resumes must be what
    /// is enforced now.
    #[test]
    fn every_command_in_every_state_enforces_what_status_says() {
        let states: [(&str, &[Request]); 6] = [
            ("fresh", &[]),
            ("off", &[Request::Off]),
            ("lockdown", &[Request::Lockdown { enabled: true }]),
            (
                "off after lockdown",
                &[Request::Lockdown { enabled: true }, Request::Off],
            ),
            ("guarding", &[Request::Guard(spec())]),
            (
                "guarding, lan, lockdown",
                &[
                    Request::AllowLan { enabled: true },
                    Request::Guard(spec()),
                    Request::Lockdown { enabled: true },
                ],
            ),
        ];
        let commands = [
            Request::Guard(spec()),
            Request::Down,
            Request::Off,
            Request::Lockdown { enabled: true },
            Request::Lockdown { enabled: false },
            Request::AllowLan { enabled: true },
            Request::AllowLan { enabled: false },
        ];
        for (name, setup) in states {
            for tunnel_up in [false, true] {
                for command in &commands {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let mut fw = Recorder::default();
                    let mut daemon = core(&mut fw, dir.path());
                    for request in setup {
                        daemon.handle_request(request).expect("setup");
                    }
                    daemon.observe(if tunnel_up { up() } else { None });
                    daemon.reconcile();
                    daemon.handle_request(command).expect("command");
                    // As the event loop does after every command: look at the (new) interface.
                    daemon.observe(if tunnel_up { up() } else { None });
                    daemon.reconcile();
                    let status = daemon.status();
                    let case = format!(
                        "{name}, tunnel {}, then {command:?}: {status:?}",
                        if tunnel_up { "up" } else { "down" }
                    );
                    let table = daemon
                        .firewall
                        .applied
                        .last()
                        .is_some_and(|r| r.table.is_some());
                    assert_eq!(status.firewall.installed, table, "{case}");
                    let protected = matches!(
                        status.state,
                        State::Blocked | State::Connecting | State::Connected
                    );
                    assert_eq!(protected, table, "{case}");
                    if status.lockdown {
                        assert!(protected, "lockdown shown but not enforced: {case}");
                    }
                    assert_eq!(
                        status.state == State::Off,
                        matches!(command, Request::Off)
                            || (name.starts_with("off") && !changes_target(command)),
                        "{case}"
                    );
                    // What a reboot resumes (the early-boot step) and what a restarted daemon
                    // resumes are what is enforced now.
                    let boot = crate::boot::decide(&Store::new(dir.path()).load()).0;
                    assert_eq!(
                        matches!(boot, crate::boot::Decision::Block(_)),
                        protected,
                        "early boot disagrees: {case}"
                    );
                    drop(daemon);
                    let mut fw = Recorder::default();
                    let mut restarted = core(&mut fw, dir.path());
                    restarted.observe(if tunnel_up { up() } else { None });
                    restarted.reconcile();
                    assert_eq!(restarted.status().state, status.state, "restart: {case}");
                    assert_eq!(restarted.status().lockdown, status.lockdown, "{case}");
                }
            }
        }
    }

    /// Whether a command leaves `off` (lockdown on does: see `lockdown_on_after_off_blocks`).
    fn changes_target(request: &Request) -> bool {
        matches!(
            request,
            Request::Guard(_) | Request::Down | Request::Lockdown { enabled: true }
        )
    }

    #[test]
    fn a_good_reload_lifts_a_config_fault_and_a_bad_one_keeps_what_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = with_a_bad_config(&mut fw, dir.path());
        assert_eq!(core.status().state, State::Blocked);
        let now = Instant::now();
        core.on(Input::Reloaded(Err("line 1: nonsense".to_owned())), now);
        let status = core.status();
        assert_eq!(status.state, State::Blocked, "still the fault");
        let good = Reconfigured {
            lan: killswitch_policy::Lan::default(),
            allows: killswitch_types::Allows {
                inbound: vec!["tcp/22 on eth0".parse().expect("literal")],
                ..Default::default()
            },
            detect_local_bridges: true,
            health_bound: Duration::from_secs(5),
            wireguard_dir: "/etc/wireguard".into(),
            tunnel_only_users: Vec::new(),
            apps_only: false,
            router_lans: Vec::new(),
        };
        core.on(Input::Reloaded(Ok(Box::new(good))), now);
        let status = core.status();
        assert_eq!(status.state, State::Disconnected, "{status:?}");
        assert_eq!(status.error, None, "the refusal is forgotten too");
        assert_eq!(status.exceptions.inbound, ["tcp/22 on eth0"]);
        core.handle_request(&Request::Lockdown { enabled: true })
            .expect("lockdown");
        // A bad reload now: refused, said so, the running allows stay in the rules.
        core.on(Input::Reloaded(Err("line 2: nonsense".to_owned())), now);
        let status = core.status();
        assert!(
            status
                .error
                .as_deref()
                .is_some_and(|e| e.contains("not reloaded")),
            "{status:?}"
        );
        assert_eq!(status.exceptions.inbound, ["tcp/22 on eth0"]);
        assert_eq!(status.state, State::Blocked);
    }

    #[test]
    fn a_config_fault_blocks_everything_but_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = with_a_bad_config(&mut fw, dir.path());
        assert_eq!(core.status().state, State::Blocked);
        assert_eq!(
            core.handle_request(&Request::Guard(spec()))
                .map(|s| s.state),
            Ok(State::Blocked)
        );
        assert_eq!(
            core.handle_request(&Request::Off).map(|s| s.state),
            Ok(State::Off)
        );
    }

    #[test]
    fn a_tampered_table_is_restored_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = unreconciled(&mut fw, dir.path());
        core.handle_request(&Request::Lockdown { enabled: true })
            .expect("ok");
        assert!(
            !core.check_installed("nft[1]"),
            "an intact table needs nothing"
        );
        core.firewall.tampered = true;
        let applies = core.firewall.applied.len();
        assert!(core.check_installed("nft[1]"));
        assert_eq!(
            core.firewall.applied.len(),
            applies + 1,
            "the same ruleset was applied again"
        );
        let status = core.status();
        assert_eq!(status.firewall.tamper_events, 1);
        assert_eq!(
            status.firewall.last_tamper.as_deref(),
            Some("table inet killswitch is missing (by nft[1])")
        );
        assert_eq!(status.state, State::Blocked);
    }

    #[test]
    fn the_routing_layer_follows_the_enforced_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        assert_eq!(core.firewall.routes, None, "disconnected: no layer");
        core.handle_request(&Request::Guard(spec())).expect("ok");
        let connecting = core
            .firewall
            .routes
            .clone()
            .expect("a layer while guarding");
        assert!(
            !connecting
                .routes
                .iter()
                .any(|r| matches!(r, killswitch_policy::routes::TableRoute::Tunnel(..)))
        );
        core.observe(up());
        core.reconcile();
        let connected = core.firewall.routes.clone().expect("a layer");
        assert!(
            connected
                .routes
                .iter()
                .any(|r| matches!(r, killswitch_policy::routes::TableRoute::Tunnel(..)))
        );
        assert!(core.status().firewall.routing);
        core.handle_request(&Request::Off).expect("ok");
        assert_eq!(core.firewall.routes, None, "off removes the layer");
    }

    #[test]
    fn a_failed_apply_blocks_at_the_routing_layer_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder {
            fail_unless_blocking: true,
            ..Recorder::default()
        };
        let mut core = unreconciled(&mut fw, dir.path());
        let _ = core.handle_request(&Request::Guard(spec()));
        let layer = core.firewall.routes.clone().expect("a layer");
        assert_eq!(
            layer,
            compile_routes(&PolicyState::Blocked, &Settings::default()).expect("blocked layer")
        );
    }

    #[test]
    fn without_a_table_there_is_nothing_to_defend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        core.firewall.tampered = true;
        assert!(!core.check_installed("nft[1]"));
        assert_eq!(core.status().firewall.tamper_events, 0);
    }

    #[test]
    fn unsaveable_settings_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").expect("write");
        let mut fw = Recorder::default();
        // The state dir is a regular file: saving must fail.
        let mut core = core(&mut fw, &blocker);
        let before = core.status();
        let error = core
            .handle_request(&Request::Lockdown { enabled: false })
            .expect_err("cannot save");
        assert_eq!(error.kind, ErrorKind::Storage);
        assert_eq!(core.status(), before);
    }

    /// The state machine and its tunnel manager read no clock and touch no file or socket of
    /// their own: time comes with their inputs, and the outside world through their backends
    /// and effects. That is what makes the simulation deterministic from its seed.
    #[test]
    fn the_core_reads_no_clock_and_does_no_io_of_its_own() {
        for (name, source) in [
            ("core.rs", include_str!("core.rs")),
            ("manager.rs", include_str!("manager.rs")),
        ] {
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            for forbidden in [
                concat!("Instant", "::now("),
                concat!("SystemTime", "::now("),
                concat!("std::", "fs"),
                concat!("std::net::", "UdpSocket"),
                concat!("nix", "::"),
                concat!("libc", "::"),
                concat!("links::", "observe"),
            ] {
                assert!(
                    !code.contains(forbidden),
                    "{name} uses {forbidden} outside its tests"
                );
            }
        }
    }

    #[test]
    fn other_events_do_not_postpone_a_retry() {
        let t0 = Instant::now();
        let mut retry = RetryTimer::default();
        retry.follow(true, t0);
        assert_eq!(retry.due(), Some(t0 + RETRY_MIN));
        // The manager's ticks every 50 ms, link events, commands: each pass of the loop follows
        // the state again, and the deadline stays where it was.
        for n in 1..100 {
            retry.follow(true, t0 + Duration::from_millis(50 * n));
        }
        assert_eq!(retry.due(), Some(t0 + RETRY_MIN));
    }

    #[test]
    fn retries_back_off_while_failing_and_reset_on_success() {
        let t0 = Instant::now();
        let mut retry = RetryTimer::default();
        retry.follow(true, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let due = retry.due().expect("armed");
            delays.push(due - now);
            now = due;
            retry.fired(true, now);
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        retry.fired(false, now);
        assert_eq!(retry.due(), None);
        retry.follow(true, now);
        assert_eq!(
            retry.due(),
            Some(now + RETRY_MIN),
            "a new failure starts over"
        );
        retry.follow(false, now);
        assert_eq!(retry, RetryTimer::default());
    }

    /// A packet this machine sends by `oif` to a public address, from `uid`.
    fn sent(oif: &str, uid: Option<u32>) -> Packet {
        Packet {
            uid,
            ..Packet::output(
                oif,
                "192.0.2.2".parse().expect("literal"),
                "203.0.113.10".parse().expect("literal"),
                Transport::tcp(40000, 443),
            )
        }
    }

    /// Whether the kernel (as recorded) accepts `p`: with no table installed, everything.
    fn kernel_accepts(core: &Core<&mut Recorder>, p: &Packet) -> bool {
        core.applied
            .as_ref()
            .is_none_or(|r| r.verdict(p).is_accept())
    }

    #[test]
    fn apps_only_confines_only_the_scopes_in_every_state_and_is_persisted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let options = CoreOptions {
            tunnel_only_users: crate::users::resolve_all(&["1001".to_owned()]),
            ..test_options(dir.path())
        };
        let mut core = core_with(&mut fw, dir.path(), options);
        let status = core
            .handle_request(&Request::AppsOnly { enabled: true })
            .expect("apps-only on");
        assert!(status.apps_only);
        assert_eq!(status.state, State::Disconnected);
        assert!(status.firewall.installed && !status.firewall.blocking);
        // Guarding a tunnel: connecting, then connected; the machine is free in both, the user
        // leaves by the tunnel only, and only once it carries traffic.
        core.handle_request(&Request::Guard(spec())).expect("guard");
        assert_eq!(core.status().state, State::Connecting);
        assert!(kernel_accepts(&core, &sent("eth0", Some(1000))));
        assert!(kernel_accepts(&core, &sent("eth0", None)));
        assert!(!kernel_accepts(&core, &sent("eth0", Some(1001))));
        assert!(!kernel_accepts(&core, &sent("wg0", Some(1001))));
        core.observe(up());
        core.reconcile();
        let status = core.status();
        assert_eq!(status.state, State::Connected);
        assert!(status.firewall.installed && !status.firewall.blocking);
        assert!(kernel_accepts(&core, &sent("eth0", Some(1000))));
        assert!(!kernel_accepts(&core, &sent("eth0", Some(1001))));
        assert!(kernel_accepts(&core, &sent("wg0", Some(1001))));
        // The routing layer takes the user (and the tunnel's resolver) into the tunnel, nothing
        // else: no catch-all.
        let routes = core.routing_intent.clone().expect("a routing layer");
        assert!(
            routes
                .rules
                .iter()
                .all(|r| r.priority < killswitch_policy::routes::PRIORITY_CATCH_ALL && !r.invert),
            "{routes:?}"
        );
        // A restart keeps it, as the settings file says.
        drop(core);
        let mut fw2 = Recorder::default();
        let again = self::core(&mut fw2, dir.path());
        assert!(again.status().apps_only);
        assert!(!again.status().lockdown);
        drop(again);
        // Off again: the machine-wide kill switch is back at once.
        let mut fw3 = Recorder::default();
        let mut again = self::core(&mut fw3, dir.path());
        again.observe(up());
        again.reconcile();
        let status = again
            .handle_request(&Request::AppsOnly { enabled: false })
            .expect("apps-only off");
        assert!(!status.apps_only && status.firewall.blocking);
        assert!(!kernel_accepts(&again, &sent("eth0", Some(1000))));
    }

    #[test]
    fn apps_only_and_lockdown_refuse_each_other_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = self::core(&mut fw, dir.path());
        core.handle_request(&Request::Lockdown { enabled: true })
            .expect("lockdown");
        let before = core.status();
        assert_eq!(before.state, State::Blocked);
        let err = core
            .handle_request(&Request::AppsOnly { enabled: true })
            .expect_err("refused while lockdown is on");
        assert!(
            err.message.contains("lockdown off") && err.message.contains("nothing was changed"),
            "{}",
            err.message
        );
        assert_eq!(core.status(), before);
        core.handle_request(&Request::Lockdown { enabled: false })
            .expect("lockdown off");
        core.handle_request(&Request::AppsOnly { enabled: true })
            .expect("apps-only on");
        let before = core.status();
        let err = core
            .handle_request(&Request::Lockdown { enabled: true })
            .expect_err("refused while apps-only is on");
        assert!(err.message.contains("apps-only off"), "{}", err.message);
        assert_eq!(core.status(), before);
        // allow-lan is taken (it applies once apps-only is off) and changes nothing now.
        let applied = core.applied.clone();
        let status = core
            .handle_request(&Request::AllowLan { enabled: true })
            .expect("allow-lan");
        assert!(status.allow_lan && status.apps_only);
        assert_eq!(core.applied, applied);
        // `off` leaves apps-only as it is: it is about the machine-wide kill switch.
        let status = core.handle_request(&Request::Off).expect("off");
        assert!(status.apps_only && status.state == State::Off);
    }

    #[test]
    fn apps_only_from_config_toml_applies_on_reload_and_cannot_be_switched_off_by_the_cli() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = self::core(&mut fw, dir.path());
        core.handle_request(&Request::Guard(spec())).expect("guard");
        core.observe(up());
        core.reconcile();
        assert!(core.status().firewall.blocking);
        let reconfigured = |apps_only| Reconfigured {
            lan: killswitch_policy::Lan::default(),
            allows: killswitch_types::Allows::default(),
            detect_local_bridges: true,
            health_bound: Duration::from_secs(3),
            wireguard_dir: "/etc/wireguard".into(),
            tunnel_only_users: Vec::new(),
            apps_only,
            router_lans: Vec::new(),
        };
        let now = Instant::now();
        core.on(Input::Reloaded(Ok(Box::new(reconfigured(true)))), now);
        core.on(Input::Looked(up()), now);
        let status = core.status();
        assert!(status.apps_only, "{status:?}");
        assert_eq!(status.state, State::Connected);
        assert!(!status.firewall.blocking);
        assert!(kernel_accepts(&core, &sent("eth0", Some(1000))));
        // No scopes, and the tunnel's resolver routed into it for the daemon's probes: nothing
        // else of the machine.
        let routes = core.routing_intent.clone().expect("the resolver's rule");
        assert!(routes.rules.iter().all(|r| matches!(
            r.selector,
            killswitch_policy::routes::Selector::To(net) if net.addr().to_string() == "10.64.0.1"
        )));
        let err = core
            .handle_request(&Request::AppsOnly { enabled: false })
            .expect_err("config.toml's");
        assert!(err.message.contains("config.toml"), "{}", err.message);
        let err = core
            .handle_request(&Request::Lockdown { enabled: true })
            .expect_err("config.toml's apps-only");
        assert!(err.message.contains("config.toml"), "{}", err.message);
        // A reload without it: the machine-wide kill switch is back in the same step.
        core.on(Input::Reloaded(Ok(Box::new(reconfigured(false)))), now);
        core.on(Input::Looked(up()), now);
        let status = core.status();
        assert!(!status.apps_only && status.firewall.blocking);
        assert!(!kernel_accepts(&core, &sent("eth0", Some(1000))));
    }

    #[test]
    fn a_fault_blocks_the_whole_machine_even_with_apps_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut fw = Recorder::default();
            let mut core = self::core(&mut fw, dir.path());
            core.handle_request(&Request::AppsOnly { enabled: true })
                .expect("apps-only on");
        }
        let mut fw = Recorder::default();
        let core = Core::new(
            &mut fw,
            Store::new(dir.path()),
            Some("bad config".to_owned()),
            test_options(dir.path()),
            Instant::now(),
        );
        let mut core = core;
        core.reconcile();
        let status = core.status();
        assert_eq!(status.state, State::Blocked);
        assert!(status.firewall.blocking, "{status:?}");
        assert!(!kernel_accepts(&core, &sent("eth0", Some(1000))));
    }

    /// Invariant 9 with apps-only in the mix: after every command (carried out or refused) in
    /// every state, `status` says what the (recorded) kernel holds: with apps-only, no blocking
    /// table and the machine's own packets accepted; without it, a table exactly when the state
    /// protects; lockdown never shown in force while nothing enforces it; a refused command changes
    /// nothing; and a restart and the early-boot step resume the same.
    #[test]
    fn every_command_with_apps_only_enforces_what_status_says() {
        let on = Request::AppsOnly { enabled: true };
        let states: [(&str, &[Request]); 5] = [
            ("fresh", &[]),
            ("apps-only", std::slice::from_ref(&on)),
            ("apps-only, guarding", &[on.clone(), Request::Guard(spec())]),
            ("lockdown", &[Request::Lockdown { enabled: true }]),
            ("apps-only, off", &[on.clone(), Request::Off]),
        ];
        let commands = [
            on.clone(),
            Request::AppsOnly { enabled: false },
            Request::Guard(spec()),
            Request::Down,
            Request::Off,
            Request::Lockdown { enabled: true },
            Request::Lockdown { enabled: false },
            Request::AllowLan { enabled: true },
        ];
        for (name, setup) in states {
            for tunnel_up in [false, true] {
                for command in &commands {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let mut fw = Recorder::default();
                    let mut daemon = core(&mut fw, dir.path());
                    for request in setup {
                        daemon.handle_request(request).expect("setup");
                    }
                    daemon.observe(if tunnel_up { up() } else { None });
                    daemon.reconcile();
                    let before = daemon.status();
                    let answer = daemon.handle_request(command);
                    daemon.observe(if tunnel_up { up() } else { None });
                    daemon.reconcile();
                    let status = daemon.status();
                    let case = format!(
                        "{name}, tunnel {}, then {command:?}: {status:?}",
                        if tunnel_up { "up" } else { "down" }
                    );
                    if let Err(refused) = &answer {
                        assert!(refused.message.contains("nothing was changed"), "{case}");
                        assert_eq!(status, before, "a refusal changed something: {case}");
                    }
                    let table = daemon
                        .firewall
                        .applied
                        .last()
                        .is_some_and(|r| r.table.is_some());
                    assert_eq!(status.firewall.installed, table, "{case}");
                    let machine_free = kernel_accepts(&daemon, &sent("eth0", Some(1000)));
                    if status.apps_only {
                        assert!(!status.firewall.blocking && machine_free, "{case}");
                        assert!(!table, "no scopes here, so no table: {case}");
                        assert!(!status.lockdown, "lockdown cannot be on: {case}");
                    } else {
                        let protected = matches!(
                            status.state,
                            State::Blocked | State::Connecting | State::Connected
                        );
                        assert_eq!(protected, table, "{case}");
                        assert_eq!(protected, !machine_free, "{case}");
                    }
                    let boot = crate::boot::decide(&Store::new(dir.path()).load()).0;
                    assert_eq!(
                        matches!(boot, crate::boot::Decision::Block(_)),
                        status.firewall.blocking,
                        "early boot disagrees: {case}"
                    );
                    drop(daemon);
                    let mut fw = Recorder::default();
                    let mut restarted = core(&mut fw, dir.path());
                    restarted.observe(if tunnel_up { up() } else { None });
                    restarted.reconcile();
                    let again = restarted.status();
                    assert_eq!(
                        (
                            again.state,
                            again.apps_only,
                            again.lockdown,
                            again.firewall.blocking
                        ),
                        (
                            status.state,
                            status.apps_only,
                            status.lockdown,
                            status.firewall.blocking
                        ),
                        "restart: {case}"
                    );
                }
            }
        }
    }

    /// A router LAN look that sees `lans` present with their networks (192.168.50+i.0/24 for
    /// the i-th name asked), `wan` holding the default route, ip_forward as given; forwarding is
    /// on already for lan0 only (the real look reads the switch the executor set).
    fn router_look(
        lans: &'static [&'static str],
        wan: &'static str,
        ip_forward: bool,
    ) -> crate::router::LookRouter {
        Box::new(move |wanted| crate::router::RouterView {
            lans: wanted
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut seen = crate::router::SeenLan::absent(name.clone());
                    if lans.contains(&name.as_str()) {
                        seen.present = true;
                        seen.forwarding = name.as_str() == "lan0";
                        seen.networks =
                            vec![format!("192.168.{}.0/24", 50 + i).parse().expect("net")];
                    }
                    if name.as_str() == wan {
                        seen.present = true;
                        seen.refused =
                            Some(format!("{wan} holds the default route: it is the WAN"));
                    }
                    seen
                })
                .collect(),
            ip_forward: Some(ip_forward),
        })
    }

    fn lan(name: &str) -> InterfaceName {
        name.parse().expect("literal")
    }

    #[test]
    fn router_lans_are_confined_persisted_listed_and_refused_clearly() {
        use killswitch_types::ipc::UserSource;
        let dir = tempfile::tempdir().expect("tempdir");
        let options = || CoreOptions {
            router_lans: vec![lan("lan0"), lan("eth0")],
            look_router: router_look(&["lan0", "lan1"], "eth0", false),
            ..test_options(dir.path())
        };
        let mut fw = Recorder::default();
        let mut core = core_with(&mut fw, dir.path(), options());
        let effects = drive(&mut core, Input::Started, &None);
        // config.toml's lan0 is in force with its network; eth0 is the WAN: refused, said so.
        let status = core.status();
        assert_eq!(status.router_lans.len(), 1, "{:?}", status.router_lans);
        let lan0 = &status.router_lans[0];
        assert_eq!(lan0.interface, lan("lan0"));
        assert_eq!(lan0.source, UserSource::Config);
        assert!(lan0.present);
        assert_eq!(lan0.networks[0].to_string(), "192.168.50.0/24");
        assert!(lan0.forwarding, "switched on once its rules were in");
        assert_eq!(status.ip_forward, Some(false));
        assert!(
            status
                .exceptions
                .refused
                .iter()
                .any(|r| r.contains("eth0") && r.contains("WAN")),
            "{:?}",
            status.exceptions.refused
        );
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::DeleteRouterFlows)),
            "a first start without a tunnel: leftover LAN flows are stale"
        );
        // The rules get exactly the LANs in force, with their networks.
        let exceptions = core.exceptions();
        assert_eq!(
            exceptions.router_lans,
            vec![killswitch_policy::LocalLink {
                interface: lan("lan0"),
                networks: vec!["192.168.50.0/24".parse().expect("net")],
            }]
        );
        let (state, policy) = core.desired();
        assert_eq!(state, State::Disconnected);
        assert_eq!(
            core.applied,
            Some(compile_for(&policy, &core.policy_settings(), &exceptions)),
            "the ruleset applied is the one compiled with the router LANs"
        );
        // `router add lan1`: at once (its forwarding too), persisted, listed as the CLI's.
        let add = |name: &str| Request::Router {
            add: true,
            interface: lan(name),
        };
        let remove = |name: &str| Request::Router {
            add: false,
            interface: lan(name),
        };
        let command = Command::parse(&add("lan1"), dir.path(), core.devices()).expect("parsed");
        let effects = drive(&mut core, Input::Command(command), &None);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Forward(lans) if *lans == [lan("lan1")])),
            "only the LAN whose switch is off: {effects:?}"
        );
        let status = core.status();
        assert_eq!(
            status
                .router_lans
                .iter()
                .map(|l| (l.interface.as_str(), l.source, l.forwarding))
                .collect::<Vec<_>>(),
            [
                ("lan0", UserSource::Config, true),
                ("lan1", UserSource::Cli, true)
            ]
        );
        assert_eq!(core.exceptions().router_lans.len(), 2);
        // Adding again changes nothing; so does adding config.toml's.
        core.handle_request(&add("lan1")).expect("again");
        core.handle_request(&add("lan0")).expect("config.toml's");
        assert_eq!(core.router_lans, vec![lan("lan1")]);
        // Refusals name the problem and change nothing.
        core.handle_request(&Request::Guard(spec()))
            .expect("guard wg0");
        let before = core.status();
        let applied = core.applied.clone();
        for (request, says) in [
            (add("lo"), "loopback"),
            (add("ksx0"), "killswitch exec"),
            (add("wg0"), "tunnel interface"),
            (remove("lan0"), "config.toml"),
            (remove("lan7"), "not a router LAN"),
        ] {
            let err = core.handle_request(&request).expect_err("refused");
            assert!(
                err.message.contains(says) && err.message.contains("nothing was changed"),
                "{says}: {}",
                err.message
            );
        }
        assert_eq!(core.status(), before);
        assert_eq!(core.applied, applied);
        // Across a restart: the CLI's LAN is still there.
        drop(core);
        let mut fw2 = Recorder::default();
        let mut again = core_with(&mut fw2, dir.path(), options());
        assert_eq!(again.router_lans, vec![lan("lan1")]);
        assert_eq!(again.status().router_lans.len(), 2);
        drive(&mut again, Input::Started, &None);
        let command = Command::parse(&remove("lan1"), dir.path(), again.devices()).expect("parsed");
        let effects = drive(&mut again, Input::Command(command), &None);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Unforward(lans) if *lans == [lan("lan1")])),
            "the switch this daemon turned on goes off with the LAN: {effects:?}"
        );
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::Unforward(lans) if lans.contains(&lan("lan0")))),
            "lan0's was on already, and lan0 stays: {effects:?}"
        );
        let status = again.status();
        assert_eq!(status.router_lans.len(), 1);
        assert_eq!(again.exceptions().router_lans.len(), 1);
        // No router LAN at all: status says nothing of ip_forward.
        let none = tempfile::tempdir().expect("tempdir");
        let mut fw3 = Recorder::default();
        let plain = core_with(&mut fw3, none.path(), test_options(none.path()));
        assert!(plain.status().router_lans.is_empty());
        assert_eq!(plain.status().ip_forward, None);
    }

    #[test]
    fn router_flows_are_deleted_when_what_carries_them_changes_and_only_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = CoreOptions {
            router_lans: vec![lan("lan0")],
            look_router: router_look(&["lan0"], "eth0", true),
            ..test_options(dir.path())
        };
        let mut fw = Recorder::default();
        let mut core = core_with(&mut fw, dir.path(), options);
        let deletes = |effects: &[Effect]| {
            effects
                .iter()
                .filter(|e| matches!(e, Effect::DeleteRouterFlows))
                .count()
        };
        drive(&mut core, Input::Started, &None);
        core.handle_request(&Request::Guard(spec())).expect("guard");
        // Connecting -> connected: a new carrier.
        let effects = drive(&mut core, Input::LinksChanged, &up());
        assert_eq!(core.state, State::Connected);
        assert_eq!(deletes(&effects), 1, "{effects:?}");
        // Nothing changed: nothing deleted (a link event that changes nothing is common).
        let effects = drive(&mut core, Input::LinksChanged, &up());
        assert_eq!(deletes(&effects), 0, "{effects:?}");
        // The tunnel's address changed: its NAT bindings are stale.
        let mut moved = up();
        if let Some(o) = moved.as_mut() {
            o.addresses = vec!["10.64.0.9".parse().expect("literal")];
        }
        let effects = drive(&mut core, Input::LinksChanged, &moved);
        assert_eq!(deletes(&effects), 1, "{effects:?}");
        // Another endpoint (guard again with a new server).
        let mut other = spec();
        other.endpoints =
            killswitch_types::Endpoints::one("198.51.100.2:51820".parse().expect("literal"));
        let command = Command::Guard(other);
        let effects = drive(&mut core, Input::Command(command), &moved);
        assert_eq!(deletes(&effects), 1, "{effects:?}");
        // Connected -> not connected (the tunnel went down).
        let effects = drive(&mut core, Input::LinksChanged, &None);
        assert_ne!(core.state, State::Connected);
        assert_eq!(deletes(&effects), 1, "{effects:?}");
        // Still down: nothing more.
        let effects = drive(&mut core, Input::LinksChanged, &None);
        assert_eq!(deletes(&effects), 0, "{effects:?}");
        // The deletion comes after the new rules, before the reply and the status.
        let effects = drive(&mut core, Input::LinksChanged, &moved);
        let delete = effects
            .iter()
            .position(|e| matches!(e, Effect::DeleteRouterFlows))
            .expect("deleted");
        assert!(
            effects[..delete]
                .iter()
                .all(|e| !matches!(e, Effect::Publish(_) | Effect::SyncDns(_))),
            "{effects:?}"
        );
    }

    #[test]
    fn without_router_lans_no_flow_is_ever_deleted_and_nothing_forwarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = self::core(&mut fw, dir.path());
        let mut all = drive(&mut core, Input::Started, &None);
        core.handle_request(&Request::Guard(spec())).expect("guard");
        all.extend(drive(&mut core, Input::LinksChanged, &up()));
        all.extend(drive(&mut core, Input::LinksChanged, &None));
        assert!(
            !all.iter()
                .any(|e| matches!(e, Effect::DeleteRouterFlows | Effect::Forward(_))),
            "{all:?}"
        );
    }

    /// Gives the core `input`, answers its looks with `seen` and its freezes and thaws as the
    /// registry would (with the programs last reported), as the daemon's loop does; returns the
    /// other effects in order, freezes and thaws included.
    fn drive(core: &mut Core<&mut Recorder>, input: Input, seen: &Option<Observed>) -> Vec<Effect> {
        let now = Instant::now();
        let mut queue: std::collections::VecDeque<Effect> = core.on(input, now).into();
        let mut effects = Vec::new();
        while let Some(effect) = queue.pop_front() {
            let answer = match &effect {
                Effect::Look(_) => Input::Looked(seen.clone()),
                Effect::Freeze { reason } => Input::OnDrop(crate::freeze::decide::Report {
                    programs: core.status().on_drop.programs,
                    event: Some(format!("frozen ({reason})")),
                    ..Default::default()
                }),
                Effect::Thaw => Input::OnDrop(crate::freeze::decide::Report {
                    programs: core.status().on_drop.programs,
                    event: Some("thawed".to_owned()),
                    ..Default::default()
                }),
                Effect::Forward(lans) => {
                    Input::Forwarded(lans.iter().map(|l| (l.clone(), Ok(()))).collect())
                }
                _ => {
                    effects.push(effect);
                    continue;
                }
            };
            if !matches!(effect, Effect::Look(_)) {
                effects.push(effect);
            }
            for more in core.on(answer, now).into_iter().rev() {
                queue.push_front(more);
            }
        }
        effects
    }

    fn watching(n: usize) -> Input {
        Input::OnDrop(crate::freeze::decide::Report {
            programs: (0..n)
                .map(|i| killswitch_types::ipc::WatchedProgram {
                    label: format!("/usr/bin/p{i}"),
                    on_drop: killswitch_types::OnDrop::Freeze,
                    cgroup: format!("drop-{i}"),
                    frozen: false,
                    processes: 1,
                })
                .collect(),
            ..Default::default()
        })
    }

    /// Whether the first effect (before the status and DNS) is a freeze for `reason`.
    fn freezes_first(effects: &[Effect], reason: &str) -> bool {
        matches!(effects.first(), Some(Effect::Freeze { reason: r }) if r == reason)
    }

    fn thaws(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Thaw))
    }

    fn freezes(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Freeze { .. }))
    }

    #[test]
    fn losing_the_tunnel_freezes_first_and_getting_it_back_thaws() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        assert!(
            !freezes(&drive(&mut core, watching(2), &None)),
            "disconnected"
        );
        let guard = Input::Command(Command::Guard(spec()));
        let effects = drive(&mut core, guard, &up());
        assert_eq!(core.status().state, State::Connected);
        assert!(!freezes(&effects) && !thaws(&effects));

        // The interface goes: blocked by the firewall, then frozen before anything else.
        let lost = drive(&mut core, Input::LinksChanged, &None);
        assert_eq!(core.status().state, State::Connecting);
        assert!(freezes_first(&lost, "tunnel lost"), "{lost:?}");
        assert!(core.status().on_drop.held);
        // Still lost: frozen once, not again.
        assert!(!freezes(&drive(&mut core, Input::LinksChanged, &None)));
        // The status published after the freeze says what the executor did, and no status
        // from before it comes after.
        let published: Vec<&Status> = lost
            .iter()
            .filter_map(|e| match e {
                Effect::Publish(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(
            published.last().is_some_and(|s| s.on_drop.held
                && s.on_drop.last_event.as_deref() == Some("frozen (tunnel lost)")),
            "{published:?}"
        );

        // Back: thawed first.
        let back = drive(&mut core, Input::LinksChanged, &up());
        assert_eq!(core.status().state, State::Connected);
        assert!(matches!(back.first(), Some(Effect::Thaw)), "{back:?}");
        assert!(!core.status().on_drop.held);
        assert!(back.iter().any(|e| matches!(e, Effect::Publish(s)
            if s.on_drop.last_event.as_deref() == Some("thawed"))));
    }

    #[test]
    fn a_deliberate_down_or_off_is_no_loss_and_releases_what_a_loss_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        drive(&mut core, watching(1), &None);
        drive(&mut core, Input::Command(Command::Guard(spec())), &up());
        // `down` from connected: nothing frozen, under lockdown (blocked) neither.
        let down = drive(&mut core, Input::Command(Command::Down), &None);
        assert!(!freezes(&down) && !thaws(&down), "{down:?}");
        let lockdown = drive(&mut core, Input::Command(Command::Lockdown(true)), &None);
        assert_eq!(core.status().state, State::Blocked);
        assert!(!freezes(&lockdown));
        // Guarded and lost, then `down`: thawed; lost again, then `off`: thawed.
        for release in [Command::Down, Command::Off] {
            drive(&mut core, Input::Command(Command::Guard(spec())), &up());
            assert!(freezes(&drive(&mut core, Input::LinksChanged, &None)));
            let released = drive(&mut core, Input::Command(release.clone()), &None);
            assert!(thaws(&released), "{release:?}: {released:?}");
            assert!(!core.status().on_drop.held);
        }
    }

    #[test]
    fn no_freeze_without_watched_programs_and_one_as_soon_as_there_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fw = Recorder::default();
        let mut core = core(&mut fw, dir.path());
        drive(&mut core, Input::Command(Command::Guard(spec())), &up());
        let lost = drive(&mut core, Input::LinksChanged, &None);
        assert!(!freezes(&lost) && !thaws(&lost), "{lost:?}");
        assert!(core.status().on_drop.is_empty());
        // A program registered while the tunnel is lost (an `exec --freeze-on-drop` started now)
        // is frozen at once.
        let registered = drive(&mut core, watching(1), &None);
        assert!(
            freezes_first(&registered, "tunnel not connected"),
            "{registered:?}"
        );
    }
}
