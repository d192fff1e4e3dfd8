//! One MQTT server connection, sans-IO: bytes from the client in, answers, routes and activity
//! events out (MQTT 3.1.1 chapters 3 and 4, with MQTT 5.0 reason codes in its types).
//!
//! A [`Connection`] makes every MQTT decision of one client connection: the CONNECT rules and
//! the CONNACK, keep-alive, the QoS 1 and 2 flows in both directions, SUBACK codes, the
//! system-topic rules, what the topic access rules refuse ([`Output::is_allowed`], see
//! [`Access`]), per-connection limits, last wills and the activity events (its
//! [`Tracker`] is part of it). A driver (the tokio broker, the tap, the embassy gateway) owns
//! the socket, the clock and whatever routes messages, and only moves things between them. A
//! relay, whose router is another MQTT server over its own connection (the tap), drives a
//! [`Relay`] around the connection instead: see it for what it forwards, drops and answers,
//! and its own call order.
//!
//! | into the engine | out of the engine |
//! |---|---|
//! | [`Connection::handle_input`]: bytes from the client | bytes for the client, written into the driver's transmit buffer (`tx`) |
//! | [`Connection::handle_connect_answer`]: the driver's verdict on a CONNECT (credentials, connection limit, takeover) | [`Route`]s for the router, through [`Output::route`] |
//! | [`Connection::handle_delivery`]: a message the router delivers | activity [`Event`]s, through [`Output::event`] |
//! | [`Connection::handle_timeout`], [`Connection::handle_close`] | counters, through [`Output::count`]; the next deadline from [`Connection::poll_timeout`] |
//!
//! # Call order
//!
//! 1. [`Connection::new`] when the transport is accepted.
//! 2. [`Connection::handle_input`] with every unconsumed byte whenever bytes arrive; drop the
//!    `consumed` bytes, send the `written` ones. When it returns with bytes left over and the
//!    connection [`is_blocked`](Connection::is_blocked), send what is in `tx` and call it again.
//! 3. When [`Output::route`] got [`Route::Connect`], the driver checks what the engine cannot
//!    see (credentials, the connection limit, an older connection of the same client id, which
//!    it closes with [`CloseCause::TakenOver`]), then calls
//!    [`Connection::handle_connect_answer`] with the same unconsumed bytes. Until then the
//!    engine consumes nothing ([`Connection::is_authorizing`]), so the CONNECT stays in the
//!    driver's buffer: nothing is copied.
//! 4. [`Connection::handle_delivery`] for each message the router delivers;
//!    [`Connection::handle_timeout`] when [`Connection::poll_timeout`] has passed;
//!    [`Connection::handle_close`] when the transport closes or the session is taken over.
//!    When the server shuts down, [`Connection::handle_shutdown`] reports the end at once and
//!    leaves the transport open for what the router still delivers; `handle_close` follows
//!    when the driver closes it.
//! 5. Once [`Connection::is_closed`], send what is in `tx` and close the transport. Once
//!    [`Connection::is_kept`] instead (an MQTT 5 session that outlives its connection, or a
//!    delayed will), close the transport but keep the engine and the client id: call
//!    [`Connection::handle_timeout`] at [`Connection::poll_timeout`] (the delayed will, then
//!    [`Route::SessionExpired`]), [`Connection::handle_resume`] when the client id connects
//!    again (its subscriptions go to the new connection's
//!    [`Connection::handle_session_resumed`], before that one's
//!    [`Connection::handle_connect_answer`]), or [`Connection::handle_discard`] when there is
//!    no room to keep it.
//!
//! Outputs that borrow the client's bytes (a routed publish, a `message` event) are handed to
//! the [`Output`] during the call that decodes them, so that nothing is copied and the engine
//! needs no buffer of its own for them; what the engine answers goes straight into the driver's
//! `tx`, so memory for answers is the driver's too. The engine decodes a packet only when `tx`
//! has room for its largest answer ([`Connection::answer_room`]): a client that sends without
//! reading stalls on TCP backpressure instead of growing a queue.
//!
//! ```
//! use activity_core::acks::FixedAckStore;
//! use activity_core::event::{Event, Transport};
//! use activity_core::server::{
//!     ConnectAnswer, Connection, Delivery, FixedSessionStore, Output, Peer, Route, Routed,
//!     ServerConfig,
//! };
//!
//! /// A router that accepts everything, and counts the events.
//! struct Driver {
//!     connect_asked: bool,
//!     events: usize,
//! }
//!
//! impl Output for Driver {
//!     fn route(&mut self, route: Route<'_>) -> Routed {
//!         if let Route::Connect(_) = route {
//!             self.connect_asked = true;
//!         }
//!         Routed::Accepted
//!     }
//!     fn event(&mut self, _event: &Event<'_>) -> Option<Delivery<'_>> {
//!         self.events += 1;
//!         None
//!     }
//! }
//!
//! let peer = Peer { addr: Some("192.0.2.10:51000"), is_loopback: false, transport: Transport::Tcp };
//! let mut conn: Connection<FixedAckStore<4, 96>, FixedSessionStore<4, 32, 4, 64>> =
//!     Connection::new(ServerConfig::default(), FixedAckStore::new(), FixedSessionStore::new(),
//!         peer, 0, 1);
//! let mut driver = Driver { connect_asked: false, events: 0 };
//! let mut rx: Vec<u8> = Vec::new();
//! let mut tx = [0u8; 512];
//! let mut sent = Vec::new();
//!
//! // CONNECT (client id "c1", clean session, keep-alive 60 s), then PINGREQ.
//! rx.extend_from_slice(&[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1']);
//! rx.extend_from_slice(&[0xC0, 0x00]);
//! let now = 1_700_000_000_000;
//! let progress = conn.handle_input(now, &rx, &mut tx, &mut driver);
//! assert!(driver.connect_asked && conn.is_authorizing());
//! assert_eq!(progress.consumed, 0); // the CONNECT stays in `rx` until the answer
//!
//! // The driver accepts it (credentials fine, below the connection limit, no older session):
//! // CONNACK, then the answer to the PINGREQ that came with the CONNECT.
//! let progress =
//!     conn.handle_connect_answer(now, ConnectAnswer::accept(false), &rx, &mut tx, &mut driver);
//! rx.drain(..progress.consumed);
//! sent.extend_from_slice(&tx[..progress.written]);
//! assert_eq!(sent, [0x20, 2, 0, 0, 0xD0, 0]);
//! assert!(rx.is_empty());
//!
//! // Later bytes: another PINGREQ.
//! rx.extend_from_slice(&[0xC0, 0x00]);
//! let progress = conn.handle_input(now + 1, &rx, &mut tx, &mut driver);
//! rx.drain(..progress.consumed);
//! assert_eq!(&tx[..progress.written], [0xD0, 0]);
//!
//! // Keep-alive: nothing for 1.5 x 60 s closes the connection.
//! let deadline = conn.poll_timeout().expect("a keep-alive deadline");
//! assert_eq!(deadline, now + 1 + 90_000);
//! conn.handle_timeout(deadline, &mut tx, &mut driver);
//! assert!(conn.is_closed());
//! assert_eq!(driver.events, 2); // connected, disconnected (keepalive_timeout)
//! ```

mod access;
mod alias;
mod config;
mod expiry;
mod flow;
mod io;
mod outbound;
mod problem;
mod reason;
mod relay;
mod store;
mod tx;
mod will;

#[cfg(test)]
mod tests;

