//! One client connection of the broker: the engine's driver between the socket and the router
//! link (see the [module docs](super)).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::QoS;
use activity_core::codec::{Properties, RetainHandling, SubscriptionOptions};
use activity_core::event::{DropReason, Event, EventKind, Transport};
use activity_core::server::{
    Access, Ack, CloseCause, ConnectAnswer, Connection, Counter, DeliveredFor, Delivery,
    DeliveryError, Output, Peer, ReasonCode, Route, Routed, RoutedPublish,
};
use activity_core::tracker::DropInfo;
use bytes::{Buf, BytesMut};
use flume::RecvTimeoutError;
use rumqttd::Notification;
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, Protocol, PubAck, PubAckReason, PubComp,
    PubCompReason, PubRec, PubRecReason, Publish, PublishProperties, RetainForwardRule, Subscribe,
    SubscribeProperties, Unsubscribe, v4::V4,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};
use tracing::{debug, info, warn};

use super::properties;
use super::router_names::RouterName;
use super::skips::LogPositions;
use super::{
    ACK_STORE_CAPACITY, IDLE_RELEASE, Kick, PUBLISHER_PROPERTY, Phase, Shared, WRITE_STALL_LIMIT,
    now_ms, router_client_id, rumqttd_qos,
};
use crate::ack_store::HeapAckStore;
use crate::admission::{self, Admission};
use crate::events::EventRecord;
use crate::presence::Online;
use crate::qos_marker::{marker_of, read_marker, read_retain};
use crate::sequencer::{AckSequencer, RouterAck};
use crate::session_store::HeapSessionStore;

/// The engine of one broker connection.
type Engine = Connection<HeapAckStore, HeapSessionStore>;

/// The room in the transmit buffer offered to the engine for the answers to one read.
const TX_CHUNK: usize = 4096;

/// Past this size the transmit buffer gives memory back once it is sent.
const TX_KEEP: usize = 64 * 1024;

/// A delivery's bytes besides its topic, payload and properties: fixed header (at most 5),
/// topic length (2), packet id (2), the property block's length (MQTT 5, at most 4).
const DELIVERY_OVERHEAD: usize = 13;

/// Below this much free space the read buffer grows before the next read.
const READ_MIN_SPARE: usize = 1024;

/// How much the read buffer grows by.
const READ_GROW: usize = 32 * 1024;

/// The read buffer a connection starts with: a CONNECT, a PINGREQ, a SUBSCRIBE of an idle
/// device fit; it grows by [`READ_GROW`] once a read fills it or a packet does not fit.
const READ_FIRST: usize = 256;

/// The bytes an idle connection reads in its wait, without a read buffer ([`Session::idle`]):
/// a PINGREQ or a small packet fits; the rest of a larger one is read right after, into the
/// read buffer.
const IDLE_READ: usize = 32;

/// Most router notifications handled before the socket gets what they produced.
const NOTIFICATION_BUDGET: usize = 1024;

/// Serves one client connection until it ends.
pub(super) async fn serve<S>(
    mut stream: S,
    peer: SocketAddr,
    transport: Transport,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(shared, peer, transport, serial);
    // The CONNECT phase (admission, takeover, the router link) and the end (a kept session's
    // wait) are boxed, each allocated for its phase only: the task that stays for the
    // connection's life has room for the loop's state alone (docs/scale.md, "Memory per idle
    // connection").
    if let Some(mut link) = Box::pin(session.connect(&mut stream)).await {
        let exit = session.run(&mut stream, &mut link).await;
        let kick = Box::pin(session.end(&mut stream, link, exit)).await;
        let _ = stream.shutdown().await;
        Box::pin(session.linger(kick)).await;
        return;
    }
    let _ = stream.shutdown().await;
}

/// The bytes for the client: the engine writes into the spare room, the socket takes what is
/// written. Grows only when the engine needs more room than is spare (zeroed once), so that a
/// busy connection reuses it. It starts at the size of the first answers (the CONNACK), so
/// that a connection that stays idle after its CONNECT holds no more; past that it grows in
/// steps of [`TX_CHUNK`].
#[derive(Default)]
struct TxBuf {
    buf: Vec<u8>,
    len: usize,
}

