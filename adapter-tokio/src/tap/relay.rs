//! One relayed client connection: the CONNECT phase, then two directions of byte-for-byte
//! relaying, each decoded with the core's codec to feed the connection's tracker.
//!
//! Rules, each answered by the tap itself and never forwarded:
//!
//! - CONNECT (section 3.1): the rules of embedded mode (protocol level 4, the client-id rule and
//!   the reserved id `broker`, here also `broker/<node>`, the ids of the taps' publishers; no
//!   last will on a system topic, credentials, connection limit), refused with their CONNACK
//!   return code. An unreachable upstream broker gives CONNACK 3
//!   (server unavailable): the tap never sends CONNACK 0 itself, it forwards the upstream's.
//! - PUBLISH on a system topic (section 3.3): the connection is closed (`not_authorized`).
//! - SUBSCRIBE (section 3.8) with a filter that receives events, from a client not allowed to
//!   read them: the whole SUBSCRIBE is refused with SUBACK 0x80 for every filter (a SUBACK
//!   has one code per filter in order, so refusing the whole packet keeps the upstream's packet
//!   ids and codes untouched; the client may subscribe to its other filters again).
//!
//! Disconnect reasons: `normal` (client DISCONNECT), `tcp_closed` (client socket), keep-alive
//! expiry seen by the tap (`keepalive_timeout`), `upstream_closed`, `takenover` (the same client
//! id connected again through this tap), `server_shutdown` (this tap stops), and
//! `protocol_error` / `packet_too_large` for bad client bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use activity_core::QoS;
use activity_core::client_id::CLIENT_ID_CAPACITY;
use activity_core::codec::{
    self, ConnectReturnCode, DecodeError, Packet as WirePacket, SubAck, SubAckCode, SubAckCodes,
};
use activity_core::envelope::parse_envelope;
use activity_core::event::DisconnectReason;
use activity_core::tracker::{ConnectInfo, DeliveryInfo, PublishInfo, PublishOutcome, Tracker};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info, warn};

use super::upstream::UpstreamStream;
use super::{Entry, Kick, TapShared};
use crate::ack_store::HeapAckStore;
use crate::connection::{
    ConnectRules, MAX_PENDING_SUBSCRIBES, Phase, WRITE_STALL_LIMIT, apply_connect_rules, now_ms,
    read_connect, refuse,
};

/// What the two directions of one connection share: the tracker and the SUBSCRIBEs and
/// UNSUBSCRIBEs waiting for the upstream's answer (their filters give the events).
struct State {
    tracker: Tracker<HeapAckStore>,
    subscribes: HashMap<u16, Vec<(String, QoS)>>,
    unsubscribes: HashMap<u16, Vec<String>>,
}

/// What a relay needs besides its sockets.
struct Ctx<'a> {
    shared: &'a TapShared,
    client_id: &'a str,
    may_subscribe_system: bool,
    state: Mutex<State>,
}

impl Ctx<'_> {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a SUBSCRIBE's or UNSUBSCRIBE's filters (`what`) until the upstream acknowledges
    /// packet `pkid`; ends the relay when [`MAX_PENDING_SUBSCRIBES`] already wait.
    fn await_ack<T>(
        &self,
        pending: &mut HashMap<u16, T>,
        pkid: u16,
        filters: T,
        what: &str,
    ) -> Verdict {
        if pending.len() >= MAX_PENDING_SUBSCRIBES {
            warn!(
                client_id = self.client_id,
                "too many {what}s awaiting acknowledgement: closing"
            );
            return Verdict::End(DisconnectReason::ProtocolError);
        }
        pending.insert(pkid, filters);
        Verdict::Forward
    }
}

