//! `parse_envelope` never panics and agrees with the serde_json reference of its module docs.
//!
//! The body is `activity_core::fuzzing::envelope`, which the stable test
//! `activity-core/tests/fuzz_corpus.rs` also runs on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| activity_core::fuzzing::envelope(data));
