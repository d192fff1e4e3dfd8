//! Which event kinds some subscription would receive.
//!
//! Events are published into the router without retain, so an event whose topic matches no
//! subscription reaches no one: the router would match it against its filters and drop it. The
//! front sees every SUBSCRIBE, UNSUBSCRIBE and session end, so it keeps count, per event kind,
//! of the subscriptions whose filter matches that kind's topic. The MQTT sink publishes only
//! the kinds someone subscribed to; with the MQTT sink alone, an event nobody subscribed to is
//! not even encoded (counted in `activity_events_unobserved_total`).
//!
//! The count errs on the side of publishing. A filter counts from the moment its SUBSCRIBE is
//! handed to the router (before the SUBACK), and stops counting when its UNSUBSCRIBE is. A
//! persistent session (`clean_session = false`) keeps its filters after its connection ends, as
//! the router keeps its subscriptions (and queues QoS 1 events for it); a clean session's
//! filters go when its connection ends, and a clean CONNECT forgets the earlier session of its
//! client id, as the router does. A session taken over by another connection does not remove
//! what the new one registered (serial numbers tell them apart). Memory: one entry per client id
//! that subscribed to an event topic, holding at most its own subscription limit of filters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use activity_core::event::EventKind;
use activity_core::system::SystemTopics;

/// One client id's filters that receive events.
#[derive(Debug)]
struct Session {
    /// The serial number of the connection that last started or used the session.
    serial: u64,
    /// The filters, each with the kinds it receives (bit `kind as usize`).
    filters: Vec<(String, u16)>,
}

/// Subscriptions to event topics, counted per event kind.
#[derive(Debug)]
pub struct Interest {
    /// The system topics and the rule of which filters receive events.
    system: SystemTopics,
    /// The event topics, by `kind as usize`.
    topics: [String; EventKind::ALL.len()],
    /// How many (session, filter) pairs receive each kind.
    counts: [AtomicUsize; EventKind::ALL.len()],
    sessions: Mutex<HashMap<String, Session>>,
}

