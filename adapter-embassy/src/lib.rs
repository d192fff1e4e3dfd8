//! adapter-embassy: an MQTT 3.1.1 edge gateway for microcontrollers on embassy-net.
//!
//! The gateway is a small broker for the devices around it. It speaks MQTT 3.1.1 through the
//! core's codec ([`activity_core::codec`]), routes PUBLISHes to local subscribers, reports
//! what every client does as the six activity events (JSON from [`activity_core::event`],
//! with `"node"` set to the gateway id) on the system topics (`SYSTEM/...`), and can forward
//! those events and chosen local topics to an upstream broker (the *uplink*), logging in there
//! with [`UplinkConfig::username`] and [`UplinkConfig::password`] when set.
//!
//! `#![no_std]`, no allocator, no `unsafe`. It runs on any embassy-net [`Stack`]; the caller
//! owns all memory in a [`GatewayResources`] and drives one future, [`GatewayRunner::run`]:
//!
//! ```ignore
//! // All zero bits: the static goes to .bss, with nothing to store in flash or copy at boot.
//! static RESOURCES: ConstStaticCell<GatewayResources<4, 1024, 1024, 4, 1024>> =
//!     ConstStaticCell::new(GatewayResources::new());
//! let resources = RESOURCES.take();
//! let (handle, mut runner) = adapter_embassy::new(stack, resources, Config::new("gw-1"));
//! spawner.spawn(gateway_task(runner)); // a task that awaits runner.run()
//! handle.set_unix_time_ms(ntp_time);   // event timestamps follow
//! ```
//!
//! # What the gateway does (MQTT 3.1.1)
//!
//! Every MQTT decision is made by the core's protocol engine
//! ([`activity_core::server::Connection`], one per slot), the same one `activity-broker`
//! runs; the gateway moves bytes between the sockets and the engines, and routes.
//!
//! - CONNECT: protocol level 4 only (else CONNACK 1); the client id `broker` is reserved for
//!   the gateway's own events (CONNACK 2); an empty id gets `auto-` and 16 hex digits (the
//!   slot and a connection serial); a second connection with the same id takes the first one
//!   over (`disconnected` with `takenover`).
//! - Credentials are checked only with [`Config::auth`]: then a wrong username or password
//!   gets CONNACK 4 and a client without a username CONNACK 5 unless anonymous clients are
//!   allowed (the rule of `activity-broker`).
//! - **Clean sessions only.** A client that asks for a persistent session
//!   (`clean_session = 0`) is accepted with `session_present = 0`: it gets a fresh session that
//!   ends with the connection, as if it had asked for a clean one (section 3.2.2.2 allows
//!   this answer; the client learns from it that nothing was kept).
//! - SUBSCRIBE with wildcard filters; QoS 2 is granted as QoS 1. A filter that would receive
//!   events is refused (0x80) unless the client id is in [`Config::system_subscribers`].
//! - PUBLISH QoS 0, 1 and 2 from clients; delivery at `min(publish, subscription)` QoS, at
//!   most QoS 1. QoS 2 is acknowledged with PUBREC / PUBCOMP; a client with more than
//!   [`QOS2_INFLIGHT`] QoS 2 publishes awaiting PUBREL is closed. Only the gateway publishes on
//!   system topics: other clients' publishes there are dropped (and still acknowledged).
//! - Retained messages (the rules of [`activity_core::retained`]) in a table of
//!   [`RETAINED_ENTRIES`] topics of up to [`RETAINED_BYTES`] bytes of topic and payload each: a
//!   PUBLISH with RETAIN 1 stores or replaces its topic's message, an empty payload clears it,
//!   and a new subscription gets the matching ones with RETAIN 1 after its SUBACK (MQTT 5:
//!   by its Retain Handling), as its queue has room: a slow reader waits for them, and one
//!   whose topic gets a new retained message meanwhile, delivered to it live, is not sent
//!   again. A message for one more topic, or a larger one, is not kept and
//!   is counted in [`GatewayStats::retained_dropped`]; the table never pushes one out. It is
//!   lost at a restart (RAM only). Its MQTT 5 Message Expiry Interval is kept with it and
//!   counted down by the seconds it waited in the table when it is sent at a subscribe; once
//!   it has passed, the message is removed instead (counted the same way). Its other MQTT 5
//!   properties are not kept.
//! - Keep-alive: a client silent for 1.5 times its keep-alive is closed (`keepalive_timeout`).
//! - Last wills are published when a connection ends without DISCONNECT, as a PUBLISH of
//!   the client: its `message` event first, then `disconnected`.
//! - QoS 1 deliveries are not retransmitted (TCP carries them; a closed connection loses
//!   them, as it would with a clean session anyway).
//!
//! # Memory
//!
//! Everything lives in [`GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE, S>`](GatewayResources);
//! `S`, the engine stores ([`SlotStores`], with the constants below as its defaults), sets
//! what each client may keep:
//!
//! - `CLIENTS` client slots, each a listening TCP socket (smoltcp has no backlog) with an
//!   `RX`-byte receive buffer, a `TX`-byte transmit buffer and an `RX`-byte packet buffer.
//!   `RX` is also the largest packet a client may send (a larger one closes the connection with
//!   `packet_too_large`).
//! - per slot: a `QUEUE`-byte queue of packets waiting for the socket (a delivery that does not
//!   fit is dropped and counted), `SUBS` subscriptions of up to [`FILTER_CAPACITY`] bytes, a
//!   last will of up to [`WILL_CAPACITY`] bytes (topic and message) and the
//!   tracker with [`ACK_ENTRIES`] pending `msgack` deliveries of up to [`ACK_TEXT`] bytes of
//!   text (the defaults of [`SlotStores`]).
//! - one `QUEUE`-byte event buffer (an event whose JSON is larger is dropped and counted) and
//!   one uplink queue ([`activity_core::outbox::Outbox`]) of `QUEUE` bytes plus 12 bytes of
//!   bookkeeping, holding encoded PUBLISH packets (an event is about 200-300 bytes).
//! - the retained table, [`RETAINED_ENTRIES`] x ([`RETAINED_BYTES`] + 16) bytes (13 rounded up
//!   to a multiple of 4).
//! - one refusing socket (64 + 64 bytes, and 16 for the start of a CONNECT) and the uplink socket (`TX` +
//!   [`UPLINK_SOCKET_RX`] + [`UPLINK_RX_BUFFER`] bytes).
//!
//! The stack's `StackResources` must have room for `CLIENTS + 2` sockets besides the
//! application's own. One more client slot costs about `2 * RX + TX + QUEUE + 2 KiB` of RAM
//! (tracker, subscriptions, will, socket state) with the default [`SlotStores`]: measured
//! 4,200 bytes of `.bss` with `RX = TX = QUEUE = 512` and `SUBS = 4`, and 3,720 bytes with the
//! firmware example's `SlotStores<2, 64, 48, 64>` (docs/gateway.md, "Memory sizing").
//!
//! # Feature flags
//!
//! - `defmt`: log through `defmt` (and derive `defmt::Format` in the core). Without it the
//!   gateway logs nothing.
//!
//! # Threads
//!
//! The runner and the [`GatewayHandle`] must stay on one executor: the shared state uses
//! `RefCell`s and `NoopRawMutex` signals, no critical sections.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[macro_use]
mod fmt;

