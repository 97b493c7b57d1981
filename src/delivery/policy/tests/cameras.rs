//! The policy's rules for commands to cameras (PROTOCOL.md §2.7): presence,
//! the hold, confirmation by cadence, resends, one restart at a time.
//! Heartbeats are classified as the device table classifies them (a
//! [`Cadence`] per camera), then handed to the policy as sightings.

use std::collections::HashMap;

use super::*;
use crate::delivery::policy::{Cadence, Class, Remembered, Sighting};

/// The camera's heartbeat interval in these tests.
const I: Duration = Duration::from_secs(5);

/// `{"type":KIND,"unit":UNIT,"id":"ID","camera":CAMERA}` plus what KIND needs.
fn camera_payload(kind: &str, cmd: &str, camera: &str) -> Vec<u8> {
    let (unit, id) = cmd.split_once('/').unwrap_or((cmd, "0"));
    let extra = match kind {
        "FMW" => {
            r#","firmware_id":"2.4.1","link":"https://fw.example/fw.bin","md5":"0123456789abcdef0123456789abcdef""#
        }
        "CFG" => r#","configs":{"exposure":3}"#,
        "SCS" | "IMG" => "",
        other => panic!("no sample for {other}"),
    };
    format!(r#"{{"type":"{kind}","unit":"{unit}","id":"{id}","camera":"{camera}"{extra}}}"#)
        .into_bytes()
}

/// Which lines a command's connection asked for.
#[derive(Clone, Copy, PartialEq)]
enum Lines {
    Errors,
    All,
    Camera,
}

/// The rig, a cadence per camera, and each camera's uptime timestamp.
struct Cams {
    r: Rig,
    cadence: HashMap<String, Cadence>,
    uptime: HashMap<String, u64>,
}

impl Cams {
    fn new(settings: Settings) -> Cams {
        let mut r = Rig::new(settings);
        r.up();
        Cams {
            r,
            cadence: HashMap::new(),
            uptime: HashMap::new(),
        }
    }

    fn job(&self, kind: &str, cmd: &str, camera: &str, lines: Lines) -> Accepted {
        let payload = camera_payload(kind, cmd, camera);
        let (cmd, camera) =
            command::validate_with_camera(&payload, true, Some("camera")).expect("a valid command");
        let now = self.r.now();
        let topic = config::topic_for_unit(COMMAND_TOPIC, &cmd.unit);
        let mut job = Accepted::new(cmd, topic, now.mono, now.wall);
        job.camera = camera;
        job.peer = Some(PEER.parse().expect("an address"));
        job.reply = Some(ReplyTo {
            conn: CONN,
            ok_lines: lines != Lines::Errors,
            camera_lines: lines == Lines::Camera,
        });
        job
    }

    /// IMG commands `cmds` (`UNIT/ID`) for `camera`, one batch.
    fn send(&mut self, camera: &str, cmds: &[&str], lines: Lines) {
        let jobs = cmds
            .iter()
            .map(|c| self.job("IMG", c, camera, lines))
            .collect();
        self.r.event(Event::Batch(jobs));
        self.r.tick();
    }

    fn send_kind(&mut self, camera: &str, kind: &str, cmd: &str, lines: Lines) {
        let job = self.job(kind, cmd, camera, lines);
        self.r.event(Event::Batch(vec![job]));
        self.r.tick();
    }

    /// A live heartbeat of `camera` now, carrying its uptime; returns its class.
    fn beat(&mut self, camera: &str) -> Class {
        let at = self.r.now().mono;
        let ts = *self
            .uptime
            .entry(camera.to_string())
            .and_modify(|t| *t += 1)
            .or_insert(1);
        self.beat_with(camera, at, Some(ts))
    }

    fn beat_with(&mut self, camera: &str, at: Instant, ts: Option<u64>) -> Class {
        let cadence = self.cadence.entry(camera.to_string()).or_default();
        let class = cadence.beat(at, ts);
        let interval = cadence.interval();
        self.r.event(Event::Sightings(vec![Sighting::Beat {
            camera: camera.to_ascii_lowercase(),
            at,
            class,
            interval,
        }]));
        self.r.tick();
        class
    }

    /// The camera restarted: its uptime starts again.
    fn reboot(&mut self, camera: &str) {
        self.uptime.insert(camera.to_string(), 0);
    }

    /// `secs` seconds pass, with a tick.
    fn wait(&mut self, d: Duration) {
        self.r.advance(d);
        self.r.tick();
    }

    /// Heartbeats every [`I`] until the interval is learned: the camera is
    /// present, and one more interval passed.
    fn learn(&mut self, camera: &str) {
        for _ in 0..4 {
            self.beat(camera);
            self.wait(I);
        }
        self.beat(camera);
    }

    /// One interval later, a regular heartbeat.
    fn next_beat(&mut self, camera: &str) -> Class {
        self.wait(I);
        self.beat(camera)
    }

    fn lost_sight(&mut self) {
        for c in self.cadence.values_mut() {
            c.lose_sight();
        }
        self.r.event(Event::Sightings(vec![Sighting::LostSight]));
        self.r.tick();
    }

    fn resent(&self) -> usize {
        self.r
            .counts
            .iter()
            .filter(|c| matches!(c, Count::Resent(_)))
            .count()
    }

    fn confirmed(&self) -> usize {
        self.r
            .counts
            .iter()
            .filter(|c| **c == Count::Confirmed)
            .count()
    }

    fn lines(&self, status: &str) -> Vec<&str> {
        let part = format!(r#""status":"{status}""#);
        self.r
            .status
            .iter()
            .filter(|l| l.contains(&part))
            .map(String::as_str)
            .collect()
    }
}

#[test]
fn steady_heartbeats_confirm_a_command_after_two_regular_ones() {
    let mut c = Cams::new(spooled_settings());
    c.r.start(Found::Read(Recovery::default()));
    c.learn("cam");
    c.send("cam", &["u/1"], Lines::Camera);
    assert_eq!(c.r.sent(), ["u/1"], "a present camera: published at once");
    c.r.ack_all();
    assert_eq!(
        c.lines("ok"),
        [r#"{"status":"ok","type":"IMG","unit":"u","id":"1","camera":"cam"}"#]
    );
    assert_eq!(c.r.d.unconfirmed(), 1);
    assert!(
        !c.r.spool_ops.contains(&SpoolOp::Done(0)),
        "kept until confirmed"
    );
    assert_eq!(c.next_beat("cam"), Class::Regular);
    assert_eq!(c.confirmed(), 0, "one heartbeat is not enough");
    assert_eq!(c.next_beat("cam"), Class::Regular);
    assert_eq!(c.confirmed(), 1);
    assert_eq!(
        c.lines("delivered"),
        [r#"{"status":"delivered","type":"IMG","unit":"u","id":"1","camera":"cam"}"#]
    );
    assert!(c.r.spool_ops.contains(&SpoolOp::Done(0)));
    assert_eq!(c.r.claims_ended, 1, "the claim ends with the last word");
    assert_eq!(c.r.d.unconfirmed(), 0);
}

#[test]
fn a_camera_is_watched_while_it_has_commands_held_or_unconfirmed() {
    let mut c = Cams::new(spooled_settings());
    c.r.start(Found::Read(Recovery::default()));
    c.learn("Cam");
    assert!(
        c.r.watched.is_empty(),
        "nothing out: its heartbeats are no news"
    );
    c.send("Cam", &["u/1"], Lines::Camera);
    c.r.ack_all();
    assert_eq!(c.r.watched, ["cam".to_string()].into(), "in lower case");
    c.next_beat("Cam");
    c.next_beat("Cam");
    assert_eq!(c.confirmed(), 1);
    assert!(c.r.watched.is_empty(), "confirmed: no longer watched");
}

#[test]
fn jittered_heartbeats_and_a_lost_one_send_nothing_twice() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    let mut n = 0;
    for k in 0..60u32 {
        // ±20 % jitter; every 13th heartbeat lost.
        let gap = I.mul_f64([1.0, 0.8, 1.2, 0.9, 1.15, 0.85][k as usize % 6]);
        c.r.advance(gap / 2);
        let cmds: Vec<String> = (0..5).map(|i| format!("u/{}", n + i)).collect();
        n += 5;
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        c.send("cam", &cmds, Lines::All);
        c.r.ack_all();
        c.r.advance(gap / 2);
        if k % 13 != 12 {
            assert!(!c.beat("cam").reconnect(), "heartbeat {k}");
        }
    }
    c.next_beat("cam");
    c.next_beat("cam");
    assert_eq!(c.resent(), 0, "nothing published twice");
    assert_eq!(c.r.sent().len(), 300);
    assert_eq!(c.confirmed(), 300);
    assert_eq!(c.lines("ok").len(), 300);
    assert!(
        c.lines("delivered").is_empty(),
        "ACK_MODE all: no more lines"
    );
}

#[test]
fn an_early_heartbeat_is_a_reconnect_and_what_was_sent_goes_again_first() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send("cam", &["u/1"], Lines::Camera);
    c.r.ack_all();
    // The camera dropped and came back: its connect heartbeat is early.
    c.wait(Duration::from_secs(1));
    assert_eq!(c.beat("cam"), Class::Early);
    c.send("cam", &["u/2"], Lines::Camera);
    assert_eq!(
        c.r.sent(),
        ["u/1"],
        "both wait a moment after the heartbeat"
    );
    assert_eq!(
        c.lines("resent"),
        [
            r#"{"status":"resent","type":"IMG","unit":"u","id":"1","camera":"cam","reason":"reconnect"}"#
        ]
    );
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/1", "u/2"], "again, oldest first");
    c.r.ack_all();
    assert_eq!(c.lines("ok").len(), 2, "one ok per command");
    assert!(c.r.counts.contains(&Count::Resent("reconnect")));
    c.wait(Duration::from_secs(3));
    c.beat("cam");
    c.next_beat("cam");
    assert_eq!(c.confirmed(), 2);
}

#[test]
fn the_connect_heartbeat_that_looks_on_time_is_caught_by_the_one_after_it() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.wait(Duration::from_secs(1));
    // Dropped; one command lost in the gap; back 4 s after the last
    // heartbeat, when one looks almost due.
    c.send("cam", &["u/1"], Lines::All);
    c.r.ack_all();
    c.wait(Duration::from_secs(3));
    assert_eq!(c.beat("cam"), Class::Regular, "looks on time");
    assert_eq!(c.confirmed(), 0);
    // The periodic heartbeat comes 1 s after the connect one: early.
    c.wait(Duration::from_secs(1));
    assert_eq!(c.beat("cam"), Class::Early);
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/1"]);
}

#[test]
fn a_reboot_and_a_long_absence_send_again_what_was_unconfirmed() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send("cam", &["u/1"], Lines::All);
    c.r.ack_all();
    c.wait(Duration::from_secs(2));
    c.reboot("cam");
    assert_eq!(c.beat("cam"), Class::Rebooted);
    c.send("cam", &["u/2"], Lines::All);
    c.wait(Duration::from_secs(2));
    assert_eq!(c.r.sent(), ["u/1"], "not present until the next heartbeat");
    assert_eq!(c.next_beat("cam"), Class::Returned);
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/1", "u/2"]);
    assert!(c.r.counts.contains(&Count::Resent("reboot")));

    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send("cam", &["u/1"], Lines::All);
    c.r.ack_all();
    c.wait(Duration::from_secs(40));
    assert_eq!(c.beat("cam"), Class::Late);
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/1"]);
}

