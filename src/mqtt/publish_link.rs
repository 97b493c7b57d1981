//! The publish link thread: keeps the MQTT connection commands are published
//! on (client id `…-pub`; it subscribes to nothing, so device traffic never
//! shares it). It dials the brokers of `MQTT_BROKER` as the pure dialing
//! policy says (`dialing.rs`: which broker, how long to back off, when to
//! probe the first one and move back to it), hands each new connection
//! ([`Wire`]) to the publisher, reads what the broker sends (PUBACKs,
//! reported in batches; PINGRESPs), and pings and drops a broker that
//! stopped answering as `keepalive.rs` says. The probe of the first broker
//! runs beside it on its own thread (`probe.rs`); a move back to it is
//! planned: [`LinkEvent::Draining`], the PUBACKs of what is in flight,
//! DISCONNECT, [`LinkEvent::Closed`]. Reports what the publisher
//! needs as [`LinkEvent`]s on a bounded channel; the publisher alone writes
//! commands.
//!
//! Why not rumqttc here: its request path writes and flushes every publish
//! on its own and wakes two threads per event (measured: as much CPU per
//! command as the broker spends per message), it silently drops what was in
//! flight when a session is lost, and it cannot be moved to another broker
//! without editing its internals. The publish side of MQTT 3.1.1 is five
//! small packets (`codec.rs`); owning them lets the publisher write a batch
//! of commands with one system call and correlate PUBACKs by the packet ids
//! it assigned. rumqttc still carries the device side (`devices/link.rs`).

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::config::Live;
use crate::mqtt::brokers::{Broker, InUse};
use crate::mqtt::codec::{self, Incoming};
use crate::mqtt::dialing::{Dial, Dialing, OnLink};
use crate::mqtt::keepalive::{Liveness, Verdict};
use crate::mqtt::probe::{Probe, ProbeMessage};
use crate::mqtt::tls;
use crate::mqtt::wire::Wire;
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Failures};
use crate::ops::shutdown::{Nudge, Stop};
use crate::ops::sync::lock;

/// The whole of one connection attempt: TCP, TLS handshake, CONNECT and CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a planned move back to the first broker waits for the PUBACKs
/// of what is in flight before it says DISCONNECT (what is still
/// unacknowledged then is published again there).
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);
/// How much later than due a read may return before its timeout is set
/// again (a setsockopt per read would cost a system call per PUBACK batch).
const SLACK: Duration = Duration::from_millis(50);
/// The longest single wait inside an attempt: how soon a stop is noticed.
const WAIT_SLICE: Duration = Duration::from_millis(200);

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
    /// A planned move to another broker: write nothing more on this
    /// connection; PUBACKs for what is in flight still come.
    Draining,
    /// The connection was closed as planned (DISCONNECT) after
    /// [`LinkEvent::Draining`]: what is still unacknowledged goes out on
    /// the next one; nothing acknowledged is published again.
    Closed,
}

/// State the publish link shares with the publisher and the device link.
#[derive(Default)]
pub struct LinkShared {
    /// Commands the publisher has in flight: work the link expects PUBACKs for.
    pub in_flight: AtomicUsize,
    /// The broker in use (or being tried): the device link follows it, the
    /// status file shows it.
    pub broker_in_use: Arc<InUse>,
    /// Set once the publisher has sent DISCONNECT: the next close is expected.
    pub closing: AtomicBool,
    /// Set by the publisher once it took [`LinkEvent::Draining`]: it
    /// writes nothing more on this connection.
    pub paused: AtomicBool,
    /// Why the publisher ended this connection (a failed write, a command
    /// overdue for its PUBACK; it then shuts the connection): the reason the
    /// link reports for the loss.
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
    /// Ends an attempt under way (the relay is stopping).
    pub stop: Stop,
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
    /// The broker answered with something that is not a CONNACK, or not
    /// within the attempt's deadline.
    Protocol(String),
    /// The relay is stopping: the attempt was given up.
    Stopped,
}

