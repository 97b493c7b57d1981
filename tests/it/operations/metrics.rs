//! METRICS_FILE for Prometheus: read with the Prometheus client's own
//! parser, its counters add up, with commands still queued too.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::support::{
    accepted_count, read_text, wait_until, Broker, Relay, Subscriber, COMMANDS, WAIT,
};

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
    let sub = Subscriber::new(broker.port, COMMANDS);
    let relay = Relay::start_with_status(broker.port, &[("METRICS_FILE", "{dir}/ms500.prom")]);
    let metrics_file = relay.path("ms500.prom");
    let mut s = relay.connect();
    // 3 good, 2 not JSON, 2 invalid commands.
    s.write_all(b"{\"type\":\"IMG\",\"unit\":\"m1\"}\nnot json at all\n{\"type\":\"IMG\",\"unit\":\"m2\"}\n").unwrap();
    s.write_all(b"{\"type\":\"FRS\",\"unit\":\"m3\"}\n]]]\n{\"type\":\"NOPE\",\"unit\":\"m4\"}\n{\"type\":\"RSR\",\"unit\":\"m5\"}\n").unwrap();
    assert_eq!(sub.collect(3, WAIT).len(), 3);
    relay.signal("USR1");
    assert!(wait_until(WAIT, || {
        let v = relay.status();
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
    let v = relay.status();
    assert_eq!(v["counters"]["received"], 7);
    assert_eq!(v["queue_depth"], 0);
    // The rejected command's log line says which one it was.
    relay.expect_log(r#"rejected command (type "NOPE", unit "m4") from"#, WAIT);
    // Written atomically: no temporary file left in the directory.
    let names: Vec<String> = std::fs::read_dir(relay.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
}

#[test]
fn the_counters_add_up_with_commands_still_queued() {
    let broker = Broker::unstarted("");
    let relay = Relay::start_with_status(broker.port, &[]);
    let mut s = relay.connect();
    s.write_all(b"{\"type\":\"IMG\",\"unit\":\"q1\"}{\"type\":\"IMG\",\"unit\":\"q2\"}garbage\n")
        .unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == 2));
    relay.signal("USR1");
    assert!(wait_until(WAIT, || relay.status()["counters"]["rejected"] == 1));
    let v = relay.status();
    let c = &v["counters"];
    assert_eq!(
        (c["received"].as_u64(), v["queue_depth"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
}