#[test]
fn the_blind_window_sends_again_in_order_what_went_while_the_camera_was_gone() {
    // Heartbeat 5 s, DEVICE_TIMEOUT 15 s: the camera drops right after a
    // heartbeat; five commands in the next 10 s; back at +40 s.
    let mut c = Cams::new(Settings {
        device_timeout: Duration::from_secs(15),
        ..settings()
    });
    c.learn("cam");
    for i in 0..5 {
        c.wait(Duration::from_secs(2));
        c.send("cam", &[&format!("u/{i}")], Lines::All);
        c.r.ack_all();
    }
    assert_eq!(c.r.sent().len(), 5, "the camera still counts as present");
    assert_eq!(c.r.d.unconfirmed(), 5);
    c.wait(Duration::from_secs(6));
    assert_eq!(c.r.d.held(), 5, "offline: held again");
    c.send("cam", &["u/5"], Lines::All);
    c.wait(Duration::from_secs(22));
    assert_eq!(c.beat("cam"), Class::Late);
    c.wait(Duration::from_secs(1));
    let sent = c.r.sent();
    assert_eq!(
        sent[5..],
        ["u/0", "u/1", "u/2", "u/3", "u/4", "u/5"],
        "all, in order, after the return"
    );
}

#[test]
fn a_camera_silent_for_three_intervals_gets_nothing_until_it_heartbeats() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.wait(Duration::from_secs(16));
    c.send("cam", &["u/1"], Lines::All);
    assert!(c.r.sent().is_empty(), "overdue: presence unknown");
    c.beat("cam");
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1"]);
}

