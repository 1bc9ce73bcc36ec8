//! Benchmark: 2. Leak window under a tunnel drop (not written yet).

use anyhow::Result;

/// The section's markdown.
pub(crate) fn section(_quick: bool) -> Result<String> {
    Ok("### 2. Leak window under a tunnel drop\n\nNot measured yet.\n".to_owned())
}
