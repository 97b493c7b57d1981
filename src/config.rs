//! Configuration: the relay.conf keys and how their text becomes a [`Config`].
//!
//! [`KEYS`] is the single place where every relay.conf key, its default and
//! its meaning are documented. `Config::default()` is built by parsing those
//! default strings, and a unit test holds the shipped `relay.conf` to the same
//! table, so the code, the defaults and the shipped file cannot drift apart.
//!
//! Runs on the main thread at start-up (and in `check-config`, `send` and
//! `status`); it owns no state and talks to no channel. Parsing is pure: it
//! takes the file's text and the name to use in messages. The only I/O is
//! [`load`] reading the file and [`Config::client_id`] reading the host name.
//!
//! # File syntax
//!
//! - One `KEY = value` per line; whitespace around key and value is ignored.
//!   Keys are upper case and matched exactly. A key given twice: the last wins.
//! - Blank lines and lines whose first non-blank character is `#` are ignored.
//!   In an unquoted value, a `#` at its start or after whitespace starts a
//!   comment; a `#` inside a word (`a#b`) is kept.
//! - A value may be quoted with `"…"` or `'…'`: the quotes are removed, `#` and
//!   surrounding spaces inside them are kept, there are no escapes, and only a
//!   comment may follow the closing quote.
//! - Lists (`SOCKET_ALLOW`) are comma-separated.
//! - Every key is optional, so an empty file is valid.
//!
//! Files named by keys (`MQTT_CA_FILE`, `SPOOL_FILE`, …) are not checked here:
//! whoever opens them reports what is wrong with them.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One relay.conf key: its name, its default as written in relay.conf, and a
/// one-line description (the comment above it in the shipped file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// `value` as it must be written in relay.conf to read back the same: quoted
/// when empty or holding spaces, `#` or quotes (single quotes around a value
/// that holds a double quote; the format has no escapes).
pub fn quoted(value: &str) -> String {
    if value.contains('"') {
        format!("'{value}'")
    } else if value.is_empty() || value.contains([' ', '#', '\'']) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

/// Every relay.conf key, in the order of the shipped file.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "MQTT_BROKER",
        default: "127.0.0.1",
        doc: "Brokers to use, in order: host[:port], host[:port], ... (port defaults to MQTT_PORT); the first that answers is used, the next on failure.",
    },
    KeyDoc {
        key: "MQTT_PORT",
        default: "1883",
        doc: "Broker TCP port, 1-65535 (usually 8883 with MQTT_TLS).",
    },
    KeyDoc {
        key: "MQTT_KEEPALIVE",
        default: "60",
        doc: "Keepalive interval agreed with the broker, 5-65535, in seconds.",
    },
    KeyDoc {
        key: "MQTT_CLIENT_ID",
        default: "",
        doc: "MQTT client id (with -pub and -sub appended for the two connections); empty means ms500-relay-HOSTNAME.",
    },
    KeyDoc {
        key: "MQTT_USERNAME",
        default: "",
        doc: "Broker user name; empty means no authentication.",
    },
    KeyDoc {
        key: "MQTT_PASSWORD",
        default: "",
        doc: "Broker password; never logged, shown as *** by check-config.",
    },
    KeyDoc {
        key: "MQTT_TLS",
        default: "false",
        doc: "Connect to the broker over TLS: true or false.",
    },
    KeyDoc {
        key: "MQTT_CA_FILE",
        default: "",
        doc: "PEM file of the CAs that sign the broker's certificate; empty = system roots.",
    },
    KeyDoc {
        key: "MQTT_CLIENT_CERT",
        default: "",
        doc: "PEM client certificate for TLS client authentication; needs MQTT_CLIENT_KEY.",
    },
    KeyDoc {
        key: "MQTT_CLIENT_KEY",
        default: "",
        doc: "PEM private key of MQTT_CLIENT_CERT; needs MQTT_CLIENT_CERT.",
    },
    KeyDoc {
        key: "MQTT_QOS",
        default: "1",
        doc: "QoS of published commands: 0 or 1 (2 is not supported).",
    },
    KeyDoc {
        key: "SOCKET_HOST",
        default: "127.0.0.1",
        doc: "Address the backend listener binds to.",
    },
    KeyDoc {
        key: "SOCKET_PORT",
        default: "6080",
        doc: "TCP port the backend listener binds to, 1-65535.",
    },
    KeyDoc {
        key: "SOCKET_ALLOW",
        default: "127.0.0.0/8, ::1",
        doc: "Backend peers allowed in: comma-separated IP addresses or CIDRs; default loopback only.",
    },
    KeyDoc {
        key: "MAX_CONNECTIONS",
        default: "16",
        doc: "Most backend connections open at once, 1-65535; further peers are closed at once.",
    },
    KeyDoc {
        key: "MAX_MESSAGE_BYTES",
        default: "65536",
        doc: "Largest JSON value accepted from a backend, 64-16777216, in bytes.",
    },
    KeyDoc {
        key: "COMMAND_TOPIC",
        default: "/service/ms500/{unit}/socket",
        doc: "Topic commands are published to; {unit} is replaced by the command's unit.",
    },
    KeyDoc {
        key: "HEARTBEAT_TOPIC",
        default: "/device/ms500/+/online",
        doc: "Topic filter of device heartbeats; its one + level is the device id.",
    },
    KeyDoc {
        key: "REPLY_TOPIC",
        default: "/device/ms500/+/socket_reply",
        doc: "Topic filter of device replies to SCS/UDS; its one + level is the unit.",
    },
    KeyDoc {
        key: "VALIDATE_FIELDS",
        default: "true",
        doc: "Check the fields each command type requires before publishing: true or false.",
    },
    KeyDoc {
        key: "ACK_MODE",
        default: "none",
        doc: "Status lines written back to backends: none, errors or all.",
    },
    KeyDoc {
        key: "QUEUE_CAPACITY",
        default: "10000",
        doc: "Commands held while the broker is away, 1-1000000; when full, backends are not read.",
    },
    KeyDoc {
        key: "QUEUE_MAX_BYTES",
        default: "16777216",
        doc: "Bytes of commands held at most (payloads), 65536-1073741824; when reached, backends are not read.",
    },
    KeyDoc {
        key: "COMMAND_TTL",
        default: "600",
        doc: "Age after which a queued command is dropped as expired, 0 = never, in seconds.",
    },
    KeyDoc {
        key: "SPOOL_FILE",
        default: "",
        doc: "File keeping accepted commands until acknowledged, for replay at restart; empty = off.",
    },
    KeyDoc {
        key: "DEVICE_TIMEOUT",
        default: "90",
        doc: "Silence after which a device is logged as offline, in seconds.",
    },
    KeyDoc {
        key: "MAX_DEVICES",
        default: "10000",
        doc: "Devices tracked at most, 1-1000000; past that the longest-silent one is forgotten.",
    },
    KeyDoc {
        key: "STATUS_FILE",
        default: "",
        doc: "JSON status snapshot, replaced atomically every STATUS_INTERVAL; empty = off.",
    },
    KeyDoc {
        key: "STATUS_INTERVAL",
        default: "5",
        doc: "Time between two status snapshots, in seconds.",
    },
    KeyDoc {
        key: "PID_FILE",
        default: "",
        doc: "Locked file holding the pid; a second instance exits with code 3; empty = off.",
    },
    KeyDoc {
        key: "SHUTDOWN_GRACE",
        default: "5",
        doc: "Time allowed on SIGINT/SIGTERM to publish what is still queued, in seconds.",
    },
    KeyDoc {
        key: "LOG_LEVEL",
        default: "info",
        doc: "Log level: error, warn, info, debug, trace or off.",
    },
    KeyDoc {
        key: "LOG_FILE",
        default: "",
        doc: "File the relay writes its log to, rotated by size; empty = stderr.",
    },
    KeyDoc {
        key: "LOG_MAX_BYTES",
        default: "1048576",
        doc: "Size at which LOG_FILE is rotated, 65536-1073741824, in bytes.",
    },
    KeyDoc {
        key: "LOG_KEEP",
        default: "2",
        doc: "Rotated log files kept (LOG_FILE.1 ... LOG_FILE.N), 0-100.",
    },
    KeyDoc {
        key: "LOG_SYSLOG",
        default: "false",
        doc: "Send the log to the local syslog socket (/dev/log) instead: true or false.",
    },
    KeyDoc {
        key: "METRICS_FILE",
        default: "",
        doc: "Prometheus text file (node_exporter's textfile collector), written with every status snapshot; empty = off.",
    },
    KeyDoc {
        key: "STATE_TOPIC",
        default: "/service/ms500-relay/{client_id}/state",
        doc: "Retained topic saying whether the relay is online (its last will says offline); empty = off.",
    },
];

