//! Hostile HTTP clients on raw sockets: garbage, huge heads, slow and idle connections, the
//! connection limit, a stream that never reads, and 1,000 idle event streams, while MQTT
//! clients keep being served.

use std::net::SocketAddr;
use std::time::Duration;

use adapter_tokio::broker::Broker;
use adapter_tokio::config::Config;
use rumqttc::QoS;
use tests::http::{http_get, http_metric, wait_metric};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

fn with_http(mut config: Config) -> Config {
    config.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    config
}

async fn start(config: Config) -> (Broker, SocketAddr) {
    let broker = start_broker(with_http(config)).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    (broker, http)
}

/// Reads until the server closes (or `within` passes: `None`); what it sent.
async fn read_to_end(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// An MQTT round trip through the broker: a QoS 1 publish reaches a subscriber.
async fn mqtt_round_trip(broker: &Broker, tag: &str) {
    let mut sub = Client::connect(broker.local_addr(), &format!("{tag}-sub")).await;
    sub.subscribe("hostile/rt", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(broker.local_addr(), &format!("{tag}-pub")).await;
    publisher
        .publish("hostile/rt", QoS::AtLeastOnce, false, tag.as_bytes())
        .await;
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], tag.as_bytes());
    publisher.disconnect().await;
    sub.disconnect().await;
}

