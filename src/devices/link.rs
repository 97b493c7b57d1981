//! The device link thread: the MQTT connection `…-sub` (rumqttc, set up in
//! `link/client.rs`) that subscribes to the heartbeat and reply topics,
//! records heartbeats in the device table and routes device replies to the
//! backend holding the unit's route, never blocking on one. It follows the
//! publish link to its broker ([`InUse`]) and shows its state in the
//! counters. Started and joined by the relay; why it is a connection of its
//! own: README, "MQTT side".

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use std::sync::atomic::{AtomicBool, Ordering};

use rumqttc::Transport;

use crate::backend::routes::ReplyRoutes;
use crate::config::{self, Config, Live};
use crate::delivery::policy::Sighting;
use crate::delivery::presence::Presence;
use crate::devices::heartbeat;
use crate::devices::table::{Arrival, DeviceTable, Seen};
use crate::mqtt::backoff::Backoff;
use crate::mqtt::brokers::{Broker, InUse};
use crate::mqtt::tls;
use crate::ops::counters::Counters;
use crate::ops::log_limit::{self, Failures, Kind};
use crate::ops::shutdown::{Nudge, Stop};
use crate::ops::sync::{lock, Bell};
use crate::protocol::redact;
use crate::protocol::reply;

mod client;

use client::{Polled, Session, Spoken, Version};

/// The longest wait on a connection that is up. A stop or a move of the
/// publish link wakes the wait at once (a [`Nudge`] that says DISCONNECT),
/// and rumqttc pings the broker within the wait: this is only a safety net.
const TICK: Duration = Duration::from_secs(60);
/// The wait while connecting: longer than rumqttc's own 5 s connection
/// timeout, because a wait that runs out drops the connection attempt
/// under way (a broker whose CONNACK takes over a second, over LTE and TLS,
/// was otherwise never reached, silently, one new attempt a second).
const CONNECTING: Duration = Duration::from_secs(6);
/// How long the broker has to confirm the subscriptions after CONNACK; a
/// broker that keeps the connection but never sends the SUBACK would
/// otherwise leave the link up and deaf.
const SUBACK_WAIT: Duration = Duration::from_secs(10);

pub struct DeviceLink {
    /// Read at each new connection (login, TLS) and message (the topics,
    /// which keep their start value).
    pub config: Arc<Live>,
    pub client_id: String,
    pub transport: Transport,
    pub routes: ReplyRoutes,
    pub counters: Arc<Counters>,
    pub devices: Arc<Mutex<DeviceTable>>,
    /// Told when a camera comes online: the publisher releases what it holds for it.
    pub presence: Arc<Presence>,
    /// The broker the publish link is on: this link follows it (the broker
    /// list itself is the publish link's to follow).
    pub broker_in_use: Arc<InUse>,
    pub stop: Stop,
    /// The relay is shutting down: no new connection is worth making (an
    /// attempt cannot be cut short, and would hold up the exit).
    pub intake: Stop,
}

/// Under load, how long the messages that arrive after a wake-up gather
/// before the next one is handled: a wake-up that comes within this time of
/// the previous one is followed by a pause until this time has passed since
/// it. At a fleet's pace (400 heartbeats a second) one wake-up then takes
/// about 40 heartbeats (measured: a wake-up and its PUBACK write cost
/// several times what a heartbeat does; 100 ms used 28 % less CPU per
/// heartbeat than 50 ms). A heartbeat, and a held command's release, may so
/// wait up to this long; nothing waits for a camera by the millisecond. Never while a backend awaits a reply (an SCS or UDS
/// claimed its unit in the last `routes::REPLY_AWAITED` and no reply came
/// yet): then every message is handled at once. A link that has been quiet
/// for this long handles the next message at once too.
const GATHER: Duration = Duration::from_millis(100);

/// Most events handled in one wake-up before the stop signal is looked at again.
const DRAIN_MAX: usize = 1024;

/// What the link does after one polled event.
enum Next {
    /// Take the next event that is ready, if any.
    Drain,
    /// Wait on the connection again (nothing more is ready, or after a failure).
    Wait,
    /// This connection is over.
    End(Ended),
}

