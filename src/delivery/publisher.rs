//! The publisher thread: the only writer of commands to the broker. It
//! drains the job channel filled by backend sessions into the delivery
//! ledger (at most `QUEUE_CAPACITY` commands and `QUEUE_MAX_BYTES` of them;
//! past that it stops reading the channel, which blocks the sessions: TCP
//! backpressure), writes each batch to the spool with one sync (group commit)
//! before counting it accepted, writes due commands to the publish link's
//! connection within the inflight window, as one write per batch, and turns
//! the link events reported by the publish link thread (`publish_link.rs`)
//! into acknowledgements, resends, spool compaction and status lines. On
//! shutdown it keeps publishing for up to `SHUTDOWN_GRACE` seconds, leaves the
//! rest in the spool, then sends DISCONNECT and triggers the `link` stop.
//!
//! The spool is the source of truth. While it cannot be written (a full or
//! read-only file system, an I/O error), a command is accepted only when the
//! broker is connected and it can be published at once; with the broker away
//! too, the job channel is not read (backpressure again). Writing is retried
//! every second and resumes by itself. A spool deleted, truncated or replaced
//! under the relay is noticed at the next write and written again from what
//! is pending.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver};

use crate::config::{Config, Qos};
use crate::delivery::item::Accepted;
use crate::delivery::ledger::Ledger;
use crate::delivery::ledger::Weighed;
use crate::delivery::spool::{Recovery, Replayed, Spool, SpoolError};
use crate::error::Error;
use crate::mqtt::codec;
use crate::mqtt::publish_link::{LinkEvent, LinkShared, StateMessages};
use crate::mqtt::wire::Wire;
use crate::ops::counters::Counters;
use crate::ops::redact;
use crate::ops::shutdown::Stop;
use crate::ops::time;
use crate::protocol::command;

/// Commands written to the broker and not yet acknowledged.
pub const WINDOW: usize = 100;
/// Under load (more commands ready than the window has room for), the
/// publisher writes once at least this many places are free again, or
/// [`MAX_HOLD`] after it first could have written: a few large writes
/// instead of one per PUBACK read, which costs the relay and the broker a
/// system call and a wake-up each. Whatever is ready and fits is written at
/// once, so a lone command never waits.
const MIN_WRITE: usize = 25;
const MAX_HOLD: Duration = Duration::from_micros(200);

/// Commands held while the broker is connected (see [`Publisher::room`]).
const CONNECTED_BACKLOG: usize = 4 * WINDOW;

/// Retry interval for a spool that cannot be written.
const SPOOL_RETRY: Duration = Duration::from_secs(1);
/// Commands a broker acknowledged this shortly before its connection broke
/// are published again on the next one: a broker that dies (SIGKILL, power)
/// may have acknowledged a command and not yet passed it on (mosquitto
/// queues the PUBACK and the delivery to subscribers alike), and nobody
/// else could ever resend it. At least once, as always.
const AGAIN_WITHIN: Duration = Duration::from_secs(1);

/// Where accepted commands are kept durable.
enum SpoolState {
    /// No SPOOL_FILE: memory only.
    Off,
    Writing(Spool),
    /// SPOOL_FILE cannot be written now; retried every [`SPOOL_RETRY`].
    Failing {
        path: PathBuf,
        reason: String,
        retry_at: Instant,
        /// The file at `path` was not read (or is damaged) and must be moved
        /// aside under this kind before anything is written over it.
        move_first: Option<&'static str>,
    },
}

