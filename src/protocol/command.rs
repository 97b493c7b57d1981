//! Command validation (PROTOCOL.md §1.2): one framed [`Json`] value becomes
//! a validated [`Command`] to publish, or a [`Rejection`] whose reason names
//! the offending field (never quoting a value but `type` and `unit`). Only
//! the fields a rule needs are decoded, from the spans the framer noted;
//! the payload is the received bytes, untouched. Pure; called by the
//! session threads after framing and by the publisher reading the spool.

use std::borrow::Cow;
use std::collections::hash_map::{Entry, HashMap};
use std::fmt;

use crate::config::AckMode;
use crate::protocol::frame;
use crate::protocol::json::{self, Json};
use crate::protocol::redact;

#[cfg(test)]
mod tests;

/// Longest accepted `unit`, in characters (it becomes an MQTT topic level).
pub const MAX_UNIT_CHARS: usize = 128;

/// Longest excerpt of a `type` or `unit` value quoted in a reason.
const QUOTED_CHARS: usize = 64;

/// Above this many top-level fields, duplicate and case-variant names are
/// found with a hash map instead of comparing every pair.
const PAIRWISE_DUPLICATE_CHECK_MAX: usize = 16;

pub use crate::config::CommandType;

impl CommandType {
    /// Whether the device answers on `socket_reply`, making the sender the unit's reply route.
    pub fn wants_reply(self) -> bool {
        matches!(self, CommandType::Scs | CommandType::Uds)
    }
}

/// A command that passed validation and is ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub kind: CommandType,
    pub unit: String,
    /// The command's own `id` field as compact JSON text (e.g. `42` or `"abc"`), when present, to echo in status lines.
    pub id: Option<String>,
    /// The exact bytes received (trimmed), published unchanged.
    pub payload: Vec<u8>,
}

/// Why a value is not a command, with what could be read of it for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    /// The `type` field, when it was a string.
    pub kind: Option<String>,
    /// The `unit` field, when it was a string.
    pub unit: Option<String>,
    /// The `id` field as compact JSON text, when present.
    pub id: Option<String>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    /// What could be read of the command, for a log line:
    /// `type "AIM", unit "cam-01", id 7` (`?` for what could not be read).
    pub fn describe(&self) -> String {
        let shown = |v: &Option<String>| match v {
            Some(text) => quote(text),
            None => "?".to_string(),
        };
        let mut out = format!("type {}, unit {}", shown(&self.kind), shown(&self.unit));
        if let Some(id) = &self.id {
            // An id may be an object: its secret fields are masked too.
            out.push_str(", id ");
            out.push_str(&crate::ops::log_limit::cut_to(
                &redact::shown(id.as_bytes()),
                QUOTED_CHARS,
            ));
        }
        out
    }

    fn bare(reason: String) -> Self {
        Rejection {
            reason,
            kind: None,
            unit: None,
            id: None,
        }
    }
}

/// [`validate_json`] for bytes that did not come through a framer (a spooled
/// command, a test): they are parsed first, with the framer's rules.
pub fn validate(value: &[u8], check_fields: bool) -> Result<Command, Rejection> {
    validate_with_camera(value, check_fields, None).map(|(cmd, _)| cmd)
}

