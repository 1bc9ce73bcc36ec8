//! When the watched programs are held (frozen or killed): the pure part of freeze on drop, kept
//! by the state machine ([`crate::core`]), which performs no I/O.
//!
//! The rule: programs are held while a tunnel is wanted (`up` or `guard`) and the state is not
//! `connected`, and released when it is connected again. That covers every way the tunnel is
//! lost: its interface deleted or down, the handshake lost (`up`), a failover to the next server,
//! and a fault that blocks everything. A deliberate `down` or `off` is not a loss: the user chose
//! to have no tunnel, and programs frozen then would stay frozen with nothing to thaw them, so they
//! are released (`down` under lockdown blocks them at the firewall, as it blocks everything). A
//! tunnel that is still connecting after `up` holds them too: until the tunnel is up they cannot
//! reach anything anyway, and the rule stays one line that a restart re-derives.
//!
//! Nothing is decided while nothing is watched: with no watched cgroup the state machine emits no
//! freeze at all; when one appears while the tunnel is lost, it emits one then.

use killswitch_types::State;
use killswitch_types::ipc::{OnDropStatus, WatchedProgram};

/// What the executor is asked to do to every watched cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Freeze (or kill, for `kill_on_drop` ones) them all; `reason` ends the event's line.
    Freeze {
        /// Why: `tunnel lost`, `tunnel not connected`, `blocked`.
        reason: String,
    },
    /// Thaw them all.
    Thaw,
}

/// What the executor reports after a change of the watched set or a freeze or thaw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The watched programs as they are now.
    pub programs: Vec<WatchedProgram>,
    /// config.toml entries refused, and why.
    pub refused: Vec<String>,
    /// Why freezing does not work, if it does not.
    pub error: Option<String>,
    /// What was just done (`frozen 2 programs (tunnel lost)`), if anything.
    pub event: Option<String>,
}

/// The state machine's view of the watched programs.
#[derive(Debug, Default, Clone)]
pub struct OnDropState {
    report: Report,
    held: bool,
    last_event: Option<String>,
    /// The state at the previous decision: a loss is a move away from `connected`.
    last_state: Option<State>,
}

impl OnDropState {
    /// Takes the executor's report.
    pub fn record(&mut self, report: Report) {
        if report.event.is_some() {
            self.last_event.clone_from(&report.event);
        }
        self.report = report;
    }

    /// Whether the watched programs are held now.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Decides, after every input, what to do given the state and whether a tunnel is wanted:
    /// an action when holding should start or end, `None` when nothing changes.
    pub fn decide(&mut self, state: State, tunnel_wanted: bool) -> Option<Action> {
        let previous = self.last_state.replace(state);
        let reason = match state {
            _ if !tunnel_wanted => None,
            State::Connected | State::Off | State::Disconnected => None,
            State::Connecting if previous == Some(State::Connected) => Some("tunnel lost"),
            State::Connecting => Some("tunnel not connected"),
            State::Blocked => Some("blocked"),
        };
        let want = reason.is_some() && !self.report.programs.is_empty();
        if want == self.held {
            return None;
        }
        self.held = want;
        Some(match reason {
            Some(reason) if want => Action::Freeze {
                reason: reason.to_owned(),
            },
            _ => Action::Thaw,
        })
    }

