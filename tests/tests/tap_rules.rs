//! End-to-end, tap mode: the rules the engine enforces in the tap, in front of a `mosquitto` that
//! has none of them, answered by the tap itself and never forwarded.

use std::sync::atomic::Ordering;

use activity_core::event::EventKind;
use rumqttc::{ConnectReturnCode, QoS, SubscribeReasonCode};
use serde_json::json;
use tests::tap::{Mosquitto, start_default_tap, start_tap, tap_config, wait_publisher};
use tests::{Client, ConnectFailure, Monitor, QUIET, assert_fields, mosquitto_pub, options};

fn refused_code(result: Result<(Client, rumqttc::ConnAck), ConnectFailure>) -> ConnectReturnCode {
    match result {
        Ok(_) => panic!("the connection was accepted"),
        Err(ConnectFailure::Refused(code)) => code,
        Err(ConnectFailure::Other(e)) => panic!("no refusing CONNACK: {e}"),
    }
}

#[tokio::test]
async fn reserved_client_id_broker_is_refused_with_connack_2() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;

    let code = refused_code(Client::connect_with(options(tap.local_addr(), "broker")).await);
    assert_eq!(code, ConnectReturnCode::BadClientId);
    // `broker/<node>` is what taps with `events.node` set publish as: reserved too.
    let code = refused_code(Client::connect_with(options(tap.local_addr(), "broker/tap-a")).await);
    assert_eq!(code, ConnectReturnCode::BadClientId);
    assert_eq!(tap.metrics().refused_identifier.load(Ordering::Relaxed), 2);
    // The tap's own `broker` connection to mosquitto was not taken over: events still flow.
    let _probe = Client::connect(tap.local_addr(), "probe").await;
    monitor.next_event("connected", "probe").await;
    // The refusals are reported (`refused`); no session event about `broker`.
    monitor.next_event("refused", "broker").await;
    monitor.next_event("refused", "broker/tap-a").await;
    monitor
        .assert_none("an event about `broker`", QUIET, |e| {
            e.subject() == Some("broker")
        })
        .await;
}

#[tokio::test]
async fn a_publish_on_a_system_topic_is_dropped_the_client_stays_and_nothing_reaches_mosquitto() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    // A subscriber directly on mosquitto sees every publish on the system topics.
    let mut direct = Client::connect(mosquitto.addr, "direct").await;
    direct.subscribe("SYSTEM/#", QoS::AtLeastOnce).await;
    direct.subscribe("plain/#", QoS::AtLeastOnce).await;

    // The engine acknowledges the forged publishes itself (QoS 1 and 2 flows complete) and the
    // forger stays connected: its next publish goes through.
    let mut forger = Client::connect(addr, "forger").await;
    let forged = br#"{"forged":true}"#;
    forger
        .publish("SYSTEM/message", QoS::AtLeastOnce, false, forged)
        .await;
    forger
        .publish("SYSTEM/msgack", QoS::ExactlyOnce, false, forged)
        .await;
    forger
        .publish("plain/after", QoS::AtLeastOnce, false, b"still here")
        .await;
    assert!(!forger.is_closed(), "the forger stays connected");

    // mosquitto_pub sends CONNECT, PUBLISH and DISCONNECT at once: its publish never passes
    // and it leaves normally.
    mosquitto_pub(
        addr,
        &["-i", "mosq-forger", "-t", "SYSTEM/msgack", "-m", "forged"],
    )
    .await;

    // Every event that reaches mosquitto is the tap's own; no forged payload does.
    let mut seen = Vec::new();
    let mut plain = false;
    let reason = loop {
        let publish = direct.next_publish().await;
        if publish.topic == "plain/after" {
            plain = true;
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&publish.payload).expect("events are JSON");
        assert!(
            json.get("forged").is_none() && publish.payload != b"forged"[..],
            "a forged publish reached mosquitto: {json}"
        );
        seen.push(json.clone());
        if json["client_id"] == "mosq-forger" && publish.topic == "SYSTEM/presence/disconnected" {
            break json["reason"].clone();
        }
    };
    assert_eq!(reason, "normal", "events seen: {seen:?}");
    assert!(plain, "the forger's ordinary publish reached mosquitto");
    assert!(
        direct
            .try_next_publish(QUIET)
            .await
            .is_none_or(|p| { !p.payload.windows(6).any(|w| w == b"forged") })
    );
    assert_eq!(tap.metrics().publishes_denied.load(Ordering::Relaxed), 3);
    assert!(!forger.is_closed(), "the forger is still connected");
}

#[tokio::test]
async fn system_subscriptions_need_permission_and_a_mixed_subscribe_is_refused_whole() {
    let mosquitto = Mosquitto::start().await;
    let mut config = tap_config(mosquitto.addr);
    config.access.loopback_may_subscribe = false;
    config.access.system_subscribers = vec!["client:monitor".into()];
    // `#` receives events too (as before issue 18), so it needs the permission too.
    config.events.wildcards_receive_events = true;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    // `client:monitor` may subscribe (Monitor::start asserts the grant).
    let mut monitor = Monitor::start(addr).await;

    let mut anon = Client::connect(addr, "anon").await;
    let codes = anon
        .subscribe_many(&[
            ("SYSTEM/#", QoS::AtLeastOnce),
            ("plain/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Failure, SubscribeReasonCode::Failure],
        "a SUBSCRIBE with a denied filter is refused whole"
    );
    assert_eq!(
        anon.subscribe("#", QoS::AtMostOnce).await,
        SubscribeReasonCode::Failure
    );
    assert_eq!(
        anon.subscribe("plain/#", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    let granted = monitor.next_event("subscribed", "anon").await;
    assert_fields(
        &granted,
        json!({"client_id": "anon", "topic": "plain/#", "qos": 1}),
        &["ts"],
    );
    // Denied subscribers receive nothing from the system topics.
    let _probe = Client::connect(addr, "probe").await;
    monitor.next_event("connected", "probe").await;
    let leaked = anon.try_next_publish(QUIET).await;
    assert!(leaked.is_none(), "anon received {leaked:?}");
    monitor
        .assert_none("subscribed of a denied filter", QUIET, |e| {
            e.is("subscribed", "anon")
        })
        .await;
    assert_eq!(
        tap.metrics().subscriptions_denied.load(Ordering::Relaxed),
        3
    );
    assert_eq!(
        tap.metrics().events_emitted[EventKind::Subscribed as usize].load(Ordering::Relaxed),
        2,
        "the monitor's and anon's granted filter"
    );
}
