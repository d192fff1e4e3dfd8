//! SUBSCRIBE, a client's subscription request (MQTT 3.1.1 section 3.8).
//!
//! Fixed header `0x82` (flags 0b0010, 3.8.1). Variable header: a non-zero packet identifier
//! (3.8.2). Payload (3.8.3): one or more topic filters, each followed by a requested-QoS byte
//! whose bits 7-2 are reserved and must be 0 (3.8.3.1).
//!
//! MQTT 5.0 puts properties after the packet identifier (5.0 3.8.2.1), and the byte after each
//! filter holds the subscription options (5.0 3.8.3.1): QoS (bits 1-0), No Local (bit 2),
//! Retain As Published (bit 3), Retain Handling (bits 5-4); bits 7-6 stay reserved.

use core::fmt;

use super::properties::{Context, Properties};
use super::wire::{add, string_len};
use super::{DecodeError, EncodeError, Reader, Version, Writer};
use crate::QoS;
use crate::topic::validate_topic_filter;

/// A SUBSCRIBE packet (section 3.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribe<'a> {
    /// The packet identifier, non-zero (3.8.2).
    pub pkid: u16,
    /// The topic filters and their requested QoS (MQTT 5: their options), at least one
    /// (3.8.3).
    pub filters: SubscribeFilters<'a>,
    /// The MQTT 5 properties (subscription identifier, user properties); empty before MQTT 5.
    pub properties: Properties<'a>,
}

/// What MQTT 5 does with the retained messages of a new subscription (5.0 section 3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send them at the time of the subscribe (the only behaviour before MQTT 5).
    OnSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    OnNewSubscribe = 1,
    /// 2: do not send them.
    Never = 2,
}

/// The options of one topic filter of a SUBSCRIBE (MQTT 5.0 section 3.8.3.1); before MQTT 5
/// only the QoS, the others at their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubscriptionOptions {
    /// The maximum QoS requested.
    pub qos: QoS,
    /// Whether the client's own publishes are not sent back to it.
    pub no_local: bool,
    /// Whether forwarded messages keep their RETAIN flag.
    pub retain_as_published: bool,
    /// What happens to retained messages at the subscribe.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// The options of a plain MQTT 3.1.1 subscription at `qos`.
    pub const fn new(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
        }
    }

    /// The options byte.
    pub const fn as_u8(self) -> u8 {
        self.qos.as_u8()
            | ((self.no_local as u8) << 2)
            | ((self.retain_as_published as u8) << 3)
            | ((self.retain_handling as u8) << 4)
    }

    /// Reads an options byte of a connection speaking `v`.
    fn from_u8(byte: u8, v: Version) -> Result<Self, DecodeError> {
        let reserved = if v.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::ReservedBitsSet);
        }
        let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::InvalidSubscriptionOptions),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }
}

impl<'a> Subscribe<'a> {
    /// Decodes and validates the body; the filters are kept as wire bytes.
    pub(super) fn decode(body: &'a [u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pkid = r.packet_id()?;
        let properties = if v.is_v5() {
            Properties::decode(&mut r, Context::Subscribe)?
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
            let options = SubscriptionOptions::from_u8(r.u8()?, v)?;
            // MQTT 5.0 section 3.8.3.1: No Local on a shared subscription is a Protocol Error.
            if options.no_local && filter.starts_with("$share/") {
                return Err(DecodeError::InvalidSubscriptionOptions);
            }
        }
        Ok(Subscribe {
            pkid,
            filters: SubscribeFilters(Repr::Wire(payload)),
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
        for (filter, options) in self.filters.iter_options() {
            validate_topic_filter(filter).map_err(EncodeError::InvalidTopic)?;
            if !v.is_v5() && options != SubscriptionOptions::new(options.qos) {
                return Err(EncodeError::NotInVersion);
            }
            len = add(len, add(string_len(filter)?, 1)?)?;
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
        for (filter, options) in self.filters.iter_options() {
            w.string(filter)?;
            w.u8(options.as_u8())?;
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

    /// The filters in order, with their full options (MQTT 5.0 section 3.8.3.1).
    pub fn iter_options(&self) -> impl Iterator<Item = (&'a str, SubscriptionOptions)> + use<'a> {
        let mut wire = match self.0 {
            Repr::Wire(bytes) => Some(Reader::new(bytes)),
            Repr::Slice(_) => None,
        };
        let mut slice = match self.0 {
            Repr::Wire(_) => None,
            Repr::Slice(slice) => Some(slice.iter()),
        };
        core::iter::from_fn(move || {
            if let Some(iter) = slice.as_mut() {
                return iter
                    .next()
                    .map(|&(filter, qos)| (filter, SubscriptionOptions::new(qos)));
            }
            let r = wire.as_mut()?;
            let pair = read_options(r);
            if pair.is_none() {
                // Unreachable for validated bytes; stop for good rather than resync.
                *r = Reader::new(&[]);
            }
            pair
        })
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
    read_options(r).map(|(filter, options)| (filter, options.qos))
}

/// One filter and its options from validated wire bytes (of any version: an MQTT 3.1.1 options
/// byte reads the same under MQTT 5's rules).
fn read_options<'a>(r: &mut Reader<'a>) -> Option<(&'a str, SubscriptionOptions)> {
    let filter = r.string().ok()?;
    let options = SubscriptionOptions::from_u8(r.u8().ok()?, Version::V5).ok()?;
    Some((filter, options))
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
