//! The publisher's policy, pure: admission, durability, the write window,
//! acknowledgements and resend, expiry, the hold for cameras (`hold.rs`) and
//! shutdown, as one type that takes [`Event`]s and returns [`Action`]s. Owned
//! by the publisher thread (`publisher.rs`); no sockets, files, channels,
//! clocks or handles in here: time comes in as [`Now`], a connection is a
//! number. A request ([`Action::Write`], [`Action::Disconnect`], a spool
//! `Sync`, `Tidy` or `Open`) always ends its list; the rest of the turn waits
//! here for its answer ([`Event::Written`], [`Event::Spool`]).

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter};

use crate::delivery::item::{Accepted, ReplyTo};
use crate::delivery::ledger::{Ledger, Weighed};
pub use crate::delivery::settings::{OfflineState, Reload, Settings};
use crate::delivery::spool::{Aside, LiveCommand, Recovery, SpoolError};
use crate::ops::log_limit::Kind;
pub use cadence::{Cadence, Class, State};
pub use hold::HeldFor;
use hold::Hold;
pub use seen::Remembered;

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
/// Commands held while the broker is connected (see [`Delivery::room`]).
const CONNECTED_BACKLOG: usize = 4 * WINDOW;
/// Retry interval for a spool that cannot be written.
pub const SPOOL_RETRY: Duration = Duration::from_secs(1);
/// Commands a broker acknowledged this shortly before its connection broke
/// are published again on the next one: a broker that dies (SIGKILL, power)
/// may have acknowledged a command and not yet passed it on (mosquitto
/// queues the PUBACK and the delivery to subscribers alike), and nobody
/// else could ever resend it. At least once, as always.
const AGAIN_WITHIN: Duration = Duration::from_secs(1);
/// While it has commands (queued, in flight, waiting for room), a spool
/// that fails or a spool request open, the loop turns at least this often:
/// TTL expiry, PUBACK deadlines and spool retries ride on it.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// With none of that, the loop waits for an event (or the next hold
/// expiry, or the end of [`AGAIN_WITHIN`]): an idle relay's publisher does
/// not wake. Bounded only so that a wait is a plain number.
pub const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// The time of an event, read by the caller: monotonic for TTLs, holds and
/// retries (they do not jump with the wall clock), wall clock for what must
/// survive a restart.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

/// What the publisher found at `SPOOL_FILE` when it started.
#[derive(Debug)]
pub enum Found {
    /// Someone else could have written it (why): not replayed, moved aside.
    Untrusted(String),
    /// It could not be read (why): kept, moved aside.
    Unreadable(String),
    Read(Recovery),
}

