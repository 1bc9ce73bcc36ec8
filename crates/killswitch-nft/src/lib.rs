//! The nftables backend: makes the kernel enforce a [`Ruleset`].
//!
//! [`apply`] translates a ruleset into one netlink batch and sends it: `add table inet killswitch`,
//! `delete table inet killswitch`, then (unless the ruleset is empty) the table, its chains and its
//! rules again. The kernel commits a batch as one transaction, so the old rules stay in force until
//! the instant the new ones are, and a batch that fails anywhere changes nothing. There is never a
//! moment without rules, and no code path here deletes the table in one step and adds it in another.
//!
//! After the kernel acknowledges the batch, [`apply`] reads the table back over netlink and compares
//! it with what was sent: table flags, chains, hooks, priorities, policies and every rule expression.
//! Both sides go through libnftnl's own parser (the sent batch is parsed from the very bytes that went
//! to the kernel), so a difference is a real difference, and it is an error, not a warning.
//!
//! What this crate does not own: what the rules are (`killswitch-policy`) and when to change them
//! (the daemon).

mod encode;
mod error;
mod netlink;
mod readback;

pub use error::NftError;
pub use readback::{InstalledChain, InstalledTable};

use killswitch_policy::Ruleset;
use std::time::{Duration, Instant};

/// What one [`apply`] did and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// How many netlink messages the batch carried (table, chains, rules, begin and end).
    pub messages: usize,
    /// From building the batch to the kernel's last acknowledgement.
    pub commit: Duration,
    /// Reading the table back and comparing it.
    pub verify: Duration,
}

/// Replaces table `inet killswitch` with `ruleset` in one transaction, then verifies the result.
///
/// On error the kernel's state is unchanged if the batch was rejected; if the batch was committed
/// but the read-back disagrees, the error says so and the caller must treat the firewall as unknown.
pub fn apply(ruleset: &Ruleset) -> Result<ApplyReport, NftError> {
    ruleset.check()?;
    let start = Instant::now();
    let batch = encode::Batch::build(ruleset)?;
    netlink::commit(&batch)?;
    let commit = start.elapsed();
    let verified = Instant::now();
    verify_against(&batch)?;
    Ok(ApplyReport {
        messages: batch.messages(),
        commit,
        verify: verified.elapsed(),
    })
}

/// Compares what the kernel holds now with `ruleset`, without changing anything. Used after an
/// apply, and by the daemon to notice when someone else changed or removed the table.
pub fn verify(ruleset: &Ruleset) -> Result<(), NftError> {
    ruleset.check()?;
    verify_against(&encode::Batch::build(ruleset)?)
}

fn verify_against(batch: &encode::Batch) -> Result<(), NftError> {
    let expected = readback::expected_from_batch(batch)?;
    let actual = readback::read_installed()?;
    readback::compare(expected.as_ref(), actual.as_ref()).map_err(NftError::Mismatch)
}

/// Reads table `inet killswitch` as the kernel holds it, or `None` when it is absent.
pub fn installed() -> Result<Option<InstalledTable>, NftError> {
    readback::read_installed()
}

/// How long [`apply`] and [`installed`] wait for the kernel before giving up.
pub const KERNEL_TIMEOUT: Duration = Duration::from_secs(5);
