//! End-to-end: the JSON events of connect, subscribe, unsubscribe and publish, seen by a
//! `SYSTEM/#` subscriber, with rumqttc clients, raw sockets and mosquitto_pub / mosquitto_sub.

use std::time::Duration;

use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;
use tests::{
    Client, Monitor, MosquittoSub, QUIET, RawClient, assert_fields, assert_loopback_peer,
    assert_ts_recent, connect_packet, mosquitto_pub, options, start_default_broker,
};

#[tokio::test]
async fn connect_and_disconnect_events_of_a_rumqttc_client() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let mut opts = options(addr, "sensor-1");
    opts.set_keep_alive(Duration::from_secs(17));
    opts.set_clean_session(false);
    let (client, connack) = Client::connect_with(opts).await.expect("connects");
    assert!(!connack.session_present, "a new session is not present");

    let connected = monitor.next_event("connected", "sensor-1").await;
    assert_fields(
        &connected,
        json!({"client_id": "sensor-1", "proto_ver": 4, "keepalive": 17, "clean_session": false}),
        &["peer", "ts"],
    );
    assert_loopback_peer(&connected);
    assert_ts_recent(&connected);
    assert_eq!(
        connected.qos,
        QoS::AtLeastOnce,
        "events are published at QoS 1"
    );

    client.disconnect().await;
    let disconnected = monitor.next_event("disconnected", "sensor-1").await;
    assert_fields(
        &disconnected,
        json!({"client_id": "sensor-1", "reason": "normal", "connected_at": connected.ts()}),
        &["ts"],
    );
    assert!(disconnected.ts() >= connected.ts());
    assert!(disconnected.index > connected.index);
    assert_eq!(broker.connected_clients(), 1, "only the monitor is left");
}

#[tokio::test]
async fn connected_event_reports_the_exact_peer_of_a_raw_client() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let (raw, connack) = RawClient::connect(addr, &connect_packet("raw-1", 42, 4)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    let connected = monitor.next_event("connected", "raw-1").await;
    assert_fields(
        &connected,
        json!({
            "client_id": "raw-1",
            "proto_ver": 4,
            "keepalive": 42,
            "clean_session": true,
            "peer": raw.local_addr().to_string(),
        }),
        &["ts"],
    );
    drop(raw);
    let disconnected = monitor.next_event("disconnected", "raw-1").await;
    assert_fields(
        &disconnected,
        json!({"client_id": "raw-1", "reason": "tcp_closed", "connected_at": connected.ts()}),
        &["ts"],
    );
}

