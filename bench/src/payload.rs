//! Test payloads that carry their send time.
//!
//! A payload of at least [`ENVELOPE_MIN`] bytes is a `msgack` envelope (see
//! `activity_core::envelope`) whose `message_id` is the send time, so that a broker with events
//! on also correlates every QoS 1 delivery:
//!
//! ```text
//! {"product_id":"bench","message_id":"00000000000123456789","payload":"xxxx...xxx"}
//! ```
//!
//! A shorter payload is the 20 digits alone, then filler. The send time is nanoseconds since
//! [`epoch`], a monotonic clock shared by the publishers and subscribers of one process.

use std::sync::OnceLock;
use std::time::Instant;

const PREFIX: &[u8] = br#"{"product_id":"bench","message_id":""#;
const MIDDLE: &[u8] = br#"","payload":""#;
const SUFFIX: &[u8] = br#""}"#;
const DIGITS: usize = 20;

/// The smallest payload that is written as an envelope.
pub const ENVELOPE_MIN: usize = PREFIX.len() + DIGITS + MIDDLE.len() + SUFFIX.len();

/// The smallest payload size: the 20 timestamp digits.
pub const MIN_SIZE: usize = DIGITS;

/// The clock origin of this process, fixed at its first use.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`], saturating.
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A payload template of `size` bytes; [`stamp`] writes the send time into it.
pub fn template(size: usize) -> Vec<u8> {
    let size = size.max(MIN_SIZE);
    let mut p = vec![b'x'; size];
    if size >= ENVELOPE_MIN {
        p[..PREFIX.len()].copy_from_slice(PREFIX);
        let middle_at = PREFIX.len() + DIGITS;
        p[middle_at..middle_at + MIDDLE.len()].copy_from_slice(MIDDLE);
        p[size - SUFFIX.len()..].copy_from_slice(SUFFIX);
    }
    p
}

/// Where the 20 digits of the send time start in a payload of `size` bytes.
fn digits_at(size: usize) -> usize {
    if size >= ENVELOPE_MIN {
        PREFIX.len()
    } else {
        0
    }
}

/// Writes `ns` as 20 decimal digits into a payload made by [`template`].
pub fn stamp(payload: &mut [u8], ns: u64) {
    let at = digits_at(payload.len());
    let mut v = ns;
    for i in (0..DIGITS).rev() {
        // v % 10 < 10, so the digit fits a u8.
        payload[at + i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
    }
}

/// The send time in a payload made by [`template`] and [`stamp`], if it has one.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let at = digits_at(payload.len());
    let digits = payload.get(at..at + DIGITS)?;
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_envelope() {
        for size in [20, 50, ENVELOPE_MIN, 100, 1000] {
            let mut p = template(size);
            assert_eq!(p.len(), size);
            stamp(&mut p, 123_456_789);
            assert_eq!(read_stamp(&p), Some(123_456_789));
            let is_envelope = activity_core::envelope::parse_envelope(&p).is_some();
            assert_eq!(is_envelope, size >= ENVELOPE_MIN, "size {size}");
        }
    }
}
