//! The JSON scanner: the byte-level state machine that checks a value's
//! syntax (grammar, UTF-8, nesting) one byte at a time and notes where its
//! top-level members and wide numbers are ([`Json`]), and readers of the
//! single tokens validation quotes ([`decode_string`], [`compact`]). Pure;
//! fed by the framer (`frame.rs`), read by validation (`command.rs`,
//! `control.rs`).

use std::borrow::Cow;

/// Deepest nesting of arrays and objects accepted; one more is `TooDeep`.
pub const MAX_DEPTH: usize = 128;

/// One complete JSON value: exactly the bytes received (surrounding
/// whitespace trimmed), and, for an object, where its top-level members and
/// its long or exponent numbers are. Only the framer (`frame.rs`) builds
/// one, so the spans always match the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Json<'a> {
    bytes: &'a [u8],
    spans: &'a Spans,
}

/// One top-level member of an object: the key as a JSON string token
/// (quotes and escapes included) and the value's JSON text, both exactly as
/// received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Json<'a> {
    /// `bytes` with the spans the scanner noted while it scanned them.
    pub(super) fn new(bytes: &'a [u8], spans: &'a Spans) -> Json<'a> {
        Json { bytes, spans }
    }

    /// The value's bytes, as received.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the value is an object.
    pub fn is_object(&self) -> bool {
        self.bytes.first() == Some(&b'{')
    }

    /// The top-level members of an object, in order (none for other values).
    pub fn members(&self) -> impl Iterator<Item = Member<'a>> + 'a {
        let bytes = self.bytes;
        self.spans.members.iter().map(move |m| Member {
            key: bytes.get(m.key.0..m.key.1).unwrap_or_default(),
            value: bytes.get(m.value.0..m.value.1).unwrap_or_default(),
        })
    }

    /// Number tokens anywhere in the value that have an exponent or more than
    /// 300 characters: the only ones that can overflow a double.
    pub fn wide_numbers(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        self.spans
            .wide_numbers
            .iter()
            .map(move |&(from, to)| bytes.get(from..to).unwrap_or_default())
    }
}

impl PartialEq for Json<'_> {
    /// Equal when the bytes are: the spans follow from them.
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Json<'_> {}

impl PartialEq<&[u8]> for Json<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        self.bytes == *other
    }
}

/// The spans the state machine notes while it parses a value, as offsets
/// from the value's first byte. See [`Json`].
#[derive(Debug, Clone, Default)]
pub struct Spans {
    members: Vec<MemberSpan>,
    wide_numbers: Vec<(usize, usize)>,
    key_start: usize,
    key: (usize, usize),
    value_start: usize,
    number_start: usize,
    number_exp: bool,
}

#[derive(Debug, Clone, Copy)]
struct MemberSpan {
    key: (usize, usize),
    value: (usize, usize),
}

impl Spans {
    pub(super) fn clear(&mut self) {
        self.members.clear();
        self.wide_numbers.clear();
    }

    /// Records what the byte at offset `at` did (`marks`, see [`mark`]).
    #[cold]
    pub(super) fn note(&mut self, marks: u8, at: usize) {
        if marks & mark::KEY_START != 0 {
            self.key_start = at;
        }
        if marks & mark::KEY_END != 0 {
            self.key = (self.key_start, at + 1);
        }
        if marks & mark::VALUE_START != 0 {
            self.value_start = at;
        }
        if marks & (mark::VALUE_END | mark::VALUE_END_BEFORE) != 0 {
            let end = if marks & mark::VALUE_END != 0 {
                at + 1
            } else {
                at
            };
            self.members.push(MemberSpan {
                key: self.key,
                value: (self.value_start, end),
            });
        }
        if marks & mark::NUMBER_START != 0 {
            self.number_start = at;
            self.number_exp = false;
        }
        if marks & mark::NUMBER_EXP != 0 {
            self.number_exp = true;
        }
        if marks & mark::NUMBER_END != 0 && (self.number_exp || at - self.number_start > 300) {
            self.wide_numbers.push((self.number_start, at));
        }
    }
}