/// What happens to the publisher.
pub enum Event {
    /// At start, with `SPOOL_FILE` set: what the last run left there. Its
    /// live commands are queued first, and the file is written afresh.
    Start(Found),
    /// Cameras remembered from the last run (the device table's file):
    /// known, their presence unknown (or offline) until their heartbeat.
    /// Comes before [`Event::Start`], so that a camera remembered is known
    /// to the commands the spool gives back.
    Remember(Vec<Remembered>),
    /// `STATE_TOPIC` and its "offline" message, published before a clean DISCONNECT.
    OfflineState(Option<OfflineState>),
    /// The most verbose level logged from now on.
    LogLevel(LevelFilter),
    /// A SIGHUP's settings (see [`Reload`]).
    Reload(Reload),
    /// The largest packet the broker in use announced it takes (None: it
    /// did not); it applies to the next command written.
    BrokerLimit(Option<usize>),
    /// Commands a session handed over, taken whole; admitted at the next [`Event::Tick`].
    Batch(Vec<Accepted>),
    /// A turn of the loop: admit what waits, write what is due, tidy the spool.
    Tick,
    /// A fresh (clean) session with the broker: everything unacknowledged is due again.
    LinkUp,
    /// The connection is gone; what was in flight on it is unacknowledged.
    LinkDown,
    /// A planned move to another broker: write nothing more on this
    /// connection; PUBACKs for what is in flight still come.
    LinkDraining,
    /// The connection was closed as planned after [`Event::LinkDraining`]:
    /// what is still unacknowledged goes out on the next one, and nothing
    /// acknowledged is published again.
    LinkClosed,
    /// PUBACKs, in the order they were read.
    Acked(Vec<u16>),
    /// What the device side saw, in the order it saw it.
    Sightings(Vec<Sighting>),
    /// An operator's request (`ms500-relay held`, `cancel`) on the
    /// connection `conn`, sent by `by`: answered with lines to it, then
    /// [`Action::Answered`].
    Operator {
        request: crate::protocol::control::Control,
        conn: u64,
        by: String,
    },
    /// The answer to [`Action::Write`] or [`Action::Disconnect`].
    Written(Result<(), WriteError>),
    /// The answer to a spool request.
    Spool(SpoolOutcome),
    /// Intake stopped: publish for at most `grace` more, then give up.
    Stop { grace: Duration },
    /// No session can hand over commands any more.
    IntakeClosed,
    /// The loop ended (see [`Delivery::ending`]); `unread` commands are still
    /// in the job channel. Tidies the spool and says goodbye to the broker.
    Close { unread: usize },
}

/// Why the broker's connection could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// There is no connection (it broke, or the policy dropped it).
    NotConnected,
    /// The write failed; the connection is shut.
    Io(std::io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NotConnected => f.write_str("not connected"),
            WriteError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// What the device side saw of the cameras.
#[derive(Debug, Clone, PartialEq)]
pub enum Sighting {
    /// A live heartbeat of `camera` (lower case) that arrived `at`,
    /// classified by its cadence, with the interval learned so far.
    Beat {
        camera: String,
        at: Instant,
        class: Class,
        interval: Option<Duration>,
    },
    /// The device link lost its connection (or sightings were lost on the
    /// way): no camera is present until its next live heartbeat.
    LostSight,
    /// A device reply came on `unit`'s reply topic.
    Reply { unit: String },
}

/// How a spool request went.
#[derive(Debug)]
pub enum SpoolOutcome {
    /// Written (and synced when accepted records were among it); compacted if due.
    Synced,
    /// Writing failed; the spool is closed.
    Broke(SpoolError),
    /// Written afresh with everything [`Delivery::spooled`]; `kept_as` is
    /// where a file that had to be kept was moved first.
    Opened { kept_as: Option<PathBuf> },
    /// Could not be written afresh (why); `move_first` still has to be moved aside.
    OpenFailed {
        kept_as: Option<PathBuf>,
        reason: String,
        move_first: Option<Aside>,
    },
}

/// What to do to the spool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolOp {
    /// Append these accepted commands (read through [`Delivery::spooled_in`]).
    Append(Range<u64>),
    /// Append the end of this command (acknowledged or expired).
    Done(u64),
    /// Request: write what is appended, with one sync.
    Sync,
    /// Request: write what is appended, then compact when the file asks for it.
    Tidy,
    /// Request: move the file aside under this kind first (when set), then
    /// write it afresh with everything [`Delivery::spooled`].
    Open { move_first: Option<Aside> },
}

/// A counter of the status file that moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A command read back from the spool: received and queued.
    Replayed,
    /// A spooled command that no longer validates: rejected, no longer queued.
    Rejected,
    Expired,
    Published,
    /// Held for a camera that is offline (accepted, not published yet).
    Held,
    /// Refused: its camera is offline and the hold is full.
    Refused,
    /// A held command whose lifetime ran out before its camera came back.
    ExpiredHeld,
    /// A command the broker cannot take (too large): dropped, counted as rejected too.
    SetAside,
    /// A command its camera's heartbeats showed it had.
    Confirmed,
    /// A command published again to its camera, and why (`Class::reason`, or `offline`).
    Resent(&'static str),
    /// A published command whose lifetime ran out before its camera confirmed it.
    ExpiredUnconfirmed,
    /// A command that waited behind one that restarts its camera (`SERIAL_AFTER`).
    SerialWait,
    /// A camera sent no heartbeat within `SERIAL_TIMEOUT` after such a command.
    SerialTimeout,
    /// A command an operator dropped before it was published.
    Cancelled,
}

