//! What a server checks about a CONNECT that the engine cannot see, after the engine's own
//! rules (protocol level, client id, last will) passed: the credentials, the server's phase and
//! the connection limit. The broker and the tap ask the same questions in the same order.

use std::net::IpAddr;
use std::sync::Arc;

use activity_core::server::ReasonCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::info;

use crate::auth::{AuthOutcome, Authenticator};

/// Whether a client at `peer` connects over loopback (an IPv4-mapped IPv6 loopback address
/// included): the engine's `Peer::is_loopback`, the same for the broker and the tap.
pub fn is_loopback(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

/// Where a server is in its life; connections watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutting down: report `server_shutdown`, stop reading, keep delivering.
    Draining,
    /// Close every socket now.
    Closing,
}

/// The checks of [`Admission::admit`].
pub struct Admission<'a> {
    /// Username/password checks.
    pub auth: &'a Authenticator,
    /// The server's phase: no new connections unless running.
    pub phase: &'a watch::Receiver<Phase>,
    /// One permit per allowed connection.
    pub permits: &'a Arc<Semaphore>,
}

impl Admission<'_> {
    /// The connection's permit, or the reason to refuse it (logged here; the engine writes the
    /// CONNACK and counts it): bad credentials, a user not allowed, a server shutting down, the
    /// connection limit.
    pub async fn admit(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<OwnedSemaphorePermit, ReasonCode> {
        let refused = |reason: ReasonCode, why: &str| {
            info!(code = reason.as_u8(), why, "CONNECT refused");
            Err(reason)
        };
        match self.auth.check(username, password).await {
            AuthOutcome::Allowed => {}
            AuthOutcome::BadCredentials => {
                return refused(ReasonCode::BadUserNameOrPassword, "bad credentials");
            }
            AuthOutcome::NotAuthorized => {
                return refused(ReasonCode::NotAuthorized, "not authorized");
            }
        }
        if *self.phase.borrow() != Phase::Running {
            return refused(ReasonCode::ServerUnavailable, "shutting down");
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            // MQTT 3.1.1 has no "server busy": the engine answers it as server unavailable (3).
            Err(_) => refused(ReasonCode::ServerBusy, "max_connections reached"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers_include_mapped_ipv6() {
        for loopback in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = loopback.parse().unwrap();
            assert!(is_loopback(ip), "{loopback}");
        }
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }
}
