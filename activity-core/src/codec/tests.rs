//! Tests of the codec: spec byte vectors per packet type, every error path, incomplete input,
//! and property tests (encode/decode round trips, decoding arbitrary bytes never panics).

use super::*;
use crate::QoS;
use crate::topic::TopicError;
use proptest::prelude::*;

/// Decodes a whole packet, asserting it took every byte.
fn decode_all(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    match decode(bytes, usize::MAX)? {
        Some((packet, len)) => {
            assert_eq!(
                len,
                bytes.len(),
                "decode did not take every byte of {bytes:02x?}"
            );
            Ok(packet)
        }
        None => panic!("incomplete: {bytes:02x?}"),
    }
}

/// The encoded bytes of a packet.
fn encode_vec(packet: &Packet<'_>) -> Result<Vec<u8>, EncodeError> {
    let len = packet.encoded_len()?;
    let mut buf = vec![0xAA; len];
    assert_eq!(packet.encode(&mut buf)?, len);
    Ok(buf)
}

/// Checks everything a valid packet must satisfy against its expected wire bytes: encodes to
/// them, decodes from them taking every byte, every prefix is `Ok(None)`, a buffer one byte
/// short is `BufferTooSmall` and stays untouched, and trailing bytes are left alone.
fn check_wire(packet: Packet<'_>, wire: &[u8]) {
    assert_eq!(encode_vec(&packet).as_deref(), Ok(wire));
    assert_eq!(decode_all(wire), Ok(packet));
    for end in 0..wire.len() {
        assert_eq!(
            decode(&wire[..end], usize::MAX),
            Ok(None),
            "prefix of {end} bytes"
        );
    }
    let mut short = vec![0x55; wire.len() - 1];
    assert_eq!(
        packet.encode(&mut short),
        Err(EncodeError::BufferTooSmall { needed: wire.len() })
    );
    assert!(
        short.iter().all(|&b| b == 0x55),
        "encode wrote into a too-small buffer"
    );
    let mut two = wire.to_vec();
    two.extend_from_slice(wire);
    assert_eq!(decode(&two, usize::MAX), Ok(Some((packet, wire.len()))));
}

