//! The value types of relay.conf keys and how each is read from, and
//! written back to, its text. Pure; used by the key table in `config.rs`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::CommandType;

/// Longest time any seconds key accepts (one year): far beyond any sensible
/// setting, and small enough that `Instant + Duration` can never overflow.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Longest MQTT string in bytes: topics, client ids, user names, passwords
/// and the will message carry a two-byte length (MQTT 3.1.1 §1.5.3). The
/// codec's `MAX_STRING`, which config, below every other module, cannot
/// import; a codec test holds the two equal.
pub const MAX_MQTT_STRING: usize = 65_535;

/// Longest unit a command can carry, in bytes (units are ASCII): what
/// `{unit}` in COMMAND_TOPIC can become (`protocol::command::MAX_UNIT_CHARS`).
pub const LONGEST_UNIT: usize = 128;

/// The longest of what the relay appends to the client id for its
/// connections (`-pub`, `-sub`, and this one when it probes the first broker).
pub const LONGEST_CLIENT_ID_SUFFIX: &str = "-pub-probe";

/// Why a value cannot go into an MQTT string; `why` (empty, or `: …`) says
/// what it would become. The value itself is not quoted: it is long, and
/// may be a password.
fn too_long_for_mqtt(len: usize, why: &str) -> String {
    format!("is {len} bytes{why}, more than the {MAX_MQTT_STRING} bytes an MQTT string can hold")
}

/// `MQTT_USERNAME`, `MQTT_PASSWORD`: empty means "not set"; at most one
/// MQTT string.
pub fn optional_mqtt_string(value: &str) -> Result<Option<String>, String> {
    if value.len() > MAX_MQTT_STRING {
        return Err(too_long_for_mqtt(value.len(), ""));
    }
    optional_text(value)
}

/// `MQTT_CLIENT_ID`: empty means the default; the longest id the relay
/// sends (this one with [`LONGEST_CLIENT_ID_SUFFIX`]) must be an MQTT string.
pub fn client_id(value: &str) -> Result<Option<String>, String> {
    let longest = value.len() + LONGEST_CLIENT_ID_SUFFIX.len();
    if longest > MAX_MQTT_STRING {
        return Err(too_long_for_mqtt(
            value.len(),
            &format!(
                ": with {LONGEST_CLIENT_ID_SUFFIX} appended the client id would be {longest} bytes"
            ),
        ));
    }
    optional_text(value)
}

/// Which status lines go back to the backend (`ACK_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Nothing but device replies.
    None,
    /// One line per rejected or expired command.
    Errors,
    /// One line per command.
    All,
    /// One line per command, then `delivered` once its camera confirmed it
    /// (or `resent` when it had to go again).
    Camera,
}

impl AckMode {
    /// The relay.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Errors => "errors",
            AckMode::All => "all",
            AckMode::Camera => "camera",
        }
    }
}

/// QoS of published commands (`MQTT_QOS`); QoS 2 is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::AtMostOnce => "0",
            Qos::AtLeastOnce => "1",
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

/// One broker of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The brokers of `MQTT_BROKER` in order, never empty: the first is kept
/// apart, so that no look-up in it can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerList {
    first: Broker,
    rest: Vec<Broker>,
}

impl BrokerList {
    /// None for an empty list (a parsed `MQTT_BROKER` never is one).
    pub fn new(list: Vec<Broker>) -> Option<BrokerList> {
        let mut list = list.into_iter();
        let first = list.next()?;
        Some(BrokerList {
            first,
            rest: list.collect(),
        })
    }

    /// A list of one.
    pub fn one(broker: Broker) -> BrokerList {
        BrokerList {
            first: broker,
            rest: Vec::new(),
        }
    }

    pub fn first(&self) -> &Broker {
        &self.first
    }

    /// Broker `n` of the list (0 is the first), when there is one.
    pub fn get(&self, n: usize) -> Option<&Broker> {
        match n.checked_sub(1) {
            None => Some(&self.first),
            Some(i) => self.rest.get(i),
        }
    }

