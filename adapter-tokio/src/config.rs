//! The broker's configuration: a TOML file, its defaults and its validation.
//!
//! Every key is optional; [`Config::default`] is a broker on `127.0.0.1:1883` that publishes
//! events over MQTT. [`EXAMPLE_CONFIG`] documents every option. Every error names the field it is
//! about (`events.qos: must be 0, 1 or 2, got 3`), and unknown keys are refused.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use activity_core::QoS;
use activity_core::event::EventKind;
use activity_core::system::SystemTopics;

use crate::acl::{Acl, Permission, Rule, RuleAction, check_rule_topic};
use argon2::password_hash::PasswordHash;
use serde::Deserialize;

mod kafka;
mod upstream;

pub use kafka::{
    DropPolicy, FsyncPolicy, KafkaConfig, KafkaTopics, MAX_KAFKA_FLUSH_TIMEOUT_MS, MIN_SPOOL_BYTES,
    PropertyValue, SpoolConfig,
};
pub use upstream::{MAX_RECONNECT_MS, UpstreamConfig, UpstreamTlsConfig};

/// The commented example configuration, `activity-broker.example.toml`, with every option.
pub const EXAMPLE_CONFIG: &str = include_str!("../activity-broker.example.toml");

/// The largest MQTT 3.1.1 packet: a 1-byte fixed header, a 4-byte remaining length and
/// 268,435,455 bytes (MQTT 3.1.1 section 2.2.3).
pub const MAX_PACKET_SIZE_LIMIT: usize = 268_435_460;

/// The smallest `max_packet_size` accepted, enough for a small CONNECT.
pub const MIN_PACKET_SIZE_LIMIT: usize = 16;

/// The longest `connect_timeout_secs` accepted, one day.
pub const MAX_CONNECT_TIMEOUT_SECS: f64 = 86_400.0;

/// The default `events.rate_limit`: 1,000 `refused`, `denied` and `dropped` events per second,
/// each kind.
pub const DEFAULT_EVENTS_RATE_LIMIT: u32 = 1_000;

/// The whole broker configuration, as read from TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address of the plain MQTT listener (default `127.0.0.1:1883`).
    pub listen: SocketAddr,
    /// An optional MQTT-over-TLS listener, the `[tls]` table.
    pub tls: Option<TlsConfig>,
    /// An optional MQTT-over-WebSocket listener, the `[websocket]` table.
    pub websocket: Option<WebSocketConfig>,
    /// An optional MQTT-over-WebSocket-over-TLS listener, the `[websocket_tls]` table.
    pub websocket_tls: Option<WebSocketTlsConfig>,
    /// The most client connections open at once (default 10,000, at least 1).
    pub max_connections: usize,
    /// The largest MQTT packet accepted, in bytes (default 1 MiB, 16 to 268,435,460).
    pub max_packet_size: usize,
    /// How long a new connection may take to send CONNECT, in seconds (default 10, above 0).
    pub connect_timeout_secs: f64,
    /// The MQTT 5 Server Keep Alive, in seconds (default: none, the client's keep-alive
    /// holds): told to MQTT 5 clients in the CONNACK and applied to them.
    pub server_keep_alive: Option<u16>,
    /// The most sessions kept after their connection ended (default 10,000): MQTT 5 sessions
    /// waiting for their expiry or a delayed will, at most this many; MQTT 3.1.1 sessions with
    /// clean session 0 (kept by rumqttd's router until a clean connection of the client id),
    /// only while fewer than this many of both kinds are kept. Past it, a session ends with
    /// its connection and `activity_sessions_not_kept_total` counts it.
    pub max_kept_sessions: usize,
    /// How long shutdown waits for `server_shutdown` events to go out before closing sockets,
    /// in milliseconds (default 500).
    pub shutdown_grace_ms: u64,
    /// Where activity events go (default `["mqtt"]`, not empty).
    pub sinks: Vec<Sink>,
    /// The address serving Prometheus metrics on `http://ADDR/metrics` (default: none).
    pub metrics_listen: Option<SocketAddr>,
    /// The address of the HTTP API (`/health`, `/api/v1/...`, see docs/http.md; default: none,
    /// no HTTP listener). Served over TLS with the `[tls]` certificate when `[tls]` is set.
    pub http_listen: Option<SocketAddr>,
    /// The bearer token every HTTP API request must carry (`Authorization: Bearer <token>`);
    /// without one, only loopback peers are served (default: none).
    pub http_token: Option<String>,
    /// The limits of the HTTP API, the `[http]` table.
    pub http: HttpConfig,
    /// The activity events, the `[events]` table.
    pub events: EventsConfig,
    /// Who may connect and who may subscribe to system topics, the `[access]` table.
    pub access: AccessConfig,
    /// The users who may log in with a password, the `[[users]]` tables.
    pub users: Vec<UserConfig>,
    /// The topic access rules, the `[[acl]]` tables, in order: the first that matches decides
    /// (see [`crate::acl`]); none matching, `access.acl_default` does.
    pub acl: Vec<AclRuleConfig>,
    /// The Kafka sink, the `[kafka]` table (used when `sinks` has `"kafka"`).
    pub kafka: KafkaConfig,
    /// Tap mode, the `[upstream]` table: relay clients to an existing broker.
    pub upstream: UpstreamConfig,
    /// The router's message logs, the `[router]` table.
    pub router: RouterLogConfig,
}

/// The router's message logs, the `[router]` table: rumqttd keeps one log per subscribed
/// filter of at most `segment_count` segments of `segment_size` bytes; a subscriber slower
/// than that skips the oldest segment (`activity_deliveries_skipped_total` counts what it
/// lost, see docs/scale.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterLogConfig {
    /// The size of one segment of a filter's log, in bytes (default 16 MiB, at least 1,024).
    pub segment_size: usize,
    /// The segments of one filter's log kept in memory (default 4, at least 1).
    pub segment_count: usize,
    /// A bound on the memory of all the router's logs together, in bytes (default: none). The
    /// router keeps a log for every filter ever subscribed (rumqttd 0.20 frees none), so the
    /// bound is a number of filters: `max_log_memory / filter_log_bound` (see
    /// [`RouterLogConfig::filter_log_bound`]). A subscription to a filter the router has no
    /// log for yet, past that number, is refused with SUBACK 0x80 (MQTT 5: 0x97 quota
    /// exceeded), counted in `activity_router_filters_refused_total` and logged.
    pub max_log_memory: Option<u64>,
}

