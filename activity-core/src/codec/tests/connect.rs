//! CONNECT and CONNACK (sections 3.1 and 3.2): spec examples, every field, every error.

use super::*;

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
        protocol_name: crate::codec::ProtocolName::Mqtt,
        properties: crate::codec::Properties::EMPTY,
        protocol_level: 4,
        client_id: "c",
        clean_session: true,
        keep_alive: 10,
        username: Some("u"),
        password: Some(b"p"),
        will: Some(LastWill {
            properties: crate::codec::Properties::EMPTY,
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
        protocol_name: crate::codec::ProtocolName::Mqtt,
        properties: crate::codec::Properties::EMPTY,
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
        protocol_name: crate::codec::ProtocolName::Mqtt,
        properties: crate::codec::Properties::EMPTY,
        protocol_level: 4,
        client_id: "id",
        clean_session: false,
        keep_alive: 0xFFFF,
        username: Some("user"),
        password: None,
        will: Some(LastWill {
            properties: crate::codec::Properties::EMPTY,
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
    // of a level this codec does not speak (here 6, and garbage) is skipped.
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 6, 0xC2, 0, 30, 0x00, 0xFF, 0xFE,
    ];
    let wire = frame(0x10, &body);
    let expected = Connect {
        protocol_name: crate::codec::ProtocolName::Mqtt,
        properties: crate::codec::Properties::EMPTY,
        protocol_level: 6,
        client_id: "",
        clean_session: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
    };
    assert_eq!(decode_all(&wire), Ok(Packet::Connect(expected)));
    assert_eq!(expected.version(), None);
    // Level 3 belongs to `MQIsdp`: with the name `MQTT` it is another protocol too.
    body[6] = 3;
    let wire = frame(0x10, &body);
    let Packet::Connect(c) = decode_all(&wire).unwrap() else {
        panic!()
    };
    assert_eq!((c.protocol_level, c.client_id), (3, ""));
    assert_eq!(c.version(), None, "MQTT 3.1 is `MQIsdp` level 3");
    // The name is kept: the header re-encodes as it came.
    assert_eq!(c.protocol_name, ProtocolName::Mqtt);
    // Still truncated if the variable header is incomplete.
    assert_eq!(decode_err(&frame(0x10, &body[..9])), DecodeError::Truncated);
}

#[test]
fn connect_protocol_name_errors() {
    // Section 3.1.2.1: `MQTT`, or MQTT 3.1's `MQIsdp` (see the v5 tests); nothing else.
    let mut body = field(b"MQIsd");
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
        protocol_name: crate::codec::ProtocolName::Mqtt,
        properties: crate::codec::Properties::EMPTY,
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
        properties: crate::codec::Properties::EMPTY,
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
            properties: crate::codec::Properties::EMPTY,
            session_present: false,
            code: rc.as_u8(),
        });
        check_wire(packet, &[0x20, 0x02, 0x00, code]);
    }
    let packet = Packet::ConnAck(ConnAck {
        properties: crate::codec::Properties::EMPTY,
        session_present: true,
        code: ConnectReturnCode::Accepted.as_u8(),
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
