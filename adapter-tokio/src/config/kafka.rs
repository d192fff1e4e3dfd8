//! The `[kafka]` table: brokers, librdkafka properties, topics, buffer, spool.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use activity_core::event::EventKind;
use activity_core::system::SystemTopics;
use serde::Deserialize;

use super::{ConfigError, invalid};

/// The Kafka sink, the `[kafka]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port` each (required with the Kafka sink).
    pub brokers: Vec<String>,
    /// librdkafka properties passed through as they are (they override the sink's defaults),
    /// e.g. `"security.protocol" = "ssl"`.
    pub properties: BTreeMap<String, PropertyValue>,
    /// One topic for every kind of event (default: each kind its own topic, see
    /// [`KafkaConfig::topic_of`]).
    pub topic: Option<String>,
    /// A topic per kind, the `[kafka.topics]` table; overrides `topic`.
    pub topics: KafkaTopics,
    /// The partitions of topics the sink creates (default 3, at least 1).
    pub partitions: i32,
    /// The replication factor of topics the sink creates (default 1, at least 1).
    pub replication: i32,
    /// Events held in memory for Kafka (default 100,000, at least 1).
    pub buffer_capacity: usize,
    /// Which event goes when the buffer (or the spool) is full (default `drop_oldest`).
    pub drop_policy: DropPolicy,
    /// How long shutdown waits for Kafka to take the events still buffered, in milliseconds
    /// (default 5,000).
    pub flush_timeout_ms: u64,
    /// The on-disk spool, the `[kafka.spool]` table (default: none, events buffer in memory).
    pub spool: Option<SpoolConfig>,
    /// How much nicer than the sink's threads the threads serving MQTT clients run while the
    /// Kafka sink is on (default 3, 0 to 19; 0 leaves them alone): see [`crate::priority`].
    pub client_threads_nice: i32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            properties: BTreeMap::new(),
            topic: None,
            topics: KafkaTopics::default(),
            partitions: 3,
            replication: 1,
            buffer_capacity: 100_000,
            drop_policy: DropPolicy::DropOldest,
            flush_timeout_ms: 5_000,
            spool: None,
            client_threads_nice: 3,
        }
    }
}

/// A librdkafka property value: TOML strings, integers and booleans are all passed as text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// A string, passed as it is.
    Text(String),
    /// An integer, passed in decimal.
    Integer(i64),
    /// A boolean, passed as `true` or `false`.
    Bool(bool),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Text(text) => f.write_str(text),
            PropertyValue::Integer(n) => write!(f, "{n}"),
            PropertyValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A Kafka topic per kind of event, the `[kafka.topics]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTopics {
    /// The topic of `connected` events.
    pub connected: Option<String>,
    /// The topic of `disconnected` events.
    pub disconnected: Option<String>,
    /// The topic of `subscribed` events.
    pub subscribed: Option<String>,
    /// The topic of `unsubscribed` events.
    pub unsubscribed: Option<String>,
    /// The topic of `message` events.
    pub message: Option<String>,
    /// The topic of `msgack` events.
    pub msgack: Option<String>,
    /// The topic of `refused` events.
    pub refused: Option<String>,
    /// The topic of `denied` events.
    pub denied: Option<String>,
    /// The topic of `dropped` events.
    pub dropped: Option<String>,
}

impl KafkaTopics {
    /// The topic set for `kind`, if any.
    pub fn of(&self, kind: EventKind) -> Option<&str> {
        match kind {
            EventKind::Connected => self.connected.as_deref(),
            EventKind::Disconnected => self.disconnected.as_deref(),
            EventKind::Subscribed => self.subscribed.as_deref(),
            EventKind::Unsubscribed => self.unsubscribed.as_deref(),
            EventKind::Message => self.message.as_deref(),
            EventKind::MsgAck => self.msgack.as_deref(),
            EventKind::Refused => self.refused.as_deref(),
            EventKind::Denied => self.denied.as_deref(),
            EventKind::Dropped => self.dropped.as_deref(),
        }
    }
}

/// Which event goes when the Kafka buffer or spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest waiting event to make room for the new one.
    DropOldest,
    /// Drop the new event.
    DropNewest,
}

/// The on-disk spool of the Kafka sink, the `[kafka.spool]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The directory of the spool file (created if missing; required).
    pub dir: PathBuf,
    /// The most bytes of events the spool holds (default 1 GiB, at least 64 KiB).
    #[serde(default = "SpoolConfig::default_max_bytes")]
    pub max_bytes: u64,
    /// When the spool file is synced to disk (default `"always"`).
    #[serde(default)]
    pub fsync: FsyncPolicy,
}

impl SpoolConfig {
    /// 1 GiB.
    fn default_max_bytes() -> u64 {
        1 << 30
    }
}

/// When the spool is synced to disk.
///
/// In TOML: `fsync = "always"` or `fsync = { every_ms = 1000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Every batch of events written is synced before it is sent to Kafka.
    #[default]
    Always,
    /// Synced at most this often, in milliseconds (at least 1); a power loss, a crash or a
    /// SIGKILL loses the events written since the last sync (about this interval plus one
    /// feeder round).
    EveryMs(u64),
}

