//! Shared harness of the hostile-client tests (`tests/tests/hostile_*.rs` and `storm.rs`):
//! raw MQTT 3.1.1 packets built by hand so that they can be wrong on purpose, bounded socket
//! reads, the process's resident memory, and the [`Scene`] every attack plays in: a broker, its
//! event monitor and a bystander that must keep working after each attack.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adapter_tokio::broker::Broker;
use adapter_tokio::config::Config;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{RwLock, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use crate::{
    Client, Monitor, RawClient, WAIT, assert_fields, connect_packet, start_broker, test_config,
};

/// Tests that measure the process's memory take this lock exclusively; every other test of
/// the same file takes it shared, so they never run beside each other.
pub static HEAVY: RwLock<()> = RwLock::const_new(());

/// The most resident memory a loop of attacks may add to the process.
pub const MEMORY_BOUND: u64 = 64 * 1024 * 1024;

/// The `max_packet_size` of the brokers under attack.
pub const MAX_PACKET: usize = 1024;

/// PINGREQ (section 3.12).
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// PINGRESP (section 3.13).
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];
/// DISCONNECT (section 3.14).
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
/// CONNACK, session present 0, return code 0: accepted (section 3.2).
pub const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

// ---------------------------------------------------------------------------------------------
// Raw packets (MQTT 3.1.1)
// ---------------------------------------------------------------------------------------------

/// A fixed header with `first_byte` and the remaining length of `body` (section 2.2.3), then
/// `body`.
pub fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 268_435_456, "remaining length fits in 4 bytes");
    crate::raw5::packet5(first_byte, body)
}

