//! `killswitchd --early-boot`: block before the network comes up, from the persisted settings.
//!
//! Run by a oneshot unit ordered before `network-pre.target`, long before the daemon proper. If the
//! user had lockdown on, or was protecting a tunnel, the machine must not get a moment of network
//! without the kill switch: this installs the blocking rules (both layers) and exits. The daemon,
//! when it starts, replaces them in one transaction with whatever the state calls for. When in
//! doubt (the settings cannot be read), it blocks and says why. When it blocks nothing, tunnel-only
//! users and router LANs (config.toml's and the CLI's) are still confined: their table and routing
//! rules go in, so that a service running as one has no moment of network before the daemon
//! starts, and a LAN's clients are not forwarded to the WAN before the daemon starts (the forward
//! chain is part of that table, in place before anything can switch `ip_forward` on). The LANs
//! are known by name only this early (their addresses may not be configured yet): no source from
//! them is accepted but DHCP's until the daemon looks at their networks.

use crate::firewall::Firewall;
use crate::store::{Loaded, Store};
use crate::target::Target;
use killswitch_policy::routes::compile_routes_for;
use killswitch_policy::{PolicyState, compile_for};
use killswitch_types::Settings;

/// What the early-boot step decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Install the blocking rules, for this reason.
    Block(String),
    /// Install nothing, for this reason.
    Leave(String),
}

/// Decides from what the state directory holds. Pure, so that every case is a unit test.
pub fn decide(loaded: &Loaded) -> (Decision, Settings) {
    match loaded {
        Loaded::Fresh => (
            Decision::Leave("no saved settings: nothing was ever protected".to_owned()),
            Settings::default(),
        ),
        Loaded::Unusable(why) | Loaded::Newer(why) => (
            Decision::Block(format!("the saved settings cannot be used ({why})")),
            Settings::default(),
        ),
        Loaded::Found(p) => {
            let decision = match (&p.target, p.settings.lockdown) {
                (Target::Off, _) => Decision::Leave("the kill switch was switched off".to_owned()),
                // The machine is deliberately unprotected; only the scopes are confined (below).
                _ if p.settings.apps_only => {
                    Decision::Leave("apps-only is on: this machine is not protected".to_owned())
                }
                (_, true) => Decision::Block("lockdown is on".to_owned()),
                (Target::Guard(spec), false) => {
                    Decision::Block(format!("a tunnel ({}) was being protected", spec.interface))
                }
                (Target::Up(spec), false) => {
                    Decision::Block(format!("a tunnel ({}) was up", spec.interface))
                }
                (Target::Disconnected, false) => {
                    Decision::Leave("no tunnel was wanted and lockdown is off".to_owned())
                }
            };
            (decision, p.settings)
        }
    }
}

/// Loads, decides and applies (with `exceptions` as what passes besides the tunnel: what
/// allow-lan opens and the configured allows, so that a headless server's `allow_inbound` SSH
/// works from the first moment, as the daemon would; `apps_only` being config.toml's, which
/// leaves the machine alone as the settings file's does). Returns the decision, or why applying
/// it failed.
pub fn run(
    store: &Store,
    exceptions: &killswitch_policy::Exceptions,
    apps_only: bool,
    firewall: &mut impl Firewall,
) -> Result<Decision, String> {
    let loaded = store.load();
    let (mut decision, settings) = decide(&loaded);
    if apps_only && matches!(loaded, Loaded::Found(_)) && matches!(decision, Decision::Block(_)) {
        decision = Decision::Leave(
            "apps_only = true in config.toml: this machine is not protected".to_owned(),
        );
    }
    let mut exceptions = confined(&loaded, exceptions);
    if let Decision::Leave(why) = &decision {
        if exceptions.tunnel_only_uids.is_empty() && exceptions.router_lans.is_empty() {
            return Ok(decision);
        }
        // Nothing for the machine: `disconnected` without lockdown compiles to the scopes' own
        // table and routing rules only (the users', the router LANs'), whatever the target was
        // (`off` keeps them too).
        let users_only = scopes_only(&exceptions);
        let unlocked = Settings {
            lockdown: false,
            ..settings
        };
        firewall.apply(&compile_for(
            &PolicyState::Disconnected,
            &unlocked,
            &users_only,
        ))?;
        firewall.apply_routes(
            compile_routes_for(&PolicyState::Disconnected, &unlocked, &users_only, &[]).as_ref(),
        )?;
        let which = match (
            exceptions.tunnel_only_uids.is_empty(),
            exceptions.router_lans.is_empty(),
        ) {
            (false, true) => "the tunnel-only users are",
            (true, false) => "the router LANs are",
            _ => "the tunnel-only users and the router LANs are",
        };
        return Ok(Decision::Leave(format!("{why}; only {which} confined")));
    }
    if let Decision::Block(_) = &decision {
        // The subnets and inbound services the CLI added count too (config.toml's are in
        // `exceptions`). Allowed interfaces do not, this early: whether one is physical (and so
        // refused) can only be judged once it exists, which is the daemon's job when it takes
        // over; an overlay's own daemon starts later anyway.
        exceptions.interfaces.clear();
        if let Loaded::Found(persisted) = &loaded {
            let configured = killswitch_types::Allows {
                interfaces: Vec::new(),
                subnets: exceptions.subnets.clone(),
                inbound: exceptions.inbound.clone(),
            };
            let all = configured.merged(&persisted.allows);
            exceptions.subnets = all.subnets;
            exceptions.inbound = all.inbound;
        }
        firewall.apply(&compile_for(&PolicyState::Blocked, &settings, &exceptions))?;
        firewall.apply_routes(
            compile_routes_for(&PolicyState::Blocked, &settings, &exceptions, &[]).as_ref(),
        )?;
    }
    Ok(decision)
}

