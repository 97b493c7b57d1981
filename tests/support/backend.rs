//! A backend's connection to the relay (TCP or the Unix socket): the lines
//! it reads back, and whether the relay closed it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use super::TempDir;
use std::time::{Duration, Instant};

/// A backend's connection to the relay: TCP or the Unix socket.
pub trait Session {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Session for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl Session for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

/// Reads lines from a backend socket until `n` lines or `timeout`.
pub fn read_lines<S: Session>(stream: &S, n: usize, timeout: Duration) -> Vec<String>
where
    for<'a> &'a S: Read,
{
    let mut reader = BufReader::new(stream);
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.ends_with('\n') {
                    lines.push(line.trim_end_matches('\n').to_string());
                    line.clear();
                }
            }
            Err(_) => break,
        }
    }
    lines
}

/// True when the relay closed the connection (read returns 0) within `timeout`.
pub fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Whether the relay closes `stream` (end of stream or a reset) within
/// `limit`; a read interrupted by a signal (the tests' children come and
/// go) is retried.
pub fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                return true;
            }
        }
    }
}

/// A line the relay wrote (a status line), as JSON; panics on anything else.
pub fn json_line(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

/// Writes `cmd` and a newline on a backend connection.
pub fn send(stream: &mut TcpStream, cmd: &str) {
    stream.write_all(cmd.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
}

/// Where a test puts the relay's Unix socket (`SOCKET_PATH`) in `dir`.
pub fn socket_in(dir: &TempDir) -> PathBuf {
    dir.path().join("relay.sock")
}
