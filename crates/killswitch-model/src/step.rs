//! The alphabets: what a user and the world can do, one step at a time.
//!
//! Steps are deliberately coarse (`up 2` means "up with the first two servers of the topology";
//! `router add lan0` names the topology's one router LAN interface, whatever it is called):
//! a sequence must read like a bug report, and both levels must be able to carry out each step.

use proptest::prelude::*;
use std::fmt;

/// The most servers an `up` names in a sequence.
pub const MAX_SERVERS: usize = 3;

/// One step of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Something the user (or the administrator) does.
    User(UserStep),
    /// Something that happens to the machine.
    World(WorldStep),
}

/// What a user does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStep {
    /// `killswitch guard` the topology's tunnel (another program runs it).
    Guard,
    /// `killswitch up` with the first `servers` servers (1 to [`MAX_SERVERS`]).
    Up {
        /// How many servers, in failover order.
        servers: usize,
    },
    /// `killswitch down`.
    Down,
    /// `killswitch lockdown on|off`.
    Lockdown(bool),
    /// `killswitch allow-lan on|off`.
    AllowLan(bool),
    /// `killswitch apps-only on|off`.
    AppsOnly(bool),
    /// `killswitch off`.
    Off,
    /// The daemon is stopped with SIGTERM and started again.
    Restart,
    /// The daemon is killed with SIGKILL and started again.
    Crash,
    /// A second daemon is started while the first runs.
    SecondDaemon,
    /// `killswitchd --teardown` while the daemon runs.
    Teardown,
    /// A request the daemon must refuse, changing nothing.
    BadRequest,
    /// `killswitch router add|remove` the topology's router LAN interface (`lan0`): this machine
    /// becomes, or stops being, that LAN's gateway.
    Router(bool),
}

/// What happens to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldStep {
    /// The guarded tunnel's interface goes away (its VPN client died); for `up`, someone deletes
    /// the daemon's device.
    TunnelGone,
    /// The guarded tunnel's interface comes back.
    TunnelBack,
    /// Server `n` (0-based) stops answering.
    ServerDown(usize),
    /// Server `n` answers again.
    ServerUp(usize),
    /// The physical link goes down and up.
    LinkFlap,
    /// The physical link gets a new address and gateway (another network).
    NewAddress,
    /// A DHCP client rewrites resolv.conf.
    ResolvConfRewritten,
    /// Another program runs `nft flush ruleset`.
    ForeignFlush,
    /// Another program deletes one of the routing layer's rules.
    RuleDeleted,
    /// An interface that is not a tunnel (a veth) appears under the tunnel's name.
    Impostor,
    /// That interface goes away.
    ImpostorGone,
    /// Time passes (seconds).
    TimePasses(u8),
    /// The machine sleeps and wakes.
    Suspend,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::User(step) => step.fmt(f),
            Step::World(step) => write!(f, "world: {step}"),
        }
    }
}

impl fmt::Display for UserStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: &bool| if *b { "on" } else { "off" };
        match self {
            UserStep::Guard => write!(f, "guard"),
            UserStep::Up { servers } => write!(f, "up ({servers} servers)"),
            UserStep::Down => write!(f, "down"),
            UserStep::Lockdown(b) => write!(f, "lockdown {}", on(b)),
            UserStep::AllowLan(b) => write!(f, "allow-lan {}", on(b)),
            UserStep::AppsOnly(b) => write!(f, "apps-only {}", on(b)),
            UserStep::Off => write!(f, "off"),
            UserStep::Restart => write!(f, "daemon: SIGTERM and start"),
            UserStep::Crash => write!(f, "daemon: kill -9 and start"),
            UserStep::SecondDaemon => write!(f, "a second daemon starts"),
            UserStep::Teardown => write!(f, "killswitchd --teardown"),
            UserStep::BadRequest => write!(f, "a bad request"),
            UserStep::Router(true) => write!(f, "router add lan0"),
            UserStep::Router(false) => write!(f, "router remove lan0"),
        }
    }
}

impl fmt::Display for WorldStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorldStep::TunnelGone => write!(f, "the tunnel's interface goes away"),
            WorldStep::TunnelBack => write!(f, "the tunnel's interface comes back"),
            WorldStep::ServerDown(n) => write!(f, "server {} stops answering", n + 1),
            WorldStep::ServerUp(n) => write!(f, "server {} answers again", n + 1),
            WorldStep::LinkFlap => write!(f, "the physical link goes down and up"),
            WorldStep::NewAddress => write!(f, "a new address and gateway"),
            WorldStep::ResolvConfRewritten => write!(f, "resolv.conf is rewritten"),
            WorldStep::ForeignFlush => write!(f, "another program flushes the ruleset"),
            WorldStep::RuleDeleted => write!(f, "another program deletes a routing rule"),
            WorldStep::Impostor => write!(f, "a veth appears under the tunnel's name"),
            WorldStep::ImpostorGone => write!(f, "the veth goes away"),
            WorldStep::TimePasses(s) => write!(f, "{s} s pass"),
            WorldStep::Suspend => write!(f, "the machine sleeps and wakes"),
        }
    }
}

/// Prints a sequence one numbered step per line, as a failure report shows it.
pub fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(n, step)| format!("  {:>2}. {step}\n", n + 1))
        .collect()
}

/// Random user steps. Commands come more often than restarts: most bugs need a few commands in a
/// row, and a restart in the middle of them.
pub fn user_step() -> impl Strategy<Value = UserStep> {
    prop_oneof![
        4 => Just(UserStep::Guard),
        4 => (1..=MAX_SERVERS).prop_map(|servers| UserStep::Up { servers }),
        3 => Just(UserStep::Down),
        4 => any::<bool>().prop_map(UserStep::Lockdown),
        3 => any::<bool>().prop_map(UserStep::AllowLan),
        2 => any::<bool>().prop_map(UserStep::AppsOnly),
        3 => Just(UserStep::Off),
        2 => Just(UserStep::Restart),
        2 => Just(UserStep::Crash),
        1 => Just(UserStep::SecondDaemon),
        1 => Just(UserStep::Teardown),
        1 => Just(UserStep::BadRequest),
        2 => any::<bool>().prop_map(UserStep::Router),
    ]
}

/// Random world steps.
pub fn world_step() -> impl Strategy<Value = WorldStep> {
    prop_oneof![
        3 => Just(WorldStep::TunnelGone),
        3 => Just(WorldStep::TunnelBack),
        3 => (0..MAX_SERVERS).prop_map(WorldStep::ServerDown),
        3 => (0..MAX_SERVERS).prop_map(WorldStep::ServerUp),
        1 => Just(WorldStep::LinkFlap),
        1 => Just(WorldStep::NewAddress),
        1 => Just(WorldStep::ResolvConfRewritten),
        2 => Just(WorldStep::ForeignFlush),
        1 => Just(WorldStep::RuleDeleted),
        1 => Just(WorldStep::Impostor),
        1 => Just(WorldStep::ImpostorGone),
        2 => (1u8..=30).prop_map(WorldStep::TimePasses),
        1 => Just(WorldStep::Suspend),
    ]
}

/// A random step: the user a little more often than the world.
pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => user_step().prop_map(Step::User),
        2 => world_step().prop_map(Step::World),
    ]
}

/// Random sequences of `steps` steps (at least one).
pub fn sequence(steps: usize) -> impl Strategy<Value = Vec<Step>> {
    let steps = steps.max(1);
    proptest::collection::vec(step(), steps..=steps)
}
