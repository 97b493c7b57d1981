//! The listener's wake-up at stop: a thread that waits for the intake to
//! stop, then connects to the listener so that its blocking `accept()`
//! returns; the listener knows that connection and does not take it for a
//! backend. Started and joined by each listener thread.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::sockets::Listening;
use crate::ops::shutdown::Stop;
use crate::ops::sync::lock;
use crate::ops::transport::Peer;

/// Wakes the listener's blocking accept() once the intake stops, by
/// connecting to it; the listener knows that connection by its address
/// (on the Unix socket: made by this process once the waker woke) and
/// does not take it for a backend.
pub struct Waker {
    own: Arc<Mutex<Option<SocketAddr>>>,
    woke: Arc<AtomicBool>,
    thread: std::io::Result<JoinHandle<()>>,
}

impl Waker {
    pub fn start(stop: Stop, listener: &Listening) -> Waker {
        let (local, path) = match listener {
            Listening::Tcp(l) => (l.local_addr().ok(), None),
            Listening::Unix(u) => (None, Some(u.path.clone())),
        };
        let own: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let woke: Arc<AtomicBool> = Arc::default();
        let thread = {
            let (own, woke) = (Arc::clone(&own), Arc::clone(&woke));
            std::thread::Builder::new()
                .name("listener-waker".into())
                .spawn(move || {
                    while !stop.sleep(Duration::from_secs(3600)) {}
                    woke.store(true, Ordering::SeqCst);
                    if let Some(addr) = local {
                        // Hold the lock across connect: the listener reads the
                        // address only after accept(), so it sees it set.
                        let mut own = lock(&own);
                        if let Ok(s) =
                            TcpStream::connect_timeout(&wake_addr(addr), Duration::from_secs(1))
                        {
                            *own = s.local_addr().ok();
                        }
                    }
                    if let Some(path) = path {
                        let _ = std::os::unix::net::UnixStream::connect(path);
                    }
                })
        };
        Waker { own, woke, thread }
    }

    /// Whether `peer` is the waker's own connection (on the Unix socket:
    /// one this process made after the waker woke; no backend runs inside
    /// the relay, only unit tests connect from it, and before the stop).
    pub fn is(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Tcp(addr) => *lock(&self.own) == Some(*addr),
            Peer::Unix { pid, .. } => {
                *pid == std::process::id() && self.woke.load(Ordering::SeqCst)
            }
        }
    }

    pub fn join(self) {
        if let Ok(thread) = self.thread {
            let _ = thread.join();
        }
    }
}

/// The address to connect to in order to wake our own accept().
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waker_connects_to_loopback_when_bound_to_every_address() {
        let v4: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(wake_addr(v4), "127.0.0.1:7000".parse().unwrap());
        let v6: SocketAddr = "[::]:7000".parse().unwrap();
        assert_eq!(wake_addr(v6), "[::1]:7000".parse().unwrap());
        let one: SocketAddr = "10.1.2.3:7000".parse().unwrap();
        assert_eq!(wake_addr(one), one);
    }
}
