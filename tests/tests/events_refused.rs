//! End-to-end: `SYSTEM/presence/refused`, a CONNECT the server refused (issue 17), from the
//! broker and from the tap in front of Debian's mosquitto, with Debian's `mosquitto_pub`
//! (MQTT 3.1.1 and 5), rumqttc and raw sockets; on its own Kafka topic against a real tansu;
//! switched off, at its own QoS, and bounded for all clients by `events.rate_limit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::event::EventKind;
use adapter_tokio::auth::hash_password;
use adapter_tokio::config::{Config, UserConfig};
use adapter_tokio::metrics::Metrics;
use rumqttc::QoS;
use serde_json::json;
use tests::kafka::{PROBLEM_TOPICS, Reader, Tansu, kafka_config};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::{
    Client, ConnectFailure, Ev, Monitor, QUIET, RawClient, WAIT, assert_fields, assert_ts_recent,
    connect_packet, mosquitto_pub, options, peer_addr, start_broker, test_config,
};
use tokio::time::{Instant, sleep};

/// `config` with the user `ops` (password `ops-pw`).
fn with_ops(mut config: Config) -> Config {
    config.users = vec![UserConfig {
        username: "ops".into(),
        password_hash: hash_password("ops-pw").expect("hash"),
    }];
    config
}

/// Waits for the `refused` event of `client_id` and checks its fields (and a loopback peer).
async fn refused(monitor: &mut Monitor, client_id: &str, expected: serde_json::Value) -> Ev {
    let ev = monitor
        .wait_for(&format!("refused of {client_id:?}"), |e| {
            e.kind() == "refused" && e.json["client_id"] == client_id
        })
        .await;
    assert_fields(&ev, expected, &["peer", "ts"]);
    assert!(peer_addr(&ev).ip().is_loopback(), "{}", ev.json);
    assert_ts_recent(&ev);
    ev
}

/// `mosquitto_pub` that must be refused: its arguments after `-h`/`-p`.
async fn refused_pub(addr: SocketAddr, args: &[&str]) {
    let mut all = vec!["-t", "t", "-m", "m"];
    all.extend_from_slice(args);
    let out = mosquitto_pub(addr, &all).await;
    assert!(!out.status.success(), "mosquitto_pub {args:?} was refused");
}

