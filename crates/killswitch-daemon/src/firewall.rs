//! The one point where the daemon meets the kernel's enforcement.
//!
//! The state machine talks to a [`Firewall`]: on Linux, nftables (the first layer) and policy
//! routing (the second). Another platform (pf, WFP) would be another implementation of the same
//! trait over the same [`Ruleset`].

use killswitch_policy::Ruleset;
use killswitch_policy::routes::RoutingLayer;
use std::time::Duration;

/// What enforces the policy: a firewall that installs a whole ruleset atomically and can check
/// it, and a routing layer behind it.
pub trait Firewall {
    /// Replaces our rules with `ruleset` in one transaction and verifies the result. Returns how
    /// long the apply took; on error, says what went wrong (the whole cause chain).
    fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, String>;

    /// Checks that what is installed is still `ruleset`.
    fn verify(&mut self, ruleset: &Ruleset) -> Result<(), String>;

    /// Makes the routing layer match `layer` (`None`: remove it), changing only the difference.
    fn apply_routes(&mut self, layer: Option<&RoutingLayer>) -> Result<(), String>;
}

/// Linux: nftables and policy routing, each over its own netlink socket.
#[derive(Debug)]
pub struct Nftables {
    inner: Option<killswitch_nft::Nftables>,
    routing: Option<killswitch_route::Routing>,
}

impl Nftables {
    /// A backend that opens its netlink sockets on first use (and again after a socket error).
    pub fn new() -> Self {
        Nftables {
            inner: None,
            routing: None,
        }
    }

    fn connection(&mut self) -> Result<&mut killswitch_nft::Nftables, String> {
        if self.inner.is_none() {
            self.inner = Some(killswitch_nft::Nftables::open().map_err(|e| chain(&e))?);
        }
        self.inner
            .as_mut()
            .ok_or_else(|| "no nftables connection".to_owned())
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
    fn apply(&mut self, ruleset: &Ruleset) -> Result<Duration, String> {
        let result = self.connection()?.apply(ruleset);
        match result {
            Ok(report) => Ok(report.commit + report.verify),
            Err(e) => {
                self.forget_on_socket_error(&e);
                Err(chain(&e))
            }
        }
    }

    fn verify(&mut self, ruleset: &Ruleset) -> Result<(), String> {
        let result = self.connection()?.verify(ruleset);
        result.map_err(|e| {
            self.forget_on_socket_error(&e);
            chain(&e)
        })
    }

    fn apply_routes(&mut self, layer: Option<&RoutingLayer>) -> Result<(), String> {
        if self.routing.is_none() {
            self.routing = Some(killswitch_route::Routing::open().map_err(|e| chain(&e))?);
        }
        let routing = self
            .routing
            .as_mut()
            .ok_or_else(|| "no rtnetlink connection".to_owned())?;
        routing.apply(layer).map_err(|e| {
            // Start from a fresh socket next time: this one may hold stray replies.
            self.routing = None;
            chain(&e)
        })
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
