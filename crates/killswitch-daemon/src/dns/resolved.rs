//! systemd-resolved over D-Bus: per-link resolvers, and the tunnel's link as the route for all
//! domains (what `resolvectl dns IFACE ...; resolvectl domain IFACE '~.'` does).
//!
//! Nothing needs undoing after a crash: resolved forgets a link's settings when the link goes. A
//! userspace tunnel goes with the daemon; a kernel one outlives it, until the next start deletes it
//! before creating its own.
//!
//! Every call is bounded by [`CALL_TIMEOUT`]: the event loop awaits them, and a resolved that
//! hangs must not hold up the kill switch.

use std::net::IpAddr;
use std::time::Duration;
use zbus::Connection;

/// How long one exchange with systemd-resolved may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(call: impl std::future::Future<Output = zbus::Result<T>>) -> zbus::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(zbus::Error::Failure(format!(
                "no answer within {CALL_TIMEOUT:?}"
            )))
        })
}

const NAME: &str = "org.freedesktop.resolve1";
const PATH: &str = "/org/freedesktop/resolve1";
const INTERFACE: &str = "org.freedesktop.resolve1.Manager";

/// Whether systemd-resolved runs on `bus`.
pub async fn running(bus: &Connection) -> bool {
    let ask = async {
        let dbus = zbus::fdo::DBusProxy::new(bus).await?;
        let name = zbus::names::BusName::try_from(NAME)?;
        Ok(dbus.name_has_owner(name).await?)
    };
    bounded(ask).await.unwrap_or(false)
}

async fn manager(bus: &Connection) -> zbus::Result<zbus::Proxy<'static>> {
    zbus::Proxy::new(bus, NAME, PATH, INTERFACE).await
}

/// Gives link `index` the resolvers `servers`, routes every domain to it, and makes it the
/// default route for queries.
pub async fn set_link(bus: &Connection, index: u32, servers: &[IpAddr]) -> zbus::Result<()> {
    bounded(set_link_unbounded(bus, index, servers)).await
}

async fn set_link_unbounded(bus: &Connection, index: u32, servers: &[IpAddr]) -> zbus::Result<()> {
    let index = link(index)?;
    let manager = manager(bus).await?;
    let servers: Vec<(i32, Vec<u8>)> = servers
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
            IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
        })
        .collect();
    manager
        .call::<_, _, ()>("SetLinkDNS", &(index, servers))
        .await?;
    // "." as a routing-only domain ("~."): every query goes to this link's resolvers.
    manager
        .call::<_, _, ()>("SetLinkDomains", &(index, vec![(".", true)]))
        .await?;
    manager
        .call::<_, _, ()>("SetLinkDefaultRoute", &(index, true))
        .await
}

/// Drops everything set on link `index`.
pub async fn revert_link(bus: &Connection, index: u32) -> zbus::Result<()> {
    let index = link(index)?;
    bounded(async {
        manager(bus)
            .await?
            .call::<_, _, ()>("RevertLink", &(index,))
            .await
    })
    .await
}

fn link(index: u32) -> zbus::Result<i32> {
    i32::try_from(index)
        .map_err(|_| zbus::Error::Failure(format!("link index {index} out of range")))
}
