//! The gateway on one embassy-net stack, raw MQTT clients on another, in one process.

mod common;

use activity_core::QoS;
use activity_core::codec::{LastWill, Packet, Unsubscribe, UnsubscribeFilters};
use adapter_embassy::Config;
use embassy_net::Stack;
use embassy_time::{Duration, Timer};
use serde_json::json;

use common::*;

fn config() -> Config<'static> {
    Config {
        system_subscribers: &["monitor"],
        ..Config::new("gw-test")
    }
}

/// A monitor subscribed to every event; its own `subscribed` event already consumed.
async fn monitor(stack: Stack<'static>) -> RawClient {
    let mut monitor = RawClient::connected(stack, GATEWAY, "monitor").await;
    assert_eq!(monitor.subscribe(1, "SYSTEM/#", QoS::AtLeastOnce).await, 1);
    let own = monitor.event("subscription/subscribed").await;
    assert_eq!(own["client_id"], "monitor");
    monitor
}

#[test]
fn all_six_events_field_by_field() {
    gateway_test::<4, _, _>(config(), |stack, handle| async move {
        let mut monitor = monitor(stack).await;

        // connected
        let mut dev1 = RawClient::open(stack, GATEWAY).await;
        let ack = dev1
            .connect_with(activity_core::codec::Connect {
                username: Some("alice"),
                password: Some(b"secret"),
                keep_alive: 30,
                ..connect("dev-1")
            })
            .await;
        assert_eq!(ack, (false, 0));
        let connected = monitor.event("presence/connected").await;
        let connected_at = assert_ts(&connected);
        let peer = connected["peer"].as_str().expect("peer").to_owned();
        assert!(peer.starts_with("10.0.0.2:"), "{peer}");
        assert_eq!(
            connected,
            json!({"client_id": "dev-1", "username": "alice", "proto_ver": 4, "keepalive": 30,
                   "clean_session": true, "peer": peer, "ts": connected_at, "node": "gw-test"})
        );

        // subscribed (QoS 2 asked, QoS 1 granted)
        assert_eq!(
            dev1.subscribe(7, "sensors/+/temp", QoS::ExactlyOnce).await,
            1
        );
        let subscribed = monitor.event("subscription/subscribed").await;
        let ts = assert_ts(&subscribed);
        assert_eq!(
            subscribed,
            json!({"client_id": "dev-1", "topic": "sensors/+/temp", "qos": 1, "ts": ts, "node": "gw-test"})
        );

        // message, with an envelope so that the delivery is tracked for msgack
        let mut dev2 = RawClient::connected(stack, GATEWAY, "dev-2").await;
        let _ = monitor.event("presence/connected").await;
        let payload = br#"{"product_id":"p1","message_id":42,"value":21.5}"#;
        dev2.publish("sensors/kitchen/temp", payload, QoS::AtLeastOnce, Some(5))
            .await;
        assert_eq!(dev2.recv().await, Received::PubAck(5));
        let delivered = dev1.recv().await;
        let Received::Publish {
            topic,
            payload: got,
            qos,
            pkid,
            retain,
        } = delivered
        else {
            panic!("expected a delivery, got {delivered:?}");
        };
        assert_eq!(
            (topic.as_str(), got.as_slice(), qos, retain),
            (
                "sensors/kitchen/temp",
                &payload[..],
                QoS::AtLeastOnce,
                false
            )
        );
        let message = monitor.event("message").await;
        let ts = assert_ts(&message);
        assert_eq!(
            message,
            json!({"pub_client_id": "dev-2", "topic": "sensors/kitchen/temp",
                   "payload": std::str::from_utf8(payload).unwrap(), "payload_len": payload.len(),
                   "qos": 1, "retain": false, "ts": ts, "node": "gw-test"})
        );

        // msgack: dev-1 acknowledges the envelope delivery
        dev1.send(Packet::PubAck(activity_core::codec::Ack::new(
            pkid.unwrap(),
        )))
        .await;
        let msgack = monitor.event("msgack").await;
        let ts = assert_ts(&msgack);
        assert_eq!(
            msgack,
            json!({"pub_client_id": "dev-2", "ack_client_id": "dev-1", "product_id": "p1",
                   "message_id": 42, "topic": "sensors/kitchen/temp", "qos": 1, "ts": ts,
                   "node": "gw-test"})
        );

        // unsubscribed (UNSUBACK always, event only for a filter that was held)
        let filters = ["sensors/+/temp", "never/subscribed"];
        dev1.send(Packet::Unsubscribe(Unsubscribe {
            properties: activity_core::codec::Properties::EMPTY,
            pkid: 8,
            filters: UnsubscribeFilters::from_slice(&filters),
        }))
        .await;
        assert_eq!(dev1.recv().await, Received::UnsubAck(8));
        let unsubscribed = monitor.event("subscription/unsubscribed").await;
        let ts = assert_ts(&unsubscribed);
        assert_eq!(
            unsubscribed,
            json!({"client_id": "dev-1", "topic": "sensors/+/temp", "ts": ts, "node": "gw-test"})
        );

        // disconnected, normal
        dev1.send(Packet::Disconnect(activity_core::codec::Disconnect::NORMAL))
            .await;
        dev1.expect_closed().await;
        let disconnected = monitor.event("presence/disconnected").await;
        let ts = assert_ts(&disconnected);
        assert_eq!(
            disconnected,
            json!({"client_id": "dev-1", "reason": "normal", "connected_at": connected_at,
                   "ts": ts, "node": "gw-test"})
        );

        // disconnected, tcp_closed (no DISCONNECT)
        dev2.close().await;
        let disconnected = monitor.event("presence/disconnected").await;
        assert_eq!(disconnected["client_id"], "dev-2");
        assert_eq!(disconnected["reason"], "tcp_closed");
        assert_eq!(handle.stats().clients_connected, 3);
    });
}

