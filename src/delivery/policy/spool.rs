//! Part of the delivery policy (publisher thread, no I/O): the spool's state
//! as the policy sees it. Start and replay, the requests to write it and
//! their answers, failing and retrying, rewriting a lost one.

use std::ops::Range;

use log::Level;

use super::{
    Action, Awaiting, Delivery, Durability, Found, Now, Opening, SpoolOp, SpoolOutcome, SPOOL_RETRY,
};
use crate::delivery::spool::{Aside, Recovery, Region, SpoolError};

impl Delivery {
    /// With `SPOOL_FILE` set, replays what the last run left there (its live
    /// commands are queued first) and asks for the file to be written afresh
    /// holding just them. A spool that cannot be read or written does not
    /// stop the start (that is for configuration errors): the relay runs
    /// without it, logged at error, until it can be written again.
    pub(super) fn start(&mut self, found: Found, now: Now, out: &mut Vec<Action>) {
        let Some(path) = self.settings.spool.clone() else {
            return;
        };
        let path = path.display();
        let (recovery, mut move_first) = match found {
            Found::Untrusted(why) => {
                self.log(out, Level::Error, || {
                    format!(
                        "spool {path}: {why}: another user could have written it, so its commands \
                         are not replayed (the file is moved aside as untrusted and a new \
                         spool is started)"
                    )
                });
                (Recovery::default(), Some(Aside::Untrusted))
            }
            Found::Unreadable(e) => {
                self.log(out, Level::Error, || {
                    format!(
                        "spool {path}: cannot be read: {e}; its commands are not replayed \
                         (the file is kept, moved aside before a new spool is written)"
                    )
                });
                (Recovery::default(), Some(Aside::Unreadable))
            }
            Found::Read(recovery) => (recovery, None),
        };
        if !recovery.damaged.is_empty() {
            self.log(out, Level::Warn, || {
                format!(
                    "spool {path}: {} damaged bytes in {} places skipped; the {} intact commands \
                     around them are kept, and the file is moved aside for inspection",
                    recovery.damaged_bytes(),
                    recovery.damaged.len(),
                    recovery.live.len()
                )
            });
            move_first = Some(Aside::Damaged);
        }
        if let Some(Region { offset, len }) = recovery.torn_tail {
            self.log(out, Level::Warn, || {
                format!(
                    "spool {path}: a record cut short at offset {offset} ({len} bytes, a write \
                     interrupted by a crash) skipped"
                )
            });
        }
        self.replay(recovery.live, now, out);
        if !self.ledger.is_empty() {
            let queued = self.ledger.len();
            self.log(out, Level::Info, || {
                format!(
                    "spool {path}: {queued} unacknowledged commands from the last run queued first"
                )
            });
        }
        self.request_open(Opening::Start, move_first, None, out);
    }

