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

/// Tunnel-only users (uids 1001 and 65534) in a state without a table of its own, and while
/// connected: their jump, their chain.
fn render_with_users(state: &PolicyState, lockdown: bool, allow_lan: bool) -> String {
    let exceptions = killswitch_policy::Exceptions {
        tunnel_only_uids: vec![65534, 1001],
        ..killswitch_policy::Exceptions::default()
    };
    killswitch_policy::compile_for(state, &settings(lockdown, allow_lan), &exceptions).to_string()
}

#[test]
fn off_with_tunnel_only_users() {
    insta::assert_snapshot!(render_with_users(&PolicyState::Off, false, false));
}

#[test]
fn connected_dual_stack_with_tunnel_only_users() {
    insta::assert_snapshot!(render_with_users(&fixtures::connected(true), false, true));
}

/// One `killswitch exec` namespace (ksx0, 198.18.0.0/30) in a state without a table of its own,
/// and while connected: its rules first in each chain, the prerouting refusal, the masquerade.
fn render_with_exec(state: &PolicyState) -> String {
    let exceptions = killswitch_policy::Exceptions {
        exec_scopes: vec![killswitch_policy::ExecScope {
            interface: killswitch_types::InterfaceName::new("ksx0").expect("literal"),
            subnet: "198.18.0.0/30".parse().expect("literal"),
        }],
        ..killswitch_policy::Exceptions::default()
    };
    killswitch_policy::compile_for(state, &settings(false, false), &exceptions).to_string()
}

#[test]
fn off_with_an_exec_namespace() {
    insta::assert_snapshot!(render_with_exec(&PolicyState::Off));
}

#[test]
fn connected_v4_only_with_an_exec_namespace() {
    insta::assert_snapshot!(render_with_exec(&fixtures::connected(false)));
}

/// A bypassed program (its cgroup at depth 3, id 4242) while connected, with a tunnel-only user:
/// the user's jump first, the tunnel's address guards, then the bypass accept, ahead of DNS.
#[test]
fn connected_with_a_bypassed_program() {
    let exceptions = killswitch_policy::Exceptions {
        tunnel_only_uids: vec![65534],
        bypass: Some(killswitch_policy::BypassScope { level: 3, id: 4242 }),
        ..killswitch_policy::Exceptions::default()
    };
    insta::assert_snapshot!(
        killswitch_policy::compile_for(
            &fixtures::connected(false),
            &settings(false, false),
            &exceptions
        )
        .to_string()
    );
}

/// Apps-only: the scopes-only table in place of the machine-wide one, receiving the connected
/// tunnel (its DNS, then the tunnel, then the refusals), lockdown and allow-lan on and ignored.
#[test]
fn apps_only_connected_dual_stack_with_tunnel_only_users() {
    let exceptions = killswitch_policy::Exceptions {
        tunnel_only_uids: vec![65534, 1001],
        ..killswitch_policy::Exceptions::default()
    };
    let settings = killswitch_policy::Settings {
        apps_only: true,
        ..settings(true, true)
    };
    insta::assert_snapshot!(
        killswitch_policy::compile_for(&fixtures::connected(true), &settings, &exceptions)
            .to_string()
    );
}

/// One router LAN (lan0: 192.168.50.0/24 and fd50::/64) beside one exec namespace: the LAN's
/// forward rules ahead of exec's, the spoof guard, the DNS translation, the masquerade and the
/// MSS clamp (connected), or the refusals alone (no table of the machine's own).
fn render_with_router(state: &PolicyState, apps_only: bool) -> String {
    let exceptions = killswitch_policy::Exceptions {
        exec_scopes: vec![killswitch_policy::ExecScope {
            interface: killswitch_types::InterfaceName::new("ksx0").expect("literal"),
            subnet: "198.18.0.0/30".parse().expect("literal"),
        }],
        router_lans: vec![killswitch_policy::LocalLink {
            interface: killswitch_types::InterfaceName::new("lan0").expect("literal"),
            networks: vec![
                "192.168.50.1/24".parse().expect("literal"),
                "fd50::1/64".parse().expect("literal"),
            ],
        }],
        ..killswitch_policy::Exceptions::default()
    };
    let settings = killswitch_policy::Settings {
        apps_only,
        ..settings(false, false)
    };
    killswitch_policy::compile_for(state, &settings, &exceptions).to_string()
}

#[test]
fn off_with_a_router_lan() {
    insta::assert_snapshot!(render_with_router(&PolicyState::Off, false));
}

#[test]
fn connected_dual_stack_with_a_router_lan() {
    insta::assert_snapshot!(render_with_router(&fixtures::connected(true), false));
}

#[test]
fn apps_only_connected_v4_only_with_a_router_lan() {
    insta::assert_snapshot!(render_with_router(&fixtures::connected(false), true));
}
