//! One backend connection's session thread: reads the socket (sleeping in
//! poll(2) while idle), frames and validates commands, claims reply routes
//! for SCS/UDS and pushes accepted commands onto the bounded job channel the
//! publisher reads (blocking there is the backpressure of PROTOCOL.md §2.6).
//! Its writer thread (`outbox::write_loop`) writes back; a closed peer still
//! owed lines goes to the lingering thread. Started by the listener.

use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{SendTimeoutError, Sender};

use crate::backend::lingering::Lingering;
use crate::backend::peers;
use crate::backend::routes::ReplyRoutes;
use crate::config::{AckMode, Config, Live};
use crate::delivery::item::{Accepted, Handover, OperatorRequest, ReplyTo};
use crate::delivery::outbox::{self, Claims, Finish, Outbox};
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Kind};
use crate::ops::shutdown::Stop;
use crate::ops::sys;
use crate::ops::transport::{Peer, Stream};
use crate::protocol::command;
use crate::protocol::control::{self, Control};
use crate::protocol::frame::{Frame, FrameDecoder};
use crate::protocol::json::Json;
use crate::protocol::status;

/// How often a blocked queue push looks at the stop signal; also the read
/// timeout (a read only starts once poll(2) says the socket is readable).
const POLL: Duration = Duration::from_millis(250);
/// While draining at shutdown: a read that finds nothing within this means
/// the kernel holds nothing more for this connection.
const DRAIN_POLL: Duration = Duration::from_millis(5);
const READ_CHUNK: usize = 64 * 1024;
/// A value left incomplete this long is a slow-loris: discarded, connection closed.
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection that has not sent one complete value this long after it
/// was accepted is closed: idle sockets cannot hold the MAX_CONNECTIONS places.
pub const FIRST_VALUE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read just to count what the shutdown grace left unread.
const COUNT_UNREAD_MAX: usize = 16 * 1024 * 1024;

/// One of the `MAX_CONNECTIONS` places; freed when dropped, which a session
/// does as soon as it stops reading its peer. Freeing it wakes the
/// listeners (TCP and Unix share the places) that stopped accepting
/// because every place was taken.
pub struct Slot {
    pub active: Arc<AtomicUsize>,
    pub freed: Vec<Sender<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        // Full means that listener has a wake-up pending already.
        for freed in &self.freed {
            let _ = freed.try_send(());
        }
    }
}

/// What every session shares.
pub struct Shared {
    /// Read at each decision: SIGHUP may replace it.
    pub config: Arc<Live>,
    pub jobs: Sender<Handover>,
    /// Operators' requests (`held`, `cancel`) for the publisher.
    pub operator: Sender<OperatorRequest>,
    pub routes: ReplyRoutes,
    pub counters: Arc<Counters>,
    pub intake: Stop,
    /// Connections handed to the lingering thread, and its waker.
    pub lingering: Sender<Lingering>,
    pub lingering_wake: Sender<()>,
}

impl Shared {
    /// When reading must stop at shutdown: the grace after the stop signal.
    fn drain_deadline(&self) -> Instant {
        self.intake.triggered_at().unwrap_or_else(Instant::now) + self.config.get().shutdown_grace
    }
}

/// Why a session ended.
enum End {
    PeerClosed,
    /// Shutdown: everything the kernel held was read.
    Stopped,
    /// Shutdown: the grace ran out with commands still unread.
    GraceOver {
        commands: usize,
        bytes: usize,
    },
    Fatal,
    SlowValue,
    /// No complete value within [`FIRST_VALUE_TIMEOUT`] of connecting.
    NothingSent,
    Io(std::io::Error),
    PublisherGone,
}

