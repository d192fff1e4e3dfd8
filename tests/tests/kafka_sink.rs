//! End-to-end: the Kafka sink against a real tansu broker, read back with a real rdkafka
//! consumer; MQTT clients are rumqttc.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adapter_tokio::broker::Broker;
use adapter_tokio::config::{DropPolicy, FsyncPolicy, PropertyValue, SpoolConfig};
use rumqttc::QoS;
use tests::kafka::{Reader, TOPICS, Tansu, kafka_config, message_numbers};
use tests::ports::free_port;
use tests::{Client, Monitor, start_broker};
use tokio::time::{Instant, sleep};

/// How long Kafka records may take to arrive once Kafka is up (topic creation retries back off
/// up to 2 s).
const KAFKA_WAIT: Duration = Duration::from_secs(15);

/// Waits until `check` holds on the broker's metrics, or panics with `what`.
async fn wait_metrics(
    broker: &Broker,
    what: &str,
    check: impl Fn(&adapter_tokio::metrics::Metrics) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check(broker.metrics()) {
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}:\n{}",
            broker.metrics().render()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Connects `id`, then disconnects it cleanly: a `connected` and a `disconnected` event.
async fn visit(broker: &Broker, id: &str) {
    let client = Client::connect(broker.local_addr(), id).await;
    client.disconnect().await;
}

/// The `(topic, key)` of records about clients whose id starts with `prefix`.
fn keyed(records: &[tests::kafka::Record], prefix: &str) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.key.starts_with(prefix))
        .map(|r| (r.topic.clone(), r.key.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_events_reach_kafka_and_mqtt_alike() {
    let tansu = Tansu::start().await;
    let broker = start_broker(kafka_config(tansu.addr)).await;
    let addr = broker.local_addr();
    let mut reader = Reader::new(tansu.addr, &TOPICS);
    let mut monitor = Monitor::start(addr).await;

    let mut sub = Client::connect(addr, "sub").await;
    sub.subscribe("devices/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "pub").await;
    publisher
        .publish(
            "devices/7/cmd",
            QoS::AtLeastOnce,
            false,
            br#"{"product_id":"p1","message_id":"m42","payload":"on"}"#,
        )
        .await;
    sub.next_publish().await; // rumqttc acknowledges it: the msgack event.
    sub.unsubscribe("devices/#").await;
    sub.disconnect().await;

    let mut seen = Vec::new();
    for (kind, client) in [
        ("connected", "sub"),
        ("subscribed", "sub"),
        ("connected", "pub"),
        ("message", "pub"),
        ("msgack", "sub"),
        ("unsubscribed", "sub"),
        ("disconnected", "sub"),
    ] {
        seen.push(monitor.next_event(kind, client).await);
    }

    // Seven events about sub and pub, plus the monitor's connected and subscribed.
    let records = reader.expect(9, KAFKA_WAIT).await.to_vec();
    let ours: Vec<_> = records.iter().filter(|r| r.key != "monitor").collect();
    assert_eq!(ours.len(), 7, "{}", reader.describe());
    for ev in &seen {
        let topic = ev.topic.replace('/', ".");
        let record = ours
            .iter()
            .find(|r| r.topic == topic && r.json == ev.json)
            .unwrap_or_else(|| {
                panic!(
                    "no Kafka record for {} {}:\n{}",
                    ev.topic,
                    ev.json,
                    reader.describe()
                )
            });
        assert_eq!(
            Some(record.key.as_str()),
            ev.subject(),
            "key of {}",
            ev.json
        );
        assert_eq!(
            record.header("kind"),
            Some(ev.kind()),
            "kind header of {}",
            ev.json
        );
        let ts = ev.ts().to_string();
        assert_eq!(
            record.header("ts"),
            Some(ts.as_str()),
            "ts header of {}",
            ev.json
        );
        assert_eq!(record.headers.len(), 2, "{:?}", record.headers);
    }
    // Every kind went to its own topic.
    let topics: BTreeSet<&str> = ours.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, TOPICS.into_iter().collect());
    let msgack = ours.iter().find(|r| r.topic == "SYSTEM.msgack").unwrap();
    assert_eq!(
        msgack.key, "sub",
        "msgack is keyed by the acknowledging client"
    );
    assert_eq!(msgack.json["pub_client_id"], "pub");

    wait_metrics(&broker, "7 delivered", |m| {
        m.kafka.delivered.load(Ordering::Relaxed) >= 9
    })
    .await;
    let text = broker.metrics().render();
    assert!(
        text.contains("activity_kafka_delivery_latency_seconds_count "),
        "{text}"
    );
    assert!(text.contains("activity_kafka_failed_total 0"), "{text}");
    drop(publisher);
    broker.shutdown().await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_at_startup_then_buffered_events_arrive_in_order() {
    let port = free_port();
    let kafka_addr = ([127, 0, 0, 1], port).into();
    let broker = start_broker(kafka_config(kafka_addr)).await;
    // MQTT works while Kafka is unreachable.
    for i in 0..10 {
        visit(&broker, &format!("early-{i}")).await;
    }
    wait_metrics(&broker, "20 events buffered", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) >= 20
    })
    .await;
    assert_eq!(broker.metrics().kafka.delivered.load(Ordering::Relaxed), 0);

    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &TOPICS[..2]);
    reader.expect(20, KAFKA_WAIT).await;
    let connected: Vec<String> = reader
        .records
        .iter()
        .filter(|r| r.topic == TOPICS[0])
        .map(|r| r.key.clone())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("early-{i}")).collect();
    assert_eq!(connected, expected, "connected events in order");
    wait_metrics(&broker, "nothing buffered", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(broker.metrics().kafka.dropped.load(Ordering::Relaxed), 0);
    broker.shutdown().await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_a_broker_restart() {
    let spool_dir = tempfile::tempdir().expect("a temporary directory");
    let port = free_port();
    let kafka_addr = ([127, 0, 0, 1], port).into();
    let mut config = kafka_config(kafka_addr);
    config.kafka.spool = Some(SpoolConfig {
        dir: spool_dir.path().join("spool"),
        max_bytes: 1 << 20,
        fsync: FsyncPolicy::EveryMs(50),
    });

    let first = start_broker(config.clone()).await;
    for i in 0..5 {
        visit(&first, &format!("before-{i}")).await;
    }
    wait_metrics(&first, "10 events spooled", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) >= 10
            && m.kafka.spool_bytes.load(Ordering::Relaxed) > 0
    })
    .await;
    // Dropped, not shut down: the spool must still hold everything.
    drop(first);

    let second = start_broker(config).await;
    wait_metrics(&second, "the spool reopened", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) >= 10
    })
    .await;
    for i in 0..2 {
        visit(&second, &format!("after-{i}")).await;
    }
    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &TOPICS[..1]);
    reader.expect(7, KAFKA_WAIT).await;
    let keys: Vec<String> = reader.records.iter().map(|r| r.key.clone()).collect();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain((0..2).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(
        keys, expected,
        "spooled events first, in order, then new ones"
    );
    wait_metrics(&second, "the spool empty", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) == 0
            && m.kafka.spool_bytes.load(Ordering::Relaxed) == 0
    })
    .await;
    second.shutdown().await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_drops_by_policy_and_counts() {
    let port = free_port();
    let kafka_addr = ([127, 0, 0, 1], port).into();
    let mut brokers = Vec::new();
    for (policy, prefix) in [
        (DropPolicy::DropNewest, "newest"),
        (DropPolicy::DropOldest, "oldest"),
    ] {
        let mut config = kafka_config(kafka_addr);
        config.kafka.buffer_capacity = 3;
        config.kafka.drop_policy = policy;
        let broker = start_broker(config).await;
        for i in 0..5 {
            visit(&broker, &format!("{prefix}-{i}")).await;
        }
        // Ten events, three fit.
        wait_metrics(&broker, "7 dropped, 3 buffered", |m| {
            m.kafka.dropped.load(Ordering::Relaxed) == 7
                && m.kafka.buffered.load(Ordering::Relaxed) == 3
        })
        .await;
        let text = broker.metrics().render();
        assert!(text.contains("activity_kafka_dropped_total 7\n"), "{text}");
        brokers.push(broker);
    }

    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &TOPICS[..2]);
    reader.expect(6, KAFKA_WAIT).await;
    let connected = TOPICS[0].to_owned();
    let disconnected = TOPICS[1].to_owned();
    let newest: BTreeSet<_> = keyed(&reader.records, "newest").into_iter().collect();
    let expected: BTreeSet<_> = [
        (connected.clone(), "newest-0".to_owned()),
        (disconnected.clone(), "newest-0".to_owned()),
        (connected.clone(), "newest-1".to_owned()),
    ]
    .into_iter()
    .collect();
    assert_eq!(newest, expected, "drop_newest keeps the first events");
    let oldest: BTreeSet<_> = keyed(&reader.records, "oldest").into_iter().collect();
    let expected: BTreeSet<_> = [
        (disconnected.clone(), "oldest-3".to_owned()),
        (connected, "oldest-4".to_owned()),
        (disconnected, "oldest-4".to_owned()),
    ]
    .into_iter()
    .collect();
    assert_eq!(oldest, expected, "drop_oldest keeps the last events");
    for broker in brokers {
        broker.shutdown().await;
    }
    tansu.stop().await;
}

