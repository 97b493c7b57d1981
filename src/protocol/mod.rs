//! The backend's wire format, pure: framing of the JSON byte stream and
//! validation of each command. Used by backend sessions, by the publisher when
//! it reads the spool back, and by `send`.

pub mod command;
pub mod control;
pub mod frame;
pub mod json;
pub(crate) mod redact;
pub mod reply;
pub mod status;
