//! The event pipeline: encode with the core, queue without blocking, publish from one task.
//!
//! Connections call [`EventSender::emit`] with the events their trackers return. The event is
//! encoded to JSON right there (the core's fixed-capacity encoder, into a buffer sized by its
//! bound) and put on one bounded queue with `try_send`: a full queue drops the event and counts
//! it in `activity_events_dropped_total`, so a slow sink never blocks a client. One
//! [`Dispatcher`] task drains the queue in batches and fans every event out to the configured
//! sinks: it hands it to the Kafka sink's own bounded buffer (which never waits, see
//! [`crate::kafka`]) and publishes it into the router as the reserved client `broker`.
//!
//! `refused`, `denied` and `dropped` events are bounded twice: per connection by the engine
//! (`events.rate_limit_per_client`), and here for all connections together
//! (`events.rate_limit` per kind and second, [`KindLimit`]), before they are encoded; what
//! either holds back is counted in `activity_events_suppressed_total`. A flood of refused
//! logins from many sockets, or of denied publishes from many clients, thus takes a bounded
//! share of the queue. The pipeline's own losses (a full queue, a full Kafka buffer) are
//! counted, never reported as `dropped` events: an event about the events could feed on itself.
//!
//! # Numbers
//!
//! The dispatcher numbers the events (`"event_seq"`, the last field of the JSON): it is the one
//! place that sees them in the order every sink gets them. The first number is the node's start
//! time in ms times 1,000, and each event the dispatcher hands to the sinks gets the next one.
//! An event dropped because the queue was full still uses up a number (the next event the
//! dispatcher numbers skips it), so the sinks' consumers see the loss as a gap; an event nobody
//! would receive (the router is the only sink and no subscription matches its kind, see
//! [`crate::interest`], and no HTTP event stream holds it, see [`Watched`]) gets none, and
//! leaves no gap. The `session_seq` of each connection comes
//! from [`EventSender::session_seq`] (see [`activity_core::seq`]).

use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use activity_core::QoS;
use activity_core::event::{self, EncodeOptions, Event, EventKind, Id};
use activity_core::seq::{NodeBits, next_session_seq};
use activity_core::system::SystemTopics;
use activity_core::tracker::{EventKinds, TrackerConfig};
use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::{EventsConfig, PayloadMode};
use crate::interest::Interest;
use crate::metrics::Metrics;
use crate::qos_marker::{RETAIN_BIT, marker};
use crate::retained_presence::{PresenceState, RetainedPresence};

/// Milliseconds since the Unix epoch, the `ts` of events and the engine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One encoded event on its way to the sinks.
#[derive(Clone, Debug)]
pub struct EventRecord {
    /// Which event it is.
    pub kind: EventKind,
    /// The client the event is about (the Kafka key).
    pub subject: String,
    /// The event's `ts`.
    pub ts: u64,
    /// The JSON document; from the dispatcher on, with its `event_seq`.
    pub json: Bytes,
    /// The event's `event_seq`, set by the dispatcher (0 before, and for a record read back
    /// from the Kafka spool, whose JSON has it).
    pub event_seq: u64,
    /// The `session_seq` of a `connected` or `disconnected` event (`None` for the other kinds,
    /// and for a record read back from the Kafka spool).
    pub session_seq: Option<u64>,
    /// Set on a retained presence state instead of an event (see [`crate::retained_presence`]): the
    /// topic to publish it on, with RETAIN. Only [`SinkQueue::offer_presence`] makes such
    /// records; no sink is offered one through [`SinkQueue::offer`].
    pub retained_topic: Option<String>,
    /// The [`ack_key`] of a `msgack` event's message, taken where the event is made (`None`
    /// for the other kinds, and for a record read back from the Kafka spool).
    pub ack_key: Option<u64>,
}

/// The hash of a message's (`product_id`, `message_id`) as text (an integer id as its decimal
/// digits, so that `42` and `"42"` are the same message): the index of the HTTP API's ack
/// table, computed once where a `msgack` event is made, so that the table reads no JSON per
/// acknowledgement. Keyed per process (SipHash with random keys): ids are chosen by clients,
/// and a lookup compares the ids themselves, so a collision costs a comparison, never a
/// wrong answer.
pub fn ack_key(product_id: Id<'_>, message_id: Id<'_>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = KEYS.get_or_init(RandomState::new).build_hasher();
    for id in [product_id, message_id] {
        match id {
            Id::Str(s) => hasher.write(s.as_bytes()),
            Id::Int(i) => {
                let mut digits = [0u8; 20];
                hasher.write(int_text(i, &mut digits));
            }
        }
        // Not UTF-8: ends the first id unambiguously.
        hasher.write_u8(0xff);
    }
    hasher.finish()
}

