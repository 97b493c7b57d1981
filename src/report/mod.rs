//! What the relay reports about itself: the status file and `status` command,
//! the Prometheus metrics file, and when the main thread writes them. Reads
//! every side; no side reads it.

pub(crate) mod metrics;
pub mod status;
pub(crate) mod writer;
