//! The gateway's shared state and its routing (MQTT 3.1.1 sections 3.3.2, 3.8.4 and 4.7).
//!
//! One [`Core`] holds every client slot: the slot's protocol engine (an
//! [`activity_core::server::Connection`], which makes every MQTT decision and keeps the
//! client's subscriptions, will and pending acknowledgements) and its queue of packets waiting
//! for the socket. Everything that reaches other clients goes through here: application
//! messages, last wills and the activity events (encoded once, with `"node"` set to the gateway
//! id, into the event buffer). Nothing here awaits: the slot futures borrow the core only
//! between awaits.
//!
//! The engine of the slot that is being driven is borrowed during the call, so the routing
//! table cannot reach it: it answers [`Routed::ExceptSender`] and returns each event from
//! [`Output::event`], and the engine delivers its own client's copies itself.

use core::cell::{Cell, RefCell, RefMut};

use activity_core::QoS;
use activity_core::acks::{AckStore, FixedAckStore};
use activity_core::client_id::CLIENT_ID_CAPACITY;
use activity_core::codec::Properties;
use activity_core::event::{EncodeOptions, Event, EventKind, Transport, encode_or_full};
use activity_core::outbox::Outbox;
use activity_core::retained::{Retained, sends_retained};
use activity_core::server::{
    CloseCause, ConnectAnswer, Connection, Counter, Declined, Delivery, DeliveryError,
    FixedSessionStore, LimitSource, Limits, Output, Peer, ReasonCode, Route, Routed, ServerConfig,
    SessionStore,
};
use activity_core::system::TOPIC_CAPACITY;
use activity_core::topic::matches;
use activity_core::tracker::no_publisher;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use heapless::String;

use crate::Config;
use crate::queue::PacketQueue;
use crate::stats::{Counters, add, bump};

/// The longest topic filter a subscription may have, in bytes, with the default
/// [`SlotStores`]; longer ones get SUBACK 0x80.
pub const FILTER_CAPACITY: usize = 64;
/// The longest last will, topic and message together, in bytes, with the default
/// [`SlotStores`]; a longer one is refused with CONNACK 3.
pub const WILL_CAPACITY: usize = 128;
/// Deliveries of envelope messages per client remembered for `msgack` (see
/// [`activity_core::acks`]), with the default [`SlotStores`].
pub const ACK_ENTRIES: usize = 4;
/// Text bytes per remembered delivery (topic, ids, publisher), with the default
/// [`SlotStores`].
pub const ACK_TEXT: usize = 96;
/// QoS 2 publishes per client awaiting PUBREL; one more closes the connection.
pub const QOS2_INFLIGHT: usize = 4;
/// The longest topic the uplink publishes on (its prefix, `/`, the local topic).
pub const UPLINK_TOPIC_CAPACITY: usize = 128;
/// The most topic filters one SUBSCRIBE or UNSUBSCRIBE may carry; more close the connection.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 16;
/// Topics with a retained message the gateway keeps; a retained message for one more topic
/// is not kept (counted in [`GatewayStats::retained_dropped`](crate::GatewayStats)).
pub const RETAINED_ENTRIES: usize = 4;
/// Bytes of topic and payload together of one retained message; a larger one is not kept
/// (counted the same way).
pub const RETAINED_BYTES: usize = 128;

/// The MQTT 5 features the gateway leaves out for its flash (each one's engine code is not
/// linked; docs/gateway.md, "Size cuts on the nightly build"): subscription identifiers (a
/// SUBSCRIBE with one is answered with DISCONNECT 0xA1), shared subscriptions (a `$share/`
/// filter gets SUBACK 0x9E) and reason strings. Its CONNACK says so. Topic aliases are left
/// out too: the slot's store keeps none (an alias closes the connection with 0x94).
pub const V5_DECLINED: Declined = Declined::SUBSCRIPTION_IDENTIFIERS
    .and(Declined::SHARED_SUBSCRIPTIONS)
    .and(Declined::REASON_STRINGS);

/// The gateway's retained messages.
pub(crate) type RetainedTable = Retained<RETAINED_ENTRIES, RETAINED_BYTES>;

