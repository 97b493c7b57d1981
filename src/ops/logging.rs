//! Where log lines go and how they get there. Every thread logs through the
//! `log` facade; [`RelayLogger`] filters (env_logger's filter: `LOG_LEVEL`,
//! or `RUST_LOG` when set), formats one line per record and appends it to
//! the sink's queue. The log writer thread ("log-writer") writes the queue
//! at most 200 ms after its first line, so a busy relay makes one write per
//! batch of lines, not per line.
//!
//! Two locks, so that no thread that logs waits on the disk:
//! - the queue lock covers only memory: the lines formatted but not yet
//!   written (whole lines, at most [`MAX_PENDING`] bytes of them), the count
//!   of lines dropped because the queue was full, and the reopen and close
//!   requests. A thread that logs holds it to append one line.
//! - the writer lock covers the destination (file, rotation, syslog socket,
//!   stderr). Whoever holds it takes the queued lines out under the queue
//!   lock (a swap of buffers), lets the queue lock go, and writes and
//!   rotates with only the writer lock held.
//!
//! Who writes: the writer thread; a thread that calls
//! `log::logger().flush()` (it waits for the writer lock, so its lines are
//! written when it returns); and a thread that logs a warning or an error or
//! fills the queue, but only when nobody is writing (it takes the writer
//! lock with `try_lock`). When somebody is writing, a warning or error is
//! left for the writer thread to write as soon as the current write ends,
//! and a line that does not fit the full queue is dropped and counted; the
//! next batch ends with a warning saying how many. A slow, stuck or full
//! disk therefore holds up at most the one thread writing.
//!
//! Destinations: stderr (`LOG_FILE` empty), a file the relay rotates itself
//! (`LOG_FILE`: past `LOG_MAX_BYTES` it becomes `LOG_FILE.1`, the older ones
//! shift up to `LOG_FILE.LOG_KEEP`, so the log never takes more than
//! (`LOG_KEEP` + 1) × `LOG_MAX_BYTES` of a gateway's flash), or the local
//! syslog socket (`LOG_SYSLOG`, for BusyBox syslogd). SIGHUP makes the relay
//! reopen `LOG_FILE` (after an external rotation) before it writes the next
//! batch.
//!
//! Log levels: error = needs a human (the relay cannot do its job); warn = a
//! peer, device or the broker misbehaved and the relay carried on; info =
//! one line per command, heartbeat, connection and state change; debug =
//! internals.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, TryLockError,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::ops::files;
use crate::ops::sync::lock;
use crate::ops::time;

/// Where the relay's output goes without LOG_FILE (the watchdog's choice,
/// passed on to the relay it starts, which rotates it).
pub const LOG_ENV: &str = "MS500_RELAY_LOG";
/// The longest a line waits in the queue.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Lines are written once no new one came for this long (or after
/// [`FLUSH_EVERY`] under a steady flow): a pause shows its lines at once.
const QUIET: Duration = Duration::from_millis(5);
/// Longest log line kept, in bytes (remote strings are cut far shorter).
const MAX_LINE: usize = 8 * 1024;
/// The most the queue holds. A line that does not fit is written out at
/// once by the thread that logs it when nobody is writing, and dropped
/// (counted) when somebody is.
const MAX_PENDING: usize = 256 * 1024;
const SYSLOG_SOCKET: &str = "/dev/log";
/// How often an unreachable syslog socket is tried again.
pub const SYSLOG_RETRY: Duration = Duration::from_secs(10);

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    /// The local syslog socket; while it cannot be reached (syslogd not up
    /// yet at boot, restarted), lines go to the fallback (a file or stderr)
    /// and the socket is tried again every [`SYSLOG_RETRY`].
    Syslog(Box<Destination>),
}

enum Output {
    Stderr,
    File(RotatingFile),
    Syslog(Syslog),
    /// Whatever a test wants to see the lines in (or to block in).
    #[cfg(test)]
    Test(Box<dyn Write + Send>),
}

/// The lines waiting to be written, behind the queue lock: memory only.
struct Queue {
    pending: Vec<u8>,
    /// Where each line of `pending` starts (for syslog datagrams and rotation).
    lines: Vec<usize>,
    /// Lines that did not fit while somebody was writing, since the last batch.
    dropped: u64,
    /// A warning or error (or a full queue) waits: no collecting, write now.
    due: bool,
    reopen: bool,
    closing: bool,
    /// The writer thread waits for a first line (not on its timer): only
    /// then does a new line wake it, so a busy relay wakes it once a batch.
    writer_idle: bool,
}

