//! The device table: each device's last heartbeat and when it came, and
//! the online/offline transitions of PROTOCOL.md §2.3, bounded by
//! `MAX_DEVICES`. Pure bookkeeping with the clock passed in, shared as
//! `Arc<Mutex<DeviceTable>>`: the device link thread records heartbeats;
//! the main thread sweeps for silent devices ([`DeviceTable::sweep`]) and
//! takes snapshots for the status file.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::delivery::policy::{cadence, Cadence, Class, Remembered, State};
use crate::devices::heartbeat::Heartbeat;
use crate::devices::registry::Entry;

/// The device's address or network as it was, when `new` changes either.
fn moved(old: &Packed, new: &Heartbeat) -> Option<(String, String)> {
    let [_, _, _, ip, network] = old.text_fields();
    let changed = |was: Option<&str>, now: &Option<String>| {
        was.is_some() && now.is_some() && was != now.as_deref()
    };
    if !changed(ip, &new.ip) && !changed(network, &new.network) {
        return None;
    }
    Some((
        ip.unwrap_or("absent").to_string(),
        network.unwrap_or("absent").to_string(),
    ))
}

/// How often at most the sweep logs that devices were forgotten.
const FORGOTTEN_LOG_EVERY: Duration = Duration::from_secs(60);

fn unix_u32(t: SystemTime) -> u32 {
    u32::try_from(crate::ops::time::unix(t)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone)]
struct Device {
    /// Its key in `by_silence`.
    seen_key: (Instant, u64),
    /// Wall-clock second of the last heartbeat (what the status file
    /// shows; u32 seconds last until 2106, and the whole struct then fits
    /// a smaller allocation than with a `SystemTime`).
    last_seen_unix: u32,
    online: bool,
    /// A live heartbeat came from it in this run (a remembered device, or
    /// one seen only through a retained or queued message, has none yet).
    heard: bool,
    /// Its last heartbeat was live and proved it present, in [`DeviceTable::epoch`] `live_epoch`.
    live: bool,
    live_epoch: u16,
    /// Remembered from the last run as offline.
    remembered_offline: bool,
    cadence: Cadence,
    status: Packed,
}

/// A heartbeat as the table keeps it, in a third of a [`Heartbeat`]'s room
/// (a table of 100,000 devices must fit a gateway): its five strings in
/// one allocation, replaced only when one of them changed, numbers with
/// NaN for absent (a heartbeat's numbers are always finite).
#[derive(Debug, Clone)]
struct Packed {
    /// device_id, msg_type, timestamp, ip, network, one after the other.
    text: Box<str>,
    /// Where each string ends in `text`; [`ABSENT`] when it was not sent.
    ends: [u16; 5],
    numbers: [f64; 5],
    flags: [Option<bool>; 3],
}

const ABSENT: u16 = u16::MAX;

impl Packed {
    fn texts(h: &Heartbeat) -> [Option<&str>; 5] {
        [
            h.device_id.as_deref(),
            h.msg_type.as_deref(),
            h.timestamp.as_deref(),
            h.ip.as_deref(),
            h.network.as_deref(),
        ]
    }

    fn new(h: &Heartbeat) -> Packed {
        let mut packed = Packed {
            text: Box::from(""),
            ends: [ABSENT; 5],
            numbers: [f64::NAN; 5],
            flags: [None; 3],
        };
        packed.update(h);
        packed
    }

    /// Takes `h`'s values; allocates only when a string changed.
    fn update(&mut self, h: &Heartbeat) {
        let texts = Packed::texts(h);
        if texts != self.text_fields() {
            let mut text = String::new();
            for (end, field) in self.ends.iter_mut().zip(texts) {
                *end = match field {
                    // Each is cut to MAX_FIELD_CHARS: far below u16::MAX.
                    Some(t) => {
                        text.push_str(t);
                        u16::try_from(text.len()).unwrap_or(ABSENT - 1)
                    }
                    None => ABSENT,
                };
            }
            self.text = text.into_boxed_str();
        }
        let numbers = [
            h.cpu_temp,
            h.sense_temp,
            h.video_fps,
            h.spi_fps,
            h.lte_signal,
        ];
        self.numbers = numbers.map(|n| n.unwrap_or(f64::NAN));
        self.flags = [h.eth_connected, h.wifi_connected, h.lte_connected];
    }

