//! The local syslog socket (`LOG_SYSLOG`, for BusyBox syslogd): one
//! datagram per line, the level as its priority. While the socket cannot
//! be reached the sink writes the lines to the fallback, and this says
//! when, in notices for it. Used by whoever holds the sink's writer lock.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use log::Level;

use super::line::format_line;

const SYSLOG_SOCKET: &str = "/dev/log";
/// How often an unreachable syslog socket is tried again.
pub(super) const SYSLOG_RETRY: Duration = Duration::from_secs(10);

/// The syslog socket, or while it cannot be reached, when to try again.
pub(super) struct Syslog {
    socket: Option<UnixDatagram>,
    retry_at: Instant,
}

/// What became of a batch: how many of its lines syslog took (the rest are
/// the fallback's), and notices for the fallback (syslog gone, or back).
pub(super) struct Sent {
    pub lines: usize,
    pub notices: Vec<String>,
}

impl Syslog {
    /// Connects to the socket; why it cannot be reached, when it cannot (it
    /// is tried again every [`SYSLOG_RETRY`]).
    pub(super) fn start() -> (Syslog, Option<io::Error>) {
        let (socket, away) = match Syslog::connect() {
            Ok(socket) => (Some(socket), None),
            Err(e) => (None, Some(e)),
        };
        let syslog = Syslog {
            socket,
            retry_at: Instant::now() + SYSLOG_RETRY,
        };
        (syslog, away)
    }

    fn connect() -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(SYSLOG_SOCKET).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot reach syslog at {SYSLOG_SOCKET}: {e}"),
            )
        })?;
        Ok(socket)
    }

    /// Sends each line to syslog, until one cannot be sent; then the socket
    /// is let go and tried again after [`SYSLOG_RETRY`].
    pub(super) fn send(&mut self, bytes: &[u8], starts: &[usize]) -> Sent {
        let mut notices = Vec::new();
        if self.socket.is_none() && Instant::now() >= self.retry_at {
            self.retry_at = Instant::now() + SYSLOG_RETRY;
            if let Ok(socket) = Syslog::connect() {
                notices.push(format_line(
                    Level::Info,
                    format_args!("syslog reachable again: logging there"),
                ));
                self.socket = Some(socket);
            }
        }
        let lines = match &self.socket {
            None => 0,
            Some(socket) => match send_lines(socket, bytes, starts) {
                Ok(()) => starts.len(),
                Err((sent, e)) => {
                    self.socket = None;
                    self.retry_at = Instant::now() + SYSLOG_RETRY;
                    notices.push(format_line(
                        Level::Warn,
                        format_args!(
                            "cannot send to syslog ({e}): logging here, trying it again every {} s",
                            SYSLOG_RETRY.as_secs()
                        ),
                    ));
                    sent
                }
            },
        };
        Sent { lines, notices }
    }
}

/// One datagram per line, as syslogd expects: `<PRI>ms500-relay[PID]: text`.
/// On failure: how many lines were sent, and why the next was not.
fn send_lines(
    socket: &UnixDatagram,
    bytes: &[u8],
    starts: &[usize],
) -> Result<(), (usize, io::Error)> {
    let ends = starts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(bytes.len()));
    for (sent, (start, end)) in starts.iter().copied().zip(ends).enumerate() {
        let line = &bytes[start..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        // Our own lines start with the timestamp and level; syslog adds its
        // own time, and the level becomes the priority.
        let (severity, text) = syslog_parts(line);
        let mut datagram = format!(
            "<{}>ms500-relay[{}]: ",
            3 * 8 + severity,
            std::process::id()
        )
        .into_bytes();
        datagram.extend_from_slice(text);
        socket.send(&datagram).map_err(|e| (sent, e))?;
    }
    Ok(())
}

/// (syslog severity, message) of one of our lines: the level becomes the
/// severity and is not repeated in the message.
fn syslog_parts(line: &[u8]) -> (u8, &[u8]) {
    let text = line.splitn(2, |&b| b == b' ').nth(1).unwrap_or(line);
    let severity = match text.get(..5) {
        Some(b"ERROR") => 3,
        Some(b"WARN ") => 4,
        Some(b"INFO ") => 6,
        Some(b"DEBUG" | b"TRACE") => 7,
        _ => return (7, text),
    };
    (severity, text.get(6..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_priority_comes_from_the_level() {
        assert_eq!(syslog_parts(b"2026-01-01T00:00:00.000Z WARN  x").0, 4);
        assert_eq!(syslog_parts(b"2026-01-01T00:00:00.000Z ERROR x").0, 3);
        let (sev, text) = syslog_parts(b"2026-01-01T00:00:00.000Z INFO  hello");
        assert_eq!(
            (sev, text),
            (6, &b"hello"[..]),
            "the level is the priority only"
        );
    }
}
