//! The embassy gateway's uplink at QoS 1 against a real `activity-broker`, over a TAP device in
//! a private network namespace (see `tests::netns`): the uplink's connection is cut while
//! messages wait for their PUBACK, then the broker is stopped and started again while devices
//! go on. Every message produced while the uplink queue had room reaches the consumer at least
//! once; the duplicates are the resends, counted.
//!
//! Between the gateway and the broker sits a byte-for-byte TCP relay of this test's ([`Gate`]),
//! so that the test can lose the broker's PUBACKs and cut the uplink's connection with the
//! broker still up, and hold the gateway off the restarted broker until the consumer there has
//! subscribed (else what the gateway resends could reach the broker before anyone listens).
//!
//! Needs root and `/dev/net/tun`; skipped otherwise unless `REQUIRE_NETNS=1`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adapter_embassy::{Config, DropPolicy, GatewayStats, UplinkConfig};
use adapter_tokio::config::Config as BrokerConfig;
use embassy_net::{IpAddress, IpEndpoint};
use rumqttc::QoS;
use serde_json::Value;
use tests::netns::{GATEWAY_ADDR, KERNEL_IP, TapGateway, in_private_netns};
use tests::ports::free_port;
use tests::{Client, mosquitto_pub, start_broker, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// The uplink's prefix upstream.
const PREFIX: &str = "edge";
/// The uplink state topic upstream (`online` / `offline`), not an event.
const STATE: &str = "edge/gateway/gw-qos1/uplink";
/// Uplink messages per device: `connected`, the forwarded PUBLISH, `message`, `disconnected`.
const PER_DEVICE: usize = 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// A TCP relay on the kernel side of `tap0` to a broker on loopback: while open it relays each
/// connection byte for byte; [`Gate::cut`] ends every relayed connection at once (both sides
/// see it closed), and while shut a new connection is closed as soon as it is accepted. While
/// `stalled`, what the broker sends (its PUBACKs) is read and thrown away: the messages reach
/// the broker, their acknowledgements never reach the gateway.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

/// Copies `from` to `to` until either side closes; drops the bytes while `stall` is set.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    stall: Option<&AtomicBool>,
) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stall.is_some_and(|s| s.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Gate {
    async fn start(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind((KERNEL_IP, free_port()))
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let open = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let (is_open, cut) = (Arc::clone(&open), cuts.clone());
        let stall = Arc::clone(&stalled);
        tokio::spawn(async move {
            loop {
                let Ok((mut downstream, _)) = listener.accept().await else {
                    return;
                };
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cut = cut.subscribe();
                let stall = Arc::clone(&stall);
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (down_rx, down_tx) = downstream.split();
                    let (up_rx, up_tx) = up.split();
                    tokio::select! {
                        () = pump(down_rx, up_tx, None) => {}
                        () = pump(up_rx, down_tx, Some(&stall)) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Gate {
            addr,
            open,
            stalled,
            cuts,
        }
    }

    /// Throws away what the broker sends (see [`Gate`]), or stops doing so.
    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }

    /// Ends every relayed connection now (a cable pulled mid-stream).
    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    fn shut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut();
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// What a consumer of `edge/#` received, by message: how many times each arrived, and the
/// order of first arrival.
#[derive(Default)]
struct Received {
    count: HashMap<String, usize>,
    order: Vec<String>,
}

impl Received {
    /// A key for one uplink message: its topic and the device it is about.
    fn key(topic: &str, payload: &[u8]) -> Option<String> {
        if topic == STATE {
            return None;
        }
        let local = topic
            .strip_prefix("edge/")
            .unwrap_or_else(|| panic!("a topic outside the prefix: {topic}"));
        if local.starts_with("sensors/") {
            return Some(local.to_owned());
        }
        let json: Value = serde_json::from_slice(payload).expect("event JSON");
        let device = json["client_id"]
            .as_str()
            .or(json["pub_client_id"].as_str())
            .expect("a device id in the event");
        Some(format!("{local} {device}"))
    }

    fn add(&mut self, topic: &str, payload: &[u8]) {
        let Some(key) = Received::key(topic, payload) else {
            return;
        };
        let n = self.count.entry(key.clone()).or_default();
        if *n == 0 {
            self.order.push(key);
        }
        *n += 1;
    }

    fn has(&self, key: &str) -> bool {
        self.count.contains_key(key)
    }

    fn duplicates(&self) -> usize {
        self.count.values().map(|n| n - 1).sum()
    }
}

/// The uplink messages device `n` causes.
fn expected(n: usize) -> [String; PER_DEVICE] {
    let id = format!("dev-{n}");
    [
        format!("SYSTEM/presence/connected {id}"),
        format!("sensors/{n}"),
        format!("SYSTEM/message {id}"),
        format!("SYSTEM/presence/disconnected {id}"),
    ]
}

/// One device on the gateway: connects, publishes `sensors/<n>` at QoS 1, disconnects.
async fn device(n: usize) {
    let (id, topic, value) = (format!("dev-{n}"), format!("sensors/{n}"), n.to_string());
    let out = mosquitto_pub(
        GATEWAY_ADDR,
        &["-i", &id, "-t", &topic, "-q", "1", "-m", &value],
    )
    .await;
    assert!(
        out.status.success(),
        "mosquitto_pub {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads the consumer into `received` until `done` holds for it and the gateway's counters
/// (at most 60 s).
async fn receive_until(
    consumer: &mut Client,
    received: &mut Received,
    gateway: &TapGateway,
    what: &str,
    done: impl Fn(&Received, &GatewayStats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(received, &gateway.stats()) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s; received {:?}; {:?}",
            received.count,
            gateway.stats()
        );
        // In slices: the counters change without a message too.
        if let Some(publish) = consumer.try_next_publish(Duration::from_millis(100)).await {
            received.add(&publish.topic, &publish.payload);
        }
    }
}

/// How many of `keys` `received` has.
fn arrived(received: &Received, keys: &[String]) -> usize {
    keys.iter().filter(|k| received.has(k)).count()
}

/// Counts as `usize`.
fn count(n: u32) -> usize {
    usize::try_from(n).expect("a u32 fits a usize here")
}

async fn consumer_on(broker: SocketAddr, id: &str) -> Client {
    let mut consumer = Client::connect(broker, id).await;
    consumer.subscribe("edge/#", QoS::AtLeastOnce).await;
    consumer
}

#[test]
fn qos1_uplink_delivers_across_a_cut_and_a_broker_restart() {
    in_private_netns(
        "qos1_uplink_delivers_across_a_cut_and_a_broker_restart",
        || {
            runtime().block_on(async {
            let broker_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let config = BrokerConfig {
                listen: broker_addr,
                ..test_config()
            };
            let broker = start_broker(config.clone()).await;
            let gate = Gate::start(broker_addr).await;
            let mut first = consumer_on(broker_addr, "consumer-1").await;
            let [a, b, c, d] = KERNEL_IP.octets();
            let gateway_config = Config {
                uplink: Some(UplinkConfig {
                    forward: &["sensors/#"],
                    qos: activity_core::QoS::AtLeastOnce,
                    drop_policy: DropPolicy::DropNewest,
                    keep_alive_secs: 5,
                    backoff_min: embassy_time::Duration::from_millis(100),
                    backoff_max: embassy_time::Duration::from_millis(400),
                    ..UplinkConfig::new(
                        IpEndpoint::new(IpAddress::v4(a, b, c, d), gate.addr.port()),
                        PREFIX,
                    )
                }),
                ..Config::new("gw-qos1")
            };
            let gateway = tokio::task::spawn_blocking(move || TapGateway::start(gateway_config))
                .await
                .expect("the gateway starts");
            gateway
                .stats_until("the uplink connects", Duration::from_secs(30), |s| {
                    s.uplink_connects == 1
                })
                .await;

            // 1. Two devices; then the broker's PUBACKs stop reaching the gateway (they are
            //    lost on the way) while two more devices come and go, and the uplink's
            //    connection is cut with their eight messages unacknowledged. The broker stays
            //    up. Then two more devices.
            let mut received = Received::default();
            let first_six: Vec<String> = (1..=6).flat_map(expected).collect();
            for n in 1..=2 {
                device(n).await;
            }
            receive_until(&mut first, &mut received, &gateway, "devices 1-2", |r, _| {
                arrived(r, &first_six[..8]) == 8
            })
            .await;
            gate.stall(true);
            for n in 3..=4 {
                device(n).await;
            }
            receive_until(&mut first, &mut received, &gateway, "devices 3-4", |r, _| {
                arrived(r, &first_six[..16]) == 16
            })
            .await;
            gate.cut();
            gate.stall(false);
            // The gateway reconnects and sends the eight again (they fill most of its queue).
            receive_until(&mut first, &mut received, &gateway, "the resends", |r, s| {
                r.duplicates() >= 8 && s.uplink_connects >= 2
            })
            .await;
            for n in 5..=6 {
                device(n).await;
            }
            // Every message arrives, the unacknowledged ones twice.
            receive_until(&mut first, &mut received, &gateway, "devices 1-6", |r, s| {
                arrived(r, &first_six) == first_six.len()
                    && r.duplicates() >= 8
                    && s.uplink_connects >= 2
            })
            .await;
            let after_cut = gateway.stats();
            println!(
                "cut with 8 messages unacknowledged: {} messages, all received, {} duplicates, \
                 {} resent by the gateway (DUP), {} dropped",
                first_six.len(),
                received.duplicates(),
                after_cut.uplink_resent,
                after_cut.uplink_dropped
            );
            assert_eq!(after_cut.uplink_dropped, 0, "{after_cut:?}");
            assert!(after_cut.uplink_resent >= 8, "{after_cut:?}");
            assert!(
                received.duplicates() <= count(after_cut.uplink_resent),
                "a duplicate is a resend"
            );
            for key in &first_six[8..16] {
                assert_eq!(received.count[key], 2, "{key}: once, and once resent");
            }

            // 2. The broker stops; devices go on while it is away, past what the uplink
            //    queue holds.
            gate.shut();
            first.kill().await;
            broker.shutdown().await;
            let failures = gateway.stats().uplink_failures;
            gateway
                .stats_until(
                    "the uplink finds the broker gone",
                    Duration::from_secs(30),
                    |s| s.uplink_failures > failures,
                )
                .await;
            let dropped_before = gateway.stats().uplink_dropped;
            let mut produced = 6;
            while gateway.stats().uplink_dropped == dropped_before {
                produced += 1;
                assert!(produced <= 30, "the queue never filled: {:?}", gateway.stats());
                device(produced).await;
            }
            // One more device after the first drop: it may or may not fit.
            produced += 1;
            device(produced).await;

            // 3. The broker is back; once a consumer listens there the uplink may reconnect.
            let broker = start_broker(config).await;
            let mut second = consumer_on(broker_addr, "consumer-2").await;
            gate.open();
            let while_down: Vec<String> = (7..=produced).flat_map(expected).collect();
            let mut again = Received::default();
            // The last device's events may still be on their way into the queue: the
            // counters are read as the messages come.
            receive_until(&mut second, &mut again, &gateway, "what the queue held", |r, s| {
                arrived(r, &while_down) + count(s.uplink_dropped - dropped_before)
                    == while_down.len()
            })
            .await;
            let dropped = count(gateway.stats().uplink_dropped - dropped_before);
            // Sent again in the order they were produced: device numbers never go back.
            let order: Vec<usize> = again
                .order
                .iter()
                .filter(|k| while_down.contains(k))
                .map(|k| {
                    let id = k.rsplit(['-', '/']).next().expect("a number");
                    id.parse().expect("a device number")
                })
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] <= w[1]),
                "in order: {:?}",
                again.order
            );
            // Every key is either new or a resend of one the first broker may have had.
            for key in again.count.keys() {
                assert!(
                    while_down.contains(key) || received.has(key),
                    "{key} was never produced"
                );
            }
            let duplicates = again.duplicates()
                + again.count.keys().filter(|k| received.has(k)).count();
            let stats = gateway.stats();
            println!(
                "broker restart: {} messages produced while it was down, {} dropped at the full \
                 queue (counted), the other {} received; {duplicates} duplicates; {stats:?}",
                while_down.len(),
                dropped,
                while_down.len() - dropped
            );
            assert!(dropped > 0 && dropped < while_down.len());

            second.disconnect().await;
            tokio::task::spawn_blocking(move || gateway.stop())
                .await
                .expect("the gateway stops");
            broker.shutdown().await;
        });
        },
    );
}
