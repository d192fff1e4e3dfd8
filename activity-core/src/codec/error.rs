//! The errors of [`decode`](super::decode) and [`Packet::encode`](super::Packet::encode).

use core::fmt;

use crate::topic::TopicError;

/// Why bytes can never become a valid MQTT 3.1.1 control packet.
///
/// Each variant is specific enough for a server to log a reason and close the connection
/// (the 3.1.1 answer to every malformed packet, section 4.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The fixed header declares a packet of `size` bytes, more than the caller's `max`.
    PacketTooLarge {
        /// Total packet size declared by the fixed header (header included), in bytes.
        size: usize,
        /// The caller's limit, in bytes.
        max: usize,
    },
    /// The remaining length does not end within 4 bytes (section 2.2.3).
    MalformedRemainingLength,
    /// The control packet type (high nibble of byte 1) is reserved: 0 or 15 (section 2.2.1).
    InvalidPacketType(u8),
    /// The fixed-header flags are not those section 2.2.2 requires for the packet type, or a
    /// QoS 0 PUBLISH has DUP set (section 3.3.1.1).
    InvalidFlags,
    /// A string is not well-formed UTF-8 or contains U+0000 (section 1.5.3).
    InvalidUtf8,
    /// A topic name or topic filter breaks the rules of section 4.7.
    InvalidTopic(TopicError),
    /// The CONNECT protocol name is not `MQTT` (section 3.1.2.1).
    InvalidProtocolName,
    /// The CONNECT flags are inconsistent: reserved bit set, Will QoS or Will Retain set
    /// without the Will Flag, or Password Flag without User Name Flag (section 3.1.2.3-3.1.2.9).
    InvalidConnectFlags,
    /// A packet identifier is 0 (section 2.3.1).
    ZeroPacketId,
    /// A QoS field holds 3 (sections 3.1.2.6, 3.3.1.2, 3.8.3.1).
    InvalidQoS,
    /// Bits the spec reserves are set: CONNACK acknowledge flags (3.2.2.1) or SUBSCRIBE
    /// requested-QoS bits 7-2 (3.8.3.1).
    ReservedBitsSet,
    /// The CONNACK return code is a reserved value, 6 or above (section 3.2.2.3).
    InvalidConnectReturnCode(u8),
    /// A SUBACK return code is not 0x00, 0x01, 0x02 or 0x80 (section 3.9.3).
    InvalidSubAckCode(u8),
    /// A SUBSCRIBE or UNSUBSCRIBE carries no topic filter, or a SUBACK no return code
    /// (sections 3.8.3, 3.10.3, 3.9.3).
    EmptySubscription,
    /// A field runs past the end declared by the remaining length (section 2.2.3).
    Truncated,
    /// Bytes are left over inside the declared remaining length after the last field.
    TrailingBytes,
    /// A Variable Byte Integer does not end within 4 bytes (MQTT 5.0 section 1.5.5).
    MalformedVarInt,
    /// An MQTT 5 property identifier that table 2-4 does not define (section 2.2.2.2).
    UnknownProperty(u8),
    /// An MQTT 5 property in a packet that may not carry it (table 2-4).
    PropertyNotAllowed(u8),
    /// An MQTT 5 property given twice where the spec allows it once (a Protocol Error).
    DuplicateProperty(u8),
    /// An MQTT 5 property with a value out of its range, such as Receive Maximum 0 (a
    /// Protocol Error).
    InvalidPropertyValue(u8),
    /// An MQTT 5 reason code the packet type does not define (the tables of section 3).
    InvalidReasonCode(u8),
    /// MQTT 5 subscription options that break a rule: Retain Handling 3, or No Local on a
    /// shared subscription (5.0 section 3.8.3.1; a Protocol Error).
    InvalidSubscriptionOptions,
    /// A packet type a client may not send to the engine (the value is the type number):
    /// one only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP), or an MQTT 5 AUTH (the
    /// engine offers no authentication method, 5.0 section 4.12); reported by
    /// [`decode_from_client`](super::decode_from_client) without decoding the body (a
    /// Protocol Error).
    ServerPacket(u8),
}