/// The state of one connection that [`DeviceLink::take`] acts on.
struct Serving<'a> {
    /// The broker of this connection, and the publish link's move count
    /// when it was chosen ([`InUse::moved_since`]).
    broker: &'a Broker,
    seen: u64,
    session: &'a mut Session,
    retries: &'a mut Retries,
    spoken: &'a mut Spoken,
    /// Since the CONNACK.
    up_since: &'a mut Option<Instant>,
    /// Since when the SUBACK is awaited.
    subscribing: &'a mut Option<Instant>,
    backlog: &'a mut Backlog,
}

/// How long the echo of the sync marker may take before the link stops
/// waiting for it (a broker whose ACL refuses the topic): messages the
/// broker kept are then over, or taken as live.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// Messages the broker kept for the link while it was away (a persistent
/// session) come first after its CONNACK, and are not live: a heartbeat
/// among them shows a camera was there, not that it is. To tell where they
/// end, the link publishes a marker to a topic of its own and subscribes
/// to it: the broker delivers in order, so what comes after the marker's
/// echo was sent now.
#[derive(Debug, Default)]
struct Backlog {
    /// The broker kept the session: messages before the echo are not live.
    kept: bool,
    /// The marker sent, and when; None before the SUBACK.
    marker: Option<(Vec<u8>, Instant)>,
    /// The SUBACK of the marker's own subscription is the next one.
    sync_suback: bool,
}

/// How the current connection ended.
enum Ended {
    Stopped,
    /// The publish link moved to another broker: follow it.
    Moved,
    Lost,
}

/// What the link remembers across connections: the backoff, which
/// failures were already logged, and what wakes its waits.
struct Retries {
    backoff: Backoff,
    failures: Failures,
    /// Rung when the publish link moves to another broker: a wait between
    /// attempts ends at once, so this link follows without delay.
    moved: Arc<Bell>,
}

impl DeviceLink {
    pub fn run(mut self) {
        // A claim or the stop ends a pause of `gather` at once.
        self.routes.unpark_on_claim(std::thread::current());
        let unpark: Nudge = {
            let me = std::thread::current();
            Arc::new(move || me.unpark())
        };
        self.stop.nudge_when_triggered(&unpark);
        let mut retries = Retries {
            backoff: Backoff::default(),
            failures: Failures::default(),
            moved: Arc::default(),
        };
        let _ring_at_moves = self.ring_at_moves(&retries.moved);
        let mut spoken = Spoken::new(self.config.get().mqtt_protocol);
        self.counters.device_link_down();
        let mut tls = tls::Reread::default();
        while !self.stop.is_set() {
            let config = self.config.get();
            self.refresh(&config, &mut tls);
            // A ring for a move before this choice is no reason to cut a wait short.
            while retries.moved.heard().try_recv().is_ok() {}
            let (broker, seen) = self.broker_in_use.get();
            let mut session = Session::new(
                &config,
                &self.client_id,
                &broker,
                self.transport.clone(),
                spoken.version(&broker),
            );
            let said_goodbye = Arc::new(AtomicBool::new(false));
            let _nudge = self.nudge_at_stop_or_move(&session, &said_goodbye);
            let ended = self.serve(&broker, seen, &mut session, &mut retries, &mut spoken);
            // A goodbye only to a broker that said hello: on a client still
            // connecting it would start another attempt. Nor a second one:
            // after the nudge's, a poll would dial the broker again.
            let was_up = self.counters.device_subscribed.load(Ordering::Relaxed);
            let goodbye_due = !said_goodbye.load(Ordering::SeqCst);
            self.link_down();
            match ended {
                Ended::Stopped if was_up && goodbye_due => {
                    session.disconnect();
                    break;
                }
                Ended::Stopped => break,
                Ended::Moved if goodbye_due => session.disconnect(),
                Ended::Moved | Ended::Lost => {}
            }
        }
        log::debug!("device link stopped");
    }

    /// Wakes this thread's wait on `session` when the relay stops or the
    /// publish link moves to another broker, by saying DISCONNECT for it
    /// (once; `said` records it). Held for as long as the session lives.
    fn nudge_at_stop_or_move(&self, session: &Session, said: &Arc<AtomicBool>) -> Nudge {
        let goodbye = session.goodbye();
        let said = Arc::clone(said);
        let nudge: Nudge = Arc::new(move || {
            if !said.swap(true, Ordering::SeqCst) {
                goodbye.send();
            }
        });
        self.stop.nudge_when_triggered(&nudge);
        self.broker_in_use.nudge_when_moved(&nudge);
        nudge
    }

