//! Hostile, broker mode: the memory of rumqttd's logs in all is bounded by
//! `[router] max_log_memory`.
//!
//! The router keeps one log per filter ever subscribed and bounds each on its own; a client
//! that subscribes many filters and never reads, while others flood them, would make the router
//! hold one full log per filter. With `max_log_memory` set, a subscription to a filter past
//! the number of logs that fit is refused (SUBACK 0x80, MQTT 5: 0x97), counted and logged. The
//! test floods every filter the hog asked for with the smallest messages (the most entries per
//! log, which rumqttd counts least) and checks that the process's RSS (the broker runs in it)
//! grows by less than the bound plus [`BASELINE`], while a probe client's publish -> delivery
//! round trip keeps working.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tests::hostile::{mib, packet, publish_packet, read_n, rss_bytes};
use tests::{connect_packet, start_broker, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

/// The bound on the router's logs in this test.
const MAX_LOG_MEMORY: u64 = 8 * 1024 * 1024;

/// What else the process may grow by during the flood: the connections' buffers (the hog's
/// write buffer filled up to the front's limit), the flood in flight, the allocator's caches.
/// Measured growth with the bound is a few MiB; without it the same flood holds one full log
/// per filter the hog asked for (far above the bound plus this, see the assertion message).
const BASELINE: u64 = 16 * 1024 * 1024;

/// Filters the hog asks for.
const HOG_FILTERS: usize = 240;

/// Filters in one SUBSCRIBE of the hog (its SUBACK fits a one-byte remaining length).
const PER_SUBSCRIBE: usize = 120;

/// Messages published to each of the hog's filters: past what the two segments of a log hold
/// of the smallest messages here (4,096 / 12 bytes counted each, twice), so every log wraps.
const MESSAGES_PER_FILTER: usize = 1_000;

/// A SUBSCRIBE of `filters` at QoS 0 (`v5`: with an empty property block).
fn subscribe(pkid: u16, filters: &[String], v5: bool) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for filter in filters {
        body.extend_from_slice(&(u16::try_from(filter.len()).expect("short")).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(0);
    }
    packet(0x82, &body)
}

/// Connects `client_id` at protocol `level` and reads the CONNACK (accepted).
async fn connect(addr: std::net::SocketAddr, client_id: &str, level: u8) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&connect_packet(client_id, 120, level))
        .await
        .expect("CONNECT");
    let head = read_n(&mut stream, 2).await;
    let rest = read_n(&mut stream, usize::from(head[1])).await;
    assert_eq!(head[0], 0x20, "{client_id}: a CONNACK");
    assert_eq!(rest[1], 0, "{client_id}: accepted");
    stream
}

/// Reads one SUBACK (remaining length below 128) and returns its codes (after the property
/// block with `v5`).
async fn suback(stream: &mut TcpStream, v5: bool) -> Vec<u8> {
    let head = read_n(stream, 2).await;
    assert_eq!(head[0], 0x90, "a SUBACK");
    let body = read_n(stream, usize::from(head[1])).await;
    let skip = if v5 { 3 + usize::from(body[2]) } else { 2 };
    body[skip..].to_vec()
}

/// How long one probe round trip may take: the router works through the flood ahead of it
/// (a debug build, on a loaded machine).
const ROUND_TRIP: Duration = Duration::from_secs(30);

