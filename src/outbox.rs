//! What goes back to one backend connection (SPEC §2.2): device replies and
//! status lines. Each session owns one writer thread that drains a bounded
//! channel into the socket; everyone else (the publisher for status lines,
//! the MQTT event loop for replies) only ever calls [`Outbox::offer`], which
//! never blocks: a backend that does not read loses lines (logged), it never
//! stalls the MQTT side or other backends.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Lines a backend may have waiting before new ones are dropped.
const CAPACITY: usize = 1024;
/// A single write that blocks longer than this means the backend stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Vec<u8>>,
    pub session: u64,
    pub peer: SocketAddr,
    dropped: Arc<AtomicU64>,
    /// Commands of this session still owed a status line (see [`StatusOwed`]).
    owed: Arc<AtomicUsize>,
}

/// A command's claim on a status line: counted by its session while it
/// lives, so a backend that half-closes still gets its lines.
pub struct StatusOwed {
    pub outbox: Outbox,
}

impl StatusOwed {
    pub fn new(outbox: &Outbox) -> Self {
        outbox.owed.fetch_add(1, Ordering::SeqCst);
        StatusOwed {
            outbox: outbox.clone(),
        }
    }
}

impl Drop for StatusOwed {
    fn drop(&mut self) {
        self.outbox.owed.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Outbox {
    pub fn new(session: u64, peer: SocketAddr) -> (Outbox, Receiver<Vec<u8>>) {
        let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
        let outbox = Outbox {
            tx,
            session,
            peer,
            dropped: Arc::new(AtomicU64::new(0)),
            owed: Arc::new(AtomicUsize::new(0)),
        };
        (outbox, rx)
    }

    /// Commands of this session still waiting for their status line.
    pub fn owed(&self) -> usize {
        self.owed.load(Ordering::SeqCst)
    }

    /// Queues one line (the `\n` is added here). Returns false when it was dropped.
    pub fn offer(&self, what: &str, mut line: Vec<u8>) -> bool {
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                // One warn line per 1000 drops: a flood must not fill the log.
                if n.is_multiple_of(1000) {
                    log::warn!(
                        "backend {} is not reading: dropped {what} ({} dropped so far)",
                        self.peer,
                        n + 1
                    );
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                log::debug!(
                    "backend {} closed before a {what} could be written",
                    self.peer
                );
                false
            }
        }
    }
}

/// The writer thread of one session: writes queued lines until `done` is
/// triggered and nothing is left, or the socket fails.
pub fn write_loop(mut stream: TcpStream, lines: Receiver<Vec<u8>>, done: Receiver<()>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
        log::debug!("backend {peer}: cannot set write timeout: {e}");
    }
    let mut batch = Vec::with_capacity(4096);
    loop {
        let first = crossbeam_channel::select! {
            recv(lines) -> line => match line {
                Ok(line) => line,
                Err(_) => return,
            },
            recv(done) -> _ => match lines.try_recv() {
                Ok(line) => line,
                Err(_) => return,
            },
        };
        // Batch whatever else is waiting into one write.
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match lines.try_recv() {
                Ok(line) => batch.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        if let Err(e) = stream.write_all(&batch) {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                log::warn!(
                    "backend {peer} did not read for {} s: closing the connection",
                    started.elapsed().as_secs()
                );
                let _ = stream.shutdown(Shutdown::Both);
            } else {
                log::debug!("backend {peer}: write failed: {e}");
            }
            return;
        }
    }
}

/// One status line of SPEC §2.2. `id` is the command's own `id` as JSON text.
pub fn status_line(
    kind: Option<&str>,
    unit: Option<&str>,
    id: Option<&str>,
    error: Option<&str>,
) -> Vec<u8> {
    let mut line = Vec::with_capacity(96);
    line.extend_from_slice(if error.is_some() {
        b"{\"status\":\"error\",\"type\":"
    } else {
        b"{\"status\":\"ok\",\"type\":"
    });
    push_json_string(&mut line, kind);
    line.extend_from_slice(b",\"unit\":");
    push_json_string(&mut line, unit);
    if let Some(id) = id {
        line.extend_from_slice(b",\"id\":");
        line.extend_from_slice(id.as_bytes());
    }
    if let Some(error) = error {
        line.extend_from_slice(b",\"error\":");
        push_json_string(&mut line, Some(error));
    }
    line.push(b'}');
    line
}

fn push_json_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        None => out.extend_from_slice(b"null"),
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub fn next_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> serde_json::Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn ok_line_without_id_has_no_id_key() {
        let line = status_line(Some("IMG"), Some("u1"), None, None);
        assert_eq!(line, br#"{"status":"ok","type":"IMG","unit":"u1"}"#);
    }

    #[test]
    fn error_line_echoes_id_and_escapes_the_reason() {
        let line = status_line(
            Some("AIM"),
            Some("u1"),
            Some("\"a-7\""),
            Some("missing field \"md5\""),
        );
        let v = parse(&line);
        assert_eq!(v["status"], "error");
        assert_eq!(v["id"], "a-7");
        assert_eq!(v["error"], "missing field \"md5\"");
    }

    #[test]
    fn unknown_type_and_unit_are_null() {
        let v = parse(&status_line(None, None, Some("12"), Some("x")));
        assert!(v["type"].is_null());
        assert!(v["unit"].is_null());
        assert_eq!(v["id"], 12);
    }

    #[test]
    fn offer_drops_when_full_and_never_blocks() {
        let (outbox, rx) = Outbox::new(1, "127.0.0.1:1".parse().unwrap());
        for _ in 0..CAPACITY {
            assert!(outbox.offer("reply", b"x".to_vec()));
        }
        assert!(!outbox.offer("reply", b"x".to_vec()));
        assert_eq!(rx.try_recv().unwrap(), b"x\n");
        drop(rx);
        assert!(!outbox.offer("reply", b"y".to_vec()));
    }
}
