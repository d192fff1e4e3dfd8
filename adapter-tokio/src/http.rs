//! The HTTP API of the broker and the tap (docs/http.md): `GET /health`, who is online
//! (`/api/v1/clients`), the live event stream (`/api/v1/events`, Server-Sent Events) and the
//! counters (`/metrics`), on the listener of `http_listen` (off by default).
//!
//! HTTP/1.1 (RFC 9112) is hyper's, the routes are axum's ([`router`] builds them all: add a
//! route there). What this module adds are the bounds: at most `http.max_connections`
//! connections (one more is closed at once), a request head of at most [`MAX_HEAD_BYTES`]
//! (hyper answers 431 past it), `http.header_timeout_ms` for a request head to arrive and for an
//! idle connection between requests, and the access rule: with `http_token` every request
//! carries `Authorization: Bearer <token>` (compared in constant time), without it only loopback
//! peers are served. With `[tls]` the listener speaks HTTPS with the same certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use activity_core::event::EventKind;
use activity_core::tracker::EventKinds;
use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::{debug, info, warn};

use crate::admission::{Phase, is_loopback};
use crate::config::{Config, HttpConfig};
use crate::events::{SinkQueue, Watched};
use crate::metrics::Metrics;
use crate::page::{self, AckTable, PageSource};
use crate::presence::Presence;

mod clients;
mod sse;

pub use sse::{EventHub, Stamped};

/// The largest request head (request line and headers) read, in bytes; hyper answers a larger
/// one with 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header fields in a request; hyper answers more with 431.
pub const MAX_HEADERS: usize = 64;

/// The counters of the HTTP connections, rendered after the broker's in `GET /metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// HTTP connections accepted.
    pub connections_accepted: AtomicU64,
    /// HTTP connections closed at once: `http.max_connections` were open.
    pub connections_refused: AtomicU64,
    /// HTTP connections open now.
    pub connections_current: AtomicU64,
    /// Requests refused by the access rule (401 or 403).
    pub requests_refused: AtomicU64,
    /// Requests served (any status).
    pub requests: AtomicU64,
    /// HTTP connections that ended with an error: a bad or oversized request head, a head or an
    /// idle wait over `http.header_timeout_ms`, a failed TLS handshake.
    pub connection_errors: AtomicU64,
}

impl Api {
    /// Writes the API's counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let stats = &self.stats;
        let hub = &self.hub;
        let watchers = AtomicU64::new(hub.watchers() as u64);
        let online = AtomicU64::new(self.presence.len() as u64);
        let kept = AtomicU64::new(hub.kinds_held() as u64);
        let counters = [
            (
                "activity_http_online_clients",
                "gauge",
                "Clients listed by /api/v1/clients now.",
                &online,
            ),
            (
                "activity_http_event_streams",
                "gauge",
                "/api/v1/events streams open now.",
                &watchers,
            ),
            (
                "activity_http_event_kinds_kept",
                "gauge",
                "Event kinds the /api/v1/events ring keeps now: held by an open stream, or by one closed less than http.replay_grace_ms ago.",
                &kept,
            ),
            (
                "activity_http_event_streams_total",
                "counter",
                "/api/v1/events streams opened.",
                &hub.watchers_total,
            ),
            (
                "activity_http_event_streams_refused_total",
                "counter",
                "/api/v1/events streams refused: http.max_watchers were open.",
                &hub.watchers_refused,
            ),
            (
                "activity_http_event_stream_lagged_total",
                "counter",
                "Events skipped by /api/v1/events streams that fell behind.",
                &hub.watcher_lagged,
            ),
            (
                "activity_http_connections_total",
                "counter",
                "HTTP connections accepted.",
                &stats.connections_accepted,
            ),
            (
                "activity_http_connections_refused_total",
                "counter",
                "HTTP connections closed at once: http.max_connections were open.",
                &stats.connections_refused,
            ),
            (
                "activity_http_connections",
                "gauge",
                "HTTP connections open now.",
                &stats.connections_current,
            ),
            (
                "activity_http_requests_total",
                "counter",
                "HTTP requests served.",
                &stats.requests,
            ),
            (
                "activity_http_requests_refused_total",
                "counter",
                "HTTP requests refused by the access rule (401, 403).",
                &stats.requests_refused,
            ),
            (
                "activity_http_connection_errors_total",
                "counter",
                "HTTP connections ended by a bad or slow request, an idle timeout or TLS.",
                &stats.connection_errors,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// What the HTTP handlers share: the server's counters and state, and the API's own.
pub struct Api {
    /// The broker's (or tap's) counters.
    pub metrics: Arc<Metrics>,
    /// The API's counters.
    pub stats: HttpStats,
    /// The `[http]` limits.
    pub limits: HttpConfig,
    /// `http_token`.
    token: Option<String>,
    /// The server's phase: `/health` says 503 once it shuts down.
    phase: watch::Receiver<Phase>,
    /// Who is online.
    pub presence: Arc<Presence>,
    /// The event streams' feed.
    pub hub: Arc<EventHub>,
    /// The recent `msgack` events of `/api/v1/acks` (the live page, [`crate::page`]).
    pub acks: Arc<AckTable>,
}

impl Api {
    /// The API state of `config`, around the server's `metrics`.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        phase: watch::Receiver<Phase>,
        presence: Arc<Presence>,
        hub: Arc<EventHub>,
        acks: Arc<AckTable>,
    ) -> Api {
        Api {
            phase,
            presence,
            hub,
            acks,
            metrics,
            stats: HttpStats::default(),
            limits: config.http.clone(),
            token: config.http_token.clone(),
        }
    }

    /// The access rule: `None` when a request from `peer` with `headers` may be served, else
    /// the refusal (401 without the right bearer token when `http_token` is set, 403 for a
    /// non-loopback peer when it is not).
    fn refusal(&self, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
        match &self.token {
            Some(token) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                    .unwrap_or_default();
                if bool::from(given.ct_eq(token.as_bytes())) {
                    None
                } else {
                    let mut response =
                        error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                    Some(response)
                }
            }
            None if is_loopback(peer.ip()) => None,
            None => Some(error(
                StatusCode::FORBIDDEN,
                "only loopback clients are served without http_token",
            )),
        }
    }
}

impl PageSource for Api {
    fn counters(&self) -> String {
        let mut body = self.metrics.render();
        self.render(&mut body);
        self.acks.render(&mut body);
        body
    }

