//! End-to-end: the real `activity-broker` binary with the Kafka sink against a real tansu:
//! `--kafka-brokers` without a configuration file, the spool through a SIGKILL of the broker
//! process (both fsync policies), and the spool's byte limit. Read back with a real rdkafka
//! consumer; metrics scraped from the binary's endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tests::Client;
use tests::kafka::{Reader, Record, TOPICS, Tansu, message_numbers};
use tests::ports::free_port;
use tests::process::{BrokerProcess, thread_priorities};

/// The binary under test.
const BINARY: &str = env!("CARGO_BIN_EXE_activity-broker");

/// How long Kafka records may take to arrive once Kafka is up (topic creation retries back off
/// up to 2 s).
const KAFKA_WAIT: Duration = Duration::from_secs(20);

/// How long metrics may take to show what the test waits for.
const METRICS_WAIT: Duration = Duration::from_secs(20);

/// The one topic (one partition, so one order) of the configurations below.
const TOPIC: &str = "activity";

/// Connects `id`, then disconnects it cleanly: a `connected` and a `disconnected` event.
async fn visit(addr: SocketAddr, id: &str) {
    Client::connect(addr, id).await.disconnect().await;
}

/// A metric's value, 0 when absent.
fn value(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

/// The Kafka sink's counters: events handed to it, delivered, failed, dropped, waiting.
fn accounting(metrics: &BTreeMap<String, f64>) -> [f64; 5] {
    [
        value(metrics, "activity_events_sunk_total{sink=\"kafka\"}"),
        value(metrics, "activity_kafka_delivered_total"),
        value(metrics, "activity_kafka_failed_total"),
        value(metrics, "activity_kafka_dropped_total"),
        value(metrics, "activity_kafka_buffered"),
    ]
}

/// Writes a configuration with the Kafka sink only, on one topic with one partition, Kafka at
/// `kafka`, a spool in `dir/NAME` synced by `fsync` (TOML) and limited to `max_bytes`, and
/// `drop_policy`, to `dir/NAME.toml`; returns its path.
fn write_config(
    dir: &Path,
    name: &str,
    kafka: SocketAddr,
    fsync: &str,
    max_bytes: u64,
    drop_policy: &str,
) -> String {
    let path = dir.join(format!("{name}.toml"));
    let spool = dir.join(name);
    let text = format!(
        "sinks = [\"kafka\"]\n\
         shutdown_grace_ms = 200\n\
         [kafka]\n\
         brokers = [\"{kafka}\"]\n\
         topic = \"{TOPIC}\"\n\
         partitions = 1\n\
         flush_timeout_ms = 2000\n\
         drop_policy = \"{drop_policy}\"\n\
         properties = {{ \"reconnect.backoff.max.ms\" = 200 }}\n\
         [kafka.spool]\n\
         dir = \"{}\"\n\
         max_bytes = {max_bytes}\n\
         fsync = {fsync}\n",
        spool.display()
    );
    std::fs::write(&path, text).expect("the configuration is written");
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

/// The `(kind header, key)` of `records`, in order.
fn kinds_and_keys(records: &[Record]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| (r.header("kind").unwrap_or("?").to_owned(), r.key.clone()))
        .collect()
}

/// The events of visits by `ids`, in order: each one's `connected`, then its `disconnected`.
fn visits(ids: &[String]) -> Vec<(String, String)> {
    ids.iter()
        .flat_map(|id| {
            [
                ("connected".to_owned(), id.clone()),
                ("disconnected".to_owned(), id.clone()),
            ]
        })
        .collect()
}

/// Checks that `got` holds exactly the events of visits by `ids`: each client's `connected`
/// before its `disconnected`, the clients in order (a client's `disconnected` may come after
/// the next client's `connected`), nothing else, nothing twice.
fn assert_visits(got: &[(String, String)], ids: &[String], describe: &str) {
    let mut sorted = got.to_vec();
    sorted.sort();
    let mut expected = visits(ids);
    expected.sort();
    assert_eq!(
        sorted, expected,
        "exactly these events, once each:\n{describe}"
    );
    let connected: Vec<&String> = got
        .iter()
        .filter(|(kind, _)| kind == "connected")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        connected,
        ids.iter().collect::<Vec<_>>(),
        "clients in order:\n{describe}"
    );
    for id in ids {
        let of_client: Vec<&str> = got
            .iter()
            .filter(|(_, key)| key == id)
            .map(|(kind, _)| kind.as_str())
            .collect();
        assert_eq!(of_client, ["connected", "disconnected"], "events of {id}");
    }
}

