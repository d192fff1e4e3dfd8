//! End-to-end: hostile clients against a real `activity-broker` on real sockets (issue 6).
//!
//! Every attack must end in a clean close with the right `disconnected` reason when the
//! attacker had connected, or in a silent close (or a refusing CONNACK) and no presence event
//! when it had not. Meanwhile a rumqttc client connected before the attack keeps publishing
//! and receiving, and the process's resident memory (the broker runs in the test process)
//! stays bounded over hundreds of attacks. The last tests open thousands of connections at
//! once and close them in a storm: exactly one `connected` and one `disconnected` per client.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adapter_tokio::broker::Broker;
use adapter_tokio::config::Config;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use tests::{
    Client, Monitor, QUIET, RawClient, WAIT, assert_fields, connect_packet, start_broker,
    test_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{RwLock, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

/// Tests that measure the process's memory or need most of its file descriptors take this
/// lock exclusively; every other test takes it shared, so they never run beside each other.
static HEAVY: RwLock<()> = RwLock::const_new(());

/// The most resident memory a loop of attacks may add to the process.
const MEMORY_BOUND: u64 = 64 * 1024 * 1024;

/// The `max_packet_size` of the brokers under attack.
const MAX_PACKET: usize = 1024;

const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];
const DISCONNECT: [u8; 2] = [0xE0, 0x00];
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

// ---------------------------------------------------------------------------------------------
// Raw packets (MQTT 3.1.1), built by hand so that they can be wrong on purpose
// ---------------------------------------------------------------------------------------------

/// A fixed header with `first_byte` and the remaining length of `body` (section 2.2.3), then
/// `body`.
fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mut len = body.len();
    assert!(len < 268_435_456, "remaining length fits in 4 bytes");
    loop {
        let digit = u8::try_from(len % 128).expect("below 128");
        len /= 128;
        out.push(if len > 0 { digit | 0x80 } else { digit });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Appends a length-prefixed string (section 1.5.3) made of any bytes.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("test strings are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// A PUBLISH (section 3.3) with any topic bytes; `pkid` is written for QoS 1 and 2.
fn publish_packet(topic: &[u8], qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// The variable header and payload of a SUBSCRIBE with one filter (section 3.8).
fn subscribe_body(pkid: u16, filter: &[u8], qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    push_str(&mut body, filter);
    body.push(qos);
    body
}

/// A well-formed SUBSCRIBE with one filter.
fn subscribe_packet(pkid: u16, filter: &[u8], qos: u8) -> Vec<u8> {
    packet(0x82, &subscribe_body(pkid, filter, qos))
}

/// A CONNECT with clean session and keep-alive 60 whose client id is any bytes.
fn connect_with_raw_id(client_id: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.extend_from_slice(&[0x04, 0x02, 0x00, 0x3C]);
    push_str(&mut body, client_id);
    packet(0x10, &body)
}

/// A two-byte-id acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBCOMP 0x70, PUBREL 0x62).
fn ack_packet(first_byte: u8, pkid: u16) -> Vec<u8> {
    packet(first_byte, &pkid.to_be_bytes())
}

/// Reads until the server closes the socket; what it sent, or `None` if still open after
/// `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads exactly `n` bytes within [`WAIT`].
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no {n} bytes within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

// ---------------------------------------------------------------------------------------------
// Memory and file descriptors
// ---------------------------------------------------------------------------------------------

/// The resident set size of this process (`VmRSS` in /proc/self/status), in bytes.
fn rss_bytes() -> u64 {
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Asserts that the memory grew by less than [`MEMORY_BOUND`] since `before`.
fn assert_memory_bounded(what: &str, before: u64) {
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

/// The hard limit on open files, from /proc/self/limits.
fn hard_nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Raises this process's open-file limit so that `clients` connections fit (each takes two
/// descriptors here: the client's and the broker's), and returns the soft limit reached.
///
/// As root the hard limit itself is raised with `prlimit` (util-linux) first; elsewhere the
/// soft limit goes up to the hard limit.
fn raise_fd_limit(clients: usize) -> u64 {
    let wanted = clients * 2 + 1024;
    if hard_nofile_limit().is_some_and(|hard| hard >= wanted as u64) {
        return adapter_tokio::limits::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    }
    let _ = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={wanted}:{wanted}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    adapter_tokio::limits::raise_nofile_limit().expect("raise RLIMIT_NOFILE")
}

// ---------------------------------------------------------------------------------------------
// The scene: a broker, its event monitor and a bystander
// ---------------------------------------------------------------------------------------------

/// A broker under attack, a monitor on `SYSTEM/#`, and a bystander connected before any
/// attack that must keep working after each one.
struct Scene {
    broker: Broker,
    addr: SocketAddr,
    monitor: Monitor,
    bystander: Client,
    /// Client ids that legitimately connected, for "no presence event for the attacker".
    known: HashSet<String>,
    checks: u32,
}

/// The configuration of the brokers under attack: small packets, a short connect timeout.
fn hostile_config() -> Config {
    let mut config = test_config();
    config.max_packet_size = MAX_PACKET;
    config.connect_timeout_secs = 0.5;
    config
}

impl Scene {
    async fn start(config: Config) -> Scene {
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

    /// The bystander publishes at QoS 1 and receives its own message; a new client can
    /// connect too.
    async fn assert_healthy(&mut self, after: &str) {
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

    /// Connects `client_id` over a raw socket and waits for its `connected` event.
    async fn connect_raw(&mut self, client_id: &str) -> (RawClient, Value) {
        let (raw, connack) = RawClient::connect(self.addr, &connect_packet(client_id, 60, 4)).await;
        assert_eq!(connack, CONNACK_ACCEPTED, "{client_id} is accepted");
        self.known.insert(client_id.to_owned());
        let connected = self.monitor.next_event("connected", client_id).await;
        (raw, connected.json)
    }

    /// A connected client sends `bytes`: the broker closes the socket and reports `reason`;
    /// the bystander keeps working.
    async fn connected_attack(&mut self, client_id: &str, bytes: &[u8], reason: &str) {
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
            json!({
                "client_id": client_id,
                "reason": reason,
                "connected_at": connected["ts"],
            }),
            &["ts"],
        );
        self.assert_healthy(&format!("{client_id}'s attack")).await;
    }

    /// A client that never connected sends `bytes`: the broker closes the socket, having sent
    /// nothing or a refusing CONNACK, and reports no presence event.
    async fn unconnected_attack(&mut self, what: &str, bytes: &[u8]) {
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
    /// queued before it has too), asserts that no presence event names an unknown client.
    async fn assert_no_unknown_presence(&mut self, what: &str) {
        let marker = format!("marker-{}", self.known.len());
        let (raw, _) = self.connect_raw(&marker).await;
        drop(raw);
        let strangers: Vec<String> = self
            .monitor
            .history()
            .iter()
            .filter(|e| e.topic.starts_with("SYSTEM/presence/"))
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

// ---------------------------------------------------------------------------------------------
// Malformed bytes
// ---------------------------------------------------------------------------------------------

/// Fixed headers that can never become valid (section 2.2), each sent by a connected client.
fn malformed_headers() -> Vec<(&'static str, Vec<u8>)> {
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

#[tokio::test]
async fn malformed_fixed_headers_close_with_protocol_error() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    for (name, bytes) in malformed_headers() {
        scene
            .connected_attack(&format!("bad-{name}"), &bytes, "protocol_error")
            .await;
    }
}

#[tokio::test]
async fn declared_length_over_max_packet_size_closes_with_packet_too_large() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    // Only the fixed header of a 2,048-byte PUBLISH: the broker must not wait for the body.
    scene
        .connected_attack("big-header", &[0x30, 0x80, 0x10], "packet_too_large")
        .await;
    // The whole of a PUBLISH one byte over the limit.
    let empty = publish_packet(b"a/b", 0, 0, &[]).len();
    let over = publish_packet(b"a/b", 0, 0, &vec![b'x'; MAX_PACKET + 1 - empty]);
    assert_eq!(over.len(), MAX_PACKET + 2, "two length bytes once over 127");
    scene
        .connected_attack("big-body", &over, "packet_too_large")
        .await;
    // The largest length the encoding allows (256 MiB - 1).
    scene
        .connected_attack(
            "huge-header",
            &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            "packet_too_large",
        )
        .await;
    // A packet of exactly the limit still passes.
    let (mut raw, _) = scene.connect_raw("just-fits").await;
    // 1 type byte, 2 length bytes, 13 of topic, 2 of packet id: 18 bytes before the payload.
    let fits = publish_packet(b"health/fits", 1, 9, &vec![b'y'; MAX_PACKET - 18]);
    assert_eq!(fits.len(), MAX_PACKET);
    raw.stream.write_all(&fits).await.expect("write PUBLISH");
    assert_eq!(read_n(&mut raw.stream, 4).await, ack_packet(0x40, 9));
    let got = scene.bystander.next_publish().await;
    assert_eq!(got.topic, "health/fits");
}

#[tokio::test]
async fn bad_strings_in_packets_close_with_protocol_error() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // 0xC3 0x28: a two-byte sequence with a bad continuation byte (section 1.5.3).
        ("topic-utf8", publish_packet(b"a/\xC3\x28", 0, 0, b"x")),
        // A lone surrogate, U+D800, encoded as UTF-8 bytes: not well-formed.
        (
            "topic-surrogate",
            publish_packet(b"a/\xED\xA0\x80", 1, 3, b"x"),
        ),
        // U+0000 is forbidden in strings (section 1.5.3).
        ("topic-nul", publish_packet(b"a/\x00/b", 0, 0, b"x")),
        // Wildcards are for filters only (section 3.3.2.1).
        ("topic-plus", publish_packet(b"a/+/b", 0, 0, b"x")),
        ("topic-hash", publish_packet(b"a/#", 1, 4, b"x")),
        ("topic-empty", publish_packet(b"", 0, 0, b"x")),
        ("filter-utf8", subscribe_packet(5, b"a/\xFF", 0)),
        ("filter-nul", subscribe_packet(6, b"a/\x00", 0)),
        // `#` must be last and alone in its level (section 4.7.1.2).
        ("filter-hash", subscribe_packet(7, b"a/#/b", 0)),
        // SUBSCRIBE requested-QoS byte with reserved bits (section 3.8.3.1).
        ("filter-qos-bits", subscribe_packet(8, b"a/b", 0x04)),
    ];
    for (name, bytes) in cases {
        scene
            .connected_attack(&format!("str-{name}"), &bytes, "protocol_error")
            .await;
    }
}

#[tokio::test]
async fn second_connect_and_server_packets_close_with_protocol_error() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    // Section 3.1.0: a second CONNECT is a protocol violation.
    scene
        .connected_attack("twice", &connect_packet("twice", 60, 4), "protocol_error")
        .await;
    // A second CONNECT with another client id must not rename the connection either.
    scene
        .connected_attack(
            "rename",
            &connect_packet("renamed", 60, 4),
            "protocol_error",
        )
        .await;
    // Packets only a server sends.
    for (name, bytes) in [
        ("connack", CONNACK_ACCEPTED.to_vec()),
        ("pingresp", PINGRESP.to_vec()),
        ("suback", vec![0x90, 0x03, 0x00, 0x01, 0x00]),
    ] {
        scene
            .connected_attack(&format!("server-{name}"), &bytes, "protocol_error")
            .await;
    }
    scene.assert_no_unknown_presence("second CONNECT").await;
}

#[tokio::test]
async fn packets_before_connect_are_closed_without_events() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("PINGREQ before CONNECT", PINGREQ.to_vec()),
        ("DISCONNECT before CONNECT", DISCONNECT.to_vec()),
        (
            "PUBLISH before CONNECT",
            publish_packet(b"health/sneak", 1, 1, b"x"),
        ),
        (
            "SUBSCRIBE before CONNECT",
            subscribe_packet(1, b"SYSTEM/#", 1),
        ),
        ("CONNACK before CONNECT", CONNACK_ACCEPTED.to_vec()),
        (
            "declared length over max_packet_size",
            vec![0x10, 0xFF, 0xFF, 0x03],
        ),
        (
            "invalid UTF-8 client id",
            connect_with_raw_id(b"id-\xC3\x28"),
        ),
        ("U+0000 in the client id", connect_with_raw_id(b"id\x00x")),
        ("protocol name MQTX", {
            let mut p = connect_packet("mqtx", 60, 4);
            p[7] = b'X';
            p
        }),
        ("reserved CONNECT flag bit", {
            let mut p = connect_packet("flag0", 60, 4);
            p[9] |= 0x01;
            p
        }),
        ("CONNECT with flags 0x1", {
            let mut p = connect_packet("flags", 60, 4);
            p[0] = 0x11;
            p
        }),
        // Refused with a CONNACK: protocol level 3, and the reserved id `broker`.
        ("protocol level 3", connect_packet("level3", 60, 3)),
        ("reserved client id", connect_packet("broker", 60, 4)),
        // An empty id without clean session is refused (section 3.1.3.1).
        ("empty id, persistent session", {
            let mut p = connect_packet("", 60, 4);
            p[9] = 0x00;
            p
        }),
    ];
    for (name, bytes) in malformed_headers() {
        cases.push((name, bytes));
    }
    for (what, bytes) in &cases {
        scene.unconnected_attack(what, bytes).await;
    }
    // The refusing CONNACKs carry their codes (section 3.2.2.3).
    for (connect, code) in [
        (connect_packet("level3", 60, 3), 0x01),
        (connect_packet("broker", 60, 4), 0x02),
    ] {
        let (_raw, connack) = RawClient::connect(scene.addr, &connect).await;
        assert_eq!(connack, [0x20, 0x02, 0x00, code]);
    }
    assert!(
        scene
            .broker
            .metrics()
            .protocol_errors
            .load(Ordering::Relaxed)
            >= 10
    );
}

// ---------------------------------------------------------------------------------------------
// Time: slowloris
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn slowloris_is_closed_at_the_connect_timeout() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    let connect = connect_packet("slowloris", 60, 4);
    // One byte every 100 ms: the CONNECT never completes within 0.5 s, and the bytes that do
    // arrive must not extend the deadline.
    let mut stream = TcpStream::connect(scene.addr).await.expect("TCP connect");
    let start = Instant::now();
    let mut closed_after = None;
    for byte in &connect[..connect.len() - 1] {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 16];
        match timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("slowloris got {:02x?}", &buf[..n]),
            Err(_) => {}
        }
    }
    let elapsed = match closed_after {
        Some(elapsed) => elapsed,
        None => {
            assert!(
                read_to_close(&mut stream, Duration::from_secs(2))
                    .await
                    .is_some(),
                "slowloris still connected"
            );
            start.elapsed()
        }
    };
    assert!(
        elapsed <= Duration::from_millis(1_500),
        "slowloris closed after {elapsed:?}, expected within 1.5 s"
    );
    // A socket that sends nothing at all.
    let mut silent = TcpStream::connect(scene.addr).await.expect("TCP connect");
    let start = Instant::now();
    assert_eq!(
        read_to_close(&mut silent, Duration::from_millis(1_500)).await,
        Some(Vec::new()),
        "silent socket closed without a byte"
    );
    println!(
        "slowloris closed after {elapsed:?}, silent socket after {:?}",
        start.elapsed()
    );
    assert_eq!(
        scene
            .broker
            .metrics()
            .connect_timeouts
            .load(Ordering::Relaxed),
        2
    );
    scene.assert_no_unknown_presence("slowloris").await;
    scene.assert_healthy("slowloris").await;
}

// ---------------------------------------------------------------------------------------------
// Protocol abuse that is not fatal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn acks_for_unknown_packet_ids_are_ignored_and_counted() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    let (mut raw, _) = scene.connect_raw("acker").await;
    let mut bytes = Vec::new();
    for pkid in [1u16, 77, 0xFFFF] {
        bytes.extend(ack_packet(0x40, pkid)); // PUBACK
        bytes.extend(ack_packet(0x50, pkid)); // PUBREC
        bytes.extend(ack_packet(0x70, pkid)); // PUBCOMP
    }
    // PUBREL for a QoS 2 publish never received: answered with PUBCOMP (section 4.3.3).
    bytes.extend(ack_packet(0x62, 42));
    bytes.extend(PINGREQ);
    raw.stream.write_all(&bytes).await.expect("write acks");
    let mut expected = ack_packet(0x70, 42);
    expected.extend(PINGRESP);
    assert_eq!(
        read_n(&mut raw.stream, expected.len()).await,
        expected,
        "PUBCOMP then PINGRESP: the client is still served"
    );
    assert_eq!(
        scene
            .broker
            .metrics()
            .acks_unmatched
            .load(Ordering::Relaxed),
        9,
        "three PUBACKs, three PUBRECs, three PUBCOMPs unmatched"
    );
    // Still connected, and can still publish.
    raw.stream
        .write_all(&publish_packet(b"health/acker", 1, 5, b"still here"))
        .await
        .expect("write PUBLISH");
    assert_eq!(read_n(&mut raw.stream, 4).await, ack_packet(0x40, 5));
    assert_eq!(
        scene.bystander.next_publish().await.topic,
        "health/acker",
        "the acker's publish is routed"
    );
    scene
        .monitor
        .assert_none("disconnected of the acker", QUIET, |e| {
            e.is("disconnected", "acker")
        })
        .await;
    scene.assert_healthy("unknown acks").await;
    raw.stream.write_all(&DISCONNECT).await.expect("DISCONNECT");
    let ev = scene.monitor.next_event("disconnected", "acker").await;
    assert_eq!(ev.json["reason"], json!("normal"));
}

