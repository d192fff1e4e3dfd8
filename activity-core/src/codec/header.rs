//! The fixed header every control packet starts with (MQTT 3.1.1 section 2.2).

use super::DecodeError;
use crate::QoS;

/// The 14 control packet types (section 2.2.1, table 2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum PacketType {
    /// Client request to connect to the server (0x1, section 3.1).
    Connect = 1,
    /// Connect acknowledgement (0x2, section 3.2).
    ConnAck = 2,
    /// Publish message (0x3, section 3.3).
    Publish = 3,
    /// Publish acknowledgement, QoS 1 (0x4, section 3.4).
    PubAck = 4,
    /// Publish received, QoS 2 part 1 (0x5, section 3.5).
    PubRec = 5,
    /// Publish release, QoS 2 part 2 (0x6, section 3.6).
    PubRel = 6,
    /// Publish complete, QoS 2 part 3 (0x7, section 3.7).
    PubComp = 7,
    /// Client subscribe request (0x8, section 3.8).
    Subscribe = 8,
    /// Subscribe acknowledgement (0x9, section 3.9).
    SubAck = 9,
    /// Unsubscribe request (0xA, section 3.10).
    Unsubscribe = 10,
    /// Unsubscribe acknowledgement (0xB, section 3.11).
    UnsubAck = 11,
    /// Ping request (0xC, section 3.12).
    PingReq = 12,
    /// Ping response (0xD, section 3.13).
    PingResp = 13,
    /// Client is disconnecting (0xE, section 3.14).
    Disconnect = 14,
    /// AUTH: enhanced authentication exchange (MQTT 5.0 section 3.15); reserved in MQTT 3.1.1.
    Auth = 15,
}

impl PacketType {
    /// The packet type for a wire value (the high nibble of byte 1), or `None` for the reserved
    /// value 0 and anything above 15 (15 is AUTH, which only MQTT 5 allows: the packet decoder
    /// refuses it for the other versions).
    pub const fn from_u8(value: u8) -> Option<PacketType> {
        Some(match value {
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }

    /// The wire value, 1 to 14.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The fixed-header flags the type requires (section 2.2.2, table 2.2), or `None` for
    /// PUBLISH, whose flags carry DUP, QoS and RETAIN.
    pub const fn required_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

/// The decoded fixed header of a control packet (section 2.2).
///
/// Returned by [`fixed_header`]; its flags have been checked against section 2.2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedHeader {
    packet_type: PacketType,
    flags: u8,
    remaining_length: usize,
    header_len: usize,
}

impl FixedHeader {
    /// The control packet type.
    pub const fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    /// The low nibble of byte 1 (section 2.2.2).
    pub const fn flags(&self) -> u8 {
        self.flags
    }

    /// The number of bytes after the fixed header: variable header plus payload (section 2.2.3).
    pub const fn remaining_length(&self) -> usize {
        self.remaining_length
    }

    /// The length of the fixed header itself: 2 to 5 bytes.
    pub const fn header_len(&self) -> usize {
        self.header_len
    }

    /// The length of the whole packet: `header_len() + remaining_length()`.
    pub const fn packet_len(&self) -> usize {
        // Cannot overflow: header_len <= 5 and remaining_length <= 268_435_455.
        self.header_len + self.remaining_length
    }
}

/// Checks the flags nibble against section 2.2.2.
fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    match packet_type.required_flags() {
        Some(required) if flags == required => Ok(()),
        Some(_) => Err(DecodeError::InvalidFlags),
        None => {
            // PUBLISH: DUP (bit 3), QoS (bits 2-1), RETAIN (bit 0), section 3.3.1.
            let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
            if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
                return Err(DecodeError::InvalidFlags);
            }
            Ok(())
        }
    }
}

/// Decodes the fixed header at the start of `buf` (section 2.2).
///
/// Returns `Ok(None)` while `buf` is too short to hold the whole fixed header, and an error as
/// soon as the bytes present can never start a valid packet: a reserved packet type, flags
/// other than those section 2.2.2 requires, or a remaining length longer than 4 bytes.
///
/// Non-minimal remaining-length encodings (such as `0x80 0x00` for 0) are accepted: section
/// 2.2.3 of MQTT 3.1.1 gives the encoding algorithm and the 4-byte limit but, unlike MQTT 5,
/// does not require the shortest form. [`Packet::encode`](super::Packet::encode) always writes
/// the shortest form.
pub fn fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let type_nibble = first >> 4;
    let packet_type =
        PacketType::from_u8(type_nibble).ok_or(DecodeError::InvalidPacketType(type_nibble))?;
    let flags = first & 0x0F;
    check_flags(packet_type, flags)?;

    let mut remaining_length = 0usize;
    for (index, &byte) in rest.iter().take(4).enumerate() {
        remaining_length |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                packet_type,
                flags,
                remaining_length,
                header_len: index + 2,
            }));
        }
    }
    if rest.len() >= 4 {
        Err(DecodeError::MalformedRemainingLength)
    } else {
        Ok(None)
    }
}
