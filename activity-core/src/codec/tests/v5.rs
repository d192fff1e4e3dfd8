//! MQTT 5.0 and MQTT 3.1: the packets with properties and reason codes, the AUTH packet, the
//! `MQIsdp` CONNECT, and what each version refuses of the others.

use super::*;

fn decode_v(bytes: &[u8], v: Version) -> Result<Packet<'_>, DecodeError> {
    match decode_with(bytes, 1 << 20, v)? {
        Some((packet, len)) if len == bytes.len() => Ok(packet),
        other => panic!("not one whole packet: {other:?}"),
    }
}

fn decode5(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    decode_v(bytes, Version::V5)
}

fn encode5(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = vec![0u8; packet.encoded_len_with(Version::V5).expect("encodable")];
    let n = packet.encode_with(&mut out, Version::V5).expect("encodes");
    assert_eq!(n, out.len());
    out
}

/// `packet` encodes for MQTT 5 as `wire`, and `wire` decodes back to `packet`.
fn check5(packet: Packet<'_>, wire: &[u8]) {
    assert_eq!(encode5(&packet), wire, "{packet:?}");
    assert_eq!(decode5(wire), Ok(packet));
}

fn props(raw: &[u8], context: Context) -> Properties<'_> {
    Properties::parse(raw, context).expect("valid properties")
}

#[test]
fn the_connect_of_section_3_1_2_12() {
    // MQTT 5.0 section 3.1.2.12, figure 3-6: protocol name, level 5, flags 0xCE (user name,
    // password, will QoS 1, will, clean start), keep alive 10, properties: Session Expiry
    // Interval 10. The payload follows section 3.1.3.
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 5, 0xCE, 0, 10, 5, 0x11, 0, 0, 0, 10,
    ];
    body.extend(field(b"dev-1"));
    body.extend([5, 0x18, 0, 0, 0, 30]); // will properties: Will Delay Interval 30
    body.extend(field(b"status/dev-1"));
    body.extend(field(b"offline"));
    body.extend(field(b"alice"));
    body.extend(field(b"secret"));
    let wire = frame(0x10, &body);
    let Packet::Connect(connect) = decode5(&wire).expect("valid") else {
        panic!("not a CONNECT");
    };
    assert_eq!(connect.version(), Some(Version::V5));
    assert_eq!(
        (connect.client_id, connect.keep_alive, connect.clean_session),
        ("dev-1", 10, true)
    );
    assert_eq!(connect.properties.session_expiry_interval(), Some(10));
    let will = connect.will.expect("a will");
    assert_eq!(
        (will.topic, will.message, will.qos, will.retain),
        ("status/dev-1", &b"offline"[..], QoS::AtLeastOnce, false)
    );
    assert_eq!(will.properties.will_delay_interval(), Some(30));
    assert_eq!(
        (connect.username, connect.password),
        (Some("alice"), Some(&b"secret"[..]))
    );
    // A CONNECT encodes by its own level, whatever the version asked for.
    assert_eq!(encode_vec(&Packet::Connect(connect)), Ok(wire.clone()));
    assert_eq!(encode5(&Packet::Connect(connect)), wire);
    // The same bytes decode the same for a connection of any version (the CONNECT says).
    assert_eq!(
        decode_v(&wire, Version::V3_1_1),
        Ok(Packet::Connect(connect))
    );
}

#[test]
fn mqtt_5_connect_rules() {
    // A password without a user name is allowed in MQTT 5 (5.0 section 3.1.2.9).
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x42, 0, 0, 0];
    body.extend(field(b"c"));
    body.extend(field(b"pw"));
    let wire = frame(0x10, &body);
    let Packet::Connect(connect) = decode5(&wire).expect("valid") else {
        panic!()
    };
    assert_eq!(
        (connect.username, connect.password),
        (None, Some(&b"pw"[..]))
    );
    // A CONNACK-only property in a CONNECT is malformed; a duplicate is a protocol error.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 3, 0x13, 0, 5];
    body.extend(field(b"c"));
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        DecodeError::PropertyNotAllowed(0x13)
    );
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 6, 0x21, 0, 5, 0x21, 0, 6,
    ];
    body.extend(field(b"c"));
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        DecodeError::DuplicateProperty(0x21)
    );
    // The properties' length runs past the packet.
    let body = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 9, 0x11, 0];
    assert_eq!(decode_err(&frame(0x10, &body)), DecodeError::Truncated);
}

