//! End-to-end: `SYSTEM/access/denied`, a publish or subscription refused by the `[[acl]]`
//! rules or the system-topic rules (issue 17), from the broker and from the tap in front of
//! Debian's mosquitto, with rumqttc, Debian's `mosquitto_pub` / `mosquitto_sub` and raw
//! sockets; on its own Kafka topic against a real tansu; and against a hostile client that
//! hammers denied publishes: bounded per connection and for all clients, counted, and the
//! other clients are served meanwhile (each round trip within 5 s; the slowest is printed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::event::EventKind;
use adapter_tokio::config::{AclRuleConfig, Config};
use adapter_tokio::metrics::Metrics;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;
use tests::hostile::publish_packet;
use tests::kafka::{PROBLEM_TOPICS, Reader, Tansu, kafka_config};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::{
    Client, Ev, Monitor, MosquittoSub, RawClient, WAIT, assert_fields, assert_ts_recent,
    connect_packet, mosquitto_pub, options, start_broker, test_config,
};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep};

/// `config` where nobody may publish or subscribe under `secret/`, and only `monitor` may read
/// the events (loopback alone is not enough).
fn with_rules(mut config: Config) -> Config {
    for action in ["publish", "subscribe"] {
        config.acl.push(AclRuleConfig {
            permission: "deny".into(),
            action: action.into(),
            topic: "secret/#".into(),
            username: None,
            client_id: None,
        });
    }
    config.access.loopback_may_subscribe = false;
    config.access.system_subscribers = vec!["client:monitor".into()];
    config
}

/// Waits for the `denied` event of `client_id` on `topic` and checks its fields.
async fn denied(monitor: &mut Monitor, client_id: &str, topic: &str, action: &str) -> Ev {
    let ev = monitor
        .wait_for(&format!("denied {action} of {client_id} on {topic}"), |e| {
            e.kind() == "denied" && e.json["client_id"] == client_id && e.json["topic"] == topic
        })
        .await;
    assert_fields(
        &ev,
        json!({"client_id":client_id,"topic":topic,"action":action}),
        &["ts"],
    );
    assert_ts_recent(&ev);
    ev
}

async fn wait_metric(metrics: &Metrics, what: &str, condition: impl Fn(&Metrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition(metrics) {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        sleep(Duration::from_millis(10)).await;
    }
}

/// The rules' refusals of every kind, the same through the broker and the tap at `addr`.
async fn scenario(addr: SocketAddr, monitor: &mut Monitor) {
    // A publish the [[acl]] rules refuse (rumqttc): dropped, reported, the client stays.
    let mut publisher = Client::connect(addr, "pub-1").await;
    publisher
        .publish("secret/plans", QoS::AtLeastOnce, false, b"x")
        .await;
    denied(monitor, "pub-1", "secret/plans", "publish").await;
    // A filter they refuse (mosquitto_sub).
    let _sub = MosquittoSub::spawn(addr, &["-i", "sub-1", "-t", "secret/#"]);
    denied(monitor, "sub-1", "secret/#", "subscribe").await;
    // A publish on a system topic (mosquitto_pub).
    let out = mosquitto_pub(addr, &["-i", "forger", "-t", "SYSTEM/message", "-m", "x"]).await;
    assert!(out.status.success(), "{out:?}");
    denied(monitor, "forger", "SYSTEM/message", "publish").await;
    // The events, for a client that may not read them (rumqttc).
    let mut curious = Client::connect(addr, "curious").await;
    assert_eq!(
        curious.subscribe("SYSTEM/#", QoS::AtMostOnce).await,
        SubscribeReasonCode::Failure
    );
    denied(monitor, "curious", "SYSTEM/#", "subscribe").await;
    publisher.disconnect().await;
    curious.disconnect().await;
}

#[tokio::test]
async fn the_broker_reports_what_the_rules_deny() {
    let broker = start_broker(with_rules(test_config())).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    scenario(addr, &mut monitor).await;
    let metrics = broker.metrics();
    assert_eq!(
        metrics.events_emitted[EventKind::Denied as usize].load(Ordering::Relaxed),
        4
    );
}

#[tokio::test]
async fn the_tap_reports_what_its_rules_deny() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_tap(with_rules(tap_config(mosquitto.addr))).await;
    wait_publisher(&tap).await;
    // The events go to the upstream broker, which lets anyone read them.
    let mut monitor = Monitor::start(mosquitto.addr).await;
    scenario(tap.local_addr(), &mut monitor).await;
}

