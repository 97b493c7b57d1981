//! Part of the delivery policy (publisher thread, no I/O): admission. How
//! many commands the ledger takes, when a batch counts as accepted, and the
//! commands replayed from the spool at start.

use std::ops::Range;
use std::time::Duration;

use log::Level;

use super::seen::Remembered;
use super::{Action, Count, Delivery, Durability, Now, SpoolOp, CONNECTED_BACKLOG, WINDOW};
use crate::delivery::item::Accepted;
use crate::delivery::spool::Replayed;
use crate::ops::time;
use crate::protocol::command;
use crate::protocol::redact;

impl Delivery {
    /// How many commands the ledger may hold now. With the broker connected a
    /// few windows keep it busy, and the backends wait in their sockets (TCP
    /// backpressure); only while it is away does the queue fill up to
    /// `QUEUE_CAPACITY`, so memory is spent on outages, not on bursts.
    ///
    /// While the spool cannot be written, only what can be published at once
    /// (one window, with the broker connected) is taken: nothing waits in
    /// memory alone for a broker that is away.
    pub(super) fn room(&self) -> usize {
        let capacity = self.settings.capacity;
        match (&self.spool, self.ledger.link_up()) {
            (Durability::Failing { .. }, true) => capacity.min(WINDOW),
            (Durability::Failing { .. }, false) => 0,
            (_, true) => capacity.min(CONNECTED_BACKLOG),
            (_, false) => capacity,
        }
    }

    /// Whether the ledger (with `more` commands about to join it) may take
    /// another: within `room` commands and within `QUEUE_MAX_BYTES`.
    pub(super) fn has_room(&self, room: usize, more: usize) -> bool {
        self.ledger.len() + more < room && self.ledger.weight() < self.settings.max_bytes
    }

    /// Takes a batch handed over by a session into `waiting`.
    pub(super) fn wait_for_room(&mut self, jobs: Vec<Accepted>) {
        self.waiting_bytes += jobs.iter().map(|j| j.payload.len()).sum::<usize>();
        self.waiting.extend(jobs);
    }

    /// Admits what waits, oldest first, as far as the room allows (see
    /// [`Delivery::room`]), as one batch: one spool sync. A command for a
    /// camera that cannot take it now is held (or refused) instead, outside
    /// the room, unless nothing can be kept durable now.
    pub(super) fn admit_waiting(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.waiting.is_empty() {
            return;
        }
        let room = self.room();
        let first = self.ledger.next_seq();
        while let Some(job) = self.waiting.front() {
            let camera = self.tracked(job);
            let why = camera.as_ref().and_then(|(fp, _)| self.gate(*fp, now.mono));
            let fits = match why {
                Some(_) => !matches!(self.spool, Durability::Failing { .. }),
                // Queued commands join the ledger at once: its count and
                // weight include those taken so far.
                None => self.has_room(room, 0),
            };
            if !fits {
                break;
            }
            let Some(mut job) = self.waiting.pop_front() else {
                break;
            };
            self.waiting_bytes -= job.payload.len();
            self.log(out, Level::Debug, || {
                format!(
                    "payload of {}: {}",
                    job.kind.as_str(),
                    redact::payload(&job.payload)
                )
            });
            let seq = self.ledger.next_seq();
            match (camera, why) {
                (Some((fp, name)), Some(why)) => {
                    if self.hold_new(seq, job, (fp, &name), why, now, out) {
                        self.ledger.skip_seq();
                    }
                }
                (Some((fp, _)), None) => {
                    // Published at once, and kept until confirmed: the
                    // camera's bounds count it.
                    if self.keep_or_refuse(&mut job, fp, out) {
                        self.ledger.push(job);
                    }
                }
                (None, _) => {
                    self.ledger.push(job);
                }
            }
        }
        let batch = first..self.ledger.next_seq();
        if !batch.is_empty() {
            self.admit(batch, out);
        }
    }

