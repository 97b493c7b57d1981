//! Device heartbeats (PROTOCOL.md §2.3): the payload parsed into a
//! [`Heartbeat`] (every field optional, missing shown as `absent`) and its
//! one-line rendering for the log. Pure; called on the device link thread
//! for every message on `HEARTBEAT_TOPIC`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Number;

use crate::ops::log_limit::cut_to;
use crate::protocol::redact;

/// Longest string kept from a heartbeat (and longest device id), in
/// characters: what is stored, shown and logged is cut to this.
pub const MAX_FIELD_CHARS: usize = 64;

/// A device's text as it may be stored and shown: control characters
/// escaped, cut to [`MAX_FIELD_CHARS`] (saying how long it was).
pub fn shown(text: &str) -> String {
    shown_ref(text).into_owned()
}

/// [`shown`], without a copy when `text` is shown as it is.
pub fn shown_ref(text: &str) -> std::borrow::Cow<'_, str> {
    match cut_to(text, MAX_FIELD_CHARS) {
        std::borrow::Cow::Borrowed(short) => redact::printable(short),
        std::borrow::Cow::Owned(cut) => {
            std::borrow::Cow::Owned(redact::printable(&cut).into_owned())
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    pub device_id: Option<String>,
    pub msg_type: Option<String>,
    /// As the device sent it (number or string), rendered as JSON text.
    pub timestamp: Option<String>,
    pub ip: Option<String>,
    pub network: Option<String>,
    pub eth_connected: Option<bool>,
    pub wifi_connected: Option<bool>,
    pub lte_connected: Option<bool>,
    pub cpu_temp: Option<f64>,
    pub sense_temp: Option<f64>,
    pub video_fps: Option<f64>,
    pub spi_fps: Option<f64>,
    pub lte_signal: Option<f64>,
}

/// Largest heartbeat parsed. A real one is a few hundred bytes (odd ones
/// with long fields are still shown, cut); parsing a 1 MiB one into a JSON
/// tree would take tens of MiB for a moment.
pub const MAX_HEARTBEAT_BYTES: usize = 256 * 1024;

/// The fields read from a heartbeat, in [`Fields`]' order; every other
/// member is skipped unparsed.
const FIELDS: [&str; 13] = [
    "device_id",
    "msg_type",
    "timestamp",
    "ip",
    "network",
    "eth_connected",
    "wifi_connected",
    "lte_connected",
    "cpu_temp",
    "sense_temp",
    "video_fps",
    "spi_fps",
    "lte_signal",
];

/// The values of the [`FIELDS`] a heartbeat has. Read straight from the
/// bytes (one a few hundred bytes long arrives hundreds of times a second):
/// no JSON tree of the whole object, no copy of a key, of a member the
/// relay does not show, or of a string without escapes.
struct Fields<'de>([Option<Field<'de>>; FIELDS.len()]);

/// One member's value, as far as the relay tells them apart.
enum Field<'de> {
    Null,
    Bool(bool),
    Number(Number),
    Text(Cow<'de, str>),
    /// An object or an array.
    Nested,
}

