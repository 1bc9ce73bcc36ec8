//! What must hold after each step, from the user's side: the README's table, no more.
//!
//! | wanted     | lockdown | the world                         | state        | protection          |
//! |------------|----------|-----------------------------------|--------------|---------------------|
//! | off        | (off)    | any                               | off          | none                |
//! | down       | off      | any                               | disconnected | none                |
//! | down       | on       | any                               | blocked      | everything blocked  |
//! | guard      | any      | the tunnel is there               | connected    | tunnel + its hole   |
//! | guard      | any      | no tunnel (or an impostor)        | connecting   | the hole only       |
//! | up (n)     | any      | one of the n servers answers      | connected    | tunnel + one hole   |
//! | up (n)     | any      | none answers                      | connecting   | one hole of the n   |
//!
//! With apps-only on, every row keeps its state but the protection is none (the machine's own
//! traffic is left alone; the model has no scopes) and DNS is the user's own; `apps-only on` is
//! refused while lockdown is on, and `lockdown on` while apps-only is (nothing changes). `off`
//! leaves apps-only as it is.
//!
//! `off` switches lockdown off; `lockdown on` after `off` leaves `off` (lockdown must block).
//! Restarts and crashes change nothing the user asked for; nor does a second daemon, a bad
//! request, or anything the world does. `--teardown` while the daemon runs is `off`. `allow-lan`
//! opens the LAN in every state with rules.
//!
//! `router add lan0` makes the topology's router LAN interface a LAN this machine is the gateway
//! of, until `router remove lan0` (refused when it is not one); like the other settings it
//! survives restarts, crashes and `off` (`router remove` is how a LAN is let go). `status` lists
//! it, and the kernel holds rules in every state while it is set: whatever the row above, the
//! LAN's forwarded traffic leaves through the connected tunnel or not at all, and its DNS goes to
//! the tunnel's resolver (see [`crate::judge::router`]).
//!
//! The "world" column is judged once the daemon has had time to notice (the runners let the
//! clock run until it settles); the protection must never be weaker than the user asked for at
//! any moment (see [`Model::floor`]).

use crate::step::{MAX_SERVERS, Step, UserStep, WorldStep};
use killswitch_types::State;

/// What the user asked for last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// `off`.
    Off,
    /// `down` (or nothing yet).
    Down,
    /// `guard`.
    Guard,
    /// `up` with the first `n` servers.
    Up(usize),
}

/// What the world is like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    /// The guarded tunnel's interface exists and carries traffic.
    pub tunnel: bool,
    /// A non-tunnel interface carries the tunnel's name (only while the tunnel is gone).
    pub impostor: bool,
    /// Which servers answer.
    pub alive: [bool; MAX_SERVERS],
}

/// The model: what the user asked for, and the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The last target the user set.
    pub wanted: Wanted,
    /// `lockdown`.
    pub lockdown: bool,
    /// `allow-lan`.
    pub allow_lan: bool,
    /// `apps-only`.
    pub apps_only: bool,
    /// `router add lan0` (until `router remove lan0`).
    pub router: bool,
    /// The world.
    pub world: World,
}

/// Which protection the kernel must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// No rules at all (`off`).
    Off,
    /// No rules (disconnected, lockdown off).
    Open,
    /// Everything blocked.
    Blocked,
    /// Only the hole to one of these servers (by index into the topology's servers; the guarded
    /// tunnel's endpoint is [`Protection::GUARD`]).
    Hole(Vec<usize>),
    /// Traffic through the tunnel, and the hole to one of these servers.
    Tunnel(Vec<usize>),
}

impl Protection {
    /// The index that stands for the guarded tunnel's endpoint.
    pub const GUARD: usize = usize::MAX;

    /// Whether the kernel holds a table in this protection.
    pub fn has_rules(&self) -> bool {
        !matches!(self, Protection::Off | Protection::Open)
    }
}

impl Expectation {
    /// Whether the kernel holds table `inet killswitch`: for the machine's protection, or, in
    /// every state, for a router LAN's.
    pub fn has_table(&self) -> bool {
        self.protection.has_rules() || self.router
    }
}

/// What must hold once the daemon has settled after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// `status`'s state.
    pub state: State,
    /// `status`'s lockdown.
    pub lockdown: bool,
    /// `status`'s allow-lan.
    pub allow_lan: bool,
    /// `status`'s apps-only.
    pub apps_only: bool,
    /// Whether `status`'s router LANs list the topology's LAN interface (and nothing else).
    pub router: bool,
    /// The tunnels of which one is connected and carries traffic (by index, as in
    /// [`Protection`]); empty when none is. Apps-only keeps them: it leaves the machine alone,
    /// not a router LAN, whose traffic still goes through the tunnel.
    pub carriers: Vec<usize>,
    /// What the kernel enforces.
    pub protection: Protection,
    /// Whether resolv.conf must name the tunnel's resolver (`up`, connected); otherwise it must
    /// be the user's own, except while `up` reconnects (then either).
    pub dns: Dns,
}

