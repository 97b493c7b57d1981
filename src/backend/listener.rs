//! The backend listener threads, one per socket (TCP, the Unix socket):
//! each accepts peers, lets in those `admission.rs` admits and starts a
//! session thread for each. Both share the `MAX_CONNECTIONS` places; at the
//! cap peers wait in the kernel's backlog ([`BACKLOG`]) until a session's
//! [`Slot`] frees one, and are refused with an error line after
//! [`CONNECTION_WAIT`]. On stop (woken by `waker.rs`) each serves what is
//! in its backlog and joins its sessions. Run by the relay's start.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::admission::{Admission, Refusal};
use crate::backend::session::{self, Shared, Slot};
use crate::backend::sockets::{Listening, BACKLOG};
use crate::backend::waker::Waker;
use crate::ops::counters::{Counter, Counters};
use crate::ops::log_limit::{self, Kind};
use crate::ops::sync::lock;
use crate::ops::transport::{Peer, Stream};
use crate::protocol::status;

/// How long peers may wait in the backlog with no place freeing before they
/// are refused with an error line.
pub const CONNECTION_WAIT: Duration = Duration::from_secs(10);
/// How often a listener at the cap looks for peers in the backlog while
/// none wait yet, when it cannot sleep on the socket (no stop pipe).
const FULL_TICK: Duration = Duration::from_secs(1);

/// The listener's own state, touched by its thread only.
struct Listener {
    shared: Arc<Shared>,
    /// Sessions not yet joined, by connection id.
    sessions: HashMap<u64, JoinHandle<()>>,
    /// Ids of sessions that have ended.
    ended_tx: Sender<u64>,
    ended_rx: Receiver<u64>,
    /// Shared by every listener: a connection's id is unique in the process.
    ids: Arc<Counter>,
    /// Sessions still reading their peer: what MAX_CONNECTIONS limits. A
    /// session frees its place the moment it stops reading (see session::Slot).
    active: Arc<AtomicUsize>,
    /// Shared with the other listener: one admits at a time.
    turn: Arc<Mutex<()>>,
    /// Who is let in: `SOCKET_ALLOW`, `SOCKET_ALLOW_USERS`.
    admission: Admission,
    /// Told of a freed place (by a Slot's drop) while a listener waits at
    /// the cap: this one's and the other listener's.
    freed_tx: Vec<Sender<()>>,
    freed_rx: Receiver<()>,
    /// A peer was seen waiting at the cap: the next one accepted has waited.
    peer_waited: bool,
}

/// Serves every socket in `sockets` (TCP and, or, the Unix socket), each
/// on its own thread (this one for the first), until the intake stops.
pub fn run(sockets: Vec<Listening>, shared: Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    // One count for every listener: a connection's id (what its reply
    // routes are released by) is unique across TCP and the Unix socket.
    let ids = Arc::new(Counter::new(0));
    let turn = Arc::new(Mutex::new(()));
    let (freed_tx, freed_rx): (Vec<_>, Vec<_>) = sockets
        .iter()
        .map(|_| crossbeam_channel::bounded::<()>(1))
        .unzip();
    let mut serving = sockets.into_iter().zip(freed_rx).map(|(socket, freed_rx)| {
        let places = Places {
            active: Arc::clone(&active),
            ids: Arc::clone(&ids),
            turn: Arc::clone(&turn),
            freed_tx: freed_tx.clone(),
            freed_rx,
        };
        (socket, places)
    });
    let first = serving.next();
    let others: Vec<JoinHandle<()>> = serving
        .filter_map(|(socket, places)| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("listener-unix".into())
                .spawn(move || serve(socket, shared, places))
                .map_err(|e| log::error!("cannot start the Unix socket's listener thread: {e}"))
                .ok()
        })
        .collect();
    if let Some((socket, places)) = first {
        serve(socket, shared, places);
    }
    for other in others {
        let _ = other.join();
    }
}

