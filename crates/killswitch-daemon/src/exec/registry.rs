//! The live `killswitch exec` namespaces: who holds which number, subnet and interface, the
//! per-user limit, and the file that lets a restarted daemon find them again.
//!
//! Pure bookkeeping: the kernel objects (namespace, veth, cgroup) are [`super::netns`]'s and
//! [`super::spawn`]'s. The file (`exec/scopes.json` in the state directory) is rewritten whenever a
//! scope is added or removed; a daemon that starts reads it, keeps the scopes whose cgroup still
//! holds a process and sweeps the rest ([`super::Exec::recover`]).

use ipnet::Ipv4Net;
use killswitch_types::InterfaceName;
use killswitch_types::exec::ExecScopeStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The default per-user limit on live exec namespaces (config.toml `exec_limit_per_user`).
pub const DEFAULT_LIMIT_PER_USER: usize = 16;

/// Each namespace's subnet: a /30 holds the host side's address, the namespace's, and nothing
/// else (network and broadcast).
pub const SCOPE_PREFIX: u8 = 30;

/// One live namespace, as kept in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What `status` shows.
    pub status: ExecScopeStatus,
    /// The cgroup's name under the daemon's subtree (`exec-<uid>-<id>`).
    pub cgroup: String,
    /// Whether the program is running yet (a scope being set up has no pid).
    pub running: bool,
    /// `--freeze-on-drop` / `--kill-on-drop`: kept so that a restarted daemon watches the
    /// program's cgroup again.
    #[serde(default)]
    pub on_drop: Option<killswitch_types::OnDrop>,
}

/// Why a scope could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The user holds as many as allowed.
    #[error(
        "uid {uid} already runs {live} programs under `killswitch exec` (the limit is {limit} per \
         user, config.toml exec_limit_per_user); wait for one to end"
    )]
    Limit {
        /// The user.
        uid: u32,
        /// How many are live.
        live: usize,
        /// The limit.
        limit: usize,
    },
    /// Every subnet of the block is taken.
    #[error("all {0} subnets of exec_subnet are in use")]
    Full(usize),
}

/// The registry: entries by id, and a generation that grows with every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Live scopes by id.
    pub entries: BTreeMap<u32, Entry>,
    /// Grows with every change ([`crate::core::Command::ExecScopes`]).
    pub generation: u64,
}

impl Registry {
    /// Reserves the lowest free id for `uid` in `block`, refusing over `limit`.
    pub fn allocate(
        &mut self,
        block: Ipv4Net,
        limit: usize,
        uid: u32,
        user: Option<String>,
        program: String,
    ) -> Result<Entry, Refused> {
        let live = self
            .entries
            .values()
            .filter(|e| e.status.uid == uid)
            .count();
        if live >= limit {
            return Err(Refused::Limit { uid, live, limit });
        }
        let capacity = capacity(block);
        let id = (0..capacity)
            .find(|id| !self.entries.contains_key(id))
            .ok_or(Refused::Full(capacity as usize))?;
        let subnet = subnet_of(block, id).ok_or(Refused::Full(capacity as usize))?;
        let interface = interface_of(id).ok_or(Refused::Full(capacity as usize))?;
        let entry = Entry {
            status: ExecScopeStatus {
                id,
                uid,
                user,
                program,
                pid: 0,
                interface,
                subnet,
            },
            cgroup: format!("exec-{uid}-{id}"),
            running: false,
            on_drop: None,
        };
        self.entries.insert(id, entry.clone());
        self.generation += 1;
        Ok(entry)
    }

    /// Records that scope `id`'s program runs as `pid`.
    pub fn started(&mut self, id: u32, pid: u32) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.status.pid = pid;
            entry.running = true;
            self.generation += 1;
        }
    }

    /// Forgets scope `id`.
    pub fn remove(&mut self, id: u32) -> Option<Entry> {
        let removed = self.entries.remove(&id);
        self.generation += 1;
        removed
    }

    /// The scopes as `status` and the rules see them.
    pub fn statuses(&self) -> Vec<ExecScopeStatus> {
        self.entries.values().map(|e| e.status.clone()).collect()
    }
}

