//! The nftables backend: makes the kernel enforce a [`Ruleset`].
//!
//! [`Nftables::apply`] translates a ruleset into one netlink batch and sends it: `add table inet
//! killswitch`, `delete table inet killswitch`, the same for `arp killswitch`, then (unless the
//! ruleset is empty) the tables, their chains and their rules again. The kernel commits a batch as
//! one transaction, so the old rules stay in force until the instant the new ones are, and a batch
//! that fails anywhere changes nothing. There is never a moment without rules, and no code path here
//! deletes a table in one step and adds it in another.
//!
//! After the kernel acknowledges the batch, [`Nftables::apply`] reads both tables back over netlink
//! and compares them with what was sent: table flags, chains, hooks, priorities, policies and every
//! rule expression. Both sides go through libnftnl's own parser (the sent batch is parsed from the
//! very bytes that went to the kernel), so a difference is a real difference, and it is an error,
//! not a warning.
//!
//! [`monitor::Monitor`] subscribes to nf_tables change notifications, each of which names the
//! process that committed it, so that the daemon can notice and revert changes made by others.
//!
//! What this crate does not own: what the rules are (`killswitch-policy`) and when to change them
//! (the daemon).

mod encode;
mod error;
pub mod monitor;
mod netlink;
mod readback;

pub use error::NftError;
pub use readback::{Family, Installed, InstalledChain, InstalledSet, InstalledTable};

use killswitch_policy::Ruleset;
use std::time::{Duration, Instant};

/// What one [`Nftables::apply`] did and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// How many netlink messages the batch carried (table, chains, rules, begin and end).
    pub messages: usize,
    /// From building the batch to the kernel's last acknowledgement.
    pub commit: Duration,
    /// Reading the table back and comparing it.
    pub verify: Duration,
}

/// A connection to nf_tables in the calling thread's network namespace.
#[derive(Debug)]
pub struct Nftables {
    socket: netlink::Socket,
}

impl Nftables {
    /// Opens the netlink socket. Needs CAP_NET_ADMIN in the current network namespace.
    pub fn open() -> Result<Self, NftError> {
        Ok(Nftables {
            socket: netlink::Socket::open()?,
        })
    }

    /// Replaces tables `inet killswitch` and `arp killswitch` with `ruleset` in one transaction,
    /// then verifies them.
    ///
    /// If the kernel rejects the batch, nothing changed. If the batch was committed but the
    /// read-back disagrees, the error says so and the caller must treat the firewall as unknown.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyReport, NftError> {
        ruleset.check()?;
        let start = Instant::now();
        let batch = encode::Batch::build(ruleset)?;
        netlink::commit(&self.socket, &batch)?;
        let commit = start.elapsed();
        let verified = Instant::now();
        self.verify_against(&batch)?;
        Ok(ApplyReport {
            messages: batch.messages(),
            commit,
            verify: verified.elapsed(),
        })
    }

    /// Compares what the kernel holds now with `ruleset`, without changing anything. Used after an
    /// apply, and to notice when someone else changed or removed the table.
    pub fn verify(&mut self, ruleset: &Ruleset) -> Result<(), NftError> {
        ruleset.check()?;
        self.verify_against(&encode::Batch::build(ruleset)?)
    }

    /// Reads tables `inet killswitch` and `arp killswitch` as the kernel holds them.
    pub fn installed(&mut self) -> Result<Installed, NftError> {
        readback::read_installed(&self.socket)
    }

    fn verify_against(&mut self, batch: &encode::Batch) -> Result<(), NftError> {
        let expected = readback::expected_from_batch(batch)?;
        let actual = readback::read_installed(&self.socket)?;
        readback::compare(&expected, &actual).map_err(NftError::Mismatch)
    }
}

/// [`Nftables::apply`] on a connection of its own.
pub fn apply(ruleset: &Ruleset) -> Result<ApplyReport, NftError> {
    Nftables::open()?.apply(ruleset)
}

/// [`Nftables::verify`] on a connection of its own.
pub fn verify(ruleset: &Ruleset) -> Result<(), NftError> {
    Nftables::open()?.verify(ruleset)
}

/// [`Nftables::installed`] on a connection of its own.
pub fn installed() -> Result<Installed, NftError> {
    Nftables::open()?.installed()
}

/// How long an operation waits for the kernel before giving up.
pub const KERNEL_TIMEOUT: Duration = Duration::from_secs(5);