    fn text_fields(&self) -> [Option<&str>; 5] {
        let mut start = 0;
        self.ends.map(|end| {
            if end == ABSENT {
                return None;
            }
            let field = self.text.get(start..usize::from(end));
            start = usize::from(end);
            Some(field.unwrap_or(""))
        })
    }

    fn unpack(&self) -> Heartbeat {
        let [device_id, msg_type, timestamp, ip, network] =
            self.text_fields().map(|t| t.map(str::to_string));
        let [cpu_temp, sense_temp, video_fps, spi_fps, lte_signal] =
            self.numbers.map(|n| (!n.is_nan()).then_some(n));
        let [eth_connected, wifi_connected, lte_connected] = self.flags;
        Heartbeat {
            device_id,
            msg_type,
            timestamp,
            ip,
            network,
            eth_connected,
            wifi_connected,
            lte_connected,
            cpu_temp,
            sense_temp,
            video_fps,
            spi_fps,
            lte_signal,
        }
    }
}

/// One device as the status file and the `status` command show it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    pub id: String,
    pub online: bool,
    /// Present, unknown or offline (`cadence::state`).
    pub state: State,
    /// Its heartbeat interval as learned.
    pub interval: Option<Duration>,
    pub last_seen: SystemTime,
    pub status: Heartbeat,
}

/// The devices shown (the most recently seen first) and counts of all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableSnapshot {
    pub shown: Vec<DeviceSnapshot>,
    pub total: usize,
    pub online: usize,
    /// Devices forgotten since start because the table was full.
    pub forgotten: u64,
    /// Devices present, unknown, offline.
    pub states: [usize; 3],
}

/// Every device seen, ordered by last heartbeat too (so a sweep costs what
/// changes, not what is known). An id is stored once (`Arc<str>`, shared by
/// both indexes): a heartbeat of a known device allocates nothing here. At
/// most `MAX_DEVICES`: a new one past that makes the table forget the
/// device silent the longest (counted, logged at most once a minute). Ids
/// and heartbeat strings are cut to
/// [`crate::devices::heartbeat::MAX_FIELD_CHARS`] before they are stored.
#[derive(Debug)]
pub struct DeviceTable {
    /// Boxed: the hash table then holds 24 bytes a device, so its growth
    /// (which doubles it) moves and leaves behind little.
    devices: HashMap<Arc<str>, Box<Device>>,
    /// Devices by last heartbeat, the longest silent first.
    by_silence: BTreeMap<(Instant, u64), Arc<str>>,
    /// Where the previous sweep stopped: every device seen before it is
    /// offline already.
    swept_to: Option<Instant>,
    next: u64,
    max: usize,
    online: usize,
    forgotten: u64,
    /// Forgotten since the last log line about it, and when that was.
    forgotten_unlogged: u64,
    last_forgotten_log: Option<Instant>,
    /// Bumped whenever the device link loses sight of every device.
    epoch: u16,
    /// Devices remembered or seen only through messages that were not
    /// live, and not heard since: shown, not yet online.
    unheard: usize,
    /// Bumped when a device appears, goes offline, returns or is
    /// forgotten: what the registry keeps changed.
    changes: u64,
    /// Bumped by every change at all (a heartbeat, a device remembered,
    /// sight lost): a snapshot taken at the same count with no device
    /// online shows the same (the status file keeps its rendering).
    edits: u64,
}

/// One heartbeat as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    pub wall: SystemTime,
    /// Sent now: not a retained message, nor one the broker kept for the
    /// device link while it was away.
    pub live: bool,
}

/// A device a sweep found silent past `DEVICE_TIMEOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WentOffline {
    pub id: Arc<str>,
    /// How long it has been silent.
    pub silent: Duration,
}

/// The devices known, and how many of them are online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub known: usize,
    pub online: usize,
}

/// What recording a heartbeat changed and said.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub seen: Seen,
    /// How its cadence classes it (live heartbeats only).
    pub class: Option<Class>,
    pub interval: Option<Duration>,
    /// Its address or network changed: the old ones, as shown.
    pub moved: Option<(String, String)>,
}

/// What recording a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First heartbeat since the relay started (or since it was forgotten).
    New,
    /// Known and online.
    Again,
    /// Was logged offline; now back.
    BackOnline,
}

