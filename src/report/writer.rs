//! When the main thread writes `STATUS_FILE` and `METRICS_FILE`: every
//! `STATUS_INTERVAL` ([`StatusWriter::next_due`]), at once when a link or the
//! spool changes state (`Counters::state_bell`), and only while the
//! publisher keeps its turns, so a stale file tells a watchdog the relay
//! hangs. The schedule takes the time as a value; only
//! [`StatusWriter::report`] touches files.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::delivery::presence::HeldView;
use crate::devices::table::{DeviceTable, TableSnapshot};
use crate::mqtt::publish_link::LinkShared;
use crate::ops::counters::Counters;
use crate::ops::sync::lock;
use crate::ops::time::mono_ms;
use crate::report::status::ConfigFile;
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
    /// Set for the last snapshot of a clean stop.
    stopped: bool,
    /// relay.conf and its modification time when it was last loaded (at
    /// start, or by a SIGHUP it accepted): the snapshot says whether the
    /// file changed since.
    config_file: Option<(PathBuf, Option<SystemTime>)>,
    /// The states of the last snapshot ([`States`]): a change is written
    /// at once, not at the next interval.
    shown_states: States,
    /// The device table as the last snapshot showed it, and its rendering.
    shown: Option<Shown>,
}

/// The device part of a snapshot, kept for the next one: with no device
/// online and nothing held, it depends on the table alone, so while the
/// table's edit count stays the same it is written again as it is (an idle
/// fleet of 100,000 offline cameras costs a copy, not a rendering).
struct Shown {
    edits: u64,
    /// Whether it can serve again at the same edit count.
    timeless: bool,
    table: TableSnapshot,
    /// Its `devices` list as written in `STATUS_FILE`, once written.
    text: Option<Vec<u8>>,
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
            stopped: false,
            config_file: None,
            shown_states: States::default(),
            shown: None,
        }
    }

    /// At its deadline ([`StatusWriter::next_due`]) or when a state it
    /// shows changed (the bell woke the main thread): writes the snapshot
    /// when it is due or a state changed and the publisher keeps its word;
    /// says once that it stopped refreshing the file when not.
    pub fn tick(&mut self, config: &Config, counters: &Counters, devices: &Mutex<DeviceTable>) {
        // STATUS_INTERVAL may have changed with a SIGHUP.
        self.interval = config.status_interval;
        let now = Instant::now();
        if !self.due(now) && Self::states(counters) == self.shown_states {
            return;
        }
        match publisher_keeps_turns(self.interval, counters, now) {
            Ok(()) => self.report(config, counters, devices),
            Err(late) => {
                // Looked at again an interval from now, not at once.
                self.last = Some(now);
                if !self.failing {
                    self.failing = true;
                    log::error!(
                        "the publisher thread is {} s late for its turn: status file no longer refreshed",
                        late.as_secs()
                    );
                }
            }
        }
    }

    /// When the next snapshot is due; None without `STATUS_FILE` and `METRICS_FILE`.
    pub fn next_due(&self, config: &Config) -> Option<Instant> {
        if config.status_file.is_none() && config.metrics_file.is_none() {
            return None;
        }
        Some(
            self.last
                .map_or_else(Instant::now, |t| t + config.status_interval),
        )
    }

    /// A snapshot is due an interval after the last one (50 ms early, so a
    /// wake-up a little early does not slip a whole interval).
    fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|t| {
            now.saturating_duration_since(t) + Duration::from_millis(50) >= self.interval
        })
    }

    fn states(counters: &Counters) -> States {
        States {
            broker_connected: counters.broker_connected.load(Ordering::Relaxed),
            device_subscribed: counters.device_subscribed.load(Ordering::Relaxed),
            spool_failing_since: counters.spool_failing_since_unix.load(Ordering::Relaxed),
        }
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
        let held = self.held.get();
        let mut shown = self.take_shown(config, devices, held.by_camera.is_empty());
        let snapshot = status::Snapshot {
            config,
            started: self.started,
            now: SystemTime::now(),
            counters,
            broker: self.link.broker_in_use.get().0.to_string(),
            devices: &shown.table,
            held,
            stopped: self.stopped,
            config_file: self.config_file.as_ref().map(|(path, loaded)| ConfigFile {
                path: path.display().to_string(),
                changed: modified(path) != *loaded,
            }),
        };
        let mut failed = Vec::new();
        let mut text = None;
        if let Some(path) = &config.status_file {
            let written = match &shown.text {
                Some(kept) => status::write(path, &snapshot, kept),
                None => status::devices_text(&snapshot).and_then(|t| {
                    let written = status::write(path, &snapshot, &t);
                    text = Some(t);
                    written
                }),
            };
            if let Err(e) = written {
                failed.push(format!("STATUS_FILE {}: {e}", path.display()));
            }
        }
        if let Some(path) = &config.metrics_file {
            if let Err(e) = metrics::write(path, &snapshot) {
                failed.push(format!("METRICS_FILE {}: {e}", path.display()));
            }
        }
        drop(snapshot);
        if text.is_some() {
            shown.text = text;
        }
        self.shown = Some(shown);
        if failed.is_empty() {
            self.failing = false;
        } else if !self.failing {
            self.failing = true;
            log::error!("cannot write {}", failed.join("; nor "));
        }
    }

    /// The device part of the snapshot: the last one again when it cannot
    /// have changed, else taken afresh (and rendered when written).
    fn take_shown(
        &mut self,
        config: &Config,
        devices: &Mutex<DeviceTable>,
        none_held: bool,
    ) -> Shown {
        let table = lock(devices);
        let edits = table.edits();
        match self.shown.take() {
            Some(kept) if kept.timeless && none_held && kept.edits == edits => kept,
            _ => {
                let snap =
                    table.snapshot(status::DEVICES_SHOWN, Instant::now(), config.device_timeout);
                Shown {
                    edits,
                    timeless: snap.online == 0 && none_held,
                    table: snap,
                    text: None,
                }
            }
        }
    }
}

