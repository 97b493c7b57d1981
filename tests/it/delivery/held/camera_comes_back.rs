//! Every row of issue 29's table, on both MQTT versions of the device link:
//! whatever way the camera leaves and returns (an update's restart, a
//! blind window, a quick reconnect, a broker or relay restart, a stale
//! heartbeat, a late SUBSCRIBE), it gets each command once.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use super::{
    camera_gets_imgs, camera_online, cmd, fast_camera, ids_with, power_off, read_until, send_all,
    CAMERA, UNIT,
};
use crate::support::camera::CameraOptions;
use crate::support::{publish, publish_retained, read_lines, send, topic, Subscriber, WAIT};

on_each_version!(
    firmware_then_three_configurations_arrive_after_the_restart,
    the_blind_window_loses_nothing,
    a_quick_reconnect_loses_nothing,
    a_broker_restart_waits_for_the_cameras_to_come_back,
    a_camera_offline_before_a_relay_restart_is_offline_after_it,
    a_retained_or_kept_heartbeat_does_not_release_held_commands,
    a_camera_that_heartbeats_before_it_subscribes_gets_its_released_commands,
    a_half_closed_backend_gets_the_lines_of_commands_released_later,
    a_camera_that_stays_connected_gets_nothing_twice,
);

/// Row 1: FMW then 3 CFG; the camera runs the update inside its MQTT task
/// and restarts. Before: the FMW and 0/3 CFG; `ok` ×4.
fn firmware_then_three_configurations_arrive_after_the_restart(protocol: &str) {
    let (_broker, relay, camera) = camera_online(protocol, &[], fast_camera());
    let mut backend = relay.connect();
    let mut batch = cmd("FMW", 1);
    for id in 2..=4 {
        batch.push('\n');
        batch.push_str(&cmd("CFG", id));
    }
    send(&mut backend, &batch);
    let lines = read_until(&backend, |l| ids_with(l, "delivered").len() == 4);
    assert!(
        camera.wait_until(WAIT, |log| log.received.len() >= 4),
        "camera got {} commands; log:\n{}",
        camera.received().len(),
        relay.log()
    );
    let got = camera.received();
    assert_eq!(got.len(), 4, "nothing twice; log:\n{}", relay.log());
    assert_eq!(got[0].payload, cmd("FMW", 1).as_bytes());
    for (i, r) in got[1..].iter().enumerate() {
        assert_eq!(r.payload, cmd("CFG", i as u32 + 2).as_bytes());
        assert!(r.boot > got[0].boot, "the CFGs came after the restart");
    }
    assert_eq!(ids_with(&lines, "ok").len(), 4, "{lines:?}");
    assert_eq!(ids_with(&lines, "held"), [2, 3, 4], "{lines:?}");
    assert_eq!(ids_with(&lines, "delivered").len(), 4, "{lines:?}");
    assert!(ids_with(&lines, "resent").is_empty(), "{lines:?}");
}

/// Row 2: the camera drops right after a heartbeat (heartbeat 1 s, timeout
/// 4 s here), 5 commands in the next 2 s, back after 8 s. Before: 0/5.
fn the_blind_window_loses_nothing(protocol: &str) {
    let (_broker, relay, camera) = camera_online(protocol, &[], fast_camera());
    // Its interval is learned: the relay judges its cadence.
    assert!(camera.wait_until(WAIT, |log| log.heartbeats.len() >= 5));
    let beats = camera.log().heartbeats.len();
    assert!(camera.wait_until(WAIT, |log| log.heartbeats.len() > beats));
    camera.kill();
    let mut backend = relay.connect();
    for id in 1..=5 {
        send(&mut backend, &cmd("IMG", id));
        std::thread::sleep(Duration::from_millis(400)); // commands spread over 2 s
    }
    std::thread::sleep(Duration::from_secs(6)); // the camera is away for 8 s
    camera.power_on();
    camera_gets_imgs(&camera, &relay, 5, WAIT * 2);
    let lines = read_until(&backend, |l| ids_with(l, "delivered").len() == 5);
    assert_eq!(ids_with(&lines, "delivered").len(), 5, "{lines:?}");
}

/// Row 3: away for a moment, one command in the gap. Before: 0/6, all `ok`.
fn a_quick_reconnect_loses_nothing(protocol: &str) {
    let (_broker, relay, camera) =
        camera_online(protocol, &[("LOG_LEVEL", "debug")], fast_camera());
    let mut backend = relay.connect();
    for trial in 1..=3 {
        let beats = camera.log().heartbeats.len();
        assert!(camera.wait_until(WAIT, |log| log.heartbeats.len() >= beats + 4));
        let connects = camera.connects();
        camera.disconnect_for(Duration::from_millis(600));
        send(&mut backend, &cmd("IMG", trial));
        assert!(camera.wait_until(WAIT, |log| log.connects.len() > connects));
        assert!(
            camera.wait_until(WAIT, |log| log
                .received
                .iter()
                .any(|r| r.payload == cmd("IMG", trial).as_bytes())),
            "trial {trial}: the command never arrived; log:\n{}",
            relay.log()
        );
    }
}

/// Row 4: the broker restarts (down 2 s); the cameras come back 3 s later.
/// Before: 5/7 lost, the queue flushed before they resubscribed.
fn a_broker_restart_waits_for_the_cameras_to_come_back(protocol: &str) {
    let (mut broker, relay, camera) = camera_online(
        protocol,
        &[],
        CameraOptions {
            reconnect_delay: Duration::from_secs(5),
            ..fast_camera()
        },
    );
    let mut backend = relay.connect();
    broker.stop();
    send_all(&mut backend, "IMG", 1..=7);
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    camera_gets_imgs(&camera, &relay, 7, WAIT * 2);
}

