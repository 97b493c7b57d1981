//! Relay-wide counters and gauges, shared by every thread through an `Arc`
//! and read by the status file and the metrics file. [`COUNTED`] names the
//! counted events once, for the status file, the `status` command and the
//! metrics alike. Relaxed atomics: each is a number on its own. Each number
//! is a [`Counter`], a u64 also on targets without 64-bit atomics.

mod counter;

pub use counter::Counter;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

#[derive(Default, Debug)]
pub struct Counters {
    /// Set by the publish link on CONNACK, cleared when the link drops.
    pub broker_connected: AtomicBool,
    /// Connections the publish link has made (the first one included).
    pub broker_connections: Counter,
    /// Since when (Unix seconds) the publish link has been down; 0 while up.
    pub broker_down_since_unix: Counter,
    /// Commands received and not yet published, rejected, expired or
    /// cancelled: a session adds each valid command, the publisher takes it
    /// off when the broker took it, it expired or an operator cancelled it.
    /// So received = published + rejected + expired + cancelled + queued.
    pub queued: Counter,
    /// Bytes of commands the publisher holds, set by the publisher.
    pub queue_bytes: Counter,
    /// Size of the spool file, set by the publisher (0 without one).
    pub spool_bytes: Counter,
    /// Since when (Unix seconds) SPOOL_FILE cannot be written; 0 while it
    /// can (or without one). Set by the publisher.
    pub spool_failing_since_unix: Counter,
    /// Why SPOOL_FILE cannot be written, while it cannot.
    pub spool_problem: std::sync::Mutex<Option<String>>,
    /// Commands held for cameras and their payload bytes (those sent and
    /// not yet confirmed too), set by the publisher (held commands not yet
    /// published count as queued too).
    pub held: Counter,
    pub held_bytes: Counter,
    /// Commands the broker took that their cameras have not confirmed yet,
    /// set by the publisher.
    pub unconfirmed: Counter,
    /// Commands their cameras' heartbeats (or replies) confirmed.
    pub confirmed: Counter,
    /// Commands published again to their cameras, by reason: a reconnect
    /// (an early heartbeat), an absence (a late one), a reboot, the relay
    /// losing sight of the camera, the camera going offline.
    pub resent: [Counter; RESENT_REASONS.len()],
    /// Published commands whose lifetime ran out before their camera confirmed them.
    pub expired_unconfirmed: Counter,
    /// Commands that waited behind one that restarts their camera, and
    /// such waits that ended by `SERIAL_TIMEOUT`.
    pub serial_waits: Counter,
    pub serial_timeouts: Counter,
    /// When the publisher will turn again at the latest (`time::mono_ms`):
    /// the end of its wait while it sleeps, the moment it woke while it
    /// works. The status file is
    /// only refreshed while this is not long past (`report/writer.rs`).
    pub publisher_due_ms: Counter,
    /// Wakes the main thread, which sleeps until its next deadline: rung
    /// when the publish link, the device link's subscriptions or the
    /// spool's state change (the status snapshot is written at once, not at
    /// its next interval) and when a device comes online while none was
    /// (its offline deadline is new).
    pub state_bell: crate::ops::sync::Bell,
    /// The device link holds its subscriptions (set on SUBACK, cleared
    /// when its connection ends).
    pub device_subscribed: AtomicBool,
    /// Since when (Unix seconds) the device link has not been subscribed; 0 while it is.
    pub device_down_since_unix: Counter,
    /// The Maximum Packet Size the broker in use announced in its MQTT 5
    /// CONNACK to the device link; 0 when it announced none (or on 3.1.1).
    /// The publisher sets aside a command whose PUBLISH is larger.
    pub broker_max_packet: Counter,
    /// The MQTT version of the device link's last connection: 5, 4 (3.1.1), 0 none yet.
    pub device_protocol: AtomicU8,
    pub received: Counter,
    pub published: Counter,
    pub rejected: Counter,
    pub expired: Counter,
    /// Commands an operator dropped (`ms500-relay cancel`) before they were published.
    pub cancelled: Counter,
    /// Of `expired`: held for a camera that did not come back in time.
    pub expired_held: Counter,
    /// Of `rejected`: commands the broker cannot take (too large), set aside.
    pub set_aside: Counter,
    pub replies_routed: Counter,
    pub replies_dropped: Counter,
    /// Backend connections that waited in the listen backlog because every
    /// `MAX_CONNECTIONS` place was taken, and those of them refused after
    /// waiting too long (set by the listener).
    pub connections_waited: Counter,
    /// Heartbeats taken by the device link (for the device summary line).
    pub heartbeats: Counter,
    pub connections_refused: Counter,
}

/// Why a command went to its camera again, as the metrics label it
/// (`cadence::Class::reason`, and `offline`).
pub const RESENT_REASONS: [&str; 5] = ["reconnect", "absence", "reboot", "unseen", "offline"];

impl Counters {
    /// Counts a command published again to its camera for `reason`.
    pub fn resent(&self, reason: &str) {
        let i = RESENT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(RESENT_REASONS.len() - 1);
        self.resent[i].add();
    }

    /// The publish link is connected (again).
    pub fn link_up(&self) {
        self.broker_connections.fetch_add(1, Ordering::Relaxed);
        self.broker_down_since_unix.store(0, Ordering::Relaxed);
        self.state_bell.ring();
    }

