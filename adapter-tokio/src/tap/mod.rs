//! Tap mode: activity events for an existing MQTT broker, by relaying its clients.
//!
//! With `[upstream] address` (or `--upstream host:port`) the binary runs no router of its own:
//! every client connection is relayed to the upstream broker over its own TCP connection, byte
//! for byte (what passes is never re-encoded), through the core's protocol engine in relay mode
//! ([`activity_core::server::Relay`]), which reads both directions, makes every MQTT decision
//! and reports the events. The relay module is its driver. The events go through the same
//! [`crate::events`] pipeline as in embedded mode: to Kafka as configured, and over MQTT by
//! [`publisher`], one connection of the reserved client `broker` to the upstream broker.
//!
//! The engine enforces the rules of embedded mode and answers what it refuses itself; what it
//! refuses never reaches the upstream broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use activity_core::event::Transport;
use activity_core::publishers::PublisherTable;
use activity_core::server::ServerConfig;
use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::acl::Acl;
use crate::admission::Phase;
use crate::auth::Authenticator;
use crate::config::{Config, Sink};
use crate::events::{self, Dispatcher, EventSender, SinkQueue};
use crate::http::{HttpParts, HttpServer};
use crate::kafka::KafkaSink;
use crate::listeners::{Listeners, Serve};
use crate::metrics::Metrics;
use crate::presence::Presence;

pub mod publisher;
mod relay;
mod requests;
mod upstream;

pub use publisher::UpstreamQueue;
use upstream::Upstream;

/// Envelope messages published through one tap whose publisher it remembers for `msgack`
/// (about 480 bytes each); the oldest is forgotten first.
pub const PUBLISHER_TABLE_CAPACITY: usize = 1024;

/// Most QoS 1 and 2 deliveries awaiting the client's acknowledgement that one relayed
/// connection remembers for `msgack` (the oldest is dropped first, counted by its tracker and
/// logged). Larger than embedded mode's [`ACK_STORE_CAPACITY`](crate::connection::ACK_STORE_CAPACITY):
/// the upstream broker's in-flight window is not under the tap's control, and more deliveries
/// are in transit between upstream, tap and client. The store allocates per pending delivery.
pub const TAP_ACK_STORE_CAPACITY: usize = 1024;

pub use requests::MAX_PENDING_REQUESTS;

/// One client id connected through this tap.
struct Entry {
    serial: u64,
    /// The connection's engine: a newer connection of the id closes it as taken over.
    conn: Weak<Mutex<relay::Conn>>,
    /// Set when a new connection with the same id is being relayed: the upstream broker will
    /// close this one, which is then a takeover rather than `upstream_closed`.
    superseded: Arc<AtomicBool>,
    /// Wakes the connection's task once its engine was closed by a newer connection.
    wake: Arc<Notify>,
}

/// The client ids connected through this tap, to label takeovers.
#[derive(Default)]
struct Registry {
    inner: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection holding `client_id` (if any) as about to be taken over; gives its
    /// flag so that a refused takeover can clear it again.
    fn supersede(&self, client_id: &str) -> Option<Arc<AtomicBool>> {
        let map = self.lock();
        let entry = map.get(client_id)?;
        entry.superseded.store(true, Ordering::Release);
        Some(entry.superseded.clone())
    }

    /// Enters `entry` for `client_id`; gives the entry it replaces.
    fn insert(&self, client_id: &str, entry: Entry) -> Option<Entry> {
        self.lock().insert(client_id.to_owned(), entry)
    }

