//! Part of the delivery policy (publisher thread, no I/O): commands for
//! cameras (PROTOCOL.md §2.7). [`Hold`] keeps those held for their camera and
//! those sent and not yet confirmed, per camera its queue, timers and serial
//! gate; the `impl Delivery` blocks decide when a command waits, goes, is
//! confirmed, sent again, expires, and answer operators (`held`, `cancel`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use log::Level;

use super::cadence::{Class, State};
use super::seen::Seen;
use super::write::report;
use super::{Action, Count, Delivery, Durability, Now, Settings, SpoolOp};
use crate::delivery::item::Accepted;
use crate::delivery::outbox;
use crate::ops::log_limit::Kind;
use crate::protocol::command::CommandType;
use crate::protocol::control::Control;

/// Commands held for a camera go this long after the heartbeat that
/// showed it present again (at most half its interval, or of
/// `DEVICE_TIMEOUT`): the firmware subscribes right before its connect
/// heartbeat, and one that heartbeats first would miss them.
pub const RELEASE_DELAY: Duration = Duration::from_secs(1);
/// A heartbeat confirms a command only when it arrived this long (at most
/// half the camera's interval) after the broker took it: one sent before
/// the command shows nothing about it.
const CONFIRM_MARGIN: Duration = Duration::from_secs(1);
/// Regular heartbeats after a command that confirm it: the first could be
/// the connect heartbeat of a reconnect that looks on time; the one after
/// it then comes early.
const CONFIRMING_BEATS: u8 = 2;

/// Why a command waits instead of going to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Silent for `DEVICE_TIMEOUT`.
    Offline,
    /// Known, but not seen live since the relay lost sight of it.
    Unknown,
    /// Never seen: waits `UNSEEN_WAIT` for a first heartbeat.
    Unseen,
    /// Present again: goes [`RELEASE_DELAY`] after its heartbeat.
    Releasing,
    /// Behind a command that restarts the camera (`SERIAL_AFTER`).
    Serial,
}

impl Why {
    /// As log lines say why a camera's command waits.
    fn says(self) -> &'static str {
        match self {
            Why::Offline => "is offline",
            Why::Unknown => "has not been seen since the relay lost sight of it",
            Why::Unseen => "was never seen",
            Why::Releasing => "is back: its commands go in a moment",
            Why::Serial => "is busy with a command that restarts it",
        }
    }
}

/// One command waiting for its camera.
pub(super) struct Held {
    pub job: Accepted,
    pub camera: u64,
    /// Why it was held.
    pub why: Why,
    /// For a camera never seen: published anyway at this time.
    pub unseen_until: Option<Instant>,
    /// Its key in [`Hold::expiry`].
    expires: Option<Instant>,
}

/// One command the broker took, not yet confirmed at its camera.
pub(super) struct Sent {
    pub job: Accepted,
    pub camera: u64,
    /// When the broker took it.
    pub published: Instant,
    /// Regular heartbeats since that confirm it.
    pub regular: u8,
    /// Of a `SERIAL_AFTER` type: the camera's next heartbeat confirms it.
    pub serial: bool,
    /// Its key in [`Hold::expiry`].
    expires: Option<Instant>,
}

/// A command that restarts the camera is out: newer ones wait.
#[derive(Debug, Clone, Copy)]
struct Gate {
    seq: u64,
    /// When the broker took it (None: not yet).
    acked: Option<Instant>,
    /// `SERIAL_TIMEOUT` after it was written: newer ones go anyway.
    until: Instant,
}

/// One camera with commands held or sent.
struct Queue {
    /// Lower case.
    camera: String,
    held: BTreeSet<u64>,
    sent: BTreeSet<u64>,
    release_at: Option<Instant>,
    gate: Option<Gate>,
    /// Its entry in [`Hold::timers`].
    timer: Option<Instant>,
}

/// The cameras and their commands.
pub(super) struct Hold {
    pub seen: Seen,
    held: BTreeMap<u64, Held>,
    sent: BTreeMap<u64, Sent>,
    queues: HashMap<u64, Queue>,
    /// Held and sent commands by when they expire, soonest first.
    expiry: BTreeSet<(Instant, u64)>,
    /// Cameras by their next timer, soonest first.
    timers: BTreeSet<(Instant, u64)>,
    bytes: usize,
    /// Bumped at every change: the publisher republishes the status view only when it moved.
    changes: u64,
}

/// One camera's share, for the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFor {
    /// As the oldest command named it.
    pub camera: String,
    /// Held (waiting) commands.
    pub commands: usize,
    /// Sent, not yet confirmed.
    pub unconfirmed: usize,
    /// When the oldest was received (wall clock).
    pub oldest: SystemTime,
    pub state: &'static str,
    pub interval: Option<Duration>,
}

