use super::*;
use crate::delivery::policy::HeldFor;
use crate::delivery::presence::Held;
use crate::devices::heartbeat::Heartbeat;
use crate::devices::table::DeviceSnapshot;
use std::time::Duration;
use std::time::UNIX_EPOCH;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn snapshot_value(devices: Vec<DeviceSnapshot>, now: u64) -> Value {
    let config = Config::default();
    let counters = Counters::default();
    counters
        .broker_down_since_unix
        .store(now - 10, std::sync::atomic::Ordering::Relaxed);
    Counters::add(&counters.received);
    Counters::add(&counters.received);
    Counters::add(&counters.published);
    let total = devices.len() + 300;
    to_json(&Snapshot {
        config: &config,
        started: at(now - 7200),
        now: at(now),
        counters: &counters,
        broker: "127.0.0.1:1883".into(),
        devices: &TableSnapshot {
            online: devices.iter().filter(|d| d.online).count() + 100,
            shown: devices,
            total,
            forgotten: 7,
            states: [1, 2, 3],
        },
        held: Default::default(),
        stopped: false,
        config_file: None,
    })
}

#[test]
fn snapshot_has_the_documented_keys() {
    let v = snapshot_value(vec![], 1_795_927_484);
    for key in [
        "pid",
        "started",
        "started_unix",
        "updated",
        "updated_unix",
        "status_interval",
        "broker",
        "queue_depth",
        "counters",
        "devices",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    // Durations are whole seconds, as the status command reads them.
    assert_eq!(v["status_interval"], 5, "{v}");
    assert_eq!(v["mqtt_keepalive"], 60, "{v}");
    for key in [
        "received",
        "published",
        "rejected",
        "expired",
        "replies_routed",
        "replies_dropped",
    ] {
        assert!(v["counters"][key].is_u64(), "counter {key}: {v}");
    }
    assert_eq!(v["counters"]["received"], 2);
    assert_eq!(v["broker"]["connected"], false);
    assert_eq!(v["broker_connected"], false);
    assert_eq!(v["updated"], "2026-11-29T04:44:44Z");
    assert_eq!(v["broker"]["address"], "127.0.0.1:1883");
    assert_eq!(
        (
            &v["devices_total"],
            &v["devices_online"],
            &v["devices_offline"],
            &v["devices_not_shown"],
            &v["devices_forgotten"]
        ),
        (
            &json!(300),
            &json!(100),
            &json!(200),
            &json!(300),
            &json!(7)
        )
    );
}

#[test]
fn a_hostile_status_file_never_makes_status_panic() {
    let huge = "w".repeat(70_000);
    let v = json!({
        "status_interval": 5, "updated_unix": 1_000_000, "started_unix": 1,
        "devices": [
            {"id": huge, "ip": huge, "network": 12, "cpu_temp": "hot", "last_seen_unix": u64::MAX},
            {"id": null, "online": "yes"},
            "not an object"
        ],
        "devices_total": -1,
        "counters": [1, 2]
    });
    let (report, _) = render(&v, at(1_000_000), 5);
    assert!(report.lines().all(|l| l.chars().count() < 500), "{report}");
    assert!(report.contains("70000 characters"), "{report}");
}

#[test]
fn render_marks_fresh_and_stale_by_three_intervals() {
    let v = snapshot_value(vec![], 1_000_000);
    let (report, health) = render(&v, at(1_000_015), 5);
    assert_eq!(
        health,
        Health::Healthy,
        "not connected for 15 s is within 2 x keepalive: {report}"
    );
    assert!(report.contains("FRESH"));
    let (report, health) = render(&v, at(1_000_016), 5);
    assert_eq!(health, Health::Stale);
    assert!(report.contains("STALE"), "{report}");
    assert!(report.contains("NOT connected"));
    assert!(report.contains("up 2h 00m"), "{report}");
}

#[test]
fn render_lists_devices_in_an_aligned_table_with_absent_values_as_dashes() {
    let devices = vec![
        DeviceSnapshot {
            id: "cam-01".into(),
            online: true,
            state: crate::delivery::policy::State::Present,
            interval: None,
            last_seen: at(999_990),
            status: Heartbeat {
                ip: Some("10.0.0.7".into()),
                network: Some("wifi".into()),
                cpu_temp: Some(47.5),
                video_fps: Some(15.0),
                ..Heartbeat::default()
            },
        },
        DeviceSnapshot {
            id: "a-much-longer-device-id".into(),
            online: false,
            state: crate::delivery::policy::State::Offline,
            interval: None,
            last_seen: at(900_000),
            status: Heartbeat::default(),
        },
    ];
    let v = snapshot_value(devices, 1_000_000);
    let (report, _) = render(&v, at(1_000_000), 5);
    let lines: Vec<&str> = report.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("DEVICE"))
        .expect("table header");
    let row1 = lines[header + 1];
    let row2 = lines[header + 2];
    assert!(row1.starts_with("cam-01 "), "{report}");
    assert!(
        row1.contains("10.0.0.7")
            && row1.contains("47.5C")
            && row1.contains("15fps")
            && row1.contains("10 s ago"),
        "{row1}"
    );
    assert!(row2.contains(" no ") && row2.contains(" - "), "{row2}");
    // Columns line up: ONLINE starts at the same offset in every line.
    let col = lines[header].find("ONLINE").unwrap();
    assert_eq!(&row1[col..col + 3], "yes");
    assert_eq!(&row2[col..col + 2], "no");
}

