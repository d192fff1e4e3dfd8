//! The harness of the shared conformance suite (`tests/tests/conformance.rs`): the three
//! servers that emit activity events behind one [`Server`] type, and [`Wire`], a raw MQTT 3.1.1
//! client that speaks through the core's codec, so that every case sends the same bytes to
//! each server.
//!
//! The servers, each configured alike (events carry `"node": "conf"`, only the client id
//! [`MONITOR`] may read the system topics, loopback is not trusted, packets up to
//! [`MAX_PACKET`] bytes, one user [`USER`] / [`PASSWORD`]):
//!
//! - [`Kind::Broker`]: `activity-broker` in-process on `127.0.0.1:0`;
//! - [`Kind::Tap`]: the tap in-process on `127.0.0.1:0`, in front of Debian's `mosquitto` on a
//!   free port;
//! - [`Kind::Gateway`]: the embassy gateway on a TAP device in a private network namespace
//!   ([`crate::netns`]); its client slots hold 1,024-byte packets.
//!
//! [`run`] starts the server, runs one case against it and stops it; for the gateway it first
//! re-runs the test in its namespace (skipped without root unless `REQUIRE_NETNS=1`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::QoS;
use activity_core::codec::{
    self, Connect, LastWill, Packet, Publish, Subscribe, SubscribeFilters, Unsubscribe,
    UnsubscribeFilters,
};
use activity_core::server::Limits;
use adapter_tokio::auth::hash_password;
use adapter_tokio::broker::Broker;
use adapter_tokio::config::{Config, UserConfig};
use adapter_tokio::metrics::Metrics;
use adapter_tokio::tap::Tap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::netns::{GATEWAY_ADDR, TapGateway, in_private_netns};
use crate::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use crate::{Ev, Monitor, WAIT, assert_fields, assert_ts_recent, options, start_broker};

/// The `"node"` of every event, on every server.
pub const NODE: &str = "conf";
/// The one client id allowed to subscribe to the system topics.
pub const MONITOR: &str = "monitor";
/// The username every server knows.
pub const USER: &str = "alice";
/// [`USER`]'s password.
pub const PASSWORD: &str = "secret";
/// The largest packet every server accepts (the gateway's slot buffers are this size).
pub const MAX_PACKET: usize = 1024;

/// One of the three servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `activity-broker`: rumqttd's router behind our front.
    Broker,
    /// The tap relaying clients to Debian's mosquitto.
    Tap,
    /// The embassy gateway on the core's protocol engine.
    Gateway,
}

impl Kind {
    /// The name a test and its messages use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Broker => "broker",
            Kind::Tap => "tap",
            Kind::Gateway => "gateway",
        }
    }

    /// The highest QoS the server grants a subscription.
    pub fn max_qos(self) -> QoS {
        match self {
            // adapter-embassy's router sets `max_qos: QoS::AtLeastOnce`: a slot keeps no
            // outgoing QoS 2 state, so QoS 2 requests are granted (and delivered at) QoS 1.
            Kind::Gateway => QoS::AtLeastOnce,
            Kind::Broker | Kind::Tap => QoS::ExactlyOnce,
        }
    }

    /// How many QoS 2 publishes of one client may await PUBREL; the engine's rule closes the
    /// connection at one more.
    pub fn max_inbound_qos2(self) -> usize {
        match self {
            Kind::Broker | Kind::Tap => Limits::HOST.max_inbound_qos2,
            Kind::Gateway => adapter_embassy::QOS2_INFLIGHT,
        }
    }

    /// How many topic filters one SUBSCRIBE may carry; the engine's rule closes the connection
    /// at one more.
    pub fn max_filters_per_packet(self) -> usize {
        match self {
            Kind::Broker | Kind::Tap => Limits::HOST.max_filters_per_packet,
            Kind::Gateway => adapter_embassy::MAX_FILTERS_PER_SUBSCRIBE,
        }
    }
}