    /// Rings `moved` at every move of the publish link, for as long as
    /// the returned nudge is held.
    fn ring_at_moves(&self, moved: &Arc<Bell>) -> Nudge {
        let bell = Arc::clone(moved);
        let nudge: Nudge = Arc::new(move || bell.ring());
        self.broker_in_use.nudge_when_moved(&nudge);
        nudge
    }

    /// Before each new connection: the TLS files as they are now (a
    /// SIGHUP, a renewed certificate).
    fn refresh(&mut self, config: &Config, tls: &mut tls::Reread) {
        let previous = match &self.transport {
            Transport::Tls(rumqttc::TlsConfiguration::Rustls(tls)) => Some(Arc::clone(tls)),
            _ => None,
        };
        self.transport = tls::transport(tls.next(config, previous));
    }

    /// Polls one rumqttc client for `broker` until the relay stops, the
    /// publish link moves to another broker (its move count is no longer
    /// `seen`), the connection fails, or another MQTT version is to be tried.
    fn serve(
        &self,
        broker: &Broker,
        seen: u64,
        session: &mut Session,
        retries: &mut Retries,
        spoken: &mut Spoken,
    ) -> Ended {
        let mut up_since: Option<Instant> = None;
        // Since when the SUBACK is awaited.
        let mut subscribing: Option<Instant> = None;
        let mut backlog = Backlog::default();
        // When the last wake-up that brought something came.
        let mut last_woke: Option<Instant> = None;
        loop {
            if self.stop.is_set() || (up_since.is_none() && self.intake.is_set()) {
                return Ended::Stopped;
            }
            if self.broker_in_use.moved_since(seen) {
                return Ended::Moved;
            }
            let wait = match (up_since, subscribing) {
                (Some(_), Some(since)) => SUBACK_WAIT.saturating_sub(since.elapsed()),
                (Some(_), None) => TICK,
                (None, _) => CONNECTING,
            };
            let mut polled = session.poll(wait);
            let woke = Instant::now();
            let busy = last_woke.is_some_and(|t| woke.saturating_duration_since(t) < GATHER)
                && !self.routes.reply_awaited(woke);
            last_woke = (!matches!(polled, Polled::Idle)).then_some(woke);
            // Everything already read or readable is handled in this wake-up:
            // at a fleet's pace a heartbeat waits behind another most of the time.
            for handled in 1.. {
                let mut state = Serving {
                    broker,
                    seen,
                    session: &mut *session,
                    retries: &mut *retries,
                    spoken: &mut *spoken,
                    up_since: &mut up_since,
                    subscribing: &mut subscribing,
                    backlog: &mut backlog,
                };
                match self.take(polled, &mut state) {
                    Next::Drain => {}
                    Next::Wait => break,
                    Next::End(ended) => return ended,
                }
                // Asked for only when it will be handled: an event taken
                // from rumqttc and then dropped would be a lost message.
                if handled == DRAIN_MAX {
                    break;
                }
                polled = session.try_poll();
            }
            // Under load, let the next messages gather (see GATHER).
            if busy {
                self.gather(GATHER.saturating_sub(woke.elapsed()));
            }
            if subscribing.is_some_and(|since| since.elapsed() > SUBACK_WAIT) {
                return self.deaf(broker, retries);
            }
            self.echo_overdue(&mut backlog);
        }
    }

    /// Pauses for `pause` so that messages gather, unless a backend claims
    /// a unit meanwhile (its reply must not wait) or the relay stops: both
    /// unpark this thread (see `run`). A park is one futex wait, the
    /// cheapest pause there is; an early return only shortens it.
    fn gather(&self, pause: Duration) {
        if self.routes.reply_awaited(Instant::now()) || self.stop.is_set() {
            return;
        }
        std::thread::park_timeout(pause);
    }

    /// Waits `wait` between attempts, unless the relay stops (true) or the
    /// publish link moves to another broker meanwhile (this link follows
    /// it at once).
    fn pause(&self, wait: Duration, moved: &Bell) -> bool {
        crossbeam_channel::select! {
            recv(self.stop.receiver()) -> _ => {}
            recv(moved.heard()) -> _ => {}
            default(wait) => {}
        }
        self.stop.is_set()
    }

