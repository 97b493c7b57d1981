//! Part of the delivery policy (publisher thread, no I/O): commands for
//! cameras (PROTOCOL.md §2.7). [`Hold`] keeps those held for their camera
//! and those sent and not yet confirmed, per camera its queue, timers and
//! serial gate; here a command enters it, expires or is shown. What
//! heartbeats do is in `hold/sightings.rs`, timers in `hold/timers.rs`,
//! operators' requests in `hold/operator.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use log::Level;

use super::cadence::State;
use super::seen::Seen;
use super::write::report;
use super::{Action, Count, Delivery, Durability, Now, Settings, SpoolOp};
use crate::delivery::item::Accepted;
use crate::delivery::outbox;
use crate::ops::log_limit::Kind;
use crate::protocol::command::CommandType;

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
    /// Cameras whose queue appeared (true) or went (false) since the last
    /// [`Hold::take_watch_news`], in order.
    watch_news: Vec<(String, bool)>,
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
            watch_news: Vec::new(),
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

    /// The cameras watched and no longer watched since the last call.
    pub fn take_watch_news(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.watch_news)
    }

    fn queue(&mut self, camera: u64, name: &str) -> &mut Queue {
        let news = &mut self.watch_news;
        self.queues.entry(camera).or_insert_with(|| {
            news.push((name.to_string(), true));
            Queue {
                camera: name.to_string(),
                held: BTreeSet::new(),
                sent: BTreeSet::new(),
                release_at: None,
                gate: None,
                timer: None,
            }
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
                self.watch_news.push((q.camera, false));
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
    /// Cameras with commands held or unconfirmed.
    pub fn cameras_with_commands(&self) -> usize {
        self.hold.queues.len()
    }

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

mod operator;
mod sightings;
mod timers;
