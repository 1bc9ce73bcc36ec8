//! `killswitchd --early-boot`: block before the network comes up, from the persisted settings.
//!
//! Run by a oneshot unit ordered before `network-pre.target`, long before the daemon proper. If the
//! user had lockdown on, or was protecting a tunnel, the machine must not get a moment of network
//! without the kill switch: this installs the blocking rules (both layers) and exits. The daemon,
//! when it starts, replaces them in one transaction with whatever the state calls for. When in
//! doubt (the settings cannot be read), it blocks and says why.

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
/// works from the first moment, as the daemon would). Returns the decision, or why applying it
/// failed.
pub fn run(
    store: &Store,
    exceptions: &killswitch_policy::Exceptions,
    firewall: &mut impl Firewall,
) -> Result<Decision, String> {
    let loaded = store.load();
    let (decision, settings) = decide(&loaded);
    if let Decision::Block(_) = &decision {
        // The exceptions the CLI added count too (config.toml's are in `exceptions`).
        let mut exceptions = exceptions.clone();
        if let Loaded::Found(persisted) = &loaded {
            let from_config = killswitch_types::Allows {
                interfaces: exceptions
                    .interfaces
                    .iter()
                    .map(|l| l.interface.clone())
                    .collect(),
                subnets: exceptions.subnets.clone(),
                inbound: exceptions.inbound.clone(),
            };
            exceptions = exceptions.with_allows(&from_config.merged(&persisted.allows), Vec::new());
        }
        firewall.apply(&compile_for(&PolicyState::Blocked, &settings, &exceptions))?;
        firewall.apply_routes(
            compile_routes_for(&PolicyState::Blocked, &settings, &exceptions, &[]).as_ref(),
        )?;
    }
    Ok(decision)
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
            },
            target,
        ))
    }

    fn guard() -> Target {
        Target::Guard(GuardSpec {
            interface: "wg0".parse().expect("literal"),
            endpoint: "198.51.100.1:51820".parse().expect("literal"),
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
    fn keeps_the_lan_setting() {
        assert!(decide(&found(true, Target::Disconnected)).1.allow_lan);
    }
}
