//! relay.conf files a test writes, and the relay's own tools (check-config,
//! watchdog, stop, status, reload) run on them; the relays they start are
//! found by the configuration they run, and killed even when a test fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{alive, chmod, run_bin, send_signal, wait_until, WAIT};

/// The start of a relay.conf for a relay that stops at its checks or never
/// reaches a broker (port 1), with SOCKET_ALLOW_USERS set so that no
/// warning about local users joins what a test reads.
pub const NO_BROKER: &str = "SOCKET_PORT = 0\nMQTT_PORT = 1\nSOCKET_ALLOW_USERS = root\n";

/// `dir`/relay.conf holding `text`; its path.
pub fn conf_in(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("relay.conf");
    std::fs::write(&path, text).expect("write relay.conf");
    path
}

/// `dir`/relay.conf holding [`NO_BROKER`] and `lines`, mode 0600 (nobody
/// else reads it, so no warning about that either).
pub fn private_conf(dir: &Path, lines: &str) -> PathBuf {
    let path = conf_in(dir, &format!("{NO_BROKER}{lines}"));
    chmod(&path, 0o600);
    path
}

/// relay.conf `name` in `dir` for the operator's tools, pointing at
/// `broker_port`: mode 0644 (readable by every local user, which the checks
/// allow without a password in it), a status file refreshed every second
/// and a short shutdown grace.
pub fn shared_conf(dir: &Path, name: &str, broker_port: u16, lines: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "MQTT_BROKER = 127.0.0.1\nMQTT_PORT = {broker_port}\nSOCKET_PORT = 0\n\
             SOCKET_ALLOW_USERS = root\nSTATUS_INTERVAL = 1\nSHUTDOWN_GRACE = 1\n{lines}"
        ),
    )
    .expect("write relay.conf");
    chmod(&path, 0o644);
    path
}

/// Runs the relay binary as `args` with `-c conf` after the first of them
/// (the command; `&[]` runs the relay itself): exit code, stdout, stderr.
pub fn tool(args: &[&str], conf: &Path) -> (i32, String, String) {
    tool_with_input(args, conf, None)
}

/// [`tool`] with `input` on its standard input.
pub fn tool_with_input(args: &[&str], conf: &Path, input: Option<&[u8]>) -> (i32, String, String) {
    let conf = conf.to_string_lossy().into_owned();
    let (command, rest) = args
        .split_first()
        .map_or((None, &[][..]), |(c, r)| (Some(*c), r));
    let all: Vec<&str> = command
        .into_iter()
        .chain(["-c", conf.as_str()])
        .chain(rest.iter().copied())
        .collect();
    run_bin(&all, input)
}

/// Asserts that each of `commands` (`""`: the start itself) refuses `conf`
/// with exit 2 and a stderr that names every one of `needles`.
#[track_caller]
pub fn refused_by(commands: &[&str], conf: &Path, needles: &[&str]) {
    for command in commands {
        let args: &[&str] = if command.is_empty() { &[] } else { &[command] };
        let (code, out, err) = tool(args, conf);
        assert_eq!(code, 2, "{command:?}: {out}{err}");
        for needle in needles {
            assert!(err.contains(needle), "{command:?}, {needle:?}: {err}");
        }
    }
}

/// The pid written in `pid_file`, if any.
pub fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// Every relay process whose command line names `conf`.
pub fn relays_of(conf: &Path) -> Vec<u32> {
    let conf = conf.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let words: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                words.iter().any(|w| w.contains("ms500-relay")) && words.contains(&conf)
            })
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

/// Kills, even when an assertion failed, every relay started for the
/// configurations it was given.
pub struct Reaper(pub Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for conf in &self.0 {
            for pid in relays_of(conf) {
                send_signal(pid, "CONT");
                send_signal(pid, "KILL");
            }
        }
    }
}

/// Starts the relay for `conf` with the watchdog; its pid.
pub fn started_by_watchdog(conf: &Path, pid_file: &Path) -> u32 {
    let (code, out, err) = tool(&["watchdog"], conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("started"), "{out}{err}");
    read_pid(pid_file).expect("a pid in PID_FILE")
}

/// A relay.conf for the tools ([`shared_conf`]) with PID_FILE and
/// STATUS_FILE where the test says, and a [`Reaper`] for the relays the
/// tools start with it.
pub struct ToolConf {
    pub path: PathBuf,
    pub pid_file: PathBuf,
    _reaper: Reaper,
}

impl ToolConf {
    /// `dir`/relay.conf reaching the broker on `broker_port`.
    pub fn new(dir: &Path, broker_port: u16, pid_file: PathBuf, status_file: &Path) -> ToolConf {
        ToolConf::named("relay.conf", dir, broker_port, pid_file, status_file, "")
    }

    /// As [`ToolConf::new`], PID_FILE `pid` and STATUS_FILE `status.json`
    /// in `dir`/run, a directory the relay makes at start.
    pub fn in_run(dir: &Path, broker_port: u16, pid: &str) -> ToolConf {
        let run = dir.join("run");
        ToolConf::new(dir, broker_port, run.join(pid), &run.join("status.json"))
    }

    /// As [`ToolConf::new`], as `name` in `dir`, with more `lines`.
    pub fn named(
        name: &str,
        dir: &Path,
        broker_port: u16,
        pid_file: PathBuf,
        status_file: &Path,
        lines: &str,
    ) -> ToolConf {
        let files = format!(
            "PID_FILE = {}\nSTATUS_FILE = {}\n{lines}",
            pid_file.display(),
            status_file.display()
        );
        let path = shared_conf(dir, name, broker_port, &files);
        ToolConf {
            _reaper: Reaper(vec![path.clone()]),
            path,
            pid_file,
        }
    }

    /// Runs a tool on it (see [`tool`]).
    pub fn tool(&self, args: &[&str]) -> (i32, String, String) {
        tool(args, &self.path)
    }

    /// Starts its relay with the watchdog; the relay's pid.
    pub fn started_by_watchdog(&self) -> u32 {
        started_by_watchdog(&self.path, &self.pid_file)
    }

    /// `stop` stops relay `pid`, and says so; how long `stop` took.
    #[track_caller]
    pub fn stops(&self, pid: u32) -> Duration {
        let started = Instant::now();
        let (code, out, err) = self.tool(&["stop"]);
        let took = started.elapsed();
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!("stopping relay pid {pid}")),
            "{out}{err}"
        );
        assert!(wait_until(WAIT, || !alive(pid)), "relay {pid} still runs");
        took
    }
}