/// Turns one framed JSON value into a command. Checks, in order: object,
/// `type`, `unit`, duplicate top-level fields (exact, or differing only in
/// ASCII letter case), then (when `check_fields`) the per-type field rules.
/// When a field appears twice, `type`, `unit` and `id` are read from its
/// first occurrence.
pub fn validate_json(json: Json<'_>, check_fields: bool) -> Result<Command, Rejection> {
    if !json.is_object() {
        return Err(Rejection::bare("command is not a JSON object".to_owned()));
    }
    let object = Object::new(&json).map_err(Rejection::bare)?;

    let type_text = object.text("type");
    let unit_text = object.text("unit");
    let reject = |reason: String| Rejection {
        reason,
        kind: type_text.as_string(),
        unit: unit_text.as_string(),
        id: object.get("id").map(json::compact),
    };

    let kind = match &type_text {
        Text::Str(name) => CommandType::parse(name)
            .ok_or_else(|| reject(format!("unknown type {}", quote(name))))?,
        other => return Err(reject(other.problem("type"))),
    };
    let unit = match &unit_text {
        Text::Str(unit) => {
            valid_unit(unit).map_err(&reject)?;
            unit.to_string()
        }
        other => return Err(reject(other.problem("unit"))),
    };
    if let Some(clash) = object.first_clash() {
        return Err(reject(clash.reason()));
    }
    // JSON's grammar has no range, but a number that overflows a double
    // becomes infinity (or an error) in the device's parser. Checked with the
    // field rules (VALIDATE_FIELDS); the reason does not quote the number: it
    // could be a secret field's value.
    if check_fields && json.wide_numbers().any(overflows_f64) {
        return Err(reject(
            "a number is out of range (it overflows a 64-bit float)".to_owned(),
        ));
    }
    if check_fields {
        check_type_fields(kind, &object).map_err(&reject)?;
    }
    Ok(Command {
        kind,
        unit,
        id: object.get("id").map(json::compact),
        payload: json.bytes().to_vec(),
    })
}

/// Longest camera id taken from a command's `PRESENCE_FIELD`, in bytes; a
/// longer value names no camera (heartbeat ids are hex MACs).
pub const MAX_CAMERA_BYTES: usize = 128;

/// The text of the top-level string member `name` of an object (the first
/// one, as for `type` and `unit`): for `PRESENCE_FIELD`. None when missing,
/// not a string, empty or longer than [`MAX_CAMERA_BYTES`].
pub fn text_field(json: &Json<'_>, name: &str) -> Option<String> {
    let member = json.members().find(|m| json::string_is(m.key, name))?;
    if !member.value.starts_with(b"\"") {
        return None;
    }
    let text = json::decode_string(member.value)?;
    (!text.is_empty() && text.len() <= MAX_CAMERA_BYTES).then(|| text.into_owned())
}

/// [`validate`], with the text of the string field `presence` (see [`text_field`]).
pub fn validate_with_camera(
    value: &[u8],
    check_fields: bool,
    presence: Option<&str>,
) -> Result<(Command, Option<String>), Rejection> {
    let mut spans = json::Spans::default();
    let json = frame::parse(value, &mut spans).map_err(|err| {
        Rejection::bare(match err {
            frame::FrameError::Syntax { reason, .. } => format!("invalid JSON: {reason}"),
            other => format!("invalid JSON: {other}"),
        })
    })?;
    let camera = presence.and_then(|name| text_field(&json, name));
    validate_json(json, check_fields).map(|cmd| (cmd, camera))
}

