//! The sockets backends connect to: the TCP listener on
//! `SOCKET_HOST:SOCKET_PORT` and the optional Unix socket at `SOCKET_PATH`
//! (PROTOCOL.md §1.1). Bound by the main thread at start, then each owned by
//! a listener thread, which accepts from it through [`Listening::accept`]
//! and so never asks which kind it holds. The Unix socket's file is removed
//! when its [`UnixSocket`] is dropped (the listener closing it on stop).
//! No channel.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::backend::peers;
use crate::config::Config;
use crate::error::Error;
use crate::ops::sys;
use crate::ops::transport::{Peer, Stream};

/// Mode bits nobody but the relay's user has while the socket is being set
/// up: bind(2) creates it under this umask (0600), before chmod/chown.
const BIND_UMASK: u32 = 0o177;
/// Connections the kernel keeps waiting for accept() while every place is
/// taken: a burst of one-shot backends waits here instead of being dropped.
pub const BACKLOG: i32 = 128;

/// One socket backends connect to.
pub enum Listening {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// The bound Unix socket; its file goes when this is dropped, if it is
/// still the one bound (the same inode).
pub struct UnixSocket {
    listener: UnixListener,
    pub path: PathBuf,
    inode: (u64, u64),
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove the socket {}: {e}", self.path.display());
            }
        }
    }
}

impl Listening {
    /// The next connection and who made it (on the Unix socket, the
    /// kernel's record of the connecting process: `SO_PEERCRED`).
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listening::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Peer::Tcp(a))),
            Listening::Unix(u) => {
                let (s, _) = u.listener.accept()?;
                let sys::Credentials { uid, pid } = sys::peer_credentials(&s)?;
                Ok((Stream::Unix(s), Peer::Unix { uid, pid }))
            }
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listening::Tcp(l) => l.set_nonblocking(on),
            Listening::Unix(u) => u.listener.set_nonblocking(on),
        }
    }
}

impl AsRawFd for Listening {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listening::Tcp(l) => l.as_raw_fd(),
            Listening::Unix(u) => u.listener.as_raw_fd(),
        }
    }
}

/// Binds what the configuration asks for: the TCP listener unless
/// `SOCKET_HOST` is empty, and the Unix socket when `SOCKET_PATH` is set.
pub fn bind_all(config: &Config) -> Result<Vec<Listening>, Error> {
    let mut sockets = Vec::new();
    if !config.socket_host.is_empty() {
        let tcp = bind(&config.socket_host, config.socket_port)?;
        sockets.push(Listening::Tcp(tcp));
    }
    if let Some(path) = &config.socket_path {
        let group = config.socket_group.as_deref();
        sockets.push(Listening::Unix(bind_unix(path, config.socket_mode, group)?));
        log::info!(
            "backend Unix socket {} (mode {:04o}, group {})",
            path.display(),
            config.socket_mode,
            group.unwrap_or("the relay's own")
        );
    }
    Ok(sockets)
}

