//! MQTT Quality of Service levels (MQTT 3.1.1 section 4.3).

/// The delivery guarantee of a PUBLISH or a subscription (MQTT 3.1.1 section 4.3).
///
/// Serialized in event JSON as a number (`0`, `1` or `2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: at most once, no acknowledgement (section 4.3.1).
    AtMostOnce = 0,
    /// QoS 1: at least once, acknowledged by PUBACK (section 4.3.2).
    AtLeastOnce = 1,
    /// QoS 2: exactly once, PUBREC / PUBREL / PUBCOMP (section 4.3.3).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value, or `None` for 3 and above (malformed, section 3.3.1.2).
    pub const fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The wire value (0, 1 or 2).
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl serde::Serialize for QoS {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip() {
        for v in 0..=255u8 {
            match QoS::from_u8(v) {
                Some(q) => assert_eq!(q.as_u8(), v),
                None => assert!(v >= 3),
            }
        }
    }
}
