//! PUBLISH, an application message (MQTT 3.1.1 section 3.3).
//!
//! Fixed header `0x3_`: DUP (bit 3, 3.3.1.1), QoS (bits 2-1, 3.3.1.2), RETAIN (bit 0,
//! 3.3.1.3). Variable header (3.3.2): topic name, then a packet identifier only at QoS 1 and 2.
//! Payload (3.3.3): the rest of the packet, possibly empty.

use super::wire::{add, string_len};
use super::{DecodeError, EncodeError, Reader, Writer};
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
}

impl<'a> Publish<'a> {
    /// Decodes the body; `flags` were checked by the fixed header.
    pub(super) fn decode(flags: u8, body: &'a [u8]) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let mut r = Reader::new(body);
        let topic = r.string()?;
        validate_topic_name(topic).map_err(DecodeError::InvalidTopic)?;
        let pkid = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
        };
        Ok(Publish {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 0b0001 != 0,
            topic,
            pkid,
            payload: r.rest(),
        })
    }

    /// The flags nibble of the fixed header (section 3.3.1).
    pub(super) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | (self.qos.as_u8() << 1) | u8::from(self.retain)
    }

    /// The remaining length, after checking every field.
    pub(super) fn body_len(&self) -> Result<usize, EncodeError> {
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::InvalidFlags);
        }
        match (self.qos, self.pkid) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) if id != 0 => {}
            _ => return Err(EncodeError::InvalidPacketId),
        }
        validate_topic_name(self.topic).map_err(EncodeError::InvalidTopic)?;
        let len = string_len(self.topic)?;
        let len = if self.pkid.is_some() {
            add(len, 2)?
        } else {
            len
        };
        add(len, self.payload.len())
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.string(self.topic)?;
        if let Some(id) = self.pkid {
            w.u16(id)?;
        }
        w.bytes(self.payload)
    }
}
