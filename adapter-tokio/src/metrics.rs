//! Counters of the broker, and a minimal HTTP server that exposes them to Prometheus.
//!
//! [`Metrics::render`] writes the Prometheus text exposition format, version 0.0.4; [`serve`]
//! answers `GET /metrics` with it over HTTP/1.1 (RFC 9112), closing every connection after one
//! response.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use activity_core::event::EventKind;
use activity_core::server::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The broker's counters; every field is updated with relaxed atomics and read by
/// [`Metrics::render`].
#[derive(Default, Debug)]
pub struct Metrics {
    /// Client connections open now (a gauge: increment on accept, decrement on close).
    pub connections_current: AtomicU64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// CONNECTs refused with a non-zero CONNACK return code, for any reason.
    pub connections_refused: AtomicU64,
    /// CONNECTs refused with return code 1, unacceptable protocol version.
    pub refused_protocol_version: AtomicU64,
    /// CONNECTs refused with return code 2, identifier rejected.
    pub refused_identifier: AtomicU64,
    /// CONNECTs refused with return code 3, server unavailable.
    pub refused_server_unavailable: AtomicU64,
    /// CONNECTs refused with return code 4, bad user name or password.
    pub refused_bad_credentials: AtomicU64,
    /// CONNECTs refused with return code 5, not authorized.
    pub refused_not_authorized: AtomicU64,
    /// MQTT packets received from clients.
    pub packets_in: AtomicU64,
    /// MQTT packets sent to clients.
    pub packets_out: AtomicU64,
    /// Bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// Activity events emitted, by kind: index with `kind as usize` (see [`Metrics::event_emitted`]).
    pub events_emitted: [AtomicU64; EventKind::ALL.len()],
    /// Activity events dropped because the event queue was full.
    pub events_dropped: AtomicU64,
    /// `refused`, `denied` and `dropped` events not emitted because a rate bound held them
    /// back (`events.rate_limit_per_client` per connection, `events.rate_limit` for all), by
    /// kind: index with `kind as usize`.
    pub events_suppressed: [AtomicU64; EventKind::ALL.len()],
    /// Activity events that could not be encoded as JSON.
    pub events_encode_failed: AtomicU64,
    /// Activity events handed to the MQTT sink (published on system topics).
    pub events_sink_mqtt: AtomicU64,
    /// Activity events the MQTT sink did not publish because no subscription receives their
    /// kind (see [`crate::interest`]).
    pub events_unobserved: AtomicU64,
    /// PUBLISHes from clients on system topics, refused.
    pub publishes_denied: AtomicU64,
    /// Subscriptions to system topics by clients not allowed to, refused.
    pub subscriptions_denied: AtomicU64,
    /// PUBLISHes (and last wills) the `[[acl]]` rules refused: dropped, the client kept.
    pub publishes_not_allowed: AtomicU64,
    /// SUBSCRIBE filters the `[[acl]]` rules refused (SUBACK 0x80, MQTT 5: 0x87).
    pub subscriptions_not_allowed: AtomicU64,
    /// Activity events the router delivered to a client only for filters whose first level is
    /// a wildcard (`#`, `+/...`), which receive none: not sent.
    pub events_not_wanted: AtomicU64,
    /// Deliveries whose `msgack` was given up: the client's store of unacknowledged
    /// deliveries was full (the oldest goes) or the delivery too large for it.
    pub deliveries_evicted: AtomicU64,
    /// Messages lost on the way: a publish or last will the router refused, or a delivery to
    /// a client with no room for it.
    pub messages_lost: AtomicU64,
    /// Acknowledgements that matched no tracked message.
    pub acks_unmatched: AtomicU64,
    /// MQTT 5 deliveries dropped, not sent, as the engine decided: larger than the client's
    /// Maximum Packet Size.
    pub deliveries_too_large: AtomicU64,
    /// MQTT 5 deliveries whose Message Expiry Interval passed before they could be sent.
    pub deliveries_expired: AtomicU64,
    /// MQTT 5 deliveries no subscription of the client wanted (No Local, Retain Handling 2).
    pub deliveries_not_wanted: AtomicU64,
    /// MQTT 5 deliveries that matched more subscriptions with identifiers than one carries.
    pub subscription_ids_cut: AtomicU64,
    /// MQTT 5 sessions kept after their connection now (a gauge; bounded by
    /// `max_kept_sessions`).
    pub sessions_kept: AtomicU64,
    /// Kept MQTT 5 sessions that reached their expiry and ended.
    pub sessions_expired: AtomicU64,
    /// MQTT 5 sessions that asked to outlive their connection but ended with it because
    /// `max_kept_sessions` were kept already.
    pub sessions_not_kept: AtomicU64,
    /// Wills published after their Will Delay Interval (or when their kept session ended).
    pub wills_delayed: AtomicU64,
    /// Connections closed for a protocol violation (malformed or unexpected packet).
    pub protocol_errors: AtomicU64,
    /// Connections closed because the client was silent past 1.5 times its keep-alive.
    pub keepalive_timeouts: AtomicU64,
    /// Sockets closed because no CONNECT arrived within the connect timeout.
    pub connect_timeouts: AtomicU64,
    /// Tap mode: client CONNECTs refused (CONNACK 3) because the upstream broker could not be
    /// reached or did not answer.
    pub upstream_unreachable: AtomicU64,
    /// Tap mode: connections of the event publisher to the upstream broker, the first included.
    pub upstream_publisher_connects: AtomicU64,
    /// Tap mode: connections of the event publisher given up because the upstream broker did
    /// not answer a PINGREQ within the keep-alive, or a write did not complete within twice
    /// that.
    pub upstream_publisher_timeouts: AtomicU64,
    /// WebSocket connections closed before or instead of MQTT, by [`WsReject`].
    pub websocket_rejects: [AtomicU64; WsReject::ALL.len()],
    /// Tap mode: QoS 1 events the event publisher sent again, with DUP, after a reconnect
    /// because the upstream broker had not acknowledged them.
    pub upstream_events_resent: AtomicU64,
    /// Messages rumqttd's router skipped for a slow subscriber: its log wrapped past the
    /// subscriber's position and the subscriber jumped to the head.
    pub deliveries_skipped: AtomicU64,
    /// Subscriptions refused because the router's logs are at `router.max_log_memory`
    /// ([`crate::log_budget`]).
    pub router_filters_refused: AtomicU64,
    /// Filters the router keeps a log for, with `router.max_log_memory` set (a gauge).
    pub router_logs: AtomicU64,
    /// Times a connection gave back the buffers it held after a second without traffic (see
    /// `connection::IDLE_RELEASE`).
    pub buffers_released: AtomicU64,
    /// Bytes of read and transmit buffer those connections gave back (their queues towards
    /// the router and the event sinks go too, not counted).
    pub buffer_bytes_released: AtomicU64,
    /// Router links whose build waited for one of the `connection::LINK_BUILDERS` to finish.
    pub link_build_waits: AtomicU64,
    /// The Kafka sink's counters.
    pub kafka: KafkaMetrics,
}

