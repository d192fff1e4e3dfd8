//! Kafka for the end-to-end tests: a real tansu broker (in-memory storage) on a free port, a
//! broker configuration with the Kafka sink, and a real rdkafka consumer that reads topics
//! with `assign()` (no consumer group, so no rebalance wait).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use adapter_tokio::config::{Config, KafkaConfig, PropertyValue, Sink};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout_at};

use crate::ports::free_port;
use crate::test_config;

/// The default Kafka topics of the six client-activity kinds, in `EventKind::ALL` order.
pub const TOPICS: [&str; 6] = [
    "SYSTEM.presence.connected",
    "SYSTEM.presence.disconnected",
    "SYSTEM.subscription.subscribed",
    "SYSTEM.subscription.unsubscribed",
    "SYSTEM.message",
    "SYSTEM.msgack",
];

/// The default Kafka topics of `refused`, `denied` and `dropped`, in `EventKind::ALL` order
/// (after [`TOPICS`]).
pub const PROBLEM_TOPICS: [&str; 3] = [
    "SYSTEM.presence.refused",
    "SYSTEM.access.denied",
    "SYSTEM.message.dropped",
];

/// The tansu binary: `tansu` on `PATH`, else `$CARGO_HOME/bin/tansu`, else `~/.cargo/bin/tansu`.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    cargo_home.join("bin").join("tansu")
}

/// A tansu broker with in-memory storage, killed when dropped.
pub struct Tansu {
    /// Its address.
    pub addr: SocketAddr,
    child: Child,
}

impl Tansu {
    /// Starts tansu on a free port and waits until it accepts connections.
    pub async fn start() -> Tansu {
        Tansu::start_on(free_port()).await
    }

    /// Starts tansu on `port` (e.g. one a broker was already told about) and waits until it
    /// accepts connections.
    pub async fn start_on(port: u16) -> Tansu {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let url = format!("tcp://{addr}");
        let binary = tansu_binary();
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it with `cargo install --locked tansu \
                     --version 0.6.0 --features dynostore`",
                    binary.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {addr} within 10 s"
            );
            sleep(Duration::from_millis(20)).await;
        }
        Tansu { addr, child }
    }

    /// Kills tansu and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// [`test_config`] with both sinks, Kafka at `kafka` (1 partition per topic, so that one
/// partition holds every event of a kind in order) and quick reconnects.
pub fn kafka_config(kafka: SocketAddr) -> Config {
    let mut properties = BTreeMap::new();
    properties.insert(
        "reconnect.backoff.max.ms".to_owned(),
        PropertyValue::Integer(200),
    );
    Config {
        sinks: vec![Sink::Mqtt, Sink::Kafka],
        kafka: KafkaConfig {
            brokers: vec![kafka.to_string()],
            properties,
            partitions: 1,
            flush_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ..test_config()
    }
}

/// One record read from Kafka.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its topic.
    pub topic: String,
    /// Its key, as text.
    pub key: String,
    /// Its headers, in order, values as text.
    pub headers: Vec<(String, String)>,
    /// Its value, parsed.
    pub json: Value,
}

impl Record {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The payloads of the `message` events among `records`, each a decimal number (the tests
/// publish numbered payloads), in order.
pub fn message_numbers(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.header("kind") == Some("message"))
        .map(|r| {
            r.json["payload"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .expect("a numbered payload")
        })
        .collect()
}

/// A consumer of partition 0 of some topics, from their beginning.
pub struct Reader {
    consumer: StreamConsumer,
    /// Everything read so far, in order of arrival.
    pub records: Vec<Record>,
}

impl Reader {
    /// Assigns partition 0 of each of `topics` on the Kafka at `kafka`, from the beginning.
    pub fn new(kafka: SocketAddr, topics: &[&str]) -> Reader {
        Reader::with_partitions(kafka, topics, 1)
    }

    /// Assigns partitions `0..partitions` of each of `topics` on the Kafka at `kafka`, from the
    /// beginning.
    pub fn with_partitions(kafka: SocketAddr, topics: &[&str], partitions: i32) -> Reader {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka.to_string())
            .set("group.id", "tests-reader")
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            .set("topic.metadata.refresh.interval.ms", "500")
            .set("fetch.wait.max.ms", "50")
            .set("reconnect.backoff.max.ms", "200")
            .create()
            .expect("the test consumer starts");
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            for partition in 0..partitions {
                assignment
                    .add_partition_offset(topic, partition, Offset::Beginning)
                    .expect("a valid offset");
            }
        }
        consumer.assign(&assignment).expect("assign works");
        Reader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `count` records arrived in total (or `within` passes) and returns them all.
    pub async fn read(&mut self, count: usize, within: Duration) -> &[Record] {
        let deadline = Instant::now() + within;
        while self.records.len() < count {
            match timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                // Unknown topic or partition until the sink creates it: keep polling.
                Ok(Err(_)) => sleep(Duration::from_millis(20)).await,
                Ok(Ok(message)) => {
                    let headers = message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    let value = h.value.map(String::from_utf8_lossy);
                                    (h.key.to_owned(), value.unwrap_or_default().into_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let payload = message.payload().unwrap_or_default();
                    let json = serde_json::from_slice(payload).unwrap_or_else(|e| {
                        panic!(
                            "record is not JSON ({e}): {}",
                            String::from_utf8_lossy(payload)
                        )
                    });
                    self.records.push(Record {
                        topic: message.topic().to_owned(),
                        key: String::from_utf8_lossy(message.key().unwrap_or_default())
                            .into_owned(),
                        headers,
                        json,
                    });
                }
            }
        }
        &self.records
    }

    /// Like [`Reader::read`], but panics with what arrived when fewer than `count` did.
    pub async fn expect(&mut self, count: usize, within: Duration) -> &[Record] {
        let got = self.read(count, within).await.len();
        assert!(
            got >= count,
            "{got} of {count} Kafka records within {within:?}:\n{}",
            self.describe()
        );
        &self.records
    }

    /// The records read, one line each, for failure messages.
    pub fn describe(&self) -> String {
        self.records
            .iter()
            .map(|r| format!("  {} key={} {:?} {}", r.topic, r.key, r.headers, r.json))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Creates `topics` (1 partition each) on the Kafka at `kafka` with the admin API, as the
/// broker's sink does at its start; a topic that already exists is fine.
pub async fn create_topics(kafka: SocketAddr, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka.to_string())
        .create()
        .expect("the admin client starts");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, 1, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .expect("create_topics answers");
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create {topic}: {code}"),
        }
    }
}

/// The offset consumer group `group` committed on partition 0 of each of `topics` (the next
/// record it will read; `None` before its first commit there).
pub fn committed(kafka: SocketAddr, group: &str, topics: &[&str]) -> Vec<Option<i64>> {
    use rdkafka::consumer::BaseConsumer;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.to_string())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer of the group starts");
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        partitions.add_partition(topic, 0);
    }
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("the group's committed offsets");
    topics
        .iter()
        .map(|topic| match committed.find_partition(topic, 0)?.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
        .collect()
}
