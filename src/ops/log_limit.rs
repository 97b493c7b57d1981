//! Rate limits for log lines caused by remote input (an odd heartbeat, a
//! reply nobody asked for, a refused peer, a rejected command): the first
//! [`PER_MINUTE`] of a kind in a minute are logged, the rest summed up in
//! one line ([`tick`], run by the main thread when [`next_due`] or its
//! [`bell`] says), and remote strings are cut ([`cut`]); broker connection
//! failures are logged once per kind and broker ([`Failures`]). Used by
//! every thread that logs what a peer, device or broker sent.

use crate::ops::sync::{lock, Bell};
use std::borrow::Cow;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines of one kind logged per minute before the rest are only counted.
pub const PER_MINUTE: u32 = 10;
/// Device state changes (online, back online, offline) logged per minute
/// and kind: each camera's change shows at a fleet's normal pace, while a
/// flood of new device ids (or a whole fleet coming back after a power cut)
/// cannot rotate the log history away. Single heartbeats are debug lines.
/// 40 of each kind (about 90 and 110 bytes a line) keep even the minute a
/// 10,000-camera fleet first appears, or flaps online and offline, under
/// 10 KiB of log.
pub const DEVICE_CHANGES_PER_MINUTE: u32 = 40;
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
    ForgottenRoute,
    RefusedReply,
    /// A device seen for the first time, or back online: a fleet's cameras
    /// come and go together (a start, a power cut), so the first few are
    /// worth a line each, the rest one summing line.
    DeviceOnline,
    /// A device gone silent for DEVICE_TIMEOUT.
    DeviceOffline,
    /// A command held for its camera: a fleet's cameras go away together
    /// (a broker restart), and each held command would be a line.
    HeldCommand,
    /// A camera's held commands released.
    ReleasedCommands,
    /// A camera's unconfirmed commands published again.
    ResentCommands,
    /// A camera's address or network changed.
    DeviceChanged,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::RejectedCommand,
        Kind::RefusedPeer,
        Kind::OddHeartbeat,
        Kind::UnroutedReply,
        Kind::ForgottenRoute,
        Kind::RefusedReply,
        Kind::DeviceOnline,
        Kind::DeviceOffline,
        Kind::HeldCommand,
        Kind::ReleasedCommands,
        Kind::ResentCommands,
        Kind::DeviceChanged,
    ];

    fn what(self) -> &'static str {
        match self {
            Kind::RejectedCommand => "rejected-input lines",
            Kind::RefusedPeer => "refused-connection lines",
            Kind::OddHeartbeat => "odd-heartbeat lines",
            Kind::UnroutedReply => "unrouted-reply lines",
            Kind::ForgottenRoute => "forgotten-route lines",
            Kind::RefusedReply => "refused-reply lines",
            Kind::DeviceOnline => "device-online lines",
            Kind::DeviceOffline => "device-offline lines",
            Kind::HeldCommand => "held-command lines",
            Kind::ReleasedCommands => "released-commands lines",
            Kind::ResentCommands => "resent-commands lines",
            Kind::DeviceChanged => "device-changed lines",
        }
    }

    /// The level its summary is logged at (that of its lines).
    fn level(self) -> log::Level {
        match self {
            Kind::UnroutedReply => log::Level::Debug,
            Kind::DeviceOnline
            | Kind::HeldCommand
            | Kind::ReleasedCommands
            | Kind::ResentCommands
            | Kind::DeviceChanged => log::Level::Info,
            _ => log::Level::Warn,
        }
    }

    /// Lines of this kind logged per minute.
    fn budget(self) -> u32 {
        match self {
            Kind::DeviceOnline
            | Kind::DeviceOffline
            | Kind::HeldCommand
            | Kind::ReleasedCommands
            | Kind::ResentCommands
            | Kind::DeviceChanged => DEVICE_CHANGES_PER_MINUTE,
            _ => PER_MINUTE,
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
        let mut windows = lock(&WINDOWS);
        let w = &mut windows[kind.index()];
        let summary = roll(w, now);
        let allowed = if w.logged < kind.budget() {
            w.logged += 1;
            true
        } else {
            w.suppressed += 1;
            if w.suppressed == 1 {
                bell().ring();
            }
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

/// Rung when a window starts counting lines it did not log: the main
/// thread then wakes at [`next_due`] to sum them up.
static BELL: OnceLock<Bell> = OnceLock::new();

/// What the main thread listens to between its deadlines.
pub fn bell() -> &'static Bell {
    BELL.get_or_init(Bell::default)
}

/// When the next window with lines not logged is over; None while none is.
pub fn next_due() -> Option<Instant> {
    let windows = lock(&WINDOWS);
    windows
        .iter()
        .filter(|w| w.suppressed > 0)
        .filter_map(|w| w.start)
        .map(|start| start + WINDOW)
        .min()
}

/// At [`next_due`]: sums up windows that are over, so a flood that stopped
/// is still reported.
pub fn tick() {
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut windows = lock(&WINDOWS);
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
    // No more bytes than `max`: no more characters either.
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!(
            "{}… ({} characters)",
            &text[..at],
            text.chars().count()
        )),
    }
}

/// A broker connection failure's reason as logged: without what rustls adds
/// that changes from one attempt to the next (the verification time and
/// the seconds since a certificate expired, in "certificate expired:
/// verification time 1795950000 (UNIX), but certificate is not valid after
/// …"), so a lasting failure reads the same every time.
pub fn failure_reason(text: &str) -> String {
    let text = match text.find("verification time") {
        Some(at) => text[..at].trim_end_matches([':', ',', ' ']),
        None => text,
    };
    text.trim().to_string()
}

