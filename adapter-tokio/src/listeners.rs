//! The listeners of a server: plain MQTT, TLS, WebSocket, WebSocket over TLS and metrics,
//! their accept loops, and the tasks of the connections they accepted.
//!
//! Shared by the embedded broker ([`crate::broker`]) and the tap ([`crate::tap`]): each hands
//! the accepted client streams to its own implementation of [`Serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use activity_core::event::Transport;
use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::{Metrics, WsReject};
use crate::websocket::{self, Endpoint};

/// How an accept loop turns an accepted socket into the client's byte stream.
#[derive(Clone)]
enum Wrap {
    /// Plain MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls(TlsAcceptor),
    /// MQTT over WebSocket.
    Ws(Arc<Endpoint>),
    /// MQTT over WebSocket over TLS.
    Wss(TlsAcceptor, Arc<Endpoint>),
}

/// The listeners of a server (plain MQTT, TLS, metrics), their accept loops and the tasks of
/// the connections they accepted; shared by the embedded broker and the tap.
pub(crate) struct Listeners {
    /// The address of the plain MQTT listener.
    pub(crate) local_addr: SocketAddr,
    /// The address of the TLS listener, when configured.
    pub(crate) tls_addr: Option<SocketAddr>,
    /// The address of the WebSocket listener, when configured.
    pub(crate) ws_addr: Option<SocketAddr>,
    /// The address of the WebSocket-over-TLS listener, when configured.
    pub(crate) wss_addr: Option<SocketAddr>,
    /// The address of the metrics listener, when configured.
    pub(crate) metrics_addr: Option<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Listeners {
    /// Binds `config.listen`, the TLS listener (`tls`: its address and acceptor), the
    /// WebSocket listeners of `config.websocket` and `config.websocket_tls`, and
    /// `config.metrics_listen`, and starts accepting: client streams go to `server`.
    pub(crate) async fn bind<T: Serve>(
        config: &Config,
        tls: Option<(SocketAddr, TlsAcceptor)>,
        server: T,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Listeners> {
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let mut accept_tasks = Vec::new();
        let mut start = async |what: &str, addr: SocketAddr, wrap: Wrap| {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("{what}: cannot bind {addr}"))?;
            let addr = listener.local_addr()?;
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                wrap,
                server.clone(),
                connections.clone(),
                metrics.clone(),
            )));
            anyhow::Ok(addr)
        };
        let local_addr = start("listen", config.listen, Wrap::Tcp).await?;
        let mut tls_addr = None;
        if let Some((addr, acceptor)) = tls {
            let addr = start("tls.listen", addr, Wrap::Tls(acceptor)).await?;
            info!(%addr, "MQTT over TLS listener ready");
            tls_addr = Some(addr);
        }
        let mut ws_addr = None;
        if let Some(ws) = &config.websocket {
            let endpoint = Endpoint::new(&ws.path, config.max_packet_size, metrics.clone());
            let addr = start("websocket.listen", ws.listen, Wrap::Ws(Arc::new(endpoint))).await?;
            info!(%addr, path = %ws.path, "MQTT over WebSocket listener ready");
            ws_addr = Some(addr);
        }
        let mut wss_addr = None;
        if let Some(wss) = &config.websocket_tls {
            let acceptor = crate::tls::acceptor_of("websocket_tls", &wss.cert, &wss.key)?;
            let endpoint = Endpoint::new(&wss.path, config.max_packet_size, metrics.clone());
            let wrap = Wrap::Wss(acceptor, Arc::new(endpoint));
            let addr = start("websocket_tls.listen", wss.listen, wrap).await?;
            info!(%addr, path = %wss.path, "MQTT over WebSocket over TLS listener ready");
            wss_addr = Some(addr);
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
            ws_addr,
            wss_addr,
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

/// What an accept loop hands each accepted client stream to (plain TCP, or TLS or WebSocket
/// after the handshake): the embedded broker's front or the tap's relay.
pub(crate) trait Serve: Clone + Send + Sync + 'static {
    /// Serves one client connection from `peer` until it ends.
    fn serve<S>(
        self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// How long the TLS and WebSocket handshakes may take together (the connect timeout).
    fn handshake_timeout(&self) -> Duration;
}

/// Accepts clients on `listener` until aborted, serving each in a task of `connections`.
async fn accept_loop<T: Serve>(
    listener: TcpListener,
    wrap: Wrap,
    server: T,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    metrics: Arc<Metrics>,
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
        let task = serve_accepted(stream, peer, wrap.clone(), server.clone(), metrics.clone());
        let mut set = connections.lock().await;
        // Reap finished tasks so the set stays as large as the live connections.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

/// The task of one accepted connection. A plain TCP connection's future is the size of its
/// session: the TLS, WebSocket and WebSocket-over-TLS variants (handshake state, TLS and
/// WebSocket framing around the session) are boxed, one allocation per such connection, so
/// that every connection's task does not carry room for the largest of them (docs/scale.md,
/// "Memory per idle connection").
async fn serve_accepted<T: Serve>(
    stream: TcpStream,
    peer: SocketAddr,
    wrap: Wrap,
    server: T,
    metrics: Arc<Metrics>,
) {
    match wrap {
        Wrap::Tcp => server.serve(stream, peer, Transport::Tcp).await,
        Wrap::Tls(acceptor) => Box::pin(serve_tls(stream, peer, acceptor, server)).await,
        Wrap::Ws(endpoint) => Box::pin(serve_ws(stream, peer, endpoint, server, metrics)).await,
        Wrap::Wss(acceptor, endpoint) => {
            Box::pin(serve_wss(stream, peer, acceptor, endpoint, server, metrics)).await;
        }
    }
}

/// MQTT over TLS: the handshake, then the session.
async fn serve_tls<T: Serve>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    server: T,
) {
    let timeout = server.handshake_timeout();
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => server.serve(tls_stream, peer, Transport::Tls).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

/// MQTT over WebSocket: the handshake, then the session.
async fn serve_ws<T: Serve>(
    stream: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<Endpoint>,
    server: T,
    metrics: Arc<Metrics>,
) {
    let timeout = server.handshake_timeout();
    match tokio::time::timeout(timeout, websocket::accept(stream, &endpoint)).await {
        Ok(Some(ws)) => server.serve(ws, peer, Transport::Ws).await,
        Ok(None) => {}
        Err(_) => {
            debug!(%peer, "WebSocket handshake timed out");
            metrics.websocket_rejected(WsReject::HandshakeTimeout);
        }
    }
}

/// MQTT over WebSocket over TLS: both handshakes, then the session.
async fn serve_wss<T: Serve>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    endpoint: Arc<Endpoint>,
    server: T,
    metrics: Arc<Metrics>,
) {
    let timeout = server.handshake_timeout();
    let handshakes = async {
        match acceptor.accept(stream).await {
            Ok(tls_stream) => websocket::accept(tls_stream, &endpoint).await,
            Err(e) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    match tokio::time::timeout(timeout, handshakes).await {
        Ok(Some(ws)) => server.serve(ws, peer, Transport::Wss).await,
        Ok(None) => {}
        Err(_) => {
            debug!(%peer, "TLS or WebSocket handshake timed out");
            metrics.websocket_rejected(WsReject::HandshakeTimeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Shared;

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size<A, B, C, D, E, R>(_: &impl Fn(A, B, C, D, E) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns (a future), without calling it.
    fn returned_size4<A, B, C, D, R>(_: &impl Fn(A, B, C, D) -> R) -> usize {
        size_of::<R>()
    }

    #[test]
    fn a_plain_tcp_connection_task_is_the_size_of_its_session() {
        let task = returned_size(&serve_accepted::<Arc<Shared>>);
        let session = returned_size4(&<Arc<Shared> as Serve>::serve::<TcpStream>);
        let tls = returned_size4(&serve_tls::<Arc<Shared>>);
        let ws = returned_size(&serve_ws::<Arc<Shared>>);
        println!(
            "connection task {task} B, plain TCP session {session} B, TLS {tls} B, WebSocket {ws} B"
        );
        // The boxed variants add a pointer and the arguments, not their handshakes' state.
        assert!(task <= session + 256, "task {task} B, session {session} B");
        assert!(
            task < tls && task < ws,
            "task {task} B, TLS {tls} B, WebSocket {ws} B"
        );
    }
}