/// Whether a JSON number token is too large for a double.
fn overflows_f64(token: &[u8]) -> bool {
    !std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// A connection asking for status lines whatever `ACK_MODE` says: the value
/// `{"ack_mode":"all"}` (or `"errors"`, `"none"`, `"camera"`), an object whose only member
/// is `ack_mode`. `None` for any other value (a command, to be validated);
/// `Some(Err(reason))` when the member's value is not a mode.
pub fn ack_request(json: &Json<'_>) -> Option<Result<AckMode, String>> {
    let mut members = json.members();
    let (Some(only), None) = (members.next(), members.next()) else {
        return None;
    };
    if !json::string_is(only.key, "ack_mode") {
        return None;
    }
    Some(
        json::decode_string(only.value)
            .filter(|_| only.value.starts_with(b"\""))
            .and_then(|mode| crate::config::parse_ack_mode(&mode).ok())
            .ok_or_else(|| must_be("ack_mode", "\"none\", \"errors\", \"all\" or \"camera\"")),
    )
}

/// Checks that `unit` can be a topic level: 1–128 characters of
/// `A-Z a-z 0-9 . _ : -`. The error is the rejection reason.
pub fn valid_unit(unit: &str) -> Result<(), String> {
    let bad = unit
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')));
    if let Some(c) = bad {
        let what = if c.is_ascii_control() {
            "a control character".to_owned()
        } else if !c.is_ascii() {
            "a non-ASCII character".to_owned()
        } else {
            format!("{c:?}")
        };
        return Err(format!("unit {} contains {what}", quote(unit)));
    }
    if unit.is_empty() {
        return Err("unit is empty".to_owned());
    }
    // Only ASCII is left, so bytes are characters.
    if unit.len() > MAX_UNIT_CHARS {
        return Err(format!("unit is longer than {MAX_UNIT_CHARS} characters"));
    }
    Ok(())
}

fn check_type_fields(kind: CommandType, object: &Object<'_>) -> Result<(), String> {
    match kind {
        CommandType::Aim => update_fields(object, "model_id"),
        CommandType::Fmw => update_fields(object, "firmware_id"),
        CommandType::App => update_fields(object, "application_id"),
        CommandType::Cdn => container(object, "coordinates", b"[{", "an array or object"),
        CommandType::Cfg => container(object, "configs", b"{[", "an object or array"),
        CommandType::Cts => {
            if object.members.iter().any(|m| m.key.starts_with("cs_")) {
                Ok(())
            } else {
                Err("CTS needs at least one \"cs_\" field".to_owned())
            }
        }
        CommandType::Wfi => wifi_fields(object),
        CommandType::Uds => container(object, "settings", b"{", "an object"),
        CommandType::Frs => {
            // The backend's own client sends a level name ("full"); older
            // firmware takes a number. Both reach the camera untouched.
            let raw = required(object, "reset_level")?;
            if (is_json_number(raw) && utf8(raw).parse::<u64>().is_ok()) || is_nonempty_string(raw)
            {
                Ok(())
            } else {
                Err(must_be(
                    "reset_level",
                    "a non-negative integer or a non-empty string",
                ))
            }
        }
        CommandType::Scs | CommandType::Img | CommandType::Rsr => Ok(()),
    }
}

/// AIM, FMW and APP: an identifier, a download link and its MD5.
fn update_fields(object: &Object<'_>, id_field: &str) -> Result<(), String> {
    let raw = required(object, id_field)?;
    let integer = is_json_number(raw)
        && (utf8(raw).parse::<i64>().is_ok() || utf8(raw).parse::<u64>().is_ok());
    if !(integer || is_nonempty_string(raw)) {
        return Err(must_be(id_field, "an integer or a non-empty string"));
    }
    if !is_nonempty_string(required(object, "link")?) {
        return Err(must_be("link", "a non-empty string"));
    }
    let md5 = required(object, "md5")?;
    let hex = match json::decode_string(md5) {
        Some(text) => text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    };
    if !hex {
        return Err(must_be("md5", "32 hex digits"));
    }
    Ok(())
}

fn wifi_fields(object: &Object<'_>) -> Result<(), String> {
    let enabled = match required(object, "wifi_enabled")? {
        b"true" | b"1" => true,
        b"false" | b"0" => false,
        _ => return Err(must_be("wifi_enabled", "true, false, 0 or 1")),
    };
    if enabled && !required(object, "wifi_password")?.starts_with(b"\"") {
        return Err(must_be("wifi_password", "a string when Wi-Fi is enabled"));
    }
    Ok(())
}

/// A field that must be a JSON container opening with one of `opens`.
fn container(object: &Object<'_>, name: &str, opens: &[u8], what: &str) -> Result<(), String> {
    match required(object, name)?.first() {
        Some(b) if opens.contains(b) => Ok(()),
        _ => Err(must_be(name, what)),
    }
}

fn required<'a>(object: &Object<'a>, name: &str) -> Result<&'a [u8], String> {
    object
        .get(name)
        .ok_or_else(|| format!("missing field \"{name}\""))
}

fn must_be(name: &str, what: &str) -> String {
    format!("field \"{name}\" must be {what}")
}

/// A string value with at least one character (the raw text includes the quotes).
fn is_nonempty_string(raw: &[u8]) -> bool {
    raw.len() > 2 && raw.starts_with(b"\"")
}

fn is_json_number(raw: &[u8]) -> bool {
    matches!(raw.first(), Some(b'-' | b'0'..=b'9'))
}

