//! The broker list (`MQTT_BROKER`) and the rule for moving along it (the
//! first that answers; the next on failure; back to the first once it has
//! answered every probe for a while), and [`InUse`], the broker the publish
//! link is on, which the device link follows. Pure; asked by `dialing.rs`.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::{Broker, BrokerList};
use crate::ops::counters::Counter;
use crate::ops::shutdown::{Nudge, Nudges};
use crate::ops::sync::lock;

/// The broker the publish link is on, or dialing: set by the publish link,
/// followed by the device link (a move nudges it:
/// [`InUse::nudge_when_moved`]), shown by the status file. A broker, not a
/// position: a reload may reorder or replace the list under it.
#[derive(Debug)]
pub struct InUse {
    broker: Mutex<Broker>,
    /// Bumped at every move, so a follower tells a move without a lock (a
    /// [`Counter`]: 32-bit MIPS has no `AtomicU64`).
    moves: Counter,
    nudges: Nudges,
}

impl InUse {
    pub fn new(broker: Broker) -> InUse {
        InUse {
            broker: Mutex::new(broker),
            moves: Counter::new(0),
            nudges: Nudges::default(),
        }
    }

    /// The broker in use, and the count of moves so far (for [`InUse::moved_since`]).
    pub fn get(&self) -> (Broker, u64) {
        let broker = lock(&self.broker);
        (broker.clone(), self.moves.load(Ordering::SeqCst))
    }

    /// Whether the publish link moved since `seen` (from [`InUse::get`]).
    pub fn moved_since(&self, seen: u64) -> bool {
        self.moves.load(Ordering::SeqCst) != seen
    }

    /// The publish link is on (or dialing) `broker` now: a move when it is
    /// another one than before.
    pub fn set(&self, broker: &Broker) {
        {
            let mut current = lock(&self.broker);
            if *current == *broker {
                return;
            }
            current.clone_from(broker);
            self.moves.fetch_add(1, Ordering::SeqCst);
        }
        self.nudges.nudge();
    }

    /// Calls `nudge` at every move, for as long as its owner holds it.
    pub fn nudge_when_moved(&self, nudge: &Nudge) {
        self.nudges.add(nudge);
    }
}

impl Default for InUse {
    /// On the default `MQTT_BROKER`, until the relay sets its own first broker.
    fn default() -> Self {
        let list = crate::config::Config::default().broker_list();
        InUse::new(list.first().clone())
    }
}

/// Where the list stands.
#[derive(Debug)]
pub struct Brokers {
    list: BrokerList,
    /// The broker in use, or dialed last.
    in_use: Broker,
    /// Its place in `list`; None while a reload has taken it off the list
    /// (it keeps its connection until that ends).
    current: Option<usize>,
    /// A reload replaced the list while a link was up: when that link
    /// ends, dialing starts over at the new list's first broker.
    start_over: bool,
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
    /// On the first broker of `list`. `return_after`: how long the first
    /// broker must answer probes before the link goes back to it.
    pub fn new(list: BrokerList, return_after: Duration) -> Brokers {
        Brokers {
            in_use: list.first().clone(),
            current: Some(0),
            list,
            start_over: false,
            failures_in_round: 0,
            first_healthy_since: None,
            last_probe: None,
            probe_every: probe_every(return_after),
            return_after,
        }
    }

    /// The broker in use, or to dial next.
    pub fn in_use(&self) -> &Broker {
        &self.in_use
    }

    pub fn first(&self) -> &Broker {
        self.list.first()
    }

    #[cfg(test)]
    pub fn list(&self) -> &BrokerList {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.list.count()
    }

    /// Whether the broker in use is another than the list's first (one a
    /// reload took off the list included): the first is then probed.
    pub fn off_first(&self) -> bool {
        self.in_use != *self.list.first()
    }

    /// The current broker answered (CONNACK) and the link stayed up: a new round starts.
    pub fn connected(&mut self) {
        self.failures_in_round = 0;
        self.first_healthy_since = None;
        self.last_probe = None;
    }

    /// Connecting to the current broker failed, or its link was lost: move
    /// to the next one (after a reload, to the new list's first).
    pub fn failed(&mut self) -> Next {
        self.first_healthy_since = None;
        self.last_probe = None;
        if std::mem::take(&mut self.start_over) {
            self.failures_in_round = 0;
            self.move_to(0);
            return Next::TryNext;
        }
        self.failures_in_round += 1;
        let next = self.current.map_or(0, |n| (n + 1) % self.list.count());
        self.move_to(next);
        if self.failures_in_round >= self.list.count() {
            self.failures_in_round = 0;
            Next::Wait
        } else {
            Next::TryNext
        }
    }

    /// Whether the first broker is due for a probe (only while on another one).
    pub fn probe_due(&self, now: Instant) -> bool {
        self.off_first()
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
        self.move_to(0);
        self.start_over = false;
        self.failures_in_round = 0;
        self.first_healthy_since = None;
        self.last_probe = None;
    }

