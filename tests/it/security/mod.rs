//! Security (PROTOCOL.md §5, "Safety"): who may be a backend, hostile input
//! from backends and devices, secrets kept out of logs, and a root daemon
//! safe among other local users: nothing written through their symlinks or
//! into their files, no planted file trusted, no lock of theirs blocking
//! the tools. The tests that need another user run as root (as CI does)
//! and create one (`support::local_users`), or chown to nobody.

mod file_modes;
mod hostile_input;
mod local_users;
mod peers;
mod planted_files;
mod planted_spool;
mod secrets;
