//! Operations: running the relay on a gateway as an operator does, with
//! its command line, relay.conf and check-config, reloads, logs, the
//! status file and metrics, one instance per PID_FILE, the watchdog and
//! systemd.

mod command_line;
mod configuration;
mod instances;
mod logging;
mod metrics;
mod reload;
mod status;
mod systemd;
mod watchdog;
