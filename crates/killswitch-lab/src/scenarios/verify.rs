//! Scenario `verify`: `killswitch verify` says PROTECTED when the machine is (guarded, and `up`),
//! and names what is wrong when it is not: the table removed, IPv6 let out, DNS to the LAN let out.
//!
//! Each failure is made by another program's nft command, as a user's mistake or a hostile
//! script would. The daemon would restore the rules within milliseconds, which makes "what does
//! verify say while they are gone" a race; so this scenario runs the daemon with its tables
//! unowned (otherwise the kernel refuses the change) and without its watch on nf_tables changes
//! (`--test-no-tamper-watch`), and the tampered rules stay until the scenario makes the daemon
//! apply again (a change of allow-lan replaces the whole table in one transaction).
//!
//! A check that cannot fail proves nothing: for each failure, the capture on the physical link
//! must hold the very probe that verify reported leaving (TTL 1, to its documentation address or
//! the LAN gateway), and while protected the measurement window (with verify run as root and as
//! an unprivileged user in it) must hold no leak at all.

use super::{Outcome, Scenario, TUNNEL_KINDS, connect_up};
use crate::capture::Direction;
use crate::daemon::{CliResult, Daemon, Launch};
use crate::lab::{EVENT_TIMEOUT, Lab, hold};
use crate::packet::{Arp, Frame, L4};
use crate::topology::{self, PHYS};
use anyhow::{Context, Result};
use killswitch_types::State;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// The scenario.
pub(super) const VERIFY: Scenario = Scenario {
    name: "verify",
    guards: "`killswitch verify` passes when protected (guard and up, as root and as a user) and fails, naming the cause, when the table is removed, when IPv6 would leak and when DNS to the LAN would pass; each failure's probe is seen leaving on the wire",
    script: verify,
};

/// Where verify's probes go (its documentation addresses and the lab's gateway).
const PROBE_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const PROBE_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const LAN_DNS: IpAddr = IpAddr::V4(topology::ROUTER_V4);
/// How long a probe that verify reported sent may take to show on the physical link (an ARP
/// exchange with the gateway at most).
const PROBE_ON_WIRE: Duration = Duration::from_secs(3);