impl DecodeError {
    /// Whether MQTT 5 calls this a Protocol Error (reason code 0x82) rather than a Malformed
    /// Packet (0x81): the bytes have the right form but break a rule (sections 2.2.2.2, 4.13).
    pub const fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            DecodeError::DuplicateProperty(_)
                | DecodeError::InvalidPropertyValue(_)
                | DecodeError::InvalidSubscriptionOptions
                | DecodeError::ZeroPacketId
                | DecodeError::ServerPacket(_)
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the limit of {max} bytes")
            }
            DecodeError::MalformedRemainingLength => f.write_str("malformed remaining length"),
            DecodeError::InvalidPacketType(t) => write!(f, "reserved packet type {t}"),
            DecodeError::ServerPacket(t) => write!(f, "packet type {t} from a client"),
            DecodeError::InvalidFlags => f.write_str("invalid fixed header flags"),
            DecodeError::InvalidUtf8 => f.write_str("invalid UTF-8 string"),
            DecodeError::InvalidTopic(e) => write!(f, "invalid topic: {e}"),
            DecodeError::InvalidProtocolName => f.write_str("protocol name is not MQTT"),
            DecodeError::InvalidConnectFlags => f.write_str("invalid CONNECT flags"),
            DecodeError::ZeroPacketId => f.write_str("packet identifier is 0"),
            DecodeError::InvalidQoS => f.write_str("QoS 3 is not a valid QoS"),
            DecodeError::ReservedBitsSet => f.write_str("reserved bits are set"),
            DecodeError::InvalidConnectReturnCode(c) => {
                write!(f, "reserved CONNACK return code {c:#04x}")
            }
            DecodeError::InvalidSubAckCode(c) => write!(f, "invalid SUBACK return code {c:#04x}"),
            DecodeError::EmptySubscription => f.write_str("no topic filter or return code"),
            DecodeError::Truncated => f.write_str("field runs past the remaining length"),
            DecodeError::TrailingBytes => f.write_str("unexpected bytes after the last field"),
            DecodeError::MalformedVarInt => f.write_str("malformed variable byte integer"),
            DecodeError::UnknownProperty(id) => write!(f, "unknown property {id:#04x}"),
            DecodeError::PropertyNotAllowed(id) => {
                write!(f, "property {id:#04x} not allowed in this packet")
            }
            DecodeError::DuplicateProperty(id) => write!(f, "property {id:#04x} given twice"),
            DecodeError::InvalidPropertyValue(id) => {
                write!(f, "property {id:#04x} has an invalid value")
            }
            DecodeError::InvalidSubscriptionOptions => f.write_str("invalid subscription options"),
            DecodeError::InvalidReasonCode(code) => {
                write!(f, "reason code {code:#04x} not defined for this packet")
            }
        }
    }
}

impl core::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DecodeError::InvalidTopic(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a packet cannot be encoded.
///
/// Apart from [`BufferTooSmall`](EncodeError::BufferTooSmall), these say the packet holds a
/// value the wire cannot carry or that [`decode`](super::decode) would reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the `needed` bytes of the encoded packet.
    BufferTooSmall {
        /// The encoded packet's length, in bytes.
        needed: usize,
    },
    /// A string or binary field is longer than 65535 bytes (section 1.5.3).
    StringTooLong,
    /// A string contains U+0000 (section 1.5.3).
    InvalidString,
    /// The remaining length exceeds 268,435,455 bytes (section 2.2.3).
    PacketTooLarge,
    /// A packet identifier is 0 (section 2.3.1), or a PUBLISH has one at QoS 0 or lacks one at
    /// QoS 1 or 2 (section 2.3.1).
    InvalidPacketId,
    /// A topic name or topic filter breaks the rules of section 4.7.
    InvalidTopic(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE has no topic filter, or a SUBACK no return code.
    EmptySubscription,
    /// Flags that cannot go together: DUP on a QoS 0 PUBLISH (3.3.1.1), or a CONNECT password
    /// without a user name (3.1.2.9).
    InvalidFlags,
    /// The packet holds what the protocol version it is encoded for cannot carry: an AUTH or
    /// a failure reason code before MQTT 5, or a reason code the packet type does not define.
    NotInVersion,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small, {needed} bytes needed")
            }
            EncodeError::StringTooLong => f.write_str("string longer than 65535 bytes"),
            EncodeError::InvalidString => f.write_str("string contains U+0000"),
            EncodeError::PacketTooLarge => f.write_str("remaining length over 268435455 bytes"),
            EncodeError::InvalidPacketId => {
                f.write_str("packet identifier is 0 or does not match QoS")
            }
            EncodeError::InvalidTopic(e) => write!(f, "invalid topic: {e}"),
            EncodeError::EmptySubscription => f.write_str("no topic filter or return code"),
            EncodeError::InvalidFlags => f.write_str("inconsistent flags"),
            EncodeError::NotInVersion => {
                f.write_str("not expressible in the protocol version encoded for")
            }
        }
    }
}

impl core::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            EncodeError::InvalidTopic(e) => Some(e),
            _ => None,
        }
    }
}
