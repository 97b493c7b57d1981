//! The runtime record: which relay runs a configuration, found from
//! relay.conf's path whatever was edited in it since. Per relay.conf, in
//! the runtime directory ([`runtime_dir`]): `KEY.lock` (held by the relay
//! for its life), `KEY.json` ([`Record`]) and `KEY.turn` ([`take_turn`]);
//! PROTOCOL.md §5 says what each holds. Used on the main thread by the
//! start, a reload and the stop, and by the tools ([`find`]); no channel.

use std::fs::{File, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::config::Config;
use crate::error::Error;
use crate::ops::pidfile::{self, Holders};
use crate::ops::time::{iso8601, unix};
use crate::ops::{dirs, files, sys};

/// Mode of the record: it holds no secret, and monitoring may read it.
const RECORD_MODE: u32 = 0o644;
const POLL: Duration = Duration::from_millis(100);

/// Where the records of this user's relays are kept: for root
/// `/run/ms500-relay-by-config` (`/var/run/…` where there is no /run: a
/// directory of its own, since a service user may own `/run/ms500-relay`);
/// for another user `/run/ms500-relay/by-config` when `/run/ms500-relay` is
/// that user's (systemd's `RuntimeDirectory=`), else
/// `/tmp/ms500-relay-UID/by-config`.
pub fn runtime_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = sys::euid();
    let run = ["/run", "/var/run"]
        .into_iter()
        .map(Path::new)
        .find(|base| base.is_dir());
    if let Some(run) = run {
        if uid == 0 {
            return run.join("ms500-relay-by-config");
        }
        let own = run.join("ms500-relay");
        if std::fs::symlink_metadata(&own).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
            return own.join("by-config");
        }
    }
    PathBuf::from(format!("/tmp/ms500-relay-{uid}/by-config"))
}

/// One configuration's files in the runtime directory.
#[derive(Debug, Clone)]
pub struct Names {
    /// relay.conf's canonical path: what the names are made from.
    pub config: PathBuf,
    pub record: PathBuf,
    pub lock: PathBuf,
    pub turn: PathBuf,
}

/// The names for relay.conf at `conf`; `None` when it cannot be resolved.
pub fn names(conf: &Path) -> Option<Names> {
    let config = std::fs::canonicalize(conf).ok()?;
    let key = format!("{:016x}", fnv1a(config.as_os_str().as_encoded_bytes()));
    let dir = runtime_dir();
    Some(Names {
        record: dir.join(format!("{key}.json")),
        lock: dir.join(format!("{key}.lock")),
        turn: dir.join(format!("{key}.turn")),
        config,
    })
}

/// FNV-1a, 64 bits: a short stable name for a path (the record holds the
/// path itself, which is compared, so a collision is only a shared lock).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a running relay says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pid: u32,
    pub config_file: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    pub status_interval: u64,
    /// Where backends connect: the TCP address, else the Unix socket.
    pub listening: String,
    pub socket_path: Option<PathBuf>,
    pub client_id: String,
    /// `host:port` of each broker, in order.
    pub brokers: Vec<String>,
    pub started_unix: u64,
    /// Written by a clean stop: the relay is gone.
    pub stopped: bool,
}

impl Record {
    /// This process's record, running `config` from `config_file`.
    pub fn new(
        config: &Config,
        config_file: &Path,
        listening: &str,
        started: SystemTime,
    ) -> Record {
        Record {
            pid: std::process::id(),
            config_file: config_file.to_path_buf(),
            pid_file: config.pid_file.clone(),
            status_file: config.status_file.clone(),
            status_interval: config.status_interval.as_secs(),
            listening: listening.to_string(),
            socket_path: config.socket_path.clone(),
            client_id: config.client_id(),
            brokers: config.brokers().iter().map(ToString::to_string).collect(),
            started_unix: unix(started),
            stopped: false,
        }
    }