/// Why a WebSocket connection was closed by the listener itself (counted in
/// `activity_websocket_rejected_total{reason=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsReject {
    /// The upgrade request named another path (answered 404).
    Path,
    /// The client offered only subprotocols other than `mqtt` and `mqttv3.1` (answered 400).
    Subprotocol,
    /// Not a WebSocket upgrade request, or a malformed one (closed, or answered by
    /// tungstenite with its own error status).
    Handshake,
    /// The TLS and WebSocket handshakes did not finish within the connect timeout.
    HandshakeTimeout,
    /// A text frame (MQTT goes in binary frames): closed with status 1003.
    TextFrame,
    /// A frame or message larger than `max_packet_size`: closed with status 1009.
    FrameTooLarge,
    /// Another WebSocket protocol violation (bad framing, unmasked client frame): closed.
    Protocol,
}

impl WsReject {
    /// Every reason, in label order.
    pub const ALL: [WsReject; 7] = [
        WsReject::Path,
        WsReject::Subprotocol,
        WsReject::Handshake,
        WsReject::HandshakeTimeout,
        WsReject::TextFrame,
        WsReject::FrameTooLarge,
        WsReject::Protocol,
    ];

    /// The `reason` label.
    pub const fn name(self) -> &'static str {
        match self {
            WsReject::Path => "path",
            WsReject::Subprotocol => "subprotocol",
            WsReject::Handshake => "handshake",
            WsReject::HandshakeTimeout => "handshake_timeout",
            WsReject::TextFrame => "text_frame",
            WsReject::FrameTooLarge => "frame_too_large",
            WsReject::Protocol => "protocol",
        }
    }
}