/// The destination and the batch being written, behind the writer lock.
struct Writer {
    output: Output,
    /// The lines taken from the queue (swapped with its buffers, so both
    /// keep their allocations).
    batch: Vec<u8>,
    starts: Vec<usize>,
    /// A write failed: said once on stderr, until one succeeds.
    failing: bool,
    /// Lines that could not be written (full disk) since the last write
    /// that worked, and the last reason: reported in the log once it can
    /// be written again.
    lost: u64,
    lost_why: String,
}

/// The queue shared by every logging thread, and the destination its
/// writers share.
pub struct Sink {
    queue: Mutex<Queue>,
    /// Wakes the writer thread: a first line, a warning, reopen, close.
    wake: Condvar,
    writer: Mutex<Writer>,
    /// Whether a warning about dropped lines passes the level filter.
    report_drops: bool,
}

impl Sink {
    fn new(output: Output, report_drops: bool) -> Sink {
        Sink {
            queue: Mutex::new(Queue {
                pending: Vec::with_capacity(16 * 1024),
                lines: Vec::with_capacity(128),
                dropped: 0,
                due: false,
                reopen: false,
                closing: false,
                writer_idle: false,
            }),
            wake: Condvar::new(),
            writer: Mutex::new(Writer {
                output,
                batch: Vec::with_capacity(16 * 1024),
                starts: Vec::with_capacity(128),
                failing: false,
                lost: 0,
                lost_why: String::new(),
            }),
            report_drops,
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// The writer lock when nobody holds it; never waits.
    fn idle_writer(&self) -> Option<MutexGuard<'_, Writer>> {
        match self.writer.try_lock() {
            Ok(writer) => Some(writer),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Queues one whole line. Never waits for a write in progress.
    fn push(&self, line: &[u8], urgent: bool) {
        let mut queue = self.queue();
        if queue.pending.len() + line.len() > MAX_PENDING {
            match self.idle_writer() {
                Some(writer) => {
                    queue.append(line);
                    self.write_out(queue, writer);
                }
                None => queue.dropped += 1,
            }
            return;
        }
        let was_empty = queue.pending.is_empty();
        queue.append(line);
        if urgent {
            queue.due = true;
            match self.idle_writer() {
                Some(writer) => self.write_out(queue, writer),
                // Written by the writer thread once the write in progress ends.
                None => self.wake.notify_one(),
            }
        } else if was_empty && queue.writer_idle {
            queue.writer_idle = false;
            self.wake.notify_one();
        }
    }

    /// Writes what is queued now; returns once it is written (waiting for
    /// a write in progress first, which makes every line logged before the
    /// call written when it returns).
    pub fn flush(&self) {
        let writer = lock(&self.writer);
        self.write_out(self.queue(), writer);
    }

    /// Closes and reopens LOG_FILE (after `kill -HUP`) before the next batch
    /// is written: a file moved away by an external rotation is left to it,
    /// logging goes on in a new one.
    pub fn reopen(&self) {
        self.queue().reopen = true;
        self.wake.notify_one();
    }

    /// Takes the queued lines out and writes them with only the writer
    /// lock held.
    fn write_out(&self, mut queue: MutexGuard<'_, Queue>, mut writer: MutexGuard<'_, Writer>) {
        if queue.dropped > 0 && self.report_drops {
            let dropped = queue.dropped;
            let notice = format_line(
                Level::Warn,
                format_args!(
                    "{dropped} log lines were dropped: the log was not written fast enough"
                ),
            );
            queue.append(notice.as_bytes());
        }
        queue.dropped = 0;
        queue.due = false;
        let reopen = std::mem::take(&mut queue.reopen);
        let writer = &mut *writer;
        std::mem::swap(&mut queue.pending, &mut writer.batch);
        std::mem::swap(&mut queue.lines, &mut writer.starts);
        drop(queue);
        writer.write_batch(reopen);
    }

    /// For the writer thread: waits until a line is queued, then collects
    /// more until none came for [`QUIET`], at most [`FLUSH_EVERY`] (not at
    /// all for a warning). Whether the sink is closing.
    fn collect(&self) -> bool {
        let mut queue = self.queue();
        while queue.pending.is_empty() && !queue.closing && !queue.reopen {
            queue.writer_idle = true;
            queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.writer_idle = false;
        let deadline = Instant::now() + FLUSH_EVERY;
        while !queue.due && !queue.closing {
            let seen = queue.pending.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self
                .wake
                .wait_timeout(queue, left.min(QUIET))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if queue.pending.len() == seen {
                break;
            }
        }
        queue.closing
    }
}

impl Queue {
    fn append(&mut self, line: &[u8]) {
        let at = self.pending.len();
        self.lines.push(at);
        self.pending.extend_from_slice(line);
    }
}

impl Writer {
    /// Reopens LOG_FILE when asked, then writes the batch; runs with only
    /// the writer lock held.
    fn write_batch(&mut self, reopen: bool) {
        if reopen {
            if let Output::File(file) = &mut self.output {
                if let Err(e) = file.reopen() {
                    let _ = writeln!(
                        io::stderr(),
                        "ms500-relay: cannot reopen {}: {e}",
                        file.path.display()
                    );
                }
            }
        }
        if self.batch.is_empty() {
            return;
        }
        if self.lost > 0 {
            self.report_lost();
        }
        let lines = self.starts.len() as u64;
        let written = match &mut self.output {
            Output::Stderr => io::stderr()
                .lock()
                .write_all(&self.batch)
                .map_err(|error| Lost { lines, error }),
            Output::File(file) => file.write_lines(&self.batch, &self.starts),
            Output::Syslog(syslog) => syslog.write(&self.batch, &self.starts),
            #[cfg(test)]
            Output::Test(out) => out
                .write_all(&self.batch)
                .map_err(|error| Lost { lines, error }),
        };
        match written {
            Ok(()) => self.failing = false,
            Err(lost) => {
                self.lost += lost.lines;
                self.lost_why = lost.error.to_string();
                if !self.failing {
                    self.failing = true;
                    let _ = writeln!(
                        io::stderr(),
                        "ms500-relay: cannot write the log: {}",
                        lost.error
                    );
                }
            }
        }
        // Keep the allocations for the next batch.
        self.batch.clear();
        self.starts.clear();
    }
}

/// Lines a write could not put in the log, and why.
#[derive(Debug)]
struct Lost {
    lines: u64,
    error: io::Error,
}

impl Writer {
    /// The lines lost since the log could last be written, said in the log
    /// as its first line once it can be written again.
    fn report_lost(&mut self) {
        let notice = format_line(
            Level::Warn,
            format_args!(
                "{} log lines were lost: the log could not be written ({})",
                self.lost, self.lost_why
            ),
        );
        let written = match &mut self.output {
            Output::File(file) => file.write_lines(notice.as_bytes(), &[0]).is_ok(),
            Output::Stderr => io::stderr().lock().write_all(notice.as_bytes()).is_ok(),
            Output::Syslog(syslog) => syslog.write(notice.as_bytes(), &[0]).is_ok(),
            #[cfg(test)]
            Output::Test(out) => out.write_all(notice.as_bytes()).is_ok(),
        };
        if written {
            self.lost = 0;
        }
    }
}

/// `LOG_FILE` with size-based rotation.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
    /// A rotation failed and LOG_FILE was truncated instead: said once.
    told_cannot_rotate: bool,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = files::open_log(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
            told_cannot_rotate: false,
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        let told = self.told_cannot_rotate;
        *self = RotatingFile::open(&self.path, self.max_bytes, self.keep)?;
        self.told_cannot_rotate = told;
        Ok(())
    }

    /// LOG_FILE cannot be renamed (a directory planted at LOG_FILE.1, a
    /// read-only directory): logging goes on in LOG_FILE, truncated, and
    /// the first time a line in it says why.
    fn truncate_instead(&mut self, why: &io::Error) -> io::Result<()> {
        self.file.set_len(0)?;
        self.size = 0;
        if !self.told_cannot_rotate {
            self.told_cannot_rotate = true;
            let _ = writeln!(
                io::stderr(),
                "ms500-relay: cannot rotate the log {}: {why}; truncating it instead",
                self.path.display()
            );
            let line = format_line(
                Level::Warn,
                format_args!(
                    "cannot rotate the log {}: {why}; truncating it instead, \
                     older lines are lost (said once)",
                    self.path.display()
                ),
            );
            self.file.write_all(line.as_bytes())?;
            self.size = line.len() as u64;
        }
        Ok(())
    }

    /// Writes whole lines, rotating so that no file grows past `max_bytes`.
    /// A line is written whole or not at all: when a write fails (a full
    /// disk writes part of it), the file is cut back to where it ended
    /// before, and the error comes with the number of lines not written.
    fn write_lines(&mut self, bytes: &[u8], starts: &[usize]) -> Result<(), Lost> {
        let mut from = 0;
        let lost = |from: usize, error: io::Error| Lost {
            lines: starts.iter().filter(|&&start| start >= from).count() as u64,
            error,
        };
        while from < bytes.len() {
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            // The longest run of whole lines from `from` that fits.
            let fits = starts
                .iter()
                .copied()
                .chain(std::iter::once(bytes.len()))
                .rfind(|&end| end > from && end - from <= room);
            let to = match fits {
                Some(end) => end,
                None if self.size > 0 => {
                    self.rotate().map_err(|e| lost(from, e))?;
                    continue;
                }
                // A line longer than a whole file: what fits of it.
                None => (from + room.max(1)).min(bytes.len()),
            };
            self.append_whole(&bytes[from..to])
                .map_err(|e| lost(from, e))?;
            self.size += (to - from) as u64;
            from = to;
            if from < bytes.len() {
                self.rotate().map_err(|e| lost(from, e))?;
            }
        }
        Ok(())
    }

    /// Appends `bytes`, or nothing: a short write is cut off again.
    fn append_whole(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.file.metadata()?.len();
        self.file.write_all(bytes).inspect_err(|_| {
            let _ = self.file.set_len(end);
        })
    }

    /// LOG_FILE.(N-1) → LOG_FILE.N, …, LOG_FILE → LOG_FILE.1, then a fresh
    /// LOG_FILE. With LOG_KEEP = 0 the file simply starts over.
    fn rotate(&mut self) -> io::Result<()> {
        // Deleted or moved away meanwhile (an operator freeing space): the
        // numbered files are not ours to shift; start a fresh LOG_FILE.
        if !self.still_at_path() {
            self.file = files::open_log(&self.path)?;
            self.size = self.file.metadata()?.len();
            return Ok(());
        }
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // In LOG_FILE's directory, reached and checked again: the renames
        // never go through a symlink.
        let (dir, name) = files::place(&self.path)?;
        let name = name.to_os_string();
        let numbered = |n: u32| {
            let mut p = name.clone();
            p.push(format!(".{n}"));
            p
        };
        let _ = dir.remove(&numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = dir.rename(&numbered(n), &numbered(n + 1));
        }
        if let Err(e) = dir.rename(&name, &numbered(1)) {
            return self.truncate_instead(&e);
        }
        self.file = files::open_log(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl RotatingFile {
    /// Whether LOG_FILE still names the file being written.
    fn still_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(open), Ok(named)) => (open.dev(), open.ino()) == (named.dev(), named.ino()),
            _ => false,
        }
    }
}

/// The syslog socket, or while it cannot be reached, the fallback.
struct Syslog {
    socket: Option<UnixDatagram>,
    fallback: Box<Output>,
    /// When to try the socket again while it is away.
    retry_at: Instant,
}

impl Syslog {
    fn connect() -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(SYSLOG_SOCKET).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot reach syslog at {SYSLOG_SOCKET}: {e}"),
            )
        })?;
        Ok(socket)
    }

    /// Sends each line to syslog; what cannot be sent goes to the fallback,
    /// with a line saying why, until syslog can be reached again.
    fn write(&mut self, bytes: &[u8], starts: &[usize]) -> Result<(), Lost> {
        if self.socket.is_none() && Instant::now() >= self.retry_at {
            self.retry_at = Instant::now() + SYSLOG_RETRY;
            if let Ok(socket) = Syslog::connect() {
                let back = format_line(
                    Level::Info,
                    format_args!("syslog reachable again: logging there"),
                );
                let _ = self.fallback.write_plain(back.as_bytes(), &[0]);
                self.socket = Some(socket);
            }
        }
        let sent = match &self.socket {
            None => 0,
            Some(socket) => match send_syslog(socket, bytes, starts) {
                Ok(()) => return Ok(()),
                Err((sent, e)) => {
                    self.socket = None;
                    self.retry_at = Instant::now() + SYSLOG_RETRY;
                    let away = format_line(
                        Level::Warn,
                        format_args!(
                            "cannot send to syslog ({e}): logging here, trying it again every {} s",
                            SYSLOG_RETRY.as_secs()
                        ),
                    );
                    let _ = self.fallback.write_plain(away.as_bytes(), &[0]);
                    sent
                }
            },
        };
        let from = starts.get(sent).copied().unwrap_or(bytes.len());
        let rest: Vec<usize> = starts[sent.min(starts.len())..]
            .iter()
            .map(|s| s - from)
            .collect();
        self.fallback.write_plain(&bytes[from..], &rest)
    }
}

