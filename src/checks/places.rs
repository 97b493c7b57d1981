//! Where the relay and its tools write: every file, by the key that names
//! it ([`written`]); what is wrong with each place, found by walking to it
//! without creating anything ([`problems`]); which files are named twice,
//! or are relay.conf or a TLS file the relay reads; and making the missing
//! run-time directories ([`make_run_dirs`]). Run on the main thread of the
//! relay (start, reload) and of `check-config` and the watchdog; owns nothing.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::Error;
use crate::ops::dirs::{self, Dir, Reached};
use crate::ops::files::{self, parent};

/// What goes at a place, which decides what may already be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A regular file of the relay's user, or nothing yet.
    File,
    /// The spool: a symlink, another user's or an open file there is moved
    /// aside at start (never replayed); a directory or special file refuses.
    Spool,
    /// The Unix socket: a socket of the relay's user (stale, replaced), or nothing.
    Socket,
    /// Only named (a rotated log): no other key may name it.
    Named,
}

/// One file the relay or a tool writes.
#[derive(Debug, Clone)]
struct Written {
    key: &'static str,
    /// What it is, when not the key's own file (`PID_FILE's lock file`).
    role: Option<String>,
    path: PathBuf,
    kind: Kind,
    /// Its missing directory is made at start (not the spool's: persistent
    /// storage that is missing is not mounted).
    made: bool,
}

impl Written {
    fn new(key: &'static str, path: &Path, kind: Kind, made: bool) -> Written {
        Written {
            key,
            role: None,
            path: path.to_path_buf(),
            kind,
            made,
        }
    }

    fn derived(key: &'static str, suffix: &str, role: String, path: &Path, kind: Kind) -> Written {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        Written {
            key,
            role: Some(role),
            path: PathBuf::from(name),
            kind,
            made: true,
        }
    }

    /// How a message names it: `STATUS_FILE`, or `PID_FILE's lock file`.
    fn what(&self) -> String {
        self.role.clone().unwrap_or_else(|| self.key.to_string())
    }

    /// `KEY PATH: why`, the shape of every refusal.
    fn problem(&self, why: impl std::fmt::Display) -> String {
        format!("{} {}: {why}", self.key, self.path.display())
    }
}

/// Every file written, by key: PID_FILE with its lock and the watchdog's
/// memory, STATUS_FILE, METRICS_FILE, LOG_FILE and its rotated files,
/// SPOOL_FILE and SOCKET_PATH.
fn written(config: &Config) -> Vec<Written> {
    let mut out = Vec::new();
    if let Some(pid) = &config.pid_file {
        out.push(Written::new("PID_FILE", pid, Kind::File, true));
        let lock = "PID_FILE's lock file (PID_FILE.lock)".to_string();
        out.push(Written::derived("PID_FILE", ".lock", lock, pid, Kind::File));
        out.push(Written::derived(
            "PID_FILE",
            ".watchdog",
            "the watchdog's memory (PID_FILE.watchdog)".into(),
            pid,
            Kind::File,
        ));
    }
    for (key, path) in [
        ("STATUS_FILE", &config.status_file),
        ("METRICS_FILE", &config.metrics_file),
        ("LOG_FILE", &config.log_file),
    ] {
        if let Some(path) = path {
            out.push(Written::new(key, path, Kind::File, true));
        }
    }
    if let Some(log) = &config.log_file {
        for n in 1..=config.log_keep {
            let role = format!("the rotated log LOG_FILE.{n}");
            out.push(Written::derived(
                "LOG_FILE",
                &format!(".{n}"),
                role,
                log,
                Kind::Named,
            ));
        }
    }
    if let Some(spool) = &config.spool_file {
        out.push(Written::new("SPOOL_FILE", spool, Kind::Spool, false));
        // Beside the spool, in its directory, which is never made.
        let mut cameras = Written::derived(
            "SPOOL_FILE",
            ".cameras",
            "the cameras seen, SPOOL_FILE.cameras".to_string(),
            spool,
            Kind::Named,
        );
        cameras.made = false;
        out.push(cameras);
    }
    if let Some(socket) = &config.socket_path {
        out.push(Written::new("SOCKET_PATH", socket, Kind::Socket, true));
    }
    out
}

/// Which file a place is: its directory and the rest of the path below
/// it, and the file itself when it exists. Two places are one file when
/// either matches.
#[derive(Debug, Default, PartialEq, Eq)]
struct Identity {
    entry: Option<((u64, u64), PathBuf)>,
    file: Option<(u64, u64)>,
}

impl Identity {
    fn same(&self, other: &Identity) -> bool {
        (self.entry.is_some() && self.entry == other.entry)
            || (self.file.is_some() && self.file == other.file)
    }
}

/// What the checks found: the problems (each `KEY PATH: why`) and the
/// directories the start will make.
#[derive(Debug, Default)]
pub struct Found {
    pub problems: Vec<String>,
    pub to_make: Vec<RunDir>,
}

/// A run-time directory the start makes, for the file of `key` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub key: &'static str,
    pub dir: PathBuf,
}

