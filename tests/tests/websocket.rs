//! End-to-end: MQTT over WebSocket (`[websocket]`, `[websocket_tls]`) in the broker and the tap.
//!
//! Real clients: Python paho-mqtt 2.x with `transport="websockets"` (see
//! `tests/python/paho_websocket.py`) through the broker, through the tap in front of Debian's
//! mosquitto, and over TLS; the events say `"transport":"ws"` / `"wss"`. A tungstenite client
//! checks the framing (a packet split over frames, packets sharing a frame) and the hostile
//! cases, each a clean close and a count in `activity_websocket_rejected_total`: wrong path,
//! not an upgrade, a foreign subprotocol, a slow handshake, a text frame, a frame larger than
//! `max_packet_size`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adapter_tokio::config::{Config, WebSocketConfig, WebSocketTlsConfig};
use adapter_tokio::metrics::{Metrics, WsReject};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// `config` with a WebSocket listener on a free loopback port at the default path.
fn with_websocket(mut config: Config) -> Config {
    config.websocket = Some(WebSocketConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        path: "/mqtt".to_owned(),
    });
    config
}

/// Runs `tests/python/paho_websocket.py` against `addr` and returns what its clients saw.
async fn paho_websocket(addr: SocketAddr, prefix: &str, ca_file: Option<&Path>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/paho_websocket.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("/mqtt")
        .arg(prefix);
    if let Some(ca) = ca_file {
        command.arg(ca);
    }
    let out = timeout(WAIT * 4, command.kill_on_drop(true).output())
        .await
        .expect("paho_websocket.py finishes")
        .expect("python3 runs (scripts/test.sh installs paho-mqtt)");
    assert!(
        out.status.success(),
        "paho_websocket.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "paho_websocket.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Checks what the paho clients saw and the events `monitor` got: both clients connected over
/// `transport` from loopback, the subscription, both messages (the big one whole).
async fn check_paho(seen: &Value, monitor: &mut Monitor, prefix: &str, transport: &str) {
    assert_eq!(seen["sub_connack"], 0, "{seen}");
    assert_eq!(seen["pub_connack"], 0, "{seen}");
    assert_eq!(seen["suback"], json!([1]), "{seen}");
    assert_eq!(seen["pubacks"], json!([0, 0]), "{seen}");
    assert_eq!(
        seen["received"],
        json!([{"topic": format!("{prefix}/a"), "len": 5, "qos": 1},
               {"topic": format!("{prefix}/big"), "len": 6_000, "qos": 1}]),
        "{seen}"
    );

    let sub = format!("{prefix}-sub");
    let connected = monitor.next_event("connected", &sub).await;
    assert_fields(
        &connected,
        json!({"client_id": sub, "proto_ver": 4, "keepalive": 30, "clean_session": true,
               "transport": transport}),
        &["peer", "ts"],
    );
    assert_loopback_peer(&connected);
    let subscribed = monitor.next_event("subscribed", &sub).await;
    assert_eq!(subscribed.json["topic"], format!("{prefix}/#"));

    let publisher = format!("{prefix}-pub");
    let connected = monitor.next_event("connected", &publisher).await;
    assert_eq!(connected.json["transport"], transport, "{}", connected.json);
    assert_eq!(connected.json["proto_ver"], 5, "{}", connected.json);
    assert_loopback_peer(&connected);
    let small = monitor.next_event("message", &publisher).await;
    assert_eq!(small.json["payload"], "small", "{}", small.json);
    let big = monitor.next_event("message", &publisher).await;
    assert_eq!(big.json["payload_len"], 6_000, "{}", big.json);
    let gone = monitor.next_event("disconnected", &publisher).await;
    assert_eq!(gone.json["reason"], "normal", "{}", gone.json);
}

#[tokio::test]
async fn paho_over_websocket_through_the_broker() {
    let broker = start_broker(with_websocket(test_config())).await;
    let ws = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let seen = paho_websocket(ws, "wsb", None).await;
    check_paho(&seen, &mut monitor, "wsb", "ws").await;
}

#[tokio::test]
async fn paho_over_websocket_through_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_tap(with_websocket(tap_config(mosquitto.addr))).await;
    wait_publisher(&tap).await;
    let ws = tap.ws_local_addr().expect("the WebSocket listener is up");
    let mut monitor = Monitor::start(mosquitto.addr).await;
    let seen = paho_websocket(ws, "wst", None).await;
    check_paho(&seen, &mut monitor, "wst", "ws").await;
}

#[tokio::test]
async fn paho_over_websocket_over_tls() {
    let (cert, key) = tests::certs::self_signed("websocket");
    let mut config = test_config();
    config.websocket_tls = Some(WebSocketTlsConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        path: "/mqtt".to_owned(),
        cert: cert.clone(),
        key,
    });
    let broker = start_broker(config).await;
    let wss = broker.wss_local_addr().expect("the wss listener is up");
    let mut monitor = Monitor::start(broker.local_addr()).await;
    // The certificate names "localhost" and 127.0.0.1; paho checks the host name.
    let seen = paho_websocket(wss, "wss", Some(&cert)).await;
    check_paho(&seen, &mut monitor, "wss", "wss").await;
}

