//! Human-readable output.

use killswitch_types::ipc::{FlushProtection, Status};
use killswitch_types::{BlockReason, BlockedStatus, Handshake, State};
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Text that came from the daemon, fit for a terminal: control characters (an escape sequence
/// that would rewrite the screen, a newline that would forge a line of the report) are shown
/// escaped, as `\u{1b}`, rather than acted on. The daemon quotes other programs' words (a process
/// name in a tamper report, a resolv.conf line, a file name in an error), so it cannot vouch for
/// them.
pub(crate) fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| clean(&item.to_string()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time of day in UTC (the CLI carries no time zone database), from seconds since the epoch.
fn utc_time(secs: u64) -> String {
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

/// A one-sentence explanation of what the state means for the user's traffic.
fn meaning(status: &Status) -> &'static str {
    if status.apps_only && !status.firewall.blocking {
        return match status.state {
            State::Connected => {
                "apps only: exec programs and tunnel-only users leave through the tunnel; this machine's own traffic is not protected"
            }
            State::Connecting => {
                "apps only: waiting for the tunnel; exec programs and tunnel-only users reach nothing meanwhile, this machine's own traffic is not protected"
            }
            _ => {
                "apps only: exec programs and tunnel-only users reach nothing; this machine's own traffic is not protected"
            }
        };
    }
    match status.state {
        State::Off => "no protection: the kill switch is switched off",
        State::Disconnected => "no tunnel wanted and lockdown off: traffic flows normally",
        State::Connecting => "waiting for the tunnel: only the VPN server is reachable",
        State::Connected => "traffic leaves only through the tunnel",
        State::Blocked if status.error.is_some() => "everything is blocked because of an error",
        State::Blocked => "everything is blocked: lockdown",
    }
}

/// The `status` report.
/// `allow list`: the local bridges and every exception, one per line (`none` when there are none).
pub(crate) fn exceptions(exceptions: &killswitch_types::ipc::ExceptionsStatus) -> String {
    let mut out = String::new();
    let lines = exceptions
        .local_bridges
        .iter()
        .map(|b| format!("bridge     {b} (found: this machine's own containers or VMs)"))
        .chain(
            exceptions
                .interfaces
                .iter()
                .map(|i| format!("interface  {i}")),
        )
        .chain(exceptions.subnets.iter().map(|s| format!("subnet     {s}")))
        .chain(exceptions.inbound.iter().map(|i| format!("inbound    {i}")))
        .chain(exceptions.refused.iter().map(|r| format!("refused    {r}")))
        .chain(exceptions.absent.iter().map(|a| {
            format!("absent     {a} (no such interface now: its exceptions match nothing)")
        }));
    for line in lines {
        let _ = writeln!(out, "{}", clean(&line));
    }
    if out.is_empty() {
        out.push_str("none: only the tunnel (and allow-lan, when on)\n");
    }
    out
}

/// One `killswitch exec` program: `#0 curl (pid 1234, alice, ksx0): through the tunnel only`.
pub(crate) fn exec_scope(scope: &killswitch_types::exec::ExecScopeStatus) -> String {
    let user = scope
        .user
        .clone()
        .unwrap_or_else(|| format!("uid {}", scope.uid));
    let pid = if scope.pid == 0 {
        "starting".to_owned()
    } else {
        format!("pid {}", scope.pid)
    };
    clean(&format!(
        "#{} {} ({pid}, {user}, {}): through the tunnel only",
        scope.id, scope.program, scope.interface
    ))
    .into_owned()
}

/// `users list`: one tunnel-only user a line (name, uid, where it comes from), then the refused
/// entries of config.toml; `none` when there are none.
pub(crate) fn tunnel_only_users(
    users: &[killswitch_types::ipc::TunnelOnlyUserStatus],
    refused: &[String],
) -> String {
    let mut out = String::new();
    for user in users {
        let _ = writeln!(
            out,
            "{:<24} uid {:<10} {}",
            clean(&user.user),
            user.uid,
            user.source
        );
    }
    for why in refused.iter().filter(|r| r.starts_with("tunnel-only user")) {
        let _ = writeln!(out, "refused: {}", clean(why));
    }
    if out.is_empty() {
        out.push_str("none: no user is confined to the tunnel\n");
    }
    out
}

/// What a router LAN's clients get now: the tunnel, or refusals (and why).
fn router_clients(status: &Status, lan: &killswitch_types::ipc::RouterLanStatus) -> String {
    if !lan.present {
        return "absent (confined by name: nothing is forwarded from it until it appears)"
            .to_owned();
    }
    if lan.networks.is_empty() {
        return "no address (no client source is accepted until it has one)".to_owned();
    }
    if !lan.forwarding {
        return "forwarding off for it (its clients are not routed)".to_owned();
    }
    match (status.state, status.tunnel.as_ref()) {
        (State::Connected, Some(tunnel)) => {
            format!("clients through the tunnel ({})", tunnel.interface)
        }
        _ => format!("clients refused: no tunnel connected ({})", status.state),
    }
}

/// The warning when the router LANs' replies cannot be forwarded.
const IP_FORWARD_OFF: &str = "net.ipv4.ip_forward is 0: the tunnel's replies are not forwarded to the router LANs (sysctl -w net.ipv4.ip_forward=1)";

/// `router list`: one LAN a line (interface, networks, where it comes from, what its clients
/// get), then refused entries and the ip_forward warning; `none` when there are none.
pub(crate) fn router_lans(status: &Status) -> String {
    let mut out = String::new();
    for lan in &status.router_lans {
        let networks: Vec<String> = lan.networks.iter().map(ToString::to_string).collect();
        let networks = if networks.is_empty() {
            "-".to_owned()
        } else {
            networks.join(",")
        };
        let _ = writeln!(
            out,
            "{:<16} {:<36} {:<6} {}",
            clean(lan.interface.as_str()),
            networks,
            lan.source,
            router_clients(status, lan)
        );
    }
    for why in (status.exceptions.refused.iter()).filter(|r| r.starts_with("router LAN")) {
        let _ = writeln!(out, "refused: {}", clean(why));
    }
    if status.ip_forward == Some(false) && !status.router_lans.is_empty() {
        let _ = writeln!(out, "warning: {IP_FORWARD_OFF}");
    }
    if out.is_empty() {
        out.push_str("none: this machine is no LAN's protected gateway\n");
    }
    out
}

/// `router list --json`: the status's `router_lans`, each with `clients`, the same words as the
/// text's last column (what its clients get now), so that a script needs no status rules of its
/// own. (Refused entries and `ip_forward` are in `status --json`.)
pub(crate) fn router_lans_json(status: &Status) -> String {
    let lans: Vec<serde_json::Value> = status
        .router_lans
        .iter()
        .map(|lan| {
            let mut value = serde_json::to_value(lan).unwrap_or(serde_json::Value::Null);
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "clients".to_owned(),
                    serde_json::Value::String(router_clients(status, lan)),
                );
            }
            value
        })
        .collect();
    format!(
        "{}\n",
        serde_json::to_string(&lans).unwrap_or_else(|_| "[]".to_owned())
    )
}