/// The retained table's clock: whole seconds since boot, in a `u32` (it wraps after 136
/// years; the table counts a wait across one wrap right). Not the events' Unix time, which
/// jumps when the firmware sets it.
fn retained_clock() -> u32 {
    // The low 32 bits: the table's clock wraps, see above.
    u32::try_from(embassy_time::Instant::now().as_secs() & u64::from(u32::MAX)).unwrap_or(0)
}

/// The fixed stores of each slot's protocol engine: what a client may keep while it is
/// connected. [`SlotStores`] is the one implementation; its parameters are the limits.
pub trait EngineStores {
    /// The deliveries remembered for `msgack` (see [`activity_core::acks`]).
    type Acks: AckStore + Default;
    /// The subscriptions (`SUBS` of them), the will and the QoS 2 publishes awaiting PUBREL.
    type Session<const SUBS: usize>: SessionStore + Default;
}

/// The limits of a slot's engine stores, chosen by the firmware as the last parameter of
/// [`GatewayResources`](crate::GatewayResources); the defaults are the crate's constants.
///
/// - `ACKS` deliveries of envelope messages remembered for `msgack`, each with up to
///   `ACK_TEXT` bytes of topic, string ids and publisher id (a delivery whose text is longer
///   is not remembered, and its `msgack` is not matched); the oldest goes for a new one.
///   About `ACKS * (ACK_TEXT + 48) + 16` bytes.
/// - subscriptions with filters of up to `FILTER` bytes (a longer one gets SUBACK 0x80, counted
///   in [`GatewayStats::subscriptions_refused`](crate::GatewayStats)); about `FILTER + 16`
///   bytes each.
/// - a last will of up to `WILL` bytes of topic and message (a longer one is refused with
///   CONNACK 3, counted in [`GatewayStats::refused_no_buffer`](crate::GatewayStats)); about
///   `WILL + 16` bytes.
///
/// ```
/// # use adapter_embassy::{GatewayResources, SlotStores};
/// // 2 msgack entries of 64 bytes, filters up to 48 bytes, wills up to 64 bytes.
/// type Small = SlotStores<2, 64, 48, 64>;
/// type Resources = GatewayResources<4, 256, 256, 2, 256, Small>;
/// let resources = Resources::new();
/// ```
pub struct SlotStores<
    const ACKS: usize = ACK_ENTRIES,
    const ACK_TEXT: usize = { self::ACK_TEXT },
    const FILTER: usize = FILTER_CAPACITY,
    const WILL: usize = WILL_CAPACITY,
>;

impl<const ACKS: usize, const TEXT: usize, const FILTER: usize, const WILL: usize> EngineStores
    for SlotStores<ACKS, TEXT, FILTER, WILL>
{
    type Acks = FixedAckStore<ACKS, TEXT>;
    type Session<const SUBS: usize> =
        FixedSessionStore<SUBS, FILTER, QOS2_INFLIGHT, WILL, 0, { V5_DECLINED.bits() }>;
}

/// One slot's protocol engine; it keeps no session past its connection (`KEEP` false: the
/// code for kept MQTT 5 sessions is not linked).
pub(crate) type Conn<const SUBS: usize, S> =
    Connection<<S as EngineStores>::Acks, <S as EngineStores>::Session<SUBS>, false, GatewayLimits>;

/// The engine's limits for every slot: constants, so that the engine's checks against them
/// are decided when the firmware is compiled, but for the largest packet, the slot's packet
/// buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GatewayLimits {
    /// The largest packet a client may send: the slot's packet buffer.
    max_packet_size: usize,
}

impl LimitSource for GatewayLimits {
    #[inline(always)]
    fn limits(&self) -> Limits {
        Limits {
            max_packet_size: self.max_packet_size,
            max_inbound_qos2: QOS2_INFLIGHT,
            // The store bounds them (`SUBS`).
            max_subscriptions: usize::MAX,
            max_filters_per_packet: MAX_FILTERS_PER_SUBSCRIBE,
            max_qos: QoS::AtLeastOnce,
            // Left out of the gateway for its memory: no topic aliases (its store keeps
            // none), no shared subscriptions (its table delivers each message once per
            // matching client; the store declines them, `V5_DECLINED`).
            topic_alias_maximum: 0,
            outbound_topic_aliases: 0,
            shared_subscriptions: false,
            shared_subscriptions_in_kept_sessions: false,
            // Sessions end with their connection (a slot is freed for the next client): an
            // MQTT 5 client is told Session Expiry Interval 0, and a delayed will goes at once.
            max_session_expiry: 0,
            // The client's keep-alive holds.
            server_keep_alive: None,
        }
    }
}