/// The state of one connection as its session reads it.
struct Reader<'a> {
    stream: &'a Stream,
    outbox: Outbox,
    shared: &'a Shared,
    /// Status lines this connection wants: ACK_MODE, unless it asked otherwise.
    ack_mode: AckMode,
    /// Reading at shutdown: pushes give up at the deadline.
    draining: Option<Instant>,
    /// Commands framed and validated, handed to the publisher together
    /// (one channel send, one wake-up): all those of one read, or
    /// [`BATCH_COMMANDS`] / [`BATCH_BYTES`] when that comes first.
    batch: Vec<Accepted>,
    batch_bytes: usize,
    /// The batch's claims on this connection's status lines.
    claims: Option<Claims>,
    /// A complete value came (a command, an `ack_mode` request, or one refused).
    sent_a_value: bool,
    /// The configuration as of the reload generation it was taken at:
    /// looked up again only after a reload, not for every command.
    config: (u64, Arc<Config>),
}

/// Most commands handed to the publisher in one batch.
pub const BATCH_COMMANDS: usize = 64;
/// A batch is handed over once its payloads reach this many bytes.
pub const BATCH_BYTES: usize = 64 * 1024;

pub fn run(stream: Stream, peer: Peer, id: u64, shared: Arc<Shared>, slot: Slot) {
    let stream = Arc::new(stream);
    let (outbox, woken) = Outbox::new(id, peer);
    let (finish_tx, finish_rx) = crossbeam_channel::bounded::<Finish>(1);
    let writer = {
        let (stream, outbox) = (Arc::clone(&stream), outbox.clone());
        std::thread::Builder::new()
            .name(format!("backend-write-{id}"))
            .spawn(move || outbox::write_loop(stream, outbox, woken, finish_rx))
    };
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            log::warn!("backend {peer}: cannot start its writer thread: {e}");
            return;
        }
    };

    outbox.set_wrap_replies(shared.config.get().ack_mode != AckMode::None);
    let mut reader = Reader {
        stream: &stream,
        outbox: outbox.clone(),
        shared: &shared,
        ack_mode: shared.config.get().ack_mode,
        draining: None,
        batch: Vec::with_capacity(BATCH_COMMANDS),
        batch_bytes: 0,
        claims: None,
        sent_a_value: false,
        config: (shared.config.generation(), shared.config.get()),
    };
    let end = reader.read_loop();
    // No longer reading this peer: its MAX_CONNECTIONS place is free.
    drop(slot);
    log_end(&end, peer, &shared);
    // Closed (or stopped) means no more replies for this connection (PROTOCOL.md §1.3)...
    shared.routes.release(id);
    // ...but status lines it is owed still go out to a peer that only half-closed.
    let linger =
        matches!(end, End::PeerClosed | End::Stopped | End::GraceOver { .. }) && outbox.owed() > 0;
    let _ = finish_tx.send(if linger {
        Finish::HandOff
    } else {
        Finish::Flush
    });
    let _ = writer.join();
    if linger {
        match Arc::try_unwrap(stream) {
            Ok(stream) => {
                outbox.rewire(shared.lingering_wake.clone());
                let _ = shared.lingering.send(Lingering::new(stream, outbox));
            }
            Err(_) => log::debug!("backend {peer}: socket still shared; not lingering"),
        }
    }
}

/// One line saying how the session ended.
fn log_end(end: &End, peer: Peer, shared: &Shared) {
    match end {
        End::PeerClosed => log::info!("backend {peer} closed the connection"),
        End::Stopped => log::info!("backend {peer}: read all it sent (shutting down)"),
        End::GraceOver { commands, bytes } => log::warn!(
            "backend {peer}: the shutdown grace of {} s ran out with {commands} commands \
             ({bytes} bytes) it sent still unread: not published",
            shared.config.get().shutdown_grace.as_secs()
        ),
        End::Fatal => log::info!("backend {peer}: connection closed by the relay"),
        End::SlowValue => {
            if log_limit::allow(Kind::RejectedCommand) {
                log::warn!(
                    "backend {peer} left a value incomplete for {} s: discarded, connection closed",
                    PARTIAL_TIMEOUT.as_secs()
                )
            }
        }
        End::NothingSent => {
            if log_limit::allow(Kind::RejectedCommand) {
                log::warn!(
                    "backend {peer} sent no complete value within {} s: connection closed",
                    FIRST_VALUE_TIMEOUT.as_secs()
                )
            }
        }
        End::Io(e) => log::info!("backend {peer}: connection lost: {e}"),
        End::PublisherGone => log::warn!("backend {peer}: publisher gone, closing"),
    }
}

