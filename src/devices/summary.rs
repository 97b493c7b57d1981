//! The periodic device summary: one info line per `DEVICE_SUMMARY_INTERVAL`
//! (devices known, online, heartbeats per second) instead of a line per
//! heartbeat, so the log of a fleet's gateway keeps hours, not seconds.
//! Pure: the main thread calls [`Summary::due`] at [`Summary::next_due`] with the
//! heartbeat counter (`Counters::heartbeats`, bumped by the device link)
//! and the clock, and logs what it returns.

use std::time::{Duration, Instant};

pub struct Summary {
    every: Duration,
    /// When the last line was due and the heartbeat count then.
    since: Instant,
    heartbeats_then: u64,
}

impl Summary {
    pub fn new(every: Duration, now: Instant, heartbeats: u64) -> Summary {
        Summary {
            every,
            since: now,
            heartbeats_then: heartbeats,
        }
    }

    /// A reload's `DEVICE_SUMMARY_INTERVAL`: the next line is due `every`
    /// after the last one (at once when that is past).
    pub fn set_every(&mut self, every: Duration) {
        self.every = every;
    }

    /// When the next line is due.
    pub fn next_due(&self) -> Instant {
        self.since + self.every
    }

    /// Heartbeats per second since the last line, once the interval is over.
    pub fn due(&mut self, now: Instant, heartbeats: u64) -> Option<f64> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < self.every {
            return None;
        }
        let count = heartbeats.saturating_sub(self.heartbeats_then);
        self.since = now;
        self.heartbeats_then = heartbeats;
        Some(count as f64 / elapsed.as_secs_f64().max(0.001))
    }
}

/// The line itself.
pub fn line(total: usize, online: usize, per_second: f64) -> String {
    format!(
        "devices: {total} known, {online} online, {} offline; {per_second:.1} heartbeats/s",
        total.saturating_sub(online)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_due_once_per_interval_with_the_rate_since_the_last() {
        let t0 = Instant::now();
        let mut s = Summary::new(Duration::from_secs(60), t0, 100);
        assert_eq!(s.due(t0 + Duration::from_secs(59), 5000), None);
        assert_eq!(
            s.due(t0 + Duration::from_secs(60), 100 + 24_000),
            Some(400.0)
        );
        assert_eq!(s.due(t0 + Duration::from_secs(61), 30_000), None);
        assert_eq!(s.due(t0 + Duration::from_secs(120), 24_100), Some(0.0));
    }

    #[test]
    fn a_new_interval_counts_from_the_last_line() {
        let t0 = Instant::now();
        let mut s = Summary::new(Duration::from_secs(3600), t0, 0);
        s.set_every(Duration::from_secs(5));
        assert_eq!(s.next_due(), t0 + Duration::from_secs(5));
        assert_eq!(s.due(t0 + Duration::from_secs(5), 50), Some(10.0));
    }

    #[test]
    fn the_line_names_every_count() {
        assert_eq!(
            line(10_000, 9_990, 333.333),
            "devices: 10000 known, 9990 online, 10 offline; 333.3 heartbeats/s"
        );
    }
}
