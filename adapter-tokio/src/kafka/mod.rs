//! The Kafka sink: every activity event to Kafka, buffered (and optionally spooled to disk) so
//! that nothing is lost while Kafka is down, without ever making the MQTT side wait.
//!
//! The event dispatcher hands each event to [`KafkaQueue::offer`], which only appends to a
//! bounded in-memory buffer (the configured [`DropPolicy`] decides what goes when it is full).
//! One thread, the feeder, moves events from that buffer into the spool (when configured) and
//! into librdkafka's [`ThreadedProducer`], at most [`WINDOW`] unacknowledged at a time; delivery
//! results come back through the producer context's callback, never by awaiting a send.
//! Records: value = the event's JSON, key = the client the event is about, headers `kind`
//! and `ts` (decimal milliseconds).
//!
//! Topics are created with the admin API (configured partitions and replication) at startup
//! and whenever all brokers went down and come back, by one tokio task; the feeder sends nothing
//! new until they exist. `message.timeout.ms` defaults to 0 (no timeout): librdkafka retries a
//! sent record until Kafka takes it, and the idempotent producer keeps each partition in order.
//!
//! When topics had to be created again after an outage, the cluster lost its state (a broker
//! with in-memory storage restarted, or the topics were deleted), and with it the idempotent
//! producer's id: librdkafka would retry its records forever against `UNKNOWN_PRODUCER_ID`, or
//! fail them. The feeder then replaces the producer (also when a record fails for a lost
//! producer id or a missing topic, or the producer reports a fatal error): dropping the old one purges what it held, and the
//! purged records are sent again through the new one, in their original order (from the spool,
//! or from the copy each in-flight record keeps without a spool).

pub mod spool;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use activity_core::event::EventKind;
use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::{Config, DropPolicy, KafkaConfig};
use crate::events::{EventRecord, SinkQueue};
use crate::metrics::Metrics;
use spool::Spool;

/// The most records handed to librdkafka and not yet acknowledged.
pub const WINDOW: usize = 20_000;

/// The producer settings the sink starts from; `kafka.properties` overrides any of them.
pub const PRODUCER_DEFAULTS: [(&str, &str); 7] = [
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
    // No timeout: a record stays in librdkafka (retried, in order) until Kafka takes it.
    ("message.timeout.ms", "0"),
    // The sink creates its topics itself: a record must never create one with the broker's
    // defaults (and race the sink's own creation after an outage).
    ("allow.auto.create.topics", "false"),
    // Notice a broker that came back within a second.
    ("reconnect.backoff.max.ms", "1000"),
];

/// How long one topic-creation request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The feeder's longest sleep (it also syncs the spool on its interval).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Locks `mutex`, also after a panic elsewhere (the state stays consistent: every update is a
/// single push or take).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the delivery callback reports to the feeder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Kafka acknowledged the record.
    Delivered,
    /// Kafka refused it for good.
    Failed,
    /// Not delivered, to be sent again: the producer was dropped with the record still in it,
    /// its topic was missing (Kafka lost it; the sink creates it again), or Kafka lost the
    /// producer's id (the sink replaces the producer).
    Retry,
}

/// How the feeder should stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Keep delivering until everything is acknowledged or the deadline passes.
    Flush(Instant),
    /// Stop now (the broker was dropped): spool what is buffered and exit.
    Now,
}

/// A delivery result for the feeder.
struct Ack {
    /// The record's sequence number.
    seq: u64,
    /// What happened to it.
    outcome: Outcome,
    /// The record itself when it was purged and exists nowhere else (no spool).
    record: Option<EventRecord>,
}

/// The state shared by the dispatcher, the feeder, the delivery callback and the topic task.
#[derive(Default)]
struct State {
    /// Events not yet taken by the feeder.
    buffer: VecDeque<EventRecord>,
    /// Delivery results not yet seen by the feeder.
    acks: Vec<Ack>,
    /// Whether every topic is known to exist (the feeder sends only then).
    topics_ready: bool,
    /// Whether the producer must be replaced (the cluster lost its topics, and so its producer
    /// ids) before anything more is sent.
    renew_producer: bool,
    /// Set when the sink stops.
    stop: Option<Stop>,
}

/// Whether Kafka is reachable; logs each change once.
struct Reachability {
    down: AtomicBool,
    brokers: String,
    spooled: bool,
}