    fn to_json(&self) -> Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        json!({
            "state": if self.stopped { "stopped" } else { "running" },
            "pid": self.pid,
            "config_file": self.config_file.display().to_string(),
            "pid_file": path(&self.pid_file),
            "status_file": path(&self.status_file),
            "status_interval": self.status_interval,
            "listening": self.listening,
            "socket_path": path(&self.socket_path),
            "client_id": self.client_id,
            "brokers": self.brokers,
            "started": iso8601(std::time::UNIX_EPOCH + Duration::from_secs(self.started_unix)),
            "started_unix": self.started_unix,
        })
    }

    fn from_json(v: &Value) -> Option<Record> {
        let path = |key: &str| v[key].as_str().map(PathBuf::from);
        Some(Record {
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
            config_file: path("config_file")?,
            pid_file: path("pid_file"),
            status_file: path("status_file"),
            status_interval: v["status_interval"].as_u64()?,
            listening: v["listening"].as_str()?.to_string(),
            socket_path: path("socket_path"),
            client_id: v["client_id"].as_str()?.to_string(),
            brokers: v["brokers"]
                .as_array()?
                .iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect(),
            started_unix: v["started_unix"].as_u64()?,
            stopped: v["state"].as_str() == Some("stopped"),
        })
    }

    /// The record at `path`, when it is one, in a directory that passes
    /// the checks and written by root or this user.
    pub fn read(path: &Path) -> Option<Record> {
        let bytes = files::read_checked(path).ok()?;
        Record::from_json(&serde_json::from_slice(&bytes).ok()?)
    }
}

/// The running relay's hold on its configuration: the lock, kept for its life.
pub struct Claim {
    names: Names,
    _lock: File,
    started: SystemTime,
}

/// What the start got.
pub enum Taken {
    Claimed(Claim),
    /// Started without a configuration file: nothing to key a record by.
    Unkeyed,
    /// The runtime directory cannot be used (why): the tools find this
    /// relay by `PID_FILE` only.
    Unkept(String),
}

impl Claim {
    /// Takes the lock of the configuration at `source` (exit 3 when a
    /// relay holds it), first forgetting the records of configurations
    /// that are gone.
    pub fn take(source: Option<&Path>, started: SystemTime) -> Result<Taken, Error> {
        let Some(names) = source.and_then(names) else {
            return Ok(Taken::Unkeyed);
        };
        let dir = match dirs::make(&runtime_dir()) {
            Ok(dir) => dir,
            Err(refused) => return Ok(Taken::Unkept(refused.0)),
        };
        prune(&dir);
        let lock = match files::open_lock(&names.lock) {
            Ok(lock) => lock,
            Err(e) => return Ok(Taken::Unkept(format!("{}: {e}", names.lock.display()))),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(already_running(&names)),
            Err(TryLockError::Error(e)) => {
                return Ok(Taken::Unkept(format!("{}: {e}", names.lock.display())))
            }
        }
        // So that the tools can prove who holds it where /proc is not mounted.
        let _ = sys::posix_lock(&lock);
        Ok(Taken::Claimed(Claim {
            names,
            _lock: lock,
            started,
        }))
    }

    /// Writes (or rewrites, after a reload) what the relay runs.
    pub fn write(&self, config: &Config, listening: &str) -> std::io::Result<()> {
        let record = Record::new(config, &self.names.config, listening, self.started);
        self.put(&record)
    }

    fn put(&self, record: &Record) -> std::io::Result<()> {
        let mut text = record.to_json().to_string();
        text.push('\n');
        files::replace(&self.names.record, text.as_bytes(), RECORD_MODE)
    }

    /// A clean stop: the record says `"state": "stopped"` (the lock goes
    /// with the process; its file stays, as `PID_FILE.lock` does, and both
    /// go once relay.conf is gone: [`prune`]).
    pub fn release(self, config: &Config, listening: &str) {
        let mut record = Record::new(config, &self.names.config, listening, self.started);
        record.stopped = true;
        let _ = self.put(&record);
    }
}

/// The error of a second start for one configuration: who runs it.
fn already_running(names: &Names) -> Error {
    let record = Record::read(&names.record).filter(|r| r.config_file == names.config);
    let holders = pidfile::lock_holders(&names.lock);
    let pid = record
        .as_ref()
        .map(|r| r.pid)
        .filter(|pid| holders.contains(pid))
        .or_else(|| holders.first().copied());
    let pid = pid.map_or("?".to_string(), |p| p.to_string());
    let pid_file = record
        .and_then(|r| r.pid_file)
        .map_or("none".to_string(), |p| p.display().to_string());
    Error::AlreadyRunning(format!(
        "pid {pid} runs {} (PID_FILE {pid_file}; locked: {})",
        names.config.display(),
        names.lock.display()
    ))
}

