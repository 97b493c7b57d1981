//! Delivery: the queue item a session hands over, the ledger of commands not
//! yet acknowledged, the publisher that owns them and the spool that keeps them
//! across crashes, and the outbox that carries status lines and replies back to
//! a connection.

pub(crate) mod item;
pub(crate) mod ledger;
pub(crate) mod outbox;
pub(crate) mod policy;
pub(crate) mod publisher;
pub(crate) mod spool;