impl Hold {
    pub fn new(base: Instant, max_cameras: usize) -> Hold {
        Hold {
            seen: Seen::new(base, max_cameras),
            held: BTreeMap::new(),
            sent: BTreeMap::new(),
            queues: HashMap::new(),
            expiry: BTreeSet::new(),
            timers: BTreeSet::new(),
            bytes: 0,
            changes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn unconfirmed(&self) -> usize {
        self.sent.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, seq: u64) -> Option<&Held> {
        self.held.get(&seq)
    }

    /// Held and sent commands with a sequence number in `from..to`.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &Accepted)> {
        let held = self.held.range(from..to).map(|(s, h)| (*s, &h.job));
        let sent = self.sent.range(from..to).map(|(s, h)| (*s, &h.job));
        held.chain(sent)
    }

    fn commands_for(&self, camera: u64) -> usize {
        self.queues
            .get(&camera)
            .map_or(0, |q| q.held.len() + q.sent.len())
    }

    fn queue(&mut self, camera: u64, name: &str) -> &mut Queue {
        self.queues.entry(camera).or_insert_with(|| Queue {
            camera: name.to_string(),
            held: BTreeSet::new(),
            sent: BTreeSet::new(),
            release_at: None,
            gate: None,
            timer: None,
        })
    }

    fn insert_held(&mut self, seq: u64, held: Held, name: &str) {
        self.changes += 1;
        self.bytes += held.job.payload.len();
        self.queue(held.camera, name).held.insert(seq);
        if let Some(at) = held.expires {
            self.expiry.insert((at, seq));
        }
        self.held.insert(seq, held);
    }

    fn insert_sent(&mut self, seq: u64, sent: Sent, name: &str) {
        self.changes += 1;
        self.bytes += sent.job.payload.len();
        self.queue(sent.camera, name).sent.insert(seq);
        if let Some(at) = sent.expires {
            self.expiry.insert((at, seq));
        }
        self.sent.insert(seq, sent);
    }

    fn remove_held(&mut self, seq: u64) -> Option<Held> {
        let held = self.held.remove(&seq)?;
        self.changes += 1;
        self.bytes -= held.job.payload.len();
        if let Some(at) = held.expires {
            self.expiry.remove(&(at, seq));
        }
        if let Some(q) = self.queues.get_mut(&held.camera) {
            q.held.remove(&seq);
        }
        Some(held)
    }

    fn remove_sent(&mut self, seq: u64) -> Option<Sent> {
        let sent = self.sent.remove(&seq)?;
        self.changes += 1;
        self.bytes -= sent.job.payload.len();
        if let Some(at) = sent.expires {
            self.expiry.remove(&(at, seq));
        }
        if let Some(q) = self.queues.get_mut(&sent.camera) {
            q.sent.remove(&seq);
            if q.gate.is_some_and(|g| g.seq == seq) {
                q.gate = None;
            }
        }
        Some(sent)
    }

    /// Drops the queue of `camera` when nothing is left in it.
    fn tidy(&mut self, camera: u64) {
        let empty = self
            .queues
            .get(&camera)
            .is_some_and(|q| q.held.is_empty() && q.sent.is_empty() && q.gate.is_none());
        if empty {
            if let Some(q) = self.queues.remove(&camera) {
                if let Some(at) = q.timer {
                    self.timers.remove(&(at, camera));
                }
            }
        }
    }

    /// Every camera's share, the longest waiting first.
    pub fn by_camera(&self, timeout: Duration, now: Instant) -> Vec<HeldFor> {
        let mut out: Vec<HeldFor> = self
            .queues
            .iter()
            .filter_map(|(fp, q)| {
                let first = q.held.iter().chain(q.sent.iter()).min()?;
                let job = self
                    .held
                    .get(first)
                    .map(|h| &h.job)
                    .or_else(|| self.sent.get(first).map(|s| &s.job))?;
                Some(HeldFor {
                    camera: job.camera.clone().unwrap_or_else(|| q.camera.clone()),
                    commands: q.held.len(),
                    unconfirmed: q.sent.len(),
                    oldest: job.received_wall,
                    state: self
                        .seen
                        .state(*fp, timeout, now)
                        .map_or("unknown", State::as_str),
                    interval: self.seen.interval(*fp),
                })
            })
            .collect();
        out.sort_by(|a, b| a.oldest.cmp(&b.oldest).then(a.camera.cmp(&b.camera)));
        out
    }
}

/// Why a command for `camera` cannot be kept.
fn over_limit(hold: &Hold, camera: u64, bytes: usize, settings: &Settings) -> Option<String> {
    if hold.commands_for(camera) >= settings.hold_max_per_camera {
        return Some(format!(
            "HOLD_MAX_PER_CAMERA ({}) commands are held or unconfirmed for it",
            settings.hold_max_per_camera
        ));
    }
    if hold.bytes + bytes > settings.hold_max_bytes {
        return Some(format!(
            "the commands held or unconfirmed for cameras reached HOLD_MAX_BYTES ({} bytes)",
            settings.hold_max_bytes
        ));
    }
    None
}

impl Delivery {
    /// The camera `job` is for (its fingerprint and lower-case id), when
    /// its presence decides its delivery.
    pub(super) fn tracked(&self, job: &Accepted) -> Option<(u64, String)> {
        if !self.settings.hold_offline || job.again {
            return None;
        }
        let camera = job.camera.as_deref()?.to_ascii_lowercase();
        Some((self.hold.seen.fingerprint(&camera), camera))
    }

    /// Why a command for `camera` must wait now (None: it may go).
    pub(super) fn gate(&self, camera: u64, now: Instant) -> Option<Why> {
        let timeout = self.settings.device_timeout;
        match self.hold.seen.state(camera, timeout, now) {
            None if self.settings.unseen_wait.is_zero() => None,
            None => Some(Why::Unseen),
            Some(State::Offline) => Some(Why::Offline),
            Some(State::Unknown) => Some(Why::Unknown),
            Some(State::Present) => {
                let q = self.hold.queues.get(&camera)?;
                if q.gate.is_some() {
                    Some(Why::Serial)
                } else if q.release_at.is_some() || !q.held.is_empty() {
                    Some(Why::Releasing)
                } else {
                    None
                }
            }
        }
    }

