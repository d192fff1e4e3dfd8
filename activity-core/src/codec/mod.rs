//! Zero-copy MQTT 3.1.1 codec for all 14 control packets (OASIS MQTT 3.1.1, chapters 1-3).
//!
//! [`decode`] reads one packet from the front of a byte slice; the decoded [`Packet`] borrows
//! its strings and payloads from that slice. [`Packet::encode`] writes a packet into a caller
//! buffer. Nothing allocates, nothing panics on any input.
//!
//! One file per packet type, each citing its section: `connect` (3.1), `connack` (3.2),
//! `publish` (3.3), `ack` (PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK, which carry only a
//! packet identifier: 3.4-3.7, 3.11), `subscribe` (3.8), `suback` (3.9), `unsubscribe` (3.10).
//! PINGREQ, PINGRESP and DISCONNECT (3.12-3.14) are a fixed header alone and live here; the
//! fixed header (2.2) is in `header`, the data representations (1.5) in `wire`.
//!
//! # Decisions
//!
//! - Incomplete input gives `Ok(None)`. The fixed header is checked as soon as it is complete
//!   (type, flags, remaining length, and the caller's size limit); the rest of the packet is
//!   checked once all of it has arrived.
//! - Non-minimal remaining-length encodings are accepted (see [`fixed_header`]).
//! - Strings must be well-formed UTF-8 without U+0000 (section 1.5.3); other control
//!   characters and non-characters are accepted (the spec only says "SHOULD NOT").
//! - A CONNECT with protocol name `MQTT` and a level other than 4 decodes (see [`Connect`]) so
//!   that a server can answer CONNACK 0x01; any other protocol name, `MQIsdp` included, is
//!   [`DecodeError::InvalidProtocolName`].
//! - Encoding refuses what decoding would refuse, so a successfully encoded packet decodes to
//!   an equal packet (except a CONNECT whose level is not 4: its payload is not decoded).
//!
//! ```
//! use activity_core::codec::{decode, Packet, Publish};
//! use activity_core::QoS;
//!
//! let publish = Packet::Publish(Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: "a/b",
//!     pkid: Some(10),
//!     payload: b"hi",
//! });
//! let mut buf = [0u8; 64];
//! let len = publish.encode(&mut buf)?;
//! assert_eq!(&buf[..len], &[0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']);
//!
//! // A prefix is not an error, just not a packet yet.
//! assert_eq!(decode(&buf[..len - 1], 1024)?, None);
//! assert_eq!(decode(&buf[..len], 1024)?, Some((publish, len)));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

mod ack;
mod connack;
mod connect;
mod error;
mod header;
mod properties;
mod publish;
mod suback;
mod subscribe;
mod unsubscribe;
mod wire;

#[cfg(test)]
mod tests;

pub use connack::{ConnAck, ConnectReturnCode};
pub use connect::{Connect, LastWill, PROTOCOL_LEVEL};
pub use error::{DecodeError, EncodeError};
pub use header::{FixedHeader, PacketType, fixed_header};
pub use properties::{
    Context, MAX_VAR_INT, Properties, PropertiesIter, Property, encode_properties, properties_len,
};
pub use publish::Publish;
pub use suback::{SubAck, SubAckCode, SubAckCodes, SubAckCodesIter};
pub use subscribe::{Subscribe, SubscribeFilters, SubscribeFiltersIter};
pub use unsubscribe::{Unsubscribe, UnsubscribeFilters, UnsubscribeFiltersIter};
pub use wire::MAX_REMAINING_LENGTH;

use wire::{Reader, Writer};

