//! One relayed client connection: the driver of the core's engine in relay mode
//! ([`activity_core::server::Relay`]) between the client's socket and its own connection to the
//! upstream broker.
//!
//! Every MQTT decision is the engine's: the CONNECT rules, which client packets go upstream
//! unchanged and which it drops or answers itself (a publish on a system topic, a SUBSCRIBE the
//! access rule refuses), keep-alive, the limits, and the events, read off both directions. The
//! driver moves bytes: client bytes into the engine and what it forwards to the upstream; the
//! upstream's bytes into the engine and what it forwards to the client, with the engine's own
//! answers. What it adds is what the engine cannot see:
//!
//! - the questions of a CONNECT: the ids of the taps' event publishers (`broker/<node>`,
//!   reserved here besides the engine's `broker`), credentials, the server's phase and the
//!   connection limit ([`crate::admission`]), and whether the upstream can be reached at all;
//! - takeover within this tap: when the upstream accepts a client id that an older connection
//!   through this tap holds, the older one is closed as `takenover` (its `disconnected` event
//!   before the new `connected`); when the upstream closes the older one first, that close is
//!   labelled `takenover` too, not `upstream_closed`;
//! - who published the envelope messages that went through this tap, for `msgack`;
//! - a client that stops reading: a write to it may stall for [`WRITE_STALL_LIMIT`];
//! - shutdown: every connection reports `server_shutdown` at once and keeps relaying the
//!   upstream (the other clients' shutdown events among it) until the tap closes it.
//!
//! The two directions run concurrently (a relay that waited on one could deadlock with an
//! upstream that waits on the other) and share the engine behind a mutex, held only during an
//! engine call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use activity_core::QoS;
use activity_core::client_id::CLIENT_ID_CAPACITY;
use activity_core::envelope::{Envelope, find_envelope};
use activity_core::event::{Event, EventKind, Transport};
use activity_core::server::{
    Access, CloseCause, ConnectAnswer, Connection, Counter, Delivery, Output, Peer, ReasonCode,
    Relay, RelayOutput, Route, Routed,
};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::requests::{HeapRequestStore, MAX_PENDING_REQUESTS};
use super::upstream::UpstreamStream;
use super::{Entry, TapShared};
use crate::ack_store::HeapAckStore;
use crate::admission::{self, Admission, Phase};
use crate::connection::{WRITE_STALL_LIMIT, now_ms};
use crate::presence::Online;
use crate::session_store::HeapSessionStore;

/// The engine of one relayed connection.
type Engine = Relay<HeapAckStore, HeapSessionStore, HeapRequestStore>;

/// The room offered to the engine for its own answers in one call.
const TX_ROOM: usize = 4096;

/// One relayed connection: the engine and what ends with it. Its two directions share it, and
/// so does a later connection of the same client id through this tap, which closes it.
pub(super) struct Conn {
    relay: Engine,
    serial: u64,
    /// The client id, once the engine asked about the CONNECT.
    client_id: String,
    /// The credentials of the CONNECT, for the admission.
    question: Option<(Option<String>, Option<Vec<u8>>)>,
    /// The user name of the CONNECT, for the topic access rules.
    username: Option<String>,
    /// The connection-limit permit, released when the session ends, before its `disconnected`
    /// event, so that a client reconnecting as soon as it sees the event finds its slot free.
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the connection was counted as open (until its session ends).
    open: bool,
    /// The registry entry to insert when the upstream accepts the client.
    entry: Option<Entry>,
    /// What the engine wrote for the client when a newer connection took this one over (an
    /// MQTT 5 DISCONNECT 0x8E), written by this connection's own task as it ends.
    farewell: Vec<u8>,
    /// The client's address.
    peer: SocketAddr,
    /// The connection's entry in the HTTP API's list of who is online (when the API is on),
    /// from its CONNECT; entered when the upstream accepts the client.
    online: Option<Arc<Online>>,
}

