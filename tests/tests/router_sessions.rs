//! Broker mode: the sessions rumqttd's router keeps after their connection (MQTT 3.1.1 clean
//! session 0, MQTT 5 with a session expiry) end when the client says so, although clean
//! connections enter the router under pooled names (`adapter_tokio::connection::RouterNames`),
//! not under the client id; and the sessions rumqttd keeps alone (3.1.1) are bounded by
//! `max_kept_sessions`, like the MQTT 5 sessions the front keeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adapter_tokio::config::Config;
use rumqttc::QoS;
use tests::{Client, options, start_broker, start_default_broker, test_config};

/// How long a delivery that must not come is waited for.
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_connection_ends_the_session_the_router_kept() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut sensor = Client::connect(addr, "sensor").await;

    let mut persistent = options(addr, "keeper");
    persistent.set_clean_session(false);
    let (mut keeper, _) = Client::connect_with(persistent.clone())
        .await
        .expect("connects");
    keeper.subscribe("plant/t", QoS::AtLeastOnce).await;
    keeper.disconnect().await;

    // The session is kept: a reconnect finds it.
    let (keeper, connack) = Client::connect_with(persistent.clone())
        .await
        .expect("reconnects");
    assert!(connack.session_present, "the router kept the session");
    keeper.disconnect().await;

    // A clean connection of the same id ends that session ...
    Client::connect(addr, "keeper").await.disconnect().await;

    // ... so the next persistent one starts without it and its subscription.
    let (mut keeper, connack) = Client::connect_with(persistent).await.expect("reconnects");
    assert!(
        !connack.session_present,
        "the clean connection in between ended the kept session"
    );
    sensor
        .publish("plant/t", QoS::AtLeastOnce, false, b"after")
        .await;
    assert!(
        keeper.try_next_publish(QUIET).await.is_none(),
        "a delivery for the subscription of the ended session"
    );
    keeper.disconnect().await;
    sensor.disconnect().await;
    broker.shutdown().await;
}

/// Waits until `counter` reaches `want` (a session's end is counted after its DISCONNECT).
async fn wait_counter(counter: &AtomicU64, want: u64) {
    let deadline = tokio::time::Instant::now() + tests::WAIT;
    while counter.load(Ordering::Relaxed) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter at {} of {want}",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_kept_by_the_router_alone_are_bounded_by_max_kept_sessions() {
    let broker = start_broker(Config {
        max_kept_sessions: 1,
        ..test_config()
    })
    .await;
    let addr = broker.local_addr();
    let not_kept = &broker.metrics().sessions_not_kept;

    let mut first = options(addr, "first");
    first.set_clean_session(false);
    let mut second = options(addr, "second");
    second.set_clean_session(false);
    for options in [&first, &second] {
        let (client, _) = Client::connect_with(options.clone())
            .await
            .expect("connects");
        client.disconnect().await;
    }
    wait_counter(not_kept, 1).await;

    let (client, connack) = Client::connect_with(first).await.expect("reconnects");
    assert!(connack.session_present, "the first session was kept");
    client.disconnect().await;
    let (client, connack) = Client::connect_with(second).await.expect("reconnects");
    assert!(
        !connack.session_present,
        "the second session ended with its connection"
    );
    client.disconnect().await;
    // And again: the first still holds the only place.
    wait_counter(not_kept, 2).await;
    assert_eq!(not_kept.load(Ordering::Relaxed), 2);
    broker.shutdown().await;
}