impl<'de> Fields<'de> {
    fn get(&self, key: &str) -> Option<&Field<'de>> {
        let i = FIELDS.iter().position(|f| *f == key)?;
        self.0[i].as_ref()
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n.into()))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Field<'de>, E> {
        // JSON has no NaN or infinity: always a number.
        Ok(Number::from_f64(n).map_or(Field::Null, Field::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(s.to_string())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Nested)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Nested)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields(Default::default());
        while let Some(known) = map.next_key_seed(FieldName)? {
            match known {
                // As serde_json's own map: the last of repeated members counts.
                Some(i) => fields.0[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A member name: its index in [`FIELDS`], or `None` for one not read.
struct FieldName;

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(FIELDS.iter().position(|f| *f == name))
    }
}

/// Parses a heartbeat payload, reading only the fields it shows and
/// skipping the rest. `Err` says why it is odd: not a JSON object, or a
/// known field of a type that makes no sense (the caller logs one warn
/// line and does nothing else with it).
pub fn parse(payload: &[u8]) -> Result<Heartbeat, String> {
    if payload.len() > MAX_HEARTBEAT_BYTES {
        return Err(format!(
            "{} bytes, more than a heartbeat's {MAX_HEARTBEAT_BYTES}: not parsed",
            payload.len()
        ));
    }
    let map: Fields = serde_json::from_slice(payload).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "not a JSON object".to_string(),
        _ => format!("not JSON: {e}"),
    })?;
    Ok(Heartbeat {
        device_id: text(&map, "device_id")?,
        msg_type: text(&map, "msg_type")?,
        // As JSON text: a string keeps its quotes.
        timestamp: match map.get("timestamp") {
            None | Some(Field::Null) => None,
            Some(Field::Number(n)) => Some(shown(&n.to_string())),
            Some(Field::Text(s)) => Some(shown(&serde_json::Value::from(&**s).to_string())),
            Some(_) => return Err(r#"field "timestamp" must be a number or a string"#.into()),
        },
        ip: text(&map, "ip")?,
        network: text(&map, "network")?,
        eth_connected: flag(&map, "eth_connected")?,
        wifi_connected: flag(&map, "wifi_connected")?,
        lte_connected: flag(&map, "lte_connected")?,
        cpu_temp: number(&map, "cpu_temp")?,
        sense_temp: number(&map, "sense_temp")?,
        video_fps: number(&map, "video_fps")?,
        spi_fps: number(&map, "spi_fps")?,
        lte_signal: number(&map, "lte_signal")?,
    })
}

fn text(map: &Fields<'_>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Field::Null) => Ok(None),
        // Shown in log lines and the status output: no control characters.
        Some(Field::Text(s)) => Ok(Some(shown(s))),
        Some(Field::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("field {key:?} must be a string")),
    }
}

fn flag(map: &Fields<'_>, key: &str) -> Result<Option<bool>, String> {
    match map.get(key) {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Bool(b)) => Ok(Some(*b)),
        Some(Field::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Field::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(format!("field {key:?} must be true, false, 0 or 1")),
    }
}

fn number(map: &Fields<'_>, key: &str) -> Result<Option<f64>, String> {
    match map.get(key) {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Number(n)) => Ok(n.as_f64()),
        // Some firmware sends numbers as strings; accept them when they parse.
        Some(Field::Text(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("field {key:?} must be a number")),
        Some(_) => Err(format!("field {key:?} must be a number")),
    }
}

/// Writes `absent` for a missing value.
struct Shown<'a, T>(&'a Option<T>, &'a str);

impl<T: fmt::Display> fmt::Display for Shown<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}{}", self.1),
            None => f.write_str("absent"),
        }
    }
}

fn up_down(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "up",
        Some(false) => "down",
        None => "absent",
    }
}