/// `exceptions` (config.toml's) with what the settings file adds to the scopes: the CLI's
/// tunnel-only users and router LANs (each LAN once, by name).
pub fn confined(
    loaded: &Loaded,
    exceptions: &killswitch_policy::Exceptions,
) -> killswitch_policy::Exceptions {
    let mut exceptions = exceptions.clone();
    if let Loaded::Found(persisted) = loaded {
        exceptions
            .tunnel_only_uids
            .extend(persisted.tunnel_only_users.iter().map(|u| u.uid));
        for lan in &persisted.router_lans {
            if !exceptions.router_lans.iter().any(|l| l.interface == *lan) {
                exceptions
                    .router_lans
                    .push(killswitch_policy::LocalLink::named(lan.clone()));
            }
        }
    }
    exceptions
}

/// Only the scopes of `exceptions`: what is compiled when the machine itself is left alone.
pub fn scopes_only(exceptions: &killswitch_policy::Exceptions) -> killswitch_policy::Exceptions {
    killswitch_policy::Exceptions {
        tunnel_only_uids: exceptions.tunnel_only_uids.clone(),
        router_lans: exceptions.router_lans.clone(),
        ..killswitch_policy::Exceptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Persisted;
    use killswitch_types::GuardSpec;

    fn found(lockdown: bool, target: Target) -> Loaded {
        Loaded::Found(Persisted::new(
            Settings {
                lockdown,
                allow_lan: true,
                apps_only: false,
            },
            target,
        ))
    }

    fn guard() -> Target {
        Target::Guard(GuardSpec {
            interface: "wg0".parse().expect("literal"),
            endpoints: killswitch_types::Endpoints::one(
                "198.51.100.1:51820".parse().expect("literal"),
            ),
            dns: vec![],
            mark: None,
            uid: None,
        })
    }

    #[test]
    fn blocks_when_protection_was_wanted_or_unknown() {
        assert!(matches!(
            decide(&found(true, Target::Disconnected)).0,
            Decision::Block(_)
        ));
        assert!(
            matches!(decide(&found(false, guard())).0, Decision::Block(why) if why.contains("wg0"))
        );
        assert!(
            matches!(decide(&Loaded::Unusable("garbage".into())).0, Decision::Block(why) if why.contains("garbage"))
        );
    }

    #[test]
    fn leaves_the_network_alone_otherwise() {
        assert!(matches!(decide(&Loaded::Fresh).0, Decision::Leave(_)));
        assert!(matches!(
            decide(&found(false, Target::Disconnected)).0,
            Decision::Leave(_)
        ));
        assert!(
            matches!(decide(&found(true, Target::Off)).0, Decision::Leave(_)),
            "an explicit off wins over lockdown"
        );
    }

    #[test]
    fn apps_only_leaves_the_machine_alone_at_boot_even_with_a_tunnel() {
        let mut persisted = Persisted::new(Settings::default(), guard());
        persisted.settings.apps_only = true;
        assert!(matches!(
            decide(&Loaded::Found(persisted)).0,
            Decision::Leave(why) if why.contains("apps-only")
        ));
    }

    #[test]
    fn keeps_the_lan_setting() {
        assert!(decide(&found(true, Target::Disconnected)).1.allow_lan);
    }
}

#[cfg(test)]
mod exceptions_at_boot {
    use super::*;
    use crate::firewall::FirewallError;
    use crate::store::Persisted;
    use killswitch_policy::routes::RoutingLayer;
    use killswitch_policy::{ConnState, Exceptions, Packet, Ruleset, Transport};
    use std::time::Duration;

    #[test]
    fn config_toml_apps_only_leaves_the_machine_alone_at_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let guard = Target::Guard(killswitch_types::GuardSpec {
            interface: "wg0".parse().expect("literal"),
            endpoints: killswitch_types::Endpoints::one(
                "198.51.100.1:51820".parse().expect("literal"),
            ),
            dns: vec![],
            mark: None,
            uid: None,
        });
        store
            .save(&Persisted::new(Settings::default(), guard))
            .expect("saved");
        let mut firewall = Kept::default();
        let decision = run(&store, &Exceptions::default(), true, &mut firewall).expect("left");
        assert!(
            matches!(&decision, Decision::Leave(why) if why.contains("config.toml")),
            "{decision:?}"
        );
        assert!(firewall.0.is_none(), "no scopes: nothing installed");
        // Without it, the same file blocks.
        let decision = run(&store, &Exceptions::default(), false, &mut firewall).expect("blocked");
        assert!(matches!(decision, Decision::Block(_)), "{decision:?}");
    }

    #[derive(Default)]
    struct Kept(Option<Ruleset>);

    impl Firewall for Kept {
        fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, FirewallError> {
            self.0 = Some(ruleset.clone());
            Ok(Duration::ZERO)
        }
        fn verify(&mut self, _: &Ruleset) -> Result<(), FirewallError> {
            Ok(())
        }
        fn apply_routes(
            &mut self,
            _: Option<&RoutingLayer>,
        ) -> Result<Option<String>, FirewallError> {
            Ok(None)
        }
    }

    #[test]
    fn tunnel_only_users_are_confined_from_early_boot_when_nothing_else_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let out = |uid| Packet {
            uid: Some(uid),
            ..Packet::output(
                "eth0",
                "192.168.1.10".parse().expect("literal"),
                "203.0.113.10".parse().expect("literal"),
                Transport::udp(4000, 4000),
            )
        };
        // Nobody confined, nothing wanted: nothing installed.
        let mut firewall = Kept::default();
        let decision = run(&store, &Exceptions::default(), false, &mut firewall).expect("left");
        assert!(matches!(decision, Decision::Leave(_)) && firewall.0.is_none());
        // config.toml's user (resolved by the caller) and the CLI's, with the kill switch off.
        let cli = crate::users::TunnelOnlyUser {
            user: "nobody".to_owned(),
            uid: 65534,
        };
        store
            .save(
                &Persisted::new(Settings::default(), Target::Off).with_tunnel_only_users(vec![cli]),
            )
            .expect("save");
        let configured = Exceptions {
            tunnel_only_uids: vec![1001],
            ..Exceptions::default()
        };
        let mut firewall = Kept::default();
        let decision = run(&store, &configured, false, &mut firewall).expect("applied");
        assert!(
            matches!(&decision, Decision::Leave(why) if why.contains("tunnel-only")),
            "{decision:?}"
        );
        let ruleset = firewall.0.expect("the users' table");
        assert!(!ruleset.verdict(&out(65534)).is_accept(), "the CLI's");
        assert!(!ruleset.verdict(&out(1001)).is_accept(), "config.toml's");
        assert!(
            ruleset.verdict(&out(1000)).is_accept(),
            "everyone else is free"
        );
    }

    fn lan(name: &str) -> killswitch_types::InterfaceName {
        name.parse().expect("literal")
    }

    #[test]
    fn router_lans_are_confined_from_early_boot_when_nothing_else_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        // config.toml's lan0 (by name, as main passes it) and the CLI's lan1 and lan0 again.
        store
            .save(
                &Persisted::new(Settings::default(), Target::Off)
                    .with_router_lans(vec![lan("lan1"), lan("lan0")]),
            )
            .expect("save");
        let configured = Exceptions {
            router_lans: vec![killswitch_policy::LocalLink::named(lan("lan0"))],
            ..Exceptions::default()
        };
        let merged = confined(&store.load(), &configured);
        assert_eq!(
            merged.router_lans,
            vec![
                killswitch_policy::LocalLink::named(lan("lan0")),
                killswitch_policy::LocalLink::named(lan("lan1")),
            ],
            "each once, by name only"
        );
        let mut firewall = Kept::default();
        let decision = run(&store, &configured, false, &mut firewall).expect("applied");
        assert!(
            matches!(&decision, Decision::Leave(why) if why.contains("router LANs")),
            "{decision:?}"
        );
        // What went in is the scopes-only compilation with both LANs: nothing of the machine.
        let unlocked = Settings::default();
        assert_eq!(
            firewall.0,
            Some(killswitch_policy::compile_for(
                &PolicyState::Disconnected,
                &unlocked,
                &scopes_only(&merged)
            ))
        );
        assert!(scopes_only(&merged).tunnel_only_uids.is_empty());
        // Without router LANs or users, `off` installs nothing.
        let empty = tempfile::tempdir().expect("tempdir");
        let plain = Store::new(empty.path());
        plain
            .save(&Persisted::new(Settings::default(), Target::Off))
            .expect("save");
        let mut firewall = Kept(None);
        let decision = run(&plain, &Exceptions::default(), false, &mut firewall).expect("left");
        assert!(matches!(decision, Decision::Leave(_)) && firewall.0.is_none());
    }

    #[test]
    fn router_lans_stay_confined_when_boot_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let locked = Settings {
            lockdown: true,
            ..Settings::default()
        };
        store
            .save(
                &Persisted::new(locked, Target::Disconnected).with_router_lans(vec![lan("br-lan")]),
            )
            .expect("save");
        let mut firewall = Kept::default();
        let decision = run(&store, &Exceptions::default(), false, &mut firewall).expect("applied");
        assert!(matches!(decision, Decision::Block(_)), "{decision:?}");
        let blocking = Exceptions {
            router_lans: vec![killswitch_policy::LocalLink::named(lan("br-lan"))],
            ..Exceptions::default()
        };
        assert_eq!(
            firewall.0,
            Some(killswitch_policy::compile_for(
                &PolicyState::Blocked,
                &locked,
                &blocking
            ))
        );
    }

    #[test]
    fn configured_and_added_services_are_reachable_and_interfaces_wait_for_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let added = killswitch_types::Allows {
            interfaces: vec!["tailscale0".parse().expect("literal")],
            inbound: vec!["tcp/2222 on eth0".parse().expect("literal")],
            ..Default::default()
        };
        let settings = Settings {
            lockdown: true,
            allow_lan: false,
            apps_only: false,
        };
        store
            .save(&Persisted::new(settings, Target::Disconnected).with_allows(added))
            .expect("save");
        let configured = killswitch_types::Allows {
            interfaces: vec!["eth0".parse().expect("literal")],
            inbound: vec!["tcp/22 on eth0".parse().expect("literal")],
            ..Default::default()
        };
        let exceptions = Exceptions::default().with_allows(&configured, Vec::new());
        let mut firewall = Kept::default();
        let decision = run(&store, &exceptions, false, &mut firewall).expect("applied");
        assert!(matches!(decision, Decision::Block(_)));
        let ruleset = firewall.0.expect("blocked");
        let ssh = |port| {
            Packet::input(
                "eth0",
                "192.168.1.5".parse().expect("literal"),
                "192.168.1.10".parse().expect("literal"),
                Transport::tcp(40000, port),
            )
            .with_conn(ConnState::New)
        };
        assert!(ruleset.verdict(&ssh(22)).is_accept(), "config.toml's");
        assert!(ruleset.verdict(&ssh(2222)).is_accept(), "the CLI's");
        assert!(!ruleset.verdict(&ssh(23)).is_accept());
        for iface in ["eth0", "tailscale0"] {
            let out = Packet::output(
                iface,
                "192.168.1.10".parse().expect("literal"),
                "203.0.113.10".parse().expect("literal"),
                Transport::udp(4000, 4000),
            );
            assert!(
                !ruleset.verdict(&out).is_accept(),
                "{iface} is not allowed before the daemon"
            );
        }
    }
}
