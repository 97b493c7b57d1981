//! The delivery ledger: the relay's own record of every accepted command until
//! the broker has acknowledged it. Pure bookkeeping, no I/O; owned by the
//! publisher thread and fed the events the MQTT event loop reports.
//!
//! Why it exists: rumqttc silently discards unacknowledged publishes when a
//! reconnect does not keep the session (`../shared/RUMQTTC.md`). So the relay
//! never trusts the client with a command: it hands a copy to rumqttc and keeps
//! the original here until the matching PUBACK arrives, and after every
//! reconnect it hands out again everything still unacknowledged.
//!
//! Correlation is FIFO, as rumqttc works: requests leave the client's queue in
//! the order they were handed over, each producing `Outgoing::Publish(pkid)`;
//! the PUBACK then carries that pkid. `handed` is that queue as seen from here.
//! When the link drops, rumqttc moves what was still queued into its `pending`
//! list, which is then cleared; the event loop counts those (`drained`) so the
//! front of `handed` can be dropped while requests handed after the drop (still
//! in the client's channel, to be sent after the reconnect) keep their place.
//! A command may thus be handed out twice; the first acknowledgement removes it
//! and later ones are ignored: at least once, never lost.

use std::collections::{BTreeMap, HashMap, VecDeque};

pub struct Ledger<T> {
    entries: BTreeMap<u64, T>,
    next_seq: u64,
    /// Entries with a sequence number below this were handed out on the current link.
    cursor: u64,
    /// Handed to the client, no `Outgoing::Publish` seen yet, in order.
    handed: VecDeque<u64>,
    /// Written to the broker, waiting for the PUBACK with this pkid.
    sent: HashMap<u16, u64>,
    window: usize,
    link_up: bool,
}

impl<T> Ledger<T> {
    /// `window` bounds the commands handed to the client and not yet acknowledged;
    /// keep it at or below the client's inflight limit so pkids never collide.
    pub fn new(window: usize) -> Self {
        Ledger {
            entries: BTreeMap::new(),
            next_seq: 0,
            cursor: 0,
            handed: VecDeque::new(),
            sent: HashMap::new(),
            window: window.max(1),
            link_up: false,
        }
    }

    pub fn push(&mut self, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(seq, item);
        seq
    }

    /// The sequence number the next [`Ledger::push`] will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.handed.len() + self.sent.len()
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The next command to hand to the client, when the link is up and the window has room.
    pub fn next_due(&self) -> Option<(u64, &T)> {
        if !self.link_up || self.in_flight() >= self.window {
            return None;
        }
        self.entries
            .range(self.cursor..)
            .next()
            .map(|(s, t)| (*s, t))
    }

    /// The command `seq` (from [`Ledger::next_due`]) was handed to the client.
    pub fn mark_handed(&mut self, seq: u64) {
        self.handed.push_back(seq);
        self.cursor = self.cursor.max(seq + 1);
    }

    /// The command `seq`, while it is queued.
    pub fn get(&self, seq: u64) -> Option<&T> {
        self.entries.get(&seq)
    }

    /// Takes a command out without it being delivered (expired, or given up at shutdown).
    pub fn remove(&mut self, seq: u64) -> Option<T> {
        self.entries.remove(&seq)
    }

    /// `Outgoing::Publish(pkid)`: the oldest handed request was written to the
    /// broker. With QoS 0 (pkid 0) that is delivery, and the command is returned.
    pub fn on_sent(&mut self, pkid: u16) -> Option<(u64, T)> {
        let seq = self.handed.pop_front()?;
        if pkid == 0 {
            return self.entries.remove(&seq).map(|t| (seq, t));
        }
        self.sent.insert(pkid, seq);
        None
    }

    /// PUBACK for `pkid`: returns the command it acknowledges, unless an
    /// earlier copy was acknowledged already.
    pub fn on_acked(&mut self, pkid: u16) -> Option<(u64, T)> {
        let seq = self.sent.remove(&pkid)?;
        self.entries.remove(&seq).map(|t| (seq, t))
    }

    /// The link dropped; `drained` requests were still queued in the client and are gone.
    pub fn on_link_lost(&mut self, drained: usize) {
        self.link_up = false;
        let drained = drained.min(self.handed.len());
        self.handed.drain(..drained);
        self.sent.clear();
    }

    /// Oldest-first view of everything not yet acknowledged.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.iter_from(0)
    }

    /// Those with a sequence number of `first` or later, oldest first.
    pub fn iter_from(&self, first: u64) -> impl Iterator<Item = (u64, &T)> {
        self.entries.range(first..).map(|(s, t)| (*s, t))
    }

    /// A new connection: everything unacknowledged is due again, oldest first.
    pub fn on_link_up(&mut self) {
        self.link_up = true;
        self.cursor = 0;
    }
}

#[cfg(test)]
mod tests;
