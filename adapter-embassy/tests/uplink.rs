//! The uplink: the gateway connects to a tiny upstream broker on the other embassy-net stack.

mod common;

use activity_core::QoS;
use activity_core::codec::{ConnAck, ConnectReturnCode, Packet};
use adapter_embassy::{Config, UplinkConfig};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, IpEndpoint, Stack};
use embassy_time::{Duration, Timer};

use common::*;

const UPSTREAM_PORT: u16 = 1884;

/// Credentials the uplink's CONNECT must carry.
type Credentials = (Option<&'static str>, Option<&'static [u8]>);

/// Accepts the gateway's uplink connection, checks its CONNECT, answers CONNACK `code`.
async fn answer_uplink(
    stack: Stack<'static>,
    credentials: Credentials,
    code: ConnectReturnCode,
) -> RawClient {
    let rx = Box::leak(Box::new([0u8; 4096]));
    let tx = Box::leak(Box::new([0u8; 4096]));
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.accept(UPSTREAM_PORT).await.expect("accept");
    let mut upstream = RawClient::from_socket(socket);
    match upstream.recv().await {
        Received::Connect {
            client_id,
            keep_alive,
            will,
            username,
            password,
        } => {
            assert_eq!(client_id, "gw-test");
            assert_eq!(keep_alive, 5);
            let will = will.expect("a will");
            assert_eq!(
                will,
                (
                    "edge/gateway/gw-test/uplink".to_owned(),
                    b"offline".to_vec(),
                    true
                )
            );
            assert_eq!(
                (username.as_deref(), password.as_deref()),
                (credentials.0, credentials.1)
            );
        }
        other => panic!("expected CONNECT, got {other:?}"),
    }
    upstream
        .send(Packet::ConnAck(ConnAck {
            properties: activity_core::codec::Properties::EMPTY,
            session_present: false,
            code: code.as_u8(),
        }))
        .await;
    upstream
}

/// Accepts the gateway's uplink connection, answers its CONNECT and waits for `online`.
async fn accept_uplink(stack: Stack<'static>, credentials: Credentials) -> RawClient {
    let mut upstream = answer_uplink(stack, credentials, ConnectReturnCode::Accepted).await;
    match upstream.recv().await {
        Received::Publish {
            topic,
            payload,
            retain,
            ..
        } => {
            assert_eq!(
                (topic.as_str(), payload.as_slice(), retain),
                ("edge/gateway/gw-test/uplink", &b"online"[..], true)
            );
        }
        other => panic!("expected the online state, got {other:?}"),
    }
    upstream
}

/// The next forwarded PUBLISH: (topic, payload).
async fn forwarded(upstream: &mut RawClient) -> (String, Vec<u8>) {
    match upstream.recv().await {
        Received::Publish {
            topic,
            payload,
            qos,
            ..
        } => {
            assert_eq!(qos, QoS::AtMostOnce);
            (topic, payload)
        }
        other => panic!("expected a forwarded PUBLISH, got {other:?}"),
    }
}

fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).expect("event JSON")
}

#[test]
fn uplink_forwards_events_and_topics_and_reconnects() {
    let config = Config {
        uplink: Some(UplinkConfig {
            forward: &["sensors/#"],
            // This upstream sends no PUBACK; QoS 1 is tested against activity-broker
            // (tests/tests/gateway_uplink.rs).
            qos: QoS::AtMostOnce,
            keep_alive_secs: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            ..UplinkConfig::new(
                IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), UPSTREAM_PORT),
                "edge",
            )
        }),
        ..Config::new("gw-test")
    };
    gateway_test::<2, _, _>(config, |stack, handle| async move {
        let mut upstream = accept_uplink(stack, (None, None)).await;
        wait_until("the uplink is up", || handle.is_uplink_up()).await;

        // Events go upstream under the prefix, with the gateway as node.
        let mut dev = RawClient::connected(stack, GATEWAY, "dev").await;
        let (topic, payload) = forwarded(&mut upstream).await;
        assert_eq!(topic, "edge/SYSTEM/presence/connected");
        let event = json(&payload);
        assert_eq!(
            (event["client_id"].as_str(), event["node"].as_str()),
            (Some("dev"), Some("gw-test"))
        );

        // A forwarded local topic: the message itself, then its event.
        dev.publish("sensors/t1", b"21.5", QoS::AtLeastOnce, Some(3))
            .await;
        assert_eq!(dev.recv().await, Received::PubAck(3));
        assert_eq!(
            forwarded(&mut upstream).await,
            ("edge/sensors/t1".to_owned(), b"21.5".to_vec())
        );
        let (topic, payload) = forwarded(&mut upstream).await;
        assert_eq!(topic, "edge/SYSTEM/message");
        assert_eq!(json(&payload)["topic"], "sensors/t1");
        // A topic not forwarded: only its event.
        dev.publish("local/x", b"1", QoS::AtMostOnce, None).await;
        let (topic, payload) = forwarded(&mut upstream).await;
        assert_eq!(topic, "edge/SYSTEM/message");
        assert_eq!(json(&payload)["topic"], "local/x");

        // The upstream goes away; events while down are queued and sent after reconnecting.
        upstream.close().await;
        Timer::after_millis(100).await;
        assert!(!handle.is_uplink_up());
        dev.send(Packet::Disconnect(activity_core::codec::Disconnect::NORMAL))
            .await;
        dev.expect_closed().await;
        let mut upstream = accept_uplink(stack, (None, None)).await;
        let (topic, payload) = forwarded(&mut upstream).await;
        assert_eq!(topic, "edge/SYSTEM/presence/disconnected");
        assert_eq!(json(&payload)["reason"], "normal");
        let stats = handle.stats();
        assert_eq!(stats.uplink_connects, 2);
        assert_eq!(stats.uplink_dropped, 0);
    });
}

