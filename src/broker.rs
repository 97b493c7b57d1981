//! The MQTT event-loop thread: the only thread that polls rumqttc's
//! `Connection`. It keeps the broker connection (reconnecting with a sleeping
//! backoff of 1 s doubling to 30 s, reset on ConnAck), subscribes to the
//! heartbeat and reply topics after every ConnAck, records heartbeats in the
//! device table, routes device replies to the backend holding the unit's
//! route, rebuilds a connection that stalls with work pending, and reports
//! what the publisher needs to know as [`LinkEvent`]s on a bounded channel.
//! It never blocks on a backend: replies go through `Outbox::offer`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use rumqttc::{
    Client, Connection, ConnectionError, Event, MqttOptions, MqttState, Outgoing, Packet, QoS,
    Request,
};

use crate::config::{self, Config};
use crate::counters::Counters;
use crate::devices::{DeviceTable, Seen};
use crate::error::Error;
use crate::heartbeat;
use crate::publisher::WINDOW;
use crate::redact;
use crate::routes::ReplyRoutes;
use crate::shutdown::Stop;
use crate::tls;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the loop keeps polling after the publisher is done, to send DISCONNECT.
const STOP_LINGER: Duration = Duration::from_secs(2);
/// Connected, commands in flight, and no publish written or acknowledged for
/// this long: the client is stalled (rumqttc #1014) and the connection is rebuilt.
pub const STALL_LIMIT: Duration = Duration::from_secs(20);

/// State the event loop and the publisher share, beyond the event channel.
#[derive(Default)]
pub struct LinkShared {
    /// Commands the publisher has in flight: work the watchdog expects progress on.
    pub in_flight: AtomicUsize,
    /// Open while connected. The publisher holds it while handing commands to
    /// the client, the event loop while closing it on a lost link, so every
    /// command handed over before the close is counted as drained and none is
    /// handed after it: nothing stale can overtake the resends.
    pub gate: Mutex<bool>,
}

impl LinkShared {
    pub fn gate(&self) -> std::sync::MutexGuard<'_, bool> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the publisher learns from the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// ConnAck: a fresh session; everything unacknowledged must be handed out again.
    Up,
    /// The connection dropped; `drained` handed requests were still queued in the client and are gone.
    Down { drained: usize },
    /// `Outgoing::Publish(pkid)`: the oldest handed request went to the broker.
    Sent(u16),
    /// PUBACK for `pkid`.
    Acked(u16),
}

/// rumqttc options for `config`; reads the TLS files, so a bad one stops the start.
pub fn options(config: &Config) -> Result<MqttOptions, Error> {
    let mut opts = MqttOptions::new(config.client_id(), &config.mqtt_broker, config.mqtt_port);
    opts.set_keep_alive(Duration::from_secs(config.mqtt_keepalive));
    opts.set_clean_session(true);
    opts.set_inflight(PACKET_IDS);
    // The default 10 KiB limit would turn a larger command into a connection
    // error, replayed forever. Leave room for the topic and the fixed header.
    let outgoing = config.max_message_bytes + 64 * 1024;
    // Device messages share the connection: one larger than this (a retained
    // one, replayed on every reconnect) would break the link each time.
    let incoming = outgoing.max(INCOMING_LIMIT);
    opts.set_max_packet_size(incoming, outgoing);
    if !config.mqtt_username.is_empty() {
        opts.set_credentials(config.mqtt_username.clone(), config.mqtt_password.clone());
    }
    opts.set_transport(tls::transport(config)?);
    Ok(opts)
}

pub const CLIENT_QUEUE: usize = WINDOW + 16;

/// Largest message accepted from the broker (heartbeats, replies).
const INCOMING_LIMIT: usize = 16 * 1024 * 1024;

/// rumqttc's packet-id space (its "inflight" setting). Twice the publisher's
/// window, so that a packet id comes round again only long after its publish
/// was acknowledged, even when subscriptions take ids or the broker acks
/// somewhat out of order: no collision, no collision stall (rumqttc #1014).
const PACKET_IDS: u16 = 2 * WINDOW as u16;

pub struct BrokerLink {
    pub connection: Connection,
    /// A clone used only for `try_subscribe` and `try_disconnect`, which never block this thread.
    pub client: Client,
    pub events: Sender<LinkEvent>,
    pub routes: ReplyRoutes,
    pub counters: Arc<Counters>,
    pub config: Arc<Config>,
    pub devices: Arc<Mutex<DeviceTable>>,
    pub shared: Arc<LinkShared>,
    pub stop: Stop,
}

/// Connection state as logged: every change once, not every attempt.
#[derive(PartialEq)]
enum State {
    Starting,
    Connected,
    Down(String),
}

