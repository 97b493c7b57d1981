//! Where log lines go and how they get there. Every thread logs through the
//! `log` facade; [`RelayLogger`] filters (env_logger's filter: `LOG_LEVEL`,
//! or `RUST_LOG` when set), formats one line per record and appends it to a
//! shared buffer. The log writer thread writes the buffer at most 200 ms
//! after its first line (warn and error lines at once, by the thread that
//! logs them), so a busy relay makes one write per batch of lines, not per
//! line.
//!
//! Destinations: stderr (`LOG_FILE` empty), a file the relay rotates itself
//! (`LOG_FILE`: past `LOG_MAX_BYTES` it becomes `LOG_FILE.1`, the older ones
//! shift up to `LOG_FILE.LOG_KEEP`, so the log never takes more than
//! (`LOG_KEEP` + 1) × `LOG_MAX_BYTES` of a gateway's flash), or the local
//! syslog socket (`LOG_SYSLOG`, for BusyBox syslogd). SIGHUP makes the relay
//! reopen `LOG_FILE` (after an external rotation).
//!
//! Log levels: error = needs a human (the relay cannot do its job); warn = a
//! peer, device or the broker misbehaved and the relay carried on; info =
//! one line per command, heartbeat, connection and state change; debug =
//! internals.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::ops::files;
use crate::ops::time;

/// Where the relay's output goes without LOG_FILE (the watchdog's choice,
/// passed on to the relay it starts, which rotates it).
pub const LOG_ENV: &str = "MS500_RELAY_LOG";
/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Lines are written once no new one came for this long (or after
/// [`FLUSH_EVERY`] under a steady flow): a pause shows its lines at once.
const QUIET: Duration = Duration::from_millis(5);
/// Longest log line kept, in bytes (remote strings are cut far shorter).
const MAX_LINE: usize = 8 * 1024;
/// Past this much buffered, the thread that logs writes it out itself.
const MAX_PENDING: usize = 256 * 1024;
const SYSLOG_SOCKET: &str = "/dev/log";

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    Syslog,
}

enum Output {
    Stderr,
    File(RotatingFile),
    Syslog(UnixDatagram),
}

struct State {
    output: Output,
    pending: Vec<u8>,
    /// Where each line of `pending` starts (for syslog datagrams and rotation).
    lines: Vec<usize>,
    reopen: bool,
    closing: bool,
    /// A write failed: said once on stderr, until one succeeds.
    failing: bool,
    /// The writer thread waits for a first line (not on its timer): only
    /// then does a new line wake it, so a busy relay wakes it once a batch.
    writer_idle: bool,
}

/// The buffer shared by every logging thread and the writer thread.
pub struct Sink {
    state: Mutex<State>,
    wake: Condvar,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: &[u8], urgent: bool) {
        let mut state = self.lock();
        let was_empty = state.pending.is_empty();
        let at = state.pending.len();
        state.lines.push(at);
        state.pending.extend_from_slice(line);
        if urgent || state.pending.len() >= MAX_PENDING {
            state.write_out();
        } else if was_empty && state.writer_idle {
            state.writer_idle = false;
            self.wake.notify_one();
        }
    }

    /// Writes what is buffered now.
    pub fn flush(&self) {
        self.lock().write_out();
    }

    /// Closes and reopens LOG_FILE (after `kill -HUP`): a file moved away by
    /// an external rotation is left to it, logging goes on in a new one.
    pub fn reopen(&self) {
        let mut state = self.lock();
        state.reopen = true;
        state.write_out();
    }
}

impl State {
    fn write_out(&mut self) {
        if self.reopen {
            self.reopen = false;
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
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let lines = std::mem::take(&mut self.lines);
        let written = match &mut self.output {
            Output::Stderr => io::stderr().lock().write_all(&pending),
            Output::File(file) => file.write_lines(&pending, &lines),
            Output::Syslog(socket) => send_syslog(socket, &pending, &lines),
        };
        match written {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                let _ = writeln!(io::stderr(), "ms500-relay: cannot write the log: {e}");
            }
            Err(_) => {}
        }
        // Keep the allocations for the next batch.
        self.pending = pending;
        self.pending.clear();
        self.lines = lines;
        self.lines.clear();
    }
}

