//! A stand-in for systemd's notification socket: a datagram socket the
//! test binds (a path, or an abstract name) and names in `NOTIFY_SOCKET`
//! for the relay, then reads what the relay says there.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{TempDir, WAIT};

/// The test's stand-in for systemd's notification socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET`'s value for the relay.
    pub name: String,
    _dir: TempDir,
}

impl NotifySocket {
    pub fn at_path() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path: PathBuf = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        NotifySocket {
            socket,
            name: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    pub fn abstract_name() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "ms500-relay-test-notify-{}-{:?}",
            std::process::id(),
            Instant::now()
        );
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).expect("bind an abstract socket");
        NotifySocket {
            socket,
            name: format!("@{name}"),
            _dir: TempDir::new("notify-abstract"),
        }
    }

    /// The next notification, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next notification that is not a watchdog ping; panics after [`WAIT`].
    pub fn expect_next(&self, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m == "WATCHDOG=1" => continue,
                Some(m) => return m,
                None => break,
            }
        }
        panic!("no notification ({what}) within {WAIT:?}");
    }

    /// Every notification that arrives within `window`.
    pub fn collect(&self, window: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Some(m) = self.next(left.max(Duration::from_millis(1))) {
                got.push((Instant::now(), m));
            }
        }
        got
    }
}
