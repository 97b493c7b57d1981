//! The broker links: the MQTT 3.1.1 codec, one connection's byte stream
//! (plain or TLS), the broker list and the pure policies of dialing, backoff
//! and keepalive, dialing one broker (`connect`), the publish link thread
//! and what it and the publisher tell each other (`link_messages`).

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
