//! The activity events and their fixed-capacity JSON encoding.
//!
//! The broker publishes one event per client action on `SYSTEM/<topic suffix>` (see
//! [`EventKind::topic_suffix`]); the payload is a flat JSON object (RFC 8259) that [`encode`]
//! writes into a caller buffer. Field names are part of the contract with consumers:
//!
//! | kind | fields, in order |
//! |---|---|
//! | `connected` | `client_id`, `username`?, `proto_ver`, `keepalive`, `clean_session`, `peer`?, `transport`?, `session_expiry`⁵, `user_properties`⁵?, `user_properties_truncated`⁵?, `session_seq`, `ts` |
//! | `disconnected` | `client_id`, `reason`, `reason_code`?, `connected_at`, `session_seq`, `ts` |
//! | `subscribed` | `client_id`, `topic`, `qos`, `no_local`⁵, `retain_as_published`⁵, `retain_handling`⁵, `share_group`?, `ts` |
//! | `unsubscribed` | `client_id`, `topic`, `ts` |
//! | `message` | `pub_client_id`, `topic`, `payload`, `payload_encoding`?, `truncated`?, `payload_len`, `qos`, `retain`, `ts` |
//! | `msgack` | `pub_client_id` (or `null`), `ack_client_id`, `product_id`, `message_id`, `topic`, `qos`, `reason_code`⁵, `ts` |
//! | `refused` | `client_id`, `username`?, `peer`?, `reason_code`, `reason`, `ts` |
//! | `denied` | `client_id`, `topic`, `action`, `suppressed`?, `ts` |
//! | `dropped` | `client_id`, `topic`?, `filter`?, `reason`, `count`, `suppressed`?, `ts` |
//!
//! A field marked `?` is present only when it applies. Every event ends with `"node"` when
//! [`EncodeOptions::node`] is set, then `"event_seq"` when [`EncodeOptions::event_seq`] is set
//! (a driver that numbers its events only after encoding them adds it with
//! [`append_event_seq`], with the same result). `session_seq` is the number of the connection
//! (see [`crate::seq`]): a `connected` and every `disconnected` of the same connection carry
//! the same one. `qos` is a number, `ts` and `connected_at` are the numbers
//! the caller passed in (the core never reads a clock).
//!
//! # MQTT 5 fields
//!
//! A field marked ⁵ is written only for a client that speaks MQTT 5 (the caller passes it as
//! `Some`): the events of MQTT 3.1 and 3.1.1 clients are exactly what they were before MQTT 5.
//! `reason_code` of `disconnected` is there for every protocol version (the code an MQTT 5
//! server uses or the client sent; see [`Disconnected::reason_code`]), absent only when nobody
//! gave one (the transport closed). `share_group` is there for every shared subscription
//! (`$share/<group>/<filter>`, MQTT 5.0 section 4.8.2); `topic` stays the filter as sent, so it
//! matches the `unsubscribed` event of the same subscription. The CONNECT's user properties are
//! bounded: see [`UserProperties`].
//!
//! # Message payloads
//!
//! A payload that is valid UTF-8 goes in verbatim as a JSON string (escaped as RFC 8259 section 7
//! requires). Any other payload is standard base64 with padding (RFC 4648 section 4) and the
//! event adds `"payload_encoding":"base64"`. `payload_len` is always the original length in
//! bytes. [`PayloadMode`] can shorten the payload (`"truncated":true`) or leave it out.
//!
//! # Memory
//!
//! Encoding allocates nothing and needs no scratch buffer: base64 and every string that needs
//! escaping are written straight into the output buffer, each in place of a marker byte the
//! serializer wrote (the encoder keeps a list of up to 32 such strings on the stack, more than
//! any event has). [`encoded_len_bound`] tells how large the output buffer must be; a buffer
//! that is too small gives [`EncodeError::BufferTooSmall`], never a panic or a truncated
//! document.

use core::cell::Cell;
use core::fmt;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::QoS;
use crate::codec::{Properties, SubscriptionOptions};
use crate::json_scan::{WORDS, find_special, first_marked, is_special, special_mask};

/// Which of the activity events an [`Event`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EventKind {
    /// A client finished CONNECT / CONNACK.
    Connected,
    /// A connected client went away, for any [`DisconnectReason`].
    Disconnected,
    /// A client subscribed to one topic filter.
    Subscribed,
    /// A client unsubscribed from one topic filter.
    Unsubscribed,
    /// A client published a message.
    Message,
    /// A client acknowledged a message by publishing an envelope on `SYSTEM/msgack`.
    MsgAck,
    /// The server refused a CONNECT.
    Refused,
    /// The rules refused a publish or a subscription of a client.
    Denied,
    /// The server dropped a message or a delivery.
    Dropped,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Connected,
        EventKind::Disconnected,
        EventKind::Subscribed,
        EventKind::Unsubscribed,
        EventKind::Message,
        EventKind::MsgAck,
        EventKind::Refused,
        EventKind::Denied,
        EventKind::Dropped,
    ];

    /// The topic suffix the event is published under, after the `SYSTEM/` prefix.
    pub const fn topic_suffix(self) -> &'static str {
        match self {
            EventKind::Connected => "presence/connected",
            EventKind::Disconnected => "presence/disconnected",
            EventKind::Subscribed => "subscription/subscribed",
            EventKind::Unsubscribed => "subscription/unsubscribed",
            EventKind::Message => "message",
            EventKind::MsgAck => "msgack",
            EventKind::Refused => "presence/refused",
            EventKind::Denied => "access/denied",
            EventKind::Dropped => "message/dropped",
        }
    }

    /// The short lower-case name of the kind, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Subscribed => "subscribed",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Message => "message",
            EventKind::MsgAck => "msgack",
            EventKind::Refused => "refused",
            EventKind::Denied => "denied",
            EventKind::Dropped => "dropped",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a connection ended, as reported in the `reason` field of a `disconnected` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DisconnectReason {
    /// The client sent DISCONNECT (MQTT 3.1.1 section 3.14).
    Normal,
    /// The client sent an MQTT 5 DISCONNECT asking for its will to be published (reason 0x04,
    /// MQTT 5.0 section 3.14.2.1).
    DisconnectWithWill,
    /// The client sent an MQTT 5 DISCONNECT with an error reason (0x80 or above, MQTT 5.0
    /// section 3.14.2.1), which `reason_code` carries.
    ClientError,
    /// The transport closed without a DISCONNECT.
    TcpClosed,
    /// Nothing arrived within 1.5 times the keep-alive (MQTT 3.1.1 section 3.1.2.10).
    KeepaliveTimeout,
    /// Another connection with the same client id took the session over (section 3.1.4).
    Takenover,
    /// The client broke the protocol, so the server closed the connection.
    ProtocolError,
    /// A packet was larger than the server accepts.
    PacketTooLarge,
    /// The client tried something it is not allowed to do.
    NotAuthorized,
    /// The server is shutting down.
    ServerShutdown,
    /// The upstream broker connection that carried the client closed.
    UpstreamClosed,
    /// The session of a client that was gone ended when its MQTT 5 session expiry interval ran
    /// out (MQTT 5.0 section 3.1.2.11.2); no reason code goes with it.
    SessionExpired,
}