/// Removes what configurations that no longer exist left (a record, its
/// lock and turn files, once no relay holds the lock), and turn files no
/// tool holds that belong to no record (a watchdog run on a file that
/// never ran a relay). A lock file without a record is kept: a relay may
/// have just created it.
fn prune(dir: &dirs::Dir) {
    let Ok(entries) = dir.names() else {
        return;
    };
    let names: Vec<String> = entries
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let remove = |name: &str| {
        let _ = dir.remove(std::ffi::OsStr::new(name));
    };
    for name in &names {
        if let Some(key) = name.strip_suffix(".json") {
            let gone =
                Record::read(&dir.path().join(name)).is_some_and(|r| !r.config_file.exists());
            let lock = dir.path().join(format!("{key}.lock"));
            if gone && pidfile::holders(&lock) == Holders::Free {
                for suffix in ["json", "lock", "turn"] {
                    remove(&format!("{key}.{suffix}"));
                }
            }
        } else if let Some(key) = name.strip_suffix(".turn") {
            let recorded = names.contains(&format!("{key}.json"));
            if !recorded && pidfile::holders(&dir.path().join(name)) == Holders::Free {
                remove(name);
            }
        }
    }
}

/// A relay found running.
#[derive(Debug, Clone)]
pub struct Running {
    pub pid: u32,
    /// The lock it holds: released when it ends.
    pub lock: PathBuf,
    /// What it wrote at start (`None`: found by `PID_FILE`'s lock).
    pub record: Option<Box<Record>>,
}

/// Whether a relay runs a configuration.
#[derive(Debug, Clone)]
pub enum Lookup {
    Running(Running),
    NotRunning,
    /// Nothing tells: no record of the configuration and no `PID_FILE`.
    Unknown,
}

/// The relay running relay.conf `conf`: by its record, proved by the
/// kernel showing its pid holding the configuration's lock, else by the
/// lock on `pid_file` (`PID_FILE.lock`) and the pid in `pid_file`. An
/// error when a lock is held but the pid named is not its holder (nothing
/// is then to be signalled).
pub fn find(conf: Option<&Path>, pid_file: Option<&Path>) -> Result<Lookup, Error> {
    let names = conf.and_then(names);
    if let Some(names) = &names {
        if let Some(running) = by_record(names)? {
            return Ok(Lookup::Running(running));
        }
    }
    if let Some(pid_file) = pid_file {
        return by_pid_file(pid_file);
    }
    Ok(match names {
        Some(names) if names.lock.exists() => Lookup::NotRunning,
        _ => Lookup::Unknown,
    })
}

