//! `killswitch events`: one line per real change, each with the time it was received.
//!
//! The daemon sends its whole status on every change it makes, and some changes (a firewall
//! re-apply, a counter) do not show in a text line. Repeats are dropped here, in the client, by
//! comparing what would be printed: a text line that reads as the one before is not printed
//! again, and a JSON line is printed only when the status object itself changed. Deciding in the
//! client keeps the daemon's stream complete for clients that want every status, and makes the
//! rule "only what you would see change" exact for each output.
//!
//! JSON lines are the status object as the daemon sent it, with three fields added in front:
//! `type` (`status` for the first line, the status when the stream began; `change` for the
//! others), `time` (RFC 3339, UTC, when this client received it) and, on `change` lines,
//! `changed` (the names of the status's top-level fields that differ from the line before).

use crate::client::Received;
use crate::render;
use std::time::SystemTime;

/// Turns the statuses of a subscription into the lines `events` prints, dropping repeats.
#[derive(Debug)]
pub(crate) struct EventPrinter {
    json: bool,
    /// The last text line printed, without its time.
    last_line: Option<String>,
    /// The last status object printed (as sent, without the added fields).
    last_status: Option<serde_json::Value>,
    /// The running `killswitch exec` programs last seen (text lines say when one starts or ends).
    last_exec: Option<Vec<killswitch_types::exec::ExecScopeStatus>>,
}

impl EventPrinter {
    /// A printer for text lines, or JSON lines with `json`.
    pub(crate) fn new(json: bool) -> Self {
        EventPrinter {
            json,
            last_line: None,
            last_status: None,
            last_exec: None,
        }
    }