impl Default for RouterLogConfig {
    fn default() -> Self {
        RouterLogConfig {
            segment_size: 16 * 1024 * 1024,
            segment_count: 4,
            max_log_memory: None,
        }
    }
}

/// The fewest bytes rumqttd counts for a message in a log: 4 plus a topic of 1 byte and an
/// empty payload (`PublishData::size` in rumqttd's `router/logs.rs`).
const MIN_COUNTED_MESSAGE: usize = 5;

/// Heap bytes per message and filter beyond its topic and payload: the allocator's rounding of
/// the message's buffer and the publisher's id that the front adds as a user property.
const MESSAGE_SLACK: usize = 192;

impl RouterLogConfig {
    /// The most memory one filter's log can hold, in bytes, with messages of at most
    /// `max_packet_size` bytes: `segment_count` segments, each holding messages until rumqttd
    /// has counted `segment_size` bytes of them (4 + topic + payload each, so at most
    /// `segment_size / 5 + 1` messages), in a vector of at least 1,024 entries that doubles
    /// as it grows. rumqttd does not count the entries themselves (a `Publish` with its
    /// properties and a timestamp), which for small messages are most of the memory. Not in
    /// the bound: MQTT 5 properties a client puts on its publishes (user properties, content
    /// type, response topic, correlation data), which rumqttd copies into every matching log.
    pub fn filter_log_bound(&self, max_packet_size: usize) -> u64 {
        let entry = std::mem::size_of::<(
            rumqttd::protocol::Publish,
            Option<rumqttd::protocol::PublishProperties>,
            std::time::Instant,
        )>();
        let messages = (self.segment_size - 1) / MIN_COUNTED_MESSAGE + 1;
        let entries = (2 * messages).max(1024);
        let bytes = (self.segment_size + max_packet_size) / 8 * 9;
        let segment = entries * entry + messages * MESSAGE_SLACK + bytes;
        u64::try_from(segment.saturating_mul(self.segment_count)).unwrap_or(u64::MAX)
    }

    /// With `max_log_memory` set, how many filters the router may keep a log for.
    pub fn max_filters(&self, max_packet_size: usize) -> Option<usize> {
        let bound = self.max_log_memory?;
        let per_filter = self.filter_log_bound(max_packet_size).max(1);
        Some(usize::try_from(bound / per_filter).unwrap_or(usize::MAX))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            tls: None,
            websocket: None,
            websocket_tls: None,
            max_connections: 10_000,
            max_packet_size: 1_048_576,
            connect_timeout_secs: 10.0,
            server_keep_alive: None,
            max_kept_sessions: 10_000,
            shutdown_grace_ms: 500,
            sinks: vec![Sink::Mqtt],
            metrics_listen: None,
            http_listen: None,
            http_token: None,
            http: HttpConfig::default(),
            events: EventsConfig::default(),
            access: AccessConfig::default(),
            users: Vec::new(),
            acl: Vec::new(),
            kafka: KafkaConfig::default(),
            upstream: UpstreamConfig::default(),
            router: RouterLogConfig::default(),
        }
    }
}

/// The limits of the HTTP API (`http_listen`), the `[http]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The most HTTP connections open at once (default 256, at least 1); past it, a new
    /// connection is closed at once and counted.
    pub max_connections: usize,
    /// The most `/api/v1/events` streams open at once (default 128, at least 1); past it, a
    /// new stream is refused with 503 and counted.
    pub max_watchers: usize,
    /// The recent events kept for `Last-Event-ID` replays (default 1,024, at least 1): of the
    /// kinds an event stream holds (see `replay_grace_ms`).
    pub event_ring: usize,
    /// How long a closed event stream still holds its kinds, in milliseconds (default 30,000;
    /// 0: not after it closes): the ring keeps them that long for its reconnect's
    /// `Last-Event-ID` replay.
    pub replay_grace_ms: u64,
    /// The events one stream may fall behind before it skips the oldest, counted (default
    /// 1,024, at least 1).
    pub watcher_buffer: usize,
    /// How long a request's head may take to arrive, and how long a connection may sit idle
    /// between requests, in milliseconds (default 10,000, above 0).
    pub header_timeout_ms: u64,
    /// The recent `msgack` events kept for `GET /api/v1/acks` and the live page's lookup;
    /// past it, the oldest is evicted and counted (see [`crate::page::AckTable`]). 0 (the
    /// default) turns the table off: the API then costs nothing per `msgack` (no event is
    /// encoded for it), and a lookup answers 404. On, it makes every acknowledged envelope's
    /// `msgack` event even when no consumer wants it (docs/http.md, "The cost").
    pub ack_table: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 256,
            max_watchers: 128,
            event_ring: 1024,
            replay_grace_ms: 30_000,
            watcher_buffer: 1024,
            header_timeout_ms: 10_000,
            ack_table: 0,
        }
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("http.max_connections", self.max_connections),
            ("http.max_watchers", self.max_watchers),
            ("http.event_ring", self.event_ring),
            ("http.watcher_buffer", self.watcher_buffer),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be at least 1, got 0"));
            }
        }
        if self.header_timeout_ms == 0 {
            return Err(invalid("http.header_timeout_ms", "must be above 0, got 0"));
        }
        Ok(())
    }

    /// `replay_grace_ms` as a duration.
    pub fn replay_grace(&self) -> Duration {
        Duration::from_millis(self.replay_grace_ms)
    }

    /// `header_timeout_ms` as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}

/// The MQTT-over-TLS listener, the `[tls]` table; every key is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The address of the TLS listener, e.g. `0.0.0.0:8883`.
    pub listen: SocketAddr,
    /// A PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// A PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1).
    pub key: PathBuf,
}

/// The default HTTP path of the WebSocket listeners.
pub const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

fn default_websocket_path() -> String {
    DEFAULT_WEBSOCKET_PATH.to_owned()
}

/// The MQTT-over-WebSocket listener, the `[websocket]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The address of the WebSocket listener, e.g. `127.0.0.1:8083`.
    pub listen: SocketAddr,
    /// The HTTP path clients upgrade on (default `/mqtt`); other paths get 404.
    #[serde(default = "default_websocket_path")]
    pub path: String,
}

