//! End-to-end: `msgack` events for envelope messages acknowledged by subscribers, and the
//! delivery QoS rule `min(publish QoS, subscription QoS)`.

use rumqttc::{Packet, QoS};
use serde_json::json;
use tests::{
    Client, Monitor, MosquittoSub, QUIET, assert_fields, assert_ts_recent, mosquitto_pub, options,
    start_default_broker,
};

const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"data"}"#;

#[tokio::test]
async fn envelope_acked_at_qos1_gives_msgack_qos1() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut device = Client::connect(addr, "device-1").await;
    device.subscribe("orders/#", QoS::AtLeastOnce).await;
    let mut shop = Client::connect(addr, "shop").await;
    shop.publish("orders/7", QoS::AtLeastOnce, false, ENVELOPE)
        .await;

    let got = device.next_publish().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(&got.payload[..], ENVELOPE);
    // rumqttc acknowledges automatically with PUBACK.
    let ack = monitor.next_event("msgack", "device-1").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "shop",
            "ack_client_id": "device-1",
            "product_id": "p1",
            "message_id": "m42",
            "topic": "orders/7",
            "qos": 1,
        }),
        &["ts"],
    );
    assert_ts_recent(&ack);
    let message = monitor.next_event("message", "shop").await;
    assert!(message.index < ack.index, "message before its msgack");
    // One delivery, one acknowledgement.
    shop.publish("marker/1", QoS::AtLeastOnce, false, b"m")
        .await;
    monitor
        .wait_for("marker", |e| {
            e.is("message", "shop") && e.json["topic"] == "marker/1"
        })
        .await;
    monitor
        .assert_none("a second msgack", QUIET, |e| e.kind() == "msgack")
        .await;
}

#[tokio::test]
async fn envelope_acked_at_qos2_gives_msgack_qos2_on_pubrec() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut device = Client::connect(addr, "device-2").await;
    device.subscribe("orders/#", QoS::ExactlyOnce).await;
    let mut shop = Client::connect(addr, "shop-2").await;
    shop.publish("orders/8", QoS::ExactlyOnce, false, ENVELOPE)
        .await;

    let got = device.next_publish().await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    let ack = monitor.next_event("msgack", "device-2").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "shop-2",
            "ack_client_id": "device-2",
            "product_id": "p1",
            "message_id": "m42",
            "topic": "orders/8",
            "qos": 2,
        }),
        &["ts"],
    );
    // The flow completes: PUBREL comes after the PUBREC, and PUBCOMP gives no second msgack.
    device
        .wait_packet("PUBREL", |p| matches!(p, Packet::PubRel(_)))
        .await;
    device
        .publish("marker/2", QoS::AtLeastOnce, false, b"m")
        .await;
    monitor.next_event("message", "device-2").await;
    monitor
        .assert_none("a second msgack", QUIET, |e| e.kind() == "msgack")
        .await;
}

#[tokio::test]
async fn integer_ids_are_echoed_as_numbers() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut device = Client::connect(addr, "device-3").await;
    device.subscribe("jobs/+", QoS::AtLeastOnce).await;
    let out = mosquitto_pub(
        addr,
        &[
            "-i",
            "mosq-shop",
            "-q",
            "1",
            "-t",
            "jobs/9",
            "-m",
            r#"{"message_id":-42,"product_id":7,"extra":[1,{"a":null}]}"#,
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
    device.next_publish().await;
    let ack = monitor.next_event("msgack", "device-3").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "mosq-shop",
            "ack_client_id": "device-3",
            "product_id": 7,
            "message_id": -42,
            "topic": "jobs/9",
            "qos": 1,
        }),
        &["ts"],
    );
}

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
async fn non_envelope_messages_give_no_msgack() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut device = Client::connect(addr, "device-5").await;
    device.subscribe("plain/#", QoS::AtLeastOnce).await;
    let mut shop = Client::connect(addr, "shop-5").await;
    for payload in [
        &b"not json"[..],
        br#"{"product_id":"p1"}"#,
        br#"{"product_id":"p1","message_id":1.5}"#,
        br#"[{"product_id":"p1","message_id":"m"}]"#,
        &[0xff, 0xfe][..],
    ] {
        shop.publish("plain/1", QoS::AtLeastOnce, false, payload)
            .await;
        let got = device.next_publish().await;
        assert_eq!(&got.payload[..], payload);
    }
    // The device's PUBACKs were sent before this publish, so any msgack was queued before the
    // marker's message event.
    device
        .publish("marker/5", QoS::AtLeastOnce, false, b"m")
        .await;
    monitor.next_event("message", "device-5").await;
    monitor
        .assert_none("msgack of a non-envelope", QUIET, |e| e.kind() == "msgack")
        .await;
}

#[tokio::test]
async fn envelope_delivered_at_qos0_gives_no_msgack() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut device = Client::connect(addr, "device-6").await;
    device.subscribe("orders/#", QoS::AtMostOnce).await;
    let mut shop = Client::connect(addr, "shop-6").await;
    shop.publish("orders/1", QoS::AtLeastOnce, false, ENVELOPE)
        .await;
    assert_eq!(device.next_publish().await.qos, QoS::AtMostOnce);
    device
        .publish("marker/6", QoS::AtLeastOnce, false, b"m")
        .await;
    monitor.next_event("message", "device-6").await;
    monitor
        .assert_none("msgack of a QoS 0 delivery", QUIET, |e| {
            e.kind() == "msgack"
        })
        .await;
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

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_subscription() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut q1 = Client::connect(addr, "sub-q1").await;
    q1.subscribe("down/0", QoS::AtLeastOnce).await;
    let mut q2 = Client::connect(addr, "sub-q2").await;
    q2.subscribe("down/1", QoS::ExactlyOnce).await;
    let mut q0 = Client::connect(addr, "sub-q0").await;
    q0.subscribe("down/2", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(addr, "downer").await;

    publisher
        .publish("down/0", QoS::AtMostOnce, false, b"zero")
        .await;
    let got = q1.next_publish().await;
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtMostOnce, &b"zero"[..]));

    publisher
        .publish("down/1", QoS::AtLeastOnce, false, b"one")
        .await;
    let got = q2.next_publish().await;
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtLeastOnce, &b"one"[..]));

    publisher
        .publish("down/2", QoS::ExactlyOnce, false, b"two")
        .await;
    let got = q0.next_publish().await;
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtMostOnce, &b"two"[..]));

    // The downgraded flows left no state behind: more messages keep flowing at the right QoS.
    for i in 0..5u8 {
        publisher
            .publish("down/0", QoS::AtMostOnce, false, &[b'a' + i])
            .await;
        publisher
            .publish("down/1", QoS::AtLeastOnce, false, &[b'a' + i])
            .await;
    }
    for i in 0..5u8 {
        let got = q1.next_publish().await;
        assert_eq!((got.qos, got.payload[0]), (QoS::AtMostOnce, b'a' + i));
        let got = q2.next_publish().await;
        assert_eq!((got.qos, got.payload[0]), (QoS::AtLeastOnce, b'a' + i));
    }
    assert!(!q2.is_closed(), "the QoS 2 subscriber is still connected");
}