pub use access::{Access, Action};
pub use config::{LimitSource, Limits, ServerConfig};
pub use io::{
    Ack, ConnectAnswer, ConnectRequest, Counter, Delivered, DeliveredFor, Delivery, DeliveryError,
    Output, Peer, Progress, Route, Routed, RoutedPublish, SESSION_NEVER_EXPIRES,
};
pub use outbound::MAX_SUBSCRIPTION_IDS;
pub use reason::{CloseCause, ReasonCode};
pub use relay::{FixedRequestStore, Relay, RelayOutput, Relayed, RequestStore};
pub use store::{AliasDirection, Declined, FixedSessionStore, SessionStore, StoreFull};
pub use will::will_publish_properties;

use flow::ClientFlow;
use outbound::Additions;
use problem::{REASON_STRING_ROOM, reason_properties};
use tx::{Tx, codes_len, encode_delivery};

use crate::QoS;
use crate::acks::AckStore;
use crate::client_id::{CLIENT_ID_CAPACITY, check_client_id};
use crate::codec::{
    self, ConnAck, Connect, Context, DecodeError, Packet, Properties, Property, Publish,
    RetainHandling, SubAckCode, Subscribe, SubscriptionOptions, Unsubscribe, Version,
};
use crate::envelope::Envelope;
use crate::event::{DropReason, Event, EventKind, Transport, UserProperties};
use crate::topic::{is_server_filter, is_server_topic};
use crate::tracker::{
    ConnectInfo, DeliveryInfo, DropInfo, PublishInfo, PublishOutcome, RefusedInfo, Tracker,
};

/// Room for the properties of an accepting MQTT 5 CONNACK (see `Connection::put_connack`).
const CONNACK_PROPERTIES: usize = 80;

/// The longest peer address kept for the `connected` event (an IPv6 address in brackets with
/// its port fits; a longer one, with a zone, is cut).
pub const PEER_CAPACITY: usize = 48;

/// The prefix of client ids the server assigns to clients that connect with an empty one
/// (section 3.1.3.1), followed by 16 hex digits.
pub const ASSIGNED_ID_PREFIX: &str = "auto-";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the CONNECT.
    AwaitConnect,
    /// The CONNECT is with the driver.
    Authorizing,
    /// Connected.
    Connected,
    /// The server shuts down: the session has ended (reported, routed), input is no longer
    /// read, and what the router still delivers is written until the driver closes.
    Draining,
    /// The connection has ended, its session is kept (see [`Connection::is_kept`]).
    Kept,
    /// Done; nothing more goes in or out.
    Closed,
}

/// The sans-IO state machine of one MQTT server connection. See the [module docs](self).
///
/// `KEEP` says whether an MQTT 5 session may outlive its connection (a session expiry, a
/// delayed will: [`Connection::is_kept`]). A server that keeps no session (the embassy
/// gateway) sets it to `false`: every session then ends with its connection, as with
/// [`Limits::max_session_expiry`] 0, and none of the code that keeps one is linked.
#[derive(Debug)]
pub struct Connection<
    A: AckStore,
    S: SessionStore,
    const KEEP: bool = true,
    L: LimitSource = Limits,
> {
    /// The limits of [`ServerConfig`] (its tracker part is the tracker's).
    limits: L,
    connect_timeout_ms: u64,
    tracker: Tracker<A>,
    store: S,
    state: State,
    /// Whether the last `handle_input` stopped for room in `tx`.
    blocked: bool,
    keep_alive: u16,
    /// Seconds the session outlives the connection.
    session_expiry: u32,
    /// The will's delay after the connection ends, in seconds (MQTT 5).
    will_delay: u32,
    /// When the delayed will of a kept session goes.
    will_at: Option<u64>,
    /// When a kept session expires (`None`: never).
    kept_until: Option<u64>,
    /// Whether a session may be kept after its connection (not in relay mode).
    keeps_sessions: bool,
    /// Whether the store holds the subscriptions of a resumed session, until the CONNACK
    /// settles them (see [`Connection::handle_session_resumed`]).
    resumed: bool,
    /// Whether the client wants reason strings (MQTT 5 Request Problem Information).
    wants_problems: bool,
    /// Whether the client may receive the activity events: from loopback when the
    /// configuration trusts it (known at accept), or when the driver lists it (asked at the
    /// verdict).
    may_subscribe_system: bool,
    /// When the deadline of [`Connection::poll_timeout`] counts from: the accept before the
    /// CONNECT, the last input after it.
    since: u64,
    peer: heapless::String<PEER_CAPACITY>,
    transport: Transport,
    /// The number behind an assigned client id (`auto-` and 16 hex digits).
    id_nonce: u64,
    next_pkid: u16,
    /// Whether deliveries are remembered for `msgack` (see [`Connection::set_msgack_tracking`]).
    tracks_msgack: bool,
    /// Whether a filter whose first level is a wildcard receives activity events
    /// ([`SystemTopics::wildcards_receive_events`](crate::system::SystemTopics::wildcards_receive_events)).
    wildcard_events: bool,
    /// The protocol version the client's CONNECT chose (3.1.1 until then).
    pub(super) version: Version,
    /// What the client accepts of deliveries (MQTT 5), and their state.
    flow: ClientFlow,
}

impl<A: AckStore, S: SessionStore, const KEEP: bool, L: LimitSource> Connection<A, S, KEEP, L> {
    /// A connection accepted by the transport at `now` (ms since the Unix epoch), remembering
    /// deliveries for `msgack` in `acks` and its session in `store`. `id_nonce` names the client
    /// if it connects with an empty id (`auto-` and `id_nonce` in 16 hex digits): the driver
    /// makes it unique among its connections.
    pub fn new(
        config: ServerConfig<L>,
        acks: A,
        store: S,
        peer: Peer<'_>,
        now: u64,
        id_nonce: u64,
    ) -> Self {
        let mut kept = heapless::String::new();
        if let Some(addr) = peer.addr {
            // What fits, cut at a character boundary (at most three steps back).
            let mut end = addr.len().min(PEER_CAPACITY);
            while !addr.is_char_boundary(end) {
                end -= 1;
            }
            let _ = kept.push_str(addr.get(..end).unwrap_or_default());
        }
        Connection {
            limits: config.limits,
            connect_timeout_ms: config.connect_timeout_ms,
            wildcard_events: config.tracker.topics.wildcards_receive_events(),
            tracker: Tracker::new(config.tracker, acks),
            store,
            state: State::AwaitConnect,
            blocked: false,
            keep_alive: 0,
            session_expiry: 0,
            will_delay: 0,
            will_at: None,
            kept_until: None,
            keeps_sessions: true,
            resumed: false,
            wants_problems: true,
            may_subscribe_system: config.loopback_may_subscribe_system && peer.is_loopback,
            since: now,
            peer: kept,
            transport: peer.transport,
            id_nonce,
            next_pkid: 0,
            tracks_msgack: true,
            version: Version::V3_1_1,
            flow: ClientFlow::UNLIMITED,
        }
    }

    /// Whether deliveries are remembered for `msgack` (on from the start, and only when the
    /// configuration enables `msgack`). A driver that knows no sink receives `msgack` events
    /// now turns it off, so that deliveries are not parsed for an envelope only to report
    /// nothing; acknowledgements of deliveries not remembered give no `msgack`.
    pub fn set_msgack_tracking(&mut self, on: bool) {
        self.tracks_msgack = on;
    }

    /// Whether [`Connection::handle_delivery`] takes another delivery: false while the
    /// client's Receive Maximum of QoS 1 and 2 deliveries is unacknowledged (MQTT 5.0 section
    /// 4.9). A driver stops taking deliveries from its router meanwhile, and offers them again
    /// once the client's acknowledgements (its input) make this true.
    pub fn may_deliver(&self) -> bool {
        self.flow.may_send()
    }

    /// The protocol version the client speaks (MQTT 3.1.1 until its CONNECT says otherwise).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The client id (empty before the CONNECT is accepted).
    pub fn client_id(&self) -> &str {
        self.tracker.client_id()
    }

