//! The last will's MQTT 5 properties (5.0 section 3.1.3.2): what a [`SessionStore`] keeps of
//! them, and what is published with the will.
//!
//! A will's properties are those of the PUBLISH the server sends for it (payload format,
//! message expiry, content type, response topic, correlation data, user properties), plus the
//! Will Delay Interval, which is the server's business only (see the [expiry](super::expiry)
//! module). A store keeps the others, as [`will_publish_properties`] writes them, so that the
//! will is routed with exactly them; its Message Expiry Interval then counts from the moment
//! the will is published, as the router counts it for any message.
//!
//! [`SessionStore`]: super::SessionStore

use crate::codec::{Context, Properties, Property, encode_properties};

use super::StoreFull;

/// Writes the properties of `will` that go out with the published will (all but the Will
/// Delay Interval) into `out`, and returns them as a block of the CONNECT's will properties
/// ([`Context::Will`], which are PUBLISH properties without it). [`StoreFull`] when `out` is
/// too small.
pub fn will_publish_properties<'o>(
    will: &Properties<'_>,
    out: &'o mut [u8],
) -> Result<Properties<'o>, StoreFull> {
    let mut len = 0;
    for property in will.iter() {
        if matches!(property, Property::WillDelayInterval(_)) {
            continue;
        }
        let rest = out.get_mut(len..).ok_or(StoreFull)?;
        len += encode_properties(core::slice::from_ref(&property), rest).map_err(|_| StoreFull)?;
    }
    let bytes = out.get(..len).ok_or(StoreFull)?;
    Properties::parse(bytes, Context::Will).map_err(|_| StoreFull)
}

/// The bytes [`will_publish_properties`] needs for `will`.
pub fn will_publish_properties_len(will: &Properties<'_>) -> usize {
    will.iter()
        .filter(|p| !matches!(p, Property::WillDelayInterval(_)))
        .map(|p| crate::codec::properties_len(core::slice::from_ref(&p)).unwrap_or(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_will_delay_stays_and_the_rest_goes_out() {
        // Will Delay Interval 5, Message Expiry Interval 10, User Property a=b.
        let raw = [
            0x18, 0, 0, 0, 5, 0x02, 0, 0, 0, 10, 0x26, 0, 1, b'a', 0, 1, b'b',
        ];
        let will = Properties::parse(&raw, Context::Will).unwrap();
        let mut out = [0u8; 32];
        assert_eq!(will_publish_properties_len(&will), 12);
        let kept = will_publish_properties(&will, &mut out).unwrap();
        assert_eq!(kept.as_bytes(), &raw[5..]);
        assert_eq!(kept.message_expiry_interval(), Some(10));
        assert_eq!(kept.will_delay_interval(), None);
        assert_eq!(
            will_publish_properties(&will, &mut [0u8; 11]),
            Err(StoreFull)
        );
    }
}
