//! The tap's MQTT event sink: one connection of the reserved client `broker` to the upstream
//! broker, publishing every event on its system topic, reconnecting when it drops.
//!
//! The [`Dispatcher`](crate::events::Dispatcher) offers each event to an [`UpstreamQueue`]
//! (bounded, never waits: a full queue drops the event and counts it in
//! `activity_events_dropped_total`). One task drains the queue in batches, encodes each event as
//! a PUBLISH with the core's codec (MQTT 3.1.1 section 3.3) and writes the batch at once. While
//! the upstream broker is unreachable the task retries every `upstream.reconnect_ms` and the
//! queue fills up and drops.
//!
//! QoS 1 events are kept until the upstream's PUBACK (`Unacked`): when the connection breaks,
//! the next connection first sends every unacknowledged one again, in the order they were
//! produced, with DUP set (sections 3.3.1.1 and 4.4), then the rest of the queue. An event
//! counts against `events.queue_capacity` until it is acknowledged, so the queue and the events
//! awaiting PUBACK together hold at most that many. Delivery is at least once: an event whose
//! PUBACK was lost with the connection arrives twice. The publisher connects with
//! `clean_session` 0 when any event kind is published at QoS 1 or 2, so that the upstream keeps
//! its side of the session across the reconnect. QoS 2 events are not kept: those the broken
//! connection carried may be lost (at most one batch).
//!
//! (The core's [`Outbox`](activity_core::outbox::Outbox) implements the same rule for the
//! gateway, but in a fixed byte array moved with `copy_within` on every PUBACK and a packet-id
//! search over the whole queue on every push: at the tap's 65,536 events of a few hundred bytes
//! each that is megabytes moved per acknowledgement, and its bound is in bytes, not the
//! events `events.queue_capacity` counts. Here the events stay in a deque of records.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use activity_core::QoS;
use activity_core::client_id::RESERVED_CLIENT_ID;
use activity_core::codec::{self, ConnectReturnCode, Packet as WirePacket, Publish as WirePublish};
use activity_core::event::EventKind;
use activity_core::system::SystemTopics;
use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Config, MAX_PACKET_SIZE_LIMIT};
use crate::events::{EventRecord, SinkQueue};
use crate::metrics::Metrics;
use crate::retained_presence::PresenceState;

use super::upstream::{Upstream, UpstreamStream};

/// Most events in one write to the upstream broker.
const BATCH: usize = 256;

/// The queue between the dispatcher and the upstream publisher; cheap to clone.
#[derive(Clone)]
pub struct UpstreamQueue {
    tx: mpsc::Sender<EventRecord>,
    pending: Arc<AtomicU64>,
    capacity: u64,
    metrics: Arc<Metrics>,
}

impl SinkQueue for UpstreamQueue {
    /// Queues `record` for the upstream broker; drops and counts it when the queue is full.
    /// Events awaiting the upstream's PUBACK count against the capacity too.
    fn offer(&self, record: EventRecord) {
        self.queue(record);
    }

    /// Queues a retained presence state like an event (at its event's QoS, with RETAIN).
    fn offer_presence(&self, state: &PresenceState) {
        self.queue(EventRecord {
            kind: state.kind,
            subject: String::new(),
            ts: 0,
            json: state.json.clone(),
            event_seq: 0,
            session_seq: None,
            retained_topic: Some(state.topic.clone()),
            ack_key: None,
        });
    }
}

impl UpstreamQueue {
    /// Queues `record`; drops and counts it when the queue is full.
    fn queue(&self, record: EventRecord) {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity || self.tx.try_send(record).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let dropped = self.metrics.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(
                    dropped,
                    "upstream event queue full (upstream broker slow or unreachable): events are being dropped"
                );
            }
        }
    }
}

impl UpstreamQueue {
    /// Events queued, being written, or (QoS 1) awaiting the upstream's PUBACK; 0 once
    /// everything offered is on the socket and acknowledged.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }
}

