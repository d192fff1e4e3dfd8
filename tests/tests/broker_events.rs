//! End-to-end: the events of Debian's mosquitto_pub / mosquitto_sub and rumqttc clients as
//! real clients of the broker (connect, publish, subscribe, retained messages, QoS 2 flows both
//! ways). The events' fields and the MQTT rules behind them, with the same bytes for every
//! server, are the conformance suite's (`tests/conformance.rs`).

use rumqttc::QoS;
use serde_json::json;
use tests::{
    Client, Monitor, MosquittoSub, QUIET, assert_fields, assert_loopback_peer, mosquitto_pub,
    start_default_broker,
};

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
        json!({"client_id": "mpub", "proto_ver": 4, "keepalive": 25, "clean_session": true,
               "transport": "tcp"}),
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
        tests::with_reason_code(
            json!({"client_id": "mpub", "reason": "normal", "connected_at": connected.ts()}),
            &disconnected,
        ),
        &["ts"],
    );
    assert!(connected.index < message.index && message.index < disconnected.index);
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
async fn mosquitto_sub_receives_a_retained_message() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut publisher = Client::connect(addr, "retainer").await;
    publisher
        .publish("r/state", QoS::AtLeastOnce, true, b"on")
        .await;
    monitor.next_event("message", "retainer").await;

    // -C 1 exits after the retained message.
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
