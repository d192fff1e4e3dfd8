//! What the event streams cost and what a `Last-Event-ID` replay then guarantees
//! (docs/http.md, "The event stream"): a stream holds the kinds it asks for while open and for
//! `http.replay_grace_ms` after it closes; only held kinds are encoded for the API and kept in
//! the ring. A reconnect in the grace window misses nothing; one after it is told what may be
//! missing. No MQTT client subscribes to the system topics here: the API is the only taker.

use std::net::SocketAddr;

use adapter_tokio::broker::Broker;
use rumqttc::QoS;
use tests::http::{SseItem, SseStream, http_metric, wait_metric};
use tests::*;

async fn broker(grace_ms: u64) -> (Broker, SocketAddr) {
    let mut config = test_config();
    config.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    config.http.event_ring = 64;
    config.http.replay_grace_ms = grace_ms;
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    (broker, http)
}

/// Opens the event stream at `addr` and waits until the server counts `streams` open.
async fn open(addr: SocketAddr, query: &str, args: &[&str], streams: u64) -> SseStream {
    let stream = SseStream::open(&format!("http://{addr}/api/v1/events{query}"), args);
    wait_metric(addr, "activity_http_event_streams", |n| n == streams).await;
    stream
}

fn is(item: &SseItem, kind: &str, client: &str) -> bool {
    item.event.as_deref() == Some(kind) && item.json()["client_id"] == client
}

#[tokio::test]
async fn only_held_kinds_are_encoded_and_a_reconnect_in_the_grace_window_misses_nothing() {
    let (broker, http) = broker(60_000).await;
    let presence = "?kinds=connected,disconnected";
    let mut sse = open(http, presence, &[], 1).await;
    assert_eq!(http_metric(http, "activity_http_event_kinds_kept").await, 2);
    let unobserved = http_metric(http, "activity_events_unobserved_total").await;

    let mut a = Client::connect(broker.local_addr(), "held-a").await;
    let seen = sse
        .next_event("held-a's connected", |i| is(i, "connected", "held-a"))
        .await;
    let seen_id = seen.id.expect("an id");
    // Nobody holds `subscribed`: it is not even encoded, and takes no number.
    a.subscribe("held/t", QoS::AtMostOnce).await;
    wait_metric(http, "activity_events_unobserved_total", |n| n > unobserved).await;
    sse.close().await;
    wait_metric(http, "activity_http_event_streams", |n| n == 0).await;
    // Closed, the stream still holds its kinds for its grace window.
    assert_eq!(http_metric(http, "activity_http_event_kinds_kept").await, 2);

    a.disconnect().await;
    Client::connect(broker.local_addr(), "held-b")
        .await
        .disconnect()
        .await;
    let header = format!("Last-Event-ID: {seen_id}");
    let mut sse = open(http, presence, &["-H", &header], 1).await;
    let mut ids = Vec::new();
    for (kind, client) in [
        ("disconnected", "held-a"),
        ("connected", "held-b"),
        ("disconnected", "held-b"),
    ] {
        let item = sse.try_next(WAIT).await.expect("the next event");
        assert!(
            item.comment.is_none(),
            "no note: nothing is missing: {item:?}"
        );
        assert!(is(&item, kind, client), "{kind} of {client}: {item:?}");
        ids.push(item.id.expect("an id"));
    }
    assert_eq!(
        ids,
        (seen_id + 1..seen_id + 4).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    sse.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_reconnect_after_the_grace_window_is_told_what_may_be_missing() {
    let (broker, http) = broker(200).await;
    let mut sse = open(http, "?kinds=connected", &[], 1).await;
    Client::connect(broker.local_addr(), "late-a")
        .await
        .disconnect()
        .await;
    let seen = sse
        .next_event("late-a's connected", |i| is(i, "connected", "late-a"))
        .await;
    let seen_id = seen.id.expect("an id");
    sse.close().await;
    // The grace window ends: no kind is held, none kept.
    wait_metric(http, "activity_http_event_kinds_kept", |n| n == 0).await;
    let unobserved = http_metric(http, "activity_events_unobserved_total").await;
    Client::connect(broker.local_addr(), "late-b")
        .await
        .disconnect()
        .await;
    wait_metric(http, "activity_events_unobserved_total", |n| {
        n >= unobserved + 2
    })
    .await;

    let header = format!("Last-Event-ID: {seen_id}");
    let mut sse = open(http, "?kinds=connected", &["-H", &header], 1).await;
    let note = sse.try_next(WAIT).await.expect("a first block");
    let comment = note.comment.expect("a comment line first");
    assert!(
        comment.starts_with(&format!("connected events after {seen_id} and before"))
            && comment.contains("may be missing"),
        "{comment}"
    );
    // From here on the kind is held again: live events come.
    Client::connect(broker.local_addr(), "late-c")
        .await
        .disconnect()
        .await;
    let item = sse.try_next(WAIT).await.expect("the next event");
    assert!(is(&item, "connected", "late-c"), "{item:?}");
    sse.close().await;
    broker.shutdown().await;
}
