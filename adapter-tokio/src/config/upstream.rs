//! The `[upstream]` table: tap mode, a relay in front of an existing MQTT broker.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The longest `reconnect_ms` accepted, one hour.
pub const MAX_RECONNECT_MS: u64 = 3_600_000;

/// Tap mode, the `[upstream]` table: with `address` set, the binary relays every client to that
/// broker instead of running its own router (see [`crate::tap`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The upstream broker, `host:port` (default: none, the embedded router serves clients).
    pub address: Option<String>,
    /// How long connecting to the upstream broker may take, in milliseconds (default 5,000,
    /// 1 to 3,600,000).
    pub connect_timeout_ms: u64,
    /// How long the event publisher waits before it reconnects to the upstream broker, in
    /// milliseconds (default 1,000, 1 to 3,600,000).
    pub reconnect_ms: u64,
    /// The keep-alive of the event publisher's own connection, in seconds (default 30, 1 to
    /// 65,535).
    pub publisher_keep_alive_secs: u16,
    /// TLS to the upstream broker, the `[upstream.tls]` table (default: plain TCP).
    pub tls: Option<UpstreamTlsConfig>,
}

/// TLS to the upstream broker, the `[upstream.tls]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CA certificates the upstream broker's certificate must chain to.
    pub ca: PathBuf,
    /// The name the upstream's certificate must have (default: the host of `address`).
    pub server_name: Option<String>,
}

impl UpstreamConfig {
    /// The name to check the upstream's certificate against: `tls.server_name`, else the host
    /// of `address` (without the brackets of an IPv6 literal).
    pub fn server_name(&self) -> Option<String> {
        if let Some(name) = self.tls.as_ref().and_then(|t| t.server_name.clone()) {
            return Some(name);
        }
        let (host, _) = self.address.as_deref()?.rsplit_once(':')?;
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            address: None,
            connect_timeout_ms: 5_000,
            reconnect_ms: 1_000,
            publisher_keep_alive_secs: 30,
            tls: None,
        }
    }
}

impl UpstreamConfig {
    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.clamp(1, MAX_RECONNECT_MS))
    }

    /// `reconnect_ms` as a duration.
    pub fn reconnect_delay(&self) -> Duration {
        Duration::from_millis(self.reconnect_ms.clamp(1, MAX_RECONNECT_MS))
    }

    /// Checks the `[upstream]` table.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(address) = &self.address {
            check_address(address)?;
        }
        for (field, value) in [
            ("upstream.connect_timeout_ms", self.connect_timeout_ms),
            ("upstream.reconnect_ms", self.reconnect_ms),
        ] {
            if !(1..=MAX_RECONNECT_MS).contains(&value) {
                return Err(invalid(
                    field,
                    format!("must be 1 to {MAX_RECONNECT_MS} milliseconds, got {value}"),
                ));
            }
        }
        if self.publisher_keep_alive_secs == 0 {
            return Err(invalid(
                "upstream.publisher_keep_alive_secs",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host and a non-zero port.
fn check_address(address: &str) -> Result<(), ConfigError> {
    let bad = || {
        invalid(
            "upstream.address",
            format!("must be host:port, got {address:?}"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains([' ', ',', '/']) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["127.0.0.1:1883", "broker.example:8883", "[::1]:1883"] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "host",
            "host:",
            ":1883",
            "host:0",
            "host:99999",
            "a b:1",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_server_name_defaults_to_the_host() {
        let mut config = UpstreamConfig {
            address: Some("[::1]:8883".to_owned()),
            ..UpstreamConfig::default()
        };
        assert_eq!(config.server_name().as_deref(), Some("::1"));
        config.address = Some("mqtt.internal:8883".to_owned());
        assert_eq!(config.server_name().as_deref(), Some("mqtt.internal"));
        config.tls = Some(UpstreamTlsConfig {
            ca: PathBuf::from("ca.pem"),
            server_name: Some("other".to_owned()),
        });
        assert_eq!(config.server_name().as_deref(), Some("other"));
    }

    #[test]
    fn durations_are_bounded() {
        let zero = UpstreamConfig {
            reconnect_ms: 0,
            ..UpstreamConfig::default()
        };
        assert!(zero.validate().is_err());
        let no_keep_alive = UpstreamConfig {
            publisher_keep_alive_secs: 0,
            ..UpstreamConfig::default()
        };
        assert!(no_keep_alive.validate().is_err());
        assert!(UpstreamConfig::default().validate().is_ok());
    }
}