    /// Whether the CONNECT is accepted and the connection not closed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether a [`Route::Connect`] awaits [`Connection::handle_connect_answer`].
    pub fn is_authorizing(&self) -> bool {
        self.state == State::Authorizing
    }

    /// Whether the connection is over: send what is in `tx`, then close the transport.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether [`Connection::handle_shutdown`] ended the session and the driver still writes
    /// what the router delivers.
    pub fn is_draining(&self) -> bool {
        self.state == State::Draining
    }

    /// Whether the last [`Connection::handle_input`] stopped because `tx` had less than
    /// [`Connection::answer_room`] bytes free.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The session's tracker (its counters, pending acknowledgements).
    pub fn tracker(&self) -> &Tracker<A> {
        &self.tracker
    }

    /// The session store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The per-connection limits.
    pub fn limits(&self) -> Limits {
        self.limits.limits()
    }

    /// The room in `tx` the engine needs before it decodes a packet: the largest answer to one
    /// packet (a SUBACK for [`Limits::max_filters_per_packet`] filters, or an MQTT 5
    /// DISCONNECT with its reason string).
    pub fn answer_room(&self) -> usize {
        // A server DISCONNECT with its reason string: header, reason, property length, string.
        codes_len(self.limits().max_filters_per_packet, true).max(4 + REASON_STRING_ROOM)
    }

