//! The man pages and shell completions of `killswitch` and `killswitchd`, made from their clap
//! definitions (`killswitch_cli::args`, `killswitch_daemon::args`) at build time.
//!
//! Generated rather than written, so that `--help`, the man pages and tab completion say the same
//! thing: an option added to a binary appears in all three, and a test below fails if a command is
//! missing from any. The binaries do not link any of this: the CLI links only the shared types and
//! clap, and neither binary needs roff or shell knowledge at run time.
//!
//! - [`man`]: `killswitch(1)` and `killswitchd(8)`, one page per binary;
//! - [`completions`]: bash, zsh and fish completions for both.
//!
//! [`files`] lists every file with its path relative to an output directory, laid out as under
//! `/usr/share`: `man/man1/killswitch.1`, `bash-completion/completions/killswitch`, ... The
//! packaging (`packaging/build-deb.sh`, the Makefile) installs from there.

#![forbid(unsafe_code)]

pub mod completions;
pub mod man;

use std::io;
use std::path::{Path, PathBuf};

/// One generated file: where it goes under `/usr/share` (or `$(PREFIX)/share`), and its content.
#[derive(Debug, Clone)]
pub struct File {
    /// The path relative to the `share` directory.
    pub path: PathBuf,
    /// What it holds.
    pub content: Vec<u8>,
}

/// Every man page (dated `date`, YYYY-MM-DD) and completion script.
pub fn files(date: &str) -> io::Result<Vec<File>> {
    let mut files = vec![
        File {
            path: "man/man1/killswitch.1".into(),
            content: man::killswitch(date)?,
        },
        File {
            path: "man/man8/killswitchd.8".into(),
            content: man::killswitchd(date)?,
        },
    ];
    for program in completions::Program::ALL {
        for shell in completions::SHELLS {
            files.push(File {
                path: completions::path(shell, program.name()),
                content: completions::script(shell, program),
            });
        }
    }
    Ok(files)
}

/// Writes every file under `dir` (creating directories) and returns the paths written.
pub fn write_all(dir: &Path, date: &str) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for file in files(date)? {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.content)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_written_where_the_packaging_expects_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_all(dir.path(), "2026-01-02").expect("writes");
        let mut names: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("under dir")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bash-completion/completions/killswitch",
                "bash-completion/completions/killswitchd",
                "fish/vendor_completions.d/killswitch.fish",
                "fish/vendor_completions.d/killswitchd.fish",
                "man/man1/killswitch.1",
                "man/man8/killswitchd.8",
                "zsh/vendor-completions/_killswitch",
                "zsh/vendor-completions/_killswitchd",
            ]
        );
        for path in written {
            assert!(
                std::fs::metadata(&path).expect("exists").len() > 0,
                "{path:?}"
            );
        }
    }
}
