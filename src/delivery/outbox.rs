//! What goes back to one backend connection (PROTOCOL.md §1.3): device replies and
//! status lines. Everyone who has something for a backend (the publisher for
//! status lines, the MQTT event loop for replies, the session for rejections)
//! calls [`Outbox::offer`], which never blocks: a backend that does not read
//! loses lines (counted, logged), it never stalls the MQTT side or other
//! backends. The queue is bounded in lines and in bytes.
//!
//! While the connection is open, its session owns a writer thread
//! ([`write_loop`]) that drains the queue into the socket. Once the peer has
//! closed its side, the socket and the outbox move to the lingering thread
//! (`lingering.rs`) until the status lines still owed are written: the
//! session and writer threads end, and only the socket's descriptor remains.

// Built in protocol (status.rs); delivery's call sites name them through here.
pub use crate::protocol::status::{camera_line, held_line, ok_line_for_camera, status_line};

use crate::ops::counters::Counter;
use crate::ops::sync::lock;
use crate::ops::transport::{Peer, Stream};
use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// Lines a backend may have waiting before new ones are dropped.
const MAX_LINES: usize = 1024;
/// Bytes a backend may have waiting before new lines are dropped (a line
/// larger than this still goes out when nothing else waits).
pub const MAX_BYTES: usize = 1024 * 1024;
/// A write that cannot complete within this means the backend stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// One warn line per this many dropped lines.
const DROPS_PER_WARNING: u64 = 1000;

/// The queue of lines for one connection; cheap to clone (shared).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    peer: Peer,
    queue: Mutex<Queue>,
    /// Commands of this connection still owed a status line (see [`StatusOwed`]).
    owed: AtomicUsize,
    dropped: Counter,
    /// Device replies go out wrapped (`{"reply":…,"unit":…}`): the
    /// connection gets status lines (PROTOCOL.md §1.3).
    wrap_replies: AtomicBool,
}

struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// False once the connection is gone: offers are refused.
    open: bool,
    /// Told when a line is queued or a claim ends: the writer thread, or the
    /// lingering thread once the peer has closed its side.
    wake: Sender<()>,
}

impl Outbox {
    /// A new outbox and the receiver its writer waits on.
    pub fn new(id: u64, peer: Peer) -> (Outbox, Receiver<()>) {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let outbox = Outbox {
            inner: Arc::new(Inner {
                id,
                peer,
                queue: Mutex::new(Queue {
                    lines: VecDeque::new(),
                    bytes: 0,
                    open: true,
                    wake,
                }),
                owed: AtomicUsize::new(0),
                dropped: Counter::new(0),
                wrap_replies: AtomicBool::new(false),
            }),
        };
        (outbox, woken)
    }

    /// The connection's id (the listener's count of accepted connections).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn peer(&self) -> Peer {
        self.inner.peer
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves at worst a line too many or too few.
        lock(&self.inner.queue)
    }

    /// Whether device replies are wrapped for this connection (it gets status lines).
    pub fn wraps_replies(&self) -> bool {
        self.inner.wrap_replies.load(Ordering::SeqCst)
    }

    /// Set by the session whenever the connection's status lines change.
    pub fn set_wrap_replies(&self, wrap: bool) {
        self.inner.wrap_replies.store(wrap, Ordering::SeqCst);
    }

    /// Commands of this connection still waiting for their status line.
    pub fn owed(&self) -> usize {
        self.inner.owed.load(Ordering::SeqCst)
    }

    /// Queues one line (the `\n` is added here). Returns false when it was dropped.
    pub fn offer(&self, what: &str, mut line: Vec<u8>) -> bool {
        line.push(b'\n');
        let mut queue = self.queue();
        if !queue.open {
            drop(queue);
            log::debug!(
                "backend {} closed before a {what} could be written",
                self.inner.peer
            );
            return false;
        }
        let fits = queue.lines.is_empty()
            || (queue.lines.len() < MAX_LINES && queue.bytes + line.len() <= MAX_BYTES);
        if !fits {
            drop(queue);
            let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            // A flood must not fill the log.
            if n.is_multiple_of(DROPS_PER_WARNING) {
                log::warn!(
                    "backend {} is not reading: dropped {what} ({} dropped so far; at most {MAX_LINES} lines or {} KiB wait)",
                    self.inner.peer,
                    n + 1,
                    MAX_BYTES / 1024
                );
            }
            return false;
        }
        queue.bytes += line.len();
        queue.lines.push_back(line);
        let _ = queue.wake.try_send(());
        true
    }

    /// Everything queued, as one buffer to write.
    pub fn take(&self) -> Vec<u8> {
        let mut queue = self.queue();
        let mut out = Vec::with_capacity(queue.bytes);
        for line in queue.lines.drain(..) {
            out.extend_from_slice(&line);
        }
        queue.bytes = 0;
        out
    }

    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.queue().lines.is_empty()
    }

    /// The connection is gone: queued lines are dropped, new ones refused.
    pub fn close(&self) {
        let mut queue = self.queue();
        queue.open = false;
        queue.lines.clear();
        queue.bytes = 0;
    }

    /// From now on `wake` is told about new lines (the lingering thread).
    pub fn rewire(&self, wake: Sender<()>) {
        let mut queue = self.queue();
        let _ = wake.try_send(());
        queue.wake = wake;
    }

    fn nudge(&self) {
        let _ = self.queue().wake.try_send(());
    }
}

