//! The watchdog's own output, made for cron's `>>watchdog.log 2>&1`: every
//! line timestamped, the file bounded ([`MAX_BYTES`]), and a failure that
//! repeats word for word said once an hour ([`REPEAT_EVERY`]), remembered
//! next to `PID_FILE` ([`Journal::new`]). Used by the watchdog on the main
//! thread of its short-lived process.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::ops::files;
use crate::ops::time::{iso8601, unix};

/// Mode of the memory file: it may quote relay.conf's errors.
const MEMORY_MODE: u32 = 0o600;

/// Size past which the file the output goes to is rotated.
pub const MAX_BYTES: u64 = 256 * 1024;
/// How long an identical failure stays unsaid.
pub const REPEAT_EVERY: Duration = Duration::from_secs(3600);

pub struct Journal {
    /// Where the last failure is remembered (none without PID_FILE).
    memory: Option<PathBuf>,
}

impl Journal {
    /// A journal remembering its last failure next to `pid_file`.
    pub fn new(pid_file: Option<&Path>) -> Journal {
        let memory = pid_file.map(|p| {
            let mut name = p.as_os_str().to_owned();
            name.push(".watchdog");
            PathBuf::from(name)
        });
        bound_output();
        Journal { memory }
    }

    /// One line of what was done, on stdout.
    pub fn say(&self, line: &str) {
        let _ = writeln!(std::io::stdout(), "{}", stamped(line, SystemTime::now()));
    }

    /// A failure (its lines) on stderr, unless the very same lines were
    /// written less than [`REPEAT_EVERY`] ago. Whether they were written.
    pub fn fail(&self, lines: &[String]) -> bool {
        let now = SystemTime::now();
        let text = lines.join("\n");
        if let Some(memory) = &self.memory {
            let last = files::read_checked(memory)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            if !due(&last, &text, unix(now)) {
                return false;
            }
            let said = format!("{} {text}", unix(now));
            let _ = files::replace(memory, said.as_bytes(), MEMORY_MODE);
        }
        let mut err = std::io::stderr().lock();
        for line in lines {
            let _ = writeln!(err, "{}", stamped(line, now));
        }
        true
    }

    /// A run that went well: the next failure is said at once.
    pub fn succeeded(&self) {
        if let Some(memory) = &self.memory {
            let _ = files::remove(memory);
        }
    }
}

/// `line` with the time in front.
fn stamped(line: &str, now: SystemTime) -> String {
    format!("{} {line}", iso8601(now))
}

/// Whether `line` is to be written, given the remembered `last` ("UNIX line").
fn due(last: &str, line: &str, now_unix: u64) -> bool {
    let Some((at, said)) = last.split_once(' ') else {
        return true;
    };
    let Ok(at) = at.parse::<u64>() else {
        return true;
    };
    said != line || now_unix.saturating_sub(at) >= REPEAT_EVERY.as_secs() || at > now_unix
}

/// When stdout is a regular file past [`MAX_BYTES`] (cron's `>>`), moves
/// its text to `FILE.1` and empties it: the watchdog's log never takes more
/// than twice that. `FILE.1` is replaced in its checked directory (never
/// written through a symlink); where it cannot be, nothing is moved.
fn bound_output() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = std::fs::read_link("/proc/self/fd/1") else {
        return;
    };
    let Ok(out) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let out = std::fs::File::from(out);
    let Ok(meta) = out.metadata() else {
        return;
    };
    if !meta.is_file() || meta.len() <= MAX_BYTES {
        return;
    }
    // The text, read by its name only while the name is still stdout's file.
    let Ok(mut named) = files::open_read(&path) else {
        return;
    };
    let same = named
        .metadata()
        .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
    let mut text = Vec::new();
    if !same || named.read_to_end(&mut text).is_err() {
        return;
    }
    let mut old = path.into_os_string();
    old.push(".1");
    if files::replace(Path::new(&old), &text, meta.mode() & 0o644).is_ok() {
        // O_APPEND writes (cron's >>) go on at the new end.
        let _ = out.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_is_said_once_an_hour_a_new_one_at_once() {
        let t = 1_795_927_484;
        assert!(due("", "x", t), "nothing remembered");
        assert!(due("garbage", "x", t));
        let last = format!("{t} relay.conf:3: LOG_LEVL: unknown key");
        assert!(!due(&last, "relay.conf:3: LOG_LEVL: unknown key", t + 60));
        assert!(!due(&last, "relay.conf:3: LOG_LEVL: unknown key", t + 3599));
        assert!(due(&last, "relay.conf:3: LOG_LEVL: unknown key", t + 3600));
        assert!(due(&last, "relay.conf:4: other", t + 60), "a new failure");
        assert!(
            due(&last, "relay.conf:3: LOG_LEVL: unknown key", t - 10),
            "clock went back"
        );
    }

    #[test]
    fn lines_carry_the_time() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_795_927_484);
        assert_eq!(
            stamped("watchdog: x", at),
            "2026-11-29T04:44:44Z watchdog: x"
        );
    }

    #[test]
    fn failures_are_remembered_next_to_the_pid_file() {
        let dir = crate::ops::files::scratch_dir("journal");
        let journal = Journal {
            memory: Some(dir.join("relay.pid.watchdog")),
        };
        let broken = [
            "relay.conf:1: X: unknown key".to_string(),
            "cannot start".to_string(),
        ];
        assert!(journal.fail(&broken));
        assert!(!journal.fail(&broken), "said once");
        assert!(journal.fail(&broken[..1]), "a different failure");
        journal.succeeded();
        assert!(journal.fail(&broken[..1]), "a success forgets it");
        let _ = std::fs::remove_dir_all(dir);
    }
}
