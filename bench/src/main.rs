//! `activity-bench`: load any MQTT broker (the clients speak 3.1.1, or 3.1 / 5.0 with
//! `--protocol 3|5`) on loopback and report what it sustained.
//!
//! ```text
//! activity-bench throughput --addr 127.0.0.1:1883 --publishers 1 --subscribers 1 --qos 1 \
//!     --payload 100 --duration 5 [--system-consumer] [-- BROKER COMMAND...]
//! activity-bench storm --addr ADDR --clients 10000 [--presence] [-- BROKER COMMAND...]
//! activity-bench idle --addr ADDR --clients 10000 [-- BROKER COMMAND...]
//! activity-bench report --input raw.csv --summary summary.csv --markdown table.md --svg chart.svg
//! ```
//!
//! Each load run prints one CSV row (columns in `bench::report::COLUMNS`; `--header` prints
//! the header first) on stdout and a readable line on stderr. With a broker command after
//! `--`, the tool starts the broker as a child process, waits for it to listen on `--addr`,
//! and reports the broker's CPU time during the load (utime + stime of `/proc/PID/stat`) and
//! its peak RSS (`VmHWM`); `--pid` measures an already running broker instead. The tool raises
//! its own open-file limit to the hard limit (the child inherits it).
//!
//! The client is raw MQTT: packets are encoded and decoded with `activity_core::codec` on
//! tokio sockets, with no client library in between.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use activity_core::QoS;
use activity_core::codec::{Packet, Publish, Version};
use anyhow::{Context, bail};
use bench::child::BrokerChild;
use bench::payload;
use bench::procfs;
use bench::report::{self, COLUMNS, Row};
use bench::stats::percentile;
use bench::wire::{self, DISCONNECT, PacketReader, push_packet};
use clap::{Args, Parser, Subcommand};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at};

/// Keep-alive of the load clients, in seconds: longer than any run, so no PINGREQ is needed.
const KEEP_ALIVE: u16 = 300;

/// Most publishes written with one `write_all`.
const BATCH: usize = 64;

/// Most latency samples a subscriber keeps.
const MAX_SAMPLES: usize = 2_000_000;

/// Load any MQTT broker and report throughput, latency, connection rate or memory.
#[derive(Debug, Parser)]
#[command(name = "activity-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
enum Command {
    /// N publishers and M subscribers for a duration or a message count.
    Throughput(ThroughputArgs),
    /// C clients connect and disconnect; connections/s and presence events/s.
    Storm(StormArgs),
    /// C idle connections; broker memory per connection.
    Idle(IdleArgs),
    /// Summarize a results CSV: medians, ratios to case 1, Markdown table, SVG chart.
    Report(ReportArgs),
}

/// What every load mode shares.
#[derive(Debug, Args)]
struct Common {
    /// The broker's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: String,
    /// The scenario label written in the CSV row.
    #[arg(long, default_value = "")]
    scenario: String,
    /// The case label written in the CSV row.
    #[arg(long, default_value = "")]
    case: String,
    /// The run number written in the CSV row.
    #[arg(long, default_value_t = 1)]
    run: u32,
    /// Print the CSV header line before the row.
    #[arg(long)]
    header: bool,
    /// Measure this running broker process (instead of starting one).
    #[arg(long)]
    pid: Option<u32>,
    /// Append the started broker's stdout and stderr to this file (default: discard).
    #[arg(long)]
    broker_log: Option<String>,
    /// MQTT protocol level of every load client: 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0).
    #[arg(long, default_value_t = 4, value_parser = parse_protocol)]
    protocol: u8,
    /// The broker command to start as a child process (after `--`).
    #[arg(last = true)]
    broker: Vec<String>,
}

impl Common {
    /// The protocol version the load clients speak.
    fn version(&self) -> Version {
        // `parse_protocol` admits only levels the codec speaks.
        Version::from_level(self.protocol).unwrap_or(Version::V3_1_1)
    }
}

/// Parses `--protocol`: a level the codec speaks.
fn parse_protocol(s: &str) -> Result<u8, String> {
    let level: u8 = s.parse().map_err(|e| format!("{e}"))?;
    match Version::from_level(level) {
        Some(_) => Ok(level),
        None => Err(format!("{level} is not 3, 4 or 5")),
    }
}

