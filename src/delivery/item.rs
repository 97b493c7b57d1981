//! The queue item: one validated command on its way from a backend session
//! (or the spool, at start) to the publisher, where its status lines go
//! ([`ReplyTo`]), and the batch a session hands over ([`Handover`]). Built on
//! session threads, sent over the job channel, owned by the publisher then.

use crate::ops::transport::Peer;
use std::time::{Instant, SystemTime};

use crate::delivery::outbox::{self, Claims, Outbox};
use crate::delivery::spool::LiveCommand;
use crate::protocol::command::{Command, CommandType};
use crate::protocol::control::Control;

/// A validated command on its way to the broker.
pub struct Accepted {
    pub kind: CommandType,
    pub unit: String,
    pub id: Option<String>,
    pub topic: String,
    pub payload: Vec<u8>,
    /// When it was received (monotonic: TTLs do not jump with the wall clock).
    pub received: Instant,
    /// Wall-clock time of receipt, for the spool (TTL survives a restart).
    pub received_wall: SystemTime,
    /// The backend it came from; None when replayed from the spool.
    pub peer: Option<Peer>,
    /// Where its status lines go, when its connection wants any.
    pub reply: Option<ReplyTo>,
    /// The camera its `PRESENCE_FIELD` names, as sent: while that camera is
    /// offline the command is held (policy/hold.rs).
    pub camera: Option<String>,
    /// A second copy of a command a broker acknowledged just before its
    /// connection broke (see `policy::Delivery`): published, not counted,
    /// no status line.
    pub again: bool,
    /// Its `held` line was said (it is held once in the backend's eyes,
    /// however often it waits again).
    pub held_line: bool,
    /// The broker took it once already: counted as published, its `ok`
    /// said; going again to its camera changes neither.
    pub published: bool,
}

impl Accepted {
    /// `cmd` as queued for `topic`: from no backend and owing no status
    /// line until the session fills in `peer` and `reply`.
    pub fn new(cmd: Command, topic: String, received: Instant, received_wall: SystemTime) -> Self {
        Accepted {
            topic,
            kind: cmd.kind,
            unit: cmd.unit,
            id: cmd.id,
            payload: cmd.payload,
            received,
            received_wall,
            peer: None,
            reply: None,
            camera: None,
            again: false,
            held_line: false,
            published: false,
        }
    }

    /// This command as the spool keeps it, under `seq` (`held`: for a camera that is offline).
    pub fn live(&self, seq: u64, held: bool) -> LiveCommand<'_> {
        LiveCommand {
            seq,
            received: self.received_wall,
            payload: &self.payload,
            held,
        }
    }

    /// This command's status line (PROTOCOL.md §1.3): `ok`, or `error` with why.
    pub fn status_line(&self, error: Option<&str>) -> Vec<u8> {
        outbox::status_line(
            Some(self.kind.as_str()),
            Some(&self.unit),
            self.id.as_deref(),
            error,
        )
    }
}

/// Where a command's status lines go, and which: pure data. The claim
/// that keeps a half-closed connection waiting for them travels beside the
/// command ([`Handover`]) and is held by the publisher (`replies.rs`); the
/// policy says when a command's last line is decided by handing its
/// `ReplyTo` back (not `Clone`: one command, one last line).
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyTo {
    /// The connection ([`Outbox::conn`]).
    pub conn: u64,
    /// `ok` lines too, not only errors (`ACK_MODE = all` or `camera`, or asked for).
    pub ok_lines: bool,
    /// `delivered` and `resent` lines too (`ACK_MODE = camera`): the last
    /// line is the camera's confirmation.
    pub camera_lines: bool,
}

/// What a session hands the publisher at once: the commands framed from
/// one read, and the claims on status lines they took on its connection.
pub struct Handover {
    pub jobs: Vec<Accepted>,
    /// One per command with a [`ReplyTo`]; given back when dropped unread.
    pub claims: Option<Claims>,
}

impl std::ops::Index<usize> for Handover {
    type Output = Accepted;

    /// The commands in the order they were read.
    fn index(&self, i: usize) -> &Accepted {
        &self.jobs[i]
    }
}

/// An operator's request (`ms500-relay held`, `cancel`), from a session to
/// the publisher, which answers it with lines to `to`.
pub struct OperatorRequest {
    pub request: Control,
    pub to: Outbox,
    /// Who asked, as log lines name a peer.
    pub by: String,
}

/// Operator requests waiting for the publisher: a few (an operator's
/// tool sends one and waits for its answer).
pub const OPERATOR_CHANNEL: usize = 16;