fn verify(lab: &mut Lab) -> Result<Outcome> {
    restart_daemon_for_tampering(lab)?;
    lab.connect()?;

    // Protected: as root and as nobody, with the generator's traffic judged meanwhile.
    let window = lab.begin(&TUNNEL_KINDS)?;
    hold(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    let as_root = verify_in_lab(lab, &["verify"], false)?;
    let took = asked.elapsed();
    let as_json = verify_in_lab(lab, &["--json", "verify"], false)?;
    let as_nobody = verify_in_lab(lab, &["verify"], true)?;
    let mut outcome = Outcome::new(lab.end(window)?);
    outcome.check(
        as_root.code == Some(0) && first_line(&as_root).starts_with("PROTECTED: 6 of 6"),
        format!("guarded: verify as root says {:?}", summary(&as_root)),
    );
    let json: serde_json::Value = serde_json::from_str(&as_json.stdout)
        .with_context(|| format!("parsing verify --json {:?}", as_json.stdout))?;
    let rules = &json["rules"];
    outcome.check(
        json["verdict"] == "protected"
            && json["checks"].as_array().is_some_and(|c| c.len() == 6)
            && rules["matches"] == true
            && rules["intent_digest"] == rules["kernel_digest"]
            && rules["kernel_digest"].is_string(),
        format!(
            "guarded: --json says {} with 6 checks, intent digest {} = kernel digest {}",
            json["verdict"], rules["intent_digest"], rules["kernel_digest"]
        ),
    );
    outcome.check(
        as_nobody.code == Some(0) && first_line(&as_nobody).starts_with("PROTECTED: 6 of 6"),
        format!(
            "guarded: verify as uid 65534 (its probes its own) says {:?}",
            summary(&as_nobody)
        ),
    );

    // (a) The table deleted behind the daemon's back.
    let case = tampered(
        lab,
        &[&["delete", "table", "inet", "killswitch"]],
        PROBE_V4,
        9,
    )?;
    outcome.check(
        case.code == Some(1)
            && case
                .line
                .starts_with("LEAKING: IPv4 to 192.0.2.1 left through")
            && case.rules_line.contains("table inet killswitch is missing"),
        format!(
            "table deleted: verify exits {:?}: {:?}; rules: {:?}",
            case.code, case.line, case.rules_line
        ),
    );
    outcome.check(
        case.seen_on_wire,
        "table deleted: the IPv4 probe (TTL 1, to 192.0.2.1), or the kernel's ARP question for its target, is on the physical link: the check can fail",
    );
    lab.allow_lan(true)?;

    // (c) DNS to the LAN: allow-lan on, and the rules that keep DNS off the LAN removed.
    let handles = rule_handles(lab, "dns outside the tunnel")?;
    anyhow::ensure!(
        !handles.is_empty(),
        "no `dns outside the tunnel` rules found"
    );
    let deletions: Vec<Vec<String>> = handles
        .iter()
        .map(|h| {
            [
                "delete",
                "rule",
                "inet",
                "killswitch",
                "output",
                "handle",
                h,
            ]
            .map(str::to_owned)
            .to_vec()
        })
        .collect();
    let deletions: Vec<Vec<&str>> = deletions
        .iter()
        .map(|d| d.iter().map(String::as_str).collect())
        .collect();
    let deletions: Vec<&[&str]> = deletions.iter().map(Vec::as_slice).collect();
    let lan_queries_before = lab.servers.dns_lan.all().len();
    let case = tampered(lab, &deletions, LAN_DNS, 53)?;
    let lan_queries = lab.servers.dns_lan.all().len() - lan_queries_before;
    outcome.check(
        case.code == Some(1)
            && case.line == format!("LEAKING: DNS to {LAN_DNS} left through {PHYS}")
            && case.rules_line.contains("differ"),
        format!(
            "DNS to the LAN let through: verify exits {:?}: {:?}; rules: {:?}",
            case.code, case.line, case.rules_line
        ),
    );
    outcome.check(
        case.seen_on_wire && lan_queries > 0,
        format!(
            "DNS to the LAN let through: the DNS probe is on the physical link and the LAN resolver got it ({lan_queries})"
        ),
    );
    lab.allow_lan(false)?;

    // (b) IPv6 let out: an accept for IPv6 ahead of everything in the output chain.
    let case = tampered(
        lab,
        &[&[
            "insert",
            "rule",
            "inet",
            "killswitch",
            "output",
            "meta",
            "nfproto",
            "ipv6",
            "accept",
        ]],
        PROBE_V6,
        9,
    )?;
    outcome.check(
        case.code == Some(1)
            && case.line == format!("LEAKING: IPv6 to {PROBE_V6} left through {PHYS}")
            && case.rules_line.contains("differ"),
        format!(
            "IPv6 let out: verify exits {:?}: {:?}; rules: {:?}",
            case.code, case.line, case.rules_line
        ),
    );
    outcome.check(
        case.seen_on_wire,
        "IPv6 let out: the IPv6 probe (hop limit 1, to 2001:db8::1) is on the physical link",
    );
    // The daemon applies again (allow-lan on, then off): whole tables, protected again.
    lab.allow_lan(true)?;
    lab.allow_lan(false)?;
    let restored = verify_in_lab(lab, &["verify"], false)?;
    outcome.check(
        restored.code == Some(0),
        format!(
            "after the daemon applied again, verify says {:?}",
            summary(&restored)
        ),
    );

    // `up`: the daemon runs the tunnel itself.
    lab.tunnel.kill_client()?;
    connect_up(lab)?;
    let up = verify_in_lab(lab, &["verify"], false)?;
    outcome.check(
        up.code == Some(0) && first_line(&up).starts_with("PROTECTED"),
        format!("up: verify says {:?}", summary(&up)),
    );

    // Nothing armed: said plainly, exit 1, no probe sent.
    lab.daemon()?.cli(&["off"])?.ok()?;
    lab.daemon()?.wait_for_state(State::Off, EVENT_TIMEOUT)?;
    let off = verify_in_lab(lab, &["verify"], false)?;
    outcome.check(
        off.code == Some(1) && first_line(&off).starts_with("NOT PROTECTING: state off"),
        format!("off: verify exits {:?}: {:?}", off.code, first_line(&off)),
    );
    outcome.note(format!(
        "`killswitch verify` took {} ms, from starting the command to its exit (the daemon's reading, three probes)",
        took.as_millis()
    ));
    outcome.note("tampering with the daemon's restore switched off (--test-no-tamper-watch) and its tables unowned, so that what verify sees is not a race with the restore");
    Ok(outcome)
}

/// What verify said about one tampering, and whether its probe was seen on the wire.
struct Tampered {
    code: Option<i32>,
    /// The verdict line.
    line: String,
    /// The `rules` check's line.
    rules_line: String,
    /// Whether the capture holds an outgoing packet to the probe's target and port with TTL 1.
    seen_on_wire: bool,
}

/// Runs each nft command (another program's tampering), then `killswitch verify`, and looks for
/// the probe to `target:port` on the physical link.
fn tampered(lab: &Lab, commands: &[&[&str]], target: IpAddr, port: u16) -> Result<Tampered> {
    for args in commands {
        lab.topo.client.exec("nft", args)?;
    }
    let from = lab.capture.len();
    let result = verify_in_lab(lab, &["verify"], false)?;
    // Waited for, not drained up to a sentinel: a probe may wait for an ARP answer while the
    // sentinel, a broadcast, goes out at once. Either the probe itself is on the wire, or the
    // kernel asks the link who has its IPv4 target: with the routing layer's `unreachable` and a
    // socket bound to the interface, the kernel takes the target to be on the link (Linux's
    // fallback for a bound socket whose lookup fails), so only a neighbour's answer is missing
    // for the datagram to go out, and a hostile LAN would give it.
    let seen_on_wire = lab
        .capture
        .wait_for(from, PROBE_ON_WIRE, |c| {
            c.direction == Direction::Outgoing
                && match &c.frame {
                    Frame::Ip(p) => {
                        p.dst == target
                            && p.hop_limit == 1
                            && matches!(p.transport, L4::Udp { dport, .. } if dport == port)
                    }
                    Frame::Arp(arp) => {
                        arp.operation == Arp::REQUEST && IpAddr::V4(arp.target_ip) == target
                    }
                    Frame::Other(_) => false,
                }
        })
        .is_ok();
    Ok(Tampered {
        code: result.code,
        line: first_line(&result).to_owned(),
        rules_line: result
            .stdout
            .lines()
            .find(|l| l.contains(" rules "))
            .unwrap_or("")
            .trim()
            .to_owned(),
        seen_on_wire,
    })
}

/// The handles of the output chain's rules with `comment`.
fn rule_handles(lab: &Lab, comment: &str) -> Result<Vec<String>> {
    let listing = lab.topo.client.exec(
        "nft",
        &["-a", "list", "chain", "inet", "killswitch", "output"],
    )?;
    Ok(listing
        .lines()
        .filter(|l| l.contains(&format!("comment \"{comment}\"")))
        .filter_map(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_owned())
        .collect())
}

/// Replaces the lab's daemon with one whose tables are unowned and that does not restore other
/// programs' changes (see the module's doc).
fn restart_daemon_for_tampering(lab: &mut Lab) -> Result<()> {
    if let Some(mut daemon) = lab.daemon.take() {
        daemon.process().terminate(EVENT_TIMEOUT)?;
    }
    // The stopped daemon's owned tables stay, orphaned: anyone's to delete, and in the way of an
    // unowned daemon's.
    let tables = lab.topo.client.exec("nft", &["list", "tables"])?;
    for family in ["inet", "arp"] {
        if tables
            .lines()
            .any(|l| l.trim() == format!("table {family} killswitch"))
        {
            lab.topo
                .client
                .exec("nft", &["delete", "table", family, "killswitch"])?;
        }
    }
    lab.daemon = Some(Daemon::start_with(
        &lab.topo.client,
        &lab.home,
        &Launch {
            unowned_tables: true,
            no_tamper_watch: true,
            ..Launch::default()
        },
    )?);
    Ok(())
}

/// `killswitch ARGS` in the lab's client namespace (its probes go out of the lab's physical
/// link), as root or as nobody.
fn verify_in_lab(lab: &Lab, args: &[&str], as_nobody: bool) -> Result<CliResult> {
    lab.daemon()?.cli_in(&lab.topo.client, args, as_nobody)
}

fn first_line(result: &CliResult) -> &str {
    result.stdout.lines().next().unwrap_or("")
}

/// What a verify run printed, for a check's line: its output, or its error.
fn summary(result: &CliResult) -> String {
    let text = if result.stdout.trim().is_empty() {
        &result.stderr
    } else {
        &result.stdout
    };
    format!("exit {:?}: {}", result.code, text.trim())
}
