//! The kernel backend: a WireGuard interface created over rtnetlink and configured over generic
//! netlink, for kernels that have WireGuard (this project's CI machine does not; the message
//! building and parsing are unit-tested, the path itself reports "unavailable" there and the
//! userspace backend takes over).

use crate::backend::{Backend, BackendKind};
use crate::config::TunnelConfig;
use crate::key::PublicKey;
use crate::uapi::{DeviceInfo, PeerStats};
use crate::{TunnelError, netdev};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// A kernel WireGuard interface; deleted on drop.
#[derive(Debug)]
pub struct Kernel {
    interface: String,
    index: u32,
    genl: Genl,
}

impl Kernel {
    /// Creates interface `name`, or `Ok(None)` when this kernel has no WireGuard. An existing
    /// interface of that name is never touched: creating fails (`EEXIST`).
    pub fn create(name: &str) -> Result<Option<Self>, TunnelError> {
        if !netdev::create_wireguard(name)? {
            return Ok(None);
        }
        let index = netdev::index(name)
            .ok_or_else(|| TunnelError::Backend(format!("{name} vanished after creation")))?;
        match Genl::open() {
            Ok(genl) => Ok(Some(Kernel {
                interface: name.to_owned(),
                index,
                genl,
            })),
            Err(e) => {
                let _ = netdev::delete(index);
                Err(e)
            }
        }
    }
}

impl Backend for Kernel {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    fn index(&self) -> u32 {
        self.index
    }

    fn configure(&mut self, config: &TunnelConfig, fwmark: u32) -> Result<(), TunnelError> {
        let message = set_device(self.index, config, fwmark);
        self.genl.request(message, NLM_F_REQUEST | NLM_F_ACK)?;
        netdev::configure(self.index, &config.addresses, config.mtu)
    }

    fn stats(&self) -> Result<Option<PeerStats>, TunnelError> {
        let message = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfIndex(self.index)],
        };
        let replies = self.genl.request(message, NLM_F_REQUEST | NLM_F_DUMP)?;
        Ok(peer_stats(&replies))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // Only while the index still carries our name: never someone else's interface.
        if netdev::index(&self.interface) == Some(self.index) {
            let _ = netdev::delete(self.index);
        }
    }
}

/// Reads the fwmark and peer endpoints of kernel WireGuard interface `interface`; `Ok(None)`
/// when this kernel has no WireGuard or the interface is not a kernel WireGuard device (a
/// userspace one answers on its UAPI socket instead).
pub fn device(interface: &str) -> Result<Option<DeviceInfo>, TunnelError> {
    Ok(get_device(interface).map(|replies| device_info(&replies)))
}

/// The `GET_DEVICE` replies of kernel WireGuard interface `interface`; `None` when this kernel
/// has no WireGuard or the interface is not a kernel WireGuard device.
fn get_device(interface: &str) -> Option<Vec<WireguardMessage>> {
    let index = netdev::index(interface)?;
    let genl = Genl::open().ok()?;
    let message = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfIndex(index)],
    };
    // An error (ENODEV / EOPNOTSUPP): an interface, but not kernel WireGuard.
    genl.request(message, NLM_F_REQUEST | NLM_F_DUMP).ok()
}

/// Sets only the fwmark of kernel WireGuard interface `interface` (its key and peers stay).
pub fn set_fwmark(interface: &str, fwmark: u32) -> Result<(), TunnelError> {
    let index = netdev::index(interface).ok_or_else(|| TunnelError::Gone(interface.to_owned()))?;
    let genl = Genl::open()?;
    genl.request(set_fwmark_message(index, fwmark), NLM_F_REQUEST | NLM_F_ACK)?;
    Ok(())
}

/// WG_CMD_SET_DEVICE carrying only the interface and the mark: nothing else changes.
fn set_fwmark_message(index: u32, fwmark: u32) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfIndex(index),
            WireguardAttribute::Fwmark(fwmark),
        ],
    }
}

