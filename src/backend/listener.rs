//! The backend listener thread: accepts TCP connections on
//! `SOCKET_HOST:SOCKET_PORT`, refuses peers outside `SOCKET_ALLOW` and past
//! `MAX_CONNECTIONS`, and spawns one session thread per connection. On stop
//! it wakes its own blocking `accept()` by connecting to itself, accepts the
//! connections still waiting in the kernel's backlog (their bytes reached
//! the relay too), and joins every session, each of which reads what its
//! peer already sent before it ends.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::session::{self, Shared, Slot};
use crate::config::allowed;
use crate::error::Error;
use crate::ops::log_limit::{self, Kind};

pub fn bind(host: &str, port: u16) -> Result<TcpListener, Error> {
    let addr = format!("{}:{port}", bracket_v6(host));
    TcpListener::bind(addr.as_str()).map_err(|source| Error::Listen { addr, source })
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The listener's own state, touched by its thread only.
struct Listener {
    shared: Arc<Shared>,
    /// Sessions not yet joined, by connection id.
    sessions: HashMap<u64, JoinHandle<()>>,
    /// Ids of sessions that have ended.
    ended_tx: Sender<u64>,
    ended_rx: Receiver<u64>,
    next_id: u64,
    /// Sessions still reading their peer: what MAX_CONNECTIONS limits. A
    /// session frees its place the moment it stops reading (see session::Slot).
    active: Arc<AtomicUsize>,
}

pub fn run(listener: TcpListener, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
    let mut state = Listener {
        shared,
        sessions: HashMap::new(),
        ended_tx,
        ended_rx,
        next_id: 0,
        active: Arc::new(AtomicUsize::new(0)),
    };

    // Wakes accept() once the intake stops; the listener knows its
    // connection by its address and does not take it for a backend.
    let waker_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let waker = {
        let stop = state.shared.intake.clone();
        let waker_addr = Arc::clone(&waker_addr);
        std::thread::Builder::new()
            .name("listener-waker".into())
            .spawn(move || {
                while !stop.sleep(Duration::from_secs(3600)) {}
                if let Some(addr) = local {
                    // Hold the lock across connect: the listener reads the
                    // address only after accept(), so it sees it set.
                    let mut own = waker_addr.lock().unwrap_or_else(|e| e.into_inner());
                    if let Ok(s) =
                        TcpStream::connect_timeout(&wake_addr(addr), Duration::from_secs(1))
                    {
                        *own = s.local_addr().ok();
                    }
                }
            })
    };
    let is_waker =
        |peer: &SocketAddr| *waker_addr.lock().unwrap_or_else(|e| e.into_inner()) == Some(*peer);

    for incoming in listener.incoming() {
        state.reap();
        match incoming {
            Ok(stream) => {
                if let Ok(peer) = stream.peer_addr() {
                    if !is_waker(&peer) {
                        state.admit(stream, peer, true);
                    }
                }
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                // EMFILE and friends: do not spin.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if state.shared.intake.is_set() {
            break;
        }
    }

    // Stopping: connections already in the backlog were accepted by the
    // kernel, and their peers' bytes may be waiting: serve them as well.
    if listener.set_nonblocking(true).is_ok() {
        loop {
            match listener.accept() {
                Ok((stream, peer)) if !is_waker(&peer) => {
                    let _ = stream.set_nonblocking(false);
                    state.admit(stream, peer, false);
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    drop(listener);
    for (_, session) in state.sessions.drain() {
        let _ = session.join();
    }
    if let Ok(w) = waker {
        let _ = w.join();
    }
    log::debug!("listener stopped");
}

impl Listener {
    /// Joins finished sessions so their threads are gone.
    fn reap(&mut self) {
        while let Ok(id) = self.ended_rx.try_recv() {
            if let Some(session) = self.sessions.remove(&id) {
                let _ = session.join();
            }
        }
    }

    /// Starts a session for `stream`, unless the peer is not allowed or
    /// (when `limited`) the relay is at MAX_CONNECTIONS.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, limited: bool) {
        let config = &self.shared.config;
        if !allowed(&config.socket_allow, peer.ip()) {
            refused(peer, "not in SOCKET_ALLOW");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if limited && self.active.load(Ordering::SeqCst) >= config.max_connections {
            refused(peer, "MAX_CONNECTIONS reached");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        log::info!("backend {peer} connected");
        self.active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(Arc::clone(&self.active));
        let shared = Arc::clone(&self.shared);
        let ended = self.ended_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("backend-{id}"))
            .spawn(move || {
                session::run(stream, peer, id, shared, slot);
                let _ = ended.send(id);
            });
        match spawned {
            Ok(thread) => {
                // Reaped only by this thread, after this insert.
                self.sessions.insert(id, thread);
            }
            Err(e) => log::error!("cannot start a thread for backend {peer}: {e}"),
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

/// A refused peer is logged, within the remote-input budget: a connection
/// flood must not fill the disk.
fn refused(peer: SocketAddr, why: &str) {
    if log_limit::allow(Kind::RefusedPeer) {
        log::warn!("refused backend {peer}: {why}");
    }
}
