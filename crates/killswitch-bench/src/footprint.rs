//! Benchmark: 6. Footprint (not written yet).

use anyhow::Result;

/// The section's markdown.
pub(crate) fn section(_quick: bool) -> Result<String> {
    Ok("### 6. Footprint\n\nNot measured yet.\n".to_owned())
}
