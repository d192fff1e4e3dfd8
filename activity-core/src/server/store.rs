//! What one connection remembers beyond its fixed state: its subscriptions, the QoS 2 publishes
//! awaiting PUBREL, its last will. The caller chooses the memory: [`FixedSessionStore`] keeps
//! everything inline with capacities set by const generics (firmware); a host adapter implements
//! [`SessionStore`] on the heap with the limits of [`Limits`](super::Limits).
//!
//! A full table hands the value back as [`StoreFull`]; the engine decides what that means for
//! the client (SUBACK failure, CONNACK refusal, disconnect), in one place.

use crate::QoS;
use crate::codec::{LastWill, RetainHandling, SubscriptionOptions};

/// A table of the [`SessionStore`] had no room (or an entry was longer than its capacity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoreFull;

impl core::fmt::Display for StoreFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("session store full")
    }
}

impl core::error::Error for StoreFull {}

/// MQTT 5 features a server leaves out (5.0 section 3.2.2.3), fixed at compile time by its
/// [`SessionStore::DECLINED`]: the CONNACK says which are not available, a client that uses
/// one anyway gets the answer the specification gives, and the engine's code that serves it
/// is dead for that store (the firmware does not link it). Topic aliases are declined the same
/// way by a store whose [`SessionStore::alias_capacity`] is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Declined(u8);

impl Declined {
    /// Nothing declined (every server that keeps its sessions on the heap).
    pub const NONE: Declined = Declined(0);
    /// Subscription identifiers (section 3.8.2.1.2): the CONNACK says Subscription
    /// Identifiers Available 0, a SUBSCRIBE that carries one closes the connection with
    /// DISCONNECT 0xA1 (section 3.2.2.3.12), and deliveries carry none.
    pub const SUBSCRIPTION_IDENTIFIERS: Declined = Declined(1);
    /// Shared subscriptions (section 4.8.2): the CONNACK says Shared Subscription Available 0
    /// and a `$share/` filter gets SUBACK 0x9E, whatever
    /// [`Limits::shared_subscriptions`](super::Limits::shared_subscriptions) says.
    pub const SHARED_SUBSCRIPTIONS: Declined = Declined(2);
    /// Reason strings (sections 3.2.2.3.9 and 3.14.2.2.3), which a server may always leave
    /// out: a refusing CONNACK and the server's DISCONNECT carry their reason code only.
    pub const REASON_STRINGS: Declined = Declined(4);

    /// The set with the bits `bits` (of the constants above; others mean nothing).
    pub const fn from_bits(bits: u8) -> Declined {
        Declined(bits)
    }

    /// The bits of the set (for [`FixedSessionStore`]'s `DECLINE` parameter).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// This set and `other`.
    pub const fn and(self, other: Declined) -> Declined {
        Declined(self.0 | other.0)
    }

    /// Whether every feature of `feature` is declined.
    pub const fn contains(self, feature: Declined) -> bool {
        self.0 & feature.0 == feature.0
    }
}

/// Which way a topic alias goes (MQTT 5.0 section 3.3.2.3.4): each direction has its own
/// table, and the same number may stand for different topics in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AliasDirection {
    /// Aliases the client sets on its publishes (at most the Topic Alias Maximum of the
    /// CONNACK); in a relay, the client's publishes to the upstream.
    FromClient,
    /// Aliases on the deliveries to the client (at most the Topic Alias Maximum of the
    /// CONNECT): the engine's own, or in a relay the upstream's.
    ToClient,
}

/// The per-connection tables the engine keeps (MQTT 3.1.1 sections 3.1.2.5, 3.8 and 4.3.3;
/// MQTT 5.0 topic aliases and subscription options).
///
/// The MQTT 5 tables have defaults that keep nothing (no alias, no subscription options), so
/// that a store without them still serves MQTT 5 clients: the engine then announces no topic
/// aliases and treats every subscription as having default options and no identifier.
pub trait SessionStore {
    /// The MQTT 5 features the server behind this store declines (see [`Declined`]); none by
    /// default.
    const DECLINED: Declined = Declined::NONE;