/// What the publisher must do.
pub enum Action {
    Log(Level, String),
    /// A line of a kind that can flood the log: the first few a minute are
    /// logged, the rest summed up (`log_limit`).
    LogLimited(Kind, Level, String),
    Count(Count),
    /// A command's last status line, if any (`ok` lines only go where
    /// asked for), to its connection: its claim on a line ends either way.
    Done {
        reply: ReplyTo,
        line: Option<Vec<u8>>,
    },
    Spool(SpoolOp),
    /// Offer a line to a connection without ending a claim (a held
    /// command's `held` line, whose `ok` or error comes later; a line of
    /// an answer to an operator).
    Line {
        conn: u64,
        line: Vec<u8>,
    },
    /// The operator's request on this connection is answered.
    Answered {
        conn: u64,
    },
    /// Request: write these PUBLISH packets to the broker's connection.
    Write(Vec<u8>),
    /// Request: write these last packets (the "offline" state and
    /// DISCONNECT), telling the publish link the close is ours.
    Disconnect(Vec<u8>),
    /// Drop the broker's connection, for this reason (a command overdue for
    /// its PUBACK): the publish link reports it down and connects again.
    DropLink(String),
    /// The heartbeats of `camera` (lower case) are news to the policy
    /// (`on`: it has commands held or unconfirmed), or no longer.
    Watch {
        camera: String,
        on: bool,
    },
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Log(level, line) => write!(f, "Log({level}, {line:?})"),
            Action::LogLimited(kind, level, line) => {
                write!(f, "LogLimited({kind:?}, {level}, {line:?})")
            }
            Action::Count(count) => write!(f, "Count({count:?})"),
            Action::Done { reply, line } => write!(
                f,
                "Done(to connection {}: {:?})",
                reply.conn,
                line.as_deref().map(String::from_utf8_lossy)
            ),
            Action::Spool(op) => write!(f, "Spool({op:?})"),
            Action::Line { conn, line } => write!(
                f,
                "Line(to connection {conn}: {:?})",
                String::from_utf8_lossy(line)
            ),
            Action::Answered { conn } => write!(f, "Answered(connection {conn})"),
            Action::Write(packets) => write!(f, "Write({} bytes)", packets.len()),
            Action::Disconnect(packets) => write!(f, "Disconnect({} bytes)", packets.len()),
            Action::DropLink(why) => write!(f, "DropLink({why:?})"),
            Action::Watch { camera, on } => write!(f, "Watch({camera:?}, {on})"),
        }
    }
}

/// Why the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Intake closed and everything delivered.
    Drained,
    /// The shutdown grace ran out.
    GraceOver,
}

/// Where accepted commands are kept durable.
#[derive(Debug)]
enum Durability {
    /// No SPOOL_FILE: memory only.
    Off,
    Writing,
    /// SPOOL_FILE cannot be written now; retried every [`SPOOL_RETRY`].
    Failing {
        reason: String,
        retry_at: Instant,
        /// The file was not read (or is damaged) and must be moved aside
        /// as this before anything is written over it.
        move_first: Option<Aside>,
    },
}

/// Why the spool is being written afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Start,
    Lost,
    Retry,
}

/// The request whose answer is awaited.
#[derive(Debug)]
enum Awaiting {
    /// A batch was appended (`batch`: accepted once durable).
    Sync {
        batch: Range<u64>,
    },
    Tidy,
    Open {
        why: Opening,
        batch: Option<Range<u64>>,
    },
    /// Written; with QoS 0 these are then delivered.
    Write {
        qos0: Vec<u64>,
    },
    Bye,
}