/// Whether the publisher thread keeps the turns it promises
/// (`Counters::publisher_due_ms`), or how late it is when it is stuck: 3
/// status intervals (and at least 5 s) late. The status file stops being
/// refreshed then, and systemd's watchdog stops being pinged (`relay.rs`).
pub fn publisher_keeps_turns(
    interval: Duration,
    counters: &Counters,
    now: Instant,
) -> Result<(), Duration> {
    let due = counters.publisher_due_ms.load(Ordering::Relaxed);
    let late = late(due, mono_ms(now));
    if stuck(interval, late) {
        Err(late)
    } else {
        Ok(())
    }
}

/// The hang rule: `late` for a turn by more than 3 intervals (at least 5 s).
fn stuck(interval: Duration, late: Duration) -> bool {
    late > (interval * 3).max(Duration::from_secs(5))
}

/// The states a snapshot shows that change by events, not by time: each
/// change writes the snapshot at once (the publish link, the device
/// link's subscriptions, the spool).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct States {
    broker_connected: bool,
    device_subscribed: bool,
    /// Since when the spool fails (Unix seconds), 0 while it does not.
    spool_failing_since: u64,
}

/// How long past `due_ms` (`time::mono_ms`) `now_ms` is.
fn late(due_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(due_ms))
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
    fn a_publisher_long_past_its_promised_turn_is_stuck() {
        let due = 10_000;
        assert!(!stuck(secs(5), late(due, 5_000)), "before its turn");
        assert!(!stuck(secs(5), late(due, 25_000)), "15 s late");
        assert!(stuck(secs(5), late(due, 25_001)));
        assert_eq!(late(due, 27_000), secs(17));
    }

    #[test]
    fn a_short_interval_still_allows_five_seconds() {
        assert!(!stuck(secs(1), late(0, 5_000)));
        assert!(stuck(secs(1), late(0, 5_001)));
    }

    #[test]
    fn the_next_snapshot_is_due_an_interval_after_the_last_and_never_without_files() {
        let config = crate::config::parse("STATUS_INTERVAL=7\nSTATUS_FILE=/tmp/s.json\n", "test")
            .expect("a test configuration");
        let mut w = StatusWriter::new(&config, SystemTime::now(), Arc::default(), Arc::default());
        assert!(w.next_due(&config).is_some_and(|t| t <= Instant::now()));
        let t0 = Instant::now();
        w.last = Some(t0);
        assert_eq!(w.next_due(&config), Some(t0 + secs(7)));
        assert_eq!(w.next_due(&Config::default()), None);
    }
}
