//! The one way the relay takes a mutex. The release build aborts on panic,
//! so no lock is ever poisoned there; under `cargo test` (unwinding) a test
//! that panicked while holding one must not turn every later lock into a
//! second panic. Every lock guards data that stays consistent between
//! statements (counters, maps, queues of whole lines), so the guard is taken
//! as it is.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