impl DisconnectReason {
    /// The snake_case string written in the `reason` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Normal => "normal",
            DisconnectReason::DisconnectWithWill => "disconnect_with_will",
            DisconnectReason::TcpClosed => "tcp_closed",
            DisconnectReason::KeepaliveTimeout => "keepalive_timeout",
            DisconnectReason::Takenover => "takenover",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::PacketTooLarge => "packet_too_large",
            DisconnectReason::NotAuthorized => "not_authorized",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::UpstreamClosed => "upstream_closed",
            DisconnectReason::ClientError => "client_error",
            DisconnectReason::SessionExpired => "session_expired",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a client reached the server, as reported in the `transport` field of a `connected`
/// event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Transport {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (binary frames, MQTT 3.1.1 section 6).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Transport {
    /// The string written in the `transport` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An envelope id as it appeared in the payload: a JSON string (unescaped) or integer.
///
/// It is written back with the same JSON type: a string for [`Id::Str`], a number for
/// [`Id::Int`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Id<'a> {
    /// The id was a JSON string; this is its unescaped text.
    Str(&'a str),
    /// The id was a JSON integer.
    Int(i64),
}

/// A client finished CONNECT / CONNACK (published on `SYSTEM/presence/connected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connected<'a> {
    /// When the connection was accepted, in the caller's time unit.
    pub ts: u64,
    /// The client id from CONNECT.
    pub client_id: &'a str,
    /// The user name from CONNECT, if the client sent one.
    pub username: Option<&'a str>,
    /// The protocol level from CONNECT (4 for MQTT 3.1.1).
    pub proto_ver: u8,
    /// The keep-alive from CONNECT, in seconds.
    pub keepalive: u16,
    /// The clean-session flag from CONNECT.
    pub clean_session: bool,
    /// The client's address, if the adapter knows it (for example `"192.0.2.7:50312"`).
    pub peer: Option<&'a str>,
    /// How the client reached the server, if the adapter says (`"transport":"tcp"`, `"tls"`,
    /// `"ws"` or `"wss"`).
    pub transport: Option<Transport>,
    /// MQTT 5: the session expiry interval the CONNECT asked for, in seconds (absent: 0;
    /// `4294967295`: never). `None` for MQTT 3.1 and 3.1.1 clients: no field.
    pub session_expiry: Option<u32>,
    /// MQTT 5: the CONNECT's user properties, bounded (see [`UserProperties`]).
    pub user_properties: UserProperties<'a>,
    /// The number of this connection, shared with its `disconnected` events (see
    /// [`crate::seq`]).
    pub session_seq: u64,
}

/// The most user properties a `connected` event carries.
pub const USER_PROPERTIES_MAX_COUNT: usize = 8;

/// The most bytes of user property names and values together (UTF-8, before JSON escaping)
/// a `connected` event carries.
pub const USER_PROPERTIES_MAX_BYTES: usize = 256;

/// The user properties of an MQTT 5 CONNECT (5.0 section 3.1.2.11.8) as the `connected` event
/// carries them: `"user_properties":[["name","value"],...]`, in wire order, duplicates kept.
///
/// Bounded: the first properties are kept while they are at most
/// [`USER_PROPERTIES_MAX_COUNT`] and their names and values at most
/// [`USER_PROPERTIES_MAX_BYTES`] bytes together; the first one that does not fit and all after
/// it are cut, and the event says so with `"user_properties_truncated":true`. No field at all
/// when there is no user property.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UserProperties<'a> {
    properties: Properties<'a>,
}

impl<'a> UserProperties<'a> {
    /// No user properties.
    pub const NONE: UserProperties<'static> = UserProperties {
        properties: Properties::EMPTY,
    };

    /// The user properties of a checked property block (its other properties are ignored).
    pub const fn new(properties: Properties<'a>) -> Self {
        UserProperties { properties }
    }

    /// The whole property block, before the bounds.
    pub const fn properties(&self) -> Properties<'a> {
        self.properties
    }

    /// How many pairs the event carries (the first ones), and whether any are cut: one pass.
    fn bounds(&self) -> (usize, bool) {
        let mut bytes = 0usize;
        let mut kept = 0;
        for (name, value) in self.properties.user_properties() {
            bytes = bytes.saturating_add(name.len()).saturating_add(value.len());
            if kept == USER_PROPERTIES_MAX_COUNT || bytes > USER_PROPERTIES_MAX_BYTES {
                return (kept, true);
            }
            kept += 1;
        }
        (kept, false)
    }

    /// The pairs the event carries, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.properties.user_properties().take(self.bounds().0)
    }

    /// Whether the event carries no pair.
    pub fn is_empty(&self) -> bool {
        self.bounds().0 == 0
    }

    /// Whether some user properties do not fit the bounds and are cut.
    pub fn is_truncated(&self) -> bool {
        self.bounds().1
    }
}

/// A connected client went away (published on `SYSTEM/presence/disconnected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Disconnected<'a> {
    /// When the connection ended.
    pub ts: u64,
    /// The client id of the connection.
    pub client_id: &'a str,
    /// Why the connection ended.
    pub reason: DisconnectReason,
    /// The MQTT 5 reason code (5.0 section 3.14.2.1) of the end: the one the client's
    /// DISCONNECT carried, or the one the server's DISCONNECT carries or, for an MQTT 3.1.1
    /// client (which gets no DISCONNECT), would carry. `None` (no field) when there is none:
    /// the transport closed without a DISCONNECT.
    pub reason_code: Option<u8>,
    /// The `ts` of the matching `connected` event.
    pub connected_at: u64,
    /// The `session_seq` of the matching `connected` event.
    pub session_seq: u64,
}

/// A client subscribed to one topic filter (published on `SYSTEM/subscription/subscribed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribed<'a> {
    /// When the subscription was granted.
    pub ts: u64,
    /// The subscribing client.
    pub client_id: &'a str,
    /// The topic filter, as the client sent it (a shared one with its `$share/<group>/`).
    pub topic: &'a str,
    /// The granted QoS.
    pub qos: QoS,
    /// MQTT 5: the subscription options the client asked for (5.0 section 3.8.3.1), written as
    /// `no_local`, `retain_as_published` and `retain_handling` (0, 1 or 2); their `qos` is
    /// not written (the granted one is). `None` for MQTT 3.1 and 3.1.1 clients: no fields.
    pub options: Option<SubscriptionOptions>,
}

