//! What the device side and the publisher tell each other about cameras.
//! [`Presence`]: the device link's sightings (heartbeats, lost sight, replies)
//! in the order it saw them, taken whole by the publisher when the bell
//! rings; bounded by [`MAX_WAITING`]. [`HeldView`]: what the publisher holds
//! for cameras, read by the status file's writer.

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::delivery::policy::{HeldFor, Sighting};
use crate::ops::sync::lock;

/// Sightings that may wait for the publisher (a minute of a 10,000-camera
/// fleet's heartbeats is about 24,000).
pub const MAX_WAITING: usize = 100_000;

/// Sightings on their way to the publisher.
pub struct Presence {
    board: Mutex<Vec<Sighting>>,
    bell: Sender<()>,
    rung: Receiver<()>,
}

impl Default for Presence {
    fn default() -> Self {
        let (bell, rung) = crossbeam_channel::bounded(1);
        Presence {
            board: Mutex::new(Vec::new()),
            bell,
            rung,
        }
    }
}

impl Presence {
    /// Records what the device side saw.
    pub fn report(&self, sighting: Sighting) {
        {
            let mut board = lock(&self.board);
            if board.len() >= MAX_WAITING {
                board.clear();
                board.push(Sighting::LostSight);
            }
            board.push(sighting);
        }
        // A full bell has rung already: the publisher takes everything.
        let _ = self.bell.try_send(());
    }

    /// Rings when there are sightings to take.
    pub fn bell(&self) -> &Receiver<()> {
        &self.rung
    }

    /// The sightings since the last call, oldest first.
    pub fn take(&self) -> Vec<Sighting> {
        std::mem::take(&mut *lock(&self.board))
    }
}

/// What is held for cameras or unconfirmed by them, as the status file
/// and metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub commands: usize,
    pub unconfirmed: usize,
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
    fn sightings_keep_their_order_and_one_ring_covers_a_burst() {
        let presence = Presence::default();
        presence.report(Sighting::Reply { unit: "u".into() });
        presence.report(Sighting::LostSight);
        assert!(presence.bell().try_recv().is_ok());
        assert!(presence.bell().try_recv().is_err(), "one ring");
        assert_eq!(
            presence.take(),
            [Sighting::Reply { unit: "u".into() }, Sighting::LostSight]
        );
        assert!(presence.take().is_empty());
    }

    #[test]
    fn too_many_untaken_sightings_become_one_lost_sight() {
        let presence = Presence::default();
        for _ in 0..MAX_WAITING {
            presence.report(Sighting::Reply { unit: "u".into() });
        }
        presence.report(Sighting::Reply { unit: "v".into() });
        assert_eq!(
            presence.take(),
            [Sighting::LostSight, Sighting::Reply { unit: "v".into() }]
        );
    }
}