/// Longest time any seconds key accepts (one year): far beyond any sensible
/// setting, and small enough that `Instant + Duration` can never overflow.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Which status lines go back to the backend (`ACK_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Nothing but device replies.
    None,
    /// One line per rejected or expired command.
    Errors,
    /// One line per command.
    All,
}

impl AckMode {
    /// The relay.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Errors => "errors",
            AckMode::All => "all",
        }
    }
}

/// One `SOCKET_ALLOW` entry: a CIDR block; a bare address has a full-length
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl AllowRule {
    /// Whether `ip` lies in this block. An IPv4-mapped IPv6 peer
    /// (`::ffff:a.b.c.d`, what a dual-stack listener reports) is treated as
    /// the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(rule), IpAddr::V4(peer)) => same_prefix(
                u32::from(rule).into(),
                u32::from(peer).into(),
                32,
                self.prefix,
            ),
            (IpAddr::V6(rule), IpAddr::V6(peer)) => {
                same_prefix(u128::from(rule), u128::from(peer), 128, self.prefix)
            }
            // A rule written as ::ffff:a.b.c.d/n still covers IPv4 peers.
            (IpAddr::V6(rule), IpAddr::V4(peer)) => same_prefix(
                u128::from(rule),
                u128::from(peer.to_ipv6_mapped()),
                128,
                self.prefix,
            ),
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// Whether the top `prefix` bits of two `bits`-wide addresses agree. A prefix
/// longer than the address counts as the full address.
fn same_prefix(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix).min(bits);
    let mask = u128::MAX.checked_shl(bits - prefix).unwrap_or(0);
    let width_mask = u128::MAX >> (128 - bits);
    (a ^ b) & mask & width_mask == 0
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.prefix >= full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Whether any rule lets `ip` in.
pub fn allowed(rules: &[AllowRule], ip: IpAddr) -> bool {
    rules.iter().any(|rule| rule.contains(ip))
}

