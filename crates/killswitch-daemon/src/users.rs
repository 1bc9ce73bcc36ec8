//! Tunnel-only users (issue 15): users whose processes may send only through the tunnel, in every
//! state, whatever the rest of the machine may do.
//!
//! This module owns the part that touches the system: turning what the administrator wrote (a
//! user name, `debian-transmission`, or a number, `1001`) into a uid, through the system's user
//! database (`getpwnam`, so NSS sources count as well as /etc/passwd). It is called where the
//! daemon already does I/O: when config.toml is loaded or reloaded, and when `killswitch users
//! add|remove` is parsed; the state machine only ever sees the resolved entries. The rules those
//! uids get are the policy's ([`killswitch_policy::compile_for`], `tunnel_only_uids`).
//!
//! An entry of the configuration that names no user is refused with a message in `status` (as
//! other refused exceptions are), and the others still apply. One the CLI adds is refused at
//! once. A CLI-added entry is kept with the uid it resolved to, so that a restart needs no lookup
//! and a user renamed later keeps being confined by uid.

use serde::{Deserialize, Serialize};

/// A tunnel-only user: the entry as written, and the uid it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelOnlyUser {
    /// As the administrator wrote it: a name or a number.
    pub user: String,
    /// The uid it resolved to.
    pub uid: u32,
}

/// The uid `user` stands for: a number as it is, a name looked up in the user database. The error
/// says which and why, and is shown to the administrator as it is.
pub fn resolve(user: &str) -> Result<TunnelOnlyUser, String> {
    let user = user.trim();
    if user.is_empty() {
        return Err("a tunnel-only user must be a user name or a uid, not empty".to_owned());
    }
    let uid = if user.bytes().all(|b| b.is_ascii_digit()) {
        user.parse::<u32>()
            .map_err(|_| format!("tunnel-only user {user}: not a uid (too large)"))?
    } else {
        match nix::unistd::User::from_name(user) {
            Ok(Some(found)) => found.uid.as_raw(),
            Ok(None) => return Err(format!("tunnel-only user {user:?}: no such user")),
            Err(e) => {
                return Err(format!(
                    "tunnel-only user {user:?}: cannot look it up in the user database: {e}"
                ));
            }
        }
    };
    // (uid_t)-1 means "no uid" to the kernel, which refuses it in a routing rule: the routing
    // layer would be missing while the firewall held. Root's own processes (the daemon, the
    // tunnel's program) confined to the tunnel would cut the tunnel off from its server.
    if uid == u32::MAX {
        return Err(format!(
            "tunnel-only user {user}: uid 4294967295 is (uid_t)-1, which no process runs as"
        ));
    }
    if uid == 0 {
        return Err(format!(
            "tunnel-only user {user}: root cannot be tunnel-only (the tunnel's own program and \
             this daemon run as root)"
        ));
    }
    Ok(TunnelOnlyUser {
        user: user.to_owned(),
        uid,
    })
}

/// Resolves config.toml's `tunnel_only_users`: each entry resolved, or why it is refused.
pub fn resolve_all(users: &[String]) -> Vec<Result<TunnelOnlyUser, String>> {
    users.iter().map(|u| resolve(u)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_uids_and_names_are_looked_up() {
        assert_eq!(resolve("1001").map(|u| u.uid), Ok(1001));
        // Every Linux system has `nobody` (uid 65534 here; the number is the system's).
        let nobody = resolve("nobody").expect("nobody exists");
        assert_eq!(nobody.user, "nobody");
        assert_ne!(nobody.uid, 0);
    }

    #[test]
    fn what_is_not_a_user_is_refused_with_its_reason() {
        let no_such = resolve("no-such-user-ks15").expect_err("no such user");
        assert!(no_such.contains("no-such-user-ks15") && no_such.contains("no such user"));
        assert!(resolve("").expect_err("empty").contains("empty"));
        assert!(
            resolve("4294967296")
                .expect_err("too large")
                .contains("too large")
        );
        assert!(resolve("4294967295").expect_err("-1").contains("(uid_t)-1"));
        assert!(resolve("root").expect_err("root").contains("root cannot"));
        assert!(resolve("0").expect_err("root").contains("root cannot"));
    }
}