#[test]
fn a_camera_is_unknown_after_a_lost_link_until_its_next_heartbeat() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    // A broker restart: the publish link goes; commands queue.
    c.r.event(Event::LinkDown);
    c.send("cam", &["u/1", "u/2"], Lines::All);
    c.r.up();
    assert!(c.r.sent().is_empty(), "the cameras are not back yet");
    assert_eq!(c.r.d.held(), 2);
    // The device link saw the camera's heartbeats stop and resume.
    c.lost_sight();
    c.wait(Duration::from_secs(10));
    assert_eq!(c.beat("cam"), Class::Returned);
    assert!(c.r.sent().is_empty(), "a moment after its heartbeat");
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/2"]);
}

#[test]
fn a_lost_device_link_sends_again_what_was_unconfirmed() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send("cam", &["u/1"], Lines::All);
    c.r.ack_all();
    c.lost_sight();
    c.wait(Duration::from_secs(3));
    assert_eq!(c.beat("cam"), Class::Returned);
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/1"]);
    assert!(c.r.counts.contains(&Count::Resent("unseen")));
}

#[test]
fn a_camera_gone_offline_gets_its_unconfirmed_commands_on_return() {
    let mut c = Cams::new(Settings {
        device_timeout: Duration::from_secs(15),
        ..settings()
    });
    c.learn("cam");
    c.send("cam", &["u/1"], Lines::Camera);
    c.r.ack_all();
    c.wait(Duration::from_secs(16));
    assert_eq!(c.r.d.unconfirmed(), 0);
    assert_eq!(c.r.d.held(), 1, "held again while offline");
    assert_eq!(c.lines("resent").len(), 1);
    assert!(c.lines("resent")[0].contains(r#""reason":"offline""#));
    c.wait(Duration::from_secs(100));
    c.beat("cam");
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/1"]);
}

#[test]
fn after_a_firmware_update_newer_commands_wait_for_the_restart() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send_kind("cam", "FMW", "u/1", Lines::All);
    c.send("cam", &["u/2", "u/3", "u/4"], Lines::All);
    assert_eq!(c.r.sent(), ["u/1"], "one at a time");
    assert!(c.r.counts.contains(&Count::SerialWait));
    c.r.ack_all();
    // The update runs inside the camera's MQTT task: no heartbeat for a
    // while; then it restarts: its uptime starts again.
    c.wait(Duration::from_secs(30));
    assert_eq!(c.r.sent(), ["u/1"]);
    c.reboot("cam");
    assert_eq!(c.beat("cam"), Class::Rebooted);
    c.wait(Duration::from_secs(2));
    assert_eq!(
        c.r.sent(),
        ["u/1"],
        "a reboot's first heartbeat proves nothing"
    );
    assert_eq!(c.next_beat("cam"), Class::Returned);
    c.wait(Duration::from_secs(1));
    assert_eq!(
        c.r.sent(),
        ["u/1", "u/2", "u/3", "u/4"],
        "after the restart"
    );
    assert_eq!(c.confirmed(), 1, "the update is confirmed by the restart");
    assert_eq!(c.resent(), 0, "and not sent again");
}

#[test]
fn a_camera_that_does_not_restart_after_an_update_gets_the_rest_at_its_next_heartbeat() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send_kind("cam", "FMW", "u/1", Lines::All);
    c.send("cam", &["u/2"], Lines::All);
    c.r.ack_all();
    assert_eq!(c.next_beat("cam"), Class::Regular);
    assert_eq!(c.r.sent(), ["u/1", "u/2"], "at once: it never left");
}

