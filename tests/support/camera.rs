//! A simulated MS500 camera: a real MQTT 3.1.1 client (rumqttc) against the
//! test's mosquitto that behaves the way the camera's firmware does with
//! esp-mqtt's defaults. A camera that is kinder than the real one hides losses.
//!
//! One thread per camera, its "MQTT task", owns the connection and does what
//! the firmware's task does:
//! - it connects with a clean session under a fixed client id; on every
//!   ConnAck it subscribes `/service/ms500/{unit}/socket` at QoS 1, then
//!   publishes a heartbeat at QoS 1 on `/device/ms500/{MAC}/online`
//!   ([`CameraOptions::subscribe_after_heartbeat`]: the heartbeat first and
//!   the SUBSCRIBE a moment later);
//! - it heartbeats every [`CameraOptions::heartbeat_every`] ± a jitter, from a
//!   timer started at boot whose ticks while disconnected are skipped, or one
//!   restarted at each connect ([`Timer`]); ticks may be dropped on purpose;
//! - it handles each command as it takes it from the connection and PUBACKs
//!   it afterwards (esp-mqtt acks once the handler returned). A command of
//!   [`CameraOptions::blocking_types`] blocks the task for `block_for` (an
//!   OTA: nothing read, no heartbeat, no keepalive), then the camera restarts:
//!   the connection is dropped without DISCONNECT, so what the broker sent
//!   behind is lost unread; uptime restarts at 0 and the camera connects again
//!   `reboot_delay` later, as a new session;
//! - after a lost connection (broker gone, a [`super::Cutter`] cut) it dials
//!   again every `reconnect_delay`.
//!
//! The test drives it ([`Camera::kill`], [`Camera::power_on`],
//! [`Camera::disconnect_for`], [`Camera::reboot`], [`Camera::stop`]), each
//! call returning once the task acted, and reads what it did
//! ([`Camera::log`], [`Camera::wait_until`]). Dropping the Camera ends and
//! joins its thread. Not simulated: a real power cut leaves a half-open socket
//! the broker notices only at 1.5 × keepalive (here it sees the close at once);
//! and esp-mqtt's outbox, which would send an unacknowledged heartbeat again
//! after a reconnect.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use rumqttc::{Client, Connection, Event, MqttOptions, Outgoing, Packet, Publish, QoS};

use super::WAIT;

/// How often the task looks for a control from the test while connected
/// (nothing can wake a rumqttc poll): how late `kill()` and the like act, at
/// ~0.13 % of a core per connected camera in a debug build (20 ms: 0.5 %).
const CONTROL_POLL: Duration = Duration::from_millis(100);

/// When the periodic heartbeat timer counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Started at boot, runs regardless of connects; a tick while
    /// disconnected is skipped (the firmware's timer).
    Independent,
    /// The period starts again at each connect.
    RestartOnConnect,
}

/// What a heartbeat's `timestamp` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Whole seconds since the camera's last boot.
    Uptime,
    /// Unix time in whole seconds.
    Unix,
}

