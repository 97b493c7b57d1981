//! Reply routes (PROTOCOL.md §1.3): which backend connection gets the
//! replies of which unit, at most `MAX_DEVICES` of them. Written by session
//! threads (an accepted SCS/UDS claims its unit, a closing session drops
//! its claims), read by the device link thread when a reply arrives. One
//! mutex, held only for a map operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::delivery::outbox::Outbox;
use crate::ops::log_limit::{self, Kind};

#[derive(Clone)]
pub struct ReplyRoutes {
    inner: Arc<Mutex<Routes>>,
    /// Unparked at every claim: the device link, from a pause in which it
    /// lets messages gather, so the reply is not held up by it.
    waiter: Arc<Mutex<Option<Thread>>>,
}

struct Routes {
    /// unit → (claim number, the connection's outbox).
    map: HashMap<String, (u64, Outbox)>,
    next: u64,
    max: usize,
    /// Claims not yet answered by a reply (at most; see [`ReplyRoutes::reply_awaited`]),
    /// and when the last claim was made.
    unanswered: u32,
    last_claim: Option<Instant>,
}

/// How long after the last claim a reply still counts as awaited: a
/// camera that never answers must not keep the device link from batching.
pub const REPLY_AWAITED: Duration = Duration::from_secs(5);

impl ReplyRoutes {
    /// Routes for at most `max` units.
    pub fn new(max: usize) -> Self {
        ReplyRoutes {
            inner: Arc::new(Mutex::new(Routes {
                map: HashMap::new(),
                next: 0,
                max: max.max(1),
                unanswered: 0,
                last_claim: None,
            })),
            waiter: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        crate::ops::sync::lock(&self.inner)
    }

    /// The session behind `outbox` becomes the route for `unit`, replacing
    /// any other. With the table full, the oldest claim of this same
    /// connection is dropped for it (its replies are then unrouted), so one
    /// connection claiming ever new units cannot grow the table nor take
    /// another's routes; false when it holds none to give up.
    pub fn claim(&self, unit: &str, outbox: &Outbox) -> bool {
        let mut routes = self.lock();
        let seq = routes.next;
        routes.next += 1;
        if !routes.map.contains_key(unit) && routes.map.len() >= routes.max {
            // Full: this connection's oldest claim goes (a scan, only when full).
            let oldest = routes
                .map
                .iter()
                .filter(|(_, (_, o))| o.id() == outbox.id())
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(unit, _)| unit.clone());
            let max = routes.max;
            match oldest {
                Some(oldest) => {
                    routes.map.remove(&oldest);
                    drop(routes);
                    if log_limit::allow(Kind::ForgottenRoute) {
                        log::warn!(
                            "reply route of unit {oldest} forgotten: {max} units have routes (MAX_DEVICES)"
                        );
                    }
                    routes = self.lock();
                }
                None => {
                    drop(routes);
                    if log_limit::allow(Kind::ForgottenRoute) {
                        log::warn!(
                            "no reply route for unit {unit} from {}: {max} units have routes \
                             (MAX_DEVICES), none of them this connection's",
                            outbox.peer()
                        );
                    }
                    return false;
                }
            }
        }
        let previous = routes.map.insert(unit.to_string(), (seq, outbox.clone()));
        routes.unanswered = routes.unanswered.saturating_add(1);
        routes.last_claim = Some(Instant::now());
        drop(routes);
        if let Some(waiter) = crate::ops::sync::lock(&self.waiter).as_ref() {
            waiter.unpark();
        }
        if let Some((_, previous)) = previous {
            if previous.id() != outbox.id() {
                log::debug!(
                    "replies of unit {unit} now go to {} instead of {}",
                    outbox.peer(),
                    previous.peer()
                );
            }
        }
        true
    }

    /// Drops every route held by `session`.
    pub fn release(&self, session: u64) {
        self.lock().map.retain(|_, (_, o)| o.id() != session);
    }

    /// The backend that gets `unit`'s replies; a reply found its route.
    pub fn route(&self, unit: &str) -> Option<Outbox> {
        let mut routes = self.lock();
        let outbox = routes.map.get(unit).map(|(_, o)| o.clone())?;
        routes.unanswered = routes.unanswered.saturating_sub(1);
        Some(outbox)
    }

    /// `thread` (the device link's) is unparked at every claim.
    pub fn unpark_on_claim(&self, thread: Thread) {
        *crate::ops::sync::lock(&self.waiter) = Some(thread);
    }

    /// Whether a backend may be waiting for a reply now: a claim made in
    /// the last [`REPLY_AWAITED`] has not been answered yet (the device
    /// link then handles every message at once instead of batching).
    pub fn reply_awaited(&self, now: Instant) -> bool {
        let mut routes = self.lock();
        let recent = routes
            .last_claim
            .is_some_and(|t| now.saturating_duration_since(t) < REPLY_AWAITED);
        if !recent {
            routes.unanswered = 0;
        }
        routes.unanswered > 0
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::transport::Peer;

    fn outbox(session: u64) -> Outbox {
        Outbox::new(session, Peer::Unix { uid: 0, pid: 9 }).0
    }

    #[test]
    fn a_reply_is_awaited_from_a_claim_until_its_answer_or_a_while() {
        let routes = ReplyRoutes::new(10);
        let now = Instant::now();
        assert!(!routes.reply_awaited(now));
        routes.claim("u1", &outbox(1));
        routes.claim("u2", &outbox(1));
        assert!(routes.reply_awaited(Instant::now()));
        assert!(routes.route("u1").is_some());
        assert!(routes.reply_awaited(Instant::now()), "u2 still waits");
        assert!(routes.route("nobody").is_none());
        assert!(
            routes.reply_awaited(Instant::now()),
            "an unrouted reply answers nothing"
        );
        assert!(routes.route("u2").is_some());
        assert!(!routes.reply_awaited(Instant::now()));
        routes.claim("u3", &outbox(1));
        assert!(
            !routes.reply_awaited(Instant::now() + REPLY_AWAITED),
            "never answered: awaited no longer"
        );
    }

    #[test]
    fn newer_claim_takes_over_and_release_only_drops_own_routes() {
        let routes = ReplyRoutes::new(10);
        assert!(routes.route("u1").is_none());
        routes.claim("u1", &outbox(1));
        routes.claim("u2", &outbox(1));
        routes.claim("u1", &outbox(2));
        assert_eq!(routes.route("u1").map(|o| o.id()), Some(2));
        routes.release(1);
        assert!(routes.route("u2").is_none());
        assert_eq!(routes.route("u1").map(|o| o.id()), Some(2));
        routes.release(2);
        assert_eq!(routes.len(), 0);
    }

    #[test]
    fn past_the_limit_only_the_claiming_connections_oldest_route_is_forgotten() {
        let routes = ReplyRoutes::new(2);
        routes.claim("u1", &outbox(1));
        routes.claim("u2", &outbox(1));
        routes.claim("u1", &outbox(2)); // a new claim of a routed unit: still 2
        assert_eq!(routes.len(), 2);
        assert!(
            !routes.claim("u3", &outbox(3)),
            "full, and connection 3 holds nothing to give up"
        );
        assert!(routes.route("u3").is_none());
        assert_eq!(routes.route("u2").map(|o| o.id()), Some(1));
        assert!(routes.claim("u3", &outbox(1)), "1 gives up its oldest: u2");
        assert_eq!(routes.len(), 2);
        assert!(routes.route("u2").is_none());
        assert_eq!(
            routes.route("u1").map(|o| o.id()),
            Some(2),
            "never another's"
        );
        assert_eq!(routes.route("u3").map(|o| o.id()), Some(1));
    }
}