#[test]
fn mqtt_3_1_connects_with_mqisdp_level_3() {
    // MQTT V3.1 Protocol Specification: protocol name `MQIsdp`, version 3; the rest as 3.1.1.
    let mut body = field(b"MQIsdp");
    body.extend_from_slice(&[3, 0x02, 0, 60]);
    body.extend(field(b"old-device"));
    let wire = frame(0x10, &body);
    let Packet::Connect(connect) = decode_all(&wire).expect("valid") else {
        panic!()
    };
    assert_eq!(connect.version(), Some(Version::V3_1));
    assert_eq!(
        (connect.client_id, connect.keep_alive, connect.clean_session),
        ("old-device", 60, true)
    );
    assert_eq!(encode_vec(&Packet::Connect(connect)), Ok(wire));
    // `MQIsdp` with another level decodes only its header, for CONNACK 0x01.
    body[8] = 4;
    let wire = frame(0x10, &body);
    let Packet::Connect(other) = decode_all(&wire).expect("header") else {
        panic!()
    };
    assert_eq!((other.protocol_level, other.client_id), (4, ""));
    assert_eq!(other.version(), None);
    assert_eq!(other.protocol_name, ProtocolName::MqIsdp);
}

#[test]
fn connack_with_properties_and_reason_codes() {
    let properties = props(
        &[0x21, 0, 20, 0x22, 0, 10, 0x12, 0, 1, b'x'],
        Context::ConnAck,
    );
    let connack = ConnAck {
        session_present: true,
        code: 0,
        properties,
    };
    let mut wire = vec![0x20, 13, 0x01, 0x00, 10];
    wire.extend_from_slice(properties.as_bytes());
    check5(Packet::ConnAck(connack), &wire);
    // MQTT 5 refusals: 0x87 not authorized; 0x05 is a 3.1.1 code only.
    check5(
        Packet::ConnAck(ConnAck::new(false, 0x87)),
        &[0x20, 3, 0, 0x87, 0],
    );
    assert_eq!(
        decode5(&[0x20, 3, 0, 0x05, 0]),
        Err(DecodeError::InvalidReasonCode(0x05))
    );
    assert_eq!(
        decode_all(&[0x20, 2, 0, 0x87]),
        Err(DecodeError::InvalidConnectReturnCode(0x87))
    );
    assert_eq!(
        Packet::ConnAck(ConnAck::new(false, 0x87)).encoded_len(),
        Err(EncodeError::NotInVersion)
    );
    // A 3.1.1 encoding of an MQTT 5 CONNACK leaves the properties out.
    assert_eq!(
        encode_vec(&Packet::ConnAck(connack)),
        Ok(vec![0x20, 2, 1, 0])
    );
}

#[test]
fn publish_with_properties_and_a_topic_alias() {
    let properties = props(&[0x23, 0, 1, 0x02, 0, 0, 0, 60], Context::Publish);
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b",
        pkid: Some(7),
        payload: b"hi",
        properties,
    };
    let mut wire = vec![0x32, 18, 0, 3, b'a', b'/', b'b', 0, 7, 8];
    wire.extend_from_slice(properties.as_bytes());
    wire.extend_from_slice(b"hi");
    check5(Packet::Publish(publish), &wire);
    // With the alias, the topic may be empty (5.0 section 3.3.2.3.4); without, it may not.
    check5(
        Packet::Publish(Publish {
            topic: "",
            ..publish
        }),
        &[
            0x32, 15, 0, 0, 0, 7, 8, 0x23, 0, 1, 0x02, 0, 0, 0, 60, b'h', b'i',
        ],
    );
    assert_eq!(
        decode5(&[0x30, 3, 0, 0, 0]),
        Err(DecodeError::InvalidTopic(TopicError::Empty))
    );
    // Subscription identifiers repeat in a PUBLISH; a SUBSCRIBE-only id is fine here too.
    let ids = props(&[0x0B, 1, 0x0B, 2], Context::Publish);
    let delivery = Publish {
        properties: ids,
        ..publish
    };
    assert_eq!(
        decode5(&encode5(&Packet::Publish(delivery))),
        Ok(Packet::Publish(delivery))
    );
    // In 3.1.1 the same bytes mean a payload: properties are MQTT 5 only.
    let Ok(Packet::Publish(old)) = decode_all(&wire) else {
        panic!()
    };
    assert!(old.properties.is_empty());
    assert_eq!(old.payload.len(), 11);
}