/// Row 5: a camera known offline before a relay restart counts as known
/// after it (not "never seen"). Before: 3/3 published and lost.
fn a_camera_offline_before_a_relay_restart_is_offline_after_it(protocol: &str) {
    let (_broker, mut relay, camera) = camera_online(
        protocol,
        &[("SPOOL_FILE", "{dir}/relay.spool"), ("UNSEEN_WAIT", "1")],
        fast_camera(),
    );
    power_off(&relay, &camera);
    relay.signal("TERM");
    relay.wait_exit(WAIT).expect("the relay stops");
    relay.relaunch();
    relay.expect_connected_times(2);
    relay.expect_subscribed_times(2);
    relay.expect_log("1 cameras seen before", WAIT);
    let mut backend = relay.connect();
    send_all(&mut backend, "IMG", 1..=3);
    let lines = read_until(&backend, |l| ids_with(l, "held").len() == 3);
    assert_eq!(
        ids_with(&lines, "held"),
        [1, 2, 3],
        "{lines:?}\n{}",
        relay.log()
    );
    // Far past UNSEEN_WAIT: a known camera's commands wait for it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(camera.received().is_empty());
    camera.power_on();
    camera_gets_imgs(&camera, &relay, 3, WAIT);
}

/// Row 6: a retained heartbeat, and one kept in the relay's persistent
/// device session while it was down, are not the camera being there.
/// Before: held commands released, 0/3 reached the camera.
fn a_retained_or_kept_heartbeat_does_not_release_held_commands(protocol: &str) {
    let (broker, mut relay, camera) = camera_online(
        protocol,
        &[("SPOOL_FILE", "{dir}/relay.spool")],
        fast_camera(),
    );
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send_all(&mut backend, "IMG", 1..=3);
    assert_eq!(read_lines(&backend, 3, WAIT).len(), 3);
    relay.signal("TERM");
    relay.wait_exit(WAIT).expect("the relay stops");
    // While the relay is down: a heartbeat kept in its session, and a
    // retained one; the camera itself is still off.
    let hb = format!(r#"{{"device_id":"{CAMERA}","msg_type":"online","timestamp":999}}"#);
    let hb_topic = format!("/device/ms500/{CAMERA}/online");
    publish(broker.port, &hb_topic, hb.as_bytes(), QoS::AtLeastOnce);
    publish_retained(broker.port, &hb_topic, hb.as_bytes());
    relay.relaunch();
    relay.expect_subscribed_times(2);
    let cam_sub = Subscriber::with_qos(broker.port, &topic(UNIT), QoS::AtLeastOnce);
    std::thread::sleep(Duration::from_secs(3));
    cam_sub.assert_silent(Duration::from_millis(100));
    assert!(
        !relay.log().contains("releasing"),
        "released by a stale heartbeat:\n{}",
        relay.log()
    );
    drop(cam_sub);
    camera.power_on();
    camera_gets_imgs(&camera, &relay, 3, WAIT);
}

/// Row 7: the camera publishes its heartbeat and subscribes 5 ms later.
/// Before: 0/3 released commands arrived.
fn a_camera_that_heartbeats_before_it_subscribes_gets_its_released_commands(protocol: &str) {
    let (_broker, relay, camera) = camera_online(
        protocol,
        &[],
        CameraOptions {
            subscribe_after_heartbeat: Some(Duration::from_millis(5)),
            ..fast_camera()
        },
    );
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send_all(&mut backend, "IMG", 1..=3);
    assert_eq!(read_lines(&backend, 3, WAIT).len(), 3);
    camera.power_on();
    camera_gets_imgs(&camera, &relay, 3, WAIT);
}

/// Row 9: a half-closed backend whose held commands are released 3 s
/// later. Before: delivered, but 0/3 `ok` lines.
fn a_half_closed_backend_gets_the_lines_of_commands_released_later(protocol: &str) {
    let (_broker, relay, camera) = camera_online(protocol, &[("ACK_MODE", "all")], fast_camera());
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send_all(&mut backend, "IMG", 1..=3);
    backend.shutdown(Shutdown::Write).unwrap();
    assert_eq!(ids_with(&read_lines(&backend, 3, WAIT), "held"), [1, 2, 3]);
    std::thread::sleep(Duration::from_secs(3));
    camera.power_on();
    let lines = read_lines(&backend, 3, WAIT);
    assert_eq!(ids_with(&lines, "ok"), [1, 2, 3], "{lines:?}");
}

/// A camera that stays connected, heartbeats jittered by ±20 % and one lost
/// now and then, gets every one of 300 commands sent over a minute once,
/// and each is confirmed (issue 29, item 3).
fn a_camera_that_stays_connected_gets_nothing_twice(protocol: &str) {
    let (_broker, relay, camera) = camera_online(
        protocol,
        &[("DEVICE_TIMEOUT", "10")],
        CameraOptions {
            heartbeat_every: Duration::from_secs(2),
            jitter_percent: 20,
            drop_heartbeats: vec![9, 21],
            ..fast_camera()
        },
    );
    let mut backend = relay.connect();
    let start = Instant::now();
    for id in 1..=300u32 {
        send(&mut backend, &cmd("IMG", id));
        // 300 over a minute, each at its own time.
        let due = start + Duration::from_millis(200 * u64::from(id));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let lines = read_until(&backend, |l| ids_with(l, "delivered").len() == 300);
    assert_eq!(
        ids_with(&lines, "delivered").len(),
        300,
        "{}",
        relay.log_tail(30)
    );
    assert!(
        ids_with(&lines, "resent").is_empty(),
        "{}",
        relay.log_tail(30)
    );
    assert_eq!(camera.received().len(), 300);
    assert_eq!(camera.duplicates(), 0);
}
