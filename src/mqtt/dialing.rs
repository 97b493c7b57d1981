//! The publish link's dialing policy: which broker to dial, when to wait,
//! when to probe the first broker and move back to it, what a reload's list
//! changes. Pure, on the broker list's rule and [`Backoff`]: the publish link
//! thread tells it what happened and performs the [`Dial`] or [`OnLink`] it
//! returns.

use std::time::{Duration, Instant};

use crate::mqtt::backoff::Backoff;
use crate::mqtt::brokers::{Broker, BrokerList, Brokers, Next};

/// Which broker the publish link dials next, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// This broker, now.
    Now(Broker),
    /// Every broker failed in this round: wait, then dial this one.
    After(Duration, Broker),
}

impl Dial {
    /// The broker to dial.
    pub fn broker(&self) -> &Broker {
        match self {
            Dial::Now(broker) | Dial::After(_, broker) => broker,
        }
    }
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
        self.brokers.off_first()
    }

    /// The broker to dial now: the first of the list at the start, the new
    /// list's first after a reload between attempts.
    pub fn start(&self) -> Dial {
        Dial::Now(self.brokers.in_use().clone())
    }

    pub fn first(&self) -> &Broker {
        self.brokers.first()
    }

    /// The list in effect.
    #[cfg(test)]
    pub fn list(&self) -> &BrokerList {
        self.brokers.list()
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
        if self.up_since.is_some() && self.brokers.probe_due(now) {
            OnLink::ProbeFirst
        } else {
            OnLink::Serve
        }
    }

    /// The first broker answered a probe at `now`, or did not.
    pub fn probed(&mut self, answered: bool, now: Instant) -> OnLink {
        if self.brokers.probed(answered, now) && self.up_since.is_some() {
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
        self.start()
    }

    /// A reload's broker list and return period (2 × `MQTT_KEEPALIVE`), in
    /// effect at once: a link that is up keeps its broker until it ends
    /// (then the new list's first is dialed), and a probe answer counts
    /// only for the new first. Between attempts, [`Dialing::start`] is then
    /// the new first. True when the list changed.
    pub fn reload(&mut self, list: BrokerList, return_after: Duration) -> bool {
        let up = self.up_since.is_some();
        self.brokers.replace(list, return_after, up)
    }

    /// What happens next, as the log lines after a failure say it.
    pub fn next_step(&self, dial: &Dial) -> String {
        match dial {
            Dial::After(wait, broker) if self.brokers.len() > 1 => format!(
                "every broker failed; retrying {broker} in {} s ({})",
                wait.as_secs(),
                Backoff::rule()
            ),
            Dial::After(wait, _) => {
                format!("retrying in {} s ({})", wait.as_secs(), Backoff::rule())
            }
            Dial::Now(broker) => format!("trying broker {broker} now"),
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
        let next = self.brokers.failed();
        let broker = self.brokers.in_use().clone();
        match next {
            Next::TryNext => Dial::Now(broker),
            Next::Wait => Dial::After(self.backoff.wait(), broker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::backoff::STABLE;

    fn dialing(n: usize) -> Dialing {
        Dialing::new(Brokers::new(hosts("b", n), Duration::from_secs(120)))
    }

    /// `prefix0`, `prefix1`, … on port 1883.
    fn hosts(prefix: &str, n: usize) -> BrokerList {
        let list = (0..n).map(|i| broker(&format!("{prefix}{i}"))).collect();
        BrokerList::new(list).expect("a broker at least")
    }

    fn broker(host: &str) -> Broker {
        Broker {
            host: host.into(),
            port: 1883,
        }
    }

    /// Broker `b{n}` now.
    fn now(n: usize) -> Dial {
        Dial::Now(broker(&format!("b{n}")))
    }

    /// Broker `b{n}` after `s` seconds.
    fn after(s: u64, n: usize) -> Dial {
        Dial::After(secs(s), broker(&format!("b{n}")))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn starts_on_the_first_and_tries_each_before_waiting() {
        let mut d = dialing(3);
        assert_eq!(d.start(), now(0));
        assert_eq!(d.connect_failed(), now(1));
        assert_eq!(d.connect_failed(), now(2));
        assert_eq!(d.connect_failed(), after(1, 0));
        assert_eq!(d.connect_failed(), now(1), "a new round");
        assert_eq!(d.connect_failed(), now(2));
        assert_eq!(d.connect_failed(), after(2, 0));
    }

    #[test]
    fn a_single_broker_backs_off_up_to_thirty_seconds() {
        let mut d = dialing(1);
        let waits: Vec<Dial> = (0..7).map(|_| d.connect_failed()).collect();
        let expected: Vec<Dial> = [1, 2, 4, 8, 16, 30, 30]
            .iter()
            .map(|s| after(*s, 0))
            .collect();
        assert_eq!(waits, expected);
    }

    #[test]
    fn a_link_that_lasted_resets_the_backoff_and_moves_on_at_once() {
        let t0 = Instant::now();
        let mut d = dialing(2);
        d.connect_failed();
        assert_eq!(d.connect_failed(), after(1, 0));
        d.connect_failed();
        assert_eq!(d.connect_failed(), after(2, 0));
        d.connected(t0);
        assert_eq!(d.link_lost(t0 + STABLE), now(1));
        assert_eq!(d.connect_failed(), after(1, 0));
    }

    #[test]
    fn a_link_that_died_young_keeps_backing_off() {
        let t0 = Instant::now();
        let mut d = dialing(1);
        assert_eq!(d.connect_failed(), after(1, 0));
        d.connected(t0);
        assert_eq!(
            d.link_lost(t0 + secs(2)),
            after(2, 0),
            "dropped right after CONNACK"
        );
        d.connected(t0 + secs(4));
        assert_eq!(d.link_lost(t0 + secs(5)), after(4, 0));
    }

    #[test]
    fn probes_the_first_while_elsewhere_and_switches_back_after_the_period() {
        let t0 = Instant::now();
        let mut d = dialing(2);
        assert_eq!(d.tick(t0), OnLink::Serve, "on the first: nothing to probe");
        assert_eq!(d.connect_failed(), now(1));
        d.connected(t0);
        assert_eq!(d.tick(t0), OnLink::ProbeFirst);
        assert_eq!(d.probed(true, t0), OnLink::Serve);
        assert_eq!(d.tick(t0 + secs(29)), OnLink::Serve, "probed a moment ago");
        assert_eq!(d.tick(t0 + secs(30)), OnLink::ProbeFirst);
        assert_eq!(d.probed(false, t0 + secs(30)), OnLink::Serve);
        assert_eq!(d.probed(true, t0 + secs(60)), OnLink::Serve, "starts over");
        assert_eq!(d.probed(true, t0 + secs(179)), OnLink::Serve);
        assert_eq!(d.probed(true, t0 + secs(180)), OnLink::SwitchBack);
        assert_eq!(d.switched_back(t0 + secs(180)), now(0));
        assert_eq!(d.tick(t0 + secs(300)), OnLink::Serve);
        assert_eq!(
            d.link_lost(t0 + secs(300)),
            now(1),
            "back on the first, a new round: a loss moves on at once"
        );
    }

    #[test]
    fn the_next_step_reads_as_the_log_says_it() {
        let mut d = dialing(2);
        let next = d.connect_failed();
        assert_eq!(d.next_step(&next), "trying broker b1:1883 now");
        let next = d.connect_failed();
        assert_eq!(
            d.next_step(&next),
            "every broker failed; retrying b0:1883 in 1 s (backoff doubling up to 30 s)"
        );
        let mut single = dialing(1);
        let next = single.connect_failed();
        assert_eq!(
            single.next_step(&next),
            "retrying in 1 s (backoff doubling up to 30 s)"
        );
    }

    /// A small deterministic generator for the sequences below (SplitMix64).
    struct Dice(u64);

    impl Dice {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }

        /// One to five brokers out of six hosts, in any order, repeats allowed.
        fn list(&mut self) -> BrokerList {
            let n = 1 + self.below(5) as usize;
            let list = (0..n)
                .map(|_| broker(&format!("h{}", self.below(6))))
                .collect();
            BrokerList::new(list).expect("a broker at least")
        }
    }

    fn listed(d: &Dialing, b: &Broker) -> bool {
        d.list().iter().any(|l| l == b)
    }

    /// Random sequences of reloads, broker deaths and returns, probes and
    /// losses, driven as the publish link drives the policy: nothing
    /// panics, every broker dialed is one of the list in effect, and after
    /// a reload under a live link, its end dials the new list's first.
    #[test]
    fn any_sequence_of_reloads_and_broker_deaths_dials_only_brokers_of_the_current_list() {
        for seed in 0..400 {
            let mut dice = Dice(seed);
            let mut d = Dialing::new(Brokers::new(dice.list(), secs(20)));
            let mut alive = [true; 6];
            let mut t = Instant::now();
            let mut dial = d.start();
            // The broker of the live link, and whether a reload changed the list under it.
            let mut up: Option<Broker> = None;
            let mut reloaded_under_link = false;
            for _ in 0..300 {
                t += secs(dice.below(40));
                match dice.below(6) {
                    0 => {
                        let changed = d.reload(dice.list(), secs(10 + dice.below(240)));
                        if changed && up.is_none() {
                            dial = d.start();
                        }
                        reloaded_under_link |= changed && up.is_some();
                    }
                    1 => alive[dice.below(6) as usize] ^= true,
                    2 if up.is_none() => {
                        let host = &dial.broker().host;
                        let n: usize = host[1..].parse().expect("h0..h5");
                        if alive[n] {
                            d.connected(t);
                            up = Some(dial.broker().clone());
                            reloaded_under_link = false;
                        } else {
                            dial = d.connect_failed();
                        }
                    }
                    3 if up.is_some() => {
                        dial = d.link_lost(t);
                        up = None;
                        if std::mem::take(&mut reloaded_under_link) {
                            assert_eq!(dial, Dial::Now(d.first().clone()), "seed {seed}");
                        }
                    }
                    4 if up.is_some() && d.tick(t) == OnLink::ProbeFirst => {
                        assert_ne!(up.as_ref(), Some(d.first()), "seed {seed}: probing itself");
                        let n: usize = d.first().host[1..].parse().expect("h0..h5");
                        if d.probed(alive[n], t) == OnLink::SwitchBack {
                            dial = d.switched_back(t);
                            up = None;
                            reloaded_under_link = false;
                            assert_eq!(dial.broker(), d.first(), "seed {seed}");
                        }
                    }
                    _ => {}
                }
                if up.is_none() {
                    assert!(
                        listed(&d, dial.broker()),
                        "seed {seed}: {dial:?} not in {:?}",
                        d.list()
                    );
                }
                assert!(!d.next_step(&dial).is_empty());
            }
        }
    }

    /// The policy called in any order at all, whatever the link would do:
    /// it never panics, and every broker a failure or a move names is listed.
    #[test]
    fn the_policy_called_in_any_order_never_panics_and_names_listed_brokers() {
        for seed in 0..400 {
            let mut dice = Dice(seed ^ 0xABCD);
            let mut d = Dialing::new(Brokers::new(dice.list(), secs(dice.below(300))));
            let mut t = Instant::now();
            for _ in 0..300 {
                t += Duration::from_millis(dice.below(90_000));
                let dial = match dice.below(7) {
                    0 => {
                        d.reload(dice.list(), secs(dice.below(300)));
                        None
                    }
                    1 => Some(d.connect_failed()),
                    2 => {
                        d.connected(t);
                        None
                    }
                    3 => Some(d.link_lost(t)),
                    4 => Some(d.switched_back(t)),
                    5 => {
                        d.probed(dice.below(2) == 0, t);
                        None
                    }
                    _ => {
                        d.tick(t);
                        None
                    }
                };
                if let Some(dial) = dial {
                    assert!(listed(&d, dial.broker()), "seed {seed}: {dial:?}");
                }
                assert!(listed(&d, d.first()));
            }
        }
    }
}
