//! The one redaction function: how any payload (command, device reply,
//! heartbeat) is shown in a log line. Pure; used by every thread that prints
//! a payload. Values of fields whose names contain `password`, `secret` or
//! `token` (any case, at any depth, whatever the value's type) become `"***"`.
//! Bytes that are not JSON are never shown, only counted: a secret could hide
//! in them and there is no way to tell.

use serde_json::Value;

/// Field names whose values are never shown.
const SECRET_WORDS: [&str; 3] = ["password", "secret", "token"];

pub fn is_secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// Text from a device or topic as it may appear in a log line or the status
/// output: control characters (a newline could forge a log line) escaped.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Compact JSON with secret values masked, or a byte count when not JSON.
pub fn payload(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut value) => {
            mask(&mut value);
            value.to_string()
        }
        Err(_) => format!("<{} bytes, not JSON: not shown>", bytes.len()),
    }
}

fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_field(key) {
                    *v = Value::String("***".into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_is_never_shown() {
        assert_eq!(payload(b""), "<0 bytes, not JSON: not shown>");
        assert_eq!(
            payload(b"password=hunter2"),
            "<16 bytes, not JSON: not shown>"
        );
        assert!(!payload(b"{\"wifi_password\":\"hunter2\"").contains("hunter2"));
        assert!(!payload(b"\xff\"hunter2\"").contains("hunter2"));
    }

    #[test]
    fn secret_fields_at_any_depth_and_case_are_masked() {
        let out = payload(
            br#"{"type":"WFI","wifi_password":"hunter2","configs":{"mqtt":{"Api_TOKEN":"t0k3n","list":[{"ClientSecret":{"k":"s3cr3t"}}]}},"PASSWORD":12345}"#,
        );
        for secret in ["hunter2", "t0k3n", "s3cr3t", "12345"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains(r#""wifi_password":"***""#), "{out}");
        assert!(out.contains(r#""Api_TOKEN":"***""#), "{out}");
        assert!(out.contains(r#""ClientSecret":"***""#), "{out}");
        assert!(out.contains(r#""type":"WFI""#), "other fields stay: {out}");
    }

    #[test]
    fn ordinary_fields_and_scalars_pass_through() {
        assert_eq!(payload(br#"{"a":[1,"x",null]}"#), r#"{"a":[1,"x",null]}"#);
        assert_eq!(payload(b"42"), "42");
        assert_eq!(
            payload(br#""password""#),
            r#""password""#,
            "a bare string is not a field"
        );
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        assert_eq!(printable("10.0.0.7"), "10.0.0.7");
        assert_eq!(printable("1.2.3.4\nERROR forged"), "1.2.3.4\\nERROR forged");
        assert_eq!(printable("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert!(!printable("x\ry\u{7f}").contains(['\r', '\u{7f}']));
    }

    #[test]
    fn field_names_are_matched_by_substring() {
        assert!(is_secret_field("wifi_password"));
        assert!(is_secret_field("x-Auth-Token"));
        assert!(is_secret_field("SECRET"));
        assert!(!is_secret_field("passphrase"));
        assert!(!is_secret_field("tok"));
    }
}