/// Reads exactly `count` records: fails if fewer arrive within [`KAFKA_WAIT`], or if more
/// arrive within a second after them.
async fn read_exactly(reader: &mut Reader, count: usize) -> Vec<(String, String)> {
    reader.expect(count, KAFKA_WAIT).await;
    let got = reader.read(count + 1, Duration::from_secs(1)).await.len();
    assert_eq!(
        got,
        count,
        "more records than expected:\n{}",
        reader.describe()
    );
    kinds_and_keys(&reader.records)
}

/// Checks that `got`, the events of visits by `ids` that a full spool kept, are the first
/// (`newest_dropped`) or the last ones: the clients they are about are a prefix (or suffix) of
/// `ids`, and every client but the two at the edge has both its events (a client's
/// `disconnected` may come after the next client's `connected`).
fn assert_kept(got: &[(String, String)], ids: &[String], newest_dropped: bool, describe: &str) {
    let index = |id: &str| ids.iter().position(|i| i == id).expect("a known client");
    let mut clients: Vec<usize> = got.iter().map(|(_, id)| index(id)).collect();
    clients.sort_unstable();
    clients.dedup();
    let (first, last) = (clients[0], clients[clients.len() - 1]);
    assert_eq!(clients, (first..=last).collect::<Vec<_>>(), "{describe}");
    let inner = if newest_dropped {
        assert_eq!(first, 0, "drop_newest keeps the first events:\n{describe}");
        0..last.saturating_sub(1)
    } else {
        assert_eq!(
            last,
            ids.len() - 1,
            "drop_oldest keeps the last events:\n{describe}"
        );
        first + 2..ids.len()
    };
    for i in inner {
        let count = got.iter().filter(|(_, id)| *id == ids[i]).count();
        assert_eq!(count, 2, "both events of {}:\n{describe}", ids[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_flag_turns_the_sink_on_without_a_config_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tansu = Tansu::start().await;
    let kafka = tansu.addr.to_string();
    let broker = BrokerProcess::start(
        Path::new(BINARY),
        &["--kafka-brokers", &kafka],
        &dir.path().join("broker.log"),
    )
    .await;
    // The defaults: every kind on its own topic, 3 partitions.
    let mut reader = Reader::with_partitions(tansu.addr, &TOPICS, 3);
    let ids: Vec<String> = (0..3).map(|i| format!("flag-{i}")).collect();
    for id in &ids {
        visit(broker.addr, id).await;
    }
    reader.expect(6, KAFKA_WAIT).await;
    let mut got: Vec<(String, String)> = reader
        .records
        .iter()
        .map(|r| (r.topic.clone(), r.key.clone()))
        .collect();
    got.sort();
    let mut expected: Vec<(String, String)> = ids
        .iter()
        .flat_map(|id| {
            [
                (TOPICS[0].to_owned(), id.clone()),
                (TOPICS[1].to_owned(), id.clone()),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected, "{}", reader.describe());
    // With the Kafka sink on, the threads serving clients (tokio's workers, the router) run
    // `kafka.client_threads_nice` (3) nicer than the sink's (the feeder, librdkafka's).
    let threads = thread_priorities(broker.pid());
    let nice_of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let base = nice_of("activity-broker");
    assert_eq!(base.len(), 1, "{threads:?}");
    let base = base[0];
    for (prefix, expected) in [
        ("tokio-rt-worker", (base + 3).min(19)),
        ("router-0", (base + 3).min(19)),
        ("kafka-feeder", base),
        ("rdk:", base),
    ] {
        let nices = nice_of(prefix);
        assert!(!nices.is_empty(), "no {prefix} thread: {threads:?}");
        assert!(
            nices.iter().all(|n| *n == expected),
            "{prefix}: {nices:?}, expected {expected}: {threads:?}"
        );
    }
    // The MQTT sink stays on (the default `sinks`): with no subscriber to the event topics it
    // publishes none of them and counts them as unobserved. Kafka's metrics move.
    let metrics = broker
        .wait_metrics("6 events delivered", METRICS_WAIT, |m| {
            value(m, "activity_kafka_delivered_total") == 6.0
        })
        .await;
    assert_eq!(accounting(&metrics), [6.0, 6.0, 0.0, 0.0, 0.0]);
    assert_eq!(
        value(&metrics, "activity_events_sunk_total{sink=\"mqtt\"}"),
        0.0
    );
    assert_eq!(value(&metrics, "activity_events_unobserved_total"), 6.0);
    assert_eq!(value(&metrics, "activity_kafka_ready"), 1.0);
    assert_eq!(
        value(&metrics, "activity_kafka_delivery_latency_seconds_count"),
        6.0
    );
    assert!(value(&metrics, "activity_kafka_delivery_latency_seconds_sum") > 0.0);
    let log = broker.log();
    assert!(log.contains("Kafka sink started"), "{log}");
    terminate_with_everything_delivered(broker).await;
    tansu.stop().await;
}

/// Stops `broker` with SIGTERM and checks it exits 0 saying every event reached Kafka.
async fn terminate_with_everything_delivered(broker: BrokerProcess) {
    let (success, log) = broker.terminate().await;
    assert!(success, "exit status 0 after SIGTERM:\n{log}");
    assert!(
        log.contains("Kafka sink stopped: every event delivered"),
        "{log}"
    );
}

/// Fills the spool of a broker whose Kafka is down with `ids`' visits, waits until every event
/// is in the spool (not only buffered in memory on its way there), then SIGKILLs it after
/// `settle`.
async fn spool_then_kill(broker: BrokerProcess, ids: &[String], settle: Duration) {
    for id in ids {
        visit(broker.addr, id).await;
    }
    let events = 2.0 * ids.len() as f64;
    let metrics = broker
        .wait_metrics("every event in the spool", METRICS_WAIT, |m| {
            value(m, "activity_kafka_spool_events") == events
        })
        .await;
    assert!(value(&metrics, "activity_kafka_spool_bytes") > 0.0);
    tokio::time::sleep(settle).await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync_always_loses_nothing_spooled_and_repeats_nothing_delivered() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("broker.log");
    let tansu = Tansu::start().await;
    let port = tansu.addr.port();
    let config = write_config(
        dir.path(),
        "always",
        tansu.addr,
        "\"always\"",
        1 << 20,
        "drop_oldest",
    );
    let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;

    // Delivered before the outage: acknowledged, so removed from the spool for good.
    let mut reader = Reader::new(tansu.addr, &[TOPIC]);
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    for id in &before {
        visit(broker.addr, id).await;
    }
    reader.expect(10, KAFKA_WAIT).await;
    broker
        .wait_metrics("10 delivered, nothing waiting", METRICS_WAIT, |m| {
            accounting(m) == [10.0, 10.0, 0.0, 0.0, 0.0]
        })
        .await;
    drop(reader);

    // Kafka goes down (tansu's memory with it); events are spooled; the broker is SIGKILLed.
    tansu.stop().await;
    let outage: Vec<String> = (0..30).map(|i| format!("outage-{i}")).collect();
    spool_then_kill(broker, &outage, Duration::ZERO).await;

    // A new broker process on the same spool, then Kafka back: exactly the outage's events.
    let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;
    broker
        .wait_metrics("the spool reopened", METRICS_WAIT, |m| {
            value(m, "activity_kafka_buffered") == 60.0
                && value(m, "activity_kafka_spool_events") == 60.0
        })
        .await;
    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &[TOPIC]);
    let got = read_exactly(&mut reader, 60).await;
    assert_visits(&got, &outage, &reader.describe());
    let metrics = broker
        .wait_metrics("the spool empty", METRICS_WAIT, |m| {
            value(m, "activity_kafka_buffered") == 0.0
                && value(m, "activity_kafka_spool_bytes") == 0.0
        })
        .await;
    // The new process counts what it delivered from the spool (nothing was handed to it).
    assert_eq!(accounting(&metrics), [0.0, 60.0, 0.0, 0.0, 0.0]);
    let log = broker.log();
    assert!(
        log.contains("Kafka spool holds events from before: they are sent first"),
        "{log}"
    );
    terminate_with_everything_delivered(broker).await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync_every_ms_keeps_events_older_than_the_interval() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("broker.log");
    let port = free_port();
    let kafka: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = write_config(
        dir.path(),
        "every-ms",
        kafka,
        "{ every_ms = 100 }",
        1 << 20,
        "drop_oldest",
    );
    let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;
    let ids: Vec<String> = (0..30).map(|i| format!("spooled-{i}")).collect();
    // The README's bound: a spooled event is on disk at most every_ms plus one feeder round
    // (100 ms) later. Two seconds leave a loaded machine room to schedule the feeder.
    spool_then_kill(broker, &ids, Duration::from_secs(2)).await;

    let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;
    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &[TOPIC]);
    // Nothing was delivered before the kill: each event exactly once.
    let got = read_exactly(&mut reader, 60).await;
    assert_visits(&got, &ids, &reader.describe());
    terminate_with_everything_delivered(broker).await;
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_by_policy_counts_exactly_and_logs() {
    const CLIENTS: usize = 300;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = free_port();
    let kafka: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut brokers = Vec::new();
    for policy in ["drop_newest", "drop_oldest"] {
        let config = write_config(dir.path(), policy, kafka, "\"always\"", 65536, policy);
        let log = dir.path().join(format!("{policy}.log"));
        let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;
        let ids: Vec<String> = (0..CLIENTS).map(|i| format!("{policy}-{i:03}")).collect();
        for id in &ids {
            visit(broker.addr, id).await;
        }
        let events = 2.0 * CLIENTS as f64;
        let metrics = broker
            .wait_metrics("every event spooled or dropped", METRICS_WAIT, |m| {
                let [offered, _, _, dropped, buffered] = accounting(m);
                offered == events && dropped + buffered == events
            })
            .await;
        let [_, delivered, failed, dropped, buffered] = accounting(&metrics);
        assert_eq!((delivered, failed), (0.0, 0.0));
        assert!(dropped > 0.0 && buffered > 0.0, "{metrics:#?}");
        let bytes = value(&metrics, "activity_kafka_spool_bytes");
        assert!(bytes <= 65536.0 && bytes > 60000.0, "spool bytes {bytes}");
        let log = broker.log();
        assert!(
            log.contains("Kafka spool full: events are being dropped"),
            "{log}"
        );
        brokers.push((policy, broker, ids));
    }

    let tansu = Tansu::start_on(port).await;
    let mut reader = Reader::new(tansu.addr, &[TOPIC]);
    // Kafka acknowledges what the spools kept: every event handed over was delivered or
    // counted as dropped. (The counts above may have been read while the last events were
    // still in memory on their way to the spool, where they dropped more: not compared.)
    let mut kept = Vec::new();
    for (policy, broker, _) in &brokers {
        let metrics = broker
            .wait_metrics("the spool delivered", METRICS_WAIT, |m| {
                value(m, "activity_kafka_buffered") == 0.0
            })
            .await;
        let [offered, delivered, failed, dropped, buffered] = accounting(&metrics);
        let events = 2.0 * CLIENTS as f64;
        assert_eq!(
            (offered, delivered + dropped, failed, buffered),
            (events, events, 0.0, 0.0),
            "{policy}: {metrics:#?}"
        );
        // A counter of whole events: its text is an integer.
        let delivered: usize = delivered.to_string().parse().expect("a whole number");
        kept.push(delivered);
    }
    let total: usize = kept.iter().sum();
    let all = read_exactly(&mut reader, total).await;
    for ((policy, broker, ids), kept) in brokers.into_iter().zip(kept) {
        let got: Vec<(String, String)> = all
            .iter()
            .filter(|(_, key)| key.starts_with(policy))
            .cloned()
            .collect();
        assert_eq!(got.len(), kept, "{policy}: what the spool kept arrives");
        assert_kept(&got, &ids, policy == "drop_newest", &reader.describe());
        terminate_with_everything_delivered(broker).await;
    }
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_kafka_down_says_how_many_events_are_left() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kafka = format!("127.0.0.1:{}", free_port());
    let broker = BrokerProcess::start(
        Path::new(BINARY),
        &["--kafka-brokers", &kafka],
        &dir.path().join("broker.log"),
    )
    .await;
    for i in 0..2 {
        visit(broker.addr, &format!("left-{i}")).await;
    }
    let metrics = broker
        .wait_metrics("4 events waiting", METRICS_WAIT, |m| {
            accounting(m) == [4.0, 0.0, 0.0, 0.0, 4.0]
        })
        .await;
    assert_eq!(
        value(&metrics, "activity_kafka_ready"),
        0.0,
        "Kafka is down"
    );
    // The default flush_timeout_ms (5 s) passes with Kafka unreachable.
    let (success, log) = broker.terminate().await;
    assert!(success, "exit status 0 after SIGTERM:\n{log}");
    assert!(
        log.contains("Kafka sink stopped with events undelivered: they are lost left=4"),
        "{log}"
    );
    // The outage was logged once, not once per event.
    assert_eq!(log.matches("Kafka unreachable").count(), 1, "{log}");
}

/// Reads until no new record arrived for 2 s (bounded by [`KAFKA_WAIT`] in all), then returns
/// every record read.
async fn read_until_quiet(reader: &mut Reader) -> &[Record] {
    let deadline = tokio::time::Instant::now() + KAFKA_WAIT;
    loop {
        let before = reader.records.len();
        let after = reader
            .read(before + 1000, Duration::from_secs(2))
            .await
            .len();
        if after == before || tokio::time::Instant::now() >= deadline {
            return &reader.records;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_events_flow_with_fsync_always_leaves_no_hole() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("broker.log");
    let tansu = Tansu::start().await;
    let config = write_config(
        dir.path(),
        "flow",
        tansu.addr,
        "\"always\"",
        1 << 24,
        "drop_oldest",
    );
    let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;

    // One publisher, QoS 1, payloads 0, 1, 2, ... as fast as the broker takes them, until its
    // connection dies with the broker.
    let (client, mut eventloop) =
        rumqttc::AsyncClient::new(tests::options(broker.addr, "flow"), 100);
    let polling = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let publishing = tokio::spawn(async move {
        let mut n = 0u64;
        while client
            .publish("load/flow", rumqttc::QoS::AtLeastOnce, false, n.to_string())
            .await
            .is_ok()
        {
            n += 1;
        }
    });
    broker
        .wait_metrics("300 events delivered", METRICS_WAIT, |m| {
            value(m, "activity_kafka_delivered_total") >= 300.0
        })
        .await;
    // Killed while events flow: some are in flight, some acknowledged but not yet removed.
    broker.kill();
    publishing.abort();
    polling.abort();

    let broker = BrokerProcess::start(Path::new(BINARY), &["--config", &config], &log).await;
    broker
        .wait_metrics("the spool delivered", METRICS_WAIT, |m| {
            value(m, "activity_kafka_buffered") == 0.0
                && value(m, "activity_kafka_spool_events") == 0.0
        })
        .await;
    let mut reader = Reader::new(tansu.addr, &[TOPIC]);
    let seqs = message_numbers(read_until_quiet(&mut reader).await);
    // Everything spooled before the kill arrives: the publishes 0 to some n, with no hole
    // (only events not yet in the spool, the newest, may be lost). Some may arrive twice: at
    // most the 20,000 the sink keeps in flight.
    let mut distinct = seqs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let last = *distinct.last().expect("some publishes arrived");
    assert_eq!(distinct, (0..=last).collect::<Vec<_>>(), "no hole");
    let twice = seqs.len() - distinct.len();
    assert!(twice <= 20_000, "{twice} sent twice");
    // Each publisher's events in order, apart from those sent again.
    let first_time: Vec<u64> = {
        let mut seen = std::collections::BTreeSet::new();
        seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
    };
    assert_eq!(first_time, distinct, "in order");
    eprintln!(
        "{} publishes arrived, {twice} of them twice",
        distinct.len()
    );
    let (success, log) = broker.terminate().await;
    assert!(success, "exit status 0 after SIGTERM:\n{log}");
    tansu.stop().await;
}
