//! The simulated camera (`support::camera`) checked against a real mosquitto
//! with plain subscribers, no relay: tests that lean on it test what a real
//! MS500 does only if it does what the firmware does.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::QoS;

use crate::support::camera::{Camera, CameraOptions, Clock, Timer};
use crate::support::{
    publish, read_text, topic, wait_until, Broker, Cutter, Message, Subscriber, WAIT,
};

const UNIT: &str = "MS500-H090-EP-2549-0038";

const HEARTBEATS: &str = "/device/ms500/+/online";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A camera quick to come back, with no periodic heartbeat within a test.
fn quiet() -> CameraOptions {
    CameraOptions {
        heartbeat_every: Duration::from_secs(600),
        reboot_delay: ms(100),
        reconnect_delay: ms(100),
        ..CameraOptions::default()
    }
}

fn command(broker: &Broker, payload: &str) {
    publish(
        broker.port,
        &topic(UNIT),
        payload.as_bytes(),
        QoS::AtLeastOnce,
    );
}

fn json(m: &Message) -> serde_json::Value {
    serde_json::from_slice(&m.payload).expect("a heartbeat is JSON")
}

/// Reads heartbeats until one whose `timestamp` passes `test`.
fn heartbeat_where(beats: &Subscriber, test: impl Fn(u64) -> bool) -> Option<Message> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let m = beats.recv(WAIT)?;
        if json(&m)["timestamp"].as_u64().is_some_and(&test) {
            return Some(m);
        }
    }
    None
}

#[test]
fn the_camera_subscribes_then_heartbeats_on_every_connect() {
    let broker = Broker::start();
    let cutter = Cutter::new(broker.port);
    let beats = Subscriber::new(broker.port, HEARTBEATS);
    let camera = Camera::start(cutter.port, quiet());
    assert!(camera.wait_subscribed(1, WAIT));

    let hb = beats.recv(WAIT).expect("the connect heartbeat");
    assert_eq!(hb.topic, "/device/ms500/A0B1C2D3E4F5/online");
    let text = String::from_utf8_lossy(&hb.payload).into_owned();
    assert!(
        text.starts_with(r#"{"device_id":"A0B1C2D3E4F5","msg_type":"online","timestamp":"#),
        "{text}"
    );
    let v = json(&hb);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cpu_temp",
            "device_id",
            "eth_connected",
            "ip",
            "lte_connected",
            "msg_type",
            "network",
            "sense_temp",
            "spi_fps",
            "timestamp",
            "video_fps",
            "wifi_connected"
        ]
    );
    assert_eq!(
        (v["network"].as_str(), v["wifi_connected"].as_bool()),
        (Some("wifi"), Some(true))
    );
    command(&broker, "cmd-1");
    assert_eq!(camera.wait_for(1, WAIT)[0].connection, 1);

    // Each way of losing the connection ends in a new subscription and a
    // heartbeat: a network loss, then a proxy cut.
    camera.disconnect_for(ms(100));
    assert!(camera.wait_subscribed(2, WAIT));
    assert!(beats.recv(WAIT).is_some(), "the second connect heartbeat");
    command(&broker, "cmd-2");
    assert_eq!(camera.wait_for(2, WAIT)[1].connection, 2);
    cutter.cut();
    assert!(camera.wait_subscribed(3, WAIT));
    assert!(beats.recv(WAIT).is_some(), "the third connect heartbeat");
    command(&broker, "cmd-3");
    command(&broker, "cmd-3");
    let received = camera.wait_for(4, WAIT);
    assert!(received[2..]
        .iter()
        .all(|r| r.connection == 3 && r.boot == 1));

    camera.assert_in_order(&["cmd-1", "cmd-2", "cmd-3"]);
    assert_eq!(camera.duplicates(), 1);
    assert_eq!(camera.connects(), 3);
    let log = camera.log();
    assert_eq!(log.boots.len(), 1, "a network loss is no reboot");
    assert!(log.heartbeats.iter().all(|h| h.seq.is_none()));
    assert_eq!(camera.heartbeats_sent(), 3);
}

