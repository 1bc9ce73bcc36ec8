//! Proof that the lab leaves alone the namespace it was started from: a snapshot of its ruleset,
//! routes, policy rules and links, taken before and compared after.

use crate::netns::run_checked;
use anyhow::Result;
use std::process::Command;

/// Everything about the current network namespace that the lab must not change.
pub fn snapshot() -> Result<String> {
    let mut text = String::new();
    let commands: [&[&str]; 6] = [
        &["nft", "list", "ruleset"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["ip", "-4", "rule"],
        &["ip", "-6", "rule"],
        &["ip", "-o", "link", "show"],
    ];
    for args in commands {
        text.push_str(&format!("$ {}\n", args.join(" ")));
        text.push_str(&run_checked(Command::new(args[0]).args(&args[1..]))?);
    }
    Ok(text)
}
