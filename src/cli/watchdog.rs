//! `ms500-relay watchdog [-c FILE]`: keeps one relay running for a
//! configuration, made for a `* * * * *` crontab line on a gateway that has
//! nothing but this binary (no shell features, no external commands).
//!
//! Runs on the main thread of its own short-lived process. It shares nothing
//! with the relay it watches but the files and signals a person would use:
//! the lock on `PID_FILE.lock` (held by a running relay; `pidfile.rs`), the
//! pid in `PID_FILE`, and the age of `STATUS_FILE` (a relay rewrites it
//! every `STATUS_INTERVAL`). A pid is signalled only when `/proc/locks`
//! shows that very process holding the lock.
//!
//! Each run:
//! - no relay holds the lock: start one detached (own session, stdin from
//!   /dev/null, output appended to the log) and wait until it holds the lock
//!   and has written `STATUS_FILE`;
//! - a relay holds it and `STATUS_FILE` is at most 3 × `STATUS_INTERVAL` old:
//!   do nothing, print nothing;
//! - a relay holds it but the status is stale or missing (hung, or stopped
//!   with SIGSTOP): SIGTERM and SIGCONT, wait `SHUTDOWN_GRACE` + 1 s (at least
//!   5 s) for the lock to be released, else SIGKILL; then start a new one.
//!
//! Runs for the same configuration take turns (an exclusive lock on the
//! configuration file), so overlapping cron runs never start two relays.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::ops::notify::Notifier;
use crate::ops::sys::{self, Signal};
use crate::ops::time::iso8601;
use crate::ops::{files, logging, pidfile, preflight};
use crate::report::status::STALE_INTERVALS;

/// How long a run waits for an overlapping run of the same configuration.
const TURN_WAIT: Duration = Duration::from_secs(30);
/// How long a started relay has to take the lock and write its status file.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long a killed relay has to release the lock.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for a stale-looking status file to be rewritten.
const CONFIRM_WAIT_MAX: Duration = Duration::from_secs(30);

/// `ms500-relay watchdog`: `Ok` when a relay is running at the end (exit 0).
/// `source` is the configuration file the relay is to be started with;
/// `refused` the first error in it, when it has one: a running relay is
/// then left alone, healthy or not (a new one could not start), and none
/// is started.
pub fn run(
    config: &Config,
    source: Option<&Path>,
    refused: Option<&ConfigError>,
) -> Result<(), Error> {
    let watch = Watch::new(config, source)?;
    if config.status_file.is_none() {
        return Err(Error::Usage(format!(
            "watchdog needs PID_FILE and STATUS_FILE set in {}",
            watch.conf.display()
        )));
    }
    let _turn = take_turn(&watch.conf)?;
    // What the start needs (directories, the checks the relay would make)
    // only when a relay is to be started: a healthy one is left alone
    // whatever its disk does, and flash is not written every minute.
    let start = |message: &str| {
        if let Some(e) = refused {
            return Err(Error::setup(format!(
                "relay is not running and cannot be started until {} is fixed: {e}",
                watch.conf.display()
            )));
        }
        prepare(config)?;
        watch.start(message)
    };
    match lock_state(&watch.pid_file)? {
        LockState::Free => return start("relay was not running; started it"),
        LockState::Held => {}
    }
    // Running. A fresh status file means all is well; so does a relay that
    // has just started (its pid file is young) and gets the same time.
    let status_age = age(&watch.status_file);
    if status_age.is_some_and(|a| a <= watch.stale_after)
        || age(&watch.pid_file).is_some_and(|a| a <= watch.stale_after)
    {
        return Ok(());
    }
    // Stale by the wall clock, which may have jumped (no RTC, then NTP):
    // a relay that rewrites its status file within an interval is alive.
    if rewritten_within(&watch.status_file, watch.confirm_wait) {
        return Ok(());
    }
    let pid = watch.locking_pid()?;
    let Some(pid) = pid else {
        // It went away on its own while we looked.
        return start("relay was not running; started it");
    };
    let why = match status_age {
        Some(a) => format!(
            "status file {} is {} s old, limit {} s",
            watch.status_file.display(),
            a.as_secs(),
            watch.stale_after.as_secs()
        ),
        None => format!("no status file {}", watch.status_file.display()),
    };
    if let Some(e) = refused {
        return Err(Error::setup(format!(
            "relay pid {pid} looks hung ({why}) but is left running: a new one could \
             not start until {} is fixed: {e}",
            watch.conf.display()
        )));
    }
    watch.stop(pid, Some(&why))?;
    start(&format!("started a new relay in place of pid {pid}"))
}