pub(crate) fn status(status: &Status) -> String {
    status_at(status, SystemTime::now())
}

/// `status` as text, with ages (the handshake's) counted to `now`.
fn status_at(status: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "state:     {} ({})", status.state, meaning(status));
    if status.apps_only {
        let _ = writeln!(
            out,
            "apps only: on (this machine's own traffic is NOT protected; only `killswitch exec` programs and tunnel-only users are)"
        );
    }
    let not_in_force = if status.apps_only && !status.firewall.blocking {
        " (not in force: apps only)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "lockdown:  {}{}",
        on_off(status.lockdown),
        if status.lockdown { not_in_force } else { "" }
    );
    let _ = writeln!(
        out,
        "allow-lan: {}{}",
        on_off(status.allow_lan),
        if status.allow_lan { not_in_force } else { "" }
    );
    let exceptions = &status.exceptions;
    if !exceptions.local_bridges.is_empty() {
        let _ = writeln!(
            out,
            "bridges:   {} (local; what their hosts send further goes only into the tunnel)",
            clean(&exceptions.local_bridges.join(", "))
        );
    }
    let allowed: Vec<String> = (exceptions
        .interfaces
        .iter()
        .map(|i| format!("interface {i}")))
    .chain(exceptions.subnets.iter().map(|s| format!("subnet {s}")))
    .chain(exceptions.inbound.iter().map(|i| format!("inbound {i}")))
    .collect();
    if !allowed.is_empty() {
        let _ = writeln!(out, "allowed:   {}", clean(&allowed.join("; ")));
    }
    if !status.tunnel_only_users.is_empty() {
        let users: Vec<String> = (status.tunnel_only_users.iter())
            .map(|u| format!("{} (uid {})", u.user, u.uid))
            .collect();
        let _ = writeln!(
            out,
            "tunnel-only users: {} (through the tunnel or not at all, in every state)",
            clean(&users.join(", "))
        );
    }
    for lan in &status.router_lans {
        let networks: Vec<String> = lan.networks.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "router:    {}{}: {}",
            clean(lan.interface.as_str()),
            if networks.is_empty() {
                String::new()
            } else {
                format!(" ({})", networks.join(", "))
            },
            router_clients(status, lan)
        );
    }
    if status.ip_forward == Some(false) && !status.router_lans.is_empty() {
        let _ = writeln!(out, "warning:   {IP_FORWARD_OFF}");
    }
    for scope in &status.exec {
        let _ = writeln!(out, "exec:      {}", exec_scope(scope));
    }
    if let Some(bypass) = &status.bypass {
        let _ = writeln!(out, "{}", bypass_line(bypass));
    }
    for refused in &exceptions.refused {
        let _ = writeln!(out, "refused:   {}", clean(refused));
    }
    if !exceptions.absent.is_empty() {
        let _ = writeln!(
            out,
            "absent:    {} (named by an exception; no such interface now, so it matches nothing)",
            clean(&exceptions.absent.join(", "))
        );
    }
    match &status.tunnel {
        None => {
            let _ = writeln!(out, "tunnel:    none");
        }
        Some(t) => {
            let link = if t.up {
                format!("up, {}", list(&t.addresses))
            } else {
                "down or absent".to_owned()
            };
            let interface = t.interface.to_string();
            let _ = writeln!(out, "tunnel:    {} ({link})", clean(&interface));
            if let Some(handshake) = handshake(t.handshake.as_ref(), now) {
                let _ = writeln!(out, "handshake: {handshake}");
            }
            // Daemons before the list sent `endpoint` alone.
            let servers = if t.endpoints.is_empty() {
                t.endpoint.to_string()
            } else {
                list(&t.endpoints)
            };
            let mut hole = format!("endpoint:  {}", clean(&servers));
            if let Some(mark) = t.mark {
                let _ = write!(hole, ", only with fwmark {mark}");
            }
            if let Some(uid) = t.uid {
                let _ = write!(hole, ", only from uid {uid}");
            }
            let _ = writeln!(out, "{hole}");
            let dns = if t.dns.is_empty() {
                "none (all DNS blocked)".to_owned()
            } else {
                list(&t.dns)
            };
            let _ = writeln!(out, "dns:       {dns}");
            if let Some(m) = &t.managed {
                let backend = clean(m.backend.as_deref().unwrap_or("not started"));
                let server = clean(m.servers.get(m.server).map_or("?", String::as_str));
                let _ = writeln!(
                    out,
                    "wireguard: {backend}; server {} of {} ({server}); attempt {}",
                    m.server + 1,
                    m.servers.len(),
                    m.attempt
                );
                if let Some(event) = &m.last_event {
                    let _ = writeln!(out, "last:      {}", clean(event));
                }
                for line in server_failures(m) {
                    let _ = writeln!(out, "failed:    {line}");
                }
            }
        }
    }
    if let Some(dns) = &status.dns {
        let via = clean(&dns.via);
        let line = match &dns.error {
            Some(error) => format!("NOT set ({via}): {}", clean(error)),
            None => format!("{} via {via}", list(&dns.servers)),
        };
        let _ = writeln!(out, "resolver:  {line}");
        if dns.rewrites > 0 {
            let times = match dns.rewrites {
                1 => "once".to_owned(),
                n => format!("{n} times"),
            };
            let when = dns
                .last_rewrite_at
                .map(|at| format!(" at {}", utc_time(at)))
                .unwrap_or_default();
            let what = clean(dns.last_rewrite.as_deref().unwrap_or("unknown"));
            let _ = writeln!(
                out,
                "rewritten: {times} by another program; last{when}: {what}"
            );
        }
        if let Some(error) = &dns.watch_error {
            let _ = writeln!(
                out,
                "watch:     NOT watching {via} for rewrites by other programs: {}",
                clean(error)
            );
        }
    }
    let fw = &status.firewall;
    let installed = match (fw.installed, fw.blocking) {
        (true, _) => "rules installed",
        (false, _) if status.state == State::Blocked => "NOT installed: blocking failed",
        (false, _) => "no rules",
    };
    let timing = fw
        .last_apply_us
        .map(|us| format!(", last change took {us} us"))
        .unwrap_or_default();
    let changes = match fw.transitions {
        1 => "1 change".to_owned(),
        n => format!("{n} changes"),
    };
    let routing = if fw.routing {
        "; routing layer in place"
    } else {
        ""
    };
    let _ = writeln!(out, "firewall:  {installed} ({changes}{timing}){routing}");
    if fw.installed {
        let flushes = match fw.flush_protection {
            Some(FlushProtection::Kernel) => {
                Some("refused by the kernel (the tables are the daemon's own)")
            }
            Some(FlushProtection::RestoreOnly) => Some(
                "undone by the daemon within milliseconds (this kernel cannot keep the tables its own)",
            ),
            Some(FlushProtection::Unknown) | None => None,
        };
        if let Some(flushes) = flushes {
            let _ = writeln!(out, "flushes:   {flushes}");
        }
    }
    if let Some(blocked) = status.blocked.as_ref().filter(|_| fw.installed) {
        let _ = writeln!(out, "blocked:   {}", blocked_counts(blocked));
    }
    if fw.tamper_events > 0 {
        let last = clean(fw.last_tamper.as_deref().unwrap_or("unknown"));
        let _ = writeln!(
            out,
            "tampering: restored {} times; last: {last}",
            fw.tamper_events
        );
    }
    on_drop(&mut out, &status.on_drop);
    let _ = writeln!(
        out,
        "error:     {}",
        clean(status.error.as_deref().unwrap_or("none"))
    );
    // What the request found or did besides (`guard wg0`: where its servers came from).
    for note in &status.notes {
        let _ = writeln!(out, "note:      {}", clean(note));
    }
    out
}

