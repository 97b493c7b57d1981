//! The publisher thread: the only owner of the rumqttc `Client` that
//! publishes. It drains the job channel filled by backend sessions into the
//! delivery ledger (at most `QUEUE_CAPACITY` commands; past that it stops
//! reading the channel, which blocks the sessions: TCP backpressure), writes
//! each batch to the spool with one sync (group commit) before counting it
//! accepted, hands due commands to the client within the inflight window, and
//! turns the link events reported by the MQTT event loop (`broker.rs`) into
//! acknowledgements, resends, spool compaction and status lines. On shutdown
//! it keeps publishing for up to `SHUTDOWN_GRACE` seconds, leaves the rest in
//! the spool, then asks the client to disconnect and triggers the `link` stop.
//!
//! The spool is the source of truth. While it cannot be written (a full or
//! read-only file system, an I/O error), a command is accepted only when the
//! broker is connected and it can be published at once; with the broker away
//! too, the job channel is not read (backpressure again). Writing is retried
//! every second and resumes by itself. A spool deleted, truncated or replaced
//! under the relay is noticed at the next write and written again from what
//! is pending.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver};
use rumqttc::{Client, QoS};

use crate::broker::{LinkEvent, LinkShared};
use crate::command;
use crate::config::Config;
use crate::counters::Counters;
use crate::delivery::Ledger;
use crate::error::Error;
use crate::redact;
use crate::session::Accepted;
use crate::shutdown::Stop;
use crate::spool::{Recovery, Replayed, Spool, SpoolError};
use crate::time;

/// Commands handed to the client and not yet acknowledged. Equal to the
/// client's inflight limit, so packet ids never collide.
pub const WINDOW: usize = 100;

/// Commands held while the broker is connected (see [`Publisher::room`]).
const CONNECTED_BACKLOG: usize = 4 * WINDOW;

