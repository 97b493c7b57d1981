//! One backend connection. The session thread reads the socket, frames and
//! validates commands, claims reply routes for SCS/UDS and pushes accepted
//! commands onto the bounded job channel read by the publisher (blocking
//! there is the TCP backpressure of SPEC §3). It owns a writer thread
//! (`outbox::write_loop`) for everything written back, and joins it on exit.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{SendTimeoutError, Sender};

use crate::command::{self, CommandType};
use crate::config::{AckMode, Config};
use crate::counters::Counters;
use crate::frame::{Frame, FrameDecoder};
use crate::outbox::{self, Outbox, StatusOwed};
use crate::routes::ReplyRoutes;
use crate::shutdown::Stop;

/// How often a blocked read or queue push looks at the stop signal.
const POLL: Duration = Duration::from_millis(250);
const READ_CHUNK: usize = 64 * 1024;
/// A value left incomplete this long is a slow-loris: discarded, connection closed.
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// After a half-close: the longest a session waits for its status lines.
const LINGER_MAX: Duration = Duration::from_secs(30);

/// One of the `MAX_CONNECTIONS` places; freed when dropped, which a session
/// does as soon as it stops reading its peer.
pub struct Slot(pub Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A validated command on its way to the broker.
pub struct Accepted {
    pub kind: CommandType,
    pub unit: String,
    pub id: Option<String>,
    pub topic: String,
    pub payload: Vec<u8>,
    pub received: Instant,
    /// Wall-clock time of receipt, for the spool (TTL survives a restart).
    pub received_wall: SystemTime,
    /// The backend it came from; None when replayed from the spool.
    pub peer: Option<SocketAddr>,
    /// Where its status line goes, when `ACK_MODE` asks for any.
    pub reply: Option<StatusOwed>,
}

impl Accepted {
    /// Writes this command's status line (ok, or the error) to its backend,
    /// when `ACK_MODE` asked for status lines at all.
    pub fn report(&self, error: Option<&str>) {
        if let Some(reply) = &self.reply {
            reply.outbox.offer(
                "status line",
                outbox::status_line(
                    Some(self.kind.as_str()),
                    Some(&self.unit),
                    self.id.as_deref(),
                    error,
                ),
            );
        }
    }
}

/// What every session shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub jobs: Sender<Accepted>,
    pub routes: ReplyRoutes,
    pub counters: Arc<Counters>,
    pub intake: Stop,
}

/// Why a session ended.
enum End {
    PeerClosed,
    Stopped,
    Fatal,
    SlowValue,
    Io(std::io::Error),
    PublisherGone,
}

/// After the peer stops sending (a half-close, or shutdown), the status lines
/// it is owed still go out: the session waits until every command it sent has
/// its line, at most `LINGER_MAX` (the shutdown grace when stopping), and not
/// once the peer is gone for good (the writer has ended).
fn linger(outbox: &Outbox, writer: &JoinHandle<()>, shared: &Shared) {
    let started = Instant::now();
    let limit = if shared.intake.is_set() {
        Duration::from_secs(shared.config.shutdown_grace + 1)
    } else {
        LINGER_MAX
    };
    while outbox.owed() > 0 && !writer.is_finished() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, slot: Slot) {
    let session = outbox::next_session_id();
    let writer_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("backend {peer}: cannot set up the connection: {e}");
            return;
        }
    };
    let (outbox, lines) = Outbox::new(session, peer);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let writer = std::thread::Builder::new()
        .name(format!("backend-write-{session}"))
        .spawn(move || outbox::write_loop(writer_stream, lines, done_rx));

    let end = read_loop(&stream, &outbox, &shared);
    // No longer reading this peer: its MAX_CONNECTIONS place is free.
    drop(slot);
    match &end {
        End::PeerClosed => log::info!("backend {peer} closed the connection"),
        End::Stopped => log::info!("backend {peer}: stopped reading (shutting down)"),
        End::Fatal => log::info!("backend {peer}: connection closed by the relay"),
        End::SlowValue => log::warn!(
            "backend {peer} left a value incomplete for {} s: discarded, connection closed",
            PARTIAL_TIMEOUT.as_secs()
        ),
        End::Io(e) => log::info!("backend {peer}: connection lost: {e}"),
        End::PublisherGone => log::warn!("backend {peer}: publisher gone, closing"),
    }
    // Closed (or stopped) means no more replies for this connection (SPEC §2.2)...
    shared.routes.release(session);
    // ...but status lines it is owed still go out to a peer that only half-closed.
    if matches!(end, End::PeerClosed | End::Stopped) {
        if let Ok(handle) = &writer {
            linger(&outbox, handle, &shared);
        }
    }
    drop(outbox);
    drop(done_tx);
    match writer {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(e) => log::warn!("backend {peer}: could not start its writer: {e}"),
    }
    // The listener keeps a clone of the socket for shutdown: close explicitly.
    let _ = stream.shutdown(Shutdown::Both);
}