/// The relay holding the configuration's lock, named by its record (which
/// may lag the lock by a moment); `None` when nobody holds it.
fn by_record(names: &Names) -> Result<Option<Running>, Error> {
    // A runtime directory another user could change proves nothing.
    if dirs::open(&runtime_dir()).is_err() {
        return Ok(None);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let Holders::Held(holders) = pidfile::holders(&names.lock) else {
            return Ok(None);
        };
        let record = Record::read(&names.record)
            .filter(|r| r.config_file == names.config && !r.stopped)
            .filter(|r| holders.contains(&r.pid) && pidfile::alive(r.pid));
        if let Some(record) = record {
            return Ok(Some(Running {
                pid: record.pid,
                lock: names.lock.clone(),
                record: Some(Box::new(record)),
            }));
        }
        if Instant::now() >= deadline {
            return Err(Error::runtime(format!(
                "{} is held by pid {holders:?} but its record {} does not name it; \
                 not touching it",
                names.lock.display(),
                names.record.display()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// The live process named in `pid_file` while it holds `PID_FILE.lock`
/// (the pid may lag the lock by a moment).
fn by_pid_file(pid_file: &Path) -> Result<Lookup, Error> {
    let lock = pidfile::lock_path(pid_file);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let holders = match pidfile::holders(&lock) {
            Holders::Free => return Ok(Lookup::NotRunning),
            Holders::Unknown => return Ok(Lookup::Unknown),
            Holders::Held(holders) => holders,
        };
        let pid = read_pid(pid_file);
        if let Some(pid) = pid.filter(|&p| pidfile::alive(p)) {
            // Only the kernel's word proves who holds the lock: a stale pid
            // reused by another process is never signalled.
            if holders.contains(&pid) {
                return Ok(Lookup::Running(Running {
                    pid,
                    lock,
                    record: None,
                }));
            }
            if Instant::now() >= deadline {
                return Err(Error::runtime(format!(
                    "pid {pid} in {} does not hold {} (/proc/locks); not touching it",
                    pid_file.display(),
                    lock.display()
                )));
            }
        } else if Instant::now() >= deadline {
            return Err(Error::runtime(format!(
                "{} is locked but holds no live pid ({}); not touching it",
                pid_file.display(),
                pid.map_or("none".to_string(), |p| p.to_string())
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// The pid written in PID_FILE.
pub fn read_pid(pid_file: &Path) -> Option<u32> {
    let mut text = String::new();
    files::open_read(pid_file)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Another configuration's relay that runs with the client id of `config`
/// on one of its brokers (the two would knock each other off that broker).
pub fn twin(conf: Option<&Path>, config: &Config) -> Option<Record> {
    let ours = conf.and_then(names).map(|n| n.config);
    let client_id = config.client_id();
    let brokers: Vec<String> = config.brokers().iter().map(ToString::to_string).collect();
    let dir = dirs::open(&runtime_dir()).ok()?;
    dir.names().ok()?.into_iter().find_map(|name| {
        let name = name.to_string_lossy().into_owned();
        let key = name.strip_suffix(".json")?;
        let record = Record::read(&dir.path().join(&name))?;
        let same = !record.stopped
            && Some(&record.config_file) != ours.as_ref()
            && record.client_id == client_id
            && record.brokers.iter().any(|b| brokers.contains(b));
        let lock = dir.path().join(format!("{key}.lock"));
        (same && pidfile::lock_holders(&lock).contains(&record.pid)).then_some(record)
    })
}

/// Waits (up to `wait`) for overlapping runs of the watchdog and `stop`
/// for the configuration at `conf`: an exclusive lock on its `KEY.turn`,
/// which only the relay's user can open, held until the returned file is
/// dropped (and never inherited by a relay started meanwhile: std opens
/// files close-on-exec). `None` when the runtime directory cannot be
/// used: the relay's own locks still keep a second one from starting.
pub fn take_turn(conf: &Path, wait: Duration) -> Result<Option<File>, Error> {
    let Some(names) = names(conf) else {
        return Ok(None);
    };
    if dirs::make(&runtime_dir()).is_err() {
        return Ok(None);
    }
    let Ok(file) = files::open_lock(&names.turn) else {
        return Ok(None);
    };
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(POLL),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::runtime(format!(
                    "another watchdog or stop for {} has been busy for {} s; giving up",
                    conf.display(),
                    wait.as_secs()
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::runtime_because(
                    format!("cannot lock {}", names.turn.display()),
                    e,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written() {
        let config = crate::config::parse(
            "PID_FILE = /run/x/relay.pid\nSTATUS_FILE = /run/x/s.json\nMQTT_CLIENT_ID = id\n\
             MQTT_BROKER = a, b:1884\n",
            "test",
        )
        .unwrap();
        let record = Record::new(
            &config,
            Path::new("/etc/r.conf"),
            "127.0.0.1:6080",
            SystemTime::now(),
        );
        let back = Record::from_json(&record.to_json()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.brokers, ["a:1883", "b:1884"]);
        assert_eq!(back.client_id, "id");
    }

    #[test]
    fn names_depend_on_the_real_path_only() {
        let dir = crate::ops::files::scratch_dir("record-names");
        let conf = dir.join("relay.conf");
        std::fs::write(&conf, "").unwrap();
        std::os::unix::fs::symlink(&conf, dir.join("link.conf")).unwrap();
        let (a, b) = (
            names(&conf).unwrap(),
            names(&dir.join("link.conf")).unwrap(),
        );
        assert_eq!(a.record, b.record);
        assert_eq!(a.config, conf);
        assert_ne!(
            names(&dir.join("link.conf").with_file_name("relay.conf")).map(|n| n.lock),
            None
        );
        assert!(names(&dir.join("missing.conf")).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