/// The engine's policy for every slot: the gateway's limits (at most QoS 1, packets up to the
/// slot's packet buffer), the configured system topics and events, and only listed clients
/// receive events (loopback means nothing on a microcontroller's network).
pub(crate) fn server_config(
    config: &Config<'_>,
    max_packet_size: usize,
) -> ServerConfig<GatewayLimits> {
    ServerConfig {
        tracker: config.tracker.clone(),
        limits: GatewayLimits { max_packet_size },
        connect_timeout_ms: config.connect_timeout.as_millis(),
        loopback_may_subscribe_system: false,
    }
}

/// One client slot.
pub(crate) struct Client<const SUBS: usize, const QUEUE: usize, S: EngineStores> {
    /// The engine of the slot's connection, from its accept until the next one.
    engine: Option<Engine<SUBS, S>>,
    pub(crate) out: PacketQueue<QUEUE>,
    /// The entries of the retained table still to be sent to this client for its new
    /// subscriptions (bit `i`: entry `i`), sent as its queue has room.
    retained_pending: u32,
}

const _: () = assert!(
    RETAINED_ENTRIES <= 32,
    "one bit per retained entry in a u32"
);

/// A slot's engine, with the byte that makes a slot without one all zeros.
struct Engine<const SUBS: usize, S: EngineStores> {
    conn: Conn<SUBS, S>,
    /// Never zero, and the field with the most invalid values (a `u64` with one valid value;
    /// the engine's own enums have a few), so the compiler stores the `None` of
    /// `Option<Engine>` in it, and as zero. With that, [`Core::new`] and so
    /// [`GatewayResources::new`](crate::GatewayResources::new) are all zero bits: a `static`
    /// of them goes to `.bss` and costs no flash and no copy at boot (the firmware example's
    /// `build.sh` fails if `.data` grows). It takes the padding after the engine: no RAM.
    _nonzero: NonZero,
}

/// A `u64` that is never zero (see [`Engine`]).
#[repr(u64)]
enum NonZero {
    One = 1,
}

impl<const SUBS: usize, const QUEUE: usize, S: EngineStores> Client<SUBS, QUEUE, S> {
    const fn new() -> Self {
        Client {
            engine: None,
            out: PacketQueue::new(),
            retained_pending: 0,
        }
    }

    /// The slot's engine, if it ever had a connection.
    fn conn(&self) -> Option<&Conn<SUBS, S>> {
        self.engine.as_ref().map(|e| &e.conn)
    }

    /// Delivers a message if a subscription matches: at most once per client, at the highest
    /// matching subscription QoS, capped at the publish QoS (section 3.8.4). `renewed` is the
    /// retained entry a retained message was just stored in (one bit, or none): a client that
    /// gets it live no longer waits for the entry, or it would get the message twice.
    fn deliver(
        &mut self,
        counters: &Counters,
        delivery: Delivery<'_>,
        renewed: u32,
        wake: &Signal<NoopRawMutex, ()>,
    ) {
        let Some(Engine { conn, .. }) = self.engine.as_mut().filter(|e| e.conn.is_connected())
        else {
            return;
        };
        let Some(subscription_qos) = conn.store().matching_qos(delivery.topic) else {
            return;
        };
        let delivery = Delivery {
            subscription_qos,
            ..delivery
        };
        match conn.handle_delivery(delivery, self.out.spare(), no_publisher) {
            Ok(delivered) => {
                self.out.commit(delivered.written);
                self.retained_pending &= !renewed;
                if delivered.forgotten {
                    bump(&counters.deliveries_evicted);
                }
                wake.signal(());
            }
            Err(DeliveryError::NotConnected) => {}
            Err(_) => {
                bump(&counters.deliveries_dropped);
                warn!("gateway: client queue full, delivery dropped");
            }
        }
    }
}

/// What the routing code reads besides the core: the configuration, counters and wakers.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config<'a>,
    pub(crate) counters: &'a Counters,
    pub(crate) wake: &'a [Signal<NoopRawMutex, ()>],
    pub(crate) uplink_wake: &'a Signal<NoopRawMutex, ()>,
}

