//! MQTT over WebSocket (MQTT 3.1.1 section 6, MQTT 5.0 section 6): the server side of the
//! `[websocket]` and `[websocket_tls]` listeners.
//!
//! [`accept`] runs the HTTP upgrade (RFC 6455 section 4.2) and [`WsStream`] turns what follows
//! into the byte stream the engine's drivers read and write: the payloads of binary frames are
//! read in order as one stream (an MQTT packet may span frames, a frame may carry several
//! packets; section 6 allows both), and every write becomes one binary frame. The drivers
//! serve a [`WsStream`] exactly as a TCP or TLS stream: the same engine, limits, rules and
//! events.
//!
//! What the listener refuses itself, each counted in `activity_websocket_rejected_total` by
//! [`WsReject`]:
//!
//! - an upgrade on another path than the configured one: `404 Not Found`;
//! - a `Sec-WebSocket-Protocol` header that names neither `mqtt` nor `mqttv3.1`:
//!   `400 Bad Request` (a request without the header is accepted and answered without one);
//! - a request that is not a WebSocket upgrade (no `Upgrade: websocket`, not `GET`, not
//!   HTTP/1.1, no valid key, bytes after the request): `400 Bad Request`;
//! - a text frame: close status 1003 (unsupported data);
//! - a frame or fragmented message larger than `max_packet_size`: close status 1009 (message
//!   too big), before its payload is read;
//! - any other framing violation (an unmasked client frame, say): close status 1002.
//!
//! A handshake that does not finish within the connect timeout is dropped by the listener
//! ([`WsReject::HandshakeTimeout`]).
//!
//! Memory: per connection, tungstenite's read buffer of [`READ_BUFFER`] bytes, its write
//! buffer (empty until a write; frames are written at once, not gathered), and the payload of
//! the frame being read, which the driver then copies out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use crate::metrics::{Metrics, WsReject};

/// The subprotocols a client may ask for (MQTT 3.1.1 section 6: `mqtt`; `mqttv3.1` is what
/// MQTT 3.1 clients ask for), in no order of preference: the first one the client offers wins.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// tungstenite's read buffer per connection (its default is 128 KiB): the same 4 KiB a TCP
/// connection's driver starts its own read buffer with.
pub const READ_BUFFER: usize = 4096;

/// What a WebSocket listener accepts: its path, its frame size limit, and where it counts
/// refusals.
#[derive(Debug)]
pub struct Endpoint {
    path: String,
    max_packet_size: usize,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// A listener on `path` that refuses frames and messages above `max_packet_size` bytes.
    pub fn new(path: &str, max_packet_size: usize, metrics: Arc<Metrics>) -> Endpoint {
        Endpoint {
            path: path.to_owned(),
            max_packet_size,
            metrics,
        }
    }

    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_frame_size(Some(self.max_packet_size))
            .max_message_size(Some(self.max_packet_size))
    }
}

/// What a client's `Sec-WebSocket-Protocol` offer comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The client offered no subprotocol: accepted, answered without one.
    None,
    /// The first of [`SUBPROTOCOLS`] the client offered: accepted, answered with it.
    Chosen(&'static str),
    /// The client offered only other subprotocols: refused.
    Foreign,
}

/// What the offered `Sec-WebSocket-Protocol` values (each a comma-separated list) come to.
pub fn choose_subprotocol<'a>(offered: impl Iterator<Item = &'a str>) -> Offer {
    let mut any = false;
    for name in offered.flat_map(|value| value.split(',')).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        any = true;
        if let Some(ours) = SUBPROTOCOLS.iter().find(|p| p.eq_ignore_ascii_case(name)) {
            return Offer::Chosen(ours);
        }
    }
    if any { Offer::Foreign } else { Offer::None }
}

