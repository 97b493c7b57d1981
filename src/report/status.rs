//! `STATUS_FILE` and the `status` command. The main thread writes a JSON
//! snapshot (counters, gauges, device table) to a temporary file and renames
//! it over `STATUS_FILE` every `STATUS_INTERVAL` seconds, so readers never see
//! a half-written file and the file's age tells a watchdog whether the relay
//! is alive. `ms500-relay status` reads it back and prints it for people.
//! Rendering and reading are pure functions of the snapshot and the clock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::Config;
use crate::delivery::policy::HeldFor;
use crate::delivery::presence::Held;
use crate::devices::heartbeat;
use crate::devices::table::TableSnapshot;
use crate::error::Error;
use crate::ops::counters::{Counters, COUNTED};
use crate::ops::files;
use crate::ops::record::{self, Lookup};
use crate::ops::time::{iso8601, unix};

/// A snapshot older than this many intervals means a hung relay.
pub const STALE_INTERVALS: u64 = 3;

/// Devices listed one by one in the status file, the most recently seen;
/// the others are only counted, so the file stays small with any fleet.
pub const DEVICES_SHOWN: usize = 200;

/// Everything a snapshot shows, gathered by the caller.
pub struct Snapshot<'a> {
    pub config: &'a Config,
    pub started: SystemTime,
    pub now: SystemTime,
    pub counters: &'a Counters,
    /// The broker in use (or being tried), `host:port`.
    pub broker: String,
    pub devices: &'a TableSnapshot,
    /// What the publisher holds for cameras, or waits for them to confirm.
    pub held: Held,
    /// The last snapshot of a clean stop: `state` says "stopped".
    pub stopped: bool,
    /// relay.conf as loaded, and whether it changed since.
    pub config_file: Option<ConfigFile>,
}

/// relay.conf as the relay loaded it.
pub struct ConfigFile {
    pub path: String,
    /// Changed on disk since it was loaded (`reload` would apply it).
    pub changed: bool,
}

pub fn to_json(s: &Snapshot<'_>) -> Value {
    document(s, Value::Array(devices_json(s)))
}

/// The snapshot with `devices` as its device list.
fn document(s: &Snapshot<'_>, devices: Value) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let down_since = Some(s.counters.broker_down_since_unix.load(Relaxed)).filter(|t| *t > 0);
    let counters: serde_json::Map<String, Value> = s
        .counters
        .snapshot()
        .iter()
        .map(|(counted, v)| (counted.key.to_string(), json!(v)))
        .collect();
    let held_cameras = held_json(s);
    let device_link = device_link_json(s);
    // Both under the problem's lock, as the publisher changes them together.
    let (spool_since, spool_problem) = {
        let problem = crate::ops::sync::lock(&s.counters.spool_problem);
        let since = s.counters.spool_failing_since_unix.load(Relaxed);
        (Some(since).filter(|t| *t > 0), problem.clone())
    };
    json!({
        "state": if s.stopped { "stopped" } else { "running" },
        "config_file": s.config_file.as_ref().map(|file| &file.path),
        "config_changed": s.config_file.as_ref().is_some_and(|file| file.changed),
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "started": iso8601(s.started),
        "started_unix": unix(s.started),
        "updated": iso8601(s.now),
        "updated_unix": unix(s.now),
        "status_interval": s.config.status_interval.as_secs(),
        "broker": {
            "address": s.broker,
            "connected": s.counters.broker_connected.load(Relaxed),
            "down_since": down_since.map(|t| iso8601(UNIX_EPOCH + Duration::from_secs(t))),
            "down_since_unix": down_since,
        },
        "device_link": device_link,
        "mqtt_keepalive": s.config.mqtt_keepalive.as_secs(),
        // The same flag at the top level, for one-key checks (`jq .broker_connected`).
        "broker_connected": s.counters.broker_connected.load(Relaxed),
        "queue_depth": s.counters.queued.load(Relaxed),
        "queue_bytes": s.counters.queue_bytes.load(Relaxed),
        "spool_bytes": s.counters.spool_bytes.load(Relaxed),
        "spool": {
            "file": s.config.spool_file.as_ref().map(|p| p.display().to_string()),
            "ok": spool_since.is_none(),
            "failing_since": spool_since.map(|t| iso8601(UNIX_EPOCH + Duration::from_secs(t))),
            "failing_since_unix": spool_since,
            "problem": spool_problem,
        },
        "held": s.held.commands,
        "unconfirmed": s.held.unconfirmed,
        "held_bytes": s.held.bytes,
        "held_cameras": held_cameras,
        "broker_reconnects": s.counters.broker_connections.load(Relaxed).saturating_sub(1),
        "counters": counters,
        "devices_total": s.devices.total,
        "devices_online": s.devices.online,
        "devices_offline": s.devices.total - s.devices.online,
        "devices_not_shown": s.devices.total - s.devices.shown.len(),
        "devices_forgotten": s.devices.forgotten,
        "cameras": {
            "present": s.devices.states[0],
            "unknown": s.devices.states[1],
            "offline": s.devices.states[2],
        },
        "devices": devices,
    })
}