    /// When `job`'s lifetime ends, by the lifetimes in effect now.
    fn expires(&self, job: &Accepted) -> Option<Instant> {
        self.settings
            .lifetimes
            .ttl_for(job.kind)
            .and_then(|ttl| job.received.checked_add(ttl))
    }

    /// Whether `job` may be kept for `camera` (else refused: its error line
    /// goes out at once).
    pub(super) fn keep_or_refuse(
        &self,
        job: &mut Accepted,
        camera: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(limit) = over_limit(&self.hold, camera, job.payload.len(), &self.settings) else {
            return true;
        };
        let shown = job.camera.clone().unwrap_or_default();
        self.log(out, Level::Warn, || {
            format!(
                "refused {} for unit {}: camera {shown}: {limit}",
                job.kind.as_str(),
                job.unit
            )
        });
        out.push(Action::Count(Count::Refused));
        let error = format!("camera {shown:?}: {limit}");
        report(job, Some(&error), out);
        false
    }

    /// Holds `job` for `camera` under `seq` (its bounds checked already).
    fn hold(
        &mut self,
        seq: u64,
        job: Accepted,
        camera: (u64, &str),
        why: Why,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let unseen_until =
            (why == Why::Unseen).then(|| job.received.max(now.mono) + self.settings.unseen_wait);
        let expires = self.expires(&job);
        let held = Held {
            job,
            camera: camera.0,
            why,
            unseen_until,
            expires,
        };
        self.hold.insert_held(seq, held, camera.1);
        if why == Why::Serial {
            out.push(Action::Count(Count::SerialWait));
        }
        self.reschedule(camera.0, now.mono);
    }

    /// Holds or refuses a command just read (admission): true when held.
    pub(super) fn hold_new(
        &mut self,
        seq: u64,
        mut job: Accepted,
        camera: (u64, &str),
        why: Why,
        now: Now,
        out: &mut Vec<Action>,
    ) -> bool {
        if !self.keep_or_refuse(&mut job, camera.0, out) {
            return false;
        }
        job.held_line = true;
        self.hold(seq, job, camera, why, now, out);
        out.push(Action::Count(Count::Held));
        true
    }

    /// A command read back from the spool, held for its camera.
    pub(super) fn hold_replayed(
        &mut self,
        seq: u64,
        job: Accepted,
        camera: (u64, &str),
        why: Why,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        self.hold(seq, job, camera, why, now, out);
        out.push(Action::Count(Count::Held));
    }

    /// A queued command whose camera cannot take it now (its turn came
    /// while the camera went away, or behind a command that restarts it):
    /// held again at its place.
    pub(super) fn hold_queued(
        &mut self,
        seq: u64,
        job: Accepted,
        camera: (u64, &str),
        why: Why,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let first_time = !job.held_line;
        let from = job.peer.map_or("spool".to_string(), |p| p.to_string());
        let mut job = job;
        job.held_line = true;
        self.hold(seq, job, camera, why, now, out);
        if first_time {
            out.push(Action::Count(Count::Held));
            self.announce_held(seq, &from, out);
        }
    }

    /// The log line and `held` status line of a command just held.
    pub(super) fn announce_held(&self, seq: u64, from: &str, out: &mut Vec<Action>) {
        let Some(held) = self.hold.get(seq) else {
            return;
        };
        let job = &held.job;
        let camera = job.camera.as_deref().unwrap_or_default();
        let waiting = self.hold.commands_for(held.camera);
        if Level::Info <= self.settings.log_level {
            out.push(Action::LogLimited(
                Kind::HeldCommand,
                Level::Info,
                format!(
                    "held {} for unit {} from {from}: camera {camera} {} ({waiting} held or unconfirmed for it)",
                    job.kind.as_str(),
                    job.unit,
                    held.why.says()
                ),
            ));
        }
        if let Some(reply) = job.reply.as_ref().filter(|r| r.ok_lines) {
            out.push(Action::Line {
                conn: reply.conn,
                line: outbox::held_line(job.kind.as_str(), &job.unit, job.id.as_deref(), camera),
            });
        }
    }

