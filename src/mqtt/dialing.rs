//! The publish link's dialing policy: which broker to dial, when to wait,
//! when to probe the first broker and when to move back to it. Built on the
//! broker list's rule (`brokers.rs`) and the shared [`Backoff`]. Pure: the
//! publish link thread tells it what happened (a CONNACK, a failed attempt,
//! a lost link, a probe's answer, a tick with the time) and performs the
//! [`Dial`] or [`OnLink`] it returns; no sockets, threads or clocks in here.

use std::time::{Duration, Instant};

use crate::mqtt::backoff::Backoff;
use crate::mqtt::brokers::{Broker, Brokers, Next};

/// Which broker the publish link dials next, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// Broker `n` of the list, now.
    Now(usize),
    /// Every broker failed in this round: wait, then dial broker `n`.
    After(Duration, usize),
}

/// What is due while a link is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLink {
    /// Nothing: keep serving the link in use.
    Serve,
    /// Ask the first broker for a CONNACK (and say goodbye), then report
    /// the answer to [`Dialing::probed`].
    ProbeFirst,
    /// The first broker has answered long enough: end the link in use and
    /// report it to [`Dialing::switched_back`].
    SwitchBack,
}

/// Where the publish link's dialing stands.
#[derive(Debug)]
pub struct Dialing {
    brokers: Brokers,
    backoff: Backoff,
    /// When the link in use got its CONNACK.
    up_since: Option<Instant>,
}

impl Dialing {
    pub fn new(brokers: Brokers) -> Dialing {
        Dialing {
            brokers,
            backoff: Backoff::default(),
            up_since: None,
        }
    }

    /// Whether the link may have to probe the first broker (it is on another).
    pub fn probes(&self) -> bool {
        self.brokers.index() != 0
    }

    /// The first attempt: the first broker of the list, at once.
    pub fn start(&self) -> Dial {
        Dial::Now(self.brokers.index())
    }

    /// Broker `n` of the list (`n` from a [`Dial`]).
    pub fn broker(&self, n: usize) -> &Broker {
        self.brokers.get(n)
    }

    pub fn first(&self) -> &Broker {
        self.brokers.first()
    }

    /// The broker in use answered (CONNACK) at `at`.
    pub fn connected(&mut self, at: Instant) {
        self.up_since = Some(at);
    }

    /// Dialing the current broker failed: the next one now, or a wait when
    /// every broker failed in this round.
    pub fn connect_failed(&mut self) -> Dial {
        self.move_on()
    }

    /// Between reads of the link in use: the first broker is probed while
    /// the link is on another one, every quarter of the return period.
    pub fn tick(&self, now: Instant) -> OnLink {
        if self.brokers.probe_due(now) {
            OnLink::ProbeFirst
        } else {
            OnLink::Serve
        }
    }

    /// The first broker answered a probe at `now`, or did not.
    pub fn probed(&mut self, answered: bool, now: Instant) -> OnLink {
        if self.brokers.probed(answered, now) {
            OnLink::SwitchBack
        } else {
            OnLink::Serve
        }
    }

    /// The link in use was lost (or dropped as frozen) at `at`.
    pub fn link_lost(&mut self, at: Instant) -> Dial {
        self.link_ended(at);
        self.move_on()
    }

    /// The link in use was ended at `at` to move back to the first broker.
    pub fn switched_back(&mut self, at: Instant) -> Dial {
        self.link_ended(at);
        self.brokers.go_back();
        Dial::Now(self.brokers.index())
    }

    /// What happens next, as the log lines after a failure say it.
    pub fn next_step(&self, dial: Dial) -> String {
        match dial {
            Dial::After(wait, n) if self.brokers.len() > 1 => format!(
                "every broker failed; retrying {} in {} s ({})",
                self.broker(n),
                wait.as_secs(),
                Backoff::rule()
            ),
            Dial::After(wait, _) => {
                format!("retrying in {} s ({})", wait.as_secs(), Backoff::rule())
            }
            Dial::Now(n) => format!("trying broker {} now", self.broker(n)),
        }
    }

    /// A link that stayed up for a while starts a new round with a fresh backoff.
    fn link_ended(&mut self, at: Instant) {
        let lived = self
            .up_since
            .take()
            .map_or(Duration::ZERO, |since| at.saturating_duration_since(since));
        if self.backoff.link_ended(lived) {
            self.brokers.connected();
        }
    }