/// A packet: fixed-header byte, minimal remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let digit = u8::try_from(len % 128).unwrap();
        len /= 128;
        if len == 0 {
            out.push(digit);
            break;
        }
        out.push(digit | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed field.
fn field(data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    decode(bytes, usize::MAX).expect_err("expected a decode error")
}

// ---- Fixed header (section 2.2) ----

#[test]
fn remaining_length_spec_table() {
    // Section 2.2.3, table 2.4: the boundaries of each encoded size.
    let cases: [(usize, &[u8]); 8] = [
        (0, &[0x00]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ];
    for (value, bytes) in cases {
        let mut buf = vec![0x30];
        buf.extend_from_slice(bytes);
        let header = fixed_header(&buf).unwrap().unwrap();
        assert_eq!(header.remaining_length(), value);
        assert_eq!(header.header_len(), 1 + bytes.len());
        assert_eq!(header.packet_len(), 1 + bytes.len() + value);
        assert_eq!(header.packet_type(), PacketType::Publish);
        assert_eq!(wire::remaining_length_len(value), bytes.len());
        let mut out = [0u8; 4];
        let mut w = wire::Writer::new(&mut out);
        w.remaining_length(value).unwrap();
        let written = w.position();
        assert_eq!(&out[..written], bytes);
        // Incomplete length bytes: not an error yet.
        for end in 0..buf.len() {
            assert_eq!(fixed_header(&buf[..end]), Ok(None));
        }
    }
    let mut out = [0u8; 4];
    let mut w = wire::Writer::new(&mut out);
    assert_eq!(
        w.remaining_length(MAX_REMAINING_LENGTH + 1),
        Err(EncodeError::PacketTooLarge)
    );
}

#[test]
fn remaining_length_over_four_bytes_is_malformed() {
    assert_eq!(
        decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
        DecodeError::MalformedRemainingLength
    );
    assert_eq!(
        decode_err(&[0xC0, 0x80, 0x80, 0x80, 0x80, 0x00]),
        DecodeError::MalformedRemainingLength
    );
    assert_eq!(decode(&[0x30, 0xFF, 0xFF, 0xFF], usize::MAX), Ok(None));
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    // Section 2.2.3 does not require the shortest form in 3.1.1 (see `fixed_header`).
    assert_eq!(
        decode(&[0xC0, 0x80, 0x00], 16),
        Ok(Some((Packet::PingReq, 3)))
    );
    assert_eq!(
        decode(&[0x40, 0x82, 0x80, 0x00, 0x00, 0x07], 16),
        Ok(Some((Packet::PubAck(7), 6)))
    );
}

#[test]
fn reserved_packet_types() {
    // Section 2.2.1: 0 and 15 are reserved.
    assert_eq!(decode_err(&[0x00]), DecodeError::InvalidPacketType(0));
    assert_eq!(
        decode_err(&[0xF0, 0x00]),
        DecodeError::InvalidPacketType(15)
    );
    assert_eq!(PacketType::from_u8(16), None);
    for t in 1..=14u8 {
        assert_eq!(PacketType::from_u8(t).map(PacketType::as_u8), Some(t));
    }
}

#[test]
fn fixed_header_flags_are_exact() {
    // Section 2.2.2, table 2.2: every non-PUBLISH type has exactly one valid flags nibble,
    // checked on the first byte alone.
    for t in 1..=14u8 {
        if t == 3 {
            continue;
        }
        let required = if matches!(t, 6 | 8 | 10) { 0b0010 } else { 0 };
        for flags in 0..16u8 {
            let result = fixed_header(&[(t << 4) | flags]);
            if flags == required {
                assert_eq!(result, Ok(None), "type {t} flags {flags:#06b}");
            } else {
                assert_eq!(
                    result,
                    Err(DecodeError::InvalidFlags),
                    "type {t} flags {flags:#06b}"
                );
            }
        }
    }
}

#[test]
fn publish_flags() {
    // Section 3.3.1.2: QoS 3 is malformed; 3.3.1.1: DUP must be 0 at QoS 0.
    assert_eq!(fixed_header(&[0x36]), Err(DecodeError::InvalidQoS));
    assert_eq!(fixed_header(&[0x3F]), Err(DecodeError::InvalidQoS));
    assert_eq!(fixed_header(&[0x38]), Err(DecodeError::InvalidFlags));
    assert_eq!(fixed_header(&[0x39]), Err(DecodeError::InvalidFlags));
    for ok in [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x3A, 0x3B, 0x3C, 0x3D] {
        assert_eq!(fixed_header(&[ok]), Ok(None), "{ok:#04x}");
    }
}

#[test]
fn packet_too_large_before_the_body_arrives() {
    // Declares 200 bytes of body; only the header is present.
    assert_eq!(
        decode(&[0x30, 0xC8, 0x01], 100),
        Err(DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        })
    );
    assert_eq!(decode(&[0x30, 0xC8, 0x01], 203), Ok(None));
    // The limit counts the fixed header.
    assert_eq!(decode(&[0xC0, 0x00], 2), Ok(Some((Packet::PingReq, 2))));
    assert_eq!(
        decode(&[0xC0, 0x00], 1),
        Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
    );
}

#[test]
fn empty_input_is_incomplete() {
    assert_eq!(decode(&[], 0), Ok(None));
    assert_eq!(fixed_header(&[]), Ok(None));
}

// ---- CONNECT (section 3.1) ----

/// The variable header of section 3.1.2.10, figure 3.6: protocol name `MQTT`, level 4, flags
/// 0xCE (user name, password, will QoS 1, will, clean session), keep alive 10.
const CONNECT_FIG_3_6: [u8; 10] = [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A];

fn connect_fig_3_6_bytes() -> Vec<u8> {
    let mut body = CONNECT_FIG_3_6.to_vec();
    for part in [&b"c"[..], b"w", b"bye", b"u", b"p"] {
        body.extend(field(part));
    }
    frame(0x10, &body)
}

#[test]
fn connect_spec_example() {
    let packet = Packet::Connect(Connect {
        protocol_level: 4,
        client_id: "c",
        clean_session: true,
        keep_alive: 10,
        username: Some("u"),
        password: Some(b"p"),
        will: Some(LastWill {
            topic: "w",
            message: b"bye",
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
    });
    check_wire(packet, &connect_fig_3_6_bytes());
}

#[test]
fn connect_minimal() {
    // Empty client id, no flags but clean session: the server decides about it (3.1.3.1).
    let wire = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0];
    let connect = Connect {
        protocol_level: PROTOCOL_LEVEL,
        client_id: "",
        clean_session: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
    };
    check_wire(Packet::Connect(connect), &wire);
    // Without clean session it still decodes.
    let wire = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 0, 0, 0];
    let Packet::Connect(c) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert!(!c.clean_session);
    assert_eq!(c.keep_alive, 0);
}

#[test]
fn connect_will_retain_qos2_and_username_only() {
    let connect = Connect {
        protocol_level: 4,
        client_id: "id",
        clean_session: false,
        keep_alive: 0xFFFF,
        username: Some("user"),
        password: None,
        will: Some(LastWill {
            topic: "a/b",
            message: b"",
            qos: QoS::ExactlyOnce,
            retain: true,
        }),
    };
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x80 | 0x20 | 0x10 | 0x04,
        0xFF,
        0xFF,
    ];
    body.extend(field(b"id"));
    body.extend(field(b"a/b"));
    body.extend(field(b""));
    body.extend(field(b"user"));
    check_wire(Packet::Connect(connect), &frame(0x10, &body));
}

