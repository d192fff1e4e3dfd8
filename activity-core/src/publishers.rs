//! Who published an envelope message: a bounded `(product_id, message_id) -> pub_client_id`
//! table.
//!
//! A server whose router does not say who published a message it delivers records each
//! envelope publish here ([`PublisherTable::record`]) and looks the publisher up when the
//! delivery is acknowledged ([`PublisherTable::lookup`]), so that `msgack` carries
//! `pub_client_id` also when the subscriber was offline and gets the message later. The pair
//! identifies a message uniquely across products. When the table is full the oldest entry goes
//! and [`PublisherTable::evicted`] counts it.

use core::hash::{Hash, Hasher};

use crate::client_id::CLIENT_ID_CAPACITY;
use crate::envelope::{Envelope, ID_CAPACITY, OwnedId};
use crate::event::Id;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    product_id: OwnedId,
    message_id: OwnedId,
}

fn hash_id<H: Hasher>(id: &OwnedId, state: &mut H) {
    match id.as_id() {
        Id::Str(s) => {
            state.write_u8(0);
            s.hash(state);
        }
        Id::Int(i) => {
            state.write_u8(1);
            i.hash(state);
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_id(&self.product_id, state);
        hash_id(&self.message_id, state);
    }
}

fn owned(id: Id<'_>) -> Option<OwnedId> {
    Some(match id {
        Id::Str(s) => {
            let mut out = heapless::String::<ID_CAPACITY>::new();
            out.push_str(s).ok()?;
            OwnedId::Str(out)
        }
        Id::Int(i) => OwnedId::Int(i),
    })
}

/// A bounded map from an envelope's `(product_id, message_id)` to the publisher's client id.
///
/// `N` must be a power of two (a requirement of the index map inside); memory is about
/// `N * 480` bytes, all inside the value.
pub struct PublisherTable<const N: usize> {
    map: heapless::index_map::FnvIndexMap<Key, heapless::String<CLIENT_ID_CAPACITY>, N>,
    order: heapless::Deque<Key, N>,
    evicted: u64,
}

impl<const N: usize> Default for PublisherTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for PublisherTable<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PublisherTable")
            .field("len", &self.map.len())
            .field("capacity", &N)
            .field("evicted", &self.evicted)
            .finish()
    }
}

impl<const N: usize> PublisherTable<N> {
    /// An empty table.
    pub const fn new() -> Self {
        PublisherTable {
            map: heapless::index_map::FnvIndexMap::new(),
            order: heapless::Deque::new(),
            evicted: 0,
        }
    }

    /// The number of messages it remembers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most messages it remembers.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// How many entries were dropped, oldest first, to make room.
    pub const fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Remembers that `pub_client_id` published the message `envelope` identifies.
    ///
    /// A second publish of the same pair updates the publisher and keeps the entry's age.
    /// Returns `false` (and stores nothing) for an id longer than
    /// [`CLIENT_ID_CAPACITY`], which the CONNECT rule already refuses.
    pub fn record(&mut self, envelope: &Envelope, pub_client_id: &str) -> bool {
        let mut publisher = heapless::String::new();
        if publisher.push_str(pub_client_id).is_err() {
            return false;
        }
        let key = Key {
            product_id: envelope.product_id.clone(),
            message_id: envelope.message_id.clone(),
        };
        if let Some(existing) = self.map.get_mut(&key) {
            *existing = publisher;
            return true;
        }
        if self.order.is_full()
            && let Some(oldest) = self.order.pop_front()
        {
            self.map.swap_remove(&oldest);
            self.evicted += 1;
            // Under steady traffic a full table is the normal state (a window of the latest
            // messages): counted in `evicted`, logged at debug level only, since a warning per
            // publish cost a tap in front of a broker a log line per message.
            debug!("publisher table full: dropped its oldest entry");
        }
        // After the eviction above both have room: `order` and `map` always hold the same keys.
        if self.map.insert(key.clone(), publisher).is_err() || self.order.push_back(key).is_err() {
            return false;
        }
        true
    }

    /// The publisher of the message `(product_id, message_id)`, if remembered.
    pub fn lookup(&self, product_id: Id<'_>, message_id: Id<'_>) -> Option<&str> {
        let key = Key {
            product_id: owned(product_id)?,
            message_id: owned(message_id)?,
        };
        self.map.get(&key).map(|s| s.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::parse_envelope;

    fn envelope(product: &str, message: &str) -> Envelope {
        let json = format!(r#"{{"product_id":"{product}","message_id":"{message}"}}"#);
        parse_envelope(json.as_bytes()).unwrap()
    }

    #[test]
    fn records_and_finds_the_publisher() {
        let mut table = PublisherTable::<4>::new();
        assert!(table.record(&envelope("p1", "m1"), "pub-a"));
        assert_eq!(table.lookup(Id::Str("p1"), Id::Str("m1")), Some("pub-a"));
        assert_eq!(table.lookup(Id::Str("p1"), Id::Str("m2")), None);
        assert_eq!(table.lookup(Id::Str("p2"), Id::Str("m1")), None);
    }

    #[test]
    fn string_and_integer_ids_are_distinct() {
        let mut table = PublisherTable::<4>::new();
        let int = parse_envelope(br#"{"product_id":1,"message_id":2}"#).unwrap();
        assert!(table.record(&int, "pub-int"));
        assert!(table.record(&envelope("1", "2"), "pub-str"));
        assert_eq!(table.lookup(Id::Int(1), Id::Int(2)), Some("pub-int"));
        assert_eq!(table.lookup(Id::Str("1"), Id::Str("2")), Some("pub-str"));
    }

    #[test]
    fn full_table_drops_the_oldest_and_counts() {
        let mut table = PublisherTable::<2>::new();
        table.record(&envelope("p", "m1"), "a");
        table.record(&envelope("p", "m2"), "b");
        table.record(&envelope("p", "m1"), "c"); // update keeps m1 the oldest
        assert_eq!(table.evicted(), 0);
        table.record(&envelope("p", "m3"), "d");
        assert_eq!(table.evicted(), 1);
        assert_eq!(table.len(), 2);
        assert_eq!(table.lookup(Id::Str("p"), Id::Str("m1")), None);
        assert_eq!(table.lookup(Id::Str("p"), Id::Str("m2")), Some("b"));
        assert_eq!(table.lookup(Id::Str("p"), Id::Str("m3")), Some("d"));
    }

    #[test]
    fn overlong_publisher_is_not_recorded() {
        let mut table = PublisherTable::<2>::new();
        let long = "x".repeat(CLIENT_ID_CAPACITY + 1);
        assert!(!table.record(&envelope("p", "m"), &long));
        assert!(table.is_empty());
    }

    #[test]
    fn many_records_stay_within_capacity() {
        let mut table = PublisherTable::<8>::new();
        for i in 0..1000 {
            table.record(&envelope("p", &i.to_string()), "x");
            assert!(table.len() <= table.capacity());
        }
        assert_eq!(table.evicted(), 1000 - 8);
    }
}
