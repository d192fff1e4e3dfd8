//! End-to-end: what the broker refuses — the reserved client id, other protocol levels, bad
//! passwords, connections past the limit, publishing on system topics, and subscribing to them
//! without permission.

use std::sync::atomic::Ordering;

use adapter_tokio::auth::hash_password;
use adapter_tokio::config::{Config, UserConfig};
use rumqttc::{ConnectReturnCode, QoS, SubscribeReasonCode};
use serde_json::json;
use tests::{
    Client, ConnectFailure, Monitor, MosquittoSub, QUIET, RawClient, assert_fields, connect_packet,
    mosquitto_pub, options, start_broker, start_default_broker, test_config,
};

fn refused_code(result: Result<(Client, rumqttc::ConnAck), ConnectFailure>) -> ConnectReturnCode {
    match result {
        Ok(_) => panic!("the connection was accepted"),
        Err(ConnectFailure::Refused(code)) => code,
        Err(ConnectFailure::Other(e)) => panic!("no refusing CONNACK: {e}"),
    }
}

fn with_users(mut config: Config, users: &[(&str, &str)]) -> Config {
    config.users = users
        .iter()
        .map(|(name, password)| UserConfig {
            username: (*name).to_owned(),
            password_hash: hash_password(password).expect("hash"),
        })
        .collect();
    config
}

