//! What an MQTT 5 delivery carries besides the publisher's properties (MQTT 5.0 sections
//! 3.3.2.3 and 3.3.4): the subscription identifiers of the matching subscriptions, a topic
//! alias the engine assigned, and the Message Expiry Interval less the time the message
//! waited. The publisher's own Topic Alias and any Subscription Identifier never pass on.
//!
//! The new property block is written into the tail of the driver's transmit buffer, below
//! the packet that refers to it: no buffer of the engine's, no copy when nothing changes.

use crate::codec::{
    EncodeError, Properties, Property, RetainHandling, encode_properties, properties_len,
};

use super::flow::ClientFlow;
use super::{
    AliasDirection, Counter, Declined, DeliveredFor, Delivery, DeliveryError, SessionStore,
};

/// The most subscription identifiers one delivery carries; the identifiers of further
/// matching subscriptions are left out (counted as
/// [`Counter::SubscriptionIdsCut`](super::Counter::SubscriptionIdsCut)).
pub const MAX_SUBSCRIPTION_IDS: usize = 8;

/// The engine's additions to one delivery for an MQTT 5 client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Additions {
    /// The topic alias, and whether the client knows it already (the topic is left out).
    pub(super) alias: Option<(u16, bool)>,
    /// The identifiers of the matching subscriptions that have one.
    pub(super) subscription_ids: heapless::Vec<u32, MAX_SUBSCRIPTION_IDS>,
    /// The Message Expiry Interval to send in place of the publisher's.
    pub(super) expiry: Option<u32>,
    /// Whether more matching subscriptions had identifiers than `subscription_ids` holds.
    pub(super) ids_cut: bool,
}

impl Additions {
    /// Whether the publisher's property `p` passes on unchanged.
    fn keeps(&self, p: &Property<'_>) -> bool {
        match p {
            Property::TopicAlias(_) | Property::SubscriptionIdentifier(_) => false,
            Property::MessageExpiryInterval(_) => self.expiry.is_none(),
            _ => true,
        }
    }

    /// The properties the engine adds, in wire order after the kept ones.
    fn added(&self) -> impl Iterator<Item = Property<'static>> + '_ {
        self.expiry
            .map(Property::MessageExpiryInterval)
            .into_iter()
            .chain(
                self.subscription_ids
                    .iter()
                    .map(|id| Property::SubscriptionIdentifier(*id)),
            )
            .chain(self.alias.map(|(alias, _)| Property::TopicAlias(alias)))
    }

    /// Whether the block must be rewritten (anything added, or anything of the publisher's
    /// dropped); when not, the publisher's block goes out as it is.
    pub(super) fn rewrites(&self, original: &Properties<'_>) -> bool {
        self.added().next().is_some() || original.iter().any(|p| !self.keeps(&p))
    }

    /// The bytes of the rewritten block (without its length).
    pub(super) fn rewritten_len(&self, original: &Properties<'_>) -> Result<usize, EncodeError> {
        let kept = original.iter().filter(|p| self.keeps(p));
        let mut len = 0usize;
        for p in kept {
            len = len
                .checked_add(properties_len(&[p])?)
                .ok_or(EncodeError::PacketTooLarge)?;
        }
        for p in self.added() {
            len = len
                .checked_add(properties_len(&[p])?)
                .ok_or(EncodeError::PacketTooLarge)?;
        }
        Ok(len)
    }

    /// Writes the rewritten block (without its length) into `out`, which has
    /// [`Additions::rewritten_len`] bytes; the bytes written.
    pub(super) fn rewrite(
        &self,
        original: &Properties<'_>,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let mut at = 0;
        for p in original.iter().filter(|p| self.keeps(p)) {
            let rest = out
                .get_mut(at..)
                .ok_or(EncodeError::BufferTooSmall { needed: at })?;
            at += encode_properties(&[p], rest)?;
        }
        for p in self.added() {
            let rest = out
                .get_mut(at..)
                .ok_or(EncodeError::BufferTooSmall { needed: at })?;
            at += encode_properties(&[p], rest)?;
        }
        Ok(at)
    }
}

