//! One accepted connection: client packets to the router, router notifications to the client,
//! both reported to the tracker.

use super::*;

use bytes::Buf;

pub(super) struct PendingSubscribe {
    pub(super) pkid: u16,
    /// Per filter of the SUBSCRIBE: `None` when the front denied it, else the filter and the
    /// QoS requested, to be granted by the router.
    pub(super) filters: Vec<Option<(String, QoS)>>,
}

/// How a connection ends.
struct Exit {
    reason: DisconnectReason,
    kick: Option<Kick>,
}

impl Exit {
    fn new(reason: DisconnectReason) -> Self {
        Exit { reason, kick: None }
    }
}

pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) client_id: String,
    pub(super) serial: u64,
    pub(super) keep_alive: u16,
    /// When bytes last came from the client (keep-alive counts from here).
    pub(super) last_read: Instant,
    pub(super) will: Option<Will>,
    pub(super) may_subscribe_system: bool,
    /// Whether the session ends with the connection (its subscriptions go too).
    pub(super) clean_session: bool,
    pub(super) tracker: Tracker<HeapAckStore>,
    pub(super) link_tx: LinkTx,
    pub(super) link_rx: LinkRx,
    pub(super) kick_rx: mpsc::Receiver<Kick>,
    /// The connection-limit permit; released before the `disconnected` event goes out, so that a
    /// client reconnecting as soon as it sees the event finds its slot free.
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(super) sequencer: AckSequencer,
    pub(super) inbound_qos2: HashSet<u16>,
    pub(super) subscriptions: HashMap<String, QoS>,
    pub(super) pending_subscribes: VecDeque<PendingSubscribe>,
    pub(super) router_batch: Vec<Packet>,
    pub(super) router_acks: Vec<RouterAck>,
    pub(super) out: BytesMut,
}

impl Session {
    fn keepalive_deadline(&self) -> Option<Instant> {
        (self.keep_alive > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    pub(super) async fn run<S>(mut self, mut stream: S, mut rbuf: BytesMut)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut phase = self.shared.phase.clone();
        let mut deadline = self.keepalive_deadline();
        // Bytes that arrived together with the CONNECT.
        let mut exit = self.handle_input(&mut rbuf);
        if exit.is_none() {
            exit = self.flush(&mut stream).await.err();
        }
        let exit = match exit {
            Some(exit) => exit,
            None => loop {
                reserve_read_space(&mut rbuf);
                let keepalive = async {
                    match deadline {
                        Some(d) => sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let step = tokio::select! {
                    read = stream.read_buf(&mut rbuf) => match read {
                        Ok(0) | Err(_) => Err(Exit::new(DisconnectReason::TcpClosed)),
                        Ok(n) => {
                            self.shared.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                            self.last_read = Instant::now();
                            deadline = self.keepalive_deadline();
                            match self.handle_input(&mut rbuf) {
                                Some(exit) => Err(exit),
                                None => Ok(()),
                            }
                        }
                    },
                    notification = self.link_rx.next() => match notification {
                        Ok(first) => self.handle_notifications(first).await,
                        Err(e) => {
                            warn!(client_id = %self.client_id, error = %e, "router dropped the link");
                            Err(Exit::new(DisconnectReason::ProtocolError))
                        }
                    },
                    () = keepalive => {
                        self.shared.metrics.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
                        Err(Exit::new(DisconnectReason::KeepaliveTimeout))
                    }
                    kick = self.kick_rx.recv() => Err(Exit {
                        reason: DisconnectReason::Takenover,
                        kick,
                    }),
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() != Phase::Running {
                            Err(Exit::new(DisconnectReason::ServerShutdown))
                        } else {
                            Ok(())
                        }
                    }
                };
                let step = match step {
                    Ok(()) => self.flush(&mut stream).await,
                    Err(exit) => {
                        // Send what is already encoded (e.g. the PUBACK before a DISCONNECT).
                        let _ = self.flush(&mut stream).await;
                        Err(exit)
                    }
                };
                if let Err(exit) = step {
                    break exit;
                }
            },
        };
        if exit.reason == DisconnectReason::ServerShutdown {
            self.drain(&mut stream, phase).await;
        }
        self.finish(exit.reason, exit.kick).await;
        let _ = stream.shutdown().await;
    }

    /// Shutdown: report `server_shutdown` now, keep delivering (the events of everybody's
    /// shutdown among them) until the broker closes every socket.
    async fn drain<S>(&mut self, stream: &mut S, mut phase: watch::Receiver<Phase>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.report_close(DisconnectReason::ServerShutdown);
        loop {
            if *phase.borrow() == Phase::Closing {
                return;
            }
            let step = tokio::select! {
                notification = self.link_rx.next() => match notification {
                    Ok(first) => self.handle_notifications(first).await,
                    Err(_) => return,
                },
                changed = phase.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Ok(())
                }
            };
            if step.is_err() || self.flush(stream).await.is_err() {
                return;
            }
        }
    }

    /// Reports the end, publishes the will when due, and tells the router.
    pub(super) async fn finish(&mut self, reason: DisconnectReason, kick: Option<Kick>) {
        self.permit.take();
        let will = match reason {
            DisconnectReason::Normal | DisconnectReason::ServerShutdown => None,
            _ => self.will.take(),
        };
        if let Some(will) = will {
            // The will is a publish on the client's behalf: it gets its `message` event.
            if let Ok(topic) = std::str::from_utf8(&will.topic) {
                let info = PublishInfo {
                    topic,
                    payload: &will.payload,
                    qos: will.qos,
                    retain: will.retain,
                };
                if let PublishOutcome::Accepted(Some(event)) =
                    self.tracker.handle_publish(now_ms(), info)
                {
                    self.shared.events.emit(&event);
                }
            }
            let properties = self.routed_properties(will.qos, &will.payload);
            let publish = Publish::new(will.topic, will.payload, will.retain);
            self.router_batch
                .push(Packet::Publish(publish, Some(properties)));
        }
        self.report_close(reason);
        info!(client_id = %self.client_id, reason = reason.as_str(), "client disconnected");
        // DISCONNECT makes the router drop the connection and keep a persistent session.
        self.router_batch.push(Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ));
        let _ = self.send_to_router().await;
        // Before the registry: once the client id is gone, its clean session's filters are.
        self.shared
            .interest
            .session_ended(&self.client_id, self.serial, self.clean_session);
        self.shared.registry.remove(&self.client_id, self.serial);
        self.shared.metrics.connection_closed();
        if let Some(kick) = kick {
            let _ = kick.send(());
        }
    }

