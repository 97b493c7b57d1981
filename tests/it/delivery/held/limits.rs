//! The hold's limits: a camera never seen waits UNSEEN_WAIT, a held command
//! expires at its type's lifetime, HOLD_MAX_PER_CAMERA bounds each camera
//! while others flow, held commands survive kill -9, and thousands of
//! cameras around DEVICE_TIMEOUT are never stuck offline.

use std::time::{Duration, Instant};

use super::{
    camera_online, cmd, fast_camera, ids_with, power_off, read_until, send_all, CAMERA_LC, UNIT,
};
use crate::support::{
    read_lines, ready, relay_with_subscriber, send, topic, Subscriber, COMMANDS, WAIT,
};

#[test]
fn row_8_cameras_heartbeating_around_device_timeout_are_never_stuck_offline() {
    // Before: with 4,000 cameras heartbeating right around DEVICE_TIMEOUT,
    // one stayed "offline" in the publisher while it heartbeat every second
    // (a sweep outside the table lock lost to a heartbeat). Now the
    // publisher judges presence from the heartbeats alone, in the order the
    // device link saw them: 300 cameras heartbeating every ~1 s with
    // DEVICE_TIMEOUT 1 s, then a command each: none waits longer than the
    // camera's next heartbeat and a second.
    let (broker, relay) = ready(&[("DEVICE_TIMEOUT", "1"), ("ACK_MODE", "all")]);
    let fleet = crate::support::camera::HeartbeatFleet::start(
        broker.port,
        300,
        Duration::from_millis(1000),
    );
    relay.expect_log("online (first heartbeat since start)", WAIT);
    std::thread::sleep(Duration::from_secs(8));
    let sub = Subscriber::new(broker.port, COMMANDS);
    let mut backend = relay.connect();
    for i in 0..300 {
        send(
            &mut backend,
            &format!(
                r#"{{"type":"IMG","unit":"fleet-{i}","camera":"{}"}}"#,
                fleet.id(i)
            ),
        );
    }
    // Each within its camera's next heartbeat and a second (a camera that
    // crossed DEVICE_TIMEOUT meanwhile may get its command twice).
    let mut units = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while units.len() < 300 && Instant::now() < deadline {
        if let Some(m) = sub.recv(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            units.insert(v["unit"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(units.len(), 300, "log:\n{}", relay.log_tail(40));
}

#[test]
fn a_command_for_a_camera_never_seen_waits_unseen_wait_then_goes() {
    let (_broker, relay, sub) = relay_with_subscriber(
        &topic("cam-new"),
        &[("ACK_MODE", "all"), ("UNSEEN_WAIT", "2")],
    );
    relay.expect_ready();
    let mut backend = relay.connect();
    send(
        &mut backend,
        r#"{"type":"IMG","unit":"cam-new","id":3,"camera":"ffffffffffff"}"#,
    );
    assert_eq!(
        read_lines(&backend, 1, WAIT),
        [r#"{"status":"held","type":"IMG","unit":"cam-new","id":3,"camera":"ffffffffffff"}"#]
    );
    sub.assert_silent(Duration::from_secs(1));
    assert_eq!(
        read_lines(&backend, 1, WAIT),
        [r#"{"status":"ok","type":"IMG","unit":"cam-new","id":3}"#]
    );
    assert_eq!(sub.collect(1, WAIT).len(), 1);
    relay.expect_log("sent no heartbeat within UNSEEN_WAIT (2 s)", WAIT);
}

#[test]
fn a_held_command_past_its_types_lifetime_expires_and_is_never_published() {
    let (_broker, relay, camera) =
        camera_online("5", &[("COMMAND_TTLS", "IMG:1, FMW:3600")], fast_camera());
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send(&mut backend, &cmd("IMG", 1));
    send(&mut backend, &cmd("FMW", 2));
    let lines = read_until(&backend, |l| !ids_with(l, "error").is_empty());
    assert_eq!(ids_with(&lines, "held"), [1, 2], "{lines:?}");
    let expired: serde_json::Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["status"] == "error")
        .expect("an error line");
    assert_eq!(expired["id"], 1);
    let why = expired["error"].as_str().unwrap();
    assert!(
        why.starts_with("expired after ")
            && why.contains(&format!("camera \"{CAMERA_LC}\""))
            && why.contains("COMMAND_TTLS IMG 1 s"),
        "{why}"
    );
    camera.power_on();
    assert!(camera.wait_until(WAIT, |log| !log.received.is_empty()));
    assert_eq!(
        camera.received()[0].payload,
        cmd("FMW", 2).as_bytes(),
        "the IMG never"
    );
}

#[test]
fn the_hold_is_bounded_per_camera_and_others_keep_flowing() {
    let (broker, relay, camera) = camera_online(
        "5",
        &[
            ("HOLD_MAX_PER_CAMERA", "2"),
            ("QUEUE_CAPACITY", "1"),
            ("ACK_MODE", "all"),
        ],
        fast_camera(),
    );
    power_off(&relay, &camera);
    let others = Subscriber::new(broker.port, &topic("cam-untracked"));
    let mut backend = relay.connect();
    send_all(&mut backend, "IMG", 1..=3);
    send(
        &mut backend,
        r#"{"type":"IMG","unit":"cam-untracked","id":9}"#,
    );
    let lines = read_lines(&backend, 4, WAIT);
    assert_eq!(ids_with(&lines, "held"), [1, 2], "{lines:?}");
    assert!(lines.contains(&format!(
        r#"{{"status":"error","type":"IMG","unit":"{UNIT}","id":3,"error":"camera \"{CAMERA_LC}\": HOLD_MAX_PER_CAMERA (2) commands are held or unconfirmed for it"}}"#
    )), "{lines:?}");
    assert!(
        lines
            .contains(&r#"{"status":"ok","type":"IMG","unit":"cam-untracked","id":9}"#.to_string()),
        "{lines:?}"
    );
    assert_eq!(others.collect(1, WAIT).len(), 1);
}

#[test]
fn held_and_unconfirmed_commands_survive_kill_9() {
    let (_broker, mut relay, camera) =
        camera_online("5", &[("SPOOL_FILE", "{dir}/relay.spool")], fast_camera());
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send(&mut backend, &cmd("FMW", 1));
    assert_eq!(ids_with(&read_lines(&backend, 1, WAIT), "held"), [1]);
    drop(backend);
    relay.crash();
    relay.relaunch();
    relay.expect_connected_times(2);
    relay.expect_subscribed_times(2);
    relay.expect_log(&format!("held FMW for unit {UNIT} from spool"), WAIT);
    let mut backend = relay.connect();
    send(&mut backend, &cmd("CFG", 2));
    assert_eq!(ids_with(&read_lines(&backend, 1, WAIT), "held"), [2]);
    camera.power_on();
    assert!(camera.wait_until(WAIT, |log| log.received.len() >= 2));
    camera.assert_in_order(&[cmd("FMW", 1), cmd("CFG", 2)]);
}
