//! Benchmark: 5. Dead-tunnel detection and failover (not written yet).

use anyhow::Result;

/// The section's markdown.
pub(crate) fn section(_quick: bool) -> Result<String> {
    Ok("### 5. Dead-tunnel detection and failover\n\nNot measured yet.\n".to_owned())
}
