//! Reason codes: why the server refuses, acknowledges or disconnects (MQTT 5.0 section 2.4), and
//! their MQTT 3.1.1 equivalents.
//!
//! The engine decides with MQTT 5 reason codes from the start, whatever the client speaks; what
//! goes on the wire for an MQTT 3.1.1 client is derived here, in one place: a CONNACK return
//! code (3.1.1 section 3.2.2.3), or for a DISCONNECT nothing at all (3.1.1 has no server
//! DISCONNECT: the server closes the connection).

use crate::codec::ConnectReturnCode;
use crate::event::DisconnectReason;

/// An MQTT 5.0 reason code (section 2.4) that this server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00: success, normal disconnection, or QoS 0 granted.
    Success = 0x00,
    /// 0x80: unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81: malformed packet.
    MalformedPacket = 0x81,
    /// 0x82: protocol error.
    ProtocolError = 0x82,
    /// 0x84: unsupported protocol version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: client identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86: bad user name or password.
    BadUserNameOrPassword = 0x86,
    /// 0x87: not authorized.
    NotAuthorized = 0x87,
    /// 0x88: server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89: server busy (the connection limit).
    ServerBusy = 0x89,
    /// 0x8B: server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: bad authentication method (enhanced authentication is not offered).
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: keep alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: session taken over.
    SessionTakenOver = 0x8E,
    /// 0x93: receive maximum exceeded (more QoS 2 publishes unacknowledged than announced).
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: topic alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: packet too large.
    PacketTooLarge = 0x95,
    /// 0x97: quota exceeded (a bounded table is full).
    QuotaExceeded = 0x97,
    /// 0x9E: shared subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0xA1: subscription identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
}

impl ReasonCode {
    /// The wire value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The reason code with wire value `code`, if the server knows it.
    pub const fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => ReasonCode::Success,
            0x80 => ReasonCode::UnspecifiedError,
            0x81 => ReasonCode::MalformedPacket,
            0x82 => ReasonCode::ProtocolError,
            0x84 => ReasonCode::UnsupportedProtocolVersion,
            0x85 => ReasonCode::ClientIdentifierNotValid,
            0x86 => ReasonCode::BadUserNameOrPassword,
            0x87 => ReasonCode::NotAuthorized,
            0x88 => ReasonCode::ServerUnavailable,
            0x89 => ReasonCode::ServerBusy,
            0x8B => ReasonCode::ServerShuttingDown,
            0x8C => ReasonCode::BadAuthenticationMethod,
            0x8D => ReasonCode::KeepAliveTimeout,
            0x8E => ReasonCode::SessionTakenOver,
            0x93 => ReasonCode::ReceiveMaximumExceeded,
            0x94 => ReasonCode::TopicAliasInvalid,
            0x95 => ReasonCode::PacketTooLarge,
            0x97 => ReasonCode::QuotaExceeded,
            0x9E => ReasonCode::SharedSubscriptionsNotSupported,
            0xA1 => ReasonCode::SubscriptionIdentifiersNotSupported,
            _ => return None,
        })
    }

    /// The snake_case name of the code, after MQTT 5.0 section 2.4 (the `reason` of a
    /// `refused` event).
    pub const fn name(self) -> &'static str {
        match self {
            ReasonCode::Success => "success",
            ReasonCode::UnspecifiedError => "unspecified_error",
            ReasonCode::MalformedPacket => "malformed_packet",
            ReasonCode::ProtocolError => "protocol_error",
            ReasonCode::UnsupportedProtocolVersion => "unsupported_protocol_version",
            ReasonCode::ClientIdentifierNotValid => "client_identifier_not_valid",
            ReasonCode::BadUserNameOrPassword => "bad_username_or_password",
            ReasonCode::NotAuthorized => "not_authorized",
            ReasonCode::ServerUnavailable => "server_unavailable",
            ReasonCode::ServerBusy => "server_busy",
            ReasonCode::ServerShuttingDown => "server_shutting_down",
            ReasonCode::BadAuthenticationMethod => "bad_authentication_method",
            ReasonCode::KeepAliveTimeout => "keep_alive_timeout",
            ReasonCode::SessionTakenOver => "session_taken_over",
            ReasonCode::ReceiveMaximumExceeded => "receive_maximum_exceeded",
            ReasonCode::TopicAliasInvalid => "topic_alias_invalid",
            ReasonCode::PacketTooLarge => "packet_too_large",
            ReasonCode::QuotaExceeded => "quota_exceeded",
            ReasonCode::SharedSubscriptionsNotSupported => "shared_subscriptions_not_supported",
            ReasonCode::SubscriptionIdentifiersNotSupported => {
                "subscription_identifiers_not_supported"
            }
        }
    }

    /// Whether the code reports a failure (0x80 and above, section 2.4).
    pub const fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// The MQTT 3.1.1 CONNACK return code (section 3.2.2.3) for a CONNECT refused with this
    /// reason. 3.1.1 has fewer codes: a full server and every other refusal that is not the
    /// client's fault become "server unavailable".
    pub const fn connect_return_code(self) -> ConnectReturnCode {
        match self {
            ReasonCode::Success => ConnectReturnCode::Accepted,
            ReasonCode::UnsupportedProtocolVersion => {
                ConnectReturnCode::UnacceptableProtocolVersion
            }
            ReasonCode::ClientIdentifierNotValid => ConnectReturnCode::IdentifierRejected,
            ReasonCode::BadUserNameOrPassword => ConnectReturnCode::BadUserNameOrPassword,
            ReasonCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
            _ => ConnectReturnCode::ServerUnavailable,
        }
    }
}

