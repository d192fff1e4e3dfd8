//! The gateway's shared state and its routing (MQTT 3.1.1 sections 3.3.2, 3.8.4 and 4.7).
//!
//! One [`Core`] holds every client slot: its [`Tracker`], subscriptions, last will and queue of
//! packets waiting for its socket. Everything that reaches other clients goes through here:
//! application messages, last wills and the activity events (encoded once, with `"node"` set to
//! the gateway id, into the event buffer). Nothing here awaits: the slot futures borrow the
//! core only between awaits.

use core::cell::{Cell, RefCell};

use activity_core::QoS;
use activity_core::acks::FixedAckStore;
use activity_core::client_id::CLIENT_ID_CAPACITY;
use activity_core::codec::{Packet, Publish};
use activity_core::event::{DisconnectReason, EncodeOptions, Event, EventKind, encode};
use activity_core::topic::matches;
use activity_core::tracker::{DeliveryInfo, PublishInfo, PublishOutcome, Tracker};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use heapless::{String, Vec};

use crate::Config;
use crate::queue::PacketQueue;
use crate::stats::{Counters, bump};

/// The longest topic filter a subscription may have, in bytes; longer ones get SUBACK 0x80.
pub const FILTER_CAPACITY: usize = 64;
/// The longest last-will topic, in bytes; a longer one is refused with CONNACK 3.
pub const WILL_TOPIC_CAPACITY: usize = 64;
/// The longest last-will message, in bytes; a longer one is refused with CONNACK 3.
pub const WILL_PAYLOAD_CAPACITY: usize = 64;
/// Deliveries of envelope messages per client remembered for `msgack` (see
/// [`activity_core::acks`]).
pub const ACK_ENTRIES: usize = 4;
/// Text bytes per remembered delivery (topic, ids, publisher).
pub const ACK_TEXT: usize = 96;
/// QoS 2 publishes per client awaiting PUBREL that are remembered to drop duplicates.
pub const QOS2_INFLIGHT: usize = 4;
/// The longest topic the uplink publishes on (its prefix, `/`, the local topic).
pub const UPLINK_TOPIC_CAPACITY: usize = 128;

/// The per-connection acknowledgement store.
pub(crate) type Acks = FixedAckStore<ACK_ENTRIES, ACK_TEXT>;

/// One granted subscription.
pub(crate) struct Subscription {
    pub(crate) filter: String<FILTER_CAPACITY>,
    pub(crate) qos: QoS,
}

/// A stored last will (section 3.1.2.5).
pub(crate) struct Will {
    pub(crate) topic: String<WILL_TOPIC_CAPACITY>,
    pub(crate) payload: Vec<u8, WILL_PAYLOAD_CAPACITY>,
    pub(crate) qos: QoS,
    /// The RETAIN flag the client asked for (reported in the `message` event; the gateway
    /// keeps no retained messages).
    pub(crate) retain: bool,
}

/// One client slot.
pub(crate) struct Client<const SUBS: usize, const QUEUE: usize> {
    /// `Some` from an accepted CONNECT until the connection ends.
    pub(crate) tracker: Option<Tracker<Acks>>,
    pub(crate) may_subscribe_system: bool,
    pub(crate) subs: Vec<Subscription, SUBS>,
    pub(crate) out: PacketQueue<QUEUE>,
    next_pkid: u16,
    pub(crate) will: Option<Will>,
    /// Another connection took the client id over: the slot must close its socket.
    pub(crate) kicked: bool,
    pub(crate) inbound_qos2: Vec<u16, QOS2_INFLIGHT>,
}

impl<const SUBS: usize, const QUEUE: usize> Client<SUBS, QUEUE> {
    const fn new() -> Self {
        Client {
            tracker: None,
            may_subscribe_system: false,
            subs: Vec::new(),
            out: PacketQueue::new(),
            next_pkid: 0,
            will: None,
            kicked: false,
            inbound_qos2: Vec::new(),
        }
    }

    /// Forgets everything of the previous connection.
    pub(crate) fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether the slot holds an accepted connection.
    pub(crate) fn is_connected(&self) -> bool {
        self.tracker.as_ref().is_some_and(|t| t.is_connected())
    }

