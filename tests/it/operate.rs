//! Operating it like mosquitto: a log file it rotates itself and reopens on
//! SIGHUP, signals that do not stop it, a retained online/offline state with
//! a last will, metrics for Prometheus whose counters add up, `status` as a
//! health check, and check-config refusing what the run would refuse.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::{
    accepted_count, read_json, read_text, run_bin, wait_until, Broker, Cutter, Message, Relay,
    Subscriber, TempDir, WAIT,
};

#[test]
fn sighup_reopens_the_log_file_and_the_relay_keeps_running() {
    let broker = Broker::start();
    let dir = TempDir::new("op-hup");
    let log = dir.path().join("relay.log");
    let log_s = log.to_string_lossy().into_owned();
    let mut relay = Relay::spawn(broker.port, &[("LOG_FILE", log_s.as_str())]);
    assert!(
        wait_until(WAIT, || read_text(&log).contains("listening on")),
        "{}",
        read_text(&log)
    );
    assert!(relay.log().is_empty(), "nothing on stderr: {}", relay.log());

    // logrotate moves the file away, then signals.
    let moved = dir.path().join("relay.log.old");
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
    let mut settings = vec![
        ("LOG_MAX_BYTES", "65536"),
        ("LOG_KEEP", "2"),
        ("LOG_LEVEL", "debug"),
    ];
    let mut launch = support::Launch::default();
    if named_by_the_watchdog {
        launch.env.push(("MS500_RELAY_LOG".into(), log_s.clone()));
    } else {
        settings.push(("LOG_FILE", log_s.as_str()));
    }
    let relay = Relay::spawn_with(broker.port, &settings, launch);
    assert!(wait_until(WAIT, || read_text(&log).contains("listening on")));
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
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

fn state_subscriber(broker: &Broker) -> Subscriber {
    Subscriber::new(broker.port, "/service/ms500-relay/+/state")
}

fn state_of(m: &Message) -> serde_json::Value {
    serde_json::from_slice(&m.payload).expect("state is JSON")
}

#[test]
fn after_a_lost_connection_the_relay_says_online_again_over_its_will() {
    let broker = Broker::start();
    let cutter = Cutter::new(broker.port);
    let sub = state_subscriber(&broker);
    let relay = Relay::start(cutter.port, &[("MQTT_CLIENT_ID", "gw-cut")]);
    let state = |m: Option<Message>| m.map(|m| state_of(&m)["state"].clone());
    assert_eq!(state(sub.recv(WAIT)), Some("online".into()));
    // The network drops the connection: the broker publishes the will...
    cutter.cut();
    assert_eq!(state(sub.recv(WAIT)), Some("offline".into()));
    // ...and the relay, connected again, replaces it.
    assert_eq!(state(sub.recv(WAIT)), Some("online".into()));
    let late = state_subscriber(&broker);
    assert_eq!(state(late.recv(WAIT)), Some("online".into()), "retained");
    drop(relay);
}

#[test]
fn the_state_topic_says_online_then_offline_on_a_clean_stop_and_by_the_will_after_kill_9() {
    let broker = Broker::start();
    let sub = state_subscriber(&broker);
    let mut relay = Relay::start(
        broker.port,
        &[("MQTT_CLIENT_ID", "gw-test-1"), ("MQTT_KEEPALIVE", "5")],
    );
    let online = sub.recv(WAIT).expect("online published");
    assert_eq!(online.topic, "/service/ms500-relay/gw-test-1/state");
    let v = state_of(&online);
    assert_eq!(v["state"], "online");
    assert_eq!(v["client_id"], "gw-test-1");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["pid"], relay.pid());
    assert!(v["started"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(String::from_utf8_lossy(&online.payload).starts_with(r#"{"state":"online""#));

    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let offline = sub.recv(WAIT).expect("offline on a clean stop");
    assert_eq!(state_of(&offline)["state"], "offline");
    // Retained: a newcomer learns it at once.
    let late = state_subscriber(&broker);
    assert_eq!(
        late.recv(WAIT).map(|m| state_of(&m)["state"].clone()),
        Some("offline".into())
    );

    // Killed: the broker publishes the last will.
    relay.relaunch();
    assert_eq!(
        sub.recv(WAIT).map(|m| state_of(&m)["state"].clone()),
        Some("online".into())
    );
    relay.crash();
    let will = sub.recv(WAIT).expect("the last will");
    assert_eq!(state_of(&will)["state"], "offline");
    let late = state_subscriber(&broker);
    assert_eq!(
        late.recv(WAIT).map(|m| state_of(&m)["state"].clone()),
        Some("offline".into())
    );
}

#[test]
fn an_empty_state_topic_publishes_nothing() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500-relay/#");
    let relay = Relay::start(broker.port, &[("STATE_TOPIC", "")]);
    relay.expect_connected();
    sub.assert_silent(Duration::from_millis(800));
}

/// Parses the metrics file with the Prometheus client's own parser
/// (scripts/test.sh installs prometheus-client): name{labels} -> value.
fn parse_metrics(path: &Path) -> Vec<(String, f64)> {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   assert family.documentation, family.name\n\
        \x20   for s in family.samples:\n\
        \x20       labels = ','.join('%s=%s' % kv for kv in sorted(s.labels.items()))\n\
        \x20       print('%s{%s} %s' % (s.name, labels, s.value))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the file ({}):\n{}",
        String::from_utf8_lossy(&out.stderr),
        read_text(path)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn metric(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
}

#[test]
fn metrics_parse_as_prometheus_text_and_the_counters_add_up() {
    let broker = Broker::start();
    let dir = TempDir::new("op-metrics");
    let metrics_file = dir.path().join("ms500.prom");
    let status_file = dir.path().join("status.json");
    let (m, st) = (
        metrics_file.to_string_lossy().into_owned(),
        status_file.to_string_lossy().into_owned(),
    );
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(
        broker.port,
        &[
            ("METRICS_FILE", m.as_str()),
            ("STATUS_FILE", st.as_str()),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    let mut s = relay.connect();
    // 3 good, 2 not JSON, 2 invalid commands.
    s.write_all(b"{\"type\":\"IMG\",\"unit\":\"m1\"}\nnot json at all\n{\"type\":\"IMG\",\"unit\":\"m2\"}\n").unwrap();
    s.write_all(b"{\"type\":\"FRS\",\"unit\":\"m3\"}\n]]]\n{\"type\":\"NOPE\",\"unit\":\"m4\"}\n{\"type\":\"RSR\",\"unit\":\"m5\"}\n").unwrap();
    assert_eq!(sub.collect(3, WAIT).len(), 3);
    relay.signal("USR1");
    assert!(wait_until(WAIT, || {
        let v = read_json(&status_file);
        v["counters"]["published"] == 3 && v["counters"]["rejected"] == 4
    }));
    // The metrics file is rewritten on its own schedule: wait for the counts.
    assert!(wait_until(WAIT, || {
        let t = read_text(&metrics_file);
        t.contains("ms500_relay_commands_published_total 3\n")
            && t.contains("ms500_relay_commands_rejected_total 4\n")
    }));
    let metrics = parse_metrics(&metrics_file);
    let received = metric(&metrics, "ms500_relay_commands_received_total{}");
    let published = metric(&metrics, "ms500_relay_commands_published_total{}");
    let rejected = metric(&metrics, "ms500_relay_commands_rejected_total{}");
    let expired = metric(&metrics, "ms500_relay_commands_expired_total{}");
    let queued = metric(&metrics, "ms500_relay_queue_depth{}");
    assert_eq!(
        (received, published, rejected, expired, queued),
        (7.0, 3.0, 4.0, 0.0, 0.0)
    );
    assert_eq!(received, published + rejected + expired + queued);
    assert_eq!(metric(&metrics, "ms500_relay_broker_connected{}"), 1.0);
    assert_eq!(
        metric(&metrics, "ms500_relay_broker_reconnects_total{}"),
        0.0
    );
    assert_eq!(metric(&metrics, "ms500_relay_devices{state=online}"), 0.0);
    assert_eq!(metric(&metrics, "ms500_relay_devices{state=offline}"), 0.0);
    assert_eq!(metric(&metrics, "ms500_relay_spool_bytes{}"), 0.0);
    assert_eq!(metric(&metrics, "ms500_relay_queue_bytes{}"), 0.0);
    assert_eq!(metric(&metrics, "ms500_relay_replies_routed_total{}"), 0.0);
    assert_eq!(metric(&metrics, "ms500_relay_replies_dropped_total{}"), 0.0);
    let build = format!(
        "ms500_relay_build_info{{version={}}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&metrics, &build), 1.0);
    // The same numbers in STATUS_FILE.
    let v = read_json(&status_file);
    assert_eq!(v["counters"]["received"], 7);
    assert_eq!(v["queue_depth"], 0);
    // The rejected command's log line says which one it was.
    relay.expect_log(r#"rejected command (type "NOPE", unit "m4") from"#, WAIT);
    // Written atomically: no temporary file left in the directory.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
}

#[test]
fn the_counters_add_up_with_commands_still_queued() {
    let broker = Broker::unstarted("");
    let dir = TempDir::new("op-queued");
    let status_file = dir.path().join("status.json");
    let st = status_file.to_string_lossy().into_owned();
    let relay = Relay::start(
        broker.port,
        &[("STATUS_FILE", st.as_str()), ("STATUS_INTERVAL", "1")],
    );
    let mut s = relay.connect();
    s.write_all(b"{\"type\":\"IMG\",\"unit\":\"q1\"}{\"type\":\"IMG\",\"unit\":\"q2\"}garbage\n")
        .unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == 2));
    relay.signal("USR1");
    assert!(wait_until(WAIT, || read_json(&status_file)["counters"]
        ["rejected"]
        == 1));
    let v = read_json(&status_file);
    let c = &v["counters"];
    assert_eq!(
        (c["received"].as_u64(), v["queue_depth"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
}

#[test]
fn status_is_a_health_check_through_a_broker_outage() {
    let mut broker = Broker::start();
    let dir = TempDir::new("op-health");
    let status_file = dir.path().join("status.json");
    let st = status_file.to_string_lossy().into_owned();
    let mut relay = Relay::start(
        broker.port,
        &[
            ("STATUS_FILE", st.as_str()),
            ("STATUS_INTERVAL", "1"),
            ("MQTT_KEEPALIVE", "5"),
        ],
    );
    let conf = relay.conf.to_string_lossy().into_owned();
    relay.expect_connected();
    assert!(wait_until(WAIT, || read_json(&status_file)["broker"]
        ["connected"]
        == true));
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}");

    broker.stop();
    // Away for less than 2 x keepalive: still healthy (a reconnect is normal).
    assert!(wait_until(WAIT, || read_json(&status_file)["broker"]
        ["connected"]
        == false));
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}");
    // Longer: its own exit code, 3.
    assert!(wait_until(Duration::from_secs(20), || run_bin(
        &["status", "-c", &conf],
        None
    )
    .0 == 3));
    let (_, out, _) = run_bin(&["status", "-c", &conf], None);
    assert!(
        out.contains("NOT connected for") && out.contains("2 x MQTT_KEEPALIVE"),
        "{out}"
    );
    let (code, raw, _) = run_bin(&["status", "--json", "-c", &conf], None);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&raw).expect("--json prints the snapshot");
    assert_eq!(v["broker"]["connected"], false);
    assert!(v["broker"]["down_since_unix"].is_u64());

    broker.restart();
    assert!(wait_until(Duration::from_secs(40), || run_bin(
        &["status", "-c", &conf],
        None
    )
    .0 == 0));
    relay.kill();
    // Stopped: the snapshot goes stale, exit 1.
    std::fs::remove_file(&status_file).ok();
    assert_eq!(run_bin(&["status", "-c", &conf], None).0, 1);
}

#[test]
fn check_config_refuses_what_the_run_would_refuse() {
    let dir = TempDir::new("op-check");
    let missing = dir.path().join("no-such-dir");
    // The run-time files' directories are created at start (operator.rs);
    // the spool's is persistent storage that must be mounted, not made.
    let conf = dir.path().join("relay.conf");
    let spool = missing.join("file");
    std::fs::write(&conf, format!("SPOOL_FILE = {}\n", spool.display())).unwrap();
    let conf_s = conf.to_string_lossy().into_owned();
    let (code, _, err) = run_bin(&["check-config", "-c", &conf_s], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SPOOL_FILE") && err.contains("does not exist"),
        "{err}"
    );
    // And the run refuses it the same way, before anything else.
    let (code, _, err) = run_bin(&["-c", &conf_s], None);
    assert_eq!(code, 2, "{err}");
    let conf = dir.path().join("relay.conf");
    std::fs::write(&conf, "SOCKET_HOST = 0.0.0.0.0\n").unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SOCKET_HOST"), "{err}");
}

#[test]
fn a_second_instance_on_a_taken_port_leaves_the_first_ones_status_file_alone() {
    let broker = Broker::start();
    let dir = TempDir::new("op-second");
    let status_file = dir.path().join("status.json");
    let st = status_file.to_string_lossy().into_owned();
    let first = Relay::start(
        broker.port,
        &[("STATUS_FILE", st.as_str()), ("STATUS_INTERVAL", "60")],
    );
    // Its own snapshots settle once both links are up (each state change
    // writes one); from then on only STATUS_INTERVAL (60 s) rewrites it.
    first.expect_ready();
    assert!(wait_until(WAIT, || {
        let v = read_json(&status_file);
        v["pid"] == first.pid()
            && v["broker"]["connected"] == true
            && v["device_link"]["subscribed"] == true
    }));
    let before = std::fs::read(&status_file).unwrap();
    // The same relay.conf again: the relay running it is named (exit 3).
    let (code, _, err) = run_bin(&["-c", first.conf.to_str().unwrap()], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    // A copy of it (another configuration) finds the port taken.
    let copy = dir.path().join("copy.conf");
    std::fs::copy(&first.conf, &copy).unwrap();
    let (code, _, err) = run_bin(&["-c", copy.to_str().unwrap()], None);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        std::fs::read(&status_file).unwrap(),
        before,
        "untouched by the second instance"
    );
    assert_eq!(read_json(&status_file)["pid"], first.pid());
}

#[test]
fn the_default_client_id_is_stable_and_two_relays_on_one_host_set_their_own() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500-relay/+/state");
    let mut relay = Relay::start(broker.port, &[]);
    let first = sub.recv(WAIT).expect("state").topic;
    assert!(
        first.starts_with("/service/ms500-relay/ms500-relay-"),
        "{first}"
    );
    assert!(
        !first.contains(&format!("-{}/", relay.pid())),
        "no pid in it: {first}"
    );
    relay.relaunch();
    let again = sub.recv(WAIT).expect("state").topic;
    assert_eq!(first, again, "the same id after a restart");
}
