//! The fleet scenario: N simulated cameras heartbeating at a given pace
//! while backends send commands through one-shot connections and SCS round
//! trips come back from a simulated camera; then the same relay idle with
//! 10,000 and 100,000 silent (offline) devices. Each relay build runs alone
//! against the same broker, one after the other, so the broker's CPU over
//! the same heartbeats is the baseline of each.
//!
//! Reported per build: relay and broker CPU per 10,000 heartbeats (and the
//! ratio) and log bytes per minute at info, over heartbeats alone; then
//! commands and SCS replies delivered and the SCS round trip with half as
//! many heartbeats again on top; idle CPU (ms per second) and wake-ups per second (context
//! switches of all threads, from /proc) with 10,000 and 100,000 silent
//! devices, RSS with 100,000, log bytes per minute at info during the
//! heartbeats, commands and replies delivered, and the SCS round trip.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::support::{Broker, Relay, Subscriber};

pub mod release;

/// What one build cost in the fleet scenario.
pub struct FleetCost {
    pub relay_cpu_per_10k: f64,
    pub broker_cpu_per_10k: f64,
    pub heartbeats_per_s: f64,
    pub log_bytes_per_min: f64,
    pub commands: (usize, usize),
    pub replies: (usize, usize),
    pub scs_p50_ms: f64,
    /// (ms CPU per second, wake-ups per second) idle with 10,000 and 100,000.
    pub idle_10k: (f64, f64),
    pub idle_100k: (f64, f64),
    pub rss_100k_mib: f64,
}

/// The scenario's knobs.
pub struct Fleet {
    pub cameras: usize,
    /// Heartbeats per second, all cameras together.
    pub pace: usize,
    pub heartbeats: usize,
    pub commands_per_s: usize,
    pub idle_secs: u64,
}

const HEARTBEAT: &str = r#"{"device_id":"DEV","msg_type":"online","timestamp":1764391000,"ip":"10.12.0.7","network":"wifi","eth_connected":false,"wifi_connected":true,"lte_connected":false,"cpu_temp":47.5,"sense_temp":39.25,"video_fps":15,"spi_fps":30,"lte_signal":-71,"firmware":"2.4.1","uptime":86400}"#;
/// Silence after which the idle devices count as offline.
const TIMEOUT_S: u64 = 5;

/// A client id of its own: a client of an earlier run keeps reconnecting
/// (rumqttc's iterator never ends) and would fight over a shared one.
fn client_id(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{what}-{}-{n}", std::process::id())
}

/// A client for many simulated cameras (one connection, like a load rig).
pub fn cameras(broker: u16, name: &str) -> Client {
    let mut opts = MqttOptions::new(client_id(name), "127.0.0.1", broker);
    opts.set_inflight(1000);
    let (client, conn) = Client::new(opts, 4096);
    crate::support::pump(conn);
    client
}

fn heartbeat(client: &Client, i: usize) {
    heartbeat_at(client, i, QoS::AtLeastOnce);
}

/// Camera `i`'s heartbeat, published at `qos`.
pub fn heartbeat_at(client: &Client, i: usize, qos: QoS) {
    let id = format!("fleet-{i:06}");
    let _ = client.publish(
        format!("/device/ms500/{id}/online"),
        qos,
        false,
        HEARTBEAT.replace("DEV", &id).into_bytes(),
    );
}

/// CPU seconds and context switches (voluntary + not) of every thread of `pid`.
fn switches(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// Idle cost over `secs`: ms of CPU per second and wake-ups per second.
fn idle(relay: &Relay, secs: u64) -> (f64, f64) {
    let (c0, w0) = (relay.cpu_seconds(), switches(relay.pid()));
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, w1) = (relay.cpu_seconds(), switches(relay.pid()));
    ((c1 - c0) * 1000.0 / secs as f64, (w1 - w0) / secs as f64)
}