/// Options of `throughput`.
#[derive(Debug, Args)]
struct ThroughputArgs {
    #[command(flatten)]
    common: Common,
    /// Publishing clients; publisher i publishes on `bench/t{i}`.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribing clients; subscriber j subscribes to `bench/t{j % publishers}`.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// QoS of publishes and subscriptions (0 or 1).
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Payload size in bytes (at least 20; from 71 bytes on it is a msgack envelope).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after each publisher sent this many messages (the duration still bounds the run).
    #[arg(long)]
    count: Option<u64>,
    /// Unacknowledged QoS 1 publishes per publisher.
    #[arg(long, default_value_t = 100)]
    inflight: usize,
    /// End-to-end flow control: publishers pause while more than this many deliveries per
    /// subscriber are sent but not yet received (0: publish open loop, as fast as the broker
    /// accepts). Keeps queues, and so latency, bounded; a pause ends after 200 ms without
    /// progress, so lost QoS 0 messages cannot stall a run.
    #[arg(long, default_value_t = 1000)]
    backlog: u64,
    /// Also run a client that subscribes to `SYSTEM/#` and counts the events.
    #[arg(long)]
    system_consumer: bool,
    /// QoS of the `SYSTEM/#` subscription.
    #[arg(long, default_value_t = 1)]
    system_qos: u8,
}

/// Options of `storm`.
#[derive(Debug, Args)]
struct StormArgs {
    #[command(flatten)]
    common: Common,
    /// Clients that connect and disconnect.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Also run a client that subscribes to `SYSTEM/presence/#` and counts the events.
    #[arg(long)]
    presence: bool,
    /// Seconds the whole storm may take.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
}

/// Options of `idle`.
#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Idle connections to hold.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to wait with every connection open before reading the broker's memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds the connecting may take.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// Connect from this many loopback source addresses, 127.0.1.1, 127.0.1.2, ... in turn
    /// (0: the system's choice): each has its own range of ephemeral ports.
    #[arg(long, default_value_t = 0)]
    sources: u8,
    /// Every idle client subscribes to this filter (QoS 0) after its CONNACK.
    #[arg(long)]
    subscribe: Option<String>,
    /// Seconds to hold every connection idle after the settle (CPU and RSS measured again).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Then publish one message on this topic and count the idle clients it reaches.
    #[arg(long)]
    broadcast: Option<String>,
    /// Also run a client that subscribes to `SYSTEM/presence/#` first and counts the
    /// `connected` and `disconnected` events of every connection (including the broadcaster).
    #[arg(long)]
    presence: bool,
}

/// Options of `report`.
#[derive(Debug, Args)]
struct ReportArgs {
    /// The results CSV (rows of every run).
    #[arg(long)]
    input: String,
    /// Where to write the summary CSV (median run of each scenario and case).
    #[arg(long)]
    summary: String,
    /// Where to write the Markdown table.
    #[arg(long)]
    markdown: String,
    /// Where to write the SVG chart of the throughput scenarios.
    #[arg(long)]
    svg: String,
    /// The chart's title.
    #[arg(long, default_value = "Delivered messages per second (median of runs)")]
    title: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Report(args) = &cli.command {
        return run_report(args);
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (common, row) = match cli.command {
        Command::Throughput(args) => {
            let row = with_broker(&args.common, |pid| runtime.block_on(throughput(&args, pid)))?;
            (args.common, row)
        }
        Command::Storm(args) => {
            let row = with_broker(&args.common, |pid| runtime.block_on(storm(&args, pid)))?;
            (args.common, row)
        }
        Command::Idle(args) => {
            let row = with_broker(&args.common, |pid| runtime.block_on(idle(&args, pid)))?;
            (args.common, row)
        }
        Command::Report(_) => unreachable!("handled above"),
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    let mut row = row;
    row.set("scenario", &common.scenario);
    row.set("case", &common.case);
    row.set("run", common.run);
    if common.header {
        println!("{}", report::header());
    }
    println!("{}", row.to_csv(&COLUMNS));
    Ok(())
}

/// Raises the soft open-file limit to the hard limit; the broker child inherits it.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => eprintln!("activity-bench: open-file limit {limit}"),
        Err(e) => eprintln!("activity-bench: cannot raise the open-file limit: {e}"),
    }
}

/// Runs `f` with the pid of the broker to measure: a started child, `--pid`, or none.
fn with_broker(
    common: &Common,
    f: impl FnOnce(Option<u32>) -> anyhow::Result<Row>,
) -> anyhow::Result<Row> {
    if common.broker.is_empty() {
        return f(common.pid);
    }
    let child = BrokerChild::start(&common.broker, &common.addr, common.broker_log.as_deref())?;
    let row = f(Some(child.pid()));
    drop(child);
    row
}

/// Broker CPU seconds and the time they were read.
struct CpuMark {
    cpu: Option<f64>,
    at: Instant,
}

impl CpuMark {
    fn now(pid: Option<u32>) -> Self {
        CpuMark {
            cpu: pid.and_then(procfs::cpu_seconds),
            at: Instant::now(),
        }
    }