#[test]
fn serial_timeout_lets_the_rest_go() {
    let mut c = Cams::new(Settings {
        serial_timeout: Duration::from_secs(20),
        device_timeout: Duration::from_secs(600),
        ..settings()
    });
    c.learn("cam");
    c.send_kind("cam", "FMW", "u/1", Lines::All);
    c.send("cam", &["u/2"], Lines::All);
    c.r.ack_all();
    c.wait(Duration::from_secs(21));
    assert!(c.r.counts.contains(&Count::SerialTimeout));
    assert_eq!(c.r.logged(Level::Warn, "SERIAL_TIMEOUT"), 1);
    // Silent for more than three intervals: its presence is unknown now,
    // so the rest waits for its heartbeat all the same; that heartbeat
    // confirms the update.
    assert_eq!(c.beat("cam"), Class::Late);
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "u/2"]);
    assert_eq!(c.resent(), 0);
}

#[test]
fn a_camera_never_seen_waits_unseen_wait_then_goes_unconfirmed() {
    let mut c = Cams::new(Settings {
        unseen_wait: Duration::from_secs(30),
        ..settings()
    });
    c.send("new-cam", &["u/1"], Lines::All);
    assert!(c.r.sent().is_empty());
    assert_eq!(c.lines("held").len(), 1);
    c.wait(Duration::from_secs(31));
    assert_eq!(c.r.sent(), ["u/1"]);
    c.r.ack_all();
    assert_eq!(c.lines("ok").len(), 1);
    assert_eq!(c.r.d.unconfirmed(), 0, "nothing can confirm it");
    assert_eq!(c.r.logged(Level::Warn, "UNSEEN_WAIT"), 1);
    // One that heartbeats meanwhile is released by its heartbeat.
    c.send("cam2", &["v/1"], Lines::All);
    c.beat("cam2");
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1", "v/1"]);
}

