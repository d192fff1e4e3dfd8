//! End-to-end: how connections end — takeover, keep-alive expiry, killed clients and their last
//! wills, the connect timeout, and broker shutdown.

use std::time::{Duration, Instant};

use rumqttc::{LastWill, QoS};
use serde_json::json;
use tests::{
    Client, Monitor, MosquittoSub, QUIET, RawClient, WAIT, assert_fields, connect_packet, options,
    start_broker, start_default_broker, test_config,
};

#[tokio::test]
async fn takeover_reports_takenover_before_the_new_connected() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let mut first = Client::connect(addr, "twin").await;
    let first_connected = monitor.next_event("connected", "twin").await;
    let second = Client::connect(addr, "twin").await;

    let disconnected = monitor.next_event("disconnected", "twin").await;
    assert_fields(
        &disconnected,
        json!({
            "client_id": "twin",
            "reason": "takenover",
            "connected_at": first_connected.ts(),
        }),
        &["ts"],
    );
    let second_connected = monitor.next_event("connected", "twin").await;
    assert!(
        disconnected.index < second_connected.index,
        "takenover (#{}) must come before the new connected (#{}):\n{}",
        disconnected.index,
        second_connected.index,
        monitor.describe()
    );
    assert!(
        first.wait_closed(WAIT).await.is_some(),
        "the old connection is closed"
    );
    // The new connection works and is the only one.
    assert_eq!(broker.connected_clients(), 2, "monitor and one twin");
    second.disconnect().await;
    let last = monitor.next_event("disconnected", "twin").await;
    assert_fields(
        &last,
        json!({"client_id": "twin", "reason": "normal", "connected_at": second_connected.ts()}),
        &["ts"],
    );
}

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
        json!({
            "client_id": "shared-id",
            "reason": "takenover",
            "connected_at": first_connected.ts(),
        }),
        &["ts"],
    );
    let second = monitor.next_event("connected", "shared-id").await;
    assert!(taken.index < second.index);
}

#[tokio::test]
async fn silent_client_is_dropped_after_one_and_a_half_keepalives() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let (mut raw, connack) = RawClient::connect(addr, &connect_packet("sleepy", 1, 4)).await;
    let start = Instant::now();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let connected = monitor.next_event("connected", "sleepy").await;
    assert_eq!(connected.json["keepalive"], json!(1));

    let disconnected = monitor.next_event("disconnected", "sleepy").await;
    let elapsed = start.elapsed();
    assert_fields(
        &disconnected,
        json!({
            "client_id": "sleepy",
            "reason": "keepalive_timeout",
            "connected_at": connected.ts(),
        }),
        &["ts"],
    );
    // Not before 1.5 x the keep-alive; the upper bounds leave room for a loaded machine's
    // scheduling while a broker that waited 2 x or more, or never, still fails.
    assert!(
        elapsed >= Duration::from_millis(1_300) && elapsed <= Duration::from_millis(6_000),
        "dropped after {elapsed:?}, expected about 1.5 s"
    );
    let gap = disconnected.ts() - connected.ts();
    assert!(
        (1_300..=2_900).contains(&gap),
        "ts gap {gap} ms, expected about 1500"
    );
    assert!(
        raw.closed_within(Duration::from_secs(1)).await,
        "the socket is closed"
    );
    assert_eq!(
        broker
            .metrics()
            .keepalive_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn keepalive_zero_is_never_timed_out() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let (mut raw, connack) = RawClient::connect(addr, &connect_packet("forever", 0, 4)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let connected = monitor.next_event("connected", "forever").await;
    assert_eq!(connected.json["keepalive"], json!(0));
    assert!(
        !raw.closed_within(Duration::from_secs(3)).await,
        "a keep-alive 0 client must not be dropped"
    );
    monitor
        .assert_none("disconnected of a keep-alive 0 client", QUIET, |e| {
            e.is("disconnected", "forever")
        })
        .await;
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
async fn dropped_rumqttc_client_gives_tcp_closed_and_its_will() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut watcher = Client::connect(addr, "will-watcher").await;
    watcher.subscribe("wills/#", QoS::ExactlyOnce).await;

    let mut opts = options(addr, "doomed");
    opts.set_last_will(LastWill::new("wills/doomed", "bye", QoS::AtMostOnce, false));
    let (doomed, _) = Client::connect_with(opts).await.expect("connects");
    let connected = monitor.next_event("connected", "doomed").await;
    doomed.kill().await;

    let disconnected = monitor.next_event("disconnected", "doomed").await;
    assert_fields(
        &disconnected,
        json!({"client_id": "doomed", "reason": "tcp_closed", "connected_at": connected.ts()}),
        &["ts"],
    );
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..], will.qos),
        ("wills/doomed", &b"bye"[..], QoS::AtMostOnce)
    );
}

#[tokio::test]
async fn clean_disconnect_publishes_no_will() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut watcher = Client::connect(addr, "will-watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut opts = options(addr, "polite");
    opts.set_last_will(LastWill::new(
        "wills/polite",
        "bye",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = Client::connect_with(opts).await.expect("connects");
    polite.disconnect().await;
    let ev = monitor.next_event("disconnected", "polite").await;
    assert_eq!(ev.json["reason"], json!("normal"));
    assert!(watcher.try_next_publish(QUIET).await.is_none(), "no will");
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
            json!({
                "client_id": id,
                "reason": "server_shutdown",
                "connected_at": connected.ts(),
            }),
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
