//! End-to-end: `activity-broker --ws-listen ADDR` serves MQTT over WebSocket, and a broken
//! `[websocket_tls]` certificate is a usage error.

use std::path::Path;
use std::process::{Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use tests::ports::free_port;
use tests::process::BrokerProcess;
use tests::{WAIT, connect_packet};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn the_ws_listen_flag_serves_mqtt_over_websocket() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ws_addr = format!("127.0.0.1:{}", free_port());
    let broker = BrokerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_activity-broker")),
        &["--ws-listen", &ws_addr],
        &dir.path().join("broker.log"),
    )
    .await;

    let mut request = format!("ws://{ws_addr}/mqtt")
        .into_client_request()
        .expect("a ws URL");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let tcp = TcpStream::connect(&ws_addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the WebSocket handshake");
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol"),
        Some(&HeaderValue::from_static("mqtt"))
    );
    ws.send(Message::binary(connect_packet("ws-cli", 30, 4)))
        .await
        .expect("send CONNECT");
    let connack = timeout(WAIT, ws.next())
        .await
        .expect("a CONNACK within WAIT")
        .expect("the stream is open")
        .expect("a frame");
    assert_eq!(connack, Message::binary(vec![0x20, 2, 0, 0]));
    assert_eq!(broker.metric("activity_connections_current").await, 1.0);
    let metrics = broker.metrics().await;
    assert_eq!(
        metrics.get("activity_websocket_rejected_total{reason=\"path\"}"),
        Some(&0.0),
        "{metrics:?}"
    );
    assert!(broker.log().contains("MQTT over WebSocket listener ready"));
    broker.kill();
}

#[test]
fn a_broken_websocket_tls_certificate_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let conf = dir.path().join("broker.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\n[websocket_tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("absent-cert.pem").display(),
            dir.path().join("absent-key.pem").display()
        ),
    )
    .expect("write the config");
    let out = Command::new(env!("CARGO_BIN_EXE_activity-broker"))
        .arg("--config")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("websocket_tls.cert"), "{stderr}");
}