pub struct Publisher {
    /// The publish link's connection, while it is up.
    wire: Option<Wire>,
    /// Encoded PUBLISH packets of the batch being written (kept to reuse its allocation).
    out: Vec<u8>,
    ledger: Ledger<Accepted>,
    /// Commands handed over by sessions that did not fit in the ledger yet
    /// (a batch is taken whole): read, not accepted; admitted first when
    /// there is room, and no new batch is taken while any wait.
    waiting: VecDeque<Accepted>,
    /// Payload bytes of `waiting`.
    waiting_bytes: usize,
    /// Since when a write is held back for more room (see [`MIN_WRITE`]).
    held_since: Option<Instant>,
    spool: SpoolState,
    /// Acknowledged in the last [`AGAIN_WITHIN`] (at most one window), with
    /// their sequence numbers: published again if the connection breaks now.
    recent: VecDeque<(Instant, u64, Accepted)>,
    /// Copies published again that are in the ledger (not counted as queued).
    again_queued: usize,
    /// `STATE_TOPIC`: "offline" published before a clean DISCONNECT.
    state: Option<StateMessages>,
    /// Read from backends but not accepted yet: their spool write failed
    /// with the broker away. Accepted (and logged so) once the spool takes
    /// them or the broker does; lost with the process until then.
    unconfirmed: BTreeSet<u64>,
    /// QoS 1 (acknowledged) or 0.
    qos1: bool,
    ttl: Option<Duration>,
    capacity: usize,
    /// `QUEUE_MAX_BYTES`: payload bytes the ledger may hold.
    max_bytes: usize,
    counters: Arc<Counters>,
    /// Shared with the event loop: the in-flight count and the hand-off gate.
    link: Arc<LinkShared>,
}

impl Publisher {
    /// With `SPOOL_FILE` set, reads the spool left by the last run: its live
    /// commands are queued first, and the file is rewritten to hold just them.
    /// A spool that cannot be read or written does not stop the start (that
    /// is for configuration errors): the relay runs without it, logged at
    /// error, until it can be written again.
    pub fn new(
        config: &Config,
        counters: Arc<Counters>,
        link: Arc<LinkShared>,
    ) -> Result<Self, Error> {
        let mut ledger = Ledger::new(WINDOW);
        let mut spool = SpoolState::Off;
        if let Some(path) = &config.spool_file {
            let path = path.clone();
            let mut move_first = None;
            let read = match Spool::distrust(&path) {
                Some(why) => {
                    log::error!(
                        "spool {}: {why}: another user could have written it, so its commands \
                         are not replayed (the file is moved aside as untrusted and a new \
                         spool is started)",
                        path.display()
                    );
                    move_first = Some("untrusted");
                    Ok(Recovery::default())
                }
                None => Spool::read(&path),
            };
            let recovery = match read {
                Ok(recovery) => recovery,
                Err(e) => {
                    log::error!(
                        "spool {}: cannot be read: {e}; its commands are not replayed \
                         (the file is kept, moved aside before a new spool is written)",
                        path.display()
                    );
                    move_first = Some("unreadable");
                    Recovery::default()
                }
            };
            if !recovery.damaged.is_empty() {
                log::warn!(
                    "spool {}: {} damaged bytes in {} places skipped; the {} intact commands \
                     around them are kept, and the file is moved aside for inspection",
                    path.display(),
                    recovery.damaged_bytes(),
                    recovery.damaged.len(),
                    recovery.live.len()
                );
                move_first = Some("damaged");
            }
            if let Some((offset, len)) = recovery.torn_tail {
                log::warn!(
                    "spool {}: a record cut short at offset {offset} ({len} bytes, a write \
                     interrupted by a crash) skipped",
                    path.display()
                );
            }
            replay(recovery, config, &counters, &mut ledger);
            if !ledger.is_empty() {
                log::info!(
                    "spool {}: {} unacknowledged commands from the last run queued first",
                    path.display(),
                    ledger.len()
                );
            }
            spool = open_spool(path, move_first, &ledger);
            if let SpoolState::Failing { path, reason, .. } = &spool {
                log_spool_failing(path, reason);
            }
        }
        Ok(Publisher {
            wire: None,
            out: Vec::with_capacity(64 * 1024),
            ledger,
            spool,
            unconfirmed: BTreeSet::new(),
            recent: VecDeque::new(),
            again_queued: 0,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            held_since: None,
            state: None,
            qos1: config.mqtt_qos == Qos::AtLeastOnce,
            max_bytes: config.queue_max_bytes,
            ttl: config.command_ttl,
            capacity: config.queue_capacity,
            counters,
            link,
        })
    }