impl DeviceTable {
    /// A table of at most `max` devices.
    pub fn new(max: usize) -> Self {
        DeviceTable {
            devices: HashMap::new(),
            by_silence: BTreeMap::new(),
            swept_to: None,
            next: 0,
            max: max.max(1),
            online: 0,
            forgotten: 0,
            forgotten_unlogged: 0,
            last_forgotten_log: None,
            epoch: 1,
            unheard: 0,
            changes: 0,
            edits: 0,
        }
    }

    /// Moves whenever what the registry keeps changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The short form of `id`'s last heartbeat ([`Heartbeat::brief`]).
    pub fn brief(&self, id: &str) -> Option<String> {
        self.devices.get(id).map(|d| d.status.unpack().brief())
    }

    /// Moves whenever anything in the table changed (see `edits`).
    pub fn edits(&self) -> u64 {
        self.edits
    }

    /// Devices remembered from the last run: shown (offline, or presence
    /// unknown) until their first heartbeat, their interval kept.
    pub fn remember(&mut self, devices: &[Entry], now: Instant) {
        self.edits += 1;
        for Entry {
            id,
            remembered: r,
            last_seen: last_seen_unix,
        } in devices
        {
            if self.devices.contains_key(id.as_str()) || self.devices.len() >= self.max {
                continue;
            }
            let key = self.key(now);
            let shared: Arc<str> = Arc::from(id.as_str());
            self.by_silence.insert(key, Arc::clone(&shared));
            self.devices.insert(
                shared,
                Box::new(Device {
                    seen_key: key,
                    last_seen_unix: *last_seen_unix,
                    online: false,
                    heard: false,
                    live: false,
                    live_epoch: 0,
                    remembered_offline: r.offline,
                    cadence: Cadence::remembered(r.interval),
                    status: Packed::new(&Heartbeat::default()),
                }),
            );
            self.unheard += 1;
        }
    }

    /// The device link lost sight of every device: none is present until
    /// its next live heartbeat, and no cadence runs across the gap.
    pub fn lose_sight(&mut self) {
        self.edits += 1;
        self.epoch = self.epoch.wrapping_add(1).max(1);
        for d in self.devices.values_mut() {
            d.cadence.lose_sight();
        }
    }

    /// What the relay remembers of each device for its next start.
    pub fn to_remember(&self, now: Instant, timeout: Duration) -> Vec<Entry> {
        self.devices
            .iter()
            .map(|(id, d)| {
                let offline = self.state(d, now, timeout) == State::Offline;
                let remembered = Remembered {
                    camera: id.to_ascii_lowercase(),
                    offline,
                    interval: d.cadence.interval(),
                };
                Entry {
                    id: id.to_string(),
                    remembered,
                    last_seen: d.last_seen_unix,
                }
            })
            .collect()
    }

