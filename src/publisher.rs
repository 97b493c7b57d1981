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

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver};
use rumqttc::{Client, QoS};

use crate::broker::{LinkEvent, LinkShared};
use crate::command;
use crate::config::{AckMode, Config};
use crate::counters::Counters;
use crate::delivery::Ledger;
use crate::error::Error;
use crate::redact;
use crate::session::Accepted;
use crate::shutdown::Stop;
use crate::spool::{Replayed, Spool};

/// Commands handed to the client and not yet acknowledged. Equal to the
/// client's inflight limit, so packet ids never collide.
pub const WINDOW: usize = 100;

/// Commands held while the broker is connected (see [`Publisher::room`]).
const CONNECTED_BACKLOG: usize = 4 * WINDOW;

pub struct Publisher {
    client: Client,
    ledger: Ledger<Accepted>,
    spool: Option<Spool>,
    qos: QoS,
    ttl: Option<Duration>,
    capacity: usize,
    ack_mode: AckMode,
    counters: Arc<Counters>,
    /// Shared with the event loop: the in-flight count and the hand-off gate.
    link: Arc<LinkShared>,
}

impl Publisher {
    /// With `SPOOL_FILE` set, reads the spool left by the last run: its live
    /// commands are queued first, and the file is rewritten to hold just them.
    pub fn new(
        client: Client,
        config: &Config,
        counters: Arc<Counters>,
        link: Arc<LinkShared>,
    ) -> Result<Self, Error> {
        let mut ledger = Ledger::new(WINDOW);
        let mut spool = None;
        if !config.spool_file.is_empty() {
            let path = Path::new(&config.spool_file);
            let fail =
                |e: std::io::Error| Error::Setup(format!("SPOOL_FILE {}: {e}", config.spool_file));
            let recovery = Spool::read(path).map_err(fail)?;
            if let Some((offset, len)) = recovery.damaged {
                log::warn!(
                    "spool {}: damaged or torn data at offset {offset} ({len} bytes) skipped; \
                     the {} intact commands before it are kept",
                    config.spool_file,
                    recovery.live.len()
                );
            }
            let ttl = Duration::from_secs(config.command_ttl);
            for r in recovery.live {
                let Some((job, age)) = revive(r, config) else {
                    continue;
                };
                if config.command_ttl > 0 && age > ttl {
                    Counters::add(&counters.expired);
                    log::warn!(
                        "expired {} for unit {} after {} s in the spool (COMMAND_TTL {} s): not published",
                        job.kind.as_str(),
                        job.unit,
                        age.as_secs(),
                        config.command_ttl
                    );
                    continue;
                }
                ledger.push(job);
            }
            if !ledger.is_empty() {
                log::info!(
                    "spool {}: {} unacknowledged commands from the last run queued first",
                    config.spool_file,
                    ledger.len()
                );
            }
            let live = ledger
                .iter()
                .map(|(seq, j)| (seq, j.received_wall, j.payload.as_slice()));
            spool = Some(Spool::create(path, live).map_err(fail)?);
        }
        Ok(Publisher {
            client,
            ledger,
            spool,
            qos: if config.mqtt_qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            ttl: (config.command_ttl > 0).then(|| Duration::from_secs(config.command_ttl)),
            capacity: config.queue_capacity,
            ack_mode: config.ack_mode,
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
    fn room(&self) -> usize {
        if self.ledger.link_up() {
            self.capacity.min(CONNECTED_BACKLOG)
        } else {
            self.capacity
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
            if let Some(spool) = self.spool.as_mut() {
                spool.accepted(self.ledger.next_seq(), job.received_wall, &job.payload);
            }
            self.ledger.push(job);
        }
        self.sync_spool();
        // Logged only now that they count as accepted (spooled and synced).
        if log::log_enabled!(log::Level::Info) {
            for (_, job) in self.ledger.iter_from(first) {
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
    }

    /// Writes pending spool records; on failure the spool is given up (commands stay in memory).
    fn sync_spool(&mut self) {
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.sync() {
                log::error!(
                    "spool {}: write failed: {e}; spooling stopped, queued commands are kept in memory only",
                    spool.path().display()
                );
                self.spool = None;
            }
        }
    }

    fn tidy_spool(&mut self) {
        self.sync_spool();
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if !spool.wants_compaction() {
            return;
        }
        let live = self
            .ledger
            .iter()
            .map(|(seq, j)| (seq, j.received_wall, j.payload.as_slice()));
        if let Err(e) = spool.compact(live) {
            log::error!(
                "spool {}: compaction failed: {e}; spooling stopped, queued commands are kept in memory only",
                spool.path().display()
            );
            self.spool = None;
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
                Ok(()) => self.ledger.mark_handed(seq),
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
        if let Some(spool) = self.spool.as_mut() {
            spool.done(seq);
        }
        log::debug!(
            "broker took {} for unit {} ({} bytes)",
            job.kind.as_str(),
            job.unit,
            job.payload.len()
        );
        if self.ack_mode == AckMode::All {
            job.report(None);
        }
    }

    fn expire(&mut self, seq: u64, job: Accepted, ttl: Duration) {
        Counters::add(&self.counters.expired);
        if let Some(spool) = self.spool.as_mut() {
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
            Some(spool) if queued > 0 => log::warn!(
                "shutdown grace of {} s ran out: {queued} unacknowledged commands stay in the spool {} for the next start",
                grace.as_secs(),
                spool.path().display()
            ),
            None if queued > 0 => log::error!(
                "shutdown grace of {} s ran out: {queued} accepted commands not delivered (no SPOOL_FILE)",
                grace.as_secs()
            ),
            _ => {}
        }
        if waiting > 0 {
            log::error!(
                "shutdown grace of {} s ran out: {waiting} commands read from backends were never accepted (not spooled, no status line)",
                grace.as_secs()
            );
        }
    }
}

/// Rebuilds a queued command from its spooled bytes, with its age. Type and unit were valid
/// when it was accepted; a spool edited by hand or a changed config can still
/// make it unusable, which is logged and skipped.
fn revive(r: Replayed, config: &Config) -> Option<(Accepted, Duration)> {
    let cmd = match command::validate(&r.payload, false) {
        Ok(cmd) => cmd,
        Err(rejection) => {
            log::warn!("spool: skipping a command that no longer validates: {rejection}");
            return None;
        }
    };
    let age = SystemTime::now()
        .duration_since(r.received)
        .unwrap_or(Duration::ZERO);
    let job = Accepted {
        topic: config.command_topic_for(&cmd.unit),
        kind: cmd.kind,
        unit: cmd.unit,
        id: cmd.id,
        payload: cmd.payload,
        received: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        received_wall: r.received,
        peer: None,
        reply: None,
    };
    Some((job, age))
}
