//! Independent JSON helpers shared by the fuzz targets: the oracle side.
//!
//! Nothing here is taken from `src/`: validity is decided by `serde_json`, and
//! the span helpers below are only ever run on text `serde_json` accepted.

use std::ops::Range;

/// Deepest nesting `protocol::json::MAX_DEPTH` accepts (kept as a literal so a change
/// in src/ is noticed instead of followed).
pub const MAX_DEPTH: usize = 128;

pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.get(..4)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The one documented difference between the framer and serde_json: RFC 8259's
/// grammar allows `\uD800`-style escapes of unpaired surrogates (the framer
/// accepts them) but serde_json refuses to decode them. This rewrites every
/// unpaired surrogate escape as `\u0041` (same length, still four hex digits,
/// so the framer's view of the text is unchanged) and leaves proper pairs alone.
pub fn fix_surrogates(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < out.len() {
        if out[i] != b'\\' {
            i += 1;
            continue;
        }
        if out.get(i + 1) != Some(&b'u') {
            i += 2; // any other escape, including `\\`
            continue;
        }
        let Some(unit) = hex4(&out[i + 2..]) else {
            i += 2;
            continue;
        };
        if (0xD800..0xDC00).contains(&unit)
            && out.get(i + 6) == Some(&b'\\')
            && out.get(i + 7) == Some(&b'u')
            && hex4(&out[i + 8..]).is_some_and(|low| (0xDC00..0xE000).contains(&low))
        {
            i += 12; // a proper pair
            continue;
        }
        if (0xD800..0xE000).contains(&unit) {
            out[i + 2..i + 6].copy_from_slice(b"0041");
        }
        i += 6;
    }
    out
}

/// Deepest bracket nesting outside strings (lexing strings like JSON does).
/// Exact for valid JSON; on broken input it is exact up to the first error.
pub fn max_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    max
}

/// A JSON value as serde_json hands it to a visitor. Not `serde_json::Value`:
/// with `arbitrary_precision` that type gives the object key
/// `"$serde_json::private::Number"` a special meaning, so a valid document using
/// it would be refused. Here a number arrives as a one-member map holding that
/// key and the number's text, and is kept that way; objects keep their member
/// order and duplicate keys.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl<'de> serde::Deserialize<'de> for J {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<J, E> {
                Ok(J::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<J, E> {
                Ok(J::Num(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<J, E> {
                Ok(J::Num(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<J, E> {
                Ok(J::Num(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<J, E> {
                Ok(J::Str(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<J>()? {
                    out.push(item);
                }
                Ok(J::Arr(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    out.push((key, map.next_value::<J>()?));
                }
                Ok(J::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl J {
    pub fn get(&self, name: &str) -> Option<&J> {
        match self {
            J::Obj(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// `bytes` as exactly one JSON value (surrounding whitespace allowed) per
/// serde_json, with its recursion limit lifted (callers bound the depth first
/// with [`max_depth`]) and numbers kept as text (`arbitrary_precision`, so
/// `1e400` is valid as the grammar says).
pub fn serde_value(bytes: &[u8]) -> Option<J> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = <J as serde::Deserialize>::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Whether `bytes` is one JSON value by serde_json, modulo unpaired surrogate
/// escapes and with the framer's depth limit.
pub fn oracle_accepts(bytes: &[u8]) -> bool {
    max_depth(bytes) <= MAX_DEPTH && serde_value(&fix_surrogates(bytes)).is_some()
}

/// A JSON string literal (quotes included) decoded by serde_json; None for an
/// unpaired surrogate escape or anything that is not a string literal.
pub fn decode_str(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<String>(raw).ok()
}

// ---- span helpers, only for text serde_json (after fix_surrogates) accepted ----

pub fn skip_ws(t: &[u8], mut i: usize) -> usize {
    while t.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

/// `i` at an opening quote; index just past the closing quote.
pub fn skip_string(t: &[u8], i: usize) -> usize {
    assert_eq!(t[i], b'"', "oracle: expected a string");
    let mut j = i + 1;
    loop {
        match t[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
}

/// `i` at the first byte of a value; index just past it.
pub fn skip_value(t: &[u8], i: usize) -> usize {
    match t[i] {
        b'"' => skip_string(t, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match t[j] {
                    b'"' => {
                        j = skip_string(t, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while j < t.len() && !is_ws(t[j]) && !matches!(t[j], b',' | b']' | b'}') {
                j += 1;
            }
            j
        }
    }
}

/// Top-level members (key span with quotes, value span) of the trimmed object `t`, in order.
pub fn members(t: &[u8]) -> Vec<(Range<usize>, Range<usize>)> {
    assert_eq!(t[0], b'{');
    let mut out = Vec::new();
    let mut i = skip_ws(t, 1);
    if t[i] == b'}' {
        return out;
    }
    loop {
        let key_end = skip_string(t, i);
        let key = i..key_end;
        i = skip_ws(t, key_end);
        assert_eq!(t[i], b':', "oracle: expected ':'");
        i = skip_ws(t, i + 1);
        let value_end = skip_value(t, i);
        out.push((key, i..value_end));
        i = skip_ws(t, value_end);
        match t[i] {
            b',' => i = skip_ws(t, i + 1),
            b'}' => return out,
            other => panic!("oracle: unexpected byte {other:#x} in object"),
        }
    }
}

pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|word| lower.contains(word))
}

/// Spans of every string value (not key) inside a field whose name, at any
/// depth, contains password/secret/token. `i` at a value; returns its end.
pub fn secret_strings(t: &[u8], i: usize, secret: bool, out: &mut Vec<Range<usize>>) -> usize {
    match t[i] {
        b'"' => {
            let end = skip_string(t, i);
            if secret {
                out.push(i..end);
            }
            end
        }
        b'{' => {
            let mut i = skip_ws(t, i + 1);
            if t[i] == b'}' {
                return i + 1;
            }
            loop {
                let key_end = skip_string(t, i);
                let name = decode_str(&t[i..key_end])
                    .unwrap_or_else(|| String::from_utf8_lossy(&t[i..key_end]).into_owned());
                i = skip_ws(t, key_end);
                i = skip_ws(t, i + 1); // ':'
                let end = secret_strings(t, i, secret || is_secret_name(&name), out);
                i = skip_ws(t, end);
                match t[i] {
                    b',' => i = skip_ws(t, i + 1),
                    _ => return i + 1, // '}'
                }
            }
        }
        b'[' => {
            let mut i = skip_ws(t, i + 1);
            if t[i] == b']' {
                return i + 1;
            }
            loop {
                let end = secret_strings(t, i, secret, out);
                i = skip_ws(t, end);
                match t[i] {
                    b',' => i = skip_ws(t, i + 1),
                    _ => return i + 1, // ']'
                }
            }
        }
        _ => skip_value(t, i),
    }
}

/// Whether valid JSON text `t` holds a number that is not finite as an f64
/// (e.g. `1e400`, or a 400-digit integer). Underflow to zero is fine.
pub fn has_overflowing_number(t: &[u8]) -> bool {
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            b'"' => i = skip_string(t, i),
            b'-' | b'0'..=b'9' => {
                let end = skip_value(t, i);
                let text = std::str::from_utf8(&t[i..end]).expect("number text is ASCII");
                let value: f64 = text.parse().expect("oracle: JSON number parses as f64");
                if !value.is_finite() {
                    return true;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    false
}
