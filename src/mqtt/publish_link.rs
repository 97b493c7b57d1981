//! The publish link thread: keeps the MQTT connection commands are published
//! on (client id `…-pub`; it subscribes to nothing, so device traffic never
//! shares it). It connects to the brokers of `MQTT_BROKER` in turn
//! (`brokers.rs`), hands each new connection ([`Wire`]) to the publisher,
//! reads what the broker sends (PUBACKs, reported in batches; PINGRESPs),
//! pings every half keepalive, and drops a connection whose broker stopped
//! answering: nothing at all for 1.5 × `MQTT_KEEPALIVE`, or no PUBACK for as
//! long with commands in flight. Reports what the publisher needs as
//! [`LinkEvent`]s on a bounded channel; the publisher alone writes commands.
//!
//! Why not rumqttc here: its request path writes and flushes every publish
//! on its own and wakes two threads per event (measured: as much CPU per
//! command as the broker spends per message), it silently drops what was in
//! flight when a session is lost, and it cannot be moved to another broker
//! without editing its internals. The publish side of MQTT 3.1.1 is five
//! small packets (`mqtt.rs`); owning them lets the publisher write a batch
//! of commands with one system call and correlate PUBACKs by the packet ids
//! it assigned. rumqttc still carries the device side (`device_link.rs`).

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::mqtt::brokers::{Broker, Brokers, InUse, Next};
use crate::mqtt::codec::{self, Incoming};
use crate::mqtt::wire::Wire;
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Failures};
use crate::ops::shutdown::Stop;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A link that lived this long was a good one: the backoff starts over.
/// One that dies sooner (right after CONNACK) keeps backing off.
const STABLE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Probing the first broker must not hold up reading acknowledgements long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The retained messages of `STATE_TOPIC` for this run.
#[derive(Clone)]
pub struct StateMessages {
    pub topic: String,
    pub online: Vec<u8>,
    pub offline: Vec<u8>,
}

impl StateMessages {
    pub fn new(topic: String, client_id: &str, started: SystemTime) -> StateMessages {
        // The fields in the order the contract shows them.
        let message = |state: &str| {
            let quoted = |s: &str| serde_json::Value::from(s).to_string();
            format!(
                "{{\"state\":{},\"client_id\":{},\"version\":{},\"pid\":{},\"started\":{}}}",
                quoted(state),
                quoted(client_id),
                quoted(env!("CARGO_PKG_VERSION")),
                std::process::id(),
                quoted(&crate::ops::time::iso8601(started))
            )
            .into_bytes()
        };
        StateMessages {
            topic,
            online: message("online"),
            offline: message("offline"),
        }
    }
}

/// What the publisher learns from the publish link.
pub enum LinkEvent {
    /// A fresh session (clean): everything unacknowledged is published again on `wire`.
    Up(Wire),
    /// The connection is gone; what was in flight on it is unacknowledged.
    Down,
    /// PUBACKs, in the order they were read.
    Acked(Vec<u16>),
}

/// State the publish link shares with the publisher and the device link.
#[derive(Default)]
pub struct LinkShared {
    /// Commands the publisher has in flight: work the link expects PUBACKs for.
    pub in_flight: AtomicUsize,
    /// Position in the broker list of the broker in use (the device link follows it).
    pub broker_in_use: Arc<InUse>,
    /// The broker in use (or being tried), as `host:port`, for the status file.
    pub broker: Mutex<String>,
    /// Set once the publisher has sent DISCONNECT: the next close is expected.
    pub closing: AtomicBool,
    /// Why the publisher's last write on this connection failed (it then
    /// shuts the connection): the reason the link reports for the loss.
    pub write_failed: Mutex<Option<String>>,
}

/// Everything needed to open a connection to one broker of the list.
#[derive(Clone)]
pub struct Dialer {
    pub client_id: String,
    pub keepalive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<Arc<ClientConfig>>,
    /// Last will for this connection: (topic, message).
    pub will: Option<(String, Vec<u8>)>,
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectFailure {
    /// No TCP connection (nobody listens, no route, name unknown, timeout).
    Unreachable(String),
    /// The broker refused the connection (the CONNACK return code).
    Refused(u8),
    /// The TLS handshake failed (certificate, protocol).
    Tls(String),
    /// The broker answered with something that is not a CONNACK.
    Protocol(String),
}

impl ConnectFailure {
    /// Refused logins and failed handshakes need a human; an absent broker,
    /// or one that says it is unavailable for now (code 3), does not.
    fn needs_human(&self) -> bool {
        match self {
            ConnectFailure::Refused(code) => *code != 3,
            ConnectFailure::Tls(_) => true,
            ConnectFailure::Unreachable(_) | ConnectFailure::Protocol(_) => false,
        }
    }