#[test]
fn connect_refusals_and_persistent_sessions() {
    gateway_test::<4, _, _>(config(), |stack, handle| async move {
        // The reserved id: CONNACK 2, then closed.
        let mut client = RawClient::open(stack, GATEWAY).await;
        assert_eq!(client.connect_with(connect("broker")).await, (false, 2));
        client.expect_closed().await;

        // Protocol level 3: CONNACK 1.
        let mut client = RawClient::open(stack, GATEWAY).await;
        let old = activity_core::codec::Connect {
            protocol_level: 3,
            ..connect("old")
        };
        assert_eq!(client.connect_with(old).await, (false, 1));
        client.expect_closed().await;

        // A persistent session is accepted as a clean one: session_present = 0.
        let mut monitor = monitor(stack).await;
        let mut client = RawClient::open(stack, GATEWAY).await;
        let persistent = activity_core::codec::Connect {
            clean_session: false,
            ..connect("keeper")
        };
        assert_eq!(client.connect_with(persistent).await, (false, 0));
        let connected = monitor.event("presence/connected").await;
        assert_eq!(connected["clean_session"], false);

        // A will on a system topic: CONNACK 5.
        let mut bad = RawClient::open(stack, GATEWAY).await;
        let will = LastWill {
            properties: activity_core::codec::Properties::EMPTY,
            topic: "SYSTEM/message",
            message: b"x",
            qos: QoS::AtMostOnce,
            retain: false,
        };
        assert_eq!(
            bad.connect_with(connect_with_will("sneaky", will, 60))
                .await,
            (false, 5)
        );
        bad.expect_closed().await;

        // A packet before CONNECT closes the connection.
        let mut early = RawClient::open(stack, GATEWAY).await;
        early.send(Packet::PingReq).await;
        early.expect_closed().await;

        let stats = handle.stats();
        assert_eq!(stats.refused_other, 3);
        assert_eq!(stats.protocol_errors, 1);
    });
}

#[test]
fn system_topics_are_guarded() {
    gateway_test::<4, _, _>(config(), |stack, handle| async move {
        let mut monitor = monitor(stack).await;
        let mut dev = RawClient::connected(stack, GATEWAY, "dev").await;
        let _ = monitor.event("presence/connected").await;
        // Not on the allow list: no events, not even through `#`.
        assert_eq!(dev.subscribe(1, "SYSTEM/#", QoS::AtMostOnce).await, 0x80);
        assert_eq!(dev.subscribe(2, "#", QoS::AtMostOnce).await, 0x80);
        assert_eq!(dev.subscribe(3, "devices/#", QoS::AtMostOnce).await, 0);
        let subscribed = monitor.event("subscription/subscribed").await;
        assert_eq!(subscribed["topic"], "devices/#");
        // Publishing on a system topic is dropped (and acknowledged).
        dev.publish("SYSTEM/message", b"{}", QoS::AtLeastOnce, Some(9))
            .await;
        assert_eq!(dev.recv().await, Received::PubAck(9));
        // The next thing the monitor sees is the next real event, not the forged one.
        dev.publish("devices/x", b"ok", QoS::AtMostOnce, None).await;
        assert_eq!(
            dev.recv().await,
            Received::Publish {
                topic: "devices/x".into(),
                payload: b"ok".to_vec(),
                qos: QoS::AtMostOnce,
                pkid: None,
                retain: false
            }
        );
        let message = monitor.event("message").await;
        assert_eq!(message["topic"], "devices/x");
        let stats = handle.stats();
        assert_eq!(stats.publishes_denied, 1);
        assert_eq!(stats.subscriptions_refused, 2);
    });
}

