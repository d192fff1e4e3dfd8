//! The table of recent `msgack` events behind `GET /api/v1/acks` ("did client X acknowledge
//! message (product_id, message_id)?").
//!
//! One [`AckTable`] per server, fed by the event [`Dispatcher`](crate::events::Dispatcher) (it
//! is a [`SinkQueue`]: offered every event, it keeps the `msgack` ones) and read by the lookup.
//! It holds the last [`AckTable::capacity`] acknowledgements in arrival order; a full table
//! evicts the oldest, and counts it.
//!
//! Recording reads no JSON, allocates nothing and touches no index: an entry is its event's
//! JSON (shared with the other sinks, not copied), its `ts` and the [`ack_key`] of its message,
//! which the event pipeline computed from the event's fields where it made it (48 bytes in the
//! table's two rings). A lookup, rare next to the acknowledgements, scans the ring of keys (8
//! bytes an entry: some 10 µs for the default 10,000 under the lock) and reads the ids and
//! the client id from each candidate's JSON after the lock, so that a hash collision costs a
//! comparison, never a wrong answer. (A hash index made each acknowledgement pay two or three
//! cache misses instead: the profile in BENCHMARKS.md, issue 17.)
//!
//! Ids are compared as text: a `product_id` or `message_id` that is a JSON number matches its
//! decimal digits, so `message_id=42` finds both `42` and `"42"`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use activity_core::event::{EventKind, Id};
use bytes::Bytes;
use serde::Deserialize;

use crate::events::{EventRecord, SinkQueue, ack_key};

/// The acknowledgements one lookup returns at most (the newest); `matched` counts them all.
pub const MAX_LOOKUP_ACKS: usize = 100;

/// One remembered acknowledgement (its key is in [`Inner::keys`]).
#[derive(Debug)]
struct Entry {
    ts: u64,
    /// The `msgack` event as published.
    json: Bytes,
}

/// A `product_id` or `message_id` of a `msgack` event: a string or an integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdField<'a> {
    Str(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Int(i64),
}

impl IdField<'_> {
    fn id(&self) -> Id<'_> {
        match self {
            IdField::Str(s) => Id::Str(s),
            IdField::Int(i) => Id::Int(*i),
        }
    }

    /// Whether it is `text` (an integer: its decimal digits).
    fn is(&self, text: &str) -> bool {
        match self {
            IdField::Str(s) => s == text,
            IdField::Int(i) => i.to_string() == text,
        }
    }
}

/// The fields of a `msgack` event the table reads (serde skips the others).
#[derive(Deserialize)]
struct AckFields<'a> {
    #[serde(borrow)]
    ack_client_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    product_id: IdField<'a>,
    #[serde(borrow)]
    message_id: IdField<'a>,
    ts: u64,
}

/// The table's contents; behind the [`AckTable`]'s lock.
#[derive(Debug, Default)]
struct Inner {
    /// The [`ack_key`] of each entry's message, oldest first: scanned by a lookup.
    keys: VecDeque<u64>,
    /// The entries, in the order of `keys`.
    entries: VecDeque<Entry>,
}

/// The bounded table of recent `msgack` events; see the [module docs](self).
#[derive(Debug)]
pub struct AckTable {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Acknowledgements recorded since start.
    recorded: AtomicU64,
    /// Acknowledgements evicted (the oldest, when the table was full).
    evicted: AtomicU64,
    /// `msgack` events whose fields could not be read (cannot happen with the core's encoder;
    /// counted, never a panic).
    unreadable: AtomicU64,
}

/// The answer of [`AckTable::lookup`].
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The newest matching `msgack` events (at most [`MAX_LOOKUP_ACKS`]), newest first, as
    /// published.
    pub acks: Vec<Bytes>,
    /// How many entries matched.
    pub matched: usize,
    /// Entries in the table now.
    pub held: usize,
    /// The table's capacity.
    pub capacity: usize,
    /// Entries evicted since start: a miss is only certain when this is 0, or for a message
    /// acknowledged after `oldest_ts`.
    pub evicted: u64,
    /// The `ts` of the oldest entry held.
    pub oldest_ts: Option<u64>,
}

impl AckTable {
    /// An empty table of at most `capacity` acknowledgements; 0 turns it off (it records
    /// nothing, see [`AckTable::is_off`]).
    pub fn new(capacity: usize) -> AckTable {
        AckTable {
            capacity,
            inner: Mutex::new(Inner {
                keys: VecDeque::with_capacity(capacity.min(4096)),
                entries: VecDeque::with_capacity(capacity.min(4096)),
            }),
            recorded: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
        }
    }

    /// The most acknowledgements held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many acknowledgements are held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the table holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Acknowledgements evicted since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock panics; a poisoned lock still holds a consistent table.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the table is off (`http.ack_table = 0`): the HTTP API then takes no `msgack`
    /// event for it, and a lookup is refused.
    pub fn is_off(&self) -> bool {
        self.capacity == 0
    }

