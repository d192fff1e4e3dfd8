//! One behaviour list, three servers (issue 15): the same cases, with the same bytes from the
//! same raw MQTT 3.1.1 client (raw MQTT 5 bytes in `mqtt5_optional_features`), against
//! `activity-broker`, the tap in front of mosquitto and the embassy gateway, through the one
//! abstraction of `tests::conformance`.
//!
//! Each case is a function below; the macro at the end makes one test per (case, server), named
//! `<case>::<server>`, so a failure names both. Where a server does not follow the shared rule
//! today, the case says so in its code with the reason (printed as `known divergence: ...`,
//! seen with `--nocapture`) and asserts what the server does now, so that the test still checks
//! something and is flipped when the server changes.
//!
//! The gateway's tests re-run themselves in a private network namespace with a TAP device
//! (`tests::netns`): they need root and `/dev/net/tun`, and are skipped without them unless
//! `REQUIRE_NETNS=1` (the test command sets it).

use std::time::{Duration, Instant};

use activity_core::QoS;
use activity_core::codec::{Connect, LastWill, Packet};
use serde_json::{Value, json};
use tests::conformance::{
    Counter, Kind, MAX_PACKET, PASSWORD, Received, Server, USER, Wire, assert_event, connect,
    connect_with_will, known_divergence, run, skipped,
};
use tests::{Ev, QUIET, connect_packet};

/// The `connected` event of `wire`'s client (clean session, no username), checked field by
/// field.
async fn connected(monitor: &mut tests::Monitor, wire: &Wire, keepalive: u16) -> Ev {
    let ev = monitor.next_event("connected", &wire.id).await;
    assert_event(
        &ev,
        json!({"client_id": wire.id, "proto_ver": 4, "keepalive": keepalive,
               "clean_session": true, "peer": wire.local_addr().to_string(), "transport": "tcp"}),
        &[],
    );
    ev
}

/// The `disconnected` event of `client` whose `connected` event was `at`, checked field by
/// field.
async fn disconnected(monitor: &mut tests::Monitor, client: &str, reason: &str, at: &Ev) -> Ev {
    let ev = monitor.next_event("disconnected", client).await;
    assert_event(
        &ev,
        tests::with_reason_code(
            json!({"client_id": client, "reason": reason, "connected_at": at.ts()}),
            &ev,
        ),
        &[],
    );
    assert!(
        ev.ts() >= at.ts() && ev.index > at.index,
        "{client}: disconnected after its connected"
    );
    ev
}