/// The relay's configuration, one field per relay.conf key.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `MQTT_BROKER`: hosts in order, each with its own port when given.
    pub mqtt_broker: Vec<(String, Option<u16>)>,
    /// `MQTT_PORT`.
    pub mqtt_port: u16,
    /// `MQTT_KEEPALIVE`, in seconds.
    pub mqtt_keepalive: u64,
    /// `MQTT_CLIENT_ID` as written; see [`Config::client_id`].
    pub mqtt_client_id: String,
    /// `MQTT_USERNAME`.
    pub mqtt_username: String,
    /// `MQTT_PASSWORD`: never log it.
    pub mqtt_password: String,
    /// `MQTT_TLS`.
    pub mqtt_tls: bool,
    /// `MQTT_CA_FILE`; empty means the system roots.
    pub mqtt_ca_file: String,
    /// `MQTT_CLIENT_CERT`.
    pub mqtt_client_cert: String,
    /// `MQTT_CLIENT_KEY`.
    pub mqtt_client_key: String,
    /// `MQTT_QOS`: 0 or 1.
    pub mqtt_qos: u8,
    /// `SOCKET_HOST`.
    pub socket_host: String,
    /// `SOCKET_PORT`.
    pub socket_port: u16,
    /// `SOCKET_ALLOW`, never empty.
    pub socket_allow: Vec<AllowRule>,
    /// `MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `MAX_MESSAGE_BYTES`.
    pub max_message_bytes: usize,
    /// `COMMAND_TOPIC`, with `{unit}` exactly once.
    pub command_topic: String,
    /// `HEARTBEAT_TOPIC`, with exactly one `+` level.
    pub heartbeat_topic: String,
    /// `REPLY_TOPIC`, with exactly one `+` level.
    pub reply_topic: String,
    /// `VALIDATE_FIELDS`.
    pub validate_fields: bool,
    /// `ACK_MODE`.
    pub ack_mode: AckMode,
    /// `QUEUE_CAPACITY`.
    pub queue_capacity: usize,
    /// `QUEUE_MAX_BYTES`.
    pub queue_max_bytes: usize,
    /// `COMMAND_TTL`, in seconds; 0 = never.
    pub command_ttl: u64,
    /// `SPOOL_FILE`; empty = off.
    pub spool_file: String,
    /// `DEVICE_TIMEOUT`, in seconds.
    pub device_timeout: u64,
    /// `MAX_DEVICES`.
    pub max_devices: usize,
    /// `STATUS_FILE`; empty = off.
    pub status_file: String,
    /// `STATUS_INTERVAL`, in seconds.
    pub status_interval: u64,
    /// `PID_FILE`; empty = off.
    pub pid_file: String,
    /// `SHUTDOWN_GRACE`, in seconds.
    pub shutdown_grace: u64,
    /// `LOG_LEVEL`, lower case.
    pub log_level: String,
    /// `LOG_FILE`; empty = stderr.
    pub log_file: String,
    /// `LOG_MAX_BYTES`.
    pub log_max_bytes: u64,
    /// `LOG_KEEP`.
    pub log_keep: u32,
    /// `LOG_SYSLOG`.
    pub log_syslog: bool,
    /// `METRICS_FILE`; empty = off.
    pub metrics_file: String,
    /// `STATE_TOPIC`; empty = off.
    pub state_topic: String,
}

