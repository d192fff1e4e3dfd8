//! `GET /api/v1/events` (Server-Sent Events) read with curl: the events of real clients with
//! their ids, kinds and the JSON of the system topics, the `kinds` filter, a `Last-Event-ID`
//! replay, and the comment when the ring no longer holds what a reconnect missed.

use std::net::SocketAddr;

use adapter_tokio::broker::Broker;
use adapter_tokio::config::Config;
use rumqttc::QoS;
use tests::http::{SseItem, SseStream, http_get, wait_metric};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::*;

fn with_http(mut config: Config, ring: usize) -> Config {
    config.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    config.http.event_ring = ring;
    config
}

/// Opens the event stream at `addr` with curl `args` and waits until the server counts
/// `streams` streams open.
async fn open(addr: SocketAddr, query: &str, args: &[&str], streams: u64) -> SseStream {
    let stream = SseStream::open(&format!("http://{addr}/api/v1/events{query}"), args);
    wait_metric(addr, "activity_http_event_streams", |n| n == streams).await;
    stream
}

async fn broker(ring: usize) -> (Broker, SocketAddr) {
    let broker = start_broker(with_http(test_config(), ring)).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    (broker, http)
}

fn is(item: &SseItem, kind: &str, client: &str) -> bool {
    let json = item.json();
    item.event.as_deref() == Some(kind)
        && (json["client_id"] == client || json["pub_client_id"] == client)
}

#[tokio::test]
async fn the_stream_carries_every_event_with_its_id_kind_and_system_topic_json() {
    let (broker, http) = broker(1024).await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let mut sse = open(http, "", &[], 1).await;

    let mut client = Client::connect(broker.local_addr(), "sse-a").await;
    client.subscribe("sse/#", QoS::AtLeastOnce).await;
    client
        .publish("sse/t", QoS::AtLeastOnce, false, b"hi")
        .await;
    client.unsubscribe("sse/#").await;
    client.disconnect().await;

    let mut last_id = 0;
    for kind in [
        "connected",
        "subscribed",
        "message",
        "unsubscribed",
        "disconnected",
    ] {
        let item = sse.next_event(kind, |i| is(i, kind, "sse-a")).await;
        let ev = monitor.next_event(kind, "sse-a").await;
        assert_eq!(
            item.json(),
            ev.json,
            "{kind}: the same JSON as on the system topic"
        );
        let id = item.id.expect("an id");
        assert!(id > last_id, "ids grow: {id} after {last_id}");
        last_id = id;
    }
    sse.close().await;
    wait_metric(http, "activity_http_event_streams", |n| n == 0).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn kinds_filters_the_stream() {
    let (broker, http) = broker(1024).await;
    let mut sse = open(http, "?kinds=connected,disconnected", &[], 1).await;
    let mut client = Client::connect(broker.local_addr(), "filtered").await;
    client.subscribe("f/#", QoS::AtLeastOnce).await;
    client.publish("f/t", QoS::AtLeastOnce, false, b"x").await;
    client.disconnect().await;
    let first = sse.next_event("connected", |_| true).await;
    assert!(is(&first, "connected", "filtered"), "{first:?}");
    let second = sse.next_event("disconnected", |_| true).await;
    assert!(
        is(&second, "disconnected", "filtered"),
        "{second:?}: nothing in between"
    );
    sse.close().await;

    for query in ["?kinds=connected,nonsense", "?kinds=,"] {
        let response = http_get(http, &format!("/api/v1/events{query}")).await;
        assert_eq!(response.status, 400, "{query}: {response:?}");
        assert!(response.json()["error"].is_string());
    }
    let bad_id = tests::http::curl(
        &format!("http://{http}/api/v1/events"),
        &["-H", "Last-Event-ID: yesterday"],
    )
    .await;
    assert_eq!(bad_id.status, 400);
    broker.shutdown().await;
}

/// Connects and disconnects `n` clients named `{prefix}{i}`: two events each.
async fn churn(broker: &Broker, prefix: &str, n: usize) {
    for i in 0..n {
        Client::connect(broker.local_addr(), &format!("{prefix}{i}"))
            .await
            .disconnect()
            .await;
    }
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_what_it_missed_or_is_told_what_it_lost() {
    let (broker, http) = broker(8).await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let mut sse = open(http, "", &[], 1).await;
    let mut client = Client::connect(broker.local_addr(), "seen").await;
    let seen = sse
        .next_event("seen's connected", |i| is(i, "connected", "seen"))
        .await;
    let seen_id = seen.id.expect("an id");
    sse.close().await;
    wait_metric(http, "activity_http_event_streams", |n| n == 0).await;

    // Missed while away: three events, all still in the ring of 8.
    client.subscribe("missed/t", QoS::AtMostOnce).await;
    client.disconnect().await;
    Client::connect(broker.local_addr(), "later")
        .await
        .disconnect()
        .await;
    monitor.next_event("disconnected", "later").await;
    let header = format!("Last-Event-ID: {seen_id}");
    let mut sse = open(http, "", &["-H", &header], 1).await;
    let mut ids = Vec::new();
    for (kind, client) in [
        ("subscribed", "seen"),
        ("disconnected", "seen"),
        ("connected", "later"),
        ("disconnected", "later"),
    ] {
        let item = sse.next_event(kind, |_| true).await;
        assert!(is(&item, kind, client), "{kind} of {client}: {item:?}");
        ids.push(item.id.expect("an id"));
    }
    // The first of those four came right after the one seen, in order.
    assert_eq!(
        ids,
        (seen_id + 1..seen_id + 5).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    sse.close().await;
    wait_metric(http, "activity_http_event_streams", |n| n == 0).await;

    // Away for longer than the ring holds: 20 events for a ring of 8.
    churn(&broker, "flood-", 10).await;
    monitor.next_event("disconnected", "flood-9").await;
    let mut sse = open(http, "", &["-H", &header], 1).await;
    let note = sse.try_next(WAIT).await.expect("a first block");
    let comment = note.comment.expect("a comment line first");
    assert!(comment.contains("no longer held"), "{comment}");
    // Then the 8 the ring holds, the last one flood-9's disconnected.
    let mut replayed = Vec::new();
    while replayed.len() < 8 {
        replayed.push(sse.next_event("a replayed event", |_| true).await);
    }
    assert!(is(&replayed[7], "disconnected", "flood-9"), "{replayed:?}");
    let ids: Vec<u64> = replayed.iter().map(|i| i.id.expect("an id")).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    sse.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn the_taps_stream_carries_its_clients_events() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_tap(with_http(tap_config(mosquitto.addr), 64)).await;
    wait_publisher(&tap).await;
    let http = tap.http_addr().expect("the tap's HTTP listener is up");
    let mut sse = open(http, "?kinds=connected,subscribed,disconnected", &[], 1).await;
    let mut client = Client::connect(tap.local_addr(), "tap-sse").await;
    client.subscribe("t/#", QoS::AtLeastOnce).await;
    client.disconnect().await;
    for kind in ["connected", "subscribed", "disconnected"] {
        let item = sse.next_event(kind, |_| true).await;
        assert!(is(&item, kind, "tap-sse"), "{item:?}");
    }
    sse.close().await;
    tap.shutdown().await;
    drop(mosquitto);
}
