//! The queue every logging thread appends its lines to, and the writer
//! that takes them out and writes them to the destination (stderr,
//! `LOG_FILE`, syslog) in batches, on the "log-writer" thread or, for a
//! warning, on the thread that logs it when nobody else is writing. Used by
//! the logger (`logging.rs`); see [`Sink`] for who waits for what.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::Level;

use super::line::format_line;
use super::rotation::{Lost, RotatingFile};
use super::syslog::Syslog;
use crate::ops::sync::lock;

/// The longest a line waits in the queue.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Lines are written once no new one came for this long (or after
/// [`FLUSH_EVERY`] under a steady flow): a pause shows its lines at once.
const QUIET: Duration = Duration::from_millis(5);
/// The most the queue holds. A line that does not fit is written out at
/// once by the thread that logs it when nobody is writing, and dropped
/// (counted) when somebody is.
const MAX_PENDING: usize = 256 * 1024;

/// Where lines go.
pub(super) enum Output {
    Stderr,
    File(RotatingFile),
    /// The syslog socket, and while it cannot be reached, a file or stderr.
    Syslog {
        link: Syslog,
        fallback: Box<Output>,
    },
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
/// writers share, each behind its own lock, so that no thread that logs
/// waits on the disk:
/// - the queue lock covers only memory (the lines not yet written, at most
///   [`MAX_PENDING`] bytes of them, the count of lines dropped, the reopen
///   and close requests); a thread that logs holds it to append one line;
/// - the writer lock covers the destination: whoever holds it swaps the
///   queued lines out under the queue lock, lets that go, and writes and
///   rotates with only the writer lock held.
///
/// Who writes: the writer thread; a thread that calls `flush` (it waits for
/// the writer lock, so its lines are written when it returns); and a thread
/// that logs a warning or fills the queue, only when nobody is writing
/// (`try_lock`). Otherwise a warning is left to the writer thread and a
/// line that does not fit is dropped and counted (the next batch says how
/// many), so a stuck disk holds up at most the one thread writing.
pub struct Sink {
    queue: Mutex<Queue>,
    /// Wakes the writer thread: a first line, a warning, reopen, close.
    wake: Condvar,
    writer: Mutex<Writer>,
    /// Whether a warning about dropped lines passes the level filter.
    report_drops: bool,
}

impl Sink {
    pub(super) fn new(output: Output, report_drops: bool) -> Sink {
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
    pub(super) fn push(&self, line: &[u8], urgent: bool) {
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
        match self.output.write(&self.batch, &self.starts) {
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
        if self.output.write(notice.as_bytes(), &[0]).is_ok() {
            self.lost = 0;
        }
    }
}

impl Sink {
    /// Starts the log writer thread: it writes each batch [`Sink::collect`]
    /// gathers, and what is left once the sink is closed ([`Sink::close`]).
    pub(super) fn start_writer(sink: &Arc<Sink>) -> io::Result<JoinHandle<()>> {
        let sink = Arc::clone(sink);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || loop {
                let closing = sink.collect();
                sink.flush();
                if closing {
                    return;
                }
            })
    }

    /// Tells the writer thread to write what is left and end.
    pub(super) fn close(&self) {
        self.queue().closing = true;
        self.wake.notify_all();
    }
}

impl Output {
    /// Writes whole lines (`starts`: where each begins in `bytes`); on
    /// syslog, what it cannot take goes to its fallback, after its notices.
    fn write(&mut self, bytes: &[u8], starts: &[usize]) -> Result<(), Lost> {
        let lines = starts.len() as u64;
        match self {
            Output::Stderr => io::stderr()
                .lock()
                .write_all(bytes)
                .map_err(|error| Lost { lines, error }),
            Output::File(file) => file.write_lines(bytes, starts),
            Output::Syslog { link, fallback } => {
                let sent = link.send(bytes, starts);
                for notice in &sent.notices {
                    let _ = fallback.write(notice.as_bytes(), &[0]);
                }
                let Some(&from) = starts.get(sent.lines) else {
                    return Ok(());
                };
                let rest: Vec<usize> = starts[sent.lines..].iter().map(|s| s - from).collect();
                fallback.write(&bytes[from..], &rest)
            }
            #[cfg(test)]
            Output::Test(out) => out.write_all(bytes).map_err(|error| Lost { lines, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::logging::rotation::tests::{lines, scratch};

    /// The sink and its writer thread, as the logger runs them.
    struct Running {
        sink: Arc<Sink>,
        writer: JoinHandle<()>,
    }

    fn start(output: Output) -> Running {
        let sink = Arc::new(Sink::new(output, true));
        let writer = Sink::start_writer(&sink).unwrap();
        Running { sink, writer }
    }

    impl Running {
        fn finish(self) {
            self.sink.close();
            self.writer.join().unwrap();
            self.sink.flush();
        }
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
        let log = start(output);
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
        let log = start(output);
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
        let log = start(output);
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
        let log = start(Output::File(file));
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
}
