//! Relay mode: the engine in front of an upstream MQTT broker that routes the messages (MQTT
//! 3.1.1 chapters 3 and 4, as a transparent proxy). See [`Relay`].

use crate::QoS;
use crate::acks::AckStore;
use crate::client_id::CLIENT_ID_CAPACITY;
use crate::codec::{
    self, ConnectReturnCode, DecodeError, Packet, Publish, SubAckCode, Subscribe, Unsubscribe,
    Version,
};
use crate::envelope::Envelope;
use crate::tracker::{DeliveryInfo, PublishInfo, PublishOutcome};

use super::access::{self, Access, Action};
use super::tx::Tx;
use super::{
    AliasDirection, CloseCause, ConnectAnswer, Connection, Counter, Output, Progress, ReasonCode,
    Route, RoutedPublish, SessionStore, State, alias,
};
use crate::topic::is_server_topic;

mod store;
#[cfg(test)]
mod tests;

pub use store::{FixedRequestStore, RequestStore};

/// The key of the CONNECT in a [`RequestStore`]: 0 is no packet id (section 2.3.1).
const CONNECT_KEY: u16 = 0;

/// Where a [`Relay`]'s outputs go: an [`Output`] that also reaches the upstream broker.
pub trait RelayOutput: Output {
    /// Writes `packet`, one whole packet of the client's, unchanged, to the upstream broker.
    fn forward(&mut self, packet: &[u8]);

    /// The upstream broker accepted the client: an older connection with `client_id` is taken
    /// over now (the driver closes it with [`CloseCause::TakenOver`]), so that its
    /// `disconnected` event comes before this connection's `connected`.
    fn upstream_accepted(&mut self, client_id: &str) {
        let _ = client_id;
    }
}

/// What [`Relay::handle_upstream_input`] did with the upstream's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Relayed {
    /// Bytes of the input done with: drop them from the front.
    pub consumed: usize,
    /// The first bytes of the input (at most `consumed`): send them to the client unchanged,
    /// before `tx`.
    pub forward: usize,
    /// Bytes written to the front of `tx`: send them after the forwarded ones.
    pub written: usize,
}