/// Checks every place the relay writes, and that no two name one file and
/// none names relay.conf (`source`) or a TLS file. Creates nothing.
pub fn problems(config: &Config, source: Option<&Path>) -> Found {
    let mut found = Found::default();
    let mut seen: Vec<(String, PathBuf, Identity)> = read_files(config, source);
    for place in written(config) {
        let Some(identity) = check(&place, &mut found) else {
            continue;
        };
        let twin = seen.iter().find(|(_, _, other)| other.same(&identity));
        if let Some((what, path, _)) = twin {
            found.problems.push(place.problem(format!(
                "is also {what} ({}): each needs a file of its own",
                path.display()
            )));
            continue;
        }
        seen.push((place.what(), place.path.clone(), identity));
    }
    found
}

/// The files the relay reads that no key may write: relay.conf, and the
/// TLS files when `MQTT_TLS` is on.
fn read_files(config: &Config, source: Option<&Path>) -> Vec<(String, PathBuf, Identity)> {
    let tls = [
        ("MQTT_CA_FILE", &config.mqtt_ca_file),
        ("MQTT_CLIENT_CERT", &config.mqtt_client_cert),
        ("MQTT_CLIENT_KEY", &config.mqtt_client_key),
    ];
    let tls = tls
        .into_iter()
        .filter(|_| config.mqtt_tls)
        .filter_map(|(key, path)| Some((key.to_string(), path.clone()?)));
    let conf = source.map(|path| ("relay.conf itself".to_string(), path.to_path_buf()));
    conf.into_iter()
        .chain(tls)
        .map(|(what, path)| {
            let identity = read_identity(&path);
            (what, path, identity)
        })
        .collect()
}

/// A file that is read, found as its directory and name (symlinks
/// resolved) and as the file itself.
fn read_identity(path: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok();
    let entry = real.as_deref().and_then(|real| {
        let name = real.file_name()?;
        match dirs::reach(parent(real)).ok()? {
            Reached::Whole(dir) => Some((dir.identity(), PathBuf::from(name))),
            Reached::Short { .. } => None,
        }
    });
    let file = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    Identity { entry, file }
}

/// The problems of one place; its identity when it can be told.
fn check(place: &Written, found: &mut Found) -> Option<Identity> {
    let Some(name) = place
        .path
        .file_name()
        .filter(|_| !place.path.ends_with(".."))
    else {
        found.problems.push(place.problem("does not name a file"));
        return None;
    };
    let dir_path = parent(&place.path);
    // A derived file (PID_FILE's lock, the watchdog's memory, a rotated
    // log) is in its key's directory: that one says what is wrong with it.
    let own = place.role.is_none();
    match dirs::reach(dir_path) {
        Err(refused) => {
            if own {
                found.problems.push(place.problem(refused));
            }
            None
        }
        Ok(Reached::Short { deepest, missing }) => {
            if own {
                missing_dir(place, dir_path, &deepest, found);
            }
            Some(Identity {
                entry: Some((deepest.identity(), missing.join(name))),
                file: None,
            })
        }
        Ok(Reached::Whole(dir)) => {
            if own {
                if let Err(e) = dir.may_create() {
                    if !passing(place, &e) {
                        found.problems.push(place.problem(format!(
                            "the directory {} is not writable: {e}",
                            dir.path().display()
                        )));
                    }
                }
            }
            Some(existing(place, &dir, name, found))
        }
    }
}

/// A read-only or full file system is a disk problem the relay rides out
/// (without the spool until it can write again, the log on stderr, status
/// and metrics reported failing), not a configuration error; only the pid
/// lock cannot do without its file: without it a second relay could start.
fn passing(place: &Written, e: &io::Error) -> bool {
    place.key != "PID_FILE" && files::disk_problem(e)
}

/// A place whose directory is missing: made at start, or (the spool's) an
/// error; it must be possible to make it from the deepest one that exists.
fn missing_dir(place: &Written, dir_path: &Path, deepest: &Dir, found: &mut Found) {
    if !place.made {
        found.problems.push(place.problem(format!(
            "the directory {} does not exist",
            dir_path.display()
        )));
        return;
    }
    match deepest.may_create() {
        Ok(()) => found.to_make.push(RunDir {
            key: place.key,
            dir: dir_path.to_path_buf(),
        }),
        Err(e) if passing(place, &e) => {}
        Err(e) => found.problems.push(place.problem(format!(
            "the directory {} cannot be made in {}: {e}",
            dir_path.display(),
            deepest.path().display()
        ))),
    }
}

