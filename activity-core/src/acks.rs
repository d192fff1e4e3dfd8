//! Deliveries that wait for the subscriber's acknowledgement, keyed by packet id.
//!
//! When the server delivers an envelope message (see [`crate::envelope`]) at QoS 1 or 2, the
//! tracker records what the `msgack` event will need under the packet id of that delivery
//! (MQTT 3.1.1 section 2.3.1). The subscriber's PUBACK (QoS 1, section 3.4) or PUBREC (QoS 2,
//! section 3.5) takes the entry out again and becomes the `msgack` event.
//!
//! [`AckStore`] is the interface, so that a server can keep entries on its heap, sized by use;
//! [`FixedAckStore`] is the no-alloc implementation with caller-chosen capacity.

use crate::QoS;
use crate::event::Id;

/// What a `msgack` event needs from the delivery it acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PendingAck<'a> {
    /// The QoS of the delivery: 1 waits for PUBACK, 2 for PUBREC.
    pub qos: QoS,
    /// The topic the message was delivered on.
    pub topic: &'a str,
    /// The envelope's `product_id`.
    pub product_id: Id<'a>,
    /// The envelope's `message_id`.
    pub message_id: Id<'a>,
    /// The client that published the message, when known.
    pub pub_client_id: Option<&'a str>,
}

/// How [`AckStore::insert`] stored an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stored {
    /// In a free place.
    Fresh,
    /// Over an older entry with the same packet id (a redelivery, or an id reused after its
    /// acknowledgement was lost).
    Replaced,
    /// The store was full: the oldest entry was dropped to make room.
    EvictedOldest,
}

/// [`AckStore::insert`] refused an entry: its text does not fit one entry of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TooLarge;

impl core::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("delivery too large for one entry of the acknowledgement store")
    }
}

impl core::error::Error for TooLarge {}

/// A bounded table of deliveries awaiting acknowledgement, keyed by packet id.
pub trait AckStore {
    /// The most entries the store holds.
    fn capacity(&self) -> usize;
    /// The entries it holds now.
    fn len(&self) -> usize;
    /// Whether it holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Stores `pending` under `pkid`; when full, drops the oldest entry first.
    fn insert(&mut self, pkid: u16, pending: &PendingAck<'_>) -> Result<Stored, TooLarge>;
    /// The QoS of the entry under `pkid`, if any.
    fn qos_of(&self, pkid: u16) -> Option<QoS>;
    /// Takes the entry under `pkid` out of the store; the view stays valid while borrowed.
    fn remove(&mut self, pkid: u16) -> Option<PendingAck<'_>>;
    /// Drops every entry.
    fn clear(&mut self);
}

/// Where an envelope id is kept: a string's length in the entry's text, or an integer as its
/// little-endian bytes (alignment 1: an `i64` here would pad each entry by 14 bytes).
#[derive(Clone, Copy, Debug)]
enum IdSlot {
    Str(u16),
    Int([u8; 8]),
}

#[derive(Debug)]
struct Slot<const TEXT: usize> {
    used: bool,
    pkid: u16,
    qos: QoS,
    seq: u64,
    /// topic, then the string ids, then the publisher: lengths below.
    text: heapless::String<TEXT>,
    topic_len: u16,
    product_id: IdSlot,
    message_id: IdSlot,
    publisher_len: Option<u16>,
}

impl<const TEXT: usize> Slot<TEXT> {
    const EMPTY: Self = Slot {
        used: false,
        pkid: 0,
        qos: QoS::AtMostOnce,
        seq: 0,
        text: heapless::String::new(),
        topic_len: 0,
        product_id: IdSlot::Int([0; 8]),
        message_id: IdSlot::Int([0; 8]),
        publisher_len: None,
    };

