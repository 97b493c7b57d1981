//! `ms500-relay watchdog` against the real relay binary: it starts a relay
//! that is not running, leaves a healthy one alone (silently), replaces one
//! that was killed or is hung (SIGSTOP: the status file goes stale), and
//! refuses a configuration without PID_FILE; its own log is timestamped and
//! bounded. scripts/watchdog.sh, kept for old crontab lines, is a one-line
//! POSIX sh wrapper around it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;
use crate::support::tools::read_pid;
use crate::support::{
    age, alive, read_text, relay_command, send_signal, wait_until, Broker, TempDir, BIN,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/watchdog.sh");

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn run_watchdog(conf: &Path, log: &Path) -> Outcome {
    let mut command = relay_command();
    command.arg("watchdog").arg("-c").arg(conf);
    outcome(command, log)
}

/// The same through scripts/watchdog.sh, as an old crontab line runs it.
fn run_wrapper(conf: &Path, log: &Path) -> Outcome {
    let mut command = Command::new(SCRIPT);
    command.arg(conf).env("MS500_RELAY_BIN", BIN);
    outcome(command, log)
}

fn outcome(mut command: Command, log: &Path) -> Outcome {
    let out = command
        .env("MS500_RELAY_LOG", log)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the watchdog");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether nobody holds the lock on `path` (a shared lock can be taken).
fn lock_free(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|f| f.try_lock_shared().is_ok())
}

fn is_relay(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("ms500-relay"))
        .unwrap_or(false)
}

/// Kills every relay the test saw (and the one in the pid file), even when
/// an assertion failed: CONT first so a stopped one can die, then KILL.
/// Each pid is killed only while it is still the process seen (its start
/// time unchanged): a dead relay's pid may by then be another test's relay.
struct Reaper {
    pid_file: PathBuf,
    seen: Vec<(u32, Option<String>)>,
}

/// When process `pid` started (field 22 of /proc/PID/stat), in clock ticks.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19).map(str::to_string)
}

impl Reaper {
    fn saw(&mut self, pid: u32) {
        if !self.seen.iter().any(|(p, _)| *p == pid) {
            self.seen.push((pid, start_time(pid)));
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.pid_file) {
            self.saw(pid);
        }
        for (pid, started) in &self.seen {
            if alive(*pid) && is_relay(*pid) && start_time(*pid) == *started {
                send_signal(*pid, "CONT");
                send_signal(*pid, "KILL");
            }
        }
    }
}

