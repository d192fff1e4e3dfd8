//! The bodies of the cargo-fuzz targets in `fuzz/`, shared with the corpus replay test.
//!
//! Host-only (feature `fuzzing`): this module uses `std`, `serde_json` as an independent
//! reference and `arbitrary` to turn fuzzer bytes into structured input. Each body takes the raw
//! fuzzer input, calls the same functions the product calls, and panics when a property breaks,
//! so a panic is a finding. The fuzz targets in `fuzz/fuzz_targets/` and
//! `tests/fuzz_corpus.rs` both call these functions, so a corpus file replays identically in
//! both.
//!
//! | body | functions under test | property |
//! |---|---|---|
//! | [`mqtt_decode`] | [`codec::decode`], [`Packet::encode`] | no panic; a decoded packet re-encodes to bytes that decode to an equal packet |
//! | [`envelope`] | [`parse_envelope`] | no panic; agrees with [`reference_envelope`] |
//! | [`event_encode`] | [`event::encode`], [`event::encoded_len_bound`] | valid JSON of exactly the bound's length, with the documented fields in order |
//! | [`tracker`] | [`Tracker`] with [`FixedAckStore`] | matches a model: `msgack` only for delivered, unacknowledged envelopes; one `disconnected` after a `connected` |
//! | [`server()`] | [`crate::server::Connection`] | no panic; only whole, valid server packets within the transmit buffer; one verdict, one `connected` after an accepting one, one `disconnected` and end, nothing after the close |
//! | [`relay()`] | [`crate::server::Relay`] | the same, and: only whole client packets go upstream (the CONNECT first, after an accepting verdict; no publish on a system or `$` topic), the upstream's bytes forwarded as a prefix of what was consumed, `connected` only after the upstream accepted |

use core::cell::Cell;
use core::fmt;

use std::borrow::ToOwned;
use std::boxed::Box;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::QoS;
use crate::acks::FixedAckStore;
use crate::client_id::{CLIENT_ID_CAPACITY, ClientIdError, RESERVED_CLIENT_ID};
use crate::codec::{
    self, Context, DecodeError, EncodeError, Packet, Properties, Property, RetainHandling,
    SubscriptionOptions, Version,
};
use crate::envelope::{Envelope, ID_CAPACITY, MAX_DEPTH, OwnedId, parse_envelope};
use crate::event::{
    self, Connected, DisconnectReason, Disconnected, EncodeOptions, Event, EventKind, Id, Message,
    MsgAck, PayloadMode, Subscribed, USER_PROPERTIES_MAX_BYTES, USER_PROPERTIES_MAX_COUNT,
    Unsubscribed, UserProperties,
};
use crate::system::SystemTopics;
use crate::tracker::{
    ConnectError, ConnectInfo, DeliveryInfo, EventKinds, PublishInfo, PublishOutcome, Tracker,
    TrackerConfig, TrackerStats,
};

mod server;

pub use server::{relay, server};

// ---- mqtt_decode ------------------------------------------------------------------------------

/// Decodes `data` as a stream of MQTT packets, once as MQTT 3.1.1 (which MQTT 3.1 shares after
/// the CONNECT) and once as MQTT 5, and checks each packet round-trips in its version.
///
/// For every packet [`codec::decode_with`] returns: it re-encodes with [`Packet::encode_with`]
/// into a buffer of exactly [`Packet::encoded_len_with`] bytes (one byte less is
/// `BufferTooSmall`), the bytes decode to an equal packet of the same length, and every strict
/// prefix of both the original and the re-encoded bytes is "incomplete" (`Ok(None)`). A limit
/// one byte below the packet's size gives `PacketTooLarge`. Stops at the first error or
/// incomplete packet.
pub fn mqtt_decode(data: &[u8]) {
    for version in [Version::V3_1_1, Version::V5] {
        mqtt_decode_as(data, version);
    }
}

fn mqtt_decode_as(data: &[u8], version: Version) {
    let mut rest = data;
    while let Ok(Some((packet, used))) = codec::decode_with(rest, usize::MAX, version) {
        assert!(
            used > 0 && used <= rest.len(),
            "decode took {used} of {} bytes",
            rest.len()
        );
        let original = &rest[..used];
        check_incomplete_prefixes(original, version);
        assert_eq!(
            codec::decode_with(original, used - 1, version),
            Err(DecodeError::PacketTooLarge {
                size: used,
                max: used - 1
            }),
            "limit below the packet size"
        );
        check_round_trip(&packet, original, version);
        rest = &rest[used..];
    }
}

fn check_incomplete_prefixes(packet: &[u8], version: Version) {
    for end in 0..packet.len() {
        assert_eq!(
            codec::decode_with(&packet[..end], usize::MAX, version),
            Ok(None),
            "prefix of {end} bytes of {packet:02x?}"
        );
    }
}

fn check_round_trip(packet: &Packet<'_>, original: &[u8], version: Version) {
    let len = packet
        .encoded_len_with(version)
        .unwrap_or_else(|e| panic!("decoded packet does not encode ({e}): {packet:?}"));
    let mut buf = vec![0u8; len];
    assert_eq!(
        packet.encode_with(&mut buf[..len - 1], version),
        Err(EncodeError::BufferTooSmall { needed: len }),
        "one byte short: {packet:?}"
    );
    let written = packet
        .encode_with(&mut buf, version)
        .unwrap_or_else(|e| panic!("decoded packet does not encode ({e}): {packet:?}"));
    assert_eq!(written, len, "encode and encoded_len disagree: {packet:?}");
    // A CONNECT of another protocol level keeps only its variable header, so it re-encodes with
    // an empty client id that the original may not have had; every other packet re-encodes to
    // the same body, with a remaining length that is minimal and so never longer.
    let is_foreign_connect = matches!(packet, Packet::Connect(c) if c.version().is_none());
    if !is_foreign_connect {
        assert!(
            written <= original.len(),
            "re-encoded {written} bytes from {} bytes: {packet:?}",
            original.len()
        );
    }
    match codec::decode_with(&buf, usize::MAX, version) {
        Ok(Some((again, used))) => {
            assert_eq!(used, len, "re-encoded packet length: {packet:?}");
            assert_eq!(again, *packet, "re-encoded bytes {buf:02x?}");
        }
        other => panic!("re-encoded bytes {buf:02x?} of {packet:?} decode to {other:?}"),
    }
    check_incomplete_prefixes(&buf, version);
}

