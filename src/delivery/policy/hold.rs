//! Part of the delivery policy (run on the publisher thread, no I/O).
//!
//! Commands held for cameras that are offline (PROTOCOL.md §2.7). A command
//! whose `PRESENCE_FIELD` names a camera whose heartbeat stopped is accepted
//! (and spooled) but not published: the broker keeps nothing for a camera
//! that connects with a clean session, so it would be lost there. The
//! camera's next heartbeat releases its commands into the ledger at their
//! places in the acceptance order, before anything newer for it. A held
//! command still expires (its type's lifetime, counted from acceptance),
//! and the hold is bounded per camera and in bytes: past either bound a new
//! command for an offline camera is refused at once, and commands for
//! online cameras flow on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant, SystemTime};

use log::Level;

use super::write::report;
use super::{Action, Count, Delivery, Durability, Now, SpoolOp};
use crate::delivery::item::Accepted;
use crate::delivery::outbox::{self, LaterReply};

/// One held command.
pub(super) struct Held {
    pub job: Accepted,
    /// Its camera, ASCII lower case.
    pub camera: String,
    pub expires: Option<Instant>,
    /// Where its status lines go once released (no claim while held).
    pub reply: Option<LaterReply>,
}

/// The cameras known offline and what is held for them.
#[derive(Default)]
pub(super) struct Hold {
    /// Cameras whose heartbeat stopped, by [`Hold::fingerprint`] of their
    /// lower-case id: a whole fleet can be offline, and 8 bytes a camera
    /// are what a gateway can afford (a String each was ~60).
    offline: HashSet<u64>,
    /// Keys the fingerprints (random per run: no device can choose an id
    /// that passes for another camera's).
    fingerprints: RandomState,
    /// Held commands by sequence number: acceptance order.
    jobs: BTreeMap<u64, Held>,
    /// Per camera, its held commands, oldest first.
    by_camera: HashMap<String, VecDeque<u64>>,
    /// Held commands by when they expire, soonest first.
    expiry: BTreeSet<(Instant, u64)>,
    bytes: usize,
    /// Bumped at every insert and removal: the publisher republishes the
    /// status view only when it moved.
    changes: u64,
}

/// One camera's share of the hold, for the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFor {
    /// As the oldest held command named it.
    pub camera: String,
    pub commands: usize,
    /// When the oldest was received (wall clock).
    pub oldest: SystemTime,
}

impl Hold {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `camera` (lower case) as the offline set knows it.
    fn fingerprint(&self, camera: &str) -> u64 {
        self.fingerprints.hash_one(camera)
    }

    pub fn is_offline(&self, camera: &str) -> bool {
        self.offline.contains(&self.fingerprint(camera))
    }

    pub fn came_online(&mut self, camera: &str) {
        let fingerprint = self.fingerprint(camera);
        self.offline.remove(&fingerprint);
        if self.offline.is_empty() {
            // A fleet that was offline together: give its room back.
            self.offline = HashSet::new();
        }
    }

    pub fn get(&self, seq: u64) -> Option<&Held> {
        self.jobs.get(&seq)
    }

    /// Held commands with a sequence number in `from..to`.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &Held)> {
        self.jobs.range(from..to).map(|(s, h)| (*s, h))
    }

    fn held_for(&self, camera: &str) -> usize {
        self.by_camera.get(camera).map_or(0, VecDeque::len)
    }

    fn insert(&mut self, seq: u64, held: Held) {
        self.changes += 1;
        self.bytes += held.job.payload.len();
        self.by_camera
            .entry(held.camera.clone())
            .or_default()
            .push_back(seq);
        if let Some(at) = held.expires {
            self.expiry.insert((at, seq));
        }
        self.jobs.insert(seq, held);
    }

    fn remove(&mut self, seq: u64) -> Option<Held> {
        let held = self.jobs.remove(&seq)?;
        self.changes += 1;
        self.bytes -= held.job.payload.len();
        if let Some(at) = held.expires {
            self.expiry.remove(&(at, seq));
        }
        if let Some(queue) = self.by_camera.get_mut(&held.camera) {
            queue.retain(|s| *s != seq);
            if queue.is_empty() {
                self.by_camera.remove(&held.camera);
            }
        }
        Some(held)
    }

    /// Marks `camera` offline; at most `max` cameras are remembered (those
    /// with nothing held are forgotten first: they cost nothing to forget).
    fn went_offline(&mut self, camera: &str, max: usize) {
        let fingerprint = self.fingerprint(camera);
        if self.offline.len() >= max && !self.offline.contains(&fingerprint) {
            let holding: HashSet<u64> =
                self.by_camera.keys().map(|c| self.fingerprint(c)).collect();
            let spare = self.offline.iter().find(|c| !holding.contains(*c)).copied();
            if let Some(spare) = spare {
                self.offline.remove(&spare);
            }
        }
        self.offline.insert(fingerprint);
    }

    /// Every camera's share, the longest waiting first.
    pub fn by_camera(&self) -> Vec<HeldFor> {
        let mut out: Vec<HeldFor> = self
            .by_camera
            .values()
            .filter_map(|seqs| {
                let oldest = self.jobs.get(seqs.front()?)?;
                Some(HeldFor {
                    camera: oldest.job.camera.clone().unwrap_or_default(),
                    commands: seqs.len(),
                    oldest: oldest.job.received_wall,
                })
            })
            .collect();
        out.sort_by(|a, b| a.oldest.cmp(&b.oldest).then(a.camera.cmp(&b.camera)));
        out
    }
}

