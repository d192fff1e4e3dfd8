//! The network front: one task per client connection, between the socket, the engine and the
//! router.
//!
//! Every MQTT decision of a connection is the core's engine
//! ([`activity_core::server::Connection`]): CONNECT rules and CONNACK, keep-alive, the QoS
//! flows, SUBACK codes, the system-topic rules, limits, last wills and the activity events. The
//! task is its driver (`session.rs`): it reads the socket into the engine, writes what the
//! engine answers, carries the engine's routes to rumqttd's router, and hands router deliveries
//! back to the engine. What the driver adds is what the engine cannot see:
//!
//! - the questions of a CONNECT the engine asks the driver: credentials, the server's phase,
//!   the connection limit ([`crate::admission`]), takeover of an older connection with the same
//!   client id (it reports `takenover` before the new connection reports `connected`), the
//!   router link and whether the router kept a session;
//! - rumqttd's ways: every client publish enters the router at QoS 0 with a marker of its real
//!   QoS ([`crate::qos_marker`]), so that deliveries go at `min(publish QoS, subscription QoS)`
//!   (section 3.8.4) with the [`AckSequencer`](crate::sequencer::AckSequencer) completing the router's flow; the publisher of a
//!   message rides along in a user property, for `msgack`; a clean link enters the router
//!   under a pooled name ([`RouterNames`]), a kept session under its escaped client id; the router's own SUBACK and PUBREL are not passed on (the engine answered);
//! - a client that stops reading: a write may stall until the keep-alive deadline, or
//!   [`WRITE_STALL_LIMIT`] without keep-alive, and then the connection closes as
//!   `keepalive_timeout`;
//! - shutdown: every connection reports `server_shutdown` at once and keeps delivering (the
//!   others' shutdown events among it) until the broker closes the sockets;
//! - MQTT 5 sessions that outlive their connection (the engine's kept state, see
//!   [`Connection::is_kept`](activity_core::server::Connection::is_kept)): the task stays, with
//!   the client id in the registry, until the engine's deadline (a delayed will, published
//!   through a link of its own, or the expiry: the router's session is discarded by a clean
//!   link of the client id) or until the client id connects again. rumqttd 0.20 parses session
//!   expiry but keeps every persistent session forever; the router's `clean_session` flag is
//!   set from the engine's [`ConnectRequest`](activity_core::server::ConnectRequest) instead.
//!   At most `max_kept_sessions` are kept at once; past it, the session ends with its
//!   connection (`activity_sessions_not_kept_total`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use activity_core::QoS;
use activity_core::event::Transport;
use activity_core::server::{Limits, ServerConfig};
use activity_core::tracker::TrackerConfig;
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::acl::Acl;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::events::EventSender;
use crate::interest::Interest;
use crate::log_budget::LogBudget;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::session_store::HeapSessionStore;
pub use link_builders::{LINK_BUILDERS, LinkBuilders};
pub use router_names::{RouterNames, RouterSessions};

pub use crate::admission::Phase;

mod link_builders;
mod properties;
mod router_names;
mod session;
mod skips;

/// How long a write to a client without keep-alive may stall (the client reads nothing)
/// before the connection is closed as `keepalive_timeout`.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(60);

/// After this long without a read, a write or a router notification, a connection gives back
/// the buffers it holds (its read and transmit buffers, its queues towards the router and the
/// event sinks; counted in `activity_buffer_bytes_released_total`): a connection that had a
/// burst does not keep its grown buffers while it idles, and one that is busy keeps them.
pub const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Most deliveries awaiting acknowledgement that one connection remembers for `msgack`.
pub const ACK_STORE_CAPACITY: usize = 128;

/// Builds a router link for `(client_id, clean_session)`; blocking (run it off the runtime).
pub type LinkFactory =
    Arc<dyn Fn(&str, bool) -> anyhow::Result<(LinkTx, LinkRx, Notification)> + Send + Sync>;

/// A request to end a connection (or a kept session) because its client id connected again;
/// answered once the old connection's `disconnected` event is queued and the router's session
/// is where the new connection expects it.
struct Kick {
    /// Answered when the old connection is done, with the subscriptions of a kept session
    /// that the new connection resumes (see
    /// [`Connection::handle_resume`](activity_core::server::Connection::handle_resume)).
    done: oneshot::Sender<HeapSessionStore>,
    /// The new connection's clean start: it ends a kept session (and sends its delayed will).
    clean_start: bool,
}