#[test]
fn qos2_publish_is_acknowledged_and_delivered_at_qos1() {
    gateway_test::<4, _, _>(config(), |stack, _| async move {
        let mut sub = RawClient::connected(stack, GATEWAY, "sub").await;
        assert_eq!(sub.subscribe(1, "q/#", QoS::ExactlyOnce).await, 1);
        let mut publisher = RawClient::connected(stack, GATEWAY, "pub").await;
        publisher
            .publish("q/2", b"once", QoS::ExactlyOnce, Some(77))
            .await;
        assert_eq!(publisher.recv().await, Received::PubRec(77));
        // A resent PUBLISH before PUBREL is not delivered twice.
        publisher
            .send(Packet::Publish(activity_core::codec::Publish {
                properties: activity_core::codec::Properties::EMPTY,
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "q/2",
                pkid: Some(77),
                payload: b"once",
            }))
            .await;
        assert_eq!(publisher.recv().await, Received::PubRec(77));
        publisher
            .send(Packet::PubRel(activity_core::codec::Ack::new(77)))
            .await;
        assert_eq!(publisher.recv().await, Received::PubComp(77));
        match sub.recv().await {
            Received::Publish { topic, qos, .. } => {
                assert_eq!((topic.as_str(), qos), ("q/2", QoS::AtLeastOnce))
            }
            other => panic!("{other:?}"),
        }
        // QoS 0 publish to a QoS 1 subscription arrives at QoS 0; PINGREQ is answered.
        publisher.publish("q/0", b"x", QoS::AtMostOnce, None).await;
        match sub.recv().await {
            Received::Publish {
                topic, qos, pkid, ..
            } => assert_eq!((topic.as_str(), qos, pkid), ("q/0", QoS::AtMostOnce, None)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            sub.try_recv(Duration::from_millis(200)).await,
            None::<Received>.or(None)
        );
        sub.send(Packet::PingReq).await;
        assert_eq!(sub.recv().await, Received::PingResp);
    });
}

#[test]
fn keepalive_expiry_publishes_the_will() {
    gateway_test::<4, _, _>(config(), |stack, _| async move {
        let mut monitor = monitor(stack).await;
        let mut watcher = RawClient::connected(stack, GATEWAY, "watcher").await;
        let _ = monitor.event("presence/connected").await;
        assert_eq!(watcher.subscribe(1, "status/#", QoS::AtLeastOnce).await, 1);
        let _ = monitor.event("subscription/subscribed").await;

        let mut sleepy = RawClient::open(stack, GATEWAY).await;
        let will = LastWill {
            properties: activity_core::codec::Properties::EMPTY,
            topic: "status/sleepy",
            message: b"gone",
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        assert_eq!(
            sleepy
                .connect_with(connect_with_will("sleepy", will, 1))
                .await,
            (false, 0)
        );
        let connected = monitor.event("presence/connected").await;
        let started = std::time::Instant::now();
        // Silent for 1.5 x 1 s: closed as keepalive_timeout, and the will goes out as a
        // publish of the client, with its `message` event (RETAIN as asked), before the
        // `disconnected` event.
        let message = monitor.event("message").await;
        let waited = started.elapsed();
        let ts = assert_ts(&message);
        assert_eq!(
            message,
            json!({"pub_client_id": "sleepy", "topic": "status/sleepy", "payload": "gone",
                   "payload_len": 4, "qos": 1, "retain": true, "ts": ts, "node": "gw-test"})
        );
        let disconnected = monitor.event("presence/disconnected").await;
        assert!(
            waited >= std::time::Duration::from_millis(1300),
            "{waited:?}"
        );
        assert_eq!(disconnected["client_id"], "sleepy");
        assert_eq!(disconnected["reason"], "keepalive_timeout");
        assert_eq!(disconnected["connected_at"], connected["ts"]);
        match watcher.recv().await {
            Received::Publish {
                topic,
                payload,
                qos,
                ..
            } => {
                assert_eq!(
                    (topic.as_str(), payload.as_slice(), qos),
                    ("status/sleepy", &b"gone"[..], QoS::AtLeastOnce)
                );
            }
            other => panic!("{other:?}"),
        }
        sleepy.expect_closed().await;
    });
}

#[test]
fn takeover_closes_the_older_connection() {
    gateway_test::<4, _, _>(config(), |stack, _| async move {
        let mut monitor = monitor(stack).await;
        let first = RawClient::connected(stack, GATEWAY, "twin").await;
        let _ = monitor.event("presence/connected").await;
        let _second = RawClient::connected(stack, GATEWAY, "twin").await;
        let disconnected = monitor.event("presence/disconnected").await;
        assert_eq!(disconnected["reason"], "takenover");
        let connected = monitor.event("presence/connected").await;
        assert_eq!(connected["client_id"], "twin");
        first.expect_closed().await;
    });
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

#[test]
fn oversized_packets_close_the_connection() {
    gateway_test::<2, _, _>(config(), |stack, handle| async move {
        let mut client = RawClient::connected(stack, GATEWAY, "big").await;
        let payload = vec![b'x'; 2000];
        client
            .publish("big/topic", &payload, QoS::AtMostOnce, None)
            .await;
        client.expect_closed().await;
        assert_eq!(handle.stats().packets_too_large, 1);
    });
}
