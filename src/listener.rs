//! The backend listener thread: accepts TCP connections on
//! `SOCKET_HOST:SOCKET_PORT`, refuses peers outside `SOCKET_ALLOW` and past
//! `MAX_CONNECTIONS`, and spawns one session thread per connection. On stop
//! it wakes its own blocking `accept()` by connecting to itself, shuts down
//! the read side of every open session and joins them all.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::allowed;
use crate::error::Error;
use crate::session::{self, Shared, Slot};

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

/// Opens sessions know about: the handle to join and a clone to shut down.
struct Open {
    thread: JoinHandle<()>,
    stream: TcpStream,
}

pub fn run(listener: TcpListener, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    let sessions: Arc<Mutex<HashMap<u64, Open>>> = Arc::default();
    let (ended_tx, ended_rx) = crossbeam_channel::unbounded::<u64>();
    let mut next_id: u64 = 0;
    let mut refusals = RefusalLog::default();
    // Sessions still reading their peer: what MAX_CONNECTIONS limits. A session
    // frees its place the moment it stops reading (see session::Slot).
    let active = Arc::new(AtomicUsize::new(0));

    // Wakes accept() once the intake stops.
    let waker = {
        let stop = shared.intake.clone();
        std::thread::Builder::new()
            .name("listener-waker".into())
            .spawn(move || {
                while !stop.sleep(Duration::from_secs(3600)) {}
                if let Some(addr) = local {
                    let _ = TcpStream::connect_timeout(&wake_addr(addr), Duration::from_secs(1));
                }
            })
    };

    for incoming in listener.incoming() {
        if shared.intake.is_set() {
            break;
        }
        // Reap finished sessions so their slots free up.
        while let Ok(id) = ended_rx.try_recv() {
            if let Some(open) = lock(&sessions).remove(&id) {
                let _ = open.thread.join();
            }
        }
        let stream = match incoming {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                // EMFILE and friends: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue,
        };
        if !allowed(&shared.config.socket_allow, peer.ip()) {
            refusals.note(peer, "not in SOCKET_ALLOW");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        if active.load(Ordering::SeqCst) >= shared.config.max_connections {
            refusals.note(peer, "MAX_CONNECTIONS reached");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let clone = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("backend {peer}: cannot set up the connection: {e}");
                continue;
            }
        };
        log::info!("backend {peer} connected");
        next_id += 1;
        let id = next_id;
        active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(Arc::clone(&active));
        let shared_for_session = Arc::clone(&shared);
        let ended = ended_tx.clone();
        // Hold the map lock across spawn so the session's end cannot be reaped before it is registered.
        let mut map = lock(&sessions);
        match std::thread::Builder::new()
            .name(format!("backend-{id}"))
            .spawn(move || {
                session::run(stream, peer, shared_for_session, slot);
                let _ = ended.send(id);
            }) {
            Ok(thread) => {
                map.insert(
                    id,
                    Open {
                        thread,
                        stream: clone,
                    },
                );
            }
            Err(e) => log::error!("cannot start a thread for backend {peer}: {e}"),
        }
    }

    // Stop reading every backend; each session then ends and is joined.
    let open: Vec<Open> = lock(&sessions).drain().map(|(_, o)| o).collect();
    for o in &open {
        let _ = o.stream.shutdown(Shutdown::Read);
    }
    for o in open {
        let _ = o.thread.join();
    }
    if let Ok(w) = waker {
        let _ = w.join();
    }
    log::debug!("listener stopped");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// Rate-limits refusal log lines: a connection flood must not fill the disk.
#[derive(Default)]
struct RefusalLog {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(60);

    fn note(&mut self, peer: SocketAddr, why: &str) {
        let now = Instant::now();
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW);
        if fresh {
            if self.suppressed > 0 {
                log::warn!(
                    "{} more connections refused in the last minute (not logged one by one)",
                    self.suppressed
                );
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < Self::PER_WINDOW {
            self.logged += 1;
            log::warn!("refused backend {peer}: {why}");
        } else {
            self.suppressed += 1;
        }
    }
}