    /// The broker took `job` (`first`: for the first time) for its
    /// camera: it stays, unconfirmed, until the camera's heartbeats show it
    /// had it. Returns it when its camera is not tracked.
    pub(super) fn sent(
        &mut self,
        seq: u64,
        mut job: Accepted,
        first: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Option<Accepted> {
        let tracked = self
            .tracked(&job)
            .filter(|(fp, _)| self.hold.seen.is_known(*fp));
        let Some((camera, name)) = tracked else {
            return Some(job);
        };
        // The `ok` line, once: where a `delivered` line is to follow, the
        // claim on the last word stays with the command.
        match job.reply.as_ref() {
            _ if !first => {}
            Some(r) if r.camera_lines => out.push(Action::Line {
                conn: r.conn,
                line: outbox::ok_line_for_camera(
                    job.kind.as_str(),
                    &job.unit,
                    job.id.as_deref(),
                    job.camera.as_deref().unwrap_or_default(),
                ),
            }),
            _ => report(&mut job, None, out),
        }
        if let Some(gate) = self
            .hold
            .queues
            .get_mut(&camera)
            .and_then(|q| q.gate.as_mut())
            .filter(|g| g.seq == seq)
        {
            gate.acked = Some(now.mono);
        }
        let expires = self.expires(&job);
        let serial = self.settings.serial_after.contains(&job.kind);
        let sent = Sent {
            job,
            camera,
            published: now.mono,
            regular: 0,
            serial,
            expires,
        };
        self.hold.insert_sent(seq, sent, &name);
        self.reschedule(camera, now.mono);
        None
    }

    /// A command of a `SERIAL_AFTER` type was just written for its camera:
    /// newer ones wait for the camera's next heartbeat.
    pub(super) fn open_gate(&mut self, seq: u64, kind: CommandType, camera: (u64, &str), now: Now) {
        if !self.settings.serial_after.contains(&kind) || !self.hold.seen.is_known(camera.0) {
            return;
        }
        let until = now.mono + self.settings.serial_timeout;
        let (camera, name) = camera;
        self.hold.queue(camera, name).gate = Some(Gate {
            seq,
            acked: None,
            until,
        });
        self.reschedule(camera, now.mono);
    }

    /// What the device side saw: heartbeats, lost sight, device replies.
    pub(super) fn sightings(
        &mut self,
        sightings: Vec<super::Sighting>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        for sighting in sightings {
            match sighting {
                super::Sighting::Beat {
                    camera,
                    at,
                    class,
                    interval,
                } => self.beat(&camera, at, class, interval, now, out),
                super::Sighting::LostSight => self.lose_sight(),
                super::Sighting::Reply { unit } => self.replied(&unit, now, out),
            }
        }
    }

    /// Every camera's presence is unknown until its next live heartbeat.
    pub(super) fn lose_sight(&mut self) {
        self.hold.seen.lose_sight();
        let cameras: Vec<u64> = self.hold.queues.keys().copied().collect();
        for camera in cameras {
            if let Some(q) = self.hold.queues.get_mut(&camera) {
                q.release_at = None;
            }
        }
    }

    fn beat(
        &mut self,
        camera: &str,
        at: Instant,
        class: Class,
        interval: Option<Duration>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let fp = self.hold.seen.fingerprint(camera);
        let timeout = self.settings.device_timeout;
        let was_present = self.hold.seen.state(fp, timeout, now.mono) == Some(State::Present);
        self.hold.seen.beat(fp, at, class, interval);
        if !self.hold.queues.contains_key(&fp) {
            return;
        }
        let margin = self
            .hold
            .seen
            .interval(fp)
            .map_or(CONFIRM_MARGIN, |i| (i / 2).min(CONFIRM_MARGIN));
        self.confirm_serial(fp, at, margin, now, out);
        if class.reconnect() {
            self.resend(fp, Some(at), class.reason(), now, out);
        } else if class == Class::Regular {
            self.count_regular(fp, at, margin, now, out);
        }
        if class.proves_presence() {
            let release_at = if class == Class::Regular && was_present {
                at
            } else {
                at + self.release_delay(fp)
            };
            if let Some(q) = self.hold.queues.get_mut(&fp) {
                if !q.held.is_empty() && q.gate.is_none() {
                    q.release_at = Some(q.release_at.map_or(release_at, |r| r.min(release_at)));
                }
            }
        }
        self.reschedule(fp, now.mono);
        self.hold.tidy(fp);
    }

    /// How long after the heartbeat that showed it back a camera's held
    /// commands go: [`RELEASE_DELAY`], or half its interval or half
    /// `DEVICE_TIMEOUT` when shorter (a camera must not be overdue by the
    /// time its commands go).
    fn release_delay(&self, camera: u64) -> Duration {
        let mut delay = RELEASE_DELAY.min(self.settings.device_timeout / 2);
        if let Some(i) = self.hold.seen.interval(camera) {
            delay = delay.min(i / 2);
        }
        delay
    }

    /// A heartbeat after the broker took a command that restarts the
    /// camera confirms it, whatever the heartbeat says: the restart (an
    /// early heartbeat, a reboot, a long absence) is its expected end, and
    /// a heartbeat on time shows the camera never left. Newer commands then
    /// go once the camera can take them.
    fn confirm_serial(
        &mut self,
        camera: u64,
        at: Instant,
        margin: Duration,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let newest = q
            .sent
            .iter()
            .copied()
            .filter(|s| {
                self.hold
                    .sent
                    .get(s)
                    .is_some_and(|x| x.serial && at >= x.published + margin)
            })
            .max();
        if let Some(seq) = newest {
            self.confirm_up_to(camera, seq, now, out);
        }
    }

    /// A regular heartbeat: each command sent long enough before it counts
    /// it; the second confirms it.
    fn count_regular(
        &mut self,
        camera: u64,
        at: Instant,
        margin: Duration,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let mut newest_confirmed = None;
        for seq in q.sent.iter().copied().collect::<Vec<_>>() {
            let Some(sent) = self.hold.sent.get_mut(&seq) else {
                continue;
            };
            if at < sent.published + margin {
                continue;
            }
            sent.regular = sent.regular.saturating_add(1);
            if sent.regular >= CONFIRMING_BEATS {
                newest_confirmed = Some(seq);
            }
        }
        if let Some(seq) = newest_confirmed {
            self.confirm_up_to(camera, seq, now, out);
        }
    }

    /// `seq` is confirmed at its camera, and so is every command sent
    /// before it on the same topic (one subscription delivers in order).
    fn confirm_up_to(&mut self, camera: u64, seq: u64, now: Now, out: &mut Vec<Action>) {
        let Some(topic) = self.hold.sent.get(&seq).map(|s| s.job.topic.clone()) else {
            return;
        };
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let done: Vec<u64> = q
            .sent
            .range(..=seq)
            .copied()
            .filter(|s| self.hold.sent.get(s).is_some_and(|x| x.job.topic == topic))
            .collect();
        for s in done {
            if let Some(sent) = self.hold.remove_sent(s) {
                self.confirmed(s, sent, now, out);
            }
        }
    }

    fn confirmed(&mut self, seq: u64, sent: Sent, now: Now, out: &mut Vec<Action>) {
        let mut job = sent.job;
        out.push(Action::Count(Count::Confirmed));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let after = now
            .mono
            .saturating_duration_since(sent.published)
            .as_millis();
        self.log(out, Level::Debug, || {
            format!(
                "camera {} had {} for unit {} id {} ({after} ms after the broker took it)",
                job.camera.as_deref().unwrap_or_default(),
                job.kind.as_str(),
                job.unit,
                job.id.as_deref().unwrap_or("-"),
            )
        });
        if let Some(reply) = job.reply.take() {
            let line = outbox::camera_line(
                "delivered",
                job.kind.as_str(),
                &job.unit,
                job.id.as_deref(),
                job.camera.as_deref().unwrap_or_default(),
                None,
            );
            out.push(Action::Done {
                reply,
                line: Some(line),
            });
        }
    }

    /// A device reply on `unit`: the oldest SCS or UDS sent to it is confirmed.
    fn replied(&mut self, unit: &str, now: Now, out: &mut Vec<Action>) {
        let asked = self.hold.sent.iter().find(|(_, s)| {
            s.job.unit == unit && matches!(s.job.kind, CommandType::Scs | CommandType::Uds)
        });
        let Some((&seq, sent)) = asked else {
            return;
        };
        let camera = sent.camera;
        self.confirm_up_to(camera, seq, now, out);
        self.hold.tidy(camera);
    }

    /// The camera may have missed what was sent to it (before `before`,
    /// when given): those commands are held again, to go first once it
    /// can take them.
    fn resend(
        &mut self,
        camera: u64,
        before: Option<Instant>,
        reason: &'static str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let name = q.camera.clone();
        let again: Vec<u64> = q
            .sent
            .iter()
            .copied()
            .filter(|s| {
                self.hold
                    .sent
                    .get(s)
                    .is_some_and(|x| before.is_none_or(|b| x.published < b))
            })
            .collect();
        if again.is_empty() {
            return;
        }
        let n = again.len();
        for seq in again {
            let Some(sent) = self.hold.remove_sent(seq) else {
                continue;
            };
            let job = sent.job;
            out.push(Action::Count(Count::Resent(reason)));
            if let Some(r) = job.reply.as_ref().filter(|r| r.camera_lines) {
                out.push(Action::Line {
                    conn: r.conn,
                    line: outbox::camera_line(
                        "resent",
                        job.kind.as_str(),
                        &job.unit,
                        job.id.as_deref(),
                        job.camera.as_deref().unwrap_or_default(),
                        Some(reason),
                    ),
                });
            }
            self.hold(seq, job, (camera, &name), Why::Releasing, now, out);
        }
        if Level::Info <= self.settings.log_level {
            out.push(Action::LogLimited(
                Kind::ResentCommands,
                Level::Info,
                format!(
                    "camera {name} may have missed {n} commands ({}): publishing them again, oldest first",
                    reason_says(reason)
                ),
            ));
        }
    }

    /// Sets the camera's next timer: its release, the end of its serial
    /// wait, its oldest never-seen command's wait, or its going offline
    /// while commands are sent to it.
    fn reschedule(&mut self, camera: u64, now: Instant) {
        let timeout = self.settings.device_timeout;
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let mut next = [
            q.release_at,
            q.gate.map(|g| g.until),
            q.held
                .iter()
                .filter_map(|s| self.hold.held.get(s)?.unseen_until)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let present = self.hold.seen.state(camera, timeout, now) == Some(State::Present);
        if present && (!q.sent.is_empty() || q.gate.is_some()) {
            let offline = self.hold.seen.offline_at(camera, timeout);
            next = next.into_iter().chain(offline).min();
        }
        if present && q.release_at.is_none() && q.gate.is_none() && !q.held.is_empty() {
            // Present with nothing in the way: its commands go now.
            next = Some(now);
        }
        let old = q.timer;
        if old == next {
            return;
        }
        if let Some(at) = old {
            self.hold.timers.remove(&(at, camera));
        }
        if let Some(at) = next {
            self.hold.timers.insert((at, camera));
        }
        if let Some(q) = self.hold.queues.get_mut(&camera) {
            q.timer = next;
        }
    }

    /// The timers due: releases, serial timeouts, never-seen waits, and
    /// cameras gone offline with commands sent to them.
    pub(super) fn camera_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        // Each camera due is seen once a turn: one whose timer is still due
        // afterwards waits for the next turn rather than spin here.
        let due: Vec<(Instant, u64)> = self
            .hold
            .timers
            .range(..=(now.mono, u64::MAX))
            .copied()
            .collect();
        for (at, camera) in due {
            self.hold.timers.remove(&(at, camera));
            if let Some(q) = self.hold.queues.get_mut(&camera) {
                q.timer = None;
            }
            self.camera_due(camera, now, out);
            self.reschedule(camera, now.mono);
            self.hold.tidy(camera);
        }
    }

    fn camera_due(&mut self, camera: u64, now: Now, out: &mut Vec<Action>) {
        let timeout = self.settings.device_timeout;
        let state = self.hold.seen.state(camera, timeout, now.mono);
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let (name, gate) = (q.camera.clone(), q.gate);
        if let Some(gate) = gate.filter(|g| g.until <= now.mono) {
            self.serial_timed_out(camera, &name, gate, out);
        }
        if state == Some(State::Offline) {
            self.went_offline(camera, now, out);
        }
        if state.is_none() {
            self.unseen_waited(camera, now, out);
        }
        // A release that came due goes whether or not the camera is still
        // judged present: its heartbeat proved it there, and nothing since
        // (a reboot, a lost link) said otherwise.
        let q = self.hold.queues.get(&camera);
        let released = q.is_some_and(|q| q.release_at.is_some_and(|r| r <= now.mono));
        let free = q.is_some_and(|q| q.release_at.is_none() && q.gate.is_none());
        let gated = q.is_some_and(|q| q.gate.is_some());
        if released && !self.hold.seen.seen_live(camera) {
            // Gone again since (a reboot): its next heartbeat releases them.
            if let Some(q) = self.hold.queues.get_mut(&camera) {
                q.release_at = None;
            }
        } else if !gated && (released || (free && state == Some(State::Present))) {
            self.release(camera, out);
        }
    }

    fn serial_timed_out(&mut self, camera: u64, name: &str, gate: Gate, out: &mut Vec<Action>) {
        if let Some(q) = self.hold.queues.get_mut(&camera) {
            q.gate = None;
        }
        out.push(Action::Count(Count::SerialTimeout));
        let what = self
            .hold
            .sent
            .get(&gate.seq)
            .map(|s| format!("{} for unit {}", s.job.kind.as_str(), s.job.unit))
            .unwrap_or_else(|| "its last command that restarts it".to_string());
        let secs = self.settings.serial_timeout.as_secs();
        self.log(out, Level::Warn, || {
            format!(
                "camera {name} sent no heartbeat within SERIAL_TIMEOUT ({secs} s) after {what}: \
                 its newer commands go now"
            )
        });
    }

    /// Silent for `DEVICE_TIMEOUT` with commands sent to it: they go again
    /// once it is back.
    fn went_offline(&mut self, camera: u64, now: Now, out: &mut Vec<Action>) {
        let Some(q) = self.hold.queues.get_mut(&camera) else {
            return;
        };
        q.gate = None;
        q.release_at = None;
        self.resend(camera, None, "offline", now, out);
    }

    /// A camera still never seen: its commands past `UNSEEN_WAIT` go
    /// anyway, as commands for an untracked camera.
    fn unseen_waited(&mut self, camera: u64, now: Now, out: &mut Vec<Action>) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let due: Vec<u64> = q
            .held
            .iter()
            .copied()
            .filter(|s| {
                self.hold
                    .held
                    .get(s)
                    .and_then(|h| h.unseen_until)
                    .is_some_and(|u| u <= now.mono)
            })
            .collect();
        let name = q.camera.clone();
        let n = due.len();
        for seq in due {
            if let Some(held) = self.hold.remove_held(seq) {
                let mut job = held.job;
                job.camera = None;
                self.ledger.restore(seq, job);
            }
        }
        if n > 0 {
            let wait = self.settings.unseen_wait.as_secs();
            self.log(out, Level::Warn, || {
                format!(
                    "camera {name} sent no heartbeat within UNSEEN_WAIT ({wait} s): publishing its \
                     {n} commands anyway (nothing confirms them)"
                )
            });
        }
    }