impl Heartbeat {
    /// `ts=… ip=… net=… eth=up wifi=down lte=absent cpu=47.5C sense=39C video=15fps spi=30fps[ lte_signal=-71]`
    /// What an operator wants to see of a camera when it appears, returns
    /// or moves, on its info line: address, network, links, temperatures
    /// and frame rates, short (a fleet's first minute logs 40 of these).
    pub fn brief(&self) -> String {
        format!(
            "ip={} net={} eth={} wifi={} lte={} cpu={} sense={} fps={}/{}",
            Shown(&self.ip, ""),
            Shown(&self.network, ""),
            up_down(self.eth_connected),
            up_down(self.wifi_connected),
            up_down(self.lte_connected),
            Shown(&self.cpu_temp, "C"),
            Shown(&self.sense_temp, "C"),
            Shown(&self.video_fps, ""),
            Shown(&self.spi_fps, ""),
        )
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "ts={} ip={} net={} eth={} wifi={} lte={} cpu={} sense={} video={} spi={}",
            Shown(&self.timestamp, ""),
            Shown(&self.ip, ""),
            Shown(&self.network, ""),
            up_down(self.eth_connected),
            up_down(self.wifi_connected),
            up_down(self.lte_connected),
            Shown(&self.cpu_temp, "C"),
            Shown(&self.sense_temp, "C"),
            Shown(&self.video_fps, "fps"),
            Shown(&self.spi_fps, "fps"),
        );
        if let Some(signal) = self.lte_signal {
            s.push_str(&format!(" lte_signal={signal}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_a_heartbeat_with_everything_absent() {
        let hb = parse(b"{}").unwrap();
        assert_eq!(hb, Heartbeat::default());
        let s = hb.summary();
        assert!(s.contains("cpu=absent") && s.contains("eth=absent"), "{s}");
        assert!(!s.contains("lte_signal"), "{s}");
        assert!(!s.contains('0'), "absent must not read as zero: {s}");
    }

    #[test]
    fn odd_payloads_are_errors() {
        assert!(parse(b"").is_err());
        assert!(parse(b"online").is_err());
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(b"\xff").is_err());
        assert!(parse(br#"{"cpu_temp":"hot"}"#)
            .unwrap_err()
            .contains("cpu_temp"));
        assert!(parse(br#"{"eth_connected":2}"#)
            .unwrap_err()
            .contains("eth_connected"));
        assert!(parse(br#"{"ip":{}}"#).is_err());
        assert!(parse(br#"{"timestamp":[1]}"#).is_err());
    }

    #[test]
    fn full_heartbeat_summary() {
        let hb = parse(
            br#"{"device_id":"cam-01","msg_type":"online","timestamp":1764391000,"ip":"10.0.0.7",
                "network":"lte","eth_connected":false,"wifi_connected":0,"lte_connected":true,
                "cpu_temp":47.5,"sense_temp":"39.25","video_fps":15,"spi_fps":30.0,"lte_signal":-71}"#,
        )
        .unwrap();
        assert_eq!(
            hb.summary(),
            "ts=1764391000 ip=10.0.0.7 net=lte eth=down wifi=down lte=up cpu=47.5C sense=39.25C \
             video=15fps spi=30fps lte_signal=-71"
        );
    }

    #[test]
    fn zero_values_are_shown_as_zero_not_absent() {
        let hb = parse(br#"{"cpu_temp":0,"video_fps":0.0}"#).unwrap();
        let s = hb.summary();
        assert!(s.contains("cpu=0C") && s.contains("video=0fps"), "{s}");
    }

    #[test]
    fn long_strings_are_cut_before_they_are_stored() {
        let long = "x".repeat(70_000);
        let hb = parse(format!(r#"{{"ip":"{long}","network":"a\nb"}}"#).as_bytes()).unwrap();
        let ip = hb.ip.unwrap();
        assert!(ip.starts_with(&"x".repeat(MAX_FIELD_CHARS)));
        assert!(ip.ends_with("… (70000 characters)"), "{ip}");
        assert!(ip.chars().count() < 100);
        assert_eq!(hb.network.as_deref(), Some("a\\nb"));
    }

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let hb = parse(br#"{"ip":null,"firmware":"1.2","extra":{"a":1}}"#).unwrap();
        assert_eq!(hb.ip, None);
    }

    #[test]
    fn a_heartbeat_larger_than_any_real_one_is_odd_without_being_parsed() {
        let big = format!(
            r#"{{"ip":"1.2.3.4","pad":"{}"}}"#,
            "x".repeat(MAX_HEARTBEAT_BYTES)
        );
        let why = parse(big.as_bytes()).unwrap_err();
        assert!(why.contains("not parsed"), "{why}");
        assert!(parse(br#"{"ip":"1.2.3.4"}"#).is_ok());
    }
}