/// Appends a length-prefixed string (section 1.5.3) made of any bytes.
pub fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("test strings are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// A PUBLISH (section 3.3) with any topic bytes; `pkid` is written for QoS 1 and 2.
pub fn publish_packet(topic: &[u8], qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// The variable header and payload of a SUBSCRIBE with one filter (section 3.8).
pub fn subscribe_body(pkid: u16, filter: &[u8], qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    push_str(&mut body, filter);
    body.push(qos);
    body
}

/// A well-formed SUBSCRIBE with one filter.
pub fn subscribe_packet(pkid: u16, filter: &[u8], qos: u8) -> Vec<u8> {
    packet(0x82, &subscribe_body(pkid, filter, qos))
}

/// A CONNECT with clean session and keep-alive 60 whose client id is any bytes.
pub fn connect_with_raw_id(client_id: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.extend_from_slice(&[0x04, 0x02, 0x00, 0x3C]);
    push_str(&mut body, client_id);
    packet(0x10, &body)
}

/// A two-byte-id acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBCOMP 0x70, PUBREL 0x62).
pub fn ack_packet(first_byte: u8, pkid: u16) -> Vec<u8> {
    packet(first_byte, &pkid.to_be_bytes())
}

/// Fixed headers that can never become valid (section 2.2), named.
pub fn malformed_headers() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // Packet type 0 is reserved (section 2.2.1).
        ("type-0", vec![0x00, 0x00]),
        // Packet type 15 is reserved.
        ("type-15", vec![0xF0, 0x00]),
        // SUBSCRIBE must have flags 0b0010 (section 3.8.1); 0x80 has 0b0000.
        (
            "subscribe-flags",
            packet(0x80, &subscribe_body(1, b"a/b", 0)),
        ),
        // PUBREL must have flags 0b0010 (section 3.6.1); 0x60 has 0b0000.
        ("pubrel-flags", vec![0x60, 0x02, 0x00, 0x01]),
        // UNSUBSCRIBE must have flags 0b0010 too (section 3.10.1).
        ("unsubscribe-flags", {
            let mut body = 7u16.to_be_bytes().to_vec();
            push_str(&mut body, b"a/b");
            packet(0xA0, &body)
        }),
        // A remaining length continued past 4 bytes (section 2.2.3).
        ("length-5-bytes", vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        // A QoS 3 PUBLISH (section 3.3.1.2).
        ("publish-qos-3", {
            let mut p = publish_packet(b"a/b", 1, 1, b"x");
            p[0] = 0x36;
            p
        }),
        // A PUBLISH whose remaining length ends inside its topic.
        ("publish-truncated", vec![0x30, 0x03, 0x00, 0x05, b'a']),
        // Packet id 0 (section 2.3.1).
        ("publish-pkid-0", publish_packet(b"a/b", 1, 0, b"x")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Bounded socket reads
// ---------------------------------------------------------------------------------------------

/// Reads until the peer closes the socket (EOF or reset); what it sent, or `None` if still
/// open after `within`.
pub async fn read_to_close(
    stream: &mut (impl AsyncRead + Unpin),
    within: Duration,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads exactly `n` bytes within [`WAIT`].
pub async fn read_n(stream: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no {n} bytes within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Removes the whole packets at the front of `buf` (bytes read from a socket, maybe ending in
/// part of a packet), calling `each` with the first byte of each; what is left is the start of
/// a packet not read whole yet.
pub fn take_packets(buf: &mut Vec<u8>, mut each: impl FnMut(u8)) {
    let mut at = 0;
    while let Some(&first) = buf.get(at) {
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        let complete = loop {
            let Some(&byte) = buf.get(i) else { break false };
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            i += 1;
            if byte & 0x80 == 0 {
                break true;
            }
        };
        if !complete || buf.len() < i + len {
            break;
        }
        each(first);
        at = i + len;
    }
    buf.drain(..at);
}

/// Removes the whole packets at the front of `buf` ([`take_packets`]); returns how many of
/// them were PUBLISHes.
pub fn count_publishes(buf: &mut Vec<u8>) -> u64 {
    let mut count = 0;
    take_packets(buf, |first| {
        if first >> 4 == 3 {
            count += 1;
        }
    });
    count
}

/// The messages [`flood_a_slow_subscriber`] publishes (64 topics x 512 rounds, 1 KiB each).
pub const FLOOD_MESSAGES: u64 = 64 * 512;

/// A subscriber of `flood/#` at QoS 0 with a 4 KiB receive buffer that stops reading after its
/// SUBACK and one first delivery (the front learns its position in the router's log only from
/// a delivery), then [`FLOOD_MESSAGES`] messages of 1 KiB from a raw publisher: a router log of
/// a few KiB wraps past the subscriber. Returns the subscriber's socket, unread since, and the
/// publisher's, kept open so that the flood does not end with a disconnect.
pub async fn flood_a_slow_subscriber(addr: SocketAddr) -> (TcpStream, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut slow = socket.connect(addr).await.expect("connect");
    slow.write_all(&connect_packet("slow-reader", 120, 4))
        .await
        .expect("CONNECT");
    assert_eq!(
        read_n(&mut slow, 4).await,
        [0x20, 2, 0, 0],
        "CONNACK accepted"
    );
    slow.write_all(&subscribe_packet(1, b"flood/#", 0))
        .await
        .expect("SUBSCRIBE");
    assert_eq!(
        read_n(&mut slow, 5).await,
        [0x90, 3, 0, 1, 0],
        "SUBACK QoS 0"
    );

    let mut publisher = TcpStream::connect(addr).await.expect("connect");
    publisher
        .write_all(&connect_packet("flooder", 120, 4))
        .await
        .expect("CONNECT");
    assert_eq!(read_n(&mut publisher, 4).await, [0x20, 2, 0, 0]);
    publisher
        .write_all(&publish_packet(b"flood/first", 0, 0, b"1"))
        .await
        .expect("the first message");
    let first = read_n(&mut slow, 2).await;
    assert_eq!(first[0] >> 4, 3, "a PUBLISH");
    read_n(&mut slow, usize::from(first[1])).await;
    let payload = vec![b'x'; 1024];
    let batch: Vec<u8> = (0..64)
        .flat_map(|i| publish_packet(format!("flood/{i}").as_bytes(), 0, 0, &payload))
        .collect();
    for _ in 0..512 {
        publisher.write_all(&batch).await.expect("flood");
    }
    (slow, publisher)
}

/// Reads `slow` (from [`flood_a_slow_subscriber`]) until every flood message was delivered to
/// it or counted as skipped (`skipped()`), within 30 s; returns how many were delivered.
/// `context()` is added to a failure's message.
pub async fn read_until_accounted(
    slow: &mut TcpStream,
    skipped: impl Fn() -> u64,
    context: impl Fn() -> String,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut delivered: u64 = 0;
    while delivered + skipped() < FLOOD_MESSAGES {
        assert!(
            Instant::now() < deadline,
            "{delivered} delivered and {} counted as skipped of {FLOOD_MESSAGES} within 30 s{}",
            skipped(),
            context()
        );
        match timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the broker closed the slow subscriber{}", context()),
            Ok(Ok(n)) => {
                pending.extend_from_slice(&buf[..n]);
                delivered += count_publishes(&mut pending);
            }
            Err(_) => {}
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
    delivered
}

/// Runs `task(i)` for every `i` in `0..count`, at most `at_once` at a time, and returns the
/// results in the order of `i`. A panicking task panics the caller.
pub async fn run_bounded<T, F, Fut>(count: usize, at_once: usize, mut task: F) -> Vec<T>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(at_once.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let gate = gate.clone();
        let work = task(i);
        tasks.spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (i, work.await)
        });
    }
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        results[i] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.expect("every task reported"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// The resident set size of this process (`VmRSS` in /proc/self/status), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS is a number of kB");
    kib * 1024
}

/// Bytes as MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Asserts that the memory grew by less than [`MEMORY_BOUND`] since `before`.
pub fn assert_memory_bounded(what: &str, before: u64) {
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    println!(
        "{what}: RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB)",
        mib(before),
        mib(after),
        mib(growth)
    );
    assert!(
        growth < MEMORY_BOUND,
        "{what}: RSS grew by {:.1} MiB (bound {:.0} MiB)",
        mib(growth),
        mib(MEMORY_BOUND)
    );
}

// ---------------------------------------------------------------------------------------------
// The scene: a broker, its event monitor and a bystander
// ---------------------------------------------------------------------------------------------

/// The configuration of the brokers under attack: small packets, a short connect timeout.
pub fn hostile_config() -> Config {
    let mut config = test_config();
    config.max_packet_size = MAX_PACKET;
    config.connect_timeout_secs = 0.5;
    config
}

/// Waits until the broker counts `n` connected clients.
pub async fn wait_connected_clients(broker: &Broker, n: usize) {
    let deadline = Instant::now() + WAIT;
    while broker.connected_clients() != n {
        assert!(
            Instant::now() < deadline,
            "{} clients connected, expected {n}",
            broker.connected_clients()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker under attack, a monitor on `SYSTEM/#`, and a bystander connected before any
/// attack that must keep working after each one.
pub struct Scene {
    /// The broker under attack.
    pub broker: Broker,
    /// Its listener.
    pub addr: SocketAddr,
    /// The `SYSTEM/#` subscriber.
    pub monitor: Monitor,
    /// A client subscribed to `health/#`, connected before any attack.
    pub bystander: Client,
    /// Client ids that legitimately connected, for "no presence event for the attacker".
    pub known: HashSet<String>,
    checks: u32,
}

impl Scene {
    /// Starts a broker with `config`, its monitor and the bystander, and checks that the
    /// bystander works.
    pub async fn start(config: Config) -> Scene {
        let broker = start_broker(config).await;
        let addr = broker.local_addr();
        let monitor = Monitor::start(addr).await;
        let mut bystander = Client::connect(addr, "bystander").await;
        assert_eq!(
            bystander.subscribe("health/#", QoS::AtLeastOnce).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        let mut scene = Scene {
            broker,
            addr,
            monitor,
            bystander,
            known: ["monitor", "bystander"].map(str::to_owned).into(),
            checks: 0,
        };
        scene.monitor.next_event("connected", "bystander").await;
        scene.assert_healthy("at start").await;
        scene
    }

    /// The bystander publishes at QoS 1 and receives its own message.
    pub async fn assert_healthy(&mut self, after: &str) {
        self.checks += 1;
        let topic = format!("health/{}", self.checks);
        let payload = format!("alive {after}");
        timeout(
            WAIT,
            self.bystander
                .publish(&topic, QoS::AtLeastOnce, false, payload.as_bytes()),
        )
        .await
        .unwrap_or_else(|_| panic!("bystander cannot publish {after}"));
        let got = self.bystander.next_publish().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            (topic.as_str(), payload.as_bytes()),
            "bystander receives its message {after}"
        );
        assert!(!self.bystander.is_closed(), "bystander still connected");
    }

    /// Connects `client_id` over a raw socket with `keep_alive` and waits for its `connected`
    /// event; the socket and the event.
    pub async fn connect_raw_with(
        &mut self,
        client_id: &str,
        keep_alive: u16,
    ) -> (RawClient, Value) {
        let connect = connect_packet(client_id, keep_alive, 4);
        let (raw, connack) = RawClient::connect(self.addr, &connect).await;
        assert_eq!(connack, CONNACK_ACCEPTED, "{client_id} is accepted");
        self.known.insert(client_id.to_owned());
        let connected = self.monitor.next_event("connected", client_id).await;
        (raw, connected.json)
    }

    /// [`Scene::connect_raw_with`] keep-alive 60.
    pub async fn connect_raw(&mut self, client_id: &str) -> (RawClient, Value) {
        self.connect_raw_with(client_id, 60).await
    }

    /// A connected client sends `bytes`: the broker closes the socket and reports `reason`;
    /// the bystander keeps working.
    pub async fn connected_attack(&mut self, client_id: &str, bytes: &[u8], reason: &str) {
        let (mut raw, connected) = self.connect_raw(client_id).await;
        // The broker may close while we are still writing: only the close matters.
        let _ = raw.stream.write_all(bytes).await;
        assert!(
            raw.closed_within(WAIT).await,
            "{client_id}: socket still open {WAIT:?} after {:02x?}",
            &bytes[..bytes.len().min(16)]
        );
        let ev = self.monitor.next_event("disconnected", client_id).await;
        assert_fields(
            &ev,
            crate::with_reason_code(
                json!({
                    "client_id": client_id,
                    "reason": reason,
                    "connected_at": connected["ts"],
                }),
                &ev,
            ),
            &["ts"],
        );
        self.assert_healthy(&format!("{client_id}'s attack")).await;
    }

    /// Runs [`Scene::connected_attack`] for every case, each client id `prefix` + its name.
    pub async fn connected_attacks(
        &mut self,
        prefix: &str,
        cases: &[(&str, Vec<u8>)],
        reason: &str,
    ) {
        for (name, bytes) in cases {
            self.connected_attack(&format!("{prefix}{name}"), bytes, reason)
                .await;
        }
    }

    /// A client that never connected sends `bytes`: the broker closes the socket, having sent
    /// nothing or a refusing CONNACK, and reports no presence event.
    pub async fn unconnected_attack(&mut self, what: &str, bytes: &[u8]) {
        let mut stream = TcpStream::connect(self.addr).await.expect("TCP connect");
        let _ = stream.write_all(bytes).await;
        let answer = read_to_close(&mut stream, WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: socket still open after {WAIT:?}"));
        assert!(
            answer.is_empty()
                || (answer.len() == 4 && answer[..2] == [0x20, 0x02] && answer[3] != 0x00),
            "{what}: expected a silent close or a refusing CONNACK, got {answer:02x?}"
        );
        self.assert_no_unknown_presence(what).await;
        self.assert_healthy(what).await;
    }

    /// Connects a marker client and, once its `connected` event arrived (so every event
    /// queued before it has too), asserts that no presence event names an unknown client
    /// (but `refused`, which reports a CONNECT answered with a refusing CONNACK).
    pub async fn assert_no_unknown_presence(&mut self, what: &str) {
        let marker = format!("marker-{}", self.known.len());
        let (raw, _) = self.connect_raw(&marker).await;
        drop(raw);
        let strangers: Vec<String> = self
            .monitor
            .history()
            .iter()
            .filter(|e| e.topic.starts_with("SYSTEM/presence/") && e.kind() != "refused")
            .filter(|e| !e.subject().is_some_and(|id| self.known.contains(id)))
            .map(|e| format!("{} {}", e.topic, e.json))
            .collect();
        assert!(
            strangers.is_empty(),
            "{what}: presence events for a client that never connected:\n{}",
            strangers.join("\n")
        );
    }
}
