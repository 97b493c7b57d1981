//! The device link thread: the MQTT connection (client id `…-sub`, MQTT 5
//! through rumqttc) that subscribes to the heartbeat and reply topics. It
//! records heartbeats in the device table and routes device replies to the
//! backend holding the unit's route; it never blocks on a backend (replies
//! go through `Outbox::offer`). It follows the publish link to whichever
//! broker of the list that one uses.
//!
//! Device traffic can never stop or duplicate commands: commands travel on
//! the publish link's own connection. And a message larger than the relay
//! takes costs only that message: the CONNECT announces a maximum packet
//! size ([`client::MAX_DEVICE_MESSAGE`], MQTT 5; every rumqttc setting is in
//! `device_link/client.rs`), and the broker drops what is
//! larger instead of sending it (MQTT 3.1.1 has no such property: a retained
//! 17 MB heartbeat broke the link on every subscribe, forever). A link that
//! dies right after its CONNACK backs off like one that cannot connect
//! (the backoff the publish link uses too: `mqtt/backoff.rs`).
//! Connection failures are logged as the publish link's are (`log_limit.rs`:
//! once per kind and broker, again after a "connected" line), at warn: a
//! failure that needs a human (certificate, credentials) is the publish
//! link's error line already.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, ConnectionError, Event, RecvTimeoutError, TryRecvError};
use rumqttc::Transport;

use crate::backend::routes::ReplyRoutes;
use crate::config::{self, Config};
use crate::delivery::presence::Presence;
use crate::devices::heartbeat;
use crate::devices::table::{DeviceTable, Seen};
use crate::mqtt::backoff::Backoff;
use crate::mqtt::brokers::{Broker, InUse};
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Failures, Kind};
use crate::ops::redact;
use crate::ops::shutdown::Stop;
use crate::ops::sync::lock;

mod client;

/// How often a wait on the connection looks at the stop signal and the broker in use.
const TICK: Duration = Duration::from_secs(1);
/// The wait while connecting: longer than rumqttc's own 5 s connection
/// timeout, because a wait that runs out drops the connection attempt
/// under way (a broker whose CONNACK takes over a second, over LTE and TLS,
/// was otherwise never reached, silently, one new attempt a second).
const CONNECTING: Duration = Duration::from_secs(6);

pub struct DeviceLink {
    pub config: Arc<Config>,
    pub brokers: Vec<Broker>,
    pub client_id: String,
    pub transport: Transport,
    pub routes: ReplyRoutes,
    pub counters: Arc<Counters>,
    pub devices: Arc<Mutex<DeviceTable>>,
    /// Told when a camera comes online: the publisher releases what it holds for it.
    pub presence: Arc<Presence>,
    /// The broker the publish link is on: this link follows it.
    pub broker_in_use: Arc<InUse>,
    pub stop: Stop,
}

/// Most events handled in one wake-up before the stop signal is looked at again.
const DRAIN_MAX: usize = 1024;

/// A wait on the connection that brought no event.
enum Waited {
    /// Nothing (more) for now.
    Nothing,
    /// rumqttc's request channel closed: this client is done.
    Gone,
}

impl From<RecvTimeoutError> for Waited {
    fn from(e: RecvTimeoutError) -> Waited {
        match e {
            RecvTimeoutError::Timeout => Waited::Nothing,
            RecvTimeoutError::Disconnected => Waited::Gone,
        }
    }
}

impl From<TryRecvError> for Waited {
    fn from(e: TryRecvError) -> Waited {
        match e {
            TryRecvError::Empty => Waited::Nothing,
            TryRecvError::Disconnected => Waited::Gone,
        }
    }
}

/// How the current connection ended.
enum Ended {
    Stopped,
    /// The publish link moved to another broker: follow it.
    Moved,
    Lost,
}

/// What the link remembers across connections: the backoff and which
/// failures were already logged.
#[derive(Default)]
struct Retries {
    backoff: Backoff,
    failures: Failures,
}

impl DeviceLink {
    pub fn run(self) {
        let mut retries = Retries::default();
        while !self.stop.is_set() {
            let index = self.broker_in_use.get() % self.brokers.len();
            let broker = &self.brokers[index];
            let (client, mut connection) = Client::new(
                client::options(
                    &self.config,
                    &self.client_id,
                    broker,
                    self.transport.clone(),
                ),
                client::REQUESTS,
            );
            match self.serve(index, &client, &mut connection, &mut retries) {
                Ended::Stopped => {
                    disconnect(&client, &mut connection);
                    break;
                }
                Ended::Moved => disconnect(&client, &mut connection),
                Ended::Lost => {}
            }
        }
        log::debug!("device link stopped");
    }

