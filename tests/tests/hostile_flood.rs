//! End-to-end: floods and slow readers against a real `activity-broker` (issue 6), and the
//! process's resident memory over them (the broker runs in the test process).
//!
//! A SUBSCRIBE or PUBLISH flood, a client that never reads, and one that neither reads nor
//! writes must not stop the broker from serving the others; the memory tests check RSS
//! before and after, so they take [`HEAVY`] exclusively and every other test here takes it
//! shared.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};
use tests::hostile::{
    CONNACK_ACCEPTED, DISCONNECT, HEAVY, MEMORY_BOUND, PINGREQ, PINGRESP, Scene, ack_packet,
    assert_memory_bounded, connect_with_raw_id, hostile_config, malformed_headers, mib,
    publish_packet, read_n, read_to_close, rss_bytes, run_bounded, subscribe_packet,
    wait_connected_clients,
};
use tests::{Client, QUIET, RawClient, WAIT, assert_fields, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

// ---------------------------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------------------------

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
    let before = scene.broker.metrics().bytes_in.load(Ordering::Relaxed);
    let (mut reader, mut writer) = raw.stream.into_split();
    let write = tokio::spawn(async move {
        let result = writer.write_all(&flood).await;
        (writer, result)
    });
    // The bystander must keep working while the broker reads the flood: wait until it reads.
    let metrics = scene.broker.metrics().clone();
    let deadline = Instant::now() + WAIT;
    while metrics.bytes_in.load(Ordering::Relaxed) < before + 1024 {
        assert!(
            Instant::now() < deadline,
            "the broker read no flood within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    scene.assert_healthy("during the SUBSCRIBE flood").await;
    let (mut writer, written) = timeout(Duration::from_secs(30), write)
        .await
        .expect("the flood is written or refused within 30 s")
        .expect("writer task");
    // Either the broker closed the connection as a protocol error, or it still works: then a
    // PINGREQ gets its PINGRESP after the SUBACKs. The socket tells which, not a timer.
    let mut kept_working = false;
    if written.is_ok() && writer.write_all(&PINGREQ).await.is_ok() {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(_) => panic!("neither PINGRESP nor a close after the flood"),
            }
            if seen.ends_with(&PINGRESP) {
                kept_working = true;
                break;
            }
        }
    }
    if kept_working {
        println!("SUBSCRIBE flood: the connection kept working");
    } else {
        let ev = scene
            .monitor
            .wait_for("sub-flood's disconnected event", |e| {
                e.is("disconnected", "sub-flood")
            })
            .await;
        println!("SUBSCRIBE flood: closed ({written:?}) with {}", ev.json);
        assert_fields(
            &ev,
            tests::with_reason_code(
                json!({
                    "client_id": "sub-flood",
                    "reason": "protocol_error",
                    "connected_at": connected["ts"],
                }),
                &ev,
            ),
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
    assert_eq!(read_n(&mut reader, 4).await, ack_packet(0x40, 1));
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

/// A client that subscribes to `busy/#` at QoS 0 (no in-flight window holds the router back:
/// everything is pushed at its socket), then never reads again; its `connected` ts.
async fn subscribe_sluggard(scene: &mut Scene, keep_alive: u16) -> (RawClient, Value) {
    let (mut sluggard, connected) = scene.connect_raw_with("sluggard", keep_alive).await;
    sluggard
        .stream
        .write_all(&subscribe_packet(1, b"busy/#", 0))
        .await
        .expect("SUBSCRIBE");
    assert_eq!(
        read_n(&mut sluggard.stream, 5).await,
        [0x90, 0x03, 0x00, 0x01, 0x00]
    );
    (sluggard, connected["ts"].clone())
}

/// The scene of the slow-reader tests: packets up to 16 KiB, a `drinker` subscribed to
/// `busy/#` that reads everything, and the sluggard of [`subscribe_sluggard`] with
/// `keep_alive`; the sluggard's `connected` ts last.
async fn sluggard_scene(keep_alive: u16) -> (Scene, Client, RawClient, Value) {
    let mut config = hostile_config();
    config.max_packet_size = 16 * 1024;
    // Some 49,000 `message` events would fill the monitor's history, which lives in this
    // process.
    config.events.message.enabled = false;
    let mut scene = Scene::start(config).await;
    let mut drinker = Client::connect(scene.addr, "drinker").await;
    drinker.subscribe("busy/#", QoS::AtMostOnce).await;
    let (sluggard, connected_at) = subscribe_sluggard(&mut scene, keep_alive).await;
    (scene, drinker, sluggard, connected_at)
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
    // Keep-alive 0: this test is about memory and the others, not about keep-alive.
    let (mut scene, mut drinker, sluggard, _) = sluggard_scene(0).await;

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
    // Keep-alive 2 s and silent: MQTT 3.1.1 section 3.1.2.10 wants it dropped after 3 s.
    let (mut scene, mut drinker, sluggard, connected_at) = sluggard_scene(2).await;
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
        tests::with_reason_code(
            json!({
                "client_id": "sluggard",
                "reason": "keepalive_timeout",
                "connected_at": connected_at,
            }),
            &ev,
        ),
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
    let addr = scene.addr;
    let first = range.start;
    let done = run_bounded(range.len(), 50, |k| run_attack(addr, first + k)).await;
    for (id, reason) in done.into_iter().flatten() {
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
