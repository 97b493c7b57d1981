//! What the relay reports about itself: the status file and `status` command,
//! and the Prometheus metrics file. Reads every side; no side reads it.

pub(crate) mod metrics;
pub mod status;