    /// The reason as logged, normalised ([`log_limit::failure_reason`]).
    fn describe(&self) -> String {
        let text = match self {
            ConnectFailure::Unreachable(why) => why.clone(),
            ConnectFailure::Refused(code) => {
                format!("connection refused: {}", codec::refusal(*code))
            }
            ConnectFailure::Tls(why) => format!("TLS: {why}"),
            ConnectFailure::Protocol(why) => why.clone(),
        };
        log_limit::failure_reason(&text)
    }
}

impl Dialer {
    /// TCP (and TLS) connection, CONNECT, CONNACK; within `timeout` for each step.
    pub fn connect(
        &self,
        broker: &Broker,
        client_id: &str,
        will: bool,
        timeout: Duration,
    ) -> Result<Wire, ConnectFailure> {
        let socket =
            tcp_connect(broker, timeout).map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        let unreachable = |e: io::Error| ConnectFailure::Unreachable(e.to_string());
        socket
            .set_read_timeout(Some(timeout))
            .map_err(unreachable)?;
        socket
            .set_write_timeout(Some(timeout))
            .map_err(unreachable)?;
        let wire = match &self.tls {
            None => Wire::plain(socket).map_err(unreachable)?,
            Some(config) => {
                let name = ServerName::try_from(broker.host.clone()).map_err(|e| {
                    ConnectFailure::Tls(format!("{:?} is not a server name: {e}", broker.host))
                })?;
                let mut session = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| ConnectFailure::Tls(e.to_string()))?;
                let mut io = &socket;
                while session.is_handshaking() {
                    session.complete_io(&mut io).map_err(|e| match e.kind() {
                        ErrorKind::InvalidData => ConnectFailure::Tls(e.to_string()),
                        _ => ConnectFailure::Unreachable(e.to_string()),
                    })?;
                }
                Wire::tls(socket, session).map_err(unreachable)?
            }
        };
        let mut hello = Vec::with_capacity(128);
        codec::connect(
            &mut hello,
            &codec::Connect {
                client_id,
                keepalive_secs: u16::try_from(self.keepalive.as_secs()).unwrap_or(u16::MAX),
                username: self.username.as_deref(),
                password: self.password.as_deref(),
                will: self
                    .will
                    .as_ref()
                    .filter(|_| will)
                    .map(|(t, m)| (t.as_str(), m.as_slice())),
            },
        )
        .map_err(|e| ConnectFailure::Protocol(e.to_string()))?;
        wire.write_all(&hello).map_err(unreachable)?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        loop {
            let n = wire.read(&mut buf).map_err(|e| match e.kind() {
                ErrorKind::InvalidData => ConnectFailure::Tls(e.to_string()),
                ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                    ConnectFailure::Protocol("no CONNACK from the broker in time".into())
                }
                _ => ConnectFailure::Unreachable(e.to_string()),
            })?;
            if n == 0 {
                return Err(ConnectFailure::Unreachable(
                    "the broker closed the connection before CONNACK".into(),
                ));
            }
            got.extend_from_slice(&buf[..n]);
            match codec::decode(&got) {
                Ok(None) => continue,
                Ok(Some((Incoming::ConnAck { code: 0, .. }, _))) => return Ok(wire),
                Ok(Some((Incoming::ConnAck { code, .. }, _))) => {
                    return Err(ConnectFailure::Refused(code))
                }
                Ok(Some((other, _))) => {
                    return Err(ConnectFailure::Protocol(format!(
                        "expected CONNACK, got {other:?}"
                    )))
                }
                Err(e) => return Err(ConnectFailure::Protocol(e.to_string())),
            }
        }
    }
}