/// The upper bounds of the Kafka delivery latency histogram, in microseconds.
pub const KAFKA_LATENCY_BUCKETS_US: [u64; 10] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000, 30_000_000,
];

/// The counters of the Kafka sink.
#[derive(Default, Debug)]
pub struct KafkaMetrics {
    /// Events handed to the Kafka sink: each is later delivered, failed, dropped, or still
    /// buffered.
    pub offered: AtomicU64,
    /// Events Kafka acknowledged.
    pub delivered: AtomicU64,
    /// Events Kafka refused for good (a permanent error, such as a record too large).
    pub failed: AtomicU64,
    /// Events dropped because the Kafka buffer or spool was full.
    pub dropped: AtomicU64,
    /// Events waiting for Kafka now: in memory, in the spool, or sent and not yet acknowledged
    /// (a gauge).
    pub buffered: AtomicU64,
    /// Bytes of events in the spool now (a gauge; the file itself is larger).
    pub spool_bytes: AtomicU64,
    /// Events in the spool now, sent or not (a gauge): with `fsync = "always"` they are on
    /// disk.
    pub spool_events: AtomicU64,
    /// Delivery latencies (from handing a record to the producer to its acknowledgement), by
    /// bucket of [`KAFKA_LATENCY_BUCKETS_US`]; the last counter is `+Inf`, not cumulative.
    pub latency_buckets: [AtomicU64; 11],
    /// The sum of the delivery latencies, in microseconds.
    pub latency_sum_us: AtomicU64,
    /// 1 while the sink can send (Kafka answered and its topics exist), else 0 (a gauge).
    pub ready: AtomicU64,
}

impl KafkaMetrics {
    /// Records one acknowledged delivery that took `latency`.
    pub fn observe_delivery(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = KAFKA_LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(KAFKA_LATENCY_BUCKETS_US.len());
        bump(&self.latency_buckets[bucket]);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        bump(&self.delivered);
    }
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts one emitted event of `kind`.
    pub fn event_emitted(&self, kind: EventKind) {
        bump(&self.events_emitted[kind as usize]);
    }

