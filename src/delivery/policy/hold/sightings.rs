//! Part of the hold for cameras (publisher thread, no I/O): what the device
//! side saw. Heartbeats confirm commands sent or make them go again, prove a
//! camera present so its held commands are released; a device reply
//! confirms the settings request it answers.

use std::time::{Duration, Instant};

use log::Level;

use super::{Sent, Why, CONFIRMING_BEATS, CONFIRM_MARGIN, RELEASE_DELAY};
use crate::delivery::outbox;
use crate::delivery::policy::cadence::{Class, State};
use crate::delivery::policy::{Action, Count, Delivery, Durability, Now, Sighting, SpoolOp};
use crate::ops::log_limit::Kind;
use crate::protocol::command::CommandType;

impl Delivery {
    /// What the device side saw: heartbeats, lost sight, device replies.
    pub(in crate::delivery::policy) fn sightings(
        &mut self,
        sightings: Vec<Sighting>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        for sighting in sightings {
            match sighting {
                Sighting::Beat {
                    camera,
                    at,
                    class,
                    interval,
                } => self.beat(&camera, at, class, interval, now, out),
                Sighting::LostSight => self.lose_sight(),
                Sighting::Reply { unit } => self.replied(&unit, now, out),
            }
        }
    }

    /// Every camera's presence is unknown until its next live heartbeat.
    pub(in crate::delivery::policy) fn lose_sight(&mut self) {
        self.hold.seen.lose_sight();
        let cameras: Vec<u64> = self.hold.queues.keys().copied().collect();
        for camera in cameras {
            if let Some(q) = self.hold.queues.get_mut(&camera) {
                q.release_at = None;
            }
        }
    }

    pub(super) fn beat(
        &mut self,
        camera: &str,
        at: Instant,
        class: Class,
        interval: Option<Duration>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let fp = self.hold.seen.fingerprint(camera);
        if !self.hold.queues.contains_key(&fp) {
            // Nothing out for it: only its presence is noted.
            self.hold.seen.beat(fp, at, class, interval);
            return;
        }
        let timeout = self.settings.device_timeout;
        let was_present = self.hold.seen.state(fp, timeout, now.mono) == Some(State::Present);
        self.hold.seen.beat(fp, at, class, interval);
        let margin = self
            .hold
            .seen
            .interval(fp)
            .map_or(CONFIRM_MARGIN, |i| (i / 2).min(CONFIRM_MARGIN));
        self.confirm_serial(fp, at, margin, now, out);
        if class.reconnect() {
            self.resend(fp, Some(at), class.reason(), now, out);
        } else if class == Class::Regular {
            self.count_regular(fp, at, margin, now, out);
        }
        if class.proves_presence() {
            let release_at = if class == Class::Regular && was_present {
                at
            } else {
                at + self.release_delay(fp)
            };
            if let Some(q) = self.hold.queues.get_mut(&fp) {
                if !q.held.is_empty() && q.gate.is_none() {
                    q.release_at = Some(q.release_at.map_or(release_at, |r| r.min(release_at)));
                }
            }
        }
        self.reschedule(fp, now.mono);
        self.hold.tidy(fp);
    }

    /// How long after the heartbeat that showed it back a camera's held
    /// commands go: [`RELEASE_DELAY`], or half its interval or half
    /// `DEVICE_TIMEOUT` when shorter (a camera must not be overdue by the
    /// time its commands go).
    pub(super) fn release_delay(&self, camera: u64) -> Duration {
        let mut delay = RELEASE_DELAY.min(self.settings.device_timeout / 2);
        if let Some(i) = self.hold.seen.interval(camera) {
            delay = delay.min(i / 2);
        }
        delay
    }

    /// A heartbeat after the broker took a command that restarts the
    /// camera confirms it, whatever the heartbeat says: the restart (an
    /// early heartbeat, a reboot, a long absence) is its expected end, and
    /// a heartbeat on time shows the camera never left. Newer commands then
    /// go once the camera can take them.
    pub(super) fn confirm_serial(
        &mut self,
        camera: u64,
        at: Instant,
        margin: Duration,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let newest = q
            .sent
            .iter()
            .copied()
            .filter(|s| {
                self.hold
                    .sent
                    .get(s)
                    .is_some_and(|x| x.serial && at >= x.published + margin)
            })
            .max();
        if let Some(seq) = newest {
            self.confirm_up_to(camera, seq, now, out);
        }
    }

