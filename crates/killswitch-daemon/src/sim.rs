//! Level 1 of the model-based tester: the daemon's state machine ([`Core`]) driven through random
//! sequences with simulated backends, and judged by [`killswitch_model`] after every step.
//!
//! The simulation stands in for everything the core touches: a kernel that holds whatever ruleset
//! and routing layer were applied last (and that another program can flush), the guarded tunnel's
//! interface, WireGuard devices whose servers answer or not, a settings store in memory (which a
//! restart reads, as the daemon reads its file), and a clock that only moves when the simulation
//! moves it.
//!
//! The topology's router LAN interface (`lan0`) exists in the simulated machine with the network
//! of its address, so that `router add lan0` confines a real-looking LAN; its forwarding switch
//! follows the core's effects. While it is a router LAN, every change of the simulated kernel is
//! also judged by [`judge::router_never`] (nothing from the LAN leaves outside a tunnel), and a
//! settled one by [`judge::router_settled`] (through the connected tunnel, DNS to its resolver).
//!
//! After each step the clock runs (through the tunnel manager's own timers) until the model's
//! expectation holds or a minute of simulated time has passed; on every change of the simulated
//! kernel the ruleset must be at least as strict as the model's floor. No root, no sockets, no
//! sleeps: thousands of sequences a second.

use crate::core::{Command, Core, CoreOptions, Effect, Input};
use crate::dns::DnsWant;
use crate::firewall::{FailureKind, Firewall, FirewallError};
use crate::links::{LinkIdentity, Observed};
use crate::manager::Factory;
use crate::store::{Loaded, Persisted, SettingsStore};
use killswitch_model::judge::{self, Topology};
use killswitch_model::model::{Answer, Dns, Model};
use killswitch_model::runner::{Failure, Options};
use killswitch_model::step::{Step, UserStep, WorldStep};
use killswitch_policy::Ruleset;
use killswitch_policy::routes::RoutingLayer;
use killswitch_tunnel::TunnelError;
use killswitch_tunnel::backend::{Backend, BackendKind};
use killswitch_tunnel::config::TunnelConfig;
use killswitch_tunnel::key::PublicKey;
use killswitch_tunnel::netdev::Presence;
use killswitch_tunnel::uapi::PeerStats;
use killswitch_types::ipc::{ConfigSource, Request};
use killswitch_types::{Endpoint, Fwmark, GuardSpec, State, TransportProtocol};
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long the clock may run after a step for the daemon to reach what the model expects. The
/// slowest honest case: three servers, the two first dead, each costing a handshake timeout, and
/// backoff between rounds.
const SETTLE: Duration = Duration::from_secs(60);

/// How long a suspend lasts.
const SLEEP: Duration = Duration::from_secs(120);

/// How long a tunnel may be silent before it is dead (the daemon's default).
const HEALTH_BOUND: Duration = Duration::from_secs(3);

/// Runs `options.sequences` random sequences against the core; the first failure, shrunk.
pub fn run(options: Options) -> Result<(), Failure> {
    let topology = Topology::sim();
    killswitch_model::runner::run(options, |steps| carry_out(&topology, steps))
}

/// Carries out one sequence from a fresh install; `Err` says what broke after which step.
pub fn carry_out(topology: &Topology, steps: &[Step]) -> Result<(), String> {
    let mut sim = Sim::new(topology.clone())?;
    let mut model = Model::new();
    sim.settle(&model)
        .map_err(|e| format!("before the first step: {e}"))?;
    for (n, step) in steps.iter().enumerate() {
        if !model.applies(step) {
            continue;
        }
        let answer = model.step(step);
        sim.step(step, answer, &model)
            .and_then(|()| sim.settle(&model))
            .map_err(|e| format!("after step {} ({step}): {e}", n + 1))?;
    }
    Ok(())
}

/// The simulated kernel: what was applied last, as another program may have changed it.
#[derive(Debug)]
struct Kernel {
    ruleset: Ruleset,
    routes: Option<RoutingLayer>,
    /// Another program deleted a routing rule: the next apply repairs it and says so.
    routes_tampered: bool,
    /// Bumped on every change, so that the floor is checked once per change.
    generation: u64,
}