/// What is already at a place whose directory exists; its identity.
fn existing(place: &Written, dir: &Dir, name: &OsStr, found: &mut Found) -> Identity {
    let stat = dir.stat(name).ok();
    let why = stat.and_then(|stat| match place.kind {
        Kind::File => files::not_ours(&stat),
        Kind::Spool => (!stat.is_file() && !stat.is_symlink())
            .then(|| format!("exists and is not a regular file ({})", stat.what())),
        Kind::Socket if !stat.is_socket() => Some(format!(
            "exists and is not a socket ({}); the relay replaces only a stale socket of its own",
            stat.what()
        )),
        Kind::Socket if stat.uid != crate::ops::sys::euid() => Some(format!(
            "is a socket of uid {}, not the relay's user's (uid {})",
            stat.uid,
            crate::ops::sys::euid()
        )),
        Kind::Socket | Kind::Named => None,
    });
    if let Some(why) = why {
        found.problems.push(place.problem(why));
    }
    Identity {
        entry: Some((dir.identity(), PathBuf::from(name))),
        file: stat.map(|s| (s.dev, s.ino)),
    }
}

/// Makes the missing directories of the run-time files (PID_FILE,
/// STATUS_FILE, METRICS_FILE, LOG_FILE, SOCKET_PATH: a tmpfs /run empties
/// at every reboot), one level at a time, each checked, mode 0755, owned
/// by whoever runs the relay; never the spool's. Run after the checks, by
/// the start, a reload and the watchdog. A read-only or full disk is
/// left to the writers (as the checks let it pass), but for PID_FILE.
pub fn make_run_dirs(config: &Config) -> Result<(), Error> {
    for place in written(config) {
        if !place.made || place.role.is_some() {
            continue;
        }
        let dir_path = parent(&place.path);
        if let Ok(Reached::Short { deepest, .. }) = dirs::reach(dir_path) {
            if deepest.may_create().is_err_and(|e| passing(&place, &e)) {
                continue;
            }
        }
        dirs::make(dir_path).map_err(|refused| Error::setup(place.problem(refused)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::files::scratch_dir;

    fn config(text: &str) -> Config {
        crate::config::parse(text, "test").expect("a test configuration")
    }

    #[test]
    fn two_keys_naming_one_file_or_relay_conf_are_refused_naming_both() {
        let dir = scratch_dir("places-twins");
        let conf = dir.join("relay.conf");
        std::fs::write(&conf, "").unwrap();
        let d = dir.display();
        let cases = [
            (
                format!("PID_FILE = {d}/x\nSTATUS_FILE = {d}/x\n"),
                "STATUS_FILE",
                "PID_FILE",
            ),
            (
                format!("PID_FILE = {d}/p\nSPOOL_FILE = {d}/p.lock\n"),
                "SPOOL_FILE",
                "lock file",
            ),
            (
                format!("STATUS_FILE = {d}/relay.conf\n"),
                "STATUS_FILE",
                "relay.conf itself",
            ),
            (
                format!("LOG_FILE = {d}/l\nMETRICS_FILE = {d}/l.1\n"),
                "LOG_FILE",
                "METRICS_FILE",
            ),
            (
                format!("STATUS_FILE = {d}/new/s\nMETRICS_FILE = {d}/new/s\n"),
                "METRICS_FILE",
                "STATUS_FILE",
            ),
        ];
        for (text, key, other) in cases {
            let found = problems(&config(&text), Some(&conf));
            assert_eq!(found.problems.len(), 1, "{text}: {:?}", found.problems);
            let problem = &found.problems[0];
            assert!(
                problem.starts_with(key) && problem.contains(other),
                "{problem}"
            );
        }
        let fine = format!("PID_FILE = {d}/p\nSTATUS_FILE = {d}/new/s\nSPOOL_FILE = {d}/spool\n");
        let found = problems(&config(&fine), Some(&conf));
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(
            found.to_make,
            [RunDir {
                key: "STATUS_FILE",
                dir: dir.join("new")
            }]
        );
        assert!(!dir.join("new").exists(), "checked, not made");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn special_files_where_a_file_goes_are_refused() {
        let dir = scratch_dir("places-special");
        std::fs::create_dir(dir.join("a-dir")).unwrap();
        std::fs::create_dir(dir.join("p.lock")).unwrap();
        let d = dir.display();
        for (text, key) in [
            (format!("STATUS_FILE = {d}/a-dir\n"), "STATUS_FILE"),
            (format!("SPOOL_FILE = {d}/a-dir\n"), "SPOOL_FILE"),
            ("LOG_FILE = /dev/null\n".to_string(), "LOG_FILE"),
            (format!("PID_FILE = {d}/p\n"), "PID_FILE"),
            (format!("SOCKET_PATH = {d}/a-dir\n"), "SOCKET_PATH"),
        ] {
            let found = problems(&config(&text), None);
            assert!(
                found
                    .problems
                    .iter()
                    .any(|p| p.starts_with(key) && p.contains("not a")),
                "{text}: {:?}",
                found.problems
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_refused_before_the_start() {
        let dir = scratch_dir("places-plain");
        std::fs::write(dir.join("plain"), "").unwrap();
        let text = format!("STATUS_FILE = {}/plain/run/s\n", dir.display());
        let found = problems(&config(&text), None);
        assert!(
            found.problems[0].contains("not a directory"),
            "{:?}",
            found.problems
        );
        assert!(make_run_dirs(&config(&text)).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