    /// Makes a batch just queued or held durable: spooled and synced first
    /// (when there is a spool), then logged as accepted (see
    /// [`Delivery::batch_settled`]).
    fn admit(&mut self, batch: Range<u64>, out: &mut Vec<Action>) {
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Append(batch.clone())));
            out.push(Action::Spool(SpoolOp::Sync));
            self.awaiting = Some(super::Awaiting::Sync { batch });
            return;
        }
        self.log_accepted(batch, out);
    }

    /// The spool write of `batch` is over (synced, or failed and dealt
    /// with): accepted when it is durable or can be published now.
    pub(super) fn batch_settled(&mut self, batch: Range<u64>, out: &mut Vec<Action>) {
        if !matches!(self.spool, Durability::Writing) && !self.ledger.link_up() {
            // Neither durable nor publishable now: not accepted yet.
            let mut unaccepted: Vec<u64> = self
                .ledger
                .iter_from(batch.start)
                .map(|(seq, _)| seq)
                .take_while(|seq| *seq < batch.end)
                .collect();
            unaccepted.extend(self.hold.range(batch.start, batch.end).map(|(seq, _)| seq));
            let n = unaccepted.len();
            self.log(out, Level::Error, || {
                format!(
                    "{n} commands just read could not be spooled and the broker is away: \
                     they are held in memory, accepted once the spool or the broker takes them"
                )
            });
            self.unaccepted.extend(unaccepted);
            return;
        }
        // Logged only now that they count as accepted (spooled and synced).
        self.log_accepted(batch, out);
    }

    /// The "accepted" line of each command in `seqs` still queued, and
    /// the "held" lines (log and status) of those held.
    pub(super) fn log_accepted(&self, seqs: impl IntoIterator<Item = u64>, out: &mut Vec<Action>) {
        let from = |job: &Accepted| match job.peer {
            Some(peer) => peer.to_string(),
            None => "spool".to_string(),
        };
        for seq in seqs {
            if let Some(held) = self.hold.get(seq) {
                self.announce_held(seq, &from(&held.job), out);
                continue;
            }
            if Level::Info > self.settings.log_level {
                continue;
            }
            let Some(job) = self.ledger.get(seq) else {
                continue;
            };
            let from: &dyn std::fmt::Display = match &job.peer {
                Some(peer) => peer,
                None => &"spool",
            };
            out.push(Action::Log(
                Level::Info,
                format!(
                    "accepted {} for unit {} from {from} -> {}",
                    job.kind.as_str(),
                    job.unit,
                    job.topic
                ),
            ));
        }
    }

    /// Commands read but not yet accepted are accepted now (the spool took them).
    pub(super) fn confirm_all(&mut self, out: &mut Vec<Action>) {
        let seqs = std::mem::take(&mut self.unaccepted);
        self.log_accepted(seqs, out);
    }

    /// Queues the live commands of a recovered spool, oldest first. Ages come
    /// from the wall clock of the run that spooled them; a time that cannot be
    /// right (before this binary was built, or in the future: the clock jumped,
    /// as on a gateway without a real-time clock before and after NTP) gives an
    /// unknown age, and such a command is published rather than expired.
    pub(super) fn replay(&mut self, live: Vec<Replayed>, now: Now, out: &mut Vec<Action>) {
        let mut unknown_age = 0;
        for r in live {
            out.push(Action::Count(Count::Replayed));
            let age = time::age(r.received, now.wall);
            let held = r.held;
            let Some(job) = self.revive(r, age, now, out) else {
                out.push(Action::Count(Count::Rejected));
                continue;
            };
            let kind = job.kind.as_str();
            match (age, self.settings.lifetimes.ttl_for(job.kind)) {
                (Some(age), Some(ttl)) if age > ttl => {
                    out.push(Action::Count(Count::Expired));
                    let which = self.settings.lifetimes.ttl_key(job.kind);
                    self.log(out, Level::Warn, || {
                        format!(
                            "expired {kind} for unit {} after {} s in the spool ({which} {} s): not published",
                            job.unit,
                            age.as_secs(),
                            ttl.as_secs()
                        )
                    });
                }
                (age, _) => {
                    unknown_age += usize::from(age.is_none());
                    self.requeue(job, held, now, out);
                }
            }
        }
        if unknown_age > 0 {
            self.log(out, Level::Warn, || {
                format!(
                    "spool: {unknown_age} commands carry a time that cannot be right (before this \
                     binary was built on {}, or in the future: the clock was wrong when they were \
                     spooled, or is now); their age is unknown, so they are published, not expired",
                    time::iso8601(time::built())
                )
            });
        }
    }

    /// Rebuilds a queued command from its spooled bytes. Type and unit were valid
    /// when it was accepted; a spool edited by hand or a changed config can still
    /// make it unusable, which is logged and skipped. A command of unknown age
    /// is taken as received now (its TTL counts from this start).
    fn revive(
        &self,
        r: Replayed,
        age: Option<Duration>,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Option<Accepted> {
        let presence = self.settings.presence_field.as_deref();
        let (cmd, camera) = match command::validate_with_camera(&r.payload, false, presence) {
            Ok(found) => found,
            Err(rejection) => {
                self.log(out, Level::Warn, || {
                    format!("spool: skipping a command that no longer validates: {rejection}")
                });
                return None;
            }
        };
        let received = age
            .and_then(|age| now.mono.checked_sub(age))
            .unwrap_or(now.mono);
        let topic = self.settings.topic_for(&cmd.unit);
        let mut job = Accepted::new(cmd, topic, received, r.received);
        job.camera = camera;
        Some(job)
    }

    /// Queues a replayed command, or holds it for its camera: after a
    /// start no camera is present until its next live heartbeat, and one
    /// that had a command held (or unconfirmed) counts as known.
    fn requeue(&mut self, mut job: Accepted, held: bool, now: Now, out: &mut Vec<Action>) {
        let Some((fp, camera)) = self.tracked(&job) else {
            self.ledger.push(job);
            return;
        };
        if held && !self.hold.seen.is_known(fp) {
            self.hold.seen.remember(&[Remembered {
                camera: camera.clone(),
                offline: true,
                interval: None,
            }]);
        }
        if !self.keep_or_refuse(&mut job, fp, out) {
            return;
        }
        let Some(why) = self.gate(fp, now.mono) else {
            self.ledger.push(job);
            return;
        };
        // Said before the stop, or to a connection now gone: no line again.
        job.held_line = true;
        let seq = self.ledger.skip_seq();
        self.hold_replayed(seq, job, (fp, &camera), why, now, out);
        self.announce_held(seq, "spool", out);
    }
}
