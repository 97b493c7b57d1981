//! relay.conf files a test writes, and the relay's own tools (check-config,
//! watchdog, stop, status, reload) run on them; the relays they start are
//! found by the configuration they run, and killed even when a test fails.

use std::path::{Path, PathBuf};

use super::{chmod, run_bin, send_signal, TempDir};

/// relay.conf in `dir` holding `text`; its path.
pub fn write_conf(dir: &TempDir, text: &str) -> String {
    let p = dir.path().join("relay.conf");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// relay.conf in `dir` (mode 0644: readable by every local user, which the
/// checks allow without a password in it), pointing at `broker_port`.
pub fn shared_conf(dir: &Path, name: &str, broker_port: u16, lines: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "MQTT_BROKER = 127.0.0.1\nMQTT_PORT = {broker_port}\nSOCKET_PORT = 0\n\
             SOCKET_ALLOW_USERS = root\nSTATUS_INTERVAL = 1\nSHUTDOWN_GRACE = 1\n{lines}"
        ),
    )
    .unwrap();
    chmod(&path, 0o644);
    path
}

/// A relay.conf in `dir` with `lines`; the relay exits before it needs a broker.
pub fn private_conf(dir: &Path, lines: &str) -> PathBuf {
    let path = dir.join("relay.conf");
    // SOCKET_ALLOW_USERS set: no warning about local users among those counted.
    std::fs::write(
        &path,
        format!("SOCKET_PORT = 0\nMQTT_PORT = 1\nSOCKET_ALLOW_USERS = root\n{lines}"),
    )
    .unwrap();
    chmod(&path, 0o600);
    path
}

pub fn run_with(conf: &Path) -> (i32, String) {
    let (code, _, err) = run_bin(&["-c", conf.to_str().unwrap()], None);
    (code, err)
}

pub fn tool(args: &[&str], conf: &Path) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let conf = conf.to_string_lossy().into_owned();
    all.extend(["-c", conf.as_str()]);
    run_bin(&all, None)
}

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
