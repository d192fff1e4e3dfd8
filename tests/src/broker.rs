//! Brokers for tests: a free port on loopback and a short shutdown grace.

use adapter_tokio::broker::Broker;
use adapter_tokio::config::Config;

/// A configuration for tests: a free port on loopback and a short shutdown grace.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a literal socket address"),
        shutdown_grace_ms: 200,
        ..Config::default()
    }
}

/// Starts a broker with `config` (its `listen` should be `127.0.0.1:0`).
pub async fn start_broker(config: Config) -> Broker {
    Broker::start(config).await.expect("the broker starts")
}

/// Starts a broker with [`test_config`].
pub async fn start_default_broker() -> Broker {
    start_broker(test_config()).await
}
