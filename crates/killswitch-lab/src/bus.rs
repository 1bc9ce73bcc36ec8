//! A private D-Bus message bus (`dbus-daemon` on a socket in a temporary directory), standing in
//! for the system bus in tests of the daemon's systemd-resolved and logind integration. Nothing
//! on it but what the test puts there; the machine's own bus is never touched.

use crate::process::Process;
use anyhow::{Context, Result};
use std::process::Command;
use std::time::Duration;

/// The bus: stopped (and its socket removed) on drop.
#[derive(Debug)]
pub struct PrivateBus {
    address: String,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts a bus on which anyone may own any name and send anything.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )?;
        let mut command = Command::new("dbus-daemon");
        command
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1", "--nosyslog"]);
        let mut process = Process::spawn("dbus-daemon", command)
            .context("starting dbus-daemon (package dbus-daemon; scripts/setup.sh installs it)")?;
        // It prints its address once it listens.
        process.wait_for_line(0, "unix:", Duration::from_secs(10))?;
        let output = process.output();
        let line = output
            .lines()
            .find(|l| l.starts_with("unix:"))
            .context("dbus-daemon's address")?;
        Ok(PrivateBus {
            address: line.trim().to_owned(),
            _process: process,
            _dir: dir,
        })
    }

    /// The bus's address, for `DBUS_SYSTEM_BUS_ADDRESS` or a client.
    pub fn address(&self) -> &str {
        &self.address
    }
}