/// A count a server keeps of what its engine decided; [`Server::counter`] maps it to the
/// server's own counters (`adapter_tokio::metrics::Metrics` for the broker and the tap,
/// `adapter_embassy::GatewayStats` for the gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// CONNECTs refused with a non-zero CONNACK, for any reason.
    RefusedConnects,
    /// CONNECTs refused with CONNACK 4 (bad username or password).
    RefusedCredentials,
    /// PUBLISHes on a system topic by an ordinary client, dropped.
    PublishesDenied,
    /// Topic filters refused with SUBACK 0x80.
    SubscriptionsDenied,
    /// Connections closed for bad bytes or a packet over the size limit.
    ProtocolErrors,
    /// Connections closed at the keep-alive deadline.
    KeepaliveTimeouts,
}

/// What runs behind a [`Server`]; boxed, as the variants differ much in size.
enum Running {
    Broker(Box<Broker>),
    Tap(Box<(Tap, Mosquitto)>),
    Gateway(TapGateway),
}

/// A running server of one [`Kind`], configured as the module docs say.
pub struct Server {
    kind: Kind,
    case: String,
    addr: SocketAddr,
    running: Running,
}

/// The argon2 hash of [`PASSWORD`], computed once per test process.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).expect("hash the test password"))
        .clone()
}

/// The broker's and the tap's common settings on top of `config`.
fn conformance_config(mut config: Config) -> Config {
    config.max_packet_size = MAX_PACKET;
    config.events.node = Some(NODE.to_owned());
    config.access.loopback_may_subscribe = false;
    config.access.system_subscribers = vec![format!("client:{MONITOR}")];
    config.users = vec![UserConfig {
        username: USER.to_owned(),
        password_hash: password_hash(),
    }];
    config
}

/// The gateway's settings: the same user, monitor and node.
fn gateway_config() -> adapter_embassy::Config<'static> {
    static USERS: [adapter_embassy::User<'static>; 1] = [adapter_embassy::User {
        username: USER,
        password: PASSWORD.as_bytes(),
    }];
    adapter_embassy::Config {
        system_subscribers: &[MONITOR],
        auth: Some(adapter_embassy::Auth {
            users: &USERS,
            allow_anonymous: true,
        }),
        ..adapter_embassy::Config::new(NODE)
    }
}

impl Server {
    /// Starts a server of `kind` for the case named `case` and waits until it accepts clients
    /// and publishes events. The gateway must be started inside its network namespace (see
    /// [`run`]).
    pub async fn start(kind: Kind, case: &str) -> Server {
        let (addr, running) = match kind {
            Kind::Broker => {
                let broker = start_broker(conformance_config(crate::test_config())).await;
                (broker.local_addr(), Running::Broker(Box::new(broker)))
            }
            Kind::Tap => {
                let mosquitto = Mosquitto::start().await;
                let tap = start_tap(conformance_config(tap_config(mosquitto.addr))).await;
                wait_publisher(&tap).await;
                (tap.local_addr(), Running::Tap(Box::new((tap, mosquitto))))
            }
            Kind::Gateway => {
                // Starting waits with std sleeps until the gateway accepts TCP connections.
                let gateway = tokio::task::spawn_blocking(|| TapGateway::start(gateway_config()))
                    .await
                    .expect("the gateway starts");
                (GATEWAY_ADDR, Running::Gateway(gateway))
            }
        };
        Server {
            kind,
            case: case.to_owned(),
            addr,
            running,
        }
    }

    /// Which server this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its name, for messages.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The name of the case it runs.
    pub fn case(&self) -> &str {
        &self.case
    }

    /// Whether it is `kind`.
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's or the tap's metrics; `None` for the gateway.
    fn metrics(&self) -> Option<&Metrics> {
        match &self.running {
            Running::Broker(broker) => Some(broker.metrics().as_ref()),
            Running::Tap(running) => Some(running.0.metrics().as_ref()),
            Running::Gateway(_) => None,
        }
    }