/// The device link: subscribed or since when not, and its MQTT version.
fn device_link_json(s: &Snapshot<'_>) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let c = s.counters;
    let down_since = Some(c.device_down_since_unix.load(Relaxed)).filter(|t| *t > 0);
    let protocol = match c.device_protocol.load(Relaxed) {
        5 => Some("5"),
        4 => Some("3.1.1"),
        _ => None,
    };
    json!({
        "subscribed": c.device_subscribed.load(Relaxed),
        "protocol": protocol,
        "down_since": down_since.map(|t| iso8601(UNIX_EPOCH + Duration::from_secs(t))),
        "down_since_unix": down_since,
    })
}

/// The devices shown, each with its share of what is held.
fn devices_json(s: &Snapshot<'_>) -> Vec<Value> {
    let held_for: HashMap<String, &HeldFor> = s
        .held
        .by_camera
        .iter()
        .map(|h| (h.camera.to_ascii_lowercase(), h))
        .collect();
    s.devices
        .shown
        .iter()
        .map(|d| {
            let h = &d.status;
            let held = held_for.get(&d.id.to_ascii_lowercase());
            json!({
                "id": d.id,
                "online": d.online,
                "state": d.state.as_str(),
                "interval_s": d.interval.map(|i| i.as_secs_f64()),
                "last_seen": iso8601(d.last_seen),
                "last_seen_unix": unix(d.last_seen),
                "ip": h.ip,
                "network": h.network,
                "eth_connected": h.eth_connected,
                "wifi_connected": h.wifi_connected,
                "lte_connected": h.lte_connected,
                "cpu_temp": h.cpu_temp,
                "sense_temp": h.sense_temp,
                "video_fps": h.video_fps,
                "spi_fps": h.spi_fps,
                "lte_signal": h.lte_signal,
                "timestamp": h.timestamp,
                "held": held.map_or(0, |h| h.commands),
                "unconfirmed": held.map_or(0, |h| h.unconfirmed),
                "held_oldest_age_s": held.map(|h| age_s(h.oldest, s.now)),
            })
        })
        .collect()
}

/// The cameras with commands held or unconfirmed, the longest waiting first.
fn held_json(s: &Snapshot<'_>) -> Vec<Value> {
    s.held
        .by_camera
        .iter()
        .take(DEVICES_SHOWN)
        .map(|h| {
            json!({
                "camera": heartbeat::shown(&h.camera),
                "state": h.state,
                "interval_s": h.interval.map(|i| i.as_secs_f64()),
                "held": h.commands,
                "unconfirmed": h.unconfirmed,
                "oldest": iso8601(h.oldest),
                "oldest_unix": unix(h.oldest),
                "oldest_age_s": age_s(h.oldest, s.now),
            })
        })
        .collect()
}

/// Seconds from `t` to `now` (0 when the clock says `t` is later).
fn age_s(t: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(t).unwrap_or_default().as_secs()
}