impl Output {
    /// Writes to a file or stderr (the syslog fallbacks).
    fn write_plain(&mut self, bytes: &[u8], starts: &[usize]) -> Result<(), Lost> {
        let lines = starts.len() as u64;
        match self {
            Output::File(file) => file.write_lines(bytes, starts),
            _ => io::stderr()
                .lock()
                .write_all(bytes)
                .map_err(|error| Lost { lines, error }),
        }
    }
}

/// One datagram per line, as syslogd expects: `<PRI>ms500-relay[PID]: text`.
/// On failure: how many lines were sent, and why the next was not.
fn send_syslog(
    socket: &UnixDatagram,
    bytes: &[u8],
    starts: &[usize],
) -> Result<(), (usize, io::Error)> {
    let ends = starts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(bytes.len()));
    for (sent, (start, end)) in starts.iter().copied().zip(ends).enumerate() {
        let line = &bytes[start..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        // Our own lines start with the timestamp and level; syslog adds its
        // own time, and the level becomes the priority.
        let (severity, text) = syslog_parts(line);
        let mut datagram = format!(
            "<{}>ms500-relay[{}]: ",
            3 * 8 + severity,
            std::process::id()
        )
        .into_bytes();
        datagram.extend_from_slice(text);
        socket.send(&datagram).map_err(|e| (sent, e))?;
    }
    Ok(())
}