/// The group of a shared subscription's filter (`$share/<group>/<filter>`, MQTT 5.0 section
/// 4.8.2), or `None` for any other filter.
pub fn share_group(filter: &str) -> Option<&str> {
    crate::topic::shared_filter(filter).0
}

/// A client unsubscribed from one topic filter (published on `SYSTEM/subscription/unsubscribed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unsubscribed<'a> {
    /// When the unsubscription happened.
    pub ts: u64,
    /// The unsubscribing client.
    pub client_id: &'a str,
    /// The topic filter.
    pub topic: &'a str,
}

/// A client published a message (published on `SYSTEM/message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Message<'a> {
    /// When the PUBLISH arrived.
    pub ts: u64,
    /// The publishing client.
    pub pub_client_id: &'a str,
    /// The topic name of the PUBLISH.
    pub topic: &'a str,
    /// The application payload, any bytes.
    pub payload: &'a [u8],
    /// The QoS of the PUBLISH.
    pub qos: QoS,
    /// The RETAIN flag of the PUBLISH.
    pub retain: bool,
}

/// A client acknowledged a message through `SYSTEM/msgack` (published on `SYSTEM/msgack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MsgAck<'a> {
    /// When the acknowledgement arrived.
    pub ts: u64,
    /// The client that published the acknowledged message, if known (JSON `null` otherwise).
    pub pub_client_id: Option<&'a str>,
    /// The acknowledging client.
    pub ack_client_id: &'a str,
    /// The product id from the envelope.
    pub product_id: Id<'a>,
    /// The message id from the envelope.
    pub message_id: Id<'a>,
    /// The topic of the acknowledged message.
    pub topic: &'a str,
    /// The QoS of the acknowledgement.
    pub qos: QoS,
    /// MQTT 5: the reason code of the subscriber's PUBACK (QoS 1) or PUBREC (QoS 2), 5.0
    /// section 3.4.2.1: 0x80 or above is a refusal, a negative acknowledgement. `None` for
    /// MQTT 3.1 and 3.1.1 clients: no field.
    pub reason_code: Option<u8>,
}

/// The server refused a CONNECT (published on `SYSTEM/presence/refused`): the CONNACK carried
/// a refusing return code (MQTT 3.1.1 section 3.2.2.3) or reason code (MQTT 5.0 section
/// 3.2.2.2), and the connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refused<'a> {
    /// When the CONNECT was refused.
    pub ts: u64,
    /// The client id of the CONNECT as sent (may be empty), cut at
    /// [`REFUSED_CLIENT_ID_MAX`] bytes.
    pub client_id: &'a str,
    /// The user name of the CONNECT, if it carried one, cut like the client id.
    pub username: Option<&'a str>,
    /// The client's address, if the adapter knows it.
    pub peer: Option<&'a str>,
    /// The code the refusing CONNACK carried: the MQTT 3.1.1 return code (1 to 5) for MQTT 3.1
    /// and 3.1.1 clients, the MQTT 5 reason code (0x80 and above) for MQTT 5 clients.
    pub reason_code: u8,
    /// Why, as a snake_case name: the MQTT 5 name of the reason the server decided on
    /// (`bad_username_or_password`, `not_authorized`, `server_busy`, ...), whatever the
    /// client speaks.
    pub reason: &'a str,
}

/// The longest client id (and user name) a `refused` event carries, in bytes: a refused
/// CONNECT may carry anything up to the packet size limit; the tracker cuts longer ones at a
/// character boundary.
pub const REFUSED_CLIENT_ID_MAX: usize = 128;

/// `text` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut_at_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    // At most three steps back: a UTF-8 character is at most four bytes.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// What a client asked to do with a topic (the `action` of a `denied` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action {
    /// Publish on a topic name (the client's publishes and its last will).
    Publish,
    /// Subscribe to a topic filter (a shared subscription's as sent, `$share/<group>/...`).
    Subscribe,
}

impl Action {
    /// The string written in the `action` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// The rules refused a publish or a subscription of a client (published on
/// `SYSTEM/access/denied`): the topic access rules, or the system-topic rules (only the
/// server publishes under the prefix, only allowed clients read it, other `$` topics are the
/// server's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Denied<'a> {
    /// When the publish or SUBSCRIBE arrived.
    pub ts: u64,
    /// The client.
    pub client_id: &'a str,
    /// The topic name of the publish, or the filter of the subscription.
    pub topic: &'a str,
    /// Publish or subscribe.
    pub action: Action,
    /// How many `denied` events of this connection its rate bound held back since the last
    /// one it emitted (written only when not 0).
    pub suppressed: u32,
}

/// Why the server dropped a message or a delivery (the `reason` of a `dropped` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReason {
    /// A queue or buffer toward the client was full.
    QueueFull,
    /// The router's log of a subscription's filter wrapped past a slow subscriber, which
    /// skipped the messages in between.
    RouterLogOverrun,
    /// The message's MQTT 5 Message Expiry Interval passed before it could be delivered (MQTT
    /// 5.0 section 3.3.2.3.3).
    Expired,
    /// The delivery was larger than the client's Maximum Packet Size (MQTT 5.0 section
    /// 3.1.2.11.4).
    TooLarge,
}

impl DropReason {
    /// The snake_case string written in the `reason` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::RouterLogOverrun => "router_log_overrun",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
        }
    }
}

/// The server dropped messages or deliveries meant for a client (published on
/// `SYSTEM/message/dropped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dropped<'a> {
    /// When the drop was seen.
    pub ts: u64,
    /// The client the messages were for.
    pub client_id: &'a str,
    /// The topic of the dropped message, when known (one message).
    pub topic: Option<&'a str>,
    /// The subscription's filter, when the drop is known by it (`router_log_overrun`).
    pub filter: Option<&'a str>,
    /// Why.
    pub reason: DropReason,
    /// How many messages this event reports (`router_log_overrun`: the messages skipped in
    /// one jump of the log).
    pub count: u64,
    /// How many `dropped` events of this connection its rate bound held back since the last
    /// one it emitted (written only when not 0).
    pub suppressed: u32,
}

