//! What the device side and the publisher tell each other about cameras.
//! [`Presence`]: the device link's sightings (heartbeats, lost sight, replies)
//! in the order it saw them, taken whole by the publisher when the bell
//! rings and before every decision it makes; bounded by [`MAX_WAITING`].
//! [`HeldView`]: what the publisher holds for cameras, read by the status
//! file's writer.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::delivery::policy::{HeldFor, Sighting};
use crate::ops::sync::lock;

/// Sightings that may wait for the publisher (a minute of a 10,000-camera
/// fleet's heartbeats is about 24,000).
pub const MAX_WAITING: usize = 100_000;

/// A heartbeat of a camera the publisher has nothing out for waits up to
/// this long, with the others that came meanwhile: a fleet's 400
/// heartbeats a second wake it about once a second, not 400 times. The
/// publisher looks again this long after every ring
/// ([`Presence::FOLLOW_UP`]), so none waits longer, and it takes the
/// board before every decision, so none is judged without them.
const GATHER: Duration = Duration::from_secs(1);

/// Sightings that wake the publisher at once however recent the last ring.
const RING_AT: usize = 1024;

/// Sightings on their way to the publisher.
pub struct Presence {
    board: Mutex<Board>,
    bell: Sender<()>,
    rung: Receiver<()>,
}

struct Board {
    sightings: Vec<Sighting>,
    /// When the bell last rang.
    rang: Option<Instant>,
    /// Cameras (lower case) with commands held or unconfirmed: their
    /// heartbeats release or confirm them, and ring at once.
    watched: HashSet<String>,
}

impl Default for Presence {
    fn default() -> Self {
        let (bell, rung) = crossbeam_channel::bounded(1);
        Presence {
            board: Mutex::new(Board {
                sightings: Vec::new(),
                rang: None,
                watched: HashSet::new(),
            }),
            bell,
            rung,
        }
    }
}

impl Presence {
    /// How soon the publisher looks at the board again after a ring.
    pub const FOLLOW_UP: Duration = GATHER;

    /// Records what the device side saw at `now`. A heartbeat of a watched
    /// camera, lost sight or a device reply rings the bell; another
    /// heartbeat rings it when the last ring is [`GATHER`] old or the board
    /// is long, and otherwise waits for the publisher's follow-up look.
    pub fn report(&self, sighting: Sighting, now: Instant) {
        let ring = {
            let mut board = lock(&self.board);
            let urgent = match &sighting {
                Sighting::Beat { camera, .. } => board.watched.contains(camera),
                Sighting::LostSight | Sighting::Reply { .. } => true,
            };
            if board.sightings.len() >= MAX_WAITING {
                board.sightings.clear();
                board.sightings.push(Sighting::LostSight);
            }
            board.sightings.push(sighting);
            let ring = urgent
                || board.sightings.len() >= RING_AT
                || board
                    .rang
                    .is_none_or(|at| now.saturating_duration_since(at) >= GATHER);
            if ring {
                board.rang = Some(now);
            }
            ring
        };
        if ring {
            // A full bell has rung already: the publisher takes everything.
            let _ = self.bell.try_send(());
        }
    }

    /// The publisher has commands out for `camera` (lower case), or no
    /// longer (`on` false).
    pub fn watch(&self, camera: String, on: bool) {
        let mut board = lock(&self.board);
        if on {
            board.watched.insert(camera);
        } else {
            board.watched.remove(&camera);
        }
    }

    /// Rings when there are sightings to take.
    pub fn bell(&self) -> &Receiver<()> {
        &self.rung
    }

    /// The sightings since the last call, oldest first.
    pub fn take(&self) -> Vec<Sighting> {
        std::mem::take(&mut lock(&self.board).sightings)
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

    /// The totals alone, the cameras' list left as it was set last.
    pub fn set_totals(&self, commands: usize, unconfirmed: usize, bytes: usize) {
        let mut held = lock(&self.0);
        held.commands = commands;
        held.unconfirmed = unconfirmed;
        held.bytes = bytes;
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
        let now = Instant::now();
        presence.report(Sighting::Reply { unit: "u".into() }, now);
        presence.report(Sighting::LostSight, now);
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
        let now = Instant::now();
        for _ in 0..MAX_WAITING {
            presence.report(Sighting::Reply { unit: "u".into() }, now);
        }
        presence.report(Sighting::Reply { unit: "v".into() }, now);
        assert_eq!(
            presence.take(),
            [Sighting::LostSight, Sighting::Reply { unit: "v".into() }]
        );
    }

    fn beat(n: usize) -> Sighting {
        Sighting::Beat {
            camera: format!("cam-{n}"),
            at: Instant::now(),
            class: crate::delivery::policy::Class::Regular,
            interval: None,
        }
    }

    #[test]
    fn heartbeats_of_unwatched_cameras_gather_until_the_last_ring_is_old_or_the_board_long() {
        let presence = Presence::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        presence.report(beat(0), t0);
        assert!(presence.bell().try_recv().is_ok(), "the first rings");
        for n in 1..10 {
            presence.report(beat(n), ms(n as u64));
        }
        assert!(presence.bell().try_recv().is_err(), "gathered, no ring");
        presence.watch("cam-7".into(), true);
        presence.report(beat(7), ms(20));
        assert!(presence.bell().try_recv().is_ok(), "a watched camera rings");
        presence.watch("cam-7".into(), false);
        presence.report(beat(7), ms(30));
        assert!(presence.bell().try_recv().is_err(), "no longer watched");
        presence.report(Sighting::LostSight, ms(40));
        assert!(presence.bell().try_recv().is_ok(), "lost sight rings");
        presence.report(beat(11), ms(60));
        assert!(presence.bell().try_recv().is_err());
        presence.report(beat(12), ms(40) + GATHER);
        assert!(presence.bell().try_recv().is_ok(), "the last ring is old");
        assert_eq!(presence.take().len(), 15, "all kept, in order");
        let t1 = t0 + GATHER * 3;
        presence.report(beat(0), t1);
        assert!(presence.bell().try_recv().is_ok(), "the last ring is old");
        for n in 1..RING_AT - 1 {
            presence.report(beat(n), t1);
        }
        assert!(presence.bell().try_recv().is_err());
        presence.report(beat(RING_AT), t1);
        assert!(presence.bell().try_recv().is_ok(), "a long board rings");
    }
}