    /// The value of `counter` now, or `None` where the server does not count it (the gateway
    /// has no keep-alive counter).
    pub fn counter(&self, counter: Counter) -> Option<u64> {
        if let Some(m) = self.metrics() {
            let value = match counter {
                Counter::RefusedConnects => &m.connections_refused,
                Counter::RefusedCredentials => &m.refused_bad_credentials,
                Counter::PublishesDenied => &m.publishes_denied,
                Counter::SubscriptionsDenied => &m.subscriptions_denied,
                Counter::ProtocolErrors => &m.protocol_errors,
                Counter::KeepaliveTimeouts => &m.keepalive_timeouts,
            };
            return Some(value.load(Ordering::Relaxed));
        }
        let Running::Gateway(gateway) = &self.running else {
            unreachable!("only the gateway has no adapter-tokio metrics")
        };
        let s = gateway.stats();
        let value = match counter {
            Counter::RefusedConnects => {
                s.refused_no_slot + s.refused_no_buffer + s.refused_auth + s.refused_other
            }
            Counter::RefusedCredentials => s.refused_auth,
            Counter::PublishesDenied => s.publishes_denied,
            Counter::SubscriptionsDenied => s.subscriptions_refused,
            Counter::ProtocolErrors => s.protocol_errors + s.packets_too_large,
            Counter::KeepaliveTimeouts => return None,
        };
        Some(u64::from(value))
    }

