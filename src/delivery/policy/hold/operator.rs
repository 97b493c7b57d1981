//! Part of the hold for cameras (publisher thread, no I/O): an operator's
//! requests (`ms500-relay held`, `cancel`, PROTOCOL.md §1.4), answered with
//! lines to the connection that asked.

use log::Level;

use super::Queue;
use crate::delivery::item::Accepted;
use crate::delivery::policy::cadence::State;
use crate::delivery::policy::write::report;
use crate::delivery::policy::{Action, Count, Delivery, Durability, Now, SpoolOp};
use crate::protocol::command::CommandType;
use crate::protocol::control::Control;

impl Delivery {
    /// What an operator asked (`protocol::control`), answered with lines
    /// to `conn`: the relay's side of `ms500-relay held` and `cancel`.
    pub(in crate::delivery::policy) fn operator(
        &mut self,
        request: Control,
        conn: u64,
        by: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        match request {
            Control::Held { camera } => self.list_held(camera.as_deref(), conn, now, out),
            Control::Cancel { camera, types } => {
                self.cancel(&camera, &types, conn, by, now, out);
            }
        }
        out.push(Action::Answered { conn });
    }

    /// One line per command held or unconfirmed (for `camera`, or all),
    /// camera by camera, then a closing line with the totals.
    pub(super) fn list_held(
        &self,
        camera: Option<&str>,
        conn: u64,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let timeout = self.settings.device_timeout;
        let only = camera.map(|c| self.hold.seen.fingerprint(&c.to_ascii_lowercase()));
        let mut queues: Vec<(&u64, &Queue)> = self
            .hold
            .queues
            .iter()
            .filter(|(fp, _)| only.is_none_or(|o| o == **fp))
            .collect();
        queues.sort_by(|a, b| a.1.camera.cmp(&b.1.camera));
        let (mut held, mut unconfirmed) = (0, 0);
        for (fp, q) in &queues {
            let state = self
                .hold
                .seen
                .state(**fp, timeout, now.mono)
                .map_or("unknown", State::as_str);
            let waiting = q
                .held
                .iter()
                .filter_map(|s| Some((*s, &self.hold.held.get(s)?.job, "held")));
            let sent = q
                .sent
                .iter()
                .filter_map(|s| Some((*s, &self.hold.sent.get(s)?.job, "unconfirmed")));
            for (_, job, how) in waiting.chain(sent) {
                if how == "held" {
                    held += 1;
                } else {
                    unconfirmed += 1;
                }
                let line = self.held_line(job, state, how, now);
                out.push(Action::Line { conn, line });
            }
        }
        let end = ordered(&[
            ("control", "held".into()),
            ("done", true.into()),
            ("held", held.into()),
            ("unconfirmed", unconfirmed.into()),
            ("cameras", queues.len().into()),
        ]);
        out.push(Action::Line { conn, line: end });
    }

    /// `{"control":"held",…}`: one command as `ms500-relay held` shows it.
    pub(super) fn held_line(&self, job: &Accepted, state: &str, how: &str, now: Now) -> Vec<u8> {
        let age = now.mono.saturating_duration_since(job.received).as_secs();
        let left = self
            .expires(job)
            .map(|at| at.saturating_duration_since(now.mono).as_secs());
        let id: Option<serde_json::Value> = job
            .id
            .as_deref()
            .and_then(|id| serde_json::from_str(id).ok());
        let from = job.peer.map_or("spool".to_string(), |p| p.to_string());
        ordered(&[
            ("control", "held".into()),
            ("camera", job.camera.clone().into()),
            ("state", state.into()),
            ("waiting", how.into()),
            ("type", job.kind.as_str().into()),
            ("unit", job.unit.clone().into()),
            ("id", id.into()),
            ("age_s", age.into()),
            ("bytes", job.payload.len().into()),
            ("lifetime_left_s", left.into()),
            ("from", from.into()),
        ])
    }

    /// Drops what is held or unconfirmed for `camera` (of `types`, when
    /// named): never published (again), `D` in the spool, an error line to
    /// its connection when still open, a log line; the operator gets a line
    /// per command and one with the count.
    pub(super) fn cancel(
        &mut self,
        camera: &str,
        types: &[CommandType],
        conn: u64,
        by: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let fp = self.hold.seen.fingerprint(&camera.to_ascii_lowercase());
        let seqs: Vec<u64> = self
            .hold
            .queues
            .get(&fp)
            .map(|q| q.held.iter().chain(q.sent.iter()).copied().collect())
            .unwrap_or_default();
        let mut cancelled = 0;
        for seq in seqs {
            let wanted = |job: &Accepted| types.is_empty() || types.contains(&job.kind);
            let (job, was) = if self.hold.held.get(&seq).is_some_and(|h| wanted(&h.job)) {
                match self.hold.remove_held(seq) {
                    Some(h) => (h.job, "held"),
                    None => continue,
                }
            } else if self.hold.sent.get(&seq).is_some_and(|s| wanted(&s.job)) {
                match self.hold.remove_sent(seq) {
                    Some(s) => (s.job, "unconfirmed"),
                    None => continue,
                }
            } else {
                continue;
            };
            cancelled += 1;
            self.cancelled(seq, job, was, conn, by, out);
        }
        self.reschedule(fp, now.mono);
        self.hold.tidy(fp);
        let end = ordered(&[
            ("control", "cancel".into()),
            ("done", true.into()),
            ("camera", camera.into()),
            ("cancelled", cancelled.into()),
        ]);
        out.push(Action::Line { conn, line: end });
    }

    pub(super) fn cancelled(
        &mut self,
        seq: u64,
        mut job: Accepted,
        was: &'static str,
        conn: u64,
        by: &str,
        out: &mut Vec<Action>,
    ) {
        if !job.published {
            out.push(Action::Count(Count::Cancelled));
        }
        if matches!(self.spool, Durability::Writing) {
            out.push(Action::Spool(SpoolOp::Done(seq)));
        }
        let camera = job.camera.clone().unwrap_or_default();
        self.log(out, Level::Info, || {
            format!(
                "cancelled {} for unit {} id {} for camera {camera} ({was}) by the operator ({by})",
                job.kind.as_str(),
                job.unit,
                job.id.as_deref().unwrap_or("-")
            )
        });
        let id: Option<serde_json::Value> = job
            .id
            .as_deref()
            .and_then(|id| serde_json::from_str(id).ok());
        let line = ordered(&[
            ("control", "cancel".into()),
            ("camera", camera.into()),
            ("was", was.into()),
            ("type", job.kind.as_str().into()),
            ("unit", job.unit.clone().into()),
            ("id", id.into()),
        ]);
        out.push(Action::Line { conn, line });
        report(&mut job, Some("cancelled by the operator"), out);
    }
}

/// A JSON object line with its members in this order (as PROTOCOL.md
/// §1.4 shows them).
fn ordered(members: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut line = b"{".to_vec();
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        // Writing JSON to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut line, key);
        line.push(b':');
        let _ = serde_json::to_writer(&mut line, value);
    }
    line.push(b'}');
    line
}
