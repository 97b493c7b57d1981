//! Stop signals shared by every thread: a [`Stop`] is triggered once, and a
//! thread polls it ([`Stop::is_set`]), sleeps on it ([`Stop::sleep`]), waits
//! on its pipe with poll(2) ([`Stop::fd`]) or registers a [`Nudge`] that
//! wakes it its own way. The relay has two: `intake` (set on SIGINT or
//! SIGTERM: stop taking commands) and `link` (set by the publisher once it
//! has flushed or given up: the broker links may end).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// What wakes a thread blocked where a [`Stop`] cannot reach (in rumqttc's
/// event loop); called from the thread that triggers (so it must not block).
pub type Nudge = Arc<dyn Fn() + Send + Sync>;

/// The nudges to call at an event, held weakly: a nudge dropped by its
/// owner (its connection ended) is forgotten.
#[derive(Default)]
pub struct Nudges(Mutex<Vec<Weak<dyn Fn() + Send + Sync>>>);

impl Nudges {
    pub fn add(&self, nudge: &Nudge) {
        let mut nudges = crate::ops::sync::lock(&self.0);
        nudges.retain(|n| n.strong_count() > 0);
        nudges.push(Arc::downgrade(nudge));
    }

    /// Calls every nudge still held (outside the lock).
    pub fn nudge(&self) {
        let live: Vec<Nudge> = crate::ops::sync::lock(&self.0)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for nudge in live {
            nudge();
        }
    }
}

impl std::fmt::Debug for Nudges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nudges")
    }
}

#[derive(Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

struct Inner {
    set: AtomicBool,
    /// When it was first triggered.
    at: OnceLock<Instant>,
    // Dropping the sender wakes every receiver blocked in `sleep`.
    wake_tx: Mutex<Option<Sender<()>>>,
    wake_rx: Receiver<()>,
    /// Made on first use of [`Stop::fd`]: (read end, write end); one byte is
    /// written when triggered and never read, so it stays readable.
    pipe: OnceLock<Option<(OwnedFd, File)>>,
    nudges: Nudges,
}

impl Stop {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Stop {
            inner: Arc::new(Inner {
                set: AtomicBool::new(false),
                at: OnceLock::new(),
                wake_tx: Mutex::new(Some(tx)),
                wake_rx: rx,
                pipe: OnceLock::new(),
                nudges: Nudges::default(),
            }),
        }
    }

    pub fn trigger(&self) {
        let _ = self.inner.at.set(Instant::now());
        self.inner.set.store(true, Ordering::SeqCst);
        if let Ok(mut tx) = self.inner.wake_tx.lock() {
            tx.take();
        }
        self.mark_pipe();
        self.inner.nudges.nudge();
    }

    /// Calls `nudge` when triggered (at once if it was already), for as
    /// long as its owner holds it.
    pub fn nudge_when_triggered(&self, nudge: &Nudge) {
        self.inner.nudges.add(nudge);
        if self.is_set() {
            nudge();
        }
    }

    /// A descriptor that polls readable once triggered (None if no pipe
    /// could be made: the caller then polls with a timeout). A thread that
    /// waits on a socket with poll(2) waits on this too, so an idle backend
    /// connection costs no periodic wake-up.
    pub fn fd(&self) -> Option<RawFd> {
        let pipe = self.inner.pipe.get_or_init(|| {
            let (read, write) = crate::ops::sys::pipe().ok()?;
            Some((read, File::from(write)))
        });
        // Triggered before the pipe existed: mark it now.
        if self.is_set() {
            self.mark_pipe();
        }
        pipe.as_ref().map(|(read, _)| read.as_raw_fd())
    }

    fn mark_pipe(&self) {
        if let Some(Some((_, write))) = self.inner.pipe.get() {
            // &File writes too: the pipe is shared by every clone.
            let _ = (&*write).write(&[1]);
        }
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::SeqCst)
    }

    /// When it was triggered, once it was.
    pub fn triggered_at(&self) -> Option<Instant> {
        self.inner.at.get().copied()
    }

    /// Sleeps for `duration` or until triggered; returns true when triggered.
    pub fn sleep(&self, duration: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        let _ = self.inner.wake_rx.recv_timeout(duration);
        self.is_set()
    }

    /// A receiver that becomes ready (disconnected) when triggered, for `select!`.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.wake_rx
    }
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_nudge_is_called_at_the_trigger_while_its_owner_holds_it() {
        use std::sync::atomic::AtomicUsize;
        let stop = Stop::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let counting = |calls: &Arc<AtomicUsize>| -> Nudge {
            let calls = Arc::clone(calls);
            Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        let held = counting(&calls);
        let dropped = counting(&calls);
        stop.nudge_when_triggered(&held);
        stop.nudge_when_triggered(&dropped);
        drop(dropped);
        stop.trigger();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "only the one still held");
        stop.nudge_when_triggered(&held);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "already triggered: at once"
        );
    }

    #[test]
    fn sleep_returns_early_when_triggered_from_another_thread() {
        let stop = Stop::new();
        let other = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.trigger();
        });
        let started = Instant::now();
        assert!(stop.sleep(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    #[test]
    fn the_fd_polls_readable_once_triggered_whenever_it_was_made() {
        use crate::ops::sys::wait_readable;
        let stop = Stop::new();
        let fd = stop.fd().expect("a pipe");
        assert_eq!(wait_readable([fd], Some(Duration::ZERO)).unwrap(), [false]);
        stop.trigger();
        assert_eq!(wait_readable([fd], Some(Duration::ZERO)).unwrap(), [true]);
        let late = Stop::new();
        late.trigger();
        let fd = late.fd().expect("a pipe");
        assert_eq!(wait_readable([fd], Some(Duration::ZERO)).unwrap(), [true]);
    }

    #[test]
    fn untriggered_sleep_times_out() {
        let stop = Stop::new();
        assert!(!stop.sleep(Duration::from_millis(10)));
        assert!(!stop.is_set());
    }
}