#[tokio::test]
async fn subscribe_flood_keeps_the_broker_healthy() {
    let _shared = HEAVY.read().await;
    let mut scene = Scene::start(hostile_config()).await;
    let (raw, connected) = scene.connect_raw("sub-flood").await;
    let mut flood = Vec::new();
    for i in 0..5_000u16 {
        let filter = format!("flood/{i}");
        flood.extend(subscribe_packet(i + 1, filter.as_bytes(), 1));
    }
    // Written at once, never reading: SUBACKs pile up in the socket.
    let (mut reader, mut writer) = raw.stream.into_split();
    let write = tokio::spawn(async move {
        let result = writer.write_all(&flood).await;
        (writer, result)
    });
    // Let the broker take what it will.
    tokio::time::sleep(Duration::from_millis(500)).await;
    scene.assert_healthy("during the SUBSCRIBE flood").await;
    let (mut writer, written) = timeout(Duration::from_secs(30), write)
        .await
        .expect("the flood is written or refused within 30 s")
        .expect("writer task");
    // Either the broker closed the connection as a protocol error, or it still works: then a
    // PINGREQ gets its PINGRESP after the SUBACKs.
    let closed = scene
        .monitor
        .try_wait_for(Duration::from_secs(2), &|e| {
            e.is("disconnected", "sub-flood")
        })
        .await;
    match closed {
        Some(ev) => {
            println!("SUBSCRIBE flood: closed ({written:?}) with {}", ev.json);
            assert_fields(
                &ev,
                json!({
                    "client_id": "sub-flood",
                    "reason": "protocol_error",
                    "connected_at": connected["ts"],
                }),
                &["ts"],
            );
            let mut buf = vec![0u8; 64 * 1024];
            let end = timeout(WAIT, async {
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(end.is_ok(), "the socket is closed");
        }
        None => {
            println!("SUBSCRIBE flood: the connection kept working");
            written.expect("the whole flood was written");
            writer.write_all(&PINGREQ).await.expect("PINGREQ");
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let deadline = Instant::now() + Duration::from_secs(30);
            while !seen.ends_with(&PINGRESP) {
                match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    other => panic!("no PINGRESP after the flood: {other:?}"),
                }
            }
        }
    }
    scene.assert_healthy("after the SUBSCRIBE flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_flood_does_not_starve_other_subscribers() {
    const FLOOD: usize = 20_000;
    let _shared = HEAVY.read().await;
    let mut config = hostile_config();
    // The monitor scans its whole history for every event it waits for: 20,000 `message`
    // events would make this test quadratic. The storm below loads the event pipeline.
    config.events.message.enabled = false;
    let mut scene = Scene::start(config).await;
    let mut drinker = Client::connect(scene.addr, "drinker").await;
    drinker.subscribe("flood/#", QoS::AtLeastOnce).await;
    let (raw, _) = scene.connect_raw("flooder").await;
    let mut flood = Vec::with_capacity(FLOOD * 80);
    for i in 0..FLOOD {
        flood.extend(publish_packet(
            format!("flood/{}", i % 16).as_bytes(),
            0,
            0,
            &[b'f'; 64],
        ));
    }
    flood.extend(publish_packet(b"flood/end", 1, 1, b"end"));
    let (mut reader, mut writer) = raw.stream.into_split();
    let start = Instant::now();
    let write = tokio::spawn(async move {
        writer.write_all(&flood).await.expect("write the flood");
        writer
    });
    // While the flood goes through, the bystander keeps publishing and receiving.
    for _ in 0..3 {
        scene.assert_healthy("during the PUBLISH flood").await;
    }
    let mut writer = timeout(Duration::from_secs(30), write)
        .await
        .expect("the flood is written within 30 s")
        .expect("writer task");
    assert_eq!(read_n_half(&mut reader, 4).await, ack_packet(0x40, 1));
    // The drinker receives the flood and its end.
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(publish) = drinker.try_next_publish(left).await else {
            panic!("drinker got {received} of {FLOOD} flood messages and no end");
        };
        if publish.topic == "flood/end" {
            break;
        }
        received += 1;
    }
    println!(
        "PUBLISH flood: drinker received {received} of {FLOOD} QoS 0 messages in {:?}",
        start.elapsed()
    );
    assert_eq!(received, FLOOD, "no QoS 0 message lost to the drinker");
    scene.assert_healthy("after the PUBLISH flood").await;
    writer.write_all(&DISCONNECT).await.expect("DISCONNECT");
    let ev = scene
        .monitor
        .try_wait_for(WAIT, &|e| e.is("disconnected", "flooder"))
        .await
        .unwrap_or_else(|| {
            let m = scene.broker.metrics();
            let history = scene.monitor.history();
            panic!(
                "no disconnected event of the flooder within {WAIT:?}: the monitor got {} events \
                 (last: {:?}); broker: {:?} emitted, {} dropped, {} to the MQTT sink",
                history.len(),
                history.last().map(|e| e.json.to_string()),
                m.events_emitted
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect::<Vec<_>>(),
                m.events_dropped.load(Ordering::Relaxed),
                m.events_sink_mqtt.load(Ordering::Relaxed),
            )
        });
    assert_eq!(ev.json["reason"], json!("normal"));
}

/// Reads exactly `n` bytes from a read half within [`WAIT`].
async fn read_n_half(stream: &mut tokio::net::tcp::OwnedReadHalf, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no {n} bytes within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// A client that subscribes to `busy/#` at QoS 0 (no in-flight window holds the router back:
/// everything is pushed at its socket), then never reads again.
async fn subscribe_sluggard(scene: &mut Scene, keep_alive: u16) -> (RawClient, u64) {
    let (mut sluggard, connack) =
        RawClient::connect(scene.addr, &connect_packet("sluggard", keep_alive, 4)).await;
    assert_eq!(connack, CONNACK_ACCEPTED);
    scene.known.insert("sluggard".into());
    let connected = scene.monitor.next_event("connected", "sluggard").await;
    sluggard
        .stream
        .write_all(&subscribe_packet(1, b"busy/#", 0))
        .await
        .expect("SUBSCRIBE");
    assert_eq!(
        read_n(&mut sluggard.stream, 5).await,
        [0x90, 0x03, 0x00, 0x01, 0x00]
    );
    (sluggard, connected.ts())
}

/// Publishes `rounds` rounds of `ROUND` QoS 0 messages of 8 KiB on `busy/N` from a raw
/// client, each round closed by a QoS 1 marker whose PUBACK paces the publisher, while
/// `drinker` (subscribed to `busy/#`) must receive every message. Calls `checkpoint` with the
/// round number after each round.
async fn publish_busy(
    scene: &mut Scene,
    drinker: &mut Client,
    rounds: usize,
    mut checkpoint: impl FnMut(usize),
) {
    const ROUND: usize = 1_024;
    let payload = vec![b'b'; 8 * 1024];
    let (mut publisher, _) = scene.connect_raw("busy-pub").await;
    for round in 0..rounds {
        let mut batch = Vec::with_capacity(ROUND * (payload.len() + 16) + 16);
        for i in 0..ROUND {
            batch.extend(publish_packet(
                format!("busy/{}", i % 8).as_bytes(),
                0,
                0,
                &payload,
            ));
        }
        let pkid = u16::try_from(round + 1).expect("fewer than 65,535 rounds");
        batch.extend(publish_packet(b"busy/marker", 1, pkid, b"m"));
        timeout(Duration::from_secs(30), publisher.stream.write_all(&batch))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the publisher is stalled"))
            .expect("write a round");
        drop(batch);
        // The publisher is served whatever the sluggard does.
        assert_eq!(
            read_n(&mut publisher.stream, 4).await,
            ack_packet(0x40, pkid),
            "round {round}"
        );
        // The drinker gets the whole round (and is drained, so that its client does not hold
        // the messages in this process).
        for received in 0..=ROUND {
            if drinker.try_next_publish(WAIT).await.is_none() {
                panic!("round {round}: the drinker got only {received} messages");
            }
        }
        checkpoint(round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_does_not_hurt_the_broker() {
    /// 48 rounds of 1,024 x 8 KiB: 384 MiB through one filter, six times what the router may
    /// keep of it (4 segments of 16 MiB).
    const ROUNDS: usize = 48;
    let _exclusive = HEAVY.write().await;
    let mut config = hostile_config();
    config.max_packet_size = 16 * 1024;
    // 49,000 `message` events would fill the monitor's history, which lives in this process.
    config.events.message.enabled = false;
    let mut scene = Scene::start(config).await;
    let mut drinker = Client::connect(scene.addr, "drinker").await;
    drinker.subscribe("busy/#", QoS::AtMostOnce).await;
    // Keep-alive 0: this test is about memory and the others, not about keep-alive.
    let (sluggard, _) = subscribe_sluggard(&mut scene, 0).await;

    let before = rss_bytes();
    let start = Instant::now();
    let mut full = 0;
    publish_busy(&mut scene, &mut drinker, ROUNDS, |round| {
        // By round 16 (128 MiB) the filter's log is at its cap.
        if round + 1 == 16 {
            full = rss_bytes();
        }
    })
    .await;
    println!(
        "never-reading client: {} MiB published in {:?}",
        ROUNDS * 8,
        start.elapsed()
    );
    scene
        .assert_healthy("beside a client that never reads")
        .await;
    println!(
        "never-reading client: RSS {:.1} MiB -> {:.1} MiB (128 MiB pushed) -> {:.1} MiB \
         (384 MiB pushed)",
        mib(before),
        mib(full),
        mib(rss_bytes())
    );
    // The router keeps up to 64 MiB of the filter's log by design: the first 128 MiB may grow
    // the process by that much and a margin; the next 256 MiB must not grow it much more.
    assert!(
        full.saturating_sub(before) < 2 * MEMORY_BOUND,
        "the first 128 MiB to a client that never reads grew RSS by {:.1} MiB",
        mib(full.saturating_sub(before))
    );
    assert_memory_bounded("the next 256 MiB to a client that never reads", full);
    scene
        .monitor
        .assert_none("disconnected of the sluggard or the drinker", QUIET, |e| {
            e.is("disconnected", "sluggard") || e.is("disconnected", "drinker")
        })
        .await;
    // The publisher has left: monitor, bystander, drinker and the sluggard remain.
    wait_connected_clients(&scene.broker, 4).await;
    drop(sluggard);
    let ev = scene.monitor.next_event("disconnected", "sluggard").await;
    assert_eq!(ev.json["reason"], json!("tcp_closed"));
    scene.assert_healthy("after the sluggard left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_nor_writes_is_dropped_at_keepalive_expiry() {
    let _exclusive = HEAVY.write().await;
    let mut config = hostile_config();
    config.max_packet_size = 16 * 1024;
    config.events.message.enabled = false;
    let mut scene = Scene::start(config).await;
    let mut drinker = Client::connect(scene.addr, "drinker").await;
    drinker.subscribe("busy/#", QoS::AtMostOnce).await;
    // Keep-alive 2 s and silent: MQTT 3.1.1 section 3.1.2.10 wants it dropped after 3 s.
    let (sluggard, connected_at) = subscribe_sluggard(&mut scene, 2).await;
    let start = Instant::now();
    // 16 MiB: more than the socket buffers of both ends hold.
    publish_busy(&mut scene, &mut drinker, 2, |_| {}).await;
    let ev = scene
        .monitor
        .try_wait_for(Duration::from_secs(10), &|e| {
            e.is("disconnected", "sluggard")
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the silent client (keep-alive 2 s) is still connected {:?} after it \
                 subscribed; the broker holds its slot",
                start.elapsed()
            )
        });
    assert_fields(
        &ev,
        json!({
            "client_id": "sluggard",
            "reason": "keepalive_timeout",
            "connected_at": connected_at,
        }),
        &["ts"],
    );
    drop(sluggard);
}

// ---------------------------------------------------------------------------------------------
// Memory over many attacks
// ---------------------------------------------------------------------------------------------

/// One attack of the memory loop: its client id when it connects first, its bytes, and the
/// reason expected when it does.
fn attack(i: usize) -> (Option<String>, Vec<u8>, &'static str) {
    let headers = malformed_headers();
    match i % 6 {
        0 => (
            Some(format!("mem-{i}")),
            headers[i / 6 % headers.len()].1.clone(),
            "protocol_error",
        ),
        1 => (
            Some(format!("mem-{i}")),
            vec![0x30, 0xFF, 0xFF, 0x7F],
            "packet_too_large",
        ),
        2 => (
            Some(format!("mem-{i}")),
            publish_packet(b"a/+", 0, 0, b"x"),
            "protocol_error",
        ),
        3 => (
            Some(format!("mem-{i}")),
            connect_packet("again", 60, 4),
            "protocol_error",
        ),
        4 => (None, connect_with_raw_id(b"\xFF\xFE"), ""),
        _ => (None, headers[i / 6 % headers.len()].1.clone(), ""),
    }
}

async fn run_attack(addr: SocketAddr, i: usize) -> Option<(String, &'static str)> {
    let (id, bytes, reason) = attack(i);
    let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
    if let Some(id) = &id {
        stream
            .write_all(&connect_packet(id, 60, 4))
            .await
            .expect("write CONNECT");
        assert_eq!(read_n(&mut stream, 4).await, CONNACK_ACCEPTED, "{id}");
    }
    let _ = stream.write_all(&bytes).await;
    assert!(
        read_to_close(&mut stream, WAIT).await.is_some(),
        "attack {i} ({bytes:02x?}): still open"
    );
    id.map(|id| (id, reason))
}

/// Runs attacks `range` 50 at a time and checks every connected attacker's `disconnected`.
async fn attack_loop(scene: &mut Scene, range: std::ops::Range<usize>) {
    let gate = std::sync::Arc::new(Semaphore::new(50));
    let mut tasks = JoinSet::new();
    for i in range {
        let gate = gate.clone();
        let addr = scene.addr;
        tasks.spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            run_attack(addr, i).await
        });
    }
    let mut expected = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Some(done) = result.expect("attack task") {
            expected.push(done);
        }
    }
    for (id, reason) in expected {
        let ev = scene.monitor.next_event("disconnected", &id).await;
        assert_eq!(ev.json["reason"], json!(reason), "{id}: {}", ev.json);
        scene.known.insert(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_attacks_keep_memory_bounded() {
    let _exclusive = HEAVY.write().await;
    let mut scene = Scene::start(hostile_config()).await;
    // Warm up: the allocator's arenas, the router's first segments, the runtime's workers.
    attack_loop(&mut scene, 0..60).await;
    let before = rss_bytes();
    let start = Instant::now();
    attack_loop(&mut scene, 60..560).await;
    println!("500 attacks in {:?}", start.elapsed());
    scene.assert_healthy("500 attacks").await;
    scene.assert_no_unknown_presence("500 attacks").await;
    assert_memory_bounded("500 attack connections", before);
    wait_connected_clients(&scene.broker, 2).await;
}

// ---------------------------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------------------------

/// Waits until the broker counts `n` connected clients.
async fn wait_connected_clients(broker: &Broker, n: usize) {
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

/// Events seen on `SYSTEM/presence/#` for one client id, in order: kind and reason.
type Timeline = Vec<(String, Option<String>)>;

/// Opens `wanted` raw connections at once (fewer if the file-descriptor limit does not allow
/// it), then closes them all together, half with DISCONNECT, half by dropping the socket.
/// Returns how many connected.
async fn storm(wanted: usize) -> usize {
    let limit = raise_fd_limit(wanted);
    // 300 descriptors for everything else: the runtime, the monitor, the bystander.
    let fit = usize::try_from(limit.saturating_sub(300) / 2).unwrap_or(usize::MAX);
    let clients = wanted.min(fit);
    println!("storm: fd limit {limit}, {clients} clients (asked for {wanted})");

    let mut config = test_config();
    config.max_connections = clients + 64;
    config.events.queue_capacity = 4 * clients + 1024;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut watcher = Client::connect(addr, "presence-watcher").await;
    watcher
        .subscribe("SYSTEM/presence/#", QoS::AtLeastOnce)
        .await;
    let mut bystander = Client::connect(addr, "bystander").await;
    bystander.subscribe("health/#", QoS::AtLeastOnce).await;

    let start = Instant::now();
    let gate = std::sync::Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            let mut stream = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("storm-{i}: TCP connect: {e}"));
            // Keep-alive 0: however slow the storm, nobody times out.
            stream
                .write_all(&connect_packet(&format!("storm-{i}"), 0, 4))
                .await
                .expect("write CONNECT");
            assert_eq!(read_n(&mut stream, 4).await, CONNACK_ACCEPTED, "storm-{i}");
            (i, stream)
        });
    }
    let mut streams: Vec<Option<TcpStream>> = (0..clients).map(|_| None).collect();
    while let Some(result) = tasks.join_next().await {
        let (i, stream) = result.expect("connect task");
        streams[i] = Some(stream);
    }
    let connected_in = start.elapsed();
    let concurrent = broker.connected_clients();
    println!("storm: {concurrent} clients connected at once after {connected_in:?}");
    assert_eq!(
        concurrent,
        clients + 2,
        "every storm client, watcher, bystander"
    );

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let mut stream = stream.expect("every client connected");
        tasks.spawn(async move {
            if i % 2 == 0 {
                stream.write_all(&DISCONNECT).await.expect("DISCONNECT");
                assert!(
                    read_to_close(&mut stream, Duration::from_secs(30))
                        .await
                        .is_some(),
                    "storm-{i}: not closed after DISCONNECT"
                );
            }
            drop(stream);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("disconnect task");
    }

    let mut timelines: HashMap<String, Timeline> = HashMap::new();
    let mut seen = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < 2 * clients {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(publish) = watcher.try_next_publish(left).await else {
            panic!(
                "storm: {seen} of {} presence events after 60 s",
                2 * clients
            );
        };
        let json: Value = serde_json::from_slice(&publish.payload).expect("event is JSON");
        let id = json["client_id"].as_str().expect("client_id").to_owned();
        if !id.starts_with("storm-") {
            continue;
        }
        let kind = publish.topic.trim_start_matches("SYSTEM/presence/");
        let reason = json["reason"].as_str().map(str::to_owned);
        timelines
            .entry(id)
            .or_default()
            .push((kind.to_owned(), reason));
        seen += 1;
    }
    // Nothing more may come.
    if let Some(extra) = watcher.try_next_publish(QUIET).await {
        panic!(
            "storm: extra presence event {} {:?}",
            extra.topic, extra.payload
        );
    }
    let closed_in = start.elapsed();
    println!("storm: every client closed and reported after {closed_in:?}");

    assert_eq!(timelines.len(), clients, "one timeline per client id");
    for i in 0..clients {
        let id = format!("storm-{i}");
        let reason = if i % 2 == 0 { "normal" } else { "tcp_closed" };
        let want: Timeline = vec![
            ("connected".into(), None),
            ("disconnected".into(), Some(reason.into())),
        ];
        assert_eq!(timelines.get(&id), Some(&want), "{id}");
    }
    bystander
        .publish("health/storm", QoS::AtLeastOnce, false, b"after the storm")
        .await;
    assert_eq!(bystander.next_publish().await.topic, "health/storm");
    wait_connected_clients(&broker, 2).await;
    clients
}

/// 10,000 clients, or as many as the open-file limit allows (both ends of every connection
/// are in this process: 20,000 descriptors allow 9,850). About 10 s in a debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_10_000_connections() {
    let _exclusive = HEAVY.write().await;
    let start = Instant::now();
    let clients = storm(10_000).await;
    println!("storm of {clients} clients: {:?} in all", start.elapsed());
    assert!(
        clients >= 1_000,
        "the fd limit allows only {clients} clients"
    );
}