fn refusal(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to a request that is not a WebSocket upgrade.
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 37\r\n\r\nMQTT over WebSocket: upgrade needed.\n";

/// Runs the server handshake on `stream`: the stream of MQTT bytes, or `None` when the client
/// was refused (answered, counted, closed). The caller bounds the time it takes.
pub async fn accept<S>(mut stream: S, endpoint: &Endpoint) -> Option<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut refused = None;
    // tungstenite's callback type returns its `ErrorResponse` unboxed.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        if request.uri().path() != endpoint.path {
            refused = Some(WsReject::Path);
            return Err(refusal(
                StatusCode::NOT_FOUND,
                "MQTT over WebSocket: no such path",
            ));
        }
        let offered = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok());
        match choose_subprotocol(offered) {
            Offer::Chosen(name) => {
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(name),
                );
                Ok(response)
            }
            Offer::None => Ok(response),
            Offer::Foreign => {
                refused = Some(WsReject::Subprotocol);
                Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "MQTT over WebSocket: subprotocol mqtt or mqttv3.1 expected",
                ))
            }
        }
    };
    let config = endpoint.config();
    // On `&mut stream`, so that a request the handshake cannot answer still gets a 400. A
    // request followed by more bytes is refused (`JunkAfterRequest`), so nothing read past the
    // handshake is left behind in the dropped handshake stream.
    let result =
        tokio_tungstenite::accept_hdr_async_with_config(&mut stream, callback, Some(config)).await;
    match result {
        Ok(ws) => drop(ws),
        Err(e) => {
            let reason = refused.unwrap_or(WsReject::Handshake);
            debug!(error = %e, reason = reason.name(), "WebSocket handshake refused");
            endpoint.metrics.websocket_rejected(reason);
            if matches!(
                e,
                WsError::Protocol(_) | WsError::Capacity(_) | WsError::HttpFormat(_)
            ) {
                let _ = stream.write_all(BAD_REQUEST).await;
            }
            let _ = stream.shutdown().await;
            return None;
        }
    }
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    Some(WsStream {
        ws,
        pending: Bytes::new(),
        close: None,
        close_sent: false,
        metrics: endpoint.metrics.clone(),
    })
}

/// An accepted WebSocket connection as a byte stream: reads give the payloads of binary
/// frames, each write goes out as one binary frame, shutdown sends a close frame (with the
/// status of a refusal, if any).
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The rest of the binary frame being read.
    pending: Bytes,
    /// The close frame to send at shutdown (`None`: a plain close).
    close: Option<CloseFrame>,
    close_sent: bool,
    metrics: Arc<Metrics>,
}

impl<S> WsStream<S> {
    /// Counts `reason`, remembers the close status to send, and gives the driver its error.
    fn refuse(&mut self, reason: WsReject, code: CloseCode, text: &'static str) -> io::Error {
        self.metrics.websocket_rejected(reason);
        debug!(reason = reason.name(), "WebSocket connection refused");
        self.close = Some(CloseFrame {
            code,
            reason: text.into(),
        });
        io::Error::new(io::ErrorKind::InvalidData, text)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            let next = ready!(Pin::new(&mut this.ws).poll_next(cx));
            match next {
                // The end of the stream, or the client's close frame (answered by tungstenite).
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Text(_))) => {
                    let e = this.refuse(
                        WsReject::TextFrame,
                        CloseCode::Unsupported,
                        "MQTT needs binary frames",
                    );
                    return Poll::Ready(Err(e));
                }
                // Pings are answered by tungstenite; pongs and raw frames carry no MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(WsError::Capacity(_))) => {
                    let e = this.refuse(
                        WsReject::FrameTooLarge,
                        CloseCode::Size,
                        "frame larger than max_packet_size",
                    );
                    return Poll::Ready(Err(e));
                }
                Some(Err(WsError::Protocol(p))) => {
                    debug!(error = %p, "WebSocket protocol error");
                    let e = this.refuse(
                        WsReject::Protocol,
                        CloseCode::Protocol,
                        "WebSocket protocol error",
                    );
                    return Poll::Ready(Err(e));
                }
                Some(Err(WsError::Io(e))) => return Poll::Ready(Err(e)),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::from(io::ErrorKind::BrokenPipe)
        }
        e => io::Error::other(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            // After a failed read or write the close frame may not go out: close anyway.
            if ready!(Pin::new(&mut this.ws).poll_ready(cx)).is_ok() {
                let _ = Pin::new(&mut this.ws).start_send(Message::Close(this.close.take()));
            }
            this.close_sent = true;
        }
        // Sends the close frame (tungstenite: `ConnectionClosed` once it is out), then closes
        // the transport (a TLS close_notify for wss).
        let _ = ready!(Pin::new(&mut this.ws).poll_close(cx));
        Pin::new(this.ws.get_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocols() {
        let pick = |values: &[&'static str]| choose_subprotocol(values.iter().copied());
        assert_eq!(pick(&[]), Offer::None);
        assert_eq!(pick(&["mqtt"]), Offer::Chosen("mqtt"));
        assert_eq!(pick(&["mqttv3.1"]), Offer::Chosen("mqttv3.1"));
        // The first of ours the client offers, in one header or several, any case.
        assert_eq!(pick(&["chat, MQTTv3.1, mqtt"]), Offer::Chosen("mqttv3.1"));
        assert_eq!(pick(&["chat", "mqtt"]), Offer::Chosen("mqtt"));
        assert_eq!(pick(&["chat"]), Offer::Foreign);
        assert_eq!(pick(&["", " , "]), Offer::None);
    }
}
