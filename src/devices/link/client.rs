//! The device link's MQTT client: every setting the relay gives rumqttc,
//! each said where it is set, and the one face ([`Session`], [`Polled`])
//! its MQTT 5 and 3.1.1 clients show the device link thread, its only
//! user. Subscribe only: commands go out on the relay's own link
//! (`mqtt/publish_link.rs`). Read from rumqttc 0.25.1's source, hence the
//! `~0.25.1` pin: re-read them before moving to another minor version.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::{self, MqttOptions};
use rumqttc::{NetworkOptions, RecvTimeoutError, SubscribeFilter, Transport, TryRecvError};

use crate::config::{Config, MqttProtocol};
use crate::mqtt::brokers::Broker;
use crate::ops::log_limit;
/// Largest device message the relay takes (heartbeats, replies). Announced
/// in CONNECT (MQTT 5), so the broker drops a larger message for this client
/// instead of sending it: one oversized retained heartbeat would otherwise
/// break the link at every subscribe. MQTT 3.1.1 has no such property:
/// there a larger message breaks the connection, the one thing 3.1.1 costs.
pub const MAX_DEVICE_MESSAGE: u32 = 1024 * 1024;

/// Outgoing packet ids: rumqttc allocates its table at the upper limit
/// (65,536 entries, about 16 MB by default); the link only subscribes.
pub const PACKET_IDS: u16 = 16;

/// How long the broker keeps the device link's session while it is away:
/// a broker or network hiccup, a relay restart or a watchdog replacing it
/// fit in it; a relay gone for good costs the broker nothing after it.
/// With clean start off, a stable client id and QoS 1 subscriptions (on
/// 3.1.1 clean session off, kept as long as the broker keeps sessions), a
/// heartbeat or reply a camera publishes meanwhile waits in the broker.
/// Subscriptions are still made again at every CONNACK: the broker may
/// have expired the session.
pub const SESSION_EXPIRY: u32 = 300;

/// Capacity of rumqttc's request channel: the link thread only queues
/// subscriptions and a disconnect, with `try_` calls that never block the
/// thread that polls the connection.
pub const REQUESTS: usize = 16;

/// The connection options for `broker` on MQTT 5.
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
    opts.set_network_options(nodelay());
    opts
}

/// `TCP_NODELAY` on (rumqttc's default is off): a device reply and the
/// PUBACK of a heartbeat go out at once instead of waiting on Nagle's
/// algorithm for the broker's delayed ACK. The connection timeout stays
/// rumqttc's 5 s. On 3.1.1 rumqttc takes these on the event loop rather
/// than in the options.
fn nodelay() -> NetworkOptions {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network
}

/// The connection options for `broker` on MQTT 3.1.1.
fn options_311(
    config: &Config,
    client_id: &str,
    broker: &Broker,
    transport: Transport,
) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(client_id, broker.host.clone(), broker.port);
    opts.set_keep_alive(config.mqtt_keepalive);
    opts.set_clean_session(false);
    let largest = MAX_DEVICE_MESSAGE as usize + 64 * 1024;
    opts.set_max_packet_size(largest, largest);
    opts.set_inflight(PACKET_IDS);
    if let Some(user) = &config.mqtt_username {
        let password = config.mqtt_password.clone().unwrap_or_default();
        opts.set_credentials(user.clone(), password);
    }
    opts.set_transport(transport);
    opts
}

/// The MQTT version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    /// As `MQTT_PROTOCOL`, the status file and the log name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// Which version to speak to each broker (`MQTT_PROTOCOL`): with `auto`,
/// MQTT 5 until a broker refuses it, then 3.1.1 for that broker once
/// 3.1.1 got a CONNACK there, for the rest of the run. Kept per broker,
/// not per place in the list, so a reload that reorders or replaces the
/// list keeps what was learned. Pure.
#[derive(Debug)]
pub struct Spoken {
    choice: MqttProtocol,
    /// Learned: brokers that speak only 3.1.1.
    learned: Vec<Broker>,
    /// 3.1.1 is being tried on these after a refusal of 5.
    trying: Vec<Broker>,
}

impl Spoken {
    pub fn new(choice: MqttProtocol) -> Spoken {
        Spoken {
            choice,
            learned: Vec::new(),
            trying: Vec::new(),
        }
    }