#[test]
fn render_survives_a_foreign_file() {
    let (report, health) = render(&json!({"something": "else"}), at(10), 5);
    assert_eq!(health, Health::Stale);
    assert!(report.contains("STALE"));
}

#[test]
fn a_broker_away_longer_than_two_keepalives_is_its_own_health() {
    let v = snapshot_value(vec![], 1_000_000);
    assert_eq!(v["broker"]["down_since_unix"], 999_990);
    let mut v = v;
    v["mqtt_keepalive"] = json!(5);
    v["status_interval"] = json!(60);
    let (report, health) = render(&v, at(1_000_005), 5);
    assert_eq!(health, Health::BrokerAway, "{report}");
    assert!(
        report.contains("NOT connected for 15 s (longer than 2 x MQTT_KEEPALIVE: 10 s)"),
        "{report}"
    );
    v["broker"]["connected"] = json!(true);
    assert_eq!(render(&v, at(1_000_005), 5).1, Health::Healthy);
}

#[test]
fn held_commands_show_per_device_in_totals_and_per_camera() {
    let config = Config::default();
    let counters = Counters::default();
    let now = 1_000_000;
    let devices = vec![DeviceSnapshot {
        id: "A0B1C2D3E4F5".into(),
        online: false,
        state: crate::delivery::policy::State::Offline,
        interval: None,
        last_seen: at(now - 600),
        status: Heartbeat::default(),
    }];
    let held = Held {
        commands: 3,
        unconfirmed: 0,
        bytes: 420,
        by_camera: vec![
            HeldFor {
                camera: "a0b1c2d3e4f5".into(),
                commands: 2,
                unconfirmed: 0,
                oldest: at(now - 7200),
                state: "offline",
                interval: None,
            },
            HeldFor {
                camera: "never-seen-since-start".into(),
                commands: 1,
                unconfirmed: 0,
                oldest: at(now - 60),
                state: "unknown",
                interval: None,
            },
        ],
    };
    let snapshot = Snapshot {
        config: &config,
        started: at(now - 9000),
        now: at(now),
        counters: &counters,
        broker: "127.0.0.1:1883".into(),
        devices: &TableSnapshot {
            online: 0,
            total: 1,
            shown: devices,
            forgotten: 0,
            states: [0, 0, 1],
        },
        held,
        stopped: false,
        config_file: None,
    };
    let v = to_json(&snapshot);
    let mut whole = serde_json::to_vec_pretty(&v).unwrap();
    whole.push(b'\n');
    let spliced = file_bytes(&snapshot, &devices_text(&snapshot).unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(spliced).unwrap(),
        String::from_utf8(whole).unwrap(),
        "the file with its device list rendered apart is the same text"
    );
    assert_eq!(v["held"], 3);
    assert_eq!(v["held_bytes"], 420);
    assert_eq!(v["devices"][0]["held"], 2, "matched ignoring case");
    assert_eq!(v["devices"][0]["held_oldest_age_s"], 7200);
    assert_eq!(v["held_cameras"][1]["camera"], "never-seen-since-start");
    assert_eq!(v["held_cameras"][1]["oldest_age_s"], 60);
    let (report, _) = render(&v, at(now), 5);
    assert!(
        report.contains("held for cameras: 3 commands, 0 unconfirmed, 420 bytes, for 2 cameras"),
        "{report}"
    );
    assert!(
        report.contains(
            "  camera a0b1c2d3e4f5 (offline): 2 held, 0 unconfirmed, the oldest for 2h 00m"
        ),
        "{report}"
    );
    let row = report
        .lines()
        .find(|l| l.starts_with("A0B1C2D3E4F5"))
        .expect("the device's row");
    assert!(row.ends_with("2 (2h 00m)  -"), "{report}");
}

