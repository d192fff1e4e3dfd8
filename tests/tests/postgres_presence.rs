//! End-to-end: the presence example (`examples/presence-postgres/presence.py`) keeps its
//! `presence` and `acks` tables in a real PostgreSQL (Debian's, started per test) from the
//! events of a real broker, read from a real tansu Kafka or over MQTT; a replay changes
//! nothing, and a takeover delivered out of order leaves the newer session online.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rumqttc::QoS;
use serde_json::{Value, json};
use tests::kafka::{Tansu, committed, create_topics, kafka_config};
use tests::postgres::{Postgres, PresenceConsumer, example_dir};
use tests::{Client, Ev, Monitor, start_broker, test_config};
use tokio::time::{Instant, sleep};

/// The Kafka topics the example reads: connected, disconnected, msgack.
const TOPICS: [&str; 3] = [
    "SYSTEM.presence.connected",
    "SYSTEM.presence.disconnected",
    "SYSTEM.msgack",
];

/// A message with an envelope: its acknowledgements become `msgack` events.
const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"on"}"#;

/// How long the example may take to join its group and catch up (the first group join alone
/// takes a few seconds).
const CATCH_UP: Duration = Duration::from_secs(60);

/// Every presence row, timestamps as milliseconds since the Unix epoch.
const PRESENCE: &str = "SELECT client_id, online, session_seq, \
     (extract(epoch FROM connected_at) * 1000)::bigint AS connected_at, \
     (extract(epoch FROM disconnected_at) * 1000)::bigint AS disconnected_at, \
     reason, username, peer, node, last_event, \
     (extract(epoch FROM last_event_at) * 1000)::bigint AS last_event_at \
     FROM presence ORDER BY client_id";

/// Every acks row, its timestamp as milliseconds since the Unix epoch.
const ACKS: &str = "SELECT product_id, message_id, ack_client_id, \
     (extract(epoch FROM ts) * 1000)::bigint AS ts, pub_client_id, topic, qos, reason_code \
     FROM acks ORDER BY product_id, message_id, ack_client_id";

/// A new PostgreSQL with the example's schema.
async fn database() -> Postgres {
    let pg = Postgres::start().await;
    pg.run_file(&example_dir().join("schema.sql")).await;
    // Applying it again is harmless (a user upgrading runs it again).
    pg.run_file(&example_dir().join("schema.sql")).await;
    pg
}

/// The example reading Kafka at `kafka` in consumer group `group`, with short group timers.
fn kafka_consumer(pg: &Postgres, kafka: std::net::SocketAddr, group: &str) -> PresenceConsumer {
    PresenceConsumer::start(
        &pg.url(),
        &[
            "--kafka",
            &kafka.to_string(),
            "--group",
            group,
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
            "-X",
            "topic.metadata.refresh.interval.ms=500",
            "-X",
            "fetch.wait.max.ms=50",
        ],
    )
}

/// The committed offsets of a group that consumed `counts` records per topic of [`TOPICS`].
fn offsets(counts: [i64; 3]) -> Vec<Option<i64>> {
    counts
        .iter()
        .map(|&count| (count > 0).then_some(count))
        .collect()
}

/// Waits until consumer group `group` committed `counts` (records per topic of [`TOPICS`]):
/// the example wrote everything up to there into the database.
async fn wait_committed(
    kafka: std::net::SocketAddr,
    group: &str,
    counts: [i64; 3],
    consumer: &mut PresenceConsumer,
) {
    let want = offsets(counts);
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let got = committed(kafka, group, &TOPICS);
        if got == want {
            return;
        }
        assert!(
            consumer.is_running(),
            "presence.py exited:\n{}",
            consumer.log()
        );
        assert!(
            Instant::now() < deadline,
            "group {group} committed {got:?}, not {want:?}, within {CATCH_UP:?}:\n{}",
            consumer.log()
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// The `session_seq` of a connected or disconnected event.
fn seq(ev: &Ev) -> u64 {
    ev.json["session_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no session_seq in {}", ev.json))
}

/// The row of `client_id` among `rows`.
fn row<'a>(rows: &'a [Value], client_id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["client_id"] == client_id)
        .unwrap_or_else(|| panic!("no row for {client_id}: {rows:#?}"))
}