/// Why a command for an offline camera cannot be held.
fn over_limit(
    hold: &Hold,
    camera: &str,
    bytes: usize,
    settings: &super::Settings,
) -> Option<String> {
    if hold.held_for(camera) >= settings.hold_max_per_camera {
        return Some(format!(
            "HOLD_MAX_PER_CAMERA ({}) commands are held for it",
            settings.hold_max_per_camera
        ));
    }
    if hold.bytes + bytes > settings.hold_max_bytes {
        return Some(format!(
            "the commands held for offline cameras reached HOLD_MAX_BYTES ({} bytes)",
            settings.hold_max_bytes
        ));
    }
    None
}

impl Delivery {
    /// The camera (lower case) `job` waits for, when it must be held.
    pub(super) fn offline_camera(&self, job: &Accepted) -> Option<String> {
        if !self.settings.hold_offline || job.again {
            return None;
        }
        let camera = job.camera.as_deref()?.to_ascii_lowercase();
        self.hold.is_offline(&camera).then_some(camera)
    }

    /// Holds `job` for `camera` under sequence number `seq`, or refuses it
    /// (its error line goes out at once) when the hold is full. Returns
    /// whether it was held.
    pub(super) fn hold_or_refuse(
        &mut self,
        seq: u64,
        mut job: Accepted,
        camera: String,
        out: &mut Vec<Action>,
    ) -> bool {
        if let Some(limit) = over_limit(&self.hold, &camera, job.payload.len(), &self.settings) {
            let shown = job.camera.clone().unwrap_or_default();
            self.log(out, Level::Warn, || {
                format!(
                    "refused {} for unit {}: camera {shown} is offline and {limit}",
                    job.kind.as_str(),
                    job.unit
                )
            });
            out.push(Action::Count(Count::Refused));
            let error = format!("camera {shown:?} is offline and {limit}");
            report(&mut job, Some(&error), out);
            return false;
        }
        let expires = self
            .settings
            .ttl_for(job.kind.as_str())
            .and_then(|ttl| job.received.checked_add(ttl));
        let reply = job.reply.take().map(|owed| owed.defer());
        self.hold.insert(
            seq,
            Held {
                job,
                camera,
                expires,
                reply,
            },
        );
        out.push(Action::Count(Count::Held));
        true
    }

    /// Holds a command that was queued (accepted, spooled as not held)
    /// when its turn came and its camera was offline.
    pub(super) fn hold_queued(
        &mut self,
        seq: u64,
        job: Accepted,
        camera: String,
        out: &mut Vec<Action>,
    ) {
        let from = job.peer.map_or("spool".to_string(), |p| p.to_string());
        if self.hold_or_refuse(seq, job, camera, out) {
            self.announce_held(seq, &from, out);
        } else if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
    }

    /// The "held" line and status line of a held command now accepted.
    pub(super) fn announce_held(&self, seq: u64, from: &str, out: &mut Vec<Action>) {
        let Some(held) = self.hold.get(seq) else {
            return;
        };
        let job = &held.job;
        let camera = job.camera.as_deref().unwrap_or_default();
        let waiting = self.hold.held_for(&held.camera);
        self.log(out, Level::Info, || {
            format!(
                "held {} for unit {} from {from}: camera {camera} is offline ({waiting} held for it)",
                job.kind.as_str(),
                job.unit
            )
        });
        if let Some(reply) = held.reply.as_ref().filter(|r| r.ok_lines()) {
            out.push(Action::Notice {
                to: reply.outbox().clone(),
                line: outbox::held_line(job.kind.as_str(), &job.unit, job.id.as_deref(), camera),
            });
        }
    }