    /// Writes the broker's CPU seconds since `self`, its CPU share and its peak RSS.
    fn finish(&self, pid: Option<u32>, row: &mut Row) {
        let end = CpuMark::now(pid);
        if let (Some(a), Some(b)) = (self.cpu, end.cpu) {
            let wall = end.at.duration_since(self.at).as_secs_f64();
            row.set("broker_cpu_s", format!("{:.2}", b - a));
            row.set("broker_cpu_pct", format!("{:.0}", 100.0 * (b - a) / wall));
        }
        if let Some(kib) = pid.and_then(|p| procfs::status_kib(p, "VmHWM")) {
            row.set("broker_peak_rss_kib", kib);
        }
    }
}

fn qos_of(value: u8) -> anyhow::Result<QoS> {
    match value {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => bail!("QoS {value} is not supported by the load tool (0 or 1)"),
    }
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct SubStats {
    /// Deliveries received before the end of the publishing window.
    in_window: u64,
    /// All deliveries received.
    total: u64,
    /// Latencies in µs of the deliveries in the window.
    latencies: Vec<u32>,
    /// When the last delivery arrived.
    last: Option<Instant>,
}

/// Reads deliveries until `deadline` or until `expected` arrived, acknowledging QoS 1.
async fn subscriber_loop(
    mut stream: tokio::net::TcpStream,
    mut reader: PacketReader,
    window_end: Arc<std::sync::Mutex<Option<Instant>>>,
    deadline: tokio::time::Instant,
    drain: Duration,
    expected: Option<u64>,
    flow: Arc<Flow>,
) -> anyhow::Result<SubStats> {
    let mut stats = SubStats::default();
    let mut acks = Vec::with_capacity(4096);
    let version = reader.version();
    let (mut rd, mut wr) = stream.split();
    loop {
        if expected.is_some_and(|e| stats.total >= e) {
            break;
        }
        let end = *window_end.lock().expect("no panics while held");
        // Stop `drain` after the publishing window, and at the deadline in any case.
        let limit = end.map_or(deadline, |e| deadline.min((e + drain).into()));
        let step = tokio::time::Instant::now() + Duration::from_millis(100);
        match timeout_at(step.min(limit), reader.fill(&mut rd)).await {
            Err(_) if tokio::time::Instant::now() >= limit => break,
            Err(_) => continue,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("broker closed a subscriber"),
            Ok(Err(e)) => return Err(e),
        }
        let now = Instant::now();
        let now_ns = payload::now_ns();
        let in_window = end.is_none_or(|e| now <= e);
        let mut got = 0u64;
        reader.drain(|packet| {
            if let Packet::Publish(p) = packet {
                got += 1;
                if in_window
                    && stats.latencies.len() < MAX_SAMPLES
                    && let Some(sent) = payload::read_stamp(p.payload)
                {
                    let us = now_ns.saturating_sub(sent) / 1000;
                    stats.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                if let Some(pkid) = p.pkid {
                    // A PUBACK is 4 bytes and always encodes.
                    let _ = push_packet(
                        &mut acks,
                        &Packet::PubAck(activity_core::codec::Ack::new(pkid)),
                        version,
                    );
                }
            }
        })?;
        if got > 0 {
            flow.received.fetch_add(got, Ordering::Relaxed);
            stats.total += got;
            if in_window {
                stats.in_window += got;
            }
            stats.last = Some(now);
        }
        if !acks.is_empty() {
            wr.write_all(&acks).await?;
            acks.clear();
        }
    }
    let _ = wr.write_all(&DISCONNECT).await;
    Ok(stats)
}

/// What one publisher sends.
#[derive(Debug)]
struct PublisherPlan {
    /// The topic it publishes on.
    topic: String,
    /// The QoS of its publishes.
    qos: QoS,
    /// The payload size.
    size: usize,
    /// Most unacknowledged QoS 1 publishes.
    inflight: usize,
    /// Messages to send, or unlimited until stopped.
    count: Option<u64>,
    /// Subscribers of its topic.
    fanout: u64,
}

/// Publishes according to `plan` until `stop` or its count, with at most `plan.inflight`
/// unacknowledged QoS 1 publishes and within the end-to-end `flow` limit.
async fn publisher_loop(
    stream: tokio::net::TcpStream,
    mut reader: PacketReader,
    plan: PublisherPlan,
    stop: Arc<AtomicBool>,
    flow: Arc<Flow>,
) -> anyhow::Result<u64> {
    let PublisherPlan {
        topic,
        qos,
        size,
        inflight,
        count,
        fanout,
    } = plan;
    let version = reader.version();
    let (mut rd, mut wr) = stream.into_split();
    let window = Arc::new(Semaphore::new(inflight.max(1)));
    let done = Arc::new(AtomicBool::new(false));
    let acker = {
        let window = window.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match timeout(Duration::from_millis(100), reader.fill(&mut rd)).await {
                    Err(_) => continue,
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) | Ok(Err(_)) => break,
                }
                let mut acked = 0;
                let _ = reader.drain(|packet| {
                    if matches!(packet, Packet::PubAck(_)) {
                        acked += 1;
                    }
                });
                window.add_permits(acked);
            }
        })
    };
    let mut body = payload::template(size);
    let mut out = Vec::with_capacity(BATCH * (size + 64));
    let mut sent: u64 = 0;
    let mut pkid: u16 = 0;
    let limit = count.unwrap_or(u64::MAX);
    while !stop.load(Ordering::Relaxed) && sent < limit {
        flow.wait().await;
        let mut batch = BATCH.min(usize::try_from(limit - sent).unwrap_or(BATCH));
        if qos != QoS::AtMostOnce {
            let Ok(Ok(permit)) = timeout(Duration::from_millis(100), window.acquire()).await else {
                continue;
            };
            permit.forget();
            let mut got = 1;
            while got < batch {
                match window.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            batch = got;
        }
        out.clear();
        for _ in 0..batch {
            payload::stamp(&mut body, payload::now_ns());
            let id = if qos == QoS::AtMostOnce {
                None
            } else {
                pkid = pkid.checked_add(1).unwrap_or(1);
                Some(pkid)
            };
            let publish = Packet::Publish(Publish {
                properties: activity_core::codec::Properties::EMPTY,
                dup: false,
                qos,
                retain: false,
                topic: &topic,
                pkid: id,
                payload: &body,
            });
            push_packet(&mut out, &publish, version)?;
        }
        flow.due.fetch_add(batch as u64 * fanout, Ordering::Relaxed);
        wr.write_all(&out).await?;
        sent += batch as u64;
        if qos == QoS::AtMostOnce {
            // Let the subscribers' tasks run between batches on a busy runtime.
            tokio::task::yield_now().await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = acker.await;
    let _ = wr.write_all(&DISCONNECT).await;
    Ok(sent)
}

/// End-to-end flow control shared by publishers and subscribers.
#[derive(Debug, Default)]
struct Flow {
    /// Deliveries due for the messages sent so far (messages times subscribers of their topic).
    due: AtomicU64,
    /// Deliveries received by all subscribers.
    received: AtomicU64,
    /// Most deliveries due and not yet received (0: no flow control).
    limit: u64,
}

impl Flow {
    /// Waits while the backlog is over the limit, at most 200 ms without progress.
    async fn wait(&self) {
        if self.limit == 0 {
            return;
        }
        let mut last = self.received.load(Ordering::Relaxed);
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let received = self.received.load(Ordering::Relaxed);
            if self.due.load(Ordering::Relaxed).saturating_sub(received) <= self.limit {
                return;
            }
            if received != last {
                last = received;
                since = Instant::now();
            } else if since.elapsed() > Duration::from_millis(200) {
                return;
            }
            spins += 1;
            if spins < 64 {
                tokio::task::yield_now().await;
            } else {
                sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// What the `SYSTEM/#` consumer counted.
#[derive(Debug, Default)]
struct EventCount {
    events: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Counts publishes on `filter` until `deadline`, or until `expected` arrived (or a quiet time
/// passed without any once `stop` is set); acknowledges QoS 1.
async fn event_counter(
    mut stream: tokio::net::TcpStream,
    mut reader: PacketReader,
    deadline: tokio::time::Instant,
    expected: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<EventCount> {
    let mut count = EventCount::default();
    let mut acks = Vec::with_capacity(4096);
    let version = reader.version();
    let (mut rd, mut wr) = stream.split();
    // Without an expected count (throughput) the events end when they pause this long. With
    // one, a complete run ends at the count and only a run with events missing waits the
    // longer pause: a loaded broker closing 10,000 connections can pause its events for more
    // than a second.
    let (quiet, quiet_expecting) = (Duration::from_millis(1500), Duration::from_secs(10));
    // When `stop` was first seen: the quiet time counts from there too, or a consumer whose
    // last event came long before (the `connected` events, then a hold) would stop before the
    // first `disconnected` event could arrive.
    let mut stopped: Option<Instant> = None;
    loop {
        let target = expected.load(Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            stopped.get_or_insert_with(Instant::now);
            if target > 0 && count.events >= target {
                break;
            }
        }
        let step = tokio::time::Instant::now() + Duration::from_millis(200);
        match timeout_at(step.min(deadline), reader.fill(&mut rd)).await {
            Err(_) => {
                let last = match (count.last, stopped) {
                    (Some(l), Some(s)) => Some(l.max(s)),
                    (l, s) => l.or(s),
                };
                let idle = last.map_or(Duration::MAX, |l| l.elapsed());
                let quiet = if target > 0 { quiet_expecting } else { quiet };
                if tokio::time::Instant::now() >= deadline || (stopped.is_some() && idle >= quiet) {
                    break;
                }
                continue;
            }
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("broker closed the event consumer"),
            Ok(Err(e)) => return Err(e),
        }
        let now = Instant::now();
        let mut got = 0;
        reader.drain(|packet| {
            if let Packet::Publish(p) = packet {
                got += 1;
                if let Some(pkid) = p.pkid {
                    let _ = push_packet(
                        &mut acks,
                        &Packet::PubAck(activity_core::codec::Ack::new(pkid)),
                        version,
                    );
                }
            }
        })?;
        if got > 0 {
            count.events += got;
            count.first.get_or_insert(now);
            count.last = Some(now);
        }
        if !acks.is_empty() {
            wr.write_all(&acks).await?;
            acks.clear();
        }
    }
    let _ = wr.write_all(&DISCONNECT).await;
    Ok(count)
}

async fn throughput(args: &ThroughputArgs, pid: Option<u32>) -> anyhow::Result<Row> {
    let common = &args.common;
    let qos = qos_of(args.qos)?;
    if args.publishers == 0 {
        bail!("--publishers must be at least 1");
    }
    let duration = Duration::from_secs_f64(args.duration);
    let drain = Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20) + duration + drain;
    let window_end = Arc::new(std::sync::Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));

    // The event consumer and the subscribers first, each with its SUBACK.
    let expected_events = Arc::new(AtomicU64::new(0));
    let consumer = if args.system_consumer {
        let (mut s, mut r) =
            wire::connect(&common.addr, "bench-system", KEEP_ALIVE, common.version()).await?;
        wire::subscribe(&mut s, &mut r, "SYSTEM/#", qos_of(args.system_qos)?).await?;
        Some(tokio::spawn(event_counter(
            s,
            r,
            deadline,
            expected_events.clone(),
            stop.clone(),
        )))
    } else {
        None
    };
    let expected_per_sub: Vec<Option<u64>> = (0..args.subscribers)
        .map(|j| {
            let pubs_on_topic = (0..args.publishers)
                .filter(|i| i % args.publishers == j % args.publishers)
                .count() as u64;
            args.count.map(|c| c * pubs_on_topic)
        })
        .collect();
    let flow = Arc::new(Flow {
        limit: args.backlog * args.subscribers as u64,
        ..Flow::default()
    });
    let mut subscribers = JoinSet::new();
    for (j, expected) in expected_per_sub.iter().enumerate() {
        let (mut s, mut r) = wire::connect(
            &common.addr,
            &format!("bench-sub-{j}"),
            KEEP_ALIVE,
            common.version(),
        )
        .await
        .with_context(|| format!("subscriber {j}"))?;
        let topic = format!("bench/t{}", j % args.publishers);
        wire::subscribe(&mut s, &mut r, &topic, qos).await?;
        subscribers.spawn(subscriber_loop(
            s,
            r,
            window_end.clone(),
            deadline,
            drain,
            *expected,
            flow.clone(),
        ));
    }
    let mut publisher_conns = Vec::new();
    for i in 0..args.publishers {
        let conn = wire::connect(
            &common.addr,
            &format!("bench-pub-{i}"),
            KEEP_ALIVE,
            common.version(),
        )
        .await
        .with_context(|| format!("publisher {i}"))?;
        publisher_conns.push(conn);
    }
    // Let the router settle the subscriptions.
    sleep(Duration::from_millis(200)).await;

    let cpu = CpuMark::now(pid);
    let start = Instant::now();
    *window_end.lock().expect("no panics while held") = Some(start + duration);
    let mut publishers = JoinSet::new();
    for (i, (s, r)) in publisher_conns.into_iter().enumerate() {
        let plan = PublisherPlan {
            topic: format!("bench/t{i}"),
            qos,
            size: args.payload,
            inflight: args.inflight,
            count: args.count,
            fanout: (0..args.subscribers)
                .filter(|j| j % args.publishers == i)
                .count() as u64,
        };
        publishers.spawn(publisher_loop(s, r, plan, stop.clone(), flow.clone()));
    }
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut sent = 0;
    while let Some(result) = publishers.join_next().await {
        sent += result??;
    }
    stopper.abort();
    stop.store(true, Ordering::Relaxed);
    let publish_time = start.elapsed();
    let mut delivered_in_window = 0;
    let mut delivered = 0;
    let mut latencies = Vec::new();
    let mut last = start;
    // Subscribers stop by themselves `drain` after the window (or at the deadline).
    let drain_deadline = tokio::time::Instant::now() + drain + Duration::from_secs(1);
    while let Ok(Some(result)) =
        timeout_at(drain_deadline.min(deadline), subscribers.join_next()).await
    {
        let stats = result??;
        delivered_in_window += stats.in_window;
        delivered += stats.total;
        latencies.extend(stats.latencies);
        if let Some(l) = stats.last {
            last = last.max(l);
        }
    }
    subscribers.abort_all();
    let mut row = Row::default();
    cpu.finish(pid, &mut row);
    let msgs_per_s = if args.count.is_some() {
        delivered as f64 / last.duration_since(start).as_secs_f64().max(1e-9)
    } else {
        delivered_in_window as f64 / duration.as_secs_f64()
    };
    latencies.sort_unstable();
    row.set("msgs_per_s", format!("{msgs_per_s:.0}"));
    row.set("delivered", delivered);
    if let Some(p50) = percentile(&latencies, 50.0) {
        row.set("p50_us", p50);
    }
    if let Some(p99) = percentile(&latencies, 99.0) {
        row.set("p99_us", p99);
    }
    row.set("duration_s", format!("{:.2}", publish_time.as_secs_f64()));
    if let Some(load) = procfs::loadavg1() {
        row.set("loadavg1", load);
    }
    let mut event_note = String::new();
    if let Some(consumer) = consumer {
        // Stop once the event flow goes quiet.
        expected_events.store(u64::MAX, Ordering::Relaxed);
        let count = consumer.await??;
        let span = match (count.first, count.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        row.set("system_events", count.events);
        row.set(
            "system_events_per_s",
            format!("{:.0}", count.events as f64 / span),
        );
        event_note = format!(
            ", {} SYSTEM events ({:.0}/s)",
            count.events,
            count.events as f64 / span
        );
    }
    eprintln!(
        "{} {}: sent {sent}, delivered {delivered} ({delivered_in_window} in window): {msgs_per_s:.0} msg/s, \
         p50 {} us, p99 {} us{event_note}, broker CPU {}%, peak RSS {} KiB",
        common.scenario,
        common.case,
        row.get("p50_us"),
        row.get("p99_us"),
        row.get("broker_cpu_pct"),
        row.get("broker_peak_rss_kib"),
    );
    Ok(row)
}

/// Connects `clients` clients, at most `concurrency` at once, handing each stream to `f`.
/// Returns how many connected and how many failed (the first error is printed).
#[allow(clippy::too_many_arguments)]
async fn connect_many<F, Fut>(
    addr: &str,
    sources: &[IpAddr],
    version: Version,
    prefix: &str,
    clients: usize,
    concurrency: usize,
    deadline: tokio::time::Instant,
    f: F,
) -> (u64, u64)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut tally = Tally::default();
    for i in 0..clients {
        let Ok(Ok(permit)) = timeout_at(deadline, gate.clone().acquire_owned()).await else {
            break;
        };
        let addr = addr.to_owned();
        let id = format!("{prefix}-{i}");
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let f = f.clone();
        tasks.spawn(async move {
            let connect = wire::connect_from(&addr, source, &id, KEEP_ALIVE, version);
            let result = timeout_at(deadline, connect).await;
            let outcome = match result {
                Ok(Ok((stream, _))) => {
                    f(stream).await;
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("timed out".to_owned()),
            };
            drop(permit);
            outcome
        });
        // Reap finished tasks as we go so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            tally.record(done);
        }
    }
    while let Ok(Some(done)) = timeout_at(deadline, tasks.join_next()).await {
        tally.record(done);
    }
    tasks.abort_all();
    if let Some(e) = &tally.first_error {
        eprintln!("activity-bench: first connection error: {e}");
    }
    (tally.ok, tally.failed + tasks.len() as u64)
}

/// Connection outcomes.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, done: Result<Result<(), String>, tokio::task::JoinError>) {
        match done {
            Ok(Ok(())) => self.ok += 1,
            Ok(Err(e)) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

async fn storm(args: &StormArgs, pid: Option<u32>) -> anyhow::Result<Row> {
    let common = &args.common;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(0));
    let presence = if args.presence {
        let (mut s, mut r) =
            wire::connect(&common.addr, "bench-presence", KEEP_ALIVE, common.version()).await?;
        wire::subscribe(&mut s, &mut r, "SYSTEM/presence/#", QoS::AtMostOnce).await?;
        // Bounded: the storm's own deadline plus time for the last events.
        let events_deadline = deadline + Duration::from_secs(10);
        Some(tokio::spawn(event_counter(
            s,
            r,
            events_deadline,
            expected.clone(),
            stop.clone(),
        )))
    } else {
        None
    };
    sleep(Duration::from_millis(200)).await;
    let cpu = CpuMark::now(pid);
    let start = Instant::now();
    let (ok, failed) = connect_many(
        &common.addr,
        &[],
        common.version(),
        "storm",
        args.clients,
        args.concurrency,
        deadline,
        |mut stream: tokio::net::TcpStream| async move {
            let _ = stream.write_all(&DISCONNECT).await;
            let _ = stream.shutdown().await;
        },
    )
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let conns_per_s = ok as f64 / elapsed.max(1e-9);
    let mut row = Row::default();
    row.set("conns_per_s", format!("{conns_per_s:.0}"));
    row.set("clients_ok", ok);
    row.set("errors", failed);
    row.set("duration_s", format!("{elapsed:.2}"));
    let mut note = String::new();
    if let Some(presence) = presence {
        // One `connected` and one `disconnected` per client.
        expected.store(2 * ok, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let count = presence.await??;
        let span = count
            .last
            .map_or(1.0, |l| l.duration_since(start).as_secs_f64().max(1e-3));
        let rate = count.events as f64 / span;
        row.set("presence_events", count.events);
        row.set("presence_per_s", format!("{rate:.0}"));
        note = format!(
            ", {} presence events of {} expected ({rate:.0}/s)",
            count.events,
            2 * ok
        );
    }
    cpu.finish(pid, &mut row);
    if let Some(load) = procfs::loadavg1() {
        row.set("loadavg1", load);
    }
    eprintln!(
        "{} {}: {ok} clients connected and disconnected, {failed} failed, in {elapsed:.2} s: \
         {conns_per_s:.0} conn/s{note}, broker CPU {}%",
        common.scenario,
        common.case,
        row.get("broker_cpu_pct")
    );
    Ok(row)
}

async fn idle(args: &IdleArgs, pid: Option<u32>) -> anyhow::Result<Row> {
    let common = &args.common;
    let Some(pid) = pid else {
        bail!("idle needs the broker's pid: give --pid or a broker command after --");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(0));
    let presence = if args.presence {
        let (mut s, mut r) =
            wire::connect(&common.addr, "bench-presence", KEEP_ALIVE, common.version()).await?;
        wire::subscribe(&mut s, &mut r, "SYSTEM/presence/#", QoS::AtMostOnce).await?;
        // Bounded: the connecting, the hold and the broadcast, plus time for the last events.
        let events_deadline =
            deadline + Duration::from_secs_f64(args.settle + args.hold) + Duration::from_secs(300);
        Some(tokio::spawn(event_counter(
            s,
            r,
            events_deadline,
            expected.clone(),
            stop.clone(),
        )))
    } else {
        None
    };
    sleep(Duration::from_millis(300)).await;
    let before = procfs::status_kib(pid, "VmRSS").context("cannot read the broker's VmRSS")?;
    let held = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.clients)));
    let sources: Vec<IpAddr> = (1..=args.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)))
        .collect();
    let cpu = CpuMark::now(Some(pid));
    let start = Instant::now();
    let (ok, failed) = {
        let held = held.clone();
        let filter = args.subscribe.clone().map(Arc::new);
        let version = common.version();
        connect_many(
            &common.addr,
            &sources,
            version,
            "idle",
            args.clients,
            args.concurrency,
            deadline,
            move |mut stream: tokio::net::TcpStream| {
                let held = held.clone();
                let filter = filter.clone();
                async move {
                    if let Some(filter) = filter {
                        let mut reader = PacketReader::new(version);
                        if let Err(e) =
                            wire::subscribe(&mut stream, &mut reader, &filter, QoS::AtMostOnce)
                                .await
                        {
                            eprintln!("activity-bench: an idle client's subscription: {e:#}");
                            return;
                        }
                    }
                    held.lock().expect("no panics while held").push(stream);
                }
            },
        )
        .await
    };
    let connect_time = start.elapsed().as_secs_f64();
    let mut connect_cpu = Row::default();
    cpu.finish(Some(pid), &mut connect_cpu);
    let subscribed = held.lock().expect("no panics while held").len();
    sleep(Duration::from_secs_f64(args.settle)).await;
    let after = procfs::status_kib(pid, "VmRSS").context("cannot read the broker's VmRSS")?;
    let delta = after.saturating_sub(before);
    let per_conn = (delta * 1024).checked_div(ok).unwrap_or(0);
    let mut row = Row::default();
    row.set("clients_ok", ok);
    row.set("errors", failed);
    row.set("idle_rss_delta_kib", delta);
    row.set("idle_rss_kib", after);
    row.set("bytes_per_conn", per_conn);
    row.set("duration_s", format!("{connect_time:.2}"));
    row.set(
        "conns_per_s",
        format!("{:.0}", ok as f64 / connect_time.max(1e-9)),
    );
    row.set("broker_cpu_s", connect_cpu.get("broker_cpu_s"));
    row.set("broker_cpu_pct", connect_cpu.get("broker_cpu_pct"));
    if let Some(kib) = procfs::status_kib(pid, "VmHWM") {
        row.set("broker_peak_rss_kib", kib);
    }
    if let Some(load) = procfs::loadavg1() {
        row.set("loadavg1", load);
    }
    eprintln!(
        "{} {}: {ok} idle connections ({failed} failed, {subscribed} held) in {connect_time:.2} \
         s ({:.0} conn/s, broker CPU {} s = {}% while connecting); broker RSS {before} KiB \
         before, {after} KiB with them: {per_conn} bytes per connection ({} bytes/conn \
         counting the whole RSS)",
        common.scenario,
        common.case,
        ok as f64 / connect_time.max(1e-9),
        connect_cpu.get("broker_cpu_s"),
        connect_cpu.get("broker_cpu_pct"),
        after * 1024 / ok.max(1)
    );
    if args.hold > 0.0 {
        let cpu = CpuMark::now(Some(pid));
        sleep(Duration::from_secs_f64(args.hold)).await;
        let mut hold = Row::default();
        cpu.finish(Some(pid), &mut hold);
        let rss = procfs::status_kib(pid, "VmRSS").unwrap_or(0);
        eprintln!(
            "{} {}: held {subscribed} idle connections for {:.0} s: broker CPU {} s ({}%), \
             RSS {rss} KiB",
            common.scenario,
            common.case,
            args.hold,
            hold.get("broker_cpu_s"),
            hold.get("broker_cpu_pct")
        );
    }
    let streams = std::mem::take(&mut *held.lock().expect("no panics while held"));
    let mut broadcaster = None;
    let streams = match &args.broadcast {
        None => streams,
        Some(topic) => {
            let (stream, (count, back), elapsed, cpu) =
                broadcast(&common.addr, common.version(), topic, streams, pid).await?;
            eprintln!(
                "{} {}: broadcast on {topic}: {count} of {subscribed} idle clients got it within \
                 {elapsed:.2} s (broker CPU {} s)",
                common.scenario,
                common.case,
                cpu.get("broker_cpu_s")
            );
            broadcaster = Some(stream);
            back
        }
    };
    drop(streams);
    drop(broadcaster);
    if let Some(presence) = presence {
        // One `connected` and one `disconnected` per client, the broadcaster's included.
        let clients = ok + u64::from(args.broadcast.is_some());
        expected.store(2 * clients, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let count = presence.await??;
        eprintln!(
            "{} {}: {} presence events of {} expected (connected and disconnected of {clients} \
             clients)",
            common.scenario,
            common.case,
            count.events,
            2 * clients
        );
        row.set("presence_events", count.events);
    }
    Ok(row)
}

/// Publishes one QoS 0 message on `topic` from a new client and reads every stream of
/// `streams` (idle clients subscribed to it) until its delivery, each within 120 s. Returns
/// the publisher's stream, (deliveries, the streams), the seconds until the last delivery, and
/// the broker's CPU meanwhile.
async fn broadcast(
    addr: &str,
    version: Version,
    topic: &str,
    streams: Vec<tokio::net::TcpStream>,
    pid: u32,
) -> anyhow::Result<(
    tokio::net::TcpStream,
    (u64, Vec<tokio::net::TcpStream>),
    f64,
    Row,
)> {
    let (mut publisher, _) = wire::connect(addr, "idle-broadcaster", KEEP_ALIVE, version).await?;
    let mut readers = JoinSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let cpu = CpuMark::now(Some(pid));
    let start = Instant::now();
    let mut out = Vec::new();
    push_packet(
        &mut out,
        &Packet::Publish(Publish {
            properties: activity_core::codec::Properties::EMPTY,
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            pkid: None,
            payload: b"broadcast",
        }),
        version,
    )?;
    for mut stream in streams {
        readers.spawn(async move {
            let mut reader = PacketReader::new(version);
            let got = timeout_at(
                deadline,
                reader.next(&mut stream, |p| matches!(p, Packet::Publish(_))),
            )
            .await;
            (matches!(got, Ok(Ok(true))), stream)
        });
    }
    publisher.write_all(&out).await?;
    let mut count = 0;
    let mut back = Vec::new();
    let mut last = 0.0;
    while let Some(done) = readers.join_next().await {
        let (got, stream) = done?;
        if got {
            count += 1;
            last = start.elapsed().as_secs_f64();
        }
        back.push(stream);
    }
    let mut row = Row::default();
    cpu.finish(Some(pid), &mut row);
    Ok((publisher, (count, back), last, row))
}

fn run_report(args: &ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input))?;
    let rows = report::parse_csv(&text)?;
    let summaries = report::summarize(&rows);
    let columns = report::summary_columns();
    let mut csv = columns.join(",") + "\n";
    for s in &summaries {
        csv += &(s.row.to_csv(&columns) + "\n");
    }
    std::fs::write(&args.summary, csv)?;
    std::fs::write(&args.markdown, report::markdown(&summaries))?;
    std::fs::write(&args.svg, report::svg_chart(&summaries, &args.title))?;
    eprintln!(
        "activity-bench: {} runs summarized into {} lines: {}, {}, {}",
        rows.len(),
        summaries.len(),
        args.summary,
        args.markdown,
        args.svg
    );
    Ok(())
}
