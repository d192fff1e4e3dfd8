//! The MQTT 5 fields of the activity events, as the engine fills them: `connected` with the
//! session expiry and user properties, `disconnected` with the reason code, `subscribed` with
//! the options and the share group, `msgack` from user properties and negative `msgack`.

use super::*;

/// An MQTT 5 CONNECT with this property block.
fn v5_with(client_id: &'static str, properties: Properties<'static>) -> Connect<'static> {
    Connect {
        protocol_level: 5,
        properties,
        ..connect(client_id)
    }
}

/// A v5 client, connected; its routes and events cleared.
fn connected5(client_id: &'static str) -> Client {
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v5_with(client_id, Properties::EMPTY)));
    client.answer(ConnectAnswer::accept(false));
    assert!(client.conn.is_connected());
    client.out.routes.clear();
    client.out.events.clear();
    client
}

/// Session expiry 300 s and two user properties (`site` = `lab`, `fw` = `1.2`).
const CONNECT_PROPERTIES: &[u8] = &[
    0x11, 0, 0, 0x01, 0x2C, // session expiry interval 300
    0x26, 0, 4, b's', b'i', b't', b'e', 0, 3, b'l', b'a', b'b', // user property
    0x26, 0, 2, b'f', b'w', 0, 3, b'1', b'.', b'2', // user property
];

#[test]
fn a_v5_connected_event_carries_session_expiry_and_user_properties() {
    let properties = Properties::parse(CONNECT_PROPERTIES, Context::Connect).unwrap();
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v5_with("dev", properties)));
    client.answer(ConnectAnswer::accept(false));
    assert_eq!(
        client.out.events,
        [(
            EventKind::Connected,
            json!({"client_id":"dev","proto_ver":5,"keepalive":30,"clean_session":true,
                   "peer":"192.0.2.7:50312","transport":"tcp","session_expiry":300,
                   "user_properties":[["site","lab"],["fw","1.2"]]})
        )]
    );
    // Without the property the session expiry is 0, and said.
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v5_with("bare", Properties::EMPTY)));
    client.answer(ConnectAnswer::accept(false));
    assert_eq!(client.out.events[0].1["session_expiry"], 0);
    assert!(client.out.events[0].1.get("user_properties").is_none());
    // MQTT 3.1.1 and 3.1: no MQTT 5 field.
    for (level, name) in [
        (4, crate::codec::ProtocolName::Mqtt),
        (3, crate::codec::ProtocolName::MqIsdp),
    ] {
        let mut client = Client::new(REMOTE);
        client.send(&encoded(Connect {
            protocol_level: level,
            protocol_name: name,
            ..connect("old")
        }));
        client.answer(ConnectAnswer::accept(false));
        assert_eq!(
            client.out.events[0].1,
            json!({"client_id":"old","proto_ver":level,"keepalive":30,"clean_session":true,
                   "peer":"192.0.2.7:50312","transport":"tcp"})
        );
    }
}

#[test]
fn too_many_user_properties_are_cut_counted_and_said() {
    let mut raw = Vec::new();
    for i in 0..12u8 {
        raw.extend_from_slice(&[0x26, 0, 2, b'k', b'a' + i, 0, 1, b'v']);
    }
    let raw: &'static [u8] = raw.leak();
    let properties = Properties::parse(raw, Context::Connect).unwrap();
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v5_with("chatty", properties)));
    client.answer(ConnectAnswer::accept(false));
    let event = &client.out.events[0].1;
    assert_eq!(
        event["user_properties"].as_array().map(Vec::len),
        Some(crate::event::USER_PROPERTIES_MAX_COUNT)
    );
    assert_eq!(event["user_properties_truncated"], true);
    assert_eq!(client.conn.tracker().stats().user_properties_truncated, 1);
}

