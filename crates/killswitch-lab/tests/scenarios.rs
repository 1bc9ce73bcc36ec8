//! The leak scenarios as tests, each named after what it guards. They run one at a time (each
//! offers 1,500 packets/s and runs two WireGuard processes; in parallel on two cores they would
//! measure the machine, not the kill switch).

use killswitch_lab::generator::DEFAULT_RATE;
use killswitch_lab::netns::require_root;
use killswitch_lab::report::LabReport;
use killswitch_lab::scenarios::{self, Verdict};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenario_passes(name: &str) {
    if !require_root(name) {
        return;
    }
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scenario = scenarios::find(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let report = scenarios::run(scenario, DEFAULT_RATE);
    let verdict = report.verdict;
    let rendered = LabReport::new(DEFAULT_RATE, vec![report], true, 0).render();
    eprintln!("{rendered}");
    assert_eq!(
        verdict,
        Verdict::Pass,
        "scenario {name} did not pass:\n{rendered}"
    );
}

#[test]
fn connecting_leaks_nothing_before_the_tunnel_is_up() {
    scenario_passes("connect");
}

#[test]
fn killing_the_vpn_process_leaks_nothing() {
    scenario_passes("kill-vpn");
}

#[test]
fn yanking_the_network_leaks_nothing() {
    scenario_passes("yank-network");
}

#[test]
fn sleep_and_wake_leak_nothing() {
    scenario_passes("sleep-wake");
}

#[test]
fn killing_the_daemon_leaks_nothing() {
    scenario_passes("kill-daemon");
}

#[test]
fn dns_goes_only_to_the_tunnel_resolver() {
    scenario_passes("dns");
}

#[test]
fn ipv6_cannot_bypass_a_v4_only_tunnel() {
    scenario_passes("ipv6");
}

#[test]
fn disconnect_blocks_under_lockdown_and_is_the_users_choice_without() {
    scenario_passes("disconnect");
}

#[test]
fn restarting_the_daemon_opens_no_window() {
    scenario_passes("restart");
}

#[test]
fn arp_for_the_tunnel_address_is_not_answered_on_the_lan() {
    scenario_passes("arp");
}

#[test]
fn tampering_with_the_table_is_reverted_and_leaks_nothing() {
    scenario_passes("tamper");
}

#[test]
fn up_fails_over_to_the_next_server_without_leaking() {
    scenario_passes("up-failover");
}

#[test]
fn every_scenario_has_a_test() {
    let source = include_str!("scenarios.rs");
    for scenario in scenarios::ALL {
        assert!(
            source.contains(&format!("scenario_passes(\"{}\")", scenario.name)),
            "no test for {}",
            scenario.name
        );
    }
}

#[test]
fn up_manages_resolv_conf_and_gives_it_back_after_down_and_crash() {
    scenario_passes("up-dns");
}

#[test]
fn lockdown_after_off_blocks() {
    scenario_passes("lockdown-after-off");
}

#[test]
fn stopping_the_daemon_after_up_takes_under_a_second() {
    scenario_passes("stop-after-up");
}

#[test]
fn a_second_daemon_touches_nothing() {
    scenario_passes("second-daemon");
}

#[test]
fn another_firewalls_flushes_leak_nothing_from_bound_sockets() {
    scenario_passes("flush-by-other-firewall");
}

#[test]
fn container_bridges_work_locally_and_reach_out_only_through_the_tunnel() {
    scenario_passes("containers");
}

#[test]
fn an_allowed_interface_works_both_ways_and_nothing_else_leaves() {
    scenario_passes("tailscale-like");
}

#[test]
fn ssh_from_the_lan_works_while_blocked_and_only_for_its_own_flows() {
    scenario_passes("ssh-inbound");
}

#[test]
fn firewalld_filters_and_its_reloads_leak_nothing() {
    scenario_passes("firewalld");
}

#[test]
fn ufw_filters_and_its_reloads_leak_nothing() {
    scenario_passes("ufw");
}

#[test]
fn readmes_wg_quick_quickstart_protects_as_typed() {
    scenario_passes("quickstart-wg-quick");
}

#[test]
fn readmes_openvpn_quickstart_protects_as_typed() {
    scenario_passes("quickstart-openvpn");
}

#[test]
fn reloading_a_bad_config_keeps_the_running_one_and_a_good_one_applies_without_a_window() {
    scenario_passes("reload");
}

#[test]
fn verify_passes_when_protected_and_names_a_removed_table_an_ipv6_leak_and_lan_dns() {
    scenario_passes("verify");
}

#[test]
fn guard_with_only_the_interface_finds_the_rest_and_an_ovpn_opens_exactly_its_remotes() {
    scenario_passes("guard-discover");
}

#[test]
fn refusals_are_counted_per_reason_and_named_with_their_sender() {
    scenario_passes("counters");
}

#[test]
fn a_bypassed_program_goes_around_the_tunnel_and_nothing_else_does() {
    scenario_passes("bypass");
}

#[test]
fn a_tunnel_only_user_never_leaks_even_while_the_machine_is_disconnected() {
    scenario_passes("tunnel-only-user");
}

#[test]
fn an_exec_program_reaches_only_the_tunnel_and_fails_at_once_without_it() {
    scenario_passes("exec-fail-closed");
}

#[test]
fn an_exec_program_is_confined_under_guard_over_openvpn() {
    scenario_passes("exec-openvpn");
}

#[test]
fn any_user_may_exec_within_a_limit_and_nothing_of_it_remains() {
    scenario_passes("exec-unprivileged");
}

#[test]
fn apps_only_leaves_the_machine_direct_and_the_tunnel_only_user_in_the_tunnel_or_nowhere() {
    scenario_passes("apps-only");
}

#[test]
fn programs_listed_for_freeze_on_drop_stop_within_100_ms_of_the_tunnels_loss() {
    scenario_passes("freeze-on-drop");
}

#[test]
fn router_mode_protects_the_lan_clients() {
    scenario_passes("router");
}

#[test]
fn router_port_shadowing_cve_2021_3773_is_blocked() {
    scenario_passes("router-shadowing");
}

#[test]
fn router_spoofed_lan_sources_go_nowhere() {
    scenario_passes("router-spoof");
}

#[test]
fn applications_sharing_the_containers_network_reach_the_world_only_through_its_tunnel() {
    scenario_passes("container-shared");
}