/// The engine of a connection, locked.
fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine's [`RelayOutput`] during one call: the engine's outputs of the connection `conn`
/// (borrowed apart from its engine).
struct Side<'a> {
    shared: &'a TapShared,
    serial: u64,
    client_id: &'a mut String,
    question: &'a mut Option<(Option<String>, Option<Vec<u8>>)>,
    username: &'a mut Option<String>,
    permit: &'a mut Option<OwnedSemaphorePermit>,
    open: &'a mut bool,
    entry: &'a mut Option<Entry>,
    peer: SocketAddr,
    online: &'a mut Option<Arc<Online>>,
    /// What goes upstream.
    upstream: &'a mut Vec<u8>,
}

impl Conn {
    /// Runs `call` on the engine with its outputs; what it forwards is appended to `upstream`.
    fn drive<R>(
        &mut self,
        shared: &TapShared,
        upstream: &mut Vec<u8>,
        call: impl FnOnce(&mut Engine, &mut Side<'_>) -> R,
    ) -> R {
        let Conn {
            relay,
            serial,
            client_id,
            question,
            username,
            permit,
            open,
            entry,
            farewell: _,
            peer,
            online,
        } = self;
        let mut side = Side {
            shared,
            serial: *serial,
            client_id,
            question,
            username,
            permit,
            open,
            entry,
            peer: *peer,
            online,
            upstream,
        };
        call(relay, &mut side)
    }
}

impl Side<'_> {
    /// The session ended: its permit and registry entry go, before its `disconnected` event.
    fn release(&mut self) {
        self.permit.take();
        if std::mem::take(self.open) {
            self.shared.registry.remove(self.client_id, self.serial);
            if let Some(presence) = &self.shared.presence {
                presence.remove(self.client_id, self.serial);
            }
            self.shared.metrics.connection_closed();
        }
    }
}

impl Output for Side<'_> {
    fn route(&mut self, route: Route<'_>) -> Routed {
        match route {
            Route::Connect(request) => {
                *self.client_id = request.client_id.to_owned();
                *self.username = request.username.map(str::to_owned);
                if self.shared.presence.is_some() {
                    *self.online = Some(Arc::new(Online::new(
                        request.client_id,
                        request.username,
                        self.peer.to_string(),
                        request.protocol_level,
                        self.serial,
                        now_ms(),
                    )));
                }
                *self.question = Some((
                    request.username.map(str::to_owned),
                    request.password.map(<[u8]>::to_vec),
                ));
            }
            Route::Publish(publish) => {
                // For `msgack` of its deliveries through any connection of this tap.
                let msgack = self
                    .shared
                    .server
                    .tracker
                    .enabled
                    .contains(EventKind::MsgAck);
                if publish.qos != QoS::AtMostOnce
                    && msgack
                    && let Some(envelope) = find_envelope(publish.payload, &publish.properties)
                {
                    let mut table = self
                        .shared
                        .publishers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    table.record(&envelope, publish.publisher);
                }
            }
            Route::End { cause, .. } => {
                self.release();
                info!(client_id = %self.client_id, reason = cause.reason().as_str(), "client disconnected");
            }
            _ => {}
        }
        Routed::Accepted
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        if event.kind() == EventKind::Disconnected {
            self.release();
        }
        // The engine routes no subscriptions in relay mode: the events say what it saw.
        if let Some(online) = self.online.as_deref() {
            match event {
                Event::Connected(connected) => online.set_connected_at(connected.ts),
                Event::Subscribed(subscribed) => {
                    online.subscribe(subscribed.topic, subscribed.qos as u8);
                }
                Event::Unsubscribed(unsubscribed) => online.unsubscribe(unsubscribed.topic),
                _ => {}
            }
        }
        self.shared.events.emit(event);
        None
    }

    fn session_seq(&mut self, now: u64) -> u64 {
        let seq = self.shared.events.session_seq(now);
        if let Some(online) = self.online.as_deref() {
            online.set_session_seq(seq);
        }
        seq
    }

    fn count(&mut self, counter: Counter) {
        self.shared.metrics.count(counter);
    }

    fn is_system_subscriber(&self, client_id: &str, username: Option<&str>) -> bool {
        self.shared
            .config
            .access
            .is_system_subscriber(username, client_id)
    }

    fn is_allowed(&self, access: Access<'_>) -> bool {
        self.shared.acl.is_allowed(
            access.action,
            access.client_id,
            self.username.as_deref(),
            access.topic,
        )
    }
}

