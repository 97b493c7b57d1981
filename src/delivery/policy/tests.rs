//! The policy alone: events in, actions out, checked as the publisher
//! would perform them. No outbox, channel, socket, file or thread: status
//! lines are recorded by connection number, and claims counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter};

use super::{
    Action, Count, Delivery, Ending, Event, Found, Now, OfflineState, Reload, Settings, SpoolOp,
    SpoolOutcome, WriteError, IDLE_WAIT, WINDOW,
};
use crate::config::{self, Lifetimes};
use crate::delivery::item::{Accepted, ReplyTo};
use crate::delivery::spool::{Aside, Recovery, Region, Replayed, SpoolError};
use crate::protocol::command::{self, CommandType};

const PEER: &str = "192.0.2.7:4000";
/// The connection commands come from.
const CONN: u64 = 1;
/// The connection an operator asks on.
const OPERATOR: u64 = 2;
const COMMAND_TOPIC: &str = "/service/ms500/{unit}/socket";

fn settings() -> Settings {
    Settings {
        qos1: true,
        lifetimes: Lifetimes::default(),
        hold_offline: true,
        hold_max_per_camera: 100,
        hold_max_bytes: 8 * 1024 * 1024,
        max_cameras: 10_000,
        presence_field: Some("camera".to_string()),
        capacity: 10_000,
        max_bytes: 16 * 1024 * 1024,
        spool: None,
        state: None,
        log_level: LevelFilter::Trace,
        puback_within: Duration::from_secs(120),
        max_packet: None,
        device_timeout: Duration::from_secs(90),
        command_topic: COMMAND_TOPIC.to_string(),
        serial_after: vec![
            CommandType::Fmw,
            CommandType::App,
            CommandType::Aim,
            CommandType::Frs,
        ],
        serial_timeout: Duration::from_secs(600),
        unseen_wait: Duration::from_secs(90),
    }
}

/// `COMMAND_TTL = secs`, no `COMMAND_TTLS`.
fn ttl(secs: u64) -> Lifetimes {
    Lifetimes {
        ttl: Some(Duration::from_secs(secs)),
        per_type: Vec::new(),
    }
}

/// A reload that sets `lifetimes` and leaves [`settings`] as they are.
fn reload(lifetimes: Lifetimes) -> Reload {
    let s = settings();
    Reload {
        lifetimes,
        device_timeout: s.device_timeout,
        puback_within: s.puback_within,
        max_packet: s.max_packet,
    }
}

fn spooled_settings() -> Settings {
    Settings {
        spool: Some("/var/spool/relay.spool".into()),
        ..settings()
    }
}

