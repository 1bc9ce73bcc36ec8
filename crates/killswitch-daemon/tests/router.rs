//! Router mode in real namespaces: the daemon's side (`killswitch router add|remove|list`, the
//! LAN's networks followed, forwarding switched on, persisted across a restart, the ruleset the
//! policy compiles for the LAN in the kernel) and the stale-flow removal over ctnetlink.

use anyhow::{Context, Result, ensure};
use killswitch_lab::daemon::{Daemon, DaemonHome};
use killswitch_lab::lab::EVENT_TIMEOUT;
use killswitch_lab::netns::{Netns, require_root, veth};
use killswitch_lab::topology::{PHYS, Topology};
use killswitch_policy::{CT_MARK_ROUTER, Exceptions, LocalLink, PolicyState, compile_for};
use killswitch_types::ipc::UserSource;
use killswitch_types::{InterfaceName, Settings};

/// Whether the kernel in `ns` holds exactly `exceptions`' ruleset for an unlocked, disconnected
/// daemon (how `router add` leaves a fresh one).
fn holds(ns: &Netns, exceptions: &Exceptions) -> Result<bool> {
    let ruleset = compile_for(&PolicyState::Disconnected, &Settings::default(), exceptions);
    ns.run(move || -> Result<bool> {
        let mut nft = killswitch_nft::Nftables::open()?;
        Ok(nft.verify(&ruleset).is_ok())
    })?
}

fn lan(networks: &[&str]) -> Exceptions {
    Exceptions {
        router_lans: vec![LocalLink {
            interface: InterfaceName::new("lan0").expect("valid"),
            networks: networks
                .iter()
                .map(|n| n.parse().expect("literal"))
                .collect(),
        }],
        ..Exceptions::default()
    }
}