/// The client ids connected now, to detect takeovers.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, (u64, oneshot::Sender<Kick>)>>,
}

impl Registry {
    fn insert(
        &self,
        client_id: &str,
        serial: u64,
        kick: oneshot::Sender<Kick>,
    ) -> Option<oneshot::Sender<Kick>> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(client_id.to_owned(), (serial, kick))
            .map(|(_, k)| k)
    }

    fn remove(&self, client_id: &str, serial: u64) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(client_id).is_some_and(|(s, _)| *s == serial) {
            map.remove(client_id);
        }
    }

    /// How many client ids are connected.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every connection task shares.
pub struct Shared {
    /// The broker's configuration.
    pub config: Arc<Config>,
    /// Builds router links, a few at a time.
    pub links: LinkBuilders,
    /// Where events go.
    pub events: EventSender,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connected client ids.
    pub registry: Registry,
    /// Username/password checks.
    pub auth: Authenticator,
    /// The engine's policy, the same for every connection.
    pub server: ServerConfig,
    /// One permit per allowed connection.
    pub permits: Arc<Semaphore>,
    /// The broker's phase.
    pub phase: watch::Receiver<Phase>,
    /// Source of connection serial numbers.
    pub serial: AtomicU64,
    /// Sessions that have not reported their `disconnected` event yet.
    pub unreported: AtomicU64,
    /// The subscriptions that receive events, per event kind.
    pub interest: Arc<Interest>,
    /// The topic access rules.
    pub acl: Acl,
    /// Who is online, for the HTTP API (when `http_listen` is set).
    pub presence: Option<Arc<Presence>>,
    /// The bound on the router's logs, with `router.max_log_memory` set.
    pub log_budget: Option<LogBudget>,
    /// The router names of clean links (see [`RouterNames`]).
    pub router_names: Arc<RouterNames>,
    /// The client ids whose session the router keeps (see [`RouterSessions`]).
    pub router_sessions: RouterSessions,
}

/// The engine's policy for the broker's connections: the system topics and event kinds of
/// `tracker`, the configured packet size and connect timeout, the access rule for loopback.
pub fn server_config(config: &Config, tracker: TrackerConfig) -> ServerConfig {
    ServerConfig {
        tracker,
        limits: Limits {
            max_packet_size: config.max_packet_size,
            // rumqttd's router panics when a kept session holding the last seat of a shared
            // group leaves with deliveries in flight (see the field's docs).
            shared_subscriptions_in_kept_sessions: false,
            server_keep_alive: config.server_keep_alive,
            ..Limits::HOST
        },
        connect_timeout_ms: u64::try_from(config.connect_timeout().as_millis()).unwrap_or(u64::MAX),
        loopback_may_subscribe_system: config.access.loopback_may_subscribe,
    }
}

pub use crate::events::now_ms;

/// rumqttd's router refuses client ids containing `+`, `$`, `#` or `/`: the front escapes them
/// (and `%`) so that every valid MQTT client id works. The mapping is one-to-one.
fn router_client_id(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len());
    for c in client_id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            '$' => out.push_str("%24"),
            '#' => out.push_str("%23"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Serves one client connection from `peer`, reached over `transport`, until it ends.
pub async fn serve<S>(stream: S, peer: SocketAddr, transport: Transport, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    session::serve(stream, peer, transport, shared).await;
}

/// The user property that carries the publisher of an envelope message through the router.
pub const PUBLISHER_PROPERTY: &str = "activity-publisher";

fn rumqttd_qos(qos: QoS) -> rumqttd::protocol::QoS {
    match qos {
        QoS::AtMostOnce => rumqttd::protocol::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttd::protocol::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttd::protocol::QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ids_are_escaped_one_to_one() {
        assert_eq!(router_client_id("plain-id_1"), "plain-id_1");
        assert_eq!(router_client_id("a/b+c#d$e%f"), "a%2Fb%2Bc%23d%24e%25f");
        // `%` is escaped too, so an id that looks escaped cannot collide with a real one.
        assert_ne!(router_client_id("a%2Fb"), router_client_id("a/b"));
    }
}
