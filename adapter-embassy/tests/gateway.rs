//! The gateway on one embassy-net stack, raw MQTT clients on another, in one process: what
//! is the gateway's own, its client slots, its store limits and the MQTT 5 it leaves out. The MQTT behaviour it shares with the broker and the
//! tap (events, refusals, system topics, QoS flows, keep-alive, wills, takeover, limits) is
//! held to it by the conformance suite, `tests/tests/conformance.rs`, over a TAP device.

mod common;

use activity_core::QoS;
use activity_core::codec::{
    self, Connect, Context, LastWill, Packet, Properties, Property, Publish, Subscribe,
    SubscribeFilters, Version,
};
use activity_core::server::Declined;
use adapter_embassy::{Config, GatewayResources, SlotStores, V5_DECLINED};
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, Timer};

use common::*;

fn config() -> Config<'static> {
    Config {
        system_subscribers: &["monitor"],
        ..Config::new("gw-test")
    }
}

#[test]
fn busy_slots_refuse_with_connack_3() {
    gateway_test::<2, _, _>(config(), |stack, handle| async move {
        let one = RawClient::connected(stack, GATEWAY, "one").await;
        let _two = RawClient::connected(stack, GATEWAY, "two").await;
        let mut three = RawClient::open(stack, GATEWAY).await;
        assert_eq!(three.connect_with(connect("three")).await, (false, 3));
        three.expect_closed().await;
        assert_eq!(handle.stats().refused_no_slot, 1);
        // A freed slot serves again, once it listens again: until then the refuser answers.
        one.close().await;
        let deadline = embassy_time::Instant::now() + Duration::from_secs(10);
        let _four = loop {
            let mut four = RawClient::open(stack, GATEWAY).await;
            if four.connect_with(connect("four")).await == (false, 0) {
                break four;
            }
            four.expect_closed().await;
            assert!(
                embassy_time::Instant::now() < deadline,
                "the freed slot did not serve again within 10 s"
            );
            Timer::after(Duration::from_millis(20)).await;
        };
    });
}

/// The engine stores the firmware chooses bound what a client keeps, and each refusal is
/// counted: here 2 subscriptions of filters up to 16 bytes and wills up to 32 bytes.
#[test]
fn chosen_store_limits_refuse_and_count() {
    type Small = SlotStores<2, 64, 16, 32>;
    let resources = Box::leak(Box::new(
        GatewayResources::<2, 1024, 1024, 2, 1024, Small>::new(),
    ));
    gateway_test_in(resources, config(), |stack, handle| async move {
        // A will of 33 bytes (topic 8, message 25): CONNACK 3.
        let will = LastWill {
            topic: "will/abc",
            message: b"0123456789012345678901234",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::EMPTY,
        };
        let mut big_will = RawClient::open(stack, GATEWAY).await;
        let answer = big_will
            .connect_with(connect_with_will("big-will", will, 60))
            .await;
        assert_eq!(answer, (false, 3));
        big_will.expect_closed().await;
        assert_eq!(handle.stats().refused_no_buffer, 1);
        // One byte less fits.
        let will = LastWill {
            message: b"012345678901234567890123",
            ..will
        };
        let mut client = RawClient::open(stack, GATEWAY).await;
        let answer = client
            .connect_with(connect_with_will("small-will", will, 60))
            .await;
        assert_eq!(answer, (false, 0));
        // A filter of 17 bytes is refused, one of 16 is kept; a third filter finds no room.
        assert_eq!(
            client
                .subscribe(1, "sensors/abcdefgh", QoS::AtLeastOnce)
                .await,
            1
        );
        assert_eq!(
            client
                .subscribe(2, "sensors/abcdefghi", QoS::AtLeastOnce)
                .await,
            0x80
        );
        assert_eq!(client.subscribe(3, "a/#", QoS::AtMostOnce).await, 0);
        assert_eq!(client.subscribe(4, "b/#", QoS::AtMostOnce).await, 0x80);
        assert_eq!(handle.stats().subscriptions_refused, 2);
        // Three QoS 1 envelopes delivered and not yet acknowledged: the third finds the two
        // `msgack` entries taken, the oldest is forgotten, and that is counted.
        let mut publisher = RawClient::connected(stack, GATEWAY, "publisher").await;
        for (pkid, message_id) in [(1, 1), (2, 2), (3, 3)] {
            let payload = format!(r#"{{"product_id":"p","message_id":{message_id}}}"#);
            publisher
                .publish(
                    "sensors/abcdefgh",
                    payload.as_bytes(),
                    QoS::AtLeastOnce,
                    Some(pkid),
                )
                .await;
        }
        for _ in 0..3 {
            match client.recv().await {
                Received::Publish { qos, .. } => assert_eq!(qos, QoS::AtLeastOnce),
                other => panic!("expected a delivery, got {other:?}"),
            }
        }
        assert_eq!(handle.stats().deliveries_evicted, 1);
        publisher.close().await;
        client.close().await;
    });
}

/// One MQTT 5 packet from `bytes`.
fn decode5(bytes: &[u8]) -> Packet<'_> {
    match codec::decode_with(bytes, 1 << 20, Version::V5) {
        Ok(Some((packet, n))) if n == bytes.len() => packet,
        other => panic!("not one MQTT 5 packet: {other:?}"),
    }
}

