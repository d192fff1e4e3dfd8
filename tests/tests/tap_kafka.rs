//! End-to-end, the scale-out layout: two taps in front of one `mosquitto`, clients spread over
//! both, every event into one Kafka (a real tansu); a consumer sees each client's events in
//! order, and joins a `msgack` whose publisher used the other tap by `(product_id, message_id)`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use adapter_tokio::config::Config;
use rumqttc::QoS;
use serde_json::{Value, json};
use tests::kafka::{Tansu, kafka_config};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::{Client, Monitor, WAIT};

/// A tap named `node` in front of `upstream`, every event kind on one Kafka topic.
fn two_sink_config(kafka: SocketAddr, upstream: SocketAddr, node: &str) -> Config {
    let mut config = kafka_config(kafka);
    config.upstream = tap_config(upstream).upstream;
    config.events.node = Some(node.to_owned());
    // One topic of one partition: the order the consumer reads is the order each tap produced.
    config.kafka.topic = Some("activity".to_owned());
    config
}

/// One client's whole life through `tap`: all six events, its own envelope message delivered
/// back to it and acknowledged.
async fn life(tap: SocketAddr, id: String) {
    let id = id.as_str();
    let mut client = Client::connect(tap, id).await;
    let topic = format!("k/{id}");
    client.subscribe(&topic, QoS::AtLeastOnce).await;
    let envelope = format!(r#"{{"product_id":"p","message_id":"{id}"}}"#);
    client
        .publish(&topic, QoS::AtLeastOnce, false, envelope.as_bytes())
        .await;
    let got = client.next_publish().await;
    assert_eq!(&got.payload[..], envelope.as_bytes());
    client.unsubscribe(&topic).await;
    client.disconnect().await;
}

#[tokio::test]
async fn two_taps_one_mosquitto_one_kafka_every_clients_events_in_order() {
    let tansu = Tansu::start().await;
    let mosquitto = Mosquitto::start().await;
    let tap_a = start_tap(two_sink_config(tansu.addr, mosquitto.addr, "tap-a")).await;
    let tap_b = start_tap(two_sink_config(tansu.addr, mosquitto.addr, "tap-b")).await;
    wait_publisher(&tap_a).await;
    wait_publisher(&tap_b).await;
    // Both taps publish to mosquitto too, as `broker/tap-a` and `broker/tap-b`.
    let mut monitor = Monitor::start(mosquitto.addr).await;

    let ids: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    // The clients live at the same time, half on each tap.
    let lives: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let tap = if i % 2 == 0 { &tap_a } else { &tap_b };
            tokio::spawn(life(tap.local_addr(), id.clone()))
        })
        .collect();
    for life in lives {
        life.await.expect("a client's life completes");
    }

    // Across taps: the publisher used tap A, the subscriber tap B.
    let mut reader_client = Client::connect(tap_b.local_addr(), "xb").await;
    reader_client.subscribe("cross/t", QoS::AtLeastOnce).await;
    let mut writer = Client::connect(tap_a.local_addr(), "xa").await;
    writer
        .publish(
            "cross/t",
            QoS::AtLeastOnce,
            false,
            br#"{"product_id":"p","message_id":"cross-1"}"#,
        )
        .await;
    reader_client.next_publish().await;
    let ack = monitor.next_event("msgack", "xb").await;
    assert_eq!(ack.json["pub_client_id"], Value::Null, "tap B never saw xa");
    assert_eq!(ack.json["node"], "tap-b");
    writer.disconnect().await;
    reader_client.disconnect().await;

    // 6 clients x 6 events; xa: connected, message, disconnected; xb: connected, subscribed,
    // msgack, disconnected.
    let expected = 6 * 6 + 3 + 4;
    let mut reader = tests::kafka::Reader::new(tansu.addr, &["activity"]);
    let records = reader.expect(expected, 2 * WAIT + WAIT).await.to_vec();
    // Each client's events, keyed as the sink keys them, with the `kind` header.
    let mut by_client: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for record in &records {
        let kind = record.header("kind").expect("a kind header").to_owned();
        by_client
            .entry(record.key.clone())
            .or_default()
            .push((kind, record.json.clone()));
    }
    let kinds = |events: &[(String, Value)]| -> Vec<String> {
        events.iter().map(|(kind, _)| kind.clone()).collect()
    };
    for (i, id) in ids.iter().enumerate() {
        let events = &by_client[id];
        assert_eq!(
            kinds(events),
            [
                "connected",
                "subscribed",
                "message",
                "msgack",
                "unsubscribed",
                "disconnected"
            ],
            "{id}'s events in order: {events:?}"
        );
        let node = if i % 2 == 0 { "tap-a" } else { "tap-b" };
        assert!(events.iter().all(|(_, e)| e["node"] == node), "{events:?}");
        assert_eq!(events[3].1["pub_client_id"], json!(id), "same tap: known");
        assert_eq!(events[3].1["message_id"], json!(id));
        assert_eq!(events[5].1["reason"], "normal");
    }
    assert_eq!(
        kinds(&by_client["xa"]),
        ["connected", "message", "disconnected"]
    );
    assert_eq!(
        kinds(&by_client["xb"]),
        ["connected", "subscribed", "msgack", "disconnected"]
    );
    // The consumer's join: the msgack names no publisher, the message of the same
    // (product_id, message_id) does.
    let msgack = &by_client["xb"][2].1;
    assert_eq!(msgack["pub_client_id"], Value::Null);
    let message = by_client["xa"]
        .iter()
        .find(|(kind, m)| {
            kind == "message"
                && envelope_ids(m)
                    == Some((msgack["product_id"].clone(), msgack["message_id"].clone()))
        })
        .map(|(_, m)| m)
        .expect("the message that the msgack acknowledges");
    assert_eq!(message["pub_client_id"], "xa");
    assert_eq!(
        by_client.len(),
        8,
        "no other client: {:?}",
        by_client.keys()
    );
    tansu.stop().await;
}

/// `(product_id, message_id)` of a `message` event's envelope payload.
fn envelope_ids(message: &Value) -> Option<(Value, Value)> {
    let payload: Value = serde_json::from_str(message["payload"].as_str()?).ok()?;
    Some((payload["product_id"].clone(), payload["message_id"].clone()))
}
