//! Which network interfaces the daemon created: the only ones it may ever remove or reuse.
//!
//! `killswitch up` names an interface (`wg0`, or whatever `--interface` says). An interface of
//! that name may already exist: a wg-quick tunnel, an OpenVPN tun device, a container's veth, even
//! the machine's own NIC. Deleting it, or attaching to it (a TUN device of that name is attached
//! to, not created), would destroy or hijack someone else's network. So the daemon records every
//! interface it creates — name, index, kind and the boot it was created in — in `devices.json` in
//! the state directory, and an existing interface counts as its own only when a record matches it
//! exactly: typically a kernel WireGuard interface left behind by a daemon that was killed, which
//! the next one removes before creating its own. Anything else is refused with an error that
//! names the interface and who may own it, and nothing changes.
//!
//! The boot id makes a record from an earlier boot worthless: interface indexes start again at
//! every boot, and a kernel interface never survives one.

use crate::manager::Factory;
use crate::store::write_atomically;
use killswitch_tunnel::backend::{Backend, BackendKind};
use killswitch_tunnel::config::TunnelConfig;
use killswitch_tunnel::uapi::PeerStats;
use killswitch_tunnel::{TunnelError, netdev};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "devices.json";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// One interface the daemon created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// Its name.
    pub name: String,
    /// Its index when it was created.
    pub index: u32,
    /// Its rtnetlink kind (`wireguard`, `tun`).
    pub kind: Option<String>,
    /// The boot it was created in.
    pub boot_id: String,
    /// The network namespace it was created in (the inode of its `ns/net`): an index and a
    /// name mean nothing in another namespace. Records without it are never anyone's.
    #[serde(default)]
    pub netns: Option<u64>,
    /// The process that created it. A userspace device (`tun`) dies with that process, so a
    /// record of one is ours only within that same process.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// Where a judgement is made: this boot, this network namespace, this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Here {
    /// This boot's id.
    pub boot_id: String,
    /// This network namespace's inode.
    pub netns: Option<u64>,
    /// This process's id.
    pub pid: u32,
}

impl Here {
    /// Where this process runs now.
    pub fn now() -> Self {
        use std::os::unix::fs::MetadataExt;
        Here {
            boot_id: std::fs::read_to_string(BOOT_ID)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            // thread-self: a thread may have entered another namespace than its process (tests).
            netns: std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| m.ino())
                .ok(),
            pid: std::process::id(),
        }
    }
}

/// The kinds of interface the daemon creates: the only kinds it may ever remove.
const OWN_KINDS: [&str; 2] = ["wireguard", "tun"];

/// What an existing interface of the wanted name is to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// No interface of that name: free to create.
    Free,
    /// One the daemon created (and recorded): remove it before creating a new one.
    Ours {
        /// Its index.
        index: u32,
    },
    /// Someone else's: never touched.
    Foreign {
        /// Its index.
        index: u32,
        /// Its rtnetlink kind, if it has one.
        kind: Option<String>,
    },
}

/// Decides what an existing interface is. Pure: `existing` is what the kernel has under `name`
/// (index and kind), `records` what the daemon wrote down, `here` where the judgement is made.
pub fn judge(
    name: &str,
    existing: Option<(u32, Option<String>)>,
    records: &[DeviceRecord],
    here: &Here,
) -> Existing {
    let Some((index, kind)) = existing else {
        return Existing::Free;
    };
    let ours = records.iter().any(|r| {
        r.name == name
            && r.index == index
            && r.kind == kind
            && kind.as_deref().is_some_and(|k| OWN_KINDS.contains(&k))
            && r.boot_id == here.boot_id
            && !here.boot_id.is_empty()
            && r.netns.is_some()
            && r.netns == here.netns
            && (kind.as_deref() != Some("tun") || r.pid == Some(here.pid))
    });
    if ours {
        Existing::Ours { index }
    } else {
        Existing::Foreign { index, kind }
    }
}

