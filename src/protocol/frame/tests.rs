use super::*;

const LIMIT: usize = 65536;

/// A realistic command with escapes, nesting, numbers, literals and multi-byte UTF-8.
const COMMAND: &str = r#"{"type":"AIM","unit":"MS500-0001","id":17,"model_id":42,"link":"https://example.com/m/42.bin?a=1&b=\"q\"\\","md5":"0123456789abcdef0123456789ABCDEF","meta":{"tags":["a","}{",[]],"score":-1.5e-3,"n":0,"big":1E+10,"ok":true,"no":false,"none":null,"esc":"\u00e9\n\/"},"name":"caméra €𝄞"}"#;

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Value(String),
    Invalid(FrameError),
    Fatal(FrameError),
}

fn value(text: &str) -> Out {
    Out::Value(text.to_owned())
}

fn syntax(reason: &'static str, offset: usize) -> Out {
    Out::Invalid(FrameError::Syntax { reason, offset })
}

fn drain(decoder: &mut FrameDecoder, out: &mut Vec<Out>) {
    while let Some(frame) = decoder.next_frame() {
        out.push(match frame {
            Frame::Value(v) => {
                Out::Value(String::from_utf8(v.bytes().to_vec()).expect("values are UTF-8"))
            }
            Frame::Invalid(e) => Out::Invalid(e),
            Frame::Fatal(e) => Out::Fatal(e),
        });
        assert!(out.len() < 1_000_000, "decoder does not stop");
    }
}

/// Pushes each chunk, draining frames after each, then finishes.
fn decode_chunks(limit: usize, chunks: &[&[u8]]) -> (Vec<Out>, Option<usize>) {
    let mut decoder = FrameDecoder::new(limit);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        drain(&mut decoder, &mut out);
    }
    let partial = decoder.finish();
    (out, partial)
}

fn decode(limit: usize, input: &[u8]) -> (Vec<Out>, Option<usize>) {
    decode_chunks(limit, &[input])
}

fn decode_bytewise(limit: usize, input: &[u8]) -> (Vec<Out>, Option<usize>) {
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    decode_chunks(limit, &chunks)
}

/// Decodes in one push, byte by byte and split at every position; all must agree.
fn decode_all_ways(limit: usize, input: &[u8]) -> (Vec<Out>, Option<usize>) {
    let whole = decode(limit, input);
    assert_eq!(decode_bytewise(limit, input), whole, "byte by byte");
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(decode_chunks(limit, &[a, b]), whole, "split at {cut}");
    }
    whole
}

fn values(texts: &[&str]) -> Vec<Out> {
    texts.iter().map(|t| value(t)).collect()
}

#[test]
fn empty_input_yields_nothing() {
    let mut decoder = FrameDecoder::new(LIMIT);
    assert_eq!(decoder.next_frame(), None);
    decoder.push(b"");
    assert_eq!(decoder.next_frame(), None);
    assert_eq!(decoder.pending_bytes(), 0);
    assert_eq!(decoder.finish(), None);
}

#[test]
fn whitespace_only_is_not_partial() {
    assert_eq!(decode_all_ways(LIMIT, b" \t\r\n \r\n"), (vec![], None));
}

#[test]
fn finish_reports_partial_value() {
    let mut decoder = FrameDecoder::new(LIMIT);
    decoder.push(b"  {\"a\":");
    assert_eq!(decoder.next_frame(), None);
    assert_eq!(decoder.pending_bytes(), 5);
    assert_eq!(decoder.finish(), Some(5));
    assert_eq!(decoder.pending_bytes(), 0);
    assert_eq!(decoder.finish(), None);
}

#[test]
fn finish_counts_unterminated_top_level_number() {
    assert_eq!(decode_all_ways(LIMIT, b"\n123"), (vec![], Some(3)));
    assert_eq!(decode_all_ways(LIMIT, b"tru"), (vec![], Some(3)));
    assert_eq!(decode_all_ways(LIMIT, b"[1,"), (vec![], Some(3)));
    assert_eq!(decode_all_ways(LIMIT, b"\"abc"), (vec![], Some(4)));
}