impl Reader<'_> {
    fn peer(&self) -> Peer {
        self.outbox.peer()
    }

    fn read_loop(&mut self) -> End {
        let mut stream = self.stream;
        let mut decoder = FrameDecoder::new(self.shared.config.get().max_message_bytes);
        self.stream.set_nodelay();
        if let Err(e) = self.stream.set_read_timeout(Some(POLL)) {
            return End::Io(e);
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let mut partial_since: Option<Instant> = None;
        let connected = Instant::now();
        loop {
            if self.draining.is_none() && self.shared.intake.is_set() {
                let deadline = self.shared.drain_deadline();
                self.draining = Some(deadline);
                if let Err(e) = self.stream.set_read_timeout(Some(DRAIN_POLL)) {
                    return End::Io(e);
                }
            }
            if let Some(deadline) = self.draining {
                if Instant::now() >= deadline {
                    return self.count_unread(&mut decoder, 0, &mut buf);
                }
            }
            if partial_since.is_some_and(|t| t.elapsed() > PARTIAL_TIMEOUT) {
                return End::SlowValue;
            }
            // A value begun has its own clock (a slow-loris above).
            if !self.sent_a_value
                && partial_since.is_none()
                && connected.elapsed() > FIRST_VALUE_TIMEOUT
            {
                return End::NothingSent;
            }
            if self.draining.is_none() && !self.wait_readable(partial_since, connected) {
                continue;
            }
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    // Rate-limited: a peer can repeat this as fast as it connects.
                    if let Some(partial) = decoder.finish() {
                        if log_limit::allow(Kind::RejectedCommand) {
                            log::warn!(
                                "backend {} closed with an incomplete value of {partial} bytes: discarded",
                                self.peer()
                            );
                        }
                    }
                    return End::PeerClosed;
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.draining.is_some() {
                        // The kernel holds nothing more for this connection.
                        return End::Stopped;
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return End::Io(e),
            };
            decoder.push(&buf[..n]);
            if let Some(end) = self.handle_frames(&mut decoder) {
                return match end {
                    End::GraceOver { commands, .. } => {
                        self.count_unread(&mut decoder, commands, &mut buf)
                    }
                    other => other,
                };
            }
            partial_since = match (decoder.pending_bytes(), partial_since) {
                (0, _) => None,
                (_, None) => Some(Instant::now()),
                (_, since) => since,
            };
        }
    }

    /// Sleeps until the peer sent something (or closed), the intake stops, or
    /// an incomplete value's time runs out: an idle connection costs no
    /// wake-up. False when the socket is not (known to be) readable. Until
    /// the peer sent a complete value (or began one) it also wakes when
    /// [`FIRST_VALUE_TIMEOUT`] since `connected` runs out.
    fn wait_readable(&self, partial_since: Option<Instant>, connected: Instant) -> bool {
        use std::os::fd::AsRawFd;
        let socket = self.stream.as_raw_fd();
        let partial = partial_since.map(|t| PARTIAL_TIMEOUT.saturating_sub(t.elapsed()));
        // A value begun has only its own clock (see read_loop).
        let first = (!self.sent_a_value && partial_since.is_none())
            .then(|| FIRST_VALUE_TIMEOUT.saturating_sub(connected.elapsed()));
        let timeout = partial.or(first).map(|t| t + Duration::from_millis(1));
        let Some(stop) = self.shared.intake.fd() else {
            // No pipe for the stop signal: fall back on the read timeout.
            return true;
        };
        match sys::wait_readable([socket, stop], timeout) {
            Ok([readable, _]) => readable,
            // Let the read itself say what is wrong.
            Err(_) => true,
        }
    }

    /// Handles every complete frame the decoder holds, then hands what it
    /// accepted to the publisher; `Some` ends the session.
    fn handle_frames(&mut self, decoder: &mut FrameDecoder) -> Option<End> {
        let mut fatal = false;
        while let Some(frame) = decoder.next_frame() {
            self.sent_a_value = true;
            let outcome = match frame {
                Frame::Value(json) => self.handle_value(json),
                Frame::Invalid(e) => {
                    let reason = e.to_string();
                    self.reject_input(&reason, false);
                    Ok(())
                }
                Frame::Fatal(e) => {
                    let reason = e.to_string();
                    self.reject_input(&reason, true);
                    fatal = true;
                    break;
                }
            };
            if let Err(pushed) = outcome {
                return Some(pushed.end());
            }
        }
        // What came before a fatal value is queued before the connection closes.
        if let Err(pushed) = self.hand_over() {
            return Some(pushed.end());
        }
        fatal.then_some(End::Fatal)
    }

    /// Where a command's status lines go (and which), by this connection's
    /// ACK_MODE: the command's claim on them is taken here, handed over
    /// with its batch.
    fn reply_to(&mut self) -> Option<ReplyTo> {
        let (ok_lines, camera_lines) = match self.ack_mode {
            AckMode::None => return None,
            AckMode::Errors => (false, false),
            AckMode::All => (true, false),
            AckMode::Camera => (true, true),
        };
        self.claims
            .get_or_insert_with(|| Claims::new(&self.outbox))
            .take_one();
        Some(ReplyTo {
            conn: self.outbox.conn(),
            ok_lines,
            camera_lines,
        })
    }

    /// Hands the batch to the publisher (blocking while its channel is full).
    fn hand_over(&mut self) -> Result<(), Pushed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let jobs = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_COMMANDS));
        self.batch_bytes = 0;
        let claims = self.claims.take();
        self.push(Handover { jobs, claims })
    }

    /// Bytes that are not JSON (or too large): counted, logged, reported.
    fn reject_input(&self, reason: &str, fatal: bool) {
        let counters = &self.shared.counters;
        Counters::add(&counters.received);
        Counters::add(&counters.rejected);
        if log_limit::allow(Kind::RejectedCommand) {
            if fatal {
                log::warn!(
                    "rejected input from {}: {reason}; closing the connection",
                    self.peer()
                );
            } else {
                log::warn!("rejected input from {}: {reason}", self.peer());
            }
        }
        self.report(None, None, None, reason);
    }

    /// Validates one value and queues it.
    fn handle_value(&mut self, json: Json<'_>) -> Result<(), Pushed> {
        if let Some(asked) = control::request(&json) {
            self.operator_request(asked);
            return Ok(());
        }
        if let Some(asked) = command::ack_request(&json) {
            match asked {
                Ok(mode) => {
                    log::debug!(
                        "backend {} asks for status lines: {}",
                        self.peer(),
                        mode.as_str()
                    );
                    self.ack_mode = mode;
                    // Replies routed from now on say they are replies.
                    self.outbox.set_wrap_replies(mode != AckMode::None);
                }
                Err(reason) => self.reject_input(&reason, false),
            }
            return Ok(());
        }
        let shared = self.shared;
        let generation = shared.config.generation();
        if generation != self.config.0 {
            self.config = (generation, shared.config.get());
        }
        let config = &*self.config.1;
        Counters::add(&shared.counters.received);
        let camera =
            (config.presence_field.as_deref()).and_then(|field| command::text_field(&json, field));
        let cmd = match command::validate_json(json, config.validate_fields) {
            Ok(cmd) => cmd,
            Err(rejection) => {
                Counters::add(&shared.counters.rejected);
                if log_limit::allow(Kind::RejectedCommand) {
                    log::warn!(
                        "rejected command ({}) from {}: {}",
                        rejection.describe(),
                        self.peer(),
                        log_limit::cut(&rejection.reason)
                    );
                }
                self.report(
                    rejection.kind.as_deref(),
                    rejection.unit.as_deref(),
                    rejection.id.as_deref(),
                    &rejection.reason,
                );
                return Ok(());
            }
        };
        Counters::add(&shared.counters.queued);
        if cmd.kind.wants_reply() {
            shared.routes.claim(&cmd.unit, &self.outbox);
        }
        // The publisher logs "accepted" once the command is queued (and spooled).
        let topic = config.command_topic_for(&cmd.unit);
        let mut job = Accepted::new(cmd, topic, Instant::now(), SystemTime::now());
        job.peer = Some(self.peer());
        job.camera = camera;
        job.reply = self.reply_to();
        self.batch_bytes += job.payload.len();
        self.batch.push(job);
        if self.batch.len() >= BATCH_COMMANDS || self.batch_bytes >= BATCH_BYTES {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Blocking here while the queue is full is the backpressure: this socket
    /// is not read until there is room. At shutdown no wait lasts past the
    /// grace (this side's deadline is never later than the publisher's, so
    /// a batch is either taken before the publisher counts what it leaves,
    /// or counted here).
    fn push(&self, mut batch: Handover) -> Result<(), Pushed> {
        loop {
            let deadline = self
                .shared
                .intake
                .is_set()
                .then(|| self.shared.drain_deadline());
            let wait = match deadline {
                None => POLL,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Pushed::GraceOver(batch.jobs.len()));
                    }
                    left.min(POLL)
                }
            };
            match self.shared.jobs.send_timeout(batch, wait) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(back)) => batch = back,
                // At shutdown the publisher leaves when the grace is over:
                // its going means the grace ran out (its clock may be a
                // moment ahead of this one), so the unread are counted.
                Err(SendTimeoutError::Disconnected(back)) if deadline.is_some() => {
                    return Err(Pushed::GraceOver(back.jobs.len()))
                }
                Err(SendTimeoutError::Disconnected(_)) => return Err(Pushed::Gone),
            }
        }
    }

    /// The grace ran out: counts the commands still unread (`already` of
    /// them were framed but not queued), reading what the kernel holds
    /// without queueing it, so the log can say what was left.
    fn count_unread(&self, decoder: &mut FrameDecoder, already: usize, buf: &mut [u8]) -> End {
        let mut stream = self.stream;
        let mut commands = already;
        let mut bytes = decoder.pending_bytes();
        while let Some(frame) = decoder.next_frame() {
            if let Frame::Value(v) = frame {
                commands += 1;
                bytes += v.bytes().len();
            }
        }
        let _ = self.stream.set_read_timeout(Some(DRAIN_POLL));
        let mut read = 0;
        while read < COUNT_UNREAD_MAX {
            match stream.read(buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    read += n;
                    bytes += n;
                    decoder.push(&buf[..n]);
                    while let Some(frame) = decoder.next_frame() {
                        if let Frame::Value(_) = frame {
                            commands += 1;
                        }
                    }
                }
            }
        }
        End::GraceOver { commands, bytes }
    }

    /// Writes an error status line when this connection wants status lines.
    /// An operator's request: taken only from root or the relay's own
    /// user (those who may stop the relay), as the kernel says who is at
    /// the other end; answered by the publisher, or with an error line here.
    fn operator_request(&mut self, asked: Result<Control, String>) {
        self.sent_a_value = true;
        let refusal = match (asked, self.operator_uid()) {
            (Err(why), _) => Err(why),
            (Ok(_), uid) if !uid.is_some_and(|u| u == 0 || u == sys::euid()) => Err(
                "refused: control requests are taken only from root or the relay's own user"
                    .to_string(),
            ),
            (Ok(request), _) => {
                let by = self.peer().to_string();
                log::info!("backend {by}: operator request {request:?}");
                let asked = OperatorRequest {
                    request,
                    to: self.outbox.clone(),
                    by,
                };
                self.shared
                    .operator
                    .try_send(asked)
                    .map_err(|_| "refused: the relay is busy or stopping; try again".to_string())
            }
        };
        if let Err(why) = refusal {
            log::warn!("backend {}: control request refused: {why}", self.peer());
            // Always answered: the tool waits for a line.
            self.outbox.offer(
                "status line",
                status::status_line(None, None, None, Some(&why)),
            );
        }
    }

    /// The local user at the other end: the Unix socket's peer, or the
    /// owner of a loopback TCP peer's socket (None: not on this machine,
    /// or unknown).
    fn operator_uid(&self) -> Option<u32> {
        match (self.peer(), self.stream) {
            (Peer::Unix { uid, .. }, _) => Some(uid),
            (Peer::Tcp(peer), Stream::Tcp(tcp)) => {
                let ours = tcp.local_addr().ok()?;
                if !peers::is_local(peer, ours) {
                    return None;
                }
                peers::connection_owner(&peers::read_sockets(), peer, ours, false)
            }
            (Peer::Tcp(_), Stream::Unix(_)) => None,
        }
    }

    fn report(&self, kind: Option<&str>, unit: Option<&str>, id: Option<&str>, reason: &str) {
        if self.ack_mode != AckMode::None {
            self.outbox.offer(
                "status line",
                status::status_line(kind, unit, id, Some(reason)),
            );
        }
    }
}