impl TxBuf {
    /// At least `min` free bytes after what is written.
    fn spare(&mut self, min: usize) -> &mut [u8] {
        let needed = self.len.saturating_add(min);
        if self.buf.len() < needed {
            let size = if self.buf.is_empty() {
                needed
            } else {
                needed.max(TX_CHUNK)
            };
            self.buf.resize(size, 0);
        }
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// `n` bytes of the spare room were written.
    fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    fn written(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The bytes it holds.
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Everything written was sent.
    fn clear(&mut self) {
        self.len = 0;
        if self.buf.len() > TX_KEEP {
            self.buf.truncate(TX_KEEP);
            self.buf.shrink_to(TX_KEEP);
        }
    }
}

/// The router link of an accepted connection, and how an older connection's takeover reaches
/// it.
struct Link {
    tx: LinkTx,
    rx: LinkRx,
    kick: Takeover,
}

/// Where the takeover of a connection arrives: at most one, since the registry hands the
/// sender to the one connection that replaces this one (a oneshot channel, about a tenth of the
/// memory of a bounded channel's first block; docs/scale.md, "Memory per idle connection").
/// `None` once it arrived or its sender is gone.
type Takeover = Option<oneshot::Receiver<Kick>>;

/// The takeover of `kick`, once it arrives; `None` when its sender is gone (the connection's
/// registry entry was removed or handed on) or it already arrived, as a closed channel.
async fn kicked(kick: &mut Takeover) -> Option<Kick> {
    let receiver = kick.as_mut()?;
    let request = receiver.await.ok();
    *kick = None;
    request
}

/// What woke a connection's step: the branches of its wait.
// A notification is 248 bytes: a `Wake` is handled at once and never kept across a wait, and
// boxing the notification would cost an allocation per router wake-up.
#[allow(clippy::large_enum_variant)]
enum Wake {
    /// A read from the client (its byte count; 0 when the client closed).
    Read(std::io::Result<usize>),
    /// A notification from the router, or the link's end.
    Router(Result<Option<Notification>, LinkError>),
    /// The timer: the engine's deadline or [`IDLE_RELEASE`].
    Timer,
    /// A takeover by a newer connection of the client id (`None`: its sender is gone).
    Kicked(Option<Kick>),
    /// The broker shuts down.
    Stopping,
}

/// How a batch of router notifications ended ([`Session::handle_notifications`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Handled, or stopped at a delivery that waits for the client's Receive Maximum.
    Done,
    /// The router paused the connection (`Notification::Unschedule`): it needs a wake-up.
    Paused,
}

/// How [`Session::steps`] ended.
enum Steps {
    /// The connection idled: its buffers were given back, and it waits in [`Session::idle`].
    Idle,
    /// The connection is over (why, when it was not the engine that ended it).
    End(Option<CloseCause>),
}

/// What the engine asked about a CONNECT, for [`Session::admit`].
struct ConnectQuestion {
    username: Option<String>,
    password: Option<Vec<u8>>,
}

/// The engine's [`Output`]: routes become router packets (sent after the engine call, in
/// order), events are encoded (and queued after the router packets, so that a subscription is
/// in the router before the event of it is published), counters go to the metrics.
struct Side {
    shared: Arc<Shared>,
    serial: u64,
    /// The client id, once the engine asked about the CONNECT.
    client_id: String,
    /// The user name of the CONNECT, for the topic access rules.
    username: Option<String>,
    /// The client's address.
    peer: SocketAddr,
    /// The connection's entry in the HTTP API's list of who is online (when the API is on),
    /// from its CONNECT; entered once the connection is accepted.
    online: Option<Arc<Online>>,
    clean_start: bool,
    /// Whether the router's link was built persistent (`clean_session = false`): it resumes a
    /// kept session and keeps this one at the end. Only a clean start without session expiry
    /// gets a clean link (see [`ConnectRequest`](activity_core::server::ConnectRequest)); a
    /// persistent session that must end with its connection is discarded afterwards.
    router_keeps: bool,
    /// Whether a kept session of the client id is discarded first although the new one is kept
    /// (clean start with a session expiry: rumqttd's link cannot say both).
    discard_first: bool,
    /// The session expiry [`Route::End`] gave.
    end_expiry: Option<u32>,
    /// The engine ended a kept session ([`Route::SessionExpired`]): the router discards it.
    expired: bool,
    /// Boxed: asked once, at the CONNECT.
    question: Option<Box<ConnectQuestion>>,
    /// Packets for the router.
    batch: Vec<Packet>,
    /// Events, queued after `batch` is sent.
    events: Vec<EventRecord>,
    sequencer: AckSequencer,
    router_acks: Vec<RouterAck>,
    /// The connection-limit permit; released when the session ends, before its `disconnected`
    /// event is queued, so that a client reconnecting as soon as it sees the event finds its
    /// slot free.
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the connection counts in `Shared::unreported` (until its session ends).
    unreported: bool,
    /// Whether `msgack` events would reach a sink now (see [`Side::refresh`]).
    tracks_msgack: bool,
    /// Packet ids of the SUBSCRIBEs and UNSUBSCRIBEs sent to the router (it answers them; the
    /// engine has answered the client).
    router_pkid: u16,
    /// The client's filters in the router, made at the first subscription (boxed: most
    /// devices hold one or two filters or none, and every connection's task would carry
    /// about 170 bytes for them; docs/scale.md, "Memory per idle connection").
    filters: Option<Box<RouterFilters>>,
    /// The pooled router name of a clean link, until the link is gone.
    router_name: Option<RouterName>,
    /// The packet id of the last router SUBSCRIBE of a resumed session's subscriptions (see
    /// [`Connection::handle_session_resumed`]), until its SUBACK: rumqttd forgot the
    /// session's router identifiers with its last connection, so until then a delivery
    /// without one (a queued message) is for every matching subscription, not a plain one.
    unnamed_until: Option<u16>,
    /// Whether the client speaks MQTT 5 (only its filters get router identifiers: the
    /// router then allocates properties for every delivery it carries).
    v5: bool,
}

/// The client's filters in the router.
#[derive(Default)]
struct RouterFilters {
    /// The filters by the subscription identifier the front gave each in the router:
    /// rumqttd delivers once per matching filter and puts that identifier on the delivery,
    /// which tells the engine which subscription it is for. Bounded by the engine's
    /// subscription limit (an entry per filter held).
    by_id: HashMap<usize, String>,
    /// The router identifier of each filter held.
    ids: HashMap<String, usize>,
    /// The last router identifier given.
    next_id: usize,
    /// The last router log offset delivered per filter: messages the router skipped are
    /// counted and logged ([`super::skips`]).
    positions: LogPositions,
}

impl Side {
    /// The client's filters in the router, made at the first use.
    fn filters(&mut self) -> &mut RouterFilters {
        self.filters.get_or_insert_with(Box::default)
    }
}

impl Output for Side {
    fn route(&mut self, route: Route<'_>) -> Routed {
        match route {
            Route::Connect(request) => {
                self.client_id = request.client_id.to_owned();
                self.username = request.username.map(str::to_owned);
                if self.shared.presence.is_some() {
                    self.online = Some(Arc::new(Online::new(
                        request.client_id,
                        request.username,
                        self.peer.to_string(),
                        request.protocol_level,
                        self.serial,
                        now_ms(),
                    )));
                }
                self.clean_start = request.clean_start;
                self.v5 = request.protocol_level == 5;
                self.router_keeps = !request.discards_session() || request.keeps_session();
                self.discard_first = request.discards_session() && request.keeps_session();
                self.question = Some(Box::new(ConnectQuestion {
                    username: request.username.map(str::to_owned),
                    password: request.password.map(<[u8]>::to_vec),
                }));
            }
            Route::Publish(publish) => {
                let packet = self.router_publish(&publish);
                self.batch.push(packet);
            }
            Route::Subscribe {
                filter,
                options,
                plain,
                ..
            } => {
                if let Some(budget) = &self.shared.log_budget
                    && !budget.admit(filter, &self.client_id, &self.shared.metrics)
                {
                    return Routed::Full;
                }
                self.shared
                    .interest
                    .subscribe(&self.client_id, self.serial, filter);
                if let Some(online) = &self.online {
                    online.subscribe(filter, options.qos as u8);
                }
                self.filters().positions.subscribe(filter);
                self.router_subscribe(filter, options, plain);
            }
            Route::Unsubscribe { filter } => {
                self.shared.interest.unsubscribe(&self.client_id, filter);
                if let Some(online) = &self.online {
                    online.unsubscribe(filter);
                }
                if let Some(filters) = &mut self.filters {
                    filters.positions.unsubscribe(filter);
                    if let Some(id) = filters.ids.remove(filter) {
                        filters.by_id.remove(&id);
                    }
                }
                self.router_unsubscribe(filter);
            }
            Route::Acked { pkid, ack } => {
                let known = match ack {
                    Ack::PubAck => {
                        self.sequencer
                            .on_client_ack(pkid, QoS::AtLeastOnce, &mut self.router_acks)
                    }
                    Ack::PubRec => {
                        self.sequencer
                            .on_client_ack(pkid, QoS::ExactlyOnce, &mut self.router_acks)
                    }
                    Ack::PubComp => self
                        .sequencer
                        .on_client_pubcomp(pkid, &mut self.router_acks),
                };
                if known.is_err() {
                    self.shared
                        .metrics
                        .acks_unmatched
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Route::SessionExpired => self.expired = true,
            Route::End {
                cause,
                session_expiry,
            } => {
                self.end_expiry = Some(session_expiry);
                self.permit.take();
                if let Some(presence) = &self.shared.presence {
                    presence.remove(&self.client_id, self.serial);
                }
                if std::mem::take(&mut self.unreported) {
                    // Matched in `Session::connect`; shutdown waits for the count to reach zero.
                    self.shared.unreported.fetch_sub(1, Ordering::AcqRel);
                }
                info!(client_id = %self.client_id, reason = cause.reason().as_str(), "client disconnected");
            }
            _ => return Routed::Refused,
        }
        Routed::Accepted
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        if let (Event::Connected(connected), Some(online)) = (event, &self.online) {
            online.set_connected_at(connected.ts);
        }
        if let Some(record) = self.shared.events.record(event) {
            self.events.push(record);
        }
        None
    }

    fn session_seq(&mut self, now: u64) -> u64 {
        let seq = self.shared.events.session_seq(now);
        if let Some(online) = &self.online {
            online.set_session_seq(seq);
        }
        seq
    }

    fn count(&mut self, counter: Counter) {
        self.shared.metrics.count(counter);
    }

    fn is_system_subscriber(&self, client_id: &str, username: Option<&str>) -> bool {
        self.shared
            .config
            .access
            .is_system_subscriber(username, client_id)
    }

    fn is_allowed(&self, access: Access<'_>) -> bool {
        self.shared.acl.is_allowed(
            access.action,
            access.client_id,
            self.username.as_deref(),
            access.topic,
        )
    }
}

impl Side {
    /// Whether `msgack` events are on and would reach a sink now (with the router as the only
    /// sink: some subscription receives them, see [`crate::interest`]). When not, deliveries
    /// are not remembered (the engine would parse every envelope, only to report nothing) and
    /// publishes carry no publisher.
    fn refresh(&mut self, conn: &mut Engine) {
        let enabled = self
            .shared
            .server
            .tracker
            .enabled
            .contains(EventKind::MsgAck);
        self.tracks_msgack = enabled && self.shared.events.wants(EventKind::MsgAck);
        conn.set_msgack_tracking(self.tracks_msgack);
    }

    /// A client publish (or its will) for the router: at QoS 0 with its real QoS as a marker
    /// and, when `msgack` is tracked and a QoS 1 or 2 payload may be an envelope (see
    /// [`may_be_envelope`]), or for No Local, its publisher, since the router does not say
    /// who published a delivery. Topic and payload are copied once, into one buffer.
    fn router_publish(&self, publish: &RoutedPublish<'_>) -> Packet {
        let mut properties =
            properties::to_router(publish.qos, publish.retain, &publish.properties, now_ms());
        // A QoS 0 publish is delivered at QoS 0, which gets no acknowledgement and no `msgack`;
        // No Local needs the publisher when the publisher itself holds a matching No Local
        // subscription (the engine says so).
        if (publish.qos != QoS::AtMostOnce
            && self.tracks_msgack
            && (may_be_envelope(publish.payload) || carries_ids(&publish.properties)))
            || publish.for_no_local
        {
            // A plain publish has no marker with it either way (`qos_marker::PLAIN`).
            properties
                .get_or_insert_with(PublishProperties::default)
                .user_properties
                .push((PUBLISHER_PROPERTY.to_owned(), publish.publisher.to_owned()));
        }
        let mut bytes = BytesMut::with_capacity(publish.topic.len() + publish.payload.len());
        bytes.extend_from_slice(publish.topic.as_bytes());
        bytes.extend_from_slice(publish.payload);
        let mut topic = bytes.freeze();
        let payload = topic.split_off(publish.topic.len());
        Packet::Publish(Publish::new(topic, payload, publish.retain), properties)
    }

    fn next_router_pkid(&mut self) -> u16 {
        self.router_pkid = self.router_pkid.checked_add(1).unwrap_or(1);
        self.router_pkid
    }

    /// A SUBSCRIBE of `filter` for the router, with the router identifier of the filter for an
    /// MQTT 5 client's subscription that is not `plain` (one filter per SUBSCRIBE: the
    /// identifier is the packet's). rumqttd allocates a property list for every delivery on a
    /// filter with an identifier, so a plain one gets none (its deliveries are
    /// [`DeliveredFor::Plain`]); a filter keeps the identifier it once got (rumqttd keeps it).
    ///
    /// The MQTT 5 options go to the router as they are; rumqttd 0.20 parses them but does not
    /// apply No Local, Retain As Published or Retain Handling: the engine does, at the
    /// delivery (docs/mqtt5.md).
    fn router_subscribe(&mut self, filter: &str, options: SubscriptionOptions, plain: bool) {
        let v5 = self.v5;
        let filters = self.filters();
        let id = match filters.ids.get(filter) {
            _ if !v5 => None,
            Some(id) => Some(*id),
            None if plain => None,
            None => {
                filters.next_id += 1;
                filters.ids.insert(filter.to_owned(), filters.next_id);
                filters.by_id.insert(filters.next_id, filter.to_owned());
                Some(filters.next_id)
            }
        };
        let filter = Filter {
            path: filter.to_owned(),
            qos: rumqttd_qos(options.qos),
            nolocal: options.no_local,
            preserve_retain: options.retain_as_published,
            retain_forward_rule: match options.retain_handling {
                RetainHandling::OnSubscribe => RetainForwardRule::OnEverySubscribe,
                RetainHandling::OnNewSubscribe => RetainForwardRule::OnNewSubscribe,
                RetainHandling::Never => RetainForwardRule::Never,
            },
        };
        let pkid = self.next_router_pkid();
        self.batch.push(Packet::Subscribe(
            Subscribe {
                pkid,
                filters: vec![filter],
            },
            id.map(|id| SubscribeProperties {
                id: Some(id),
                user_properties: Vec::new(),
            }),
        ));
    }

    /// Adds `filter` to the UNSUBSCRIBE at the end of the batch, or starts one.
    fn router_unsubscribe(&mut self, filter: &str) {
        if let Some(Packet::Unsubscribe(unsubscribe, _)) = self.batch.last_mut() {
            unsubscribe.filters.push(filter.to_owned());
            return;
        }
        let pkid = self.next_router_pkid();
        self.batch.push(Packet::Unsubscribe(
            Unsubscribe {
                pkid,
                filters: vec![filter.to_owned()],
            },
            None,
        ));
    }

    /// Sends the router what the engine asked for (and the acks the sequencer released), then
    /// queues the events.
    ///
    /// Not `async`: rumqttd 0.20's `LinkTx::send` never waits (it does a blocking send on the
    /// router's queue, FACTS.md), so its future, which holds a 392-byte `Packet`, is polled
    /// once here on the stack instead of taking room in every connection's task.
    fn send(&mut self, link: &mut LinkTx) -> Result<(), CloseCause> {
        for ack in self.router_acks.drain(..) {
            self.batch.push(match ack {
                RouterAck::PubAck(pkid) => Packet::PubAck(
                    PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                ),
                RouterAck::PubRec(pkid) => Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: PubRecReason::Success,
                    },
                    None,
                ),
                RouterAck::PubComp(pkid) => Packet::PubComp(
                    PubComp {
                        pkid,
                        reason: PubCompReason::Success,
                    },
                    None,
                ),
            });
        }
        let sent = match self.batch.pop() {
            Some(last) => {
                link.buffer().extend(self.batch.drain(..));
                match futures_util::FutureExt::now_or_never(link.send(last)) {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => {
                        warn!(client_id = %self.client_id, error = %e, "router link failed");
                        Err(CloseCause::RouterClosed)
                    }
                    // A rumqttd whose send could wait: the packet did not go (not 0.20).
                    None => {
                        warn!(client_id = %self.client_id, "router link would wait");
                        Err(CloseCause::RouterClosed)
                    }
                }
            }
            None => Ok(()),
        };
        self.send_events();
        sent
    }