/// The probe's round trip: publishes `payload` on `probe/echo` from `from` and reads the
/// delivery on `probe` (subscribed to it), skipping nothing else (it holds only that filter).
async fn round_trip(from: &mut TcpStream, probe: &mut TcpStream, payload: &[u8]) -> Duration {
    let start = Instant::now();
    from.write_all(&publish_packet(b"probe/echo", 0, 0, payload))
        .await
        .expect("the probe's publish");
    let expected = publish_packet(b"probe/echo", 0, 0, payload);
    let mut got = vec![0u8; expected.len()];
    timeout(ROUND_TRIP, probe.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the probe's delivery of {:?} within {ROUND_TRIP:?}",
                String::from_utf8_lossy(payload)
            )
        })
        .expect("delivery bytes");
    assert_eq!(got, expected, "the probe's own message");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_filters_flooded_and_never_read_stay_within_max_log_memory() {
    let mut config = test_config();
    config.router.segment_size = 4096;
    config.router.segment_count = 2;
    config.max_packet_size = 2048;
    config.router.max_log_memory = Some(MAX_LOG_MEMORY);
    let per_filter = config.router.filter_log_bound(config.max_packet_size);
    let logs = config
        .router
        .max_filters(config.max_packet_size)
        .expect("the bound is set");
    assert!(
        (2..HOG_FILTERS / 4).contains(&logs),
        "{logs} logs of at most {per_filter} bytes fit"
    );
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let metrics = broker.metrics().clone();

    // The probe takes one log.
    let mut probe = connect(addr, "probe", 4).await;
    probe
        .write_all(&subscribe(1, &["probe/echo".to_owned()], false))
        .await
        .expect("SUBSCRIBE");
    assert_eq!(suback(&mut probe, false).await, [0]);
    let mut prober = connect(addr, "prober", 4).await;
    let before_rtt = round_trip(&mut prober, &mut probe, b"before").await;

    // The hog: a small receive buffer, and it reads nothing after its SUBACKs.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut hog = socket.connect(addr).await.expect("connect");
    hog.write_all(&connect_packet("hog", 120, 4))
        .await
        .expect("CONNECT");
    assert_eq!(read_n(&mut hog, 4).await, [0x20, 2, 0, 0]);
    let rss_before = rss_bytes();
    let filters: Vec<String> = (0..HOG_FILTERS).map(|i| format!("hog/{i}")).collect();
    let mut codes = Vec::new();
    for (n, chunk) in filters.chunks(PER_SUBSCRIBE).enumerate() {
        let pkid = u16::try_from(n + 1).expect("few");
        hog.write_all(&subscribe(pkid, chunk, false))
            .await
            .expect("SUBSCRIBE");
        codes.extend(suback(&mut hog, false).await);
    }
    let granted = codes.iter().filter(|&&c| c == 0).count();
    let refused = codes.iter().filter(|&&c| c == 0x80).count();
    assert_eq!(
        (granted, refused),
        (logs - 1, HOG_FILTERS - (logs - 1)),
        "the filters that fit (the probe has one) are granted, the rest get 0x80: {codes:?}"
    );
    assert_eq!(
        metrics.router_filters_refused.load(Ordering::Relaxed),
        u64::try_from(refused).expect("few")
    );
    assert_eq!(
        metrics.router_logs.load(Ordering::Relaxed),
        u64::try_from(logs).expect("few")
    );
    // An MQTT 5 client is told why: 0x97 quota exceeded. A filter the router has a log for
    // is still granted.
    let mut v5 = connect(addr, "hog5", 5).await;
    v5.write_all(&subscribe(
        1,
        &["hog/0".to_owned(), "v5/new".to_owned()],
        true,
    ))
    .await
    .expect("SUBSCRIBE");
    assert_eq!(suback(&mut v5, true).await, [0x00, 0x97]);
    drop(v5);

    // The flood: the smallest messages, round robin over every filter the hog asked for.
    let mut flooder = connect(addr, "flooder", 4).await;
    let batch: Vec<u8> = filters
        .iter()
        .flat_map(|f| publish_packet(f.as_bytes(), 0, 0, b""))
        .collect();
    let mut worst = before_rtt;
    for round in 0..MESSAGES_PER_FILTER {
        flooder.write_all(&batch).await.expect("flood");
        // Others are served meanwhile: the probe's round trip, every 100 rounds.
        if round % 100 == 99 {
            let rtt = round_trip(&mut prober, &mut probe, b"during").await;
            eprintln!("round {round}: probe round trip {rtt:?}");
            worst = worst.max(rtt);
        }
    }
    // The router has taken the whole flood once it delivers a message the flooder published
    // after it (one link, in order).
    let after_flood = round_trip(&mut flooder, &mut probe, b"after").await;
    let rss_after = rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    let unbounded = per_filter * u64::try_from(HOG_FILTERS).expect("few");
    eprintln!(
        "{logs} logs of at most {:.2} MiB each; hog granted {granted}, refused {refused}; RSS \
         {:.1} -> {:.1} MiB (+{:.1} MiB, bound {:.0} MiB + {:.0} MiB baseline); probe round \
         trip {before_rtt:?} before, worst {worst:?} during, {after_flood:?} after",
        mib(per_filter),
        mib(rss_before),
        mib(rss_after),
        mib(growth),
        mib(MAX_LOG_MEMORY),
        mib(BASELINE),
    );
    assert!(
        growth < MAX_LOG_MEMORY + BASELINE,
        "RSS grew by {:.1} MiB, over the bound {:.0} MiB + {:.0} MiB (without the bound the \
         {HOG_FILTERS} logs could hold {:.0} MiB)",
        mib(growth),
        mib(MAX_LOG_MEMORY),
        mib(BASELINE),
        mib(unbounded)
    );
    // The hog is still connected (it is slow, not gone), and the probe is still served.
    round_trip(&mut prober, &mut probe, b"end").await;
    assert!(
        broker.connected_clients() >= 4,
        "hog, probe, prober, flooder"
    );
    drop(hog);
}