/// Steps of a turn, done in order; a request pauses them until its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Admit,
    Overdue,
    ExpireHeld,
    CameraTimers,
    Write,
    Tidy,
    Forget,
    Bye,
}

/// The publisher's state and decisions (see the module doc).
pub struct Delivery {
    settings: Settings,
    ledger: Ledger<Accepted>,
    /// The cameras seen, and the commands held for them or sent to them
    /// and not yet confirmed, out of the ledger (and its budgets).
    hold: Hold,
    /// Commands handed over by sessions that did not fit in the ledger yet
    /// (a batch is taken whole): read, not accepted; admitted first when
    /// there is room, and no new batch is taken while any wait.
    waiting: VecDeque<Accepted>,
    /// Payload bytes of `waiting`.
    waiting_bytes: usize,
    /// The broker's connection can be written to.
    connected: bool,
    /// Since when a write is held back for more room (see [`MIN_WRITE`]).
    held_since: Option<Instant>,
    spool: Durability,
    /// Acknowledged in the last [`AGAIN_WITHIN`] (at most one window), with
    /// their sequence numbers: published again if the connection breaks now.
    recent: VecDeque<(Instant, u64, Accepted)>,
    /// Copies published again that are in the ledger (not counted as queued).
    again_queued: usize,
    /// Read from backends but not accepted yet: their spool write failed
    /// with the broker away. Accepted (and logged so) once the spool takes
    /// them or the broker does; lost with the process until then.
    unaccepted: BTreeSet<u64>,
    awaiting: Option<Awaiting>,
    /// What is left of the current turn.
    steps: VecDeque<Step>,
    /// Set by [`Event::Stop`]: (deadline, grace).
    stop: Option<(Instant, Duration)>,
    intake_closed: bool,
    /// DISCONNECT is on its way: the next broken link is ours.
    closing: bool,
    /// Commands written with QoS 1 on this connection, in write order, with
    /// when: the oldest still unacknowledged is checked against its deadline.
    written_at: VecDeque<(Instant, u64)>,
    /// The command that was first unacknowledged when the link last broke,
    /// and how many breaks in a row it was.
    breaks: Option<(u64, u32)>,
    /// The Maximum Packet Size the broker in use announced (MQTT 5, to the device link).
    broker_limit: Option<usize>,
}

impl Delivery {
    /// A policy starting at `now`, with every camera's presence unknown.
    pub fn new(settings: Settings, now: Now) -> Delivery {
        let spool = match settings.spool {
            Some(_) => Durability::Writing,
            None => Durability::Off,
        };
        Delivery {
            hold: Hold::new(now.mono, settings.max_cameras),
            settings,
            ledger: Ledger::new(WINDOW),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            connected: false,
            held_since: None,
            spool,
            recent: VecDeque::new(),
            again_queued: 0,
            unaccepted: BTreeSet::new(),
            awaiting: None,
            steps: VecDeque::new(),
            stop: None,
            intake_closed: false,
            closing: false,
            written_at: VecDeque::new(),
            breaks: None,
            broker_limit: None,
        }
    }

