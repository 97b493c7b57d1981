//! `ms500-relay watchdog`, `stop` and `reload`: find the relay running a
//! configuration (by its runtime record, else the `PID_FILE` lock, whose
//! holder the kernel proves) and keep it running, stop it, or have it
//! reload. Runs on the main thread of its own short-lived process and
//! shares nothing with the relay but files and signals. What each run does:
//! README, "Started by cron"; the contract: PROTOCOL.md §4 and §5.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use crate::checks;
use crate::checks::places;
use crate::cli::conf;
use crate::cli::journal::Journal;
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::ops::notify::Notifier;
use crate::ops::pidfile::{self, Holders};
use crate::ops::record::{self, Lookup, Running};
use crate::ops::sys::{self, Signal};
use crate::ops::time::iso8601;
use crate::ops::{files, logging};
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

/// `ms500-relay watchdog [-c FILE]`: [`run`] with relay.conf read as the
/// watchdog needs it, its output through the journal (timestamped,
/// bounded, and an identical failure, a broken relay.conf every minute,
/// said once an hour).
pub fn main(path: Option<&Path>) -> Result<(), Error> {
    let loaded = conf::load_quietly(path, &["PID_FILE", "STATUS_FILE", "STATUS_INTERVAL"]);
    let pid_file = loaded
        .as_ref()
        .ok()
        .and_then(|loaded| loaded.config.pid_file.clone());
    let journal = Journal::new(pid_file.as_deref());
    let mut failure = Vec::new();
    let result = loaded.and_then(|loaded| {
        failure.extend(conf::warnings(&loaded.problems, "watchdog"));
        run(
            &loaded.config,
            loaded.source.as_deref(),
            loaded.problems.first(),
        )
    });
    if let Err(e) = &result {
        failure.push(format!("ms500-relay: {e}"));
    }
    if failure.is_empty() {
        journal.succeeded();
        return result;
    }
    journal.fail(&failure);
    result.map_err(|e| Error::Reported(e.exit_code()))
}

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
    let _turn = record::take_turn(&watch.conf, TURN_WAIT)?;
    // What the start needs (the checks, directories) only when a relay is
    // to be started: a healthy one is left alone whatever its disk does,
    // and flash is not written every minute.
    let start = |message: &str| {
        if let Some(e) = refused {
            return Err(Error::setup(format!(
                "relay is not running and cannot be started until {} is fixed: {e}",
                watch.conf.display()
            )));
        }
        no_twin(&watch.conf, config)?;
        checks::passed(config, Some(&watch.conf))?;
        places::make_run_dirs(config)?;
        watch.start(message)
    };
    let Some(running) = watch.find()? else {
        return start("relay was not running; started it");
    };
    // Its own STATUS_FILE and interval (the record's), else this file's.
    let health = watch.health_of(&running);
    let status_age = age(&health.status_file);
    if status_age.is_some_and(|a| a <= health.stale_after) || health.young {
        return Ok(());
    }
    // Stale by the wall clock, which may have jumped (no RTC, then NTP):
    // a relay that rewrites its status file within an interval is alive.
    if rewritten_within(&health.status_file, health.confirm_wait) {
        return Ok(());
    }
    let Some(running) = watch.find()? else {
        // It went away on its own while we looked.
        return start("relay was not running; started it");
    };
    let pid = running.pid;
    let why = match status_age {
        Some(a) => format!(
            "status file {} is {} s old, limit {} s",
            health.status_file.display(),
            a.as_secs(),
            health.stale_after.as_secs()
        ),
        None => format!("no status file {}", health.status_file.display()),
    };
    if let Some(e) = refused {
        return Err(Error::setup(format!(
            "relay pid {pid} looks hung ({why}) but is left running: a new one could \
             not start until {} is fixed: {e}",
            watch.conf.display()
        )));
    }
    watch.stop(&running, Some(&why))?;
    start(&format!("started a new relay in place of pid {pid}"))
}

/// `ms500-relay stop`: stops the relay running the configuration as the
/// watchdog stops a hung one (SIGTERM + SIGCONT, then SIGKILL); `Ok` when
/// none runs at the end.
pub fn stop(config: &Config, source: Option<&Path>) -> Result<(), Error> {
    let mut watch = Watch::new(config, source)?;
    watch.tool = "stop";
    let _turn = record::take_turn(&watch.conf, TURN_WAIT)?;
    match watch.find()? {
        None => {
            watch.say("relay is not running");
            Ok(())
        }
        Some(running) => {
            watch.say(&format!("stopping relay pid {}", running.pid));
            watch.stop(&running, None)
        }
    }
}