#[tokio::test]
async fn denied_events_go_to_their_own_kafka_topic() {
    let tansu = Tansu::start().await;
    let broker = start_broker(with_rules(kafka_config(tansu.addr))).await;
    let out = mosquitto_pub(
        broker.local_addr(),
        &["-i", "kafka-pub", "-t", "secret/k", "-m", "x"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let mut reader = Reader::new(tansu.addr, &PROBLEM_TOPICS[1..2]);
    let records = reader.expect(1, Duration::from_secs(30)).await;
    let record = &records[0];
    assert_eq!(record.topic, "SYSTEM.access.denied");
    assert_eq!(record.key, "kafka-pub");
    assert_eq!(record.header("kind"), Some("denied"));
    assert_eq!(record.json["topic"], "secret/k");
    assert_eq!(record.json["action"], "publish");
    drop(broker);
    tansu.stop().await;
}

/// `hammerers` raw clients each send `per_client` denied publishes as fast as they can while a
/// rumqttc client does publish round trips; returns the denied events the monitor got, once
/// every publish is counted.
async fn hammer(config: Config, hammerers: usize, per_client: u64) -> (Vec<Ev>, Metrics) {
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start_as(options(addr, "monitor")).await;
    let mut worker = Client::connect(addr, "worker").await;
    worker.subscribe("work/#", QoS::AtLeastOnce).await;

    let batch: Vec<u8> = (0..500)
        .flat_map(|_| publish_packet(b"secret/x", 0, 0, b"spam"))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..hammerers {
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("hammer-{i}");
            let (mut raw, connack) = RawClient::connect(addr, &connect_packet(&id, 60, 4)).await;
            assert_eq!(connack, [0x20, 2, 0, 0]);
            for _ in 0..per_client / 500 {
                raw.stream
                    .write_all(&batch)
                    .await
                    .expect("the hammerer stays");
            }
            raw
        }));
    }
    // Meanwhile the worker's messages keep coming back, each within WAIT (the bound leaves room
    // for a busy 2-core machine; the slowest is printed).
    let mut slowest = Duration::ZERO;
    for n in 0..20u32 {
        let started = Instant::now();
        let payload = n.to_string();
        worker
            .publish("work/job", QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
        let got = worker.next_publish().await;
        assert_eq!(got.payload, payload.as_bytes());
        slowest = slowest.max(started.elapsed());
        assert!(
            started.elapsed() < WAIT,
            "round trip {n} took {:?} during the flood",
            started.elapsed()
        );
    }
    eprintln!("the slowest of 20 round trips during the flood: {slowest:?}");
    let mut hammers = Vec::new();
    for task in tasks {
        hammers.push(task.await.expect("a hammerer"));
    }
    let total = per_client * hammerers as u64;
    let metrics = broker.metrics().clone();
    wait_metric(&metrics, "every denied publish counted", |m| {
        m.publishes_not_allowed.load(Ordering::Relaxed) == total
    })
    .await;
    let emitted = metrics.events_emitted[EventKind::Denied as usize].load(Ordering::Relaxed);
    let suppressed = metrics.events_suppressed[EventKind::Denied as usize].load(Ordering::Relaxed);
    assert_eq!(
        emitted + suppressed,
        total,
        "every denial is an event or counted as suppressed"
    );
    assert!(suppressed > 0, "the bound held events back");
    let mut events = Vec::new();
    while (events.len() as u64) < emitted {
        events.push(
            monitor
                .wait_for("the denied events emitted", |e| e.kind() == "denied")
                .await,
        );
    }
    // The hammerers are still connected: a denied publish keeps the client.
    for raw in &mut hammers {
        raw.stream.write_all(&[0xC0, 0]).await.expect("still open");
        assert!(!raw.closed_within(Duration::from_millis(50)).await);
    }
    (events, clone_counts(broker.metrics()))
}

/// The counters the assertions read, copied out of the broker's metrics.
fn clone_counts(metrics: &Metrics) -> Metrics {
    let copy = Metrics::default();
    for kind in EventKind::ALL {
        let i = kind as usize;
        copy.events_suppressed[i].store(
            metrics.events_suppressed[i].load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        copy.events_emitted[i].store(
            metrics.events_emitted[i].load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
    copy
}

/// How many of `events` fall into each second of their own clock, by client.
fn per_second(events: &[Ev]) -> BTreeMap<(u64, String), u64> {
    let mut out = BTreeMap::new();
    for ev in events {
        let client = ev.json["client_id"].as_str().unwrap_or_default().to_owned();
        *out.entry((ev.ts() / 1000, client)).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn a_client_hammering_denied_publishes_is_bounded_and_starves_nobody() {
    let (events, metrics) = hammer(with_rules(test_config()), 1, 50_000).await;
    // At most 10 per second (events.rate_limit_per_client), and the first of each second
    // after a held-back one says how many.
    let buckets = per_second(&events);
    assert!(buckets.values().all(|n| *n <= 10), "{buckets:?}");
    let told: u64 = events
        .iter()
        .filter_map(|e| e.json["suppressed"].as_u64())
        .sum();
    let suppressed = metrics.events_suppressed[EventKind::Denied as usize].load(Ordering::Relaxed);
    assert!(
        told <= suppressed,
        "the events tell {told} of {suppressed} held back"
    );
    eprintln!(
        "50000 denied publishes: {} events, {suppressed} suppressed, {} seconds",
        events.len(),
        buckets.len()
    );
}

#[tokio::test]
async fn many_hammering_clients_are_bounded_together() {
    let mut config = with_rules(test_config());
    config.events.rate_limit = 15;
    let (events, metrics) = hammer(config, 5, 5_000).await;
    let mut all: BTreeMap<u64, u64> = BTreeMap::new();
    for ((second, _), n) in per_second(&events) {
        *all.entry(second).or_default() += n;
    }
    assert!(all.values().all(|n| *n <= 15), "{all:?}");
    assert!(metrics.events_suppressed[EventKind::Denied as usize].load(Ordering::Relaxed) > 0);
}