/// One client connection relayed to an upstream MQTT broker that routes its messages (MQTT
/// 3.1.1 chapters 3 and 4, as a transparent proxy): the engine's relay mode.
///
/// A `Relay` is a [`Connection`] whose router is another MQTT server reached over its own
/// connection: the tap of `adapter-tokio`. The client's packets go upstream byte for byte and the
/// upstream's come back byte for byte, so the upstream answers the client (the accepting
/// CONNACK, SUBACK codes, PUBACK / PUBREC / PUBCOMP of the client's publishes, PINGRESP) and
/// delivers to it with its own packet ids. The engine still makes every decision: it reads each
/// packet of both directions and tells the driver what to do with it.
///
/// | from the client | the engine |
/// |---|---|
/// | CONNECT | its rules ([`Route::Connect`] asks the driver, as in every mode), then [`RelayOutput::forward`] once the driver accepts; a refusal is answered here |
/// | PUBLISH on a system or `$` topic, or one the topic access rules refuse ([`Output::is_allowed`]) | dropped and counted; QoS 1 / 2 answered here (PUBACK, PUBREC, and PUBCOMP at its PUBREL), since the upstream never saw it; the client stays |
/// | QoS 2 PUBLISH past [`Limits::max_inbound_qos2`](super::Limits::max_inbound_qos2) awaiting PUBREL | closes the connection (quota exceeded) |
/// | SUBSCRIBE with a filter the system-topic rule, the topic access rules or a limit refuses | answered here for every filter, not forwarded (see below): 0x80, MQTT 5: 0x87 for the filters the rules refuse |
/// | SUBSCRIBE / UNSUBSCRIBE past [`Limits::max_filters_per_packet`](super::Limits::max_filters_per_packet) filters, or past the [`RequestStore`]'s room | closes the connection |
/// | a packet only a server sends, a second CONNECT, bad bytes | closes the connection |
/// | anything else | forwarded (and reported: `message`, `msgack`, `normal` or `disconnect_with_will` at DISCONNECT) |
///
/// | from the upstream | the engine |
/// |---|---|
/// | CONNACK 0 | [`RelayOutput::upstream_accepted`] (the driver takes an older connection of the id over), `connected`, forwarded |
/// | a refusing CONNACK | forwarded and counted; the connection closes without an event |
/// | anything but a CONNACK first, no CONNACK within the answer timeout, the upstream gone before it | CONNACK 3 (server unavailable) written here; closes without an event |
/// | SUBACK | a `subscribed` event per granted filter, forwarded |
/// | UNSUBACK | an `unsubscribed` event per filter the client held, forwarded |
/// | PUBLISH (a delivery) | remembered for `msgack`, forwarded; an activity event at QoS 0 that the client's subscriptions receive only through filters whose first level is a wildcard is not forwarded (counted; see [`Connection::handle_delivery`]) |
/// | a packet only a client sends, bad bytes, a packet over [`Limits::max_packet_size`](super::Limits::max_packet_size) | closes the connection (`upstream_closed`, `packet_too_large`), not forwarded |
/// | anything else | forwarded |
///
/// Where the engine closes for a fault of the client's (a limit, bad bytes, a packet only a
/// server sends), the session ends at once (`disconnected`, [`Route::End`]) but the connection
/// drains ([`Relay::is_draining`]): the client is no longer read, and the upstream's answers to
/// what was forwarded before the fault still reach the client, until the upstream owes none or
/// the answer timeout passes. In the other modes the engine answers all that itself before the
/// fault; a relay that closed at once would cut those answers off.
///
/// A SUBSCRIBE is answered whole or forwarded whole: forwarding only its allowed filters would
/// mean re-encoding the packet and merging two SUBACKs, and a relay passes the client's bytes
/// unchanged. The client may send its allowed filters again in another SUBSCRIBE.
///
/// What the engine must remember of a forwarded request until the upstream answers it (the
/// CONNECT until its CONNACK, for the `connected` event; a SUBSCRIBE or UNSUBSCRIBE until its
/// SUBACK or UNSUBACK, for the events of its filters), and the QoS 2 publishes it answered
/// itself until their PUBREL, is kept in a [`RequestStore`], the driver's memory.
///
/// The last will is the upstream's: it publishes it, so a relay publishes none and reports no
/// `message` event for it. Keep-alive is the engine's as in every mode: the client's PINGREQ
/// goes upstream (keeping the upstream's own timer fed) and the upstream's PINGRESP comes back.
///
/// # Call order
///
/// As for a [`Connection`], with the upstream in place of a router:
///
/// 1. [`Relay::new`] around a new [`Connection`] when the client's transport is accepted.
/// 2. [`Relay::handle_input`] with the client's unconsumed bytes; what the driver's
///    [`RelayOutput::forward`] got goes to the upstream, `tx` to the client.
/// 3. At [`Route::Connect`] the driver checks what it checks in every mode, opens the upstream
///    connection, and calls [`Relay::handle_connect_answer`]: a refusal is answered at once, an
///    acceptance forwards the CONNECT ([`Relay::is_awaiting_upstream`] from then on). A driver
///    that cannot reach the upstream refuses with [`ReasonCode::ServerUnavailable`].
/// 4. [`Relay::handle_upstream_input`] with the upstream's unconsumed bytes: send the
///    `forward` first bytes to the client unchanged, then what the call wrote into `tx`. Once
///    the upstream's CONNACK made the connection [`Relay::is_connected`], call
///    [`Relay::handle_input`] again with the client bytes that waited.
/// 5. [`Relay::handle_timeout`] when [`Relay::poll_timeout`] has passed;
///    [`Relay::handle_close`] when the client's transport closes, the session is taken over, or
///    the upstream connection ends ([`CloseCause::RouterClosed`]). When the server shuts down,
///    [`Relay::handle_shutdown`] reports the end at once and the upstream is still relayed
///    until `handle_close`.
/// 6. While [`Relay::is_draining`] (after a shutdown, or a fault of the client's while the
///    upstream still owes it answers), read only the upstream.
/// 7. Once [`Relay::is_closed`], send what is in `tx` and close both transports (the upstream's
///    without DISCONNECT unless the client sent one, so that the upstream publishes the will).
///
/// In relay mode the [`Output`] gets [`Route::Connect`], [`Route::Publish`] (the message a
/// forwarded PUBLISH carries, for a driver that remembers publishers; what it answers does not
/// matter) and [`Route::End`]; no `Subscribe`, `Unsubscribe` or `Acked`: the forwarded packets
/// are those. A [`Delivery`](super::Delivery) returned from [`Output::event`] is ignored: the
/// upstream delivers the events to the client.
///
/// ```
/// use activity_core::acks::FixedAckStore;
/// use activity_core::event::{Event, Transport};
/// use activity_core::server::{
///     ConnectAnswer, Connection, Delivery, FixedRequestStore, FixedSessionStore, Output, Peer,
///     Relay, RelayOutput, Route, Routed, ServerConfig,
/// };
///
/// /// Collects what goes upstream, and counts the events.
/// #[derive(Default)]
/// struct Driver {
///     upstream: Vec<u8>,
///     events: usize,
/// }
///
/// impl Output for Driver {
///     fn route(&mut self, _route: Route<'_>) -> Routed {
///         Routed::Accepted
///     }
///     fn event(&mut self, _event: &Event<'_>) -> Option<Delivery<'_>> {
///         self.events += 1;
///         None
///     }
/// }
///
/// impl RelayOutput for Driver {
///     fn forward(&mut self, packet: &[u8]) {
///         self.upstream.extend_from_slice(packet);
///     }
/// }
///
/// let peer = Peer { addr: Some("192.0.2.10:51000"), is_loopback: false, transport: Transport::Tcp };
/// let conn = Connection::new(ServerConfig::default(), FixedAckStore::<4, 96>::new(),
///     FixedSessionStore::<4, 32, 4, 64>::new(), peer, 0, 1);
/// let mut relay = Relay::new(conn, FixedRequestStore::<4, 64>::new(), 5_000);
/// let mut driver = Driver::default();
/// let mut tx = [0u8; 512];
/// let now = 1_700_000_000_000;
///
/// // CONNECT (client id "c1"): the driver is asked, then accepts; the CONNECT goes upstream.
/// let connect = [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1'];
/// let progress = relay.handle_input(now, &connect, &mut tx, &mut driver);
/// assert_eq!(progress.consumed, 0);
/// let progress =
///     relay.handle_connect_answer(now, ConnectAnswer::accept(false), &connect, &mut tx, &mut driver);
/// assert_eq!((progress.consumed, progress.written), (connect.len(), 0));
/// assert_eq!(driver.upstream, connect);
///
/// // The upstream accepts: its CONNACK goes to the client unchanged, and `connected` is reported.
/// let connack = [0x20, 2, 0, 0];
/// let relayed = relay.handle_upstream_input(now, &connack, &mut tx, &mut driver, |_| None);
/// assert_eq!(relayed.forward, 4);
/// assert!(relay.is_connected());
/// assert_eq!(driver.events, 1);
///
/// // A publish on a system topic: dropped, and its PUBACK is the engine's.
/// driver.upstream.clear();
/// let forged = [0x32, 19, 0, 14, b'S', b'Y', b'S', b'T', b'E', b'M', b'/', b'm', b'e', b's',
///     b's', b'a', b'g', b'e', 0, 7, b'x'];
/// let progress = relay.handle_input(now, &forged, &mut tx, &mut driver);
/// assert_eq!(&tx[..progress.written], [0x40, 2, 0, 7]);
/// assert!(driver.upstream.is_empty());
/// ```
#[derive(Debug)]
pub struct Relay<A: AckStore, S: SessionStore, R: RequestStore> {
    conn: Connection<A, S>,
    requests: R,
    /// How long the upstream may take to answer the CONNECT, in ms.
    answer_timeout_ms: u64,
    /// The CONNECT went upstream and its CONNACK has not come back.
    awaiting_upstream: bool,
    /// Answers the upstream owes the client: for forwarded QoS 1 and 2 publishes, PUBRELs,
    /// SUBSCRIBEs, UNSUBSCRIBEs and PINGREQs.
    owed: u32,
    /// The server shuts down: a draining connection relays until the driver closes it, not
    /// only the answers owed.
    shutting_down: bool,
}

