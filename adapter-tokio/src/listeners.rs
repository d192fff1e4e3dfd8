//! The listeners of a server: plain MQTT, TLS and metrics, their accept loops, and the tasks
//! of the connections they accepted.
//!
//! Shared by the embedded broker ([`crate::broker`]) and the tap ([`crate::tap`]): each hands
//! the accepted client streams to its own implementation of [`Serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;

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
