//! The status file and `ms500-relay status`, a health check that tells the
//! truth: the broker and device link as they are, at once, the devices, a
//! stopped, killed or hung relay, a failing spool, and relay.conf edited
//! since it was read.

use std::io::Write;
use std::time::Duration;

use rumqttc::QoS;

use crate::support::tools::{conf_in, refused_by, tool};
use crate::support::{
    append, padded_commands, publish, read_json, read_text, send_signal, wait_until, Broker, Relay,
    TempDir, Tmpfs, WAIT,
};

#[test]
fn the_status_file_is_refreshed_and_shows_devices_and_status_prints_it() {
    let broker = Broker::start();
    let relay = Relay::start_with_status(broker.port, &[("LOG_LEVEL", "debug")]);
    relay.expect_connected();
    assert!(wait_until(WAIT, || relay.status_file().exists()));
    let first = relay.status();
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
            let v = relay.status();
            v["updated_unix"].as_u64().unwrap() > updated0
                && v["devices"].as_array().is_some_and(|d| !d.is_empty())
        }),
        "status file not refreshed with the device"
    );
    let v = relay.status();
    let dev = &v["devices"][0];
    assert_eq!(dev["id"], "cam-42");
    assert_eq!(dev["online"], true);
    assert_eq!(dev["ip"], "10.9.8.7");
    assert_eq!(dev["cpu_temp"], 48.5);
    assert!(dev["sense_temp"].is_null(), "absent stays absent");
    assert_eq!(v["broker"]["connected"], true);

    let (code, out, err) = relay.tool(&["status"]);
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
    let (code, out, _) = relay.tool(&["status"]);
    send_signal(relay.pid(), "CONT");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STALE"), "{out}");
}

#[test]
fn status_exits_1_when_the_file_is_missing_and_2_when_not_configured() {
    let dir = TempDir::new("status");
    let nope = dir.path().join("nope.json");
    let conf = conf_in(dir.path(), &format!("STATUS_FILE = {}\n", nope.display()));
    let (code, out, _) = tool(&["status"], &conf);
    assert_eq!(code, 1);
    assert!(out.contains("nope.json"), "{out}");
    refused_by(&["status"], &conf_in(dir.path(), ""), &["STATUS_FILE"]);
}

#[test]
fn a_status_file_that_cannot_be_written_stops_the_start_with_exit_2() {
    let dir = TempDir::new("status");
    // A missing directory is made at start; one that cannot be made (a
    // file is in the way) stops the start.
    std::fs::write(dir.path().join("no-such-dir"), "a file, not a directory").unwrap();
    let status_file = dir.path().join("no-such-dir/status.json");
    let conf = conf_in(
        dir.path(),
        &format!(
            "SOCKET_PORT = 0\nMQTT_PORT = 1\nSTATUS_FILE = {}\n",
            status_file.display()
        ),
    );
    refused_by(&[""], &conf, &["STATUS_FILE", "no-such-dir"]);
}