/// The simulated kernel as the core's firewall backend. Tables are not owned here: another
/// program's flush removes them, and the core must notice and restore them (the fallback path,
/// the one that needs the core).
#[derive(Debug, Clone)]
struct SimFirewall(Rc<RefCell<Kernel>>);

impl Firewall for SimFirewall {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, FirewallError> {
        let mut kernel = self.0.borrow_mut();
        kernel.ruleset = ruleset.clone();
        kernel.generation += 1;
        Ok(Duration::from_micros(100))
    }

    fn verify(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        if self.0.borrow().ruleset == *ruleset {
            Ok(())
        } else {
            Err(FirewallError::new(
                FailureKind::Mismatch,
                "table inet killswitch is missing",
            ))
        }
    }

    fn apply_routes(
        &mut self,
        layer: Option<&RoutingLayer>,
    ) -> Result<Option<String>, FirewallError> {
        let mut kernel = self.0.borrow_mut();
        let repaired =
            std::mem::take(&mut kernel.routes_tampered).then(|| "a rule was deleted".to_owned());
        kernel.routes = layer.cloned();
        Ok(repaired)
    }
}

/// The settings "file" of the simulation: what was saved last, in memory (the file's own format
/// and checks have their own tests).
#[derive(Debug, Clone, Default)]
struct MemoryStore(Rc<RefCell<Option<Persisted>>>);

impl SettingsStore for MemoryStore {
    fn load(&self) -> Loaded {
        match self.0.borrow().clone() {
            Some(persisted) => Loaded::Found(persisted),
            None => Loaded::Fresh,
        }
    }

    fn save(&self, persisted: &Persisted) -> std::io::Result<()> {
        *self.0.borrow_mut() = Some(persisted.clone());
        Ok(())
    }

    fn quarantine(&self) -> Option<std::path::PathBuf> {
        None
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from("(the simulation's memory)")
    }
}

/// The world the core's devices and links see: shared with the devices, which must be `Send`.
#[derive(Debug)]
struct World {
    /// Which servers answer.
    alive: Vec<bool>,
    /// The guarded tunnel's interface: there and carrying traffic.
    tunnel: bool,
    /// A veth carries the tunnel's name.
    impostor: bool,
    /// Bumped when someone deletes the `up` device: a device of an older generation is gone.
    device_generation: u64,
    /// Simulated seconds since the start, for handshake times.
    elapsed: Duration,
}

/// A WireGuard device of the simulation: it handshakes with its server while the server answers.
#[derive(Debug)]
struct SimDevice {
    world: Arc<Mutex<World>>,
    servers: Vec<Endpoint>,
    generation: u64,
    state: Mutex<DeviceState>,
}

#[derive(Debug, Default)]
struct DeviceState {
    server: Option<usize>,
    handshake: Option<SystemTime>,
    rx: u64,
}

impl SimDevice {
    fn world(&self) -> Result<std::sync::MutexGuard<'_, World>, TunnelError> {
        self.world
            .lock()
            .map_err(|_| TunnelError::Backend("the simulated world is poisoned".to_owned()))
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, DeviceState>, TunnelError> {
        self.state
            .lock()
            .map_err(|_| TunnelError::Backend("the simulated device is poisoned".to_owned()))
    }
}

