//! A fleet's worth of backends and cameras, for behaviour (never speed: that
//! is `cargo bench`): one-shot backends past MAX_CONNECTIONS wait instead of
//! being dropped, single heartbeats stay out of the info log while one
//! summary line stands for them, and each silent camera is offline once.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use rumqttc::{Client, MqttOptions, QoS};

use crate::support::{Broker, Relay, Subscriber, WAIT};

/// A simulated camera fleet's connection to the broker: one client
/// publishing for many device ids.
fn fleet(broker: u16, name: &str) -> Client {
    let opts = MqttOptions::new(name, "127.0.0.1", broker);
    let (client, conn) = Client::new(opts, 256);
    crate::support::pump(conn);
    client
}

fn heartbeat(client: &Client, id: &str) {
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
fn twenty_bursts_of_32_one_shot_connections_at_default_settings_lose_no_command() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[]);
    relay.expect_ready();
    let (rounds, burst) = (20, 32);
    for round in 0..rounds {
        // The original backend: connect, send one command, close; 32 at
        // once, twice MAX_CONNECTIONS (16).
        let sent: Vec<_> = (0..burst)
            .map(|i| {
                let mut s = relay.connect();
                let n = round * burst + i;
                s.write_all(format!(r#"{{"type":"IMG","unit":"b{n}","id":{n}}}"#).as_bytes())
                    .unwrap();
                s
            })
            .collect();
        drop(sent);
    }
    let got = sub.collect(rounds * burst, WAIT);
    let ids: HashSet<u64> = got
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert_eq!(
        ids.len(),
        rounds * burst,
        "every command delivered once; log:\n{}",
        relay.log_tail(40)
    );
    assert!(
        !relay.log().contains("refused"),
        "nobody waited 10 s: {}",
        relay.log_tail(40)
    );
}

#[test]
fn heartbeats_are_debug_lines_and_one_summary_line_sums_them_up_at_info() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("DEVICE_SUMMARY_INTERVAL", "1")]);
    relay.expect_subscribed();
    let cams = fleet(broker.port, "fleet-info");
    for round in 0..3 {
        for i in 0..5 {
            heartbeat(&cams, &format!("cam-{i}"));
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
    heartbeat(&cams, "cam-9");
    debug.expect_log("heartbeat cam-9: ts=absent ip=10.0.0.7 net=wifi", WAIT);
}

#[test]
fn each_camera_of_a_fleet_gone_silent_is_offline_exactly_once() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("DEVICE_TIMEOUT", "2")]);
    relay.expect_subscribed();
    let cams = fleet(broker.port, "fleet-offline");
    for i in 0..8 {
        heartbeat(&cams, &format!("dark-{i}"));
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
    heartbeat(&cams, "dark-3");
    relay.expect_log("device dark-3 is back online", WAIT);
    relay.expect_log_count("device dark-3 offline", 2, WAIT);
}
