//! End-to-end: a connect storm of 10,000 clients against a real `activity-broker` (issue 6).
//!
//! The clients run in a child process (`storm-clients`, a binary of this crate) so that the
//! broker, in this process, has a whole open-file limit for its side of the connections: the
//! hard limit here is 20,000 descriptors a process and may not be raised, and one process
//! holding both ends of 10,000 connections would need more. A real `SYSTEM/#` subscriber
//! records every event; each client must get exactly one `connected` and then one
//! `disconnected`, with no event dropped anywhere.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use activity_core::event::EventKind;
use adapter_tokio::metrics::Metrics;
use rumqttc::{Publish, QoS};
use serde_json::Value;
use tests::hostile::wait_connected_clients;
use tests::{Client, QUIET, start_broker, test_config};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::{Instant, timeout};

/// Clients connected at once.
const CLIENTS: usize = 10_000;

/// Bounds each phase of the storm (connect all, close all): it only bounds a hang.
const PHASE: Duration = Duration::from_secs(180);

/// What the subscriber saw about one storm client, in order: the event kind, its `ts`, and the
/// `reason` and `connected_at` of a `disconnected`.
#[derive(Debug, Default)]
struct Timeline {
    kinds: Vec<String>,
    ts: Vec<u64>,
    reason: Option<String>,
    connected_at: Option<u64>,
}

/// The `SYSTEM/#` subscriber's record of the storm.
struct Watch {
    client: Client,
    timelines: HashMap<String, Timeline>,
    /// Storm events received so far.
    storm_events: usize,
    /// The broker's counters, for failure messages.
    metrics: Arc<Metrics>,
}

impl Watch {
    fn record(&mut self, publish: Publish) {
        let json: Value = serde_json::from_slice(&publish.payload).unwrap_or_else(|e| {
            panic!("event on {} is not JSON ({e})", publish.topic);
        });
        let Some(id) = json["client_id"]
            .as_str()
            .filter(|id| id.starts_with("storm-"))
        else {
            return;
        };
        let timeline = self.timelines.entry(id.to_owned()).or_default();
        timeline.kinds.push(publish.topic.clone());
        timeline
            .ts
            .push(json["ts"].as_u64().expect("ts is a number"));
        if publish.topic == "SYSTEM/presence/disconnected" {
            timeline.reason = json["reason"].as_str().map(str::to_owned);
            timeline.connected_at = json["connected_at"].as_u64();
        }
        self.storm_events += 1;
    }