    /// Acts on one polled event of the connection to `state.broker`.
    fn take(&self, polled: Polled, state: &mut Serving<'_>) -> Next {
        let broker = state.broker;
        match polled {
            Polled::Idle => return Next::Wait,
            Polled::Nothing => {}
            // The nudge's DISCONNECT ends the connection: not a failure.
            Polled::Ended | Polled::Failed { .. } if self.stop.is_set() => {
                return Next::End(Ended::Stopped)
            }
            Polled::Failed { .. } if self.broker_in_use.moved_since(state.seen) => {
                return Next::End(Ended::Moved)
            }
            Polled::Ended => return Next::End(Ended::Lost),
            Polled::ConnAck {
                max_packet,
                session_present,
            } => {
                *state.backlog = Backlog {
                    kept: session_present,
                    ..Backlog::default()
                };
                // The publisher sets aside at once what this broker
                // would close the connection over (publish links share it).
                let limit = max_packet.map_or(0, u64::from);
                self.counters
                    .broker_max_packet
                    .store(limit, Ordering::Relaxed);
                *state.up_since = Some(Instant::now());
                *state.subscribing = *state.up_since;
                if state.spoken.connected(broker, state.session.version()) {
                    log::info!(
                        "broker {broker} does not take MQTT 5: the device link speaks \
                         MQTT 3.1.1 to it from now on"
                    );
                }
                self.connected(broker, state.session, state.retries);
            }
            Polled::SubAck(refused) if state.backlog.sync_suback => {
                state.backlog.sync_suback = false;
                self.sync_subscribed(refused, state);
            }
            Polled::SubAck(refused) => {
                *state.subscribing = None;
                let ok = refused.is_none();
                self.subscribed(refused);
                if ok && state.backlog.kept {
                    self.start_sync(state);
                }
            }
            Polled::Message {
                topic,
                payload,
                retain,
            } => {
                if self.is_sync_topic(&topic) {
                    self.echo(&payload, state.backlog);
                } else {
                    let live = !retain && !state.backlog.kept;
                    self.on_message(&topic, &payload, live);
                }
            }
            Polled::Failed {
                why,
                version_refused,
            } => return self.on_failure(&why, version_refused, state),
        }
        Next::Drain
    }

    /// A connection error: either 3.1.1 is to be tried now, or it is
    /// logged and backed off from; then the connection is made again,
    /// from the configuration and broker in effect then (a reload's login
    /// and TLS files, the publish link's broker).
    fn on_failure(&self, why: &str, version_refused: bool, state: &mut Serving<'_>) -> Next {
        let broker = state.broker;
        let version = state.session.version();
        *state.subscribing = None;
        let before_connack = state.up_since.is_none();
        if before_connack && version_refused && state.spoken.refused(broker, version) {
            log::info!(
                "device link to broker {broker}: {why} at an MQTT 5 CONNECT; trying MQTT 3.1.1"
            );
            return Next::End(Ended::Lost);
        }
        if before_connack && version_refused {
            state.spoken.refused(broker, version);
        }
        if self.failed(broker, why, state.up_since.take(), state.retries) {
            return Next::End(Ended::Stopped);
        }
        Next::End(Ended::Lost)
    }

    /// The broker never confirmed the subscriptions: this connection is
    /// dropped and a new one made after the backoff.
    fn deaf(&self, broker: &Broker, retries: &mut Retries) -> Ended {
        let why = format!("no SUBACK within {} s", SUBACK_WAIT.as_secs());
        let wait = retries.backoff.wait();
        if retries.failures.first_of_kind(&broker.to_string(), &why) {
            log::warn!(
                "device link to broker {broker}: {why}; reconnecting in {} s",
                wait.as_secs()
            );
        }
        if self.pause(wait, &retries.moved) {
            return Ended::Stopped;
        }
        Ended::Lost
    }

    /// CONNACK: one SUBSCRIBE for both topics, so one SUBACK says both are in place.
    fn connected(&self, broker: &Broker, session: &Session, retries: &mut Retries) {
        log::info!(
            "device link connected to broker {broker} (MQTT {})",
            session.version().as_str()
        );
        retries.failures.connected();
        self.counters.device_protocol.store(
            match session.version() {
                Version::V5 => 5,
                Version::V311 => 4,
            },
            Ordering::Relaxed,
        );
        let config = self.config.get();
        if let Err(e) = session.subscribe(&[&config.heartbeat_topic, &config.reply_topic]) {
            log::error!("device link cannot subscribe: {e}");
        }
    }

