//! MQTT 3.1.1 decoding never panics, and every decoded packet re-encodes to bytes that
//! decode to an equal packet.
//!
//! The body is `activity_core::fuzzing::mqtt_decode`, which the stable test
//! `activity-core/tests/fuzz_corpus.rs` also runs on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| activity_core::fuzzing::mqtt_decode(data));