/// Freeze on drop: each watched program (what happens to it, whether it is frozen, how many
/// processes), what was last done, what config.toml had refused, and why it cannot work.
fn on_drop(out: &mut String, on_drop: &killswitch_types::ipc::OnDropStatus) {
    for program in &on_drop.programs {
        let processes = format!(
            "{} process{}",
            program.processes,
            if program.processes == 1 { "" } else { "es" }
        );
        let now = match (program.on_drop, program.frozen) {
            (_, true) => format!("frozen, {processes}"),
            (killswitch_types::OnDrop::Freeze, false) => format!("running, {processes}"),
            (killswitch_types::OnDrop::Kill, false) => {
                format!("{processes}, killed when the tunnel is lost")
            }
        };
        let _ = writeln!(
            out,
            "on-drop:   {} {}: {now} ({})",
            program.on_drop,
            clean(&program.label),
            clean(&program.cgroup)
        );
    }
    if let Some(event) = &on_drop.last_event {
        let _ = writeln!(out, "on-drop:   last: {}", clean(event));
    }
    for refused in &on_drop.refused {
        let _ = writeln!(out, "refused:   {}", clean(refused));
    }
    if let Some(error) = &on_drop.error {
        let _ = writeln!(out, "on-drop:   NOT working: {}", clean(error));
    }
}

/// The counts per reason on one line: `12 packets (non-tunnel 9, dns 3, ipv6 0, inbound 0)`.
pub(crate) fn blocked_counts(blocked: &BlockedStatus) -> String {
    let per_reason: Vec<String> = BlockReason::ALL
        .iter()
        .map(|r| format!("{r} {}", blocked.count(*r).packets))
        .collect();
    let total = blocked.total_packets();
    format!(
        "{total} packet{} ({})",
        if total == 1 { "" } else { "s" },
        per_reason.join(", ")
    )
}