/// `ms500-relay reload`: SIGHUP to the relay running the configuration,
/// which reads relay.conf again. `refused`: the file's first error, when
/// it has one; nothing is then sent (the relay would refuse the file) and
/// the error is the answer. Nor is anything sent for a file the start's
/// checks refuse ([`checks::passed`], as the relay's reload runs them).
pub fn reload(
    config: &Config,
    source: Option<&Path>,
    refused: Option<&ConfigError>,
) -> Result<(), Error> {
    let mut watch = Watch::new(config, source)?;
    watch.tool = "reload";
    let problem = match refused {
        Some(e) => Some(e.to_string()),
        None => checks::passed(config, source).err().map(|e| e.to_string()),
    };
    if let Some(e) = problem {
        return Err(Error::setup(format!(
            "{} has errors, not sent (the relay would refuse it and keep running as it is): {e}",
            watch.conf.display()
        )));
    }
    let Some(running) = watch.find()? else {
        return Err(Error::runtime("relay is not running: nothing to reload"));
    };
    let pid = running.pid;
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

/// Refuses to start a relay while another configuration's relay runs with
/// the same client id on one of the same brokers: the two would knock each
/// other off it, again and again.
fn no_twin(conf: &Path, config: &Config) -> Result<(), Error> {
    let Some(twin) = record::twin(Some(conf), config) else {
        return Ok(());
    };
    Err(Error::runtime(format!(
        "relay pid {} runs with client id {} on broker {} (config {}, listening on {}, \
         PID_FILE {}): a second one would knock it off the broker; not starting one",
        twin.pid,
        twin.client_id,
        twin.brokers.join(", "),
        twin.config_file.display(),
        twin.listening,
        twin.pid_file
            .map_or("none".into(), |p| p.display().to_string())
    )))
}

/// What tells whether the running relay is healthy.
struct Health {
    status_file: PathBuf,
    stale_after: Duration,
    /// How long to watch a stale-looking status file for a rewrite.
    confirm_wait: Duration,
    /// Started less than `stale_after` ago: it gets that time.
    young: bool,
}

/// One watchdog run's view of the configuration.
struct Watch {
    /// The configuration file, absolute, as the relay is started with it.
    conf: PathBuf,
    pid_file: PathBuf,
    status_file: PathBuf,
    log: PathBuf,
    /// This file's STATUS_INTERVAL.
    interval: Duration,
    stop_wait: Duration,
    /// The command speaking: `watchdog`, `stop` or `reload`.
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
            interval,
            stop_wait: (grace + Duration::from_secs(1)).max(Duration::from_secs(5)),
            tool: "watchdog",
        })
    }

    /// The relay running this configuration (by its runtime record, else
    /// by PID_FILE's lock), proved by the kernel; `None` when none runs.
    fn find(&self) -> Result<Option<Running>, Error> {
        match record::find(Some(&self.conf), Some(&self.pid_file))? {
            Lookup::Running(running) => Ok(Some(running)),
            Lookup::NotRunning | Lookup::Unknown => Ok(None),
        }
    }

    /// The status file and interval of the running relay, as it recorded
    /// them at start or at its last reload; this file's without a record.
    fn health_of(&self, running: &Running) -> Health {
        let (status_file, interval, started) = match &running.record {
            Some(r) => (
                r.status_file
                    .clone()
                    .unwrap_or_else(|| self.status_file.clone()),
                Duration::from_secs(r.status_interval.max(1)),
                Some(std::time::UNIX_EPOCH + Duration::from_secs(r.started_unix)),
            ),
            None => (
                self.status_file.clone(),
                self.interval,
                std::fs::metadata(&self.pid_file)
                    .and_then(|m| m.modified())
                    .ok(),
            ),
        };
        let stale_after = interval * STALE_INTERVALS as u32;
        // A start in the future (the clock was set back) counts by how far ahead it is.
        let young = started
            .map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_else(|ahead| ahead.duration())
            })
            .is_some_and(|a| a <= stale_after);
        Health {
            status_file,
            stale_after,
            confirm_wait: (interval + Duration::from_secs(1)).min(CONFIRM_WAIT_MAX),
            young,
        }
    }

    /// SIGTERM + SIGCONT (a stopped relay must run to exit), then SIGKILL.
    /// `hung` says why the watchdog replaces it.
    fn stop(&self, running: &Running, hung: Option<&str>) -> Result<(), Error> {
        let pid = running.pid;
        sys::kill(pid, Signal::Term)
            .map_err(|e| Error::runtime_because(format!("cannot signal relay pid {pid}"), e))?;
        if let Some(why) = hung {
            self.say(&format!(
                "relay pid {pid} is hung ({why}); stopping it and starting a new one"
            ));
        }
        let _ = sys::kill(pid, Signal::Cont);
        if wait_free(&running.lock, self.stop_wait) {
            return Ok(());
        }
        self.say(&format!(
            "relay pid {pid} did not exit within {} s after SIGTERM; sending SIGKILL",
            self.stop_wait.as_secs()
        ));
        let _ = sys::kill(pid, Signal::Kill);
        if wait_free(&running.lock, KILL_WAIT) {
            return Ok(());
        }
        Err(Error::runtime(format!(
            "relay pid {pid} still holds {} {} s after SIGKILL",
            running.lock.display(),
            KILL_WAIT.as_secs()
        )))
    }

    /// Starts a detached relay and waits until it is up; `message` says why.
    fn start(&self, message: &str) -> Result<(), Error> {
        // A leftover snapshot of a dead relay is no sign of life for the new one.
        let _ = files::remove(&self.status_file);
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
            // The relay writes its pid once it holds the lock.
            if written
                && record::read_pid(&self.pid_file) == Some(pid)
                && pidfile::lock_holders(&pidfile::lock_path(&self.pid_file)).contains(&pid)
            {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(Error::runtime(format!(
                    "started the relay (pid {pid}) but it is not up after {} s \
                     (pid file: {}, status file: {}); leaving it to the next run\n{}",
                    START_WAIT.as_secs(),
                    record::read_pid(&self.pid_file).map_or("no pid".into(), |p| p.to_string()),
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

/// Waits up to `limit` for `lock` to be free (the relay holding it ended).
fn wait_free(lock: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if pidfile::holders(lock) == Holders::Free {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
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
    let Ok(mut file) = files::open_read(log) else {
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
