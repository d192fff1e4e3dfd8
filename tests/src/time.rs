//! How long the harness waits, and the broker's clock as tests read it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long any single expected thing may take to happen. Generous: on a busy 2-core machine
/// a tap relays through mosquitto and back, and one such wait of 5 s once ran out under load
/// (`conformance qos2_awaiting_pubrel_limit::tap`); a wait that succeeds returns at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long to watch for something that must not happen, after a marker proved the pipeline
/// caught up.
pub const QUIET: Duration = Duration::from_millis(300);

/// Milliseconds since the Unix epoch, as the broker stamps `ts`.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}