    /// Takes one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start(found) => self.start(found, now, &mut out),
            Event::Remember(cameras) => self.hold.seen.remember(&cameras),
            Event::OfflineState(state) => self.settings.state = state,
            Event::LogLevel(level) => self.settings.log_level = level,
            Event::Reload(reload) => self.reload(reload),
            Event::BrokerLimit(limit) => self.broker_limit = limit,
            Event::Batch(jobs) => self.wait_for_room(jobs),
            Event::Tick => {
                // Into the queue kept from the last turn: no allocation a turn.
                self.steps.clear();
                self.steps.extend([
                    Step::Admit,
                    Step::Overdue,
                    Step::ExpireHeld,
                    Step::CameraTimers,
                    Step::Write,
                    Step::Tidy,
                    Step::Forget,
                ]);
            }
            Event::LinkUp => self.link_up(&mut out),
            Event::Sightings(sightings) => self.sightings(sightings, now, &mut out),
            Event::Operator { request, conn, by } => {
                self.operator(request, conn, &by, now, &mut out)
            }
            Event::LinkDown => self.link_down(now, &mut out),
            Event::LinkDraining => self.lose_wire(),
            Event::LinkClosed => self.link_closed(&mut out),
            Event::Acked(pkids) => {
                for pkid in pkids {
                    if let Some((seq, job)) = self.ledger.on_acked(pkid) {
                        self.delivered(seq, job, now, &mut out);
                    }
                }
            }
            Event::Written(result) => self.written(result, now, &mut out),
            Event::Spool(outcome) => self.spool_answered(outcome, now, &mut out),
            Event::Stop { grace } => {
                self.stop.get_or_insert((now.mono + grace, grace));
            }
            Event::IntakeClosed => self.intake_closed = true,
            Event::Close { unread } => {
                if self.ending(now) == Some(Ending::GraceOver) {
                    self.give_up(self.waiting.len() + unread, &mut out);
                }
                self.held_at_close(&mut out);
                self.steps = [Step::Tidy, Step::Bye].into();
            }
        }
        self.resume(now, &mut out);
        self.tell_watched(&mut out);
        out
    }

    /// The cameras whose heartbeats became news, or stopped being (their
    /// queue of held or unconfirmed commands appeared or emptied): the
    /// device side wakes the publisher at once for theirs only. Put before
    /// a request that ends the list.
    fn tell_watched(&mut self, out: &mut Vec<Action>) {
        let news = self.hold.take_watch_news();
        if news.is_empty() {
            return;
        }
        let at = match out.last() {
            Some(Action::Spool(_) | Action::Write(_) | Action::Disconnect(_)) => out.len() - 1,
            _ => out.len(),
        };
        let watch = news
            .into_iter()
            .map(|(camera, on)| Action::Watch { camera, on });
        out.splice(at..at, watch);
    }

    /// A SIGHUP's settings, in effect from the next check on.
    fn reload(&mut self, reload: Reload) {
        self.settings.device_timeout = reload.device_timeout;
        self.settings.puback_within = reload.puback_within;
        self.settings.max_packet = reload.max_packet;
        self.settings.lifetimes = reload.lifetimes;
        self.lifetimes_changed();
    }

    /// Does what is left of the turn until a request must be answered.
    fn resume(&mut self, now: Now, out: &mut Vec<Action>) {
        while self.awaiting.is_none() {
            let Some(step) = self.steps.pop_front() else {
                return;
            };
            match step {
                Step::Admit => self.admit_waiting(now, out),
                Step::Overdue => self.overdue(now, out),
                Step::ExpireHeld => self.expire_held(now, out),
                Step::CameraTimers => self.camera_timers(now, out),
                Step::Write => self.write_due(now, out),
                Step::Tidy => self.tidy_spool(now, out),
                Step::Forget => self.forget_recent(now),
                Step::Bye => self.bye(out),
            }
        }
    }

    /// Whether to read the job channel now: nothing waits and there is room.
    pub fn reads_jobs(&self) -> bool {
        self.waiting.is_empty() && self.has_room(self.room(), 0)
    }

    /// Whether to take another batch already in the job channel into the
    /// same admission (one spool sync for everything that arrived together).
    pub fn reads_more(&self) -> bool {
        self.has_room(self.room(), self.waiting.len())
            && self.ledger.weight() + self.waiting_bytes < self.settings.max_bytes
    }

    /// How long the loop may wait for the next event before a [`Event::Tick`]
    /// is due: [`MAX_WAIT`] while something is under way, else until the
    /// next deadline (a held command's expiry, the end of the memory of
    /// recent acknowledgements), at most [`IDLE_WAIT`].
    pub fn wait(&self, now: Now) -> Duration {
        let under_way = self.under_way();
        let mut wait = if under_way { MAX_WAIT } else { IDLE_WAIT };
        if let Some((deadline, _)) = self.stop {
            wait = wait.min(deadline.saturating_duration_since(now.mono));
        }
        if let Some(next) = self.next_expiry(now) {
            wait = wait.min(next);
        }
        if let Some(since) = self.held_since {
            wait = wait.min(MAX_HOLD.saturating_sub(now.mono.saturating_duration_since(since)));
        }
        // (Under way, the loop turns within AGAIN_WITHIN anyway.)
        if let Some(&(at, _, _)) = self.recent.front().filter(|_| !under_way) {
            // Forgotten once strictly older than AGAIN_WITHIN.
            let forget_at = at + AGAIN_WITHIN + Duration::from_millis(1);
            wait = wait.min(forget_at.saturating_duration_since(now.mono));
        }
        wait
    }

    /// Whether anything may come due without an event: commands in the
    /// ledger or waiting for room, a spool request or retry, a goodbye.
    fn under_way(&self) -> bool {
        !self.ledger.is_empty()
            || !self.waiting.is_empty()
            || !self.unaccepted.is_empty()
            || self.awaiting.is_some()
            || self.closing
            || matches!(self.spool, Durability::Failing { .. })
    }

    /// Intake has been told to stop.
    pub fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// Whether the loop ends now, and why.
    pub fn ending(&self, now: Now) -> Option<Ending> {
        if self.intake_closed && self.ledger.is_empty() && self.waiting.is_empty() {
            return Some(Ending::Drained);
        }
        self.stop
            .filter(|(deadline, _)| now.mono >= *deadline)
            .map(|_| Ending::GraceOver)
    }

    /// Commands written on this connection and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.ledger.in_flight()
    }

    /// Payload bytes of the commands held.
    pub fn queued_bytes(&self) -> usize {
        self.ledger.weight()
    }

    /// What the spool must hold: every command but the copies published
    /// again after a broken link (`again`), whose own records were marked
    /// done when the broker first acknowledged them; written as live, they
    /// would never be marked done again and be replayed at every start.
    pub fn spooled(&self) -> impl Iterator<Item = LiveCommand<'_>> {
        self.spooled_in(0..u64::MAX)
    }

    /// The [`Delivery::spooled`] commands with a sequence number in `seqs`:
    /// those queued, then those held (the order of records does not matter).
    pub fn spooled_in(&self, seqs: Range<u64>) -> impl Iterator<Item = LiveCommand<'_>> {
        let queued = self
            .ledger
            .iter_from(seqs.start)
            .take_while(move |(seq, _)| *seq < seqs.end)
            .filter(|(_, job)| !job.again)
            .map(|(seq, job)| job.live(seq, false));
        let held = self
            .hold
            .range(seqs.start, seqs.end)
            .map(|(seq, job)| job.live(seq, true));
        queued.chain(held)
    }

    /// `SPOOL_FILE`, when set.
    pub fn spool_file(&self) -> Option<&Path> {
        self.settings.spool.as_deref()
    }

    fn log(&self, out: &mut Vec<Action>, level: Level, line: impl FnOnce() -> String) {
        if level <= self.settings.log_level {
            out.push(Action::Log(level, line()));
        }
    }

    fn spool_path(&self) -> std::path::Display<'_> {
        self.settings
            .spool
            .as_deref()
            .unwrap_or(Path::new(""))
            .display()
    }
}

mod admit;
pub mod cadence;
mod hold;
mod seen;
mod shutdown;
mod spool;
mod write;

#[cfg(test)]
mod tests;

impl Weighed for Accepted {
    fn weight(&self) -> usize {
        self.payload.len()
    }
}
