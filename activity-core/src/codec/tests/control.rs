//! PINGREQ, PINGRESP, DISCONNECT (sections 3.12-3.14), error texts and conversions.

use super::*;

// ---- PINGREQ, PINGRESP, DISCONNECT (sections 3.12-3.14) ----

#[test]
fn header_only_packets() {
    for (packet, first) in [
        (Packet::PingReq, 0xC0),
        (Packet::PingResp, 0xD0),
        (Packet::Disconnect(Disconnect::NORMAL), 0xE0),
    ] {
        check_wire(packet, &[first, 0x00]);
        assert_eq!(decode_err(&[first, 0x01, 0x00]), DecodeError::TrailingBytes);
        assert_eq!(decode_err(&[first | 0x01, 0x00]), DecodeError::InvalidFlags);
        assert_eq!(packet.encoded_len(), Ok(2));
    }
}

#[test]
fn from_a_client_the_server_only_types_are_protocol_errors() {
    // CONNACK, SUBACK, UNSUBACK, PINGRESP: refused whole, well-formed or not, and only once
    // complete; every other type decodes as `decode_with` decodes it.
    for version in [Version::V3_1_1, Version::V5] {
        for (bytes, type_number) in [
            (&[0x20, 0x02, 0x00, 0x00][..], 2),
            (&[0x20, 0x01, 0x00][..], 2),
            (&[0x90, 0x03, 0x00, 0x01, 0x00][..], 9),
            (&[0xB0, 0x02, 0x00, 0x01][..], 11),
            (&[0xD0, 0x00][..], 13),
        ] {
            let error = decode_from_client(bytes, 64, version).unwrap_err();
            assert_eq!(error, DecodeError::ServerPacket(type_number));
            assert!(error.is_protocol_error());
            let partial = bytes.get(..bytes.len() - 1).unwrap_or_default();
            if bytes.len() > 2 {
                assert_eq!(decode_from_client(partial, 64, version), Ok(None));
            }
        }
        for packet in [
            Packet::PingReq,
            Packet::Disconnect(Disconnect::NORMAL),
            Packet::PubAck(Ack::new(7)),
            Packet::Publish(Publish {
                properties: Properties::EMPTY,
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "a/b",
                pkid: Some(3),
                payload: b"x",
            }),
        ] {
            let mut buf = [0u8; 64];
            let len = packet.encode_with(&mut buf, version).unwrap();
            assert_eq!(
                decode_from_client(&buf[..len], 64, version),
                decode_with(&buf[..len], 64, version)
            );
            assert!(
                decode_from_client(&buf[..len], 64, version)
                    .unwrap()
                    .is_some()
            );
        }
    }
    assert_eq!(
        DecodeError::ServerPacket(13).to_string(),
        "packet type 13 from a client"
    );
}

#[test]
fn errors_display_and_source() {
    use core::error::Error;
    let e = DecodeError::InvalidTopic(TopicError::Empty);
    assert_eq!(e.to_string(), "invalid topic: topic is empty");
    assert!(e.source().is_some());
    assert_eq!(
        DecodeError::PacketTooLarge { size: 10, max: 5 }.to_string(),
        "packet of 10 bytes exceeds the limit of 5 bytes"
    );
    assert_eq!(
        EncodeError::BufferTooSmall { needed: 3 }.to_string(),
        "output buffer too small, 3 bytes needed"
    );
    assert!(EncodeError::StringTooLong.source().is_none());
}

#[test]
fn packet_conversions() {
    let p = Publish {
        properties: crate::codec::Properties::EMPTY,
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t",
        pkid: None,
        payload: b"",
    };
    assert_eq!(Packet::from(p), Packet::Publish(p));
    assert_eq!(Packet::from(p).packet_type(), PacketType::Publish);
    let c = ConnAck {
        properties: crate::codec::Properties::EMPTY,
        session_present: false,
        code: ConnectReturnCode::NotAuthorized.as_u8(),
    };
    assert_eq!(Packet::from(c).packet_type(), PacketType::ConnAck);
}
