//! The engine's per-connection tables on the heap (see [`SessionStore`]): the broker's limits
//! are the engine's [`Limits`](activity_core::server::Limits), which it checks before every
//! insert, so these tables never refuse.

use std::collections::{HashMap, HashSet};

use activity_core::QoS;
use activity_core::codec::{Context, LastWill, Properties, SubscriptionOptions};
use activity_core::server::{AliasDirection, SessionStore, StoreFull, will_publish_properties};
use activity_core::topic;

/// A last will, owned.
#[derive(Debug)]
struct Will {
    topic: String,
    message: Vec<u8>,
    qos: QoS,
    retain: bool,
    /// The MQTT 5 properties that go out with it (a checked block, see
    /// [`will_publish_properties`]).
    properties: Vec<u8>,
}

/// A [`SessionStore`] on the heap, bounded by the engine's limits.
#[derive(Debug, Default)]
pub struct HeapSessionStore {
    /// Each filter's QoS, MQTT 5 options and subscription identifier (0: none).
    subscriptions: HashMap<String, (QoS, Option<SubscriptionOptions>, u32)>,
    inbound_qos2: HashSet<u16>,
    will: Option<Will>,
    /// Topic aliases from the client: alias to topic.
    from_client: HashMap<u16, String>,
    /// Topic aliases to the client, both ways.
    to_client: HashMap<u16, String>,
    to_client_by_topic: HashMap<String, u16>,
}

impl HeapSessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SessionStore for HeapSessionStore {
    fn subscription(&self, filter: &str) -> Option<QoS> {
        self.subscriptions.get(filter).map(|(qos, _, _)| *qos)
    }

    fn insert_subscription(&mut self, filter: &str, qos: QoS) -> Result<(), StoreFull> {
        match self.subscriptions.get_mut(filter) {
            Some(held) => held.0 = qos,
            None => {
                self.subscriptions.insert(filter.to_owned(), (qos, None, 0));
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
            .map(|(_, (qos, _, _))| *qos)
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
        let mut properties = vec![0u8; will.properties.as_bytes().len()];
        let len = will_publish_properties(&will.properties, &mut properties)?
            .as_bytes()
            .len();
        properties.truncate(len);
        self.will = Some(Will {
            topic: will.topic.to_owned(),
            message: will.message.to_vec(),
            qos: will.qos,
            retain: will.retain,
            properties,
        });
        Ok(())
    }

    fn will(&self) -> Option<LastWill<'_>> {
        self.will.as_ref().map(|will| LastWill {
            // Checked when it was kept: parsing it again cannot fail.
            properties: Properties::parse(&will.properties, Context::Will).unwrap_or_default(),
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
        self.from_client.clear();
        self.to_client.clear();
        self.to_client_by_topic.clear();
    }

    /// As many as the engine's limits allow (they bound the tables).
    fn alias_capacity(&self) -> usize {
        usize::from(u16::MAX)
    }

    fn alias_topic(&self, direction: AliasDirection, alias: u16) -> Option<&str> {
        match direction {
            AliasDirection::FromClient => self.from_client.get(&alias),
            AliasDirection::ToClient => self.to_client.get(&alias),
        }
        .map(String::as_str)
    }

    fn alias_of(&self, direction: AliasDirection, topic: &str) -> Option<u16> {
        match direction {
            AliasDirection::FromClient => self
                .from_client
                .iter()
                .find(|(_, held)| held.as_str() == topic)
                .map(|(alias, _)| *alias),
            AliasDirection::ToClient => self.to_client_by_topic.get(topic).copied(),
        }
    }

    fn set_alias(
        &mut self,
        direction: AliasDirection,
        alias: u16,
        topic: &str,
    ) -> Result<(), StoreFull> {
        match direction {
            AliasDirection::FromClient => {
                self.from_client.insert(alias, topic.to_owned());
            }
            AliasDirection::ToClient => {
                if let Some(old) = self.to_client.insert(alias, topic.to_owned()) {
                    self.to_client_by_topic.remove(&old);
                }
                self.to_client_by_topic.insert(topic.to_owned(), alias);
            }
        }
        Ok(())
    }

    fn set_subscription_extras(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        id: u32,
    ) -> Result<(), StoreFull> {
        let held = self.subscriptions.get_mut(filter).ok_or(StoreFull)?;
        held.1 = Some(options);
        held.2 = id;
        Ok(())
    }

    fn for_each_matching(&self, name: &str, f: &mut dyn FnMut(&str, SubscriptionOptions, u32)) {
        for (filter, (qos, options, id)) in &self.subscriptions {
            if topic::matches(topic::shared_filter(filter).1, name) {
                f(filter, options_of(*qos, *options), *id);
            }
        }
    }

    fn for_each_subscription(&self, f: &mut dyn FnMut(&str, SubscriptionOptions, u32)) {
        for (filter, (qos, options, id)) in &self.subscriptions {
            f(filter, options_of(*qos, *options), *id);
        }
    }
}

/// The options of a held filter: those kept, or the defaults, at the QoS granted.
fn options_of(qos: QoS, options: Option<SubscriptionOptions>) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..options.unwrap_or(SubscriptionOptions::new(qos))
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
