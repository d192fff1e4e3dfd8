//! The engine speaking MQTT 5.0 and MQTT 3.1: what their CONNECT, acknowledgements and
//! DISCONNECTs change, byte for byte.

use super::*;

fn v5(client_id: &'static str) -> Connect<'static> {
    Connect {
        protocol_level: 5,
        ..connect(client_id)
    }
}

fn wire(packet: Packet<'_>, version: Version) -> Vec<u8> {
    let mut out = vec![0u8; packet.encoded_len_with(version).expect("encodable")];
    packet.encode_with(&mut out, version).expect("encodes");
    out
}

/// The reason string the engine sends with `code`.
fn text(code: u8) -> &'static str {
    let code = [
        ReasonCode::MalformedPacket,
        ReasonCode::ProtocolError,
        ReasonCode::UnsupportedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid,
        ReasonCode::BadUserNameOrPassword,
        ReasonCode::NotAuthorized,
        ReasonCode::ServerUnavailable,
        ReasonCode::ServerBusy,
        ReasonCode::ServerShuttingDown,
        ReasonCode::BadAuthenticationMethod,
        ReasonCode::KeepAliveTimeout,
        ReasonCode::SessionTakenOver,
        ReasonCode::ReceiveMaximumExceeded,
        ReasonCode::TopicAliasInvalid,
        ReasonCode::PacketTooLarge,
        ReasonCode::QuotaExceeded,
    ]
    .into_iter()
    .find(|c| c.as_u8() == code)
    .expect("a code the engine sends");
    super::super::problem::reason_string(code).expect("a text")
}

/// A length that fits one byte (the test packets are short).
fn byte(n: usize) -> u8 {
    u8::try_from(n).expect("a short packet")
}

/// A server's MQTT 5 DISCONNECT with `code` and its reason string.
pub(super) fn disconnect5(code: u8) -> Vec<u8> {
    let text = text(code);
    let mut bytes = vec![
        0xE0,
        byte(text.len() + 5),
        code,
        byte(text.len() + 3),
        0x1F,
        0,
    ];
    bytes.push(byte(text.len()));
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// A refusing MQTT 5 CONNACK with `code` and its reason string.
fn refusal5(code: u8) -> Vec<u8> {
    let text = text(code);
    let mut bytes = vec![
        0x20,
        byte(text.len() + 6),
        0,
        code,
        byte(text.len() + 3),
        0x1F,
        0,
    ];
    bytes.push(byte(text.len()));
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn decode5(bytes: &[u8]) -> Packet<'_> {
    match codec::decode_with(bytes, 1 << 20, Version::V5) {
        Ok(Some((packet, len))) if len == bytes.len() => packet,
        other => panic!("not one MQTT 5 packet: {other:?} from {bytes:02x?}"),
    }
}

/// A v5 client, connected, with its CONNACK checked to accept.
fn connected5(peer: Peer<'_>, client_id: &'static str) -> Client {
    let mut client = Client::new(peer);
    assert_eq!(client.send(&encoded(v5(client_id))), NOTHING);
    let connack = client.answer(ConnectAnswer::accept(false));
    let Packet::ConnAck(ack) = decode5(&connack) else {
        panic!("not a CONNACK")
    };
    assert_eq!(ack.code, 0);
    assert_eq!(client.conn.version(), Version::V5);
    client.out.routes.clear();
    client.out.events.clear();
    client
}

#[test]
fn a_v5_connack_carries_the_assigned_id_and_the_server_limits() {
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v5("")));
    let connack = client.answer(ConnectAnswer::accept(false));
    let Packet::ConnAck(ack) = decode5(&connack) else {
        panic!()
    };
    assert_eq!((ack.session_present, ack.code), (false, 0));
    let properties: Vec<_> = ack.properties.iter().collect();
    assert_eq!(
        properties,
        [
            Property::MaximumPacketSize(1024 * 1024),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(1),
            Property::AssignedClientIdentifier("auto-000000000000002a"),
            // The limit of QoS 2 publishes awaiting PUBREL (Limits::max_inbound_qos2).
            Property::ReceiveMaximum(1024),
        ]
    );
    assert_eq!(client.conn.client_id(), "auto-000000000000002a");
    // The connected event says the version.
    assert_eq!(client.out.events[0].1["proto_ver"], 5);
}

