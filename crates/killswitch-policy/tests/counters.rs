//! Every refusal is counted under a reason, and the refuse chains keep the verdicts the rules had.

mod fixtures;

use killswitch_policy::{
    Chain, Match, Packet, PacketVerdict, PolicyState, RejectWith, Ruleset, Statement, Transport,
    Verdict, compile,
};
use killswitch_types::BlockReason;

fn states() -> Vec<(&'static str, Ruleset)> {
    let mut all = Vec::new();
    for (lockdown, allow_lan) in [(false, false), (true, false), (true, true)] {
        let settings = fixtures::settings(lockdown, allow_lan);
        for (name, state) in [
            ("blocked", PolicyState::Blocked),
            ("connecting", fixtures::connecting()),
            ("connecting+probe", fixtures::connecting_with_probe()),
            ("connected v4", fixtures::connected(false)),
            ("connected dual", fixtures::connected(true)),
        ] {
            all.push((name, compile(&state, &settings)));
        }
    }
    all
}

/// Whether `chain` is one of the refuse chains, which count in their own rules.
fn is_refuse_chain(chain: &Chain) -> bool {
    chain.name.starts_with("refuse-")
}

#[test]
fn every_drop_and_reject_of_the_inet_table_counts_under_a_reason() {
    for (name, ruleset) in states() {
        let table = ruleset
            .table
            .as_ref()
            .expect("these states install a table");
        assert_eq!(table.counters(), BlockReason::ALL.to_vec(), "{name}");
        for chain in &table.chains {
            for rule in &chain.rules {
                let refuses = matches!(rule.verdict, Verdict::Drop | Verdict::Reject(_));
                let counted = rule
                    .statements
                    .iter()
                    .any(|s| matches!(s, Statement::Count(_)));
                // Neighbour discovery naming the tunnel's address on another link is dropped
                // uncounted: it is the kernel's own traffic, not something a user sent.
                let neighbour_guard = rule
                    .matches
                    .iter()
                    .any(|m| matches!(m, Match::Icmpv6Type(_)));
                if refuses && !neighbour_guard {
                    assert!(
                        counted,
                        "{name}: chain {} rule `{rule}` refuses uncounted",
                        chain.name
                    );
                }
                if let Verdict::Jump(target) = &rule.verdict
                    && target.starts_with("refuse-")
                {
                    let called = ruleset.chain(target).expect("the refuse chain exists");
                    assert!(is_refuse_chain(called));
                }
            }
        }
        // Each refuse chain logs first (a rule without a verdict), then decides every packet.
        for reason in BlockReason::ALL {
            let chain = ruleset
                .chain(&format!("refuse-{reason}"))
                .unwrap_or_else(|| panic!("{name}: no refuse chain for {reason}"));
            assert_eq!(chain.rules[0].verdict, Verdict::Continue, "{name} {reason}");
            assert_eq!(chain.rules[0].statements, vec![Statement::Log(reason)]);
            let last = chain.rules.last().expect("rules");
            assert!(
                last.matches.is_empty(),
                "{name} {reason}: the last rule takes all"
            );
            assert!(
                matches!(
                    last.verdict,
                    Verdict::Drop | Verdict::Reject(RejectWith::AdminProhibited)
                ),
                "{name} {reason}"
            );
        }
    }
}

#[test]
fn refused_packets_are_still_rejected_at_once() {
    let ruleset = compile(
        &fixtures::connected(false),
        &fixtures::settings(true, false),
    );
    let udp = |port| Transport::Udp {
        sport: 40000,
        dport: port,
    };
    let cases = [
        // Out of the physical interface: non-tunnel.
        (
            fixtures::ip("192.168.1.2"),
            fixtures::ip("203.0.113.10"),
            udp(9),
        ),
        // DNS to a public resolver.
        (
            fixtures::ip("192.168.1.2"),
            fixtures::ip("192.0.2.53"),
            udp(53),
        ),
        // IPv6 around an IPv4-only tunnel.
        (fixtures::ip("fd00::2"), fixtures::ip("2001:db8::1"), udp(9)),
    ];
    for (src, dst, transport) in cases {
        let packet = Packet::output("eth0", src, dst, transport);
        assert_eq!(
            ruleset.decide(&packet).verdict,
            PacketVerdict::Reject(RejectWith::AdminProhibited),
            "{dst}"
        );
    }
}
