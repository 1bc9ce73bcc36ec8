//! Benchmark: 4. Data-path overhead (not written yet).

use anyhow::Result;

/// The section's markdown.
pub(crate) fn section(_quick: bool) -> Result<String> {
    Ok("### 4. Data-path overhead\n\nNot measured yet.\n".to_owned())
}