/// Where DNS must point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dns {
    /// The user's own resolvers.
    User,
    /// The `up` tunnel's resolver.
    Tunnel,
    /// Either (an `up` tunnel reconnecting keeps what it had).
    Either,
}

/// How the daemon must answer a step that is a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Not a request, or a world step.
    None,
    /// Carried out.
    Done,
    /// Refused, nothing changed.
    Refused,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// A fresh install: nothing asked, every server up, the guarded tunnel there.
    pub fn new() -> Self {
        Model {
            wanted: Wanted::Down,
            lockdown: false,
            allow_lan: false,
            apps_only: false,
            router: false,
            world: World {
                tunnel: true,
                impostor: false,
                alive: [true; MAX_SERVERS],
            },
        }
    }

    /// Whether a world step can happen now (a veth cannot take the name of a tunnel that is
    /// there; a tunnel cannot come back while a veth has its name). Runners skip the others.
    pub fn applies(&self, step: &Step) -> bool {
        match step {
            Step::World(WorldStep::Impostor) => !self.world.tunnel && !self.world.impostor,
            Step::World(WorldStep::ImpostorGone) => self.world.impostor,
            Step::World(WorldStep::TunnelBack) => !self.world.tunnel && !self.world.impostor,
            Step::World(WorldStep::TunnelGone) => self.world.tunnel,
            _ => true,
        }
    }

    /// Takes a step; says how the daemon must answer it.
    pub fn step(&mut self, step: &Step) -> Answer {
        match step {
            Step::User(user) => self.user(user),
            Step::World(world) => {
                self.world(world);
                Answer::None
            }
        }
    }

    fn user(&mut self, step: &UserStep) -> Answer {
        match step {
            // Guarding something that is never a tunnel is refused.
            UserStep::Guard if self.world.impostor => return Answer::Refused,
            UserStep::Guard => self.wanted = Wanted::Guard,
            UserStep::Up { servers } => self.wanted = Wanted::Up((*servers).clamp(1, MAX_SERVERS)),
            UserStep::Down => self.wanted = Wanted::Down,
            // Lockdown and apps-only contradict each other: each is refused while the other is on.
            UserStep::Lockdown(true) if self.apps_only => return Answer::Refused,
            UserStep::AppsOnly(true) if self.lockdown => return Answer::Refused,
            UserStep::AppsOnly(on) => self.apps_only = *on,
            UserStep::Lockdown(on) => {
                self.lockdown = *on;
                if *on && self.wanted == Wanted::Off {
                    self.wanted = Wanted::Down;
                }
            }
            UserStep::AllowLan(on) => self.allow_lan = *on,
            // Removing a LAN that is not one is refused; adding one twice changes nothing.
            UserStep::Router(false) if !self.router => return Answer::Refused,
            UserStep::Router(on) => self.router = *on,
            UserStep::Off | UserStep::Teardown => {
                self.wanted = Wanted::Off;
                self.lockdown = false;
            }
            UserStep::BadRequest => return Answer::Refused,
            UserStep::Restart | UserStep::Crash | UserStep::SecondDaemon => {
                return Answer::None;
            }
        }
        Answer::Done
    }

    fn world(&mut self, step: &WorldStep) {
        match step {
            WorldStep::TunnelGone => self.world.tunnel = false,
            WorldStep::TunnelBack => self.world.tunnel = !self.world.impostor,
            WorldStep::ServerDown(n) => set(&mut self.world.alive, *n, false),
            WorldStep::ServerUp(n) => set(&mut self.world.alive, *n, true),
            WorldStep::Impostor => self.world.impostor = !self.world.tunnel,
            WorldStep::ImpostorGone => self.world.impostor = false,
            WorldStep::LinkFlap
            | WorldStep::NewAddress
            | WorldStep::ResolvConfRewritten
            | WorldStep::ForeignFlush
            | WorldStep::RuleDeleted
            | WorldStep::TimePasses(_)
            | WorldStep::Suspend => {}
        }
    }

    /// What must hold once the daemon has settled.
    pub fn expect(&self) -> Expectation {
        let (state, protection, dns) = match self.wanted {
            Wanted::Off => (State::Off, Protection::Off, Dns::User),
            Wanted::Down if self.lockdown => (State::Blocked, Protection::Blocked, Dns::User),
            Wanted::Down => (State::Disconnected, Protection::Open, Dns::User),
            Wanted::Guard if self.world.tunnel => (
                State::Connected,
                Protection::Tunnel(vec![Protection::GUARD]),
                Dns::User,
            ),
            Wanted::Guard => (
                State::Connecting,
                Protection::Hole(vec![Protection::GUARD]),
                Dns::User,
            ),
            Wanted::Up(n) => {
                let alive: Vec<usize> = (0..n).filter(|i| self.world.alive[*i]).collect();
                if alive.is_empty() {
                    (
                        State::Connecting,
                        Protection::Hole((0..n).collect()),
                        Dns::Either,
                    )
                } else {
                    (State::Connected, Protection::Tunnel(alive), Dns::Tunnel)
                }
            }
        };
        let carriers = match &protection {
            Protection::Tunnel(alive) => alive.clone(),
            _ => Vec::new(),
        };
        let (protection, dns) = match protection {
            // No machine-wide rules, and the machine's resolvers stay its own.
            Protection::Off => (Protection::Off, dns),
            _ if self.apps_only => (Protection::Open, Dns::User),
            protection => (protection, dns),
        };
        Expectation {
            state,
            lockdown: self.lockdown,
            allow_lan: self.allow_lan,
            apps_only: self.apps_only,
            router: self.router,
            carriers,
            protection,
            dns,
        }
    }

    /// The weakest protection allowed at any moment, settled or not: while a tunnel is wanted,
    /// nothing but its own servers' holes and the tunnel itself; while lockdown blocks, nothing.
    /// `None` when the user asked for no protection.
    pub fn floor(&self) -> Option<Protection> {
        if self.apps_only {
            return None;
        }
        match self.wanted {
            Wanted::Off => None,
            Wanted::Down if self.lockdown => Some(Protection::Blocked),
            Wanted::Down => None,
            Wanted::Guard => Some(Protection::Tunnel(vec![Protection::GUARD])),
            Wanted::Up(n) => Some(Protection::Tunnel((0..n).collect())),
        }
    }
}

