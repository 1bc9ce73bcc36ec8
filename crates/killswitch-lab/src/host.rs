//! Proof that the lab leaves alone the namespace it was started from: a snapshot of its ruleset,
//! routes, policy rules, links and resolver configuration, taken before and compared after.

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
    // The daemon under test rewrites resolv.conf on `up`; the lab's must be the only one it sees.
    let resolv_conf = std::path::Path::new("/etc/resolv.conf");
    text.push_str("$ readlink /etc/resolv.conf; cat /etc/resolv.conf\n");
    if let Ok(target) = std::fs::read_link(resolv_conf) {
        text.push_str(&format!("-> {}\n", target.display()));
    }
    text.push_str(&std::fs::read_to_string(resolv_conf).unwrap_or_else(|e| format!("<{e}>\n")));
    Ok(text)
}