/// The `devices` list of the file as it is written there (one level
/// indented): the writer keeps it and writes it again while nothing it
/// shows changed, which with a large idle fleet is most of the file.
pub fn devices_text(s: &Snapshot<'_>) -> std::io::Result<Vec<u8>> {
    let list = Value::Array(devices_json(s));
    let pretty = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
    // A JSON string holds no raw newline: each starts a line to indent.
    let mut text = Vec::with_capacity(pretty.len() + pretty.len() / 4);
    for line in pretty.split_inclusive(|b| *b == b'\n') {
        text.extend_from_slice(line);
        if line.ends_with(b"\n") {
            text.extend_from_slice(INDENT);
        }
    }
    Ok(text)
}

/// One level of the file's indentation.
const INDENT: &[u8] = b"  ";

/// Replaces `path` atomically with the snapshot, its device list being
/// `devices` (from [`devices_text`]).
pub fn write(path: &Path, snapshot: &Snapshot<'_>, devices: &[u8]) -> std::io::Result<()> {
    files::replace(path, &file_bytes(snapshot, devices)?, files::STATUS_MODE)
}

/// The file's bytes: the snapshot as pretty JSON, `devices` spliced in.
fn file_bytes(snapshot: &Snapshot<'_>, devices: &[u8]) -> std::io::Result<Vec<u8>> {
    const MARK: &str = "devices listed here";
    let doc = document(snapshot, Value::String(MARK.into()));
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    // The top level's key, on a line of its own: no value (a camera name
    // in `held_cameras` is deeper and quoted) can look like it.
    let key = format!("\n  \"devices\": \"{MARK}\"");
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .ok_or_else(|| std::io::Error::other("the device list has no place in the snapshot"))?;
    let value_at = at + key.len() - MARK.len() - 2;
    bytes.splice(value_at..at + key.len(), devices.iter().copied());
    bytes.push(b'\n');
    Ok(bytes)
}

/// What `status` concludes from a snapshot; its exit code says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Fresh, and the broker connected (or away for less than 2 × MQTT_KEEPALIVE): exit 0.
    Healthy,
    /// Missing, unreadable or older than 3 × STATUS_INTERVAL (dead or hung): exit 1.
    Stale,
    /// Fresh, but no broker reached for longer than 2 × MQTT_KEEPALIVE: exit 3.
    BrokerAway,
    /// Fresh, but SPOOL_FILE cannot be written (accepted commands are not
    /// kept across a restart): exit 3.
    SpoolFailing,
}

/// `ms500-relay status [--json]`: prints the snapshot (readable, or the raw
/// JSON); an error carries the exit code for a stale or missing snapshot
/// (1) and for a broker away too long (3). `source` is relay.conf: the
/// relay running it is found by its runtime record (whose STATUS_FILE is
/// read, the one it writes), else by PID_FILE's lock.
pub fn show(
    config: &Config,
    source: Option<&Path>,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), Error> {
    let Some(configured) = &config.status_file else {
        return Err(Error::Usage(
            "status needs STATUS_FILE set in the configuration".into(),
        ));
    };
    // A snapshot can be fresh for up to 3 intervals after its relay died:
    // whether one holds the lock, as the kernel says, is the truth about
    // whether one runs (a lock held by a pid that cannot be proved still
    // says that something runs).
    let lookup = record::find(source, config.pid_file.as_deref()).unwrap_or(Lookup::Unknown);
    let recorded = match &lookup {
        Lookup::Running(running) => running.record.as_ref().and_then(|r| r.status_file.clone()),
        Lookup::NotRunning | Lookup::Unknown => None,
    };
    let path = recorded.as_ref().unwrap_or(configured);
    let shown = path.display();
    // Read only from a place that passes the checks: another user cannot
    // show her own snapshot in the relay's name.
    let text = match files::read_checked(path) {
        Ok(t) => t,
        Err(e) => {
            writeln!(out, "status file {shown} cannot be read: {e}")?;
            writeln!(
                out,
                "the relay is not running, or STATUS_FILE differs from its configuration"
            )?;
            return Err(Error::Unhealthy);
        }
    };
    let value: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            writeln!(out, "status file {shown} is not valid JSON: {e}")?;
            return Err(Error::Unhealthy);
        }
    };
    let (report, mut health) = render(&value, SystemTime::now(), config.status_interval.as_secs());
    let not_running = matches!(lookup, Lookup::NotRunning);
    if json {
        out.write_all(&text)?;
    } else {
        out.write_all(report.as_bytes())?;
    }
    if not_running && health != Health::Stale {
        health = Health::Stale;
        if !json {
            writeln!(
                out,
                "NOT RUNNING: no relay holds PID_FILE: the snapshot above is its last"
            )?;
        }
    }
    match health {
        Health::Healthy => Ok(()),
        Health::Stale => Err(Error::Unhealthy),
        Health::BrokerAway | Health::SpoolFailing => Err(Error::BrokerAway),
    }
}

