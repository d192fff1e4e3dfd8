//! `router-links`: what rumqttd 0.20's router alone costs per connection, without any network
//! front (issue 19's memory breakdown, docs/scale.md).
//!
//! `router-links [N]` (default 10,000) starts the router with activity-broker's settings
//! (`max_connections` N + 64, 200 outgoing packets per batch, 4 segments of 16 MiB per
//! filter), opens N clean-session links to it from this process, the way activity-broker's
//! front opens one per client connection, and prints the resident memory before and after
//! (`VmRSS` of `/proc/self/status`) and the difference per link, then the sizes of the router's
//! public per-connection element types.

use std::mem::size_of;

use anyhow::Context;
use bench::procfs::status_kib;
use rumqttd::local::LinkBuilder;
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use rumqttd::{Notification, Router, RouterConfig};

/// The allocator activity-broker runs with.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("the argument is a number of links")?,
        None => 10_000,
    };
    let router = Router::new(
        0,
        RouterConfig {
            max_connections: n + 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
    );
    let router_tx = router.spawn();
    let pid = std::process::id();
    let before = status_kib(pid, "VmRSS").context("VmRSS")?;
    let mut links = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("idle-{i}");
        let link = LinkBuilder::new(&id, router_tx.clone())
            .clean_session(true)
            .build()
            .map_err(|e| anyhow::anyhow!("link {i}: {e}"))?;
        links.push(link);
    }
    let after = status_kib(pid, "VmRSS").context("VmRSS")?;
    let per_link = (after.saturating_sub(before) * 1024) / u64::try_from(n.max(1))?;
    println!(
        "router-links: {n} links, VmRSS {before} KiB before, {after} KiB after: {per_link} bytes per link"
    );
    println!(
        "sizes: rumqttd::protocol::Packet {} B, Notification {} B, Publish {} B, Option<PublishProperties> {} B",
        size_of::<Packet>(),
        size_of::<Notification>(),
        size_of::<Publish>(),
        size_of::<Option<PublishProperties>>()
    );
    drop(links);
    Ok(())
}
