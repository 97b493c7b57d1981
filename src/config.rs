//! The relay.conf keys and how their text becomes a [`Config`]. The
//! `config_keys!` table below defines every key once (name, field, type,
//! default, parser, one-line doc); the struct, [`KEYS`], the defaults,
//! parsing and [`Config::effective`] come from it, and tests hold relay.conf,
//! README and PROTOCOL.md §3 to it. Pure but for [`load`] (reads the file)
//! and [`Config::client_id`] (the host name); called by the start, a
//! reload and every command. The file's syntax: README, "Configuration".

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

mod command_types;
mod live;
mod values;
pub use command_types::{CommandType, Lifetimes};
pub use live::{is_fixed, Changes, Live, AT_NEXT_CONNECTION, AT_ONCE, FIXED_KEYS};
pub use values::*;

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

/// Builds everything that follows from the key table. Each entry:
/// `"KEY" => field: Type = "default", parse: fn(&str) -> Result<Type, String>,
/// render: fn(&Type) -> String, doc: "one line";`. A parser's error is the
/// reason placed after `file:line: KEY: `.
macro_rules! config_keys {
    ($( $key:literal => $field:ident : $ty:ty = $default:literal,
        parse: $parse:expr, render: $render:expr, doc: $doc:literal; )*) => {
        /// The relay's configuration, one typed field per relay.conf key.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( #[doc = concat!("`", $key, "`: ", $doc)] pub $field: $ty, )*
        }

        /// Every relay.conf key, in the order of the shipped file.
        pub const KEYS: &[KeyDoc] = &[ $( KeyDoc { key: $key, default: $default, doc: $doc }, )* ];

        impl Default for Config {
            /// Every key at its default, parsed by the key's own parser.
            fn default() -> Self {
                Config {
                    $( $field: {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        parse($default).expect("every default in the key table parses (unit-tested)")
                    }, )*
                }
            }
        }

        impl Config {
            /// Sets one key from its relay.conf value.
            fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
                match key {
                    $( $key => {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        self.$field = parse(value)?;
                    } )*
                    _ => return Err("unknown key".to_string()),
                }
                Ok(())
            }

            /// Every key in [`KEYS`] order with its value as it would be
            /// written in relay.conf (unquoted; lists joined with `, `). A
            /// set `MQTT_PASSWORD` is shown as `***`.
            pub fn effective(&self) -> Vec<(&'static str, String)> {
                vec![ $( ($key, {
                    let render: fn(&$ty) -> String = $render;
                    render(&self.$field)
                }), )* ]
            }
        }
    };
}