#[test]
fn acknowledgements_in_their_three_lengths() {
    // 5.0 section 3.4.2.1: remaining length 2 is success, 3 a reason code alone.
    check5(Packet::PubAck(Ack::new(5)), &[0x40, 2, 0, 5]);
    let refused = Ack {
        pkid: 5,
        reason: 0x87,
        properties: Properties::EMPTY,
    };
    check5(Packet::PubAck(refused), &[0x40, 3, 0, 5, 0x87]);
    let reason = props(&[0x1F, 0, 2, b'n', b'o'], Context::Ack);
    let explained = Ack {
        properties: reason,
        ..refused
    };
    check5(
        Packet::PubRec(explained),
        &[0x50, 9, 0, 5, 0x87, 5, 0x1F, 0, 2, b'n', b'o'],
    );
    // Reason code then an empty property block is the same acknowledgement, written longer.
    assert_eq!(
        decode5(&[0x40, 4, 0, 5, 0x87, 0]),
        Ok(Packet::PubAck(refused))
    );
    // PUBREL and PUBCOMP have their own table: 0x92 (packet identifier not found).
    let not_found = Ack {
        reason: 0x92,
        ..Ack::new(9)
    };
    check5(Packet::PubRel(not_found), &[0x62, 3, 0, 9, 0x92]);
    assert_eq!(
        decode5(&[0x40, 3, 0, 5, 0x92]),
        Err(DecodeError::InvalidReasonCode(0x92))
    );
    assert_eq!(
        decode5(&[0x70, 3, 0, 5, 0x87]),
        Err(DecodeError::InvalidReasonCode(0x87))
    );
    // Before MQTT 5 an acknowledgement is two bytes, and a failure cannot be said.
    assert_eq!(
        decode_all(&[0x40, 3, 0, 5, 0x87]),
        Err(DecodeError::TrailingBytes)
    );
    assert_eq!(
        Packet::PubAck(refused).encoded_len(),
        Err(EncodeError::NotInVersion)
    );
}

#[test]
fn subscription_options_of_section_3_8_3_1() {
    // Options 0x2E: Retain Handling 2, Retain As Published, No Local, QoS 2.
    let mut body = vec![0, 10, 2, 0x0B, 7];
    body.extend(field(b"a/#"));
    body.push(0x2E);
    body.extend(field(b"b"));
    body.push(0x01);
    let wire = frame(0x82, &body);
    let Packet::Subscribe(subscribe) = decode5(&wire).expect("valid") else {
        panic!()
    };
    assert_eq!(subscribe.properties.subscription_identifier(), Some(7));
    let options: Vec<_> = subscribe.filters.iter_options().collect();
    assert_eq!(
        options,
        [
            (
                "a/#",
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                }
            ),
            ("b", SubscriptionOptions::new(QoS::AtLeastOnce)),
        ]
    );
    // The QoS view of the same filters.
    assert_eq!(
        subscribe.filters.iter().collect::<Vec<_>>(),
        [("a/#", QoS::ExactlyOnce), ("b", QoS::AtLeastOnce)]
    );
    assert_eq!(encode5(&Packet::Subscribe(subscribe)), wire);
    // 3.1.1 cannot carry the options.
    assert_eq!(
        Packet::Subscribe(subscribe).encoded_len(),
        Err(EncodeError::NotInVersion)
    );
    let cases: [(u8, &[u8], DecodeError); 3] = [
        (0x30, b"a", DecodeError::InvalidSubscriptionOptions),
        (0x40, b"a", DecodeError::ReservedBitsSet),
        (0x04, b"$share/g/a", DecodeError::InvalidSubscriptionOptions),
    ];
    for (options, filter, error) in cases {
        let mut body = vec![0, 1, 0];
        body.extend(field(filter));
        body.push(options);
        assert_eq!(decode5(&frame(0x82, &body)), Err(error), "{options:#x}");
    }
    // The option bits are reserved in 3.1.1.
    let mut body = vec![0, 1];
    body.extend(field(b"a"));
    body.push(0x04);
    assert_eq!(
        decode_err(&frame(0x82, &body)),
        DecodeError::ReservedBitsSet
    );
}

