//! Is the tunnel alive? A pure tracker over the device's statistics.
//!
//! Good signs are bytes received from the peer and completed handshakes. When none has come for a
//! while, the tracker asks for an in-tunnel probe (a packet whose answer would be a good sign);
//! when none has come for the whole bound (3 s by default), the tunnel is dead.
//!
//! The statistics are read now and then, so a reading that shows progress says only that the good
//! sign came after the previous reading. The tracker dates it to that previous reading: the
//! tunnel is declared dead at most `bound` after its real last sign, never later (possibly up to
//! one reading interval earlier, by which time several probes went unanswered). [`Tracker::next_look`]
//! says when to read next: every [`ALIVE_INTERVAL`], every [`PROBE_INTERVAL`] while probing, and
//! exactly at the deadline.

use crate::uapi::PeerStats;
use std::time::{Duration, Instant, SystemTime};

/// Handshake times are read back with this much jitter (a userspace device reports "seconds ago",
/// converted against our clock); a handshake counts as new only if it is later than the last one
/// by more than this. Real handshakes are two minutes apart.
const HANDSHAKE_RESOLUTION: Duration = Duration::from_secs(1);

/// How often a live tunnel's statistics are read: the daemon's only periodic wakeup while
/// connected.
pub const ALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// How often they are read (and a probe sent) once the tunnel has gone quiet.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// What the tracker concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A good sign came recently.
    Alive,
    /// No good sign for a while: send a probe through the tunnel.
    Probe,
    /// No good sign within the bound: the tunnel is dead.
    Dead {
        /// How long since the last good sign.
        silent: Duration,
    },
}

/// The tracker.
#[derive(Debug, Clone)]
pub struct Tracker {
    bound: Duration,
    probe_after: Duration,
    last_good: Instant,
    last_reading: Instant,
    rx_bytes: u64,
    handshake: Option<SystemTime>,
}

impl Tracker {
    /// A tracker that declares death after `bound` without a good sign, starting now (a fresh
    /// handshake is the first good sign).
    pub fn new(bound: Duration, now: Instant) -> Self {
        Tracker {
            bound,
            probe_after: bound / 3,
            last_good: now,
            last_reading: now,
            rx_bytes: 0,
            handshake: None,
        }
    }

