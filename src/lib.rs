//! ms500-relay: relays JSON commands from backends (a TCP or Unix socket)
//! to MS500 cameras over MQTT, and routes device replies back. The binary
//! (`src/main.rs`) only maps the command line to this library and errors
//! to exit codes; the fuzz targets and the benchmark use the library too.
//!
//! One folder per side, each importing only from those before it in this
//! list: [`config`] and [`error`]; [`ops`] (what every side uses);
//! [`protocol`] (the backend's wire format, pure); [`mqtt`] (the broker
//! links); `delivery` (the publisher and its policy, the spool, the
//! outbox); `backend` (listener, sessions); `devices` (the device link,
//! the device table); and on top [`checks`] (what the start refuses),
//! [`report`] (status, metrics), [`cli`] (the commands) and [`relay`]
//! (start and shutdown). README's "How a command travels" is the map.
//!
//! # Log levels
//!
//! - error: needs a human (the relay cannot do its job: a spool that cannot
//!   be written, credentials the broker refuses);
//! - warn: a peer, a device or the broker misbehaved and the relay carried on;
//! - info: one line per command, heartbeat, connection and state change;
//! - debug: internals.

#![deny(clippy::undocumented_unsafe_blocks)]

mod backend;
pub mod checks;
pub mod cli;
pub mod config;
mod delivery;
mod devices;
pub mod error;
pub mod mqtt;
pub mod ops;
pub mod protocol;
pub mod relay;
pub mod report;
