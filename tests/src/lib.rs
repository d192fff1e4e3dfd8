//! Shared harness for the end-to-end tests: a broker on a free port, rumqttc clients driven by
//! a background task, an event monitor subscribed to `SYSTEM/#`, raw MQTT 3.1.1 sockets, and
//! Debian's `mosquitto_pub` / `mosquitto_sub` as subprocesses.
//!
//! Every wait is bounded by [`WAIT`] (or an explicit timeout) and panics with a description of
//! what was awaited and what arrived instead, so a failing test says why.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_tokio::broker::Broker;
use adapter_tokio::config::Config;
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

/// How long any single expected thing may take to happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long to watch for something that must not happen, after a marker proved the pipeline
/// caught up.
pub const QUIET: Duration = Duration::from_millis(300);

/// A configuration for tests: a free port on loopback and a short shutdown grace.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a literal socket address"),
        shutdown_grace_ms: 200,
        ..Config::default()
    }
}

/// Starts a broker with `config` (its `listen` should be `127.0.0.1:0`).
pub async fn start_broker(config: Config) -> Broker {
    Broker::start(config).await.expect("the broker starts")
}

/// Starts a broker with [`test_config`].
pub async fn start_default_broker() -> Broker {
    start_broker(test_config()).await
}

/// Milliseconds since the Unix epoch, as the broker stamps `ts`.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

// ---------------------------------------------------------------------------------------------
// rumqttc clients
// ---------------------------------------------------------------------------------------------

/// What the client's background task saw.
#[derive(Debug)]
enum Seen {
    In(Packet),
    Out,
    Error(String),
}

