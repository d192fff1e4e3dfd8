//! End-to-end: the MQTT 5 fields of the activity events (issue 16, "Events"), from Debian's
//! `mosquitto_pub` / `mosquitto_sub -V mqttv5` (and `-V mqttv31`) and from a raw MQTT 5
//! subscriber that refuses a delivery, against the broker and through the tap in front of
//! Debian's `mosquitto` (which speaks MQTT 5).

use std::net::SocketAddr;

use serde_json::json;
use tests::tap::tap_with_monitor;
use tests::{Monitor, MosquittoSub, WAIT, assert_fields, mosquitto_pub, start_default_broker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A bare MQTT 5 client on a socket, for what no client tool sends: a refusing PUBACK, a
/// DISCONNECT with an error reason, subscription options.
struct Raw5 {
    stream: TcpStream,
}

/// Appends an MQTT UTF-8 string (2-byte length).
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A packet: the first byte, a one-byte remaining length, the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![
        first,
        u8::try_from(body.len()).expect("test packets are small"),
    ];
    out.extend_from_slice(body);
    out
}

impl Raw5 {
    /// Connects as MQTT 5 with `client_id` (clean start, keep-alive 60 s, no properties) and
    /// reads the accepting CONNACK.
    async fn connect(addr: SocketAddr, client_id: &str) -> Raw5 {
        let mut body = Vec::new();
        push_str(&mut body, "MQTT");
        body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
        push_str(&mut body, client_id);
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut raw = Raw5 { stream };
        raw.send(&packet(0x10, &body)).await;
        let (first, connack) = raw.read().await;
        assert_eq!((first, connack.get(1)), (0x20, Some(&0)), "CONNACK accepts");
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet: its first byte and its body.
    async fn read(&mut self) -> (u8, Vec<u8>) {
        timeout(WAIT, async {
            let first = self.stream.read_u8().await.expect("a packet");
            let mut len = 0usize;
            for shift in (0..28).step_by(7) {
                let byte = self.stream.read_u8().await.expect("its length");
                len |= usize::from(byte & 0x7F) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.expect("its body");
            (first, body)
        })
        .await
        .expect("a packet within WAIT")
    }

    /// SUBSCRIBE (packet id 1, no properties) to `filter` with the options byte `options`;
    /// reads the SUBACK and returns its reason code.
    async fn subscribe(&mut self, filter: &str, options: u8) -> u8 {
        let mut body = vec![0, 1, 0];
        push_str(&mut body, filter);
        body.push(options);
        self.send(&packet(0x82, &body)).await;
        let (first, suback) = self.read().await;
        assert_eq!(first, 0x90, "SUBACK");
        *suback.last().expect("a reason code")
    }

    /// Waits for a PUBLISH and returns its packet id and payload (QoS 1 or 2).
    async fn next_publish(&mut self) -> (u16, Vec<u8>) {
        loop {
            let (first, body) = self.read().await;
            if first & 0xF0 != 0x30 {
                continue;
            }
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let at = 2 + topic_len;
            let pkid = u16::from_be_bytes([body[at], body[at + 1]]);
            // The properties: a variable byte integer length (one byte here), then the block.
            let props = usize::from(body[at + 2]);
            return (pkid, body[at + 3 + props..].to_vec());
        }
    }
}

/// Debian's MQTT 5 and MQTT 3.1 clients against `addr`, with `monitor` receiving its events:
/// `connected` with the session expiry and the CONNECT's user properties, `subscribed` with
/// the options and a shared group, `msgack` from the publish's user properties (no envelope
/// in the payload), and `disconnected` with its reason code. Client ids and topics start with
/// `prefix`.
async fn mosquitto_clients_report_v5_fields(addr: SocketAddr, monitor: &mut Monitor, prefix: &str) {
    let sub_id = format!("{prefix}-sub");
    let filter = format!("{prefix}/#");
    let shared = format!("$share/grp/{prefix}/shared");
    let topic = format!("{prefix}/cmd");
    let mut sub = MosquittoSub::spawn(
        addr,
        &[
            "-i",
            &sub_id,
            "-V",
            "mqttv5",
            "-x",
            "600",
            "-k",
            "40",
            "-q",
            "1",
            "-c",
            "-D",
            "connect",
            "user-property",
            "site",
            "lab 7",
            "-D",
            "connect",
            "user-property",
            "fw",
            "1.2",
            "-t",
            &filter,
            "-F",
            "%t [%P] %p",
        ],
    );
    let connected = monitor.next_event("connected", &sub_id).await;
    assert_fields(
        &connected,
        json!({
            "client_id": sub_id, "proto_ver": 5, "keepalive": 40, "clean_session": false,
            "session_expiry": 600, "user_properties": [["site", "lab 7"], ["fw", "1.2"]],
            "transport": "tcp",
        }),
        &["peer", "ts"],
    );
    let subscribed = monitor.next_event("subscribed", &sub_id).await;
    assert_fields(
        &subscribed,
        json!({
            "client_id": sub_id, "topic": filter, "qos": 1, "no_local": false,
            "retain_as_published": false, "retain_handling": 0,
        }),
        &["ts"],
    );
    // A shared subscription, from a session that ends with its connection (the broker serves
    // shared subscriptions only to those: tests/shared_kept_sessions.rs).
    let shared_id = format!("{prefix}-shr");
    let _shared_sub = MosquittoSub::spawn(
        addr,
        &["-i", &shared_id, "-V", "mqttv5", "-q", "1", "-t", &shared],
    );
    let subscribed = monitor.next_event("subscribed", &shared_id).await;
    assert_fields(
        &subscribed,
        json!({
            "client_id": shared_id, "topic": shared, "qos": 1, "no_local": false,
            "retain_as_published": false, "retain_handling": 0, "share_group": "grp",
        }),
        &["ts"],
    );

    // An MQTT 5 publish whose user properties name the message: no envelope in the payload.
    let pub_id = format!("{prefix}-pub5");
    let out = mosquitto_pub(
        addr,
        &[
            "-i",
            &pub_id,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            &topic,
            "-m",
            "switch on",
            "-D",
            "publish",
            "user-property",
            "product_id",
            "lamp-3",
            "-D",
            "publish",
            "user-property",
            "message_id",
            "42",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub -V mqttv5: {out:?}");
    assert_eq!(
        sub.next_line().await,
        format!("{topic} [product_id:lamp-3 message_id:42] switch on")
    );
    let ack = monitor.next_event("msgack", &sub_id).await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": pub_id, "ack_client_id": sub_id, "product_id": "lamp-3",
            "message_id": "42", "topic": topic, "qos": 1, "reason_code": 0,
        }),
        &["ts"],
    );
    let pub_connected = monitor.next_event("connected", &pub_id).await;
    assert_eq!(pub_connected.json["session_expiry"], 0);
    let pub_gone = monitor.next_event("disconnected", &pub_id).await;
    assert_fields(
        &pub_gone,
        json!({
            "client_id": pub_id, "reason": "normal", "reason_code": 0,
            "connected_at": pub_connected.ts(),
        }),
        &["ts"],
    );

    // MQTT 3.1 (protocol level 3): the events an MQTT 3.1.1 consumer knows, and a reason code.
    let old_id = format!("{prefix}-pub31");
    let out = mosquitto_pub(
        addr,
        &[
            "-i", &old_id, "-V", "mqttv31", "-q", "1", "-t", &topic, "-m", "old",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub -V mqttv31: {out:?}");
    assert_eq!(sub.next_line().await, format!("{topic} [] old"));
    let old_connected = monitor.next_event("connected", &old_id).await;
    assert_fields(
        &old_connected,
        json!({"client_id": old_id, "proto_ver": 3, "keepalive": 60, "clean_session": true,
               "transport": "tcp"}),
        &["peer", "ts"],
    );
    let old_gone = monitor.next_event("disconnected", &old_id).await;
    assert_fields(
        &old_gone,
        json!({
            "client_id": old_id, "reason": "normal", "reason_code": 0,
            "connected_at": old_connected.ts(),
        }),
        &["ts"],
    );
    sub.kill().await;
    let sub_gone = monitor.next_event("disconnected", &sub_id).await;
    assert_fields(
        &sub_gone,
        json!({"client_id": sub_id, "reason": "tcp_closed", "connected_at": connected.ts()}),
        &["ts"],
    );
}

/// A raw MQTT 5 subscriber on `addr` subscribes with every option set, refuses a delivery
/// with PUBACK 0x87 (not authorized) and leaves with DISCONNECT 0x83 (implementation specific
/// error): a negative `msgack` and a `client_error` end, both with their reason codes.
async fn a_refusing_subscriber_gives_a_negative_msgack(
    addr: SocketAddr,
    monitor: &mut Monitor,
    prefix: &str,
) {
    let sub_id = format!("{prefix}-picky");
    let topic = format!("{prefix}/orders");
    let mut raw = Raw5::connect(addr, &sub_id).await;
    let connected = monitor.next_event("connected", &sub_id).await;
    // QoS 1, No Local, Retain As Published, Retain Handling 2.
    assert_eq!(raw.subscribe(&topic, 0b0010_1101).await, 1);
    let subscribed = monitor.next_event("subscribed", &sub_id).await;
    assert_fields(
        &subscribed,
        json!({
            "client_id": sub_id, "topic": topic, "qos": 1, "no_local": true,
            "retain_as_published": true, "retain_handling": 2,
        }),
        &["ts"],
    );
    let pub_id = format!("{prefix}-orders");
    let out = mosquitto_pub(
        addr,
        &[
            "-i",
            &pub_id,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            &topic,
            "-m",
            "order 9",
            "-D",
            "publish",
            "user-property",
            "product_id",
            "shop",
            "-D",
            "publish",
            "user-property",
            "message_id",
            "order-9",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
    let (pkid, payload) = raw.next_publish().await;
    assert_eq!(payload, b"order 9");
    let [hi, lo] = pkid.to_be_bytes();
    raw.send(&[0x40, 3, hi, lo, 0x87]).await;
    let nack = monitor.next_event("msgack", &sub_id).await;
    assert_fields(
        &nack,
        json!({
            "pub_client_id": pub_id, "ack_client_id": sub_id, "product_id": "shop",
            "message_id": "order-9", "topic": topic, "qos": 1, "reason_code": 0x87,
        }),
        &["ts"],
    );
    raw.send(&[0xE0, 1, 0x83]).await;
    let gone = monitor.next_event("disconnected", &sub_id).await;
    assert_fields(
        &gone,
        json!({
            "client_id": sub_id, "reason": "client_error", "reason_code": 0x83,
            "connected_at": connected.ts(),
        }),
        &["ts"],
    );
}

#[tokio::test]
async fn mqtt5_event_fields_from_mosquitto_clients_on_the_broker() {
    let broker = start_default_broker().await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    mosquitto_clients_report_v5_fields(broker.local_addr(), &mut monitor, "b5").await;
}

#[tokio::test]
async fn mqtt5_event_fields_from_mosquitto_clients_through_the_tap() {
    let (_mosquitto, tap, mut monitor) = tap_with_monitor().await;
    mosquitto_clients_report_v5_fields(tap.local_addr(), &mut monitor, "t5").await;
}

#[tokio::test]
async fn a_negative_msgack_on_the_broker() {
    let broker = start_default_broker().await;
    let mut monitor = Monitor::start(broker.local_addr()).await;
    a_refusing_subscriber_gives_a_negative_msgack(broker.local_addr(), &mut monitor, "bn").await;
}

#[tokio::test]
async fn a_negative_msgack_through_the_tap() {
    let (_mosquitto, tap, mut monitor) = tap_with_monitor().await;
    a_refusing_subscriber_gives_a_negative_msgack(tap.local_addr(), &mut monitor, "tn").await;
}

/// The broker reads a message's user properties also for an MQTT 3.1.1 subscriber, which never
/// sees them: its PUBACK gives the `msgack` (without a reason code, which 3.1.1 has not). The
/// tap cannot: mosquitto leaves the properties out of a delivery to a 3.1.1 client.
#[tokio::test]
async fn a_v311_subscriber_acks_a_v5_message_named_by_user_properties_on_the_broker() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut sub = MosquittoSub::spawn(
        addr,
        &[
            "-i", "old-sub", "-V", "mqttv311", "-q", "1", "-t", "o/#", "-v",
        ],
    );
    monitor.next_event("subscribed", "old-sub").await;
    let out = mosquitto_pub(
        addr,
        &[
            "-i",
            "new-pub",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "o/1",
            "-m",
            "hello",
            "-D",
            "publish",
            "user-property",
            "product_id",
            "p",
            "-D",
            "publish",
            "user-property",
            "message_id",
            "1",
        ],
    )
    .await;
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
    assert_eq!(sub.next_line().await, "o/1 hello");
    let ack = monitor.next_event("msgack", "old-sub").await;
    assert_fields(
        &ack,
        json!({
            "pub_client_id": "new-pub", "ack_client_id": "old-sub", "product_id": "p",
            "message_id": "1", "topic": "o/1", "qos": 1,
        }),
        &["ts"],
    );
}
