//! The VM lab's report: per scenario, what the guest sent in its window (tunnel, link bring-up,
//! leaks), its checks and timings; then the boot timings and where the artefacts are.

use super::Judged;
use super::scenarios::Expect;
use crate::report::{host_namespace, verdict, write_scenario};
use crate::scenarios::{Check, Verdict};
use serde::Serialize;
use std::fmt::Write;

/// One scenario of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct VmScenario {
    /// Its name.
    pub name: &'static str,
    /// What it guards against.
    pub guards: &'static str,
    /// What its window must show: no leak, leaks (the negative control), or nothing judged
    /// (unprotected by design: before the install, after the removal).
    pub expect: Expect,
    /// The verdict.
    pub verdict: Verdict,
    /// What the guest sent in the scenario's window.
    pub window: Judged,
    /// Every check and whether it held.
    pub checks: Vec<Check>,
    /// Timings and explanations.
    pub notes: Vec<String>,
    /// Why the scenario could not be run to the end, if it could not.
    pub error: Option<String>,
    /// Wall time.
    pub wall_ms: u64,
}

/// A named duration measured in the run.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// What was timed.
    pub what: String,
    /// Seconds.
    pub seconds: f64,
}

/// The guest and the machine it ran on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestInfo {
    /// The image's manifest (kernel, package versions, build time).
    pub image: String,
    /// QEMU's version.
    pub qemu: String,
    /// The accelerator (TCG: this machine's KVM cannot run a stock kernel).
    pub accel: &'static str,
    /// Whether the image was built in this run or taken from the cache.
    pub image_cached: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct VmReport {
    /// The guest.
    pub guest: GuestInfo,
    /// Where the upgrade's starting package came from.
    pub previous_deb: String,
    /// Each scenario, in the order run.
    pub scenarios: Vec<VmScenario>,
    /// Boots, reboots and other measured durations.
    pub timings: Vec<Timing>,
    /// Console log, agent log, pcap, journals.
    pub artefacts: String,
    /// Whether the namespace the lab was started from is exactly as before.
    pub host_unchanged: bool,
    /// Every scenario passed and the host is unchanged.
    pub passed: bool,
    /// Why the lab could not run, if it could not.
    pub error: Option<String>,
    /// Wall time.
    pub wall_ms: u64,
}

impl VmReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "killswitch VM lab");
        let _ = writeln!(
            out,
            "One Debian guest (systemd, kernel WireGuard, QEMU {} under {}) with the package under test, \
             driven through a serial-port agent. A capture on the far side of the guest's link, opened before \
             QEMU starts, is the judge: any frame the guest sends that is neither the tunnel's own packets nor \
             ARP/DHCP/neighbour discovery is a leak. The guest offers UDP, TCP, ping and DNS from the first \
             moments of every boot.\n",
            self.guest.qemu, self.guest.accel
        );
        let w = self
            .scenarios
            .iter()
            .map(|s| s.name.len())
            .chain(["scenario".len()])
            .max()
            .unwrap_or(8);
        let _ = writeln!(
            out,
            "{:<w$} {:<7} {:>7} {:>7} {:>8} {:>7} {:>8}",
            "scenario", "verdict", "sent", "tunnel", "link", "leaked", "seconds"
        );
        for s in &self.scenarios {
            let j = &s.window;
            let _ = writeln!(
                out,
                "{:<w$} {:<7} {:>7} {:>7} {:>8} {:>7} {:>8.1}",
                s.name,
                verdict(s.verdict),
                j.sent,
                j.tunnel,
                j.link_bring_up,
                match s.expect {
                    Expect::NoLeaks => j.leaked.to_string(),
                    Expect::Leaks => format!("({})", j.leaked),
                    Expect::Unprotected => format!("[{}]", j.leaked),
                },
                s.wall_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "\nsent: frames the guest put on its link in the scenario's window; tunnel: the tunnel's own packets; \
             link: ARP, DHCP, neighbour discovery; leaked: everything else (in parentheses: the negative control, \
             which must see leaks; in brackets: unprotected by design, before the install or after the removal, \
             not judged).\n"
        );
        for (i, s) in self.scenarios.iter().enumerate() {
            write_scenario(
                &mut out,
                i + 1,
                (s.name, s.verdict, s.guards),
                &s.checks,
                &s.notes,
            );
            // Unprotected windows leak by design; their frames are counted, not listed.
            let examples = match s.expect {
                Expect::Unprotected => &[][..],
                _ => &s.window.examples[..],
            };
            for leak in examples {
                let _ = writeln!(
                    out,
                    "   {} {leak}",
                    match s.expect {
                        Expect::NoLeaks => "LEAK:",
                        Expect::Leaks => "seen:",
                        Expect::Unprotected => "unprotected:",
                    }
                );
            }
            if let Some(error) = &s.error {
                let _ = writeln!(out, "   ERROR: {}", error.replace('\n', "\n          "));
            }
        }
        let _ = writeln!(out, "\ntimings:");
        for t in &self.timings {
            let _ = writeln!(out, "   {:<58} {:>7.1} s", t.what, t.seconds);
        }
        let _ = writeln!(
            out,
            "\nguest image: {} ({})",
            self.guest.image.replace('\n', "; "),
            if self.guest.image_cached {
                "from the cache"
            } else {
                "built in this run"
            }
        );
        let _ = writeln!(out, "upgrade from: {}", self.previous_deb);
        let _ = writeln!(out, "artefacts: {}", self.artefacts);
        if let Some(error) = &self.error {
            let _ = writeln!(out, "ERROR: {error}");
        }
        let _ = writeln!(
            out,
            "host namespace: {}",
            host_namespace(self.host_unchanged)
        );
        let leaked: usize = self
            .scenarios
            .iter()
            .filter(|s| s.expect == Expect::NoLeaks)
            .map(|s| s.window.leaked)
            .sum();
        let _ = writeln!(
            out,
            "verdict: {} ({} scenarios, {} leaked frames in protected windows, {:.1} s)",
            if self.passed { "PASS" } else { "FAIL" },
            self.scenarios.len(),
            leaked,
            self.wall_ms as f64 / 1000.0
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &'static str, expect: Expect, leaked: usize) -> VmScenario {
        VmScenario {
            name,
            guards: "",
            expect,
            verdict: Verdict::Pass,
            window: Judged {
                sent: leaked + 10,
                tunnel: 10,
                leaked,
                examples: vec![format!("udp {name}")],
                ..Judged::default()
            },
            checks: Vec::new(),
            notes: Vec::new(),
            error: None,
            wall_ms: 1000,
        }
    }

    #[test]
    fn only_protected_windows_count_as_leaks() {
        let report = VmReport {
            guest: GuestInfo::default(),
            previous_deb: String::new(),
            scenarios: vec![
                scenario("install", Expect::Unprotected, 5),
                scenario("reboot", Expect::NoLeaks, 0),
                scenario("control", Expect::Leaks, 3),
            ],
            timings: Vec::new(),
            artefacts: String::new(),
            host_unchanged: true,
            passed: true,
            error: None,
            wall_ms: 0,
        };
        let text = report.render();
        assert!(text.contains("[5]"), "{text}");
        assert!(text.contains("(3)"), "{text}");
        assert!(
            text.contains("0 leaked frames in protected windows"),
            "{text}"
        );
        assert!(
            !text.contains("udp install"),
            "unprotected frames are not listed: {text}"
        );
        assert!(text.contains("seen: udp control"), "{text}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["scenarios"][0]["expect"], "unprotected");
        assert_eq!(json["scenarios"][2]["expect"], "leaks");
    }
}
