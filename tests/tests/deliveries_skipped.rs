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

use tests::hostile::{FLOOD_MESSAGES, flood_a_slow_subscriber, read_until_accounted};
use tests::{start_broker, test_config};
use tokio::time::{Instant, sleep};

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

    // The slow subscriber: a 4 KiB receive buffer, and it stops reading after its SUBACK and
    // one first delivery; then the flood, 32 MiB of 1 KiB messages from a raw publisher.
    let (mut slow, publisher) = flood_a_slow_subscriber(addr).await;
    // The subscriber reads again: every message of the flood was either delivered to it or
    // counted as skipped.
    let delivered = read_until_accounted(
        &mut slow,
        || metrics.deliveries_skipped.load(Ordering::Relaxed),
        || format!("; log:\n{}", log.text()),
    )
    .await;
    let skipped = metrics.deliveries_skipped.load(Ordering::Relaxed);
    let log_lines = |text: &str| {
        text.lines()
            .filter(|l| l.contains("skipped messages"))
            .count()
    };
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
    eprintln!("of {FLOOD_MESSAGES} messages: {delivered} delivered, {skipped} counted as skipped");
    assert!(skipped > 0, "the log wrapped past the subscriber");
    assert_eq!(
        delivered + skipped,
        FLOOD_MESSAGES,
        "every message was delivered or counted, none twice"
    );
    drop(publisher);
}
