//! One publish-link connection's byte stream to the broker, plain TCP or
//! TLS, shared by two threads: the publish link reads it and writes pings,
//! the publisher writes PUBLISH batches. Whole packets, in order, and neither
//! side waits for the other during a socket call (the TLS session's lock is
//! held only for in-memory work).

use crate::ops::sync::lock;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConnection;

/// How long a write may block before the connection counts as dead (a
/// frozen broker whose receive window is full).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Plaintext handed to rustls at once: well under its 64 KiB buffer limit.
const TLS_PIECE: usize = 16 * 1024;

#[derive(Clone)]
pub struct Wire {
    inner: Arc<Inner>,
}

struct Inner {
    socket: TcpStream,
    tls: Option<Tls>,
    /// Serialises writers, so packets are never interleaved.
    writing: Mutex<()>,
}

struct Tls {
    session: Mutex<ClientConnection>,
}

impl Wire {
    /// A plain TCP connection.
    pub fn plain(socket: TcpStream) -> io::Result<Wire> {
        Wire::new(socket, None)
    }

    /// A TLS connection whose handshake is complete.
    pub fn tls(socket: TcpStream, session: ClientConnection) -> io::Result<Wire> {
        Wire::new(
            socket,
            Some(Tls {
                session: Mutex::new(session),
            }),
        )
    }

    fn new(socket: TcpStream, tls: Option<Tls>) -> io::Result<Wire> {
        socket.set_nodelay(true)?;
        socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Wire {
            inner: Arc::new(Inner {
                socket,
                tls,
                writing: Mutex::new(()),
            }),
        })
    }

    /// Sends `bytes` (whole packets) in full, or fails (a write that blocks
    /// for [`WRITE_TIMEOUT`] fails as `TimedOut`).
    pub fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let _turn = lock(&self.inner.writing);
        let mut socket = &self.inner.socket;
        match &self.inner.tls {
            None => socket.write_all(bytes),
            Some(tls) => {
                // rustls buffers at most 64 KiB of plaintext it has not
                // turned into records: feed it a piece at a time, and send
                // each piece's records before the next (a batch may be MiBs).
                let mut records = Vec::with_capacity(TLS_PIECE.min(bytes.len()) + 256);
                let mut rest = bytes;
                while !rest.is_empty() {
                    records.clear();
                    {
                        let mut session = lock(&tls.session);
                        let taken = session.writer().write(&rest[..rest.len().min(TLS_PIECE)])?;
                        if taken == 0 {
                            return Err(io::Error::new(
                                ErrorKind::WriteZero,
                                "the TLS session takes no more data",
                            ));
                        }
                        rest = &rest[taken..];
                        while session.wants_write() {
                            session.write_tls(&mut records)?;
                        }
                    }
                    socket.write_all(&records)?;
                }
                Ok(())
            }
        }
    }

    /// Reads what the broker sent into `buf`; `Ok(0)` when it closed the
    /// connection. Waits at most the socket's read timeout (then
    /// `WouldBlock`/`TimedOut`). One thread reads.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket = &self.inner.socket;
        let Some(tls) = &self.inner.tls else {
            return socket.read(buf);
        };
        // A peer trickling one record byte by byte must not keep this call
        // from returning: after the read timeout it gives up like a plain read.
        let started = Instant::now();
        let limit = socket.read_timeout().ok().flatten();
        loop {
            {
                let mut session = lock(&tls.session);
                match session.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if limit.is_some_and(|limit| started.elapsed() >= limit) {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "no whole TLS record in time",
                ));
            }
            // Small reads keep the plaintext rustls holds under its 16 KiB limit.
            let mut raw = [0u8; 4096];
            let n = socket.read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut session = lock(&tls.session);
            let mut bytes = &raw[..n];
            while !bytes.is_empty() {
                // Nothing taken: the session is closed (close_notify seen).
                if session.read_tls(&mut bytes)? == 0 {
                    return Ok(0);
                }
                session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            }
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.socket.set_read_timeout(timeout)
    }

    /// Ends the connection for both threads: a blocked read or write returns.
    pub fn shut(&self) {
        let _ = self.inner.socket.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(10);

    /// A plain wire and the broker's end of it, over loopback.
    fn pair() -> (Wire, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let socket =
            TcpStream::connect(listener.local_addr().expect("its address")).expect("a connection");
        let (broker, _) = listener.accept().expect("the wire's connection");
        (Wire::plain(socket).expect("a wire"), broker)
    }

    #[test]
    fn bytes_go_both_ways_and_a_close_reads_as_zero() {
        let (wire, mut broker) = pair();
        wire.write_all(&[0xC0, 0x00]).unwrap();
        let mut got = [0u8; 2];
        broker.read_exact(&mut got).unwrap();
        assert_eq!(got, [0xC0, 0x00]);
        broker.write_all(&[0xD0, 0x00]).unwrap();
        wire.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(wire.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], [0xD0, 0x00]);
        drop(broker);
        assert_eq!(wire.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_read_waits_no_longer_than_its_timeout() {
        let (wire, _broker) = pair();
        wire.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let started = Instant::now();
        let e = wire.read(&mut [0u8; 16]).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
        assert!(started.elapsed() < WAIT);
    }

    #[test]
    fn shut_wakes_a_reader_blocked_in_another_thread() {
        let (wire, _broker) = pair();
        wire.set_read_timeout(None).unwrap();
        let reader = wire.clone();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = done_tx.send(reader.read(&mut [0u8; 16]).map_err(|e| e.kind()));
        });
        std::thread::sleep(Duration::from_millis(50));
        wire.shut();
        let read = done.recv_timeout(WAIT).expect("the blocked read returns");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[test]
    fn two_writers_never_interleave_their_packets() {
        const PACKET: usize = 256 * 1024;
        const EACH: usize = 16;
        let (wire, mut broker) = pair();
        let writers: Vec<_> = [0xAAu8, 0x55]
            .into_iter()
            .map(|byte| {
                let wire = wire.clone();
                std::thread::spawn(move || {
                    let packet = vec![byte; PACKET];
                    for _ in 0..EACH {
                        wire.write_all(&packet).unwrap();
                    }
                })
            })
            .collect();
        // Packets larger than the socket takes at once, read only once both
        // writers are blocked: each write_all is several system calls.
        std::thread::sleep(Duration::from_millis(100));
        let mut all = vec![0u8; 2 * EACH * PACKET];
        broker.set_read_timeout(Some(WAIT)).unwrap();
        broker.read_exact(&mut all).unwrap();
        for writer in writers {
            writer.join().unwrap();
        }
        for (i, packet) in all.chunks(PACKET).enumerate() {
            assert!(
                packet.iter().all(|b| *b == packet[0]),
                "packet {i} is a mix of both writers"
            );
        }
    }
}
