//! The broker links: the MQTT 3.1.1 codec, one connection's byte stream (plain
//! or TLS), the broker list, the pure policies of dialing, backoff and
//! keepalive, and the publish link thread that keeps the connection commands
//! go out on.

pub(crate) mod backoff;
pub(crate) mod brokers;
pub(crate) mod codec;
pub(crate) mod connect;
pub(crate) mod dialing;
pub(crate) mod keepalive;
pub(crate) mod link_messages;
pub(crate) mod probe;
pub(crate) mod publish_link;
pub mod tls;
pub(crate) mod wire;

/// The decoder of what a broker sends the publish link, public for the fuzz
/// target (`fuzz/`); the encoders stay inside the crate.
pub use codec::{decode, DecodeError, Incoming, MAX_INCOMING};
