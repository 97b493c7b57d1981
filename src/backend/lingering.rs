//! The lingering thread: one for every backend connection whose peer has
//! closed its side but is still owed status lines (a one-shot sender whose
//! commands wait for the broker). Owns the sockets sessions hand over on a
//! bounded channel; woken by their outboxes; releases each when nothing is
//! owed, after [`LINGER_MAX`], when it fails, or past the cap, oldest first.
//! Started and joined by the relay.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::delivery::outbox::Outbox;
use crate::ops::shutdown::Stop;
use crate::ops::transport::Stream;

/// The longest a closed peer waits for its status lines.
pub const LINGER_MAX: Duration = Duration::from_secs(30);
/// How soon a write that did not fit is tried again.
const RETRY: Duration = Duration::from_millis(20);

/// A connection the peer has closed, still owed status lines.
pub struct Lingering {
    pub stream: Stream,
    pub outbox: Outbox,
    since: Instant,
    /// Bytes taken from the outbox and not yet written.
    pending: Vec<u8>,
}

impl Lingering {
    pub fn new(stream: Stream, outbox: Outbox) -> Lingering {
        Lingering {
            stream,
            outbox,
            since: Instant::now(),
            pending: Vec::new(),
        }
    }

    /// Writes what it can without blocking; false when the socket failed.
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            self.pending = self.outbox.take();
        }
        while !self.pending.is_empty() {
            match (&self.stream).write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                    if self.pending.is_empty() {
                        self.pending = self.outbox.take();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("backend {}: write failed: {e}", self.outbox.peer());
                    return false;
                }
            }
        }
        true
    }

    fn finished(&self) -> bool {
        self.pending.is_empty() && self.outbox.owed() == 0 && self.outbox.is_empty()
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        // No more lines for this connection; the socket closes with `stream`.
        self.outbox.close();
    }
}

/// Runs until every session has gone (the channel of handed-over
/// connections is closed) and no connection lingers, or, after `stop`, for
/// at most `grace`. One thread for all: each connection holds nothing but
/// its socket's descriptor and its outbox, so a broker outage with
/// thousands of one-shot senders costs no thread per connection. Sockets
/// are non-blocking here (nobody else uses them any more): a line that does
/// not fit is retried shortly, never waited for; and the cap, oldest
/// released first, keeps closed peers from taking the descriptors new
/// connections and the broker links need.
pub fn run(
    handed: Receiver<Lingering>,
    woken: Receiver<()>,
    stop: Stop,
    grace: Duration,
    cap: usize,
) {
    let mut conns: VecDeque<Lingering> = VecDeque::new();
    let never = crossbeam_channel::never();
    let never_stop = crossbeam_channel::never();
    let mut handed_open = true;
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none() && stop.is_set() {
            deadline = Some(Instant::now() + grace);
        }
        let now = Instant::now();
        let past_deadline = deadline.is_some_and(|d| now >= d);
        conns.retain_mut(|c| {
            let ok = c.flush();
            let keep =
                ok && !c.finished() && now.duration_since(c.since) < LINGER_MAX && !past_deadline;
            if !keep && !c.finished() {
                log::debug!(
                    "backend {}: released with {} status lines still owed",
                    c.outbox.peer(),
                    c.outbox.owed()
                );
            }
            keep
        });
        if conns.is_empty() && (!handed_open || past_deadline) {
            break;
        }
        let wait = if conns.iter().any(|c| !c.pending.is_empty()) {
            RETRY
        } else {
            conns
                .front()
                .map(|c| LINGER_MAX.saturating_sub(c.since.elapsed()))
                .unwrap_or(Duration::from_secs(3600))
        };
        let wait = match deadline {
            Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
            None => wait,
        };
        let handed_rx = if handed_open { &handed } else { &never };
        let stop_rx = if deadline.is_none() {
            stop.receiver()
        } else {
            &never_stop
        };
        select! {
            recv(handed_rx) -> conn => match conn {
                Ok(conn) => {
                    if let Err(e) = conn.stream.set_nonblocking(true) {
                        log::debug!("backend {}: {e}", conn.outbox.peer());
                        continue;
                    }
                    conns.push_back(conn);
                    while conns.len() > cap {
                        if let Some(old) = conns.pop_front() {
                            log::debug!(
                                "backend {}: released early ({cap} closed connections already wait for status lines)",
                                old.outbox.peer()
                            );
                        }
                    }
                }
                Err(_) => handed_open = false,
            },
            recv(woken) -> _ => {},
            recv(stop_rx) -> _ => {},
            default(wait) => {},
        }
    }
    log::debug!("lingering thread stopped");
}
