//! A small rtnetlink client: one request at a time, acknowledged or dumped, in the calling thread's
//! network namespace. Shared by the routing layer and the tunnel's interface setup.
//!
//! Every open client's netlink port is recorded ([`is_own_port`]): the kernel names the requesting
//! port in the notification it sends for each change, which is how the daemon tells its own
//! changes from other programs' and never wakes itself up with them.

use crate::RouteError;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::sync::{Mutex, PoisonError};

/// The netlink ports of this process's open clients.
static OWN_PORTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Whether `port` (a notification's `nlmsg_pid`) is one of this process's open rtnetlink clients:
/// the change it reports is this process's own. Port 0 is the kernel's own changes.
pub fn is_own_port(port: u32) -> bool {
    port != 0
        && OWN_PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&port)
}

/// An rtnetlink socket.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    port: u32,
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        let mut ports = OWN_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = ports.iter().position(|p| *p == self.port) {
            ports.swap_remove(index);
        }
    }
}

impl Rtnl {
    /// Opens and binds the socket.
    pub fn open() -> Result<Self, RouteError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RouteError::Socket)?;
        let port = socket
            .bind_auto()
            .map_err(RouteError::Socket)?
            .port_number();
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RouteError::Socket)?;
        OWN_PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(port);
        Ok(Rtnl {
            socket,
            seq: 0,
            port,
        })
    }

    /// This client's netlink port: what the kernel's notifications of its changes carry.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Sends a change (with extra `flags`, e.g. NLM_F_CREATE) and waits for its acknowledgement. "Already there" on an add and "not there"
    /// on a delete are success: someone (or a race) got there first, and the result is the same.
    pub fn change(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), RouteError> {
        let is_delete = matches!(
            message,
            RouteNetlinkMessage::DelRule(_)
                | RouteNetlinkMessage::DelRoute(_)
                | RouteNetlinkMessage::DelAddress(_)
        );
        match self.request(message, flags, what)? {
            Ok(()) => Ok(()),
            Err(source) => {
                let code = source.raw_os_error();
                let benign = (code == Some(libc::EEXIST) && !is_delete)
                    || ((code == Some(libc::ENOENT) || code == Some(libc::ESRCH)) && is_delete);
                if benign {
                    Ok(())
                } else {
                    Err(RouteError::Refused {
                        what: what.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    /// Sends a change and waits for its acknowledgement. The outer error is a failure to talk to
    /// the kernel; the inner one is the kernel's answer (`EEXIST`, `ENOENT`, ...), for the caller
    /// to judge.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Result<(), io::Error>, RouteError> {
        let seq = self.send(message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        for reply in self.receive(seq)? {
            if let NetlinkPayload::Error(error) = reply.payload {
                let code = error.raw_code();
                return Ok(if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                });
            }
        }
        Err(RouteError::Parse(format!("no acknowledgement for: {what}")))
    }

    /// Sends a dump request and collects every object in the answer.
    pub fn dump(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, RouteError> {
        let seq = self.send(message, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        for reply in self.receive(seq)? {
            match reply.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(error) if error.raw_code() != 0 => {
                    return Err(RouteError::Refused {
                        what: "list rules, routes or addresses".to_owned(),
                        source: io::Error::from_raw_os_error(-error.raw_code()),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<u32, RouteError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buffer = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(RouteError::Io)?;
        Ok(self.seq)
    }

    /// Receives every message of sequence `seq` until the final one (DONE, or an ack/error).
    fn receive(
        &mut self,
        seq: u32,
    ) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, RouteError> {
        let mut out = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = self
                .socket
                .recv(&mut &mut buffer[..], 0)
                .map_err(RouteError::Io)?;
            let mut offset = 0;
            while offset < n {
                let bytes = &buffer[offset..n];
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| RouteError::Parse(e.to_string()))?;
                let length = message.header.length as usize;
                if length == 0 {
                    return Err(RouteError::Parse("zero-length message".to_owned()));
                }
                offset += length.next_multiple_of(4);
                if message.header.sequence_number != seq {
                    continue;
                }
                let last = matches!(
                    message.payload,
                    NetlinkPayload::Done(_) | NetlinkPayload::Error(_)
                );
                out.push(message);
                if last {
                    return Ok(out);
                }
            }
        }
    }
}
