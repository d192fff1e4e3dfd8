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