    /// A reload's list (and return period). An unchanged list changes
    /// nothing but the period. A new one applies at once: what the first
    /// answered so far no longer counts; with a link `up`, the broker in
    /// use keeps it (placed in the new list, or off it) and the next
    /// broker dialed after it is the new first; with none up, the next
    /// broker dialed is the new first. True when the list changed.
    pub fn replace(&mut self, list: BrokerList, return_after: Duration, up: bool) -> bool {
        self.return_after = return_after;
        self.probe_every = probe_every(return_after);
        if list == self.list {
            return false;
        }
        self.list = list;
        self.failures_in_round = 0;
        self.first_healthy_since = None;
        self.last_probe = None;
        if up {
            self.current = self.list.position(&self.in_use);
            self.start_over = true;
        } else {
            self.move_to(0);
            self.start_over = false;
        }
        true
    }

    /// Broker `n` of the list becomes the one in use.
    fn move_to(&mut self, n: usize) {
        let (n, broker) = match self.list.get(n) {
            Some(broker) => (n, broker),
            None => (0, self.list.first()),
        };
        self.in_use.clone_from(broker);
        self.current = Some(n);
    }
}

/// The first broker is probed four times per return period, at most once a second.
fn probe_every(return_after: Duration) -> Duration {
    (return_after / 4).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host of the broker in use.
    fn on(b: &Brokers) -> &str {
        &b.in_use().host
    }

    fn named(hosts: &[&str]) -> BrokerList {
        let brokers = hosts
            .iter()
            .map(|h| Broker {
                host: (*h).to_string(),
                port: 1883,
            })
            .collect();
        BrokerList::new(brokers).expect("a broker at least")
    }

    fn list(n: usize) -> Brokers {
        let hosts: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        Brokers::new(named(&hosts), Duration::from_secs(120))
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
        assert_eq!(on(&b), "b1");
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
        assert_eq!(b.first().host, "b0");
        b.go_back();
        assert_eq!(on(&b), "b0");
        assert!(!b.probe_due(t0 + Duration::from_secs(300)));
    }

    #[test]
    fn a_list_grown_under_a_live_link_keeps_it_and_the_next_dial_is_in_the_new_list() {
        // The reproduction of a crash: A, X; reloaded as A, X, Y, B; A dies.
        let mut b = Brokers::new(named(&["a", "x"]), Duration::from_secs(120));
        assert!(b.replace(named(&["a", "x", "y", "b"]), Duration::from_secs(120), true));
        assert_eq!(on(&b), "a", "the live link stays");
        assert!(!b.off_first(), "still on the first: nothing to probe");
        assert_eq!(b.failed(), Next::TryNext);
        assert_eq!(on(&b), "a", "starts over at the new list's first");
        for next in ["x", "y", "b"] {
            assert_eq!(b.failed(), Next::TryNext);
            assert_eq!(on(&b), next);
        }
        assert_eq!(b.failed(), Next::Wait);
    }

    #[test]
    fn a_broker_taken_off_the_list_is_kept_until_its_link_ends_and_the_first_is_probed() {
        let t0 = Instant::now();
        let mut b = Brokers::new(named(&["a", "b"]), Duration::from_secs(120));
        b.failed();
        assert_eq!(on(&b), "b");
        assert!(b.replace(named(&["c"]), Duration::from_secs(120), true));
        assert_eq!(on(&b), "b", "kept while its connection lasts");
        assert!(b.off_first() && b.probe_due(t0), "the new first is probed");
        assert_eq!(b.first().host, "c");
        assert_eq!(b.failed(), Next::TryNext);
        assert_eq!(on(&b), "c", "left at the next connection");
        assert!(!b.replace(named(&["c"]), Duration::from_secs(8), false));
        assert_eq!(
            b.probe_every,
            Duration::from_secs(2),
            "only the period changed"
        );
    }

    #[test]
    fn a_list_replaced_between_attempts_is_dialed_from_its_first() {
        let mut b = list(3);
        b.failed();
        b.failed();
        assert_eq!(on(&b), "b2");
        assert!(b.replace(named(&["n0", "n1"]), Duration::from_secs(120), false));
        assert_eq!(on(&b), "n0");
        assert_eq!(b.failed(), Next::TryNext, "a new round: the whole new list");
        assert_eq!(on(&b), "n1");
        assert_eq!(b.failed(), Next::Wait);
    }

    #[test]
    fn in_use_counts_moves_and_nudges_only_at_a_move() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let a = named(&["a"]).first().clone();
        let b = named(&["b"]).first().clone();
        let in_use = InUse::new(a.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let nudge: Nudge = {
            let calls = Arc::clone(&calls);
            Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        in_use.nudge_when_moved(&nudge);
        let (now, seen) = in_use.get();
        assert_eq!(now, a);
        in_use.set(&a);
        assert!(!in_use.moved_since(seen), "the same broker is no move");
        in_use.set(&b);
        assert!(in_use.moved_since(seen));
        assert_eq!(in_use.get().0, b);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
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
