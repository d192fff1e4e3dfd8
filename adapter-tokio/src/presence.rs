//! Who is online: the clients connected now, for the HTTP API (`/api/v1/clients`, see
//! [`crate::http`]).
//!
//! One [`Presence`] per server, bounded by `max_connections`. The connection drivers (the
//! broker's session, the tap's relay) own one [`Online`] entry per accepted connection: they
//! create it at the CONNECT, enter it once the connection is accepted, update its subscriptions
//! as the engine routes them (the tap: as the engine reports them in `subscribed` and
//! `unsubscribed` events) and remove it when the session ends. A takeover replaces the entry of
//! the client id; the older connection's removal then leaves the newer one alone (entries are
//! told apart by the connection's serial number).
//!
//! The publish path pays one relaxed atomic store per socket read ([`Online::touch`], the
//! `last_activity` timestamp), and nothing else.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The most topic filters listed per client; more are counted in
/// [`Online::subscriptions`] but not listed.
pub const MAX_LISTED_TOPICS: usize = 4096;

/// One connected client.
#[derive(Debug)]
pub struct Online {
    /// The client id.
    pub client_id: String,
    /// The user name of the CONNECT, if any.
    pub username: Option<String>,
    /// The client's address.
    pub peer: String,
    /// The protocol level of the CONNECT: 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub proto_ver: u8,
    /// The connection's serial number (tells a takeover's two connections apart).
    serial: u64,
    /// The `session_seq` of the connection's `connected` event, when the server numbers
    /// sessions.
    session_seq: AtomicU64,
    /// When the connection was accepted, milliseconds since the Unix epoch (the
    /// `connected_at` of its events).
    connected_at: AtomicU64,
    /// When the client last sent bytes, milliseconds since the Unix epoch.
    last_activity: AtomicU64,
    /// The client's topic filters and their granted QoS.
    topics: Mutex<Topics>,
}

/// A client's subscriptions.
#[derive(Debug, Default)]
struct Topics {
    listed: BTreeMap<String, u8>,
    /// Filters held but not listed (past [`MAX_LISTED_TOPICS`]).
    unlisted: usize,
}

/// `session_seq` not known (the server gives none).
const NO_SEQ: u64 = u64::MAX;

impl Online {
    /// The entry of a connection of `client_id` (serial `serial`) accepted at `now` (ms).
    pub fn new(
        client_id: &str,
        username: Option<&str>,
        peer: String,
        proto_ver: u8,
        serial: u64,
        now: u64,
    ) -> Online {
        Online {
            client_id: client_id.to_owned(),
            username: username.map(str::to_owned),
            peer,
            proto_ver,
            serial,
            session_seq: AtomicU64::new(NO_SEQ),
            connected_at: AtomicU64::new(now),
            last_activity: AtomicU64::new(now),
            topics: Mutex::new(Topics::default()),
        }
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client sent bytes at `now` (ms).
    pub fn touch(&self, now: u64) {
        self.last_activity.store(now, Ordering::Relaxed);
    }

    /// When the client last sent bytes (ms since the Unix epoch).
    pub fn last_activity(&self) -> u64 {
        self.last_activity.load(Ordering::Relaxed)
    }

    /// Sets `connected_at` (ms), as the connection's `connected` event says it.
    pub fn set_connected_at(&self, ts: u64) {
        self.connected_at.store(ts, Ordering::Relaxed);
    }

    /// When the connection was accepted (ms since the Unix epoch).
    pub fn connected_at(&self) -> u64 {
        self.connected_at.load(Ordering::Relaxed)
    }

    /// Sets the `session_seq` of the connection.
    pub fn set_session_seq(&self, seq: u64) {
        self.session_seq.store(seq, Ordering::Relaxed);
    }

    /// The `session_seq` of the connection, when the server numbers sessions.
    pub fn session_seq(&self) -> Option<u64> {
        Some(self.session_seq.load(Ordering::Relaxed)).filter(|s| *s != NO_SEQ)
    }

    /// The client holds `filter` at `qos` now (a new subscription or a changed one).
    pub fn subscribe(&self, filter: &str, qos: u8) {
        let mut topics = self.topics();
        if let Some(held) = topics.listed.get_mut(filter) {
            *held = qos;
        } else if topics.listed.len() < MAX_LISTED_TOPICS {
            topics.listed.insert(filter.to_owned(), qos);
        } else {
            topics.unlisted += 1;
        }
    }

    /// The client no longer holds `filter`.
    pub fn unsubscribe(&self, filter: &str) {
        let mut topics = self.topics();
        if topics.listed.remove(filter).is_none() {
            topics.unlisted = topics.unlisted.saturating_sub(1);
        }
    }

    /// How many topic filters the client holds.
    pub fn subscriptions(&self) -> usize {
        let topics = self.topics();
        topics.listed.len() + topics.unlisted
    }

    /// The client's topic filters (at most [`MAX_LISTED_TOPICS`]) and their QoS, in order.
    pub fn topic_list(&self) -> Vec<(String, u8)> {
        self.topics()
            .listed
            .iter()
            .map(|(t, q)| (t.clone(), *q))
            .collect()
    }
}

/// The clients connected now, by client id; at most `capacity`.
#[derive(Debug)]
pub struct Presence {
    clients: Mutex<BTreeMap<String, Arc<Online>>>,
    capacity: usize,
    /// Entries not entered because `capacity` were held (a broken invariant: every entry
    /// holds a connection permit).
    refused: AtomicU64,
}

impl Presence {
    /// An empty registry of at most `capacity` clients (the server's `max_connections`).
    pub fn new(capacity: usize) -> Presence {
        Presence {
            clients: Mutex::new(BTreeMap::new()),
            capacity,
            refused: AtomicU64::new(0),
        }
    }

