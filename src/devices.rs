//! The device table: last-seen time and latest heartbeat per device, and the
//! online/offline transitions of SPEC §3.1. Pure bookkeeping with the clock
//! passed in. Shared as `Arc<Mutex<DeviceTable>>`: the MQTT event-loop thread
//! records heartbeats, the main thread sweeps for silent devices every second
//! and takes snapshots for the status file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::heartbeat::Heartbeat;

#[derive(Debug, Clone)]
struct Device {
    last_seen: Instant,
    last_seen_wall: SystemTime,
    online: bool,
    status: Heartbeat,
}

/// One device as the status file and the `status` command show it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    pub id: String,
    pub online: bool,
    pub last_seen: SystemTime,
    pub status: Heartbeat,
}

#[derive(Debug, Default)]
pub struct DeviceTable {
    devices: BTreeMap<String, Device>,
}

/// What recording a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First heartbeat since the relay started.
    New,
    /// Known and online.
    Again,
    /// Was logged offline; now back.
    BackOnline,
}

impl DeviceTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, id: &str, status: Heartbeat, now: Instant, wall: SystemTime) -> Seen {
        match self.devices.get_mut(id) {
            Some(d) => {
                let was_online = d.online;
                d.last_seen = now;
                d.last_seen_wall = wall;
                d.online = true;
                d.status = status;
                if was_online {
                    Seen::Again
                } else {
                    Seen::BackOnline
                }
            }
            None => {
                self.devices.insert(
                    id.to_string(),
                    Device {
                        last_seen: now,
                        last_seen_wall: wall,
                        online: true,
                        status,
                    },
                );
                Seen::New
            }
        }
    }

    /// Marks devices silent for longer than `timeout` as offline; returns the
    /// ids that just went offline (each is reported once).
    pub fn sweep(&mut self, now: Instant, timeout: Duration) -> Vec<(String, Duration)> {
        let mut gone = Vec::new();
        for (id, d) in self.devices.iter_mut() {
            let silent = now.saturating_duration_since(d.last_seen);
            if d.online && silent > timeout {
                d.online = false;
                gone.push((id.clone(), silent));
            }
        }
        gone
    }

    pub fn snapshot(&self) -> Vec<DeviceSnapshot> {
        self.devices
            .iter()
            .map(|(id, d)| DeviceSnapshot {
                id: id.clone(),
                online: d.online,
                last_seen: d.last_seen_wall,
                status: d.status.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(ip: &str) -> Heartbeat {
        Heartbeat {
            ip: Some(ip.into()),
            ..Heartbeat::default()
        }
    }

    #[test]
    fn empty_table_sweeps_nothing() {
        let mut t = DeviceTable::new();
        assert!(t.sweep(Instant::now(), Duration::ZERO).is_empty());
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn offline_once_then_back_online_once() {
        let mut t = DeviceTable::new();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let timeout = Duration::from_secs(90);
        assert_eq!(t.record("cam", hb("1.1.1.1"), t0, wall), Seen::New);
        assert!(
            t.sweep(t0 + Duration::from_secs(90), timeout).is_empty(),
            "exactly the timeout is not yet silent"
        );
        let gone = t.sweep(t0 + Duration::from_secs(91), timeout);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "cam");
        assert!(
            t.sweep(t0 + Duration::from_secs(500), timeout).is_empty(),
            "offline is reported once"
        );
        assert!(!t.snapshot()[0].online);
        assert_eq!(
            t.record("cam", hb("2.2.2.2"), t0 + Duration::from_secs(501), wall),
            Seen::BackOnline
        );
        assert_eq!(
            t.record("cam", hb("2.2.2.2"), t0 + Duration::from_secs(502), wall),
            Seen::Again
        );
        let snap = t.snapshot();
        assert!(snap[0].online);
        assert_eq!(snap[0].status.ip.as_deref(), Some("2.2.2.2"));
    }

    #[test]
    fn snapshot_is_sorted_by_id() {
        let mut t = DeviceTable::new();
        let now = Instant::now();
        for id in ["b", "a", "c"] {
            t.record(id, Heartbeat::default(), now, SystemTime::now());
        }
        let ids: Vec<String> = t.snapshot().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