/// Where and how the publisher connects.
struct Target {
    upstream: Upstream,
    client_id: String,
    connect_timeout: Duration,
    reconnect: Duration,
    keep_alive: u16,
    topics: [String; EventKind::ALL.len()],
    qos: [QoS; EventKind::ALL.len()],
    /// `clean_session` of the CONNECT: 0 when events go at QoS 1 or 2.
    clean_session: bool,
}

impl Target {
    /// Where `record` goes: its kind's topic, or its presence state's.
    fn topic_of<'a>(&'a self, record: &'a EventRecord) -> &'a str {
        record
            .retained_topic
            .as_deref()
            .unwrap_or(&self.topics[record.kind as usize])
    }
}

/// Most QoS 1 events awaiting PUBACK: a packet id must not be reused while in use (section
/// 2.3.1), and one stays free so that the next id never meets the oldest.
const MAX_UNACKED: usize = u16::MAX as usize - 1;

/// QoS 1 events sent (or to be sent again) and not acknowledged yet, oldest first, across the
/// publisher's connections. Their packet ids are consecutive in the order sent (wrapping from
/// 65,535 to 1), with gaps where a PUBACK came out of order.
struct Unacked {
    events: VecDeque<(u16, EventRecord)>,
    /// The packet id of the next QoS 1 event.
    next_pkid: u16,
}

impl Unacked {
    fn new() -> Self {
        Unacked {
            events: VecDeque::new(),
            next_pkid: 1,
        }
    }

    /// How many more events may be taken now: the ids from the oldest unacknowledged one to
    /// the next must stay below [`MAX_UNACKED`].
    fn room(&self) -> usize {
        let Some(&(oldest, _)) = self.events.front() else {
            return MAX_UNACKED;
        };
        // Ids in use, oldest to next - 1, on the ring 1..=65535.
        let span = (u32::from(self.next_pkid) + 65_535 - u32::from(oldest)) % 65_535;
        MAX_UNACKED.saturating_sub(usize::try_from(span).unwrap_or(MAX_UNACKED))
    }

    /// Keeps `record`; returns its packet id.
    fn push(&mut self, record: EventRecord) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.events.push_back((id, record));
        id
    }

    /// A packet id for an event that is not kept (QoS 2), from the same sequence so that it
    /// never meets one in use.
    fn skip(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        id
    }

    /// The PUBACK for `pkid` came: the event goes. Whether it was kept (usually the oldest).
    fn ack(&mut self, pkid: u16) -> bool {
        match self.events.iter().position(|(id, _)| *id == pkid) {
            Some(at) => {
                self.events.remove(at);
                true
            }
            None => false,
        }
    }
}

/// The client id of the event publisher: `broker`, or `broker/<node>` when `events.node` is
/// set, so that several taps in front of one broker (cluster) do not take each other's
/// connection over. Clients may use neither (see [`is_reserved`]).
pub fn publisher_client_id(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("{RESERVED_CLIENT_ID}/{node}"),
        None => RESERVED_CLIENT_ID.to_owned(),
    }
}

