//! Part of the hold for cameras (publisher thread, no I/O): each camera's
//! next timer (its release, the end of its serial wait, a never-seen
//! command's wait, its going offline) and what happens when one is due.

use std::time::Instant;

use log::Level;

use super::Gate;
use crate::delivery::policy::cadence::State;
use crate::delivery::policy::{Action, Count, Delivery, Now};
use crate::ops::log_limit::Kind;

impl Delivery {
    /// Sets the camera's next timer: its release, the end of its serial
    /// wait, its oldest never-seen command's wait, or its going offline
    /// while commands are sent to it.
    pub(super) fn reschedule(&mut self, camera: u64, now: Instant) {
        let timeout = self.settings.device_timeout;
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let mut next = [
            q.release_at,
            q.gate.map(|g| g.until),
            q.held
                .iter()
                .filter_map(|s| self.hold.held.get(s)?.unseen_until)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let present = self.hold.seen.state(camera, timeout, now) == Some(State::Present);
        if present && (!q.sent.is_empty() || q.gate.is_some()) {
            let offline = self.hold.seen.offline_at(camera, timeout);
            next = next.into_iter().chain(offline).min();
        }
        if present && q.release_at.is_none() && q.gate.is_none() && !q.held.is_empty() {
            // Present with nothing in the way: its commands go now.
            next = Some(now);
        }
        let old = q.timer;
        if old == next {
            return;
        }
        if let Some(at) = old {
            self.hold.timers.remove(&(at, camera));
        }
        if let Some(at) = next {
            self.hold.timers.insert((at, camera));
        }
        if let Some(q) = self.hold.queues.get_mut(&camera) {
            q.timer = next;
        }
    }

    /// The timers due: releases, serial timeouts, never-seen waits, and
    /// cameras gone offline with commands sent to them.
    pub(in crate::delivery::policy) fn camera_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        // Each camera due is seen once a turn: one whose timer is still due
        // afterwards waits for the next turn rather than spin here.
        let due: Vec<(Instant, u64)> = self
            .hold
            .timers
            .range(..=(now.mono, u64::MAX))
            .copied()
            .collect();
        for (at, camera) in due {
            self.hold.timers.remove(&(at, camera));
            if let Some(q) = self.hold.queues.get_mut(&camera) {
                q.timer = None;
            }
            self.camera_due(camera, now, out);
            self.reschedule(camera, now.mono);
            self.hold.tidy(camera);
        }
    }

    pub(super) fn camera_due(&mut self, camera: u64, now: Now, out: &mut Vec<Action>) {
        let timeout = self.settings.device_timeout;
        let state = self.hold.seen.state(camera, timeout, now.mono);
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let (name, gate) = (q.camera.clone(), q.gate);
        if let Some(gate) = gate.filter(|g| g.until <= now.mono) {
            self.serial_timed_out(camera, &name, gate, out);
        }
        if state == Some(State::Offline) {
            self.went_offline(camera, now, out);
        }
        if state.is_none() {
            self.unseen_waited(camera, now, out);
        }
        // A release that came due goes whether or not the camera is still
        // judged present: its heartbeat proved it there, and nothing since
        // (a reboot, a lost link) said otherwise.
        let q = self.hold.queues.get(&camera);
        let released = q.is_some_and(|q| q.release_at.is_some_and(|r| r <= now.mono));
        let free = q.is_some_and(|q| q.release_at.is_none() && q.gate.is_none());
        let gated = q.is_some_and(|q| q.gate.is_some());
        if released && !self.hold.seen.seen_live(camera) {
            // Gone again since (a reboot): its next heartbeat releases them.
            if let Some(q) = self.hold.queues.get_mut(&camera) {
                q.release_at = None;
            }
        } else if !gated && (released || (free && state == Some(State::Present))) {
            self.release(camera, out);
        }
    }

    pub(super) fn serial_timed_out(
        &mut self,
        camera: u64,
        name: &str,
        gate: Gate,
        out: &mut Vec<Action>,
    ) {
        if let Some(q) = self.hold.queues.get_mut(&camera) {
            q.gate = None;
        }
        out.push(Action::Count(Count::SerialTimeout));
        let what = self
            .hold
            .sent
            .get(&gate.seq)
            .map(|s| format!("{} for unit {}", s.job.kind.as_str(), s.job.unit))
            .unwrap_or_else(|| "its last command that restarts it".to_string());
        let secs = self.settings.serial_timeout.as_secs();
        self.log(out, Level::Warn, || {
            format!(
                "camera {name} sent no heartbeat within SERIAL_TIMEOUT ({secs} s) after {what}: \
                 its newer commands go now"
            )
        });
    }

    /// Silent for `DEVICE_TIMEOUT` with commands sent to it: they go again
    /// once it is back.
    pub(super) fn went_offline(&mut self, camera: u64, now: Now, out: &mut Vec<Action>) {
        let Some(q) = self.hold.queues.get_mut(&camera) else {
            return;
        };
        q.gate = None;
        q.release_at = None;
        self.resend(camera, None, "offline", now, out);
    }

    /// A camera still never seen: its commands past `UNSEEN_WAIT` go
    /// anyway, as commands for an untracked camera.
    pub(super) fn unseen_waited(&mut self, camera: u64, now: Now, out: &mut Vec<Action>) {
        let Some(q) = self.hold.queues.get(&camera) else {
            return;
        };
        let due: Vec<u64> = q
            .held
            .iter()
            .copied()
            .filter(|s| {
                self.hold
                    .held
                    .get(s)
                    .and_then(|h| h.unseen_until)
                    .is_some_and(|u| u <= now.mono)
            })
            .collect();
        let name = q.camera.clone();
        let n = due.len();
        for seq in due {
            if let Some(held) = self.hold.remove_held(seq) {
                let mut job = held.job;
                job.camera = None;
                self.ledger.restore(seq, job);
            }
        }
        if n > 0 {
            let wait = self.settings.unseen_wait.as_secs();
            self.log(out, Level::Warn, || {
                format!(
                    "camera {name} sent no heartbeat within UNSEEN_WAIT ({wait} s): publishing its \
                     {n} commands anyway (nothing confirms them)"
                )
            });
        }
    }

    /// The camera can take its held commands: they join the ledger at
    /// their places, oldest first (the write sees to a command that
    /// restarts it).
    pub(super) fn release(&mut self, camera: u64, out: &mut Vec<Action>) {
        let Some(q) = self.hold.queues.get_mut(&camera) else {
            return;
        };
        q.release_at = None;
        let seqs: Vec<u64> = q.held.iter().copied().collect();
        let name = q.camera.clone();
        let mut released = 0;
        for seq in seqs {
            if let Some(held) = self.hold.remove_held(seq) {
                self.ledger.restore(seq, held.job);
                released += 1;
            }
        }
        if released > 0 && Level::Info <= self.settings.log_level {
            out.push(Action::LogLimited(
                Kind::ReleasedCommands,
                Level::Info,
                format!("camera {name} is present: releasing its {released} held commands, oldest first"),
            ));
        }
    }
}
