//! The broker: the rumqttd router, the listeners, the event sink, and an orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use activity_core::event::Transport;
use anyhow::Context;
use rumqttd::local::LinkBuilder;
use rumqttd::{Router, RouterConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::config::{Config, Sink};
use crate::connection::{self, LinkBuilders, LinkFactory, Phase, Registry, Shared};
use crate::events::{self, Dispatcher, EventSender, MqttSink, SinkQueue};
use crate::http::{HttpParts, HttpServer};
use crate::interest::Interest;
use crate::kafka::KafkaSink;
use crate::listeners::{Listeners, Serve};
use crate::log_budget::LogBudget;
use crate::metrics::Metrics;

/// The name rumqttd gives the thread of router 0.
const ROUTER_THREAD: &str = "router-0";

/// The sizes of the front's tables keyed by client id ([`Broker::client_tables`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientTables {
    /// Client ids connected now (the takeover registry).
    pub connected: usize,
    /// Clients listed by the HTTP API's presence (0 without the HTTP API).
    pub presence: usize,
    /// Client ids with a subscription to an event topic (which event kinds are wanted).
    pub event_subscribers: usize,
}

/// A running broker. Drop it or call [`Broker::shutdown`] to stop (dropping stops the Kafka
/// sink at once: what it still buffers goes to its spool, when there is one).
pub struct Broker {
    listeners: Listeners,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    events: Option<EventSender>,
    sink: Option<JoinHandle<()>>,
    kafka: Option<KafkaSink>,
    /// The HTTP API, when `http_listen` is set.
    http: Option<HttpServer>,
}

impl Broker {
    /// Validates `config`, starts the router, binds the listeners and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Broker> {
        config.validate()?;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let tracker_config = events::tracker_config(&config.events)?;
        let auth = Authenticator::new(&config.users, config.access.allow_anonymous)?;
        let tls = match &config.tls {
            Some(tls) => Some((tls.listen, crate::tls::acceptor(tls)?)),
            None => None,
        };

        // The router: one thread, reached only through links.
        let router = Router::new(
            0,
            RouterConfig {
                // Our own `broker` link, plus room for connections finishing while new ones
                // start; the front enforces `max_connections` itself.
                max_connections: config.max_connections + 64,
                max_outgoing_packet_count: 200,
                max_segment_size: config.router.segment_size,
                max_segment_count: config.router.segment_count,
                ..RouterConfig::default()
            },
        );
        // With the Kafka sink on, the router serves the clients at their lower priority: it is
        // started lowered, so it never competes with the sink (crate::priority).
        let nice = if config.sinks.contains(&Sink::Kafka) {
            config.kafka.client_threads_nice
        } else {
            0
        };
        let router_tx = if nice > 0 {
            let (router_tx, lowered) = crate::priority::spawn_lowered(nice, move || router.spawn());
            if let Err(e) = lowered {
                warn!(
                    thread = ROUTER_THREAD,
                    error = %e,
                    "cannot lower the router thread's priority: it competes with the Kafka sink"
                );
            }
            router_tx
        } else {
            router.spawn()
        };
        let link_factory: LinkFactory = Arc::new(move |client_id: &str, clean: bool| {
            LinkBuilder::new(client_id, router_tx.clone())
                .clean_session(clean)
                .build()
                .map_err(|e| anyhow::anyhow!("router link for {client_id}: {e}"))
        });

        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        // With the router as the only sink, events no subscription receives are not encoded,
        // unless the HTTP API takes them (a stream holds their kind, or the ack table's).
        let interest = Arc::new(Interest::new(&tracker_config.topics));
        let router_only = config.sinks.iter().all(|sink| *sink == Sink::Mqtt);
        let http_parts = HttpParts::new(&config);
        let (events, receiver) = events::channel(
            &config.events,
            metrics.clone(),
            router_only.then(|| interest.clone()),
            http_parts.as_ref().map(HttpParts::watched),
        );

        // The reserved client `broker` publishes the events.
        let factory = link_factory.clone();
        let (link_tx, link_rx, _) = tokio::task::spawn_blocking(move || {
            factory(activity_core::client_id::RESERVED_CLIENT_ID, true)
        })
        .await
        .context("router link of the event sink")??;
        tokio::spawn(events::drain_broker_link(link_rx));
        let mqtt = config.sinks.contains(&Sink::Mqtt).then(|| {
            MqttSink::new(
                link_tx,
                &tracker_config.topics,
                &config.events,
                metrics.clone(),
                interest.clone(),
            )
        });
        let (kafka, kafka_queue) = if config.sinks.contains(&Sink::Kafka) {
            let (sink, queue) = KafkaSink::start(&config, metrics.clone())?;
            (Some(sink), Some(queue))
        } else {
            (None, None)
        };
        let mut queues: Vec<Box<dyn SinkQueue>> = Vec::new();
        if let Some(queue) = kafka_queue {
            queues.push(Box::new(queue));
        }
        if let Some(parts) = &http_parts {
            queues.extend(parts.sinks());
        }
        let dispatcher = Dispatcher { mqtt, queues };
        let sink = Some(tokio::spawn(dispatcher.run(receiver)));

