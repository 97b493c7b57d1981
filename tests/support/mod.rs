//! Shared fixtures for the integration tests (tests/it), the gateway tests
//! (tests/gateway) and the benchmark (benches/relay.rs), one module per thing
//! they start or read: a real mosquitto (`broker`), a scriptable misbehaving
//! one (`fake_broker`), RabbitMQ (`rabbit`), the relay (`relay`, `binary`),
//! simulated cameras (`camera`), MQTT subscribers and publishers (`mqtt`),
//! backend connections (`backend`), certificates (`certs`), another local
//! user (`local_users`), scratch files and a tmpfs (`files`), systemd's
//! notification socket (`notify`), a forwarder that cuts connections
//! (`proxy`), and ports and processes seen from /proc (`ports`, `process`).
//! Every process and thread they start ends on drop.
//!
//! Tests run in parallel threads of one process and wait on what the relay
//! reports (its log lines, its files, the broker's deliveries), never on a
//! guess of how long something takes: [`WAIT`] bounds each wait. A test
//! whose prerequisite is missing fails with the reason ([`require`]).
#![allow(dead_code)]

/// Runs each of the named tests (`fn name(protocol: &str)`) on each MQTT
/// version the device link speaks (issue 21), as `on_5::name` and
/// `on_3_1_1::name`: mosquitto takes both.
#[allow(unused_macros)]
macro_rules! on_each_version {
    ($($name:ident),* $(,)?) => {
        mod on_5 {
            $( #[test] fn $name() { super::$name("5") } )*
        }
        mod on_3_1_1 {
            $( #[test] fn $name() { super::$name("3.1.1") } )*
        }
    };
}

pub mod backend;
pub mod binary;
pub mod broker;
pub mod camera;
pub mod certs;
pub mod commands;
pub mod fake_broker;
pub mod files;
pub mod local_users;
pub mod mqtt;
pub mod notify;
pub mod ports;
pub mod prerequisites;
pub mod process;
pub mod proxy;
pub mod rabbit;

pub mod relay;
pub mod tools;
pub mod wait;

// What nearly every test uses, by its name alone (the benchmark and the
// gateway tests use a few of them).
#[allow(unused_imports)]
pub use self::{
    backend::*, binary::*, broker::*, commands::*, files::*, mqtt::*, ports::*, prerequisites::*,
    process::*, proxy::*, relay::*, wait::*,
};