    /// The line to print for `received` (ending in a newline), or `None` when it would repeat
    /// the line before.
    pub(crate) fn next(&mut self, received: &Received, now: SystemTime) -> Option<String> {
        let time = render::rfc3339(now);
        if self.json {
            let status = &received.json;
            let (kind, changed) = match &self.last_status {
                None => ("status", None),
                Some(last) if last == status => return None,
                Some(last) => ("change", Some(changed_fields(last, status))),
            };
            let mut line = serde_json::Map::new();
            line.insert("type".to_owned(), kind.into());
            line.insert("time".to_owned(), time.into());
            if let Some(changed) = changed {
                line.insert("changed".to_owned(), changed.into());
            }
            if let serde_json::Value::Object(fields) = status {
                for (key, value) in fields {
                    // A status field of a future daemon named like one added here does not
                    // replace it: the stream's own fields keep their meaning.
                    line.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            self.last_status = Some(status.clone());
            Some(format!("{}\n", serde_json::Value::Object(line)))
        } else {
            let mut text = String::new();
            for change in self.exec_changes(&received.status.exec) {
                text.push_str(&format!("{time} {change}\n"));
            }
            let line = render::event_line(&received.status);
            if self.last_line.as_ref() != Some(&line) {
                text.push_str(&format!("{time} {line}\n"));
                self.last_line = Some(line);
            }
            (!text.is_empty()).then_some(text)
        }
    }
}

impl EventPrinter {
    /// `exec started: ...` for each program running now that was not before, `exec ended: ...`
    /// for each that was and is gone (nothing for the first status: it is the starting point).
    fn exec_changes(&mut self, now: &[killswitch_types::exec::ExecScopeStatus]) -> Vec<String> {
        let running: Vec<_> = now.iter().filter(|s| s.pid != 0).cloned().collect();
        let Some(before) = self.last_exec.replace(running.clone()) else {
            return Vec::new();
        };
        let same = |a: &killswitch_types::exec::ExecScopeStatus,
                    b: &killswitch_types::exec::ExecScopeStatus| {
            a.id == b.id && a.pid == b.pid
        };
        let started = running
            .iter()
            .filter(|s| !before.iter().any(|b| same(b, s)))
            .map(|s| format!("exec started: {}", render::exec_scope(s)));
        let ended = before
            .iter()
            .filter(|b| !running.iter().any(|s| same(b, s)))
            .map(|s| format!("exec ended: {}", render::exec_scope(s)));
        started.chain(ended).collect()
    }
}

/// The top-level fields whose values differ between two status objects, in the newer's order
/// (then those only the older had).
fn changed_fields(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(*value))
        .map(|(key, _)| key.clone())
        .chain(
            before
                .keys()
                .filter(|key| !after.contains_key(*key))
                .cloned(),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use killswitch_types::State;
    use killswitch_types::ipc::Status;
    use std::time::{Duration, UNIX_EPOCH};

    /// A status as a daemon sends it (built from JSON, so that fields added later get their
    /// defaults here too).
    fn status(state: State, transitions: u64) -> Received {
        let json = serde_json::json!({
            "state": state,
            "lockdown": false,
            "allow_lan": false,
            "tunnel": null,
            "error": null,
            "firewall": {"installed": true, "blocking": true, "transitions": transitions, "last_apply_us": null},
        });
        let status: Status = serde_json::from_value(json.clone()).expect("a status");
        Received { status, json }
    }

    /// 2026-12-02T18:40:01Z.
    fn at(offset: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_236_801 + offset)
    }

    #[test]
    fn text_lines_carry_the_date_and_time_and_do_not_repeat() {
        let mut printer = EventPrinter::new(false);
        let first = printer.next(&status(State::Connecting, 1), at(0));
        assert_eq!(
            first.as_deref(),
            Some("2026-12-02T18:40:01Z connecting lockdown=off allow-lan=off\n")
        );
        // A re-apply changes nothing a text line shows: not printed.
        assert_eq!(printer.next(&status(State::Connecting, 2), at(1)), None);
        assert_eq!(
            printer.next(&status(State::Connected, 3), at(2)).as_deref(),
            Some("2026-12-02T18:40:03Z connected lockdown=off allow-lan=off\n")
        );
        assert_eq!(printer.next(&status(State::Connected, 3), at(3)), None);
    }

    #[test]
    fn json_lines_carry_type_time_and_what_changed_and_do_not_repeat() {
        let mut printer = EventPrinter::new(true);
        let first = printer
            .next(&status(State::Connecting, 1), at(0))
            .expect("the first status is printed");
        let first: serde_json::Value = serde_json::from_str(&first).expect("one JSON object");
        assert_eq!(first["type"], "status");
        assert_eq!(first["time"], "2026-12-02T18:40:01Z");
        assert_eq!(first["state"], "connecting");
        assert!(first.get("changed").is_none());
        assert_eq!(
            printer.next(&status(State::Connecting, 1), at(1)),
            None,
            "an identical status is not printed again"
        );
        let change = printer
            .next(&status(State::Connected, 2), at(2))
            .expect("a change is printed");
        let change: serde_json::Value = serde_json::from_str(&change).expect("one JSON object");
        assert_eq!(change["type"], "change");
        assert_eq!(change["time"], "2026-12-02T18:40:03Z");
        assert_eq!(change["changed"], serde_json::json!(["state", "firewall"]));
        // Every line is a status object too: scripts that read the status keep working.
        assert_eq!(change["state"], "connected");
        // A change JSON shows but text does not (the firewall's counter) is a JSON line.
        assert!(printer.next(&status(State::Connected, 3), at(3)).is_some());
    }

    #[test]
    fn text_events_say_when_an_exec_program_starts_and_ends() {
        let with_exec = |pid: u32| {
            let mut received = status(State::Disconnected, 1);
            received.status.exec = vec![killswitch_types::exec::ExecScopeStatus {
                id: 0,
                uid: 1000,
                user: Some("alice".to_owned()),
                program: "curl".to_owned(),
                pid,
                interface: killswitch_types::InterfaceName::new("ksx0").expect("literal"),
                subnet: "198.18.0.0/30".parse().expect("literal"),
            }];
            received
        };
        let mut printer = EventPrinter::new(false);
        assert!(
            printer
                .next(&status(State::Disconnected, 1), at(0))
                .is_some()
        );
        // Being set up (no pid yet): nothing to say.
        assert_eq!(printer.next(&with_exec(0), at(1)), None);
        assert_eq!(
            printer.next(&with_exec(42), at(2)).as_deref(),
            Some(
                "2026-12-02T18:40:03Z exec started: #0 curl (pid 42, alice, ksx0): through the tunnel only\n"
            )
        );
        assert_eq!(
            printer
                .next(&status(State::Disconnected, 1), at(3))
                .as_deref(),
            Some(
                "2026-12-02T18:40:04Z exec ended: #0 curl (pid 42, alice, ksx0): through the tunnel only\n"
            )
        );
    }
}