    fn state(&self, d: &Device, now: Instant, timeout: Duration) -> State {
        if !d.heard {
            return if d.remembered_offline {
                State::Offline
            } else {
                State::Unknown
            };
        }
        if !d.online {
            return State::Offline;
        }
        let seen = d.seen_key.0;
        let live = (d.live && d.live_epoch == self.epoch).then_some(seen);
        cadence::state(live, Some(seen), false, d.cadence.interval(), timeout, now)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    fn key(&mut self, now: Instant) -> (Instant, u64) {
        self.next += 1;
        (now, self.next)
    }

    /// Records a heartbeat of `id`. One that is not live (retained, or
    /// kept by the broker while the device link was away) only updates
    /// what is shown of the device.
    pub fn record(&mut self, id: &str, status: Heartbeat, arrival: Arrival) -> Recorded {
        self.edits += 1;
        let ts = status.timestamp.as_deref().and_then(cadence::timestamp);
        let epoch = self.epoch;
        if let Some(d) = self.devices.get_mut(id) {
            let moved = moved(&d.status, &status);
            d.status.update(&status);
            if !arrival.live {
                return Recorded {
                    seen: Seen::Again,
                    class: None,
                    interval: d.cadence.interval(),
                    moved: None,
                };
            }
            let class = d.cadence.beat(arrival.at, ts);
            let key = (arrival.at, self.next + 1);
            self.next += 1;
            let shared = self
                .by_silence
                .remove(&d.seen_key)
                .unwrap_or_else(|| Arc::from(id));
            self.by_silence.insert(key, shared);
            let (was_online, was_heard) = (d.online, d.heard);
            d.seen_key = key;
            d.last_seen_unix = unix_u32(arrival.wall);
            d.online = true;
            d.heard = true;
            d.live = class.proves_presence();
            d.live_epoch = epoch;
            let interval = d.cadence.interval();
            let seen = match (was_heard, was_online) {
                (false, _) => {
                    self.unheard = self.unheard.saturating_sub(1);
                    self.online += 1;
                    self.changes += 1;
                    Seen::New
                }
                (true, true) => Seen::Again,
                (true, false) => {
                    self.online += 1;
                    self.changes += 1;
                    Seen::BackOnline
                }
            };
            return Recorded {
                seen,
                class: Some(class),
                interval,
                moved,
            };
        }
        if self.devices.len() >= self.max {
            self.forget_longest_silent();
        }
        let key = self.key(arrival.at);
        let mut cadence = Cadence::default();
        let class = arrival.live.then(|| cadence.beat(arrival.at, ts));
        let shared: Arc<str> = Arc::from(id);
        self.by_silence.insert(key, Arc::clone(&shared));
        self.devices.insert(
            shared,
            Box::new(Device {
                seen_key: key,
                last_seen_unix: unix_u32(arrival.wall),
                online: arrival.live,
                heard: arrival.live,
                live: class.is_some_and(Class::proves_presence),
                live_epoch: epoch,
                remembered_offline: false,
                cadence,
                status: Packed::new(&status),
            }),
        );
        if arrival.live {
            self.online += 1;
        } else {
            self.unheard += 1;
        }
        self.changes += 1;
        Recorded {
            seen: Seen::New,
            class,
            interval: None,
            moved: None,
        }
    }

    fn forget_longest_silent(&mut self) {
        let Some((_, id)) = self.by_silence.pop_first() else {
            return;
        };
        if let Some(d) = self.devices.remove(&id) {
            if d.online {
                self.online -= 1;
            }
            if !d.heard {
                self.unheard = self.unheard.saturating_sub(1);
            }
        }
        self.forgotten += 1;
        self.forgotten_unlogged += 1;
        self.changes += 1;
    }

    /// Marks devices silent for longer than `timeout` as offline; returns the
    /// ids that just went offline (each is reported once). Visits only the
    /// devices last seen between the previous sweep's limit and this one's.
    /// Run by the main thread when the next one is due
    /// ([`DeviceTable::next_offline_at`], at most once a second).
    pub fn sweep(&mut self, now: Instant, timeout: Duration) -> Vec<WentOffline> {
        let mut gone = Vec::new();
        // Silent longer than the timeout: seen before `limit`.
        let Some(limit) = now.checked_sub(timeout) else {
            return gone;
        };
        let from = match self.swept_to {
            Some(t) if t <= limit => Bound::Included((t, 0)),
            _ => Bound::Unbounded,
        };
        for ((seen, _), id) in self.by_silence.range((from, Bound::Excluded((limit, 0)))) {
            if let Some(d) = self.devices.get_mut(id) {
                if d.online {
                    d.online = false;
                    self.online -= 1;
                    gone.push(WentOffline {
                        id: Arc::clone(id),
                        silent: now.saturating_duration_since(*seen),
                    });
                }
            }
        }
        self.changes += u64::from(!gone.is_empty());
        self.edits += u64::from(!gone.is_empty());
        self.swept_to = Some(limit);
        gone
    }

    /// When the next device goes offline if none is heard from meanwhile:
    /// the first one the previous sweep left online, just past `timeout`
    /// after its last heartbeat (a sweep then finds it). None while no
    /// device is online.
    pub fn next_offline_at(&self, timeout: Duration) -> Option<Instant> {
        if self.online == 0 {
            return None;
        }
        let from = match self.swept_to {
            Some(t) => Bound::Included((t, 0)),
            None => Bound::Unbounded,
        };
        let (&(seen, _), _) = self.by_silence.range((from, Bound::Unbounded)).next()?;
        Some(seen + timeout + Duration::from_millis(1))
    }

    /// When devices forgotten meanwhile may be reported again; None while
    /// none wait to be.
    pub fn next_forgotten_report(&self) -> Option<Instant> {
        if self.forgotten_unlogged == 0 {
            return None;
        }
        Some(
            self.last_forgotten_log
                .map_or_else(Instant::now, |t| t + FORGOTTEN_LOG_EVERY),
        )
    }

    /// How many devices are known and how many of them are online.
    pub fn counts(&self) -> Counts {
        Counts {
            known: self.devices.len(),
            online: self.online,
        }
    }

    /// Devices forgotten since the last call, when a minute has passed since
    /// the last report (so it is logged once a minute at most).
    pub fn forgotten_to_report(&mut self, now: Instant) -> Option<u64> {
        if self.forgotten_unlogged == 0
            || self
                .last_forgotten_log
                .is_some_and(|t| now.duration_since(t) < FORGOTTEN_LOG_EVERY)
        {
            return None;
        }
        self.last_forgotten_log = Some(now);
        Some(std::mem::take(&mut self.forgotten_unlogged))
    }

    /// The `limit` most recently seen devices, and counts of all.
    pub fn snapshot(&self, limit: usize, now: Instant, timeout: Duration) -> TableSnapshot {
        let shown = self
            .by_silence
            .values()
            .rev()
            .take(limit)
            .filter_map(|id| {
                let d = self.devices.get(id)?;
                Some(DeviceSnapshot {
                    id: id.to_string(),
                    online: d.online,
                    state: self.state(d, now, timeout),
                    interval: d.cadence.interval(),
                    last_seen: UNIX_EPOCH + Duration::from_secs(u64::from(d.last_seen_unix)),
                    status: d.status.unpack(),
                })
            })
            .collect();
        TableSnapshot {
            shown,
            total: self.devices.len(),
            online: self.online,
            forgotten: self.forgotten,
            states: self.states(now, timeout),
        }
    }

    /// Devices present, unknown, offline. Offline ones need no look: a
    /// device not online (or remembered offline) is offline; only the
    /// online ones are looked at, for a heartbeat that is late or from
    /// before the device link last lost sight of it.
    fn states(&self, now: Instant, timeout: Duration) -> [usize; 3] {
        let mut states = [0, 0, 0];
        for d in self.devices.values().filter(|d| d.online || !d.heard) {
            match self.state(d, now, timeout) {
                State::Present => states[0] += 1,
                State::Unknown => states[1] += 1,
                State::Offline => states[2] += 1,
            }
        }
        let looked = states[0] + states[1] + states[2];
        states[2] += self.devices.len() - looked;
        states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live heartbeat recorded: what it changed.
    fn rec(t: &mut DeviceTable, id: &str, hb: Heartbeat, at: Instant, wall: SystemTime) -> Seen {
        t.record(
            id,
            hb,
            Arrival {
                at,
                wall,
                live: true,
            },
        )
        .seen
    }

    fn hb(ip: &str) -> Heartbeat {
        Heartbeat {
            ip: Some(ip.into()),
            ..Heartbeat::default()
        }
    }

    #[test]
    fn a_retained_or_kept_heartbeat_shows_the_device_but_proves_nothing() {
        let mut t = DeviceTable::new(10);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let timeout = Duration::from_secs(90);
        let stale = Arrival {
            at: t0,
            wall,
            live: false,
        };
        let r = t.record("cam", hb("10.0.0.1"), stale);
        assert_eq!(r.class, None, "not handed to the policy");
        let snap = t.snapshot(10, t0, timeout);
        assert_eq!(snap.shown[0].status.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(snap.shown[0].state, State::Unknown);
        assert_eq!(snap.states, [0, 1, 0]);
        let live = Arrival {
            at: t0 + Duration::from_secs(1),
            wall,
            live: true,
        };
        let r = t.record("cam", hb("10.0.0.2"), live);
        assert_eq!((r.seen, r.class), (Seen::New, Some(Class::First)));
        assert_eq!(
            r.moved,
            Some(("10.0.0.1".to_string(), "absent".to_string())),
            "its address changed"
        );
        assert_eq!(t.snapshot(10, t0, timeout).states, [1, 0, 0]);
        t.lose_sight();
        assert_eq!(
            t.snapshot(10, t0 + Duration::from_secs(2), timeout).states,
            [0, 1, 0],
            "unknown once the device link lost sight of it"
        );
    }

    #[test]
    fn remembered_devices_are_shown_as_they_were_until_heard() {
        let mut t = DeviceTable::new(10);
        let t0 = Instant::now();
        let r = Remembered {
            camera: "cam".into(),
            offline: true,
            interval: Some(Duration::from_secs(5)),
        };
        let entry = Entry {
            id: "CAM".to_string(),
            remembered: r,
            last_seen: 7,
        };
        t.remember(&[entry], t0);
        let snap = t.snapshot(10, t0, Duration::from_secs(90));
        assert_eq!(snap.shown[0].state, State::Offline);
        assert_eq!(snap.shown[0].interval, Some(Duration::from_secs(5)));
        assert_eq!(
            t.counts(),
            Counts {
                known: 1,
                online: 0
            }
        );
        let to_keep = t.to_remember(t0, Duration::from_secs(90));
        assert_eq!(to_keep[0].id, "CAM");
        assert!(to_keep[0].remembered.offline);
    }

    #[test]
    fn empty_table_sweeps_nothing() {
        let mut t = DeviceTable::new(10);
        assert!(t.sweep(Instant::now(), Duration::ZERO).is_empty());
        assert_eq!(
            t.snapshot(200, Instant::now(), Duration::from_secs(90)),
            TableSnapshot::default()
        );
    }

    #[test]
    fn offline_once_then_back_online_once() {
        let mut t = DeviceTable::new(10);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let timeout = Duration::from_secs(90);
        assert_eq!(rec(&mut t, "cam", hb("1.1.1.1"), t0, wall), Seen::New);
        assert!(
            t.sweep(t0 + Duration::from_secs(90), timeout).is_empty(),
            "exactly the timeout is not yet silent"
        );
        let gone = t.sweep(t0 + Duration::from_secs(91), timeout);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].id, "cam");
        assert!(
            t.sweep(t0 + Duration::from_secs(500), timeout).is_empty(),
            "offline is reported once"
        );
        let snap = t.snapshot(200, Instant::now(), Duration::from_secs(90));
        assert!(!snap.shown[0].online);
        assert_eq!((snap.total, snap.online), (1, 0));
        assert_eq!(
            rec(
                &mut t,
                "cam",
                hb("2.2.2.2"),
                t0 + Duration::from_secs(501),
                wall
            ),
            Seen::BackOnline
        );
        assert_eq!(
            rec(
                &mut t,
                "cam",
                hb("2.2.2.2"),
                t0 + Duration::from_secs(502),
                wall
            ),
            Seen::Again
        );
        let snap = t.snapshot(200, Instant::now(), Duration::from_secs(90));
        assert!(snap.shown[0].online);
        assert_eq!(snap.online, 1);
        assert_eq!(snap.shown[0].status.ip.as_deref(), Some("2.2.2.2"));
    }

    #[test]
    fn each_sweep_reports_only_the_devices_that_crossed_the_timeout_since_the_last() {
        let mut t = DeviceTable::new(10);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let timeout = Duration::from_secs(90);
        let at = |s: u64| t0 + Duration::from_secs(s);
        rec(&mut t, "a", hb("1"), t0, wall);
        rec(&mut t, "b", hb("1"), at(10), wall);
        let ids = |gone: Vec<WentOffline>| -> Vec<String> {
            gone.iter().map(|g| g.id.to_string()).collect()
        };
        assert_eq!(ids(t.sweep(at(95), timeout)), ["a"]);
        assert_eq!(rec(&mut t, "a", hb("2"), at(100), wall), Seen::BackOnline);
        assert_eq!(ids(t.sweep(at(101), timeout)), ["b"]);
        assert!(t.sweep(at(150), timeout).is_empty());
        assert_eq!(ids(t.sweep(at(191), timeout)), ["a"]);
        assert_eq!(
            t.counts(),
            Counts {
                known: 2,
                online: 0
            }
        );
    }

    #[test]
    fn the_next_offline_deadline_is_the_longest_silent_online_device() {
        let mut t = DeviceTable::new(10);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let timeout = Duration::from_secs(90);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(t.next_offline_at(timeout), None, "no device");
        rec(&mut t, "a", hb("1"), t0, wall);
        rec(&mut t, "b", hb("1"), at(10_000), wall);
        let first = t.next_offline_at(timeout).expect("a is online");
        assert_eq!(first, at(90_001));
        assert!(t.sweep(at(90_000), timeout).is_empty());
        assert_eq!(t.sweep(first, timeout).len(), 1, "a sweep at it finds a");
        assert_eq!(t.next_offline_at(timeout), Some(at(100_001)));
        rec(&mut t, "a", hb("2"), at(95_000), wall);
        assert_eq!(
            t.next_offline_at(timeout),
            Some(at(100_001)),
            "b still first"
        );
        assert_eq!(t.sweep(at(185_001), timeout).len(), 2);
        assert_eq!(t.next_offline_at(timeout), None, "all offline");
    }

    #[test]
    fn a_stored_heartbeat_reads_back_as_it_came_absent_fields_included() {
        let full = crate::devices::heartbeat::parse(
            br#"{"device_id":"cam-01","msg_type":"online","timestamp":1764391000,"ip":"10.0.0.7",
                "network":"","eth_connected":false,"lte_connected":true,
                "cpu_temp":0,"sense_temp":"39.25","video_fps":15,"lte_signal":-71}"#,
        )
        .unwrap();
        let mut packed = Packed::new(&full);
        assert_eq!(packed.unpack(), full);
        let sparse = hb("10.0.0.8");
        packed.update(&sparse);
        assert_eq!(packed.unpack(), sparse);
        assert_eq!(
            Packed::new(&Heartbeat::default()).unpack(),
            Heartbeat::default()
        );
    }

