//! End-to-end: with the router as the only sink, events are published only while some
//! subscription receives them (`adapter_tokio::interest`), and no subscriber misses one for it:
//! a persistent session gets the events from while it was away, an UNSUBSCRIBE or a clean
//! session's end stops them, and the counters add up. `msgack` events are reported for
//! deliveries made while someone subscribes to them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use adapter_tokio::broker::Broker;
use rumqttc::QoS;
use tests::hostile::{ack_packet, read_n, subscribe_packet};
use tests::{Client, Monitor, RawClient, connect_packet, options, start_default_broker};
use tokio::io::AsyncWriteExt;

/// Events emitted, published on MQTT, and skipped because no subscription wanted them.
fn counts(broker: &Broker) -> (u64, u64, u64) {
    let m = broker.metrics();
    let emitted = m
        .events_emitted
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    (
        emitted,
        m.events_sink_mqtt.load(Ordering::Relaxed),
        m.events_unobserved.load(Ordering::Relaxed),
    )
}

/// Waits until every emitted event is either published or skipped (the dispatcher runs
/// behind the connections), and returns the counts.
async fn settled(broker: &Broker) -> (u64, u64, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (emitted, sunk, unobserved) = counts(broker);
        if sunk + unobserved == emitted {
            return (emitted, sunk, unobserved);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "emitted {emitted} events, published {sunk}, skipped {unobserved}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes `n` QoS 1 messages on `topic` (each acknowledged, so its event was emitted).
async fn publish_n(client: &mut Client, topic: &str, n: usize) {
    for i in 0..n {
        client
            .publish(topic, QoS::AtLeastOnce, false, format!("m{i}").as_bytes())
            .await;
    }
}

#[tokio::test]
async fn events_are_published_only_while_someone_subscribes_to_them() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();

    // Nobody subscribes to an event topic: connected and 5 message events are skipped.
    let mut sensor = Client::connect(addr, "sensor").await;
    publish_n(&mut sensor, "sensors/t", 5).await;
    let (emitted, sunk, unobserved) = settled(&broker).await;
    assert_eq!((emitted, sunk, unobserved), (6, 0, 6));

    // A subscriber to `SYSTEM/message` only: message events flow, other kinds are skipped.
    let mut audit = Client::connect(addr, "audit").await;
    audit.subscribe("SYSTEM/message", QoS::AtLeastOnce).await;
    publish_n(&mut sensor, "sensors/t", 3).await;
    for i in 0..3 {
        let event = audit.next_publish().await;
        assert_eq!(event.topic, "SYSTEM/message");
        let json: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON");
        assert_eq!(json["payload"], format!("m{i}"));
    }
    // audit's connected and subscribed events were skipped, the 3 message events published.
    assert_eq!(settled(&broker).await, (11, 3, 8));

    // Unsubscribed: nothing more is published.
    audit.unsubscribe("SYSTEM/message").await;
    publish_n(&mut sensor, "sensors/t", 2).await;
    assert_eq!(settled(&broker).await, (14, 3, 11));
    assert!(
        audit
            .try_next_publish(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_persistent_subscriber_gets_the_events_from_while_it_was_away() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut sensor = Client::connect(addr, "sensor").await;

    let mut persistent = options(addr, "archiver");
    persistent.set_clean_session(false);
    let (mut archiver, _) = Client::connect_with(persistent.clone())
        .await
        .expect("connects");
    archiver.subscribe("SYSTEM/message", QoS::AtLeastOnce).await;
    archiver.disconnect().await;

    // Away: the router keeps the session, so the events are still published and queued.
    publish_n(&mut sensor, "sensors/t", 4).await;
    let (_, sunk, _) = settled(&broker).await;
    assert_eq!(sunk, 4);
    let (mut archiver, connack) = Client::connect_with(persistent).await.expect("reconnects");
    assert!(connack.session_present);
    for i in 0..4 {
        let event = archiver.next_publish().await;
        let json: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON");
        assert_eq!(json["payload"], format!("m{i}"), "queued while away");
    }
    archiver.disconnect().await;

    // A clean connect of the same id discards the session, and with it the subscription.
    let archiver = Client::connect(addr, "archiver").await;
    archiver.disconnect().await;
    let (_, before, _) = settled(&broker).await;
    publish_n(&mut sensor, "sensors/t", 2).await;
    let (_, after, _) = settled(&broker).await;
    assert_eq!(after, before, "no session receives message events any more");
}

#[tokio::test]
async fn a_clean_subscriber_that_leaves_stops_the_events_and_a_wildcard_does_not_start_them() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut sensor = Client::connect(addr, "sensor").await;

    let monitor = Monitor::start(addr).await;
    publish_n(&mut sensor, "sensors/t", 2).await;
    let (_, sunk, _) = settled(&broker).await;
    assert!(
        sunk >= 2,
        "the monitor's SYSTEM/# receives the message events"
    );
    drop(monitor);

    // The monitor's clean session ended with its connection (its disconnected event is the
    // last one published): message events are skipped again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while broker.connected_clients() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "monitor still connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, before, _) = settled(&broker).await;
    publish_n(&mut sensor, "sensors/t", 3).await;
    let (_, after, _) = settled(&broker).await;
    assert_eq!(after, before);

    // `#` receives no events (its first level is a wildcard): a `#` subscriber alone does
    // not make events be published, and it gets the ordinary message only.
    let mut everything = Client::connect(addr, "everything").await;
    everything.subscribe("#", QoS::AtMostOnce).await;
    let (_, before, _) = settled(&broker).await;
    publish_n(&mut sensor, "sensors/t", 1).await;
    let mut topics = Vec::new();
    while let Some(p) = everything
        .try_next_publish(Duration::from_millis(500))
        .await
    {
        topics.push(p.topic);
    }
    assert_eq!(topics, ["sensors/t"]);
    let (_, after, _) = settled(&broker).await;
    assert_eq!(after, before, "no event published for a `#` subscriber");
}

/// `sensor` publishes an envelope with `message_id` on `cmd/device` at QoS 1; the raw `device`
/// (subscribed to it at QoS 1) reads the delivery, whose packet id this returns.
async fn deliver(sensor: &mut Client, device: &mut RawClient, message_id: &str) -> u16 {
    let payload = format!(r#"{{"product_id":"p1","message_id":"{message_id}"}}"#);
    sensor
        .publish("cmd/device", QoS::AtLeastOnce, false, payload.as_bytes())
        .await;
    // Fixed header (2), topic (2 + 10), packet id (2), payload.
    let delivery = read_n(&mut device.stream, 2 + 12 + 2 + payload.len()).await;
    u16::from_be_bytes([delivery[14], delivery[15]])
}

/// The raw `device` acknowledges delivery `pkid`.
async fn puback(device: &mut RawClient, pkid: u16) {
    device
        .stream
        .write_all(&ack_packet(0x40, pkid))
        .await
        .expect("PUBACK");
}

#[tokio::test]
async fn msgack_events_are_for_deliveries_made_while_someone_subscribes_to_them() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut sensor = Client::connect(addr, "sensor").await;
    // A device that acknowledges when the test says so.
    let (mut device, connack) = RawClient::connect(addr, &connect_packet("device", 60, 4)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    device
        .stream
        .write_all(&subscribe_packet(1, b"cmd/device", 1))
        .await
        .expect("SUBSCRIBE");
    assert_eq!(read_n(&mut device.stream, 5).await, [0x90, 3, 0, 1, 1]);

    // Delivered while nobody subscribes to msgack: not tracked, so its ack reports nothing,
    // even though the acknowledgement comes after a subscriber arrived.
    let pkid1 = deliver(&mut sensor, &mut device, "m1").await;
    let mut audit = Client::connect(addr, "audit").await;
    audit.subscribe("SYSTEM/msgack", QoS::AtLeastOnce).await;
    puback(&mut device, pkid1).await;

    // Delivered while audit subscribes: its msgack arrives (and is the only one).
    let pkid2 = deliver(&mut sensor, &mut device, "m2").await;
    puback(&mut device, pkid2).await;
    let event = audit.next_publish().await;
    assert_eq!(event.topic, "SYSTEM/msgack");
    let json: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON");
    assert_eq!(json["message_id"], "m2");
    assert_eq!(json["pub_client_id"], "sensor");
    assert_eq!(json["ack_client_id"], "device");
    assert!(
        audit
            .try_next_publish(Duration::from_millis(300))
            .await
            .is_none(),
        "no msgack for m1"
    );
}
