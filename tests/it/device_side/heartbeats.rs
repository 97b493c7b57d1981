//! Heartbeats: their fields shown in the log (odd ones survived), each
//! silent camera offline once and back online at its next heartbeat, one
//! summary line for a fleet at info, and the device table, its log lines
//! and the status file bounded whatever the devices send.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{Client, QoS};

use crate::support::{
    device, heartbeat, heartbeat_topic, peak_rss_kib, publish, ready_on, showing_heartbeats,
    wait_until, Broker, Relay, Subscriber, COMMANDS, RSS_LIMIT_KIB, WAIT,
};

on_each_version!(
    heartbeat_fields_appear_in_the_log_and_odd_ones_are_survived,
    silent_device_goes_offline_once_and_comes_back_online,
);

fn heartbeat_fields_appear_in_the_log_and_odd_ones_are_survived(protocol: &str) {
    let (broker, relay) = ready_on(protocol, &[("LOG_LEVEL", "debug")]);
    let hb = br#"{"device_id":"cam-07","msg_type":"online","timestamp":1764391000,"ip":"10.1.2.3","network":"wifi","eth_connected":false,"wifi_connected":true,"lte_connected":0,"cpu_temp":51.5,"sense_temp":40.25,"video_fps":14.5,"spi_fps":29,"lte_signal":-77}"#;
    heartbeat(broker.port, "cam-07", hb);
    let line = relay.log_line("heartbeat cam-07:", WAIT);
    for part in [
        "ts=1764391000",
        "ip=10.1.2.3",
        "net=wifi",
        "eth=down",
        "wifi=up",
        "lte=down",
        "cpu=51.5C",
        "sense=40.25C",
        "video=14.5fps",
        "spi=29fps",
        "lte_signal=-77",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }

    // Missing fields are absent, not zero.
    heartbeat(broker.port, "cam-08", br#"{"ip":"10.1.2.4"}"#);
    let line = relay.log_line("heartbeat cam-08:", WAIT);
    assert!(
        line.contains("cpu=absent") && !line.contains("lte_signal"),
        "{line}"
    );

    // Non-JSON and odd heartbeats: one warn line, and the relay carries on.
    heartbeat(broker.port, "cam-09", b"\xff\xfeonline");
    heartbeat(broker.port, "cam-09", b"[1,2]");
    relay.expect_log("odd heartbeat from device cam-09", WAIT);
    let sub = Subscriber::new(broker.port, COMMANDS);
    relay
        .connect()
        .write_all(br#"{"type":"IMG","unit":"cam-09"}"#)
        .unwrap();
    assert!(
        sub.recv(WAIT).is_some(),
        "relay still relays after odd heartbeats"
    );
    assert!(
        !relay.log().contains("heartbeat cam-09:"),
        "odd heartbeats are not shown as status"
    );
}

fn silent_device_goes_offline_once_and_comes_back_online(protocol: &str) {
    let (broker, relay) = ready_on(protocol, &[("DEVICE_TIMEOUT", "2")]);
    heartbeat(broker.port, "cam-q", br#"{"ip":"10.0.0.1"}"#);
    relay.expect_log("device cam-q offline", WAIT);
    // Time is the test here: "offline" must not come again in the next 1.5
    // DEVICE_TIMEOUTs of silence.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        relay.log().matches("device cam-q offline").count(),
        1,
        "offline is logged once"
    );
    heartbeat(broker.port, "cam-q", br#"{"ip":"10.0.0.1"}"#);
    relay.expect_log("device cam-q is back online", WAIT);
}

#[test]
fn a_retained_17_mb_heartbeat_costs_only_itself_while_commands_flow() {
    let broker = Broker::start();
    // 17 MB of non-JSON, retained: offered to the relay on every subscribe.
    // The relay's device link announces a 1 MiB packet limit (MQTT 5), so the
    // broker drops it for the relay; the command link never carries it.
    let mut opts = rumqttc::MqttOptions::new("big-retained", "127.0.0.1", broker.port);
    opts.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut conn) = rumqttc::Client::new(opts, 8);
    client
        .publish(
            heartbeat_topic("camZ"),
            QoS::AtLeastOnce,
            true,
            vec![b'x'; 17_000_000],
        )
        .unwrap();
    // A small retained heartbeat beside it still arrives.
    client
        .publish(
            heartbeat_topic("camY"),
            QoS::AtLeastOnce,
            true,
            br#"{"ip":"10.0.0.9"}"#.to_vec(),
        )
        .unwrap();
    let mut acked = 0;
    for event in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = event {
            acked += 1;
            if acked == 2 {
                break;
            }
        }
    }
    let sub = Subscriber::new(broker.port, COMMANDS);
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "debug")]);
    let mut s = relay.connect();
    for i in 0..100 {
        s.write_all(format!(r#"{{"type":"IMG","unit":"after-big","id":{i}}}"#).as_bytes())
            .unwrap();
    }
    let got = sub.collect(100, WAIT);
    assert_eq!(got.len(), 100, "log:\n{}", relay.log());
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m.payload,
            format!(r#"{{"type":"IMG","unit":"after-big","id":{i}}}"#).as_bytes()
        );
    }
    relay.expect_log("heartbeat camY: ts=absent ip=10.0.0.9", WAIT);
    // Time is the test here: a reconnect loop (the broker offering the 17 MB
    // message again on every subscribe) shows within 3 s, its first backoff
    // being 1 s; nothing the relay reports says "and nothing more happened".
    std::thread::sleep(Duration::from_secs(3));
    let log = relay.log();
    assert_eq!(
        log.matches("connected to broker").count(),
        2,
        "one per link, no reconnect loop:\n{log}"
    );
    assert!(
        !log.contains("lost connection") && !log.contains("device link to broker"),
        "{log}"
    );
    assert!(
        !log.contains("camZ"),
        "the 17 MB message never reached the relay:\n{log}"
    );
}

