//! DISCONNECT (section 3.14).
//!
//! MQTT 3.1.1: a fixed header alone, `0xE0 0x00`, sent by the client only. MQTT 5.0: either
//! side sends it, with a reason code and properties, both left out when the reason is 0x00
//! (normal disconnection) and there are no properties (3.14.2.1: a remaining length of 0 means
//! 0x00; of 1, no properties).

use super::ack::{reason_and_properties_len, reason_in, write_reason_and_properties};
use super::properties::{Context, Properties};
use super::{DecodeError, EncodeError, Reader, Version, Writer};

/// The reason codes of DISCONNECT (MQTT 5.0 section 3.14.2.1).
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// A DISCONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Disconnect<'a> {
    /// The MQTT 5 reason code: 0x00 normal disconnection, 0x04 disconnect with will message,
    /// an error above 0x80. 0x00 before MQTT 5.
    pub reason: u8,
    /// The MQTT 5 properties (session expiry, reason string, user properties, server
    /// reference); empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl Disconnect<'_> {
    /// A normal disconnection without properties: `0xE0 0x00` in every version.
    pub const NORMAL: Disconnect<'static> = Disconnect {
        reason: 0,
        properties: Properties::EMPTY,
    };
}

impl<'a> Disconnect<'a> {
    /// A DISCONNECT with `reason` and no properties.
    pub const fn with_reason(reason: u8) -> Self {
        Disconnect {
            reason,
            properties: Properties::EMPTY,
        }
    }

    pub(super) fn decode(body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let mut disconnect = Disconnect::NORMAL;
        if v.is_v5() && !r.is_empty() {
            disconnect.reason = reason_in(r.u8()?, DISCONNECT)?;
            if !r.is_empty() {
                disconnect.properties = Properties::decode(&mut r, Context::Disconnect)?;
            }
        }
        r.finish()?;
        Ok(disconnect)
    }

    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if !v.is_v5() {
            return if self.reason == 0 {
                Ok(0)
            } else {
                Err(EncodeError::NotInVersion)
            };
        }
        if !super::ack::is_in(self.reason, DISCONNECT) {
            return Err(EncodeError::NotInVersion);
        }
        reason_and_properties_len(self.reason, &self.properties)
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        if !v.is_v5() {
            return Ok(());
        }
        write_reason_and_properties(w, self.reason, &self.properties)
    }
}