/// The MQTT-over-WebSocket-over-TLS listener, the `[websocket_tls]` table: `listen`, `cert`
/// and `key` are required, as in `[tls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketTlsConfig {
    /// The address of the listener, e.g. `0.0.0.0:8084`.
    pub listen: SocketAddr,
    /// The HTTP path clients upgrade on (default `/mqtt`); other paths get 404.
    #[serde(default = "default_websocket_path")]
    pub path: String,
    /// A PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// A PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1).
    pub key: PathBuf,
}

/// A WebSocket path is an absolute HTTP path without query or fragment.
fn validate_websocket_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.contains(['?', '#']) || path.contains(char::is_whitespace) {
        return Err(invalid(
            field,
            format!("must be an absolute path such as \"/mqtt\" (no query), got {path:?}"),
        ));
    }
    Ok(())
}

/// A destination for activity events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// Publish events on the broker's own system topics (`mqtt`).
    Mqtt,
    /// Send events to Kafka (`kafka`), configured by the `[kafka]` table.
    Kafka,
}

impl Sink {
    /// The name of the sink, as written in the configuration and in metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Sink::Mqtt => "mqtt",
            Sink::Kafka => "kafka",
        }
    }
}

/// The activity events, the `[events]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The topic prefix of system topics (default `SYSTEM`).
    pub prefix: String,
    /// The QoS events are published with, unless a kind sets its own (default 1).
    pub qos: u8,
    /// How many events may wait to be published before new ones are dropped (default 65,536).
    pub queue_capacity: usize,
    /// What `message` events carry of the published payload (default: all of it).
    pub payload: PayloadMode,
    /// A node name added as `"node"` to every event, to tell brokers apart (default: none).
    pub node: Option<String>,
    /// The low bits of every `session_seq` this node hands out, 0 to 63 (default: derived from
    /// `node`, 0 without one). Nodes in front of the same broker that must never hand out the
    /// same number set different ones (see `docs/presence.md`).
    pub node_index: Option<u8>,
    /// Whether the broker keeps a retained `<prefix>/presence/state/<client_id>` of every
    /// client id (`online` / `offline` and the last presence event's fields), for subscribers
    /// that come later (default false; see `docs/presence.md`).
    pub retained_presence: bool,
    /// `connected` events, the `[events.connected]` table.
    pub connected: KindConfig,
    /// `disconnected` events, the `[events.disconnected]` table.
    pub disconnected: KindConfig,
    /// `subscribed` events, the `[events.subscribed]` table.
    pub subscribed: KindConfig,
    /// `unsubscribed` events, the `[events.unsubscribed]` table.
    pub unsubscribed: KindConfig,
    /// `message` events, the `[events.message]` table.
    pub message: KindConfig,
    /// `msgack` events, the `[events.msgack]` table.
    pub msgack: KindConfig,
    /// `refused` events (a CONNECT refused), the `[events.refused]` table.
    pub refused: KindConfig,
    /// `denied` events (a publish or subscription the rules refused), the `[events.denied]`
    /// table.
    pub denied: KindConfig,
    /// `dropped` events (messages dropped for a client), the `[events.dropped]` table.
    pub dropped: KindConfig,
    /// The most `refused`, the most `denied` and the most `dropped` events emitted per second,
    /// each kind, for all clients together (default 1,000; 0: no bound). Past it they are
    /// suppressed and counted in `activity_events_suppressed_total`.
    pub rate_limit: u32,
    /// The most `denied` and the most `dropped` events one connection emits per second, each
    /// kind (default 10; 0: no bound); the next event of the connection says how many were
    /// held back (`suppressed`).
    pub rate_limit_per_client: u16,
    /// Whether a subscription whose filter's first level is a wildcard (`#`, `+/...`) receives
    /// events too (default false: only filters that name the prefix, `SYSTEM/#`, do).
    pub wildcards_receive_events: bool,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            prefix: activity_core::system::DEFAULT_PREFIX.to_owned(),
            qos: 1,
            queue_capacity: 65_536,
            payload: PayloadMode::Full,
            node: None,
            node_index: None,
            retained_presence: false,
            connected: KindConfig::default(),
            disconnected: KindConfig::default(),
            subscribed: KindConfig::default(),
            unsubscribed: KindConfig::default(),
            message: KindConfig::default(),
            msgack: KindConfig::default(),
            refused: KindConfig::default(),
            denied: KindConfig::default(),
            dropped: KindConfig::default(),
            rate_limit: DEFAULT_EVENTS_RATE_LIMIT,
            rate_limit_per_client: activity_core::tracker::DEFAULT_CLIENT_RATE_LIMIT,
            wildcards_receive_events: false,
        }
    }
}

impl EventsConfig {
    /// The settings of one kind of event.
    pub fn kind(&self, kind: EventKind) -> &KindConfig {
        match kind {
            EventKind::Connected => &self.connected,
            EventKind::Disconnected => &self.disconnected,
            EventKind::Subscribed => &self.subscribed,
            EventKind::Unsubscribed => &self.unsubscribed,
            EventKind::Message => &self.message,
            EventKind::MsgAck => &self.msgack,
            EventKind::Refused => &self.refused,
            EventKind::Denied => &self.denied,
            EventKind::Dropped => &self.dropped,
        }
    }

    /// The bound of `kind` across all clients, events per second: [`EventsConfig::rate_limit`]
    /// for `refused`, `denied` and `dropped`, none (0) for the others.
    pub fn rate_limit_of(&self, kind: EventKind) -> u32 {
        match kind {
            EventKind::Refused | EventKind::Denied | EventKind::Dropped => self.rate_limit,
            _ => 0,
        }
    }

    /// The low bits of this node's `session_seq`s: `node_index`, else derived from `node`.
    pub fn node_bits(&self) -> activity_core::seq::NodeBits {
        use activity_core::seq::NodeBits;
        match (self.node_index, &self.node) {
            (Some(index), _) => NodeBits::new(index),
            (None, Some(node)) => NodeBits::of_name(node),
            (None, None) => NodeBits::default(),
        }
    }

    /// The QoS events of `kind` are published with: the kind's own, else `events.qos`.
    pub fn qos_of(&self, kind: EventKind) -> QoS {
        let value = self.kind(kind).qos.unwrap_or(self.qos);
        // `validate` refuses values above 2; a config that skipped it falls back to QoS 1.
        QoS::from_u8(value).unwrap_or(QoS::AtLeastOnce)
    }
}

