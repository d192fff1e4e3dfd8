//! What goes into and out of a [`Connection`](super::Connection): the driver's verdicts and
//! deliveries, the routes and events it is handed, the counters, the progress of a call.

use crate::QoS;
use crate::codec::{Properties, SubscriptionOptions};
use crate::event::{DropReason, Event, EventKind, Transport};

use super::{Access, CloseCause, ReasonCode};

/// Where a connection comes from, as the driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Peer<'a> {
    /// The remote address as text (reported in `connected`); cut at [`PEER_CAPACITY`](super::PEER_CAPACITY) bytes.
    pub addr: Option<&'a str>,
    /// Whether the remote address is a loopback address (see
    /// [`ServerConfig::loopback_may_subscribe_system`](super::ServerConfig::loopback_may_subscribe_system)).
    pub is_loopback: bool,
    /// How the client reached the server (reported in `connected`).
    pub transport: Transport,
}

/// A CONNECT that passed the engine's rules, for the driver to decide on (credentials, the
/// connection limit, takeover of an older connection with the same client id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnectRequest<'a> {
    /// The client id: the CONNECT's, or the one assigned for an empty id.
    pub client_id: &'a str,
    /// Whether the server assigned the id.
    pub assigned_id: bool,
    /// The user name, if any.
    pub username: Option<&'a str>,
    /// The password, if any.
    pub password: Option<&'a [u8]>,
    /// Whether a session kept for the client id is discarded first (MQTT 3.1.1 clean session;
    /// MQTT 5 clean start).
    pub clean_start: bool,
    /// How long the session outlives the connection, in seconds: 0 ends it with the
    /// connection, [`SESSION_NEVER_EXPIRES`] keeps it (MQTT 3.1.1 gives one of the two by its
    /// clean-session flag; MQTT 5 says it in a property).
    pub session_expiry: u32,
    /// The keep-alive in seconds (0: none).
    pub keep_alive: u16,
    /// The protocol level (4: MQTT 3.1.1).
    pub protocol_level: u8,
}

/// A [`ConnectRequest::session_expiry`] of a session that never expires (MQTT 5.0 section
/// 3.1.2.11.2), which an MQTT 3.1.1 persistent session is.
pub const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

/// The session expiry a CONNECT asks for: MQTT 5 says it in a property (absent: 0), MQTT 3.1
/// and 3.1.1 with the clean-session flag.
pub(super) fn session_expiry_of(connect: &crate::codec::Connect<'_>) -> u32 {
    if connect.version().is_some_and(crate::codec::Version::is_v5) {
        connect.properties.session_expiry_interval().unwrap_or(0)
    } else if connect.clean_session {
        0
    } else {
        SESSION_NEVER_EXPIRES
    }
}

/// The driver's verdict on a [`ConnectRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectAnswer {
    /// Accept the connection.
    Accept {
        /// Whether the router found a session for the client id (CONNACK session present).
        session_present: bool,
    },
    /// Refuse it: [`ReasonCode::BadUserNameOrPassword`], [`ReasonCode::NotAuthorized`],
    /// [`ReasonCode::ServerBusy`] (the connection limit) or [`ReasonCode::ServerUnavailable`].
    Refuse(ReasonCode),
}

impl ConnectAnswer {
    /// Accept, with `session_present` as the router says.
    pub const fn accept(session_present: bool) -> Self {
        ConnectAnswer::Accept { session_present }
    }
}

/// An application message for the router to deliver to the subscribers of its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RoutedPublish<'a> {
    /// The topic name.
    pub topic: &'a str,
    /// The application message.
    pub payload: &'a [u8],
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag.
    pub retain: bool,
    /// The publisher's client id.
    pub publisher: &'a str,
    /// Whether this is the client's last will, published by the server for it.
    pub is_will: bool,
    /// The MQTT 5 properties the client gave it (payload format, message expiry, content
    /// type, response topic, correlation data, user properties), to pass on to subscribers;
    /// empty from MQTT 3.1.1 clients.
    pub properties: Properties<'a>,
    /// Whether the publisher holds a No Local subscription that matches the topic: the
    /// deliveries of this message must then name their publisher ([`Delivery::publisher`]),
    /// so that the engine leaves the publisher's own copy out (MQTT 5.0 section 3.8.3.1).
    /// Only the publisher's own subscriptions can make No Local matter, so otherwise a router
    /// need not carry the publisher for it.
    pub for_no_local: bool,
}

