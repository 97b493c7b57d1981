//! The backend side: the listener accepts connections, a session per connection
//! reads, frames and validates commands and hands them to delivery; reply
//! routes say which connection gets which unit's device replies, and lingering
//! keeps closed connections that are still owed status lines.

pub(crate) mod admission;
pub(crate) mod lingering;
pub(crate) mod listener;
pub(crate) mod peers;
pub(crate) mod routes;
pub(crate) mod session;
pub(crate) mod sockets;
pub(crate) mod waker;