/// What a `message` event carries of the published payload.
///
/// In TOML: `payload = "full"`, `payload = "omit"` or `payload = { truncate = 256 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadMode {
    /// The whole payload.
    #[default]
    Full,
    /// No payload, only its length.
    Omit,
    /// At most this many bytes of the payload (at least 1).
    Truncate(usize),
}

/// The settings of one kind of event, e.g. the `[events.message]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindConfig {
    /// Whether events of this kind are published (default true).
    pub enabled: bool,
    /// The QoS of this kind, 0 to 2 (default: `events.qos`).
    pub qos: Option<u8>,
}

impl Default for KindConfig {
    fn default() -> Self {
        KindConfig {
            enabled: true,
            qos: None,
        }
    }
}

/// Who may connect and who may subscribe to system topics, the `[access]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Whether a CONNECT without a username is accepted (default true); if not, it is refused
    /// with CONNACK return code 5, not authorized.
    pub allow_anonymous: bool,
    /// The identities that may subscribe to system topics: `"user:NAME"` (a logged-in user) or
    /// `"client:ID"` (a client identifier).
    pub system_subscribers: Vec<String>,
    /// Whether clients connecting from a loopback address (127.0.0.0/8, `::1`) may subscribe to
    /// system topics (default true).
    pub loopback_may_subscribe: bool,
    /// What happens to a publish or subscription no `[[acl]]` rule matches: `"allow"` (the
    /// default) or `"deny"`.
    pub acl_default: String,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            allow_anonymous: true,
            system_subscribers: Vec::new(),
            loopback_may_subscribe: true,
            acl_default: "allow".to_owned(),
        }
    }
}

impl AccessConfig {
    /// Whether `access.system_subscribers` lists the client, by its username or client id (the
    /// username is the one the client logged in with, already checked).
    ///
    /// The engine lets a client read the system topics when it is listed, or connects over
    /// loopback (`admission::is_loopback`) while `loopback_may_subscribe` is on.
    pub fn is_system_subscriber(&self, username: Option<&str>, client_id: &str) -> bool {
        self.system_subscribers
            .iter()
            .any(|entry| match Identity::parse(entry) {
                Some(Identity::User(name)) => username == Some(name),
                Some(Identity::Client(id)) => client_id == id,
                None => false,
            })
    }
}

/// One topic access rule, an `[[acl]]` table (see [`crate::acl`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRuleConfig {
    /// `"allow"` or `"deny"`.
    pub permission: String,
    /// `"publish"`, `"subscribe"` or `"all"`.
    pub action: String,
    /// A topic filter; `%u` is the client's user name, `%c` its client id.
    pub topic: String,
    /// The rule applies to this user only.
    pub username: Option<String>,
    /// The rule applies to this client id only.
    pub client_id: Option<String>,
}

impl AclRuleConfig {
    /// The rule, or what is wrong with it (the message names the field, `acl[N].action`).
    fn rule(&self, i: usize) -> Result<Rule, ConfigError> {
        let permission = permission_of(&format!("acl[{i}].permission"), &self.permission)?;
        let action = match self.action.as_str() {
            "publish" => RuleAction::Publish,
            "subscribe" => RuleAction::Subscribe,
            "all" => RuleAction::All,
            other => {
                return Err(invalid(
                    format!("acl[{i}].action"),
                    format!("must be \"publish\", \"subscribe\" or \"all\", got {other:?}"),
                ));
            }
        };
        if let Err(e) = check_rule_topic(&self.topic) {
            return Err(invalid(
                format!("acl[{i}].topic"),
                format!("{e}, got {:?}", self.topic),
            ));
        }
        for (field, value) in [("username", &self.username), ("client_id", &self.client_id)] {
            if value.as_deref() == Some("") {
                return Err(invalid(
                    format!("acl[{i}].{field}"),
                    "must not be empty (leave it out instead)",
                ));
            }
        }
        Ok(Rule {
            permission,
            action,
            topic: self.topic.clone(),
            username: self.username.clone(),
            client_id: self.client_id.clone(),
        })
    }
}

/// `"allow"` or `"deny"` at `field`.
fn permission_of(field: &str, value: &str) -> Result<Permission, ConfigError> {
    match value {
        "allow" => Ok(Permission::Allow),
        "deny" => Ok(Permission::Deny),
        other => Err(invalid(
            field,
            format!("must be \"allow\" or \"deny\", got {other:?}"),
        )),
    }
}

