//! Shell completions, from the same clap definitions as `--help`.
//!
//! clap_complete's static scripts: they know every command, option and fixed value (`on`/`off`),
//! and complete paths where an option takes one (`--config`, `up CONFIG`). They do not run the
//! binary, so completing never talks to the daemon.

use clap_complete::aot::{Shell, generate};
use std::path::PathBuf;

/// The shells completions are made for: the three Debian ships completion directories for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The programs completions are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `killswitch`, the CLI.
    Cli,
    /// `killswitchd`, the daemon.
    Daemon,
}

impl Program {
    /// Both programs.
    pub const ALL: [Program; 2] = [Program::Cli, Program::Daemon];

    /// The program's name, as typed.
    pub fn name(self) -> &'static str {
        match self {
            Program::Cli => "killswitch",
            Program::Daemon => "killswitchd",
        }
    }

    /// Its command line.
    pub fn command(self) -> clap::Command {
        match self {
            Program::Cli => killswitch_cli::args::command(),
            Program::Daemon => killswitch_daemon::args::command(),
        }
    }

    /// Its command line as completions offer it: without hidden options, which clap_complete
    /// would offer like any other (the daemon's `--test-unowned-tables` is for tests only).
    /// clap cannot remove an argument, so the command is made again from the visible ones; the
    /// programs' top levels have no settings the scripts use but the name, the version and the
    /// about line.
    fn completed(self) -> clap::Command {
        let full = self.command();
        if !full.get_arguments().any(clap::Arg::is_hide_set) {
            return full;
        }
        // Subcommands would lose their parent's global options here; neither program has both.
        debug_assert!(!full.has_subcommands());
        let mut visible = clap::Command::new(self.name())
            .version(killswitch_types::PRODUCT_VERSION)
            .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned());
        if let Some(about) = full.get_about() {
            visible = visible.about(about.clone());
        }
        visible
    }
}

/// Where a completion script goes, relative to `/usr/share`: the directories each shell reads
/// completions from without any configuration (bash-completion loads them on demand by name,
/// zsh's vendor directory is on Debian's default `fpath`, fish reads its vendor directory).
///
/// # Panics
///
/// For a shell not in [`SHELLS`].
pub fn path(shell: Shell, program: &str) -> PathBuf {
    match shell {
        Shell::Bash => format!("bash-completion/completions/{program}"),
        Shell::Zsh => format!("zsh/vendor-completions/_{program}"),
        Shell::Fish => format!("fish/vendor_completions.d/{program}.fish"),
        other => unreachable!("no completion directory for {other}: not in SHELLS"),
    }
    .into()
}

/// The completion script of `program` for `shell`.
pub fn script(shell: Shell, program: Program) -> Vec<u8> {
    let mut cmd = program.completed();
    let mut script = Vec::new();
    generate(shell, &mut cmd, program.name(), &mut script);
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_completion_knows_every_command_and_option() {
        for program in Program::ALL {
            let cmd = program.command();
            for shell in SHELLS {
                let script = String::from_utf8(script(shell, program)).expect("utf-8");
                for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                    assert!(
                        script.contains(sub.get_name()),
                        "{shell} {}: no {}",
                        program.name(),
                        sub.get_name()
                    );
                }
                let options = cmd
                    .get_arguments()
                    .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
                    .filter(|a| !a.is_hide_set())
                    .filter_map(|a| a.get_long());
                for long in options {
                    assert!(
                        script.contains(long),
                        "{shell} {}: no --{long}",
                        program.name()
                    );
                }
                // The hidden test-only option of the daemon is never offered.
                assert!(!script.contains("test-unowned-tables"), "{shell}");
            }
        }
    }

    #[test]
    fn completions_go_where_debian_shells_look() {
        assert_eq!(
            path(Shell::Bash, "killswitch"),
            PathBuf::from("bash-completion/completions/killswitch")
        );
        assert_eq!(
            path(Shell::Zsh, "killswitch"),
            PathBuf::from("zsh/vendor-completions/_killswitch")
        );
        assert_eq!(
            path(Shell::Fish, "killswitch"),
            PathBuf::from("fish/vendor_completions.d/killswitch.fish")
        );
    }
}
