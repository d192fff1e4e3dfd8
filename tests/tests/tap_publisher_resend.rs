//! End-to-end, tap mode: the tap's event publisher keeps QoS 1 events until the upstream's
//! PUBACK and sends them again, with DUP, after the upstream broker restarts mid-stream.
//!
//! A client publishes through the tap steadily; a subscriber with a persistent session
//! (clean_session 0, fixed id, QoS 1) reads `SYSTEM/#` directly on Debian's mosquitto, which
//! runs with persistence on in a per-test directory (saved every second). Once the database holds
//! the subscriber's session, mid-stream mosquitto is frozen (SIGSTOP, so that events pile up on
//! the wire without PUBACKs), killed (SIGKILL: it processes nothing more) and started again on
//! the same port from its database. Every event the tap emitted arrives at the subscriber at
//! least once.
//!
//! A second case freezes the upstream (SIGSTOP) and keeps it frozen: the publisher gives the
//! silent connection up within about two keep-alives (counted) and connects again once the
//! upstream answers (SIGCONT).
//!
//! The duplicate bound: an event arrives more than once only when it was sent again, by the
//! tap (counted in `upstream_events_resent`) or by mosquitto to the subscriber (with DUP set);
//! so the extra copies are at most the tap's resends plus the deliveries marked DUP.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adapter_tokio::metrics::Metrics;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tests::ports::free_port;
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

/// Events the tap emitted so far, all kinds.
fn emitted(metrics: &Metrics) -> u64 {
    metrics
        .events_emitted
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
}

/// Waits until `cond` holds, up to `within`, polling; panics with `what` otherwise.
async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// What the subscriber received: each event's JSON, and whether mosquitto marked it DUP.
struct Received {
    rx: mpsc::UnboundedReceiver<(String, bool)>,
    copies: HashMap<String, u32>,
    total: u64,
    dup_flagged: u64,
}

impl Received {
    fn drain(&mut self) {
        while let Ok((json, dup)) = self.rx.try_recv() {
            *self.copies.entry(json).or_default() += 1;
            self.total += 1;
            if dup {
                self.dup_flagged += 1;
            }
        }
    }

    fn distinct(&mut self) -> u64 {
        self.drain();
        self.copies.len() as u64
    }
}

/// A persistent-session subscriber of `SYSTEM/#` on `port`, reconnecting after errors.
async fn subscriber(port: u16, stop: Arc<AtomicBool>) -> Received {
    let mut options = rumqttc::MqttOptions::new("resend-watcher", "127.0.0.1", port);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(30));
    // Acknowledged only once handed to the test: a delivery rumqttc read but had not yielded
    // when the connection broke is then sent again by mosquitto, not lost with rumqttc's state.
    options.set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(options, 100_000);
    client
        .subscribe("SYSTEM/#", QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    let (tx, rx) = mpsc::unbounded_channel();
    let (subacked_tx, mut subacked) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let json = String::from_utf8_lossy(&p.payload).into_owned();
                    if tx.send((json, p.dup)).is_err() {
                        return;
                    }
                    client.try_ack(&p).expect("room for the PUBACK request");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subacked_tx.send(());
                }
                Ok(_) => {}
                // mosquitto is down: rumqttc reconnects on the next poll.
                Err(_) => sleep(Duration::from_millis(20)).await,
            }
        }
    });
    tokio::time::timeout(tests::WAIT, subacked.recv())
        .await
        .expect("SUBACK of SYSTEM/# within 5 s");
    Received {
        rx,
        copies: HashMap::new(),
        total: 0,
        dup_flagged: 0,
    }
}