impl Ctx<'_> {
    /// Wakes the future of slot `i`.
    fn wake(&self, i: usize) {
        if let Some(wake) = self.wake.get(i) {
            wake.signal(());
        }
    }
}

/// The state every slot future, the uplink and the handle share.
pub(crate) struct Status {
    pub(crate) counters: Counters,
    /// Unix time in ms at `embassy_time::Instant` zero.
    pub(crate) epoch_offset_ms: Cell<u64>,
    /// Whether the uplink is connected now.
    pub(crate) uplink_up: Cell<bool>,
}

impl Status {
    pub(crate) const fn new() -> Self {
        Status {
            counters: Counters::new(),
            epoch_offset_ms: Cell::new(0),
            uplink_up: Cell::new(false),
        }
    }

    /// The time for events: ms since the Unix epoch, as far as the caller told us.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch_offset_ms
            .get()
            .saturating_add(embassy_time::Instant::now().as_millis())
    }
}

/// Everything the runner's futures share, inside the caller's resources.
pub(crate) struct Shared<
    const CLIENTS: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
> {
    core: RefCell<Core<CLIENTS, SUBS, QUEUE, S>>,
    pub(crate) wake: [Signal<NoopRawMutex, ()>; CLIENTS],
    pub(crate) uplink_wake: Signal<NoopRawMutex, ()>,
    pub(crate) status: Status,
}

impl<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>
    Shared<CLIENTS, SUBS, QUEUE, S>
{
    pub(crate) const fn new() -> Self {
        Shared {
            core: RefCell::new(Core::new()),
            wake: [const { Signal::new() }; CLIENTS],
            uplink_wake: Signal::new(),
            status: Status::new(),
        }
    }

    /// The core, borrowed by one future between two awaits (so never twice at once).
    ///
    /// Not inlined: one borrow check for every use, instead of a check and a panic location
    /// at each.
    #[inline(never)]
    pub(crate) fn core(&self) -> RefMut<'_, Core<CLIENTS, SUBS, QUEUE, S>> {
        self.core.borrow_mut()
    }

    /// What wakes the future of slot `i` (new bytes in its queue, or its engine closed).
    pub(crate) fn slot_wake(&self, i: usize) -> Option<&Signal<NoopRawMutex, ()>> {
        self.wake.get(i)
    }

    /// The routing context for `config`.
    pub(crate) fn ctx<'a>(&'a self, config: &'a Config<'a>) -> Ctx<'a> {
        Ctx {
            config,
            counters: &self.status.counters,
            wake: &self.wake,
            uplink_wake: &self.uplink_wake,
        }
    }
}

/// The mutable part of the shared state.
pub(crate) struct Core<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>
{
    pub(crate) clients: [Client<SUBS, QUEUE, S>; CLIENTS],
    /// The JSON of the event being published.
    scratch: [u8; QUEUE],
    /// Messages for the upstream broker, kept until sent (QoS 0) or acknowledged (QoS 1).
    pub(crate) uplink: Outbox<QUEUE>,
    uplink_topic: String<UPLINK_TOPIC_CAPACITY>,
    /// The retained messages of every client.
    retained: RetainedTable,
}

/// One call into a slot's engine for [`Core::drive`], with the slot's queue as its transmit
/// buffer: returns what it consumed (0 when it reads nothing) and the bytes it wrote. One
/// `dyn` type instead of a closure type per call: one copy of `drive` in the firmware.
type Step<'s, const SUBS: usize, const QUEUE: usize, S> = dyn FnMut(&mut Conn<SUBS, S>, &mut [u8], &mut SlotOutput<'_, '_, SUBS, QUEUE, S>) -> (usize, usize)
    + 's;

/// The driver's verdict on a CONNECT, taken while the engine asked.
struct Verdict {
    answer: ConnectAnswer,
    client_id: String<CLIENT_ID_CAPACITY>,
}