/// The kind of a failure: its normalised reason with every run of digits
/// as `#`. Reasons that differ only in numbers (a port, a counter, a
/// duration, a packet id) are one kind; `os error 111` and `os error 113`
/// come with different texts anyway.
pub fn failure_kind(text: &str) -> String {
    let mut kind = String::with_capacity(text.len());
    let mut in_number = false;
    for c in failure_reason(text).chars() {
        if c.is_ascii_digit() {
            if !in_number {
                kind.push('#');
            }
            in_number = true;
        } else {
            kind.push(c);
            in_number = false;
        }
    }
    kind
}

/// The failures a link logged since it was last connected, per broker: a
/// failure is logged when it is the first of its kind for its broker.
#[derive(Debug, Default)]
pub struct Failures {
    /// (broker, kind of the failure last logged for it).
    logged: Vec<(String, String)>,
}

impl Failures {
    /// Notes a failure of `broker`; true when it is to be logged (the first
    /// of its kind for that broker since the link was last connected).
    pub fn first_of_kind(&mut self, broker: &str, reason: &str) -> bool {
        let kind = failure_kind(reason);
        match self.logged.iter_mut().find(|(b, _)| b == broker) {
            Some((_, last)) if *last == kind => false,
            Some((_, last)) => {
                *last = kind;
                true
            }
            None => {
                self.logged.push((broker.to_string(), kind));
                true
            }
        }
    }

    /// The link is up (its "connected" line was logged): every failure is news again.
    pub fn connected(&mut self) {
        self.logged.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rustls's text for an expired certificate (rustls 0.23, `CertificateError::ExpiredContext`).
    fn expired_at(now: u64) -> String {
        format!(
            "invalid peer certificate: certificate expired: verification time {now} (UNIX), \
             but certificate is not valid after 1795900000 ({} seconds ago)",
            now - 1795900000
        )
    }

    #[test]
    fn failure_reasons_drop_what_changes_between_attempts() {
        assert_eq!(
            failure_reason(&expired_at(1795950000)),
            "invalid peer certificate: certificate expired"
        );
        assert_eq!(
            failure_reason(&format!("TLS: I/O: {}", expired_at(1795950031))),
            "TLS: I/O: invalid peer certificate: certificate expired"
        );
        assert_eq!(
            failure_reason(
                "invalid peer certificate: certificate not valid yet: verification time 1795950000 \
                 (UNIX), but certificate is not valid before 1795990000 (40000 seconds in future)"
            ),
            "invalid peer certificate: certificate not valid yet"
        );
        assert_eq!(
            failure_reason(
                "invalid peer certificate: certificate revocation list expired: verification time \
                 1795950000 (UNIX), but CRL is not valid after 1795900000 (50000 seconds ago)"
            ),
            "invalid peer certificate: certificate revocation list expired"
        );
        // What does not vary is kept as it is.
        for text in [
            "Connection refused (os error 111)",
            "invalid peer certificate: UnknownIssuer",
            "connection refused: bad user name or password",
            "the broker closed the connection before CONNACK",
        ] {
            assert_eq!(failure_reason(text), text);
        }
    }

    #[test]
    fn failures_differing_only_in_numbers_are_one_kind() {
        assert_eq!(
            failure_kind(&expired_at(1795950000)),
            failure_kind(&expired_at(1795950030))
        );
        assert_eq!(
            failure_kind("Connection refused (os error 111)"),
            "Connection refused (os error #)"
        );
        assert_eq!(
            failure_kind("Connection reset by peer, local 127.0.0.1:40312"),
            failure_kind("Connection reset by peer, local 127.0.0.1:51877")
        );
        assert_eq!(
            failure_kind("no PUBACK for 91 s with 37 commands in flight"),
            failure_kind("no PUBACK for 92 s with 1200 commands in flight")
        );
        assert_eq!(
            failure_kind("Mqtt state: Received unsolicited ack pkid: 7"),
            failure_kind("Mqtt state: Received unsolicited ack pkid: 12")
        );
        assert_ne!(
            failure_kind("Connection refused (os error 111)"),
            failure_kind("No route to host (os error 113)")
        );
        assert_ne!(
            failure_kind(&expired_at(1795950000)),
            failure_kind("invalid peer certificate: UnknownIssuer")
        );
    }

    #[test]
    fn a_lasting_failure_is_logged_once_per_kind_and_broker_until_connected() {
        let mut failures = Failures::default();
        let a = "127.0.0.1:8883";
        let b = "10.0.0.2:8883";
        let logged: Vec<bool> = (0..5)
            .map(|i| failures.first_of_kind(a, &expired_at(1795950000 + i * 7)))
            .collect();
        assert_eq!(logged, [true, false, false, false, false]);
        // Another broker failing the same way is news; then it is not.
        assert!(failures.first_of_kind(b, &expired_at(1795950100)));
        assert!(!failures.first_of_kind(b, &expired_at(1795950200)));
        assert!(!failures.first_of_kind(a, &expired_at(1795950300)));
        // A new kind is logged, and so is the old one when it comes back.
        assert!(failures.first_of_kind(a, "Connection refused (os error 111)"));
        assert!(!failures.first_of_kind(a, "Connection refused (os error 111)"));
        assert!(failures.first_of_kind(a, &expired_at(1795950400)));
        // After a connection, everything is news again.
        failures.connected();
        assert!(failures.first_of_kind(a, &expired_at(1795950500)));
        assert!(failures.first_of_kind(b, &expired_at(1795950500)));
    }

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
