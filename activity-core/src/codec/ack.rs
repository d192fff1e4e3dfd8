//! The acknowledgements of a packet identifier: PUBACK (section 3.4), PUBREC (3.5), PUBREL
//! (3.6), PUBCOMP (3.7) and UNSUBACK (3.11).
//!
//! MQTT 3.1.1: a fixed header with remaining length 2, then the packet identifier (2.3.1),
//! which must not be 0. PUBREL's fixed-header flags are 0b0010, the others' 0 (section 2.2.2).
//!
//! MQTT 5.0 adds to PUBACK, PUBREC, PUBREL and PUBCOMP a reason code and properties, both left
//! out when the reason is success and there are no properties (3.4.2.1: a remaining length of
//! 2 means success; of 3, no properties); UNSUBACK gets properties and one reason code per
//! topic filter of its UNSUBSCRIBE (3.11.2, 3.11.3).

use super::properties::{Context, Properties};
use super::wire::add;
use super::{DecodeError, EncodeError, Reader, Version, Writer};

/// The reason codes of PUBACK and PUBREC (MQTT 5.0 sections 3.4.2.1, 3.5.2.1).
pub(super) const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];

/// The reason codes of PUBREL and PUBCOMP (MQTT 5.0 sections 3.6.2.1, 3.7.2.1).
pub(super) const PUBREL: &[u8] = &[0x00, 0x92];

/// The reason codes of UNSUBACK (MQTT 5.0 section 3.11.3).
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

/// Whether `table` (a list of reason codes) holds `code`.
///
/// A loop, not `<[u8]>::contains`: that links `core`'s `memchr` (about 190 B of flash on a
/// Cortex-M) for tables of a few dozen bytes at most.
#[allow(clippy::manual_contains)]
pub(super) fn is_in(code: u8, table: &[u8]) -> bool {
    table.iter().any(|&c| c == code)
}

/// `code` if `table` defines it.
pub(super) fn reason_in(code: u8, table: &[u8]) -> Result<u8, DecodeError> {
    if is_in(code, table) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode(code))
    }
}

/// The length of an MQTT 5 reason code and property block that are left out when the reason
/// is 0x00 and there are no properties, and where a reason alone needs no empty block (PUBACK
/// to PUBCOMP, DISCONNECT, AUTH: 5.0 sections 3.4.2.1, 3.14.2.1, 3.15.2.1).
pub(super) fn reason_and_properties_len(
    reason: u8,
    properties: &Properties<'_>,
) -> Result<usize, EncodeError> {
    match (reason, properties.is_empty()) {
        (0, true) => Ok(0),
        (_, true) => Ok(1),
        (_, false) => add(1, properties.encoded_len()?),
    }
}

/// Writes what [`reason_and_properties_len`] counts.
pub(super) fn write_reason_and_properties(
    w: &mut Writer<'_>,
    reason: u8,
    properties: &Properties<'_>,
) -> Result<(), EncodeError> {
    match (reason, properties.is_empty()) {
        (0, true) => Ok(()),
        (reason, true) => w.u8(reason),
        (reason, false) => {
            w.u8(reason)?;
            properties.write(w)
        }
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (the [`Packet`](super::Packet) variant says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack<'a> {
    /// The packet identifier acknowledged (section 2.3.1).
    pub pkid: u16,
    /// The MQTT 5 reason code; 0x00 (success) before MQTT 5.
    pub reason: u8,
    /// The MQTT 5 properties (reason string, user properties); empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> Ack<'a> {
    /// A successful acknowledgement of `pkid`, without properties.
    pub const fn new(pkid: u16) -> Self {
        Ack {
            pkid,
            reason: 0,
            properties: Properties::EMPTY,
        }
    }

    /// Decodes the body; `reasons` is the packet type's table of reason codes.
    pub(super) fn decode(body: &'a [u8], v: Version, reasons: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pkid = r.packet_id()?;
        let mut ack = Ack::new(pkid);
        if v.is_v5() && !r.is_empty() {
            ack.reason = reason_in(r.u8()?, reasons)?;
            if !r.is_empty() {
                ack.properties = Properties::decode(&mut r, Context::Ack)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    /// The remaining length, after checking the fields.
    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::InvalidPacketId);
        }
        if !v.is_v5() {
            return if self.reason == 0 {
                Ok(2)
            } else {
                Err(EncodeError::NotInVersion)
            };
        }
        add(2, reason_and_properties_len(self.reason, &self.properties)?)
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.u16(self.pkid)?;
        if !v.is_v5() {
            return Ok(());
        }
        write_reason_and_properties(w, self.reason, &self.properties)
    }
}

/// UNSUBACK (section 3.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnsubAck<'a> {
    /// The packet identifier of the UNSUBSCRIBE (section 3.11.2).
    pub pkid: u16,
    /// MQTT 5: one reason code per topic filter of the UNSUBSCRIBE, in order (3.11.3); empty
    /// before MQTT 5.
    pub reasons: &'a [u8],
    /// The MQTT 5 properties; empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> UnsubAck<'a> {
    /// An UNSUBACK of `pkid` for MQTT 3.1.1 (no reason codes, no properties).
    pub const fn new(pkid: u16) -> Self {
        UnsubAck {
            pkid,
            reasons: &[],
            properties: Properties::EMPTY,
        }
    }

    pub(super) fn decode(body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pkid = r.packet_id()?;
        let mut unsuback = UnsubAck::new(pkid);
        if v.is_v5() {
            unsuback.properties = Properties::decode(&mut r, Context::UnsubAck)?;
            let reasons = r.rest();
            if reasons.is_empty() {
                return Err(DecodeError::EmptySubscription);
            }
            for &code in reasons {
                reason_in(code, UNSUBACK)?;
            }
            unsuback.reasons = reasons;
        }
        r.finish()?;
        Ok(unsuback)
    }

    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::InvalidPacketId);
        }
        if !v.is_v5() {
            return Ok(2);
        }
        if self.reasons.is_empty() {
            return Err(EncodeError::EmptySubscription);
        }
        if self.reasons.iter().any(|code| !UNSUBACK.contains(code)) {
            return Err(EncodeError::NotInVersion);
        }
        add(add(2, self.properties.encoded_len()?)?, self.reasons.len())
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.u16(self.pkid)?;
        if v.is_v5() {
            self.properties.write(w)?;
            w.bytes(self.reasons)?;
        }
        Ok(())
    }
}
