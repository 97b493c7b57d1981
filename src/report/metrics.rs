//! `METRICS_FILE`: the status snapshot's numbers in the Prometheus text
//! format, for node_exporter's textfile collector. Written by the main
//! thread with every status snapshot, atomically (a temporary file in the
//! same directory, then rename), so the collector never reads half a file.
//! Rendering is pure.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use crate::ops::files;
use crate::report::status::Snapshot;

/// The metrics text of `s`: every metric with its HELP and TYPE lines.
pub fn render(s: &Snapshot<'_>) -> String {
    let c = s.counters;
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP ms500_relay_{name} {help}");
        let _ = writeln!(out, "# TYPE ms500_relay_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "ms500_relay_{name}{labels} {value}");
        }
    };
    let counters = c.snapshot();
    let counter = |key: &str| {
        counters
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, v)| *v)
    };
    metric(
        "commands_received_total",
        "counter",
        "JSON values read from backends (valid or not), and commands replayed from the spool.",
        &[("", counter("received"))],
    );
    metric(
        "commands_published_total",
        "counter",
        "Commands the broker acknowledged (QoS 1) or took (QoS 0).",
        &[("", counter("published"))],
    );
    metric(
        "commands_rejected_total",
        "counter",
        "Values refused: not JSON, not a command, or a rule broken.",
        &[("", counter("rejected"))],
    );
    metric(
        "commands_expired_total",
        "counter",
        "Commands dropped after COMMAND_TTL.",
        &[("", counter("expired"))],
    );
    metric(
        "replies_routed_total",
        "counter",
        "Device replies written to the backend connection that asked.",
        &[("", counter("replies_routed"))],
    );
    metric(
        "replies_dropped_total",
        "counter",
        "Device replies with no route here, or that a backend did not read in time.",
        &[("", counter("replies_dropped"))],
    );
    metric(
        "queue_depth",
        "gauge",
        "Commands received and not yet published, rejected or expired.",
        &[("", c.queued.load(Relaxed))],
    );
    metric(
        "queue_bytes",
        "gauge",
        "Bytes of commands held in memory.",
        &[("", c.queue_bytes.load(Relaxed))],
    );
    metric(
        "broker_connected",
        "gauge",
        "1 while the connection commands are published on is up.",
        &[("", u64::from(c.broker_connected.load(Relaxed)))],
    );
    metric(
        "broker_reconnects_total",
        "counter",
        "Connections to a broker after the first one.",
        &[("", c.broker_connections.load(Relaxed).saturating_sub(1))],
    );
    let online = s.devices.online as u64;
    let offline = (s.devices.total - s.devices.online) as u64;
    metric(
        "devices",
        "gauge",
        "Devices in the device table, by state.",
        &[
            ("{state=\"online\"}", online),
            ("{state=\"offline\"}", offline),
        ],
    );
    metric(
        "spool_bytes",
        "gauge",
        "Size of SPOOL_FILE (0 without one).",
        &[("", c.spool_bytes.load(Relaxed))],
    );
    let version = format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    metric(
        "build_info",
        "gauge",
        "Always 1; the version is in the label.",
        &[(version.as_str(), 1)],
    );
    out
}

/// Replaces `path` with the metrics of `s`.
pub fn write(path: &Path, s: &Snapshot<'_>) -> std::io::Result<()> {
    files::replace(path, render(s).as_bytes(), files::STATUS_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::devices::table::TableSnapshot;
    use crate::ops::counters::Counters;
    use std::time::SystemTime;

    #[test]
    fn every_metric_has_help_and_type_and_a_number() {
        let config = Config::default();
        let counters = Counters::default();
        Counters::add(&counters.received);
        Counters::add(&counters.received);
        Counters::add(&counters.rejected);
        counters.queued.store(1, Relaxed);
        let text = render(&Snapshot {
            config: &config,
            started: SystemTime::now(),
            now: SystemTime::now(),
            counters: &counters,
            broker: "127.0.0.1:1883".into(),
            devices: TableSnapshot {
                shown: vec![],
                total: 3,
                online: 2,
                forgotten: 0,
            },
        });
        assert!(
            text.contains("ms500_relay_commands_received_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("ms500_relay_devices{state=\"offline\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("ms500_relay_build_info{version=\""), "{text}");
        let mut helped = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ms500_relay_") {
                helped += 1;
                let name = rest.split(' ').next().unwrap();
                assert!(
                    text.contains(&format!("# TYPE ms500_relay_{name} ")),
                    "{name}"
                );
            } else if !line.starts_with('#') {
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
        assert_eq!(helped, 13);
    }
}
