//! The delivery ledger: every accepted command, in order, until the broker
//! acknowledged it, with the packet ids it was written under and the payload
//! bytes held (`QUEUE_MAX_BYTES`). Pure bookkeeping, owned by the policy on
//! the publisher thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::mqtt::codec::STATE_PKID;

/// What an entry weighs against the byte budget.
pub trait Weighed {
    fn weight(&self) -> usize;
}

pub struct Ledger<T> {
    entries: BTreeMap<u64, T>,
    next_seq: u64,
    /// Entries not written on the current connection yet, oldest first. A
    /// set rather than a cursor: a command released from the hold comes
    /// back at its old place, behind commands already written.
    due: BTreeSet<u64>,
    /// Written on the current connection, waiting for the PUBACK with this packet id.
    in_flight: HashMap<u16, u64>,
    /// The same, by sequence number, oldest first: asked once per command
    /// acknowledged ([`Ledger::is_in_flight`]), so not a scan of the window.
    flying: BTreeMap<u64, u16>,
    /// The packet id tried next.
    next_pkid: u16,
    window: usize,
    link_up: bool,
    weight: usize,
}

impl<T: Weighed> Ledger<T> {
    /// `window` bounds the commands written and not yet acknowledged.
    pub fn new(window: usize) -> Self {
        Ledger {
            entries: BTreeMap::new(),
            next_seq: 0,
            due: BTreeSet::new(),
            in_flight: HashMap::new(),
            flying: BTreeMap::new(),
            next_pkid: 1,
            window: window.clamp(1, usize::from(u16::MAX)),
            link_up: false,
            weight: 0,
        }
    }

    pub fn push(&mut self, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.weight += item.weight();
        self.entries.insert(seq, item);
        self.due.insert(seq);
        seq
    }

    /// Puts a command back at its old place (`seq`, from an earlier push).
    pub fn restore(&mut self, seq: u64, item: T) {
        self.due.insert(seq);
        self.weight += item.weight();
        if let Some(old) = self.entries.insert(seq, item) {
            self.weight -= old.weight();
        }
    }

    /// Takes the next sequence number for something kept elsewhere (a
    /// command held for an offline camera), to be restored at its place.
    pub fn skip_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
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

    /// Total weight of what is held.
    pub fn weight(&self) -> usize {
        self.weight
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Free places in the window.
    pub fn window_free(&self) -> usize {
        self.window.saturating_sub(self.in_flight.len())
    }

    /// Commands held and not written on the current connection.
    pub fn unsent(&self) -> usize {
        self.due.len()
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The next command to write, when the link is up and the window has room.
    pub fn next_due(&self) -> Option<(u64, &T)> {
        if !self.link_up || self.in_flight.len() >= self.window {
            return None;
        }
        let seq = *self.due.first()?;
        self.entries.get(&seq).map(|t| (seq, t))
    }

    /// Whether `seq` is written on this connection and awaits its PUBACK.
    pub fn is_in_flight(&self, seq: u64) -> bool {
        self.flying.contains_key(&seq)
    }

    /// The oldest command awaiting its PUBACK on this connection.
    pub fn oldest_in_flight(&self) -> Option<u64> {
        self.flying.keys().next().copied()
    }

    /// The command `seq` (from [`Ledger::next_due`]) is written with QoS 1:
    /// its packet id, one no command in flight holds.
    pub fn mark_sent(&mut self, seq: u64) -> u16 {
        let next = |id: u16| match id.checked_add(1) {
            Some(n) if n != STATE_PKID => n,
            _ => 1,
        };
        let mut pkid = self.next_pkid;
        while self.in_flight.contains_key(&pkid) || pkid == STATE_PKID {
            pkid = next(pkid);
        }
        self.next_pkid = next(pkid);
        self.in_flight.insert(pkid, seq);
        self.flying.insert(seq, pkid);
        self.due.remove(&seq);
        pkid
    }

    /// The command `seq` is being written with QoS 0 (no acknowledgement
    /// comes: once the write succeeds, the caller removes it as delivered).
    pub fn mark_written(&mut self, seq: u64) {
        self.due.remove(&seq);
    }

    /// The command `seq`, while it is queued.
    pub fn get(&self, seq: u64) -> Option<&T> {
        self.entries.get(&seq)
    }

    /// Takes a command out without it being delivered (expired).
    pub fn remove(&mut self, seq: u64) -> Option<T> {
        let item = self.entries.remove(&seq)?;
        self.due.remove(&seq);
        self.weight -= item.weight();
        Some(item)
    }

    /// Takes out a command that was just marked sent but cannot be written:
    /// its packet id is free again.
    pub fn drop_unsendable(&mut self, seq: u64) -> Option<T> {
        if let Some(pkid) = self.flying.remove(&seq) {
            self.in_flight.remove(&pkid);
        }
        self.remove(seq)
    }

    /// PUBACK for `pkid`: the command it acknowledges, unless an earlier
    /// copy was acknowledged already or the id is not ours.
    pub fn on_acked(&mut self, pkid: u16) -> Option<(u64, T)> {
        let seq = self.in_flight.remove(&pkid)?;
        self.flying.remove(&seq);
        self.remove(seq).map(|t| (seq, t))
    }

    /// The connection is gone: nothing is in flight any more.
    pub fn on_link_lost(&mut self) {
        self.link_up = false;
        self.in_flight.clear();
        self.flying.clear();
    }

    /// A new connection: everything unacknowledged is due again, oldest first.
    pub fn on_link_up(&mut self) {
        self.link_up = true;
        self.in_flight.clear();
        self.flying.clear();
        self.due = self.entries.keys().copied().collect();
    }

    /// Those with a sequence number of `first` or later, oldest first.
    pub fn iter_from(&self, first: u64) -> impl Iterator<Item = (u64, &T)> {
        self.entries.range(first..).map(|(s, t)| (*s, t))
    }
}

#[cfg(test)]
mod tests;