    /// When [`Connection::handle_timeout`] is due, in ms since the Unix epoch: the connect
    /// timeout before the CONNECT, 1.5 times the keep-alive after it (section 3.1.2.10); for a
    /// kept session, its delayed will or its expiry.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Kept if KEEP => self.kept_deadline(),
            State::AwaitConnect => Some(self.since.saturating_add(self.connect_timeout_ms)),
            State::Connected if self.keep_alive > 0 => Some(
                self.since
                    .saturating_add(u64::from(self.keep_alive) * 1_500),
            ),
            _ => None,
        }
    }

    /// Closes the connection if its deadline (see [`Connection::poll_timeout`]) has passed at
    /// `now`; returns the bytes written to `tx`.
    pub fn handle_timeout(&mut self, now: u64, tx: &mut [u8], out: &mut impl Output) -> usize {
        let mut tx = Tx::new(tx, self.version);
        match (self.state, self.poll_timeout()) {
            (State::AwaitConnect, Some(deadline)) if now >= deadline => {
                out.count(Counter::ConnectTimeout);
                debug!("server: no CONNECT within the connect timeout");
                self.state = State::Closed;
            }
            (State::Connected, Some(deadline)) if now >= deadline => {
                out.count(Counter::KeepAliveTimeout);
                self.close(now, CloseCause::KeepAliveTimeout, &mut tx, out);
            }
            (State::Kept, _) if KEEP => self.kept_timeout(now, out),
            _ => {}
        }
        tx.finish(out)
    }

    /// Ends the connection for `cause` (the transport closed, a takeover, a shutdown): the last
    /// will when due, the `disconnected` event, [`Route::End`]. Returns the bytes written to
    /// `tx` (none for MQTT 3.1.1, which has no server DISCONNECT). Closing twice does nothing.
    pub fn handle_close(
        &mut self,
        now: u64,
        cause: CloseCause,
        tx: &mut [u8],
        out: &mut impl Output,
    ) -> usize {
        let mut tx = Tx::new(tx, self.version);
        self.close(now, cause, &mut tx, out);
        tx.finish(out)
    }

    /// Ends the session because the server shuts down, but keeps the transport for what the
    /// router still delivers (the shutdown events of the other clients among it): the
    /// `disconnected` event (`server_shutdown`, no last will) and [`Route::End`] now; from
    /// then on [`Connection::handle_input`] reads nothing (the driver stops reading) and
    /// [`Connection::handle_delivery`] still writes, until [`Connection::handle_close`].
    /// Returns the bytes written to `tx`. Only a connected session drains; otherwise this
    /// closes like [`Connection::handle_close`].
    pub fn handle_shutdown(&mut self, now: u64, tx: &mut [u8], out: &mut impl Output) -> usize {
        let tx = Tx::new(tx, self.version);
        let connected = self.state == State::Connected;
        // The MQTT 5 DISCONNECT waits for the close: deliveries still follow.
        self.end(now, CloseCause::ServerShutdown, out);
        if connected {
            self.state = State::Draining;
        }
        tx.finish(out)
    }

    /// Reads the packets at the front of `input` (every byte not consumed yet) and acts on
    /// them, writing answers into `tx`. Stops at an incomplete packet, when `tx` lacks
    /// [`Connection::answer_room`], after a CONNECT (see [`Route::Connect`]) and when the
    /// connection closes.
    pub fn handle_input(
        &mut self,
        now: u64,
        input: &[u8],
        tx: &mut [u8],
        out: &mut impl Output,
    ) -> Progress {
        let mut tx = Tx::new(tx, self.version);
        let consumed = self.input(now, input, &mut tx, out);
        Progress {
            consumed,
            written: tx.finish(out),
        }
    }

    fn input(&mut self, now: u64, input: &[u8], tx: &mut Tx<'_>, out: &mut impl Output) -> usize {
        let mut consumed = 0;
        self.blocked = false;
        if !input.is_empty() && self.state == State::Connected {
            self.since = now;
        }
        loop {
            if matches!(
                self.state,
                State::Authorizing | State::Draining | State::Kept | State::Closed
            ) {
                return consumed;
            }
            let rest = input.get(consumed..).unwrap_or_default();
            if tx.room() < self.answer_room() {
                self.blocked = !rest.is_empty();
                return consumed;
            }
            let decoded =
                codec::decode_from_client(rest, self.limits().max_packet_size, self.version);
            let (packet, len) = match decoded {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return consumed,
                Err(error) => {
                    let cause = match error {
                        DecodeError::PacketTooLarge { .. } => CloseCause::PacketTooLarge,
                        error if error.is_protocol_error() => CloseCause::ProtocolError,
                        _ => CloseCause::MalformedPacket,
                    };
                    warn!("server: undecodable bytes from the client, closing");
                    self.fail(now, cause, tx, out);
                    return input.len();
                }
            };
            out.count(Counter::PacketIn);
            if self.state == State::AwaitConnect {
                let Packet::Connect(connect) = packet else {
                    debug!("server: first packet is not CONNECT");
                    out.count(Counter::ProtocolError);
                    self.state = State::Closed;
                    return input.len();
                };
                // The CONNECT stays unconsumed until the driver's answer, unless refused here.
                if self.handle_connect(now, connect, tx, out) {
                    consumed += len;
                }
                continue;
            }
            consumed += len;
            self.handle_packet(now, packet, tx, out);
        }
    }

    /// Finishes the CONNECT at the front of `input` with the driver's `answer` to its
    /// [`Route::Connect`]: the CONNACK into `tx`, the `connected` event, and then whatever
    /// else `input` holds, as [`Connection::handle_input`] does.
    ///
    /// Does nothing (zero progress) unless a [`Route::Connect`] awaits its answer, `input`
    /// starts with that CONNECT and `tx` has [`Connection::answer_room`].
    pub fn handle_connect_answer(
        &mut self,
        now: u64,
        answer: ConnectAnswer,
        input: &[u8],
        tx: &mut [u8],
        out: &mut impl Output,
    ) -> Progress {
        let mut tx = Tx::new(tx, self.version);
        if self.state != State::Authorizing || tx.room() < self.answer_room() {
            return Progress::default();
        }
        let Ok(Some((Packet::Connect(connect), len))) =
            codec::decode_from_client(input, self.limits().max_packet_size, self.version)
        else {
            return Progress::default();
        };
        let session_present = match answer {
            ConnectAnswer::Refuse(reason) => {
                self.refuse(now, reason, Some(&connect), &mut tx, out);
                return Progress {
                    consumed: len,
                    written: tx.finish(out),
                };
            }
            // MQTT 3.1 has no session-present flag (its byte is reserved).
            ConnectAnswer::Accept { session_present } => {
                session_present && !connect.clean_session && self.version != Version::V3_1
            }
        };
        self.settle_resumed(session_present, &connect, out);
        self.put_connack(session_present, &connect, &mut tx);
        if !self.admit(now, &connect, &mut tx, out) {
            return Progress {
                consumed: len,
                written: tx.finish(out),
            };
        }
        let rest = input.get(len..).unwrap_or_default();
        let more = self.input(now, rest, &mut tx, out);
        Progress {
            consumed: len + more,
            written: tx.finish(out),
        }
    }

    /// Makes an accepted `connect` the connection's session: its keep-alive, session expiry and
    /// permissions, then the `connected` event. False when the tracker refused it (closed).
    fn admit(
        &mut self,
        now: u64,
        connect: &Connect<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) -> bool {
        let mut id_buf = heapless::String::<CLIENT_ID_CAPACITY>::new();
        let client_id = self.effective_client_id(connect, &mut id_buf);
        self.keep_alive = self.granted_keep_alive(connect);
        self.session_expiry = self.granted_expiry(connect);
        if self.version.is_v5() {
            self.flow = ClientFlow::of(connect, &self.limits(), self.store.alias_capacity());
        }
        self.since = now;
        self.may_subscribe_system =
            self.may_subscribe_system || out.is_system_subscriber(client_id, connect.username);
        let peer = (!self.peer.is_empty()).then_some(self.peer.as_str());
        let info = ConnectInfo {
            client_id,
            username: connect.username,
            proto_ver: connect.protocol_level,
            keepalive: connect.keep_alive,
            clean_session: connect.clean_session,
            peer,
            transport: Some(self.transport),
            session_expiry: self.version.is_v5().then_some(self.session_expiry),
            user_properties: UserProperties::new(connect.properties),
            session_seq: out.session_seq(now),
        };
        self.state = State::Connected;
        let event = match self.tracker.handle_connect(now, info) {
            Ok(event) => event,
            // The client-id rule passed before the driver was asked, and the tracker is new.
            Err(_) => {
                self.state = State::Closed;
                return false;
            }
        };
        if let Some(event) = event {
            emit_with(
                &mut Own::of(&self.store, &mut self.next_pkid, self.wildcard_events),
                event,
                tx,
                out,
            );
        }
        debug!("server: client connected");
        true
    }

    /// Writes a message the router delivers into `tx`, at the lower of its QoS and the
    /// subscription's, and remembers an envelope message for `msgack`. When the delivery does
    /// not name its publisher, `lookup` is asked for the publisher of the envelope (see
    /// [`Tracker::handle_delivery`]). A draining connection (see
    /// [`Connection::handle_shutdown`]) still writes, and remembers nothing. An activity event
    /// that reaches the client only through filters whose first level is a wildcard is not
    /// written ([`DeliveryError::Dropped`] with [`Counter::EventNotWanted`]; see
    /// [`SystemTopics::filter_receives_event`](crate::system::SystemTopics::filter_receives_event)).
    pub fn handle_delivery<F>(
        &mut self,
        delivery: Delivery<'_>,
        tx: &mut [u8],
        lookup: F,
    ) -> Result<Delivered, DeliveryError>
    where
        F: FnOnce(&Envelope) -> Option<heapless::String<CLIENT_ID_CAPACITY>>,
    {
        if !matches!(self.state, State::Connected | State::Draining) {
            return Err(DeliveryError::NotConnected);
        }
        if delivery.qos.min(delivery.subscription_qos) != QoS::AtMostOnce && !self.flow.may_send() {
            return Err(DeliveryError::ReceiveMaximum);
        }
        if self.is_unwanted_event(&delivery) {
            return Err(DeliveryError::Dropped(Counter::EventNotWanted));
        }
        let mut additions = Additions::default();
        let mut delivery = delivery;
        if self.version.is_v5() {
            outbound::prepare(
                &self.store,
                &mut self.flow,
                self.tracker.client_id(),
                &mut delivery,
                &mut additions,
            )?;
        }
        let mut tx = Tx::new(tx, self.version);
        let mut delivered = encode_delivery(
            &mut self.next_pkid,
            delivery,
            &additions,
            self.flow.max_packet_size,
            &mut tx,
        )?;
        // A store that keeps no aliases assigns none (and the compiler drops this).
        if let Some((alias, false)) = additions.alias
            && self.store.alias_capacity() > 0
        {
            // Too long a topic for the store: the next delivery on it sends the topic again.
            let _ = self
                .store
                .set_alias(AliasDirection::ToClient, alias, delivery.topic);
        }
        if delivered.pkid.is_some() {
            self.flow.sent();
        }
        if let Some(pkid) = delivered.pkid
            && self.tracks_msgack
        {
            let info = DeliveryInfo {
                pkid,
                qos: delivered.qos,
                topic: delivery.topic,
                payload: delivery.payload,
                pub_client_id: delivery.publisher,
                properties: delivery.properties,
            };
            delivered.forgotten = self.tracker.handle_delivery(info, lookup);
        }
        Ok(delivered)
    }

    /// Whether `delivery` is an activity event that reached the client only through filters
    /// whose first level is a wildcard (`#`, `+/...`), which receive no events unless
    /// configured to: the router matches them, the engine does not send it. A delivery that
    /// matches no subscription the store holds goes (the router knows better).
    fn is_unwanted_event(&self, delivery: &Delivery<'_>) -> bool {
        if self.wildcard_events || !self.tracker.config().topics.is_system_topic(delivery.topic) {
            return false;
        }
        if let DeliveredFor::Filter(filter) = delivery.subscription {
            return is_wildcard_first::<S>(filter);
        }
        let (mut matched, mut wanted) = (false, false);
        self.store
            .for_each_matching(delivery.topic, &mut |filter, _, _| {
                matched = true;
                wanted |= !is_wildcard_first::<S>(filter);
            });
        matched && !wanted
    }

    /// The client id a CONNECT gets: its own, or the assigned one for an empty id.
    fn effective_client_id<'a>(
        &self,
        connect: &Connect<'a>,
        buf: &'a mut heapless::String<CLIENT_ID_CAPACITY>,
    ) -> &'a str {
        if !connect.client_id.is_empty() {
            return connect.client_id;
        }
        buf.clear();
        // 5 + 16 bytes fit CLIENT_ID_CAPACITY.
        let _ = buf.push_str(ASSIGNED_ID_PREFIX);
        for shift in (0..16).rev() {
            let digit = u8::try_from((self.id_nonce >> (shift * 4)) & 0xF).unwrap_or(0);
            let c = char::from(if digit < 10 {
                b'0' + digit
            } else {
                b'a' + digit - 10
            });
            let _ = buf.push(c);
        }
        buf.as_str()
    }

    /// The accepting CONNACK: MQTT 5 adds what the server assigned and the limits the client
    /// must keep (5.0 section 3.2.2.3).
    fn put_connack(&self, session_present: bool, connect: &Connect<'_>, tx: &mut Tx<'_>) {
        let mut connack = ConnAck::new(session_present, 0);
        let mut raw = [0u8; CONNACK_PROPERTIES];
        if self.version.is_v5() {
            let mut id_buf = heapless::String::<CLIENT_ID_CAPACITY>::new();
            let assigned = self.effective_client_id(connect, &mut id_buf);
            let max_packet_size = u32::try_from(self.limits().max_packet_size).unwrap_or(u32::MAX);
            let mut list: heapless::Vec<Property<'_>, 9> = heapless::Vec::new();
            // Capacity 9: at most six pushes below and three in push_session_properties.
            let _ = list.push(Property::MaximumPacketSize(max_packet_size));
            let _ = list.push(Property::SubscriptionIdentifierAvailable(u8::from(
                !S::DECLINED.contains(Declined::SUBSCRIPTION_IDENTIFIERS),
            )));
            let _ = list.push(Property::SharedSubscriptionAvailable(u8::from(
                self.serves_shared(self.granted_expiry(connect)),
            )));
            let aliases = alias::inbound_maximum(&self.limits(), &self.store);
            if aliases > 0 {
                let _ = list.push(Property::TopicAliasMaximum(aliases));
            }
            if self.limits().max_qos < QoS::ExactlyOnce {
                let _ = list.push(Property::MaximumQoS(self.limits().max_qos.as_u8()));
            }
            if connect.client_id.is_empty() {
                let _ = list.push(Property::AssignedClientIdentifier(assigned));
            }
            self.push_session_properties(connect, &mut list);
            // The block fits CONNACK_PROPERTIES (an assigned id is 21 bytes), and the engine
            // wrote only properties a CONNACK may carry.
            connack.properties = codec::encode_properties(&list, &mut raw)
                .ok()
                .and_then(|n| raw.get(..n))
                .and_then(|bytes| Properties::parse(bytes, Context::ConnAck).ok())
                .unwrap_or_default();
        }
        tx.put(&Packet::ConnAck(connack));
    }

    /// The CONNECT rules the engine can apply alone (section 3.1.4); then the driver is asked.
    /// True when the CONNECT was refused (and so consumed).
    fn handle_connect(
        &mut self,
        now: u64,
        connect: Connect<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) -> bool {
        if let Some(version) = connect.version() {
            self.version = version;
            tx.version = version;
        }
        // MQTT 5.0 section 3.1.2.11.7: 0 asks for no reason strings.
        self.wants_problems = !S::DECLINED.contains(Declined::REASON_STRINGS)
            && !connect
                .properties
                .iter()
                .any(|p| p == Property::RequestProblemInformation(0));
        self.will_delay = connect
            .will
            .and_then(|will| will.properties.will_delay_interval())
            .unwrap_or(0);
        // MQTT 5 may assign an id whatever Clean Start says (5.0 section 3.1.3.1); MQTT 3.1 may
        // not assign one at all (its client id is 1 to 23 characters; longer ones, up to the
        // reserved-id rule's limit, are accepted as most brokers do).
        let may_assign = match self.version {
            Version::V5 => true,
            Version::V3_1 => false,
            Version::V3_1_1 => connect.clean_session,
        };
        let refusal = if connect.version().is_none() {
            Some(ReasonCode::UnsupportedProtocolVersion)
        } else if connect.properties.authentication_method().is_some() {
            // MQTT 5 enhanced authentication (5.0 section 4.12): no method is offered.
            Some(ReasonCode::BadAuthenticationMethod)
        } else if check_client_id(connect.client_id, may_assign).is_err()
            || (self.version == Version::V3_1 && connect.client_id.is_empty())
        {
            Some(ReasonCode::ClientIdentifierNotValid)
        } else {
            match connect.will {
                Some(will) if self.tracker.config().topics.is_system_topic(will.topic) => {
                    Some(ReasonCode::NotAuthorized)
                }
                Some(will) if self.store.set_will(&will).is_err() => {
                    Some(ReasonCode::ServerUnavailable)
                }
                _ => None,
            }
        };
        if let Some(reason) = refusal {
            self.refuse(now, reason, Some(&connect), tx, out);
            return true;
        }
        let mut id_buf = heapless::String::<CLIENT_ID_CAPACITY>::new();
        let client_id = self.effective_client_id(&connect, &mut id_buf);
        let request = ConnectRequest {
            client_id,
            assigned_id: connect.client_id.is_empty(),
            username: connect.username,
            password: connect.password,
            clean_start: connect.clean_session,
            session_expiry: self.granted_expiry(&connect),
            keep_alive: connect.keep_alive,
            protocol_level: connect.protocol_level,
        };
        self.state = State::Authorizing;
        let _ = out.route(Route::Connect(request));
        false
    }

    /// Answers a CONNECT with a refusing CONNACK and closes: the `refused` event (with the
    /// client id and user name of `connect`, when the refused CONNECT is at hand), no other (the
    /// client never connected).
    fn refuse(
        &mut self,
        now: u64,
        reason: ReasonCode,
        connect: Option<&Connect<'_>>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        debug!("server: CONNECT refused with {}", reason.as_u8());
        out.count(Counter::ConnectRefused(reason));
        self.state = State::Closed;
        self.store.clear();
        let reason_code = if self.version.is_v5() {
            reason.as_u8()
        } else {
            reason.connect_return_code().as_u8()
        };
        self.report_refused(now, reason_code, reason.name(), connect, out);
        let mut raw = [0u8; REASON_STRING_ROOM];
        let connack = if self.version.is_v5() {
            ConnAck {
                properties: reason_properties(
                    reason,
                    self.wants_reason_strings(),
                    Context::ConnAck,
                    &mut raw,
                ),
                ..ConnAck::new(false, reason.as_u8())
            }
        } else {
            ConnAck::new(false, reason.connect_return_code().as_u8())
        };
        tx.put(&Packet::ConnAck(connack));
    }

    /// The `refused` event of a CONNECT refused with `reason_code` (as the CONNACK carries it)
    /// for the reason named `reason`.
    fn report_refused(
        &self,
        now: u64,
        reason_code: u8,
        reason: &str,
        connect: Option<&Connect<'_>>,
        out: &mut impl Output,
    ) {
        let info = RefusedInfo {
            client_id: connect.map_or("", |c| c.client_id),
            username: connect.and_then(|c| c.username),
            peer: (!self.peer.is_empty()).then_some(self.peer.as_str()),
            reason_code,
            reason,
        };
        if let Some(event) = self.tracker.handle_refused(now, info) {
            let _ = out.event(&event);
        }
    }

    /// Messages meant for the client were dropped (a delivery too large or expired, see
    /// [`DeliveryError::drop_reason`]; messages the router skipped; a full queue of the
    /// driver's): the `dropped` event, within the connection's rate bound (a suppressed one
    /// is counted as [`Counter::EventSuppressed`]). Nothing for a drop of activity events
    /// themselves (see [`Tracker::handle_dropped`]), nor when the kind is off. The driver
    /// counts the drop itself, as before.
    pub fn handle_dropped(&mut self, now: u64, info: DropInfo<'_>, out: &mut impl Output) {
        access::report(
            self.tracker.handle_dropped(now, info),
            EventKind::Dropped,
            out,
        );
    }

    /// Closes for a fault of the client's, counting it.
    fn fail(&mut self, now: u64, cause: CloseCause, tx: &mut Tx<'_>, out: &mut impl Output) {
        out.count(match cause {
            CloseCause::PacketTooLarge => Counter::PacketTooLarge,
            CloseCause::QuotaExceeded | CloseCause::ReceiveMaximumExceeded => {
                Counter::QuotaExceeded
            }
            _ => Counter::ProtocolError,
        });
        self.close(now, cause, tx, out);
    }

    /// Why a client with one QoS 2 publish too many unreleased is closed: MQTT 5 announced the
    /// limit as the Receive Maximum (0x93, 5.0 section 3.3.4); MQTT 3.1.1 knows no such limit.
    fn receive_maximum_cause(&self) -> CloseCause {
        if self.version.is_v5() {
            CloseCause::ReceiveMaximumExceeded
        } else {
            CloseCause::QuotaExceeded
        }
    }

    /// Ends the connection for `cause`, telling an MQTT 5 client why.
    fn close(&mut self, now: u64, cause: CloseCause, tx: &mut Tx<'_>, out: &mut impl Output) {
        if matches!(self.state, State::Connected | State::Draining) {
            self.put_disconnect(cause, tx);
        }
        self.end(now, cause, out);
    }

    /// Ends the session of a connected client for `cause` (the will when due, the
    /// `disconnected` event, [`Route::End`]); any other state just becomes closed.
    fn end(&mut self, now: u64, cause: CloseCause, out: &mut impl Output) {
        if self.state != State::Connected {
            self.state = State::Closed;
            return;
        }
        // Nothing more goes to this client: deliveries to it are not written.
        self.state = State::Closed;
        // A shutdown keeps nothing: the driver is going away.
        let may_keep = cause != CloseCause::ServerShutdown;
        self.will_at_end(now, cause.publishes_will(), may_keep, out);
        if let Some(event) =
            self.tracker
                .handle_close(now, cause.reason(), cause.event_reason_code())
        {
            // The client is gone: a delivery of its own `disconnected` has nowhere to go.
            let _ = out.event(&event);
        }
        let _ = out.route(Route::End {
            session_expiry: self.session_expiry,
            cause,
        });
        debug!("server: client disconnected");
        if !self.keep(now, may_keep) {
            self.store.clear();
        }
    }

    /// MQTT 5: the server's DISCONNECT with the reason of `cause` (5.0 section 3.14), when the
    /// server ends the connection. MQTT 3.1.1 has none: the transport closes.
    fn put_disconnect(&self, cause: CloseCause, tx: &mut Tx<'_>) {
        if let (true, Some(reason)) = (self.version.is_v5(), cause.reason_code()) {
            let mut raw = [0u8; REASON_STRING_ROOM];
            tx.put(&Packet::Disconnect(codec::Disconnect {
                properties: reason_properties(
                    reason,
                    self.wants_reason_strings(),
                    Context::Disconnect,
                    &mut raw,
                ),
                ..codec::Disconnect::with_reason(reason.as_u8())
            }));
        }
    }

    /// One packet of a connected client.
    fn handle_packet(
        &mut self,
        now: u64,
        packet: Packet<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        match packet {
            Packet::Publish(publish) => self.handle_publish(now, publish, tx, out),
            Packet::PubAck(ack) => self.handle_ack(now, ack, Ack::PubAck, tx, out),
            // MQTT 5.0 section 4.3.3: a PUBREC with a failure ends the flow, no PUBREL.
            Packet::PubRec(ack) if ack.reason >= 0x80 => {
                // The flow ends here: the delivery no longer counts against Receive Maximum.
                self.flow.acknowledged();
                self.report_ack(now, ack, Ack::PubRec, tx, out);
                let _ = out.route(Route::Acked {
                    pkid: ack.pkid,
                    ack: Ack::PubAck,
                });
                let _ = out.route(Route::Acked {
                    pkid: ack.pkid,
                    ack: Ack::PubComp,
                });
            }
            Packet::PubRec(ack) => self.handle_ack(now, ack, Ack::PubRec, tx, out),
            Packet::PubComp(ack) => self.handle_ack(now, ack, Ack::PubComp, tx, out),
            Packet::PubRel(ack) => {
                // Section 4.3.3: PUBCOMP even for an id no longer remembered; MQTT 5 says so
                // with 0x92 (packet identifier not found).
                let known = self.store.remove_inbound_qos2(ack.pkid);
                let mut pubcomp = codec::Ack::new(ack.pkid);
                if !known && self.version.is_v5() {
                    pubcomp.reason = 0x92;
                }
                tx.put(&Packet::PubComp(pubcomp));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(now, subscribe, tx, out),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(now, unsubscribe, tx, out),
            Packet::PingReq => {
                tx.put(&Packet::PingResp);
            }
            Packet::Disconnect(disconnect) => self.handle_disconnect(now, disconnect, tx, out),
            // A second CONNECT (section 3.1.0) or a packet only a server sends.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                debug!("server: packet not allowed from a client");
                self.fail(now, CloseCause::ProtocolError, tx, out);
            }
        }
    }

    /// DISCONNECT from the client (section 3.14): MQTT 5 may ask for the will (0x04) and change
    /// the session expiry, but not from 0 to more (5.0 section 3.14.2.2.2).
    fn handle_disconnect(
        &mut self,
        now: u64,
        disconnect: codec::Disconnect<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        if !self.disconnect_expiry(&disconnect.properties) {
            self.fail(now, CloseCause::ProtocolError, tx, out);
            return;
        }
        self.close(
            now,
            CloseCause::of_client_disconnect(disconnect.reason),
            tx,
            out,
        );
    }

    /// PUBACK, PUBREC or PUBCOMP for a delivery (sections 3.4, 3.5, 3.7): PUBREL for a PUBREC,
    /// `msgack` for a tracked envelope (on PUBACK at QoS 1, on PUBREC at QoS 2), the router told.
    fn handle_ack(
        &mut self,
        now: u64,
        packet: codec::Ack<'_>,
        ack: Ack,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        if ack == Ack::PubRec {
            tx.put(&Packet::PubRel(codec::Ack::new(packet.pkid)));
        }
        if ack != Ack::PubRec {
            self.flow.acknowledged();
        }
        self.report_ack(now, packet, ack, tx, out);
        let _ = out.route(Route::Acked {
            pkid: packet.pkid,
            ack,
        });
    }

    /// The `msgack` of an acknowledgement, with its MQTT 5 reason code (a refusal is a
    /// negative `msgack`).
    fn report_ack(
        &mut self,
        now: u64,
        packet: codec::Ack<'_>,
        ack: Ack,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        let code = self.version.is_v5().then_some(packet.reason);
        let event = match ack {
            Ack::PubAck => self.tracker.handle_puback(now, packet.pkid, code),
            Ack::PubRec => self.tracker.handle_pubrec(now, packet.pkid, code),
            Ack::PubComp => None,
        };
        if let Some(event) = event {
            emit_with(
                &mut Own::of(&self.store, &mut self.next_pkid, self.wildcard_events),
                event,
                tx,
                out,
            );
        }
    }

    /// PUBLISH (section 3.3): the system-topic rule, QoS 2 duplicates, the acknowledgement,
    /// the route, the `message` event.
    fn handle_publish(
        &mut self,
        now: u64,
        publish: Publish<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        // MQTT 5.0 section 3.3.2.3.4: a topic alias the client sets or uses, within the
        // Topic Alias Maximum of the CONNACK; a client never sends a subscription identifier.
        let maximum = alias::inbound_maximum(&self.limits(), &self.store);
        if let Err(cause) = alias::learn(&mut self.store, maximum, &publish) {
            self.fail(now, cause, tx, out);
            return;
        }
        if publish.properties.subscription_identifier().is_some() {
            self.fail(now, CloseCause::ProtocolError, tx, out);
            return;
        }
        let pkid = publish.pkid.unwrap_or(0);
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                tx.put(&Packet::PubAck(codec::Ack::new(pkid)));
            }
            QoS::ExactlyOnce => {
                if self.store.has_inbound_qos2(pkid) {
                    // Section 4.3.3: a resent PUBLISH before PUBREL is not delivered again.
                    tx.put(&Packet::PubRec(codec::Ack::new(pkid)));
                    return;
                }
                if self.store.inbound_qos2_count() >= self.limits().max_inbound_qos2
                    || self.store.insert_inbound_qos2(pkid).is_err()
                {
                    warn!("server: too many QoS 2 publishes awaiting PUBREL");
                    self.fail(now, self.receive_maximum_cause(), tx, out);
                    return;
                }
                tx.put(&Packet::PubRec(codec::Ack::new(pkid)));
            }
        }
        let info = PublishInfo {
            // `learn` checked that an empty topic has a known alias.
            topic: alias::topic_of(&self.store, &publish),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
        };
        let mut own = Own::of(&self.store, &mut self.next_pkid, self.wildcard_events);
        own.v5 = self.version.is_v5();
        route_publish(
            &mut self.tracker,
            &mut own,
            Some(tx),
            now,
            info,
            publish.properties,
            out,
        );
    }

    /// SUBSCRIBE (section 3.8): one SUBACK code per filter, then a `subscribed` event per
    /// granted filter (after the SUBACK, so the subscriber's own event reaches it).
    fn handle_subscribe(
        &mut self,
        now: u64,
        subscribe: Subscribe<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        let count = subscribe.filters.len();
        if count > self.limits().max_filters_per_packet {
            warn!("server: too many filters in one SUBSCRIBE");
            self.fail(now, CloseCause::QuotaExceeded, tx, out);
            return;
        }
        let id = subscribe.properties.subscription_identifier();
        if id.is_some() && S::DECLINED.contains(Declined::SUBSCRIPTION_IDENTIFIERS) {
            // MQTT 5.0 section 3.2.2.3.12: the CONNACK said Subscription Identifiers
            // Available 0.
            self.fail(
                now,
                CloseCause::SubscriptionIdentifiersNotSupported,
                tx,
                out,
            );
            return;
        }
        // No Local on a shared subscription (MQTT 5.0 section 3.8.3.1) never gets here: the
        // codec refuses the SUBSCRIBE (`DecodeError::InvalidSubscriptionOptions`, 0x82), also
        // where shared subscriptions are off. Without them a `$share/` filter gets SUBACK 0x9E
        // (`grant`).
        let Some(start) = tx.codes_frame(0x90, subscribe.pkid, count) else {
            // answer_room() was checked before decoding.
            self.fail(now, CloseCause::ProtocolError, tx, out);
            return;
        };
        let id = id.unwrap_or(0);
        for (at, (filter, options)) in (start..).zip(subscribe.filters.iter_options()) {
            let code = match self.grant(now, filter, options, id, out) {
                // Before MQTT 5 every refusal is 0x80 (MQTT 3.1 has no such code; 0x80 is what
                // brokers send it anyway).
                SubAckCode::Refused(_) if !self.version.is_v5() => SubAckCode::Failure,
                code => code,
            };
            tx.set(at, code.as_u8());
        }
        let v5 = self.version.is_v5();
        for (at, (filter, options)) in (start..).zip(subscribe.filters.iter_options()) {
            if let Some(SubAckCode::Success(qos)) = tx.get(at).and_then(SubAckCode::from_u8)
                && let Some(event) =
                    self.tracker
                        .handle_subscribe(now, filter, Some(qos), v5.then_some(options))
            {
                emit_with(
                    &mut Own::of(&self.store, &mut self.next_pkid, self.wildcard_events),
                    event,
                    tx,
                    out,
                );
            }
        }
    }

    /// Whether the access rule refuses `filter`: events go to allowed clients only; other `$`
    /// topics belong to the server, which serves none (section 4.7.2).
    fn is_denied_filter(&self, filter: &str) -> bool {
        let events = self.tracker.config().topics.filter_receives_events(filter);
        (events && !self.may_subscribe_system) || (!events && is_server_filter(filter))
    }

    /// Whether the topic access rules allow a subscription to `filter` (a refusal is counted
    /// and reported).
    fn is_allowed_filter(&mut self, now: u64, filter: &str, out: &mut impl Output) -> bool {
        access::check(&mut self.tracker, now, Action::Subscribe, filter, out)
    }

    /// Whether reason strings go with a refusing CONNACK and the server's DISCONNECT: the
    /// client did not ask for none, and the server does not decline them.
    fn wants_reason_strings(&self) -> bool {
        self.wants_problems && !S::DECLINED.contains(Declined::REASON_STRINGS)
    }

    /// Whether a session of `session_expiry` (granted) may hold shared subscriptions (see
    /// [`Limits::shared_subscriptions_in_kept_sessions`]; never when the store declines them).
    fn serves_shared(&self, session_expiry: u32) -> bool {
        !S::DECLINED.contains(Declined::SHARED_SUBSCRIPTIONS)
            && self.limits().shared_subscriptions
            && (self.limits().shared_subscriptions_in_kept_sessions || session_expiry == 0)
    }

    /// The SUBACK code for one filter: the access rules (MQTT 5: 0x87 not authorized), the
    /// limit (0x97 quota exceeded), the router (0x80, or 0x97 when its memory bound is
    /// reached, [`Routed::Full`]).
    fn grant(
        &mut self,
        now: u64,
        filter: &str,
        requested: SubscriptionOptions,
        id: u32,
        out: &mut impl Output,
    ) -> SubAckCode {
        if self.is_denied_filter(filter) {
            let denied = Counter::SubscriptionDenied;
            access::refused(
                &mut self.tracker,
                now,
                Action::Subscribe,
                filter,
                denied,
                out,
            );
            return SubAckCode::Refused(ReasonCode::NotAuthorized.as_u8());
        }
        if !self.is_allowed_filter(now, filter, out) {
            return SubAckCode::Refused(ReasonCode::NotAuthorized.as_u8());
        }
        if !self.serves_shared(self.session_expiry)
            && crate::topic::shared_filter(filter).0.is_some()
        {
            out.count(Counter::SubscriptionRefused);
            return SubAckCode::Refused(ReasonCode::SharedSubscriptionsNotSupported.as_u8());
        }
        let held = self.store.subscription(filter).is_some();
        if !held && self.store.subscription_count() >= self.limits().max_subscriptions {
            out.count(Counter::SubscriptionRefused);
            return SubAckCode::Refused(ReasonCode::QuotaExceeded.as_u8());
        }
        let qos = requested.qos.min(self.limits().max_qos);
        if self.store.insert_subscription(filter, qos).is_err() {
            out.count(Counter::SubscriptionRefused);
            return SubAckCode::Refused(ReasonCode::QuotaExceeded.as_u8());
        }
        let options = SubscriptionOptions { qos, ..requested };
        // A store that keeps no options serves the filter with the defaults.
        let _ = self.store.set_subscription_extras(filter, options, id);
        let plain = is_plain(options, id);
        let is_new = !held;
        let code = match out.route(Route::Subscribe {
            filter,
            options,
            plain,
            is_new,
        }) {
            Routed::Refused => SubAckCode::Failure,
            Routed::Full => SubAckCode::Refused(ReasonCode::QuotaExceeded.as_u8()),
            Routed::Accepted | Routed::ExceptSender => return SubAckCode::Success(qos),
        };
        if !held {
            self.store.remove_subscription(filter);
        }
        out.count(Counter::SubscriptionRefused);
        code
    }

    /// UNSUBSCRIBE (section 3.10): always an UNSUBACK; the router and an `unsubscribed` event
    /// for each filter the client held.
    fn handle_unsubscribe(
        &mut self,
        now: u64,
        unsubscribe: Unsubscribe<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        if unsubscribe.filters.len() > self.limits().max_filters_per_packet {
            warn!("server: too many filters in one UNSUBSCRIBE");
            self.fail(now, CloseCause::QuotaExceeded, tx, out);
            return;
        }
        // MQTT 5: one reason per filter, 0x00 or 0x11 (no subscription existed, 5.0 3.11.3).
        let codes = if self.version.is_v5() {
            tx.codes_frame(0xB0, unsubscribe.pkid, unsubscribe.filters.len())
        } else {
            tx.put(&Packet::UnsubAck(codec::UnsubAck::new(unsubscribe.pkid)));
            None
        };
        for (index, filter) in unsubscribe.filters.iter().enumerate() {
            let held = self.store.remove_subscription(filter);
            if let Some(start) = codes {
                tx.set(start + index, if held { 0x00 } else { 0x11 });
            }
            if held {
                let _ = out.route(Route::Unsubscribe { filter });
                if let Some(event) = self.tracker.handle_unsubscribe(now, filter) {
                    emit_with(
                        &mut Own::of(&self.store, &mut self.next_pkid, self.wildcard_events),
                        event,
                        tx,
                        out,
                    );
                }
            }
        }
    }
}