impl Reachability {
    /// Kafka could not be reached: log it if it was reachable.
    fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            let held = if self.spooled {
                "memory and the spool"
            } else {
                "memory"
            };
            warn!(brokers = %self.brokers, reason = why, "Kafka unreachable: events wait in {held}");
        }
    }

    /// Kafka answered: log it if it was unreachable.
    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            info!(brokers = %self.brokers, "Kafka reachable again");
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the feeder: new events, acks, topics ready, stop.
    wake: Condvar,
    /// Asks the topic task to (re)create the topics.
    topics_wanted: Notify,
    capacity: usize,
    policy: DropPolicy,
    metrics: Arc<Metrics>,
    reachability: Reachability,
}

impl Shared {
    /// Records whether every topic is known to exist (the feeder sends only then), also in the
    /// `activity_kafka_ready` gauge.
    fn set_topics_ready(&self, ready: bool) {
        lock(&self.state).topics_ready = ready;
        self.metrics
            .kafka
            .ready
            .store(u64::from(ready), Ordering::Relaxed);
    }

    /// Counts `n` events dropped because `full` (the buffer or the spool) was full, and logs
    /// when the total passes a power of two (rate-limited).
    fn count_dropped(&self, n: u64, full: &str) {
        if n == 0 {
            return;
        }
        let before = self.metrics.kafka.dropped.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if (before + 1..=after).any(u64::is_power_of_two) {
            warn!(
                dropped = after,
                policy = ?self.policy,
                "Kafka {full} full: events are being dropped"
            );
        }
    }
}

/// The handle the dispatcher uses to hand events to the Kafka sink; cheap to clone.
#[derive(Clone)]
pub struct KafkaQueue {
    shared: Arc<Shared>,
}

impl SinkQueue for KafkaQueue {
    /// Buffers `record` for Kafka without waiting; when the buffer is full the drop policy
    /// decides which event goes, and the drop is counted.
    fn offer(&self, record: EventRecord) {
        self.shared
            .metrics
            .kafka
            .offered
            .fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.shared.state);
        let was_empty = state.buffer.is_empty();
        if state.buffer.len() >= self.shared.capacity {
            if self.shared.policy == DropPolicy::DropOldest {
                state.buffer.pop_front();
                state.buffer.push_back(record);
            }
            drop(state);
            self.shared.count_dropped(1, "buffer");
            return;
        }
        state.buffer.push_back(record);
        drop(state);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }
}

/// A running Kafka sink; [`KafkaSink::shutdown`] flushes it, dropping it stops at once (what
/// is buffered goes to the spool, when there is one).
pub struct KafkaSink {
    shared: Arc<Shared>,
    feeder: Option<JoinHandle<()>>,
    topic_task: tokio::task::JoinHandle<()>,
}

/// The one record sent in flight: its sequence number, when it was handed over, and (without a
/// spool) a copy to send again if it is purged.
struct InFlight {
    seq: u64,
    sent: Instant,
    record: Option<EventRecord>,
}

/// The producer's context: delivery results and client errors.
struct SinkContext {
    shared: Arc<Shared>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_quietly(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.shared.reachability.mark_down(reason);
            self.shared.set_topics_ready(false);
            // Create missing topics once the brokers are back.
            self.shared.topics_wanted.notify_one();
        } else if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            // An idempotent producer's fatal error: it sends nothing more; replace it.
            warn!(error = %error, reason, "Kafka producer failed: the sink replaces it");
            lock(&self.shared.state).renew_producer = true;
            self.shared.wake.notify_one();
        } else {
            debug!(error = %error, reason, "librdkafka error");
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, in_flight: Box<InFlight>) {
        let in_flight = *in_flight;
        let kafka = &self.shared.metrics.kafka;
        let outcome = match result {
            Ok(_) => {
                kafka.observe_delivery(in_flight.sent.elapsed());
                self.shared.reachability.mark_up();
                Outcome::Delivered
            }
            Err((
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
                ),
                _,
            )) => Outcome::Retry,
            Err((
                KafkaError::MessageProduction(
                    code @ (RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition
                    | RDKafkaErrorCode::UnknownTopicOrPartition),
                ),
                _,
            )) => {
                // Kafka lost the topic (e.g. a broker with in-memory storage restarted before
                // the sink created it again): hold the record until it exists.
                debug!(code = ?code, "Kafka topic missing: the event waits for it");
                self.shared.set_topics_ready(false);
                self.shared.topics_wanted.notify_one();
                Outcome::Retry
            }
            Err((
                KafkaError::MessageProduction(
                    code @ (RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fatal),
                ),
                _,
            )) => {
                // Kafka lost the idempotent producer's state: only a new producer gets on.
                debug!(code = ?code, "Kafka refused the producer's id: the sink replaces it");
                lock(&self.shared.state).renew_producer = true;
                Outcome::Retry
            }
            Err((error, _)) => {
                let failed = kafka.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if failed.is_power_of_two() {
                    warn!(error = %error, failed, "Kafka refused an event");
                }
                Outcome::Failed
            }
        };
        let record = match outcome {
            Outcome::Retry => in_flight.record,
            Outcome::Delivered | Outcome::Failed => None,
        };
        lock(&self.shared.state).acks.push(Ack {
            seq: in_flight.seq,
            outcome,
            record,
        });
        self.shared.wake.notify_one();
    }
}

