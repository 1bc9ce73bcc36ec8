//! Finding the project's binaries (`killswitchd`, `killswitch`) to run them in the lab.

use anyhow::{Result, bail};
use std::path::PathBuf;

/// The path of binary `name`: `$KILLSWITCH_BIN_DIR/name` if set, else next to the running
/// executable or one level up (where `cargo` puts binaries relative to test executables).
pub fn path(name: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("KILLSWITCH_BIN_DIR") {
        let candidate = PathBuf::from(dir).join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    bail!(
        "cannot find the `{name}` binary (tried {tried:?}); build it first with `cargo build --workspace --bins` \
         (or point KILLSWITCH_BIN_DIR at the directory that holds it)"
    )
}
