//! activity-core: the no_std, no-alloc, sans-IO core of mqtt-activity.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("the `defmt` and `log` features are mutually exclusive");

#[macro_use]
mod fmt;

pub mod acks;
pub mod client_id;
pub mod codec;
pub mod envelope;
pub mod event;
pub mod publishers;
pub mod qos;
pub mod system;
pub mod topic;
pub mod tracker;

pub use qos::QoS;
