//! End-to-end: MQTT.js (npm `mqtt`) in real headless Chromium over the broker's WebSocket
//! listener.
//!
//! The test serves `tests/browser/index.html` and MQTT.js's browser bundle
//! (`tests/browser/node_modules/mqtt/dist/mqtt.min.js`, installed by `scripts/test.sh` with
//! `npm ci`) over HTTP on loopback, starts Debian's `chromium --headless` on the page, and
//! watches the broker's events with an MQTT subscriber on `SYSTEM/#`: the browser's
//! `connected` (transport `ws`), its `subscribed`, its `message`, and the `message` it publishes
//! once the broker delivered its first one back to it over WebSocket. Nothing of this can
//! happen unless the page ran in the browser; a missing Chromium or MQTT.js fails the test with
//! what to install.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use adapter_tokio::config::WebSocketConfig;
use futures_util::FutureExt;
use serde_json::json;
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

/// The directory of the page and its npm package.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Serves `index.html` and `mqtt.min.js` on a free loopback port until the task is dropped.
async fn serve_page() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let dir = browser_dir();
    let page = std::fs::read(dir.join("index.html")).expect("tests/browser/index.html");
    let bundle_path = dir.join("node_modules/mqtt/dist/mqtt.min.js");
    let bundle = std::fs::read(&bundle_path).unwrap_or_else(|e| {
        panic!(
            "MQTT.js is missing ({}: {e}): run `npm ci` in tests/browser (scripts/test.sh does)",
            bundle_path.display()
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let (page, bundle) = (page.clone(), bundle.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                let (status, kind, body): (&str, &str, &[u8]) = match path {
                    "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", &page),
                    "/mqtt.min.js" => ("200 OK", "text/javascript", &bundle),
                    _ => ("404 Not Found", "text/plain", b"not found"),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.write_all(body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn mqtt_js_in_headless_chromium_over_websocket() {
    let mut config = test_config();
    config.websocket = Some(WebSocketConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        path: "/mqtt".to_owned(),
    });
    let broker = start_broker(config).await;
    let ws = broker
        .ws_local_addr()
        .expect("the WebSocket listener is up");
    let mut monitor = Monitor::start(broker.local_addr()).await;
    let (http, _server) = serve_page().await;

    let profile = tempfile::tempdir().expect("a temporary directory");
    let log = profile.path().join("chromium.log");
    let url = format!("http://{http}/index.html?ws=ws://{ws}/mqtt&prefix=chromium");
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            // As root (CI), Chromium refuses to start with its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(&log).expect("chromium's log file"),
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start chromium ({e}): this test needs Debian's `chromium` \
                 (apt-get install chromium; scripts/test.sh installs it)"
            )
        });

    // Each wait fails the test (with the events seen) if the browser part did not run.
    let outcome = async {
        let connected = monitor.next_event("connected", "chromium-browser").await;
        assert_fields(
            &connected,
            json!({"client_id": "chromium-browser", "proto_ver": 4, "keepalive": 60,
                   "clean_session": true, "transport": "ws"}),
            &["peer", "ts"],
        );
        assert_loopback_peer(&connected);
        let subscribed = monitor.next_event("subscribed", "chromium-browser").await;
        assert_eq!(
            subscribed.json["topic"], "chromium/echo",
            "{}",
            subscribed.json
        );
        assert_eq!(subscribed.json["qos"], 1, "{}", subscribed.json);
        let first = monitor.next_event("message", "chromium-browser").await;
        assert_fields(
            &first,
            json!({"pub_client_id": "chromium-browser", "topic": "chromium/echo",
                   "payload": "hello from chromium", "payload_len": 19, "qos": 1,
                   "retain": false}),
            &["ts"],
        );
        // Published by the page only once the broker delivered the first one to it.
        let second = monitor.next_event("message", "chromium-browser").await;
        assert_eq!(second.json["topic"], "chromium/done", "{}", second.json);
        assert_eq!(
            second.json["payload"], "received: hello from chromium",
            "{}",
            second.json
        );
    };
    let result = AssertUnwindSafe(outcome).catch_unwind().await;
    let early = chromium.try_wait().ok().flatten();
    let _ = chromium.kill().await;
    if let Err(panic) = result {
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        eprintln!(
            "the browser part failed; chromium {} on {url}; the end of its log:\n{}",
            early.map_or("was still running".to_owned(), |s| format!(
                "exited early ({s})"
            )),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        std::panic::resume_unwind(panic);
    }
}