/// Whether nothing of a subscription with `options` and identifier `id` changes its deliveries
/// (see [`Route::Subscribe`]'s `plain`).
fn is_plain(options: SubscriptionOptions, id: u32) -> bool {
    id == 0
        && !options.no_local
        && !options.retain_as_published
        && options.retain_handling != RetainHandling::Never
}

/// Sends an event and, when the router leaves this connection's own client to the engine and
/// a subscription of it matches, delivers it (a free function, so that the event may borrow the
/// tracker while the packet id counter moves).
fn emit_with(
    own: &mut Own<'_, impl SessionStore>,
    event: Event<'_>,
    tx: &mut Tx<'_>,
    out: &mut impl Output,
) {
    let dropped = out.event(&event).is_some_and(|copy| {
        event_qos(own.store, copy.topic, own.wildcard_events).is_some_and(|subscription_qos| {
            let copy = Delivery {
                subscription_qos,
                pkid: None,
                ..copy
            };
            encode_delivery(own.next_pkid, copy, &Additions::default(), u32::MAX, tx).is_err()
        })
    });
    if dropped {
        out.count(Counter::DeliveryDropped);
    }
}

/// What a delivery to the connection's own client needs besides the tracker: its
/// subscriptions, the packet id counter, and whether wildcard filters receive events; and,
/// for a publish of its own, whether it may hold No Local subscriptions.
struct Own<'c, S> {
    store: &'c S,
    next_pkid: &'c mut u16,
    wildcard_events: bool,
    /// Whether the client speaks MQTT 5, the only version with No Local: only then does a
    /// publish look through its subscriptions for one ([`RoutedPublish::for_no_local`]).
    v5: bool,
}

