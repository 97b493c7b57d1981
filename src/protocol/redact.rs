//! How any payload (command, device reply, heartbeat) is shown in a log
//! line or printed by `send`: the value of every secret field becomes
//! `"***"`, at any depth (which fields are secret: PROTOCOL.md §5.1 and
//! [`SECRET_WORDS`], [`KEY_COMPOUNDS`]); bytes that are not JSON are only
//! counted; control and format characters are escaped. Pure; called by
//! every thread that prints a payload.

use std::borrow::Cow;

use serde_json::Value;

/// Words that make a field secret wherever they appear in its name.
pub const SECRET_WORDS: [&str; 8] = [
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "psk",
    "secret",
    "token",
    "credential",
];

/// Words that, run together with a final `key` (`apikey`, `privatekey`),
/// make a last word secret.
pub const KEY_COMPOUNDS: [&str; 19] = [
    "access",
    "aes",
    "api",
    "app",
    "auth",
    "client",
    "device",
    "encryption",
    "hmac",
    "license",
    "master",
    "pass",
    "private",
    "session",
    "shared",
    "signing",
    "ssh",
    "wifi",
    "wpa",
];

/// What is shown instead of a secret value.
const MASK: &str = "***";

/// Whether the value of a field called `name` (decoded: `"pass\u0077ord"`
/// is `password`; compared in ASCII lower case) is never shown: when it
/// contains one of [`SECRET_WORDS`] (`wifi_password`, `cs_psk`,
/// `Api_TOKEN`), or its last word is `key` or one of [`KEY_COMPOUNDS`] run
/// together with `key`. Words are split at `_`, `-`, `.`, spaces and where
/// a lower-case letter or a digit is followed by an upper-case one, and
/// trailing digits are dropped: `api_key`, `apiKey`, `APIKey`, `key_2` are
/// secret; `keyframe`, `monkey`, `key_id`, `keys` are shown. Of the
/// contract's fields (PROTOCOL.md §1.2, §2.3) only `wifi_password` is.
pub fn is_secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return true;
    }
    let last = last_word(name).to_ascii_lowercase();
    match last.strip_suffix("key") {
        Some("") => true,
        Some(compound) => KEY_COMPOUNDS.contains(&compound),
        None => false,
    }
}

fn is_separator(b: u8) -> bool {
    matches!(b, b'_' | b'-' | b'.' | b' ')
}

/// The last word of a field name (see [`is_secret_field`]), trailing digits and
/// separators dropped first: `"apiKey"` → `"Key"`, `"api_key_2"` → `"key"`.
fn last_word(name: &str) -> &str {
    let name = name
        .trim_end_matches(|c: char| c.is_ascii_digit() || (c.is_ascii() && is_separator(c as u8)));
    let bytes = name.as_bytes();
    let mut start = 0;
    for i in 1..bytes.len() {
        let (before, at) = (bytes[i - 1], bytes[i]);
        // Both tests look at ASCII bytes only, so `i` is a character boundary.
        if is_separator(before)
            || ((before.is_ascii_lowercase() || before.is_ascii_digit()) && at.is_ascii_uppercase())
        {
            start = i;
        }
    }
    &name[start..]
}