    /// Publishes `state`'s "offline" at a clean stop.
    pub fn with_state(mut self, state: Option<StateMessages>) -> Self {
        self.state = state;
        self
    }

    pub fn run(
        mut self,
        jobs: Receiver<Vec<Accepted>>,
        link: Receiver<LinkEvent>,
        intake: Stop,
        link_stop: Stop,
        grace: Duration,
    ) {
        let no_jobs = crossbeam_channel::never();
        let no_link = crossbeam_channel::never();
        let no_intake = crossbeam_channel::never();
        let mut jobs_open = true;
        let mut link_open = true;
        let mut deadline: Option<Instant> = None;
        let mut batch = Vec::new();
        loop {
            self.admit_waiting(&mut batch);
            self.pump();
            self.tidy_spool();
            self.link
                .in_flight
                .store(self.ledger.in_flight(), Ordering::Relaxed);
            self.forget_recent();
            self.counters
                .queue_bytes
                .store(self.ledger.weight() as u64, Ordering::Relaxed);
            self.counters
                .publisher_turns
                .fetch_add(1, Ordering::Relaxed);
            let spool_bytes = match &self.spool {
                SpoolState::Writing(spool) => spool.bytes(),
                _ => 0,
            };
            self.counters
                .spool_bytes
                .store(spool_bytes, Ordering::Relaxed);
            if deadline.is_none() && intake.is_set() {
                deadline = Some(Instant::now() + grace);
            }
            if !jobs_open && self.ledger.is_empty() && self.waiting.is_empty() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let unaccepted =
                    self.waiting.len() + jobs.try_iter().map(|b| b.len()).sum::<usize>();
                self.give_up(grace, unaccepted);
                break;
            }
            let mut wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if let Some(since) = self.held_since {
                wait = wait.min(MAX_HOLD.saturating_sub(since.elapsed()));
            }
            let room = self.room();
            let jobs_rx = if jobs_open && self.waiting.is_empty() && self.has_room(room, 0) {
                &jobs
            } else {
                &no_jobs
            };
            let link_rx = if link_open { &link } else { &no_link };
            let intake_rx = if deadline.is_none() {
                intake.receiver()
            } else {
                &no_intake
            };
            select! {
                recv(jobs_rx) -> jobs_batch => match jobs_batch {
                    Ok(jobs_batch) => {
                        // Everything that arrived together is one batch: one spool sync.
                        self.wait_for_room(jobs_batch);
                        while self.has_room(room, self.waiting.len())
                            && self.ledger.weight() + self.waiting_bytes < self.max_bytes
                        {
                            match jobs.try_recv() {
                                Ok(more) => self.wait_for_room(more),
                                Err(_) => break,
                            }
                        }
                        self.admit_waiting(&mut batch);
                    }
                    Err(_) => jobs_open = false,
                },
                recv(link_rx) -> event => match event {
                    Ok(event) => {
                        self.on_link(event);
                        while let Ok(event) = link.try_recv() {
                            self.on_link(event);
                        }
                    }
                    Err(_) => link_open = false,
                },
                recv(intake_rx) -> _ => {},
                default(wait) => {},
            }
        }
        self.tidy_spool();
        if let Some(wire) = self.wire.take() {
            let mut bye = Vec::new();
            if let Some(state) = &self.state {
                if let Err(e) = codec::publish(
                    &mut bye,
                    &state.topic,
                    Some(codec::STATE_PKID),
                    true,
                    &state.offline,
                ) {
                    log::error!("cannot publish the offline state: {e}");
                }
            }
            codec::disconnect(&mut bye);
            self.link.closing.store(true, Ordering::Relaxed);
            if wire.write_all(&bye).is_ok() {
                log::info!("disconnected from broker");
            }
        }
        link_stop.trigger();
        log::debug!("publisher stopped");
    }

    /// How many commands the ledger may hold now. With the broker connected a
    /// few windows keep it busy, and the backends wait in their sockets (TCP
    /// backpressure); only while it is away does the queue fill up to
    /// `QUEUE_CAPACITY`, so memory is spent on outages, not on bursts.
    ///
    /// While the spool cannot be written, only what can be published at once
    /// (one window, with the broker connected) is taken: nothing waits in
    /// memory alone for a broker that is away.
    fn room(&self) -> usize {
        let connected = self.ledger.link_up();
        match (&self.spool, connected) {
            (SpoolState::Failing { .. }, true) => self.capacity.min(WINDOW),
            (SpoolState::Failing { .. }, false) => 0,
            (_, true) => self.capacity.min(CONNECTED_BACKLOG),
            (_, false) => self.capacity,
        }
    }

    /// Whether the ledger (with `more` commands about to join it) may take
    /// another: within `room` commands and within `QUEUE_MAX_BYTES`.
    fn has_room(&self, room: usize, more: usize) -> bool {
        self.ledger.len() + more < room && self.ledger.weight() < self.max_bytes
    }

    /// Takes a batch handed over by a session into `waiting`.
    fn wait_for_room(&mut self, jobs: Vec<Accepted>) {
        self.waiting_bytes += jobs.iter().map(|j| j.payload.len()).sum::<usize>();
        self.waiting.extend(jobs);
    }

    /// Admits what waits, oldest first, as far as the room allows (see
    /// [`Publisher::room`]), as one batch: one spool sync.
    fn admit_waiting(&mut self, batch: &mut Vec<Accepted>) {
        if self.waiting.is_empty() {
            return;
        }
        let room = self.room();
        let mut weight = 0;
        while self.has_room(room, batch.len())
            && (batch.is_empty() || self.ledger.weight() + weight < self.max_bytes)
        {
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.waiting_bytes -= job.payload.len();
            weight += job.weight();
            batch.push(job);
        }
        if !batch.is_empty() {
            self.admit(batch);
        }
    }

    /// Queues a batch: spooled and synced first (when there is a spool), then logged as accepted.
    fn admit(&mut self, batch: &mut Vec<Accepted>) {
        let first = self.ledger.next_seq();
        for job in batch.drain(..) {
            if log::log_enabled!(log::Level::Debug) {
                log::debug!(
                    "payload of {}: {}",
                    job.kind.as_str(),
                    redact::payload(&job.payload)
                );
            }
            if let SpoolState::Writing(spool) = &mut self.spool {
                spool.accepted(self.ledger.next_seq(), job.received_wall, &job.payload);
            }
            self.ledger.push(job);
        }
        let spooled = matches!(self.spool, SpoolState::Writing(_));
        if spooled && !self.sync_spool() && !self.ledger.link_up() {
            // Neither durable nor publishable now: not accepted yet.
            let unconfirmed: Vec<u64> = self.ledger.iter_from(first).map(|(seq, _)| seq).collect();
            log::error!(
                "{} commands just read could not be spooled and the broker is away: \
                 they are held in memory, accepted once the spool or the broker takes them",
                unconfirmed.len()
            );
            self.unconfirmed.extend(unconfirmed);
            return;
        }
        // Logged only now that they count as accepted (spooled and synced).
        self.log_accepted(first..self.ledger.next_seq());
    }

    /// The "accepted" line of each command in `seqs` still queued.
    fn log_accepted(&self, seqs: impl Iterator<Item = u64>) {
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        for seq in seqs {
            let Some(job) = self.ledger.get(seq) else {
                continue;
            };
            match job.peer {
                Some(peer) => log::info!(
                    "accepted {} for unit {} from {peer} -> {}",
                    job.kind.as_str(),
                    job.unit,
                    job.topic
                ),
                None => log::info!(
                    "accepted {} for unit {} from spool -> {}",
                    job.kind.as_str(),
                    job.unit,
                    job.topic
                ),
            }
        }
    }

    /// Commands held unconfirmed are accepted now (the spool took them).
    fn confirm_all(&mut self) {
        let seqs = std::mem::take(&mut self.unconfirmed);
        self.log_accepted(seqs.into_iter());
    }

    /// Writes pending spool records; false when the spool could not be
    /// written (it is then failing, retried every second).
    fn sync_spool(&mut self) -> bool {
        let SpoolState::Writing(spool) = &mut self.spool else {
            return false;
        };
        match spool.sync() {
            Ok(()) => true,
            Err(e) => {
                self.spool_broke(e);
                // A lost file is written again at once, with everything queued.
                matches!(self.spool, SpoolState::Writing(_))
            }
        }
    }

    /// A write or compaction failed: rewrite a lost file at once, or fall
    /// back to accepting only what can be published at once.
    fn spool_broke(&mut self, e: SpoolError) {
        let SpoolState::Writing(spool) = &self.spool else {
            return;
        };
        let path = spool.path().to_path_buf();
        if let SpoolError::Lost(why) = &e {
            log::warn!(
                "spool {}: {why}; writing it again from the {} pending commands",
                path.display(),
                self.ledger.len()
            );
        }
        self.spool = match e {
            SpoolError::Lost(_) => open_spool(path, None, &self.ledger),
            SpoolError::Io(e) => SpoolState::Failing {
                path,
                reason: e.to_string(),
                retry_at: Instant::now() + SPOOL_RETRY,
                move_first: None,
            },
        };
        match &self.spool {
            SpoolState::Failing { path, reason, .. } => log_spool_failing(path, reason),
            SpoolState::Writing(_) => self.confirm_all(),
            SpoolState::Off => {}
        }
    }

    fn tidy_spool(&mut self) {
        match &mut self.spool {
            SpoolState::Off => {}
            SpoolState::Writing(spool) => {
                if let Err(e) = spool.sync() {
                    return self.spool_broke(e);
                }
                if !spool.wants_compaction() {
                    return;
                }
                if let Err(e) = spool.compact(spooled(&self.ledger)) {
                    self.spool_broke(e);
                }
            }
            SpoolState::Failing {
                path,
                retry_at,
                move_first,
                ..
            } => {
                if Instant::now() < *retry_at {
                    return;
                }
                let path = std::mem::take(path);
                let move_first = move_first.take();
                self.spool = open_spool(path, move_first, &self.ledger);
                match &mut self.spool {
                    SpoolState::Writing(spool) => {
                        log::info!(
                            "spool {}: writable again; {} pending commands written to it",
                            spool.path().display(),
                            self.ledger.len()
                        );
                        self.confirm_all();
                    }
                    SpoolState::Failing { reason, path, .. } => {
                        log::debug!("spool {} still cannot be written: {reason}", path.display())
                    }
                    SpoolState::Off => {}
                }
            }
        }
    }

    /// Writes due commands to the broker while the window has room: every
    /// one that is ready, encoded into one buffer and written at once.
    fn pump(&mut self) {
        let Some(wire) = self.wire.clone() else {
            return;
        };
        if !self.worth_writing() {
            return;
        }
        self.out.clear();
        let mut written_qos0 = Vec::new();
        let mut confirmed = Vec::new();
        while let Some((seq, job)) = self.ledger.next_due() {
            if let Some(ttl) = self.ttl {
                if job.received.elapsed() > ttl {
                    if let Some(job) = self.ledger.remove(seq) {
                        self.expire(seq, job, ttl);
                    }
                    continue;
                }
            }
            let (topic, payload) = (job.topic.as_str(), job.payload.as_slice());
            if self.qos1 {
                // The id is only read back from the ledger's own table.
                let pkid = self.ledger.mark_sent(seq);
                let job = self
                    .ledger
                    .get(seq)
                    .expect("a command just marked sent is queued");
                // check-config bounds topics and payloads, so this cannot fail.
                if let Err(e) =
                    codec::publish(&mut self.out, &job.topic, Some(pkid), false, &job.payload)
                {
                    log::error!(
                        "cannot publish {} for unit {}: {e}",
                        job.kind.as_str(),
                        job.unit
                    );
                }
            } else {
                if let Err(e) = codec::publish(&mut self.out, topic, None, false, payload) {
                    log::error!(
                        "cannot publish {} for unit {}: {e}",
                        job.kind.as_str(),
                        job.unit
                    );
                }
                self.ledger.mark_written(seq);
                written_qos0.push(seq);
            }
            if self.unconfirmed.remove(&seq) {
                confirmed.push(seq);
            }
        }
        if self.out.is_empty() {
            return;
        }
        // Written at once: accepted (they were read while the spool failed).
        self.log_accepted(confirmed.into_iter());
        // The log is written before the broker hears of the batch: whoever
        // sees a command arrive finds its "accepted" line already there.
        log::logger().flush();
        if let Err(e) = wire.write_all(&self.out) {
            // The publish link hears of it too and reports the link down;
            // what was written stays unacknowledged and goes out again.
            log::debug!("write to the broker failed: {e}");
            *self
                .link
                .write_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            wire.shut();
            self.lose_wire();
            return;
        }
        // QoS 0: written is delivered.
        for seq in written_qos0 {
            if let Some(job) = self.ledger.remove(seq) {
                self.delivered(seq, job);
            }
        }
    }

    /// Whether to write now (see [`MIN_WRITE`]): always when nothing is in
    /// flight or all that is ready fits in the window; under load once
    /// `MIN_WRITE` places are free or the write was held for `MAX_HOLD`.
    ///
    /// A write is held only while there is room to write into (`free > 0`):
    /// with the window full (or the link down, which empties it and sets
    /// nothing due) there is nothing to hold, and no timer runs.
    fn worth_writing(&mut self) -> bool {
        let free = self.ledger.window_free();
        let unsent = self.ledger.unsent();
        if free == 0 {
            self.held_since = None;
            return false;
        }
        if !self.qos1 || self.ledger.in_flight() == 0 || free >= MIN_WRITE || unsent <= free {
            self.held_since = None;
            return true;
        }
        let since = *self.held_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= MAX_HOLD {
            self.held_since = None;
            return true;
        }
        false
    }

    /// The connection is gone, and with it any write held for its window.
    fn lose_wire(&mut self) {
        self.wire = None;
        self.held_since = None;
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up(wire) => {
                log::debug!(
                    "link up: {} queued, written again from the oldest",
                    self.ledger.len()
                );
                self.wire = Some(wire);
                self.ledger.on_link_up();
            }
            LinkEvent::Down => {
                log::debug!(
                    "link down: {} queued, {} were in flight",
                    self.ledger.len(),
                    self.ledger.in_flight()
                );
                self.lose_wire();
                self.ledger.on_link_lost();
                self.again();
            }
            LinkEvent::Acked(pkids) => {
                for pkid in pkids {
                    if let Some((seq, job)) = self.ledger.on_acked(pkid) {
                        self.delivered(seq, job);
                    }
                }
            }
        }
    }

    /// The connection broke: what its broker acknowledged in the last
    /// [`AGAIN_WITHIN`] goes out again, at its old place in the order.
    fn again(&mut self) {
        if self.link.closing.load(Ordering::Relaxed) {
            return;
        }
        self.forget_recent();
        let again = self.recent.len();
        for (_, seq, job) in self.recent.drain(..) {
            self.ledger.restore(seq, job);
        }
        self.again_queued += again;
        if again > 0 {
            log::info!(
                "publishing again the {again} commands the broker acknowledged in the last \
                 {} s before the connection broke (it may have died before passing them on)",
                AGAIN_WITHIN.as_secs()
            );
        }
    }

    fn forget_recent(&mut self) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() > AGAIN_WITHIN)
            || self.recent.len() > WINDOW
        {
            self.recent.pop_front();
        }
    }

    fn delivered(&mut self, seq: u64, mut job: Accepted) {
        if job.again {
            self.again_queued -= 1;
            log::debug!(
                "broker took {} for unit {} again",
                job.kind.as_str(),
                job.unit
            );
            return;
        }
        Counters::add(&self.counters.published);
        self.counters.unqueue();
        if let SpoolState::Writing(spool) = &mut self.spool {
            spool.done(seq);
        }
        log::debug!(
            "broker took {} for unit {} id {} ({} bytes)",
            job.kind.as_str(),
            job.unit,
            job.id.as_deref().unwrap_or("-"),
            job.payload.len()
        );
        job.report(None);
        if self.qos1 {
            job.reply = None;
            job.again = true;
            self.recent.push_back((Instant::now(), seq, job));
            self.forget_recent();
        }
    }

    fn expire(&mut self, seq: u64, job: Accepted, ttl: Duration) {
        if job.again {
            self.again_queued -= 1;
            return;
        }
        Counters::add(&self.counters.expired);
        self.counters.unqueue();
        if let SpoolState::Writing(spool) = &mut self.spool {
            spool.done(seq);
        }
        let age = job.received.elapsed().as_secs();
        log::warn!(
            "expired {} for unit {} after {age} s in the queue (COMMAND_TTL {} s): not published",
            job.kind.as_str(),
            job.unit,
            ttl.as_secs()
        );
        job.report(Some(&format!(
            "expired after {age} s (COMMAND_TTL {} s)",
            ttl.as_secs()
        )));
    }

    fn give_up(&self, grace: Duration, waiting: usize) {
        let queued = self.ledger.len() - self.again_queued;
        match &self.spool {
            _ if queued == 0 => {}
            SpoolState::Writing(spool) => log::warn!(
                "shutdown grace of {} s ran out: {queued} unacknowledged commands stay in the spool {} for the next start",
                grace.as_secs(),
                spool.path().display()
            ),
            SpoolState::Failing { path, .. } => log::error!(
                "shutdown grace of {} s ran out: {queued} accepted commands not delivered, and the spool {} cannot be written: lost",
                grace.as_secs(),
                path.display()
            ),
            SpoolState::Off => log::error!(
                "shutdown grace of {} s ran out: {queued} accepted commands not delivered (no SPOOL_FILE)",
                grace.as_secs()
            ),
        }
        if waiting > 0 {
            log::error!(
                "shutdown grace of {} s ran out: {waiting} commands read from backends were never accepted (not spooled, no status line)",
                grace.as_secs()
            );
        }
    }
}