// ---- envelope ---------------------------------------------------------------------------------

/// Checks that [`parse_envelope`] agrees with [`reference_envelope`] on `data`.
///
/// Inputs that serde_json refuses for a number beyond the range of `f64` (`1e400`) are not
/// compared: the rules follow the RFC 8259 section 6 grammar, which has no range.
pub fn envelope(data: &[u8]) {
    let actual = parse_envelope(data);
    if serde_json::from_slice::<Value>(data)
        .is_err_and(|e| e.to_string().starts_with("number out of range"))
    {
        return;
    }
    let expected = reference_envelope(data);
    assert_eq!(
        actual,
        expected,
        "payload {:?} ({:02x?})",
        String::from_utf8_lossy(data),
        data
    );
}

/// The rules of the [`envelope`](crate::envelope) module docs, applied to a serde_json parse.
///
/// The top-level object is visited member by member, so duplicate keys are seen. Member values
/// are kept as raw JSON text: an id is an integer when its text is `-?[0-9]+` (valid JSON
/// already rules out leading zeros), so `-0` is the integer 0 as the rules say, where serde_json
/// itself would read a float.
pub fn reference_envelope(payload: &[u8]) -> Option<Envelope> {
    serde_json::from_slice::<ReferenceEnvelope>(payload)
        .ok()
        .and_then(|r| r.0)
}

struct ReferenceEnvelope(Option<Envelope>);

impl<'de> Deserialize<'de> for ReferenceEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopLevel)
    }
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = ReferenceEnvelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReferenceEnvelope, A::Error> {
        let mut product = Vec::new();
        let mut message = Vec::new();
        let mut shallow = true;
        while let Some((key, raw)) = map.next_entry::<String, Box<RawValue>>()? {
            // A raw value is only skipped, not validated; parsing it checks every string
            // (lone surrogates included) and gives its depth.
            let value: Value = serde_json::from_str(raw.get()).map_err(A::Error::custom)?;
            // The top-level object is level 1, so a member may nest MAX_DEPTH - 1 more levels.
            shallow &= depth(&value) < MAX_DEPTH;
            match key.as_str() {
                "product_id" => product.push(raw),
                "message_id" => message.push(raw),
                _ => {}
            }
        }
        let envelope = match (shallow, &product[..], &message[..]) {
            (true, [p], [m]) => {
                reference_id(p)
                    .zip(reference_id(m))
                    .map(|(product_id, message_id)| Envelope {
                        product_id,
                        message_id,
                    })
            }
            _ => None,
        };
        Ok(ReferenceEnvelope(envelope))
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn reference_id(raw: &RawValue) -> Option<OwnedId> {
    let text = raw.get().trim_matches([' ', '\t', '\n', '\r']);
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok().map(OwnedId::Int);
    }
    match serde_json::from_str::<Value>(text).ok()? {
        Value::String(s) if !s.is_empty() && s.len() <= ID_CAPACITY => {
            heapless::String::try_from(s.as_str())
                .ok()
                .map(OwnedId::Str)
        }
        _ => None,
    }
}

// ---- event_encode -----------------------------------------------------------------------------

/// One event with its encoding options, built by `arbitrary` from fuzzer bytes.
#[derive(Arbitrary, Debug)]
struct EventInput {
    event: ArbEvent,
    payload: ArbPayloadMode,
    node: Option<String>,
    event_seq: Option<u64>,
}

#[derive(Arbitrary, Debug)]
enum ArbEvent {
    Connected {
        ts: u64,
        client_id: String,
        username: Option<String>,
        proto_ver: u8,
        keepalive: u16,
        clean_session: bool,
        peer: Option<String>,
        session_expiry: Option<u32>,
        user_properties: Vec<(String, String)>,
        session_seq: u64,
    },
    Disconnected {
        ts: u64,
        client_id: String,
        reason: u8,
        reason_code: Option<u8>,
        connected_at: u64,
        session_seq: u64,
    },
    Subscribed {
        ts: u64,
        client_id: String,
        topic: ArbFilter,
        qos: u8,
        options: Option<(bool, bool, u8)>,
    },
    Unsubscribed {
        ts: u64,
        client_id: String,
        topic: String,
    },
    Message {
        ts: u64,
        pub_client_id: String,
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
    },
    MsgAck {
        ts: u64,
        pub_client_id: Option<String>,
        ack_client_id: String,
        product_id: ArbId,
        message_id: ArbId,
        topic: String,
        qos: u8,
        reason_code: Option<u8>,
    },
}

/// A topic filter, often a shared one (`$share/<group>/<filter>`).
#[derive(Arbitrary, Debug)]
enum ArbFilter {
    Any(String),
    Shared(String, String),
}

impl ArbFilter {
    fn text(&self) -> String {
        match self {
            ArbFilter::Any(s) => s.clone(),
            ArbFilter::Shared(group, filter) => format!("$share/{group}/{filter}"),
        }
    }
}

/// A checked user-property block of `pairs`, or an empty one when they cannot be one (a
/// string MQTT cannot carry).
fn user_property_block(pairs: &[(String, String)]) -> Vec<u8> {
    let list: Vec<Property<'_>> = pairs
        .iter()
        .map(|(k, v)| Property::UserProperty(k, v))
        .collect();
    let mut raw = vec![0u8; codec::properties_len(&list).unwrap_or(0)];
    match codec::encode_properties(&list, &mut raw) {
        Ok(n) if Properties::parse(&raw[..n], Context::Connect).is_ok() => {
            raw.truncate(n);
            raw
        }
        _ => Vec::new(),
    }
}