/// Checks the presence row of the client of `connected` against its events: online with that
/// session, or offline by `disconnected`.
fn assert_session(rows: &[Value], connected: &Ev, disconnected: Option<&Ev>) {
    let client = connected.subject().expect("a client id");
    let got = row(rows, client);
    let expected = match disconnected {
        None => json!({
            "online": true,
            "session_seq": seq(connected),
            "connected_at": connected.ts(),
            "disconnected_at": null,
            "reason": null,
            "peer": connected.json["peer"],
            "last_event": "connected",
            "last_event_at": connected.ts(),
        }),
        Some(gone) => json!({
            "online": false,
            "session_seq": seq(gone),
            "connected_at": connected.ts(),
            "disconnected_at": gone.ts(),
            "reason": gone.json["reason"],
            "peer": connected.json["peer"],
            "last_event": "disconnected",
            "last_event_at": gone.ts(),
        }),
    };
    for (field, value) in expected.as_object().expect("an object") {
        assert_eq!(&got[field], value, "{field} of {client}: {got:#}");
    }
}

/// The records per topic of [`TOPICS`] that `events` (seen on MQTT) became.
fn counts(events: &[&Ev]) -> [i64; 3] {
    let mut counts = [0; 3];
    for ev in events {
        let topic = ev.topic.replace('/', ".");
        let i = TOPICS
            .iter()
            .position(|t| *t == topic)
            .expect("a kept kind");
        counts[i] += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_events_fill_the_tables_and_a_replay_changes_nothing() {
    let pg = database().await;
    let tansu = Tansu::start().await;
    let broker = start_broker(kafka_config(tansu.addr)).await;
    let addr = broker.local_addr();
    // The monitor's own connected (which it cannot see) goes to Kafka too.
    let mut monitor = Monitor::start(addr).await;
    let mut consumer = kafka_consumer(&pg, tansu.addr, "presence");

    let mut sub = Client::connect(addr, "sub").await;
    let sub_on = monitor.next_event("connected", "sub").await;
    sub.subscribe("devices/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "pub").await;
    let pub_on = monitor.next_event("connected", "pub").await;
    publisher
        .publish("devices/7/cmd", QoS::AtLeastOnce, false, ENVELOPE)
        .await;
    sub.next_publish().await; // rumqttc acknowledges it: the msgack.
    let ack = monitor.next_event("msgack", "sub").await;
    publisher.disconnect().await;
    let pub_off = monitor.next_event("disconnected", "pub").await;

    // A takeover: twin connects again while its first session is up.
    let first_twin = Client::connect(addr, "twin").await;
    let twin_on = monitor.next_event("connected", "twin").await;
    let second_twin = Client::connect(addr, "twin").await;
    let twin_taken = monitor.next_event("disconnected", "twin").await;
    assert_eq!(twin_taken.json["reason"], "takenover");
    let twin_again = monitor.next_event("connected", "twin").await;
    assert!(
        seq(&twin_again) > seq(&twin_on),
        "{} then {}",
        twin_on.json,
        twin_again.json
    );
    sub.disconnect().await;
    let sub_off = monitor.next_event("disconnected", "sub").await;

    let events = [
        &sub_on,
        &pub_on,
        &ack,
        &pub_off,
        &twin_on,
        &twin_taken,
        &twin_again,
        &sub_off,
    ];
    let mut counts = counts(&events);
    counts[0] += 1; // the monitor's connected
    wait_committed(tansu.addr, "presence", counts, &mut consumer).await;

    let presence = pg.rows(PRESENCE).await;
    assert_eq!(presence.len(), 4, "{presence:#?}");
    assert_eq!(row(&presence, "monitor")["online"], true, "{presence:#?}");
    assert_session(&presence, &sub_on, Some(&sub_off));
    assert_session(&presence, &pub_on, Some(&pub_off));
    assert_eq!(pub_off.json["reason"], "normal");
    assert_session(&presence, &twin_again, None);
    let acks = pg.rows(ACKS).await;
    assert_eq!(
        acks,
        vec![json!({
            "product_id": "p1",
            "message_id": "m42",
            "ack_client_id": "sub",
            "ts": ack.ts(),
            "pub_client_id": "pub",
            "topic": "devices/7/cmd",
            "qos": 1,
            "reason_code": null,
        })]
    );
    let (clean, log) = consumer.stop().await;
    assert!(clean, "presence.py did not exit cleanly:\n{log}");

    // A replay of everything (a new group reads from the beginning, as after an offset reset):
    // every event is now stale or a repeat, so no row changes.
    let mut replay = kafka_consumer(&pg, tansu.addr, "replay");
    wait_committed(tansu.addr, "replay", counts, &mut replay).await;
    assert_eq!(pg.rows(PRESENCE).await, presence, "{}", replay.log());
    assert_eq!(pg.rows(ACKS).await, acks, "{}", replay.log());
    let (clean, log) = replay.stop().await;
    assert!(clean, "presence.py did not exit cleanly:\n{log}");
    assert!(
        log.contains(&format!("{} events: 0 changed a row", events.len() + 1)),
        "the replay wrote rows:\n{log}"
    );
    drop((first_twin, second_twin, monitor));
    broker.shutdown().await;
    tansu.stop().await;
}

/// A producer for crafted events.
fn producer(kafka: std::net::SocketAddr) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka.to_string())
        .set("linger.ms", "0")
        .create()
        .expect("the producer starts")
}

/// Produces `event` as the broker's Kafka sink would: on its kind's topic, keyed by its
/// client, with the `kind` and `ts` headers. Returns the topic's index in [`TOPICS`].
async fn produce(producer: &FutureProducer, kind: &str, event: &Value) -> usize {
    let index = match kind {
        "connected" => 0,
        "disconnected" => 1,
        "msgack" => 2,
        other => panic!("not a kept kind: {other}"),
    };
    let key = event["client_id"]
        .as_str()
        .or(event["ack_client_id"].as_str())
        .unwrap_or("");
    let payload = event.to_string();
    let ts = event["ts"].to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "kind",
            value: Some(kind),
        })
        .insert(Header {
            key: "ts",
            value: Some(&ts),
        });
    let record = FutureRecord::to(TOPICS[index])
        .key(key)
        .payload(&payload)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("{payload} not delivered: {e}"));
    index
}

