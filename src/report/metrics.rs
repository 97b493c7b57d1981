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

/// One metric: its name (after `ms500_relay_`), type, help, and samples
/// (labels, value).
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, u64)>,
}

impl Metric {
    fn counter(name: &'static str, help: &'static str, value: u64) -> Metric {
        Metric {
            name,
            kind: "counter",
            help,
            samples: vec![(String::new(), value)],
        }
    }

    fn gauge(name: &'static str, help: &'static str, value: u64) -> Metric {
        Metric {
            kind: "gauge",
            ..Metric::counter(name, help, value)
        }
    }

    /// Its HELP and TYPE lines, then a line per sample.
    fn write(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP ms500_relay_{name} {}", self.help);
        let _ = writeln!(out, "# TYPE ms500_relay_{name} {}", self.kind);
        for (labels, value) in &self.samples {
            let _ = writeln!(out, "ms500_relay_{name}{labels} {value}");
        }
    }
}

/// The metrics text of `s`: every metric with its HELP and TYPE lines.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(2048);
    for (counted, value) in s.counters.snapshot() {
        Metric::counter(counted.metric, counted.help, value).write(&mut out);
    }
    for metric in queue_gauges(s).into_iter().chain(link_gauges(s)) {
        metric.write(&mut out);
    }
    for metric in backend_waits(s.counters) {
        metric.write(&mut out);
    }
    for metric in camera_metrics(s) {
        metric.write(&mut out);
    }
    out
}

/// Cameras and delivery at the camera (PROTOCOL.md §2.7).
fn camera_metrics(s: &Snapshot<'_>) -> [Metric; 6] {
    let c = s.counters;
    let states = s.devices.states;
    [
        Metric {
            samples: vec![
                ("{state=\"present\"}".into(), states[0] as u64),
                ("{state=\"unknown\"}".into(), states[1] as u64),
                ("{state=\"offline\"}".into(), states[2] as u64),
            ],
            ..Metric::gauge(
                "cameras",
                "Cameras known, by presence: present, unknown (not seen live since the relay lost sight of them) or offline.",
                0,
            )
        },
        Metric::gauge(
            "commands_unconfirmed",
            "Commands the broker took that their cameras have not confirmed yet (kept, and spooled, until they do).",
            c.unconfirmed.load(Relaxed),
        ),
        Metric::counter(
            "commands_confirmed_total",
            "Commands their cameras' heartbeats (or replies) showed they had.",
            c.confirmed.load(Relaxed),
        ),
        Metric {
            samples: crate::ops::counters::RESENT_REASONS
                .iter()
                .zip(&c.resent)
                .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n.load(Relaxed)))
                .collect(),
            ..Metric::counter(
                "commands_resent_total",
                "Commands published again to their camera, by why: reconnect, absence, reboot, unseen (the relay lost sight of it) or offline.",
                0,
            )
        },
        Metric::counter(
            "commands_unconfirmed_expired_total",
            "Published commands whose lifetime ran out before their camera confirmed them.",
            c.expired_unconfirmed.load(Relaxed),
        ),
        Metric {
            samples: vec![
                ("{end=\"waited\"}".into(), c.serial_waits.load(Relaxed)),
                ("{end=\"timeout\"}".into(), c.serial_timeouts.load(Relaxed)),
            ],
            ..Metric::counter(
                "serial_waits_total",
                "Commands that waited behind one that restarts their camera (SERIAL_AFTER), and waits that SERIAL_TIMEOUT ended.",
                0,
            )
        },
    ]
}

/// Backends that found every MAX_CONNECTIONS place taken (PROTOCOL.md §1).
fn backend_waits(c: &crate::ops::counters::Counters) -> [Metric; 2] {
    [
        Metric::counter(
            "connections_waited_total",
            "Backend connections that waited in the listen backlog for a MAX_CONNECTIONS place.",
            c.connections_waited.load(Relaxed),
        ),
        Metric::counter(
            "connections_refused_total",
            "Backend connections refused with an error line after waiting too long for a place.",
            c.connections_refused.load(Relaxed),
        ),
    ]
}

