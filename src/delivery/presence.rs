//! What the publisher and the device side tell each other about cameras.
//!
//! [`Presence`]: the device link (a camera's first heartbeat, or one after
//! silence) and the main thread's sweep (silent for `DEVICE_TIMEOUT`) report
//! cameras coming online and going offline; the publisher takes the changes
//! when its bell rings and releases or holds commands (policy/hold.rs).
//! Changes are kept per camera, the latest winning, so the board holds at
//! most one entry per device and a burst of heartbeats costs one wake-up.
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
    changes: Mutex<HashMap<String, bool>>,
    bell: Sender<()>,
    rung: Receiver<()>,
}

impl Default for Presence {
    fn default() -> Self {
        let (bell, rung) = crossbeam_channel::bounded(1);
        Presence {
            changes: Mutex::new(HashMap::new()),
            bell,
            rung,
        }
    }
}

impl Presence {
    /// `camera` (a heartbeat's device id) came online or went offline.
    pub fn report(&self, camera: &str, online: bool) {
        lock(&self.changes).insert(camera.to_ascii_lowercase(), online);
        // A full bell has rung already: the publisher takes everything.
        let _ = self.bell.try_send(());
    }

    /// Rings when there are changes to take.
    pub fn bell(&self) -> &Receiver<()> {
        &self.rung
    }

    /// The changes since the last call.
    pub fn take(&self) -> Vec<(String, bool)> {
        lock(&self.changes).drain().collect()
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
}