fn tcp_connect(broker: &Broker, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (broker.host.as_str(), broker.port)
        .to_socket_addrs()?
        .collect();
    let mut last = io::Error::new(ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// How a served connection ended.
enum Ended {
    /// The relay is stopping.
    Stopped,
    /// Lost, or dropped because the broker stopped answering.
    Lost(String),
    /// The first broker is healthy again: move back to it.
    Return,
}

pub struct PublishLink {
    pub brokers: Brokers,
    pub dialer: Dialer,
    pub events: Sender<LinkEvent>,
    pub shared: Arc<LinkShared>,
    pub counters: Arc<Counters>,
    pub stop: Stop,
    /// `STATE_TOPIC`: "online" published after each CONNACK.
    pub state: Option<StateMessages>,
}

impl PublishLink {
    pub fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        // Every change once, not every attempt (log_limit.rs).
        let mut failures = Failures::default();
        while !self.stop.is_set() {
            let broker = self.brokers.current().clone();
            self.shared.broker_in_use.set(self.brokers.index());
            *lock(&self.shared.broker) = broker.to_string();
            let client_id = self.dialer.client_id.clone();
            match self
                .dialer
                .connect(&broker, &client_id, true, CONNECT_TIMEOUT)
            {
                Ok(wire) => {
                    *lock(&self.shared.write_failed) = None;
                    if let Some(state) = &self.state {
                        // Retained, QoS 1, under the packet id the ledger never uses.
                        let mut online = Vec::new();
                        if let Err(e) = codec::publish(
                            &mut online,
                            &state.topic,
                            Some(codec::STATE_PKID),
                            true,
                            &state.online,
                        ) {
                            log::error!("cannot publish the online state: {e}");
                        }
                        if let Err(e) = wire.write_all(&online) {
                            log::debug!("cannot publish the online state: {e}");
                        }
                    }
                    log::info!("connected to broker {broker}");
                    failures.connected();
                    self.counters
                        .broker_connected
                        .store(true, Ordering::Relaxed);
                    self.counters.link_up();
                    let up_since = Instant::now();
                    let _ = self.events.send(LinkEvent::Up(wire.clone()));
                    let ended = self.serve(&wire);
                    wire.shut();
                    self.counters
                        .broker_connected
                        .store(false, Ordering::Relaxed);
                    self.counters.link_down();
                    let _ = self.events.send(LinkEvent::Down);
                    if up_since.elapsed() >= STABLE {
                        self.brokers.connected();
                        backoff = BACKOFF_MIN;
                    }
                    match ended {
                        Ended::Stopped => break,
                        Ended::Return => {
                            self.brokers.go_back();
                            log::info!(
                                "broker {} answers again: moving back to it from {broker}",
                                self.brokers.current()
                            );
                            continue;
                        }
                        Ended::Lost(why) => {
                            let why = log_limit::failure_reason(&why);
                            let next = self.brokers.failed();
                            let then = self.next_step(next, backoff);
                            // Always logged: it follows a "connected" line.
                            log::warn!("lost connection to broker {broker}: {why}; {then}");
                            failures.first_of_kind(&broker.to_string(), &why);
                            if self.pause(next, &mut backoff) {
                                break;
                            }
                        }
                    }
                }
                Err(failure) => {
                    let why = failure.describe();
                    let next = self.brokers.failed();
                    let then = self.next_step(next, backoff);
                    if !failures.first_of_kind(&broker.to_string(), &why) {
                        log::debug!("broker {broker} still unreachable: {why}; {then}");
                    } else if failure.needs_human() {
                        log::error!(
                            "broker {broker} refused the connection: {why}; check credentials \
                             and certificates; {then}"
                        );
                    } else {
                        log::warn!("cannot connect to broker {broker}: {why}; {then}");
                    }
                    if self.pause(next, &mut backoff) {
                        break;
                    }
                }
            }
        }
        self.counters
            .broker_connected
            .store(false, Ordering::Relaxed);
        log::debug!("publish link stopped");
    }

    /// What happens next, for the log line.
    fn next_step(&self, next: Next, backoff: Duration) -> String {
        match next {
            Next::TryNext => format!("trying broker {} now", self.brokers.current()),
            Next::Wait if self.brokers.len() > 1 => format!(
                "every broker failed; retrying {} in {} s (backoff doubling up to {} s)",
                self.brokers.current(),
                backoff.as_secs(),
                BACKOFF_MAX.as_secs()
            ),
            Next::Wait => format!(
                "retrying in {} s (backoff doubling up to {} s)",
                backoff.as_secs(),
                BACKOFF_MAX.as_secs()
            ),
        }
    }

    /// Waits before the next attempt when a whole round failed; true when stopping.
    fn pause(&self, next: Next, backoff: &mut Duration) -> bool {
        if next == Next::TryNext {
            return self.stop.is_set();
        }
        let stopped = self.stop.sleep(*backoff);
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        stopped
    }

    /// Reads the broker's packets until the connection ends.
    /// The connection is lost: the publisher's failed write says why, when
    /// there was one (its shutting the socket is what this side then sees).
    fn lost(&self, seen: String) -> Ended {
        match lock(&self.shared.write_failed).take() {
            Some(why) => Ended::Lost(format!("writing to the broker failed: {why}")),
            None => Ended::Lost(seen),
        }
    }

    fn serve(&mut self, wire: &Wire) -> Ended {
        let keepalive = self.dialer.keepalive;
        let silence_limit = keepalive * 3 / 2;
        let tick = (keepalive / 4).min(Duration::from_secs(1));
        if let Err(e) = wire.set_read_timeout(Some(tick)) {
            return Ended::Lost(e.to_string());
        }
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        let mut last_progress = Instant::now();
        let mut ping = Vec::with_capacity(2);
        codec::pingreq(&mut ping);
        loop {
            if self.stop.is_set() {
                return Ended::Stopped;
            }
            match wire.read(&mut buf) {
                // Our DISCONNECT went out: the close that follows is the clean stop.
                _ if self.shared.closing.load(Ordering::Relaxed) => return Ended::Stopped,
                Ok(0) => return self.lost("the broker closed the connection".into()),
                Ok(n) => {
                    last_heard = Instant::now();
                    pending.extend_from_slice(&buf[..n]);
                    let mut acks = Vec::new();
                    let mut used = 0;
                    loop {
                        match codec::decode(&pending[used..]) {
                            Ok(Some((packet, len))) => {
                                used += len;
                                match packet {
                                    Incoming::PubAck(codec::STATE_PKID) => {}
                                    Incoming::PubAck(pkid) => acks.push(pkid),
                                    Incoming::PingResp => {}
                                    other => log::debug!(
                                        "broker sent {other:?} on the publish link: ignored"
                                    ),
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Ended::Lost(e.to_string()),
                        }
                    }
                    pending.drain(..used);
                    if !acks.is_empty() {
                        last_progress = Instant::now();
                        let _ = self.events.send(LinkEvent::Acked(acks));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return self.lost(e.to_string()),
            }
            let now = Instant::now();
            if self.shared.in_flight.load(Ordering::Relaxed) == 0 {
                last_progress = now;
            }
            if now.duration_since(last_heard) > silence_limit {
                return Ended::Lost(format!(
                    "no answer from the broker for {} s (MQTT_KEEPALIVE {} s): it is frozen or gone",
                    now.duration_since(last_heard).as_secs(),
                    keepalive.as_secs()
                ));
            }
            if now.duration_since(last_progress) > silence_limit {
                return Ended::Lost(format!(
                    "no PUBACK for {} s with {} commands in flight",
                    now.duration_since(last_progress).as_secs(),
                    self.shared.in_flight.load(Ordering::Relaxed)
                ));
            }
            if now.duration_since(last_ping) >= keepalive / 2 {
                last_ping = now;
                if let Err(e) = wire.write_all(&ping) {
                    return Ended::Lost(format!("cannot write to the broker: {e}"));
                }
            }
            if self.brokers.probe_due(now) && self.probe_first(now) {
                return Ended::Return;
            }
        }
    }

    /// While on another broker: asks the first one for a CONNACK (and says
    /// goodbye at once). True when it is time to go back to it.
    fn probe_first(&mut self, now: Instant) -> bool {
        let first = self.brokers.first().clone();
        let id = format!("{}-probe", self.dialer.client_id);
        let answered = match self.dialer.connect(&first, &id, false, PROBE_TIMEOUT) {
            Ok(wire) => {
                let mut bye = Vec::new();
                codec::disconnect(&mut bye);
                let _ = wire.write_all(&bye);
                wire.shut();
                true
            }
            Err(e) => {
                log::debug!("broker {first} still does not answer: {}", e.describe());
                false
            }
        };
        self.brokers.probed(answered, now)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_tls_failure_reads_the_same_at_every_attempt() {
        let at = |t: u64| {
            let e = io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "invalid peer certificate: certificate expired: verification time {t} (UNIX), \
                     but certificate is not valid after 1795900000 ({} seconds ago)",
                    t - 1795900000
                ),
            );
            ConnectFailure::Tls(e.to_string())
        };
        assert_eq!(at(1795950000).describe(), at(1795950030).describe());
        assert_eq!(
            at(1795950000).describe(),
            "TLS: invalid peer certificate: certificate expired"
        );
        assert!(at(1795950000).needs_human());
        let plain = ConnectFailure::Tls("invalid peer certificate: UnknownIssuer".into());
        assert_eq!(
            plain.describe(),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
        let absent = ConnectFailure::Unreachable("Connection refused (os error 111)".into());
        assert_eq!(absent.describe(), "Connection refused (os error 111)");
        assert!(!absent.needs_human());
    }
}