/// A client of the tap publishing `data/<n>` at QoS 0 every 2 ms, reconnecting after errors.
fn producer(tap: std::net::SocketAddr, stop: Arc<AtomicBool>) -> [tokio::task::JoinHandle<()>; 2] {
    let mut options = rumqttc::MqttOptions::new("resend-producer", "127.0.0.1", tap.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let stop_loop = stop.clone();
    let polling = tokio::spawn(async move {
        while !stop_loop.load(Ordering::Relaxed) {
            if eventloop.poll().await.is_err() {
                sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let publishing = tokio::spawn(async move {
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            // A full request queue (the tap refusing while the upstream is down) skips one.
            let _ = client.try_publish(format!("data/{n}"), QoS::AtMostOnce, false, "x");
            n += 1;
        }
    });
    [polling, publishing]
}

#[tokio::test]
async fn qos1_events_in_flight_are_resent_after_the_upstream_restarts() {
    let port = free_port();
    let db = tempfile::tempdir().expect("a temporary directory");
    let mosquitto = Mosquitto::start_persistent(port, db.path()).await;
    let upstream = mosquitto.addr;
    // The subscriber reads until the end, after the producer's last events.
    let stop_subscriber = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut received = subscriber(port, stop_subscriber.clone()).await;

    let tap = start_tap(tap_config(upstream)).await;
    wait_publisher(&tap).await;
    let metrics = tap.metrics().clone();
    let producing = producer(tap.local_addr(), stop.clone());

    // Mid-stream.
    wait_until(
        "200 events at the subscriber",
        Duration::from_secs(20),
        || received.distinct() >= 200,
    )
    .await;
    // The subscriber's session is in mosquitto's database (saved after its SUBACK).
    let saved_after = std::time::SystemTime::now();
    let db_file = db.path().join("mosquitto.db");
    wait_until(
        "mosquitto saved its database",
        Duration::from_secs(10),
        || {
            std::fs::metadata(&db_file)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > saved_after)
        },
    )
    .await;
    // Frozen: the tap keeps writing events that get no PUBACK.
    mosquitto.signal("STOP");
    let frozen_at = emitted(&metrics);
    wait_until(
        "100 events emitted while mosquitto is frozen",
        Duration::from_secs(20),
        || emitted(&metrics) >= frozen_at + 100,
    )
    .await;
    let before = metrics.upstream_publisher_connects.load(Ordering::Relaxed);
    mosquitto.kill().await;
    let restarted = Mosquitto::start_persistent(port, db.path()).await;
    wait_until(
        "the event publisher reconnected",
        Duration::from_secs(20),
        || metrics.upstream_publisher_connects.load(Ordering::Relaxed) > before,
    )
    .await;
    let restarted_at = emitted(&metrics);
    wait_until(
        "200 more events after the restart",
        Duration::from_secs(20),
        || emitted(&metrics) >= restarted_at + 200,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    // The producer's tasks end and its socket closes: once the tap has reported that, it emits
    // nothing more.
    for task in producing {
        task.await.expect("the producer's task");
    }
    let kind = |k: activity_core::event::EventKind| {
        metrics.events_emitted[k as usize].load(Ordering::Relaxed)
    };
    wait_until(
        "every connection through the tap ended",
        Duration::from_secs(20),
        || {
            kind(activity_core::event::EventKind::Connected)
                == kind(activity_core::event::EventKind::Disconnected)
        },
    )
    .await;
    // The producer's DISCONNECT and the subscriber's backlog: everything emitted arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = emitted(&metrics);
        let got = received.distinct();
        if got >= want {
            break;
        }
        if Instant::now() > deadline {
            let mut kinds: HashMap<String, u64> = HashMap::new();
            for json in received.copies.keys() {
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                let key = v
                    .get("topic")
                    .and_then(|t| t.as_str())
                    .map_or("presence".to_owned(), |t| {
                        t.split('/').next().unwrap_or("").to_owned()
                    });
                *kinds.entry(key).or_default() += 1;
            }
            let by_kind: Vec<u64> = metrics
                .events_emitted
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let mut seqs: Vec<u64> = Vec::new();
            let mut presence = Vec::new();
            for json in received.copies.keys() {
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                match v.get("topic").and_then(|t| t.as_str()) {
                    Some(t) => {
                        seqs.extend(t.strip_prefix("data/").and_then(|n| n.parse::<u64>().ok()))
                    }
                    None => presence.push(json.clone()),
                }
            }
            seqs.sort_unstable();
            let gaps: Vec<(u64, u64)> = seqs
                .windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .map(|w| (w[0], w[1]))
                .collect();
            eprintln!(
                "data seq gaps {gaps:?}, first {:?} last {:?}; presence {presence:#?}",
                seqs.first(),
                seqs.last()
            );
            panic!(
                "{got} distinct events at the subscriber, {want} emitted (by kind {by_kind:?}); \
                 received by topic root {kinds:?}; resent {}, dropped {}, unobserved {}, sunk {}",
                metrics.upstream_events_resent.load(Ordering::Relaxed),
                metrics.events_dropped.load(Ordering::Relaxed),
                metrics.events_unobserved.load(Ordering::Relaxed),
                metrics.events_sink_mqtt.load(Ordering::Relaxed),
            );
        }
        sleep(Duration::from_millis(10)).await;
    }
    // ... and once emitted stays put (the producer's last events came too).
    let emitted_total = emitted(&metrics);
    let distinct = received.distinct();
    assert_eq!(
        metrics.events_dropped.load(Ordering::Relaxed),
        0,
        "the queue had room for every event"
    );
    assert!(
        distinct >= emitted_total && distinct <= emitted(&metrics),
        "every event the tap emitted arrived (distinct JSON documents): {distinct} of {emitted_total}"
    );
    let resent = metrics.upstream_events_resent.load(Ordering::Relaxed);
    let extra = received.total - distinct;
    eprintln!(
        "emitted {emitted_total}, received {} ({distinct} distinct), resent by the tap {resent}, \
         delivered with DUP by mosquitto {}",
        received.total, received.dup_flagged
    );
    assert!(
        resent > 0,
        "events were in flight when mosquitto stopped, so the tap sent some again"
    );
    assert!(
        extra <= resent + received.dup_flagged,
        "{extra} extra copies, more than the tap's {resent} resends plus mosquitto's {} DUP deliveries",
        received.dup_flagged
    );
    stop_subscriber.store(true, Ordering::Relaxed);
    drop(restarted);
}

#[tokio::test]
async fn a_frozen_upstream_is_given_up_and_connected_to_again() {
    let mosquitto = Mosquitto::start().await;
    let mut config = tap_config(mosquitto.addr);
    config.upstream.publisher_keep_alive_secs = 1;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    let metrics = tap.metrics().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = producer(tap.local_addr(), stop.clone());
    wait_until("events flowing", Duration::from_secs(20), || {
        emitted(&metrics) >= 50
    })
    .await;
    // Frozen: the TCP connection stays open, nothing reads or answers on it.
    mosquitto.signal("STOP");
    wait_until(
        "the publisher giving the silent upstream up",
        Duration::from_secs(30),
        || metrics.upstream_publisher_timeouts.load(Ordering::Relaxed) >= 1,
    )
    .await;
    let before = metrics.upstream_publisher_connects.load(Ordering::Relaxed);
    mosquitto.signal("CONT");
    wait_until(
        "the publisher connected again",
        Duration::from_secs(30),
        || metrics.upstream_publisher_connects.load(Ordering::Relaxed) > before,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in producing {
        task.await.expect("the producer's task");
    }
}