/// Whether clients of a tap may not use `client_id`: `broker` (the core's rule) or any
/// `broker/...`, the ids of the taps' event publishers.
pub fn is_reserved(client_id: &str) -> bool {
    client_id
        .strip_prefix(RESERVED_CLIENT_ID)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Starts the publisher task; it runs until every [`UpstreamQueue`] clone is dropped.
pub(crate) fn start(
    config: &Config,
    upstream: Upstream,
    topics: &SystemTopics,
    metrics: Arc<Metrics>,
) -> (UpstreamQueue, JoinHandle<()>) {
    let capacity = config.events.queue_capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let qos = EventKind::ALL.map(|k| config.events.qos_of(k));
    let pending = Arc::new(AtomicU64::new(0));
    let target = Target {
        upstream,
        client_id: publisher_client_id(config.events.node.as_deref()),
        connect_timeout: config.upstream.connect_timeout(),
        reconnect: config.upstream.reconnect_delay(),
        keep_alive: config.upstream.publisher_keep_alive_secs,
        topics: EventKind::ALL.map(|k| topics.topic(k).as_str().to_owned()),
        qos,
        clean_session: qos.iter().all(|q| *q == QoS::AtMostOnce),
    };
    let task = tokio::spawn(run(target, rx, pending.clone(), metrics.clone()));
    (
        UpstreamQueue {
            tx,
            pending,
            capacity: u64::try_from(capacity).unwrap_or(u64::MAX),
            metrics,
        },
        task,
    )
}

async fn run(
    target: Target,
    mut rx: mpsc::Receiver<EventRecord>,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let mut unacked = Unacked::new();
    loop {
        match session(&target, &mut rx, &mut unacked, &pending, &metrics).await {
            Ok(()) => return,
            Err(e) => {
                warn!(
                    upstream = %target.upstream.address,
                    error = %format!("{e:#}"),
                    retry_in_ms = target.reconnect.as_millis(),
                    unacked = unacked.events.len(),
                    "event publisher: upstream connection failed"
                );
                tokio::time::sleep(target.reconnect).await;
            }
        }
    }
}

/// One connection: CONNECT as `broker`, send the unacknowledged QoS 1 events again, then
/// publish until the queue closes (`Ok`) or the connection fails.
async fn session(
    target: &Target,
    rx: &mut mpsc::Receiver<EventRecord>,
    unacked: &mut Unacked,
    pending: &AtomicU64,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut stream = target.upstream.connect().await?;
    let connect = WirePacket::Connect(codec::Connect {
        protocol_name: activity_core::codec::ProtocolName::Mqtt,
        properties: activity_core::codec::Properties::EMPTY,
        protocol_level: codec::PROTOCOL_LEVEL,
        client_id: &target.client_id,
        clean_session: target.clean_session,
        keep_alive: target.keep_alive,
        username: None,
        password: None,
        will: None,
    });
    let mut out = vec![0u8; connect.encoded_len().context("CONNECT")?];
    connect.encode(&mut out).context("CONNECT")?;
    stream.write_all(&out).await.context("write CONNECT")?;
    let mut rbuf = BytesMut::with_capacity(1024);
    let code = tokio::time::timeout(target.connect_timeout, read_connack(&mut stream, &mut rbuf))
        .await
        .context("no CONNACK in time")??;
    if code != ConnectReturnCode::Accepted {
        bail!("CONNACK refused with return code {}", code.as_u8());
    }
    metrics
        .upstream_publisher_connects
        .fetch_add(1, Ordering::Relaxed);
    info!(upstream = %target.upstream.address, client_id = %target.client_id, "event publisher connected");

    let (mut reader, mut writer) = tokio::io::split(stream);
    // A silent upstream (frozen, or a half-open connection) is given up: a PINGREQ unanswered
    // for a keep-alive, or a write not done within two, ends the connection (counted), and
    // the next one sends the unacknowledged QoS 1 events again.
    let keep_alive = Duration::from_secs(u64::from(target.keep_alive));
    let write_limit = keep_alive * 2;
    let mut writer = Deadline {
        writer: &mut writer,
        limit: write_limit,
        metrics,
    };
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    // Section 4.4: the unacknowledged QoS 1 events first, in order, with DUP.
    if !unacked.events.is_empty() {
        let resent = unacked.events.len();
        for chunk in unacked.events.make_contiguous().chunks(BATCH) {
            wbuf.clear();
            for (pkid, record) in chunk {
                encode_publish(
                    &mut wbuf,
                    target.topic_of(record),
                    QoS::AtLeastOnce,
                    Some(*pkid),
                    true,
                    record,
                );
            }
            writer
                .write_all(&wbuf)
                .await
                .context("write resent events")?;
        }
        metrics
            .upstream_events_resent
            .fetch_add(u64::try_from(resent).unwrap_or(u64::MAX), Ordering::Relaxed);
        info!(
            resent,
            "event publisher: unacknowledged QoS 1 events sent again (DUP)"
        );
    }
    // A PINGREQ every keep-alive, whatever else is written: its PINGRESP shows the upstream
    // still reads, which QoS 0 events alone never would.
    let mut ping = tokio::time::interval(keep_alive);
    ping.tick().await;
    // When a PINGREQ went out with nothing received since.
    let mut ping_unanswered: Option<tokio::time::Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let answer_by = ping_unanswered.map(|sent| sent + keep_alive);
        let room = unacked.room().min(BATCH);
        tokio::select! {
            n = rx.recv_many(&mut batch, room), if room > 0 => {
                if n == 0 {
                    if !unacked.events.is_empty() {
                        warn!(unacked = unacked.events.len(), "event publisher stopping with QoS 1 events the upstream has not acknowledged");
                    }
                    let _ = writer.write_all(&[0xE0, 0x00]).await;
                    return Ok(());
                }
                wbuf.clear();
                // QoS 0 and 2 events are done once written; QoS 1 ones when acknowledged.
                let mut unkept = 0u64;
                for record in batch.drain(..) {
                    let i = record.kind as usize;
                    let qos = target.qos[i];
                    match qos {
                        QoS::AtLeastOnce => {
                            let pkid = unacked.push(record.clone());
                            encode_publish(&mut wbuf, target.topic_of(&record), qos, Some(pkid), false, &record);
                        }
                        QoS::AtMostOnce | QoS::ExactlyOnce => {
                            let pkid = (qos == QoS::ExactlyOnce).then(|| unacked.skip());
                            unkept += 1;
                            encode_publish(&mut wbuf, target.topic_of(&record), qos, pkid, false, &record);
                        }
                    }
                }
                let written = writer.write_all(&wbuf).await;
                pending.fetch_sub(unkept, Ordering::AcqRel);
                if let Err(e) = written {
                    metrics.events_dropped.fetch_add(unkept, Ordering::Relaxed);
                    return Err(e).context("write events");
                }
                metrics.events_sink_mqtt.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            read = reader.read_buf(&mut rbuf) => {
                if read.context("read")? == 0 {
                    bail!("upstream closed the connection");
                }
                ping_unanswered = None;
                // PUBACK releases a QoS 1 event, PUBREC gets its PUBREL (3.6); PUBCOMP and
                // PINGRESP need nothing.
                while let Some((packet, len)) = codec::decode(&rbuf, MAX_PACKET_SIZE_LIMIT)
                    .context("upstream sent a malformed packet")?
                {
                    let (pubrel, puback) = match packet {
                        WirePacket::PubRec(ack) => (Some(ack.pkid), None),
                        WirePacket::PubAck(ack) => (None, Some(ack.pkid)),
                        _ => (None, None),
                    };
                    rbuf.advance(len);
                    if let Some(id) = puback
                        && unacked.ack(id)
                    {
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                    if let Some(id) = pubrel {
                        let mut buf = [0u8; 4];
                        let n = WirePacket::PubRel(codec::Ack::new(id)).encode(&mut buf).context("PUBREL")?;
                        writer.write_all(&buf[..n]).await.context("write PUBREL")?;
                    }
                }
            }
            _ = ping.tick() => {
                writer.write_all(&[0xC0, 0x00]).await.context("write PINGREQ")?;
                ping_unanswered.get_or_insert_with(tokio::time::Instant::now);
            }
            () = tokio::time::sleep_until(answer_by.unwrap_or_else(tokio::time::Instant::now)), if answer_by.is_some() => {
                metrics.upstream_publisher_timeouts.fetch_add(1, Ordering::Relaxed);
                bail!("no PINGRESP from the upstream within the keep-alive ({keep_alive:?})");
            }
        }
    }
}

/// The publisher's writer, each write bounded by `limit`: a write that has not completed
/// within it (an upstream that stopped reading) fails, counted in
/// `upstream_publisher_timeouts`, instead of waiting for ever.
struct Deadline<'a, W> {
    writer: &'a mut W,
    limit: Duration,
    metrics: &'a Metrics,
}

impl<W: AsyncWrite + Unpin> Deadline<'_, W> {
    async fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match tokio::time::timeout(self.limit, self.writer.write_all(bytes)).await {
            Ok(written) => Ok(written?),
            Err(_) => {
                self.metrics
                    .upstream_publisher_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                bail!(
                    "a write to the upstream did not complete within {:?}",
                    self.limit
                )
            }
        }
    }
}