/// The queue, the hold and what became of commands that could not go out.
fn queue_gauges(s: &Snapshot<'_>) -> [Metric; 6] {
    let c = s.counters;
    [
        Metric::gauge(
            "queue_depth",
            "Commands received and not yet published, rejected or expired.",
            c.queued.load(Relaxed),
        ),
        Metric::gauge(
            "queue_bytes",
            "Bytes of commands held in memory.",
            c.queue_bytes.load(Relaxed),
        ),
        Metric::gauge(
            "commands_held",
            "Commands held for cameras (not published: the camera is offline, unknown, never seen, just back or restarting).",
            s.held.commands as u64,
        ),
        Metric::gauge(
            "held_bytes",
            "Bytes of the commands held for cameras or unconfirmed by them.",
            s.held.bytes as u64,
        ),
        Metric {
            samples: vec![
                (
                    "{reason=\"queued\"}".into(),
                    c.expired
                        .load(Relaxed)
                        .saturating_sub(c.expired_held.load(Relaxed)),
                ),
                ("{reason=\"held\"}".into(), c.expired_held.load(Relaxed)),
            ],
            ..Metric::counter(
                "commands_expired_by_reason_total",
                "Commands dropped after their lifetime, by where they waited: in the queue (broker away) or held for an offline camera.",
                0,
            )
        },
        Metric::counter(
            "commands_set_aside_total",
            "Commands the broker cannot take (larger than it accepts), dropped with an error (also in commands_rejected_total).",
            c.set_aside.load(Relaxed),
        ),
    ]
}

/// The broker links, the device table, the spool, the run and the build.
fn link_gauges(s: &Snapshot<'_>) -> [Metric; 8] {
    let c = s.counters;
    let online = s.devices.online as u64;
    let offline = (s.devices.total - s.devices.online) as u64;
    [
        Metric::gauge(
            "broker_connected",
            "1 while the connection commands are published on is up.",
            u64::from(c.broker_connected.load(Relaxed)),
        ),
        Metric::gauge(
            "device_link_subscribed",
            "1 while the connection heartbeats and replies arrive on holds its subscriptions.",
            u64::from(c.device_subscribed.load(Relaxed)),
        ),
        Metric::counter(
            "broker_reconnects_total",
            "Connections to a broker after the first one.",
            c.broker_connections.load(Relaxed).saturating_sub(1),
        ),
        Metric {
            samples: vec![
                ("{state=\"online\"}".into(), online),
                ("{state=\"offline\"}".into(), offline),
            ],
            ..Metric::gauge("devices", "Devices in the device table, by state.", 0)
        },
        Metric::gauge(
            "spool_bytes",
            "Size of SPOOL_FILE (0 without one).",
            c.spool_bytes.load(Relaxed),
        ),
        Metric::gauge(
            "spool_failing",
            "1 while SPOOL_FILE cannot be written (accepted commands are not kept across a restart).",
            u64::from(c.spool_failing_since_unix.load(Relaxed) > 0),
        ),
        Metric::gauge(
            "running",
            "1 while the relay runs; 0 in the last snapshot of a clean stop.",
            u64::from(!s.stopped),
        ),
        Metric {
            samples: vec![(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
            ..Metric::gauge("build_info", "Always 1; the version is in the label.", 0)
        },
    ]
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
            devices: &TableSnapshot {
                shown: vec![],
                total: 3,
                online: 2,
                forgotten: 0,
                states: [1, 1, 1],
            },
            held: Default::default(),
            stopped: false,
            config_file: None,
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
        assert_eq!(helped, 29);
    }

    #[test]
    fn the_metrics_come_in_the_documented_order() {
        let config = Config::default();
        let counters = Counters::default();
        let text = render(&Snapshot {
            config: &config,
            started: SystemTime::now(),
            now: SystemTime::now(),
            counters: &counters,
            broker: "127.0.0.1:1883".into(),
            devices: &TableSnapshot {
                shown: vec![],
                total: 0,
                online: 0,
                forgotten: 0,
                states: [0, 0, 0],
            },
            held: Default::default(),
            stopped: false,
            config_file: None,
        });
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ms500_relay_"))
            .collect();
        assert_eq!(
            names,
            [
                "commands_received_total counter",
                "commands_published_total counter",
                "commands_rejected_total counter",
                "commands_expired_total counter",
                "commands_cancelled_total counter",
                "replies_routed_total counter",
                "replies_dropped_total counter",
                "queue_depth gauge",
                "queue_bytes gauge",
                "commands_held gauge",
                "held_bytes gauge",
                "commands_expired_by_reason_total counter",
                "commands_set_aside_total counter",
                "broker_connected gauge",
                "device_link_subscribed gauge",
                "broker_reconnects_total counter",
                "devices gauge",
                "spool_bytes gauge",
                "spool_failing gauge",
                "running gauge",
                "build_info gauge",
                "connections_waited_total counter",
                "connections_refused_total counter",
                "cameras gauge",
                "commands_unconfirmed gauge",
                "commands_confirmed_total counter",
                "commands_resent_total counter",
                "commands_unconfirmed_expired_total counter",
                "serial_waits_total counter",
            ]
        );
    }
}