#[test]
fn router_add_confines_the_lan_follows_its_addresses_and_survives_a_restart() -> Result<()> {
    if !require_root("router_add_confines_the_lan_follows_its_addresses_and_survives_a_restart") {
        return Ok(());
    }
    let topo = Topology::new("rtr")?;
    let ns = &topo.client;
    // The LAN: a client namespace behind the protected machine, on a veth.
    let clients = Netns::new("rtr-l")?;
    veth(ns, "lan0", &clients, "eth0")?;
    ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "lan0"])?;
    let home = DaemonHome::new()?;
    let mut daemon = Daemon::start(ns, &home)?;
    ensure!(
        ns.exec("cat", &["/proc/sys/net/ipv4/conf/lan0/forwarding"])?
            .trim()
            == "0",
        "forwarding starts off"
    );

    // Refusals name the problem and change nothing: loopback, the WAN (phys0 holds the default
    // route here), a name that is not a router LAN, a name the kernel would refuse.
    for (args, says) in [
        (&["router", "add", "lo"][..], "loopback"),
        (&["router", "add", PHYS], "default route"),
        (&["router", "remove", "lan9"], "not a router LAN"),
        (&["router", "add", "no/such"], "invalid value"),
    ] {
        let refused = daemon.cli(args)?;
        ensure!(
            refused.code != Some(0) && refused.stderr.contains(says),
            "{args:?} is refused saying {says:?}: {refused:?}"
        );
    }
    let status = daemon.status()?;
    ensure!(status.router_lans.is_empty(), "{:?}", status.router_lans);
    ensure!(
        status.ip_forward.is_none(),
        "no LAN, nothing said of ip_forward"
    );

    daemon.cli(&["router", "add", "lan0"])?.ok()?;
    let status = daemon.status()?;
    ensure!(
        status.router_lans.len() == 1,
        "lan0 is listed: {:?}",
        status.router_lans
    );
    let listed = &status.router_lans[0];
    ensure!(
        listed.interface.as_str() == "lan0"
            && listed.present
            && listed.forwarding
            && listed.source == UserSource::Cli
            && listed
                .networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                == ["192.168.50.0/24"],
        "{listed:?}"
    );
    ensure!(
        status.ip_forward == Some(false),
        "a fresh namespace's ip_forward is 0, and status says so: {:?}",
        status.ip_forward
    );
    ensure!(
        ns.exec("cat", &["/proc/sys/net/ipv4/conf/lan0/forwarding"])?
            .trim()
            == "1",
        "the daemon switched forwarding on for lan0"
    );
    ensure!(
        ns.exec("cat", &["/proc/sys/net/ipv4/ip_forward"])?.trim() == "0",
        "and left the global switch alone"
    );
    // The kernel holds what the policy compiles for lan0 with its network; where the policy
    // tells a LAN by its networks (the router-policy rules), it is not the by-name one.
    let with = lan(&["192.168.50.0/24"]);
    ensure!(
        holds(ns, &with)?,
        "the ruleset in force is compile_for's with lan0"
    );
    let by_name = lan(&[]);
    let differs = compile_for(&PolicyState::Disconnected, &Settings::default(), &with)
        != compile_for(&PolicyState::Disconnected, &Settings::default(), &by_name);
    if differs {
        ensure!(!holds(ns, &by_name)?, "the networks are in the rules");
    }
    let text = daemon.cli(&["status"])?.ok()?.stdout;
    ensure!(
        text.contains("router:    lan0 (192.168.50.0/24): clients refused")
            && text.contains("net.ipv4.ip_forward is 0"),
        "status shows the LAN, what its clients get, and the ip_forward warning:\n{text}"
    );
    // Anyone may list; only root or the admin group may change.
    let refused = daemon.cli_as_nobody(&["router", "remove", "lan0"])?;
    ensure!(
        refused.code == Some(1) && refused.stderr.contains("permission denied"),
        "an unprivileged user cannot remove a router LAN: {refused:?}"
    );
    let listed = daemon.cli_as_nobody(&["router", "list"])?.ok()?.stdout;
    ensure!(listed.starts_with("lan0 "), "{listed}");
    let list = daemon.cli(&["router", "list", "--json"])?.ok()?.stdout;
    let json: serde_json::Value = serde_json::from_str(&list).context("router list --json")?;
    ensure!(
        json[0]["interface"] == "lan0" && json[0]["source"] == "cli",
        "{list}"
    );

    // An address added later: the link watcher brings it into status and the rules.
    ns.ip(&["addr", "add", "192.168.60.1/24", "dev", "lan0"])?;
    daemon.wait_for("lan0's second network", EVENT_TIMEOUT, |s| {
        s.router_lans.first().is_some_and(|l| l.networks.len() == 2)
    })?;
    let both = lan(&["192.168.50.0/24", "192.168.60.0/24"]);
    ensure!(holds(ns, &both)?, "the rules follow the new address");

    // A restart keeps it (the settings file), and switches nothing back.
    daemon.process().terminate(EVENT_TIMEOUT)?;
    let daemon = Daemon::start(ns, &home)?;
    let status = daemon.status()?;
    ensure!(
        status.router_lans.len() == 1 && status.router_lans[0].source == UserSource::Cli,
        "after a restart: {:?}",
        status.router_lans
    );
    ensure!(holds(ns, &both)?, "the restarted daemon installs the same");
    // The restarted daemon found forwarding on already (it does not know who switched it on),
    // so it leaves it on; a LAN whose switch this daemon turned on gets it back off (below).
    daemon.cli(&["router", "remove", "lan0"])?.ok()?;
    ensure!(daemon.status()?.router_lans.is_empty());
    ns.exec("sysctl", &["-qw", "net.ipv4.conf.lan0.forwarding=0"])?;
    daemon.cli(&["router", "add", "lan0"])?.ok()?;
    ensure!(
        ns.exec("cat", &["/proc/sys/net/ipv4/conf/lan0/forwarding"])?
            .trim()
            == "1",
        "on again with the LAN"
    );
    daemon.cli(&["router", "remove", "lan0"])?.ok()?;
    ensure!(
        ns.exec("cat", &["/proc/sys/net/ipv4/conf/lan0/forwarding"])?
            .trim()
            == "0",
        "router remove leaves no forwarding behind that the daemon turned on"
    );
    ensure!(
        daemon
            .cli(&["router", "list"])?
            .ok()?
            .stdout
            .starts_with("none"),
        "none listed"
    );
    Ok(())
}

/// Sends one UDP datagram from `ns` to each of `ports` on `to` (each a flow of its own).
fn flows(ns: &Netns, to: &'static str, ports: &'static [u16]) -> Result<()> {
    ns.run(move || -> Result<()> {
        for port in ports {
            let any = if to.contains(':') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let socket = std::net::UdpSocket::bind(any)?;
            let target: std::net::IpAddr = to.parse()?;
            socket.send_to(b"flow", (target, *port))?;
        }
        Ok(())
    })?
}