#[test]
fn heartbeats_keep_their_period_with_jitter_and_dropped_ticks() {
    let broker = Broker::start();
    let steady_beats = Subscriber::new(broker.port, "/device/ms500/0A0B0C0D0E01/online");
    let jittery_beats = Subscriber::new(broker.port, "/device/ms500/0A0B0C0D0E02/online");
    let period = ms(250);
    let steady = Camera::start(
        broker.port,
        CameraOptions {
            mac: "0a0b0c0d0e01".into(),
            unit: "cam-steady".into(),
            heartbeat_every: period,
            ..CameraOptions::default()
        },
    );
    let jittery = Camera::start(
        broker.port,
        CameraOptions {
            mac: "0a0b0c0d0e02".into(),
            unit: "cam-jittery".into(),
            heartbeat_every: ms(200),
            jitter_percent: 50,
            seed: 7,
            timer: Timer::RestartOnConnect,
            drop_heartbeats: vec![1, 2],
            ..CameraOptions::default()
        },
    );
    assert!(steady.wait_until(WAIT, |l| l.heartbeats.len() >= 7));
    assert!(jittery.wait_until(WAIT, |l| l.heartbeats.len() >= 10));

    // The firmware's timer: tick k at boot + (k + 1) periods, late by no
    // more than scheduling (loosely bounded: two shared cores).
    let log = steady.log();
    for (k, hb) in log.heartbeats[1..7].iter().enumerate() {
        assert_eq!(hb.seq, Some(k as u64));
        let due = period * (k as u32 + 1);
        let late = hb.at.duration_since(log.boots[0]).checked_sub(due);
        assert!(
            late.is_some_and(|l| l < ms(200)),
            "tick {k} {late:?} after its time"
        );
    }
    let got = steady_beats.collect(7, WAIT);
    assert_eq!(got.len(), 7, "every heartbeat reaches the broker");
    let mean = got[6].at.duration_since(got[1].at) / 5;
    assert!(mean > ms(180) && mean < ms(320), "mean interval {mean:?}");

    let log = jittery.log();
    let seqs: Vec<Option<u64>> = log.heartbeats[..4].iter().map(|h| h.seq).collect();
    assert_eq!(seqs, [None, Some(0), Some(3), Some(4)]);
    assert_eq!(log.dropped_heartbeats[..2], [1, 2]);
    // Periods drawn in 100..300 ms; a late tick shortens the next gap, so
    // only their mean and spread are checked.
    let gaps: Vec<Duration> = log.heartbeats[3..10]
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(mean > ms(130) && mean < ms(270), "{gaps:?}");
    let spread = *gaps.iter().max().unwrap() - *gaps.iter().min().unwrap();
    assert!(spread > ms(30), "jittered periods differ: {gaps:?}");
    // A dropped tick never reaches the broker: once the camera is off, the
    // broker has had no more than what it sent (perhaps one fewer, cut by the kill).
    jittery.kill();
    let sent = jittery.heartbeats_sent();
    let got = jittery_beats.collect(sent + 2, ms(500)).len();
    assert!(
        got <= sent && got + 1 >= sent,
        "{got} arrived of {sent} sent"
    );
}