impl Default for Config {
    /// Every key at its [`KEYS`] default.
    fn default() -> Self {
        let mut config = Config::placeholder();
        for key in KEYS {
            config
                .set(key.key, key.default)
                .expect("every KEYS default is a valid value (unit-tested)");
        }
        config
    }
}

impl Config {
    /// A value for every field, all overwritten by [`Default`]; the real
    /// defaults live only in [`KEYS`].
    fn placeholder() -> Self {
        Config {
            mqtt_broker: Vec::new(),
            mqtt_port: 0,
            mqtt_keepalive: 0,
            mqtt_client_id: String::new(),
            mqtt_username: String::new(),
            mqtt_password: String::new(),
            mqtt_tls: false,
            mqtt_ca_file: String::new(),
            mqtt_client_cert: String::new(),
            mqtt_client_key: String::new(),
            mqtt_qos: 0,
            socket_host: String::new(),
            socket_port: 0,
            socket_allow: Vec::new(),
            max_connections: 0,
            max_message_bytes: 0,
            command_topic: String::new(),
            heartbeat_topic: String::new(),
            reply_topic: String::new(),
            validate_fields: false,
            ack_mode: AckMode::None,
            queue_capacity: 0,
            queue_max_bytes: 0,
            command_ttl: 0,
            spool_file: String::new(),
            device_timeout: 0,
            max_devices: 0,
            status_file: String::new(),
            status_interval: 0,
            pid_file: String::new(),
            shutdown_grace: 0,
            log_level: String::new(),
            log_file: String::new(),
            log_max_bytes: 0,
            log_keep: 0,
            log_syslog: false,
            metrics_file: String::new(),
            state_topic: String::new(),
        }
    }

