//! `killswitch-docgen DIR`: writes the man pages and shell completions of `killswitch` and
//! `killswitchd` under DIR, laid out as under `/usr/share` (see the library's docs).
//!
//! Run by `packaging/build-deb.sh` and `make install` after the release build; not installed.
//! The man pages are dated from `SOURCE_DATE_EPOCH` if it is set (the reproducible-builds
//! convention; the packaging sets it to the last commit's time), otherwise today.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    const USAGE: &str =
        "usage: killswitch-docgen DIR  (writes the man pages and completions under DIR)";
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    // An option is no directory: `--help` must not become ./--help/ full of man pages.
    if dir.to_string_lossy().starts_with('-') {
        let help = dir == "--help" || dir == "-h";
        if help {
            println!("{USAGE}");
        } else {
            eprintln!(
                "killswitch-docgen: unknown option {}\n{USAGE}",
                dir.to_string_lossy()
            );
        }
        return ExitCode::from(if help { 0 } else { 2 });
    }
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(seconds) => seconds,
            Err(e) => {
                eprintln!("killswitch-docgen: SOURCE_DATE_EPOCH={value:?}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    let date = killswitch_docgen::man::date(seconds);
    match killswitch_docgen::write_all(&PathBuf::from(dir), &date) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("killswitch-docgen: {e}");
            ExitCode::FAILURE
        }
    }
}
