//! The publisher thread: the only owner of the rumqttc `Client` that
//! publishes. It drains the job channel filled by backend sessions into the
//! delivery ledger (at most `QUEUE_CAPACITY` commands; past that it stops
//! reading the channel, which blocks the sessions: TCP backpressure), hands
//! due commands to the client within the inflight window, and turns the link
//! events reported by the MQTT event loop (`broker.rs`) into acknowledgements,
//! resends and status lines. On shutdown it keeps publishing for up to
//! `SHUTDOWN_GRACE` seconds, then asks the client to disconnect and triggers
//! the `link` stop for the event loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use rumqttc::{Client, QoS};

use crate::broker::LinkEvent;
use crate::config::{AckMode, Config};
use crate::counters::Counters;
use crate::delivery::Ledger;
use crate::outbox;
use crate::session::Accepted;
use crate::shutdown::Stop;

/// Commands handed to the client and not yet acknowledged. Equal to the
/// client's inflight limit, so packet ids never collide.
pub const WINDOW: usize = 100;

pub struct Publisher {
    client: Client,
    ledger: Ledger<Accepted>,
    qos: QoS,
    ttl: Option<Duration>,
    capacity: usize,
    ack_mode: AckMode,
    counters: Arc<Counters>,
}

impl Publisher {
    pub fn new(client: Client, config: &Config, counters: Arc<Counters>) -> Self {
        Publisher {
            client,
            ledger: Ledger::new(WINDOW),
            qos: if config.mqtt_qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            ttl: (config.command_ttl > 0).then(|| Duration::from_secs(config.command_ttl)),
            capacity: config.queue_capacity,
            ack_mode: config.ack_mode,
            counters,
        }
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
        loop {
            self.pump();
            if deadline.is_none() && intake.is_set() {
                deadline = Some(Instant::now() + grace);
            }
            if !jobs_open && self.ledger.is_empty() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let left = self.ledger.len() + jobs.len();
                if left > 0 {
                    log::error!(
                        "shutdown grace of {} s ran out: {left} accepted commands not delivered",
                        grace.as_secs()
                    );
                }
                break;
            }
            let wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let jobs_rx = if jobs_open && self.ledger.len() < self.capacity {
                &jobs
            } else {
                &no_jobs
            };
            let link_rx = if link_open { &link } else { &no_link };
            select! {
                recv(jobs_rx) -> job => match job {
                    Ok(job) => {
                        self.ledger.push(job);
                        // Take whatever else is waiting, up to capacity, before publishing.
                        while self.ledger.len() < self.capacity {
                            match jobs.try_recv() {
                                Ok(job) => { self.ledger.push(job); }
                                Err(_) => break,
                            }
                        }
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
        if self.ledger.link_up() {
            let _ = self.client.try_disconnect();
        }
        link_stop.trigger();
        log::debug!("publisher stopped");
    }

    /// Hands due commands to the client while the window has room.
    fn pump(&mut self) {
        while let Some((seq, job)) = self.ledger.next_due() {
            if let Some(ttl) = self.ttl {
                if job.received.elapsed() > ttl {
                    if let Some(job) = self.ledger.remove(seq) {
                        self.expire(job, ttl);
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
            LinkEvent::Up => self.ledger.on_link_up(),
            LinkEvent::Down { drained } => self.ledger.on_link_lost(drained),
            LinkEvent::Sent(pkid) => {
                if let Some((_, job)) = self.ledger.on_sent(pkid) {
                    self.delivered(job);
                }
            }
            LinkEvent::Acked(pkid) => {
                if let Some((_, job)) = self.ledger.on_acked(pkid) {
                    self.delivered(job);
                }
            }
        }
    }

    fn delivered(&self, job: Accepted) {
        Counters::add(&self.counters.published);
        log::debug!(
            "broker took {} for unit {} ({} bytes)",
            job.kind.as_str(),
            job.unit,
            job.payload.len()
        );
        if self.ack_mode == AckMode::All {
            if let Some(reply) = &job.reply {
                reply.offer(
                    "status line",
                    outbox::status_line(
                        Some(job.kind.as_str()),
                        Some(&job.unit),
                        job.id.as_deref(),
                        None,
                    ),
                );
            }
        }
    }

    fn expire(&self, job: Accepted, ttl: Duration) {
        Counters::add(&self.counters.expired);
        let age = job.received.elapsed().as_secs();
        log::warn!(
            "expired {} for unit {} after {age} s in the queue (COMMAND_TTL {} s): not published",
            job.kind.as_str(),
            job.unit,
            ttl.as_secs()
        );
        if let Some(reply) = &job.reply {
            reply.offer(
                "status line",
                outbox::status_line(
                    Some(job.kind.as_str()),
                    Some(&job.unit),
                    job.id.as_deref(),
                    Some(&format!(
                        "expired after {age} s (COMMAND_TTL {} s)",
                        ttl.as_secs()
                    )),
                ),
            );
        }
    }
}
