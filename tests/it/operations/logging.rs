//! The log: a file it rotates itself and reopens on SIGHUP, bounded in
//! size and lines per minute whatever floods in, never a torn line on a
//! full disk, a rotation that cannot rename, syslog out of reach, or a
//! read-only disk.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use rumqttc::QoS;

use crate::support;
use crate::support::{
    broker_and_relay, device, expect_all, numbered_commands, padded_commands, pump, read_lines,
    read_text, relay_with_subscriber, wait_until, Broker, Relay, Subscriber, TempDir, Tmpfs,
    ANY_COMMAND, COMMANDS, WAIT,
};

/// The relay's log in a file in its own directory ([`Relay::path`]).
const LOG_FILE: (&str, &str) = ("LOG_FILE", "{dir}/relay.log");

/// The log in file `log`, rotated at 64 KiB, two old files kept.
fn rotated_at_64_kib(log: &str) -> [(&str, &str); 3] {
    [
        ("LOG_FILE", log),
        ("LOG_MAX_BYTES", "65536"),
        ("LOG_KEEP", "2"),
    ]
}

#[test]
fn sighup_reopens_the_log_file_and_the_relay_keeps_running() {
    let broker = Broker::start();
    let mut relay = Relay::spawn(broker.port, &[LOG_FILE]);
    let log = relay.path("relay.log");
    assert!(
        wait_until(WAIT, || read_text(&log).contains("listening on")),
        "{}",
        read_text(&log)
    );
    assert!(relay.log().is_empty(), "nothing on stderr: {}", relay.log());

    // logrotate moves the file away, then signals.
    let moved = relay.path("relay.log.old");
    std::fs::rename(&log, &moved).unwrap();
    relay.signal("HUP");
    assert!(
        wait_until(WAIT, || read_text(&log)
            .contains("SIGHUP: log file reopened")),
        "{}",
        read_text(&moved)
    );
    relay
        .connect()
        .write_all(br#"{"type":"IMG","unit":"hup"}"#)
        .unwrap();
    assert!(wait_until(WAIT, || read_text(&log)
        .contains("accepted IMG for unit hup")));
    assert!(
        !read_text(&moved).contains("accepted IMG"),
        "new lines go to the new file"
    );

    // SIGUSR1 is not fatal either.
    relay.signal("USR1");
    assert!(wait_until(WAIT, || read_text(&log)
        .contains("SIGUSR1: writing the status snapshot now")));
    assert!(
        relay.wait_exit(Duration::from_millis(100)).is_none(),
        "SIGHUP/SIGUSR1 stopped it"
    );
    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(read_text(&log).contains("stopped"), "{}", read_text(&log));
}

#[test]
fn a_log_flood_at_debug_stays_within_keep_plus_one_files_of_max_bytes() {
    log_flood_stays_within_bounds(false);
}

/// Without LOG_FILE, a relay the watchdog starts writes the file the
/// watchdog names ($MS500_RELAY_LOG) itself, rotated the same way.
#[test]
fn the_watchdogs_log_file_is_rotated_like_log_file() {
    log_flood_stays_within_bounds(true);
}

fn log_flood_stays_within_bounds(named_by_the_watchdog: bool) {
    let broker = Broker::start();
    let dir = TempDir::new("op-flood");
    let log = dir.path().join("relay.log");
    let log_s = log.to_string_lossy().into_owned();
    let mut settings = rotated_at_64_kib(&log_s).to_vec();
    settings.push(("LOG_LEVEL", "debug"));
    let mut launch = support::Launch::default();
    if named_by_the_watchdog {
        // No LOG_FILE: the watchdog's variable names the file.
        settings.retain(|(key, _)| *key != "LOG_FILE");
        launch.env.push(("MS500_RELAY_LOG".into(), log_s.clone()));
    }
    let relay = Relay::spawn_with(broker.port, &settings, launch);
    assert!(wait_until(WAIT, || read_text(&log).contains("listening on")));
    let sub = Subscriber::new(broker.port, COMMANDS);
    let mut s = relay.connect();
    let n = 3000;
    let burst: String = (0..n)
        .map(|i| {
            format!(
                r#"{{"type":"CFG","unit":"flood","id":{i},"configs":{{"k":"{}"}}}}"#,
                "v".repeat(100)
            )
        })
        .collect();
    s.write_all(burst.as_bytes()).unwrap();
    assert_eq!(sub.collect(n, Duration::from_secs(10)).len(), n);
    // The last command's debug line is written (in the newest file, or the
    // one just rotated): the flood is all in the files.
    let last = format!("id {} (", n - 1);
    assert!(wait_until(WAIT, || {
        read_text(&log).contains(&last)
            || read_text(&dir.path().join("relay.log.1")).contains(&last)
    }));
    let mut total = 0;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("relay.log") {
            let size = entry.metadata().unwrap().len();
            assert!(size <= 65536, "{name} is {size} bytes");
            total += size;
            names.push(name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["relay.log", "relay.log.1", "relay.log.2"],
        "rotated, two kept"
    );
    assert!(total <= 3 * 65536, "{total} bytes of log");
    let newest = read_text(&log);
    assert!(
        newest
            .lines()
            .all(|l| l.len() > 25 && l.as_bytes()[4] == b'-'),
        "whole lines only"
    );
    drop(relay);
}

/// All of LOG_FILE and its rotated files, oldest first.
fn whole_log(log: &Path) -> String {
    let mut text = String::new();
    for n in [".2", ".1", ""] {
        let mut path = log.as_os_str().to_owned();
        path.push(n);
        text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    text
}

/// Finding 9: 25,000 heartbeats in a few seconds do not rotate the
/// history away: per-heartbeat lines are debug, state changes are
/// still logged.
#[test]
fn a_heartbeat_flood_keeps_the_log_history() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, ANY_COMMAND);
    let relay = Relay::spawn(broker.port, &rotated_at_64_kib("{dir}/relay.log"));
    let log = relay.path("relay.log");
    assert!(wait_until(WAIT, || whole_log(&log).contains("device link subscribed")));
    let mut backend = relay.connect();
    backend
        .write_all(br#"{"type":"FRS","unit":"cam-01","reset_level":1}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some());
    let mut opts = rumqttc::MqttOptions::new("hb-flooder", "127.0.0.1", broker.port);
    opts.set_inflight(100);
    let (device, conn) = rumqttc::Client::new(opts, 1024);
    pump(conn);
    let beat = br#"{"ip":"10.0.0.7","network":"wifi","cpu_temp":47.5,"video_fps":15.0}"#;
    for _ in 0..25_000 {
        device
            .publish(
                "/device/ms500/cam-hb/online",
                QoS::AtMostOnce,
                false,
                beat.to_vec(),
            )
            .unwrap();
    }
    // Same client, same QoS: seen after the flood. A new device is a state change.
    device
        .publish(
            "/device/ms500/flood-end/online",
            QoS::AtMostOnce,
            false,
            beat.to_vec(),
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || whole_log(&log)
            .contains("device flood-end online")),
        "the state change is logged"
    );
    let text = whole_log(&log);
    assert!(
        text.contains("accepted FRS for unit cam-01"),
        "history kept"
    );
    assert!(text.contains("device cam-hb online"), "{}", text.len());
    // Single heartbeats are debug lines (issue 25): none at info.
    let beats = text.matches("heartbeat cam-hb:").count();
    assert_eq!(beats, 0, "{beats} heartbeat lines");
}

/// Finding 10: directories planted at LOG_FILE.1 and .2: the log goes on
/// in LOG_FILE, truncated, and says so once.
#[test]
fn a_rotation_that_cannot_rename_keeps_logging() {
    let broker = Broker::start();
    let dir = TempDir::new("rotate-blocked");
    let log = dir.path().join("relay.log");
    for n in [1, 2] {
        std::fs::create_dir_all(dir.path().join(format!("relay.log.{n}/kept"))).unwrap();
    }
    let log_arg = log.to_string_lossy().into_owned();
    let relay = Relay::spawn(broker.port, &rotated_at_64_kib(&log_arg));
    let read = || read_text(&log);
    assert!(wait_until(WAIT, || read().contains("device link subscribed")));
    let mut backend = relay.connect();
    // One "accepted" line per command: 1200 of them fill 64 KiB twice over.
    let sub = Subscriber::new(broker.port, ANY_COMMAND);
    for i in 0..1200 {
        backend
            .write_all(
                format!(r#"{{"type":"IMG","unit":"cam-{i:04}-{}"}}"#, "u".repeat(60)).as_bytes(),
            )
            .unwrap();
    }
    assert_eq!(sub.collect(1200, Duration::from_secs(60)).len(), 1200);
    backend
        .write_all(br#"{"type":"IMG","unit":"the-last-one"}"#)
        .unwrap();
    assert!(
        wait_until(WAIT, || read()
            .contains("accepted IMG for unit the-last-one")),
        "lines after the failed rotation are written"
    );
    assert!(dir.path().join("relay.log.1/kept").is_dir());
    relay.expect_log("cannot rotate the log", WAIT);
    assert_eq!(
        relay.log().matches("cannot rotate the log").count(),
        1,
        "said once"
    );
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 65536, "{size}");
    let _ = relay;
}

#[test]
fn floods_of_remote_input_are_logged_within_a_budget() {
    let (broker, relay) = broker_and_relay(&[]);
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

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_full_log_disk_loses_whole_lines_and_says_how_many_afterwards() {
    let broker = Broker::start();
    let fs = Tmpfs::mount(256, false);
    let log = fs.dir.join("relay.log");
    let relay = Relay::spawn(
        broker.port,
        &[
            ("LOG_FILE", &log.to_string_lossy()),
            ("LOG_MAX_BYTES", "16777216"),
        ],
    );
    assert!(wait_until(WAIT, || read_text(&log).contains("connected to broker")));
    fs.fill_leaving(8);
    let mut backend = relay.connect();
    backend
        .write_all(padded_commands("full", 400, 40).as_bytes())
        .unwrap();
    // The relay writes the log in batches at most 200 ms apart: the burst
    // is logged (or lost) within a second.
    std::thread::sleep(Duration::from_secs(1));
    fs.free();
    backend
        .write_all(br#"{"type":"IMG","unit":"after-full"}"#)
        .unwrap();
    assert!(
        wait_until(WAIT, || read_text(&log).contains("unit after-full")),
        "{}",
        relay.log()
    );
    let text = read_text(&log);
    assert!(text.contains("log lines were lost"), "{text}");
    for line in text.lines() {
        let level = line.get(25..30).unwrap_or("");
        assert!(
            line.starts_with("20") && ["INFO ", "WARN ", "ERROR", "DEBUG"].contains(&level),
            "a torn line: {line:?}"
        );
    }
}

/// The flash that holds the log, status and metrics turned read-only (ext4
/// errors=remount-ro): the relay still starts and serves, the log on
/// stderr, the failing files reported.
#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_read_only_disk_under_log_status_and_metrics_does_not_stop_the_start() {
    let fs = Tmpfs::mount(64, true);
    let at = |name: &str| fs.dir.join(name).to_string_lossy().into_owned();
    let (log, status, metrics) = (at("relay.log"), at("status.json"), at("relay.prom"));
    let (_broker, relay, sub) = relay_with_subscriber(
        COMMANDS,
        &[
            ("LOG_FILE", log.as_str()),
            ("STATUS_FILE", status.as_str()),
            ("METRICS_FILE", metrics.as_str()),
        ],
    );
    relay.expect_log("cannot be written", WAIT);
    relay.expect_log("cannot write STATUS_FILE", WAIT);
    let mut s = relay.connect();
    s.write_all(numbered_commands(0..100).as_bytes()).unwrap();
    expect_all(
        &sub,
        100,
        Duration::from_secs(5),
        "read-only log disk",
        &relay,
    );
    assert!(
        relay.log().contains("accepted IMG"),
        "the log went to stderr"
    );
}

#[test]
fn syslog_out_of_reach_falls_back_instead_of_exiting() {
    let (_broker, relay) = broker_and_relay(&[("LOG_SYSLOG", "true")]);
    if !std::path::Path::new("/dev/log").exists() {
        relay.expect_log("cannot reach syslog at /dev/log", WAIT);
        relay.expect_log("trying syslog again every 10 s", WAIT);
    }
    relay.expect_connected();
}
