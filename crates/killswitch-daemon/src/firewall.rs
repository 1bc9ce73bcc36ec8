//! The one point where the daemon meets the kernel's enforcement.
//!
//! The state machine talks to a [`Firewall`]: on Linux, nftables (the first layer) and policy
//! routing (the second). Another platform (pf, WFP) would be another implementation of the same
//! trait over the same [`Ruleset`].

use killswitch_policy::Ruleset;
use killswitch_policy::routes::RoutingLayer;
use killswitch_types::ipc::FlushProtection;
use std::time::Duration;

/// What enforces the policy: a firewall that installs a whole ruleset atomically and can check
/// it, and a routing layer behind it.
pub trait Firewall {
    /// Replaces our rules with `ruleset` in one transaction and verifies the result. Returns how
    /// long the apply took; on error, says what went wrong (the whole cause chain).
    fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, FirewallError>;

    /// Checks that what is installed is still `ruleset`.
    fn verify(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError>;

    /// Makes the routing layer match `layer` (`None`: remove it), changing only the difference,
    /// and checks that the kernel then holds it. Returns what was restored when the layer had been
    /// in place and someone changed it (a repair, to count as tampering).
    fn apply_routes(
        &mut self,
        layer: Option<&RoutingLayer>,
    ) -> Result<Option<String>, FirewallError>;

    /// What keeps other programs from removing the rules, once known (after the first apply).
    fn flush_protection(&self) -> Option<FlushProtection> {
        None
    }
}

/// Why the kernel does not hold what was applied: the kind decides what the state machine does
/// next, the message is for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened, with its causes, on one line.
    pub message: String,
}

/// The kinds of [`FirewallError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The kernel refused the change (the whole batch rolled back), or it could never be sent (a
    /// malformed ruleset), or another program's entries stand in the way: the same change fails
    /// the same way until something else changes. The daemon blocks, and retries with backoff.
    Rejected,
    /// The change may never have reached the kernel (a socket that failed, no answer in time):
    /// the next try, on a fresh socket, may well work. The daemon tries once more at once.
    Transient,
    /// The kernel holds something other than what was applied.
    Mismatch,
}

impl FirewallError {
    /// An error of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        FirewallError {
            kind,
            message: message.into(),
        }
    }

    fn nft(error: &killswitch_nft::NftError) -> Self {
        use killswitch_nft::NftError as E;
        let kind = match error {
            E::Socket(_) | E::Send(_) | E::Recv(_) | E::Timeout(_) | E::Parse(_) => {
                FailureKind::Transient
            }
            E::Mismatch(_) => FailureKind::Mismatch,
            E::Malformed(_) | E::Comment(_) | E::TooLarge(_) | E::Rejected { .. } => {
                FailureKind::Rejected
            }
        };
        FirewallError::new(kind, chain(error))
    }
}

impl From<FirewallError> for String {
    fn from(error: FirewallError) -> String {
        error.message
    }
}

impl std::fmt::Display for FirewallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Linux: nftables and policy routing, each over its own netlink socket.
///
/// Where the kernel has nf_tables' `owner` and `persist` table flags, the tables are owned by the
/// nftables socket: every write goes through that one socket, which stays open for the daemon's
/// life, and no other program can flush or edit them. After a socket error the next socket adopts
/// them in the same transaction as the next apply. (Without `persist`, `owner` would make the
/// tables vanish with the daemon: there they stay unowned, and a change is restored.)
#[derive(Debug)]
pub struct Nftables {
    inner: Option<killswitch_nft::Nftables>,
    routing: Option<killswitch_route::Routing>,
    /// Other programs' entries at the routing layer's priorities or in its table, as last logged.
    foreign_routes: Vec<String>,
    /// Never own the tables, whatever the kernel supports: the fallback path, for its tests.
    unowned: bool,
    ownership: Option<killswitch_nft::Ownership>,
}

impl Nftables {
    /// A backend that opens its netlink sockets on first use (and again after a socket error), and
    /// owns its tables where the kernel can.
    pub fn new() -> Self {
        Nftables {
            inner: None,
            routing: None,
            foreign_routes: Vec::new(),
            unowned: false,
            ownership: None,
        }
    }

