//! Fuzzes `frame::FrameDecoder` (and `frame::check_value`).
//!
//! Input layout: byte 0 picks the value size limit (low 3 bits) and, with
//! byte 1, seeds the chunk sizes; bytes 2.. are the TCP stream. Shorter inputs
//! are an empty stream.
//!
//! Invariants (any violation panics):
//! * The stream pushed whole, pushed in pseudo-random chunks (some empty) and
//!   pushed byte by byte yields the same frames (value bytes, Invalid and
//!   Fatal with their errors and offsets), the same `pending_bytes` and the same
//!   `finish()`.
//! * Every `Value` is non-empty, has no leading/trailing ASCII whitespace, is
//!   at most `limit` bytes, passes `check_value`, is exactly one JSON value per
//!   serde_json (unpaired `\uD800`-style escapes excepted, see
//!   `json::fix_surrogates`), and the values occur in the stream in order.
//! * `Invalid` carries Syntax/InvalidUtf8/TooDeep{128}; `Fatal` carries
//!   TooLarge/NoResync with the configured limit; nothing follows a Fatal.
//! * After draining, `pending_bytes() <= limit` and `finish()` is
//!   `Some(pending_bytes())` exactly when that is non-zero; a decoder reused
//!   after `finish()` behaves like a new one.
//! * `check_value(stream)` is Ok exactly when serde_json accepts the stream as
//!   one value (modulo unpaired surrogate escapes, depth <= 128); in that case
//!   the decoder yields exactly that value trimmed (or, for a number/literal
//!   with nothing after it, nothing yet and `finish() == Some(len)`), or
//!   `Fatal(TooLarge)` when it is longer than the limit.
#![no_main]

#[path = "../support/json.rs"]
#[allow(dead_code)]
mod json;

use ms500_relay::protocol::frame::{check_value, parse, Frame, FrameDecoder, FrameError};
use ms500_relay::protocol::json::{self as scanner, Json, Spans};
use libfuzzer_sys::fuzz_target;

const LIMITS: [usize; 8] = [4096, 4096, 4096, 4096, 1, 7, 32, 300];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Value(Vec<u8>),
    Invalid(FrameError),
    Fatal(FrameError),
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    frames: Vec<Out>,
    pending: usize,
    finish: Option<usize>,
}

fn drain(decoder: &mut FrameDecoder, limit: usize, bound: usize, out: &mut Vec<Out>) {
    while let Some(frame) = decoder.next_frame() {
        let frame = match frame {
            Frame::Value(json) => {
                check_spans(&json);
                Out::Value(json.bytes().to_vec())
            }
            Frame::Invalid(err) => Out::Invalid(err),
            Frame::Fatal(err) => Out::Fatal(err),
        };
        if let Some(Out::Fatal(err)) = out.last() {
            panic!("{frame:?} produced after Fatal({err:?})");
        }
        out.push(frame);
        // Every Value and Invalid consumes at least one byte.
        assert!(out.len() <= bound + 1, "more frames than input bytes: {out:?}");
    }
    let pending = decoder.pending_bytes();
    assert!(pending <= limit, "pending_bytes {pending} > limit {limit}");
}

/// The spans the framer noted are those `parse` notes for the same bytes,
/// and they cover an object exactly: `{`, then key `:` value pairs
/// separated by `,`, then `}`, with only whitespace in between; every key is
/// a string and every key and value is one JSON value. Wide numbers are
/// number tokens with an exponent or more than 300 characters.
fn check_spans(json: &Json<'_>) {
    let mut spans = Spans::default();
    let again = parse(json.bytes(), &mut spans).expect("a framed value parses");
    let framed: Vec<_> = json.members().collect();
    assert_eq!(framed, again.members().collect::<Vec<_>>(), "members differ");
    let wide: Vec<_> = json.wide_numbers().collect();
    assert_eq!(wide, again.wide_numbers().collect::<Vec<_>>(), "wide numbers differ");
    for n in &wide {
        assert!(
            matches!(n.first(), Some(b'-' | b'0'..=b'9'))
                && (n.iter().any(|b| matches!(b, b'e' | b'E')) || n.len() > 300)
                && check_value(n).is_ok(),
            "not a wide number: {:?}",
            String::from_utf8_lossy(n)
        );
    }
    let bytes = json.bytes();
    if !json.is_object() {
        assert!(framed.is_empty(), "members of a non-object");
        return;
    }
    let offset = |part: &[u8]| part.as_ptr() as usize - bytes.as_ptr() as usize;
    // Each gap holds whitespace around exactly the one byte expected there.
    let gap = |from: usize, to: usize, sep: u8| {
        let text = &bytes[from..to];
        let mut seps = text.iter().filter(|&&b| !json::is_ws(b));
        assert!(
            seps.next() == Some(&sep) && seps.next().is_none(),
            "expected {:?} between spans, found {:?} in {:?}",
            sep as char,
            String::from_utf8_lossy(text),
            String::from_utf8_lossy(bytes)
        );
    };
    let mut at = 0;
    for (i, m) in framed.iter().enumerate() {
        assert!(m.key.first() == Some(&b'"') && check_value(m.key).is_ok(), "bad key span");
        assert!(check_value(m.value).is_ok(), "bad value span");
        let (key, value) = (offset(m.key), offset(m.value));
        gap(at, key, if i == 0 { b'{' } else { b',' });
        gap(key + m.key.len(), value, b':');
        at = value + m.value.len();
    }
    if framed.is_empty() {
        gap(0, bytes.len() - 1, b'{');
    } else {
        gap(at, bytes.len(), b'}');
    }
}