/// (syslog severity, message) of one of our lines: the level becomes the
/// severity and is not repeated in the message.
fn syslog_parts(line: &[u8]) -> (u8, &[u8]) {
    let text = line.splitn(2, |&b| b == b' ').nth(1).unwrap_or(line);
    let severity = match text.get(..5) {
        Some(b"ERROR") => 3,
        Some(b"WARN ") => 4,
        Some(b"INFO ") => 6,
        Some(b"DEBUG" | b"TRACE") => 7,
        _ => return (7, text),
    };
    (severity, text.get(6..).unwrap_or_default())
}

/// The `log` implementation: env_logger's filter, our format and sink.
struct RelayLogger {
    /// Replaced when a SIGHUP changes LOG_LEVEL ([`LogHandle::set_level`]).
    filter: Arc<RwLock<env_logger::Logger>>,
    sink: Arc<Sink>,
}

impl Log for RelayLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        read(&self.filter).enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !read(&self.filter).matches(record) {
            return;
        }
        let line = format_line(record.level(), *record.args());
        self.sink
            .push(line.as_bytes(), record.level() <= Level::Warn);
    }

    fn flush(&self) {
        self.sink.flush();
    }
}

/// One line as the relay logs it: time, level, text, cut at [`MAX_LINE`].
fn format_line(level: Level, text: fmt::Arguments<'_>) -> String {
    let mut line = format!(
        "{} {:<5} {}",
        time::iso8601_millis(SystemTime::now()),
        level,
        text
    );
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("… (line cut)");
    }
    line.push('\n');
    line
}