#[test]
fn connect_other_protocol_level() {
    // Section 3.1.2.2: a server answers CONNACK 0x01, so the level must reach it. The payload
    // (here an MQTT 5 property length and garbage) is skipped.
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2, 0, 30, 0x00, 0xFF, 0xFE,
    ];
    let wire = frame(0x10, &body);
    let expected = Connect {
        protocol_level: 5,
        client_id: "",
        clean_session: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
    };
    assert_eq!(decode_all(&wire), Ok(Packet::Connect(expected)));
    body[6] = 3;
    let wire = frame(0x10, &body);
    let Packet::Connect(c) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert_eq!(c.protocol_level, 3);
    // Still truncated if the variable header is incomplete.
    assert_eq!(decode_err(&frame(0x10, &body[..9])), DecodeError::Truncated);
}

#[test]
fn connect_protocol_name_errors() {
    // Section 3.1.2.1. MQTT 3.1's `MQIsdp` is another protocol name.
    let mut body = field(b"MQIsdp");
    body.extend_from_slice(&[3, 0x02, 0, 60]);
    body.extend(field(b"c"));
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        DecodeError::InvalidProtocolName
    );
    let body = [0, 4, b'm', b'q', b't', b't', 4, 0x02, 0, 60, 0, 0];
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        DecodeError::InvalidProtocolName
    );
    let body = [0, 3, b'M', b'Q', b'T', 4, 0x02, 0, 60, 0, 0];
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        DecodeError::InvalidProtocolName
    );
    assert_eq!(
        decode_err(&frame(0x10, &[0, 4, b'M'])),
        DecodeError::Truncated
    );
    assert_eq!(decode_err(&frame(0x10, &[])), DecodeError::Truncated);
}

/// A level-4 CONNECT with the given flags and payload.
fn connect_with(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
    for part in payload {
        body.extend(field(part));
    }
    frame(0x10, &body)
}

#[test]
fn connect_flag_errors() {
    // 3.1.2.3: reserved bit.
    assert_eq!(
        decode_err(&connect_with(0x03, &[b"c"])),
        DecodeError::InvalidConnectFlags
    );
    // 3.1.2.6 / 3.1.2.7: will QoS or retain without will flag.
    assert_eq!(
        decode_err(&connect_with(0x0A, &[b"c"])),
        DecodeError::InvalidConnectFlags
    );
    assert_eq!(
        decode_err(&connect_with(0x12, &[b"c"])),
        DecodeError::InvalidConnectFlags
    );
    assert_eq!(
        decode_err(&connect_with(0x22, &[b"c"])),
        DecodeError::InvalidConnectFlags
    );
    // 3.1.2.9: password without user name.
    assert_eq!(
        decode_err(&connect_with(0x42, &[b"c", b"p"])),
        DecodeError::InvalidConnectFlags
    );
    // 3.1.2.6: will QoS 3.
    assert_eq!(
        decode_err(&connect_with(0x1E, &[b"c", b"w", b"m"])),
        DecodeError::InvalidQoS
    );
}

