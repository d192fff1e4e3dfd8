//! The QoS marker: how a publish's real QoS crosses rumqttd's router.
//!
//! Every publish enters the router at QoS 0, from a client (through [`crate::connection`]) or
//! from the event sink ([`crate::events::MqttSink`]); its real QoS travels in the (MQTT 5)
//! payload format indicator property as [`QOS_MARKER_BASE`]` + qos`. The front reads it back
//! from each delivery and delivers at `min(publish QoS, subscription QoS)` (MQTT 3.1.1 section
//! 3.8.4). v4 clients never see properties: the front strips them before writing.

/// The payload format indicator of a routed publish is `QOS_MARKER_BASE + qos`.
pub const QOS_MARKER_BASE: u8 = 0xA0;
