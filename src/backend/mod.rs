//! The backend side: the sockets backends connect to, the listener threads
//! that accept and admit peers (`admission.rs`, whose socket: `peers.rs`),
//! a session thread per connection that reads, frames and validates
//! commands and hands them to delivery; the reply routes (which connection
//! gets which unit's replies) and the lingering thread (closed connections
//! still owed status lines).

pub(crate) mod admission;
pub(crate) mod lingering;
pub(crate) mod listener;
pub(crate) mod peers;
pub(crate) mod routes;
pub(crate) mod session;
pub(crate) mod sockets;
pub(crate) mod waker;