/// How a [`Camera`] behaves. The defaults are the real firmware's where it
/// is known, and say so where they are a guess.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    /// The camera's MAC in hex, any case. Defaults to `A0B1C2D3E4F5`.
    pub mac: String,
    /// The unit whose command topic it subscribes. Defaults to `MS500-H090-EP-2549-0038`.
    pub unit: String,
    /// Period of the heartbeat timer. Defaults to 30 s (a guess: a third of
    /// the relay's default `DEVICE_TIMEOUT`).
    pub heartbeat_every: Duration,
    /// Each period is drawn in `heartbeat_every` ± this percentage. Defaults to 0.
    pub jitter_percent: u32,
    /// Defaults to [`Timer::Independent`].
    pub timer: Timer,
    /// Seed of the jitter and drop draws. Defaults to 1.
    pub seed: u64,
    /// Share (0.0..=1.0) of periodic heartbeats not sent. Defaults to 0.
    pub drop_fraction: f64,
    /// Periodic heartbeats not sent, by sequence number: the camera's periodic
    /// ticks while connected, from 0 over its whole life. Defaults to none.
    pub drop_heartbeats: Vec<u64>,
    /// `Some(d)`: on connect, the heartbeat goes first and the SUBSCRIBE `d`
    /// later. Defaults to `None` (subscribe, then heartbeat at once).
    pub subscribe_after_heartbeat: Option<Duration>,
    /// Command types that block the task, then restart the camera. Defaults to FMW, APP, AIM, FRS.
    pub blocking_types: Vec<String>,
    /// How long such a command blocks the task. Defaults to 60 s (a guess: an OTA download and flash).
    pub block_for: Duration,
    /// How long a restarting camera stays away. Defaults to 10 s.
    pub reboot_delay: Duration,
    /// Wait before dialing again after a lost connection. Defaults to 10 s
    /// (esp-mqtt's `reconnect_timeout_ms`).
    pub reconnect_delay: Duration,
    /// Defaults to [`Clock::Uptime`].
    pub clock: Clock,
    /// `ip` in the heartbeat. Defaults to `10.0.0.9`.
    pub ip: String,
    /// `network` in the heartbeat (`wifi`, `eth` or `lte`; the link flags follow). Defaults to `wifi`.
    pub network: String,
}

impl Default for CameraOptions {
    fn default() -> CameraOptions {
        CameraOptions {
            mac: "A0B1C2D3E4F5".into(),
            unit: "MS500-H090-EP-2549-0038".into(),
            heartbeat_every: Duration::from_secs(30),
            jitter_percent: 0,
            timer: Timer::Independent,
            seed: 1,
            drop_fraction: 0.0,
            drop_heartbeats: Vec::new(),
            subscribe_after_heartbeat: None,
            blocking_types: ["FMW", "APP", "AIM", "FRS"].map(String::from).to_vec(),
            block_for: Duration::from_secs(60),
            reboot_delay: Duration::from_secs(10),
            reconnect_delay: Duration::from_secs(10),
            clock: Clock::Uptime,
            ip: "10.0.0.9".into(),
            network: "wifi".into(),
        }
    }
}

/// A command the task took from its connection and handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub payload: Vec<u8>,
    /// When the task took it.
    pub at: Instant,
    /// Which connection (1-based, [`CameraLog::connects`]) it arrived on.
    pub connection: usize,
    /// Which boot (1-based, [`CameraLog::boots`]) it arrived in.
    pub boot: usize,
}

/// A heartbeat the task handed to its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub at: Instant,
    /// Its `timestamp` field.
    pub timestamp: u64,
    /// Periodic heartbeats' sequence number; `None` for a connect heartbeat.
    pub seq: Option<u64>,
    pub connection: usize,
    pub boot: usize,
}

/// Everything the camera did so far.
#[derive(Debug, Clone, Default)]
pub struct CameraLog {
    pub received: Vec<Received>,
    pub heartbeats: Vec<Heartbeat>,
    /// Periodic heartbeats not sent on purpose, by sequence number.
    pub dropped_heartbeats: Vec<u64>,
    /// When each connection got its ConnAck.
    pub connects: Vec<Instant>,
    /// When each SubAck arrived.
    pub subscribed: Vec<Instant>,
    /// When each boot began (uptime 0): the start, restarts, reboots, power-ons.
    pub boots: Vec<Instant>,
    /// Restarts after a blocking command.
    pub restarts: usize,
}

/// What the test asks of the task.
#[derive(Debug, Clone, Copy)]
enum Control {
    Kill,
    PowerOn,
    DisconnectFor(Duration),
    Reboot,
    Stop,
}

/// A control and where the task says it acted.
type Order = (Control, Sender<()>);

/// How a connection ended: what next, and the order to report done once
/// the connection is dropped.
type End = (Phase, Option<Sender<()>>);

/// What the task does next.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Disconnected; dials again at this instant.
    Away(Instant),
    /// Powered off until [`Control::PowerOn`], which boots it.
    Killed,
    /// Its MQTT client stopped until [`Control::PowerOn`], which is no boot.
    Stopped,
    /// The connection where the task is: nothing changes.
    Dial,
    Exit,
}