    /// The next packet id for a delivery, 1..=65535 (section 2.3.1).
    fn next_pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Delivers a message if a subscription matches: at most once per client, at the highest
    /// matching subscription QoS, capped at the publish QoS (section 3.8.4).
    fn deliver(&mut self, ctx: &Ctx<'_>, message: &Message<'_>, wake: &Signal<NoopRawMutex, ()>) {
        if !self.is_connected()
            || (!self.may_subscribe_system
                && ctx.config.tracker.topics.is_system_topic(message.topic))
        {
            return;
        }
        let Some(sub_qos) = self
            .subs
            .iter()
            .filter(|s| matches(&s.filter, message.topic))
            .map(|s| s.qos)
            .max()
        else {
            return;
        };
        let qos = message.qos.min(sub_qos);
        let pkid = (qos != QoS::AtMostOnce).then(|| self.next_pkid());
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: message.topic,
            pkid,
            payload: message.payload,
        };
        if self.out.push(&Packet::Publish(publish)).is_err() {
            bump(&ctx.counters.deliveries_dropped);
            warn!("gateway: client queue full, delivery dropped");
            return;
        }
        if let Some(tracker) = self.tracker.as_mut() {
            tracker.handle_delivery(
                DeliveryInfo {
                    pkid: pkid.unwrap_or(0),
                    qos,
                    topic: message.topic,
                    payload: message.payload,
                    pub_client_id: message.publisher,
                },
                |_| None,
            );
        }
        wake.signal(());
    }
}

/// An application message on its way to subscribers.
pub(crate) struct Message<'m> {
    pub(crate) topic: &'m str,
    pub(crate) payload: &'m [u8],
    /// Already capped at QoS 1: the gateway never delivers at QoS 2.
    pub(crate) qos: QoS,
    pub(crate) publisher: Option<&'m str>,
}

/// What the routing code reads besides the core: the configuration, counters and wakers.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config<'a>,
    pub(crate) counters: &'a Counters,
    pub(crate) wake: &'a [Signal<NoopRawMutex, ()>],
    pub(crate) uplink_wake: &'a Signal<NoopRawMutex, ()>,
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
pub(crate) struct Shared<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize> {
    pub(crate) core: RefCell<Core<CLIENTS, SUBS, QUEUE>>,
    pub(crate) wake: [Signal<NoopRawMutex, ()>; CLIENTS],
    pub(crate) uplink_wake: Signal<NoopRawMutex, ()>,
    pub(crate) status: Status,
}