/// `ms500-relay stop`: stops the relay holding PID_FILE as the watchdog stops
/// a hung one (SIGTERM + SIGCONT, then SIGKILL); `Ok` when none runs at the end.
pub fn stop(config: &Config, source: Option<&Path>) -> Result<(), Error> {
    let mut watch = Watch::new(config, source)?;
    watch.tool = "stop";
    let _turn = take_turn(&watch.conf)?;
    match watch.locking_pid()? {
        None => {
            watch.say("relay is not running");
            Ok(())
        }
        Some(pid) => {
            watch.say(&format!("stopping relay pid {pid}"));
            watch.stop(pid, None)
        }
    }
}

/// `ms500-relay reload`: SIGHUP to the relay holding PID_FILE, which reads
/// relay.conf again. `refused`: the file's first error, when it has one;
/// nothing is then sent (the relay would refuse the file) and the error is
/// the answer.
pub fn reload(
    config: &Config,
    source: Option<&Path>,
    refused: Option<&ConfigError>,
) -> Result<(), Error> {
    let mut watch = Watch::new(config, source)?;
    watch.tool = "reload";
    if let Some(e) = refused {
        return Err(Error::setup(format!(
            "{} has errors, not sent (the relay would refuse it and keep running as it is): {e}",
            watch.conf.display()
        )));
    }
    let Some(pid) = watch.locking_pid()? else {
        return Err(Error::runtime("relay is not running: nothing to reload"));
    };
    // Run by systemd as the unit's ExecReload= for this very relay: say the
    // reload began before the signal, so that systemd (253 and later) waits
    // for the relay's own READY=1 rather than ending the reload when this
    // process exits, possibly before the relay has read the signal.
    let mut systemd = Notifier::for_main_process(pid);
    if let Some(n) = systemd.as_mut() {
        n.reloading();
    }
    if let Err(e) = sys::kill(pid, Signal::Hup) {
        // No reload is coming: systemd must not wait for one.
        if let Some(n) = systemd.as_mut() {
            n.ready("the reload could not be sent");
        }
        return Err(Error::runtime_because(
            format!("cannot signal relay pid {pid}"),
            e,
        ));
    }
    watch.say(&format!(
        "sent SIGHUP to relay pid {pid}: its log says what it applied"
    ));
    Ok(())
}

/// Creates the run-time directories the relay needs ([`preflight::create_run_dirs`]),
/// then refuses what the relay would refuse, before starting anything.
fn prepare(config: &Config) -> Result<(), Error> {
    preflight::create_run_dirs(config)?;
    preflight::preflight(config)?;
    crate::mqtt::tls::client_config(config)?;
    Ok(())
}

/// One watchdog run's view of the configuration.
struct Watch {
    /// The configuration file, absolute, as the relay is started with it.
    conf: PathBuf,
    pid_file: PathBuf,
    status_file: PathBuf,
    log: PathBuf,
    stale_after: Duration,
    /// How long to watch a stale-looking status file for a rewrite.
    confirm_wait: Duration,
    stop_wait: Duration,
    /// The command speaking: `watchdog` or `stop`.
    tool: &'static str,
}

