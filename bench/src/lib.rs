//! The pieces of `activity-bench`, the load tool of issue 7.
//!
//! `activity-bench` drives any MQTT 3.1.1 broker over loopback with raw MQTT: packets are
//! encoded and decoded with [`activity_core::codec`] on plain tokio sockets, so the client side
//! costs as little as possible and is the same for every broker measured. The modules:
//!
//! | module | what it holds |
//! |---|---|
//! | [`wire`] | a minimal MQTT client: CONNECT, SUBSCRIBE, PUBLISH batches, packet reading |
//! | [`payload`] | test payloads carrying their send time, as `msgack` envelopes when they fit |
//! | [`procfs`] | CPU time and memory of a broker process, read from `/proc` |
//! | [`child`] | a broker started as a child process for one run |
//! | [`stats`] | percentiles and medians |
//! | [`report`] | the results CSV, the summary table and the SVG chart |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod child;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod stats;
pub mod wire;