/// rumqttc options for `client_id` on the broker at `addr`: keep-alive 30 s, clean session.
pub fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// A rumqttc client whose event loop runs in a task that stops at the first error (so a
/// dropped client never reconnects behind the test's back).
pub struct Client {
    /// The client id it connected with.
    pub id: String,
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    backlog: VecDeque<Packet>,
    task: JoinHandle<()>,
    closed: Option<String>,
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Seen>) {
    loop {
        let seen = match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => Seen::In(packet),
            Ok(Event::Outgoing(_)) => Seen::Out,
            Err(e) => {
                let _ = tx.send(Seen::Error(e.to_string()));
                return;
            }
        };
        if tx.send(seen).is_err() {
            return;
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The broker answered with a refusing CONNACK; rumqttc's return code.
    Refused(rumqttc::ConnectReturnCode),
    /// Anything else (I/O, timeout).
    Other(String),
}

impl Client {
    /// Connects `client_id` with [`options`] and waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        Client::connect_with(options(addr, client_id))
            .await
            .map(|(client, _)| client)
            .unwrap_or_else(|e| panic!("{client_id} could not connect: {e:?}"))
    }

    /// Connects with `options` and waits for the CONNACK; `Err` when refused or failed.
    pub async fn connect_with(options: MqttOptions) -> Result<(Client, ConnAck), ConnectFailure> {
        let id = options.client_id();
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        // The first poll connects; a refusal comes back as its error with the return code.
        let first = timeout(WAIT, eventloop.poll()).await;
        let connack = match first {
            Err(_) => return Err(ConnectFailure::Other("no CONNACK within 5 s".into())),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                return Err(ConnectFailure::Refused(code));
            }
            Ok(Err(e)) => return Err(ConnectFailure::Other(e.to_string())),
            Ok(Ok(Event::Incoming(Packet::ConnAck(connack)))) => connack,
            Ok(Ok(other)) => return Err(ConnectFailure::Other(format!("first event {other:?}"))),
        };
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        Ok((
            Client {
                id,
                client,
                seen,
                backlog: VecDeque::new(),
                task,
                closed: None,
            },
            connack,
        ))
    }

    /// The rumqttc handle, for requests the helpers do not cover.
    pub fn handle(&self) -> &AsyncClient {
        &self.client
    }

    /// Waits for the next incoming packet matching `want`; other packets stay queued.
    pub async fn wait_packet(&mut self, what: &str, want: impl Fn(&Packet) -> bool) -> Packet {
        self.try_wait_packet(WAIT, &want)
            .await
            .unwrap_or_else(|| panic!("{}: no {what} within {WAIT:?}", self.id))
    }

    /// Like [`Client::wait_packet`] with a timeout; `None` when nothing matched in time.
    pub async fn try_wait_packet(
        &mut self,
        within: Duration,
        want: &impl Fn(&Packet) -> bool,
    ) -> Option<Packet> {
        if let Some(i) = self.backlog.iter().position(want) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let seen = match timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => seen,
                Ok(None) => {
                    // The task ended; nothing more will come. Wait out the time like a silent
                    // socket would, so callers see the same result either way.
                    tokio::time::sleep_until(deadline).await;
                    return None;
                }
                Err(_) => return None,
            };
            match seen {
                Seen::In(packet) if want(&packet) => return Some(packet),
                Seen::In(packet) => self.backlog.push_back(packet),
                Seen::Out => {}
                Seen::Error(e) => self.closed = Some(e),
            }
        }
    }

    /// Waits until the connection ends (the event loop reports an error); the error text.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<String> {
        if let Some(e) = &self.closed {
            return Some(e.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Error(e))) => {
                    self.closed = Some(e.clone());
                    return Some(e);
                }
                Ok(Some(Seen::In(packet))) => self.backlog.push_back(packet),
                Ok(Some(Seen::Out)) => {}
                Ok(None) => return Some("event loop ended".into()),
                Err(_) => return None,
            }
        }
    }

    /// Whether the connection has ended (without waiting).
    pub fn is_closed(&mut self) -> bool {
        while let Ok(seen) = self.seen.try_recv() {
            match seen {
                Seen::In(packet) => self.backlog.push_back(packet),
                Seen::Out => {}
                Seen::Error(e) => self.closed = Some(e),
            }
        }
        self.closed.is_some() || (self.task.is_finished() && self.seen.is_empty())
    }

    /// Subscribes to the filters and returns the SUBACK's return codes.
    pub async fn subscribe_many(&mut self, filters: &[(&str, QoS)]) -> Vec<SubscribeReasonCode> {
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|(f, q)| SubscribeFilter::new((*f).to_owned(), *q))
            .collect();
        self.client
            .subscribe_many(filters)
            .await
            .expect("subscribe request queued");
        match self
            .wait_packet("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(ack) => ack.return_codes,
            _ => unreachable!("wait_packet matched a SUBACK"),
        }
    }

    /// Subscribes to one filter and returns its SUBACK return code.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        let codes = self.subscribe_many(&[(filter, qos)]).await;
        assert_eq!(codes.len(), 1, "one code per filter: {codes:?}");
        codes[0]
    }

    /// Unsubscribes from `filter` and waits for the UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client
            .unsubscribe(filter)
            .await
            .expect("unsubscribe request queued");
        self.wait_packet("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_)))
            .await;
    }

    /// Publishes and waits for the flow to complete: PUBACK at QoS 1, PUBCOMP at QoS 2.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish request queued");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_packet("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.wait_packet("PUBREC", |p| matches!(p, Packet::PubRec(_)))
                    .await;
                self.wait_packet("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
                    .await;
            }
        }
    }

    /// Waits for the next incoming PUBLISH.
    pub async fn next_publish(&mut self) -> Publish {
        match self
            .wait_packet("PUBLISH", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(publish) => publish,
            _ => unreachable!("wait_packet matched a PUBLISH"),
        }
    }

    /// The next incoming PUBLISH within `within`, if any.
    pub async fn try_next_publish(&mut self, within: Duration) -> Option<Publish> {
        match self
            .try_wait_packet(within, &|p| matches!(p, Packet::Publish(_)))
            .await
        {
            Some(Packet::Publish(publish)) => Some(publish),
            _ => None,
        }
    }

    /// Sends DISCONNECT and waits for the connection to end.
    pub async fn disconnect(mut self) {
        self.client
            .disconnect()
            .await
            .expect("disconnect request queued");
        if self.wait_closed(WAIT).await.is_none() {
            panic!("{}: connection still open after DISCONNECT", self.id);
        }
    }

    /// Drops the connection without DISCONNECT (the socket closes when the task ends).
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The event monitor
// ---------------------------------------------------------------------------------------------