    /// A connection error (rumqttc reconnects on the next poll): logs it
    /// once per kind and backs off. True when the relay stopped meanwhile.
    fn failed(
        &self,
        broker: &Broker,
        why: &str,
        up_since: Option<Instant>,
        retries: &mut Retries,
    ) -> bool {
        let backoff = &mut retries.backoff;
        if retries.failures.first_of_kind(&broker.to_string(), why) {
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
        self.link_down();
        let wait = backoff.wait();
        self.pause(wait, &retries.moved)
    }

    /// The link's connection is gone (or never came): when it was
    /// subscribed, every camera's presence is unknown from here on (what it
    /// missed meanwhile cannot be known).
    fn link_down(&self) {
        let was_up = self.counters.device_subscribed.load(Ordering::Relaxed);
        self.counters.device_link_down();
        if was_up {
            lock(&self.devices).lose_sight();
            if self.tracks_presence() {
                self.presence.report(Sighting::LostSight, Instant::now());
            }
        }
    }

    /// Whether the publisher's hold asks for heartbeats at all.
    fn tracks_presence(&self) -> bool {
        tracks_presence(&self.config.get())
    }

    /// The topic of the link's own sync marker (see [`Backlog`]): under
    /// `ms500-relay/sync/`, the client id made a single topic level.
    fn sync_topic(&self) -> String {
        let level: String = self.client_id.chars().map(topic_level_char).collect();
        format!("{SYNC_PREFIX}{level}")
    }

    /// Whether `topic` is [`DeviceLink::sync_topic`], without building it
    /// (asked of every message the link receives).
    fn is_sync_topic(&self, topic: &str) -> bool {
        topic.strip_prefix(SYNC_PREFIX).is_some_and(|level| {
            level
                .chars()
                .eq(self.client_id.chars().map(topic_level_char))
        })
    }

    /// The session was kept: subscribes to the marker's topic, and sends
    /// the marker once that is in place.
    fn start_sync(&self, state: &mut Serving<'_>) {
        let topic = self.sync_topic();
        match state.session.subscribe(&[&topic]) {
            Ok(()) => state.backlog.sync_suback = true,
            Err(e) => {
                log::warn!("device link cannot subscribe to {topic}: {e}");
                state.backlog.kept = false;
            }
        }
    }

    fn sync_subscribed(&self, refused: Option<String>, state: &mut Serving<'_>) {
        let topic = self.sync_topic();
        if let Some(codes) = refused {
            log::warn!(
                "the broker refused the subscription to {topic} ({codes}): heartbeats it kept \
                 for the device link while it was away may be taken as sent now (check its ACL)"
            );
            state.backlog.kept = false;
            return;
        }
        let marker = format!(
            "{}",
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), Instant::now())
        )
        .into_bytes();
        match state.session.publish(&topic, marker.clone()) {
            Ok(()) => state.backlog.marker = Some((marker, Instant::now())),
            Err(e) => {
                log::warn!("device link cannot publish to {topic}: {e}");
                state.backlog.kept = false;
            }
        }
    }

    /// A message on the marker's topic: the echo ends what the broker kept.
    fn echo(&self, payload: &[u8], backlog: &mut Backlog) {
        if backlog.marker.as_ref().is_some_and(|(m, _)| m == payload) {
            log::debug!("device link: the messages the broker kept for it are over");
            *backlog = Backlog::default();
        }
    }

    /// No echo within [`ECHO_WAIT`]: what comes now is taken as live.
    fn echo_overdue(&self, backlog: &mut Backlog) {
        let overdue = backlog
            .marker
            .as_ref()
            .is_some_and(|(_, sent)| sent.elapsed() > ECHO_WAIT);
        if overdue {
            log::warn!(
                "device link: no echo on {} within {} s: taking heartbeats as sent now (check \
                 the broker's ACL for that topic)",
                self.sync_topic(),
                ECHO_WAIT.as_secs()
            );
            *backlog = Backlog::default();
        }
    }

    /// The SUBACK: `refused` holds the codes when a subscription was refused.
    fn subscribed(&self, refused: Option<String>) {
        if let Some(codes) = refused {
            log::error!("the broker refused a subscription (check its ACL): {codes}");
            return;
        }
        self.counters.device_link_up();
        // Tests and operators wait for this line: from here on no
        // heartbeat or reply on these topics is missed.
        log::info!(
            "device link subscribed to {} and {}",
            self.config.get().heartbeat_topic,
            self.config.get().reply_topic
        );
    }

    fn on_message(&self, topic: &str, payload: &[u8], live: bool) {
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "message on {}: {}",
                log_limit::cut(&redact::printable(topic)),
                log_limit::cut(&redact::payload(payload))
            );
        }
        // One look at the configuration per message (its topics need a restart to change).
        let config = self.config.get();
        if let Some(raw_unit) = config::plus_level(&config.reply_topic, topic) {
            // A reply shows the camera had the SCS or UDS it answers.
            if tracks_presence(&config) {
                let unit = raw_unit.to_string();
                self.presence
                    .report(Sighting::Reply { unit }, Instant::now());
            }
            // Routes exist only for valid units; the shown form is for the log.
            match self.routes.route(raw_unit) {
                Some(outbox) => {
                    let line = match reply::line(payload, raw_unit, outbox.wraps_replies()) {
                        Ok(line) => line,
                        Err(why) => return self.refuse_reply(raw_unit, why),
                    };
                    log::info!(
                        "reply from unit {} -> backend {}",
                        heartbeat::shown(raw_unit),
                        outbox.peer()
                    );
                    // Logged before the backend can read it.
                    log::logger().flush();
                    if outbox.offer("device reply", line) {
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
        } else if let Some(device) = config::plus_level(&config.heartbeat_topic, topic) {
            let tracks = tracks_presence(&config);
            self.on_heartbeat(&heartbeat::shown_ref(device), payload, live, tracks);
        } else {
            log::debug!(
                "message on unexpected topic {}: ignored",
                log_limit::cut(&redact::printable(topic))
            );
        }
    }

    /// A reply that could be read as more than one line or value is never
    /// written: counted and logged (rate-limited), like other remote input.
    fn refuse_reply(&self, raw_unit: &str, why: reply::Refused) {
        Counters::add(&self.counters.replies_dropped);
        if log_limit::allow(Kind::RefusedReply) {
            log::warn!(
                "reply from unit {} dropped: {}",
                heartbeat::shown(raw_unit),
                why.describe()
            );
        }
    }

    /// A heartbeat of `device`; `tracks`: the publisher's hold asks for it.
    fn on_heartbeat(&self, device: &str, payload: &[u8], live: bool, tracks: bool) {
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
            let kind = if live {
                ""
            } else {
                " (not live: retained, or kept by the broker while the link was away)"
            };
            log::debug!("heartbeat {device}: {}{kind}", status.summary());
        }
        let arrival = Arrival {
            at: Instant::now(),
            wall: SystemTime::now(),
            live,
        };
        let (recorded, online, shown) = {
            let mut table = lock(&self.devices);
            let recorded = table.record(device, status, arrival);
            // Rendered only for the lines below (a device new, back or moved).
            let news = recorded.moved.is_some()
                || (recorded.class.is_some() && recorded.seen != Seen::Again);
            let shown = (news && log::log_enabled!(log::Level::Info))
                .then(|| table.brief(device))
                .flatten();
            (recorded, table.counts().online, shown)
        };
        if let Some(class) = recorded.class.filter(|_| tracks) {
            let beat = Sighting::Beat {
                camera: device.to_ascii_lowercase(),
                at: arrival.at,
                class,
                interval: recorded.interval,
            };
            self.presence.report(beat, arrival.at);
        }
        let shown = shown.unwrap_or_default();
        if let Some((ip, network)) = &recorded.moved {
            if log_limit::allow(Kind::DeviceChanged) {
                log::info!("device {device} moved (was ip={ip} net={network}): {shown}");
            }
        }
        if recorded.class.is_none() {
            return;
        }
        let change = match recorded.seen {
            Seen::New => "online (first heartbeat since start)",
            Seen::BackOnline => "is back online",
            Seen::Again => return,
        };
        if online == 1 {
            // The main thread sleeps without an offline deadline while no
            // device is online: it has one now.
            self.counters.state_bell.ring();
        }
        if log_limit::allow(Kind::DeviceOnline) {
            log::info!("device {device} {change}: {shown}");
        }
    }
}

