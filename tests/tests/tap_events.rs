//! End-to-end, tap mode: the tap relays Debian's mosquitto_pub / mosquitto_sub to Debian's real
//! `mosquitto` and reports their events to subscribers on the upstream. The six events of raw
//! clients through the tap, field by field, are the conformance suite's (`tests/conformance.rs`).

use serde_json::json;
use tests::tap::{Mosquitto, start_default_tap, wait_publisher};
use tests::{Monitor, MosquittoSub, assert_fields, mosquitto_pub};

const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"data"}"#;

#[tokio::test]
async fn six_events_of_mosquitto_clients_through_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    // Directly on mosquitto: the events reach every subscriber of the upstream broker.
    let mut monitor = Monitor::start(mosquitto.addr).await;

    let mut sub = MosquittoSub::spawn(
        addr,
        &[
            "-i", "msub", "-k", "20", "-q", "1", "-t", "x/1", "-t", "x/#", "-v",
        ],
    );
    let connected = monitor.next_event("connected", "msub").await;
    assert_fields(
        &connected,
        json!({"client_id": "msub", "proto_ver": 4, "keepalive": 20, "clean_session": true,
               "transport": "tcp"}),
        &["peer", "ts"],
    );
    for topic in ["x/1", "x/#"] {
        let ev = monitor.next_event("subscribed", "msub").await;
        assert_fields(
            &ev,
            json!({"client_id": "msub", "topic": topic, "qos": 1}),
            &["ts"],
        );
    }

    let envelope = std::str::from_utf8(ENVELOPE).expect("UTF-8");
    let out = mosquitto_pub(
        addr,
        &[
            "-i", "mpub", "-k", "25", "-q", "1", "-t", "x/1", "-m", envelope,
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
    let pub_connected = monitor.next_event("connected", "mpub").await;
    assert_fields(
        &pub_connected,
        json!({"client_id": "mpub", "proto_ver": 4, "keepalive": 25, "clean_session": true,
               "transport": "tcp"}),
        &["peer", "ts"],
    );
    let message = monitor.next_event("message", "mpub").await;
    assert_fields(
        &message,
        json!({
            "pub_client_id": "mpub",
            "topic": "x/1",
            "payload": envelope,
            "payload_len": ENVELOPE.len(),
            "qos": 1,
            "retain": false,
        }),
        &["ts"],
    );
    let pub_disconnected = monitor.next_event("disconnected", "mpub").await;
    assert_fields(
        &pub_disconnected,
        tests::with_reason_code(
            json!({"client_id": "mpub", "reason": "normal", "connected_at": pub_connected.ts()}),
            &pub_disconnected,
        ),
        &["ts"],
    );
    // mosquitto delivers once (it merges overlapping subscriptions) and mosquitto_sub acks.
    assert_eq!(sub.next_line().await, format!("x/1 {envelope}"));
    let ack = monitor.next_event("msgack", "msub").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "mpub",
            "ack_client_id": "msub",
            "product_id": "p1",
            "message_id": "m42",
            "topic": "x/1",
            "qos": 1,
        }),
        &["ts"],
    );

    sub.kill().await;
    let disconnected = monitor.next_event("disconnected", "msub").await;
    assert_fields(
        &disconnected,
        json!({"client_id": "msub", "reason": "tcp_closed", "connected_at": connected.ts()}),
        &["ts"],
    );
    drop(tap);
}

#[tokio::test]
async fn mosquitto_sub_unsubscribe_is_reported() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    let mut monitor = Monitor::start(mosquitto.addr).await;
    // `-U` sends an UNSUBSCRIBE right after the SUBSCRIBE. Only a filter the connection holds
    // is reported as unsubscribed (the engine's rule), so it subscribes to `z/old` first.
    let sub = MosquittoSub::spawn(
        addr,
        &["-i", "munsub", "-t", "z/1", "-t", "z/old", "-U", "z/old"],
    );
    for topic in ["z/1", "z/old"] {
        let subscribed = monitor.next_event("subscribed", "munsub").await;
        assert_fields(
            &subscribed,
            json!({"client_id": "munsub", "topic": topic, "qos": 0}),
            &["ts"],
        );
    }
    let unsubscribed = monitor.next_event("unsubscribed", "munsub").await;
    assert_fields(
        &unsubscribed,
        json!({"client_id": "munsub", "topic": "z/old"}),
        &["ts"],
    );
    sub.kill().await;
    let disconnected = monitor.next_event("disconnected", "munsub").await;
    assert_eq!(disconnected.json["reason"], "tcp_closed");
}

#[tokio::test]
async fn mosquitto_clients_speak_mqtt_5_and_mqtt_3_1_through_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    let mut monitor = Monitor::start(mosquitto.addr).await;
    tests::mosquitto_speaks_mqtt5_and_mqtt31(addr, &mut monitor, "tversions").await;
}
