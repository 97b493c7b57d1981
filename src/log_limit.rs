//! Log lines caused by remote input (an odd heartbeat, a reply nobody asked
//! for, a refused peer, a rejected command) are rate-limited per kind: the
//! first [`PER_MINUTE`] of a kind in a minute are logged, the rest counted
//! and summed up in one line when the minute is over. A peer or a device can
//! therefore never fill a gateway's flash through the log. Used by every
//! thread that logs remote input; the main thread calls [`tick`] once a
//! second to write the summaries.
//!
//! Strings from remote input are cut before they are logged ([`cut`]).

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind logged per minute before the rest are only counted.
pub const PER_MINUTE: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Longest remote string shown in a log line, in characters.
pub const MAX_SHOWN: usize = 200;

/// The kinds of remote input that can flood the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RejectedCommand,
    RefusedPeer,
    OddHeartbeat,
    UnroutedReply,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::RejectedCommand,
        Kind::RefusedPeer,
        Kind::OddHeartbeat,
        Kind::UnroutedReply,
    ];

    fn what(self) -> &'static str {
        match self {
            Kind::RejectedCommand => "rejected-input lines",
            Kind::RefusedPeer => "refused-connection lines",
            Kind::OddHeartbeat => "odd-heartbeat lines",
            Kind::UnroutedReply => "unrouted-reply lines",
        }
    }

    /// The level its summary is logged at (that of its lines).
    fn level(self) -> log::Level {
        match self {
            Kind::UnroutedReply => log::Level::Debug,
            _ => log::Level::Warn,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

static WINDOWS: Mutex<[Window; Kind::ALL.len()]> = Mutex::new(
    [Window {
        start: None,
        logged: 0,
        suppressed: 0,
    }; Kind::ALL.len()],
);

/// Whether a line of `kind` may be logged now; when not, it is counted.
pub fn allow(kind: Kind) -> bool {
    allow_at(kind, Instant::now())
}

fn allow_at(kind: Kind, now: Instant) -> bool {
    let summary = {
        let mut windows = WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut windows[kind.index()];
        let summary = roll(w, now);
        let allowed = if w.logged < PER_MINUTE {
            w.logged += 1;
            true
        } else {
            w.suppressed += 1;
            false
        };
        (summary, allowed)
    };
    if let Some(n) = summary.0 {
        say(kind, n);
    }
    summary.1
}

/// Starts a new window when the current one is over; the number of lines
/// it suppressed, to be summed up.
fn roll(w: &mut Window, now: Instant) -> Option<u64> {
    let over = w.start.is_none_or(|s| now.duration_since(s) >= WINDOW);
    if !over {
        return None;
    }
    let suppressed = w.suppressed;
    *w = Window {
        start: Some(now),
        logged: 0,
        suppressed: 0,
    };
    (suppressed > 0).then_some(suppressed)
}

fn say(kind: Kind, n: u64) {
    log::log!(
        kind.level(),
        "{n} more {} in the last minute were not logged one by one",
        kind.what()
    );
}

/// Once a second: sums up windows that are over, so a flood that stopped is
/// still reported.
pub fn tick() {
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut windows = WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
        for kind in Kind::ALL {
            let w = &mut windows[kind.index()];
            if w.suppressed > 0 && w.start.is_some_and(|s| now.duration_since(s) >= WINDOW) {
                due.push((kind, w.suppressed));
                *w = Window {
                    start: None,
                    logged: 0,
                    suppressed: 0,
                };
            }
        }
    }
    for (kind, n) in due {
        say(kind, n);
    }
}

/// `text` as it may appear in a log line: at most [`MAX_SHOWN`] characters,
/// with the original length when cut.
pub fn cut(text: &str) -> Cow<'_, str> {
    cut_to(text, MAX_SHOWN)
}

/// `text` cut to `max` characters, saying how long it was.
pub fn cut_to(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!(
            "{}… ({} characters)",
            &text[..at],
            text.chars().count()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_minute_then_counted_then_a_new_window() {
        let t0 = Instant::now();
        let kind = Kind::OddHeartbeat;
        let allowed = (0..25).filter(|_| allow_at(kind, t0)).count();
        assert_eq!(allowed, PER_MINUTE as usize);
        {
            let windows = WINDOWS.lock().unwrap();
            assert_eq!(windows[kind.index()].suppressed, 15);
        }
        assert!(allow_at(kind, t0 + WINDOW), "a new minute logs again");
        let windows = WINDOWS.lock().unwrap();
        assert_eq!(windows[kind.index()].suppressed, 0);
        assert_eq!(windows[kind.index()].logged, 1);
    }

    #[test]
    fn long_strings_are_cut_with_their_length() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MAX_SHOWN + 50);
        let shown = cut(&long);
        assert!(shown.starts_with(&"é".repeat(MAX_SHOWN)));
        assert!(
            shown.ends_with(&format!("… ({} characters)", MAX_SHOWN + 50)),
            "{shown}"
        );
        assert_eq!(cut_to("abcdef", 3), "abc… (6 characters)");
        assert_eq!(cut_to("abc", 3), "abc");
    }
}