/// One activity event as received on `SYSTEM/#`.
#[derive(Clone, Debug)]
pub struct Ev {
    /// Its position in the order of arrival, from 0.
    pub index: usize,
    /// The topic it arrived on.
    pub topic: String,
    /// The JSON document.
    pub json: Value,
    /// The QoS it was delivered with.
    pub qos: QoS,
}

impl Ev {
    /// The kind, from the topic: `connected`, `disconnected`, `subscribed`, `unsubscribed`,
    /// `message` or `msgack`.
    pub fn kind(&self) -> &str {
        match self.topic.as_str() {
            "SYSTEM/presence/connected" => "connected",
            "SYSTEM/presence/disconnected" => "disconnected",
            "SYSTEM/subscription/subscribed" => "subscribed",
            "SYSTEM/subscription/unsubscribed" => "unsubscribed",
            "SYSTEM/message" => "message",
            "SYSTEM/msgack" => "msgack",
            _ => "other",
        }
    }

    /// The client the event is about: `client_id`, else `pub_client_id` (message), else
    /// `ack_client_id` (msgack).
    pub fn subject(&self) -> Option<&str> {
        let field = match self.kind() {
            "message" => "pub_client_id",
            "msgack" => "ack_client_id",
            _ => "client_id",
        };
        self.json.get(field).and_then(Value::as_str)
    }

    /// The `ts` field.
    pub fn ts(&self) -> u64 {
        self.json["ts"]
            .as_u64()
            .unwrap_or_else(|| panic!("ts is not an unsigned number: {}", self.json))
    }

    /// Whether this is a `kind` event about `client`.
    pub fn is(&self, kind: &str, client: &str) -> bool {
        self.kind() == kind && self.subject() == Some(client)
    }
}

/// A client subscribed to `SYSTEM/#` that records every event in order of arrival.
pub struct Monitor {
    client: Client,
    history: Vec<Ev>,
    consumed: Vec<bool>,
}

impl Monitor {
    /// Connects as `monitor` and subscribes to `SYSTEM/#` at QoS 1.
    pub async fn start(addr: SocketAddr) -> Monitor {
        Monitor::start_as(options(addr, "monitor")).await
    }