/// Binds the TCP listener to `host:port` (an IPv6 address with or without
/// brackets), with a backlog of [`BACKLOG`].
pub fn bind(host: &str, port: u16) -> Result<TcpListener, Error> {
    let addr = format!("{}:{port}", bracket_v6(host));
    let listener = TcpListener::bind(addr.as_str()).map_err(|source| Error::Listen {
        addr: addr.clone(),
        source,
    })?;
    sys::set_backlog(&listener, BACKLOG).map_err(|source| Error::Listen { addr, source })?;
    Ok(listener)
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Where backends connect, for the "listening on" line: the TCP address,
/// else the Unix socket's path.
pub fn listening_on(sockets: &[Listening]) -> String {
    let tcp = sockets.iter().find_map(|s| match s {
        Listening::Tcp(l) => l.local_addr().ok().map(|a| a.to_string()),
        Listening::Unix(_) => None,
    });
    let unix = sockets.iter().find_map(|s| match s {
        Listening::Unix(u) => Some(u.path.display().to_string()),
        Listening::Tcp(_) => None,
    });
    tcp.or(unix).unwrap_or_default()
}

/// Binds the Unix socket at `path`: a stale socket a crashed relay left is
/// removed first (one nobody listens on), anything else in the way refuses
/// the start (exit 4); created mode 0600, then given `group` (a name or
/// gid) and `mode`, so no one else can connect before they apply. The
/// directory was checked by preflight like those of the files the relay writes.
pub fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixSocket, Error> {
    let listen = |source| Error::Listen {
        addr: path.display().to_string(),
        source,
    };
    clear_stale(path).map_err(listen)?;
    let listener = sys::with_umask(BIND_UMASK, || UnixListener::bind(path)).map_err(listen)?;
    let meta = std::fs::symlink_metadata(path).map_err(listen)?;
    let socket = UnixSocket {
        listener,
        path: path.to_path_buf(),
        inode: (meta.dev(), meta.ino()),
    };
    sys::set_backlog(&socket.listener, BACKLOG).map_err(listen)?;
    if let Some(group) = group {
        let gid = peers::resolve_group(group)
            .ok_or_else(|| Error::setup(format!("SOCKET_GROUP {group}: no such group")))?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            Error::setup_because(
                format!(
                    "SOCKET_GROUP {group}: cannot give {} to group {gid} (a relay not run \
                     by root must be a member of it)",
                    path.display()
                ),
                e,
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(listen)?;
    Ok(socket)
}

/// Removes what is at `path` when it is a socket of the relay's user that
/// nobody listens on (a crashed relay's); Ok when nothing is there. A live
/// socket means another relay runs; anything else is not the relay's to remove.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(meta) => meta,
    };
    let refuse = |kind, why: String| Err(io::Error::new(kind, why));
    if !meta.file_type().is_socket() {
        return refuse(
            ErrorKind::AlreadyExists,
            "something that is not a socket is in the way; the relay removes only a stale \
             socket of its own"
                .into(),
        );
    }
    if meta.uid() != sys::euid() {
        return refuse(
            ErrorKind::AlreadyExists,
            format!(
                "a socket of uid {} is in the way, not the relay's user's (uid {})",
                meta.uid(),
                sys::euid()
            ),
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => refuse(
            ErrorKind::AddrInUse,
            "another process listens on it (is a relay already running?)".into(),
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)?;
            log::info!(
                "removed the stale socket {} (nothing listened on it)",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::files::scratch_dir;

    #[test]
    fn ipv6_hosts_are_bracketed_for_binding() {
        assert_eq!(bracket_v6("::1"), "[::1]");
        assert_eq!(bracket_v6("[::1]"), "[::1]");
        assert_eq!(bracket_v6("0.0.0.0"), "0.0.0.0");
        assert_eq!(bracket_v6("localhost"), "localhost");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = scratch_dir("unix-socket");
        let path = dir.join("relay.sock");
        // A socket file nobody listens on: what a killed relay leaves.
        drop(UnixListener::bind(&path).unwrap());
        let socket = bind_unix(&path, 0o660, None).expect("the stale one is replaced");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let second = bind_unix(&path, 0o660, None);
        assert!(
            matches!(&second, Err(Error::Listen { source, .. }) if source.kind() == ErrorKind::AddrInUse),
            "{:?}",
            second.err()
        );
        assert!(path.exists(), "the live socket is left alone");
        drop(socket);
        assert!(!path.exists(), "removed when closed");
    }

    #[test]
    fn a_file_in_the_way_is_not_removed() {
        let dir = scratch_dir("unix-socket-file");
        let path = dir.join("relay.sock");
        std::fs::write(&path, "keep").unwrap();
        assert!(matches!(
            bind_unix(&path, 0o600, None),
            Err(Error::Listen { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
    }

    #[test]
    fn accepted_unix_peers_are_named_by_their_credentials() {
        let dir = scratch_dir("unix-socket-peer");
        let path = dir.join("relay.sock");
        let socket = Listening::Unix(bind_unix(&path, 0o600, None).unwrap());
        let _client = UnixStream::connect(&path).unwrap();
        let (_, peer) = socket.accept().unwrap();
        assert_eq!(
            peer,
            Peer::Unix {
                uid: sys::euid(),
                pid: std::process::id()
            }
        );
    }
}