#[test]
fn watchdog_starts_keeps_and_replaces_the_relay() {
    // Part (b') shifts the relay's wall clock with libfaketime.
    let faketime = support::faketime_lib();
    support::require(
        faketime.is_some() && support::testing_own_build(),
        "libfaketime (scripts/test.sh installs faketime) and the dynamically linked debug build",
    );
    let broker = Broker::start();
    let dir = TempDir::new("watchdog");
    let pid_file = dir.path().join("relay.pid");
    let status_file = dir.path().join("status.json");
    let log = dir.path().join("relay.log");
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "MQTT_BROKER = 127.0.0.1\nMQTT_PORT = {}\nSOCKET_PORT = 0\n\
             PID_FILE = {}\nSTATUS_FILE = {}\nSTATUS_INTERVAL = 1\nSHUTDOWN_GRACE = 2\n",
            broker.port,
            pid_file.display(),
            status_file.display()
        ),
    )
    .unwrap();
    let mut reaper = Reaper {
        pid_file: pid_file.clone(),
        seen: Vec::new(),
    };
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // (a) Not running: the first run starts it and waits until it is up. Two
    // runs at once (overlapping cron minutes) take turns: one starts it, the
    // other then finds it healthy and says nothing.
    let (first, other) = std::thread::scope(|s| {
        let a = s.spawn(|| run_watchdog(&conf, &log));
        let b = s.spawn(|| run_watchdog(&conf, &log));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (first, other) = if first.stdout.contains("started") {
        (first, other)
    } else {
        (other, first)
    };
    assert_eq!(
        (other.code, other.all()),
        (0, String::new()),
        "{}",
        first.all()
    );
    if let Some(p) = read_pid(&pid_file) {
        reaper.saw(p);
    }
    assert_eq!(first.code, 0, "{}\nrelay log:\n{}", first.all(), show_log());
    assert!(first.stdout.contains("started"), "{}", first.all());
    let p1 = read_pid(&pid_file).expect("a pid in PID_FILE");
    assert!(alive(p1), "pid {p1} from the pid file is not running");
    assert!(
        first.stdout.contains(&format!("pid {p1}")),
        "{}",
        first.all()
    );
    assert!(status_file.exists(), "no status file after the start");
    assert!(
        show_log().contains("listening on"),
        "relay log:\n{}",
        show_log()
    );

    // (b) Healthy: nothing to do, nothing said, same relay (also through the wrapper script).
    let wrapped = run_wrapper(&conf, &log);
    assert_eq!((wrapped.code, wrapped.all()), (0, String::new()));
    let second = run_watchdog(&conf, &log);
    assert_eq!(second.code, 0, "{}", second.all());
    assert_eq!(
        second.all(),
        "",
        "a healthy relay must be left alone quietly"
    );
    assert_eq!(read_pid(&pid_file), Some(p1));
    assert!(alive(p1));

    // (b') A wall clock a day off either way (no RTC, then NTP) makes the
    // status file look a day old: the relay rewrites it, so it is left alone.
    if let Some(lib) = faketime {
        for shift in ["+1d", "-1d"] {
            let mut command = relay_command();
            command
                .arg("watchdog")
                .arg("-c")
                .arg(&conf)
                .env("LD_PRELOAD", &lib)
                .env("FAKETIME", shift)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            let shifted = outcome(command, &log);
            assert_eq!(
                (shifted.code, shifted.all()),
                (0, String::new()),
                "clock {shift}: a live relay must be left alone"
            );
            assert_eq!(read_pid(&pid_file), Some(p1), "clock {shift}");
        }
    }

    // (c) Killed (-9): the lock went with it, so the next run starts a new one.
    send_signal(p1, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(p1)));
    // The main thread shows as a zombie while the others may still be
    // exiting with the descriptor table (and the lock): wait for the lock.
    assert!(wait_until(Duration::from_secs(5), || lock_free(&pid_file)));
    let third = run_watchdog(&conf, &log);
    if let Some(p) = read_pid(&pid_file) {
        reaper.saw(p);
    }
    assert_eq!(third.code, 0, "{}\nrelay log:\n{}", third.all(), show_log());
    assert!(third.stdout.contains("started"), "{}", third.all());
    let p2 = read_pid(&pid_file).expect("a pid in PID_FILE");
    assert_ne!(p2, p1, "the killed relay's pid is still in the pid file");
    assert!(alive(p2), "new relay {p2} is not running");

    // (d) Hung (SIGSTOP): still holds the lock, but its status file goes
    // stale after 3 x STATUS_INTERVAL; the run replaces it.
    send_signal(p2, "STOP");
    assert!(
        wait_until(Duration::from_secs(10), || age(&status_file)
            .is_some_and(|a| a > Duration::from_millis(4200))),
        "the status file of a stopped relay did not go stale"
    );
    let fourth = run_watchdog(&conf, &log);
    if let Some(p) = read_pid(&pid_file) {
        reaper.saw(p);
    }
    assert_eq!(
        fourth.code,
        0,
        "{}\nrelay log:\n{}",
        fourth.all(),
        show_log()
    );
    assert!(fourth.stdout.contains("hung"), "{}", fourth.all());
    assert!(fourth.stdout.contains("started"), "{}", fourth.all());
    assert!(
        wait_until(Duration::from_secs(5), || !alive(p2)),
        "the hung relay {p2} is still there"
    );
    let p3 = read_pid(&pid_file).expect("a pid in PID_FILE");
    assert_ne!(p3, p2);
    assert!(alive(p3), "replacement relay {p3} is not running");
    assert!(
        age(&status_file).is_some_and(|a| a < Duration::from_secs(3)),
        "the replacement's status file is not fresh"
    );
    // And the replacement is healthy: the next run is quiet again.
    let fifth = run_watchdog(&conf, &log);
    assert_eq!((fifth.code, fifth.all()), (0, String::new()));
    assert_eq!(read_pid(&pid_file), Some(p3));

    // Clean stop at the end (the reaper covers the failure paths).
    send_signal(p3, "TERM");
    assert!(
        wait_until(Duration::from_secs(10), || !alive(p3)),
        "relay {p3} did not stop on SIGTERM"
    );
    drop(reaper);
    drop(broker);
}

#[test]
fn watchdog_refuses_a_config_without_pid_file() {
    let dir = TempDir::new("watchdog-nopid");
    let conf = dir.path().join("relay.conf");
    let log = dir.path().join("relay.log");
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PORT = 0\nSTATUS_FILE = {}\n",
            dir.path().join("status.json").display()
        ),
    )
    .unwrap();
    let out = run_watchdog(&conf, &log);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("PID_FILE"), "{}", out.all());
    assert!(!log.exists(), "no relay may be started: {}", out.all());

    // A configuration the relay refuses is refused too, with the relay's reason.
    std::fs::write(&conf, "MQTT_QOS = 7\n").unwrap();
    let out = run_watchdog(&conf, &log);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("MQTT_QOS"), "{}", out.all());
}

#[test]
fn the_watchdog_log_is_timestamped_bounded_and_says_a_repeated_failure_once() {
    let dir = TempDir::new("op-wdlog");
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "PID_FILE = {0}/relay.pid\nSTATUS_FILE = {0}/status.json\nLOG_LEVL = debug\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // Cron's `>>watchdog.log 2>&1`, already past the bound.
    let log = dir.path().join("watchdog.log");
    std::fs::write(&log, "old line\n".repeat(40_000)).unwrap();
    let cron = || {
        let out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        relay_command()
            .args(["watchdog", "-c"])
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(cron(), Some(2));
    let first = read_text(&log);
    assert!(first.len() < 10_000, "rotated: {} bytes", first.len());
    assert!(read_text(&dir.path().join("watchdog.log.1")).starts_with("old line"));
    assert!(first.contains("LOG_LEVL: unknown key"), "{first}");
    assert!(first.starts_with("20"), "a timestamp first: {first}");
    // The same failure a minute later: not written again within the hour.
    assert_eq!(cron(), Some(2));
    assert_eq!(read_text(&log), first);
}
