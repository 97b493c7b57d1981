//! Part of the delivery policy (publisher thread, no I/O): the write window
//! and hold, acknowledgements, resend after a lost link (with the "again"
//! copies), expiry, and [`report`], the one place a command's last status line
//! is decided.

use std::time::Duration;

use log::Level;

use super::{
    Action, Awaiting, Count, Delivery, Durability, Now, SpoolOp, WriteError, AGAIN_WITHIN,
    MAX_HOLD, MIN_WRITE, WINDOW,
};
use crate::delivery::item::Accepted;
use crate::mqtt::codec;

impl Delivery {
    /// Writes due commands to the broker while the window has room: every
    /// one that is ready, encoded into one buffer and written at once.
    /// Commands past their TTL are dropped on the way.
    pub(super) fn write_due(&mut self, now: Now, out: &mut Vec<Action>) {
        if !self.connected || !self.worth_writing(now) {
            return;
        }
        let mut packets = Vec::new();
        let mut qos0 = Vec::new();
        let mut confirmed = Vec::new();
        while let Some((seq, job)) = self.ledger.next_due() {
            let kind = job.kind;
            let ttl = self.settings.lifetimes.ttl_for(kind);
            if let Some(ttl) =
                ttl.filter(|ttl| now.mono.saturating_duration_since(job.received) > *ttl)
            {
                if let Some(job) = self.ledger.remove(seq) {
                    self.expire(seq, job, ttl, now, out);
                }
                continue;
            }
            // Its camera cannot take it now (gone while it was queued, or
            // behind a command that restarts it): published, it would be
            // lost at the broker.
            let camera = self.tracked(job);
            if let Some((fp, name)) = camera.as_ref() {
                if let Some(why) = self.gate(*fp, now.mono) {
                    if let Some(job) = self.ledger.remove(seq) {
                        self.hold_queued(seq, job, (*fp, name), why, now, out);
                    }
                    continue;
                }
            }
            let pkid = if self.settings.qos1 {
                Some(self.ledger.mark_sent(seq))
            } else {
                self.ledger.mark_written(seq);
                qos0.push(seq);
                None
            };
            if !self.encode(seq, pkid, &mut packets, out) {
                qos0.retain(|s| *s != seq);
                continue;
            }
            if pkid.is_some() {
                self.written_at.push_back((now.mono, seq));
            }
            if let Some((fp, name)) = camera {
                self.open_gate(seq, kind, (fp, &name), now);
            }
            if self.unaccepted.remove(&seq) {
                confirmed.push(seq);
            }
        }
        if packets.is_empty() {
            return;
        }
        // Written at once: accepted (they were read while the spool failed).
        // The log comes before the write: whoever sees a command arrive
        // finds its "accepted" line already there.
        self.log_accepted(confirmed, out);
        out.push(Action::Write(packets));
        self.awaiting = Some(Awaiting::Write { qos0 });
    }

    /// Appends the PUBLISH of `seq` (just marked written) to `packets`;
    /// false when it cannot go: it is then dropped with its reason, never
    /// retried ahead of the others.
    fn encode(
        &mut self,
        seq: u64,
        pkid: Option<u16>,
        packets: &mut Vec<u8>,
        out: &mut Vec<Action>,
    ) -> bool {
        let job = self
            .ledger
            .get(seq)
            .expect("a command just written is queued");
        let start = packets.len();
        // check-config bounds topics and payloads, so encoding cannot fail;
        // if it did, the command is dropped with its reason, not retried.
        let failed = match codec::publish(packets, &job.topic, pkid, false, &job.payload) {
            Err(e) => Err(e.to_string()),
            Ok(()) => match self.packet_limit() {
                Some((limit, said_by)) if packets.len() - start > limit => Ok(format!(
                    "its PUBLISH is {} bytes, more than the broker takes ({said_by} {limit})",
                    packets.len() - start
                )),
                _ => return true,
            },
        };
        packets.truncate(start);
        if let Some(job) = self.ledger.drop_unsendable(seq) {
            match failed {
                Err(e) => self.unsendable(seq, job, &e, out),
                Ok(too_large) => self.set_aside(seq, job, &too_large, out),
            }
        }
        false
    }

    /// The largest PUBLISH the broker takes, when known, and who said so:
    /// the smaller of `MQTT_MAX_PACKET_BYTES` and what the broker announced.
    fn packet_limit(&self) -> Option<(usize, &'static str)> {
        let configured = self
            .settings
            .max_packet
            .map(|l| (l, "MQTT_MAX_PACKET_BYTES"));
        let announced = self
            .broker_limit
            .map(|l| (l, "the broker's Maximum Packet Size"));
        match (configured, announced) {
            (Some(c), Some(a)) => Some(if a.0 < c.0 { a } else { c }),
            (c, a) => c.or(a),
        }
    }