impl ConnectFailure {
    /// Refused logins and failed handshakes need a human; an absent broker,
    /// or one that says it is unavailable for now (code 3), does not.
    fn needs_human(&self) -> bool {
        match self {
            ConnectFailure::Refused(code) => *code != 3,
            ConnectFailure::Tls(_) => true,
            ConnectFailure::Unreachable(_)
            | ConnectFailure::Protocol(_)
            | ConnectFailure::Stopped => false,
        }
    }

    /// The reason as logged, normalised ([`log_limit::failure_reason`]).
    pub(crate) fn describe(&self) -> String {
        let text = match self {
            ConnectFailure::Unreachable(why) => why.clone(),
            ConnectFailure::Refused(code) => {
                format!("connection refused: {}", codec::refusal(*code))
            }
            ConnectFailure::Tls(why) => format!("TLS: {why}"),
            ConnectFailure::Protocol(why) => why.clone(),
            ConnectFailure::Stopped => "the relay is stopping".into(),
        };
        log_limit::failure_reason(&text)
    }
}

/// One connection attempt's deadline: every wait in it (TCP connect, TLS
/// handshake, CONNACK) takes from the same budget, so a broker that
/// trickles bytes cannot stretch it; waits are cut into [`WAIT_SLICE`]s so
/// a stop is noticed within one.
struct Attempt<'a> {
    until: Instant,
    budget: Duration,
    stop: &'a Stop,
}

impl Attempt<'_> {
    /// How long the next wait may be, or why the attempt is over (`what`
    /// was still awaited).
    fn slice(&self, what: &str) -> Result<Duration, ConnectFailure> {
        if self.stop.is_set() {
            return Err(ConnectFailure::Stopped);
        }
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectFailure::Protocol(format!(
                "no {what} from the broker within {} s",
                self.budget.as_secs()
            )));
        }
        Ok(left.min(WAIT_SLICE))
    }

    /// What is left of the budget, for a wait that cannot be cut (TCP connect).
    fn left(&self) -> Result<Duration, ConnectFailure> {
        self.slice("TCP connection")?;
        Ok(self.until.saturating_duration_since(Instant::now()))
    }
}

/// One step of the TLS handshake: what rustls has to send, then one read
/// (rustls's `complete_io` reads until a record is whole, so a peer
/// trickling bytes would keep it from ever returning).
fn handshake_step(session: &mut ClientConnection, socket: &TcpStream) -> io::Result<()> {
    let mut io = socket;
    while session.wants_write() {
        session.write_tls(&mut io)?;
    }
    if !session.wants_read() {
        return Ok(());
    }
    if session.read_tls(&mut io)? == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "the broker closed the connection during the TLS handshake",
        ));
    }
    session
        .process_new_packets()
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
    Ok(())
}

