//! Running it on a gateway: one instance per PID_FILE, the status file, and
//! the `status` command.

use std::time::Duration;

use crate::support::{
    publish, read_json, run_bin, send_signal, wait_until, Broker, Relay, TempDir, WAIT,
};
use rumqttc::QoS;

#[test]
fn a_second_instance_exits_3_naming_the_holder_and_a_stale_pid_file_is_taken_over() {
    let broker = Broker::start();
    let dir = TempDir::new("pid");
    let pid_file = dir.path().join("relay.pid");
    std::fs::write(&pid_file, "4194303\n").unwrap(); // left behind by a dead process, no lock
    let pid_s = pid_file.to_str().unwrap().to_string();
    let mut first = Relay::start(
        broker.port,
        &[("PID_FILE", &pid_s), ("SOCKET_ALLOW_USERS", "root, 0")],
    );
    let held = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(
        held.trim(),
        first.pid().to_string(),
        "stale file taken over silently"
    );
    assert!(!first.log().contains("WARN"), "{}", first.log());

    let (code, _, err) = run_bin(&["-c", first.conf.to_str().unwrap()], None);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&first.pid().to_string()),
        "names the holder: {err}"
    );
    assert!(err.contains("already running"), "{err}");

    first.signal("TERM");
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(!pid_file.exists(), "a clean stop removes the pid file");
}

#[test]
fn the_status_file_is_refreshed_and_shows_devices_and_status_prints_it() {
    let broker = Broker::start();
    let dir = TempDir::new("status");
    let status_file = dir.path().join("status.json");
    let relay = Relay::start(
        broker.port,
        &[
            ("LOG_LEVEL", "debug"),
            ("STATUS_FILE", status_file.to_str().unwrap()),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    relay.expect_connected();
    assert!(wait_until(WAIT, || status_file.exists()));
    let first = read_json(&status_file);
    for key in [
        "pid",
        "started",
        "updated",
        "broker",
        "queue_depth",
        "counters",
        "devices",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    for key in [
        "received",
        "published",
        "rejected",
        "expired",
        "replies_routed",
        "replies_dropped",
    ] {
        assert!(
            first["counters"][key].is_u64(),
            "counter {key} missing: {first}"
        );
    }
    assert_eq!(first["pid"], relay.pid());

    relay.expect_subscribed();
    publish(
        broker.port,
        "/device/ms500/cam-42/online",
        br#"{"ip":"10.9.8.7","network":"lte","cpu_temp":48.5,"video_fps":12,"lte_connected":true}"#,
        QoS::AtMostOnce,
    );
    relay.expect_log("heartbeat cam-42", WAIT);
    let updated0 = first["updated_unix"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let v = read_json(&status_file);
            v["updated_unix"].as_u64().unwrap() > updated0
                && v["devices"].as_array().is_some_and(|d| !d.is_empty())
        }),
        "status file not refreshed with the device"
    );
    let v = read_json(&status_file);
    let dev = &v["devices"][0];
    assert_eq!(dev["id"], "cam-42");
    assert_eq!(dev["online"], true);
    assert_eq!(dev["ip"], "10.9.8.7");
    assert_eq!(dev["cpu_temp"], 48.5);
    assert!(dev["sense_temp"].is_null(), "absent stays absent");
    assert_eq!(v["broker"]["connected"], true);

    let conf = relay.conf.to_str().unwrap().to_string();
    let (code, out, err) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("FRESH") && out.contains("connected"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("cam-42"))
        .unwrap_or_else(|| panic!("no device row:\n{out}"));
    assert!(
        row.contains("yes")
            && row.contains("10.9.8.7")
            && row.contains("lte")
            && row.contains("48.5C"),
        "{row}"
    );

    // A stopped relay's snapshot goes stale: status says so and exits 1.
    send_signal(relay.pid(), "STOP");
    // Time is the test: the snapshot ages past 3 intervals, plus a second
    // for whole-second timestamps.
    std::thread::sleep(Duration::from_millis(4500));
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    send_signal(relay.pid(), "CONT");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STALE"), "{out}");
}

#[test]
fn status_exits_1_when_the_file_is_missing_and_2_when_not_configured() {
    let dir = TempDir::new("status");
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!("STATUS_FILE = {}\n", dir.path().join("nope.json").display()),
    )
    .unwrap();
    let (code, out, _) = run_bin(&["status", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(out.contains("nope.json"), "{out}");
    std::fs::write(&conf, "").unwrap();
    let (code, _, err) = run_bin(&["status", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("STATUS_FILE"), "{err}");
}

#[test]
fn a_status_file_that_cannot_be_written_stops_the_start_with_exit_2() {
    let dir = TempDir::new("status");
    let conf = dir.path().join("relay.conf");
    // A missing directory is made at start; one that cannot be made (a
    // file is in the way) stops the start.
    std::fs::write(dir.path().join("no-such-dir"), "a file, not a directory").unwrap();
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PORT = 0\nMQTT_PORT = 1\nSTATUS_FILE = {}\n",
            dir.path().join("no-such-dir/status.json").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("STATUS_FILE") && err.contains("no-such-dir"),
        "{err}"
    );
}
