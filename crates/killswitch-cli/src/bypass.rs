//! `killswitch exec --bypass -- CMD`: run CMD around the tunnel (issue 15 item 3).
//!
//! Like mullvad-exclude: this process asks the daemon to move it into the daemon's bypass
//! cgroup (the daemon takes the process from the connection's credentials, and checks that the
//! caller may loosen the protection), and once the daemon answers that the rules are in force,
//! replaces itself with CMD (`execvp`). CMD thus keeps this process's environment, working
//! directory, terminal, process group and pid, and its exit status is the shell's to see. Every
//! child CMD forks is born in the same cgroup. Nothing is started when the daemon refuses.

use crate::client::Client;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

/// Asks for the bypass, then becomes `command`. Returns only on failure: 1 when the daemon
/// refused, 3 when it cannot be reached, 126/127 (as a shell) when CMD cannot be run.
pub(crate) fn run(socket: &Path, json: bool, command: &[OsString]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        // clap requires COMMAND; an empty one is a usage error all the same.
        eprintln!("killswitch: exec --bypass needs a program to run");
        return ExitCode::from(2);
    };
    // The connection is closed when the answer is read (and would be at exec anyway: std opens
    // sockets close-on-exec), so CMD inherits nothing of it.
    if let Err(failure) =
        Client::new(socket.to_owned()).request(killswitch_types::ipc::Request::Bypass)
    {
        return crate::fail(&failure, json);
    }
    let error = std::process::Command::new(program).args(args).exec();
    // Only reached when the program could not be run; the bypass ends as this process exits.
    eprintln!(
        "killswitch: cannot run {}: {error}",
        crate::render::clean(&program.to_string_lossy())
    );
    ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}
