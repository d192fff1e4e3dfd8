//! The per-connection tracker: what a client does in, activity events out (sans-IO).
//!
//! One [`Tracker`] per client connection. The adapter reports each happening with a `handle_*`
//! call, passing the time (`now`, milliseconds since the Unix epoch) and borrowed packet fields;
//! the call returns the event that happening produces, if any, borrowing the tracker and the
//! inputs (no copy of a payload is ever made). Call order for one connection:
//!
//! 1. [`Tracker::handle_connect`] once, when the CONNECT is accepted (the reserved-id rule is
//!    applied here: `Err` means answer CONNACK with the error's return code and close);
//! 2. any number of [`Tracker::handle_subscribe`], [`Tracker::handle_unsubscribe`],
//!    [`Tracker::handle_publish`] (client to server), [`Tracker::handle_delivery`] (server to
//!    client), [`Tracker::handle_puback`] and [`Tracker::handle_pubrec`];
//! 3. [`Tracker::handle_close`] once, with the [`DisconnectReason`].
//!
//! Besides, whenever they happen: [`Tracker::handle_refused`] (the server refused the CONNECT),
//! [`Tracker::handle_denied`] (the rules refused a publish or a subscription) and
//! [`Tracker::handle_dropped`] (the server dropped messages for the client). `denied` and
//! `dropped` are bounded per connection ([`TrackerConfig::client_rate_limit`]): a client that
//! provokes them without end cannot flood the event pipeline; what the bound holds back is
//! [`Reported::Suppressed`] and counted in the next event of the kind (`suppressed`).
//!
//! Calls out of this order (before connect, after close) produce no event and change no state,
//! with one exception: a publish on a system topic is [`PublishOutcome::Denied`] (and counted)
//! whenever it comes, since the rule does not depend on the session.
//! The `msgack` correlation (QoS 1 on PUBACK, QoS 2 on PUBREC, as EMQX does) keeps deliveries of
//! envelope messages in an [`AckStore`] keyed by packet id; its limits are counted in
//! [`TrackerStats`].

use crate::QoS;
use crate::acks::{AckStore, PendingAck, Stored};
use crate::client_id::{CLIENT_ID_CAPACITY, ClientIdError, check_client_id};
use crate::codec::{Properties, SubscriptionOptions};
use crate::envelope::{Envelope, find_envelope};
use crate::event::{
    Action, Connected, Denied, DisconnectReason, Disconnected, DropReason, Dropped, Event,
    EventKind, Message, MsgAck, REFUSED_CLIENT_ID_MAX, Refused, Subscribed, Transport,
    Unsubscribed, UserProperties, cut_at_boundary,
};
use crate::system::SystemTopics;

/// A set of [`EventKind`]s: which events a tracker emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventKinds(u16);

impl EventKinds {
    /// Every kind.
    pub const ALL: EventKinds = EventKinds(0b1_1111_1111);
    /// No kind.
    pub const NONE: EventKinds = EventKinds(0);

    const fn bit(kind: EventKind) -> u16 {
        1 << (kind as u8)
    }

    /// This set with `kind` added.
    pub const fn with(self, kind: EventKind) -> Self {
        EventKinds(self.0 | Self::bit(kind))
    }

    /// This set with `kind` removed.
    pub const fn without(self, kind: EventKind) -> Self {
        EventKinds(self.0 & !Self::bit(kind))
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: EventKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }
}

impl Default for EventKinds {
    fn default() -> Self {
        Self::ALL
    }
}

/// What every tracker of a server shares: the system topics, which events are on, and how
/// many `denied` and `dropped` events one connection may emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// The system topics (prefix) and their rules.
    pub topics: SystemTopics,
    /// Which event kinds are emitted; the others are tracked but not reported.
    pub enabled: EventKinds,
    /// The most `denied` events, and the most `dropped` events, one connection emits per
    /// second (of the `now` passed in); the rest are held back and counted
    /// ([`Reported::Suppressed`]). 0: no bound. Default [`DEFAULT_CLIENT_RATE_LIMIT`].
    pub client_rate_limit: u16,
}