/// The admin client's context: logs quietly (the sink logs reachability itself).
struct AdminContext;

impl ClientContext for AdminContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_quietly(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(error = %error, reason, "librdkafka admin error");
    }
}

/// librdkafka's log lines: connection failures are the sink's outage (logged once by
/// [`Reachability`]), so they go to debug; other warnings and errors stay visible.
fn log_quietly(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let connection = matches!(fac, "FAIL" | "ERROR" | "BROKERFAIL" | "CONNECT");
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning
            if !connection =>
        {
            warn!(target: "librdkafka", "{fac}: {message}");
        }
        _ => debug!(target: "librdkafka", "{fac}: {message}"),
    }
}

/// The librdkafka configuration: brokers, then `defaults`, then `kafka.properties`.
fn client_config(kafka: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", kafka.brokers.join(","));
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in &kafka.properties {
        config.set(key, value.to_string());
    }
    config
}

impl KafkaSink {
    /// Opens the spool (if configured), creates the producer and starts the feeder thread and
    /// the topic task; Kafka need not be reachable.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(KafkaSink, KafkaQueue)> {
        let kafka = &config.kafka;
        let topics = EventKind::ALL.map(|kind| kafka.topic_of(kind, &config.events.prefix));
        let spool = match &kafka.spool {
            Some(spool_config) => {
                let spool = Spool::open(spool_config).context("kafka.spool")?;
                if !spool.is_empty() {
                    info!(
                        events = spool.len(),
                        bytes = spool.bytes(),
                        path = %spool.path().display(),
                        "Kafka spool holds events from before: they are sent first"
                    );
                }
                Some(spool)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            topics_wanted: Notify::new(),
            capacity: kafka.buffer_capacity,
            policy: kafka.drop_policy,
            metrics,
            reachability: Reachability {
                down: AtomicBool::new(false),
                brokers: kafka.brokers.join(","),
                spooled: spool.is_some(),
            },
        });
        let producer_config = client_config(kafka, &PRODUCER_DEFAULTS);
        let producer: ThreadedProducer<SinkContext> = producer_config
            .create_with_context(SinkContext {
                shared: shared.clone(),
            })
            .context("kafka.properties: the Kafka producer refused its configuration")?;
        let admin: AdminClient<AdminContext> =
            client_config(kafka, &[("reconnect.backoff.max.ms", "1000")])
                .create_with_context(AdminContext)
                .context("kafka.properties: the Kafka admin client refused its configuration")?;

        let mut names: Vec<String> = topics.to_vec();
        names.sort();
        names.dedup();
        let topic_task = tokio::spawn(keep_topics(
            shared.clone(),
            admin,
            names,
            kafka.partitions,
            kafka.replication,
        ));
        shared.topics_wanted.notify_one();