/// One activity event, borrowing its strings from the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// See [`Connected`].
    Connected(Connected<'a>),
    /// See [`Disconnected`].
    Disconnected(Disconnected<'a>),
    /// See [`Subscribed`].
    Subscribed(Subscribed<'a>),
    /// See [`Unsubscribed`].
    Unsubscribed(Unsubscribed<'a>),
    /// See [`Message`].
    Message(Message<'a>),
    /// See [`MsgAck`].
    MsgAck(MsgAck<'a>),
    /// See [`Refused`].
    Refused(Refused<'a>),
    /// See [`Denied`].
    Denied(Denied<'a>),
    /// See [`Dropped`].
    Dropped(Dropped<'a>),
}

impl<'a> Event<'a> {
    /// Which kind of event this is.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Connected(_) => EventKind::Connected,
            Event::Disconnected(_) => EventKind::Disconnected,
            Event::Subscribed(_) => EventKind::Subscribed,
            Event::Unsubscribed(_) => EventKind::Unsubscribed,
            Event::Message(_) => EventKind::Message,
            Event::MsgAck(_) => EventKind::MsgAck,
            Event::Refused(_) => EventKind::Refused,
            Event::Denied(_) => EventKind::Denied,
            Event::Dropped(_) => EventKind::Dropped,
        }
    }

    /// The event's timestamp, as the caller passed it in.
    pub fn ts(&self) -> u64 {
        match self {
            Event::Connected(e) => e.ts,
            Event::Disconnected(e) => e.ts,
            Event::Subscribed(e) => e.ts,
            Event::Unsubscribed(e) => e.ts,
            Event::Message(e) => e.ts,
            Event::MsgAck(e) => e.ts,
            Event::Refused(e) => e.ts,
            Event::Denied(e) => e.ts,
            Event::Dropped(e) => e.ts,
        }
    }

    /// The client the event is about: client_id; pub_client_id for message; ack_client_id for
    /// msgack (the Kafka key).
    pub fn subject(&self) -> &'a str {
        match self {
            Event::Connected(e) => e.client_id,
            Event::Disconnected(e) => e.client_id,
            Event::Subscribed(e) => e.client_id,
            Event::Unsubscribed(e) => e.client_id,
            Event::Message(e) => e.pub_client_id,
            Event::MsgAck(e) => e.ack_client_id,
            Event::Refused(e) => e.client_id,
            Event::Denied(e) => e.client_id,
            Event::Dropped(e) => e.client_id,
        }
    }
}

macro_rules! impl_from_for_event {
    ($($kind:ident),*) => {$(
        impl<'a> From<$kind<'a>> for Event<'a> {
            fn from(event: $kind<'a>) -> Self {
                Event::$kind(event)
            }
        }
    )*};
}

impl_from_for_event!(
    Connected,
    Disconnected,
    Subscribed,
    Unsubscribed,
    Message,
    MsgAck,
    Refused,
    Denied,
    Dropped
);

/// How much of a `message` payload goes into the JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PayloadMode {
    /// The whole payload.
    #[default]
    Full,
    /// At most this many payload bytes; a longer payload is cut and marked `"truncated":true`.
    ///
    /// Whether the payload is UTF-8 is decided on the whole payload. A UTF-8 payload is cut at
    /// the last character boundary at or below the limit, so it stays UTF-8; any other payload
    /// keeps exactly this many bytes, then goes through base64.
    Truncate(usize),
    /// No `payload` field at all (`payload_len` is still written).
    Omit,
}

/// Options for [`encode`] and [`encoded_len_bound`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EncodeOptions<'a> {
    /// How much of a `message` payload to include; ignored by the other kinds.
    pub payload: PayloadMode,
    /// When set, every event carries `"node":"<value>"` naming the gateway or broker.
    pub node: Option<&'a str>,
    /// When set, the event ends with `"event_seq":<value>`: the node's number of the event,
    /// one more per event it emits (see [`append_event_seq`]).
    pub event_seq: Option<u64>,
}

/// Why [`encode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer cannot hold the whole document; nothing usable was written.
    BufferTooSmall {
        /// The buffer length that is enough: [`encoded_len_bound`] for the same input.
        needed: usize,
        /// The length of the buffer that was passed in.
        available: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed, available } => write!(
                f,
                "event JSON needs {needed} bytes but the buffer holds {available}"
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Writes the JSON document for `event` into `out` and returns its length in bytes.
///
/// The output is always one complete, valid JSON object (RFC 8259), or an error: a buffer that
/// is too small gives [`EncodeError::BufferTooSmall`] and the bytes already written to `out` are
/// meaningless. A buffer of [`encoded_len_bound`] bytes is always large enough.
pub fn encode(
    event: &Event<'_>,
    options: &EncodeOptions<'_>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let available = out.len();
    encode_or_full(event, options, out).ok_or_else(|| EncodeError::BufferTooSmall {
        needed: encoded_len_bound(event, options),
        available,
    })
}

/// [`encode`] without the length it would have needed: `None` when `out` is too small (the
/// bytes already written to `out` are then meaningless).
///
/// For a driver that only counts a dropped event: it does not link [`encoded_len_bound`]'s
/// second walk over the fields (about 1 KB of flash on a Cortex-M).
pub fn encode_or_full(
    event: &Event<'_>,
    options: &EncodeOptions<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let escapes = Escapes::new();
    let document = Document {
        event,
        options,
        base64: Cell::new(None),
        escapes: &escapes,
    };
    // serde-json-core's only serialization error is `BufferFull`; its error type is
    // `#[non_exhaustive]`, so any other (future) variant is reported the same way.
    let len = serde_json_core::ser::to_slice(&document, out).ok()?;
    if escapes.overflow.get() {
        return None;
    }
    let len = match escapes.count.get() {
        0 => len,
        _ => expand_escapes(out, len, &escapes)?,
    };
    let Some(kept) = document.base64.get() else {
        return Some(len);
    };
    // The first `kept` bytes of a binary payload went out as one marker byte (see [`Base64`]):
    // their base64 text replaces it, in place, moving the fields after it.
    let Event::Message(message) = event else {
        return None;
    };
    expand_base64(out, len, message.payload.get(..kept)?)
}

/// Replaces the [`BASE64_MARKER`] in the document `out[..len]` with `bytes` as a base64 JSON
/// string; returns the new length, `None` when `out` cannot hold it.
///
/// The marker is the document's last byte 0xFF: nothing else serde-json-core writes has one
/// (its strings are UTF-8, where 0xFF never occurs, and the rest is ASCII).
#[inline(never)]
fn expand_base64(out: &mut [u8], len: usize, bytes: &[u8]) -> Option<usize> {
    let at = out.get(..len)?.iter().rposition(|&b| b == BASE64_MARKER)?;
    let text = base64_len(bytes.len());
    // The marker's byte becomes the opening quote; the text and the closing quote are new.
    let new_len = len.checked_add(text + 1)?;
    let out = out.get_mut(..new_len)?;
    out.copy_within(at + 1..len, at + 2 + text);
    let (quoted, _) = out.get_mut(at..)?.split_at_mut_checked(text + 2)?;
    let (open, rest) = quoted.split_first_mut()?;
    let (close, text) = rest.split_last_mut()?;
    *open = b'"';
    *close = b'"';
    write_base64(bytes, text);
    Some(new_len)
}

/// An upper bound of `encode`'s output length for this event and options.
///
/// The bound is currently exact: it walks the same fields as [`encode`] and counts the escaped
/// length of every string, so it costs one pass over the strings and the payload.
pub fn encoded_len_bound(event: &Event<'_>, options: &EncodeOptions<'_>) -> usize {
    let mut counter = LenCounter {
        len: 2, // `{` and `}`
        first: true,
    };
    match walk(event, options, &mut counter) {
        Ok(()) => counter.len,
        Err(never) => match never {},
    }
}

/// The JSON document of one event with its options; serializes as one flat object.
struct Document<'d, 'e, 'a> {
    event: &'e Event<'a>,
    options: &'e EncodeOptions<'a>,
    /// The strings that need escaping, for [`encode_or_full`] to fill in.
    escapes: &'d Escapes<'e>,
    /// How many payload bytes went out as the [`BASE64_MARKER`], for [`encode_or_full`] to
    /// fill in (only a `message` event's payload is base64, and only a prefix of it).
    base64: Cell<Option<usize>>,
}

impl Serialize for Document<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The field count is a hint serde-json-core ignores; 12 is the most any event has.
        let state = serializer.serialize_struct("Event", 12)?;
        let mut sink = StructSink {
            state,
            escapes: self.escapes,
            base64: None,
            error: None,
        };
        let Ok(()) = walk(self.event, self.options, &mut sink);
        if let Some(error) = sink.error {
            return Err(error);
        }
        self.base64.set(sink.base64);
        sink.state.end()
    }
}