/// A property block of `properties` for `context`, in `raw`.
fn properties<'a>(list: &[Property<'_>], context: Context, raw: &'a mut [u8]) -> Properties<'a> {
    let n = codec::encode_properties(list, raw).unwrap();
    Properties::parse(&raw[..n], context).unwrap()
}

/// An MQTT 5 client, connected; the properties of its CONNACK.
async fn connected5(stack: embassy_net::Stack<'static>, id: &str) -> (RawClient, Vec<String>) {
    let mut client = RawClient::open(stack, GATEWAY).await;
    client
        .send5(Packet::Connect(Connect {
            protocol_level: 5,
            ..connect(id)
        }))
        .await;
    let connack = client.recv5().await;
    let Packet::ConnAck(ack) = decode5(&connack) else {
        panic!("not a CONNACK: {connack:02x?}")
    };
    assert_eq!(ack.code, 0);
    let properties = ack.properties.iter().map(|p| format!("{p:?}")).collect();
    (client, properties)
}

/// The gateway speaks MQTT 5 without what it leaves out for its flash (`V5_DECLINED`, and
/// topic aliases: its stores keep none). Its CONNACK says so, and a client that uses one
/// anyway gets the answer of the specification: SUBACK 0x9E for a `$share/` filter,
/// DISCONNECT 0xA1 for a subscription identifier, DISCONNECT 0x94 for a topic alias, each
/// without a reason string.
#[test]
fn mqtt5_clients_are_told_what_the_gateway_leaves_out() {
    assert!(
        V5_DECLINED.contains(
            Declined::SUBSCRIPTION_IDENTIFIERS
                .and(Declined::SHARED_SUBSCRIPTIONS)
                .and(Declined::REASON_STRINGS)
        )
    );
    gateway_test::<2, _, _>(config(), |stack, handle| async move {
        let (mut client, connack) = connected5(stack, "five").await;
        // QoS 1 at most, retained messages and wildcards served (Retain Available and
        // Wildcard Subscription Available absent: available), no Topic Alias Maximum.
        assert_eq!(
            connack,
            [
                "MaximumPacketSize(1024)",
                "SubscriptionIdentifierAvailable(0)",
                "SharedSubscriptionAvailable(0)",
                "MaximumQoS(1)",
                "ReceiveMaximum(4)",
            ]
        );
        let filters = [("$share/g/a", QoS::AtLeastOnce), ("a/#", QoS::AtLeastOnce)];
        client
            .send5(Packet::Subscribe(Subscribe {
                properties: Properties::EMPTY,
                pkid: 1,
                filters: SubscribeFilters::from_slice(&filters),
            }))
            .await;
        assert_eq!(client.recv5().await, [0x90, 5, 0, 1, 0, 0x9E, 1]);
        assert_eq!(handle.stats().subscriptions_refused, 1);

        let mut raw = [0u8; 8];
        let with_id = [Property::SubscriptionIdentifier(7)];
        client
            .send5(Packet::Subscribe(Subscribe {
                properties: properties(&with_id, Context::Subscribe, &mut raw),
                pkid: 2,
                filters: SubscribeFilters::from_slice(&filters[1..]),
            }))
            .await;
        assert_eq!(client.recv5().await, [0xE0, 1, 0xA1]);
        client.expect_closed().await;

        let (mut client, _) = connected5(stack, "alias").await;
        let alias = [Property::TopicAlias(1)];
        client
            .send5(Packet::Publish(Publish {
                properties: properties(&alias, Context::Publish, &mut raw),
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "a/b",
                pkid: None,
                payload: b"x",
            }))
            .await;
        assert_eq!(client.recv5().await, [0xE0, 1, 0x94]);
        client.expect_closed().await;
        assert_eq!(handle.stats().protocol_errors, 2);
    });
}

