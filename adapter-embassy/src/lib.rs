//! adapter-embassy: the MQTT edge gateway for microcontrollers on embassy-net.
//!
//! Not implemented yet: this crate only reserves its place in the workspace. The README's
//! status table and the open issue for the embassy gateway say what it will contain.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
