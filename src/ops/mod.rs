//! Operations: what every side uses to run on a gateway: logging and its
//! rate limits, counters, the files the relay writes (trusted directories,
//! the pid lock, the runtime record), a backend connection's socket
//! (`transport.rs`: the backend and delivery's outbox both hold it), stop
//! signals, time, systemd's notifications and the system calls std lacks.

pub(crate) mod counters;
pub(crate) mod dirs;
pub(crate) mod files;
pub(crate) mod log_limit;
pub mod logging;
pub(crate) mod notify;
pub(crate) mod pidfile;
pub(crate) mod record;
pub(crate) mod shutdown;
pub(crate) mod sync;
pub(crate) mod sys;
pub(crate) mod time;
pub(crate) mod transport;
