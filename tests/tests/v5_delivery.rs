//! End-to-end, MQTT 5 on the delivery side: topic aliases both ways, shared subscriptions,
//! the client's Maximum Packet Size and Receive Maximum, subscription identifiers and options,
//! message expiry. Against the broker (rumqttd's router behind the engine) with raw MQTT 5
//! bytes (decoded with the core's codec, which no server here shares with the client side of
//! these tests) and Debian's mosquitto clients; topic aliases also through the tap in front of
//! Debian's mosquitto.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::codec::{self, Packet, Property, Version};
use serde_json::json;
use tests::hostile::packet;
use tests::tap::tap_with_monitor;
use tests::{Monitor, MosquittoSub, WAIT, assert_fields, mosquitto_pub, start_default_broker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// How long a test waits for something that must not come.
const QUIET: Duration = Duration::from_millis(400);

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A property block with its length in front.
fn block(properties: &[Property<'_>]) -> Vec<u8> {
    let mut raw = vec![0u8; 256];
    let n = codec::encode_properties(properties, &mut raw).expect("encodable");
    let mut out = packet(0, &raw[..n]);
    out.remove(0);
    out
}

fn connect5(client_id: &str, properties: &[Property<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 30]);
    body.extend(block(properties));
    push_str(&mut body, client_id);
    packet(0x10, &body)
}

/// A PUBLISH: QoS from `pkid` (None: 0, Some: 1), RETAIN, properties.
fn publish5(
    topic: &str,
    pkid: Option<u16>,
    retain: bool,
    properties: &[Property<'_>],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, topic);
    if let Some(pkid) = pkid {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend(block(properties));
    body.extend_from_slice(payload);
    let first = 0x30 | if pkid.is_some() { 0x02 } else { 0 } | u8::from(retain);
    packet(first, &body)
}

/// A SUBSCRIBE of `filters` with their options bytes, and a subscription identifier.
fn subscribe5(pkid: u16, id: Option<u32>, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    match id {
        Some(id) => body.extend(block(&[Property::SubscriptionIdentifier(id)])),
        None => body.push(0),
    }
    for (filter, options) in filters {
        push_str(&mut body, filter);
        body.push(*options);
    }
    packet(0x82, &body)
}

/// A received PUBLISH, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    pkid: Option<u16>,
    retain: bool,
    payload: Vec<u8>,
    properties: Vec<String>,
}

/// A raw MQTT 5 client.
struct V5 {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl V5 {
    /// Connects; returns the client and the CONNACK's properties (as `Debug` text).
    async fn connect(addr: SocketAddr, id: &str, properties: &[Property<'_>]) -> (V5, Vec<String>) {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut client = V5 {
            stream,
            buf: Vec::new(),
        };
        client.send(&connect5(id, properties)).await;
        let connack = client
            .next(|p| match p {
                Packet::ConnAck(ack) => {
                    assert_eq!(ack.code, 0, "accepted");
                    Some(ack.properties.iter().map(|p| format!("{p:?}")).collect())
                }
                other => panic!("not a CONNACK: {other:?}"),
            })
            .await
            .expect("a CONNACK");
        (client, connack)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, mapped by `f`; `None` when nothing came within `QUIET`... or `WAIT`.
    async fn next_within<T>(
        &mut self,
        within: Duration,
        f: impl Fn(Packet<'_>) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(Some((packet, len))) = codec::decode_with(&self.buf, 1 << 20, Version::V5)
            {
                let mapped = f(packet);
                self.buf.drain(..len);
                if mapped.is_some() {
                    return mapped;
                }
            }
            let mut chunk = [0u8; 4096];
            match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn next<T>(&mut self, f: impl Fn(Packet<'_>) -> Option<T>) -> Option<T> {
        self.next_within(WAIT, f).await
    }

    /// The next PUBLISH within `within`.
    async fn publish_within(&mut self, within: Duration) -> Option<Got> {
        self.next_within(within, |p| match p {
            Packet::Publish(p) => Some(Got {
                topic: p.topic.to_owned(),
                pkid: p.pkid,
                retain: p.retain,
                payload: p.payload.to_vec(),
                properties: p.properties.iter().map(|p| format!("{p:?}")).collect(),
            }),
            _ => None,
        })
        .await
    }

    async fn publish(&mut self) -> Got {
        self.publish_within(WAIT).await.expect("a PUBLISH")
    }

    /// Subscribes and waits for the SUBACK; its codes.
    async fn subscribe(&mut self, pkid: u16, id: Option<u32>, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe5(pkid, id, filters)).await;
        self.next(|p| match p {
            Packet::SubAck(ack) => Some(ack.codes.iter().map(|c| c.as_u8()).collect()),
            _ => None,
        })
        .await
        .expect("a SUBACK")
    }

    /// PUBACK for `pkid`.
    async fn puback(&mut self, pkid: u16) {
        let [hi, lo] = pkid.to_be_bytes();
        self.send(&[0x40, 2, hi, lo]).await;
    }

    /// A QoS 1 publish, acknowledged.
    async fn publish_acked(&mut self, topic: &str, pkid: u16, payload: &[u8]) {
        self.send(&publish5(topic, Some(pkid), false, &[], payload))
            .await;
        self.next(|p| matches!(p, Packet::PubAck(a) if a.pkid == pkid).then_some(()))
            .await
            .expect("a PUBACK");
    }
}

/// At `addr` (whose events `monitor` receives), `<prefix>-sub` subscribes to `<filter>`, then
/// `<prefix>-pub` publishes `one` on `topic` setting topic alias 1 and `two` with the alias
/// alone: both reach the subscriber with the topic and no properties (the publisher's alias
/// stays its own), and both `message` events say the topic. Returns the publisher and its
/// CONNACK's properties.
async fn client_aliases_arrive_with_their_topic(
    addr: SocketAddr,
    monitor: &mut Monitor,
    prefix: &str,
    filter: &str,
    topic: &str,
) -> (V5, Vec<String>) {
    let (mut sub, _) = V5::connect(addr, &format!("{prefix}-sub"), &[]).await;
    assert_eq!(sub.subscribe(1, None, &[(filter, 0)]).await, [0]);
    let publisher_id = format!("{prefix}-pub");
    let (mut publisher, connack) = V5::connect(addr, &publisher_id, &[]).await;
    for (topic, payload) in [(topic, b"one"), ("", b"two")] {
        publisher
            .send(&publish5(
                topic,
                None,
                false,
                &[Property::TopicAlias(1)],
                payload,
            ))
            .await;
    }
    for payload in [&b"one"[..], b"two"] {
        let got = sub.publish().await;
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice()),
            (topic, payload)
        );
        assert!(
            got.properties.is_empty(),
            "the publisher's alias stays its own"
        );
    }
    for payload in ["one", "two"] {
        let message = monitor.next_event("message", &publisher_id).await;
        assert_fields(
            &message,
            json!({"pub_client_id": publisher_id, "topic": topic, "payload": payload,
                "payload_len": 3, "qos": 0, "retain": false}),
            &["ts"],
        );
    }
    (publisher, connack)
}

#[tokio::test]
async fn client_topic_aliases_reach_subscribers_and_events_with_their_topic() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let (mut publisher, connack) =
        client_aliases_arrive_with_their_topic(addr, &mut monitor, "alias", "al/#", "al/x").await;
    for expected in [
        "TopicAliasMaximum(32)",
        "SubscriptionIdentifierAvailable(1)",
        "SharedSubscriptionAvailable(1)",
    ] {
        assert!(connack.iter().any(|p| p == expected), "{connack:?}");
    }
    // An alias never set: DISCONNECT 0x82 (protocol error); above the maximum: 0x94.
    publisher
        .send(&publish5("", None, false, &[Property::TopicAlias(2)], b"x"))
        .await;
    let reason = publisher
        .next(|p| match p {
            Packet::Disconnect(d) => Some(d.reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, Some(0x82));
    let (mut over, _) = V5::connect(addr, "alias-over", &[]).await;
    over.send(&publish5(
        "t",
        None,
        false,
        &[Property::TopicAlias(33)],
        b"x",
    ))
    .await;
    let reason = over
        .next(|p| match p {
            Packet::Disconnect(d) => Some(d.reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, Some(0x94));
}

#[tokio::test]
async fn deliveries_carry_topic_aliases_when_the_client_accepts_them() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = V5::connect(addr, "alias-rx", &[Property::TopicAliasMaximum(1)]).await;
    sub.subscribe(1, None, &[("rx/#", 1)]).await;
    let (mut publisher, _) = V5::connect(addr, "alias-tx", &[]).await;
    for (i, topic) in ["rx/a", "rx/a", "rx/b", "rx/a"].into_iter().enumerate() {
        let pkid = u16::try_from(i + 1).expect("small");
        publisher.publish_acked(topic, pkid, b"x").await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = sub.publish().await;
        sub.puback(got.pkid.expect("QoS 1")).await;
        seen.push((got.topic, got.properties.join(",")));
    }
    let expected = [
        ("rx/a", "TopicAlias(1)"),
        ("", "TopicAlias(1)"),
        // One alias only: it moves to the new topic, and back.
        ("rx/b", "TopicAlias(1)"),
        ("rx/a", "TopicAlias(1)"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn topic_aliases_through_the_tap_are_reported_with_their_topic() {
    let (_mosquitto, tap, mut monitor) = tap_with_monitor().await;
    let (_publisher, connack) = client_aliases_arrive_with_their_topic(
        tap.local_addr(),
        &mut monitor,
        "tap-alias",
        "ta/#",
        "ta/x",
    )
    .await;
    // mosquitto's CONNACK, relayed: it accepts aliases (its max_topic_alias is 10).
    assert!(
        connack.iter().any(|p| p.starts_with("TopicAliasMaximum(")),
        "{connack:?}"
    );
}

#[tokio::test]
async fn members_of_a_shared_subscription_share_its_messages() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut members = Vec::new();
    for id in ["share-a", "share-b"] {
        let (mut member, _) = V5::connect(addr, id, &[]).await;
        assert_eq!(
            member.subscribe(1, None, &[("$share/g/sh/t", 1)]).await,
            [1]
        );
        members.push(member);
    }
    let (mut publisher, _) = V5::connect(addr, "share-pub", &[]).await;
    const N: usize = 10;
    for i in 0..N {
        let pkid = u16::try_from(i + 1).expect("small");
        publisher
            .publish_acked("sh/t", pkid, format!("m{i}").as_bytes())
            .await;
    }
    // Every message reaches exactly one member, and both members get some.
    let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + WAIT;
    while got.iter().map(Vec::len).sum::<usize>() < N && Instant::now() < deadline {
        for (i, member) in members.iter_mut().enumerate() {
            if let Some(p) = member.publish_within(Duration::from_millis(50)).await {
                member.puback(p.pkid.expect("QoS 1")).await;
                got[i].push(p.payload);
            }
        }
    }
    let mut all: Vec<_> = got.concat();
    all.sort();
    let mut expected: Vec<Vec<u8>> = (0..N).map(|i| format!("m{i}").into_bytes()).collect();
    expected.sort();
    assert_eq!(all, expected, "each message once");
    assert!(got.iter().all(|m| !m.is_empty()), "shared: {got:?}");
    // Nothing more comes.
    for member in &mut members {
        assert_eq!(member.publish_within(QUIET).await, None);
    }
}

#[tokio::test]
async fn shared_subscriptions_through_mosquitto_sub() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut subs: Vec<MosquittoSub> = ["msh-a", "msh-b"]
        .iter()
        .map(|id| {
            MosquittoSub::spawn(
                addr,
                &[
                    "-V",
                    "mqttv5",
                    "-i",
                    id,
                    "-q",
                    "1",
                    "-t",
                    "$share/grp/ms/t",
                    "-v",
                ],
            )
        })
        .collect();
    for id in ["msh-a", "msh-b"] {
        monitor
            .wait_for("both subscribed", |e| e.is("subscribed", id))
            .await;
    }
    for i in 0..4 {
        let out = mosquitto_pub(
            addr,
            &[
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "ms/t",
                "-m",
                &format!("m{i}"),
            ],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
    }
    // Two each, round robin.
    for sub in &mut subs {
        for _ in 0..2 {
            assert!(sub.next_line().await.starts_with("ms/t m"));
        }
    }
}

#[tokio::test]
async fn a_delivery_over_the_clients_maximum_packet_size_is_dropped_and_counted() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = V5::connect(addr, "small-rx", &[Property::MaximumPacketSize(64)]).await;
    sub.subscribe(1, None, &[("mp/#", 1)]).await;
    let (mut publisher, _) = V5::connect(addr, "big-tx", &[]).await;
    publisher.publish_acked("mp/t", 1, b"small").await;
    publisher.publish_acked("mp/t", 2, &[b'x'; 200]).await;
    publisher.publish_acked("mp/t", 3, b"after").await;
    for payload in [&b"small"[..], b"after"] {
        let got = sub.publish().await;
        assert_eq!(got.payload, payload);
        sub.puback(got.pkid.expect("QoS 1")).await;
    }
    assert_eq!(sub.publish_within(QUIET).await, None);
    assert_eq!(
        broker
            .metrics()
            .deliveries_too_large
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn the_clients_receive_maximum_holds_deliveries_until_acknowledged() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = V5::connect(addr, "slow-rx", &[Property::ReceiveMaximum(2)]).await;
    sub.subscribe(1, None, &[("rm/#", 1)]).await;
    let (mut publisher, _) = V5::connect(addr, "fast-tx", &[]).await;
    const N: u16 = 6;
    for i in 1..=N {
        publisher
            .publish_acked("rm/t", i, format!("m{i}").as_bytes())
            .await;
    }
    // Two in flight, then nothing until an acknowledgement.
    let first = sub.publish().await;
    let second = sub.publish().await;
    assert_eq!(sub.publish_within(QUIET).await, None, "the third waits");
    sub.puback(first.pkid.expect("QoS 1")).await;
    let third = sub.publish().await;
    assert_eq!(sub.publish_within(QUIET).await, None, "the fourth waits");
    let mut payloads = vec![first.payload, second.payload, third.payload.clone()];
    sub.puback(second.pkid.expect("QoS 1")).await;
    sub.puback(third.pkid.expect("QoS 1")).await;
    while payloads.len() < usize::from(N) {
        let got = sub.publish().await;
        sub.puback(got.pkid.expect("QoS 1")).await;
        payloads.push(got.payload);
    }
    let expected: Vec<Vec<u8>> = (1..=N).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(payloads, expected, "in order, none lost");
}

#[tokio::test]
async fn subscription_identifiers_go_with_the_deliveries_of_their_subscriptions() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let (mut sub, _) = V5::connect(addr, "ids-rx", &[]).await;
    sub.subscribe(1, Some(7), &[("id/+", 0)]).await;
    sub.subscribe(2, Some(300), &[("id/#", 0)]).await;
    // A plain subscription (no identifier, default options) gets no router identifier from
    // the front: its copy must carry none of the others' identifiers.
    sub.subscribe(3, None, &[("id/x", 0)]).await;
    let (mut publisher, _) = V5::connect(addr, "ids-tx", &[]).await;
    publisher.publish_acked("id/x", 1, b"x").await;
    // rumqttd delivers once per matching subscription: each copy its own identifier.
    let mut ids = vec![
        sub.publish().await.properties,
        sub.publish().await.properties,
        sub.publish().await.properties,
    ];
    ids.sort();
    assert_eq!(
        ids,
        [
            vec![],
            vec!["SubscriptionIdentifier(300)".to_owned()],
            vec!["SubscriptionIdentifier(7)".to_owned()]
        ]
    );
    // A plain QoS 0 publish (no RETAIN, no property) enters the router without properties;
    // the identifiers the router adds must not make its copies look like anything else.
    publisher
        .send(&publish5("id/x", None, false, &[], b"plain"))
        .await;
    let mut copies = Vec::new();
    for _ in 0..3 {
        let got = sub.publish().await;
        assert_eq!(
            (got.pkid, got.retain, got.payload.as_slice()),
            (None, false, &b"plain"[..]),
            "a QoS 0 copy, not retained"
        );
        copies.push(got.properties);
    }
    copies.sort();
    assert_eq!(copies, ids);
    // mosquitto_sub with an identifier (-D subscribe subscription-identifier).
    let mut monitor = Monitor::start(addr).await;
    let mut msub = MosquittoSub::spawn(
        addr,
        &[
            "-V",
            "mqttv5",
            "-i",
            "ids-msub",
            "-t",
            "mid/t",
            "-D",
            "subscribe",
            "subscription-identifier",
            "42",
            "-v",
        ],
    );
    monitor
        .wait_for("subscribed", |e| e.is("subscribed", "ids-msub"))
        .await;
    publisher.publish_acked("mid/t", 2, b"x").await;
    let line = msub.next_line().await;
    assert!(line.starts_with("mid/t"), "{line}");
}

#[tokio::test]
async fn no_local_retain_as_published_and_retain_handling() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let (mut publisher, _) = V5::connect(addr, "opt-tx", &[]).await;
    // Retained messages published before the subscriptions.
    publisher
        .send(&publish5("h/x", None, true, &[], b"kept-h"))
        .await;
    publisher
        .send(&publish5("k/x", None, true, &[], b"kept-k"))
        .await;
    publisher.publish_acked("sync/x", 1, b"x").await;

    let (mut me, _) = V5::connect(addr, "opt-me", &[]).await;
    // No Local (bit 2) on n/#, Retain As Published (bit 3) on r/#, Retain Handling 2 (bits
    // 4-5) on h/#, Retain Handling 0 on k/#.
    let codes = me
        .subscribe(
            1,
            None,
            &[("n/#", 0x04), ("r/#", 0x08), ("h/#", 0x20), ("k/#", 0)],
        )
        .await;
    assert_eq!(codes, [0, 0, 0, 0]);
    // Retain Handling 0: the retained message of k/x comes, with RETAIN; not h/x's.
    let got = me.publish().await;
    assert_eq!((got.topic.as_str(), got.retain), ("k/x", true));
    // No Local: its own publish does not come back; another client's does.
    me.send(&publish5("n/x", None, false, &[], b"mine")).await;
    publisher
        .send(&publish5("n/x", None, false, &[], b"theirs"))
        .await;
    let got = me.publish().await;
    assert_eq!(got.payload, b"theirs");
    // Retain As Published: a live retained publish keeps RETAIN on r/#, not on k/#.
    publisher
        .send(&publish5("r/x", None, true, &[], b"rap"))
        .await;
    publisher
        .send(&publish5("k/x", None, true, &[], b"plain"))
        .await;
    let mut flags = vec![];
    for _ in 0..2 {
        let got = me.publish().await;
        flags.push((got.topic, got.retain));
    }
    flags.sort();
    assert_eq!(flags, [("k/x".to_owned(), false), ("r/x".to_owned(), true)]);
    assert_eq!(
        me.publish_within(QUIET).await,
        None,
        "nothing else: {flags:?}"
    );
    assert_eq!(
        broker
            .metrics()
            .deliveries_not_wanted
            .load(Ordering::Relaxed),
        2,
        "the retained h/x and the own n/x"
    );
}

#[tokio::test]
async fn message_expiry_counts_down_and_expired_messages_are_not_delivered() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let (mut publisher, _) = V5::connect(addr, "exp-tx", &[]).await;
    publisher
        .send(&publish5(
            "ex/short",
            None,
            true,
            &[Property::MessageExpiryInterval(1)],
            b"short",
        ))
        .await;
    publisher
        .send(&publish5(
            "ex/long",
            None,
            true,
            &[Property::MessageExpiryInterval(100)],
            b"long",
        ))
        .await;
    publisher.publish_acked("sync/x", 1, b"x").await;
    let published = Instant::now();
    // The condition is the time itself: a second and a bit must pass.
    tokio::time::sleep_until(published + Duration::from_millis(1_100)).await;
    let (mut sub, _) = V5::connect(addr, "exp-rx", &[]).await;
    sub.subscribe(1, None, &[("ex/#", 0)]).await;
    let got = sub.publish().await;
    assert_eq!(got.topic, "ex/long");
    assert!(
        got.properties == ["MessageExpiryInterval(99)"]
            || got.properties == ["MessageExpiryInterval(98)"],
        "{:?}",
        got.properties
    );
    assert_eq!(sub.publish_within(QUIET).await, None, "ex/short expired");
    assert_eq!(
        broker.metrics().deliveries_expired.load(Ordering::Relaxed),
        1
    );
    // mosquitto_pub's expiry reaches a live subscriber unchanged (it did not wait).
    publisher_expiry_via_mosquitto_pub(addr, &mut sub).await;
}

async fn publisher_expiry_via_mosquitto_pub(addr: SocketAddr, sub: &mut V5) {
    let out = mosquitto_pub(
        addr,
        &[
            "-V",
            "mqttv5",
            "-t",
            "ex/m",
            "-m",
            "m",
            "-D",
            "publish",
            "message-expiry-interval",
            "30",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let got = timeout(WAIT, sub.publish()).await.expect("in time");
    assert_eq!(got.topic, "ex/m");
    assert_eq!(got.properties, ["MessageExpiryInterval(30)"]);
}
