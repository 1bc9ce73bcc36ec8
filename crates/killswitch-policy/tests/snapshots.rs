//! The compiled ruleset of every state, rendered in nft syntax and pinned with insta. A change to
//! what any state allows shows up here as a reviewable diff.

mod fixtures;

use fixtures::*;
use killswitch_policy::{PolicyState, compile};

fn render(state: &PolicyState, lockdown: bool, allow_lan: bool) -> String {
    compile(state, &settings(lockdown, allow_lan)).to_string()
}

#[test]
fn off() {
    insta::assert_snapshot!(render(&PolicyState::Off, true, true));
}

#[test]
fn disconnected_unlocked() {
    insta::assert_snapshot!(render(&PolicyState::Disconnected, false, true));
}

#[test]
fn blocked() {
    insta::assert_snapshot!(render(&PolicyState::Blocked, false, false));
}

#[test]
fn blocked_allow_lan() {
    insta::assert_snapshot!(render(&PolicyState::Blocked, false, true));
}

#[test]
fn connecting() {
    insta::assert_snapshot!(render(&fixtures::connecting(), false, false));
}

#[test]
fn connected_v4_only() {
    insta::assert_snapshot!(render(&fixtures::connected(false), false, false));
}

#[test]
fn connected_dual_stack_allow_lan() {
    insta::assert_snapshot!(render(&fixtures::connected(true), false, true));
}

#[test]
fn connecting_with_probe() {
    insta::assert_snapshot!(render(&fixtures::connecting_with_probe(), false, false));
}