/// `{"type":"IMG","unit":UNIT,"id":"ID"}`, labelled `UNIT/ID` by [`label`].
fn payload(cmd: &str) -> Vec<u8> {
    let (unit, id) = cmd.split_once('/').unwrap_or((cmd, "0"));
    format!(r#"{{"type":"IMG","unit":"{unit}","id":"{id}"}}"#).into_bytes()
}

fn label(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("a JSON payload");
    format!(
        "{}/{}",
        v["unit"].as_str().unwrap_or("?"),
        v["id"].as_str().unwrap_or("?")
    )
}

/// One PUBLISH as written: (packet id, topic, label of the payload).
type Published = (Option<u16>, String, String);

/// Reads back the PUBLISH packets in `bytes` (other packets are skipped).
fn publishes(mut bytes: &[u8]) -> Vec<Published> {
    let mut out = Vec::new();
    while let Some(&first) = bytes.first() {
        let (mut len, mut at, mut shift) = (0usize, 1, 0);
        loop {
            let b = bytes[at];
            len |= usize::from(b & 0x7F) << shift;
            shift += 7;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = &bytes[at..at + len];
        bytes = &bytes[at + len..];
        if first >> 4 != 3 {
            continue;
        }
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8_lossy(&body[2..2 + topic_len]).into_owned();
        let mut rest = &body[2 + topic_len..];
        let pkid = (first & 0x06 != 0).then(|| {
            let id = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
            id
        });
        let what = if topic.contains("state") {
            String::from_utf8_lossy(rest).into_owned()
        } else {
            label(rest)
        };
        out.push((pkid, topic, what));
    }
    out
}

/// The policy with a pretend publisher around it: it performs every action
/// by recording it, and answers requests from scripts (success by default).
struct Rig {
    d: Delivery,
    t0: Instant,
    wall0: SystemTime,
    at: Duration,
    logs: Vec<(Level, String)>,
    counts: Vec<Count>,
    /// Lines to [`CONN`], in order.
    status: Vec<String>,
    /// Lines to [`OPERATOR`], in order, and the requests answered.
    answers: Vec<String>,
    answered: usize,
    published: Vec<Published>,
    spool_ops: Vec<SpoolOp>,
    disconnects: Vec<Published>,
    /// Connections dropped by the policy, with the reason.
    drops: Vec<String>,
    /// The cameras the policy watches, as its `Watch` actions left them.
    watched: std::collections::BTreeSet<String>,
    spool_answers: VecDeque<SpoolOutcome>,
    write_answers: VecDeque<Result<(), WriteError>>,
    /// Commands handed over with a [`ReplyTo`] (a claim on a status line
    /// each), and claims handed back (with or without a line).
    claims_taken: usize,
    claims_ended: usize,
}

impl Rig {
    fn new(settings: Settings) -> Rig {
        let (t0, wall0) = (Instant::now(), SystemTime::now());
        Rig {
            d: Delivery::new(
                settings,
                Now {
                    mono: t0,
                    wall: wall0,
                },
            ),
            t0,
            wall0,
            at: Duration::ZERO,
            logs: Vec::new(),
            counts: Vec::new(),
            status: Vec::new(),
            answers: Vec::new(),
            answered: 0,
            published: Vec::new(),
            spool_ops: Vec::new(),
            disconnects: Vec::new(),
            drops: Vec::new(),
            watched: Default::default(),
            spool_answers: VecDeque::new(),
            write_answers: VecDeque::new(),
            claims_taken: 0,
            claims_ended: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.t0 + self.at,
            wall: self.wall0 + self.at,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.at += by;
    }

    fn event(&mut self, event: Event) {
        if let Event::Batch(jobs) = &event {
            self.claims_taken += jobs.iter().filter(|job| job.reply.is_some()).count();
        }
        let actions = self.d.handle(event, self.now());
        self.perform(actions);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        let count = actions.len();
        for (i, action) in actions.into_iter().enumerate() {
            let request = matches!(
                action,
                Action::Write(_)
                    | Action::Disconnect(_)
                    | Action::Spool(SpoolOp::Sync | SpoolOp::Tidy | SpoolOp::Open { .. })
            );
            assert!(!request || i + 1 == count, "a request ends its list");
            match action {
                Action::Log(level, line) | Action::LogLimited(_, level, line) => {
                    self.logs.push((level, line))
                }
                Action::Count(c) => self.counts.push(c),
                Action::Done { reply, line } => {
                    assert_eq!(reply.conn, CONN);
                    if let Some(line) = line {
                        self.status.push(String::from_utf8(line).expect("UTF-8"));
                    }
                    self.claims_ended += 1;
                    assert!(self.claims_ended <= self.claims_taken, "one end per claim");
                }
                Action::Line { conn, line } => {
                    let line = String::from_utf8(line).expect("UTF-8");
                    match conn {
                        CONN => self.status.push(line),
                        OPERATOR => self.answers.push(line),
                        other => panic!("a line to connection {other}"),
                    }
                }
                Action::Answered { conn } => {
                    assert_eq!(conn, OPERATOR);
                    self.answered += 1;
                }
                Action::Spool(op) => {
                    let answer = match &op {
                        SpoolOp::Sync | SpoolOp::Tidy => Some(
                            self.spool_answers
                                .pop_front()
                                .unwrap_or(SpoolOutcome::Synced),
                        ),
                        SpoolOp::Open { .. } => Some(
                            self.spool_answers
                                .pop_front()
                                .unwrap_or(SpoolOutcome::Opened { kept_as: None }),
                        ),
                        SpoolOp::Append(_) | SpoolOp::Done(_) => None,
                    };
                    self.spool_ops.push(op);
                    if let Some(answer) = answer {
                        self.event(Event::Spool(answer));
                    }
                }
                Action::Write(bytes) => {
                    self.published.extend(publishes(&bytes));
                    let answer = self.write_answers.pop_front().unwrap_or(Ok(()));
                    self.event(Event::Written(answer));
                }
                Action::Disconnect(bytes) => {
                    self.disconnects.extend(publishes(&bytes));
                    assert_eq!(bytes[bytes.len() - 2..], [0xE0, 0]);
                    self.event(Event::Written(Ok(())));
                }
                Action::DropLink(why) => self.drops.push(why),
                Action::Watch { camera, on } => {
                    let changed = if on {
                        self.watched.insert(camera)
                    } else {
                        self.watched.remove(&camera)
                    };
                    assert!(changed, "each watch news is news");
                }
            }
        }
    }

    fn start(&mut self, found: Found) {
        self.event(Event::Start(found));
    }

    fn tick(&mut self) {
        self.event(Event::Tick);
    }

    /// A batch from one connection (status lines: errors, and `ok` when `ok_lines`).
    fn send(&mut self, cmds: &[&str], ok_lines: bool) {
        let jobs = cmds.iter().map(|c| self.job(c, ok_lines)).collect();
        self.event(Event::Batch(jobs));
        self.tick();
    }

    fn job(&self, cmd: &str, ok_lines: bool) -> Accepted {
        let cmd = command::validate(&payload(cmd), true).expect("a valid command");
        let now = self.now();
        let topic = config::topic_for_unit(COMMAND_TOPIC, &cmd.unit);
        let mut job = Accepted::new(cmd, topic, now.mono, now.wall);
        job.peer = Some(PEER.parse().expect("an address"));
        job.reply = Some(ReplyTo {
            conn: CONN,
            ok_lines,
            camera_lines: false,
        });
        job
    }

    /// Commands whose last line is not decided yet: a half-closed backend
    /// would linger for them.
    fn owed(&self) -> usize {
        self.claims_taken - self.claims_ended
    }

    fn up(&mut self) {
        self.event(Event::LinkUp);
        self.tick();
    }

    /// Acknowledges everything in flight written so far, oldest first.
    fn ack_all(&mut self) {
        let pkids = self.published.iter().filter_map(|(p, _, _)| *p).collect();
        self.event(Event::Acked(pkids));
        self.tick();
    }

    fn sent(&self) -> Vec<&str> {
        self.published.iter().map(|(_, _, l)| l.as_str()).collect()
    }

    fn logged(&self, level: Level, part: &str) -> usize {
        self.logs
            .iter()
            .filter(|(l, line)| *l == level && line.contains(part))
            .count()
    }

    fn take_published(&mut self) -> Vec<Published> {
        std::mem::take(&mut self.published)
    }
}

#[test]
fn the_count_budget_keeps_a_batch_waiting_and_stops_reading() {
    let mut r = Rig::new(Settings {
        capacity: 3,
        ..settings()
    });
    assert!(r.d.reads_jobs());
    r.send(&["a/1", "a/2", "a/3", "a/4", "a/5"], false);
    assert_eq!(r.logged(Level::Info, "accepted IMG for unit a from"), 3);
    assert!(!r.d.reads_jobs(), "no new batch while two commands wait");
    assert!(!r.d.reads_more());
    r.up();
    assert_eq!(r.sent(), ["a/1", "a/2", "a/3"]);
    r.ack_all();
    r.tick();
    assert_eq!(r.logged(Level::Info, "accepted"), 5);
    assert_eq!(r.sent(), ["a/1", "a/2", "a/3", "a/4", "a/5"]);
    assert!(r.d.reads_jobs());
}

#[test]
fn the_byte_budget_stops_admission_once_reached() {
    let mut r = Rig::new(Settings {
        max_bytes: payload("a/1").len() + 1,
        ..settings()
    });
    r.send(&["a/1", "a/2", "a/3"], false);
    assert_eq!(r.logged(Level::Info, "accepted"), 2);
    assert_eq!(r.d.queued_bytes(), 2 * payload("a/1").len());
    assert!(!r.d.reads_jobs());
    r.up();
    r.ack_all();
    r.ack_all();
    assert_eq!(r.sent(), ["a/1", "a/2", "a/3"]);
    assert_eq!(r.d.queued_bytes(), 0);
}

#[test]
fn while_the_broker_is_connected_only_a_few_windows_are_taken() {
    let mut r = Rig::new(settings());
    r.up();
    let cmds: Vec<String> = (0..4 * WINDOW).map(|i| format!("a/{i}")).collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    r.send(&cmds[..4 * WINDOW - 1], false);
    assert!(r.d.reads_jobs());
    assert_eq!(r.published.len(), WINDOW, "one window written");
    r.send(&cmds[4 * WINDOW - 1..], false);
    assert!(!r.d.reads_jobs(), "400 held while connected");
}

#[test]
fn a_failing_spool_with_the_broker_away_holds_a_batch_unconfirmed_until_it_recovers() {
    let mut r = Rig::new(spooled_settings());
    r.start(Found::Read(Recovery::default()));
    r.spool_answers
        .push_back(SpoolOutcome::Broke(SpoolError::Io(std::io::Error::other(
            "No space left on device",
        ))));
    r.send(&["a/1", "a/2"], true);
    assert_eq!(
        r.spool_ops[1..3],
        [SpoolOp::Append(0..2), SpoolOp::Sync],
        "appended, then synced once for the batch"
    );
    assert_eq!(
        r.logged(Level::Error, "cannot be written: No space left"),
        1
    );
    assert_eq!(
        r.logged(Level::Error, "2 commands just read could not be spooled"),
        1
    );
    assert_eq!(r.logged(Level::Info, "accepted"), 0);
    assert!(!r.d.reads_jobs(), "nothing more is read");
    r.advance(Duration::from_millis(500));
    let opens = |r: &Rig| {
        r.spool_ops
            .iter()
            .filter(|op| **op == SpoolOp::Open { move_first: None })
            .count()
    };
    r.tick();
    assert_eq!(
        opens(&r),
        1,
        "only the one at start: retried after a second"
    );
    r.advance(Duration::from_millis(500));
    r.tick();
    assert_eq!(opens(&r), 2);
    assert_eq!(r.logged(Level::Info, "writable again; 2 pending"), 1);
    assert_eq!(r.logged(Level::Info, "accepted IMG for unit a"), 2);
    assert!(r.d.reads_jobs());
}

#[test]
fn a_failing_spool_with_the_broker_connected_takes_one_window_published_at_once() {
    let mut r = Rig::new(spooled_settings());
    r.start(Found::Read(Recovery::default()));
    r.up();
    r.spool_answers
        .push_back(SpoolOutcome::Broke(SpoolError::Io(std::io::Error::other(
            "Read-only file system",
        ))));
    r.send(&["a/1"], false);
    assert_eq!(r.logged(Level::Info, "accepted IMG for unit a"), 1);
    assert_eq!(r.sent(), ["a/1"]);
    assert_eq!(r.d.room(), WINDOW);
    r.ack_all();
    assert!(
        !r.spool_ops.contains(&SpoolOp::Done(0)),
        "no record written while failing"
    );
    // Still failing at the retry: logged at debug only, retried again later.
    r.spool_answers.push_back(SpoolOutcome::OpenFailed {
        kept_as: None,
        reason: "Read-only file system".into(),
        move_first: None,
    });
    r.advance(Duration::from_secs(1));
    r.tick();
    assert_eq!(r.logged(Level::Debug, "still cannot be written"), 1);
    assert_eq!(r.logged(Level::Error, "cannot be written"), 1);
}

#[test]
fn a_lost_spool_is_written_again_at_once_and_the_batch_accepted() {
    let mut r = Rig::new(spooled_settings());
    r.start(Found::Read(Recovery::default()));
    r.spool_answers
        .push_back(SpoolOutcome::Broke(SpoolError::Lost(
            "the file was deleted".into(),
        )));
    r.send(&["a/1"], false);
    assert_eq!(
        r.logged(
            Level::Warn,
            "the file was deleted; writing it again from the 1 pending"
        ),
        1
    );
    assert_eq!(
        r.spool_ops[..4],
        [
            SpoolOp::Open { move_first: None },
            SpoolOp::Append(0..1),
            SpoolOp::Sync,
            SpoolOp::Open { move_first: None },
        ]
    );
    assert_eq!(r.logged(Level::Info, "accepted"), 1);
    assert_eq!(r.logged(Level::Error, ""), 0);
}

#[test]
fn a_spool_that_cannot_be_written_at_start_is_retried_and_still_moved_aside_first() {
    let mut r = Rig::new(spooled_settings());
    r.spool_answers.push_back(SpoolOutcome::OpenFailed {
        kept_as: None,
        reason: "cannot move the damaged file aside: Permission denied".into(),
        move_first: Some(Aside::Damaged),
    });
    let recovery = Recovery {
        damaged: vec![Region {
            offset: 12,
            len: 40,
        }],
        ..Recovery::default()
    };
    r.start(Found::Read(recovery));
    assert_eq!(
        r.logged(Level::Warn, "40 damaged bytes in 1 places skipped"),
        1
    );
    assert_eq!(
        r.logged(Level::Error, "cannot move the damaged file aside"),
        1
    );
    assert_eq!(r.d.room(), 0, "nothing is taken with the broker away");
    r.spool_answers.push_back(SpoolOutcome::Opened {
        kept_as: Some("/var/spool/relay.spool.damaged-X".into()),
    });
    r.advance(Duration::from_secs(1));
    r.tick();
    assert_eq!(
        r.spool_ops,
        [
            SpoolOp::Open {
                move_first: Some(Aside::Damaged)
            },
            SpoolOp::Open {
                move_first: Some(Aside::Damaged)
            }
        ]
    );
    assert_eq!(
        r.logged(Level::Warn, "kept as /var/spool/relay.spool.damaged-X"),
        1
    );
    assert_eq!(r.logged(Level::Info, "writable again"), 1);
}

#[test]
fn an_untrusted_or_unreadable_spool_is_not_replayed_and_moved_aside() {
    for (found, kind) in [
        (
            Found::Untrusted("is writable by group or others".into()),
            Aside::Untrusted,
        ),
        (
            Found::Unreadable("Permission denied".into()),
            Aside::Unreadable,
        ),
    ] {
        let mut r = Rig::new(spooled_settings());
        r.start(found);
        assert_eq!(
            r.spool_ops,
            [SpoolOp::Open {
                move_first: Some(kind)
            }]
        );
        assert_eq!(r.logged(Level::Error, "commands are not replayed"), 1);
        assert_eq!(r.counts, []);
    }
}

#[test]
fn acks_of_unknown_or_repeated_packet_ids_change_nothing() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1"], true);
    let pkid = r.published[0].0.expect("QoS 1");
    r.event(Event::Acked(vec![pkid.wrapping_add(7), pkid, pkid]));
    r.event(Event::Acked(vec![pkid]));
    assert_eq!(r.counts, [Count::Published]);
    assert_eq!(
        r.status,
        [r#"{"status":"ok","type":"IMG","unit":"a","id":"1"}"#]
    );
}

#[test]
fn ok_lines_go_only_to_connections_that_asked_for_them() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1"], false);
    r.ack_all();
    assert_eq!(r.counts, [Count::Published]);
    assert!(r.status.is_empty());
    assert_eq!(r.claims_ended, 1, "the claim ends with no line");
    assert_eq!(r.owed(), 0);
    assert_eq!(r.d.queued_bytes(), 0);
}

#[test]
fn a_lost_link_resends_from_the_oldest_with_recent_acks_again_in_their_place() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1", "b/1", "a/2", "b/2"], true);
    let sent = r.take_published();
    // Only b/1 is acknowledged before the broker dies.
    r.event(Event::Acked(vec![sent[1].0.expect("QoS 1")]));
    r.event(Event::LinkDown);
    assert_eq!(r.logged(Level::Info, "publishing again the 1 commands"), 1);
    r.tick();
    assert!(
        r.published.is_empty(),
        "nothing is written while the link is down"
    );
    r.up();
    assert_eq!(
        r.sent(),
        ["a/1", "b/1", "a/2", "b/2"],
        "acceptance order, per unit too"
    );
    let pkids: Vec<u16> = r.published.iter().filter_map(|(p, _, _)| *p).collect();
    let unique: std::collections::BTreeSet<u16> = pkids.into_iter().collect();
    assert_eq!(unique.len(), 4, "fresh packet ids");
    r.ack_all();
    assert_eq!(
        r.counts,
        [Count::Published; 4],
        "the copy is not counted again"
    );
    assert_eq!(r.status.len(), 4, "the copy owes no status line");
    assert_eq!(
        r.logged(Level::Debug, "broker took IMG for unit b again"),
        1
    );
}

#[test]
fn acks_older_than_a_second_are_not_published_again() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1", "a/2"], false);
    r.ack_all();
    r.advance(Duration::from_millis(1001));
    r.tick();
    r.send(&["a/3"], false);
    r.take_published();
    r.event(Event::LinkDown);
    r.up();
    assert_eq!(r.sent(), ["a/3"]);
}