    #[test]
    fn snapshot_shows_the_most_recently_seen_first_up_to_the_limit() {
        let mut t = DeviceTable::new(10);
        let t0 = Instant::now();
        for (i, id) in ["b", "a", "c"].iter().enumerate() {
            rec(
                &mut t,
                id,
                Heartbeat::default(),
                t0 + Duration::from_secs(i as u64),
                SystemTime::now(),
            );
        }
        let snap = t.snapshot(2, Instant::now(), Duration::from_secs(90));
        let ids: Vec<&str> = snap.shown.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["c", "a"]);
        assert_eq!(snap.total, 3);
    }

    #[test]
    fn a_full_table_forgets_the_longest_silent_and_reports_it_once_a_minute() {
        let mut t = DeviceTable::new(3);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            rec(
                &mut t,
                id,
                Heartbeat::default(),
                t0 + Duration::from_secs(i as u64),
                wall,
            );
        }
        // "a" speaks again: "b" is now the longest silent.
        rec(
            &mut t,
            "a",
            Heartbeat::default(),
            t0 + Duration::from_secs(5),
            wall,
        );
        assert_eq!(
            rec(
                &mut t,
                "d",
                Heartbeat::default(),
                t0 + Duration::from_secs(6),
                wall
            ),
            Seen::New
        );
        let ids: Vec<String> = t
            .snapshot(10, Instant::now(), Duration::from_secs(90))
            .shown
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["d", "a", "c"]);
        assert_eq!(t.forgotten_to_report(t0 + Duration::from_secs(6)), Some(1));
        rec(
            &mut t,
            "e",
            Heartbeat::default(),
            t0 + Duration::from_secs(7),
            wall,
        );
        assert_eq!(
            t.forgotten_to_report(t0 + Duration::from_secs(8)),
            None,
            "within the minute"
        );
        assert_eq!(t.forgotten_to_report(t0 + Duration::from_secs(70)), Some(1));
        let snap = t.snapshot(10, Instant::now(), Duration::from_secs(90));
        assert_eq!((snap.total, snap.online, snap.forgotten), (3, 3, 2));
    }

    #[test]
    fn a_flood_of_new_ids_stays_within_the_bound() {
        let mut t = DeviceTable::new(1000);
        let t0 = Instant::now();
        for i in 0..20_000u64 {
            rec(
                &mut t,
                &format!("dev-{i}"),
                Heartbeat::default(),
                t0 + Duration::from_millis(i),
                SystemTime::now(),
            );
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.by_silence.len(), 1000);
        assert_eq!(
            t.snapshot(0, Instant::now(), Duration::from_secs(90))
                .forgotten,
            19_000
        );
        assert_eq!(
            t.snapshot(1, Instant::now(), Duration::from_secs(90)).shown[0].id,
            "dev-19999"
        );
    }
}
