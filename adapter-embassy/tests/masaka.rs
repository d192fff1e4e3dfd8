//! The gateway against an MQTT 3.1.1 client no one here wrote: `masaka` (no_std + alloc, on
//! embassy-net sockets), both as the devices and as the monitor that reads the events.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use adapter_embassy::Config;
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, with_timeout};
use masaka::transport::TcpTransport;
use masaka::{
    ClientConfig, ClientEvent, MqttClient, PublishConfig, QoS, TopicFilter, TopicName, V3Handler,
    WillMessage,
};
use serde_json::json;

use common::*;

type Client = MqttClient<TcpTransport<'static>, V3Handler>;

/// A masaka client connected to the gateway (clean session, no reconnects).
async fn masaka_client(stack: Stack<'static>, config: ClientConfig) -> Client {
    let rx = Box::leak(Box::new([0u8; 4096]));
    let tx = Box::leak(Box::new([0u8; 4096]));
    let socket = TcpSocket::new(stack, rx, tx);
    let [a, b, c, d] = GATEWAY_IP.octets();
    let remote = SocketAddr::from((Ipv4Addr::new(a, b, c, d), 1883));
    let transport = TcpTransport::new(socket, remote)
        .await
        .expect("tcp connect");
    let mut config = config;
    config.reconnect.enabled = false;
    let mut client = MqttClient::new(transport, V3Handler::new(), config);
    client.connect().await.expect("CONNACK 0");
    client
}

fn client_config(client_id: &str) -> ClientConfig {
    ClientConfig {
        client_id: client_id.into(),
        keep_alive: 60,
        ..ClientConfig::default()
    }
}

