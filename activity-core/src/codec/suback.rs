//! SUBACK, the server's answer to SUBSCRIBE (MQTT 3.1.1 section 3.9).
//!
//! Fixed header `0x90`. Variable header: the packet identifier of the SUBSCRIBE (3.9.2).
//! Payload (3.9.3): one return code per topic filter, in order: 0x00, 0x01 or 0x02 for the
//! granted QoS, 0x80 for failure; other values are reserved.
//!
//! MQTT 5.0 puts properties after the packet identifier (5.0 3.9.2.1) and has more failure
//! codes (5.0 3.9.3).

use core::fmt;

use super::properties::{Context, Properties};
use super::wire::add;
use super::{DecodeError, EncodeError, Reader, Version, Writer};
use crate::QoS;

/// One SUBACK return code (section 3.9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SubAckCode {
    /// The subscription is accepted with this maximum QoS (0x00, 0x01, 0x02).
    Success(QoS),
    /// The subscription is refused (0x80).
    Failure,
    /// An MQTT 5 failure with its reason code (0x83 and above, section 3.9.3 of MQTT 5.0).
    Refused(u8),
}

impl SubAckCode {
    /// The return code for a wire value, or `None` for a reserved value.
    pub const fn from_u8(value: u8) -> Option<SubAckCode> {
        match value {
            0x80 => Some(SubAckCode::Failure),
            // MQTT 5.0 section 3.9.3.
            0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2 => {
                Some(SubAckCode::Refused(value))
            }
            _ => match QoS::from_u8(value) {
                Some(qos) => Some(SubAckCode::Success(qos)),
                None => None,
            },
        }
    }

    /// The wire value: the QoS, or 0x80.
    pub const fn as_u8(self) -> u8 {
        match self {
            SubAckCode::Success(qos) => qos.as_u8(),
            SubAckCode::Failure => 0x80,
            SubAckCode::Refused(code) => code,
        }
    }
}

/// A SUBACK packet (section 3.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubAck<'a> {
    /// The packet identifier of the SUBSCRIBE, non-zero (3.9.2).
    pub pkid: u16,
    /// One return code per topic filter of the SUBSCRIBE, so at least one (3.9.3).
    pub codes: SubAckCodes<'a>,
    /// The MQTT 5 properties; empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> SubAck<'a> {
    /// Decodes and validates the body; the codes are kept as wire bytes.
    pub(super) fn decode(body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pkid = r.packet_id()?;
        let properties = if v.is_v5() {
            Properties::decode(&mut r, Context::SubAck)?
        } else {
            Properties::EMPTY
        };
        let payload = r.rest();
        if payload.is_empty() {
            return Err(DecodeError::EmptySubscription);
        }
        if let Some(&bad) = payload.iter().find(|&&code| !is_code_of(code, v)) {
            return Err(DecodeError::InvalidSubAckCode(bad));
        }
        Ok(SubAck {
            pkid,
            codes: SubAckCodes(Repr::Wire(payload)),
            properties,
        })
    }

    /// The remaining length, after checking every field.
    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::InvalidPacketId);
        }
        if self.codes.is_empty() {
            return Err(EncodeError::EmptySubscription);
        }
        if self.codes.iter().any(|code| !is_code_of(code.as_u8(), v)) {
            return Err(EncodeError::NotInVersion);
        }
        let len = add(2, self.codes.len())?;
        if v.is_v5() {
            add(len, self.properties.encoded_len()?)
        } else {
            Ok(len)
        }
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.u16(self.pkid)?;
        if v.is_v5() {
            self.properties.write(w)?;
        }
        match self.codes.0 {
            Repr::Wire(bytes) => w.bytes(bytes),
            Repr::Slice(codes) => codes.iter().try_for_each(|code| w.u8(code.as_u8())),
        }
    }
}

/// Whether `code` is a SUBACK code of version `v`.
fn is_code_of(code: u8, v: Version) -> bool {
    match SubAckCode::from_u8(code) {
        Some(SubAckCode::Refused(_)) => v.is_v5(),
        Some(_) => true,
        None => false,
    }
}

/// The return codes of a SUBACK: a `Copy` view that iterates as [`SubAckCode`].
///
/// A decoded SUBACK borrows its validated wire bytes; one to encode borrows a slice
/// ([`SubAckCodes::from_slice`]). Two views are equal when they yield the same items.
#[derive(Clone, Copy)]
pub struct SubAckCodes<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// The payload of a decoded SUBACK, validated by [`SubAck::decode`].
    Wire(&'a [u8]),
    Slice(&'a [SubAckCode]),
}

impl<'a> SubAckCodes<'a> {
    /// A view over `codes`, for encoding.
    pub const fn from_slice(codes: &'a [SubAckCode]) -> Self {
        SubAckCodes(Repr::Slice(codes))
    }

    /// An iterator over the return codes.
    pub fn iter(&self) -> SubAckCodesIter<'a> {
        SubAckCodesIter(match self.0 {
            Repr::Wire(bytes) => IterRepr::Wire(bytes.iter()),
            Repr::Slice(slice) => IterRepr::Slice(slice.iter()),
        })
    }

    /// The number of return codes.
    pub const fn len(&self) -> usize {
        match self.0 {
            Repr::Wire(bytes) => bytes.len(),
            Repr::Slice(slice) => slice.len(),
        }
    }

    /// Whether there is no return code (never the case for a decoded SUBACK).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> IntoIterator for SubAckCodes<'a> {
    type Item = SubAckCode;
    type IntoIter = SubAckCodesIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &SubAckCodes<'a> {
    type Item = SubAckCode;
    type IntoIter = SubAckCodesIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for SubAckCodes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SubAckCodes<'_> {}

impl fmt::Debug for SubAckCodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for SubAckCodes<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[");
        for (index, code) in self.iter().enumerate() {
            if index > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{}", code);
        }
        defmt::write!(f, "]");
    }
}

/// An iterator over the return codes of [`SubAckCodes`].
#[derive(Clone, Debug)]
pub struct SubAckCodesIter<'a>(IterRepr<'a>);

#[derive(Clone, Debug)]
enum IterRepr<'a> {
    Wire(core::slice::Iter<'a, u8>),
    Slice(core::slice::Iter<'a, SubAckCode>),
}

impl Iterator for SubAckCodesIter<'_> {
    type Item = SubAckCode;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            // Validated bytes: `from_u8` never returns `None` here.
            IterRepr::Wire(iter) => iter.next().and_then(|&code| SubAckCode::from_u8(code)),
            IterRepr::Slice(iter) => iter.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterRepr::Wire(iter) => iter.size_hint(),
            IterRepr::Slice(iter) => iter.size_hint(),
        }
    }
}

impl ExactSizeIterator for SubAckCodesIter<'_> {}

impl core::iter::FusedIterator for SubAckCodesIter<'_> {}
