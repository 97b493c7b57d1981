//! The publisher thread: the only writer of commands to the broker. It reads
//! the job channel (while the policy has room), the publish link's events,
//! presence, operators' requests and the intake stop; hands each to the
//! policy ([`Delivery`]) and performs what it returns: PUBLISH writes on the
//! link's connection, the spool file, lines through [`Replies`], messages to
//! the link ([`ToLink`]), the log and the counters. It owns the connection
//! while it is up, the open spool file and the connections' claims.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender};
use log::{Level, LevelFilter};

use crate::config::{Config, Live};
use crate::delivery::item::{Handover, OperatorRequest};
use crate::delivery::policy::{
    Action, Count, Delivery, Event, Found, Now, OfflineState, Reload, Remembered, Settings,
    SpoolOp, SpoolOutcome, WriteError,
};
use crate::delivery::presence::{Held, HeldView, Presence};
use crate::delivery::replies::Replies;
use crate::delivery::spool::{Aside, Spool, SpoolError};
use crate::error::Error;
use crate::mqtt::link_messages::{FromPublisher, LinkEvent, ToLink};
use crate::mqtt::publish_link::StateMessages;
use crate::mqtt::wire::Wire;
use crate::ops::counters::Counters;
use crate::ops::shutdown::Stop;
use crate::ops::sync::lock;
use crate::ops::time::{mono_ms, unix};

/// How soon the publisher tries again to tell the publish link what its
/// full channel did not take.
const LINK_RETRY: Duration = Duration::from_millis(10);

/// The status file's list of cameras with commands is taken at most this
/// often while it keeps changing (its totals at every turn)...
const CAMERAS_SHOWN_EVERY: Duration = Duration::from_secs(1);
/// ...unless this few cameras have commands: then at every change.
const FEW_CAMERAS: usize = 100;