#[test]
fn a_camera_remembered_waits_for_its_heartbeat_however_long_it_takes() {
    let mut r = Rig::new(spooled_settings());
    r.event(Event::Remember(vec![Remembered {
        camera: "cam".into(),
        offline: true,
        interval: Some(I),
    }]));
    let now = r.now().wall;
    let live = vec![Replayed {
        received: now,
        payload: camera_payload("IMG", "u/1", "CAM"),
        held: false,
    }];
    r.start(Found::Read(Recovery {
        live,
        ..Recovery::default()
    }));
    let mut c = Cams {
        r,
        cadence: HashMap::from([("cam".to_string(), Cadence::remembered(Some(I)))]),
        uptime: HashMap::new(),
    };
    c.r.up();
    c.wait(Duration::from_secs(3600));
    assert!(c.r.sent().is_empty(), "known: no UNSEEN_WAIT");
    assert_eq!(c.beat("cam"), Class::Returned);
    c.wait(Duration::from_secs(1));
    assert_eq!(c.r.sent(), ["u/1"]);
    c.r.ack_all();
    assert_eq!(c.r.d.unconfirmed(), 1, "confirmed only by its heartbeats");
    assert_eq!(c.next_beat("cam"), Class::Regular);
    assert_eq!(c.next_beat("cam"), Class::Regular);
    assert_eq!(c.r.d.unconfirmed(), 0);
}

#[test]
fn unconfirmed_commands_count_against_the_cameras_bound() {
    let mut c = Cams::new(Settings {
        hold_max_per_camera: 2,
        ..settings()
    });
    c.learn("cam");
    c.send("cam", &["u/1", "u/2"], Lines::Errors);
    c.r.ack_all();
    c.send("cam", &["u/3"], Lines::Errors);
    assert_eq!(
        c.lines("error"),
        [
            r#"{"status":"error","type":"IMG","unit":"u","id":"3","error":"camera \"cam\": HOLD_MAX_PER_CAMERA (2) commands are held or unconfirmed for it"}"#
        ]
    );
    c.next_beat("cam");
    c.next_beat("cam");
    c.send("cam", &["u/4"], Lines::Errors);
    assert_eq!(c.r.sent(), ["u/1", "u/2", "u/4"]);
}

#[test]
fn a_reload_shortens_the_lifetime_of_held_and_unconfirmed_commands() {
    let mut c = Cams::new(Settings {
        device_timeout: Duration::from_secs(600),
        ..settings()
    });
    c.send("gone", &["u/1"], Lines::All);
    c.learn("cam");
    c.send("cam", &["v/1"], Lines::Camera);
    c.r.ack_all();
    c.r.event(Event::Reload(reload(ttl(10))));
    c.wait(Duration::from_secs(11));
    assert_eq!(c.r.d.held(), 0, "held past its new lifetime");
    assert_eq!(c.r.d.unconfirmed(), 0, "unconfirmed past its new lifetime");
    assert!(c.r.counts.contains(&Count::ExpiredHeld));
    assert!(c.r.counts.contains(&Count::ExpiredUnconfirmed));
    assert_eq!(c.lines("error").len(), 2, "{:?}", c.r.status);
}

