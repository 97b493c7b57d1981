//! Fuzzes `command::validate` and `command::valid_unit`.
//!
//! The input is the framed value as the session would pass it.
//!
//! Invariants (any violation panics):
//! * `validate(x, false)` is Ok whenever `validate(x, true)` is, with the same
//!   command; when `validate(x, false)` fails, `validate(x, true)` fails with
//!   the same rejection (field rules are checked last).
//! * On Ok: the payload is the input trimmed; `unit` passes `valid_unit`, is
//!   1..=128 characters of `A-Za-z0-9._:-`; the type is one of the 12;
//!   `check_value` accepts the input; serde_json parses it as an object whose
//!   top-level keys are all distinct, even under ASCII case folding, and whose
//!   "type"/"unit" equal the command's; `id` is the "id" member (as JSON,
//!   compacted) when present.
//! * On Err: the reason is non-empty, and replacing every string value (of >= 4
//!   characters) inside fields whose name contains password/secret/token by
//!   another string leaves the reason unchanged, so the reason never quotes
//!   such a value (for non-JSON input the reason must be a bare
//!   "invalid JSON: ..." rejection: those messages are fixed strings).
//! * Differential model: for every input, an independent model of PROTOCOL.md §1.2
//!   built on serde_json (see `model`) predicts Ok/Err, the command, the
//!   reason (exactly, or its prefix) and the `kind`/`unit`/`id` of the
//!   rejection.
//! * On Ok with field checks, no number in the command overflows an f64.
//! * `valid_unit(s)` is Ok exactly for 1..=128 characters of `A-Za-z0-9._:-`.
#![no_main]

#[path = "../support/json.rs"]
#[allow(dead_code)]
mod json;

use ms500_relay::protocol::command::{valid_unit, validate, Command, CommandType, Rejection};
use ms500_relay::protocol::frame;
use libfuzzer_sys::fuzz_target;

