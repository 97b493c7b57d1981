//! Delivery to the camera, not only to the broker (PROTOCOL.md §2.7): a
//! simulated camera heartbeats on its topic and is subscribed to its command
//! topic with a clean session only while it is "online", as an ESP32 with
//! esp-mqtt's defaults is. Commands sent while it is offline are held by the
//! relay and reach it when its heartbeat returns.

use std::io::Write;
use std::net::TcpStream;

use rumqttc::QoS;

use crate::support::{
    publish, read_json, read_lines, read_text, run_bin, topic, Broker, Relay, Subscriber, TempDir,
    WAIT,
};

/// The camera's id as its heartbeat topic names it (its MAC in hex).
const CAMERA: &str = "A0B1C2D3E4F5";
/// The same camera as the backend names it in its commands.
const CAMERA_LC: &str = "a0b1c2d3e4f5";
const UNIT: &str = "MS500-H090-EP-2549-0038";

/// What the relay needs to see a camera go away quickly.
const FAST_PRESENCE: [(&str, &str); 2] = [("DEVICE_TIMEOUT", "1"), ("ACK_MODE", "all")];

/// A simulated MS500: heartbeats, and a clean-session subscription to its
/// command topic that exists only while it is online.
struct Camera {
    broker_port: u16,
    id: &'static str,
    unit: &'static str,
    commands: Option<Subscriber>,
}

impl Camera {
    fn new(broker_port: u16, id: &'static str, unit: &'static str) -> Camera {
        Camera {
            broker_port,
            id,
            unit,
            commands: None,
        }
    }

    /// Connects (clean session, subscribed) and sends a heartbeat.
    fn come_online(&mut self) {
        self.commands = Some(Subscriber::with_qos(
            self.broker_port,
            &topic(self.unit),
            QoS::AtLeastOnce,
        ));
        self.heartbeat();
    }

    fn heartbeat(&self) {
        let hb = format!(
            r#"{{"device_id":"{}","msg_type":"online","ip":"10.0.0.9","network":"lte"}}"#,
            self.id
        );
        publish(
            self.broker_port,
            &format!("/device/ms500/{}/online", self.id),
            hb.as_bytes(),
            QoS::AtMostOnce,
        );
    }

    /// Disconnects: with a clean session the broker keeps nothing for it.
    fn go_offline(&mut self) {
        self.commands = None;
    }

    fn received(&self, n: usize) -> Vec<String> {
        let sub = self.commands.as_ref().expect("the camera is online");
        sub.collect(n, WAIT)
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    }
}

/// `cmd` with the camera named in the backend's way.
fn fmw(id: u32, camera: &str) -> String {
    format!(
        r#"{{"type":"FMW","unit":"{UNIT}","id":{id},"camera":"{camera}","firmware_id":"2.4.{id}","link":"https://fw.example/ms500.bin","md5":"0123456789abcdef0123456789abcdef"}}"#
    )
}