    /// The QoS granted to topic filter `filter`, if the client holds it.
    fn subscription(&self, filter: &str) -> Option<QoS>;
    /// Holds `filter` at `qos` (replacing the QoS of a filter already held, section 3.8.4).
    fn insert_subscription(&mut self, filter: &str, qos: QoS) -> Result<(), StoreFull>;
    /// Drops `filter`; whether it was held.
    fn remove_subscription(&mut self, filter: &str) -> bool;
    /// How many filters the client holds.
    fn subscription_count(&self) -> usize;
    /// The highest QoS among the held filters that match topic name `topic` (section 3.3.5),
    /// `None` when none matches.
    fn matching_qos(&self, topic: &str) -> Option<QoS>;
    /// Whether a QoS 2 PUBLISH with `pkid` awaits its PUBREL.
    fn has_inbound_qos2(&self, pkid: u16) -> bool;
    /// Remembers a QoS 2 PUBLISH awaiting its PUBREL.
    fn insert_inbound_qos2(&mut self, pkid: u16) -> Result<(), StoreFull>;
    /// Forgets the QoS 2 PUBLISH `pkid` (its PUBREL came); whether it was remembered.
    fn remove_inbound_qos2(&mut self, pkid: u16) -> bool;
    /// How many QoS 2 publishes await PUBREL.
    fn inbound_qos2_count(&self) -> usize;
    /// Keeps the last will of the CONNECT, with the MQTT 5 properties that go out with it
    /// (see [`will_publish_properties`](super::will_publish_properties)).
    fn set_will(&mut self, will: &LastWill<'_>) -> Result<(), StoreFull>;
    /// The last will, if one is kept.
    fn will(&self) -> Option<LastWill<'_>>;
    /// Drops the last will.
    fn clear_will(&mut self);
    /// Forgets everything (a connection ends).
    fn clear(&mut self);

    /// How many topic aliases the store keeps per direction (0: none). The engine announces
    /// no more than this.
    fn alias_capacity(&self) -> usize {
        0
    }
    /// The topic alias `alias` of `direction` stands for.
    fn alias_topic(&self, direction: AliasDirection, alias: u16) -> Option<&str> {
        let _ = (direction, alias);
        None
    }
    /// The alias of `direction` that stands for `topic`.
    fn alias_of(&self, direction: AliasDirection, topic: &str) -> Option<u16> {
        let _ = (direction, topic);
        None
    }
    /// Makes `alias` of `direction` stand for `topic` (replacing what it stood for);
    /// [`StoreFull`] past [`SessionStore::alias_capacity`] or for a topic too long to keep.
    fn set_alias(
        &mut self,
        direction: AliasDirection,
        alias: u16,
        topic: &str,
    ) -> Result<(), StoreFull> {
        let _ = (direction, alias, topic);
        Err(StoreFull)
    }
    /// Keeps the MQTT 5 options and the subscription identifier (0: none) of the held filter
    /// `filter` (after [`SessionStore::insert_subscription`]); [`StoreFull`] when the store
    /// keeps none, or the filter is not held.
    fn set_subscription_extras(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        id: u32,
    ) -> Result<(), StoreFull> {
        let _ = (filter, options, id);
        Err(StoreFull)
    }
    /// Calls `f` with each held filter that matches topic name `topic`: the filter, its
    /// options (the QoS granted) and its subscription identifier (0: none). Filters whose
    /// extras the store does not keep come with default options.
    fn for_each_matching(&self, topic: &str, f: &mut dyn FnMut(&str, SubscriptionOptions, u32));
    /// Calls `f` with each held filter, its options (the QoS granted) and its subscription
    /// identifier (0: none), as [`SessionStore::for_each_matching`] does for a topic: what a
    /// resumed session takes over (see [`Connection::handle_resume`](super::Connection::handle_resume)).
    /// A store that cannot list its filters lists none, and its sessions resume without them.
    fn for_each_subscription(&self, f: &mut dyn FnMut(&str, SubscriptionOptions, u32)) {
        let _ = f;
    }
}

/// A [`SessionStore`] with no heap: up to `SUBS` filters of at most `FILTER` bytes (with
/// their MQTT 5 options and subscription identifier), `QOS2` QoS 2 publishes awaiting PUBREL,
/// a will of at most `WILL` bytes of topic, message and MQTT 5 properties, and `ALIASES` topic
/// aliases of at most `FILTER` bytes per direction (none by default). `DECLINE` is the
/// [`Declined::bits`] of the MQTT 5 features its server leaves out (none by default).
///
/// Its size is about `SUBS * (FILTER + 16) + QOS2 * 2 + WILL + 2 * ALIASES * (FILTER + 12)
/// + 40` bytes.
#[derive(Debug)]
pub struct FixedSessionStore<
    const SUBS: usize,
    const FILTER: usize,
    const QOS2: usize,
    const WILL: usize,
    const ALIASES: usize = 0,
    const DECLINE: u8 = 0,
> {
    subs: heapless::Vec<(heapless::String<FILTER>, QoS, u8, u32), SUBS>,
    /// Topic aliases per [`AliasDirection`] (index 0: from the client); at most 255 each.
    aliases: [heapless::Vec<(u16, heapless::String<FILTER>), ALIASES, u8>; 2],
    inbound_qos2: heapless::Vec<u16, QOS2>,
    /// Topic then message; `None` without a will.
    will: Option<FixedWill<WILL>>,
}

/// The options of a kept subscription from its options byte (MQTT 5.0 section 3.8.3.1; its
/// QoS bits unused) with `qos` granted. The byte and the subscription identifier sit beside
/// the QoS, so that the entry of a filter of 64 bytes stays 80 bytes.
const fn options_of(byte: u8, qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: match (byte >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            _ => RetainHandling::Never,
        },
    }
}