    /// The camera can take its held commands: they join the ledger at
    /// their places, oldest first (the write sees to a command that
    /// restarts it).
    fn release(&mut self, camera: u64, out: &mut Vec<Action>) {
        let Some(q) = self.hold.queues.get_mut(&camera) else {
            return;
        };
        q.release_at = None;
        let seqs: Vec<u64> = q.held.iter().copied().collect();
        let name = q.camera.clone();
        let mut released = 0;
        for seq in seqs {
            if let Some(held) = self.hold.remove_held(seq) {
                self.ledger.restore(seq, held.job);
                released += 1;
            }
        }
        if released > 0 && Level::Info <= self.settings.log_level {
            out.push(Action::LogLimited(
                Kind::ReleasedCommands,
                Level::Info,
                format!("camera {name} is present: releasing its {released} held commands, oldest first"),
            ));
        }
    }

    /// Drops held and sent commands whose lifetime ran out.
    pub(super) fn expire_held(&mut self, now: Now, out: &mut Vec<Action>) {
        while let Some(&(at, seq)) = self.hold.expiry.first() {
            if at > now.mono {
                return;
            }
            self.hold.expiry.remove(&(at, seq));
            if let Some(held) = self.hold.remove_held(seq) {
                let camera = held.camera;
                self.expire_held_one(seq, held.job, now, out);
                self.hold.tidy(camera);
            } else if let Some(sent) = self.hold.remove_sent(seq) {
                let camera = sent.camera;
                self.expire_sent(seq, sent.job, now, out);
                self.hold.tidy(camera);
            }
        }
    }