#[test]
fn a_failed_write_loses_the_connection_until_the_next_one() {
    let mut r = Rig::new(settings());
    r.up();
    r.write_answers
        .push_back(Err(WriteError::Io(std::io::Error::other("Broken pipe"))));
    r.send(&["a/1"], false);
    assert_eq!(
        r.logged(Level::Debug, "write to the broker failed: Broken pipe"),
        1
    );
    r.take_published();
    r.send(&["a/2"], false);
    assert!(r.published.is_empty());
    r.event(Event::LinkDown);
    r.up();
    assert_eq!(r.sent(), ["a/1", "a/2"]);
}

#[test]
fn an_idle_publisher_waits_for_events_only_once_nothing_can_come_due() {
    let mut r = Rig::new(Settings {
        lifetimes: ttl(600),
        ..settings()
    });
    r.up();
    assert_eq!(r.d.wait(r.now()), IDLE_WAIT, "nothing queued");
    r.send(&["a/1"], false);
    assert_eq!(r.d.wait(r.now()), Duration::from_secs(1), "in flight");
    r.event(Event::Acked(vec![r.published[0].0.expect("QoS 1")]));
    assert_eq!(
        r.d.wait(r.now()),
        Duration::from_millis(1001),
        "until the acknowledged command is no longer published again after a break"
    );
    r.advance(Duration::from_millis(1001));
    r.tick();
    assert_eq!(r.d.wait(r.now()), IDLE_WAIT);
}

