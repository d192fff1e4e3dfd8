//! Router links built a few at a time.
//!
//! rumqttd 0.20's `LinkBuilder::build` blocks its thread until the router answers the new
//! link, so every build runs on tokio's blocking pool. Unbounded, a connect storm of N clients
//! starts up to N threads at once (188 of them for 10,000 clients arriving 200 at a time), and
//! each keeps its stack and its allocator's caches for the 10 s that tokio keeps an idle
//! blocking thread: about 600 bytes of RSS per connection of that storm (docs/scale.md,
//! "Memory per idle connection"). The router answers one link at a time anyway, so a few
//! builds in progress keep it as busy as many; the rest wait their turn, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use tokio::sync::Semaphore;
use tracing::info;

use super::LinkFactory;
use crate::metrics::Metrics;

/// Most router links built at once (each build holds a thread of tokio's blocking pool
/// while it waits for the router). A build past it waits for one to finish, counted in
/// `activity_link_build_waits_total`.
pub const LINK_BUILDERS: usize = 4;

/// Builds router links with [`LinkFactory`], at most [`LINK_BUILDERS`] at once.
pub struct LinkBuilders {
    factory: LinkFactory,
    permits: Semaphore,
    metrics: Arc<Metrics>,
    /// Whether the first wait was logged (one line per process, not one per wait: a connect
    /// storm waits thousands of times).
    logged: AtomicBool,
}

impl LinkBuilders {
    /// Builds links with `factory`, counting waits in `metrics`.
    pub fn new(factory: LinkFactory, metrics: Arc<Metrics>) -> Self {
        LinkBuilders {
            factory,
            permits: Semaphore::new(LINK_BUILDERS),
            metrics,
            logged: AtomicBool::new(false),
        }
    }

    /// The router link of `router_id` (see [`LinkFactory`]), built on tokio's blocking pool
    /// once fewer than [`LINK_BUILDERS`] builds are in progress.
    pub async fn build(
        &self,
        router_id: String,
        clean: bool,
    ) -> anyhow::Result<(LinkTx, LinkRx, Notification)> {
        let _permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics
                    .link_build_waits
                    .fetch_add(1, Ordering::Relaxed);
                if !self.logged.swap(true, Ordering::Relaxed) {
                    info!(
                        builders = LINK_BUILDERS,
                        "router links wait for a builder (counted in activity_link_build_waits_total)"
                    );
                }
                // Never closed: the semaphore lives as long as `self`.
                self.permits.acquire().await?
            }
        };
        let factory = self.factory.clone();
        tokio::task::spawn_blocking(move || factory(&router_id, clean)).await?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use rumqttd::local::LinkBuilder;
    use rumqttd::{Router, RouterConfig};

    use super::*;

    /// A gate the test opens: builds wait at it after counting themselves in.
    #[derive(Default)]
    struct Gate {
        state: Mutex<(usize, usize, bool)>,
        changed: Condvar,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_link_builders_links_are_built_at_once_and_the_rest_wait_counted() {
        let router = Router::new(
            0,
            RouterConfig {
                max_connections: 100,
                max_outgoing_packet_count: 200,
                max_segment_size: 1024 * 1024,
                max_segment_count: 2,
                ..RouterConfig::default()
            },
        );
        let router_tx = router.spawn();
        // The real router's links, each build held at the gate until the test opens it; the
        // gate records how many builds are in progress at once (now, most).
        let gate = Arc::new(Gate::default());
        let held = gate.clone();
        let factory: LinkFactory = Arc::new(move |client_id: &str, clean: bool| {
            {
                let mut state = held.state.lock().unwrap();
                state.0 += 1;
                state.1 = state.1.max(state.0);
                held.changed.notify_all();
                while !state.2 {
                    state = held.changed.wait(state).unwrap();
                }
                state.0 -= 1;
            }
            LinkBuilder::new(client_id, router_tx.clone())
                .clean_session(clean)
                .build()
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
        let metrics = Arc::new(Metrics::default());
        let builders = Arc::new(LinkBuilders::new(factory, metrics.clone()));
        const LINKS: usize = 40;
        let builds: Vec<_> = (0..LINKS)
            .map(|i| {
                let builders = builders.clone();
                tokio::spawn(async move { builders.build(format!("c{i}"), true).await })
            })
            .collect();
        // Every build beyond the first LINK_BUILDERS waits, counted, while those are held.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let in_progress = gate.state.lock().unwrap().0;
            let waits = metrics.link_build_waits.load(Ordering::Relaxed);
            if in_progress == LINK_BUILDERS && waits == (LINKS - LINK_BUILDERS) as u64 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{in_progress} builds in progress, {waits} waits"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let mut state = gate.state.lock().unwrap();
            state.2 = true;
            gate.changed.notify_all();
        }
        for build in builds {
            let (_tx, _rx, connack) = build.await.unwrap().unwrap();
            assert!(matches!(
                Option::<rumqttd::protocol::Packet>::from(connack),
                Some(rumqttd::protocol::Packet::ConnAck(..))
            ));
        }
        assert_eq!(gate.state.lock().unwrap().1, LINK_BUILDERS);
        assert_eq!(
            metrics.link_build_waits.load(Ordering::Relaxed),
            (LINKS - LINK_BUILDERS) as u64
        );
    }
}
