//! Any event encodes to valid JSON of exactly `encoded_len_bound` bytes that reads back to
//! its fields.
//!
//! The body is `activity_core::fuzzing::event_encode`, which the stable test
//! `activity-core/tests/fuzz_corpus.rs` also runs on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| activity_core::fuzzing::event_encode(data));