/// Scalar JSON text outside strings is ASCII; anything else reads as "" and fails the check.
fn utf8(raw: &[u8]) -> &str {
    std::str::from_utf8(raw).unwrap_or_default()
}

/// `s` quoted and escaped like Rust's `{:?}`, cut to 64 characters with `…`.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTED_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => {
            let mut quoted = format!("{:?}", &s[..cut]);
            quoted.pop();
            quoted.push_str("…\"");
            quoted
        }
    }
}

/// A top-level string field as read for `type` and `unit`.
enum Text<'a> {
    Missing,
    NotString,
    /// A string whose `\u` escapes hold an unpaired surrogate.
    Undecodable,
    Str(Cow<'a, str>),
}

impl Text<'_> {
    fn as_string(&self) -> Option<String> {
        match self {
            Text::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    fn problem(&self, name: &str) -> String {
        match self {
            Text::Missing => format!("missing field \"{name}\""),
            Text::Undecodable => {
                format!("field \"{name}\" contains an unpaired surrogate escape")
            }
            Text::NotString | Text::Str(_) => must_be(name, "a string"),
        }
    }
}

struct Member<'a> {
    key: Cow<'a, str>,
    /// The value's JSON text, exactly as received.
    value: &'a [u8],
}

/// The top-level fields of an object, in order, borrowed from the received bytes.
struct Object<'a> {
    members: Vec<Member<'a>>,
}

impl<'a> Object<'a> {
    /// The members the framer found, keys decoded.
    fn new(json: &Json<'a>) -> Result<Self, String> {
        // Enough for a typical command without growing.
        let mut members = Vec::with_capacity(16);
        for member in json.members() {
            let key = json::decode_string(member.key).ok_or_else(|| {
                "invalid JSON: unpaired surrogate escape in a field name".to_owned()
            })?;
            members.push(Member {
                key,
                value: member.value,
            });
        }
        Ok(Object { members })
    }

    /// The value of the first field called `name`.
    fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.members.iter().find(|m| m.key == name).map(|m| m.value)
    }

    fn text(&self, name: &str) -> Text<'a> {
        match self.get(name) {
            None => Text::Missing,
            Some(raw) if !raw.starts_with(b"\"") => Text::NotString,
            Some(raw) => json::decode_string(raw).map_or(Text::Undecodable, Text::Str),
        }
    }

    /// The first field whose name equals an earlier field's name under ASCII
    /// case folding, with that earlier name. Up to that field all names are
    /// distinct when folded, so the earlier one is the only one.
    fn first_clash(&self) -> Option<Clash<'_>> {
        let members = &self.members;
        if members.len() <= PAIRWISE_DUPLICATE_CHECK_MAX {
            members.iter().enumerate().find_map(|(i, m)| {
                members[..i]
                    .iter()
                    .find(|earlier| earlier.key.eq_ignore_ascii_case(&m.key))
                    .map(|earlier| Clash {
                        earlier: &earlier.key,
                        later: &m.key,
                    })
            })
        } else {
            let mut seen: HashMap<Cow<'_, str>, &str> = HashMap::with_capacity(members.len());
            for m in members {
                match seen.entry(fold_case(&m.key)) {
                    Entry::Occupied(earlier) => {
                        return Some(Clash {
                            earlier: earlier.get(),
                            later: &m.key,
                        })
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(&m.key);
                    }
                }
            }
            None
        }
    }
}

/// `name` with ASCII letters in lower case (borrowed when it has no upper-case one).
fn fold_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Two top-level field names equal under ASCII case folding, in order.
/// Names are case-sensitive (`Type` is not `type`), but two that differ only
/// in case are refused like a duplicate: a device whose parser folds case
/// would read another command than the one validated.
struct Clash<'a> {
    earlier: &'a str,
    later: &'a str,
}

impl Clash<'_> {
    /// `duplicate field "unit"` when the names are equal, else
    /// `fields "Type" and "type" differ only in letter case`.
    fn reason(&self) -> String {
        if self.earlier == self.later {
            format!("duplicate field {}", quote(self.later))
        } else {
            format!(
                "fields {} and {} differ only in letter case",
                quote(self.earlier),
                quote(self.later)
            )
        }
    }
}
