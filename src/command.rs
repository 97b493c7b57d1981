//! Command validation (PROTOCOL.md §1.2).
//!
//! Runs on the backend session threads, right after framing. Pure: turns one
//! framed JSON value into a validated [`Command`] to publish, or a
//! [`Rejection`] whose reason names the offending field. Owns and shares
//! nothing.
//!
//! The value is first checked with the framing state machine
//! ([`frame::check_value`]), so validation accepts exactly the JSON that framing
//! accepts. The top-level object is then scanned in place: only `type`, `unit`,
//! `id` and the fields a rule needs are decoded, and the payload is the received
//! bytes, untouched. Reasons never quote the value of a field whose name
//! contains `password`, `secret` or `token`: the only values they quote are
//! `type` and `unit`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use crate::config::AckMode;
use crate::frame;

/// True when a number token of this (syntactically valid) JSON overflows f64.
/// Only tokens that could overflow (an exponent, or more than 300 digits) are parsed.
fn has_unrepresentable_number(json: &[u8]) -> bool {
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    exponent |= matches!(json[i], b'e' | b'E');
                    i += 1;
                }
                if exponent || i - start > 300 {
                    let finite = std::str::from_utf8(&json[start..i])
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .is_some_and(f64::is_finite);
                    if !finite {
                        return true;
                    }
                }
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests;

/// Longest accepted `unit`, in characters (it becomes an MQTT topic level).
pub const MAX_UNIT_CHARS: usize = 128;

/// Longest excerpt of a `type` or `unit` value quoted in a reason.
const QUOTED_CHARS: usize = 64;

/// Above this many top-level fields, duplicates are found with a hash set
/// instead of comparing every pair.
const PAIRWISE_DUPLICATE_CHECK_MAX: usize = 16;

/// The `type` of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// Update the AI model.
    Aim,
    /// Update the firmware.
    Fmw,
    /// Update the application.
    App,
    /// Update ROI coordinates.
    Cdn,
    /// Update the configuration.
    Cfg,
    /// Update capture settings.
    Cts,
    /// Update Wi-Fi.
    Wfi,
    /// Request the current settings; the device replies.
    Scs,
    /// Update system settings; the device replies.
    Uds,
    /// Factory reset.
    Frs,
    /// Request a picture.
    Img,
    /// Resend request.
    Rsr,
}

impl CommandType {
    pub const ALL: [CommandType; 12] = [
        CommandType::Aim,
        CommandType::Fmw,
        CommandType::App,
        CommandType::Cdn,
        CommandType::Cfg,
        CommandType::Cts,
        CommandType::Wfi,
        CommandType::Scs,
        CommandType::Uds,
        CommandType::Frs,
        CommandType::Img,
        CommandType::Rsr,
    ];

