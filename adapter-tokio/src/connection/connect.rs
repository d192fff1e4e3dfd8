//! The tap's CONNECT phase: read it within the connect timeout, apply every rule, refuse with
//! the right CONNACK return code. The broker's connections decide all of this in the engine;
//! the tap relay uses these until it runs on the engine too.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use activity_core::codec::{self, ConnAck, ConnectReturnCode, Packet as WirePacket};
use activity_core::system::SystemTopics;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info};

use super::Phase;
use crate::auth::{AuthOutcome, Authenticator};
use crate::metrics::Metrics;

/// The parts of a CONNECT the tap keeps.
pub(crate) struct ConnectRequest {
    /// The protocol level (4 for MQTT 3.1.1).
    pub(crate) level: u8,
    /// The client id (an empty one is replaced by `auto-...` when the rules accept it).
    pub(crate) client_id: String,
    /// The clean-session flag.
    pub(crate) clean_session: bool,
    /// The keep-alive interval in seconds.
    pub(crate) keep_alive: u16,
    /// The user name, if any.
    pub(crate) username: Option<String>,
    /// The password, if any.
    pub(crate) password: Option<Vec<u8>>,
    /// The last will, if any.
    pub(crate) will: Option<Will>,
}

/// The part of a last will the tap's rules look at (the upstream broker keeps the will).
#[derive(Clone)]
pub(crate) struct Will {
    /// The will topic.
    pub(crate) topic: Bytes,
}