/// The pairs of a user-property block that a `connected` event keeps, and whether some are
/// cut: an independent statement of the documented limits.
fn kept_user_properties(raw: &[u8]) -> (Vec<(String, String)>, bool) {
    let all: Vec<(String, String)> = Properties::parse(raw, Context::Connect)
        .map(|p| {
            p.user_properties()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut kept = Vec::new();
    let mut bytes = 0;
    for (k, v) in &all {
        bytes += k.len() + v.len();
        if kept.len() == USER_PROPERTIES_MAX_COUNT || bytes > USER_PROPERTIES_MAX_BYTES {
            break;
        }
        kept.push((k.clone(), v.clone()));
    }
    let cut = kept.len() < all.len();
    (kept, cut)
}

fn options(arb: Option<(bool, bool, u8)>) -> Option<SubscriptionOptions> {
    arb.map(
        |(no_local, retain_as_published, handling)| SubscriptionOptions {
            no_local,
            retain_as_published,
            retain_handling: match handling % 3 {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscribe,
                _ => RetainHandling::Never,
            },
            ..SubscriptionOptions::new(QoS::AtMostOnce)
        },
    )
}

#[derive(Arbitrary, Debug)]
enum ArbId {
    Str(String),
    Int(i64),
}

impl ArbId {
    fn as_id(&self) -> Id<'_> {
        match self {
            ArbId::Str(s) => Id::Str(s),
            ArbId::Int(i) => Id::Int(*i),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ArbPayloadMode {
    Full,
    Truncate(u8),
    TruncateAny(usize),
    Omit,
}

const REASONS: [DisconnectReason; 12] = [
    DisconnectReason::Normal,
    DisconnectReason::DisconnectWithWill,
    DisconnectReason::ClientError,
    DisconnectReason::SessionExpired,
    DisconnectReason::TcpClosed,
    DisconnectReason::KeepaliveTimeout,
    DisconnectReason::Takenover,
    DisconnectReason::ProtocolError,
    DisconnectReason::PacketTooLarge,
    DisconnectReason::NotAuthorized,
    DisconnectReason::ServerShutdown,
    DisconnectReason::UpstreamClosed,
];

fn qos(byte: u8) -> QoS {
    match byte % 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn reason(byte: u8) -> DisconnectReason {
    REASONS[usize::from(byte) % REASONS.len()]
}

impl ArbEvent {
    /// The event, with `user_properties` the block of a `connected` one and `filter` the text
    /// of a `subscribed` one (made by [`ArbEvent::strings`]).
    fn event<'a>(&'a self, user_properties: &'a [u8], filter: &'a str) -> Event<'a> {
        match self {
            ArbEvent::Connected {
                ts,
                client_id,
                username,
                proto_ver,
                keepalive,
                clean_session,
                peer,
                session_expiry,
                user_properties: _,
                session_seq,
            } => Event::Connected(Connected {
                ts: *ts,
                client_id,
                username: username.as_deref(),
                proto_ver: *proto_ver,
                keepalive: *keepalive,
                clean_session: *clean_session,
                peer: peer.as_deref(),
                transport: None,
                session_expiry: *session_expiry,
                user_properties: UserProperties::new(
                    Properties::parse(user_properties, Context::Connect).unwrap_or_default(),
                ),
                session_seq: *session_seq,
            }),
            ArbEvent::Disconnected {
                ts,
                client_id,
                reason: r,
                reason_code,
                connected_at,
                session_seq,
            } => Event::Disconnected(Disconnected {
                ts: *ts,
                client_id,
                reason: reason(*r),
                reason_code: *reason_code,
                connected_at: *connected_at,
                session_seq: *session_seq,
            }),
            ArbEvent::Subscribed {
                ts,
                client_id,
                qos: q,
                options: o,
                ..
            } => Event::Subscribed(Subscribed {
                ts: *ts,
                client_id,
                topic: filter,
                qos: qos(*q),
                options: options(*o),
            }),
            ArbEvent::Unsubscribed {
                ts,
                client_id,
                topic,
            } => Event::Unsubscribed(Unsubscribed {
                ts: *ts,
                client_id,
                topic,
            }),
            ArbEvent::Message {
                ts,
                pub_client_id,
                topic,
                payload,
                qos: q,
                retain,
            } => Event::Message(Message {
                ts: *ts,
                pub_client_id,
                topic,
                payload,
                qos: qos(*q),
                retain: *retain,
            }),
            ArbEvent::MsgAck {
                ts,
                pub_client_id,
                ack_client_id,
                product_id,
                message_id,
                topic,
                qos: q,
                reason_code,
            } => Event::MsgAck(MsgAck {
                ts: *ts,
                pub_client_id: pub_client_id.as_deref(),
                ack_client_id,
                product_id: product_id.as_id(),
                message_id: message_id.as_id(),
                topic,
                qos: qos(*q),
                reason_code: *reason_code,
            }),
        }
    }

    /// The owned text an event borrows besides its fields: the user-property block of a
    /// `connected` event, the filter of a `subscribed` one.
    fn strings(&self) -> (Vec<u8>, String) {
        match self {
            ArbEvent::Connected {
                user_properties, ..
            } => (user_property_block(user_properties), String::new()),
            ArbEvent::Subscribed { topic, .. } => (Vec::new(), topic.text()),
            _ => (Vec::new(), String::new()),
        }
    }
}

/// Encodes an arbitrary event and checks its JSON.
///
/// The bytes become an event of any kind with any field contents (any UTF-8 for strings, any
/// bytes for a payload), any [`PayloadMode`] and any node. [`event::encode`] into a buffer of
/// [`event::encoded_len_bound`] bytes must succeed with exactly that many bytes (the bound is
/// documented as exact), one byte less must be `BufferTooSmall`, and serde_json must read back
/// one object with the fields of the module docs' table, in order, with the same values: a
/// payload as UTF-8 text, or base64 that decodes to the payload's bytes.
pub fn event_encode(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = EventInput::arbitrary(&mut u) else {
        return;
    };
    let (user_properties, filter) = input.event.strings();
    let event = input.event.event(&user_properties, &filter);
    let options = EncodeOptions {
        payload: match input.payload {
            ArbPayloadMode::Full => PayloadMode::Full,
            ArbPayloadMode::Truncate(limit) => PayloadMode::Truncate(usize::from(limit)),
            ArbPayloadMode::TruncateAny(limit) => PayloadMode::Truncate(limit),
            ArbPayloadMode::Omit => PayloadMode::Omit,
        },
        node: input.node.as_deref(),
        event_seq: input.event_seq,
    };
    let json = encode_checked(&event, &options);
    if let Some(seq) = options.event_seq {
        // Numbered later, where the order is decided: the same bytes.
        let unnumbered = encode_checked(
            &event,
            &EncodeOptions {
                event_seq: None,
                ..options
            },
        );
        let mut appended = vec![0u8; unnumbered.len() + event::EVENT_SEQ_MAX_LEN];
        let len = event::append_event_seq(&unnumbered, seq, &mut appended)
            .unwrap_or_else(|e| panic!("append_event_seq with room failed ({e}): {event:?}"));
        assert_eq!(appended[..len], json[..], "append_event_seq of {event:?}");
    }
    let fields = ordered_object(&json)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {:?}", lossy(&json)));
    let expected = expected_fields(&event, &options);
    assert_eq!(
        fields.len(),
        expected.len(),
        "fields of {event:?}: {fields:?}"
    );
    for ((key, value), (want_key, want)) in fields.iter().zip(&expected) {
        assert_eq!(key, want_key, "field order of {event:?}: {fields:?}");
        match want {
            Expected::Json(want) => assert_eq!(value, want, "field {key} of {event:?}"),
            Expected::Base64(bytes) => {
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("base64 payload is not a string: {value}"));
                assert_eq!(
                    base64_decode(text).as_deref(),
                    Some(&bytes[..]),
                    "base64 payload {text:?} of {event:?}"
                );
            }
        }
    }
}

/// Encodes `event` through the product's encoder with the bound's buffer size and checks the
/// length rules; returns the JSON.
fn encode_checked(event: &Event<'_>, options: &EncodeOptions<'_>) -> Vec<u8> {
    let bound = event::encoded_len_bound(event, options);
    let mut buf = vec![0u8; bound];
    let len = event::encode(event, options, &mut buf)
        .unwrap_or_else(|e| panic!("a buffer of encoded_len_bound failed ({e}): {event:?}"));
    assert!(
        len <= bound,
        "{len} bytes over the bound {bound}: {event:?}"
    );
    assert_eq!(len, bound, "the bound is documented as exact: {event:?}");
    assert_eq!(
        // A buffer of its own: what a failed call leaves in it is meaningless.
        event::encode(event, options, &mut vec![0u8; bound - 1]),
        Err(event::EncodeError::BufferTooSmall {
            needed: bound,
            available: bound - 1
        }),
        "one byte short: {event:?}"
    );
    buf.truncate(len);
    buf
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What one field must hold.
#[derive(Debug)]
enum Expected {
    /// Exactly this JSON value.
    Json(Value),
    /// A base64 string of these bytes.
    Base64(Vec<u8>),
}

fn expected_fields(
    event: &Event<'_>,
    options: &EncodeOptions<'_>,
) -> Vec<(&'static str, Expected)> {
    fn j(value: impl Into<Value>) -> Expected {
        Expected::Json(value.into())
    }
    fn id(id: Id<'_>) -> Expected {
        match id {
            Id::Str(s) => j(s),
            Id::Int(i) => j(i),
        }
    }
    let mut out = Vec::new();
    match event {
        Event::Connected(e) => {
            out.push(("client_id", j(e.client_id)));
            if let Some(username) = e.username {
                out.push(("username", j(username)));
            }
            out.push(("proto_ver", j(e.proto_ver)));
            out.push(("keepalive", j(e.keepalive)));
            out.push(("clean_session", j(e.clean_session)));
            if let Some(peer) = e.peer {
                out.push(("peer", j(peer)));
            }
            if let Some(expiry) = e.session_expiry {
                out.push(("session_expiry", j(expiry)));
            }
            let raw = e.user_properties.properties().as_bytes();
            let (kept, cut) = kept_user_properties(raw);
            if !kept.is_empty() {
                let pairs: Vec<Value> = kept
                    .into_iter()
                    .map(|(k, v)| Value::Array(vec![k.into(), v.into()]))
                    .collect();
                out.push(("user_properties", j(pairs)));
                if cut {
                    out.push(("user_properties_truncated", j(true)));
                }
            }
            out.push(("session_seq", j(e.session_seq)));
        }
        Event::Disconnected(e) => {
            out.push(("client_id", j(e.client_id)));
            out.push(("reason", j(e.reason.as_str())));
            if let Some(code) = e.reason_code {
                out.push(("reason_code", j(code)));
            }
            out.push(("connected_at", j(e.connected_at)));
            out.push(("session_seq", j(e.session_seq)));
        }
        Event::Subscribed(e) => {
            out.push(("client_id", j(e.client_id)));
            out.push(("topic", j(e.topic)));
            out.push(("qos", j(e.qos.as_u8())));
            if let Some(o) = e.options {
                out.push(("no_local", j(o.no_local)));
                out.push(("retain_as_published", j(o.retain_as_published)));
                out.push(("retain_handling", j(o.retain_handling as u8)));
            }
            // `$share/<group>/...`: the group is the text up to the next `/`.
            if let Some(rest) = e.topic.strip_prefix("$share/")
                && let Some(end) = rest.find('/')
            {
                out.push(("share_group", j(&rest[..end])));
            }
        }
        Event::Unsubscribed(e) => {
            out.push(("client_id", j(e.client_id)));
            out.push(("topic", j(e.topic)));
        }
        Event::Message(e) => {
            out.push(("pub_client_id", j(e.pub_client_id)));
            out.push(("topic", j(e.topic)));
            let limit = match options.payload {
                PayloadMode::Full => Some(usize::MAX),
                PayloadMode::Truncate(limit) => Some(limit),
                PayloadMode::Omit => None,
            };
            if let Some(limit) = limit {
                let kept = limit.min(e.payload.len());
                match core::str::from_utf8(e.payload) {
                    Ok(text) => {
                        // Cut at the last character boundary at or below the limit.
                        let cut = (0..=kept).rev().find(|&i| text.is_char_boundary(i));
                        out.push(("payload", j(&text[..cut.unwrap_or(0)])));
                    }
                    Err(_) => {
                        out.push(("payload", Expected::Base64(e.payload[..kept].to_vec())));
                        out.push(("payload_encoding", j("base64")));
                    }
                }
                if e.payload.len() > limit {
                    out.push(("truncated", j(true)));
                }
            }
            out.push(("payload_len", j(e.payload.len())));
            out.push(("qos", j(e.qos.as_u8())));
            out.push(("retain", j(e.retain)));
        }
        Event::MsgAck(e) => {
            let publisher = e.pub_client_id.map_or(Value::Null, Value::from);
            out.push(("pub_client_id", j(publisher)));
            out.push(("ack_client_id", j(e.ack_client_id)));
            out.push(("product_id", id(e.product_id)));
            out.push(("message_id", id(e.message_id)));
            out.push(("topic", j(e.topic)));
            out.push(("qos", j(e.qos.as_u8())));
            if let Some(code) = e.reason_code {
                out.push(("reason_code", j(code)));
            }
        }
        Event::Refused(e) => {
            out.push(("client_id", j(e.client_id)));
            if let Some(username) = e.username {
                out.push(("username", j(username)));
            }
            if let Some(peer) = e.peer {
                out.push(("peer", j(peer)));
            }
            out.push(("reason_code", j(e.reason_code)));
            out.push(("reason", j(e.reason)));
        }
        Event::Denied(e) => {
            out.push(("client_id", j(e.client_id)));
            out.push(("topic", j(e.topic)));
            out.push(("action", j(e.action.as_str())));
            if e.suppressed > 0 {
                out.push(("suppressed", j(e.suppressed)));
            }
        }
        Event::Dropped(e) => {
            out.push(("client_id", j(e.client_id)));
            if let Some(topic) = e.topic {
                out.push(("topic", j(topic)));
            }
            if let Some(filter) = e.filter {
                out.push(("filter", j(filter)));
            }
            out.push(("reason", j(e.reason.as_str())));
            out.push(("count", j(e.count)));
            if e.suppressed > 0 {
                out.push(("suppressed", j(e.suppressed)));
            }
        }
    }
    out.push(("ts", j(event.ts())));
    if let Some(node) = options.node {
        out.push(("node", j(node)));
    }
    if let Some(seq) = options.event_seq {
        out.push(("event_seq", j(seq)));
    }
    out
}

/// The members of a JSON document that must be one object, in document order, duplicates
/// kept.
fn ordered_object(json: &[u8]) -> Result<Vec<(String, Value)>, serde_json::Error> {
    struct Ordered(Vec<(String, Value)>);
    impl<'de> Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(OrderedVisitor)
        }
    }
    struct OrderedVisitor;
    impl<'de> Visitor<'de> for OrderedVisitor {
        type Value = Ordered;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry::<String, Value>()? {
                members.push(member);
            }
            Ok(Ordered(members))
        }
    }
    serde_json::from_slice::<Ordered>(json).map(|o| o.0)
}