#[test]
fn a_device_reply_confirms_the_settings_request_it_answers() {
    let mut c = Cams::new(settings());
    c.learn("cam");
    c.send_kind("cam", "SCS", "u/1", Lines::Camera);
    c.r.ack_all();
    c.r.event(Event::Sightings(vec![Sighting::Reply { unit: "u".into() }]));
    assert_eq!(c.confirmed(), 1);
    assert_eq!(c.lines("delivered").len(), 1);
}

#[test]
fn a_held_command_keeps_its_claim_on_a_line_until_it_is_answered() {
    let mut c = Cams::new(settings());
    c.send("new-cam", &["u/1"], Lines::All);
    assert_eq!(c.r.claims_ended, 0);
    assert_eq!(c.r.owed(), 1, "a half-closed backend lingers for it");
    c.beat("new-cam");
    c.wait(Duration::from_secs(1));
    c.r.ack_all();
    assert_eq!(c.r.claims_ended, 1);
    assert_eq!(c.r.owed(), 0);
}

#[test]
fn without_hold_offline_nothing_waits_and_nothing_is_kept() {
    let mut c = Cams::new(Settings {
        hold_offline: false,
        ..settings()
    });
    c.send("cam", &["u/1"], Lines::All);
    assert_eq!(c.r.sent(), ["u/1"]);
    c.r.ack_all();
    assert_eq!(c.r.d.unconfirmed(), 0);
}

#[test]
fn held_commands_are_spooled_and_come_back_held_after_a_restart() {
    let mut c = Cams::new(spooled_settings());
    c.r.start(Found::Read(Recovery::default()));
    c.send("cam", &["u/1"], Lines::All);
    let spooled: Vec<(String, bool)> =
        c.r.d
            .spooled()
            .map(|c| (label(c.payload), c.held))
            .collect();
    assert!(spooled.contains(&("u/1".to_string(), true)), "{spooled:?}");
}

#[test]
fn an_idle_policy_wakes_for_its_next_camera_deadline_only() {
    let mut c = Cams::new(Settings {
        lifetimes: ttl(600),
        ..settings()
    });
    assert_eq!(c.r.d.wait(c.r.now()), IDLE_WAIT);
    c.send("new-cam", &["u/1"], Lines::Errors);
    assert_eq!(
        c.r.d.wait(c.r.now()),
        Duration::from_secs(90),
        "UNSEEN_WAIT, before COMMAND_TTL"
    );
}

#[test]
fn an_operator_lists_and_cancels_what_waits_for_a_camera() {
    use crate::protocol::control::Control;
    let mut c = Cams::new(spooled_settings());
    c.r.start(Found::Read(Recovery::default()));
    c.send("cam", &["u/1", "u/2"], Lines::All);
    c.send("other", &["v/1"], Lines::All);
    c.r.event(Event::Operator {
        request: Control::Held {
            camera: Some("CAM".into()),
        },
        conn: OPERATOR,
        by: "unix:uid=0:pid=1".into(),
    });
    assert_eq!(c.r.answered, 1);
    let listed: Vec<serde_json::Value> =
        c.r.answers
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0]["id"], "1");
    assert_eq!(listed[0]["waiting"], "held");
    assert_eq!(listed[0]["from"], PEER);
    assert_eq!(listed[2]["held"], 2);
    c.r.event(Event::Operator {
        request: Control::Cancel {
            camera: "cam".into(),
            types: vec![CommandType::Img],
        },
        conn: OPERATOR,
        by: "unix:uid=0:pid=1".into(),
    });
    assert_eq!(c.r.answered, 2);
    assert_eq!(
        c.r.answers.len(),
        3 + 3,
        "a line per command, and the count"
    );
    assert_eq!(
        c.lines("error"),
        [
            r#"{"status":"error","type":"IMG","unit":"u","id":"1","error":"cancelled by the operator"}"#,
            r#"{"status":"error","type":"IMG","unit":"u","id":"2","error":"cancelled by the operator"}"#,
        ]
    );
    assert_eq!(
        c.r.counts
            .iter()
            .filter(|n| **n == Count::Cancelled)
            .count(),
        2
    );
    assert!(c.r.spool_ops.contains(&SpoolOp::Done(0)));
    assert_eq!(c.r.d.held(), 1, "the other camera's stays");
    assert_eq!(c.r.logged(Level::Info, "cancelled IMG for unit u"), 2);
}