/// The field-level view of an event: [`walk`] feeds each field to a sink, once to serialize and
/// once to count, so the encoder and [`encoded_len_bound`] cannot disagree on the field set.
trait FieldSink<'e> {
    type Error;
    fn str(&mut self, key: &'static str, value: &'e str) -> Result<(), Self::Error>;
    fn uint(&mut self, key: &'static str, value: u64) -> Result<(), Self::Error>;
    fn int(&mut self, key: &'static str, value: i64) -> Result<(), Self::Error>;
    fn bool(&mut self, key: &'static str, value: bool) -> Result<(), Self::Error>;
    fn null(&mut self, key: &'static str) -> Result<(), Self::Error>;
    fn base64(&mut self, key: &'static str, value: &[u8]) -> Result<(), Self::Error>;
    fn pairs(&mut self, key: &'static str, value: UserProperties<'e>) -> Result<(), Self::Error>;

    fn id(&mut self, key: &'static str, value: Id<'e>) -> Result<(), Self::Error> {
        match value {
            Id::Str(s) => self.str(key, s),
            Id::Int(i) => self.int(key, i),
        }
    }

    fn qos(&mut self, key: &'static str, value: QoS) -> Result<(), Self::Error> {
        self.uint(key, u64::from(value.as_u8()))
    }
}

/// The part of a `message` payload that goes into the JSON.
enum PayloadView<'p> {
    /// Valid UTF-8, written as a JSON string.
    Text(&'p str),
    /// Any other bytes, written as base64.
    Binary(&'p [u8]),
    /// No `payload` field.
    Omitted,
}

/// Chooses the payload representation and whether it was cut.
fn payload_view(payload: &[u8], mode: PayloadMode) -> (PayloadView<'_>, bool) {
    let limit = match mode {
        PayloadMode::Full => usize::MAX,
        PayloadMode::Truncate(limit) => limit,
        PayloadMode::Omit => return (PayloadView::Omitted, false),
    };
    let truncated = payload.len() > limit;
    match core::str::from_utf8(payload) {
        Ok(text) => {
            let mut cut = limit.min(text.len());
            // At most three steps back: a UTF-8 character is at most four bytes.
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            (PayloadView::Text(&text[..cut]), truncated)
        }
        Err(_) => (
            PayloadView::Binary(&payload[..limit.min(payload.len())]),
            truncated,
        ),
    }
}

/// Feeds every field of `event`, in document order, to `sink`.
fn walk<'e, K: FieldSink<'e>>(
    event: &'e Event<'_>,
    options: &'e EncodeOptions<'_>,
    sink: &mut K,
) -> Result<(), K::Error> {
    match event {
        Event::Connected(e) => {
            sink.str("client_id", e.client_id)?;
            if let Some(username) = e.username {
                sink.str("username", username)?;
            }
            sink.uint("proto_ver", u64::from(e.proto_ver))?;
            sink.uint("keepalive", u64::from(e.keepalive))?;
            sink.bool("clean_session", e.clean_session)?;
            if let Some(peer) = e.peer {
                sink.str("peer", peer)?;
            }
            if let Some(transport) = e.transport {
                sink.str("transport", transport.as_str())?;
            }
            if let Some(expiry) = e.session_expiry {
                sink.uint("session_expiry", u64::from(expiry))?;
            }
            let (kept, cut) = e.user_properties.bounds();
            if kept > 0 {
                sink.pairs("user_properties", e.user_properties)?;
                if cut {
                    sink.bool("user_properties_truncated", true)?;
                }
            }
            sink.uint("session_seq", e.session_seq)?;
        }
        Event::Disconnected(e) => {
            sink.str("client_id", e.client_id)?;
            sink.str("reason", e.reason.as_str())?;
            if let Some(code) = e.reason_code {
                sink.uint("reason_code", u64::from(code))?;
            }
            sink.uint("connected_at", e.connected_at)?;
            sink.uint("session_seq", e.session_seq)?;
        }
        Event::Subscribed(e) => {
            sink.str("client_id", e.client_id)?;
            sink.str("topic", e.topic)?;
            sink.qos("qos", e.qos)?;
            if let Some(options) = e.options {
                sink.bool("no_local", options.no_local)?;
                sink.bool("retain_as_published", options.retain_as_published)?;
                sink.uint("retain_handling", u64::from(options.retain_handling as u8))?;
            }
            if let Some(group) = share_group(e.topic) {
                sink.str("share_group", group)?;
            }
        }
        Event::Unsubscribed(e) => {
            sink.str("client_id", e.client_id)?;
            sink.str("topic", e.topic)?;
        }
        Event::Message(e) => {
            sink.str("pub_client_id", e.pub_client_id)?;
            sink.str("topic", e.topic)?;
            let (view, truncated) = payload_view(e.payload, options.payload);
            match view {
                PayloadView::Text(text) => sink.str("payload", text)?,
                PayloadView::Binary(bytes) => {
                    sink.base64("payload", bytes)?;
                    sink.str("payload_encoding", "base64")?;
                }
                PayloadView::Omitted => {}
            }
            if truncated {
                sink.bool("truncated", true)?;
            }
            // `usize` is at most 64 bits on every supported target, so this never saturates.
            let payload_len = u64::try_from(e.payload.len()).unwrap_or(u64::MAX);
            sink.uint("payload_len", payload_len)?;
            sink.qos("qos", e.qos)?;
            sink.bool("retain", e.retain)?;
        }
        Event::MsgAck(e) => {
            match e.pub_client_id {
                Some(id) => sink.str("pub_client_id", id)?,
                None => sink.null("pub_client_id")?,
            }
            sink.str("ack_client_id", e.ack_client_id)?;
            sink.id("product_id", e.product_id)?;
            sink.id("message_id", e.message_id)?;
            sink.str("topic", e.topic)?;
            sink.qos("qos", e.qos)?;
            if let Some(code) = e.reason_code {
                sink.uint("reason_code", u64::from(code))?;
            }
        }
        Event::Refused(e) => {
            sink.str("client_id", e.client_id)?;
            if let Some(username) = e.username {
                sink.str("username", username)?;
            }
            if let Some(peer) = e.peer {
                sink.str("peer", peer)?;
            }
            sink.uint("reason_code", u64::from(e.reason_code))?;
            sink.str("reason", e.reason)?;
        }
        Event::Denied(e) => {
            sink.str("client_id", e.client_id)?;
            sink.str("topic", e.topic)?;
            sink.str("action", e.action.as_str())?;
            if e.suppressed > 0 {
                sink.uint("suppressed", u64::from(e.suppressed))?;
            }
        }
        Event::Dropped(e) => {
            sink.str("client_id", e.client_id)?;
            if let Some(topic) = e.topic {
                sink.str("topic", topic)?;
            }
            if let Some(filter) = e.filter {
                sink.str("filter", filter)?;
            }
            sink.str("reason", e.reason.as_str())?;
            sink.uint("count", e.count)?;
            if e.suppressed > 0 {
                sink.uint("suppressed", u64::from(e.suppressed))?;
            }
        }
    }
    sink.uint("ts", event.ts())?;
    if let Some(node) = options.node {
        sink.str("node", node)?;
    }
    if let Some(seq) = options.event_seq {
        sink.uint(EVENT_SEQ_KEY, seq)?;
    }
    Ok(())
}

/// The key of the event number, the last field of every event that has one.
const EVENT_SEQ_KEY: &str = "event_seq";

/// What [`append_event_seq`] writes before the number.
const EVENT_SEQ_PREFIX: &[u8] = b",\"event_seq\":";

/// The most bytes [`append_event_seq`] adds to a document: `,"event_seq":` and 20 digits.
pub const EVENT_SEQ_MAX_LEN: usize = EVENT_SEQ_PREFIX.len() + 20;

/// Writes `document` (one event as [`encode`] wrote it, without `event_seq`) into `out` with
/// `"event_seq":<event_seq>` added as its last field, and returns the new length: the same
/// bytes [`encode`] writes with [`EncodeOptions::event_seq`] set.
///
/// For a driver that encodes events where they happen and numbers them later, where their order
/// is decided. `out` needs `document.len()` plus [`EVENT_SEQ_MAX_LEN`] bytes at most; a smaller
/// one gives [`EncodeError::BufferTooSmall`]. A `document` that is not a JSON object with a
/// field gives the same error with `needed` 0 (it cannot come from [`encode`]).
pub fn append_event_seq(
    document: &[u8],
    event_seq: u64,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let malformed = EncodeError::BufferTooSmall {
        needed: 0,
        available: out.len(),
    };
    let Some((b'}', body)) = document.split_last() else {
        return Err(malformed);
    };
    if body.len() < 2 {
        return Err(malformed);
    }
    let digits = decimal_len(event_seq);
    let needed = document.len() + EVENT_SEQ_PREFIX.len() + digits;
    let too_small = EncodeError::BufferTooSmall {
        needed,
        available: out.len(),
    };
    let out = out.get_mut(..needed).ok_or(too_small)?;
    let (head, tail) = out.split_at_mut(body.len());
    head.copy_from_slice(body);
    let (key, tail) = tail.split_at_mut(EVENT_SEQ_PREFIX.len());
    key.copy_from_slice(EVENT_SEQ_PREFIX);
    let (number, close) = tail.split_at_mut(digits);
    let mut rest = event_seq;
    for digit in number.iter_mut().rev() {
        *digit = b'0' + (rest % 10).to_le_bytes()[0];
        rest /= 10;
    }
    close.copy_from_slice(b"}");
    Ok(needed)
}

/// Serializes fields into a serde struct.
///
/// Its methods are `#[inline]`: without the hint the compiler kept them out of line in the
/// benchmark's build (which has the `fuzzing` feature), at 3 to 13 % more instructions per
/// event than when they are inlined into [`walk`].
///
/// Its error is kept, not returned: the sink's `Error` is `Infallible`, so [`walk`] has no
/// early return after each field (about 200 B of flash on a Cortex-M, where the methods stay
/// out of line). After an error the remaining fields fail too, or write into a document that
/// is thrown away; [`Document`] returns the first error.
struct StructSink<'d, 'e, S: SerializeStruct> {
    state: S,
    /// The strings that went out as [`ESCAPE_MARKER`]s.
    escapes: &'d Escapes<'e>,
    /// How many bytes a [`Base64`] marker stands for, if one was written.
    base64: Option<usize>,
    /// The first error.
    error: Option<S::Error>,
}

impl<S: SerializeStruct> StructSink<'_, '_, S> {
    /// Keeps the first error of `result`.
    #[inline]
    fn keep(&mut self, result: Result<(), S::Error>) -> Result<(), core::convert::Infallible> {
        if let Err(error) = result
            && self.error.is_none()
        {
            self.error = Some(error);
        }
        Ok(())
    }
}

impl<'e, S: SerializeStruct> FieldSink<'e> for StructSink<'_, 'e, S> {
    type Error = core::convert::Infallible;

    #[inline]
    fn str(&mut self, key: &'static str, value: &'e str) -> Result<(), Self::Error> {
        self.field(key, &Value::Str(JsonStr(value, self.escapes)))
    }

    #[inline]
    fn uint(&mut self, key: &'static str, value: u64) -> Result<(), Self::Error> {
        self.field(key, &Value::Decimal(Decimal(false, value)))
    }

    #[inline]
    fn int(&mut self, key: &'static str, value: i64) -> Result<(), Self::Error> {
        self.field(
            key,
            &Value::Decimal(Decimal(value < 0, value.unsigned_abs())),
        )
    }

    #[inline]
    fn bool(&mut self, key: &'static str, value: bool) -> Result<(), Self::Error> {
        self.field(key, &Value::Bool(value))
    }

    #[inline]
    fn null(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.field(key, &Value::Null)
    }

    #[inline]
    fn base64(&mut self, key: &'static str, value: &[u8]) -> Result<(), Self::Error> {
        self.base64 = Some(value.len());
        self.field(key, &Value::Base64(Base64(value)))
    }

    fn pairs(&mut self, key: &'static str, value: UserProperties<'e>) -> Result<(), Self::Error> {
        self.field(key, &Value::Pairs(Pairs(value, self.escapes)))
    }
}

impl<S: SerializeStruct> StructSink<'_, '_, S> {
    /// Every field through one `serialize_field` (one copy of serde-json-core's separator
    /// and key writing instead of one per value type).
    #[inline(never)]
    fn field(
        &mut self,
        key: &'static str,
        value: &Value<'_, '_, '_>,
    ) -> Result<(), core::convert::Infallible> {
        let result = self.state.serialize_field(key, value);
        self.keep(result)
    }
}

/// One field's value, for [`StructSink::field`].
enum Value<'d, 'e, 'b> {
    Str(JsonStr<'d, 'e>),
    Decimal(Decimal),
    Bool(bool),
    Null,
    Base64(Base64<'b>),
    Pairs(Pairs<'d, 'e>),
}

impl Serialize for Value<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(value) => value.serialize(serializer),
            Value::Decimal(value) => value.serialize(serializer),
            Value::Bool(value) => serializer.serialize_bool(*value),
            Value::Null => serializer.serialize_unit(),
            Value::Base64(value) => value.serialize(serializer),
            Value::Pairs(value) => value.serialize(serializer),
        }
    }
}

/// An integer as serde-json-core writes a `u64` or an `i64` (decimal digits, a `-` before a
/// negative one), through one digit loop for both: `serialize_bytes`, which serde-json-core
/// writes as it is (see [`JsonStr`]).
struct Decimal(bool, u64);

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // "-18446744073709551615" at most.
        let mut digits = [0u8; 21];
        let mut at = digits.len();
        let mut value = self.1;
        loop {
            at -= 1;
            if let Some(slot) = digits.get_mut(at) {
                // The remainder is below 10.
                *slot = b'0' + (value % 10) as u8;
            }
            value /= 10;
            if value == 0 {
                break;
            }
        }
        if self.0 {
            at -= 1;
            if let Some(slot) = digits.get_mut(at) {
                *slot = b'-';
            }
        }
        serializer.serialize_bytes(digits.get(at..).unwrap_or_default())
    }
}