    /// A regular heartbeat: each command sent long enough before it counts
    /// it; the second confirms it.
    pub(super) fn count_regular(
        &mut self,
        camera: u64,
        at: Instant,
        margin: Duration,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let mut newest_confirmed = None;
        for seq in q.sent.iter().copied().collect::<Vec<_>>() {
            let Some(sent) = self.hold.sent.get_mut(&seq) else {
                continue;
            };
            if at < sent.published + margin {
                continue;
            }
            sent.regular = sent.regular.saturating_add(1);
            if sent.regular >= CONFIRMING_BEATS {
                newest_confirmed = Some(seq);
            }
        }
        if let Some(seq) = newest_confirmed {
            self.confirm_up_to(camera, seq, now, out);
        }
    }

    /// `seq` is confirmed at its camera, and so is every command sent
    /// before it on the same topic (one subscription delivers in order).
    pub(super) fn confirm_up_to(&mut self, camera: u64, seq: u64, now: Now, out: &mut Vec<Action>) {
        let Some(topic) = self.hold.sent.get(&seq).map(|s| s.job.topic.clone()) else {
            return;
        };
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let done: Vec<u64> = q
            .sent
            .range(..=seq)
            .copied()
            .filter(|s| self.hold.sent.get(s).is_some_and(|x| x.job.topic == topic))
            .collect();
        for s in done {
            if let Some(sent) = self.hold.remove_sent(s) {
                self.confirmed(s, sent, now, out);
            }
        }
    }

    pub(super) fn confirmed(&mut self, seq: u64, sent: Sent, now: Now, out: &mut Vec<Action>) {
        let mut job = sent.job;
        out.push(Action::Count(Count::Confirmed));
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let after = now
            .mono
            .saturating_duration_since(sent.published)
            .as_millis();
        self.log(out, Level::Debug, || {
            format!(
                "camera {} had {} for unit {} id {} ({after} ms after the broker took it)",
                job.camera.as_deref().unwrap_or_default(),
                job.kind.as_str(),
                job.unit,
                job.id.as_deref().unwrap_or("-"),
            )
        });
        if let Some(reply) = job.reply.take() {
            let line = outbox::camera_line(
                "delivered",
                job.kind.as_str(),
                &job.unit,
                job.id.as_deref(),
                job.camera.as_deref().unwrap_or_default(),
                None,
            );
            out.push(Action::Done {
                reply,
                line: Some(line),
            });
        }
    }

    /// A device reply on `unit`: the oldest SCS or UDS sent to it is confirmed.
    pub(super) fn replied(&mut self, unit: &str, now: Now, out: &mut Vec<Action>) {
        let asked = self.hold.sent.iter().find(|(_, s)| {
            s.job.unit == unit && matches!(s.job.kind, CommandType::Scs | CommandType::Uds)
        });
        let Some((&seq, sent)) = asked else {
            return;
        };
        let camera = sent.camera;
        self.confirm_up_to(camera, seq, now, out);
        self.hold.tidy(camera);
    }

    /// The camera may have missed what was sent to it (before `before`,
    /// when given): those commands are held again, to go first once it
    /// can take them.
    pub(super) fn resend(
        &mut self,
        camera: u64,
        before: Option<Instant>,
        reason: &'static str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let name = q.camera.clone();
        let again: Vec<u64> = q
            .sent
            .iter()
            .copied()
            .filter(|s| {
                self.hold
                    .sent
                    .get(s)
                    .is_some_and(|x| before.is_none_or(|b| x.published < b))
            })
            .collect();
        if again.is_empty() {
            return;
        }
        let n = again.len();
        for seq in again {
            let Some(sent) = self.hold.remove_sent(seq) else {
                continue;
            };
            let job = sent.job;
            out.push(Action::Count(Count::Resent(reason)));
            if let Some(r) = job.reply.as_ref().filter(|r| r.camera_lines) {
                out.push(Action::Line {
                    conn: r.conn,
                    line: outbox::camera_line(
                        "resent",
                        job.kind.as_str(),
                        &job.unit,
                        job.id.as_deref(),
                        job.camera.as_deref().unwrap_or_default(),
                        Some(reason),
                    ),
                });
            }
            self.hold(seq, job, (camera, &name), Why::Releasing, now, out);
        }
        if Level::Info <= self.settings.log_level {
            out.push(Action::LogLimited(
                Kind::ResentCommands,
                Level::Info,
                format!(
                    "camera {name} may have missed {n} commands ({}): publishing them again, oldest first",
                    reason_says(reason)
                ),
            ));
        }
    }
}

fn reason_says(reason: &str) -> &'static str {
    match reason {
        "reconnect" => "it reconnected: a heartbeat came early",
        "absence" => "it was away: a heartbeat came after a long gap",
        "reboot" => "it restarted: its timestamp went backwards",
        "offline" => "it went offline",
        _ => "the relay lost sight of it",
    }
}