/// Serves one client connection through the upstream broker until it ends.
pub(super) async fn serve<S>(mut client: S, peer: SocketAddr, shared: Arc<TapShared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max = shared.config.max_packet_size;
    let mut cbuf = BytesMut::with_capacity(4096);
    let deadline = Instant::now() + shared.config.connect_timeout();
    let Some((mut request, raw_connect)) =
        read_connect(&mut client, &mut cbuf, max, deadline, &shared.metrics).await
    else {
        return;
    };
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    let rules = ConnectRules {
        topics: &shared.tracker_config.topics,
        auth: &shared.auth,
        phase: &shared.phase,
        permits: &shared.permits,
        metrics: &shared.metrics,
    };
    let Some(permit) = apply_connect_rules(&mut client, &mut request, serial, &rules).await else {
        return;
    };
    if super::publisher::is_reserved(&request.client_id) {
        refuse(
            &mut client,
            ConnectReturnCode::IdentifierRejected,
            "client id reserved for the taps' event publishers",
            &shared.metrics,
        )
        .await;
        return;
    }

    // The upstream connection, and its answer to the client's own CONNECT bytes.
    let superseded = shared.registry.supersede(&request.client_id);
    let upstream = connect_upstream(&shared, &raw_connect, deadline).await;
    let (mut upstream, raw_connack, code, mut ubuf) = match upstream {
        Ok(answer) => answer,
        Err(why) => {
            if let Some(flag) = superseded {
                flag.store(false, Ordering::Release);
            }
            shared
                .metrics
                .upstream_unreachable
                .fetch_add(1, Ordering::Relaxed);
            warn!(upstream = %shared.upstream.address, client_id = %request.client_id, why = %format!("{why:#}"), "upstream broker unreachable: CONNECT refused");
            refuse(
                &mut client,
                ConnectReturnCode::ServerUnavailable,
                "upstream broker unreachable",
                &shared.metrics,
            )
            .await;
            return;
        }
    };
    if code != ConnectReturnCode::Accepted {
        if let Some(flag) = superseded {
            flag.store(false, Ordering::Release);
        }
        info!(code = code.as_u8(), client_id = %request.client_id, "upstream refused CONNECT");
        shared.metrics.connect_refused(code.as_u8());
        let _ = client.write_all(&raw_connack).await;
        let _ = client.shutdown().await;
        return;
    }

    // Takeover within this tap: the old connection reports `takenover` before this one
    // reports `connected`.
    let (kick_tx, mut kick_rx) = mpsc::channel::<Kick>(1);
    let my_flag = Arc::new(AtomicBool::new(false));
    let entry = Entry {
        serial,
        superseded: my_flag.clone(),
        kick: kick_tx,
    };
    if let Some(old) = shared.registry.insert(&request.client_id, entry) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if old.send(done_tx).await.is_ok() {
            let _ = timeout(Duration::from_secs(5), done_rx).await;
        }
    }

    let mut tracker = Tracker::new(
        shared.tracker_config.clone(),
        HeapAckStore::new(super::TAP_ACK_STORE_CAPACITY),
    );
    let peer_text = peer.to_string();
    let info = ConnectInfo {
        client_id: &request.client_id,
        username: request.username.as_deref(),
        proto_ver: request.level,
        keepalive: request.keep_alive,
        clean_session: request.clean_session,
        peer: Some(&peer_text),
    };
    match tracker.handle_connect(now_ms(), info) {
        Ok(Some(event)) => shared.events.emit(&event),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "tracker refused a checked CONNECT"),
    }
    shared.unreported.fetch_add(1, Ordering::AcqRel);
    shared.metrics.connection_opened();
    let ctx = Ctx {
        shared: &shared,
        client_id: &request.client_id,
        may_subscribe_system: shared.config.access.may_subscribe_system(
            request.username.as_deref(),
            &request.client_id,
            peer.ip(),
        ),
        state: Mutex::new(State {
            tracker,
            subscribes: HashMap::new(),
            unsubscribes: HashMap::new(),
        }),
    };

    let mut kicked = None;
    let reason = if client.write_all(&raw_connack).await.is_err() {
        DisconnectReason::TcpClosed
    } else {
        shared.metrics.packets_out.fetch_add(1, Ordering::Relaxed);
        let keep_alive = match request.keep_alive {
            0 => None,
            secs => Some(Duration::from_millis(u64::from(secs) * 1500)),
        };
        let (mut client_rx, mut client_tx) = tokio::io::split(&mut client);
        let (mut upstream_rx, mut upstream_tx) = tokio::io::split(&mut upstream);
        let (replies_tx, mut replies_rx) = mpsc::channel::<Bytes>(MAX_PENDING_SUBSCRIBES);
        let up = client_to_upstream(
            &mut client_rx,
            &mut upstream_tx,
            &mut cbuf,
            keep_alive,
            &replies_tx,
            &ctx,
        );
        let down = upstream_to_client(
            &mut upstream_rx,
            &mut client_tx,
            &mut ubuf,
            &mut replies_rx,
            &my_flag,
            &ctx,
        );
        tokio::pin!(up, down);
        let mut phase = shared.phase.clone();
        loop {
            if *phase.borrow_and_update() != Phase::Running {
                break DisconnectReason::ServerShutdown;
            }
            tokio::select! {
                reason = &mut up => break reason,
                reason = &mut down => break reason,
                Some(kick) = kick_rx.recv() => {
                    kicked = Some(kick);
                    break DisconnectReason::Takenover;
                }
                changed = phase.changed() => {
                    if changed.is_err() {
                        break DisconnectReason::ServerShutdown;
                    }
                }
            }
        }
    };

    // Report first (the permit goes before the event, so that a client reconnecting as soon as
    // it sees the event finds its slot free), then close both sockets.
    shared.registry.remove(&request.client_id, serial);
    drop(permit);
    {
        let mut state = ctx.state();
        if let Some(event) = state.tracker.handle_close(now_ms(), reason) {
            shared.events.emit(&event);
        }
    }
    shared.unreported.fetch_sub(1, Ordering::AcqRel);
    shared.metrics.connection_closed();
    debug!(client_id = %request.client_id, reason = reason.as_str(), "relay ended");
    if let Some(done) = kicked {
        let _ = done.send(());
    }
    let _ = timeout(Duration::from_secs(1), upstream.shutdown()).await;
    let _ = timeout(Duration::from_secs(1), client.shutdown()).await;
}