#[test]
fn a_write_is_held_briefly_for_room_under_load() {
    let mut r = Rig::new(settings());
    r.up();
    let cmds: Vec<String> = (0..WINDOW + 10).map(|i| format!("a/{i}")).collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    r.send(&cmds, false);
    assert_eq!(r.published.len(), WINDOW);
    // One place frees up; ten wait: held, not written one by one.
    r.event(Event::Acked(vec![r.published[0].0.expect("QoS 1")]));
    r.tick();
    assert_eq!(r.published.len(), WINDOW);
    assert!(r.d.wait(r.now()) <= Duration::from_micros(200));
    r.advance(Duration::from_micros(200));
    r.tick();
    assert_eq!(r.published.len(), WINDOW + 1);
    assert_eq!(
        r.d.wait(r.now()),
        Duration::from_secs(1),
        "nothing held with the window full"
    );
}

#[test]
fn with_qos_0_written_is_delivered() {
    let mut r = Rig::new(Settings {
        qos1: false,
        ..settings()
    });
    r.up();
    r.send(&["a/1", "a/2"], true);
    assert_eq!(r.published[0].0, None);
    assert_eq!(r.counts, [Count::Published; 2]);
    assert_eq!(r.status.len(), 2);
    r.event(Event::LinkDown);
    r.up();
    assert_eq!(r.sent(), ["a/1", "a/2"], "nothing kept to publish again");
}

