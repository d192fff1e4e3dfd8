//! The TLS listener with Debian's mosquitto clients, the Prometheus endpoint, and `$` topics.

use std::time::Duration;

use adapter_tokio::config::TlsConfig;
use rumqttc::QoS;
use serde_json::json;
use tests::certs::self_signed;
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tls_listener_serves_mosquitto_clients_and_reports_their_events() {
    let (cert, key) = self_signed("mosquitto");
    let mut config = test_config();
    config.tls = Some(TlsConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        cert: cert.clone(),
        key,
    });
    let broker = start_broker(config).await;
    let tls_addr = broker.tls_local_addr().expect("the TLS listener is up");
    let mut monitor = Monitor::start(broker.local_addr()).await;

    let cafile = cert.to_str().expect("a UTF-8 path");
    let out = mosquitto_pub(
        tls_addr,
        &[
            "--cafile", cafile, "-i", "tls-pub", "-t", "secure/t", "-q", "1", "-m", "over tls",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub over TLS: {out:?}");

    let connected = monitor.next_event("connected", "tls-pub").await;
    assert_fields(
        &connected,
        json!({"client_id": "tls-pub", "proto_ver": 4, "keepalive": 60, "clean_session": true,
               "transport": "tls"}),
        &["peer", "ts"],
    );
    let message = monitor.next_event("message", "tls-pub").await;
    assert_fields(
        &message,
        json!({"pub_client_id": "tls-pub", "topic": "secure/t", "payload": "over tls",
               "payload_len": 8, "qos": 1, "retain": false}),
        &["ts"],
    );
    let gone = monitor.next_event("disconnected", "tls-pub").await;
    assert_eq!(gone.json["reason"], "normal");

    // Plain MQTT on the TLS port is not a TLS handshake: no session, no event.
    let out = mosquitto_pub(tls_addr, &["-i", "plain-on-tls", "-t", "x", "-m", "y"]).await;
    assert!(
        !out.status.success(),
        "plain MQTT must fail on the TLS port"
    );
    monitor
        .assert_none(
            "an event for a client that never finished TLS",
            QUIET,
            |ev| ev.subject() == Some("plain-on-tls"),
        )
        .await;
    broker.shutdown().await;
}

/// One sample of the Prometheus text at `addr`, by exact series name.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("request sent");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("the metrics endpoint answers in time")
        .expect("response read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn metrics_endpoint_counts_connections_events_and_denials() {
    let mut config = test_config();
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let broker = start_broker(config).await;
    let metrics_addr = broker.metrics_addr().expect("the metrics listener is up");
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let mut client = Client::connect(broker.local_addr(), "counted").await;
    client
        .publish("plain/t", QoS::AtLeastOnce, false, b"x")
        .await;
    client
        .publish("SYSTEM/message", QoS::AtLeastOnce, false, b"spoof")
        .await;
    monitor.next_event("message", "counted").await;
    // A marker after the spoof attempt: once it is seen, the denial has been counted.
    client
        .publish("plain/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    monitor
        .wait_for("the marker's message event", |ev| {
            ev.kind() == "message" && ev.json["topic"] == "plain/marker"
        })
        .await;

    let text = scrape(metrics_addr).await;
    assert_eq!(sample(&text, "activity_connections_current"), 2.0);
    assert_eq!(
        sample(&text, "activity_events_emitted_total{kind=\"connected\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "activity_events_emitted_total{kind=\"message\"}"),
        2.0
    );
    assert_eq!(sample(&text, "activity_publishes_denied_total"), 1.0);
    assert_eq!(sample(&text, "activity_events_dropped_total"), 0.0);

    client.disconnect().await;
    monitor.next_event("disconnected", "counted").await;
    let text = scrape(metrics_addr).await;
    assert_eq!(sample(&text, "activity_connections_current"), 1.0);
    assert_eq!(
        sample(
            &text,
            "activity_events_emitted_total{kind=\"disconnected\"}"
        ),
        1.0
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn dollar_topics_are_refused_and_never_reach_wildcard_subscribers() {
    let broker = start_default_broker().await;
    let mut subscriber = Client::connect(broker.local_addr(), "wild").await;
    subscriber.subscribe("#", QoS::AtLeastOnce).await;
    // The router serves no `$` topics: the front refuses the filter and keeps the client.
    let codes = subscriber
        .subscribe_many(&[("$app/#", QoS::AtLeastOnce), ("+/status", QoS::AtLeastOnce)])
        .await;
    assert_eq!(codes.len(), 2);
    assert!(
        matches!(codes[0], rumqttc::SubscribeReasonCode::Failure),
        "{codes:?}"
    );
    assert!(
        matches!(codes[1], rumqttc::SubscribeReasonCode::Success(_)),
        "{codes:?}"
    );
    let mut publisher = Client::connect(broker.local_addr(), "pub").await;
    publisher
        .publish("$app/status", QoS::AtLeastOnce, false, b"hidden")
        .await;
    publisher
        .publish("plain/status", QoS::AtLeastOnce, false, b"seen")
        .await;

    // `#` and `+/status` each match `plain/status`; nothing may deliver `$app/status`.
    let mut topics = Vec::new();
    while let Some(p) = subscriber
        .try_next_publish(Duration::from_millis(500))
        .await
    {
        // `#` also receives the events (this client is on loopback): not what is tested here.
        if !p.topic.starts_with("SYSTEM/") {
            topics.push(p.topic.clone());
        }
    }
    assert!(
        !topics.is_empty() && topics.iter().all(|t| t == "plain/status"),
        "wildcard subscriber got {topics:?}"
    );
    assert!(!subscriber.is_closed(), "the client stays connected");
    assert_eq!(
        broker
            .metrics()
            .publishes_denied
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    broker.shutdown().await;
}
