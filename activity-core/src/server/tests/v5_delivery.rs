//! MQTT 5 on the delivery side, byte for byte: topic aliases both ways, the client's Receive
//! Maximum and Maximum Packet Size, message expiry, subscription identifiers and options,
//! shared subscriptions.

use super::*;

/// A store that keeps 4 topic aliases per direction.
type AliasConn = Connection<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 2, 64, 4>>;

/// A v5 connection under test, with a store of its choosing.
pub(super) struct V5<C> {
    pub(super) conn: C,
    pub(super) out: Rec,
    rx: Vec<u8>,
    now: u64,
}

/// Appends a 2-byte-length string.
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A packet with a remaining length below 128.
pub(super) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(body);
    out
}

/// An MQTT 5 CONNECT with these CONNECT properties.
pub(super) fn connect5(client_id: &str, properties: &[Property<'_>]) -> Vec<u8> {
    let mut props = [0u8; 64];
    let n = codec::encode_properties(properties, &mut props).unwrap();
    let mut body = Vec::new();
    push_str(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 30, u8::try_from(n).unwrap()]);
    body.extend_from_slice(&props[..n]);
    push_str(&mut body, client_id);
    frame(0x10, &body)
}

/// An MQTT 5 PUBLISH at QoS 0 with these properties.
pub(super) fn publish5(topic: &str, properties: &[Property<'_>], payload: &[u8]) -> Vec<u8> {
    let mut props = [0u8; 64];
    let n = codec::encode_properties(properties, &mut props).unwrap();
    let mut body = Vec::new();
    push_str(&mut body, topic);
    body.push(u8::try_from(n).unwrap());
    body.extend_from_slice(&props[..n]);
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

/// An MQTT 5 SUBSCRIBE of `filters` with their options bytes and a subscription identifier.
pub(super) fn subscribe5(pkid: u16, id: Option<u32>, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut props = [0u8; 8];
    let n = match id {
        Some(id) => {
            codec::encode_properties(&[Property::SubscriptionIdentifier(id)], &mut props).unwrap()
        }
        None => 0,
    };
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(u8::try_from(n).unwrap());
    body.extend_from_slice(&props[..n]);
    for (filter, options) in filters {
        push_str(&mut body, filter);
        body.push(*options);
    }
    frame(0x82, &body)
}

impl<A: AckStore, S: SessionStore> V5<Connection<A, S>> {
    /// Connects with `connect` (accepted); returns the CONNACK's properties as a list.
    pub(super) fn connect(conn: Connection<A, S>, connect: &[u8]) -> (Self, Vec<u8>) {
        let mut client = V5 {
            conn,
            out: Rec::default(),
            rx: Vec::new(),
            now: T0,
        };
        assert_eq!(client.send(connect), NOTHING);
        let mut tx = [0u8; 1024];
        let p = client.conn.handle_connect_answer(
            client.now,
            ConnectAnswer::accept(false),
            &client.rx,
            &mut tx,
            &mut client.out,
        );
        client.rx.drain(..p.consumed);
        assert!(client.conn.is_connected());
        client.out.routes.clear();
        client.out.events.clear();
        (client, tx[..p.written].to_vec())
    }

    pub(super) fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.rx.extend_from_slice(bytes);
        let mut tx = [0u8; 1024];
        let p = self
            .conn
            .handle_input(self.now, &self.rx, &mut tx, &mut self.out);
        self.rx.drain(..p.consumed);
        tx[..p.written].to_vec()
    }

    fn deliver(&mut self, delivery: Delivery<'_>) -> Result<Vec<u8>, DeliveryError> {
        let mut tx = [0u8; 1024];
        let d = self.conn.handle_delivery(delivery, &mut tx, |_| None)?;
        Ok(tx[..d.written].to_vec())
    }

    /// Delivers and decodes the PUBLISH: topic, retain flag, properties.
    pub(super) fn publish(&mut self, delivery: Delivery<'_>) -> (String, bool, Vec<String>) {
        let bytes = self.deliver(delivery).expect("delivered");
        let Ok(Some((Packet::Publish(p), _))) = codec::decode_with(&bytes, 1 << 20, Version::V5)
        else {
            panic!("not a PUBLISH: {bytes:02x?}")
        };
        let properties = p.properties.iter().map(|p| format!("{p:?}")).collect();
        (p.topic.to_owned(), p.retain, properties)
    }
}

fn alias_conn() -> AliasConn {
    Connection::new(
        ServerConfig::default(),
        FixedAckStore::new(),
        FixedSessionStore::new(),
        REMOTE,
        T0,
        1,
    )
}

fn plain_conn(config: ServerConfig) -> Conn {
    Connection::new(
        config,
        FixedAckStore::new(),
        FixedSessionStore::new(),
        REMOTE,
        T0,
        1,
    )
}

pub(super) fn connack_properties(connack: &[u8]) -> Vec<Property<'_>> {
    let Ok(Some((Packet::ConnAck(ack), _))) = codec::decode_with(connack, 1 << 20, Version::V5)
    else {
        panic!("not a CONNACK: {connack:02x?}")
    };
    ack.properties.iter().collect()
}