/// Queues the live commands of a recovered spool, oldest first. Ages come
/// from the wall clock of the run that spooled them; a time that cannot be
/// right (before this binary was built, or in the future: the clock jumped,
/// as on a gateway without a real-time clock before and after NTP) gives an
/// unknown age, and such a command is published rather than expired.
fn replay(recovery: Recovery, config: &Config, counters: &Counters, ledger: &mut Ledger<Accepted>) {
    let now = SystemTime::now();
    let mut unknown_age = 0;
    for r in recovery.live {
        Counters::add(&counters.received);
        Counters::add(&counters.queued);
        let age = time::age(r.received, now);
        let Some(job) = revive(r, config, age) else {
            Counters::add(&counters.rejected);
            counters.unqueue();
            continue;
        };
        match age {
            Some(age) if config.command_ttl.is_some_and(|ttl| age > ttl) => {
                Counters::add(&counters.expired);
                counters.unqueue();
                log::warn!(
                    "expired {} for unit {} after {} s in the spool (COMMAND_TTL {} s): not published",
                    job.kind.as_str(),
                    job.unit,
                    age.as_secs(),
                    config.command_ttl.unwrap_or_default().as_secs()
                );
            }
            Some(_) => {
                ledger.push(job);
            }
            None => {
                unknown_age += 1;
                ledger.push(job);
            }
        }
    }
    if unknown_age > 0 {
        log::warn!(
            "spool: {unknown_age} commands carry a time that cannot be right (before this \
             binary was built on {}, or in the future: the clock was wrong when they were \
             spooled, or is now); their age is unknown, so they are published, not expired",
            time::iso8601(time::built())
        );
    }
}

