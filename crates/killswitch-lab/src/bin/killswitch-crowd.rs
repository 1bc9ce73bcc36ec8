//! `killswitch-crowd`: a local user who opens many connections to a Unix socket and holds them.
//!
//! The attacker of the control-socket tests: started as root, it raises its file-descriptor limit
//! (only root may raise the hard limit), drops to the given uid and gid with no supplementary
//! groups, then makes COUNT connection attempts, each non-blocking so that a full listen backlog
//! counts as a refused attempt instead of hanging. It sends nothing on any connection. When every
//! attempt is made it prints one summary line (`holding ...`) and keeps every descriptor open until
//! it is killed.

use clap::Parser;
use nix::errno::Errno;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;

/// Opens COUNT idle connections to SOCKET as an unprivileged user and holds them until killed.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The Unix socket to connect to.
    socket: PathBuf,
    /// How many connection attempts to make.
    count: usize,
    /// The uid (and gid) to drop to before connecting.
    #[arg(long, default_value_t = 65534)]
    uid: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(held) => {
            // Hold every descriptor (the connected ones and the ones the peer closed) until killed.
            loop {
                std::thread::park();
                let _ = &held;
            }
        }
        Err(e) => {
            eprintln!("killswitch-crowd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Vec<OwnedFd>, String> {
    // Room for every attempt plus stdio; raised while still root, then kept after the drop.
    let limit = args.count as u64 + 64;
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit)
        .map_err(|e| format!("raising RLIMIT_NOFILE to {limit}: {e}"))?;
    setgroups(&[]).map_err(|e| format!("dropping supplementary groups: {e}"))?;
    let gid = Gid::from_raw(args.uid);
    setresgid(gid, gid, gid).map_err(|e| format!("setting gid {gid}: {e}"))?;
    let uid = Uid::from_raw(args.uid);
    setresuid(uid, uid, uid).map_err(|e| format!("setting uid {uid}: {e}"))?;

    let address =
        UnixAddr::new(&args.socket).map_err(|e| format!("{}: {e}", args.socket.display()))?;
    let mut held = Vec::with_capacity(args.count);
    let mut connected = 0usize;
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..args.count {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("creating socket {}: {e}", held.len()))?;
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address) {
            Ok(()) => connected += 1,
            // A full listen backlog: the attempt is made, and refused.
            Err(e @ (Errno::EAGAIN | Errno::ECONNREFUSED)) => {
                *failed.entry(e.desc().to_owned()).or_default() += 1;
            }
            Err(e) => return Err(format!("connecting to {}: {e}", args.socket.display())),
        }
        held.push(fd);
    }
    println!(
        "holding {} attempts as uid {}: {connected} connected, refused: {failed:?}",
        held.len(),
        args.uid
    );
    Ok(held)
}