    /// Cameras came online (`true`) or went offline (`false`): those that
    /// came back get their held commands released, oldest first.
    pub(super) fn presence(&mut self, changes: Vec<(String, bool)>, out: &mut Vec<Action>) {
        for (camera, online) in changes {
            let camera = camera.to_ascii_lowercase();
            if !online {
                // Without the hold, nothing asks whether a camera is offline.
                if self.settings.hold_offline {
                    self.hold.went_offline(&camera, self.settings.max_cameras);
                }
                continue;
            }
            self.hold.came_online(&camera);
            self.release(&camera, out);
        }
    }

    fn release(&mut self, camera: &str, out: &mut Vec<Action>) {
        let Some(seqs) = self.hold.by_camera.get(camera).cloned() else {
            return;
        };
        let mut shown = String::new();
        for seq in &seqs {
            let Some(held) = self.hold.remove(*seq) else {
                continue;
            };
            let mut job = held.job;
            if shown.is_empty() {
                shown = job.camera.clone().unwrap_or_default();
            }
            job.reply = held.reply.and_then(LaterReply::claim);
            self.ledger.restore(*seq, job);
        }
        let n = seqs.len();
        self.log(out, Level::Info, || {
            format!("camera {shown} is back online: releasing its {n} held commands, oldest first")
        });
    }

    /// Drops held commands whose lifetime ran out: never published.
    pub(super) fn expire_held(&mut self, now: Now, out: &mut Vec<Action>) {
        while let Some(&(at, seq)) = self.hold.expiry.first() {
            if at > now.mono {
                return;
            }
            let Some(held) = self.hold.remove(seq) else {
                self.hold.expiry.remove(&(at, seq));
                continue;
            };
            self.expire_held_one(seq, held, now, out);
        }
    }

    fn expire_held_one(&mut self, seq: u64, held: Held, now: Now, out: &mut Vec<Action>) {
        let mut job = held.job;
        job.reply = held.reply.and_then(LaterReply::claim);
        out.push(Action::Count(Count::ExpiredHeld));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let age = now.mono.saturating_duration_since(job.received).as_secs();
        let ttl = self
            .settings
            .ttl_for(job.kind.as_str())
            .unwrap_or_default()
            .as_secs();
        let camera = job.camera.clone().unwrap_or_default();
        let which = self.settings.ttl_key(job.kind.as_str());
        self.log(out, Level::Warn, || {
            format!(
                "expired {} for unit {} after {age} s held for camera {camera}, which stayed \
                 offline ({which} {ttl} s): not published",
                job.kind.as_str(),
                job.unit,
            )
        });
        let error = format!(
            "expired after {age} s waiting for camera {camera:?} to come online ({which} {ttl} s)"
        );
        report(&mut job, Some(&error), out);
    }

    /// At a stop: what becomes of the commands still held.
    pub(super) fn held_at_close(&self, out: &mut Vec<Action>) {
        let n = self.hold.len();
        if n == 0 {
            return;
        }
        let path = self.spool_path();
        match &self.spool {
            Durability::Writing => self.log(out, Level::Info, || {
                format!(
                    "{n} commands held for offline cameras stay in the spool {path} until their \
                     cameras return"
                )
            }),
            Durability::Failing { .. } => self.log(out, Level::Error, || {
                format!(
                    "{n} commands held for offline cameras are lost: the spool {path} cannot be \
                     written"
                )
            }),
            Durability::Off => self.log(out, Level::Error, || {
                format!("{n} commands held for offline cameras are lost (no SPOOL_FILE)")
            }),
        }
    }

    /// Cameras known offline (for [`crate::delivery::presence::Presence::settle`]).
    pub fn offline_cameras(&self) -> usize {
        self.hold.offline.len()
    }

    /// Commands held for offline cameras.
    pub fn held(&self) -> usize {
        self.hold.len()
    }

    /// Payload bytes of the commands held for offline cameras.
    pub fn held_bytes(&self) -> usize {
        self.hold.bytes()
    }

    /// Moves whenever what is held changes.
    pub fn hold_changes(&self) -> u64 {
        self.hold.changes
    }

    /// Each offline camera's held commands, the longest waiting first.
    pub fn held_by_camera(&self) -> Vec<HeldFor> {
        self.hold.by_camera()
    }

    /// How long until the next held command expires.
    pub(super) fn next_expiry(&self, now: Now) -> Option<Duration> {
        let &(at, _) = self.hold.expiry.first()?;
        Some(at.saturating_duration_since(now.mono))
    }
}