fn unit_ok(unit: &str) -> bool {
    (1..=128).contains(&unit.len())
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

const TYPES: [&str; 12] = [
    "AIM", "FMW", "APP", "CDN", "CFG", "CTS", "WFI", "SCS", "UDS", "FRS", "IMG", "RSR",
];

/// serde_json's view of a JSON text fragment (unpaired surrogates neutralised).
fn sj(raw: &[u8]) -> json::J {
    json::serde_value(&json::fix_surrogates(raw))
        .unwrap_or_else(|| panic!("oracle cannot parse {:?}", String::from_utf8_lossy(raw)))
}

#[derive(Debug)]
enum Reason {
    Exact(String),
    Prefix(&'static str),
}

/// What the model predicts.
#[derive(Debug)]
enum Expect {
    Ok {
        kind: &'static str,
        unit: String,
        id: Option<Vec<u8>>,
    },
    Err {
        reason: Reason,
        /// None: a bare rejection (nothing read); Some((kind, unit, id)) otherwise.
        read: Option<(Option<String>, Option<String>, Option<Vec<u8>>)>,
    },
}

fn must_be(name: &str, what: &str) -> String {
    format!("field \"{name}\" must be {what}")
}

/// A field name as a reason quotes it: Rust's `{:?}` of its first 64
/// characters, with `…` before the closing quote when there were more.
fn quoted(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= 64 {
        return format!("{name:?}");
    }
    let head: String = chars[..64].iter().collect();
    let q = format!("{head:?}");
    format!("{}…\"", &q[..q.len() - 1])
}

/// PROTOCOL.md §1.2 on top of serde_json, independent of src/command.rs.
fn model(data: &[u8], check_fields: bool) -> Expect {
    let bare = |reason| Expect::Err { reason, read: None };
    let t = json::trim(data);
    if !json::oracle_accepts(t) {
        return bare(Reason::Prefix("invalid JSON: "));
    }
    if t[0] != b'{' {
        return bare(Reason::Exact("command is not a JSON object".into()));
    }
    // Keys decoded from the received text (an unpaired surrogate makes a key undecodable).
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    for (key, value) in json::members(t) {
        match json::decode_str(&t[key]) {
            Some(name) => fields.push((name, &t[value])),
            None => {
                return bare(Reason::Exact(
                    "invalid JSON: unpaired surrogate escape in a field name".into(),
                ))
            }
        }
    }
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let text = |name: &str| get(name).filter(|v| v[0] == b'"').and_then(json::decode_str);
    let read = Some((text("type"), text("unit"), get("id").map(<[u8]>::to_vec)));
    let err = |reason| Expect::Err {
        reason,
        read: read.clone(),
    };
    let string_problem = |name: &str| match get(name) {
        None => Reason::Exact(format!("missing field \"{name}\"")),
        Some(v) if v[0] != b'"' => Reason::Exact(must_be(name, "a string")),
        Some(_) => Reason::Exact(format!(
            "field \"{name}\" contains an unpaired surrogate escape"
        )),
    };

    let Some(kind) = text("type") else {
        return err(string_problem("type"));
    };
    let Some(kind) = TYPES.into_iter().find(|&k| k == kind) else {
        return err(Reason::Prefix("unknown type "));
    };
    let Some(unit) = text("unit") else {
        return err(string_problem("unit"));
    };
    if !unit_ok(&unit) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        return err(if !unit.chars().all(allowed) {
            Reason::Prefix("unit \"")
        } else if unit.is_empty() {
            Reason::Exact("unit is empty".into())
        } else {
            Reason::Exact("unit is longer than 128 characters".into())
        });
    }
    // Top-level names must be distinct under ASCII case folding. The first
    // field whose name folds to an earlier one's is reported: as a duplicate
    // when the names are equal, else naming both, the earlier first.
    let folded: Vec<String> = fields.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
    for later in 0..fields.len() {
        if let Some(earlier) = (0..later).find(|&e| folded[e] == folded[later]) {
            let (a, b) = (&fields[earlier].0, &fields[later].0);
            return err(Reason::Exact(if a == b {
                format!("duplicate field {}", quoted(b))
            } else {
                format!(
                    "fields {} and {} differ only in letter case",
                    quoted(a),
                    quoted(b)
                )
            }));
        }
    }
    // Numbers that overflow a double are refused anywhere in the command,
    // with the field rules (VALIDATE_FIELDS): after the duplicate check,
    // before the per-type rules.
    if check_fields && json::has_overflowing_number(t) {
        return err(Reason::Exact(
            "a number is out of range (it overflows a 64-bit float)".into(),
        ));
    }
    if check_fields {
        if let Err(reason) = rules(kind, &fields) {
            return err(reason);
        }
    }
    Expect::Ok {
        kind,
        unit,
        id: get("id").map(<[u8]>::to_vec),
    }
}

/// Per-type rules of PROTOCOL.md §1.2. Integers are JSON numbers without fraction or
/// exponent that fit i64/u64 (non-negative: u64, no minus sign, so `-0` fails).
fn rules(kind: &str, fields: &[(String, &[u8])]) -> Result<(), Reason> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let required = |name: &str| get(name).ok_or_else(|| Reason::Exact(format!("missing field \"{name}\"")));
    let fail = |name: &str, what: &str| Err(Reason::Exact(must_be(name, what)));
    let is_int = |raw: &[u8]| {
        let s = std::str::from_utf8(raw).unwrap_or("x");
        matches!(raw[0], b'-' | b'0'..=b'9')
            && !s.contains(['.', 'e', 'E'])
            && (s.parse::<i64>().is_ok() || s.parse::<u64>().is_ok())
    };
    let nonempty_string = |raw: &[u8]| {
        raw[0] == b'"' && matches!(sj(raw), json::J::Str(s) if !s.is_empty())
    };
    match kind {
        "AIM" | "FMW" | "APP" => {
            let id_field = match kind {
                "AIM" => "model_id",
                "FMW" => "firmware_id",
                _ => "application_id",
            };
            let id = required(id_field)?;
            if !(is_int(id) || nonempty_string(id)) {
                return fail(id_field, "an integer or a non-empty string");
            }
            if !nonempty_string(required("link")?) {
                return fail("link", "a non-empty string");
            }
            let md5 = json::decode_str(required("md5")?);
            if !md5.is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
                return fail("md5", "32 hex digits");
            }
            Ok(())
        }
        "CDN" => match required("coordinates")?[0] {
            b'[' | b'{' => Ok(()),
            _ => fail("coordinates", "an array or object"),
        },
        "CFG" => match required("configs")?[0] {
            b'[' | b'{' => Ok(()),
            _ => fail("configs", "an object or array"),
        },
        "UDS" => match required("settings")?[0] {
            b'{' => Ok(()),
            _ => fail("settings", "an object"),
        },
        "CTS" => {
            if fields.iter().any(|(k, _)| k.starts_with("cs_")) {
                Ok(())
            } else {
                Err(Reason::Exact("CTS needs at least one \"cs_\" field".into()))
            }
        }
        "WFI" => {
            let enabled = match required("wifi_enabled")? {
                b"true" | b"1" => true,
                b"false" | b"0" => false,
                _ => return fail("wifi_enabled", "true, false, 0 or 1"),
            };
            if enabled && !matches!(sj(required("wifi_password")?), json::J::Str(_)) {
                return fail("wifi_password", "a string when Wi-Fi is enabled");
            }
            Ok(())
        }
        "FRS" => {
            let raw = required("reset_level")?;
            if raw[0].is_ascii_digit() && is_int(raw) && std::str::from_utf8(raw).unwrap().parse::<u64>().is_ok() {
                Ok(())
            } else {
                fail("reset_level", "a non-negative integer")
            }
        }
        _ => Ok(()),
    }
}