/// The message for an interface that is not the daemon's: names it, says what kind it is and
/// who may own it, and that nothing changed.
pub fn foreign_message(name: &str, index: u32, kind: Option<&str>) -> String {
    let (what, owner) = match kind {
        Some("wireguard") => (
            "a WireGuard interface".to_owned(),
            format!("wg-quick (wg-quick@{name}.service), NetworkManager or systemd-networkd"),
        ),
        Some("tun") => (
            "a TUN/TAP device".to_owned(),
            format!("a VPN client such as OpenVPN (openvpn@{name}.service) or wireguard-go"),
        ),
        Some(kind @ ("veth" | "bridge" | "macvlan" | "ipvlan" | "vxlan")) => (
            format!("a {kind} interface"),
            "a container or VM runtime, or the system's network configuration".to_owned(),
        ),
        Some(kind) => (
            format!("a {kind} interface"),
            "the system's network configuration or another program".to_owned(),
        ),
        None => (
            "a network device".to_owned(),
            "the system (it may be a physical interface)".to_owned(),
        ),
    };
    format!(
        "interface {name} already exists ({what}, index {index}) and killswitchd did not create it; \
         it may belong to {owner}. Nothing was changed: choose another name with --interface, or \
         remove {name} yourself if nothing uses it"
    )
}

/// The record of the daemon's interfaces, in a state directory.
#[derive(Debug, Clone)]
pub struct Devices {
    path: PathBuf,
    here: Here,
}

impl Devices {
    /// The record in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Devices {
            path: state_dir.join(FILE_NAME),
            here: Here::now(),
        }
    }

    /// What the kernel has under `name`, judged against the record.
    pub fn existing(&self, name: &str) -> Result<Existing, TunnelError> {
        let existing = match netdev::index(name) {
            Some(index) => Some((index, netdev::kind(index)?)),
            None => None,
        };
        Ok(judge(name, existing, &self.load(), &self.here))
    }

    /// Fails, with a message naming the interface and who may own it, if `name` exists and is
    /// not the daemon's.
    pub fn check(&self, name: &str) -> Result<(), String> {
        match self.existing(name) {
            Ok(Existing::Foreign { index, kind }) => {
                Err(foreign_message(name, index, kind.as_deref()))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "cannot look at interface {name}: {}",
                crate::firewall::chain(&e)
            )),
        }
    }

    /// Makes way for a new interface `name`: removes one the daemon created earlier (a crashed
    /// daemon's), refuses if someone else's is there.
    fn make_way(&self, name: &str) -> Result<(), TunnelError> {
        match self.existing(name)? {
            Existing::Free => Ok(()),
            Existing::Ours { index } => {
                tracing::info!(
                    "removing {name} (index {index}), which an earlier killswitchd created"
                );
                netdev::delete(index)?;
                self.forget(name, index);
                Ok(())
            }
            Existing::Foreign { index, kind } => Err(TunnelError::Backend(foreign_message(
                name,
                index,
                kind.as_deref(),
            ))),
        }
    }

    /// Removes every interface the record says the daemon created and that is still there as
    /// recorded (what a crashed daemon left), and returns their names. For `--teardown`.
    pub fn remove_all(&self) -> Vec<String> {
        let mut removed = Vec::new();
        for record in self.load() {
            match self.existing(&record.name) {
                Ok(Existing::Ours { index }) if index == record.index => {
                    match netdev::delete(index) {
                        Ok(()) => {
                            removed.push(record.name.clone());
                            self.forget(&record.name, record.index);
                        }
                        Err(e) => tracing::warn!(
                            "cannot remove {}: {}",
                            record.name,
                            crate::firewall::chain(&e)
                        ),
                    }
                }
                // Gone from the namespace it was made in: nothing left to remember. A record of
                // another namespace stays for a teardown there.
                Ok(Existing::Free) if record.netns == self.here.netns => {
                    self.forget(&record.name, record.index);
                }
                _ => {}
            }
        }
        removed
    }

    fn load(&self) -> Vec<DeviceRecord> {
        // Only a record the daemon's own user wrote says anything: records make interfaces
        // removable.
        if let Ok(metadata) = std::fs::symlink_metadata(&self.path) {
            let me = nix::unistd::geteuid().as_raw();
            if !metadata.is_file() || std::os::unix::fs::MetadataExt::uid(&metadata) != me {
                tracing::warn!(
                    "{} is not a regular file of uid {me}; it is not trusted",
                    self.path.display()
                );
                return Vec::new();
            }
        }
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{} is unreadable ({e}); treating every existing interface as someone else's",
                    self.path.display()
                );
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    fn save(&self, records: &[DeviceRecord]) {
        let written = serde_json::to_vec_pretty(records)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_atomically(&self.path, &json, 0o600)
            });
        if let Err(e) = written {
            // The interface works regardless; after a crash, the next daemon will refuse to
            // remove it and say so.
            tracing::warn!("cannot record interfaces in {}: {e}", self.path.display());
        }
    }

    fn record(&self, backend: &dyn Backend) {
        let kind = netdev::kind(backend.index()).ok().flatten();
        let mut records = self.load();
        records.retain(|r| r.name != backend.interface());
        records.push(DeviceRecord {
            name: backend.interface().to_owned(),
            index: backend.index(),
            kind,
            boot_id: self.here.boot_id.clone(),
            netns: self.here.netns,
            pid: Some(self.here.pid),
        });
        self.save(&records);
    }

    fn forget(&self, name: &str, index: u32) {
        let mut records = self.load();
        let before = records.len();
        records.retain(|r| !(r.name == name && r.index == index));
        if records.len() != before {
            self.save(&records);
        }
    }
}

