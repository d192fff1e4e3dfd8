//! End-to-end: real MQTT 5 client libraries against the broker and the tap in front of Debian's
//! mosquitto: Python paho-mqtt 2.x (MQTT 5, 3.1.1 and 3.1 in one scenario, see
//! `tests/python/paho_clients.py`) and rumqttc's v5 client. What a v5 publisher attaches
//! (response topic, correlation data, content type, payload format, message expiry, user
//! properties, a will with properties) reaches a v5 subscriber, and the events name each
//! client's protocol level and how it left.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::{Value, json};
use tests::tap::{Mosquitto, start_default_tap, wait_publisher};
use tests::{Monitor, WAIT, start_default_broker};
use tokio::process::Command;
use tokio::time::timeout;

/// Runs `tests/python/paho_clients.py` against `addr` and returns what its clients saw.
async fn paho_scenario(addr: SocketAddr, prefix: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/paho_clients.py");
    let out = timeout(
        WAIT * 4,
        Command::new("python3")
            .arg(script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(prefix)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("paho_clients.py finishes")
    .expect("python3 runs (scripts/test.sh installs paho-mqtt)");
    assert!(
        out.status.success(),
        "paho_clients.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "paho_clients.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Checks what the paho clients saw on any of our servers, and the events `monitor` received.
async fn check_paho(addr: SocketAddr, monitor: &mut Monitor, prefix: &str) {
    let seen = paho_scenario(addr, prefix).await;
    for connack in ["sub_connack", "v5_connack", "v311_connack", "v31_connack"] {
        assert_eq!(seen[connack]["reason_code"], 0, "{connack}: {seen}");
    }
    assert_eq!(seen["suback"], json!([1]), "granted QoS 1: {seen}");
    for ack in ["puback", "pubcomp", "v311_puback", "v31_puback"] {
        assert_eq!(seen[ack], 0, "{ack} is a success: {seen}");
    }

    let received = seen["received"].as_array().expect("received is a list");
    let topics: Vec<&str> = received
        .iter()
        .map(|m| m["topic"].as_str().expect("topic"))
        .collect();
    let req = format!("{prefix}/req");
    let two = format!("{prefix}/two");
    let will = format!("{prefix}/will");
    let old = format!("{prefix}/old");
    assert_eq!(
        topics,
        [&req, &two, &will, &old, &old],
        "every message in publish order: {seen}"
    );

    let props = &received[0]["properties"];
    assert_eq!(props["ResponseTopic"], format!("{prefix}/resp"), "{props}");
    assert_eq!(props["CorrelationData"], json!([1, 2, 3]), "{props}");
    assert_eq!(props["ContentType"], "text/plain", "{props}");
    assert_eq!(props["PayloadFormatIndicator"], 1, "{props}");
    assert_eq!(
        props["UserProperty"],
        json!([["product_id", "p-1"], ["message_id", "m-1"]]),
        "user properties in order: {props}"
    );
    let expiry = props["MessageExpiryInterval"]
        .as_u64()
        .unwrap_or_else(|| panic!("the message expiry interval passes through: {props}"));
    assert!(
        (3600 - 60..=3600).contains(&expiry),
        "at most the time it waited is taken off the message expiry: {expiry}"
    );
    assert_eq!(received[1]["payload"], "exactly once");
    assert_eq!(
        received[2]["payload"], "gone",
        "the will, after reason 0x04"
    );
    assert_eq!(
        received[2]["properties"]["UserProperty"],
        json!([["kind", "will"]]),
        "the will's user property passes through: {seen}"
    );
    assert_eq!(received[3]["payload"], "v311");
    assert_eq!(received[4]["payload"], "v31");

    for (client, level) in [("v5", 5), ("v311", 4), ("v31", 3)] {
        let id = format!("{prefix}-{client}");
        let connected = monitor.next_event("connected", &id).await;
        assert_eq!(connected.json["proto_ver"], level, "{id}");
    }
    let id = format!("{prefix}-v5");
    let gone = monitor.next_event("disconnected", &id).await;
    assert_eq!(
        gone.json["reason"], "disconnect_with_will",
        "DISCONNECT 0x04: {}",
        gone.json
    );
}

#[tokio::test]
async fn paho_mqtt5_mqtt311_mqtt31_through_the_broker() {
    let broker = start_default_broker().await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    check_paho(broker.local_addr(), &mut monitor, "pb").await;
}

#[tokio::test]
async fn paho_mqtt5_mqtt311_mqtt31_through_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;
    check_paho(tap.local_addr(), &mut monitor, "pt").await;
}

/// Polls `eventloop` until `want` picks something out of an incoming packet.
async fn next_incoming<T>(
    eventloop: &mut EventLoop,
    mut want: impl FnMut(Packet) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = want(packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("rumqttc v5 connection failed: {e}"),
            }
        }
    })
    .await
    .expect("the awaited packet arrives in time")
}

/// rumqttc's v5 client subscribes, publishes to itself with properties, and gets them back.
async fn check_rumqttc_v5(addr: SocketAddr, monitor: &mut Monitor, id: &str) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_session_expiry_interval(Some(0))
        .set_user_properties(vec![("fleet".to_owned(), "north".to_owned())]);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let connack = next_incoming(&mut eventloop, |p| match p {
        Packet::ConnAck(c) => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(
        connack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );

    let filter = format!("{id}/#");
    client
        .subscribe(filter.as_str(), QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    let suback = next_incoming(&mut eventloop, |p| match p {
        Packet::SubAck(s) => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(
        suback.return_codes,
        [rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            QoS::AtLeastOnce
        )]
    );

    let properties = PublishProperties {
        response_topic: Some(format!("{id}/reply")),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-7")),
        user_properties: vec![("product_id".to_owned(), "p-9".to_owned())],
        content_type: Some("application/json".to_owned()),
        ..PublishProperties::default()
    };
    client
        .publish_with_properties(
            format!("{id}/cmd"),
            QoS::AtLeastOnce,
            false,
            "{\"on\":true}",
            properties,
        )
        .await
        .expect("queue PUBLISH");
    let delivered = next_incoming(&mut eventloop, |p| match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(&delivered.topic[..], format!("{id}/cmd").as_bytes());
    assert_eq!(&delivered.payload[..], b"{\"on\":true}");
    let got = delivered
        .properties
        .expect("the delivery carries properties");
    assert_eq!(
        got.response_topic.as_deref(),
        Some(format!("{id}/reply").as_str())
    );
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr-7"[..]));
    assert_eq!(
        got.user_properties,
        [("product_id".to_owned(), "p-9".to_owned())]
    );
    assert_eq!(got.content_type.as_deref(), Some("application/json"));

    let connected = monitor.next_event("connected", id).await;
    assert_eq!(connected.json["proto_ver"], 5);
    let message = monitor.next_event("message", id).await;
    assert_eq!(message.json["topic"], format!("{id}/cmd"));
    client.disconnect().await.expect("queue DISCONNECT");
    let _ = timeout(WAIT, async { while eventloop.poll().await.is_ok() {} }).await;
    let gone = monitor.next_event("disconnected", id).await;
    assert_eq!(gone.json["reason"], "normal", "{}", gone.json);
}

#[tokio::test]
async fn rumqttc_v5_client_through_the_broker() {
    let broker = start_default_broker().await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    check_rumqttc_v5(broker.local_addr(), &mut monitor, "rv5b").await;
}

#[tokio::test]
async fn rumqttc_v5_client_through_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;
    check_rumqttc_v5(tap.local_addr(), &mut monitor, "rv5t").await;
}