    /// Counts what the engine counts (see [`Counter`]).
    pub fn count(&self, counter: Counter) {
        let field = match counter {
            Counter::PacketIn => &self.packets_in,
            Counter::PacketOut => &self.packets_out,
            Counter::ConnectRefused(reason) => {
                return self.connect_refused(reason.connect_return_code().as_u8());
            }
            Counter::ConnectTimeout => &self.connect_timeouts,
            Counter::KeepAliveTimeout => &self.keepalive_timeouts,
            Counter::PublishDenied => &self.publishes_denied,
            Counter::SubscriptionDenied | Counter::SubscriptionRefused => {
                &self.subscriptions_denied
            }
            Counter::PublishNotRouted | Counter::DeliveryDropped => &self.messages_lost,
            Counter::ProtocolError | Counter::PacketTooLarge | Counter::QuotaExceeded => {
                &self.protocol_errors
            }
            Counter::DeliveryTooLarge => &self.deliveries_too_large,
            Counter::DeliveryExpired => &self.deliveries_expired,
            Counter::DeliveryNotWanted => &self.deliveries_not_wanted,
            Counter::PublishNotAllowed => &self.publishes_not_allowed,
            Counter::SubscriptionNotAllowed => &self.subscriptions_not_allowed,
            Counter::EventNotWanted => &self.events_not_wanted,
            Counter::SubscriptionIdsCut => &self.subscription_ids_cut,
            Counter::SessionExpired => &self.sessions_expired,
            Counter::SessionNotKept => &self.sessions_not_kept,
            Counter::WillDelayed => &self.wills_delayed,
            Counter::EventSuppressed(kind) => &self.events_suppressed[kind as usize],
            // `Counter` is non-exhaustive; a counter added to the engine gets its field here.
            _ => return,
        };
        bump(field);
    }

    /// Counts one WebSocket connection closed for `reason`.
    pub fn websocket_rejected(&self, reason: WsReject) {
        bump(&self.websocket_rejects[reason as usize]);
    }

    /// Counts one accepted connection, now open.
    pub fn connection_opened(&self) {
        bump(&self.connections_total);
        bump(&self.connections_current);
    }

