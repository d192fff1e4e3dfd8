//! activity-core: the no_std, no-alloc, sans-IO core of mqtt-activity.
//!
//! mqtt-activity turns what MQTT clients do into JSON events that any MQTT or Kafka consumer
//! can read. This crate holds everything about that which needs no socket, no clock and no
//! heap, so that the same code runs in a tokio server broker and in microcontroller firmware:
//!
//! | module | what it holds |
//! |---|---|
//! | [`codec`] | zero-copy MQTT 3.1.1 decode and encode of every packet type |
//! | [`topic`] | topic name and filter validation, filter matching (section 4.7) |
//! | [`event`] | the activity events and their fixed-capacity JSON encoding |
//! | [`envelope`] | the `product_id` / `message_id` envelope that `msgack` reports |
//! | [`client_id`] | the reserved client id `broker` and the other CONNECT id rules |
//! | [`system`] | the system topics under their prefix, and the loop guard |
//! | [`seq`] | the `session_seq` of a connection: clock, counter and node bits, growing per client id |
//! | [`server`] | one MQTT server connection, sans-IO: bytes in; answers, routes and events out (the protocol engine of every server; in relay mode, [`server::Relay`], for one in front of another MQTT server) |
//! | [`tracker`] | the per-connection state machine: happenings in, events out |
//! | [`acks`] | deliveries awaiting acknowledgement (the `msgack` correlation) |
//! | [`publishers`] | who published an envelope message, for servers that cannot tell |
//! | [`outbox`] | a client's bounded queue of PUBLISHes to a server: QoS 1 kept until PUBACK, resent with DUP after a reconnect |
//! | [`retained`] | retained messages in a fixed table, for a server that keeps them itself (the gateway) |
//!
//! # The run loop
//!
//! A server drives one [`server::Connection`] per client: bytes in with
//! [`handle_input`](server::Connection::handle_input), answers out into its transmit buffer,
//! routes and events out through its [`Output`](server::Output), deadlines from
//! [`poll_timeout`](server::Connection::poll_timeout). The [`server`] module docs give the
//! call order and that run loop as a doc test; the engine keeps a tracker inside. A server in
//! front of another MQTT server (a relay, whose router is that server) drives a
//! [`server::Relay`] instead, which reads the packets of both directions; its module docs give
//! its call order.
//!
//! An adapter that only observes a session it neither serves nor relays keeps one
//! [`Tracker`](tracker::Tracker) per connection, reports what happens with `handle_*` calls (time in
//! milliseconds since the Unix epoch as an argument), and sends each returned event wherever
//! events go, encoded with [`event::encode`] into a buffer it owns:
//!
//! ```
//! use activity_core::acks::FixedAckStore;
//! use activity_core::codec::Properties;
//! use activity_core::event::{
//!     DisconnectReason, EncodeOptions, UserProperties, encode, encoded_len_bound,
//! };
//! use activity_core::system::SystemTopics;
//! use activity_core::tracker::{ConnectInfo, DeliveryInfo, Tracker, TrackerConfig};
//! use activity_core::QoS;
//!
//! let config = TrackerConfig::default();
//! let topics = SystemTopics::default();
//! // 16 deliveries awaiting ack, 256 bytes of topic and ids each: all inline, no heap.
//! let mut tracker: Tracker<FixedAckStore<16, 256>> = Tracker::new(config, FixedAckStore::new());
//! let mut buf = [0u8; 512];
//! let mut sent = 0;
//! let mut send = |event: activity_core::event::Event<'_>| {
//!     let options = EncodeOptions::default();
//!     assert!(encoded_len_bound(&event, &options) <= buf.len());
//!     let n = encode(&event, &options, &mut buf).expect("the bound fits the buffer");
//!     let topic = topics.topic(event.kind());
//!     // An adapter publishes buf[..n] on `topic` here.
//!     assert!(topic.starts_with("SYSTEM/"));
//!     assert!(n > 0);
//!     sent += 1;
//! };
//!
//! let now = 1_700_000_000_000;
//! let connect = ConnectInfo {
//!     client_id: "sensor-7",
//!     username: None,
//!     proto_ver: 4,
//!     keepalive: 30,
//!     clean_session: true,
//!     peer: Some("192.0.2.10:51000"),
//!     transport: None,
//!     // MQTT 5 only: the session expiry and the CONNECT's user properties.
//!     session_expiry: None,
//!     user_properties: UserProperties::NONE,
//!     // The node's number for this connection (`activity_core::seq`).
//!     session_seq: activity_core::seq::next_session_seq(0, 1_700_000_000_000, Default::default()),
//! };
//! // The reserved-id rule runs here: `Err` means CONNACK with its return code, then close.
//! if let Some(event) = tracker.handle_connect(now, connect).expect("an ordinary id") {
//!     send(event);
//! }
//! // The last argument: MQTT 5 subscription options (none before MQTT 5).
//! if let Some(event) = tracker.handle_subscribe(now + 1, "cmd/sensor-7", Some(QoS::AtLeastOnce), None) {
//!     send(event);
//! }
//! // The server delivers an envelope message at QoS 1 with packet id 3 ...
//! let payload = br#"{"product_id":"p1","message_id":"m42","payload":"on"}"#;
//! let delivery = DeliveryInfo {
//!     pkid: 3,
//!     qos: QoS::AtLeastOnce,
//!     topic: "cmd/sensor-7",
//!     payload,
//!     pub_client_id: Some("controller"),
//!     properties: Properties::EMPTY,
//! };
//! tracker.handle_delivery(delivery, |_| None);
//! // ... and the client's PUBACK for it becomes `msgack` (MQTT 5 would pass its reason code).
//! if let Some(event) = tracker.handle_puback(now + 2, 3, None) {
//!     send(event);
//! }
//! if let Some(event) = tracker.handle_close(now + 3, DisconnectReason::TcpClosed, None) {
//!     send(event);
//! }
//! assert_eq!(sent, 4);
//! ```
//!
//! # Panics, errors and unwraps
//!
//! Bad input is normal: every byte from the network gives an error value
//! ([`codec::DecodeError`]), `None` (an envelope that is not one), or an event, never a panic.
//! Decoding returns `Ok(None)` for "not complete yet" and `Err` only for bytes that can never
//! become valid. Encoding into a buffer that is too small is an error, never a truncated
//! document. A panic in this crate is a bug: the few `unwrap`s and index operations that remain
//! guard local invariants and say why they hold. The fuzz targets in `fuzz/` and the proptests
//! hunt for violations.
//!
//! # Feature flags
//!
//! - `defmt`: derive `defmt::Format` on public types and log through `defmt` (firmware).
//! - `log`: log through the `log` crate (host adapters). `defmt` and `log` are mutually
//!   exclusive; with neither, the crate logs nothing.
//! - `fuzzing` (host only, needs `std`): the fuzz target bodies in `fuzzing`, shared by the
//!   cargo-fuzz targets in `fuzz/` and the stable corpus replay test.
//!
//! # Memory
//!
//! Nothing is allocated; every table has a fixed capacity chosen by the caller:
//!
//! | what | size |
//! |---|---|
//! | [`server::Connection`] without its stores | about 540 bytes: the tracker below, the [`server::PEER_CAPACITY`] (48) byte peer, limits, clocks, the MQTT 5 delivery state, the deadlines of a kept session |
//! | [`FixedSessionStore<SUBS, FILTER, QOS2, WILL, ALIASES>`](server::FixedSessionStore) | about `SUBS * (FILTER + 16) + QOS2 * 2 + WILL + 2 * ALIASES * (FILTER + 12) + 40` bytes (`ALIASES`, topic aliases per direction, 0 by default; `WILL` holds the will's topic, message and properties) |
//! | [`FixedRequestStore<N, BYTES>`](server::FixedRequestStore) (relay mode) | about `N * (BYTES + 16)` bytes |
//! | [`Tracker`](tracker::Tracker) without its store | about 290 bytes: a [`client_id::CLIENT_ID_CAPACITY`] (128) byte id, the [`system::PREFIX_CAPACITY`] (48) byte prefix, counters, the rate bounds of `denied` and `dropped` |
//! | [`FixedAckStore<N, TEXT>`](acks::FixedAckStore) | about `N * (TEXT + 64)` bytes; `TEXT` holds topic, string ids and publisher id of one delivery |
//! | [`PublisherTable<N>`](publishers::PublisherTable) | about `N * 480` bytes (`N` a power of two) |
//! | [`envelope::Envelope`] | two ids of at most [`envelope::ID_CAPACITY`] (64) bytes |
//! | JSON output | caller's buffer; [`event::encoded_len_bound`] gives the exact size needed |
//!
//! Size the ack store by the deliveries a client may have in flight (a server's receive
//! maximum or in-flight window); when it is full the oldest entry goes and
//! [`TrackerStats::deliveries_evicted`](tracker::TrackerStats) counts it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("the `defmt` and `log` features are mutually exclusive");

// The host-only `fuzzing` feature needs `std` (the `arbitrary` derive names `::std`).
#[cfg(feature = "fuzzing")]
extern crate std;

#[macro_use]
mod fmt;

pub mod acks;
pub mod client_id;
pub mod codec;
pub mod envelope;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod json_scan;
pub mod outbox;
#[cfg(test)]
mod proptest_cases;
pub mod publishers;
pub mod qos;
pub mod retained;
pub mod seq;
pub mod server;
pub mod system;
pub mod topic;
pub mod tracker;

pub use qos::QoS;