    fn move_on(&mut self) -> Dial {
        match self.brokers.failed() {
            Next::TryNext => Dial::Now(self.brokers.index()),
            Next::Wait => Dial::After(self.backoff.wait(), self.brokers.index()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::backoff::STABLE;

    fn dialing(n: usize) -> Dialing {
        let list = (0..n)
            .map(|i| Broker {
                host: format!("b{i}"),
                port: 1883,
            })
            .collect();
        Dialing::new(Brokers::new(list, Duration::from_secs(120)))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn starts_on_the_first_and_tries_each_before_waiting() {
        let mut d = dialing(3);
        assert_eq!(d.start(), Dial::Now(0));
        assert_eq!(d.connect_failed(), Dial::Now(1));
        assert_eq!(d.connect_failed(), Dial::Now(2));
        assert_eq!(d.connect_failed(), Dial::After(secs(1), 0));
        assert_eq!(d.connect_failed(), Dial::Now(1), "a new round");
        assert_eq!(d.connect_failed(), Dial::Now(2));
        assert_eq!(d.connect_failed(), Dial::After(secs(2), 0));
    }

    #[test]
    fn a_single_broker_backs_off_up_to_thirty_seconds() {
        let mut d = dialing(1);
        let waits: Vec<Dial> = (0..7).map(|_| d.connect_failed()).collect();
        let expected: Vec<Dial> = [1, 2, 4, 8, 16, 30, 30]
            .iter()
            .map(|s| Dial::After(secs(*s), 0))
            .collect();
        assert_eq!(waits, expected);
    }

    #[test]
    fn a_link_that_lasted_resets_the_backoff_and_moves_on_at_once() {
        let t0 = Instant::now();
        let mut d = dialing(2);
        d.connect_failed();
        assert_eq!(d.connect_failed(), Dial::After(secs(1), 0));
        d.connect_failed();
        assert_eq!(d.connect_failed(), Dial::After(secs(2), 0));
        d.connected(t0);
        assert_eq!(d.link_lost(t0 + STABLE), Dial::Now(1));
        assert_eq!(d.connect_failed(), Dial::After(secs(1), 0));
    }

    #[test]
    fn a_link_that_died_young_keeps_backing_off() {
        let t0 = Instant::now();
        let mut d = dialing(1);
        assert_eq!(d.connect_failed(), Dial::After(secs(1), 0));
        d.connected(t0);
        assert_eq!(
            d.link_lost(t0 + secs(2)),
            Dial::After(secs(2), 0),
            "dropped right after CONNACK"
        );
        d.connected(t0 + secs(4));
        assert_eq!(d.link_lost(t0 + secs(5)), Dial::After(secs(4), 0));
    }

    #[test]
    fn probes_the_first_while_elsewhere_and_switches_back_after_the_period() {
        let t0 = Instant::now();
        let mut d = dialing(2);
        assert_eq!(d.tick(t0), OnLink::Serve, "on the first: nothing to probe");
        assert_eq!(d.connect_failed(), Dial::Now(1));
        d.connected(t0);
        assert_eq!(d.tick(t0), OnLink::ProbeFirst);
        assert_eq!(d.probed(true, t0), OnLink::Serve);
        assert_eq!(d.tick(t0 + secs(29)), OnLink::Serve, "probed a moment ago");
        assert_eq!(d.tick(t0 + secs(30)), OnLink::ProbeFirst);
        assert_eq!(d.probed(false, t0 + secs(30)), OnLink::Serve);
        assert_eq!(d.probed(true, t0 + secs(60)), OnLink::Serve, "starts over");
        assert_eq!(d.probed(true, t0 + secs(179)), OnLink::Serve);
        assert_eq!(d.probed(true, t0 + secs(180)), OnLink::SwitchBack);
        assert_eq!(d.switched_back(t0 + secs(180)), Dial::Now(0));
        assert_eq!(d.tick(t0 + secs(300)), OnLink::Serve);
        assert_eq!(
            d.link_lost(t0 + secs(300)),
            Dial::Now(1),
            "back on the first, a new round: a loss moves on at once"
        );
    }

    #[test]
    fn the_next_step_reads_as_the_log_says_it() {
        let mut d = dialing(2);
        let next = d.connect_failed();
        assert_eq!(d.next_step(next), "trying broker b1:1883 now");
        let next = d.connect_failed();
        assert_eq!(
            d.next_step(next),
            "every broker failed; retrying b0:1883 in 1 s (backoff doubling up to 30 s)"
        );
        let mut single = dialing(1);
        let next = single.connect_failed();
        assert_eq!(
            single.next_step(next),
            "retrying in 1 s (backoff doubling up to 30 s)"
        );
    }
}