impl<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize> Shared<CLIENTS, SUBS, QUEUE> {
    pub(crate) const fn new() -> Self {
        Shared {
            core: RefCell::new(Core::new()),
            wake: [const { Signal::new() }; CLIENTS],
            uplink_wake: Signal::new(),
            status: Status::new(),
        }
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
pub(crate) struct Core<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize> {
    pub(crate) clients: [Client<SUBS, QUEUE>; CLIENTS],
    /// The JSON of the event being published.
    pub(crate) scratch: [u8; QUEUE],
    /// Packets for the upstream broker.
    pub(crate) uplink: PacketQueue<QUEUE>,
    uplink_topic: String<UPLINK_TOPIC_CAPACITY>,
}

/// Encodes an event into `scratch` with the gateway id as `"node"`.
pub(crate) fn encode_event(
    ctx: &Ctx<'_>,
    event: Option<Event<'_>>,
    scratch: &mut [u8],
) -> Option<(EventKind, usize)> {
    let event = event?;
    let options = EncodeOptions {
        node: Some(ctx.config.gateway_id),
        ..EncodeOptions::default()
    };
    match encode(&event, &options, scratch) {
        Ok(len) => Some((event.kind(), len)),
        Err(_) => {
            bump(&ctx.counters.events_dropped);
            warn!("gateway: event too large for the event buffer, dropped");
            None
        }
    }
}

/// Calls a [`Tracker`] method on slot `$i` and publishes the event it gives.
macro_rules! emit {
    ($core:expr, $ctx:expr, $i:expr, |$t:ident| $call:expr) => {{
        let core = &mut *$core;
        let encoded = match core.clients[$i].tracker.as_mut() {
            Some($t) => $crate::router::encode_event($ctx, $call, &mut core.scratch),
            None => None,
        };
        core.publish_event($ctx, encoded);
    }};
}
pub(crate) use emit;

impl<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize> Core<CLIENTS, SUBS, QUEUE> {
    const fn new() -> Self {
        Core {
            clients: [const { Client::new() }; CLIENTS],
            scratch: [0; QUEUE],
            uplink: PacketQueue::new(),
            uplink_topic: String::new(),
        }
    }

    /// Publishes the event in `scratch` to the allowed local subscribers and the uplink.
    pub(crate) fn publish_event(&mut self, ctx: &Ctx<'_>, encoded: Option<(EventKind, usize)>) {
        let Some((kind, len)) = encoded else {
            return;
        };
        let topic = ctx.config.tracker.topics.topic(kind);
        debug!("gateway: event {}", kind.name());
        let Core {
            clients,
            scratch,
            uplink,
            uplink_topic,
        } = self;
        let message = Message {
            topic: &topic,
            payload: &scratch[..len],
            qos: QoS::AtLeastOnce,
            publisher: None,
        };
        for (client, wake) in clients.iter_mut().zip(ctx.wake) {
            client.deliver(ctx, &message, wake);
        }
        push_uplink(ctx, uplink, uplink_topic, &message);
    }

    /// Routes an application message to the local subscribers and, when a forward filter
    /// matches, to the uplink.
    pub(crate) fn route_message(&mut self, ctx: &Ctx<'_>, message: &Message<'_>) {
        for (client, wake) in self.clients.iter_mut().zip(ctx.wake) {
            client.deliver(ctx, message, wake);
        }
        if let Some(uplink) = &ctx.config.uplink
            && uplink.forward.iter().any(|f| matches(f, message.topic))
        {
            push_uplink(ctx, &mut self.uplink, &mut self.uplink_topic, message);
        }
    }

    /// Ends slot `i`'s connection: the last will unless the client said DISCONNECT (section
    /// 3.1.2.5), routed like a PUBLISH of the client with its `message` event, then the
    /// `disconnected` event (the order `activity-broker` uses). Does nothing for a slot without
    /// a connection.
    pub(crate) fn close_client(
        &mut self,
        ctx: &Ctx<'_>,
        i: usize,
        now: u64,
        reason: DisconnectReason,
    ) {
        let client = &mut self.clients[i];
        let Some(mut tracker) = client.tracker.take() else {
            return;
        };
        let will = client.will.take();
        client.subs.clear();
        client.inbound_qos2.clear();
        client.kicked = reason == DisconnectReason::Takenover;
        info!("gateway: client closed: {}", reason.as_str());
        if let Some(will) = will.filter(|_| reason != DisconnectReason::Normal) {
            let info = PublishInfo {
                topic: &will.topic,
                payload: &will.payload,
                qos: will.qos,
                retain: will.retain,
            };
            // CONNECT refuses wills on system topics, so the tracker accepts this one.
            if let PublishOutcome::Accepted(event) = tracker.handle_publish(now, info) {
                let encoded = encode_event(ctx, event, &mut self.scratch);
                self.route_message(
                    ctx,
                    &Message {
                        topic: &will.topic,
                        payload: &will.payload,
                        qos: will.qos.min(QoS::AtLeastOnce),
                        publisher: Some(tracker.client_id()),
                    },
                );
                self.publish_event(ctx, encoded);
            }
        }
        let encoded = encode_event(ctx, tracker.handle_close(now, reason), &mut self.scratch);
        self.publish_event(ctx, encoded);
    }

    /// The slot of the connected client with this id, other than `except`.
    pub(crate) fn find_client(&self, client_id: &str, except: usize) -> Option<usize> {
        self.clients.iter().enumerate().position(|(j, c)| {
            j != except
                && c.tracker
                    .as_ref()
                    .is_some_and(|t| t.is_connected() && t.client_id() == client_id)
        })
    }
}

/// Queues a QoS 0 PUBLISH on `<uplink prefix>/<topic>` for the upstream broker.
fn push_uplink<const QUEUE: usize>(
    ctx: &Ctx<'_>,
    queue: &mut PacketQueue<QUEUE>,
    topic: &mut String<UPLINK_TOPIC_CAPACITY>,
    message: &Message<'_>,
) {
    let Some(uplink) = &ctx.config.uplink else {
        return;
    };
    topic.clear();
    let composed = topic
        .push_str(uplink.prefix)
        .and_then(|()| topic.push('/'))
        .and_then(|()| topic.push_str(message.topic));
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic,
        pkid: None,
        payload: message.payload,
    };
    if composed.is_err() || queue.push(&Packet::Publish(publish)).is_err() {
        bump(&ctx.counters.uplink_dropped);
        return;
    }
    ctx.uplink_wake.signal(());
}

/// A client id the gateway assigns to a client that sent an empty one (section 3.1.3.1).
pub(crate) fn assigned_client_id(slot: usize, serial: u32) -> String<CLIENT_ID_CAPACITY> {
    use core::fmt::Write;
    let mut id = String::new();
    // "auto-" + two decimal u32/usize values fit 128 bytes.
    let _ = write!(id, "auto-{slot}-{serial}");
    id
}