/// The default [`TrackerConfig::client_rate_limit`]: 10 `denied` and 10 `dropped` events per
/// second and connection.
pub const DEFAULT_CLIENT_RATE_LIMIT: u16 = 10;

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            topics: SystemTopics::default(),
            enabled: EventKinds::ALL,
            client_rate_limit: DEFAULT_CLIENT_RATE_LIMIT,
        }
    }
}

/// A per-connection bound of one event kind: at most a number of events per second of the
/// caller's clock (`now / 1000`); eight bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Throttle {
    /// The second the count is for (wraps after 136 years: only equality matters).
    second: u32,
    /// Events let through in that second.
    sent: u16,
    /// Events held back since the last one let through (saturating).
    held: u16,
}

impl Throttle {
    /// Whether one more event may go at `now` under `limit` per second (0: no bound): `Some`
    /// with the number held back before it, or `None` (held back, counted).
    fn admit(&mut self, now: u64, limit: u16) -> Option<u32> {
        // Only a change of second matters: the low 32 bits of it are enough.
        let second = u32::try_from((now / 1000) & u64::from(u32::MAX)).unwrap_or(0);
        if second != self.second {
            self.second = second;
            self.sent = 0;
        }
        if limit > 0 && self.sent >= limit {
            self.held = self.held.saturating_add(1);
            return None;
        }
        self.sent = self.sent.saturating_add(1);
        Some(u32::from(core::mem::take(&mut self.held)))
    }
}

/// What a tracker made of a refusal, denial or drop it was told about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reported<'a> {
    /// Emit this event.
    Event(Event<'a>),
    /// The connection's rate bound ([`TrackerConfig::client_rate_limit`]) held the event back:
    /// count it.
    Suppressed,
    /// No event: its kind is off, or the drop is about the activity events themselves (see
    /// [`Tracker::handle_dropped`]).
    Nothing,
}

/// A refused CONNECT, for [`Tracker::handle_refused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RefusedInfo<'a> {
    /// The client id as the CONNECT sent it (may be empty).
    pub client_id: &'a str,
    /// The user name, when the CONNECT carried one.
    pub username: Option<&'a str>,
    /// The peer's address as text, when the adapter knows it.
    pub peer: Option<&'a str>,
    /// The code of the refusing CONNACK, as sent.
    pub reason_code: u8,
    /// The reason's snake_case name.
    pub reason: &'a str,
}

/// Messages the server dropped for the client, for [`Tracker::handle_dropped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DropInfo<'a> {
    /// Why.
    pub reason: DropReason,
    /// The topic of the message, when known.
    pub topic: Option<&'a str>,
    /// The subscription's filter, when the drop is known by it.
    pub filter: Option<&'a str>,
    /// How many messages.
    pub count: u64,
}

/// The fields of an accepted CONNECT (MQTT 3.1.1 section 3.1) that the `connected` event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnectInfo<'a> {
    /// The client id; for an empty id with clean session, the id the server assigned.
    pub client_id: &'a str,
    /// The user name, when the CONNECT carried one.
    pub username: Option<&'a str>,
    /// The protocol level (4 for MQTT 3.1.1).
    pub proto_ver: u8,
    /// The keep-alive interval in seconds (0: none).
    pub keepalive: u16,
    /// The clean-session flag.
    pub clean_session: bool,
    /// The peer's address as text, when the adapter knows it.
    pub peer: Option<&'a str>,
    /// How the client reached the server, when the adapter says.
    pub transport: Option<Transport>,
    /// MQTT 5: the session expiry interval asked for, in seconds; `None` before MQTT 5.
    pub session_expiry: Option<u32>,
    /// MQTT 5: the CONNECT's user properties ([`UserProperties::NONE`] before MQTT 5).
    pub user_properties: UserProperties<'a>,
    /// The number of this connection for its events (see [`crate::seq`]).
    pub session_seq: u64,
}

/// A PUBLISH received from the client (MQTT 3.1.1 section 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PublishInfo<'a> {
    /// The topic name.
    pub topic: &'a str,
    /// The application message.
    pub payload: &'a [u8],
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag.
    pub retain: bool,
}

