//! The engine's per-connection tables on the heap (see [`SessionStore`]): the broker's limits
//! are the engine's [`Limits`](activity_core::server::Limits), which it checks before every
//! insert, so these tables never refuse.

use std::collections::{HashMap, HashSet};

use activity_core::QoS;
use activity_core::codec::LastWill;
use activity_core::server::{SessionStore, StoreFull};
use activity_core::topic;

/// A last will, owned.
#[derive(Debug)]
struct Will {
    topic: String,
    message: Vec<u8>,
    qos: QoS,
    retain: bool,
}

/// A [`SessionStore`] on the heap, bounded by the engine's limits.
#[derive(Debug, Default)]
pub struct HeapSessionStore {
    subscriptions: HashMap<String, QoS>,
    inbound_qos2: HashSet<u16>,
    will: Option<Will>,
}

impl HeapSessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SessionStore for HeapSessionStore {
    fn subscription(&self, filter: &str) -> Option<QoS> {
        self.subscriptions.get(filter).copied()
    }

    fn insert_subscription(&mut self, filter: &str, qos: QoS) -> Result<(), StoreFull> {
        match self.subscriptions.get_mut(filter) {
            Some(held) => *held = qos,
            None => {
                self.subscriptions.insert(filter.to_owned(), qos);
            }
        }
        Ok(())
    }

    fn remove_subscription(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    fn matching_qos(&self, name: &str) -> Option<QoS> {
        self.subscriptions
            .iter()
            .filter(|(filter, _)| topic::matches(filter, name))
            .map(|(_, qos)| *qos)
            .max()
    }

    fn has_inbound_qos2(&self, pkid: u16) -> bool {
        self.inbound_qos2.contains(&pkid)
    }

    fn insert_inbound_qos2(&mut self, pkid: u16) -> Result<(), StoreFull> {
        self.inbound_qos2.insert(pkid);
        Ok(())
    }

    fn remove_inbound_qos2(&mut self, pkid: u16) -> bool {
        self.inbound_qos2.remove(&pkid)
    }

    fn inbound_qos2_count(&self) -> usize {
        self.inbound_qos2.len()
    }

    fn set_will(&mut self, will: &LastWill<'_>) -> Result<(), StoreFull> {
        self.will = Some(Will {
            topic: will.topic.to_owned(),
            message: will.message.to_vec(),
            qos: will.qos,
            retain: will.retain,
        });
        Ok(())
    }

    fn will(&self) -> Option<LastWill<'_>> {
        self.will.as_ref().map(|will| LastWill {
            properties: activity_core::codec::Properties::EMPTY,
            topic: &will.topic,
            message: &will.message,
            qos: will.qos,
            retain: will.retain,
        })
    }

    fn clear_will(&mut self) {
        self.will = None;
    }

    fn clear(&mut self) {
        self.subscriptions.clear();
        self.inbound_qos2.clear();
        self.will = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_the_engine_asks_for() {
        let mut store = HeapSessionStore::new();
        store.insert_subscription("a/+", QoS::AtLeastOnce).unwrap();
        store.insert_subscription("a/#", QoS::AtMostOnce).unwrap();
        store.insert_subscription("a/#", QoS::ExactlyOnce).unwrap();
        assert_eq!(store.subscription_count(), 2);
        assert_eq!(store.subscription("a/#"), Some(QoS::ExactlyOnce));
        assert_eq!(store.matching_qos("a/b"), Some(QoS::ExactlyOnce));
        assert_eq!(store.matching_qos("b"), None);
        assert!(store.remove_subscription("a/#"));
        assert!(!store.remove_subscription("a/#"));
        assert_eq!(store.matching_qos("a/b"), Some(QoS::AtLeastOnce));

        store.insert_inbound_qos2(9).unwrap();
        assert!(store.has_inbound_qos2(9));
        assert_eq!(store.inbound_qos2_count(), 1);
        assert!(store.remove_inbound_qos2(9));
        assert!(!store.remove_inbound_qos2(9));

        let will = LastWill {
            properties: activity_core::codec::Properties::EMPTY,
            topic: "status/x",
            message: b"gone",
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        store.set_will(&will).unwrap();
        assert_eq!(store.will(), Some(will));
        store.clear_will();
        assert_eq!(store.will(), None);

        store.set_will(&will).unwrap();
        store.insert_subscription("x", QoS::AtMostOnce).unwrap();
        store.insert_inbound_qos2(1).unwrap();
        store.clear();
        assert_eq!(store.subscription_count(), 0);
        assert_eq!(store.inbound_qos2_count(), 0);
        assert_eq!(store.will(), None);
    }
}