    /// The version to dial `broker` with.
    pub fn version(&self, broker: &Broker) -> Version {
        match self.choice {
            MqttProtocol::V5 => Version::V5,
            MqttProtocol::V311 => Version::V311,
            MqttProtocol::Auto if self.learned.contains(broker) || self.trying.contains(broker) => {
                Version::V311
            }
            MqttProtocol::Auto => Version::V5,
        }
    }

    /// `broker` failed an attempt on `version` before CONNACK in a way
    /// that may mean it does not speak it: true when 3.1.1 is to be tried
    /// now. A failed try of 3.1.1 goes back to 5.
    pub fn refused(&mut self, broker: &Broker, version: Version) -> bool {
        if self.choice != MqttProtocol::Auto || self.learned.contains(broker) {
            return false;
        }
        self.trying.retain(|b| b != broker);
        if version == Version::V5 {
            self.trying.push(broker.clone());
            return true;
        }
        false
    }

    /// `broker` sent CONNACK on `version`: true when that taught the link
    /// that this broker speaks only 3.1.1.
    pub fn connected(&mut self, broker: &Broker, version: Version) -> bool {
        let was_trying = self.trying.contains(broker);
        self.trying.retain(|b| b != broker);
        let learned = was_trying && version == Version::V311 && !self.learned.contains(broker);
        if learned {
            self.learned.push(broker.clone());
        }
        learned
    }
}

/// What one poll of a [`Session`] brought.
pub enum Polled {
    /// No event was ready (a wait ran out).
    Idle,
    /// An event the link does not act on (an outgoing packet, a ping).
    Nothing,
    /// The client's loop is gone.
    Ended,
    /// CONNACK, with the broker's Maximum Packet Size when it announced one
    /// (MQTT 5), and whether the broker kept the session (then messages it
    /// kept while the link was away come first).
    ConnAck {
        max_packet: Option<u32>,
        session_present: bool,
    },
    /// The SUBACK: `Some(codes)` when the broker refused a subscription.
    SubAck(Option<String>),
    Message {
        topic: String,
        payload: Vec<u8>,
        /// A retained message, sent because the link subscribed.
        retain: bool,
    },
    /// A connection error (the client dials again on the next poll).
    Failed {
        /// As logged, normalised ([`log_limit::failure_reason`]).
        why: String,
        /// The broker may not speak this version: it refused it, answered
        /// with something else than a CONNACK of it, or closed the
        /// connection at the CONNECT.
        version_refused: bool,
    },
}

/// One rumqttc client and its connection, on either version. One lives at
/// a time, on the device link thread's stack: the size of its larger
/// variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Session {
    V5(v5::Client, v5::Connection),
    V311(rumqttc::Client, rumqttc::Connection),
}

/// A clone of a session's client: queues a DISCONNECT from any thread,
/// which also wakes the device link thread waiting in the session's poll.
pub enum Goodbye {
    V5(v5::Client),
    V311(rumqttc::Client),
}

impl Goodbye {
    /// Queues the DISCONNECT without blocking (dropped if the queue is full:
    /// the poll is busy then, and sees the stop or the move itself).
    pub fn send(&self) {
        let _ = match self {
            Goodbye::V5(client) => client.try_disconnect().is_ok(),
            Goodbye::V311(client) => client.try_disconnect().is_ok(),
        };
    }
}

impl Session {
    pub fn new(
        config: &Config,
        client_id: &str,
        broker: &Broker,
        transport: Transport,
        version: Version,
    ) -> Session {
        match version {
            Version::V5 => {
                let (client, connection) =
                    v5::Client::new(options(config, client_id, broker, transport), REQUESTS);
                Session::V5(client, connection)
            }
            Version::V311 => {
                let (client, mut connection) = rumqttc::Client::new(
                    options_311(config, client_id, broker, transport),
                    REQUESTS,
                );
                connection.eventloop.set_network_options(nodelay());
                Session::V311(client, connection)
            }
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Session::V5(..) => Version::V5,
            Session::V311(..) => Version::V311,
        }
    }