/// A byte count for people: `1.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The tunnel's last handshake in words, counted to `now`: `12 s ago`, `none yet`, `not
/// WireGuard`; nothing when the daemon sent none (an older daemon, a tunnel that is down or whose
/// device could not be read).
fn handshake(handshake: Option<&Handshake>, now: SystemTime) -> Option<String> {
    let handshake = handshake?;
    if !handshake.wireguard {
        return Some("not WireGuard".to_owned());
    }
    let Some(at) = handshake.last_unix else {
        return Some("none yet".to_owned());
    };
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Some(format!("{} ago", age(now.saturating_sub(at))))
}

/// The handshake as `killswitch blocked` shows it after the traffic: `handshake 12 s ago`, `no
/// handshake yet`, `handshake: not WireGuard`.
fn handshake_phrase(shake: Option<&Handshake>, now: SystemTime) -> Option<String> {
    let words = handshake(shake, now)?;
    Some(match shake {
        Some(Handshake {
            wireguard: true,
            last_unix: Some(_),
        }) => format!("handshake {words}"),
        Some(Handshake {
            wireguard: true,
            last_unix: None,
        }) => "no handshake yet".to_owned(),
        _ => format!("handshake: {words}"),
    })
}

/// An age for people: seconds up to two minutes (WireGuard renews its handshake every two
/// minutes while traffic flows), then minutes, then hours.
fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// The tunnel interface's byte counters (`rx`, `tx`), as anyone may read them from sysfs.
pub(crate) type Traffic = Option<(u64, u64)>;