/// The `MAX_CONNECTIONS` places every listener shares, and this listener's
/// wake-up when one frees.
struct Places {
    active: Arc<AtomicUsize>,
    /// The last connection id given, by any listener.
    ids: Arc<Counter>,
    /// Held from the look at the places to the admission.
    turn: Arc<Mutex<()>>,
    freed_tx: Vec<Sender<()>>,
    freed_rx: Receiver<()>,
}

fn serve(listener: Listening, shared: Arc<Shared>, places: Places) {
    let waker = Waker::start(shared.intake.clone(), &listener);
    let mut state = Listener::new(shared, places);
    state.accept_until_stopped(&listener, &waker);
    // Stopping: connections already in the backlog were accepted by the
    // kernel, and their peers' bytes may be waiting: serve them as well.
    state.accept_backlog(&listener, &waker);
    drop(listener);
    state.join_sessions();
    waker.join();
    log::debug!("listener stopped");
}

impl Listener {
    fn new(shared: Arc<Shared>, places: Places) -> Listener {
        let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
        let Places {
            active,
            ids,
            turn,
            freed_tx,
            freed_rx,
        } = places;
        Listener {
            sessions: HashMap::new(),
            ended_tx,
            ended_rx,
            ids,
            active,
            turn,
            admission: Admission::new(&shared.config.get()),
            shared,
            freed_tx,
            freed_rx,
            peer_waited: false,
        }
    }