#[test]
fn the_connack_offers_topic_aliases_the_store_keeps_and_shared_subscriptions() {
    let (_, connack) = V5::connect(alias_conn(), &connect5("c", &[]));
    assert_eq!(
        connack_properties(&connack),
        [
            Property::MaximumPacketSize(1024 * 1024),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(1),
            // Limits::HOST says 32; the store keeps 4.
            Property::TopicAliasMaximum(4),
            // The limit of QoS 2 publishes awaiting PUBREL (Limits::max_inbound_qos2).
            Property::ReceiveMaximum(1024),
        ]
    );
    // A store without aliases: none offered.
    let (_, connack) = V5::connect(plain_conn(ServerConfig::default()), &connect5("c", &[]));
    assert!(
        !connack_properties(&connack)
            .iter()
            .any(|p| matches!(p, Property::TopicAliasMaximum(_)))
    );
}

#[test]
fn client_topic_aliases_are_set_used_and_checked() {
    let (mut client, _) = V5::connect(alias_conn(), &connect5("aliaser", &[]));
    // Set alias 1 to "a/b", then use it with an empty topic.
    assert_eq!(
        client.send(&publish5("a/b", &[Property::TopicAlias(1)], b"one")),
        NOTHING
    );
    assert_eq!(
        client.send(&publish5("", &[Property::TopicAlias(1)], b"two")),
        NOTHING
    );
    // Rebind it.
    client.send(&publish5("c", &[Property::TopicAlias(1)], b"three"));
    client.send(&publish5("", &[Property::TopicAlias(1)], b"four"));
    let routed: Vec<_> = client
        .out
        .routes
        .iter()
        .map(|r| match r {
            R::Publish(topic, payload, ..) => (topic.as_str(), payload.as_slice()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        routed,
        [
            ("a/b", &b"one"[..]),
            ("a/b", b"two"),
            ("c", b"three"),
            ("c", b"four")
        ]
    );
    // The `message` events carry the real topic.
    let topics: Vec<_> = client
        .out
        .events
        .iter()
        .map(|(_, v)| v["topic"].clone())
        .collect();
    assert_eq!(topics, [json!("a/b"), json!("a/b"), json!("c"), json!("c")]);

    // Above the maximum (4): DISCONNECT 0x94.
    let bytes = client.send(&publish5("x", &[Property::TopicAlias(5)], b""));
    assert_eq!(bytes, super::v5::disconnect5(0x94));
    assert!(client.conn.is_closed());

    // An alias never set: a protocol error (5.0 section 3.3.4), 0x82.
    let (mut client, _) = V5::connect(alias_conn(), &connect5("unknown", &[]));
    let bytes = client.send(&publish5("", &[Property::TopicAlias(2)], b""));
    assert_eq!(bytes, super::v5::disconnect5(0x82));
    assert!(
        client
            .out
            .routes
            .iter()
            .all(|r| !matches!(r, R::Publish(..)))
    );

    // A topic longer than the store keeps (32 bytes): 0x97, quota exceeded.
    let (mut client, _) = V5::connect(alias_conn(), &connect5("long", &[]));
    let long = "l".repeat(33);
    let bytes = client.send(&publish5(&long, &[Property::TopicAlias(1)], b""));
    assert_eq!(bytes, super::v5::disconnect5(0x97));
    assert_eq!(client.out.counts, [Counter::QuotaExceeded]);
}

#[test]
fn deliveries_get_topic_aliases_round_robin_when_the_client_accepts_them() {
    let (mut client, _) = V5::connect(
        alias_conn(),
        &connect5("receiver", &[Property::TopicAliasMaximum(2)]),
    );
    let mut seen = Vec::new();
    for topic in ["t1", "t1", "t2", "t2", "t3", "t1"] {
        let (sent, _, properties) = client.publish(Delivery::new(topic, b"x", QoS::AtMostOnce));
        seen.push((sent, properties.join(",")));
    }
    let expected = [
        ("t1", "TopicAlias(1)"),
        ("", "TopicAlias(1)"),
        ("t2", "TopicAlias(2)"),
        ("", "TopicAlias(2)"),
        // Both taken: alias 1 (assigned longest ago) now stands for t3 ...
        ("t3", "TopicAlias(1)"),
        // ... and t1 takes alias 2 back with its topic.
        ("t1", "TopicAlias(2)"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(seen, expected);
    // A client that announced none gets none.
    let (mut client, _) = V5::connect(alias_conn(), &connect5("plain", &[]));
    let (topic, _, properties) = client.publish(Delivery::new("t1", b"x", QoS::AtMostOnce));
    assert_eq!((topic.as_str(), properties.len()), ("t1", 0));
}

#[test]
fn the_clients_receive_maximum_bounds_deliveries_in_flight() {
    let (mut client, _) = V5::connect(
        plain_conn(ServerConfig::default()),
        &connect5("slow", &[Property::ReceiveMaximum(2)]),
    );
    let qos1 = |pkid| Delivery {
        pkid: Some(pkid),
        ..Delivery::new("t", b"x", QoS::AtLeastOnce)
    };
    client.deliver(qos1(1)).unwrap();
    assert!(client.conn.may_deliver());
    client.deliver(qos1(2)).unwrap();
    assert!(!client.conn.may_deliver());
    assert_eq!(client.deliver(qos1(3)), Err(DeliveryError::ReceiveMaximum));
    // QoS 0 is not bounded by it (5.0 section 4.9).
    client
        .deliver(Delivery::new("t", b"x", QoS::AtMostOnce))
        .unwrap();
    // A PUBACK frees one slot.
    client.send(&[0x40, 2, 0, 1]);
    assert!(client.conn.may_deliver());
    client.deliver(qos1(3)).unwrap();
    assert!(!client.conn.may_deliver());
    // QoS 2: the slot is held until PUBCOMP, not PUBREC.
    client.send(&[0x40, 2, 0, 2]);
    let qos2 = Delivery {
        pkid: Some(4),
        ..Delivery::new("t", b"x", QoS::ExactlyOnce)
    };
    client.deliver(qos2).unwrap();
    client.send(&[0x50, 2, 0, 4]);
    assert!(!client.conn.may_deliver());
    client.send(&[0x70, 2, 0, 4]);
    assert!(client.conn.may_deliver());
}

#[test]
fn a_delivery_over_the_clients_maximum_packet_size_is_dropped() {
    let (mut client, _) = V5::connect(
        plain_conn(ServerConfig::default()),
        &connect5("tiny", &[Property::MaximumPacketSize(16)]),
    );
    // 2 + 2 + 1 + 1 + 10 = 16 bytes: fits.
    client
        .deliver(Delivery::new("t", b"0123456789", QoS::AtMostOnce))
        .unwrap();
    assert_eq!(
        client.deliver(Delivery::new("t", b"0123456789a", QoS::AtMostOnce)),
        Err(DeliveryError::Dropped(Counter::DeliveryTooLarge))
    );
    // Nothing counted in flight for a dropped QoS 1 delivery.
    let big = Delivery {
        pkid: Some(1),
        ..Delivery::new("t", &[0; 64], QoS::AtLeastOnce)
    };
    assert!(client.deliver(big).is_err());
    assert_eq!(client.conn.flow.in_flight, 0);
}

#[test]
fn message_expiry_counts_down_by_the_time_waited_and_expired_messages_are_dropped() {
    let (mut client, _) = V5::connect(plain_conn(ServerConfig::default()), &connect5("e", &[]));
    let mut raw = [0u8; 8];
    let n = codec::encode_properties(&[Property::MessageExpiryInterval(10)], &mut raw).unwrap();
    let properties = Properties::parse(&raw[..n], Context::Publish).unwrap();
    let message = Delivery {
        properties,
        ..Delivery::new("t", b"x", QoS::AtMostOnce)
    };
    let (_, _, sent) = client.publish(message);
    assert_eq!(sent, ["MessageExpiryInterval(10)"]);
    let (_, _, sent) = client.publish(Delivery {
        waited_ms: 2_600,
        ..message
    });
    assert_eq!(sent, ["MessageExpiryInterval(8)"]);
    assert_eq!(
        client.deliver(Delivery {
            waited_ms: 10_000,
            ..message
        }),
        Err(DeliveryError::Dropped(Counter::DeliveryExpired))
    );
}

#[test]
fn subscription_identifiers_go_with_the_deliveries_of_their_subscriptions() {
    let (mut client, _) = V5::connect(plain_conn(ServerConfig::default()), &connect5("ids", &[]));
    let suback = client.send(&subscribe5(1, Some(7), &[("a/+", 1)]));
    assert_eq!(suback, [0x90, 4, 0, 1, 0, 1]);
    client.send(&subscribe5(2, Some(300), &[("a/#", 0)]));
    client.send(&subscribe5(3, None, &[("#", 0)]));
    // One delivery for all matching subscriptions: both identifiers.
    let (_, _, sent) = client.publish(Delivery::new("a/b", b"x", QoS::AtMostOnce));
    assert_eq!(
        sent,
        ["SubscriptionIdentifier(7)", "SubscriptionIdentifier(300)"]
    );
    // A router that delivers once per subscription names it: that one's identifier only.
    let (_, _, sent) = client.publish(Delivery {
        subscription: DeliveredFor::Filter("a/#"),
        ..Delivery::new("a/b", b"x", QoS::AtMostOnce)
    });
    assert_eq!(sent, ["SubscriptionIdentifier(300)"]);
    let (_, _, sent) = client.publish(Delivery {
        subscription: DeliveredFor::Filter("#"),
        ..Delivery::new("a/b", b"x", QoS::AtMostOnce)
    });
    assert!(sent.is_empty());
    // A router that names only the subscriptions with options or an identifier says when a
    // delivery is for another one: nothing of the others applies to it.
    let (_, _, sent) = client.publish(Delivery {
        subscription: DeliveredFor::Plain,
        ..Delivery::new("a/b", b"x", QoS::AtMostOnce)
    });
    assert!(sent.is_empty());
    // A publisher's own Subscription Identifier or Topic Alias never passes on.
    let mut raw = [0u8; 8];
    let n = codec::encode_properties(&[Property::TopicAlias(3)], &mut raw).unwrap();
    let (_, _, sent) = client.publish(Delivery {
        subscription: DeliveredFor::Filter("#"),
        properties: Properties::parse(&raw[..n], Context::Publish).unwrap(),
        ..Delivery::new("b", b"x", QoS::AtMostOnce)
    });
    assert!(sent.is_empty());
}

#[test]
fn no_local_retain_as_published_and_retain_handling_are_applied() {
    let (mut client, _) = V5::connect(plain_conn(ServerConfig::default()), &connect5("me", &[]));
    // No Local (bit 2) on "n/#"; Retain As Published (bit 3) on "r/#"; Retain Handling 2
    // (bits 4-5) on "h/#".
    client.send(&subscribe5(
        1,
        None,
        &[("n/#", 0x04), ("r/#", 0x08), ("h/#", 0x20)],
    ));
    // Only a publish the client's own No Local subscription matches needs its publisher
    // carried to the deliveries.
    client.send(&publish5("n/x", &[], b"x"));
    client.send(&publish5("r/x", &[], b"x"));
    assert_eq!(client.out.for_no_local, [true, false]);
    let mine = Delivery {
        publisher: Some("me"),
        ..Delivery::new("n/x", b"x", QoS::AtMostOnce)
    };
    assert_eq!(
        client.deliver(mine),
        Err(DeliveryError::Dropped(Counter::DeliveryNotWanted))
    );
    client
        .deliver(Delivery {
            publisher: Some("other"),
            ..mine
        })
        .unwrap();
    // Retain As Published keeps the publisher's flag; without it a live message has none.
    let live = Delivery {
        published_retain: true,
        ..Delivery::new("r/x", b"x", QoS::AtMostOnce)
    };
    assert!(client.publish(live).1);
    assert!(
        !client
            .publish(Delivery {
                topic: "h/x",
                ..live
            })
            .1
    );
    // Retain Handling 2: no retained message at the subscribe.
    let retained = Delivery {
        retain: true,
        ..Delivery::new("h/x", b"x", QoS::AtMostOnce)
    };
    assert_eq!(
        client.deliver(retained),
        Err(DeliveryError::Dropped(Counter::DeliveryNotWanted))
    );
    assert!(
        client
            .publish(Delivery {
                topic: "r/x",
                ..retained
            })
            .1
    );
}

#[test]
fn shared_subscriptions_are_served_or_refused_with_0x9e() {
    let (mut client, _) = V5::connect(plain_conn(ServerConfig::default()), &connect5("s", &[]));
    assert_eq!(
        client.send(&subscribe5(1, None, &[("$share/g/a/#", 1)])),
        [0x90, 4, 0, 1, 0, 1]
    );
    assert_eq!(
        client.out.routes,
        [R::Subscribe("$share/g/a/#".into(), QoS::AtLeastOnce)]
    );
    // Its deliveries are matched on the shared filter.
    let (_, _, _) = client.publish(Delivery::new("a/b", b"x", QoS::AtMostOnce));
    // No Local on a shared subscription is a protocol error (5.0 section 3.8.3.1).
    assert_eq!(
        client.send(&subscribe5(2, None, &[("$share/g/b", 0x04)])),
        super::v5::disconnect5(0x82)
    );

    let config = ServerConfig {
        limits: Limits {
            shared_subscriptions: false,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let (mut client, connack) = V5::connect(plain_conn(config), &connect5("s", &[]));
    assert!(connack_properties(&connack).contains(&Property::SharedSubscriptionAvailable(0)));
    assert_eq!(
        client.send(&subscribe5(1, None, &[("$share/g/a/#", 1), ("a/#", 1)])),
        [0x90, 5, 0, 1, 0, 0x9E, 1]
    );
    assert_eq!(client.out.counts, [Counter::SubscriptionRefused]);
}

#[test]
fn a_kept_session_may_be_denied_shared_subscriptions() {
    let config = ServerConfig {
        limits: Limits {
            shared_subscriptions_in_kept_sessions: false,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let kept = [Property::SessionExpiryInterval(60)];
    let (mut client, connack) = V5::connect(plain_conn(config.clone()), &connect5("k", &kept));
    assert!(connack_properties(&connack).contains(&Property::SharedSubscriptionAvailable(0)));
    assert_eq!(
        client.send(&subscribe5(1, None, &[("$share/g/a", 1), ("a", 1)])),
        [0x90, 5, 0, 1, 0, 0x9E, 1]
    );
    // A session that ends with its connection keeps them.
    let (mut client, connack) = V5::connect(plain_conn(config), &connect5("c", &[]));
    assert!(connack_properties(&connack).contains(&Property::SharedSubscriptionAvailable(1)));
    assert_eq!(
        client.send(&subscribe5(1, None, &[("$share/g/a", 1)])),
        [0x90, 4, 0, 1, 0, 1]
    );
}