/// Decodes standard base64 with padding (RFC 4648 section 4); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, group) in bytes.chunks(4).enumerate() {
        let is_last = (i + 1) * 4 == bytes.len();
        let padding = group.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && !is_last) {
            return None;
        }
        let mut value = 0u32;
        for &c in &group[..4 - padding] {
            value = (value << 6) | sextet(c)?;
        }
        value <<= 6 * padding;
        let decoded = value.to_be_bytes();
        // Padding bits must be zero, as an encoder writes them.
        let keep = 3 - padding;
        if decoded[1 + keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[1..1 + keep]);
    }
    Some(out)
}

// ---- tracker ----------------------------------------------------------------------------------

/// Entries of the fuzzed tracker's ack store: small, so that eviction happens.
const ACK_SLOTS: usize = 4;
/// Text bytes per entry: small enough that long topics and ids are refused.
const ACK_TEXT: usize = 96;

type FuzzTracker = Tracker<FixedAckStore<ACK_SLOTS, ACK_TEXT>>;

#[derive(Arbitrary, Debug)]
struct TrackerSetup {
    /// `None`: every kind; otherwise bit `i` enables `EventKind::ALL[i]`.
    enabled: Option<u8>,
    /// Use the prefix `acme/SYSTEM` instead of `SYSTEM`.
    long_prefix: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        client_id: ArbClientId,
        username: Option<String>,
        proto_ver: u8,
        keepalive: u16,
        clean_session: bool,
        peer: Option<String>,
        session_expiry: Option<u32>,
        /// How many user properties, of `value_len` bytes each.
        user_properties: u8,
        value_len: u8,
    },
    Subscribe {
        filter: ArbTopic,
        granted: Option<u8>,
        options: Option<(bool, bool, u8)>,
    },
    Unsubscribe {
        filter: ArbTopic,
    },
    Publish {
        topic: ArbTopic,
        payload: ArbPayload,
        qos: u8,
        retain: bool,
    },
    Delivery {
        pkid: ArbPkid,
        qos: u8,
        topic: ArbTopic,
        payload: ArbPayload,
        pub_client_id: Option<String>,
        lookup: Option<String>,
        /// MQTT 5 user properties `product_id` and `message_id` (either may be missing or
        /// repeated).
        ids: Option<ArbPropertyIds>,
    },
    PubAck(ArbPkid, Option<u8>),
    PubRec(ArbPkid, Option<u8>),
    Close(u8, Option<u8>),
    Wait(u16),
}

