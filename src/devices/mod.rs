//! The device side: the device link (MQTT, through rumqttc) that receives
//! heartbeats and device replies, the heartbeat parser and the table of devices
//! seen.

pub(crate) mod heartbeat;
pub(crate) mod link;
pub(crate) mod table;
