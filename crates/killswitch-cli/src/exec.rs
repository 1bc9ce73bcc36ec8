//! `killswitch exec [--] CMD [ARGS...]`: asks the daemon to run CMD in a namespace whose only way
//! out is the tunnel, hands it this terminal, forwards signals, and exits with CMD's status.
//!
//! The daemon starts the program (only it may create and enter namespaces); this process stays
//! connected for the program's life. The exchange is described in `killswitch_types::exec`:
//! request, then this process's stdin, stdout and stderr over `SCM_RIGHTS` when the daemon asks
//! for them, then signal lines while the program runs, and its exit status at the end.

use crate::client::Failure;
use killswitch_types::exec::{Bytes, ExecRequest, FDS_BYTE, OnDrop};
use killswitch_types::ipc::{
    self, ErrorKind, IpcError, Request, RequestEnvelope, ServerEnvelope, ServerMessage,
};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// How long the daemon may take to ask for the terminal and to start the program.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The signals forwarded to the program.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The write end of the self-pipe the signal handler writes to (-1: none yet).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Runs `command` through the daemon at `socket`; the exit status is the program's.
pub(crate) fn run(socket: &Path, on_drop: Option<OnDrop>, command: Vec<OsString>) -> ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => {
            eprintln!("killswitch: exec: cannot tell the working directory: {e}");
            return ExitCode::from(2);
        }
    };
    let request = ExecRequest {
        argv: command
            .iter()
            .map(|a| Bytes::new(a.as_bytes().to_vec()))
            .collect(),
        env: std::env::vars_os()
            .map(|(name, value)| {
                let mut entry = name.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                Bytes::new(entry)
            })
            .collect(),
        cwd: Bytes::new(cwd.as_os_str().as_bytes().to_vec()),
        on_drop,
    };
    match converse(socket, request) {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(255)),
        Err(failure) => {
            eprintln!("killswitch: {}", crate::render::clean(&failure.to_string()));
            ExitCode::from(exit_code(&failure))
        }
    }
}

/// The exit status for a failure: a shell's 127 and 126 for a program that could not be started,
/// else as every other command.
fn exit_code(failure: &Failure) -> u8 {
    match failure {
        Failure::Refused(IpcError {
            kind: ErrorKind::ProgramNotFound,
            ..
        }) => 127,
        Failure::Refused(IpcError {
            kind: ErrorKind::ProgramNotExecutable,
            ..
        }) => 126,
        Failure::Refused(_) => 1,
        Failure::Unreachable { .. } | Failure::Protocol(_) => 3,
    }
}

fn converse(socket: &Path, request: ExecRequest) -> Result<i32, Failure> {
    let mut stream = UnixStream::connect(socket).map_err(|error| Failure::Unreachable {
        socket: socket.to_owned(),
        error,
    })?;
    let protocol = |e: std::io::Error| Failure::Protocol(e.to_string());
    let line = ipc::encode_line(&RequestEnvelope::new(Request::Exec(request)))
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    stream
        .set_read_timeout(Some(START_TIMEOUT))
        .map_err(protocol)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(protocol)?);
    if let Err(error) = stream.write_all(line.as_bytes()) {
        // The daemon may have refused the connection before reading anything (too many
        // connections) and said why before closing it: that reason beats "broken pipe".
        if let Ok(ServerMessage::Error { error }) = read(&mut reader) {
            return Err(Failure::Refused(error));
        }
        return Err(protocol(error));
    }
    match read(&mut reader)? {
        ServerMessage::ExecSendFds => {}
        ServerMessage::Error { error } => return Err(Failure::Refused(error)),
        other => return Err(unexpected(&other)),
    }
    send_fds(&stream).map_err(protocol)?;
    // Signals from here on go to the program.
    let signals = forward_signals(stream.try_clone().map_err(protocol)?);
    match read(&mut reader)? {
        ServerMessage::ExecStarted { .. } => {}
        ServerMessage::Error { error } => return Err(Failure::Refused(error)),
        other => return Err(unexpected(&other)),
    }
    // The program may run for days.
    reader.get_ref().set_read_timeout(None).map_err(protocol)?;
    let exit = loop {
        match read(&mut reader)? {
            ServerMessage::ExecExited { exit } => break exit,
            ServerMessage::Error { error } => {
                // A complaint about one line (a signal it did not take): the program runs on.
                eprintln!("killswitch: {}", crate::render::clean(&error.message));
            }
            _ => {}
        }
    };
    drop(signals);
    Ok(exit.code)
}

fn unexpected(message: &ServerMessage) -> Failure {
    Failure::Protocol(format!("expected the exec exchange, got {message:?}"))
}

fn read(reader: &mut BufReader<UnixStream>) -> Result<ServerMessage, Failure> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(Failure::Protocol(
            "the daemon closed the connection (was it stopped?)".to_owned(),
        )),
        Ok(_) => serde_json::from_str::<ServerEnvelope>(&line)
            .map(|envelope| envelope.message)
            .map_err(|e| Failure::Protocol(e.to_string())),
        Err(e) => Err(Failure::Protocol(format!(
            "reading the daemon's answer: {e}"
        ))),
    }
}

/// Sends stdin, stdout and stderr with one byte, as `SCM_RIGHTS`.
fn send_fds(stream: &UnixStream) -> std::io::Result<()> {
    let fds: [libc::c_int; 3] = [0, 1, 2];
    let byte = [FDS_BYTE];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let payload = std::mem::size_of_val(&fds) as u32;
    // SAFETY: CMSG_SPACE computes a size from a length.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the sendmsg call, and the
    // control buffer is CMSG_SPACE bytes for one header carrying three descriptors.
    let sent = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(payload) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(header),
            payload as usize,
        );
        libc::sendmsg(stream.as_raw_fd(), &message, libc::MSG_NOSIGNAL)
    };
    if sent == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe drops the signal (the program
        // already has several of the same waiting).
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Catches SIGINT, SIGTERM, SIGHUP and SIGQUIT and sends each to the daemon for the program, from
/// a thread of its own (a signal handler may only write to a pipe).
fn forward_signals(mut stream: UnixStream) -> Option<OwnedFd> {
    let (read_end, write_end) = pipe()?;
    SIGNAL_PIPE.store(write_end.as_raw_fd(), Ordering::Relaxed);
    // A parent that blocked these (and a blocked mask survives exec) would keep them from us.
    // SAFETY: a signal set filled and passed by pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in FORWARDED {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    for signal in FORWARDED {
        // SAFETY: installs a handler that only writes one byte to a pipe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    std::thread::spawn(move || {
        let mut pipe = std::fs::File::from(read_end);
        let mut byte = [0u8; 1];
        while let Ok(1) = pipe.read(&mut byte) {
            let request = Request::ExecSignal {
                signal: i32::from(byte[0]),
            };
            let Ok(line) = ipc::encode_line(&RequestEnvelope::new(request)) else {
                continue;
            };
            if stream.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    Some(write_end)
}

fn pipe() -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    use std::os::fd::FromRawFd;
    // SAFETY: two descriptors the kernel just gave us.
    Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