    fn acks(&self) -> &AckTable {
        &self.acks
    }
}

/// A JSON error response: `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Every route of the HTTP API.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/clients", get(clients::list))
        .route("/api/v1/clients/:id", get(clients::one))
        .route("/api/v1/events", get(sse::events))
        .merge(page::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// `GET /health`: 200 while the server serves, 503 once it shuts down.
async fn health(State(api): State<Arc<Api>>) -> Response {
    if *api.phase.borrow() == Phase::Running {
        (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
    } else {
        let body = Json(json!({ "status": "shutting_down" }));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /metrics`: the server's counters and the API's, in the Prometheus text format.
async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let body = api.counters();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// How much nicer than the process the HTTP API's thread runs: under load, MQTT clients (and
/// the Kafka sink) get the CPU first, and event streams fall behind instead (counted).
pub const HTTP_THREAD_NICE: i32 = 10;

/// What the HTTP API shares with the server it serves, made once when `http_listen` is set:
/// the registry of who is online (the connections keep it), the ack table and the event
/// streams' hub (both fed by the event dispatcher).
pub struct HttpParts {
    /// Who is online, for the server's connections to keep.
    pub presence: Arc<Presence>,
    hub: Arc<EventHub>,
    acks: Arc<AckTable>,
}

impl HttpParts {
    /// The parts, when `config` turns the HTTP API on.
    pub fn new(config: &Config) -> Option<HttpParts> {
        config.http_listen.map(|_| HttpParts {
            presence: Arc::new(Presence::new(config.max_connections)),
            hub: Arc::new(EventHub::new(&config.http)),
            acks: Arc::new(AckTable::new(config.http.ack_table)),
        })
    }

    /// The event sinks the API adds to the dispatcher, after the server's own: the ack table
    /// (it keeps the `msgack` events), then the streams' hub (it keeps the kinds a stream holds:
    /// a short lock and a broadcast send per such event, one atomic load for the others).
    pub fn sinks(&self) -> [Box<dyn SinkQueue>; 2] {
        [Box::new(self.acks.clone()), Box::new(self.hub.clone())]
    }

    /// The kinds the API takes from the event pipeline: those the event streams hold now, and
    /// `msgack` always while the ack table is on (it answers about the past, watched or not).
    pub fn watched(&self) -> Watched {
        Watched {
            streams: self.hub.holds(),
            always: if self.acks.is_off() {
                EventKinds::NONE
            } else {
                EventKinds::NONE.with(EventKind::MsgAck)
            },
        }
    }

    /// Binds the listener and serves the API (see [`HttpServer::start`]) when there are
    /// `parts` (the API is on); `None` when there are none.
    pub async fn start(
        parts: Option<HttpParts>,
        config: &Config,
        tls: Option<TlsAcceptor>,
        metrics: Arc<Metrics>,
        phase: watch::Receiver<Phase>,
    ) -> anyhow::Result<Option<HttpServer>> {
        let Some(parts) = parts else {
            return Ok(None);
        };
        let api = Api::new(
            config,
            metrics,
            phase,
            parts.presence,
            parts.hub,
            parts.acks,
        );
        HttpServer::start(config, tls, Arc::new(api)).await
    }
}

/// The running HTTP listener, on a thread and tokio runtime of its own (at
/// [`HTTP_THREAD_NICE`]), so that HTTP clients, and a thousand event streams, never take the
/// MQTT clients' worker threads; stops with [`HttpServer::stop`] or when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl HttpServer {
    /// Binds `config.http_listen` (none: `None`) and serves `api` on it, over TLS with
    /// `tls` when given.
    pub async fn start(
        config: &Config,
        tls: Option<TlsAcceptor>,
        api: Arc<Api>,
    ) -> anyhow::Result<Option<HttpServer>> {
        let Some(addr) = config.http_listen else {
            return Ok(None);
        };
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("http_listen: cannot bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("http-api".into())
            .spawn(move || {
                if let Err(e) = crate::priority::lower_current_thread(HTTP_THREAD_NICE) {
                    warn!(error = %e, "cannot lower the HTTP API thread's priority");
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        warn!(error = %e, "cannot start the HTTP API's runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            warn!(error = %e, "HTTP listener failed");
                            return;
                        }
                    };
                    let router = router(api.clone());
                    tokio::select! {
                        () = accept_loop(listener, tls, api, router) => {}
                        _ = stopped => {}
                    }
                });
                // The connections' tasks went with the accept loop; the runtime drops the rest.
            })
            .context("cannot start the HTTP API thread")?;
        info!(%addr, "HTTP API on {scheme}://{addr}/");
        Ok(Some(HttpServer {
            addr,
            stop: Some(stop),
        }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every HTTP connection (without waiting for them).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts HTTP connections until aborted; the connections' tasks end with it.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    api: Arc<Api>,
    router: Router,
) {
    let permits = Arc::new(Semaphore::new(api.limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            api.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "HTTP connection limit reached: closed");
            continue;
        };
        api.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            tls.clone(),
            api.clone(),
            router.clone(),
            permit,
        ));
    }
}

/// Serves one HTTP connection (after the TLS handshake, with `tls`) until it ends.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    api: Arc<Api>,
    router: Router,
    _permit: OwnedSemaphorePermit,
) {
    api.stats
        .connections_current
        .fetch_add(1, Ordering::Relaxed);
    let ok = match tls {
        None => serve_http(stream, peer, &api, router).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(api.limits.header_timeout(), handshake).await {
                Ok(Ok(stream)) => serve_http(stream, peer, &api, router).await,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "HTTP: TLS handshake failed");
                    false
                }
                Err(_) => {
                    debug!(%peer, "HTTP: TLS handshake timed out");
                    false
                }
            }
        }
    };
    if !ok {
        api.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
    }
    api.stats
        .connections_current
        .fetch_sub(1, Ordering::Relaxed);
}

/// HTTP/1.1 on `stream`: hyper's parser with the bounds of this module, each request checked
/// by the access rule and handed to `router`. False when the connection ended with an error.
async fn serve_http<S>(stream: S, peer: SocketAddr, api: &Arc<Api>, router: Router) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_api = api.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let api = service_api.clone();
        let mut router = router.clone();
        async move {
            api.stats.requests.fetch_add(1, Ordering::Relaxed);
            // The live page's assets carry no data: with a token they are served without it
            // (a browser opening the page cannot send one), and the page asks for it.
            let asset = api.token.is_some() && page::is_asset(request.uri().path());
            if !asset && let Some(refusal) = api.refusal(peer, request.headers()) {
                api.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                return Ok::<_, Infallible>(refusal);
            }
            router.call(request.map(Body::new)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(api.limits.header_timeout())
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    match builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            debug!(%peer, error = %e, "HTTP connection ended with an error");
            false
        }
    }
}
