//! End-to-end, broker mode: messages rumqttd's router skips for a slow subscriber are counted
//! (`activity_deliveries_skipped_total`) and logged with the client id.
//!
//! The router's per-filter log is made small (`[router]`: 2 segments of 1 KiB). A raw
//! subscriber with a small receive buffer subscribes and stops reading; a publisher floods the
//! filter with 1 KiB messages, far past the log and every buffer on the way (the socket
//! buffers, the front's write buffer, the router's outgoing queue), so the log wraps past the
//! subscriber's position. The router notices only when it reads for the subscriber again: when
//! the subscriber reads again, the next delivery comes from the head of the log, and the front
//! counts the offsets in between.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::hostile::{count_publishes, publish_packet, read_n, subscribe_packet};
use tests::{connect_packet, start_broker, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};

/// The captured log.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

#[tokio::test]
async fn skipped_deliveries_are_counted_and_logged_with_the_client_id() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();

    let mut config = test_config();
    config.router.segment_size = 1024;
    config.router.segment_count = 2;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let metrics = broker.metrics().clone();

    // The slow subscriber: a 4 KiB receive buffer, and it stops reading after its SUBACK.
    let socket = TcpSocket::new_v4().expect("a socket");
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

    // The flood: 1 KiB messages, 32 MiB in all, from a raw publisher.
    let mut publisher = TcpStream::connect(addr).await.expect("connect");
    publisher
        .write_all(&connect_packet("flooder", 120, 4))
        .await
        .expect("CONNECT");
    assert_eq!(read_n(&mut publisher, 4).await, [0x20, 2, 0, 0]);
    // One message delivered first: the front knows where the subscriber is in the log only
    // from a delivery (skips before the first one cannot be seen, see docs/scale.md).
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
    // The subscriber reads again: every message of the flood was either delivered to it or
    // counted as skipped.
    let total: u64 = 64 * 512;
    let log_lines = |text: &str| {
        text.lines()
            .filter(|l| l.contains("skipped messages"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut delivered: u64 = 0;
    while delivered + metrics.deliveries_skipped.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "{delivered} delivered and {} counted as skipped of {total} within 30 s; log:\n{}",
            metrics.deliveries_skipped.load(Ordering::Relaxed),
            log.text()
        );
        match timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) => panic!(
                "the broker closed the slow subscriber; log:\n{}",
                log.text()
            ),
            Ok(Ok(n)) => {
                pending.extend_from_slice(&buf[..n]);
                delivered += count_publishes(&mut pending);
            }
            Err(_) => {}
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
    let skipped = metrics.deliveries_skipped.load(Ordering::Relaxed);
    let rendered = metrics.render();
    assert!(
        rendered.contains("activity_deliveries_skipped_total"),
        "the counter is exported"
    );
    // The log line names the client and the filter.
    let deadline = Instant::now() + tests::WAIT;
    loop {
        let text = log.text();
        if text.lines().any(|l| {
            l.contains("skipped messages")
                && l.contains("client_id=slow-reader")
                && l.contains("flood/#")
        }) {
            // Logged at the 1st, 2nd, 4th, 8th ... skip of the connection, not at each.
            assert!(log_lines(&text) <= 20, "the log is rate-limited:\n{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line names the slow subscriber; log:\n{text}"
        );
        sleep(Duration::from_millis(10)).await;
    }
    eprintln!("of {total} messages: {delivered} delivered, {skipped} counted as skipped");
    assert!(skipped > 0, "the log wrapped past the subscriber");
    assert_eq!(
        delivered + skipped,
        total,
        "every message was delivered or counted, none twice"
    );
    drop(publisher);
}