/// Appends one PUBLISH of `record` on `topic` to `out` (`dup`: sent before, section
/// 3.3.1.1), with RETAIN for a presence state.
fn encode_publish(
    out: &mut BytesMut,
    topic: &str,
    qos: QoS,
    pkid: Option<u16>,
    dup: bool,
    record: &EventRecord,
) {
    let packet = WirePacket::Publish(WirePublish {
        properties: activity_core::codec::Properties::EMPTY,
        dup,
        qos,
        retain: record.retained_topic.is_some(),
        topic,
        pkid,
        payload: &record.json,
    });
    match packet.encoded_len() {
        Ok(len) => {
            let start = out.len();
            out.resize(start + len, 0);
            if packet.encode(&mut out[start..]).is_err() {
                // The length was just computed for this packet: a broken invariant, not input.
                out.truncate(start);
                warn!("event PUBLISH could not be encoded");
            }
        }
        Err(e) => warn!(error = %e, "event PUBLISH could not be encoded"),
    }
}

/// Reads the CONNACK that answers the publisher's CONNECT.
async fn read_connack(
    stream: &mut UpstreamStream,
    rbuf: &mut BytesMut,
) -> anyhow::Result<ConnectReturnCode> {
    loop {
        if let Some((packet, len)) =
            codec::decode(rbuf, MAX_PACKET_SIZE_LIMIT).context("malformed answer to CONNECT")?
        {
            let WirePacket::ConnAck(ack) = packet else {
                bail!("the answer to CONNECT is not a CONNACK");
            };
            let code = ConnectReturnCode::from_u8(ack.code)
                .context("a CONNACK code MQTT 3.1.1 does not define")?;
            rbuf.advance(len);
            return Ok(code);
        }
        if stream.read_buf(rbuf).await.context("read CONNACK")? == 0 {
            bail!("upstream closed the connection before CONNACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EventRecord {
        EventRecord {
            kind: EventKind::Message,
            subject: "c".to_owned(),
            ts: 0,
            json: bytes::Bytes::from_static(b"{}"),
            event_seq: 0,
            session_seq: None,
            retained_topic: None,
            ack_key: None,
        }
    }

    #[test]
    fn unacked_events_keep_their_order_and_ids_are_never_reused() {
        let mut unacked = Unacked::new();
        assert_eq!(unacked.room(), MAX_UNACKED);
        assert_eq!(unacked.push(record()), 1);
        assert_eq!(unacked.push(record()), 2);
        assert_eq!(unacked.skip(), 3);
        assert_eq!(unacked.push(record()), 4);
        assert_eq!(unacked.room(), MAX_UNACKED - 4);
        // Out of order: the middle one goes, the oldest still holds the window.
        assert!(unacked.ack(2));
        assert!(!unacked.ack(2));
        assert_eq!(unacked.room(), MAX_UNACKED - 4);
        let ids: Vec<u16> = unacked.events.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 4]);
        assert!(unacked.ack(1));
        assert_eq!(unacked.room(), MAX_UNACKED - 1);
        // Wrapping from 65,535 to 1, 0 never given.
        let mut unacked = Unacked::new();
        unacked.next_pkid = u16::MAX;
        assert_eq!(unacked.push(record()), u16::MAX);
        assert_eq!(unacked.push(record()), 1);
        assert_eq!(unacked.room(), MAX_UNACKED - 2);
        // The window full: no room, so the next id cannot meet the oldest.
        let mut unacked = Unacked::new();
        for _ in 0..MAX_UNACKED {
            unacked.push(record());
        }
        assert_eq!(unacked.room(), 0);
        assert_ne!(unacked.next_pkid, 1);
    }

    #[test]
    fn publisher_ids_are_reserved() {
        assert_eq!(publisher_client_id(None), "broker");
        assert_eq!(publisher_client_id(Some("tap-a")), "broker/tap-a");
        assert!(is_reserved("broker"));
        assert!(is_reserved("broker/tap-a"));
        assert!(!is_reserved("brokerage"));
        assert!(!is_reserved("my-broker"));
    }
}