impl Backend for SimDevice {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        "ks-up"
    }

    fn index(&self) -> u32 {
        u32::try_from(self.generation).unwrap_or(u32::MAX)
    }

    fn configure(&mut self, config: &TunnelConfig, _fwmark: u32) -> Result<(), TunnelError> {
        if self.world()?.device_generation != self.generation {
            return Err(TunnelError::Gone("ks-up".to_owned()));
        }
        let server = self
            .servers
            .iter()
            .position(|s| *s == config.endpoint())
            .ok_or_else(|| TunnelError::Backend("a server the simulation does not know".into()))?;
        let mut state = self.state()?;
        if state.server != Some(server) {
            *state = DeviceState {
                server: Some(server),
                ..DeviceState::default()
            };
        }
        Ok(())
    }

    fn presence(&self) -> Presence {
        match self.world() {
            Ok(world) if world.device_generation == self.generation => Presence::Up,
            _ => Presence::Gone,
        }
    }

    fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
        let (alive, elapsed) = {
            let world = self.world()?;
            if world.device_generation != self.generation {
                return Err(TunnelError::Gone("ks-up".to_owned()));
            }
            let mut state = self.state()?;
            let alive = state
                .server
                .and_then(|s| world.alive.get(s).copied())
                .unwrap_or(false);
            if alive {
                state.rx += 148;
            }
            (alive, world.elapsed)
        };
        let mut state = self.state()?;
        if alive {
            // A handshake every two minutes, as WireGuard does; the first at once.
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + elapsed;
            let stale = state.handshake.is_none_or(|h| {
                now.duration_since(h).unwrap_or_default() >= Duration::from_secs(120)
            });
            if stale {
                state.handshake = Some(now);
            }
        }
        Ok(Some(PeerStats {
            public_key: PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
                .map_err(|e| TunnelError::Backend(e.to_string()))?,
            last_handshake: state.handshake,
            rx_bytes: state.rx,
            tx_bytes: 0,
        }))
    }
}

/// One simulated machine: the core, its kernel, its world and its clock.
struct Sim {
    topology: Topology,
    dir: tempfile::TempDir,
    kernel: Rc<RefCell<Kernel>>,
    world: Arc<Mutex<World>>,
    core: Option<Core<SimFirewall>>,
    start: Instant,
    now: Instant,
    /// The kernel generation last judged against the floor.
    judged: u64,
    /// The settings, kept across restarts as the file keeps them.
    store: MemoryStore,
    /// When the core asked to be woken.
    wake: Option<Instant>,
    /// Where the core last asked DNS to point.
    dns: Option<DnsWant>,
    /// The core's last answer to a command.
    answer: Option<Result<killswitch_types::ipc::Status, killswitch_types::ipc::IpcError>>,
    /// The router LAN interface's forwarding switch (the core switches it on and off).
    lan_forwarding: Rc<Cell<bool>>,
}

impl Sim {
    fn new(topology: Topology) -> Result<Self, String> {
        // For the record of created devices, which `up` consults (empty here: the simulated
        // devices are not recorded).
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let start = Instant::now();
        let mut sim = Sim {
            world: Arc::new(Mutex::new(World {
                alive: vec![true; topology.servers.len()],
                tunnel: true,
                impostor: false,
                device_generation: 1,
                elapsed: Duration::ZERO,
            })),
            topology,
            dir,
            kernel: Rc::new(RefCell::new(Kernel {
                ruleset: Ruleset { table: None },
                routes: None,
                routes_tampered: false,
                generation: 0,
            })),
            core: None,
            start,
            now: start,
            judged: u64::MAX,
            store: MemoryStore::default(),
            wake: None,
            dns: None,
            answer: None,
            lan_forwarding: Rc::new(Cell::new(false)),
        };
        sim.start_daemon()?;
        Ok(sim)
    }