    fn clients(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Online>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters `online`, replacing the entry of an older connection of the client id; `false`
    /// (counted) when `capacity` clients are entered already.
    pub fn insert(&self, online: Arc<Online>) -> bool {
        let mut clients = self.clients();
        if clients.len() >= self.capacity && !clients.contains_key(&online.client_id) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        clients.insert(online.client_id.clone(), online);
        true
    }

    /// Removes the entry of `client_id` if it is the connection `serial`'s.
    pub fn remove(&self, client_id: &str, serial: u64) {
        let mut clients = self.clients();
        if clients.get(client_id).is_some_and(|o| o.serial == serial) {
            clients.remove(client_id);
        }
    }

    /// The entry of `client_id`.
    pub fn get(&self, client_id: &str) -> Option<Arc<Online>> {
        self.clients().get(client_id).cloned()
    }

    /// How many clients are entered.
    pub fn len(&self) -> usize {
        self.clients().len()
    }

    /// Whether no client is entered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries not entered because the registry was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Up to `limit` entries in client-id order, after the client id `after` (exclusive);
    /// with the cursor of the next page (the last id given) when more follow.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Arc<Online>>, Option<String>) {
        let clients = self.clients();
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut range = clients.range::<str, _>((start, Bound::Unbounded));
        let page: Vec<Arc<Online>> = range.by_ref().take(limit).map(|(_, o)| o.clone()).collect();
        let next = match (range.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.client_id.clone()),
            _ => None,
        };
        (page, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(id: &str, serial: u64) -> Arc<Online> {
        Arc::new(Online::new(id, None, "127.0.0.1:1".into(), 4, serial, 1))
    }

    #[test]
    fn pages_follow_client_id_order_and_end_with_no_cursor() {
        let presence = Presence::new(10);
        for id in ["c", "a", "e", "b", "d"] {
            assert!(presence.insert(online(id, 1)));
        }
        let (page, next) = presence.page(None, 2);
        let ids: Vec<&str> = page.iter().map(|o| o.client_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("b"));
        let (page, next) = presence.page(next.as_deref(), 2);
        assert_eq!(page.len(), 2);
        assert_eq!(next.as_deref(), Some("d"));
        let (page, next) = presence.page(next.as_deref(), 2);
        assert_eq!(page[0].client_id, "e");
        assert_eq!(next, None, "the last page has no cursor");
        let (page, next) = presence.page(Some("e"), 2);
        assert!(page.is_empty() && next.is_none());
    }

    #[test]
    fn a_takeover_survives_the_older_connections_removal() {
        let presence = Presence::new(1);
        assert!(presence.insert(online("a", 1)));
        assert!(presence.insert(online("a", 2)), "a takeover replaces");
        presence.remove("a", 1);
        assert_eq!(presence.get("a").map(|o| o.serial), Some(2));
        presence.remove("a", 2);
        assert!(presence.is_empty());
    }

    #[test]
    fn the_registry_is_bounded_and_counts_refusals() {
        let presence = Presence::new(1);
        assert!(presence.insert(online("a", 1)));
        assert!(!presence.insert(online("b", 2)));
        assert_eq!(presence.refused(), 1);
    }

    #[test]
    fn subscriptions_are_counted_and_listed() {
        let o = online("a", 1);
        o.subscribe("x/#", 1);
        o.subscribe("y", 0);
        o.subscribe("x/#", 2);
        assert_eq!(o.subscriptions(), 2);
        assert_eq!(o.topic_list(), [("x/#".to_owned(), 2), ("y".to_owned(), 0)]);
        o.unsubscribe("y");
        o.unsubscribe("never");
        assert_eq!(o.subscriptions(), 1);
        assert_eq!(o.session_seq(), None);
    }
}