    /// Waits until `counter` is `want` (the gateway's counters are copied every few
    /// milliseconds); panics after [`WAIT`] with the last value. A counter the server does not
    /// keep is reported as skipped.
    pub async fn expect_counter(&self, counter: Counter, want: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(got) = self.counter(counter) else {
                skipped(
                    self,
                    &format!("the counter {counter:?}"),
                    "this server keeps none",
                );
                return;
            };
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: counter {counter:?} is {got}, expected {want}",
                self.name()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many clients the server holds now; `None` for the gateway (its slots are not
    /// visible from outside its thread).
    pub fn connected_clients(&self) -> Option<usize> {
        match &self.running {
            Running::Broker(broker) => Some(broker.connected_clients()),
            Running::Tap(running) => Some(running.0.connected_clients()),
            Running::Gateway(_) => None,
        }
    }

    /// Waits until the server holds `want` clients (a connection's slot is freed right after
    /// its `disconnected` event); skipped for the gateway.
    pub async fn expect_connected_clients(&self, want: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(got) = self.connected_clients() else {
                skipped(
                    self,
                    "the count of connected clients",
                    "not visible from outside",
                );
                return;
            };
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {got} connected clients, expected {want}",
                self.name()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A `SYSTEM/#` subscriber, connected as [`MONITOR`] (the only client allowed to read the
    /// events).
    pub async fn monitor(&self) -> Monitor {
        Monitor::start_as(options(self.addr, MONITOR)).await
    }

    /// Stops the server (and the tap's mosquitto).
    pub async fn stop(self) {
        match self.running {
            Running::Broker(broker) => (*broker).shutdown().await,
            Running::Tap(running) => {
                let (tap, mosquitto) = *running;
                tap.shutdown().await;
                mosquitto.kill().await;
            }
            Running::Gateway(gateway) => tokio::task::spawn_blocking(move || gateway.stop())
                .await
                .expect("the gateway stops"),
        }
    }
}

/// Runs the conformance case `case` against a fresh server of `kind`.
///
/// The test calling this must be named `<case>::<kind name>` (as the suite's macro names
/// them): the gateway's run re-executes exactly that test inside a private network namespace.
pub fn run(kind: Kind, case: &str, body: impl AsyncFnOnce(&mut Server)) {
    let test_name = format!("{case}::{}", kind.name());
    let go = || {
        println!("conformance: case {case} on the {}", kind.name());
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(async {
            let mut server = Server::start(kind, case).await;
            body(&mut server).await;
            server.stop().await;
        });
    };
    match kind {
        Kind::Gateway => in_private_netns(&test_name, go),
        Kind::Broker | Kind::Tap => go(),
    }
}

/// Says (in the test's output) that this server does not follow the shared rule `what` of
/// its case today, and why; the caller then asserts the server's current behaviour instead.
pub fn known_divergence(server: &Server, what: &str, reason: &str) {
    println!(
        "known divergence: case {} on the {}: {what}: {reason}",
        server.case(),
        server.name()
    );
}

/// Says that the part `what` of its case does not apply to this server, and why.
pub fn skipped(server: &Server, what: &str, reason: &str) {
    println!(
        "skipped: case {} on the {}: {what}: {reason}",
        server.case(),
        server.name()
    );
}

/// Asserts that `ev` has exactly `fields` plus `"node": NODE`, and `ts` (recent) and the
/// names in `unchecked`, and that it was published at QoS 1 (the monitor's subscription QoS,
/// and every server's event QoS here).
pub fn assert_event(ev: &Ev, mut fields: Value, unchecked: &[&str]) {
    fields["node"] = json!(NODE);
    let mut names = vec!["ts"];
    names.extend_from_slice(unchecked);
    assert_fields(ev, fields, &names);
    assert_ts_recent(ev);
    assert_eq!(
        ev.qos,
        rumqttc::QoS::AtLeastOnce,
        "events are published at QoS 1: {}",
        ev.json
    );
}

// ---------------------------------------------------------------------------------------------
// A raw MQTT 3.1.1 client through the core's codec
// ---------------------------------------------------------------------------------------------

/// A packet the server sent, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// CONNACK: session present, return code.
    ConnAck {
        /// The session-present flag.
        session_present: bool,
        /// The return code (section 3.2.2.3).
        code: u8,
    },
    /// PUBLISH.
    Publish(Delivery),
    /// PUBACK with its packet id.
    PubAck(u16),
    /// PUBREC with its packet id.
    PubRec(u16),
    /// PUBREL with its packet id.
    PubRel(u16),
    /// PUBCOMP with its packet id.
    PubComp(u16),
    /// SUBACK: packet id and one return code per filter.
    SubAck {
        /// The SUBSCRIBE's packet id.
        pkid: u16,
        /// The return codes, as bytes.
        codes: Vec<u8>,
    },
    /// UNSUBACK with its packet id.
    UnsubAck(u16),
    /// PINGRESP.
    PingResp,
    /// A packet only a client sends (a server bug if it arrives).
    Other(String),
}

/// A PUBLISH the server sent, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The delivery QoS.
    pub qos: QoS,
    /// The packet id (QoS 1 and 2).
    pub pkid: Option<u16>,
    /// The RETAIN flag.
    pub retain: bool,
}

impl Received {
    fn own(packet: Packet<'_>) -> Received {
        match packet {
            Packet::ConnAck(c) => Received::ConnAck {
                session_present: c.session_present,
                code: c.code,
            },
            Packet::Publish(p) => Received::Publish(Delivery {
                topic: p.topic.to_owned(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                pkid: p.pkid,
                retain: p.retain,
            }),
            Packet::PubAck(id) => Received::PubAck(id.pkid),
            Packet::PubRec(id) => Received::PubRec(id.pkid),
            Packet::PubRel(id) => Received::PubRel(id.pkid),
            Packet::PubComp(id) => Received::PubComp(id.pkid),
            Packet::SubAck(s) => Received::SubAck {
                pkid: s.pkid,
                codes: s.codes.iter().map(|c| c.as_u8()).collect(),
            },
            Packet::UnsubAck(id) => Received::UnsubAck(id.pkid),
            Packet::PingResp => Received::PingResp,
            other => Received::Other(format!("{other:?}")),
        }
    }
}

/// What reading from the server gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole packet.
    Packet(Received),
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the time given.
    Silent,
}

/// A CONNECT with a clean session and no will, username or password.
pub fn connect(client_id: &str, keep_alive: u16) -> Connect<'_> {
    Connect {
        protocol_name: activity_core::codec::ProtocolName::Mqtt,
        properties: activity_core::codec::Properties::EMPTY,
        protocol_level: codec::PROTOCOL_LEVEL,
        client_id,
        clean_session: true,
        keep_alive,
        username: None,
        password: None,
        will: None,
    }
}

/// A CONNECT like [`connect`] with a last will.
pub fn connect_with_will<'a>(
    client_id: &'a str,
    keep_alive: u16,
    will: LastWill<'a>,
) -> Connect<'a> {
    Connect {
        will: Some(will),
        ..connect(client_id, keep_alive)
    }
}