fn read(filter: &RwLock<env_logger::Logger>) -> RwLockReadGuard<'_, env_logger::Logger> {
    filter.read().unwrap_or_else(PoisonError::into_inner)
}

/// The running logger: the sink and its writer thread.
pub struct LogHandle {
    pub sink: Arc<Sink>,
    writer: Option<JoinHandle<()>>,
    filter: Arc<RwLock<env_logger::Logger>>,
}

impl LogHandle {
    /// Starts the writer thread of `sink`.
    fn start(sink: Sink) -> io::Result<LogHandle> {
        let sink = Arc::new(sink);
        let writer = {
            let sink = Arc::clone(&sink);
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_loop(&sink))?
        };
        Ok(LogHandle {
            sink,
            writer: Some(writer),
            filter: Arc::new(RwLock::new(env_logger::Builder::new().build())),
        })
    }

    /// LOG_LEVEL changed by a SIGHUP: lines at `level` and above from now
    /// on (`RUST_LOG`, when set, still wins).
    pub fn set_level(&self, level: LevelFilter) {
        let filter = filter(level);
        log::set_max_level(filter.filter());
        *self.filter.write().unwrap_or_else(PoisonError::into_inner) = filter;
    }

    /// Writes what is left and stops the writer thread.
    pub fn finish(mut self) {
        self.sink.queue().closing = true;
        self.sink.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.sink.flush();
    }
}