    /// The internal properties of a publish this client sends into the router: its real QoS
    /// as a marker (it enters the router at QoS 0) and, when `msgack` is on and a QoS 1 or 2
    /// payload may be an envelope (see [`may_be_envelope`]), its publisher, since the router
    /// does not say who published a delivery and `msgack` needs it.
    fn routed_properties(&self, qos: QoS, payload: &[u8]) -> PublishProperties {
        let mut properties = PublishProperties {
            payload_format_indicator: Some(QOS_MARKER_BASE + qos.as_u8()),
            ..PublishProperties::default()
        };
        // A QoS 0 publish is delivered at QoS 0, which gets no acknowledgement and no `msgack`.
        if qos != QoS::AtMostOnce && self.tracks_msgack() && may_be_envelope(payload) {
            properties
                .user_properties
                .push((PUBLISHER_PROPERTY.to_owned(), self.client_id.clone()));
        }
        properties
    }

    /// Whether `msgack` events are on and would reach a sink now (with the router as the only
    /// sink: some subscription receives them, see [`crate::interest`]). When not, deliveries
    /// are not reported to the tracker (it would parse every envelope and remember it, only to
    /// report nothing) and publishes carry no publisher.
    fn tracks_msgack(&self) -> bool {
        let msgack = activity_core::event::EventKind::MsgAck;
        self.shared.tracker_config.enabled.contains(msgack) && self.shared.events.wants(msgack)
    }

    /// Queues the `disconnected` event, once per session.
    fn report_close(&mut self, reason: DisconnectReason) {
        if !self.tracker.is_connected() {
            return;
        }
        if let Some(event) = self.tracker.handle_close(now_ms(), reason) {
            self.shared.events.emit(&event);
        }
        self.shared.unreported.fetch_sub(1, Ordering::AcqRel);
    }

