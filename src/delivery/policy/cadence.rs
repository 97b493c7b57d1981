//! A camera's heartbeat cadence (PROTOCOL.md §2.7, "Presence"): what one
//! heartbeat says about whether the camera stayed connected since the one
//! before. Pure, no clock. A [`Cadence`] per device lives in the device table
//! (device link thread), which hands each heartbeat's [`Class`] to the
//! delivery policy; [`state`] is the one rule both use for present, unknown
//! or offline.

use std::time::{Duration, Instant};

/// A gap shorter than this share of the interval is a reconnect (the
/// firmware's connect heartbeat). Jitter of ±20 % keeps regular gaps
/// above 0.8 of the interval, and the learned interval within ±20 % of the
/// true one; a reconnect splits an interval in two, one part at most half.
pub const EARLY: f64 = 0.6;
/// A gap longer than this many intervals follows an absence; a lost
/// heartbeat (two intervals with their jitter, up to 2.4) is not one.
pub const LATE: f64 = 3.0;
/// Gaps kept to learn the interval from.
const LEARN: usize = 3;
/// Gaps are kept in units of 10 ms, saturating at about 11 minutes.
const GAP_UNIT_MS: u64 = 10;

/// What one live heartbeat says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The first heartbeat ever seen from this camera.
    First,
    /// The first since the relay lost sight of the camera (a start, a lost
    /// device link): present now, nothing known of the time between.
    Returned,
    /// One before the interval is learned: present, continuity unjudged.
    Unjudged,
    /// On time: the camera stayed connected since the last one.
    Regular,
    /// Well before its time: the camera connected again since the last one.
    Early,
    /// Well after several missed ones: the camera was away.
    Late,
    /// Its `timestamp` went backwards: the camera started again. Not proof
    /// of presence (a stale message looks the same); the next one is.
    Rebooted,
}

impl Class {
    /// The camera may have missed what was published to it since the last
    /// heartbeat: it reconnected, started again, or the relay cannot tell.
    pub fn reconnect(self) -> bool {
        matches!(
            self,
            Class::Early | Class::Late | Class::Rebooted | Class::Returned
        )
    }

    /// The camera is connected and subscribed as of this heartbeat.
    pub fn proves_presence(self) -> bool {
        self != Class::Rebooted
    }

    /// As log lines, metrics and `resent` lines name a reconnect.
    pub fn reason(self) -> &'static str {
        match self {
            Class::Early => "reconnect",
            Class::Late => "absence",
            Class::Rebooted => "reboot",
            Class::Returned | Class::First => "unseen",
            Class::Unjudged | Class::Regular => "none",
        }
    }
}

/// A camera seen by the relay: present, or its presence unknown, or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A live heartbeat since the relay last lost sight of it, and recent.
    Present,
    /// Known, but no live heartbeat since the relay last lost sight of it,
    /// or silent for more than [`LATE`] intervals.
    Unknown,
    /// Silent for `DEVICE_TIMEOUT`.
    Offline,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Present => "present",
            State::Unknown => "unknown",
            State::Offline => "offline",
        }
    }
}

/// Present, unknown or offline: `live` is the arrival of the camera's last
/// live heartbeat since the relay last lost sight of it (None: none since),
/// `seen` that of its last heartbeat at all (None: none in this run), and
/// `offline` whether it was offline when last known (before a restart).
pub fn state(
    live: Option<Instant>,
    seen: Option<Instant>,
    offline: bool,
    interval: Option<Duration>,
    timeout: Duration,
    now: Instant,
) -> State {
    let silent = |at: Instant| now.saturating_duration_since(at);
    match (live, seen) {
        (_, Some(seen)) if silent(seen) > timeout => State::Offline,
        (None, None) if offline => State::Offline,
        (None, _) => State::Unknown,
        (Some(live), _) => match interval {
            Some(i) if silent(live) > i.mul_f64(LATE) => State::Unknown,
            _ => State::Present,
        },
    }
}

/// The camera's `timestamp` as a number to compare (milliseconds when it
/// has a fraction), when it is one: a number, or a string holding one.
pub fn timestamp(text: &str) -> Option<u64> {
    let value: f64 = text.trim_matches('"').trim().parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    if value.fract() == 0.0 {
        // Whole numbers stay exact up to 2^53: seconds or milliseconds.
        return Some(value as u64);
    }
    Some((value * 1000.0) as u64)
}