impl<'c, S> Own<'c, S> {
    /// Borrows the fields a self-delivery needs, leaving the tracker free for the event.
    fn of(store: &'c S, next_pkid: &'c mut u16, wildcard_events: bool) -> Self {
        Own {
            store,
            next_pkid,
            wildcard_events,
            v5: false,
        }
    }
}

/// The highest QoS of the client's subscriptions that receive the activity event on `topic`
/// (see [`SystemTopics::filter_receives_event`](crate::system::SystemTopics::filter_receives_event):
/// unless `wildcard_events`, a filter whose first level is a wildcard receives none).
fn event_qos<S: SessionStore>(store: &S, topic: &str, wildcard_events: bool) -> Option<QoS> {
    if wildcard_events {
        return store.matching_qos(topic);
    }
    let mut best = None;
    store.for_each_matching(topic, &mut |filter, options, _| {
        if !is_wildcard_first::<S>(filter) {
            best = best.max(Some(options.qos));
        }
    });
    best
}

/// Whether `filter` (a shared subscription's: the filter it shares) starts with a wildcard
/// level, which receives no activity events unless configured to. A store `S` that declines
/// shared subscriptions holds no `$share/` filter.
fn is_wildcard_first<S: SessionStore>(filter: &str) -> bool {
    if S::DECLINED.contains(Declined::SHARED_SUBSCRIPTIONS) {
        return crate::topic::starts_with_wildcard(filter);
    }
    crate::topic::starts_with_wildcard(crate::topic::shared_filter(filter).1)
}