fn same_json(a: &[u8], b: &[u8]) -> bool {
    sj(a) == sj(b)
}

fn check_against_model(data: &[u8], check_fields: bool, got: &Result<Command, Rejection>) {
    let expect = model(data, check_fields);
    let show = || String::from_utf8_lossy(data).into_owned();
    match (&expect, got) {
        (Expect::Ok { kind, unit, id }, Ok(cmd)) => {
            assert_eq!(cmd.kind.as_str(), *kind, "kind differs for {:?}", show());
            assert_eq!(&cmd.unit, unit, "unit differs for {:?}", show());
            match (id, &cmd.id) {
                (None, None) => {}
                (Some(raw), Some(text)) => assert!(
                    same_json(raw, text.as_bytes()),
                    "id {text:?} is not the id member {:?} of {:?}",
                    String::from_utf8_lossy(raw),
                    show()
                ),
                _ => panic!("id {:?} but model {:?} for {:?}", cmd.id, id, show()),
            }
        }
        (Expect::Err { reason, read }, Err(rej)) => {
            match reason {
                Reason::Exact(s) => assert_eq!(&rej.reason, s, "reason for {:?}", show()),
                Reason::Prefix(p) => assert!(
                    rej.reason.starts_with(p),
                    "reason {:?} does not start with {p:?} for {:?}",
                    rej.reason,
                    show()
                ),
            }
            match read {
                None => assert!(
                    rej.kind.is_none() && rej.unit.is_none() && rej.id.is_none(),
                    "bare rejection expected, got {rej:?} for {:?}",
                    show()
                ),
                Some((kind, unit, id)) => {
                    assert_eq!(&rej.kind, kind, "rejection kind for {:?}", show());
                    assert_eq!(&rej.unit, unit, "rejection unit for {:?}", show());
                    match (id, &rej.id) {
                        (None, None) => {}
                        (Some(raw), Some(text)) => assert!(
                            same_json(raw, text.as_bytes()),
                            "rejection id {text:?} is not {:?} for {:?}",
                            String::from_utf8_lossy(raw),
                            show()
                        ),
                        _ => panic!("rejection id {:?}, model {:?} for {:?}", rej.id, id, show()),
                    }
                }
            }
        }
        (Expect::Ok { .. }, Err(rej)) => panic!(
            "rejected ({:?}) but the model accepts {:?} (check_fields={check_fields})",
            rej.reason,
            show()
        ),
        (Expect::Err { reason, .. }, Ok(cmd)) => panic!(
            "accepted {cmd:?} but the model rejects ({reason:?}) {:?} (check_fields={check_fields})",
            show()
        ),
    }
}

