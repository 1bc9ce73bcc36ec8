//! `killswitchd`'s exit statuses, as `--help` documents them: a file named on the command line
//! that does not exist is status 2, as it is for `killswitch`; a file that reads but is wrong is 1.
//! `--check-config` touches no network, so these run without root or namespaces.

use std::process::Command;

fn check_config(file: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_killswitchd"))
        .arg("--check-config")
        .arg(file)
        .output()
        .expect("killswitchd runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_of_a_missing_file_exits_2_like_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nonexistent.toml");
    let (code, stderr) = check_config(&missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");
    // A directory opens, but cannot be read as a file: the same mistake in the command line.
    let (code, stderr) = check_config(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn check_config_of_a_wrong_file_exits_1_and_of_a_good_one_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "dead_after_seconds = \"soon\"\n").expect("write");
    let (code, stderr) = check_config(&file);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    std::fs::write(&file, "").expect("write");
    assert_eq!(check_config(&file).0, Some(0));
}

#[test]
fn help_documents_the_exit_statuses() {
    let output = Command::new(env!("CARGO_BIN_EXE_killswitchd"))
        .arg("--help")
        .output()
        .expect("killswitchd runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for (code, meaning) in killswitch_daemon::args::EXIT_STATUS {
        assert!(help.contains(&format!("  {code}  ")), "{help}");
        assert!(meaning.len() > 10, "status {code} needs a real explanation");
    }
    assert!(help.contains("does not exist"), "{help}");
}