/// Characters never shown as they are: control characters (C0, DEL, C1:
/// a newline could forge a log line, U+009B is a terminal's CSI), Unicode
/// format characters (category Cf: bidi overrides and isolates such as
/// U+202E and U+2066 reorder what follows; U+200B hides in an id) and the
/// line and paragraph separators U+2028/U+2029.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Unicode general category Cf (Unicode 15).
fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Text from a device, a backend or a topic as it may appear in a log line,
/// STATUS_FILE or the status output: every [`is_hidden`] character escaped
/// as `\u{…}` (`\n`, `\t`… for the usual ones).
pub fn printable(text: &str) -> Cow<'_, str> {
    // Visible ASCII, by far the usual case (every heartbeat's id and
    // fields): nothing hidden, found without decoding characters.
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return text.into();
    }
    if text.chars().any(is_hidden) {
        text.chars()
            .map(|c| {
                if is_hidden(c) {
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

/// JSON text with every [`is_hidden`] character that serde_json leaves raw
/// (C1, Cf, U+2028/2029; inside strings, the only place JSON allows them)
/// written as a `\uXXXX` escape: the same value, safe to print.
pub fn json_printable(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_hidden) {
        return json.into();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Compact JSON with secret values masked, or a byte count when not JSON.
pub fn payload(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut value) => {
            mask(&mut value);
            json_printable(&value.to_string()).into_owned()
        }
        Err(_) => not_shown(bytes.len()),
    }
}

/// As [`payload`], but JSON without any secret field comes back as it is
/// (key order, spacing and number spelling kept): for `ms500-relay send`,
/// which prints status lines and device replies, and for the command `id` a
/// rejection log line shows.
pub fn shown(bytes: &[u8]) -> Cow<'_, str> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut value) => {
            if mask(&mut value) {
                json_printable(&value.to_string()).into_owned().into()
            } else {
                // serde_json accepted it, so it is UTF-8.
                match String::from_utf8_lossy(bytes) {
                    Cow::Borrowed(text) => json_printable(text),
                    Cow::Owned(text) => json_printable(&text).into_owned().into(),
                }
            }
        }
        Err(_) => not_shown(bytes.len()).into(),
    }
}

fn not_shown(len: usize) -> String {
    format!("<{len} bytes, not JSON: not shown>")
}