/// The fwmark and the peers' endpoints from WG_CMD_GET_DEVICE replies (a device with many peers
/// answers in several messages).
fn device_info(replies: &[WireguardMessage]) -> DeviceInfo {
    let mut info = DeviceInfo::default();
    for reply in replies {
        for attribute in &reply.attributes {
            match attribute {
                WireguardAttribute::Fwmark(mark) if *mark != 0 => info.fwmark = Some(*mark),
                WireguardAttribute::Peers(peers) => {
                    for WireguardPeer(attributes) in peers {
                        info.peers += 1;
                        info.endpoints
                            .extend(attributes.iter().find_map(|a| match a {
                                WireguardPeerAttribute::Endpoint(e) if !e.ip().is_unspecified() => {
                                    Some(*e)
                                }
                                _ => None,
                            }));
                    }
                }
                _ => {}
            }
        }
    }
    info
}

/// WG_CMD_SET_DEVICE for `config`: key, port, mark, and exactly one peer (others replaced).
fn set_device(index: u32, config: &TunnelConfig, fwmark: u32) -> WireguardMessage {
    let peer = &config.peer;
    let mut peer_attributes = vec![
        WireguardPeerAttribute::PublicKey(*peer.public_key.bytes()),
        WireguardPeerAttribute::Endpoint(peer.endpoint),
        WireguardPeerAttribute::PersistentKeepalive(peer.persistent_keepalive.unwrap_or(0)),
        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        WireguardPeerAttribute::AllowedIps(
            peer.allowed_ips
                .iter()
                .map(|net| {
                    WireguardAllowedIp(vec![
                        WireguardAllowedIpAttr::Family(match net.addr() {
                            IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
                            IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
                        }),
                        WireguardAllowedIpAttr::IpAddr(net.network()),
                        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
                    ])
                })
                .collect(),
        ),
    ];
    if let Some(psk) = &peer.preshared_key {
        peer_attributes.push(WireguardPeerAttribute::PresharedKey(*psk.bytes()));
    }
    let mut attributes = vec![
        WireguardAttribute::IfIndex(index),
        WireguardAttribute::PrivateKey(*config.private_key.bytes()),
        WireguardAttribute::Fwmark(fwmark),
        WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
        WireguardAttribute::Peers(vec![WireguardPeer(peer_attributes)]),
    ];
    if let Some(port) = config.listen_port {
        attributes.push(WireguardAttribute::ListenPort(port));
    }
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes,
    }
}

/// The first peer's statistics from WG_CMD_GET_DEVICE replies.
fn peer_stats(replies: &[WireguardMessage]) -> Option<PeerStats> {
    all_peer_stats(replies).into_iter().next()
}

/// Every peer's statistics from WG_CMD_GET_DEVICE replies (a device with many peers answers in
/// several messages), in the device's order; a peer without a readable key is left out.
fn all_peer_stats(replies: &[WireguardMessage]) -> Vec<PeerStats> {
    let mut all = Vec::new();
    for reply in replies {
        for attribute in &reply.attributes {
            let WireguardAttribute::Peers(peers) = attribute else {
                continue;
            };
            for WireguardPeer(attributes) in peers {
                let (mut key, mut handshake, mut rx, mut tx) = (None, None, 0, 0);
                for a in attributes {
                    match a {
                        WireguardPeerAttribute::PublicKey(k) => key = Some(*k),
                        WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 => {
                            handshake = Some(
                                SystemTime::UNIX_EPOCH
                                    + Duration::new(
                                        t.seconds as u64,
                                        t.nano_seconds.clamp(0, 999_999_999) as u32,
                                    ),
                            );
                        }
                        WireguardPeerAttribute::RxBytes(b) => rx = *b,
                        WireguardPeerAttribute::TxBytes(b) => tx = *b,
                        _ => {}
                    }
                }
                if let Some(k) = key.and_then(|k| PublicKey::parse(&base64_of(&k)).ok()) {
                    all.push(PeerStats {
                        public_key: k,
                        last_handshake: handshake,
                        rx_bytes: rx,
                        tx_bytes: tx,
                    });
                }
            }
        }
    }
    all
}