impl<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>
    Core<CLIENTS, SUBS, QUEUE, S>
{
    const fn new() -> Self {
        Core {
            clients: [const { Client::new() }; CLIENTS],
            scratch: [0; QUEUE],
            uplink: Outbox::new(),
            uplink_topic: String::new(),
            retained: Retained::new(),
        }
    }

    /// Slot `i` accepted a connection from `peer` at `now`: a fresh engine and queue.
    pub(crate) fn open(
        &mut self,
        i: usize,
        server: ServerConfig<GatewayLimits>,
        peer: &str,
        now: u64,
        nonce: u64,
    ) {
        let peer = Peer {
            addr: (!peer.is_empty()).then_some(peer),
            is_loopback: false,
            transport: Transport::Tcp,
        };
        if let Some(client) = self.clients.get_mut(i) {
            client.out.clear();
            client.retained_pending = 0;
            client.engine = Some(Engine {
                conn: Connection::new(
                    server,
                    S::Acks::default(),
                    S::Session::<SUBS>::default(),
                    peer,
                    now,
                    nonce,
                ),
                _nonzero: NonZero::One,
            });
        }
    }

    /// Whether slot `i`'s connection is over (or never was): the engine closed it, or the
    /// driver did (the transport closed, or another connection took the client id over).
    pub(crate) fn is_closed(&self, i: usize) -> bool {
        self.conn(i).is_none_or(|c| c.is_closed())
    }

    /// Whether slot `i`'s engine stopped reading for room in its queue.
    pub(crate) fn is_blocked(&self, i: usize) -> bool {
        self.conn(i).is_some_and(|c| c.is_blocked())
    }

    /// When slot `i`'s engine next needs [`Core::handle_timeout`], in Unix ms.
    pub(crate) fn poll_timeout(&self, i: usize) -> Option<u64> {
        self.conn(i)?.poll_timeout()
    }

    /// Slot `i`'s engine, if it ever had a connection.
    fn conn(&self, i: usize) -> Option<&Conn<SUBS, S>> {
        self.clients.get(i)?.conn()
    }

    /// Whether slot `i` has bytes queued for its socket.
    pub(crate) fn has_queued(&self, i: usize) -> bool {
        self.clients.get(i).is_some_and(|c| !c.out.is_empty())
    }

    /// Moves what fits of slot `i`'s queue into `buf`; returns how many bytes.
    pub(crate) fn drain_into(&mut self, i: usize, buf: &mut [u8]) -> usize {
        self.clients.get_mut(i).map_or(0, |c| c.out.drain_into(buf))
    }

    /// Drops what is queued for slot `i` (its socket is gone).
    pub(crate) fn clear_queue(&mut self, i: usize) {
        if let Some(client) = self.clients.get_mut(i) {
            client.out.clear();
        }
    }

    /// Runs `step` on slot `i`'s engine with the slot's queue as its transmit buffer and the
    /// routing table as its output; `answering` says whether `step` answers a CONNECT (for the
    /// counters). `None` when the slot has no engine.
    fn drive(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        answering: bool,
        step: &mut Step<'_, SUBS, QUEUE, S>,
    ) -> Option<(usize, Option<Verdict>)> {
        let Core {
            clients,
            scratch,
            uplink,
            uplink_topic,
            retained,
        } = self;
        let (before, rest) = clients.split_at_mut_checked(i)?;
        let (me, after) = rest.split_first_mut()?;
        let Engine { conn, .. } = me.engine.as_mut()?;
        let mut out = SlotOutput {
            ctx,
            index: i,
            before,
            after,
            scratch,
            uplink,
            uplink_topic,
            retained,
            retained_pending: &mut me.retained_pending,
            event_topic: String::new(),
            verdict: None,
            answering,
        };
        let (result, written) = step(conn, me.out.spare(), &mut out);
        me.out.commit(written);
        if written > 0 {
            ctx.wake(i);
        }
        Some((result, out.verdict))
    }

    /// Hands slot `i`'s unconsumed bytes to its engine; returns how many it consumed. A
    /// CONNECT is decided here (credentials, takeover of an older connection of the id) and
    /// answered at once.
    ///
    /// Out of line: inlined into the slot's future, its two engine calls cost about 200 B of
    /// flash more in the firmware example.
    #[inline(never)]
    pub(crate) fn handle_input(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        input: &[u8],
        now: u64,
    ) -> usize {
        let Some((consumed, verdict)) = self.drive(ctx, i, false, &mut |conn, tx, out| {
            let progress = conn.handle_input(now, input, tx, out);
            (progress.consumed, progress.written)
        }) else {
            return 0;
        };
        self.send_retained(ctx, i);
        let Some(verdict) = verdict else {
            return consumed;
        };
        if let ConnectAnswer::Accept { .. } = verdict.answer {
            if let Some(old) = self.find_client(&verdict.client_id, i) {
                // Its slot sees the engine closed and closes the socket.
                self.close_client(ctx, old, now, CloseCause::TakenOver);
                ctx.wake(old);
            }
            bump(&ctx.counters.clients_connected);
            info!("gateway: client connected");
        }
        let rest = input.get(consumed..).unwrap_or_default();
        let answered = self.drive(ctx, i, true, &mut |conn, tx, out| {
            let progress = conn.handle_connect_answer(now, verdict.answer, rest, tx, out);
            (progress.consumed, progress.written)
        });
        consumed + answered.map_or(0, |(more, _)| more)
    }

    /// Sends slot `i` the retained messages its new subscriptions asked for, after their
    /// SUBACK, as far as its queue has room; the rest wait for the next call.
    fn send_retained(&mut self, ctx: &Ctx<'_>, i: usize) {
        let Core {
            clients, retained, ..
        } = self;
        let Some(client) = clients.get_mut(i) else {
            return;
        };
        let Some(Engine { conn, .. }) = client.engine.as_mut() else {
            return;
        };
        let now_s = retained_clock();
        while client.retained_pending != 0 {
            let entry = client.retained_pending.trailing_zeros();
            let bit = 1u32 << entry;
            let index = usize::try_from(entry).unwrap_or(usize::MAX);
            // Cleared meanwhile, or the subscription is gone: nothing to send.
            let Some(message) = retained.get(index) else {
                client.retained_pending &= !bit;
                continue;
            };
            // Its Message Expiry Interval has passed: removed, not sent (MQTT 5.0 section
            // 3.3.2.3.3), and counted as a retained message not kept.
            if message.is_expired(now_s) {
                retained.remove(index);
                bump(&ctx.counters.retained_dropped);
                client.retained_pending &= !bit;
                continue;
            }
            let Some(subscription_qos) = conn.store().matching_qos(message.topic) else {
                client.retained_pending &= !bit;
                continue;
            };
            // The interval as published and the time waited: the engine counts it down for an
            // MQTT 5 client (an MQTT 3.1.1 one gets no properties).
            let mut raw = [0; 5];
            let properties = match message.expiry {
                Some(expiry) => Properties::message_expiry(&mut raw, expiry),
                None => Properties::EMPTY,
            };
            let delivery = Delivery {
                subscription_qos,
                retain: true,
                published_retain: true,
                properties,
                waited_ms: u64::from(message.waited_s(now_s)) * 1000,
                ..Delivery::new(message.topic, message.payload, message.qos)
            };
            match conn.handle_delivery(delivery, client.out.spare(), no_publisher) {
                Ok(delivered) => {
                    client.out.commit(delivered.written);
                    if delivered.forgotten {
                        bump(&ctx.counters.deliveries_evicted);
                    }
                    client.retained_pending &= !bit;
                    ctx.wake(i);
                }
                Err(DeliveryError::NotConnected) => client.retained_pending = 0,
                // No room now: sent when the queue has drained. With nothing queued it never
                // fits: dropped and counted like any delivery.
                Err(_) if client.out.is_empty() => {
                    client.retained_pending &= !bit;
                    bump(&ctx.counters.deliveries_dropped);
                }
                Err(_) => return,
            }
        }
    }

    /// Closes slot `i`'s connection if its deadline has passed.
    pub(crate) fn handle_timeout(&mut self, ctx: &Ctx<'_>, i: usize, now: u64) {
        self.drive(ctx, i, false, &mut |conn, tx, out| {
            (0, conn.handle_timeout(now, tx, out))
        });
    }

    /// Ends slot `i`'s connection for `cause` (the engine publishes the will when due and
    /// reports `disconnected`). Does nothing for a slot whose connection is over already.
    pub(crate) fn close_client(&mut self, ctx: &Ctx<'_>, i: usize, now: u64, cause: CloseCause) {
        self.drive(ctx, i, false, &mut |conn, tx, out| {
            (0, conn.handle_close(now, cause, tx, out))
        });
    }

    /// The slot of the connected client with this id, other than `except`.
    fn find_client(&self, client_id: &str, except: usize) -> Option<usize> {
        self.clients.iter().enumerate().position(|(j, c)| {
            j != except
                && c.conn()
                    .is_some_and(|conn| conn.is_connected() && conn.client_id() == client_id)
        })
    }
}