        let feeder = Feeder {
            shared: shared.clone(),
            producer,
            producer_config,
            spool,
            topics,
            in_flight: 0,
            resend: Vec::new(),
            rewind_when_idle: false,
            next_seq: 0,
        };
        let feeder = std::thread::Builder::new()
            .name("kafka-feeder".into())
            .spawn(move || feeder.run())
            .context("cannot start the Kafka feeder thread")?;
        info!(brokers = %kafka.brokers.join(","), "Kafka sink started");
        Ok((
            KafkaSink {
                shared: shared.clone(),
                feeder: Some(feeder),
                topic_task,
            },
            KafkaQueue { shared },
        ))
    }

    /// Keeps delivering for at most `timeout`, then stops and logs how many events were left
    /// (and whether they stay in the spool).
    pub async fn shutdown(mut self, timeout: Duration) {
        self.stop(Stop::Flush(Instant::now() + timeout));
        if let Some(feeder) = self.feeder.take() {
            let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
        }
    }

    fn stop(&self, how: Stop) {
        self.topic_task.abort();
        lock(&self.shared.state).stop = Some(how);
        self.shared.wake.notify_one();
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        if let Some(feeder) = self.feeder.take() {
            self.stop(Stop::Now);
            // The feeder only spools what it holds and exits; the spool file must be closed
            // before a new broker may open it.
            let _ = feeder.join();
        }
    }
}