    fn fill(&mut self, pkid: u16, seq: u64, p: &PendingAck<'_>) -> Result<(), TooLarge> {
        fn push<const TEXT: usize>(
            text: &mut heapless::String<TEXT>,
            s: &str,
        ) -> Result<u16, TooLarge> {
            let len = u16::try_from(s.len()).map_err(|_| TooLarge)?;
            text.push_str(s).map_err(|_| TooLarge)?;
            Ok(len)
        }
        fn push_id<const TEXT: usize>(
            text: &mut heapless::String<TEXT>,
            id: Id<'_>,
        ) -> Result<IdSlot, TooLarge> {
            Ok(match id {
                Id::Str(s) => IdSlot::Str(push(text, s)?),
                Id::Int(i) => IdSlot::Int(i.to_le_bytes()),
            })
        }
        self.text.clear();
        let result = (|| {
            self.topic_len = push(&mut self.text, p.topic)?;
            self.product_id = push_id(&mut self.text, p.product_id)?;
            self.message_id = push_id(&mut self.text, p.message_id)?;
            self.publisher_len = match p.pub_client_id {
                Some(s) => Some(push(&mut self.text, s)?),
                None => None,
            };
            Ok(())
        })();
        self.used = result.is_ok();
        self.pkid = pkid;
        self.qos = p.qos;
        self.seq = seq;
        result
    }

    fn view(&self) -> Option<PendingAck<'_>> {
        let text = self.text.as_str();
        let mut at = 0usize;
        // Every length was recorded by `fill` for a `&str` pushed whole, so each range below
        // lies on char boundaries; `get` turns a broken invariant into "no entry", not a panic.
        let mut take = |len: u16| {
            let end = at + usize::from(len);
            let s = text.get(at..end);
            at = end;
            s
        };
        let topic = take(self.topic_len)?;
        let product_id = match self.product_id {
            IdSlot::Str(len) => Id::Str(take(len)?),
            IdSlot::Int(bytes) => Id::Int(i64::from_le_bytes(bytes)),
        };
        let message_id = match self.message_id {
            IdSlot::Str(len) => Id::Str(take(len)?),
            IdSlot::Int(bytes) => Id::Int(i64::from_le_bytes(bytes)),
        };
        let pub_client_id = match self.publisher_len {
            Some(len) => Some(take(len)?),
            None => None,
        };
        Some(PendingAck {
            qos: self.qos,
            topic,
            product_id,
            message_id,
            pub_client_id,
        })
    }
}

/// An [`AckStore`] in a fixed array: `N` entries of at most `TEXT` bytes of text each (topic,
/// string ids and publisher id together). No allocation; memory is about `N * (TEXT + 64)` bytes.
#[derive(Debug)]
pub struct FixedAckStore<const N: usize, const TEXT: usize> {
    slots: [Slot<TEXT>; N],
    next_seq: u64,
    len: usize,
}

impl<const N: usize, const TEXT: usize> Default for FixedAckStore<N, TEXT> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const TEXT: usize> FixedAckStore<N, TEXT> {
    /// An empty store.
    pub const fn new() -> Self {
        FixedAckStore {
            slots: [const { Slot::EMPTY }; N],
            next_seq: 0,
            len: 0,
        }
    }

    fn find(&self, pkid: u16) -> Option<usize> {
        self.slots.iter().position(|s| s.used && s.pkid == pkid)
    }
}

impl<const N: usize, const TEXT: usize> AckStore for FixedAckStore<N, TEXT> {
    fn capacity(&self) -> usize {
        N
    }

    fn len(&self) -> usize {
        self.len
    }

    fn insert(&mut self, pkid: u16, pending: &PendingAck<'_>) -> Result<Stored, TooLarge> {
        let (index, outcome) = if let Some(i) = self.find(pkid) {
            (i, Stored::Replaced)
        } else if let Some(i) = self.slots.iter().position(|s| !s.used) {
            (i, Stored::Fresh)
        } else if let Some((i, _)) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.seq) {
            (i, Stored::EvictedOldest)
        } else {
            // N == 0: nothing can be stored.
            return Err(TooLarge);
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.slots[index];
        let was_used = slot.used;
        let result = slot.fill(pkid, seq, pending);
        match (was_used, slot.used) {
            (false, true) => self.len += 1,
            (true, false) => self.len -= 1,
            _ => {}
        }
        result.map(|()| outcome)
    }