    fn remove(&self, client_id: &str, serial: u64) {
        let mut map = self.lock();
        if map.get(client_id).is_some_and(|e| e.serial == serial) {
            map.remove(client_id);
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What every relay task shares.
struct TapShared {
    config: Arc<Config>,
    /// The upstream broker.
    upstream: Upstream,
    events: EventSender,
    metrics: Arc<Metrics>,
    registry: Registry,
    auth: Authenticator,
    /// The engine's policy, the same for every connection.
    server: ServerConfig,
    permits: Arc<Semaphore>,
    phase: watch::Receiver<Phase>,
    serial: AtomicU64,
    /// Who published the envelope messages that went through this tap.
    publishers: Mutex<Box<PublisherTable<PUBLISHER_TABLE_CAPACITY>>>,
    /// The topic access rules.
    acl: Acl,
    /// Who is online, for the HTTP API (when `http_listen` is set).
    presence: Option<Arc<Presence>>,
}

impl Serve for Arc<TapShared> {
    fn serve<S>(
        self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        relay::serve(stream, peer, transport, self)
    }

    fn handshake_timeout(&self) -> Duration {
        self.config.connect_timeout()
    }
}

/// A running tap. Drop it or call [`Tap::shutdown`] to stop.
pub struct Tap {
    listeners: Listeners,
    shared: Arc<TapShared>,
    phase: watch::Sender<Phase>,
    events: Option<EventSender>,
    sink: Option<JoinHandle<()>>,
    upstream_queue: Option<UpstreamQueue>,
    publisher: Option<JoinHandle<()>>,
    kafka: Option<KafkaSink>,
    /// The HTTP API, when `http_listen` is set.
    http: Option<HttpServer>,
}

impl Tap {
    /// Validates `config` (which must have `upstream.address`), starts the event sinks, binds
    /// the listeners and starts relaying.
    pub async fn start(config: Config) -> anyhow::Result<Tap> {
        config.validate()?;
        let upstream =
            Upstream::new(&config)?.context("tap mode needs upstream.address (or --upstream)")?;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let server =
            crate::connection::server_config(&config, events::tracker_config(&config.events)?);
        let auth = Authenticator::new(&config.users, config.access.allow_anonymous)?;
        let tls = match &config.tls {
            Some(tls) => Some((tls.listen, crate::tls::acceptor(tls)?)),
            None => None,
        };

        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (events, receiver) = events::channel(&config.events, metrics.clone(), None, None);
        let (upstream_queue, publisher) = if config.sinks.contains(&Sink::Mqtt) {
            let (queue, task) = publisher::start(
                &config,
                upstream.clone(),
                &server.tracker.topics,
                metrics.clone(),
            );
            (Some(queue), Some(task))
        } else {
            (None, None)
        };
        let (kafka, kafka_queue) = if config.sinks.contains(&Sink::Kafka) {
            let (sink, queue) = KafkaSink::start(&config, metrics.clone())?;
            (Some(sink), Some(queue))
        } else {
            (None, None)
        };
        // The Kafka sink's buffer first, as in embedded mode.
        let mut queues: Vec<Box<dyn SinkQueue>> = Vec::new();
        if let Some(queue) = kafka_queue {
            queues.push(Box::new(queue));
        }
        if let Some(queue) = &upstream_queue {
            queues.push(Box::new(queue.clone()));
        }
        let http_parts = HttpParts::new(&config);
        if let Some(parts) = &http_parts {
            queues.extend(parts.sinks());
        }
        let dispatcher = Dispatcher { mqtt: None, queues };
        let sink = Some(tokio::spawn(dispatcher.run(receiver)));

        let shared = Arc::new(TapShared {
            config: config.clone(),
            upstream: upstream.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            registry: Registry::default(),
            auth,
            server,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            phase: phase_rx,
            serial: AtomicU64::new(1),
            publishers: Mutex::new(Box::default()),
            acl: config.acl()?,
            presence: http_parts.as_ref().map(|parts| parts.presence.clone()),
        });

        let http_tls = tls.as_ref().map(|(_, acceptor)| acceptor.clone());
        let listeners = Listeners::bind(&config, tls, shared.clone(), &metrics).await?;
        let http = HttpParts::start(
            http_parts,
            &config,
            http_tls,
            metrics.clone(),
            shared.phase.clone(),
        )
        .await?;
        info!(local_addr = %listeners.local_addr, upstream = %upstream.address, tls = config.upstream.tls.is_some(), "MQTT tap ready");

        Ok(Tap {
            listeners,
            shared,
            phase: phase_tx,
            events: Some(events),
            sink,
            upstream_queue,
            publisher,
            kafka,
            http,
        })
    }

    /// The address of the plain MQTT listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.local_addr
    }

    /// The address of the TLS listener, when configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.listeners.tls_addr
    }

    /// The address of the WebSocket listener, when configured.
    pub fn ws_local_addr(&self) -> Option<SocketAddr> {
        self.listeners.ws_addr
    }

    /// The address of the WebSocket-over-TLS listener, when configured.
    pub fn wss_local_addr(&self) -> Option<SocketAddr> {
        self.listeners.wss_addr
    }

    /// The address of the metrics listener, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners.metrics_addr
    }

