//! Any sequence of connection happenings keeps the tracker consistent with a model: `msgack`
//! only for pending deliveries, at most one `disconnected`, after a `connected`.
//!
//! The body is `activity_core::fuzzing::tracker`, which the stable test
//! `activity-core/tests/fuzz_corpus.rs` also runs on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| activity_core::fuzzing::tracker(data));
