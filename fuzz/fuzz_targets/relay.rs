//! Any client and upstream bytes, verdicts, clock steps and closes keep the protocol engine's
//! relay mode valid and in order: whole client packets upstream (never a denied publish),
//! whole server packets to the client, one `connected` after the upstream accepted, one
//! `disconnected`, nothing after the close.
//!
//! The body is `activity_core::fuzzing::relay`, which the stable test
//! `activity-core/tests/fuzz_corpus.rs` also runs on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| activity_core::fuzzing::relay(data));