    /// Waits up to `wait` for what the connection brings. rumqttc's polling
    /// never backs off and never ends by itself: the link thread sleeps
    /// between failed attempts and checks its stop signal itself.
    pub fn poll(&mut self, wait: Duration) -> Polled {
        match self {
            Session::V5(_, connection) => match connection.recv_timeout(wait) {
                Err(v5::RecvTimeoutError::Timeout) => Polled::Idle,
                Err(v5::RecvTimeoutError::Disconnected) => Polled::Ended,
                Ok(event) => from_v5(event),
            },
            Session::V311(_, connection) => match connection.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => Polled::Idle,
                Err(RecvTimeoutError::Disconnected) => Polled::Ended,
                Ok(event) => from_311(event),
            },
        }
    }

    /// What the connection holds ready now, without waiting: [`Polled::Idle`]
    /// when nothing is. Each call takes at most one event, so the caller
    /// asks only for what it will handle.
    pub fn try_poll(&mut self) -> Polled {
        match self {
            Session::V5(_, connection) => match connection.try_recv() {
                Err(v5::TryRecvError::Empty) => Polled::Idle,
                Err(v5::TryRecvError::Disconnected) => Polled::Ended,
                Ok(event) => from_v5(event),
            },
            Session::V311(_, connection) => match connection.try_recv() {
                Err(TryRecvError::Empty) => Polled::Idle,
                Err(TryRecvError::Disconnected) => Polled::Ended,
                Ok(event) => from_311(event),
            },
        }
    }

    /// One SUBSCRIBE for every filter at QoS 1, so one SUBACK says all
    /// are in place; queued without blocking the thread that polls.
    pub fn subscribe(&self, filters: &[&str]) -> Result<(), String> {
        match self {
            Session::V5(client, _) => client
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| Filter::new(*f, v5::mqttbytes::QoS::AtLeastOnce)),
                )
                .map_err(|e| e.to_string()),
            Session::V311(client, _) => client
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.to_string(), rumqttc::QoS::AtLeastOnce)),
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Publishes `payload` on `topic` at QoS 1, not retained, without
    /// blocking the thread that polls.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Session::V5(client, _) => client
                .try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string()),
            Session::V311(client, _) => client
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// A handle another thread may use to say goodbye for this session.
    pub fn goodbye(&self) -> Goodbye {
        match self {
            Session::V5(client, _) => Goodbye::V5(client.clone()),
            Session::V311(client, _) => Goodbye::V311(client.clone()),
        }
    }

    /// A clean goodbye: DISCONNECT, then poll until it is written (briefly).
    pub fn disconnect(&mut self) {
        let queued = match self {
            Session::V5(client, _) => client.try_disconnect().is_ok(),
            Session::V311(client, _) => client.try_disconnect().is_ok(),
        };
        if !queued {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let wait = Duration::from_millis(200);
            let sent = match self {
                Session::V5(_, c) => matches!(
                    c.recv_timeout(wait),
                    Ok(Ok(v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)))
                        | Ok(Err(_))
                        | Err(v5::RecvTimeoutError::Disconnected)
                ),
                Session::V311(_, c) => matches!(
                    c.recv_timeout(wait),
                    Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)))
                        | Ok(Err(_))
                        | Err(RecvTimeoutError::Disconnected)
                ),
            };
            if sent {
                return;
            }
        }
    }
}

fn from_v5(event: Result<v5::Event, v5::ConnectionError>) -> Polled {
    match event {
        Ok(v5::Event::Incoming(packet)) => polled_v5(packet),
        Ok(v5::Event::Outgoing(_)) => Polled::Nothing,
        Err(e) => failed_v5(&e),
    }
}

fn from_311(event: Result<rumqttc::Event, rumqttc::ConnectionError>) -> Polled {
    match event {
        Ok(rumqttc::Event::Incoming(packet)) => polled_311(packet),
        Ok(rumqttc::Event::Outgoing(_)) => Polled::Nothing,
        Err(e) => failed_311(&e),
    }
}

fn polled_v5(packet: Packet) -> Polled {
    match packet {
        Packet::ConnAck(ack) => Polled::ConnAck {
            max_packet: ack.properties.and_then(|p| p.max_packet_size),
            session_present: ack.session_present,
        },
        Packet::SubAck(ack) => {
            let refused = ack
                .return_codes
                .iter()
                .any(|c| !matches!(c, SubscribeReasonCode::Success(_)));
            Polled::SubAck(refused.then(|| format!("{:?}", ack.return_codes)))
        }
        Packet::Publish(publish) => Polled::Message {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: publish.payload.to_vec(),
            retain: publish.retain,
        },
        _ => Polled::Nothing,
    }
}