/// A simulated camera answering every SCS with a reply on its unit's
/// topic, at QoS 0 both ways (no PUBACK ahead of the reply for Nagle's
/// algorithm to hold it behind). It stops answering once dropped.
struct Responder {
    live: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _client: Client,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.live.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

fn responder(broker: u16) -> Responder {
    let opts = MqttOptions::new(client_id("fleet-responder"), "127.0.0.1", broker);
    let (client, mut conn) = Client::new(opts, 256);
    client
        .subscribe("/service/ms500/+/socket", QoS::AtMostOnce)
        .expect("subscribe");
    let replier = client.clone();
    let live = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alive = std::sync::Arc::clone(&live);
    std::thread::spawn(move || {
        for event in conn.iter() {
            if !alive.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = replier.try_disconnect();
                return;
            }
            let Ok(Event::Incoming(Packet::Publish(p))) = event else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                continue;
            };
            if v["type"] == "SCS" {
                let unit = v["unit"].as_str().unwrap_or("?");
                let _ = replier.publish(
                    format!("/device/ms500/{unit}/socket_reply"),
                    QoS::AtMostOnce,
                    false,
                    br#"{"scs":"ok"}"#.to_vec(),
                );
            }
        }
    });
    Responder {
        live,
        _client: client,
    }
}

