//! The framer: splits one backend connection's byte stream into JSON
//! values, reporting bytes that are not JSON as soon as they arrive and
//! resynchronising at the next newline. Each session thread owns one
//! [`FrameDecoder`] per connection (with its receive buffer); [`parse`]
//! runs the same framer over one complete slice (a spooled command), so
//! validation accepts exactly what framing accepts. The syntax itself is
//! the scanner's (`json.rs`). No I/O, no threads, no shared state.

use std::fmt;

use crate::protocol::json::{is_ws, plain_string_run, Fault, Json, Parser, Spans, Step, MAX_DEPTH};

#[cfg(test)]
mod tests;

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
            Event::Value(start, end) => self
                .buf
                .get(start..end)
                .map(|bytes| Frame::Value(Json::new(bytes, &self.spans))),
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
            Mode::Framing if self.parser.is_idle() => {
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
            Mode::Framing if !self.parser.is_idle() => self.buf.len().saturating_sub(self.start),
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
            if self.parser.is_idle() {
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
            let marks = self.parser.take_marks();
            if marks != 0 {
                self.spans.note(marks, self.pos - self.start);
            }
            match step {
                Step::Next => {
                    self.pos += 1;
                    if self.parser.in_string() {
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
        let err = error_at(fault, at - from);
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
    Ok(Json::new(bytes.get(start..end).unwrap_or_default(), spans))
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

/// The scanner's fault at `offset` bytes into the broken value.
fn error_at(fault: Fault, offset: usize) -> FrameError {
    match fault {
        Fault::Syntax(reason) => FrameError::Syntax { reason, offset },
        Fault::Utf8 => FrameError::InvalidUtf8 { offset },
        Fault::TooDeep => FrameError::TooDeep { limit: MAX_DEPTH },
    }
}