struct Shared {
    log: Mutex<CameraLog>,
    changed: Condvar,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, CameraLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, change: impl FnOnce(&mut CameraLog)) {
        change(&mut self.log());
        self.changed.notify_all();
    }
}

/// A simulated camera (see the module doc); its thread ends on drop.
pub struct Camera {
    /// The id in its heartbeat topic: the MAC, upper case.
    pub id: String,
    shared: Arc<Shared>,
    control: Option<Sender<Order>>,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    /// Boots the camera and lets it dial `127.0.0.1:port` (a broker's or a
    /// [`super::Cutter`]'s); [`Camera::wait_subscribed`] waits for it to be ready.
    pub fn start(port: u16, options: CameraOptions) -> Camera {
        let id = options.mac.to_uppercase();
        let shared = Arc::new(Shared {
            log: Mutex::default(),
            changed: Condvar::new(),
        });
        let (control, orders) = crossbeam_channel::bounded(4);
        let now = Instant::now();
        let task = Task {
            rng: XorShift(options.seed.max(1)),
            options,
            id: id.clone(),
            port,
            shared: Arc::clone(&shared),
            orders,
            boot_at: now,
            next_tick: now,
            seq: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("camera-{id}"))
            .spawn(move || task.run())
            .expect("spawn the camera's thread");
        Camera {
            id,
            shared,
            control: Some(control),
            thread: Some(thread),
        }
    }

    /// Power loss: the connection closes without DISCONNECT; nothing more
    /// until [`Camera::power_on`].
    pub fn kill(&self) {
        self.order(Control::Kill);
    }

    /// After [`Camera::kill`]: boots (uptime 0) and connects now. After
    /// [`Camera::stop`]: connects now, same boot. Otherwise nothing.
    pub fn power_on(&self) {
        self.order(Control::PowerOn);
    }

    /// Network loss: the connection drops without DISCONNECT and the camera
    /// dials again after `away`; same boot, its heartbeat timer runs on.
    pub fn disconnect_for(&self, away: Duration) {
        self.order(Control::DisconnectFor(away));
    }

    /// Restarts now (connection dropped, uptime 0), connects `reboot_delay` later.
    pub fn reboot(&self) {
        self.order(Control::Reboot);
    }

    /// The MQTT client stops: DISCONNECT, no reconnect until [`Camera::power_on`].
    pub fn stop(&self) {
        self.order(Control::Stop);
    }

    /// Sends `control` and waits until the task acted on it: within
    /// [`CONTROL_POLL`], or once a connect in progress ended (rumqttc gives up after 5 s).
    fn order(&self, control: Control) {
        let (done, acted) = crossbeam_channel::bounded(1);
        let sent = self.control.as_ref().map(|c| c.send((control, done)));
        assert!(
            matches!(sent, Some(Ok(()))),
            "camera {}'s thread has ended",
            self.id
        );
        if acted.recv_timeout(WAIT).is_err() {
            panic!("camera {} did not act on {control:?}", self.id);
        }
    }

    /// A copy of everything it did so far.
    pub fn log(&self) -> CameraLog {
        self.shared.log().clone()
    }

    /// Waits until `done` holds for its log, or `timeout`; whether it held.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&CameraLog) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log();
        loop {
            if done(&log) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            log = match self.shared.changed.wait_timeout(log, left) {
                Ok((log, _)) => log,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Waits until `n` commands arrived (or `timeout`), and returns all so far.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |l| l.received.len() >= n);
        self.received()
    }

