//! Everything the run refuses before it serves, checked by one function
//! for all who need it: `check-config` (every problem at once), the start,
//! a reload and the watchdog (the first problem refuses). [`run`] is the
//! checks of `preflight.rs` (files, users, group, address; the places of
//! the files written are `places.rs`) plus the TLS configuration built from
//! those files. Creates nothing; runs on the caller's (main) thread.

pub(crate) mod places;
pub mod preflight;

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::checks::places::RunDir;
use crate::config::Config;
use crate::error::Error;
use crate::mqtt::tls;

/// What the checks found.
pub struct Checked {
    /// Each problem as `KEY PATH: why` (or `KEY: why`), in key order.
    pub problems: Vec<String>,
    /// The run-time directories the start will make, by key.
    pub to_make: Vec<RunDir>,
    /// The TLS configuration, when `MQTT_TLS` is on and its files are usable.
    pub tls: Option<Arc<ClientConfig>>,
}

/// Runs every check on `config`, read from `source` (relay.conf).
pub fn run(config: &Config, source: Option<&Path>) -> Checked {
    let found = preflight::problems(config, source);
    let mut problems = found.problems;
    // The TLS files are read only when nothing is wrong with them as files
    // (a FIFO would hang the reader, another user's CA is not trusted).
    let tls = if preflight::tls_file_problems(config).is_empty() {
        tls::client_config(config).unwrap_or_else(|e| {
            problems.push(e.to_string());
            None
        })
    } else {
        None
    };
    Checked {
        problems,
        to_make: found.to_make,
        tls,
    }
}

/// [`run`] for those that refuse at the first problem (the start, a reload,
/// the watchdog): that problem as a setup error (exit 2), else the TLS
/// configuration to connect with.
pub fn passed(config: &Config, source: Option<&Path>) -> Result<Option<Arc<ClientConfig>>, Error> {
    let checked = run(config, source);
    match checked.problems.into_iter().next() {
        Some(problem) => Err(Error::setup(problem)),
        None => Ok(checked.tls),
    }
}
