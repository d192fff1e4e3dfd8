//! The network front: one task per client connection, between the socket and the router.
//!
//! Bytes from the client are decoded with the core's MQTT 3.1.1 codec (never trusting them),
//! reported to the connection's [`Tracker`], and turned into rumqttd packets for the router.
//! The router's notifications are encoded back for the client, and the deliveries among them
//! are reported to the tracker too. The front owns what the router lacks:
//!
//! - CONNECT handling: protocol level, the reserved id, authentication, the connection limit,
//!   last wills on a system topic, each refused with its CONNACK return code;
//! - keep-alive (1.5 x the client's interval; 0 turns it off, as MQTT 3.1.1 allows);
//! - takeover: the old connection is closed with `takenover` and its `disconnected` event is
//!   queued before the new connection's `connected`;
//! - last wills, published by the front when a connection ends without DISCONNECT;
//! - QoS: every client publish enters the router at QoS 0 with a marker of its real QoS, the
//!   front acknowledges the client itself (PUBACK, or PUBREC/PUBCOMP with duplicate detection),
//!   and deliveries go out at `min(publish QoS, subscription QoS)` (section 3.8.4), with the
//!   [`AckSequencer`] completing the router's flow for downgraded ones;
//! - access control: no publishing on system topics, subscribing to them only when allowed;
//! - an UNSUBACK for every UNSUBSCRIBE and a SUBACK code per filter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use activity_core::QoS;
use activity_core::codec::{
    self, ConnAck, ConnectReturnCode, DecodeError, Packet as WirePacket, Publish as WirePublish,
    SubAck, SubAckCode, SubAckCodes,
};
use activity_core::event::DisconnectReason;
use activity_core::tracker::{
    ConnectError, ConnectInfo, DeliveryInfo, PublishInfo, PublishOutcome, Tracker, TrackerConfig,
};
use bytes::{Bytes, BytesMut};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRec, PubRecReason, Publish, PublishProperties, RetainForwardRule, Subscribe,
    SubscribeReasonCode, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{debug, info, warn};

use crate::ack_store::HeapAckStore;
use crate::auth::{AuthOutcome, Authenticator};
use crate::config::Config;
use crate::events::EventSender;
use crate::interest::Interest;
use crate::metrics::Metrics;
use crate::qos_marker::QOS_MARKER_BASE;
use crate::sequencer::{AckSequencer, RouterAck};

mod connect;
mod session;

use connect::accept;
pub(crate) use connect::{ConnectRules, apply_connect_rules, read_connect, refuse};

/// Most QoS 2 publishes from one client awaiting PUBREL; one more closes the connection as a
/// protocol error (a client that never releases would otherwise grow this set).
pub const MAX_INBOUND_QOS2: usize = 1024;

/// Most SUBSCRIBEs of one connection waiting for the router's answer; one more closes the
/// connection as a protocol error (a SUBSCRIBE flood).
pub const MAX_PENDING_SUBSCRIBES: usize = 64;

/// Most topic filters one connection may hold; past it, new filters get SUBACK 0x80.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// How long a write to a client without keep-alive may stall (the client reads nothing)
/// before the connection is closed as `keepalive_timeout`.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(60);

/// Most deliveries awaiting acknowledgement that one tracker remembers for `msgack`.
pub const ACK_STORE_CAPACITY: usize = 128;

/// Builds a router link for `(client_id, clean_session)`; blocking (run it off the runtime).
pub type LinkFactory =
    Arc<dyn Fn(&str, bool) -> anyhow::Result<(LinkTx, LinkRx, Notification)> + Send + Sync>;

/// Where the broker is in its life; connections watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutting down: report `server_shutdown`, stop reading, keep delivering.
    Draining,
    /// Close every socket now.
    Closing,
}

/// A request to end a connection because its client id connected again; answered once the
/// old connection's `disconnected` event is queued.
type Kick = oneshot::Sender<()>;

/// The client ids connected now, to detect takeovers.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, (u64, mpsc::Sender<Kick>)>>,
}

impl Registry {
    fn insert(
        &self,
        client_id: &str,
        serial: u64,
        kick: mpsc::Sender<Kick>,
    ) -> Option<mpsc::Sender<Kick>> {
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
    /// Builds router links.
    pub link_factory: LinkFactory,
    /// Where events go.
    pub events: EventSender,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connected client ids.
    pub registry: Registry,
    /// Username/password checks.
    pub auth: Authenticator,
    /// The trackers' configuration.
    pub tracker_config: TrackerConfig,
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
}

/// Milliseconds since the Unix epoch, the `ts` of events.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

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

fn reason_for(error: &DecodeError) -> DisconnectReason {
    match error {
        DecodeError::PacketTooLarge { .. } => DisconnectReason::PacketTooLarge,
        _ => DisconnectReason::ProtocolError,
    }
}

/// The parts of a CONNECT the connection keeps.
pub(crate) struct ConnectRequest {
    /// The protocol level (4 for MQTT 3.1.1).
    pub(crate) level: u8,
    /// The client id (an empty one is replaced by `auto-...` when the rules accept it).
    pub(crate) client_id: String,
    /// The clean-session flag.
    pub(crate) clean_session: bool,
    /// The keep-alive interval in seconds.
    pub(crate) keep_alive: u16,
    /// The user name, if any.
    pub(crate) username: Option<String>,
    /// The password, if any.
    pub(crate) password: Option<Vec<u8>>,
    /// The last will, if any.
    pub(crate) will: Option<Will>,
}

/// A last will, as the CONNECT gave it.
#[derive(Clone)]
pub(crate) struct Will {
    /// The will topic.
    pub(crate) topic: Bytes,
    /// The will message.
    pub(crate) payload: Bytes,
    /// The will QoS.
    pub(crate) qos: QoS,
    /// The will retain flag.
    pub(crate) retain: bool,
}

/// Serves one client connection until it ends.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max = shared.config.max_packet_size;
    let mut rbuf = BytesMut::with_capacity(4096);
    let deadline = Instant::now() + shared.config.connect_timeout();
    let request = match read_connect(&mut stream, &mut rbuf, max, deadline, &shared.metrics).await {
        Some((request, _)) => request,
        None => return,
    };
    let Some(session) = accept(&mut stream, request, peer, &shared).await else {
        return;
    };
    session.run(stream, rbuf).await;
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

fn core_qos(qos: &rumqttd::protocol::QoS) -> QoS {
    match qos {
        rumqttd::protocol::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttd::protocol::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttd::protocol::QoS::ExactlyOnce => QoS::ExactlyOnce,
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