#[test]
fn v5_refusals_carry_v5_reason_codes() {
    for (connect, answer, code) in [
        (v5("broker"), None, 0x85),
        (v5("ok"), Some(ReasonCode::BadUserNameOrPassword), 0x86),
        (v5("ok"), Some(ReasonCode::ServerBusy), 0x89),
        // Enhanced authentication (method "SCRAM-SHA-1"): not offered.
        (
            Connect {
                properties: Properties::parse(
                    &[
                        0x15, 0, 11, b'S', b'C', b'R', b'A', b'M', b'-', b'S', b'H', b'A', b'-',
                        b'1',
                    ],
                    Context::Connect,
                )
                .unwrap(),
                ..v5("scram")
            },
            None,
            0x8C,
        ),
    ] {
        let mut client = Client::new(REMOTE);
        let mut bytes = client.send(&encoded(connect));
        if let Some(reason) = answer {
            bytes = client.answer(ConnectAnswer::Refuse(reason));
        }
        assert_eq!(bytes, refusal5(code), "{connect:?}");
        assert!(client.conn.is_closed());
    }
}

#[test]
fn v5_session_expiry_comes_from_the_property() {
    // Session Expiry Interval 300 s.
    let properties = Properties::parse(&[0x11, 0, 0, 0x01, 0x2C], Context::Connect).unwrap();
    let mut client = Client::new(REMOTE);
    client.send(&encoded(Connect {
        properties,
        ..v5("keeper")
    }));
    assert_eq!(client.out.routes.len(), 1);
    client.answer(ConnectAnswer::accept(false));
    client.close(CloseCause::TransportClosed);
    assert_eq!(
        client.out.routes.last(),
        Some(&R::End(300, CloseCause::TransportClosed))
    );
    // Without the property the session ends with the connection, whatever Clean Start says.
    let mut client = connected5(REMOTE, "brief");
    client.close(CloseCause::TransportClosed);
    assert_eq!(
        client.out.routes.last(),
        Some(&R::End(0, CloseCause::TransportClosed))
    );
}

#[test]
fn v5_suback_and_unsuback_give_a_reason_per_filter() {
    let mut client = connected5(REMOTE, "sub");
    let filters = [
        ("a/b", QoS::AtLeastOnce),
        ("SYSTEM/#", QoS::AtMostOnce),
        ("$SYS/x", QoS::AtMostOnce),
    ];
    let bytes = client.send(&wire(
        Packet::Subscribe(Subscribe {
            pkid: 5,
            filters: codec::SubscribeFilters::from_slice(&filters),
            properties: Properties::EMPTY,
        }),
        Version::V5,
    ));
    // Granted QoS 1; not authorized (0x87) for the events from a remote client and for `$`.
    assert_eq!(bytes, [0x90, 6, 0, 5, 0, 0x01, 0x87, 0x87]);
    let unsubscribe = ["a/b", "never/held"];
    let bytes = client.send(&wire(
        Packet::Unsubscribe(Unsubscribe {
            pkid: 6,
            filters: codec::UnsubscribeFilters::from_slice(&unsubscribe),
            properties: Properties::EMPTY,
        }),
        Version::V5,
    ));
    assert_eq!(bytes, [0xB0, 5, 0, 6, 0, 0x00, 0x11]);
    // The two refusals are reported, in filter order (before the events of the granted).
    assert_eq!(
        client.out.kinds(),
        [
            EventKind::Denied,
            EventKind::Denied,
            EventKind::Subscribed,
            EventKind::Unsubscribed
        ]
    );
    assert_eq!(client.out.events[1].1["topic"], "$SYS/x");
}