impl RelayOutput for Side<'_> {
    fn forward(&mut self, packet: &[u8]) {
        self.upstream.extend_from_slice(packet);
    }

    /// Takeover within this tap: the older connection of the client id is closed now, in this
    /// call, so that its `disconnected` event comes before this one's `connected`.
    fn upstream_accepted(&mut self, client_id: &str) {
        *self.open = true;
        self.shared.metrics.connection_opened();
        if let (Some(presence), Some(online)) = (&self.shared.presence, self.online.as_ref()) {
            presence.insert(online.clone());
        }
        let Some(entry) = self.entry.take() else {
            return;
        };
        let Some(old) = self.shared.registry.insert(client_id, entry) else {
            return;
        };
        if let Some(conn) = old.conn.upgrade() {
            let mut tx = vec![0u8; TX_ROOM];
            let mut ignored = Vec::new();
            let mut old_conn = lock(&conn);
            let written = old_conn.drive(self.shared, &mut ignored, |relay, side| {
                relay.handle_close(now_ms(), CloseCause::TakenOver, &mut tx, side)
            });
            old_conn.farewell.extend_from_slice(&tx[..written]);
        }
        old.wake.notify_one();
    }
}

/// Serves one client connection through the upstream broker until it ends.
pub(super) async fn serve<S>(
    mut client: S,
    peer: SocketAddr,
    transport: Transport,
    shared: Arc<TapShared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    let addr = peer.to_string();
    let engine = Connection::new(
        shared.server.clone(),
        HeapAckStore::new(super::TAP_ACK_STORE_CAPACITY),
        HeapSessionStore::new(),
        Peer {
            addr: Some(&addr),
            is_loopback: admission::is_loopback(peer.ip()),
            transport,
        },
        now_ms(),
        serial,
    );
    let mut relay = Relay::new(
        engine,
        HeapRequestStore::default(),
        u64::try_from(shared.config.upstream.connect_timeout().as_millis()).unwrap_or(u64::MAX),
    );
    relay.set_msgack_tracking(shared.server.tracker.enabled.contains(EventKind::MsgAck));
    let conn = Arc::new(Mutex::new(Conn {
        relay,
        serial,
        client_id: String::new(),
        question: None,
        username: None,
        permit: None,
        open: false,
        entry: None,
        farewell: Vec::new(),
        peer,
        online: None,
    }));
    let wake = Arc::new(Notify::new());
    let superseded = Arc::new(AtomicBool::new(false));
    let mut relayed = Relayed {
        shared: &shared,
        conn: &conn,
        cbuf: BytesMut::with_capacity(4096),
        ubuf: BytesMut::with_capacity(4096),
        tx: vec![0; TX_ROOM],
        forwarded: Vec::new(),
    };
    if let Some(mut upstream) = relayed.connect(&mut client, &wake, &superseded).await {
        relayed
            .run(&mut client, &mut upstream, &wake, &superseded)
            .await;
        let _ = timeout(Duration::from_secs(1), upstream.shutdown()).await;
    }
    let _ = timeout(Duration::from_secs(1), client.shutdown()).await;
}

/// A connection's engine and its two read buffers.
struct Relayed<'a> {
    shared: &'a TapShared,
    conn: &'a Arc<Mutex<Conn>>,
    /// The client's bytes not consumed yet.
    cbuf: BytesMut,
    /// The upstream's bytes not consumed yet.
    ubuf: BytesMut,
    /// The room for the engine's own answers, reused by every call.
    tx: Vec<u8>,
    /// What the engine forwarded to the upstream in the last call.
    forwarded: Vec<u8>,
}

