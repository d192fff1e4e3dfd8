//! End-to-end: a session the broker keeps after its connection (MQTT 3.1.1 clean session 0, MQTT
//! 5 session expiry above 0) may not hold shared subscriptions. rumqttd 0.20's router panics
//! (`routing.rs`, "group must exists") when such a session leaves the last seat of a shared
//! group with a delivery in flight, and every client of the broker loses its router with it.
//! The broker refuses the filter instead (SUBACK 0x80 / 0x9E, and Shared Subscription
//! Available 0 in the MQTT 5 CONNACK); a clean session keeps shared subscriptions.

use tests::raw5::{Raw5, connect5, packet5, publish5, session_expiry, subscribe5};
use tests::start_default_broker;

/// An MQTT 3.1.1 CONNECT with clean session 0 (a session the broker keeps).
fn connect_kept_v4(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4];
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[4, 0x00, 0, 60]);
    body.extend_from_slice(&u16::try_from(client_id.len()).expect("short").to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet5(0x10, &body)
}

/// An MQTT 3.1.1 SUBSCRIBE of `filter` at QoS 1.
fn subscribe_v4(pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(&u16::try_from(filter.len()).expect("short").to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(1);
    packet5(0x82, &body)
}

/// The topic of an MQTT 3.1.1 PUBLISH body.
fn topic_v4(body: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    &body[2..2 + len]
}

#[tokio::test]
async fn a_kept_session_gets_no_shared_subscription_and_the_router_survives_its_leaving() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();

    // MQTT 3.1.1, clean session 0: the shared filter is refused (0x80), a plain one granted.
    let (mut kept, connack) = Raw5::connect(addr, &connect_kept_v4("sk-v4")).await;
    assert_eq!(connack.body, [0, 0], "{connack:?}");
    kept.send(&subscribe_v4(1, "$share/g/sk/t")).await;
    assert_eq!(kept.expect(0x90).await.body, [0, 1, 0x80]);
    kept.send(&subscribe_v4(2, "sk/plain")).await;
    assert_eq!(kept.expect(0x90).await.body, [0, 2, 1]);

    // MQTT 5 with a session expiry: told in the CONNACK, refused with 0x9E.
    let (mut v5, connack) = Raw5::connect(
        addr,
        &connect5("sk-v5", true, 60, &session_expiry(60), None),
    )
    .await;
    assert!(connack.has_property(&[0x2A, 0]), "{connack:?}");

    v5.send(&subscribe5(1, "$share/g5/sk/t", 1)).await;
    assert_eq!(v5.expect(0x90).await.body, [0, 1, 0, 0x9E]);

    // MQTT 5 without one (the session ends with the connection): served.
    let (mut clean, connack) =
        Raw5::connect(addr, &connect5("sk-clean", true, 60, &[], None)).await;
    assert!(connack.has_property(&[0x2A, 1]), "{connack:?}");
    clean.send(&subscribe5(1, "$share/g2/sk/t", 1)).await;
    assert_eq!(clean.expect(0x90).await.body, [0, 1, 0, 1]);

    // What made the router panic: the kept session leaves with QoS 1 deliveries unacknowledged,
    // one of them (had its shared filter been granted) through its shared group's only seat.
    let (mut publisher, _) = Raw5::connect(addr, &connect5("sk-pub", true, 60, &[], None)).await;
    publisher.send(&publish5("sk/t", 1, 7, b"x")).await;
    publisher.expect(0x40).await;
    publisher.send(&publish5("sk/plain", 1, 8, b"y")).await;
    publisher.expect(0x40).await;
    // Deliveries arrive in the router's order: once sk/plain's is here, sk/t's would be too.
    while topic_v4(&kept.expect(0x32).await.body) != b"sk/plain" {}
    drop(kept);
    drop(v5);

    // The router still serves: a new client connects and gets its own publish back.
    let (mut probe, connack) =
        Raw5::connect(addr, &connect5("sk-probe", true, 60, &[], None)).await;
    assert_eq!(connack.reason(), 0, "{connack:?}");
    probe.send(&subscribe5(1, "sk/probe", 0)).await;
    probe.expect(0x90).await;
    probe.send(&publish5("sk/probe", 0, 0, b"alive")).await;
    let delivery = probe.expect(0x30).await;
    assert_eq!(delivery.publish().2, b"alive");
}