    /// Queues the events the engine gave (after what the router had to see first).
    fn send_events(&mut self) {
        for record in self.events.drain(..) {
            self.shared.events.send(record);
        }
    }
}

/// One connection: the engine, its outputs, the socket buffers.
struct Session {
    conn: Engine,
    side: Side,
    rbuf: BytesMut,
    tx: TxBuf,
    /// The takeover that ended this connection, answered once its events are queued.
    kick: Option<Kick>,
    /// Whether a kept session counts in `Metrics::sessions_kept`.
    kept_slot: bool,
    /// The subscriptions of a kept session that the connection taking over resumes, sent
    /// with the answer to its [`Kick`]. Boxed, made at a takeover: a store is about 300 bytes
    /// that every connection's task would carry.
    resumed: Option<Box<HeapSessionStore>>,
    /// Where the property block of a delivery to an MQTT 5 client is written.
    properties_buf: Vec<u8>,
    /// Where a delivery's flags are read from ([`router_flags`]).
    flags_buf: BytesMut,
    /// Deliveries written since `Metrics::packets_out` was last told (once per batch of
    /// notifications instead of once per delivery: the counter is shared by every connection).
    packets_out: u64,
    /// A delivery that waits for the client's acknowledgements: its Receive Maximum is in
    /// flight (see [`Connection::may_deliver`]). While one waits, nothing more is taken from
    /// the router, which holds the rest: no loss, one notification of memory (boxed: rare, and
    /// a notification is 248 bytes that every connection's task would carry).
    pending: Option<Box<Notification>>,
}

impl Session {
    fn new(shared: Arc<Shared>, peer: SocketAddr, transport: Transport, serial: u64) -> Self {
        let addr = peer.to_string();
        let client = peer;
        let peer = Peer {
            addr: Some(&addr),
            is_loopback: admission::is_loopback(peer.ip()),
            transport,
        };
        let conn = Connection::new(
            shared.server.clone(),
            HeapAckStore::new(ACK_STORE_CAPACITY),
            HeapSessionStore::new(),
            peer,
            now_ms(),
            serial,
        );
        Session {
            conn,
            side: Side {
                shared,
                serial,
                client_id: String::new(),
                peer: client,
                online: None,
                clean_start: true,
                router_keeps: false,
                discard_first: false,
                end_expiry: None,
                expired: false,
                question: None,
                batch: Vec::new(),
                events: Vec::new(),
                sequencer: AckSequencer::new(),
                router_acks: Vec::new(),
                permit: None,
                unreported: false,
                tracks_msgack: false,
                router_pkid: 0,
                filters: None,
                router_name: None,
                unnamed_until: None,
                v5: false,
                username: None,
            },
            rbuf: BytesMut::new(),
            tx: TxBuf::default(),
            kick: None,
            kept_slot: false,
            resumed: None,
            properties_buf: Vec::new(),
            flags_buf: BytesMut::new(),
            packets_out: 0,
            pending: None,
        }
    }

    /// When the engine's next deadline is due, on tokio's clock; far away without one.
    fn deadline(&self) -> Instant {
        self.deadline_from(Instant::now())
    }

    /// [`Session::deadline`], with tokio's clock read at `now`.
    fn deadline_from(&self, now: Instant) -> Instant {
        match self.conn.poll_timeout() {
            Some(at) => now + Duration::from_millis(at.saturating_sub(now_ms())),
            None => now + Duration::from_secs(24 * 3600),
        }
    }

    /// Whether the engine's deadline has passed (a timer may also fire for [`IDLE_RELEASE`]).
    fn is_due(&self) -> bool {
        self.conn.poll_timeout().is_some_and(|at| now_ms() >= at)
    }

    /// Gives back what the connection holds for traffic once it turned idle
    /// ([`IDLE_RELEASE`]): the read buffer when it holds no partial packet (a new one of
    /// [`READ_FIRST`] bytes is taken before the next read), the transmit buffer when all of it
    /// was sent (the next answer allocates what it needs), the queues towards the router (the
    /// link's, whose first use reserved room for 200 packets, and the batch) and the event
    /// sinks, the delivery scratch buffers. Returns the bytes of the read and transmit buffers
    /// given back (the ones a burst grows). A busy connection never gets here, so its buffers
    /// stay grown and are reused as before.
    fn release_buffers(&mut self, link: &LinkTx) -> usize {
        fn give_back<T>(v: &mut Vec<T>) {
            if v.is_empty() {
                *v = Vec::new();
            }
        }
        let mut released = 0;
        if self.rbuf.is_empty() {
            released += std::mem::take(&mut self.rbuf).capacity();
        }
        if self.tx.written().is_empty() {
            released += std::mem::take(&mut self.tx).capacity();
        }
        give_back(&mut self.side.batch);
        give_back(&mut self.side.events);
        give_back(&mut self.side.router_acks);
        give_back(&mut self.properties_buf);
        self.flags_buf = BytesMut::new();
        // rumqttd swaps these queues between its links and its own cache, so this may be
        // another link's old queue: what counts is that an idle link holds none.
        let mut queue = link.buffer();
        if queue.is_empty() {
            queue.shrink_to_fit();
        }
        released
    }

    /// Hands every unconsumed byte to the engine, with room for its answers (the transmit
    /// buffer grows while the engine is blocked for room).
    fn input(&mut self) {
        self.side.refresh(&mut self.conn);
        loop {
            let room = self.conn.answer_room();
            let progress =
                self.conn
                    .handle_input(now_ms(), &self.rbuf, self.tx.spare(room), &mut self.side);
            self.tx.commit(progress.written);
            self.rbuf.advance(progress.consumed);
            if !self.conn.is_blocked() {
                return;
            }
        }
    }

    fn timeout(&mut self) {
        let written = self
            .conn
            .handle_timeout(now_ms(), self.tx.spare(TX_CHUNK), &mut self.side);
        self.tx.commit(written);
    }

    fn close(&mut self, cause: CloseCause) {
        let written =
            self.conn
                .handle_close(now_ms(), cause, self.tx.spare(TX_CHUNK), &mut self.side);
        self.tx.commit(written);
    }