#[test]
fn connect_payload_errors() {
    // Will topic must be a valid topic name (3.1.3.2).
    assert_eq!(
        decode_err(&connect_with(0x06, &[b"c", b"w/#", b"m"])),
        DecodeError::InvalidTopic(TopicError::WildcardInName)
    );
    assert_eq!(
        decode_err(&connect_with(0x06, &[b"c", b"", b"m"])),
        DecodeError::InvalidTopic(TopicError::Empty)
    );
    // Strings must be UTF-8 without U+0000 (1.5.3).
    assert_eq!(
        decode_err(&connect_with(0x02, &[b"\xFF"])),
        DecodeError::InvalidUtf8
    );
    assert_eq!(
        decode_err(&connect_with(0x02, &[b"a\0"])),
        DecodeError::InvalidUtf8
    );
    assert_eq!(
        decode_err(&connect_with(0x82, &[b"c", b"\xC0\x80"])),
        DecodeError::InvalidUtf8
    );
    // The password is binary data: any bytes.
    let wire = connect_with(0xC2, &[b"c", b"u", b"\0\xFF"]);
    let Packet::Connect(c) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert_eq!(c.password, Some(&b"\0\xFF"[..]));
    // Missing fields the flags announce.
    assert_eq!(
        decode_err(&connect_with(0x82, &[b"c"])),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_err(&connect_with(0x06, &[b"c", b"w"])),
        DecodeError::Truncated
    );
    assert_eq!(decode_err(&connect_with(0x02, &[])), DecodeError::Truncated);
    // A field the flags do not announce.
    assert_eq!(
        decode_err(&connect_with(0x02, &[b"c", b"u"])),
        DecodeError::TrailingBytes
    );
    // A length prefix past the end.
    let mut wire = connect_with(0x02, &[b"c"]);
    let last = wire.len() - 2;
    wire[last] = 9;
    assert_eq!(decode_err(&wire), DecodeError::Truncated);
}

#[test]
fn connect_encode_errors() {
    let base = Connect {
        protocol_level: 4,
        client_id: "c",
        clean_session: true,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
    };
    let password_only = Connect {
        password: Some(b"p"),
        ..base
    };
    assert_eq!(
        Packet::Connect(password_only).encoded_len(),
        Err(EncodeError::InvalidFlags)
    );
    let will = LastWill {
        topic: "+",
        message: b"",
        qos: QoS::AtMostOnce,
        retain: false,
    };
    assert_eq!(
        Packet::Connect(Connect {
            will: Some(will),
            ..base
        })
        .encoded_len(),
        Err(EncodeError::InvalidTopic(TopicError::WildcardInName))
    );
    let long = "x".repeat(65_536);
    assert_eq!(
        Packet::Connect(Connect {
            client_id: &long,
            ..base
        })
        .encoded_len(),
        Err(EncodeError::StringTooLong)
    );
    let long_password = vec![0u8; 65_536];
    let connect = Connect {
        username: Some("u"),
        password: Some(&long_password),
        ..base
    };
    assert_eq!(
        Packet::Connect(connect).encoded_len(),
        Err(EncodeError::StringTooLong)
    );
    assert_eq!(
        Packet::Connect(Connect {
            client_id: "a\0",
            ..base
        })
        .encoded_len(),
        Err(EncodeError::InvalidString)
    );
    // 65535 bytes is the limit, not past it.
    let max = "x".repeat(65_535);
    let packet = Packet::Connect(Connect {
        client_id: &max,
        ..base
    });
    let bytes = encode_vec(&packet).unwrap();
    assert_eq!(decode_all(&bytes), Ok(packet));
}

// ---- CONNACK (section 3.2) ----

#[test]
fn connack_all_codes() {
    for code in 0..=5u8 {
        let rc = ConnectReturnCode::from_u8(code).unwrap();
        assert_eq!(rc.as_u8(), code);
        let packet = Packet::ConnAck(ConnAck {
            session_present: false,
            code: rc,
        });
        check_wire(packet, &[0x20, 0x02, 0x00, code]);
    }
    let packet = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ConnectReturnCode::Accepted,
    });
    check_wire(packet, &[0x20, 0x02, 0x01, 0x00]);
}

#[test]
fn connack_errors() {
    // 3.2.2.1: acknowledge flags bits 7-1 are reserved.
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x02, 0x00]),
        DecodeError::ReservedBitsSet
    );
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x80, 0x00]),
        DecodeError::ReservedBitsSet
    );
    // 3.2.2.3: 6-255 are reserved.
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x00, 0x06]),
        DecodeError::InvalidConnectReturnCode(6)
    );
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x00, 0xFF]),
        DecodeError::InvalidConnectReturnCode(0xFF)
    );
    assert_eq!(decode_err(&[0x20, 0x01, 0x00]), DecodeError::Truncated);
    assert_eq!(
        decode_err(&[0x20, 0x03, 0x00, 0x00, 0x00]),
        DecodeError::TrailingBytes
    );
    assert_eq!(
        decode_err(&[0x21, 0x02, 0x00, 0x00]),
        DecodeError::InvalidFlags
    );
}