/// Why the server ends a connection, as the driver reports it or the engine decides it.
///
/// Each cause has one `disconnected` event reason and one MQTT 5 reason code for the server's
/// DISCONNECT; [`CloseCause::reason`], [`CloseCause::reason_code`] and
/// [`CloseCause::event_reason_code`] are the one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CloseCause {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The client sent an MQTT 5 DISCONNECT asking for its will (reason 0x04).
    ClientDisconnectWithWill,
    /// The client sent an MQTT 5 DISCONNECT with this error reason (0x80 or above); its will
    /// is published (5.0 section 3.14.4 discards it only for 0x00).
    ClientError(u8),
    /// The transport closed or failed (driver).
    TransportClosed,
    /// Nothing came from the client within 1.5 times its keep-alive (engine).
    KeepAliveTimeout,
    /// Another connection took the client id over (driver, from its registry of ids).
    TakenOver,
    /// The client broke the protocol (engine).
    ProtocolError,
    /// The client sent bytes that are no MQTT packet (engine).
    MalformedPacket,
    /// The client sent a packet larger than the server's limit (engine).
    PacketTooLarge,
    /// The client exceeded a per-connection limit (engine).
    QuotaExceeded,
    /// The client used a topic alias the server did not offer (MQTT 5, engine).
    TopicAliasInvalid,
    /// The client sent a subscription identifier to a server that declines them (MQTT 5,
    /// engine; see [`Declined::SUBSCRIPTION_IDENTIFIERS`](super::Declined)).
    SubscriptionIdentifiersNotSupported,
    /// The client had more QoS 2 publishes unacknowledged than the CONNACK's Receive Maximum
    /// allowed (MQTT 5, engine; an MQTT 3.1.1 client closes as [`CloseCause::QuotaExceeded`]).
    ReceiveMaximumExceeded,
    /// The server shuts down (driver).
    ServerShutdown,
    /// The router behind the connection is gone (driver: the upstream broker of a tap, say).
    RouterClosed,
}

impl CloseCause {
    /// The cause of a DISCONNECT from the client with MQTT 5 reason `code` (0x00 for MQTT
    /// 3.1.1, which has none): 0x04 asks for the will, 0x80 and above report an error, any
    /// other code is a normal disconnection.
    pub const fn of_client_disconnect(code: u8) -> Self {
        match code {
            0x04 => CloseCause::ClientDisconnectWithWill,
            0x80..=0xFF => CloseCause::ClientError(code),
            _ => CloseCause::ClientDisconnect,
        }
    }

    /// The `reason_code` of the `disconnected` event: the code the client's DISCONNECT
    /// carried, else the code of the server's DISCONNECT (sent to an MQTT 5 client; the one an
    /// MQTT 3.1.1 client would have got). `None` when the transport closed without either.
    pub const fn event_reason_code(self) -> Option<u8> {
        match self {
            CloseCause::ClientDisconnect => Some(0x00),
            CloseCause::ClientDisconnectWithWill => Some(0x04),
            CloseCause::ClientError(code) => Some(code),
            _ => match self.reason_code() {
                Some(code) => Some(code.as_u8()),
                None => None,
            },
        }
    }

    /// The `reason` of the `disconnected` event.
    pub const fn reason(self) -> DisconnectReason {
        match self {
            CloseCause::ClientDisconnect => DisconnectReason::Normal,
            CloseCause::ClientDisconnectWithWill => DisconnectReason::DisconnectWithWill,
            CloseCause::ClientError(_) => DisconnectReason::ClientError,
            CloseCause::TransportClosed => DisconnectReason::TcpClosed,
            CloseCause::KeepAliveTimeout => DisconnectReason::KeepaliveTimeout,
            CloseCause::TakenOver => DisconnectReason::Takenover,
            CloseCause::ProtocolError
            | CloseCause::MalformedPacket
            | CloseCause::QuotaExceeded
            | CloseCause::TopicAliasInvalid
            | CloseCause::SubscriptionIdentifiersNotSupported
            | CloseCause::ReceiveMaximumExceeded => DisconnectReason::ProtocolError,
            CloseCause::PacketTooLarge => DisconnectReason::PacketTooLarge,
            CloseCause::ServerShutdown => DisconnectReason::ServerShutdown,
            CloseCause::RouterClosed => DisconnectReason::UpstreamClosed,
        }
    }

