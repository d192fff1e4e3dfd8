//! The embassy gateway on an embassy-net stack behind a TAP device, in a private network
//! namespace: Debian's `mosquitto_pub` / `mosquitto_sub` use it over Linux TCP, and its
//! uplink logs in to a real `activity-broker` and forwards there, where rumqttc clients receive
//! the events.
//!
//! Each test re-runs itself under `unshare --net` (see `tests::netns`); it needs root and
//! `/dev/net/tun`, and is skipped otherwise unless `REQUIRE_NETNS=1` (the test command sets it).

use std::net::{Ipv4Addr, SocketAddr};

use adapter_embassy::{Config, UplinkConfig};
use adapter_tokio::auth::hash_password;
use adapter_tokio::config::{AccessConfig, Config as BrokerConfig, UserConfig};
use embassy_net::{IpAddress, IpEndpoint};
use rumqttc::QoS;
use serde_json::{Value, json};
use tests::netns::{
    GATEWAY_ADDR, GATEWAY_IP, KERNEL_IP, TapGateway, assert_kernel_peer, event_line,
    in_private_netns,
};
use tests::{
    Client, Ev, Monitor, MosquittoSub, assert_fields, assert_ts_recent, mosquitto_pub, options,
    start_broker, test_config,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// A `mosquitto_sub -v` on the gateway's `SYSTEM/#`, read as events.
struct Events {
    sub: MosquittoSub,
    seen: usize,
}

impl Events {
    async fn next(&mut self) -> Ev {
        let line = self.sub.next_line().await;
        let ev = event_line(self.seen, &line);
        self.seen += 1;
        ev
    }

    /// The next `n` events, in any order (a PUBACK and a DISCONNECT race).
    async fn next_n(&mut self, n: usize) -> Vec<Ev> {
        let mut events = Vec::new();
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }
}

/// Takes the `kind` event about `client` out of `events`.
fn take(events: &mut Vec<Ev>, kind: &str, client: &str) -> Ev {
    let at = events
        .iter()
        .position(|e| e.is(kind, client))
        .unwrap_or_else(|| panic!("no {kind} event of {client} among {events:#?}"));
    events.remove(at)
}

#[test]
fn mosquitto_clients_through_a_tap_device() {
    in_private_netns("mosquitto_clients_through_a_tap_device", || {
        let config = Config {
            system_subscribers: &["mosq-monitor"],
            ..Config::new("gw-tap")
        };
        let gateway = TapGateway::start(config);
        runtime().block_on(async {
            let monitor = MosquittoSub::spawn(
                GATEWAY_ADDR,
                &["-i", "mosq-monitor", "-t", "SYSTEM/#", "-q", "1", "-v"],
            );
            let mut events = Events {
                sub: monitor,
                seen: 0,
            };
            let own = events.next().await;
            assert_eq!(own.kind(), "subscribed");
            assert_fields(
                &own,
                json!({"client_id": "mosq-monitor", "topic": "SYSTEM/#", "qos": 1,
                       "node": "gw-tap"}),
                &["ts"],
            );
            assert_ts_recent(&own);

            // A subscriber: connected, subscribed.
            let mut sub = MosquittoSub::spawn(
                GATEWAY_ADDR,
                &["-i", "mosq-sub", "-t", "sensors/#", "-q", "1", "-v"],
            );
            let connected = events.next().await;
            assert_eq!(connected.kind(), "connected");
            assert_fields(
                &connected,
                json!({"client_id": "mosq-sub", "proto_ver": 4,
                       "keepalive": 60, "clean_session": true, "node": "gw-tap",
                       "transport": "tcp"}),
                &["ts", "peer"],
            );
            assert_ts_recent(&connected);
            assert_kernel_peer(&connected);
            let subscribed = events.next().await;
            assert_fields(
                &subscribed,
                json!({"client_id": "mosq-sub", "topic": "sensors/#", "qos": 1,
                       "node": "gw-tap"}),
                &["ts"],
            );
            assert_eq!(subscribed.kind(), "subscribed");

            // A QoS 1 publish with an envelope: delivered, and acknowledged by mosquitto_sub.
            let payload = r#"{"product_id":"p1","message_id":5,"v":1}"#;
            let out = mosquitto_pub(
                GATEWAY_ADDR,
                &[
                    "-i",
                    "mosq-pub",
                    "-t",
                    "sensors/t1",
                    "-q",
                    "1",
                    "-m",
                    payload,
                ],
            )
            .await;
            assert!(
                out.status.success(),
                "mosquitto_pub: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(sub.next_line().await, format!("sensors/t1 {payload}"));
            let mut four = events.next_n(4).await;
            let connected = take(&mut four, "connected", "mosq-pub");
            assert_kernel_peer(&connected);
            let connected_at = connected.ts();
            let message = take(&mut four, "message", "mosq-pub");
            assert_fields(
                &message,
                json!({"pub_client_id": "mosq-pub", "topic": "sensors/t1", "payload": payload,
                       "payload_len": payload.len(), "qos": 1, "retain": false,
                       "node": "gw-tap"}),
                &["ts"],
            );
            assert_ts_recent(&message);
            let msgack = take(&mut four, "msgack", "mosq-sub");
            assert_fields(
                &msgack,
                json!({"pub_client_id": "mosq-pub", "ack_client_id": "mosq-sub",
                       "product_id": "p1", "message_id": 5, "topic": "sensors/t1", "qos": 1,
                       "node": "gw-tap"}),
                &["ts"],
            );
            let disconnected = take(&mut four, "disconnected", "mosq-pub");
            assert_fields(
                &disconnected,
                tests::with_reason_code(
                    json!({"client_id": "mosq-pub", "reason": "normal",
                       "connected_at": connected_at, "node": "gw-tap"}),
                    &disconnected,
                ),
                &["ts"],
            );

            // MQTT 5 and MQTT 3.1 publishers (mosquitto_pub -V): the gateway speaks both.
            for (version, id, level) in [("mqttv5", "mosq-v5", 5), ("mqttv31", "mosq-v31", 3)] {
                let out = mosquitto_pub(
                    GATEWAY_ADDR,
                    &["-i", id, "-V", version, "-t", "sensors/t2", "-m", version],
                )
                .await;
                assert!(
                    out.status.success(),
                    "mosquitto_pub -V {version}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(sub.next_line().await, format!("sensors/t2 {version}"));
                let mut three = events.next_n(3).await;
                let connected = take(&mut three, "connected", id);
                assert_eq!(connected.json["proto_ver"], level, "{version}");
                let message = take(&mut three, "message", id);
                assert_eq!(message.json["payload"], version);
                let disconnected = take(&mut three, "disconnected", id);
                assert_eq!(disconnected.json["reason"], "normal", "{version}");
            }

            // SIGKILL: the kernel closes the socket (FIN), no DISCONNECT.
            sub.kill().await;
            let gone = events.next().await;
            assert_fields(
                &gone,
                json!({"client_id": "mosq-sub", "reason": "tcp_closed", "node": "gw-tap"}),
                &["ts", "connected_at"],
            );
            assert_eq!(gone.kind(), "disconnected");
            events.sub.kill().await;
        });
        gateway.stop();
    });
}

/// The next publish the consumer gets: (topic, payload as text).
async fn forwarded(consumer: &mut Client) -> (String, String) {
    let publish = consumer.next_publish().await;
    let payload = String::from_utf8(publish.payload.to_vec()).expect("UTF-8 payload");
    (publish.topic, payload)
}

/// The next forwarded event on `edge/SYSTEM/<suffix>`, as an [`Ev`] on the local topic.
async fn forwarded_event(consumer: &mut Client, suffix: &str) -> Ev {
    let (topic, payload) = forwarded(consumer).await;
    assert_eq!(topic, format!("edge/SYSTEM/{suffix}"));
    let json: Value = serde_json::from_str(&payload).expect("event JSON");
    Ev {
        index: 0,
        topic: format!("SYSTEM/{suffix}"),
        json,
        qos: QoS::AtMostOnce,
    }
}

#[test]
fn gateway_uplink_to_activity_broker() {
    in_private_netns("gateway_uplink_to_activity_broker", || {
        runtime().block_on(async {
            // The broker wants a login: the gateway's uplink has its own, the server-side
            // clients another.
            let users = [("gateway", "gw-secret"), ("ops", "ops-secret")]
                .into_iter()
                .map(|(name, password)| UserConfig {
                    username: name.to_owned(),
                    password_hash: hash_password(password).expect("hash"),
                })
                .collect();
            let broker = start_broker(BrokerConfig {
                listen: "0.0.0.0:0".parse().expect("an address"),
                access: AccessConfig {
                    allow_anonymous: false,
                    ..AccessConfig::default()
                },
                users,
                ..test_config()
            })
            .await;
            let port = broker.local_addr().port();
            // Server side: a monitor of the broker's own events and a consumer of `edge/#`,
            // both over loopback.
            let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let ops = |client_id: &str| {
                let mut options = options(local, client_id);
                options.set_credentials("ops", "ops-secret");
                options
            };
            let mut monitor = Monitor::start_as(ops("monitor")).await;
            let (mut consumer, _) = Client::connect_with(ops("consumer"))
                .await
                .expect("the consumer logs in");
            consumer.subscribe("edge/#", QoS::AtLeastOnce).await;
            let _ = monitor
                .wait_for("consumer subscribed", |e| e.is("subscribed", "consumer"))
                .await;

            let [a, b, c, d] = KERNEL_IP.octets();
            let config = Config {
                uplink: Some(UplinkConfig {
                    forward: &["sensors/#"],
                    keep_alive_secs: 1,
                    backoff_min: embassy_time::Duration::from_millis(200),
                    username: Some("gateway"),
                    password: Some(b"gw-secret"),
                    ..UplinkConfig::new(IpEndpoint::new(IpAddress::v4(a, b, c, d), port), "edge")
                }),
                ..Config::new("gw-tap")
            };
            let gateway = tokio::task::spawn_blocking(move || TapGateway::start(config))
                .await
                .expect("the gateway starts");

            // The uplink connects from the gateway's address and says it is online.
            let up = monitor
                .wait_for("the gateway connected", |e| e.is("connected", "gw-tap"))
                .await;
            let peer: SocketAddr = up.json["peer"]
                .as_str()
                .expect("peer")
                .parse()
                .expect("peer is an address");
            assert_eq!(peer.ip(), GATEWAY_IP);
            assert_eq!(
                (&up.json["keepalive"], &up.json["username"]),
                (&json!(1), &json!("gateway"))
            );
            assert_eq!(
                forwarded(&mut consumer).await,
                ("edge/gateway/gw-tap/uplink".to_owned(), "online".to_owned())
            );

            // A device on the gateway: mosquitto_pub through the TAP device.
            let out = mosquitto_pub(
                GATEWAY_ADDR,
                &["-i", "dev-1", "-t", "sensors/t1", "-q", "1", "-m", "21.5"],
            )
            .await;
            assert!(
                out.status.success(),
                "mosquitto_pub: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let connected = forwarded_event(&mut consumer, "presence/connected").await;
            assert_fields(
                &connected,
                json!({"client_id": "dev-1", "proto_ver": 4,
                       "keepalive": 60, "clean_session": true, "node": "gw-tap",
                       "transport": "tcp"}),
                &["ts", "peer"],
            );
            assert_ts_recent(&connected);
            assert_kernel_peer(&connected);
            assert_eq!(
                forwarded(&mut consumer).await,
                ("edge/sensors/t1".to_owned(), "21.5".to_owned())
            );
            let message = forwarded_event(&mut consumer, "message").await;
            assert_fields(
                &message,
                json!({"pub_client_id": "dev-1", "topic": "sensors/t1", "payload": "21.5",
                       "payload_len": 4, "qos": 1, "retain": false, "node": "gw-tap"}),
                &["ts"],
            );
            let disconnected = forwarded_event(&mut consumer, "presence/disconnected").await;
            assert_fields(
                &disconnected,
                tests::with_reason_code(
                    json!({"client_id": "dev-1", "reason": "normal",
                       "connected_at": connected.ts(), "node": "gw-tap"}),
                    &disconnected,
                ),
                &["ts"],
            );
            // The broker reports the gateway's forwards as its publishes.
            let relayed = monitor
                .wait_for("the forwarded message", |e| {
                    e.is("message", "gw-tap") && e.json["topic"] == "edge/sensors/t1"
                })
                .await;
            assert_eq!(relayed.json["payload"], "21.5");

            // The gateway loses power: the broker closes its uplink at the keep-alive deadline
            // and publishes the retained `offline` will.
            tokio::task::spawn_blocking(move || gateway.stop())
                .await
                .expect("the gateway stops");
            let gone = monitor
                .wait_for("the gateway disconnected", |e| {
                    e.is("disconnected", "gw-tap")
                })
                .await;
            assert_eq!(gone.json["reason"], "keepalive_timeout");
            assert_eq!(
                forwarded(&mut consumer).await,
                (
                    "edge/gateway/gw-tap/uplink".to_owned(),
                    "offline".to_owned()
                )
            );
            // A new subscriber gets the state as a retained message.
            let (mut late, _) = Client::connect_with(ops("late"))
                .await
                .expect("a late subscriber logs in");
            late.subscribe("edge/gateway/+/uplink", QoS::AtLeastOnce)
                .await;
            let state = late.next_publish().await;
            assert_eq!(
                (state.topic.as_str(), &state.payload[..], state.retain),
                ("edge/gateway/gw-tap/uplink", &b"offline"[..], true)
            );
            late.disconnect().await;
            consumer.disconnect().await;
            broker.shutdown().await;
        });
    });
}