// ---- PUBLISH (section 3.3) ----

#[test]
fn publish_spec_example() {
    // Section 3.3.2.3, figure 3.11: topic "a/b", packet identifier 10.
    let packet = Packet::Publish(Publish {
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
        (Packet::PubAck as fn(u16) -> Packet<'static>, 0x40),
        (Packet::PubRec, 0x50),
        (Packet::PubRel, 0x62),
        (Packet::PubComp, 0x70),
        (Packet::UnsubAck, 0xB0),
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

// ---- SUBSCRIBE (section 3.8) ----

#[test]
fn subscribe_spec_example() {
    // Section 3.8.2, figure 3.20 (packet identifier 10) and section 3.8.3, figure 3.22
    // ("a/b" at QoS 1, "c/d" at QoS 2).
    let wire = [
        0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/', b'd',
        0x02,
    ];
    let filters = [("a/b", QoS::AtLeastOnce), ("c/d", QoS::ExactlyOnce)];
    let packet = Packet::Subscribe(Subscribe {
        pkid: 10,
        filters: SubscribeFilters::from_slice(&filters),
    });
    check_wire(packet, &wire);
    let Packet::Subscribe(decoded) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert_eq!(decoded.filters.len(), 2);
    assert!(!decoded.filters.is_empty());
    assert_eq!(decoded.filters.iter().collect::<Vec<_>>(), filters);
    assert_eq!(
        format!("{:?}", decoded.filters),
        "[(\"a/b\", AtLeastOnce), (\"c/d\", ExactlyOnce)]"
    );
    // Re-encoding the wire form gives the same bytes.
    assert_eq!(encode_vec(&Packet::Subscribe(decoded)).unwrap(), wire);
}

#[test]
fn subscribe_errors() {
    let sub = |payload: &[u8]| {
        let mut body = vec![0x00, 0x01];
        body.extend_from_slice(payload);
        frame(0x82, &body)
    };
    // 3.8.3: at least one filter.
    assert_eq!(decode_err(&sub(&[])), DecodeError::EmptySubscription);
    // 3.8.3.1: QoS 3 and reserved bits.
    assert_eq!(decode_err(&sub(&[0, 1, b'a', 3])), DecodeError::InvalidQoS);
    assert_eq!(
        decode_err(&sub(&[0, 1, b'a', 0x04])),
        DecodeError::ReservedBitsSet
    );
    assert_eq!(
        decode_err(&sub(&[0, 1, b'a', 0x81])),
        DecodeError::ReservedBitsSet
    );
    // Filter rules (4.7).
    assert_eq!(
        decode_err(&sub(&[0, 2, b'a', b'#', 0])),
        DecodeError::InvalidTopic(TopicError::MisplacedWildcard)
    );
    assert_eq!(
        decode_err(&sub(&[0, 0, 0])),
        DecodeError::InvalidTopic(TopicError::Empty)
    );
    assert_eq!(decode_err(&sub(&[0, 1, 0xFF, 0])), DecodeError::InvalidUtf8);
    // Missing options byte, or a cut-off filter.
    assert_eq!(decode_err(&sub(&[0, 1, b'a'])), DecodeError::Truncated);
    assert_eq!(
        decode_err(&sub(&[0, 1, b'a', 0, 0])),
        DecodeError::Truncated
    );
    assert_eq!(decode_err(&sub(&[0, 5, b'a', 0])), DecodeError::Truncated);
    // Packet identifier (2.3.1) and flags (3.8.1).
    assert_eq!(
        decode_err(&frame(0x82, &[0, 0, 0, 1, b'a', 0])),
        DecodeError::ZeroPacketId
    );
    assert_eq!(decode_err(&frame(0x82, &[0])), DecodeError::Truncated);
    assert_eq!(
        decode_err(&frame(0x80, &[0, 1, 0, 1, b'a', 0])),
        DecodeError::InvalidFlags
    );
    // Encoding checks the same rules.
    let enc = |pkid, filters: &[(&str, QoS)]| {
        Packet::Subscribe(Subscribe {
            pkid,
            filters: SubscribeFilters::from_slice(filters),
        })
        .encoded_len()
    };
    assert_eq!(enc(1, &[]), Err(EncodeError::EmptySubscription));
    assert_eq!(
        enc(0, &[("a", QoS::AtMostOnce)]),
        Err(EncodeError::InvalidPacketId)
    );
    assert_eq!(
        enc(1, &[("a", QoS::AtMostOnce), ("a#", QoS::AtMostOnce)]),
        Err(EncodeError::InvalidTopic(TopicError::MisplacedWildcard))
    );
    assert_eq!(enc(1, &[("#", QoS::AtMostOnce)]), Ok(8));
}

#[test]
fn subscribe_filters_view() {
    let empty = SubscribeFilters::from_slice(&[]);
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    let pairs = [("x", QoS::AtMostOnce)];
    let view = SubscribeFilters::from_slice(&pairs);
    let copy = view;
    assert_eq!(view, copy);
    assert_ne!(view, empty);
    assert_eq!((&view).into_iter().count(), 1);
}

// ---- SUBACK (section 3.9) ----

#[test]
fn suback_spec_example() {
    // Section 3.9.3, figure 3.26: success QoS 0, success QoS 2, failure.
    let codes = [
        SubAckCode::Success(QoS::AtMostOnce),
        SubAckCode::Success(QoS::ExactlyOnce),
        SubAckCode::Failure,
    ];
    let packet = Packet::SubAck(SubAck {
        pkid: 10,
        codes: SubAckCodes::from_slice(&codes),
    });
    let wire = [0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80];
    check_wire(packet, &wire);
    let Packet::SubAck(decoded) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert_eq!(decoded.codes.len(), 3);
    assert_eq!(decoded.codes.iter().len(), 3);
    assert_eq!(decoded.codes.iter().collect::<Vec<_>>(), codes);
    for value in 0..=255u8 {
        match SubAckCode::from_u8(value) {
            Some(code) => assert_eq!(code.as_u8(), value),
            None => assert!(!matches!(value, 0 | 1 | 2 | 0x80)),
        }
    }
}

#[test]
fn suback_errors() {
    assert_eq!(
        decode_err(&[0x90, 0x03, 0x00, 0x01, 0x03]),
        DecodeError::InvalidSubAckCode(3)
    );
    assert_eq!(
        decode_err(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x81]),
        DecodeError::InvalidSubAckCode(0x81)
    );
    assert_eq!(
        decode_err(&[0x90, 0x02, 0x00, 0x01]),
        DecodeError::EmptySubscription
    );
    assert_eq!(
        decode_err(&[0x90, 0x03, 0x00, 0x00, 0x00]),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        decode_err(&[0x92, 0x03, 0x00, 0x01, 0x00]),
        DecodeError::InvalidFlags
    );
    let enc = |pkid, codes: &[SubAckCode]| {
        Packet::SubAck(SubAck {
            pkid,
            codes: SubAckCodes::from_slice(codes),
        })
        .encoded_len()
    };
    assert_eq!(enc(1, &[]), Err(EncodeError::EmptySubscription));
    assert_eq!(
        enc(0, &[SubAckCode::Failure]),
        Err(EncodeError::InvalidPacketId)
    );
}

// ---- UNSUBSCRIBE (section 3.10) ----

#[test]
fn unsubscribe_spec_example() {
    // Section 3.10.3, figure 3.30: "a/b" and "c/d".
    let wire = [
        0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'd',
    ];
    let filters = ["a/b", "c/d"];
    let packet = Packet::Unsubscribe(Unsubscribe {
        pkid: 10,
        filters: UnsubscribeFilters::from_slice(&filters),
    });
    check_wire(packet, &wire);
    let Packet::Unsubscribe(decoded) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert_eq!(decoded.filters.len(), 2);
    assert_eq!(decoded.filters.iter().collect::<Vec<_>>(), filters);
    assert_eq!(encode_vec(&Packet::Unsubscribe(decoded)).unwrap(), wire);
}

#[test]
fn unsubscribe_errors() {
    assert_eq!(
        decode_err(&[0xA2, 0x02, 0x00, 0x01]),
        DecodeError::EmptySubscription
    );
    assert!(decode_all(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, b'+']).is_ok());
    assert_eq!(
        decode_err(&[0xA2, 0x06, 0x00, 0x01, 0x00, 0x02, b'+', b'x']),
        DecodeError::InvalidTopic(TopicError::MisplacedWildcard)
    );
    assert_eq!(
        decode_err(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x02, b'a']),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_err(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, 0x00]),
        DecodeError::InvalidUtf8
    );
    assert_eq!(
        decode_err(&[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a']),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        decode_err(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
        DecodeError::InvalidFlags
    );
    let enc = |pkid, filters: &[&str]| {
        Packet::Unsubscribe(Unsubscribe {
            pkid,
            filters: UnsubscribeFilters::from_slice(filters),
        })
        .encoded_len()
    };
    assert_eq!(enc(1, &[]), Err(EncodeError::EmptySubscription));
    assert_eq!(enc(0, &["a"]), Err(EncodeError::InvalidPacketId));
    assert_eq!(
        enc(1, &["a", ""]),
        Err(EncodeError::InvalidTopic(TopicError::Empty))
    );
}

// ---- PINGREQ, PINGRESP, DISCONNECT (sections 3.12-3.14) ----

#[test]
fn header_only_packets() {
    for (packet, first) in [
        (Packet::PingReq, 0xC0),
        (Packet::PingResp, 0xD0),
        (Packet::Disconnect, 0xE0),
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
        session_present: false,
        code: ConnectReturnCode::NotAuthorized,
    };
    assert_eq!(Packet::from(c).packet_type(), PacketType::ConnAck);
}

// ---- Property tests ----

/// An owned packet, so that proptest can generate it; `with_packet` borrows it.
#[derive(Clone, Debug)]
enum Owned {
    Connect {
        client_id: String,
        clean_session: bool,
        keep_alive: u16,
        username: Option<String>,
        password: Option<Vec<u8>>,
        will: Option<(String, Vec<u8>, QoS, bool)>,
    },
    ConnAck(bool, u8),
    Publish {
        dup: bool,
        qos: QoS,
        retain: bool,
        topic: String,
        pkid: u16,
        payload: Vec<u8>,
    },
    Id(u8, u16),
    Subscribe(u16, Vec<(String, QoS)>),
    SubAck(u16, Vec<SubAckCode>),
    Unsubscribe(u16, Vec<String>),
    Empty(u8),
}

fn with_packet<R>(owned: &Owned, f: impl FnOnce(Packet<'_>) -> R) -> R {
    match owned {
        Owned::Connect {
            client_id,
            clean_session,
            keep_alive,
            username,
            password,
            will,
        } => f(Packet::Connect(Connect {
            protocol_level: 4,
            client_id,
            clean_session: *clean_session,
            keep_alive: *keep_alive,
            username: username.as_deref(),
            password: if username.is_some() {
                password.as_deref()
            } else {
                None
            },
            will: will.as_ref().map(|(topic, message, qos, retain)| LastWill {
                topic,
                message,
                qos: *qos,
                retain: *retain,
            }),
        })),
        Owned::ConnAck(session_present, code) => f(Packet::ConnAck(ConnAck {
            session_present: *session_present,
            code: ConnectReturnCode::from_u8(*code).unwrap(),
        })),
        Owned::Publish {
            dup,
            qos,
            retain,
            topic,
            pkid,
            payload,
        } => {
            let at_least_once = *qos != QoS::AtMostOnce;
            f(Packet::Publish(Publish {
                dup: *dup && at_least_once,
                qos: *qos,
                retain: *retain,
                topic,
                pkid: at_least_once.then_some(*pkid),
                payload,
            }))
        }
        Owned::Id(kind, id) => f(match kind % 5 {
            0 => Packet::PubAck(*id),
            1 => Packet::PubRec(*id),
            2 => Packet::PubRel(*id),
            3 => Packet::PubComp(*id),
            _ => Packet::UnsubAck(*id),
        }),
        Owned::Subscribe(pkid, filters) => {
            let pairs: Vec<(&str, QoS)> = filters.iter().map(|(s, q)| (s.as_str(), *q)).collect();
            f(Packet::Subscribe(Subscribe {
                pkid: *pkid,
                filters: SubscribeFilters::from_slice(&pairs),
            }))
        }
        Owned::SubAck(pkid, codes) => f(Packet::SubAck(SubAck {
            pkid: *pkid,
            codes: SubAckCodes::from_slice(codes),
        })),
        Owned::Unsubscribe(pkid, filters) => {
            let names: Vec<&str> = filters.iter().map(String::as_str).collect();
            f(Packet::Unsubscribe(Unsubscribe {
                pkid: *pkid,
                filters: UnsubscribeFilters::from_slice(&names),
            }))
        }
        Owned::Empty(kind) => f(match kind % 3 {
            0 => Packet::PingReq,
            1 => Packet::PingResp,
            _ => Packet::Disconnect,
        }),
    }
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z/$ é\u{2A6D4}]{1,12}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(prop_oneof!["[a-z$]{0,3}", Just("+".to_string())], 1..4),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut filter = levels.join("/");
            if hash {
                filter.push_str("/#");
            }
            filter
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}

fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,10}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn suback_code() -> impl Strategy<Value = SubAckCode> {
    prop_oneof![
        qos().prop_map(SubAckCode::Success),
        Just(SubAckCode::Failure)
    ]
}

fn owned_packet() -> impl Strategy<Value = Owned> {
    let id = 1..=u16::MAX;
    prop_oneof![
        (
            text(),
            any::<bool>(),
            any::<u16>(),
            proptest::option::of(text()),
            proptest::option::of(bytes(10)),
            proptest::option::of((topic_name(), bytes(10), qos(), any::<bool>())),
        )
            .prop_map(
                |(client_id, clean_session, keep_alive, username, password, will)| {
                    Owned::Connect {
                        client_id,
                        clean_session,
                        keep_alive,
                        username,
                        password,
                        will,
                    }
                }
            ),
        (any::<bool>(), 0u8..=5).prop_map(|(s, c)| Owned::ConnAck(s, c)),
        (
            any::<bool>(),
            qos(),
            any::<bool>(),
            topic_name(),
            id.clone(),
            bytes(300)
        )
            .prop_map(|(dup, qos, retain, topic, pkid, payload)| Owned::Publish {
                dup,
                qos,
                retain,
                topic,
                pkid,
                payload
            }),
        (any::<u8>(), id.clone()).prop_map(|(k, i)| Owned::Id(k, i)),
        (
            id.clone(),
            proptest::collection::vec((topic_filter(), qos()), 1..5)
        )
            .prop_map(|(i, f)| Owned::Subscribe(i, f)),
        (id.clone(), proptest::collection::vec(suback_code(), 1..5))
            .prop_map(|(i, c)| Owned::SubAck(i, c)),
        (id, proptest::collection::vec(topic_filter(), 1..5))
            .prop_map(|(i, f)| Owned::Unsubscribe(i, f)),
        any::<u8>().prop_map(Owned::Empty),
    ]
}

/// When `bytes` decode, re-encoding the packet gives bytes that decode to the same packet.
fn check_reencode(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((packet, len))) = decode(bytes, usize::MAX) {
        prop_assert!(len <= bytes.len());
        let again = encode_vec(&packet).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(decode(&again, usize::MAX), Ok(Some((packet, again.len()))));
    }
    Ok(())
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(owned in owned_packet()) {
        with_packet(&owned, |packet| -> Result<(), TestCaseError> {
            let wire = encode_vec(&packet).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(decode(&wire, usize::MAX), Ok(Some((packet, wire.len()))));
            prop_assert_eq!(decode(&wire, wire.len()), Ok(Some((packet, wire.len()))));
            for end in 0..wire.len() {
                prop_assert_eq!(decode(&wire[..end], usize::MAX), Ok(None));
            }
            let header = fixed_header(&wire).unwrap().unwrap();
            prop_assert_eq!(header.packet_type(), packet.packet_type());
            prop_assert_eq!(header.packet_len(), wire.len());
            Ok(())
        })?;
    }

    #[test]
    fn corrupted_packets_never_panic(owned in owned_packet(), index in any::<usize>(), byte in any::<u8>()) {
        let wire = with_packet(&owned, |packet| encode_vec(&packet).unwrap());
        let mut corrupted = wire.clone();
        let index = index % corrupted.len();
        corrupted[index] = byte;
        check_reencode(&corrupted)?;
        // Cut short after the header: the declared length no longer matches.
        check_reencode(&corrupted[..index])?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(64)) {
        check_reencode(&bytes)?;
        let _ = fixed_header(&bytes);
        let _ = decode(&bytes, 8);
    }

    #[test]
    fn framed_arbitrary_bodies_never_panic(first in any::<u8>(), body in bytes(48)) {
        check_reencode(&frame(first, &body))?;
    }
}
