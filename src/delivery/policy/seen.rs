//! Part of the delivery policy (publisher thread, no I/O): which cameras the
//! relay has seen and whether each is present now (PROTOCOL.md §2.7), each
//! kept as a keyed fingerprint of its id. Fed heartbeats and losses of sight;
//! asked by the hold whether a command may go to its camera.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use super::cadence::{self, Class, State};

/// One camera, as far as presence goes. Times are tenths of a second
/// since [`Seen::base`] (0 = never), good for 13 years.
#[derive(Debug, Clone, Copy, Default)]
struct Camera {
    /// Its last live heartbeat that proved presence.
    live: u32,
    /// Its last heartbeat of any kind (also a remembered camera's last
    /// state: offline or not).
    seen: u32,
    /// Learned interval, tenths of a second (0 = not yet).
    interval: u16,
    /// The loss of sight `live` belongs to: live only while it is the current one.
    epoch: u16,
    /// Remembered from an earlier run as offline.
    offline: bool,
}

/// The cameras seen, by fingerprint.
pub(super) struct Seen {
    cameras: HashMap<u64, Camera>,
    /// Keys the fingerprints (random per run: no device can choose an id
    /// that passes for another camera's).
    fingerprints: RandomState,
    base: Instant,
    /// Bumped whenever the relay loses sight of every camera.
    epoch: u16,
    /// At most this many cameras are remembered (`MAX_DEVICES`).
    max: usize,
}

/// A camera remembered from an earlier run (the device table's file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// Lower case.
    pub camera: String,
    pub offline: bool,
    pub interval: Option<Duration>,
}

impl Seen {
    pub fn new(base: Instant, max: usize) -> Seen {
        Seen {
            cameras: HashMap::new(),
            fingerprints: RandomState::new(),
            base,
            epoch: 1,
            max: max.max(1),
        }
    }

    /// `camera` (lower case) as this map knows it.
    pub fn fingerprint(&self, camera: &str) -> u64 {
        self.fingerprints.hash_one(camera)
    }

    fn tenths(&self, at: Instant) -> u32 {
        let t = at.saturating_duration_since(self.base).as_millis() / 100;
        u32::try_from(t).unwrap_or(u32::MAX).max(1)
    }

    fn instant(&self, tenths: u32) -> Option<Instant> {
        (tenths > 0).then(|| self.base + Duration::from_millis(u64::from(tenths) * 100))
    }

    pub fn remember(&mut self, cameras: &[Remembered]) {
        for r in cameras {
            let fp = self.fingerprint(&r.camera);
            let interval = r.interval.map_or(0, |i| {
                u16::try_from(i.as_millis() / 100)
                    .unwrap_or(u16::MAX)
                    .max(1)
            });
            self.cameras.insert(
                fp,
                Camera {
                    interval,
                    offline: r.offline,
                    ..Camera::default()
                },
            );
        }
    }

    /// The relay lost sight of every camera: none is present until its
    /// next live heartbeat.
    pub fn lose_sight(&mut self) {
        self.epoch = self.epoch.wrapping_add(1).max(1);
    }

    /// A classified heartbeat of `fp` at `at`.
    pub fn beat(&mut self, fp: u64, at: Instant, class: Class, interval: Option<Duration>) {
        let tenths = self.tenths(at);
        let epoch = self.epoch;
        // One lookup for a camera known (a fleet's every heartbeat).
        let camera = match self.cameras.get_mut(&fp) {
            Some(camera) => camera,
            None => {
                if self.cameras.len() >= self.max {
                    self.forget_one();
                }
                self.cameras.entry(fp).or_default()
            }
        };
        camera.seen = tenths;
        camera.offline = false;
        if let Some(i) = interval {
            camera.interval = u16::try_from(i.as_millis() / 100)
                .unwrap_or(u16::MAX)
                .max(1);
        }
        if class.proves_presence() {
            camera.live = tenths;
            camera.epoch = epoch;
        } else {
            camera.live = 0;
        }
    }

