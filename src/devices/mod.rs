//! The device side: the device link (MQTT, through rumqttc) that receives
//! heartbeats and device replies, the heartbeat parser and the table of devices
//! seen, and the periodic summary line that stands for the heartbeats in
//! the info log.

pub(crate) mod heartbeat;
pub(crate) mod link;
pub(crate) mod registry;
pub(crate) mod summary;
pub(crate) mod table;
