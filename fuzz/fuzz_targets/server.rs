//! Any bytes, verdicts, deliveries, clock steps and closes keep the protocol engine's output
//! valid and in order: whole server packets, one `connected` after an accepting verdict, one
//! `disconnected`, nothing after the close.
//!
//! The body is `activity_core::fuzzing::server`, which the stable test
//! `activity-core/tests/fuzz_corpus.rs` also runs on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| activity_core::fuzzing::server(data));