/// Masks every secret value in `value`; whether there was any.
fn mask(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut masked = false;
            for (key, v) in map.iter_mut() {
                if is_secret_field(key) {
                    *v = Value::String(MASK.into());
                    masked = true;
                } else {
                    masked |= mask(v);
                }
            }
            masked
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| mask(v) | any),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_format_and_c1_characters_are_escaped_wherever_shown() {
        let id = "cam\u{202e}10-mac\u{2066}x\u{200b}y\u{2028}z\u{9b}q\u{e0041}";
        let out = printable(id);
        assert!(!out.chars().any(is_hidden), "{out}");
        assert!(
            out.contains("\\u{202e}") && out.contains("\\u{9b}"),
            "{out}"
        );
        assert_eq!(printable("caf\u{e9} ok"), "caf\u{e9} ok", "letters stay");
        let reply = "{\"fw\":\"a\u{202e}b\u{9b}c\u{e0041}\"}";
        for shown in [
            shown(reply.as_bytes()).into_owned(),
            payload(reply.as_bytes()),
        ] {
            assert!(!shown.chars().any(is_hidden), "{shown}");
            let back: Value = serde_json::from_str(&shown).unwrap();
            assert_eq!(back["fw"], "a\u{202e}b\u{9b}c\u{e0041}", "the same value");
        }
    }

    #[test]
    fn not_json_is_never_shown() {
        assert_eq!(payload(b""), "<0 bytes, not JSON: not shown>");
        assert_eq!(
            payload(b"password=hunter2"),
            "<16 bytes, not JSON: not shown>"
        );
        assert!(!payload(b"{\"wifi_password\":\"hunter2\"").contains("hunter2"));
        assert!(!payload(b"\xff\"hunter2\"").contains("hunter2"));
        assert_eq!(shown(b"psk=hunter2"), "<11 bytes, not JSON: not shown>");
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
    fn every_word_is_secret_anywhere_in_a_name_in_any_case() {
        for word in SECRET_WORDS {
            let upper = word.to_ascii_uppercase();
            for name in [
                word.to_string(),
                upper.clone(),
                format!("wifi_{word}"),
                format!("x{upper}y"),
                format!("{word}s"),
            ] {
                assert!(is_secret_field(&name), "{name}");
                let out = payload(format!(r#"{{"{name}":"V4lue-{word}","n":1}}"#).as_bytes());
                assert!(!out.contains("V4lue"), "{name}: {out}");
                assert!(out.contains(r#""n":1"#), "{out}");
            }
        }
        for name in [
            "wifi_password",
            "cs_psk",
            "Passphrase",
            "credentials",
            "x_pwd",
            "Wifi_Password",
            "x-Auth-Token",
            "SECRET",
            "db_passwd",
        ] {
            assert!(is_secret_field(name), "{name}");
        }
        assert!(!is_secret_field("tok"));
        assert!(!is_secret_field("pass"));
        assert!(!is_secret_field("credit"));
    }

    #[test]
    fn key_is_secret_only_as_the_last_word() {
        for name in [
            "key",
            "KEY",
            "Key",
            "api_key",
            "private_key",
            "apiKey",
            "API-KEY",
            "privateKey",
            "ssh.key",
            "wifi key",
            "api_key_2",
            "key1",
            "MD5Key",
            "apikey",
            "APIKey",
            "privatekey",
            "PassKey",
            "passkey",
            "wpa_key_",
        ] {
            assert!(is_secret_field(name), "{name} is secret");
        }
        for name in [
            "keyframe",
            "keyframe_interval",
            "keyboard",
            "monkey",
            "hotkey",
            "keys",
            "api_keys",
            "keys_count",
            "key_id",
            "keyId",
            "key_frame",
            "KeyFrame",
            "turnkey_mode",
            "key\u{15f}",
            "",
            "_",
            "42",
        ] {
            assert!(!is_secret_field(name), "{name} is not secret");
        }
    }

    #[test]
    fn the_contracts_own_field_names_are_shown_but_wifi_password() {
        for name in [
            "type",
            "unit",
            "id",
            "model_id",
            "firmware_id",
            "application_id",
            "link",
            "md5",
            "coordinates",
            "configs",
            "cs_exposure",
            "cs_gain",
            "cs_white_balance",
            "wifi_enabled",
            "wifi_ssid",
            "settings",
            "reset_level",
            "seq",
            "ack_mode",
            "status",
            "error",
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
        ] {
            assert!(!is_secret_field(name), "{name}");
        }
        assert!(is_secret_field("wifi_password"));
    }

    #[test]
    fn escaped_names_are_matched_as_decoded() {
        let out =
            payload(br#"{"pass\u0077ord":"hunter2","\u0041PI_\u004bEY":"k3y","\u006beyframe":7}"#);
        assert!(!out.contains("hunter2") && !out.contains("k3y"), "{out}");
        assert!(out.contains(r#""password":"***""#), "{out}");
        assert!(out.contains(r#""API_KEY":"***""#), "{out}");
        assert!(out.contains(r#""keyframe":7"#), "{out}");
    }

    #[test]
    fn values_of_any_type_and_depth_are_masked() {
        let out = payload(
            br#"[{"a":[{"psk":{"x":"o1"}},{"b":{"token":["o2",3]}}]},{"apiKey":4.5},{"secret":null},{"pwd":true}]"#,
        );
        assert_eq!(
            out,
            r#"[{"a":[{"psk":"***"},{"b":{"token":"***"}}]},{"apiKey":"***"},{"secret":"***"},{"pwd":"***"}]"#
        );
    }

    #[test]
    fn shown_keeps_json_without_secrets_as_it_is() {
        let line = br#"{"status":"ok","type":"IMG","unit":"u","id":1.50}"#;
        assert_eq!(shown(line), String::from_utf8_lossy(line));
        assert_eq!(shown(b"42"), "42");
        let masked = shown(br#"{"z":1,"psk":"hunter2"}"#);
        assert_eq!(masked, r#"{"psk":"***","z":1}"#);
        assert_eq!(
            shown(br#"{"id":{"token":"t0"}}"#),
            r#"{"id":{"token":"***"}}"#
        );
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
        assert_eq!(
            payload(br#"{"keys":["psk","password"]}"#),
            r#"{"keys":["psk","password"]}"#,
            "names of secret fields as values are shown"
        );
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        assert_eq!(printable("10.0.0.7"), "10.0.0.7");
        assert_eq!(printable("1.2.3.4\nERROR forged"), "1.2.3.4\\nERROR forged");
        assert_eq!(printable("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert!(!printable("x\ry\u{7f}").contains(['\r', '\u{7f}']));
    }
}