config_keys! {
    "MQTT_BROKER" => mqtt_broker: Vec<BrokerAddr> = "127.0.0.1",
        parse: brokers,
        render: |v| render_brokers(v),
        doc: "Brokers to use, in order: host[:port], host[:port], ... (port defaults to MQTT_PORT); the first that answers is used, the next on failure.";
    "MQTT_PORT" => mqtt_port: u16 = "1883",
        parse: port,
        render: render,
        doc: "Broker TCP port, 1-65535 (usually 8883 with MQTT_TLS).";
    "MQTT_KEEPALIVE" => mqtt_keepalive: Duration = "60",
        parse: |v| seconds(v, 5, 65535),
        render: render_seconds,
        doc: "Keepalive interval agreed with the broker, 5-65535, in seconds.";
    "MQTT_CLIENT_ID" => mqtt_client_id: Option<String> = "",
        parse: client_id,
        render: render_optional,
        doc: "MQTT client id (with -pub and -sub appended for the two connections); empty means ms500-relay-HOSTNAME.";
    "MQTT_USERNAME" => mqtt_username: Option<String> = "",
        parse: optional_mqtt_string,
        render: render_optional,
        doc: "Broker user name; empty means no authentication.";
    "MQTT_PASSWORD" => mqtt_password: Option<String> = "",
        parse: optional_mqtt_string,
        render: render_secret,
        doc: "Broker password; never logged, shown as *** by check-config.";
    "MQTT_TLS" => mqtt_tls: bool = "false",
        parse: boolean,
        render: render,
        doc: "Connect to the broker over TLS: true or false.";
    "MQTT_CA_FILE" => mqtt_ca_file: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "PEM file of the CAs that sign the broker's certificate; empty = system roots.";
    "MQTT_CLIENT_CERT" => mqtt_client_cert: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "PEM client certificate for TLS client authentication; needs MQTT_CLIENT_KEY.";
    "MQTT_CLIENT_KEY" => mqtt_client_key: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "PEM private key of MQTT_CLIENT_CERT; needs MQTT_CLIENT_CERT.";
    "MQTT_QOS" => mqtt_qos: Qos = "1",
        parse: qos,
        render: render_qos,
        doc: "QoS of published commands: 0 or 1 (2 is not supported).";
    "MQTT_PROTOCOL" => mqtt_protocol: MqttProtocol = "auto",
        parse: mqtt_protocol,
        render: render_mqtt_protocol,
        doc: "MQTT version of the device link (heartbeats, replies): auto (5, and 3.1.1 for a broker that refuses 5), 5 or 3.1.1; commands always go out on 3.1.1.";
    "MQTT_MAX_PACKET_BYTES" => mqtt_max_packet_bytes: usize = "0",
        parse: max_packet_bytes,
        render: render,
        doc: "Largest MQTT packet the brokers take, 0 = unknown or 1024-268435455, in bytes; a command whose PUBLISH is larger is set aside with an error at once.";
    "SOCKET_HOST" => socket_host: String = "127.0.0.1",
        parse: |v| Ok(v.to_string()),
        render: |v| v.clone(),
        doc: "Address the backend TCP listener binds to; empty = no TCP listener (then SOCKET_PATH must be set).";
    "SOCKET_PORT" => socket_port: u16 = "6080",
        parse: socket_port,
        render: render,
        doc: "TCP port the backend listener binds to, 0-65535; 0 lets the system pick a free one (the \"listening on\" log line shows it).";
    "SOCKET_ALLOW" => socket_allow: Vec<AllowRule> = "127.0.0.0/8, ::1",
        parse: allow_list,
        render: |v| render_allow(v),
        doc: "Backend peers allowed in: comma-separated IP addresses or CIDRs; default loopback only.";
    "SOCKET_ALLOW_USERS" => socket_allow_users: Vec<String> = "",
        parse: user_list,
        render: |v| v.join(", "),
        doc: "Local users (names or uids, comma-separated) whose loopback or Unix socket connections are backends; empty = every local user.";
    "SOCKET_PATH" => socket_path: Option<PathBuf> = "",
        parse: socket_path,
        render: render_path,
        doc: "Unix socket for local backends, besides the TCP listener, absolute path; empty = none.";
    "SOCKET_MODE" => socket_mode: u32 = "0660",
        parse: socket_mode,
        render: render_mode,
        doc: "Permission bits of SOCKET_PATH in octal; connecting needs write permission.";
    "SOCKET_GROUP" => socket_group: Option<String> = "",
        parse: socket_group,
        render: render_optional,
        doc: "Group (name or gid) of SOCKET_PATH; empty = the relay's own group.";
    "MAX_CONNECTIONS" => max_connections: usize = "16",
        parse: |v| number(v, 1, 65535, "connections"),
        render: render,
        doc: "Most backend connections open at once, 1-65535; further peers wait in the listen backlog (refused after 10 s without a free place).";
    "MAX_MESSAGE_BYTES" => max_message_bytes: usize = "65536",
        parse: |v| number(v, 64, 16_777_216, "bytes"),
        render: render,
        doc: "Largest JSON value accepted from a backend, 64-16777216, in bytes.";
    "COMMAND_TOPIC" => command_topic: String = "/service/ms500/{unit}/socket",
        parse: command_topic,
        render: |v| v.clone(),
        doc: "Topic commands are published to; {unit} is replaced by the command's unit.";
    "HEARTBEAT_TOPIC" => heartbeat_topic: String = "/device/ms500/+/online",
        parse: plus_filter,
        render: |v| v.clone(),
        doc: "Topic filter of device heartbeats; its one + level is the device id.";
    "REPLY_TOPIC" => reply_topic: String = "/device/ms500/+/socket_reply",
        parse: plus_filter,
        render: |v| v.clone(),
        doc: "Topic filter of device replies to SCS/UDS; its one + level is the unit.";
    "VALIDATE_FIELDS" => validate_fields: bool = "true",
        parse: boolean,
        render: render,
        doc: "Check the fields each command type requires before publishing: true or false.";
    "ACK_MODE" => ack_mode: AckMode = "none",
        parse: parse_ack_mode,
        render: render_ack_mode,
        doc: "Status lines written back to backends: none, errors, all, or camera (all, then delivered when the camera confirmed a command).";
    "QUEUE_CAPACITY" => queue_capacity: usize = "10000",
        parse: |v| number(v, 1, 1_000_000, "commands"),
        render: render,
        doc: "Commands held while the broker is away, 1-1000000; when full, backends are not read.";
    "QUEUE_MAX_BYTES" => queue_max_bytes: usize = "16777216",
        parse: |v| number(v, 65_536, 1_073_741_824, "bytes"),
        render: render,
        doc: "Bytes of commands held at most (payloads), 65536-1073741824; when reached, backends are not read.";
    "COMMAND_TTL" => command_ttl: Option<Duration> = "600",
        parse: ttl,
        render: render_ttl,
        doc: "Age after which a queued command is dropped as expired, 0 = never, in seconds.";
    "COMMAND_TTLS" => command_ttls: Vec<(CommandType, Option<Duration>)> = "",
        parse: ttls,
        render: |v| render_ttls(v),
        doc: "Lifetimes per command type overriding COMMAND_TTL: TYPE:seconds, ... (0 = never), e.g. IMG:60, FMW:604800.";
    "PRESENCE_FIELD" => presence_field: Option<String> = "camera",
        parse: presence_field,
        render: render_optional,
        doc: "Command field naming the camera (its heartbeat id, any letter case) whose presence decides delivery; empty = off.";
    "HOLD_OFFLINE" => hold_offline: bool = "true",
        parse: boolean,
        render: render,
        doc: "Deliver commands naming a camera only while it is present, and keep them until its heartbeats confirm them: true or false (false: published at once, nothing confirmed).";
    "SERIAL_AFTER" => serial_after: Vec<CommandType> = "FMW, APP, AIM, FRS",
        parse: type_list,
        render: |v| render_types(v),
        doc: "Command types that restart or block the camera: after one, its newer commands wait for its next heartbeat (at most SERIAL_TIMEOUT); empty = none.";
    "SERIAL_TIMEOUT" => serial_timeout: Duration = "600",
        parse: |v| seconds(v, 1, MAX_SECONDS),
        render: render_seconds,
        doc: "Longest wait for a camera's heartbeat after a SERIAL_AFTER command before its newer commands go anyway, in seconds.";
    "UNSEEN_WAIT" => unseen_wait: Duration = "90",
        parse: |v| seconds(v, 0, MAX_SECONDS),
        render: render_seconds,
        doc: "How long commands for a camera the relay never saw wait for its first heartbeat before they are published anyway (unconfirmed), in seconds; 0 = at once.";
    "HOLD_MAX_PER_CAMERA" => hold_max_per_camera: usize = "100",
        parse: |v| number(v, 1, 100_000, "commands"),
        render: render,
        doc: "Commands held or unconfirmed at most for one camera, 1-100000; past that, its new commands are refused.";
    "HOLD_MAX_BYTES" => hold_max_bytes: usize = "8388608",
        parse: |v| number(v, 65_536, 1_073_741_824, "bytes"),
        render: render,
        doc: "Bytes of commands held or unconfirmed at most for all cameras (payloads), 65536-1073741824; past that, commands for cameras are refused.";
    "SPOOL_FILE" => spool_file: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "File keeping accepted commands until acknowledged, for replay at restart; empty = off.";
    "DEVICE_TIMEOUT" => device_timeout: Duration = "90",
        parse: |v| seconds(v, 1, MAX_SECONDS),
        render: render_seconds,
        doc: "Silence after which a device is logged as offline, in seconds.";
    "DEVICE_SUMMARY_INTERVAL" => device_summary_interval: Duration = "60",
        parse: |v| seconds(v, 1, MAX_SECONDS),
        render: render_seconds,
        doc: "How often one info line sums up the devices (known, online, heartbeats/s), in seconds; single heartbeats are logged at debug.";
    "MAX_DEVICES" => max_devices: usize = "10000",
        parse: |v| number(v, 1, 1_000_000, "devices"),
        render: render,
        doc: "Devices tracked at most, 1-1000000; past that the longest-silent one is forgotten.";
    "STATUS_FILE" => status_file: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "JSON status snapshot, replaced atomically every STATUS_INTERVAL; empty = off.";
    "STATUS_INTERVAL" => status_interval: Duration = "5",
        parse: |v| seconds(v, 1, 86_400),
        render: render_seconds,
        doc: "Time between two status snapshots, in seconds.";
    "PID_FILE" => pid_file: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "Locked file holding the pid; a second instance exits with code 3; empty = off.";
    "SHUTDOWN_GRACE" => shutdown_grace: Duration = "5",
        parse: |v| seconds(v, 0, 3600),
        render: render_seconds,
        doc: "Time allowed on SIGINT/SIGTERM to publish what is still queued, in seconds.";
    "LOG_LEVEL" => log_level: LevelFilter = "info",
        parse: log_level,
        render: render_level,
        doc: "Log level: error, warn, info, debug, trace or off.";
    "LOG_FILE" => log_file: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "File the relay writes its log to, rotated by size; empty = stderr.";
    "LOG_MAX_BYTES" => log_max_bytes: u64 = "1048576",
        parse: |v| number(v, 65_536, 1_073_741_824, "bytes"),
        render: render,
        doc: "Size at which LOG_FILE is rotated, 65536-1073741824, in bytes.";
    "LOG_KEEP" => log_keep: u32 = "2",
        parse: |v| number(v, 0, 100, "files"),
        render: render,
        doc: "Rotated log files kept (LOG_FILE.1 ... LOG_FILE.N), 0-100.";
    "LOG_SYSLOG" => log_syslog: bool = "false",
        parse: boolean,
        render: render,
        doc: "Send the log to the local syslog socket (/dev/log) instead: true or false.";
    "METRICS_FILE" => metrics_file: Option<PathBuf> = "",
        parse: optional_path,
        render: render_path,
        doc: "Prometheus text file (node_exporter's textfile collector), written with every status snapshot; empty = off.";
    "STATE_TOPIC" => state_topic: Option<String> = "/service/ms500-relay/{client_id}/state",
        parse: state_topic,
        render: render_optional,
        doc: "Retained topic saying whether the relay is online (its last will says offline); empty = off.";
}

