//! A heap-backed [`AckStore`]: memory follows use, bounded by entry count.
//!
//! The core's `FixedAckStore` reserves its whole capacity up front, which at 10,000
//! connections would cost hundreds of MB for tables that are almost always empty. This store
//! holds only the deliveries actually in flight (at most [`HeapAckStore::capacity`]; rumqttd
//! keeps at most 100 QoS 1/2 deliveries in flight per connection, so the default of 128 never
//! evicts in practice, and eviction is counted by the tracker if it does).

use std::collections::HashMap;

use activity_core::QoS;
use activity_core::acks::{AckStore, PendingAck, Stored, TooLarge};
use activity_core::event::Id;

/// Where an id of an [`Entry`] is: a string in the entry's text, or an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdSlot {
    /// The next `len` bytes of the text.
    Str(usize),
    Int(i64),
}

/// One remembered delivery. Its strings (topic, product id, message id, publisher) are stored
/// one after the other in a single `String`, so that an entry costs one allocation, and none
/// when the buffer of the previously removed entry is reused.
#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    qos: QoS,
    text: String,
    topic_len: usize,
    product_id: IdSlot,
    message_id: IdSlot,
    /// The publisher's length in the text, after the ids.
    pub_client_id: Option<usize>,
}

impl Entry {
    /// Fills `text` (cleared first) with the strings of `pending`.
    fn new(seq: u64, pending: &PendingAck<'_>, mut text: String) -> Self {
        fn slot(id: Id<'_>, text: &mut String) -> IdSlot {
            match id {
                Id::Str(s) => {
                    text.push_str(s);
                    IdSlot::Str(s.len())
                }
                Id::Int(i) => IdSlot::Int(i),
            }
        }
        let id_len = |id: Id<'_>| match id {
            Id::Str(s) => s.len(),
            Id::Int(_) => 0,
        };
        text.clear();
        // One allocation at most: the exact length, unless the reused buffer already fits.
        text.reserve(
            pending.topic.len()
                + id_len(pending.product_id)
                + id_len(pending.message_id)
                + pending.pub_client_id.map_or(0, str::len),
        );
        text.push_str(pending.topic);
        let product_id = slot(pending.product_id, &mut text);
        let message_id = slot(pending.message_id, &mut text);
        let pub_client_id = pending.pub_client_id.map(|p| {
            text.push_str(p);
            p.len()
        });
        Entry {
            seq,
            qos: pending.qos,
            topic_len: pending.topic.len(),
            text,
            product_id,
            message_id,
            pub_client_id,
        }
    }

    fn view(&self) -> PendingAck<'_> {
        // Every slice below was pushed whole in `new`, in this order, so every offset is a
        // character boundary inside `text`; `get` keeps a broken invariant from panicking.
        let mut at = self.topic_len;
        let mut next = |len: usize| {
            let s = self.text.get(at..at + len).unwrap_or_default();
            at += len;
            s
        };
        let topic = self.text.get(..self.topic_len).unwrap_or_default();
        let mut id = |slot: IdSlot| match slot {
            IdSlot::Str(len) => Id::Str(next(len)),
            IdSlot::Int(i) => Id::Int(i),
        };
        let product_id = id(self.product_id);
        let message_id = id(self.message_id);
        let pub_client_id = self.pub_client_id.map(next);
        PendingAck {
            qos: self.qos,
            topic,
            product_id,
            message_id,
            pub_client_id,
        }
    }
}

/// Deliveries awaiting acknowledgement in a `HashMap`, at most `capacity` of them.
#[derive(Debug)]
pub struct HeapAckStore {
    entries: HashMap<u16, Entry>,
    capacity: usize,
    next_seq: u64,
    /// The entry `remove` took out, kept so the view it returns can borrow it.
    removed: Option<Entry>,
}

impl HeapAckStore {
    /// An empty store holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        HeapAckStore {
            entries: HashMap::new(),
            capacity,
            next_seq: 0,
            removed: None,
        }
    }
}

impl AckStore for HeapAckStore {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn insert(&mut self, pkid: u16, pending: &PendingAck<'_>) -> Result<Stored, TooLarge> {
        if self.capacity == 0 {
            return Err(TooLarge);
        }
        let mut outcome = if self.entries.contains_key(&pkid) {
            Stored::Replaced
        } else {
            Stored::Fresh
        };
        if outcome == Stored::Fresh && self.entries.len() >= self.capacity {
            // Linear in the capacity, and only when full, which rumqttd's in-flight limit keeps
            // from happening with the default capacity.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
                outcome = Stored::EvictedOldest;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        // Reuse the text buffer of the entry removed last (the usual case: one delivery
        // acknowledged, the next one stored).
        let text = self.removed.take().map(|e| e.text).unwrap_or_default();
        self.entries.insert(pkid, Entry::new(seq, pending, text));
        Ok(outcome)
    }

    fn qos_of(&self, pkid: u16) -> Option<QoS> {
        self.entries.get(&pkid).map(|e| e.qos)
    }

    fn remove(&mut self, pkid: u16) -> Option<PendingAck<'_>> {
        self.removed = Some(self.entries.remove(&pkid)?);
        self.removed.as_ref().map(Entry::view)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.removed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(topic: &str) -> PendingAck<'_> {
        PendingAck {
            qos: QoS::AtLeastOnce,
            topic,
            product_id: Id::Str("p"),
            message_id: Id::Int(7),
            pub_client_id: None,
        }
    }

    #[test]
    fn stores_removes_and_evicts_the_oldest() {
        let mut store = HeapAckStore::new(2);
        assert_eq!(store.insert(1, &pending("a")), Ok(Stored::Fresh));
        assert_eq!(store.insert(2, &pending("b")), Ok(Stored::Fresh));
        assert_eq!(store.insert(2, &pending("b2")), Ok(Stored::Replaced));
        assert_eq!(store.insert(3, &pending("c")), Ok(Stored::EvictedOldest));
        assert_eq!(store.len(), 2);
        assert_eq!(store.qos_of(1), None);
        assert_eq!(
            store.remove(2).map(|p| p.topic.to_owned()),
            Some("b2".to_owned())
        );
        assert_eq!(store.remove(2), None);
        store.clear();
        assert!(store.is_empty());
    }

    #[test]
    fn every_field_comes_back_after_buffer_reuse() {
        let mut store = HeapAckStore::new(4);
        let first = PendingAck {
            qos: QoS::ExactlyOnce,
            topic: "plant/é/temp",
            product_id: Id::Str("prodüct"),
            message_id: Id::Str("m-1"),
            pub_client_id: Some("sensor-😀"),
        };
        store.insert(1, &first).unwrap();
        assert_eq!(store.remove(1), Some(first));
        // The next entry reuses the removed one's buffer: nothing of the old text leaks.
        let second = PendingAck {
            qos: QoS::AtLeastOnce,
            topic: "t",
            product_id: Id::Int(-5),
            message_id: Id::Str(""),
            pub_client_id: None,
        };
        store.insert(2, &second).unwrap();
        assert_eq!(store.qos_of(2), Some(QoS::AtLeastOnce));
        assert_eq!(store.remove(2), Some(second));
        let third = PendingAck {
            qos: QoS::AtLeastOnce,
            topic: "",
            product_id: Id::Str("p"),
            message_id: Id::Int(i64::MAX),
            pub_client_id: Some(""),
        };
        store.insert(3, &third).unwrap();
        assert_eq!(store.remove(3), Some(third));
    }

    #[test]
    fn zero_capacity_refuses() {
        let mut store = HeapAckStore::new(0);
        assert_eq!(store.insert(1, &pending("a")), Err(TooLarge));
    }
}
