//! What the delivery policy needs of the configuration ([`Settings`] at
//! start, [`Reload`] at each SIGHUP), taken from it by the publisher thread
//! (`publisher.rs`): the policy itself never sees a `Config`.

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::config::{self, CommandType, Config, Lifetimes, Qos};

/// What the policy needs of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// QoS 1 (acknowledged) or 0.
    pub qos1: bool,
    /// `COMMAND_TTL`, and `COMMAND_TTLS` per type.
    pub lifetimes: Lifetimes,
    /// Hold commands for cameras that are offline (`PRESENCE_FIELD` set and `HOLD_OFFLINE`).
    pub hold_offline: bool,
    pub hold_max_per_camera: usize,
    pub hold_max_bytes: usize,
    /// Offline cameras remembered at most (`MAX_DEVICES`).
    pub max_cameras: usize,
    /// `PRESENCE_FIELD`: read again from spooled commands.
    pub presence_field: Option<String>,
    pub capacity: usize,
    /// `QUEUE_MAX_BYTES`: payload bytes the ledger may hold.
    pub max_bytes: usize,
    /// `SPOOL_FILE`, named in log lines.
    pub spool: Option<PathBuf>,
    /// `STATE_TOPIC` and its "offline" message, published before a clean DISCONNECT.
    pub state: Option<OfflineState>,
    /// The most verbose level logged: lines below it are not even formatted.
    pub log_level: LevelFilter,
    /// How long one written command may wait for its PUBACK before the
    /// connection is dropped and made again (2 × `MQTT_KEEPALIVE`).
    pub puback_within: Duration,
    /// `MQTT_MAX_PACKET_BYTES`: the largest PUBLISH the broker takes, when known.
    pub max_packet: Option<usize>,
    /// `DEVICE_TIMEOUT`: a camera silent this long is offline.
    pub device_timeout: Duration,
    /// `COMMAND_TOPIC`: where commands replayed from the spool are published.
    pub command_topic: String,
    /// `SERIAL_AFTER`: types after which a camera's newer commands wait for its next heartbeat.
    pub serial_after: Vec<CommandType>,
    /// `SERIAL_TIMEOUT`: how long they wait at most.
    pub serial_timeout: Duration,
    /// `UNSEEN_WAIT`: how long a command for a camera never seen waits for it.
    pub unseen_wait: Duration,
}

impl Settings {
    /// `config`'s settings, logging at `log_level` and below.
    pub fn new(config: &Config, log_level: LevelFilter) -> Settings {
        let reload = Reload::new(config);
        Settings {
            qos1: config.mqtt_qos == Qos::AtLeastOnce,
            lifetimes: reload.lifetimes,
            hold_offline: config.hold_offline && config.presence_field.is_some(),
            hold_max_per_camera: config.hold_max_per_camera,
            hold_max_bytes: config.hold_max_bytes,
            max_cameras: config.max_devices,
            presence_field: config.presence_field.clone(),
            capacity: config.queue_capacity,
            max_bytes: config.queue_max_bytes,
            spool: config.spool_file.clone(),
            state: None,
            log_level,
            puback_within: reload.puback_within,
            max_packet: reload.max_packet,
            device_timeout: reload.device_timeout,
            command_topic: config.command_topic.clone(),
            serial_after: config.serial_after.clone(),
            serial_timeout: config.serial_timeout,
            unseen_wait: config.unseen_wait,
        }
    }

    /// The topic a command for `unit` is published to.
    pub fn topic_for(&self, unit: &str) -> String {
        config::topic_for_unit(&self.command_topic, unit)
    }
}

/// `STATE_TOPIC` and the "offline" message published on it (retained)
/// before a clean DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineState {
    pub topic: String,
    pub message: Vec<u8>,
}

/// What a SIGHUP changes for the policy: the lifetimes apply to every
/// command from the next expiry check (queued ones included), the PUBACK
/// deadline to every command in flight from the next check, and
/// `MQTT_MAX_PACKET_BYTES` to the next command written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    pub lifetimes: Lifetimes,
    pub device_timeout: Duration,
    pub puback_within: Duration,
    pub max_packet: Option<usize>,
}

impl Reload {
    pub fn new(config: &Config) -> Reload {
        Reload {
            lifetimes: config.lifetimes(),
            device_timeout: config.device_timeout,
            // 2 × `MQTT_KEEPALIVE`.
            puback_within: config.mqtt_keepalive * 2,
            // 0 is unknown.
            max_packet: (config.mqtt_max_packet_bytes > 0).then_some(config.mqtt_max_packet_bytes),
        }
    }
}