/// Retry interval for a spool that cannot be written.
const SPOOL_RETRY: Duration = Duration::from_secs(1);

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
    client: Client,
    ledger: Ledger<Accepted>,
    spool: SpoolState,
    /// Read from backends but not accepted yet: their spool write failed
    /// with the broker away. Accepted (and logged so) once the spool takes
    /// them or the broker does; lost with the process until then.
    unconfirmed: BTreeSet<u64>,
    qos: QoS,
    ttl: Option<Duration>,
    capacity: usize,
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
        client: Client,
        config: &Config,
        counters: Arc<Counters>,
        link: Arc<LinkShared>,
    ) -> Result<Self, Error> {
        let mut ledger = Ledger::new(WINDOW);
        let mut spool = SpoolState::Off;
        if !config.spool_file.is_empty() {
            let path = PathBuf::from(&config.spool_file);
            let mut move_first = None;
            let recovery = match Spool::read(&path) {
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
            client,
            ledger,
            spool,
            unconfirmed: BTreeSet::new(),
            qos: if config.mqtt_qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            ttl: (config.command_ttl > 0).then(|| Duration::from_secs(config.command_ttl)),
            capacity: config.queue_capacity,
            counters,
            link,
        })
    }

    pub fn run(
        mut self,
        jobs: Receiver<Accepted>,
        link: Receiver<LinkEvent>,
        intake: Stop,
        link_stop: Stop,
        grace: Duration,
    ) {
        let no_jobs = crossbeam_channel::never();
        let no_link = crossbeam_channel::never();
        let mut jobs_open = true;
        let mut link_open = true;
        let mut deadline: Option<Instant> = None;
        let mut batch = Vec::new();
        loop {
            self.pump();
            self.tidy_spool();
            self.link
                .in_flight
                .store(self.ledger.in_flight(), Ordering::Relaxed);
            self.counters
                .queue_depth
                .store(self.ledger.len() + jobs.len(), Ordering::Relaxed);
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
            if !jobs_open && self.ledger.is_empty() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.give_up(grace, jobs.len());
                break;
            }
            let wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let room = self.room();
            let jobs_rx = if jobs_open && self.ledger.len() < room {
                &jobs
            } else {
                &no_jobs
            };
            let link_rx = if link_open { &link } else { &no_link };
            select! {
                recv(jobs_rx) -> job => match job {
                    Ok(job) => {
                        // Everything that arrived together is one batch: one spool sync.
                        batch.push(job);
                        while self.ledger.len() + batch.len() < room {
                            match jobs.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        self.admit(&mut batch);
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
                recv(intake.receiver()) -> _ => {},
                default(wait) => {},
            }
        }
        self.tidy_spool();
        if self.ledger.link_up() {
            let _ = self.client.try_disconnect();
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
                let live = self
                    .ledger
                    .iter()
                    .map(|(seq, j)| (seq, j.received_wall, j.payload.as_slice()));
                if let Err(e) = spool.compact(live) {
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

    /// Hands due commands to the client while the window has room.
    fn pump(&mut self) {
        if self.ledger.next_due().is_none() {
            return;
        }
        let link = Arc::clone(&self.link);
        let open = link.gate();
        if !*open {
            return;
        }
        while let Some((seq, job)) = self.ledger.next_due() {
            if let Some(ttl) = self.ttl {
                if job.received.elapsed() > ttl {
                    if let Some(job) = self.ledger.remove(seq) {
                        self.expire(seq, job, ttl);
                    }
                    continue;
                }
            }
            let (topic, payload) = (job.topic.clone(), job.payload.clone());
            match self.client.try_publish(topic, self.qos, false, payload) {
                Ok(()) => {
                    self.ledger.mark_handed(seq);
                    if self.unconfirmed.remove(&seq) {
                        // Published at once: accepted.
                        self.log_accepted(std::iter::once(seq));
                    }
                }
                Err(e) => {
                    // The client's queue is full (or the event loop is gone):
                    // try again on the next link event.
                    log::debug!("client queue busy: {e}");
                    break;
                }
            }
        }
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up => {
                log::debug!(
                    "link up: {} queued, {} in flight from before",
                    self.ledger.len(),
                    self.ledger.in_flight()
                );
                self.ledger.on_link_up()
            }
            LinkEvent::Down { drained } => {
                log::debug!(
                    "link down: {} queued, {} in flight, {drained} drained from the client",
                    self.ledger.len(),
                    self.ledger.in_flight()
                );
                self.ledger.on_link_lost(drained)
            }
            LinkEvent::Sent(pkid) => {
                if let Some((seq, job)) = self.ledger.on_sent(pkid) {
                    self.delivered(seq, job);
                }
            }
            LinkEvent::Acked(pkid) => {
                if let Some((seq, job)) = self.ledger.on_acked(pkid) {
                    self.delivered(seq, job);
                }
            }
        }
    }

    fn delivered(&mut self, seq: u64, job: Accepted) {
        Counters::add(&self.counters.published);
        if let SpoolState::Writing(spool) = &mut self.spool {
            spool.done(seq);
        }
        log::debug!(
            "broker took {} for unit {} ({} bytes)",
            job.kind.as_str(),
            job.unit,
            job.payload.len()
        );
        job.report(None);
    }

    fn expire(&mut self, seq: u64, job: Accepted, ttl: Duration) {
        Counters::add(&self.counters.expired);
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
        let queued = self.ledger.len();
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
    let ttl = Duration::from_secs(config.command_ttl);
    let mut unknown_age = 0;
    for r in recovery.live {
        Counters::add(&counters.received);
        let age = time::age(r.received, now);
        let Some(job) = revive(r, config, age) else {
            Counters::add(&counters.rejected);
            continue;
        };
        match age {
            Some(age) if config.command_ttl > 0 && age > ttl => {
                Counters::add(&counters.expired);
                log::warn!(
                    "expired {} for unit {} after {} s in the spool (COMMAND_TTL {} s): not published",
                    job.kind.as_str(),
                    job.unit,
                    age.as_secs(),
                    config.command_ttl
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
    Some(Accepted {
        topic: config.command_topic_for(&cmd.unit),
        kind: cmd.kind,
        unit: cmd.unit,
        id: cmd.id,
        payload: cmd.payload,
        received,
        received_wall: r.received,
        peer: None,
        reply: None,
    })
}

/// Opens SPOOL_FILE for writing with exactly the commands of `ledger` in it,
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
    let live = ledger
        .iter()
        .map(|(seq, j)| (seq, j.received_wall, j.payload.as_slice()));
    match Spool::create(&path, live) {
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
