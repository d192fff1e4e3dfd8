//! End-to-end: how connections of real clients end (a takeover by mosquitto_pub, a killed
//! mosquitto_sub and its will), the connect timeout, and broker shutdown. Takeover order,
//! keep-alive and wills with raw clients are the conformance suite's (`tests/conformance.rs`).

use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::json;
use tests::{
    Client, Monitor, MosquittoSub, RawClient, WAIT, assert_fields, start_broker,
    start_default_broker, test_config,
};

#[tokio::test]
async fn takeover_by_mosquitto_pub() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let _first = Client::connect(addr, "shared-id").await;
    let first_connected = monitor.next_event("connected", "shared-id").await;
    let out = tests::mosquitto_pub(addr, &["-i", "shared-id", "-t", "t", "-m", "x"]).await;
    assert!(out.status.success(), "{out:?}");
    let taken = monitor.next_event("disconnected", "shared-id").await;
    assert_fields(
        &taken,
        tests::with_reason_code(
            json!({
                "client_id": "shared-id",
                "reason": "takenover",
                "connected_at": first_connected.ts(),
            }),
            &taken,
        ),
        &["ts"],
    );
    let second = monitor.next_event("connected", "shared-id").await;
    assert!(taken.index < second.index);
}

#[tokio::test]
async fn killed_mosquitto_sub_gives_tcp_closed_and_its_will() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut watcher = Client::connect(addr, "will-watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let sub = MosquittoSub::spawn(
        addr,
        &[
            "-i",
            "victim",
            "-t",
            "any/topic",
            "--will-topic",
            "wills/victim",
            "--will-payload",
            "victim is gone",
            "--will-qos",
            "1",
        ],
    );
    let connected = monitor.next_event("connected", "victim").await;
    monitor.next_event("subscribed", "victim").await;
    sub.kill().await;

    let disconnected = monitor.next_event("disconnected", "victim").await;
    assert_fields(
        &disconnected,
        json!({"client_id": "victim", "reason": "tcp_closed", "connected_at": connected.ts()}),
        &["ts"],
    );
    let will = watcher.next_publish().await;
    assert_eq!(will.topic, "wills/victim");
    assert_eq!(&will.payload[..], b"victim is gone");
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn silent_socket_is_closed_after_the_connect_timeout() {
    let mut config = test_config();
    config.connect_timeout_secs = 0.5;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut raw = RawClient::open(addr).await;
    let start = Instant::now();
    // Well below the default timeout (10 s), well above the configured one: scheduling delays
    // on a loaded machine cannot fail it, a timeout not applied still would.
    assert!(
        raw.closed_within(Duration::from_secs(5)).await,
        "not closed within 5 s"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}, before the 0.5 s connect timeout"
    );
    assert_eq!(
        broker
            .metrics()
            .connect_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn shutdown_reports_server_shutdown_for_every_client_before_closing() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut alpha = Client::connect(addr, "alpha").await;
    let alpha_connected = monitor.next_event("connected", "alpha").await;
    let mosq = MosquittoSub::spawn(addr, &["-i", "beta", "-t", "b/#"]);
    let beta_connected = monitor.next_event("connected", "beta").await;
    monitor.next_event("subscribed", "beta").await;

    let shutdown = tokio::spawn(broker.shutdown());

    for (id, connected) in [("alpha", &alpha_connected), ("beta", &beta_connected)] {
        let ev = monitor.next_event("disconnected", id).await;
        assert_fields(
            &ev,
            tests::with_reason_code(
                json!({
                    "client_id": id,
                    "reason": "server_shutdown",
                    "connected_at": connected.ts(),
                }),
                &ev,
            ),
            &["ts"],
        );
    }
    // The monitor received those events, then its own connection closes.
    assert!(
        monitor.wait_closed(Duration::from_secs(5)).await.is_some(),
        "the monitor's connection is closed by the shutdown"
    );
    assert!(alpha.wait_closed(WAIT).await.is_some(), "alpha is closed");
    // mosquitto_sub would retry forever: stop it.
    mosq.kill().await;
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes within 10 s")
        .expect("shutdown task");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