/// A PUBLISH the server sent to the client (MQTT 3.1.1 section 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeliveryInfo<'a> {
    /// The packet id of the delivery (ignored at QoS 0).
    pub pkid: u16,
    /// The QoS of the delivery.
    pub qos: QoS,
    /// The topic name.
    pub topic: &'a str,
    /// The application message.
    pub payload: &'a [u8],
    /// The publisher's client id, when the adapter knows it.
    pub pub_client_id: Option<&'a str>,
    /// The MQTT 5 properties of the message: user properties `product_id` and `message_id`
    /// identify it as an envelope does (see [`find_envelope`]). Empty when there are none.
    pub properties: Properties<'a>,
}

/// Why [`Tracker::handle_connect`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConnectError {
    /// The client id breaks the client-id rule: answer CONNACK with
    /// [`ClientIdError::return_code`] and close.
    Refused(ClientIdError),
    /// The connection already sent a CONNECT: a protocol violation (section 3.1.0), close it.
    AlreadyConnected,
    /// The connection was already closed.
    Closed,
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect refused: {e}"),
            ConnectError::AlreadyConnected => f.write_str("a second CONNECT on one connection"),
            ConnectError::Closed => f.write_str("connection already closed"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// What became of a PUBLISH from the client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PublishOutcome<'a> {
    /// Route it; the `message` event, if one is due.
    Accepted(Option<Event<'a>>),
    /// Drop it: an ordinary client published on a system topic. Counted in
    /// [`TrackerStats::publishes_denied`]; the client stays connected.
    Denied,
}

/// Counters of what a tracker refused or could not keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TrackerStats {
    /// PUBLISHes dropped because an ordinary client published on a system topic.
    pub publishes_denied: u64,
    /// Deliveries of envelope messages that were tracked for `msgack`.
    pub deliveries_tracked: u64,
    /// Tracked deliveries dropped, oldest first, because the ack store was full.
    pub deliveries_evicted: u64,
    /// Deliveries of envelope messages too large for one entry of the ack store (no `msgack`).
    pub deliveries_too_large: u64,
    /// PUBACKs and PUBRECs that matched no tracked delivery of their QoS (includes every ack of
    /// a non-envelope message).
    pub acks_unmatched: u64,
    /// CONNECTs whose user properties did not all fit the `connected` event (see
    /// [`UserProperties`]).
    pub user_properties_truncated: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connected {
        connected_at: u64,
        session_seq: u64,
    },
    /// Closed; `connected_at` and `session_seq` of the connection that was, until the end of
    /// its session is reported (see [`Tracker::handle_session_expired`]).
    Closed {
        connected_at: Option<(u64, u64)>,
    },
}

/// The sans-IO state machine of one client connection. See the [module docs](self).
#[derive(Debug)]
pub struct Tracker<S: AckStore> {
    config: TrackerConfig,
    client_id: heapless::String<CLIENT_ID_CAPACITY>,
    state: State,
    acks: S,
    stats: TrackerStats,
    denied: Throttle,
    dropped: Throttle,
}

impl<S: AckStore> Tracker<S> {
    /// A tracker for a new connection, keeping pending acknowledgements in `acks`.
    pub fn new(config: TrackerConfig, acks: S) -> Self {
        Tracker {
            config,
            client_id: heapless::String::new(),
            state: State::Idle,
            acks,
            stats: TrackerStats::default(),
            denied: Throttle::default(),
            dropped: Throttle::default(),
        }
    }

    /// The client id given at connect (empty before).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether the connection is between an accepted CONNECT and its close.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// When the connection was accepted, in ms since the Unix epoch.
    pub fn connected_at(&self) -> Option<u64> {
        match self.state {
            State::Connected { connected_at, .. } => Some(connected_at),
            _ => None,
        }
    }

