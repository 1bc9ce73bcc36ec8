//! `killswitch`'s exit statuses, as `--help` documents them (the same table the man page lists):
//! a file named on the command line that does not exist is status 2, as it is for `killswitchd`.
//! None of these reaches a daemon (the socket named does not exist), so they need no root.

use std::process::{Command, Output};

fn killswitch(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_killswitch"))
        .arg("--socket")
        .arg(dir.path().join("no-daemon.sock"))
        .args(args)
        .env_remove("KILLSWITCH_SOCKET")
        .output()
        .expect("killswitch runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn up_with_a_missing_file_exits_2_before_asking_the_daemon() {
    let output = killswitch(&["up", "/nonexistent/wg0.conf"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot read /nonexistent/wg0.conf"),
        "{}",
        stderr(&output)
    );
    let waiting = killswitch(&["up", "--wait", "/nonexistent/wg0.conf"]);
    assert_eq!(waiting.status.code(), Some(2), "{}", stderr(&waiting));
}

#[test]
fn a_bad_command_line_exits_2_and_no_daemon_exits_3() {
    let output = killswitch(&["up", "--timeout", "5", "se1"]);
    assert_eq!(output.status.code(), Some(2), "--timeout needs --wait");
    let output = killswitch(&["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot reach the daemon"));
}

#[test]
fn help_documents_every_exit_status() {
    let output = killswitch(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    for (code, _) in killswitch_cli::args::EXIT_STATUS {
        assert!(help.contains(&format!("  {code}  ")), "{help}");
    }
    assert!(
        help.contains("names a file path that does not exist"),
        "{help}"
    );
    let up = killswitch(&["up", "--help"]);
    let up = String::from_utf8_lossy(&up.stdout);
    assert!(up.contains("--wait") && up.contains("--timeout"), "{up}");
}