/// The next `message` event of `client` on `topic`.
async fn message_on(monitor: &mut tests::Monitor, client: &str, topic: &str) -> Ev {
    monitor
        .wait_for(&format!("message of {client} on {topic}"), |e| {
            e.is("message", client) && e.json["topic"] == topic
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// 1. connect and disconnect
// ---------------------------------------------------------------------------------------------

async fn connect_and_disconnect(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;

    // A login: every CONNECT field the event reports.
    let login = Connect {
        username: Some(USER),
        password: Some(PASSWORD.as_bytes()),
        ..connect("c1-alice", 42)
    };
    let (alice, ack) = Wire::connect(addr, login).await;
    assert_eq!(ack, (false, 0), "alice logs in");
    let alice_connected = monitor.next_event("connected", "c1-alice").await;
    assert_event(
        &alice_connected,
        json!({"client_id": "c1-alice", "username": USER, "proto_ver": 4, "keepalive": 42,
               "clean_session": true, "peer": alice.local_addr().to_string(), "transport": "tcp"}),
        &[],
    );

    // Anonymous with a persistent session: no `username`, `clean_session` false, and a new
    // session is not present.
    let (plain, ack) = Wire::connect(
        addr,
        Connect {
            clean_session: false,
            ..connect("c1-plain", 17)
        },
    )
    .await;
    assert_eq!(ack, (false, 0), "a new persistent session is not present");
    let plain_connected = monitor.next_event("connected", "c1-plain").await;
    assert_event(
        &plain_connected,
        json!({"client_id": "c1-plain", "proto_ver": 4, "keepalive": 17,
               "clean_session": false, "peer": plain.local_addr().to_string(), "transport": "tcp"}),
        &[],
    );

    // DISCONNECT: `normal`, with the `ts` of the connection's `connected` event.
    alice.disconnect().await;
    disconnected(&mut monitor, "c1-alice", "normal", &alice_connected).await;
    plain.disconnect().await;
    disconnected(&mut monitor, "c1-plain", "normal", &plain_connected).await;
    // Only the monitor is left.
    server.expect_connected_clients(1).await;
}

// ---------------------------------------------------------------------------------------------
// 2. subscribe and unsubscribe
// ---------------------------------------------------------------------------------------------

async fn subscribe_and_unsubscribe(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let mut sub = Wire::connected(addr, "c2-sub").await;
    connected(&mut monitor, &sub, 60).await;

    // One SUBSCRIBE, three filters at QoS 0, 1 and 2: granted up to the server's maximum.
    let max = server.kind().max_qos();
    if max < QoS::ExactlyOnce {
        skipped(
            server,
            "a QoS 2 grant",
            "this server grants at most QoS 1 (adapter-embassy keeps no outgoing QoS 2 state); \
             MQTT 3.1.1 section 3.9.3 allows a lower grant",
        );
    }
    let filters = [
        ("c2/a", QoS::AtMostOnce),
        ("c2/b/+", QoS::AtLeastOnce),
        ("c2/#", QoS::ExactlyOnce),
    ];
    let codes = sub.subscribe(1, &filters).await;
    let granted: Vec<u8> = filters.iter().map(|(_, q)| (*q).min(max).as_u8()).collect();
    assert_eq!(codes, granted, "SUBACK return codes");
    // One event per filter, in the SUBSCRIBE's order.
    for (topic, qos) in filters {
        let ev = monitor.next_event("subscribed", "c2-sub").await;
        assert_event(
            &ev,
            json!({"client_id": "c2-sub", "topic": topic, "qos": qos.min(max).as_u8()}),
            &[],
        );
    }

    // One UNSUBSCRIBE, two filters: UNSUBACK and an event each.
    sub.unsubscribe(2, &["c2/a", "c2/#"]).await;
    for topic in ["c2/a", "c2/#"] {
        let ev = monitor
            .wait_for(&format!("unsubscribed from {topic}"), |e| {
                e.is("unsubscribed", "c2-sub") && e.json["topic"] == topic
            })
            .await;
        assert_event(&ev, json!({"client_id": "c2-sub", "topic": topic}), &[]);
    }

    // A filter the client does not hold: UNSUBACK, no event (the engine's rule). A later
    // subscription's event proves that the events of this connection caught up.
    sub.unsubscribe(3, &["c2/never"]).await;
    assert_eq!(
        sub.subscribe(4, &[("c2/marker", QoS::AtMostOnce)]).await,
        [0]
    );
    monitor
        .wait_for("subscribed to c2/marker", |e| {
            e.is("subscribed", "c2-sub") && e.json["topic"] == "c2/marker"
        })
        .await;
    // Exactly one event per filter: no more `subscribed`, no `unsubscribed` for c2/never.
    let stray = |e: &Ev| {
        e.is("subscribed", "c2-sub")
            || (e.is("unsubscribed", "c2-sub") && e.json["topic"] == "c2/never")
    };
    monitor
        .assert_none("a stray subscription event", QUIET, stray)
        .await;

    // Nothing is delivered on the filters given up: a publish on c2/a (matched by no filter
    // held now) is not delivered; one on c2/b/x (c2/b/+ is still held) is, and comes first.
    let mut publisher = Wire::connected(addr, "c2-pub").await;
    publisher
        .publish_flow("c2/a", QoS::AtLeastOnce, 1, false, b"gone")
        .await;
    publisher
        .publish_flow("c2/b/x", QoS::AtLeastOnce, 2, false, b"held")
        .await;
    let got = sub.receive().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("c2/b/x", &b"held"[..]),
        "no delivery on an unsubscribed filter"
    );
    publisher.disconnect().await;
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 3. publish at QoS 0, 1 and 2
// ---------------------------------------------------------------------------------------------

async fn publish_qos_0_1_2(server: &mut Server) {
    let addr = server.addr();
    let max = server.kind().max_qos();
    let mut monitor = server.monitor().await;
    let mut sub = Wire::connected(addr, "c3-sub").await;
    assert_eq!(
        sub.subscribe(1, &[("c3/#", QoS::ExactlyOnce)]).await,
        [max.as_u8()]
    );
    // A QoS 0 subscription: every delivery comes down to QoS 0.
    let mut low = Wire::connected(addr, "c3-low").await;
    assert_eq!(low.subscribe(1, &[("c3/#", QoS::AtMostOnce)]).await, [0]);
    let mut publisher = Wire::connected(addr, "c3-pub").await;
    if max < QoS::ExactlyOnce {
        skipped(
            server,
            "a delivery at QoS 2",
            "this server grants at most QoS 1, so the QoS 2 publish arrives at QoS 1",
        );
    }

    // Binary at QoS 0 (base64 in the event, padded), text at QoS 1 and 2 (PUBACK; PUBREC,
    // PUBREL, PUBCOMP), then a retained one.
    let binary: &[u8] = &[0xFF, 0x00, 0x80, 0x41];
    let sends: [(&str, QoS, bool, &[u8], Value); 4] = [
        (
            "c3/zero",
            QoS::AtMostOnce,
            false,
            binary,
            json!({"payload": "/wCAQQ==", "payload_encoding": "base64"}),
        ),
        (
            "c3/one",
            QoS::AtLeastOnce,
            false,
            b"one",
            json!({"payload": "one"}),
        ),
        (
            "c3/two",
            QoS::ExactlyOnce,
            false,
            b"two",
            json!({"payload": "two"}),
        ),
        (
            "c3/kept",
            QoS::AtLeastOnce,
            true,
            b"kept",
            json!({"payload": "kept"}),
        ),
    ];
    for (pkid, (topic, qos, retain, payload, shown)) in (10..).zip(sends) {
        if qos == QoS::ExactlyOnce {
            // The same PUBLISH sent again (DUP) before its PUBREL: PUBREC again, and neither
            // delivered nor reported twice (MQTT 3.1.1 section 4.3.3).
            publisher.publish(topic, qos, pkid, retain, payload).await;
            assert_eq!(publisher.recv("PUBREC").await, Received::PubRec(pkid));
            publisher
                .send(Packet::Publish(activity_core::codec::Publish {
                    properties: activity_core::codec::Properties::EMPTY,
                    dup: true,
                    qos,
                    retain,
                    topic,
                    pkid: Some(pkid),
                    payload,
                }))
                .await;
            assert_eq!(
                publisher.recv("PUBREC of the DUP").await,
                Received::PubRec(pkid)
            );
            publisher
                .send(Packet::PubRel(activity_core::codec::Ack::new(pkid)))
                .await;
            assert_eq!(publisher.recv("PUBCOMP").await, Received::PubComp(pkid));
        } else {
            publisher
                .publish_flow(topic, qos, pkid, retain, payload)
                .await;
        }
        let got = sub.receive().await;
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice(), got.qos),
            (topic, payload, qos.min(max)),
            "the subscriber receives {topic} at min(publish QoS, granted QoS)"
        );
        let got = low.receive().await;
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice(), got.qos),
            (topic, payload, QoS::AtMostOnce),
            "the QoS 0 subscriber receives {topic} at QoS 0"
        );
        let ev = message_on(&mut monitor, "c3-pub", topic).await;
        let mut fields = json!({"pub_client_id": "c3-pub", "topic": topic,
                                "payload_len": payload.len(), "qos": qos.as_u8(),
                                "retain": retain});
        for (key, value) in shown.as_object().expect("an object") {
            fields[key] = value.clone();
        }
        assert_event(&ev, fields, &[]);
    }
    // The QoS 2 publish sent twice was reported once (the later c3/kept event, from the same
    // connection, proves the pipeline caught up).
    monitor
        .assert_none("a second message event of c3/two", QUIET, |e| {
            e.is("message", "c3-pub") && e.json["topic"] == "c3/two"
        })
        .await;

    low.disconnect().await;
    sub.disconnect().await;

    // A later subscriber of the retained topic receives the retained message, RETAIN set.
    let mut late = Wire::connected(addr, "c3-late").await;
    assert_eq!(
        late.subscribe(1, &[("c3/kept", QoS::AtLeastOnce)]).await,
        [1]
    );
    let got = late.receive().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice(), got.retain),
        ("c3/kept", &b"kept"[..], true),
        "the retained message, RETAIN set"
    );
    late.disconnect().await;
    publisher.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 4. msgack