    fn expire_held_one(&mut self, seq: u64, mut job: Accepted, now: Now, out: &mut Vec<Action>) {
        out.push(Action::Count(Count::ExpiredHeld));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let age = now.mono.saturating_duration_since(job.received).as_secs();
        let kind = job.kind.as_str();
        let ttl = self
            .settings
            .lifetimes
            .ttl_for(job.kind)
            .unwrap_or_default()
            .as_secs();
        let camera = job.camera.clone().unwrap_or_default();
        let which = self.settings.lifetimes.ttl_key(job.kind);
        self.log(out, Level::Warn, || {
            format!(
                "expired {kind} for unit {} after {age} s held for camera {camera}, which was not \
                 there ({which} {ttl} s): not published",
                job.unit,
            )
        });
        let error = format!(
            "expired after {age} s waiting for camera {camera:?} to come online ({which} {ttl} s)"
        );
        report(&mut job, Some(&error), out);
    }

    /// A sent command's lifetime ran out before its camera confirmed it.
    fn expire_sent(&mut self, seq: u64, mut job: Accepted, now: Now, out: &mut Vec<Action>) {
        out.push(Action::Count(Count::ExpiredUnconfirmed));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let age = now.mono.saturating_duration_since(job.received).as_secs();
        let kind = job.kind.as_str();
        let ttl = self
            .settings
            .lifetimes
            .ttl_for(job.kind)
            .unwrap_or_default()
            .as_secs();
        let camera = job.camera.clone().unwrap_or_default();
        let which = self.settings.lifetimes.ttl_key(job.kind);
        self.log(out, Level::Warn, || {
            format!(
                "expired {kind} for unit {} after {age} s: published, but camera {camera} never \
                 confirmed it ({which} {ttl} s)",
                job.unit,
            )
        });
        // Only where a `delivered` line was promised does an error follow an `ok`.
        if job.reply.as_ref().is_some_and(|r| r.camera_lines) {
            let error = format!(
                "expired after {age} s: published, not confirmed by camera {camera:?} ({which} {ttl} s)"
            );
            report(&mut job, Some(&error), out);
        }
    }

