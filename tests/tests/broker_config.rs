//! Event configuration end to end: prefix, per-kind on/off and QoS, payload modes, node.

use std::time::Duration;

use adapter_tokio::config::{KindConfig, PayloadMode};
use rumqttc::QoS;
use serde_json::Value;
use tests::*;

/// The next publish on `client` whose topic is `topic`, skipping others.
async fn next_on(client: &mut Client, topic: &str) -> rumqttc::Publish {
    loop {
        let p = client.next_publish().await;
        if p.topic == topic {
            return p;
        }
    }
}

#[tokio::test]
async fn prefix_kind_switches_kind_qos_truncation_and_node_apply() {
    let mut config = test_config();
    config.events.prefix = "acme/activity".to_owned();
    config.events.node = Some("broker-7".to_owned());
    config.events.payload = PayloadMode::Truncate(4);
    config.events.subscribed = KindConfig {
        enabled: false,
        qos: None,
    };
    config.events.message = KindConfig {
        enabled: true,
        qos: Some(0),
    };
    let broker = start_broker(config).await;

    // A QoS 1 subscription: connected events (default QoS 1) arrive at QoS 1, message events
    // (configured QoS 0) at the lower of the two, QoS 0.
    let mut watcher = Client::connect(broker.local_addr(), "watcher").await;
    watcher.subscribe("acme/activity/#", QoS::AtLeastOnce).await;
    let mut old_prefix = Client::connect(broker.local_addr(), "old-prefix").await;
    old_prefix.subscribe("SYSTEM/#", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect(broker.local_addr(), "pub-1").await;
    let connected = next_on(&mut watcher, "acme/activity/presence/connected").await;
    assert_eq!(connected.qos, QoS::AtLeastOnce);
    let json: Value = serde_json::from_slice(&connected.payload).expect("JSON");
    assert_eq!(json["client_id"], "old-prefix");
    assert_eq!(json["node"], "broker-7");

    publisher.subscribe("ignored/topic", QoS::AtMostOnce).await;
    publisher
        .publish("data/1", QoS::AtLeastOnce, false, b"abcdefgh")
        .await;
    let message = next_on(&mut watcher, "acme/activity/message").await;
    assert_eq!(
        message.qos,
        QoS::AtMostOnce,
        "min(event QoS 0, subscription QoS 1)"
    );
    let json: Value = serde_json::from_slice(&message.payload).expect("JSON");
    assert_eq!(json["pub_client_id"], "pub-1");
    assert_eq!(json["payload"], "abcd");
    assert_eq!(json["truncated"], true);
    assert_eq!(json["payload_len"], 8);
    assert_eq!(json["qos"], 1, "the event reports the publish's own QoS");
    assert_eq!(json["node"], "broker-7");

    // The `subscribed` kind is off, and nothing appears under the default prefix.
    let mut seen = Vec::new();
    while let Some(p) = watcher.try_next_publish(Duration::from_millis(300)).await {
        seen.push(p.topic.clone());
    }
    assert!(
        !seen.iter().any(|t| t.ends_with("subscription/subscribed")),
        "subscribed events are off: {seen:?}"
    );
    assert!(
        old_prefix
            .try_next_publish(Duration::from_millis(300))
            .await
            .is_none(),
        "no events under SYSTEM/ with another prefix"
    );
    // Clients may publish under the old prefix now, and not under the new one.
    publisher
        .publish("SYSTEM/x", QoS::AtLeastOnce, false, b"fine")
        .await;
    let got = old_prefix.next_publish().await;
    assert_eq!(got.topic, "SYSTEM/x");
    publisher
        .publish("acme/activity/message", QoS::AtLeastOnce, false, b"spoof")
        .await;
    publisher
        .publish("data/2", QoS::AtLeastOnce, false, b"z")
        .await;
    // Message events until the marker's: the spoof on the new prefix must not be among them.
    let mut topics = Vec::new();
    loop {
        let next = next_on(&mut watcher, "acme/activity/message").await;
        let json: Value = serde_json::from_slice(&next.payload).expect("JSON");
        let topic = json["topic"].as_str().expect("a topic").to_owned();
        topics.push(topic.clone());
        if topic == "data/2" {
            break;
        }
    }
    assert_eq!(topics, ["SYSTEM/x", "data/2"], "the spoof was dropped");
    broker.shutdown().await;
}

#[tokio::test]
async fn omitted_payloads_keep_their_length() {
    let mut config = test_config();
    config.events.payload = PayloadMode::Omit;
    let broker = start_broker(config).await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let mut publisher = Client::connect(broker.local_addr(), "quiet").await;
    publisher
        .publish("data/secret", QoS::AtMostOnce, false, b"do not copy")
        .await;
    let message = monitor.next_event("message", "quiet").await;
    assert!(message.json.get("payload").is_none(), "{}", message.json);
    assert_eq!(message.json["payload_len"], 11);
    assert_eq!(message.json["topic"], "data/secret");
    broker.shutdown().await;
}
