//! What goes back to one backend connection (PROTOCOL.md §1.3): status lines
//! and device replies, queued by whoever has one ([`Outbox::offer`] never
//! blocks; bounded in lines and bytes), written by the session's writer
//! thread ([`write_loop`]) or, once the peer half-closed, by the lingering
//! thread; and the [`Claims`] commands hold on a connection's lines.

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
/// The next [`Outbox::conn`] (a [`Counter`]: 32-bit MIPS has no `AtomicU64`).
static NEXT_CONN: Counter = Counter::new(1);

/// The queue of lines for one connection; cheap to clone (shared).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    conn: u64,
    peer: Peer,
    queue: Mutex<Queue>,
    /// Commands of this connection still owed a status line (see [`Claims`]).
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
                conn: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
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

    /// A number no other connection of this process has (the listeners
    /// count theirs each from 1): what the publisher's policy knows the
    /// connection by.
    pub fn conn(&self) -> u64 {
        self.inner.conn
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

    /// `n` claims end. The lingering thread releases a connection once
    /// nothing is owed: only the last claim's going is news (a line
    /// written wakes it anyway).
    fn release(&self, n: usize) {
        if n > 0 && self.inner.owed.fetch_sub(n, Ordering::SeqCst) == n {
            let _ = self.queue().wake.try_send(());
        }
    }
}

/// Commands' claims on status lines of one connection, counted by it while
/// they last, so a backend that half-closes still gets its lines (for at
/// most `lingering::LINGER_MAX`, however long the commands wait). Its
/// session takes one per command it hands over; the publisher keeps them
/// (`replies.rs`) and gives one back when a command's last line is
/// decided; dropped, all are given back.
pub struct Claims {
    outbox: Outbox,
    count: usize,
}

impl Claims {
    /// No claims yet on `outbox`'s lines.
    pub fn new(outbox: &Outbox) -> Claims {
        Claims {
            outbox: outbox.clone(),
            count: 0,
        }
    }

    /// One more command claims a line.
    pub fn take_one(&mut self) {
        self.outbox.inner.owed.fetch_add(1, Ordering::SeqCst);
        self.count += 1;
    }

    /// `other`'s claims (on the same connection's lines) become these.
    pub fn join(&mut self, mut other: Claims) {
        debug_assert_eq!(self.outbox.conn(), other.outbox.conn());
        self.count += std::mem::take(&mut other.count);
    }

    /// One command's line is decided: its claim ends.
    pub fn give_back_one(&mut self) {
        if self.count > 0 {
            self.count -= 1;
            self.outbox.release(1);
        }
    }

    /// Claims held.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.outbox.release(std::mem::take(&mut self.count));
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
    fn claims_count_until_given_back_or_dropped_and_wake_whoever_listens() {
        let (outbox, woken) = outbox();
        let mut claims = Claims::new(&outbox);
        claims.take_one();
        let mut more = Claims::new(&outbox);
        more.take_one();
        more.take_one();
        claims.join(more);
        assert_eq!(outbox.owed(), 3, "joined, none given back");
        let (wake, lingerer) = crossbeam_channel::bounded(1);
        outbox.rewire(wake);
        let _ = lingerer.try_recv();
        claims.give_back_one();
        assert_eq!(outbox.owed(), 2);
        assert!(lingerer.try_recv().is_err(), "not the last: no news");
        drop(claims);
        assert_eq!(outbox.owed(), 0);
        assert!(
            lingerer.try_recv().is_ok(),
            "the lingering thread hears of it"
        );
        assert!(woken.try_recv().is_err(), "the old writer does not");
        let mut last = Claims::new(&outbox);
        last.take_one();
        last.give_back_one();
        last.give_back_one();
        assert_eq!(outbox.owed(), 0, "never below what was taken");
        assert!(lingerer.try_recv().is_ok());
    }
}
