//! Streaming JSON value framing.
//!
//! Runs on each backend session thread, which owns one `FrameDecoder` per
//! connection and with it that connection's receive buffer. The session pushes
//! whatever a read returned and pulls frames: complete JSON values (exactly the
//! bytes received, surrounding whitespace trimmed), `Invalid` when bytes are not
//! JSON (the decoder resynchronises by itself) or `Fatal` when the connection
//! must be closed. No I/O, no threads, no shared state.
//!
//! The syntax check is a byte-level state machine with an explicit stack, so a
//! value is complete when its closing byte arrives and an error is reported at
//! the first byte that cannot be JSON, however the stream was split into reads.
//! Every byte is examined once (bytes of a broken value after its first newline
//! are examined again when parsing resumes there).
//!
//! While it checks the syntax, the state machine notes where the top-level
//! members of an object begin and end, and which numbers might overflow a
//! double. A complete value comes out as a [`Json`]: the bytes received and
//! those spans, which is all validation (`command.rs`) needs, so no byte is
//! scanned a second time. [`parse`] runs the framer itself over one
//! complete slice (a spooled command, a test), so the validator accepts
//! exactly what framing accepts. [`decode_string`] and [`compact`] read the
//! single tokens validation quotes.

use std::borrow::Cow;
use std::fmt;

#[cfg(test)]
mod tests;

/// Deepest nesting of arrays and objects accepted; one more is `TooDeep`.
pub const MAX_DEPTH: usize = 128;

/// Splits one connection's byte stream into JSON values.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Next byte of `buf` to examine.
    pos: usize,
    /// Bytes before this index are handed out or discarded; `push` may drop them.
    consumed: usize,
    /// First byte of the value being parsed; meaningful while the parser is in a value.
    start: usize,
    max_value_bytes: usize,
    parser: Parser,
    mode: Mode,
    /// Spans of the value being parsed (reused from value to value).
    spans: Spans,
}

