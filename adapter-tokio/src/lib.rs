//! adapter-tokio: `activity-broker`, a full MQTT 3.1.1 broker that publishes every client's
//! activity.
//!
//! rumqttd's router does the routing (retained messages, persistent sessions, QoS 0/1/2); our
//! own tokio network front in [`connection`] owns everything the router lacks: keep-alive, last
//! wills, takeover labelling, CONNACK refusals, access control, and the activity events, which
//! it reports to the core's [`Tracker`](activity_core::tracker::Tracker) and publishes through
//! [`events`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod ack_store;
pub mod acl;
pub mod admission;
pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
pub mod events;
pub mod http;
pub mod interest;
pub mod kafka;
pub mod limits;
mod listeners;
pub mod log_budget;
pub mod logging;
pub mod metrics;
pub mod page;
pub mod presence;
pub mod priority;
pub mod qos_marker;
pub mod retained_presence;
pub mod sequencer;
pub mod session_store;
pub mod tap;
pub mod tls;
pub mod websocket;