    /// The address of the HTTP API, when `http_listen` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The tap's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// How many client ids are connected through this tap now.
    pub fn connected_clients(&self) -> usize {
        self.shared.registry.len()
    }

    /// Stops accepting; every connection reports `server_shutdown` at once and keeps relaying
    /// what the upstream sends it (the other clients' shutdown events among it) while the events
    /// reach the sinks, for `shutdown_grace_ms` (at least 100 ms); then every client (and its
    /// upstream connection) is closed and the sinks stop.
    pub async fn shutdown(mut self) {
        self.listeners.stop_accepting();
        let grace = self
            .shared
            .config
            .shutdown_grace()
            .max(Duration::from_millis(100));
        let _ = self.phase.send(Phase::Draining);
        // Every connection reports its end as it sees the phase change, and leaves the registry.
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.registry.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(events) = &self.events {
            let flushed = events.flush(grace).await;
            debug!(flushed, "event queue flushed into the sinks");
        }
        self.wait_publisher(grace).await;
        // Let the upstream deliver the last events to subscribers still connected.
        tokio::time::sleep(grace).await;
        let _ = self.phase.send(Phase::Closing);
        self.listeners.join_connections().await;
        // Events of the last connections to close go out too.
        if let Some(events) = self.events.take() {
            let flushed = events.flush(grace).await;
            debug!(flushed, "final flush of the event queue");
        }
        self.wait_publisher(grace).await;
        if let Some(queue) = self.upstream_queue.take()
            && queue.pending() > 0
        {
            warn!(
                pending = queue.pending(),
                "events not handed to the upstream broker before shutdown"
            );
        }
        if let Some(sink) = self.sink.take() {
            sink.abort();
        }
        if let Some(publisher) = self.publisher.take() {
            // The dispatcher held the last queue handle: the publisher sends DISCONNECT and ends.
            if tokio::time::timeout(Duration::from_secs(1), publisher)
                .await
                .is_err()
            {
                debug!("event publisher did not stop within 1 s");
            }
        }
        if let Some(kafka) = self.kafka.take() {
            kafka
                .shutdown(self.shared.config.kafka.flush_timeout())
                .await;
        }
        if let Some(mut http) = self.http.take() {
            http.stop();
        }
        info!("tap stopped");
    }
}

impl Tap {
    /// Waits up to `grace` until the event publisher has handed its queue to the upstream.
    async fn wait_publisher(&self, grace: Duration) {
        let Some(queue) = &self.upstream_queue else {
            return;
        };
        let deadline = tokio::time::Instant::now() + grace;
        while queue.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.listeners.stop_accepting();
        if let Some(sink) = &self.sink {
            sink.abort();
        }
        if let Some(publisher) = &self.publisher {
            publisher.abort();
        }
        let _ = self.phase.send(Phase::Closing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64) -> (Entry, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (
            Entry {
                serial,
                conn: Weak::new(),
                superseded: flag.clone(),
                wake: Arc::new(Notify::new()),
            },
            flag,
        )
    }

    #[test]
    fn a_second_connection_supersedes_and_replaces_the_first() {
        let registry = Registry::default();
        assert!(registry.supersede("a").is_none(), "nobody to supersede");
        let (first, first_flag) = entry(1);
        assert!(registry.insert("a", first).is_none());
        let flag = registry.supersede("a").expect("the first connection");
        assert!(first_flag.load(Ordering::Acquire));
        // A refused takeover clears the mark again.
        flag.store(false, Ordering::Release);
        assert!(!first_flag.load(Ordering::Acquire));
        let (second, _) = entry(2);
        assert_eq!(
            registry.insert("a", second).map(|old| old.serial),
            Some(1),
            "the old entry"
        );
        // The first connection ending does not remove the second.
        registry.remove("a", 1);
        assert_eq!(registry.len(), 1);
        registry.remove("a", 2);
        assert_eq!(registry.len(), 0);
    }
}
