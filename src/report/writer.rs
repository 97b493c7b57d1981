//! When the main thread writes the status snapshot (`STATUS_FILE` and
//! `METRICS_FILE`): every `STATUS_INTERVAL`, and only while the publisher
//! thread still turns, so a stale file is how a watchdog learns the relay is
//! hung. A write that fails is logged at error once, until one succeeds
//! again. The schedule takes the time as a value; only [`StatusWriter::report`]
//! touches files.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::delivery::presence::HeldView;
use crate::devices::table::DeviceTable;
use crate::mqtt::publish_link::LinkShared;
use crate::ops::counters::Counters;
use crate::ops::sync::lock;
use crate::report::{metrics, status};

/// Where the status snapshot stands.
pub struct StatusWriter {
    started: SystemTime,
    /// Where the broker in use is read from.
    link: Arc<LinkShared>,
    /// What the publisher holds for offline cameras.
    held: Arc<HeldView>,
    last: Option<Instant>,
    interval: Duration,
    /// A write failed, or the publisher was found stuck: logged once.
    failing: bool,
    /// The publisher's turn count and when it last changed.
    turns: (u64, Instant),
    /// Set for the last snapshot of a clean stop.
    stopped: bool,
    /// relay.conf and its modification time when it was last loaded (at
    /// start, or by a SIGHUP it accepted): the snapshot says whether the
    /// file changed since.
    config_file: Option<(PathBuf, Option<SystemTime>)>,
    /// The broker and spool states of the last snapshot: a change is
    /// written at once, not at the next interval.
    shown_states: (bool, u64),
}

impl StatusWriter {
    pub fn new(
        config: &Config,
        started: SystemTime,
        link: Arc<LinkShared>,
        held: Arc<HeldView>,
    ) -> Self {
        StatusWriter {
            started,
            link,
            held,
            last: None,
            interval: config.status_interval,
            failing: false,
            turns: (0, Instant::now()),
            stopped: false,
            config_file: None,
            shown_states: (false, 0),
        }
    }

    /// Once a second: writes the snapshot when it is due and the publisher
    /// still turns; says once that it stopped refreshing the file when not.
    pub fn tick(&mut self, config: &Config, counters: &Counters, devices: &Mutex<DeviceTable>) {
        // STATUS_INTERVAL may have changed with a SIGHUP.
        self.interval = config.status_interval;
        let now = Instant::now();
        if !self.due(now) && Self::states(counters) == self.shown_states {
            return;
        }
        let turns = counters.publisher_turns.load(Ordering::Relaxed);
        if self.publisher_alive(turns, now) {
            self.report(config, counters, devices);
        } else if !self.failing {
            self.failing = true;
            log::error!(
                "the publisher thread has not moved for {} s: status file no longer refreshed",
                self.stuck_for(now).as_secs()
            );
        }
    }

    /// A snapshot is due an interval after the last one (50 ms early, so a
    /// once-a-second tick does not slip a whole second).
    fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|t| {
            now.saturating_duration_since(t) + Duration::from_millis(50) >= self.interval
        })
    }

    /// The publisher loop turns at least once a second; 3 intervals (and at
    /// least 5 s) without a turn means it is stuck.
    fn publisher_alive(&mut self, turns: u64, now: Instant) -> bool {
        if turns != self.turns.0 {
            self.turns = (turns, now);
        }
        self.stuck_for(now) <= (self.interval * 3).max(Duration::from_secs(5))
    }

    fn stuck_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.turns.1)
    }

    /// Whether the broker is connected and since when the spool fails.
    fn states(counters: &Counters) -> (bool, u64) {
        (
            counters.broker_connected.load(Ordering::Relaxed),
            counters.spool_failing_since_unix.load(Ordering::Relaxed),
        )
    }

    /// relay.conf was (re)loaded from `path`: later snapshots say whether
    /// it changed since.
    pub fn config_loaded(&mut self, path: Option<&Path>) {
        self.config_file = path.map(|p| (p.to_path_buf(), modified(p)));
    }

    /// The last snapshot of a clean stop: it says the relay stopped.
    pub fn report_stopped(
        &mut self,
        config: &Config,
        counters: &Counters,
        devices: &Mutex<DeviceTable>,
    ) {
        self.stopped = true;
        self.report(config, counters, devices);
    }

    /// Writes the snapshot (STATUS_FILE, METRICS_FILE) now; a failure is
    /// logged at error once, until a write succeeds.
    pub fn report(&mut self, config: &Config, counters: &Counters, devices: &Mutex<DeviceTable>) {
        if config.status_file.is_none() && config.metrics_file.is_none() {
            return;
        }
        self.last = Some(Instant::now());
        self.shown_states = Self::states(counters);
        let devices = lock(devices).snapshot(status::DEVICES_SHOWN);
        let broker = lock(&self.link.broker).clone();
        let snapshot = status::Snapshot {
            config,
            started: self.started,
            now: SystemTime::now(),
            counters,
            broker,
            devices,
            held: self.held.get(),
            stopped: self.stopped,
            config_file: self
                .config_file
                .as_ref()
                .map(|(path, loaded)| (path.display().to_string(), modified(path) != *loaded)),
        };
        let mut failed = Vec::new();
        if let Some(path) = &config.status_file {
            if let Err(e) = status::write(path, &snapshot) {
                failed.push(format!("STATUS_FILE {}: {e}", path.display()));
            }
        }
        if let Some(path) = &config.metrics_file {
            if let Err(e) = metrics::write(path, &snapshot) {
                failed.push(format!("METRICS_FILE {}: {e}", path.display()));
            }
        }
        if failed.is_empty() {
            self.failing = false;
        } else if !self.failing {
            self.failing = true;
            log::error!("cannot write {}", failed.join("; nor "));
        }
    }
}

/// When `path` was last modified, when that can be read.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(interval: u64) -> StatusWriter {
        let config = crate::config::parse(&format!("STATUS_INTERVAL={interval}\n"), "test")
            .expect("a test configuration");
        StatusWriter::new(&config, SystemTime::now(), Arc::default(), Arc::default())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn due_at_once_then_every_interval_with_a_little_slack() {
        let t0 = Instant::now();
        let mut w = writer(5);
        assert!(w.due(t0), "the first snapshot is due at once");
        w.last = Some(t0);
        assert!(!w.due(t0 + secs(4)));
        assert!(
            w.due(t0 + Duration::from_millis(4950)),
            "a tick a bit early"
        );
        assert!(w.due(t0 + secs(5)));
    }

    #[test]
    fn a_publisher_that_stops_turning_is_stuck_after_three_intervals() {
        let t0 = Instant::now();
        let mut w = writer(5);
        w.turns = (0, t0);
        assert!(w.publisher_alive(1, t0 + secs(1)));
        assert!(w.publisher_alive(1, t0 + secs(16)), "15 s without a turn");
        assert!(!w.publisher_alive(1, t0 + secs(17)));
        assert_eq!(w.stuck_for(t0 + secs(17)), secs(16));
        assert!(w.publisher_alive(2, t0 + secs(18)), "it turned again");
    }

    #[test]
    fn a_short_interval_still_allows_five_seconds() {
        let t0 = Instant::now();
        let mut w = writer(1);
        w.turns = (0, t0);
        assert!(w.publisher_alive(0, t0 + secs(5)));
        assert!(!w.publisher_alive(0, t0 + Duration::from_millis(5001)));
    }
}
