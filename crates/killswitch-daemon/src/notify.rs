//! The systemd readiness protocol (sd_notify), written out: one datagram to `$NOTIFY_SOCKET`.
//!
//! systemd (Type=notify) and the lab both wait for `READY=1`, which the daemon sends only after
//! its firewall is applied and its socket is listening: "ready" means "protecting".

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`, if set. Errors are returned, not fatal:
/// a daemon started by hand has no one to tell.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &address)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        // SAFETY: tests in this module are the only ones touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1").expect("sent");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).expect("received");
        assert_eq!(&buffer[..n], b"READY=1");
    }
}