impl<A: AckStore, S: SessionStore, R: RequestStore> Relay<A, S, R> {
    /// Relays `conn`, a connection no byte was handed to yet, keeping its requests in
    /// `requests`; the upstream gets `answer_timeout_ms` to answer the CONNECT.
    pub fn new(mut conn: Connection<A, S>, requests: R, answer_timeout_ms: u64) -> Self {
        // The upstream keeps sessions, delays wills and says its own Server Keep Alive.
        conn.keeps_sessions = false;
        conn.limits.server_keep_alive = None;
        Relay {
            conn,
            requests,
            answer_timeout_ms,
            awaiting_upstream: false,
            owed: 0,
            shutting_down: false,
        }
    }

    /// The engine (its client id, tracker, store and limits).
    pub fn connection(&self) -> &Connection<A, S> {
        &self.conn
    }

    /// See [`Connection::set_msgack_tracking`].
    pub fn set_msgack_tracking(&mut self, on: bool) {
        self.conn.set_msgack_tracking(on);
    }

    /// The client id (empty before the upstream accepted the CONNECT).
    pub fn client_id(&self) -> &str {
        self.conn.client_id()
    }

    /// Whether the upstream accepted the CONNECT and the connection is not closed.
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Whether a [`Route::Connect`] awaits [`Relay::handle_connect_answer`].
    pub fn is_authorizing(&self) -> bool {
        self.conn.is_authorizing() && !self.awaiting_upstream
    }

    /// Whether the CONNECT went upstream and its CONNACK has not come back.
    pub fn is_awaiting_upstream(&self) -> bool {
        self.awaiting_upstream
    }

    /// Whether the connection is over: send what is in `tx`, then close both transports.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Whether the session has ended but the upstream is still relayed to the client: after a
    /// fault of the client's, until the upstream owes it no answer; after
    /// [`Relay::handle_shutdown`], until [`Relay::handle_close`]. Stop reading the client, keep
    /// relaying the upstream until [`Relay::is_closed`].
    pub fn is_draining(&self) -> bool {
        self.conn.is_draining()
    }

    /// See [`Connection::is_blocked`].
    pub fn is_blocked(&self) -> bool {
        self.conn.is_blocked()
    }