    /// Each command written has `puback_within` (2 × `MQTT_KEEPALIVE`) to be
    /// acknowledged, whatever other PUBACKs arrive: the oldest one overdue
    /// drops the connection, and everything unacknowledged is published
    /// again on the next.
    pub(super) fn overdue(&mut self, now: Now, out: &mut Vec<Action>) {
        if !self.connected {
            return;
        }
        while let Some(&(at, seq)) = self.written_at.front() {
            if !self.ledger.is_in_flight(seq) {
                self.written_at.pop_front();
                continue;
            }
            let within = self.settings.puback_within;
            if now.mono.saturating_duration_since(at) <= within {
                return;
            }
            let what = self
                .ledger
                .get(seq)
                .map(|job| format!("{} for unit {}", job.kind.as_str(), job.unit))
                .unwrap_or_default();
            let why = format!(
                "no PUBACK for {what} within {} s (2 × MQTT_KEEPALIVE)",
                within.as_secs()
            );
            self.log(out, Level::Warn, || {
                format!("{why}: dropping the connection to publish it again")
            });
            out.push(Action::DropLink(why));
            self.lose_wire();
            self.written_at.clear();
            return;
        }
    }

    /// Whether to write now (see [`MIN_WRITE`]): always when nothing is in
    /// flight or all that is ready fits in the window; under load once
    /// `MIN_WRITE` places are free or the write was held for `MAX_HOLD`.
    ///
    /// A write is held only while there is room to write into (`free > 0`):
    /// with the window full (or the link down, which empties it and sets
    /// nothing due) there is nothing to hold, and no timer runs.
    fn worth_writing(&mut self, now: Now) -> bool {
        let free = self.ledger.window_free();
        let unsent = self.ledger.unsent();
        if free == 0 {
            self.held_since = None;
            return false;
        }
        if !self.settings.qos1
            || self.ledger.in_flight() == 0
            || free >= MIN_WRITE
            || unsent <= free
        {
            self.held_since = None;
            return true;
        }
        let since = *self.held_since.get_or_insert(now.mono);
        if now.mono.saturating_duration_since(since) >= MAX_HOLD {
            self.held_since = None;
            return true;
        }
        false
    }

    /// The answer to a write: with QoS 0, written is delivered; a failed
    /// write loses the connection (the publish link reports it down too, and
    /// what was written stays unacknowledged and goes out again).
    pub(super) fn written(
        &mut self,
        result: Result<(), WriteError>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        match (self.awaiting.take(), result) {
            (Some(Awaiting::Write { qos0 }), Ok(())) => {
                for seq in qos0 {
                    if let Some(job) = self.ledger.remove(seq) {
                        self.delivered(seq, job, now, out);
                    }
                }
            }
            (Some(Awaiting::Write { .. }), Err(e)) => {
                self.log(out, Level::Debug, || {
                    format!("write to the broker failed: {e}")
                });
                self.lose_wire();
            }
            (Some(Awaiting::Bye), Ok(())) => {
                self.log(out, Level::Info, || "disconnected from broker".to_string())
            }
            (Some(Awaiting::Bye), Err(_)) => {}
            (awaiting, _) => self.awaiting = awaiting,
        }
    }

    /// The connection is gone, and with it any write held for its window.
    pub(super) fn lose_wire(&mut self) {
        self.connected = false;
        self.held_since = None;
    }

    pub(super) fn link_up(&mut self, out: &mut Vec<Action>) {
        let queued = self.ledger.len();
        self.log(out, Level::Debug, || {
            format!("link up: {queued} queued, written again from the oldest")
        });
        self.connected = true;
        self.written_at.clear();
        self.ledger.on_link_up();
    }

    pub(super) fn link_down(&mut self, now: Now, out: &mut Vec<Action>) {
        let (queued, in_flight) = (self.ledger.len(), self.ledger.in_flight());
        self.log(out, Level::Debug, || {
            format!("link down: {queued} queued, {in_flight} were in flight")
        });
        let first = self.ledger.oldest_in_flight();
        self.lose_wire();
        // The broker may have restarted: its cameras are away until their
        // heartbeats say otherwise.
        self.lose_sight();
        self.ledger.on_link_lost();
        self.written_at.clear();
        self.strike(first, out);
        self.again(now, out);
    }

    /// The connection was closed as planned (a move back to the first
    /// broker): no break, so nothing acknowledged is published again.
    pub(super) fn link_closed(&mut self, out: &mut Vec<Action>) {
        let in_flight = self.ledger.in_flight();
        self.log(out, Level::Debug, || {
            format!("link closed as planned: {in_flight} were still in flight")
        });
        self.lose_wire();
        self.ledger.on_link_lost();
        self.written_at.clear();
    }

    /// The link broke with `first` the oldest command unacknowledged: the
    /// second break in a row with the same one sets it aside (a broker
    /// that closes the connection over a command it cannot take, too large
    /// for it, would otherwise get it first on every connection, forever).
    fn strike(&mut self, first: Option<u64>, out: &mut Vec<Action>) {
        let Some(seq) = first.filter(|_| !self.closing) else {
            self.breaks = None;
            return;
        };
        let breaks = match self.breaks {
            Some((s, n)) if s == seq => n + 1,
            _ => 1,
        };
        if breaks < 2 {
            self.breaks = Some((seq, breaks));
            return;
        }
        self.breaks = None;
        let Some(job) = self.ledger.remove(seq) else {
            return;
        };
        let mut packet = Vec::new();
        let size = match codec::publish(&mut packet, &job.topic, Some(1), false, &job.payload) {
            Ok(()) => packet.len(),
            Err(_) => job.payload.len(),
        };
        let why = format!(
            "the broker closed the connection twice with it first unacknowledged (its \
             PUBLISH is {size} bytes; the broker's limit is not known: MQTT_MAX_PACKET_BYTES \
             sets it)"
        );
        self.set_aside(seq, job, &why, out);
    }

