//! PUBLISH and the packet-id-only packets (sections 3.3-3.7, 3.11).

use super::*;

// ---- PUBLISH (section 3.3) ----

#[test]
fn publish_spec_example() {
    // Section 3.3.2.3, figure 3.11: topic "a/b", packet identifier 10.
    let packet = Packet::Publish(Publish {
        properties: crate::codec::Properties::EMPTY,
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b",
        pkid: Some(10),
        payload: b"",
    });
    check_wire(
        packet,
        &[0x32, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A],
    );
}

#[test]
fn publish_variants() {
    let qos0 = Publish {
        properties: crate::codec::Properties::EMPTY,
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "t",
        pkid: None,
        payload: b"hello",
    };
    check_wire(
        Packet::Publish(qos0),
        &[0x31, 0x08, 0, 1, b't', b'h', b'e', b'l', b'l', b'o'],
    );
    let qos2 = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        pkid: Some(0xBEEF),
        ..qos0
    };
    check_wire(
        Packet::Publish(qos2),
        &[
            0x3C, 0x0A, 0, 1, b't', 0xBE, 0xEF, b'h', b'e', b'l', b'l', b'o',
        ],
    );
    // Section 1.5.3, figure 1.1: "A\u{2A6D4}" as 0x41 0xF0 0xAA 0x9B 0x94.
    let utf8 = Publish {
        topic: "A\u{2A6D4}",
        payload: b"",
        ..qos0
    };
    check_wire(
        Packet::Publish(utf8),
        &[0x31, 0x07, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94],
    );
    // A large payload needs a multi-byte remaining length.
    let payload = vec![7u8; 20_000];
    let big = Publish {
        payload: &payload,
        ..qos0
    };
    let wire = encode_vec(&Packet::Publish(big)).unwrap();
    assert_eq!(&wire[..4], &[0x31, 0xA3, 0x9C, 0x01]);
    assert_eq!(decode_all(&wire), Ok(Packet::Publish(big)));
    assert_eq!(decode(&wire[..wire.len() - 1], usize::MAX), Ok(None));
}

#[test]
fn publish_decode_errors() {
    assert_eq!(
        decode_err(&[0x32, 0x05, 0, 1, b't', 0, 0]),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        decode_err(&[0x34, 0x04, 0, 1, b't', 0]),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_err(&[0x30, 0x03, 0, 1, b'+']),
        DecodeError::InvalidTopic(TopicError::WildcardInName)
    );
    assert_eq!(
        decode_err(&[0x30, 0x03, 0, 1, b'#']),
        DecodeError::InvalidTopic(TopicError::WildcardInName)
    );
    assert_eq!(
        decode_err(&[0x30, 0x02, 0, 0]),
        DecodeError::InvalidTopic(TopicError::Empty)
    );
    assert_eq!(decode_err(&[0x30, 0x03, 0, 1, 0]), DecodeError::InvalidUtf8);
    // A UTF-16 surrogate encoded as UTF-8 (1.5.3).
    assert_eq!(
        decode_err(&[0x30, 0x05, 0, 3, 0xED, 0xA0, 0x80]),
        DecodeError::InvalidUtf8
    );
    assert_eq!(decode_err(&[0x30, 0x01, 0]), DecodeError::Truncated);
    assert_eq!(
        decode_err(&[0x30, 0x03, 0, 2, b'a']),
        DecodeError::Truncated
    );
    assert_eq!(decode_err(&[0x36, 0x00]), DecodeError::InvalidQoS);
    assert_eq!(decode_err(&[0x38, 0x00]), DecodeError::InvalidFlags);
}

#[test]
fn publish_encode_errors() {
    let p = Publish {
        properties: crate::codec::Properties::EMPTY,
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t",
        pkid: Some(1),
        payload: b"",
    };
    let enc = |p: Publish<'_>| Packet::Publish(p).encoded_len();
    assert_eq!(
        enc(Publish { pkid: None, ..p }),
        Err(EncodeError::InvalidPacketId)
    );
    assert_eq!(
        enc(Publish { pkid: Some(0), ..p }),
        Err(EncodeError::InvalidPacketId)
    );
    assert_eq!(
        enc(Publish {
            qos: QoS::AtMostOnce,
            ..p
        }),
        Err(EncodeError::InvalidPacketId)
    );
    assert_eq!(
        enc(Publish {
            qos: QoS::AtMostOnce,
            pkid: None,
            dup: true,
            ..p
        }),
        Err(EncodeError::InvalidFlags)
    );
    assert_eq!(
        enc(Publish { topic: "a/+", ..p }),
        Err(EncodeError::InvalidTopic(TopicError::WildcardInName))
    );
    assert_eq!(
        enc(Publish { topic: "", ..p }),
        Err(EncodeError::InvalidTopic(TopicError::Empty))
    );
    let long = "t".repeat(65_536);
    assert_eq!(
        enc(Publish { topic: &long, ..p }),
        Err(EncodeError::InvalidTopic(TopicError::TooLong))
    );
    // Remaining length past 268,435,455. `vec!` of zeros is not touched, so this is cheap.
    let payload = vec![0u8; MAX_REMAINING_LENGTH];
    assert_eq!(
        enc(Publish {
            payload: &payload,
            ..p
        }),
        Err(EncodeError::PacketTooLarge)
    );
    let fits = &payload[..MAX_REMAINING_LENGTH - 5];
    assert_eq!(
        enc(Publish { payload: fits, ..p }),
        Ok(MAX_REMAINING_LENGTH + 5)
    );
    let mut small = [0u8; 16];
    assert_eq!(
        Packet::Publish(Publish { payload: fits, ..p }).encode(&mut small),
        Err(EncodeError::BufferTooSmall {
            needed: MAX_REMAINING_LENGTH + 5
        })
    );
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK (sections 3.4-3.7, 3.11) ----

#[test]
fn packet_id_only_packets() {
    let cases = [
        (
            (|id| Packet::PubAck(Ack::new(id))) as fn(u16) -> Packet<'static>,
            0x40,
        ),
        (|id| Packet::PubRec(Ack::new(id)), 0x50),
        (|id| Packet::PubRel(Ack::new(id)), 0x62),
        (|id| Packet::PubComp(Ack::new(id)), 0x70),
        (|id| Packet::UnsubAck(UnsubAck::new(id)), 0xB0),
    ];
    for (make, first) in cases {
        check_wire(make(10), &[first, 0x02, 0x00, 0x0A]);
        check_wire(make(0xFFFF), &[first, 0x02, 0xFF, 0xFF]);
        assert_eq!(
            decode_err(&[first, 0x02, 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
        assert_eq!(decode_err(&[first, 0x01, 0x01]), DecodeError::Truncated);
        assert_eq!(decode_err(&[first, 0x00]), DecodeError::Truncated);
        assert_eq!(
            decode_err(&[first, 0x03, 0x00, 0x01, 0x00]),
            DecodeError::TrailingBytes
        );
        assert_eq!(
            decode_err(&[first ^ 0x02, 0x02, 0x00, 0x01]),
            DecodeError::InvalidFlags
        );
        assert_eq!(make(0).encoded_len(), Err(EncodeError::InvalidPacketId));
    }
}
