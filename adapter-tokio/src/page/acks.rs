//! The table of recent `msgack` events behind `GET /api/v1/acks` ("did client X acknowledge
//! message (product_id, message_id)?").
//!
//! One [`AckTable`] per server, fed by the event [`Dispatcher`](crate::events::Dispatcher) (it
//! is a [`SinkQueue`]: offered every event, it keeps the `msgack` ones) and read by the lookup.
//! It holds the last [`AckTable::capacity`] acknowledgements in arrival order; a full table
//! evicts the oldest, and counts it. An entry costs its event's JSON (shared with the other
//! sinks, not copied), its product id, message id and acknowledging client id, and about 100
//! bytes of bookkeeping.
//!
//! Ids are compared as text: a `product_id` or `message_id` that is a JSON number matches its
//! decimal digits, so `message_id=42` finds both `42` and `"42"`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use activity_core::event::EventKind;
use bytes::Bytes;
use serde::Deserialize;

use crate::events::{EventRecord, SinkQueue};

/// The acknowledgements one lookup returns at most (the newest); `matched` counts them all.
pub const MAX_LOOKUP_ACKS: usize = 100;

/// One remembered acknowledgement.
#[derive(Debug)]
struct Entry {
    /// Its position in arrival order (the index counts from the table's first entry).
    seq: u64,
    key: Key,
    ack_client_id: Box<str>,
    ts: u64,
    /// The `msgack` event as published.
    json: Bytes,
}

/// The message an acknowledgement is for: its product id and message id, as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    product_id: Box<str>,
    message_id: Box<str>,
}

/// A `product_id` or `message_id` of a `msgack` event: a string or an integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdField<'a> {
    Str(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Int(i64),
}

impl IdField<'_> {
    fn into_text(self) -> Box<str> {
        match self {
            IdField::Str(s) => s.into(),
            IdField::Int(i) => i.to_string().into(),
        }
    }
}

/// The fields of a `msgack` event the table indexes (serde skips the others).
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
    /// Oldest first.
    entries: VecDeque<Entry>,
    /// The `seq` of every entry, by key, oldest first.
    index: HashMap<Key, VecDeque<u64>>,
    /// The `seq` the next entry gets.
    next_seq: u64,
}

impl Inner {
    /// The entry numbered `seq`, if the table still holds it.
    fn entry(&self, seq: u64) -> Option<&Entry> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(i)
    }
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
            inner: Mutex::new(Inner::default()),
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

    /// Records one `msgack` event (`json` as published); the oldest entry goes when the table
    /// is full. An event without the `msgack` fields is counted as unreadable and dropped.
    pub fn record(&self, json: Bytes) {
        if self.is_off() {
            return;
        }
        let Ok(fields) = serde_json::from_slice::<AckFields<'_>>(&json) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let key = Key {
            product_id: fields.product_id.into_text(),
            message_id: fields.message_id.into_text(),
        };
        let ack_client_id: Box<str> = fields.ack_client_id.into();
        let ts = fields.ts;
        let mut inner = self.lock();
        if inner.entries.len() >= self.capacity
            && let Some(old) = inner.entries.pop_front()
        {
            if let Some(seqs) = inner.index.get_mut(&old.key) {
                // Entries leave in arrival order: the evicted one is its key's oldest.
                seqs.pop_front();
                if seqs.is_empty() {
                    inner.index.remove(&old.key);
                }
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.index.entry(key.clone()).or_default().push_back(seq);
        inner.entries.push_back(Entry {
            seq,
            key,
            ack_client_id,
            ts,
            json,
        });
        drop(inner);
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// The acknowledgements held of message (`product_id`, `message_id`), by `client_id` when
    /// given.
    pub fn lookup(&self, product_id: &str, message_id: &str, client_id: Option<&str>) -> Lookup {
        let inner = self.lock();
        let key = Key {
            product_id: product_id.into(),
            message_id: message_id.into(),
        };
        let mut acks = Vec::new();
        let mut matched = 0;
        if let Some(seqs) = inner.index.get(&key) {
            for &seq in seqs.iter().rev() {
                let Some(entry) = inner.entry(seq) else {
                    continue;
                };
                if client_id.is_some_and(|c| c != &*entry.ack_client_id) {
                    continue;
                }
                matched += 1;
                if acks.len() < MAX_LOOKUP_ACKS {
                    acks.push(entry.json.clone());
                }
            }
        }
        Lookup {
            acks,
            matched,
            held: inner.entries.len(),
            capacity: self.capacity,
            evicted: self.evicted(),
            oldest_ts: inner.entries.front().map(|e| e.ts),
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

    /// Keeps the `msgack` events (their shared JSON, not a copy); the others cost nothing.
    fn take(&self, record: &EventRecord) {
        if record.kind == EventKind::MsgAck {
            self.record(record.json.clone());
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
        // The index forgets keys whose entries are all gone.
        for i in 5..8 {
            table.record(ack("q", &format!("\"n{i}\""), "dev", i));
        }
        assert_eq!(table.lookup("p", "m0", None).matched, 0);
        assert_eq!(table.lock().index.len(), 3);
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
    fn an_unreadable_event_is_counted_not_recorded() {
        let table = AckTable::new(2);
        table.record(Bytes::from_static(b"{\"ack_client_id\":1}"));
        table.record(Bytes::from_static(b"not json"));
        assert!(table.is_empty());
        assert_eq!(table.unreadable.load(Ordering::Relaxed), 2);
    }
}
