//! ms500-relay: relays JSON commands from a backend TCP socket to MS500
//! cameras over MQTT, and routes device replies back. The binary
//! (`src/main.rs`) only reads the command line and maps errors to exit
//! codes; everything else is this library, which the fuzz targets and the
//! benchmark use too.
//!
//! How a command travels: [`listener`] accepts a connection and starts a
//! [`session`], which frames the byte stream ([`frame`]), validates each
//! value ([`command`]) and pushes it to the [`publisher`], which keeps it in
//! the delivery ledger ([`delivery`]) and the [`spool`] and writes it to the
//! broker over the [`publish_link`]'s connection ([`wire`], [`mqtt`]). The
//! [`device_link`] receives heartbeats ([`heartbeat`], [`devices`]) and
//! device replies, which go to the backend holding the unit's route
//! ([`routes`], [`outbox`], [`lingering`]). [`relay`] wires the threads.
//!
//! # Log levels
//!
//! - error: needs a human (the relay cannot do its job: a spool that cannot
//!   be written, credentials the broker refuses);
//! - warn: a peer, a device or the broker misbehaved and the relay carried on;
//! - info: one line per command, heartbeat, connection and state change;
//! - debug: internals.

pub mod brokers;
pub mod cli;
pub mod command;
pub mod config;
pub mod counters;
pub mod delivery;
pub mod device_link;
pub mod devices;
pub mod error;
pub mod files;
pub mod frame;
pub mod heartbeat;
pub mod lingering;
pub mod listener;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod outbox;
pub mod pidfile;
pub mod publish_link;
pub mod publisher;
pub mod redact;
pub mod relay;
pub mod routes;
pub mod send;
pub mod session;
pub mod shutdown;
pub mod spool;
pub mod status;
pub mod sys;
pub mod time;
pub mod tls;
pub mod watchdog;
pub mod wire;
