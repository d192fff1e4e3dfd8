//! SUBSCRIBE, a client's subscription request (MQTT 3.1.1 section 3.8).
//!
//! Fixed header `0x82` (flags 0b0010, 3.8.1). Variable header: a non-zero packet identifier
//! (3.8.2). Payload (3.8.3): one or more topic filters, each followed by a requested-QoS byte
//! whose bits 7-2 are reserved and must be 0 (3.8.3.1).

use core::fmt;

use super::wire::{add, string_len};
use super::{DecodeError, EncodeError, Reader, Writer};
use crate::QoS;
use crate::topic::validate_topic_filter;

/// A SUBSCRIBE packet (section 3.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribe<'a> {
    /// The packet identifier, non-zero (3.8.2).
    pub pkid: u16,
    /// The topic filters and their requested QoS, at least one (3.8.3).
    pub filters: SubscribeFilters<'a>,
}

impl<'a> Subscribe<'a> {
    /// Decodes and validates the body; the filters are kept as wire bytes.
    pub(super) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pkid = r.packet_id()?;
        let payload = r.rest();
        let mut r = Reader::new(payload);
        if r.is_empty() {
            return Err(DecodeError::EmptySubscription);
        }
        while !r.is_empty() {
            let filter = r.string()?;
            validate_topic_filter(filter).map_err(DecodeError::InvalidTopic)?;
            let options = r.u8()?;
            if options & 0xFC != 0 {
                return Err(DecodeError::ReservedBitsSet);
            }
            QoS::from_u8(options).ok_or(DecodeError::InvalidQoS)?;
        }
        Ok(Subscribe {
            pkid,
            filters: SubscribeFilters(Repr::Wire(payload)),
        })
    }

    /// The remaining length, after checking every field.
    pub(super) fn body_len(&self) -> Result<usize, EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::InvalidPacketId);
        }
        let mut len = 2;
        let mut count = 0usize;
        for (filter, _) in self.filters {
            validate_topic_filter(filter).map_err(EncodeError::InvalidTopic)?;
            len = add(len, add(string_len(filter)?, 1)?)?;
            count += 1;
        }
        if count == 0 {
            return Err(EncodeError::EmptySubscription);
        }
        Ok(len)
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.pkid)?;
        for (filter, qos) in self.filters {
            w.string(filter)?;
            w.u8(qos.as_u8())?;
        }
        Ok(())
    }
}

/// The topic filters of a SUBSCRIBE with their requested QoS: a `Copy` view that iterates as
/// `(&str, QoS)`.
///
/// A decoded SUBSCRIBE borrows its validated wire bytes; one to encode borrows a slice
/// ([`SubscribeFilters::from_slice`]). Two views are equal when they yield the same items.
#[derive(Clone, Copy)]
pub struct SubscribeFilters<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// The payload of a decoded SUBSCRIBE, validated by [`Subscribe::decode`].
    Wire(&'a [u8]),
    Slice(&'a [(&'a str, QoS)]),
}

impl<'a> SubscribeFilters<'a> {
    /// A view over `filters`, for encoding; [`Packet::encode`](super::Packet::encode) validates
    /// them.
    pub const fn from_slice(filters: &'a [(&'a str, QoS)]) -> Self {
        SubscribeFilters(Repr::Slice(filters))
    }

    /// An iterator over the `(filter, requested QoS)` pairs.
    pub fn iter(&self) -> SubscribeFiltersIter<'a> {
        SubscribeFiltersIter(match self.0 {
            Repr::Wire(bytes) => IterRepr::Wire(Reader::new(bytes)),
            Repr::Slice(slice) => IterRepr::Slice(slice.iter()),
        })
    }

    /// The number of filters.
    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Wire(_) => self.iter().count(),
            Repr::Slice(slice) => slice.len(),
        }
    }

    /// Whether there is no filter (never the case for a decoded SUBSCRIBE).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'a> IntoIterator for SubscribeFilters<'a> {
    type Item = (&'a str, QoS);
    type IntoIter = SubscribeFiltersIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &SubscribeFilters<'a> {
    type Item = (&'a str, QoS);
    type IntoIter = SubscribeFiltersIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for SubscribeFilters<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SubscribeFilters<'_> {}

impl fmt::Debug for SubscribeFilters<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for SubscribeFilters<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[");
        for (index, (filter, qos)) in self.iter().enumerate() {
            if index > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "({=str}, {})", filter, qos);
        }
        defmt::write!(f, "]");
    }
}

/// An iterator over the `(filter, requested QoS)` pairs of [`SubscribeFilters`].
#[derive(Clone, Debug)]
pub struct SubscribeFiltersIter<'a>(IterRepr<'a>);

#[derive(Clone, Debug)]
enum IterRepr<'a> {
    Wire(Reader<'a>),
    Slice(core::slice::Iter<'a, (&'a str, QoS)>),
}

/// Reads one `(filter, QoS)` pair from validated wire bytes.
fn read_pair<'a>(r: &mut Reader<'a>) -> Option<(&'a str, QoS)> {
    let filter = r.string().ok()?;
    let qos = QoS::from_u8(r.u8().ok()?)?;
    Some((filter, qos))
}

impl<'a> Iterator for SubscribeFiltersIter<'a> {
    type Item = (&'a str, QoS);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Wire(r) => {
                let pair = read_pair(r);
                if pair.is_none() {
                    // Unreachable for validated bytes; stop for good rather than resync.
                    *r = Reader::new(&[]);
                }
                pair
            }
            IterRepr::Slice(iter) => iter.next().copied(),
        }
    }
}

impl core::iter::FusedIterator for SubscribeFiltersIter<'_> {}