/// One complete JSON value: exactly the bytes received (surrounding
/// whitespace trimmed), and, for an object, where its top-level members and
/// its long or exponent numbers are. Only the framer ([`FrameDecoder`],
/// [`parse`]) builds one, so the spans always match the bytes.
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
    fn clear(&mut self) {
        self.members.clear();
        self.wide_numbers.clear();
    }

    /// Records what the byte at offset `at` did (`marks`, see [`mark`]).
    #[cold]
    fn note(&mut self, marks: u8, at: usize) {
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

/// What one call to [`FrameDecoder::next_frame`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One complete JSON value, leading/trailing whitespace trimmed, exactly the bytes received.
    Value(Json<'a>),
    /// Bytes that are not JSON, reported as soon as the bad byte arrives. The
    /// decoder then skips to the first newline after the start of the broken
    /// value by itself (a `Fatal(NoResync)` follows if none comes in time). The
    /// connection stays open.
    Invalid(FrameError),
    /// The connection must be closed; the decoder yields nothing more.
    Fatal(FrameError),
}

/// Why bytes were refused. `offset` (for debug logs, not in the message)
/// counts from the first byte of the broken value to the byte found bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes break the JSON grammar.
    Syntax { reason: &'static str, offset: usize },
    /// A string holds bytes that are not well-formed UTF-8.
    InvalidUtf8 { offset: usize },
    /// Arrays/objects nested deeper than `limit`.
    TooDeep { limit: usize },
    /// The value would be longer than `limit` bytes (fatal).
    TooLarge { limit: usize },
    /// No newline within `limit` bytes of the start of a broken value (fatal).
    NoResync { limit: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Syntax { reason, .. } => write!(f, "invalid JSON: {reason}"),
            FrameError::InvalidUtf8 { .. } => f.write_str("invalid UTF-8 in string"),
            FrameError::TooDeep { limit } => write!(f, "nesting deeper than {limit}"),
            FrameError::TooLarge { limit } => write!(f, "value larger than {limit} bytes"),
            FrameError::NoResync { limit } => {
                write!(f, "no newline within {limit} bytes after invalid JSON")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl FrameDecoder {
    /// A decoder refusing values longer than `max_value_bytes`.
    pub fn new(max_value_bytes: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            consumed: 0,
            start: 0,
            max_value_bytes,
            parser: Parser::new(),
            mode: Mode::Framing,
            spans: Spans::default(),
        }
    }

    /// Append bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.mode == Mode::Closed {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Next frame, or None when more bytes are needed. Call repeatedly after each push until None.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        match self.scan() {
            Event::Pending => None,
            Event::Value(start, end) => self.buf.get(start..end).map(|bytes| {
                Frame::Value(Json {
                    bytes,
                    spans: &self.spans,
                })
            }),
            Event::Invalid(err) => Some(Frame::Invalid(err)),
            Event::Fatal(err) => Some(Frame::Fatal(err)),
        }
    }

    /// Called when the peer closed: Some(number of bytes) of a partial value that is
    /// being discarded (whitespace-only leftovers are not partial), None otherwise.
    /// Call it after `next_frame` returned None. The decoder is empty afterwards.
    pub fn finish(&mut self) -> Option<usize> {
        let partial = match self.mode {
            Mode::Resync { .. } | Mode::Closed => 0,
            Mode::Framing if self.parser.state == State::Idle => {
                // Only unexamined bytes can be left here; the first non-whitespace one starts a value.
                let rest = self.buf.get(self.pos..).unwrap_or_default();
                rest.iter()
                    .position(|&b| !is_ws(b))
                    .map_or(0, |i| rest.len() - i)
            }
            Mode::Framing => self.buf.len().saturating_sub(self.start),
        };
        let spans = std::mem::take(&mut self.spans);
        *self = FrameDecoder::new(self.max_value_bytes);
        self.spans = spans;
        (partial > 0).then_some(partial)
    }

    /// Bytes of a value started but not complete (0 when idle between values,
    /// and while skipping a broken line).
    pub fn pending_bytes(&self) -> usize {
        match self.mode {
            Mode::Framing if self.parser.state != State::Idle => {
                self.buf.len().saturating_sub(self.start)
            }
            _ => 0,
        }
    }

    /// Drops consumed bytes once they are at least half the buffer, so each byte
    /// is moved at most once on average and a long-lived connection does not grow it.
    fn compact(&mut self) {
        let drop = self.consumed;
        if drop == 0 {
            return;
        }
        if drop >= self.buf.len() {
            self.buf.clear();
        } else if drop >= self.buf.len() - drop {
            self.buf.drain(..drop);
        } else {
            return;
        }
        self.pos -= drop;
        self.start = self.start.saturating_sub(drop);
        self.consumed = 0;
    }

    fn scan(&mut self) -> Event {
        loop {
            match self.mode {
                Mode::Closed => return Event::Pending,
                Mode::Resync { seen } => match self.skip_broken_line(seen) {
                    Some(event) => return event,
                    None => continue,
                },
                Mode::Framing => {}
            }
            let Some(&b) = self.buf.get(self.pos) else {
                return Event::Pending;
            };
            if self.parser.state == State::Idle {
                if is_ws(b) {
                    self.pos += 1;
                    self.consumed = self.pos;
                    continue;
                }
                self.start = self.pos;
                self.spans.clear();
            }
            // The value already holds max_value_bytes: only a byte that ends a
            // top-level number or literal (and is not part of it) may follow.
            // Anything else is TooLarge, even a byte that would be a syntax error.
            if self.pos.saturating_sub(self.start) >= self.max_value_bytes
                && !self.parser.ends_top_level_scalar(b)
            {
                return self.close(FrameError::TooLarge {
                    limit: self.max_value_bytes,
                });
            }
            let step = self.parser.step(b);
            if self.parser.marks != 0 {
                self.spans.note(self.parser.marks, self.pos - self.start);
                self.parser.marks = 0;
            }
            match step {
                Step::Next => {
                    self.pos += 1;
                    if let State::Str { .. } = self.parser.state {
                        self.skip_plain_string_bytes();
                    }
                }
                Step::Again => {}
                Step::Close => {
                    self.pos += 1;
                    self.consumed = self.pos;
                    return Event::Value(self.start, self.pos);
                }
                Step::End => {
                    self.consumed = self.pos;
                    return Event::Value(self.start, self.pos);
                }
                Step::Error(fault) => return self.fail(fault),
            }
        }
    }

    /// Fast path through the bulk of a string; stops at the size limit so the
    /// check in `scan` still sees the byte past it.
    fn skip_plain_string_bytes(&mut self) {
        let end = self
            .buf
            .len()
            .min(self.start.saturating_add(self.max_value_bytes));
        if let Some(rest) = self.buf.get(self.pos..end) {
            self.pos += plain_string_run(rest);
        }
    }

    /// Reports the byte at `pos` as not JSON and resumes after the first newline
    /// at or after the start of the broken value, skipping input until it arrives.
    fn fail(&mut self, fault: Fault) -> Event {
        let at = self.pos;
        let from = self.start.min(at);
        let err = fault.at(at - from);
        self.parser = Parser::new();
        let newline = self
            .buf
            .get(from..=at)
            .and_then(|bytes| bytes.iter().position(|&c| c == b'\n'));
        match newline {
            Some(i) => self.pos = from + i + 1,
            None => {
                self.pos = at + 1;
                self.mode = Mode::Resync {
                    seen: at + 1 - from,
                };
            }
        }
        self.consumed = self.pos;
        Event::Invalid(err)
    }

    /// Discards bytes up to the next newline. `seen` counts bytes since the
    /// start of the broken value. None means framing resumed.
    fn skip_broken_line(&mut self, seen: usize) -> Option<Event> {
        let limit = self.max_value_bytes;
        if seen >= limit {
            return Some(self.close(FrameError::NoResync { limit }));
        }
        let window = (limit - seen).min(self.buf.len().saturating_sub(self.pos));
        let bytes = self
            .buf
            .get(self.pos..self.pos + window)
            .unwrap_or_default();
        if let Some(i) = bytes.iter().position(|&c| c == b'\n') {
            self.pos += i + 1;
            self.consumed = self.pos;
            self.mode = Mode::Framing;
            return None;
        }
        self.pos += window;
        self.consumed = self.pos;
        let seen = seen + window;
        if seen >= limit {
            return Some(self.close(FrameError::NoResync { limit }));
        }
        self.mode = Mode::Resync { seen };
        Some(Event::Pending)
    }

    fn close(&mut self, err: FrameError) -> Event {
        self.mode = Mode::Closed;
        self.buf = Vec::new();
        self.pos = 0;
        self.consumed = 0;
        self.start = 0;
        Event::Fatal(err)
    }
}

/// Checks that `bytes` hold exactly one JSON value, optionally surrounded by
/// whitespace, under the same rules as framing (but without a size limit).
pub fn check_value(bytes: &[u8]) -> Result<(), FrameError> {
    parse(bytes, &mut Spans::default()).map(|_| ())
}

/// [`check_value`], giving the value (whitespace trimmed) with its spans,
/// which are kept in `spans`. It is the framer run over `bytes` and one
/// space (which ends a top-level number or literal as the next byte of a
/// stream would), so it accepts exactly what framing accepts, with the same
/// errors at the same offsets.
pub fn parse<'a>(bytes: &'a [u8], spans: &'a mut Spans) -> Result<Json<'a>, FrameError> {
    let mut decoder = FrameDecoder::new(usize::MAX);
    decoder.buf.reserve_exact(bytes.len() + 1);
    decoder.push(bytes);
    decoder.push(b" ");
    // Where the value starts, for an error found at the added space.
    let first = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let (start, end) = match decoder.scan() {
        Event::Value(start, end) => (start, end),
        Event::Invalid(FrameError::Syntax { offset, .. }) if offset == bytes.len() - first => {
            return Err(FrameError::Syntax {
                reason: "unexpected end of input",
                offset,
            })
        }
        Event::Invalid(err) | Event::Fatal(err) => return Err(err),
        Event::Pending => {
            return Err(match decoder.finish() {
                None => FrameError::Syntax {
                    reason: "no value",
                    offset: 0,
                },
                Some(partial) => FrameError::Syntax {
                    reason: "unexpected end of input",
                    offset: partial.saturating_sub(1),
                },
            })
        }
    };
    if let Some(extra) = bytes
        .get(end..)
        .and_then(|rest| rest.iter().position(|&b| !is_ws(b)))
    {
        return Err(FrameError::Syntax {
            reason: "unexpected bytes after the value",
            offset: end + extra - start,
        });
    }
    std::mem::swap(spans, &mut decoder.spans);
    Ok(Json {
        bytes: bytes.get(start..end).unwrap_or_default(),
        spans,
    })
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Framing,
    /// Skipping a broken value up to the next newline; `seen` bytes since its start.
    Resync {
        seen: usize,
    },
    /// A fatal error was returned; nothing more comes out.
    Closed,
}

enum Event {
    Pending,
    Value(usize, usize),
    Invalid(FrameError),
    Fatal(FrameError),
}

/// Outcome of feeding one byte to the parser.
enum Step {
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
enum Fault {
    Syntax(&'static str),
    Utf8,
    TooDeep,
}

impl Fault {
    fn at(self, offset: usize) -> FrameError {
        match self {
            Fault::Syntax(reason) => FrameError::Syntax { reason, offset },
            Fault::Utf8 => FrameError::InvalidUtf8 { offset },
            Fault::TooDeep => FrameError::TooDeep { limit: MAX_DEPTH },
        }
    }
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
struct Parser {
    state: State,
    depth: usize,
    objects: u128,
    /// What the last byte did ([`mark`] bits); the caller notes and clears them.
    marks: u8,
}

const _: () = assert!(MAX_DEPTH <= u128::BITS as usize);

impl Parser {
    fn new() -> Self {
        Parser {
            state: State::Idle,
            depth: 0,
            objects: 0,
            marks: 0,
        }
    }

    fn step(&mut self, b: u8) -> Step {
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
    fn ends_top_level_scalar(&self, b: u8) -> bool {
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

fn is_ws(b: u8) -> bool {
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
fn plain_string_run(bytes: &[u8]) -> usize {
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