/// A read or handshake step that ran out of its slice: the attempt goes on.
fn waited(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

impl Dialer {
    /// TCP (and TLS) connection, CONNECT, CONNACK; all within `timeout`.
    pub fn connect(
        &self,
        broker: &Broker,
        client_id: &str,
        will: bool,
        timeout: Duration,
    ) -> Result<Wire, ConnectFailure> {
        let attempt = Attempt {
            until: Instant::now() + timeout,
            budget: timeout,
            stop: &self.stop,
        };
        let wire = self.open(broker, &attempt)?;
        wire.write_all(&self.hello(client_id, will)?)
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        await_connack(&wire, &attempt)?;
        Ok(wire)
    }

    /// The byte stream to `broker`: TCP, and the TLS handshake when configured.
    fn open(&self, broker: &Broker, attempt: &Attempt) -> Result<Wire, ConnectFailure> {
        let unreachable = |e: io::Error| ConnectFailure::Unreachable(e.to_string());
        let socket = tcp_connect(broker, attempt)?;
        let Some(config) = &self.tls else {
            return Wire::plain(socket).map_err(unreachable);
        };
        let name = ServerName::try_from(broker.host.clone()).map_err(|e| {
            ConnectFailure::Tls(format!("{:?} is not a server name: {e}", broker.host))
        })?;
        let mut session = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| ConnectFailure::Tls(e.to_string()))?;
        while session.is_handshaking() {
            let wait = attempt.slice("TLS handshake")?;
            socket.set_read_timeout(Some(wait)).map_err(unreachable)?;
            socket.set_write_timeout(Some(wait)).map_err(unreachable)?;
            match handshake_step(&mut session, &socket) {
                Ok(()) => {}
                Err(e) if waited(&e) => {}
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(ConnectFailure::Tls(e.to_string()))
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
        // The last flight (the client's Finished) goes out now.
        let mut io = &socket;
        while session.wants_write() {
            session.write_tls(&mut io).map_err(unreachable)?;
        }
        Wire::tls(socket, session).map_err(unreachable)
    }
    /// The CONNECT packet, with the last will when `will` (probes go without).
    fn hello(&self, client_id: &str, will: bool) -> Result<Vec<u8>, ConnectFailure> {
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
        Ok(hello)
    }
}

/// Reads until the broker's CONNACK, within the attempt's deadline: Ok
/// when it accepts the connection.
fn await_connack(wire: &Wire, attempt: &Attempt) -> Result<(), ConnectFailure> {
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    loop {
        let wait = attempt.slice("CONNACK")?;
        wire.set_read_timeout(Some(wait))
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        let n = match wire.read(&mut buf) {
            Ok(n) => n,
            Err(e) if waited(&e) => continue,
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return Err(ConnectFailure::Tls(e.to_string()))
            }
            Err(e) => return Err(ConnectFailure::Unreachable(e.to_string())),
        };
        if n == 0 {
            return Err(ConnectFailure::Unreachable(
                "the broker closed the connection before CONNACK".into(),
            ));
        }
        got.extend_from_slice(&buf[..n]);
        return match codec::decode(&got) {
            Ok(None) => continue,
            Ok(Some((Incoming::ConnAck { code: 0, .. }, _))) => Ok(()),
            Ok(Some((Incoming::ConnAck { code, .. }, _))) => Err(ConnectFailure::Refused(code)),
            Ok(Some((other, _))) => Err(ConnectFailure::Protocol(format!(
                "expected CONNACK, got {other:?}"
            ))),
            Err(e) => Err(ConnectFailure::Protocol(e.to_string())),
        };
    }
}

fn tcp_connect(broker: &Broker, attempt: &Attempt) -> Result<TcpStream, ConnectFailure> {
    let unreachable = |e: io::Error| ConnectFailure::Unreachable(e.to_string());
    let addrs: Vec<SocketAddr> = (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .map_err(unreachable)?
        .collect();
    let mut last = io::Error::new(ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, attempt.left()?) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
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
    pub dialing: Dialing,
    pub dialer: Dialer,
    pub events: Sender<LinkEvent>,
    pub shared: Arc<LinkShared>,
    pub counters: Arc<Counters>,
    pub stop: Stop,
    /// `STATE_TOPIC`: "online" published after each CONNACK.
    pub state: Option<StateMessages>,
    /// The configuration SIGHUP may replace: its login and TLS files are
    /// read again before each new connection, its broker list as soon as
    /// it changes ([`Dialing::reload`]).
    pub live: Arc<Live>,
    /// Rung by each reload ([`Live::watch`]): ends a wait between attempts,
    /// so a new broker list is dialed at once.
    pub reloaded: Receiver<()>,
}

/// What the link last built from the live configuration.
#[derive(Default)]
struct Settings {
    /// The generation of the live configuration the broker list was taken from.
    generation: u64,
    tls: tls::Reread,
}

impl PublishLink {
    pub fn run(mut self) {
        // Every change once, not every attempt (log_limit.rs).
        let mut failures = Failures::default();
        let mut probing = Probing::default();
        let mut dial = self.dialing.start();
        let mut settings = Settings {
            generation: self.live.generation(),
            ..Settings::default()
        };
        while let Some(broker) = self.turn(&dial, &mut settings) {
            self.refresh(&mut settings);
            self.shared.broker_in_use.set(&broker);
            let client_id = self.dialer.client_id.clone();
            dial = match self
                .dialer
                .connect(&broker, &client_id, true, CONNECT_TIMEOUT)
            {
                Ok(wire) => {
                    match self.session(&broker, &wire, &mut failures, &mut probing, &mut settings) {
                        Some(dial) => dial,
                        None => break,
                    }
                }
                Err(ConnectFailure::Stopped) => break,
                Err(failure) => self.unreachable(&broker, &failure, &mut failures),
            };
        }
        self.counters
            .broker_connected
            .store(false, Ordering::Relaxed);
        probing.finish();
        log::debug!("publish link stopped");
    }

    /// Before each new connection: login and TLS files as they are now.
    fn refresh(&mut self, settings: &mut Settings) {
        let config = self.live.get();
        self.dialer.keepalive = config.mqtt_keepalive;
        self.dialer.username.clone_from(&config.mqtt_username);
        self.dialer.password = config
            .mqtt_username
            .as_ref()
            .map(|_| config.mqtt_password.clone().unwrap_or_default());
        self.dialer.tls = settings.tls.next(&config, self.dialer.tls.take());
    }

    /// A reload's broker list and `MQTT_KEEPALIVE`, handed to the dialing
    /// policy once per reload, between attempts and while a link is up
    /// alike; true when the list changed.
    fn follow_reload(&mut self, settings: &mut Settings) -> bool {
        let generation = self.live.generation();
        if generation == settings.generation {
            return false;
        }
        settings.generation = generation;
        let config = self.live.get();
        self.dialing
            .reload(config.broker_list(), config.mqtt_keepalive * 2)
    }

    /// Waits as `dial` says; the broker to dial then, or None when
    /// stopping. A reload that changes the broker list ends the wait: the
    /// new list's first broker is dialed at once (any other reload leaves
    /// the backoff as it was).
    fn turn(&mut self, dial: &Dial, settings: &mut Settings) -> Option<Broker> {
        let mut broker = dial.broker().clone();
        let until = match dial {
            Dial::After(wait, _) => Instant::now() + *wait,
            Dial::Now(_) => Instant::now(),
        };
        loop {
            // Drained before the look, so a reload after it rings again.
            while self.reloaded.try_recv().is_ok() {}
            if self.follow_reload(settings) {
                broker = self.dialing.start().broker().clone();
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.is_set() {
                break;
            }
            crossbeam_channel::select! {
                recv(self.stop.receiver()) -> _ => break,
                recv(self.reloaded) -> _ => {}
                default(left) => break,
            }
        }
        (!self.stop.is_set()).then_some(broker)
    }

    /// A connection was made: reports it, serves it until it ends, reports
    /// the loss. What to dial next; None when the relay is stopping.
    fn session(
        &mut self,
        broker: &Broker,
        wire: &Wire,
        failures: &mut Failures,
        probing: &mut Probing,
        settings: &mut Settings,
    ) -> Option<Dial> {
        *lock(&self.shared.write_failed) = None;
        self.shared.paused.store(false, Ordering::Relaxed);
        self.publish_online(wire);
        log::info!("connected to broker {broker}");
        failures.connected();
        self.counters
            .broker_connected
            .store(true, Ordering::Relaxed);
        self.counters.link_up();
        self.dialing.connected(Instant::now());
        let _ = self.events.send(LinkEvent::Up(wire.clone()));
        let ended = self.serve(wire, probing, settings);
        probing.abandon();
        wire.shut();
        self.counters
            .broker_connected
            .store(false, Ordering::Relaxed);
        self.counters.link_down();
        let planned = matches!(ended, Ended::Return);
        let _ = self.events.send(if planned {
            LinkEvent::Closed
        } else {
            LinkEvent::Down
        });
        match ended {
            Ended::Stopped => None,
            Ended::Return => {
                let dial = self.dialing.switched_back(Instant::now());
                log::info!(
                    "broker {} answers again: moving back to it from {broker}",
                    self.dialing.first()
                );
                Some(dial)
            }
            Ended::Lost(why) => {
                let why = log_limit::failure_reason(&why);
                let dial = self.dialing.link_lost(Instant::now());
                let then = self.dialing.next_step(&dial);
                // Always logged: it follows a "connected" line.
                log::warn!("lost connection to broker {broker}: {why}; {then}");
                failures.first_of_kind(&broker.to_string(), &why);
                Some(dial)
            }
        }
    }

    /// `STATE_TOPIC`'s "online": retained, QoS 1, under the packet id the
    /// ledger never uses.
    fn publish_online(&self, wire: &Wire) {
        let Some(state) = &self.state else {
            return;
        };
        let mut online = Vec::new();
        // check-config bounds STATE_TOPIC and the client id: cannot fail.
        if let Err(e) = codec::publish(
            &mut online,
            &state.topic,
            Some(codec::STATE_PKID),
            true,
            &state.online,
        ) {
            log::error!("cannot publish the online state: {e}");
            return;
        }
        if let Err(e) = wire.write_all(&online) {
            log::debug!("cannot publish the online state: {e}");
        }
    }

    /// Dialing `broker` failed: logs why (once per kind, at the level it
    /// deserves) and says what to dial next.
    fn unreachable(
        &mut self,
        broker: &Broker,
        failure: &ConnectFailure,
        failures: &mut Failures,
    ) -> Dial {
        let why = failure.describe();
        let dial = self.dialing.connect_failed();
        let then = self.dialing.next_step(&dial);
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
        dial
    }

    /// The connection is lost: the publisher's failed write says why, when
    /// there was one (its shutting the socket is what this side then sees).
    fn lost(&self, seen: String) -> Ended {
        match lock(&self.shared.write_failed).take() {
            Some(why) => Ended::Lost(why),
            None => Ended::Lost(seen),
        }
    }

    /// Reads the broker's packets until the connection ends: reports
    /// PUBACKs, pings, drops a broker that stopped answering, and probes
    /// the first broker (beside it, on the probe's thread) while on another one.
    fn serve(&mut self, wire: &Wire, probing: &mut Probing, settings: &mut Settings) -> Ended {
        let mut reader = Reader::new(self.dialer.keepalive);
        // A read may block for a quarter keepalive: the stop ends it at once.
        let shut: Nudge = {
            let wire = wire.clone();
            Arc::new(move || wire.shut())
        };
        self.stop.nudge_when_triggered(&shut);
        let mut ping = Vec::with_capacity(2);
        codec::pingreq(&mut ping);
        loop {
            if self.stop.is_set() {
                return Ended::Stopped;
            }
            if let Err(e) = self.set_read_wait(wire, &mut reader, probing) {
                return Ended::Lost(e.to_string());
            }
            if let Err(ended) = self.read_acks(wire, &mut reader) {
                return ended;
            }
            let now = Instant::now();
            let in_flight = self.shared.in_flight.load(Ordering::Relaxed);
            match reader.liveness.check(now, in_flight) {
                Verdict::Alive => {}
                Verdict::Ping => {
                    if let Err(e) = wire.write_all(&ping) {
                        return Ended::Lost(format!("cannot write to the broker: {e}"));
                    }
                }
                Verdict::Dead(why) => return Ended::Lost(why),
            }
            if self.live.generation() != settings.generation {
                // Probes connect with a reload's login and TLS files at once.
                self.refresh(settings);
                if self.follow_reload(settings) {
                    // Its answer would be about a broker that may be first no more.
                    probing.abandon();
                }
            }
            if self.probe_says_switch(probing, now) {
                return self.hand_over(wire, &mut reader);
            }
        }
    }

    /// How long the next read may block: until the next ping or deadline
    /// (`keepalive.rs`), or a short tick while the first broker is probed.
    /// The socket option is changed only when it moved by more than a little.
    fn set_read_wait(&self, wire: &Wire, reader: &mut Reader, probing: &Probing) -> io::Result<()> {
        let wait = if self.dialing.probes() || probing.current.is_some() {
            reader.liveness.read_tick()
        } else {
            reader.liveness.read_wait(Instant::now())
        };
        let set = reader.read_wait;
        if set.is_some_and(|set| wait + SLACK >= set && wait <= set + SLACK * 20) {
            return Ok(());
        }
        wire.set_read_timeout(Some(wait))?;
        reader.read_wait = Some(wait);
        Ok(())
    }

    /// One read: reports the PUBACKs it completed; Err when the connection ended.
    fn read_acks(&self, wire: &Wire, reader: &mut Reader) -> Result<(), Ended> {
        match wire.read(&mut reader.buf) {
            // Our DISCONNECT went out: the close that follows is the clean stop.
            _ if self.shared.closing.load(Ordering::Relaxed) || self.stop.is_set() => {
                Err(Ended::Stopped)
            }
            Ok(0) => Err(self.lost("the broker closed the connection".into())),
            Ok(n) => {
                reader.liveness.heard(Instant::now());
                reader.pending.extend_from_slice(&reader.buf[..n]);
                let acks = take_acks(&mut reader.pending).map_err(Ended::Lost)?;
                if !acks.is_empty() {
                    reader.liveness.acked(Instant::now());
                    let _ = self.events.send(LinkEvent::Acked(acks));
                }
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    /// Starts a probe of the first broker when one is due, and takes its
    /// answer when there is one: true when it is time to move back.
    fn probe_says_switch(&mut self, probing: &mut Probing, now: Instant) -> bool {
        probing.reap();
        if probing.current.is_none() {
            if self.dialing.tick(now) == OnLink::ProbeFirst {
                match Probe::start(&self.dialer, self.dialing.first(), &self.probe_message()) {
                    Ok(probe) => probing.current = Some(probe),
                    Err(e) => {
                        log::debug!("cannot start a probe: {e}");
                        self.dialing.probed(false, now);
                    }
                }
            }
            return false;
        }
        let Some(answered) = probing.current.as_ref().and_then(Probe::answer) else {
            return false;
        };
        if let Some(probe) = probing.current.take() {
            probe.join();
        }
        self.dialing.probed(answered, now) == OnLink::SwitchBack
    }

    /// What a probe publishes (see [`ProbeMessage`]).
    fn probe_message(&self) -> ProbeMessage {
        match &self.state {
            Some(state) => ProbeMessage {
                topic: state.topic.clone(),
                payload: state.online.clone(),
            },
            None => ProbeMessage {
                topic: format!("ms500-relay/probe/{}", self.dialer.client_id),
                payload: Vec::new(),
            },
        }
    }

    /// A planned move back to the first broker: the publisher stops
    /// writing here, the PUBACKs of what is in flight are read (for up to
    /// [`HAND_OVER_WAIT`]), then DISCONNECT: no will, and nothing that was
    /// acknowledged here is published again there.
    fn hand_over(&mut self, wire: &Wire, reader: &mut Reader) -> Ended {
        let _ = self.events.send(LinkEvent::Draining);
        let until = Instant::now() + HAND_OVER_WAIT.min(self.dialer.keepalive);
        loop {
            if self.stop.is_set() {
                return Ended::Stopped;
            }
            if let Err(ended) = self.read_acks(wire, reader) {
                return ended;
            }
            let drained = self.shared.paused.load(Ordering::Relaxed)
                && self.shared.in_flight.load(Ordering::Relaxed) == 0;
            if drained || Instant::now() >= until {
                break;
            }
        }
        let mut bye = Vec::new();
        codec::disconnect(&mut bye);
        if let Err(e) = wire.write_all(&bye) {
            log::debug!("cannot say goodbye to the broker: {e}");
        }
        Ended::Return
    }
}

/// What reading one connection keeps.
struct Reader {
    liveness: Liveness,
    /// The socket's read timeout as last set.
    read_wait: Option<Duration>,
    buf: Vec<u8>,
    /// Bytes read that are not a whole packet yet.
    pending: Vec<u8>,
}

impl Reader {
    fn new(keepalive: Duration) -> Reader {
        Reader {
            liveness: Liveness::new(keepalive, Instant::now()),
            read_wait: None,
            buf: vec![0u8; 16 * 1024],
            pending: Vec::new(),
        }
    }
}

/// The probe under way, and probes left running when their link ended
/// (their answer no longer counts; joined once finished).
#[derive(Default)]
struct Probing {
    current: Option<Probe>,
    abandoned: Vec<Probe>,
}

impl Probing {
    fn abandon(&mut self) {
        self.abandoned.extend(self.current.take());
    }

    fn reap(&mut self) {
        let (done, running) = std::mem::take(&mut self.abandoned)
            .into_iter()
            .partition(Probe::is_finished);
        self.abandoned = running;
        done.into_iter().for_each(Probe::join);
    }

    fn finish(mut self) {
        self.abandon();
        self.abandoned.into_iter().for_each(Probe::join);
    }
}

/// Takes the whole packets off the front of `pending`: the PUBACKs of
/// commands, in the order read. The state message's PUBACK and PINGRESPs
/// are dropped, anything else is logged and ignored; bytes that are not
/// MQTT end the connection (the reason).
fn take_acks(pending: &mut Vec<u8>) -> Result<Vec<u16>, String> {
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
                    other => log::debug!("broker sent {other:?} on the publish link: ignored"),
                }
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    pending.drain(..used);
    Ok(acks)
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

    fn dialer() -> Dialer {
        Dialer {
            client_id: "gw-pub".into(),
            keepalive: Duration::from_secs(60),
            username: None,
            password: None,
            tls: None,
            will: Some(("relay/state".into(), b"{\"state\":\"offline\"}".to_vec())),
            stop: Stop::new(),
        }
    }

    /// A one-connection broker on a port the OS picked: reads the CONNECT,
    /// answers `answer` (nothing: closes), and hands back what it read.
    fn fake_broker(answer: &'static [u8]) -> (Broker, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
        };
        let thread = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("the dialer connects");
            let mut got = vec![0u8; 1024];
            let n = std::io::Read::read(&mut socket, &mut got).expect("the CONNECT");
            got.truncate(n);
            std::io::Write::write_all(&mut socket, answer).expect("the answer");
            got
        });
        (broker, thread)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_connack_of_zero_is_a_connection_with_the_will() {
        let (broker, seen) = fake_broker(&[0x20, 0x02, 0x00, 0x00]);
        let wire = dialer().connect(&broker, "gw-pub", true, Duration::from_secs(5));
        assert!(wire.is_ok(), "{:?}", wire.err());
        let connect = seen.join().unwrap();
        assert_eq!(connect[0], 0x10, "CONNECT first");
        assert!(contains(&connect, b"gw-pub"));
        assert!(contains(&connect, b"relay/state"), "the will goes along");
    }

    #[test]
    fn a_probe_goes_without_the_will() {
        let (broker, seen) = fake_broker(&[0x20, 0x02, 0x00, 0x00]);
        let wire = dialer().connect(&broker, "gw-pub-probe", false, Duration::from_secs(5));
        assert!(wire.is_ok(), "{:?}", wire.err());
        let connect = seen.join().unwrap();
        assert!(contains(&connect, b"gw-pub-probe"));
        assert!(!contains(&connect, b"relay/state"));
    }

    #[test]
    fn a_refusal_names_its_code_and_a_bad_login_needs_a_human() {
        let (broker, seen) = fake_broker(&[0x20, 0x02, 0x00, 0x05]);
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("refused");
        seen.join().unwrap();
        assert!(matches!(failure, ConnectFailure::Refused(5)), "{failure:?}");
        assert!(failure.needs_human());
        assert!(
            !ConnectFailure::Refused(3).needs_human(),
            "server unavailable passes"
        );
    }

    #[test]
    fn a_broker_that_closes_or_answers_otherwise_is_no_connection() {
        let (broker, seen) = fake_broker(&[]);
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("closed");
        seen.join().unwrap();
        assert_eq!(
            failure.describe(),
            "the broker closed the connection before CONNACK"
        );
        let (broker, seen) = fake_broker(&[0xD0, 0x00]);
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("not a CONNACK");
        seen.join().unwrap();
        assert!(
            matches!(failure, ConnectFailure::Protocol(_)),
            "{failure:?}"
        );
        assert!(!failure.needs_human());
    }

    /// A broker that answers a CONNECT with the start of a CONNACK, then
    /// one more byte every 100 ms, for as long as the dialer listens.
    fn trickling_broker() -> Broker {
        trickling(&[0x20, 0x7F])
    }

    /// A broker that answers the first bytes it reads with `start`, then
    /// one more byte every 100 ms, for as long as the dialer listens.
    fn trickling(start: &'static [u8]) -> Broker {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        std::thread::spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else {
                return;
            };
            let _ = std::io::Read::read(&mut socket, &mut [0u8; 1024]);
            let _ = std::io::Write::write_all(&mut socket, start);
            while std::io::Write::write_all(&mut socket, &[0]).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Broker {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn a_trickling_broker_gets_the_whole_attempt_and_no_more() {
        let started = Instant::now();
        let failure = dialer()
            .connect(&trickling_broker(), "gw-pub", true, Duration::from_secs(1))
            .err()
            .expect("no whole CONNACK");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1600), "took {took:?}");
        assert_eq!(
            failure.describe(),
            log_limit::failure_reason("no CONNACK from the broker within 1 s")
        );
    }

    #[test]
    fn a_tls_handshake_trickled_byte_by_byte_gets_the_whole_attempt_and_no_more() {
        let roots = rustls::RootCertStore::empty();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let dialer = Dialer {
            tls: Some(Arc::new(tls)),
            ..dialer()
        };
        // The header of a 16 KiB handshake record, then its body trickled.
        let mut broker = trickling(&[0x16, 0x03, 0x03, 0x40, 0x00]);
        broker.host = "localhost".into();
        let started = Instant::now();
        let failure = dialer
            .connect(&broker, "gw-pub", true, Duration::from_secs(1))
            .err()
            .expect("no handshake");
        assert!(
            started.elapsed() < Duration::from_millis(1600),
            "{failure:?}"
        );
        assert_eq!(
            failure.describe(),
            log_limit::failure_reason("no TLS handshake from the broker within 1 s")
        );
    }

    #[test]
    fn a_stop_ends_an_attempt_under_way() {
        let dialer = dialer();
        let stop = dialer.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.trigger();
        });
        let started = Instant::now();
        let failure = dialer
            .connect(&trickling_broker(), "gw-pub", true, Duration::from_secs(30))
            .err()
            .expect("stopped");
        assert!(matches!(failure, ConnectFailure::Stopped), "{failure:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn nobody_listening_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
        };
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("nobody listens");
        assert!(
            matches!(failure, ConnectFailure::Unreachable(_)),
            "{failure:?}"
        );
    }

    #[test]
    fn acks_are_taken_in_order_and_a_partial_packet_waits() {
        let state = codec::STATE_PKID.to_be_bytes();
        let mut pending = vec![
            0x40, 0x02, 0x00, 0x01, // PUBACK 1
            0xD0, 0x00, // PINGRESP
            0x40, 0x02, state[0], state[1], // the state message's PUBACK
            0x40, 0x02, 0x01, 0x02, // PUBACK 258
            0x40, 0x02, 0x00, // the start of PUBACK 3
        ];
        assert_eq!(take_acks(&mut pending), Ok(vec![1, 258]));
        assert_eq!(pending, [0x40, 0x02, 0x00]);
        pending.push(0x03);
        assert_eq!(take_acks(&mut pending), Ok(vec![3]));
        assert!(pending.is_empty());
        assert_eq!(take_acks(&mut pending), Ok(vec![]));
    }

    #[test]
    fn bytes_that_are_not_mqtt_end_the_connection() {
        let mut pending = vec![0x40, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(take_acks(&mut pending).is_err());
    }
}