fn img(id: u32, camera: &str) -> String {
    format!(r#"{{"type":"IMG","unit":"{UNIT}","id":{id},"camera":"{camera}"}}"#)
}

fn send(stream: &mut TcpStream, cmd: &str) {
    stream.write_all(cmd.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
}

/// A camera that was seen, then went silent for DEVICE_TIMEOUT.
fn camera_gone_offline(broker: &Broker, relay: &Relay) -> Camera {
    let mut camera = Camera::new(broker.port, CAMERA, UNIT);
    camera.come_online();
    relay.expect_log(&format!("device {CAMERA} online"), WAIT);
    camera.go_offline();
    relay.expect_log(&format!("device {CAMERA} offline"), WAIT);
    camera
}

#[test]
fn a_command_for_an_offline_camera_is_held_and_arrives_when_its_heartbeat_returns() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &FAST_PRESENCE);
    relay.expect_ready();
    let mut camera = camera_gone_offline(&broker, &relay);
    let mut backend = relay.connect();
    send(&mut backend, &fmw(1, CAMERA_LC));
    send(&mut backend, &img(2, "A0b1C2d3E4f5"));
    assert_eq!(
        read_lines(&backend, 2, WAIT),
        [
            format!(
                r#"{{"status":"held","type":"FMW","unit":"{UNIT}","id":1,"camera":"{CAMERA_LC}"}}"#
            ),
            format!(
                r#"{{"status":"held","type":"IMG","unit":"{UNIT}","id":2,"camera":"A0b1C2d3E4f5"}}"#
            ),
        ]
    );
    relay.expect_log("held FMW for unit", WAIT);

    // A camera never seen is not held back.
    let other = Subscriber::new(broker.port, &topic("cam-new"));
    send(
        &mut backend,
        r#"{"type":"IMG","unit":"cam-new","id":3,"camera":"ffffffffffff"}"#,
    );
    assert_eq!(
        read_lines(&backend, 1, WAIT),
        [r#"{"status":"ok","type":"IMG","unit":"cam-new","id":3}"#]
    );
    assert_eq!(other.collect(1, WAIT).len(), 1);

    // The camera is back: its held commands arrive in order, byte-exact,
    // before a newer one, and each gets its ok.
    camera.come_online();
    relay.expect_log(
        &format!("camera {CAMERA_LC} is back online: releasing its 2"),
        WAIT,
    );
    send(&mut backend, &img(4, CAMERA_LC));
    assert_eq!(
        camera.received(3),
        [fmw(1, CAMERA_LC), img(2, "A0b1C2d3E4f5"), img(4, CAMERA_LC)]
    );
    let mut oks = read_lines(&backend, 3, WAIT);
    oks.sort();
    assert_eq!(
        oks,
        [
            format!(r#"{{"status":"ok","type":"FMW","unit":"{UNIT}","id":1}}"#),
            format!(r#"{{"status":"ok","type":"IMG","unit":"{UNIT}","id":2}}"#),
            format!(r#"{{"status":"ok","type":"IMG","unit":"{UNIT}","id":4}}"#),
        ]
    );
}

#[test]
fn a_held_command_past_its_types_lifetime_expires_and_is_never_published() {
    let broker = Broker::start();
    let relay = Relay::start(
        broker.port,
        &[
            FAST_PRESENCE[0],
            FAST_PRESENCE[1],
            ("COMMAND_TTLS", "IMG:1, FMW:3600"),
        ],
    );
    relay.expect_ready();
    let mut camera = camera_gone_offline(&broker, &relay);
    let mut backend = relay.connect();
    send(&mut backend, &img(1, CAMERA_LC));
    send(&mut backend, &fmw(2, CAMERA_LC));
    let lines = read_lines(&backend, 3, WAIT);
    assert!(lines[0].contains(r#""status":"held""#), "{lines:?}");
    assert!(lines[1].contains(r#""status":"held""#), "{lines:?}");
    let expired: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(expired["status"], "error");
    assert_eq!(expired["id"], 1);
    let why = expired["error"].as_str().unwrap();
    assert!(
        why.starts_with("expired after ")
            && why.contains(&format!("camera \"{CAMERA_LC}\""))
            && why.contains("COMMAND_TTLS IMG 1 s"),
        "{why}"
    );
    relay.expect_log("expired IMG for unit", WAIT);

    camera.come_online();
    assert_eq!(camera.received(1), [fmw(2, CAMERA_LC)], "the IMG never");
    // The metrics and status count it as expired while held.
    relay.expect_log("releasing its 1 held", WAIT);
}

#[test]
fn the_hold_is_bounded_per_camera_and_others_keep_flowing() {
    let broker = Broker::start();
    let relay = Relay::start(
        broker.port,
        &[
            FAST_PRESENCE[0],
            FAST_PRESENCE[1],
            ("HOLD_MAX_PER_CAMERA", "2"),
            ("QUEUE_CAPACITY", "1"),
        ],
    );
    relay.expect_ready();
    let _camera = camera_gone_offline(&broker, &relay);
    let online = Subscriber::new(broker.port, &topic("cam-online"));
    let mut backend = relay.connect();
    for id in 1..=3 {
        send(&mut backend, &img(id, CAMERA_LC));
    }
    send(&mut backend, r#"{"type":"IMG","unit":"cam-online","id":9}"#);
    let lines = read_lines(&backend, 4, WAIT);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(r#""status":"held""#))
            .count(),
        2,
        "{lines:?}"
    );
    assert!(lines.contains(&format!(
        r#"{{"status":"error","type":"IMG","unit":"{UNIT}","id":3,"error":"camera \"{CAMERA_LC}\" is offline and HOLD_MAX_PER_CAMERA (2) commands are held for it"}}"#
    )), "{lines:?}");
    assert!(
        lines.contains(&r#"{"status":"ok","type":"IMG","unit":"cam-online","id":9}"#.to_string()),
        "{lines:?}"
    );
    assert_eq!(online.collect(1, WAIT).len(), 1);
}

#[test]
fn held_commands_and_their_cameras_absence_survive_kill_9() {
    let broker = Broker::start();
    let dir = TempDir::new("held-spool");
    let spool = dir.path().join("relay.spool");
    let spool = spool.to_string_lossy().into_owned();
    let mut relay = Relay::start(
        broker.port,
        &[FAST_PRESENCE[0], FAST_PRESENCE[1], ("SPOOL_FILE", &spool)],
    );
    relay.expect_ready();
    let mut camera = camera_gone_offline(&broker, &relay);
    let mut backend = relay.connect();
    send(&mut backend, &fmw(1, CAMERA_LC));
    assert!(read_lines(&backend, 1, WAIT)[0].contains("held"));
    drop(backend);

    relay.crash();
    relay.relaunch();
    // The log holds both runs: wait for the second run's links.
    relay.expect_connected_times(2);
    relay.expect_subscribed_times(2);
    relay.expect_log(&format!("held FMW for unit {UNIT} from spool"), WAIT);
    // Online for MQTT but no heartbeat yet: still offline for the relay.
    camera.commands = Some(Subscriber::with_qos(
        broker.port,
        &topic(UNIT),
        QoS::AtLeastOnce,
    ));
    let mut backend = relay.connect();
    send(&mut backend, &img(2, CAMERA_LC));
    assert!(read_lines(&backend, 1, WAIT)[0].contains("held"));
    camera.heartbeat();
    assert_eq!(camera.received(2), [fmw(1, CAMERA_LC), img(2, CAMERA_LC)]);
}

#[test]
fn held_commands_stay_held_across_a_clean_stop() {
    let broker = Broker::start();
    let dir = TempDir::new("held-stop");
    let spool = dir.path().join("relay.spool");
    let spool = spool.to_string_lossy().into_owned();
    let mut relay = Relay::start(
        broker.port,
        &[FAST_PRESENCE[0], FAST_PRESENCE[1], ("SPOOL_FILE", &spool)],
    );
    relay.expect_ready();
    let mut camera = camera_gone_offline(&broker, &relay);
    let mut backend = relay.connect();
    send(&mut backend, &img(1, CAMERA_LC));
    assert!(read_lines(&backend, 1, WAIT)[0].contains("held"));
    drop(backend);
    relay.signal("TERM");
    let exit = relay.wait_exit(WAIT).expect("the relay stops");
    assert!(exit.success(), "{exit:?}");
    assert!(relay
        .log()
        .contains("1 commands held for offline cameras stay in the spool"));

    relay.relaunch();
    relay.expect_connected_times(2);
    relay.expect_subscribed_times(2);
    relay.expect_log(&format!("held IMG for unit {UNIT} from spool"), WAIT);
    camera.come_online();
    assert_eq!(camera.received(1), [img(1, CAMERA_LC)]);
}

#[test]
fn status_and_metrics_show_what_is_held_per_camera() {
    let broker = Broker::start();
    let dir = TempDir::new("held-status");
    let status = dir.path().join("status.json");
    let metrics = dir.path().join("metrics.prom");
    let (status_s, metrics_s) = (
        status.to_string_lossy().into_owned(),
        metrics.to_string_lossy().into_owned(),
    );
    let relay = Relay::start(
        broker.port,
        &[
            FAST_PRESENCE[0],
            FAST_PRESENCE[1],
            ("STATUS_FILE", &status_s),
            ("METRICS_FILE", &metrics_s),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    relay.expect_ready();
    let _camera = camera_gone_offline(&broker, &relay);
    let mut backend = relay.connect();
    send(&mut backend, &fmw(1, CAMERA_LC));
    send(&mut backend, &img(2, CAMERA_LC));
    assert_eq!(read_lines(&backend, 2, WAIT).len(), 2);
    assert!(
        crate::support::wait_until(WAIT, || {
            status.exists() && read_json(&status)["held"] == 2
        }),
        "status file never showed 2 held"
    );
    let v = read_json(&status);
    assert!(v["held_bytes"].as_u64().unwrap() > 100);
    assert_eq!(v["held_cameras"][0]["camera"], CAMERA_LC);
    assert_eq!(v["held_cameras"][0]["held"], 2);
    let device = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == CAMERA)
        .expect("the camera in the device table")
        .clone();
    assert_eq!(device["held"], 2);
    assert!(device["held_oldest_age_s"].is_u64());
    assert!(
        crate::support::wait_until(WAIT, || read_text(&metrics)
            .contains("ms500_relay_commands_held 2\n")),
        "metrics never showed 2 held"
    );
    assert!(read_text(&metrics).contains("ms500_relay_held_bytes "));

    let (code, out, _) =
        crate::support::run_bin(&["status", "-c", &relay.conf.to_string_lossy()], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("held for offline cameras: 2 commands"),
        "{out}"
    );
    assert!(
        out.contains(&format!("camera {CAMERA_LC}: 2 held")),
        "{out}"
    );
}

#[test]
fn the_backends_factory_reset_with_a_level_name_is_published() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &topic("cam-01"));
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
    relay.expect_ready();
    let mut backend = relay.connect();
    let frs =
        r#"{"type":"FRS","unit":"cam-01","id":1,"camera":"30eda0e27100","reset_level":"full"}"#;
    send(&mut backend, frs);
    assert_eq!(
        read_lines(&backend, 1, WAIT),
        [r#"{"status":"ok","type":"FRS","unit":"cam-01","id":1}"#]
    );
    let got = sub.collect(1, WAIT);
    assert_eq!(got[0].payload, frs.as_bytes());
}

/// Finding: `send` exited 0 after a `held` line, though a held command is
/// not published (0 means every command was published), and never said
/// what became of it within its wait. It now waits within `-w` for a held
/// command's outcome, prints it, and exits 0 only once it was published.
#[test]
fn send_succeeds_only_once_a_held_command_is_published_and_names_what_is_not() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[FAST_PRESENCE[0], ("COMMAND_TTLS", "IMG:2")]);
    relay.expect_ready();
    let _camera = camera_gone_offline(&broker, &relay);
    let conf = relay.conf.to_string_lossy().into_owned();

    // Held, and still held when the wait runs out.
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "1", &fmw(1, CAMERA_LC)], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(r#""status":"held""#), "{out}");
    assert!(
        err.contains("1 of 1 commands still held in the relay for cameras that are offline"),
        "{err}"
    );

    // Held, then expired within the wait: its error line is printed.
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "15", &img(2, CAMERA_LC)], None);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(r#""status":"held""#), "{out}");
    assert!(
        lines[1].contains(r#""status":"error""#) && lines[1].contains("expired after"),
        "{out}"
    );
    assert!(
        err.contains("1 of 1 commands expired, never published"),
        "{err}"
    );

    // Held, then released by the camera's heartbeat within the wait: its ok
    // is printed and send succeeds.
    let (code, out, err) = std::thread::scope(|s| {
        s.spawn(|| {
            // The IMG made it two once already.
            relay.expect_log_count("(2 held for it)", 2, WAIT);
            Camera::new(broker.port, CAMERA, UNIT).heartbeat();
        });
        run_bin(&["send", "-c", &conf, "-w", "15", &fmw(3, CAMERA_LC)], None)
    });
    assert_eq!(code, 0, "{out}{err}\n{}", relay.log());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                r#"{{"status":"held","type":"FMW","unit":"{UNIT}","id":3,"camera":"{CAMERA_LC}"}}"#
            ),
            format!(r#"{{"status":"ok","type":"FMW","unit":"{UNIT}","id":3}}"#),
        ]
    );
}
