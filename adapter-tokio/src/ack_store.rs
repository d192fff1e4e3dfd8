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

#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnedId {
    Str(String),
    Int(i64),
}

impl OwnedId {
    fn new(id: Id<'_>) -> Self {
        match id {
            Id::Str(s) => OwnedId::Str(s.to_owned()),
            Id::Int(i) => OwnedId::Int(i),
        }
    }

    fn as_id(&self) -> Id<'_> {
        match self {
            OwnedId::Str(s) => Id::Str(s),
            OwnedId::Int(i) => Id::Int(*i),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    qos: QoS,
    topic: String,
    product_id: OwnedId,
    message_id: OwnedId,
    pub_client_id: Option<String>,
}

impl Entry {
    fn view(&self) -> PendingAck<'_> {
        PendingAck {
            qos: self.qos,
            topic: &self.topic,
            product_id: self.product_id.as_id(),
            message_id: self.message_id.as_id(),
            pub_client_id: self.pub_client_id.as_deref(),
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
        self.entries.insert(
            pkid,
            Entry {
                seq,
                qos: pending.qos,
                topic: pending.topic.to_owned(),
                product_id: OwnedId::new(pending.product_id),
                message_id: OwnedId::new(pending.message_id),
                pub_client_id: pending.pub_client_id.map(str::to_owned),
            },
        );
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
    fn zero_capacity_refuses() {
        let mut store = HeapAckStore::new(0);
        assert_eq!(store.insert(1, &pending("a")), Err(TooLarge));
    }
}