    /// The reason code of the server's DISCONNECT (MQTT 5), `None` when the server sends none
    /// (the client left, or its transport is gone).
    pub const fn reason_code(self) -> Option<ReasonCode> {
        match self {
            CloseCause::ClientDisconnect
            | CloseCause::ClientDisconnectWithWill
            | CloseCause::ClientError(_)
            | CloseCause::TransportClosed => None,
            CloseCause::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            CloseCause::TakenOver => Some(ReasonCode::SessionTakenOver),
            CloseCause::ProtocolError => Some(ReasonCode::ProtocolError),
            CloseCause::MalformedPacket => Some(ReasonCode::MalformedPacket),
            CloseCause::PacketTooLarge => Some(ReasonCode::PacketTooLarge),
            CloseCause::QuotaExceeded => Some(ReasonCode::QuotaExceeded),
            CloseCause::TopicAliasInvalid => Some(ReasonCode::TopicAliasInvalid),
            CloseCause::SubscriptionIdentifiersNotSupported => {
                Some(ReasonCode::SubscriptionIdentifiersNotSupported)
            }
            CloseCause::ReceiveMaximumExceeded => Some(ReasonCode::ReceiveMaximumExceeded),
            CloseCause::ServerShutdown => Some(ReasonCode::ServerShuttingDown),
            CloseCause::RouterClosed => Some(ReasonCode::ServerUnavailable),
        }
    }

    /// Whether the session's last will is published (MQTT 3.1.1 section 3.1.2.5: on every end
    /// but a DISCONNECT from the client, unless an MQTT 5 one asks for it). A server shutdown publishes none: the server, not the
    /// client, ended the connection, and the will's subscribers are going away with it.
    pub const fn publishes_will(self) -> bool {
        !matches!(
            self,
            CloseCause::ClientDisconnect | CloseCause::ServerShutdown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_connack_codes_follow_section_3_2_2_3() {
        for (reason, v3) in [
            (ReasonCode::UnsupportedProtocolVersion, 0x01),
            (ReasonCode::ClientIdentifierNotValid, 0x02),
            (ReasonCode::ServerBusy, 0x03),
            (ReasonCode::ServerUnavailable, 0x03),
            (ReasonCode::BadUserNameOrPassword, 0x04),
            (ReasonCode::NotAuthorized, 0x05),
        ] {
            assert_eq!(reason.connect_return_code().as_u8(), v3, "{reason:?}");
            assert!(reason.is_error());
        }
        assert!(!ReasonCode::Success.is_error());
    }

    #[test]
    fn causes_map_to_event_reasons_and_disconnect_codes() {
        assert_eq!(CloseCause::TakenOver.reason().as_str(), "takenover");
        assert_eq!(
            CloseCause::KeepAliveTimeout
                .reason_code()
                .map(ReasonCode::as_u8),
            Some(0x8D)
        );
        assert_eq!(
            CloseCause::ServerShutdown
                .reason_code()
                .map(ReasonCode::as_u8),
            Some(0x8B)
        );
        assert_eq!(CloseCause::ClientDisconnect.reason_code(), None);
        assert!(!CloseCause::ClientDisconnect.publishes_will());
        assert!(CloseCause::TransportClosed.publishes_will());
        assert!(CloseCause::KeepAliveTimeout.publishes_will());
    }

    #[test]
    fn client_disconnects_and_event_reason_codes() {
        for (code, cause, reason) in [
            (0x00, CloseCause::ClientDisconnect, "normal"),
            (
                0x04,
                CloseCause::ClientDisconnectWithWill,
                "disconnect_with_will",
            ),
            (0x83, CloseCause::ClientError(0x83), "client_error"),
            (0x80, CloseCause::ClientError(0x80), "client_error"),
        ] {
            let of = CloseCause::of_client_disconnect(code);
            assert_eq!(of, cause);
            assert_eq!(of.reason().as_str(), reason);
            assert_eq!(of.event_reason_code(), Some(code));
            // The server answers a client's DISCONNECT with none of its own.
            assert_eq!(of.reason_code(), None);
        }
        // 0x00 drops the will; an error reason publishes it (5.0 section 3.14.4).
        assert!(CloseCause::ClientError(0x83).publishes_will());
        for (cause, code) in [
            (CloseCause::KeepAliveTimeout, Some(0x8D)),
            (CloseCause::TakenOver, Some(0x8E)),
            (CloseCause::ServerShutdown, Some(0x8B)),
            (CloseCause::ProtocolError, Some(0x82)),
            (CloseCause::MalformedPacket, Some(0x81)),
            (CloseCause::PacketTooLarge, Some(0x95)),
            (CloseCause::QuotaExceeded, Some(0x97)),
            (CloseCause::TopicAliasInvalid, Some(0x94)),
            (CloseCause::SubscriptionIdentifiersNotSupported, Some(0xA1)),
            (CloseCause::RouterClosed, Some(0x88)),
            (CloseCause::TransportClosed, None),
        ] {
            assert_eq!(cause.event_reason_code(), code, "{cause:?}");
        }
    }
}
