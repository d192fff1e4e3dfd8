//! End-to-end, tap mode: what only a tap has: its shutdown, an upstream broker that dies, is
//! unreachable or speaks TLS, TLS terminated at the tap, its connect timeout and connection
//! limit. Takeover, keep-alive expiry and bad client bytes are the conformance suite's
//! (`tests/conformance.rs`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::event::EventKind;
use adapter_tokio::config::{TlsConfig, UpstreamTlsConfig};
use rumqttc::ConnectReturnCode;
use serde_json::json;
use tests::certs::self_signed;
use tests::kafka::{Tansu, kafka_config};
use tests::ports::free_port;
use tests::tap::{Mosquitto, start_default_tap, start_tap, tap_config, wait_publisher};
use tests::{
    Client, ConnectFailure, Monitor, RawClient, WAIT, assert_fields, mosquitto_pub, options,
};

#[tokio::test]
async fn tap_shutdown_reports_server_shutdown_upstream() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;
    let mut client = Client::connect(tap.local_addr(), "stayer").await;
    let connected = monitor.next_event("connected", "stayer").await;

    // A monitor through the tap itself (loopback may read the system topics) still receives
    // the shutdown events: its connection ends at once too, but keeps relaying what mosquitto
    // sends until the tap closes every connection.
    let mut inside = Monitor::start_as(options(tap.local_addr(), "inside")).await;
    let shutdown = tokio::spawn(tap.shutdown());
    for monitor in [&mut monitor, &mut inside] {
        let gone = monitor.next_event("disconnected", "stayer").await;
        assert_fields(
            &gone,
            tests::with_reason_code(
                json!({"client_id": "stayer", "reason": "server_shutdown", "connected_at": connected.ts()}),
                &gone,
            ),
            &["ts"],
        );
    }
    assert!(
        client.wait_closed(WAIT).await.is_some(),
        "the client is closed"
    );
    assert!(
        inside.wait_closed(WAIT).await.is_some(),
        "the monitor through the tap is closed by the shutdown"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes within 10 s")
        .expect("shutdown task");
}

#[tokio::test]
async fn killing_the_upstream_broker_reports_upstream_closed() {
    let tansu = Tansu::start().await;
    let mosquitto = Mosquitto::start().await;
    let mut config = kafka_config(tansu.addr);
    config.upstream = tap_config(mosquitto.addr).upstream;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    let mut client = Client::connect(tap.local_addr(), "orphan").await;

    mosquitto.kill().await;
    assert!(
        client.wait_closed(WAIT).await.is_some(),
        "the client is closed"
    );
    let mut reader = tests::kafka::Reader::new(tansu.addr, &["SYSTEM.presence.disconnected"]);
    let records = reader.expect(1, Duration::from_secs(30)).await;
    assert_eq!(records[0].key, "orphan");
    assert_eq!(records[0].json["reason"], "upstream_closed");
    assert_eq!(tap.connected_clients(), 0);
}

#[tokio::test]
async fn an_unreachable_upstream_gets_connack_3_and_the_tap_recovers_when_it_appears() {
    let port = free_port();
    let upstream = ([127, 0, 0, 1], port).into();
    let tap = start_default_tap(upstream).await;
    let addr = tap.local_addr();

    match Client::connect_with(options(addr, "early")).await {
        Err(ConnectFailure::Refused(code)) => {
            assert_eq!(code, ConnectReturnCode::ServiceUnavailable);
        }
        Err(ConnectFailure::Other(e)) => panic!("no refusing CONNACK: {e}"),
        Ok(_) => panic!("the tap accepted a CONNECT it cannot relay"),
    }
    let out = mosquitto_pub(addr, &["-i", "early-mosq", "-t", "t", "-m", "m"]).await;
    assert!(!out.status.success(), "mosquitto_pub must fail: {out:?}");
    assert_eq!(
        tap.metrics().upstream_unreachable.load(Ordering::Relaxed),
        2
    );
    assert_eq!(
        tap.metrics().events_emitted[EventKind::Connected as usize].load(Ordering::Relaxed),
        0,
        "no connected event for a connection that was never relayed"
    );

    // The upstream appears: the publisher reconnects, new clients are relayed.
    let mosquitto = Mosquitto::start_on(port).await;
    wait_publisher(&tap).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;
    let _late = Client::connect(addr, "late").await;
    monitor.next_event("connected", "late").await;
}

