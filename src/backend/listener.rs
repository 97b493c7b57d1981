//! The backend listener thread: accepts TCP connections on
//! `SOCKET_HOST:SOCKET_PORT`, refuses peers outside `SOCKET_ALLOW` and local
//! peers whose socket belongs to a user outside `SOCKET_ALLOW_USERS` (both
//! before they take a place), and
//! spawns one session thread per connection. With every `MAX_CONNECTIONS`
//! place taken it stops accepting: further peers wait in the kernel's
//! backlog ([`BACKLOG`]) until a session frees a place (its [`Slot`] wakes
//! the listener through the `freed` channel); peers still waiting after
//! [`CONNECTION_WAIT`] without any place freeing are refused with an error
//! line they can read (PROTOCOL.md §1). On stop
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
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Kind};
use crate::ops::peers;
use crate::ops::shutdown::Stop;
use crate::ops::sync::lock;

/// Connections the kernel keeps waiting for accept() while every place is
/// taken: a burst of one-shot backends waits here instead of being dropped.
pub const BACKLOG: i32 = 128;
/// How long peers may wait in the backlog with no place freeing before they
/// are refused with an error line.
pub const CONNECTION_WAIT: Duration = Duration::from_secs(10);
/// How often a listener at the cap looks for peers in the backlog while
/// none wait yet, when it cannot sleep on the socket (no stop pipe).
const FULL_TICK: Duration = Duration::from_secs(1);

pub fn bind(host: &str, port: u16) -> Result<TcpListener, Error> {
    let addr = format!("{}:{port}", bracket_v6(host));
    let listener = TcpListener::bind(addr.as_str()).map_err(|source| Error::Listen {
        addr: addr.clone(),
        source,
    })?;
    crate::ops::sys::set_backlog(&listener, BACKLOG)
        .map_err(|source| Error::Listen { addr, source })?;
    Ok(listener)
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
    /// The uids of `SOCKET_ALLOW_USERS`; `None` admits every local user.
    local_users: Option<Vec<u32>>,
    /// A freed place (from a Slot's drop) while the listener waits at the cap.
    freed_tx: Sender<()>,
    freed_rx: Receiver<()>,
    /// A peer was seen waiting at the cap: the next one accepted has waited.
    peer_waited: bool,
}

pub fn run(listener: TcpListener, shared: Arc<Shared>) {
    let waker = Waker::start(shared.intake.clone(), listener.local_addr().ok());
    let mut state = Listener::new(shared);
    state.accept_until_stopped(&listener, &waker);
    // Stopping: connections already in the backlog were accepted by the
    // kernel, and their peers' bytes may be waiting: serve them as well.
    state.accept_backlog(&listener, &waker);
    drop(listener);
    state.join_sessions();
    waker.join();
    log::debug!("listener stopped");
}

/// Wakes the listener's blocking accept() once the intake stops, by
/// connecting to it; the listener knows that connection by its address and
/// does not take it for a backend.
struct Waker {
    own: Arc<Mutex<Option<SocketAddr>>>,
    thread: std::io::Result<JoinHandle<()>>,
}

impl Waker {
    fn start(stop: Stop, local: Option<SocketAddr>) -> Waker {
        let own: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let thread = {
            let own = Arc::clone(&own);
            std::thread::Builder::new()
                .name("listener-waker".into())
                .spawn(move || {
                    while !stop.sleep(Duration::from_secs(3600)) {}
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
                })
        };
        Waker { own, thread }
    }

    /// Whether `peer` is the waker's own connection.
    fn is(&self, peer: &SocketAddr) -> bool {
        *lock(&self.own) == Some(*peer)
    }

    fn join(self) {
        if let Ok(thread) = self.thread {
            let _ = thread.join();
        }
    }
}

impl Listener {
    fn new(shared: Arc<Shared>) -> Listener {
        let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
        let (freed_tx, freed_rx) = crossbeam_channel::bounded(1);
        Listener {
            sessions: HashMap::new(),
            ended_tx,
            ended_rx,
            next_id: 0,
            active: Arc::new(AtomicUsize::new(0)),
            local_users: allowed_local_users(&shared.config.get().socket_allow_users),
            shared,
            freed_tx,
            freed_rx,
            peer_waited: false,
        }
    }