/// Polls `client` until an event `pick` accepts arrives (5 s at most).
async fn next<T>(client: &mut Client, mut pick: impl FnMut(ClientEvent) -> Option<T>) -> T {
    let wait = async {
        loop {
            match client.poll().await.expect("poll") {
                Some(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                None => continue,
            }
        }
    };
    with_timeout(Duration::from_secs(5), wait)
        .await
        .expect("the expected MQTT event within 5 s")
}

/// The next message on `client`: (topic, payload, qos, retain).
async fn delivery(client: &mut Client) -> (String, Vec<u8>, QoS, bool) {
    next(client, |event| match event {
        ClientEvent::MessageReceived(m) => Some((m.topic.to_string(), m.payload, m.qos, m.retain)),
        _ => None,
    })
    .await
}

/// The next event on `SYSTEM/<suffix>` as JSON (masaka acknowledges it, QoS 1).
async fn event(monitor: &mut Client, suffix: &str) -> serde_json::Value {
    let (topic, payload, qos, retain) = delivery(monitor).await;
    assert_eq!(topic, format!("SYSTEM/{suffix}"), "event topic");
    assert_eq!((qos, retain), (QoS::Level1, false));
    let mut event: serde_json::Value = serde_json::from_slice(&payload).expect("event JSON");
    // The sequence numbers vary with the clock and the boot: checked for their type here and
    // left out of the comparisons below (`event_seq` on every event, `session_seq` on presence).
    let object = event.as_object_mut().expect("an event is an object");
    let event_seq = object.remove("event_seq").expect("event_seq");
    assert!(event_seq.is_u64(), "{event_seq}");
    if suffix.starts_with("presence/") {
        let session_seq = object.remove("session_seq").expect("session_seq");
        assert!(session_seq.is_u64(), "{session_seq}");
    }
    event
}

/// The client's `peer` field: the client stack's address and some port.
fn peer(event: &serde_json::Value) -> String {
    let peer = event["peer"].as_str().expect("peer").to_owned();
    assert!(peer.starts_with("10.0.0.2:"), "{peer}");
    peer
}

fn topic(name: &str) -> TopicName {
    TopicName::try_from(name).expect("a valid topic")
}

fn filter(name: &str) -> TopicFilter {
    TopicFilter::try_from(name).expect("a valid filter")
}

#[test]
fn masaka_clients_and_every_event() {
    let config = Config {
        system_subscribers: &["monitor"],
        ..Config::new("gw-masaka")
    };
    gateway_test::<4, _, _>(config, |stack, handle| async move {
        let mut monitor = masaka_client(stack, client_config("monitor")).await;
        monitor
            .subscribe(&filter("SYSTEM/#"), QoS::Level2)
            .await
            .expect("SUBSCRIBE");
        let own = event(&mut monitor, "subscription/subscribed").await;
        let ts = assert_ts(&own);
        assert_eq!(
            own,
            json!({"client_id": "monitor", "topic": "SYSTEM/#", "qos": 1, "ts": ts,
                   "node": "gw-masaka"})
        );
        let mut dev = masaka_client(
            stack,
            ClientConfig {
                username: Some("alice".into()),
                password: Some(b"secret".to_vec()),
                keep_alive: 30,
                ..client_config("masaka-dev")
            },
        )
        .await;
        let connected = event(&mut monitor, "presence/connected").await;
        let connected_at = assert_ts(&connected);
        let peer = peer(&connected);
        assert_eq!(
            connected,
            json!({"client_id": "masaka-dev", "username": "alice", "proto_ver": 4,
                   "keepalive": 30, "clean_session": true, "peer": peer, "transport": "tcp", "ts": connected_at,
                   "node": "gw-masaka"})
        );

        dev.subscribe(&filter("sensors/+/temp"), QoS::Level1)
            .await
            .expect("SUBSCRIBE");
        next(&mut dev, |e| {
            matches!(e, ClientEvent::SubscriptionConfirmed(_)).then_some(())
        })
        .await;
        let subscribed = event(&mut monitor, "subscription/subscribed").await;
        let ts = assert_ts(&subscribed);
        assert_eq!(
            subscribed,
            json!({"client_id": "masaka-dev", "topic": "sensors/+/temp", "qos": 1, "ts": ts,
                   "node": "gw-masaka"})
        );

        // A QoS 1 publish with an envelope, delivered back to the publisher (it subscribed):
        // masaka acknowledges the delivery, which makes the msgack event.
        let payload = br#"{"product_id":"p7","message_id":9,"value":20.25}"#;
        dev.publish(&topic("sensors/hall/temp"), payload, PublishConfig::qos1())
            .await
            .expect("PUBLISH");
        assert_eq!(
            delivery(&mut dev).await,
            (
                "sensors/hall/temp".to_owned(),
                payload.to_vec(),
                QoS::Level1,
                false
            )
        );
        let message = event(&mut monitor, "message").await;
        let ts = assert_ts(&message);
        assert_eq!(
            message,
            json!({"pub_client_id": "masaka-dev", "topic": "sensors/hall/temp",
                   "payload": std::str::from_utf8(payload).unwrap(),
                   "payload_len": payload.len(), "qos": 1, "retain": false, "ts": ts,
                   "node": "gw-masaka"})
        );
        let msgack = event(&mut monitor, "msgack").await;
        let ts = assert_ts(&msgack);
        assert_eq!(
            msgack,
            json!({"pub_client_id": "masaka-dev", "ack_client_id": "masaka-dev",
                   "product_id": "p7", "message_id": 9, "topic": "sensors/hall/temp",
                   "qos": 1, "ts": ts, "node": "gw-masaka"})
        );

        dev.unsubscribe(&filter("sensors/+/temp"))
            .await
            .expect("UNSUBSCRIBE");
        next(&mut dev, |e| {
            matches!(e, ClientEvent::UnsubscriptionConfirmed(_)).then_some(())
        })
        .await;
        let unsubscribed = event(&mut monitor, "subscription/unsubscribed").await;
        let ts = assert_ts(&unsubscribed);
        assert_eq!(
            unsubscribed,
            json!({"client_id": "masaka-dev", "topic": "sensors/+/temp", "ts": ts,
                   "node": "gw-masaka"})
        );

        dev.disconnect().await.expect("DISCONNECT");
        let disconnected = event(&mut monitor, "presence/disconnected").await;
        let ts = assert_ts(&disconnected);
        assert_eq!(
            disconnected,
            json!({"client_id": "masaka-dev", "reason": "normal", "reason_code": 0,
                   "connected_at": connected_at, "ts": ts, "node": "gw-masaka"})
        );

        // A last will: masaka sends it in CONNECT. The client then vanishes without
        // DISCONNECT (dropping an embassy-net socket sends nothing), so the gateway ends the
        // connection at 1.5 times its keep-alive of 1 s and publishes the will.
        let will = WillMessage::new(
            topic("devices/w1/state"),
            b"gone".to_vec(),
            QoS::Level1,
            false,
        );
        let mut watcher = masaka_client(stack, client_config("watcher")).await;
        let _ = event(&mut monitor, "presence/connected").await;
        watcher
            .subscribe(&filter("devices/#"), QoS::Level1)
            .await
            .expect("SUBSCRIBE");
        let _ = event(&mut monitor, "subscription/subscribed").await;
        let willing = masaka_client(
            stack,
            ClientConfig {
                will_message: Some(will),
                keep_alive: 1,
                ..client_config("w1")
            },
        )
        .await;
        let connected = event(&mut monitor, "presence/connected").await;
        assert_eq!(
            (&connected["client_id"], &connected["keepalive"]),
            (&json!("w1"), &json!(1))
        );
        drop(willing);
        assert_eq!(
            delivery(&mut watcher).await,
            (
                "devices/w1/state".to_owned(),
                b"gone".to_vec(),
                QoS::Level1,
                false
            )
        );
        // The will is a publish of the client: its `message` event, then `disconnected`.
        let will_message = event(&mut monitor, "message").await;
        let ts = assert_ts(&will_message);
        assert_eq!(
            will_message,
            json!({"pub_client_id": "w1", "topic": "devices/w1/state", "payload": "gone",
                   "payload_len": 4, "qos": 1, "retain": false, "ts": ts, "node": "gw-masaka"})
        );
        let disconnected = event(&mut monitor, "presence/disconnected").await;
        assert_eq!(
            (&disconnected["client_id"], &disconnected["reason"]),
            (&json!("w1"), &json!("keepalive_timeout"))
        );
        let stats = handle.stats();
        assert_eq!(stats.clients_connected, 4);
    });
}