    /// Connects with `options` and subscribes to `SYSTEM/#` at QoS 1.
    pub async fn start_as(options: MqttOptions) -> Monitor {
        let (mut client, _) = Client::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("monitor could not connect: {e:?}"));
        let code = client.subscribe("SYSTEM/#", QoS::AtLeastOnce).await;
        assert_eq!(
            code,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            "monitor may subscribe to SYSTEM/#"
        );
        Monitor {
            client,
            history: Vec::new(),
            consumed: Vec::new(),
        }
    }

    fn record(&mut self, publish: Publish) {
        let json: Value = serde_json::from_slice(&publish.payload).unwrap_or_else(|e| {
            panic!(
                "event on {} is not JSON ({e}): {:?}",
                publish.topic,
                String::from_utf8_lossy(&publish.payload)
            )
        });
        self.history.push(Ev {
            index: self.history.len(),
            topic: publish.topic,
            json,
            qos: publish.qos,
        });
        self.consumed.push(false);
    }

    fn find(&self, want: &impl Fn(&Ev) -> bool) -> Option<usize> {
        (0..self.history.len()).find(|&i| !self.consumed[i] && want(&self.history[i]))
    }

    /// Waits for the first not yet returned event matching `want`, marks it returned and
    /// returns it. Panics after [`WAIT`] with `what` and every event seen.
    pub async fn wait_for(&mut self, what: &str, want: impl Fn(&Ev) -> bool) -> Ev {
        match self.try_wait_for(WAIT, &want).await {
            Some(ev) => ev,
            None => panic!(
                "no event {what} within {WAIT:?}; events seen:\n{}",
                self.describe()
            ),
        }
    }

    /// Like [`Monitor::wait_for`] with a timeout; `None` when nothing matched in time.
    pub async fn try_wait_for(
        &mut self,
        within: Duration,
        want: &impl Fn(&Ev) -> bool,
    ) -> Option<Ev> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.find(want) {
                self.consumed[i] = true;
                return Some(self.history[i].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.client.try_next_publish(left).await {
                Some(publish) => self.record(publish),
                None => return None,
            }
        }
    }

    /// Waits for the next `kind` event about `client` (see [`Ev::is`]).
    pub async fn next_event(&mut self, kind: &str, client: &str) -> Ev {
        self.wait_for(&format!("{kind} of {client}"), |e| e.is(kind, client))
            .await
    }

    /// Records events for `window` and panics if one matching `unwanted` is (or was) seen and
    /// not yet returned.
    pub async fn assert_none(
        &mut self,
        what: &str,
        window: Duration,
        unwanted: impl Fn(&Ev) -> bool,
    ) {
        if let Some(ev) = self.try_wait_for(window, &unwanted).await {
            panic!(
                "unexpected event {what}: {} {}; events seen:\n{}",
                ev.topic,
                ev.json,
                self.describe()
            );
        }
    }

    /// Every event received so far, in order.
    pub fn history(&self) -> &[Ev] {
        &self.history
    }

    /// Waits until the monitor's own connection ends; the events received before the end are
    /// recorded. `None` if it is still open after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .client
                .try_next_publish(left.min(Duration::from_millis(50)))
                .await
            {
                Some(publish) => self.record(publish),
                None if self.client.is_closed() => {
                    return self.client.wait_closed(Duration::ZERO).await;
                }
                None if left.is_zero() => return None,
                None => {}
            }
        }
    }

    /// The event history, one line each, for failure messages.
    pub fn describe(&self) -> String {
        self.history
            .iter()
            .map(|e| format!("  #{} {} {}", e.index, e.topic, e.json))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------------------------
// JSON assertions
// ---------------------------------------------------------------------------------------------

/// Asserts that `ev` has exactly the fields of `expected` (an object) plus the names in
/// `unchecked`, and that every field of `expected` has exactly that value (type included:
/// `1` is not `"1"`).
pub fn assert_fields(ev: &Ev, expected: Value, unchecked: &[&str]) {
    let expected = expected.as_object().expect("expected fields are an object");
    let actual = ev
        .json
        .as_object()
        .unwrap_or_else(|| panic!("event is not a JSON object: {}", ev.json));
    for (key, want) in expected {
        match actual.get(key) {
            Some(got) => assert_eq!(got, want, "field {key:?} of {} event {}", ev.topic, ev.json),
            None => panic!("field {key:?} missing from {} event {}", ev.topic, ev.json),
        }
    }
    for key in unchecked {
        assert!(
            actual.contains_key(*key),
            "field {key:?} missing from {} event {}",
            ev.topic,
            ev.json
        );
    }
    for key in actual.keys() {
        assert!(
            expected.contains_key(key) || unchecked.contains(&key.as_str()),
            "unexpected field {key:?} in {} event {}",
            ev.topic,
            ev.json
        );
    }
}

/// Asserts that `ev`'s `ts` is a number of milliseconds within a minute of now.
pub fn assert_ts_recent(ev: &Ev) {
    let ts = ev.ts();
    let now = now_ms();
    assert!(
        ts <= now + 1_000 && ts + 60_000 >= now,
        "ts {ts} is not close to now ({now}) in {}",
        ev.json
    );
}

/// Asserts that `peer` is `127.0.0.1:PORT` with a non-zero port.
pub fn assert_loopback_peer(ev: &Ev) {
    let peer = ev.json["peer"]
        .as_str()
        .unwrap_or_else(|| panic!("peer is not a string in {}", ev.json));
    let addr: SocketAddr = peer
        .parse()
        .unwrap_or_else(|e| panic!("peer {peer:?} is not an address ({e})"));
    assert!(addr.ip().is_loopback(), "peer {peer} is not loopback");
    assert_ne!(addr.port(), 0, "peer {peer} has port 0");
}

// ---------------------------------------------------------------------------------------------
// Raw MQTT 3.1.1 over TCP
// ---------------------------------------------------------------------------------------------

/// Appends an MQTT UTF-8 string (2-byte length, MQTT 3.1.1 section 1.5.3).
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("test strings are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends the fixed header and a remaining length below 16,384 (section 2.2.3).
fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let len = body.len();
    assert!(len < 16_384, "test packets are small");
    if len < 128 {
        out.push(u8::try_from(len).expect("checked below 128"));
    } else {
        out.push(u8::try_from(len % 128).expect("below 128") | 0x80);
        out.push(u8::try_from(len / 128).expect("checked below 16,384"));
    }
    out.extend_from_slice(body);
    out
}

/// A CONNECT packet (section 3.1) with the protocol name `MQTT`, `level`, clean session and
/// no will, username or password. Level 5 adds an empty MQTT 5 properties section.
pub fn connect_packet(client_id: &str, keep_alive: u16, level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.push(level);
    body.push(0x02); // connect flags: clean session
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0x00); // MQTT 5 properties: none
    }
    push_str(&mut body, client_id.as_bytes());
    frame(0x10, &body)
}