/// The longest `kafka.flush_timeout_ms` accepted, one hour.
pub const MAX_KAFKA_FLUSH_TIMEOUT_MS: u64 = 3_600_000;

/// The smallest `kafka.spool.max_bytes` accepted.
pub const MIN_SPOOL_BYTES: u64 = 64 * 1024;

impl KafkaConfig {
    /// The Kafka topic of `kind`: `topics.<kind>`, else `topic`, else the kind's MQTT system
    /// topic under `prefix` with `/` replaced by `.` (`SYSTEM.presence.connected`).
    pub fn topic_of(&self, kind: EventKind, prefix: &str) -> String {
        if let Some(topic) = self.topics.of(kind).or(self.topic.as_deref()) {
            return topic.to_owned();
        }
        match SystemTopics::new(prefix) {
            Ok(topics) => topics.topic(kind).replace('/', "."),
            // `validate` refuses such prefixes; this keeps an unvalidated config usable.
            Err(_) => format!("SYSTEM.{}", kind.name()),
        }
    }

    /// `flush_timeout_ms` as a duration.
    pub fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.flush_timeout_ms.min(MAX_KAFKA_FLUSH_TIMEOUT_MS))
    }

    /// Checks the `[kafka]` table (when the Kafka sink is on); `prefix` is `events.prefix`.
    pub(super) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "must name at least one broker (host:port) when sinks has \"kafka\"",
            ));
        }
        for (i, broker) in self.brokers.iter().enumerate() {
            if broker.is_empty() || broker.contains([',', ' ']) {
                return Err(invalid(
                    format!("kafka.brokers[{i}]"),
                    format!("expected one host:port, got {broker:?}"),
                ));
            }
        }
        for key in self.properties.keys() {
            if key.is_empty() {
                return Err(invalid("kafka.properties", "a property name is empty"));
            }
            if key == "bootstrap.servers" || key == "metadata.broker.list" {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "set kafka.brokers instead",
                ));
            }
        }
        if let Some(topic) = &self.topic {
            check_kafka_topic("kafka.topic", topic)?;
        }
        for kind in EventKind::ALL {
            if let Some(topic) = self.topics.of(kind) {
                check_kafka_topic(&format!("kafka.topics.{}", kind.name()), topic)?;
            } else if self.topic.is_none() {
                let topic = self.topic_of(kind, prefix);
                check_kafka_topic("events.prefix", &topic).map_err(|_| {
                    invalid(
                        "events.prefix",
                        format!(
                            "{topic:?}, the Kafka topic made from it, is not a valid Kafka topic \
                             name (ASCII letters, digits, '.', '_', '-'): set kafka.topic or \
                             kafka.topics"
                        ),
                    )
                })?;
            }
        }
        if self.partitions < 1 {
            return Err(invalid(
                "kafka.partitions",
                format!("must be at least 1, got {}", self.partitions),
            ));
        }
        if self.replication < 1 {
            return Err(invalid(
                "kafka.replication",
                format!("must be at least 1, got {}", self.replication),
            ));
        }
        if self.buffer_capacity == 0 {
            return Err(invalid(
                "kafka.buffer_capacity",
                "must be at least 1, got 0",
            ));
        }
        if !(0..=19).contains(&self.client_threads_nice) {
            return Err(invalid(
                "kafka.client_threads_nice",
                format!("must be 0 to 19, got {}", self.client_threads_nice),
            ));
        }
        if self.flush_timeout_ms > MAX_KAFKA_FLUSH_TIMEOUT_MS {
            return Err(invalid(
                "kafka.flush_timeout_ms",
                format!(
                    "must be at most {MAX_KAFKA_FLUSH_TIMEOUT_MS}, got {}",
                    self.flush_timeout_ms
                ),
            ));
        }
        if let Some(spool) = &self.spool {
            if spool.dir.as_os_str().is_empty() {
                return Err(invalid("kafka.spool.dir", "must not be empty"));
            }
            if spool.max_bytes < MIN_SPOOL_BYTES {
                return Err(invalid(
                    "kafka.spool.max_bytes",
                    format!(
                        "must be at least {MIN_SPOOL_BYTES}, got {}",
                        spool.max_bytes
                    ),
                ));
            }
            if spool.fsync == FsyncPolicy::EveryMs(0) {
                return Err(invalid(
                    "kafka.spool.fsync",
                    "every_ms must be at least 1 (use \"always\" to sync every batch)",
                ));
            }
        }
        Ok(())
    }
}

/// Checks a Kafka topic name at `field`: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_kafka_topic(field: &str, topic: &str) -> Result<(), ConfigError> {
    let valid_chars = topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if topic.is_empty() || topic.len() > 249 || !valid_chars || topic == "." || topic == ".." {
        return Err(invalid(
            field,
            format!(
                "not a valid Kafka topic name (1 to 249 of ASCII letters, digits, '.', '_', '-'), \
                 got {topic:?}"
            ),
        ));
    }
    Ok(())
}