/// Rebuilds a queued command from its spooled bytes. Type and unit were valid
/// when it was accepted; a spool edited by hand or a changed config can still
/// make it unusable, which is logged and skipped. A command of unknown age
/// is taken as received now (its TTL counts from this start).
fn revive(r: Replayed, config: &Config, age: Option<Duration>) -> Option<Accepted> {
    let cmd = match command::validate(&r.payload, false) {
        Ok(cmd) => cmd,
        Err(rejection) => {
            log::warn!("spool: skipping a command that no longer validates: {rejection}");
            return None;
        }
    };
    let received = age
        .and_then(|age| Instant::now().checked_sub(age))
        .unwrap_or_else(Instant::now);
    Some(Accepted::new(cmd, config, received, r.received))
}

/// What the spool must hold of `ledger`: every command but the copies
/// published again after a broken link (`again`), whose own records were
/// marked done when the broker first acknowledged them; written as live,
/// they would never be marked done again and be replayed at every start.
fn spooled(ledger: &Ledger<Accepted>) -> impl Iterator<Item = crate::delivery::spool::Live<'_>> {
    ledger
        .iter()
        .filter(|(_, job)| !job.again)
        .map(|(seq, job)| (seq, job.received_wall, job.payload.as_slice()))
}

/// Opens SPOOL_FILE for writing with exactly the [`spooled`] commands of `ledger` in it,
/// first moving aside a file that must be kept (unread or damaged).
fn open_spool(
    path: PathBuf,
    move_first: Option<&'static str>,
    ledger: &Ledger<Accepted>,
) -> SpoolState {
    let failing = |path: PathBuf, reason: String, move_first| SpoolState::Failing {
        path,
        reason,
        retry_at: Instant::now() + SPOOL_RETRY,
        move_first,
    };
    if let Some(kind) = move_first {
        match Spool::move_aside(&path, kind, SystemTime::now()) {
            Ok(aside) => log::warn!("spool {}: kept as {}", path.display(), aside.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let reason = format!("cannot move the {kind} file aside: {e}");
                return failing(path, reason, Some(kind));
            }
        }
    }
    match Spool::create(&path, spooled(ledger)) {
        Ok(spool) => SpoolState::Writing(spool),
        Err(e) => failing(path, e.to_string(), None),
    }
}