/// An acknowledgement of a delivery, from the client (sections 3.4, 3.5, 3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Ack {
    /// PUBACK: a QoS 1 delivery is done.
    PubAck,
    /// PUBREC: a QoS 2 delivery arrived (the engine has answered PUBREL).
    PubRec,
    /// PUBCOMP: a QoS 2 delivery is done.
    PubComp,
}

/// What the engine asks of whatever routes messages (rumqttd's router, an upstream broker, the
/// gateway's table) or of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Route<'a> {
    /// Decide on this CONNECT, then call [`Connection::handle_connect_answer`](super::Connection::handle_connect_answer).
    Connect(ConnectRequest<'a>),
    /// Deliver an application message.
    Publish(RoutedPublish<'a>),
    /// Add (or update) a subscription of this client. [`Routed::Refused`] gives SUBACK 0x80,
    /// [`Routed::Full`] 0x97 quota exceeded (0x80 before MQTT 5).
    /// Also at the CONNACK for each subscription of a resumed session (see
    /// [`Connection::handle_session_resumed`](super::Connection::handle_session_resumed)),
    /// with Retain Handling 2: the router holds the filter already and sends no retained
    /// message for it.
    Subscribe {
        /// The topic filter.
        filter: &'a str,
        /// Its options: the QoS granted, and MQTT 5's No Local, Retain As Published and Retain
        /// Handling (defaults before MQTT 5). The engine applies No Local, Retain As Published
        /// and Retain Handling 2 at the delivery; the router sends the retained messages of a
        /// subscription (Retain Handling 0 and 1).
        options: SubscriptionOptions,
        /// Whether nothing of the subscription changes its deliveries (default options for
        /// No Local, Retain As Published and Retain Handling 2, no subscription identifier):
        /// a router that delivers once per subscription may then mark the deliveries for it
        /// [`DeliveredFor::Plain`] instead of naming it.
        plain: bool,
        /// Whether the client held no subscription of this filter before (MQTT 5's Retain
        /// Handling 1 sends the retained messages only then; see
        /// [`retained::sends_retained`](crate::retained::sends_retained)).
        is_new: bool,
    },
    /// Remove a subscription this client held.
    Unsubscribe {
        /// The topic filter.
        filter: &'a str,
    },
    /// The client acknowledged the delivery with packet id `pkid`.
    Acked {
        /// The packet id.
        pkid: u16,
        /// Which acknowledgement.
        ack: Ack,
    },
    /// The session of an accepted connection ends; no other route follows.
    End {
        /// How long the session outlives the connection, in seconds (see
        /// [`ConnectRequest::session_expiry`]); 0: it ends now, its subscriptions go.
        session_expiry: u32,
        /// Why.
        cause: CloseCause,
    },
    /// A session kept after its connection ended (see
    /// [`Connection::is_kept`](super::Connection::is_kept)) has ended: its expiry passed, or
    /// the driver had no room to keep it. The router discards it (subscriptions, queued
    /// messages); the next CONNECT of the client id starts a new one (session present 0).
    SessionExpired,
}

/// What became of a [`Route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Routed {
    /// Done (or queued).
    Accepted,
    /// A [`Route::Publish`] was delivered to every other subscriber, but the router cannot
    /// reach this connection during the call (the gateway's table runs inside it): the engine
    /// delivers the message to its own client when one of its subscriptions matches, in order
    /// with its answers and with a packet id of its own.
    ExceptSender,
    /// The router could not take it (a full table, a closed link).
    Refused,
    /// A [`Route::Subscribe`] of a filter the router would need new memory for, past the
    /// driver's bound on the router's memory: SUBACK 0x97 quota exceeded (0x80 before MQTT 5),
    /// counted as [`Counter::SubscriptionRefused`].
    Full,
}

