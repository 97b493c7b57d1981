//! Delivery and hold: no accepted command is lost, to the broker or to the
//! camera, through outages, relay crashes, full disks, shutdowns and
//! cameras that come and go; and none outlives its lifetime.

pub(crate) mod held;
mod lifetimes;
mod outage;
mod shutdown;
mod spool;

use crate::support::{Broker, Relay, Subscriber, COMMANDS};

/// A relay spooling to `spool` (`{dir}/…` for a file in its own directory,
/// [`Relay::path`]) with `settings` besides, and its broker, not running yet.
pub(crate) fn spooling_with_the_broker_away(
    spool: &str,
    settings: &[(&str, &str)],
) -> (Broker, Relay) {
    let broker = Broker::unstarted("");
    let mut all = vec![("SPOOL_FILE", spool)];
    all.extend_from_slice(settings);
    let relay = Relay::start(broker.port, &all);
    (broker, relay)
}

/// The broker back, a subscriber to every command on it, and the relay
/// started again after it stopped or was killed: the subscriber gets what
/// the relay replays from its spool.
pub(crate) fn replayed(broker: &mut Broker, relay: &mut Relay) -> Subscriber {
    broker.restart();
    let sub = Subscriber::new(broker.port, COMMANDS);
    relay.relaunch();
    sub
}
