//! Level 2 of the model-based tester, small, so that its harness cannot rot: a few short random
//! sequences against the real daemon in lab namespaces (root; under `CI=true` a missing privilege
//! fails instead of skipping). The full run is `killswitch-lab model --sequences 30 --steps 15`.

use killswitch_lab::model::{self, LabOptions};
use killswitch_lab::netns::require_root;
use killswitch_model::runner::Options;
use std::time::Duration;

#[test]
fn short_random_sequences_hold_against_the_real_daemon() {
    if !require_root("short_random_sequences_hold_against_the_real_daemon") {
        return;
    }
    let report = model::run_lab(LabOptions {
        run: Options {
            sequences: 3,
            steps: 6,
            seed: 1,
            shrink_iterations: 50,
        },
        servers: 3,
        shrink_budget: Duration::from_secs(120),
        progress: true,
    });
    let rendered = report.render();
    eprintln!("{rendered}");
    assert!(report.passed, "level 2 failed:\n{rendered}");
    assert_eq!(report.sequences_run, Some(3), "{rendered}");
}

#[test]
fn level_one_runs_through_the_same_runner() {
    // No root needed: the daemon's core with fake backends.
    let report = model::run_sim(Options {
        sequences: 20,
        steps: 10,
        seed: 1,
        shrink_iterations: 500,
    });
    assert!(report.passed, "level 1 failed:\n{}", report.render());
}

#[test]
fn a_router_lan_goes_through_the_tunnel_or_nowhere_against_the_real_daemon() {
    // Router mode at level 2 in one fixed sequence, so that it is exercised whatever the seeds
    // draw: the LAN client's traffic arrives through the tunnel while one is connected, never
    // shows on the physical link, and the LAN stays confined through `off` and a crash.
    use killswitch_model::{Step, UserStep, WorldStep};
    if !require_root("a_router_lan_goes_through_the_tunnel_or_nowhere_against_the_real_daemon") {
        return;
    }
    let mut world = model::world::World::build(2).expect("the lab");
    let steps = [
        Step::User(UserStep::Router(true)),
        Step::User(UserStep::Up { servers: 2 }),
        Step::World(WorldStep::ServerDown(0)),
        Step::User(UserStep::Lockdown(true)),
        Step::User(UserStep::Guard),
        Step::World(WorldStep::TunnelGone),
        Step::User(UserStep::Off),
        Step::User(UserStep::Crash),
        Step::World(WorldStep::TunnelBack),
        Step::User(UserStep::AppsOnly(true)),
        Step::User(UserStep::Guard),
        Step::User(UserStep::Router(false)),
        Step::User(UserStep::Router(false)),
    ];
    let mut timings = model::sequence::Timings::new();
    if let Err(e) = model::sequence::run(&mut world, &steps, &mut timings) {
        panic!("{e:?}");
    }
}
