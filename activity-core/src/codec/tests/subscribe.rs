//! SUBSCRIBE, SUBACK and UNSUBSCRIBE (sections 3.8-3.10).

use super::*;

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
        properties: crate::codec::Properties::EMPTY,
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
            properties: crate::codec::Properties::EMPTY,
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
        properties: crate::codec::Properties::EMPTY,
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
            properties: crate::codec::Properties::EMPTY,
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
        properties: crate::codec::Properties::EMPTY,
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
            properties: crate::codec::Properties::EMPTY,
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
