//! The broker's log subscriber: `tracing` to stderr, filtered by `RUST_LOG`.
//!
//! rumqttd's router opens a span for every packet it handles, some at `error` level (for
//! example `publish`, with the topic formatted with `Debug`), so they pass any `RUST_LOG`
//! level. With a formatting subscriber each of those spans allocates and formats its fields on
//! the router thread, which is the broker's bottleneck: in a profile of 1 publisher / 1
//! subscriber at QoS 1 they took about a quarter of the router thread's time. rumqttd's own
//! binary pays nothing for them only because it installs no subscriber. The broker therefore
//! disables rumqttd's spans (its log events still pass, without their span context).

use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether `metadata` is let through: everything except the router's per-packet spans.
pub fn is_logged(metadata: &Metadata<'_>) -> bool {
    !(metadata.is_span() && metadata.target().starts_with("rumqttd"))
}

/// Installs the global subscriber: stderr, `RUST_LOG` (default `default_directive`), and no
/// rumqttd spans (see the module docs).
pub fn init(default_directive: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    tracing_subscriber::registry()
        .with(filter_fn(is_logged))
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Records the names of the spans and the messages that reach it.
    #[derive(Default, Clone)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let name = format!(
                "span {} {}",
                attrs.metadata().target(),
                attrs.metadata().name()
            );
            self.0.lock().unwrap().push(name);
        }

        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let name = format!("event {}", event.metadata().target());
            self.0.lock().unwrap().push(name);
        }
    }

    #[test]
    fn router_spans_are_dropped_and_router_events_kept() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(filter_fn(is_logged))
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::span!(target: "rumqttd::router::routing", Level::ERROR, "publish");
            let _entered = span.enter();
            tracing::event!(target: "rumqttd::router::routing", Level::ERROR, "router error");
            let ours = tracing::span!(target: "adapter_tokio::connection", Level::ERROR, "ours");
            let _ours = ours.enter();
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "event rumqttd::router::routing",
                "span adapter_tokio::connection ours"
            ]
        );
    }
}
