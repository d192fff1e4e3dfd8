//! Zero-copy MQTT codec for MQTT 3.1, 3.1.1 and 5.0: every control packet, MQTT 5
//! properties and reason codes included (OASIS MQTT 3.1.1 chapters 1-3, OASIS MQTT 5.0
//! chapters 1-3; MQTT 3.1 differs from 3.1.1 only in its CONNECT).
//!
//! [`decode_with`] reads one packet of a connection speaking a [`Version`] from the front of a
//! byte slice ([`decode`] is MQTT 3.1.1); the decoded [`Packet`] borrows its strings, payloads
//! and property blocks from that slice. [`Packet::encode_with`] writes a packet into a caller
//! buffer ([`Packet::encode`] for MQTT 3.1.1). Nothing allocates, nothing panics on any input.
//!
//! One file per packet type, each citing its section: `connect` (3.1), `connack` (3.2),
//! `publish` (3.3), `ack` (PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: 3.4-3.7, 3.11),
//! `subscribe` (3.8), `suback` (3.9), `unsubscribe` (3.10), `disconnect` (3.14), `auth`
//! (MQTT 5.0 3.15). PINGREQ and PINGRESP (3.12-3.13) are a fixed header alone and live here;
//! the fixed header (2.2) is in `header`, MQTT 5 properties (5.0 2.2.2) in `properties`, the
//! data representations (1.5) in `wire`.
//!
//! # Decisions
//!
//! - Incomplete input gives `Ok(None)`. The fixed header is checked as soon as it is complete
//!   (type, flags, remaining length, and the caller's size limit); the rest of the packet is
//!   checked once all of it has arrived.
//! - Non-minimal remaining-length encodings are accepted (see [`fixed_header`]).
//! - Strings must be well-formed UTF-8 without U+0000 (section 1.5.3); other control
//!   characters and non-characters are accepted (the spec only says "SHOULD NOT").
//! - A CONNECT names its version: `MQIsdp` level 3, `MQTT` level 4 or 5. A known name with
//!   another level decodes (see [`Connect`]) so that a server can answer CONNACK 0x01; any
//!   other name is [`DecodeError::InvalidProtocolName`].
//! - MQTT 5 property blocks are checked when decoded (table 2-4: known identifier, allowed in
//!   the packet, value in range, no forbidden repeat) and read in place afterwards; reason
//!   codes are checked against the table of their packet type.
//!   [`DecodeError::is_protocol_error`] separates MQTT 5's Protocol Errors from Malformed
//!   Packets.
//! - Encoding refuses what decoding would refuse, so a successfully encoded packet decodes to
//!   an equal packet (except a CONNECT whose level is not one of the three: its payload is not
//!   decoded, and properties, which an MQTT 3.1.1 encoding leaves out).
//!
//! ```
//! use activity_core::codec::{
//!     Context, Packet, Properties, Property, Publish, Version, decode, decode_with,
//!     encode_properties,
//! };
//! use activity_core::QoS;
//!
//! let publish = Packet::Publish(Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: "a/b",
//!     pkid: Some(10),
//!     payload: b"hi",
//!     properties: Properties::EMPTY,
//! });
//! let mut buf = [0u8; 64];
//! let len = publish.encode(&mut buf)?;
//! assert_eq!(&buf[..len], &[0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']);
//!
//! // A prefix is not an error, just not a packet yet.
//! assert_eq!(decode(&buf[..len - 1], 1024)?, None);
//! assert_eq!(decode(&buf[..len], 1024)?, Some((publish, len)));
//!
//! // The same message for an MQTT 5 connection, with a user property.
//! let mut raw = [0u8; 16];
//! let n = encode_properties(&[Property::UserProperty("k", "v")], &mut raw)?;
//! let properties = Properties::parse(&raw[..n], Context::Publish)?;
//! let Packet::Publish(p) = publish else { unreachable!() };
//! let v5 = Packet::Publish(Publish { properties, ..p });
//! let len = v5.encode_with(&mut buf, Version::V5)?;
//! let Some((Packet::Publish(back), _)) = decode_with(&buf[..len], 1024, Version::V5)? else {
//!     panic!("a PUBLISH");
//! };
//! assert_eq!(back.properties.user_property("k"), Some("v"));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
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

