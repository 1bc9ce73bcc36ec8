//! Running a tool that reads its script from stdin (`nft -f -`, `iptables-restore`), as the
//! baselines do, with its failure reported in its own words.

use anyhow::{Context, Result, ensure};
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `command` with `input` on its stdin, its stdout discarded; fails unless it succeeds.
pub(crate) fn run_with_input(command: &mut Command, input: &str) -> Result<()> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    child
        .stdin
        .take()
        .context("the child's stdin")?
        .write_all(input.as_bytes())
        .with_context(|| format!("writing to {command:?}"))?;
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