        let shared = Arc::new(Shared {
            config: config.clone(),
            links: LinkBuilders::new(link_factory, metrics.clone()),
            router_names: Default::default(),
            router_sessions: Default::default(),
            events: events.clone(),
            metrics: metrics.clone(),
            registry: Registry::default(),
            auth,
            server: connection::server_config(&config, tracker_config),
            permits: Arc::new(Semaphore::new(config.max_connections)),
            phase: phase_rx,
            serial: AtomicU64::new(1),
            unreported: AtomicU64::new(0),
            interest,
            acl: config.acl()?,
            presence: http_parts.as_ref().map(|parts| parts.presence.clone()),
            log_budget: config
                .router
                .max_filters(config.max_packet_size)
                .map(LogBudget::new),
        });

        let http_tls = tls.as_ref().map(|(_, acceptor)| acceptor.clone());
        let listeners = Listeners::bind(&config, tls, shared.clone(), &metrics).await?;
        info!(local_addr = %listeners.local_addr, "MQTT listener ready");
        let http = HttpParts::start(
            http_parts,
            &config,
            http_tls,
            metrics.clone(),
            shared.phase.clone(),
        )
        .await?;

        Ok(Broker {
            listeners,
            shared,
            phase: phase_tx,
            events: Some(events),
            sink,
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

    /// The broker's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// How many client ids are connected now.
    pub fn connected_clients(&self) -> usize {
        self.shared.registry.len()
    }

    /// How many entries the front's tables keyed by client id hold now: each is released when
    /// its client leaves (a clean session) or is taken over, so a broker that sees a new client
    /// id per connection does not grow in them (docs/scale.md, "Soak").
    pub fn client_tables(&self) -> ClientTables {
        ClientTables {
            connected: self.shared.registry.len(),
            presence: self.shared.presence.as_ref().map_or(0, |p| p.len()),
            event_subscribers: self.shared.interest.sessions(),
        }
    }

    /// Stops accepting, reports `server_shutdown` for every connected client, gives the events
    /// `shutdown_grace_ms` to reach their subscribers, then closes every connection.
    pub async fn shutdown(mut self) {
        self.listeners.stop_accepting();
        let grace = self.shared.config.shutdown_grace();
        let _ = self.phase.send(Phase::Draining);
        // Every connection queues its `server_shutdown` event as it sees the phase change.
        let deadline = tokio::time::Instant::now() + grace.max(Duration::from_millis(100));
        let unreported = || {
            self.shared
                .unreported
                .load(std::sync::atomic::Ordering::Acquire)
        };
        while unreported() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained_all = unreported() == 0;
        if let Some(events) = &self.events {
            let flushed = events.flush(grace).await;
            debug!(flushed, "event queue flushed into the sinks");
        }
        // Let the router deliver the last events to subscribers still connected.
        tokio::time::sleep(grace).await;
        let _ = self.phase.send(Phase::Closing);
        self.listeners.join_connections().await;
        if !drained_all {
            warn!("some connections had not reported server_shutdown in time");
        }
        // Events of the last connections to close (takeovers racing the shutdown, wills) go
        // out too; then the sink stops.
        if let Some(events) = self.events.take() {
            let flushed = events.flush(Duration::from_secs(1)).await;
            debug!(flushed, "final flush of the event queue");
        }
        if let Some(sink) = self.sink.take() {
            sink.abort();
        }
        // Everything queued is in the Kafka sink's buffer now: give Kafka its flush time.
        if let Some(kafka) = self.kafka.take() {
            kafka
                .shutdown(self.shared.config.kafka.flush_timeout())
                .await;
        }
        if let Some(mut http) = self.http.take() {
            http.stop();
        }
        info!("broker stopped");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.listeners.stop_accepting();
        let _ = self.phase.send(Phase::Closing);
    }
}

impl Serve for Arc<Shared> {
    fn serve<S>(
        self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        connection::serve(stream, peer, transport, self)
    }

    fn handshake_timeout(&self) -> Duration {
        self.config.connect_timeout()
    }
}