mod queue;
mod router;
mod session;
mod stats;
mod uplink;

use activity_core::QoS;
pub use activity_core::outbox::DropPolicy;
use activity_core::server::ReasonCode;
use activity_core::tracker::TrackerConfig;
use embassy_futures::join::{join_array, join3};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Duration, Instant};

pub use router::{
    ACK_ENTRIES, ACK_TEXT, EngineStores, FILTER_CAPACITY, MAX_FILTERS_PER_SUBSCRIBE, QOS2_INFLIGHT,
    RETAINED_BYTES, RETAINED_ENTRIES, SlotStores, UPLINK_TOPIC_CAPACITY, V5_DECLINED,
    WILL_CAPACITY,
};
pub use stats::GatewayStats;
pub use uplink::{OFFLINE, ONLINE};

use router::{Shared, Status};

/// The uplink's packet buffer: it bounds the uplink's CONNECT (gateway id, state topic and
/// credentials) and what it reads from the upstream broker.
pub const UPLINK_RX_BUFFER: usize = 384;
/// The uplink socket's receive buffer. The upstream broker sends only CONNACK, PUBACKs and
/// PINGRESPs (4, 4 and 2 bytes; the uplink subscribes to nothing): 16 PUBACKs fit, and TCP
/// holds back the rest until they are read.
pub const UPLINK_SOCKET_RX: usize = 64;