    /// Makes room for one more: the first camera silent for longer than
    /// the next few looked at (a flood of new ids must not cost a scan of
    /// the whole fleet each; the device table forgets the longest silent
    /// exactly).
    fn forget_one(&mut self) {
        let victim = self
            .cameras
            .iter()
            .take(8)
            .min_by_key(|(_, c)| c.seen)
            .map(|(fp, _)| *fp);
        if let Some(fp) = victim {
            self.cameras.remove(&fp);
        }
    }

    /// A live heartbeat proved the camera present since the relay last
    /// lost sight of it (however long ago).
    pub fn seen_live(&self, fp: u64) -> bool {
        self.cameras
            .get(&fp)
            .is_some_and(|c| c.live > 0 && c.epoch == self.epoch)
    }

    pub fn is_known(&self, fp: u64) -> bool {
        self.cameras.contains_key(&fp)
    }

    /// Present, unknown or offline; None for a camera never seen.
    pub fn state(&self, fp: u64, timeout: Duration, now: Instant) -> Option<State> {
        let c = self.cameras.get(&fp)?;
        let live = (c.epoch == self.epoch)
            .then(|| self.instant(c.live))
            .flatten();
        Some(cadence::state(
            live,
            self.instant(c.seen),
            c.offline,
            self.interval(fp),
            timeout,
            now,
        ))
    }

    pub fn interval(&self, fp: u64) -> Option<Duration> {
        let c = self.cameras.get(&fp)?;
        (c.interval > 0).then(|| Duration::from_millis(u64::from(c.interval) * 100))
    }

    /// When `fp` goes offline if it stays silent (None: it is not present).
    pub fn offline_at(&self, fp: u64, timeout: Duration) -> Option<Instant> {
        let c = self.cameras.get(&fp)?;
        Some(self.instant(c.seen)? + timeout + Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(90);

    #[test]
    fn present_after_a_live_heartbeat_until_sight_is_lost() {
        let t0 = Instant::now();
        let mut seen = Seen::new(t0, 10);
        let fp = seen.fingerprint("cam");
        assert_eq!(seen.state(fp, TIMEOUT, t0), None, "never seen");
        seen.beat(fp, t0 + Duration::from_secs(1), Class::First, None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(seen.state(fp, TIMEOUT, now), Some(State::Present));
        seen.lose_sight();
        assert_eq!(seen.state(fp, TIMEOUT, now), Some(State::Unknown));
        seen.beat(fp, now, Class::Returned, None);
        assert_eq!(seen.state(fp, TIMEOUT, now), Some(State::Present));
        seen.beat(fp, now, Class::Rebooted, None);
        assert_eq!(
            seen.state(fp, TIMEOUT, now),
            Some(State::Unknown),
            "a timestamp that went backwards proves nothing yet"
        );
        let later = now + TIMEOUT + Duration::from_secs(1);
        assert_eq!(seen.state(fp, TIMEOUT, later), Some(State::Offline));
    }

    #[test]
    fn remembered_cameras_are_known_and_offline_ones_stay_offline() {
        let t0 = Instant::now();
        let mut seen = Seen::new(t0, 10);
        seen.remember(&[
            Remembered {
                camera: "a".into(),
                offline: true,
                interval: Some(Duration::from_secs(5)),
            },
            Remembered {
                camera: "b".into(),
                offline: false,
                interval: None,
            },
        ]);
        let (a, b) = (seen.fingerprint("a"), seen.fingerprint("b"));
        assert_eq!(seen.state(a, TIMEOUT, t0), Some(State::Offline));
        assert_eq!(seen.state(b, TIMEOUT, t0), Some(State::Unknown));
        assert_eq!(seen.interval(a), Some(Duration::from_secs(5)));
        assert!(seen.is_known(b));
    }

    #[test]
    fn a_full_map_stays_within_its_bound() {
        let t0 = Instant::now();
        let mut seen = Seen::new(t0, 2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let fp = seen.fingerprint(id);
            seen.beat(fp, t0 + Duration::from_secs(i as u64), Class::First, None);
        }
        assert_eq!(seen.cameras.len(), 2);
        assert!(seen.is_known(seen.fingerprint("c")));
    }
}
