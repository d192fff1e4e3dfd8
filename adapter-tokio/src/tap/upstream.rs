//! Connections to the upstream broker: plain TCP, or TLS (rustls) when `[upstream.tls]` is set.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::Config;

/// How to reach the upstream broker; cheap to clone.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// `host:port`.
    pub(crate) address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl Upstream {
    /// From `[upstream]`; `None` without `address`.
    pub(crate) fn new(config: &Config) -> anyhow::Result<Option<Upstream>> {
        let Some(address) = config.upstream.address.clone() else {
            return Ok(None);
        };
        let tls = match &config.upstream.tls {
            Some(tls) => {
                let connector = crate::tls::connector(&tls.ca)?;
                let name = config
                    .upstream
                    .server_name()
                    .context("upstream.tls: no server name")?;
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| anyhow::anyhow!("upstream.tls.server_name: {name:?}: {e}"))?;
                Some((connector, name))
            }
            None => None,
        };
        Ok(Some(Upstream {
            address,
            tls,
            timeout: config.upstream.connect_timeout(),
        }))
    }

    /// Connects (and, with TLS, completes the handshake) within `upstream.connect_timeout_ms`.
    pub(crate) async fn connect(&self) -> anyhow::Result<UpstreamStream> {
        let connect = async {
            let tcp = TcpStream::connect(&self.address).await.context("connect")?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(UpstreamStream::Plain(tcp)),
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .context("TLS handshake")?;
                    Ok(UpstreamStream::Tls(Box::new(tls)))
                }
            }
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .context("connect timed out")?
    }
}

/// A connection to the upstream broker.
pub(crate) enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