pub struct Publisher {
    delivery: Delivery,
    /// The publish link's connection, while it is up.
    wire: Option<Wire>,
    /// `SPOOL_FILE`, open while it can be written.
    spool: Option<Spool>,
    counters: Arc<Counters>,
    /// What the publish link is told: the in-flight count, a pause, a drop, the goodbye.
    to_link: ToLink,
    /// Cameras coming online and going offline, from the device side.
    presence: Arc<Presence>,
    /// What is held for cameras, for the status file; and the policy's
    /// change count it was last set at.
    held_view: Arc<HeldView>,
    held_shown: u64,
    /// When the list per camera of `held_view` was last taken.
    cameras_shown: Option<Instant>,
    /// The configuration SIGHUP may replace, and the generation last taken
    /// from it: lifetimes and the log level follow it.
    live: Option<(Arc<Live>, u64)>,
    /// Operators' requests from sessions (`held`, `cancel`).
    operator: Receiver<OperatorRequest>,
    /// The broker limit the policy was last told of.
    broker_limit: Option<usize>,
    /// After a ring of the presence bell: look at the board again by then.
    follow_up: Option<Instant>,
    /// The connections owed lines, which the policy knows by number only.
    replies: Replies,
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
        to_link: Sender<FromPublisher>,
        remembered: &[Remembered],
    ) -> Result<Self, Error> {
        let delivery = Delivery::new(Settings::new(config, log_level()), now());
        let mut publisher = Publisher {
            delivery,
            wire: None,
            spool: None,
            counters,
            to_link: ToLink::new(to_link),
            presence: Arc::default(),
            held_view: Arc::default(),
            held_shown: 0,
            cameras_shown: None,
            live: None,
            operator: crossbeam_channel::never(),
            broker_limit: None,
            follow_up: None,
            replies: Replies::default(),
        };
        // Before the spool's commands come back: a camera remembered is
        // known (its commands wait for its heartbeat however long it takes).
        publisher.step(Event::Remember(remembered.to_vec()));
        if let Some(path) = &config.spool_file {
            publisher.step(Event::Start(find(path)));
        }
        Ok(publisher)
    }

    /// Before writing: the limit the device link learned meanwhile, when it moved.
    fn follow_broker_limit(&mut self) {
        let limit = self.counters.broker_max_packet.load(Ordering::Relaxed);
        let limit = (limit > 0).then_some(limit as usize);
        if limit != self.broker_limit {
            self.broker_limit = limit;
            self.handle(Event::BrokerLimit(limit));
        }
    }

    /// Publishes `state`'s "offline" at a clean stop.
    pub fn with_state(mut self, state: Option<StateMessages>) -> Self {
        let state = state.map(|state| OfflineState {
            topic: state.topic,
            message: state.offline,
        });
        self.step(Event::OfflineState(state));
        self
    }

    /// Takes presence changes from `presence`, and shows what is held in `held`.
    pub fn with_presence(mut self, presence: Arc<Presence>, held: Arc<HeldView>) -> Self {
        self.presence = presence;
        self.held_view = held;
        self
    }

    /// Takes operators' requests from `operator`.
    pub fn with_operator(mut self, operator: Receiver<OperatorRequest>) -> Self {
        self.operator = operator;
        self
    }

    /// Follows `live` (a SIGHUP's lifetimes, broker limits and log level).
    pub fn with_live(mut self, live: Arc<Live>) -> Self {
        let generation = live.generation();
        self.live = Some((live, generation));
        self
    }

    /// A reloaded configuration's lifetimes, broker limits and log level,
    /// once per reload.
    fn follow_reload(&mut self) {
        let Some((live, seen)) = &mut self.live else {
            return;
        };
        let generation = live.generation();
        if generation == *seen {
            return;
        }
        *seen = generation;
        let reload = Reload::new(&live.get());
        self.handle(Event::Reload(reload));
        self.handle(Event::LogLevel(log_level()));
    }

    pub fn run(
        mut self,
        jobs: Receiver<Handover>,
        link: Receiver<LinkEvent>,
        intake: Stop,
        link_stop: Stop,
        grace: Duration,
    ) {
        self.step(Event::LogLevel(log_level()));
        let (no_jobs, no_link, no_intake) = (
            crossbeam_channel::never(),
            crossbeam_channel::never(),
            crossbeam_channel::never(),
        );
        let mut link_open = true;
        let mut jobs_open = true;
        loop {
            self.follow_broker_limit();
            self.follow_reload();
            self.step(Event::Tick);
            self.show_gauges();
            if !self.delivery.stopping() && intake.is_set() {
                self.step(Event::Stop { grace });
            }
            if self.delivery.ending(now()).is_some() {
                break;
            }
            let wait = self.wait();
            self.promise_turn(Instant::now() + wait);
            let jobs_rx = if jobs_open && self.delivery.reads_jobs() {
                &jobs
            } else {
                &no_jobs
            };
            let link_rx = if link_open { &link } else { &no_link };
            let intake_rx = if self.delivery.stopping() {
                &no_intake
            } else {
                intake.receiver()
            };
            select! {
                recv(jobs_rx) -> batch => match batch {
                    Ok(batch) => self.take_jobs(batch, &jobs),
                    Err(_) => {
                        jobs_open = false;
                        self.step(Event::IntakeClosed);
                    }
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
                recv(self.operator) -> asked => {
                    if let Ok(OperatorRequest { request, to, by }) = asked {
                        let conn = self.replies.asked(&to);
                        self.step(Event::Operator { request, conn, by });
                    }
                },
                recv(self.presence.bell()) -> _ => {
                    self.catch_up();
                    // Heartbeats that did not ring are taken within FOLLOW_UP.
                    self.follow_up = Some(Instant::now() + Presence::FOLLOW_UP);
                },
                default(wait) => {},
            }
            self.promise_turn(Instant::now());
        }
        let unread = jobs.try_iter().map(|batch| batch.jobs.len()).sum();
        self.step(Event::Close { unread });
        link_stop.trigger();
        log::debug!("publisher stopped");
    }

    /// How long to wait for the next event: as the policy says, soon when
    /// the link's channel was full, and no later than the status view's
    /// list of cameras or the look at the presence board are due.
    fn wait(&mut self) -> Duration {
        let mut wait = self.delivery.wait(now());
        if self.to_link.behind() {
            wait = wait.min(LINK_RETRY);
        }
        if let Some(at) = self.cameras_due() {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        // Kept until it has passed (this turn took the board already): a
        // turn for anything else before then must not forget it.
        if let Some(at) = self.follow_up {
            match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => wait = wait.min(left),
                _ => self.follow_up = None,
            }
        }
        wait
    }

    /// Everything that arrived together is one batch: one spool sync.
    fn take_jobs(&mut self, batch: Handover, jobs: &Receiver<Handover>) {
        self.take_batch(batch);
        while self.delivery.reads_more() {
            match jobs.try_recv() {
                Ok(more) => self.take_batch(more),
                Err(_) => break,
            }
        }
    }

    /// The commands to the policy, their claims on status lines kept here.
    fn take_batch(&mut self, batch: Handover) {
        if let Some(claims) = batch.claims {
            self.replies.take(claims);
        }
        self.step(Event::Batch(batch.jobs));
    }

    fn on_link(&mut self, event: LinkEvent) {
        let event = match event {
            LinkEvent::Up(wire) => {
                self.wire = Some(wire);
                Event::LinkUp
            }
            LinkEvent::Down => {
                self.wire = None;
                Event::LinkDown
            }
            LinkEvent::Acked(pkids) => Event::Acked(pkids),
            LinkEvent::Draining => {
                self.step(Event::LinkDraining);
                // From here on nothing is written: the link may count on
                // this number to fall to zero.
                self.to_link.in_flight(self.delivery.in_flight());
                self.to_link.tell(FromPublisher::Paused);
                return;
            }
            LinkEvent::Closed => {
                self.wire = None;
                Event::LinkClosed
            }
        };
        self.step(event);
    }

    /// The gauges of the status file, and the turn count that shows this
    /// thread is alive.
    fn show_gauges(&mut self) {
        self.to_link.in_flight(self.delivery.in_flight());
        let queued_bytes = self.delivery.queued_bytes() as u64;
        self.counters
            .queue_bytes
            .store(queued_bytes, Ordering::Relaxed);
        let spool_bytes = self.spool.as_ref().map_or(0, Spool::bytes);
        self.counters
            .spool_bytes
            .store(spool_bytes, Ordering::Relaxed);
        let changes = self.delivery.hold_changes();
        if changes == self.held_shown {
            return;
        }
        let (commands, unconfirmed, bytes) = (
            self.delivery.held(),
            self.delivery.unconfirmed(),
            self.delivery.held_bytes(),
        );
        let c = &self.counters;
        c.held.store(commands as u64, Ordering::Relaxed);
        c.held_bytes.store(bytes as u64, Ordering::Relaxed);
        c.unconfirmed.store(unconfirmed as u64, Ordering::Relaxed);
        // The list per camera is sorted from every camera's queue: while a
        // fleet's commands are released it changes every turn, and is
        // taken at most once per CAMERAS_SHOWN_EVERY (the totals always).
        let now = Instant::now();
        let few = self.delivery.cameras_with_commands() <= FEW_CAMERAS;
        if few
            || self
                .cameras_shown
                .is_none_or(|at| now >= at + CAMERAS_SHOWN_EVERY)
        {
            self.held_shown = changes;
            self.cameras_shown = Some(now);
            self.held_view.set(Held {
                commands,
                unconfirmed,
                bytes,
                by_camera: self.delivery.held_by_camera(now),
            });
        } else {
            self.held_view.set_totals(commands, unconfirmed, bytes);
        }
    }

    /// When the list per camera left behind by [`Publisher::show_gauges`]
    /// is due, if it is.
    fn cameras_due(&self) -> Option<Instant> {
        let changed = self.delivery.hold_changes() != self.held_shown;
        changed.then(|| {
            self.cameras_shown
                .map_or_else(Instant::now, |at| at + CAMERAS_SHOWN_EVERY)
        })
    }

    /// Tells the status writer when this loop turns again at the latest:
    /// a loop that does not is stuck.
    fn promise_turn(&self, by: Instant) {
        self.counters
            .publisher_due_ms
            .store(mono_ms(by), Ordering::Relaxed);
    }

    /// Hands `event` to the policy, a SIGHUP's settings first (this loop
    /// is not woken for a reload).
    fn step(&mut self, event: Event) {
        self.follow_reload();
        self.catch_up();
        self.handle(event);
    }

    /// Hands the policy what the device side saw since the last look, so
    /// that no decision is made without it.
    fn catch_up(&mut self) {
        let sightings = self.presence.take();
        if !sightings.is_empty() {
            self.handle(Event::Sightings(sightings));
        }
    }

    /// Hands `event` to the policy and performs what it says; the answer
    /// to a request (always the last action of a list) goes back to it in
    /// turn, until it asks for nothing more.
    fn handle(&mut self, event: Event) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            let actions = self.delivery.handle(event, now());
            next = self.perform(actions);
        }
    }

    /// Performs `actions` in order; returns the answer to the request that
    /// ends the list, if it does.
    fn perform(&mut self, actions: Vec<Action>) -> Option<Event> {
        let mut answer = None;
        for action in actions {
            debug_assert!(answer.is_none(), "a request ends its list");
            match action {
                Action::Log(level, line) => log::log!(level, "{line}"),
                Action::LogLimited(kind, level, line) => {
                    if crate::ops::log_limit::allow(kind) {
                        log::log!(level, "{line}");
                    }
                }
                Action::Count(count) => self.count(count),
                Action::Done { reply, line } => self.replies.done(reply.conn, line),
                Action::Line { conn, line } => self.replies.line(conn, line),
                Action::Answered { conn } => self.replies.answered(conn),
                Action::Spool(op) => answer = self.spool(op).map(Event::Spool),
                Action::Write(packets) => answer = Some(Event::Written(self.write(&packets))),
                Action::Disconnect(packets) => {
                    self.to_link.tell(FromPublisher::Closing);
                    let written = match self.wire.take() {
                        Some(wire) => wire.write_all(&packets).map_err(WriteError::Io),
                        None => Err(WriteError::NotConnected),
                    };
                    answer = Some(Event::Written(written));
                }
                Action::Watch { camera, on } => self.presence.watch(camera, on),
                Action::DropLink(why) => {
                    // The publish link hears of it and reports the link down.
                    self.to_link.tell(FromPublisher::Dropped(why));
                    if let Some(wire) = self.wire.take() {
                        wire.shut();
                    }
                }
            }
        }
        answer
    }

    fn count(&self, count: Count) {
        let c = &self.counters;
        match count {
            Count::Replayed => {
                Counters::add(&c.received);
                Counters::add(&c.queued);
            }
            Count::Rejected => Counters::add(&c.rejected),
            Count::Expired => Counters::add(&c.expired),
            Count::Published => Counters::add(&c.published),
            Count::Refused => Counters::add(&c.rejected),
            Count::ExpiredHeld => {
                Counters::add(&c.expired);
                Counters::add(&c.expired_held);
            }
            Count::SetAside => {
                Counters::add(&c.rejected);
                Counters::add(&c.set_aside);
            }
            // Published already (and unqueued then), or not yet done.
            Count::Confirmed => return Counters::add(&c.confirmed),
            Count::Resent(reason) => return c.resent(reason),
            Count::ExpiredUnconfirmed => return Counters::add(&c.expired_unconfirmed),
            Count::SerialWait => return Counters::add(&c.serial_waits),
            Count::SerialTimeout => return Counters::add(&c.serial_timeouts),
            Count::Cancelled => Counters::add(&c.cancelled),
            Count::Held => return,
        }
        if count != Count::Replayed {
            c.unqueue();
        }
    }

    /// Writes PUBLISH packets to the broker, the log first: whoever sees a
    /// command arrive finds its "accepted" line already there.
    fn write(&mut self, packets: &[u8]) -> Result<(), WriteError> {
        let Some(wire) = &self.wire else {
            return Err(WriteError::NotConnected);
        };
        log::logger().flush();
        let Err(e) = wire.write_all(packets) else {
            return Ok(());
        };
        // The publish link hears of it too and reports the link down.
        let why = format!("writing to the broker failed: {e}");
        self.to_link.tell(FromPublisher::Dropped(why));
        wire.shut();
        self.wire = None;
        Err(WriteError::Io(e))
    }

    /// Does `op` to the spool file; the outcome of a request, also shown
    /// to the status file and metrics (whether the spool is failing, since
    /// when and why).
    fn spool(&mut self, op: SpoolOp) -> Option<SpoolOutcome> {
        let outcome = self.spool_op(op)?;
        let problem = match &outcome {
            SpoolOutcome::Synced | SpoolOutcome::Opened { .. } => None,
            SpoolOutcome::Broke(e) => Some(e.to_string()),
            SpoolOutcome::OpenFailed { reason, .. } => Some(reason.clone()),
        };
        // The problem and its start change together, under the problem's
        // lock (the status snapshot reads both under it), and the bell
        // rings after both: a snapshot never shows a failing spool without
        // its reason.
        let since = &self.counters.spool_failing_since_unix;
        let mut changed = false;
        {
            let mut shown = lock(&self.counters.spool_problem);
            if problem.is_none() || since.load(Ordering::Relaxed) == 0 {
                let now = if problem.is_some() {
                    unix(SystemTime::now()).max(1)
                } else {
                    0
                };
                changed = since
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |was| {
                        (was != now).then_some(now)
                    })
                    .is_ok();
            }
            *shown = problem;
        }
        if changed {
            self.counters.state_bell.ring();
        }
        Some(outcome)
    }

    fn spool_op(&mut self, op: SpoolOp) -> Option<SpoolOutcome> {
        let outcome = match (op, &mut self.spool) {
            (SpoolOp::Append(seqs), Some(spool)) => {
                for command in self.delivery.spooled_in(seqs) {
                    spool.accepted(command);
                }
                return None;
            }
            (SpoolOp::Done(seq), Some(spool)) => {
                spool.done(seq);
                return None;
            }
            (SpoolOp::Append(_) | SpoolOp::Done(_), None) => return None,
            (SpoolOp::Sync, Some(spool)) => spool.sync(),
            (SpoolOp::Tidy, Some(spool)) => spool.sync().and_then(|()| {
                if !spool.wants_compaction() {
                    return Ok(());
                }
                spool.compact(self.delivery.spooled())
            }),
            (SpoolOp::Sync | SpoolOp::Tidy, None) => Err(SpoolError::Lost("not open".into())),
            (SpoolOp::Open { move_first }, _) => return Some(self.open_spool(move_first)),
        };
        Some(match outcome {
            Ok(()) => SpoolOutcome::Synced,
            Err(e) => {
                self.spool = None;
                SpoolOutcome::Broke(e)
            }
        })
    }

    /// Opens SPOOL_FILE for writing with exactly the commands the policy
    /// says it must hold, first moving aside a file that must be kept
    /// (unread or damaged).
    fn open_spool(&mut self, move_first: Option<Aside>) -> SpoolOutcome {
        self.spool = None;
        let Some(path) = self.delivery.spool_file().map(Path::to_path_buf) else {
            return SpoolOutcome::OpenFailed {
                kept_as: None,
                reason: "no SPOOL_FILE".to_string(),
                move_first,
            };
        };
        let mut kept_as = None;
        if let Some(kind) = move_first {
            match Spool::move_aside(&path, kind, SystemTime::now()) {
                Ok(aside) => kept_as = Some(aside),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return SpoolOutcome::OpenFailed {
                        kept_as,
                        reason: format!("cannot move the {kind} file aside: {e}"),
                        move_first,
                    }
                }
            }
        }
        match Spool::create(&path, self.delivery.spooled()) {
            Ok(spool) => {
                self.spool = Some(spool);
                SpoolOutcome::Opened { kept_as }
            }
            Err(e) => SpoolOutcome::OpenFailed {
                kept_as,
                reason: e.to_string(),
                move_first: None,
            },
        }
    }
}

/// What the last run left at `path`: only a file no one else could have
/// written is read.
fn find(path: &Path) -> Found {
    if let Some(why) = Spool::distrust(path) {
        return Found::Untrusted(why);
    }
    match Spool::read(path) {
        Ok(recovery) => Found::Read(recovery),
        Err(e) => Found::Unreadable(e.to_string()),
    }
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// The most verbose level this module logs at.
fn log_level() -> LevelFilter {
    [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ]
    .into_iter()
    .find(|level| log::log_enabled!(*level))
    .map_or(LevelFilter::Off, |level| level.to_level_filter())
}