/// A factory that creates interfaces through `create` only where [`Devices`] allows, records
/// them, and forgets them when they are dropped.
pub fn owned_factory(devices: Devices, mut create: Factory) -> Factory {
    Box::new(move |name: &str| {
        devices.make_way(name)?;
        let device = create(name)?;
        devices.record(device.as_ref());
        Ok(Box::new(Owned {
            device: Some(device),
            devices: devices.clone(),
        }) as Box<dyn Backend>)
    })
}

/// A device the daemon created and recorded; forgetting the record follows its removal.
#[derive(Debug)]
struct Owned {
    device: Option<Box<dyn Backend>>,
    devices: Devices,
}

impl Owned {
    fn inner(&self) -> Result<&dyn Backend, TunnelError> {
        self.device
            .as_deref()
            .ok_or_else(|| TunnelError::Backend("the device was removed".to_owned()))
    }
}

impl Backend for Owned {
    fn kind(&self) -> BackendKind {
        self.device
            .as_ref()
            .map_or(BackendKind::Userspace, |d| d.kind())
    }

    fn interface(&self) -> &str {
        self.device.as_ref().map_or("", |d| d.interface())
    }

    fn index(&self) -> u32 {
        self.device.as_ref().map_or(0, |d| d.index())
    }

    fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError> {
        self.device
            .as_mut()
            .ok_or_else(|| TunnelError::Backend("the device was removed".to_owned()))?
            .configure(config, fwmark)
    }

    fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
        self.inner()?.stats()
    }

    fn presence(&self) -> netdev::Presence {
        self.device
            .as_ref()
            .map_or(netdev::Presence::Gone, |d| d.presence())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(device) = self.device.take() {
            let (name, index) = (device.interface().to_owned(), device.index());
            // The device removes its interface when dropped; then the record goes.
            drop(device);
            self.devices.forget(&name, index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, index: u32, kind: &str) -> DeviceRecord {
        DeviceRecord {
            name: name.to_owned(),
            index,
            kind: Some(kind.to_owned()),
            boot_id: "boot-a".to_owned(),
            netns: Some(4026531840),
            pid: Some(100),
        }
    }

    fn here(boot_id: &str) -> Here {
        Here {
            boot_id: boot_id.to_owned(),
            netns: Some(4026531840),
            pid: 100,
        }
    }

    #[test]
    fn only_an_exact_record_of_this_boot_makes_an_interface_ours() {
        let records = [record("wg0", 7, "wireguard")];
        let wg = |index| Some((index, Some("wireguard".to_owned())));
        assert_eq!(
            judge("wg0", None, &records, &here("boot-a")),
            Existing::Free
        );
        assert_eq!(
            judge("wg0", wg(7), &records, &here("boot-a")),
            Existing::Ours { index: 7 }
        );
        // Another index: someone made a new wg0 after ours went.
        assert!(matches!(
            judge("wg0", wg(8), &records, &here("boot-a")),
            Existing::Foreign { index: 8, .. }
        ));
        // Another kind under the same index and name.
        assert!(matches!(
            judge(
                "wg0",
                Some((7, Some("veth".to_owned()))),
                &records,
                &here("boot-a")
            ),
            Existing::Foreign { .. }
        ));
        // A record from an earlier boot says nothing about this one.
        assert!(matches!(
            judge("wg0", wg(7), &records, &here("boot-b")),
            Existing::Foreign { .. }
        ));
        // Without a boot id nothing can be proven ours.
        let unknown = [DeviceRecord {
            boot_id: String::new(),
            ..record("wg0", 7, "wireguard")
        }];
        assert!(matches!(
            judge("wg0", wg(7), &unknown, &here("")),
            Existing::Foreign { .. }
        ));
    }

    #[test]
    fn a_record_from_another_namespace_or_process_or_of_a_foreign_kind_owns_nothing() {
        // The red team: a killed daemon's record (wg0, index 3, tun) made the next daemon, and
        // teardown, in another namespace remove a foreign tun wg0 that happened to get index 3.
        let tun = |index| Some((index, Some("tun".to_owned())));
        let records = [record("wg0", 3, "tun")];
        let elsewhere = Here {
            netns: Some(4026532000),
            ..here("boot-a")
        };
        assert!(matches!(
            judge("wg0", tun(3), &records, &elsewhere),
            Existing::Foreign { .. }
        ));
        // The same namespace, another process: a userspace device died with its process.
        let later = Here {
            pid: 101,
            ..here("boot-a")
        };
        assert!(matches!(
            judge("wg0", tun(3), &records, &later),
            Existing::Foreign { .. }
        ));
        assert_eq!(
            judge("wg0", tun(3), &records, &here("boot-a")),
            Existing::Ours { index: 3 }
        );
        // A kernel WireGuard interface outlives its process: ours in the same namespace.
        let wg = [record("wg0", 3, "wireguard")];
        assert_eq!(
            judge("wg0", Some((3, Some("wireguard".to_owned()))), &wg, &later),
            Existing::Ours { index: 3 }
        );
        // A kind the daemon never creates is never its own, whatever a record says.
        let veth = [record("vfake", 5, "veth")];
        assert!(matches!(
            judge(
                "vfake",
                Some((5, Some("veth".to_owned()))),
                &veth,
                &here("boot-a")
            ),
            Existing::Foreign { .. }
        ));
        // A record from before the namespace was written down owns nothing.
        let old = [DeviceRecord {
            netns: None,
            ..record("wg0", 3, "wireguard")
        }];
        assert!(matches!(
            judge(
                "wg0",
                Some((3, Some("wireguard".to_owned()))),
                &old,
                &here("boot-a")
            ),
            Existing::Foreign { .. }
        ));
    }

    #[test]
    fn the_refusal_names_the_interface_and_a_likely_owner() {
        let message = foreign_message("eth0", 3, Some("veth"));
        assert!(message.starts_with("interface eth0 already exists (a veth interface, index 3)"));
        assert!(message.contains("container"), "{message}");
        assert!(message.contains("Nothing was changed"), "{message}");
        assert!(foreign_message("wg0", 4, Some("wireguard")).contains("wg-quick@wg0.service"));
        assert!(foreign_message("tun0", 5, Some("tun")).contains("OpenVPN"));
        assert!(foreign_message("eno1", 2, None).contains("physical"));
    }

    #[test]
    fn records_round_trip_and_an_unreadable_record_owns_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let devices = Devices {
            path: dir.path().join(FILE_NAME),
            here: here("boot-a"),
        };
        devices.save(&[record("wg0", 7, "wireguard")]);
        assert_eq!(devices.load(), vec![record("wg0", 7, "wireguard")]);
        devices.forget("wg0", 8);
        assert_eq!(
            devices.load().len(),
            1,
            "another index is another interface"
        );
        devices.forget("wg0", 7);
        assert!(devices.load().is_empty());
        std::fs::write(dir.path().join(FILE_NAME), b"{").expect("write");
        assert!(devices.load().is_empty());
    }
}
