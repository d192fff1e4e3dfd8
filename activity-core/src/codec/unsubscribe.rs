//! UNSUBSCRIBE, a client's request to drop subscriptions (MQTT 3.1.1 section 3.10).
//!
//! Fixed header `0xA2` (flags 0b0010, 3.10.1). Variable header: a non-zero packet identifier
//! (3.10.2). Payload (3.10.3): one or more topic filters. MQTT 5.0 puts properties after the
//! packet identifier (5.0 3.10.2.1).

use core::fmt;

use super::properties::{Context, Properties};
use super::wire::{add, string_len};
use super::{DecodeError, EncodeError, Reader, Version, Writer};
use crate::topic::validate_topic_filter;

/// An UNSUBSCRIBE packet (section 3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unsubscribe<'a> {
    /// The packet identifier, non-zero (3.10.2).
    pub pkid: u16,
    /// The topic filters, at least one (3.10.3).
    pub filters: UnsubscribeFilters<'a>,
    /// The MQTT 5 properties (user properties); empty before MQTT 5.
    pub properties: Properties<'a>,
}

impl<'a> Unsubscribe<'a> {
    /// Decodes and validates the body; the filters are kept as wire bytes.
    pub(super) fn decode(body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pkid = r.packet_id()?;
        let properties = if v.is_v5() {
            Properties::decode(&mut r, Context::Unsubscribe)?
        } else {
            Properties::EMPTY
        };
        let payload = r.rest();
        let mut r = Reader::new(payload);
        if r.is_empty() {
            return Err(DecodeError::EmptySubscription);
        }
        while !r.is_empty() {
            let filter = r.string()?;
            validate_topic_filter(filter).map_err(DecodeError::InvalidTopic)?;
        }
        Ok(Unsubscribe {
            pkid,
            filters: UnsubscribeFilters(Repr::Wire(payload)),
            properties,
        })
    }

    /// The remaining length, after checking every field.
    pub(super) fn body_len(&self, v: Version) -> Result<usize, EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::InvalidPacketId);
        }
        let mut len = 2;
        if v.is_v5() {
            len = add(len, self.properties.encoded_len()?)?;
        }
        let mut count = 0usize;
        for filter in self.filters {
            validate_topic_filter(filter).map_err(EncodeError::InvalidTopic)?;
            len = add(len, string_len(filter)?)?;
            count += 1;
        }
        if count == 0 {
            return Err(EncodeError::EmptySubscription);
        }
        Ok(len)
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.u16(self.pkid)?;
        if v.is_v5() {
            self.properties.write(w)?;
        }
        for filter in self.filters {
            w.string(filter)?;
        }
        Ok(())
    }
}

/// The topic filters of an UNSUBSCRIBE: a `Copy` view that iterates as `&str`.
///
/// A decoded UNSUBSCRIBE borrows its validated wire bytes; one to encode borrows a slice
/// ([`UnsubscribeFilters::from_slice`]). Two views are equal when they yield the same items.
#[derive(Clone, Copy)]
pub struct UnsubscribeFilters<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// The payload of a decoded UNSUBSCRIBE, validated by [`Unsubscribe::decode`].
    Wire(&'a [u8]),
    Slice(&'a [&'a str]),
}

impl<'a> UnsubscribeFilters<'a> {
    /// A view over `filters`, for encoding; [`Packet::encode`](super::Packet::encode) validates
    /// them.
    pub const fn from_slice(filters: &'a [&'a str]) -> Self {
        UnsubscribeFilters(Repr::Slice(filters))
    }

    /// An iterator over the filters.
    pub fn iter(&self) -> UnsubscribeFiltersIter<'a> {
        UnsubscribeFiltersIter(match self.0 {
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

    /// Whether there is no filter (never the case for a decoded UNSUBSCRIBE).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'a> IntoIterator for UnsubscribeFilters<'a> {
    type Item = &'a str;
    type IntoIter = UnsubscribeFiltersIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &UnsubscribeFilters<'a> {
    type Item = &'a str;
    type IntoIter = UnsubscribeFiltersIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for UnsubscribeFilters<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UnsubscribeFilters<'_> {}

impl fmt::Debug for UnsubscribeFilters<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for UnsubscribeFilters<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[");
        for (index, filter) in self.iter().enumerate() {
            if index > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{=str}", filter);
        }
        defmt::write!(f, "]");
    }
}

/// An iterator over the filters of [`UnsubscribeFilters`].
#[derive(Clone, Debug)]
pub struct UnsubscribeFiltersIter<'a>(IterRepr<'a>);

#[derive(Clone, Debug)]
enum IterRepr<'a> {
    Wire(Reader<'a>),
    Slice(core::slice::Iter<'a, &'a str>),
}

impl<'a> Iterator for UnsubscribeFiltersIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Wire(r) => {
                let filter = r.string().ok();
                if filter.is_none() {
                    // Unreachable for validated bytes; stop for good rather than resync.
                    *r = Reader::new(&[]);
                }
                filter
            }
            IterRepr::Slice(iter) => iter.next().copied(),
        }
    }
}

impl core::iter::FusedIterator for UnsubscribeFiltersIter<'_> {}
