//! Whether the publish link's broker is still there (PINGREQ every half
//! `MQTT_KEEPALIVE`; dead after 1.5 × `MQTT_KEEPALIVE` of silence, or as long
//! without a PUBACK while commands are in flight). Pure: the publish link
//! thread reports what it read, with the time, and asks what is due.

use std::time::{Duration, Instant};

/// What is due on the link after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: read on.
    Alive,
    /// Time to send a PINGREQ.
    Ping,
    /// The broker stopped answering: drop the link, for this reason.
    Dead(String),
}

/// The times that tell whether the broker answers.
#[derive(Debug)]
pub struct Liveness {
    keepalive: Duration,
    last_heard: Instant,
    last_ping: Instant,
    /// The last PUBACK, or the last moment nothing was in flight.
    last_progress: Instant,
}

impl Liveness {
    /// A link that got its CONNACK at `now`.
    pub fn new(keepalive: Duration, now: Instant) -> Liveness {
        Liveness {
            keepalive,
            last_heard: now,
            last_ping: now,
            last_progress: now,
        }
    }

    /// How long one read may block while a probe of the first broker may
    /// be due or under way: often enough to probe on time.
    pub fn read_tick(&self) -> Duration {
        (self.keepalive / 4).min(Duration::from_secs(1))
    }

    /// How long one read may block otherwise: until the next ping or the
    /// end of the silence allowed, and at most a quarter keepalive (commands
    /// put in flight meanwhile are checked for PUBACKs that often). An idle
    /// link wakes 4 times per keepalive, not once a second.
    pub fn read_wait(&self, now: Instant) -> Duration {
        let ping_at = self.last_ping + self.keepalive / 2;
        let dead_at = self.last_heard + self.keepalive * 3 / 2 + Duration::from_millis(1);
        ping_at
            .min(dead_at)
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), self.keepalive / 4)
    }

    /// Bytes arrived from the broker at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// PUBACKs for commands arrived at `now`.
    pub fn acked(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// What is due at `now`, with `in_flight` commands awaiting their PUBACK.
    pub fn check(&mut self, now: Instant, in_flight: usize) -> Verdict {
        let limit = self.keepalive * 3 / 2;
        if in_flight == 0 {
            self.last_progress = now;
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if silent > limit {
            return Verdict::Dead(format!(
                "no answer from the broker for {} s (MQTT_KEEPALIVE {} s): it is frozen or gone",
                silent.as_secs(),
                self.keepalive.as_secs()
            ));
        }
        let stalled = now.saturating_duration_since(self.last_progress);
        if stalled > limit {
            return Verdict::Dead(format!(
                "no PUBACK for {} s with {in_flight} commands in flight",
                stalled.as_secs()
            ));
        }
        if now.saturating_duration_since(self.last_ping) >= self.keepalive / 2 {
            self.last_ping = now;
            return Verdict::Ping;
        }
        Verdict::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn pings_every_half_keepalive_while_the_broker_answers() {
        let t0 = Instant::now();
        let mut l = Liveness::new(secs(60), t0);
        assert_eq!(l.read_tick(), secs(1));
        assert_eq!(l.check(t0 + secs(29), 0), Verdict::Alive);
        assert_eq!(l.check(t0 + secs(30), 0), Verdict::Ping);
        assert_eq!(l.check(t0 + secs(31), 0), Verdict::Alive);
        l.heard(t0 + secs(31));
        assert_eq!(l.check(t0 + secs(60), 0), Verdict::Ping);
        l.heard(t0 + secs(61));
        assert_eq!(
            l.check(t0 + secs(150), 0),
            Verdict::Ping,
            "90 s: not yet dead"
        );
    }

    #[test]
    fn an_idle_read_waits_until_the_next_ping_at_most_a_quarter_keepalive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(secs(60), t0);
        assert_eq!(l.read_wait(t0), secs(15));
        assert_eq!(l.read_wait(t0 + secs(20)), secs(10), "the ping at 30 s");
        assert_eq!(l.check(t0 + secs(30), 0), Verdict::Ping);
        assert_eq!(l.read_wait(t0 + secs(30)), secs(15));
        // Nothing heard since t0: the silence limit (90 s) is checked just past it.
        assert_eq!(l.check(t0 + secs(61), 0), Verdict::Ping);
        assert_eq!(l.check(t0 + secs(88), 0), Verdict::Alive);
        assert_eq!(l.read_wait(t0 + secs(88)), Duration::from_millis(2001));
        assert_eq!(l.read_wait(t0 + secs(95)), Duration::from_millis(1));
    }

    #[test]
    fn silence_past_one_and_a_half_keepalives_is_death() {
        let t0 = Instant::now();
        let mut l = Liveness::new(secs(10), t0);
        assert_eq!(l.read_tick(), Duration::from_millis(2500).min(secs(1)));
        assert_eq!(l.check(t0 + secs(5), 0), Verdict::Ping);
        assert_eq!(
            l.check(t0 + secs(15), 0),
            Verdict::Ping,
            "15 s is the limit itself"
        );
        assert_eq!(
            l.check(t0 + secs(16), 0),
            Verdict::Dead(
                "no answer from the broker for 16 s (MQTT_KEEPALIVE 10 s): it is frozen or gone"
                    .into()
            )
        );
    }

    #[test]
    fn commands_in_flight_without_a_puback_are_death_even_with_pings_answered() {
        let t0 = Instant::now();
        let mut l = Liveness::new(secs(10), t0);
        for s in 1..=15 {
            l.heard(t0 + secs(s));
            assert!(!matches!(l.check(t0 + secs(s), 3), Verdict::Dead(_)), "{s}");
        }
        l.heard(t0 + secs(16));
        assert_eq!(
            l.check(t0 + secs(16), 3),
            Verdict::Dead("no PUBACK for 16 s with 3 commands in flight".into())
        );
    }

    #[test]
    fn an_ack_or_an_empty_window_is_progress() {
        let t0 = Instant::now();
        let mut l = Liveness::new(secs(10), t0);
        l.heard(t0 + secs(10));
        l.acked(t0 + secs(10));
        assert!(!matches!(l.check(t0 + secs(20), 5), Verdict::Dead(_)));
        l.heard(t0 + secs(20));
        assert!(!matches!(l.check(t0 + secs(24), 0), Verdict::Dead(_)));
        l.heard(t0 + secs(30));
        assert!(
            !matches!(l.check(t0 + secs(30), 5), Verdict::Dead(_)),
            "nothing was in flight at 24 s"
        );
        l.heard(t0 + secs(40));
        assert!(matches!(l.check(t0 + secs(40), 5), Verdict::Dead(_)));
    }
}
