//! Relay-wide counters and gauges, shared by every thread through an `Arc`
//! and read by the status file. Relaxed atomics: each is a number on its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Counters {
    /// Set by the publish link on CONNACK, cleared when the link drops.
    pub broker_connected: AtomicBool,
    /// Connections the publish link has made (the first one included).
    pub broker_connections: AtomicU64,
    /// Since when (Unix seconds) the publish link has been down; 0 while up.
    pub broker_down_since_unix: AtomicU64,
    /// Commands received and not yet published, rejected or expired: a
    /// session adds each valid command, the publisher takes it off when the
    /// broker took it or it expired. So received = published + rejected +
    /// expired + queued.
    pub queued: AtomicU64,
    /// Bytes of commands the publisher holds, set by the publisher.
    pub queue_bytes: AtomicU64,
    /// Size of the spool file, set by the publisher (0 without one).
    pub spool_bytes: AtomicU64,
    /// Bumped by the publisher on every turn of its loop (at least once a
    /// second): the status file is only refreshed while it moves.
    pub publisher_turns: AtomicU64,
    pub received: AtomicU64,
    pub published: AtomicU64,
    pub rejected: AtomicU64,
    pub expired: AtomicU64,
    pub replies_routed: AtomicU64,
    pub replies_dropped: AtomicU64,
}

impl Counters {
    /// The publish link is connected (again).
    pub fn link_up(&self) {
        self.broker_connections.fetch_add(1, Ordering::Relaxed);
        self.broker_down_since_unix.store(0, Ordering::Relaxed);
    }

    /// The publish link is down from now on.
    pub fn link_down(&self) {
        self.broker_down_since_unix.store(
            crate::ops::time::unix(std::time::SystemTime::now()),
            Ordering::Relaxed,
        );
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One queued command is done (published or expired).
    pub fn unqueue(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// (name, value) pairs in the order the status file lists them.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("received", get(&self.received)),
            ("published", get(&self.published)),
            ("rejected", get(&self.rejected)),
            ("expired", get(&self.expired)),
            ("replies_routed", get(&self.replies_routed)),
            ("replies_dropped", get(&self.replies_dropped)),
        ]
    }
}