#[tokio::test]
async fn mosquitto_pub_connects_publishes_and_disconnects() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let out = mosquitto_pub(
        addr,
        &[
            "-i", "mpub", "-k", "25", "-q", "1", "-t", "m/t", "-m", "hi there",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub failed: {out:?}");

    let connected = monitor.next_event("connected", "mpub").await;
    assert_fields(
        &connected,
        json!({"client_id": "mpub", "proto_ver": 4, "keepalive": 25, "clean_session": true}),
        &["peer", "ts"],
    );
    assert_loopback_peer(&connected);
    let message = monitor.next_event("message", "mpub").await;
    assert_fields(
        &message,
        json!({
            "pub_client_id": "mpub",
            "topic": "m/t",
            "payload": "hi there",
            "payload_len": 8,
            "qos": 1,
            "retain": false,
        }),
        &["ts"],
    );
    let disconnected = monitor.next_event("disconnected", "mpub").await;
    assert_fields(
        &disconnected,
        json!({"client_id": "mpub", "reason": "normal", "connected_at": connected.ts()}),
        &["ts"],
    );
    assert!(connected.index < message.index && message.index < disconnected.index);
}

#[tokio::test]
async fn one_subscribed_event_per_filter_with_the_granted_qos() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut client = Client::connect(addr, "subber").await;

    let codes = client
        .subscribe_many(&[
            ("a/0", QoS::AtMostOnce),
            ("a/1", QoS::AtLeastOnce),
            ("a/+/2", QoS::ExactlyOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
        ]
    );
    let mut last = None;
    for (topic, qos) in [("a/0", 0), ("a/1", 1), ("a/+/2", 2)] {
        let ev = monitor.next_event("subscribed", "subber").await;
        assert_fields(
            &ev,
            json!({"client_id": "subber", "topic": topic, "qos": qos}),
            &["ts"],
        );
        assert_ts_recent(&ev);
        assert!(last < Some(ev.index), "in filter order");
        last = Some(ev.index);
    }
    // Exactly three: nothing else about `subber` follows a later marker.
    client
        .publish("marker/sub", QoS::AtLeastOnce, false, b"x")
        .await;
    monitor.next_event("message", "subber").await;
    monitor
        .assert_none("a fourth subscribed", QUIET, |e| {
            e.is("subscribed", "subber")
        })
        .await;
}

#[tokio::test]
async fn mosquitto_sub_subscriptions_are_reported() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut sub = MosquittoSub::spawn(
        addr,
        &["-i", "msub", "-q", "1", "-t", "x/1", "-t", "x/#", "-v"],
    );
    for topic in ["x/1", "x/#"] {
        let ev = monitor.next_event("subscribed", "msub").await;
        assert_fields(
            &ev,
            json!({"client_id": "msub", "topic": topic, "qos": 1}),
            &["ts"],
        );
    }
    // Matching two filters, rumqttd's router may deliver once per filter; at least one comes.
    let mut publisher = Client::connect(addr, "pub-x").await;
    publisher
        .publish("x/1", QoS::AtLeastOnce, false, b"v1")
        .await;
    assert_eq!(sub.next_line().await, "x/1 v1");
    sub.kill().await;
}

#[tokio::test]
async fn unsubscribe_reports_the_filter_and_unsuback_comes_for_unknown_filters() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut client = Client::connect(addr, "unsubber").await;
    client.subscribe("u/1", QoS::AtLeastOnce).await;
    monitor.next_event("subscribed", "unsubber").await;

    client.unsubscribe("u/1").await;
    let ev = monitor.next_event("unsubscribed", "unsubber").await;
    assert_fields(
        &ev,
        json!({"client_id": "unsubber", "topic": "u/1"}),
        &["ts"],
    );
    assert_ts_recent(&ev);

    // A filter never subscribed: the UNSUBACK still arrives (the helper waits for it) ...
    client.unsubscribe("never/subscribed").await;
    // ... and no event reports it.
    client
        .publish("marker/unsub", QoS::AtLeastOnce, false, b"m")
        .await;
    monitor.next_event("message", "unsubber").await;
    monitor
        .assert_none("unsubscribed of a filter never subscribed", QUIET, |e| {
            e.is("unsubscribed", "unsubber")
        })
        .await;

    // After unsubscribing, nothing is delivered on the filter.
    let mut publisher = Client::connect(addr, "pub-u").await;
    publisher
        .publish("u/1", QoS::AtLeastOnce, false, b"late")
        .await;
    monitor.next_event("message", "pub-u").await;
    assert!(client.try_next_publish(QUIET).await.is_none());
}

#[tokio::test]
async fn message_events_carry_the_qos_of_each_publish() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut subscriber = Client::connect(addr, "reader").await;
    subscriber.subscribe("q/#", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(addr, "writer").await;

    for (qos, n) in [
        (QoS::AtMostOnce, 0),
        (QoS::AtLeastOnce, 1),
        (QoS::ExactlyOnce, 2),
    ] {
        let topic = format!("q/{n}");
        let payload = format!("payload at qos {n}");
        publisher
            .publish(&topic, qos, false, payload.as_bytes())
            .await;
        let ev = monitor.next_event("message", "writer").await;
        assert_fields(
            &ev,
            json!({
                "pub_client_id": "writer",
                "topic": topic,
                "payload": payload,
                "payload_len": payload.len(),
                "qos": n,
                "retain": false,
            }),
            &["ts"],
        );
        assert_ts_recent(&ev);
        let got = subscriber.next_publish().await;
        assert_eq!(got.topic, topic);
        assert_eq!(&got.payload[..], payload.as_bytes());
        assert_eq!(got.qos, qos, "min(publish {n}, subscription 2)");
    }
}

