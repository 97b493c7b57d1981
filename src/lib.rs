//! ms500-relay: relays JSON commands from a backend TCP socket to MS500
//! cameras over MQTT, and routes device replies back. The binary
//! (`src/main.rs`) only reads the command line and maps errors to exit
//! codes; everything else is this library, which the fuzz targets and the
//! benchmark use too.
//!
//! The tree is the architecture, one folder per side, and a command
//! travels through it in this order:
//!
//! - `backend/`: the listener accepts a connection and starts a session,
//!   which frames and validates the byte stream ([`protocol`]) and hands
//!   accepted commands over in batches;
//! - `delivery/`: the queue item, the publisher that owns every command
//!   until the broker acknowledged it (the ledger, the spool), and the
//!   outbox that carries status lines and replies back to a connection;
//! - [`mqtt`]: the broker links: the MQTT codec, the byte stream (TCP or
//!   TLS), the broker list and the publish link thread;
//! - `devices/`: the device link that receives heartbeats (the device
//!   table) and device replies, which go back over the reply routes;
//! - [`ops`]: what every thread uses (logging, counters, files, time, stop);
//! - [`report`]: the status and metrics files; [`cli`]: the commands.
//!
//! [`checks`] is what the start refuses, run by `check-config`, the start,
//! a reload and the watchdog alike; [`relay`] starts the threads and stops them. Folders only point down
//! this list (`devices` also uses the backend's reply routes): no cycles.
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