/// The user properties of a delivery that may carry its ids.
#[derive(Arbitrary, Debug)]
struct ArbPropertyIds {
    product_id: Vec<ArbEnvelopeId>,
    message_id: Vec<ArbEnvelopeId>,
    other: Option<(String, String)>,
}

impl ArbPropertyIds {
    fn pairs(&self) -> Vec<(String, String)> {
        let text = |id: &ArbEnvelopeId| match id {
            ArbEnvelopeId::Small(n) => format!("m{}", n % 8),
            ArbEnvelopeId::Str(s) => s.clone(),
            ArbEnvelopeId::Int(i) => i.to_string(),
        };
        let mut pairs: Vec<(String, String)> = self.other.iter().cloned().collect();
        pairs.extend(
            self.product_id
                .iter()
                .map(|id| ("product_id".into(), text(id))),
        );
        pairs.extend(
            self.message_id
                .iter()
                .map(|id| ("message_id".into(), text(id))),
        );
        pairs
    }
}

/// The ids a delivery's user properties give, stated independently: each name exactly once,
/// a non-empty value of at most [`ID_CAPACITY`] bytes.
fn reference_property_ids(pairs: &[(String, String)]) -> Option<Envelope> {
    let one = |name: &str| {
        let values: Vec<&String> = pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect();
        values
    };
    let (products, messages) = (one("product_id"), one("message_id"));
    if products.len() > 1 || messages.len() > 1 {
        return None;
    }
    let id = |v: &String| {
        (!v.is_empty() && v.len() <= ID_CAPACITY)
            .then(|| OwnedId::Str(heapless::String::try_from(v.as_str()).unwrap()))
    };
    Some(Envelope {
        product_id: id(products.first()?)?,
        message_id: id(messages.first()?)?,
    })
}