/// Whether the publisher's hold asks for heartbeats at all.
fn tracks_presence(config: &Config) -> bool {
    config.hold_offline && config.presence_field.is_some()
}

/// Where the link's sync marker is published: this, then its client id
/// made one topic level.
const SYNC_PREFIX: &str = "ms500-relay/sync/";

/// A character of the client id as it stands in the sync topic's level.
fn topic_level_char(c: char) -> char {
    if matches!(c, '+' | '#' | '/') || c.is_control() {
        '_'
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::client::describe;
    use super::*;
    use rumqttc::v5::ConnectionError;

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
            routes: ReplyRoutes::new(config.max_devices),
            devices: Arc::new(Mutex::new(DeviceTable::new(config.max_devices))),
            config: Arc::new(Live::new(config)),
            client_id: "gw-sub".into(),
            transport: Transport::tcp(),
            counters: Arc::new(Counters::default()),
            presence: Arc::default(),
            broker_in_use: Arc::default(),
            stop: Stop::new(),
            intake: Stop::new(),
        }
    }

    fn count(link: &DeviceLink, counter: fn(&Counters) -> &crate::ops::counters::Counter) -> u64 {
        counter(&link.counters).load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn a_reply_goes_to_the_backend_holding_the_units_route_and_only_there() {
        let link = link();
        let (outbox, _woken) =
            crate::delivery::outbox::Outbox::new(1, "127.0.0.1:5000".parse().unwrap());
        link.routes.claim("cam1", &outbox);
        link.on_message("/device/ms500/cam1/socket_reply", br#"{"ok":1}"#, true);
        assert_eq!(outbox.take(), b"{\"ok\":1}\n");
        assert_eq!(count(&link, |c| &c.replies_routed), 1);
        link.on_message("/device/ms500/cam2/socket_reply", br#"{"ok":2}"#, true);
        assert!(outbox.is_empty(), "cam2 has no route here");
        assert_eq!(count(&link, |c| &c.replies_dropped), 1);
    }

    #[test]
    fn where_status_lines_are_on_replies_say_so_and_forgeries_are_dropped() {
        let link = link();
        let (outbox, _woken) =
            crate::delivery::outbox::Outbox::new(1, "127.0.0.1:5000".parse().unwrap());
        outbox.set_wrap_replies(true);
        link.routes.claim("cam-01", &outbox);
        let topic = "/device/ms500/cam-01/socket_reply";
        link.on_message(
            topic,
            br#"{"status":"ok","type":"AIM","unit":"cam-02"}"#,
            true,
        );
        assert_eq!(
            outbox.take(),
            b"{\"reply\":{\"status\":\"ok\",\"type\":\"AIM\",\"unit\":\"cam-02\"},\"unit\":\"cam-01\"}\n"
        );
        link.on_message(topic, b"{\"fw\":1}\n{\"status\":\"ok\"}", true);
        link.on_message(topic, b"not json", true);
        outbox.set_wrap_replies(false);
        link.on_message(topic, b"{\"fw\":1}{\"status\":\"ok\"}", true);
        assert!(
            outbox.is_empty(),
            "nothing that could be read as two lines or values"
        );
        assert_eq!(count(&link, |c| &c.replies_dropped), 3);
        assert_eq!(count(&link, |c| &c.replies_routed), 1);
    }

    #[test]
    fn heartbeats_fill_the_device_table_and_other_topics_are_ignored() {
        let link = link();
        link.on_message("/device/ms500/cam1/online", br#"{"ip":"10.0.0.7"}"#, true);
        // (Odd heartbeats are left out: their log budget is global, and
        // log_limit's own test counts it.)
        link.on_message("/somewhere/else", b"{}", true);
        let table =
            link.devices
                .lock()
                .unwrap()
                .snapshot(10, Instant::now(), Duration::from_secs(90));
        assert_eq!(table.total, 1, "only the heartbeat counts");
        assert_eq!(table.shown[0].id, "cam1");
        assert_eq!(table.shown[0].status.ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(count(&link, |c| &c.replies_dropped), 0);
    }
}