/// Connects to the upstream broker, writes the client's CONNECT unchanged and reads the answer
/// before `deadline` (or the upstream connect timeout): the stream, the CONNACK's bytes, its
/// return code, and what the upstream sent after it.
async fn connect_upstream(
    shared: &TapShared,
    raw_connect: &[u8],
    deadline: Instant,
) -> anyhow::Result<(UpstreamStream, Bytes, ConnectReturnCode, BytesMut)> {
    let connect_timeout = shared.config.upstream.connect_timeout();
    let mut stream = shared.upstream.connect().await?;
    if stream.write_all(raw_connect).await.is_err() {
        anyhow::bail!("write CONNECT failed");
    }
    let deadline = deadline.max(Instant::now() + connect_timeout);
    let mut ubuf = BytesMut::with_capacity(4096);
    loop {
        match codec::decode(&ubuf, 16) {
            Ok(Some((WirePacket::ConnAck(ack), len))) => {
                let Some(code) = ack.return_code() else {
                    anyhow::bail!("a CONNACK code MQTT 3.1.1 does not define");
                };
                let raw = ubuf.split_to(len).freeze();
                return Ok((stream, raw, code, ubuf));
            }
            Ok(Some(_)) | Err(_) => anyhow::bail!("the answer to CONNECT is not a CONNACK"),
            Ok(None) => {}
        }
        match timeout_at(deadline, stream.read_buf(&mut ubuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => anyhow::bail!("closed before CONNACK"),
            Ok(Ok(_)) => {}
            Err(_) => anyhow::bail!("no CONNACK in time"),
        }
    }
}

fn reason_for(error: &DecodeError) -> DisconnectReason {
    match error {
        DecodeError::PacketTooLarge { .. } => DisconnectReason::PacketTooLarge,
        _ => DisconnectReason::ProtocolError,
    }
}

/// What to do with one packet from the client.
enum Verdict {
    /// Pass it on.
    Forward,
    /// Do not pass it on; answer the client with these bytes.
    Answer(Bytes),
    /// Pass it on, then end the connection with this reason (DISCONNECT).
    ForwardAndEnd(DisconnectReason),
    /// End the connection now, without passing it on.
    End(DisconnectReason),
}

/// Relays client bytes to the upstream broker until the connection ends; gives the reason.
async fn client_to_upstream<R, W>(
    client: &mut R,
    upstream: &mut W,
    buf: &mut BytesMut,
    keep_alive: Option<Duration>,
    replies: &mpsc::Sender<Bytes>,
    ctx: &Ctx<'_>,
) -> DisconnectReason
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let metrics = &ctx.shared.metrics;
    let max = ctx.shared.config.max_packet_size;
    loop {
        // Every complete packet: forwarded runs are written as they are, refused packets cut.
        let mut pos = 0;
        let mut run_start = 0;
        let mut end = None;
        loop {
            let verdict = match codec::decode(&buf[pos..], max) {
                Ok(Some((packet, len))) => {
                    let verdict = ctx.handle_client_packet(&packet);
                    metrics.packets_in.fetch_add(1, Ordering::Relaxed);
                    (verdict, len)
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, client_id = ctx.client_id, "bad packet from client");
                    metrics.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    end = Some(reason_for(&e));
                    break;
                }
            };
            match verdict {
                (Verdict::Forward, len) => pos += len,
                (Verdict::ForwardAndEnd(reason), len) => {
                    pos += len;
                    end = Some(reason);
                    break;
                }
                (Verdict::End(reason), _) => {
                    end = Some(reason);
                    break;
                }
                (Verdict::Answer(answer), len) => {
                    if pos > run_start && upstream.write_all(&buf[run_start..pos]).await.is_err() {
                        return DisconnectReason::UpstreamClosed;
                    }
                    pos += len;
                    run_start = pos;
                    if replies.send(answer).await.is_err() {
                        return DisconnectReason::TcpClosed;
                    }
                }
            }
        }
        if pos > run_start && upstream.write_all(&buf[run_start..pos]).await.is_err() {
            return DisconnectReason::UpstreamClosed;
        }
        buf.advance(pos);
        if let Some(reason) = end {
            let _ = upstream.flush().await;
            return reason;
        }
        let read = match keep_alive {
            Some(limit) => match timeout(limit, client.read_buf(buf)).await {
                Ok(read) => read,
                Err(_) => {
                    metrics.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
                    return DisconnectReason::KeepaliveTimeout;
                }
            },
            None => client.read_buf(buf).await,
        };
        match read {
            Ok(0) | Err(_) => return DisconnectReason::TcpClosed,
            Ok(n) => {
                metrics
                    .bytes_in
                    .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        }
    }
}

