//! Delivery: how a command gets from a session to the broker and its
//! camera. `item` (what a session hands over), `policy` (every decision,
//! pure), `publisher` (the thread that performs them), `ledger`, `spool`,
//! `settings`, `replies`, `outbox` (lines back to a connection), `presence`
//! (what the device side saw).

pub(crate) mod item;
pub(crate) mod ledger;
pub(crate) mod outbox;
pub(crate) mod policy;
pub(crate) mod presence;
pub(crate) mod publisher;
pub(crate) mod replies;
pub(crate) mod settings;
pub(crate) mod spool;