    fn qos_of(&self, pkid: u16) -> Option<QoS> {
        self.find(pkid).map(|i| self.slots[i].qos)
    }

    fn remove(&mut self, pkid: u16) -> Option<PendingAck<'_>> {
        let i = self.find(pkid)?;
        let slot = &mut self.slots[i];
        slot.used = false;
        self.len -= 1;
        // The slot is free now, but its text stays untouched while the returned view borrows
        // the store.
        slot.view()
    }

    fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.used = false;
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending<'a>(topic: &'a str, product: Id<'a>, message: Id<'a>) -> PendingAck<'a> {
        PendingAck {
            qos: QoS::AtLeastOnce,
            topic,
            product_id: product,
            message_id: message,
            pub_client_id: Some("pub-1"),
        }
    }

    #[test]
    fn insert_then_remove_gives_the_entry_back() {
        let mut store = FixedAckStore::<4, 128>::new();
        let p = pending("a/b", Id::Str("p1"), Id::Int(-42));
        assert_eq!(store.insert(7, &p), Ok(Stored::Fresh));
        assert_eq!(store.len(), 1);
        assert_eq!(store.qos_of(7), Some(QoS::AtLeastOnce));
        assert_eq!(store.qos_of(8), None);
        assert_eq!(store.remove(7), Some(p));
        assert!(store.is_empty());
        assert_eq!(store.remove(7), None);
    }

    #[test]
    fn same_packet_id_replaces() {
        let mut store = FixedAckStore::<2, 64>::new();
        store
            .insert(1, &pending("t1", Id::Str("p"), Id::Str("m1")))
            .unwrap();
        let second = pending("t2", Id::Str("p"), Id::Str("m2"));
        assert_eq!(store.insert(1, &second), Ok(Stored::Replaced));
        assert_eq!(store.len(), 1);
        assert_eq!(store.remove(1), Some(second));
    }

    #[test]
    fn full_store_evicts_the_oldest() {
        let mut store = FixedAckStore::<3, 64>::new();
        for pkid in 1..=3u16 {
            assert_eq!(
                store.insert(pkid, &pending("t", Id::Int(pkid.into()), Id::Int(0))),
                Ok(Stored::Fresh)
            );
        }
        // Touching 1 again makes it the newest; 2 is now the oldest.
        store
            .insert(1, &pending("t", Id::Int(1), Id::Int(0)))
            .unwrap();
        assert_eq!(
            store.insert(4, &pending("t", Id::Int(4), Id::Int(0))),
            Ok(Stored::EvictedOldest)
        );
        assert_eq!(store.len(), 3);
        assert_eq!(store.qos_of(2), None);
        for pkid in [1, 3, 4] {
            assert!(store.remove(pkid).is_some(), "{pkid}");
        }
    }

    #[test]
    fn oversize_text_is_refused_and_frees_a_replaced_slot() {
        let mut store = FixedAckStore::<2, 8>::new();
        store
            .insert(5, &pending("t", Id::Int(1), Id::Int(2)))
            .unwrap();
        let long = pending("a-topic-longer-than-8", Id::Int(1), Id::Int(2));
        assert_eq!(store.insert(5, &long), Err(TooLarge));
        assert_eq!(store.len(), 0);
        assert_eq!(store.remove(5), None);
        assert_eq!(store.insert(6, &long), Err(TooLarge));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut store = FixedAckStore::<0, 64>::new();
        assert_eq!(
            store.insert(1, &pending("t", Id::Int(1), Id::Int(2))),
            Err(TooLarge)
        );
        assert_eq!(store.capacity(), 0);
    }

    #[test]
    fn clear_empties() {
        let mut store = FixedAckStore::<2, 64>::new();
        store
            .insert(1, &pending("t", Id::Int(1), Id::Int(2)))
            .unwrap();
        store.clear();
        assert!(store.is_empty());
        assert_eq!(store.remove(1), None);
    }
}
