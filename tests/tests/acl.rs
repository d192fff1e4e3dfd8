//! End-to-end, topic ACLs (issue 18): the `[[acl]]` rules of every form against the broker and
//! through the tap in front of Debian's mosquitto, with rumqttc (MQTT 3.1.1), Debian's
//! `mosquitto_sub -V mqttv5` and a raw MQTT 5 socket: a refused publish is dropped and counted
//! and its client stays, a refused filter gets SUBACK 0x80 (MQTT 5: 0x87).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adapter_tokio::auth::hash_password;
use adapter_tokio::config::{AclRuleConfig, Config, UserConfig};
use adapter_tokio::metrics::Metrics;
use rumqttc::{QoS, SubscribeReasonCode};
use tests::raw5::{Raw5, connect5, subscribe5};
use tests::tap::{Mosquitto, start_tap, tap_config};
use tests::{Client, MosquittoSub, WAIT, options, start_broker, test_config};
use tokio::time::{Instant, sleep};

fn rule(permission: &str, action: &str, topic: &str) -> AclRuleConfig {
    AclRuleConfig {
        permission: permission.into(),
        action: action.into(),
        topic: topic.into(),
        username: None,
        client_id: None,
    }
}

/// The rules of every form, default deny, and the users `bob` and `ops`.
fn with_acl(mut config: Config) -> Config {
    config.users = [("bob", "bob-pw"), ("ops", "ops-pw")]
        .iter()
        .map(|(name, password)| UserConfig {
            username: (*name).to_owned(),
            password_hash: hash_password(password).expect("hash"),
        })
        .collect();
    config.access.acl_default = "deny".into();
    let mut ops = rule("allow", "subscribe", "ops/#");
    ops.username = Some("ops".into());
    let mut gateway = rule("allow", "publish", "gw/#");
    gateway.client_id = Some("gw-1".into());
    let mut reader = rule("allow", "subscribe", "#");
    reader.client_id = Some("reader".into());
    config.acl = vec![
        // Deny before allow: the first match wins.
        rule("deny", "publish", "devices/+/secret"),
        rule("allow", "all", "devices/%c/#"),
        rule("allow", "publish", "users/%u/#"),
        ops,
        gateway,
        reader,
    ];
    config
}

async fn wait_until(metrics: &Metrics, what: &str, condition: impl Fn(&Metrics) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition(metrics) {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn connect_as(addr: SocketAddr, id: &str, user: Option<(&str, &str)>) -> Client {
    let mut opts = options(addr, id);
    if let Some((name, password)) = user {
        opts.set_credentials(name, password);
    }
    Client::connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("{id} connects: {e:?}"))
        .0
}

/// The scenario, the same for the broker and the tap at `addr`.
async fn scenario(addr: SocketAddr, metrics: &Metrics) {
    let mut reader = Client::connect(addr, "reader").await;
    // At QoS 0: `#` receives no events (the tap drops those it can, at QoS 0).
    assert_eq!(
        reader.subscribe("#", QoS::AtMostOnce).await,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );

    // Publishes: refused ones first (QoS 1, each acknowledged: the client stays), then the
    // allowed ones, then a last one; the reader must get exactly the allowed ones.
    let mut device = Client::connect(addr, "7").await;
    let mut bob = connect_as(addr, "b", Some(("bob", "bob-pw"))).await;
    let mut anon = Client::connect(addr, "x").await;
    let mut gw1 = Client::connect(addr, "gw-1").await;
    let mut gw2 = Client::connect(addr, "gw-2").await;
    for topic in ["devices/8/t", "devices/7/secret", "other/t"] {
        // %c is 7; deny before allow; the default.
        device
            .publish(topic, QoS::AtLeastOnce, false, b"refused")
            .await;
    }
    // %u is bob; no user name, no %u rule; the client_id rule is for gw-1 only.
    bob.publish("users/ann/x", QoS::AtLeastOnce, false, b"refused")
        .await;
    anon.publish("users/x/y", QoS::AtLeastOnce, false, b"refused")
        .await;
    gw2.publish("gw/a", QoS::AtLeastOnce, false, b"refused")
        .await;
    wait_until(metrics, "6 publishes refused", |m| {
        m.publishes_not_allowed.load(Ordering::Relaxed) == 6
    })
    .await;
    device
        .publish("devices/7/t", QoS::AtLeastOnce, false, b"ok")
        .await;
    bob.publish("users/bob/x", QoS::AtLeastOnce, false, b"ok")
        .await;
    gw1.publish("gw/a", QoS::AtLeastOnce, false, b"ok").await;
    device
        .publish("devices/7/end", QoS::AtLeastOnce, false, b"end")
        .await;
    // Publishers apart may arrive in any order; the refused ones were dropped before these.
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = reader.next_publish().await;
        got.push((p.topic.clone(), p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("devices/7/end".to_owned(), b"end".to_vec()),
            ("devices/7/t".to_owned(), b"ok".to_vec()),
            ("gw/a".to_owned(), b"ok".to_vec()),
            ("users/bob/x".to_owned(), b"ok".to_vec()),
        ]
    );
    assert!(!device.is_closed() && !bob.is_closed() && !anon.is_closed());

    // Subscriptions: an allow must cover the filter.
    assert_eq!(
        device.subscribe("devices/7/cmd", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    for filter in ["devices/8/cmd", "#", "devices/+/cmd", "ops/#"] {
        assert_eq!(
            device.subscribe(filter, QoS::AtLeastOnce).await,
            SubscribeReasonCode::Failure,
            "{filter}"
        );
    }
    let mut ops = connect_as(addr, "console", Some(("ops", "ops-pw"))).await;
    assert_eq!(
        ops.subscribe("ops/alerts", QoS::AtMostOnce).await,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );
    assert_eq!(metrics.subscriptions_not_allowed.load(Ordering::Relaxed), 4);

    // MQTT 5: 0x87 for the refused filter, read off a raw socket ...
    let (mut raw, _) = Raw5::connect(addr, &connect5("9", true, 60, &[], None)).await;
    raw.send(&subscribe5(1, "devices/8/cmd", 1)).await;
    let suback = raw.expect(0x90).await;
    assert_eq!(suback.body, [0, 1, 0, 0x87]);
    raw.send(&subscribe5(2, "devices/9/cmd", 1)).await;
    assert_eq!(raw.expect(0x90).await.body, [0, 2, 0, 1]);
    // ... and as Debian's mosquitto_sub -V mqttv5 sees it.
    let sub = MosquittoSub::spawn(
        addr,
        &["-V", "mqttv5", "-i", "10", "-t", "devices/8/cmd", "-q", "1"],
    );
    // It reads the 0x87 as a refusal, says so and leaves.
    let (_, stderr) = sub.wait_exit().await;
    assert!(
        stderr.contains("All subscription requests were denied"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_broker_enforces_every_rule_form() {
    let broker = start_broker(with_acl(test_config())).await;
    scenario(broker.local_addr(), broker.metrics()).await;
}

#[tokio::test]
async fn the_tap_enforces_every_rule_form_in_front_of_mosquitto() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_tap(with_acl(tap_config(mosquitto.addr))).await;
    scenario(tap.local_addr(), tap.metrics()).await;
}