/// A raw TCP connection to the broker.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
}

impl RawClient {
    /// Opens a TCP connection to `addr`.
    pub async fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        RawClient { stream }
    }

    /// Opens a connection, sends `connect` and returns the 4 CONNACK bytes.
    pub async fn connect(addr: SocketAddr, connect: &[u8]) -> (RawClient, [u8; 4]) {
        let mut raw = RawClient::open(addr).await;
        raw.stream.write_all(connect).await.expect("write CONNECT");
        let mut connack = [0u8; 4];
        timeout(WAIT, raw.stream.read_exact(&mut connack))
            .await
            .expect("CONNACK within 5 s")
            .expect("CONNACK bytes");
        (raw, connack)
    }

    /// The local address of the socket (what the broker reports as `peer`).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Waits until the server closes the connection (EOF or reset), discarding any bytes;
    /// `true` if it closed within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub
// ---------------------------------------------------------------------------------------------

fn mosquitto(program: &str, addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `mosquitto_pub -h HOST -p PORT ARGS...` and returns its output; panics if it does not
/// exit within [`WAIT`].
pub async fn mosquitto_pub(addr: SocketAddr, args: &[&str]) -> Output {
    let child = mosquitto("mosquitto_pub", addr, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (installed by scripts/test.sh)");
    timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("mosquitto_pub {args:?} did not exit within {WAIT:?}"))
        .expect("mosquitto_pub output")
}

/// A running `mosquitto_sub`, read line by line.
pub struct MosquittoSub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl MosquittoSub {
    /// Starts `mosquitto_sub -h HOST -p PORT ARGS...`.
    pub fn spawn(addr: SocketAddr, args: &[&str]) -> MosquittoSub {
        let mut child = mosquitto("mosquitto_sub", addr, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs (installed by scripts/test.sh)");
        let stdout = child.stdout.take().expect("stdout is piped");
        MosquittoSub {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line of output; panics after [`WAIT`] or at end of output.
    pub async fn next_line(&mut self) -> String {
        match timeout(WAIT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("mosquitto_sub ended its output"),
            Ok(Err(e)) => panic!("mosquitto_sub output: {e}"),
            Err(_) => panic!("no line from mosquitto_sub within {WAIT:?}"),
        }
    }

    /// Waits for the process to exit; its exit code and stderr.
    pub async fn wait_exit(mut self) -> (Option<i32>, String) {
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("mosquitto_sub exits within 5 s")
            .expect("mosquitto_sub status");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        (status.code(), stderr)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL mosquitto_sub");
    }
}

pub mod certs;
pub mod kafka;
pub mod tap;