const fn direction_index(direction: AliasDirection) -> usize {
    match direction {
        AliasDirection::FromClient => 0,
        AliasDirection::ToClient => 1,
    }
}

#[derive(Debug)]
struct FixedWill<const WILL: usize> {
    /// Topic, message, properties.
    bytes: heapless::Vec<u8, WILL>,
    topic_len: usize,
    properties_len: usize,
    qos: QoS,
    retain: bool,
}

impl<
    const SUBS: usize,
    const FILTER: usize,
    const QOS2: usize,
    const WILL: usize,
    const ALIASES: usize,
    const DECLINE: u8,
> FixedSessionStore<SUBS, FILTER, QOS2, WILL, ALIASES, DECLINE>
{
    /// An empty store.
    pub const fn new() -> Self {
        FixedSessionStore {
            subs: heapless::Vec::new(),
            aliases: [heapless::Vec::new(), heapless::Vec::new()],
            inbound_qos2: heapless::Vec::new(),
            will: None,
        }
    }
}

impl<
    const SUBS: usize,
    const FILTER: usize,
    const QOS2: usize,
    const WILL: usize,
    const ALIASES: usize,
    const DECLINE: u8,
> Default for FixedSessionStore<SUBS, FILTER, QOS2, WILL, ALIASES, DECLINE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<
    const SUBS: usize,
    const FILTER: usize,
    const QOS2: usize,
    const WILL: usize,
    const ALIASES: usize,
    const DECLINE: u8,