    /// A reload changed the lifetimes: every held and sent command's
    /// expiry is taken again from them.
    pub(super) fn lifetimes_changed(&mut self) {
        let mut expiry = BTreeSet::new();
        let settings = &self.settings;
        let expires = |job: &Accepted| {
            settings
                .lifetimes
                .ttl_for(job.kind)
                .and_then(|ttl| job.received.checked_add(ttl))
        };
        for (seq, h) in self.hold.held.iter_mut() {
            h.expires = expires(&h.job);
            if let Some(at) = h.expires {
                expiry.insert((at, *seq));
            }
        }
        for (seq, s) in self.hold.sent.iter_mut() {
            s.expires = expires(&s.job);
            if let Some(at) = s.expires {
                expiry.insert((at, *seq));
            }
        }
        self.hold.expiry = expiry;
    }

    /// At a stop: what becomes of the commands still held or unconfirmed.
    pub(super) fn held_at_close(&self, out: &mut Vec<Action>) {
        let n = self.hold.len() + self.hold.unconfirmed();
        if n == 0 {
            return;
        }
        let path = self.spool_path();
        match &self.spool {
            Durability::Writing => self.log(out, Level::Info, || {
                format!(
                    "{n} commands held for cameras or not yet confirmed by them stay in the spool \
                     {path} until their cameras take them"
                )
            }),
            Durability::Failing { .. } => self.log(out, Level::Error, || {
                format!(
                    "{n} commands held for cameras or not yet confirmed by them are lost: the \
                     spool {path} cannot be written"
                )
            }),
            Durability::Off => self.log(out, Level::Error, || {
                format!("{n} commands held for cameras or not yet confirmed by them are lost (no SPOOL_FILE)")
            }),
        }
    }

    /// Commands held for cameras.
    pub fn held(&self) -> usize {
        self.hold.len()
    }

    /// Commands the broker took that their cameras have not confirmed yet.
    pub fn unconfirmed(&self) -> usize {
        self.hold.unconfirmed()
    }

    /// Payload bytes of the commands held or unconfirmed.
    pub fn held_bytes(&self) -> usize {
        self.hold.bytes()
    }

    /// Moves whenever what is held changes.
    pub fn hold_changes(&self) -> u64 {
        self.hold.changes
    }

    /// Each camera's held and unconfirmed commands, the longest waiting first.
    pub fn held_by_camera(&self, now: Instant) -> Vec<HeldFor> {
        self.hold.by_camera(self.settings.device_timeout, now)
    }

    /// When the next held or sent command expires, or a camera's timer is due.
    pub(super) fn next_expiry(&self, now: Now) -> Option<Duration> {
        let expiry = self.hold.expiry.first().map(|(at, _)| *at);
        let timer = self.hold.timers.first().map(|(at, _)| *at);
        let next = expiry.into_iter().chain(timer).min()?;
        Some(next.saturating_duration_since(now.mono))
    }
}

fn reason_says(reason: &str) -> &'static str {
    match reason {
        "reconnect" => "it reconnected: a heartbeat came early",
        "absence" => "it was away: a heartbeat came after a long gap",
        "reboot" => "it restarted: its timestamp went backwards",
        "offline" => "it went offline",
        _ => "the relay lost sight of it",
    }
}

/// What an operator asked (`protocol::control`), answered with lines to
/// `to`: the relay's side of `ms500-relay held` and `cancel`.
impl Delivery {
    pub(super) fn operator(
        &mut self,
        request: Control,
        conn: u64,
        by: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        match request {
            Control::Held { camera } => self.list_held(camera.as_deref(), conn, now, out),
            Control::Cancel { camera, types } => {
                self.cancel(&camera, &types, conn, by, now, out);
            }
        }
        out.push(Action::Answered { conn });
    }

