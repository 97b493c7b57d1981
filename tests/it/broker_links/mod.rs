//! The links to the broker: a list of brokers failed over and back, brokers
//! that misbehave, the device link on either MQTT version, TLS and
//! passwords, and the relay's own retained state topic.

mod device_link;
mod failover;
mod misbehaving;
mod reloaded_list;
mod secured;
mod state_topic;