/// Things a server counts; the engine decides what is counted, the driver keeps the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Counter {
    /// A packet from the client was decoded.
    PacketIn,
    /// A packet for the client was written into `tx` by a `handle_*` call that takes an
    /// [`Output`] (a driver counts what [`Connection::handle_delivery`](super::Connection::handle_delivery) writes itself).
    PacketOut,
    /// A CONNECT was refused with this reason (the CONNACK carries its code).
    ConnectRefused(ReasonCode),
    /// No CONNECT came within the connect timeout.
    ConnectTimeout,
    /// A connection was closed at its keep-alive deadline.
    KeepAliveTimeout,
    /// A connection was closed for a protocol error (malformed bytes included).
    ProtocolError,
    /// A connection was closed for a packet over the size limit.
    PacketTooLarge,
    /// A connection was closed for exceeding a per-connection limit.
    QuotaExceeded,
    /// A PUBLISH on a system topic by an ordinary client was dropped (the client stays).
    PublishDenied,
    /// The router refused a PUBLISH or a last will: that message is lost.
    PublishNotRouted,
    /// A SUBSCRIBE filter was refused by the access rules (SUBACK 0x80).
    SubscriptionDenied,
    /// A SUBSCRIBE filter was refused by a limit or the router (SUBACK 0x80).
    SubscriptionRefused,
    /// A PUBLISH (or last will) was dropped by the topic access rules ([`Output::is_allowed`]);
    /// the client stays.
    PublishNotAllowed,
    /// A SUBSCRIBE filter was refused by the topic access rules ([`Output::is_allowed`]):
    /// SUBACK 0x80, MQTT 5: 0x87.
    SubscriptionNotAllowed,
    /// A delivery to this connection's own client (see [`Routed::ExceptSender`] and
    /// [`Output::event`]) found no room in `tx`: it is dropped.
    DeliveryDropped,
    /// A delivery was larger than the client's Maximum Packet Size (MQTT 5.0 section
    /// 3.1.2.11.4): dropped, not sent.
    DeliveryTooLarge,
    /// A delivery's Message Expiry Interval had passed while it waited (MQTT 5.0 section
    /// 3.3.2.3.3): dropped, not sent.
    DeliveryExpired,
    /// A delivery matched only subscriptions with No Local of its own publisher (MQTT 5.0
    /// section 3.8.3.1), or a retained message a subscription with Retain Handling 2 does not
    /// want: not sent.
    DeliveryNotWanted,
    /// An activity event reached the client only through filters whose first level is a
    /// wildcard (`#`, `+/...`), which receive no events unless configured to (see
    /// [`SystemTopics::filter_receives_event`](crate::system::SystemTopics::filter_receives_event)):
    /// not sent.
    EventNotWanted,
    /// A delivery matched more subscriptions with an identifier than it carries
    /// ([`MAX_SUBSCRIPTION_IDS`](super::MAX_SUBSCRIPTION_IDS)): the rest are left out.
    SubscriptionIdsCut,
    /// A session kept after its connection reached its expiry and ended.
    SessionExpired,
    /// A session that asked to outlive its connection ended with it, because the driver had no
    /// room to keep it (see [`Connection::handle_discard`](super::Connection::handle_discard)).
    SessionNotKept,
    /// A will was published after its Will Delay Interval (or when its kept session ended).
    WillDelayed,
    /// An event of this kind (`denied`, `dropped`) was held back by the connection's rate
    /// bound ([`TrackerConfig::client_rate_limit`](crate::tracker::TrackerConfig::client_rate_limit)).
    EventSuppressed(EventKind),
}

