//! MQTT 5 publish properties across rumqttd's router: the engine's property block of a client's
//! PUBLISH becomes rumqttd's `PublishProperties`, and a delivery's `PublishProperties` become a
//! property block for an MQTT 5 subscriber again.
//!
//! What passes: payload format indicator (inside the [QoS marker](crate::qos_marker), with the
//! publisher's RETAIN flag), content type, response topic, correlation data, user properties
//! (5.0 section 3.3.2.3), and the message expiry interval, which does not go to rumqttd as one:
//! rumqttd would count it down in whole seconds of its own log (and drop what expires there,
//! uncounted), and could not see the time a delivery waits in the front. It travels instead in
//! the internal user property [`EXPIRY_PROPERTY`] with the time the front received the
//! publish, and the engine counts it down at the delivery (`Delivery::waited_ms`). The router's
//! own additions (subscription identifiers) and the broker's internal user properties do not
//! reach clients.

use activity_core::QoS;
use activity_core::codec::{Context, Properties, Property, encode_properties, properties_len};
use bytes::Bytes;
use rumqttd::protocol::PublishProperties;

use super::PUBLISHER_PROPERTY;
use crate::qos_marker::{PLAIN, RETAIN_BIT, marker, marker_of, read_marker};

/// The internal user property that carries a publish's Message Expiry Interval through the
/// router: `<ms since the Unix epoch the front received it> <seconds>`.
pub const EXPIRY_PROPERTY: &str = "activity-expiry";

/// The router's properties for a publish at `qos` (with RETAIN when `retain`) with the
/// client's `properties`, received at `now_ms`; `None` for a plain publish (QoS 0, no RETAIN,
/// no property: [`PLAIN`]).
pub(super) fn to_router(
    qos: QoS,
    retain: bool,
    properties: &Properties<'_>,
    now_ms: u64,
) -> Option<PublishProperties> {
    let mut routed = PublishProperties::default();
    let mut payload_format = 0;
    for property in properties.iter() {
        match property {
            Property::PayloadFormatIndicator(value) => payload_format = value,
            Property::MessageExpiryInterval(seconds) => {
                routed
                    .user_properties
                    .push((EXPIRY_PROPERTY.to_owned(), format!("{now_ms} {seconds}")));
            }
            Property::ContentType(value) => routed.content_type = Some(value.to_owned()),
            Property::ResponseTopic(value) => routed.response_topic = Some(value.to_owned()),
            Property::CorrelationData(data) => {
                routed.correlation_data = Some(Bytes::copy_from_slice(data));
            }
            Property::UserProperty(name, value) => {
                routed
                    .user_properties
                    .push((name.to_owned(), value.to_owned()));
            }
            // A PUBLISH from a client carries nothing else (the engine refused the rest).
            _ => {}
        }
    }
    let retain = if retain { RETAIN_BIT } else { 0 };
    let marker = marker(qos, payload_format) + retain;
    if marker == PLAIN && routed == PublishProperties::default() {
        return None;
    }
    routed.payload_format_indicator = Some(marker);
    Some(routed)
}

/// When the front received a routed publish (ms since the Unix epoch) and its Message Expiry
/// Interval (seconds), from [`EXPIRY_PROPERTY`].
pub(super) fn expiry_of(routed: &PublishProperties) -> Option<(u64, u32)> {
    let (_, value) = routed
        .user_properties
        .iter()
        .find(|(name, _)| name == EXPIRY_PROPERTY)?;
    let (at, seconds) = value.split_once(' ')?;
    Some((at.parse().ok()?, seconds.parse().ok()?))
}

/// Whether the router's properties hold the user properties that identify a message for
/// `msgack` (`product_id` and `message_id`).
pub(super) fn names_ids(routed: &PublishProperties) -> bool {
    let has = |name: &str| routed.user_properties.iter().any(|(k, _)| k == name);
    has("product_id") && has("message_id")
}