/// What the gateway serves and where it forwards.
#[derive(Clone, Debug)]
pub struct Config<'d> {
    /// The TCP port to listen on (1883 by default).
    pub port: u16,
    /// The gateway's name: `"node"` in every event, and its client id upstream.
    pub gateway_id: &'d str,
    /// The system topics and which events are on.
    pub tracker: TrackerConfig,
    /// Client ids that may subscribe to system topics (the events).
    pub system_subscribers: &'d [&'d str],
    /// Who may connect: `None` (the default) checks no credentials; see [`Auth`].
    pub auth: Option<Auth<'d>>,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout: Duration,
    /// The upstream broker, if any.
    pub uplink: Option<UplinkConfig<'d>>,
}

impl<'d> Config<'d> {
    /// Port 1883, default system topics, no system subscribers, no credential checks, 10 s to
    /// CONNECT, no uplink.
    pub fn new(gateway_id: &'d str) -> Self {
        Config {
            port: 1883,
            gateway_id,
            tracker: TrackerConfig::default(),
            system_subscribers: &[],
            auth: None,
            connect_timeout: Duration::from_secs(10),
            uplink: None,
        }
    }
}

/// The credential check of CONNECT, the rule of `activity-broker` (MQTT 3.1.1 section 3.1.3.4
/// leaves it to the server).
///
/// A CONNECT without a username is accepted when `allow_anonymous`, else refused with CONNACK
/// 5 (not authorized). A CONNECT with a username is accepted only when one of `users` has that
/// username and exactly that password, else refused with CONNACK 4 (bad username or password).
/// Refusals are counted in [`GatewayStats::refused_auth`].
#[derive(Clone, Copy, Debug)]
pub struct Auth<'d> {
    /// The users who may log in.
    pub users: &'d [User<'d>],
    /// Whether a client without a username may connect.
    pub allow_anonymous: bool,
}

/// One user who may log in. The password is kept as given (a microcontroller has no room for
/// a password hash's work); compared in time that does not depend on where it differs.
#[derive(Clone, Copy)]
pub struct User<'d> {
    /// The MQTT username.
    pub username: &'d str,
    /// The password, as the client sends it.
    pub password: &'d [u8],
}

impl core::fmt::Debug for User<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Auth<'_> {
    /// The CONNACK refusal for these credentials, or `None` when they may connect.
    pub(crate) fn check(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Option<ReasonCode> {
        let Some(username) = username else {
            return (!self.allow_anonymous).then_some(ReasonCode::NotAuthorized);
        };
        let password = password.unwrap_or_default();
        // Every user is compared, so the time does not tell which one nearly matched.
        let known = self.users.iter().fold(false, |found, user| {
            found | (user.username == username && same_secret(user.password, password))
        });
        (!known).then_some(ReasonCode::BadUserNameOrPassword)
    }
}