fn polled_311(packet: rumqttc::Packet) -> Polled {
    match packet {
        rumqttc::Packet::ConnAck(ack) => Polled::ConnAck {
            max_packet: None,
            session_present: ack.session_present,
        },
        rumqttc::Packet::SubAck(ack) => {
            let refused = ack
                .return_codes
                .iter()
                .any(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
            Polled::SubAck(refused.then(|| format!("{:?}", ack.return_codes)))
        }
        rumqttc::Packet::Publish(publish) => Polled::Message {
            topic: publish.topic,
            payload: publish.payload.to_vec(),
            retain: publish.retain,
        },
        _ => Polled::Nothing,
    }
}

/// A closed or reset connection at the CONNECT: how brokers that know no
/// MQTT 5 often answer it.
fn closed_at_connect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

fn failed_v5(e: &v5::ConnectionError) -> Polled {
    use v5::ConnectionError as E;
    let version_refused = match e {
        E::ConnectionRefused(
            ConnectReturnCode::UnsupportedProtocolVersion
            | ConnectReturnCode::RefusedProtocolVersion,
        ) => true,
        E::MqttState(_) | E::NotConnAck(_) => true,
        E::Io(io) => closed_at_connect(io),
        _ => false,
    };
    Polled::Failed {
        why: describe(e),
        version_refused,
    }
}

fn failed_311(e: &rumqttc::ConnectionError) -> Polled {
    use rumqttc::ConnectionError as E;
    let text = match e {
        E::Io(io) => io.to_string(),
        E::ConnectionRefused(code) => format!("connection refused: {code:?}"),
        E::Tls(tls) => format!("TLS: {tls}"),
        E::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    };
    let version_refused = match e {
        E::ConnectionRefused(rumqttc::ConnectReturnCode::RefusedProtocolVersion) => true,
        E::Io(io) => closed_at_connect(io),
        _ => false,
    };
    Polled::Failed {
        why: log_limit::failure_reason(&text),
        version_refused,
    }
}

/// A connection error as logged, normalised ([`log_limit::failure_reason`]):
/// the same failure gives the same text.
pub fn describe(e: &v5::ConnectionError) -> String {
    use v5::ConnectionError as E;
    let text = match e {
        E::Io(io) => io.to_string(),
        E::ConnectionRefused(code) => format!("connection refused: {code:?}"),
        E::Tls(tls) => format!("TLS: {tls}"),
        E::Timeout(_) => "connection timed out".into(),
        other => other.to_string(),
    };
    log_limit::failure_reason(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(host: &str) -> Broker {
        Broker {
            host: host.into(),
            port: 1883,
        }
    }

    #[test]
    fn auto_tries_3_1_1_after_a_refusal_of_5_and_remembers_it_per_broker() {
        let (a, b) = (broker("a"), broker("b"));
        let mut s = Spoken::new(MqttProtocol::Auto);
        assert_eq!(s.version(&a), Version::V5);
        assert!(s.refused(&a, Version::V5), "3.1.1 is tried next");
        assert_eq!(s.version(&a), Version::V311);
        assert_eq!(s.version(&b), Version::V5, "per broker");
        assert!(s.connected(&a, Version::V311), "learned");
        assert!(!s.refused(&a, Version::V311), "remembered: no going back");
        assert_eq!(s.version(&a), Version::V311);
        assert!(!s.connected(&a, Version::V311), "learned once");
        assert_eq!(
            s.version(&broker("new")),
            Version::V5,
            "a broker a reload added starts on 5"
        );
    }

    #[test]
    fn a_failed_try_of_3_1_1_goes_back_to_5() {
        let a = broker("a");
        let mut s = Spoken::new(MqttProtocol::Auto);
        assert!(s.refused(&a, Version::V5));
        assert!(!s.refused(&a, Version::V311));
        assert_eq!(s.version(&a), Version::V5);
        assert!(!s.connected(&a, Version::V5));
    }

    #[test]
    fn a_fixed_protocol_is_always_spoken() {
        let a = broker("a");
        let mut five = Spoken::new(MqttProtocol::V5);
        assert!(!five.refused(&a, Version::V5));
        assert_eq!(five.version(&a), Version::V5);
        let mut old = Spoken::new(MqttProtocol::V311);
        assert_eq!(old.version(&a), Version::V311);
        assert!(!old.connected(&a, Version::V311));
    }
}