#[test]
fn disconnected_events_carry_the_reason_code() {
    // The client's own DISCONNECT: 0x00, 0x04 (with will), an error (0x83).
    for (bytes, reason, code) in [
        (vec![0xE0, 0], "normal", 0x00),
        (vec![0xE0, 1, 0x04], "disconnect_with_will", 0x04),
        (vec![0xE0, 2, 0x83, 0], "client_error", 0x83),
    ] {
        let mut client = connected5("leaver");
        client.send(&bytes);
        assert!(client.conn.is_closed());
        assert_eq!(
            client.out.events.last().map(|e| e.1.clone()),
            Some(
                json!({"client_id":"leaver","reason":reason,"reason_code":code,
                        "connected_at":T0})
            ),
            "{bytes:02x?}"
        );
    }
    // The server's reasons, for MQTT 5 (which gets a DISCONNECT) and 3.1.1 alike.
    for v5 in [true, false] {
        let mut client = if v5 {
            connected5("sleepy")
        } else {
            Client::connected(REMOTE, &connect("sleepy"))
        };
        let deadline = client.conn.poll_timeout().unwrap();
        let mut tx = [0u8; 64];
        let written = client
            .conn
            .handle_timeout(deadline, &mut tx, &mut client.out);
        assert_eq!(written > 0, v5, "only MQTT 5 gets a DISCONNECT");
        let event = &client.out.events.last().unwrap().1;
        assert_eq!(event["reason"], "keepalive_timeout");
        assert_eq!(event["reason_code"], 0x8D);
        // Takeover and shutdown.
        for (cause, reason, code) in [
            (CloseCause::TakenOver, "takenover", 0x8E),
            (CloseCause::ServerShutdown, "server_shutdown", 0x8B),
        ] {
            let mut client = if v5 {
                connected5("twin")
            } else {
                Client::connected(REMOTE, &connect("twin"))
            };
            client.close(cause);
            let event = &client.out.events.last().unwrap().1;
            assert_eq!(
                (&event["reason"], &event["reason_code"]),
                (&json!(reason), &json!(code))
            );
        }
    }
    // The transport closed: nobody gave a code.
    let mut client = connected5("gone");
    client.close(CloseCause::TransportClosed);
    assert_eq!(
        client.out.events[0].1,
        json!({"client_id":"gone","reason":"tcp_closed","connected_at":T0})
    );
}

#[test]
fn a_client_error_disconnect_publishes_the_will() {
    let will = LastWill {
        topic: "wills/dev",
        message: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::EMPTY,
    };
    let mut client = Client::new(REMOTE);
    client.send(&encoded(Connect {
        will: Some(will),
        ..v5_with("dev", Properties::EMPTY)
    }));
    client.answer(ConnectAnswer::accept(false));
    client.out.routes.clear();
    client.send(&[0xE0, 1, 0x80]);
    assert!(matches!(&client.out.routes[0], R::Publish(topic, ..) if topic == "wills/dev"));
}

#[test]
fn subscribed_events_carry_the_v5_options_and_the_share_group() {
    let mut client = connected5("worker");
    // SUBSCRIBE 9, no properties: `a/+` QoS 1 with No Local, Retain As Published and Retain
    // Handling 2 (bits 10, 1, 1, 01); `$share/g1/jobs/#` QoS 2, Retain Handling 1 (bits 01,
    // 0, 0, 10).
    let mut bytes = vec![0x82, 0, 0, 9, 0];
    bytes.extend_from_slice(&[0, 3, b'a', b'/', b'+', 0b0010_1101]);
    bytes.extend_from_slice(&[0, 16]);
    bytes.extend_from_slice(b"$share/g1/jobs/#");
    bytes.push(0b0001_0010);
    bytes[1] = u8::try_from(bytes.len() - 2).unwrap();
    client.send(&bytes);
    assert_eq!(
        client.out.events,
        [
            (
                EventKind::Subscribed,
                json!({"client_id":"worker","topic":"a/+","qos":1,"no_local":true,
                       "retain_as_published":true,"retain_handling":2})
            ),
            (
                EventKind::Subscribed,
                json!({"client_id":"worker","topic":"$share/g1/jobs/#","qos":2,
                       "no_local":false,"retain_as_published":false,"retain_handling":1,
                       "share_group":"g1"})
            ),
        ]
    );
    // MQTT 3.1.1: QoS only (a shared filter still names its group).
    let mut client = Client::connected(REMOTE, &connect("old"));
    client.send(&subscribe(
        3,
        &[("a/+", QoS::AtLeastOnce), ("$share/g2/b", QoS::AtMostOnce)],
    ));
    assert_eq!(
        client.out.events,
        [
            (
                EventKind::Subscribed,
                json!({"client_id":"old","topic":"a/+","qos":1})
            ),
            (
                EventKind::Subscribed,
                json!({"client_id":"old","topic":"$share/g2/b","qos":0,"share_group":"g2"})
            ),
        ]
    );
}