    /// The `type` string on the wire, e.g. `"AIM"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Aim => "AIM",
            CommandType::Fmw => "FMW",
            CommandType::App => "APP",
            CommandType::Cdn => "CDN",
            CommandType::Cfg => "CFG",
            CommandType::Cts => "CTS",
            CommandType::Wfi => "WFI",
            CommandType::Scs => "SCS",
            CommandType::Uds => "UDS",
            CommandType::Frs => "FRS",
            CommandType::Img => "IMG",
            CommandType::Rsr => "RSR",
        }
    }

    /// The type named exactly `s` (case-sensitive), if any.
    pub fn parse(s: &str) -> Option<Self> {
        CommandType::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// Whether the device answers on `socket_reply`, making the sender the unit's reply route.
    pub fn wants_reply(self) -> bool {
        matches!(self, CommandType::Scs | CommandType::Uds)
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
            out.push_str(", id ");
            out.push_str(&crate::log_limit::cut_to(id, QUOTED_CHARS));
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

/// Turns one framed JSON value into a command. Checks, in order: JSON, object,
/// `type`, `unit`, duplicate top-level fields, then (when `check_fields`) the
/// per-type field rules. When a field appears twice, `type`, `unit` and `id`
/// are read from its first occurrence.
pub fn validate(value: &[u8], check_fields: bool) -> Result<Command, Rejection> {
    let payload = trim(value);
    if let Err(err) = frame::check_value(payload) {
        let reason = match err {
            frame::FrameError::Syntax { reason, .. } => format!("invalid JSON: {reason}"),
            other => format!("invalid JSON: {other}"),
        };
        return Err(Rejection::bare(reason));
    }
    if payload.first() != Some(&b'{') {
        return Err(Rejection::bare("command is not a JSON object".to_owned()));
    }
    let object = Object::scan(payload).map_err(Rejection::bare)?;

    let type_text = object.text("type");
    let unit_text = object.text("unit");
    let reject = |reason: String| Rejection {
        reason,
        kind: type_text.as_string(),
        unit: unit_text.as_string(),
        id: object.get("id").map(compact_json),
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
    if let Some(name) = object.first_duplicate() {
        return Err(reject(format!("duplicate field \"{name}\"")));
    }
    // JSON's grammar has no range, but a number that overflows a double
    // becomes infinity (or an error) in the device's parser. Checked with the
    // field rules (VALIDATE_FIELDS); the reason does not quote the number: it
    // could be a secret field's value.
    if check_fields && has_unrepresentable_number(payload) {
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
        id: object.get("id").map(compact_json),
        payload: payload.to_vec(),
    })
}

/// A connection asking for status lines whatever `ACK_MODE` says: the value
/// `{"ack_mode":"all"}` (or `"errors"`, `"none"`), an object whose only member
/// is `ack_mode`. `None` for any other value (a command, to be validated);
/// `Some(Err(reason))` when the member's value is not a mode.
pub fn ack_request(value: &[u8]) -> Option<Result<AckMode, String>> {
    let value = trim(value);
    // Cheap test first: this runs for every command.
    if value.len() > 256 || value.first() != Some(&b'{') {
        return None;
    }
    let needle = b"\"ack_mode\"";
    if !value.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value).ok()?;
    if object.len() != 1 {
        return None;
    }
    let mode = object.get("ack_mode")?;
    Some(
        mode.as_str()
            .and_then(|m| crate::config::parse_ack_mode(m).ok())
            .ok_or_else(|| must_be("ack_mode", "\"none\", \"errors\" or \"all\"")),
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
            let raw = required(object, "reset_level")?;
            if is_json_number(raw) && utf8(raw).parse::<u64>().is_ok() {
                Ok(())
            } else {
                Err(must_be("reset_level", "a non-negative integer"))
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
    let hex = match decode_string(md5) {
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

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ws(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// JSON text with the whitespace outside strings removed; numbers and escapes stay as sent.
fn compact_json(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if is_ws(b) {
            continue;
        }
        out.push(b);
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
    /// Splits an object that `frame::check_value` accepted into its fields. On
    /// other input it returns something without panicking or looping.
    fn scan(bytes: &'a [u8]) -> Result<Self, String> {
        // Enough for a typical command without growing.
        let mut members = Vec::with_capacity(16);
        let mut i = 1;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'}' => break,
                b'"' => {
                    let key_end = string_end(bytes, i);
                    let key = bytes
                        .get(i..key_end)
                        .and_then(decode_string)
                        .ok_or_else(|| {
                            "invalid JSON: unpaired surrogate escape in a field name".to_owned()
                        })?;
                    i = skip_ws(bytes, key_end);
                    if bytes.get(i) == Some(&b':') {
                        i = skip_ws(bytes, i + 1);
                    }
                    let value_end = value_end(bytes, i);
                    let value = bytes.get(i..value_end).unwrap_or_default();
                    members.push(Member { key, value });
                    i = value_end.max(i + 1);
                }
                _ => i += 1,
            }
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
            Some(raw) => decode_string(raw).map_or(Text::Undecodable, Text::Str),
        }
    }

    /// The first field name that was already used earlier in the object.
    fn first_duplicate(&self) -> Option<&str> {
        let members = &self.members;
        if members.len() <= PAIRWISE_DUPLICATE_CHECK_MAX {
            members
                .iter()
                .enumerate()
                .find(|(i, m)| members[..*i].iter().any(|earlier| earlier.key == m.key))
                .map(|(_, m)| m.key.as_ref())
        } else {
            let mut seen = HashSet::with_capacity(members.len());
            members
                .iter()
                .find(|m| !seen.insert(m.key.as_ref()))
                .map(|m| m.key.as_ref())
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// Index just past the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index just past the JSON value that starts at `start`.
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b'"') => string_end(bytes, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while let Some(&b) = bytes.get(i) {
                match b {
                    b'"' => {
                        i = string_end(bytes, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            bytes.len()
        }
        _ => {
            let mut i = start;
            while bytes
                .get(i)
                .is_some_and(|&b| !is_ws(b) && !matches!(b, b',' | b'}' | b']'))
            {
                i += 1;
            }
            i
        }
    }
}

/// Decodes a JSON string literal (quotes included) whose syntax is already
/// checked. None when a `\u` escape holds an unpaired surrogate.
fn decode_string(raw: &[u8]) -> Option<Cow<'_, str>> {
    let inner = raw.get(1..raw.len().checked_sub(1)?)?;
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        // Splitting at an ASCII byte keeps the UTF-8 pieces whole.
        out.push_str(std::str::from_utf8(rest.get(..at)?).ok()?);
        let escape = *rest.get(at + 1)?;
        rest = rest.get(at + 2..)?;
        let c = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(rest)?;
                rest = rest.get(4..)?;
                if (0xD800..0xDC00).contains(&unit) {
                    let low = rest.strip_prefix(b"\\u").and_then(hex4)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    rest = rest.get(6..)?;
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                } else {
                    // None for a lone low surrogate.
                    char::from_u32(unit)?
                }
            }
            _ => return None,
        };
        out.push(c);
    }
    out.push_str(std::str::from_utf8(rest).ok()?);
    Some(Cow::Owned(out))
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(..4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}