    /// The publish link is down from now on.
    pub fn link_down(&self) {
        self.broker_down_since_unix.store(
            crate::ops::time::unix(std::time::SystemTime::now()),
            Ordering::Relaxed,
        );
        self.state_bell.ring();
    }

    /// The device link holds its subscriptions.
    pub fn device_link_up(&self) {
        self.device_subscribed.store(true, Ordering::Relaxed);
        self.device_down_since_unix.store(0, Ordering::Relaxed);
        self.state_bell.ring();
    }

    /// The device link lost its connection (or has none yet): from now on
    /// unless it already was. Only a change rings the bell (this is said
    /// again at every attempt while the broker is away).
    pub fn device_link_down(&self) {
        let was_up = self.device_subscribed.swap(false, Ordering::Relaxed);
        let now = crate::ops::time::unix(std::time::SystemTime::now());
        let _ = self.device_down_since_unix.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |since| (since == 0).then_some(now),
        );
        if was_up {
            self.state_bell.ring();
        }
    }

    pub fn add(counter: &Counter) {
        counter.add();
    }

    /// One queued command is done (published or expired).
    pub fn unqueue(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The value of each of [`COUNTED`], in its order.
    pub fn snapshot(&self) -> [(&'static Counted, u64); 7] {
        COUNTED
            .each_ref()
            .map(|counted| (counted, counted.get(self)))
    }
}

/// One of the events the relay counts, under the names every report uses:
/// the key in the status file's `counters` (and, with spaces, in the
/// `status` command's output) and the Prometheus metric.
#[derive(Debug)]
pub struct Counted {
    pub key: &'static str,
    pub metric: &'static str,
    pub help: &'static str,
    cell: fn(&Counters) -> &Counter,
}

impl Counted {
    pub fn get(&self, counters: &Counters) -> u64 {
        (self.cell)(counters).load(Ordering::Relaxed)
    }
}

/// The counted events, in the order the status file, the `status` command
/// and the metrics file list them.
pub const COUNTED: [Counted; 7] = [
    Counted {
        key: "received",
        metric: "commands_received_total",
        help:
            "JSON values read from backends (valid or not), and commands replayed from the spool.",
        cell: |c| &c.received,
    },
    Counted {
        key: "published",
        metric: "commands_published_total",
        help: "Commands the broker acknowledged (QoS 1) or took (QoS 0).",
        cell: |c| &c.published,
    },
    Counted {
        key: "rejected",
        metric: "commands_rejected_total",
        help: "Values refused: not JSON, not a command, or a rule broken.",
        cell: |c| &c.rejected,
    },
    Counted {
        key: "expired",
        metric: "commands_expired_total",
        help: "Commands dropped after COMMAND_TTL.",
        cell: |c| &c.expired,
    },
    Counted {
        key: "cancelled",
        metric: "commands_cancelled_total",
        help: "Commands an operator dropped (ms500-relay cancel) before they were published.",
        cell: |c| &c.cancelled,
    },
    Counted {
        key: "replies_routed",
        metric: "replies_routed_total",
        help: "Device replies written to the backend connection that asked.",
        cell: |c| &c.replies_routed,
    },
    Counted {
        key: "replies_dropped",
        metric: "replies_dropped_total",
        help: "Device replies with no route here, or that a backend did not read in time.",
        cell: |c| &c.replies_dropped,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_reads_its_own_counter() {
        let counters = Counters::default();
        let cells = [
            &counters.received,
            &counters.published,
            &counters.rejected,
            &counters.expired,
            &counters.cancelled,
            &counters.replies_routed,
            &counters.replies_dropped,
        ];
        for (i, cell) in cells.iter().enumerate() {
            cell.store(i as u64 + 10, Ordering::Relaxed);
        }
        let shown: Vec<(&str, u64)> = counters
            .snapshot()
            .iter()
            .map(|(c, v)| (c.key, *v))
            .collect();
        assert_eq!(
            shown,
            [
                ("received", 10),
                ("published", 11),
                ("rejected", 12),
                ("expired", 13),
                ("cancelled", 14),
                ("replies_routed", 15),
                ("replies_dropped", 16)
            ]
        );
    }

    #[test]
    fn metric_names_are_the_keys_as_prometheus_wants_them() {
        for counted in &COUNTED {
            assert!(counted.metric.ends_with("_total"), "{}", counted.metric);
            assert!(counted.metric.contains(counted.key), "{}", counted.metric);
            assert!(counted.help.ends_with('.'), "{}", counted.help);
        }
    }

    #[test]
    fn counts_and_byte_totals_go_on_past_two_to_the_32() {
        let counters = Counters::default();
        let past = u64::from(u32::MAX);
        counters.received.store(past, Ordering::Relaxed);
        counters.queued.store(past + 1, Ordering::Relaxed);
        Counters::add(&counters.received);
        Counters::add(&counters.received);
        counters.unqueue();
        counters.spool_bytes.store(6 << 32, Ordering::Relaxed);
        assert_eq!(counters.snapshot()[0].1, past + 2);
        assert_eq!(counters.queued.load(Ordering::Relaxed), past);
        assert_eq!(counters.spool_bytes.load(Ordering::Relaxed), 6 << 32);
    }

    #[test]
    fn unqueue_stops_at_zero() {
        let counters = Counters::default();
        counters.unqueue();
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
        Counters::add(&counters.queued);
        counters.unqueue();
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
    }
}