/// Every peer's statistics of kernel WireGuard interface `interface`; `Ok(None)` when this
/// kernel has no WireGuard or the interface is not a kernel WireGuard device.
pub fn peers(interface: &str) -> Result<Option<Vec<PeerStats>>, TunnelError> {
    Ok(get_device(interface).map(|replies| all_peer_stats(&replies)))
}

fn base64_of(bytes: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A generic netlink socket with the WireGuard family resolved.
#[derive(Debug)]
struct Genl {
    socket: Socket,
    family: u16,
}

impl Genl {
    fn open() -> Result<Self, TunnelError> {
        let io = |e: std::io::Error| TunnelError::Backend(format!("generic netlink: {e}"));
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        let mut genl = Genl { socket, family: 0 };
        let lookup = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".to_owned())],
        });
        let replies: Vec<GenlMessage<GenlCtrl>> =
            genl.exchange(lookup, NLM_F_REQUEST | NLM_F_ACK, 0x10)?;
        genl.family = replies
            .iter()
            .flat_map(|r| r.payload.nlas.iter())
            .find_map(|a| {
                if let GenlCtrlAttrs::FamilyId(id) = a {
                    Some(*id)
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                TunnelError::Backend(
                    "the kernel has no wireguard generic netlink family".to_owned(),
                )
            })?;
        Ok(genl)
    }

    fn request(
        &self,
        payload: WireguardMessage,
        flags: u16,
    ) -> Result<Vec<WireguardMessage>, TunnelError> {
        let mut message = GenlMessage::from_payload(payload);
        message.set_resolved_family_id(self.family);
        let replies: Vec<GenlMessage<WireguardMessage>> =
            self.exchange(message, flags, self.family)?;
        Ok(replies.into_iter().map(|r| r.payload).collect())
    }

    fn exchange<F>(
        &self,
        message: GenlMessage<F>,
        flags: u16,
        family: u16,
    ) -> Result<Vec<GenlMessage<F>>, TunnelError>
    where
        F: netlink_packet_generic::GenlFamily + Clone + std::fmt::Debug + PartialEq + Eq,
        GenlMessage<F>:
            netlink_packet_core::NetlinkSerializable + netlink_packet_core::NetlinkDeserializable,
    {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = 1;
        header.message_type = family;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buffer = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buffer);
        let io = |e: std::io::Error| TunnelError::Backend(format!("generic netlink: {e}"));
        self.socket.send(&buffer, 0).map_err(io)?;
        let mut out = Vec::new();
        let mut receive = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut receive[..], 0).map_err(io)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<GenlMessage<F>>::deserialize(&receive[offset..n])
                    .map_err(|e| TunnelError::Backend(format!("generic netlink reply: {e}")))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(TunnelError::Backend(
                        "zero-length generic netlink reply".to_owned(),
                    ));
                }
                offset += length.next_multiple_of(4);
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Error(e) if e.raw_code() != 0 => {
                        return Err(TunnelError::Backend(format!(
                            "the kernel refused: {}",
                            std::io::Error::from_raw_os_error(-e.raw_code())
                        )));
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
            if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use netlink_packet_wireguard::WireguardTimeSpec;

    const CONFIG: &str = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.64.0.2/32\n\
        [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0\n";

    #[test]
    fn set_device_replaces_peers_and_allowed_ips() {
        let config = parse("t.conf", CONFIG).expect("valid");
        let message = set_device(7, &config, 0xca6c);
        assert_eq!(message.cmd, WireguardCmd::SetDevice);
        assert!(message.attributes.contains(&WireguardAttribute::IfIndex(7)));
        assert!(
            message
                .attributes
                .contains(&WireguardAttribute::Fwmark(0xca6c))
        );
        assert!(message.attributes.contains(&WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers
        )));
        let peers = message.attributes.iter().find_map(|a| {
            if let WireguardAttribute::Peers(p) = a {
                Some(p)
            } else {
                None
            }
        });
        let peer = &peers.expect("one peer")[0].0;
        assert!(peer.contains(&WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps
        )));
        assert!(peer.contains(&WireguardPeerAttribute::Endpoint(
            "198.51.100.1:51820".parse().expect("addr")
        )));
        // It serialises: the kernel would get a well-formed message.
        let mut genl = GenlMessage::from_payload(message);
        genl.set_resolved_family_id(42);
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(genl));
        packet.finalize();
        assert!(packet.buffer_len() > 100);
    }

    #[test]
    fn stats_from_a_get_device_reply() {
        let key = PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").expect("valid");
        let reply = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*key.bytes()),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                    seconds: 1_800_000_000,
                    nano_seconds: 5,
                }),
                WireguardPeerAttribute::RxBytes(10),
                WireguardPeerAttribute::TxBytes(20),
            ])])],
        };
        let stats = peer_stats(&[reply]).expect("a peer");
        assert_eq!(stats.public_key, key);
        assert_eq!(
            stats.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 5))
        );
        assert_eq!((stats.rx_bytes, stats.tx_bytes), (10, 20));
        assert_eq!(peer_stats(&[]), None);
    }

    #[test]
    fn every_peers_stats_across_reply_messages() {
        let key = PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").expect("valid");
        let peer = |seconds: i64| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*key.bytes()),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                    seconds,
                    nano_seconds: 0,
                }),
            ])
        };
        let message = |peers| WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(peers)],
        };
        // A device with many peers answers in several messages; 0 s is "never".
        let all = all_peer_stats(&[
            message(vec![peer(1_800_000_000), peer(0)]),
            message(vec![peer(1_800_000_100)]),
        ]);
        let times: Vec<_> = all.iter().map(|p| p.last_handshake).collect();
        assert_eq!(
            times,
            [
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
                None,
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100)),
            ]
        );
        assert!(all_peer_stats(&[]).is_empty());
    }

    #[test]
    fn device_info_from_get_device_replies() {
        let peer = |endpoint: Option<&str>| {
            let mut attributes = vec![WireguardPeerAttribute::PersistentKeepalive(25)];
            if let Some(e) = endpoint {
                attributes.push(WireguardPeerAttribute::Endpoint(
                    e.parse().expect("literal"),
                ));
            }
            WireguardPeer(attributes)
        };
        // A big device answers in two messages; the mark comes in the first.
        let replies = [
            WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes: vec![
                    WireguardAttribute::Fwmark(0xca6c),
                    WireguardAttribute::Peers(vec![peer(Some("198.51.100.1:51820")), peer(None)]),
                ],
            },
            WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes: vec![WireguardAttribute::Peers(vec![peer(Some(
                    "[2001:db8::1]:51820",
                ))])],
            },
        ];
        let info = device_info(&replies);
        assert_eq!(info.fwmark, Some(0xca6c));
        assert_eq!(info.peers, 3);
        assert_eq!(info.endpoints.len(), 2);
        assert_eq!(
            info.endpoints[1],
            "[2001:db8::1]:51820".parse().expect("literal")
        );
        let unmarked = device_info(&[WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Fwmark(0)],
        }]);
        assert_eq!(unmarked.fwmark, None);
    }

    #[test]
    fn setting_the_mark_touches_nothing_else() {
        let message = set_fwmark_message(7, 0xca6c);
        assert_eq!(
            message.attributes,
            [
                WireguardAttribute::IfIndex(7),
                WireguardAttribute::Fwmark(0xca6c)
            ]
        );
    }
}