/// The filter for `level` (LOG_LEVEL), or `RUST_LOG` when set. rumqttc and
/// rustls narrate their internals at info: kept to warnings below debug.
fn filter(level: LevelFilter) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            builder.parse_filters(&spec);
        }
        _ => {
            builder.filter_level(level);
            if level < LevelFilter::Debug {
                builder.filter_module("rumqttc", LevelFilter::Warn);
                builder.filter_module("rustls", LevelFilter::Warn);
            }
        }
    }
    builder.build()
}

/// Installs the logger: lines at `level` and above to `destination`,
/// written by a thread of their own (joined by [`LogHandle::finish`]).
pub fn init(level: LevelFilter, destination: &Destination) -> io::Result<LogHandle> {
    let mut syslog_away = None;
    let output = match destination {
        Destination::Syslog(fallback) => {
            let socket = Syslog::connect()
                .inspect_err(|e| syslog_away = Some(e.to_string()))
                .ok();
            Output::Syslog(Syslog {
                socket,
                fallback: Box::new(plain_output(fallback)?),
                retry_at: Instant::now() + SYSLOG_RETRY,
            })
        }
        other => plain_output(other)?,
    };
    let filter = filter(level);
    log::set_max_level(filter.filter());
    let mut log = LogHandle::start(Sink::new(output, filter.filter() >= LevelFilter::Warn))?;
    log.filter = Arc::new(RwLock::new(filter));
    let logger = RelayLogger {
        filter: Arc::clone(&log.filter),
        sink: Arc::clone(&log.sink),
    };
    // A logger installed earlier (tests) stays; this one is then unused.
    let _ = log::set_boxed_logger(Box::new(logger));
    if let Some(why) = syslog_away {
        log::warn!(
            "{why}: logging here instead, trying syslog again every {} s",
            SYSLOG_RETRY.as_secs()
        );
    }
    Ok(log)
}

/// A file or stderr (a syslog destination falls back to stderr).
fn plain_output(destination: &Destination) -> io::Result<Output> {
    Ok(match destination {
        Destination::File {
            path,
            max_bytes,
            keep,
        } => Output::File(RotatingFile::open(path, *max_bytes, *keep)?),
        Destination::Stderr | Destination::Syslog(_) => Output::Stderr,
    })
}