    /// What `status` shows.
    pub fn status(&self) -> OnDropStatus {
        OnDropStatus {
            programs: self.report.programs.clone(),
            held: self.held,
            last_event: self.last_event.clone(),
            refused: self.report.refused.clone(),
            error: self.report.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_types::OnDrop;

    fn watching(n: usize) -> Report {
        Report {
            programs: (0..n)
                .map(|i| WatchedProgram {
                    label: format!("/usr/bin/p{i}"),
                    on_drop: OnDrop::Freeze,
                    cgroup: format!("drop-{i}"),
                    frozen: false,
                    processes: 1,
                })
                .collect(),
            ..Report::default()
        }
    }

    fn freeze(reason: &str) -> Option<Action> {
        Some(Action::Freeze {
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn leaving_connected_freezes_and_coming_back_thaws() {
        let mut on_drop = OnDropState::default();
        on_drop.record(watching(2));
        assert_eq!(on_drop.decide(State::Connected, true), None);
        assert_eq!(
            on_drop.decide(State::Connecting, true),
            freeze("tunnel lost")
        );
        assert!(on_drop.held());
        assert_eq!(on_drop.decide(State::Connecting, true), None, "once");
        assert_eq!(on_drop.decide(State::Blocked, true), None, "still held");
        assert_eq!(on_drop.decide(State::Connected, true), Some(Action::Thaw));
        assert!(!on_drop.held());
    }

    #[test]
    fn deliberate_down_and_off_release_and_never_hold() {
        let mut on_drop = OnDropState::default();
        on_drop.record(watching(1));
        on_drop.decide(State::Connected, true);
        // `down` without lockdown, then with lockdown (blocked), then `off`: no tunnel wanted.
        for state in [State::Disconnected, State::Blocked, State::Off] {
            assert_eq!(on_drop.decide(state, false), None, "{state}");
        }
        // Lost, then `down`: released.
        on_drop.decide(State::Connected, true);
        assert!(on_drop.decide(State::Connecting, true).is_some());
        assert_eq!(
            on_drop.decide(State::Disconnected, false),
            Some(Action::Thaw)
        );
    }

    #[test]
    fn nothing_watched_means_no_freeze_until_something_is() {
        let mut on_drop = OnDropState::default();
        on_drop.decide(State::Connected, true);
        assert_eq!(on_drop.decide(State::Connecting, true), None);
        // A program registered while the tunnel is lost is held at once.
        on_drop.record(watching(1));
        assert_eq!(
            on_drop.decide(State::Connecting, true),
            freeze("tunnel not connected")
        );
        // The last one forgotten: released (nothing left to hold).
        on_drop.record(watching(0));
        assert_eq!(on_drop.decide(State::Connecting, true), Some(Action::Thaw));
    }

    #[test]
    fn a_fault_while_a_tunnel_is_wanted_holds() {
        let mut on_drop = OnDropState::default();
        on_drop.record(watching(1));
        on_drop.decide(State::Connected, true);
        assert_eq!(on_drop.decide(State::Blocked, true), freeze("blocked"));
    }

    /// Every sequence of four steps (a state, whether a tunnel is wanted, how many programs are
    /// watched): after each, the programs are held exactly when the rule says, and the actions
    /// alternate (never frozen twice, never thawed when not frozen, nothing when nothing changes).
    #[test]
    fn every_short_sequence_holds_exactly_when_the_rule_says() {
        let steps: Vec<(State, bool, usize)> = State::ALL
            .iter()
            .flat_map(|s| [(*s, false), (*s, true)])
            .flat_map(|(s, w)| [(s, w, 0), (s, w, 1)])
            .collect();
        let n = steps.len();
        for mut index in 0..n.pow(4) {
            let mut on_drop = OnDropState::default();
            let mut trace = Vec::new();
            for _ in 0..4 {
                let (state, wanted, watched) = steps[index % n];
                index /= n;
                trace.push((state, wanted, watched));
                on_drop.record(watching(watched));
                let before = on_drop.held();
                let action = on_drop.decide(state, wanted);
                let rule =
                    wanted && watched > 0 && matches!(state, State::Connecting | State::Blocked);
                assert_eq!(on_drop.held(), rule, "{trace:?}");
                match action {
                    Some(Action::Freeze { .. }) => assert!(!before && rule, "{trace:?}"),
                    Some(Action::Thaw) => assert!(before && !rule, "{trace:?}"),
                    None => assert_eq!(before, rule, "{trace:?}"),
                }
            }
        }
    }

    #[test]
    fn the_last_event_stays_in_status() {
        let mut on_drop = OnDropState::default();
        on_drop.record(Report {
            event: Some("frozen 1 program (tunnel lost)".to_owned()),
            ..watching(1)
        });
        on_drop.record(watching(1));
        let status = on_drop.status();
        assert_eq!(
            status.last_event.as_deref(),
            Some("frozen 1 program (tunnel lost)")
        );
        assert_eq!(status.programs.len(), 1);
    }
}