    /// Polls one rumqttc client for broker `index` until the relay stops,
    /// the publish link moves to another broker, or the client gives up.
    fn serve(
        &self,
        index: usize,
        client: &Client,
        connection: &mut Connection,
        retries: &mut Retries,
    ) -> Ended {
        let broker = &self.brokers[index];
        let mut up_since: Option<Instant> = None;
        loop {
            if self.stop.is_set() {
                return Ended::Stopped;
            }
            if self.broker_in_use.get() % self.brokers.len() != index {
                return Ended::Moved;
            }
            let wait = if up_since.is_some() { TICK } else { CONNECTING };
            let mut polled = connection.recv_timeout(wait).map_err(Waited::from);
            // Everything already read or readable is handled in this wake-up:
            // at a fleet's pace a heartbeat waits behind another most of the time.
            for handled in 1.. {
                let event = match polled {
                    Err(Waited::Nothing) => break,
                    Err(Waited::Gone) => return Ended::Lost,
                    Ok(event) => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up_since = Some(Instant::now());
                        self.connected(broker, client, retries);
                    }
                    Ok(event) => self.handle(event),
                    Err(e) => {
                        if self.failed(broker, &e, up_since.take(), retries) {
                            return Ended::Stopped;
                        }
                        break;
                    }
                }
                // Asked for only when it will be handled: an event taken
                // from rumqttc and then dropped would be a lost message.
                if handled == DRAIN_MAX {
                    break;
                }
                polled = connection.try_recv().map_err(Waited::from);
            }
        }
    }

    /// CONNACK: one SUBSCRIBE for both topics, so one SUBACK says both are in place.
    fn connected(&self, broker: &Broker, client: &Client, retries: &mut Retries) {
        log::info!("device link connected to broker {broker}");
        retries.failures.connected();
        let filters = [
            Filter::new(self.config.heartbeat_topic.as_str(), QoS::AtLeastOnce),
            Filter::new(self.config.reply_topic.as_str(), QoS::AtLeastOnce),
        ];
        if let Err(e) = client.try_subscribe_many(filters) {
            log::error!("device link cannot subscribe: {e}");
        }
    }

    /// A connection error (rumqttc reconnects on the next poll): logs it
    /// once per kind and backs off. True when the relay stopped meanwhile.
    fn failed(
        &self,
        broker: &Broker,
        e: &ConnectionError,
        up_since: Option<Instant>,
        retries: &mut Retries,
    ) -> bool {
        let why = describe(e);
        let backoff = &mut retries.backoff;
        if retries.failures.first_of_kind(&broker.to_string(), &why) {
            log::warn!(
                "device link to broker {broker}: {why}; retrying in {} s",
                backoff.upcoming().as_secs()
            );
        } else {
            log::debug!(
                "device link to broker {broker} still unreachable: {why}; retrying in {} s",
                backoff.upcoming().as_secs()
            );
        }
        // A link that was up for a while earns a fresh backoff; one that
        // died right after CONNACK does not.
        if let Some(t) = up_since {
            backoff.link_ended(t.elapsed());
        }
        self.stop.sleep(backoff.wait())
    }

    fn handle(&self, event: Event) {
        match event {
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| !matches!(c, SubscribeReasonCode::Success(_)));
                if refused {
                    log::error!(
                        "the broker refused a subscription (check its ACL): {:?}",
                        ack.return_codes
                    );
                } else {
                    // Tests and operators wait for this line: from here on no
                    // heartbeat or reply on these topics is missed.
                    log::info!(
                        "device link subscribed to {} and {}",
                        self.config.heartbeat_topic,
                        self.config.reply_topic
                    );
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                self.on_message(&topic, &publish.payload);
            }
            _ => {}
        }
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "message on {}: {}",
                log_limit::cut(&redact::printable(topic)),
                log_limit::cut(&redact::payload(payload))
            );
        }
        if let Some(raw_unit) = config::plus_level(&self.config.reply_topic, topic) {
            // Routes exist only for valid units; the shown form is for the log.
            match self.routes.route(raw_unit) {
                Some(outbox) => {
                    log::info!(
                        "reply from unit {} -> backend {}",
                        heartbeat::shown(raw_unit),
                        outbox.peer()
                    );
                    // Logged before the backend can read it.
                    log::logger().flush();
                    if outbox.offer("device reply", payload.to_vec()) {
                        Counters::add(&self.counters.replies_routed);
                    } else {
                        Counters::add(&self.counters.replies_dropped);
                    }
                }
                None => {
                    // Several relays on one broker all see every reply; only
                    // the one holding the route writes it. Counted, not warned.
                    Counters::add(&self.counters.replies_dropped);
                    if log_limit::allow(Kind::UnroutedReply) {
                        log::debug!(
                            "reply from unit {} has no backend route here (no SCS/UDS pending): dropped",
                            heartbeat::shown(raw_unit)
                        );
                    }
                }
            }
        } else if let Some(device) = config::plus_level(&self.config.heartbeat_topic, topic) {
            self.on_heartbeat(&heartbeat::shown_ref(device), payload);
        } else {
            log::debug!(
                "message on unexpected topic {}: ignored",
                log_limit::cut(&redact::printable(topic))
            );
        }
    }

    fn on_heartbeat(&self, device: &str, payload: &[u8]) {
        let status = match heartbeat::parse(payload) {
            Ok(status) => status,
            Err(why) => {
                if log_limit::allow(Kind::OddHeartbeat) {
                    log::warn!(
                        "odd heartbeat from device {device} ignored: {}",
                        log_limit::cut(&why)
                    );
                }
                return;
            }
        };
        Counters::add(&self.counters.heartbeats);
        // One line per heartbeat is debug: at info a fleet's heartbeats would
        // rotate the log within a minute (the summary line sums them up).
        if log::log_enabled!(log::Level::Debug) {
            log::debug!("heartbeat {device}: {}", status.summary());
        }
        let seen = lock(&self.devices).record(device, status, Instant::now(), SystemTime::now());
        let change = match seen {
            Seen::New => "online (first heartbeat since start)",
            Seen::BackOnline => "is back online",
            Seen::Again => return,
        };
        if log_limit::allow(Kind::DeviceOnline) {
            log::info!("device {device} {change}");
        }
        self.presence.report(device, true);
    }
}