    /// Writes what the engine wrote for the client. A write may stall until the engine's
    /// deadline (the keep-alive), or [`WRITE_STALL_LIMIT`] without one: a client that stops
    /// reading must not hold this task (and with it takeovers and shutdown) forever.
    async fn write<S>(&mut self, stream: &mut S) -> Result<(), CloseCause>
    where
        S: AsyncWrite + Unpin,
    {
        let n = self.tx.written().len();
        if n == 0 {
            return Ok(());
        }
        let limit = match self.conn.poll_timeout() {
            Some(_) => self.deadline(),
            None => Instant::now() + WRITE_STALL_LIMIT,
        };
        let result = timeout_at(limit, async {
            stream.write_all(self.tx.written()).await?;
            stream.flush().await
        })
        .await;
        self.tx.clear();
        match result {
            Ok(Ok(())) => {
                self.side
                    .shared
                    .metrics
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => Err(CloseCause::TransportClosed),
            Err(_) => {
                debug!(client_id = %self.side.client_id, "client stopped reading: closing");
                // The transport's rule, counted with the engine's keep-alive closes.
                self.side.count(Counter::KeepAliveTimeout);
                Err(CloseCause::KeepAliveTimeout)
            }
        }
    }

    /// Sends the router its packets, queues the events, writes the client its bytes.
    async fn flush<S>(&mut self, stream: &mut S, link: &mut LinkTx) -> Result<(), CloseCause>
    where
        S: AsyncWrite + Unpin,
    {
        self.side.send(link)?;
        self.write(stream).await
    }

    /// Reads until the engine asks about the CONNECT, answers it, and returns the router link
    /// of the accepted connection. `None` when it ended first (refused, timed out, closed).
    async fn connect<S>(&mut self, stream: &mut S) -> Option<Link>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while !self.conn.is_authorizing() {
            if self.conn.is_closed() {
                // Refused by the engine: its `refused` event goes out; no router link.
                self.side.send_events();
                let _ = self.write(stream).await;
                return None;
            }
            reserve_read_space(&mut self.rbuf);
            let deadline = self.deadline();
            tokio::select! {
                read = stream.read_buf(&mut self.rbuf) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => {
                        self.side.shared.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                        grow_if_filled(&mut self.rbuf);
                        self.input();
                    }
                },
                () = sleep_until(deadline) => self.timeout(),
            }
        }
        let (answer, link) = match self.admit().await {
            Ok((session_present, link)) => (ConnectAnswer::accept(session_present), Some(link)),
            Err(reason) => (ConnectAnswer::Refuse(reason), None),
        };
        if link.is_some() {
            // Counted before the answer: the input after the CONNECT may end the session
            // within the same call. Matched when the session ends.
            self.side.unreported = true;
            self.side.shared.unreported.fetch_add(1, Ordering::AcqRel);
            self.side.shared.metrics.connection_opened();
        }
        self.side.refresh(&mut self.conn);
        let room = self.conn.answer_room();
        let progress = self.conn.handle_connect_answer(
            now_ms(),
            answer,
            &self.rbuf,
            self.tx.spare(room),
            &mut self.side,
        );
        self.tx.commit(progress.written);
        self.rbuf.advance(progress.consumed);
        if answer == ConnectAnswer::accept(true) {
            self.side.filters().positions.resumed_session();
        }
        if answer == ConnectAnswer::accept(true) && self.side.v5 && self.side.router_pkid != 0 {
            // The engine routed the resumed subscriptions again.
            self.side.unnamed_until = Some(self.side.router_pkid);
        }
        if self.conn.is_blocked() {
            self.input();
        }
        if self.conn.is_connected()
            && let (Some(presence), Some(online)) = (&self.side.shared.presence, &self.side.online)
        {
            presence.insert(online.clone());
        }
        if !self.conn.is_connected() && std::mem::take(&mut self.side.unreported) {
            // Not connected, and no session end came to match the count.
            self.side.shared.unreported.fetch_sub(1, Ordering::AcqRel);
        }
        match link {
            Some(link) => Some(link),
            None => {
                self.side.send_events();
                let _ = self.write(stream).await;
                None
            }
        }
    }

    /// The driver's part of a CONNECT: [`Admission`], takeover of an older connection with the
    /// same client id (its `disconnected` event is queued before this one's `connected`), the
    /// router link and whether the router kept a session.
    async fn admit(&mut self) -> Result<(bool, Link), ReasonCode> {
        let question = self.side.question.take().ok_or(ReasonCode::ProtocolError)?;
        let shared = self.side.shared.clone();
        let admission = Admission {
            auth: &shared.auth,
            phase: &shared.phase,
            permits: &shared.permits,
        };
        let permit = admission
            .admit(question.username.as_deref(), question.password.as_deref())
            .await?;
        let client_id = self.side.client_id.clone();
        let serial = self.side.serial;
        let (kick_tx, kick) = oneshot::channel::<Kick>();
        if let Some(old) = shared.registry.insert(&client_id, serial, kick_tx) {
            let (done_tx, done_rx) = oneshot::channel();
            let request = Kick {
                done: done_tx,
                clean_start: self.side.clean_start,
            };
            if old.send(request).is_ok()
                && let Ok(Ok(resumed)) = tokio::time::timeout(Duration::from_secs(5), done_rx).await
            {
                self.conn.handle_session_resumed(&resumed);
            }
        }
        // rumqttd's clean flag both discards an earlier session and keeps none at the end.
        let clean = !self.side.router_keeps;
        // A clean link enters under a pooled name, so it cannot end the router's session of
        // the client id itself (see `RouterSessions`).
        if self.side.discard_first || (clean && shared.router_sessions.forget(&client_id)) {
            discard_router_session(&shared, &client_id).await;
        }
        // A clean link resumes nothing: it takes a pooled name, which keeps the router from
        // remembering every client id that ever left (see `RouterNames`).
        let router_id = if clean {
            let name = shared.router_names.take();
            let id = name.to_router_id();
            self.side.router_name = Some(name);
            id
        } else {
            router_client_id(&client_id)
        };
        let (tx, rx, connack) = match shared.links.build(router_id, clean).await {
            Ok(link) => link,
            Err(e) => {
                warn!(error = %e, "no router link");
                shared.registry.remove(&client_id, serial);
                return Err(ReasonCode::ServerUnavailable);
            }
        };
        self.side.permit = Some(permit);
        shared
            .interest
            .session_started(&client_id, serial, self.side.clean_start);
        let session_present = matches!(
            Option::<Packet>::from(connack),
            Some(Packet::ConnAck(ack, _)) if ack.session_present
        );
        Ok((
            session_present,
            Link {
                tx,
                rx,
                kick: Some(kick),
            },
        ))
    }

