//! The one way the relay takes a mutex ([`lock`]), and the [`Bell`] that
//! wakes a thread sleeping until its next deadline when something it shows
//! changed meanwhile. Used by every thread.

use std::sync::{Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};

/// A wake-up for one sleeping thread: rung any number of times, it is
/// heard once (a channel of one empty message); ringing never blocks.
#[derive(Debug)]
pub struct Bell {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for Bell {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Bell { tx, rx }
    }
}

impl Bell {
    pub fn ring(&self) {
        let _ = self.tx.try_send(());
    }

    /// Ready once rung, for `select!`.
    pub fn heard(&self) -> &Receiver<()> {
        &self.rx
    }
}

/// Takes `mutex` as it is, poisoned or not. The release build aborts on
/// panic, so no lock is ever poisoned there; under `cargo test` a test that
/// panicked holding one must not turn every later lock into a second panic.
/// Every lock guards data that stays consistent between statements
/// (counters, maps, queues of whole lines).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
