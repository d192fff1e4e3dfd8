//! The CONNECT phase: read it within the connect timeout, apply every rule, refuse with the
//! right CONNACK return code, take over an older session, build the router link.

use super::session::Session;
use super::*;
use activity_core::system::SystemTopics;

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
                        payload: Bytes::copy_from_slice(w.message),
                        qos: w.qos,
                        retain: w.retain,
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
        WirePacket::Disconnect => "DISCONNECT",
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
        session_present: false,
        code,
    });
    if let Ok(n) = packet.encode(&mut buf) {
        let _ = stream.write_all(&buf[..n]).await;
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
}

/// Applies every CONNECT rule, takes over an older session, builds the router link and sends
/// CONNACK. `None` when the connection was refused (and closed).
pub(super) async fn accept<S>(
    stream: &mut S,
    mut request: ConnectRequest,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    let rules = ConnectRules {
        topics: &shared.tracker_config.topics,
        auth: &shared.auth,
        phase: &shared.phase,
        permits: &shared.permits,
        metrics: &shared.metrics,
    };
    let permit = apply_connect_rules(stream, &mut request, serial, &rules).await?;

    // Takeover: the old connection reports `takenover` before this one reports `connected`.
    let (kick_tx, kick_rx) = mpsc::channel::<Kick>(1);
    if let Some(old) = shared.registry.insert(&request.client_id, serial, kick_tx) {
        let (done_tx, done_rx) = oneshot::channel();
        if old.send(done_tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
        }
    }

    let factory = shared.link_factory.clone();
    let router_id = router_client_id(&request.client_id);
    let clean = request.clean_session;
    let built = tokio::task::spawn_blocking(move || factory(&router_id, clean)).await;
    let (link_tx, link_rx, connack) = match built {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => {
            warn!(error = %e, "router refused the link");
            shared.registry.remove(&request.client_id, serial);
            refuse(
                stream,
                ConnectReturnCode::ServerUnavailable,
                "router refused",
                &shared.metrics,
            )
            .await;
            return None;
        }
        Err(e) => {
            warn!(error = %e, "link builder failed");
            shared.registry.remove(&request.client_id, serial);
            refuse(
                stream,
                ConnectReturnCode::ServerUnavailable,
                "router failed",
                &shared.metrics,
            )
            .await;
            return None;
        }
    };
    shared
        .interest
        .session_started(&request.client_id, serial, clean);
    let session_present = matches!(
        Option::<Packet>::from(connack),
        Some(Packet::ConnAck(ack, _)) if ack.session_present
    );
    let mut buf = [0u8; 4];
    let ok = WirePacket::ConnAck(ConnAck {
        session_present,
        code: ConnectReturnCode::Accepted,
    });
    let written = match ok.encode(&mut buf) {
        Ok(n) => stream.write_all(&buf[..n]).await.is_ok() && stream.flush().await.is_ok(),
        Err(_) => false,
    };
    shared.metrics.packets_out.fetch_add(1, Ordering::Relaxed);

    let mut tracker = Tracker::new(
        shared.tracker_config.clone(),
        HeapAckStore::new(ACK_STORE_CAPACITY),
    );
    let peer_text = peer.to_string();
    let now = now_ms();
    let info = ConnectInfo {
        client_id: &request.client_id,
        username: request.username.as_deref(),
        proto_ver: request.level,
        keepalive: request.keep_alive,
        clean_session: request.clean_session,
        peer: Some(&peer_text),
    };
    match tracker.handle_connect(now, info) {
        Ok(Some(event)) => shared.events.emit(&event),
        Ok(None) => {}
        Err(ConnectError::Refused(e)) => {
            // check_client_id ran above with the same input; kept as a guard.
            warn!(error = %e, "tracker refused a checked client id");
        }
        Err(e) => warn!(error = %e, "tracker refused connect"),
    }
    if tracker.is_connected() {
        // Matched by `Session::report_close`; shutdown waits for the count to reach zero.
        shared.unreported.fetch_add(1, Ordering::AcqRel);
    }
    shared.metrics.connection_opened();
    let may_subscribe_system = shared.config.access.may_subscribe_system(
        request.username.as_deref(),
        &request.client_id,
        peer.ip(),
    );
    let mut session = Session {
        shared: shared.clone(),
        client_id: request.client_id,
        serial,
        keep_alive: request.keep_alive,
        last_read: Instant::now(),
        will: request.will,
        may_subscribe_system,
        clean_session: request.clean_session,
        tracker,
        link_tx,
        link_rx,
        kick_rx,
        permit: Some(permit),
        sequencer: AckSequencer::new(),
        inbound_qos2: HashSet::new(),
        subscriptions: HashMap::new(),
        pending_subscribes: VecDeque::new(),
        router_batch: Vec::new(),
        router_acks: Vec::new(),
        out: BytesMut::with_capacity(4096),
    };
    if !written {
        session.finish(DisconnectReason::TcpClosed, None).await;
        return None;
    }
    Some(session)
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
