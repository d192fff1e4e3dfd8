//! End-to-end: `msgack` events of mosquitto_sub's acknowledgements and of a delivery queued
//! for a persistent session in rumqttd's router. The envelope rules and the delivery QoS rule
//! `min(publish QoS, subscription QoS)` are the conformance suite's (`tests/conformance.rs`).

use rumqttc::QoS;
use serde_json::json;
use tests::{Client, Monitor, MosquittoSub, assert_fields, options, start_default_broker};

const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"data"}"#;

#[tokio::test]
async fn mosquitto_sub_acks_an_envelope() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut sub = MosquittoSub::spawn(addr, &["-i", "mosq-dev", "-q", "2", "-t", "env/#"]);
    monitor.next_event("subscribed", "mosq-dev").await;
    let mut shop = Client::connect(addr, "shop-4").await;
    shop.publish("env/1", QoS::ExactlyOnce, false, ENVELOPE)
        .await;
    assert_eq!(sub.next_line().await.as_bytes(), ENVELOPE);
    let ack = monitor.next_event("msgack", "mosq-dev").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "shop-4",
            "ack_client_id": "mosq-dev",
            "product_id": "p1",
            "message_id": "m42",
            "topic": "env/1",
            "qos": 2,
        }),
        &["ts"],
    );
    sub.kill().await;
}

#[tokio::test]
async fn persistent_session_delivers_offline_envelope_and_reports_its_msgack() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let mut opts = options(addr, "keeper");
    opts.set_clean_session(false);
    let (mut keeper, _) = Client::connect_with(opts.clone())
        .await
        .expect("keeper connects");
    keeper.subscribe("queue/#", QoS::AtLeastOnce).await;
    keeper.disconnect().await;
    monitor.next_event("disconnected", "keeper").await;

    let mut producer = Client::connect(addr, "producer").await;
    producer
        .publish("queue/1", QoS::AtLeastOnce, false, ENVELOPE)
        .await;
    monitor.next_event("message", "producer").await;

    let (mut keeper, connack) = Client::connect_with(opts).await.expect("keeper reconnects");
    assert!(connack.session_present, "the persistent session is present");
    let got = keeper.next_publish().await;
    assert_eq!(got.topic, "queue/1");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(&got.payload[..], ENVELOPE);
    let ack = monitor.next_event("msgack", "keeper").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "producer",
            "ack_client_id": "keeper",
            "product_id": "p1",
            "message_id": "m42",
            "topic": "queue/1",
            "qos": 1,
        }),
        &["ts"],
    );
}