    /// Counts one accepted connection as closed.
    pub fn connection_closed(&self) {
        self.connections_current.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one refused CONNECT with CONNACK return code `code` (1 to 5; others count only
    /// in [`Metrics::connections_refused`]).
    pub fn connect_refused(&self, code: u8) {
        bump(&self.connections_refused);
        if let Some(counter) = self.refused_by_code(code) {
            bump(counter);
        }
    }

    /// The counter of CONNACK return code `code`, 1 to 5.
    fn refused_by_code(&self, code: u8) -> Option<&AtomicU64> {
        match code {
            0x01 => Some(&self.refused_protocol_version),
            0x02 => Some(&self.refused_identifier),
            0x03 => Some(&self.refused_server_unavailable),
            0x04 => Some(&self.refused_bad_credentials),
            0x05 => Some(&self.refused_not_authorized),
            _ => None,
        }
    }

    /// The counters in the Prometheus text format 0.0.4, every name prefixed `activity_`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut r = Renderer { out: &mut out };
        r.single(
            "connections_current",
            "gauge",
            "Client connections open now.",
            &self.connections_current,
        );
        r.single(
            "connections_total",
            "counter",
            "Client connections accepted since start.",
            &self.connections_total,
        );
        r.single(
            "connections_refused_total",
            "counter",
            "CONNECTs refused for any reason.",
            &self.connections_refused,
        );
        r.labelled(
            "connect_refused_by_reason_total",
            "CONNECTs refused, by CONNACK return code.",
            "reason",
            &[
                (
                    "unacceptable_protocol_version",
                    &self.refused_protocol_version,
                ),
                ("identifier_rejected", &self.refused_identifier),
                ("server_unavailable", &self.refused_server_unavailable),
                ("bad_username_or_password", &self.refused_bad_credentials),
                ("not_authorized", &self.refused_not_authorized),
            ],
        );
        r.single(
            "packets_received_total",
            "counter",
            "MQTT packets received.",
            &self.packets_in,
        );
        r.single(
            "packets_sent_total",
            "counter",
            "MQTT packets sent.",
            &self.packets_out,
        );
        r.single(
            "bytes_received_total",
            "counter",
            "Bytes received from clients.",
            &self.bytes_in,
        );
        r.single(
            "bytes_sent_total",
            "counter",
            "Bytes sent to clients.",
            &self.bytes_out,
        );
        let by_kind: Vec<(&str, &AtomicU64)> = EventKind::ALL
            .iter()
            .map(|&kind| (kind.name(), &self.events_emitted[kind as usize]))
            .collect();
        r.labelled(
            "events_emitted_total",
            "Activity events emitted, by kind.",
            "kind",
            &by_kind,
        );
        r.single(
            "events_dropped_total",
            "counter",
            "Activity events dropped because the event queue was full.",
            &self.events_dropped,
        );
        let suppressed: Vec<(&str, &AtomicU64)> =
            [EventKind::Refused, EventKind::Denied, EventKind::Dropped]
                .iter()
                .map(|&kind| (kind.name(), &self.events_suppressed[kind as usize]))
                .collect();
        r.labelled(
            "events_suppressed_total",
            "Refused, denied and dropped events a rate bound held back, by kind.",
            "kind",
            &suppressed,
        );
        r.single(
            "events_encode_failed_total",
            "counter",
            "Activity events that could not be encoded.",
            &self.events_encode_failed,
        );
        r.single(
            "events_unobserved_total",
            "counter",
            "Activity events not published on MQTT because no subscription receives them.",
            &self.events_unobserved,
        );
        r.labelled(
            "events_sunk_total",
            "Activity events handed to a sink, by sink.",
            "sink",
            &[
                ("mqtt", &self.events_sink_mqtt),
                ("kafka", &self.kafka.offered),
            ],
        );
        self.render_kafka(&mut r);
        r.single(
            "publishes_denied_total",
            "counter",
            "Client PUBLISHes on system topics, refused.",
            &self.publishes_denied,
        );
        r.single(
            "subscriptions_denied_total",
            "counter",
            "Subscriptions to system topics, refused.",
            &self.subscriptions_denied,
        );
        r.labelled(
            "acl_denied_total",
            "Publishes and subscriptions the [[acl]] rules refused, by action.",
            "action",
            &[
                ("publish", &self.publishes_not_allowed),
                ("subscribe", &self.subscriptions_not_allowed),
            ],
        );
        r.single(
            "events_not_wanted_total",
            "counter",
            "Activity events delivered only for wildcard filters (#, +/...), which receive none: not sent.",
            &self.events_not_wanted,
        );
        r.single(
            "deliveries_evicted_total",
            "counter",
            "Deliveries whose msgack was given up because the client's store of unacknowledged deliveries was full.",
            &self.deliveries_evicted,
        );
        r.single(
            "messages_lost_total",
            "counter",
            "Publishes or last wills the router refused, and deliveries with no room.",
            &self.messages_lost,
        );
        r.single(
            "deliveries_too_large_total",
            "counter",
            "MQTT 5 deliveries larger than the client's Maximum Packet Size, dropped.",
            &self.deliveries_too_large,
        );
        r.single(
            "deliveries_expired_total",
            "counter",
            "MQTT 5 deliveries whose Message Expiry Interval passed, dropped.",
            &self.deliveries_expired,
        );
        r.single(
            "deliveries_not_wanted_total",
            "counter",
            "MQTT 5 deliveries no subscription wanted (No Local, Retain Handling 2), not sent.",
            &self.deliveries_not_wanted,
        );
        r.single(
            "subscription_ids_cut_total",
            "counter",
            "MQTT 5 deliveries that matched more subscription identifiers than one carries.",
            &self.subscription_ids_cut,
        );
        r.single(
            "sessions_kept",
            "gauge",
            "MQTT 5 sessions kept after their connection ended.",
            &self.sessions_kept,
        );
        r.single(
            "sessions_expired_total",
            "counter",
            "Kept MQTT 5 sessions that reached their expiry.",
            &self.sessions_expired,
        );
        r.single(
            "sessions_not_kept_total",
            "counter",
            "MQTT 5 sessions that ended with their connection because max_kept_sessions were kept.",
            &self.sessions_not_kept,
        );
        r.single(
            "wills_delayed_total",
            "counter",
            "Wills published after their will delay.",
            &self.wills_delayed,
        );
        r.single(
            "acks_unmatched_total",
            "counter",
            "Acknowledgements that matched no tracked message.",
            &self.acks_unmatched,
        );
        r.single(
            "protocol_errors_total",
            "counter",
            "Connections closed for a protocol violation.",
            &self.protocol_errors,
        );
        r.single(
            "keepalive_timeouts_total",
            "counter",
            "Connections closed because the keep-alive expired.",
            &self.keepalive_timeouts,
        );
        r.single(
            "connect_timeouts_total",
            "counter",
            "Sockets closed because no CONNECT arrived within the connect timeout.",
            &self.connect_timeouts,
        );
        let by_reason: Vec<(&str, &AtomicU64)> = WsReject::ALL
            .iter()
            .map(|&reason| (reason.name(), &self.websocket_rejects[reason as usize]))
            .collect();
        r.labelled(
            "websocket_rejected_total",
            "WebSocket connections closed by the listener, by reason.",
            "reason",
            &by_reason,
        );
        r.single(
            "upstream_unreachable_total",
            "counter",
            "Tap mode: CONNECTs refused because the upstream broker was unreachable.",
            &self.upstream_unreachable,
        );
        r.single(
            "upstream_publisher_connects_total",
            "counter",
            "Tap mode: connections of the event publisher to the upstream broker.",
            &self.upstream_publisher_connects,
        );
        r.single(
            "upstream_publisher_timeouts_total",
            "counter",
            "Tap mode: event publisher connections given up because the upstream broker stopped answering.",
            &self.upstream_publisher_timeouts,
        );
        r.single(
            "upstream_events_resent_total",
            "counter",
            "Tap mode: QoS 1 events sent again (DUP) to the upstream broker after a reconnect.",
            &self.upstream_events_resent,
        );
        r.single(
            "deliveries_skipped_total",
            "counter",
            "Messages the router skipped for a slow subscriber (its log wrapped).",
            &self.deliveries_skipped,
        );
        r.single(
            "router_filters_refused_total",
            "counter",
            "Subscriptions refused because the router's logs are at router.max_log_memory.",
            &self.router_filters_refused,
        );
        r.single(
            "router_logs",
            "gauge",
            "Filters the router keeps a log for (with router.max_log_memory set).",
            &self.router_logs,
        );
        r.single(
            "buffers_released_total",
            "counter",
            "Times a connection gave back its buffers after a second without traffic.",
            &self.buffers_released,
        );
        r.single(
            "buffer_bytes_released_total",
            "counter",
            "Bytes of read and transmit buffer connections gave back after a second without traffic.",
            &self.buffer_bytes_released,
        );
        r.single(
            "link_build_waits_total",
            "counter",
            "Router links whose build waited for a free link builder (a few are built at once).",
            &self.link_build_waits,
        );
        out
    }

    /// The Kafka sink's families.
    fn render_kafka(&self, r: &mut Renderer<'_>) {
        let kafka = &self.kafka;
        r.single(
            "kafka_delivered_total",
            "counter",
            "Activity events acknowledged by Kafka.",
            &kafka.delivered,
        );
        r.single(
            "kafka_failed_total",
            "counter",
            "Activity events Kafka refused with a permanent error.",
            &kafka.failed,
        );
        r.single(
            "kafka_dropped_total",
            "counter",
            "Activity events dropped because the Kafka buffer or spool was full.",
            &kafka.dropped,
        );
        r.single(
            "kafka_ready",
            "gauge",
            "1 while the Kafka sink can send (Kafka answered, its topics exist), else 0.",
            &kafka.ready,
        );
        r.single(
            "kafka_buffered",
            "gauge",
            "Activity events waiting for Kafka (memory, spool, in flight).",
            &kafka.buffered,
        );
        r.single(
            "kafka_spool_bytes",
            "gauge",
            "Bytes of activity events in the Kafka spool.",
            &kafka.spool_bytes,
        );
        r.single(
            "kafka_spool_events",
            "gauge",
            "Activity events in the Kafka spool (sent or not).",
            &kafka.spool_events,
        );
        let name = "kafka_delivery_latency_seconds";
        r.header(
            name,
            "histogram",
            "Time from handing an event to the Kafka producer to its acknowledgement.",
        );
        let mut cumulative = 0;
        for (i, bucket) in kafka.latency_buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = KAFKA_LATENCY_BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |&us| format!("{}", us as f64 / 1e6));
            let _ = writeln!(r.out, "activity_{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = kafka.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(r.out, "activity_{name}_sum {sum}");
        let _ = writeln!(r.out, "activity_{name}_count {cumulative}");
    }
}

/// Writes metric families into a string.
struct Renderer<'a> {
    /// The text so far.
    out: &'a mut String,
}

