//! The command line: its arguments (`args.rs`), the relay.conf each
//! command reads (`conf.rs`), and the commands besides the run itself:
//! `check-config`, `send`, `held` and `cancel` (`operator.rs`), `watchdog`
//! with `stop` and `reload`, the manual page (`status` is in report).
//! Called by `main.rs`.

pub mod args;
pub mod check;
pub mod conf;
pub mod journal;
pub mod manual;
pub mod operator;
pub mod send;
pub mod watchdog;
