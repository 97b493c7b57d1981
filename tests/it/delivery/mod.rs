//! Delivery and hold: no accepted command is lost, to the broker or to the
//! camera, through outages, relay crashes, full disks, shutdowns and
//! cameras that come and go; and none outlives its lifetime.

pub(crate) mod held;
mod lifetimes;
mod outage;
mod shutdown;
mod spool;

use std::path::Path;

use crate::support::{Broker, Relay, TempDir};

/// A relay with `SPOOL_FILE` (relay.spool in the returned dir) whose broker is not running yet.
pub(crate) fn spooled_relay_with_the_broker_away(
    settings: &[(&str, &str)],
) -> (TempDir, Broker, Relay) {
    let dir = TempDir::new("spool");
    let spool = dir
        .path()
        .join("relay.spool")
        .to_string_lossy()
        .into_owned();
    let broker = Broker::unstarted("");
    let mut all = vec![("SPOOL_FILE", spool.as_str())];
    all.extend_from_slice(settings);
    let relay = Relay::start(broker.port, &all);
    (dir, broker, relay)
}

pub(crate) fn spool_settings(spool: &Path) -> Vec<(&'static str, String)> {
    vec![("SPOOL_FILE", spool.to_string_lossy().into_owned())]
}

pub(crate) fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