/// One camera's heartbeats as far as continuity goes (about 32 bytes: a
/// fleet's worth lives in the device table).
#[derive(Debug, Clone, Default)]
pub struct Cadence {
    /// Arrival of the last heartbeat in an unbroken chain (None: the chain
    /// starts with the next one).
    last: Option<Instant>,
    /// The last gaps between heartbeats of the chain, newest first, in
    /// units of [`GAP_UNIT_MS`]; 0 = not yet seen.
    gaps: [u16; LEARN],
    /// Its last `timestamp` ([`timestamp`]); u64::MAX = none.
    last_ts: u64,
    /// Whether any heartbeat was ever seen (a remembered camera is seen).
    seen: bool,
}

impl Cadence {
    /// A camera the relay remembers from an earlier run, its interval when learned.
    pub fn remembered(interval: Option<Duration>) -> Cadence {
        let mut cadence = Cadence {
            last_ts: u64::MAX,
            seen: true,
            ..Cadence::default()
        };
        if let Some(i) = interval {
            cadence.gaps = [units(i); LEARN];
        }
        cadence
    }

    /// Classifies one live heartbeat that arrived at `at` carrying `ts`.
    pub fn beat(&mut self, at: Instant, ts: Option<u64>) -> Class {
        let seen_before = std::mem::replace(&mut self.seen, true);
        // An equal timestamp is no repeat: a camera's seconds hold its
        // connect heartbeat and a periodic one alike.
        if let Some(ts) = ts {
            let last_ts = std::mem::replace(&mut self.last_ts, ts);
            if last_ts != u64::MAX && ts < last_ts {
                // The chain starts again with the next heartbeat.
                self.last = None;
                return Class::Rebooted;
            }
        }
        let Some(last) = self.last.replace(at) else {
            return if seen_before {
                Class::Returned
            } else {
                Class::First
            };
        };
        let gap = at.saturating_duration_since(last);
        let Some(interval) = self.interval() else {
            self.learn(gap);
            return Class::Unjudged;
        };
        if gap < interval.mul_f64(EARLY) {
            Class::Early
        } else if gap > interval.mul_f64(LATE) {
            Class::Late
        } else {
            // A gap of a lost heartbeat or two is not the interval.
            if gap <= interval.mul_f64(1.5) {
                self.learn(gap);
            }
            Class::Regular
        }
    }

    /// The relay lost sight of the camera (a start, a lost device link):
    /// the next heartbeat starts a new chain.
    pub fn lose_sight(&mut self) {
        self.last = None;
    }

    /// The learned interval: the median of the last three gaps.
    pub fn interval(&self) -> Option<Duration> {
        if self.gaps.contains(&0) {
            return None;
        }
        let mut sorted = self.gaps;
        sorted.sort_unstable();
        Some(Duration::from_millis(
            u64::from(sorted[LEARN / 2]) * GAP_UNIT_MS,
        ))
    }

    fn learn(&mut self, gap: Duration) {
        self.gaps.rotate_right(1);
        self.gaps[0] = units(gap).max(1);
    }
}