/// What a byte did, for [`Spans`]: bits the parser sets in `Parser::marks`.
mod mark {
    /// The `"` opening a top-level key.
    pub const KEY_START: u8 = 1;
    /// The `"` closing a top-level key.
    pub const KEY_END: u8 = 2;
    /// The first byte of a top-level member's value.
    pub const VALUE_START: u8 = 4;
    /// The last byte of a top-level member's value (a string or container).
    pub const VALUE_END: u8 = 8;
    /// The byte just after a top-level member's value (a number or literal).
    pub const VALUE_END_BEFORE: u8 = 16;
    /// The first byte of a number, at any depth.
    pub const NUMBER_START: u8 = 32;
    /// The `e` or `E` of a number.
    pub const NUMBER_EXP: u8 = 64;
    /// The byte just after a number.
    pub const NUMBER_END: u8 = 128;
}

/// A JSON token (from a [`Json`]) with the whitespace outside strings
/// removed; numbers and escapes stay as sent.
pub fn compact(raw: &[u8]) -> String {
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

/// Whether a JSON string literal (quotes included, syntax checked) says
/// `text`: the bytes compared as they are unless an escape needs decoding
/// (asked of every member key of every command).
pub fn string_is(raw: &[u8], text: &str) -> bool {
    let Some(inner) = raw.get(1..raw.len().saturating_sub(1)) else {
        return false;
    };
    if !inner.contains(&b'\\') {
        return inner == text.as_bytes();
    }
    decode_string(raw).is_some_and(|s| s == text)
}

/// Decodes a JSON string literal (quotes included) whose syntax is already
/// checked. None when a `\u` escape holds an unpaired surrogate.
pub fn decode_string(raw: &[u8]) -> Option<Cow<'_, str>> {
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

/// Outcome of feeding one byte to the parser.
pub(super) enum Step {
    /// The byte belongs to the current value; go on with the next one.
    Next,
    /// The byte ended a number or literal inside a container; feed it again.
    Again,
    /// The byte closed a top-level value and is part of it.
    Close,
    /// The byte ended a top-level number or literal and is not part of it.
    End,
    Error(Fault),
}

/// A parse error before its position is known.
pub(super) enum Fault {
    Syntax(&'static str),
    Utf8,
    TooDeep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Top level, before a value.
    Idle,
    /// A value must follow (after ':' or after ',' in an array).
    Value,
    /// After '[': a value or ']'.
    ArrayFirst,
    /// After '{': a key or '}'.
    ObjectFirst,
    /// After ',' in an object: a key.
    Key,
    /// After a key: ':'.
    Colon,
    /// After a value inside a container: ',' or the closing bracket.
    AfterValue,
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    /// Inside `\uXXXX`, `left` hex digits to go.
    Unicode {
        key: bool,
        left: u8,
    },
    /// Inside a multi-byte UTF-8 sequence: `left` continuation bytes to go, the
    /// next one within `lo..=hi`.
    Utf8 {
        key: bool,
        left: u8,
        lo: u8,
        hi: u8,
    },
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    ExpMark,
    ExpSign,
    Exp,
    /// Inside `true`, `false` or `null`: the bytes still expected, first in the low byte.
    Literal {
        rest: u32,
    },
    LiteralEnd,
}

/// The JSON state machine. The container stack is a bit set: bit `i` is set
/// when the container at depth `i` is an object; MAX_DEPTH fits in a u128.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parser {
    state: State,
    depth: usize,
    objects: u128,
    /// What the last byte did ([`mark`] bits); the caller takes them.
    marks: u8,
}

const _: () = assert!(MAX_DEPTH <= u128::BITS as usize);

impl Parser {
    pub(super) fn new() -> Self {
        Parser {
            state: State::Idle,
            depth: 0,
            objects: 0,
            marks: 0,
        }
    }

    pub(super) fn step(&mut self, b: u8) -> Step {
        use State::*;
        match self.state {
            Idle => self.value_start(b, "expected a JSON value"),
            Value if is_ws(b) => Step::Next,
            Value => {
                if self.depth == 1 && self.in_object() {
                    self.marks |= mark::VALUE_START;
                }
                self.value_start(b, "expected a value")
            }
            ArrayFirst if is_ws(b) => Step::Next,
            ArrayFirst if b == b']' => self.close_container(),
            ArrayFirst => self.value_start(b, "expected a value or ']'"),
            ObjectFirst | Key | Colon | AfterValue if is_ws(b) => Step::Next,
            ObjectFirst | Key if b == b'"' => {
                if self.depth == 1 {
                    self.marks |= mark::KEY_START;
                }
                self.go(Str { key: true })
            }
            ObjectFirst if b == b'}' => self.close_container(),
            ObjectFirst => fault(b, "expected '\"' or '}' after '{'"),
            Key => fault(b, "expected '\"' to start an object key"),
            Colon if b == b':' => self.go(Value),
            Colon => fault(b, "expected ':' after object key"),
            AfterValue => self.after_value(b),
            Str { key } => match b {
                b'"' if key => {
                    if self.depth == 1 {
                        self.marks |= mark::KEY_END;
                    }
                    self.go(Colon)
                }
                b'"' => self.value_done(),
                b'\\' => self.go(Escape { key }),
                0x20..=0x7F => Step::Next,
                0x00..=0x1F => fault(b, "control character in string"),
                _ => match utf8_lead(b) {
                    Some((left, lo, hi)) => self.go(Utf8 { key, left, lo, hi }),
                    None => Step::Error(Fault::Utf8),
                },
            },
            Escape { key } => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.go(Str { key }),
                b'u' => self.go(Unicode { key, left: 4 }),
                _ => fault(b, "invalid escape in string"),
            },
            Unicode { key, left } if b.is_ascii_hexdigit() => match left {
                0 | 1 => self.go(Str { key }),
                _ => self.go(Unicode {
                    key,
                    left: left - 1,
                }),
            },
            Unicode { .. } => fault(b, "expected 4 hex digits after \\u"),
            Utf8 { key, left, lo, hi } if (lo..=hi).contains(&b) => match left {
                0 | 1 => self.go(Str { key }),
                _ => self.go(Utf8 {
                    key,
                    left: left - 1,
                    lo: 0x80,
                    hi: 0xBF,
                }),
            },
            Utf8 { .. } if b == 0 => fault(b, "NUL byte"),
            Utf8 { .. } => Step::Error(Fault::Utf8),
            Minus => match b {
                b'0' => self.go(Zero),
                b'1'..=b'9' => self.go(Int),
                _ => fault(b, "expected a digit after '-'"),
            },
            Zero => match b {
                b'.' => self.go(Dot),
                b'e' | b'E' => self.exponent(),
                b'0'..=b'9' => fault(b, "leading zero in number"),
                _ => self.scalar_end(b, "invalid number"),
            },
            Int => match b {
                b'0'..=b'9' => Step::Next,
                b'.' => self.go(Dot),
                b'e' | b'E' => self.exponent(),
                _ => self.scalar_end(b, "invalid number"),
            },
            Dot => match b {
                b'0'..=b'9' => self.go(Frac),
                _ => fault(b, "expected a digit after '.'"),
            },
            Frac => match b {
                b'0'..=b'9' => Step::Next,
                b'e' | b'E' => self.exponent(),
                _ => self.scalar_end(b, "invalid number"),
            },
            ExpMark => match b {
                b'+' | b'-' => self.go(ExpSign),
                b'0'..=b'9' => self.go(Exp),
                _ => fault(b, "expected a digit in exponent"),
            },
            ExpSign => match b {
                b'0'..=b'9' => self.go(Exp),
                _ => fault(b, "expected a digit in exponent"),
            },
            Exp => match b {
                b'0'..=b'9' => Step::Next,
                _ => self.scalar_end(b, "invalid number"),
            },
            Literal { rest } => {
                if b != rest.to_le_bytes()[0] {
                    fault(b, "invalid literal")
                } else if rest >> 8 == 0 {
                    self.go(LiteralEnd)
                } else {
                    self.go(Literal { rest: rest >> 8 })
                }
            }
            LiteralEnd => self.scalar_end(b, "invalid literal"),
        }
    }

    /// Between values at the top level: the next byte starts one.
    pub(super) fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// Inside a string, where runs of plain bytes may be skipped.
    pub(super) fn in_string(&self) -> bool {
        matches!(self.state, State::Str { .. })
    }

    /// What the last byte did, for [`Spans::note`]; cleared.
    pub(super) fn take_marks(&mut self) -> u8 {
        std::mem::take(&mut self.marks)
    }

    fn go(&mut self, state: State) -> Step {
        self.state = state;
        Step::Next
    }

    fn value_start(&mut self, b: u8, reason: &'static str) -> Step {
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => self.go(State::Str { key: false }),
            b'-' => self.number(State::Minus),
            b'0' => self.number(State::Zero),
            b'1'..=b'9' => self.number(State::Int),
            b't' => self.literal(*b"rue\0"),
            b'f' => self.literal(*b"alse"),
            b'n' => self.literal(*b"ull\0"),
            _ => fault(b, reason),
        }
    }

    fn number(&mut self, state: State) -> Step {
        self.marks |= mark::NUMBER_START;
        self.go(state)
    }

    fn exponent(&mut self) -> Step {
        self.marks |= mark::NUMBER_EXP;
        self.go(State::ExpMark)
    }

    /// `rest`: the literal's bytes after the first, NUL-padded.
    fn literal(&mut self, rest: [u8; 4]) -> Step {
        self.go(State::Literal {
            rest: u32::from_le_bytes(rest),
        })
    }

    fn open(&mut self, object: bool) -> Step {
        if self.depth >= MAX_DEPTH {
            return Step::Error(Fault::TooDeep);
        }
        let bit = 1u128 << self.depth;
        if object {
            self.objects |= bit;
            self.state = State::ObjectFirst;
        } else {
            self.objects &= !bit;
            self.state = State::ArrayFirst;
        }
        self.depth += 1;
        Step::Next
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && (self.objects >> (self.depth - 1)) & 1 == 1
    }

    fn after_value(&mut self, b: u8) -> Step {
        let object = self.in_object();
        match b {
            b',' if object => self.go(State::Key),
            b',' => self.go(State::Value),
            b'}' if object => self.close_container(),
            b']' if !object => self.close_container(),
            _ if object => fault(b, "expected ',' or '}' after object member"),
            _ => fault(b, "expected ',' or ']' after array element"),
        }
    }

    fn close_container(&mut self) -> Step {
        self.depth = self.depth.saturating_sub(1);
        self.value_done()
    }

    /// A string or container just closed with the current byte.
    fn value_done(&mut self) -> Step {
        if self.depth == 1 && self.in_object() {
            self.marks |= mark::VALUE_END;
        }
        if self.depth == 0 {
            self.state = State::Idle;
            Step::Close
        } else {
            self.go(State::AfterValue)
        }
    }

    /// `b` cannot continue the number or literal that was being read.
    fn scalar_end(&mut self, b: u8, reason: &'static str) -> Step {
        if matches!(
            self.state,
            State::Zero | State::Int | State::Frac | State::Exp
        ) {
            self.marks |= mark::NUMBER_END;
        }
        if self.depth == 1 && self.in_object() {
            self.marks |= mark::VALUE_END_BEFORE;
        }
        if self.depth > 0 {
            self.state = State::AfterValue;
            Step::Again
        } else if is_ws(b) || starts_value(b) {
            self.state = State::Idle;
            Step::End
        } else {
            fault(b, reason)
        }
    }

    /// Whether `b` ends a top-level number or literal without being part of it.
    pub(super) fn ends_top_level_scalar(&self, b: u8) -> bool {
        let mut probe = *self;
        matches!(probe.step(b), Step::End)
    }
}