    /// Waits until its `n`th SubAck: subscribed on its `n`th connection.
    pub fn wait_subscribed(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |l| l.subscribed.len() >= n)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.log().received.clone()
    }

    /// The payloads received, each once, in the order they first arrived.
    pub fn distinct(&self) -> Vec<Vec<u8>> {
        distinct(&self.shared.log().received)
    }

    /// Commands received again with the same bytes.
    pub fn duplicates(&self) -> usize {
        let log = self.shared.log();
        log.received.len() - distinct(&log.received).len()
    }

    /// Asserts that what arrived, each payload counted at its first arrival,
    /// is `expected`, in that order, and nothing else.
    #[track_caller]
    pub fn assert_in_order<T: AsRef<[u8]>>(&self, expected: &[T]) {
        let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let got: Vec<String> = self.distinct().iter().map(|p| text(p)).collect();
        let want: Vec<String> = expected.iter().map(|p| text(p.as_ref())).collect();
        assert_eq!(
            got, want,
            "camera {}: commands in first-arrival order",
            self.id
        );
    }

    /// ConnAcks so far.
    pub fn connects(&self) -> usize {
        self.shared.log().connects.len()
    }

    /// Heartbeats handed to the connection so far.
    pub fn heartbeats_sent(&self) -> usize {
        self.shared.log().heartbeats.len()
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        // A closed control channel ends the task wherever it waits.
        self.control = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The camera's MQTT task: it owns the connection and the heartbeat timer.
struct Task {
    options: CameraOptions,
    id: String,
    port: u16,
    shared: Arc<Shared>,
    orders: Receiver<Order>,
    rng: XorShift,
    boot_at: Instant,
    /// When the periodic timer fires next.
    next_tick: Instant,
    /// Sequence number of the next periodic tick while connected.
    seq: u64,
}

impl Task {
    fn run(mut self) {
        self.boot();
        let mut phase = Phase::Dial;
        loop {
            phase = match phase {
                Phase::Dial => self.connection(),
                Phase::Away(_) | Phase::Killed | Phase::Stopped => self.idle(phase),
                Phase::Exit => return,
            };
        }
    }

    /// Waits, disconnected, for the time to dial or for the test's next order.
    fn idle(&mut self, phase: Phase) -> Phase {
        let order = match phase {
            Phase::Away(until) => self.orders.recv_deadline(until),
            _ => self
                .orders
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match order {
            Ok((control, done)) => {
                let next = self.obey(control, phase);
                let _ = done.send(());
                next
            }
            Err(RecvTimeoutError::Timeout) => Phase::Dial,
            Err(RecvTimeoutError::Disconnected) => Phase::Exit,
        }
    }

    /// The phase an order leads to from `phase`.
    fn obey(&mut self, control: Control, phase: Phase) -> Phase {
        let now = Instant::now();
        match (control, phase) {
            (Control::Kill, _) => Phase::Killed,
            (Control::Stop, _) => Phase::Stopped,
            (Control::DisconnectFor(away), _) => Phase::Away(now + away),
            (Control::Reboot, _) => {
                self.boot();
                Phase::Away(now + self.options.reboot_delay)
            }
            (Control::PowerOn, Phase::Killed) => {
                self.boot();
                Phase::Dial
            }
            (Control::PowerOn, Phase::Stopped) => Phase::Dial,
            (Control::PowerOn, _) => phase,
        }
    }

    /// An order taken while connected; `Some` ends the connection (a stop
    /// with a DISCONNECT), to be reported done once it is dropped.
    fn obey_connected(
        &mut self,
        order: Order,
        client: &Client,
        conn: &mut Connection,
    ) -> Option<End> {
        let (control, done) = order;
        if matches!(control, Control::Stop) {
            let _ = client.try_disconnect();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) => break,
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    _ => {}
                }
            }
        }
        match self.obey(control, Phase::Dial) {
            Phase::Dial => {
                let _ = done.send(());
                None
            }
            next => Some((next, Some(done))),
        }
    }

    /// One connection, from dialing to its end. The connection is dropped
    /// (socket closed, unread packets lost) before an order is reported done.
    fn connection(&mut self) -> Phase {
        let (client, mut conn) = Client::new(self.mqtt_options(), 16);
        let (next, done) = self.serve(&client, &mut conn);
        drop(conn);
        drop(client);
        if let Some(done) = done {
            let _ = done.send(());
        }
        next
    }

    fn mqtt_options(&self) -> MqttOptions {
        // esp-mqtt's default id: `ESP32_` and the MAC's last three bytes.
        let tail = &self.id[self.id.len().saturating_sub(6)..];
        let mut o = MqttOptions::new(format!("ESP32_{tail}"), "127.0.0.1", self.port);
        o.set_clean_session(true);
        o.set_keep_alive(Duration::from_secs(120)); // esp-mqtt's default
                                                    // esp-mqtt acks a PUBLISH once its handler returned, not on arrival.
        o.set_manual_acks(true);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o
    }

    fn serve(&mut self, client: &Client, conn: &mut Connection) -> End {
        // Blocking: a connect cut short by a timeout would be lost, and
        // rumqttc bounds it (5 s).
        if !matches!(conn.recv(), Ok(Ok(Event::Incoming(Packet::ConnAck(_))))) {
            return (self.lost(), None);
        }
        let mut subscribe_at = self.on_connect(client);
        loop {
            match self.orders.try_recv() {
                Ok(order) => {
                    if let Some(end) = self.obey_connected(order, client, conn) {
                        return end;
                    }
                }
                Err(TryRecvError::Disconnected) => return (Phase::Exit, None),
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if subscribe_at.is_some_and(|at| at <= now) {
                subscribe_at = None;
                self.subscribe(client);
            }
            if self.next_tick <= now {
                self.tick(client, now);
            }
            let next = subscribe_at.map_or(self.next_tick, |at| at.min(self.next_tick));
            let wait = next.saturating_duration_since(now).min(CONTROL_POLL);
            match conn.recv_timeout(wait) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if let Some(end) = self.handle(p, client, conn) {
                        return end;
                    }
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                    let now = Instant::now();
                    self.shared.note(|l| l.subscribed.push(now));
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return (self.lost(), None),
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => return (Phase::Exit, None),
            }
        }
    }

    /// Lost connection: dial again after `reconnect_delay` (10 ms at least: no spinning).
    fn lost(&self) -> Phase {
        let delay = self.options.reconnect_delay.max(Duration::from_millis(10));
        Phase::Away(Instant::now() + delay)
    }

    /// What the firmware does on `MQTT_EVENT_CONNECTED`; returns when to
    /// subscribe if that comes after the heartbeat.
    fn on_connect(&mut self, client: &Client) -> Option<Instant> {
        let now = Instant::now();
        self.shared.note(|l| l.connects.push(now));
        match self.options.timer {
            Timer::RestartOnConnect => self.next_tick = now + self.period(),
            Timer::Independent => self.skip_ticks_until(now),
        }
        match self.options.subscribe_after_heartbeat {
            None => {
                self.subscribe(client);
                self.heartbeat(client, None);
                None
            }
            Some(delay) => {
                self.heartbeat(client, None);
                Some(now + delay)
            }
        }
    }

    fn subscribe(&self, client: &Client) {
        let topic = format!("/service/ms500/{}/socket", self.options.unit);
        let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
    }

    /// Handles a command in the task, as the firmware's callback does.
    fn handle(&mut self, p: Publish, client: &Client, conn: &mut Connection) -> Option<End> {
        let at = Instant::now();
        self.shared.note(|l| {
            let received = Received {
                payload: p.payload.to_vec(),
                at,
                connection: l.connects.len(),
                boot: l.boots.len(),
            };
            l.received.push(received);
        });
        let kind = command_type(&p.payload);
        let blocks = kind.is_some_and(|k| self.options.blocking_types.contains(&k));
        if !blocks {
            let _ = client.try_ack(&p);
            return None;
        }
        // Busy (an OTA): nothing read, no heartbeat; an order (a power or
        // network loss) ends it without a restart.
        let until = at + self.options.block_for;
        loop {
            match self.orders.recv_deadline(until) {
                Ok(order) => {
                    if let Some(end) = self.obey_connected(order, client, conn) {
                        return Some(end);
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Some((Phase::Exit, None)),
            }
        }
        self.shared.note(|l| l.restarts += 1);
        self.boot();
        let back = Instant::now() + self.options.reboot_delay;
        Some((Phase::Away(back), None))
    }

    /// A periodic tick while connected: a heartbeat, unless dropped on purpose.
    fn tick(&mut self, client: &Client, now: Instant) {
        let seq = self.seq;
        self.seq += 1;
        self.skip_ticks_until(now);
        let drawn =
            self.options.drop_fraction > 0.0 && self.rng.unit() < self.options.drop_fraction;
        if drawn || self.options.drop_heartbeats.contains(&seq) {
            self.shared.note(|l| l.dropped_heartbeats.push(seq));
        } else {
            self.heartbeat(client, Some(seq));
        }
    }

    /// Moves the timer past `now`: ticks that fell in between are skipped.
    fn skip_ticks_until(&mut self, now: Instant) {
        while self.next_tick <= now {
            let period = self.period();
            self.next_tick += period;
        }
    }

    fn heartbeat(&mut self, client: &Client, seq: Option<u64>) {
        let now = Instant::now();
        let timestamp = match self.options.clock {
            Clock::Uptime => now.duration_since(self.boot_at).as_secs(),
            Clock::Unix => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let (ip, network) = (&self.options.ip, &self.options.network);
        // The firmware's field order (PROTOCOL.md §2.3), which serde_json's map would sort.
        let body = format!(
            r#"{{"device_id":"{id}","msg_type":"online","timestamp":{timestamp},"ip":"{ip}","network":"{network}","eth_connected":{},"wifi_connected":{},"lte_connected":{},"cpu_temp":47.5,"sense_temp":39.25,"video_fps":15,"spi_fps":30}}"#,
            network == "eth",
            network == "wifi",
            network == "lte",
            id = self.id,
        );
        let topic = format!("/device/ms500/{}/online", self.id);
        let sent = client.try_publish(topic, QoS::AtLeastOnce, false, body);
        if sent.is_ok() {
            self.shared.note(|l| {
                let heartbeat = Heartbeat {
                    at: now,
                    timestamp,
                    seq,
                    connection: l.connects.len(),
                    boot: l.boots.len(),
                };
                l.heartbeats.push(heartbeat);
            });
        }
    }

    /// A (re)boot: uptime and the heartbeat timer start again.
    fn boot(&mut self) {
        let now = Instant::now();
        self.boot_at = now;
        self.next_tick = now + self.period();
        self.shared.note(|l| l.boots.push(now));
    }

    /// One timer period, jittered.
    fn period(&mut self) -> Duration {
        let spread = f64::from(self.options.jitter_percent) / 100.0;
        let factor = 1.0 + spread * (2.0 * self.rng.unit() - 1.0);
        let secs = self.options.heartbeat_every.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.max(0.001))
    }
}

fn distinct(received: &[Received]) -> Vec<Vec<u8>> {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for r in received {
        if !seen.contains(&r.payload) {
            seen.push(r.payload.clone());
        }
    }
    seen
}

/// A command's `type`; `None` for what is not a JSON object with one (the
/// firmware ignores those).
fn command_type(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(v.get("type")?.as_str()?.to_string())
}

/// xorshift64: reproducible draws from a seed, no crate needed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Many cameras' heartbeats from one client (a load rig, not a faithful
/// camera: nothing subscribes), each camera every `every`, spread evenly;
/// ids `FLEET00000`…; stops when dropped.
pub struct HeartbeatFleet {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl HeartbeatFleet {
    pub fn start(port: u16, cameras: usize, every: Duration) -> HeartbeatFleet {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let mut opts = MqttOptions::new(format!("fleet-{}", std::process::id()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, connection) = Client::new(opts, 1024);
        super::pump(connection);
        let thread = std::thread::spawn(move || {
            let step = every / cameras.max(1) as u32;
            let mut uptime = 0u64;
            loop {
                for i in 0..cameras {
                    let hb = format!(
                        r#"{{"device_id":"{}","msg_type":"online","timestamp":{uptime}}}"#,
                        HeartbeatFleet::id_of(i)
                    );
                    let topic = format!("/device/ms500/{}/online", HeartbeatFleet::id_of(i));
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, hb.into_bytes());
                    match stopped.recv_timeout(step) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
                uptime += every.as_secs().max(1);
            }
        });
        HeartbeatFleet {
            stop,
            thread: Some(thread),
        }
    }

    fn id_of(i: usize) -> String {
        format!("FLEET{i:05}")
    }

    /// Camera `i`'s id as a command names it.
    pub fn id(&self, i: usize) -> String {
        HeartbeatFleet::id_of(i).to_ascii_lowercase()
    }
}

impl Drop for HeartbeatFleet {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
