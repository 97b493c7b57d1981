//! Delivery: the queue item a session hands over, the ledger of commands not
//! yet acknowledged, the policy that decides what becomes of them (pure, no
//! I/O), the publisher thread that carries its events and actions, the spool
//! that keeps them across crashes, and the outbox that carries status lines
//! and replies back to a connection.

pub(crate) mod item;
pub(crate) mod ledger;
pub(crate) mod outbox;
pub(crate) mod policy;
pub(crate) mod presence;
pub(crate) mod publisher;
pub(crate) mod replies;
pub(crate) mod settings;
pub(crate) mod spool;