    /// How many brokers it names (at least one).
    pub fn count(&self) -> usize {
        1 + self.rest.len()
    }

    /// Where `broker` is in the list (its first place), if it is listed.
    pub fn position(&self, broker: &Broker) -> Option<usize> {
        self.iter().position(|b| b == broker)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Broker> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}

/// One `MQTT_BROKER` entry: a host, with its own port when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: Option<u16>,
}

pub fn brokers(value: &str) -> Result<Vec<BrokerAddr>, String> {
    Ok(parse_list(value)?
        .into_iter()
        .map(|(host, port)| BrokerAddr { host, port })
        .collect())
}

/// Parses `MQTT_BROKER`: comma-separated `host`, `host:port`, `[v6]:port`
/// or a bare IPv6 address; entries without a port get `None`.
pub fn parse_list(value: &str) -> Result<Vec<(String, Option<u16>)>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad_port = |p: &str| format!("{entry:?}: {p:?} is not a port number (1-65535)");
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad_port(p)),
        };
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{entry:?}: missing ']' after an IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(port(p)?)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{entry:?}: unexpected text after ']'")),
            }
        } else if entry.matches(':').count() > 1 {
            // A bare IPv6 address: no port can follow without brackets.
            (entry, None)
        } else if let Some((host, p)) = entry.split_once(':') {
            (host, Some(port(p)?))
        } else {
            (entry, None)
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{entry:?} is not a host name or address"));
        }
        out.push((host.to_string(), port));
    }
    if out.is_empty() {
        return Err("must name at least one broker: host[:port], host[:port], ...".into());
    }
    Ok(out)
}

