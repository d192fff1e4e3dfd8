//! The network front: one task per client connection, between the socket and the router.
//!
//! Bytes from the client are decoded with the core's MQTT 3.1.1 codec (never trusting them),
//! reported to the connection's [`Tracker`], and turned into rumqttd packets for the router.
//! The router's notifications are encoded back for the client, and the deliveries among them
//! are reported to the tracker too. The front owns what the router lacks:
//!
//! - CONNECT handling: protocol level, the reserved id, authentication, the connection limit,
//!   last wills on a system topic, each refused with its CONNACK return code;
//! - keep-alive (1.5 x the client's interval; 0 turns it off, as MQTT 3.1.1 allows);
//! - takeover: the old connection is closed with `takenover` and its `disconnected` event is
//!   queued before the new connection's `connected`;
//! - last wills, published by the front when a connection ends without DISCONNECT;
//! - QoS: every client publish enters the router at QoS 0 with a marker of its real QoS, the
//!   front acknowledges the client itself (PUBACK, or PUBREC/PUBCOMP with duplicate detection),
//!   and deliveries go out at `min(publish QoS, subscription QoS)` (section 3.8.4), with the
//!   [`AckSequencer`] completing the router's flow for downgraded ones;
//! - access control: no publishing on system topics, subscribing to them only when allowed;
//! - an UNSUBACK for every UNSUBSCRIBE and a SUBACK code per filter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use activity_core::QoS;
use activity_core::codec::{
    self, ConnAck, ConnectReturnCode, DecodeError, Packet as WirePacket, Publish as WirePublish,
    SubAck, SubAckCode, SubAckCodes,
};
use activity_core::event::DisconnectReason;
use activity_core::tracker::{
    ConnectError, ConnectInfo, DeliveryInfo, PublishInfo, PublishOutcome, Tracker, TrackerConfig,
};
use bytes::{Bytes, BytesMut};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRec, PubRecReason, Publish, PublishProperties, RetainForwardRule, Subscribe,
    SubscribeReasonCode, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{debug, info, warn};

use crate::ack_store::HeapAckStore;
use crate::auth::{AuthOutcome, Authenticator};
use crate::config::Config;
use crate::events::EventSender;
use crate::metrics::Metrics;
use crate::sequencer::{AckSequencer, RouterAck};

/// Publishes enter the router at QoS 0; their real QoS travels in the (MQTT 5) payload format
/// indicator property as `QOS_MARKER_BASE + qos`. v4 clients never see properties: the front
/// strips them before writing.
pub const QOS_MARKER_BASE: u8 = 0xA0;

/// Most QoS 2 publishes from one client awaiting PUBREL; one more closes the connection as a
/// protocol error (a client that never releases would otherwise grow this set).
pub const MAX_INBOUND_QOS2: usize = 1024;

/// Most SUBSCRIBEs of one connection waiting for the router's answer; one more closes the
/// connection as a protocol error (a SUBSCRIBE flood).
pub const MAX_PENDING_SUBSCRIBES: usize = 64;

/// Most topic filters one connection may hold; past it, new filters get SUBACK 0x80.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Most deliveries awaiting acknowledgement that one tracker remembers for `msgack`.
pub const ACK_STORE_CAPACITY: usize = 128;

/// Builds a router link for `(client_id, clean_session)`; blocking (run it off the runtime).
pub type LinkFactory =
    Arc<dyn Fn(&str, bool) -> anyhow::Result<(LinkTx, LinkRx, Notification)> + Send + Sync>;

/// Where the broker is in its life; connections watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutting down: report `server_shutdown`, stop reading, keep delivering.
    Draining,
    /// Close every socket now.
    Closing,
}

/// A request to end a connection because its client id connected again; answered once the
/// old connection's `disconnected` event is queued.
type Kick = oneshot::Sender<()>;

/// The client ids connected now, to detect takeovers.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, (u64, mpsc::Sender<Kick>)>>,
}

impl Registry {
    fn insert(
        &self,
        client_id: &str,
        serial: u64,
        kick: mpsc::Sender<Kick>,
    ) -> Option<mpsc::Sender<Kick>> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(client_id.to_owned(), (serial, kick))
            .map(|(_, k)| k)
    }

    fn remove(&self, client_id: &str, serial: u64) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(client_id).is_some_and(|(s, _)| *s == serial) {
            map.remove(client_id);
        }
    }

    /// How many client ids are connected.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every connection task shares.
pub struct Shared {
    /// The broker's configuration.
    pub config: Arc<Config>,
    /// Builds router links.
    pub link_factory: LinkFactory,
    /// Where events go.
    pub events: EventSender,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connected client ids.
    pub registry: Registry,
    /// Username/password checks.
    pub auth: Authenticator,
    /// The trackers' configuration.
    pub tracker_config: TrackerConfig,
    /// One permit per allowed connection.
    pub permits: Arc<Semaphore>,
    /// The broker's phase.
    pub phase: watch::Receiver<Phase>,
    /// Source of connection serial numbers.
    pub serial: AtomicU64,
    /// Sessions that have not reported their `disconnected` event yet.
    pub unreported: AtomicU64,
}