/// Reads the first packet, which must be a CONNECT, before `deadline`: the request and the
/// CONNECT's own bytes (taken off the front of `rbuf`). `None` when the socket closed, timed
/// out or sent something else (counted, and logged at debug level).
pub(crate) async fn read_connect<S>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max: usize,
    deadline: Instant,
    metrics: &Metrics,
) -> Option<(ConnectRequest, Bytes)>
where
    S: AsyncRead + Unpin,
{
    loop {
        match codec::decode(rbuf, max) {
            Ok(Some((WirePacket::Connect(c), len))) => {
                let request = ConnectRequest {
                    level: c.protocol_level,
                    client_id: c.client_id.to_owned(),
                    clean_session: c.clean_session,
                    keep_alive: c.keep_alive,
                    username: c.username.map(str::to_owned),
                    password: c.password.map(<[u8]>::to_vec),
                    will: c.will.map(|w| Will {
                        topic: Bytes::copy_from_slice(w.topic.as_bytes()),
                    }),
                };
                let raw = rbuf.split_to(len).freeze();
                metrics.packets_in.fetch_add(1, Ordering::Relaxed);
                return Some((request, raw));
            }
            Ok(Some((other, _))) => {
                debug!(packet = ?packet_name(&other), "first packet is not CONNECT: closing");
                metrics.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "malformed CONNECT: closing");
                metrics.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        match timeout_at(deadline, stream.read_buf(rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => {
                metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                debug!("no CONNECT within the connect timeout: closing");
                metrics.connect_timeouts.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}

fn packet_name(packet: &WirePacket<'_>) -> &'static str {
    match packet {
        WirePacket::Connect(_) => "CONNECT",
        WirePacket::ConnAck(_) => "CONNACK",
        WirePacket::Publish(_) => "PUBLISH",
        WirePacket::PubAck(_) => "PUBACK",
        WirePacket::PubRec(_) => "PUBREC",
        WirePacket::PubRel(_) => "PUBREL",
        WirePacket::PubComp(_) => "PUBCOMP",
        WirePacket::Subscribe(_) => "SUBSCRIBE",
        WirePacket::SubAck(_) => "SUBACK",
        WirePacket::Unsubscribe(_) => "UNSUBSCRIBE",
        WirePacket::UnsubAck(_) => "UNSUBACK",
        WirePacket::PingReq => "PINGREQ",
        WirePacket::PingResp => "PINGRESP",
        WirePacket::Disconnect(_) => "DISCONNECT",
        WirePacket::Auth(_) => "AUTH",
    }
}

/// Answers a CONNECT with the refusal `code` (counted, logged with `why`) and closes.
pub(crate) async fn refuse<S>(stream: &mut S, code: ConnectReturnCode, why: &str, metrics: &Metrics)
where
    S: AsyncWrite + Unpin,
{
    info!(code = code.as_u8(), why, "CONNECT refused");
    metrics.connect_refused(code.as_u8());
    let mut buf = [0u8; 4];
    let packet = WirePacket::ConnAck(ConnAck {
        properties: activity_core::codec::Properties::EMPTY,
        session_present: false,
        code: code.as_u8(),
    });
    if let Ok(n) = packet.encode(&mut buf) {
        let _ = stream.write_all(&buf[..n]).await;
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
}

/// What the CONNECT rules of [`apply_connect_rules`] look at.
pub(crate) struct ConnectRules<'a> {
    /// The system topics (no last will on them).
    pub(crate) topics: &'a SystemTopics,
    /// Username/password checks.
    pub(crate) auth: &'a Authenticator,
    /// The server's phase: no new connections unless running.
    pub(crate) phase: &'a watch::Receiver<Phase>,
    /// The connection limit.
    pub(crate) permits: &'a Arc<Semaphore>,
    /// Where refusals are counted.
    pub(crate) metrics: &'a Metrics,
}

/// Applies every CONNECT rule: protocol level, client id (an empty one with a clean session
/// becomes `auto-<serial>`), last will topic, credentials, phase and connection limit. Refuses
/// with the rule's CONNACK return code and closes (`None`), or gives the connection's permit.
pub(crate) async fn apply_connect_rules<S>(
    stream: &mut S,
    request: &mut ConnectRequest,
    serial: u64,
    rules: &ConnectRules<'_>,
) -> Option<tokio::sync::OwnedSemaphorePermit>
where
    S: AsyncWrite + Unpin,
{
    if request.level != codec::PROTOCOL_LEVEL {
        refuse(
            stream,
            ConnectReturnCode::UnacceptableProtocolVersion,
            "protocol level is not 4 (MQTT 3.1.1)",
            rules.metrics,
        )
        .await;
        return None;
    }
    if request.client_id.is_empty() && request.clean_session {
        request.client_id = format!("auto-{serial:016x}");
    }
    if let Err(e) =
        activity_core::client_id::check_client_id(&request.client_id, request.clean_session)
    {
        refuse(
            stream,
            ConnectReturnCode::IdentifierRejected,
            &e.to_string(),
            rules.metrics,
        )
        .await;
        return None;
    }
    let topics = rules.topics;
    if let Some(will) = &request.will {
        let topic = std::str::from_utf8(&will.topic).unwrap_or_default();
        if !topics.may_publish(&request.client_id, topic) {
            refuse(
                stream,
                ConnectReturnCode::NotAuthorized,
                "last will on a system topic",
                rules.metrics,
            )
            .await;
            return None;
        }
    }
    match rules
        .auth
        .check(request.username.as_deref(), request.password.as_deref())
        .await
    {
        AuthOutcome::Allowed => {}
        AuthOutcome::BadCredentials => {
            refuse(
                stream,
                ConnectReturnCode::BadUserNameOrPassword,
                "bad credentials",
                rules.metrics,
            )
            .await;
            return None;
        }
        AuthOutcome::NotAuthorized => {
            refuse(
                stream,
                ConnectReturnCode::NotAuthorized,
                "not authorized",
                rules.metrics,
            )
            .await;
            return None;
        }
    }
    if *rules.phase.borrow() != Phase::Running {
        refuse(
            stream,
            ConnectReturnCode::ServerUnavailable,
            "shutting down",
            rules.metrics,
        )
        .await;
        return None;
    }
    let Ok(permit) = rules.permits.clone().try_acquire_owned() else {
        refuse(
            stream,
            ConnectReturnCode::ServerUnavailable,
            "max_connections reached",
            rules.metrics,
        )
        .await;
        return None;
    };
    Some(permit)
}