/// Why commands could not be handed to the publisher.
enum Pushed {
    /// The publisher has stopped.
    Gone,
    /// Shutting down, and the grace ran out first, with this many commands
    /// of the batch not handed over.
    GraceOver(usize),
}

impl Pushed {
    fn end(self) -> End {
        match self {
            Pushed::Gone => End::PublisherGone,
            Pushed::GraceOver(commands) => End::GraceOver { commands, bytes: 0 },
        }
    }
}

/// What a test of a session or the listener holds on to: the far ends of
/// the channels a [`Shared`] writes.
#[cfg(test)]
pub(crate) struct Fixture {
    pub shared: Arc<Shared>,
    pub jobs: crossbeam_channel::Receiver<Handover>,
    pub lingering: crossbeam_channel::Receiver<Lingering>,
    _lingering_woken: crossbeam_channel::Receiver<()>,
}

#[cfg(test)]
impl Fixture {
    /// Sessions sharing `config` (relay.conf text over the defaults).
    pub fn new(config: &str) -> Fixture {
        let config = crate::config::parse(config, "test").expect("a test configuration");
        let (jobs_tx, jobs) = crossbeam_channel::bounded(16);
        let (lingering_tx, lingering) = crossbeam_channel::bounded(4);
        let (wake_tx, woken) = crossbeam_channel::bounded(1);
        Fixture {
            shared: Arc::new(Shared {
                routes: ReplyRoutes::new(config.max_devices),
                config: Arc::new(Live::new(config)),
                jobs: jobs_tx,
                operator: crossbeam_channel::bounded(1).0,
                counters: Arc::new(Counters::default()),
                intake: Stop::new(),
                lingering: lingering_tx,
                lingering_wake: wake_tx,
            }),
            jobs,
            lingering,
            _lingering_woken: woken,
        }
    }