    async fn send_to_router(&mut self) -> Result<(), Exit> {
        for ack in self.router_acks.drain(..) {
            self.router_batch.push(match ack {
                RouterAck::PubAck(pkid) => Packet::PubAck(
                    PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                ),
                RouterAck::PubRec(pkid) => Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: PubRecReason::Success,
                    },
                    None,
                ),
                RouterAck::PubComp(pkid) => Packet::PubComp(
                    PubComp {
                        pkid,
                        reason: PubCompReason::Success,
                    },
                    None,
                ),
            });
        }
        let Some(last) = self.router_batch.pop() else {
            return Ok(());
        };
        self.link_tx.buffer().extend(self.router_batch.drain(..));
        self.link_tx.send(last).await.map(|_| ()).map_err(|e| {
            warn!(client_id = %self.client_id, error = %e, "router link failed");
            Exit::new(DisconnectReason::ProtocolError)
        })
    }

    /// Sends the router what the input produced, then the client what is encoded.
    async fn flush<S>(&mut self, stream: &mut S) -> Result<(), Exit>
    where
        S: AsyncWrite + Unpin,
    {
        self.send_to_router().await?;
        if !self.out.is_empty() {
            let n = self.out.len();
            // A client that stops reading must not hold this task (and with it the keep-alive
            // timer, takeovers and shutdown) forever: the write gets until the keep-alive
            // deadline, or WRITE_STALL_LIMIT without keep-alive.
            let limit = if self.keep_alive > 0 {
                self.last_read + Duration::from_millis(u64::from(self.keep_alive) * 1500)
            } else {
                Instant::now() + WRITE_STALL_LIMIT
            };
            let result = timeout_at(limit, async {
                stream.write_all(&self.out).await?;
                stream.flush().await
            })
            .await;
            self.out.clear();
            match result {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Exit::new(DisconnectReason::TcpClosed)),
                Err(_) => {
                    debug!(client_id = %self.client_id, "client stopped reading: closing");
                    self.shared
                        .metrics
                        .keepalive_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Exit::new(DisconnectReason::KeepaliveTimeout));
                }
            }
            self.shared
                .metrics
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write(&mut self, packet: &WirePacket<'_>) {
        let len = match packet.encoded_len() {
            Ok(len) => len,
            Err(e) => {
                warn!(error = %e, "cannot encode a packet for the client");
                return;
            }
        };
        let start = self.out.len();
        self.out.resize(start + len, 0);
        match packet.encode(&mut self.out[start..]) {
            Ok(n) => {
                self.out.truncate(start + n);
                self.shared
                    .metrics
                    .packets_out
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.out.truncate(start);
                warn!(error = %e, "cannot encode a packet for the client");
            }
        }
    }

    /// Decodes every complete packet in `rbuf` and handles it.
    fn handle_input(&mut self, rbuf: &mut BytesMut) -> Option<Exit> {
        let max = self.shared.config.max_packet_size;
        loop {
            let header = match codec::fixed_header(rbuf) {
                Ok(Some(header)) => header,
                Ok(None) => return None,
                Err(e) => return Some(self.protocol_error(&e)),
            };
            let len = header.packet_len();
            if len > max {
                return Some(self.protocol_error(&DecodeError::PacketTooLarge { size: len, max }));
            }
            if rbuf.len() < len {
                rbuf.reserve(len - rbuf.len());
                return None;
            }
            // Decoded in place: the buffer stays unshared and is reused, and only a routed
            // publish is copied out (see `handle_publish`).
            let frame = rbuf.get(..len).unwrap_or_default();
            self.shared
                .metrics
                .packets_in
                .fetch_add(1, Ordering::Relaxed);
            let packet = match codec::decode(frame, max) {
                Ok(Some((packet, _))) => packet,
                Ok(None) => {
                    return Some(self.protocol_error(&DecodeError::Truncated));
                }
                Err(e) => return Some(self.protocol_error(&e)),
            };
            let exit = self.handle_packet(packet, frame);
            rbuf.advance(len);
            if exit.is_some() {
                return exit;
            }
        }
    }

    fn protocol_error(&self, error: &DecodeError) -> Exit {
        debug!(client_id = %self.client_id, error = %error, "protocol error: closing");
        self.shared
            .metrics
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        Exit::new(reason_for(error))
    }

    fn violation(&self, what: &str) -> Exit {
        debug!(client_id = %self.client_id, what, "protocol violation: closing");
        self.shared
            .metrics
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        Exit::new(DisconnectReason::ProtocolError)
    }

    fn handle_packet(&mut self, packet: WirePacket<'_>, frame: &[u8]) -> Option<Exit> {
        let now = now_ms();
        match packet {
            WirePacket::Publish(publish) => return self.handle_publish(now, publish, frame),
            WirePacket::PubAck(pkid) => self.handle_ack(now, pkid, QoS::AtLeastOnce),
            WirePacket::PubRec(pkid) => self.handle_ack(now, pkid, QoS::ExactlyOnce),
            WirePacket::PubRel(pkid) => {
                self.inbound_qos2.remove(&pkid);
                self.write(&WirePacket::PubComp(pkid));
            }
            WirePacket::PubComp(pkid) => {
                if self
                    .sequencer
                    .on_client_pubcomp(pkid, &mut self.router_acks)
                    .is_err()
                {
                    self.shared
                        .metrics
                        .acks_unmatched
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            WirePacket::Subscribe(subscribe) => {
                let filters: Vec<(&str, QoS)> = subscribe.filters.iter().collect();
                return self.handle_subscribe(subscribe.pkid, &filters);
            }
            WirePacket::Unsubscribe(unsubscribe) => {
                let filters: Vec<&str> = unsubscribe.filters.iter().collect();
                self.handle_unsubscribe(now, unsubscribe.pkid, &filters);
            }
            WirePacket::PingReq => self.write(&WirePacket::PingResp),
            WirePacket::Disconnect => return Some(Exit::new(DisconnectReason::Normal)),
            WirePacket::Connect(_) => return Some(self.violation("second CONNECT")),
            WirePacket::ConnAck(_)
            | WirePacket::SubAck(_)
            | WirePacket::UnsubAck(_)
            | WirePacket::PingResp => {
                return Some(self.violation("server-only packet from a client"));
            }
        }
        None
    }

    fn handle_publish(&mut self, now: u64, publish: WirePublish<'_>, frame: &[u8]) -> Option<Exit> {
        let pkid = publish.pkid.unwrap_or(0);
        let duplicate = publish.qos == QoS::ExactlyOnce && self.inbound_qos2.contains(&pkid);
        if publish.topic.starts_with('$') {
            // `$` topics belong to the server (MQTT 3.1.1 section 4.7.2) and the router serves
            // none: the publish is acknowledged and dropped, like one on a system topic.
            self.shared
                .metrics
                .publishes_denied
                .fetch_add(1, Ordering::Relaxed);
            debug!(client_id = %self.client_id, topic = publish.topic, "publish on a $ topic dropped");
        } else if !duplicate {
            let info = PublishInfo {
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
            };
            match self.tracker.handle_publish(now, info) {
                PublishOutcome::Denied => {
                    self.shared
                        .metrics
                        .publishes_denied
                        .fetch_add(1, Ordering::Relaxed);
                }
                PublishOutcome::Accepted(event) => {
                    if let Some(event) = event {
                        self.shared.events.emit(&event);
                    }
                    let properties = self.routed_properties(publish.qos, publish.payload);
                    // One copy of the frame for the router; topic and payload are slices of it.
                    let owned = Bytes::copy_from_slice(frame);
                    let slice_of = |part: &[u8]| {
                        // `part` borrows from `frame`: its offset there is its offset in `owned`.
                        let start = (part.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
                        match start.checked_add(part.len()) {
                            Some(end) if end <= owned.len() => owned.slice(start..end),
                            _ => Bytes::copy_from_slice(part),
                        }
                    };
                    let routed = Publish::new(
                        slice_of(publish.topic.as_bytes()),
                        slice_of(publish.payload),
                        publish.retain,
                    );
                    self.router_batch
                        .push(Packet::Publish(routed, Some(properties)));
                }
            }
        }
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.write(&WirePacket::PubAck(pkid)),
            QoS::ExactlyOnce => {
                if !duplicate {
                    if self.inbound_qos2.len() >= MAX_INBOUND_QOS2 {
                        return Some(self.violation("too many QoS 2 publishes without PUBREL"));
                    }
                    self.inbound_qos2.insert(pkid);
                }
                self.write(&WirePacket::PubRec(pkid));
            }
        }
        None
    }

    fn handle_ack(&mut self, now: u64, pkid: u16, qos: QoS) {
        if self
            .sequencer
            .on_client_ack(pkid, qos, &mut self.router_acks)
            .is_err()
        {
            self.shared
                .metrics
                .acks_unmatched
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = match qos {
            QoS::ExactlyOnce => self.tracker.handle_pubrec(now, pkid),
            _ => self.tracker.handle_puback(now, pkid),
        };
        if let Some(event) = event {
            self.shared.events.emit(&event);
        }
    }

    fn handle_subscribe(&mut self, pkid: u16, filters: &[(&str, QoS)]) -> Option<Exit> {
        let topics = &self.shared.tracker_config.topics;
        let mut decided = Vec::with_capacity(filters.len());
        let mut routed = Vec::new();
        for (filter, qos) in filters {
            let denied_system = topics.filter_receives_events(filter) && !self.may_subscribe_system;
            let over_limit = !self.subscriptions.contains_key(*filter)
                && self.subscriptions.len() + routed.len() >= MAX_SUBSCRIPTIONS;
            // The router serves no `$` topics and drops a link that subscribes to one.
            let dollar = is_dollar_filter(filter);
            if denied_system || over_limit || dollar {
                self.shared
                    .metrics
                    .subscriptions_denied
                    .fetch_add(1, Ordering::Relaxed);
                debug!(client_id = %self.client_id, filter, denied_system, over_limit, "subscription refused");
                decided.push(None);
            } else {
                self.shared
                    .interest
                    .subscribe(&self.client_id, self.serial, filter);
                decided.push(Some(((*filter).to_owned(), *qos)));
                routed.push(Filter {
                    path: (*filter).to_owned(),
                    qos: rumqttd_qos(*qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                });
            }
        }
        if routed.is_empty() {
            // Nothing for the router: answer at once.
            let codes: Vec<SubAckCode> = decided.iter().map(|_| SubAckCode::Failure).collect();
            self.write(&WirePacket::SubAck(SubAck {
                pkid,
                codes: SubAckCodes::from_slice(&codes),
            }));
            return None;
        }
        if self.pending_subscribes.len() >= MAX_PENDING_SUBSCRIBES {
            return Some(self.violation("too many SUBSCRIBEs awaiting SUBACK"));
        }
        self.pending_subscribes.push_back(PendingSubscribe {
            pkid,
            filters: decided,
        });
        self.router_batch.push(Packet::Subscribe(
            Subscribe {
                pkid,
                filters: routed,
            },
            None,
        ));
        None
    }

    /// The router answered a SUBSCRIBE: merge its codes with the front's refusals.
    fn handle_router_suback(&mut self, pkid: u16, router_codes: &[SubscribeReasonCode]) {
        let Some(i) = self.pending_subscribes.iter().position(|p| p.pkid == pkid) else {
            debug!(pkid, "SUBACK from the router for no pending SUBSCRIBE");
            return;
        };
        let Some(pending) = self.pending_subscribes.remove(i) else {
            return;
        };
        let now = now_ms();
        let mut router_codes = router_codes.iter();
        let mut codes = Vec::with_capacity(pending.filters.len());
        for filter in &pending.filters {
            let granted = match filter {
                None => None,
                Some((path, requested)) => {
                    let granted = match router_codes.next() {
                        Some(SubscribeReasonCode::Success(q)) => Some(core_qos(q)),
                        Some(SubscribeReasonCode::QoS0) => Some(QoS::AtMostOnce),
                        Some(SubscribeReasonCode::QoS1) => Some(QoS::AtLeastOnce),
                        Some(SubscribeReasonCode::QoS2) => Some(QoS::ExactlyOnce),
                        _ => None,
                    }
                    .map(|q| q.min(*requested));
                    if let Some(q) = granted {
                        self.subscriptions.insert(path.clone(), q);
                    }
                    if let Some(event) = self.tracker.handle_subscribe(now, path, granted) {
                        self.shared.events.emit(&event);
                    }
                    granted
                }
            };
            codes.push(granted.map_or(SubAckCode::Failure, SubAckCode::Success));
        }
        self.write(&WirePacket::SubAck(SubAck {
            pkid,
            codes: SubAckCodes::from_slice(&codes),
        }));
    }

    fn handle_unsubscribe(&mut self, now: u64, pkid: u16, filters: &[&str]) {
        let mut routed = Vec::new();
        for filter in filters {
            if self.subscriptions.remove(*filter).is_some() {
                self.shared.interest.unsubscribe(&self.client_id, filter);
                routed.push((*filter).to_owned());
                if let Some(event) = self.tracker.handle_unsubscribe(now, filter) {
                    self.shared.events.emit(&event);
                }
            }
        }
        if !routed.is_empty() {
            self.router_batch.push(Packet::Unsubscribe(
                Unsubscribe {
                    pkid,
                    filters: routed,
                },
                None,
            ));
        }
        // The router answers nothing for a filter never subscribed: the front always answers.
        self.write(&WirePacket::UnsubAck(pkid));
    }

    /// Handles `first` and every notification already queued behind it.
    async fn handle_notifications(&mut self, first: Option<Notification>) -> Result<(), Exit> {
        let mut next = first;
        let mut budget = 1024;
        let mut wake = false;
        while let Some(notification) = next {
            if matches!(notification, Notification::Unschedule) {
                // The router paused this connection until we ask for more.
                wake = true;
            } else {
                self.handle_notification(notification);
            }
            budget -= 1;
            if budget == 0 {
                break;
            }
            next = match futures_util::FutureExt::now_or_never(self.link_rx.next()) {
                Some(Ok(n)) => n,
                Some(Err(_)) => return Err(Exit::new(DisconnectReason::ProtocolError)),
                None => None,
            };
        }
        if wake && self.link_rx.wake().await.is_err() {
            return Err(Exit::new(DisconnectReason::ProtocolError));
        }
        Ok(())
    }

    fn handle_notification(&mut self, notification: Notification) {
        // Deliveries, by far the most notifications, are read in place; only the others are
        // converted to packets (none of them is a PUBLISH).
        let packet = match notification {
            Notification::Forward(forward) => {
                return self.deliver(forward.publish, forward.properties.as_ref());
            }
            other => Option::<Packet>::from(other),
        };
        let Some(packet) = packet else {
            return;
        };
        match packet {
            Packet::SubAck(suback, _) => {
                self.handle_router_suback(suback.pkid, &suback.return_codes)
            }
            Packet::PubRel(pubrel, _) => {
                if self.sequencer.on_router_pubrel(pubrel.pkid) {
                    self.write(&WirePacket::PubRel(pubrel.pkid));
                }
            }
            // UNSUBACK: the front already answered. PUBACK/PUBREC/PUBCOMP: every publish enters
            // the router at QoS 0, so none are due; PINGRESP: the front answers PINGREQ.
            Packet::UnsubAck(..)
            | Packet::PubAck(..)
            | Packet::PubRec(..)
            | Packet::PubComp(..)
            | Packet::PingResp(..) => {}
            Packet::Disconnect(..) => {
                debug!(client_id = %self.client_id, "router asked to disconnect");
            }
            other => debug!(?other, "unexpected packet from the router"),
        }
    }

    /// One delivery from the router: at `min(publish QoS, subscription QoS)` to the client.
    fn deliver(&mut self, mut publish: Publish, properties: Option<&PublishProperties>) {
        let marker = properties
            .and_then(|p| p.payload_format_indicator)
            .and_then(|m| m.checked_sub(QOS_MARKER_BASE))
            .and_then(QoS::from_u8);
        let publisher = properties.and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == PUBLISHER_PROPERTY)
                .map(|(_, v)| v.as_str())
        });
        let topic = std::mem::take(&mut publish.topic);
        let payload = std::mem::take(&mut publish.payload);
        let Some((router_qos, pkid, dup)) = router_flags(&publish) else {
            warn!("router delivery with an invalid QoS");
            return;
        };
        let Ok(topic) = std::str::from_utf8(&topic) else {
            return;
        };
        let client_qos = marker.map_or(router_qos, |m| m.min(router_qos));
        self.sequencer
            .on_delivery(pkid, router_qos, client_qos, &mut self.router_acks);
        self.write(&WirePacket::Publish(WirePublish {
            dup: dup && client_qos != QoS::AtMostOnce,
            qos: client_qos,
            retain: publish.retain,
            topic,
            pkid: (client_qos != QoS::AtMostOnce).then_some(pkid),
            payload: &payload,
        }));
        if !self.tracks_msgack() {
            return;
        }
        let delivery = DeliveryInfo {
            pkid,
            qos: client_qos,
            topic,
            payload: &payload,
            pub_client_id: publisher,
        };
        let before = self.tracker.stats();
        self.tracker.handle_delivery(delivery, |_| None);
        let after = self.tracker.stats();
        let evicted = after.deliveries_evicted - before.deliveries_evicted
            + (after.deliveries_too_large - before.deliveries_too_large);
        if evicted > 0 {
            self.shared
                .metrics
                .deliveries_evicted
                .fetch_add(evicted, Ordering::Relaxed);
        }
    }
}