/// Routes a publish of the client's, or its last will (`tx` is `None`: the client is gone),
/// unless the system-topic rule denies it (counted); delivers it back to the sender when the
/// router asks for that; then gives the `message` event.
fn route_publish<A: AckStore>(
    tracker: &mut Tracker<A>,
    own: &mut Own<'_, impl SessionStore>,
    mut tx: Option<&mut Tx<'_>>,
    now: u64,
    info: PublishInfo<'_>,
    properties: Properties<'_>,
    out: &mut impl Output,
) {
    // `$` topics belong to the server (section 4.7.2) and it serves none to clients besides the
    // system topics (whose rule is the tracker's, below): dropped like a denied publish.
    if is_server_topic(info.topic) && !tracker.config().topics.is_system_topic(info.topic) {
        debug!("server: publish on a $ topic dropped");
        let denied = Counter::PublishDenied;
        access::refused(tracker, now, Action::Publish, info.topic, denied, out);
        return;
    }
    // The rule is the tracker's (SystemTopics::may_publish); it is asked before the route so
    // that the route can borrow the client id, which the `message` event borrows afterwards.
    let system_allows = tracker
        .config()
        .topics
        .may_publish(tracker.client_id(), info.topic);
    // The topic access rules come after the system-topic rules: a refused publish is dropped
    // (no route, no `message` event), the client stays.
    if system_allows && !access::check(tracker, now, Action::Publish, info.topic, out) {
        return;
    }
    if system_allows {
        let mut for_no_local = false;
        if own.v5 {
            own.store
                .for_each_matching(info.topic, &mut |_, options, _| {
                    for_no_local |= options.no_local;
                });
        }
        let routed = RoutedPublish {
            topic: info.topic,
            payload: info.payload,
            qos: info.qos,
            retain: info.retain,
            publisher: tracker.client_id(),
            is_will: tx.is_none(),
            properties,
            for_no_local,
        };
        match (out.route(Route::Publish(routed)), tx.as_deref_mut()) {
            (Routed::Refused, _) => out.count(Counter::PublishNotRouted),
            (Routed::ExceptSender, Some(tx)) => {
                if let Some(subscription_qos) = own.store.matching_qos(info.topic) {
                    let copy = Delivery {
                        subscription_qos,
                        properties,
                        ..Delivery::new(info.topic, info.payload, info.qos)
                    };
                    deliver_to_sender(tracker, now, own.next_pkid, copy, tx, out);
                }
            }
            _ => {}
        }
    }
    match tracker.handle_publish(now, info) {
        PublishOutcome::Denied => {
            let denied = Counter::PublishDenied;
            access::refused(tracker, now, Action::Publish, info.topic, denied, out);
        }
        PublishOutcome::Accepted(Some(event)) => match tx {
            Some(tx) => emit_with(own, event, tx, out),
            // The client is gone: its copy of the event has nowhere to go.
            None => {
                let _ = out.event(&event);
            }
        },
        PublishOutcome::Accepted(None) => {}
    }
}