/// What the engine does to a delivery for an MQTT 5 client before it is encoded:
///
/// - the Message Expiry Interval less [`Delivery::waited_ms`]; an expired message is dropped;
/// - the client's subscriptions that match it (only the one [`Delivery::subscription`] names,
///   none for a [`DeliveredFor::Plain`] one): No Local drops the client's own messages (it needs
///   [`Delivery::publisher`]), Retain Handling 2 drops a retained message sent at the
///   subscribe, Retain As Published keeps [`Delivery::published_retain`], and the
///   identifiers of the subscriptions that take it go with it. A message no subscription takes
///   is dropped; one that matches no kept subscription (the store keeps none, or the router
///   knows better) goes as it is;
/// - the topic alias: the one the client knows for the topic, or a new one while the client
///   accepts aliases (round robin once all are taken, see [`ClientFlow::take_alias`]).
pub(super) fn prepare<S: SessionStore>(
    store: &S,
    flow: &mut ClientFlow,
    client_id: &str,
    delivery: &mut Delivery<'_>,
    additions: &mut Additions,
) -> Result<(), DeliveryError> {
    additions.expiry = remaining_expiry(
        delivery.properties.message_expiry_interval(),
        delivery.waited_ms,
    )
    .map_err(|()| DeliveryError::Dropped(Counter::DeliveryExpired))?;
    if delivery.subscription == DeliveredFor::Plain {
        additions.alias = alias(store, flow, delivery.topic);
        return Ok(());
    }
    let own = delivery.publisher == Some(client_id);
    let (mut matched, mut wanted, mut keep_retain) = (false, false, false);
    let ids = &mut additions.subscription_ids;
    let mut cut = false;
    let seen = *delivery;
    store.for_each_matching(seen.topic, &mut |filter, options, id| {
        if matches!(seen.subscription, DeliveredFor::Filter(named) if named != filter) {
            return;
        }
        matched = true;
        if (options.no_local && own)
            || (seen.retain && options.retain_handling == RetainHandling::Never)
        {
            return;
        }
        wanted = true;
        keep_retain |= options.retain_as_published;
        // The constant inside the closure, which is called through `dyn`: a captured bool
        // would be read at run time, and the identifier code kept.
        let keeps_ids = !S::DECLINED.contains(Declined::SUBSCRIPTION_IDENTIFIERS);
        if id != 0 && keeps_ids && ids.push(id).is_err() {
            cut = true;
        }
    });
    additions.ids_cut = cut;
    if matched && !wanted {
        return Err(DeliveryError::Dropped(Counter::DeliveryNotWanted));
    }
    if keep_retain {
        delivery.retain |= delivery.published_retain;
    }
    additions.alias = alias(store, flow, delivery.topic);
    Ok(())
}

/// The topic alias of a delivery on `topic`: the one the client knows for it, or a new one
/// while the client accepts aliases; the store is not asked when the client takes none or
/// the store keeps none.
fn alias(store: &impl SessionStore, flow: &mut ClientFlow, topic: &str) -> Option<(u16, bool)> {
    if store.alias_capacity() == 0 || flow.outbound_aliases == 0 {
        return None;
    }
    match store.alias_of(AliasDirection::ToClient, topic) {
        Some(alias) => Some((alias, true)),
        None => flow.take_alias().map(|alias| (alias, false)),
    }
}

/// The Message Expiry Interval a subscriber gets after the message `waited_ms` (MQTT 5.0
/// section 3.3.2.3.3): the publisher's less the whole seconds waited, `None` when nothing is
/// left (the message has expired and is not delivered). A message without one never expires.
pub(super) fn remaining_expiry(original: Option<u32>, waited_ms: u64) -> Result<Option<u32>, ()> {
    let Some(seconds) = original else {
        return Ok(None);
    };
    let waited = u32::try_from(waited_ms / 1000).unwrap_or(u32::MAX);
    match seconds.checked_sub(waited) {
        Some(left) if left > 0 => Ok((waited > 0).then_some(left)),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Context;

    #[test]
    fn the_publishers_alias_and_ids_go_and_the_engines_come() {
        let mut raw = [0u8; 64];
        let sent = [
            Property::MessageExpiryInterval(60),
            Property::TopicAlias(4),
            Property::UserProperty("k", "v"),
        ];
        let n = encode_properties(&sent, &mut raw).unwrap();
        let original = Properties::parse(&raw[..n], Context::Publish).unwrap();
        let none = Additions::default();
        assert!(none.rewrites(&original), "the publisher's alias is dropped");
        let mut additions = Additions {
            alias: Some((2, true)),
            expiry: Some(57),
            ..Additions::default()
        };
        additions.subscription_ids.push(7).unwrap();
        additions.subscription_ids.push(300).unwrap();
        let len = additions.rewritten_len(&original).unwrap();
        let mut out = [0u8; 64];
        assert_eq!(additions.rewrite(&original, &mut out).unwrap(), len);
        let back = Properties::parse(&out[..len], Context::Publish).unwrap();
        assert_eq!(
            back.iter().collect::<heapless::Vec<_, 8>>().as_slice(),
            [
                Property::UserProperty("k", "v"),
                Property::MessageExpiryInterval(57),
                Property::SubscriptionIdentifier(7),
                Property::SubscriptionIdentifier(300),
                Property::TopicAlias(2),
            ]
        );
        let plain = Properties::parse(&raw[..0], Context::Publish).unwrap();
        assert!(!none.rewrites(&plain));
    }

    #[test]
    fn expiry_counts_down_in_whole_seconds_and_ends() {
        assert_eq!(remaining_expiry(None, 10_000_000), Ok(None));
        assert_eq!(remaining_expiry(Some(10), 999), Ok(None), "unchanged");
        assert_eq!(remaining_expiry(Some(10), 2_500), Ok(Some(8)));
        assert_eq!(remaining_expiry(Some(10), 10_000), Err(()));
        assert_eq!(remaining_expiry(Some(10), u64::MAX), Err(()));
    }
}