/// The readable report and the health it shows.
pub fn render(v: &Value, now: SystemTime, default_interval: u64) -> (String, Health) {
    let now_unix = unix(now);
    let mut r = String::new();
    let fresh = headline(&mut r, v, now_unix, default_interval);
    let broker_away = broker_line(&mut r, v, now_unix);
    let deaf = device_link_line(&mut r, v, now_unix);
    let spool_failing = spool_line(&mut r, v, now_unix);
    if v["config_changed"].as_bool() == Some(true) {
        let _ = writeln!(
            r,
            "{} changed since the relay read it: `ms500-relay reload` applies it",
            heartbeat::shown(v["config_file"].as_str().unwrap_or("relay.conf"))
        );
    }
    let _ = writeln!(r, "queue depth: {}", v["queue_depth"].as_u64().unwrap_or(0));
    held_lines(&mut r, v);
    let counters: Vec<String> = COUNTED
        .iter()
        .map(|counted| {
            format!(
                "{} {}",
                counted.key.replace('_', " "),
                v["counters"][counted.key].as_u64().unwrap_or(0)
            )
        })
        .collect();
    let _ = writeln!(r, "counters: {}", counters.join(", "));
    let devices = v["devices"].as_array().cloned().unwrap_or_default();
    devices_line(&mut r, v, devices.len());
    if !devices.is_empty() {
        device_table(&mut r, &devices, now_unix);
    }
    let health = if !fresh {
        Health::Stale
    } else if broker_away || deaf {
        Health::BrokerAway
    } else if spool_failing {
        Health::SpoolFailing
    } else {
        Health::Healthy
    };
    (r, health)
}

/// Version, pid, uptime and whether the snapshot is fresh (returned), with
/// a warning line when it is not.
fn headline(r: &mut String, v: &Value, now_unix: u64, default_interval: u64) -> bool {
    let interval = v["status_interval"]
        .as_u64()
        .unwrap_or(default_interval)
        .max(1);
    let updated = v["updated_unix"].as_u64().unwrap_or(0);
    let age = now_unix.saturating_sub(updated);
    let stopped = v["state"].as_str() == Some("stopped");
    let fresh = !stopped && updated > 0 && age <= STALE_INTERVALS * interval;
    let started = v["started_unix"].as_u64().unwrap_or(now_unix);
    let _ = writeln!(
        r,
        "ms500-relay {} pid {}, up {}, status {} (updated {} ago)",
        v["version"].as_str().unwrap_or("?"),
        v["pid"]
            .as_u64()
            .map(|p| p.to_string())
            .unwrap_or("?".into()),
        human(now_unix.saturating_sub(started)),
        if stopped {
            "STOPPED"
        } else if fresh {
            "FRESH"
        } else {
            "STALE"
        },
        human(age),
    );
    if stopped {
        let _ = writeln!(r, "  the relay stopped cleanly: this is its last snapshot");
    } else if !fresh {
        let _ = writeln!(
            r,
            "  the snapshot is older than {} x STATUS_INTERVAL ({interval} s): the relay is hung or stopped",
            STALE_INTERVALS
        );
    }
    fresh
}