/// One-shot backends at `per_s` commands a second until `stop`; the ids sent.
fn one_shot_commands(relay_port: u16, per_s: usize, run: Duration) -> usize {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < run {
        let due = start + Duration::from_secs_f64(n as f64 / per_s as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", relay_port)) {
            let _ =
                s.write_all(format!(r#"{{"type":"IMG","unit":"fleet-cmd","id":{n}}}"#).as_bytes());
        }
        n += 1;
    }
    n
}

/// SCS round trips on one persistent connection: (replies, p50 ms).
fn scs_round_trips(relay: &Relay, n: usize) -> (usize, f64) {
    let s = relay.connect();
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut writer = s;
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let cmd = format!(r#"{{"type":"SCS","unit":"fleet-scs-{}"}}"#, i % 8);
        if writer.write_all(cmd.as_bytes()).is_err() {
            break;
        }
        let mut line = String::new();
        if reader.read_line(&mut line).is_ok() && line.contains("scs") {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ms.len(), ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN))
}

/// Publishes heartbeats for `cameras` ids at `pace` a second, `total` in all.
fn paced_heartbeats(client: &Client, cameras: usize, pace: usize, total: usize) {
    let start = Instant::now();
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / pace as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        heartbeat(client, k % cameras);
    }
}

/// Heartbeats for ids `range` as fast as the broker takes them, then
/// waits until the relay has taken them all (its CPU stops moving: at info
/// the new devices are not each logged).
fn fill(client: &Client, relay: &Relay, range: std::ops::Range<usize>) {
    for i in range {
        heartbeat(client, i);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut before = relay.cpu_seconds();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let now = relay.cpu_seconds();
        if now - before < 0.02 {
            return;
        }
        before = now;
    }
}

/// The scenario for one relay build (`exe`, this build when None).
pub fn run(broker: &Broker, exe: Option<&str>, fleet: &Fleet) -> FleetCost {
    let timeout = TIMEOUT_S.to_string();
    let relay = crate::start_relay(
        broker,
        exe,
        &[
            ("MAX_DEVICES", "100000"),
            ("DEVICE_TIMEOUT", &timeout),
            // As every package has it (STATUS_INTERVAL 5, the default).
            ("STATUS_FILE", "{dir}/status.json"),
        ],
    );
    let sub = Subscriber::new(broker.port, "/service/ms500/fleet-cmd/#");
    let _responder = responder(broker.port);
    let cams = cameras(broker.port, "fleet-cameras");
    // Heartbeats alone: what intake costs the relay and the broker, and the log.
    let (r0, b0, log0) = (relay.cpu_seconds(), broker.cpu_seconds(), relay.log().len());
    let t0 = Instant::now();
    paced_heartbeats(&cams, fleet.cameras, fleet.pace, fleet.heartbeats);
    let secs = t0.elapsed().as_secs_f64();
    let per_10k = |cpu: f64| cpu / fleet.heartbeats as f64 * 10_000.0;
    let relay_cpu_per_10k = per_10k(relay.cpu_seconds() - r0);
    let broker_cpu_per_10k = per_10k(broker.cpu_seconds() - b0);
    let log_bytes_per_min = (relay.log().len() - log0) as f64 / secs * 60.0;

    // Then with one-shot commands and SCS round trips on top.
    // 15 s at the fleet's pace, as the first version of this scenario ran
    // (its SCS round trips stay comparable with the figures in README).
    let mixed = 15 * fleet.pace;
    let run_for = Duration::from_secs_f64(mixed as f64 / fleet.pace as f64);
    let relay_port = relay.port();
    let per_s = fleet.commands_per_s;
    let commander = std::thread::spawn(move || one_shot_commands(relay_port, per_s, run_for));
    let scs = (run_for.as_millis() / 25).min(1000) as usize;
    let (replies, scs_p50_ms) = std::thread::scope(|s| {
        let trips = s.spawn(|| scs_round_trips(&relay, scs));
        paced_heartbeats(&cams, fleet.cameras, fleet.pace, mixed);
        trips.join().unwrap_or((0, f64::NAN))
    });
    let sent = commander.join().unwrap_or(0);
    let delivered: HashSet<u64> = sub
        .collect(sent, Duration::from_secs(5))
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect();

    // Idle: every device silent past DEVICE_TIMEOUT.
    fill(&cams, &relay, 0..10_000);
    std::thread::sleep(Duration::from_secs(TIMEOUT_S + 2));
    let idle_10k = idle(&relay, fleet.idle_secs);
    fill(&cams, &relay, 10_000..100_000);
    std::thread::sleep(Duration::from_secs(TIMEOUT_S + 2));
    let idle_100k = idle(&relay, fleet.idle_secs);
    let rss_100k_mib = crate::proc_status(relay.pid(), "VmRSS:");
    FleetCost {
        relay_cpu_per_10k,
        broker_cpu_per_10k,
        heartbeats_per_s: fleet.heartbeats as f64 / secs,
        log_bytes_per_min,
        commands: (delivered.len(), sent),
        replies: (replies, scs),
        scs_p50_ms,
        idle_10k,
        idle_100k,
        rss_100k_mib,
    }
}

/// The table rows and the ratios of `cost`, named after the build.
pub fn rows(name: &str, c: &FleetCost) -> Vec<(String, String)> {
    vec![
        (
            format!("{name}: fleet, CPU per 10,000 heartbeats, relay / broker"),
            format!(
                "{:.3} s / {:.3} s ({:.2} x) at {:.0} heartbeats/s",
                c.relay_cpu_per_10k,
                c.broker_cpu_per_10k,
                c.relay_cpu_per_10k / c.broker_cpu_per_10k,
                c.heartbeats_per_s
            ),
        ),
        (
            format!("{name}: fleet, log at info"),
            format!("{:.1} KiB per minute", c.log_bytes_per_min / 1024.0),
        ),
        (
            format!("{name}: fleet, commands / SCS replies delivered"),
            format!(
                "{}/{} / {}/{}, SCS round trip p50 {:.2} ms",
                c.commands.0, c.commands.1, c.replies.0, c.replies.1, c.scs_p50_ms
            ),
        ),
        (
            format!("{name}: idle, 10,000 silent devices"),
            format!(
                "{:.2} ms CPU/s, {:.1} wake-ups/s",
                c.idle_10k.0, c.idle_10k.1
            ),
        ),
        (
            format!("{name}: idle, 100,000 silent devices"),
            format!(
                "{:.2} ms CPU/s, {:.1} wake-ups/s, RSS {:.1} MiB",
                c.idle_100k.0, c.idle_100k.1, c.rss_100k_mib
            ),
        ),
    ]
}