/// The property block of a delivery for an MQTT 5 subscriber, written into `buf` (reused
/// between deliveries); empty when the publish had none. The Message Expiry Interval is the
/// publisher's: the engine takes the time waited off it.
pub(super) fn from_router<'b>(routed: &PublishProperties, buf: &'b mut Vec<u8>) -> Properties<'b> {
    let payload_format =
        read_marker(marker_of(routed.payload_format_indicator)).map_or(0, |(_, format)| format);
    let mut list: Vec<Property<'_>> = Vec::new();
    if payload_format == 1 {
        list.push(Property::PayloadFormatIndicator(1));
    }
    if let Some((_, seconds)) = expiry_of(routed) {
        list.push(Property::MessageExpiryInterval(seconds));
    }
    if let Some(value) = &routed.content_type {
        list.push(Property::ContentType(value));
    }
    if let Some(value) = &routed.response_topic {
        list.push(Property::ResponseTopic(value));
    }
    if let Some(data) = &routed.correlation_data {
        list.push(Property::CorrelationData(data));
    }
    for (name, value) in &routed.user_properties {
        if name != PUBLISHER_PROPERTY && name != EXPIRY_PROPERTY {
            list.push(Property::UserProperty(name, value));
        }
    }
    if list.is_empty() {
        return Properties::EMPTY;
    }
    // The values came from a checked block (or the broker), so they encode; a block that does
    // not (a string over 65535 bytes cannot come from MQTT) is left out.
    let Ok(len) = properties_len(&list) else {
        return Properties::EMPTY;
    };
    buf.clear();
    buf.resize(len, 0);
    match encode_properties(&list, buf) {
        Ok(n) => Properties::parse(&buf[..n], Context::Publish).unwrap_or_default(),
        Err(_) => Properties::EMPTY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_properties_cross_the_router_and_come_back() {
        let mut raw = [0u8; 128];
        let sent = [
            Property::PayloadFormatIndicator(1),
            Property::MessageExpiryInterval(60),
            Property::ContentType("text/plain"),
            Property::ResponseTopic("reply/1"),
            Property::CorrelationData(b"id-7"),
            Property::UserProperty("k", "v"),
        ];
        let n = encode_properties(&sent, &mut raw).unwrap();
        let properties = Properties::parse(&raw[..n], Context::Publish).unwrap();
        let mut routed = to_router(QoS::AtLeastOnce, false, &properties, 1_000).unwrap();
        assert_eq!(expiry_of(&routed), Some((1_000, 60)));
        assert_eq!(
            routed.message_expiry_interval, None,
            "rumqttd does not count it down"
        );
        assert_eq!(
            routed.payload_format_indicator.and_then(read_marker),
            Some((QoS::AtLeastOnce, 1))
        );
        // The broker's internal publisher property never reaches a client.
        routed
            .user_properties
            .push((PUBLISHER_PROPERTY.to_owned(), "pub".to_owned()));
        let mut buf = Vec::new();
        let back = from_router(&routed, &mut buf);
        assert_eq!(back.iter().collect::<Vec<_>>(), sent);
        // A publish without properties: nothing comes back but the marker's QoS.
        let bare = to_router(QoS::ExactlyOnce, true, &Properties::EMPTY, 0).unwrap();
        assert!(crate::qos_marker::read_retain(
            bare.payload_format_indicator.unwrap()
        ));
        assert!(from_router(&bare, &mut buf).is_empty());
    }

    #[test]
    fn a_plain_publish_enters_the_router_without_properties() {
        assert_eq!(
            to_router(QoS::AtMostOnce, false, &Properties::EMPTY, 0),
            None
        );
        // Anything else is routed with properties that carry its marker: RETAIN, a higher QoS,
        // a payload format indicator, a property.
        let mut format = [0u8; 8];
        let n = encode_properties(&[Property::PayloadFormatIndicator(1)], &mut format).unwrap();
        let format = Properties::parse(&format[..n], Context::Publish).unwrap();
        let mut user = [0u8; 16];
        let n = encode_properties(&[Property::UserProperty("k", "v")], &mut user).unwrap();
        let user = Properties::parse(&user[..n], Context::Publish).unwrap();
        for (qos, retain, properties, payload_format) in [
            (QoS::AtMostOnce, true, Properties::EMPTY, 0),
            (QoS::AtLeastOnce, false, Properties::EMPTY, 0),
            (QoS::AtMostOnce, false, format, 1),
            (QoS::AtMostOnce, false, user, 0),
        ] {
            let routed = to_router(qos, retain, &properties, 0).expect("routed with properties");
            let marker = routed.payload_format_indicator.expect("a marker");
            assert_eq!(read_marker(marker), Some((qos, payload_format)));
            assert_eq!(crate::qos_marker::read_retain(marker), retain);
        }
    }
}