    /// Accepts backends until the intake stops (the waker's connection
    /// wakes the last accept).
    fn accept_until_stopped(&mut self, listener: &Listening, waker: &Waker) {
        while !self.shared.intake.is_set() {
            self.reap();
            if self.full() {
                self.wait_for_place(listener, waker);
                continue;
            }
            // A peer first, then the place again, in turn with the other
            // listener (TCP and Unix share the places): it may have taken
            // the last one meanwhile.
            if !peer_arrived(listener) {
                continue;
            }
            let turn = Arc::clone(&self.turn);
            let _turn = lock(&turn);
            if self.full() {
                continue;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    if !waker.is(&peer) {
                        self.admit(stream, peer, true);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    // EMFILE and friends: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn full(&self) -> bool {
        self.active.load(Ordering::SeqCst) >= self.shared.config.get().max_connections
    }

    /// Every place is taken: accepts nothing (peers wait in the backlog)
    /// until a place frees or the intake stops. Peers that waited
    /// [`CONNECTION_WAIT`] with no place freeing meanwhile are refused.
    fn wait_for_place(&mut self, listener: &Listening, waker: &Waker) {
        let mut since = std::time::Instant::now();
        while self.full() && !self.shared.intake.is_set() {
            let waiting = peer_waiting(listener);
            if waiting && !self.peer_waited {
                self.peer_waited = true;
                if log_limit::allow(Kind::RefusedPeer) {
                    log::warn!(
                        "all {} MAX_CONNECTIONS places taken: new backends wait (up to {} s)",
                        self.shared.config.get().max_connections,
                        CONNECTION_WAIT.as_secs()
                    );
                }
            }
            if !waiting && self.wait_for_peer(listener) {
                continue;
            }
            let tick = if waiting {
                CONNECTION_WAIT.saturating_sub(since.elapsed())
            } else {
                FULL_TICK
            };
            if waiting && tick.is_zero() {
                self.refuse_waiting(listener, waker);
                since = std::time::Instant::now();
                continue;
            }
            crossbeam_channel::select! {
                recv(self.freed_rx) -> _ => since = std::time::Instant::now(),
                recv(self.shared.intake.receiver()) -> _ => {}
                default(tick) => {}
            }
        }
        // A peer that came in since the last look waited for this place.
        self.peer_waited |= peer_waiting(listener);
    }

    /// At the cap with no peer waiting: sleeps until one comes or the
    /// intake stops (poll on the socket and the stop's pipe), so a full
    /// but quiet listener does not wake. A place freed meanwhile stays in
    /// the `freed` channel and is seen next. False when the stop has no
    /// pipe or poll fails (the caller then ticks).
    fn wait_for_peer(&self, listener: &Listening) -> bool {
        use std::os::fd::AsRawFd;
        let Some(stop) = self.shared.intake.fd() else {
            return false;
        };
        crate::ops::sys::wait_readable([listener.as_raw_fd(), stop], None).is_ok()
    }

    /// Accepts every peer waiting in the backlog and refuses it with an
    /// error line: no place freed for [`CONNECTION_WAIT`].
    fn refuse_waiting(&mut self, listener: &Listening, waker: &Waker) {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let mut refused_now = 0u64;
        for _ in 0..BACKLOG {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if waker.is(&peer) {
                continue;
            }
            let config = self.shared.config.get();
            if let Err(why) = self.admission.check(&config, &stream, peer) {
                refused(peer, &why);
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let why = format!(
                "refused: all {} MAX_CONNECTIONS places stayed taken for {} s; nothing read, \
                 send again later",
                config.max_connections,
                CONNECTION_WAIT.as_secs()
            );
            let mut line = status::status_line(None, None, None, Some(&why));
            line.push(b'\n');
            // Counted before the peer can read the line: whoever reads it
            // and then looks at the metrics sees the refusal there.
            let counters = &self.shared.counters;
            counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            counters.connections_waited.fetch_add(1, Ordering::Relaxed);
            refuse_with(stream, &line);
            refused_now += 1;
        }
        let _ = listener.set_nonblocking(false);
        if refused_now > 0 {
            self.peer_waited = false;
            if log_limit::allow(Kind::RefusedPeer) {
                log::warn!(
                    "refused {refused_now} backend connections: all {} MAX_CONNECTIONS places \
                     stayed taken for {} s",
                    self.shared.config.get().max_connections,
                    CONNECTION_WAIT.as_secs()
                );
            }
        }
    }

    /// Admits every connection still waiting in the kernel's backlog, past
    /// MAX_CONNECTIONS: their peers sent before the stop.
    fn accept_backlog(&mut self, listener: &Listening, waker: &Waker) {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) if !waker.is(&peer) => {
                    let _ = stream.set_nonblocking(false);
                    self.admit(stream, peer, false);
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Waits for every session, each of which reads what its peer sent.
    fn join_sessions(&mut self) {
        for (_, session) in self.sessions.drain() {
            let _ = session.join();
        }
    }

    /// Joins finished sessions so their threads are gone.
    fn reap(&mut self) {
        while let Ok(id) = self.ended_rx.try_recv() {
            if let Some(session) = self.sessions.remove(&id) {
                let _ = session.join();
            }
        }
    }

    /// Starts a session for `stream`, unless the peer is not allowed; a
    /// peer that is not allowed takes no place. The caller made sure a
    /// place is free (`limited`), or is stopping and serves the backlog.
    fn admit(&mut self, stream: Stream, peer: Peer, limited: bool) {
        if let Err(why) = self
            .admission
            .check(&self.shared.config.get(), &stream, peer)
        {
            refused(peer, &why);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if limited && std::mem::take(&mut self.peer_waited) {
            Counters::add(&self.shared.counters.connections_waited);
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        log::info!("backend {peer} connected");
        self.active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot {
            active: Arc::clone(&self.active),
            freed: self.freed_tx.clone(),
        };
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

/// Waits until a peer is in `listener`'s backlog (or a signal interrupts).
fn peer_arrived(listener: &Listening) -> bool {
    crate::ops::sys::wait_readable([listener.as_raw_fd()], None).is_ok_and(|[ready]| ready)
}

/// Whether a peer waits in `listener`'s backlog, without accepting it.
fn peer_waiting(listener: &Listening) -> bool {
    crate::ops::sys::wait_readable([listener.as_raw_fd()], Some(Duration::ZERO))
        .is_ok_and(|[ready]| ready)
}

/// Writes the refusal `line` to a peer that was never read, and closes it.
/// What the peer already sent is read and dropped first, so the close is
/// not a reset that could discard the line before the peer reads it.
fn refuse_with(stream: Stream, line: &[u8]) {
    use std::io::{Read, Write};
    let mut stream = &stream;
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        for _ in 0..64 {
            if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(line);
    let _ = stream.shutdown(Shutdown::Write);
}

/// A refused peer is logged, within the remote-input budget: a connection
/// flood must not fill the disk.
fn refused(peer: Peer, why: &Refusal) {
    if log_limit::allow(Kind::RefusedPeer) {
        log::warn!("refused backend {peer}: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::session::Fixture;
    use crate::backend::sockets;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    const WAIT: Duration = Duration::from_secs(10);

    /// The listener on a port the OS picked, in its own thread; the
    /// receiver says when it has stopped.
    fn start(fixture: &Fixture) -> (SocketAddr, crossbeam_channel::Receiver<()>) {
        let socket = sockets::bind("127.0.0.1", 0).expect("a loopback port");
        let addr = socket.local_addr().expect("its address");
        let shared = Arc::clone(&fixture.shared);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            run(vec![Listening::Tcp(socket)], shared);
            let _ = done_tx.send(());
        });
        (addr, done)
    }

    /// True when the relay closed `stream` without taking anything.
    fn closed(mut stream: TcpStream) -> bool {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf), Ok(0) | Err(_))
    }

    #[test]
    fn a_backend_is_served_and_a_stop_wakes_the_blocked_accept() {
        let fixture = Fixture::new("");
        let (addr, done) = start(&fixture);
        let mut backend = TcpStream::connect(addr).unwrap();
        backend
            .write_all(br#"{"type":"SCS","unit":"cam1"}"#)
            .unwrap();
        let batch = fixture.jobs.recv_timeout(WAIT).expect("a batch");
        assert_eq!(batch[0].unit, "cam1");
        assert_eq!(batch[0].peer, backend.local_addr().ok().map(Peer::Tcp));
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT)
            .expect("the listener and its sessions end on stop");
    }

    #[test]
    fn a_peer_outside_socket_allow_is_closed_unread() {
        let fixture = Fixture::new("SOCKET_ALLOW=10.0.0.0/8\n");
        let (addr, done) = start(&fixture);
        let mut backend = TcpStream::connect(addr).unwrap();
        let _ = backend.write_all(br#"{"type":"SCS","unit":"cam1"}"#);
        assert!(closed(backend));
        assert!(fixture.jobs.try_recv().is_err());
        assert_eq!(fixture.count(|c| &c.received), 0);
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT).expect("stops");
    }

    #[test]
    fn past_max_connections_a_new_backend_waits_until_a_place_is_free() {
        let fixture = Fixture::new("MAX_CONNECTIONS=1\n");
        let (addr, done) = start(&fixture);
        let mut first = TcpStream::connect(addr).unwrap();
        first.write_all(br#"{"type":"SCS","unit":"cam1"}"#).unwrap();
        fixture
            .jobs
            .recv_timeout(WAIT)
            .expect("the first is served");
        // The second waits in the backlog: its command is not read yet...
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .write_all(br#"{"type":"SCS","unit":"cam2"}"#)
            .unwrap();
        assert!(fixture
            .jobs
            .recv_timeout(Duration::from_millis(300))
            .is_err());
        // ...and is served once the first frees its place.
        drop(first);
        let batch = fixture
            .jobs
            .recv_timeout(WAIT)
            .expect("the second is served");
        assert_eq!(batch[0].unit, "cam2");
        assert_eq!(fixture.count(|c| &c.connections_waited), 1);
        drop(second);
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT).expect("stops");
    }

    #[test]
    fn peers_waiting_too_long_get_a_refusal_line() {
        let fixture = Fixture::new("MAX_CONNECTIONS=1\n");
        let (addr, done) = start(&fixture);
        let mut first = TcpStream::connect(addr).unwrap();
        first.write_all(br#"{"type":"SCS","unit":"cam1"}"#).unwrap();
        fixture
            .jobs
            .recv_timeout(WAIT)
            .expect("the first is served");
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .write_all(br#"{"type":"SCS","unit":"cam2"}"#)
            .unwrap();
        second
            .set_read_timeout(Some(CONNECTION_WAIT + WAIT))
            .unwrap();
        let mut line = String::new();
        let _ = second.read_to_string(&mut line);
        assert_eq!(
            line,
            "{\"status\":\"error\",\"type\":null,\"unit\":null,\"error\":\"refused: all 1 \
             MAX_CONNECTIONS places stayed taken for 10 s; nothing read, send again later\"}\n"
        );
        assert_eq!(fixture.count(|c| &c.connections_refused), 1);
        assert!(fixture.jobs.try_recv().is_err(), "nothing of it was queued");
        drop(first);
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT).expect("stops");
    }

    /// The listeners on loopback TCP and on a Unix socket in a scratch
    /// directory; the receiver says when both have stopped.
    fn start_both(
        fixture: &Fixture,
        tag: &str,
    ) -> (
        SocketAddr,
        std::path::PathBuf,
        crossbeam_channel::Receiver<()>,
    ) {
        let tcp = sockets::bind("127.0.0.1", 0).expect("a loopback port");
        let addr = tcp.local_addr().expect("its address");
        let path = crate::ops::files::scratch_dir(tag).join("relay.sock");
        let unix = sockets::bind_unix(&path, 0o600, None).expect("a socket");
        let shared = Arc::clone(&fixture.shared);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            run(vec![Listening::Tcp(tcp), Listening::Unix(unix)], shared);
            let _ = done_tx.send(());
        });
        (addr, path, done)
    }

    #[test]
    fn unix_and_tcp_backends_share_the_places_and_a_freed_one_wakes_the_other() {
        let fixture = Fixture::new("MAX_CONNECTIONS=1\n");
        let (addr, path, done) = start_both(&fixture, "listener-both");
        let mut local = std::os::unix::net::UnixStream::connect(&path).unwrap();
        local.write_all(br#"{"type":"SCS","unit":"cam1"}"#).unwrap();
        let batch = fixture
            .jobs
            .recv_timeout(WAIT)
            .expect("the Unix peer is served");
        let me = crate::ops::sys::euid();
        assert!(matches!(batch[0].peer, Some(Peer::Unix { uid, .. }) if uid == me));
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .write_all(br#"{"type":"SCS","unit":"cam2"}"#)
            .unwrap();
        assert!(
            fixture
                .jobs
                .recv_timeout(Duration::from_millis(300))
                .is_err(),
            "the one place is the Unix peer's"
        );
        drop(local);
        let batch = fixture
            .jobs
            .recv_timeout(WAIT)
            .expect("the TCP peer is served");
        assert_eq!(batch[0].unit, "cam2");
        drop(second);
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT).expect("both listeners stop");
        assert!(!path.exists(), "the socket file is removed on stop");
    }

    #[test]
    fn a_unix_peer_outside_socket_allow_users_is_closed_unread() {
        let other = crate::ops::sys::euid().wrapping_add(1);
        let fixture = Fixture::new(&format!("SOCKET_ALLOW_USERS={other}\n"));
        let (_, path, done) = start_both(&fixture, "listener-unix-users");
        let mut local = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _ = local.write_all(br#"{"type":"SCS","unit":"cam1"}"#);
        local.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(local.read(&mut buf), Ok(0) | Err(_)));
        assert!(fixture.jobs.try_recv().is_err());
        // A reload that lists this user applies to the next peer.
        let me = crate::ops::sys::euid();
        let reloaded = format!("SOCKET_ALLOW_USERS={other}, {me}\n");
        let reloaded = crate::config::parse(&reloaded, "test").expect("a configuration");
        fixture.shared.config.replace(reloaded);
        let mut local = std::os::unix::net::UnixStream::connect(&path).unwrap();
        local.write_all(br#"{"type":"SCS","unit":"cam2"}"#).unwrap();
        let batch = fixture.jobs.recv_timeout(WAIT).expect("now served");
        assert_eq!(batch[0].unit, "cam2");
        drop(local);
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT).expect("stops");
    }
}
