//! The policy every connection of a server shares: limits, rules and which events are on.

use crate::QoS;
use crate::tracker::TrackerConfig;

/// Per-connection limits (the same for every connection of a server). Each one says what the
/// engine does when a client reaches it; the driver counts it through
/// [`Output::count`](super::Output::count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Limits {
    /// The largest packet accepted from a client, fixed header included; a larger one closes
    /// the connection as `packet_too_large`.
    pub max_packet_size: usize,
    /// QoS 2 publishes awaiting PUBREL per client; one more closes the connection as a
    /// protocol error (a client that never releases would otherwise grow the table). An MQTT 5
    /// client is told it as the CONNACK's Receive Maximum (capped at 65,535) and is
    /// disconnected with 0x93 (receive maximum exceeded) past it (5.0 section 4.9).
    pub max_inbound_qos2: usize,
    /// Topic filters one client may hold; a new filter past it gets SUBACK 0x80.
    pub max_subscriptions: usize,
    /// Topic filters in one SUBSCRIBE or UNSUBSCRIBE; more close the connection as a protocol
    /// error (the SUBACK of a larger one would not fit the bound on answers).
    pub max_filters_per_packet: usize,
    /// The highest QoS the server grants a subscription (section 3.9.3); a higher request is
    /// granted at this QoS.
    pub max_qos: QoS,
    /// MQTT 5: the most topic aliases a client may set on its publishes (the CONNACK's Topic
    /// Alias Maximum, capped by the store's
    /// [`alias_capacity`](super::SessionStore::alias_capacity)); 0: none, and an alias
    /// closes the connection with 0x94 (topic alias invalid).
    pub topic_alias_maximum: u16,
    /// MQTT 5: the most topic aliases the engine assigns on deliveries to a client that
    /// accepts them (capped by the client's Topic Alias Maximum and the store's capacity);
    /// 0: deliveries carry no alias.
    pub outbound_topic_aliases: u16,
    /// MQTT 5: whether shared subscriptions (`$share/<group>/<filter>`) are served (the
    /// CONNACK's Shared Subscription Available); when not, such a filter gets SUBACK 0x9E. A
    /// store that declines them ([`Declined`](super::Declined)) never serves them.
    pub shared_subscriptions: bool,
    /// Whether a session that outlives its connection (MQTT 3.1.1 clean session 0, MQTT 5 a
    /// granted session expiry above 0) may hold shared subscriptions too. When not, such a
    /// session gets SUBACK 0x9E for them, and its MQTT 5 CONNACK says Shared Subscription
    /// Available 0. rumqttd 0.20's router panics when a kept session leaves the last seat of
    /// a shared group with deliveries in flight (`routing.rs`, "group must exists"), so the
    /// broker turns this off; the tap's upstream keeps its sessions itself.
    pub shared_subscriptions_in_kept_sessions: bool,
    /// The longest session expiry the server grants, in seconds (MQTT 5.0 section 3.1.2.11.2;
    /// [`SESSION_NEVER_EXPIRES`](super::SESSION_NEVER_EXPIRES): no cap). A client asking for more
    /// gets this, and an MQTT 5 client is told so in the CONNACK. 0: every session ends with
    /// its connection (and the will is never delayed).
    pub max_session_expiry: u32,
    /// The Server Keep Alive (MQTT 5.0 section 3.2.2.3.14), in seconds: when set, an MQTT 5
    /// client is told it in the CONNACK and the engine uses it instead of the client's
    /// keep-alive. `None`: the client's keep-alive holds.
    pub server_keep_alive: Option<u16>,
}

impl Limits {
    /// Limits for a host server: 1 MiB packets, 1024 QoS 2 publishes awaiting PUBREL, 1024
    /// filters per client, 128 per SUBSCRIBE, QoS 2 granted, 32 topic aliases each way,
    /// shared subscriptions served (also in kept sessions), sessions kept as long as asked, the
    /// client's keep-alive.
    pub const HOST: Limits = Limits {
        max_packet_size: 1024 * 1024,
        max_inbound_qos2: 1024,
        max_subscriptions: 1024,
        max_filters_per_packet: 128,
        max_qos: QoS::ExactlyOnce,
        topic_alias_maximum: 32,
        outbound_topic_aliases: 32,
        shared_subscriptions: true,
        shared_subscriptions_in_kept_sessions: true,
        max_session_expiry: super::SESSION_NEVER_EXPIRES,
        server_keep_alive: None,
    };
}

/// Where a connection's [`Limits`] come from: a run-time value ([`Limits`] itself, as the
/// broker and the tap configure them), or a type of the driver's whose limits are constants,
/// so that the engine's checks against them are decided when it is compiled (the embassy
/// gateway's: one copy of the engine, whose fixed limits cost no code to read and compare).
pub trait LimitSource {
    /// The limits (called wherever the engine reads one; an implementation with constants
    /// returns them from an inlined function).
    fn limits(&self) -> Limits;
}

impl LimitSource for Limits {
    fn limits(&self) -> Limits {
        *self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::HOST
    }
}

/// What every connection of one server shares. See the [module docs](super) for the call order.
/// `L` holds the per-connection limits: [`Limits`] (run-time values), or a [`LimitSource`] with
/// constant ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig<L: LimitSource = Limits> {
    /// The system topics and which event kinds are emitted.
    pub tracker: TrackerConfig,
    /// The per-connection limits.
    pub limits: L,
    /// How long a new connection may take to send its CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Whether clients connecting from a loopback address may subscribe to filters that
    /// receive activity events (others need [`Output::is_system_subscriber`](super::Output)).
    pub loopback_may_subscribe_system: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tracker: TrackerConfig::default(),
            limits: Limits::default(),
            connect_timeout_ms: 10_000,
            loopback_may_subscribe_system: true,
        }
    }
}
