//! End-to-end, broker mode: `SYSTEM/message/dropped`, messages the broker dropped for a client
//! (issue 17): the messages rumqttd's router skipped for a slow subscriber
//! (`router_log_overrun`, one event per jump of the log with the count skipped), a delivery
//! larger than an MQTT 5 client's Maximum Packet Size (`too_large`) and one whose Message
//! Expiry Interval passed (`expired`), with Debian's `mosquitto_pub` / `mosquitto_sub`, rumqttc
//! and raw sockets.

use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::event::EventKind;
use rumqttc::QoS;
use serde_json::{Value, json};
use tests::hostile::{flood_a_slow_subscriber, read_until_accounted};
use tests::kafka::{PROBLEM_TOPICS, Reader, Tansu, kafka_config};
use tests::{
    Ev, Monitor, MosquittoSub, assert_fields, assert_ts_recent, mosquitto_pub, start_broker,
    test_config,
};
use tokio::time::Instant;

#[tokio::test]
async fn messages_the_router_skips_are_reported_with_their_count() {
    let tansu = Tansu::start().await;
    let mut config = kafka_config(tansu.addr);
    config.router.segment_size = 1024;
    config.router.segment_count = 2;
    // Every jump of the log gets its event here, so that the counts add up exactly.
    config.events.rate_limit_per_client = 0;
    config.events.rate_limit = 0;
    // The flood's own `message` events are not what this test reads.
    config.events.message.enabled = false;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let metrics = broker.metrics().clone();

    // The slow subscriber: a 4 KiB receive buffer, and it stops reading after its SUBACK.
    let (mut slow, _publisher) = flood_a_slow_subscriber(addr).await;
    // The subscriber reads again until every message is delivered or counted as skipped.
    read_until_accounted(
        &mut slow,
        || metrics.deliveries_skipped.load(Ordering::Relaxed),
        String::new,
    )
    .await;
    let skipped = metrics.deliveries_skipped.load(Ordering::Relaxed);
    assert!(skipped > 0, "the log wrapped past the subscriber");
    // One event per jump, the counts adding up to what was skipped (read from Kafka: a
    // subscriber of the events would share the tiny router log of this test).
    let events = metrics.events_emitted[EventKind::Dropped as usize].load(Ordering::Relaxed);
    let mut reader = Reader::new(tansu.addr, &PROBLEM_TOPICS[2..]);
    let records = reader
        .expect(
            usize::try_from(events).expect("fits"),
            Duration::from_secs(60),
        )
        .await;
    let mut reported = 0;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.key, "slow-reader");
        let ev = Ev {
            index,
            topic: record.topic.clone(),
            json: record.json.clone(),
            qos: QoS::AtLeastOnce,
        };
        assert_fields(
            &ev,
            json!({"client_id":"slow-reader","filter":"flood/#","reason":"router_log_overrun"}),
            &["count", "ts"],
        );
        assert_ts_recent(&ev);
        reported += ev.json["count"].as_u64().expect("a count");
    }
    assert_eq!(
        reported, skipped,
        "the counts add up to the skipped messages"
    );
    eprintln!("{skipped} messages skipped in {events} jumps, one dropped event each");
    drop(broker);
    tansu.stop().await;
}

/// Waits for the `dropped` event of `client_id`, checks its fields.
async fn dropped(monitor: &mut Monitor, client_id: &str, expected: Value) -> Ev {
    let ev = monitor
        .wait_for(&format!("dropped for {client_id}"), |e| {
            e.kind() == "dropped" && e.json["client_id"] == client_id
        })
        .await;
    assert_fields(&ev, expected, &["ts"]);
    assert_ts_recent(&ev);
    ev
}

#[tokio::test]
async fn deliveries_too_large_or_expired_are_reported() {
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    // An MQTT 5 subscriber that accepts packets of at most 64 bytes.
    let _small = MosquittoSub::spawn(
        addr,
        &[
            "-V",
            "mqttv5",
            "-i",
            "small-rx",
            "-t",
            "big/#",
            "-D",
            "connect",
            "maximum-packet-size",
            "64",
        ],
    );
    monitor
        .wait_for("small-rx subscribed", |e| e.is("subscribed", "small-rx"))
        .await;
    let big = "x".repeat(200);
    let out = mosquitto_pub(addr, &["-t", "big/one", "-m", &big]).await;
    assert!(out.status.success(), "{out:?}");
    dropped(
        &mut monitor,
        "small-rx",
        json!({"client_id":"small-rx","topic":"big/one","reason":"too_large","count":1}),
    )
    .await;

    // A retained message that expires after a second, then a subscriber.
    let out = mosquitto_pub(
        addr,
        &[
            "-V",
            "mqttv5",
            "-r",
            "-t",
            "exp/short",
            "-m",
            "soon gone",
            "-D",
            "publish",
            "message-expiry-interval",
            "1",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let published = Instant::now();
    // The condition is the time itself: a second and a bit must pass.
    tokio::time::sleep_until(published + Duration::from_millis(1_100)).await;
    let _late = MosquittoSub::spawn(addr, &["-V", "mqttv5", "-i", "late-rx", "-t", "exp/#"]);
    dropped(
        &mut monitor,
        "late-rx",
        json!({"client_id":"late-rx","topic":"exp/short","reason":"expired","count":1}),
    )
    .await;
    assert_eq!(
        broker.metrics().events_emitted[EventKind::Dropped as usize].load(Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn drops_of_the_events_themselves_are_never_reported() {
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    // An MQTT 5 subscriber of the events that accepts packets of at most 64 bytes: every event
    // is too large for it; none of those drops may give an event (which would be too large
    // again).
    let _small = MosquittoSub::spawn(
        addr,
        &[
            "-V",
            "mqttv5",
            "-i",
            "tiny-watcher",
            "-t",
            "SYSTEM/#",
            "-D",
            "connect",
            "maximum-packet-size",
            "64",
        ],
    );
    monitor
        .wait_for("tiny-watcher subscribed", |e| {
            e.is("subscribed", "tiny-watcher")
        })
        .await;
    let metrics = broker.metrics().clone();
    let before = metrics.deliveries_too_large.load(Ordering::Relaxed);
    let out = mosquitto_pub(addr, &["-i", "chatty", "-t", "a/b", "-m", "hello"]).await;
    assert!(out.status.success(), "{out:?}");
    monitor.next_event("message", "chatty").await;
    monitor.next_event("disconnected", "chatty").await;
    let deadline = Instant::now() + tests::WAIT;
    while metrics.deliveries_too_large.load(Ordering::Relaxed) < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the events were too large for it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    monitor
        .assert_none("a dropped event", tests::QUIET, |e| e.kind() == "dropped")
        .await;
    assert_eq!(
        metrics.events_emitted[EventKind::Dropped as usize].load(Ordering::Relaxed),
        0
    );
}
