//! The integration tests, one binary: each module is what a user of the
//! relay checks, driven through the real binary against a real mosquitto
//! (see `support`): what a backend sends and reads back (`backend`), that
//! nothing accepted is lost on the way to the broker and the camera
//! (`delivery`), heartbeats and replies (`device_side`), the links to the
//! broker (`broker_links`), running it on a gateway (`operations`), and
//! safety among hostile peers and other local users (`security`). Linking
//! the crate and the support code once, instead of once per area, is what
//! keeps `cargo test` quick; the gateway tests (static builds, a BusyBox
//! root) stay in their own binary, run by `scripts/test.sh`.
//!
//! The tests run in parallel threads: each takes its own scratch directory,
//! broker port, relay port and MQTT client ids from `support`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod backend;
mod broker_links;
mod delivery;
mod device_side;
mod operations;
mod security;
