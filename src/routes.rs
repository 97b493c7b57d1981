//! Reply routes (PROTOCOL.md §1.3): which backend connection gets the replies of
//! which unit. Written by session threads (an accepted SCS/UDS claims the
//! unit, a closing session drops its claims), read by the MQTT event loop
//! when a reply arrives. One mutex, held only for a map operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::outbox::Outbox;

#[derive(Clone, Default)]
pub struct ReplyRoutes {
    map: Arc<Mutex<HashMap<String, Outbox>>>,
}

impl ReplyRoutes {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Outbox>> {
        // A panic while holding this lock cannot leave the map half-updated, so keep going.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session behind `outbox` becomes the route for `unit`, replacing any other.
    pub fn claim(&self, unit: &str, outbox: &Outbox) {
        let previous = self.lock().insert(unit.to_string(), outbox.clone());
        if let Some(previous) = previous {
            if previous.id() != outbox.id() {
                log::debug!(
                    "replies of unit {unit} now go to {} instead of {}",
                    outbox.peer(),
                    previous.peer()
                );
            }
        }
    }

    /// Drops every route held by `session`.
    pub fn release(&self, session: u64) {
        self.lock().retain(|_, o| o.id() != session);
    }

    pub fn route(&self, unit: &str) -> Option<Outbox> {
        self.lock().get(unit).cloned()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(session: u64) -> Outbox {
        Outbox::new(session, "127.0.0.1:9".parse().unwrap()).0
    }

    #[test]
    fn newer_claim_takes_over_and_release_only_drops_own_routes() {
        let routes = ReplyRoutes::new();
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
}