/// An MQTT 5 client subscribes to `filter` and reads its SUBACK (code 0).
async fn subscribe5(client: &mut RawClient, pkid: u16, filter: &str) {
    let filters = [(filter, QoS::AtMostOnce)];
    client
        .send5(Packet::Subscribe(Subscribe {
            properties: Properties::EMPTY,
            pkid,
            filters: SubscribeFilters::from_slice(&filters),
        }))
        .await;
    let [hi, lo] = pkid.to_be_bytes();
    assert_eq!(client.recv5().await, [0x90, 4, hi, lo, 0, 0]);
}

/// The next packet of an MQTT 5 client, a PUBLISH: its RETAIN flag, payload and properties.
async fn publish5(client: &mut RawClient) -> (bool, Vec<u8>, Vec<String>) {
    let bytes = client.recv5().await;
    let Packet::Publish(publish) = decode5(&bytes) else {
        panic!("not a PUBLISH: {bytes:02x?}")
    };
    let properties = publish
        .properties
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    (publish.retain, publish.payload.to_vec(), properties)
}

/// A retained message waits in the gateway's table: a subscriber gets its Message Expiry
/// Interval less the whole seconds it waited (MQTT 5.0 section 3.3.2.3.3, [MQTT-3.3.2-6]),
/// and once the interval has passed the message is removed and no subscriber gets it
/// (counted in `retained_dropped`). The table counts in whole seconds of the gateway's
/// clock, so a wait of `e` seconds counts as `floor(e)` or one more.
#[test]
fn retained_messages_count_their_expiry_down_and_expire() {
    use embassy_time::Instant;
    gateway_test::<4, _, _>(config(), |stack, handle| async move {
        let (mut publisher, _) = connected5(stack, "device").await;
        let mut raw = [0u8; 8];
        let expiry = [Property::MessageExpiryInterval(4)];
        let before_store = Instant::now();
        publisher
            .send5(Packet::Publish(Publish {
                properties: properties(&expiry, Context::Publish, &mut raw),
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "state/lamp",
                pkid: Some(1),
                payload: b"on",
            }))
            .await;
        assert_eq!(publisher.recv5().await, [0x40, 2, 0, 1]);
        // Stored by now: the gateway answers the PUBACK after routing the PUBLISH.
        let stored = Instant::now();

        // At once: the interval as published, or one second less across a tick of the clock.
        let (mut early, _) = connected5(stack, "early").await;
        subscribe5(&mut early, 1, "state/#").await;
        let (retain, payload, props) = publish5(&mut early).await;
        assert!(retain);
        assert_eq!(payload, b"on");
        let waited = (Instant::now() - before_store).as_secs();
        let early_left = expiry_left(&props);
        assert!(
            (4u64.saturating_sub(waited + 1)..=4).contains(&u64::from(early_left)),
            "{props:?} after {waited} s"
        );

        // Two seconds later (the expiry itself is what the test waits for): counted down.
        Timer::at(stored + Duration::from_secs(2)).await;
        let (mut late, _) = connected5(stack, "late").await;
        subscribe5(&mut late, 1, "state/#").await;
        let (retain, payload, props) = publish5(&mut late).await;
        assert!(retain);
        assert_eq!(payload, b"on");
        let waited = (Instant::now() - before_store).as_secs();
        let left = expiry_left(&props);
        // At least 2 s waited; at most `waited` whole seconds, counted as one more at most.
        assert!(
            (4u64.saturating_sub(waited + 1)..=2).contains(&u64::from(left)),
            "{props:?} after {waited} s"
        );
        assert_eq!(handle.stats().retained_dropped, 0);

        // Four seconds after the store the interval has passed: SUBACK, then no retained
        // message (the next packet is a live one), and the entry is gone (counted once).
        Timer::at(stored + Duration::from_secs(4)).await;
        let (mut after, _) = connected5(stack, "after").await;
        subscribe5(&mut after, 1, "state/#").await;
        assert_eq!(handle.stats().retained_dropped, 1);
        publisher.send5(live("state/lamp", b"live")).await;
        assert_eq!(
            publish5(&mut after).await,
            (false, b"live".to_vec(), vec![])
        );
        subscribe5(&mut after, 2, "state/lamp").await;
        publisher.send5(live("state/lamp", b"live 2")).await;
        assert_eq!(
            publish5(&mut after).await,
            (false, b"live 2".to_vec(), vec![])
        );
        assert_eq!(handle.stats().retained_dropped, 1);
        // Live deliveries do not wait: the early and late subscribers got them unchanged too.
        for client in [&mut early, &mut late] {
            for payload in [&b"live"[..], b"live 2"] {
                assert_eq!(publish5(client).await, (false, payload.to_vec(), vec![]));
            }
        }
    });
}

