//! The tap's MQTT event sink: one connection of the reserved client `broker` to the upstream
//! broker, publishing every event on its system topic, reconnecting when it drops.
//!
//! The [`Dispatcher`](crate::events::Dispatcher) offers each event to an [`UpstreamQueue`]
//! (bounded, never waits: a full queue drops the event and counts it in
//! `activity_events_dropped_total`). One task drains the queue in batches, encodes each event as
//! a PUBLISH with the core's codec (MQTT 3.1.1 section 3.3) and writes the batch at once. While
//! the upstream broker is unreachable the task retries every `upstream.reconnect_ms` and the
//! queue fills up and drops. QoS 1 and 2 events are not retransmitted after a reconnect: those
//! the broken connection carried may be lost (at most one batch).

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Config, MAX_PACKET_SIZE_LIMIT};
use crate::events::{EventRecord, SinkQueue};
use crate::metrics::Metrics;

use super::upstream::{Upstream, UpstreamStream};

/// Most events in one write to the upstream broker.
const BATCH: usize = 256;

/// The queue between the dispatcher and the upstream publisher; cheap to clone.
#[derive(Clone)]
pub struct UpstreamQueue {
    tx: mpsc::Sender<EventRecord>,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl SinkQueue for UpstreamQueue {
    /// Queues `record` for the upstream broker; drops and counts it when the queue is full.
    fn offer(&self, record: EventRecord) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(record).is_err() {
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
    /// Events queued or being written now (0 once everything offered is on the socket).
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
    topics: [String; 6],
    qos: [QoS; 6],
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
    let (tx, rx) = mpsc::channel(config.events.queue_capacity.max(1));
    let pending = Arc::new(AtomicU64::new(0));
    let target = Target {
        upstream,
        client_id: publisher_client_id(config.events.node.as_deref()),
        connect_timeout: config.upstream.connect_timeout(),
        reconnect: config.upstream.reconnect_delay(),
        keep_alive: config.upstream.publisher_keep_alive_secs,
        topics: EventKind::ALL.map(|k| topics.topic(k).as_str().to_owned()),
        qos: EventKind::ALL.map(|k| config.events.qos_of(k)),
    };
    let task = tokio::spawn(run(target, rx, pending.clone(), metrics.clone()));
    (
        UpstreamQueue {
            tx,
            pending,
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
    loop {
        match session(&target, &mut rx, &pending, &metrics).await {
            Ok(()) => return,
            Err(e) => {
                warn!(
                    upstream = %target.upstream.address,
                    error = %format!("{e:#}"),
                    retry_in_ms = target.reconnect.as_millis(),
                    "event publisher: upstream connection failed"
                );
                tokio::time::sleep(target.reconnect).await;
            }
        }
    }
}

/// One connection: CONNECT as `broker`, then publish until the queue closes (`Ok`) or the
/// connection fails.
async fn session(
    target: &Target,
    rx: &mut mpsc::Receiver<EventRecord>,
    pending: &AtomicU64,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut stream = target.upstream.connect().await?;
    let connect = WirePacket::Connect(codec::Connect {
        protocol_name: activity_core::codec::ProtocolName::Mqtt,
        properties: activity_core::codec::Properties::EMPTY,
        protocol_level: codec::PROTOCOL_LEVEL,
        client_id: &target.client_id,
        clean_session: true,
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
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(target.keep_alive)));
    ping.tick().await;
    let mut batch = Vec::with_capacity(BATCH);
    let mut next_pkid: u16 = 1;
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    let _ = writer.write_all(&[0xE0, 0x00]).await;
                    return Ok(());
                }
                wbuf.clear();
                for record in &batch {
                    let i = record.kind as usize;
                    let pkid = (target.qos[i] != QoS::AtMostOnce).then(|| {
                        let id = next_pkid;
                        next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                        id
                    });
                    encode_publish(&mut wbuf, &target.topics[i], target.qos[i], pkid, &record.json);
                }
                let written = writer.write_all(&wbuf).await;
                pending.fetch_sub(u64::try_from(n).unwrap_or(u64::MAX), Ordering::AcqRel);
                batch.clear();
                if let Err(e) = written {
                    metrics.events_dropped.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
                    return Err(e).context("write events");
                }
                metrics.events_sink_mqtt.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
                ping.reset();
            }
            read = reader.read_buf(&mut rbuf) => {
                if read.context("read")? == 0 {
                    bail!("upstream closed the connection");
                }
                // PUBACK, PUBCOMP and PINGRESP need nothing; PUBREC gets its PUBREL (3.6).
                while let Some((packet, len)) = codec::decode(&rbuf, MAX_PACKET_SIZE_LIMIT)
                    .context("upstream sent a malformed packet")?
                {
                    let pubrel = match packet {
                        WirePacket::PubRec(ack) => Some(ack.pkid),
                        _ => None,
                    };
                    rbuf.advance(len);
                    if let Some(id) = pubrel {
                        let mut buf = [0u8; 4];
                        let n = WirePacket::PubRel(codec::Ack::new(id)).encode(&mut buf).context("PUBREL")?;
                        writer.write_all(&buf[..n]).await.context("write PUBREL")?;
                    }
                }
            }
            _ = ping.tick() => {
                writer.write_all(&[0xC0, 0x00]).await.context("write PINGREQ")?;
            }
        }
    }
}

/// Appends one PUBLISH of `json` on `topic` to `out`.
fn encode_publish(out: &mut BytesMut, topic: &str, qos: QoS, pkid: Option<u16>, json: &[u8]) {
    let packet = WirePacket::Publish(WirePublish {
        properties: activity_core::codec::Properties::EMPTY,
        dup: false,
        qos,
        retain: false,
        topic,
        pkid,
        payload: json,
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