    /// One line per command held or unconfirmed (for `camera`, or all),
    /// camera by camera, then a closing line with the totals.
    fn list_held(&self, camera: Option<&str>, conn: u64, now: Now, out: &mut Vec<Action>) {
        let timeout = self.settings.device_timeout;
        let only = camera.map(|c| self.hold.seen.fingerprint(&c.to_ascii_lowercase()));
        let mut queues: Vec<(&u64, &Queue)> = self
            .hold
            .queues
            .iter()
            .filter(|(fp, _)| only.is_none_or(|o| o == **fp))
            .collect();
        queues.sort_by(|a, b| a.1.camera.cmp(&b.1.camera));
        let (mut held, mut unconfirmed) = (0, 0);
        for (fp, q) in &queues {
            let state = self
                .hold
                .seen
                .state(**fp, timeout, now.mono)
                .map_or("unknown", State::as_str);
            let waiting = q
                .held
                .iter()
                .filter_map(|s| Some((*s, &self.hold.held.get(s)?.job, "held")));
            let sent = q
                .sent
                .iter()
                .filter_map(|s| Some((*s, &self.hold.sent.get(s)?.job, "unconfirmed")));
            for (_, job, how) in waiting.chain(sent) {
                if how == "held" {
                    held += 1;
                } else {
                    unconfirmed += 1;
                }
                let line = self.held_line(job, state, how, now);
                out.push(Action::Line { conn, line });
            }
        }
        let end = ordered(&[
            ("control", "held".into()),
            ("done", true.into()),
            ("held", held.into()),
            ("unconfirmed", unconfirmed.into()),
            ("cameras", queues.len().into()),
        ]);
        out.push(Action::Line { conn, line: end });
    }

    /// `{"control":"held",…}`: one command as `ms500-relay held` shows it.
    fn held_line(&self, job: &Accepted, state: &str, how: &str, now: Now) -> Vec<u8> {
        let age = now.mono.saturating_duration_since(job.received).as_secs();
        let left = self
            .expires(job)
            .map(|at| at.saturating_duration_since(now.mono).as_secs());
        let id: Option<serde_json::Value> = job
            .id
            .as_deref()
            .and_then(|id| serde_json::from_str(id).ok());
        let from = job.peer.map_or("spool".to_string(), |p| p.to_string());
        ordered(&[
            ("control", "held".into()),
            ("camera", job.camera.clone().into()),
            ("state", state.into()),
            ("waiting", how.into()),
            ("type", job.kind.as_str().into()),
            ("unit", job.unit.clone().into()),
            ("id", id.into()),
            ("age_s", age.into()),
            ("bytes", job.payload.len().into()),
            ("lifetime_left_s", left.into()),
            ("from", from.into()),
        ])
    }

    /// Drops what is held or unconfirmed for `camera` (of `types`, when
    /// named): never published (again), `D` in the spool, an error line to
    /// its connection when still open, a log line; the operator gets a line
    /// per command and one with the count.
    fn cancel(
        &mut self,
        camera: &str,
        types: &[CommandType],
        conn: u64,
        by: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let fp = self.hold.seen.fingerprint(&camera.to_ascii_lowercase());
        let seqs: Vec<u64> = self
            .hold
            .queues
            .get(&fp)
            .map(|q| q.held.iter().chain(q.sent.iter()).copied().collect())
            .unwrap_or_default();
        let mut cancelled = 0;
        for seq in seqs {
            let wanted = |job: &Accepted| types.is_empty() || types.contains(&job.kind);
            let (job, was) = if self.hold.held.get(&seq).is_some_and(|h| wanted(&h.job)) {
                match self.hold.remove_held(seq) {
                    Some(h) => (h.job, "held"),
                    None => continue,
                }
            } else if self.hold.sent.get(&seq).is_some_and(|s| wanted(&s.job)) {
                match self.hold.remove_sent(seq) {
                    Some(s) => (s.job, "unconfirmed"),
                    None => continue,
                }
            } else {
                continue;
            };
            cancelled += 1;
            self.cancelled(seq, job, was, conn, by, out);
        }
        self.reschedule(fp, now.mono);
        self.hold.tidy(fp);
        let end = ordered(&[
            ("control", "cancel".into()),
            ("done", true.into()),
            ("camera", camera.into()),
            ("cancelled", cancelled.into()),
        ]);
        out.push(Action::Line { conn, line: end });
    }

    fn cancelled(
        &mut self,
        seq: u64,
        mut job: Accepted,
        was: &'static str,
        conn: u64,
        by: &str,
        out: &mut Vec<Action>,
    ) {
        if !job.published {
            out.push(Action::Count(Count::Cancelled));
        }
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let camera = job.camera.clone().unwrap_or_default();
        self.log(out, Level::Info, || {
            format!(
                "cancelled {} for unit {} id {} for camera {camera} ({was}) by the operator ({by})",
                job.kind.as_str(),
                job.unit,
                job.id.as_deref().unwrap_or("-")
            )
        });
        let id: Option<serde_json::Value> = job
            .id
            .as_deref()
            .and_then(|id| serde_json::from_str(id).ok());
        let line = ordered(&[
            ("control", "cancel".into()),
            ("camera", camera.into()),
            ("was", was.into()),
            ("type", job.kind.as_str().into()),
            ("unit", job.unit.clone().into()),
            ("id", id.into()),
        ]);
        out.push(Action::Line { conn, line });
        report(&mut job, Some("cancelled by the operator"), out);
    }
}

/// A JSON object line with its members in this order (as PROTOCOL.md
/// §1.4 shows them).
fn ordered(members: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut line = b"{".to_vec();
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        // Writing JSON to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut line, key);
        line.push(b':');
        let _ = serde_json::to_writer(&mut line, value);
    }
    line.push(b'}');
    line
}
