//! Fixed header (section 2.2): the remaining length, reserved types, exact flags, size limits.

use super::*;

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
        Ok(Some((Packet::PubAck(Ack::new(7)), 6)))
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
