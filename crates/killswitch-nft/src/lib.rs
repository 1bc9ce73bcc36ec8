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

pub mod conntrack;
pub mod counters;
mod encode;
mod error;
pub mod monitor;
mod netlink;
pub mod nflog;
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

/// Who may change our tables besides us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Flags `owner` and `persist`: no other program may change or delete them, nor flush them
    /// with the rest of the ruleset; they outlive this connection and the next connection that
    /// applies a ruleset adopts them, in the same transaction. Kernels 6.9 and later.
    Owned,
    /// No flags: any program with CAP_NET_ADMIN may change, delete or flush them (the daemon
    /// notices and restores). For kernels without `persist`, where `owner` alone would make the
    /// tables vanish with the daemon.
    Shared,
}

impl Ownership {
    fn flags(self) -> u32 {
        match self {
            Ownership::Owned => encode::NFT_TABLE_F_OWNER | encode::NFT_TABLE_F_PERSIST,
            Ownership::Shared => 0,
        }
    }
}

/// A connection to nf_tables in the calling thread's network namespace.
#[derive(Debug)]
pub struct Nftables {
    socket: netlink::Socket,
    ownership: Ownership,
}

impl Nftables {
    /// Opens the netlink socket and asks the kernel whether it knows `owner` and `persist`
    /// ([`Nftables::probe`]): owned tables where it does, shared ones where it does not. Needs
    /// CAP_NET_ADMIN in the current network namespace.
    pub fn open() -> Result<Self, NftError> {
        let mut nftables = Self::open_with(Ownership::Shared)?;
        nftables.ownership = nftables.probe()?;
        Ok(nftables)
    }

    /// Opens the netlink socket, the tables to be `ownership` (no probe: the caller knows).
    pub fn open_with(ownership: Ownership) -> Result<Self, NftError> {
        Ok(Nftables {
            socket: netlink::Socket::open()?,
            ownership,
        })
    }