impl Watch {
    fn new(config: &Config, source: Option<&Path>) -> Result<Watch, Error> {
        let Some(source) = source else {
            return Err(Error::Usage(
                "watchdog needs a configuration file setting PID_FILE and STATUS_FILE \
                 (give it with -c; none was found)"
                    .into(),
            ));
        };
        let conf = std::path::absolute(source)
            .map_err(|e| Error::Usage(format!("configuration file {}: {e}", source.display())))?;
        let Some(pid_file) = config.pid_file.clone() else {
            return Err(Error::Usage(format!(
                "PID_FILE is not set in {}: without it no relay can be found",
                conf.display()
            )));
        };
        // Empty when STATUS_FILE is not set: `stop` does without it, and
        // `run` refuses that configuration first.
        let status_file = config.status_file.clone().unwrap_or_default();
        // The relay writes its own log to LOG_FILE; what it prints before its
        // logger runs (a refused start) goes there too. Without LOG_FILE its
        // output goes to $MS500_RELAY_LOG, else next to STATUS_FILE.
        let log = match (&config.log_file, std::env::var_os(logging::LOG_ENV)) {
            (Some(path), _) => path.clone(),
            (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
            (None, _) => files::parent(&status_file).join("ms500-relay.log"),
        };
        let interval = config.status_interval;
        let grace = config.shutdown_grace;
        Ok(Watch {
            conf,
            pid_file,
            status_file,
            log,
            stale_after: interval * STALE_INTERVALS as u32,
            confirm_wait: (interval + Duration::from_secs(1)).min(CONFIRM_WAIT_MAX),
            stop_wait: (grace + Duration::from_secs(1)).max(Duration::from_secs(5)),
            tool: "watchdog",
        })
    }

    /// The live process named in PID_FILE while the lock is held; `None` when
    /// the lock was released meanwhile. The pid may lag the lock by a moment.
    fn locking_pid(&self) -> Result<Option<u32>, Error> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if lock_state(&self.pid_file)? == LockState::Free {
                return Ok(None);
            }
            let pid = read_pid(&self.pid_file);
            if let Some(pid) = pid.filter(|&p| alive(p)) {
                // Only the kernel's word proves who holds the lock: a stale
                // pid reused by another process is never signalled.
                if pidfile::lock_holders(&pidfile::lock_path(&self.pid_file)).contains(&pid) {
                    return Ok(Some(pid));
                }
                if Instant::now() >= deadline {
                    return Err(Error::runtime(format!(
                        "pid {pid} in {} does not hold {} (/proc/locks); not touching it",
                        self.pid_file.display(),
                        pidfile::lock_path(&self.pid_file).display()
                    )));
                }
                std::thread::sleep(POLL);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(Error::runtime(format!(
                    "{} is locked but holds no live pid ({}); not touching it",
                    self.pid_file.display(),
                    pid.map_or("none".to_string(), |p| p.to_string())
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM + SIGCONT (a stopped relay must run to exit), then SIGKILL.
    /// `hung` says why the watchdog replaces it.
    fn stop(&self, pid: u32, hung: Option<&str>) -> Result<(), Error> {
        sys::kill(pid, Signal::Term)
            .map_err(|e| Error::runtime_because(format!("cannot signal relay pid {pid}"), e))?;
        if let Some(why) = hung {
            self.say(&format!(
                "relay pid {pid} is hung ({why}); stopping it and starting a new one"
            ));
        }
        let _ = sys::kill(pid, Signal::Cont);
        if self.wait_free(self.stop_wait)? {
            return Ok(());
        }
        self.say(&format!(
            "relay pid {pid} did not exit within {} s after SIGTERM; sending SIGKILL",
            self.stop_wait.as_secs()
        ));
        let _ = sys::kill(pid, Signal::Kill);
        if self.wait_free(KILL_WAIT)? {
            return Ok(());
        }
        Err(Error::runtime(format!(
            "relay pid {pid} still holds {} {} s after SIGKILL",
            self.pid_file.display(),
            KILL_WAIT.as_secs()
        )))
    }

    /// Waits up to `limit` for the lock on PID_FILE to be free.
    fn wait_free(&self, limit: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + limit;
        loop {
            if lock_state(&self.pid_file)? == LockState::Free {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts a detached relay and waits until it is up; `message` says why.
    fn start(&self, message: &str) -> Result<(), Error> {
        // A leftover snapshot of a dead relay is no sign of life for the new one.
        let _ = std::fs::remove_file(&self.status_file);
        let exe = relay_exe()?;
        let mut log = files::open_log(&self.log).map_err(|e| {
            Error::Usage(format!(
                "cannot append to the log file {}: {e} (set MS500_RELAY_LOG)",
                self.log.display()
            ))
        })?;
        let started = SystemTime::now();
        // Best effort: the line only helps a person reading the log.
        let _ = writeln!(
            log,
            "{} watchdog: starting {} -c {}",
            iso8601(started),
            exe.display(),
            self.conf.display()
        );
        let stderr = log.try_clone()?;
        // Opened here rather than by Stdio::null() so that a missing /dev/null
        // is reported as such, not as a binary that cannot be found.
        let null = File::open("/dev/null")
            .map_err(|e| Error::runtime_because("cannot open /dev/null for the relay", e))?;
        let mut command = Command::new(&exe);
        command
            .arg("-c")
            .arg(&self.conf)
            .stdin(null)
            .stdout(log)
            .stderr(stderr)
            // Without LOG_FILE the relay writes this file itself, rotated
            // like LOG_FILE: appended output alone would grow without bound.
            .env(logging::LOG_ENV, &self.log)
            // The detached relay is not the process systemd started: it must
            // not speak for a unit the watchdog may run under.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        let mut child = sys::new_session(&mut command)
            .spawn()
            .map_err(|e| Error::runtime_because(format!("cannot start {}", exe.display()), e))?;
        self.wait_up(&mut child, started).map(|pid| {
            self.say(&format!(
                "{message} (pid {pid}, config {}, log {})",
                self.conf.display(),
                self.log.display()
            ))
        })
    }

    /// Waits until the started relay holds the lock, wrote its pid and a
    /// status file; its pid, or why not.
    fn wait_up(&self, child: &mut Child, started: SystemTime) -> Result<u32, Error> {
        let pid = child.id();
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::runtime(format!(
                    "the relay exited at once ({status}) when started with -c {}\n{}",
                    self.conf.display(),
                    log_tail(&self.log)
                )));
            }
            let written = std::fs::metadata(&self.status_file)
                .and_then(|m| m.modified())
                .is_ok_and(|t| whole_seconds(t) >= whole_seconds(started));
            // The relay writes its pid once it holds the lock, so probing the
            // lock only then cannot take it from under a relay still starting.
            if written
                && read_pid(&self.pid_file) == Some(pid)
                && lock_state(&self.pid_file)? == LockState::Held
            {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(Error::runtime(format!(
                    "started the relay (pid {pid}) but it is not up after {} s \
                     (pid file: {}, status file: {}); leaving it to the next run\n{}",
                    START_WAIT.as_secs(),
                    read_pid(&self.pid_file).map_or("no pid".into(), |p| p.to_string()),
                    if self.status_file.exists() {
                        "present"
                    } else {
                        "missing"
                    },
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// One line on stdout (cron mails it); a closed stdout is no reason to fail.
impl Watch {
    /// One line of what the tool did, named for the tool (`watchdog`, `stop`).
    /// The watchdog's lines (cron's log) carry the time.
    fn say(&self, message: &str) {
        let line = format!("{}: {message}", self.tool);
        if self.tool == "watchdog" {
            let _ = writeln!(std::io::stdout(), "{} {line}", iso8601(SystemTime::now()));
        } else {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }
}

/// Waits for overlapping runs: an exclusive lock on the configuration file,
/// held until the returned file is dropped. Read-only is enough for flock,
/// and the relay never inherits it (std opens files close-on-exec).
fn take_turn(conf: &Path) -> Result<File, Error> {
    let file = File::open(conf)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", conf.display())))?;
    let deadline = Instant::now() + TURN_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(POLL),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::runtime(format!(
                    "another watchdog for {} has been busy for {} s; giving up",
                    conf.display(),
                    TURN_WAIT.as_secs()
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::runtime_because(
                    format!("cannot lock {}", conf.display()),
                    e,
                ))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockState {
    Free,
    Held,
}

/// Whether a relay holds the lock on `PID_FILE.lock`. A missing file is free and
/// is not created here (the relay creates it with its own owner).
fn lock_state(pid_file: &Path) -> Result<LockState, Error> {
    let pid_file = &pidfile::lock_path(pid_file);
    let file = match File::open(pid_file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
        Err(e) => {
            return Err(Error::runtime_because(
                format!("cannot open {} to test its lock", pid_file.display()),
                e,
            ))
        }
    };
    // A shared lock conflicts with the relay's exclusive one and is dropped at once.
    match file.try_lock_shared() {
        Ok(()) => Ok(LockState::Free),
        Err(TryLockError::WouldBlock) => Ok(LockState::Held),
        Err(TryLockError::Error(e)) => Err(Error::runtime_because(
            format!("cannot test the lock on {}", pid_file.display()),
            e,
        )),
    }
}

/// The pid written in PID_FILE.
fn read_pid(pid_file: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(pid_file)
        .and_then(|mut f| f.read_to_string(&mut text))
        .ok()?;
    text.trim().parse().ok()
}

/// The process exists and is not a zombie (a killed relay its parent has
/// not reaped yet has already released its lock). Without /proc, existence
/// is all that can be told.
fn alive(pid: u32) -> bool {
    if !sys::process_exists(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            !matches!(state, "Z" | "X")
        }
        Err(_) => true,
    }
}

/// Time since `path` was last modified. A time in the future (the clock was
/// set back after it was written) counts by how far ahead it is: a relay
/// that lives rewrites the file, with the new time, within an interval.
fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_else(|ahead| ahead.duration()),
    )
}

/// Whether the file at `path` is replaced or rewritten within `wait`
/// (another inode or another modification time): liveness that does not
/// depend on the wall clock being right.
fn rewritten_within(path: &Path, wait: Duration) -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.modified().ok()))
    };
    let before = identity(path);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(POLL);
        let now = identity(path);
        if now.is_some() && now != before {
            return true;
        }
    }
    false
}

fn whole_seconds(t: SystemTime) -> u64 {
    crate::ops::time::unix(t)
}

/// This program's own binary: the relay to start. `/proc/self/exe` where
/// there is a /proc (and the binary was not replaced meanwhile), else the
/// name it was started by, looked up in PATH like a shell would.
fn relay_exe() -> Result<PathBuf, Error> {
    if let Ok(exe) = std::env::current_exe() {
        if exe.is_file() {
            return Ok(exe);
        }
    }
    let arg0 = PathBuf::from(std::env::args_os().next().unwrap_or_default());
    if arg0.components().count() > 1 {
        return std::path::absolute(&arg0).map_err(Error::from);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&arg0))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::runtime(format!(
                "cannot find this program's own binary ({}) to start the relay",
                arg0.display()
            ))
        })
}

/// The last lines of the relay's log, for a failure message.
fn log_tail(log: &Path) -> String {
    const KEEP: u64 = 4096;
    let Ok(mut file) = File::open(log) else {
        return format!("({} cannot be read)", log.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(KEEP)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(15)..];
    if tail.is_empty() {
        return format!("({} is empty)", log.display());
    }
    let mut out = format!("last lines of {}:", log.display());
    for line in tail {
        out.push_str("\n  | ");
        out.push_str(line);
    }
    out
}