/// Where the engine's outputs go; implemented by the driver.
pub trait Output {
    /// Carries out `route` (see [`Route`]).
    fn route(&mut self, route: Route<'_>) -> Routed;
    /// Publishes an activity event wherever events go. A router that cannot reach this
    /// connection during the call (see [`Routed::ExceptSender`]) returns the event as it
    /// publishes it (topic, encoded payload, QoS; it may borrow the output), and the engine
    /// delivers it to its own client when one of its subscriptions matches
    /// (`subscription_qos` is ignored). Others return `None`.
    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>>;
    /// The `session_seq` of the connection accepted at `now` (see [`crate::seq`]): the driver
    /// keeps the node's generator, shared by all its connections, and applies
    /// [`next_session_seq`](crate::seq::next_session_seq) to it. The default is the clock's
    /// number alone (node bits 0), which grows per client id as long as one client id does
    /// not connect twice within a millisecond.
    fn session_seq(&mut self, now: u64) -> u64 {
        crate::seq::next_session_seq(0, now, crate::seq::NodeBits::new(0))
    }
    /// Counts `counter` once.
    fn count(&mut self, counter: Counter) {
        let _ = counter;
    }
    /// Whether `client_id` (with `username`) is listed as allowed to subscribe to the activity
    /// events from anywhere (not only from loopback).
    fn is_system_subscriber(&self, client_id: &str, username: Option<&str>) -> bool {
        let _ = (client_id, username);
        false
    }
    /// Whether the topic access rules allow `access` (a publish, or a SUBSCRIBE filter), asked
    /// after the system-topic rules (see [`access`](super::Access)). The rules are the
    /// driver's; it knows the client's user name from [`Route::Connect`]. The default allows
    /// everything.
    fn is_allowed(&self, access: Access<'_>) -> bool {
        let _ = access;
        true
    }
}

/// What a `handle_*` call did with the input and the transmit buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Progress {
    /// Bytes of the input done with: drop them from the front.
    pub consumed: usize,
    /// Bytes written to the front of `tx`: send them.
    pub written: usize,
}

/// A message the router delivers to this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Delivery<'a> {
    /// The topic name.
    pub topic: &'a str,
    /// The application message.
    pub payload: &'a [u8],
    /// The QoS it was published with.
    pub qos: QoS,
    /// The QoS of the subscription it matched; the delivery goes at the lower of the two
    /// (section 3.8.4).
    pub subscription_qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Whether it is a resend (DUP, section 3.3.1.1).
    pub dup: bool,
    /// The packet id the router chose, or `None` for the engine to choose one.
    pub pkid: Option<u16>,
    /// The publisher's client id, when the router knows it (for `msgack`).
    pub publisher: Option<&'a str>,
    /// The MQTT 5 properties to send with it (see [`RoutedPublish::properties`]); an MQTT
    /// 3.1.1 client gets none.
    pub properties: Properties<'a>,
    /// The RETAIN flag the publisher set, which a subscription with Retain As Published
    /// keeps (MQTT 5.0 section 3.8.3.1) where [`Delivery::retain`] is the router's (set only
    /// for a retained message sent at a subscribe).
    pub published_retain: bool,
    /// Which of this client's subscriptions it is delivered for; the engine reads the MQTT 5
    /// options and identifier of that subscription, or of every matching one.
    pub subscription: DeliveredFor<'a>,
    /// How long the message waited between its publish and this delivery, in ms; the
    /// engine takes it off the Message Expiry Interval (MQTT 5.0 section 3.3.2.3.3).
    pub waited_ms: u64,
}

impl<'a> Delivery<'a> {
    /// A first delivery of a message published at `qos`: a subscription of that QoS (no
    /// downgrade until one is known), no RETAIN, no DUP, a packet id of the engine's, no
    /// publisher named. Set the rest with struct update syntax.
    pub const fn new(topic: &'a str, payload: &'a [u8], qos: QoS) -> Self {
        Delivery {
            topic,
            payload,
            qos,
            subscription_qos: qos,
            retain: false,
            dup: false,
            pkid: None,
            publisher: None,
            properties: Properties::EMPTY,
            published_retain: false,
            subscription: DeliveredFor::AllMatching,
            waited_ms: 0,
        }
    }
}