impl Config {
    /// The `[[acl]]` rules and `access.acl_default`, indexed; [`Config::validate`] has checked
    /// them (an invalid rule here is an error too).
    pub fn acl(&self) -> Result<Acl, ConfigError> {
        let default = permission_of("access.acl_default", &self.access.acl_default)?;
        let rules = self
            .acl
            .iter()
            .enumerate()
            .map(|(i, rule)| rule.rule(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Acl::new(rules, default))
    }
}

/// One entry of `access.system_subscribers`.
enum Identity<'a> {
    /// `user:NAME`.
    User(&'a str),
    /// `client:ID`.
    Client(&'a str),
}

impl<'a> Identity<'a> {
    /// The identity written in `entry`, or `None` if it is neither `user:NAME` nor `client:ID`.
    fn parse(entry: &'a str) -> Option<Identity<'a>> {
        if let Some(name) = entry.strip_prefix("user:") {
            (!name.is_empty()).then_some(Identity::User(name))
        } else if let Some(id) = entry.strip_prefix("client:") {
            (!id.is_empty()).then_some(Identity::Client(id))
        } else {
            None
        }
    }
}

/// A user who may log in with a password, one `[[users]]` table.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The MQTT username.
    pub username: String,
    /// The argon2 hash of the password as a PHC string (`$argon2id$v=19$...`), as printed by
    /// `activity-broker hash-password`.
    pub password_hash: String,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash stays out of logs: it can be attacked offline.
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// Why a configuration was refused; the message names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The text is not TOML, or a key is unknown or has the wrong type; toml's message names
    /// the key and shows the line.
    #[error("{}{source}", in_file(path.as_deref()))]
    Parse {
        /// The configuration file, if the text came from one.
        path: Option<PathBuf>,
        /// toml's error.
        source: toml::de::Error,
    },
    /// A field holds a value that is not allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as a TOML path: `events.qos`, `users[1].password_hash`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// `"PATH: "` for errors in a file, nothing otherwise.
fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// An [`ConfigError::Invalid`] for `field`.
fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Config {
    /// Parses TOML text into a configuration and validates it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|source| ConfigError::Parse { path: None, source })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: Some(path.to_owned()),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its allowed range; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Port 0 asks the system for a free port: two such listeners never clash.
        let listeners = [
            Some(("listen", self.listen)),
            self.tls.as_ref().map(|t| ("tls.listen", t.listen)),
            self.websocket
                .as_ref()
                .map(|w| ("websocket.listen", w.listen)),
            self.websocket_tls
                .as_ref()
                .map(|w| ("websocket_tls.listen", w.listen)),
            self.metrics_listen.map(|m| ("metrics_listen", m)),
            self.http_listen.map(|h| ("http_listen", h)),
        ];
        let listeners: Vec<(&str, SocketAddr)> = listeners.into_iter().flatten().collect();
        for (i, (name, addr)) in listeners.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((first, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
                return Err(invalid(*name, format!("{addr} is also `{first}`")));
            }
        }
        if let Some(ws) = &self.websocket {
            validate_websocket_path("websocket.path", &ws.path)?;
        }
        if let Some(wss) = &self.websocket_tls {
            validate_websocket_path("websocket_tls.path", &wss.path)?;
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1, got 0"));
        }
        if self.router.segment_size < 1024 {
            return Err(invalid(
                "router.segment_size",
                format!("must be at least 1024, got {}", self.router.segment_size),
            ));
        }
        if self.router.segment_count == 0 {
            return Err(invalid("router.segment_count", "must be at least 1, got 0"));
        }
        if let Some(bound) = self.router.max_log_memory {
            let per_filter = self.router.filter_log_bound(self.max_packet_size);
            if bound < per_filter {
                return Err(invalid(
                    "router.max_log_memory",
                    format!(
                        "leaves room for no filter's log: with segment_size {}, segment_count \
                         {} and max_packet_size {} one log may hold {per_filter} bytes, got \
                         {bound} (make the segments smaller or the bound larger)",
                        self.router.segment_size, self.router.segment_count, self.max_packet_size
                    ),
                ));
            }
        }
        if !(MIN_PACKET_SIZE_LIMIT..=MAX_PACKET_SIZE_LIMIT).contains(&self.max_packet_size) {
            return Err(invalid(
                "max_packet_size",
                format!(
                    "must be {MIN_PACKET_SIZE_LIMIT} to {MAX_PACKET_SIZE_LIMIT} bytes, got {}",
                    self.max_packet_size
                ),
            ));
        }
        let timeout = self.connect_timeout_secs;
        if !(timeout > 0.0 && timeout <= MAX_CONNECT_TIMEOUT_SECS) {
            return Err(invalid(
                "connect_timeout_secs",
                format!(
                    "must be above 0 and at most {MAX_CONNECT_TIMEOUT_SECS} seconds, got {timeout}"
                ),
            ));
        }
        if self.sinks.is_empty() {
            return Err(invalid(
                "sinks",
                "must name at least one sink, e.g. [\"mqtt\"]",
            ));
        }
        let mut seen = HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            if !seen.insert(*sink) {
                return Err(invalid(
                    format!("sinks[{i}]"),
                    format!("{} is listed twice", sink.name()),
                ));
            }
        }
        self.events.validate()?;
        if self.sinks.contains(&Sink::Kafka) {
            self.kafka.validate(&self.events.prefix)?;
        }
        self.access.validate()?;
        self.acl()?;
        validate_users(&self.users)?;
        self.upstream.validate()?;
        self.http.validate()?;
        if self.http_token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("http_token", "must not be empty"));
        }
        Ok(())
    }

    /// Sets the WebSocket listener's address (the `--ws-listen` flag), keeping a configured
    /// path.
    pub fn set_websocket_listen(&mut self, listen: SocketAddr) {
        match &mut self.websocket {
            Some(ws) => ws.listen = listen,
            None => {
                self.websocket = Some(WebSocketConfig {
                    listen,
                    path: default_websocket_path(),
                });
            }
        }
    }

    /// `connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        // `validate` bounds the value; clamping keeps an unvalidated config from panicking.
        Duration::from_secs_f64(
            self.connect_timeout_secs
                .clamp(0.001, MAX_CONNECT_TIMEOUT_SECS),
        )
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl EventsConfig {
    /// Checks the `[events]` table.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = SystemTopics::new(&self.prefix) {
            return Err(invalid(
                "events.prefix",
                format!("{e}, got {:?}", self.prefix),
            ));
        }
        check_qos("events.qos", self.qos)?;
        if self.queue_capacity == 0 {
            return Err(invalid(
                "events.queue_capacity",
                "must be at least 1, got 0",
            ));
        }
        if self.payload == PayloadMode::Truncate(0) {
            return Err(invalid(
                "events.payload",
                "truncate must be at least 1 byte (use \"omit\" to leave payloads out)",
            ));
        }
        if let Some(node) = &self.node
            && node.is_empty()
        {
            return Err(invalid(
                "events.node",
                "must not be empty (leave it out instead)",
            ));
        }
        if let Some(index) = self.node_index
            && u32::from(index) >= 1 << activity_core::seq::NODE_BITS
        {
            return Err(invalid(
                "events.node_index",
                format!("must be 0 to 63, got {index}"),
            ));
        }
        for kind in EventKind::ALL {
            if let Some(qos) = self.kind(kind).qos {
                check_qos(&format!("events.{}.qos", kind.name()), qos)?;
            }
        }
        Ok(())
    }
}