    /// The `session_seq` of the connection while it is connected (see [`crate::seq`]).
    pub fn session_seq(&self) -> Option<u64> {
        match self.state {
            State::Connected { session_seq, .. } => Some(session_seq),
            _ => None,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// The deliveries waiting for their acknowledgement.
    pub fn pending_acks(&self) -> usize {
        self.acks.len()
    }

    /// The configuration this tracker runs with.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    fn emit<'a>(&self, event: Event<'a>) -> Option<Event<'a>> {
        self.config.enabled.contains(event.kind()).then_some(event)
    }

    /// A CONNECT was accepted by everything but the client-id rule: applies that rule, then
    /// gives the `connected` event.
    pub fn handle_connect<'a>(
        &'a mut self,
        now: u64,
        info: ConnectInfo<'a>,
    ) -> Result<Option<Event<'a>>, ConnectError> {
        match self.state {
            State::Idle => {}
            State::Connected { .. } => return Err(ConnectError::AlreadyConnected),
            State::Closed { .. } => return Err(ConnectError::Closed),
        }
        check_client_id(info.client_id, info.clean_session).map_err(ConnectError::Refused)?;
        self.client_id.clear();
        self.client_id
            .push_str(info.client_id)
            .map_err(|_| ConnectError::Refused(ClientIdError::TooLong))?;
        self.state = State::Connected {
            connected_at: now,
            session_seq: info.session_seq,
        };
        if info.user_properties.is_truncated() {
            self.stats.user_properties_truncated += 1;
        }
        debug!("tracker: connected");
        Ok(self.emit(Event::Connected(Connected {
            ts: now,
            client_id: &self.client_id,
            username: info.username,
            proto_ver: info.proto_ver,
            keepalive: info.keepalive,
            clean_session: info.clean_session,
            peer: info.peer,
            transport: info.transport,
            session_expiry: info.session_expiry,
            user_properties: info.user_properties,
            session_seq: info.session_seq,
        })))
    }

    /// The server granted (`Some(qos)`) or refused (`None`, SUBACK 0x80) one topic filter of a
    /// SUBSCRIBE: a granted filter gives a `subscribed` event. Call once per filter; `options`
    /// are the MQTT 5 subscription options the client asked for (`None` before MQTT 5).
    pub fn handle_subscribe<'a>(
        &'a mut self,
        now: u64,
        filter: &'a str,
        granted: Option<QoS>,
        options: Option<SubscriptionOptions>,
    ) -> Option<Event<'a>> {
        let qos = granted?;
        if !self.is_connected() {
            return None;
        }
        self.emit(Event::Subscribed(Subscribed {
            ts: now,
            client_id: &self.client_id,
            topic: filter,
            qos,
            options,
        }))
    }

    /// The client unsubscribed from one topic filter: gives an `unsubscribed` event.
    pub fn handle_unsubscribe<'a>(&'a mut self, now: u64, filter: &'a str) -> Option<Event<'a>> {
        if !self.is_connected() {
            return None;
        }
        self.emit(Event::Unsubscribed(Unsubscribed {
            ts: now,
            client_id: &self.client_id,
            topic: filter,
        }))
    }

    /// The client published: applies the system-topic rule and gives the `message` event.
    pub fn handle_publish<'a>(
        &'a mut self,
        now: u64,
        publish: PublishInfo<'a>,
    ) -> PublishOutcome<'a> {
        if !self
            .config
            .topics
            .may_publish(&self.client_id, publish.topic)
        {
            self.stats.publishes_denied += 1;
            warn!("tracker: publish on a system topic denied");
            return PublishOutcome::Denied;
        }
        if !self.is_connected() || self.config.topics.is_system_topic(publish.topic) {
            return PublishOutcome::Accepted(None);
        }
        PublishOutcome::Accepted(self.emit(Event::Message(Message {
            ts: now,
            pub_client_id: &self.client_id,
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
        })))
    }

    /// The server sent the client a PUBLISH: a QoS 1 or 2 delivery of an envelope message
    /// (outside the system topics) is remembered under its packet id until acknowledged. An
    /// MQTT 5 message whose user properties carry the ids counts as one (see
    /// [`find_envelope`]).
    ///
    /// When `delivery.pub_client_id` is `None`, `lookup` is asked for the publisher of the
    /// envelope (e.g. from a [`PublisherTable`](crate::publishers::PublisherTable)); `None` from
    /// it gives `"pub_client_id": null` in the `msgack`.
    ///
    /// Returns whether a pending delivery was forgotten: the oldest, to make room in a full
    /// store, or this one, too large for it (both counted in [`TrackerStats`] too).
    pub fn handle_delivery<F>(&mut self, delivery: DeliveryInfo<'_>, lookup: F) -> bool
    where
        F: FnOnce(&Envelope) -> Option<heapless::String<CLIENT_ID_CAPACITY>>,
    {
        if !self.is_connected()
            || delivery.qos == QoS::AtMostOnce
            || self.config.topics.is_system_topic(delivery.topic)
        {
            return false;
        }
        let Some(envelope) = find_envelope(delivery.payload, &delivery.properties) else {
            return false;
        };
        let looked_up;
        let pub_client_id = match delivery.pub_client_id {
            Some(id) => Some(id),
            None => {
                looked_up = lookup(&envelope);
                looked_up.as_deref()
            }
        };
        let pending = PendingAck {
            qos: delivery.qos,
            topic: delivery.topic,
            product_id: envelope.product_id.as_id(),
            message_id: envelope.message_id.as_id(),
            pub_client_id,
        };
        match self.acks.insert(delivery.pkid, &pending) {
            Ok(stored) => {
                self.stats.deliveries_tracked += 1;
                if stored == Stored::EvictedOldest {
                    self.stats.deliveries_evicted += 1;
                    warn!("tracker: ack store full, oldest pending delivery dropped");
                    return true;
                }
                false
            }
            Err(_) => {
                self.stats.deliveries_too_large += 1;
                warn!("tracker: delivery too large for the ack store");
                true
            }
        }
    }

    /// The client sent PUBACK (section 3.4): acknowledges a QoS 1 delivery. `reason_code` is
    /// the PUBACK's MQTT 5 reason code (`None` before MQTT 5); one of 0x80 or above refuses
    /// the message, and the `msgack` says so.
    pub fn handle_puback(
        &mut self,
        now: u64,
        pkid: u16,
        reason_code: Option<u8>,
    ) -> Option<Event<'_>> {
        self.acknowledge(now, pkid, QoS::AtLeastOnce, reason_code)
    }

    /// The client sent PUBREC (section 3.5): acknowledges a QoS 2 delivery, with the PUBREC's
    /// MQTT 5 reason code as for [`Tracker::handle_puback`].
    pub fn handle_pubrec(
        &mut self,
        now: u64,
        pkid: u16,
        reason_code: Option<u8>,
    ) -> Option<Event<'_>> {
        self.acknowledge(now, pkid, QoS::ExactlyOnce, reason_code)
    }

    fn acknowledge(
        &mut self,
        now: u64,
        pkid: u16,
        qos: QoS,
        reason_code: Option<u8>,
    ) -> Option<Event<'_>> {
        if !self.is_connected() || self.acks.qos_of(pkid) != Some(qos) {
            self.stats.acks_unmatched += 1;
            return None;
        }
        let enabled = self.config.enabled.contains(EventKind::MsgAck);
        let pending = self.acks.remove(pkid)?;
        if !enabled {
            return None;
        }
        Some(Event::MsgAck(MsgAck {
            ts: now,
            pub_client_id: pending.pub_client_id,
            ack_client_id: &self.client_id,
            product_id: pending.product_id,
            message_id: pending.message_id,
            topic: pending.topic,
            qos: pending.qos,
            reason_code,
        }))
    }

    /// The connection ended: gives the `disconnected` event (once) and forgets pending acks.
    /// `reason_code` is the MQTT 5 reason code of the end (see
    /// [`Disconnected::reason_code`]).
    pub fn handle_close(
        &mut self,
        now: u64,
        reason: DisconnectReason,
        reason_code: Option<u8>,
    ) -> Option<Event<'_>> {
        let State::Connected {
            connected_at,
            session_seq,
        } = self.state
        else {
            self.state = State::Closed { connected_at: None };
            return None;
        };
        self.state = State::Closed {
            connected_at: Some((connected_at, session_seq)),
        };
        self.acks.clear();
        debug!("tracker: closed");
        self.emit(Event::Disconnected(Disconnected {
            ts: now,
            client_id: &self.client_id,
            reason,
            reason_code,
            connected_at,
            session_seq,
        }))
    }

    /// The server refused the CONNECT of this connection: gives the `refused` event (whatever
    /// state the tracker is in: a refused connection never connected). The client id and the
    /// user name are cut at [`REFUSED_CLIENT_ID_MAX`] bytes.
    pub fn handle_refused<'a>(&self, now: u64, info: RefusedInfo<'a>) -> Option<Event<'a>> {
        if !self.config.enabled.contains(EventKind::Refused) {
            return None;
        }
        debug!("tracker: refused");
        Some(Event::Refused(Refused {
            ts: now,
            client_id: cut_at_boundary(info.client_id, REFUSED_CLIENT_ID_MAX),
            username: info
                .username
                .map(|name| cut_at_boundary(name, REFUSED_CLIENT_ID_MAX)),
            peer: info.peer,
            reason_code: info.reason_code,
            reason: info.reason,
        }))
    }

    /// The rules refused the client's `action` on `topic` (a publish, its will, or a filter of
    /// a SUBSCRIBE): gives the `denied` event, within the connection's rate bound.
    pub fn handle_denied<'a>(
        &'a mut self,
        now: u64,
        action: Action,
        topic: &'a str,
    ) -> Reported<'a> {
        if !self.config.enabled.contains(EventKind::Denied) {
            return Reported::Nothing;
        }
        let Some(suppressed) = self.denied.admit(now, self.config.client_rate_limit) else {
            return Reported::Suppressed;
        };
        Reported::Event(Event::Denied(Denied {
            ts: now,
            client_id: &self.client_id,
            topic,
            action,
            suppressed,
        }))
    }

    /// The server dropped messages meant for the client: gives the `dropped` event, within the
    /// connection's rate bound. Nothing for a message on a system topic or a filter that
    /// receives activity events: an event about the events could feed on itself (a
    /// subscriber too slow for the events would be sent more).
    pub fn handle_dropped<'a>(&'a mut self, now: u64, info: DropInfo<'a>) -> Reported<'a> {
        let topics = &self.config.topics;
        if !self.config.enabled.contains(EventKind::Dropped)
            || info.topic.is_some_and(|t| topics.is_system_topic(t))
            || info
                .filter
                .is_some_and(|f| topics.filter_receives_events(f))
        {
            return Reported::Nothing;
        }
        let Some(suppressed) = self.dropped.admit(now, self.config.client_rate_limit) else {
            return Reported::Suppressed;
        };
        Reported::Event(Event::Dropped(Dropped {
            ts: now,
            client_id: &self.client_id,
            topic: info.topic,
            filter: info.filter,
            reason: info.reason,
            count: info.count,
            suppressed,
        }))
    }

    /// The session of the closed connection ended after it, while its client was away (MQTT
    /// 5.0 section 3.1.2.11.2: its session expiry ran out, or the server could not keep it):
    /// gives a second `disconnected` event, with reason `session_expired`, no reason code and
    /// the `connected_at` and `session_seq` of the connection's own `disconnected` (once;
    /// `None` unless the connection was connected and has closed).
    pub fn handle_session_expired(&mut self, now: u64) -> Option<Event<'_>> {
        let State::Closed {
            connected_at: Some((connected_at, session_seq)),
        } = self.state
        else {
            return None;
        };
        self.state = State::Closed { connected_at: None };
        debug!("tracker: session expired");
        self.emit(Event::Disconnected(Disconnected {
            ts: now,
            client_id: &self.client_id,
            reason: DisconnectReason::SessionExpired,
            reason_code: None,
            connected_at,
            session_seq,
        }))
    }
}

/// A `lookup` for [`Tracker::handle_delivery`] and
/// [`Connection::handle_delivery`](crate::server::Connection::handle_delivery) that knows no
/// publisher. One function item for every caller: the callers share one instantiation of the
/// delivery code (each closure would be a type, and an instantiation, of its own).
pub fn no_publisher(_: &Envelope) -> Option<heapless::String<CLIENT_ID_CAPACITY>> {
    None
}

#[cfg(test)]
mod tests;
