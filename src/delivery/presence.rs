//! What the publisher and the device side tell each other about cameras.
//!
//! [`Presence`]: the device link (a camera's first heartbeat, or one after
//! silence) and the main thread's sweep (silent for `DEVICE_TIMEOUT`) report
//! cameras coming online and going offline; the publisher takes the changes
//! when its bell rings and releases or holds commands (policy/hold.rs).
//! Changes are kept per camera, the latest winning, so the board holds at
//! most one entry per device and a burst of heartbeats costs one wake-up.
//! A camera coming online is reported only while the publisher may hold
//! one as offline (else nothing there depends on it).
//!
//! [`HeldView`]: what the publisher holds for offline cameras, written by the
//! publisher when it changes and read by the status file's writer.

use std::collections::HashMap;
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::delivery::policy::HeldFor;
use crate::ops::sync::lock;

/// Presence changes on their way to the publisher.
pub struct Presence {
    board: Mutex<Board>,
    bell: Sender<()>,
    rung: Receiver<()>,
}

#[derive(Default)]
struct Board {
    /// Per camera (lowercase), the latest change not yet taken.
    changes: HashMap<String, bool>,
    /// How many cameras the publisher may hold as offline: those it said
    /// it does ([`Presence::settle`]) plus every offline change it took
    /// since. While none (and no offline change waits), a camera coming
    /// online changes nothing there: it is not reported, and a fleet's new
    /// devices do not wake the publisher one by one.
    offline_at_publisher: usize,
}

impl Default for Presence {
    fn default() -> Self {
        let (bell, rung) = crossbeam_channel::bounded(1);
        Presence {
            board: Mutex::new(Board::default()),
            bell,
            rung,
        }
    }
}

impl Presence {
    /// `camera` (a heartbeat's device id) came online or went offline.
    pub fn report(&self, camera: &str, online: bool) {
        let mut board = lock(&self.board);
        if online && board.offline_at_publisher == 0 && board.changes.is_empty() {
            return;
        }
        let camera = camera.to_ascii_lowercase();
        if online && board.offline_at_publisher == 0 && !board.changes.contains_key(&camera) {
            return;
        }
        board.changes.insert(camera, online);
        drop(board);
        // A full bell has rung already: the publisher takes everything.
        let _ = self.bell.try_send(());
    }

    /// Rings when there are changes to take.
    pub fn bell(&self) -> &Receiver<()> {
        &self.rung
    }

    /// The changes since the last call (the board's room is given back:
    /// a whole fleet going dark at once must not stay allocated).
    pub fn take(&self) -> Vec<(String, bool)> {
        let mut board = lock(&self.board);
        let changes: Vec<(String, bool)> = std::mem::take(&mut board.changes).into_iter().collect();
        board.offline_at_publisher += changes.iter().filter(|(_, online)| !online).count();
        changes
    }

    /// The publisher, having applied what it took: it holds `offline`
    /// cameras as offline now.
    pub fn settle(&self, offline: usize) {
        lock(&self.board).offline_at_publisher = offline;
    }
}

/// What is held for offline cameras, as the status file shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub commands: usize,
    pub bytes: usize,
    /// Per camera, the longest waiting first.
    pub by_camera: Vec<HeldFor>,
}

/// The publisher's latest [`Held`], shared with the status writer.
#[derive(Default)]
pub struct HeldView(Mutex<Held>);

impl HeldView {
    pub fn set(&self, held: Held) {
        *lock(&self.0) = held;
    }

    pub fn get(&self) -> Held {
        lock(&self.0).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_change_per_camera_wins_and_one_ring_covers_a_burst() {
        let presence = Presence::default();
        presence.report("A0B1C2D3E4F5", false);
        presence.report("a0b1c2d3e4f5", true);
        presence.report("cam-2", false);
        assert!(presence.bell().try_recv().is_ok());
        assert!(presence.bell().try_recv().is_err(), "one ring");
        let mut changes = presence.take();
        changes.sort();
        assert_eq!(
            changes,
            [
                ("a0b1c2d3e4f5".to_string(), true),
                ("cam-2".to_string(), false)
            ]
        );
        assert!(presence.take().is_empty());
    }

    #[test]
    fn online_is_reported_only_while_the_publisher_may_hold_a_camera_offline() {
        let presence = Presence::default();
        presence.report("new-cam", true);
        assert!(presence.bell().try_recv().is_err(), "none offline: no ring");
        assert!(presence.take().is_empty());
        presence.report("cam", false);
        presence.report("cam", true);
        assert_eq!(presence.take(), [("cam".to_string(), true)], "latest wins");
        presence.report("cam", false);
        let _ = presence.take();
        // Taken but not yet applied: cam may be offline at the publisher.
        presence.report("CAM", true);
        assert_eq!(presence.take(), [("cam".to_string(), true)]);
        presence.settle(0);
        presence.report("cam", true);
        assert!(presence.take().is_empty(), "settled: none offline");
    }
}