#[test]
fn suback_unsubscribe_and_unsuback() {
    let suback = SubAck {
        pkid: 3,
        codes: SubAckCodes::from_slice(&[
            SubAckCode::Success(QoS::AtLeastOnce),
            SubAckCode::Refused(0x97),
            SubAckCode::Failure,
        ]),
        properties: Properties::EMPTY,
    };
    check5(
        Packet::SubAck(suback),
        &[0x90, 6, 0, 3, 0, 0x01, 0x97, 0x80],
    );
    assert_eq!(
        decode_all(&[0x90, 3, 0, 3, 0x97]),
        Err(DecodeError::InvalidSubAckCode(0x97))
    );
    assert_eq!(
        Packet::SubAck(suback).encoded_len(),
        Err(EncodeError::NotInVersion)
    );
    // Packet identifier 4, no properties, one filter.
    let mut body = vec![0, 4, 0];
    body.extend(field(b"a/b"));
    let wire = frame(0xA2, &body);
    let Packet::Unsubscribe(unsubscribe) = decode5(&wire).expect("valid") else {
        panic!()
    };
    assert_eq!(unsubscribe.filters.iter().collect::<Vec<_>>(), ["a/b"]);
    assert_eq!(encode5(&Packet::Unsubscribe(unsubscribe)), wire);
    let unsuback = UnsubAck {
        pkid: 4,
        reasons: &[0x00, 0x11],
        properties: Properties::EMPTY,
    };
    check5(Packet::UnsubAck(unsuback), &[0xB0, 5, 0, 4, 0, 0x00, 0x11]);
    assert_eq!(
        decode5(&[0xB0, 4, 0, 4, 0, 0x92]),
        Err(DecodeError::InvalidReasonCode(0x92))
    );
    assert_eq!(
        decode5(&[0xB0, 3, 0, 4, 0]),
        Err(DecodeError::EmptySubscription)
    );
    // 3.1.1's UNSUBACK is the packet identifier alone.
    assert_eq!(
        encode_vec(&Packet::UnsubAck(unsuback)),
        Ok(vec![0xB0, 2, 0, 4])
    );
}

#[test]
fn disconnect_with_a_reason_and_auth() {
    check5(Packet::Disconnect(Disconnect::NORMAL), &[0xE0, 0]);
    check5(
        Packet::Disconnect(Disconnect::with_reason(0x04)),
        &[0xE0, 1, 0x04],
    );
    let expiry = props(&[0x11, 0, 0, 0, 0], Context::Disconnect);
    check5(
        Packet::Disconnect(Disconnect {
            reason: 0x8E,
            properties: expiry,
        }),
        &[0xE0, 7, 0x8E, 5, 0x11, 0, 0, 0, 0],
    );
    assert_eq!(
        decode5(&[0xE0, 1, 0x92]),
        Err(DecodeError::InvalidReasonCode(0x92))
    );
    // 3.1.1: DISCONNECT is two bytes; a server DISCONNECT with a reason cannot be sent.
    assert_eq!(
        decode_all(&[0xE0, 1, 0x04]),
        Err(DecodeError::TrailingBytes)
    );
    assert_eq!(
        Packet::Disconnect(Disconnect::with_reason(0x8E)).encoded_len(),
        Err(EncodeError::NotInVersion)
    );
    // AUTH exists only in MQTT 5.
    let method = props(&[0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'], Context::Auth);
    check5(
        Packet::Auth(Auth {
            reason: 0x18,
            properties: method,
        }),
        &[0xF0, 10, 0x18, 8, 0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'],
    );
    assert_eq!(
        decode_all(&[0xF0, 0]),
        Err(DecodeError::InvalidPacketType(15))
    );
    assert_eq!(
        Packet::Auth(Auth {
            reason: 0,
            properties: Properties::EMPTY
        })
        .encoded_len(),
        Err(EncodeError::NotInVersion)
    );
}

proptest! {
    /// No input panics the MQTT 5 decoder; what decodes encodes back to the same packet.
    #[test]
    fn arbitrary_v5_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some((packet, _))) = decode_with(&bytes, 1 << 20, Version::V5)
            && let Ok(len) = packet.encoded_len_with(Version::V5)
        {
            let mut out = vec![0u8; len];
            prop_assert!(packet.encode_with(&mut out, Version::V5).is_ok());
            let again = decode_with(&out, 1 << 20, Version::V5);
            prop_assert_eq!(again, Ok(Some((packet, len))));
        }
    }
}