pub use ack::{Ack, UnsubAck};
pub use auth::Auth;
pub use connack::{ConnAck, ConnectReturnCode};
pub use connect::{Connect, LastWill, PROTOCOL_LEVEL, ProtocolName};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError};
pub use header::{FixedHeader, PacketType, fixed_header};
pub use properties::{
    Context, MAX_VAR_INT, Properties, PropertiesIter, Property, encode_properties, properties_len,
};
pub use publish::Publish;
pub use suback::{SubAck, SubAckCode, SubAckCodes, SubAckCodesIter};
pub use subscribe::{
    RetainHandling, Subscribe, SubscribeFilters, SubscribeFiltersIter, SubscriptionOptions,
};
pub use unsubscribe::{Unsubscribe, UnsubscribeFilters, UnsubscribeFiltersIter};
pub use wire::MAX_REMAINING_LENGTH;

use wire::{Reader, Writer};

/// The protocol version a connection speaks, from its CONNECT (MQTT 5.0 section 3.1.2.2).
///
/// MQTT 3.1 and 3.1.1 share every packet layout after the CONNECT; MQTT 5 adds properties and
/// reason codes to most packets, and the AUTH packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Version {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V3_1 = 3,
    /// MQTT 3.1.1 (protocol name `MQTT`, level 4).
    V3_1_1 = 4,
    /// MQTT 5.0 (protocol name `MQTT`, level 5).
    V5 = 5,
}

impl Version {
    /// The version of protocol level `level`, if it is one this codec speaks.
    pub const fn from_level(level: u8) -> Option<Version> {
        match level {
            3 => Some(Version::V3_1),
            4 => Some(Version::V3_1_1),
            5 => Some(Version::V5),
            _ => None,
        }
    }

    /// The protocol level byte (section 3.1.2.2).
    pub const fn level(self) -> u8 {
        self as u8
    }

    /// Whether packets carry MQTT 5 properties and reason codes.
    pub const fn is_v5(self) -> bool {
        matches!(self, Version::V5)
    }
}

