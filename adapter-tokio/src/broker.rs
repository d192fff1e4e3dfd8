//! The broker: the rumqttd router, the listeners, the event sink, and an orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use activity_core::event::EventKind;
use activity_core::system::SystemTopics;
use activity_core::tracker::{EventKinds, TrackerConfig};
use anyhow::Context;
use rumqttd::local::LinkBuilder;
use rumqttd::{Router, RouterConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::config::{Config, Sink};
use crate::connection::{self, LinkFactory, Phase, Registry, Shared};
use crate::events::{self, Dispatcher, EventSender, MqttSink};
use crate::interest::Interest;
use crate::kafka::KafkaSink;
use crate::metrics::Metrics;

/// The name rumqttd gives the thread of router 0.
const ROUTER_THREAD: &str = "router-0";

/// A running broker. Drop it or call [`Broker::shutdown`] to stop (dropping stops the Kafka
/// sink at once: what it still buffers goes to its spool, when there is one).
pub struct Broker {
    listeners: Listeners,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    events: Option<EventSender>,
    sink: Option<JoinHandle<()>>,
    kafka: Option<KafkaSink>,
}

/// Builds the trackers' configuration from the broker's.
pub(crate) fn tracker_config(config: &Config) -> anyhow::Result<TrackerConfig> {
    let topics = SystemTopics::new(&config.events.prefix)
        .map_err(|e| anyhow::anyhow!("events.prefix: {e}"))?;
    if config.events.prefix.starts_with('$') {
        // rumqttd's router refuses subscriptions to `$` filters: nobody could read the events.
        anyhow::bail!("events.prefix: a prefix starting with `$` cannot be subscribed to here");
    }
    let mut enabled = EventKinds::NONE;
    for kind in EventKind::ALL {
        if config.events.kind(kind).enabled {
            enabled = enabled.with(kind);
        }
    }
    Ok(TrackerConfig { topics, enabled })
}

impl Broker {
    /// Validates `config`, starts the router, binds the listeners and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Broker> {
        config.validate()?;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let tracker_config = tracker_config(&config)?;
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
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 4,
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
        // With the router as the only sink, events no subscription receives are not encoded.
        let interest = Arc::new(Interest::new(&tracker_config.topics));
        let router_only = config.sinks.iter().all(|sink| *sink == Sink::Mqtt);
        let (events, receiver) = events::channel(
            &config.events,
            metrics.clone(),
            router_only.then(|| interest.clone()),
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
        let dispatcher = Dispatcher {
            mqtt,
            upstream: None,
            kafka: kafka_queue,
        };
        let sink = Some(tokio::spawn(dispatcher.run(receiver)));

        let shared = Arc::new(Shared {
            config: config.clone(),
            link_factory,
            events: events.clone(),
            metrics: metrics.clone(),
            registry: Registry::default(),
            auth,
            tracker_config,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            phase: phase_rx,
            serial: AtomicU64::new(1),
            unreported: AtomicU64::new(0),
            interest,
        });

        let listeners = Listeners::bind(&config, tls, shared.clone(), &metrics).await?;
        info!(local_addr = %listeners.local_addr, "MQTT listener ready");

        Ok(Broker {
            listeners,
            shared,
            phase: phase_tx,
            events: Some(events),
            sink,
            kafka,
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

    /// The address of the metrics listener, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners.metrics_addr
    }

    /// The broker's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// How many client ids are connected now.
    pub fn connected_clients(&self) -> usize {
        self.shared.registry.len()
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
        info!("broker stopped");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.listeners.stop_accepting();
        let _ = self.phase.send(Phase::Closing);
    }
}

/// The listeners of a server (plain MQTT, TLS, metrics), their accept loops and the tasks of
/// the connections they accepted; shared by the embedded broker and the tap.
pub(crate) struct Listeners {
    /// The address of the plain MQTT listener.
    pub(crate) local_addr: SocketAddr,
    /// The address of the TLS listener, when configured.
    pub(crate) tls_addr: Option<SocketAddr>,
    /// The address of the metrics listener, when configured.
    pub(crate) metrics_addr: Option<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Listeners {
    /// Binds `config.listen`, the TLS listener (`tls`: its address and acceptor) and
    /// `config.metrics_listen`, and starts accepting: client streams go to `server`.
    pub(crate) async fn bind<T: Serve>(
        config: &Config,
        tls: Option<(SocketAddr, TlsAcceptor)>,
        server: T,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Listeners> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let mut accept_tasks = vec![tokio::spawn(accept_loop(
            listener,
            None,
            server.clone(),
            connections.clone(),
        ))];
        let mut tls_addr = None;
        if let Some((addr, acceptor)) = tls {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("tls.listen: cannot bind {addr}"))?;
            let addr = listener.local_addr()?;
            info!(%addr, "MQTT over TLS listener ready");
            tls_addr = Some(addr);
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                Some(acceptor),
                server,
                connections.clone(),
            )));
        }
        let mut metrics_addr = None;
        if let Some(addr) = config.metrics_listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics_listen: cannot bind {addr}"))?;
            let addr = listener.local_addr()?;
            info!(%addr, "Prometheus metrics on http://{addr}/metrics");
            metrics_addr = Some(addr);
            let metrics = metrics.clone();
            accept_tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(listener, metrics).await {
                    warn!(error = %e, "metrics listener failed");
                }
            }));
        }
        Ok(Listeners {
            local_addr,
            tls_addr,
            metrics_addr,
            accept_tasks,
            connections,
        })
    }

    /// Stops accepting new clients and serving metrics.
    pub(crate) fn stop_accepting(&self) {
        for task in &self.accept_tasks {
            task.abort();
        }
    }

    /// Waits up to 5 s for every connection task to end, then aborts the rest.
    pub(crate) async fn join_connections(&self) {
        let mut connections = self.connections.lock().await;
        let closing = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .is_err()
        {
            warn!("connections did not close within 5 s");
            connections.abort_all();
        }
    }
}

/// What an accept loop hands each accepted client stream to (plain TCP, or TLS after the
/// handshake): the embedded broker's front or the tap's relay.
pub(crate) trait Serve: Clone + Send + Sync + 'static {
    /// Serves one client connection until it ends.
    fn serve<S>(self, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// How long a TLS handshake may take (the connect timeout).
    fn handshake_timeout(&self) -> Duration;
}

impl Serve for Arc<Shared> {
    fn serve<S>(self, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        connection::serve(stream, peer, self)
    }

    fn handshake_timeout(&self) -> Duration {
        self.config.connect_timeout()
    }
}

/// Accepts clients on `listener` until aborted, serving each in a task of `connections`.
pub(crate) async fn accept_loop<T: Serve>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    server: T,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait a little instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let task = serve_accepted(stream, peer, tls.clone(), server.clone());
        let mut set = connections.lock().await;
        // Reap finished tasks so the set stays as large as the live connections.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

async fn serve_accepted<T: Serve>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    server: T,
) {
    match tls {
        None => server.serve(stream, peer).await,
        Some(acceptor) => {
            let timeout = server.handshake_timeout();
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => server.serve(tls_stream, peer).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}