impl Config {
    /// The MQTT client id: `MQTT_CLIENT_ID`, or `ms500-relay-HOSTNAME` when
    /// it is empty (host name from /etc/hostname, else `$HOSTNAME`, else
    /// `gateway`; only `A-Z a-z 0-9 - _ .` kept). Stable across restarts, so
    /// the broker's retained state of this relay is replaced, not multiplied;
    /// PID_FILE keeps it to one relay per configuration.
    pub fn client_id(&self) -> String {
        if let Some(id) = &self.mqtt_client_id {
            return id.clone();
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
        self.state_topic
            .as_ref()
            .map(|topic| topic.replace("{client_id}", client_id))
    }

    /// The brokers of `MQTT_BROKER`, in order, each with its port (MQTT_PORT by default).
    pub fn brokers(&self) -> Vec<Broker> {
        self.mqtt_broker
            .iter()
            .map(|b| Broker {
                host: b.host.clone(),
                port: b.port.unwrap_or(self.mqtt_port),
            })
            .collect()
    }

    /// [`Config::brokers`] as a list that cannot be empty: a configuration
    /// made in code without a broker gets the default one, 127.0.0.1.
    pub fn broker_list(&self) -> BrokerList {
        BrokerList::new(self.brokers()).unwrap_or_else(|| {
            BrokerList::one(Broker {
                host: "127.0.0.1".into(),
                port: self.mqtt_port,
            })
        })
    }

    /// `COMMAND_TTL` and `COMMAND_TTLS` together.
    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            ttl: self.command_ttl,
            per_type: self.command_ttls.clone(),
        }
    }

    /// The topic a command for `unit` is published to.
    pub fn command_topic_for(&self, unit: &str) -> String {
        topic_for_unit(&self.command_topic, unit)
    }
}

