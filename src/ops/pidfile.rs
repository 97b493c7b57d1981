//! `PID_FILE`: one relay per configuration. The main thread locks
//! `PID_FILE.lock` (mode 0600, so no reader of `PID_FILE` can hold it)
//! before anything else starts and holds it for its life; `PID_FILE` holds
//! the pid. [`lock_holders`] reads `/proc/locks` so that `stop` and the
//! watchdog signal only the process the kernel shows holding it.
//! PROTOCOL.md §5 is the contract.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

pub struct PidFile {
    path: PathBuf,
    // Held for their locks; closing them releases the locks.
    _lock: File,
    file: File,
}

/// The file whose lock says a relay runs: `PID_FILE.lock`.
pub fn lock_path(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl PidFile {
    /// Locks `PID_FILE.lock` (exit 3 when a relay holds it) and writes the
    /// pid. The lock, not the file's existence, counts: a file a dead
    /// process left is unlocked and taken over. The lock file stays at a
    /// clean stop: removing it would let a second relay lock a new file
    /// while the first still holds the old one.
    pub fn acquire(path: &Path) -> Result<PidFile, Error> {
        let shown = path.display().to_string();
        let lock_at = lock_path(path);
        let lock = crate::ops::files::open_lock(&lock_at)
            .map_err(|e| Error::setup_because(format!("PID_FILE lock {}", lock_at.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = read_pid_text(path);
                let pid = if pid.is_empty() { "?".into() } else { pid };
                return Err(Error::AlreadyRunning(format!(
                    "{shown} is locked by pid {pid}"
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::setup_because(
                    format!("PID_FILE {}: cannot lock", lock_at.display()),
                    e,
                ))
            }
        }
        // So that stop and the watchdog can prove who holds the lock where
        // /proc is not mounted (fcntl F_GETLK names the holder).
        let _ = crate::ops::sys::posix_lock(&lock);
        let mut file = crate::ops::files::open_pid(path)
            .map_err(|e| Error::setup_because(format!("PID_FILE {shown}"), e))?;
        // Only for tools that test the lock on PID_FILE: another user's
        // lock there no longer stops anything.
        let _ = file.try_lock();
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        write(&mut file).map_err(|e| Error::setup_because(format!("PID_FILE {shown}"), e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
            file,
        })
    }

    /// Removes the pid file on a clean stop (the lock goes with the process anyway).
    pub fn release(self) {
        let _ = crate::ops::files::remove(&self.path);
        drop(self.file);
    }
}

fn read_pid_text(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = crate::ops::files::open_read(path) {
        let _ = file.read_to_string(&mut text);
    }
    text.trim().chars().take(20).collect()
}

/// Who holds the relay's lock on a file, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holders {
    /// Nobody (or there is no such file).
    Free,
    /// These processes (sorted).
    Held(Vec<u32>),
    /// Nothing can tell: `/proc/locks` cannot be read and the file cannot
    /// be opened by this user.
    Unknown,
}

/// The pids the kernel says hold the relay's lock on `file`: the holder of
/// its POSIX lock (`fcntl F_GETLK`, works without /proc, for whoever may
/// open the file: the relay's user) and those of an exclusive `flock` in
/// `/proc/locks` (which any user may read: `status` run by a monitoring
/// user only needs to see the file). Unlike trying a lock, this cannot be
/// fooled by a lock another user holds on a file she can read.
pub fn holders(file: &Path) -> Holders {
    let Some(meta) = std::fs::symlink_metadata(file).ok().filter(|m| m.is_file()) else {
        return Holders::Free;
    };
    let opened = crate::ops::files::open_read(file).ok();
    let locks = std::fs::read_to_string("/proc/locks").ok();
    if opened.is_none() && locks.is_none() {
        return Holders::Unknown;
    }
    let mut pids: Vec<u32> = opened
        .and_then(|f| crate::ops::sys::posix_lock_holder(&f))
        .into_iter()
        .collect();
    if let Some(locks) = locks {
        pids.extend(holders_in(
            &locks,
            dev_major(meta.dev()),
            dev_minor(meta.dev()),
            meta.ino(),
        ));
    }
    pids.sort_unstable();
    pids.dedup();
    if pids.is_empty() {
        Holders::Free
    } else {
        Holders::Held(pids)
    }
}

/// The pids proved to hold the lock on `file` ([`holders`]); empty when
/// none can be proved.
pub fn lock_holders(file: &Path) -> Vec<u32> {
    match holders(file) {
        Holders::Held(pids) => pids,
        Holders::Free | Holders::Unknown => Vec::new(),
    }
}

/// The process exists and is not a zombie (a killed relay its parent has
/// not reaped yet has already released its lock). Without /proc, existence
/// is all that can be told.
pub fn alive(pid: u32) -> bool {
    if !crate::ops::sys::process_exists(pid) {
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

/// Parses `/proc/locks` text: `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`;
/// waiters (`1: -> FLOCK …`) hold nothing.
fn holders_in(locks: &str, major: u64, minor: u64, ino: u64) -> Vec<u32> {
    locks
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
                return None;
            }
            let mut id = f[5].split(':');
            let hex = |t: Option<&str>| t.and_then(|t| u64::from_str_radix(t, 16).ok());
            let same = hex(id.next()) == Some(major)
                && hex(id.next()) == Some(minor)
                && id.next().and_then(|t| t.parse::<u64>().ok()) == Some(ino);
            same.then(|| f[4].parse().ok()).flatten()
        })
        .collect()
}

/// The major number of a `st_dev`, as glibc's `major()`.
fn dev_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

/// The minor number of a `st_dev`, as glibc's `minor()`.
fn dev_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn scratch(name: &str) -> PathBuf {
        crate::ops::files::scratch_dir(&format!("pid-{name}")).join("relay.pid")
    }

    #[test]
    fn a_held_lock_refuses_a_second_holder_and_names_the_pid() {
        let path = scratch("held");
        let first = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        match PidFile::acquire(&path) {
            Err(Error::AlreadyRunning(what)) => {
                assert!(what.ends_with(&format!("locked by pid {}", std::process::id())))
            }
            other => panic!("expected AlreadyRunning, got {:?}", other.map(|_| ())),
        }
        // POSIX locks do not conflict within one process, so here only
        // /proc/locks names this test as the holder.
        assert!(
            lock_holders(&lock_path(&path)).contains(&std::process::id()),
            "the kernel names the holder"
        );
        assert!(
            lock_holders(&path).len() <= 1,
            "PID_FILE is locked only by us"
        );
        first.release();
        assert!(!path.exists());
    }

    #[test]
    fn a_reader_of_pid_file_holding_its_lock_does_not_stop_a_start() {
        let path = scratch("reader");
        std::fs::write(&path, "1\n").unwrap();
        let reader = File::open(&path).unwrap();
        reader.try_lock().unwrap();
        let pid = PidFile::acquire(&path).expect("the lock file decides");
        let mode = std::fs::metadata(lock_path(&path)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "nobody else can open the lock file");
        pid.release();
    }

    #[test]
    fn proc_locks_lines_name_exclusive_holders_only() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 77 08:01:1234 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 99 08:01:1234 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 5 08:01:1234 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 11 00:2d:1234 0 EOF\n";
        assert_eq!(holders_in(text, 8, 1, 1234), [4242]);
        assert_eq!(holders_in(text, 0, 0x2d, 1234), [11]);
        assert!(holders_in(text, 8, 1, 1235).is_empty());
        assert!(holders_in("", 8, 1, 1234).is_empty());
    }

    #[test]
    fn a_stale_file_without_a_lock_is_taken_over() {
        let path = scratch("stale");
        std::fs::write(&path, "999999999\nleftover text\n").unwrap();
        let pid = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        pid.release();
    }
}