/// Whether two secrets are equal, in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Where and what the uplink forwards.
#[derive(Clone, Debug)]
pub struct UplinkConfig<'d> {
    /// The upstream broker's address.
    pub remote: IpEndpoint,
    /// The topic prefix upstream: events and messages go to `<prefix>/<local topic>`, the
    /// uplink state to `<prefix>/gateway/<gateway id>/uplink`.
    pub prefix: &'d str,
    /// Local topic filters whose messages are forwarded (events always are).
    pub forward: &'d [&'d str],
    /// The keep-alive sent in CONNECT, in seconds; a PINGREQ goes out at this interval.
    pub keep_alive_secs: u16,
    /// The first retry delay after a failed connection.
    pub backoff_min: Duration,
    /// The longest retry delay (the delay doubles up to it).
    pub backoff_max: Duration,
    /// The username sent in the uplink's CONNECT, if the upstream broker wants one.
    pub username: Option<&'d str>,
    /// The password sent in the uplink's CONNECT (only with a username, section 3.1.2.9).
    pub password: Option<&'d [u8]>,
    /// The QoS of the forwarded events and messages (QoS 2 goes as QoS 1). At QoS 1 each
    /// stays in the uplink queue until the upstream broker's PUBACK and is sent again, with
    /// DUP and in order, after a reconnect: delivered at least once while it had room in the
    /// queue. At QoS 0 what is in flight when the connection breaks is lost.
    pub qos: QoS,
    /// Which message goes when the uplink queue is full (the new one by default); every
    /// dropped message is counted in [`GatewayStats::uplink_dropped`].
    pub drop_policy: DropPolicy,
}

impl<'d> UplinkConfig<'d> {
    /// Forward events only at QoS 1 (the newest dropped when the queue is full), keep-alive
    /// 30 s, backoff 1 s to 60 s, no credentials.
    pub fn new(remote: IpEndpoint, prefix: &'d str) -> Self {
        UplinkConfig {
            remote,
            prefix,
            forward: &[],
            keep_alive_secs: 30,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            username: None,
            password: None,
            qos: QoS::AtLeastOnce,
            drop_policy: DropPolicy::DropNewest,
        }
    }
}

/// The socket and packet buffers of one client slot.
pub struct SlotBuffers<const RX: usize, const TX: usize> {
    rx: [u8; RX],
    tx: [u8; TX],
    packet: [u8; RX],
}

impl<const RX: usize, const TX: usize> SlotBuffers<RX, TX> {
    const fn new() -> Self {
        SlotBuffers {
            rx: [0; RX],
            tx: [0; TX],
            packet: [0; RX],
        }
    }
}

/// The refusing socket's buffers: it reads only the first bytes of a CONNECT and writes one
/// CONNACK.
struct RefuserBuffers {
    rx: [u8; 64],
    tx: [u8; 64],
    scratch: [u8; 16],
}

/// The uplink's socket and packet buffers.
pub struct UplinkBuffers<const TX: usize> {
    rx: [u8; UPLINK_SOCKET_RX],
    tx: [u8; TX],
    packet: [u8; UPLINK_RX_BUFFER],
}

/// All the memory of a gateway, owned by the caller (put it in a `static`).
///
/// `CLIENTS` slots; `RX` bytes per socket receive buffer (also the largest packet a client may
/// send); `TX` bytes per socket transmit buffer; `SUBS` subscriptions per client; `QUEUE` bytes
/// of queued packets per client, of the event buffer and of the uplink queue; `S` the limits
/// of each client's engine stores ([`SlotStores`]: `msgack` entries, filter and will sizes).
/// See the crate's "Memory" section.
pub struct GatewayResources<
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores = SlotStores,
> {
    slots: [SlotBuffers<RX, TX>; CLIENTS],
    refuser: RefuserBuffers,
    uplink: UplinkBuffers<TX>,
    shared: Shared<CLIENTS, SUBS, QUEUE, S>,
}

impl<
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
> Default for GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE, S>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
> GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE, S>
{
    /// Zeroed resources (all zero bits); usable in a `static` initializer.
    ///
    /// Put them in a `static` with a constant initializer (`static_cell::ConstStaticCell`, as
    /// the firmware example does): being all zeros, they go to `.bss` and cost no flash.
    /// `StaticCell::init(GatewayResources::new())` works too, but builds them on the stack
    /// and copies them, and the code for that costs flash.
    ///
    /// Fails to compile when `QUEUE` is below 64 bytes or `RX` below 32 bytes.
    pub const fn new() -> Self {
        const {
            assert!(QUEUE >= 64, "QUEUE must be at least 64 bytes");
            assert!(RX >= 32, "RX must be at least 32 bytes");
        }
        GatewayResources {
            slots: [const { SlotBuffers::new() }; CLIENTS],
            refuser: RefuserBuffers {
                rx: [0; 64],
                tx: [0; 64],
                scratch: [0; 16],
            },
            uplink: UplinkBuffers {
                rx: [0; UPLINK_SOCKET_RX],
                tx: [0; TX],
                packet: [0; UPLINK_RX_BUFFER],
            },
            shared: Shared::new(),
        }
    }
}