/// Milliseconds since the Unix epoch, the `ts` of events.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// rumqttd's router refuses client ids containing `+`, `$`, `#` or `/`: the front escapes them
/// (and `%`) so that every valid MQTT client id works. The mapping is one-to-one.
fn router_client_id(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len());
    for c in client_id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            '$' => out.push_str("%24"),
            '#' => out.push_str("%23"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

fn reason_for(error: &DecodeError) -> DisconnectReason {
    match error {
        DecodeError::PacketTooLarge { .. } => DisconnectReason::PacketTooLarge,
        _ => DisconnectReason::ProtocolError,
    }
}

/// The parts of a CONNECT the connection keeps.
struct ConnectRequest {
    level: u8,
    client_id: String,
    clean_session: bool,
    keep_alive: u16,
    username: Option<String>,
    password: Option<Vec<u8>>,
    will: Option<Will>,
}

#[derive(Clone)]
struct Will {
    topic: Bytes,
    payload: Bytes,
    qos: QoS,
    retain: bool,
}

/// Serves one client connection until it ends.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max = shared.config.max_packet_size;
    let mut rbuf = BytesMut::with_capacity(4096);
    let deadline = Instant::now() + shared.config.connect_timeout();
    let request = match read_connect(&mut stream, &mut rbuf, max, deadline, &shared).await {
        Some(request) => request,
        None => return,
    };
    let Some(session) = accept(&mut stream, request, peer, &shared).await else {
        return;
    };
    session.run(stream, rbuf).await;
}

