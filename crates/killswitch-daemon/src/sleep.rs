//! Suspend and resume, as logind announces them: `PrepareForSleep(false)` on the system bus means
//! the machine just woke up. The tunnel is looked at right away instead of at the next reading:
//! after a sleep its server may have forgotten the session, or the network may be another one.
//!
//! Without a system bus or logind there are no announcements; link changes and the tunnel's own
//! readings still notice a wake-up, a little later.

use futures_util::StreamExt;
use zbus::Connection;

/// The subscription.
#[derive(Debug)]
pub struct SleepSignals {
    stream: Option<zbus::proxy::SignalStream<'static>>,
}

impl SleepSignals {
    /// Subscribes to logind's announcements on `bus`, if there is a bus.
    pub async fn subscribe(bus: Option<&Connection>) -> Self {
        let stream = match bus {
            Some(bus) => match subscribe(bus).await {
                Ok(stream) => Some(stream),
                Err(e) => {
                    tracing::info!("not watching for suspend and resume: {e}");
                    None
                }
            },
            None => None,
        };
        SleepSignals { stream }
    }

    /// Waits until the machine wakes up. Never returns without a subscription.
    pub async fn woke(&mut self) {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return std::future::pending().await;
            };
            match stream.next().await {
                Some(message) => match message.body().deserialize::<bool>() {
                    Ok(false) => return,
                    Ok(true) => tracing::info!("the machine is going to sleep"),
                    Err(e) => tracing::warn!("an unexpected PrepareForSleep signal: {e}"),
                },
                None => {
                    tracing::warn!("logind's signals stopped; not watching for resume any more");
                    self.stream = None;
                }
            }
        }
    }
}

async fn subscribe(bus: &Connection) -> zbus::Result<zbus::proxy::SignalStream<'static>> {
    let manager = zbus::Proxy::new_owned(
        bus.clone(),
        "org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
    )
    .await?;
    manager.receive_signal("PrepareForSleep").await
}