/// One MQTT 3.1.1 control packet, borrowing its strings and payloads (section 2.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Packet<'a> {
    /// CONNECT: client request to connect (section 3.1).
    Connect(Connect<'a>),
    /// CONNACK: connect acknowledgement (section 3.2).
    ConnAck(ConnAck),
    /// PUBLISH: an application message (section 3.3).
    Publish(Publish<'a>),
    /// PUBACK with its packet identifier (section 3.4).
    PubAck(u16),
    /// PUBREC with its packet identifier (section 3.5).
    PubRec(u16),
    /// PUBREL with its packet identifier (section 3.6).
    PubRel(u16),
    /// PUBCOMP with its packet identifier (section 3.7).
    PubComp(u16),
    /// SUBSCRIBE: subscribe request (section 3.8).
    Subscribe(Subscribe<'a>),
    /// SUBACK: subscribe acknowledgement (section 3.9).
    SubAck(SubAck<'a>),
    /// UNSUBSCRIBE: unsubscribe request (section 3.10).
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK with its packet identifier (section 3.11).
    UnsubAck(u16),
    /// PINGREQ, `0xC0 0x00` (section 3.12).
    PingReq,
    /// PINGRESP, `0xD0 0x00` (section 3.13).
    PingResp,
    /// DISCONNECT, `0xE0 0x00` (section 3.14).
    Disconnect,
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete packet, or the packet and the
/// number of bytes it took. Returns [`DecodeError::PacketTooLarge`] as soon as the fixed header
/// declares a packet (header included) longer than `max_packet_size`, before its body arrives,
/// and another error for bytes that can never become a valid packet (see [`DecodeError`]).
/// Errors after the fixed header are reported once the whole packet has arrived. Never panics.
pub fn decode(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some(header) = fixed_header(buf)? else {
        return Ok(None);
    };
    let size = header.packet_len();
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    let Some(body) = buf.get(header.header_len()..size) else {
        return Ok(None);
    };
    let packet = Packet::decode_body(header, body)?;
    trace!(
        "decoded packet type {} of {} bytes",
        header.packet_type().as_u8(),
        size
    );
    Ok(Some((packet, size)))
}

impl<'a> Packet<'a> {
    /// The packet's control packet type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }

    /// Decodes the body (everything after the fixed header) of a packet of type `header`.
    fn decode_body(header: FixedHeader, body: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(match header.packet_type() {
            PacketType::Connect => Packet::Connect(Connect::decode(body)?),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(body)?),
            PacketType::Publish => Packet::Publish(Publish::decode(header.flags(), body)?),
            PacketType::PubAck => Packet::PubAck(ack::decode(body)?),
            PacketType::PubRec => Packet::PubRec(ack::decode(body)?),
            PacketType::PubRel => Packet::PubRel(ack::decode(body)?),
            PacketType::PubComp => Packet::PubComp(ack::decode(body)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(body)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(body)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(body)?),
            PacketType::UnsubAck => Packet::UnsubAck(ack::decode(body)?),
            // Sections 3.12-3.14: no variable header, no payload.
            PacketType::PingReq => empty(body, Packet::PingReq)?,
            PacketType::PingResp => empty(body, Packet::PingResp)?,
            PacketType::Disconnect => empty(body, Packet::Disconnect)?,
        })
    }

    /// Byte 1 of the fixed header: type and flags (section 2.2).
    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(publish) => publish.flags(),
            _ => self.packet_type().required_flags().unwrap_or(0),
        };
        (self.packet_type().as_u8() << 4) | flags
    }

    /// The remaining length, after checking that every field can go on the wire.
    fn body_len(&self) -> Result<usize, EncodeError> {
        match self {
            Packet::Connect(connect) => connect.body_len(),
            Packet::ConnAck(_) => Ok(2),
            Packet::Publish(publish) => publish.body_len(),
            Packet::PubAck(id)
            | Packet::PubRec(id)
            | Packet::PubRel(id)
            | Packet::PubComp(id)
            | Packet::UnsubAck(id) => ack::body_len(*id),
            Packet::Subscribe(subscribe) => subscribe.body_len(),
            Packet::SubAck(suback) => suback.body_len(),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.body_len(),
            Packet::PingReq | Packet::PingResp | Packet::Disconnect => Ok(0),
        }
    }

    /// Writes the body; [`Packet::body_len`] has checked the fields.
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(connect) => connect.write_body(w),
            Packet::ConnAck(connack) => connack.write_body(w),
            Packet::Publish(publish) => publish.write_body(w),
            Packet::PubAck(id)
            | Packet::PubRec(id)
            | Packet::PubRel(id)
            | Packet::PubComp(id)
            | Packet::UnsubAck(id) => w.u16(*id),
            Packet::Subscribe(subscribe) => subscribe.write_body(w),
            Packet::SubAck(suback) => suback.write_body(w),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.write_body(w),
            Packet::PingReq | Packet::PingResp | Packet::Disconnect => Ok(()),
        }
    }

    /// The remaining length and the whole packet's length.
    fn lengths(&self) -> Result<(usize, usize), EncodeError> {
        let body_len = self.body_len()?;
        if body_len > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge);
        }
        // Cannot overflow: body_len <= MAX_REMAINING_LENGTH.
        Ok((
            body_len,
            1 + wire::remaining_length_len(body_len) + body_len,
        ))
    }

    /// The number of bytes [`Packet::encode`] writes, or why the packet cannot be encoded.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.lengths().map(|(_, len)| len)
    }

    /// Encodes the packet into the front of `out` and returns the number of bytes written.
    ///
    /// Fails with [`EncodeError::BufferTooSmall`] before writing anything when `out` is too
    /// short, and with another [`EncodeError`] for a value the wire cannot carry or that
    /// [`decode`] would reject.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (body_len, len) = self.lengths()?;
        let out = out
            .get_mut(..len)
            .ok_or(EncodeError::BufferTooSmall { needed: len })?;
        let mut w = Writer::new(out);
        w.u8(self.first_byte())?;
        w.remaining_length(body_len)?;
        self.write_body(&mut w)?;
        debug_assert_eq!(w.position(), len, "encoded_len disagrees with encode");
        Ok(len)
    }
}

/// Checks that a packet made of a fixed header alone has an empty body (sections 3.12-3.14).
fn empty<'a>(body: &[u8], packet: Packet<'a>) -> Result<Packet<'a>, DecodeError> {
    Reader::new(body).finish()?;
    Ok(packet)
}

impl<'a> From<Connect<'a>> for Packet<'a> {
    fn from(connect: Connect<'a>) -> Self {
        Packet::Connect(connect)
    }
}

impl From<ConnAck> for Packet<'_> {
    fn from(connack: ConnAck) -> Self {
        Packet::ConnAck(connack)
    }
}

impl<'a> From<Publish<'a>> for Packet<'a> {
    fn from(publish: Publish<'a>) -> Self {
        Packet::Publish(publish)
    }
}

impl<'a> From<Subscribe<'a>> for Packet<'a> {
    fn from(subscribe: Subscribe<'a>) -> Self {
        Packet::Subscribe(subscribe)
    }
}

impl<'a> From<SubAck<'a>> for Packet<'a> {
    fn from(suback: SubAck<'a>) -> Self {
        Packet::SubAck(suback)
    }
}

impl<'a> From<Unsubscribe<'a>> for Packet<'a> {
    fn from(unsubscribe: Unsubscribe<'a>) -> Self {
        Packet::Unsubscribe(unsubscribe)
    }
}