/// The topic a command for `unit` is published to, by `COMMAND_TOPIC`'s `template`.
pub fn topic_for_unit(template: &str, unit: &str) -> String {
    template.replace("{unit}", unit)
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
    /// The file is writable by group or others: whoever can write it
    /// decides what the relay (often root) writes and where.
    WritableByOthers { path: String, mode: u32 },
    /// The file belongs to another user than root or the relay's: that
    /// user decides what the relay does.
    OtherOwner { path: String, uid: u32, relay: u32 },
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
            ConfigError::WritableByOthers { path, mode } => write!(
                f,
                "{path} is writable by group or others (mode {mode:04o}): anyone who can \
                 write it decides what the relay does; chmod go-w {path}"
            ),
            ConfigError::OtherOwner { path, uid, relay } => write!(
                f,
                "{path} belongs to uid {uid}, not to root or the relay's user (uid {relay}): \
                 that user would decide what the relay does; chown it"
            ),
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
            ConfigError::Line { .. }
            | ConfigError::WritableByOthers { .. }
            | ConfigError::OtherOwner { .. } => None,
        }
    }
}

/// Parses relay.conf text; `source` is the file name used in messages.
/// The first error found refuses the whole file.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let (config, mut errors) = parse_all(text, source);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors.remove(0))
    }
}

