//! The publish link thread: keeps the connection commands are published on
//! (client id `…-pub`). It dials as `dialing.rs` says (through `connect.rs`),
//! hands each connection ([`Wire`]) to the publisher, reads PUBACKs (sent on
//! as [`LinkEvent`]s) and PINGRESPs, pings and drops a silent broker as
//! `keepalive.rs` says, probes the first broker beside it (`probe.rs`) and
//! moves back to it as planned. What the publisher tells it comes in as
//! messages ([`Told`]); the publisher alone writes commands.

use std::io::{self, ErrorKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::config::Live;
use crate::mqtt::brokers::{Broker, InUse};
use crate::mqtt::codec::{self, DecodeError, Incoming};
use crate::mqtt::connect::{ConnectFailure, Dialer};
use crate::mqtt::dialing::{Dial, Dialing, OnLink};
use crate::mqtt::keepalive::{Liveness, Verdict};
pub use crate::mqtt::link_messages::LinkEvent;
use crate::mqtt::link_messages::Told;
use crate::mqtt::probe::{Probe, ProbeMessage};
use crate::mqtt::tls;
use crate::mqtt::wire::Wire;
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Failures};
use crate::ops::shutdown::{Nudge, Stop};

/// The whole of one connection attempt: TCP, TLS handshake, CONNECT and CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a planned move back to the first broker waits for the PUBACKs
/// of what is in flight before it says DISCONNECT (what is still
/// unacknowledged then is published again there).
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);
/// How much later than due a read may return before its timeout is set
/// again (a setsockopt per read would cost a system call per PUBACK batch).
const SLACK: Duration = Duration::from_millis(50);

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

/// What the publish link shows the other threads.
#[derive(Default)]
pub struct LinkShared {
    /// The broker in use (or being tried): the device link follows it, the
    /// status file shows it.
    pub broker_in_use: Arc<InUse>,
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
    /// What the publisher told this link, read after every read of the socket.
    pub told: Told,
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
        self.told.new_connection();
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
    fn lost(&mut self, seen: String) -> Ended {
        self.told.read();
        match self.told.dropped.take() {
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
            match reader.liveness.check(now, self.told.in_flight) {
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
    fn read_acks(&mut self, wire: &Wire, reader: &mut Reader) -> Result<(), Ended> {
        let read = wire.read(&mut reader.buf);
        self.told.read();
        match read {
            // Our DISCONNECT went out: the close that follows is the clean stop.
            _ if self.told.closing || self.stop.is_set() => Err(Ended::Stopped),
            Ok(0) => Err(self.lost("the broker closed the connection".into())),
            Ok(n) => {
                reader.liveness.heard(Instant::now());
                reader.pending.extend_from_slice(&reader.buf[..n]);
                let acks =
                    take_acks(&mut reader.pending).map_err(|e| Ended::Lost(e.to_string()))?;
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
            let drained = self.told.paused && self.told.in_flight == 0;
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
fn take_acks(pending: &mut Vec<u8>) -> Result<Vec<u16>, DecodeError> {
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
            Err(e) => return Err(e),
        }
    }
    pending.drain(..used);
    Ok(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

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
