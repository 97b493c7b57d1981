//! Delivery to the camera, not only to the broker (PROTOCOL.md §2.7): with
//! `"camera"` in a command, the relay holds it while the camera is offline
//! and releases it at the camera's next heartbeat. The camera is simulated
//! as the firmware behaves (clean session, subscribe and heartbeat on every
//! connect, updates run inside its MQTT task and restart it).

mod camera_comes_back;
mod limits;
mod operator_view;

use std::io::Read;
use std::net::TcpStream;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::support::camera::{Camera, CameraOptions};
use crate::support::{send, Broker, Relay, WAIT};

/// The camera's id as its heartbeat topic names it (its MAC in hex).
pub(crate) const CAMERA: &str = "A0B1C2D3E4F5";

/// The same camera as the backend names it in its commands.
pub(crate) const CAMERA_LC: &str = "a0b1c2d3e4f5";

pub(crate) const UNIT: &str = "MS500-H090-EP-2549-0038";

/// A camera that heartbeats every second, whose updates take 2 s and whose
/// reboots and reconnects 1 s: the firmware's behaviour, faster.
pub(crate) fn fast_camera() -> CameraOptions {
    CameraOptions {
        mac: CAMERA.into(),
        unit: UNIT.into(),
        heartbeat_every: Duration::from_secs(1),
        block_for: Duration::from_secs(2),
        reboot_delay: Duration::from_secs(1),
        reconnect_delay: Duration::from_secs(1),
        ..CameraOptions::default()
    }
}

/// `settings` plus the device link's MQTT version and status lines for all.
pub(crate) fn relay_on(broker: u16, protocol: &str, settings: &[(&str, &str)]) -> Relay {
    let mut all = vec![
        ("MQTT_PROTOCOL", protocol),
        ("ACK_MODE", "camera"),
        ("DEVICE_TIMEOUT", "4"),
    ];
    all.extend_from_slice(settings);
    let relay = Relay::start(broker, &all);
    relay.expect_ready();
    relay
}

pub(crate) fn cmd(kind: &str, id: u32) -> String {
    let extra = match kind {
        "FMW" => {
            r#","firmware_id":"2.4.1","link":"https://fw.example/ms500.bin","md5":"0123456789abcdef0123456789abcdef""#
        }
        "CFG" => r#","configs":{"exposure":3}"#,
        _ => "",
    };
    format!(r#"{{"type":"{kind}","unit":"{UNIT}","id":{id},"camera":"{CAMERA_LC}"{extra}}}"#)
}

/// The status lines of `lines` whose `status` is `status`, as their ids.
pub(crate) fn ids_with(lines: &[String], status: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["status"] == status)
        .filter_map(|v| v["id"].as_u64())
        .collect()
}

/// Reads status lines until `done` says they are enough (or twice WAIT
/// passed): no line read is lost between two looks.
pub(crate) fn read_until(
    mut stream: &TcpStream,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT * 2;
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&lines) && Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
        }
    }
    lines
}

/// The relay saw the camera's first heartbeat, and the camera sent one
/// more since (so the publisher, which hears of heartbeats shortly after
/// the log line, knows it too).
pub(crate) fn online(relay: &Relay, camera: &Camera) {
    relay.expect_log(&format!("device {CAMERA} online"), WAIT);
    let beats = camera.log().heartbeats.len();
    assert!(camera.wait_until(WAIT, |log| log.heartbeats.len() > beats));
}

/// A broker, a relay on it ([`relay_on`]) and a camera behaving as
/// `options` say, [`online`].
pub(crate) fn camera_online(
    protocol: &str,
    settings: &[(&str, &str)],
    options: CameraOptions,
) -> (Broker, Relay, Camera) {
    let broker = Broker::start();
    let relay = relay_on(broker.port, protocol, settings);
    let camera = Camera::start(broker.port, options);
    online(&relay, &camera);
    (broker, relay, camera)
}

/// Powers the camera off and waits until the relay counts it offline.
pub(crate) fn power_off(relay: &Relay, camera: &Camera) {
    camera.kill();
    relay.expect_log(&format!("device {CAMERA} offline"), WAIT);
}

/// The commands of type `kind` numbered `ids` ([`cmd`]).
pub(crate) fn cmds(kind: &str, ids: RangeInclusive<u32>) -> Vec<String> {
    ids.map(|id| cmd(kind, id)).collect()
}

/// Sends [`cmds`] on `backend`, a line each.
pub(crate) fn send_all(backend: &mut TcpStream, kind: &str, ids: RangeInclusive<u32>) {
    for command in cmds(kind, ids) {
        send(backend, &command);
    }
}

/// Waits up to `timeout` until the camera got `n` commands, and asserts
/// that they are IMG 1 to `n`, each once, in that order.
#[track_caller]
pub(crate) fn camera_gets_imgs(camera: &Camera, relay: &Relay, n: u32, timeout: Duration) {
    assert!(
        camera.wait_until(timeout, |log| log.received.len() >= n as usize),
        "camera got {}; log:\n{}",
        camera.received().len(),
        relay.log()
    );
    camera.assert_in_order(&cmds("IMG", 1..=n));
}