    /// Sets one key from its relay.conf value; the error is the reason, to be
    /// placed after `file:line: KEY: `.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "MQTT_BROKER" => self.mqtt_broker = crate::brokers::parse_list(value)?,
            "MQTT_PORT" => self.mqtt_port = port(value)?,
            "MQTT_KEEPALIVE" => self.mqtt_keepalive = number(value, 5, 65535, "seconds")?,
            "MQTT_CLIENT_ID" => self.mqtt_client_id = value.to_string(),
            "MQTT_USERNAME" => self.mqtt_username = value.to_string(),
            "MQTT_PASSWORD" => self.mqtt_password = value.to_string(),
            "MQTT_TLS" => self.mqtt_tls = boolean(value)?,
            "MQTT_CA_FILE" => self.mqtt_ca_file = value.to_string(),
            "MQTT_CLIENT_CERT" => self.mqtt_client_cert = value.to_string(),
            "MQTT_CLIENT_KEY" => self.mqtt_client_key = value.to_string(),
            "MQTT_QOS" => self.mqtt_qos = qos(value)?,
            "SOCKET_HOST" => self.socket_host = non_empty(value, "an address to bind")?,
            "SOCKET_PORT" => self.socket_port = port(value)?,
            "SOCKET_ALLOW" => self.socket_allow = allow_list(value)?,
            "MAX_CONNECTIONS" => self.max_connections = number(value, 1, 65535, "connections")?,
            "MAX_MESSAGE_BYTES" => self.max_message_bytes = number(value, 64, 16_777_216, "bytes")?,
            "COMMAND_TOPIC" => self.command_topic = command_topic(value)?,
            "HEARTBEAT_TOPIC" => self.heartbeat_topic = plus_filter(value)?,
            "REPLY_TOPIC" => self.reply_topic = plus_filter(value)?,
            "VALIDATE_FIELDS" => self.validate_fields = boolean(value)?,
            "ACK_MODE" => self.ack_mode = parse_ack_mode(value)?,
            "QUEUE_CAPACITY" => self.queue_capacity = number(value, 1, 1_000_000, "commands")?,
            "QUEUE_MAX_BYTES" => {
                self.queue_max_bytes = number(value, 65_536, 1_073_741_824, "bytes")?
            }
            "COMMAND_TTL" => self.command_ttl = number(value, 0, MAX_SECONDS, "seconds")?,
            "SPOOL_FILE" => self.spool_file = value.to_string(),
            "DEVICE_TIMEOUT" => self.device_timeout = number(value, 1, MAX_SECONDS, "seconds")?,
            "MAX_DEVICES" => self.max_devices = number(value, 1, 1_000_000, "devices")?,
            "STATUS_FILE" => self.status_file = value.to_string(),
            "STATUS_INTERVAL" => self.status_interval = number(value, 1, 86_400, "seconds")?,
            "PID_FILE" => self.pid_file = value.to_string(),
            "SHUTDOWN_GRACE" => self.shutdown_grace = number(value, 0, 3600, "seconds")?,
            "LOG_LEVEL" => self.log_level = log_level(value)?,
            "LOG_FILE" => self.log_file = value.to_string(),
            "LOG_MAX_BYTES" => self.log_max_bytes = number(value, 65_536, 1_073_741_824, "bytes")?,
            "LOG_KEEP" => self.log_keep = number(value, 0, 100, "files")?,
            "LOG_SYSLOG" => self.log_syslog = boolean(value)?,
            "METRICS_FILE" => self.metrics_file = value.to_string(),
            "STATE_TOPIC" => self.state_topic = state_topic(value)?,
            _ => return Err("unknown key".to_string()),
        }
        Ok(())
    }

    /// Every key in [`KEYS`] order with its value as it would be written in
    /// relay.conf (unquoted; lists joined with `, `). A non-empty
    /// `MQTT_PASSWORD` is shown as `***`.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        KEYS.iter()
            .map(|key| (key.key, self.render(key.key)))
            .collect()
    }

    fn render(&self, key: &str) -> String {
        let text = |s: &str| s.to_string();
        match key {
            "MQTT_BROKER" => self
                .mqtt_broker
                .iter()
                .map(|(host, port)| match (port, host.contains(':')) {
                    (None, _) => host.clone(),
                    (Some(p), true) => format!("[{host}]:{p}"),
                    (Some(p), false) => format!("{host}:{p}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            "MQTT_PORT" => self.mqtt_port.to_string(),
            "MQTT_KEEPALIVE" => self.mqtt_keepalive.to_string(),
            "MQTT_CLIENT_ID" => text(&self.mqtt_client_id),
            "MQTT_USERNAME" => text(&self.mqtt_username),
            "MQTT_PASSWORD" if self.mqtt_password.is_empty() => String::new(),
            "MQTT_PASSWORD" => "***".to_string(),
            "MQTT_TLS" => self.mqtt_tls.to_string(),
            "MQTT_CA_FILE" => text(&self.mqtt_ca_file),
            "MQTT_CLIENT_CERT" => text(&self.mqtt_client_cert),
            "MQTT_CLIENT_KEY" => text(&self.mqtt_client_key),
            "MQTT_QOS" => self.mqtt_qos.to_string(),
            "SOCKET_HOST" => text(&self.socket_host),
            "SOCKET_PORT" => self.socket_port.to_string(),
            "SOCKET_ALLOW" => self
                .socket_allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            "MAX_CONNECTIONS" => self.max_connections.to_string(),
            "MAX_MESSAGE_BYTES" => self.max_message_bytes.to_string(),
            "COMMAND_TOPIC" => text(&self.command_topic),
            "HEARTBEAT_TOPIC" => text(&self.heartbeat_topic),
            "REPLY_TOPIC" => text(&self.reply_topic),
            "VALIDATE_FIELDS" => self.validate_fields.to_string(),
            "ACK_MODE" => self.ack_mode.as_str().to_string(),
            "QUEUE_CAPACITY" => self.queue_capacity.to_string(),
            "QUEUE_MAX_BYTES" => self.queue_max_bytes.to_string(),
            "COMMAND_TTL" => self.command_ttl.to_string(),
            "SPOOL_FILE" => text(&self.spool_file),
            "DEVICE_TIMEOUT" => self.device_timeout.to_string(),
            "MAX_DEVICES" => self.max_devices.to_string(),
            "STATUS_FILE" => text(&self.status_file),
            "STATUS_INTERVAL" => self.status_interval.to_string(),
            "PID_FILE" => text(&self.pid_file),
            "SHUTDOWN_GRACE" => self.shutdown_grace.to_string(),
            "LOG_LEVEL" => text(&self.log_level),
            "LOG_FILE" => text(&self.log_file),
            "LOG_MAX_BYTES" => self.log_max_bytes.to_string(),
            "LOG_KEEP" => self.log_keep.to_string(),
            "LOG_SYSLOG" => self.log_syslog.to_string(),
            "METRICS_FILE" => text(&self.metrics_file),
            "STATE_TOPIC" => text(&self.state_topic),
            _ => String::new(),
        }
    }

    /// The MQTT client id: `MQTT_CLIENT_ID`, or `ms500-relay-HOSTNAME` when
    /// it is empty (host name from /etc/hostname, else `$HOSTNAME`, else
    /// `gateway`; only `A-Z a-z 0-9 - _ .` kept). Stable across restarts, so
    /// the broker's retained state of this relay is replaced, not multiplied;
    /// PID_FILE keeps it to one relay per configuration.
    pub fn client_id(&self) -> String {
        if !self.mqtt_client_id.is_empty() {
            return self.mqtt_client_id.clone();
        }
        let from_file = std::fs::read_to_string("/etc/hostname").ok();
        let from_env = std::env::var("HOSTNAME").ok();
        let host = [from_file, from_env]
            .into_iter()
            .flatten()
            .map(|name| sanitize_host(&name))
            .find(|name| !name.is_empty())
            .unwrap_or_else(|| "gateway".to_string());
        format!("ms500-relay-{host}")
    }

    /// The state topic with `{client_id}` filled in, when there is one.
    pub fn state_topic_for(&self, client_id: &str) -> Option<String> {
        (!self.state_topic.is_empty()).then(|| self.state_topic.replace("{client_id}", client_id))
    }

    /// The log level as the `log` crate takes it.
    pub fn log_level_filter(&self) -> log::LevelFilter {
        self.log_level.parse().unwrap_or(log::LevelFilter::Info)
    }

    /// The files the relay writes, by key, when set.
    pub fn written_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("PID_FILE", &self.pid_file),
            ("STATUS_FILE", &self.status_file),
            ("SPOOL_FILE", &self.spool_file),
            ("LOG_FILE", &self.log_file),
            ("METRICS_FILE", &self.metrics_file),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, Path::new(v.as_str())))
        .collect()
    }

    /// The brokers of `MQTT_BROKER`, in order, each with its port (MQTT_PORT by default).
    pub fn brokers(&self) -> Vec<crate::brokers::Broker> {
        self.mqtt_broker
            .iter()
            .map(|(host, port)| crate::brokers::Broker {
                host: host.clone(),
                port: port.unwrap_or(self.mqtt_port),
            })
            .collect()
    }

    /// The topic a command for `unit` is published to.
    pub fn command_topic_for(&self, unit: &str) -> String {
        self.command_topic.replace("{unit}", unit)
    }
}