/// Writes the client's own publish back to it, remembered for `msgack` like any delivery.
fn deliver_to_sender<A: AckStore>(
    tracker: &mut Tracker<A>,
    now: u64,
    next_pkid: &mut u16,
    own: Delivery<'_>,
    tx: &mut Tx<'_>,
    out: &mut impl Output,
) {
    match encode_delivery(next_pkid, own, &Additions::default(), u32::MAX, tx) {
        Ok(Delivered {
            pkid: Some(pkid),
            qos,
            ..
        }) => {
            let mut publisher = heapless::String::<CLIENT_ID_CAPACITY>::new();
            // Both hold at most CLIENT_ID_CAPACITY bytes.
            let _ = publisher.push_str(tracker.client_id());
            let info = DeliveryInfo {
                pkid,
                qos,
                topic: own.topic,
                payload: own.payload,
                pub_client_id: Some(&publisher),
                properties: own.properties,
            };
            tracker.handle_delivery(info, crate::tracker::no_publisher);
        }
        Ok(_) => {}
        Err(_) => {
            out.count(Counter::DeliveryDropped);
            let info = DropInfo {
                reason: DropReason::QueueFull,
                topic: Some(own.topic),
                filter: None,
                count: 1,
            };
            access::report(tracker.handle_dropped(now, info), EventKind::Dropped, out);
        }
    }
}