/// The broker line; true when the broker has been away for longer than
/// 2 × MQTT_KEEPALIVE.
fn broker_line(r: &mut String, v: &Value, now_unix: u64) -> bool {
    let connected = v["broker"]["connected"].as_bool() == Some(true);
    let down_for = v["broker"]["down_since_unix"]
        .as_u64()
        .map(|t| now_unix.saturating_sub(t));
    let keepalive = v["mqtt_keepalive"].as_u64().unwrap_or(60);
    let broker_away = !connected && down_for.is_some_and(|d| d > 2 * keepalive);
    let _ = write!(
        r,
        "broker {}: {}",
        heartbeat::shown(v["broker"]["address"].as_str().unwrap_or("?")),
        if connected {
            "connected"
        } else {
            "NOT connected"
        }
    );
    if let (false, Some(d)) = (connected, down_for) {
        let _ = write!(r, " for {}", human(d));
        if broker_away {
            let _ = write!(r, " (longer than 2 x MQTT_KEEPALIVE: {} s)", 2 * keepalive);
        }
    }
    let _ = writeln!(r);
    broker_away
}

/// The device link's line; true when it has not been subscribed for
/// longer than 2 × MQTT_KEEPALIVE (no heartbeat or reply can arrive).
/// Snapshots of relays before it have no such field: nothing is shown.
fn device_link_line(r: &mut String, v: &Value, now_unix: u64) -> bool {
    let link = &v["device_link"];
    if link.is_null() {
        return false;
    }
    let protocol = link["protocol"].as_str().unwrap_or("?");
    if link["subscribed"].as_bool() == Some(true) {
        let _ = writeln!(r, "device link: subscribed (MQTT {protocol})");
        return false;
    }
    let down_for = link["down_since_unix"]
        .as_u64()
        .map(|t| now_unix.saturating_sub(t))
        .unwrap_or(0);
    let keepalive = v["mqtt_keepalive"].as_u64().unwrap_or(60);
    let deaf = down_for > 2 * keepalive;
    let _ = write!(r, "device link: NOT subscribed for {}", human(down_for));
    if deaf {
        let _ = write!(
            r,
            " (longer than 2 x MQTT_KEEPALIVE: {} s; no heartbeat or reply arrives)",
            2 * keepalive
        );
    }
    let _ = writeln!(r);
    deaf
}

/// The spool line, when SPOOL_FILE is set; true while it cannot be written.
fn spool_line(r: &mut String, v: &Value, now_unix: u64) -> bool {
    let Some(file) = v["spool"]["file"].as_str() else {
        return false;
    };
    let file = heartbeat::shown(file);
    match v["spool"]["failing_since_unix"].as_u64() {
        None => {
            let _ = writeln!(r, "spool {file}: ok");
            false
        }
        Some(since) => {
            let _ = writeln!(
                r,
                "spool {file}: FAILING for {} ({}): accepted commands are not kept across a restart",
                human(now_unix.saturating_sub(since)),
                heartbeat::shown(v["spool"]["problem"].as_str().unwrap_or("?"))
            );
            true
        }
    }
}

/// What waits for cameras: the totals, then a line per camera.
fn held_lines(r: &mut String, v: &Value) {
    let held = v["held"].as_u64().unwrap_or(0);
    let cameras = v["held_cameras"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        r,
        "held for cameras: {held} commands, {} unconfirmed, {} bytes, for {} cameras",
        v["unconfirmed"].as_u64().unwrap_or(0),
        v["held_bytes"].as_u64().unwrap_or(0),
        cameras.len()
    );
    for c in &cameras {
        let _ = writeln!(
            r,
            "  camera {} ({}{}): {} held, {} unconfirmed, the oldest for {}",
            heartbeat::shown(c["camera"].as_str().unwrap_or("?")),
            heartbeat::shown(c["state"].as_str().unwrap_or("?")),
            c["interval_s"]
                .as_f64()
                .map(|i| format!(", heartbeat every {i} s"))
                .unwrap_or_default(),
            c["held"].as_u64().unwrap_or(0),
            c["unconfirmed"].as_u64().unwrap_or(0),
            human(c["oldest_age_s"].as_u64().unwrap_or(0))
        );
    }
}