impl AccessConfig {
    /// Checks the `[access]` table.
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, entry) in self.system_subscribers.iter().enumerate() {
            if Identity::parse(entry).is_none() {
                return Err(invalid(
                    format!("access.system_subscribers[{i}]"),
                    format!("expected \"user:NAME\" or \"client:ID\", got {entry:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a QoS value at `field`.
fn check_qos(field: &str, qos: u8) -> Result<(), ConfigError> {
    if QoS::from_u8(qos).is_none() {
        return Err(invalid(field, format!("must be 0, 1 or 2, got {qos}")));
    }
    Ok(())
}

/// Checks the `[[users]]` tables: non-empty unique names and argon2 PHC hashes.
pub(crate) fn validate_users(users: &[UserConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, user) in users.iter().enumerate() {
        if user.username.is_empty() {
            return Err(invalid(format!("users[{i}].username"), "must not be empty"));
        }
        if !names.insert(user.username.as_str()) {
            return Err(invalid(
                format!("users[{i}].username"),
                format!("{:?} is listed twice", user.username),
            ));
        }
        check_password_hash(&user.password_hash)
            .map_err(|message| invalid(format!("users[{i}].password_hash"), message))?;
    }
    Ok(())
}

/// Checks that `phc` is an argon2 PHC string with usable parameters.
fn check_password_hash(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    argon2::Algorithm::try_from(hash.algorithm).map_err(|_| {
        format!(
            "not an argon2 hash (algorithm {}), run `activity-broker hash-password`",
            hash.algorithm
        )
    })?;
    argon2::Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err("the PHC string has no salt or no hash".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of the error `text` is refused with.
    fn error_of(text: &str) -> String {
        Config::from_toml_str(text).expect_err(text).to_string()
    }

    #[test]
    fn the_bound_on_the_logs_counts_the_entries_rumqttd_does_not() {
        let mut router = RouterLogConfig {
            segment_size: 16384,
            segment_count: 2,
            max_log_memory: Some(256 * 1024 * 1024),
        };
        let entry = std::mem::size_of::<(
            rumqttd::protocol::Publish,
            Option<rumqttd::protocol::PublishProperties>,
            std::time::Instant,
        )>();
        let bound = router.filter_log_bound(1_048_576);
        eprintln!(
            "entry {entry} B; one log {bound} B; {:?} logs",
            router.max_filters(1_048_576)
        );
        // 3,277 messages of 5 counted bytes per segment, in a vector of 6,554 entries.
        assert_eq!(
            bound,
            2 * (6554 * entry as u64 + 3277 * 192 + (16384 + 1_048_576) / 8 * 9)
        );
        assert_eq!(
            router.max_filters(1_048_576),
            Some(usize::try_from(256 * 1024 * 1024 / bound).unwrap())
        );
        // A bound below one log is refused.
        router.max_log_memory = Some(bound - 1);
        let config = Config {
            router,
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("router.max_log_memory"), "{error}");
    }

    #[test]
    fn empty_text_is_the_default() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(config.sinks, vec![Sink::Mqtt]);
        assert_eq!(config.events.prefix, "SYSTEM");
        assert_eq!(config.events.qos_of(EventKind::Message), QoS::AtLeastOnce);
        assert!(config.access.allow_anonymous);
        Config::default().validate().unwrap();
    }

    #[test]
    fn example_config_parses_and_validates() {
        let config = Config::from_toml_str(EXAMPLE_CONFIG).unwrap();
        assert_eq!(config.users.len(), 1);
        config.validate().unwrap();
        assert!(config.acl().unwrap().is_empty());
    }

    /// The commented ACL example at the end of the example configuration, uncommented,
    /// works as its comment says.
    #[test]
    fn the_example_acl_gives_each_device_its_own_topics() {
        use activity_core::server::Action;
        let start = EXAMPLE_CONFIG.find("# [access]").unwrap();
        let text: String = EXAMPLE_CONFIG[start..]
            .lines()
            .map(|line| {
                line.strip_prefix("# ")
                    .unwrap_or(line.trim_start_matches('#'))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = Config::from_toml_str(&text).unwrap();
        let acl = config.acl().unwrap();
        assert!(acl.is_allowed(Action::Publish, "7", None, "devices/7/temp"));
        assert!(!acl.is_allowed(Action::Publish, "7", None, "devices/8/temp"));
        assert!(acl.is_allowed(Action::Subscribe, "7", None, "devices/7/cmd"));
        assert!(!acl.is_allowed(Action::Subscribe, "7", None, "devices/8/cmd"));
        assert!(!acl.is_allowed(Action::Subscribe, "7", None, "#"));
        assert!(acl.is_allowed(Action::Subscribe, "dash", Some("ops"), "devices/#"));
        assert!(!acl.is_allowed(Action::Publish, "dash", Some("ops"), "devices/7/cmd"));
    }

    #[test]
    fn full_config_parses() {
        let config = Config::from_toml_str(
            r#"
            listen = "0.0.0.0:1884"
            max_connections = 5
            max_packet_size = 4096
            connect_timeout_secs = 2.5
            shutdown_grace_ms = 0
            sinks = ["mqtt"]
            metrics_listen = "127.0.0.1:9100"

            [tls]
            listen = "0.0.0.0:8883"
            cert = "/etc/cert.pem"
            key = "/etc/key.pem"

            [events]
            prefix = "acme/SYSTEM"
            qos = 0
            queue_capacity = 10
            payload = { truncate = 256 }
            node = "node-1"
            message = { enabled = false }
            msgack.qos = 2

            [access]
            allow_anonymous = false
            system_subscribers = ["user:ops", "client:monitor"]
            loopback_may_subscribe = false
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 1884);
        assert_eq!(
            config.tls.as_ref().unwrap().cert,
            PathBuf::from("/etc/cert.pem")
        );
        assert_eq!(config.connect_timeout(), Duration::from_millis(2500));
        assert_eq!(config.events.payload, PayloadMode::Truncate(256));
        assert_eq!(config.events.node.as_deref(), Some("node-1"));
        assert!(!config.events.kind(EventKind::Message).enabled);
        assert!(config.events.kind(EventKind::Connected).enabled);
        assert_eq!(config.events.qos_of(EventKind::MsgAck), QoS::ExactlyOnce);
        assert_eq!(config.events.qos_of(EventKind::Connected), QoS::AtMostOnce);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
    }

    #[test]
    fn refused_denied_and_dropped_are_on_bounded_and_switchable() {
        let config = Config::default();
        for kind in [EventKind::Refused, EventKind::Denied, EventKind::Dropped] {
            assert!(config.events.kind(kind).enabled, "{kind} on by default");
            assert_eq!(config.events.qos_of(kind), QoS::AtLeastOnce);
            assert_eq!(config.events.rate_limit_of(kind), 1_000);
        }
        assert_eq!(config.events.rate_limit_of(EventKind::Message), 0);
        assert_eq!(config.events.rate_limit_per_client, 10);
        let config = Config::from_toml_str(
            r#"
            [events]
            rate_limit = 0
            rate_limit_per_client = 3
            refused = { enabled = false }
            denied.qos = 0
            [events.dropped]
            qos = 2
            "#,
        )
        .unwrap();
        assert!(!config.events.kind(EventKind::Refused).enabled);
        assert_eq!(config.events.qos_of(EventKind::Denied), QoS::AtMostOnce);
        assert_eq!(config.events.qos_of(EventKind::Dropped), QoS::ExactlyOnce);
        assert_eq!(config.events.rate_limit_of(EventKind::Denied), 0);
        assert!(error_of("[events.denied]\nqos = 3").contains("events.denied.qos"));
        assert!(
            error_of("[events]\nrate_limit_per_client = 70000").contains("rate_limit_per_client")
        );
    }

    #[test]
    fn payload_modes() {
        for (text, mode) in [
            ("\"full\"", PayloadMode::Full),
            ("\"omit\"", PayloadMode::Omit),
            ("{ truncate = 3 }", PayloadMode::Truncate(3)),
        ] {
            let config = Config::from_toml_str(&format!("[events]\npayload = {text}")).unwrap();
            assert_eq!(config.events.payload, mode, "{text}");
        }
        assert!(error_of("[events]\npayload = \"half\"").contains("half"));
        assert!(error_of("[events]\npayload = { truncate = 0 }").starts_with("events.payload:"));
    }

    #[test]
    fn websocket_tables_and_flag() {
        let config = Config::from_toml_str(
            "[websocket]\nlisten = \"127.0.0.1:8083\"\n\
             [websocket_tls]\nlisten = \"127.0.0.1:8084\"\npath = \"/ws\"\ncert = \"c.pem\"\nkey = \"k.pem\"",
        )
        .unwrap();
        let ws = config.websocket.clone().unwrap();
        assert_eq!(ws.listen, "127.0.0.1:8083".parse().unwrap());
        assert_eq!(ws.path, "/mqtt");
        let wss = config.websocket_tls.clone().unwrap();
        assert_eq!(
            (wss.path.as_str(), wss.cert.to_str()),
            ("/ws", Some("c.pem"))
        );
        // The flag keeps a configured path, and adds the table with the default path.
        let mut with_path =
            Config::from_toml_str("[websocket]\nlisten = \"127.0.0.1:8083\"\npath = \"/live\"")
                .unwrap();
        with_path.set_websocket_listen("0.0.0.0:9001".parse().unwrap());
        let ws = with_path.websocket.unwrap();
        assert_eq!((ws.listen.port(), ws.path.as_str()), (9001, "/live"));
        let mut default = Config::default();
        default.set_websocket_listen("127.0.0.1:9001".parse().unwrap());
        assert_eq!(default.websocket.unwrap().path, DEFAULT_WEBSOCKET_PATH);
        assert!(error_of("[websocket_tls]\nlisten = \"127.0.0.1:8084\"").contains("cert"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[events]\nqos = 3", "events.qos: must be 0, 1 or 2, got 3"),
            (
                "[access]\nacl_default = \"maybe\"",
                "access.acl_default: must be \"allow\" or \"deny\", got \"maybe\"",
            ),
            (
                "[[acl]]\npermission = \"allow\"\naction = \"read\"\ntopic = \"a\"",
                "acl[0].action: must be \"publish\", \"subscribe\" or \"all\", got \"read\"",
            ),
            (
                "[[acl]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"a\"\n\
                 [[acl]]\npermission = \"permit\"\naction = \"all\"\ntopic = \"a\"",
                "acl[1].permission: must be \"allow\" or \"deny\", got \"permit\"",
            ),
            (
                "[[acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"a/#/b\"",
                "acl[0].topic: not a valid topic filter",
            ),
            (
                "[[acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"a/%x\"",
                "acl[0].topic: a `%` must start `%u` (user name) or `%c` (client id)",
            ),
            (
                "[[acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"a\"\nclient_id = \"\"",
                "acl[0].client_id: must not be empty",
            ),
            (
                "[events.subscribed]\nqos = 7",
                "events.subscribed.qos: must be 0, 1 or 2, got 7",
            ),
            ("[events]\nprefix = \"a/#\"", "events.prefix:"),
            ("[events]\nprefix = \"\"", "events.prefix:"),
            ("[events]\nqueue_capacity = 0", "events.queue_capacity:"),
            ("[events]\nnode = \"\"", "events.node:"),
            ("max_connections = 0", "max_connections:"),
            ("max_packet_size = 15", "max_packet_size:"),
            ("max_packet_size = 268435461", "max_packet_size:"),
            ("connect_timeout_secs = 0.0", "connect_timeout_secs:"),
            ("connect_timeout_secs = nan", "connect_timeout_secs:"),
            ("connect_timeout_secs = 1e300", "connect_timeout_secs:"),
            ("sinks = []", "sinks:"),
            ("sinks = [\"mqtt\", \"mqtt\"]", "sinks[1]:"),
            (
                "sinks = [\"kafka\"]",
                "kafka.brokers: must name at least one broker",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1,b:2\"]",
                "kafka.brokers[0]:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\npartitions = 0",
                "kafka.partitions:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nreplication = 0",
                "kafka.replication:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nbuffer_capacity = 0",
                "kafka.buffer_capacity:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nclient_threads_nice = 20",
                "kafka.client_threads_nice:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nclient_threads_nice = -1",
                "kafka.client_threads_nice:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\ntopic = \"a/b\"",
                "kafka.topic:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\ntopics.msgack = \"\"",
                "kafka.topics.msgack:",
            ),
            (
                "sinks = [\"kafka\"]\n[events]\nprefix = \"a b\"\n[kafka]\nbrokers = [\"a:1\"]",
                "events.prefix:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nproperties = { \"bootstrap.servers\" = \"x\" }",
                "kafka.properties.\"bootstrap.servers\":",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nspool = { dir = \"/x\", max_bytes = 10 }",
                "kafka.spool.max_bytes:",
            ),
            (
                "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nspool = { dir = \"/x\", fsync = { every_ms = 0 } }",
                "kafka.spool.fsync:",
            ),
            ("metrics_listen = \"127.0.0.1:1883\"", "metrics_listen:"),
            (
                "[tls]\nlisten = \"127.0.0.1:1883\"\ncert = \"c\"\nkey = \"k\"",
                "tls.listen:",
            ),
            (
                "[websocket]\nlisten = \"127.0.0.1:1883\"",
                "websocket.listen: 127.0.0.1:1883 is also `listen`",
            ),
            (
                "[websocket]\nlisten = \"127.0.0.1:8083\"\npath = \"mqtt\"",
                "websocket.path:",
            ),
            (
                "[websocket_tls]\nlisten = \"127.0.0.1:8084\"\npath = \"/a?b\"\ncert = \"c\"\nkey = \"k\"",
                "websocket_tls.path:",
            ),
            (
                "metrics_listen = \"127.0.0.1:8083\"\n[websocket]\nlisten = \"127.0.0.1:8083\"",
                "metrics_listen: 127.0.0.1:8083 is also `websocket.listen`",
            ),
            (
                "[access]\nsystem_subscribers = [\"ops\"]",
                "access.system_subscribers[0]:",
            ),
            (
                "[access]\nsystem_subscribers = [\"user:\"]",
                "access.system_subscribers[0]:",
            ),
            (
                "[[users]]\nusername = \"a\"\npassword_hash = \"plain\"",
                "users[0].password_hash: not a PHC string",
            ),
            (
                "[[users]]\nusername = \"\"\npassword_hash = \"x\"",
                "users[0].username: must not be empty",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(text);
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn kafka_config() {
        let config = Config::from_toml_str(
            r#"
            sinks = ["mqtt", "kafka"]
            [kafka]
            brokers = ["k1:9092", "k2:9092"]
            properties = { "compression.type" = "zstd", "linger.ms" = 20, "enable.idempotence" = true }
            topics.message = "mqtt-messages"
            partitions = 6
            replication = 3
            buffer_capacity = 10
            drop_policy = "drop_newest"
            flush_timeout_ms = 100
            [kafka.spool]
            dir = "/var/spool/activity"
            max_bytes = 1048576
            fsync = { every_ms = 200 }
            "#,
        )
        .unwrap();
        let kafka = &config.kafka;
        assert_eq!(kafka.brokers, ["k1:9092", "k2:9092"]);
        assert_eq!(kafka.properties["linger.ms"].to_string(), "20");
        assert_eq!(kafka.properties["enable.idempotence"].to_string(), "true");
        assert_eq!(kafka.properties["compression.type"].to_string(), "zstd");
        assert_eq!(kafka.drop_policy, DropPolicy::DropNewest);
        let spool = kafka.spool.as_ref().unwrap();
        assert_eq!(spool.fsync, FsyncPolicy::EveryMs(200));
        assert_eq!(
            kafka.topic_of(EventKind::Message, "SYSTEM"),
            "mqtt-messages"
        );
        assert_eq!(
            kafka.topic_of(EventKind::Connected, "SYSTEM"),
            "SYSTEM.presence.connected"
        );
        assert_eq!(
            kafka.topic_of(EventKind::MsgAck, "acme/SYSTEM"),
            "acme.SYSTEM.msgack"
        );
        let one = KafkaConfig {
            topic: Some("activity".into()),
            ..KafkaConfig::default()
        };
        assert_eq!(one.topic_of(EventKind::Subscribed, "SYSTEM"), "activity");
        // A [kafka] table without the sink is not checked.
        Config::from_toml_str("[kafka]\npartitions = 0").unwrap();
        let spool = Config::from_toml_str(
            "sinks = [\"kafka\"]\n[kafka]\nbrokers = [\"a:1\"]\nspool = { dir = \"/x\" }",
        )
        .unwrap();
        let spool = spool.kafka.spool.unwrap();
        assert_eq!(spool.fsync, FsyncPolicy::Always);
        assert_eq!(spool.max_bytes, 1 << 30);
    }

    #[test]
    fn user_errors_name_the_index() {
        // A valid argon2id PHC string (the example's), so that only the second user is wrong.
        let example = Config::from_toml_str(EXAMPLE_CONFIG).unwrap();
        let hash = &example.users[0].password_hash;
        let text = format!(
            "[[users]]\nusername = \"a\"\npassword_hash = \"{hash}\"\n\
             [[users]]\nusername = \"b\"\npassword_hash = \"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n"
        );
        let message = error_of(&text);
        assert!(
            message.starts_with("users[1].password_hash: not an argon2 hash"),
            "{message}"
        );
        let text = format!(
            "[[users]]\nusername = \"a\"\npassword_hash = \"{hash}\"\n\
             [[users]]\nusername = \"a\"\npassword_hash = \"{hash}\"\n"
        );
        assert!(error_of(&text).starts_with("users[1].username: \"a\" is listed twice"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_named() {
        assert!(error_of("lisen = \"1.2.3.4:1\"").contains("lisen"));
        assert!(error_of("[events]\nqso = 1").contains("qso"));
        assert!(error_of("[events.message]\nenabeld = true").contains("enabeld"));
        assert!(error_of("[[users]]\nusername = \"a\"\npassword = \"x\"").contains("password"));
        assert!(error_of("[tls]\nlisten = \"0.0.0.0:8883\"").contains("cert"));
        assert!(error_of("listen = \"nowhere\"").contains("listen"));
        assert!(error_of("sinks = [\"carrier-pigeon\"]").contains("carrier-pigeon"));
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("/nonexistent/activity-broker.toml");
        let message = Config::load(missing).unwrap_err().to_string();
        assert!(
            message.starts_with("/nonexistent/activity-broker.toml: cannot read:"),
            "{message}"
        );

        let path = std::env::temp_dir().join(format!(
            "activity-broker-config-test-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, "listen = 5\n").unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        std::fs::write(&path, "listen = \"127.0.0.1:2000\"\n").unwrap();
        let loaded = Config::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(
            message.starts_with(&format!("{}: ", path.display())),
            "{message}"
        );
        assert_eq!(loaded.unwrap().listen.port(), 2000);
    }

    #[test]
    fn system_subscribers() {
        let access = AccessConfig {
            allow_anonymous: true,
            system_subscribers: vec!["user:ops".into(), "client:monitor".into()],
            ..AccessConfig::default()
        };
        assert!(access.is_system_subscriber(Some("ops"), "x"));
        assert!(access.is_system_subscriber(None, "monitor"));
        assert!(!access.is_system_subscriber(Some("monitor"), "ops"));
        assert!(!access.is_system_subscriber(None, "x"));

        // Without loopback trust the listing still holds (the loopback half is the engine's
        // `ServerConfig::loopback_may_subscribe_system`, tested there).
        let strict = AccessConfig {
            loopback_may_subscribe: false,
            ..access
        };
        assert!(strict.is_system_subscriber(Some("ops"), "x"));
        assert!(!strict.is_system_subscriber(None, "x"));
    }

    #[test]
    fn debug_hides_password_hashes() {
        let user = UserConfig {
            username: "a".into(),
            password_hash: "$argon2id$secret".into(),
        };
        assert!(!format!("{user:?}").contains("secret"));
    }
}