fn uplink_config(
    username: Option<&'static str>,
    password: Option<&'static [u8]>,
) -> Config<'static> {
    Config {
        uplink: Some(UplinkConfig {
            qos: QoS::AtMostOnce,
            keep_alive_secs: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            username,
            password,
            ..UplinkConfig::new(
                IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), UPSTREAM_PORT),
                "edge",
            )
        }),
        ..Config::new("gw-test")
    }
}

#[test]
fn uplink_sends_credentials_and_retries_when_refused() {
    let config = uplink_config(Some("gw-user"), Some(b"s3cret"));
    gateway_test::<2, _, _>(config, |stack, handle| async move {
        // Refused (CONNACK 5, not authorized): the gateway closes and counts a failure.
        let refused = answer_uplink(
            stack,
            (Some("gw-user"), Some(b"s3cret")),
            ConnectReturnCode::NotAuthorized,
        )
        .await;
        refused.expect_closed().await;
        assert!(!handle.is_uplink_up());
        // It tries again after its backoff, with the same credentials, and gets in.
        let upstream = accept_uplink(stack, (Some("gw-user"), Some(b"s3cret"))).await;
        wait_until("the uplink is up", || handle.is_uplink_up()).await;
        // At least the refusal failed (a retry that finds no listener yet fails too).
        let stats = handle.stats();
        assert_eq!(stats.uplink_connects, 1);
        assert!(stats.uplink_failures >= 1, "{stats:?}");
        upstream.close().await;
    });
}

#[test]
fn uplink_never_sends_a_password_without_a_username() {
    // Section 3.1.2.9: the password flag needs the username flag; the password is left out.
    let config = uplink_config(None, Some(b"orphan"));
    gateway_test::<2, _, _>(config, |stack, handle| async move {
        let upstream = accept_uplink(stack, (None, None)).await;
        wait_until("the uplink is up", || handle.is_uplink_up()).await;
        upstream.close().await;
    });
}

/// The keep-alive's PINGREQs never land inside a forwarded PUBLISH. The uplink is kept
/// saturated (a device publishes faster than the upstream reads), so that the gateway's
/// transmit buffer is full, and ends in the middle of a packet, whenever a PINGREQ falls due:
/// every byte upstream still parses as the gateway's packets, each PINGREQ whole and between
/// two of them.
#[test]
fn pingreqs_go_between_packets_on_a_saturated_uplink() {
    let config = Config {
        uplink: Some(UplinkConfig {
            forward: &["sensors/#"],
            qos: QoS::AtMostOnce,
            keep_alive_secs: 1,
            ..UplinkConfig::new(
                IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), UPSTREAM_PORT),
                "edge",
            )
        }),
        ..Config::new("gw-test")
    };
    gateway_test::<2, _, _>(config, |stack, handle| async move {
        // A small receive buffer: the gateway's data waits in its own transmit buffer.
        let mut socket = TcpSocket::new(stack, leak([0u8; 256]), leak([0u8; 256]));
        socket.accept(UPSTREAM_PORT).await.expect("accept");
        let mut upstream = RawClient::from_socket(socket);
        assert!(matches!(upstream.recv().await, Received::Connect { .. }));
        upstream
            .send(Packet::ConnAck(ConnAck {
                properties: activity_core::codec::Properties::EMPTY,
                session_present: false,
                code: ConnectReturnCode::Accepted.as_u8(),
            }))
            .await;
        let mut dev = RawClient::connected(stack, GATEWAY, "dev").await;
        let reading = pingreqs_between_packets(&mut upstream, 3);
        let payload = [b'p'; 100];
        let publishing = async {
            loop {
                dev.publish("sensors/t", &payload, QoS::AtMostOnce, None)
                    .await;
                Timer::after_millis(2).await;
            }
        };
        embassy_futures::select::select(reading, publishing).await;
        assert!(
            handle.stats().uplink_dropped > 0,
            "the uplink was saturated"
        );
    });
}

/// Reads the uplink slowly (64 bytes every 5 ms) and answers each PINGREQ, until `pings` have
/// come; fails on any byte that is not part of one of the gateway's packets.
async fn pingreqs_between_packets(upstream: &mut RawClient, pings: usize) {
    let mut stream = Vec::new();
    let mut seen = 0;
    let mut buf = [0u8; 64];
    while seen < pings {
        let n = upstream.socket.read(&mut buf).await.expect("uplink read");
        assert!(n > 0, "the gateway closed the uplink after {seen} PINGREQs");
        stream.extend_from_slice(&buf[..n]);
        loop {
            let (packet, used) = match activity_core::codec::decode(&stream, 4096) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => panic!("the uplink's byte stream broke after {seen} PINGREQs: {e:?}"),
            };
            match packet {
                Packet::PingReq => {
                    seen += 1;
                    upstream.send(Packet::PingResp).await;
                }
                Packet::Publish(p) if p.topic == "edge/sensors/t" => {
                    assert_eq!(p.payload, [b'p'; 100], "a forwarded payload changed");
                }
                Packet::Publish(p) if p.topic.starts_with("edge/SYSTEM/") => {
                    json(p.payload);
                }
                Packet::Publish(p) if p.topic == "edge/gateway/gw-test/uplink" => {
                    assert_eq!(p.payload, b"online");
                }
                other => panic!("not one of the gateway's packets: {other:?}"),
            }
            stream.drain(..used);
        }
        Timer::after_millis(5).await;
    }
}