/// A raw MQTT 3.1.1 client on a TCP socket: packets encoded and decoded with the core's codec.
pub struct Wire {
    /// The client id it connected with (for messages).
    pub id: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Opens a TCP connection (no MQTT yet).
    pub async fn open(addr: SocketAddr, id: &str) -> Wire {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{id}: no TCP connection to {addr} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{id}: TCP connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Wire {
            id: id.to_owned(),
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK's (session present, code).
    pub async fn connect(addr: SocketAddr, connect: Connect<'_>) -> (Wire, (bool, u8)) {
        let mut wire = Wire::open(addr, connect.client_id).await;
        wire.send(Packet::Connect(connect)).await;
        match wire.recv("CONNACK").await {
            Received::ConnAck {
                session_present,
                code,
            } => (wire, (session_present, code)),
            other => panic!("{}: expected CONNACK, got {other:?}", connect.client_id),
        }
    }

    /// Connects `client_id` (clean session, keep-alive 60) and asserts CONNACK 0.
    pub async fn connected(addr: SocketAddr, client_id: &str) -> Wire {
        let (wire, ack) = Wire::connect(addr, connect(client_id, 60)).await;
        assert_eq!(ack, (false, 0), "{client_id}: CONNACK accepted, no session");
        wire
    }

    /// The socket's local address: what the server reports as `peer`.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: Packet<'_>) {
        let len = packet.encoded_len().expect("test packets encode");
        let mut out = vec![0u8; len];
        packet.encode(&mut out).expect("sized by encoded_len");
        self.send_raw(&out).await;
    }

    /// Sends bytes as they are. A server that already closed may refuse them: only what it
    /// does next matters, so write errors are ignored.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = timeout(WAIT, self.stream.write_all(bytes)).await;
    }