/// The decimal text of `i`, written into the end of `buf`.
fn int_text(i: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = i.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        // A digit: n % 10 < 10 fits.
        buf[at] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

enum Item {
    Event(EventRecord),
    Flush(oneshot::Sender<()>),
}

/// The owned form of the encoder options, and the node's numbers.
#[derive(Debug)]
struct Encoding {
    payload: event::PayloadMode,
    node: Option<String>,
    /// The low bits of this node's `session_seq`s.
    node_bits: NodeBits,
    /// The last `session_seq` handed out.
    last_session_seq: AtomicU64,
    /// Events dropped at the full queue since the dispatcher last numbered one.
    dropped_unnumbered: AtomicU64,
    /// `events.retained_presence`: `connected` and `disconnected` events are always made.
    retained_presence: bool,
}

/// The stack buffer [`EventSender::emit`] encodes into first; larger events get a heap buffer of
/// the encoder's bound.
const EMIT_STACK_BUFFER: usize = 1024;

/// A bound on the events of one kind for all connections together: at most `limit` per
/// second of the events' own `ts` (lock-free: the second and the count share one atomic).
#[derive(Debug, Default)]
pub struct KindLimit {
    /// Events per second; 0: no bound.
    limit: u32,
    /// The second (low 32 bits) in the high half, the events let through in it in the low.
    state: AtomicU64,
}

impl KindLimit {
    /// A bound of `limit` events per second (0: none).
    pub fn new(limit: u32) -> Self {
        KindLimit {
            limit,
            state: AtomicU64::new(0),
        }
    }

    /// Whether one more event at `ts` (ms since the epoch) is within the bound; counts it.
    pub fn admit(&self, ts: u64) -> bool {
        if self.limit == 0 {
            return true;
        }
        let second = (ts / 1000) & u64::from(u32::MAX);
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 != second {
                (second << 32) | 1
            } else if current & u64::from(u32::MAX) >= u64::from(self.limit) {
                return false;
            } else {
                current + 1
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// The handle connections use to emit events; cheap to clone.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Item>,
    encoding: Arc<Encoding>,
    /// The bound of each kind for all connections, by `kind as usize`.
    limits: Arc<[KindLimit; EventKind::ALL.len()]>,
    metrics: Arc<Metrics>,
    /// Set when the router is the only sink: an event no subscription receives is dropped
    /// before it is encoded (see [`crate::interest`]).
    only_for: Option<Arc<Interest>>,
    /// The kinds the HTTP API takes besides (see [`Watched`]), when it is on.
    watched: Option<Watched>,
}

/// Per event kind, how many holders want its events now: lock-free counts the event path reads
/// with one atomic load. The HTTP API's event streams hold the kinds they send (see
/// [`crate::http::EventHub`]).
#[derive(Debug, Default)]
pub struct KindHolds {
    counts: [AtomicUsize; EventKind::ALL.len()],
}

impl KindHolds {
    /// Whether some holder wants `kind` now.
    pub fn held(&self, kind: EventKind) -> bool {
        // SeqCst, as `hold`: the event hub orders its own counter around both (a plain load on
        // x86-64 and AArch64).
        self.counts[kind as usize].load(Ordering::SeqCst) > 0
    }

    /// One more holder of `kind`; `true` when it was held by none before.
    pub fn hold(&self, kind: EventKind) -> bool {
        self.counts[kind as usize].fetch_add(1, Ordering::SeqCst) == 0
    }

    /// One holder of `kind` fewer (each [`KindHolds::hold`] is released once).
    pub fn release(&self, kind: EventKind) {
        self.counts[kind as usize].fetch_sub(1, Ordering::SeqCst);
    }

    /// How many kinds are held now.
    pub fn kinds_held(&self) -> usize {
        EventKind::ALL.iter().filter(|k| self.held(**k)).count()
    }
}

/// What the HTTP API takes from the event pipeline besides the other sinks: the kinds its
/// event streams hold now, and the kinds it always takes (`msgack`, for the ack table).
#[derive(Clone, Debug)]
pub struct Watched {
    /// The kinds the event streams hold.
    pub streams: Arc<KindHolds>,
    /// The kinds taken whether or not a stream is open.
    pub always: EventKinds,
}

/// What [`channel`] returns to the sink side.
pub struct EventReceiver {
    rx: mpsc::Receiver<Item>,
    encoding: Arc<Encoding>,
    /// The `event_seq` of the next event.
    next_event_seq: u64,
    /// The retained presence states, when `events.retained_presence` is on.
    presence: Option<RetainedPresence>,
}

/// Builds the trackers' configuration (the system topics, the enabled event kinds) from the
/// `[events]` table.
pub(crate) fn tracker_config(config: &EventsConfig) -> anyhow::Result<TrackerConfig> {
    let topics = SystemTopics::new(&config.prefix)
        .map_err(|e| anyhow::anyhow!("events.prefix: {e}"))?
        .with_wildcards_receive_events(config.wildcards_receive_events);
    if config.prefix.starts_with('$') {
        // rumqttd's router refuses subscriptions to `$` filters: nobody could read the events.
        anyhow::bail!("events.prefix: a prefix starting with `$` cannot be subscribed to here");
    }
    let mut enabled = EventKinds::NONE;
    for kind in EventKind::ALL {
        if config.kind(kind).enabled {
            enabled = enabled.with(kind);
        }
    }
    Ok(TrackerConfig {
        topics,
        enabled,
        client_rate_limit: config.rate_limit_per_client,
    })
}

/// A bounded event queue of `config.queue_capacity` events.
///
/// `only_for` is the subscriptions of the router when it is the only sink besides the HTTP
/// API: events of a kind no subscription receives and the API does not take (`watched`) are
/// then counted and skipped (see [`crate::interest`]).
pub fn channel(
    config: &EventsConfig,
    metrics: Arc<Metrics>,
    only_for: Option<Arc<Interest>>,
    watched: Option<Watched>,
) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let payload = match config.payload {
        PayloadMode::Full => event::PayloadMode::Full,
        PayloadMode::Omit => event::PayloadMode::Omit,
        PayloadMode::Truncate(n) => event::PayloadMode::Truncate(n),
    };
    // Which kinds are on is the trackers' fact (TrackerConfig::enabled, from
    // `tracker_config`): a disabled kind never reaches `emit`.
    let encoding = Arc::new(Encoding {
        payload,
        node: config.node.clone(),
        node_bits: config.node_bits(),
        last_session_seq: AtomicU64::new(0),
        dropped_unnumbered: AtomicU64::new(0),
        retained_presence: config.retained_presence,
    });
    let limits = Arc::new(EventKind::ALL.map(|kind| KindLimit::new(config.rate_limit_of(kind))));
    (
        EventSender {
            tx,
            encoding: encoding.clone(),
            limits,
            metrics,
            only_for,
            watched,
        },
        EventReceiver {
            rx,
            encoding,
            next_event_seq: now_ms().saturating_mul(1_000),
            presence: config
                .retained_presence
                .then(|| RetainedPresence::new(&config.prefix)),
        },
    )
}

impl EventSender {
    /// Whether an event of `kind` would reach a sink now: always, unless the router is the only
    /// sink and no subscription receives that kind (see [`crate::interest`]) and the HTTP API
    /// does not take it (no event stream holds it, see [`Watched`]).
    pub fn wants(&self, kind: EventKind) -> bool {
        self.only_for.as_ref().is_none_or(|i| i.wanted(kind))
            || self
                .watched
                .as_ref()
                .is_some_and(|w| w.always.contains(kind) || w.streams.held(kind))
            || (self.encoding.retained_presence && is_presence(kind))
    }

    /// The `session_seq` of a connection accepted at `now_ms` (see [`activity_core::seq`]): the
    /// node's numbers only grow, shared by all its connections.
    pub fn session_seq(&self, now_ms: u64) -> u64 {
        let node = self.encoding.node_bits;
        let last = &self.encoding.last_session_seq;
        let mut seen = last.load(Ordering::Relaxed);
        loop {
            let next = next_session_seq(seen, now_ms, node);
            match last.compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(now) => seen = now,
            }
        }
    }

    /// Encodes `event` and queues it; drops and counts it when the queue is full.
    pub fn emit(&self, event: &Event<'_>) {
        if let Some(record) = self.record(event) {
            self.send(record);
        }
    }

    /// Encodes `event` for [`EventSender::send`], which may come later (a connection sends
    /// what its router must see first, such as a new subscription, before its events).
    /// `None` when no sink wants its kind now or it cannot be encoded (both counted).
    pub fn record(&self, event: &Event<'_>) -> Option<EventRecord> {
        let kind = event.kind();
        if !self.wants(kind) {
            self.metrics.event_emitted(kind);
            self.metrics
                .events_unobserved
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if !self.limits[kind as usize].admit(event.ts()) {
            let suppressed =
                self.metrics.events_suppressed[kind as usize].fetch_add(1, Ordering::Relaxed) + 1;
            if suppressed.is_power_of_two() {
                warn!(
                    kind = kind.name(),
                    suppressed, "events.rate_limit reached: events are being suppressed"
                );
            }
            return None;
        }
        let options = EncodeOptions {
            payload: self.encoding.payload,
            node: self.encoding.node.as_deref(),
            event_seq: None,
        };
        // Most events fit the stack buffer: encoded once, then copied out at their exact size.
        // A larger one (a long payload) is encoded again into a heap buffer of the size the
        // first attempt reported.
        let mut stack = [0u8; EMIT_STACK_BUFFER];
        let encoded = match event::encode(event, &options, &mut stack) {
            Ok(n) => Ok(Bytes::copy_from_slice(&stack[..n])),
            Err(e) => {
                let needed = match e {
                    event::EncodeError::BufferTooSmall { needed, .. } => needed,
                    _ => event::encoded_len_bound(event, &options),
                };
                let mut buf = vec![0u8; needed];
                event::encode(event, &options, &mut buf).map(|n| {
                    buf.truncate(n);
                    Bytes::from(buf)
                })
            }
        };
        let json = match encoded {
            Ok(json) => json,
            Err(e) => {
                // The buffer is sized by the encoder's own bound: this is a broken invariant,
                // reported and counted rather than panicking in a connection task.
                self.metrics
                    .events_encode_failed
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, kind = kind.name(), "event encoding failed");
                return None;
            }
        };
        let session_seq = match event {
            Event::Connected(e) => Some(e.session_seq),
            Event::Disconnected(e) => Some(e.session_seq),
            _ => None,
        };
        let ack_key = match event {
            Event::MsgAck(e) => Some(ack_key(e.product_id, e.message_id)),
            _ => None,
        };
        Some(EventRecord {
            kind,
            subject: event.subject().to_owned(),
            ts: event.ts(),
            json,
            event_seq: 0,
            session_seq,
            retained_topic: None,
            ack_key,
        })
    }

    /// Queues an event made by [`EventSender::record`]; drops and counts it when the queue is
    /// full.
    pub fn send(&self, record: EventRecord) {
        let kind = record.kind;
        match self.tx.try_send(Item::Event(record)) {
            Ok(()) => self.metrics.event_emitted(kind),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.encoding
                    .dropped_unnumbered
                    .fetch_add(1, Ordering::Relaxed);
                let dropped = self.metrics.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    warn!(dropped, "event queue full: events are being dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every event queued before this call has been handed to the sinks, or until
    /// `timeout`; `false` on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let sent = tokio::time::timeout(timeout, self.tx.send(Item::Flush(done_tx))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        matches!(tokio::time::timeout(left, done_rx).await, Ok(Ok(())))
    }
}

/// Publishes events into the router through the `broker` link.
pub struct MqttSink {
    link_tx: LinkTx,
    topics: [Bytes; EventKind::ALL.len()],
    qos: [QoS; EventKind::ALL.len()],
    metrics: Arc<Metrics>,
    interest: Arc<Interest>,
}

impl MqttSink {
    /// A sink publishing on `topics` with each kind's configured QoS, the kinds some
    /// subscription in `interest` receives.
    pub fn new(
        link_tx: LinkTx,
        topics: &SystemTopics,
        config: &EventsConfig,
        metrics: Arc<Metrics>,
        interest: Arc<Interest>,
    ) -> Self {
        MqttSink {
            link_tx,
            topics: EventKind::ALL.map(|k| Bytes::copy_from_slice(topics.topic(k).as_bytes())),
            qos: EventKind::ALL.map(|k| config.qos_of(k)),
            metrics,
            interest,
        }
    }

    /// A retained presence state for the router, at the QoS of its event's kind.
    fn presence_packet(&self, state: &PresenceState) -> Packet {
        let publish = Publish::new(
            Bytes::copy_from_slice(state.topic.as_bytes()),
            state.json.clone(),
            true,
        );
        let properties = PublishProperties {
            payload_format_indicator: Some(marker(self.qos[state.kind as usize], 1) + RETAIN_BIT),
            ..PublishProperties::default()
        };
        Packet::Publish(publish, Some(properties))
    }

    fn packet(&self, record: &EventRecord) -> Packet {
        let i = record.kind as usize;
        let publish = Publish::new(self.topics[i].clone(), record.json.clone(), false);
        // The router delivers at the subscription's QoS; the marker carries the event's QoS so
        // that the front delivers at the lower of the two (see `qos_marker`).
        let properties = PublishProperties {
            // Events are JSON: UTF-8 (MQTT 5 subscribers are told so).
            payload_format_indicator: Some(marker(self.qos[i], 1)),
            ..PublishProperties::default()
        };
        Packet::Publish(publish, Some(properties))
    }

    /// Publishes `records` into the router as one batch, except those no subscription
    /// receives, and then the retained presence `states`.
    async fn publish(&mut self, records: &[EventRecord], states: &[PresenceState]) {
        let mut packets: Vec<Packet> = records
            .iter()
            .filter(|r| self.interest.wanted(r.kind))
            .map(|r| self.packet(r))
            .collect();
        let published = packets.len() as u64;
        self.metrics
            .events_unobserved
            .fetch_add(records.len() as u64 - published, Ordering::Relaxed);
        packets.extend(states.iter().map(|state| self.presence_packet(state)));
        if let Some(last) = packets.pop() {
            self.link_tx.buffer().extend(packets);
            if let Err(e) = self.link_tx.send(last).await {
                warn!(error = %e, "router link of the event sink failed: events lost");
                self.metrics
                    .events_dropped
                    .fetch_add(published, Ordering::Relaxed);
            } else {
                self.metrics
                    .events_sink_mqtt
                    .fetch_add(published, Ordering::Relaxed);
            }
        }
    }
}

/// The bounded buffer in front of a sink that the [`Dispatcher`] hands every event to: the
/// Kafka sink's ([`KafkaQueue`](crate::kafka::KafkaQueue)) or the tap's upstream publisher's
/// ([`UpstreamQueue`](crate::tap::UpstreamQueue)).
///
/// The sinks implement it, so that this module names none of them.
pub trait SinkQueue: Send {
    /// Takes `record` without waiting; when the buffer is full an event is dropped (which one
    /// is the sink's policy) and the drop is counted.
    fn offer(&self, record: EventRecord);

    /// Takes `record` as [`SinkQueue::offer`] does, cloning only what it keeps: the dispatcher
    /// calls this one. The default clones the whole record into `offer`; a sink that keeps few
    /// events (or only their shared JSON) overrides it, so that the others cost no allocation.
    fn take(&self, record: &EventRecord) {
        self.offer(record.clone());
    }

    /// Takes a retained presence state (see [`crate::retained_presence`]) the same way; a sink without
    /// retained messages ignores it (the default).
    fn offer_presence(&self, state: &PresenceState) {
        let _ = state;
    }
}

/// Drains the event queue and fans every event out to the sinks: the queues that never wait
/// first (the Kafka sink's buffer, the tap's upstream publisher), then the MQTT sink.
pub struct Dispatcher {
    /// The MQTT sink, when `sinks` has `"mqtt"` (embedded mode).
    pub mqtt: Option<MqttSink>,
    /// The queues offered every event, in this order: the Kafka sink's buffer when `sinks` has
    /// `"kafka"`, then the upstream broker's event publisher when `sinks` has `"mqtt"` in tap
    /// mode.
    pub queues: Vec<Box<dyn SinkQueue>>,
}

impl Dispatcher {
    /// Gives `record` its `event_seq` (see [Numbers](self#numbers)); `None` when no sink takes
    /// it (counted).
    fn number(&self, receiver: &mut EventReceiver, mut record: EventRecord) -> Option<EventRecord> {
        if self.queues.is_empty()
            && let Some(mqtt) = &self.mqtt
            && !mqtt.interest.wanted(record.kind)
            && !(receiver.presence.is_some() && is_presence(record.kind))
        {
            mqtt.metrics
                .events_unobserved
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let skipped = receiver
            .encoding
            .dropped_unnumbered
            .swap(0, Ordering::Relaxed);
        let seq = receiver.next_event_seq.saturating_add(skipped);
        receiver.next_event_seq = seq.saturating_add(1);
        let mut json = vec![0u8; record.json.len() + event::EVENT_SEQ_MAX_LEN];
        match event::append_event_seq(&record.json, seq, &mut json) {
            Ok(len) => {
                json.truncate(len);
                record.json = Bytes::from(json);
                record.event_seq = seq;
            }
            // The JSON came from the encoder and the buffer has the room: a broken invariant.
            Err(e) => warn!(error = %e, "event_seq could not be added"),
        }
        Some(record)
    }

    /// Drains `receiver` until every [`EventSender`] is gone.
    pub async fn run(mut self, mut receiver: EventReceiver) {
        const BATCH: usize = 256;
        let mut batch = Vec::with_capacity(BATCH);
        let mut records = Vec::with_capacity(BATCH);
        let mut states = Vec::new();
        loop {
            let n = receiver.rx.recv_many(&mut batch, BATCH).await;
            if n == 0 {
                debug!("event queue closed: the dispatcher stops");
                return;
            }
            let mut flushes = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Item::Event(record) => {
                        let Some(record) = self.number(&mut receiver, record) else {
                            continue;
                        };
                        for queue in &self.queues {
                            queue.take(&record);
                        }
                        let state = receiver.presence.as_mut().and_then(|presence| {
                            presence.state_of(
                                record.kind,
                                &record.subject,
                                record.session_seq,
                                &record.json,
                            )
                        });
                        if let Some(state) = state {
                            for queue in &self.queues {
                                queue.offer_presence(&state);
                            }
                            states.push(state);
                        }
                        records.push(record);
                    }
                    Item::Flush(done) => flushes.push(done),
                }
            }
            if let Some(mqtt) = &mut self.mqtt {
                mqtt.publish(&records, &states).await;
            }
            records.clear();
            states.clear();
            for done in flushes {
                let _ = done.send(());
            }
        }
    }
}

/// Whether events of `kind` set the retained presence state.
fn is_presence(kind: EventKind) -> bool {
    matches!(kind, EventKind::Connected | EventKind::Disconnected)
}

/// Keeps the `broker` link's receive side drained (it gets no deliveries: it subscribes to
/// nothing, and QoS 0 publishes get no acknowledgement).
pub async fn drain_broker_link(mut link_rx: LinkRx) {
    loop {
        match link_rx.next().await {
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                if link_rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trackers_get_the_switches_and_the_bound_per_client() {
        let mut config = EventsConfig::default();
        config.refused.enabled = false;
        config.rate_limit_per_client = 3;
        let tracker = tracker_config(&config).unwrap();
        assert_eq!(tracker.client_rate_limit, 3);
        assert!(!tracker.enabled.contains(EventKind::Refused));
        assert!(tracker.enabled.contains(EventKind::Dropped));
    }

    #[test]
    fn a_kind_limit_lets_so_many_through_per_second() {
        let limit = KindLimit::new(3);
        let second = 1_700_000_000_000;
        let through: Vec<bool> = (0..5).map(|i| limit.admit(second + i)).collect();
        assert_eq!(through, [true, true, true, false, false]);
        assert!(limit.admit(second + 1_000), "the next second starts over");
        let none = KindLimit::new(0);
        assert!((0..10_000).all(|i| none.admit(second + i)));
    }

    #[test]
    fn an_ack_key_is_the_ids_as_text() {
        let key = |p, m| ack_key(p, m);
        assert_eq!(
            key(Id::Str("p"), Id::Int(42)),
            key(Id::Str("p"), Id::Str("42"))
        );
        assert_eq!(
            key(Id::Int(-7), Id::Int(0)),
            key(Id::Str("-7"), Id::Str("0"))
        );
        assert_eq!(
            key(Id::Int(i64::MIN), Id::Int(i64::MAX)),
            key(
                Id::Str("-9223372036854775808"),
                Id::Str("9223372036854775807")
            )
        );
        // The boundary between the two ids counts.
        assert_ne!(
            key(Id::Str("ab"), Id::Str("c")),
            key(Id::Str("a"), Id::Str("bc"))
        );
        assert_ne!(
            key(Id::Str("p"), Id::Str("m1")),
            key(Id::Str("p"), Id::Str("m2"))
        );
    }

    #[test]
    fn a_kind_limit_holds_across_threads() {
        let limit = Arc::new(KindLimit::new(1_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| limit.admit(5_000)).count())
            })
            .collect();
        let through: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(through, 1_000);
    }
}
