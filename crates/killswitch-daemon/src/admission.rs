//! Admission to the control socket: how many connections each kind of peer may hold at once.
//!
//! The socket is world-connectable, so every connection is a resource any local user can take.
//! Connections are counted in two pools, decided once per connection from the peer's credentials
//! right after `accept`: **privileged** peers (root and members of the admin group, the ones who
//! may change the kill switch) have an allowance of their own that nobody else can use up;
//! **unprivileged** peers share another, and each uid may hold only a part of it. A connection
//! over its limit is refused (the caller tells the peer why, in one line, and closes it), so that
//! the accept loop itself never waits for a slot: whoever else holds connections, root's next
//! connection is accepted and served at once.
//!
//! The limits together stay well under the default soft limit of 1,024 file descriptors, so the
//! daemon cannot run out of descriptors because of its clients.
//!
//! What this module does not do: time out idle or slow connections (the IPC server does, for
//! unprivileged peers), or decide who may change what ([`crate::authz`], per request).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Connections root and the admin group may hold together.
pub const PRIVILEGED_CONNECTIONS: usize = 128;
/// Of those, how many only root may use: an admin-group member (who may change the kill switch,
/// but is not root) must not be able to lock root out either.
pub const ROOT_RESERVE: usize = 32;
/// Connections one unprivileged uid may hold (each `killswitch events` holds one for as long as it
/// runs; a desktop's status applet and a few terminals fit easily).
pub const CONNECTIONS_PER_USER: usize = 32;
/// Connections all unprivileged uids may hold together.
pub const UNPRIVILEGED_CONNECTIONS: usize = 512;

/// Which pool a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClass {
    /// Root or a member of the admin group: may change the kill switch.
    Privileged,
    /// Anyone else: may read the status and follow events.
    Unprivileged,
}

/// The limits, one per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`PRIVILEGED_CONNECTIONS`].
    pub privileged: usize,
    /// See [`CONNECTIONS_PER_USER`].
    pub per_user: usize,
    /// See [`UNPRIVILEGED_CONNECTIONS`].
    pub unprivileged: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            privileged: PRIVILEGED_CONNECTIONS,
            per_user: CONNECTIONS_PER_USER,
            unprivileged: UNPRIVILEGED_CONNECTIONS,
        }
    }
}

/// Why a connection was not admitted; its `Display` is the message the peer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Root and the admin group hold their whole allowance.
    Privileged {
        /// The limit reached.
        limit: usize,
    },
    /// This uid holds its whole share.
    PerUser {
        /// The peer's uid.
        uid: u32,
        /// The limit reached.
        limit: usize,
    },
    /// Unprivileged users together hold their whole allowance.
    Unprivileged {
        /// The limit reached.
        limit: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Privileged { limit } => write!(
                f,
                "too many connections from root and the admin group: at most {limit} at once; closing this one"
            ),
            Refusal::PerUser { uid, limit } => write!(
                f,
                "too many connections from uid {uid}: at most {limit} per user at once; closing this one"
            ),
            Refusal::Unprivileged { limit } => write!(
                f,
                "too many connections from unprivileged users: at most {limit} together at once; closing this one"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    privileged: usize,
    unprivileged: usize,
    per_uid: HashMap<u32, usize>,
    /// Connections per admin-group member (root is not counted here).
    per_member: HashMap<u32, usize>,
}

/// The live connection counts, shared by the accept loop and the connections' slots.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    /// Counts against `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            counts: Arc::default(),
        }
    }

    /// Admits a connection of `uid` in `class`, or says which limit it is over. The slot gives
    /// the place back when dropped.
    pub fn admit(&self, uid: u32, class: PeerClass) -> Result<Slot, Refusal> {
        // Only counters change under the lock: a poisoned lock still holds consistent counts.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match class {
            PeerClass::Privileged if uid == 0 => {
                if counts.privileged >= self.limits.privileged {
                    return Err(Refusal::Privileged {
                        limit: self.limits.privileged,
                    });
                }
                counts.privileged += 1;
            }
            PeerClass::Privileged => {
                // A member: its own share, and never the part kept for root.
                let held = counts.per_member.get(&uid).copied().unwrap_or(0);
                if held >= self.limits.per_user {
                    return Err(Refusal::PerUser {
                        uid,
                        limit: self.limits.per_user,
                    });
                }
                let members_limit = self.limits.privileged.saturating_sub(ROOT_RESERVE);
                if counts.privileged >= members_limit {
                    return Err(Refusal::Privileged {
                        limit: members_limit,
                    });
                }
                counts.privileged += 1;
                counts.per_member.insert(uid, held + 1);
            }
            PeerClass::Unprivileged => {
                let held = counts.per_uid.get(&uid).copied().unwrap_or(0);
                if held >= self.limits.per_user {
                    return Err(Refusal::PerUser {
                        uid,
                        limit: self.limits.per_user,
                    });
                }
                if counts.unprivileged >= self.limits.unprivileged {
                    return Err(Refusal::Unprivileged {
                        limit: self.limits.unprivileged,
                    });
                }
                counts.unprivileged += 1;
                counts.per_uid.insert(uid, held + 1);
            }
        }
        Ok(Slot {
            counts: self.counts.clone(),
            uid,
            class,
        })
    }

    /// How many connections are held: (privileged, unprivileged, by this uid if unprivileged).
    pub fn held(&self, uid: u32) -> (usize, usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (
            counts.privileged,
            counts.unprivileged,
            counts.per_uid.get(&uid).copied().unwrap_or(0),
        )
    }
}