    /// Accepts backends until the intake stops (the waker's connection
    /// wakes the last accept).
    fn accept_until_stopped(&mut self, listener: &TcpListener, waker: &Waker) {
        while !self.shared.intake.is_set() {
            self.reap();
            if self.full() {
                self.wait_for_place(listener, waker);
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
    fn wait_for_place(&mut self, listener: &TcpListener, waker: &Waker) {
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
    fn wait_for_peer(&self, listener: &TcpListener) -> bool {
        use std::os::fd::AsRawFd;
        let Some(stop) = self.shared.intake.fd() else {
            return false;
        };
        crate::ops::sys::wait_readable([listener.as_raw_fd(), stop], None).is_ok()
    }

    /// Accepts every peer waiting in the backlog and refuses it with an
    /// error line: no place freed for [`CONNECTION_WAIT`].
    fn refuse_waiting(&mut self, listener: &TcpListener, waker: &Waker) {
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
            if !allowed(&config.socket_allow, peer.ip()) {
                refused(peer, "not in SOCKET_ALLOW");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            if let Err(why) = self.local_user_allowed(&stream, peer) {
                refused(peer, &why);
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let line = format!(
                "{{\"status\":\"error\",\"type\":null,\"unit\":null,\"error\":\"refused: all {} \
                 MAX_CONNECTIONS places stayed taken for {} s; nothing read, send again later\"}}\n",
                config.max_connections,
                CONNECTION_WAIT.as_secs()
            );
            // Counted before the peer can read the line: whoever reads it
            // and then looks at the metrics sees the refusal there.
            let counters = &self.shared.counters;
            counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            counters.connections_waited.fetch_add(1, Ordering::Relaxed);
            refuse_with(stream, line.as_bytes());
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
    fn accept_backlog(&mut self, listener: &TcpListener, waker: &Waker) {
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
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, limited: bool) {
        let config = self.shared.config.get();
        if !allowed(&config.socket_allow, peer.ip()) {
            refused(peer, "not in SOCKET_ALLOW");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if let Err(why) = self.local_user_allowed(&stream, peer) {
            refused(peer, &why);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if limited && std::mem::take(&mut self.peer_waited) {
            Counters::add(&self.shared.counters.connections_waited);
        }
        self.next_id += 1;
        let id = self.next_id;
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

impl Listener {
    /// A peer on this machine is admitted only when its socket belongs to
    /// a user of `SOCKET_ALLOW_USERS` (the kernel's socket table says whose).
    fn local_user_allowed(&self, stream: &TcpStream, peer: SocketAddr) -> Result<(), String> {
        let (Some(users), Ok(ours)) = (&self.local_users, stream.local_addr()) else {
            return Ok(());
        };
        if !peers::is_local(peer, ours) {
            return Ok(());
        }
        match peers::connection_owner(&peers::read_sockets(), peer, ours, false) {
            Some(uid) if users.contains(&uid) => Ok(()),
            Some(uid) => Err(format!("local user {uid} is not in SOCKET_ALLOW_USERS")),
            None => Err("the owner of its socket is unknown (SOCKET_ALLOW_USERS)".into()),
        }
    }
}

/// The uids of `SOCKET_ALLOW_USERS`, or `None` (every local user) when empty.
/// A name that names nobody admits nobody (the start refused it already).
fn allowed_local_users(entries: &[String]) -> Option<Vec<u32>> {
    if entries.is_empty() {
        return None;
    }
    Some(peers::resolve_users(entries).unwrap_or_else(|unknown| {
        log::error!("SOCKET_ALLOW_USERS: no such user: {}", unknown.join(", "));
        let known: Vec<String> = entries
            .iter()
            .filter(|e| !unknown.contains(e))
            .cloned()
            .collect();
        peers::resolve_users(&known).unwrap_or_default()
    }))
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

/// Whether a peer waits in `listener`'s backlog, without accepting it.
fn peer_waiting(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    crate::ops::sys::wait_readable([listener.as_raw_fd()], Some(Duration::ZERO))
        .is_ok_and(|[ready]| ready)
}

/// Writes the refusal `line` to a peer that was never read, and closes it.
/// What the peer already sent is read and dropped first, so the close is
/// not a reset that could discard the line before the peer reads it.
fn refuse_with(mut stream: TcpStream, line: &[u8]) {
    use std::io::{Read, Write};
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
fn refused(peer: SocketAddr, why: &str) {
    if log_limit::allow(Kind::RefusedPeer) {
        log::warn!("refused backend {peer}: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::session::Fixture;
    use std::io::{Read, Write};

    const WAIT: Duration = Duration::from_secs(10);

    /// The listener on a port the OS picked, in its own thread; the
    /// receiver says when it has stopped.
    fn start(fixture: &Fixture) -> (SocketAddr, crossbeam_channel::Receiver<()>) {
        let socket = bind("127.0.0.1", 0).expect("a loopback port");
        let addr = socket.local_addr().expect("its address");
        let shared = Arc::clone(&fixture.shared);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            run(socket, shared);
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
        assert_eq!(batch[0].peer, backend.local_addr().ok());
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
        assert!(line.contains("\"status\":\"error\""), "{line}");
        assert!(line.contains("MAX_CONNECTIONS"), "{line}");
        assert_eq!(fixture.count(|c| &c.connections_refused), 1);
        assert!(fixture.jobs.try_recv().is_err(), "nothing of it was queued");
        drop(first);
        fixture.shared.intake.trigger();
        done.recv_timeout(WAIT).expect("stops");
    }

    #[test]
    fn the_waker_connects_to_loopback_when_bound_to_every_address() {
        let v4: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(wake_addr(v4), "127.0.0.1:7000".parse().unwrap());
        let v6: SocketAddr = "[::]:7000".parse().unwrap();
        assert_eq!(wake_addr(v6), "[::1]:7000".parse().unwrap());
        let one: SocketAddr = "10.1.2.3:7000".parse().unwrap();
        assert_eq!(wake_addr(one), one);
    }

    #[test]
    fn ipv6_hosts_are_bracketed_for_binding() {
        assert_eq!(bracket_v6("::1"), "[::1]");
        assert_eq!(bracket_v6("[::1]"), "[::1]");
        assert_eq!(bracket_v6("0.0.0.0"), "0.0.0.0");
        assert_eq!(bracket_v6("localhost"), "localhost");
    }
}