fn log_spool_failing(path: &Path, reason: &str) {
    log::error!(
        "spool {} cannot be written: {reason}; until it can, commands are accepted only \
         while the broker is connected and published at once (backends wait otherwise); \
         retrying every {} s",
        path.display(),
        SPOOL_RETRY.as_secs()
    );
}

impl Weighed for Accepted {
    fn weight(&self) -> usize {
        self.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(unit: &str, again: bool) -> Accepted {
        let cmd = command::validate(
            format!(r#"{{"type":"IMG","unit":"{unit}"}}"#).as_bytes(),
            true,
        )
        .expect("a valid command");
        let mut job = Accepted::new(cmd, &Config::default(), Instant::now(), SystemTime::now());
        job.again = again;
        job
    }

    #[test]
    fn copies_published_again_are_not_written_to_the_spool() {
        let mut ledger = Ledger::new(WINDOW);
        ledger.push(job("a", false));
        ledger.push(job("b", true));
        ledger.push(job("c", false));
        let units: Vec<String> = spooled(&ledger)
            .map(|(_, _, payload)| String::from_utf8_lossy(payload).into_owned())
            .collect();
        assert_eq!(
            units,
            [
                r#"{"type":"IMG","unit":"a"}"#,
                r#"{"type":"IMG","unit":"c"}"#
            ]
        );
    }
}