    /// Records one `msgack` event (`json` as published), reading its message's ids and `ts`
    /// from the JSON (the dispatcher's records carry them: see [`AckTable::take`](SinkQueue::take)).
    /// An event without the `msgack` fields is counted as unreadable and dropped.
    pub fn record(&self, json: Bytes) {
        if self.is_off() {
            return;
        }
        let Ok(fields) = serde_json::from_slice::<AckFields<'_>>(&json) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let key = ack_key(fields.product_id.id(), fields.message_id.id());
        let ts = fields.ts;
        self.insert(key, ts, json);
    }

    /// Records one `msgack` event of the message whose [`ack_key`] is `key`; the oldest entry
    /// goes when the table is full.
    fn insert(&self, key: u64, ts: u64, json: Bytes) {
        if self.is_off() {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.len() >= self.capacity {
            inner.keys.pop_front();
            inner.entries.pop_front();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        inner.keys.push_back(key);
        inner.entries.push_back(Entry { ts, json });
        drop(inner);
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// The acknowledgements held of message (`product_id`, `message_id`), by `client_id` when
    /// given.
    pub fn lookup(&self, product_id: &str, message_id: &str, client_id: Option<&str>) -> Lookup {
        let key = ack_key(Id::Str(product_id), Id::Str(message_id));
        // The candidates (the entries of the key), newest first, taken under the lock; their
        // JSON is read after it.
        let (candidates, held, oldest_ts) = {
            let inner = self.lock();
            let candidates: Vec<Bytes> = (inner.keys.iter().zip(&inner.entries).rev())
                .filter(|(k, _)| **k == key)
                .map(|(_, entry)| entry.json.clone())
                .collect();
            let oldest_ts = inner.entries.front().map(|e| e.ts);
            (candidates, inner.entries.len(), oldest_ts)
        };
        let mut acks = Vec::new();
        let mut matched = 0;
        for json in candidates {
            let Ok(fields) = serde_json::from_slice::<AckFields<'_>>(&json) else {
                continue;
            };
            if !fields.product_id.is(product_id)
                || !fields.message_id.is(message_id)
                || client_id.is_some_and(|c| c != fields.ack_client_id)
            {
                continue;
            }
            matched += 1;
            if acks.len() < MAX_LOOKUP_ACKS {
                acks.push(json);
            }
        }
        Lookup {
            acks,
            matched,
            held,
            capacity: self.capacity,
            evicted: self.evicted(),
            oldest_ts,
        }
    }

    /// The table's counters in the Prometheus text format, for `GET /metrics`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let families: [(&str, &str, &str, u64); 4] = [
            (
                "activity_http_acks_recorded_total",
                "counter",
                "msgack events recorded in the table of GET /api/v1/acks.",
                self.recorded.load(Ordering::Relaxed),
            ),
            (
                "activity_http_acks_evicted_total",
                "counter",
                "msgack events evicted from the table of GET /api/v1/acks (it was full).",
                self.evicted(),
            ),
            (
                "activity_http_acks_unreadable_total",
                "counter",
                "msgack events the table of GET /api/v1/acks could not read.",
                self.unreadable.load(Ordering::Relaxed),
            ),
            (
                "activity_http_acks_held",
                "gauge",
                "msgack events in the table of GET /api/v1/acks now.",
                self.len() as u64,
            ),
        ];
        for (name, kind, help, value) in families {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

/// The dispatcher's handle: the table is shared with the HTTP handlers.
impl SinkQueue for Arc<AckTable> {
    fn offer(&self, record: EventRecord) {
        self.take(&record);
    }

    /// Keeps the `msgack` events (their shared JSON, not a copy, under the [`ack_key`] the
    /// record carries); the others cost nothing.
    fn take(&self, record: &EventRecord) {
        if record.kind != EventKind::MsgAck {
            return;
        }
        match record.ack_key {
            Some(key) => self.insert(key, record.ts, record.json.clone()),
            None => self.record(record.json.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(product: &str, message: &str, client: &str, ts: u64) -> Bytes {
        Bytes::from(format!(
            r#"{{"pub_client_id":"p","ack_client_id":"{client}","product_id":"{product}","message_id":{message},"topic":"t","qos":1,"ts":{ts}}}"#
        ))
    }

    #[test]
    fn finds_an_ack_by_message_and_by_client() {
        let table = AckTable::new(8);
        table.record(ack("p1", "\"m1\"", "dev-a", 10));
        table.record(ack("p1", "\"m1\"", "dev-b", 11));
        table.record(ack("p1", "\"m2\"", "dev-a", 12));

        let any = table.lookup("p1", "m1", None);
        assert_eq!(any.matched, 2);
        assert_eq!(
            any.acks,
            vec![
                ack("p1", "\"m1\"", "dev-b", 11),
                ack("p1", "\"m1\"", "dev-a", 10)
            ]
        );
        assert_eq!(
            (any.held, any.capacity, any.evicted, any.oldest_ts),
            (3, 8, 0, Some(10))
        );

        assert_eq!(table.lookup("p1", "m1", Some("dev-a")).matched, 1);
        assert_eq!(table.lookup("p1", "m2", Some("dev-b")).matched, 0);
        assert_eq!(table.lookup("p2", "m1", None).matched, 0);
    }

    #[test]
    fn integer_ids_match_their_digits() {
        let table = AckTable::new(4);
        table.record(ack("p1", "42", "dev", 1));
        table.record(ack("p1", "\"42\"", "dev", 2));
        assert_eq!(table.lookup("p1", "42", None).matched, 2);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_and_counts_it() {
        let table = AckTable::new(3);
        for i in 0..5 {
            table.record(ack("p", &format!("\"m{}\"", i % 2), "dev", i));
        }
        // m0 at 0, 2, 4 and m1 at 1, 3: 0 and 1 are gone.
        assert_eq!(table.len(), 3);
        assert_eq!(table.evicted(), 2);
        let m0 = table.lookup("p", "m0", None);
        assert_eq!(m0.matched, 2);
        assert_eq!(m0.oldest_ts, Some(2));
        assert_eq!(table.lookup("p", "m1", None).matched, 1);
        for i in 5..8 {
            table.record(ack("q", &format!("\"n{i}\""), "dev", i));
        }
        assert_eq!(table.lookup("p", "m0", None).matched, 0);
        assert_eq!(table.lock().keys.len(), 3);
        assert_eq!(table.evicted(), 5);
        let mut text = String::new();
        table.render(&mut text);
        assert!(
            text.contains("activity_http_acks_evicted_total 5\n"),
            "{text}"
        );
        assert!(
            text.contains("activity_http_acks_recorded_total 8\n"),
            "{text}"
        );
        assert!(text.contains("activity_http_acks_held 3\n"), "{text}");
    }

    #[test]
    fn a_lookup_returns_at_most_the_newest_hundred() {
        let table = AckTable::new(1000);
        for i in 0..150 {
            table.record(ack("p", "\"m\"", &format!("dev-{i}"), i));
        }
        let all = table.lookup("p", "m", None);
        assert_eq!(all.matched, 150);
        assert_eq!(all.acks.len(), MAX_LOOKUP_ACKS);
        assert_eq!(all.acks[0], ack("p", "\"m\"", "dev-149", 149));
    }

    #[test]
    fn the_dispatchers_records_are_kept_by_the_key_they_carry() {
        let table = Arc::new(AckTable::new(4));
        let record = |json: Bytes, key| EventRecord {
            kind: EventKind::MsgAck,
            subject: "dev".into(),
            ts: 5,
            json,
            event_seq: 1,
            session_seq: None,
            retained_topic: None,
            ack_key: key,
        };
        let json = ack("p1", "7", "dev", 5);
        table.take(&record(
            json.clone(),
            Some(ack_key(Id::Str("p1"), Id::Int(7))),
        ));
        // A record without a key (none is made so) is read from its JSON.
        table.take(&record(ack("p1", "\"7\"", "dev", 6), None));
        let found = table.lookup("p1", "7", None);
        assert_eq!(found.matched, 2);
        assert_eq!(found.acks[1], json);
        // Other kinds are not kept.
        let mut other = record(ack("p1", "7", "dev", 7), None);
        other.kind = EventKind::Message;
        table.take(&other);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_key_collision_is_told_apart_by_the_ids() {
        let table = AckTable::new(8);
        let key = ack_key(Id::Str("p1"), Id::Str("m1"));
        // Three events under one key, as if their ids collided: only the real match counts.
        table.insert(key, 1, ack("p1", "\"m1\"", "dev-a", 1));
        table.insert(key, 2, ack("p2", "\"m2\"", "dev-a", 2));
        table.insert(key, 3, ack("p1", "\"m1x\"", "dev-b", 3));
        let found = table.lookup("p1", "m1", None);
        assert_eq!(found.matched, 1);
        assert_eq!(found.acks, vec![ack("p1", "\"m1\"", "dev-a", 1)]);
        assert_eq!(table.lookup("p1", "m1", Some("dev-b")).matched, 0);
        assert_eq!(table.lookup("p2", "m2", None).matched, 0, "not its key");
    }

    #[test]
    fn an_unreadable_event_is_counted_not_recorded() {
        let table = AckTable::new(2);
        table.record(Bytes::from_static(b"{\"ack_client_id\":1}"));
        table.record(Bytes::from_static(b"not json"));
        assert!(table.is_empty());
        assert_eq!(table.unreadable.load(Ordering::Relaxed), 2);
    }
}