#[tokio::test]
async fn garbage_and_huge_heads_get_4xx_and_the_connection_ends() {
    let (broker, http) = start(test_config()).await;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "binary garbage",
            b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "a bad request line",
            b"GET\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "a 64 KiB header",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 * 1024)
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            "500 headers",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..500)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
    ];
    for (what, request, status) in cases {
        let mut stream = TcpStream::connect(http).await.expect("connect");
        // The server may answer and close before it read everything: a failed write is fine.
        let _ = stream.write_all(&request).await;
        let answer = read_to_end(&mut stream, WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: the server did not close the connection"));
        assert!(answer.starts_with(status), "{what}: {answer:?}");
    }
    let errors = http_metric(http, "activity_http_connection_errors_total").await;
    assert!(errors >= 4, "{errors} connection errors counted");
    mqtt_round_trip(&broker, "garbage").await;
    assert_eq!(http_get(http, "/health").await.status, 200);
    broker.shutdown().await;
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed_after_the_header_timeout() {
    let mut config = test_config();
    config.http.header_timeout_ms = 300;
    let (broker, http) = start(config).await;

    // Slow-loris: half a request head, then nothing.
    let mut slow = TcpStream::connect(http).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .expect("half a head");
    // An idle keep-alive connection after one request.
    let mut idle = TcpStream::connect(http).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("a request");
    let mut buf = [0u8; 1024];
    let n = timeout(WAIT, idle.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(http).await.expect("connect");

    let started = Instant::now();
    for (what, stream) in [
        ("slow", &mut slow),
        ("idle", &mut idle),
        ("silent", &mut silent),
    ] {
        let rest = read_to_end(stream, WAIT)
            .await
            .unwrap_or_else(|| panic!("the {what} connection was not closed within {WAIT:?}"));
        assert!(!rest.contains("200 OK"), "{what}: {rest:?}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
    mqtt_round_trip(&broker, "slow").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn past_the_connection_limit_a_new_connection_is_closed_and_counted() {
    let mut config = test_config();
    config.http.max_connections = 3;
    let (broker, http) = start(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(http).await.expect("connect");
        held.push(stream);
    }
    // Each held connection is served: a request on each proves the server took all three.
    for stream in &mut held {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 512];
        let n = timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let mut fourth = TcpStream::connect(http).await.expect("the kernel accepts");
    let _ = fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_to_end(&mut fourth, WAIT)
        .await
        .expect("the fourth connection is closed at once");
    assert!(answer.is_empty(), "no answer past the limit: {answer:?}");
    drop(held.pop());
    let refused = wait_metric(http, "activity_http_connections_refused_total", |n| n >= 1).await;
    assert_eq!(refused, 1);
    mqtt_round_trip(&broker, "limit").await;
    broker.shutdown().await;
}

/// Opens an event stream on a raw socket and reads its response head.
async fn raw_stream(http: SocketAddr, socket: Option<TcpSocket>) -> TcpStream {
    let mut stream = match socket {
        Some(socket) => socket.connect(http).await.expect("connect"),
        None => TcpStream::connect(http).await.expect("connect"),
    };
    stream
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("the response head in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    stream
}

#[tokio::test]
async fn a_thousand_idle_event_streams_leave_mqtt_clients_served() {
    adapter_tokio::limits::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let mut config = test_config();
    config.http.max_watchers = 1000;
    config.http.max_connections = 1100;
    let (broker, http) = start(config).await;
    let mut streams = Vec::with_capacity(1000);
    for _ in 0..1000 {
        streams.push(raw_stream(http, None).await);
    }
    assert_eq!(http_metric(http, "activity_http_event_streams").await, 1000);
    // The 1,001st is refused with 503 and counted.
    let refused = http_get(http, "/api/v1/events").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        http_metric(http, "activity_http_event_streams_refused_total").await,
        1
    );

    // MQTT meanwhile: 200 QoS 1 messages from a publisher to a subscriber, every one on time;
    // every message is an event for each of the 1,000 streams, which read nothing.
    let started = Instant::now();
    let mut sub = Client::connect(broker.local_addr(), "busy-sub").await;
    sub.subscribe("busy/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(broker.local_addr(), "busy-pub").await;
    for i in 0..200u32 {
        publisher
            .publish("busy/t", QoS::AtLeastOnce, false, &i.to_be_bytes())
            .await;
    }
    for i in 0..200u32 {
        let got = sub.next_publish().await;
        assert_eq!(&got.payload[..], &i.to_be_bytes(), "in order, none lost");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "MQTT took {:?} beside 1,000 streams",
        started.elapsed()
    );
    assert_eq!(
        broker
            .metrics()
            .events_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    publisher.disconnect().await;
    sub.disconnect().await;
    drop(streams);
    wait_metric(http, "activity_http_event_streams", |n| n == 0).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_never_reads_falls_behind_and_is_told_while_mqtt_goes_on() {
    let mut config = test_config();
    config.http.watcher_buffer = 16;
    let (broker, http) = start(config).await;
    // A small receive window: the server's writes to it stall soon.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stuck = raw_stream(http, Some(socket)).await;
    wait_metric(http, "activity_http_event_streams", |n| n == 1).await;

    // 1,500 messages of 4 KiB: each a `message` event of about 5.5 KB of JSON, 8 MB in all,
    // more than the socket buffers between the server and the stuck reader hold.
    let mut sub = Client::connect(broker.local_addr(), "flood-sub").await;
    sub.subscribe("flood/t", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(broker.local_addr(), "flood-pub").await;
    let payload = vec![b'x'; 4096];
    for _ in 0..1500 {
        publisher
            .publish("flood/t", QoS::AtMostOnce, false, &payload)
            .await;
    }
    publisher
        .publish("flood/t", QoS::AtLeastOnce, false, b"last")
        .await;
    loop {
        let got = sub.next_publish().await;
        if &got.payload[..] == b"last" {
            break;
        }
    }
    let lagged = wait_metric(http, "activity_http_event_stream_lagged_total", |n| n > 0).await;
    assert!(lagged > 0);
    // Reading now: the stream says what it skipped.
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&text).contains("events skipped") {
        let n = tokio::time::timeout_at(deadline, stuck.read(&mut buf))
            .await
            .expect("the skip note in time")
            .expect("read");
        assert!(n > 0, "the stream ended");
        text.extend_from_slice(&buf[..n]);
    }
    publisher.disconnect().await;
    sub.disconnect().await;
    broker.shutdown().await;
}
