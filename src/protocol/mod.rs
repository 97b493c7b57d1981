//! The backend's wire format, pure: the JSON scanner and the framer of the
//! byte stream, validation of each command, operator requests, the status
//! lines and replies that go back, and how a payload may be shown
//! (redaction). Used by backend sessions, the publisher (the spool, status
//! lines), the device link (replies) and `send`.

pub mod command;
pub mod control;
pub mod frame;
pub mod json;
pub(crate) mod redact;
pub mod reply;
pub mod status;
