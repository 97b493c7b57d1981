//! The relay's logger: every thread logs through the `log` facade;
//! `RelayLogger` filters (`LOG_LEVEL`, or `RUST_LOG` when set), formats
//! one line per record (`line.rs`) and queues it in the sink (`sink.rs`),
//! whose writer thread writes it to stderr, `LOG_FILE` (`rotation.rs`) or
//! syslog (`syslog.rs`). Installed by the relay's start ([`init`]) and by
//! `send`; SIGHUP reopens `LOG_FILE` and applies a new `LOG_LEVEL`.

mod line;
mod rotation;
mod sink;
mod syslog;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use log::{Level, LevelFilter, Log, Metadata, Record};

use line::{format_line, write_line};
use rotation::RotatingFile;
use sink::{Output, Sink};
use syslog::{Syslog, SYSLOG_RETRY};

/// Where the relay's output goes without LOG_FILE (the watchdog's choice,
/// passed on to the relay it starts, which rotates it).
pub const LOG_ENV: &str = "MS500_RELAY_LOG";

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
    /// and the socket is tried again every 10 s (`syslog.rs`).
    Syslog(Box<Destination>),
}

/// The `log` implementation: env_logger's filter, our format and sink.
struct RelayLogger {
    /// Replaced when a SIGHUP changes LOG_LEVEL ([`LogHandle::set_level`]).
    filter: Arc<RwLock<env_logger::Logger>>,
    sink: Arc<Sink>,
}

thread_local! {
    /// Each thread's line being written (one allocation per thread, not per line).
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Room of a thread's line buffer kept between lines.
const KEPT_LINE_ROOM: usize = 1024;

impl Log for RelayLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        read(&self.filter).enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !read(&self.filter).matches(record) {
            return;
        }
        let urgent = record.level() <= Level::Warn;
        LINE.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => {
                write_line(&mut line, record.level(), *record.args());
                self.sink.push(line.as_bytes(), urgent);
                // A long line's room is not kept for the thread's life.
                if line.capacity() > KEPT_LINE_ROOM {
                    *line = String::new();
                }
            }
            // Logging from inside a value being logged: a line of its own.
            Err(_) => {
                let line = format_line(record.level(), *record.args());
                self.sink.push(line.as_bytes(), urgent);
            }
        });
    }

    fn flush(&self) {
        self.sink.flush();
    }
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
        let writer = Sink::start_writer(&sink)?;
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
        self.sink.close();
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
            let (link, away) = Syslog::start();
            syslog_away = away.map(|e| e.to_string());
            Output::Syslog {
                link,
                fallback: Box::new(plain_output(fallback)?),
            }
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
