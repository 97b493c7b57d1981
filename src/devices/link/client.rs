//! Every setting the relay gives rumqttc, and why, in one place. rumqttc
//! only carries the device link (MQTT 5, subscribe only); commands travel on
//! the relay's own link (`publish_link.rs`). These facts were read from the
//! rumqttc 0.25.1 source, which is why Cargo.toml pins `~0.25.1`: re-read
//! them before moving to another minor version.
//!
//! - The outgoing packet-id table is allocated at its upper limit (65,536
//!   entries, about 16 MB by default); the link only subscribes, so
//!   [`PACKET_IDS`] is plenty.
//! - The maximum packet size is announced in CONNECT (MQTT 5), so the broker
//!   drops a larger message for this client instead of sending it; without
//!   it one oversized retained heartbeat would break the link on every
//!   subscribe.
//! - The session is kept for [`SESSION_EXPIRY`] (clean start off, a stable
//!   client id, QoS 1 subscriptions): a heartbeat or a reply a camera
//!   publishes while this link is away (a cut connection, a restart) waits
//!   in the broker and arrives when it is back. Subscriptions are still made
//!   again on every CONNACK: the broker may have expired the session.
//! - The request channel holds [`REQUESTS`] requests; the link thread only
//!   queues subscriptions and a disconnect, with `try_` calls that never
//!   block the thread that polls the connection.
//! - `TCP_NODELAY` is set (rumqttc's default is off): a device reply and
//!   the PUBACK of a heartbeat go out at once instead of waiting on Nagle's
//!   algorithm for the broker's delayed ACK. The connection timeout stays
//!   rumqttc's 5 s.
//! - Polling never backs off and never ends by itself: the link thread
//!   sleeps between failed attempts and checks its stop signal itself.

use rumqttc::v5::MqttOptions;
use rumqttc::{NetworkOptions, Transport};

use crate::config::Config;
use crate::mqtt::brokers::Broker;

/// Largest device message the relay takes (heartbeats, replies); the broker
/// drops larger ones for this connection.
pub const MAX_DEVICE_MESSAGE: u32 = 1024 * 1024;

/// Outgoing packet ids (see the module doc).
pub const PACKET_IDS: u16 = 16;

/// How long the broker keeps the device link's session while it is away:
/// a broker or network hiccup, a relay restart or a watchdog replacing it
/// fit in it; a relay gone for good costs the broker nothing after it.
pub const SESSION_EXPIRY: u32 = 300;

/// Capacity of rumqttc's request channel.
pub const REQUESTS: usize = 16;

/// The connection options for `broker`.
pub fn options(
    config: &Config,
    client_id: &str,
    broker: &Broker,
    transport: Transport,
) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    opts.set_keep_alive(config.mqtt_keepalive);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(SESSION_EXPIRY));
    opts.set_max_packet_size(Some(MAX_DEVICE_MESSAGE));
    opts.set_outgoing_inflight_upper_limit(PACKET_IDS);
    if let Some(user) = &config.mqtt_username {
        let password = config.mqtt_password.clone().unwrap_or_default();
        opts.set_credentials(user.clone(), password);
    }
    opts.set_transport(transport);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    opts.set_network_options(network);
    opts
}