#[test]
fn the_server_says_why_it_closes_a_v5_connection() {
    // Keep-alive: 0x8D.
    let mut client = connected5(REMOTE, "sleepy");
    let deadline = client.conn.poll_timeout().expect("keep-alive");
    let mut tx = [0u8; 64];
    let n = client
        .conn
        .handle_timeout(deadline, &mut tx, &mut client.out);
    assert_eq!(&tx[..n], disconnect5(0x8D));
    // Takeover (the driver's close): 0x8E.
    let mut client = connected5(REMOTE, "old");
    let n = client
        .conn
        .handle_close(client.now, CloseCause::TakenOver, &mut tx, &mut client.out);
    assert_eq!(&tx[..n], disconnect5(0x8E));
    // Shutdown: the end is reported at once, the DISCONNECT 0x8B comes at the close.
    let mut client = connected5(REMOTE, "stayer");
    let n = client
        .conn
        .handle_shutdown(client.now, &mut tx, &mut client.out);
    assert_eq!(n, 0);
    let n = client.conn.handle_close(
        client.now,
        CloseCause::ServerShutdown,
        &mut tx,
        &mut client.out,
    );
    assert_eq!(&tx[..n], disconnect5(0x8B));
    // A malformed packet (a property PUBLISH may not carry): 0x81; a protocol error (a
    // duplicate property): 0x82.
    let mut client = connected5(REMOTE, "bad");
    assert_eq!(
        client.send(&[0x30, 9, 0, 1, b't', 5, 0x11, 0, 0, 0, 1]),
        disconnect5(0x81)
    );
    assert_eq!(client.out.events[0].1["reason"], "protocol_error");
    let mut client = connected5(REMOTE, "worse");
    assert_eq!(
        client.send(&[0x30, 10, 0, 1, b't', 6, 0x23, 0, 1, 0x23, 0, 2]),
        disconnect5(0x82)
    );
    // AUTH (the engine names no authentication method): 0x82, well-formed (reason 0x18,
    // continue) or not (reason 0x99, none of AUTH's), its body not decoded.
    for auth in [&[0xF0, 1, 0x18][..], &[0xF0, 1, 0x99]] {
        let mut client = connected5(REMOTE, "auth");
        assert_eq!(client.send(auth), disconnect5(0x82), "{auth:02x?}");
        assert_eq!(client.out.events[0].1["reason"], "protocol_error");
    }
    // A client's own DISCONNECT gets nothing back.
    let mut client = connected5(REMOTE, "polite");
    assert_eq!(client.send(&[0xE0, 0]), NOTHING);
    assert!(client.conn.is_closed());
}

#[test]
fn disconnect_with_will_publishes_it() {
    let will = Connect {
        will: Some(LastWill {
            topic: "status/w",
            message: b"gone",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::EMPTY,
        }),
        ..v5("w")
    };
    let mut client = Client::new(REMOTE);
    client.send(&encoded(will));
    client.answer(ConnectAnswer::accept(false));
    client.out.routes.clear();
    client.out.events.clear();
    assert_eq!(client.send(&[0xE0, 1, 0x04]), NOTHING);
    assert_eq!(
        client.out.routes[0],
        R::Publish("status/w".into(), b"gone".to_vec(), QoS::AtMostOnce, true)
    );
    let disconnected = client
        .out
        .events
        .iter()
        .find(|(kind, _)| *kind == EventKind::Disconnected)
        .expect("disconnected");
    assert_eq!(disconnected.1["reason"], "disconnect_with_will");
}

#[test]
fn a_session_expiry_of_0_may_not_grow_at_disconnect() {
    let mut client = connected5(REMOTE, "grow");
    // DISCONNECT, reason 0, Session Expiry Interval 60.
    let bytes = client.send(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 60]);
    assert_eq!(bytes, disconnect5(0x82));
    assert_eq!(client.out.events[0].1["reason"], "protocol_error");
}