/// A subscriber whose queue has no room yet for every retained message its subscription asked
/// for (it reads slowly) waits for the rest; a new retained message on one of those topics,
/// delivered to it live meanwhile, is not sent to it a second time as that topic's retained
/// message. The others still come.
#[test]
fn a_retained_message_renewed_while_a_subscriber_waits_arrives_once() {
    // A queue of 200 bytes and a socket transmit buffer of 128: with the slow reader's 64, less
    // than the SUBACK and the first three 128-byte retained PUBLISHes.
    let resources = Box::leak(Box::new(GatewayResources::<2, 1024, 128, 4, 200>::new()));
    gateway_test_in(resources, config(), |stack, handle| async move {
        let mut publisher = RawClient::connected(stack, GATEWAY, "publisher").await;
        let old = [b'o'; 121];
        for (pkid, topic) in [(1, "r/a"), (2, "r/b"), (3, "r/c"), (4, "r/d")] {
            publisher.send(retained(topic, &old, pkid)).await;
            assert_eq!(publisher.recv().await, Received::PubAck(pkid));
        }
        // The subscriber takes 64 bytes and then reads nothing until told.
        let mut socket = TcpSocket::new(stack, leak([0u8; 64]), leak([0u8; 4096]));
        socket.connect(GATEWAY).await.expect("tcp connect");
        let mut slow = RawClient::from_socket(socket);
        assert_eq!(slow.connect_with(connect("slow")).await, (false, 0));
        let filters = [("r/#", QoS::AtMostOnce)];
        slow.send(Packet::Subscribe(Subscribe {
            properties: Properties::EMPTY,
            pkid: 1,
            filters: SubscribeFilters::from_slice(&filters),
        }))
        .await;
        // Its 64 bytes full: the gateway's socket and the slot's queue hold the SUBACK, r/a and
        // r/b (without room for r/c, as the sequence below shows); r/c and r/d wait.
        wait_until("the slow reader's buffer filling", || {
            slow.socket.recv_queue() == 64
        })
        .await;
        // r/c gets a new retained message, queued for the slow reader at once (routed before
        // the PUBACK).
        publisher.send(retained("r/c", b"new", 5)).await;
        assert_eq!(publisher.recv().await, Received::PubAck(5));
        assert_eq!(
            handle.stats().deliveries_dropped,
            0,
            "no room for the live r/c"
        );
        let received = |topic: &str, payload: &[u8], retain| Received::Publish {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: QoS::AtMostOnce,
            pkid: None,
            retain,
        };
        assert_eq!(
            slow.recv().await,
            Received::SubAck {
                pkid: 1,
                codes: vec![0]
            }
        );
        // The renewed one once, live; the untouched one as it was retained.
        for expected in [
            received("r/a", &old, true),
            received("r/b", &old, true),
            received("r/c", b"new", false),
            received("r/d", &old, true),
        ] {
            assert_eq!(slow.recv().await, expected);
        }
        publisher
            .publish("r/end", b"end", QoS::AtMostOnce, None)
            .await;
        assert_eq!(slow.recv().await, received("r/end", b"end", false));
    });
}