/// The log writer thread: writes each batch [`Sink::collect`] gathers,
/// and what is left when the sink closes.
fn write_loop(sink: &Sink) {
    loop {
        let closing = sink.collect();
        sink.flush();
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn scratch(name: &str) -> PathBuf {
        crate::ops::files::scratch_dir(&format!("log-{name}")).join("relay.log")
    }

    fn lines(n: usize, width: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(bytes.len());
            let text = format!("{i:05} {}\n", "x".repeat(width - 7));
            bytes.extend_from_slice(text.as_bytes());
        }
        (bytes, starts)
    }

    #[test]
    fn rotation_keeps_every_file_within_the_limit_and_at_most_keep_of_them() {
        let path = scratch("rotate");
        let mut file = RotatingFile::open(&path, 1000, 2).unwrap();
        for _ in 0..20 {
            let (bytes, starts) = lines(30, 50);
            file.write_lines(&bytes, &starts).unwrap();
        }
        let dir = path.parent().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["relay.log", "relay.log.1", "relay.log.2"]);
        for name in names {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            assert!(text.len() <= 1000, "{name}: {}", text.len());
            assert!(
                text.lines().all(|l| l.len() == 49),
                "{name} holds whole lines only"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_deleted_log_file_is_started_afresh_and_the_rotated_ones_are_kept() {
        let path = scratch("deleted");
        let mut file = RotatingFile::open(&path, 1000, 2).unwrap();
        for _ in 0..3 {
            let (bytes, starts) = lines(30, 50);
            file.write_lines(&bytes, &starts).unwrap();
        }
        let dir = path.parent().unwrap().to_path_buf();
        let rotated = std::fs::read(dir.join("relay.log.1")).unwrap();
        std::fs::remove_file(&path).unwrap();
        for _ in 0..2 {
            let (bytes, starts) = lines(30, 50);
            file.write_lines(&bytes, &starts).unwrap();
        }
        assert!(path.exists(), "a fresh LOG_FILE");
        assert!(!std::fs::read(&path).unwrap().is_empty(), "lines go to it");
        assert_eq!(
            std::fs::read(dir.join("relay.log.1")).unwrap(),
            rotated,
            "the rotated history is not shifted away by a file that is gone"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_in_the_way_of_rotation_truncates_the_log_and_says_so_once() {
        let dir = scratch("rotate-blocked");
        let path = dir.join("relay.log");
        for n in [1, 2] {
            std::fs::create_dir_all(dir.join(format!("relay.log.{n}/x"))).unwrap();
        }
        let mut file = RotatingFile::open(&path, 1000, 2).unwrap();
        let (bytes, starts) = lines(30, 40);
        file.write_lines(&bytes, &starts).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(|c: char| c.is_ascii_digit()), "{text}");
        assert_eq!(text.matches("cannot rotate the log").count(), 1, "{text}");
        assert!(
            text.ends_with("00029 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
            "{text}"
        );
        for _ in 0..20 {
            file.write_lines(&bytes, &starts)
                .expect("logging goes on in LOG_FILE");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("cannot rotate"),
            "said once, not again: {text}"
        );
        assert!(text.len() <= 1000 && text.ends_with('\n'), "{}", text.len());
        assert!(
            dir.join("relay.log.1/x").is_dir(),
            "the directories are left alone"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn keep_zero_starts_the_file_over_and_a_huge_line_is_cut_to_the_file() {
        let path = scratch("keep0");
        let mut file = RotatingFile::open(&path, 100, 0).unwrap();
        let (bytes, starts) = lines(10, 40);
        file.write_lines(&bytes, &starts).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let huge = vec![b'h'; 500];
        file.write_lines(&huge, &[0]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Longest any test waits for an event before it fails.
    const WAIT: Duration = Duration::from_secs(20);

    /// Lines written, as the destination saw them.
    type Seen = Arc<Mutex<Vec<u8>>>;

    fn text(seen: &Seen) -> String {
        String::from_utf8(seen.lock().unwrap().clone()).unwrap()
    }

    /// A destination whose every write waits until the test opens the gate
    /// (one message each, or all once the sender is dropped), telling the
    /// test first that a write is under way.
    struct Gate {
        entered: crossbeam_channel::Sender<()>,
        open: crossbeam_channel::Receiver<()>,
        seen: Seen,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.open.recv();
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Gated {
        entered: crossbeam_channel::Receiver<()>,
        open: crossbeam_channel::Sender<()>,
        seen: Seen,
    }

    fn gate() -> (Output, Gated) {
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let (open, open_rx) = crossbeam_channel::unbounded();
        let seen = Seen::default();
        let output = Output::Test(Box::new(Gate {
            entered: entered_tx,
            open: open_rx,
            seen: Arc::clone(&seen),
        }));
        (
            output,
            Gated {
                entered,
                open,
                seen,
            },
        )
    }

    /// A destination that takes at most 7 bytes a write, so two writers
    /// at once would tear each other's lines.
    struct Dribble(Seen);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The number a "dropped" warning gives, when there is one.
    fn dropped_in(text: &str) -> u64 {
        text.lines()
            .filter_map(|l| {
                l.split_once(" WARN  ")?
                    .1
                    .split_once(" log lines were dropped")
            })
            .map(|(n, _)| n.parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn a_thread_that_logs_returns_while_the_writer_is_stuck_and_a_full_queue_drops() {
        let (output, gated) = gate();
        let log = LogHandle::start(Sink::new(output, true)).unwrap();
        log.sink.push(b"first\n", false);
        gated
            .entered
            .recv_timeout(WAIT)
            .expect("the writer thread writes the first line");
        // The writer is stuck in its write. Warnings, ordinary lines and
        // lines past the queue's bound must all return.
        let width = 64;
        let total = MAX_PENDING / width + 1000;
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let sink = Arc::clone(&log.sink);
        let logger = std::thread::spawn(move || {
            for i in 0..total {
                let line = format!("{i:06} {}\n", "x".repeat(width - 8));
                sink.push(line.as_bytes(), i % 100 == 0);
            }
            let _ = done_tx.send(());
        });
        done.recv_timeout(WAIT)
            .expect("logging returns while the writer is stuck");
        assert!(gated.seen.lock().unwrap().is_empty(), "still stuck");
        logger.join().unwrap();
        drop(gated.open);
        log.finish();
        let text = text(&gated.seen);
        let kept: Vec<&str> = text
            .lines()
            .skip(1)
            .filter(|l| !l.contains("WARN"))
            .collect();
        assert_eq!(text.lines().next(), Some("first"));
        assert_eq!(kept.len(), MAX_PENDING / width, "the queue held its bound");
        for (i, line) in kept.iter().enumerate() {
            assert!(line.starts_with(&format!("{i:06} ")), "in order: {line}");
        }
        assert_eq!(dropped_in(&text), (total - kept.len()) as u64);
    }

    #[test]
    fn flush_returns_once_the_lines_logged_before_it_are_written() {
        let (output, gated) = gate();
        let log = LogHandle::start(Sink::new(output, true)).unwrap();
        log.sink.push(b"reply routed\n", false);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let sink = Arc::clone(&log.sink);
        let flusher = std::thread::spawn(move || {
            sink.flush();
            let _ = done_tx.send(());
        });
        gated
            .entered
            .recv_timeout(WAIT)
            .expect("somebody writes the line");
        assert!(done.try_recv().is_err(), "flush waits for the write");
        drop(gated.open);
        done.recv_timeout(WAIT).expect("flush returns");
        assert_eq!(text(&gated.seen), "reply routed\n");
        flusher.join().unwrap();
        log.finish();
    }

    #[test]
    fn a_warning_is_written_at_once_by_its_thread_when_nobody_else_writes() {
        let seen = Seen::default();
        // No writer thread: only the thread that logs can write it.
        let sink = Sink::new(Output::Test(Box::new(Dribble(Arc::clone(&seen)))), true);
        sink.push(b"info waits\n", false);
        assert_eq!(text(&seen), "");
        sink.push(b"warn goes out\n", true);
        assert_eq!(text(&seen), "info waits\nwarn goes out\n");
    }

    #[test]
    fn lines_from_many_threads_are_never_torn_or_interleaved() {
        let seen = Seen::default();
        let output = Output::Test(Box::new(Dribble(Arc::clone(&seen))));
        let log = LogHandle::start(Sink::new(output, true)).unwrap();
        let threads = 4;
        let per_thread = 3000;
        let loggers: Vec<_> = (0..threads)
            .map(|t| {
                let sink = Arc::clone(&log.sink);
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let line = format!("t{t} {i:05} {}\n", "y".repeat(20 + i % 50));
                        sink.push(line.as_bytes(), i % 97 == 0);
                        if i % 500 == 0 {
                            sink.flush();
                        }
                    }
                })
            })
            .collect();
        for logger in loggers {
            logger.join().unwrap();
        }
        log.finish();
        let text = text(&seen);
        let mut next = vec![0usize; threads];
        let mut kept = 0;
        for line in text.lines().filter(|l| !l.contains(" WARN  ")) {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap()[1..].parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(
                parts.next().unwrap(),
                "y".repeat(20 + i % 50),
                "whole: {line}"
            );
            assert!(parts.next().is_none(), "one line: {line}");
            assert!(i >= next[t], "in order per thread: {line}");
            next[t] = i + 1;
            kept += 1;
        }
        // A healthy writer keeps up; whatever it did not is accounted for.
        assert_eq!(kept + dropped_in(&text) as usize, threads * per_thread);
    }

    #[test]
    fn the_writer_thread_rotates_at_the_size_limit() {
        let path = scratch("writer-rotates");
        let file = RotatingFile::open(&path, 1000, 2).unwrap();
        let log = LogHandle::start(Sink::new(Output::File(file), true)).unwrap();
        let (bytes, starts) = lines(200, 50);
        let ends = starts.iter().skip(1).copied().chain([bytes.len()]);
        for (n, (start, end)) in starts.iter().copied().zip(ends).enumerate() {
            log.sink.push(&bytes[start..end], n % 40 == 0);
        }
        log.finish();
        let dir = path.parent().unwrap();
        let mut all = String::new();
        for name in ["relay.log.2", "relay.log.1", "relay.log"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.len() <= 1000, "{name}: {}", text.len());
            assert!(text.lines().all(|l| l.len() == 49), "{name}: whole lines");
            all.push_str(&text);
        }
        assert!(!dir.join("relay.log.3").exists());
        // The newest lines, in order, the last one last.
        let numbers: Vec<usize> = all.lines().map(|l| l[..5].parse().unwrap()).collect();
        assert_eq!(numbers.last(), Some(&199));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(numbers.len(), 3 * (1000 / 50));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn syslog_priority_comes_from_the_level() {
        assert_eq!(syslog_parts(b"2026-01-01T00:00:00.000Z WARN  x").0, 4);
        assert_eq!(syslog_parts(b"2026-01-01T00:00:00.000Z ERROR x").0, 3);
        let (sev, text) = syslog_parts(b"2026-01-01T00:00:00.000Z INFO  hello");
        assert_eq!(
            (sev, text),
            (6, &b"hello"[..]),
            "the level is the priority only"
        );
    }
}