fn units(d: Duration) -> u16 {
    let units = u64::try_from(d.as_millis()).unwrap_or(u64::MAX) / GAP_UNIT_MS;
    u16::try_from(units).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(5);

    /// A camera whose heartbeats arrived at these times (seconds from
    /// `t0`), and the class of each.
    fn classes(times: &[f64]) -> Vec<Class> {
        let t0 = Instant::now();
        let mut cadence = Cadence::default();
        times
            .iter()
            .map(|s| cadence.beat(t0 + Duration::from_secs_f64(*s), None))
            .collect()
    }

    fn steady(n: usize) -> Vec<f64> {
        (0..n).map(|k| 5.0 * k as f64).collect()
    }

    #[test]
    fn steady_heartbeats_are_learned_then_regular() {
        let got = classes(&steady(6));
        assert_eq!(
            got,
            [
                Class::First,
                Class::Unjudged,
                Class::Unjudged,
                Class::Unjudged,
                Class::Regular,
                Class::Regular
            ]
        );
    }

    #[test]
    fn jitter_of_twenty_percent_stays_regular() {
        // Gaps alternating at the edges of ±20 %.
        let mut t = 0.0;
        let mut times = vec![t];
        for k in 0..200 {
            t += match k % 4 {
                0 => 6.0,
                1 => 4.0,
                2 => 4.0,
                _ => 6.0,
            };
            times.push(t);
        }
        let got = classes(&times);
        assert!(got[4..].iter().all(|c| *c == Class::Regular), "{got:?}");
    }

    #[test]
    fn a_lost_heartbeat_is_not_a_reconnect() {
        let mut times = steady(5);
        times.extend([30.0, 35.0]); // 25 s missing: one lost
        let got = classes(&times);
        assert_eq!(got[5..], [Class::Regular, Class::Regular]);
        // Nor two at the far end of the jitter.
        let mut times = steady(5);
        times.push(20.0 + 12.0);
        assert_eq!(classes(&times)[5], Class::Regular);
    }

    #[test]
    fn the_connect_heartbeat_of_a_reconnect_is_early() {
        // Dropped after 20 s, back at 21.5 s (connect heartbeat), then the
        // periodic one at 25 s.
        let mut times = steady(5);
        times.extend([21.5, 25.0]);
        let got = classes(&times);
        assert_eq!(got[5], Class::Early);
        // Back at 24 s: the connect heartbeat looks regular, but the
        // periodic one right after it is early.
        let mut times = steady(5);
        times.extend([24.0, 25.0]);
        let got = classes(&times);
        assert_eq!(got[5..], [Class::Regular, Class::Early]);
    }

    #[test]
    fn a_long_absence_is_late() {
        let mut times = steady(5);
        times.push(20.0 + 40.0);
        assert_eq!(classes(&times)[5], Class::Late);
    }

    #[test]
    fn a_timestamp_that_goes_backwards_is_a_reboot_and_the_next_one_returns() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c = Cadence::default();
        assert_eq!(c.beat(at(0), Some(100)), Class::First);
        assert_eq!(c.beat(at(5), Some(105)), Class::Unjudged);
        assert_eq!(c.beat(at(6), Some(0)), Class::Rebooted);
        assert_eq!(c.beat(at(11), Some(5)), Class::Returned);
        assert_eq!(
            c.beat(at(11), Some(5)),
            Class::Unjudged,
            "the same second holds two heartbeats: not a reboot"
        );
        assert!(!Class::Rebooted.proves_presence());
        assert!(Class::Returned.proves_presence());
    }

    #[test]
    fn after_losing_sight_the_next_heartbeat_returns_with_the_interval_kept() {
        let t0 = Instant::now();
        let mut c = Cadence::default();
        for k in 0..5 {
            c.beat(t0 + I * k, None);
        }
        assert_eq!(c.interval(), Some(I));
        c.lose_sight();
        assert_eq!(c.beat(t0 + I * 20, None), Class::Returned);
        assert_eq!(c.beat(t0 + I * 21, None), Class::Regular);
        let mut remembered = Cadence::remembered(Some(I));
        assert_eq!(remembered.beat(t0, None), Class::Returned);
        assert_eq!(remembered.beat(t0 + I, None), Class::Regular);
    }

    #[test]
    fn a_reconnect_while_learning_does_not_spoil_the_interval() {
        let got = classes(&[0.0, 5.0, 6.0, 10.0, 15.0, 20.0, 25.0]);
        assert!(got[4..].iter().all(|c| *c == Class::Regular), "{got:?}");
    }

    #[test]
    fn present_unknown_and_offline() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(90);
        let now = t0 + Duration::from_secs(10);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        assert_eq!(
            state(ago(5), ago(5), false, Some(I), timeout, now),
            State::Present
        );
        assert_eq!(
            state(ago(5), ago(5), false, None, timeout, now),
            State::Present,
            "interval not learned yet"
        );
        let now = t0 + Duration::from_secs(200);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        assert_eq!(
            state(ago(16), ago(16), false, Some(I), timeout, now),
            State::Unknown,
            "silent for more than three intervals"
        );
        assert_eq!(
            state(None, ago(5), false, Some(I), timeout, now),
            State::Unknown
        );
        assert_eq!(state(None, None, false, None, timeout, now), State::Unknown);
        assert_eq!(state(None, None, true, None, timeout, now), State::Offline);
        assert_eq!(
            state(ago(91), ago(91), false, None, timeout, now),
            State::Offline
        );
    }

    #[test]
    fn timestamps_are_read_as_numbers() {
        assert_eq!(timestamp("1764391000"), Some(1_764_391_000));
        assert_eq!(timestamp("\"42\""), Some(42));
        assert_eq!(timestamp("1.5"), Some(1500));
        assert_eq!(timestamp("\"2026-12-07T10:00:00Z\""), None);
        assert_eq!(timestamp("-3"), None);
    }
}