impl Renderer<'_> {
    /// The `# HELP` and `# TYPE` lines of `activity_<name>`.
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            self.out,
            "# HELP activity_{name} {help}\n# TYPE activity_{name} {kind}"
        );
    }

    /// A metric without labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: &AtomicU64) {
        self.header(name, kind, help);
        let _ = writeln!(
            self.out,
            "activity_{name} {}",
            value.load(Ordering::Relaxed)
        );
    }

    /// A counter with one label; the label values are fixed names that need no escaping.
    fn labelled(&mut self, name: &str, help: &str, label: &str, values: &[(&str, &AtomicU64)]) {
        self.header(name, "counter", help);
        for (value_name, value) in values {
            let _ = writeln!(
                self.out,
                "activity_{name}{{{label}=\"{value_name}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// The largest request head read, in bytes.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head, and to read the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most scrape connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` on `listener` until the task is dropped, one task per connection.
///
/// `GET` or `HEAD` of `/metrics` (with any query) gets `200` and [`Metrics::render`] as
/// `text/plain; version=0.0.4`; any other path or method gets `404`, a request head that is
/// malformed or over 8 KiB gets `400`, and one not complete within 5 s is dropped. Accept errors
/// (such as running out of file descriptors) are logged and retried after a pause, so this only
/// returns if the task is cancelled.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many scrape connections, closing");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &metrics).await {
                tracing::debug!(%peer, error = %e, "metrics: connection failed");
            }
            drop(permit);
        });
    }
}