fn set(alive: &mut [bool; MAX_SERVERS], n: usize, value: bool) {
    if let Some(slot) = alive.get_mut(n) {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_on_after_off_blocks() {
        let mut model = Model::new();
        for step in [
            UserStep::Lockdown(true),
            UserStep::Lockdown(false),
            UserStep::Off,
            UserStep::Lockdown(true),
        ] {
            model.step(&Step::User(step));
        }
        assert_eq!(model.expect().state, State::Blocked);
        assert_eq!(model.floor(), Some(Protection::Blocked));
    }

    #[test]
    fn apps_only_keeps_the_state_protects_nothing_and_refuses_lockdown() {
        let mut model = Model::new();
        assert_eq!(
            model.step(&Step::User(UserStep::AppsOnly(true))),
            Answer::Done
        );
        model.step(&Step::User(UserStep::Up { servers: 2 }));
        let expected = model.expect();
        assert_eq!(
            (expected.state, expected.protection, expected.dns),
            (State::Connected, Protection::Open, Dns::User)
        );
        assert_eq!(model.floor(), None);
        assert_eq!(
            model.step(&Step::User(UserStep::Lockdown(true))),
            Answer::Refused
        );
        assert!(!model.lockdown);
        model.step(&Step::User(UserStep::AppsOnly(false)));
        model.step(&Step::User(UserStep::Lockdown(true)));
        assert_eq!(
            model.step(&Step::User(UserStep::AppsOnly(true))),
            Answer::Refused
        );
        assert!(model.floor().is_some());
    }

    #[test]
    fn up_connects_to_a_server_that_answers() {
        let mut model = Model::new();
        model.step(&Step::World(WorldStep::ServerDown(0)));
        model.step(&Step::User(UserStep::Up { servers: 2 }));
        assert_eq!(model.expect().protection, Protection::Tunnel(vec![1]));
        model.step(&Step::World(WorldStep::ServerDown(1)));
        assert_eq!(model.expect().protection, Protection::Hole(vec![0, 1]));
    }

    #[test]
    fn the_router_lan_survives_off_and_removing_it_twice_is_refused() {
        let mut model = Model::new();
        assert!(!model.expect().has_table());
        assert_eq!(
            model.step(&Step::User(UserStep::Router(true))),
            Answer::Done
        );
        model.step(&Step::User(UserStep::Off));
        model.step(&Step::User(UserStep::Crash));
        let expected = model.expect();
        assert!(expected.router && expected.has_table());
        assert_eq!(expected.protection, Protection::Off);
        assert_eq!(
            model.step(&Step::User(UserStep::Router(false))),
            Answer::Done
        );
        assert_eq!(
            model.step(&Step::User(UserStep::Router(false))),
            Answer::Refused
        );
        assert!(!model.expect().has_table());
    }

    #[test]
    fn guarding_an_impostor_is_refused() {
        let mut model = Model::new();
        model.step(&Step::World(WorldStep::TunnelGone));
        model.step(&Step::World(WorldStep::Impostor));
        assert_eq!(model.step(&Step::User(UserStep::Guard)), Answer::Refused);
        assert_eq!(model.wanted, Wanted::Down);
    }
}