/// `LOG_FILE` with size-based rotation.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
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
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        *self = RotatingFile::open(&self.path, self.max_bytes, self.keep)?;
        Ok(())
    }

    /// Writes whole lines, rotating so that no file grows past `max_bytes`.
    fn write_lines(&mut self, bytes: &[u8], starts: &[usize]) -> io::Result<()> {
        let mut from = 0;
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
                    self.rotate()?;
                    continue;
                }
                // A line longer than a whole file: what fits of it.
                None => (from + room.max(1)).min(bytes.len()),
            };
            self.file.write_all(&bytes[from..to])?;
            self.size += (to - from) as u64;
            from = to;
            if from < bytes.len() {
                self.rotate()?;
            }
        }
        Ok(())
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
        let numbered = |n: u32| {
            let mut p = self.path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
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

/// One datagram per line, as syslogd expects: `<PRI>ms500-relay[PID]: text`.
fn send_syslog(socket: &UnixDatagram, bytes: &[u8], starts: &[usize]) -> io::Result<()> {
    let ends = starts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(bytes.len()));
    for (start, end) in starts.iter().copied().zip(ends) {
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
        socket.send(&datagram)?;
    }
    Ok(())
}

/// (syslog severity, message) of one of our lines.
fn syslog_parts(line: &[u8]) -> (u8, &[u8]) {
    let text = line.splitn(2, |&b| b == b' ').nth(1).unwrap_or(line);
    let severity = match text.get(..5) {
        Some(b"ERROR") => 3,
        Some(b"WARN ") => 4,
        Some(b"INFO ") => 6,
        _ => 7,
    };
    (severity, text)
}

/// The `log` implementation: env_logger's filter, our format and sink.
struct RelayLogger {
    filter: env_logger::Logger,
    sink: Arc<Sink>,
}

impl Log for RelayLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let mut line = format!(
            "{} {:<5} {}",
            time::iso8601_millis(SystemTime::now()),
            record.level(),
            record.args()
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
        self.sink
            .push(line.as_bytes(), record.level() <= Level::Warn);
    }

    fn flush(&self) {
        self.sink.flush();
    }
}

/// The running logger: the sink and its writer thread.
pub struct LogHandle {
    pub sink: Arc<Sink>,
    writer: Option<JoinHandle<()>>,
}

impl LogHandle {
    /// Writes what is left and stops the writer thread.
    pub fn finish(mut self) {
        self.sink.lock().closing = true;
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
    let output = match destination {
        Destination::Stderr => Output::Stderr,
        Destination::File {
            path,
            max_bytes,
            keep,
        } => Output::File(RotatingFile::open(path, *max_bytes, *keep)?),
        Destination::Syslog => {
            let socket = UnixDatagram::unbound()?;
            socket.connect(SYSLOG_SOCKET).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot reach syslog at {SYSLOG_SOCKET}: {e}"),
                )
            })?;
            Output::Syslog(socket)
        }
    };
    let sink = Arc::new(Sink {
        state: Mutex::new(State {
            output,
            pending: Vec::with_capacity(16 * 1024),
            lines: Vec::with_capacity(128),
            reopen: false,
            closing: false,
            failing: false,
            writer_idle: false,
        }),
        wake: Condvar::new(),
    });
    let filter = filter(level);
    log::set_max_level(filter.filter());
    let logger = RelayLogger {
        filter,
        sink: Arc::clone(&sink),
    };
    // A logger installed earlier (tests) stays; this one is then unused.
    let _ = log::set_boxed_logger(Box::new(logger));
    let writer = {
        let sink = Arc::clone(&sink);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(&sink))?
    };
    Ok(LogHandle {
        sink,
        writer: Some(writer),
    })
}

/// The log writer thread: sleeps until a line is buffered, then collects
/// more until none came for [`QUIET`], at most [`FLUSH_EVERY`], and writes
/// them all at once.
fn write_loop(sink: &Sink) {
    let mut state = sink.lock();
    loop {
        while state.pending.is_empty() && !state.closing && !state.reopen {
            state.writer_idle = true;
            state = sink.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.writer_idle = false;
        if state.closing {
            state.write_out();
            return;
        }
        let deadline = Instant::now() + FLUSH_EVERY;
        loop {
            let seen = state.pending.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.closing {
                break;
            }
            state = sink
                .wake
                .wait_timeout(state, left.min(QUIET))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if state.pending.len() == seen {
                break;
            }
        }
        state.write_out();
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

    #[test]
    fn syslog_priority_comes_from_the_level() {
        assert_eq!(syslog_parts(b"2026-01-01T00:00:00.000Z WARN  x").0, 4);
        assert_eq!(syslog_parts(b"2026-01-01T00:00:00.000Z ERROR x").0, 3);
        let (sev, text) = syslog_parts(b"2026-01-01T00:00:00.000Z INFO  hello");
        assert_eq!((sev, text), (6, &b"INFO  hello"[..]));
    }
}
