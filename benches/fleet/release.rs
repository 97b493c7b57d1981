//! A fleet's held commands released: 10,000 cameras known and gone offline,
//! three commands held for each, then every camera back within two seconds.
//! Measured: how long until the last command reached the broker, whether
//! any was lost, sent twice or out of order for its camera, and how many
//! info lines the hold and the release wrote (summed per camera and per
//! minute, not one per command).

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{Broker, Relay, Subscriber};

use super::{cameras, fill, heartbeat};

pub const CAMERAS: usize = 10_000;
pub const EACH: usize = 3;
/// The cameras' return is spread over this long.
const RETURN_OVER: Duration = Duration::from_millis(1500);
/// `DEVICE_TIMEOUT`: long enough that a camera back (one heartbeat, then
/// silent in this scenario, where a real one heartbeats on) stays present
/// while the fleet's commands go out.
const TIMEOUT_S: u64 = 20;

/// What one build did with the fleet's return.
pub struct Released {
    /// From the first returning heartbeat to the last command at the broker.
    pub seconds: f64,
    /// From a camera's returning heartbeat to its last command at the
    /// broker: the median and the longest (`RELEASE_DELAY`, 1 s, is the
    /// floor: a camera's commands wait that long for its subscription).
    pub per_camera: (f64, f64),
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub misordered: usize,
    /// Info lines written from the first command held to the last released.
    pub info_lines: usize,
}

fn camera(i: usize) -> String {
    format!("fleet-{i:06}")
}

/// None when the build holds nothing for offline cameras (before issue 26).
pub fn run(broker: &Broker, exe: Option<&str>) -> Option<Released> {
    let timeout = TIMEOUT_S.to_string();
    let relay = crate::start_relay(
        broker,
        exe,
        &[
            ("MAX_DEVICES", "20000"),
            ("DEVICE_TIMEOUT", &timeout),
            ("PRESENCE_FIELD", "camera"),
            ("HOLD_OFFLINE", "true"),
            ("STATUS_FILE", "{dir}/status.json"),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    let cams = cameras(broker.port, "release-cameras");
    fill(&cams, &relay, 0..CAMERAS);
    // Every camera silent past DEVICE_TIMEOUT: offline.
    std::thread::sleep(Duration::from_secs(TIMEOUT_S + 3));
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let lines_before = info_lines(&relay);
    let mut backend = relay.connect();
    let mut batch = String::new();
    for round in 0..EACH {
        for i in 0..CAMERAS {
            let id = camera(i);
            batch.push_str(&format!(
                r#"{{"type":"IMG","unit":"{id}","id":{round},"camera":"{id}"}}"#
            ));
            batch.push('\n');
        }
    }
    backend
        .write_all(batch.as_bytes())
        .expect("commands to the relay");
    if !wait_held(&relay, CAMERAS * EACH) {
        return None;
    }
    assert!(
        sub.recv(Duration::from_millis(200)).is_none(),
        "a command for an offline camera was published before its camera returned"
    );
    let back = Instant::now();
    let mut returned = HashMap::new();
    for i in 0..CAMERAS {
        let due = back + RETURN_OVER.mul_f64(i as f64 / CAMERAS as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        returned.insert(camera(i), Instant::now());
        heartbeat(&cams, i);
    }
    let got = sub.collect(CAMERAS * EACH * 2, Duration::from_secs(10));
    let last = got.iter().map(|m| m.at).max().unwrap_or(back);
    let mut per_camera: HashMap<String, Vec<u64>> = HashMap::new();
    let mut last_at: HashMap<String, Instant> = HashMap::new();
    for m in &got {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
            continue;
        };
        let unit = v["unit"].as_str().unwrap_or_default().to_string();
        last_at.insert(unit.clone(), m.at);
        per_camera
            .entry(unit)
            .or_default()
            .push(v["id"].as_u64().unwrap_or(u64::MAX));
    }
    let mut waits: Vec<f64> = last_at
        .iter()
        .filter_map(|(unit, at)| Some(at.saturating_duration_since(*returned.get(unit)?)))
        .map(|d| d.as_secs_f64())
        .collect();
    waits.sort_by(f64::total_cmp);
    let median = waits.get(waits.len() / 2).copied().unwrap_or(f64::NAN);
    let longest = waits.last().copied().unwrap_or(f64::NAN);
    let (mut unique, mut misordered) = (0, 0);
    for ids in per_camera.values() {
        let mut seen = ids.clone();
        seen.sort_unstable();
        seen.dedup();
        unique += seen.len();
        misordered += usize::from(ids.windows(2).any(|w| w[0] > w[1]));
    }
    Some(Released {
        seconds: last.saturating_duration_since(back).as_secs_f64(),
        per_camera: (median, longest),
        delivered: unique,
        lost: CAMERAS * EACH - unique.min(CAMERAS * EACH),
        duplicates: got.len() - unique,
        misordered,
        info_lines: info_lines(&relay) - lines_before,
    })
}

/// Info lines the relay has written so far.
fn info_lines(relay: &Relay) -> usize {
    relay.log().lines().filter(|l| l.contains(" INFO ")).count()
}

/// Waits until the status file says `n` commands are held; false when
/// it does not within two minutes (or the build does not hold).
fn wait_held(relay: &Relay, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match relay.status()["held"].as_u64() {
            Some(held) if held == n as u64 => return true,
            None if Instant::now() + Duration::from_secs(100) > deadline => return false,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{n} commands were not all held: status says {}",
        relay.status()["held"]
    );
    false
}

/// The table rows of `r`, named after the build.
pub fn rows(name: &str, r: Option<&Released>) -> Vec<(String, String)> {
    let what =
        format!("{name}: fleet release, {CAMERAS} cameras back within 2 s, {EACH} held each");
    let Some(r) = r else {
        return vec![(what, "holds nothing for offline cameras".into())];
    };
    vec![(
        what,
        format!(
            "all at the broker {:.2} s after the first returned (a camera's last {:.2} s after its return, at most {:.2} s); {}/{} delivered, {} lost, {} duplicates, {} cameras misordered; {} info lines",
            r.seconds,
            r.per_camera.0,
            r.per_camera.1,
            r.delivered,
            CAMERAS * EACH,
            r.lost,
            r.duplicates,
            r.misordered,
            r.info_lines
        ),
    )]
}
