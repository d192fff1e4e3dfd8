//! `rumqttd-baseline`: rumqttd 0.20 with its own TCP listener, the baseline of benchmark
//! case 1.
//!
//! `rumqttd-baseline [ADDR] [v4|v5]` (default `127.0.0.1:1883`, `v4`: rumqttd's MQTT 3.1.1
//! listener; `v5`: its MQTT 5 listener) runs the same router that
//! activity-broker runs, with the same router settings (200 outgoing packets per batch, 4
//! segments of 16 MiB per filter), but behind rumqttd's own network front instead of ours.
//! It runs until killed.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// The allocator activity-broker runs with, so that case 1 and the activity-broker cases differ
/// only in the network front (rumqttd's own binary keeps the system allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:1883")
        .parse()
        .context("the argument must be an address such as 127.0.0.1:1883")?;
    let v5 = match std::env::args().nth(2).as_deref() {
        None | Some("v4") => false,
        Some("v5") => true,
        Some(other) => anyhow::bail!("the second argument must be v4 or v5, not {other}"),
    };
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("rumqttd-baseline: cannot raise the open-file limit: {e}");
    }
    let server = ServerSettings {
        name: if v5 { "v5-bench" } else { "v4-bench" }.to_owned(),
        listen,
        tls: None,
        // No delay between accepted connections, so that the connect storm measures the broker.
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_100,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: (!v5).then(|| HashMap::from([("1".to_owned(), server.clone())])),
        v5: v5.then(|| HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    eprintln!("rumqttd-baseline: listening on {listen}");
    broker.start().context("rumqttd stopped")?;
    Ok(())
}
