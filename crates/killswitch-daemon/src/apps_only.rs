//! Apps-only: protect only the scopes (`killswitch exec` programs, tunnel-only users), never the
//! machine itself.
//!
//! The setting comes from two places, as tunnel-only users do: `apps_only = true` in config.toml
//! (the file's to change) and `killswitch apps-only on|off` (kept in the settings file). It is in
//! force when either says so. While it is, the policy compiles the scopes-only table in every
//! state and routes only the scopes into the tunnel (`killswitch_policy::scopes_table`,
//! `routes::compile_routes_for`), and `up` leaves the system's resolvers alone.
//!
//! How it meets the other two machine-wide settings (pure decisions, unit-tested here):
//!
//! - **lockdown** protects the machine while no tunnel is connected; apps-only says the machine is
//!   not to be protected. The two contradict each other, so each is refused while the other is
//!   on (`lockdown on` with apps-only on, `apps-only on` with lockdown on), with a message that
//!   says which to switch off first. Where config.toml turns apps-only on under a settings file
//!   with lockdown on, apps-only wins (the file is the administrator's), and `status` says
//!   lockdown is not in force.
//! - **allow-lan** opens the LAN outside the tunnel; with apps-only the machine reaches the LAN
//!   anyway and the scopes never do, so it changes nothing. It is accepted (it applies again once
//!   apps-only is off) and the CLI says so.
//! - A **fault** (a broken config.toml, an unusable settings file) blocks the whole machine as
//!   always: the daemon cannot know what the administrator wanted, apps-only included.

use killswitch_types::Settings;
use killswitch_types::ipc::{ErrorKind, IpcError};

/// Whether apps-only is in force: the settings file's (`killswitch apps-only on`) or
/// config.toml's (`config`).
pub fn in_force(settings: &Settings, config: bool) -> bool {
    settings.apps_only || config
}

/// The settings the policy compiles: apps-only as in force (never while a fault blocks
/// everything), and then without lockdown, which apps-only overrules.
pub fn policy_settings(settings: Settings, config: bool, faulty: bool) -> Settings {
    let apps_only = in_force(&settings, config) && !faulty;
    Settings {
        apps_only,
        lockdown: settings.lockdown && !apps_only,
        ..settings
    }
}

/// Checks `apps-only on|off` against the settings and config.toml: refused while lockdown is on
/// (switching it on), and while config.toml holds it on (switching it off). Nothing changes
/// then.
pub fn check_switch(enabled: bool, settings: &Settings, config: bool) -> Result<(), IpcError> {
    if enabled && settings.lockdown {
        return Err(IpcError::new(
            ErrorKind::BadRequest,
            "lockdown is on, and apps-only would leave this machine's own traffic unprotected: \
             switch lockdown off first (`killswitch lockdown off`); nothing was changed",
        ));
    }
    if !enabled && config {
        return Err(IpcError::new(
            ErrorKind::BadRequest,
            "apps_only = true in the daemon's config.toml: change it there and reload the daemon; \
             nothing was changed",
        ));
    }
    Ok(())
}

/// Checks `lockdown on` against apps-only: refused while apps-only is in force. `lockdown off`
/// is always accepted.
pub fn check_lockdown(enabled: bool, settings: &Settings, config: bool) -> Result<(), IpcError> {
    if enabled && in_force(settings, config) {
        let how = if settings.apps_only {
            "switch apps-only off first (`killswitch apps-only off`)"
        } else {
            "apps_only = true in the daemon's config.toml: change it there first"
        };
        return Err(IpcError::new(
            ErrorKind::BadRequest,
            format!(
                "apps-only is on: this machine's own traffic is deliberately not protected, so \
                 lockdown would arm nothing; {how}; nothing was changed"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lockdown: bool, apps_only: bool) -> Settings {
        Settings {
            lockdown,
            allow_lan: true,
            apps_only,
        }
    }

    #[test]
    fn either_source_switches_it_on_and_a_fault_switches_it_off() {
        assert!(!in_force(&settings(false, false), false));
        assert!(in_force(&settings(false, true), false));
        assert!(in_force(&settings(false, false), true));
        let compiled = policy_settings(settings(false, false), true, false);
        assert!(compiled.apps_only && compiled.allow_lan);
        assert!(!policy_settings(settings(false, true), true, true).apps_only);
    }

    #[test]
    fn apps_only_overrules_lockdown_in_the_policy() {
        let compiled = policy_settings(settings(true, false), true, false);
        assert!(compiled.apps_only && !compiled.lockdown);
        // A fault keeps lockdown as it is (and blocks anyway).
        let faulty = policy_settings(settings(true, false), true, true);
        assert!(!faulty.apps_only && faulty.lockdown);
    }

    #[test]
    fn contradictions_are_refused_with_the_way_out() {
        let err = check_switch(true, &settings(true, false), false).expect_err("lockdown on");
        assert!(err.message.contains("killswitch lockdown off"), "{err}");
        let err = check_switch(false, &settings(false, false), true).expect_err("config");
        assert!(err.message.contains("config.toml"), "{err}");
        assert!(check_switch(true, &settings(false, false), false).is_ok());
        assert!(check_switch(false, &settings(false, true), false).is_ok());

        let err = check_lockdown(true, &settings(false, true), false).expect_err("apps-only");
        assert!(err.message.contains("killswitch apps-only off"), "{err}");
        let err = check_lockdown(true, &settings(false, false), true).expect_err("config");
        assert!(err.message.contains("config.toml"), "{err}");
        assert!(check_lockdown(false, &settings(false, true), true).is_ok());
        assert!(check_lockdown(true, &settings(false, false), false).is_ok());
    }
}