/// A broker, the relay with `settings` and its device link subscribed, and
/// one client `name` that heartbeats for a fleet of cameras.
fn relay_and_a_fleet(settings: &[(&str, &str)], name: &str) -> (Broker, Relay, Client) {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, settings);
    relay.expect_subscribed();
    let fleet = device(broker.port, name);
    (broker, relay, fleet)
}

/// A heartbeat of camera `id` from a fleet's client.
fn fleet_heartbeat(client: &Client, id: &str) {
    client
        .publish(
            format!("/device/ms500/{id}/online"),
            QoS::AtLeastOnce,
            false,
            br#"{"ip":"10.0.0.7","network":"wifi","cpu_temp":47.5}"#.to_vec(),
        )
        .unwrap();
}

#[test]
fn heartbeats_are_debug_lines_and_one_summary_line_sums_them_up_at_info() {
    let (broker, relay, cams) =
        relay_and_a_fleet(&[("DEVICE_SUMMARY_INTERVAL", "1")], "fleet-info");
    for round in 0..3 {
        for i in 0..5 {
            fleet_heartbeat(&cams, &format!("cam-{i}"));
        }
        if round == 0 {
            relay.expect_log("device cam-4 online (first heartbeat since start)", WAIT);
        }
    }
    relay.expect_log("devices: 5 known, 5 online, 0 offline;", WAIT);
    let log = relay.log();
    assert!(
        !log.contains("heartbeat cam-"),
        "no line per heartbeat at info:\n{log}"
    );
    assert_eq!(
        log.matches("device cam-0 online").count(),
        1,
        "a new device once:\n{log}"
    );

    let debug = Relay::start(broker.port, &[("LOG_LEVEL", "debug")]);
    debug.expect_subscribed();
    fleet_heartbeat(&cams, "cam-9");
    debug.expect_log("heartbeat cam-9: ts=absent ip=10.0.0.7 net=wifi", WAIT);
}