/// A clean goodbye: DISCONNECT, then poll until it is written (briefly).
fn disconnect(client: &Client, connection: &mut Connection) {
    if client.try_disconnect().is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => return,
            Err(RecvTimeoutError::Disconnected) => return,
            _ => {}
        }
    }
}

/// A connection error as logged, normalised ([`log_limit::failure_reason`]):
/// the same failure gives the same text.
fn describe(e: &ConnectionError) -> String {
    let text = match e {
        ConnectionError::Io(io) => io.to_string(),
        ConnectionError::ConnectionRefused(code) => format!("connection refused: {code:?}"),
        ConnectionError::Tls(tls) => format!("TLS: {tls}"),
        ConnectionError::Timeout(_) => "connection timed out".into(),
        other => other.to_string(),
    };
    log_limit::failure_reason(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_described_without_what_varies() {
        let expired = |t: u64| {
            ConnectionError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "invalid peer certificate: certificate expired: verification time {t} (UNIX), \
                     but certificate is not valid after 1795900000 ({} seconds ago)",
                    t - 1795900000
                ),
            ))
        };
        assert_eq!(
            describe(&expired(1795950000)),
            describe(&expired(1795950009))
        );
        assert_eq!(
            describe(&expired(1795950000)),
            "invalid peer certificate: certificate expired"
        );
        let refused = ConnectionError::Io(std::io::Error::from_raw_os_error(111));
        assert_eq!(describe(&refused), "Connection refused (os error 111)");
        let mut failures = Failures::default();
        let broker = "127.0.0.1:8883";
        let logged = [
            expired(1795950000),
            expired(1795950001),
            expired(1795950003),
        ]
        .iter()
        .filter(|e| failures.first_of_kind(broker, &describe(e)))
        .count();
        assert_eq!(logged, 1);
    }

    fn link() -> DeviceLink {
        let config = Config::default();
        DeviceLink {
            brokers: config.brokers(),
            routes: ReplyRoutes::new(config.max_devices),
            devices: Arc::new(Mutex::new(DeviceTable::new(config.max_devices))),
            config: Arc::new(config),
            client_id: "gw-sub".into(),
            transport: Transport::tcp(),
            counters: Arc::new(Counters::default()),
            presence: Arc::default(),
            broker_in_use: Arc::default(),
            stop: Stop::new(),
        }
    }

    fn count(link: &DeviceLink, counter: fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        counter(&link.counters).load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn a_reply_goes_to_the_backend_holding_the_units_route_and_only_there() {
        let link = link();
        let (outbox, _woken) =
            crate::delivery::outbox::Outbox::new(1, "127.0.0.1:5000".parse().unwrap());
        link.routes.claim("cam1", &outbox);
        link.on_message("/device/ms500/cam1/socket_reply", br#"{"ok":1}"#);
        assert_eq!(outbox.take(), b"{\"ok\":1}\n");
        assert_eq!(count(&link, |c| &c.replies_routed), 1);
        link.on_message("/device/ms500/cam2/socket_reply", br#"{"ok":2}"#);
        assert!(outbox.is_empty(), "cam2 has no route here");
        assert_eq!(count(&link, |c| &c.replies_dropped), 1);
    }

    #[test]
    fn heartbeats_fill_the_device_table_and_other_topics_are_ignored() {
        let link = link();
        link.on_message("/device/ms500/cam1/online", br#"{"ip":"10.0.0.7"}"#);
        // (Odd heartbeats are left out: their log budget is global, and
        // log_limit's own test counts it.)
        link.on_message("/somewhere/else", b"{}");
        let table = link.devices.lock().unwrap().snapshot(10);
        assert_eq!(table.total, 1, "only the heartbeat counts");
        assert_eq!(table.shown[0].id, "cam1");
        assert_eq!(table.shown[0].status.ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(count(&link, |c| &c.replies_dropped), 0);
    }
}
