//! A store that declines MQTT 5 features (as the embassy gateway's does): what its CONNACK
//! says, and what a client that uses a declined feature anyway gets, byte for byte, with the
//! events and counters. The server's limits allow everything ([`Limits::HOST`]): the store's
//! [`Declined`] and its alias capacity of 0 decide alone.

use super::v5_delivery::{V5, connack_properties, connect5, publish5, subscribe5};
use super::*;
use crate::server::Declined;

/// Everything a store may decline.
const ALL: u8 = Declined::SUBSCRIPTION_IDENTIFIERS
    .and(Declined::SHARED_SUBSCRIPTIONS)
    .and(Declined::REASON_STRINGS)
    .bits();

/// A connection whose store keeps no topic aliases and declines [`ALL`].
type Lean = Connection<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 2, 64, 0, ALL>>;

fn lean() -> Lean {
    Connection::new(
        ServerConfig::default(),
        FixedAckStore::new(),
        FixedSessionStore::new(),
        REMOTE,
        T0,
        1,
    )
}

/// The server's MQTT 5 DISCONNECT with `code` and no properties (no reason string).
fn bare_disconnect(code: u8) -> Vec<u8> {
    let bytes = [0xE0, 1, code];
    match codec::decode_with(&bytes, 1 << 20, Version::V5) {
        Ok(Some((Packet::Disconnect(d), 3))) => {
            assert_eq!((d.reason, d.properties.is_empty()), (code, true));
        }
        other => panic!("not the codec's DISCONNECT: {other:?}"),
    }
    bytes.to_vec()
}

/// The `disconnected` event of a client the engine closed with `code`.
fn closed_with(client: &V5<Lean>, code: u8) {
    let (kind, event) = client.out.events.last().expect("an event");
    assert_eq!(*kind, EventKind::Disconnected);
    assert_eq!(event["reason"], "protocol_error");
    assert_eq!(event["reason_code"], code);
    assert_eq!(client.out.counts, [Counter::ProtocolError]);
    assert!(client.conn.is_closed());
}

#[test]
fn the_connack_says_what_the_store_declines() {
    // A client that accepts topic aliases, and so could be sent some.
    let accepts = [Property::TopicAliasMaximum(10)];
    let (_, connack) = V5::connect(lean(), &connect5("c", &accepts));
    assert_eq!(
        connack_properties(&connack),
        [
            Property::MaximumPacketSize(1024 * 1024),
            Property::SubscriptionIdentifierAvailable(0),
            Property::SharedSubscriptionAvailable(0),
            // No Topic Alias Maximum: the client may send none.
            Property::ReceiveMaximum(1024),
        ]
    );
}

#[test]
fn a_subscription_identifier_closes_with_0xa1() {
    let (mut client, _) = V5::connect(lean(), &connect5("c", &[]));
    assert_eq!(
        client.send(&subscribe5(1, Some(7), &[("a/#", 1)])),
        bare_disconnect(0xA1)
    );
    closed_with(&client, 0xA1);
    assert!(
        client
            .out
            .routes
            .iter()
            .all(|r| !matches!(r, R::Subscribe(..)))
    );
}

#[test]
fn a_shared_filter_gets_0x9e() {
    let (mut client, _) = V5::connect(lean(), &connect5("c", &[]));
    assert_eq!(
        client.send(&subscribe5(1, None, &[("$share/g/a", 1), ("a", 1)])),
        [0x90, 5, 0, 1, 0, 0x9E, 1]
    );
    assert_eq!(client.out.counts, [Counter::SubscriptionRefused]);
    assert!(client.conn.is_connected());
    // Only `a` was subscribed: one `subscribed` event, for it.
    let subscribed: Vec<_> = client
        .out
        .events
        .iter()
        .filter(|(kind, _)| *kind == EventKind::Subscribed)
        .map(|(_, event)| event["topic"].clone())
        .collect();
    assert_eq!(subscribed, ["a"]);
}

#[test]
fn a_topic_alias_closes_with_0x94() {
    let (mut client, _) = V5::connect(lean(), &connect5("c", &[]));
    assert_eq!(
        client.send(&publish5("t", &[Property::TopicAlias(1)], b"x")),
        bare_disconnect(0x94)
    );
    closed_with(&client, 0x94);
    assert!(
        client
            .out
            .routes
            .iter()
            .all(|r| !matches!(r, R::Publish(..)))
    );
}

#[test]
fn deliveries_carry_no_topic_alias() {
    let accepts = [Property::TopicAliasMaximum(10)];
    let (mut client, _) = V5::connect(lean(), &connect5("c", &accepts));
    assert_eq!(
        client.send(&subscribe5(1, None, &[("a/#", 1)])),
        [0x90, 4, 0, 1, 0, 1]
    );
    // The same topic twice: a server that assigns aliases would leave it out the second time.
    for _ in 0..2 {
        let (topic, _, properties) = client.publish(Delivery::new("a/b", b"x", QoS::AtMostOnce));
        assert_eq!((topic.as_str(), properties.len()), ("a/b", 0));
    }
}

#[test]
fn refusals_carry_no_reason_string() {
    // A reserved client id: CONNACK 0x85 with no properties.
    let mut conn = lean();
    let mut out = Rec::default();
    let mut tx = [0u8; 1024];
    let p = conn.handle_input(T0, &connect5("broker", &[]), &mut tx, &mut out);
    assert_eq!(&tx[..p.written], [0x20, 3, 0, 0x85, 0]);
    assert!(conn.is_closed());
}