/// A connected event of `client` in session `seq` at `ts`, seen by tap `node`.
fn connected(client: &str, seq: u64, ts: u64, node: &str, username: &str) -> Value {
    json!({
        "client_id": client, "username": username, "proto_ver": 4, "keepalive": 60,
        "clean_session": true, "peer": format!("10.0.0.{seq}:5000"), "transport": "tcp",
        "ts": ts, "node": node, "session_seq": seq,
    })
}

/// The disconnected event of session `seq` of `client` that connected at `connected_at`, seen
/// by tap `node`.
fn disconnected(
    client: &str,
    seq: u64,
    connected_at: u64,
    ts: u64,
    reason: &str,
    node: &str,
) -> Value {
    json!({
        "client_id": client, "reason": reason, "connected_at": connected_at, "ts": ts,
        "node": node, "session_seq": seq,
    })
}

/// A msgack of (p7, m1) by `client` at `ts`.
fn msgack(client: &str, ts: u64) -> Value {
    json!({
        "pub_client_id": "controller", "ack_client_id": client, "product_id": "p7",
        "message_id": 1, "topic": "devices/7/cmd", "qos": 1, "ts": ts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_delivered_out_of_order_leaves_the_newer_session_online() {
    let pg = database().await;
    let tansu = Tansu::start().await;
    create_topics(tansu.addr, &TOPICS).await;
    let producer = producer(tansu.addr);
    let mut consumer = kafka_consumer(&pg, tansu.addr, "presence");
    let mut counts = [0i64; 3];

    // "twin" moved from tap-a (session 11, connected at 1000) to tap-b (session 12, at 2000);
    // tap-a saw its socket close later, at 2500. Kafka delivers them in the worst order, one
    // stage at a time: the newest session first.
    let stages = [
        vec![
            ("connected", connected("twin", 12, 2000, "tap-b", "u")),
            // "late": its disconnected comes before its connected.
            (
                "disconnected",
                disconnected("late", 7, 1500, 1600, "normal", "tap-a"),
            ),
            ("msgack", msgack("dev", 3000)),
        ],
        vec![
            (
                "disconnected",
                disconnected("twin", 11, 1000, 2500, "tcp_closed", "tap-a"),
            ),
            ("connected", connected("late", 7, 1500, "tap-a", "lu")),
            // A redelivery acknowledged earlier: the first acknowledgement is kept.
            ("msgack", msgack("dev", 2000)),
        ],
        vec![
            ("connected", connected("twin", 11, 1000, "tap-a", "u")),
            ("msgack", msgack("dev", 4000)),
        ],
    ];
    for stage in &stages {
        for (kind, event) in stage {
            counts[produce(&producer, kind, event).await] += 1;
        }
        wait_committed(tansu.addr, "presence", counts, &mut consumer).await;
        let presence = pg.rows(PRESENCE).await;
        let twin = row(&presence, "twin");
        assert_eq!(twin["online"], true, "{twin:#}\n{}", consumer.log());
        assert_eq!(twin["session_seq"], 12, "{twin:#}");
        assert_eq!(twin["node"], "tap-b", "{twin:#}");
        let late = row(&presence, "late");
        assert_eq!(late["online"], false, "{late:#}\n{}", consumer.log());
        assert_eq!(late["session_seq"], 7, "{late:#}");
    }
    let presence = pg.rows(PRESENCE).await;
    assert_eq!(
        presence,
        vec![
            json!({
                "client_id": "late", "online": false, "session_seq": 7,
                "connected_at": 1500, "disconnected_at": 1600, "reason": "normal",
                // Filled in by its connected, which came last.
                "username": "lu", "peer": "10.0.0.7:5000", "node": "tap-a",
                "last_event": "disconnected", "last_event_at": 1600,
            }),
            json!({
                "client_id": "twin", "online": true, "session_seq": 12,
                "connected_at": 2000, "disconnected_at": null, "reason": null,
                "username": "u", "peer": "10.0.0.12:5000", "node": "tap-b",
                "last_event": "connected", "last_event_at": 2000,
            }),
        ]
    );
    let acks = pg.rows(ACKS).await;
    assert_eq!(acks.len(), 1, "{acks:#?}");
    assert_eq!(acks[0]["ts"], 2000, "the first acknowledgement: {acks:#?}");
    assert_eq!(acks[0]["message_id"], "1", "an integer id as text");

    // Bad records are skipped, and the ones after them still count: not JSON, not an object,
    // no ts, no session_seq, and a NUL that PostgreSQL refuses in text.
    for payload in [
        "not json",
        "[1]",
        r#"{"client_id":"x"}"#,
        r#"{"client_id":"old","ts":5}"#,
        r#"{"client_id":"nul\u0000","ts":5,"session_seq":1}"#,
    ] {
        let record = FutureRecord::to(TOPICS[0]).key("x").payload(payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("{payload} not delivered: {e}"));
        counts[0] += 1;
    }
    // The same events again, in their true order this time: nothing changes.
    for (kind, event) in stages.iter().rev().flatten() {
        counts[produce(&producer, kind, event).await] += 1;
    }
    wait_committed(tansu.addr, "presence", counts, &mut consumer).await;
    assert_eq!(pg.rows(PRESENCE).await, presence, "{}", consumer.log());
    assert_eq!(pg.rows(ACKS).await, acks, "{}", consumer.log());
    let (clean, log) = consumer.stop().await;
    assert!(clean, "presence.py did not exit cleanly:\n{log}");
    assert!(log.contains("5 skipped"), "{log}");
    tansu.stop().await;
}

/// Applies the events in `sys.argv[2]` (a JSON list of `[kind, event]`) to the database at
/// `sys.argv[1]` in every order, one event per transaction as `presence.py` writes them, then
/// all of them again; prints how many orders ran, how many different tables they left, and
/// the tables of the first.
const EVERY_ORDER: &str = r#"
import itertools, json, sys
import psycopg
import presence

url, events = sys.argv[1], [tuple(e) for e in json.loads(sys.argv[2])]
store = presence.Store(url, presence.Stats())
tables, first = set(), None
with psycopg.connect(url, autocommit=True) as conn:
    for order in itertools.permutations(events):
        conn.execute("TRUNCATE presence, acks")
        for event in order:
            store.apply([event], lambda: False)
        store.apply(events, lambda: False)
        rows = conn.execute(
            "SELECT json_agg(p ORDER BY client_id)::text FROM presence p").fetchone()[0]
        tables.add(rows)
        first = first or rows
print(json.dumps({"orders": len(list(itertools.permutations(events))),
                  "tables": len(tables), "rows": json.loads(first)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_of_two_sessions_events_ends_in_the_same_row() {
    let pg = database().await;
    // Session 11 of "twin", taken over by session 12, which disconnects and whose MQTT 5 session
    // expires later (the script repeats them all after each order).
    let events = json!([
        ["connected", connected("twin", 11, 1000, "tap-a", "u")],
        [
            "disconnected",
            disconnected("twin", 11, 1000, 2500, "takenover", "tap-a")
        ],
        ["connected", connected("twin", 12, 2000, "tap-b", "u")],
        [
            "disconnected",
            disconnected("twin", 12, 2000, 3000, "normal", "tap-b")
        ],
        [
            "disconnected",
            disconnected("twin", 12, 2000, 4000, "session_expired", "tap-b")
        ],
    ]);
    let out = tokio::process::Command::new("python3")
        .args(["-c", EVERY_ORDER, &pg.url(), &events.to_string()])
        .env("PYTHONPATH", example_dir())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("a JSON line");
    assert_eq!(result["orders"], 120);
    assert_eq!(result["tables"], 1, "orders that ended differently");
    let row = &result["rows"][0];
    assert_eq!(row["online"], false, "{row:#}");
    assert_eq!(row["session_seq"], 12, "{row:#}");
    assert_eq!(row["reason"], "session_expired", "{row:#}");
    assert_eq!(row["peer"], "10.0.0.12:5000", "{row:#}");
    assert_eq!(row["node"], "tap-b", "{row:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_committed_while_the_database_is_down_and_the_batch_is_written_when_it_returns()
{
    let mut pg = database().await;
    let tansu = Tansu::start().await;
    create_topics(tansu.addr, &TOPICS).await;
    let producer = producer(tansu.addr);
    let mut consumer = kafka_consumer(&pg, tansu.addr, "presence");
    let mut counts = [0i64; 3];
    for client in ["a", "b"] {
        let event = connected(client, 1, 1000, "tap-a", "u");
        counts[produce(&producer, "connected", &event).await] += 1;
    }
    wait_committed(tansu.addr, "presence", counts, &mut consumer).await;

    // The database goes away; a leaves, c comes.
    pg.stop_server();
    let written = counts;
    let event = disconnected("a", 1, 1000, 1100, "normal", "tap-a");
    counts[produce(&producer, "disconnected", &event).await] += 1;
    let event = connected("c", 1, 1200, "tap-a", "u");
    counts[produce(&producer, "connected", &event).await] += 1;
    // The consumer read them and cannot write them: it commits nothing of them ...
    consumer
        .wait_log("database unavailable", Duration::from_secs(30))
        .await;
    assert_eq!(
        committed(tansu.addr, "presence", &TOPICS),
        offsets(written),
        "{}",
        consumer.log()
    );
    // ... until the database is back: then the same batch is written and committed.
    pg.start_server().await;
    wait_committed(tansu.addr, "presence", counts, &mut consumer).await;
    let online: Vec<(Value, Value)> = pg
        .rows(PRESENCE)
        .await
        .iter()
        .map(|r| (r["client_id"].clone(), r["online"].clone()))
        .collect();
    assert_eq!(
        online,
        [
            (json!("a"), json!(false)),
            (json!("b"), json!(true)),
            (json!("c"), json!(true)),
        ],
        "{}",
        consumer.log()
    );
    let (clean, log) = consumer.stop().await;
    assert!(clean, "presence.py did not exit cleanly:\n{log}");
    tansu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_input_keeps_the_tables_and_catches_up_after_a_restart() {
    let pg = database().await;
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mqtt = ["--mqtt", &addr.to_string()];
    let consumer = PresenceConsumer::start(&pg.url(), &mqtt);
    // Python's start may take a while on a busy machine.
    for _ in 0..3 {
        let subscribed = |ev: &Ev| ev.is("subscribed", "presence-postgres");
        if monitor.try_wait_for(CATCH_UP, &subscribed).await.is_none() {
            panic!("presence.py did not subscribe:\n{}", consumer.log());
        }
    }

    let mut sub = Client::connect(addr, "sub").await;
    let sub_on = monitor.next_event("connected", "sub").await;
    sub.subscribe("devices/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "pub").await;
    let pub_on = monitor.next_event("connected", "pub").await;
    publisher
        .publish("devices/7/cmd", QoS::AtLeastOnce, false, ENVELOPE)
        .await;
    sub.next_publish().await;
    let ack = monitor.next_event("msgack", "sub").await;
    publisher.disconnect().await;
    let pub_off = monitor.next_event("disconnected", "pub").await;

    let rows = pg
        .wait_rows(
            PRESENCE,
            "sub online, pub offline",
            Duration::from_secs(30),
            |rows| {
                rows.iter()
                    .any(|r| r["client_id"] == "sub" && r["online"] == true)
                    && rows
                        .iter()
                        .any(|r| r["client_id"] == "pub" && r["online"] == false)
            },
            || consumer.log(),
        )
        .await;
    assert_session(&rows, &sub_on, None);
    assert_session(&rows, &pub_on, Some(&pub_off));
    let acks = pg
        .wait_rows(
            ACKS,
            "the acknowledgement",
            Duration::from_secs(30),
            |rows| !rows.is_empty(),
            || consumer.log(),
        )
        .await;
    assert_eq!(acks[0]["ack_client_id"], "sub");
    assert_eq!(acks[0]["ts"], ack.ts());

    // While the example is away, its persistent session keeps the events (QoS 1) ...
    let (clean, log) = consumer.stop().await;
    assert!(clean, "presence.py did not exit cleanly:\n{log}");
    monitor
        .next_event("disconnected", "presence-postgres")
        .await;
    sub.disconnect().await;
    let sub_off = monitor.next_event("disconnected", "sub").await;
    let _late = Client::connect(addr, "late").await;
    let late_on = monitor.next_event("connected", "late").await;

    // ... and it catches up when it comes back.
    let consumer = PresenceConsumer::start(&pg.url(), &mqtt);
    let rows = pg
        .wait_rows(
            PRESENCE,
            "sub offline, late online",
            Duration::from_secs(30),
            |rows| {
                rows.iter()
                    .any(|r| r["client_id"] == "sub" && r["online"] == false)
                    && rows.iter().any(|r| r["client_id"] == "late")
            },
            || consumer.log(),
        )
        .await;
    assert_session(&rows, &sub_on, Some(&sub_off));
    assert_session(&rows, &late_on, None);
    let (clean, log) = consumer.stop().await;
    assert!(clean, "presence.py did not exit cleanly:\n{log}");
    drop(monitor);
    broker.shutdown().await;
}