#[test]
fn a_firmware_update_blocks_the_task_then_the_camera_returns_as_a_new_session() {
    let broker = Broker::start();
    let cutter = Cutter::new(broker.port);
    let beats = Subscriber::new(broker.port, HEARTBEATS);
    let camera = Camera::start(
        cutter.port,
        CameraOptions {
            heartbeat_every: ms(100),
            block_for: ms(600),
            ..quiet()
        },
    );
    assert!(camera.wait_subscribed(1, WAIT));
    // Once it restarts, the camera stays away until the test lets it back.
    cutter.refuse(true);
    let fmw = format!(r#"{{"type":"FMW","unit":"{UNIT}","id":1}}"#);
    let cfg = |id: u32| format!(r#"{{"type":"CFG","unit":"{UNIT}","id":{id}}}"#);
    command(&broker, &fmw);
    command(&broker, &cfg(2));
    assert!(camera.wait_until(WAIT, |l| l.restarts == 1));
    command(&broker, &cfg(3));
    cutter.refuse(false);
    assert!(camera.wait_subscribed(2, WAIT));
    command(&broker, &cfg(4));

    // CFG 2 came behind the update, CFG 3 while the camera was away: both lost.
    let got = camera.wait_for(2, WAIT);
    camera.assert_in_order(&[fmw, cfg(4)]);
    assert_eq!((got[0].connection, got[0].boot), (1, 1));
    assert_eq!((got[1].connection, got[1].boot), (2, 2));

    let log = camera.log();
    let (busy, restarted) = (got[0].at, log.boots[1]);
    assert!(restarted.duration_since(busy) >= ms(600));
    let mut during = Vec::new();
    while let Some(m) = beats.recv(ms(0)) {
        if m.at > busy + ms(50) && m.at < restarted {
            during.push(m);
        }
    }
    assert!(during.is_empty(), "heartbeats while busy: {during:?}");
    let back = log.heartbeats.iter().find(|h| h.connection == 2).unwrap();
    assert_eq!((back.seq, back.boot, back.timestamp), (None, 2, 0));
}

#[test]
fn a_killed_camera_leaves_without_disconnect_and_misses_what_came_meanwhile() {
    let broker = Broker::start();
    let mosquitto_log = broker.dir().join("mosquitto.log");
    let camera = Camera::start(broker.port, quiet());
    assert!(camera.wait_subscribed(1, WAIT));
    command(&broker, "before");
    camera.wait_for(1, WAIT);

    camera.kill();
    let closed = "Client ESP32_D3E4F5 closed its connection.";
    let disconnected = "Client ESP32_D3E4F5 disconnected.";
    assert!(wait_until(WAIT, || read_text(&mosquitto_log).contains(closed)));
    assert!(!read_text(&mosquitto_log).contains(disconnected));
    command(&broker, "while dead");
    camera.power_on();
    assert!(camera.wait_subscribed(2, WAIT));
    command(&broker, "after");
    let got = camera.wait_for(2, WAIT);
    camera.assert_in_order(&["before", "after"]);
    assert_eq!(got[1].boot, 2, "power on is a boot");

    // A clean stop, by contrast, says DISCONNECT; starting again is no boot.
    camera.stop();
    assert!(wait_until(WAIT, || read_text(&mosquitto_log).contains(disconnected)));
    camera.power_on();
    assert!(camera.wait_subscribed(3, WAIT));
    assert_eq!(camera.log().boots.len(), 2);
}

#[test]
fn uptime_starts_again_at_each_boot_and_not_after_a_network_loss() {
    let broker = Broker::start();
    let beats = Subscriber::new(broker.port, "/device/ms500/A0B1C2D3E4F5/online");
    let wall_beats = Subscriber::new(broker.port, "/device/ms500/0A0B0C0D0E03/online");
    let camera = Camera::start(
        broker.port,
        CameraOptions {
            heartbeat_every: ms(300),
            ..quiet()
        },
    );
    let wall = Camera::start(
        broker.port,
        CameraOptions {
            mac: "0a0b0c0d0e03".into(),
            unit: "cam-wall".into(),
            clock: Clock::Unix,
            ..quiet()
        },
    );

    assert!(
        heartbeat_where(&beats, |t| t >= 1).is_some(),
        "uptime grows"
    );
    camera.disconnect_for(ms(100));
    assert!(camera.wait_subscribed(2, WAIT));
    let log = camera.log();
    let back = log.heartbeats.iter().find(|h| h.connection == 2).unwrap();
    assert!(back.timestamp >= 1 && back.boot == 1, "{back:?}");

    camera.reboot();
    assert!(
        heartbeat_where(&beats, |t| t == 0).is_some(),
        "uptime 0 again"
    );
    let log = camera.log();
    let rebooted = log.heartbeats.iter().find(|h| h.connection == 3).unwrap();
    assert_eq!(
        (rebooted.seq, rebooted.boot, rebooted.timestamp),
        (None, 2, 0)
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamp = json(&wall_beats.recv(WAIT).unwrap())["timestamp"]
        .as_u64()
        .unwrap();
    assert!(stamp.abs_diff(now) < 60, "wall clock {stamp}, now {now}");
    assert!(wall.wait_subscribed(1, WAIT));
}

#[test]
fn a_camera_that_heartbeats_before_it_subscribes_misses_what_comes_between() {
    let broker = Broker::start();
    let beats = Subscriber::new(broker.port, HEARTBEATS);
    let camera = Camera::start(
        broker.port,
        CameraOptions {
            subscribe_after_heartbeat: Some(ms(1000)),
            ..quiet()
        },
    );
    assert!(beats.recv(WAIT).is_some(), "the connect heartbeat");
    command(&broker, "too early");
    let published = Instant::now();
    assert!(camera.wait_subscribed(1, WAIT));
    let log = camera.log();
    assert!(
        published < log.subscribed[0],
        "published before the SUBSCRIBE"
    );
    assert!(log.subscribed[0].duration_since(log.connects[0]) >= ms(1000));
    command(&broker, "in time");
    camera.wait_for(1, WAIT);
    camera.assert_in_order(&["in time"]);
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn a_dropped_camera_leaves_no_thread_dialing_a_dead_broker() {
    // The thread name keeps 15 bytes: "camera-" and the MAC's first 8 digits.
    let name = "camera-0D0D0D0D";
    let mut broker = Broker::start();
    let camera = Camera::start(
        broker.port,
        CameraOptions {
            mac: "0d0d0d0d0d0d".into(),
            unit: "cam-dropped".into(),
            reconnect_delay: ms(10),
            ..quiet()
        },
    );
    assert!(camera.wait_subscribed(1, WAIT));
    assert_eq!(threads_named(name), 1);
    broker.stop();
    // It notices the broker is gone, and dials again and again.
    assert!(camera.wait_until(WAIT, |l| l.connects.len() == 1));
    let dropping = Instant::now();
    drop(camera);
    assert!(
        dropping.elapsed() < Duration::from_secs(6),
        "drop joins at once"
    );
    assert_eq!(threads_named(name), 0);
}