impl Interest {
    /// No subscriptions yet, for the event topics of `topics`.
    pub fn new(topics: &SystemTopics) -> Self {
        Interest {
            system: topics.clone(),
            topics: EventKind::ALL.map(|kind| topics.topic(kind).as_str().to_owned()),
            counts: Default::default(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// How many client ids have a subscription to an event topic (one entry each).
    pub fn sessions(&self) -> usize {
        self.lock().len()
    }

    /// Whether some subscription receives events of `kind`.
    pub fn wanted(&self, kind: EventKind) -> bool {
        self.counts[kind as usize].load(Ordering::Acquire) > 0
    }

    /// The event kinds `filter` receives, as a bit set: those whose topic it matches, none for
    /// a filter whose first level is a wildcard unless `events.wildcards_receive_events`
    /// ([`SystemTopics::filter_receives_event`]).
    fn kinds_of(&self, filter: &str) -> u16 {
        let mut kinds = 0;
        for (i, topic) in self.topics.iter().enumerate() {
            if self.system.filter_receives_event(filter, topic) {
                kinds |= 1 << i;
            }
        }
        kinds
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // Every update below is complete before it can panic: the state stays consistent.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, kinds: u16, up: bool) {
        for (i, count) in self.counts.iter().enumerate() {
            if kinds & (1 << i) != 0 {
                if up {
                    count.fetch_add(1, Ordering::AcqRel);
                } else {
                    count.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Forgets `session`'s filters.
    fn uncount(&self, session: &Session) {
        for (_, kinds) in &session.filters {
            self.count(*kinds, false);
        }
    }

    /// Connection `serial` of `client_id` starts its session: a clean one replaces what an
    /// earlier session of that client id subscribed, a persistent one continues it.
    pub fn session_started(&self, client_id: &str, serial: u64, clean_session: bool) {
        let mut sessions = self.lock();
        if clean_session {
            if let Some(old) = sessions.remove(client_id) {
                self.uncount(&old);
            }
        } else if let Some(session) = sessions.get_mut(client_id) {
            session.serial = serial;
        }
    }

    /// Connection `serial` of `client_id` hands a subscription to `filter` to the router.
    pub fn subscribe(&self, client_id: &str, serial: u64, filter: &str) {
        let kinds = self.kinds_of(filter);
        if kinds == 0 {
            return;
        }
        let mut sessions = self.lock();
        let session = sessions
            .entry(client_id.to_owned())
            .or_insert_with(|| Session {
                serial,
                filters: Vec::new(),
            });
        session.serial = session.serial.max(serial);
        if session.filters.iter().all(|(f, _)| f != filter) {
            session.filters.push((filter.to_owned(), kinds));
            self.count(kinds, true);
        }
    }

    /// `client_id` hands an UNSUBSCRIBE of `filter` to the router.
    pub fn unsubscribe(&self, client_id: &str, filter: &str) {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(client_id) else {
            return;
        };
        if let Some(i) = session.filters.iter().position(|(f, _)| f == filter) {
            let (_, kinds) = session.filters.swap_remove(i);
            self.count(kinds, false);
        }
        if session.filters.is_empty() {
            sessions.remove(client_id);
        }
    }

    /// Connection `serial` of `client_id` ended: a clean session's filters go with it, unless a
    /// newer connection of the same client id has taken the session over.
    pub fn session_ended(&self, client_id: &str, serial: u64, clean_session: bool) {
        if !clean_session {
            return;
        }
        let mut sessions = self.lock();
        if sessions.get(client_id).is_some_and(|s| s.serial <= serial)
            && let Some(session) = sessions.remove(client_id)
        {
            self.uncount(&session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest() -> Interest {
        Interest::new(&SystemTopics::default())
    }

    fn wanted(interest: &Interest) -> Vec<&'static str> {
        EventKind::ALL
            .iter()
            .filter(|kind| interest.wanted(**kind))
            .map(|kind| kind.name())
            .collect()
    }

    #[test]
    fn filters_count_for_the_kinds_they_match() {
        let interest = interest();
        assert!(wanted(&interest).is_empty());
        interest.subscribe("a", 1, "SYSTEM/presence/+");
        assert_eq!(wanted(&interest), ["connected", "disconnected", "refused"]);
        interest.subscribe("b", 2, "SYSTEM/#");
        assert_eq!(wanted(&interest).len(), 9);
        interest.subscribe("c", 3, "sensors/#");
        interest.unsubscribe("b", "SYSTEM/#");
        assert_eq!(wanted(&interest), ["connected", "disconnected", "refused"]);
        // The topics of the refusals, denials and drops have their own counts.
        interest.subscribe("d", 4, "SYSTEM/message/#");
        interest.subscribe("d", 4, "SYSTEM/access/denied");
        assert_eq!(
            wanted(&interest),
            [
                "connected",
                "disconnected",
                "message",
                "refused",
                "denied",
                "dropped"
            ]
        );
        interest.unsubscribe("d", "SYSTEM/message/#");
        interest.unsubscribe("d", "SYSTEM/access/denied");
        // Subscribing twice to the same filter is one subscription, as in the router.
        interest.subscribe("a", 1, "SYSTEM/presence/+");
        interest.unsubscribe("a", "SYSTEM/presence/+");
        assert!(wanted(&interest).is_empty());
        assert!(interest.lock().is_empty());
    }

    #[test]
    fn wildcard_filters_count_only_when_configured() {
        let interest = interest();
        interest.subscribe("b", 2, "#");
        interest.subscribe("b", 2, "+/message");
        interest.subscribe("b", 2, "$share/g/#");
        assert!(wanted(&interest).is_empty(), "wildcards receive no events");
        let old = Interest::new(&SystemTopics::default().with_wildcards_receive_events(true));
        old.subscribe("b", 2, "#");
        assert_eq!(wanted(&old).len(), 9);
    }

    #[test]
    fn a_clean_session_forgets_its_filters_when_it_ends() {
        let interest = interest();
        interest.session_started("a", 1, true);
        interest.subscribe("a", 1, "SYSTEM/message");
        interest.session_ended("a", 1, true);
        assert!(wanted(&interest).is_empty());
    }

    #[test]
    fn a_persistent_session_keeps_its_filters_until_a_clean_connect() {
        let interest = interest();
        interest.session_started("p", 1, false);
        interest.subscribe("p", 1, "SYSTEM/msgack");
        interest.session_ended("p", 1, false);
        assert_eq!(wanted(&interest), ["msgack"]);
        // Resumed: still there, and still there after that connection ends.
        interest.session_started("p", 2, false);
        interest.session_ended("p", 2, false);
        assert_eq!(wanted(&interest), ["msgack"]);
        // A clean connect of the same id discards the session.
        interest.session_started("p", 3, true);
        assert!(wanted(&interest).is_empty());
    }

    #[test]
    fn a_taken_over_connection_leaves_the_new_sessions_filters() {
        let interest = interest();
        interest.session_started("t", 1, true);
        interest.subscribe("t", 1, "SYSTEM/#");
        // Connection 2 takes over with a persistent session and subscribes before connection
        // 1's end is processed.
        interest.session_started("t", 2, false);
        interest.subscribe("t", 2, "SYSTEM/message");
        interest.session_ended("t", 1, true);
        assert!(interest.wanted(EventKind::Message));
        interest.session_ended("t", 2, false);
        assert!(interest.wanted(EventKind::Message));
        interest.session_started("t", 3, true);
        assert!(wanted(&interest).is_empty());
    }
}