// ---------------------------------------------------------------------------------------------

async fn msgack(server: &mut Server) {
    let addr = server.addr();
    let max = server.kind().max_qos();
    let mut monitor = server.monitor().await;
    let mut sub = Wire::connected(addr, "c4-sub").await;
    // Deliveries at QoS 1 on c4/#, at QoS 0 on c4low/# (never acknowledged), at QoS 2 on
    // c4two/# (acknowledged by the PUBREC).
    assert_eq!(
        sub.subscribe(
            1,
            &[
                ("c4/#", QoS::AtLeastOnce),
                ("c4low/#", QoS::AtMostOnce),
                ("c4two/#", QoS::ExactlyOnce),
            ]
        )
        .await,
        [1, 0, max.as_u8()]
    );
    let mut publisher = Wire::connected(addr, "c4-pub").await;

    let envelope = br#"{"product_id":"p1","message_id":42,"data":"on"}"#;
    publisher
        .publish_flow("c4/dev/7", QoS::AtLeastOnce, 5, false, envelope)
        .await;
    let delivery = sub.delivery().await;
    assert_eq!(
        (delivery.topic.as_str(), delivery.qos),
        ("c4/dev/7", QoS::AtLeastOnce)
    );
    let pkid = delivery.pkid.expect("QoS 1 has a packet id");
    // No msgack before the PUBACK: the `message` event marks where the pipeline is.
    message_on(&mut monitor, "c4-pub", "c4/dev/7").await;
    monitor
        .assert_none("msgack before the PUBACK", QUIET, |e| {
            e.is("msgack", "c4-sub")
        })
        .await;

    sub.send(Packet::PubAck(activity_core::codec::Ack::new(pkid)))
        .await;
    let ack = monitor.next_event("msgack", "c4-sub").await;
    assert_event(
        &ack,
        json!({"pub_client_id": "c4-pub", "ack_client_id": "c4-sub", "product_id": "p1",
               "message_id": 42, "topic": "c4/dev/7", "qos": 1}),
        &[],
    );

    // Ids of any JSON type but a fraction are echoed as they came (numbers stay numbers);
    // other fields do not matter.
    let numbers = br#"{"message_id":-42,"product_id":7,"extra":[1,{"a":null}]}"#;
    publisher
        .publish_flow("c4/num", QoS::AtLeastOnce, 6, false, numbers)
        .await;
    assert_eq!(sub.receive().await.topic, "c4/num");
    let ack = monitor.next_event("msgack", "c4-sub").await;
    assert_event(
        &ack,
        json!({"pub_client_id": "c4-pub", "ack_client_id": "c4-sub", "product_id": 7,
               "message_id": -42, "topic": "c4/num", "qos": 1}),
        &[],
    );

    // Payloads that are not envelopes: delivered and acknowledged, no msgack.
    let plain: [&[u8]; 5] = [
        b"not json",
        br#"{"product_id":"p1"}"#,
        br#"{"product_id":"p1","message_id":1.5}"#,
        br#"[{"product_id":"p1","message_id":"m"}]"#,
        &[0xFF, 0xFE],
    ];
    for (pkid, payload) in (20..).zip(plain) {
        publisher
            .publish_flow("c4/plain", QoS::AtLeastOnce, pkid, false, payload)
            .await;
        let got = sub.receive().await;
        assert_eq!(got.payload, payload, "delivered unchanged");
    }

    // An envelope delivered at QoS 0: nothing to acknowledge, no msgack.
    publisher
        .publish_flow("c4low/1", QoS::AtLeastOnce, 29, false, envelope)
        .await;
    let got = sub.receive().await;
    assert_eq!((got.topic.as_str(), got.qos), ("c4low/1", QoS::AtMostOnce));

    // At QoS 2 the PUBREC acknowledges the delivery: the msgack says QoS 2, and the PUBCOMP
    // makes no second one.
    publisher
        .publish_flow("c4two/1", QoS::ExactlyOnce, 30, false, envelope)
        .await;
    let delivery = sub.delivery().await;
    let pkid = delivery.pkid.expect("QoS 1 or 2 has a packet id");
    assert_eq!(
        (delivery.topic.as_str(), delivery.qos),
        ("c4two/1", max),
        "delivered at the granted QoS"
    );
    if max < QoS::ExactlyOnce {
        skipped(
            server,
            "a msgack at the PUBREC of a QoS 2 delivery",
            "this server grants at most QoS 1: the PUBACK acknowledges the delivery",
        );
        sub.send(Packet::PubAck(activity_core::codec::Ack::new(pkid)))
            .await;
    } else {
        sub.send(Packet::PubRec(activity_core::codec::Ack::new(pkid)))
            .await;
    }
    let ack = monitor.next_event("msgack", "c4-sub").await;
    assert_event(
        &ack,
        json!({"pub_client_id": "c4-pub", "ack_client_id": "c4-sub", "product_id": "p1",
               "message_id": 42, "topic": "c4two/1", "qos": max.as_u8()}),
        &[],
    );
    if max == QoS::ExactlyOnce {
        assert_eq!(sub.recv("PUBREL").await, Received::PubRel(pkid));
        sub.send(Packet::PubComp(activity_core::codec::Ack::new(pkid)))
            .await;
    }

    // One msgack per acknowledged envelope, none else: the subscriber's own publish after its
    // acknowledgements marks where its events are.
    sub.publish_flow("c4marker", QoS::AtLeastOnce, 40, false, b"m")
        .await;
    message_on(&mut monitor, "c4-sub", "c4marker").await;
    monitor
        .assert_none("another msgack", QUIET, |e| e.kind() == "msgack")
        .await;
    publisher.disconnect().await;
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 5. refusals
// ---------------------------------------------------------------------------------------------

async fn refusals(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;

    // The reserved client id: CONNACK 2 (identifier rejected), then closed.
    let (mut reserved, ack) = Wire::connect(addr, connect("broker", 60)).await;
    assert_eq!(ack, (false, 2), "client id `broker` gets CONNACK 2");
    reserved.expect_closed("CONNACK 2").await;
    // Each refused socket is closed on this side too, so that the gateway's slot listens again.
    drop(reserved);

    // A protocol level no server speaks (6): CONNACK 1 (unacceptable protocol version), in
    // MQTT 3.1.1's form.
    let mut v6 = Wire::open(addr, "c5-v6").await;
    v6.send_raw(&connect_packet("c5-v6", 60, 6)).await;
    assert_eq!(
        v6.recv("CONNACK").await,
        Received::ConnAck {
            session_present: false,
            code: 1
        },
        "protocol level 6 gets CONNACK 1"
    );
    v6.expect_closed("CONNACK 1").await;
    drop(v6);
    // Level 3 under the name "MQTT" (MQTT 3.1 calls itself MQIsdp): CONNACK 1 too.
    let mut v3 = Wire::open(addr, "c5-v3").await;
    v3.send_raw(&connect_packet("c5-v3", 60, 3)).await;
    assert_eq!(
        v3.recv("CONNACK").await,
        Received::ConnAck {
            session_present: false,
            code: 1
        },
        "protocol level 3 gets CONNACK 1"
    );
    v3.expect_closed("CONNACK 1").await;
    drop(v3);

    // A wrong password, and an unknown user: CONNACK 4 (bad username or password).
    for (client, username, password) in [
        ("c5-wrong", USER, &b"wrong"[..]),
        ("c5-mallory", "mallory", PASSWORD.as_bytes()),
    ] {
        let login = Connect {
            username: Some(username),
            password: Some(password),
            ..connect(client, 60)
        };
        let (mut wire, ack) = Wire::connect(addr, login).await;
        assert_eq!(ack, (false, 4), "{client}: CONNACK 4");
        wire.expect_closed("CONNACK 4").await;
    }

    // A will on a system topic: CONNACK 5 (not authorized).
    let will = LastWill {
        properties: activity_core::codec::Properties::EMPTY,
        topic: "SYSTEM/message",
        message: b"forged",
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let (mut sneaky, ack) = Wire::connect(addr, connect_with_will("c5-sneaky", 60, will)).await;
    assert_eq!(ack, (false, 5), "a will on a system topic gets CONNACK 5");
    sneaky.expect_closed("CONNACK 5").await;
    drop(sneaky);

    // Any packet before CONNECT: closed without an answer.
    let mut early = Wire::open(addr, "c5-early").await;
    early.send(Packet::PingReq).await;
    early.expect_closed("a PINGREQ before CONNECT").await;
    drop(early);

    // A `refused` event for each CONNACK (client id and code as sent; no client id is read
    // from a CONNECT of an unknown level) and no other event about them: a later client's
    // `connected` event proves the pipeline caught up.
    let marker = Wire::connected(addr, "c5-marker").await;
    connected(&mut monitor, &marker, 60).await;
    for (client, code, reason) in [
        ("broker", 2, "client_identifier_not_valid"),
        ("", 1, "unsupported_protocol_version"),
        ("", 1, "unsupported_protocol_version"),
        ("c5-wrong", 4, "bad_username_or_password"),
        ("c5-mallory", 4, "bad_username_or_password"),
        ("c5-sneaky", 5, "not_authorized"),
    ] {
        let ev = monitor
            .wait_for(&format!("refused of {client:?}"), |e| {
                e.kind() == "refused" && e.json["client_id"] == client
            })
            .await;
        assert_eq!(ev.json["reason_code"], code, "{}", ev.json);
        assert_eq!(ev.json["reason"], reason, "{}", ev.json);
    }
    monitor
        .assert_none("about a refused client", QUIET, |e| {
            matches!(
                e.subject(),
                Some("broker" | "c5-v6" | "c5-v3" | "c5-wrong" | "c5-mallory" | "c5-sneaky" | "")
            )
        })
        .await;
    // Counted: six refused CONNECTs, two of them for credentials.
    server.expect_counter(Counter::RefusedConnects, 6).await;
    server.expect_counter(Counter::RefusedCredentials, 2).await;
    marker.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 6. system topics
// ---------------------------------------------------------------------------------------------

async fn system_topics(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let mut dev = Wire::connected(addr, "c6-dev").await;
    connected(&mut monitor, &dev, 60).await;

    // Filters that would receive events: SUBACK 0x80 for a client not allowed to read them,
    // even on loopback (the broker and the tap are told not to trust it).
    assert_eq!(
        dev.subscribe(1, &[("SYSTEM/#", QoS::AtMostOnce)]).await,
        [0x80]
    );
    // (`#` receives no events: its first level is a wildcard.)
    assert_eq!(
        dev.subscribe(2, &[("SYSTEM/+/connected", QoS::AtLeastOnce)])
            .await,
        [0x80]
    );
    assert_eq!(dev.subscribe(3, &[("c6/#", QoS::AtLeastOnce)]).await, [1]);
    monitor
        .wait_for("subscribed to c6/#", |e| {
            e.is("subscribed", "c6-dev") && e.json["topic"] == "c6/#"
        })
        .await;
    monitor
        .assert_none("subscribed for a refused filter", QUIET, |e| {
            e.is("subscribed", "c6-dev")
        })
        .await;

    // Publishing on a system topic: dropped, and (the engine's rule) the client stays.
    let forged = br#"{"forged":true}"#;
    dev.publish("SYSTEM/message", QoS::AtMostOnce, 0, false, forged)
        .await;
    dev.publish_flow(
        "SYSTEM/presence/connected",
        QoS::AtLeastOnce,
        7,
        false,
        forged,
    )
    .await;
    dev.publish_flow("SYSTEM/msgack", QoS::ExactlyOnce, 8, false, forged)
        .await;
    dev.expect_open("publishes on system topics").await;
    // Still a working client: its next publish is acknowledged, delivered and reported. The
    // PUBACK and the delivery of the client's own message come in the server's order (the
    // engine answers at once; through the tap mosquitto delivers first): MQTT leaves it open.
    dev.publish("c6/ok", QoS::AtLeastOnce, 9, false, b"ok")
        .await;
    let (mut acked, mut got) = (false, None);
    while !acked || got.is_none() {
        match dev.recv("the PUBACK and the delivery of c6/ok").await {
            Received::PubAck(9) if !acked => acked = true,
            Received::Publish(delivery) if got.is_none() => {
                let pkid = delivery.pkid.expect("a QoS 1 delivery");
                dev.send(Packet::PubAck(activity_core::codec::Ack::new(pkid)))
                    .await;
                got = Some(delivery);
            }
            other => panic!("c6-dev: expected PUBACK 9 and one delivery, got {other:?}"),
        }
    }
    let got = got.expect("delivered");
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("c6/ok", &b"ok"[..])
    );
    message_on(&mut monitor, "c6-dev", "c6/ok").await;
    // Nobody received a forged publish (the monitor is the only reader of the system topics),
    // and no `message` event reports one.
    monitor
        .assert_none("a forged publish or its message event", QUIET, |e| {
            e.json.get("forged").is_some()
                || (e.kind() == "message"
                    && e.json["topic"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("SYSTEM/")))
        })
        .await;
    // Counted: the three publishes dropped, the two filters refused.
    server.expect_counter(Counter::PublishesDenied, 3).await;
    server.expect_counter(Counter::SubscriptionsDenied, 2).await;
    dev.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 7. keep-alive and last will
// ---------------------------------------------------------------------------------------------

async fn keepalive_and_will(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let mut watcher = Wire::connected(addr, "c7-watch").await;
    assert_eq!(
        watcher.subscribe(1, &[("c7/#", QoS::AtLeastOnce)]).await,
        [1]
    );

    // Keep-alive 0: never timed out (MQTT 3.1.1 section 3.1.2.10).
    let (mut forever, ack) = Wire::connect(addr, connect("c7-forever", 0)).await;
    assert_eq!(ack, (false, 0), "keep-alive 0 is accepted");
    connected(&mut monitor, &forever, 0).await;

    // A retained will: its `message` event says so.
    let will = LastWill {
        properties: activity_core::codec::Properties::EMPTY,
        topic: "c7/will",
        message: b"gone",
        qos: QoS::AtLeastOnce,
        retain: true,
    };
    let started = Instant::now();
    let (mut sleepy, ack) = Wire::connect(addr, connect_with_will("c7-sleepy", 1, will)).await;
    assert_eq!(
        ack,
        (false, 0),
        "sleepy connects with keep-alive 1 s and a will"
    );
    let sleepy_connected = connected(&mut monitor, &sleepy, 1).await;

    // Silent: closed at 1.5 x the keep-alive, not before.
    sleepy
        .expect_closed("1.5 x a keep-alive of 1 s of silence")
        .await;
    let silent_for = started.elapsed();
    assert!(
        silent_for >= Duration::from_millis(1_400),
        "closed after {silent_for:?}, before 1.5 x the keep-alive"
    );
    let gone = disconnected(
        &mut monitor,
        "c7-sleepy",
        "keepalive_timeout",
        &sleepy_connected,
    )
    .await;
    // The event times say about 1.5 s too (the bounds leave room for a loaded machine).
    let gap = gone.ts() - sleepy_connected.ts();
    assert!(
        (1_400..=2_900).contains(&gap),
        "ts gap {gap} ms between connected and disconnected, expected about 1,500"
    );
    server.expect_counter(Counter::KeepaliveTimeouts, 1).await;

    // The will reaches the subscriber.
    let got = watcher.receive().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice(), got.qos),
        ("c7/will", &b"gone"[..], QoS::AtLeastOnce),
        "the will is delivered"
    );

    // Its `message` event comes before the `disconnected` event.
    if server.is(Kind::Tap) {
        known_divergence(
            server,
            "the will's `message` event",
            "in a relay the upstream broker publishes the will, so the tap never sees it \
             (docs/tap.md: what a tap cannot see)",
        );
        monitor
            .assert_none("message of c7-sleepy", QUIET, |e| {
                e.is("message", "c7-sleepy")
            })
            .await;
    } else {
        let message = monitor.next_event("message", "c7-sleepy").await;
        assert_event(
            &message,
            json!({"pub_client_id": "c7-sleepy", "topic": "c7/will", "payload": "gone",
                   "payload_len": 4, "qos": 1, "retain": true}),
            &[],
        );
        assert!(
            message.index < gone.index,
            "the will's message event (#{}) comes before disconnected (#{})",
            message.index,
            gone.index
        );
    }

    // The keep-alive 0 client, silent all along, is still connected.
    forever
        .expect_open("more than 1.5 s of silence with keep-alive 0")
        .await;
    monitor
        .assert_none("disconnected of the keep-alive 0 client", QUIET, |e| {
            e.is("disconnected", "c7-forever")
        })
        .await;
    forever.disconnect().await;
    watcher.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 8. takeover
// ---------------------------------------------------------------------------------------------

async fn takeover(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let mut first = Wire::connected(addr, "c8-twin").await;
    let first_connected = connected(&mut monitor, &first, 60).await;

    let mut second = Wire::connected(addr, "c8-twin").await;
    first.expect_closed("a takeover of its client id").await;
    let gone = disconnected(&mut monitor, "c8-twin", "takenover", &first_connected).await;
    let second_connected = connected(&mut monitor, &second, 60).await;
    assert!(
        gone.index < second_connected.index,
        "the old connection's disconnected (#{}) comes before the new one's connected (#{})",
        gone.index,
        second_connected.index
    );
    second.expect_open("the takeover").await;
    // The new connection is the only one of its client id: the monitor and it.
    server.expect_connected_clients(2).await;
    second.disconnect().await;
    disconnected(&mut monitor, "c8-twin", "normal", &second_connected).await;
}

// ---------------------------------------------------------------------------------------------
// 9. limits and bad bytes
// ---------------------------------------------------------------------------------------------

async fn limits_and_bad_bytes(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let attacks: [(&str, Vec<u8>, &str); 4] = [
        // A PUBLISH twice the largest packet the server accepts.
        ("c9-big", oversized_publish(), "packet_too_large"),
        // Only the fixed header of a PUBLISH of 4,000 bytes: closed at the header.
        ("c9-header", vec![0x30, 0xA0, 0x1F], "packet_too_large"),
        // Packet type 0 is reserved (MQTT 3.1.1 section 2.2.1).
        ("c9-type0", vec![0x00, 0x00], "protocol_error"),
        // A remaining length continued past 4 bytes (section 2.2.3).
        (
            "c9-length",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            "protocol_error",
        ),
    ];
    for (client, bytes, reason) in attacks {
        let mut wire = Wire::connected(addr, client).await;
        let at = connected(&mut monitor, &wire, 60).await;
        wire.send_raw(&bytes).await;
        wire.expect_closed(reason).await;
        disconnected(&mut monitor, client, reason, &at).await;
    }
    server.expect_counter(Counter::ProtocolErrors, 4).await;
    // The server still serves.
    let after = Wire::connected(addr, "c9-after").await;
    connected(&mut monitor, &after, 60).await;
    after.disconnect().await;
}

/// A QoS 0 PUBLISH of `2 * MAX_PACKET` bytes of payload.
fn oversized_publish() -> Vec<u8> {
    publish_bytes("c9/big", QoS::AtMostOnce, 0, &vec![b'x'; 2 * MAX_PACKET])
}

// ---------------------------------------------------------------------------------------------
// 10. an empty client id
// ---------------------------------------------------------------------------------------------

async fn empty_client_id(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;

    // Clean session: accepted, named `auto-` + 16 hex digits in the events (the engine's
    // rule), the same name in `connected` and `disconnected`.
    let (anon, ack) = Wire::connect(addr, connect("", 60)).await;
    assert_eq!(
        ack,
        (false, 0),
        "an empty id with a clean session is accepted"
    );
    let peer = anon.local_addr().to_string();
    let ev = monitor
        .wait_for(&format!("connected from {peer}"), |e| {
            e.kind() == "connected" && e.json["peer"] == peer.as_str()
        })
        .await;
    let id = ev.subject().expect("a client id").to_owned();
    let hex = id.strip_prefix("auto-").unwrap_or("");
    assert!(
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "the generated id {id:?} is not `auto-` + 16 lowercase hex digits"
    );
    assert_event(
        &ev,
        json!({"client_id": id, "proto_ver": 4, "keepalive": 60, "clean_session": true,
               "peer": peer, "transport": "tcp"}),
        &[],
    );
    anon.disconnect().await;
    disconnected(&mut monitor, &id, "normal", &ev).await;

    // A persistent session needs an id: CONNACK 2 (MQTT 3.1.1 section 3.1.3.1), no event.
    let (mut persistent, ack) = Wire::connect(
        addr,
        Connect {
            clean_session: false,
            ..connect("", 60)
        },
    )
    .await;
    assert_eq!(ack, (false, 2), "an empty id with a persistent session");
    persistent.expect_closed("CONNACK 2").await;
    let marker = Wire::connected(addr, "c10-marker").await;
    connected(&mut monitor, &marker, 60).await;
    monitor
        .assert_none("about another generated id", QUIET, |e| {
            e.kind() == "connected"
                && e.subject() != Some("c10-marker")
                && e.subject() != Some(tests::conformance::MONITOR)
        })
        .await;
    marker.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 11. a will only for a client that vanished
// ---------------------------------------------------------------------------------------------

async fn will_only_when_vanished(server: &mut Server) {
    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let mut watcher = Wire::connected(addr, "c11-watch").await;
    assert_eq!(
        watcher.subscribe(1, &[("c11/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    let will = |topic, qos| LastWill {
        properties: activity_core::codec::Properties::EMPTY,
        topic,
        message: b"gone",
        qos,
        retain: false,
    };

    // DISCONNECT: no will (the engine's rule, and MQTT 3.1.1 section 3.1.2.5).
    let (polite, ack) = Wire::connect(
        addr,
        connect_with_will("c11-polite", 60, will("c11/polite", QoS::AtLeastOnce)),
    )
    .await;
    assert_eq!(ack, (false, 0));
    let polite_connected = connected(&mut monitor, &polite, 60).await;
    polite.disconnect().await;
    disconnected(&mut monitor, "c11-polite", "normal", &polite_connected).await;

    // A socket closed without DISCONNECT: `tcp_closed`, and the will (at its QoS 0).
    let (rude, ack) = Wire::connect(
        addr,
        connect_with_will("c11-rude", 60, will("c11/rude", QoS::AtMostOnce)),
    )
    .await;
    assert_eq!(ack, (false, 0));
    let rude_connected = connected(&mut monitor, &rude, 60).await;
    drop(rude);
    let gone = disconnected(&mut monitor, "c11-rude", "tcp_closed", &rude_connected).await;
    // The first will the watcher gets is the rude client's: none came for the polite one.
    let got = watcher.receive().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice(), got.qos),
        ("c11/rude", &b"gone"[..], QoS::AtMostOnce),
        "only the client that vanished has its will published, at the will's QoS"
    );
    if server.is(Kind::Tap) {
        known_divergence(
            server,
            "the will's `message` event",
            "in a relay the upstream broker publishes the will, so the tap never sees it \
             (docs/tap.md: what a tap cannot see)",
        );
    } else {
        let message = monitor.next_event("message", "c11-rude").await;
        assert_event(
            &message,
            json!({"pub_client_id": "c11-rude", "topic": "c11/rude", "payload": "gone",
                   "payload_len": 4, "qos": 0, "retain": false}),
            &[],
        );
        assert!(message.index < gone.index, "the will's message event first");
    }
    monitor
        .assert_none("message of c11-polite", QUIET, |e| {
            e.is("message", "c11-polite")
        })
        .await;
    watcher.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// 12. QoS 2 publishes awaiting PUBREL
// ---------------------------------------------------------------------------------------------

async fn qos2_awaiting_pubrel_limit(server: &mut Server) {
    let addr = server.addr();
    let limit = server.kind().max_inbound_qos2();
    let mut monitor = server.monitor().await;
    let mut hoarder = Wire::connected(addr, "c12-hoarder").await;
    let at = connected(&mut monitor, &hoarder, 60).await;

    // `limit` QoS 2 publishes never released: each gets its PUBREC. One more: closed as
    // `protocol_error` (the engine's rule).
    let mut burst = Vec::new();
    for pkid in 1..=u16::try_from(limit + 1).expect("limits are below 65535") {
        burst.extend_from_slice(&publish_bytes("c12/q", QoS::ExactlyOnce, pkid, b"x"));
    }
    hoarder.send_raw(&burst).await;
    let answers = hoarder
        .packets_until_closed(&format!("{} QoS 2 publishes without PUBREL", limit + 1))
        .await;
    let expected: Vec<Received> = (1..=u16::try_from(limit).expect("below 65535"))
        .map(Received::PubRec)
        .collect();
    assert_eq!(
        answers, expected,
        "a PUBREC for each publish within the limit"
    );
    disconnected(&mut monitor, "c12-hoarder", "protocol_error", &at).await;
}

/// The bytes of one PUBLISH.
fn publish_bytes(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let packet = Packet::Publish(activity_core::codec::Publish {
        properties: activity_core::codec::Properties::EMPTY,
        dup: false,
        qos,
        retain: false,
        topic,
        pkid: (qos != QoS::AtMostOnce).then_some(pkid),
        payload,
    });
    let mut out = vec![0u8; packet.encoded_len().expect("encodes")];
    packet.encode(&mut out).expect("sized by encoded_len");
    out
}

// ---------------------------------------------------------------------------------------------
// 13. topic filters per SUBSCRIBE
// ---------------------------------------------------------------------------------------------

async fn filters_per_subscribe_limit(server: &mut Server) {
    let addr = server.addr();
    let limit = server.kind().max_filters_per_packet();
    let mut monitor = server.monitor().await;
    let mut greedy = Wire::connected(addr, "c13-greedy").await;
    let at = connected(&mut monitor, &greedy, 60).await;
    let names: Vec<String> = (0..=limit).map(|i| format!("{i}")).collect();
    let filters: Vec<(&str, QoS)> = names
        .iter()
        .map(|n| (n.as_str(), QoS::AtMostOnce))
        .collect();

    // `limit` filters in one SUBSCRIBE: one return code each.
    let codes = greedy.subscribe(1, &filters[..limit]).await;
    assert_eq!(codes.len(), limit, "one SUBACK return code per filter");

    // One more: the connection closes as `protocol_error` (the engine's rule).
    greedy
        .send(Packet::Subscribe(activity_core::codec::Subscribe {
            properties: activity_core::codec::Properties::EMPTY,
            pkid: 2,
            filters: activity_core::codec::SubscribeFilters::from_slice(&filters),
        }))
        .await;
    greedy
        .expect_closed(&format!("a SUBSCRIBE of {} filters", limit + 1))
        .await;
    disconnected(&mut monitor, "c13-greedy", "protocol_error", &at).await;
}

/// What a server may decline of MQTT 5 (5.0 section 3.2.2.3), over raw MQTT 5 bytes: the
/// broker and the tap serve subscription identifiers, shared subscriptions and topic aliases.
/// The gateway leaves them out for its flash (and reason strings); its CONNACK says so, and a
/// client that uses one anyway gets the answer of the specification.
async fn mqtt5_optional_features(server: &mut Server) {
    use activity_core::codec::{Context, Properties, Property};
    use tests::raw5::{Raw5, connect5, packet5, subscribe5, subscribe5_with};

    let addr = server.addr();
    let mut monitor = server.monitor().await;
    let declines = server.is(Kind::Gateway);
    if declines {
        skipped(
            server,
            "subscription identifiers, shared subscriptions and topic aliases",
            "adapter-embassy leaves them out of MQTT 5 for its flash, and reason strings too \
             (docs/gateway.md); the case checks that its CONNACK says so and how it answers",
        );
    }
    let (mut client, connack) =
        Raw5::connect(addr, &connect5("c14-five", true, 60, &[], None)).await;
    assert_eq!(connack.reason(), 0, "CONNACK accepts");
    let properties: Vec<Property<'_>> = Properties::parse(connack.properties(), Context::ConnAck)
        .expect("CONNACK properties")
        .iter()
        .collect();
    // Absent means available (5.0 sections 3.2.2.3.12 and 3.2.2.3.13).
    for (property, name) in [
        (
            Property::SubscriptionIdentifierAvailable(0),
            "Subscription Identifiers Available 0",
        ),
        (
            Property::SharedSubscriptionAvailable(0),
            "Shared Subscription Available 0",
        ),
    ] {
        assert_eq!(properties.contains(&property), declines, "{name}");
    }
    // Absent means no topic alias may be sent (section 3.2.2.3.8).
    let aliases = properties.iter().find_map(|p| match p {
        Property::TopicAliasMaximum(n) => Some(*n),
        _ => None,
    });
    assert_eq!(
        aliases.is_none(),
        declines,
        "Topic Alias Maximum: {aliases:?}"
    );

    // A shared filter: granted, or SUBACK 0x9E.
    client
        .send(&subscribe5(1, "$share/c14/c14/shared", 1))
        .await;
    let suback = client.expect(0x90).await;
    let code = if declines { 0x9E } else { 1 };
    assert_eq!(suback.body, [0, 1, 0, code], "SUBACK of a shared filter");
    if declines {
        server.expect_counter(Counter::SubscriptionsDenied, 1).await;
    }

    // A topic alias on a publish (QoS 0, alias 1 on `c14/t`): used, or DISCONNECT 0x94.
    let mut body = vec![0, 5];
    body.extend_from_slice(b"c14/t");
    body.extend_from_slice(&[3, 0x23, 0, 1]);
    body.extend_from_slice(b"x");
    let aliased = packet5(0x30, &body);
    if !declines {
        client.send(&aliased).await;
    }

    // A subscription identifier: granted, or DISCONNECT 0xA1 without a reason string.
    client.send(&subscribe5_with(2, 7, "c14/id", 1)).await;
    if !declines {
        assert_eq!(client.expect(0x90).await.body, [0, 2, 0, 1]);
        client.send(&packet5(0xE0, &[0])).await;
        return;
    }
    let closing = client.until_closed().await;
    assert_eq!(closing.len(), 1, "one DISCONNECT: {closing:02x?}");
    assert_eq!(
        (closing[0].first, closing[0].body.as_slice()),
        (0xE0, &[0xA1][..])
    );
    let ev = monitor.next_event("disconnected", "c14-five").await;
    assert_eq!(
        (&ev.json["reason"], &ev.json["reason_code"]),
        (&json!("protocol_error"), &json!(0xA1))
    );
    let (mut client, _) = Raw5::connect(addr, &connect5("c14-alias", true, 60, &[], None)).await;
    client.send(&aliased).await;
    let closing = client.until_closed().await;
    assert_eq!(closing.len(), 1, "one DISCONNECT: {closing:02x?}");
    assert_eq!(
        (closing[0].first, closing[0].body.as_slice()),
        (0xE0, &[0x94][..])
    );
    server.expect_counter(Counter::ProtocolErrors, 2).await;
}

// ---------------------------------------------------------------------------------------------
// One test per (case, server)
// ---------------------------------------------------------------------------------------------

/// For each case, a module named after it with the tests `broker`, `tap` and `gateway`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[test]
            fn broker() {
                run(Kind::Broker, stringify!($case), super::$case);
            }

            #[test]
            fn tap() {
                run(Kind::Tap, stringify!($case), super::$case);
            }

            #[test]
            fn gateway() {
                run(Kind::Gateway, stringify!($case), super::$case);
            }
        }
    )*};
}

conformance!(
    connect_and_disconnect,
    subscribe_and_unsubscribe,
    publish_qos_0_1_2,
    msgack,
    refusals,
    system_topics,
    keepalive_and_will,
    takeover,
    limits_and_bad_bytes,
    empty_client_id,
    will_only_when_vanished,
    qos2_awaiting_pubrel_limit,
    filters_per_subscribe_limit,
    mqtt5_optional_features,
);
