//! The names under which clean links enter rumqttd's router.
//!
//! rumqttd 0.20 remembers every client id whose link ever left: a clean link leaves its
//! connection metrics in the router's graveyard (`save_metrics`, up to ten event strings), and
//! only a later link under the same name takes them out again. Under the client's own id, a
//! fleet whose devices pick a new id per connection (or a client that tries ids at random)
//! grows that map by several hundred bytes per id, forever.
//!
//! A clean link has nothing to resume, so its router name does not have to be the client id:
//! it takes a name from this pool and gives it back when the link is gone, so the router
//! knows at most as many names as there were clean links at once (bounded by
//! `max_connections` and the delayed wills in flight). Links of sessions the router keeps
//! still use the escaped client id (see `router_client_id`), which is how they resume.
//!
//! A clean link under the client id also ended the session the router kept for it (rumqttd's
//! clean flag); under a pooled name it cannot, so [`RouterSessions`] remembers which client ids
//! have a session in the router, and a clean connection of one ends it first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// Router names for clean links, reused once their link is gone.
#[derive(Debug, Default)]
pub struct RouterNames {
    state: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    /// Numbers whose link is gone.
    free: Vec<u32>,
    /// How many numbers were ever handed out (the next new one).
    issued: u32,
}

impl RouterNames {
    /// A name no other live clean link holds; it returns to the pool when dropped.
    pub fn take(self: &Arc<Self>) -> RouterName {
        let mut pool = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let number = pool.free.pop().unwrap_or_else(|| {
            pool.issued += 1;
            pool.issued - 1
        });
        RouterName {
            number,
            pool: Arc::clone(self),
        }
    }

    /// How many names were ever handed out: the most clean links that were alive at once.
    pub fn issued(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .issued
    }
}

/// A clean link's name in the router, held until the link is gone.
#[derive(Debug)]
pub struct RouterName {
    number: u32,
    pool: Arc<RouterNames>,
}

impl RouterName {
    /// The name as the router sees it. `%%` never starts an escaped client id (`%` itself is
    /// escaped), so no client's own link can be named like this.
    pub fn to_router_id(&self) -> String {
        format!("%%link-{}", self.number)
    }
}

impl Drop for RouterName {
    fn drop(&mut self) {
        self.pool
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free
            .push(self.number);
    }
}

/// The client ids whose session rumqttd's router keeps after their connection: 3.1.1
/// sessions with clean session 0 and MQTT 5 sessions with a session expiry. Bounded like those
/// sessions (see the broker's `max_kept_sessions`).
#[derive(Debug, Default)]
pub struct RouterSessions {
    ids: Mutex<HashSet<String>>,
}

impl RouterSessions {
    /// Notes that the router keeps a session for `client_id`, unless `limit` sessions are
    /// noted already; false then (the caller ends that session instead).
    pub fn keep(&self, client_id: &str, limit: usize) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.contains(client_id) {
            return true;
        }
        if ids.len() >= limit {
            return false;
        }
        ids.insert(client_id.to_owned())
    }

    /// Forgets the session of `client_id`; whether the router had one.
    pub fn forget(&self, client_id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(client_id)
    }

    /// How many sessions the router keeps.
    pub fn len(&self) -> usize {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the router keeps none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_names_differ_and_names_are_reused_once_given_back() {
        let names = Arc::new(RouterNames::default());
        let a = names.take();
        let b = names.take();
        assert_ne!(a.to_router_id(), b.to_router_id());
        let a_id = a.to_router_id();
        drop(a);
        let c = names.take();
        assert_eq!(c.to_router_id(), a_id);
        assert_eq!(names.issued(), 2);
    }

    #[test]
    fn churn_never_needs_more_names_than_links_at_once() {
        let names = Arc::new(RouterNames::default());
        let mut live = Vec::new();
        for round in 0..1_000 {
            live.push(names.take());
            if round % 3 != 0 {
                live.remove(0);
            }
            if live.len() > 5 {
                live.clear();
            }
        }
        assert!(names.issued() <= 6, "issued {}", names.issued());
        let ids: std::collections::HashSet<_> = live.iter().map(RouterName::to_router_id).collect();
        assert_eq!(ids.len(), live.len());
    }

    #[test]
    fn kept_sessions_are_bounded_and_forgotten() {
        let sessions = RouterSessions::default();
        assert!(sessions.keep("a", 2));
        assert!(sessions.keep("a", 2), "the same id again takes no room");
        assert!(sessions.keep("b", 2));
        assert!(!sessions.keep("c", 2), "past the limit");
        assert!(sessions.forget("a"));
        assert!(!sessions.forget("a"));
        assert!(sessions.keep("c", 2));
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn no_escaped_client_id_looks_like_a_pool_name() {
        let name = Arc::new(RouterNames::default()).take();
        for client_id in ["%%link-0", "%link-0", "%25%25link-0"] {
            assert_ne!(
                super::super::router_client_id(client_id),
                name.to_router_id()
            );
        }
    }
}