    /// Takes a reading of the peer's statistics at `now`.
    pub fn observe(&mut self, stats: &PeerStats, now: Instant) -> Health {
        let fresh_handshake = match (stats.last_handshake, self.handshake) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(read), Some(known)) => read > known + HANDSHAKE_RESOLUTION,
        };
        if fresh_handshake {
            // Only a handshake that counted moves the reference: jittered readings of the
            // same one must not creep it forward.
            self.handshake = stats.last_handshake;
        }
        if stats.rx_bytes > self.rx_bytes || fresh_handshake {
            // The sign came after the previous reading; date it there (see the module docs).
            // After a gap longer than the bound (the machine slept, the daemon was stopped) that
            // dates nothing: count from now, and let the probes that follow decide.
            let gap = now.saturating_duration_since(self.last_reading);
            self.last_good = if gap >= self.bound {
                now
            } else {
                self.last_reading.max(self.last_good)
            };
        }
        self.last_reading = self.last_reading.max(now);
        self.rx_bytes = self.rx_bytes.max(stats.rx_bytes);
        self.judge(now)
    }

    /// What the silence so far means (for when the statistics cannot even be read).
    pub fn judge(&self, now: Instant) -> Health {
        let silent = now.saturating_duration_since(self.last_good);
        if silent >= self.bound {
            Health::Dead { silent }
        } else if silent >= self.probe_after {
            Health::Probe
        } else {
            Health::Alive
        }
    }

    /// When the last good sign came, at the earliest.
    pub fn last_good(&self) -> Instant {
        self.last_good
    }

    /// When to read the statistics next, given the last verdict.
    pub fn next_look(&self, now: Instant) -> Instant {
        let interval = match self.judge(now) {
            Health::Alive => ALIVE_INTERVAL,
            Health::Probe | Health::Dead { .. } => PROBE_INTERVAL,
        };
        (now + interval).min(self.last_good + self.bound).max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PublicKey;

    fn stats(rx: u64, handshake_secs: Option<u64>) -> PeerStats {
        PeerStats {
            public_key: PublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
                .expect("valid"),
            last_handshake: handshake_secs.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            rx_bytes: rx,
            tx_bytes: 0,
        }
    }

    #[test]
    fn silence_escalates_from_probe_to_dead() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut tracker = Tracker::new(Duration::from_secs(3), t0);
        // Bytes seen at 500 ms came after the reading at t0: the last good sign is dated t0.
        assert_eq!(
            tracker.observe(&stats(100, Some(1)), t0 + ms(500)),
            Health::Alive
        );
        assert_eq!(tracker.last_good(), t0);
        assert_eq!(
            tracker.observe(&stats(100, Some(1)), t0 + ms(900)),
            Health::Alive
        );
        assert_eq!(
            tracker.observe(&stats(100, Some(1)), t0 + ms(1100)),
            Health::Probe
        );
        assert_eq!(
            tracker.observe(&stats(100, Some(1)), t0 + ms(2900)),
            Health::Probe,
            "2.9 s silent: still probing"
        );
        match tracker.observe(&stats(100, Some(1)), t0 + ms(3000)) {
            Health::Dead { silent } => assert_eq!(silent, ms(3000)),
            other => panic!("expected dead, got {other:?}"),
        }
    }

    #[test]
    fn next_look_comes_sooner_when_quiet_and_never_after_the_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut tracker = Tracker::new(Duration::from_secs(3), t0);
        tracker.observe(&stats(100, Some(1)), t0);
        assert_eq!(tracker.next_look(t0), t0 + ALIVE_INTERVAL);
        assert_eq!(
            tracker.next_look(t0 + ms(1500)),
            t0 + ms(1500) + PROBE_INTERVAL
        );
        assert_eq!(
            tracker.next_look(t0 + ms(2900)),
            t0 + ms(3000),
            "exactly at the deadline"
        );
        assert_eq!(
            tracker.next_look(t0 + ms(3100)),
            t0 + ms(3100),
            "overdue: now"
        );
    }

    #[test]
    fn a_gap_longer_than_the_bound_dates_progress_to_now() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut tracker = Tracker::new(s(3), t0);
        tracker.observe(&stats(100, Some(1)), t0);
        // The machine slept for a minute; the reading after it shows bytes.
        assert_eq!(
            tracker.observe(&stats(200, Some(1)), t0 + s(60)),
            Health::Alive
        );
        assert_eq!(tracker.last_good(), t0 + s(60));
    }

    #[test]
    fn handshake_jitter_is_not_a_sign_of_life() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(Duration::from_secs(3), t0);
        let at = |ms: u64| PeerStats {
            last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            ..stats(100, None)
        };
        tracker.observe(&at(10_000), t0);
        // The same handshake read back a little later each time.
        for (i, ms) in [10_400, 10_900, 10_300].into_iter().enumerate() {
            tracker.observe(&at(ms), t0 + Duration::from_secs(i as u64 + 1));
        }
        assert!(matches!(
            tracker.judge(t0 + Duration::from_secs(3)),
            Health::Dead { .. }
        ));
    }

    #[test]
    fn received_bytes_or_a_new_handshake_are_good_signs() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut tracker = Tracker::new(Duration::from_secs(3), t0);
        tracker.observe(&stats(100, Some(1)), t0);
        tracker.observe(&stats(100, Some(1)), t0 + ms(500));
        assert_eq!(
            tracker.observe(&stats(200, Some(1)), t0 + ms(1000)),
            Health::Alive
        );
        assert_eq!(
            tracker.last_good(),
            t0 + ms(500),
            "dated to the reading before"
        );
        tracker.observe(&stats(200, Some(1)), t0 + ms(1500));
        assert_eq!(
            tracker.observe(&stats(200, Some(50)), t0 + ms(2000)),
            Health::Alive
        );
        assert_eq!(tracker.last_good(), t0 + ms(1500));
    }
}
