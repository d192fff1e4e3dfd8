//! Topic aliases from the client (MQTT 5.0 section 3.3.2.3.4): the CONNACK offers
//! [`Limits::topic_alias_maximum`] of them (capped by what the store keeps); a PUBLISH with a
//! topic and an alias sets the alias, a PUBLISH with an empty topic and an alias uses it.
//!
//! An alias of 0 or above the maximum closes the connection with 0x94 (topic alias invalid);
//! an empty topic with an alias never set is a protocol error (0x82, section 3.3.4); a topic
//! the store cannot keep (longer than a fixed store's filters) closes with 0x97 (quota
//! exceeded). In a relay the maximum is the upstream's, which the client got in the upstream's
//! CONNACK: the engine tracks up to its own maximum to know the real topic, and closes a
//! client that goes past it the same way.

use crate::codec::Publish;

use super::{AliasDirection, CloseCause, Limits, SessionStore};

/// The Topic Alias Maximum the CONNACK announces.
pub(super) fn inbound_maximum(limits: &Limits, store: &impl SessionStore) -> u16 {
    let capacity = u16::try_from(store.alias_capacity()).unwrap_or(u16::MAX);
    limits.topic_alias_maximum.min(capacity)
}

/// Checks the alias of a client's `publish` and keeps a new mapping; the cause to close with
/// when it is not acceptable.
pub(super) fn learn(
    store: &mut impl SessionStore,
    maximum: u16,
    publish: &Publish<'_>,
) -> Result<(), CloseCause> {
    let Some(alias) = publish.properties.topic_alias() else {
        return Ok(());
    };
    if alias == 0 || alias > maximum {
        return Err(CloseCause::TopicAliasInvalid);
    }
    if publish.topic.is_empty() {
        return match store.alias_topic(AliasDirection::FromClient, alias) {
            Some(_) => Ok(()),
            None => Err(CloseCause::ProtocolError),
        };
    }
    store
        .set_alias(AliasDirection::FromClient, alias, publish.topic)
        .map_err(|_| CloseCause::QuotaExceeded)
}

/// The topic a client's `publish` is about: its own, or the one its alias stands for
/// (empty only for an alias [`learn`] refused).
pub(super) fn topic_of<'a>(store: &'a impl SessionStore, publish: &Publish<'a>) -> &'a str {
    topic_in(store, AliasDirection::FromClient, publish)
}

/// The topic of a PUBLISH whose alias belongs to `direction`.
pub(super) fn topic_in<'a>(
    store: &'a impl SessionStore,
    direction: AliasDirection,
    publish: &Publish<'a>,
) -> &'a str {
    // A store that keeps no aliases knows none (`learn` refused every one).
    if !publish.topic.is_empty() || store.alias_capacity() == 0 {
        return publish.topic;
    }
    publish
        .properties
        .topic_alias()
        .and_then(|alias| store.alias_topic(direction, alias))
        .unwrap_or("")
}