#[test]
fn a_command_past_its_ttl_while_queued_is_dropped_with_an_error_line() {
    let mut r = Rig::new(Settings {
        lifetimes: ttl(10),
        ..spooled_settings()
    });
    r.start(Found::Read(Recovery::default()));
    r.send(&["a/1"], false);
    r.advance(Duration::from_secs(5));
    r.send(&["a/2"], false);
    r.advance(Duration::from_secs(6));
    r.up();
    assert_eq!(r.sent(), ["a/2"]);
    assert_eq!(r.counts, [Count::Expired]);
    assert!(r.spool_ops.contains(&SpoolOp::Done(0)));
    assert_eq!(
        r.status,
        [
            r#"{"status":"error","type":"IMG","unit":"a","id":"1","error":"expired after 11 s (COMMAND_TTL 10 s)"}"#
        ]
    );
    assert_eq!(
        r.logged(
            Level::Warn,
            "expired IMG for unit a after 11 s in the queue (COMMAND_TTL 10 s)"
        ),
        1
    );
}

fn replayed(cmd: &str, received: SystemTime) -> Replayed {
    Replayed {
        received,
        payload: payload(cmd),
        held: false,
    }
}

#[test]
fn replayed_commands_expire_by_their_spooled_age_unless_the_clock_cannot_be_right() {
    let mut r = Rig::new(Settings {
        lifetimes: ttl(60),
        ..spooled_settings()
    });
    // Well after this binary was built, so that a minute ago was too.
    r.wall0 += Duration::from_secs(3600);
    let now = r.now().wall;
    let live = vec![
        replayed("old/1", now - Duration::from_secs(61)),
        replayed("young/1", now - Duration::from_secs(59)),
        replayed("future/1", now + Duration::from_secs(86_400)),
        replayed("before-build/1", UNIX_EPOCH + Duration::from_secs(1)),
        Replayed {
            received: now,
            payload: b"{\"unit\":\"x\"}".to_vec(),
            held: false,
        },
    ];
    let recovery = Recovery {
        live,
        ..Recovery::default()
    };
    r.start(Found::Read(recovery));
    assert_eq!(
        r.logged(
            Level::Warn,
            "expired IMG for unit old after 61 s in the spool"
        ),
        1
    );
    assert_eq!(
        r.logged(Level::Warn, "2 commands carry a time that cannot be right"),
        1
    );
    assert_eq!(r.logged(Level::Warn, "no longer validates"), 1);
    assert_eq!(
        r.logged(Level::Info, "3 unacknowledged commands from the last run"),
        1
    );
    assert_eq!(
        r.counts,
        [
            Count::Replayed,
            Count::Expired,
            Count::Replayed,
            Count::Replayed,
            Count::Replayed,
            Count::Replayed,
            Count::Rejected
        ]
    );
    // The young one keeps its age: it expires 1 s later; those of unknown
    // age count from now.
    r.advance(Duration::from_secs(2));
    r.up();
    assert_eq!(r.sent(), ["future/1", "before-build/1"]);
    assert_eq!(
        r.logged(Level::Info, "accepted"),
        0,
        "spooled before, not accepted again"
    );
}