#[test]
fn each_camera_of_a_fleet_gone_silent_is_offline_exactly_once() {
    let (_broker, relay, cams) = relay_and_a_fleet(&[("DEVICE_TIMEOUT", "2")], "fleet-offline");
    for i in 0..8 {
        fleet_heartbeat(&cams, &format!("dark-{i}"));
    }
    for i in 0..8 {
        relay.expect_log(&format!("device dark-{i} offline"), WAIT);
    }
    // Time is the test here: two more DEVICE_TIMEOUTs of silence add no line.
    std::thread::sleep(Duration::from_secs(4));
    let log = relay.log();
    for i in 0..8 {
        assert_eq!(
            log.matches(&format!("device dark-{i} offline")).count(),
            1,
            "{log}"
        );
    }
    fleet_heartbeat(&cams, "dark-3");
    relay.expect_log("device dark-3 is back online", WAIT);
    relay.expect_log_count("device dark-3 offline", 2, WAIT);
}

/// Waits until the device link of a relay that logs only warnings is
/// subscribed: with no SUBACK line to wait for, a probe heartbeat, published
/// again until the status file (written now on SIGUSR1) shows it, tells.
fn subscribed_quietly(relay: &Relay, broker: u16, status: &Path) {
    let shown = || std::fs::read_to_string(status).is_ok_and(|t| t.contains("probe-0"));
    let start = Instant::now();
    loop {
        publish(
            broker,
            "/device/ms500/probe-0/online",
            b"{}",
            QoS::AtLeastOnce,
        );
        relay.signal("USR1");
        if wait_until(Duration::from_secs(1), shown) {
            return;
        }
        assert!(start.elapsed() < WAIT, "the device link never subscribed");
    }
}

#[test]
fn a_hundred_thousand_devices_stay_within_max_devices_and_the_status_file_stays_small() {
    let broker = Broker::start();
    let relay = Relay::start_with_status(broker.port, &[("LOG_LEVEL", "warn")]);
    let status = relay.status_file();
    subscribed_quietly(&relay, broker.port, &status);
    let dev = device(broker.port, "fleet");
    let n = 100_000;
    for i in 0..n {
        dev.publish(
            format!("/device/ms500/dev-{i}/online"),
            QoS::AtMostOnce,
            false,
            format!(
                r#"{{"ip":"10.{}.{}.{}","cpu_temp":40}}"#,
                i / 65536,
                (i / 256) % 256,
                i % 256
            ),
        )
        .unwrap();
    }
    let read = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&status).unwrap_or_default()).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            let v = read();
            // The probe of `subscribed_quietly` counts too.
            v["devices_total"].as_u64().unwrap_or(0) + v["devices_forgotten"].as_u64().unwrap_or(0)
                > n
        }),
        "status: {}",
        read()
    );
    let v = read();
    assert_eq!(v["devices_total"], 10_000);
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(200));
    assert_eq!(
        v["devices"][0]["id"], "dev-99999",
        "the most recently seen first"
    );
    let size = std::fs::metadata(&status).unwrap().len();
    assert!(size < 200_000, "status file of {size} bytes");
    let peak = peak_rss_kib(relay.pid());
    println!("status file {size} bytes; peak RSS {peak} KiB");
    assert!(peak <= RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    relay.expect_log("forgot ", WAIT);
    assert!(
        relay.log().matches("forgot ").count() <= 2,
        "once a minute at most:\n{}",
        relay.log()
    );
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("devices: 10000"), "{out}");
}

#[test]
fn a_70000_character_heartbeat_field_is_cut_and_status_still_prints() {
    let broker = Broker::start();
    let relay = showing_heartbeats(broker.port);
    let status = relay.status_file();
    let huge = "1".repeat(70_000);
    let dev = device(broker.port, "longfield");
    dev.publish(
        "/device/ms500/cam-long/online",
        QoS::AtLeastOnce,
        false,
        format!(r#"{{"ip":"{huge}","network":"{huge}"}}"#),
    )
    .unwrap();
    let line = relay.log_line("heartbeat cam-long:", WAIT);
    assert!(line.len() < 400, "log line of {} bytes", line.len());
    assert!(line.contains("(70000 characters)"), "{line}");
    assert!(wait_until(WAIT, || std::fs::read_to_string(&status)
        .is_ok_and(|t| t.contains("cam-long"))));
    let (code, out, err) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cam-long"), "{out}");
    assert!(out.lines().all(|l| l.len() < 500), "{out}");
}