    /// A backend that never owns its tables, as on a kernel without `persist`. For the tests of
    /// that path (`killswitchd --test-unowned-tables`).
    pub fn unowned() -> Self {
        Nftables {
            unowned: true,
            ..Self::new()
        }
    }

    fn connection(&mut self) -> Result<&mut killswitch_nft::Nftables, FirewallError> {
        if self.inner.is_none() {
            let opened = if self.unowned {
                killswitch_nft::Nftables::open_with(killswitch_nft::Ownership::Shared)
            } else {
                killswitch_nft::Nftables::open()
            }
            .map_err(|e| FirewallError::nft(&e))?;
            if self.ownership != Some(opened.ownership()) {
                tracing::info!(
                    "{}",
                    match opened.ownership() {
                        killswitch_nft::Ownership::Owned =>
                            "the kill switch's tables are owned: no other program can flush or edit them",
                        killswitch_nft::Ownership::Shared =>
                            "this kernel cannot own tables (no nf_tables persist flag, before 6.9): another program's flush is restored, not refused",
                    }
                );
            }
            self.ownership = Some(opened.ownership());
            self.inner = Some(opened);
        }
        self.inner
            .as_mut()
            .ok_or_else(|| FirewallError::new(FailureKind::Transient, "no nftables connection"))
    }

    fn forget_on_socket_error(&mut self, error: &killswitch_nft::NftError) {
        use killswitch_nft::NftError as E;
        if matches!(
            error,
            E::Socket(_) | E::Send(_) | E::Recv(_) | E::Timeout(_) | E::Parse(_)
        ) {
            self.inner = None;
        }
    }
}

impl Default for Nftables {
    fn default() -> Self {
        Self::new()
    }
}

impl Firewall for Nftables {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, FirewallError> {
        let result = self.connection()?.apply(ruleset);
        match result {
            Ok(report) => Ok(report.commit + report.verify),
            Err(e) => {
                self.forget_on_socket_error(&e);
                Err(FirewallError::nft(&e))
            }
        }
    }

    fn verify(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let result = self.connection()?.verify(ruleset);
        result.map_err(|e| {
            self.forget_on_socket_error(&e);
            FirewallError::nft(&e)
        })
    }

    fn flush_protection(&self) -> Option<FlushProtection> {
        self.ownership.map(|o| match o {
            killswitch_nft::Ownership::Owned => FlushProtection::Kernel,
            killswitch_nft::Ownership::Shared => FlushProtection::RestoreOnly,
        })
    }

    fn apply_routes(
        &mut self,
        layer: Option<&RoutingLayer>,
    ) -> Result<Option<String>, FirewallError> {
        if self.routing.is_none() {
            self.routing = Some(
                killswitch_route::Routing::open()
                    .map_err(|e| FirewallError::new(FailureKind::Transient, chain(&e)))?,
            );
        }
        let routing = self
            .routing
            .as_mut()
            .ok_or_else(|| FirewallError::new(FailureKind::Transient, "no rtnetlink connection"))?;
        let applied = routing.apply(layer).map_err(|e| {
            // Start from a fresh socket next time: this one may hold stray replies.
            self.routing = None;
            FirewallError::new(FailureKind::Rejected, chain(&e))
        })?;
        // Left alone, but the layer is then not what it says: another program's rule at one of
        // its priorities can come first (a `lookup main` there bypasses it), and a route another
        // program put in its table is used by everything the catch-all sends there. So the layer
        // is reported as not in place, with the entries named, and looked at again later.
        if applied.foreign != self.foreign_routes {
            if !applied.foreign.is_empty() {
                tracing::warn!(
                    "other programs' entries at the routing layer's priorities or in its table \
                     (left alone): {}",
                    applied.foreign.join("; ")
                );
            }
            self.foreign_routes = applied.foreign.clone();
        }
        if layer.is_some() && !applied.foreign.is_empty() {
            return Err(FirewallError::new(
                FailureKind::Rejected,
                format!(
                    "other programs' entries at its priorities or in its table can take \
                     precedence over it (left alone; the firewall holds): {}",
                    applied.foreign.join("; ")
                ),
            ));
        }
        Ok(applied.repaired)
    }
}

/// An error and all its sources, on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
