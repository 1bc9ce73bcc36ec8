//! Benchmark: 3. Scale (not written yet).

use anyhow::Result;

/// The section's markdown.
pub(crate) fn section(_quick: bool) -> Result<String> {
    Ok("### 3. Scale\n\nNot measured yet.\n".to_owned())
}