    /// Records events until `n` storm events arrived in all; panics after [`PHASE`].
    async fn until(&mut self, n: usize, phase: &str) {
        let deadline = Instant::now() + PHASE;
        while self.storm_events < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.try_next_publish(left).await {
                Some(publish) => self.record(publish),
                None => panic!(
                    "{phase}: {} of {n} storm events after {PHASE:?}; the broker dropped {} \
                     events",
                    self.storm_events,
                    self.metrics.events_dropped.load(Ordering::Relaxed)
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_10_000_concurrent_connections() {
    let started = Instant::now();
    let limit = adapter_tokio::limits::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= u64::try_from(CLIENTS).expect("fits") + 256,
        "the open-file limit {limit} leaves no room for the broker's {CLIENTS} sockets"
    );
    let mut config = test_config();
    config.max_connections = CLIENTS + 64;
    // Every client's `connected` and `disconnected` fit in the queue with room to spare: a
    // full queue would drop events, and the test asserts that none was dropped.
    config.events.queue_capacity = 2 * CLIENTS + 1024;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut subscriber = Client::connect(addr, "system-subscriber").await;
    subscriber.subscribe("SYSTEM/#", QoS::AtLeastOnce).await;
    let mut bystander = Client::connect(addr, "bystander").await;
    bystander.subscribe("health/#", QoS::AtLeastOnce).await;
    let mut watch = Watch {
        client: subscriber,
        timelines: HashMap::new(),
        storm_events: 0,
        metrics: broker.metrics().clone(),
    };

    let mut child = Command::new(env!("CARGO_BIN_EXE_storm-clients"))
        .arg(addr.to_string())
        .arg(CLIENTS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start storm-clients");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut expect_line = async |want: String, phase: &str| {
        let line = timeout(PHASE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("storm-clients: no `{want}` within {PHASE:?} ({phase})"))
            .expect("read storm-clients' output");
        assert_eq!(line, Some(want), "storm-clients {phase} (see its stderr)");
    };

    // Connect phase: every client is connected at once, as the broker counts them.
    let start = Instant::now();
    expect_line(format!("connected {CLIENTS}"), "connecting").await;
    let connected_in = start.elapsed();
    wait_connected_clients(&broker, CLIENTS + 2).await;
    let peak_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    println!(
        "storm: {} clients connected at once (the subscriber and the bystander included) after \
         {connected_in:?}; this process holds {peak_fds} descriptors",
        broker.connected_clients()
    );
    watch.until(CLIENTS, "connected events").await;

    // Close phase: all at once, half with DISCONNECT, half by dropping the socket.
    let start = Instant::now();
    stdin
        .write_all(b"close\n")
        .await
        .expect("tell storm-clients to close");
    expect_line(format!("closed {CLIENTS}"), "closing").await;
    let status = timeout(PHASE, child.wait())
        .await
        .expect("storm-clients exits")
        .expect("storm-clients' status");
    assert!(status.success(), "storm-clients: {status}");
    watch.until(2 * CLIENTS, "disconnected events").await;
    println!(
        "storm: every client closed and reported after {:?}",
        start.elapsed()
    );
    // Nothing more may come.
    if let Some(extra) = watch.client.try_next_publish(QUIET).await {
        watch.record(extra);
        assert_eq!(watch.storm_events, 2 * CLIENTS, "an extra storm event");
    }

    assert_eq!(
        watch.timelines.len(),
        CLIENTS,
        "one timeline per storm client"
    );
    for i in 0..CLIENTS {
        let id = format!("storm-{i}");
        let timeline = &watch.timelines[&id];
        assert_eq!(
            timeline.kinds,
            ["SYSTEM/presence/connected", "SYSTEM/presence/disconnected"],
            "{id}: one connected, then one disconnected"
        );
        let reason = if i % 2 == 0 { "normal" } else { "tcp_closed" };
        assert_eq!(timeline.reason.as_deref(), Some(reason), "{id}");
        assert_eq!(
            timeline.connected_at,
            Some(timeline.ts[0]),
            "{id}: connected_at"
        );
        assert!(timeline.ts[0] <= timeline.ts[1], "{id}: ts in order");
    }
    let metrics = broker.metrics();
    assert_eq!(
        metrics.events_dropped.load(Ordering::Relaxed),
        0,
        "events dropped"
    );
    for kind in [EventKind::Connected, EventKind::Disconnected] {
        // The storm's events, and those of the subscriber and the bystander.
        assert!(
            metrics.events_emitted[kind as usize].load(Ordering::Relaxed)
                >= u64::try_from(CLIENTS).expect("fits"),
            "{kind:?} events emitted"
        );
    }
    // Every emitted event went to the MQTT sink, except the subscriber's own `connected`, from
    // before its SUBSCRIBE, which no one could receive.
    let emitted: u64 = metrics
        .events_emitted
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let unobserved = metrics.events_unobserved.load(Ordering::Relaxed);
    assert_eq!(
        metrics.events_sink_mqtt.load(Ordering::Relaxed) + unobserved,
        emitted,
        "every emitted event went to the MQTT sink or was counted as unobserved"
    );
    assert_eq!(unobserved, 1, "events no subscription received");

    bystander
        .publish("health/storm", QoS::AtLeastOnce, false, b"after the storm")
        .await;
    assert_eq!(bystander.next_publish().await.topic, "health/storm");
    wait_connected_clients(&broker, 2).await;
    println!("storm of {CLIENTS} clients: {:?} in all", started.elapsed());
}
