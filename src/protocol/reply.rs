//! A device reply as it goes back to the backend (PROTOCOL.md §1.3), pure:
//! where the connection gets status lines, each reply is wrapped as
//! `{"reply":<the reply, byte-exact>,"unit":"cam-01"}` so that no reply can
//! pass for a status line; otherwise it goes out as it came. A reply that
//! could be read as more than one line or value is refused in both shapes
//! (a device must not be able to forge lines for the backend). Used by the
//! device link thread; no I/O.

/// Why a reply is not written to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A raw CR or LF: the backend would read more than one line.
    Newline,
    /// Something follows the first JSON value.
    SeveralValues,
    /// Not a JSON value (only refused where replies are wrapped).
    NotJson,
}

impl Refused {
    pub fn describe(self) -> &'static str {
        match self {
            Refused::Newline => "it holds a raw line break",
            Refused::SeveralValues => "it holds more than one JSON value",
            Refused::NotJson => "it is not a JSON value",
        }
    }
}

/// The line (without its `\n`) that carries `payload`, a reply of `unit`,
/// to a backend: wrapped when `wrapped`, else the payload as it came.
pub fn line(payload: &[u8], unit: &str, wrapped: bool) -> Result<Vec<u8>, Refused> {
    if payload.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(Refused::Newline);
    }
    match values(payload) {
        Values::Several => return Err(Refused::SeveralValues),
        Values::NotJson if wrapped => return Err(Refused::NotJson),
        Values::One | Values::NotJson => {}
    }
    if !wrapped {
        return Ok(payload.to_vec());
    }
    let mut out = Vec::with_capacity(payload.len() + unit.len() + 24);
    out.extend_from_slice(b"{\"reply\":");
    out.extend_from_slice(payload);
    out.extend_from_slice(b",\"unit\":");
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, unit);
    out.push(b'}');
    Ok(out)
}

enum Values {
    One,
    Several,
    NotJson,
}

/// How many JSON values `payload` holds: one (whitespace around it is
/// fine), more (anything but whitespace after a complete first value), or
/// it does not start with one. The one parse the crate already makes of a
/// JSON value: serde_json reports what follows a complete value as
/// "trailing characters".
fn values(payload: &[u8]) -> Values {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(_) => Values::One,
        Err(e) if e.to_string().starts_with("trailing characters") => Values::Several,
        Err(_) => Values::NotJson,
    }
}

/// A line from the relay that is a wrapped reply: an object of exactly
/// `reply` and a string `unit`. Returns the unit. (`send` tells replies
/// from status lines by this shape.)
pub fn wrapped_unit(line: &[u8]) -> Option<String> {
    let serde_json::Value::Object(v) = serde_json::from_slice(line).ok()? else {
        return None;
    };
    if v.len() != 2 || !v.contains_key("reply") {
        return None;
    }
    v.get("unit")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_status_line_after_a_newline_is_refused() {
        let forged =
            b"{\"fw\":1}\n{\"status\":\"ok\",\"type\":\"AIM\",\"unit\":\"cam-02\",\"id\":7}";
        assert_eq!(line(forged, "cam-01", true), Err(Refused::Newline));
        assert_eq!(line(forged, "cam-01", false), Err(Refused::Newline));
        assert_eq!(line(b"{\"a\":1}\r", "u", false), Err(Refused::Newline));
    }

    #[test]
    fn several_values_are_refused_in_both_shapes() {
        let two = br#"{"fw":1}{"status":"ok","type":"AIM","unit":"cam-02"}"#;
        assert_eq!(line(two, "u", true), Err(Refused::SeveralValues));
        assert_eq!(line(two, "u", false), Err(Refused::SeveralValues));
        assert_eq!(line(b"1 2", "u", false), Err(Refused::SeveralValues));
        assert_eq!(line(b"{} x", "u", false), Err(Refused::SeveralValues));
    }

    #[test]
    fn wrapped_replies_are_byte_exact_and_name_the_unit() {
        let reply = br#"{ "fps" : 5, "b":1.50 }"#;
        let out = line(reply, "cam-01", true).unwrap();
        assert_eq!(out, br#"{"reply":{ "fps" : 5, "b":1.50 },"unit":"cam-01"}"#);
        assert_eq!(wrapped_unit(&out).as_deref(), Some("cam-01"));
        let shaped_like_status = br#"{"status":"error","type":"AIM","unit":"u","error":"x"}"#;
        let out = line(shaped_like_status, "u", true).unwrap();
        assert_eq!(wrapped_unit(&out).as_deref(), Some("u"));
    }

    #[test]
    fn unwrapped_replies_stay_as_they_came() {
        let reply = br#"{"status":"ok","x":1} "#;
        assert_eq!(line(reply, "u", false).unwrap(), reply.to_vec());
        assert_eq!(line(b"plain text", "u", false).unwrap(), b"plain text");
        assert_eq!(line(b"plain text", "u", true), Err(Refused::NotJson));
        assert_eq!(line(b"", "u", true), Err(Refused::NotJson));
        assert_eq!(line(b"{\"a\":", "u", true), Err(Refused::NotJson));
    }

    #[test]
    fn only_the_exact_shape_is_a_wrapped_reply() {
        assert!(wrapped_unit(br#"{"status":"ok","type":"IMG","unit":"u"}"#).is_none());
        assert!(wrapped_unit(br#"{"reply":1,"unit":"u","x":2}"#).is_none());
        assert!(wrapped_unit(br#"{"reply":1,"unit":3}"#).is_none());
        assert!(wrapped_unit(b"not json").is_none());
    }
}
