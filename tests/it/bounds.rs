//! Memory, files and logs stay bounded whatever the input: each bound driven
//! by the case that broke it, with peak RSS read from /proc.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{
    accepted_count, closed_by_peer, publish, read_lines, run_bin, wait_until, Broker, Relay,
    Subscriber, TempDir, WAIT,
};
use rumqttc::{Client, MqttOptions, QoS};

/// The goal under any input, with the default settings.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
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

/// A device-side MQTT client (large packets allowed) and a thread polling it.
fn device(broker: u16, name: &str) -> Client {
    let mut opts = MqttOptions::new(name, "127.0.0.1", broker);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_inflight(100);
    let (client, conn) = Client::new(opts, 256);
    crate::support::pump(conn);
    client
}

#[test]
fn broker_away_and_commands_of_64_kb_the_queue_stays_within_its_byte_budget() {
    // The subscriber's session outlives the broker's absence, so it misses
    // nothing the relay sends the moment the broker is back.
    let state = TempDir::new("bounds-persist");
    let mut broker = Broker::start_with(&Broker::persistent_config(state.path()));
    let sub = Subscriber::with_session(
        broker.port,
        "/service/ms500/+/socket",
        Some(&format!("bounds-{}", std::process::id())),
    );
    broker.terminate();
    let relay = Relay::start(broker.port, &[]);
    let blob = "b".repeat(64_000);
    let n = 2000;
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            for i in 0..n {
                let cmd = format!(
                    r#"{{"type":"CFG","unit":"big","id":{i},"configs":{{"blob":"{blob}"}}}}"#
                );
                if s.write_all(cmd.as_bytes()).is_err() {
                    break;
                }
            }
            s
        })
    };
    // The relay takes what QUEUE_MAX_BYTES (16 MiB) allows, then stops reading.
    let mut last = 0;
    assert!(wait_until(WAIT, || {
        let now = accepted_count(&relay);
        let settled = now > 0 && now == last;
        last = now;
        // Time is the test: "stopped reading" shows only as a count that
        // stays put between two looks 300 ms apart.
        std::thread::sleep(Duration::from_millis(300));
        settled
    }));
    let held = accepted_count(&relay);
    assert!((240..=300).contains(&held), "{held} commands of 64 KB held");
    let peak = peak_rss_kib(relay.pid());
    println!("held {held} commands of 64 KB; peak RSS {peak} KiB");
    assert!(peak <= RSS_LIMIT_KIB, "peak RSS {peak} KiB");

    // Nothing is lost: the backend waited, and everything goes out when the broker is back.
    broker.restart();
    let mut got = 0;
    while got < n && sub.recv(Duration::from_secs(10)).is_some() {
        got += 1;
    }
    assert_eq!(got, n, "log tail:\n{}", relay.log_tail(20));
    drop(sender.join());
    let peak = peak_rss_kib(relay.pid());
    assert!(
        peak <= RSS_LIMIT_KIB,
        "peak RSS {peak} KiB after delivering {n} x 64 KB"
    );
}

#[test]
fn a_backend_that_never_reads_its_replies_costs_its_budget_and_is_closed_after_5_s() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[]);
    let mut backend = relay.connect();
    backend
        .write_all(br#"{"type":"SCS","unit":"cam-big"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-big", WAIT);
    let dev = device(broker.port, "replier");
    let started = Instant::now();
    for _ in 0..300 {
        dev.publish(
            "/device/ms500/cam-big/socket_reply",
            QoS::AtLeastOnce,
            false,
            vec![b'r'; 1_000_000],
        )
        .unwrap();
    }
    // The backend reads nothing: at most 1 MiB waits for it, the rest is
    // dropped, and the write that cannot complete closes it after 5 s.
    relay.expect_log(
        "did not read for 5 s: closing the connection",
        Duration::from_secs(30),
    );
    println!("closed {:?} after the replies started", started.elapsed());
    assert!(closed_by_peer(&mut backend, Duration::from_secs(5)));
    let peak = peak_rss_kib(relay.pid());
    println!("peak RSS {peak} KiB");
    assert!(peak <= RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    let log = relay.log();
    assert!(
        log.matches("is not reading: dropped device reply").count() <= 1,
        "one warn line per 1000 drops"
    );
}

#[test]
fn a_hundred_thousand_devices_stay_within_max_devices_and_the_status_file_stays_small() {
    let broker = Broker::start();
    let dir = TempDir::new("bounds-devices");
    let status = dir.path().join("status.json");
    let status_str = status.to_string_lossy().into_owned();
    let relay = Relay::start(
        broker.port,
        &[
            ("STATUS_FILE", status_str.as_str()),
            ("STATUS_INTERVAL", "1"),
            ("LOG_LEVEL", "warn"),
        ],
    );
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
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("devices: 10000"), "{out}");
}