#[tokio::test]
async fn reserved_client_id_broker_is_refused_with_connack_2() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let code = refused_code(Client::connect_with(options(addr, "broker")).await);
    assert_eq!(code, ConnectReturnCode::BadClientId);

    let (mut raw, connack) = RawClient::connect(addr, &connect_packet("broker", 10, 4)).await;
    assert_eq!(
        connack,
        [0x20, 0x02, 0x00, 0x02],
        "CONNACK identifier rejected"
    );
    assert!(
        raw.closed_within(tests::WAIT).await,
        "then the socket closes"
    );

    let out = mosquitto_pub(addr, &["-i", "broker", "-t", "t", "-m", "x"]).await;
    assert!(!out.status.success(), "mosquitto_pub must fail: {out:?}");

    // A later client's connected event proves the pipeline caught up: for `broker` only the
    // three `refused` events, no session.
    let _after = Client::connect(addr, "after-broker").await;
    monitor.next_event("connected", "after-broker").await;
    for _ in 0..3 {
        monitor.next_event("refused", "broker").await;
    }
    monitor
        .assert_none("about client id broker", QUIET, |e| {
            e.subject() == Some("broker")
        })
        .await;
    assert_eq!(
        broker.metrics().refused_identifier.load(Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn mosquitto_clients_speak_mqtt_5_and_mqtt_3_1() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    tests::mosquitto_speaks_mqtt5_and_mqtt31(addr, &mut monitor, "versions").await;
}

#[tokio::test]
async fn publish_on_a_system_topic_is_dropped_and_the_client_stays() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut forger = Client::connect(addr, "forger").await;
    let forged = br#"{"pub_client_id":"victim","topic":"x","payload":"forged"}"#;

    forger
        .publish("SYSTEM/message", QoS::AtLeastOnce, false, forged)
        .await;
    forger
        .publish("SYSTEM/presence/connected", QoS::AtMostOnce, false, forged)
        .await;
    let out = mosquitto_pub(
        addr,
        &["-i", "mosq-forger", "-t", "SYSTEM/msgack", "-m", "forged"],
    )
    .await;
    assert!(
        out.status.success(),
        "the publish is dropped silently: {out:?}"
    );

    // Still connected: a publish elsewhere goes through and is reported.
    forger
        .publish("ok/topic", QoS::AtLeastOnce, false, b"fine")
        .await;
    let ev = monitor.next_event("message", "forger").await;
    assert_fields(
        &ev,
        json!({
            "pub_client_id": "forger",
            "topic": "ok/topic",
            "payload": "fine",
            "payload_len": 4,
            "qos": 1,
            "retain": false,
        }),
        &["ts"],
    );
    assert!(!forger.is_closed());
    let forged_seen = monitor.history().iter().find(|e| {
        e.json.get("pub_client_id") == Some(&json!("victim"))
            || e.json.get("payload") == Some(&json!("forged"))
            || e.json.is_null()
    });
    assert!(
        forged_seen.is_none(),
        "a forged event reached SYSTEM/#: {forged_seen:?}"
    );
    monitor
        .assert_none("forged", QUIET, |e| e.subject() == Some("victim"))
        .await;
    assert_eq!(broker.metrics().publishes_denied.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn system_subscriptions_need_permission_when_loopback_is_not_trusted() {
    let mut config = with_users(test_config(), &[("ops", "ops-pw"), ("dev", "dev-pw")]);
    config.access.loopback_may_subscribe = false;
    config.access.system_subscribers = vec!["client:monitor".into(), "user:ops".into()];
    // `#` receives events too (as before issue 18), so it needs the permission too.
    config.events.wildcards_receive_events = true;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    // `client:monitor` may subscribe (Monitor::start asserts the grant).
    let mut monitor = Monitor::start(addr).await;

    let mut anon = Client::connect(addr, "anon").await;
    let codes = anon
        .subscribe_many(&[
            ("SYSTEM/#", QoS::AtLeastOnce),
            ("#", QoS::AtLeastOnce),
            ("SYSTEM/+/connected", QoS::AtMostOnce),
            ("plain/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    assert_eq!(
        anon.subscribe("#", QoS::AtMostOnce).await,
        SubscribeReasonCode::Failure
    );
    let granted = monitor.next_event("subscribed", "anon").await;
    assert_fields(
        &granted,
        json!({"client_id": "anon", "topic": "plain/#", "qos": 1}),
        &["ts"],
    );

    // A logged-in user who is not listed is refused too.
    let mut opts = options(addr, "dev-client");
    opts.set_credentials("dev", "dev-pw");
    let (mut dev, _) = Client::connect_with(opts).await.expect("dev connects");
    assert_eq!(
        dev.subscribe("SYSTEM/#", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Failure
    );

    // `user:ops` may, whatever its client id.
    let mut opts = options(addr, "ops-console");
    opts.set_credentials("ops", "ops-pw");
    let (mut ops, _) = Client::connect_with(opts).await.expect("ops connects");
    assert_eq!(
        ops.subscribe("SYSTEM/#", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    // ... and receives events.
    let _probe = Client::connect(addr, "probe").await;
    let ev = ops.next_publish().await;
    assert!(ev.topic.starts_with("SYSTEM/"), "{}", ev.topic);

    // Denied subscribers receive nothing from the system topics.
    let leaked = anon.try_next_publish(QUIET).await;
    assert!(leaked.is_none(), "anon received {leaked:?}");
    monitor
        .assert_none("subscribed of a denied filter", QUIET, |e| {
            e.kind() == "subscribed"
                && e.json["topic"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("SYSTEM") || t == "#")
                && matches!(e.subject(), Some("anon" | "dev-client"))
        })
        .await;
    assert_eq!(
        broker
            .metrics()
            .subscriptions_denied
            .load(Ordering::Relaxed),
        5
    );

    // mosquitto_sub is told its only subscription was denied, and gives up.
    let sub = MosquittoSub::spawn(addr, &["-i", "mosq-anon", "-t", "SYSTEM/#", "-v"]);
    // (mosquitto_sub 2.0.11 exits with status 0 in that case: only the message is checked.)
    let (_, stderr) = sub.wait_exit().await;
    assert!(
        stderr.contains("All subscription requests were denied"),
        "mosquitto_sub said: {stderr}"
    );
}

#[tokio::test]
async fn passwords_are_checked() {
    let config = with_users(test_config(), &[("alice", "s3cret")]);
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    let mut opts = options(addr, "alice-wrong");
    opts.set_credentials("alice", "wrong");
    let code = refused_code(Client::connect_with(opts).await);
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);

    let mut opts = options(addr, "mallory");
    opts.set_credentials("mallory", "s3cret");
    let code = refused_code(Client::connect_with(opts).await);
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword, "unknown user");

    let out = mosquitto_pub(
        addr,
        &[
            "-i",
            "mosq-alice",
            "-u",
            "alice",
            "-P",
            "nope",
            "-t",
            "t",
            "-m",
            "x",
        ],
    )
    .await;
    assert!(!out.status.success(), "wrong password must fail: {out:?}");

    let mut opts = options(addr, "alice-good");
    opts.set_credentials("alice", "s3cret");
    let (_alice, _) = Client::connect_with(opts).await.expect("alice connects");
    let connected = monitor.next_event("connected", "alice-good").await;
    assert_fields(
        &connected,
        json!({
            "client_id": "alice-good",
            "username": "alice",
            "proto_ver": 4,
            "keepalive": 30,
            "clean_session": true,
            "transport": "tcp",
        }),
        &["peer", "ts"],
    );
    let out = mosquitto_pub(
        addr,
        &[
            "-i",
            "mosq-alice",
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-t",
            "t",
            "-m",
            "x",
        ],
    )
    .await;
    assert!(out.status.success(), "good password: {out:?}");
    let connected = monitor.next_event("connected", "mosq-alice").await;
    assert_eq!(connected.json["username"], json!("alice"));
    // No connected event for any refused attempt.
    assert!(
        !monitor.history().iter().any(|e| {
            e.kind() == "connected" && matches!(e.subject(), Some("alice-wrong" | "mallory"))
        }),
        "{}",
        monitor.describe()
    );
    assert_eq!(
        broker
            .metrics()
            .refused_bad_credentials
            .load(Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn anonymous_clients_are_refused_when_not_allowed() {
    let mut config = with_users(test_config(), &[("mon", "pw")]);
    config.access.allow_anonymous = false;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let code = refused_code(Client::connect_with(options(addr, "nobody")).await);
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn connections_past_max_connections_get_connack_3() {
    let mut config = test_config();
    config.max_connections = 2;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let second = Client::connect(addr, "second").await;
    monitor.next_event("connected", "second").await;

    let code = refused_code(Client::connect_with(options(addr, "third")).await);
    assert_eq!(code, ConnectReturnCode::ServiceUnavailable);
    let out = mosquitto_pub(addr, &["-i", "mosq-third", "-t", "t", "-m", "x"]).await;
    assert!(
        !out.status.success(),
        "mosquitto_pub must be refused: {out:?}"
    );
    assert_eq!(broker.connected_clients(), 2);

    // A freed slot can be used again.
    second.disconnect().await;
    monitor.next_event("disconnected", "second").await;
    // The slot is freed when the connection task ends, right after its event: wait for it.
    tests::hostile::wait_connected_clients(&broker, 1).await;
    let (_third, _) = Client::connect_with(options(addr, "third"))
        .await
        .expect("a freed slot is usable again");
    let connected = monitor.next_event("connected", "third").await;
    assert_eq!(connected.json["client_id"], json!("third"));
    assert!(
        !monitor
            .history()
            .iter()
            .any(|e| e.is("connected", "mosq-third")),
        "{}",
        monitor.describe()
    );
}