> SessionStore for FixedSessionStore<SUBS, FILTER, QOS2, WILL, ALIASES, DECLINE>
{
    const DECLINED: Declined = Declined::from_bits(DECLINE);

    fn subscription(&self, filter: &str) -> Option<QoS> {
        self.subs
            .iter()
            .find(|(held, _, _, _)| held.as_str() == filter)
            .map(|(_, qos, _, _)| *qos)
    }

    fn insert_subscription(&mut self, filter: &str, qos: QoS) -> Result<(), StoreFull> {
        if let Some((_, held, _, _)) = self
            .subs
            .iter_mut()
            .find(|(held, _, _, _)| held.as_str() == filter)
        {
            *held = qos;
            return Ok(());
        }
        let filter = heapless::String::try_from(filter).map_err(|_| StoreFull)?;
        self.subs.push((filter, qos, 0, 0)).map_err(|_| StoreFull)
    }

    fn remove_subscription(&mut self, filter: &str) -> bool {
        match self
            .subs
            .iter()
            .position(|(held, _, _, _)| held.as_str() == filter)
        {
            Some(at) => {
                self.subs.swap_remove(at);
                true
            }
            None => false,
        }
    }

    fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    fn matching_qos(&self, topic: &str) -> Option<QoS> {
        self.subs
            .iter()
            .filter(|(filter, _, _, _)| crate::topic::matches(filter, topic))
            .map(|(_, qos, _, _)| *qos)
            .max()
    }

    fn has_inbound_qos2(&self, pkid: u16) -> bool {
        self.inbound_qos2.contains(&pkid)
    }

    fn insert_inbound_qos2(&mut self, pkid: u16) -> Result<(), StoreFull> {
        if self.has_inbound_qos2(pkid) {
            return Ok(());
        }
        self.inbound_qos2.push(pkid).map_err(|_| StoreFull)
    }

    fn remove_inbound_qos2(&mut self, pkid: u16) -> bool {
        match self.inbound_qos2.iter().position(|p| *p == pkid) {
            Some(at) => {
                self.inbound_qos2.swap_remove(at);
                true
            }
            None => false,
        }
    }

    fn inbound_qos2_count(&self) -> usize {
        self.inbound_qos2.len()
    }

    fn set_will(&mut self, will: &LastWill<'_>) -> Result<(), StoreFull> {
        let mut bytes = heapless::Vec::new();
        bytes
            .extend_from_slice(will.topic.as_bytes())
            .map_err(|_| StoreFull)?;
        bytes
            .extend_from_slice(will.message)
            .map_err(|_| StoreFull)?;
        let at = bytes.len();
        let properties_len = super::will::will_publish_properties_len(&will.properties);
        bytes
            .resize(at + properties_len, 0)
            .map_err(|_| StoreFull)?;
        super::will_publish_properties(&will.properties, &mut bytes[at..])?;
        self.will = Some(FixedWill {
            bytes,
            topic_len: will.topic.len(),
            properties_len,
            qos: will.qos,
            retain: will.retain,
        });
        Ok(())
    }

    fn will(&self) -> Option<LastWill<'_>> {
        let will = self.will.as_ref()?;
        let (topic, rest) = will.bytes.split_at_checked(will.topic_len)?;
        let (message, properties) =
            rest.split_at_checked(rest.len().checked_sub(will.properties_len)?)?;
        Some(LastWill {
            // set_will stored a &str and a checked property block here.
            topic: core::str::from_utf8(topic).ok()?,
            message,
            qos: will.qos,
            retain: will.retain,
            properties: crate::codec::Properties::parse(properties, crate::codec::Context::Will)
                .ok()?,
        })
    }

    fn clear_will(&mut self) {
        self.will = None;
    }

    fn clear(&mut self) {
        self.subs.clear();
        self.inbound_qos2.clear();
        self.will = None;
        for table in &mut self.aliases {
            table.clear();
        }
    }

    fn alias_capacity(&self) -> usize {
        ALIASES
    }

    fn alias_topic(&self, direction: AliasDirection, alias: u16) -> Option<&str> {
        self.aliases[direction_index(direction)]
            .iter()
            .find(|(held, _)| *held == alias)
            .map(|(_, topic)| topic.as_str())
    }

    fn alias_of(&self, direction: AliasDirection, topic: &str) -> Option<u16> {
        self.aliases[direction_index(direction)]
            .iter()
            .find(|(_, held)| held.as_str() == topic)
            .map(|(alias, _)| *alias)
    }

    fn set_alias(
        &mut self,
        direction: AliasDirection,
        alias: u16,
        topic: &str,
    ) -> Result<(), StoreFull> {
        let topic = heapless::String::try_from(topic).map_err(|_| StoreFull)?;
        let table = &mut self.aliases[direction_index(direction)];
        if let Some(entry) = table.iter_mut().find(|(held, _)| *held == alias) {
            entry.1 = topic;
            return Ok(());
        }
        table.push((alias, topic)).map_err(|_| StoreFull)
    }

    fn set_subscription_extras(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        id: u32,
    ) -> Result<(), StoreFull> {
        let (_, _, held_options, held_id) = self
            .subs
            .iter_mut()
            .find(|(held, _, _, _)| held.as_str() == filter)
            .ok_or(StoreFull)?;
        *held_options = options.as_u8();
        *held_id = id;
        Ok(())
    }

    fn for_each_matching(&self, topic: &str, f: &mut dyn FnMut(&str, SubscriptionOptions, u32)) {
        for (filter, qos, options, id) in &self.subs {
            // Without shared subscriptions no filter held is a `$share/` one.
            let shared = if Self::DECLINED.contains(Declined::SHARED_SUBSCRIPTIONS) {
                filter.as_str()
            } else {
                crate::topic::shared_filter(filter).1
            };
            if crate::topic::matches(shared, topic) {
                f(filter, options_of(*options, *qos), *id);
            }
        }
    }

    fn for_each_subscription(&self, f: &mut dyn FnMut(&str, SubscriptionOptions, u32)) {
        for (filter, qos, options, id) in &self.subs {
            f(filter, options_of(*options, *qos), *id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Store = FixedSessionStore<2, 8, 2, 16>;

    #[test]
    fn subscriptions_replace_and_hand_back_what_does_not_fit() {
        let mut store = Store::new();
        store.insert_subscription("a/#", QoS::AtMostOnce).unwrap();
        store.insert_subscription("a/#", QoS::AtLeastOnce).unwrap();
        assert_eq!(store.subscription_count(), 1);
        assert_eq!(store.subscription("a/#"), Some(QoS::AtLeastOnce));
        assert_eq!(
            store.insert_subscription("longer/than/8", QoS::AtMostOnce),
            Err(StoreFull)
        );
        store.insert_subscription("b", QoS::AtMostOnce).unwrap();
        assert_eq!(
            store.insert_subscription("c", QoS::AtMostOnce),
            Err(StoreFull)
        );
        store
            .insert_subscription("a/+", QoS::AtMostOnce)
            .unwrap_err();
        assert_eq!(store.matching_qos("a/x"), Some(QoS::AtLeastOnce));
        assert_eq!(store.matching_qos("b"), Some(QoS::AtMostOnce));
        assert_eq!(store.matching_qos("c"), None);
        assert!(store.remove_subscription("a/#"));
        assert!(!store.remove_subscription("a/#"));
        assert_eq!(store.subscription_count(), 1);
    }

    #[test]
    fn qos2_ids_are_a_bounded_set() {
        let mut store = Store::new();
        store.insert_inbound_qos2(7).unwrap();
        store.insert_inbound_qos2(7).unwrap();
        store.insert_inbound_qos2(8).unwrap();
        assert_eq!(store.insert_inbound_qos2(9), Err(StoreFull));
        assert!(store.has_inbound_qos2(7));
        assert!(store.remove_inbound_qos2(7));
        assert!(!store.has_inbound_qos2(7));
        assert_eq!(store.inbound_qos2_count(), 1);
    }

    #[test]
    fn the_will_is_kept_whole_or_refused() {
        let mut store = Store::new();
        let will = LastWill {
            properties: crate::codec::Properties::EMPTY,
            topic: "w/t",
            message: b"gone",
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        store.set_will(&will).unwrap();
        assert_eq!(store.will(), Some(will));
        let big = LastWill {
            message: &[0; 14],
            ..will
        };
        assert_eq!(store.set_will(&big), Err(StoreFull));
        store.clear();
        assert_eq!(store.will(), None);
    }
}