    /// The next packet, the end of the connection, or silence after `within`.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        loop {
            match codec::decode(&self.buf, usize::MAX) {
                Ok(Some((packet, used))) => {
                    let owned = Received::own(packet);
                    self.buf.drain(..used);
                    return Next::Packet(owned);
                }
                Ok(None) => {}
                Err(e) => panic!(
                    "{}: the server sent bytes that are not MQTT 3.1.1 ({e:?}): {:02x?}",
                    self.id, self.buf
                ),
            }
            let mut chunk = [0u8; 4096];
            match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Next::Silent,
            }
        }
    }

    /// The next packet; panics naming `what` was awaited if the connection ends or stays
    /// silent for [`WAIT`].
    pub async fn recv(&mut self, what: &str) -> Received {
        match self.next(WAIT).await {
            Next::Packet(packet) => packet,
            Next::Closed => panic!("{}: connection closed while awaiting {what}", self.id),
            Next::Silent => panic!("{}: no {what} within {WAIT:?}", self.id),
        }
    }

    /// Asserts that the server closes the connection within [`WAIT`] without sending another
    /// packet.
    pub async fn expect_closed(&mut self, why: &str) {
        match self.next(WAIT).await {
            Next::Closed => {}
            Next::Packet(packet) => panic!("{}: expected a close ({why}), got {packet:?}", self.id),
            Next::Silent => panic!("{}: connection still open {WAIT:?} after {why}", self.id),
        }
    }

    /// Reads until the server closes the connection, at most [`WAIT`]; the packets it sent
    /// before. Panics if it stays open.
    pub async fn packets_until_closed(&mut self, why: &str) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Packet(packet) => packets.push(packet),
                Next::Closed => return packets,
                Next::Silent => panic!(
                    "{}: connection still open {WAIT:?} after {why} ({} packets before)",
                    self.id,
                    packets.len()
                ),
            }
        }
    }

    /// Asserts that the connection is still open: a PINGREQ gets its PINGRESP.
    pub async fn expect_open(&mut self, why: &str) {
        self.send(Packet::PingReq).await;
        match self.next(WAIT).await {
            Next::Packet(Received::PingResp) => {}
            other => panic!("{}: expected PINGRESP ({why}), got {other:?}", self.id),
        }
    }

    /// Subscribes and returns the SUBACK's return codes.
    pub async fn subscribe(&mut self, pkid: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(Packet::Subscribe(Subscribe {
            properties: activity_core::codec::Properties::EMPTY,
            pkid,
            filters: SubscribeFilters::from_slice(filters),
        }))
        .await;
        match self.recv("SUBACK").await {
            Received::SubAck { pkid: got, codes } => {
                assert_eq!(got, pkid, "{}: SUBACK packet id", self.id);
                codes
            }
            other => panic!("{}: expected SUBACK {pkid}, got {other:?}", self.id),
        }
    }

    /// Unsubscribes and waits for the UNSUBACK.
    pub async fn unsubscribe(&mut self, pkid: u16, filters: &[&str]) {
        self.send(Packet::Unsubscribe(Unsubscribe {
            properties: activity_core::codec::Properties::EMPTY,
            pkid,
            filters: UnsubscribeFilters::from_slice(filters),
        }))
        .await;
        let got = self.recv("UNSUBACK").await;
        assert_eq!(got, Received::UnsubAck(pkid), "{}: UNSUBACK", self.id);
    }

    /// Sends a PUBLISH (`pkid` is used at QoS 1 and 2) without waiting for its answer.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        pkid: u16,
        retain: bool,
        payload: &[u8],
    ) {
        self.send(Packet::Publish(Publish {
            properties: activity_core::codec::Properties::EMPTY,
            dup: false,
            qos,
            retain,
            topic,
            pkid: (qos != QoS::AtMostOnce).then_some(pkid),
            payload,
        }))
        .await;
    }

    /// Publishes and completes the flow: nothing at QoS 0, PUBACK at QoS 1, PUBREC, PUBREL,
    /// PUBCOMP at QoS 2.
    pub async fn publish_flow(
        &mut self,
        topic: &str,
        qos: QoS,
        pkid: u16,
        retain: bool,
        payload: &[u8],
    ) {
        self.publish(topic, qos, pkid, retain, payload).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let got = self.recv("PUBACK").await;
                assert_eq!(got, Received::PubAck(pkid), "{}: PUBACK", self.id);
            }
            QoS::ExactlyOnce => {
                let got = self.recv("PUBREC").await;
                assert_eq!(got, Received::PubRec(pkid), "{}: PUBREC", self.id);
                self.send(Packet::PubRel(activity_core::codec::Ack::new(pkid)))
                    .await;
                let got = self.recv("PUBCOMP").await;
                assert_eq!(got, Received::PubComp(pkid), "{}: PUBCOMP", self.id);
            }
        }
    }

    /// Waits for the next PUBLISH (any other packet fails) without acknowledging it.
    pub async fn delivery(&mut self) -> Delivery {
        match self.recv("a PUBLISH").await {
            Received::Publish(delivery) => delivery,
            other => panic!("{}: expected a PUBLISH, got {other:?}", self.id),
        }
    }

    /// Waits for the next PUBLISH and completes its flow as a subscriber: PUBACK at QoS 1;
    /// PUBREC, the server's PUBREL, PUBCOMP at QoS 2.
    pub async fn receive(&mut self) -> Delivery {
        let delivery = self.delivery().await;
        match (delivery.qos, delivery.pkid) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtLeastOnce, Some(pkid)) => {
                self.send(Packet::PubAck(activity_core::codec::Ack::new(pkid)))
                    .await
            }
            (QoS::ExactlyOnce, Some(pkid)) => {
                self.send(Packet::PubRec(activity_core::codec::Ack::new(pkid)))
                    .await;
                let got = self.recv("PUBREL").await;
                assert_eq!(got, Received::PubRel(pkid), "{}: PUBREL", self.id);
                self.send(Packet::PubComp(activity_core::codec::Ack::new(pkid)))
                    .await;
            }
            _ => panic!(
                "{}: packet id does not match the QoS: {delivery:?}",
                self.id
            ),
        }
        delivery
    }

    /// Sends DISCONNECT and waits until the server closes the connection.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(activity_core::codec::Disconnect::NORMAL))
            .await;
        self.expect_closed("DISCONNECT").await;
    }
}