/// Which of a client's subscriptions a [`Delivery`] is for (MQTT 5 options and subscription
/// identifiers apply per subscription, section 3.3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeliveredFor<'a> {
    /// One delivery for all the client's matching subscriptions (the gateway's table, an
    /// upstream broker): the engine applies every matching subscription it keeps.
    AllMatching,
    /// The subscription to this filter (as the client sent it): the router delivers once per
    /// matching subscription and says which (rumqttd's router).
    Filter(&'a str),
    /// A subscription with MQTT 5's default options and no subscription identifier: nothing
    /// of it changes the delivery, so the engine looks up none. A router that names only the
    /// subscriptions that need it (the broker gives rumqttd identifiers to those alone, since
    /// rumqttd allocates per delivery for one) says this of the others.
    Plain,
}

/// A delivery was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Delivered {
    /// Bytes written to the front of `tx`.
    pub written: usize,
    /// The QoS it went out with.
    pub qos: QoS,
    /// Its packet id (QoS 1 and 2).
    pub pkid: Option<u16>,
    /// Whether remembering it for `msgack` forgot a pending delivery (the oldest, in a full
    /// store, or this one, too large): that acknowledgement will give no `msgack`.
    pub forgotten: bool,
    /// Whether more of the client's matching subscriptions had identifiers than one delivery
    /// carries ([`MAX_SUBSCRIPTION_IDS`](super::MAX_SUBSCRIPTION_IDS)): count
    /// [`Counter::SubscriptionIdsCut`].
    pub subscription_ids_cut: bool,
}

/// Why [`Connection::handle_delivery`](super::Connection::handle_delivery) wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DeliveryError {
    /// The connection is not (or no longer) connected: nothing is sent.
    NotConnected,
    /// `tx` has less room than the packet needs: send what is there and try again.
    NoRoom {
        /// The packet's size.
        needed: usize,
    },
    /// The message cannot go on the wire (a topic or payload too long for MQTT).
    Unencodable,
    /// The client's Receive Maximum of QoS 1 and 2 deliveries is in flight (MQTT 5.0 section
    /// 4.9): keep the delivery and offer it again once [`Connection::may_deliver`](super::Connection::may_deliver);
    /// take no more from the router meanwhile.
    ReceiveMaximum,
    /// The delivery is done with and not sent, for the reason [`DeliveryError::counter`]
    /// names (larger than the client accepts, expired, not wanted by the client's
    /// subscriptions). Complete the router's flow as if the client had acknowledged it.
    Dropped(Counter),
}

impl DeliveryError {
    /// The counter of a delivery the engine dropped (see [`DeliveryError::Dropped`]).
    pub const fn counter(&self) -> Option<Counter> {
        match self {
            DeliveryError::Dropped(counter) => Some(*counter),
            _ => None,
        }
    }

    /// Why a message meant for the client was lost, for a `dropped` event (see
    /// [`Connection::handle_dropped`](super::Connection::handle_dropped)): too large for the
    /// client, or expired. `None` for the other errors (nothing lost, or nothing the client
    /// wanted).
    pub const fn drop_reason(&self) -> Option<DropReason> {
        match self {
            DeliveryError::Dropped(Counter::DeliveryTooLarge) => Some(DropReason::TooLarge),
            DeliveryError::Dropped(Counter::DeliveryExpired) => Some(DropReason::Expired),
            _ => None,
        }
    }
}

impl core::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeliveryError::NotConnected => f.write_str("the connection is not connected"),
            DeliveryError::NoRoom { needed } => {
                write!(f, "the transmit buffer has no room for {needed} bytes")
            }
            DeliveryError::Unencodable => f.write_str("the message cannot be encoded"),
            DeliveryError::ReceiveMaximum => {
                f.write_str("the client's receive maximum is in flight")
            }
            DeliveryError::Dropped(counter) => write!(f, "the delivery was dropped: {counter:?}"),
        }
    }
}

impl core::error::Error for DeliveryError {}