#[tokio::test]
async fn tls_from_clients_is_terminated_at_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let (cert, key) = self_signed("tap");
    let mut config = tap_config(mosquitto.addr);
    config.tls = Some(TlsConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        cert: cert.clone(),
        key,
    });
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    let tls_addr = tap.tls_local_addr().expect("the TLS listener is up");
    let mut monitor = Monitor::start(mosquitto.addr).await;

    let cafile = cert.to_str().expect("a UTF-8 path");
    let out = mosquitto_pub(
        tls_addr,
        &[
            "--cafile", cafile, "-i", "tls-pub", "-t", "secure/t", "-q", "1", "-m", "over tls",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub over TLS: {out:?}");
    monitor.next_event("connected", "tls-pub").await;
    let message = monitor.next_event("message", "tls-pub").await;
    assert_fields(
        &message,
        json!({"pub_client_id": "tls-pub", "topic": "secure/t", "payload": "over tls",
               "payload_len": 8, "qos": 1, "retain": false}),
        &["ts"],
    );
    let gone = monitor.next_event("disconnected", "tls-pub").await;
    assert_eq!(gone.json["reason"], "normal");
}

#[tokio::test]
async fn the_tap_reaches_a_tls_upstream_with_its_ca() {
    let (cert, key) = self_signed("tap-upstream");
    let mosquitto = Mosquitto::start_tls(&cert, &key).await;
    let mut config = tap_config(mosquitto.addr);
    config.upstream.tls = Some(UpstreamTlsConfig {
        ca: cert.clone(),
        server_name: Some("localhost".to_owned()),
    });
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    // Through the tap (plain to the tap, TLS to mosquitto), the monitor and a client.
    let mut monitor = Monitor::start(tap.local_addr()).await;
    let mut client = Client::connect(tap.local_addr(), "secure-upstream").await;
    client
        .publish("s/1", rumqttc::QoS::AtLeastOnce, false, b"x")
        .await;
    let message = monitor.next_event("message", "secure-upstream").await;
    assert_eq!(message.json["topic"], "s/1");
    client.disconnect().await;
    let gone = monitor.next_event("disconnected", "secure-upstream").await;
    assert_eq!(gone.json["reason"], "normal");

    // A CA that did not sign mosquitto's certificate: no relay, CONNACK 3.
    let (other_ca, _) = self_signed("tap-upstream-other");
    let mut config = tap_config(mosquitto.addr);
    config.upstream.tls = Some(UpstreamTlsConfig {
        ca: other_ca,
        server_name: Some("localhost".to_owned()),
    });
    let untrusting = start_tap(config).await;
    match Client::connect_with(options(untrusting.local_addr(), "refused")).await {
        Err(ConnectFailure::Refused(code)) => {
            assert_eq!(code, ConnectReturnCode::ServiceUnavailable);
        }
        Err(ConnectFailure::Other(e)) => panic!("no refusing CONNACK: {e}"),
        Ok(_) => panic!("relayed to an upstream whose certificate is not trusted"),
    }
    assert_eq!(
        untrusting
            .metrics()
            .upstream_unreachable
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn connect_timeout_and_connection_limit_apply_as_in_embedded_mode() {
    let mosquitto = Mosquitto::start().await;
    let mut config = tap_config(mosquitto.addr);
    config.max_connections = 1;
    config.connect_timeout_secs = 0.5;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;

    // No CONNECT within the connect timeout: closed, counted, never relayed.
    let mut silent = RawClient::open(tap.local_addr()).await;
    assert!(silent.closed_within(WAIT).await, "closed");
    assert_eq!(tap.metrics().connect_timeouts.load(Ordering::Relaxed), 1);

    // One connection allowed: the second gets CONNACK 3.
    let _first = Client::connect(tap.local_addr(), "first").await;
    match Client::connect_with(options(tap.local_addr(), "second")).await {
        Err(ConnectFailure::Refused(code)) => {
            assert_eq!(code, ConnectReturnCode::ServiceUnavailable);
        }
        Err(ConnectFailure::Other(e)) => panic!("no refusing CONNACK: {e}"),
        Ok(_) => panic!("max_connections = 1 accepted a second client"),
    }
    assert_eq!(
        tap.metrics()
            .refused_server_unavailable
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        tap.metrics().upstream_unreachable.load(Ordering::Relaxed),
        0
    );
}
