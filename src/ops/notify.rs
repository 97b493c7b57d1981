//! systemd's service notifications (`sd_notify`, PROTOCOL.md §4): one
//! datagram each to `$NOTIFY_SOCKET`, sent without blocking, and the
//! schedule of `WATCHDOG=1`. Sent by the main thread of the relay (and by
//! `reload`); without `$NOTIFY_SOCKET` every call does nothing. Owns the
//! datagram socket it sends from.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::ops::sys;

/// Where systemd listens, as `$NOTIFY_SOCKET` says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket file (an absolute path).
    Path(std::path::PathBuf),
    /// A name in Linux's abstract socket namespace (`@name`).
    Abstract(Vec<u8>),
}

/// The relay's side of systemd's notification socket.
pub struct Notifier {
    /// The socket sent from, where to, and `$NOTIFY_SOCKET` as written (for the log).
    socket: Option<(UnixDatagram, SocketAddr, String)>,
    /// Half of `WATCHDOG_USEC`, when systemd watches this process.
    ping_every: Option<Duration>,
    /// When the next `WATCHDOG=1` is due.
    next_ping: Option<Instant>,
    /// A send failed: said once, until one succeeds again.
    failing: bool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`
    /// describe for this process; a value it cannot use is logged (warn)
    /// and ignored: the relay runs all the same.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|value| open(&value));
        let ping_every = socket.as_ref().and(ping_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        ));
        if let Some((_, _, name)) = &socket {
            match ping_every {
                Some(every) => log::debug!(
                    "systemd notifications to {name}; watchdog pings every {} ms",
                    every.as_millis()
                ),
                None => log::debug!("systemd notifications to {name}"),
            }
        }
        Notifier {
            socket,
            ping_every,
            next_ping: ping_every.map(|_| Instant::now()),
            failing: false,
        }
    }

    /// A notifier for a process systemd runs beside the service's main one
    /// (`ExecReload=`): only when `$MAINPID` is `pid`, the relay this
    /// process is about to signal.
    pub fn for_main_process(pid: u32) -> Option<Notifier> {
        let main = std::env::var("MAINPID").ok()?.trim().parse::<u32>().ok()?;
        if main != pid {
            return None;
        }
        let socket = open(&std::env::var_os("NOTIFY_SOCKET")?)?;
        Some(Notifier {
            socket: Some(socket),
            ping_every: None,
            next_ping: None,
            failing: false,
        })
    }

    /// The relay listens (or a reload is over): it is ready to serve. What
    /// it logged before is written out first, so that the lines are in the
    /// journal by the time `systemctl start` or `reload` returns.
    pub fn ready(&mut self, status: &str) {
        if self.socket.is_some() {
            log::logger().flush();
        }
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A reload begins (a `READY=1` follows when it is over).
    pub fn reloading(&mut self) {
        self.send(&reloading_message(sys::monotonic_usec()));
    }

    /// The relay begins to stop.
    pub fn stopping(&mut self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// When the next watchdog ping is due; `None` when systemd does not watch.
    pub fn next_ping(&self) -> Option<Instant> {
        self.next_ping
    }

    /// At a deadline of the main thread: sends `WATCHDOG=1` when one is due
    /// and `alive` (the publisher keeps its turns). A relay found stuck is
    /// not pinged, so systemd restarts it once `WatchdogSec=` has passed.
    /// Returns whether a ping was due.
    pub fn ping_when_due(&mut self, now: Instant, alive: bool) -> bool {
        let (Some(due), Some(every)) = (self.next_ping, self.ping_every) else {
            return false;
        };
        // A wake-up a little early must not slip a whole interval.
        if now + Duration::from_millis(20) < due {
            return false;
        }
        self.next_ping = Some(now + every);
        if alive {
            self.send("WATCHDOG=1");
        }
        true
    }

    fn send(&mut self, message: &str) {
        let Some((socket, address, name)) = &self.socket else {
            return;
        };
        match socket.send_to_addr(message.as_bytes(), address) {
            Ok(_) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    log::warn!("cannot notify systemd at {name}: {e}");
                }
                self.failing = true;
            }
        }
    }
}

/// The socket to send from and the address of `$NOTIFY_SOCKET`'s value,
/// or `None` (logged) when it is unusable.
fn open(value: &OsStr) -> Option<(UnixDatagram, SocketAddr, String)> {
    let name = value.to_string_lossy().into_owned();
    let address = match target(value) {
        Some(Target::Path(path)) => SocketAddr::from_pathname(path),
        Some(Target::Abstract(bytes)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(bytes)
        }
        None => {
            log::warn!(
                "NOTIFY_SOCKET {name:?} is neither an absolute path nor an abstract name (@…): not notifying systemd"
            );
            return None;
        }
    };
    let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
    match (socket, address) {
        (Ok(socket), Ok(address)) => Some((socket, address, name)),
        (Err(e), _) | (_, Err(e)) => {
            log::warn!("cannot notify systemd at {name}: {e}");
            None
        }
    }
}

/// What `$NOTIFY_SOCKET` names: an absolute path, or `@` and an abstract name.
fn target(value: &OsStr) -> Option<Target> {
    match value.as_bytes() {
        [b'/', ..] => Some(Target::Path(value.into())),
        [b'@', name @ ..] if !name.is_empty() => Some(Target::Abstract(name.to_vec())),
        _ => None,
    }
}

/// Half of `WATCHDOG_USEC` when systemd watches this process: the variable
/// is a positive number and `WATCHDOG_PID`, when set, is `own_pid` (it was
/// meant for another process otherwise, which passed its environment on).
fn ping_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec = usec?.trim().parse::<u64>().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// `RELOADING=1` with the time the reload began on `CLOCK_MONOTONIC`, which
/// systemd 253 and later want with it.
fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

/// A `STATUS=` value: one line (a newline would start another field).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_an_absolute_path_or_an_abstract_name() {
        assert_eq!(target(OsStr::new("")), None);
        assert_eq!(target(OsStr::new("@")), None);
        assert_eq!(target(OsStr::new("run/notify")), None);
        assert_eq!(target(OsStr::new("vsock:2:1234")), None);
        assert_eq!(
            target(OsStr::new("/run/systemd/notify")),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            target(OsStr::new("@/org/freedesktop/systemd1/notify/42")),
            Some(Target::Abstract(
                b"/org/freedesktop/systemd1/notify/42".to_vec()
            ))
        );
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout_and_only_for_this_process() {
        assert_eq!(ping_interval(None, None, 7), None);
        assert_eq!(ping_interval(Some("0"), None, 7), None);
        assert_eq!(ping_interval(Some("soon"), None, 7), None);
        assert_eq!(ping_interval(Some("-5"), None, 7), None);
        assert_eq!(
            ping_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            ping_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(ping_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(ping_interval(Some("30000000"), Some("x"), 7), None);
        assert_eq!(
            ping_interval(Some("1"), None, 7),
            Some(Duration::from_millis(1)),
            "never a busy loop"
        );
    }

    #[test]
    fn a_reload_carries_its_monotonic_start() {
        assert_eq!(
            reloading_message(12_345_678),
            "RELOADING=1\nMONOTONIC_USEC=12345678"
        );
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    fn watched(every: Duration, first: Instant) -> Notifier {
        Notifier {
            socket: None,
            ping_every: Some(every),
            next_ping: Some(first),
            failing: false,
        }
    }

    #[test]
    fn pings_fall_due_every_interval_and_a_stuck_relay_is_not_pinged_but_rescheduled() {
        let t0 = Instant::now();
        let every = Duration::from_secs(15);
        let mut n = watched(every, t0);
        assert!(n.ping_when_due(t0, true), "the first ping at once");
        assert_eq!(n.next_ping(), Some(t0 + every));
        assert!(!n.ping_when_due(t0 + Duration::from_secs(14), true));
        assert!(
            n.ping_when_due(t0 + every - Duration::from_millis(10), false),
            "a wake-up a little early counts"
        );
        assert_eq!(
            n.next_ping(),
            Some(t0 + every - Duration::from_millis(10) + every)
        );
        let unwatched = Notifier {
            socket: None,
            ping_every: None,
            next_ping: None,
            failing: false,
        };
        assert_eq!(unwatched.next_ping(), None);
    }
}