#[test]
fn a_device_link_unsubscribed_longer_than_two_keepalives_is_unhealthy_too() {
    let mut v = snapshot_value(vec![], 1_000_000);
    v["broker"]["connected"] = json!(true);
    v["mqtt_keepalive"] = json!(5);
    v["status_interval"] = json!(60);
    v["device_link"] = json!({"subscribed": true, "protocol": "3.1.1",
        "down_since": null, "down_since_unix": null});
    let (report, health) = render(&v, at(1_000_005), 5);
    assert_eq!(health, Health::Healthy, "{report}");
    assert!(
        report.contains("device link: subscribed (MQTT 3.1.1)"),
        "{report}"
    );
    v["device_link"]["subscribed"] = json!(false);
    v["device_link"]["down_since_unix"] = json!(999_995);
    assert_eq!(
        render(&v, at(1_000_005), 5).1,
        Health::Healthy,
        "10 s: not yet"
    );
    let (report, health) = render(&v, at(1_000_011), 5);
    assert_eq!(health, Health::BrokerAway, "{report}");
    assert!(
        report.contains("device link: NOT subscribed for 16 s (longer than 2 x MQTT_KEEPALIVE"),
        "{report}"
    );
}

#[test]
fn a_stopped_relay_is_not_healthy_and_says_so() {
    let now = 1_795_927_484;
    let mut v = snapshot_value(vec![], now);
    v["broker"]["connected"] = true.into();
    assert_eq!(render(&v, at(now), 5).1, Health::Healthy);
    v["state"] = "stopped".into();
    let (report, health) = render(&v, at(now), 5);
    assert_eq!(health, Health::Stale);
    assert!(report.contains("STOPPED"), "{report}");
}

#[test]
fn a_failing_spool_shows_since_when_and_why_and_is_unhealthy() {
    let now = 1_795_927_484;
    let mut v = snapshot_value(vec![], now);
    v["broker"]["connected"] = true.into();
    v["spool"] = serde_json::json!({
        "file": "/data/spool", "ok": false, "failing_since_unix": now - 90,
        "problem": "No space left on device (os error 28)"
    });
    let (report, health) = render(&v, at(now), 5);
    assert_eq!(health, Health::SpoolFailing);
    assert!(
        report.contains("spool /data/spool: FAILING for 1m 30s"),
        "{report}"
    );
    assert!(report.contains("No space left"), "{report}");
}

/// Every key of `v`, with the path to it (array elements as `[]`).
fn key_paths(v: &Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                let path = format!("{at}.{k}");
                out.insert(path.clone());
                key_paths(inner, &path, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                key_paths(first, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// The JSON example after `marker` in the document at `path`.
fn documented_example(path: &str, marker: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .expect("the document");
    let after = &text[text.find(marker).expect("the marker")..];
    let start = after.find("```json\n").expect("a json block") + 8;
    let end = start + after[start..].find("```").expect("its end");
    serde_json::from_str(&after[start..end]).expect("the example parses")
}

#[test]
fn the_documented_status_examples_have_exactly_the_real_keys() {
    let now = 1_000_000;
    let devices = vec![DeviceSnapshot {
        id: "cam-01".into(),
        online: true,
        state: crate::delivery::policy::State::Present,
        interval: None,
        last_seen: at(now - 2),
        status: Heartbeat::default(),
    }];
    let mut real = snapshot_value(devices, now);
    real["held_cameras"] = serde_json::json!([{ "camera": "c", "state": "offline",
        "interval_s": 5.0, "held": 1, "unconfirmed": 0, "oldest": "t",
        "oldest_unix": 1, "oldest_age_s": 1 }]);
    let mut want = std::collections::BTreeSet::new();
    key_paths(&real, "", &mut want);
    for (doc, marker) in [
        ("docs/PROTOCOL.md", "**`STATUS_FILE`**"),
        ("README.md", "Status file schema"),
    ] {
        let mut shown = std::collections::BTreeSet::new();
        key_paths(&documented_example(doc, marker), "", &mut shown);
        assert_eq!(
            shown.symmetric_difference(&want).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{doc}'s status example and the real snapshot differ in these keys"
        );
    }
}

#[test]
fn the_device_table_shows_the_links_up_and_the_lte_signal() {
    let now = 1_000_000;
    let mut v = snapshot_value(vec![], now);
    v["devices"] = serde_json::json!([{ "id": "cam-01", "online": true,
        "last_seen_unix": now - 2, "eth_connected": false, "wifi_connected": true,
        "lte_connected": true, "lte_signal": -71 }]);
    let (report, _) = render(&v, at(now), 5);
    assert!(
        report.contains("LINKS UP") && report.contains("LTE SIGNAL"),
        "{report}"
    );
    assert!(report.contains("wifi,lte"), "{report}");
    assert!(report.contains("-71"), "{report}");
}