impl Relayed<'_> {
    /// When the engine's next deadline is due, on tokio's clock; far away without one.
    fn deadline(&self) -> Instant {
        match lock(self.conn).relay.poll_timeout() {
            Some(at) => Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())),
            None => Instant::now() + Duration::from_secs(24 * 3600),
        }
    }

    fn is_closed(&self) -> bool {
        lock(self.conn).relay.is_closed()
    }

    /// Hands the client's unconsumed bytes to the engine: what goes upstream is in
    /// `self.forwarded`, the engine's answers for the client are returned.
    fn client_input(&mut self) -> Vec<u8> {
        let mut answers = Vec::new();
        self.forwarded.clear();
        let mut conn = lock(self.conn);
        if let Some(online) = &conn.online {
            online.touch(now_ms());
        }
        loop {
            let progress = conn.drive(self.shared, &mut self.forwarded, |relay, side| {
                relay.handle_input(now_ms(), &self.cbuf, &mut self.tx, side)
            });
            answers.extend_from_slice(&self.tx[..progress.written]);
            self.cbuf.advance(progress.consumed);
            if !conn.relay.is_blocked() {
                return answers;
            }
        }
    }

    /// Hands the upstream's unconsumed bytes to the engine: the bytes for the client, the
    /// forwarded ones first.
    fn upstream_input(&mut self) -> (BytesMut, usize) {
        let tx = &mut self.tx;
        let mut ignored = Vec::new();
        let shared = self.shared;
        let lookup = |envelope: &Envelope| {
            let table = shared.publishers.lock().unwrap_or_else(|e| e.into_inner());
            let id = table.lookup(envelope.product_id.as_id(), envelope.message_id.as_id())?;
            heapless::String::<CLIENT_ID_CAPACITY>::try_from(id).ok()
        };
        let mut out: Option<BytesMut> = None;
        let mut forwarded = 0;
        // The engine stops before a packet it drops (an activity event the client's filters do
        // not receive) and after it: call again while it makes progress.
        loop {
            let relayed = lock(self.conn).drive(shared, &mut ignored, |relay, side| {
                relay.handle_upstream_input(now_ms(), &self.ubuf, tx, side, lookup)
            });
            let passed = self.ubuf.split_to(relayed.forward);
            let out = match &mut out {
                Some(out) => {
                    out.extend_from_slice(&passed);
                    out
                }
                // The first call's forwarded bytes are the output, not copied.
                None => out.insert(passed),
            };
            self.ubuf.advance(relayed.consumed - relayed.forward);
            out.extend_from_slice(&tx[..relayed.written]);
            forwarded += relayed.forward;
            if relayed.consumed == 0 || self.ubuf.is_empty() {
                return (std::mem::take(out), forwarded);
            }
        }
    }

    /// Acts on a passed deadline; the bytes for the client.
    fn timeout(&mut self) -> Vec<u8> {
        let mut ignored = Vec::new();
        let written = lock(self.conn).drive(self.shared, &mut ignored, |relay, side| {
            relay.handle_timeout(now_ms(), &mut self.tx, side)
        });
        self.tx[..written].to_vec()
    }

    /// Ends the connection for `cause` (nothing when the engine ended it already); the bytes
    /// for the client.
    fn close(&mut self, cause: CloseCause) -> Vec<u8> {
        let mut ignored = Vec::new();
        let written = lock(self.conn).drive(self.shared, &mut ignored, |relay, side| {
            relay.handle_close(now_ms(), cause, &mut self.tx, side)
        });
        self.tx[..written].to_vec()
    }

    /// The CONNECT phase: reads until the engine asks about the CONNECT, answers it (after
    /// opening the upstream connection), and waits for the upstream's answer. Returns the
    /// upstream connection of an accepted client (its CONNACK relayed); `None` when the
    /// connection ended first.
    async fn connect<S>(
        &mut self,
        client: &mut S,
        wake: &Arc<Notify>,
        superseded: &Arc<AtomicBool>,
    ) -> Option<UpstreamStream>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let metrics = &self.shared.metrics;
        while !lock(self.conn).relay.is_authorizing() {
            if self.is_closed() {
                return None;
            }
            let deadline = self.deadline();
            tokio::select! {
                read = client.read_buf(&mut self.cbuf) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => {
                        metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                        // Nothing goes upstream before the verdict.
                        let answers = self.client_input();
                        if !write_to_client(client, &answers, metrics).await {
                            return None;
                        }
                    }
                },
                () = sleep_until(deadline) => {
                    let answer = self.timeout();
                    let _ = write_to_client(client, &answer, metrics).await;
                }
            }
        }
        let (answer, upstream, older) = match self.admit().await {
            Ok((upstream, older)) => (ConnectAnswer::accept(false), Some(upstream), older),
            Err(reason) => (ConnectAnswer::Refuse(reason), None, None),
        };
        self.forwarded.clear();
        let progress = lock(self.conn).drive(self.shared, &mut self.forwarded, |relay, side| {
            relay.handle_connect_answer(now_ms(), answer, &self.cbuf, &mut self.tx, side)
        });
        self.cbuf.advance(progress.consumed);
        let mut upstream = match upstream {
            Some(upstream) if !self.is_closed() => upstream,
            _ => {
                if let Some(flag) = older {
                    flag.store(false, Ordering::Release);
                }
                let _ = write_to_client(client, &self.tx[..progress.written], metrics).await;
                return None;
            }
        };
        // The CONNECT goes upstream; the registry entry waits for the upstream's CONNACK.
        let client_id = {
            let mut conn = lock(self.conn);
            conn.entry = Some(Entry {
                serial: conn.serial,
                conn: Arc::downgrade(self.conn),
                superseded: superseded.clone(),
                wake: wake.clone(),
            });
            conn.client_id.clone()
        };
        let sent = write_to_upstream(&mut upstream, &self.forwarded).await;
        let mut unreachable = !sent;
        while sent && lock(self.conn).relay.is_awaiting_upstream() {
            let deadline = self.deadline();
            let to_client = tokio::select! {
                read = upstream.read_buf(&mut self.ubuf) => match read {
                    Ok(0) | Err(_) => {
                        unreachable = true;
                        self.close(CloseCause::RouterClosed)
                    }
                    Ok(_) => {
                        let (out, forwarded) = self.upstream_input();
                        // Closed with nothing relayed: the engine answered CONNACK 3 itself.
                        unreachable = self.is_closed() && forwarded == 0;
                        out.to_vec()
                    }
                },
                () = sleep_until(deadline) => {
                    unreachable = true;
                    self.timeout()
                }
            };
            if !write_to_client(client, &to_client, metrics).await {
                self.close(CloseCause::TransportClosed);
            }
        }
        if !sent {
            let answer = self.close(CloseCause::RouterClosed);
            let _ = write_to_client(client, &answer, metrics).await;
        }
        if lock(self.conn).relay.is_connected() {
            return Some(upstream);
        }
        // Refused by the upstream, or it could not answer: an older connection of the id stays.
        if let Some(flag) = older {
            flag.store(false, Ordering::Release);
        }
        if unreachable {
            metrics.upstream_unreachable.fetch_add(1, Ordering::Relaxed);
            warn!(upstream = %self.shared.upstream.address, client_id = %client_id, "upstream broker did not answer the CONNECT: refused");
        } else {
            info!(client_id = %client_id, "upstream refused CONNECT");
        }
        None
    }

    /// The driver's part of a CONNECT: the ids reserved for the taps' publishers,
    /// [`Admission`], and the upstream connection. An older connection of the client id through
    /// this tap is marked as superseded (its flag is returned, to clear if the upstream refuses),
    /// so that the upstream closing it is a takeover.
    async fn admit(&mut self) -> Result<(UpstreamStream, Option<Arc<AtomicBool>>), ReasonCode> {
        let (client_id, question) = {
            let mut conn = lock(self.conn);
            (conn.client_id.clone(), conn.question.take())
        };
        let (username, password) = question.ok_or(ReasonCode::ProtocolError)?;
        if super::publisher::is_reserved(&client_id) {
            info!(client_id = %client_id, "CONNECT refused: client id reserved for the taps' event publishers");
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        let shared = self.shared;
        let admission = Admission {
            auth: &shared.auth,
            phase: &shared.phase,
            permits: &shared.permits,
        };
        let permit = admission
            .admit(username.as_deref(), password.as_deref())
            .await?;
        let older = shared.registry.supersede(&client_id);
        match shared.upstream.connect().await {
            Ok(upstream) => {
                lock(self.conn).permit = Some(permit);
                Ok((upstream, older))
            }
            Err(why) => {
                if let Some(flag) = older {
                    flag.store(false, Ordering::Release);
                }
                shared
                    .metrics
                    .upstream_unreachable
                    .fetch_add(1, Ordering::Relaxed);
                warn!(upstream = %shared.upstream.address, client_id = %client_id, why = %format!("{why:#}"), "upstream broker unreachable: CONNECT refused");
                Err(ReasonCode::ServerUnavailable)
            }
        }
    }

    /// The accepted connection: both directions until one of them, a takeover or the shutdown
    /// ends it.
    async fn run<S>(
        &mut self,
        client: &mut S,
        upstream: &mut UpstreamStream,
        wake: &Notify,
        superseded: &AtomicBool,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let shared = self.shared;
        let conn = self.conn;
        let mut to_upstream = Relayed {
            shared,
            conn,
            cbuf: std::mem::take(&mut self.cbuf),
            ubuf: BytesMut::new(),
            tx: vec![0; TX_ROOM],
            forwarded: Vec::new(),
        };
        let mut to_client = Relayed {
            shared,
            conn,
            cbuf: BytesMut::new(),
            ubuf: std::mem::take(&mut self.ubuf),
            tx: vec![0; TX_ROOM],
            forwarded: Vec::new(),
        };
        let (mut client_rx, mut client_tx) = tokio::io::split(client);
        let (mut upstream_rx, mut upstream_tx) = tokio::io::split(upstream);
        let (answers_tx, mut answers_rx) = mpsc::channel::<Vec<u8>>(MAX_PENDING_REQUESTS);
        // What the engine writes for the client as the connection ends (an MQTT 5 server
        // DISCONNECT): written once both directions have stopped.
        let mut last = Vec::new();
        let cause = {
            let up = to_upstream.client_to_upstream(&mut client_rx, &mut upstream_tx, &answers_tx);
            let down = to_client.upstream_to_client(
                &mut upstream_rx,
                &mut client_tx,
                &mut answers_rx,
                superseded,
            );
            tokio::pin!(up, down);
            let mut phase = shared.phase.clone();
            let mut reading = true;
            let mut drained = false;
            loop {
                match *phase.borrow_and_update() {
                    Phase::Running => {}
                    // The end is reported now; the upstream is still relayed (the other
                    // clients' shutdown events among it) until the tap closes every connection.
                    Phase::Draining if !drained => {
                        drained = true;
                        reading = false;
                        let mut ignored = Vec::new();
                        let written = lock(conn).drive(shared, &mut ignored, |relay, side| {
                            relay.handle_shutdown(now_ms(), &mut self.tx, side)
                        });
                        last.extend_from_slice(&self.tx[..written]);
                        if self.is_closed() {
                            break None;
                        }
                    }
                    Phase::Draining => {}
                    Phase::Closing => break Some(CloseCause::ServerShutdown),
                }
                tokio::select! {
                    cause = &mut up, if reading => {
                        // The engine ended the session; a draining one still relays the
                        // upstream's last answers.
                        if cause.is_some() || !lock(conn).relay.is_draining() {
                            break cause;
                        }
                        reading = false;
                    }
                    cause = &mut down => break cause,
                    () = wake.notified() => break None,
                    changed = phase.changed() => {
                        if changed.is_err() {
                            break Some(CloseCause::ServerShutdown);
                        }
                    }
                }
            }
        };
        // Answers the client-side direction queued but the other one had no turn to write
        // (the engine's DISCONNECT for a protocol error or a keep-alive timeout among them).
        let mut queued = Vec::new();
        while let Ok(answer) = answers_rx.try_recv() {
            queued.extend_from_slice(&answer);
        }
        queued.append(&mut last);
        queued.append(&mut lock(conn).farewell);
        if let Some(cause) = cause {
            // Nothing for an MQTT 3.1.1 client: the engine has no server DISCONNECT for it.
            queued.extend_from_slice(&self.close(cause));
        }
        let _ = write_to_client(&mut client_tx, &queued, &shared.metrics).await;
        debug!(client_id = %lock(conn).client_id, "relay ended");
    }

    /// Relays the client's bytes through the engine to the upstream until the connection ends;
    /// the cause, when it is the driver's to report (`None`: the engine ended it).
    async fn client_to_upstream<R, W>(
        &mut self,
        client: &mut R,
        upstream: &mut W,
        to_client: &mpsc::Sender<Vec<u8>>,
    ) -> Option<CloseCause>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let metrics = &self.shared.metrics;
        loop {
            let answers = self.client_input();
            if !write_to_upstream(upstream, &self.forwarded).await {
                return Some(CloseCause::RouterClosed);
            }
            if !answers.is_empty() && to_client.send(answers).await.is_err() {
                return Some(CloseCause::TransportClosed);
            }
            let ended = {
                let conn = lock(self.conn);
                conn.relay.is_closed() || conn.relay.is_draining()
            };
            if ended {
                return None;
            }
            let deadline = self.deadline();
            tokio::select! {
                read = client.read_buf(&mut self.cbuf) => match read {
                    Ok(0) | Err(_) => return Some(CloseCause::TransportClosed),
                    Ok(n) => {
                        metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    }
                },
                () = sleep_until(deadline) => {
                    let answer = self.timeout();
                    if !answer.is_empty() {
                        let _ = to_client.send(answer).await;
                    }
                }
            }
        }
    }

    /// Relays the upstream's bytes through the engine (and the engine's own answers) to the
    /// client until the connection ends; the cause, when it is the driver's to report.
    async fn upstream_to_client<R, W>(
        &mut self,
        upstream: &mut R,
        client: &mut W,
        answers: &mut mpsc::Receiver<Vec<u8>>,
        superseded: &AtomicBool,
    ) -> Option<CloseCause>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let metrics = &self.shared.metrics;
        loop {
            if !self.ubuf.is_empty() {
                let (out, _) = self.upstream_input();
                if !write_to_client(client, &out, metrics).await {
                    return Some(CloseCause::TransportClosed);
                }
            }
            if self.is_closed() {
                return None;
            }
            // The keep-alive is the other direction's; this one watches a draining end.
            let draining = lock(self.conn).relay.is_draining();
            let deadline = self.deadline();
            tokio::select! {
                () = sleep_until(deadline), if draining => {
                    let _ = self.timeout();
                }
                read = upstream.read_buf(&mut self.ubuf) => match read {
                    Ok(0) | Err(_) => {
                        return Some(if superseded.load(Ordering::Acquire) {
                            CloseCause::TakenOver
                        } else {
                            CloseCause::RouterClosed
                        });
                    }
                    Ok(_) => {}
                },
                Some(answer) = answers.recv() => {
                    if !write_to_client(client, &answer, metrics).await {
                        return Some(CloseCause::TransportClosed);
                    }
                }
            }
        }
    }
}

/// Writes what the engine forwarded to the upstream (flushed: a TLS upstream gets its records
/// now); false when the upstream connection failed.
async fn write_to_upstream<W: AsyncWrite + Unpin>(upstream: &mut W, bytes: &[u8]) -> bool {
    bytes.is_empty() || (upstream.write_all(bytes).await.is_ok() && upstream.flush().await.is_ok())
}

/// Writes to the client, giving up after [`WRITE_STALL_LIMIT`] (a client that reads nothing).
async fn write_to_client<W: AsyncWrite + Unpin>(
    client: &mut W,
    bytes: &[u8],
    metrics: &crate::metrics::Metrics,
) -> bool {
    if bytes.is_empty() {
        return true;
    }
    match timeout(WRITE_STALL_LIMIT, async {
        client.write_all(bytes).await?;
        client.flush().await
    })
    .await
    {
        Ok(Ok(())) => {
            metrics.bytes_out.fetch_add(
                u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            true
        }
        _ => false,
    }
}