/// User properties as a JSON array of `[name, value]` arrays.
struct Pairs<'d, 'e>(UserProperties<'e>, &'d Escapes<'e>);

impl Serialize for Pairs<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(None)?;
        for (name, value) in self.0.iter() {
            seq.serialize_element(&(JsonStr(name, self.1), JsonStr(value, self.1)))?;
        }
        seq.end()
    }
}

/// The most strings that need escaping one event may hold: every string field, and the
/// [`UserProperties`] pairs' (at most 8 pairs), fit with room to spare.
const ESCAPES: usize = 32;

/// The byte a string that needs escaping goes out as; [`encode_or_full`] replaces it with the
/// escaped string. serde-json-core never writes it (its strings are UTF-8, where 0xFE never
/// occurs, and the rest is ASCII), nor does [`Base64`] (its marker is 0xFF).
const ESCAPE_MARKER: u8 = 0xFE;

/// The strings that went out as [`ESCAPE_MARKER`]s, in document order.
struct Escapes<'e> {
    texts: [Cell<&'e str>; ESCAPES],
    count: Cell<usize>,
    /// More than [`ESCAPES`]: the document is reported as too large.
    overflow: Cell<bool>,
}

impl<'e> Escapes<'e> {
    fn new() -> Self {
        Escapes {
            texts: [const { Cell::new("") }; ESCAPES],
            count: Cell::new(0),
            overflow: Cell::new(false),
        }
    }