fn read_loop(mut stream: &TcpStream, outbox: &Outbox, shared: &Shared) -> End {
    let config = &shared.config;
    let peer = outbox.peer;
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.set_read_timeout(Some(POLL)) {
        return End::Io(e);
    }
    let mut decoder = FrameDecoder::new(config.max_message_bytes);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut partial_since: Option<Instant> = None;
    loop {
        if shared.intake.is_set() {
            return End::Stopped;
        }
        if partial_since.is_some_and(|t| t.elapsed() > PARTIAL_TIMEOUT) {
            return End::SlowValue;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                if let Some(partial) = decoder.finish() {
                    log::warn!(
                        "backend {peer} closed with an incomplete value of {partial} bytes: discarded"
                    );
                }
                return End::PeerClosed;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return End::Io(e),
        };
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame() {
            // Any completed frame means the value now pending (if any) is a new one.
            partial_since = None;
            match frame {
                Frame::Value(bytes) => {
                    if let Some(end) = handle_value(bytes, outbox, shared) {
                        return end;
                    }
                }
                Frame::Invalid(e) => {
                    Counters::add(&shared.counters.rejected);
                    log::warn!("rejected input from {peer}: {e}");
                    report(config, outbox, None, None, None, &e.to_string());
                }
                Frame::Fatal(e) => {
                    Counters::add(&shared.counters.rejected);
                    log::warn!("rejected input from {peer}: {e}; closing the connection");
                    report(config, outbox, None, None, None, &e.to_string());
                    return End::Fatal;
                }
            }
        }
        partial_since = match (decoder.pending_bytes(), partial_since) {
            (0, _) => None,
            (_, None) => Some(Instant::now()),
            (_, since) => since,
        };
    }
}

/// Validates one value and queues it; `Some` ends the session.
fn handle_value(bytes: &[u8], outbox: &Outbox, shared: &Shared) -> Option<End> {
    let config = &shared.config;
    let peer = outbox.peer;
    Counters::add(&shared.counters.received);
    let cmd = match command::validate(bytes, config.validate_fields) {
        Ok(cmd) => cmd,
        Err(rejection) => {
            Counters::add(&shared.counters.rejected);
            log::warn!("rejected command from {peer}: {}", rejection.reason);
            report(
                config,
                outbox,
                rejection.kind.as_deref(),
                rejection.unit.as_deref(),
                rejection.id.as_deref(),
                &rejection.reason,
            );
            return None;
        }
    };
    if cmd.kind.wants_reply() {
        shared.routes.claim(&cmd.unit, outbox);
    }
    // The publisher logs "accepted" once the command is queued (and spooled).
    let mut job = Accepted {
        topic: config.command_topic_for(&cmd.unit),
        kind: cmd.kind,
        unit: cmd.unit,
        id: cmd.id,
        payload: cmd.payload,
        received: Instant::now(),
        received_wall: SystemTime::now(),
        peer: Some(peer),
        reply: (config.ack_mode != AckMode::None).then(|| StatusOwed::new(outbox)),
    };
    // Blocking here while the queue is full is the backpressure: this socket
    // is not read until there is room.
    loop {
        match shared.jobs.send_timeout(job, POLL) {
            Ok(()) => return None,
            Err(SendTimeoutError::Timeout(back)) => job = back,
            Err(SendTimeoutError::Disconnected(_)) => return Some(End::PublisherGone),
        }
    }
}

/// Writes an error status line when `ACK_MODE` is `errors` or `all`.
fn report(
    config: &Config,
    outbox: &Outbox,
    kind: Option<&str>,
    unit: Option<&str>,
    id: Option<&str>,
    reason: &str,
) {
    if config.ack_mode != AckMode::None {
        outbox.offer(
            "status line",
            outbox::status_line(kind, unit, id, Some(reason)),
        );
    }
}