    /// Whether this kernel knows the table flags `owner` and `persist`, by a batch that is never
    /// committed (see `encode::probe_batch`): a kernel without them refuses the flags
    /// (`EOPNOTSUPP`; old kernels `EINVAL`), one with them fails only at the batch's last message.
    pub fn probe(&mut self) -> Result<Ownership, NftError> {
        let batch = encode::probe_batch(Ownership::Owned.flags())?;
        match netlink::commit(&self.socket, &batch) {
            Err(NftError::Rejected { what, .. }) if what == encode::PROBE_SENTINEL => {
                Ok(Ownership::Owned)
            }
            Err(NftError::Rejected { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) =>
            {
                Ok(Ownership::Shared)
            }
            Err(e) => Err(e),
            Ok(()) => Err(NftError::Mismatch(
                "the probe batch, which deletes a table that does not exist, was committed"
                    .to_owned(),
            )),
        }
    }

    /// Whether the tables this connection writes are owned.
    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// Replaces tables `inet killswitch` and `arp killswitch` with `ruleset` in one transaction,
    /// then verifies them.
    ///
    /// If the kernel rejects the batch, nothing changed. If the batch was committed but the
    /// read-back disagrees, the error says so and the caller must treat the firewall as unknown.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyReport, NftError> {
        ruleset.check()?;
        let start = Instant::now();
        // The counts so far, carried into the new table's counters (see `counters`). A table
        // that cannot be read is no reason not to apply the rules: its counts start again.
        let carried = counters::read(&self.socket).unwrap_or_default();
        let batch = encode::Batch::build(ruleset, self.ownership.flags(), &carried)?;
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
    /// apply, and to notice when someone else changed or removed the table. With owned tables the
    /// flags are compared too, so tables that lost their owner (orphans) do not verify: only the
    /// connection that applied them can expect them owned.
    pub fn verify(&mut self, ruleset: &Ruleset) -> Result<(), NftError> {
        ruleset.check()?;
        self.verify_against(&encode::Batch::build(
            ruleset,
            self.ownership.flags(),
            &counters::Counters::new(),
        )?)
    }

    /// [`Nftables::verify`] for a connection that does not own the tables (a test's, or a
    /// tool's): whether they are owned by someone, or orphaned, is not compared; the rules are.
    pub fn verify_rules(&mut self, ruleset: &Ruleset) -> Result<(), NftError> {
        let (expected, actual) = self.intended_and_installed(ruleset)?;
        readback::compare(&expected, &actual).map_err(NftError::Mismatch)
    }

    /// Reads tables `inet killswitch` and `arp killswitch` as the kernel holds them.
    pub fn installed(&mut self) -> Result<Installed, NftError> {
        readback::read_installed(&self.socket)
    }

    /// What the kernel holds and what `ruleset` would have it hold, without changing anything,
    /// both with the `owner` flag masked (as [`Nftables::verify_rules`] compares): for a report
    /// (`killswitch verify`) that shows both and their first difference
    /// ([`compare_installed`]).
    pub fn intended_and_installed(
        &mut self,
        ruleset: &Ruleset,
    ) -> Result<(Installed, Installed), NftError> {
        ruleset.check()?;
        let batch =
            encode::Batch::build(ruleset, self.ownership.flags(), &counters::Counters::new())?;
        let mut expected = readback::expected_from_batch(&batch)?;
        let mut actual = readback::read_installed(&self.socket)?;
        for installed in [&mut expected, &mut actual] {
            for table in [&mut installed.inet, &mut installed.arp]
                .into_iter()
                .flatten()
            {
                table.flags &= !encode::NFT_TABLE_F_OWNER;
            }
        }
        Ok((expected, actual))
    }

    /// The refused packets and bytes per reason, from the table's counter objects (one dump);
    /// empty when the table is not installed.
    pub fn counters(&mut self) -> Result<counters::Counters, NftError> {
        counters::read(&self.socket)
    }

    fn verify_against(&mut self, batch: &encode::Batch) -> Result<(), NftError> {
        let expected = readback::expected_from_batch(batch)?;
        let actual = readback::read_installed(&self.socket)?;
        readback::compare(&expected, &actual).map_err(NftError::Mismatch)
    }
}

/// [`Nftables::apply`] on a connection of its own.
///
/// For tests and tools that apply one ruleset after another, each on a new connection: the
/// tables the previous connection owned become anyone's when its socket is released, and in a
/// process that forks (a test harness starting `nft` on another thread, say) a child may hold the
/// closed socket open until it execs. Meanwhile the kernel refuses (`EPERM`); this waits up to
/// 2 s for the release. The daemon never needs it: it keeps its one connection.
pub fn apply(ruleset: &Ruleset) -> Result<ApplyReport, NftError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match Nftables::open()?.apply(ruleset) {
            Err(NftError::Rejected { source, .. })
                if source.raw_os_error() == Some(libc::EPERM) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// [`Nftables::verify_rules`] on a connection of its own (which owns nothing: whoever owns the
/// tables, the rules are compared).
pub fn verify(ruleset: &Ruleset) -> Result<(), NftError> {
    Nftables::open()?.verify_rules(ruleset)
}

/// The first difference between the tables `expected` and those `actual`, in words (`Ok` when
/// they are the same): what [`Nftables::verify`] reports.
pub fn compare_installed(expected: &Installed, actual: &Installed) -> Result<(), String> {
    readback::compare(expected, actual)
}

/// [`Nftables::installed`] on a connection of its own.
pub fn installed() -> Result<Installed, NftError> {
    Nftables::open()?.installed()
}

/// [`Nftables::counters`] on a connection of its own.
pub fn counters() -> Result<counters::Counters, NftError> {
    Nftables::open_with(Ownership::Shared)?.counters()
}

/// How long an operation waits for the kernel before giving up.
pub const KERNEL_TIMEOUT: Duration = Duration::from_secs(5);