async fn wait_metric(metrics: &Metrics, what: &str, condition: impl Fn(&Metrics) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition(metrics) {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_broker_reports_every_refusal_with_its_code_and_reason() {
    let mut config = with_ops(test_config());
    config.max_connections = 2;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    // Bad credentials, MQTT 3.1.1 and MQTT 5 (mosquitto_pub).
    refused_pub(addr, &["-i", "bad-pw", "-u", "ops", "-P", "wrong"]).await;
    refused(
        &mut monitor,
        "bad-pw",
        json!({"client_id":"bad-pw","username":"ops","reason_code":4,
            "reason":"bad_username_or_password"}),
    )
    .await;
    refused_pub(
        addr,
        &["-V", "mqttv5", "-i", "bad-pw5", "-u", "ops", "-P", "wrong"],
    )
    .await;
    refused(
        &mut monitor,
        "bad-pw5",
        json!({"client_id":"bad-pw5","username":"ops","reason_code":0x86,
            "reason":"bad_username_or_password"}),
    )
    .await;

    // The reserved client id (rumqttc).
    match Client::connect_with(options(addr, "broker")).await {
        Err(ConnectFailure::Refused(_)) => {}
        other => panic!("the reserved id is refused: {:?}", other.map(|_| ())),
    }
    refused(
        &mut monitor,
        "broker",
        json!({"client_id":"broker","reason_code":2,"reason":"client_identifier_not_valid"}),
    )
    .await;

    // An unknown protocol level (a raw socket): no client id is read.
    let (_raw, connack) = RawClient::connect(addr, &connect_packet("v9", 30, 9)).await;
    assert_eq!(connack, [0x20, 2, 0, 1]);
    refused(
        &mut monitor,
        "",
        json!({"client_id":"","reason_code":1,"reason":"unsupported_protocol_version"}),
    )
    .await;

    // The connection limit: the monitor and one more fill it.
    let holder = Client::connect(addr, "holder").await;
    refused_pub(addr, &["-i", "one-too-many"]).await;
    refused(
        &mut monitor,
        "one-too-many",
        json!({"client_id":"one-too-many","reason_code":3,"reason":"server_busy"}),
    )
    .await;
    holder.disconnect().await;
    assert!(
        broker.metrics().events_emitted[EventKind::Refused as usize].load(Ordering::Relaxed) >= 5
    );
}

#[tokio::test]
async fn anonymous_refusals_and_the_switch_and_qos_of_refused() {
    // `allow_anonymous = false`, `refused` at QoS 0.
    let mut config = with_ops(test_config());
    config.access.allow_anonymous = false;
    config.events.refused.qos = Some(0);
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut opts = options(addr, "monitor");
    opts.set_credentials("ops", "ops-pw");
    let mut monitor = Monitor::start_as(opts).await;
    refused_pub(addr, &["-i", "anon"]).await;
    let ev = refused(
        &mut monitor,
        "anon",
        json!({"client_id":"anon","reason_code":5,"reason":"not_authorized"}),
    )
    .await;
    assert_eq!(ev.qos, QoS::AtMostOnce, "events.refused.qos = 0");

    // Switched off: counted as a refusal, no event.
    let mut config = test_config();
    config.events.refused.enabled = false;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let (_raw, connack) = RawClient::connect(addr, &connect_packet("broker", 30, 4)).await;
    assert_eq!(connack, [0x20, 2, 0, 2]);
    wait_metric(broker.metrics(), "the refusal counted", |m| {
        m.connections_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    monitor
        .assert_none("refused while off", QUIET, |e| e.kind() == "refused")
        .await;
}

#[tokio::test]
async fn a_flood_of_refused_connects_is_bounded_for_all_clients() {
    let mut config = test_config();
    config.events.rate_limit = 5;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    // 60 connections with the reserved id, each its own socket (no per-connection bound
    // applies: each is refused once).
    let attempts = 60;
    for _ in 0..attempts {
        let (_raw, connack) = RawClient::connect(addr, &connect_packet("broker", 30, 4)).await;
        assert_eq!(connack, [0x20, 2, 0, 2]);
    }
    let metrics = broker.metrics().clone();
    let suppressed =
        || metrics.events_suppressed[EventKind::Refused as usize].load(Ordering::Relaxed);
    // Every refusal is either an event or suppressed, and counted.
    let mut events: Vec<Ev> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while events.len() as u64 + suppressed() < attempts {
        assert!(
            Instant::now() < deadline,
            "{} events and {} suppressed of {attempts}",
            events.len(),
            suppressed()
        );
        if let Some(ev) = monitor
            .try_wait_for(Duration::from_millis(50), &|e: &Ev| e.kind() == "refused")
            .await
        {
            events.push(ev);
        }
    }
    assert!(
        suppressed() > 0,
        "60 refusals in a few seconds exceed 5 per second"
    );
    // At most 5 in any second of the events' clock.
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for ev in &events {
        *per_second.entry(ev.ts() / 1000).or_default() += 1;
    }
    assert!(
        per_second.values().all(|n| *n <= 5),
        "per second: {per_second:?}"
    );
    let rendered = metrics.render();
    assert!(
        rendered.contains(&format!(
            "activity_events_suppressed_total{{kind=\"refused\"}} {}",
            suppressed()
        )),
        "{rendered}"
    );
    monitor
        .assert_none("more refused events", QUIET, |e| e.kind() == "refused")
        .await;
}

#[tokio::test]
async fn the_tap_reports_its_own_refusals() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_tap(with_ops(tap_config(mosquitto.addr))).await;
    wait_publisher(&tap).await;
    // The events go to the upstream broker.
    let mut monitor = Monitor::start(mosquitto.addr).await;
    let addr = tap.local_addr();
    refused_pub(addr, &["-i", "tap-bad-pw", "-u", "ops", "-P", "nope"]).await;
    refused(
        &mut monitor,
        "tap-bad-pw",
        json!({"client_id":"tap-bad-pw","username":"ops","reason_code":4,
            "reason":"bad_username_or_password"}),
    )
    .await;
    match Client::connect_with(options(addr, "broker")).await {
        Err(ConnectFailure::Refused(_)) => {}
        other => panic!("the reserved id is refused: {:?}", other.map(|_| ())),
    }
    refused(
        &mut monitor,
        "broker",
        json!({"client_id":"broker","reason_code":2,"reason":"client_identifier_not_valid"}),
    )
    .await;
}

#[tokio::test]
async fn refused_events_go_to_their_own_kafka_topic() {
    let tansu = Tansu::start().await;
    let broker = start_broker(with_ops(kafka_config(tansu.addr))).await;
    let addr = broker.local_addr();
    refused_pub(addr, &["-i", "kafka-bad-pw", "-u", "ops", "-P", "wrong"]).await;
    let mut reader = Reader::new(tansu.addr, &PROBLEM_TOPICS[..1]);
    let records = reader.expect(1, Duration::from_secs(30)).await;
    let record = &records[0];
    assert_eq!(record.topic, "SYSTEM.presence.refused");
    assert_eq!(record.key, "kafka-bad-pw", "keyed by the client id");
    assert_eq!(record.header("kind"), Some("refused"));
    assert_eq!(record.json["username"], "ops");
    assert_eq!(record.json["reason_code"], 4);
    assert_eq!(record.json["reason"], "bad_username_or_password");
    drop(broker);
    tansu.stop().await;
}