    /// The connection broke: what its broker acknowledged in the last
    /// [`AGAIN_WITHIN`] goes out again, at its old place in the order.
    fn again(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.closing {
            return;
        }
        self.forget_recent(now);
        let again = self.recent.len();
        for (_, seq, job) in self.recent.drain(..) {
            self.ledger.restore(seq, job);
        }
        self.again_queued += again;
        if again > 0 {
            self.log(out, Level::Info, || {
                format!(
                    "publishing again the {again} commands the broker acknowledged in the last \
                     {} s before the connection broke (it may have died before passing them on)",
                    AGAIN_WITHIN.as_secs()
                )
            });
        }
    }

    pub(super) fn forget_recent(&mut self, now: Now) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| now.mono.saturating_duration_since(*at) > AGAIN_WITHIN)
            || self.recent.len() > WINDOW
        {
            self.recent.pop_front();
        }
    }

    /// The broker took `job` (acknowledged, or written with QoS 0).
    pub(super) fn delivered(
        &mut self,
        seq: u64,
        mut job: Accepted,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if job.again {
            self.again_queued = self.again_queued.saturating_sub(1);
            self.log(out, Level::Debug, || {
                format!(
                    "broker took {} for unit {} again",
                    job.kind.as_str(),
                    job.unit
                )
            });
            return;
        }
        let first = !std::mem::replace(&mut job.published, true);
        if first {
            out.push(Action::Count(Count::Published));
        }
        self.log(out, Level::Debug, || {
            format!(
                "broker took {} for unit {} id {} ({} bytes)",
                job.kind.as_str(),
                job.unit,
                job.id.as_deref().unwrap_or("-"),
                job.payload.len()
            )
        });
        // A command for a camera stays until the camera confirms it.
        let Some(mut job) = self.sent(seq, job, first, now, out) else {
            return;
        };
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        report(&mut job, None, out);
        if self.settings.qos1 {
            job.again = true;
            self.recent.push_back((now.mono, seq, job));
            self.forget_recent(now);
        }
    }

    /// `job` cannot be encoded as a PUBLISH (`why`): dropped, never published.
    fn unsendable(&mut self, seq: u64, mut job: Accepted, why: &str, out: &mut Vec<Action>) {
        self.unaccepted.remove(&seq);
        out.push(Action::Count(Count::Rejected));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        self.log(out, Level::Error, || {
            format!(
                "cannot publish {} for unit {}: {why}; dropped",
                job.kind.as_str(),
                job.unit
            )
        });
        report(&mut job, Some(&format!("cannot be published: {why}")), out);
    }

    /// `job` is more than the broker takes (`why`): dropped, never
    /// published, so that everything behind it flows.
    fn set_aside(&mut self, seq: u64, mut job: Accepted, why: &str, out: &mut Vec<Action>) {
        self.unaccepted.remove(&seq);
        if job.again {
            self.again_queued = self.again_queued.saturating_sub(1);
            return;
        }
        out.push(Action::Count(Count::SetAside));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        self.log(out, Level::Error, || {
            format!(
                "set aside {} for unit {} id {} ({} bytes): {why}; not published",
                job.kind.as_str(),
                job.unit,
                job.id.as_deref().unwrap_or("-"),
                job.payload.len()
            )
        });
        report(&mut job, Some(&format!("set aside: {why}")), out);
    }

    /// `job` waited longer than `ttl`: dropped, never published.
    fn expire(
        &mut self,
        seq: u64,
        mut job: Accepted,
        ttl: Duration,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if job.again {
            self.again_queued = self.again_queued.saturating_sub(1);
            return;
        }
        out.push(Action::Count(Count::Expired));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let age = now.mono.saturating_duration_since(job.received).as_secs();
        let ttl = ttl.as_secs();
        let which = self.settings.lifetimes.ttl_key(job.kind);
        self.log(out, Level::Warn, || {
            format!(
                "expired {} for unit {} after {age} s in the queue ({which} {ttl} s): not published",
                job.kind.as_str(),
                job.unit,
            )
        });
        let error = format!("expired after {age} s ({which} {ttl} s)");
        report(&mut job, Some(&error), out);
    }
}

/// The status line `job` owes its connection, if that wants it (errors
/// always, `ok` only when asked for); its claim on a line ends either way.
pub(super) fn report(job: &mut Accepted, error: Option<&str>, out: &mut Vec<Action>) {
    let Some(reply) = job.reply.take() else {
        return;
    };
    let line = (error.is_some() || reply.ok_lines).then(|| job.status_line(error));
    out.push(Action::Done { reply, line });
}
