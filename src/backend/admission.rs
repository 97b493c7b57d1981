//! Who is let in as a backend: a TCP peer in `SOCKET_ALLOW`, and a local
//! peer (loopback TCP or the Unix socket) of a user in
//! `SOCKET_ALLOW_USERS` (the kernel's socket table or `SO_PEERCRED` says
//! whose). Asked by the listener thread for each peer it accepts, before
//! the peer takes a place; follows a reload of those keys.

use std::fmt;
use std::net::{SocketAddr, TcpStream};

use crate::backend::peers;
use crate::config::{allowed, Config};
use crate::ops::transport::{Peer, Stream};

/// Why a peer is not a backend (logged as `refused backend PEER: WHY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A TCP peer outside `SOCKET_ALLOW`.
    NotAllowed,
    /// A local peer of a user outside `SOCKET_ALLOW_USERS`.
    User(u32),
    /// A local peer whose socket's owner the kernel does not name.
    OwnerUnknown,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAllowed => f.write_str("not in SOCKET_ALLOW"),
            Refusal::User(uid) => write!(f, "local user {uid} is not in SOCKET_ALLOW_USERS"),
            Refusal::OwnerUnknown => {
                f.write_str("the owner of its socket is unknown (SOCKET_ALLOW_USERS)")
            }
        }
    }
}

/// The listener's view of `SOCKET_ALLOW_USERS`, resolved to uids.
pub struct Admission {
    /// The uids of `SOCKET_ALLOW_USERS`; `None` admits every local user.
    local_users: Option<Vec<u32>>,
    /// The `SOCKET_ALLOW_USERS` entries `local_users` was resolved from: a
    /// reload that changes them applies to the next peer.
    local_users_from: Vec<String>,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            local_users: allowed_local_users(&config.socket_allow_users),
            local_users_from: config.socket_allow_users.clone(),
        }
    }

    /// Why `peer` is not a backend: a TCP peer outside `SOCKET_ALLOW`, or a
    /// local one (TCP or Unix) of a user outside `SOCKET_ALLOW_USERS`.
    pub fn check(&mut self, config: &Config, stream: &Stream, peer: Peer) -> Result<(), Refusal> {
        if config.socket_allow_users != self.local_users_from {
            self.local_users = allowed_local_users(&config.socket_allow_users);
            self.local_users_from.clone_from(&config.socket_allow_users);
        }
        let tcp = match (peer, stream) {
            (Peer::Tcp(addr), Stream::Tcp(tcp)) => Some((addr, tcp)),
            _ => None,
        };
        if let Some((addr, _)) = tcp {
            if !allowed(&config.socket_allow, addr.ip()) {
                return Err(Refusal::NotAllowed);
            }
        }
        match (tcp, peer) {
            (Some((addr, tcp)), _) => self.local_user_allowed(tcp, addr),
            (None, Peer::Unix { uid, .. }) => self.local_uid_allowed(Some(uid)),
            (None, Peer::Tcp(_)) => Ok(()),
        }
    }

    /// A peer on this machine is admitted only when its socket belongs to
    /// a user of `SOCKET_ALLOW_USERS` (the kernel's socket table says whose).
    fn local_user_allowed(&self, stream: &TcpStream, peer: SocketAddr) -> Result<(), Refusal> {
        let (Some(_), Ok(ours)) = (&self.local_users, stream.local_addr()) else {
            return Ok(());
        };
        if !peers::is_local(peer, ours) {
            return Ok(());
        }
        self.local_uid_allowed(peers::connection_owner(
            &peers::read_sockets(),
            peer,
            ours,
            false,
        ))
    }

    /// Whether the local user `uid` (None: unknown) is in `SOCKET_ALLOW_USERS`.
    fn local_uid_allowed(&self, uid: Option<u32>) -> Result<(), Refusal> {
        let Some(users) = &self.local_users else {
            return Ok(());
        };
        match uid {
            Some(uid) if users.contains(&uid) => Ok(()),
            Some(uid) => Err(Refusal::User(uid)),
            None => Err(Refusal::OwnerUnknown),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_log_says_them() {
        assert_eq!(Refusal::NotAllowed.to_string(), "not in SOCKET_ALLOW");
        assert_eq!(
            Refusal::User(1001).to_string(),
            "local user 1001 is not in SOCKET_ALLOW_USERS"
        );
        assert_eq!(
            Refusal::OwnerUnknown.to_string(),
            "the owner of its socket is unknown (SOCKET_ALLOW_USERS)"
        );
    }
}
