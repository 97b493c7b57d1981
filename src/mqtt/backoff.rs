//! The wait between failed attempts to reach a broker, for both links: 1 s,
//! doubling up to 30 s, back to 1 s once a link stayed up a while. Pure; each
//! link thread asks it how long to sleep (neither rumqttc nor our own link
//! waits by itself).

use std::time::Duration;

/// The first wait, and the wait again after a link that lasted.
pub const MIN: Duration = Duration::from_secs(1);
/// The longest wait: a broker back after an outage is reached within this.
pub const MAX: Duration = Duration::from_secs(30);
/// A link that lived this long was a good one: the backoff starts over.
/// One that dies sooner (right after CONNACK) keeps backing off, so a broker
/// that accepts and then drops every connection is not hammered.
pub const STABLE: Duration = Duration::from_secs(10);

/// Where the backoff stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: MIN }
    }
}

impl Backoff {
    /// The wait the next failure brings (what the log line announces).
    pub fn upcoming(&self) -> Duration {
        self.next
    }

    /// A failure: the wait to sleep now; the one after is twice as long, up to [`MAX`].
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        wait
    }

    /// A link ended after living `lived`: one that lasted [`STABLE`] earns a
    /// fresh start; true when it did.
    pub fn link_ended(&mut self, lived: Duration) -> bool {
        let stable = lived >= STABLE;
        if stable {
            self.next = MIN;
        }
        stable
    }

    /// "doubling up to 30 s", for the log lines that announce a wait.
    pub fn rule() -> String {
        format!("backoff doubling up to {} s", MAX.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn starts_at_one_second_and_doubles_up_to_thirty() {
        let mut b = Backoff::default();
        assert_eq!(b.upcoming(), secs(1));
        let waits: Vec<u64> = (0..8).map(|_| b.wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.upcoming(), secs(30));
    }

    #[test]
    fn a_link_that_lasted_starts_over_one_that_died_young_does_not() {
        let mut b = Backoff::default();
        b.wait();
        b.wait();
        b.wait();
        assert!(!b.link_ended(secs(9)), "died right after CONNACK");
        assert_eq!(b.upcoming(), secs(8));
        assert!(b.link_ended(STABLE));
        assert_eq!(b.upcoming(), MIN);
        assert_eq!(b.wait(), MIN);
        assert_eq!(b.upcoming(), secs(2));
    }

    #[test]
    fn the_rule_names_the_ceiling() {
        assert_eq!(Backoff::rule(), "backoff doubling up to 30 s");
    }
}