/// Keeps only the characters a client id can safely carry.
fn sanitize_host(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

/// The topic level matched by the single `+` of `filter` when `topic` matches
/// `filter`; `None` when it does not match, when the filter has no `+` or
/// more than one, or when the matched level is empty (it could not name a
/// device).
pub fn plus_level<'a>(filter: &str, topic: &'a str) -> Option<&'a str> {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    let mut matched = None;
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (None, None) => break,
            (Some("+"), Some(level)) => {
                if matched.is_some() {
                    return None;
                }
                matched = Some(level);
            }
            (Some(want), Some(level)) if want == level => {}
            _ => return None,
        }
    }
    matched.filter(|level| !level.is_empty())
}

/// What went wrong loading relay.conf.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A line could not be used.
    Line {
        source: String,
        line: usize,
        key: Option<String>,
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read {path}: {source}"),
            ConfigError::Line {
                source,
                line,
                key: Some(key),
                reason,
            } => write!(f, "{source}:{line}: {key}: {reason}"),
            ConfigError::Line {
                source,
                line,
                key: None,
                reason,
            } => write!(f, "{source}:{line}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Line { .. } => None,
        }
    }
}

/// Parses relay.conf text; `source` is the file name used in messages.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let error = |line: usize, key: Option<&str>, reason: String| ConfigError::Line {
        source: source.to_string(),
        line,
        key: key.map(str::to_string),
        reason,
    };
    let mut config = Config::default();
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let entry = match split_line(raw) {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            Err(LineError::Syntax) => {
                return Err(error(number, None, "expected KEY = value".to_string()))
            }
            Err(LineError::Value { key, reason }) => {
                return Err(error(number, Some(key), reason.to_string()))
            }
        };
        let Some(known) = KEYS.iter().find(|k| k.key == entry.key) else {
            return Err(error(number, Some(entry.key), unknown_key(entry.key)));
        };
        config
            .set(known.key, &entry.value)
            .map_err(|reason| error(number, Some(known.key), reason))?;
        seen.insert(known.key, number);
    }
    check_client_auth(&config, &seen)
        .map_err(|(line, key, reason)| error(line, Some(key), reason))?;
    Ok(config)
}