    /// When [`Relay::handle_timeout`] is due, in ms since the Unix epoch: the connect timeout,
    /// the upstream's answer timeout, then 1.5 times the keep-alive.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.awaiting_upstream || (self.is_draining() && !self.shutting_down) {
            return Some(self.conn.since.saturating_add(self.answer_timeout_ms));
        }
        self.conn.poll_timeout()
    }

    /// Acts on a deadline (see [`Relay::poll_timeout`]) that has passed at `now`: an upstream
    /// that did not answer the CONNECT gets the client a CONNACK 3; returns the bytes written
    /// to `tx`.
    pub fn handle_timeout(&mut self, now: u64, tx: &mut [u8], out: &mut impl Output) -> usize {
        match self.poll_timeout() {
            Some(deadline) if self.awaiting_upstream && now >= deadline => {
                let mut tx = Tx::new(tx, self.conn.version);
                debug!("relay: no CONNACK from the upstream in time");
                self.unavailable(now, &mut tx, out);
                tx.finish(out)
            }
            Some(deadline) if self.is_draining() && !self.shutting_down && now >= deadline => {
                debug!("relay: the upstream's last answers did not come in time");
                self.conn.state = State::Closed;
                0
            }
            _ => self.conn.handle_timeout(now, tx, out),
        }
    }

    /// Ends the connection for `cause`, as [`Connection::handle_close`] does; an upstream that
    /// closes before it answered the CONNECT ([`CloseCause::RouterClosed`]) gets the client a
    /// CONNACK 3. Returns the bytes written to `tx`.
    pub fn handle_close(
        &mut self,
        now: u64,
        cause: CloseCause,
        tx: &mut [u8],
        out: &mut impl Output,
    ) -> usize {
        if self.awaiting_upstream && cause == CloseCause::RouterClosed {
            let mut tx = Tx::new(tx, self.conn.version);
            debug!("relay: the upstream closed before its CONNACK");
            self.unavailable(now, &mut tx, out);
            return tx.finish(out);
        }
        self.awaiting_upstream = false;
        self.requests.clear();
        self.conn.handle_close(now, cause, tx, out)
    }

    /// The protocol version the client speaks (see [`Connection::version`]).
    pub fn version(&self) -> Version {
        self.conn.version()
    }

    /// Ends the session because the server shuts down, as [`Connection::handle_shutdown`] does:
    /// the `disconnected` event (`server_shutdown`) and [`Route::End`] now; the client is no
    /// longer read, and what the upstream sends is still relayed (the shutdown events of the
    /// other clients among it) until [`Relay::handle_close`]. Returns the bytes written to
    /// `tx`.
    pub fn handle_shutdown(&mut self, now: u64, tx: &mut [u8], out: &mut impl Output) -> usize {
        if !self.conn.is_connected() {
            return self.handle_close(now, CloseCause::ServerShutdown, tx, out);
        }
        self.shutting_down = true;
        self.requests.clear();
        self.conn.handle_shutdown(now, tx, out)
    }

    /// Reads the client's packets at the front of `input` and acts on them: forwards what
    /// goes upstream through [`RelayOutput::forward`], writes the engine's own answers into
    /// `tx`. Stops where [`Connection::handle_input`] stops, and while the upstream has not
    /// answered the CONNECT.
    pub fn handle_input(
        &mut self,
        now: u64,
        input: &[u8],
        tx: &mut [u8],
        out: &mut impl RelayOutput,
    ) -> Progress {
        match self.conn.state {
            // The CONNECT rules are the same in every mode.
            State::AwaitConnect => self.conn.handle_input(now, input, tx, out),
            State::Connected => {
                let mut tx = Tx::new(tx, self.conn.version);
                let consumed = self.input(now, input, &mut tx, out);
                Progress {
                    consumed,
                    written: tx.finish(out),
                }
            }
            _ => Progress::default(),
        }
    }

    /// Finishes the CONNECT at the front of `input` with the driver's `answer`: a refusal is
    /// answered as [`Connection::handle_connect_answer`] does; an acceptance forwards the
    /// CONNECT upstream and waits for the upstream's CONNACK
    /// ([`Relay::handle_upstream_input`]). Does nothing unless a [`Route::Connect`] awaits its
    /// answer, `input` starts with that CONNECT and `tx` has
    /// [`Connection::answer_room`].
    pub fn handle_connect_answer(
        &mut self,
        now: u64,
        answer: ConnectAnswer,
        input: &[u8],
        tx: &mut [u8],
        out: &mut impl RelayOutput,
    ) -> Progress {
        if !self.is_authorizing() {
            return Progress::default();
        }
        if let ConnectAnswer::Refuse(_) = answer {
            return self.conn.handle_connect_answer(now, answer, input, tx, out);
        }
        let mut tx = Tx::new(tx, self.conn.version);
        if tx.room() < self.conn.answer_room() {
            return Progress::default();
        }
        let Ok(Some((Packet::Connect(decoded), len))) =
            codec::decode_with(input, self.conn.limits.max_packet_size, self.conn.version)
        else {
            return Progress::default();
        };
        let connect = input.get(..len).unwrap_or_default();
        if self.requests.keep(CONNECT_KEY, connect).is_err() {
            warn!("relay: no room to keep the CONNECT");
            let unavailable = ReasonCode::ServerUnavailable;
            self.conn
                .refuse(now, unavailable, Some(&decoded), &mut tx, out);
        } else {
            // The upstream publishes the will, not the engine.
            self.conn.store.clear_will();
            out.forward(connect);
            self.awaiting_upstream = true;
            self.conn.since = now;
        }
        Progress {
            consumed: len,
            written: tx.finish(out),
        }
    }

    /// Reads the upstream's packets at the front of `input` and acts on them (see the
    /// [`Relay`] docs). Send the first [`Relayed::forward`] bytes to the client unchanged,
    /// then what the call wrote into `tx`. A delivery that does not name its publisher asks
    /// `lookup` for the publisher of its envelope (see
    /// [`Tracker::handle_delivery`](crate::tracker::Tracker::handle_delivery)).
    pub fn handle_upstream_input<F>(
        &mut self,
        now: u64,
        input: &[u8],
        tx: &mut [u8],
        out: &mut impl RelayOutput,
        mut lookup: F,
    ) -> Relayed
    where
        F: FnMut(&Envelope) -> Option<heapless::String<CLIENT_ID_CAPACITY>>,
    {
        let mut tx = Tx::new(tx, self.conn.version);
        let mut consumed = 0;
        while self.awaiting_upstream
            || matches!(self.conn.state, State::Connected | State::Draining)
        {
            if self.is_draining() && !self.shutting_down && self.owed == 0 {
                self.conn.state = State::Closed;
                break;
            }
            if tx.room() < self.conn.answer_room() {
                break;
            }
            let rest = input.get(consumed..).unwrap_or_default();
            let (packet, len) =
                match codec::decode_with(rest, self.conn.limits.max_packet_size, self.conn.version)
                {
                    Ok(Some(decoded)) => decoded,
                    Ok(None) => break,
                    Err(error) => {
                        warn!("relay: undecodable bytes from the upstream, closing");
                        let cause = match error {
                            DecodeError::PacketTooLarge { .. } => CloseCause::PacketTooLarge,
                            _ => CloseCause::RouterClosed,
                        };
                        self.upstream_failed(now, cause, &mut tx, out);
                        return Relayed {
                            consumed: input.len(),
                            forward: consumed,
                            written: tx.finish(out),
                        };
                    }
                };
            if self.is_unwanted_event(&packet) {
                if consumed > 0 {
                    // The bytes forwarded are a prefix of the input: those before it go first.
                    break;
                }
                out.count(Counter::EventNotWanted);
                return Relayed {
                    consumed: len,
                    forward: 0,
                    written: tx.finish(out),
                };
            }
            if !self.upstream_packet(now, packet, &mut tx, out, &mut lookup) {
                return Relayed {
                    consumed: input.len(),
                    forward: consumed,
                    written: tx.finish(out),
                };
            }
            out.count(Counter::PacketOut);
            consumed += len;
        }
        Relayed {
            consumed,
            forward: consumed,
            written: tx.finish(out),
        }
    }

    /// Whether the upstream's `packet` is an activity event at QoS 0 that reaches the client
    /// only through filters whose first level is a wildcard (see
    /// [`Connection::is_unwanted_event`]): not forwarded. A QoS 1 or 2 delivery is forwarded
    /// all the same (the upstream awaits the client's acknowledgement of it), and so is one
    /// that sets a topic alias (the client must learn it).
    fn is_unwanted_event(&self, packet: &Packet<'_>) -> bool {
        match packet {
            Packet::Publish(publish) => {
                publish.qos == QoS::AtMostOnce
                    && self.conn.state == State::Connected
                    && publish.properties.topic_alias().is_none()
                    && self.conn.is_unwanted_event(&super::Delivery::new(
                        publish.topic,
                        publish.payload,
                        publish.qos,
                    ))
            }
            _ => false,
        }
    }

    /// The client's packets once connected (see [`Connection::handle_input`]).
    fn input(
        &mut self,
        now: u64,
        input: &[u8],
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) -> usize {
        let mut consumed = 0;
        self.conn.blocked = false;
        if !input.is_empty() {
            self.conn.since = now;
        }
        while self.conn.state == State::Connected {
            let rest = input.get(consumed..).unwrap_or_default();
            if tx.room() < self.conn.answer_room() {
                self.conn.blocked = !rest.is_empty();
                break;
            }
            let (packet, len) =
                match codec::decode_with(rest, self.conn.limits.max_packet_size, self.conn.version)
                {
                    Ok(Some(decoded)) => decoded,
                    Ok(None) => break,
                    Err(error) => {
                        let cause = match error {
                            DecodeError::PacketTooLarge { .. } => CloseCause::PacketTooLarge,
                            _ => CloseCause::ProtocolError,
                        };
                        warn!("relay: undecodable bytes from the client, closing");
                        self.fail(now, cause, tx, out);
                        return input.len();
                    }
                };
            out.count(Counter::PacketIn);
            consumed += len;
            let bytes = rest.get(..len).unwrap_or_default();
            self.client_packet(now, packet, bytes, tx, out);
        }
        consumed
    }

    /// One packet of a connected client, whose bytes are `bytes`.
    fn client_packet(
        &mut self,
        now: u64,
        packet: Packet<'_>,
        bytes: &[u8],
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) {
        match packet {
            Packet::Publish(publish) => self.client_publish(now, publish, bytes, tx, out),
            Packet::PubAck(codec::Ack { pkid, reason, .. }) => {
                out.forward(bytes);
                let code = self.conn.version.is_v5().then_some(reason);
                if let Some(event) = self.conn.tracker.handle_puback(now, pkid, code) {
                    let _ = out.event(&event);
                }
            }
            Packet::PubRec(codec::Ack { pkid, reason, .. }) => {
                out.forward(bytes);
                let code = self.conn.version.is_v5().then_some(reason);
                if let Some(event) = self.conn.tracker.handle_pubrec(now, pkid, code) {
                    let _ = out.event(&event);
                }
            }
            Packet::PubRel(codec::Ack { pkid, .. }) => {
                self.conn.store.remove_inbound_qos2(pkid);
                if self.requests.request(pkid).is_some_and(<[u8]>::is_empty) {
                    // A publish the engine dropped: the upstream never saw it (section 4.3.3).
                    self.requests.remove(pkid);
                    tx.put(&Packet::PubComp(codec::Ack::new(pkid)));
                } else {
                    self.forward_owing(bytes, out);
                }
            }
            Packet::PubComp(_) => out.forward(bytes),
            Packet::PingReq => self.forward_owing(bytes, out),
            Packet::Subscribe(subscribe) => self.client_subscribe(now, subscribe, bytes, tx, out),
            Packet::Unsubscribe(unsubscribe) => {
                self.client_unsubscribe(now, unsubscribe, bytes, tx, out);
            }
            Packet::Disconnect(disconnect) => {
                // 5.0 section 3.14.2.2.2: from 0 to more is a protocol error; the upstream
                // would close for it too, so it is not forwarded.
                if !self.conn.disconnect_expiry(&disconnect.properties) {
                    self.fail(now, CloseCause::ProtocolError, tx, out);
                    return;
                }
                // Forwarded as sent: with reason 0x04 the upstream publishes the will.
                out.forward(bytes);
                self.requests.clear();
                let cause = CloseCause::of_client_disconnect(disconnect.reason);
                self.conn.close(now, cause, tx, out);
            }
            // A second CONNECT (section 3.1.0) or a packet only a server sends.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                debug!("relay: packet not allowed from a client");
                self.fail(now, CloseCause::ProtocolError, tx, out);
            }
        }
    }

    /// PUBLISH (section 3.3): the system-topic and `$` rules, the QoS 2 limit, then forwarded
    /// with its `message` event, or dropped and answered here.
    fn client_publish(
        &mut self,
        now: u64,
        publish: Publish<'_>,
        bytes: &[u8],
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) {
        let pkid = publish.pkid.unwrap_or(0);
        // The upstream checks the client's topic aliases against the maximum of its CONNACK;
        // the engine keeps up to its own maximum to know the topic (for the rules and the
        // `message` event), and closes a client that goes past it.
        let maximum = alias::inbound_maximum(&self.conn.limits, &self.conn.store);
        if let Err(cause) = alias::learn(&mut self.conn.store, maximum, &publish) {
            debug!("relay: a topic alias the engine cannot follow, closing");
            self.fail(now, cause, tx, out);
            return;
        }
        let (server_topic, acl_allows, allowed) = {
            let topic = alias::topic_of(&self.conn.store, &publish);
            let topics = &self.conn.tracker.config().topics;
            let server_topic = is_server_topic(topic) && !topics.is_system_topic(topic);
            let system_allows = !server_topic && topics.may_publish(self.conn.client_id(), topic);
            // The topic access rules come after the system-topic rules (see `access`).
            let acl_allows = !system_allows
                || out.is_allowed(Access {
                    action: Action::Publish,
                    client_id: self.conn.client_id(),
                    topic,
                });
            (server_topic, acl_allows, system_allows && acl_allows)
        };
        // A resent QoS 2 PUBLISH before its PUBREL: the same answer, no second `message`.
        let resent = publish.qos == QoS::ExactlyOnce && self.conn.store.has_inbound_qos2(pkid);
        if publish.qos == QoS::ExactlyOnce && !resent {
            let full = self.conn.store.inbound_qos2_count() >= self.conn.limits.max_inbound_qos2
                || self.conn.store.insert_inbound_qos2(pkid).is_err()
                || (!allowed && self.requests.keep(pkid, &[]).is_err());
            if full {
                warn!("relay: too many QoS 2 publishes awaiting PUBREL");
                self.fail(now, CloseCause::QuotaExceeded, tx, out);
                return;
            }
        }
        if !allowed {
            let topic = alias::topic_of(&self.conn.store, &publish);
            let tracker = &mut self.conn.tracker;
            if !resent && !acl_allows {
                let not_allowed = Counter::PublishNotAllowed;
                access::refused(tracker, now, Action::Publish, topic, not_allowed, out);
            } else if !resent {
                debug!("relay: publish on a system or $ topic dropped");
                if !server_topic {
                    // The tracker keeps its own count of denied publishes.
                    let _ = tracker.handle_publish(now, info_of(topic, &publish));
                }
                let denied = Counter::PublishDenied;
                access::refused(tracker, now, Action::Publish, topic, denied, out);
            }
            match publish.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    tx.put(&Packet::PubAck(crate::codec::Ack::new(pkid)));
                }
                QoS::ExactlyOnce => {
                    tx.put(&Packet::PubRec(crate::codec::Ack::new(pkid)));
                }
            }
            return;
        }
        if publish.qos == QoS::AtMostOnce {
            out.forward(bytes);
        } else {
            self.forward_owing(bytes, out);
        }
        if resent {
            return;
        }
        let topic = alias::topic_of(&self.conn.store, &publish);
        let routed = RoutedPublish {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            publisher: self.conn.client_id(),
            is_will: false,
            properties: publish.properties,
            // The upstream applies No Local.
            for_no_local: false,
        };
        let _ = out.route(Route::Publish(routed));
        match self
            .conn
            .tracker
            .handle_publish(now, info_of(topic, &publish))
        {
            PublishOutcome::Accepted(Some(event)) => {
                let _ = out.event(&event);
            }
            // `allowed` asked the tracker's own rule.
            PublishOutcome::Accepted(None) | PublishOutcome::Denied => {}
        }
    }

    /// SUBSCRIBE (section 3.8): answered here with SUBACK 0x80 for every filter when the
    /// access rule or the subscription limit refuses one of them, forwarded otherwise.
    fn client_subscribe(
        &mut self,
        now: u64,
        subscribe: Subscribe<'_>,
        bytes: &[u8],
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) {
        let count = subscribe.filters.len();
        if count > self.conn.limits.max_filters_per_packet {
            warn!("relay: too many filters in one SUBSCRIBE");
            self.fail(now, CloseCause::QuotaExceeded, tx, out);
            return;
        }
        let store = &self.conn.store;
        let new = subscribe
            .filters
            .iter()
            .filter(|(filter, _)| store.subscription(filter).is_none())
            .count();
        let over_limit =
            store.subscription_count().saturating_add(new) > self.conn.limits.max_subscriptions;
        // Each filter the rules refuse is counted and reported, as in every mode.
        let (mut denied, mut not_allowed) = (0, 0);
        for (filter, _) in subscribe.filters.iter() {
            if self.conn.is_denied_filter(filter) {
                denied += 1;
                let tracker = &mut self.conn.tracker;
                let counter = Counter::SubscriptionDenied;
                access::refused(tracker, now, Action::Subscribe, filter, counter, out);
            } else if !self.conn.is_allowed_filter(now, filter, out) {
                not_allowed += 1;
            }
        }
        if denied > 0 || not_allowed > 0 || over_limit {
            debug!("relay: SUBSCRIBE refused whole");
            for _ in denied + not_allowed..count {
                out.count(Counter::SubscriptionRefused);
            }
            let Some(start) = tx.codes_frame(0x90, subscribe.pkid, count) else {
                // answer_room() was checked before decoding.
                self.fail(now, CloseCause::ProtocolError, tx, out);
                return;
            };
            // MQTT 5: 0x87 (not authorized) for the filters the rules refuse, 0x80 for the rest.
            let refused = if self.conn.version.is_v5() {
                SubAckCode::Refused(ReasonCode::NotAuthorized.as_u8())
            } else {
                SubAckCode::Failure
            };
            for (at, (filter, _)) in (start..).zip(subscribe.filters.iter()) {
                let code = if self.conn.is_denied_filter(filter)
                    || !out.is_allowed(Access {
                        action: Action::Subscribe,
                        client_id: self.conn.client_id(),
                        topic: filter,
                    }) {
                    refused
                } else {
                    SubAckCode::Failure
                };
                tx.set(at, code.as_u8());
            }
            return;
        }
        self.forward_request(now, subscribe.pkid, bytes, tx, out);
    }

    /// UNSUBSCRIBE (section 3.10): forwarded; its events come with the upstream's UNSUBACK.
    fn client_unsubscribe(
        &mut self,
        now: u64,
        unsubscribe: Unsubscribe<'_>,
        bytes: &[u8],
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) {
        if unsubscribe.filters.len() > self.conn.limits.max_filters_per_packet {
            warn!("relay: too many filters in one UNSUBSCRIBE");
            self.fail(now, CloseCause::QuotaExceeded, tx, out);
            return;
        }
        self.forward_request(now, unsubscribe.pkid, bytes, tx, out);
    }

    /// Keeps a SUBSCRIBE or UNSUBSCRIBE until the upstream answers it, and forwards it; closes
    /// when the store is full.
    fn forward_request(
        &mut self,
        now: u64,
        pkid: u16,
        bytes: &[u8],
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) {
        if self.requests.keep(pkid, bytes).is_err() {
            warn!("relay: too many requests awaiting the upstream's answer");
            self.fail(now, CloseCause::QuotaExceeded, tx, out);
            return;
        }
        self.forward_owing(bytes, out);
    }

    /// Forwards a request the upstream will answer.
    fn forward_owing(&mut self, bytes: &[u8], out: &mut impl RelayOutput) {
        out.forward(bytes);
        self.owed = self.owed.saturating_add(1);
    }

    /// One packet of the upstream's; false when it is not forwarded (the connection closed).
    fn upstream_packet<F>(
        &mut self,
        now: u64,
        packet: Packet<'_>,
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
        lookup: &mut F,
    ) -> bool
    where
        F: FnMut(&Envelope) -> Option<heapless::String<CLIENT_ID_CAPACITY>>,
    {
        if self.awaiting_upstream {
            return match packet {
                Packet::ConnAck(connack) => {
                    let accepted = self.upstream_connack(now, connack.code, tx, out);
                    // MQTT 5: the upstream's Server Keep Alive and granted session expiry hold
                    // for the client (5.0 sections 3.2.2.3.2, 3.2.2.3.14).
                    if let Some(seconds) = connack.properties.server_keep_alive() {
                        self.conn.keep_alive = seconds;
                    }
                    if let Some(seconds) = connack.properties.session_expiry_interval() {
                        self.conn.session_expiry = seconds;
                    }
                    accepted
                }
                _ => {
                    warn!("relay: the upstream's answer to CONNECT is not a CONNACK");
                    self.unavailable(now, tx, out);
                    false
                }
            };
        }
        if matches!(
            packet,
            Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubComp(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp
        ) {
            self.owed = self.owed.saturating_sub(1);
        }
        match packet {
            Packet::Publish(publish) => {
                // The upstream's own topic aliases on its deliveries (it got the client's
                // Topic Alias Maximum with the CONNECT): followed up to the engine's own
                // maximum, for the topic of `msgack`.
                if let Some(alias) = publish.properties.topic_alias()
                    && !publish.topic.is_empty()
                    && alias <= alias::inbound_maximum(&self.conn.limits, &self.conn.store)
                {
                    let _ =
                        self.conn
                            .store
                            .set_alias(AliasDirection::ToClient, alias, publish.topic);
                }
                if let Some(pkid) = publish.pkid
                    && self.conn.tracks_msgack
                    && self.conn.state == State::Connected
                {
                    let info = DeliveryInfo {
                        pkid,
                        qos: publish.qos,
                        topic: alias::topic_in(
                            &self.conn.store,
                            AliasDirection::ToClient,
                            &publish,
                        ),
                        payload: publish.payload,
                        pub_client_id: None,
                        properties: publish.properties,
                    };
                    self.conn.tracker.handle_delivery(info, &mut *lookup);
                }
            }
            Packet::SubAck(suback) => {
                if let Some(Ok(Some((Packet::Subscribe(subscribe), _)))) = self
                    .requests
                    .request(suback.pkid)
                    .map(|bytes| codec::decode_with(bytes, usize::MAX, self.conn.version))
                {
                    let v5 = self.conn.version.is_v5();
                    for ((filter, options), code) in
                        subscribe.filters.iter_options().zip(suback.codes.iter())
                    {
                        let SubAckCode::Success(qos) = code else {
                            continue;
                        };
                        // A full store only costs the `unsubscribed` event of this filter.
                        let _ = self.conn.store.insert_subscription(filter, qos);
                        if let Some(event) = self.conn.tracker.handle_subscribe(
                            now,
                            filter,
                            Some(qos),
                            v5.then_some(options),
                        ) {
                            let _ = out.event(&event);
                        }
                    }
                    self.requests.remove(suback.pkid);
                }
            }
            Packet::UnsubAck(codec::UnsubAck { pkid, .. }) => {
                if let Some(Ok(Some((Packet::Unsubscribe(unsubscribe), _)))) = self
                    .requests
                    .request(pkid)
                    .map(|bytes| codec::decode_with(bytes, usize::MAX, self.conn.version))
                {
                    for filter in unsubscribe.filters.iter() {
                        if self.conn.store.remove_subscription(filter)
                            && let Some(event) = self.conn.tracker.handle_unsubscribe(now, filter)
                        {
                            let _ = out.event(&event);
                        }
                    }
                    self.requests.remove(pkid);
                }
            }
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::PingResp => {}
            // A second CONNACK, or a packet only a client sends: the upstream is broken.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect(_)
            | Packet::Auth(_) => {
                warn!("relay: packet not allowed from the upstream, closing");
                self.upstream_failed(now, CloseCause::RouterClosed, tx, out);
                return false;
            }
        }
        true
    }

    /// The upstream's CONNACK: the connection is accepted (forwarded, `connected`) or refused
    /// (forwarded, counted, closed). True: forward it.
    fn upstream_connack(
        &mut self,
        now: u64,
        code: u8,
        tx: &mut Tx<'_>,
        out: &mut impl RelayOutput,
    ) -> bool {
        self.awaiting_upstream = false;
        let kept = self
            .requests
            .request(CONNECT_KEY)
            .map(|bytes| codec::decode_with(bytes, usize::MAX, self.conn.version));
        let Some(Ok(Some((Packet::Connect(connect), _)))) = kept else {
            // The CONNECT was kept when it was forwarded.
            self.unavailable(now, tx, out);
            return false;
        };
        if code != ConnectReturnCode::Accepted.as_u8() {
            debug!("relay: the upstream refused the CONNECT");
            let reason = if self.conn.version.is_v5() {
                ReasonCode::from_u8(code).unwrap_or(ReasonCode::UnspecifiedError)
            } else {
                reason_of(code)
            };
            out.count(Counter::ConnectRefused(reason));
            // The upstream's refusal, passed on as it is: reported like the tap's own.
            self.conn
                .report_refused(now, code, reason.name(), Some(&connect), out);
            self.conn.state = State::Closed;
            self.conn.store.clear();
            self.requests.clear();
            return true;
        }
        let mut id_buf = heapless::String::<CLIENT_ID_CAPACITY>::new();
        out.upstream_accepted(self.conn.effective_client_id(&connect, &mut id_buf));
        let admitted = self.conn.admit(now, &connect, tx, out);
        self.requests.remove(CONNECT_KEY);
        admitted
    }

    /// The upstream did not answer the CONNECT with a CONNACK: CONNACK 3, closed.
    fn unavailable(&mut self, now: u64, tx: &mut Tx<'_>, out: &mut impl Output) {
        self.awaiting_upstream = false;
        let kept = self
            .requests
            .request(CONNECT_KEY)
            .map(|bytes| codec::decode_with(bytes, usize::MAX, self.conn.version));
        let connect = match kept {
            Some(Ok(Some((Packet::Connect(connect), _)))) => Some(connect),
            _ => None,
        };
        let unavailable = ReasonCode::ServerUnavailable;
        self.conn
            .refuse(now, unavailable, connect.as_ref(), tx, out);
        self.requests.clear();
    }

    /// The upstream broke the protocol: the connection ends with `cause`.
    fn upstream_failed(
        &mut self,
        now: u64,
        cause: CloseCause,
        tx: &mut Tx<'_>,
        out: &mut impl Output,
    ) {
        if self.awaiting_upstream {
            self.unavailable(now, tx, out);
            return;
        }
        self.requests.clear();
        self.conn.close(now, cause, tx, out);
    }

    /// Ends the session for a fault of the client's (see [`Connection::handle_input`]). What
    /// the upstream was sent before the fault is still answered, as the engine answers what
    /// came before a fault in every mode: the connection drains until the upstream owes the
    /// client nothing (or the answer timeout passes), then closes.
    fn fail(&mut self, now: u64, cause: CloseCause, tx: &mut Tx<'_>, out: &mut impl Output) {
        self.requests.clear();
        let connected = self.conn.is_connected();
        self.conn.fail(now, cause, tx, out);
        if connected && self.owed > 0 {
            self.conn.state = State::Draining;
            self.conn.since = now;
        }
    }
}

/// The tracker's view of a client's publish about `topic` (its own, or its alias's).
fn info_of<'a>(topic: &'a str, publish: &Publish<'a>) -> PublishInfo<'a> {
    PublishInfo {
        topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
    }
}

/// The reason code of an MQTT 3.1.1 refusing CONNACK (section 3.2.2.3).
fn reason_of(code: u8) -> ReasonCode {
    let Some(code) = ConnectReturnCode::from_u8(code) else {
        return ReasonCode::UnspecifiedError;
    };
    match code {
        ConnectReturnCode::Accepted => ReasonCode::Success,
        ConnectReturnCode::UnacceptableProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
        ConnectReturnCode::IdentifierRejected => ReasonCode::ClientIdentifierNotValid,
        ConnectReturnCode::BadUserNameOrPassword => ReasonCode::BadUserNameOrPassword,
        ConnectReturnCode::NotAuthorized => ReasonCode::NotAuthorized,
        ConnectReturnCode::ServerUnavailable => ReasonCode::ServerUnavailable,
    }
}
