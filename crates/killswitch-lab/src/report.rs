//! The lab report: a table a person can read, and the same data as JSON.

use crate::scenarios::{Check, ScenarioReport, Verdict};
use serde::Serialize;
use std::fmt::Write;

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// Packets per second the generator offered.
    pub rate: u32,
    /// Each scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Sums over the scenarios' protected windows.
    pub totals: Totals,
    /// Whether the namespace the lab was started from is exactly as before (ruleset, routes, rules,
    /// links).
    pub host_unchanged: bool,
    /// The overall verdict: every scenario passed and the host is unchanged.
    pub passed: bool,
    /// Wall time of the whole run.
    pub wall_ms: u64,
}

/// Sums over the protected windows.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Packets offered.
    pub offered: u64,
    /// Arrivals through the tunnel.
    pub through_tunnel: u64,
    /// Refused at once by the kill switch.
    pub blocked: u64,
    /// Leaked onto the physical link.
    pub leaked: u64,
}

impl LabReport {
    /// Assembles the report.
    pub fn new(
        rate: u32,
        scenarios: Vec<ScenarioReport>,
        host_unchanged: bool,
        wall_ms: u64,
    ) -> Self {
        let mut totals = Totals::default();
        for s in &scenarios {
            totals.offered += s.measurement.offered;
            totals.through_tunnel += s.measurement.through_tunnel;
            totals.blocked += s.measurement.refused;
            totals.leaked += s.measurement.leaked;
        }
        let passed = host_unchanged
            && !scenarios.is_empty()
            && scenarios.iter().all(|s| s.verdict == Verdict::Pass);
        LabReport {
            rate,
            scenarios,
            totals,
            host_unchanged,
            passed,
            wall_ms,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "killswitch leak lab");
        let _ = writeln!(
            out,
            "Each scenario runs in fresh network namespaces: a client protected by killswitchd, a real WireGuard \
             tunnel (wireguard-go) to a server, and a capture on the client's physical link. Traffic (UDP, TCP, \
             ICMP, DNS, IPv6) is offered at {} packets/s. Any frame on the physical link that is neither the \
             tunnel's own packets nor ARP/DHCP/neighbour discovery is a leak.\n",
            self.rate
        );
        // The name column fits the longest name.
        let w = self
            .scenarios
            .iter()
            .map(|s| s.name.len())
            .chain(["scenario".len()])
            .max()
            .unwrap_or(8);
        let _ = writeln!(
            out,
            "{:<w$} {:<7} {:>8} {:>8} {:>8} {:>6} {:>7} {:>11}",
            "scenario", "verdict", "offered", "tunnel", "blocked", "lost", "leaked", "longest gap"
        );
        for s in &self.scenarios {
            let m = &s.measurement;
            let lost = m
                .offered
                .saturating_sub(m.through_tunnel + m.direct + m.refused);
            let gap = m
                .longest_gap_ms
                .map_or("-".to_owned(), |g| format!("{g} ms"));
            let _ = writeln!(
                out,
                "{:<w$} {:<7} {:>8} {:>8} {:>8} {:>6} {:>7} {:>11}",
                s.name,
                verdict(s.verdict),
                m.offered,
                m.through_tunnel,
                m.refused,
                lost,
                m.leaked,
                gap
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "{:<w$} {:<7} {:>8} {:>8} {:>8} {:>6} {:>7}",
            "total",
            if self.passed { "PASS" } else { "FAIL" },
            t.offered,
            t.through_tunnel,
            t.blocked,
            "",
            t.leaked
        );
        let _ = writeln!(
            out,
            "\noffered: packets and connection attempts sent; tunnel: arrivals at the target and resolvers through \
             the tunnel; blocked: refused at once by the kill switch (the application got an error); lost: sent \
             into a tunnel that was down, or still in flight; longest gap: longest time without any arrival.\n"
        );
        for (i, s) in self.scenarios.iter().enumerate() {
            write_scenario(
                &mut out,
                i + 1,
                (s.name, s.verdict, s.guards),
                &s.checks,
                &s.notes,
            );
            for leak in &s.measurement.leaks {
                let _ = writeln!(out, "   LEAK: {leak}");
            }
            if let Some(error) = &s.error {
                let _ = writeln!(out, "   ERROR: {}", error.replace('\n', "\n          "));
            }
            let _ = writeln!(out, "   ({:.1} s)", s.wall_ms as f64 / 1000.0);
        }
        let _ = writeln!(
            out,
            "\nhost namespace: {}",
            host_namespace(self.host_unchanged)
        );
        let _ = writeln!(
            out,
            "verdict: {} ({} scenarios, {} leaked packets, {:.1} s)",
            if self.passed { "PASS" } else { "FAIL" },
            self.scenarios.len(),
            t.leaked,
            self.wall_ms as f64 / 1000.0
        );
        out.push_str(WHAT_NEXT);
        out
    }
}

/// The end of the text report: a newcomer who has just seen `verdict: PASS` learns how to protect
/// their own machine, in the words of README's quickstarts.
pub const WHAT_NEXT: &str = "\nwhat next: protect this machine. Install the package (README, \"Installing\"), then, for a tunnel\n\
     that wg-quick brings up:\n  \
     wg-quick up wg0; sudo killswitch guard wg0; sudo killswitch lockdown on\n\
     or with killswitchd as the WireGuard client:  sudo killswitch up --wait /etc/wireguard/wg0.conf\n\
     then check it:  killswitch verify   (README, \"Quickstarts\", for NetworkManager and OpenVPN)\n";

/// A scenario's heading, its checks and its notes, as both labs' reports show them.
pub(crate) fn write_scenario(
    out: &mut String,
    number: usize,
    (name, v, guards): (&str, Verdict, &str),
    checks: &[Check],
    notes: &[String],
) {
    let _ = writeln!(out, "{number}. {name} [{}]: {guards}", verdict(v));
    for check in checks {
        let _ = writeln!(
            out,
            "   {} {}",
            if check.passed { "ok  " } else { "FAIL" },
            check.what
        );
    }
    for note in notes {
        let _ = writeln!(out, "   note: {note}");
    }
}

/// What the report says about the namespace the lab was started from.
pub(crate) fn host_namespace(unchanged: bool) -> &'static str {
    if unchanged {
        "unchanged (ruleset, routes, rules, links and resolv.conf compared before and after)"
    } else {
        "CHANGED - the lab touched the namespace it was started from"
    }
}

/// A verdict as the reports print it.
pub(crate) fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Error => "ERROR",
    }
}