/// User properties `product_id` = `p7` and `message_id` = `m9`, in a PUBLISH block.
const ID_PROPERTIES: &[u8] = &[
    0x26, 0, 10, b'p', b'r', b'o', b'd', b'u', b'c', b't', b'_', b'i', b'd', 0, 2, b'p', b'7',
    0x26, 0, 10, b'm', b'e', b's', b's', b'a', b'g', b'e', b'_', b'i', b'd', 0, 2, b'm', b'9',
];

#[test]
fn user_properties_correlate_a_delivery_like_an_envelope() {
    let properties = Properties::parse(ID_PROPERTIES, Context::Publish).unwrap();
    let delivery = Delivery {
        publisher: Some("ctl"),
        properties,
        ..Delivery::new("cmd/dev", b"plain text, no envelope", QoS::AtLeastOnce)
    };
    // An MQTT 5 subscriber: the ids and the PUBACK's reason code.
    let mut client = connected5("dev");
    client.deliver(delivery);
    client.send(&[0x40, 2, 0, 1]);
    assert_eq!(
        client.out.events,
        [(
            EventKind::MsgAck,
            json!({"pub_client_id":"ctl","ack_client_id":"dev","product_id":"p7",
                   "message_id":"m9","topic":"cmd/dev","qos":1,"reason_code":0})
        )]
    );
    // An MQTT 3.1.1 subscriber does not see the properties, but the engine does.
    let mut client = Client::connected(REMOTE, &connect("old"));
    let bytes = client.deliver(delivery);
    assert_eq!(
        bytes,
        publish(
            "cmd/dev",
            QoS::AtLeastOnce,
            Some(1),
            b"plain text, no envelope"
        )
    );
    client.send(&[0x40, 2, 0, 1]);
    assert_eq!(
        client.out.events,
        [(
            EventKind::MsgAck,
            json!({"pub_client_id":"ctl","ack_client_id":"old","product_id":"p7",
                   "message_id":"m9","topic":"cmd/dev","qos":1})
        )]
    );
    // The user properties win over an envelope payload.
    let mut client = connected5("both");
    client.deliver(Delivery {
        payload: ENVELOPE,
        ..delivery
    });
    client.send(&[0x40, 2, 0, 1]);
    assert_eq!(client.out.events[0].1["product_id"], "p7");
}

#[test]
fn a_refused_delivery_gives_a_negative_msgack() {
    let mut client = connected5("picky");
    let delivery = Delivery {
        publisher: Some("ctl"),
        ..Delivery::new("cmd/picky", ENVELOPE, QoS::ExactlyOnce)
    };
    // QoS 1: PUBACK 0x80 (unspecified error).
    client.deliver(Delivery {
        subscription_qos: QoS::AtLeastOnce,
        ..delivery
    });
    client.send(&[0x40, 3, 0, 1, 0x80]);
    // QoS 2: PUBREC 0x87 (not authorized) ends the flow: no PUBREL.
    client.deliver(delivery);
    assert_eq!(client.send(&[0x50, 3, 0, 2, 0x87]), NOTHING);
    assert_eq!(
        client.out.events,
        [
            (
                EventKind::MsgAck,
                json!({"pub_client_id":"ctl","ack_client_id":"picky","product_id":"p1",
                       "message_id":"m42","topic":"cmd/picky","qos":1,"reason_code":0x80})
            ),
            (
                EventKind::MsgAck,
                json!({"pub_client_id":"ctl","ack_client_id":"picky","product_id":"p1",
                       "message_id":"m42","topic":"cmd/picky","qos":2,"reason_code":0x87})
            ),
        ]
    );
    assert_eq!(
        client.out.routes,
        [
            R::Acked(1, Ack::PubAck),
            R::Acked(2, Ack::PubAck),
            R::Acked(2, Ack::PubComp)
        ]
    );
}