/// The routing table as slot `index`'s engine sees it: every other slot, the event buffer and
/// the uplink.
struct SlotOutput<'a, 'c, const SUBS: usize, const QUEUE: usize, S: EngineStores> {
    ctx: &'a Ctx<'c>,
    index: usize,
    before: &'a mut [Client<SUBS, QUEUE, S>],
    after: &'a mut [Client<SUBS, QUEUE, S>],
    scratch: &'a mut [u8; QUEUE],
    uplink: &'a mut Outbox<QUEUE>,
    uplink_topic: &'a mut String<UPLINK_TOPIC_CAPACITY>,
    retained: &'a mut RetainedTable,
    /// The retained entries this slot's client waits for (its [`Client`]'s): its new
    /// subscriptions add to them, and a retained message it publishes itself takes its entry
    /// off (it gets that message live from its engine, if a subscription matches).
    retained_pending: &'a mut u32,
    event_topic: String<TOPIC_CAPACITY>,
    verdict: Option<Verdict>,
    answering: bool,
}

/// The bit of retained entry `entry` in a client's `retained_pending`.
fn entry_bit(entry: usize) -> u32 {
    1u32.checked_shl(u32::try_from(entry).unwrap_or(32))
        .unwrap_or(0)
}

/// Delivers to every slot of `before` and `after` (slot `index` sits between them);
/// `renewed` as for [`Client::deliver`].
fn deliver_to_others<const SUBS: usize, const QUEUE: usize, S: EngineStores>(
    ctx: &Ctx<'_>,
    index: usize,
    before: &mut [Client<SUBS, QUEUE, S>],
    after: &mut [Client<SUBS, QUEUE, S>],
    delivery: Delivery<'_>,
    renewed: u32,
) {
    let wakes_after = ctx.wake.get(index + 1..).unwrap_or_default();
    for (client, wake) in before.iter_mut().zip(ctx.wake) {
        client.deliver(ctx.counters, delivery, renewed, wake);
    }
    for (client, wake) in after.iter_mut().zip(wakes_after) {
        client.deliver(ctx.counters, delivery, renewed, wake);
    }
}