    fn world(&self) -> Result<std::sync::MutexGuard<'_, World>, String> {
        self.world
            .lock()
            .map_err(|_| "the simulated world is poisoned".to_owned())
    }

    fn core(&mut self) -> Result<&mut Core<SimFirewall>, String> {
        self.core
            .as_mut()
            .ok_or_else(|| "no daemon is running".to_owned())
    }

    /// Starts a daemon as `run` does: a core over the state directory, then a first look at the
    /// tunnel and a first apply.
    fn start_daemon(&mut self) -> Result<(), String> {
        let world = self.world.clone();
        let servers: Vec<Endpoint> = self
            .topology
            .servers
            .iter()
            .map(|s| udp(s.endpoint))
            .collect();
        let factory: Factory = Box::new(move |_name: &str| {
            let generation = world
                .lock()
                .map_err(|_| TunnelError::Backend("the simulated world is poisoned".to_owned()))?
                .device_generation;
            Ok(Box::new(SimDevice {
                world: world.clone(),
                servers: servers.clone(),
                generation,
                state: Mutex::new(DeviceState::default()),
            }) as Box<dyn Backend>)
        });
        let world = self.world.clone();
        let guard = self.topology.guard_interface.clone();
        let identify: crate::core::Identify = Box::new(move |name| {
            let world = world.lock().ok()?;
            (*name == guard).then(|| identity(&world)).flatten()
        });
        let options = CoreOptions {
            health_bound: HEALTH_BOUND,
            factory,
            identify,
            look_locals: crate::locals::nothing(),
            look_router: self.look_router(),
            ..CoreOptions::new(self.dir.path())
        };
        let core = Core::new(
            SimFirewall(self.kernel.clone()),
            self.store.clone(),
            None,
            options,
            self.now,
        );
        self.core = Some(core);
        self.on(Input::Started)
    }

    /// The simulated machine's router LAN: the topology's interface, present, with the /24 of its
    /// client as its network (the gateway's address is in it), never the WAN.
    fn look_router(&self) -> crate::router::LookRouter {
        let lan = self.topology.router_lan.clone();
        let network = ipnet::Ipv4Net::new(self.topology.router_client, 24)
            .map(|n| ipnet::IpNet::V4(n.trunc()));
        let forwarding = self.lan_forwarding.clone();
        Box::new(move |wanted| crate::router::RouterView {
            lans: wanted
                .iter()
                .map(|name| match (&network, *name == lan) {
                    (Ok(network), true) => crate::router::SeenLan {
                        interface: name.clone(),
                        networks: vec![*network],
                        present: true,
                        forwarding: forwarding.get(),
                        refused: None,
                    },
                    _ => crate::router::SeenLan::absent(name.clone()),
                })
                .collect(),
            ip_forward: Some(true),
        })
    }

    /// Gives the core an input now and carries out its effects, as the daemon's loop does: an
    /// effect that asks for an answer gets it at once, before the effects after it.
    fn on(&mut self, input: Input) -> Result<(), String> {
        let now = self.now;
        let effects = self.core()?.on(input, now);
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let answer = match effect {
                Effect::Look(name) => {
                    let observed = {
                        let world = self.world()?;
                        (name == self.topology.guard_interface)
                            .then(|| observe(&world, &self.topology))
                            .flatten()
                    };
                    Input::Looked(observed)
                }
                Effect::SyncDns(want) => {
                    self.dns = Some(want);
                    Input::DnsSynced {
                        changed: false,
                        status: None,
                    }
                }
                Effect::Reply(answer) => {
                    self.answer = Some(answer);
                    continue;
                }
                Effect::WakeAt(at) => {
                    self.wake = at;
                    continue;
                }
                // The simulated devices see their servers' answers without probes.
                Effect::Probe(_) | Effect::Publish(_) => continue,
                // The simulation watches no programs, so the core never asks; were it to, the
                // answer is that nothing is watched.
                Effect::Freeze { .. } | Effect::Thaw => Input::OnDrop(Default::default()),
                // Forwarding is switched on (the simulated LAN's switch follows); there are no
                // flows to delete.
                Effect::Forward(lans) => {
                    if lans.contains(&self.topology.router_lan) {
                        self.lan_forwarding.set(true);
                    }
                    Input::Forwarded(lans.into_iter().map(|lan| (lan, Ok(()))).collect())
                }
                Effect::Unforward(lans) => {
                    if lans.contains(&self.topology.router_lan) {
                        self.lan_forwarding.set(false);
                    }
                    continue;
                }
                Effect::DeleteRouterFlows => continue,
            };
            let more = self.core()?.on(answer, now);
            for effect in more.into_iter().rev() {
                queue.push_front(effect);
            }
        }
        Ok(())
    }

    /// What the daemon does on a link event: look at the tunnel at once, observe, reconcile.
    fn link_event(&mut self) -> Result<(), String> {
        self.on(Input::LinksChanged)
    }

    fn request(&mut self, request: &Request, answer: Answer) -> Result<(), String> {
        let parsed = {
            let core = self.core.as_ref().ok_or("no daemon is running")?;
            Command::parse(request, &self.dir.path().join("wireguard"), core.devices())
        };
        let result = match parsed {
            Ok(command) => {
                self.answer = None;
                self.on(Input::Command(command))?;
                self.answer
                    .take()
                    .ok_or_else(|| format!("`{}` was never answered", request.name()))?
            }
            Err(refused) => Err(refused),
        };
        match (answer, result) {
            (Answer::Refused, Ok(status)) => Err(format!(
                "`{}` must be refused but was carried out (state {})",
                request.name(),
                status.state
            )),
            (Answer::Done, Err(e)) => Err(format!(
                "`{}` must be carried out but was refused: {}",
                request.name(),
                e.message
            )),
            _ => Ok(()),
        }
    }

    fn step(&mut self, step: &Step, answer: Answer, model: &Model) -> Result<(), String> {
        match step {
            Step::User(user) => self.user(user, answer)?,
            Step::World(world) => self.world_step(world)?,
        }
        // The floor moves with the user's commands even when the kernel does not change (an
        // `off` followed by `lockdown on` that installs nothing): judge it after every step.
        self.judged = u64::MAX;
        self.judge_floor(model)
    }

    fn user(&mut self, step: &UserStep, answer: Answer) -> Result<(), String> {
        let request = match step {
            UserStep::Guard => Request::Guard(GuardSpec {
                interface: self.topology.guard_interface.clone(),
                endpoints: killswitch_types::Endpoints::one(udp(self.topology.guard.endpoint)),
                dns: vec![IpAddr::V4(self.topology.guard.dns)],
                mark: Fwmark::new(self.topology.guard.mark),
                uid: None,
            }),
            UserStep::Up { servers } => Request::Up {
                interface: Some(self.topology.up_interface.clone()),
                configs: (0..*servers).map(|n| wg_quick(&self.topology, n)).collect(),
            },
            UserStep::Down => Request::Down,
            UserStep::Lockdown(enabled) => Request::Lockdown { enabled: *enabled },
            UserStep::AllowLan(enabled) => Request::AllowLan { enabled: *enabled },
            UserStep::AppsOnly(enabled) => Request::AppsOnly { enabled: *enabled },
            // A running daemon is switched off through its socket by `--teardown`.
            UserStep::Off | UserStep::Teardown => Request::Off,
            // `up` with no configuration: the daemon must refuse it and change nothing.
            UserStep::BadRequest => Request::Up {
                interface: None,
                configs: Vec::new(),
            },
            UserStep::Router(add) => Request::Router {
                add: *add,
                interface: self.topology.router_lan.clone(),
            },
            UserStep::Restart | UserStep::Crash => {
                // The device goes with the daemon; the kernel's tables stay.
                self.core = None;
                return self.start_daemon();
            }
            // The instance lock keeps a second daemon from touching anything: nothing to
            // simulate here (the real daemon's level checks it).
            UserStep::SecondDaemon => return Ok(()),
        };
        self.request(&request, answer)
    }

    fn world_step(&mut self, step: &WorldStep) -> Result<(), String> {
        {
            let mut world = self.world()?;
            match step {
                WorldStep::TunnelGone => {
                    world.tunnel = false;
                    world.device_generation += 1;
                }
                WorldStep::TunnelBack => world.tunnel = true,
                WorldStep::ServerDown(n) => set(&mut world.alive, *n, false),
                WorldStep::ServerUp(n) => set(&mut world.alive, *n, true),
                WorldStep::Impostor => world.impostor = true,
                WorldStep::ImpostorGone => world.impostor = false,
                _ => {}
            }
        }
        match step {
            WorldStep::TunnelGone
            | WorldStep::TunnelBack
            | WorldStep::Impostor
            | WorldStep::ImpostorGone
            | WorldStep::LinkFlap
            | WorldStep::NewAddress => self.link_event(),
            WorldStep::ServerDown(_) | WorldStep::ServerUp(_) => Ok(()),
            // DNS is managed outside the core: the real daemon's level checks it.
            WorldStep::ResolvConfRewritten => Ok(()),
            WorldStep::ForeignFlush => {
                {
                    let mut kernel = self.kernel.borrow_mut();
                    kernel.ruleset = Ruleset { table: None };
                    kernel.generation += 1;
                }
                self.on(Input::NftChanged {
                    committer: "nft (simulated)".to_owned(),
                })
            }
            WorldStep::RuleDeleted => {
                let tampered = self.kernel.borrow().routes.is_some();
                self.kernel.borrow_mut().routes_tampered = tampered;
                // rtnetlink tells the daemon, which reconciles.
                self.on(Input::LinksChanged)?;
                if self.kernel.borrow().routes_tampered {
                    return Err("a deleted routing rule was not repaired".to_owned());
                }
                Ok(())
            }
            WorldStep::TimePasses(seconds) => {
                self.run_clock(self.now + Duration::from_secs(u64::from(*seconds)), None)
            }
            WorldStep::Suspend => {
                // Asleep: no timer fires. Then the resume signal.
                self.advance_to(self.now + SLEEP)?;
                self.on(Input::Woke)
            }
        }
    }

    fn advance_to(&mut self, to: Instant) -> Result<(), String> {
        self.now = self.now.max(to);
        let elapsed = self.now - self.start;
        self.world()?.elapsed = elapsed;
        Ok(())
    }

    /// Fires the core's timers until `until`, or until `done` says the model's expectation holds.
    /// Judges the floor after each.
    fn run_clock(
        &mut self,
        until: Instant,
        mut done: Option<&mut dyn FnMut(&mut Sim) -> bool>,
    ) -> Result<(), String> {
        loop {
            if let Some(done) = done.as_mut()
                && done(self)
            {
                return Ok(());
            }
            let Some(due) = self.wake.filter(|due| *due <= until) else {
                return self.advance_to(until);
            };
            self.advance_to(due)?;
            self.on(Input::Timer)?;
        }
    }

    fn judge_floor(&mut self, model: &Model) -> Result<(), String> {
        let kernel = self.kernel.borrow();
        if kernel.generation == self.judged {
            return Ok(());
        }
        self.judged = kernel.generation;
        judge::at_least(
            &kernel.ruleset,
            &self.topology,
            model.floor().as_ref(),
            model.allow_lan,
        )
        .map_err(|e| format!("weaker than the user asked for: {e}"))?;
        if model.router {
            judge::router_never(&kernel.ruleset, &self.topology)
                .map_err(|e| format!("the router LAN is not confined: {e}"))?;
        }
        Ok(())
    }

    /// Runs the clock until the daemon does what the model expects; fails with the difference
    /// if it has not after [`SETTLE`]. The floor is judged at every change on the way.
    fn settle(&mut self, model: &Model) -> Result<(), String> {
        let until = self.now + SETTLE;
        let mut floor_error = None;
        let mut done = |sim: &mut Sim| {
            if floor_error.is_none()
                && let Err(e) = sim.judge_floor(model)
            {
                floor_error = Some(e);
                return true;
            }
            sim.expected(model).is_ok()
        };
        self.run_clock(until, Some(&mut done))?;
        if let Some(e) = floor_error {
            return Err(e);
        }
        self.expected(model)
            .map_err(|e| format!("not as the model says after {} s: {e}", SETTLE.as_secs()))
    }

    /// Whether the daemon's status, kernel and DNS are as the model expects.
    fn expected(&mut self, model: &Model) -> Result<(), String> {
        let expectation = model.expect();
        let core = self.core.as_ref().ok_or("no daemon is running")?;
        let status = core.status();
        let mut wrong = Vec::new();
        if status.state != expectation.state {
            wrong.push(format!(
                "status says {} but must say {}",
                status.state, expectation.state
            ));
        }
        if status.lockdown != expectation.lockdown {
            wrong.push(format!("status says lockdown {}", on(status.lockdown)));
        }
        if status.allow_lan != expectation.allow_lan {
            wrong.push(format!("status says allow-lan {}", on(status.allow_lan)));
        }
        if status.apps_only != expectation.apps_only {
            wrong.push(format!("status says apps-only {}", on(status.apps_only)));
        }
        let router_lans: Vec<&str> = (status.router_lans.iter())
            .map(|l| l.interface.as_str())
            .collect();
        let want_lans: &[&str] = if expectation.router {
            &[self.topology.router_lan.as_str()]
        } else {
            &[]
        };
        if router_lans != want_lans {
            wrong.push(format!(
                "status lists the router LANs {router_lans:?}, not {want_lans:?}"
            ));
        }
        // A router LAN keeps a table (and its routing rule) in every state.
        let has_rules = expectation.has_table();
        if status.firewall.installed != has_rules {
            wrong.push(format!(
                "status says rules are {}installed",
                if status.firewall.installed {
                    ""
                } else {
                    "not "
                }
            ));
        }
        let kernel = self.kernel.borrow();
        if expectation.apps_only {
            // Apps-only: a layer only for the tunnel's resolvers (the model has no scopes), and
            // never a rule that takes the machine into our table.
            let machine = kernel.routes.as_ref().and_then(|layer| {
                layer.rules.iter().find(|r| {
                    let lan = killswitch_policy::routes::Selector::InInterface(
                        self.topology.router_lan.clone(),
                    );
                    r.invert
                        || !(matches!(r.selector, killswitch_policy::routes::Selector::To(_))
                            || expectation.router && r.selector == lan)
                })
            });
            if let Some(rule) = machine {
                wrong.push(format!(
                    "apps-only, yet the routing layer takes the machine: {rule:?}"
                ));
            }
        } else if kernel.routes.is_some() != has_rules {
            wrong.push(format!(
                "the routing layer is {}",
                if kernel.routes.is_some() {
                    "in place"
                } else {
                    "missing"
                }
            ));
        }
        if let Err(e) = judge::exactly(
            &kernel.ruleset,
            &self.topology,
            &expectation.protection,
            expectation.allow_lan,
        ) {
            wrong.push(format!("the kernel's rules: {e}"));
        }
        // Only once the rest holds: the settle loop asks after every timer, and the forwarded
        // packets cost more than the rest together.
        if expectation.router
            && wrong.is_empty()
            && let Err(e) =
                judge::router_settled(&kernel.ruleset, &self.topology, &expectation.carriers)
        {
            wrong.push(format!("the router LAN: {e}"));
        }
        match (expectation.dns, self.dns.clone().unwrap_or(DnsWant::Keep)) {
            (Dns::Either, _) | (Dns::User, DnsWant::Restore) => {}
            (Dns::Tunnel, DnsWant::Tunnel { servers, .. })
                if servers.iter().all(|s| {
                    self.topology
                        .servers
                        .iter()
                        .any(|e| IpAddr::V4(e.dns) == *s)
                }) => {}
            (dns, want) => wrong.push(format!("DNS must be {dns:?} but is {want:?}")),
        }
        if status.state == State::Connected && status.error.is_some() {
            wrong.push(format!(
                "connected, with an error: {}",
                status.error.unwrap_or_default()
            ));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn set(alive: &mut [bool], n: usize, value: bool) {
    if let Some(slot) = alive.get_mut(n) {
        *slot = value;
    }
}

fn udp(address: std::net::SocketAddr) -> Endpoint {
    Endpoint {
        address,
        protocol: TransportProtocol::Udp,
    }
}

/// What kind of device carries the guarded tunnel's name: the tunnel (a tun device), a veth
/// impostor, or nothing.
fn identity(world: &World) -> Option<LinkIdentity> {
    if world.tunnel {
        Some(LinkIdentity {
            kind: Some("tun".to_owned()),
            link_type: 65534,
        })
    } else if world.impostor {
        Some(LinkIdentity {
            kind: Some("veth".to_owned()),
            link_type: 1,
        })
    } else {
        None
    }
}

fn observe(world: &World, topology: &Topology) -> Option<Observed> {
    let identity = identity(world)?;
    let address = if world.tunnel {
        topology.guard.address
    } else {
        std::net::Ipv4Addr::new(192, 168, 1, 77)
    };
    Some(Observed {
        up: true,
        addresses: vec![IpAddr::V4(address)],
        identity: Some(identity),
    })
}

/// A wg-quick file for server `n` of the topology, sent inline as the CLI sends it.
fn wg_quick(topology: &Topology, n: usize) -> ConfigSource {
    let text = topology.servers.get(n).map(|server| {
        format!(
            "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = {}/32\nDNS = {}\n\
             [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
            server.address, server.dns, server.endpoint
        )
    });
    ConfigSource {
        source: format!("server{}.conf", n + 1),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_sequences_hold() {
        // A few hundred here, for every `cargo test`; CI runs ten thousand through
        // `killswitch-lab model --sim`.
        let options = Options {
            sequences: 300,
            steps: 20,
            seed: 1,
            shrink_iterations: 5000,
        };
        if let Err(failure) = run(options) {
            panic!("{failure}");
        }
    }
}