/// The `(kind header, key)` of `records`, in order.
fn kinds_and_keys(records: &[tests::kafka::Record]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| (r.header("kind").unwrap_or("?").to_owned(), r.key.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stopped_mid_run_then_every_outage_event_arrives_in_order() {
    const CLIENTS: usize = 50;
    let tansu = Tansu::start().await;
    let port = tansu.addr.port();
    let mut config = kafka_config(tansu.addr);
    // One topic with one partition: every event in one order.
    config.kafka.topic = Some("activity".to_owned());
    let broker = start_broker(config).await;
    let mut reader = Reader::new(tansu.addr, &["activity"]);
    for i in 0..3 {
        visit(&broker, &format!("before-{i}")).await;
    }
    reader.expect(6, KAFKA_WAIT).await;
    wait_metrics(&broker, "6 delivered, nothing waiting", |m| {
        m.kafka.delivered.load(Ordering::Relaxed) == 6
            && m.kafka.buffered.load(Ordering::Relaxed) == 0
    })
    .await;

    // tansu is killed; its in-memory storage (records and topics) goes with it.
    tansu.stop().await;
    drop(reader);
    for i in 0..CLIENTS {
        visit(&broker, &format!("outage-{i}")).await;
    }
    wait_metrics(&broker, "the outage's events waiting", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) == 2 * CLIENTS as u64
    })
    .await;

    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &["activity"]);
    reader.expect(2 * CLIENTS, KAFKA_WAIT).await;
    wait_metrics(&broker, "everything delivered", |m| {
        m.kafka.buffered.load(Ordering::Relaxed) == 0
    })
    .await;
    // Nothing more arrives: no event twice, none from before the outage.
    let all = kinds_and_keys(reader.read(2 * CLIENTS + 1, Duration::from_secs(1)).await);
    assert_eq!(all.len(), 2 * CLIENTS, "{}", reader.describe());
    let connected: Vec<&str> = all
        .iter()
        .filter(|(kind, _)| kind == "connected")
        .map(|(_, key)| key.as_str())
        .collect();
    let expected: Vec<String> = (0..CLIENTS).map(|i| format!("outage-{i}")).collect();
    assert_eq!(connected, expected, "connected events in order");
    for id in &expected {
        let of_client: Vec<&str> = all
            .iter()
            .filter(|(_, key)| key == id)
            .map(|(kind, _)| kind.as_str())
            .collect();
        assert_eq!(of_client, ["connected", "disconnected"], "events of {id}");
    }
    let m = &broker.metrics().kafka;
    assert_eq!(m.delivered.load(Ordering::Relaxed), 6 + 2 * CLIENTS as u64);
    assert_eq!(m.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(m.failed.load(Ordering::Relaxed), 0);
    broker.shutdown().await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_kafka_refuses_counts_as_failed_and_the_others_arrive() {
    let tansu = Tansu::start().await;
    let mut config = kafka_config(tansu.addr);
    // librdkafka's smallest record limit: the message event of a 2,000-byte payload is larger.
    config
        .kafka
        .properties
        .insert("message.max.bytes".to_owned(), PropertyValue::Integer(1000));
    let broker = start_broker(config).await;
    let mut reader = Reader::new(tansu.addr, &[TOPICS[4]]);
    let mut publisher = Client::connect(broker.local_addr(), "big").await;
    publisher
        .publish("devices/big", QoS::AtMostOnce, false, &[b'x'; 2000])
        .await;
    publisher
        .publish("devices/small", QoS::AtMostOnce, false, b"small")
        .await;
    reader.expect(1, KAFKA_WAIT).await;
    wait_metrics(&broker, "1 failed, nothing waiting", |m| {
        m.kafka.failed.load(Ordering::Relaxed) == 1 && m.kafka.buffered.load(Ordering::Relaxed) == 0
    })
    .await;
    // Only the small one arrives.
    assert_eq!(reader.read(2, Duration::from_secs(1)).await.len(), 1);
    assert_eq!(reader.records[0].json["topic"], "devices/small");
    let m = &broker.metrics().kafka;
    let handed = m.offered.load(Ordering::Relaxed);
    let delivered = m.delivered.load(Ordering::Relaxed);
    assert_eq!(handed, delivered + 1, "handed = delivered + failed");
    let text = broker.metrics().render();
    assert!(text.contains("activity_kafka_failed_total 1\n"), "{text}");
    drop(publisher);
    broker.shutdown().await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_killed_while_events_flow_then_none_is_lost_or_repeated() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let tansu = Tansu::start().await;
    let port = tansu.addr.port();
    let mut config = kafka_config(tansu.addr);
    // One topic with one partition: every event in one order.
    config.kafka.topic = Some("activity".to_owned());
    let broker = start_broker(config).await;
    let m = broker.metrics();

    // One publisher, QoS 1, payloads 0, 1, 2, ... until told to stop: one message event each.
    let stop = Arc::new(AtomicBool::new(false));
    let mut publisher = Client::connect(broker.local_addr(), "flow").await;
    let publishing = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                publisher
                    .publish(
                        "load/flow",
                        QoS::AtLeastOnce,
                        false,
                        n.to_string().as_bytes(),
                    )
                    .await;
                n += 1;
            }
            publisher.disconnect().await;
            n
        }
    });
    let delivered = |m: &adapter_tokio::metrics::Metrics| m.kafka.delivered.load(Ordering::Relaxed);
    let offered = |m: &adapter_tokio::metrics::Metrics| m.kafka.offered.load(Ordering::Relaxed);
    wait_metrics(&broker, "100 delivered", |m| delivered(m) >= 100).await;

    // Killed in the middle of the flow: records are in flight in librdkafka.
    tansu.stop().await;
    let at_kill = offered(m);
    wait_metrics(&broker, "100 more events during the outage", |m| {
        offered(m) >= at_kill + 100
    })
    .await;
    let tansu = Tansu::start_on(port).await;
    let after = delivered(m);
    wait_metrics(&broker, "deliveries again", |m| delivered(m) >= after + 100).await;
    stop.store(true, Ordering::Relaxed);
    let published = publishing.await.expect("the publisher finished");
    // connected, one message event per publish, disconnected: each delivered.
    wait_metrics(&broker, "every event handed over and delivered", |m| {
        offered(m) == published + 2
            && delivered(m) == published + 2
            && m.kafka.buffered.load(Ordering::Relaxed) == 0
    })
    .await;
    let k = &m.kafka;
    // connected, one message event per publish, disconnected: each delivered exactly once
    // as far as the sink knows (nothing dropped, nothing failed).
    assert_eq!(offered(m), published + 2);
    assert_eq!(delivered(m), published + 2, "{}", m.render());
    assert_eq!(k.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(k.failed.load(Ordering::Relaxed), 0);

    // The new tansu holds what was not acknowledged by the old one: the publishes from some
    // n on, in order, each once, up to the last one.
    let mut reader = Reader::new(tansu.addr, &["activity"]);
    let last = (published - 1).to_string();
    let deadline = Instant::now() + KAFKA_WAIT;
    let mut checked = 0;
    loop {
        let records = reader
            .read(checked + 1000, Duration::from_millis(500))
            .await;
        let arrived = records[checked..]
            .iter()
            .any(|r| r.json["payload"].as_str() == Some(&last));
        checked = records.len();
        if arrived {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publish {last} never arrived:\n{}",
            reader.describe()
        );
    }
    let seqs = message_numbers(&reader.records);
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..published).collect::<Vec<_>>(),
        "the outage's publishes, in order, each once"
    );
    broker.shutdown().await;
    tansu.stop().await;
}