#[test]
fn a_clock_jump_does_not_expire_what_waits() {
    let mut r = Rig::new(Settings {
        lifetimes: ttl(10),
        ..settings()
    });
    r.send(&["a/1"], false);
    // The wall clock jumps a day ahead (NTP); the monotonic clock does not.
    r.wall0 += Duration::from_secs(86_400);
    r.up();
    assert_eq!(r.sent(), ["a/1"]);
}

#[test]
fn shutdown_with_commands_left_says_what_is_lost_and_says_goodbye() {
    let mut r = Rig::new(Settings {
        state: Some(OfflineState {
            topic: "relay/state".into(),
            message: b"offline".to_vec(),
        }),
        ..settings()
    });
    r.send(&["a/1", "a/2"], false);
    r.up();
    // a/1 is acknowledged: it would be published again if the link broke now.
    r.event(Event::Acked(vec![r.published[0].0.expect("QoS 1")]));
    r.event(Event::Stop {
        grace: Duration::from_secs(5),
    });
    assert!(r.d.stopping());
    assert_eq!(r.d.wait(r.now()), Duration::from_secs(1));
    r.advance(Duration::from_millis(4500));
    assert_eq!(r.d.wait(r.now()), Duration::from_millis(500));
    assert_eq!(r.d.ending(r.now()), None);
    r.advance(Duration::from_millis(500));
    assert_eq!(r.d.ending(r.now()), Some(Ending::GraceOver));
    r.event(Event::Close { unread: 3 });
    assert_eq!(
        r.logged(
            Level::Error,
            "shutdown grace of 5 s ran out: 1 accepted commands not delivered (no SPOOL_FILE)"
        ),
        1
    );
    assert_eq!(
        r.logged(
            Level::Error,
            "3 commands read from backends were never accepted"
        ),
        1
    );
    assert_eq!(
        r.disconnects,
        [(
            Some(u16::MAX),
            "relay/state".to_string(),
            "offline".to_string()
        )]
    );
    assert_eq!(r.logged(Level::Info, "disconnected from broker"), 1);
    // The broken link that follows is ours: nothing is published again.
    r.event(Event::LinkDown);
    assert_eq!(r.logged(Level::Info, "publishing again"), 0);
}

