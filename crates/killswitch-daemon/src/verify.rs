//! `killswitch verify`, the daemon's half: reads what the kernel holds now and compares it with
//! what the daemon means it to hold.
//!
//! The state machine knows the intent (the ruleset of its last verified apply and the routing
//! layer it last meant); this module does the reading, on fresh netlink sockets that change
//! nothing, and turns the comparison into a [`RulesCheck`]: a digest of each side (for people to
//! compare at a glance), whether they match (compared in full, not by digest), the first
//! difference, and whether every rule of the routing layer is in place. The CLI adds what only it
//! can see: whether packets of the calling user would be refused (its probes).
//!
//! Anyone may ask, so a reading must stay cheap: it is two netlink dumps of our own tables and one
//! of the policy rules (about a millisecond), and the IPC server spaces readings at least
//! [`MIN_INTERVAL`] apart whoever asks (see [`crate::ipc`]).

use killswitch_policy::routes::{RoutingLayer, RoutingRule, TableRoute};
use killswitch_policy::{IpFamily, Ruleset};
use killswitch_types::ipc::{FlushProtection, RulesCheck};
use std::time::Duration;

/// The least time between two readings of the kernel for `verify`: a local user asking in a loop
/// gets at most this many readings a second, each in turn.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Reads the kernel and compares it with `intent` (the ruleset the daemon last applied and
/// verified) and `routes` (the routing layer it means to hold). `protection` says whether the
/// daemon owns its tables, which decides the flags they are expected to carry.
pub fn check(
    intent: Option<&Ruleset>,
    routes: Option<&RoutingLayer>,
    protection: Option<FlushProtection>,
) -> RulesCheck {
    let mut check = RulesCheck::default();
    compare_tables(&mut check, intent, protection);
    let (in_place, detail) = match killswitch_route::Routing::open().and_then(|mut r| r.installed())
    {
        Ok(installed) => {
            let unreachable: Vec<IpFamily> = installed
                .routes
                .iter()
                .filter_map(|r| match r {
                    killswitch_route::InstalledRoute::Unreachable(family) => Some(*family),
                    _ => None,
                })
                .collect();
            compare_routing(routes, &installed.rules, &unreachable, &installed.foreign)
        }
        Err(e) => (
            false,
            Some(format!(
                "cannot read the routing layer: {}",
                crate::firewall::chain(&e)
            )),
        ),
    };
    check.routing_wanted = routes.is_some();
    check.routing_in_place = in_place;
    check.routing_detail = detail;
    check
}

/// Fills the table half of `check`.
fn compare_tables(
    check: &mut RulesCheck,
    intent: Option<&Ruleset>,
    protection: Option<FlushProtection>,
) {
    let Some(intent) = intent else {
        check.difference = Some(
            "the daemon has no verified rules to compare with (its last apply failed; see `killswitch status`)"
                .to_owned(),
        );
        return;
    };
    let ownership = match protection {
        Some(FlushProtection::Kernel) => killswitch_nft::Ownership::Owned,
        _ => killswitch_nft::Ownership::Shared,
    };
    let read = killswitch_nft::Nftables::open_with(ownership)
        .and_then(|mut nft| nft.intended_and_installed(intent));
    match read {
        Ok((expected, actual)) => {
            check.intent_digest = expected.digest();
            check.kernel_digest = actual.digest();
            match killswitch_nft::compare_installed(&expected, &actual) {
                Ok(()) => check.matches = true,
                Err(difference) => check.difference = Some(difference),
            }
        }
        Err(e) => {
            check.difference = Some(format!(
                "cannot read the kernel's tables: {}",
                crate::firewall::chain(&e)
            ));
        }
    }
}

/// Whether the kernel holds every rule of `wanted` (its own rules `installed`, the families
/// whose `unreachable default` is in its table `unreachable`), and what is missing or in the way
/// (`foreign`: other programs' entries at its priorities or in its table).
fn compare_routing(
    wanted: Option<&RoutingLayer>,
    installed: &[RoutingRule],
    unreachable: &[IpFamily],
    foreign: &[String],
) -> (bool, Option<String>) {
    let Some(wanted) = wanted else {
        // None is meant: whatever is there is not ours to judge here (`status` says more).
        return (true, None);
    };
    let mut missing: Vec<String> = wanted
        .rules
        .iter()
        .filter(|rule| !installed.contains(rule))
        .map(|rule| {
            format!(
                "rule at priority {} ({})",
                rule.priority,
                family(rule.family)
            )
        })
        .collect();
    missing.extend(wanted.routes.iter().filter_map(|route| match route {
        TableRoute::Unreachable(f) if !unreachable.contains(f) => {
            Some(format!("the `unreachable default` route ({})", family(*f)))
        }
        _ => None,
    }));
    let mut detail = Vec::new();
    if !missing.is_empty() {
        detail.push(format!("missing: {}", missing.join(", ")));
    }
    if !foreign.is_empty() {
        detail.push(format!(
            "other programs' entries at its priorities or in its table: {}",
            foreign.join("; ")
        ));
    }
    (
        missing.is_empty(),
        (!detail.is_empty()).then(|| detail.join("; ")),
    )
}

fn family(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_policy::routes::Selector;

    fn rule(family: IpFamily, priority: u32) -> RoutingRule {
        RoutingRule {
            family,
            priority,
            selector: Selector::All,
            invert: false,
            table: 27507,
        }
    }

    fn layer() -> RoutingLayer {
        RoutingLayer {
            rules: vec![rule(IpFamily::V4, 5302), rule(IpFamily::V6, 5302)],
            routes: vec![
                TableRoute::Unreachable(IpFamily::V4),
                TableRoute::Unreachable(IpFamily::V6),
            ],
        }
    }

    #[test]
    fn a_complete_layer_is_in_place() {
        let installed = layer().rules;
        assert_eq!(
            compare_routing(
                Some(&layer()),
                &installed,
                &[IpFamily::V4, IpFamily::V6],
                &[]
            ),
            (true, None)
        );
    }

    #[test]
    fn a_missing_rule_or_route_is_named() {
        let (in_place, detail) = compare_routing(
            Some(&layer()),
            &[rule(IpFamily::V4, 5302)],
            &[IpFamily::V4],
            &[],
        );
        assert!(!in_place);
        let detail = detail.expect("says what is missing");
        assert!(
            detail.contains("priority 5302 (IPv6)") && detail.contains("unreachable default"),
            "{detail}"
        );
    }

    #[test]
    fn foreign_entries_are_named_but_do_not_fail_the_layer() {
        let (in_place, detail) = compare_routing(
            Some(&layer()),
            &layer().rules,
            &[IpFamily::V4, IpFamily::V6],
            &["rule 5302 lookup main (protocol 4)".to_owned()],
        );
        assert!(in_place);
        assert!(detail.expect("named").contains("lookup main"));
    }

    #[test]
    fn no_layer_meant_is_nothing_to_miss() {
        assert_eq!(compare_routing(None, &[], &[], &[]), (true, None));
    }

    #[test]
    fn no_verified_rules_is_a_difference_not_a_match() {
        let mut check = RulesCheck::default();
        compare_tables(&mut check, None, None);
        assert!(!check.matches);
        assert!(
            check
                .difference
                .expect("says why")
                .contains("no verified rules")
        );
    }
}