#[test]
fn a_70000_character_heartbeat_field_is_cut_and_status_still_prints() {
    let broker = Broker::start();
    let dir = TempDir::new("bounds-field");
    let status = dir.path().join("status.json");
    let status_str = status.to_string_lossy().into_owned();
    let relay = Relay::start(
        broker.port,
        &[
            ("LOG_LEVEL", "debug"),
            ("STATUS_FILE", status_str.as_str()),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    relay.expect_subscribed();
    let huge = "1".repeat(70_000);
    let dev = device(broker.port, "longfield");
    dev.publish(
        "/device/ms500/cam-long/online",
        QoS::AtLeastOnce,
        false,
        format!(r#"{{"ip":"{huge}","network":"{huge}"}}"#),
    )
    .unwrap();
    relay.expect_log("heartbeat cam-long:", WAIT);
    let line = relay
        .log()
        .lines()
        .find(|l| l.contains("heartbeat cam-long:"))
        .unwrap()
        .to_string();
    assert!(line.len() < 400, "log line of {} bytes", line.len());
    assert!(line.contains("(70000 characters)"), "{line}");
    assert!(wait_until(WAIT, || std::fs::read_to_string(&status)
        .is_ok_and(|t| t.contains("cam-long"))));
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cam-long"), "{out}");
    assert!(out.lines().all(|l| l.len() < 500), "{out}");
}

#[test]
fn floods_of_remote_input_are_logged_within_a_budget() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[]);
    relay.expect_subscribed();
    let dev = device(broker.port, "noisy");
    for i in 0..50 {
        dev.publish(
            format!("/device/ms500/odd-{i}/online"),
            QoS::AtLeastOnce,
            false,
            b"not json".to_vec(),
        )
        .unwrap();
    }
    for i in 0..2000 {
        dev.publish(
            format!("/device/ms500/nobody-{i}/socket_reply"),
            QoS::AtLeastOnce,
            false,
            b"{}".to_vec(),
        )
        .unwrap();
    }
    let mut s = relay.connect();
    for _ in 0..50 {
        s.write_all(b"{\"type\":\"NOPE\",\"unit\":\"x\"}\n")
            .unwrap();
    }
    // The ends of the floods: a command after the 50 refused ones, and a
    // reply after the 2000 unrouted ones (same publisher, same QoS, so in
    // order); each is seen only once everything before it was.
    s.write_all(br#"{"type":"SCS","unit":"flood-end"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit flood-end", WAIT);
    dev.publish(
        "/device/ms500/flood-end/socket_reply",
        QoS::AtLeastOnce,
        false,
        b"{}".to_vec(),
    )
    .unwrap();
    assert_eq!(read_lines(&s, 1, WAIT), vec!["{}".to_string()]);
    // MAX_CONNECTIONS (16) held open: 30 more peers wait in the backlog,
    // then are refused together with a line each, logged in one line.
    let held: Vec<TcpStream> = (0..15).map(|_| relay.connect()).collect();
    relay.expect_backends_admitted(16);
    let waiting: Vec<TcpStream> = (0..30).map(|_| relay.connect()).collect();
    for c in &waiting {
        let line = read_lines(c, 1, WAIT + Duration::from_secs(10));
        assert!(line[0].contains("MAX_CONNECTIONS"), "{line:?}");
    }
    drop(held);
    let log = relay.log();
    assert!(log.matches("WARN  refused ").count() <= 2, "{log}");
    assert_eq!(
        log.matches("odd heartbeat from device").count(),
        10,
        "{log}"
    );
    assert_eq!(log.matches("WARN  rejected command").count(), 10, "{log}");
    assert!(
        !log.contains("no backend route"),
        "unrouted replies are not warnings:\n{log}"
    );
}