pub fn render_brokers(list: &[BrokerAddr]) -> String {
    list.iter()
        .map(|b| match (b.port, b.host.contains(':')) {
            (None, _) => b.host.clone(),
            (Some(p), true) => format!("[{}]:{p}", b.host),
            (Some(p), false) => format!("{}:{p}", b.host),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn text(value: &str) -> Result<String, String> {
    Ok(value.to_string())
}

/// Empty means "not set".
pub fn optional_text(value: &str) -> Result<Option<String>, String> {
    Ok((!value.is_empty()).then(|| value.to_string()))
}

/// Empty means "off".
/// A file key: empty = none; else an absolute path naming a file. The
/// relay and its tools run from other working directories (cron's, a
/// shell's), where a relative path would name another file for each.
pub fn optional_path(value: &str) -> Result<Option<PathBuf>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.starts_with('/') {
        return Err(format!(
            "{value:?} is not an absolute path (the relay and its tools may run from any directory)"
        ));
    }
    let path = PathBuf::from(value);
    let names_a_file = matches!(
        path.components().next_back(),
        Some(std::path::Component::Normal(_))
    );
    if value.ends_with('/') || !names_a_file {
        return Err(format!("{value:?} does not name a file"));
    }
    Ok(Some(path))
}

pub fn render_optional(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

pub fn render_path(value: &Option<PathBuf>) -> String {
    value
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A secret is never shown: `***` when set.
pub fn render_secret(value: &Option<String>) -> String {
    match value {
        Some(_) => "***".to_string(),
        None => String::new(),
    }
}

pub fn render<T: ToString>(value: &T) -> String {
    value.to_string()
}

/// Whole seconds in `min..=max`.
pub fn seconds(value: &str, min: u64, max: u64) -> Result<Duration, String> {
    number::<u64>(value, min, max, "seconds").map(Duration::from_secs)
}

pub fn render_seconds(value: &Duration) -> String {
    value.as_secs().to_string()
}

/// `COMMAND_TTL`: seconds, 0 = never.
pub fn ttl(value: &str) -> Result<Option<Duration>, String> {
    seconds(value, 0, MAX_SECONDS).map(|d| (!d.is_zero()).then_some(d))
}

pub fn render_ttl(value: &Option<Duration>) -> String {
    value.map_or(0, |d| d.as_secs()).to_string()
}

/// `COMMAND_TTLS`: `TYPE:seconds, ...`, each type at most once, 0 = never.
pub fn ttls(value: &str) -> Result<Vec<(CommandType, Option<Duration>)>, String> {
    let mut out: Vec<(CommandType, Option<Duration>)> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kind, secs) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?} is not TYPE:seconds"))?;
        let kind = command_type(kind.trim())?;
        if out.iter().any(|(k, _)| *k == kind) {
            return Err(format!("{kind} is given twice"));
        }
        out.push((kind, ttl(secs.trim())?));
    }
    Ok(out)
}

pub fn render_ttls(list: &[(CommandType, Option<Duration>)]) -> String {
    list.iter()
        .map(|(kind, ttl)| format!("{kind}:{}", render_ttl(ttl)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SERIAL_AFTER`: command types, each at most once; empty = none.
pub fn type_list(value: &str) -> Result<Vec<CommandType>, String> {
    let mut out: Vec<CommandType> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let kind = command_type(name)?;
        if out.contains(&kind) {
            return Err(format!("{kind} is given twice"));
        }
        out.push(kind);
    }
    Ok(out)
}

pub fn render_types(list: &[CommandType]) -> String {
    list.iter()
        .map(|kind| kind.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One command type, named as `type` names it.
fn command_type(name: &str) -> Result<CommandType, String> {
    CommandType::parse(name)
        .ok_or_else(|| format!("{name:?} is not a command type ({})", CommandType::names()))
}

/// `PRESENCE_FIELD`: a field name a command can carry; empty = off.
pub fn presence_field(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 64
        || value
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "{value:?} is not a field name (at most 64 characters, no quotes, backslashes or control characters)"
        ));
    }
    if matches!(value, "type" | "unit" | "id") {
        return Err(format!("{value:?} names the command itself, not a camera"));
    }
    Ok(Some(value.to_string()))
}

pub fn render_ack_mode(value: &AckMode) -> String {
    value.as_str().to_string()
}

pub fn render_qos(value: &Qos) -> String {
    value.as_str().to_string()
}

pub fn render_level(value: &LevelFilter) -> String {
    value.as_str().to_ascii_lowercase()
}

pub fn render_allow(rules: &[AllowRule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SOCKET_PORT` may be 0 (the system picks a free port); other ports may not.
pub fn socket_port(value: &str) -> Result<u16, String> {
    value
        .parse::<u16>()
        .map_err(|_| format!("{value:?} is not a port number (0-65535; 0 lets the system choose)"))
}

pub fn non_empty(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("must not be empty: give {what}"))
    } else {
        Ok(value.to_string())
    }
}

pub fn port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(format!("{value:?} is not a port number (1-65535)")),
    }
}

/// A whole number in `min..=max`; `unit` names what it counts.
pub fn number<T>(value: &str, min: u64, max: u64, unit: &str) -> Result<T, String>
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

/// `MQTT_PROTOCOL`: the MQTT version of the device link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 5, and 3.1.1 for a broker that refuses 5.
    Auto,
    V5,
    V311,
}

pub fn mqtt_protocol(value: &str) -> Result<MqttProtocol, String> {
    match value {
        "auto" => Ok(MqttProtocol::Auto),
        "5" => Ok(MqttProtocol::V5),
        "3.1.1" => Ok(MqttProtocol::V311),
        _ => Err(format!("{value:?} is not auto, 5 or 3.1.1")),
    }
}

pub fn render_mqtt_protocol(value: &MqttProtocol) -> String {
    match value {
        MqttProtocol::Auto => "auto",
        MqttProtocol::V5 => "5",
        MqttProtocol::V311 => "3.1.1",
    }
    .to_string()
}

/// `MQTT_MAX_PACKET_BYTES`: 0 (no limit known) or a limit no broker goes below.
pub fn max_packet_bytes(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Ok(0),
        Ok(n) if (1024..=268_435_455).contains(&n) => Ok(n),
        _ => Err(format!(
            "{value:?} is not 0 or a whole number of bytes (1024-268435455)"
        )),
    }
}

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(format!(
            "{value:?} is not a boolean (true/false, yes/no, on/off, 1/0)"
        )),
    }
}