fn unknown_key(key: &str) -> String {
    let upper = key.to_ascii_uppercase();
    match KEYS.iter().find(|k| k.key == upper) {
        Some(k) => format!("unknown key (keys are upper case: {})", k.key),
        None => "unknown key".to_string(),
    }
}

/// With TLS on, a client certificate without its key (or the reverse) cannot
/// work; the error names the later of the two lines.
fn check_client_auth(
    config: &Config,
    seen: &HashMap<&'static str, usize>,
) -> Result<(), (usize, &'static str, String)> {
    let has_cert = !config.mqtt_client_cert.is_empty();
    let has_key = !config.mqtt_client_key.is_empty();
    if !config.mqtt_tls || has_cert == has_key {
        return Ok(());
    }
    let cert_line = seen.get("MQTT_CLIENT_CERT").copied().unwrap_or(0);
    let key_line = seen.get("MQTT_CLIENT_KEY").copied().unwrap_or(0);
    let reason = |this: &str, other: &str| {
        format!("{this} but {other} (TLS client authentication needs both)")
    };
    if cert_line >= key_line {
        let state = if has_cert { "is set" } else { "is empty" };
        let other = if has_key {
            "MQTT_CLIENT_KEY is set"
        } else {
            "MQTT_CLIENT_KEY is empty"
        };
        Err((cert_line, "MQTT_CLIENT_CERT", reason(state, other)))
    } else {
        let state = if has_key { "is set" } else { "is empty" };
        let other = if has_cert {
            "MQTT_CLIENT_CERT is set"
        } else {
            "MQTT_CLIENT_CERT is empty"
        };
        Err((key_line, "MQTT_CLIENT_KEY", reason(state, other)))
    }
}

/// One `KEY = value` line with quotes and comment removed.
#[derive(Debug, PartialEq, Eq)]
struct Entry<'a> {
    key: &'a str,
    value: String,
}

/// Why a line could not be split; each case has its own message shape.
#[derive(Debug, PartialEq, Eq)]
enum LineError<'a> {
    /// No `KEY =` at all.
    Syntax,
    /// The key is there but its value is malformed.
    Value { key: &'a str, reason: &'static str },
}

/// Splits one line into key and value; `None` for blank and comment lines.
fn split_line(raw: &str) -> Result<Option<Entry<'_>>, LineError<'_>> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let Some((key, rest)) = line.split_once('=') else {
        return Err(LineError::Syntax);
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(LineError::Syntax);
    }
    let rest = rest.trim_start();
    let value = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let inner = &rest[1..];
            let Some(end) = inner.find(quote) else {
                return Err(LineError::Value {
                    key,
                    reason: "missing closing quote",
                });
            };
            let after = inner[end + 1..].trim_start();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err(LineError::Value {
                    key,
                    reason: "unexpected text after the closing quote",
                });
            }
            inner[..end].to_string()
        }
        _ => strip_comment(rest).trim_end().to_string(),
    };
    Ok(Some(Entry { key, value }))
}

/// Cuts an unquoted value at a `#` that starts it or follows whitespace.
fn strip_comment(value: &str) -> &str {
    let mut previous: Option<char> = None;
    for (at, c) in value.char_indices() {
        if c == '#' && previous.is_none_or(char::is_whitespace) {
            return &value[..at];
        }
        previous = Some(c);
    }
    value
}

fn non_empty(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("must not be empty: give {what}"))
    } else {
        Ok(value.to_string())
    }
}