/// Opens a WebSocket to `addr` at `path`, offering `protocol` (none if empty).
async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocol: &str,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a ws URL");
    if !protocol.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).expect("a header value"),
        );
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

/// The next binary message's bytes; panics on anything else.
async fn next_binary(ws: &mut WebSocketStream<TcpStream>) -> Vec<u8> {
    loop {
        let message = timeout(WAIT, ws.next())
            .await
            .expect("a frame within WAIT")
            .expect("the stream is open")
            .expect("a frame");
        match message {
            Message::Binary(data) => return data.to_vec(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code; then the stream ends.
async fn close_code(ws: &mut WebSocketStream<TcpStream>) -> Option<CloseCode> {
    loop {
        match timeout(WAIT, ws.next()).await.expect("a close within WAIT") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("expected a close frame, got the error {e}"),
            None => panic!("the stream ended without a close frame"),
        }
    }
}

/// Waits until `metrics` counted `reason` `want` times.
async fn wait_rejected(metrics: &Metrics, reason: WsReject, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = metrics.websocket_rejects[reason as usize].load(Ordering::Relaxed);
        if n == want {
            return;
        }
        assert!(
            n < want && Instant::now() < deadline,
            "websocket_rejected_total{{reason=\"{}\"}} is {n}, want {want}",
            reason.name()
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn packets_span_frames_and_share_frames() {
    let broker = start_broker(with_websocket(test_config())).await;
    let addr = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let mut ws = ws_connect(addr, "/mqtt", "mqtt").await.expect("handshake");

    // CONNECT in three frames, cut inside the fixed header and inside the client id.
    let connect = connect_packet("split-frames", 30, 4);
    for part in [&connect[..1], &connect[1..7], &connect[7..]] {
        ws.send(Message::binary(part.to_vec())).await.expect("send");
    }
    assert_eq!(next_binary(&mut ws).await, [0x20, 2, 0, 0], "CONNACK");
    // Two PINGREQs in one frame: two PINGRESPs (in one or two frames).
    ws.send(Message::binary(vec![0xC0, 0, 0xC0, 0]))
        .await
        .expect("send");
    let mut answers = next_binary(&mut ws).await;
    if answers.len() < 4 {
        answers.extend(next_binary(&mut ws).await);
    }
    assert_eq!(answers, [0xD0, 0, 0xD0, 0], "two PINGRESPs");
    // A WebSocket ping is answered by the WebSocket layer, and MQTT goes on.
    ws.send(Message::Ping(vec![1, 2].into()))
        .await
        .expect("ping");
    let connected = monitor.next_event("connected", "split-frames").await;
    assert_eq!(connected.json["transport"], "ws", "{}", connected.json);
    // DISCONNECT, then the server closes the WebSocket.
    ws.send(Message::binary(vec![0xE0, 0])).await.expect("send");
    let gone = monitor.next_event("disconnected", "split-frames").await;
    assert_eq!(gone.json["reason"], "normal", "{}", gone.json);
    assert_eq!(close_code(&mut ws).await, None, "a plain close");
}

#[tokio::test]
async fn subprotocols_mqtt_and_mqttv31_are_accepted() {
    let broker = start_broker(with_websocket(test_config())).await;
    let addr = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    for (offered, chosen) in [
        ("mqtt", Some("mqtt")),
        ("mqttv3.1", Some("mqttv3.1")),
        ("chat, mqtt", Some("mqtt")),
        ("", None),
    ] {
        let mut request = format!("ws://{addr}/mqtt")
            .into_client_request()
            .expect("a ws URL");
        if !offered.is_empty() {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(offered));
        }
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (_ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .unwrap_or_else(|e| panic!("offering {offered:?}: {e}"));
        let answered = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ASCII"));
        assert_eq!(answered, chosen, "offering {offered:?}");
    }
}

/// Sends `request` on a fresh socket to `addr` and returns what the server answers until it
/// closes.
async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes within WAIT")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn bad_handshakes_are_answered_closed_and_counted() {
    let broker = start_broker(with_websocket(test_config())).await;
    let addr = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    let metrics = broker.metrics().clone();

    let answer = raw_http(addr, &upgrade("/other", "Sec-WebSocket-Protocol: mqtt\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    wait_rejected(&metrics, WsReject::Path, 1).await;

    let answer = raw_http(addr, &upgrade("/mqtt", "Sec-WebSocket-Protocol: chat\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("mqttv3.1"), "{answer}");
    wait_rejected(&metrics, WsReject::Subprotocol, 1).await;

    // Plain HTTP, no upgrade.
    let answer = raw_http(addr, "GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    wait_rejected(&metrics, WsReject::Handshake, 1).await;

    // The listener still serves a good client, and nobody connected before.
    let mut ws = ws_connect(addr, "/mqtt", "mqtt").await.expect("handshake");
    ws.send(Message::binary(connect_packet("after-bad", 30, 4)))
        .await
        .expect("send");
    assert_eq!(next_binary(&mut ws).await, [0x20, 2, 0, 0], "CONNACK");
    assert_eq!(metrics.connections_refused.load(Ordering::Relaxed), 0);
    let text = metrics.render();
    assert!(
        text.contains("activity_websocket_rejected_total{reason=\"path\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_handshake_times_out() {
    let mut config = with_websocket(test_config());
    config.connect_timeout_secs = 0.5;
    let broker = start_broker(config).await;
    let addr = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    let metrics = broker.metrics().clone();

    // Half a request head, then nothing: closed after the connect timeout.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: local")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("closed within WAIT");
    assert!(
        read.is_ok_and(|n| n == 0),
        "closed without an answer: {rest:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed after the connect timeout, not before: {:?}",
        started.elapsed()
    );
    wait_rejected(&metrics, WsReject::HandshakeTimeout, 1).await;
}

#[tokio::test]
async fn text_frames_and_oversized_frames_close_the_connection() {
    let mut config = with_websocket(test_config());
    config.max_packet_size = 1024;
    let broker = start_broker(config).await;
    let addr = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    let metrics = broker.metrics().clone();
    let mut monitor = Monitor::start(broker.local_addr()).await;

    // A text frame after CONNECT: close 1003, the session ends.
    let mut ws = ws_connect(addr, "/mqtt", "mqtt").await.expect("handshake");
    ws.send(Message::binary(connect_packet("texter", 30, 4)))
        .await
        .expect("send");
    assert_eq!(next_binary(&mut ws).await, [0x20, 2, 0, 0], "CONNACK");
    ws.send(Message::text("{\"hello\":1}")).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    wait_rejected(&metrics, WsReject::TextFrame, 1).await;
    let gone = monitor.next_event("disconnected", "texter").await;
    assert_eq!(gone.json["reason"], "tcp_closed", "{}", gone.json);

    // A text frame before CONNECT: no session, the same close.
    let mut ws = ws_connect(addr, "/mqtt", "mqtt").await.expect("handshake");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    wait_rejected(&metrics, WsReject::TextFrame, 2).await;

    // A frame one byte over max_packet_size: close 1009 before its payload is taken.
    let mut ws = ws_connect(addr, "/mqtt", "mqtt").await.expect("handshake");
    ws.send(Message::binary(connect_packet("big-frame", 30, 4)))
        .await
        .expect("send");
    assert_eq!(next_binary(&mut ws).await, [0x20, 2, 0, 0], "CONNACK");
    ws.send(Message::binary(vec![0u8; 1025]))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    wait_rejected(&metrics, WsReject::FrameTooLarge, 1).await;
    let gone = monitor.next_event("disconnected", "big-frame").await;
    assert_eq!(gone.json["reason"], "tcp_closed", "{}", gone.json);

    // An MQTT packet over the limit in small frames reaches the engine: packet_too_large, as
    // over TCP.
    let mut ws = ws_connect(addr, "/mqtt", "mqtt").await.expect("handshake");
    ws.send(Message::binary(connect_packet("big-packet", 30, 4)))
        .await
        .expect("send");
    assert_eq!(next_binary(&mut ws).await, [0x20, 2, 0, 0], "CONNACK");
    // PUBLISH QoS 0 on "t" with 2000 bytes of payload: remaining length 2003.
    let mut publish = vec![0x30, 0xD3, 0x0F, 0, 1, b't'];
    publish.extend(std::iter::repeat_n(b'x', 2000));
    for chunk in publish.chunks(500) {
        if ws.send(Message::binary(chunk.to_vec())).await.is_err() {
            break;
        }
    }
    let gone = monitor.next_event("disconnected", "big-packet").await;
    assert_eq!(gone.json["reason"], "packet_too_large", "{}", gone.json);
    assert_eq!(
        metrics.websocket_rejects[WsReject::FrameTooLarge as usize].load(Ordering::Relaxed),
        1
    );
}