#[test]
fn shutdown_with_a_spool_leaves_the_rest_in_it() {
    let mut r = Rig::new(spooled_settings());
    r.start(Found::Read(Recovery::default()));
    r.send(&["a/1"], false);
    r.event(Event::Stop {
        grace: Duration::ZERO,
    });
    r.spool_ops.clear();
    r.event(Event::Close { unread: 0 });
    assert_eq!(
        r.logged(
            Level::Warn,
            "1 unacknowledged commands stay in the spool /var/spool/relay.spool"
        ),
        1
    );
    assert_eq!(
        r.spool_ops,
        [SpoolOp::Tidy],
        "the spool is written out last"
    );
    assert!(r.disconnects.is_empty(), "no broker to say goodbye to");
}

#[test]
fn the_loop_ends_drained_once_intake_closed_and_everything_is_delivered() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1"], false);
    r.event(Event::IntakeClosed);
    assert_eq!(r.d.ending(r.now()), None);
    r.ack_all();
    assert_eq!(r.d.ending(r.now()), Some(Ending::Drained));
    r.event(Event::Close { unread: 0 });
    assert_eq!(r.logged(Level::Error, ""), 0);
}

#[test]
fn copies_published_again_are_not_written_to_the_spool() {
    let mut r = Rig::new(spooled_settings());
    r.start(Found::Read(Recovery::default()));
    r.up();
    r.send(&["a/1", "b/1", "c/1"], false);
    let sent = r.take_published();
    r.event(Event::Acked(vec![sent[1].0.expect("QoS 1")]));
    r.event(Event::LinkDown);
    let spooled: Vec<String> = r.d.spooled().map(|c| label(c.payload)).collect();
    assert_eq!(spooled, ["a/1", "c/1"]);
    assert_eq!(r.d.spooled_in(1..3).count(), 1);
}

#[test]
fn spool_records_follow_acceptance_and_delivery() {
    let mut r = Rig::new(spooled_settings());
    r.start(Found::Read(Recovery::default()));
    r.up();
    r.send(&["a/1", "a/2"], false);
    r.ack_all();
    let ops: Vec<&SpoolOp> = r
        .spool_ops
        .iter()
        .filter(|op| !matches!(op, SpoolOp::Tidy))
        .collect();
    assert_eq!(
        ops,
        [
            &SpoolOp::Open { move_first: None },
            &SpoolOp::Append(0..2),
            &SpoolOp::Sync,
            &SpoolOp::Done(0),
            &SpoolOp::Done(1)
        ]
    );
}