#[test]
fn delete_marked_removes_exactly_the_marked_flows_of_both_families() -> Result<()> {
    if !require_root("delete_marked_removes_exactly_the_marked_flows_of_both_families") {
        return Ok(());
    }
    let a = Netns::new("ct-a")?;
    let b = Netns::new("ct-b")?;
    veth(&a, "veth-a", &b, "veth-b")?;
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "veth-a"])?;
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "veth-b"])?;
    a.ip(&["addr", "add", "2001:db8::1/64", "dev", "veth-a", "nodad"])?;
    b.ip(&["addr", "add", "2001:db8::2/64", "dev", "veth-b", "nodad"])?;
    // Marks as the router rules set them (one bit, or-ed in) on ports 5001, another program's
    // bit on 5002, none on 5000. A ct expression makes the kernel track this namespace.
    a.exec(
        "nft",
        &["add table inet t; \
             add chain inet t out { type filter hook output priority 0; }; \
             add rule inet t out udp dport 5001 ct mark set ct mark or 0x04000000; \
             add rule inet t out udp dport 5002 ct mark set ct mark or 0x00000001"],
    )?;
    flows(&a, "192.0.2.2", &[5000, 5001, 5002])?;
    flows(&a, "2001:db8::2", &[5000, 5001, 5002])?;
    let marks = a.run(killswitch_nft::conntrack::marks)??;
    let router = |marks: &[u32]| marks.iter().filter(|m| *m & CT_MARK_ROUTER != 0).count();
    ensure!(
        router(&marks) == 2 && marks.len() >= 6,
        "an IPv4 and an IPv6 flow carry the router bit among >= 6 entries: {marks:x?}"
    );
    // /proc agrees (decimal marks there).
    let proc = a.exec("cat", &["/proc/net/nf_conntrack"])?;
    ensure!(
        proc.lines()
            .filter(|l| l.contains(&format!("mark={CT_MARK_ROUTER} ")))
            .count()
            == 2,
        "{proc}"
    );

    a.run(|| killswitch_nft::conntrack::delete_marked(CT_MARK_ROUTER))??;
    let after = a.run(killswitch_nft::conntrack::marks)??;
    ensure!(router(&after) == 0, "none with the bit is left: {after:x?}");
    ensure!(
        after.len() == marks.len() - 2,
        "the others stay: {marks:x?} -> {after:x?}"
    );
    ensure!(
        after.iter().filter(|m| **m == 1).count() == 2,
        "another program's mark is not the router's: {after:x?}"
    );
    let proc = a.exec("cat", &["/proc/net/nf_conntrack"])?;
    ensure!(
        proc.lines().any(|l| l.contains("dport=5000"))
            && !proc.lines().any(|l| l.contains("dport=5001")),
        "{proc}"
    );
    // Nothing marked: still a success, and nothing else goes.
    a.run(|| killswitch_nft::conntrack::delete_marked(CT_MARK_ROUTER))??;
    ensure!(a.run(killswitch_nft::conntrack::marks)??.len() == after.len());
    // The other namespace's entries were never touched (b tracks nothing: no ct rule there).
    Ok(())
}

#[test]
fn the_daemon_deletes_the_lans_flows_when_the_tunnel_is_lost() -> Result<()> {
    if !require_root("the_daemon_deletes_the_lans_flows_when_the_tunnel_is_lost") {
        return Ok(());
    }
    let mut lab = killswitch_lab::lab::Lab::new("rtrct", 100)?;
    let clients = Netns::new("rtrct-l")?;
    veth(&lab.topo.client, "lan0", &clients, "eth0")?;
    lab.topo
        .client
        .ip(&["addr", "add", "192.168.50.1/24", "dev", "lan0"])?;
    lab.daemon()?.cli(&["router", "add", "lan0"])?.ok()?;
    lab.connect()?;
    let ns = &lab.topo.client;
    // A stand-in for the router rules' marking (the policy's): the test's own table marks
    // flows to port 5001 as the router's, and 5002 with another program's bit.
    ns.exec(
        "nft",
        &["add table inet kstest; \
             add chain inet kstest out { type filter hook output priority 0; }; \
             add rule inet kstest out udp dport 5001 ct mark set ct mark or 0x04000000; \
             add rule inet kstest out udp dport 5002 ct mark set ct mark or 0x00000001"],
    )?;
    let target = killswitch_lab::topology::TARGET_V4;
    ns.run(move || -> Result<()> {
        for port in [5001u16, 5002] {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.send_to(b"flow", (target, port))?;
        }
        Ok(())
    })??;
    let router = |marks: &[u32]| marks.iter().filter(|m| *m & CT_MARK_ROUTER != 0).count();
    let before = ns.run(killswitch_nft::conntrack::marks)??;
    ensure!(
        router(&before) == 1,
        "the marked flow is tracked: {before:x?}"
    );
    // Connected -> disconnected: the daemon deletes them once the new rules are in, before it
    // answers.
    lab.daemon()?.cli(&["down"])?.ok()?;
    let after = ns.run(killswitch_nft::conntrack::marks)??;
    ensure!(
        router(&after) == 0,
        "no router flow outlives the tunnel: {after:x?}\n{}",
        lab.daemon()?.log()
    );
    ensure!(
        after.contains(&1),
        "other flows stay: {before:x?} -> {after:x?}"
    );
    ensure!(
        lab.daemon()?
            .log()
            .contains("router LANs: their conntrack entries deleted"),
        "{}",
        lab.daemon()?.log()
    );
    Ok(())
}