/// Parses relay.conf text, going on past lines that cannot be used: the
/// configuration from every good line (defaults elsewhere), and every error
/// in line order. For `check-config`, which reports all of them at once,
/// and for `stop`, `status` and `watchdog`, which act on the keys they need
/// as long as those are good.
pub fn parse_all(text: &str, source: &str) -> (Config, Vec<ConfigError>) {
    let error = |line: usize, key: Option<&str>, reason: String| ConfigError::Line {
        source: source.to_string(),
        line,
        key: key.map(str::to_string),
        reason,
    };
    let mut config = Config::default();
    let mut errors = Vec::new();
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let entry = match split_line(raw) {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            Err(LineError::Syntax) => {
                errors.push(error(number, None, "expected KEY = value".to_string()));
                continue;
            }
            Err(LineError::Value { key, reason }) => {
                errors.push(error(number, Some(key), reason.to_string()));
                continue;
            }
        };
        let Some(known) = KEYS.iter().find(|k| k.key == entry.key) else {
            errors.push(error(number, Some(entry.key), unknown_key(entry.key)));
            continue;
        };
        match config.set(known.key, &entry.value) {
            Ok(()) => {
                seen.insert(known.key, number);
            }
            Err(reason) => errors.push(error(number, Some(known.key), reason)),
        }
    }
    for check in [check_client_auth, check_state_lengths, check_some_listener] {
        if let Err((line, key, reason)) = check(&config, &seen) {
            errors.push(error(line, Some(key), reason));
        }
    }
    (config, errors)
}

impl ConfigError {
    /// The key the error is about, when it is about one line's key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Line { key, .. } => key.as_deref(),
            _ => None,
        }
    }
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
    let has_cert = config.mqtt_client_cert.is_some();
    let has_key = config.mqtt_client_key.is_some();
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

/// An empty SOCKET_HOST turns the TCP listener off, which only makes sense
/// with the Unix socket.
fn check_some_listener(
    config: &Config,
    seen: &HashMap<&'static str, usize>,
) -> Result<(), (usize, &'static str, String)> {
    if !config.socket_host.is_empty() || config.socket_path.is_some() {
        return Ok(());
    }
    Err((
        seen.get("SOCKET_HOST").copied().unwrap_or(0),
        "SOCKET_HOST",
        "must not be empty: give an address to bind (empty turns the TCP listener off, \
         only with SOCKET_PATH set)"
            .to_string(),
    ))
}

/// The default client id, `ms500-relay-HOSTNAME`, is at most this long: a
/// Linux host name has at most 64 bytes (HOST_NAME_MAX).
const LONGEST_DEFAULT_CLIENT_ID: usize = "ms500-relay-".len() + 64;

/// The bytes of a STATE_TOPIC message besides the client id it quotes
/// (about 110 today: state, version, pid and start time); a codec test
/// holds the publish link's messages to it.
pub const STATE_MESSAGE_WITHOUT_ID: usize = 160;