    fn push(&self, text: &'e str) {
        let n = self.count.get();
        match self.texts.get(n) {
            Some(slot) => {
                slot.set(text);
                self.count.set(n + 1);
            }
            None => self.overflow.set(true),
        }
    }
}

/// A JSON string value, written exactly as serde-json-core's `serialize_str` writes it, but
/// without its character-by-character escaping.
///
/// Text with nothing to escape is its own escaped form and goes to the serializer at once as
/// serde-json-core's [`EscapedStr`](serde_json_core::str::EscapedStr). Other text goes out as
/// one [`ESCAPE_MARKER`] byte (`serialize_bytes`: serde-json-core writes those bytes as they
/// are, its way to emit a pre-formatted value, so this type is only for serde-json-core) and is
/// kept in [`Escapes`]; [`encode_or_full`] writes it escaped in the marker's place, straight
/// into the output (no stack buffer, no length limit).
struct JsonStr<'d, 'e>(&'e str, &'d Escapes<'e>);

impl Serialize for JsonStr<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde_json_core::str::EscapedStr;
        if find_special(self.0.as_bytes()).is_none() {
            // Nothing to escape: the text is its own escaped form.
            return EscapedStr(self.0).serialize(serializer);
        }
        self.1.push(self.0);
        serializer.serialize_bytes(&[ESCAPE_MARKER])
    }
}

/// Replaces the [`ESCAPE_MARKER`]s in the document `out[..len]`, from the last, with the
/// strings of `escapes` as JSON strings; returns the new length, `None` when `out` cannot hold
/// them.
#[inline(never)]
fn expand_escapes(out: &mut [u8], mut len: usize, escapes: &Escapes<'_>) -> Option<usize> {
    // Markers are searched for before the one replaced last: the text written after it holds
    // none (it is escaped UTF-8).
    let mut end = len;
    for slot in escapes.texts.get(..escapes.count.get())?.iter().rev() {
        let text = slot.get();
        let at = out.get(..end)?.iter().rposition(|&b| b == ESCAPE_MARKER)?;
        let quoted = json_string_len(text);
        let new_len = len.checked_add(quoted - 1)?;
        let out = out.get_mut(..new_len)?;
        out.copy_within(at + 1..len, at + quoted);
        write_quoted(text.as_bytes(), 0, out.get_mut(at..at + quoted)?)?;
        len = new_len;
        end = at;
    }
    Some(len)
}

/// Writes `text` as a JSON string, in quotes and escaped the way serde-json-core escapes it,
/// into `out` and returns its length; `None` when `out` is too small. Its first `plain` bytes
/// are known to need no escaping.
///
/// serde-json-core's escapes: `\"` and `\\`, the short forms `\b`, `\t`, `\n`, `\f`, `\r`, and
/// `\u00XX` with upper-case hex for the other control characters; every other byte, also of
/// multi-byte characters, as it is.
fn write_quoted(text: &[u8], plain: usize, out: &mut [u8]) -> Option<usize> {
    write_quoted_with(text, plain, out, WORDS)
}