#[test]
fn finish_after_complete_values_is_none() {
    assert_eq!(decode(LIMIT, b"{}\n"), (values(&["{}"]), None));
}

#[test]
fn finish_ignores_bytes_skipped_after_an_error() {
    let (out, partial) = decode(LIMIT, b"xyz");
    assert_eq!(out, vec![syntax("expected a JSON value", 0)]);
    assert_eq!(partial, None);
}

#[test]
fn values_without_separator() {
    assert_eq!(
        decode_all_ways(LIMIT, br#"{}{}{"b":2}[1]"s""#),
        (values(&["{}", "{}", r#"{"b":2}"#, "[1]", r#""s""#]), None)
    );
}

#[test]
fn newline_delimited_json() {
    let input = "{\"type\":\"IMG\",\"unit\":\"a\"}\n{\"type\":\"RSR\",\"unit\":\"b\"}\n";
    assert_eq!(
        decode_all_ways(LIMIT, input.as_bytes()),
        (
            values(&[
                r#"{"type":"IMG","unit":"a"}"#,
                r#"{"type":"RSR","unit":"b"}"#
            ]),
            None
        )
    );
}

#[test]
fn pretty_printed_with_crlf() {
    let pretty = "{\r\n  \"type\": \"CFG\",\r\n  \"unit\": \"a\",\r\n  \"configs\": [\r\n    1,\r\n    {\"x\": null}\r\n  ]\r\n}";
    let input = format!("\r\n{pretty}\r\n\r\n{pretty}");
    assert_eq!(
        decode_all_ways(LIMIT, input.as_bytes()),
        (values(&[pretty, pretty]), None)
    );
}

#[test]
fn realistic_command_any_split() {
    assert!(serde_json::from_str::<serde_json::Value>(COMMAND).is_ok());
    let input = format!("{COMMAND}{COMMAND}\n");
    assert_eq!(
        decode_all_ways(LIMIT, input.as_bytes()),
        (values(&[COMMAND, COMMAND]), None)
    );
}

#[test]
fn many_values_in_one_push() {
    let input = format!("{COMMAND} 7 {COMMAND}\n[] \"x\"{COMMAND}");
    assert_eq!(
        decode(LIMIT, input.as_bytes()),
        (
            values(&[COMMAND, "7", COMMAND, "[]", "\"x\"", COMMAND]),
            None
        )
    );
}

#[test]
fn two_thousand_values_in_one_push() {
    let one = r#"{"type":"IMG","unit":"cam-1"}"#;
    let input = one.repeat(2000);
    let (out, partial) = decode(LIMIT, input.as_bytes());
    assert_eq!(out.len(), 2000);
    assert!(out.iter().all(|o| *o == value(one)));
    assert_eq!(partial, None);
}

#[test]
fn string_contents_do_not_close_values() {
    let tricky = r#"{"a":"}{\"","b":"\\","c":["]","\\\""],"d":"\\\\"}"#;
    assert_eq!(
        decode_all_ways(LIMIT, format!("{tricky}{tricky}").as_bytes()),
        (values(&[tricky, tricky]), None)
    );
}

#[test]
fn multibyte_utf8_split_across_pushes() {
    let text = "{\"n\":\"é€𝄞\u{10FFFF}\u{FFFD}\"}";
    assert_eq!(
        decode_all_ways(LIMIT, text.as_bytes()),
        (values(&[text]), None)
    );
}

fn invalid_then_next_line(input: &[u8]) -> Vec<Out> {
    let mut bytes = input.to_vec();
    bytes.extend_from_slice(b"\n{\"ok\":1}");
    let (out, partial) = decode_all_ways(LIMIT, &bytes);
    assert_eq!(partial, None);
    out
}

#[test]
fn invalid_utf8_in_strings() {
    let cases: [(&[u8], usize); 12] = [
        (b"{\"a\":\"\x80\"}", 6),             // lone continuation byte
        (b"{\"a\":\"\xC0\x80\"}", 6),         // overlong NUL
        (b"{\"a\":\"\xC1\xBF\"}", 6),         // overlong
        (b"{\"a\":\"\xE0\x80\x80\"}", 7),     // overlong 3-byte
        (b"{\"a\":\"\xF0\x80\x80\x80\"}", 7), // overlong 4-byte
        (b"{\"a\":\"\xED\xA0\x80\"}", 7),     // surrogate D800
        (b"{\"a\":\"\xED\xBF\xBF\"}", 7),     // surrogate DFFF
        (b"{\"a\":\"\xF4\x90\x80\x80\"}", 7), // above U+10FFFF
        (b"{\"a\":\"\xF5\x80\x80\x80\"}", 6),
        (b"{\"a\":\"\xFF\"}", 6),
        (b"{\"\xC3\":1}", 3),         // truncated sequence in a key
        (b"{\"a\":\"\xE2\x82\"}", 8), // truncated before the closing quote
    ];
    for (input, offset) in cases {
        assert_eq!(
            invalid_then_next_line(input),
            vec![
                Out::Invalid(FrameError::InvalidUtf8 { offset }),
                value("{\"ok\":1}")
            ],
            "{input:?}"
        );
    }
}

#[test]
fn non_ascii_outside_strings() {
    assert_eq!(
        invalid_then_next_line("{\"a\":é}".as_bytes()),
        vec![syntax("unexpected non-ASCII byte", 5), value("{\"ok\":1}")]
    );
}

#[test]
fn control_characters_in_strings() {
    assert_eq!(
        invalid_then_next_line(b"{\"a\":\"x\ty\"}"),
        vec![
            syntax("control character in string", 7),
            value("{\"ok\":1}")
        ]
    );
    // The raw newline is the error byte and the first newline: parsing resumes right after it.
    assert_eq!(
        decode_all_ways(LIMIT, b"{\"a\":\"x\n{\"b\":1}"),
        (
            vec![syntax("control character in string", 7), value("{\"b\":1}")],
            None
        )
    );
}

#[test]
fn nul_bytes_anywhere() {
    for (input, offset) in [
        (&b"\0"[..], 0),
        (b"{\"a\":\"\0\"}", 6),
        (b"{\0}", 1),
        (b"[1,\0]", 3),
        (b"{\"a\":\"\xC3\0\"}", 7),
    ] {
        assert_eq!(
            invalid_then_next_line(input),
            vec![syntax("NUL byte", offset), value("{\"ok\":1}")],
            "{input:?}"
        );
    }
}

#[test]
fn bad_escapes() {
    assert_eq!(
        invalid_then_next_line(br#"{"a":"\x"}"#),
        vec![syntax("invalid escape in string", 7), value("{\"ok\":1}")]
    );
    assert_eq!(
        invalid_then_next_line(br#"{"a":"\U0041"}"#),
        vec![syntax("invalid escape in string", 7), value("{\"ok\":1}")]
    );
    assert_eq!(
        invalid_then_next_line(br#"{"a":"\u12G4"}"#),
        vec![
            syntax("expected 4 hex digits after \\u", 10),
            value("{\"ok\":1}")
        ]
    );
    assert_eq!(
        invalid_then_next_line(br#"["\u12"]"#),
        vec![
            syntax("expected 4 hex digits after \\u", 6),
            value("{\"ok\":1}")
        ]
    );
}

#[test]
fn unpaired_surrogate_escapes_are_grammatical() {
    // RFC 8259's grammar allows them; command validation rejects them where it reads strings.
    assert_eq!(
        decode_all_ways(LIMIT, br#"["\ud800","\uDFFF"]"#),
        (values(&[r#"["\ud800","\uDFFF"]"#]), None)
    );
}

#[test]
fn bad_numbers() {
    let cases: [(&[u8], Out); 14] = [
        (b"01", syntax("leading zero in number", 1)),
        (b"[01]", syntax("leading zero in number", 2)),
        (b"-01", syntax("leading zero in number", 2)),
        (b"1.", syntax("expected a digit after '.'", 2)),
        (b"[1.]", syntax("expected a digit after '.'", 3)),
        (b"-", syntax("expected a digit after '-'", 1)),
        (b"[-]", syntax("expected a digit after '-'", 2)),
        (b"1e", syntax("expected a digit in exponent", 2)),
        (b"[1e+]", syntax("expected a digit in exponent", 4)),
        (b".5", syntax("expected a JSON value", 0)),
        (b"+1", syntax("expected a JSON value", 0)),
        (b"[--1]", syntax("expected a digit after '-'", 2)),
        (b"1.5.3", syntax("invalid number", 3)),
        (b"12abc", syntax("invalid number", 2)),
    ];
    for (input, first) in cases {
        assert_eq!(
            invalid_then_next_line(input),
            vec![first, value("{\"ok\":1}")],
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn good_numbers_and_literals() {
    let input = b"[0,-0,1,-12,0.5,-0.0e0,1E9,2e-3,3E+4,true,false,null]";
    assert_eq!(
        decode_all_ways(LIMIT, input),
        (values(&[std::str::from_utf8(input).expect("ASCII")]), None)
    );
    assert_eq!(
        invalid_then_next_line(b"[tru]"),
        vec![syntax("invalid literal", 4), value("{\"ok\":1}")]
    );
    assert_eq!(
        invalid_then_next_line(b"nullx"),
        vec![syntax("invalid literal", 4), value("{\"ok\":1}")]
    );
}

#[test]
fn structural_errors() {
    let cases: [(&[u8], Out); 8] = [
        (br#"{"a" 1}"#, syntax("expected ':' after object key", 5)),
        (
            br#"{"a":1,}"#,
            syntax("expected '\"' to start an object key", 7),
        ),
        (br#"{1:2}"#, syntax("expected '\"' or '}' after '{'", 1)),
        (
            br#"{"a":1]"#,
            syntax("expected ',' or '}' after object member", 6),
        ),
        (
            br#"[1}"#,
            syntax("expected ',' or ']' after array element", 2),
        ),
        (br#"[1,]"#, syntax("expected a value", 3)),
        (br#"[,"#, syntax("expected a value or ']'", 1)),
        (br#"}"#, syntax("expected a JSON value", 0)),
    ];
    for (input, first) in cases {
        assert_eq!(
            invalid_then_next_line(input),
            vec![first, value("{\"ok\":1}")],
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn garbage_line_then_valid_line() {
    assert_eq!(
        decode_all_ways(LIMIT, b"hello\n{\"type\":\"IMG\",\"unit\":\"a\"}"),
        (
            vec![
                syntax("expected a JSON value", 0),
                value(r#"{"type":"IMG","unit":"a"}"#)
            ],
            None
        )
    );
}

#[test]
fn error_after_a_complete_value_keeps_the_value() {
    assert_eq!(
        decode_all_ways(LIMIT, b"{}x\n[]"),
        (
            vec![value("{}"), syntax("expected a JSON value", 0), value("[]")],
            None
        )
    );
}

#[test]
fn broken_pretty_value_resumes_at_its_first_newline() {
    // The error is found on line 3, but parsing resumes at line 2.
    let input = b"{\"x\":\n{\"type\":\"IMG\",\"unit\":\"a\"}\noops\n[1]\n";
    assert_eq!(
        decode_all_ways(LIMIT, input),
        (
            vec![
                syntax("expected ',' or '}' after object member", 32),
                value(r#"{"type":"IMG","unit":"a"}"#),
                syntax("expected a JSON value", 0),
                value("[1]"),
            ],
            None
        )
    );
}

#[test]
fn whitespace_before_a_broken_value_is_not_part_of_it() {
    // The newline before `x` precedes the broken value, so the skip goes to the one after it.
    assert_eq!(
        decode_all_ways(LIMIT, b"\n  x [1]\n[2]"),
        (vec![syntax("expected a JSON value", 0), value("[2]")], None)
    );
}

#[test]
fn broken_line_without_newline_within_limit_is_fatal() {
    let mut input = b"{\"a\": x".to_vec();
    input.resize(100, b'y');
    let (out, partial) = decode_all_ways(100, &input);
    assert_eq!(
        out,
        vec![
            syntax("expected a value", 6),
            Out::Fatal(FrameError::NoResync { limit: 100 })
        ]
    );
    assert_eq!(partial, None);
}

#[test]
fn newline_as_last_byte_within_limit_resyncs() {
    let mut input = b"{\"a\": x".to_vec();
    input.resize(99, b'y');
    input.extend_from_slice(b"\n[]");
    assert_eq!(
        decode_all_ways(100, &input),
        (vec![syntax("expected a value", 6), value("[]")], None)
    );
}

#[test]
fn nothing_comes_after_fatal() {
    let mut decoder = FrameDecoder::new(4);
    decoder.push(b"\"abcdef\"\n{}");
    assert_eq!(
        decoder.next_frame(),
        Some(Frame::Fatal(FrameError::TooLarge { limit: 4 }))
    );
    assert_eq!(decoder.next_frame(), None);
    decoder.push(b"{}\n{}");
    assert_eq!(decoder.next_frame(), None);
    assert_eq!(decoder.pending_bytes(), 0);
    assert_eq!(decoder.finish(), None);
}

#[test]
fn value_exactly_at_limit_passes() {
    let exact = r#"{"a":"xxxxxxx"}"#; // 15 bytes
    assert_eq!(
        decode_all_ways(15, exact.as_bytes()),
        (values(&[exact]), None)
    );
    assert_eq!(
        decode_all_ways(15, format!(" {exact} {exact}").as_bytes()),
        (values(&[exact, exact]), None)
    );
    assert_eq!(decode_all_ways(3, b"123 "), (values(&["123"]), None));
    assert_eq!(decode_all_ways(3, b"123[]"), (values(&["123", "[]"]), None));
    assert_eq!(decode_all_ways(4, b"true\n"), (values(&["true"]), None));
}

#[test]
fn one_byte_over_limit_is_too_large() {
    let over = r#"{"a":"xxxxxxxx"}"#; // 16 bytes
    let fatal = Out::Fatal(FrameError::TooLarge { limit: 15 });
    assert_eq!(decode_all_ways(15, over.as_bytes()), (vec![fatal], None));
    let fatal = Out::Fatal(FrameError::TooLarge { limit: 3 });
    assert_eq!(decode_all_ways(3, b"1234 "), (vec![fatal], None));
}

#[test]
fn too_large_is_found_before_the_value_ends() {
    let mut decoder = FrameDecoder::new(1000);
    decoder.push(b"{\"a\":\"");
    assert_eq!(decoder.next_frame(), None);
    decoder.push(&[b'x'; 2000]);
    assert_eq!(
        decoder.next_frame(),
        Some(Frame::Fatal(FrameError::TooLarge { limit: 1000 }))
    );
}

#[test]
fn depth_limit() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let ok = nested(MAX_DEPTH);
    assert_eq!(decode(LIMIT, ok.as_bytes()), (values(&[&ok]), None));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
    assert_eq!(
        decode(LIMIT, objects.as_bytes()),
        (values(&[&objects]), None)
    );

    let deep = format!("{}\n{ok}", nested(MAX_DEPTH + 1));
    assert_eq!(
        decode_all_ways(LIMIT, deep.as_bytes()),
        (
            vec![
                Out::Invalid(FrameError::TooDeep { limit: MAX_DEPTH }),
                value(&ok)
            ],
            None
        )
    );
}

#[test]
fn top_level_scalars_are_framed() {
    assert_eq!(
        decode_all_ways(LIMIT, b"123 \"str\" true\tnull\r\n-1.5e3[]false\"x\"0"),
        (
            values(&["123", "\"str\"", "true", "null", "-1.5e3", "[]", "false", "\"x\""]),
            Some(1)
        )
    );
}

#[test]
fn pending_bytes_tracks_the_value_in_progress() {
    let mut decoder = FrameDecoder::new(LIMIT);
    decoder.push(b"{}  {\"a\"");
    assert_eq!(value_of(decoder.next_frame()), Some(&b"{}"[..]));
    assert_eq!(decoder.next_frame(), None);
    assert_eq!(decoder.pending_bytes(), 4);
    decoder.push(b":1}  ");
    assert_eq!(value_of(decoder.next_frame()), Some(&b"{\"a\":1}"[..]));
    assert_eq!(decoder.next_frame(), None);
    assert_eq!(decoder.pending_bytes(), 0);
}

#[test]
fn buffer_stays_small_on_a_long_connection() {
    let mut decoder = FrameDecoder::new(LIMIT);
    let mut out = Vec::new();
    for _ in 0..20_000 {
        decoder.push(COMMAND.as_bytes());
        decoder.push(b"\n");
        drain(&mut decoder, &mut out);
        assert!(decoder.buf.len() <= 2 * COMMAND.len() + 2);
    }
    assert_eq!(out.len(), 20_000);
    // A command trickled in byte by byte never makes the buffer much larger than itself.
    for &b in COMMAND.as_bytes() {
        decoder.push(&[b]);
        drain(&mut decoder, &mut out);
        assert!(decoder.buf.len() <= 2 * COMMAND.len() + 2);
    }
    assert_eq!(out.len(), 20_001);
}

#[test]
fn skipped_bytes_are_not_buffered() {
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.push(b"x");
    assert!(matches!(decoder.next_frame(), Some(Frame::Invalid(_))));
    for _ in 0..100 {
        decoder.push(&[b'y'; 1000]);
        assert_eq!(decoder.next_frame(), None);
        assert!(decoder.buf.len() <= 1000);
    }
    decoder.push(b"\n{}");
    assert_eq!(value_of(decoder.next_frame()), Some(&b"{}"[..]));
}

#[test]
fn check_value_accepts_one_value() {
    for ok in [
        COMMAND,
        " {} ",
        "\n123\n",
        "0",
        "\"x\"",
        "[true , null]",
        "-1e-9",
    ] {
        assert_eq!(check_value(ok.as_bytes()), Ok(()), "{ok:?}");
    }
}

#[test]
fn check_value_rejects_everything_else() {
    let cases: [(&[u8], FrameError); 8] = [
        (
            b"",
            FrameError::Syntax {
                reason: "no value",
                offset: 0,
            },
        ),
        (
            b" \n",
            FrameError::Syntax {
                reason: "no value",
                offset: 0,
            },
        ),
        (
            b" {\"a\":",
            FrameError::Syntax {
                reason: "unexpected end of input",
                offset: 5,
            },
        ),
        (
            b"1.",
            FrameError::Syntax {
                reason: "unexpected end of input",
                offset: 2,
            },
        ),
        (
            b"{} {}",
            FrameError::Syntax {
                reason: "unexpected bytes after the value",
                offset: 3,
            },
        ),
        (
            b"1 2",
            FrameError::Syntax {
                reason: "unexpected bytes after the value",
                offset: 2,
            },
        ),
        (b"\"\xFF\"", FrameError::InvalidUtf8 { offset: 1 }),
        (
            b"{\"a\" 1}",
            FrameError::Syntax {
                reason: "expected ':' after object key",
                offset: 5,
            },
        ),
    ];
    for (input, err) in cases {
        assert_eq!(check_value(input), Err(err), "{input:?}");
    }
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert_eq!(
        check_value(deep.as_bytes()),
        Err(FrameError::TooDeep { limit: MAX_DEPTH })
    );
}

#[test]
fn error_messages() {
    let cases = [
        (
            FrameError::Syntax {
                reason: "expected ':' after object key",
                offset: 3,
            },
            "invalid JSON: expected ':' after object key",
        ),
        (
            FrameError::InvalidUtf8 { offset: 0 },
            "invalid UTF-8 in string",
        ),
        (
            FrameError::TooDeep { limit: 128 },
            "nesting deeper than 128",
        ),
        (
            FrameError::TooLarge { limit: 65536 },
            "value larger than 65536 bytes",
        ),
        (
            FrameError::NoResync { limit: 65536 },
            "no newline within 65536 bytes after invalid JSON",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

/// Deterministic pseudo-random numbers for the tests below.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below.max(1)
    }
}

/// Mixed valid and broken input, split at random points, gives the same frames as one push.
#[test]
fn random_splits_of_mixed_input_agree() {
    let pieces: [&[u8]; 12] = [
        COMMAND.as_bytes(),
        b"\n",
        b"  ",
        b"{\"a\":[1,2,{\"b\":\"\\u00e9\"}]}",
        b"garbage",
        b"{\n  \"x\": 1,\n  \"y\" 2\n}\n",
        b"12",
        b"\"\xC3\xA9\"",
        b"\xFF",
        b"[[[[",
        b"]]]]",
        b"\r\n",
    ];
    let mut rng = Lcg(7);
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..rng.next(12) {
            input.extend_from_slice(pieces[rng.next(pieces.len())]);
        }
        let limit = [64, 300, LIMIT][rng.next(3)];
        let whole = decode(limit, &input);
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(1 + rng.next(rest.len().min(40)));
            chunks.push(chunk);
            rest = tail;
        }
        assert_eq!(decode_chunks(limit, &chunks), whole, "{input:?}");
    }
}

/// JSON pieces (and a few broken ones) for generating mostly-valid input.
const TOKENS: [&[u8]; 26] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b"[]",
    b"{}",
    b",",
    b":",
    b" ",
    b"\n",
    b"\"k\"",
    b"\"\"",
    b"\"\\u00e9\\n\"",
    "\"é€𝄞\"".as_bytes(),
    b"\"\xED\xA0\x80\"",
    b"0",
    b"-1.5e3",
    b"12",
    b"1.",
    b"01",
    b"true",
    b"nul",
    b"null",
    b"\"",
    b"\\",
    b"\"a\tb\"",
];

/// Random JSON-ish bytes: no panic, chunking does not matter, and framing agrees
/// with serde_json on what a value is.
#[test]
fn random_bytes_agree_with_serde_json() {
    // No 'd'/'D', so no \u escape can be a surrogate, which serde_json rejects but the grammar allows.
    let alphabet = b"{}[]\"\",:: 0 1-9e.E+tfrunlsa\\\n\t\x00\x7F\xC3\xA9\xED\xE0\xF0\x9F\x80";
    let mut rng = Lcg(42);
    let mut valid = 0;
    for _ in 0..20_000 {
        let mut input = Vec::new();
        if rng.next(2) == 0 {
            for _ in 0..1 + rng.next(24) {
                input.push(alphabet[rng.next(alphabet.len())]);
            }
        } else {
            for _ in 0..1 + rng.next(10) {
                input.extend_from_slice(TOKENS[rng.next(TOKENS.len())]);
            }
        }

        let whole = decode(LIMIT, &input);
        assert_eq!(decode_bytewise(LIMIT, &input), whole, "{input:?}");
        for out in &whole.0 {
            if let Out::Value(v) = out {
                assert_eq!(check_value(v.as_bytes()), Ok(()), "{v:?}");
            }
        }

        let ours = check_value(&input);
        let theirs = serde_json::from_slice::<serde_json::Value>(&input);
        if let Err(e) = &theirs {
            if e.to_string().starts_with("number out of range") {
                continue;
            }
        }
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{:?}: {ours:?} vs {theirs:?}",
            String::from_utf8_lossy(&input)
        );
        valid += usize::from(ours.is_ok());
    }
    assert!(valid > 400, "{valid}");
}

/// The bytes of a `Frame::Value`.
fn value_of(frame: Option<Frame<'_>>) -> Option<&[u8]> {
    match frame {
        Some(Frame::Value(json)) => Some(json.bytes()),
        _ => None,
    }
}

/// (key, value) texts of the top-level members, and the wide numbers.
fn spans_of(json: &Json<'_>) -> (Vec<(String, String)>, Vec<String>) {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (
        json.members()
            .map(|m| (text(m.key), text(m.value)))
            .collect(),
        json.wide_numbers().map(text).collect(),
    )
}

#[test]
fn values_come_with_the_spans_of_their_members_and_wide_numbers() {
    let input = concat!(
        r#" { "type" : "CFG", "u\u006eit":"a", "n":12, "e": -1.5e3 , "t":true,"#,
        r#" "o":{"x":[1,2e9,{"k":null}]} ,"a":[ ], "z":"\"}" } "#
    );
    let mut spans = Spans::default();
    let json = parse(input.as_bytes(), &mut spans).unwrap();
    let (members, wide) = spans_of(&json);
    let pairs: Vec<(&str, &str)> = members
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            (r#""type""#, r#""CFG""#),
            (r#""u\u006eit""#, r#""a""#),
            (r#""n""#, "12"),
            (r#""e""#, "-1.5e3"),
            (r#""t""#, "true"),
            (r#""o""#, r#"{"x":[1,2e9,{"k":null}]}"#),
            (r#""a""#, "[ ]"),
            (r#""z""#, r#""\"}""#),
        ]
    );
    assert_eq!(wide, ["-1.5e3", "2e9"]);
    assert_eq!(json.bytes(), input.trim().as_bytes());

    // The same spans however the stream is split, and with values before it.
    let stream = format!("[1,2] \"x\" 7e1 {input}\n{{}}");
    for cut in 0..stream.len() {
        let mut decoder = FrameDecoder::new(4096);
        let mut found = Vec::new();
        for part in [&stream.as_bytes()[..cut], &stream.as_bytes()[cut..]] {
            decoder.push(part);
            while let Some(frame) = decoder.next_frame() {
                if let Frame::Value(json) = frame {
                    found.push((json.is_object(), spans_of(&json)));
                }
            }
        }
        assert_eq!(found.len(), 5, "cut at {cut}");
        assert_eq!(found[0], (false, (vec![], vec![])), "cut at {cut}");
        assert_eq!(found[1], (false, (vec![], vec![])), "cut at {cut}");
        assert_eq!(
            found[2],
            (false, (vec![], vec!["7e1".into()])),
            "cut at {cut}"
        );
        assert_eq!(
            found[3],
            (true, (members.clone(), wide.clone())),
            "cut at {cut}"
        );
        assert_eq!(found[4], (true, (vec![], vec![])), "cut at {cut}");
    }
}

#[test]
fn a_number_of_more_than_300_characters_is_wide() {
    let long = "9".repeat(301);
    let input = format!(r#"{{"a":{long},"b":{}}}"#, "9".repeat(300));
    let mut spans = Spans::default();
    let json = parse(input.as_bytes(), &mut spans).unwrap();
    assert_eq!(spans_of(&json).1, [long]);
}

/// Found by the decoder fuzz target: a top-level number that ends the input
/// of `parse` has the same wide-number span as when framing ends it.
#[test]
fn a_top_level_number_at_the_end_of_the_input_is_still_noted() {
    let mut spans = Spans::default();
    let json = parse(b"  -12.5e+3 ", &mut spans).unwrap();
    assert_eq!(spans_of(&json).1, ["-12.5e+3"]);
    let mut spans = Spans::default();
    let json = parse(b"-12.5e+3", &mut spans).unwrap();
    assert_eq!(spans_of(&json).1, ["-12.5e+3"]);
    let mut decoder = FrameDecoder::new(LIMIT);
    decoder.push(b"-12.5e+3 ");
    match decoder.next_frame() {
        Some(Frame::Value(json)) => assert_eq!(spans_of(&json).1, ["-12.5e+3"]),
        other => panic!("{other:?}"),
    }
}