/// Below this much free space the read buffer grows before the next read.
const READ_MIN_SPARE: usize = 1024;

/// How much the read buffer grows by.
const READ_GROW: usize = 32 * 1024;

/// Makes room in the read buffer before a read, in steps of [`READ_GROW`].
///
/// Packets are decoded in place and the buffer is advanced past them, so it is never shared
/// and `reserve` reuses it (moving the few bytes of a partial packet to its front) instead of
/// allocating. Growing in large steps keeps that move rare; an idle connection keeps its small
/// buffer, which only grows when it fills.
fn reserve_read_space(rbuf: &mut BytesMut) {
    if rbuf.capacity() - rbuf.len() < READ_MIN_SPARE {
        rbuf.reserve(READ_GROW);
    }
}

/// Whether `payload` may be an envelope: it starts with `{` after JSON whitespace. Publishes
/// that pass carry their publisher through the router; the delivery side parses the envelope
/// (once per delivery, instead of here once more per publish) and ignores the publisher of a
/// payload that turns out not to be one.
fn may_be_envelope(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// The QoS, packet id and DUP flag of a router delivery, which rumqttd keeps private.
///
/// `Publish::serialize` (rumqttd's MQTT-independent form) starts with the MQTT fixed-header
/// flags byte and the packet id; `publish` should have its topic and payload taken out first,
/// so that this copies nothing but those few bytes. `None` for an invalid QoS.
fn router_flags(publish: &Publish) -> Option<(QoS, u16, bool)> {
    let head = publish.serialize();
    let (&flags, rest) = head.split_first()?;
    let pkid = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    let qos = QoS::from_u8((flags >> 1) & 0b11)?;
    Some((qos, pkid, flags & 0b1000 != 0))
}

/// Whether `filter` names `$` topics, which the router refuses (shared subscriptions,
/// `$share/...`, are the router's own and pass).
fn is_dollar_filter(filter: &str) -> bool {
    filter.starts_with('$') && !filter.starts_with("$share/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_candidates_start_with_a_brace() {
        assert!(may_be_envelope(br#"{"product_id":"p","message_id":1}"#));
        assert!(may_be_envelope(b" \r\n\t{}"));
        assert!(!may_be_envelope(b""));
        assert!(!may_be_envelope(b"  "));
        assert!(!may_be_envelope(b"[1]"));
        assert!(!may_be_envelope(b"hello {"));
    }

    #[test]
    fn router_flags_read_qos_packet_id_and_dup() {
        // rumqttd's MQTT-independent form: flags, packet id, topic length, topic, payload.
        for (flags, pkid, expected) in [
            (0x30, 0, (QoS::AtMostOnce, 0, false)),
            (0x32, 7, (QoS::AtLeastOnce, 7, false)),
            (0x3D, 0x1234, (QoS::ExactlyOnce, 0x1234, true)),
        ] {
            let mut wire = vec![flags];
            wire.extend_from_slice(&u16::to_be_bytes(pkid));
            wire.extend_from_slice(b"\x00\x03a/bpayload");
            let mut publish = Publish::deserialize(Bytes::from(wire));
            assert_eq!(&publish.topic[..], b"a/b");
            publish.topic = Bytes::new();
            publish.payload = Bytes::new();
            assert_eq!(router_flags(&publish), Some(expected));
        }
    }
}