#[derive(Arbitrary, Debug)]
enum ArbClientId {
    Short(u8),
    Reserved,
    Empty,
    Long(u8),
    Any(String),
}

impl ArbClientId {
    fn text(&self) -> String {
        match self {
            ArbClientId::Short(n) => format!("c{}", n % 4),
            ArbClientId::Reserved => RESERVED_CLIENT_ID.to_owned(),
            ArbClientId::Empty => String::new(),
            // Around CLIENT_ID_CAPACITY (128) bytes.
            ArbClientId::Long(n) => "x".repeat(120 + usize::from(n % 16)),
            ArbClientId::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ArbTopic {
    Plain(u8),
    /// The prefix itself or one of its event topics.
    System(u8),
    Any(String),
}

impl ArbTopic {
    fn text(&self, topics: &SystemTopics) -> String {
        match self {
            ArbTopic::Plain(n) => format!("t/{}", n % 4),
            ArbTopic::System(n) => match EventKind::ALL.get(usize::from(*n % 8)) {
                Some(kind) => topics.topic(*kind).as_str().to_owned(),
                None if n % 2 == 0 => topics.prefix().to_owned(),
                None => format!("{}x", topics.prefix()),
            },
            ArbTopic::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ArbPkid {
    /// 0 to 5, so that ids collide.
    Small(u8),
    Any(u16),
}

impl ArbPkid {
    fn value(&self) -> u16 {
        match self {
            ArbPkid::Small(n) => u16::from(n % 6),
            ArbPkid::Any(n) => *n,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ArbPayload {
    /// An envelope JSON object, rendered by serde_json.
    Envelope {
        product: ArbEnvelopeId,
        message: ArbEnvelopeId,
        message_first: bool,
        extra: Option<String>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum ArbEnvelopeId {
    Small(u8),
    Str(String),
    Int(i64),
}

impl ArbEnvelopeId {
    fn json(&self) -> String {
        match self {
            ArbEnvelopeId::Small(n) => format!("\"m{}\"", n % 8),
            ArbEnvelopeId::Str(s) => Value::from(s.as_str()).to_string(),
            ArbEnvelopeId::Int(i) => i.to_string(),
        }
    }
}

impl ArbPayload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            ArbPayload::Envelope {
                product,
                message,
                message_first,
                extra,
            } => {
                let product = format!("\"product_id\":{}", product.json());
                let message = format!("\"message_id\":{}", message.json());
                let mut members = if *message_first {
                    vec![message, product]
                } else {
                    vec![product, message]
                };
                if let Some(extra) = extra {
                    members.push(format!("\"payload\":{}", Value::from(extra.as_str())));
                }
                format!("{{{}}}", members.join(",")).into_bytes()
            }
            ArbPayload::Raw(bytes) => bytes.clone(),
        }
    }
}

/// One delivery the model expects the ack store to hold.
#[derive(Debug)]
struct ModelEntry {
    pkid: u16,
    seq: u64,
    qos: QoS,
    topic: String,
    envelope: Envelope,
    pub_client_id: Option<String>,
}

impl ModelEntry {
    /// The entry's text bytes in a `FixedAckStore` slot: topic, string ids, publisher.
    fn text_len(&self) -> usize {
        let id_len = |id: &OwnedId| match id {
            OwnedId::Str(s) => s.len(),
            OwnedId::Int(_) => 0,
        };
        self.topic.len()
            + id_len(&self.envelope.product_id)
            + id_len(&self.envelope.message_id)
            + self.pub_client_id.as_ref().map_or(0, String::len)
    }
}

#[derive(Debug, PartialEq)]
enum ModelState {
    Idle,
    Connected { at: u64 },
    Closed,
}

/// What the tracker must be doing: the documented call-order rules, the system-topic rule and
/// the `FixedAckStore` policy (replace by packet id, else a free slot, else evict the oldest
/// insertion; an entry whose text does not fit is refused and leaves its slot free).
struct Model {
    state: ModelState,
    client_id: String,
    prefix: String,
    enabled: EventKinds,
    store: Vec<ModelEntry>,
    next_seq: u64,
    stats: TrackerStats,
    connected_events: u32,
    disconnected_events: u32,
}

impl Model {
    fn is_system_topic(&self, topic: &str) -> bool {
        match topic.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    fn emits(&self, kind: EventKind) -> bool {
        self.enabled.contains(kind)
    }

    fn insert(&mut self, mut entry: ModelEntry) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        let index = if let Some(i) = self.store.iter().position(|e| e.pkid == entry.pkid) {
            Some(i)
        } else if self.store.len() < ACK_SLOTS {
            None
        } else {
            let oldest = (0..self.store.len()).min_by_key(|&i| self.store[i].seq);
            if entry.text_len() <= ACK_TEXT {
                self.stats.deliveries_evicted += 1;
            }
            oldest
        };
        if let Some(i) = index {
            self.store.remove(i);
        }
        if entry.text_len() <= ACK_TEXT {
            self.stats.deliveries_tracked += 1;
            self.store.push(entry);
        } else {
            self.stats.deliveries_too_large += 1;
        }
    }
}

/// Drives a [`Tracker`] with an arbitrary sequence of connection happenings and checks it
/// against a model.
///
/// The happenings: connect (ordinary, reserved, empty, too long or any client id), subscribe,
/// unsubscribe, publish (on ordinary and system topics), deliveries with any packet id, QoS,
/// topic and payload (biased towards envelope JSON so that acknowledgements match), PUBACK and
/// PUBREC with any packet id, close with any reason, and all of these again after the close.
/// The tracker must never panic, must emit `msgack` exactly for a packet id delivered as an
/// envelope at that QoS and not yet acknowledged (and not evicted), with that delivery's fields,
/// keep `pending_acks()` within the store's capacity, emit at most one `connected` and at most
/// one `disconnected`, the latter only after an accepted connect, and count what it drops in
/// [`TrackerStats`] as the model does. Every event it emits must encode.
pub fn tracker(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = TrackerSetup::arbitrary(&mut u) else {
        return;
    };
    let enabled = match setup.enabled {
        None => EventKinds::ALL,
        Some(bits) => EventKind::ALL
            .iter()
            .enumerate()
            // Eight bits for nine kinds: the last (`dropped`) is never on here.
            .filter(|(i, _)| (u16::from(bits) >> i) & 1 != 0)
            .fold(EventKinds::NONE, |set, (_, kind)| set.with(*kind)),
    };
    let topics = if setup.long_prefix {
        SystemTopics::new("acme/SYSTEM").expect("a valid prefix")
    } else {
        SystemTopics::default()
    };
    let mut model = Model {
        state: ModelState::Idle,
        client_id: String::new(),
        prefix: topics.prefix().to_owned(),
        enabled,
        store: Vec::new(),
        next_seq: 0,
        stats: TrackerStats::default(),
        connected_events: 0,
        disconnected_events: 0,
    };
    let config = TrackerConfig {
        topics: topics.clone(),
        enabled,
        ..TrackerConfig::default()
    };
    let mut tracker = FuzzTracker::new(config, FixedAckStore::new());
    let mut now = 1_700_000_000_000u64;
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        step(&mut tracker, &mut model, &topics, &mut now, &op);
        assert_eq!(tracker.stats(), model.stats, "stats after {op:?}");
        assert_eq!(tracker.pending_acks(), model.store.len(), "after {op:?}");
        assert!(tracker.pending_acks() <= ACK_SLOTS);
        assert_eq!(
            tracker.is_connected(),
            matches!(model.state, ModelState::Connected { .. })
        );
        assert_eq!(tracker.client_id(), model.client_id);
        assert!(model.connected_events <= 1 && model.disconnected_events <= 1);
    }
}

fn check_encodes(event: &Event<'_>) {
    let json = encode_checked(event, &EncodeOptions::default());
    assert!(
        ordered_object(&json).is_ok(),
        "tracker event JSON {:?}",
        lossy(&json)
    );
}

fn step(
    tracker: &mut FuzzTracker,
    model: &mut Model,
    topics: &SystemTopics,
    now: &mut u64,
    op: &Op,
) {
    *now = now.saturating_add(1);
    match op {
        Op::Wait(ms) => *now = now.saturating_add(u64::from(*ms)),
        Op::Connect {
            client_id,
            username,
            proto_ver,
            keepalive,
            clean_session,
            peer,
            session_expiry,
            user_properties,
            value_len,
        } => {
            let client_id = client_id.text();
            let pairs: Vec<(String, String)> = (0..*user_properties % 12)
                .map(|i| (format!("k{i}"), "v".repeat(usize::from(*value_len))))
                .collect();
            let block = user_property_block(&pairs);
            let properties = Properties::parse(&block, Context::Connect).unwrap_or_default();
            let info = ConnectInfo {
                client_id: &client_id,
                username: username.as_deref(),
                proto_ver: *proto_ver,
                keepalive: *keepalive,
                clean_session: *clean_session,
                peer: peer.as_deref(),
                transport: None,
                session_expiry: *session_expiry,
                user_properties: UserProperties::new(properties),
                session_seq: session_seq_at(*now),
            };
            let expected = match model.state {
                ModelState::Connected { .. } => Err(ConnectError::AlreadyConnected),
                ModelState::Closed => Err(ConnectError::Closed),
                ModelState::Idle if client_id == RESERVED_CLIENT_ID => {
                    Err(ConnectError::Refused(ClientIdError::Reserved))
                }
                ModelState::Idle if client_id.is_empty() && !clean_session => Err(
                    ConnectError::Refused(ClientIdError::EmptyWithPersistentSession),
                ),
                ModelState::Idle if client_id.len() > CLIENT_ID_CAPACITY => {
                    Err(ConnectError::Refused(ClientIdError::TooLong))
                }
                ModelState::Idle => Ok(()),
            };
            let result = tracker.handle_connect(*now, info);
            match (result, expected) {
                (Ok(event), Ok(())) => {
                    let want = Event::Connected(Connected {
                        ts: *now,
                        client_id: &client_id,
                        username: info.username,
                        proto_ver: info.proto_ver,
                        keepalive: info.keepalive,
                        clean_session: info.clean_session,
                        peer: info.peer,
                        transport: info.transport,
                        session_expiry: info.session_expiry,
                        user_properties: info.user_properties,
                        session_seq: info.session_seq,
                    });
                    if kept_user_properties(&block).1 {
                        model.stats.user_properties_truncated += 1;
                    }
                    assert_eq!(event, model.emits(EventKind::Connected).then_some(want));
                    if let Some(event) = &event {
                        check_encodes(event);
                        model.connected_events += 1;
                    }
                    model.state = ModelState::Connected { at: *now };
                    model.client_id = client_id;
                }
                (Err(e), Err(want)) => assert_eq!(e, want, "connect {op:?}"),
                (result, expected) => {
                    panic!("connect {op:?}: got {result:?}, expected {expected:?}")
                }
            }
        }
        Op::Subscribe {
            filter,
            granted,
            options: o,
        } => {
            let filter = filter.text(topics);
            let granted = granted.map(qos);
            let event = tracker.handle_subscribe(*now, &filter, granted, options(*o));
            let want = granted
                .filter(|_| matches!(model.state, ModelState::Connected { .. }))
                .filter(|_| model.emits(EventKind::Subscribed))
                .map(|qos| {
                    Event::Subscribed(Subscribed {
                        ts: *now,
                        client_id: &model.client_id,
                        topic: &filter,
                        qos,
                        options: options(*o),
                    })
                });
            assert_eq!(event, want, "{op:?}");
            if let Some(event) = &event {
                check_encodes(event);
            }
        }
        Op::Unsubscribe { filter } => {
            let filter = filter.text(topics);
            let event = tracker.handle_unsubscribe(*now, &filter);
            let want = (matches!(model.state, ModelState::Connected { .. })
                && model.emits(EventKind::Unsubscribed))
            .then_some(Event::Unsubscribed(Unsubscribed {
                ts: *now,
                client_id: &model.client_id,
                topic: &filter,
            }));
            assert_eq!(event, want, "{op:?}");
            if let Some(event) = &event {
                check_encodes(event);
            }
        }
        Op::Publish {
            topic,
            payload,
            qos: q,
            retain,
        } => {
            let topic = topic.text(topics);
            let payload = payload.bytes();
            let info = PublishInfo {
                topic: &topic,
                payload: &payload,
                qos: qos(*q),
                retain: *retain,
            };
            let is_system = model.is_system_topic(&topic);
            let outcome = tracker.handle_publish(*now, info);
            let want = if is_system && model.client_id != RESERVED_CLIENT_ID {
                model.stats.publishes_denied += 1;
                PublishOutcome::Denied
            } else if !matches!(model.state, ModelState::Connected { .. })
                || is_system
                || !model.emits(EventKind::Message)
            {
                PublishOutcome::Accepted(None)
            } else {
                PublishOutcome::Accepted(Some(Event::Message(Message {
                    ts: *now,
                    pub_client_id: &model.client_id,
                    topic: &topic,
                    payload: &payload,
                    qos: info.qos,
                    retain: info.retain,
                })))
            };
            assert_eq!(outcome, want, "{op:?}");
            if let PublishOutcome::Accepted(Some(event)) = &outcome {
                check_encodes(event);
            }
        }
        Op::Delivery {
            pkid,
            qos: q,
            topic,
            payload,
            pub_client_id,
            lookup,
            ids,
        } => {
            let topic = topic.text(topics);
            let payload = payload.bytes();
            let pairs = ids.as_ref().map(ArbPropertyIds::pairs).unwrap_or_default();
            let list: Vec<Property<'_>> = pairs
                .iter()
                .map(|(k, v)| Property::UserProperty(k, v))
                .collect();
            let mut block = vec![0u8; codec::properties_len(&list).unwrap_or(0)];
            let properties = codec::encode_properties(&list, &mut block)
                .ok()
                .and_then(|n| Properties::parse(&block[..n], Context::Publish).ok())
                .unwrap_or_default();
            // What reached the tracker (a block MQTT cannot carry is left out).
            let sent: Vec<(String, String)> = properties
                .user_properties()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let info = DeliveryInfo {
                pkid: pkid.value(),
                qos: qos(*q),
                topic: &topic,
                payload: &payload,
                pub_client_id: pub_client_id.as_deref(),
                properties,
            };
            let tracked = matches!(model.state, ModelState::Connected { .. })
                && info.qos != QoS::AtMostOnce
                && !model.is_system_topic(&topic);
            let envelope = if tracked {
                reference_property_ids(&sent).or_else(|| reference_envelope(&payload))
            } else {
                None
            };
            let looked_up = lookup
                .as_deref()
                .and_then(|s| heapless::String::<CLIENT_ID_CAPACITY>::try_from(s).ok());
            let lookup_called = Cell::new(false);
            tracker.handle_delivery(info, |seen| {
                lookup_called.set(true);
                assert_eq!(Some(seen), envelope.as_ref(), "lookup of {op:?}");
                looked_up.clone()
            });
            let expect_lookup = envelope.is_some() && info.pub_client_id.is_none();
            assert_eq!(lookup_called.get(), expect_lookup, "lookup of {op:?}");
            if let Some(envelope) = envelope {
                let pub_client_id = match info.pub_client_id {
                    Some(id) => Some(id.to_owned()),
                    None => looked_up.map(|s| s.as_str().to_owned()),
                };
                model.insert(ModelEntry {
                    pkid: info.pkid,
                    seq: 0,
                    qos: info.qos,
                    topic,
                    envelope,
                    pub_client_id,
                });
            }
        }
        Op::PubAck(pkid, code) => acknowledge(
            tracker,
            model,
            *now,
            (pkid.value(), *code),
            QoS::AtLeastOnce,
        ),
        Op::PubRec(pkid, code) => acknowledge(
            tracker,
            model,
            *now,
            (pkid.value(), *code),
            QoS::ExactlyOnce,
        ),
        Op::Close(r, code) => {
            let reason = reason(*r);
            let event = tracker.handle_close(*now, reason, *code);
            let want = match model.state {
                ModelState::Connected { at } if model.emits(EventKind::Disconnected) => {
                    Some(Event::Disconnected(Disconnected {
                        ts: *now,
                        client_id: &model.client_id,
                        reason,
                        reason_code: *code,
                        connected_at: at,
                        session_seq: session_seq_at(at),
                    }))
                }
                _ => None,
            };
            assert_eq!(event, want, "{op:?}");
            if let Some(event) = &event {
                check_encodes(event);
                model.disconnected_events += 1;
            }
            model.state = ModelState::Closed;
            model.store.clear();
        }
    }
}

fn acknowledge(
    tracker: &mut FuzzTracker,
    model: &mut Model,
    now: u64,
    (pkid, code): (u16, Option<u8>),
    ack_qos: QoS,
) {
    let event = if ack_qos == QoS::AtLeastOnce {
        tracker.handle_puback(now, pkid, code)
    } else {
        tracker.handle_pubrec(now, pkid, code)
    };
    let index = model
        .store
        .iter()
        .position(|e| e.pkid == pkid && e.qos == ack_qos)
        .filter(|_| matches!(model.state, ModelState::Connected { .. }));
    let Some(index) = index else {
        model.stats.acks_unmatched += 1;
        assert_eq!(event, None, "ack of {pkid} at {ack_qos:?} matches nothing");
        return;
    };
    let entry = model.store.remove(index);
    let want = model.emits(EventKind::MsgAck).then(|| {
        Event::MsgAck(MsgAck {
            ts: now,
            pub_client_id: entry.pub_client_id.as_deref(),
            ack_client_id: &model.client_id,
            product_id: entry.envelope.product_id.as_id(),
            message_id: entry.envelope.message_id.as_id(),
            topic: &entry.topic,
            qos: entry.qos,
            reason_code: code,
        })
    });
    assert_eq!(event, want, "ack of {pkid} at {ack_qos:?}");
    if let Some(event) = &event {
        check_encodes(event);
    }
}

/// The `session_seq` the tracker model gives a connection accepted at `now`.
fn session_seq_at(now: u64) -> u64 {
    now.rotate_left(11)
}