    /// Asks for the spool to be written afresh with everything pending.
    pub(super) fn request_open(
        &mut self,
        why: Opening,
        move_first: Option<Aside>,
        batch: Option<Range<u64>>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Spool(SpoolOp::Open { move_first }));
        self.awaiting = Some(Awaiting::Open { why, batch });
    }

    /// Writes what the spool has pending each turn (and compacts it), or
    /// tries again to write a failing one.
    pub(super) fn tidy_spool(&mut self, now: Now, out: &mut Vec<Action>) {
        match &mut self.spool {
            Durability::Off => {}
            Durability::Writing => {
                out.push(Action::Spool(SpoolOp::Tidy));
                self.awaiting = Some(Awaiting::Tidy);
            }
            Durability::Failing {
                retry_at,
                move_first,
                ..
            } => {
                if now.mono < *retry_at {
                    return;
                }
                let move_first = move_first.take();
                self.request_open(Opening::Retry, move_first, None, out);
            }
        }
    }

    /// The answer to a spool request.
    pub(super) fn spool_answered(
        &mut self,
        outcome: SpoolOutcome,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let awaiting = self.awaiting.take();
        match (awaiting, outcome) {
            (Some(Awaiting::Sync { batch }), SpoolOutcome::Synced) => {
                self.batch_settled(batch, out)
            }
            (Some(Awaiting::Sync { batch }), SpoolOutcome::Broke(e)) => {
                self.spool_broke(e, Some(batch), now, out)
            }
            (Some(Awaiting::Tidy), SpoolOutcome::Synced) => {}
            (Some(Awaiting::Tidy), SpoolOutcome::Broke(e)) => self.spool_broke(e, None, now, out),
            (Some(Awaiting::Open { why, batch }), outcome) => {
                self.opened(why, outcome, now, out);
                if let Some(batch) = batch {
                    self.batch_settled(batch, out);
                }
            }
            (awaiting, outcome) => {
                // Not an answer to what was asked: nothing to act on.
                self.awaiting = awaiting;
                self.log(out, Level::Debug, || {
                    format!("spool answer not asked for: {outcome:?}")
                });
            }
        }
    }

    /// A write or compaction failed: rewrite a lost file at once, or fall
    /// back to accepting only what can be published at once.
    fn spool_broke(
        &mut self,
        e: SpoolError,
        batch: Option<Range<u64>>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        match e {
            SpoolError::Lost(why) => {
                let pending = self.ledger.len();
                self.log(out, Level::Warn, || {
                    format!(
                        "spool {}: {why}; writing it again from the {pending} pending commands",
                        self.spool_path()
                    )
                });
                self.request_open(Opening::Lost, None, batch, out);
            }
            SpoolError::Io(e) => {
                self.fail(e.to_string(), None, now);
                self.log_spool_failing(out);
                if let Some(batch) = batch {
                    self.batch_settled(batch, out);
                }
            }
        }
    }

    /// The spool was written afresh, or could not be.
    fn opened(&mut self, why: Opening, outcome: SpoolOutcome, now: Now, out: &mut Vec<Action>) {
        let (kept_as, failed) = match outcome {
            SpoolOutcome::Opened { kept_as } => (kept_as, None),
            SpoolOutcome::OpenFailed {
                kept_as,
                reason,
                move_first,
            } => (kept_as, Some((reason, move_first))),
            SpoolOutcome::Synced => (None, None),
            SpoolOutcome::Broke(e) => (None, Some((e.to_string(), None))),
        };
        if let Some(aside) = kept_as {
            self.log(out, Level::Warn, || {
                format!("spool {}: kept as {}", self.spool_path(), aside.display())
            });
        }
        match (failed, why) {
            (None, Opening::Start) => self.spool = Durability::Writing,
            (None, Opening::Lost) => {
                self.spool = Durability::Writing;
                self.confirm_all(out);
            }
            (None, Opening::Retry) => {
                self.spool = Durability::Writing;
                let pending = self.ledger.len();
                self.log(out, Level::Info, || {
                    format!(
                        "spool {}: writable again; {pending} pending commands written to it",
                        self.spool_path()
                    )
                });
                self.confirm_all(out);
            }
            (Some((reason, move_first)), Opening::Retry) => {
                self.log(out, Level::Debug, || {
                    format!(
                        "spool {} still cannot be written: {reason}",
                        self.spool_path()
                    )
                });
                self.fail(reason, move_first, now);
            }
            (Some((reason, move_first)), Opening::Start | Opening::Lost) => {
                self.fail(reason, move_first, now);
                self.log_spool_failing(out);
            }
        }
    }

    /// The spool cannot be written from now on; retried in [`SPOOL_RETRY`].
    fn fail(&mut self, reason: String, move_first: Option<Aside>, now: Now) {
        self.spool = Durability::Failing {
            reason,
            retry_at: now.mono + SPOOL_RETRY,
            move_first,
        };
    }

    fn log_spool_failing(&self, out: &mut Vec<Action>) {
        let Durability::Failing { reason, .. } = &self.spool else {
            return;
        };
        self.log(out, Level::Error, || {
            format!(
                "spool {} cannot be written: {reason}; until it can, commands are accepted only \
                 while the broker is connected and published at once (backends wait otherwise); \
                 retrying every {} s",
                self.spool_path(),
                SPOOL_RETRY.as_secs()
            )
        });
    }
}