/// A syntax fault at byte `b`; NUL and non-ASCII bytes get their own reason
/// because the context reason would hide what arrived.
fn fault(b: u8, reason: &'static str) -> Step {
    let reason = match b {
        0 => "NUL byte",
        0x80.. => "unexpected non-ASCII byte",
        _ => reason,
    };
    Step::Error(Fault::Syntax(reason))
}

pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn starts_value(b: u8) -> bool {
    matches!(
        b,
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
    )
}

/// Length of the leading run of string bytes that need no state change:
/// printable ASCII other than '"' and '\\'.
pub(super) fn plain_string_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&c| !PLAIN_STRING_BYTE[usize::from(c)])
        .unwrap_or(bytes.len())
}

static PLAIN_STRING_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0x20;
    while c < 0x80 {
        table[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    table
};

/// Continuation bytes after a UTF-8 lead byte and the range of the first one
/// (which excludes overlongs, surrogates and code points past U+10FFFF).
fn utf8_lead(b: u8) -> Option<(u8, u8, u8)> {
    match b {
        0xC2..=0xDF => Some((1, 0x80, 0xBF)),
        0xE0 => Some((2, 0xA0, 0xBF)),
        0xE1..=0xEC | 0xEE..=0xEF => Some((2, 0x80, 0xBF)),
        0xED => Some((2, 0x80, 0x9F)),
        0xF0 => Some((3, 0x90, 0xBF)),
        0xF1..=0xF3 => Some((3, 0x80, 0xBF)),
        0xF4 => Some((3, 0x80, 0x8F)),
        _ => None,
    }
}