fn port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(format!("{value:?} is not a port number (1-65535)")),
    }
}

/// A whole number in `min..=max`; `unit` names what it counts.
fn number<T>(value: &str, min: u64, max: u64, unit: &str) -> Result<T, String>
where
    T: TryFrom<u64>,
{
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{value:?} is not a whole number of {unit} ({min}-{max})"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(format!(
            "{value:?} is not a boolean (true/false, yes/no, on/off, 1/0)"
        )),
    }
}

fn qos(value: &str) -> Result<u8, String> {
    match value {
        "0" => Ok(0),
        "1" => Ok(1),
        "2" => Err("QoS 2 is not supported: only 0 and 1 are supported".to_string()),
        _ => Err(format!(
            "{value:?} is not a QoS level (only 0 and 1 are supported)"
        )),
    }
}

/// `ACK_MODE`'s values, any case.
pub fn parse_ack_mode(value: &str) -> Result<AckMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "none" => Ok(AckMode::None),
        "errors" => Ok(AckMode::Errors),
        "all" => Ok(AckMode::All),
        _ => Err(format!("{value:?} is not one of none, errors, all")),
    }
}

fn log_level(value: &str) -> Result<String, String> {
    let level = value.to_ascii_lowercase();
    match level.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(level),
        _ => Err(format!(
            "{value:?} is not one of error, warn, info, debug, trace, off"
        )),
    }
}

/// A comma-separated list of addresses and CIDRs; empty entries (a trailing
/// comma) are skipped, but the list itself must not be empty.
fn allow_list(value: &str) -> Result<Vec<AllowRule>, String> {
    let rules = value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(allow_rule)
        .collect::<Result<Vec<_>, _>>()?;
    if rules.is_empty() {
        return Err(
            "must list at least one address or CIDR (loopback only is \"127.0.0.0/8, ::1\")"
                .to_string(),
        );
    }
    Ok(rules)
}

fn allow_rule(entry: &str) -> Result<AllowRule, String> {
    let bad = || format!("{entry:?} is not an IP address or CIDR");
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let full: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => full,
        Some(text) => {
            let prefix: u8 = text.trim().parse().map_err(|_| bad())?;
            if prefix > full {
                return Err(format!("{entry:?}: prefix longer than {full} bits"));
            }
            prefix
        }
    };
    Ok(AllowRule { addr, prefix })
}

fn command_topic(value: &str) -> Result<String, String> {
    if value.matches("{unit}").count() != 1 {
        return Err(format!("{value:?} must contain {{unit}} exactly once"));
    }
    if value.contains(['+', '#']) {
        return Err(format!(
            "{value:?} must not contain the MQTT wildcards + or #"
        ));
    }
    Ok(value.to_string())
}

/// `STATE_TOPIC`: empty (off) or a topic without wildcards; `{client_id}`
/// may appear in it.
fn state_topic(value: &str) -> Result<String, String> {
    if value.contains(['+', '#']) {
        return Err(format!(
            "{value:?} must not contain the MQTT wildcards + or #"
        ));
    }
    Ok(value.to_string())
}

/// A subscription filter whose one `+` level carries the device id or unit.
fn plus_filter(value: &str) -> Result<String, String> {
    if value.contains('#') {
        return Err(format!("{value:?} must not contain the MQTT wildcard #"));
    }
    let plus_levels = value.split('/').filter(|level| *level == "+").count();
    if plus_levels != 1 || value.matches('+').count() != 1 {
        return Err(format!(
            "{value:?} must contain exactly one + as a whole topic level, like /device/ms500/+/online"
        ));
    }
    Ok(value.to_string())
}

/// Reads relay.conf: the file given with `-c`, or else `./relay.conf`, or
/// else `/etc/ms500-relay/relay.conf`. With no file given and none found, the
/// defaults apply and no path is returned.
pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let parse_file = |path: &Path, text: &str| {
        parse(text, &path.display().to_string()).map(|config| (config, Some(path.to_path_buf())))
    };
    if let Some(path) = path {
        let text = read(path)?;
        return parse_file(path, &text);
    }
    for candidate in [
        Path::new("./relay.conf"),
        Path::new("/etc/ms500-relay/relay.conf"),
    ] {
        match std::fs::read_to_string(candidate) {
            Ok(text) => return parse_file(candidate, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: candidate.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok((Config::default(), None))
}

#[cfg(test)]
mod tests;