/// STATE_TOPIC with `{client_id}` filled in is a topic, and its offline
/// message, which quotes the client id, is the last will of the publish
/// link's CONNECT: both must fit an MQTT string. A topic too long names the
/// later of STATE_TOPIC and MQTT_CLIENT_ID (the id only when it is filled
/// in); a will too long names MQTT_CLIENT_ID, since only a set one can be long.
fn check_state_lengths(
    config: &Config,
    seen: &HashMap<&'static str, usize>,
) -> Result<(), (usize, &'static str, String)> {
    let Some(topic) = &config.state_topic else {
        return Ok(());
    };
    let id = config.mqtt_client_id.as_deref();
    let id_len = id.map_or(LONGEST_DEFAULT_CLIENT_ID, str::len);
    let fills = topic.matches("{client_id}").count();
    let topic_len = topic.len() - fills * "{client_id}".len() + fills * id_len;
    let state_line = seen.get("STATE_TOPIC").copied().unwrap_or(0);
    let id_line = seen.get("MQTT_CLIENT_ID").copied().unwrap_or(0);
    let limit = MAX_MQTT_STRING;
    if topic_len > limit {
        return Err(if fills > 0 && id.is_some() && id_line > state_line {
            (
                id_line,
                "MQTT_CLIENT_ID",
                format!(
                    "is {id_len} bytes: STATE_TOPIC with it filled in would be {topic_len} \
                     bytes, more than the {limit} bytes an MQTT topic can hold"
                ),
            )
        } else {
            let size = if fills > 0 {
                format!("would be {topic_len} bytes with {{client_id}} filled in ({id_len} bytes)")
            } else {
                format!("is {topic_len} bytes")
            };
            (
                state_line,
                "STATE_TOPIC",
                format!("{size}, more than the {limit} bytes an MQTT topic can hold"),
            )
        });
    }
    let quoted_id = id.map_or(LONGEST_DEFAULT_CLIENT_ID + 2, |id| {
        serde_json::Value::from(id).to_string().len()
    });
    if STATE_MESSAGE_WITHOUT_ID + quoted_id > limit {
        return Err((
            id_line,
            "MQTT_CLIENT_ID",
            format!(
                "is {id_len} bytes ({quoted_id} in JSON): STATE_TOPIC's offline message, the \
                 connection's last will, would be more than the {limit} bytes an MQTT will \
                 message can hold (with {STATE_MESSAGE_WITHOUT_ID} for the rest of it)"
            ),
        ));
    }
    Ok(())
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

/// Mode of `path` when it lets group or others write to it.
pub fn writable_by_others(path: &Path) -> Option<u32> {
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(path).ok()?) & 0o7777;
    (mode & 0o022 != 0).then_some(mode)
}

/// relay.conf as read: its configuration, the file (None: none found, the
/// built-in defaults) and the lines that could not be used.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub source: Option<PathBuf>,
    /// What a tool may go on without ([`load_all`]); empty from [`load`].
    pub problems: Vec<ConfigError>,
}

/// Reads relay.conf: the file given with `-c`, or else `./relay.conf`, or
/// else `/etc/ms500-relay/relay.conf`. A file writable by group or others
/// is refused, as ssh and mosquitto refuse theirs, and so is one that belongs
/// to another user than root or `relay_uid` (the relay's own user, given
/// by the caller). With no file given and none found, the
/// defaults apply and no path is returned.
pub fn load(path: Option<&Path>, relay_uid: u32) -> Result<Loaded, ConfigError> {
    let mut loaded = load_all(path, relay_uid)?;
    if loaded.problems.is_empty() {
        Ok(loaded)
    } else {
        Err(loaded.problems.remove(0))
    }
}

/// As [`load`], but a line that cannot be used does not refuse the file:
/// the configuration of its good lines comes with every error
/// ([`parse_all`]). A file that cannot be read, that others may write, or
/// that belongs to another user than root or `relay_uid`, is still refused.
pub fn load_all(path: Option<&Path>, relay_uid: u32) -> Result<Loaded, ConfigError> {
    let Some((path, text)) = find(path)? else {
        return Ok(Loaded {
            config: Config::default(),
            source: None,
            problems: Vec::new(),
        });
    };
    if let Some(mode) = writable_by_others(&path) {
        return Err(ConfigError::WritableByOthers {
            path: path.display().to_string(),
            mode,
        });
    }
    if let Some(uid) = std::fs::metadata(&path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .filter(|&uid| uid != 0 && uid != relay_uid)
    {
        return Err(ConfigError::OtherOwner {
            path: path.display().to_string(),
            uid,
            relay: relay_uid,
        });
    }
    let (config, problems) = parse_all(&text, &path.display().to_string());
    Ok(Loaded {
        config,
        source: Some(path),
        problems,
    })
}

/// The configuration file to read and its text: `path`, or the first of the
/// usual places that exists; None when none does.
fn find(path: Option<&Path>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let read_error = |path: &Path, source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
        return Ok(Some((path.to_path_buf(), text)));
    }
    for candidate in [
        Path::new("./relay.conf"),
        Path::new("/etc/ms500-relay/relay.conf"),
    ] {
        match std::fs::read_to_string(candidate) {
            Ok(text) => return Ok(Some((candidate.to_path_buf(), text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_error(candidate, e)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
