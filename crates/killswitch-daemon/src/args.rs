//! What `killswitchd` accepts on its command line, and the exit statuses `--help` and the man page
//! list.
//!
//! In the library rather than in `main.rs` so that `killswitch-docgen` renders the man page and
//! the shell completions from these very definitions. Every doc comment on them is user-facing
//! text: the first paragraph is the short help (`-h`, the man page's NAME line), the whole the long
//! help (`--help`, the man page).

use crate::config::DEFAULT_PATH as DEFAULT_CONFIG;
use crate::store::DEFAULT_STATE_DIR;
use clap::{Parser, ValueHint};
use std::path::PathBuf;

/// The exit statuses of `killswitchd` and what each means.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "the daemon stopped on SIGTERM or SIGINT (leaving its rules in place), --early-boot or --teardown did their work, or --check-config found the file valid",
    ),
    (
        1,
        "the daemon could not start (another one runs for this network namespace or state directory, the socket cannot be made), --early-boot could not block, --teardown could not ask a running daemon, or --check-config found the file invalid (or, when it names none, the default file unreadable)",
    ),
    (
        2,
        "the command line was invalid, or names a file that does not exist or cannot be read (--check-config FILE), as for `killswitch`",
    ),
];

/// The text after `--help`: the exit statuses, from the table above.
fn after_help() -> String {
    let mut text = String::from("Exit status:\n");
    for (code, meaning) in EXIT_STATUS {
        text.push_str(&format!("  {code}  {meaning}\n"));
    }
    text.pop();
    text
}

/// The killswitch daemon: keeps a kernel-enforced VPN kill switch (nftables) in place.
///
/// It owns table `inet killswitch`, installs it in one atomic transaction on every change, and
/// leaves it in place when it stops or crashes: protection never depends on this process being
/// alive. Clients (`killswitch`) talk to it over a Unix socket; anyone may read the status, only
/// root and members of the admin group may change anything.
///
/// It runs as root (its systemd unit keeps only CAP_NET_ADMIN), normally as killswitchd.service,
/// with killswitch-early.service running `killswitchd --early-boot` before the network comes up.
/// One daemon runs per network namespace and state directory; a second one refuses to start and
/// changes nothing.
#[derive(Debug, Parser)]
#[command(
    name = "killswitchd",
    version = killswitch_types::PRODUCT_VERSION,
    after_help = after_help(),
)]
pub struct Args {
    /// Configuration file (TOML). A missing file means the defaults.
    ///
    /// A file that cannot be parsed makes the daemon start blocked, with the error in `status`.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The IPC socket to listen on.
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath, env = "KILLSWITCH_SOCKET", default_value = killswitch_types::ipc::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Where the settings and the last requested state are kept.
    ///
    /// Also the lock that keeps a second daemon out, and the backup of resolv.conf while the
    /// daemon manages it.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Apply the blocking rules if the saved settings call for it, then exit.
    ///
    /// The settings call for it when lockdown is on, or a tunnel was protected, or they cannot be
    /// read. For a unit that runs before the network comes up; the daemon takes over when it
    /// starts. A running daemon's rules are left alone.
    #[arg(long, conflicts_with = "teardown")]
    pub early_boot: bool,
    /// Switch the kill switch off and exit.
    ///
    /// If a daemon runs, it is asked to switch off through its socket (as `killswitch off` does);
    /// if it cannot be asked, nothing is changed and the exit status is 1. With no daemon running, the resolver configuration the daemon
    /// saved is restored, interfaces a crashed daemon left are removed, and both layers of rules
    /// go. The saved settings stay as they are: a daemon started later resumes them. For package
    /// removal and `make uninstall`.
    #[arg(long)]
    pub teardown: bool,
    /// Check a configuration file (by default the one --config names) and exit.
    ///
    /// Prints `FILE: valid` and exits 0, or prints the problem on one line (`FILE: line L, column
    /// C: what`) and exits 1: the same judgement the daemon makes at start, without starting it.
    /// A file given here that does not exist or cannot be read exits 2, as a missing file does
    /// everywhere in killswitch; the default file missing is no error (the defaults apply).
    #[arg(
        long,
        value_name = "FILE",
        num_args = 0..=1,
        value_hint = ValueHint::FilePath,
        conflicts_with_all = ["early_boot", "teardown"]
    )]
    pub check_config: Option<Option<PathBuf>>,
    /// Never own the tables, as on a kernel without nf_tables' `persist` flag: for the tests of
    /// that fallback. Not for use: it lets other programs flush the rules.
    #[arg(long, hide = true)]
    pub test_unowned_tables: bool,
    /// Do not watch for other programs' nf_tables changes, so that a change to the rules stays
    /// until the next apply: for the lab's `verify` scenario, which must see a tampered table
    /// stay tampered. Not for use: it turns off the restore of tampered rules.
    #[arg(long, hide = true)]
    pub test_no_tamper_watch: bool,
}

/// The whole command line as clap sees it, for the man page and the completions.
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definitions_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_visible_argument_has_help() {
        for arg in command().get_arguments().filter(|a| !a.is_hide_set()) {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }

    #[test]
    fn version_names_the_product() {
        let cmd = command();
        assert_eq!(cmd.get_name(), "killswitchd");
        assert_eq!(cmd.get_version(), Some(killswitch_types::PRODUCT_VERSION));
    }
}