fn finish(decoder: &mut FrameDecoder, frames: Vec<Out>) -> Run {
    let pending = decoder.pending_bytes();
    let finish = decoder.finish();
    assert_eq!(
        finish,
        (pending > 0).then_some(pending),
        "finish() disagrees with pending_bytes()"
    );
    assert_eq!(decoder.pending_bytes(), 0, "decoder not empty after finish()");
    if matches!(frames.last(), Some(Out::Fatal(_))) {
        assert_eq!(finish, None, "finish() after Fatal reports a partial value");
    }
    Run {
        frames,
        pending,
        finish,
    }
}

fn feed(decoder: &mut FrameDecoder, limit: usize, chunks: &[&[u8]]) -> Run {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        drain(decoder, limit, total, &mut frames);
    }
    finish(decoder, frames)
}

/// Deterministic chunk lengths (0..=max, 0 meaning an empty push) from the header.
fn chunks<'a>(stream: &'a [u8], seed: u64, max: usize) -> Vec<&'a [u8]> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state as usize % (max + 1)).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
    }
    out
}

fn check_frames(stream: &[u8], limit: usize, run: &Run) {
    let mut cursor = 0;
    for frame in &run.frames {
        match frame {
            Out::Value(v) => {
                assert!(!v.is_empty(), "empty Value");
                assert!(
                    !json::is_ws(v[0]) && !json::is_ws(v[v.len() - 1]),
                    "Value not trimmed: {:?}",
                    String::from_utf8_lossy(v)
                );
                assert!(v.len() <= limit, "Value of {} bytes > limit {limit}", v.len());
                assert!(
                    check_value(v).is_ok(),
                    "check_value rejects a framed Value {:?}: {:?}",
                    String::from_utf8_lossy(v),
                    check_value(v)
                );
                assert!(
                    json::oracle_accepts(v),
                    "framed Value is not JSON per serde_json: {:?}",
                    String::from_utf8_lossy(v)
                );
                let found = stream[cursor..]
                    .windows(v.len())
                    .position(|w| w == v.as_slice())
                    .unwrap_or_else(|| {
                        panic!(
                            "Value {:?} does not occur in the stream after byte {cursor}",
                            String::from_utf8_lossy(v)
                        )
                    });
                cursor += found + v.len();
            }
            Out::Invalid(err) => assert!(
                matches!(
                    err,
                    FrameError::Syntax { .. }
                        | FrameError::InvalidUtf8 { .. }
                        | FrameError::TooDeep { limit: scanner::MAX_DEPTH }
                ),
                "unexpected Invalid({err:?})"
            ),
            Out::Fatal(err) => assert!(
                *err == FrameError::TooLarge { limit } || *err == FrameError::NoResync { limit },
                "unexpected Fatal({err:?}) with limit {limit}"
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (sel, split, stream) = match data {
        [a, b, rest @ ..] => (*a, *b, rest),
        _ => (0, 0, &[][..]),
    };
    let limit = LIMITS[usize::from(sel & 7)];
    assert_eq!(scanner::MAX_DEPTH, json::MAX_DEPTH);

    let mut decoder = FrameDecoder::new(limit);
    let whole = feed(&mut decoder, limit, &[stream]);
    check_frames(stream, limit, &whole);

    // The same decoder, reset by finish(), must behave like a new one.
    let again = feed(&mut decoder, limit, &[stream]);
    assert_eq!(again, whole, "decoder reused after finish() differs");

    let pieces = chunks(
        stream,
        u64::from(sel >> 3) << 8 | u64::from(split),
        1 << (split & 7),
    );
    let chunked = feed(&mut FrameDecoder::new(limit), limit, &pieces);
    assert_eq!(
        chunked,
        whole,
        "chunked feeding differs from one push; chunk lengths {:?}",
        pieces.iter().map(|c| c.len()).collect::<Vec<_>>()
    );

    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let bytewise = feed(&mut FrameDecoder::new(limit), limit, &bytes);
    assert_eq!(bytewise, whole, "byte-by-byte feeding differs from one push");

    // Whole-stream oracle.
    let oracle = json::oracle_accepts(stream);
    assert_eq!(
        check_value(stream).is_ok(),
        oracle,
        "check_value {:?} but serde_json oracle says {oracle}",
        check_value(stream)
    );
    if oracle {
        let t = json::trim(stream);
        let trailing_ws = t.len() < stream.len() && json::is_ws(stream[stream.len() - 1]);
        let expected = if t.len() > limit {
            Run {
                frames: vec![Out::Fatal(FrameError::TooLarge { limit })],
                pending: 0,
                finish: None,
            }
        } else if trailing_ws || matches!(t[t.len() - 1], b'"' | b']' | b'}') {
            Run {
                frames: vec![Out::Value(t.to_vec())],
                pending: 0,
                finish: None,
            }
        } else {
            // A top-level number or literal: complete only once a byte follows.
            Run {
                frames: vec![],
                pending: t.len(),
                finish: Some(t.len()),
            }
        };
        assert_eq!(whole, expected, "a single valid value is framed wrongly");
    }
});
