//! The QoS marker: how a publish's real QoS crosses rumqttd's router.
//!
//! Every publish enters the router at QoS 0, from a client (through [`crate::connection`]) or
//! from the event sink ([`crate::events::MqttSink`]); its real QoS travels in the (MQTT 5)
//! payload format indicator property, together with the publisher's own indicator (MQTT 5:
//! whether the payload is UTF-8), as [`marker`]. The front reads both back from each delivery
//! ([`read_marker`]), delivers at `min(publish QoS, subscription QoS)` (MQTT 3.1.1 section
//! 3.8.4), and gives an MQTT 5 subscriber the publisher's indicator. MQTT 3.1.1 clients never
//! see properties.
//!
//! One marker is not sent: [`PLAIN`], a QoS 0 publish without RETAIN and without a payload
//! format indicator. Such a publish with no other property enters the router with no
//! properties at all (rumqttd clones a publish's properties for every delivery, on its one
//! thread: docs/scale.md, "Fan-out beside rumqttd's own listener"), and a delivery without a
//! marker (no properties, or only the router's own subscription identifiers) is read as
//! [`PLAIN`]. Every publish the front routes has a marker or is plain.

use activity_core::QoS;

/// The smallest marker: `QOS_MARKER_BASE + qos * 2 + payload format indicator`, plus
/// [`RETAIN_BIT`] for a publish the client sent with RETAIN.
pub const QOS_MARKER_BASE: u8 = 0xA0;

/// Added to a marker when the publisher set RETAIN: the router clears the flag on what it
/// forwards to existing subscribers (it sets it only on retained messages sent at a subscribe),
/// and an MQTT 5 subscription with Retain As Published needs the publisher's.
pub const RETAIN_BIT: u8 = 0x08;

/// The payload format indicator of a routed publish of `qos` whose publisher said
/// `payload_format` (0: unspecified bytes, 1: UTF-8; anything else counts as 0).
pub const fn marker(qos: QoS, payload_format: u8) -> u8 {
    QOS_MARKER_BASE + (qos.as_u8() << 1) + (payload_format & 1)
}

/// The marker of a publish routed without one: QoS 0, no RETAIN, payload format 0 (see the
/// module docs).
pub const PLAIN: u8 = marker(QoS::AtMostOnce, 0);

/// The marker of a delivery whose payload format indicator is `indicator` ([`PLAIN`] without
/// one).
pub fn marker_of(indicator: Option<u8>) -> u8 {
    indicator.unwrap_or(PLAIN)
}

/// The QoS and the publisher's payload format indicator a [`marker`] carries; `None` for a
/// value that is no marker.
pub fn read_marker(value: u8) -> Option<(QoS, u8)> {
    let bits = value.checked_sub(QOS_MARKER_BASE)?;
    if bits >= 2 * RETAIN_BIT {
        return None;
    }
    Some((QoS::from_u8((bits >> 1) & 0b11)?, bits & 1))
}

/// Whether a [`marker`] says the publisher set RETAIN.
pub fn read_retain(value: u8) -> bool {
    read_marker(value).is_some() && (value - QOS_MARKER_BASE) & RETAIN_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_carry_the_qos_and_the_payload_format() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for format in [0, 1] {
                assert_eq!(read_marker(marker(qos, format)), Some((qos, format)));
            }
        }
        assert_eq!(
            read_marker(1),
            None,
            "a client's own indicator is no marker"
        );
        assert_eq!(read_marker(QOS_MARKER_BASE + 6), None, "QoS 3");
        let retained = marker(QoS::ExactlyOnce, 1) + RETAIN_BIT;
        assert_eq!(read_marker(retained), Some((QoS::ExactlyOnce, 1)));
        assert!(read_retain(retained));
        assert!(!read_retain(marker(QoS::ExactlyOnce, 1)));
        assert_eq!(read_marker(QOS_MARKER_BASE + 16), None);
        // A delivery without a marker was a plain QoS 0 publish.
        assert_eq!(read_marker(marker_of(None)), Some((QoS::AtMostOnce, 0)));
        assert!(!read_retain(marker_of(None)));
        assert_eq!(marker_of(Some(retained)), retained);
    }
}
