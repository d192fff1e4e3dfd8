//! AUTH, the enhanced authentication exchange (MQTT 5.0 section 3.15; no such packet before).
//!
//! Fixed header `0xF0`. Variable header: a reason code and properties, both left out when the
//! reason is 0x00 (success) and there are no properties (3.15.2.1); a reason alone is one byte,
//! as in the other acknowledgements.

use super::ack::{reason_and_properties_len, reason_in, write_reason_and_properties};
use super::properties::{Context, Properties};
use super::{DecodeError, EncodeError, Reader, Writer};

/// The reason codes of AUTH (MQTT 5.0 section 3.15.2.1).
const AUTH: &[u8] = &[0x00, 0x18, 0x19];

/// An AUTH packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Auth<'a> {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: u8,
    /// The authentication method and data, reason string, user properties.
    pub properties: Properties<'a>,
}

impl<'a> Auth<'a> {
    pub(super) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let mut auth = Auth {
            reason: 0,
            properties: Properties::EMPTY,
        };
        if !r.is_empty() {
            auth.reason = reason_in(r.u8()?, AUTH)?;
            if !r.is_empty() {
                auth.properties = Properties::decode(&mut r, Context::Auth)?;
            }
        }
        r.finish()?;
        Ok(auth)
    }

    pub(super) fn body_len(&self) -> Result<usize, EncodeError> {
        if !super::ack::is_in(self.reason, AUTH) {
            return Err(EncodeError::NotInVersion);
        }
        reason_and_properties_len(self.reason, &self.properties)
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_reason_and_properties(w, self.reason, &self.properties)
    }
}
