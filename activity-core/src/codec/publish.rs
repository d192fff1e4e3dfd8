//! PUBLISH, an application message (MQTT 3.1.1 section 3.3).
//!
//! Fixed header `0x3_`: DUP (bit 3, 3.3.1.1), QoS (bits 2-1, 3.3.1.2), RETAIN (bit 0,
//! 3.3.1.3). Variable header (3.3.2): topic name, then a packet identifier only at QoS 1 and 2.
//! Payload (3.3.3): the rest of the packet, possibly empty.
//!
//! MQTT 5.0 puts the properties after the packet identifier (5.0 3.3.2.3), and allows an
//! empty topic name when a Topic Alias stands for it (5.0 3.3.2.3.4).

use super::properties::{Context, Properties};
use super::wire::{add, string_len};
use super::{DecodeError, EncodeError, Reader, Version, Writer};
use crate::QoS;
use crate::topic::validate_topic_name;

/// A PUBLISH packet (section 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Publish<'a> {
    /// Whether this may be a re-delivery (3.3.1.1); always `false` at QoS 0.
    pub dup: bool,
    /// The delivery guarantee (3.3.1.2).
    pub qos: QoS,
    /// Whether the server keeps the message for future subscribers (3.3.1.3).
    pub retain: bool,
    /// The topic name: no wildcards (3.3.2.1).
    pub topic: &'a str,
    /// The packet identifier: `Some` non-zero at QoS 1 and 2, `None` at QoS 0 (3.3.2.2).
    pub pkid: Option<u16>,
    /// The application message (3.3.3).
    pub payload: &'a [u8],
    /// The MQTT 5 properties (5.0 section 3.3.2.3); empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> Publish<'a> {
    /// Decodes the body; `flags` were checked by the fixed header.
    pub(super) fn decode(flags: u8, body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let mut r = Reader::new(body);
        let topic = r.string()?;
        let pkid = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
        };
        let properties = if v.is_v5() {
            Properties::decode(&mut r, Context::Publish)?
        } else {
            Properties::EMPTY
        };
        check_topic(topic, &properties).map_err(DecodeError::InvalidTopic)?;
        Ok(Publish {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 0b0001 != 0,
            topic,
            pkid,
            payload: r.rest(),
            properties,
        })
    }

    /// The flags nibble of the fixed header (section 3.3.1).
    pub(super) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | (self.qos.as_u8() << 1) | u8::from(self.retain)
    }

    /// The remaining length, after checking every field.
    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::InvalidFlags);
        }
        match (self.qos, self.pkid) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) if id != 0 => {}
            _ => return Err(EncodeError::InvalidPacketId),
        }
        let properties = if v.is_v5() {
            self.properties
        } else {
            Properties::EMPTY
        };
        check_topic(self.topic, &properties).map_err(EncodeError::InvalidTopic)?;
        let mut len = string_len(self.topic)?;
        if self.pkid.is_some() {
            len = add(len, 2)?;
        }
        if v.is_v5() {
            len = add(len, self.properties.encoded_len()?)?;
        }
        add(len, self.payload.len())
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.string(self.topic)?;
        if let Some(id) = self.pkid {
            w.u16(id)?;
        }
        if v.is_v5() {
            self.properties.write(w)?;
        }
        w.bytes(self.payload)
    }
}

/// A topic name is valid (section 4.7), or empty with a Topic Alias standing for it (MQTT 5.0
/// section 3.3.2.3.4; whether the alias is known is the receiver's business).
fn check_topic(topic: &str, properties: &Properties<'_>) -> Result<(), crate::topic::TopicError> {
    if topic.is_empty() && properties.topic_alias().is_some() {
        return Ok(());
    }
    validate_topic_name(topic)
}