fn check_ok(data: &[u8], cmd: &Command) {
    let t = json::trim(data);
    assert_eq!(cmd.payload, t, "payload is not the trimmed input");
    assert!(valid_unit(&cmd.unit).is_ok(), "accepted unit fails valid_unit: {:?}", cmd.unit);
    assert!(unit_ok(&cmd.unit), "accepted unit has bad characters/length: {:?}", cmd.unit);
    assert!(CommandType::ALL.contains(&cmd.kind));
    assert_eq!(CommandType::parse(cmd.kind.as_str()), Some(cmd.kind));
    assert!(frame::check_value(data).is_ok(), "accepted input fails check_value");
    assert!(json::oracle_accepts(t), "accepted input is not JSON per serde_json");
    let json::J::Obj(members) = sj(t) else {
        panic!("accepted input is not an object per serde_json")
    };
    for (i, (key, _)) in members.iter().enumerate() {
        assert!(
            !members[..i].iter().any(|(earlier, _)| earlier.eq_ignore_ascii_case(key)),
            "accepted input has two top-level keys equal under ASCII case folding: {key:?}"
        );
    }
    assert_eq!(json::members(t).len(), members.len(), "oracle span parser disagrees with serde_json");
    let text = |name: &str| match members.iter().find(|(k, _)| k == name) {
        Some((_, json::J::Str(s))) => Some(s.as_str()),
        _ => None,
    };
    assert_eq!(text("type"), Some(cmd.kind.as_str()), "type differs from serde_json's");
    assert_eq!(text("unit"), Some(cmd.unit.as_str()), "unit differs from serde_json's");
}

/// Replaces every >= 4-character string inside a secret-named field by `~`s
/// of the same length (`^` if it was all `~`). None when there is none or the
/// input is not JSON.
fn mask_secrets(data: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let t = json::trim(data);
    if !json::oracle_accepts(t) {
        return None;
    }
    let offset = t.as_ptr() as usize - data.as_ptr() as usize;
    let mut spans = Vec::new();
    json::secret_strings(t, 0, false, &mut spans);
    let mut out = Vec::with_capacity(data.len());
    let mut secrets = Vec::new();
    let mut last = 0;
    for span in spans {
        let Some(secret) = json::decode_str(&t[span.clone()]) else {
            continue; // unpaired surrogate: not a decodable value
        };
        let chars = secret.chars().count();
        if chars < 4 {
            continue;
        }
        let fill = if secret.chars().all(|c| c == '~') { '^' } else { '~' };
        out.extend_from_slice(&data[last..offset + span.start]);
        out.push(b'"');
        out.extend(std::iter::repeat(fill as u8).take(chars));
        out.push(b'"');
        last = offset + span.end;
        secrets.push(secret);
    }
    if secrets.is_empty() {
        return None;
    }
    out.extend_from_slice(&data[last..]);
    Some((out, secrets))
}

fn check_err(data: &[u8], check_fields: bool, rej: &Rejection) {
    assert!(!rej.reason.is_empty(), "empty rejection reason");
    if !json::oracle_accepts(json::trim(data)) {
        // Not JSON: the reason must be a fixed message that quotes no input.
        assert!(
            rej.reason.starts_with("invalid JSON: ")
                && rej.kind.is_none()
                && rej.unit.is_none(),
            "non-JSON input got {rej:?}"
        );
        return;
    }
    if let Some((masked, secrets)) = mask_secrets(data) {
        let again = validate(&masked, check_fields);
        let again_reason = match &again {
            Err(r) => &r.reason,
            Ok(cmd) => panic!(
                "masking secret values turned a rejection ({:?}) into {cmd:?}: {:?}",
                rej.reason,
                String::from_utf8_lossy(data)
            ),
        };
        assert_eq!(
            &rej.reason,
            again_reason,
            "reason depends on a secret value ({secrets:?}) in {:?}",
            String::from_utf8_lossy(data)
        );
        for secret in &secrets {
            if rej.reason.contains(secret.as_str()) {
                // Only allowed when it also came from something that is not a secret.
                assert!(again_reason.contains(secret.as_str()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let strict = validate(data, true);
    let loose = validate(data, false);
    match (&strict, &loose) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "check_fields changes the accepted command");
            assert!(
                !json::has_overflowing_number(data),
                "accepted a number that overflows an f64"
            );
        }
        (Ok(a), Err(b)) => panic!("accepted with field checks ({a:?}) but rejected without ({b:?})"),
        (Err(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "field checks change an earlier rejection"),
    }
    for (check_fields, result) in [(true, &strict), (false, &loose)] {
        match result {
            Ok(cmd) => check_ok(data, cmd),
            Err(rej) => check_err(data, check_fields, rej),
        }
        check_against_model(data, check_fields, result);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(valid_unit(s).is_ok(), unit_ok(s), "valid_unit({s:?})");
        if let Err(reason) = valid_unit(s) {
            assert!(!reason.is_empty());
        }
    }
});