/// `killswitch blocked`: the state, the tunnel, the counts per reason and the last refused
/// packets, newest first.
pub(crate) fn blocked_view(status: &Status, traffic: Traffic, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "state:    {} ({})", status.state, meaning(status));
    match &status.tunnel {
        None => {
            let _ = writeln!(out, "tunnel:   none");
        }
        Some(t) => {
            let interface = t.interface.to_string();
            let link = if t.up { "up" } else { "down or absent" };
            let mut line = format!("tunnel:   {} ({link})", clean(&interface));
            if let Some((rx, tx)) = traffic {
                let _ = write!(line, ", rx {}, tx {}", bytes(rx), bytes(tx));
            }
            if let Some(h) = handshake_phrase(t.handshake.as_ref(), now) {
                let _ = write!(line, ", {h}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let Some(blocked) = &status.blocked else {
        let _ = writeln!(
            out,
            "blocked:  unknown (the daemon is older than the counts)"
        );
        return out;
    };
    let _ = writeln!(out, "blocked:  {}", blocked_counts(blocked));
    for reason in BlockReason::ALL {
        let count = blocked.count(reason);
        let _ = writeln!(
            out,
            "  {:<11} {:>10} packets {:>10}",
            reason.name(),
            count.packets,
            bytes(count.bytes)
        );
    }
    if blocked.recent.is_empty() {
        let _ = writeln!(out, "last refused: none logged");
    } else {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let _ = writeln!(out, "last refused (newest first):");
        for packet in blocked.recent.iter().rev() {
            let age = now.saturating_sub(packet.at_unix);
            let _ = writeln!(
                out,
                "  {} ({age}s ago) {}",
                utc_time(packet.at_unix),
                clean(&packet.to_string())
            );
        }
    }
    out
}

/// Each server's last failure, one line each: `server 2 (se2.conf): why [cause]`.
pub(crate) fn server_failures(managed: &killswitch_types::ManagedTunnel) -> Vec<String> {
    managed
        .failures
        .iter()
        .map(|f| {
            let name = managed.servers.get(f.server).map_or("?", String::as_str);
            format!(
                "server {} ({}): {} [{}]",
                f.server + 1,
                clean(name),
                clean(&f.message),
                f.cause
            )
        })
        .collect()
}

/// A moment as RFC 3339 in UTC, to the second: `2026-12-02T18:40:01Z`. (The CLI carries no time
/// zone database; UTC also sorts and compares as text.) A clock before 1970 reads as 1970.
pub(crate) fn rfc3339(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (year, month, day) = civil_from_days(secs / 86_400);
    format!("{year:04}-{month:02}-{day:02}T{}", utc_time(secs))
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// One line for `events`, without its time: state, settings, tunnel, what the manager did last,
/// the error.
pub(crate) fn event_line(status: &Status) -> String {
    let mut line = format!(
        "{} lockdown={} allow-lan={}",
        status.state,
        on_off(status.lockdown),
        on_off(status.allow_lan)
    );
    if status.apps_only {
        line.push_str(" apps-only=on");
    }
    if let Some(t) = &status.tunnel {
        let _ = write!(
            line,
            " tunnel={}({})",
            clean(&t.interface.to_string()),
            if t.up { "up" } else { "down" }
        );
        // What the connection manager did last (an attempt, a failover and why).
        if let Some(event) = t.managed.as_ref().and_then(|m| m.last_event.as_ref()) {
            let _ = write!(line, " last={event:?}");
        }
    }
    if let Some(event) = &status.on_drop.last_event {
        let _ = write!(line, " on-drop={event:?}");
    }
    if let Some(bypass) = &status.bypass {
        // The cgroup's id, not its process count: a bypass starting, ending or its cgroup
        // re-created is a change; a child forked inside it is not.
        let _ = write!(line, " bypass=cgroup:{}", bypass.id);
    }
    if let Some(error) = &status.error {
        let _ = write!(line, " error={error:?}");
    }
    line
}

/// `status`' line for programs running under `exec --bypass`.
fn bypass_line(bypass: &killswitch_types::ipc::BypassStatus) -> String {
    format!(
        "bypass:    {} process{} around the tunnel (killswitch exec --bypass; cgroup id {}, {})",
        bypass.processes,
        if bypass.processes == 1 { "" } else { "es" },
        bypass.id,
        clean(&bypass.cgroup)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_types::TunnelStatus;
    use killswitch_types::ipc::FirewallStatus;

    fn sample() -> Status {
        Status {
            protocol: killswitch_types::ipc::PROTOCOL_VERSION,
            schema: killswitch_types::ipc::STATUS_SCHEMA_VERSION,
            daemon_version: Some(killswitch_types::PRODUCT_VERSION.to_owned()),
            state: State::Connected,
            lockdown: true,
            allow_lan: false,
            apps_only: false,
            tunnel: Some(TunnelStatus {
                interface: "wg0".parse().expect("literal"),
                endpoint: "198.51.100.1:51820".parse().expect("literal"),
                endpoints: vec![],
                dns: vec!["10.64.0.1".parse().expect("literal")],
                mark: killswitch_types::Fwmark::new(0xca6c),
                uid: None,
                up: true,
                addresses: vec!["10.64.0.2".parse().expect("literal")],
                managed: None,
                handshake: None,
            }),
            error: None,
            firewall: FirewallStatus {
                installed: true,
                blocking: true,
                transitions: 3,
                last_apply_us: Some(812),
                tamper_events: 0,
                last_tamper: None,
                routing: true,
                flush_protection: Some(FlushProtection::Kernel),
            },
            dns: None,
            exceptions: Default::default(),
            notes: vec![],
            blocked: Some(Default::default()),
            tunnel_only_users: Vec::new(),
            router_lans: Vec::new(),
            ip_forward: None,
            exec: Vec::new(),
            bypass: None,
            on_drop: Default::default(),
        }
    }

    #[test]
    fn apps_only_says_plainly_that_the_machine_is_not_protected() {
        let mut s = sample();
        s.apps_only = true;
        s.firewall.blocking = false;
        let text = status_at(&s, SystemTime::UNIX_EPOCH);
        assert!(
            text.contains("apps only: on (this machine's own traffic is NOT protected"),
            "{text}"
        );
        assert!(
            text.contains("lockdown:  on (not in force: apps only)"),
            "{text}"
        );
        assert!(text.contains("state:     connected (apps only:"), "{text}");
        assert!(event_line(&s).contains("apps-only=on"));
        assert!(!event_line(&sample()).contains("apps-only"));
        assert!(!status_at(&sample(), SystemTime::UNIX_EPOCH).contains("apps only"));
    }

    #[test]
    fn several_endpoints_and_the_discovery_notes_are_shown() {
        let mut s = sample();
        if let Some(t) = s.tunnel.as_mut() {
            t.endpoints = vec![
                "198.51.100.1:1194".parse().expect("literal"),
                "203.0.113.1:1194/tcp".parse().expect("literal"),
            ];
        }
        s.notes = vec![
            "wg0 had no fwmark; set 0xca6c so that only its own packets use the hole".to_owned(),
        ];
        let text = status(&s);
        assert!(
            text.contains(
                "endpoint:  198.51.100.1:1194/udp, 203.0.113.1:1194/tcp, only with fwmark 0xca6c"
            ),
            "{text}"
        );
        assert!(text.ends_with("note:      wg0 had no fwmark; set 0xca6c so that only its own packets use the hole\n"), "{text}");
    }

    #[test]
    fn a_bypass_shows_in_status_and_events() {
        let mut status = sample();
        assert!(!super::status(&status).contains("bypass"));
        assert!(!event_line(&status).contains("bypass"));
        status.bypass = Some(killswitch_types::ipc::BypassStatus {
            cgroup: "/killswitch/net-4026531840/bypass".to_owned(),
            directory: None,
            id: 4242,
            level: 4,
            processes: 2,
        });
        let text = super::status(&status);
        assert!(
            text.contains("bypass:    2 processes around the tunnel")
                && text.contains("cgroup id 4242"),
            "{text}"
        );
        assert!(event_line(&status).contains("bypass=cgroup:4242"));
        // A child forked inside is no event.
        let before = event_line(&status);
        if let Some(b) = status.bypass.as_mut() {
            b.processes = 3;
        }
        assert_eq!(event_line(&status), before);
    }

    #[test]
    fn tunnel_only_users_are_listed_with_uid_and_source() {
        use killswitch_types::ipc::{TunnelOnlyUserStatus, UserSource};
        let users = vec![
            TunnelOnlyUserStatus {
                user: "debian-transmission".to_owned(),
                uid: 117,
                source: UserSource::Config,
            },
            TunnelOnlyUserStatus {
                user: "1001".to_owned(),
                uid: 1001,
                source: UserSource::Cli,
            },
        ];
        let refused = vec![
            "tunnel-only user \"ghost\": no such user".to_owned(),
            "zt0 is physical".to_owned(),
        ];
        assert_eq!(
            tunnel_only_users(&users, &refused),
            "debian-transmission      uid 117        config\n\
             1001                     uid 1001       cli\n\
             refused: tunnel-only user \"ghost\": no such user\n"
        );
        assert_eq!(
            tunnel_only_users(&[], &[]),
            "none: no user is confined to the tunnel\n"
        );
        let mut s = sample();
        s.tunnel_only_users = users;
        assert!(status(&s).contains(
            "tunnel-only users: debian-transmission (uid 117), 1001 (uid 1001) (through the tunnel or not at all, in every state)\n"
        ));
        assert!(!status(&sample()).contains("tunnel-only"));
    }

    #[test]
    fn router_lans_say_what_their_clients_get_and_warn_when_ip_forward_is_off() {
        use killswitch_types::ipc::{RouterLanStatus, UserSource};
        let lan = |name: &str, nets: &[&str], present, forwarding, source| RouterLanStatus {
            interface: name.parse().expect("literal"),
            networks: nets.iter().map(|n| n.parse().expect("literal")).collect(),
            source,
            present,
            forwarding,
        };
        let mut s = sample();
        s.router_lans = vec![
            lan(
                "lan0",
                &["192.168.50.0/24", "fd00:50::/64"],
                true,
                true,
                UserSource::Config,
            ),
            lan("lan1", &[], false, false, UserSource::Cli),
        ];
        s.ip_forward = Some(true);
        s.exceptions.refused = vec![
            "router LAN eth0 (config): eth0 holds the default route: it is the WAN".to_owned(),
        ];
        let text = status(&s);
        assert!(
            text.contains(
                "router:    lan0 (192.168.50.0/24, fd00:50::/64): clients through the tunnel (wg0)\n"
            ),
            "{text}"
        );
        assert!(text.contains("router:    lan1: absent"), "{text}");
        assert!(!text.contains("ip_forward"), "{text}");
        let list = router_lans(&s);
        assert!(
            list.starts_with("lan0             192.168.50.0/24,fd00:50::/64"),
            "{list}"
        );
        assert!(
            list.contains(" config clients through the tunnel (wg0)\n"),
            "{list}"
        );
        assert!(list.contains("\nlan1             -"), "{list}");
        assert!(list.contains("refused: router LAN eth0 (config)"), "{list}");
        let json: serde_json::Value =
            serde_json::from_str(&router_lans_json(&s)).expect("router list --json");
        assert_eq!(json[0]["interface"], "lan0");
        assert_eq!(json[0]["clients"], "clients through the tunnel (wg0)");
        assert!(
            json[1]["clients"]
                .as_str()
                .is_some_and(|c| c.starts_with("absent")),
            "{json}"
        );
        // Not connected: refused; ip_forward off: warned, in both.
        s.state = State::Connecting;
        s.ip_forward = Some(false);
        let text = status(&s);
        assert!(
            text.contains("lan0 (192.168.50.0/24, fd00:50::/64): clients refused: no tunnel connected (connecting)"),
            "{text}"
        );
        assert!(
            text.contains("warning:   net.ipv4.ip_forward is 0"),
            "{text}"
        );
        assert!(router_lans(&s).contains("warning: net.ipv4.ip_forward is 0"));
        // None: said plainly, and nothing in status.
        assert_eq!(
            router_lans(&sample()),
            "none: this machine is no LAN's protected gateway\n"
        );
        assert!(!status(&sample()).contains("router"));
    }

    #[test]
    fn exceptions_are_reported_when_there_are_any() {
        let mut s = sample();
        s.exceptions.local_bridges = vec!["docker0".to_owned(), "virbr0".to_owned()];
        s.exceptions.interfaces = vec!["tailscale0".to_owned()];
        s.exceptions.inbound = vec!["tcp/22 on eth0".to_owned()];
        s.exceptions.refused = vec!["eth0 is a physical interface".to_owned()];
        let text = status(&s);
        assert!(
            text.contains("bridges:   docker0, virbr0 (local;"),
            "{text}"
        );
        assert!(
            text.contains("allowed:   interface tailscale0; inbound tcp/22 on eth0\n"),
            "{text}"
        );
        assert!(
            text.contains("refused:   eth0 is a physical interface\n"),
            "{text}"
        );
    }

    #[test]
    fn the_handshake_age_is_shown_next_to_the_traffic() {
        let mut s = sample();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let with = |s: &mut Status, h: Option<Handshake>| {
            if let Some(t) = s.tunnel.as_mut() {
                t.handshake = h;
            }
        };
        with(
            &mut s,
            Some(Handshake {
                wireguard: true,
                last_unix: Some(1_799_999_988),
            }),
        );
        let text = blocked_view(&s, Some((2048, 10)), now);
        assert!(
            text.contains("tunnel:   wg0 (up), rx 2.0 KiB, tx 10 B, handshake 12 s ago\n"),
            "{text}"
        );
        assert!(
            status_at(&s, now).contains("tunnel:    wg0 (up, 10.64.0.2)\nhandshake: 12 s ago\n")
        );
        with(
            &mut s,
            Some(Handshake {
                wireguard: true,
                last_unix: None,
            }),
        );
        assert!(blocked_view(&s, None, now).contains("tunnel:   wg0 (up), no handshake yet\n"));
        assert!(status_at(&s, now).contains("handshake: none yet\n"));
        with(
            &mut s,
            Some(Handshake {
                wireguard: false,
                last_unix: None,
            }),
        );
        assert!(
            blocked_view(&s, None, now).contains("tunnel:   wg0 (up), handshake: not WireGuard\n")
        );
        assert!(status_at(&s, now).contains("handshake: not WireGuard\n"));
        // An older daemon's answer, or a handshake from a clock ahead of ours.
        with(&mut s, None);
        assert!(!status_at(&s, now).contains("handshake"));
        assert!(blocked_view(&s, None, now).contains("tunnel:   wg0 (up)\n"));
        with(
            &mut s,
            Some(Handshake {
                wireguard: true,
                last_unix: Some(1_800_000_005),
            }),
        );
        assert!(status_at(&s, now).contains("handshake: 0 s ago\n"));
        assert_eq!(
            [age(119), age(120), age(7199), age(7200)],
            ["119 s", "2 min", "119 min", "2 h"]
        );
    }

    #[test]
    fn status_reads_like_a_report() {
        let text = status(&sample());
        assert_eq!(
            text,
            "state:     connected (traffic leaves only through the tunnel)\n\
             lockdown:  on\n\
             allow-lan: off\n\
             tunnel:    wg0 (up, 10.64.0.2)\n\
             endpoint:  198.51.100.1:51820/udp, only with fwmark 0xca6c\n\
             dns:       10.64.0.1\n\
             firewall:  rules installed (3 changes, last change took 812 us); routing layer in place\n\
             flushes:   refused by the kernel (the tables are the daemon's own)\n\
             blocked:   0 packets (non-tunnel 0, dns 0, ipv6 0, inbound 0)\n\
             error:     none\n"
        );
    }

    #[test]
    fn the_blocked_view_lists_counts_and_the_newest_refusal_first() {
        let mut s = sample();
        let blocked = s.blocked.get_or_insert_default();
        blocked.counts.insert(
            "dns".to_owned(),
            killswitch_types::Count {
                packets: 3,
                bytes: 180,
            },
        );
        blocked.counts.insert(
            "non-tunnel".to_owned(),
            killswitch_types::Count {
                packets: 1,
                bytes: 3 << 20,
            },
        );
        let refused = |port, uid| killswitch_types::BlockedPacket {
            at_unix: 3600,
            reason: "dns".to_owned(),
            family: "ipv4".to_owned(),
            protocol: "udp".to_owned(),
            destination: "192.0.2.53".to_owned(),
            port: Some(port),
            interface: Some("eth0\u{1b}[2J".to_owned()),
            uid,
        };
        blocked.recent = vec![refused(53, Some(1000)), refused(853, None)];
        assert!(
            status(&s).contains("blocked:   4 packets (non-tunnel 1, dns 3, ipv6 0, inbound 0)\n")
        );
        let now = UNIX_EPOCH + std::time::Duration::from_secs(3605);
        let text = blocked_view(&s, Some((2048, 10)), now);
        assert!(
            text.contains("tunnel:   wg0 (up), rx 2.0 KiB, tx 10 B\n"),
            "{text}"
        );
        assert!(
            text.contains("  dns                  3 packets      180 B\n"),
            "{text}"
        );
        assert!(
            text.contains("  non-tunnel           1 packets    3.0 MiB\n"),
            "{text}"
        );
        let newest = text.find(":853").expect("listed");
        let older = text.find(":53 ").expect("listed");
        assert!(newest < older, "newest first:\n{text}");
        assert!(
            text.contains("01:00:00Z (5s ago) dns udp 192.0.2.53:53 via eth0\\u{1b}[2J uid 1000\n"),
            "{text}"
        );
    }

    #[test]
    fn tampering_is_reported() {
        let mut s = sample();
        s.firewall.tamper_events = 2;
        s.firewall.last_tamper = Some("table inet killswitch is missing (by nft[7])".to_owned());
        assert!(status(&s).contains(
            "tampering: restored 2 times; last: table inet killswitch is missing (by nft[7])\n"
        ));
    }

    #[test]
    fn managed_dns_is_reported() {
        let mut s = sample();
        s.dns = Some(killswitch_types::ipc::DnsStatus {
            via: "/etc/resolv.conf".to_owned(),
            servers: vec!["10.64.0.1".parse().expect("literal")],
            ..Default::default()
        });
        assert!(status(&s).contains("resolver:  10.64.0.1 via /etc/resolv.conf\n"));
        assert!(!status(&s).contains("rewritten:"));
        s.dns = Some(killswitch_types::ipc::DnsStatus {
            via: "systemd-resolved".to_owned(),
            servers: vec![],
            error: Some("systemd-resolved is not running".to_owned()),
            ..Default::default()
        });
        assert!(
            status(&s).contains(
                "resolver:  NOT set (systemd-resolved): systemd-resolved is not running\n"
            )
        );
    }

    #[test]
    fn a_rewritten_resolv_conf_is_reported() {
        let mut s = sample();
        s.dns = Some(killswitch_types::ipc::DnsStatus {
            via: "/etc/resolv.conf".to_owned(),
            servers: vec!["10.64.0.1".parse().expect("literal")],
            error: None,
            rewrites: 2,
            last_rewrite_at: Some(86_400 * 365 + 12 * 3600 + 3 * 60 + 44),
            last_rewrite: Some(
                "naming 192.168.1.1; the tunnel's resolvers were put back".to_owned(),
            ),
            watch_error: None,
        });
        let text = status(&s);
        assert!(
            text.contains(
                "resolver:  10.64.0.1 via /etc/resolv.conf\n\
                 rewritten: 2 times by another program; last at 12:03:44Z: naming 192.168.1.1; \
                 the tunnel's resolvers were put back\n"
            ),
            "{text}"
        );
        if let Some(dns) = s.dns.as_mut() {
            dns.rewrites = 0;
            dns.watch_error = Some("watching /etc: No such file or directory".to_owned());
        }
        assert!(status(&s).contains(
            "watch:     NOT watching /etc/resolv.conf for rewrites by other programs: \
             watching /etc: No such file or directory\n"
        ));
    }

    #[test]
    fn event_line_says_what_the_manager_did() {
        let mut s = sample();
        if let Some(t) = s.tunnel.as_mut() {
            t.managed = Some(killswitch_types::ManagedTunnel {
                backend: Some("userspace".to_owned()),
                servers: vec!["se1.conf".to_owned(), "se2.conf".to_owned()],
                server: 1,
                attempt: 1,
                last_event: Some("lost server 1: no sign of life for 3.0 s".to_owned()),
                failures: vec![],
            });
        }
        assert!(
            event_line(&s)
                .ends_with(" tunnel=wg0(up) last=\"lost server 1: no sign of life for 3.0 s\""),
            "{}",
            event_line(&s)
        );
    }

    #[test]
    fn status_names_each_failed_servers_cause() {
        let mut s = sample();
        s.state = State::Connecting;
        if let Some(t) = s.tunnel.as_mut() {
            t.up = false;
            t.managed = Some(killswitch_types::ManagedTunnel {
                backend: Some("userspace".to_owned()),
                servers: vec!["se1.conf".to_owned(), "se2.conf".to_owned()],
                server: 0,
                attempt: 2,
                last_event: None,
                failures: vec![
                    killswitch_types::ServerFailure {
                        server: 0,
                        cause: killswitch_types::FailureCause::NoHandshake,
                        message: "no handshake within 5 s: wrong key or server down".to_owned(),
                    },
                    killswitch_types::ServerFailure {
                        server: 1,
                        cause: killswitch_types::FailureCause::Unreachable,
                        message: "no route\nerror:     none".to_owned(),
                    },
                ],
            });
        }
        let text = status(&s);
        assert!(
            text.contains(
                "failed:    server 1 (se1.conf): no handshake within 5 s: wrong key or server down [no_handshake]\n\
                 failed:    server 2 (se2.conf): no route\\nerror:     none [unreachable]\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn watched_programs_show_in_status_and_what_was_done_in_events() {
        let mut s = sample();
        s.state = State::Connecting;
        s.on_drop = killswitch_types::ipc::OnDropStatus {
            programs: vec![
                killswitch_types::ipc::WatchedProgram {
                    label: "/usr/bin/transmission-daemon".to_owned(),
                    on_drop: killswitch_types::OnDrop::Freeze,
                    cgroup: "/sys/fs/cgroup/killswitch/net-1/drop-0".to_owned(),
                    frozen: true,
                    processes: 3,
                },
                killswitch_types::ipc::WatchedProgram {
                    label: "/usr/bin/qbittorrent-nox".to_owned(),
                    on_drop: killswitch_types::OnDrop::Kill,
                    cgroup: "/sys/fs/cgroup/killswitch/net-1/drop-1".to_owned(),
                    frozen: false,
                    processes: 0,
                },
            ],
            held: true,
            last_event: Some("frozen 1 program, killed 1 program (tunnel lost)".to_owned()),
            refused: vec!["freeze_on_drop /opt/none: no such file".to_owned()],
            error: None,
        };
        let report = status(&s);
        assert!(
            report.contains(
                "on-drop:   freeze /usr/bin/transmission-daemon: frozen, 3 processes \
                 (/sys/fs/cgroup/killswitch/net-1/drop-0)\n"
            ),
            "{report}"
        );
        assert!(
            report.contains("on-drop:   kill /usr/bin/qbittorrent-nox: 0 processes, killed when the tunnel is lost"),
            "{report}"
        );
        assert!(
            report.contains("on-drop:   last: frozen 1 program, killed 1 program (tunnel lost)\n")
        );
        assert!(report.contains("refused:   freeze_on_drop /opt/none: no such file\n"));
        assert!(
            event_line(&s)
                .ends_with(" on-drop=\"frozen 1 program, killed 1 program (tunnel lost)\""),
            "{}",
            event_line(&s)
        );
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["on_drop"]["programs"][0]["on_drop"], "freeze");
        assert_eq!(json["on_drop"]["programs"][1]["on_drop"], "kill");
        assert_eq!(json["on_drop"]["held"], true);
        // Nothing watched: nothing shown, and no field in the JSON.
        let quiet = sample();
        assert!(!status(&quiet).contains("on-drop"));
        assert!(
            serde_json::to_value(&quiet)
                .expect("json")
                .get("on_drop")
                .is_none()
        );
    }

    #[test]
    fn event_line_has_state_and_settings() {
        assert_eq!(
            event_line(&sample()),
            "connected lockdown=on allow-lan=off tunnel=wg0(up)"
        );
    }

    #[test]
    fn rfc3339_dates_are_right_across_years_and_leap_days() {
        let at = |secs| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(3600 * 25 + 61)), "1970-01-02T01:01:01Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_796_236_801)), "2026-12-02T18:40:01Z");
        assert_eq!(rfc3339(at(4_107_542_399)), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(at(4_107_542_400)), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn words_from_the_daemon_cannot_drive_the_terminal_or_forge_lines() {
        let mut s = sample();
        s.firewall.tamper_events = 1;
        s.firewall.last_tamper =
            Some("flushed by \u{1b}[2J\u{1b}[Hevil\nerror:     none".to_owned());
        s.error = Some("bad\rname\u{7}".to_owned());
        s.dns = Some(killswitch_types::ipc::DnsStatus {
            via: "/etc/resolv.conf".to_owned(),
            servers: vec![],
            error: None,
            rewrites: 1,
            last_rewrite_at: None,
            last_rewrite: Some("nameserver 192.0.2.1\u{1b}]0;pwned\u{7}".to_owned()),
            watch_error: Some("watching\n/etc".to_owned()),
        });
        let report = status(&s);
        assert!(!report.contains('\u{1b}'), "{report}");
        assert!(
            !report.contains('\r') && !report.contains('\u{7}'),
            "{report}"
        );
        assert_eq!(
            report.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "a forged line: {report}"
        );
        assert!(
            report.contains("flushed by \\u{1b}[2J"),
            "shown escaped: {report}"
        );
        assert_eq!(clean("plain, ünïcode"), "plain, ünïcode");
    }
}
