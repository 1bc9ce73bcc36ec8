//! Files the lab must not leave behind when it is interrupted: its temporary directories (which
//! hold WireGuard private keys and daemon state) and wireguard-go's control sockets.
//!
//! Normally each goes with the value that owns it (a `TempDir`, a `Device`). On Ctrl-C or SIGTERM
//! the lab exits without running destructors, so the owners register their paths here and the
//! interrupt handler removes whatever is still registered, after the processes that used them
//! are gone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Remembers `path` for removal on an interrupt.
pub fn register(path: &Path) {
    if let Ok(mut paths) = PATHS.lock() {
        paths
            .get_or_insert_with(HashSet::new)
            .insert(path.to_owned());
    }
}

/// Forgets `path` (its owner removed it, or will).
pub fn forget(path: &Path) {
    if let Ok(mut paths) = PATHS.lock()
        && let Some(paths) = paths.as_mut()
    {
        paths.remove(path);
    }
}

/// Removes every registered file and directory (for the interrupt handler).
pub fn remove_all() {
    let paths = PATHS
        .lock()
        .ok()
        .and_then(|mut paths| paths.take())
        .unwrap_or_default();
    for path in paths {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("killswitch-lab: cannot remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_removed_and_forgotten_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone");
        let kept = dir.path().join("kept");
        std::fs::create_dir(&gone).expect("mkdir");
        std::fs::write(gone.join("key"), b"secret").expect("write");
        std::fs::write(&kept, b"kept").expect("write");
        register(&gone);
        register(&kept);
        forget(&kept);
        remove_all();
        assert!(!gone.exists() && kept.exists());
    }
}