impl BrokerLink {
    pub fn run(mut self) {
        let broker = format!("{}:{}", self.config.mqtt_broker, self.config.mqtt_port);
        let mut state = State::Starting;
        let mut backoff = BACKOFF_MIN;
        let mut stop_seen: Option<Instant> = None;
        let mut progress = Instant::now();
        loop {
            if self.stop.is_set() {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if state != State::Connected || since.elapsed() > STOP_LINGER {
                    break;
                }
            }
            let polled = if stop_seen.is_some() {
                // Cancelling a poll is only acceptable once we are leaving anyway.
                match self.connection.recv_timeout(Duration::from_millis(250)) {
                    Ok(r) => r,
                    Err(rumqttc::RecvTimeoutError::Timeout) => continue,
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
            } else if state == State::Connected && self.shared.in_flight.load(Ordering::Relaxed) > 0
            {
                // Work in flight: wake at the stall deadline even if nothing happens.
                // A poll is only cancelled when nothing moved for that long, so
                // never in the middle of a busy write.
                let left =
                    STALL_LIMIT.saturating_sub(progress.elapsed()) + Duration::from_millis(100);
                match self.connection.recv_timeout(left) {
                    Ok(r) => r,
                    Err(rumqttc::RecvTimeoutError::Timeout) => {
                        self.watchdog(&broker, &mut state, &mut progress);
                        continue;
                    }
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // Idle: block until the next event; never cancel a poll mid-write.
                match self.connection.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            match polled {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    self.counters
                        .broker_connected
                        .store(false, Ordering::Relaxed);
                    log::info!("disconnected from broker {broker}");
                    break;
                }
                Ok(event) => {
                    match event {
                        Event::Incoming(Packet::ConnAck(_)) => {
                            log::info!("connected to broker {broker}");
                            self.counters
                                .broker_connected
                                .store(true, Ordering::Relaxed);
                            *self.shared.gate() = true;
                            state = State::Connected;
                            backoff = BACKOFF_MIN;
                            progress = Instant::now();
                            self.subscribe();
                        }
                        Event::Outgoing(Outgoing::Publish(_))
                        | Event::Incoming(Packet::PubAck(_)) => progress = Instant::now(),
                        _ => {}
                    }
                    self.handle(event);
                    self.watchdog(&broker, &mut state, &mut progress);
                }
                Err(e) => {
                    self.link_lost();
                    let reason = describe(&e);
                    // Refused logins and failed handshakes need a human; an absent broker does not.
                    let needs_human = matches!(
                        e,
                        ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
                    );
                    let unchanged = matches!(&state, State::Down(previous) if *previous == reason);
                    if unchanged {
                        log::debug!(
                            "broker {broker} still unreachable: {reason}; next try in {} s",
                            backoff.as_secs()
                        );
                    } else if needs_human {
                        log::error!(
                            "broker {broker} refused the connection: {reason}; check credentials \
                             and certificates; retrying in {} s (backoff doubling up to {} s)",
                            backoff.as_secs(),
                            BACKOFF_MAX.as_secs()
                        );
                    } else if state == State::Connected {
                        log::warn!(
                            "lost connection to broker {broker}: {reason}; retrying in {} s",
                            backoff.as_secs()
                        );
                    } else {
                        log::warn!(
                            "cannot connect to broker {broker}: {reason}; retrying in {} s \
                             (backoff doubling up to {} s)",
                            backoff.as_secs(),
                            BACKOFF_MAX.as_secs()
                        );
                    }
                    state = State::Down(reason);
                    if self.stop.sleep(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        log::debug!("broker event loop stopped");
    }

    /// Rebuilds the connection when it is up, commands are in flight and
    /// nothing moved for longer than [`STALL_LIMIT`].
    fn watchdog(&mut self, broker: &str, state: &mut State, progress: &mut Instant) {
        let in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        if *state != State::Connected || !stalled(in_flight, progress.elapsed(), STALL_LIMIT) {
            return;
        }
        log::warn!(
            "broker {broker}: no publish written or acknowledged for {} s with {in_flight} \
             commands in flight: rebuilding the connection",
            progress.elapsed().as_secs()
        );
        // Drop the connection as a network error would, then start afresh.
        self.connection.eventloop.clean();
        self.link_lost();
        *state = State::Down("rebuilt after a stall".into());
        *progress = Instant::now();
    }

    /// The connection is gone (rumqttc has already moved what it held into
    /// `pending`). Report it to the publisher and reset rumqttc's session state.
    fn link_lost(&mut self) {
        self.counters
            .broker_connected
            .store(false, Ordering::Relaxed);
        let shared = Arc::clone(&self.shared);
        let mut gate = shared.gate();
        *gate = false;
        let eventloop = &mut self.connection.eventloop;
        // Anything handed over since rumqttc drained its queue joins `pending` now.
        eventloop.clean();
        // Events rumqttc buffered before the failure still happened: report them first.
        let leftovers: Vec<Event> = eventloop.state.events.drain(..).collect();
        // Requests still queued (pkid 0) were drained into `pending`, which a new
        // session clears anyway: tell the publisher how many, and clear it here so
        // the publisher alone decides what is sent again.
        // A publish parked on a packet-id collision was taken from the queue
        // before those and never written: it is lost with the state, too.
        let drained = eventloop
            .pending
            .iter()
            .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
            .count()
            + usize::from(eventloop.state.collision.is_some());
        eventloop.pending.clear();
        // A fresh state, as for any clean session: no stale packet ids or
        // collision left to stall the next connection (rumqttc #1014, #1056).
        eventloop.state = MqttState::new(PACKET_IDS, false);
        drop(gate);
        for event in leftovers {
            self.handle(event);
        }
        let _ = self.events.send(LinkEvent::Down { drained });
    }

    fn subscribe(&self) {
        let subs = [
            (&self.config.heartbeat_topic, QoS::AtMostOnce),
            (&self.config.reply_topic, QoS::AtLeastOnce),
        ];
        for (topic, qos) in subs {
            if let Err(e) = self.client.try_subscribe(topic.as_str(), qos) {
                log::error!("cannot subscribe to {topic}: {e}");
            }
        }
    }

    fn handle(&self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                let _ = self.events.send(LinkEvent::Up);
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let _ = self.events.send(LinkEvent::Sent(pkid));
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                log::warn!(
                    "publish waits for packet id {pkid} to be acknowledged (the broker acknowledges out of order)"
                );
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let _ = self.events.send(LinkEvent::Acked(ack.pkid));
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                for code in &ack.return_codes {
                    if let rumqttc::SubscribeReasonCode::Failure = code {
                        log::error!("the broker refused a subscription (check its ACL)");
                    }
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                self.on_message(&publish.topic, &publish.payload)
            }
            _ => {}
        }
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "message on {}: {}",
                redact::printable(topic),
                redact::payload(payload)
            );
        }
        if let Some(raw_unit) = config::plus_level(&self.config.reply_topic, topic) {
            // Routes exist only for valid units; the printable form is for the log.
            let unit = redact::printable(raw_unit);
            match self.routes.route(raw_unit) {
                Some(outbox) => {
                    if outbox.offer("device reply", payload.to_vec()) {
                        Counters::add(&self.counters.replies_routed);
                        log::info!("reply from unit {unit} -> backend {}", outbox.peer());
                    } else {
                        Counters::add(&self.counters.replies_dropped);
                    }
                }
                None => {
                    Counters::add(&self.counters.replies_dropped);
                    log::warn!(
                        "reply from unit {unit} has no backend route (no SCS/UDS pending): dropped"
                    );
                }
            }
        } else if let Some(device) = config::plus_level(&self.config.heartbeat_topic, topic) {
            self.on_heartbeat(&redact::printable(device), payload);
        } else {
            log::debug!(
                "message on unexpected topic {}: ignored",
                redact::printable(topic)
            );
        }
    }
}

impl BrokerLink {
    fn on_heartbeat(&self, device: &str, payload: &[u8]) {
        let status = match heartbeat::parse(payload) {
            Ok(status) => status,
            Err(why) => {
                log::warn!("odd heartbeat from device {device} ignored: {why}");
                return;
            }
        };
        log::info!("heartbeat {device}: {}", status.summary());
        let seen = self
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(device, status, Instant::now(), SystemTime::now());
        match seen {
            Seen::New => log::info!("device {device} online (first heartbeat since start)"),
            Seen::BackOnline => log::info!("device {device} is back online"),
            Seen::Again => {}
        }
    }
}

/// The watchdog's rule: work is pending and nothing moved for longer than `limit`.
pub fn stalled(in_flight: usize, since_progress: Duration, limit: Duration) -> bool {
    in_flight > 0 && since_progress > limit
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => io.to_string(),
        ConnectionError::ConnectionRefused(code) => format!("connection refused: {code:?}"),
        ConnectionError::Tls(tls) => format!("TLS: {tls}"),
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_needs_work_and_silence_past_the_limit() {
        let limit = Duration::from_secs(20);
        assert!(
            !stalled(0, Duration::from_secs(3600), limit),
            "idle is not stalled"
        );
        assert!(
            !stalled(5, limit, limit),
            "exactly the limit is not yet a stall"
        );
        assert!(stalled(5, limit + Duration::from_millis(1), limit));
    }
}