/// How many devices, how many online, and how many are listed (`listed`).
fn devices_line(r: &mut String, v: &Value, listed: usize) {
    let total = v["devices_total"].as_u64().unwrap_or(listed as u64);
    let _ = write!(
        r,
        "devices: {total} ({} online, {} offline)",
        v["devices_online"].as_u64().unwrap_or(0),
        v["devices_offline"].as_u64().unwrap_or(0)
    );
    if v["cameras"].is_object() {
        let _ = write!(
            r,
            "; {} present, {} unknown, {} offline",
            v["cameras"]["present"].as_u64().unwrap_or(0),
            v["cameras"]["unknown"].as_u64().unwrap_or(0),
            v["cameras"]["offline"].as_u64().unwrap_or(0)
        );
    }
    if total > listed as u64 {
        let _ = write!(r, ", the {listed} seen most recently listed");
    }
    if let Some(forgotten) = v["devices_forgotten"].as_u64().filter(|n| *n > 0) {
        let _ = write!(r, "; {forgotten} forgotten (MAX_DEVICES reached)");
    }
    let _ = writeln!(r);
}

const DEVICE_COLUMNS: [&str; 15] = [
    "DEVICE",
    "ONLINE",
    "STATE",
    "EVERY",
    "LAST SEEN",
    "IP",
    "NETWORK",
    "LINKS UP",
    "LTE SIGNAL",
    "CPU",
    "SENSE",
    "VIDEO",
    "SPI",
    "HELD",
    "UNCONFIRMED",
];

/// The listed devices as a table, each column as wide as its widest cell.
fn device_table(r: &mut String, devices: &[Value], now_unix: u64) {
    let rows: Vec<[String; 15]> = devices.iter().map(|d| device_row(d, now_unix)).collect();
    let mut widths = DEVICE_COLUMNS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = widths[i]);
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(r, "{}", line(DEVICE_COLUMNS.to_vec()));
    for row in &rows {
        let _ = writeln!(r, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

fn device_row(d: &Value, now_unix: u64) -> [String; 15] {
    let seen = d["last_seen_unix"]
        .as_u64()
        .map(|t| format!("{} ago", human(now_unix.saturating_sub(t))));
    [
        heartbeat::shown(d["id"].as_str().unwrap_or("?")),
        if d["online"].as_bool() == Some(true) {
            "yes".into()
        } else {
            "no".into()
        },
        text(&d["state"]),
        unit(&d["interval_s"], " s"),
        seen.unwrap_or_else(|| "-".into()),
        text(&d["ip"]),
        text(&d["network"]),
        links_up(d),
        text(&d["lte_signal"]),
        unit(&d["cpu_temp"], "C"),
        unit(&d["sense_temp"], "C"),
        unit(&d["video_fps"], "fps"),
        unit(&d["spi_fps"], "fps"),
        match (d["held"].as_u64(), d["held_oldest_age_s"].as_u64()) {
            (Some(n), Some(age)) if n > 0 => format!("{n} ({})", human(age)),
            _ => "-".into(),
        },
        match d["unconfirmed"].as_u64() {
            Some(n) if n > 0 => n.to_string(),
            _ => "-".into(),
        },
    ]
}

/// Which of the device's links say they are connected (`eth,wifi`), `-`
/// when none said.
fn links_up(d: &Value) -> String {
    let up: Vec<&str> = [
        ("eth", "eth_connected"),
        ("wifi", "wifi_connected"),
        ("lte", "lte_connected"),
    ]
    .into_iter()
    .filter(|(_, key)| d[*key].as_bool() == Some(true))
    .map(|(name, _)| name)
    .collect();
    if up.is_empty() {
        "-".into()
    } else {
        up.join(",")
    }
}

/// A cell of the device table: whatever the file holds (it may have been
/// written by anyone), cut to a sane width, so formatting cannot fail.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => heartbeat::shown(s),
        Value::Null => "-".into(),
        other => heartbeat::shown(&other.to_string()),
    }
}

fn unit(v: &Value, suffix: &str) -> String {
    match v.as_f64() {
        Some(f) => heartbeat::shown(&format!("{f}{suffix}")),
        None => "-".into(),
    }
}

fn human(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d {:02}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests;
