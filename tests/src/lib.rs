//! Shared harness for the end-to-end tests: a broker on a free port, rumqttc clients driven by
//! a background task, an event monitor subscribed to `SYSTEM/#`, raw MQTT 3.1.1 sockets, and
//! Debian's `mosquitto_pub` / `mosquitto_sub` as subprocesses.
//!
//! Every wait is bounded by [`WAIT`] (or an explicit timeout) and panics with a description of
//! what was awaited and what arrived instead, so a failing test says why.
//!
//! Each idea has its module, and everything is re-exported here, so tests name it
//! `tests::Name`: [`WAIT`], [`QUIET`] and [`now_ms`] (time); [`test_config`] and
//! [`start_broker`] (broker); [`Client`] (client); [`Ev`] and [`Monitor`] (monitor);
//! [`assert_fields`] and its siblings (assert); [`RawClient`] and [`connect_packet`] (raw);
//! [`mosquitto_pub`] and [`MosquittoSub`] (mosquitto).

mod assert;
mod broker;
mod client;
mod monitor;
mod mosquitto;
mod raw;
mod time;

pub use assert::{
    assert_fields, assert_loopback_peer, assert_ts_recent, peer_addr, with_reason_code,
};
pub use broker::{start_broker, start_default_broker, test_config};
pub use client::{Client, ConnectFailure, options};
pub use monitor::{Ev, Monitor};
pub use mosquitto::{MosquittoSub, mosquitto_pub, mosquitto_speaks_mqtt5_and_mqtt31};
pub use raw::{RawClient, connect_packet};
pub use time::{QUIET, WAIT, now_ms};

pub mod certs;
pub mod cluster;
pub mod conformance;
pub mod hostile;
pub mod http;
pub mod kafka;
pub mod netns;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod raw5;
pub mod tap;
pub mod webdriver;