#[test]
fn v5_acknowledgements() {
    let mut client = connected5(REMOTE, "acker");
    // PUBREL for an id never received: PUBCOMP 0x92.
    assert_eq!(client.send(&[0x62, 2, 0, 9]), [0x70, 3, 0, 9, 0x92]);
    // A QoS 2 delivery refused with PUBREC 0x80 ends its flow: no PUBREL, the router is told
    // the delivery is done.
    let delivery = Delivery {
        pkid: Some(40),
        ..Delivery::new("t", b"x", QoS::ExactlyOnce)
    };
    let bytes = client.deliver(delivery);
    assert_eq!(decode5(&bytes).packet_type(), codec::PacketType::Publish);
    assert_eq!(client.send(&[0x50, 3, 0, 40, 0x80]), NOTHING);
    assert_eq!(
        client.out.routes,
        [R::Acked(40, Ack::PubAck), R::Acked(40, Ack::PubComp)]
    );
    // A v5 delivery has an (empty) property block.
    let bytes = client.deliver(Delivery::new("t", b"x", QoS::AtMostOnce));
    assert_eq!(bytes, [0x30, 5, 0, 1, b't', 0, b'x']);
}

#[test]
fn mqtt_3_1_connects_and_never_has_a_session_present() {
    let v31 = Connect {
        protocol_name: codec::ProtocolName::MqIsdp,
        protocol_level: 3,
        clean_session: false,
        ..connect("legacy")
    };
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v31));
    // The router kept a session, but 3.1's CONNACK has no flag for it.
    assert_eq!(client.answer(ConnectAnswer::accept(true)), [0x20, 2, 0, 0]);
    assert_eq!(client.conn.version(), Version::V3_1);
    assert_eq!(client.out.events[0].1["proto_ver"], 3);
    // The rest is 3.1.1's wire format.
    assert_eq!(client.send(&[0xC0, 0]), [0xD0, 0]);
    // An empty client id is refused in MQTT 3.1, whatever the clean-session flag says.
    let mut client = Client::new(REMOTE);
    let bytes = client.send(&encoded(Connect {
        client_id: "",
        clean_session: true,
        ..v31
    }));
    assert_eq!(bytes, [0x20, 2, 0, 0x02]);
}

#[test]
fn publish_properties_are_routed_and_delivered_to_v5_clients_only() {
    let mut client = connected5(REMOTE, "props");
    // PUBLISH QoS 0 "t" with a user property k=v.
    let props = [0x26, 0, 1, b'k', 0, 1, b'v'];
    let mut publish = vec![0x30, 0, 0, 1, b't', 7];
    publish.extend_from_slice(&props);
    publish.extend_from_slice(b"x");
    publish[1] = u8::try_from(publish.len() - 2).unwrap();
    assert_eq!(client.send(&publish), NOTHING);
    assert_eq!(
        client.out.routes,
        [R::Publish(
            "t".into(),
            b"x".to_vec(),
            QoS::AtMostOnce,
            false
        )]
    );
    // A delivery with properties: an MQTT 5 client gets them, an MQTT 3.1.1 client does not.
    let properties = Properties::parse(&props, Context::Publish).unwrap();
    let delivery = Delivery {
        properties,
        ..Delivery::new("t", b"x", QoS::AtMostOnce)
    };
    let bytes = client.deliver(delivery);
    let Packet::Publish(got) = decode5(&bytes) else {
        panic!()
    };
    assert_eq!(got.properties.user_property("k"), Some("v"));
    let mut old = Client::connected(REMOTE, &connect("old"));
    assert_eq!(
        old.deliver(delivery),
        publish_bytes_v3("t", b"x"),
        "MQTT 3.1.1 has no properties"
    );
}

fn publish_bytes_v3(topic: &'static str, payload: &'static [u8]) -> Vec<u8> {
    publish(topic, QoS::AtMostOnce, None, payload)
}

#[test]
fn topic_aliases_and_subscription_identifiers_from_a_client_are_refused() {
    // The server offers no topic alias (no Topic Alias Maximum in its CONNACK): 0x94.
    let mut client = connected5(REMOTE, "alias");
    assert_eq!(
        client.send(&[0x30, 8, 0, 1, b't', 3, 0x23, 0, 1, b'x']),
        disconnect5(0x94)
    );
    // A client never sends a subscription identifier: 0x82.
    let mut client = connected5(REMOTE, "subid");
    assert_eq!(
        client.send(&[0x30, 7, 0, 1, b't', 2, 0x0B, 5, b'x']),
        disconnect5(0x82)
    );
}