/// [`write_quoted`], eight bytes per step while it can when `words` (see [`WORDS`]), else
/// byte by byte.
fn write_quoted_with(text: &[u8], plain: usize, out: &mut [u8], words: bool) -> Option<usize> {
    *out.first_mut()? = b'"';
    out.get_mut(1..=plain)?.copy_from_slice(text.get(..plain)?);
    let mut len = 1 + plain;
    let mut at = plain;
    // Eight bytes per step, while there are eight bytes of text and the room for them escaped
    // (at most six bytes each) plus one more copy: the step's bytes are copied as they are,
    // then each special one is escaped over its copy and the bytes after it are copied again
    // after the escape.
    while let (true, Some(chunk), true) = (words, text.get(at..at + 8), len + 56 <= out.len()) {
        let bytes = word(chunk)?;
        let mut mask = special_mask(bytes);
        out.get_mut(len..len + 8)?.copy_from_slice(chunk);
        // `done` bytes of the step are written, and `len` is where the next one goes.
        let mut done = 0;
        while mask != 0 {
            let i = first_marked(mask);
            len = write_escaped(*chunk.get(i)?, out, len + (i - done))?;
            done = i + 1;
            // The rest of the step, shifted out of the word; bytes past its end are scratch
            // that later writes replace.
            let rest = bytes
                .checked_shr(8 * u32::try_from(done).ok()?)
                .unwrap_or(0);
            out.get_mut(len..len + 8)?
                .copy_from_slice(&rest.to_le_bytes());
            // Each marked byte has one bit set: this clears the lowest one.
            mask &= mask - 1;
        }
        len += 8 - done;
        at += 8;
    }
    // The rest one by one (after the word steps, fewer than eight).
    for &byte in text.get(at..)? {
        len = if is_special(byte) {
            write_escaped(byte, out, len)?
        } else {
            *out.get_mut(len)? = byte;
            len + 1
        };
    }
    *out.get_mut(len)? = b'"';
    Some(len + 1)
}

/// The eight bytes of `chunk` (exactly eight) as [`special_mask`] reads them.
fn word(chunk: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(chunk.try_into().ok()?))
}

/// Writes the escape of the special byte `byte` at `out[at..]` and returns where it ends.
fn write_escaped(byte: u8, out: &mut [u8], at: usize) -> Option<usize> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0A => b'n',
        0x0C => b'f',
        0x0D => b'r',
        _ => 0,
    };
    if short != 0 {
        out.get_mut(at..at + 2)?.copy_from_slice(&[b'\\', short]);
        Some(at + 2)
    } else {
        let hex = [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0F)]];
        let escape = [b'\\', b'u', b'0', b'0', hex[0], hex[1]];
        out.get_mut(at..at + 6)?.copy_from_slice(&escape);
        Some(at + 6)
    }
}

/// Counts the bytes serde-json-core writes for the same fields.
struct LenCounter {
    len: usize,
    first: bool,
}

impl LenCounter {
    /// Adds the separator and `"key":` before a value of `value_len` bytes.
    fn field(
        &mut self,
        key: &'static str,
        value_len: usize,
    ) -> Result<(), core::convert::Infallible> {
        let separator = usize::from(!self.first);
        self.first = false;
        // Keys are our own ASCII names without characters that need escaping.
        self.len = self
            .len
            .saturating_add(separator + key.len() + 3)
            .saturating_add(value_len);
        Ok(())
    }
}

impl<'e> FieldSink<'e> for LenCounter {
    type Error = core::convert::Infallible;

    fn str(&mut self, key: &'static str, value: &str) -> Result<(), Self::Error> {
        self.field(key, json_string_len(value))
    }

    fn uint(&mut self, key: &'static str, value: u64) -> Result<(), Self::Error> {
        self.field(key, decimal_len(value))
    }

    fn int(&mut self, key: &'static str, value: i64) -> Result<(), Self::Error> {
        self.field(
            key,
            usize::from(value < 0) + decimal_len(value.unsigned_abs()),
        )
    }

    fn bool(&mut self, key: &'static str, value: bool) -> Result<(), Self::Error> {
        self.field(key, if value { 4 } else { 5 })
    }

    fn null(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.field(key, 4)
    }

    fn base64(&mut self, key: &'static str, value: &[u8]) -> Result<(), Self::Error> {
        self.field(key, base64_len(value.len()).saturating_add(2))
    }

    fn pairs(&mut self, key: &'static str, value: UserProperties<'_>) -> Result<(), Self::Error> {
        // `[` and `]`, and per pair `[`, `,`, `]` and a comma before every pair but the first.
        let (count, strings) = value.iter().fold((0usize, 0usize), |(n, len), (k, v)| {
            let pair = json_string_len(k).saturating_add(json_string_len(v));
            (n + 1, len.saturating_add(pair))
        });
        let len = 2 + strings + 3 * count + count.saturating_sub(1);
        self.field(key, len)
    }
}

/// The number of decimal digits of `value`.
fn decimal_len(mut value: u64) -> usize {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

/// The length of `value` as a JSON string with quotes, escaped the way serde-json-core does.
fn json_string_len(value: &str) -> usize {
    let escaped: usize = value
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0A | 0x0C | 0x0D => 2,
            0x00..=0x1F => 6,
            _ => 1,
        })
        .fold(0usize, usize::saturating_add);
    escaped.saturating_add(2)
}

/// The length of the padded base64 text for `len` bytes, without quotes.
const fn base64_len(len: usize) -> usize {
    len.div_ceil(3).saturating_mul(4)
}

/// The standard base64 alphabet (RFC 4648 section 4).
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The byte [`Base64`] serializes as; [`encode_or_full`] replaces it with the base64 text.
const BASE64_MARKER: u8 = 0xFF;

/// Bytes as standard base64 with padding.
///
/// Serialized as one [`BASE64_MARKER`] byte (serde-json-core's `serialize_bytes` writes bytes
/// as they are), which [`encode_or_full`] replaces with the quoted text: the text is written
/// straight into the output buffer, so it needs no buffer of its own and no `core::fmt` (which
/// `collect_str` would take, about 800 B of flash on a Cortex-M). Only for [`encode_or_full`].
struct Base64<'p>(&'p [u8]);

/// Writes `bytes` as base64 into `text`, which holds [`base64_len`] bytes for them.
#[inline(never)]
fn write_base64(bytes: &[u8], text: &mut [u8]) {
    let mut at = 0;
    for group in bytes.chunks(3) {
        // The group's (up to) three bytes as 24 bits, missing ones zero.
        let mut bits = 0u32;
        for k in 0..3 {
            bits = (bits << 8) | u32::from(group.get(k).copied().unwrap_or(0));
        }
        for i in 0..4 {
            // A group of n bytes gives n + 1 characters, then `=` padding.
            let c = if i <= group.len() {
                BASE64_ALPHABET[((bits >> (18 - 6 * i)) & 0x3F) as usize]
            } else {
                b'='
            };
            if let Some(slot) = text.get_mut(at) {
                *slot = c;
            }
            at += 1;
        }
    }
}

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 48 input bytes become 64 output characters; the buffer is flushed once per chunk.
        let mut text = [0u8; 64];
        for chunk in self.0.chunks(48) {
            let text = text.get_mut(..base64_len(chunk.len())).ok_or(fmt::Error)?;
            write_base64(chunk, text);
            f.write_str(core::str::from_utf8(text).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&[BASE64_MARKER])
    }
}

#[cfg(test)]
mod tests;