pub fn qos(value: &str) -> Result<Qos, String> {
    match value {
        "0" => Ok(Qos::AtMostOnce),
        "1" => Ok(Qos::AtLeastOnce),
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
        "camera" => Ok(AckMode::Camera),
        _ => Err(format!("{value:?} is not one of none, errors, all, camera")),
    }
}

pub fn log_level(value: &str) -> Result<LevelFilter, String> {
    match value.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        "off" => Ok(LevelFilter::Off),
        _ => Err(format!(
            "{value:?} is not one of error, warn, info, debug, trace, off"
        )),
    }
}

/// A comma-separated list of addresses and CIDRs; empty entries (a trailing
/// comma) are skipped, but the list itself must not be empty.
pub fn allow_list(value: &str) -> Result<Vec<AllowRule>, String> {
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

pub fn allow_rule(entry: &str) -> Result<AllowRule, String> {
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

pub fn command_topic(value: &str) -> Result<String, String> {
    if value.matches("{unit}").count() != 1 {
        return Err(format!("{value:?} must contain {{unit}} exactly once"));
    }
    // {unit} is there once, so this cannot underflow.
    let longest = value.len() - "{unit}".len() + LONGEST_UNIT;
    if longest > MAX_MQTT_STRING {
        return Err(too_long_for_mqtt(
            value.len(),
            &format!(
                ": with a unit of {LONGEST_UNIT} characters a command's topic would be \
                 {longest} bytes"
            ),
        ));
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
pub fn state_topic(value: &str) -> Result<Option<String>, String> {
    if value.contains(['+', '#']) {
        return Err(format!(
            "{value:?} must not contain the MQTT wildcards + or #"
        ));
    }
    optional_text(value)
}

/// A subscription filter whose one `+` level carries the device id or unit.
pub fn plus_filter(value: &str) -> Result<String, String> {
    if value.len() > MAX_MQTT_STRING {
        return Err(too_long_for_mqtt(value.len(), ""));
    }
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

/// `SOCKET_ALLOW_USERS`: user names or uids, comma-separated; empty = every
/// local user. Names are resolved when the listener starts (`backend::peers`).
pub fn user_list(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let name_like = entry.len() <= 32
                && entry
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b));
            if name_like {
                Ok(entry.to_string())
            } else {
                Err(format!("{entry:?} is not a user name or uid"))
            }
        })
        .collect()
}

/// Longest `SOCKET_PATH` in bytes: a Unix socket address holds 108 bytes
/// with its terminating NUL (`sun_path`).
pub const LONGEST_SOCKET_PATH: usize = 107;

/// `SOCKET_PATH`: empty = no Unix socket; else an absolute path short
/// enough for a socket address.
pub fn socket_path(value: &str) -> Result<Option<PathBuf>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.starts_with('/') {
        return Err(format!("{value:?} is not an absolute path"));
    }
    if value.len() > LONGEST_SOCKET_PATH {
        return Err(format!(
            "is {} bytes, more than the {LONGEST_SOCKET_PATH} a Unix socket's path can hold",
            value.len()
        ));
    }
    Ok(Some(PathBuf::from(value)))
}

/// `SOCKET_MODE`: the socket file's permission bits in octal, 0-0777
/// (connecting needs write permission on it).
pub fn socket_mode(value: &str) -> Result<u32, String> {
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o777 && !value.is_empty() => Ok(mode),
        _ => Err(format!(
            "{value:?} is not a mode in octal, 0000-0777 (e.g. 0660)"
        )),
    }
}

pub fn render_mode(mode: &u32) -> String {
    format!("{mode:04o}")
}

/// `SOCKET_GROUP`: empty = the relay's own group; else one group name or gid
/// (whether it exists is checked by check-config and at start).
pub fn socket_group(value: &str) -> Result<Option<String>, String> {
    match user_list(value)?.as_slice() {
        [] => Ok(None),
        [one] if !value.contains(',') => Ok(Some(one.clone())),
        _ => Err(format!("{value:?} is not one group name or gid")),
    }
}