async fn read_connect<S>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max: usize,
    deadline: Instant,
    shared: &Shared,
) -> Option<ConnectRequest>
where
    S: AsyncRead + Unpin,
{
    loop {
        match codec::decode(rbuf, max) {
            Ok(Some((WirePacket::Connect(c), len))) => {
                let request = ConnectRequest {
                    level: c.protocol_level,
                    client_id: c.client_id.to_owned(),
                    clean_session: c.clean_session,
                    keep_alive: c.keep_alive,
                    username: c.username.map(str::to_owned),
                    password: c.password.map(<[u8]>::to_vec),
                    will: c.will.map(|w| Will {
                        topic: Bytes::copy_from_slice(w.topic.as_bytes()),
                        payload: Bytes::copy_from_slice(w.message),
                        qos: w.qos,
                        retain: w.retain,
                    }),
                };
                bytes::Buf::advance(rbuf, len);
                shared.metrics.packets_in.fetch_add(1, Ordering::Relaxed);
                return Some(request);
            }
            Ok(Some((other, _))) => {
                debug!(packet = ?packet_name(&other), "first packet is not CONNECT: closing");
                shared
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "malformed CONNECT: closing");
                shared
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        match timeout_at(deadline, stream.read_buf(rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => {
                shared
                    .metrics
                    .bytes_in
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                debug!("no CONNECT within the connect timeout: closing");
                shared
                    .metrics
                    .connect_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}

fn packet_name(packet: &WirePacket<'_>) -> &'static str {
    match packet {
        WirePacket::Connect(_) => "CONNECT",
        WirePacket::ConnAck(_) => "CONNACK",
        WirePacket::Publish(_) => "PUBLISH",
        WirePacket::PubAck(_) => "PUBACK",
        WirePacket::PubRec(_) => "PUBREC",
        WirePacket::PubRel(_) => "PUBREL",
        WirePacket::PubComp(_) => "PUBCOMP",
        WirePacket::Subscribe(_) => "SUBSCRIBE",
        WirePacket::SubAck(_) => "SUBACK",
        WirePacket::Unsubscribe(_) => "UNSUBSCRIBE",
        WirePacket::UnsubAck(_) => "UNSUBACK",
        WirePacket::PingReq => "PINGREQ",
        WirePacket::PingResp => "PINGRESP",
        WirePacket::Disconnect => "DISCONNECT",
    }
}

async fn refuse<S>(stream: &mut S, code: ConnectReturnCode, why: &str, shared: &Shared)
where
    S: AsyncWrite + Unpin,
{
    info!(code = code.as_u8(), why, "CONNECT refused");
    shared.metrics.connect_refused(code.as_u8());
    let mut buf = [0u8; 4];
    let packet = WirePacket::ConnAck(ConnAck {
        session_present: false,
        code,
    });
    if let Ok(n) = packet.encode(&mut buf) {
        let _ = stream.write_all(&buf[..n]).await;
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
}

/// Applies every CONNECT rule, takes over an older session, builds the router link and sends
/// CONNACK. `None` when the connection was refused (and closed).
async fn accept<S>(
    stream: &mut S,
    mut request: ConnectRequest,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if request.level != codec::PROTOCOL_LEVEL {
        refuse(
            stream,
            ConnectReturnCode::UnacceptableProtocolVersion,
            "protocol level is not 4 (MQTT 3.1.1)",
            shared,
        )
        .await;
        return None;
    }
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    if request.client_id.is_empty() && request.clean_session {
        request.client_id = format!("auto-{serial:016x}");
    }
    if let Err(e) =
        activity_core::client_id::check_client_id(&request.client_id, request.clean_session)
    {
        refuse(
            stream,
            ConnectReturnCode::IdentifierRejected,
            &e.to_string(),
            shared,
        )
        .await;
        return None;
    }
    let topics = &shared.tracker_config.topics;
    if let Some(will) = &request.will {
        let topic = std::str::from_utf8(&will.topic).unwrap_or_default();
        if !topics.may_publish(&request.client_id, topic) {
            refuse(
                stream,
                ConnectReturnCode::NotAuthorized,
                "last will on a system topic",
                shared,
            )
            .await;
            return None;
        }
    }
    match shared
        .auth
        .check(request.username.as_deref(), request.password.as_deref())
        .await
    {
        AuthOutcome::Allowed => {}
        AuthOutcome::BadCredentials => {
            refuse(
                stream,
                ConnectReturnCode::BadUserNameOrPassword,
                "bad credentials",
                shared,
            )
            .await;
            return None;
        }
        AuthOutcome::NotAuthorized => {
            refuse(
                stream,
                ConnectReturnCode::NotAuthorized,
                "not authorized",
                shared,
            )
            .await;
            return None;
        }
    }
    if *shared.phase.borrow() != Phase::Running {
        refuse(
            stream,
            ConnectReturnCode::ServerUnavailable,
            "shutting down",
            shared,
        )
        .await;
        return None;
    }
    let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
        refuse(
            stream,
            ConnectReturnCode::ServerUnavailable,
            "max_connections reached",
            shared,
        )
        .await;
        return None;
    };

    // Takeover: the old connection reports `takenover` before this one reports `connected`.
    let (kick_tx, kick_rx) = mpsc::channel::<Kick>(1);
    if let Some(old) = shared.registry.insert(&request.client_id, serial, kick_tx) {
        let (done_tx, done_rx) = oneshot::channel();
        if old.send(done_tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
        }
    }

    let factory = shared.link_factory.clone();
    let router_id = router_client_id(&request.client_id);
    let clean = request.clean_session;
    let built = tokio::task::spawn_blocking(move || factory(&router_id, clean)).await;
    let (link_tx, link_rx, connack) = match built {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => {
            warn!(error = %e, "router refused the link");
            shared.registry.remove(&request.client_id, serial);
            refuse(
                stream,
                ConnectReturnCode::ServerUnavailable,
                "router refused",
                shared,
            )
            .await;
            return None;
        }
        Err(e) => {
            warn!(error = %e, "link builder failed");
            shared.registry.remove(&request.client_id, serial);
            refuse(
                stream,
                ConnectReturnCode::ServerUnavailable,
                "router failed",
                shared,
            )
            .await;
            return None;
        }
    };
    let session_present = matches!(
        Option::<Packet>::from(connack),
        Some(Packet::ConnAck(ack, _)) if ack.session_present
    );
    let mut buf = [0u8; 4];
    let ok = WirePacket::ConnAck(ConnAck {
        session_present,
        code: ConnectReturnCode::Accepted,
    });
    let written = match ok.encode(&mut buf) {
        Ok(n) => stream.write_all(&buf[..n]).await.is_ok() && stream.flush().await.is_ok(),
        Err(_) => false,
    };
    shared.metrics.packets_out.fetch_add(1, Ordering::Relaxed);

    let mut tracker = Tracker::new(
        shared.tracker_config.clone(),
        HeapAckStore::new(ACK_STORE_CAPACITY),
    );
    let peer_text = peer.to_string();
    let now = now_ms();
    let info = ConnectInfo {
        client_id: &request.client_id,
        username: request.username.as_deref(),
        proto_ver: request.level,
        keepalive: request.keep_alive,
        clean_session: request.clean_session,
        peer: Some(&peer_text),
    };
    match tracker.handle_connect(now, info) {
        Ok(Some(event)) => shared.events.emit(&event),
        Ok(None) => {}
        Err(ConnectError::Refused(e)) => {
            // check_client_id ran above with the same input; kept as a guard.
            warn!(error = %e, "tracker refused a checked client id");
        }
        Err(e) => warn!(error = %e, "tracker refused connect"),
    }
    shared
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .connections_current
        .fetch_add(1, Ordering::Relaxed);
    let may_subscribe_system = shared.config.access.may_subscribe_system(
        request.username.as_deref(),
        &request.client_id,
        peer.ip(),
    );
    let mut session = Session {
        shared: shared.clone(),
        client_id: request.client_id,
        serial,
        keep_alive: request.keep_alive,
        will: request.will,
        may_subscribe_system,
        tracker,
        link_tx,
        link_rx,
        kick_rx,
        _permit: permit,
        sequencer: AckSequencer::new(),
        inbound_qos2: HashSet::new(),
        subscriptions: HashMap::new(),
        pending_subscribes: VecDeque::new(),
        router_batch: Vec::new(),
        router_acks: Vec::new(),
        out: BytesMut::with_capacity(4096),
    };
    if !written {
        session.finish(DisconnectReason::TcpClosed, None).await;
        return None;
    }
    Some(session)
}

struct PendingSubscribe {
    pkid: u16,
    /// Per filter of the SUBSCRIBE: `None` when the front denied it, else the filter and the
    /// QoS requested, to be granted by the router.
    filters: Vec<Option<(String, QoS)>>,
}

/// How a connection ends.
struct Exit {
    reason: DisconnectReason,
    kick: Option<Kick>,
}

impl Exit {
    fn new(reason: DisconnectReason) -> Self {
        Exit { reason, kick: None }
    }
}

struct Session {
    shared: Arc<Shared>,
    client_id: String,
    serial: u64,
    keep_alive: u16,
    will: Option<Will>,
    may_subscribe_system: bool,
    tracker: Tracker<HeapAckStore>,
    link_tx: LinkTx,
    link_rx: LinkRx,
    kick_rx: mpsc::Receiver<Kick>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    sequencer: AckSequencer,
    inbound_qos2: HashSet<u16>,
    subscriptions: HashMap<String, QoS>,
    pending_subscribes: VecDeque<PendingSubscribe>,
    router_batch: Vec<Packet>,
    router_acks: Vec<RouterAck>,
    out: BytesMut,
}

impl Session {
    fn keepalive_deadline(&self) -> Option<Instant> {
        (self.keep_alive > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    async fn run<S>(mut self, mut stream: S, mut rbuf: BytesMut)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut phase = self.shared.phase.clone();
        let mut deadline = self.keepalive_deadline();
        // Bytes that arrived together with the CONNECT.
        let mut exit = self.handle_input(&mut rbuf);
        if exit.is_none() {
            exit = self.flush(&mut stream).await.err();
        }
        let exit = match exit {
            Some(exit) => exit,
            None => loop {
                let keepalive = async {
                    match deadline {
                        Some(d) => sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let step = tokio::select! {
                    read = stream.read_buf(&mut rbuf) => match read {
                        Ok(0) | Err(_) => Err(Exit::new(DisconnectReason::TcpClosed)),
                        Ok(n) => {
                            self.shared.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                            deadline = self.keepalive_deadline();
                            match self.handle_input(&mut rbuf) {
                                Some(exit) => Err(exit),
                                None => Ok(()),
                            }
                        }
                    },
                    notification = self.link_rx.next() => match notification {
                        Ok(first) => self.handle_notifications(first).await,
                        Err(e) => {
                            warn!(client_id = %self.client_id, error = %e, "router dropped the link");
                            Err(Exit::new(DisconnectReason::ProtocolError))
                        }
                    },
                    () = keepalive => {
                        self.shared.metrics.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
                        Err(Exit::new(DisconnectReason::KeepaliveTimeout))
                    }
                    kick = self.kick_rx.recv() => Err(Exit {
                        reason: DisconnectReason::Takenover,
                        kick,
                    }),
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() != Phase::Running {
                            Err(Exit::new(DisconnectReason::ServerShutdown))
                        } else {
                            Ok(())
                        }
                    }
                };
                let step = match step {
                    Ok(()) => self.flush(&mut stream).await,
                    Err(exit) => {
                        // Send what is already encoded (e.g. the PUBACK before a DISCONNECT).
                        let _ = self.flush(&mut stream).await;
                        Err(exit)
                    }
                };
                if let Err(exit) = step {
                    break exit;
                }
            },
        };
        if exit.reason == DisconnectReason::ServerShutdown {
            self.drain(&mut stream, phase).await;
        }
        self.finish(exit.reason, exit.kick).await;
        let _ = stream.shutdown().await;
    }

    /// Shutdown: report `server_shutdown` now, keep delivering (the events of everybody's
    /// shutdown among them) until the broker closes every socket.
    async fn drain<S>(&mut self, stream: &mut S, mut phase: watch::Receiver<Phase>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.report_close(DisconnectReason::ServerShutdown);
        loop {
            if *phase.borrow() == Phase::Closing {
                return;
            }
            let step = tokio::select! {
                notification = self.link_rx.next() => match notification {
                    Ok(first) => self.handle_notifications(first).await,
                    Err(_) => return,
                },
                changed = phase.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Ok(())
                }
            };
            if step.is_err() || self.flush(stream).await.is_err() {
                return;
            }
        }
    }

    /// Reports the end, publishes the will when due, and tells the router.
    async fn finish(&mut self, reason: DisconnectReason, kick: Option<Kick>) {
        let will = match reason {
            DisconnectReason::Normal | DisconnectReason::ServerShutdown => None,
            _ => self.will.take(),
        };
        if let Some(will) = will {
            let properties = PublishProperties {
                payload_format_indicator: Some(QOS_MARKER_BASE + will.qos.as_u8()),
                ..PublishProperties::default()
            };
            let publish = Publish::new(will.topic, will.payload, will.retain);
            self.router_batch
                .push(Packet::Publish(publish, Some(properties)));
        }
        self.report_close(reason);
        info!(client_id = %self.client_id, reason = reason.as_str(), "client disconnected");
        // DISCONNECT makes the router drop the connection and keep a persistent session.
        self.router_batch.push(Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ));
        let _ = self.send_to_router().await;
        self.shared.registry.remove(&self.client_id, self.serial);
        self.shared
            .metrics
            .connections_current
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(kick) = kick {
            let _ = kick.send(());
        }
    }

    /// Queues the `disconnected` event, once per session.
    fn report_close(&mut self, reason: DisconnectReason) {
        if !self.tracker.is_connected() {
            return;
        }
        if let Some(event) = self.tracker.handle_close(now_ms(), reason) {
            self.shared.events.emit(&event);
        }
        self.shared.unreported.fetch_sub(1, Ordering::AcqRel);
    }

    async fn send_to_router(&mut self) -> Result<(), Exit> {
        for ack in self.router_acks.drain(..) {
            self.router_batch.push(match ack {
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
        let Some(last) = self.router_batch.pop() else {
            return Ok(());
        };
        self.link_tx.buffer().extend(self.router_batch.drain(..));
        self.link_tx.send(last).await.map(|_| ()).map_err(|e| {
            warn!(client_id = %self.client_id, error = %e, "router link failed");
            Exit::new(DisconnectReason::ProtocolError)
        })
    }

    /// Sends the router what the input produced, then the client what is encoded.
    async fn flush<S>(&mut self, stream: &mut S) -> Result<(), Exit>
    where
        S: AsyncWrite + Unpin,
    {
        self.send_to_router().await?;
        if !self.out.is_empty() {
            let n = self.out.len();
            let result = async {
                stream.write_all(&self.out).await?;
                stream.flush().await
            }
            .await;
            self.out.clear();
            if result.is_err() {
                return Err(Exit::new(DisconnectReason::TcpClosed));
            }
            self.shared
                .metrics
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write(&mut self, packet: &WirePacket<'_>) {
        let len = match packet.encoded_len() {
            Ok(len) => len,
            Err(e) => {
                warn!(error = %e, "cannot encode a packet for the client");
                return;
            }
        };
        let start = self.out.len();
        self.out.resize(start + len, 0);
        match packet.encode(&mut self.out[start..]) {
            Ok(n) => {
                self.out.truncate(start + n);
                self.shared
                    .metrics
                    .packets_out
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.out.truncate(start);
                warn!(error = %e, "cannot encode a packet for the client");
            }
        }
    }

    /// Decodes every complete packet in `rbuf` and handles it.
    fn handle_input(&mut self, rbuf: &mut BytesMut) -> Option<Exit> {
        let max = self.shared.config.max_packet_size;
        loop {
            let header = match codec::fixed_header(rbuf) {
                Ok(Some(header)) => header,
                Ok(None) => return None,
                Err(e) => return Some(self.protocol_error(&e)),
            };
            let len = header.packet_len();
            if len > max {
                return Some(self.protocol_error(&DecodeError::PacketTooLarge { size: len, max }));
            }
            if rbuf.len() < len {
                rbuf.reserve(len - rbuf.len());
                return None;
            }
            let frame = rbuf.split_to(len).freeze();
            self.shared
                .metrics
                .packets_in
                .fetch_add(1, Ordering::Relaxed);
            let packet = match codec::decode(&frame, max) {
                Ok(Some((packet, _))) => packet,
                Ok(None) => {
                    return Some(self.protocol_error(&DecodeError::Truncated));
                }
                Err(e) => return Some(self.protocol_error(&e)),
            };
            if let Some(exit) = self.handle_packet(packet, &frame) {
                return Some(exit);
            }
        }
    }

    fn protocol_error(&self, error: &DecodeError) -> Exit {
        debug!(client_id = %self.client_id, error = %error, "protocol error: closing");
        self.shared
            .metrics
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        Exit::new(reason_for(error))
    }

    fn violation(&self, what: &str) -> Exit {
        debug!(client_id = %self.client_id, what, "protocol violation: closing");
        self.shared
            .metrics
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        Exit::new(DisconnectReason::ProtocolError)
    }

    fn handle_packet(&mut self, packet: WirePacket<'_>, frame: &Bytes) -> Option<Exit> {
        let now = now_ms();
        match packet {
            WirePacket::Publish(publish) => return self.handle_publish(now, publish, frame),
            WirePacket::PubAck(pkid) => self.handle_ack(now, pkid, QoS::AtLeastOnce),
            WirePacket::PubRec(pkid) => self.handle_ack(now, pkid, QoS::ExactlyOnce),
            WirePacket::PubRel(pkid) => {
                self.inbound_qos2.remove(&pkid);
                self.write(&WirePacket::PubComp(pkid));
            }
            WirePacket::PubComp(pkid) => {
                if self
                    .sequencer
                    .on_client_pubcomp(pkid, &mut self.router_acks)
                    .is_err()
                {
                    self.shared
                        .metrics
                        .acks_unmatched
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            WirePacket::Subscribe(subscribe) => {
                let filters: Vec<(&str, QoS)> = subscribe.filters.iter().collect();
                return self.handle_subscribe(subscribe.pkid, &filters);
            }
            WirePacket::Unsubscribe(unsubscribe) => {
                let filters: Vec<&str> = unsubscribe.filters.iter().collect();
                self.handle_unsubscribe(now, unsubscribe.pkid, &filters);
            }
            WirePacket::PingReq => self.write(&WirePacket::PingResp),
            WirePacket::Disconnect => return Some(Exit::new(DisconnectReason::Normal)),
            WirePacket::Connect(_) => return Some(self.violation("second CONNECT")),
            WirePacket::ConnAck(_)
            | WirePacket::SubAck(_)
            | WirePacket::UnsubAck(_)
            | WirePacket::PingResp => {
                return Some(self.violation("server-only packet from a client"));
            }
        }
        None
    }

    fn handle_publish(
        &mut self,
        now: u64,
        publish: WirePublish<'_>,
        frame: &Bytes,
    ) -> Option<Exit> {
        let pkid = publish.pkid.unwrap_or(0);
        let duplicate = publish.qos == QoS::ExactlyOnce && self.inbound_qos2.contains(&pkid);
        if !duplicate {
            let info = PublishInfo {
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
            };
            match self.tracker.handle_publish(now, info) {
                PublishOutcome::Denied => {
                    self.shared
                        .metrics
                        .publishes_denied
                        .fetch_add(1, Ordering::Relaxed);
                }
                PublishOutcome::Accepted(event) => {
                    if let Some(event) = event {
                        self.shared.events.emit(&event);
                    }
                    let mut properties = PublishProperties {
                        payload_format_indicator: Some(QOS_MARKER_BASE + publish.qos.as_u8()),
                        ..PublishProperties::default()
                    };
                    if activity_core::envelope::parse_envelope(publish.payload).is_some() {
                        // The router does not say who published a delivery: the publisher of an
                        // envelope message rides along for `msgack`.
                        properties
                            .user_properties
                            .push((PUBLISHER_PROPERTY.to_owned(), self.client_id.clone()));
                    }
                    let routed = Publish::new(
                        frame.slice_ref(publish.topic.as_bytes()),
                        frame.slice_ref(publish.payload),
                        publish.retain,
                    );
                    self.router_batch
                        .push(Packet::Publish(routed, Some(properties)));
                }
            }
        }
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.write(&WirePacket::PubAck(pkid)),
            QoS::ExactlyOnce => {
                if !duplicate {
                    if self.inbound_qos2.len() >= MAX_INBOUND_QOS2 {
                        return Some(self.violation("too many QoS 2 publishes without PUBREL"));
                    }
                    self.inbound_qos2.insert(pkid);
                }
                self.write(&WirePacket::PubRec(pkid));
            }
        }
        None
    }

    fn handle_ack(&mut self, now: u64, pkid: u16, qos: QoS) {
        if self
            .sequencer
            .on_client_ack(pkid, qos, &mut self.router_acks)
            .is_err()
        {
            self.shared
                .metrics
                .acks_unmatched
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = match qos {
            QoS::ExactlyOnce => self.tracker.handle_pubrec(now, pkid),
            _ => self.tracker.handle_puback(now, pkid),
        };
        if let Some(event) = event {
            self.shared.events.emit(&event);
        }
    }

    fn handle_subscribe(&mut self, pkid: u16, filters: &[(&str, QoS)]) -> Option<Exit> {
        let topics = &self.shared.tracker_config.topics;
        let mut decided = Vec::with_capacity(filters.len());
        let mut routed = Vec::new();
        for (filter, qos) in filters {
            let denied_system = topics.filter_receives_events(filter) && !self.may_subscribe_system;
            let over_limit = !self.subscriptions.contains_key(*filter)
                && self.subscriptions.len() + routed.len() >= MAX_SUBSCRIPTIONS;
            if denied_system || over_limit {
                self.shared
                    .metrics
                    .subscriptions_denied
                    .fetch_add(1, Ordering::Relaxed);
                debug!(client_id = %self.client_id, filter, denied_system, over_limit, "subscription refused");
                decided.push(None);
            } else {
                decided.push(Some(((*filter).to_owned(), *qos)));
                routed.push(Filter {
                    path: (*filter).to_owned(),
                    qos: rumqttd_qos(*qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                });
            }
        }
        if routed.is_empty() {
            // Nothing for the router: answer at once.
            let codes: Vec<SubAckCode> = decided.iter().map(|_| SubAckCode::Failure).collect();
            self.write(&WirePacket::SubAck(SubAck {
                pkid,
                codes: SubAckCodes::from_slice(&codes),
            }));
            return None;
        }
        if self.pending_subscribes.len() >= MAX_PENDING_SUBSCRIBES {
            return Some(self.violation("too many SUBSCRIBEs awaiting SUBACK"));
        }
        self.pending_subscribes.push_back(PendingSubscribe {
            pkid,
            filters: decided,
        });
        self.router_batch.push(Packet::Subscribe(
            Subscribe {
                pkid,
                filters: routed,
            },
            None,
        ));
        None
    }

    /// The router answered a SUBSCRIBE: merge its codes with the front's refusals.
    fn handle_router_suback(&mut self, pkid: u16, router_codes: &[SubscribeReasonCode]) {
        let Some(i) = self.pending_subscribes.iter().position(|p| p.pkid == pkid) else {
            debug!(pkid, "SUBACK from the router for no pending SUBSCRIBE");
            return;
        };
        let Some(pending) = self.pending_subscribes.remove(i) else {
            return;
        };
        let now = now_ms();
        let mut router_codes = router_codes.iter();
        let mut codes = Vec::with_capacity(pending.filters.len());
        for filter in &pending.filters {
            let granted = match filter {
                None => None,
                Some((path, requested)) => {
                    let granted = match router_codes.next() {
                        Some(SubscribeReasonCode::Success(q)) => Some(core_qos(q)),
                        Some(SubscribeReasonCode::QoS0) => Some(QoS::AtMostOnce),
                        Some(SubscribeReasonCode::QoS1) => Some(QoS::AtLeastOnce),
                        Some(SubscribeReasonCode::QoS2) => Some(QoS::ExactlyOnce),
                        _ => None,
                    }
                    .map(|q| q.min(*requested));
                    if let Some(q) = granted {
                        self.subscriptions.insert(path.clone(), q);
                    }
                    if let Some(event) = self.tracker.handle_subscribe(now, path, granted) {
                        self.shared.events.emit(&event);
                    }
                    granted
                }
            };
            codes.push(granted.map_or(SubAckCode::Failure, SubAckCode::Success));
        }
        self.write(&WirePacket::SubAck(SubAck {
            pkid,
            codes: SubAckCodes::from_slice(&codes),
        }));
    }

    fn handle_unsubscribe(&mut self, now: u64, pkid: u16, filters: &[&str]) {
        let mut routed = Vec::new();
        for filter in filters {
            if self.subscriptions.remove(*filter).is_some() {
                routed.push((*filter).to_owned());
                if let Some(event) = self.tracker.handle_unsubscribe(now, filter) {
                    self.shared.events.emit(&event);
                }
            }
        }
        if !routed.is_empty() {
            self.router_batch.push(Packet::Unsubscribe(
                Unsubscribe {
                    pkid,
                    filters: routed,
                },
                None,
            ));
        }
        // The router answers nothing for a filter never subscribed: the front always answers.
        self.write(&WirePacket::UnsubAck(pkid));
    }

    /// Handles `first` and every notification already queued behind it.
    async fn handle_notifications(&mut self, first: Option<Notification>) -> Result<(), Exit> {
        let mut next = first;
        let mut budget = 1024;
        let mut wake = false;
        while let Some(notification) = next {
            if matches!(notification, Notification::Unschedule) {
                // The router paused this connection until we ask for more.
                wake = true;
            } else {
                self.handle_notification(notification);
            }
            budget -= 1;
            if budget == 0 {
                break;
            }
            next = match futures_util::FutureExt::now_or_never(self.link_rx.next()) {
                Some(Ok(n)) => n,
                Some(Err(_)) => return Err(Exit::new(DisconnectReason::ProtocolError)),
                None => None,
            };
        }
        if wake && self.link_rx.wake().await.is_err() {
            return Err(Exit::new(DisconnectReason::ProtocolError));
        }
        Ok(())
    }

    fn handle_notification(&mut self, notification: Notification) {
        let Some(packet) = Option::<Packet>::from(notification) else {
            return;
        };
        match packet {
            Packet::Publish(publish, properties) => self.deliver(publish, properties),
            Packet::SubAck(suback, _) => {
                self.handle_router_suback(suback.pkid, &suback.return_codes)
            }
            Packet::PubRel(pubrel, _) => {
                if self.sequencer.on_router_pubrel(pubrel.pkid) {
                    self.write(&WirePacket::PubRel(pubrel.pkid));
                }
            }
            // UNSUBACK: the front already answered. PUBACK/PUBREC/PUBCOMP: every publish enters
            // the router at QoS 0, so none are due; PINGRESP: the front answers PINGREQ.
            Packet::UnsubAck(..)
            | Packet::PubAck(..)
            | Packet::PubRec(..)
            | Packet::PubComp(..)
            | Packet::PingResp(..) => {}
            Packet::Disconnect(..) => {
                debug!(client_id = %self.client_id, "router asked to disconnect");
            }
            other => debug!(?other, "unexpected packet from the router"),
        }
    }

    /// One delivery from the router: at `min(publish QoS, subscription QoS)` to the client.
    fn deliver(&mut self, publish: Publish, properties: Option<PublishProperties>) {
        let marker = properties
            .as_ref()
            .and_then(|p| p.payload_format_indicator)
            .and_then(|m| m.checked_sub(QOS_MARKER_BASE))
            .and_then(QoS::from_u8);
        let publisher = properties.as_ref().and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == PUBLISHER_PROPERTY)
                .map(|(_, v)| v.clone())
        });
        let topic = publish.topic.clone();
        let payload = publish.payload.clone();
        let retain = publish.retain;
        // rumqttd keeps QoS and packet id private: encode with its codec, read them back.
        let mut scratch = BytesMut::with_capacity(publish.topic.len() + publish.payload.len() + 8);
        use rumqttd::protocol::Protocol;
        if let Err(e) =
            rumqttd::protocol::v4::V4.write(Packet::Publish(publish, None), &mut scratch)
        {
            warn!(error = ?e, "cannot encode a delivery");
            return;
        }
        let (router_qos, pkid, dup) = match codec::decode(&scratch, usize::MAX) {
            Ok(Some((WirePacket::Publish(p), _))) => (p.qos, p.pkid.unwrap_or(0), p.dup),
            other => {
                warn!(?other, "router delivery does not decode");
                return;
            }
        };
        let Ok(topic) = std::str::from_utf8(&topic) else {
            return;
        };
        let client_qos = marker.map_or(router_qos, |m| m.min(router_qos));
        self.sequencer
            .on_delivery(pkid, router_qos, client_qos, &mut self.router_acks);
        self.write(&WirePacket::Publish(WirePublish {
            dup: dup && client_qos != QoS::AtMostOnce,
            qos: client_qos,
            retain,
            topic,
            pkid: (client_qos != QoS::AtMostOnce).then_some(pkid),
            payload: &payload,
        }));
        let delivery = DeliveryInfo {
            pkid,
            qos: client_qos,
            topic,
            payload: &payload,
            pub_client_id: publisher.as_deref(),
        };
        let before = self.tracker.stats();
        self.tracker.handle_delivery(delivery, |_| None);
        let after = self.tracker.stats();
        let evicted = after.deliveries_evicted - before.deliveries_evicted
            + (after.deliveries_too_large - before.deliveries_too_large);
        if evicted > 0 {
            self.shared
                .metrics
                .deliveries_evicted
                .fetch_add(evicted, Ordering::Relaxed);
        }
    }
}

/// The user property that carries the publisher of an envelope message through the router.
pub const PUBLISHER_PROPERTY: &str = "activity-publisher";

fn rumqttd_qos(qos: QoS) -> rumqttd::protocol::QoS {
    match qos {
        QoS::AtMostOnce => rumqttd::protocol::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttd::protocol::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttd::protocol::QoS::ExactlyOnce,
    }
}

fn core_qos(qos: &rumqttd::protocol::QoS) -> QoS {
    match qos {
        rumqttd::protocol::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttd::protocol::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttd::protocol::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ids_are_escaped_one_to_one() {
        assert_eq!(router_client_id("plain-id_1"), "plain-id_1");
        assert_eq!(router_client_id("a/b+c#d$e%f"), "a%2Fb%2Bc%23d%24e%25f");
        // `%` is escaped too, so an id that looks escaped cannot collide with a real one.
        assert_ne!(router_client_id("a%2Fb"), router_client_id("a/b"));
    }
}