/// A command's claim on a status line: counted by its connection while it
/// lives, so a backend that half-closes still gets its lines (for at most
/// `lingering::LINGER_MAX`, however long the command waits).
pub struct StatusOwed {
    pub outbox: Outbox,
    /// `ok` lines too, not only errors (`ACK_MODE = all` or `camera`, or asked for).
    pub ok_lines: bool,
    /// `delivered` and `resent` lines too (`ACK_MODE = camera`): the claim
    /// lasts until the camera confirmed the command.
    pub camera_lines: bool,
}

impl StatusOwed {
    pub fn new(outbox: &Outbox, ok_lines: bool) -> Self {
        outbox.inner.owed.fetch_add(1, Ordering::SeqCst);
        StatusOwed {
            outbox: outbox.clone(),
            ok_lines,
            camera_lines: false,
        }
    }

    /// A claim that lasts until the camera confirmed the command.
    pub fn until_confirmed(outbox: &Outbox) -> Self {
        let mut owed = StatusOwed::new(outbox, true);
        owed.camera_lines = true;
        owed
    }
}

impl Drop for StatusOwed {
    fn drop(&mut self) {
        // The lingering thread releases a connection once nothing is owed:
        // only the last claim's going is news (a line written wakes it anyway).
        if self.outbox.inner.owed.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.outbox.nudge();
        }
    }
}

/// How the session ends its writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Write what is queued (within [`WRITE_TIMEOUT`]), then stop.
    Flush,
    /// Stop now: the lingering thread takes over the socket and the queue.
    HandOff,
}

/// The writer thread of one open connection: writes queued lines until told
/// to finish, or until the socket fails or blocks for [`WRITE_TIMEOUT`]
/// (then the connection is closed).
pub fn write_loop(
    stream: Arc<Stream>,
    outbox: Outbox,
    woken: Receiver<()>,
    finish: Receiver<Finish>,
) {
    loop {
        let how = crossbeam_channel::select! {
            recv(woken) -> _ => None,
            recv(finish) -> f => Some(f.unwrap_or(Finish::Flush)),
        };
        if how == Some(Finish::HandOff) {
            return;
        }
        loop {
            let batch = outbox.take();
            if batch.is_empty() {
                break;
            }
            if let Err(e) = write_within(&stream, &batch, WRITE_TIMEOUT) {
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    log::warn!(
                        "backend {} did not read for {} s: closing the connection",
                        outbox.peer(),
                        WRITE_TIMEOUT.as_secs()
                    );
                } else {
                    log::debug!("backend {}: write failed: {e}", outbox.peer());
                }
                outbox.close();
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
        if how == Some(Finish::Flush) {
            return;
        }
    }
}

/// Writes all of `bytes` or fails once `limit` has passed in total (a
/// backend that reads a trickle cannot hold the writer forever).
fn write_within(mut stream: &Stream, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut at = 0;
    while at < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(&bytes[at..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (Outbox, Receiver<()>) {
        Outbox::new(1, "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn offer_drops_past_the_line_limit_and_never_blocks() {
        let (outbox, woken) = outbox();
        for _ in 0..MAX_LINES {
            assert!(outbox.offer("reply", b"x".to_vec()));
        }
        assert!(!outbox.offer("reply", b"x".to_vec()));
        assert!(woken.try_recv().is_ok(), "the writer was woken");
        assert_eq!(outbox.take().len(), 2 * MAX_LINES);
        assert!(outbox.offer("reply", b"y".to_vec()));
        outbox.close();
        assert!(!outbox.offer("reply", b"z".to_vec()));
        assert!(outbox.take().is_empty());
    }

    #[test]
    fn offer_drops_past_the_byte_budget_but_one_big_line_goes_alone() {
        let (outbox, _woken) = outbox();
        let big = vec![b'r'; MAX_BYTES + 10];
        assert!(outbox.offer("reply", big.clone()), "alone, it fits");
        assert!(!outbox.offer("reply", b"small".to_vec()), "nothing more");
        assert_eq!(outbox.take().len(), big.len() + 1);
        let half = vec![b'h'; MAX_BYTES / 2];
        assert!(outbox.offer("reply", half.clone()));
        assert!(
            !outbox.offer("reply", half.clone()),
            "two halves and their newlines do not fit"
        );
        assert!(outbox.offer("reply", vec![b's'; 100]));
    }

    #[test]
    fn a_claim_counts_until_dropped_and_wakes_whoever_listens() {
        let (outbox, woken) = outbox();
        let claim = StatusOwed::new(&outbox, true);
        assert_eq!(outbox.owed(), 1);
        let (wake, lingerer) = crossbeam_channel::bounded(1);
        outbox.rewire(wake);
        let _ = lingerer.try_recv();
        drop(claim);
        assert_eq!(outbox.owed(), 0);
        assert!(
            lingerer.try_recv().is_ok(),
            "the lingering thread hears of it"
        );
        assert!(woken.try_recv().is_err(), "the old writer does not");
    }
}
