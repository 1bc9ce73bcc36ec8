//! Every `killswitch` command line in README's shell blocks is one the CLI accepts: a newcomer
//! copies them, and a renamed flag must fail this test, not the newcomer.
//!
//! Whether each also does what README says is for the lab and the integration tests (README
//! names the scenario beside each quickstart); this test catches the drift no scenario would see.

use clap::Parser;
use killswitch_cli::args::Cli;

/// The `killswitch` invocations in README's ```sh blocks, comments removed, split at `;`, `&&`
/// and `|`, `sudo` dropped.
fn readme_invocations() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let mut invocations = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
            continue;
        }
        if !in_shell {
            continue;
        }
        let code = match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        for segment in code.split([';', '|']).flat_map(|s| s.split("&&")) {
            let command = segment.trim();
            let command = command.strip_prefix("sudo ").unwrap_or(command);
            if command.starts_with("killswitch ") {
                invocations.push(command.to_owned());
            }
        }
    }
    invocations
}

#[test]
fn every_killswitch_command_in_the_readme_parses() {
    let invocations = readme_invocations();
    assert!(
        invocations.len() >= 15,
        "README's shell blocks should hold the quickstarts and the command list; found {invocations:?}"
    );
    for invocation in &invocations {
        // The one command substitution README uses, as the shell would expand it.
        let expanded = invocation.replace("$(id -u nm-openvpn)", "998");
        let words = expanded.split_whitespace();
        if let Err(e) = Cli::try_parse_from(words) {
            panic!("README's `{invocation}` is refused by the CLI:\n{e}");
        }
    }
}

#[test]
fn the_quickstarts_are_in_the_readme() {
    let invocations = readme_invocations();
    for expected in [
        "killswitch guard wg0",
        "killswitch lockdown on",
        "killswitch verify",
    ] {
        assert!(
            invocations.iter().any(|i| i == expected),
            "README lost the quickstart command `{expected}`"
        );
    }
}