#[test]
fn one_lost_puback_drops_the_link_within_its_deadline_while_others_arrive() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1", "b/1"], true);
    let sent = r.take_published();
    // a/1's PUBACK is lost; commands behind it keep being acknowledged.
    r.event(Event::Acked(vec![sent[1].0.expect("QoS 1")]));
    for i in 0..12 {
        r.advance(Duration::from_secs(10));
        r.send(&[&format!("c/{i}")], true);
        let acks = r.take_published().iter().filter_map(|p| p.0).collect();
        r.event(Event::Acked(acks));
        r.tick();
        assert!(
            r.drops.is_empty(),
            "within the deadline at {} s",
            10 * (i + 1)
        );
    }
    // Past the deadline, and past the second in which acknowledged
    // commands are published again after a break (c/11).
    r.advance(Duration::from_secs(2));
    r.tick();
    assert_eq!(
        r.drops,
        ["no PUBACK for IMG for unit a within 120 s (2 × MQTT_KEEPALIVE)"]
    );
    assert_eq!(
        r.logged(Level::Warn, "dropping the connection to publish it again"),
        1
    );
    r.send(&["d/1"], true);
    assert!(r.published.is_empty(), "nothing goes out on a dropped link");
    r.event(Event::LinkDown);
    r.up();
    assert_eq!(r.sent(), ["a/1", "d/1"]);
    r.ack_all();
    assert!(r.d.in_flight() == 0 && r.d.queued_bytes() == 0);
}

#[test]
fn a_command_larger_than_the_known_limit_is_set_aside_at_once() {
    let mut r = Rig::new(Settings {
        max_packet: Some(70),
        ..settings()
    });
    r.up();
    let big = format!("a/{}", "9".repeat(40));
    r.send(&["b/1", &big, "b/2"], true);
    assert_eq!(r.sent(), ["b/1", "b/2"], "everything behind it flows");
    assert_eq!(r.counts, [Count::SetAside]);
    assert_eq!(
        r.logged(
            Level::Error,
            "more than the broker takes (MQTT_MAX_PACKET_BYTES 70); not published"
        ),
        1
    );
    assert!(
        r.status
            .iter()
            .any(|l| l.contains("set aside: its PUBLISH is") && l.contains("bytes")),
        "{:?}",
        r.status
    );
    r.ack_all();
    assert_eq!(r.d.queued_bytes(), 0);
}

#[test]
fn a_command_first_unacknowledged_at_two_breaks_in_a_row_is_set_aside() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1", "b/1", "b/2"], true);
    r.take_published();
    r.event(Event::LinkDown);
    r.up();
    assert_eq!(
        r.take_published().len(),
        3,
        "once is a broken link, not a verdict"
    );
    r.event(Event::LinkDown);
    assert_eq!(
        r.logged(
            Level::Error,
            "set aside IMG for unit a id \"1\" (34 bytes): the broker closed the connection \
             twice with it first unacknowledged (its PUBLISH is 63 bytes"
        ),
        1,
        "{:?}",
        r.logs
    );
    assert_eq!(r.counts, [Count::SetAside]);
    r.up();
    assert_eq!(r.sent(), ["b/1", "b/2"]);
    r.ack_all();
    assert_eq!(r.d.queued_bytes(), 0);
}

#[test]
fn breaks_with_different_commands_first_set_nothing_aside() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1", "b/1"], true);
    let sent = r.take_published();
    r.event(Event::LinkDown);
    r.up();
    r.event(Event::Acked(vec![r.published[0].0.expect("QoS 1")]));
    let _ = sent;
    r.event(Event::LinkDown);
    r.up();
    r.ack_all();
    assert!(!r.counts.contains(&Count::SetAside), "{:?}", r.counts);
}

#[test]
fn a_planned_move_writes_nothing_more_takes_the_acks_and_publishes_nothing_again() {
    let mut r = Rig::new(settings());
    r.up();
    r.send(&["a/1", "b/1"], true);
    let sent = r.take_published();
    r.event(Event::LinkDraining);
    r.send(&["c/1"], true);
    assert!(r.published.is_empty(), "nothing more on a draining link");
    r.event(Event::Acked(vec![sent[0].0.expect("QoS 1")]));
    r.event(Event::LinkClosed);
    r.up();
    assert_eq!(
        r.sent(),
        ["b/1", "c/1"],
        "what was acknowledged is not published again; the rest is"
    );
    assert!(!r.counts.contains(&Count::SetAside));
}

#[test]
fn the_smaller_of_the_configured_and_the_announced_limit_applies() {
    let mut r = Rig::new(Settings {
        max_packet: Some(1000),
        ..settings()
    });
    r.event(Event::BrokerLimit(Some(70)));
    r.up();
    let big = format!("a/{}", "9".repeat(40));
    r.send(&["b/1", &big], true);
    assert_eq!(r.sent(), ["b/1"]);
    assert_eq!(
        r.logged(
            Level::Error,
            "more than the broker takes (the broker's Maximum Packet Size 70)"
        ),
        1
    );
}

mod cameras;