    pub fn count(&self, counter: fn(&Counters) -> &crate::ops::counters::Counter) -> u64 {
        counter(&self.shared.counters).load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};

    const WAIT: Duration = Duration::from_secs(10);

    /// A connected pair over loopback: (the relay's end, the backend's end).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let backend =
            TcpStream::connect(listener.local_addr().expect("its address")).expect("a connection");
        let (relay, _) = listener.accept().expect("the backend's connection");
        (relay, backend)
    }

    /// Runs a session on `relay` in its own thread; the receiver says when it ended.
    fn start(fixture: &Fixture, relay: TcpStream) -> crossbeam_channel::Receiver<()> {
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let shared = Arc::clone(&fixture.shared);
        let active = Arc::new(AtomicUsize::new(1));
        std::thread::spawn(move || {
            let peer = relay.peer_addr().expect("a peer");
            let (freed, _) = crossbeam_channel::bounded(1);
            let slot = Slot {
                active: Arc::clone(&active),
                freed: vec![freed],
            };
            run(Stream::Tcp(relay), Peer::Tcp(peer), 1, shared, slot);
            assert_eq!(active.load(Ordering::SeqCst), 0, "the place is freed");
            let _ = done_tx.send(());
        });
        done
    }

    fn read_line(stream: &mut TcpStream) -> String {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            match stream.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                other => panic!("no whole line: {other:?} after {line:?}"),
            }
        }
        String::from_utf8(line).expect("UTF-8")
    }

    #[test]
    fn valid_commands_go_to_the_publisher_and_a_rejected_one_gets_its_status_line() {
        let fixture = Fixture::new("ACK_MODE=errors\n");
        let (relay, mut backend) = pair();
        let done = start(&fixture, relay);
        backend
            .write_all(br#"{"type":"NOPE","unit":"cam1"}{"type":"SCS","unit":"cam1"}"#)
            .unwrap();
        let batch = fixture.jobs.recv_timeout(WAIT).expect("a batch");
        assert_eq!(batch.jobs.len(), 1);
        assert_eq!(batch[0].unit, "cam1");
        let line = read_line(&mut backend);
        assert!(
            line.starts_with(r#"{"status":"error","type":"NOPE""#),
            "{line}"
        );
        assert_eq!(fixture.count(|c| &c.received), 2);
        assert_eq!(fixture.count(|c| &c.rejected), 1);
        assert_eq!(fixture.count(|c| &c.queued), 1);
        backend.shutdown(Shutdown::Write).unwrap();
        done.recv_timeout(WAIT)
            .expect("the session ends when its peer closes");
    }

    #[test]
    fn a_peer_that_half_closes_still_owed_status_lines_is_handed_to_the_lingering_thread() {
        let fixture = Fixture::new("ACK_MODE=all\n");
        let (relay, mut backend) = pair();
        let done = start(&fixture, relay);
        backend
            .write_all(br#"{"type":"SCS","unit":"cam1"}"#)
            .unwrap();
        backend.shutdown(Shutdown::Write).unwrap();
        let batch = fixture.jobs.recv_timeout(WAIT).expect("a batch");
        done.recv_timeout(WAIT).expect("the session ends");
        assert!(
            fixture.lingering.recv_timeout(WAIT).is_ok(),
            "the ok line is still owed"
        );
        drop(batch);
    }

    #[test]
    fn at_shutdown_a_session_reads_what_its_peer_already_sent_then_ends() {
        let fixture = Fixture::new("");
        let (relay, mut backend) = pair();
        backend
            .write_all(br#"{"type":"SCS","unit":"cam1"} {"type":"SCS","unit":"cam2"}"#)
            .unwrap();
        fixture.shared.intake.trigger();
        let done = start(&fixture, relay);
        done.recv_timeout(WAIT)
            .expect("ends without the peer closing");
        let units: Vec<String> = fixture
            .jobs
            .try_iter()
            .flat_map(|handed| handed.jobs)
            .map(|job| job.unit)
            .collect();
        assert_eq!(units, ["cam1", "cam2"]);
        assert!(
            fixture.lingering.try_recv().is_err(),
            "no status lines wanted (ACK_MODE none): nothing lingers"
        );
    }

    #[test]
    fn a_value_too_large_closes_the_connection() {
        let fixture = Fixture::new("MAX_MESSAGE_BYTES=1024\nACK_MODE=errors\n");
        let (relay, mut backend) = pair();
        let done = start(&fixture, relay);
        let big = format!(r#"{{"type":"SCS","unit":"{}"}}"#, "x".repeat(4096));
        let _ = backend.write_all(big.as_bytes());
        done.recv_timeout(WAIT).expect("the relay closes it");
        assert_eq!(fixture.count(|c| &c.rejected), 1);
        assert!(fixture.jobs.try_recv().is_err());
    }
}