/// One admitted connection's place in its pool, given back on drop.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
    class: PeerClass,
}

impl Slot {
    /// The pool this connection counts against.
    pub fn class(&self) -> PeerClass {
        self.class
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match self.class {
            PeerClass::Privileged => {
                counts.privileged = counts.privileged.saturating_sub(1);
                if let Some(held) = counts.per_member.get_mut(&self.uid) {
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        counts.per_member.remove(&self.uid);
                    }
                }
            }
            PeerClass::Unprivileged => {
                counts.unprivileged = counts.unprivileged.saturating_sub(1);
                // Forget uids with no connection left, so the map is as small as the live set.
                if let Some(held) = counts.per_uid.get_mut(&self.uid) {
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        counts.per_uid.remove(&self.uid);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        privileged: 2,
        per_user: 2,
        unprivileged: 3,
    };

    #[test]
    fn one_user_cannot_take_more_than_its_share() {
        let admission = Admission::new(SMALL);
        let a = admission
            .admit(1000, PeerClass::Unprivileged)
            .expect("first");
        let _b = admission
            .admit(1000, PeerClass::Unprivileged)
            .expect("second");
        assert_eq!(
            admission
                .admit(1000, PeerClass::Unprivileged)
                .expect_err("third"),
            Refusal::PerUser {
                uid: 1000,
                limit: 2
            }
        );
        // Another user still gets in; a closed connection makes room again.
        let _c = admission
            .admit(1001, PeerClass::Unprivileged)
            .expect("other");
        drop(a);
        let _d = admission
            .admit(1000, PeerClass::Unprivileged)
            .expect("room again");
    }

    #[test]
    fn unprivileged_users_together_are_bounded_and_never_reach_the_privileged_pool() {
        let admission = Admission::new(SMALL);
        let held: Vec<Slot> = (0..3)
            .map(|uid| admission.admit(uid + 1000, PeerClass::Unprivileged))
            .collect::<Result<_, _>>()
            .expect("three users");
        assert_eq!(
            admission
                .admit(2000, PeerClass::Unprivileged)
                .expect_err("full"),
            Refusal::Unprivileged { limit: 3 }
        );
        // Root's allowance is untouched by all of that.
        let r1 = admission.admit(0, PeerClass::Privileged).expect("root");
        let _r2 = admission
            .admit(0, PeerClass::Privileged)
            .expect("root again");
        assert_eq!(
            admission.admit(0, PeerClass::Privileged).expect_err("full"),
            Refusal::Privileged { limit: 2 }
        );
        assert_eq!(r1.class(), PeerClass::Privileged);
        assert_eq!(admission.held(1000), (2, 3, 1));
        drop(held);
        assert_eq!(admission.held(1000), (2, 0, 0));
    }

    #[test]
    fn an_admin_group_member_cannot_lock_root_out() {
        // The second red team: a member held 200 idle connections and root got
        // "too many connections from root and the admin group".
        let admission = Admission::new(Limits::default());
        let mut held = Vec::new();
        for member in [1000, 1001, 1002, 1003, 1004] {
            while let Ok(slot) = admission.admit(member, PeerClass::Privileged) {
                held.push(slot);
            }
        }
        assert!(matches!(
            admission.admit(1000, PeerClass::Privileged),
            Err(Refusal::PerUser { uid: 1000, .. } | Refusal::Privileged { .. })
        ));
        assert_eq!(
            held.len(),
            PRIVILEGED_CONNECTIONS - ROOT_RESERVE,
            "members together stop short of root's reserve"
        );
        for _ in 0..ROOT_RESERVE {
            held.push(
                admission
                    .admit(0, PeerClass::Privileged)
                    .expect("root is served"),
            );
        }
    }

    #[test]
    fn refusals_name_the_limit() {
        let message = Refusal::PerUser {
            uid: 65534,
            limit: 32,
        }
        .to_string();
        assert!(
            message.contains("uid 65534") && message.contains("at most 32 per user"),
            "{message}"
        );
        assert!(
            Refusal::Unprivileged { limit: 512 }
                .to_string()
                .contains("at most 512")
        );
    }

    #[test]
    fn the_limits_fit_in_the_default_descriptor_limit() {
        let limits = Limits::default();
        // 1,024 is the soft RLIMIT_NOFILE systemd and most shells start a service with; the
        // daemon's own descriptors (netlink, D-Bus, the tunnel, the runtime) need well under 100.
        assert!(limits.privileged + limits.unprivileged + 100 < 1024);
        assert!(limits.per_user < limits.unprivileged);
    }
}