/// Builds a gateway on `stack` in `resources`: a handle to watch it and the runner to drive it.
pub fn new<
    'd,
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
>(
    stack: Stack<'d>,
    resources: &'d mut GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE, S>,
    config: Config<'d>,
) -> (
    GatewayHandle<'d>,
    GatewayRunner<'d, CLIENTS, RX, TX, SUBS, QUEUE, S>,
) {
    let GatewayResources {
        slots,
        refuser,
        uplink,
        shared,
    } = resources;
    let shared: &'d Shared<CLIENTS, SUBS, QUEUE, S> = shared;
    (
        GatewayHandle {
            status: &shared.status,
        },
        GatewayRunner {
            stack,
            config,
            slots,
            refuser,
            uplink,
            shared,
        },
    )
}

/// A cheap, copyable view of a running gateway: counters, clock, uplink state.
#[derive(Clone, Copy)]
pub struct GatewayHandle<'d> {
    status: &'d Status,
}

impl GatewayHandle<'_> {
    /// The counters so far.
    pub fn stats(&self) -> GatewayStats {
        self.status.counters.snapshot()
    }

    /// Tells the gateway the current Unix time in ms; event timestamps (`ts`) follow it.
    /// Until called, `ts` counts from the boot of the `embassy_time` clock.
    pub fn set_unix_time_ms(&self, now_ms: u64) {
        self.status
            .epoch_offset_ms
            .set(now_ms.saturating_sub(Instant::now().as_millis()));
    }

    /// Whether the uplink is connected now.
    pub fn is_uplink_up(&self) -> bool {
        self.status.uplink_up.get()
    }
}

/// Drives the gateway: every client slot, the refusing socket and the uplink.
pub struct GatewayRunner<
    'd,
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores = SlotStores,
> {
    stack: Stack<'d>,
    config: Config<'d>,
    slots: &'d mut [SlotBuffers<RX, TX>; CLIENTS],
    refuser: &'d mut RefuserBuffers,
    uplink: &'d mut UplinkBuffers<TX>,
    shared: &'d Shared<CLIENTS, SUBS, QUEUE, S>,
}

impl<
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
> GatewayRunner<'_, CLIENTS, RX, TX, SUBS, QUEUE, S>
{
    /// Runs the gateway forever. Run it in a task of its own (or `join` it with others).
    pub async fn run(&mut self) -> ! {
        let GatewayRunner {
            stack,
            config,
            slots,
            refuser,
            uplink,
            shared,
        } = self;
        let stack = *stack;
        let shared = *shared;
        let config = &*config;
        let mut index = 0;
        // The slot sockets are created before the refusing one, so smoltcp offers a new
        // connection to a free slot first.
        let slots = slots.each_mut().map(|buffers| {
            let i = index;
            index += 1;
            let SlotBuffers { rx, tx, packet } = buffers;
            session::run_slot(shared, config, i, TcpSocket::new(stack, rx, tx), packet)
        });
        // The refusing socket is one more slot future (index `CLIENTS`), of the same type.
        let RefuserBuffers { rx, tx, scratch } = refuser;
        let refuser = session::run_slot(
            shared,
            config,
            CLIENTS,
            TcpSocket::new(stack, rx, tx),
            scratch,
        );
        join3(
            join_array(slots),
            refuser,
            uplink::run_uplink(stack, shared, config, uplink),
        )
        .await;
        // Only reached without an uplink... and not even then: the slots never return.
        loop {
            core::future::pending::<()>().await;
        }
    }
}
