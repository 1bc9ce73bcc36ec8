//! killswitchd with systemd-resolved and logind, over a private bus that stands in for the system
//! bus. The real services cannot run here (installing systemd-resolved takes over this machine's
//! own /etc/resolv.conf), so the services on the bus implement the methods and the signal the
//! daemon uses, with their documented signatures, and record what they are asked. Everything
//! else is real: the daemon, its `up` tunnel to a wireguard-go server, namespaces.

use anyhow::{Context, Result, ensure};
use killswitch_lab::bus::PrivateBus;
use killswitch_lab::daemon::{Daemon, DaemonHome};
use killswitch_lab::netns::require_root;
use killswitch_lab::topology::Topology;
use killswitch_lab::wireguard::{KeyPair, Server};
use killswitch_types::State;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(15);

/// systemd-resolved's `org.freedesktop.resolve1.Manager`, the part the daemon calls.
struct Resolved {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Resolved {
    fn record(&self, call: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

#[zbus::interface(name = "org.freedesktop.resolve1.Manager")]
impl Resolved {
    #[zbus(name = "SetLinkDNS")]
    fn set_link_dns(&self, index: i32, servers: Vec<(i32, Vec<u8>)>) {
        self.record(format!("SetLinkDNS {index} {servers:?}"));
    }

    #[zbus(name = "SetLinkDomains")]
    fn set_link_domains(&self, index: i32, domains: Vec<(String, bool)>) {
        self.record(format!("SetLinkDomains {index} {domains:?}"));
    }

    #[zbus(name = "SetLinkDefaultRoute")]
    fn set_link_default_route(&self, index: i32, enable: bool) {
        self.record(format!("SetLinkDefaultRoute {index} {enable}"));
    }

    #[zbus(name = "RevertLink")]
    fn revert_link(&self, index: i32) {
        self.record(format!("RevertLink {index}"));
    }
}

/// The services, served from their own thread (the test itself blocks).
struct Services {
    calls: Arc<Mutex<Vec<String>>>,
    sleep: tokio::sync::mpsc::UnboundedSender<bool>,
}

impl Services {
    fn start(address: &str) -> Result<Self> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (sleep, mut sleeps) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let (ready, started) = std::sync::mpsc::channel::<Result<(), String>>();
        let address = address.to_owned();
        let recorded = calls.clone();
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return drop(ready.send(Err(e.to_string()))),
            };
            runtime.block_on(async move {
                let connect = async {
                    let resolved = zbus::connection::Builder::address(address.as_str())
                        .name("org.freedesktop.resolve1")
                        .serve_at("/org/freedesktop/resolve1", Resolved { calls: recorded })
                        .build()
                        .await?;
                    let logind = zbus::connection::Builder::address(address.as_str())
                        .name("org.freedesktop.login1")
                        .build()
                        .await?;
                    Ok::<_, zbus::Error>((resolved, logind))
                };
                let (_resolved, logind) = match connect.await {
                    Ok(connections) => connections,
                    Err(e) => return drop(ready.send(Err(e.to_string()))),
                };
                let _ = ready.send(Ok(()));
                while let Some(sleeping) = sleeps.recv().await {
                    let _ = logind
                        .emit_signal(
                            None::<zbus::names::BusName<'_>>,
                            "/org/freedesktop/login1",
                            "org.freedesktop.login1.Manager",
                            "PrepareForSleep",
                            &(sleeping,),
                        )
                        .await;
                }
            });
        });
        started
            .recv_timeout(TIMEOUT)
            .context("the services did not start")?
            .map_err(|e| anyhow::anyhow!("starting the services: {e}"))?;
        Ok(Services { calls, sleep })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Waits (bounded) until a call starting with `prefix` was made.
    fn wait_for_call(&self, prefix: &str) -> Result<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(call) = self.calls().into_iter().find(|c| c.starts_with(prefix)) {
                return Ok(call);
            }
            ensure!(
                Instant::now() < deadline,
                "no {prefix} call within {TIMEOUT:?}; calls: {:?}",
                self.calls()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn up_sets_the_tunnels_resolvers_in_resolved_and_resume_is_noticed() -> Result<()> {
    if !require_root("up_sets_the_tunnels_resolvers_in_resolved_and_resume_is_noticed") {
        return Ok(());
    }
    let bus = PrivateBus::start()?;
    let services = Services::start(bus.address())?;
    let topo = Topology::new("dbus")?;
    let server = Server::start(&topo, 1)?;
    let client = KeyPair::generate()?;
    server.allow(&topo, &client.public)?;
    let home = DaemonHome::new()?;
    let config = home.path().join("server.conf");
    std::fs::write(&config, server.client_config(&client))?;
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let resolv_conf = std::fs::read_to_string(topo.client.resolv_conf_path())?;
    let mut daemon = Daemon::start_on_bus(&topo.client, &home, Some(bus.address()))?;
    let interface = format!("ksdb{}", std::process::id() % 100_000);
    let config = config.display().to_string();
    daemon
        .cli(&["up", "--interface", &interface, &config])?
        .ok()?;
    let status = daemon.wait_for("resolvers set in systemd-resolved", TIMEOUT, |s| {
        s.state == State::Connected && s.dns.as_ref().is_some_and(|d| d.error.is_none())
    })?;
    let dns = status.dns.context("dns status")?;
    ensure!(dns.via == "systemd-resolved", "via {}", dns.via);
    let index = topo
        .client
        .exec("cat", &[&format!("/sys/class/net/{interface}/ifindex")])?
        .trim()
        .to_owned();
    let tunnel_ip = server.tunnel_ip.octets();
    ensure!(
        services.wait_for_call("SetLinkDNS")?
            == format!("SetLinkDNS {index} [(2, {:?})]", tunnel_ip.to_vec()),
        "calls: {:?}",
        services.calls()
    );
    ensure!(
        services.wait_for_call("SetLinkDomains")?
            == format!("SetLinkDomains {index} [(\".\", true)]"),
        "every domain routed to the tunnel; calls: {:?}",
        services.calls()
    );
    ensure!(
        services.wait_for_call("SetLinkDefaultRoute")?
            == format!("SetLinkDefaultRoute {index} true")
    );
    ensure!(
        std::fs::read_to_string(topo.client.resolv_conf_path())? == resolv_conf,
        "with resolved running, resolv.conf is left alone"
    );
    ensure!(
        daemon
            .cli(&["status"])?
            .stdout
            .contains("via systemd-resolved"),
        "status shows how DNS is managed"
    );

    // Suspend and resume, as logind announces them.
    let from = daemon.process().line_count();
    services.sleep.send(true)?;
    let from = daemon
        .process()
        .wait_for_line(from, "going to sleep", TIMEOUT)?;
    services.sleep.send(false)?;
    daemon
        .process()
        .wait_for_line(from, "woke up: looking at the tunnel now", TIMEOUT)?;

    daemon.cli(&["down"])?.ok()?;
    daemon.wait_for("DNS given back", TIMEOUT, |s| s.dns.is_none())?;
    // The tunnel's link is gone with `down`, and resolved forgets a link that goes; a revert
    // is needed only while it still exists.
    let calls = services.calls();
    ensure!(
        calls
            .iter()
            .all(|c| !c.starts_with("SetLinkDNS") || c.contains(&index)),
        "{calls:?}"
    );
    Ok(())
}