impl<const SUBS: usize, const QUEUE: usize, S: EngineStores> Output
    for SlotOutput<'_, '_, SUBS, QUEUE, S>
{
    fn route(&mut self, route: Route<'_>) -> Routed {
        match route {
            Route::Connect(request) => {
                let refusal = self
                    .ctx
                    .config
                    .auth
                    .as_ref()
                    .and_then(|auth| auth.check(request.username, request.password));
                // Clean sessions only: a client asking for a persistent one gets a fresh
                // session and is told so with session_present = 0 (section 3.2.2.2).
                let answer = refusal.map_or(ConnectAnswer::accept(false), ConnectAnswer::Refuse);
                let mut client_id = String::new();
                // The engine gives ids of at most CLIENT_ID_CAPACITY bytes.
                let _ = client_id.push_str(request.client_id);
                self.verdict = Some(Verdict { answer, client_id });
                Routed::Accepted
            }
            Route::Publish(publish) => {
                // The entry the message was kept in, if it is retained and was kept: a
                // subscriber that gets it live below must not get it again from the entry.
                let mut renewed = 0;
                if publish.retain {
                    let kept = self.retained.handle_publish(
                        publish.topic,
                        publish.payload,
                        publish.qos,
                        publish.properties.message_expiry_interval(),
                        retained_clock(),
                    );
                    if kept.is_dropped() {
                        bump(&self.ctx.counters.retained_dropped);
                        warn!("gateway: retained message not kept (table full or too large)");
                    }
                    renewed = kept.entry().map_or(0, entry_bit);
                    // The publisher waits for that entry only if one of its subscriptions
                    // matches the topic: the engine sends it the new message live (with No
                    // Local, neither: it is the client's own message).
                    *self.retained_pending &= !renewed;
                }
                let delivery = Delivery {
                    publisher: Some(publish.publisher),
                    properties: publish.properties,
                    published_retain: publish.retain,
                    ..Delivery::new(publish.topic, publish.payload, publish.qos)
                };
                deliver_to_others(
                    self.ctx,
                    self.index,
                    self.before,
                    self.after,
                    delivery,
                    renewed,
                );
                if let Some(uplink) = &self.ctx.config.uplink
                    && uplink.forward.iter().any(|f| matches(f, publish.topic))
                {
                    push_uplink(
                        self.ctx,
                        self.uplink,
                        self.uplink_topic,
                        publish.topic,
                        publish.payload,
                    );
                }
                Routed::ExceptSender
            }
            Route::Subscribe {
                filter,
                options,
                is_new,
                ..
            } => {
                if sends_retained(options, is_new) {
                    for (entry, _) in self.retained.matching(filter) {
                        *self.retained_pending |= entry_bit(entry);
                    }
                }
                Routed::Accepted
            }
            // The subscriptions live in the engines' stores; nothing is kept past a
            // connection (clean sessions only) and nothing is retransmitted.
            _ => Routed::Accepted,
        }
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        // Numbered per boot, in the order the events go out (this call).
        bump(&self.ctx.counters.events_numbered);
        let options = EncodeOptions {
            node: Some(self.ctx.config.gateway_id),
            event_seq: Some(u64::from(self.ctx.counters.events_numbered.get())),
            ..EncodeOptions::default()
        };
        let len = match encode_or_full(event, &options, &mut self.scratch[..]) {
            Some(len) => len,
            None => {
                bump(&self.ctx.counters.events_dropped);
                warn!("gateway: event too large for the event buffer, dropped");
                return None;
            }
        };
        let kind: EventKind = event.kind();
        debug!("gateway: event {}", kind.name());
        self.event_topic = self.ctx.config.tracker.topics.topic(kind);
        let json = self.scratch.get(..len).unwrap_or_default();
        let delivery = Delivery::new(&self.event_topic, json, QoS::AtLeastOnce);
        deliver_to_others(self.ctx, self.index, self.before, self.after, delivery, 0);
        push_uplink(
            self.ctx,
            self.uplink,
            self.uplink_topic,
            &self.event_topic,
            json,
        );
        Some(delivery)
    }

    fn count(&mut self, counter: Counter) {
        let counters = self.ctx.counters;
        let counter = match counter {
            Counter::ConnectRefused(_) if self.answering => &counters.refused_auth,
            Counter::ConnectRefused(ReasonCode::ServerUnavailable) => &counters.refused_no_buffer,
            Counter::ConnectRefused(_) => &counters.refused_other,
            Counter::ProtocolError | Counter::QuotaExceeded => &counters.protocol_errors,
            Counter::PacketTooLarge => &counters.packets_too_large,
            Counter::PublishDenied => &counters.publishes_denied,
            Counter::SubscriptionDenied | Counter::SubscriptionRefused => {
                &counters.subscriptions_refused
            }
            Counter::DeliveryDropped => &counters.deliveries_dropped,
            _ => return,
        };
        bump(counter);
    }

    fn is_system_subscriber(&self, client_id: &str, _username: Option<&str>) -> bool {
        self.ctx.config.system_subscribers.contains(&client_id)
    }
}

/// Queues a PUBLISH on `<uplink prefix>/<topic>` at the uplink's QoS for the upstream broker;
/// the outbox's policy decides what goes when it is full.
fn push_uplink<const QUEUE: usize>(
    ctx: &Ctx<'_>,
    queue: &mut Outbox<QUEUE>,
    uplink_topic: &mut String<UPLINK_TOPIC_CAPACITY>,
    topic: &str,
    payload: &[u8],
) {
    let Some(uplink) = &ctx.config.uplink else {
        return;
    };
    uplink_topic.clear();
    let composed = uplink_topic
        .push_str(uplink.prefix)
        .and_then(|()| uplink_topic.push('/'))
        .and_then(|()| uplink_topic.push_str(topic));
    if composed.is_err() {
        bump(&ctx.counters.uplink_dropped);
        return;
    }
    match queue.push(uplink_topic, payload, uplink.qos, false, uplink.drop_policy) {
        Ok(dropped) => add(&ctx.counters.uplink_dropped, dropped),
        Err(_) => {
            bump(&ctx.counters.uplink_dropped);
            return;
        }
    }
    ctx.uplink_wake.signal(());
}
