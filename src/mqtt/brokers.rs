//! The broker list (`MQTT_BROKER = host[:port], host[:port], …`) and the
//! rule for moving along it, as a mosquitto bridge with `round_robin false`
//! does: use the first broker that answers; when the link to the one in use
//! is lost or the broker stops answering, move to the next (wrapping round);
//! while on another one, keep probing the first, and go back to it once it
//! has answered every probe for a while. Pure: the dialing policy
//! (`dialing.rs`) asks it what to do and tells it what happened, with the
//! clock passed in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use crate::config::Broker;
use crate::ops::shutdown::{Nudge, Nudges};

/// Which broker of the list the publish link is on. The publish link sets
/// it; the device link follows it, so both connections use one broker (a
/// move nudges it: [`InUse::nudge_when_moved`]).
#[derive(Debug, Default)]
pub struct InUse(AtomicUsize, Nudges);

impl InUse {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, index: usize) {
        if self.0.swap(index, Ordering::Relaxed) != index {
            self.1.nudge();
        }
    }

    /// Calls `nudge` at every move, for as long as its owner holds it.
    pub fn nudge_when_moved(&self, nudge: &Nudge) {
        self.1.add(nudge);
    }
}

/// Where the list stands.
#[derive(Debug)]
pub struct Brokers {
    list: Vec<Broker>,
    current: usize,
    /// Failures since the last broker that stayed up; a full round of them
    /// means every broker is away, and the caller backs off.
    failures_in_round: usize,
    /// While on another broker than the first: since when the first has
    /// answered every probe.
    first_healthy_since: Option<Instant>,
    /// When the first was last probed.
    last_probe: Option<Instant>,
    /// How long the first must have answered before going back to it, and
    /// how often it is probed meanwhile.
    return_after: Duration,
    probe_every: Duration,
}

/// What the caller does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the next broker at once.
    TryNext,
    /// Every broker failed in this round: wait (backoff), then start again.
    Wait,
}

impl Brokers {
    /// `list` must not be empty (the configuration guarantees it).
    /// `return_after`: how long the first broker must answer probes before
    /// the link goes back to it.
    pub fn new(list: Vec<Broker>, return_after: Duration) -> Brokers {
        assert!(!list.is_empty(), "the configuration always names a broker");
        Brokers {
            list,
            current: 0,
            failures_in_round: 0,
            first_healthy_since: None,
            last_probe: None,
            probe_every: (return_after / 4).max(Duration::from_secs(1)),
            return_after,
        }
    }

    pub fn index(&self) -> usize {
        self.current
    }

    /// Broker `index` of the list (an index this list gave out).
    pub fn get(&self, index: usize) -> &Broker {
        &self.list[index % self.list.len()]
    }

    pub fn first(&self) -> &Broker {
        &self.list[0]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The current broker answered (CONNACK) and the link stayed up: a new round starts.
    pub fn connected(&mut self) {
        self.failures_in_round = 0;
        self.first_healthy_since = None;
        self.last_probe = None;
    }

    /// Connecting to the current broker failed, or its link was lost: move
    /// to the next one.
    pub fn failed(&mut self) -> Next {
        self.failures_in_round += 1;
        self.current = (self.current + 1) % self.list.len();
        self.first_healthy_since = None;
        self.last_probe = None;
        if self.failures_in_round >= self.list.len() {
            self.failures_in_round = 0;
            Next::Wait
        } else {
            Next::TryNext
        }
    }

    /// Whether the first broker is due for a probe (only while on another one).
    pub fn probe_due(&self, now: Instant) -> bool {
        self.current != 0
            && self
                .last_probe
                .is_none_or(|t| now.duration_since(t) >= self.probe_every)
    }

    /// The result of probing the first broker; true when it is time to go
    /// back to it (it has answered for `return_after`).
    pub fn probed(&mut self, answered: bool, now: Instant) -> bool {
        self.last_probe = Some(now);
        if !answered {
            self.first_healthy_since = None;
            return false;
        }
        let since = *self.first_healthy_since.get_or_insert(now);
        now.duration_since(since) >= self.return_after
    }

    /// Moves back to the first broker.
    pub fn go_back(&mut self) {
        self.current = 0;
        self.failures_in_round = 0;
        self.first_healthy_since = None;
        self.last_probe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host of the broker in use.
    fn on(b: &Brokers) -> &str {
        &b.get(b.index()).host
    }

    fn list(n: usize) -> Brokers {
        let brokers = (0..n)
            .map(|i| Broker {
                host: format!("b{i}"),
                port: 1883,
            })
            .collect();
        Brokers::new(brokers, Duration::from_secs(120))
    }

    #[test]
    fn failures_move_along_and_a_full_round_waits() {
        let mut b = list(3);
        assert_eq!(on(&b), "b0");
        assert_eq!(b.failed(), Next::TryNext);
        assert_eq!(on(&b), "b1");
        assert_eq!(b.failed(), Next::TryNext);
        assert_eq!(b.failed(), Next::Wait, "all three failed");
        assert_eq!(on(&b), "b0", "wraps round");
        assert_eq!(b.failed(), Next::TryNext, "a new round");
    }

    #[test]
    fn a_single_broker_always_waits() {
        let mut b = list(1);
        assert_eq!(b.failed(), Next::Wait);
        assert_eq!(b.failed(), Next::Wait);
        assert!(!b.probe_due(Instant::now()), "nothing to go back to");
    }

    #[test]
    fn a_connection_starts_a_new_round() {
        let mut b = list(2);
        b.failed();
        b.connected();
        assert_eq!(
            b.failed(),
            Next::TryNext,
            "the first loss after a good link moves on at once"
        );
    }

    #[test]
    fn goes_back_to_the_first_only_after_it_answered_for_the_whole_period() {
        let mut b = list(2);
        let t0 = Instant::now();
        b.failed();
        b.connected();
        assert_eq!(b.index(), 1);
        assert!(b.probe_due(t0));
        assert!(!b.probed(true, t0));
        assert!(!b.probe_due(t0 + Duration::from_secs(10)));
        assert!(b.probe_due(t0 + Duration::from_secs(30)));
        assert!(!b.probed(true, t0 + Duration::from_secs(60)));
        assert!(
            !b.probed(false, t0 + Duration::from_secs(90)),
            "a miss starts over"
        );
        assert!(!b.probed(true, t0 + Duration::from_secs(120)));
        assert!(b.probed(true, t0 + Duration::from_secs(240)));
        assert_eq!(b.get(0).host, "b0");
        assert_eq!(b.get(3).host, "b1", "an index past the end wraps round");
        b.go_back();
        assert_eq!(b.index(), 0);
        assert!(!b.probe_due(t0 + Duration::from_secs(300)));
    }

    #[test]
    fn shown_with_brackets_for_ipv6() {
        let v6 = Broker {
            host: "::1".into(),
            port: 1883,
        };
        assert_eq!(v6.to_string(), "[::1]:1883");
    }
}
