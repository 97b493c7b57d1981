//! Relay-wide event counters, shared by every thread through an `Arc` and
//! read by the status file. Relaxed atomics: each number is only ever added to.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Counters {
    pub received: AtomicU64,
    pub published: AtomicU64,
    pub rejected: AtomicU64,
    pub expired: AtomicU64,
    pub replies_routed: AtomicU64,
    pub replies_dropped: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
