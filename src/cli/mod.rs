//! The command line: arguments, and the commands that talk to a running relay
//! or keep it running (`send`, `status` is in report, `watchdog`, `stop`).

pub mod args;
pub mod journal;
pub mod manual;
pub mod operator;
pub mod send;
pub mod watchdog;