/// Answers one request on `stream`, then closes it.
async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let head = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "slow request",
            ));
        }
    };
    let response = match head.as_deref().and_then(parse_request_line) {
        Some((method @ ("GET" | "HEAD"), "/metrics")) => {
            let body = metrics.render();
            response(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                method == "HEAD",
            )
        }
        Some((method, _)) => response(
            "404 Not Found",
            "text/plain",
            "not found\n",
            method == "HEAD",
        ),
        None => response("400 Bad Request", "text/plain", "bad request\n", false),
    };
    match tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "slow reader",
        )),
    }
}

/// Reads until the blank line that ends a request head; `None` if the head is over
/// [`MAX_HEAD`] bytes or the client closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_head_end(&head[searched_from..]) {
            head.truncate(searched_from + end);
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// The length of the head in `bytes` up to its blank line (`\r\n\r\n` or `\n\n`), if any.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The method and path (without query) of a request head, or `None` if it is malformed.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some((method, path))
}

/// An HTTP/1.1 response that closes the connection; `head_only` leaves the body out.
fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> String {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `request` to a fresh server and returns everything it answers.
    async fn exchange(metrics: Arc<Metrics>, request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, metrics));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        server.abort();
        String::from_utf8(answer).unwrap()
    }

    #[test]
    fn render_is_prometheus_text() {
        let metrics = Metrics::default();
        metrics.connections_current.store(3, Ordering::Relaxed);
        metrics.event_emitted(EventKind::Message);
        metrics.event_emitted(EventKind::Message);
        metrics.event_emitted(EventKind::MsgAck);
        metrics.count(Counter::EventSuppressed(EventKind::Denied));
        metrics.connect_refused(4);
        metrics.connect_refused(9);
        metrics.events_sink_mqtt.store(7, Ordering::Relaxed);
        metrics.events_unobserved.store(5, Ordering::Relaxed);
        metrics.kafka.observe_delivery(Duration::from_micros(3_000));
        metrics.kafka.observe_delivery(Duration::from_secs(60));
        metrics.kafka.offered.store(2, Ordering::Relaxed);
        let text = metrics.render();
        for line in [
            "# TYPE activity_connections_current gauge",
            "activity_connections_current 3",
            "# TYPE activity_events_emitted_total counter",
            "activity_events_emitted_total{kind=\"message\"} 2",
            "activity_events_emitted_total{kind=\"msgack\"} 1",
            "activity_events_emitted_total{kind=\"connected\"} 0",
            "activity_events_emitted_total{kind=\"dropped\"} 0",
            "# TYPE activity_events_suppressed_total counter",
            "activity_events_suppressed_total{kind=\"denied\"} 1",
            "activity_events_suppressed_total{kind=\"refused\"} 0",
            "activity_connections_refused_total 2",
            "# TYPE activity_events_unobserved_total counter",
            "activity_events_unobserved_total 5",
            "activity_connect_refused_by_reason_total{reason=\"bad_username_or_password\"} 1",
            "activity_events_sunk_total{sink=\"mqtt\"} 7",
            "activity_keepalive_timeouts_total 0",
            "activity_connect_timeouts_total 0",
            "activity_events_sunk_total{sink=\"kafka\"} 2",
            "# TYPE activity_kafka_delivery_latency_seconds histogram",
            "activity_kafka_delivery_latency_seconds_bucket{le=\"0.001\"} 0",
            "activity_kafka_delivery_latency_seconds_bucket{le=\"0.005\"} 1",
            "activity_kafka_delivery_latency_seconds_bucket{le=\"30\"} 1",
            "activity_kafka_delivery_latency_seconds_bucket{le=\"+Inf\"} 2",
            "activity_kafka_delivery_latency_seconds_sum 60.003",
            "activity_kafka_delivery_latency_seconds_count 2",
            "# TYPE activity_kafka_buffered gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line belongs to a family announced just before with # HELP and # TYPE.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let name = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_sum"))
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|base| *base == family)
                    .unwrap_or(name);
                assert_eq!(name, family, "{line}");
                assert!(
                    line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
                    "{line}"
                );
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[tokio::test]
    async fn serves_metrics() {
        let metrics = Arc::new(Metrics::default());
        metrics.connections_total.store(42, Ordering::Relaxed);
        let answer = exchange(
            Arc::clone(&metrics),
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("activity_connections_total 42\n"), "{body}");

        let answer = exchange(Arc::clone(&metrics), b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn other_requests_get_errors() {
        let metrics = Arc::new(Metrics::default());
        let answer = exchange(Arc::clone(&metrics), b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = exchange(Arc::clone(&metrics), b"POST /metrics HTTP/1.1\n\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = exchange(Arc::clone(&metrics), b"\xff\x00garbage\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 100, b'a');
        let answer = exchange(Arc::clone(&metrics), &huge).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        // A client that closes without a full head gets nothing, and the server lives on.
        let answer = exchange(Arc::clone(&metrics), b"GET /metr").await;
        assert_eq!(answer, "");
    }

    #[tokio::test]
    async fn serves_many_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::default())));
        for _ in 0..3 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        }
        server.abort();
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"GET /a?b HTTP/1.0\r\nHost: x"),
            Some(("GET", "/a"))
        );
        assert_eq!(parse_request_line(b"GET /metrics"), None);
        assert_eq!(parse_request_line(b"GET  /metrics HTTP/1.1"), None);
        assert_eq!(parse_request_line(b""), None);
        assert_eq!(find_head_end(b"a\r\n\r\nb"), Some(1));
        assert_eq!(find_head_end(b"a\n\nb"), Some(1));
        assert_eq!(find_head_end(b"a\r\n"), None);
    }
}