/// Relays upstream bytes (and the tap's own answers) to the client until the connection ends.
async fn upstream_to_client<R, W>(
    upstream: &mut R,
    client: &mut W,
    buf: &mut BytesMut,
    replies: &mut mpsc::Receiver<Bytes>,
    superseded: &AtomicBool,
    ctx: &Ctx<'_>,
) -> DisconnectReason
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let metrics = &ctx.shared.metrics;
    let max = ctx.shared.config.max_packet_size;
    let upstream_closed = || {
        if superseded.load(Ordering::Acquire) {
            DisconnectReason::Takenover
        } else {
            DisconnectReason::UpstreamClosed
        }
    };
    loop {
        let mut pos = 0;
        let mut failed = None;
        loop {
            match codec::decode(&buf[pos..], max) {
                Ok(Some((packet, len))) => {
                    ctx.handle_upstream_packet(&packet);
                    metrics.packets_out.fetch_add(1, Ordering::Relaxed);
                    pos += len;
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if pos > 0 {
            let chunk = buf.split_to(pos);
            if !write_to_client(client, &chunk, metrics).await {
                return DisconnectReason::TcpClosed;
            }
        }
        if let Some(e) = failed {
            warn!(error = %e, client_id = ctx.client_id, "bad packet from the upstream broker: closing");
            return match e {
                DecodeError::PacketTooLarge { .. } => DisconnectReason::PacketTooLarge,
                _ => DisconnectReason::UpstreamClosed,
            };
        }
        tokio::select! {
            read = upstream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return upstream_closed(),
                Ok(_) => {}
            },
            Some(answer) = replies.recv() => {
                if !write_to_client(client, &answer, metrics).await {
                    return DisconnectReason::TcpClosed;
                }
            }
        }
    }
}

/// Writes to the client, giving up after [`WRITE_STALL_LIMIT`] (a client that reads nothing).
async fn write_to_client<W: AsyncWrite + Unpin>(
    client: &mut W,
    bytes: &[u8],
    metrics: &crate::metrics::Metrics,
) -> bool {
    match timeout(WRITE_STALL_LIMIT, client.write_all(bytes)).await {
        Ok(Ok(())) => {
            metrics.bytes_out.fetch_add(
                u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            true
        }
        _ => false,
    }
}

impl Ctx<'_> {
    /// Applies the rules to a packet from the client and reports it to the tracker.
    fn handle_client_packet(&self, packet: &WirePacket<'_>) -> Verdict {
        let shared = self.shared;
        let now = now_ms();
        match packet {
            WirePacket::Publish(publish) => {
                let info = PublishInfo {
                    topic: publish.topic,
                    payload: publish.payload,
                    qos: publish.qos,
                    retain: publish.retain,
                };
                let mut state = self.state();
                match state.tracker.handle_publish(now, info) {
                    PublishOutcome::Denied => {
                        shared
                            .metrics
                            .publishes_denied
                            .fetch_add(1, Ordering::Relaxed);
                        info!(
                            client_id = self.client_id,
                            topic = publish.topic,
                            "PUBLISH on a system topic refused: closing"
                        );
                        return Verdict::End(DisconnectReason::NotAuthorized);
                    }
                    PublishOutcome::Accepted(event) => {
                        if let Some(event) = event {
                            shared.events.emit(&event);
                        }
                    }
                }
                drop(state);
                if let Some(envelope) = parse_envelope(publish.payload) {
                    let mut table = shared.publishers.lock().unwrap_or_else(|e| e.into_inner());
                    table.record(&envelope, self.client_id);
                }
                Verdict::Forward
            }
            WirePacket::Subscribe(subscribe) => {
                let topics = &shared.tracker_config.topics;
                let denied = !self.may_subscribe_system
                    && subscribe
                        .filters
                        .iter()
                        .any(|(filter, _)| topics.filter_receives_events(filter));
                if denied {
                    let n = subscribe.filters.len();
                    shared
                        .metrics
                        .subscriptions_denied
                        .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
                    info!(
                        client_id = self.client_id,
                        "SUBSCRIBE to system topics refused"
                    );
                    let codes = vec![SubAckCode::Failure; n];
                    let suback = WirePacket::SubAck(SubAck {
                        properties: activity_core::codec::Properties::EMPTY,
                        pkid: subscribe.pkid,
                        codes: SubAckCodes::from_slice(&codes),
                    });
                    return match encode(&suback) {
                        Some(bytes) => Verdict::Answer(bytes),
                        None => Verdict::End(DisconnectReason::ProtocolError),
                    };
                }
                let filters = subscribe
                    .filters
                    .iter()
                    .map(|(f, q)| (f.to_owned(), q))
                    .collect();
                let mut state = self.state();
                self.await_ack(&mut state.subscribes, subscribe.pkid, filters, "SUBSCRIBE")
            }
            WirePacket::Unsubscribe(unsubscribe) => {
                let filters = unsubscribe.filters.iter().map(str::to_owned).collect();
                let mut state = self.state();
                self.await_ack(
                    &mut state.unsubscribes,
                    unsubscribe.pkid,
                    filters,
                    "UNSUBSCRIBE",
                )
            }
            WirePacket::PubAck(id) => {
                if let Some(event) = self.state().tracker.handle_puback(now, id.pkid) {
                    shared.events.emit(&event);
                }
                Verdict::Forward
            }
            WirePacket::PubRec(id) => {
                if let Some(event) = self.state().tracker.handle_pubrec(now, id.pkid) {
                    shared.events.emit(&event);
                }
                Verdict::Forward
            }
            WirePacket::PubRel(_) | WirePacket::PubComp(_) | WirePacket::PingReq => {
                Verdict::Forward
            }
            WirePacket::Disconnect(_) => Verdict::ForwardAndEnd(DisconnectReason::Normal),
            WirePacket::Connect(_)
            | WirePacket::ConnAck(_)
            | WirePacket::SubAck(_)
            | WirePacket::UnsubAck(_)
            | WirePacket::PingResp
            | WirePacket::Auth(_) => {
                debug!(
                    client_id = self.client_id,
                    "client sent a packet only a server sends: closing"
                );
                shared
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                Verdict::End(DisconnectReason::ProtocolError)
            }
        }
    }

    /// Reports a packet from the upstream broker to the tracker (it is always forwarded).
    fn handle_upstream_packet(&self, packet: &WirePacket<'_>) {
        let shared = self.shared;
        match packet {
            WirePacket::Publish(publish) => {
                let Some(pkid) = publish.pkid else {
                    return;
                };
                let delivery = DeliveryInfo {
                    pkid,
                    qos: publish.qos,
                    topic: publish.topic,
                    payload: publish.payload,
                    pub_client_id: None,
                };
                let lookup = |envelope: &activity_core::envelope::Envelope| {
                    let table = shared.publishers.lock().unwrap_or_else(|e| e.into_inner());
                    let id =
                        table.lookup(envelope.product_id.as_id(), envelope.message_id.as_id())?;
                    heapless::String::<CLIENT_ID_CAPACITY>::try_from(id).ok()
                };
                self.state().tracker.handle_delivery(delivery, lookup);
            }
            WirePacket::SubAck(suback) => {
                let now = now_ms();
                let mut state = self.state();
                let Some(filters) = state.subscribes.remove(&suback.pkid) else {
                    return;
                };
                for ((filter, _), code) in filters.iter().zip(suback.codes.iter()) {
                    let granted = match code {
                        SubAckCode::Success(qos) => Some(qos),
                        SubAckCode::Failure | SubAckCode::Refused(_) => None,
                    };
                    if let Some(event) = state.tracker.handle_subscribe(now, filter, granted) {
                        shared.events.emit(&event);
                    }
                }
            }
            WirePacket::UnsubAck(unsuback) => {
                let now = now_ms();
                let mut state = self.state();
                let Some(filters) = state.unsubscribes.remove(&unsuback.pkid) else {
                    return;
                };
                for filter in &filters {
                    if let Some(event) = state.tracker.handle_unsubscribe(now, filter) {
                        shared.events.emit(&event);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Encodes a packet the tap answers with.
fn encode(packet: &WirePacket<'_>) -> Option<Bytes> {
    let mut out = vec![0u8; packet.encoded_len().ok()?];
    let n = packet.encode(&mut out).ok()?;
    out.truncate(n);
    Some(Bytes::from(out))
}