/// Creates the missing topics whenever asked, retrying until Kafka answers.
async fn keep_topics(
    shared: Arc<Shared>,
    admin: AdminClient<AdminContext>,
    topics: Vec<String>,
    partitions: i32,
    replication: i32,
) {
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    // Whether the topics existed once: creating them again means the cluster lost its state.
    let mut existed = false;
    loop {
        shared.topics_wanted.notified().await;
        let mut backoff = Duration::from_millis(200);
        loop {
            match create_topics(&admin, &new_topics, &options).await {
                Ok(created) => {
                    if !created.is_empty() {
                        info!(topics = ?created, partitions, replication, "created Kafka topics");
                    }
                    shared.reachability.mark_up();
                    let mut state = lock(&shared.state);
                    state.topics_ready = true;
                    shared.metrics.kafka.ready.store(1, Ordering::Relaxed);
                    if existed && !created.is_empty() {
                        state.renew_producer = true;
                    }
                    drop(state);
                    existed = true;
                    shared.wake.notify_one();
                    break;
                }
                Err(why) => {
                    shared.reachability.mark_down(&why);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Creates `topics`; the names of those that did not exist, or why it failed.
async fn create_topics(
    admin: &AdminClient<AdminContext>,
    topics: &[NewTopic<'_>],
    options: &AdminOptions,
) -> Result<Vec<String>, String> {
    let results = admin
        .create_topics(topics, options)
        .await
        .map_err(|e| e.to_string())?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("cannot create topic {name}: {code}")),
        }
    }
    Ok(created)
}

/// The feeder thread: buffer to spool to producer, and acknowledgements back.
struct Feeder {
    shared: Arc<Shared>,
    producer: ThreadedProducer<SinkContext>,
    /// The producer's configuration, to replace it.
    producer_config: ClientConfig,
    spool: Option<Spool>,
    topics: [String; EventKind::ALL.len()],
    /// Records handed to the producer and not yet reported back.
    in_flight: usize,
    /// Records to send again (without a spool), by sequence number, before any new one.
    resend: Vec<(u64, EventRecord)>,
    /// Whether the spool must be rewound once nothing is in flight (a record came back).
    rewind_when_idle: bool,
    /// The sequence number of the next record sent without a spool.
    next_seq: u64,
}

/// What the feeder took from the shared state in one round.
struct Round {
    records: Vec<EventRecord>,
    acks: Vec<Ack>,
    topics_ready: bool,
    renew_producer: bool,
    stop: Option<Stop>,
}

impl Feeder {
    fn run(mut self) {
        let stop = loop {
            let round = self.take_round(None);
            if let Some(stop) = round.stop {
                // Handle what was taken, then stop.
                self.handle(round);
                break stop;
            }
            self.handle(round);
        };
        match stop {
            Stop::Flush(deadline) => self.flush(deadline),
            Stop::Now => {}
        }
        self.finish();
    }

    /// Whether the feeder may hand more records to the producer now.
    fn room(&self, topics_ready: bool) -> usize {
        if topics_ready {
            WINDOW.saturating_sub(self.in_flight)
        } else {
            0
        }
    }

    /// Waits for work (at most [`IDLE_WAIT`], or until `deadline`) and takes it.
    fn take_round(&self, deadline: Option<Instant>) -> Round {
        let mut state = lock(&self.shared.state);
        let has_unsent = self.spool.as_ref().is_some_and(Spool::has_unsent);
        let has_work = |state: &State| {
            let room = self.room(state.topics_ready);
            !state.acks.is_empty()
                || state.stop.is_some()
                || (state.renew_producer && state.topics_ready)
                || (!state.buffer.is_empty() && (self.spool.is_some() || room > 0))
                || (has_unsent && room > 0)
                || (!self.resend.is_empty() && room > 0)
        };
        if !has_work(&state) {
            let wait = deadline.map_or(IDLE_WAIT, |d| {
                d.saturating_duration_since(Instant::now()).min(IDLE_WAIT)
            });
            state = self
                .shared
                .wake
                .wait_timeout_while(state, wait, |state| !has_work(state))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let acks = std::mem::take(&mut state.acks);
        let renew_producer = state.topics_ready && std::mem::take(&mut state.renew_producer);
        let records = if self.spool.is_some() {
            state.buffer.drain(..).collect()
        } else {
            // Acks about to be counted free room too; nothing is sent before the topics exist.
            let room = if state.topics_ready {
                self.room(true)
                    .saturating_add(acks.len())
                    .saturating_sub(self.resend.len())
                    .min(WINDOW)
                    .min(state.buffer.len())
            } else {
                0
            };
            state.buffer.drain(..room).collect()
        };
        Round {
            records,
            acks,
            topics_ready: state.topics_ready,
            renew_producer,
            stop: state.stop,
        }
    }

    /// Replaces the producer; dropping the old one purges what it held, and the purged records
    /// come back as acks (appended to `acks`).
    fn renew_producer(&mut self, acks: &mut Vec<Ack>) {
        let context = SinkContext {
            shared: self.shared.clone(),
        };
        match self.producer_config.create_with_context(context) {
            Ok(producer) => {
                let old = std::mem::replace(&mut self.producer, producer);
                // Purges, then serves the purged records' delivery reports.
                drop(old);
                acks.append(&mut lock(&self.shared.state).acks);
                info!(
                    in_flight = self.in_flight,
                    "Kafka lost its topics or the producer's id: a new producer sends again \
                     what the old one held"
                );
            }
            Err(e) => warn!(error = %e, "cannot create a new Kafka producer"),
        }
    }

    /// Processes one round: acks, spooling, sending; then syncs and updates the gauges.
    fn handle(&mut self, mut round: Round) {
        if round.renew_producer {
            self.renew_producer(&mut round.acks);
        }
        self.in_flight = self.in_flight.saturating_sub(round.acks.len());
        if let Some(spool) = &mut self.spool {
            let done: Vec<u64> = round
                .acks
                .iter()
                .filter(|ack| ack.outcome != Outcome::Retry)
                .map(|ack| ack.seq)
                .collect();
            if let Err(e) = spool.remove(&done) {
                warn!(error = %e, "Kafka spool: cannot remove delivered events");
            }
            self.rewind_when_idle |= round.acks.iter().any(|ack| ack.outcome == Outcome::Retry);
            if round.renew_producer || (self.rewind_when_idle && self.in_flight == 0) {
                // Nothing is in flight any more: send everything stored again.
                self.rewind_when_idle = false;
                if let Err(e) = spool.rewind() {
                    warn!(error = %e, "Kafka spool: cannot read");
                }
            }
            if !round.records.is_empty() {
                match spool.append(&round.records, self.shared.policy) {
                    Ok(dropped) => self.shared.count_dropped(dropped, "spool"),
                    Err(e) => {
                        warn!(error = %e, "Kafka spool: cannot write, events kept in memory only");
                        // Send them straight away instead.
                        for record in round.records {
                            let seq = u64::MAX;
                            self.send(seq, &record);
                        }
                    }
                }
            }
            let room = self.room(round.topics_ready);
            if room > 0 {
                let spool = self
                    .spool
                    .as_mut()
                    .expect("checked above: the spool exists");
                match spool.take_unsent(room) {
                    Ok(records) => {
                        for (seq, record) in records {
                            self.send(seq, &record);
                        }
                    }
                    Err(e) => warn!(error = %e, "Kafka spool: cannot read"),
                }
            }
            let spool = self
                .spool
                .as_mut()
                .expect("checked above: the spool exists");
            if let Err(e) = spool.sync(false) {
                warn!(error = %e, "Kafka spool: cannot sync");
            }
        } else {
            // Records that came back first, in their original order, once the topics exist.
            self.resend.extend(
                round
                    .acks
                    .into_iter()
                    .filter_map(|ack| ack.record.map(|record| (ack.seq, record))),
            );
            let mut records = Vec::new();
            if round.topics_ready {
                self.resend.sort_by_key(|(seq, _)| *seq);
                records.append(&mut self.resend);
            }
            for record in round.records {
                records.push((self.next_seq, record));
                self.next_seq += 1;
            }
            for (seq, record) in records {
                self.send(seq, &record);
            }
        }
        self.update_gauges();
    }

    /// Hands one record to the producer, waiting while its queue is full.
    fn send(&mut self, seq: u64, record: &EventRecord) {
        let ts = record.ts.to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: "kind",
                value: Some(record.kind.name()),
            })
            .insert(Header {
                key: "ts",
                value: Some(ts.as_str()),
            });
        let mut base = BaseRecord::with_opaque_to(
            &self.topics[record.kind as usize],
            Box::new(InFlight {
                seq,
                sent: Instant::now(),
                // The spool keeps its own copy.
                record: self.spool.is_none().then(|| record.clone()),
            }),
        )
        .key(record.subject.as_bytes())
        .payload(&record.json[..])
        .headers(headers);
        loop {
            match self.producer.send(base) {
                Ok(()) => {
                    self.in_flight += 1;
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own queue is full (a small queue.buffering.max.messages):
                    // its polling thread frees room as deliveries complete.
                    base = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    let failed = self
                        .shared
                        .metrics
                        .kafka
                        .failed
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    if failed.is_power_of_two() {
                        warn!(error = %error, failed, "Kafka producer refused an event");
                    }
                    // Refused for good: out of the spool too.
                    lock(&self.shared.state).acks.push(Ack {
                        seq,
                        outcome: Outcome::Failed,
                        record: None,
                    });
                    self.in_flight += 1;
                    return;
                }
            }
        }
    }

    fn update_gauges(&self) {
        let buffered = lock(&self.shared.state).buffer.len() as u64;
        let kafka = &self.shared.metrics.kafka;
        let waiting = match &self.spool {
            Some(spool) => {
                kafka.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
                kafka.spool_events.store(spool.len(), Ordering::Relaxed);
                spool.len()
            }
            None => (self.in_flight + self.resend.len()) as u64,
        };
        kafka.buffered.store(buffered + waiting, Ordering::Relaxed);
    }

    /// Keeps delivering until nothing is left or `deadline` passes.
    fn flush(&mut self, deadline: Instant) {
        loop {
            let round = self.take_round(Some(deadline));
            self.handle(round);
            let buffer_empty = lock(&self.shared.state).buffer.is_empty();
            let spool_empty = self.spool.as_ref().is_none_or(Spool::is_empty);
            if buffer_empty && self.in_flight == 0 && self.resend.is_empty() && spool_empty {
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Spools what is still buffered, syncs, and logs what is left.
    fn finish(mut self) {
        let records: Vec<EventRecord> = lock(&self.shared.state).buffer.drain(..).collect();
        match &mut self.spool {
            Some(spool) => {
                if !records.is_empty() {
                    match spool.append(&records, self.shared.policy) {
                        Ok(dropped) => self.shared.count_dropped(dropped, "spool"),
                        Err(e) => warn!(error = %e, "Kafka spool: cannot write at shutdown"),
                    }
                }
                if let Err(e) = spool.sync(true) {
                    warn!(error = %e, "Kafka spool: cannot sync at shutdown");
                }
                if spool.is_empty() {
                    info!("Kafka sink stopped: every event delivered");
                } else {
                    warn!(
                        left = spool.len(),
                        path = %spool.path().display(),
                        "Kafka sink stopped with events undelivered: they stay in the spool \
                         and are sent at the next start"
                    );
                }
            }
            None => {
                let left = records.len() + self.in_flight + self.resend.len();
                if left == 0 {
                    info!("Kafka sink stopped: every event delivered");
                } else {
                    warn!(
                        left,
                        "Kafka sink stopped with events undelivered: they are lost"
                    );
                }
            }
        }
        self.update_gauges();
    }
}