/// How many /30 subnets `block` holds.
pub fn capacity(block: Ipv4Net) -> u32 {
    if block.prefix_len() > SCOPE_PREFIX {
        return 0;
    }
    1u32 << (SCOPE_PREFIX - block.prefix_len())
}

/// The `id`th /30 of `block`.
pub fn subnet_of(block: Ipv4Net, id: u32) -> Option<Ipv4Net> {
    if id >= capacity(block) {
        return None;
    }
    let base = u32::from(block.trunc().network());
    Ipv4Net::new(Ipv4Addr::from(base + id * 4), SCOPE_PREFIX).ok()
}

/// The host side's address in `subnet` (the first host).
pub fn host_address(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The namespace side's address in `subnet` (the second host).
pub fn namespace_address(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 2)
}

/// `ksx<id>`.
pub fn interface_of(id: u32) -> Option<InterfaceName> {
    InterfaceName::new(format!("{}{id}", killswitch_policy::EXEC_INTERFACE_PREFIX)).ok()
}

/// Checks config.toml's `exec_subnet`: IPv4, room for at least one namespace.
pub fn check_block(block: Ipv4Net) -> Result<(), String> {
    if capacity(block) == 0 {
        return Err(format!(
            "exec_subnet {block} is too small: each `killswitch exec` namespace needs a /30"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Ipv4Net {
        "198.18.0.0/16".parse().expect("literal")
    }

    #[test]
    fn ids_subnets_and_names_follow_each_other() {
        let mut registry = Registry::default();
        let a = registry
            .allocate(block(), 2, 1000, None, "curl".into())
            .expect("first");
        let b = registry
            .allocate(block(), 2, 1000, None, "curl".into())
            .expect("second");
        assert_eq!(a.status.id, 0);
        assert_eq!(a.status.interface.as_str(), "ksx0");
        assert_eq!(a.status.subnet.to_string(), "198.18.0.0/30");
        assert_eq!(b.status.subnet.to_string(), "198.18.0.4/30");
        assert_eq!(host_address(b.status.subnet).to_string(), "198.18.0.5");
        assert_eq!(namespace_address(b.status.subnet).to_string(), "198.18.0.6");
        assert_eq!(a.cgroup, "exec-1000-0");
        let generation = registry.generation;
        registry.remove(0);
        assert!(registry.generation > generation);
        let c = registry
            .allocate(block(), 2, 1000, None, "curl".into())
            .expect("a freed id is reused");
        assert_eq!(c.status.id, 0);
    }

    #[test]
    fn the_limit_is_per_user_and_names_itself() {
        let mut registry = Registry::default();
        for _ in 0..3 {
            registry
                .allocate(block(), 3, 65534, None, "sh".into())
                .expect("under the limit");
        }
        let refused = registry
            .allocate(block(), 3, 65534, None, "sh".into())
            .expect_err("over the limit");
        let text = refused.to_string();
        assert!(
            text.contains("limit is 3") && text.contains("runs 3"),
            "{text}"
        );
        assert!(
            registry
                .allocate(block(), 3, 1000, None, "sh".into())
                .is_ok()
        );
    }

    #[test]
    fn a_small_block_fills_up() {
        let tiny: Ipv4Net = "10.9.9.0/29".parse().expect("literal");
        assert_eq!(capacity(tiny), 2);
        let mut registry = Registry::default();
        registry.allocate(tiny, 9, 1, None, "a".into()).expect("1");
        registry.allocate(tiny, 9, 1, None, "a".into()).expect("2");
        assert_eq!(
            registry.allocate(tiny, 9, 1, None, "a".into()),
            Err(Refused::Full(2))
        );
        assert!(check_block("10.0.0.0/31".parse().expect("literal")).is_err());
    }
}