/// A client that subscribes and, read together with its SUBSCRIBE, publishes a new retained
/// message on a topic whose retained message the subscription asked for, gets its own message
/// once, live: not again from the retained entry it renewed.
#[test]
fn a_client_renewing_a_retained_message_it_waits_for_gets_it_once() {
    gateway_test::<2, _, _>(config(), |stack, _handle| async move {
        let mut publisher = RawClient::connected(stack, GATEWAY, "publisher").await;
        publisher.send(retained("r/x", b"old", 1)).await;
        assert_eq!(publisher.recv().await, Received::PubAck(1));
        let mut renewer = RawClient::connected(stack, GATEWAY, "renewer").await;
        let filters = [("r/#", QoS::AtMostOnce)];
        let subscribe = Packet::Subscribe(Subscribe {
            properties: Properties::EMPTY,
            pkid: 1,
            filters: SubscribeFilters::from_slice(&filters),
        });
        let renew = Packet::Publish(Publish {
            retain: true,
            ..match live("r/x", b"new") {
                Packet::Publish(publish) => publish,
                _ => unreachable!("live gives a PUBLISH"),
            }
        });
        // One write: the gateway reads both packets at once.
        let mut bytes = [0u8; 64];
        let n = subscribe.encode(&mut bytes).expect("SUBSCRIBE fits");
        let m = renew.encode(&mut bytes[n..]).expect("PUBLISH fits");
        renewer.send_raw(&bytes[..n + m]).await;
        let received = |topic: &str, payload: &[u8]| Received::Publish {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: QoS::AtMostOnce,
            pkid: None,
            retain: false,
        };
        assert_eq!(
            renewer.recv().await,
            Received::SubAck {
                pkid: 1,
                codes: vec![0]
            }
        );
        assert_eq!(renewer.recv().await, received("r/x", b"new"));
        publisher
            .publish("r/end", b"end", QoS::AtMostOnce, None)
            .await;
        assert_eq!(renewer.recv().await, received("r/end", b"end"));
    });
}

/// A retained QoS 1 PUBLISH without properties.
fn retained<'a>(topic: &'a str, payload: &'a [u8], pkid: u16) -> Packet<'a> {
    Packet::Publish(Publish {
        properties: Properties::EMPTY,
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic,
        pkid: Some(pkid),
        payload,
    })
}

/// A QoS 0 PUBLISH without properties, not retained.
fn live<'a>(topic: &'a str, payload: &'a [u8]) -> Packet<'a> {
    Packet::Publish(Publish {
        properties: Properties::EMPTY,
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic,
        pkid: None,
        payload,
    })
}

/// The Message Expiry Interval among printed properties (the only property expected).
fn expiry_left(properties: &[String]) -> u32 {
    match properties {
        [one] => one
            .strip_prefix("MessageExpiryInterval(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not an expiry interval: {one}")),
        other => panic!("expected one Message Expiry Interval, got {other:?}"),
    }
}