/// One MQTT control packet of any version, borrowing its strings and payloads (section 2.2.1).
///
/// The MQTT 5 parts (properties, reason codes) are empty or "success" in a packet of MQTT 3.1
/// or 3.1.1, and encoding for those versions leaves them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Packet<'a> {
    /// CONNECT: client request to connect (section 3.1).
    Connect(Connect<'a>),
    /// CONNACK: connect acknowledgement (section 3.2).
    ConnAck(ConnAck<'a>),
    /// PUBLISH: an application message (section 3.3).
    Publish(Publish<'a>),
    /// PUBACK: a QoS 1 publish is done (section 3.4).
    PubAck(Ack<'a>),
    /// PUBREC: a QoS 2 publish arrived (section 3.5).
    PubRec(Ack<'a>),
    /// PUBREL: a QoS 2 publish is released (section 3.6).
    PubRel(Ack<'a>),
    /// PUBCOMP: a QoS 2 publish is done (section 3.7).
    PubComp(Ack<'a>),
    /// SUBSCRIBE: subscribe request (section 3.8).
    Subscribe(Subscribe<'a>),
    /// SUBACK: subscribe acknowledgement (section 3.9).
    SubAck(SubAck<'a>),
    /// UNSUBSCRIBE: unsubscribe request (section 3.10).
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK: unsubscribe acknowledgement (section 3.11).
    UnsubAck(UnsubAck<'a>),
    /// PINGREQ, `0xC0 0x00` (section 3.12).
    PingReq,
    /// PINGRESP, `0xD0 0x00` (section 3.13).
    PingResp,
    /// DISCONNECT (section 3.14): `0xE0 0x00` before MQTT 5.
    Disconnect(Disconnect<'a>),
    /// AUTH: enhanced authentication (MQTT 5.0 section 3.15).
    Auth(Auth<'a>),
}

/// Decodes one MQTT 3.1.1 packet from the front of `buf`: [`decode_with`] for
/// [`Version::V3_1_1`] (which MQTT 3.1 shares after the CONNECT).
pub fn decode(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    decode_with(buf, max_packet_size, Version::V3_1_1)
}

/// Decodes one packet of a connection speaking `version` from the front of `buf` (a CONNECT
/// decodes whatever its own level says).
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete packet, or the packet and the
/// number of bytes it took. Returns [`DecodeError::PacketTooLarge`] as soon as the fixed header
/// declares a packet (header included) longer than `max_packet_size`, before its body arrives,
/// and another error for bytes that can never become a valid packet (see [`DecodeError`]).
/// Errors after the fixed header are reported once the whole packet has arrived. Never panics.
pub fn decode_with(
    buf: &[u8],
    max_packet_size: usize,
    version: Version,
) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    decode_packet::<false>(buf, max_packet_size, version)
}

/// Decodes one packet a client sent to a server, as [`decode_with`] does, except that a packet
/// type only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) is
/// [`DecodeError::ServerPacket`] (a Protocol Error, sections 3.2-3.13) once the whole packet has
/// arrived, without decoding its body.
///
/// The server engine decodes with this one, so a build that links only the engine does not
/// link those four decoders. Never panics.
pub fn decode_from_client(
    buf: &[u8],
    max_packet_size: usize,
    version: Version,
) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    decode_packet::<true>(buf, max_packet_size, version)
}

/// [`decode_with`] (`FROM_CLIENT` false) and [`decode_from_client`] (true).
fn decode_packet<const FROM_CLIENT: bool>(
    buf: &[u8],
    max_packet_size: usize,
    version: Version,
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
    let packet = Packet::decode_body::<FROM_CLIENT>(header, body, version)?;
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
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes the body (everything after the fixed header) of a packet of type `header`;
    /// `FROM_CLIENT` refuses the four types only a server sends, without their decoders.
    fn decode_body<const FROM_CLIENT: bool>(
        header: FixedHeader,
        body: &'a [u8],
        version: Version,
    ) -> Result<Self, DecodeError> {
        let v = version;
        let packet_type = header.packet_type();
        // MQTT 5 AUTH too: the engine offers no authentication method (a CONNECT that names
        // one is refused with 0x8C), and a client that named none may not send AUTH (5.0
        // section 4.12), so its body is not decoded either.
        if FROM_CLIENT
            && (matches!(
                packet_type,
                PacketType::ConnAck
                    | PacketType::SubAck
                    | PacketType::UnsubAck
                    | PacketType::PingResp
            ) || (packet_type == PacketType::Auth && v.is_v5()))
        {
            return Err(DecodeError::ServerPacket(packet_type.as_u8()));
        }
        Ok(match packet_type {
            PacketType::Connect => Packet::Connect(Connect::decode(body)?),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(body, v)?),
            PacketType::Publish => Packet::Publish(Publish::decode(header.flags(), body, v)?),
            PacketType::PubAck => Packet::PubAck(Ack::decode(body, v, ack::PUBACK)?),
            PacketType::PubRec => Packet::PubRec(Ack::decode(body, v, ack::PUBACK)?),
            PacketType::PubRel => Packet::PubRel(Ack::decode(body, v, ack::PUBREL)?),
            PacketType::PubComp => Packet::PubComp(Ack::decode(body, v, ack::PUBREL)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(body, v)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(body, v)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(body, v)?),
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(body, v)?),
            // Sections 3.12-3.13: no variable header, no payload.
            PacketType::PingReq => empty(body, Packet::PingReq)?,
            PacketType::PingResp => empty(body, Packet::PingResp)?,
            PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(body, v)?),
            PacketType::Auth if v.is_v5() => Packet::Auth(Auth::decode(body)?),
            // Reserved before MQTT 5 (3.1.1 section 2.2.1).
            PacketType::Auth => return Err(DecodeError::InvalidPacketType(15)),
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

    /// Whether the packet is one of the types encoded by the instantiations with `SUB_AUTH`:
    /// SUBSCRIBE, SUBACK, UNSUBSCRIBE and AUTH. The engine sends none of them (it writes its
    /// SUBACKs itself, [`Packet::encode_not_sub_auth`]), and only clients subscribe; so a program
    /// whose other encoding call sites know their packet type (the firmware) does not link
    /// those four encoders at all (1,248 B).
    const fn is_sub_auth(&self) -> bool {
        matches!(
            self,
            Packet::Subscribe(_) | Packet::SubAck(_) | Packet::Unsubscribe(_) | Packet::Auth(_)
        )
    }

    /// The remaining length, after checking that every field can go on the wire. Each
    /// instantiation handles its own group of types (see [`Packet::is_sub_auth`]); the other
    /// group never reaches it.
    fn body_len<const SUB_AUTH: bool>(&self, v: Version) -> Result<usize, EncodeError> {
        match self {
            Packet::Subscribe(subscribe) if SUB_AUTH => subscribe.body_len(v),
            Packet::SubAck(suback) if SUB_AUTH => suback.body_len(v),
            Packet::Unsubscribe(unsubscribe) if SUB_AUTH => unsubscribe.body_len(v),
            Packet::Auth(auth) if SUB_AUTH && v.is_v5() => auth.body_len(),
            Packet::Auth(_) if SUB_AUTH => Err(EncodeError::NotInVersion),
            Packet::Connect(connect) if !SUB_AUTH => connect.body_len(),
            Packet::ConnAck(connack) if !SUB_AUTH => connack.body_len(v),
            Packet::Publish(publish) if !SUB_AUTH => publish.body_len(v),
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack)
                if !SUB_AUTH =>
            {
                ack.body_len(v)
            }
            Packet::UnsubAck(unsuback) if !SUB_AUTH => unsuback.body_len(v),
            Packet::PingReq | Packet::PingResp if !SUB_AUTH => Ok(0),
            Packet::Disconnect(disconnect) if !SUB_AUTH => disconnect.body_len(v),
            // Not reached: `encode_with` and `encoded_len_with` pick the group's instantiation.
            _ => Err(EncodeError::NotInVersion),
        }
    }

    /// Writes the body; [`Packet::body_len`] has checked the fields.
    fn write_body<const SUB_AUTH: bool>(
        &self,
        w: &mut Writer<'_>,
        v: Version,
    ) -> Result<(), EncodeError> {
        match self {
            Packet::Subscribe(subscribe) if SUB_AUTH => subscribe.write_body(w, v),
            Packet::SubAck(suback) if SUB_AUTH => suback.write_body(w, v),
            Packet::Unsubscribe(unsubscribe) if SUB_AUTH => unsubscribe.write_body(w, v),
            Packet::Auth(auth) if SUB_AUTH => auth.write_body(w),
            Packet::Connect(connect) if !SUB_AUTH => connect.write_body(w),
            Packet::ConnAck(connack) if !SUB_AUTH => connack.write_body(w, v),
            Packet::Publish(publish) if !SUB_AUTH => publish.write_body(w, v),
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack)
                if !SUB_AUTH =>
            {
                ack.write_body(w, v)
            }
            Packet::UnsubAck(unsuback) if !SUB_AUTH => unsuback.write_body(w, v),
            Packet::PingReq | Packet::PingResp if !SUB_AUTH => Ok(()),
            Packet::Disconnect(disconnect) if !SUB_AUTH => disconnect.write_body(w, v),
            // Not reached, as in `body_len`.
            _ => Err(EncodeError::NotInVersion),
        }
    }

    /// The remaining length and the whole packet's length.
    fn lengths<const SUB_AUTH: bool>(&self, v: Version) -> Result<(usize, usize), EncodeError> {
        let body_len = self.body_len::<SUB_AUTH>(v)?;
        if body_len > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge);
        }
        // Cannot overflow: body_len <= MAX_REMAINING_LENGTH.
        Ok((
            body_len,
            1 + wire::remaining_length_len(body_len) + body_len,
        ))
    }

    /// [`Packet::encode_with`] for a packet that is not SUBSCRIBE, SUBACK, UNSUBSCRIBE or AUTH
    /// (those give [`EncodeError::NotInVersion`]): for a caller that never sends them, without
    /// linking their encoders.
    pub(crate) fn encode_not_sub_auth(
        &self,
        out: &mut [u8],
        version: Version,
    ) -> Result<usize, EncodeError> {
        debug_assert!(!self.is_sub_auth(), "a packet of the other group");
        self.encode_group::<false>(out, version)
    }

    /// [`Packet::encode_with`] for one group of types.
    fn encode_group<const SUB_AUTH: bool>(
        &self,
        out: &mut [u8],
        version: Version,
    ) -> Result<usize, EncodeError> {
        let (body_len, len) = self.lengths::<SUB_AUTH>(version)?;
        let out = out
            .get_mut(..len)
            .ok_or(EncodeError::BufferTooSmall { needed: len })?;
        let mut w = Writer::new(out);
        w.u8(self.first_byte())?;
        w.remaining_length(body_len)?;
        self.write_body::<SUB_AUTH>(&mut w, version)?;
        debug_assert_eq!(w.position(), len, "encoded_len disagrees with encode");
        Ok(len)
    }

    /// The number of bytes [`Packet::encode`] writes, or why the packet cannot be encoded.
    #[inline(always)]
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.encoded_len_with(Version::V3_1_1)
    }

    /// The number of bytes [`Packet::encode_with`] writes for `version`.
    #[inline(always)]
    pub fn encoded_len_with(&self, version: Version) -> Result<usize, EncodeError> {
        let lengths = if self.is_sub_auth() {
            self.lengths::<true>(version)
        } else {
            self.lengths::<false>(version)
        };
        lengths.map(|(_, len)| len)
    }

    /// Encodes the packet for MQTT 3.1.1 (and 3.1): [`Packet::encode_with`] for
    /// [`Version::V3_1_1`].
    #[inline(always)]
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.encode_with(out, Version::V3_1_1)
    }

    /// Encodes the packet into the front of `out` as a connection speaking `version` sends it
    /// (a CONNECT as its own level says), and returns the number of bytes written.
    ///
    /// Fails with [`EncodeError::BufferTooSmall`] before writing anything when `out` is too
    /// short, and with another [`EncodeError`] for a value the wire cannot carry or that
    /// [`decode_with`] would reject. For MQTT 3.1 and 3.1.1, properties are left out, and a
    /// reason code those versions cannot carry is [`EncodeError::NotInVersion`].
    // Always inlined: a call site that knows the variant links one group's encoder only.
    #[inline(always)]
    pub fn encode_with(&self, out: &mut [u8], version: Version) -> Result<usize, EncodeError> {
        if self.is_sub_auth() {
            self.encode_group::<true>(out, version)
        } else {
            self.encode_group::<false>(out, version)
        }
    }
}

/// Checks that a packet made of a fixed header alone has an empty body (sections 3.12-3.13).
fn empty<'a>(body: &[u8], packet: Packet<'a>) -> Result<Packet<'a>, DecodeError> {
    Reader::new(body).finish()?;
    Ok(packet)
}

impl<'a> From<Connect<'a>> for Packet<'a> {
    fn from(connect: Connect<'a>) -> Self {
        Packet::Connect(connect)
    }
}

impl<'a> From<ConnAck<'a>> for Packet<'a> {
    fn from(connack: ConnAck<'a>) -> Self {
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