#[tokio::test]
async fn binary_payload_is_base64_in_the_message_event() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut publisher = Client::connect(addr, "bin").await;
    publisher
        .publish("b/1", QoS::AtLeastOnce, false, &[0xff, 0x00, 0x80, 0x41])
        .await;
    let ev = monitor.next_event("message", "bin").await;
    assert_fields(
        &ev,
        json!({
            "pub_client_id": "bin",
            "topic": "b/1",
            "payload": "/wCAQQ==",
            "payload_encoding": "base64",
            "payload_len": 4,
            "qos": 1,
            "retain": false,
        }),
        &["ts"],
    );
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut publisher = Client::connect(addr, "retainer").await;
    publisher
        .publish("r/state", QoS::AtLeastOnce, true, b"on")
        .await;
    let ev = monitor.next_event("message", "retainer").await;
    assert_fields(
        &ev,
        json!({
            "pub_client_id": "retainer",
            "topic": "r/state",
            "payload": "on",
            "payload_len": 2,
            "qos": 1,
            "retain": true,
        }),
        &["ts"],
    );

    let mut late = Client::connect(addr, "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = late.next_publish().await;
    assert_eq!(got.topic, "r/state");
    assert_eq!(&got.payload[..], b"on");
    assert!(
        got.retain,
        "a retained message is delivered with RETAIN set"
    );

    // mosquitto_sub too: -C 1 exits after the retained message.
    let mut sub = MosquittoSub::spawn(addr, &["-i", "late-mosq", "-t", "r/state", "-C", "1", "-v"]);
    assert_eq!(sub.next_line().await, "r/state on");
    let (code, stderr) = sub.wait_exit().await;
    assert_eq!(code, Some(0), "mosquitto_sub: {stderr}");
}

#[tokio::test]
async fn qos2_flow_completes_both_ways_and_delivers_once() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut subscriber = Client::connect(addr, "q2-sub").await;
    subscriber.subscribe("q2/t", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(addr, "q2-pub").await;
    // The helper waits for PUBREC then PUBCOMP.
    publisher
        .publish("q2/t", QoS::ExactlyOnce, false, b"once")
        .await;
    let got = subscriber.next_publish().await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    assert_eq!(&got.payload[..], b"once");
    // rumqttc answers PUBREC; the broker must send PUBREL, rumqttc answers PUBCOMP.
    subscriber
        .wait_packet("PUBREL", |p| matches!(p, rumqttc::Packet::PubRel(_)))
        .await;
    assert!(
        subscriber.try_next_publish(QUIET).await.is_none(),
        "delivered exactly once"
    );
    // A second exchange still works after the first completed.
    publisher
        .publish("q2/t", QoS::ExactlyOnce, false, b"twice")
        .await;
    assert_eq!(&subscriber.next_publish().await.payload[..], b"twice");
    let ev = monitor.next_event("message", "q2-pub").await;
    assert_eq!(ev.json["qos"], json!(2));

    // mosquitto_pub at QoS 2 completes its flow and exits 0.
    let out = mosquitto_pub(
        addr,
        &["-i", "q2-mosq", "-q", "2", "-t", "q2/t", "-m", "m2"],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub -q 2: {out:?}");
    assert_eq!(&subscriber.next_publish().await.payload[..], b"m2");
    let ev = monitor.next_event("message", "q2-mosq").await;
    assert_fields(
        &ev,
        json!({
            "pub_client_id": "q2-mosq",
            "topic": "q2/t",
            "payload": "m2",
            "payload_len": 2,
            "qos": 2,
            "retain": false,
        }),
        &["ts"],
    );
}