#[test]
fn status_is_a_health_check_through_a_broker_outage() {
    let mut broker = Broker::start();
    let mut relay = Relay::start_with_status(broker.port, &[("MQTT_KEEPALIVE", "5")]);
    let connected = |relay: &Relay| relay.status()["broker"]["connected"].clone();
    relay.expect_connected();
    assert!(wait_until(WAIT, || connected(&relay) == true));
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}");

    broker.stop();
    // Away for less than 2 x keepalive: still healthy (a reconnect is normal).
    assert!(wait_until(WAIT, || connected(&relay) == false));
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}");
    // Longer: its own exit code, 3.
    assert!(wait_until(Duration::from_secs(20), || relay
        .tool(&["status"])
        .0
        == 3));
    let (_, out, _) = relay.tool(&["status"]);
    assert!(
        out.contains("NOT connected for") && out.contains("2 x MQTT_KEEPALIVE"),
        "{out}"
    );
    let (code, raw, _) = relay.tool(&["status", "--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&raw).expect("--json prints the snapshot");
    assert_eq!(v["broker"]["connected"], false);
    assert!(v["broker"]["down_since_unix"].is_u64());

    broker.restart();
    assert!(wait_until(Duration::from_secs(40), || relay
        .tool(&["status"])
        .0
        == 0));
    relay.kill();
    // Stopped: the snapshot goes stale, exit 1.
    std::fs::remove_file(relay.status_file()).ok();
    assert_eq!(relay.tool(&["status"]).0, 1);
}

/// A relay with PID_FILE, a spool and STATUS_FILE, rarely refreshed: every
/// change seen in the file is one written at the change.
fn relay_writing_status_at_changes(broker: &Broker) -> Relay {
    Relay::start(
        broker.port,
        &[
            ("PID_FILE", "{dir}/relay.pid"),
            ("STATUS_FILE", "{dir}/status.json"),
            ("STATUS_INTERVAL", "600"),
            ("SPOOL_FILE", "{dir}/spool"),
        ],
    )
}

#[test]
fn status_follows_the_broker_at_once_and_a_stopped_relay_says_so() {
    let broker = Broker::start();
    let relay = relay_writing_status_at_changes(&broker);
    relay.expect_connected();
    // STATUS_INTERVAL is 600 s: only the change itself writes the snapshot.
    assert!(
        wait_until(WAIT, || relay.status()["broker"]["connected"] == true),
        "{}",
        read_text(&relay.status_file())
    );
    let snapshot = relay.status();
    assert_eq!(snapshot["state"], "running");
    assert_eq!(snapshot["spool"]["ok"], true, "{snapshot}");
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}");

    let (code, out, err) = relay.tool(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STOPPED"), "{out}");
    assert_eq!(relay.status()["state"], "stopped");
}

#[test]
fn status_of_a_killed_relay_is_not_running_at_once() {
    let broker = Broker::start();
    let mut relay = relay_writing_status_at_changes(&broker);
    relay.expect_connected();
    assert_eq!(relay.tool(&["status"]).0, 0);
    relay.crash();
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT RUNNING"), "{out}");
}

/// Finding: `status` said `device link: NOT subscribed` for a whole
/// `STATUS_INTERVAL` after it subscribed, at start and after a broker
/// return. Every change of the device link writes the snapshot at once.
#[test]
fn status_shows_the_device_link_as_it_is_within_a_second_at_start_and_after_a_broker_return() {
    let mut broker = Broker::start();
    let relay = relay_writing_status_at_changes(&broker);
    let status_file = relay.status_file();
    let subscribed = || relay.status()["device_link"]["subscribed"] == true;
    relay.expect_subscribed();
    // STATUS_INTERVAL is 600 s: only the change itself writes the snapshot.
    assert!(
        wait_until(Duration::from_secs(1), subscribed),
        "{}",
        read_text(&status_file)
    );
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("device link: subscribed"), "{out}");

    broker.stop();
    assert!(
        wait_until(Duration::from_secs(2), || !subscribed()),
        "{}",
        read_text(&status_file)
    );
    broker.restart();
    relay.expect_subscribed_times(2);
    assert!(
        wait_until(Duration::from_secs(1), subscribed),
        "{}\n{}",
        read_text(&status_file),
        relay.log()
    );
    let (_, out, _) = relay.tool(&["status"]);
    assert!(out.contains("device link: subscribed"), "{out}");
}

#[test]
fn status_says_relay_conf_changed_until_a_reload_takes_it() {
    let broker = Broker::start();
    let relay = relay_writing_status_at_changes(&broker);
    relay.expect_connected();
    assert_eq!(relay.status()["config_changed"], false);
    // A whole second later, so the modification time differs on any file system.
    std::thread::sleep(Duration::from_millis(1100));
    append(&relay.conf, "ACK_MODE = errors\n");
    relay.signal("USR1");
    assert!(wait_until(WAIT, || relay.status()["config_changed"] == true));
    let (_, out, _) = relay.tool(&["status"]);
    assert!(out.contains("changed since the relay read it"), "{out}");
    relay.signal("HUP");
    relay.expect_log("relay.conf reloaded", WAIT);
    assert!(wait_until(WAIT, || relay.status()["config_changed"] == false));
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_failing_spool_shows_in_the_status_file_the_metrics_and_the_exit_code() {
    let broker = Broker::start();
    let fs = Tmpfs::mount(256, false);
    let relay = Relay::start(
        broker.port,
        &[
            ("SPOOL_FILE", &fs.dir.join("spool.bin").to_string_lossy()),
            ("STATUS_FILE", "{dir}/status.json"),
            ("METRICS_FILE", "{dir}/relay.prom"),
            ("STATUS_INTERVAL", "600"),
        ],
    );
    let (status_file, metrics) = (relay.status_file(), relay.path("relay.prom"));
    relay.expect_connected();
    fs.fill_leaving(8);
    let mut backend = relay.connect();
    let _ = backend.write_all(padded_commands("s", 500, 60).as_bytes());
    relay.expect_log("cannot be written", WAIT);
    // Written at the change itself (STATUS_INTERVAL is 600 s).
    assert!(
        wait_until(WAIT, || read_json(&status_file)["spool"]["ok"] == false),
        "{}",
        read_text(&status_file)
    );
    let spool = read_json(&status_file)["spool"].clone();
    assert!(spool["failing_since_unix"].is_u64(), "{spool}");
    assert!(
        spool["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "{spool}"
    );
    assert!(read_text(&metrics).contains("ms500_relay_spool_failing 1"));
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILING"), "{out}");
}