    /// The accepted connection, until it ends; returns why, when it was not the engine that
    /// ended it (the end follows in [`Session::end`]).
    ///
    /// After its CONNACK, a connection waits here ([`Session::idle`]) with the few futures an
    /// idle connection needs; once the client or the router has something for it, it runs
    /// its steps in [`Session::steps`], boxed, and comes back here once it idled for
    /// [`IDLE_RELEASE`] (its buffers given back). So the task that
    /// stays for the connection's life holds the session and this wait, not the state of a
    /// step (a batch of notifications, a write), which is allocated while the connection is
    /// busy (docs/scale.md, "Memory per idle connection").
    async fn run<S>(&mut self, stream: &mut S, link: &mut Link) -> Option<CloseCause>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // One timer and one wait for shutdown for the connection's life, moved instead of
        // built again for every step: a step per router wake-up would otherwise register (and
        // drop) a timer and a waiter of the shared phase channel each time.
        let sleep = sleep_until(self.deadline());
        tokio::pin!(sleep);
        let stopping = stopping(self.side.shared.phase.clone());
        tokio::pin!(stopping);
        // The CONNACK (and the answers to what came with the CONNECT), boxed like the steps;
        // then the connection waits as an idle one until the client or the router has
        // something for it.
        let mut end = match Box::pin(self.flush(stream, &mut link.tx)).await {
            Err(cause) => Steps::End(Some(cause)),
            Ok(()) if self.conn.is_closed() || self.conn.is_kept() => Steps::End(None),
            Ok(()) => {
                // The CONNACK is sent: an idle connection keeps no transmit buffer (the next
                // answer allocates what it needs).
                self.tx = TxBuf::default();
                Steps::Idle
            }
        };
        loop {
            match end {
                Steps::End(exit) => return exit,
                Steps::Idle => {
                    let woke = self
                        .idle(stream, link, sleep.as_mut(), stopping.as_mut())
                        .await;
                    end =
                        Box::pin(self.steps(stream, link, sleep.as_mut(), stopping.as_mut(), woke))
                            .await;
                }
            }
        }
    }

    /// The end of an accepted connection that `exit` ended (`None`: the engine ended it): the
    /// shutdown's drain, the close, what the end produced; returns where takeovers arrive
    /// (for a kept session, see [`Session::linger`]). Boxed by the caller: once, at the end,
    /// not in every connection's task.
    async fn end<S>(&mut self, stream: &mut S, mut link: Link, exit: Option<CloseCause>) -> Takeover
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match exit {
            Some(CloseCause::ServerShutdown) => {
                // `run` saw the change; `drain` waits for the next one.
                let mut phase = self.side.shared.phase.clone();
                phase.mark_unchanged();
                let written =
                    self.conn
                        .handle_shutdown(now_ms(), self.tx.spare(TX_CHUNK), &mut self.side);
                self.tx.commit(written);
                self.drain(stream, &mut link, phase).await;
                self.close(CloseCause::ServerShutdown);
            }
            // The engine ended the session itself (DISCONNECT, keep-alive, a protocol error).
            None => {}
            Some(cause) => self.close(cause),
        }
        // What the end produced: the will for the router, the events, bytes for the client.
        let _ = self.flush(stream, &mut link.tx).await;
        self.finish(link).await
    }

    /// The steps of a connection with something to do, from `wake` (what woke it in
    /// [`Session::idle`]), until it ends or idled for [`IDLE_RELEASE`] (its buffers given
    /// back).
    async fn steps<S, F>(
        &mut self,
        stream: &mut S,
        link: &mut Link,
        mut sleep: Pin<&mut Sleep>,
        mut stopping: Pin<&mut F>,
        wake: Wake,
    ) -> Steps
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Future<Output = ()>,
    {
        let mut wake = Some(wake);
        let mut exit = None;
        // When the buffers are given back if nothing happens before ([`IDLE_RELEASE`]).
        let mut release_at = None;
        // A kept session (the client left, the session stays) is over for the socket too.
        while exit.is_none() && !self.conn.is_closed() && !self.conn.is_kept() {
            let woke = match wake.take() {
                Some(woke) => woke,
                None => {
                    reserve_read_space(&mut self.rbuf);
                    // One read of the clock per step, as before: the idle release moves with
                    // it.
                    let now = Instant::now();
                    let at = *release_at.insert(now + IDLE_RELEASE);
                    sleep.as_mut().reset(self.deadline_from(now).min(at));
                    tokio::select! {
                        read = stream.read_buf(&mut self.rbuf) => Wake::Read(read),
                        notification = link.rx.next(), if self.pending.is_none() => {
                            Wake::Router(notification)
                        }
                        () = &mut sleep => Wake::Timer,
                        kick = kicked(&mut link.kick) => Wake::Kicked(kick),
                        () = &mut stopping => Wake::Stopping,
                    }
                }
            };
            let step = match woke {
                Wake::Read(Ok(0) | Err(_)) => Err(CloseCause::TransportClosed),
                Wake::Read(Ok(n)) => {
                    self.side
                        .shared
                        .metrics
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    grow_if_filled(&mut self.rbuf);
                    if let Some(online) = &self.side.online {
                        online.touch(now_ms());
                    }
                    self.input();
                    self.resume();
                    Ok(())
                }
                Wake::Router(Ok(first)) => self.handle_notifications(first, &mut link.rx).await,
                Wake::Router(Err(e)) => {
                    warn!(client_id = %self.side.client_id, error = %e, "router dropped the link");
                    Err(CloseCause::RouterClosed)
                }
                Wake::Timer => {
                    let idled = release_at.is_some_and(|at| Instant::now() >= at);
                    if idled {
                        let released = self.release_buffers(&link.tx);
                        let metrics = &self.side.shared.metrics;
                        metrics.buffers_released.fetch_add(1, Ordering::Relaxed);
                        metrics
                            .buffer_bytes_released
                            .fetch_add(released as u64, Ordering::Relaxed);
                    }
                    if self.is_due() {
                        self.timeout();
                    } else if idled {
                        // Nothing to write or send: the step was the release alone.
                        return Steps::Idle;
                    }
                    Ok(())
                }
                Wake::Kicked(kick) => {
                    self.kick = kick;
                    Err(CloseCause::TakenOver)
                }
                Wake::Stopping => Err(CloseCause::ServerShutdown),
            };
            exit = match step {
                Ok(()) => self.flush(stream, &mut link.tx).await.err(),
                Err(cause) => Some(cause),
            };
        }
        Steps::End(exit)
    }

    /// Waits, with its buffers given back, until something happens to an idle connection:
    /// the client sends, the router delivers, the engine's deadline comes, a takeover, the
    /// shutdown.
    async fn idle<S, F>(
        &mut self,
        stream: &mut S,
        link: &mut Link,
        mut sleep: Pin<&mut Sleep>,
        mut stopping: Pin<&mut F>,
    ) -> Wake
    where
        S: AsyncRead + Unpin,
        F: Future<Output = ()>,
    {
        sleep.as_mut().reset(self.deadline());
        // An idle connection holds no read buffer: the first bytes that wake it are read into
        // a few bytes of this wait, then copied into a new buffer. A partial packet keeps its
        // buffer, and the rest of it is read into it.
        let rbuf = &mut self.rbuf;
        let read = async {
            if rbuf.is_empty() {
                *rbuf = BytesMut::new();
                let mut first = [0u8; IDLE_READ];
                let n = stream.read(&mut first).await?;
                reserve_read_space(rbuf);
                rbuf.extend_from_slice(&first[..n]);
                Ok(n)
            } else {
                reserve_read_space(rbuf);
                stream.read_buf(rbuf).await
            }
        };
        tokio::select! {
            read = read => Wake::Read(read),
            notification = link.rx.next(), if self.pending.is_none() => Wake::Router(notification),
            () = &mut sleep => Wake::Timer,
            kick = kicked(&mut link.kick) => Wake::Kicked(kick),
            () = &mut stopping => Wake::Stopping,
        }
    }

    /// Shutdown: the end is reported; keep delivering (the events of everybody's shutdown among
    /// it) until the broker closes every socket.
    async fn drain<S>(&mut self, stream: &mut S, link: &mut Link, mut phase: watch::Receiver<Phase>)
    where
        S: AsyncWrite + Unpin,
    {
        loop {
            if self.flush(stream, &mut link.tx).await.is_err() || *phase.borrow() == Phase::Closing
            {
                return;
            }
            let step = tokio::select! {
                notification = link.rx.next(), if self.pending.is_none() => match notification {
                    Ok(first) => self.handle_notifications(first, &mut link.rx).await,
                    Err(_) => return,
                },
                changed = phase.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Ok(())
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Tells the router the connection is gone, and everything else that kept it; returns
    /// where takeovers arrive.
    async fn finish(&mut self, mut link: Link) -> Takeover {
        let now = now_ms();
        if self.conn.is_kept() {
            // Taken over: the new connection resumes the session (or its clean start ends it).
            if let Some(kick) = &self.kick {
                self.conn.handle_resume(
                    now,
                    kick.clean_start,
                    &mut **self.resumed.get_or_insert_default(),
                    &mut self.side,
                );
            }
        }
        if self.conn.is_kept() {
            let metrics = &self.side.shared.metrics;
            let max = u64::try_from(self.side.shared.config.max_kept_sessions).unwrap_or(u64::MAX);
            if metrics.sessions_kept.fetch_add(1, Ordering::AcqRel) >= max {
                metrics.sessions_kept.fetch_sub(1, Ordering::AcqRel);
                // The will (if any) goes with this link, before its DISCONNECT.
                self.conn.handle_discard(now, &mut self.side);
            } else {
                self.kept_slot = true;
            }
        }
        let engine_keeps = self.conn.is_kept();
        let side = &mut self.side;
        // DISCONNECT makes the router drop the connection and keep a persistent session.
        side.batch.push(Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ));
        let _ = side.send(&mut link.tx);
        // The router handles that DISCONNECT before any later link's CONNECT (one channel).
        side.router_name = None;
        // The session ends now although the router was told to keep it: a DISCONNECT set its
        // expiry to 0, or it could not be kept.
        let ends_now = side.router_keeps && side.end_expiry == Some(0);
        let mut router_keeps = side.router_keeps && !ends_now && !side.expired;
        if ends_now || std::mem::take(&mut side.expired) {
            discard_router_session(&side.shared, &side.client_id).await;
        }
        if router_keeps {
            // Kept by the engine: counted in `sessions_kept` above. Kept by rumqttd alone (3.1.1
            // clean session 0): bounded here, by the same figure.
            let limit = if engine_keeps {
                usize::MAX
            } else {
                side.shared.config.max_kept_sessions
            };
            if !side.shared.router_sessions.keep(&side.client_id, limit) {
                warn!(
                    client_id = %side.client_id,
                    "max_kept_sessions reached: the session ends with its connection"
                );
                side.shared
                    .metrics
                    .sessions_not_kept
                    .fetch_add(1, Ordering::Relaxed);
                discard_router_session(&side.shared, &side.client_id).await;
                router_keeps = false;
            }
        }
        // Before the registry: once the client id is gone, its clean session's filters are.
        side.shared
            .interest
            .session_ended(&side.client_id, side.serial, !router_keeps);
        side.shared.metrics.connection_closed();
        if !self.conn.is_kept() {
            self.release();
        }
        link.kick
    }

    /// A kept session (see [`Connection::is_kept`]): waits for the engine's deadline (a delayed
    /// will, the expiry) or for the client id to connect again, then lets the client id go.
    async fn linger(&mut self, mut kick: Takeover) {
        let mut phase = self.side.shared.phase.clone();
        while self.conn.is_kept() && *phase.borrow() == Phase::Running {
            let deadline = self.deadline();
            tokio::select! {
                () = sleep_until(deadline) => {
                    let mut tx = [0u8; 64];
                    self.conn.handle_timeout(now_ms(), &mut tx, &mut self.side);
                }
                request = kicked(&mut kick) => match request {
                    Some(request) => {
                        self.conn.handle_resume(
                            now_ms(),
                            request.clean_start,
                            &mut **self.resumed.get_or_insert_default(),
                            &mut self.side,
                        );
                        self.kick = Some(request);
                    }
                    None => break,
                },
                changed = phase.changed() => {
                    // Shutdown: the router goes with the process, and its sessions with it.
                    if changed.is_err() || *phase.borrow() != Phase::Running {
                        break;
                    }
                }
            }
            self.kept_effects().await;
        }
        if std::mem::take(&mut self.kept_slot) {
            self.side
                .shared
                .metrics
                .sessions_kept
                .fetch_sub(1, Ordering::AcqRel);
        }
        self.release();
    }

    /// What the engine asked of the router for a kept session, whose link is gone: a delayed
    /// will goes through a link of its own; an ended session is discarded.
    async fn kept_effects(&mut self) {
        let side = &mut self.side;
        if !side.batch.is_empty() {
            // Held until the will's DISCONNECT is sent.
            let name = side.shared.router_names.take();
            let router_id = name.to_router_id();
            match side.shared.links.build(router_id, true).await {
                Ok((mut tx, _rx, _)) => {
                    side.batch.push(Packet::Disconnect(
                        Disconnect {
                            reason_code: DisconnectReasonCode::NormalDisconnection,
                        },
                        None,
                    ));
                    let _ = side.send(&mut tx);
                }
                _ => {
                    warn!(client_id = %side.client_id, "no router link for a delayed will");
                    side.batch.clear();
                    side.shared
                        .metrics
                        .messages_lost
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for record in side.events.drain(..) {
            side.shared.events.send(record);
        }
        if std::mem::take(&mut side.expired) {
            discard_router_session(&side.shared, &side.client_id).await;
            side.shared
                .interest
                .session_ended(&side.client_id, side.serial, true);
        }
    }

    /// Lets the client id go and answers the takeover that waits for it.
    fn release(&mut self) {
        let side = &self.side;
        side.shared.registry.remove(&side.client_id, side.serial);
        if let Some(kick) = self.kick.take() {
            let resumed = self.resumed.take().map(|store| *store).unwrap_or_default();
            let _ = kick.done.send(resumed);
        }
    }

    /// Handles `first` and every notification already queued behind it, up to
    /// [`NOTIFICATION_BUDGET`].
    async fn handle_notifications(
        &mut self,
        first: Option<Notification>,
        rx: &mut LinkRx,
    ) -> Result<(), CloseCause> {
        self.side.refresh(&mut self.conn);
        let batch = self.handle_queued(first, rx);
        // What this batch wrote is counted on the way out through the router's end too.
        self.count_packets_out();
        // Boxed: its future holds a router event (about 1 KB), and the router pauses a
        // connection only when its queue towards it is full, so this is rare.
        if batch? == Batch::Paused && Box::pin(rx.wake()).await.is_err() {
            return Err(CloseCause::RouterClosed);
        }
        Ok(())
    }

    /// The loop of [`Session::handle_notifications`]: `first`, then what the link already
    /// holds, each handled where it lies (a notification is 248 bytes, and a delivery is
    /// read, not moved: docs/scale.md, "Fan-out beside rumqttd's own listener").
    ///
    /// The link is asked with `recv_deadline` and a deadline already past: it hands out its
    /// queue's next notification (taking the router's whole buffer when its own is empty), or
    /// says at once that nothing is queued, without the future and waker of `next()`.
    fn handle_queued(
        &mut self,
        mut first: Option<Notification>,
        rx: &mut LinkRx,
    ) -> Result<Batch, CloseCause> {
        let mut batch = Batch::Done;
        let Some(notification) = first.as_mut() else {
            return Ok(batch);
        };
        if !self.handle_queued_one(notification, &mut batch) {
            return Ok(batch);
        }
        // Before now, so that the channel never waits (flume parks the thread for what is left
        // until a deadline, and none is left for this one).
        let now = std::time::Instant::now();
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        for _ in 1..NOTIFICATION_BUDGET {
            let mut next = rx.recv_deadline(past);
            match &mut next {
                Ok(Some(notification)) => {
                    if !self.handle_queued_one(notification, &mut batch) {
                        break;
                    }
                }
                Ok(None) | Err(LinkError::RecvTimeout(RecvTimeoutError::Timeout)) => break,
                Err(_) => return Err(CloseCause::RouterClosed),
            }
        }
        Ok(batch)
    }

    /// One notification of a batch; `false` when the batch stops at it (a delivery that
    /// waits for the client's Receive Maximum, taken out of `notification` into
    /// `Session::pending`).
    fn handle_queued_one(&mut self, notification: &mut Notification, batch: &mut Batch) -> bool {
        match notification {
            // The router paused this connection until we ask for more.
            Notification::Unschedule => *batch = Batch::Paused,
            Notification::Forward(_) if !self.conn.may_deliver() => {
                // The client's Receive Maximum is in flight: this delivery waits for an
                // acknowledgement, and the router keeps the rest.
                let taken = std::mem::replace(notification, Notification::Unschedule);
                self.pending = Some(Box::new(taken));
                return false;
            }
            _ => self.handle_notification(notification),
        }
        true
    }

    /// Adds the deliveries written since the last call to `Metrics::packets_out`.
    fn count_packets_out(&mut self) {
        let n = std::mem::take(&mut self.packets_out);
        if n > 0 {
            self.side
                .shared
                .metrics
                .packets_out
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Delivers the delivery that waited for the client's Receive Maximum, once an
    /// acknowledgement made room.
    fn resume(&mut self) {
        if self.conn.may_deliver()
            && let Some(mut notification) = self.pending.take()
        {
            self.handle_notification(&mut notification);
            self.count_packets_out();
        }
    }

    /// One notification from the router, where it lies: what a delivery needs is taken out
    /// of it or read in place.
    fn handle_notification(&mut self, notification: &mut Notification) {
        // Deliveries, by far the most notifications, are read in place; only the others are
        // converted to packets (none of them is a PUBLISH).
        let packet = match notification {
            Notification::Forward(forward) => {
                let flags = router_flags(&mut forward.publish, &mut self.flags_buf);
                let publish = &forward.publish;
                // Checked once: the skip count and the delivery read the topic as text.
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    return;
                };
                if let Some((_, offset)) = forward.cursor {
                    self.count_skipped(topic, forward.properties.as_ref(), offset);
                }
                let Some(flags) = flags else {
                    warn!("router delivery with an invalid QoS");
                    return;
                };
                let properties = forward.properties.as_ref();
                return self.deliver(topic, &publish.payload, publish.retain, flags, properties);
            }
            other => Option::<Packet>::from(std::mem::replace(other, Notification::Unschedule)),
        };
        match packet {
            // The engine sent PUBREL when the client sent PUBREC; the router's is the
            // sequencer's business only.
            Some(Packet::PubRel(pubrel, _)) => {
                let _ = self.side.sequencer.on_router_pubrel(pubrel.pkid);
            }
            Some(Packet::SubAck(suback, _)) if self.side.unnamed_until == Some(suback.pkid) => {
                // rumqttd has the resumed session's router identifiers again.
                self.side.unnamed_until = None;
            }
            // SUBACK, UNSUBACK: the engine answered the client. PUBACK/PUBREC/PUBCOMP: every
            // publish enters the router at QoS 0, so none are due. PINGRESP: the engine
            // answers PINGREQ.
            Some(
                Packet::SubAck(..)
                | Packet::UnsubAck(..)
                | Packet::PubAck(..)
                | Packet::PubRec(..)
                | Packet::PubComp(..)
                | Packet::PingResp(..),
            )
            | None => {}
            Some(Packet::Disconnect(..)) => {
                debug!(client_id = %self.side.client_id, "router asked to disconnect");
            }
            Some(other) => debug!(?other, "unexpected packet from the router"),
        }
    }

    /// Counts and logs the messages the router skipped in a filter's log before this delivery
    /// at `offset` ([`super::skips`]).
    fn count_skipped(&mut self, topic: &str, properties: Option<&PublishProperties>, offset: u64) {
        // The field, not `Side::filters`: the skip borrows it while the rest of `side` is read.
        let filters = self.side.filters.get_or_insert_with(Box::default);
        let named = properties
            .and_then(|p| p.subscription_identifiers.first())
            .and_then(|id| filters.by_id.get(id))
            .map(String::as_str);
        let Some(skip) = filters.positions.observe(topic, named, offset) else {
            return;
        };
        self.side
            .shared
            .metrics
            .deliveries_skipped
            .fetch_add(skip.skipped, Ordering::Relaxed);
        // Under a sustained flood the log wraps again and again: the 1st, 2nd, 4th, 8th ...
        // skip of the connection is logged.
        if skip.jumps.is_power_of_two() {
            warn!(
                client_id = %self.side.client_id,
                filter = skip.filter,
                skipped = skip.skipped,
                jumps = skip.jumps,
                skipped_total = skip.total,
                "the router skipped messages for a slow subscriber (its log wrapped)"
            );
        }
        // One `dropped` event per jump of the log, with the messages it skipped (the engine
        // bounds them per connection, and leaves out a filter that receives the events).
        let (filter, skipped) = (skip.filter.to_owned(), skip.skipped);
        let info = DropInfo {
            reason: DropReason::RouterLogOverrun,
            topic: None,
            filter: Some(&filter),
            count: skipped,
        };
        self.conn.handle_dropped(now_ms(), info, &mut self.side);
    }

    /// One delivery from the router: the engine writes it at `min(publish QoS, subscription
    /// QoS)` with what MQTT 5 adds, the sequencer completes the router's flow for a downgraded
    /// one or one the engine dropped.
    ///
    /// What the front tells the engine that rumqttd keeps to itself: the publisher's QoS and
    /// RETAIN flag (the marker), the publisher (a user property), the subscription the router
    /// delivers for (the router identifier of the filter), and how long the message waited
    /// since the front received it (the expiry property's timestamp; rumqttd's own countdown
    /// is not used).
    ///
    /// `flags` are the router's QoS, packet id and DUP ([`router_flags`]).
    fn deliver(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        (router_qos, pkid, dup): (QoS, u16, bool),
        properties: Option<&PublishProperties>,
    ) {
        // No marker: a plain publish (`qos_marker::PLAIN`).
        let marker = marker_of(properties.and_then(|p| p.payload_format_indicator));
        let published_retain = read_retain(marker);
        let marker = read_marker(marker).map(|(qos, _)| qos);
        let publisher = properties.and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == PUBLISHER_PROPERTY)
                .map(|(_, v)| v.as_str())
        });
        // No router identifier: a plain subscription's (or, until rumqttd has a resumed
        // session's identifiers again, any of its subscriptions'); one this connection did not
        // give: every matching subscription's.
        let subscription = match properties.and_then(|p| p.subscription_identifiers.first()) {
            None if self.side.unnamed_until.is_some() => DeliveredFor::AllMatching,
            None => DeliveredFor::Plain,
            Some(id) => self
                .side
                .filters
                .as_ref()
                .and_then(|filters| filters.by_id.get(id))
                .map_or(DeliveredFor::AllMatching, |f| DeliveredFor::Filter(f)),
        };
        // The clock is read only for a message with an expiry.
        let waited_ms = properties
            .and_then(properties::expiry_of)
            .map_or(0, |(at, _)| now_ms().saturating_sub(at));
        let qos = marker.unwrap_or(router_qos);
        // Only an MQTT 5 subscriber gets properties: the work is skipped for the others,
        // unless user properties may identify the message for `msgack` (the engine reads them
        // and does not send them to an MQTT 3.1.1 client).
        let v5_properties = match properties {
            Some(routed)
                if self.conn.version().is_v5()
                    || (publisher.is_some() && properties::names_ids(routed)) =>
            {
                properties::from_router(routed, &mut self.properties_buf)
            }
            _ => Properties::EMPTY,
        };
        let delivery = Delivery {
            subscription_qos: router_qos,
            retain,
            dup,
            pkid: Some(pkid),
            publisher,
            properties: v5_properties,
            published_retain,
            subscription,
            waited_ms,
            ..Delivery::new(topic, payload, qos)
        };
        let mut room =
            topic.len() + payload.len() + v5_properties.as_bytes().len() + DELIVERY_OVERHEAD;
        let metrics = &self.side.shared.metrics;
        let mut result = self
            .conn
            .handle_delivery(delivery, self.tx.spare(room), |_| None);
        if let Err(DeliveryError::NoRoom { needed }) = result {
            // MQTT 5 additions (identifiers, an alias) took more than the estimate.
            room = needed;
            result = self
                .conn
                .handle_delivery(delivery, self.tx.spare(room), |_| None);
        }
        let sent_qos = match result {
            Ok(delivered) => {
                self.tx.commit(delivered.written);
                self.packets_out += 1;
                if delivered.forgotten {
                    metrics.deliveries_evicted.fetch_add(1, Ordering::Relaxed);
                }
                if delivered.subscription_ids_cut {
                    metrics.count(Counter::SubscriptionIdsCut);
                }
                qos.min(router_qos)
            }
            // The session ended: the router keeps what a persistent one still needs.
            Err(DeliveryError::NotConnected) => return,
            Err(error @ DeliveryError::Dropped(counter)) => {
                metrics.count(counter);
                // Too large for the client, or expired: the engine reports it (`dropped`).
                if let Some(reason) = error.drop_reason() {
                    let info = DropInfo {
                        reason,
                        topic: Some(topic),
                        filter: None,
                        count: 1,
                    };
                    self.conn.handle_dropped(now_ms(), info, &mut self.side);
                }
                QoS::AtMostOnce
            }
            Err(e) => {
                warn!(client_id = %self.side.client_id, error = %e, "delivery not written");
                metrics.messages_lost.fetch_add(1, Ordering::Relaxed);
                QoS::AtMostOnce
            }
        };
        // A delivery not sent is done for the router as if acknowledged (QoS 0 to the client).
        self.side
            .sequencer
            .on_delivery(pkid, router_qos, sent_qos, &mut self.side.router_acks);
    }
}

/// Discards the router's session of `client_id`: rumqttd keeps a persistent session until a
/// clean connection of the same client id replaces it, so one connects and leaves. The caller
/// holds the client id in the registry, so that no client connects meanwhile.
async fn discard_router_session(shared: &Shared, client_id: &str) {
    shared.router_sessions.forget(client_id);
    let router_id = router_client_id(client_id);
    match shared.links.build(router_id, true).await {
        Ok((mut tx, _rx, _)) => {
            let disconnect = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            let _ = tx.send(Packet::Disconnect(disconnect, None)).await;
        }
        _ => warn!(client_id, "no router link to discard a session"),
    }
}

/// Returns once the broker's phase leaves [`Phase::Running`] (or its sender is gone).
async fn stopping(mut phase: watch::Receiver<Phase>) {
    while phase.changed().await.is_ok() {
        if *phase.borrow() != Phase::Running {
            return;
        }
    }
}

/// Makes room in the read buffer before a read, in steps of [`READ_GROW`].
///
/// Packets are decoded in place and the buffer is advanced past them, so it is never shared
/// and `reserve` reuses it (moving the few bytes of a partial packet to its front) instead of
/// allocating. Growing in large steps keeps that move rare; an idle connection keeps its small
/// buffer ([`READ_FIRST`] bytes from the start), which only grows when a packet does not fit
/// the room left (or a read fills it, [`grow_if_filled`]).
fn reserve_read_space(rbuf: &mut BytesMut) {
    let spare = rbuf.capacity() - rbuf.len();
    if rbuf.capacity() == 0 {
        rbuf.reserve(READ_FIRST);
    } else if spare >= READ_MIN_SPARE {
    } else if rbuf.is_empty() {
        // Everything read was consumed: the buffer is reused from its start, whatever its
        // size (no allocation).
        rbuf.reserve(READ_FIRST);
    } else if rbuf.capacity() >= READ_MIN_SPARE || spare == 0 {
        rbuf.reserve(READ_GROW);
    }
    // Else a small buffer holds the start of a packet (the few bytes an idle connection's
    // wait read, say): the rest is read into the room left, and a read that fills it grows it
    // ([`grow_if_filled`]), so a small packet that wakes an idle connection costs no large
    // buffer.
}

/// A read filled a small read buffer (smaller than [`READ_MIN_SPARE`]): more is probably
/// waiting, so it grows before the bytes are consumed instead of reading a few hundred bytes at
/// a time. A large buffer that a read fills grows as before, once its bytes are consumed
/// ([`reserve_read_space`]), not here: that would double it on every full read of a flood.
fn grow_if_filled(rbuf: &mut BytesMut) {
    if rbuf.len() == rbuf.capacity() && rbuf.capacity() < READ_MIN_SPARE {
        rbuf.reserve(READ_GROW);
    }
}

/// Whether an MQTT 5 publish's user properties may identify it for `msgack` (see
/// [`activity_core::envelope::envelope_of_properties`]): it carries its publisher through the
/// router like an envelope.
fn carries_ids(properties: &Properties<'_>) -> bool {
    properties.user_property("product_id").is_some()
        && properties.user_property("message_id").is_some()
}

/// Whether `payload` may be an envelope: it starts with `{` after JSON whitespace. Publishes
/// that pass carry their publisher through the router; the delivery side parses the envelope
/// (once per delivery, instead of here once more per publish) and ignores the publisher of a
/// payload that turns out not to be one.
fn may_be_envelope(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// The QoS, packet id and DUP flag of a router delivery, which rumqttd keeps private.
///
/// At QoS 0, the fan-out's common case, rumqttd's public `Publish::len` says so (it counts a
/// packet id at QoS 1 and 2 only): packet id 0 (rumqttd gives none) and no DUP (it is 0 at
/// QoS 0, [MQTT-3.3.1-2]). At QoS 1 and 2: rumqttd's MQTT 3.1.1 encoding of `publish`, its
/// topic and payload taken out for it and put back after, into `buf`, reused between
/// deliveries: the fixed-header flags, the remaining length (one byte), the empty topic's
/// length and the packet id. Nothing is allocated per delivery. `None` for an invalid QoS, or a
/// QoS 1 or 2 delivery without a packet id (rumqttd's encoder refuses it). What `publish` keeps
/// is its topic, payload and RETAIN flag (the rest is the default).
fn router_flags(publish: &mut Publish, buf: &mut BytesMut) -> Option<(QoS, u16, bool)> {
    if publish.len() == 2 + publish.topic.len() + publish.payload.len() {
        return Some((QoS::AtMostOnce, 0, false));
    }
    let topic = std::mem::take(&mut publish.topic);
    let payload = std::mem::take(&mut publish.payload);
    let retain = publish.retain;
    buf.clear();
    let written = V4.write(Packet::Publish(std::mem::take(publish), None), buf);
    (publish.topic, publish.payload, publish.retain) = (topic, payload, retain);
    written.ok()?;
    let flags = *buf.first()?;
    let qos = QoS::from_u8((flags >> 1) & 0b11)?;
    let pkid = match qos {
        QoS::AtMostOnce => 0,
        _ => u16::from_be_bytes([*buf.get(4)?, *buf.get(5)?]),
    };
    Some((qos, pkid, flags & 0b1000 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size<A, R>(_: &impl Fn(A) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size2<A, B, R>(_: &impl Fn(A, B) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size3<A, B, C, R>(_: &impl Fn(A, B, C) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size4<A, B, C, D, R>(_: &impl Fn(A, B, C, D) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size5<A, B, C, D, E, R>(_: &impl Fn(A, B, C, D, E) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size6<A, B, C, D, E, G, R>(_: &impl Fn(A, B, C, D, E, G) -> R) -> usize {
        size_of::<R>()
    }

    /// Prints the sizes of a connection's state and of the futures of its phases (`cargo test
    /// -p adapter-tokio --lib sizes -- --nocapture`, with `--release` for a release build's):
    /// a connection's task holds the largest phase beside the session (docs/scale.md, "Memory
    /// per idle connection").
    #[test]
    fn sizes_of_a_connection_s_state() {
        use tokio::net::TcpStream;
        let sizes = [
            ("serve", returned_size4(&serve::<TcpStream>)),
            ("Session", size_of::<Session>()),
            ("Engine", size_of::<Engine>()),
            ("Side", size_of::<Side>()),
            ("Link", size_of::<Link>()),
            ("Notification", size_of::<Notification>()),
            ("Packet", size_of::<Packet>()),
            ("HeapSessionStore", size_of::<HeapSessionStore>()),
            ("connect", returned_size2(&Session::connect::<TcpStream>)),
            ("admit", returned_size(&Session::admit)),
            ("run", returned_size3(&Session::run::<TcpStream>)),
            ("end", returned_size4(&Session::end::<TcpStream>)),
            // The stopping future is reached through a pointer: any type gives the size.
            (
                "steps",
                returned_size6(&Session::steps::<TcpStream, std::future::Pending<()>>),
            ),
            (
                "idle",
                returned_size5(&Session::idle::<TcpStream, std::future::Pending<()>>),
            ),
            ("flush", returned_size3(&Session::flush::<TcpStream>)),
            ("write", returned_size2(&Session::write::<TcpStream>)),
            (
                "handle_notifications",
                returned_size3(&Session::handle_notifications),
            ),
            ("drain", returned_size4(&Session::drain::<TcpStream>)),
            ("finish", returned_size2(&Session::finish)),
            ("linger", returned_size2(&Session::linger)),
            ("tokio Sleep", size_of::<tokio::time::Sleep>()),
        ];
        for (what, size) in sizes {
            println!("{what}: {size} B");
        }
        // The task holds the session and the loop, and nothing of the CONNECT phase or the
        // end beside them (boxed; their futures would add to it when they are larger).
        let size = |name: &str| {
            sizes
                .iter()
                .find(|(what, _)| *what == name)
                .map_or(0, |s| s.1)
        };
        let (serve, session, run) = (size("serve"), size("Session"), size("run"));
        assert!(
            serve <= session + run + 512,
            "serve {serve} B, Session {session} B, run {run} B"
        );
        // The loop holds the idle wait, its timer and its shutdown wait; a step's state (a
        // batch of notifications, a write) is boxed while the connection is busy.
        // The router filters and the CONNECT's question are boxed, made when used.
        assert!(size("Side") <= 400, "Side {} B", size("Side"));
        let (idle, steps) = (size("idle"), size("steps"));
        assert!(
            run <= idle + 512 && run < steps,
            "run {run} B, idle {idle} B, steps {steps} B"
        );
    }

    #[test]
    fn envelope_candidates_start_with_a_brace() {
        assert!(may_be_envelope(br#"{"product_id":"p","message_id":1}"#));
        assert!(may_be_envelope(b" \r\n\t{}"));
        assert!(!may_be_envelope(b""));
        assert!(!may_be_envelope(b"  "));
        assert!(!may_be_envelope(b"[1]"));
        assert!(!may_be_envelope(b"hello {"));
    }

    #[test]
    fn router_flags_read_qos_packet_id_and_dup() {
        let mut buf = BytesMut::new();
        // rumqttd's MQTT-independent form: flags, packet id, topic length, topic, payload.
        for (flags, pkid, expected) in [
            (0x30, 0, (QoS::AtMostOnce, 0, false)),
            (0x32, 7, (QoS::AtLeastOnce, 7, false)),
            (0x3D, 0x1234, (QoS::ExactlyOnce, 0x1234, true)),
            // RETAIN kept; a DUP at QoS 0 is not one (it is 0 there, [MQTT-3.3.1-2]).
            (0x33, 9, (QoS::AtLeastOnce, 9, false)),
            (0x39, 0, (QoS::AtMostOnce, 0, false)),
        ] {
            let mut wire = vec![flags];
            wire.extend_from_slice(&u16::to_be_bytes(pkid));
            wire.extend_from_slice(b"\x00\x03a/bpayload");
            let mut publish = Publish::deserialize(Bytes::from(wire));
            assert_eq!(&publish.topic[..], b"a/b");
            assert_eq!(router_flags(&mut publish, &mut buf), Some(expected));
            // The topic and payload are there again for the delivery.
            assert_eq!(&publish.topic[..], b"a/b");
            assert_eq!(&publish.payload[..], b"payload");
            assert_eq!(publish.retain, flags & 1 != 0);
        }
    }

    #[test]
    fn the_transmit_buffer_grows_on_demand_and_gives_memory_back() {
        let mut tx = TxBuf::default();
        // The first answers (a CONNACK) take only what they need.
        assert_eq!(tx.spare(10).len(), 10);
        tx.spare(10)[..3].copy_from_slice(b"abc");
        tx.commit(3);
        assert_eq!(tx.written(), b"abc");
        // Past that, it grows in chunks.
        assert!(tx.spare(10).len() >= TX_CHUNK - 3);
        assert_eq!(tx.written(), b"abc");
        // A large delivery: the room grows past what is written.
        assert!(tx.spare(TX_KEEP * 2).len() >= TX_KEEP * 2);
        assert_eq!(tx.written(), b"abc");
        tx.commit(TX_KEEP * 2);
        tx.clear();
        assert!(tx.written().is_empty());
        assert!(tx.buf.capacity() <= TX_KEEP, "memory given back once sent");
    }

    #[test]
    fn the_read_buffer_starts_small_and_grows_when_filled_or_a_packet_does_not_fit() {
        let mut rbuf = BytesMut::new();
        reserve_read_space(&mut rbuf);
        assert_eq!(rbuf.capacity(), READ_FIRST);
        // Small packets consumed whole: the small buffer is reused from its start.
        rbuf.extend_from_slice(&[0xC0, 0]);
        grow_if_filled(&mut rbuf);
        rbuf.advance(2);
        reserve_read_space(&mut rbuf);
        assert_eq!(rbuf.capacity(), READ_FIRST);
        // The start of a packet in the small buffer (what an idle connection's wait read):
        // the rest is read into the room left, no growth.
        rbuf.extend_from_slice(&[0x30; IDLE_READ]);
        reserve_read_space(&mut rbuf);
        assert_eq!(rbuf.capacity(), READ_FIRST);
        // A read that fills it (the packet does not fit): grows, keeping the bytes.
        let room = rbuf.capacity() - rbuf.len();
        rbuf.extend_from_slice(&vec![0x31; room]);
        grow_if_filled(&mut rbuf);
        assert!(rbuf.capacity() - rbuf.len() >= READ_GROW);
        assert_eq!(&rbuf[..IDLE_READ], &[0x30; IDLE_READ][..]);
        // A small buffer with no room left at all grows before the next read.
        let mut full = BytesMut::with_capacity(READ_FIRST);
        full.extend_from_slice(&[0x32; READ_FIRST]);
        reserve_read_space(&mut full);
        assert!(full.capacity() >= READ_GROW);
        assert_eq!(&full[..], &[0x32; READ_FIRST][..]);
        // A large buffer holding a partial packet with little room left grows as before.
        let mut large = BytesMut::with_capacity(READ_GROW);
        large.extend_from_slice(&vec![0x33; READ_GROW - 100]);
        reserve_read_space(&mut large);
        assert!(large.capacity() - large.len() >= READ_MIN_SPARE);
        // A read that fills a small buffer: grows before the bytes are consumed.
        let mut rbuf = BytesMut::new();
        reserve_read_space(&mut rbuf);
        rbuf.extend_from_slice(&[1; READ_FIRST]);
        grow_if_filled(&mut rbuf);
        assert!(rbuf.capacity() - rbuf.len() >= READ_GROW);
        assert_eq!(&rbuf[..], &[1; READ_FIRST][..]);
        // A read that fills a large buffer does not grow it (that would double it on every
        // full read of a flood).
        rbuf.advance(READ_FIRST);
        let cap = rbuf.capacity();
        rbuf.extend_from_slice(&vec![3; cap]);
        grow_if_filled(&mut rbuf);
        assert_eq!(rbuf.capacity(), cap);
        // Consumed whole: the large buffer is reused from its start (not a new small one).
        rbuf.advance(cap);
        reserve_read_space(&mut rbuf);
        assert!(rbuf.capacity() >= READ_GROW);
    }
}
