//! Tests of the codec: spec byte vectors per packet type, every error path, incomplete input,
//! and property tests (encode/decode round trips, decoding arbitrary bytes never panics).

use super::*;
use crate::QoS;
use crate::topic::TopicError;
use proptest::prelude::*;

mod connect;
mod control;
mod header;
mod proptests;
mod publish;
mod subscribe;
mod v5;

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
