//! The integration tests, one binary: each module is one area of the relay,
//! driven through the real binary against a real mosquitto (see `support`).
//! Linking the crate and the support code once, instead of once per area, is
//! what keeps `cargo test` quick; the gateway tests (static builds, a
//! BusyBox root) stay in their own binary, run by `scripts/test.sh`.
//!
//! The tests run in parallel threads: each takes its own scratch directory,
//! broker port, relay port and MQTT client ids from `support`.

#[path = "../support/mod.rs"]
mod support;

mod bounds;
mod brokers;
mod camera_fixture;
mod cli;
mod device_side;
mod durability;
mod edges;
mod failover;
mod fleet;
mod hardening;
mod held;
mod local_users;
mod operate;
mod operations;
mod operator;
mod operator_safety;
mod outage;
mod publish;
mod rejections;
mod reload;
mod secrets;
mod security;
mod stress;
mod systemd;
mod unix_socket;
mod watchdog;
